"""`sam2-edge track`: track objects through a video, a folder of frames or a camera and write
per-frame mask PNGs and an overlay video.

The frames, the prompts file (the demo's schema: a list or ``{"prompts": [...]}`` of
points / labels / box / mask entries), the drawing and the writers are the video pipeline's
(`sam2_edge.runtimes.video`); this module is the command line and the tracking loop.

Output layout: ``OUT/masks/{frame:05d}_obj{id}.png`` (255 = object) for every frame from the
first prompt on, and ``OUT/overlay.mp4`` with every frame (masks drawn from the first prompt on).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from ..cli import subcommand
from ..errors import InputError
from ..progress import Progress
from .video import (PromptSpec, VideoSink, apply_prompts, draw_masks, load_prompts, prompts_from_flags,
                    read_frames, result_masks, write_masks)

log = logging.getLogger(__name__)

__all__ = ["prompts_from_args"]


def prompts_from_args(args: argparse.Namespace) -> List[PromptSpec]:
    """The prompts of --prompts FILE.json, else of --point X,Y / --box X0,Y0,X1,Y1 (object 1, frame 0).
    Raises PromptError (an InputError) on any invalid prompt: called before the model loads."""
    if args.prompts:
        if args.point or args.box:
            log.warning("--prompts given: ignoring --point/--box")
        return load_prompts(args.prompts)
    return prompts_from_flags(args.point, args.box)


@subcommand("track")
def _track(p: argparse.ArgumentParser):
    p.description = "Track objects through a video, a frames folder or a camera; write masks and an overlay video."
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="official SAM 2 checkpoint (torch backend)")
    src.add_argument("--bundle", help="exported bundle folder (ONNX / ExecuTorch / CoreML)")
    p.add_argument("--variant", default=None)
    p.add_argument("--backend", default=None, help="backend for --bundle (default: the bundle's format)")
    p.add_argument("--device", default="cpu", help="torch device for --checkpoint (cpu, cuda, mps)")
    p.add_argument("--source", required=True, help="video file, folder of frames, or camera index")
    p.add_argument("--point", action="append", help="positive click X,Y on frame 0 (repeatable)")
    p.add_argument("--box", help="box X0,Y0,X1,Y1 on frame 0")
    p.add_argument("--prompts", help="JSON prompts file (list or {\"prompts\": [...]} of obj_id/frame/points/labels/"
                                     "box/mask entries) for several objects / frames")
    p.add_argument("--out", default="sam2_edge_out", help="output folder (masks/ and overlay.mp4)")
    p.add_argument("--max-frames", type=int, default=None)

    def run(a: argparse.Namespace) -> int:
        from . import Tracker

        prompts = prompts_from_args(a)           # validated before the source opens and the model loads
        origin = a.prompts or "--point/--box"
        by_frame: Dict[int, List[PromptSpec]] = {}
        for q in prompts:
            by_frame.setdefault(q.frame, []).append(q)
        frames, total, fps = read_frames(a.source)   # opens the source: a bad one fails before the model loads
        out = Path(a.out)
        masks_dir = out / "masks"
        if a.max_frames:
            total = min(total, a.max_frames) if total else a.max_frames
        started = False
        n_frames = 0
        try:
            masks_dir.mkdir(parents=True, exist_ok=True)
            sink = VideoSink(str(out / "overlay.mp4"), fps)
            tracker = (Tracker.from_bundle(a.bundle, a.backend) if a.bundle
                       else Tracker.from_checkpoint(a.checkpoint, a.variant, device=a.device))
            with sink, Progress(total, "track") as bar:
                for i, rgb in enumerate(frames):
                    if a.max_frames and i >= a.max_frames:
                        break
                    n_frames = i + 1
                    masks: Dict[int, np.ndarray] = {}
                    todo = by_frame.pop(i, [])
                    if todo:                      # first prompt brings the frame, the others are on it
                        _, masks = apply_prompts(tracker, rgb, todo, origin)
                        started = True
                    elif started:
                        masks = result_masks(tracker.track(rgb))
                    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                    if started:
                        sink.write(draw_masks(bgr, masks))
                        write_masks(str(masks_dir), i, masks)
                    else:                         # before the first prompt: the frame as it is
                        sink.write(bgr)
                    bar.update(1, f"{len(masks)} objects")
        finally:
            frames.close()                        # releases the source (camera) whatever happened
        if not started:
            raise InputError("no prompt was applied: check the prompts' frame numbers against the source length")
        for q in (q for qs in by_frame.values() for q in qs):
            log.warning("%s: %s was never applied: only %d frames were tracked", origin, q.describe(), n_frames)
        log.info("wrote %s and %s", masks_dir, out / "overlay.mp4")
        return 0
    return run
