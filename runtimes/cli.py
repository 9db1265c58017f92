"""`sam2-edge track`: track objects through a video, a folder of frames or a camera and write
per-frame mask PNGs and an overlay video.

The frames, the prompts file (the demo's schema: a list or ``{"prompts": [...]}`` of
points / labels / box / mask entries), the drawing and the writers are the video pipeline's
(`sam2_edge.runtimes.video`); this module is the command line and the tracking loop.

Output layout: ``OUT/masks/{frame:05d}_obj{id}.png`` (255 = object) for every frame from the
first prompt on, ``OUT/overlay.mp4`` with every frame (masks drawn from the first prompt on) and
``OUT/sam2_edge_output.json`` (the marker: what made the folder). The folder is written next to
OUT and moved into place when complete; an existing OUT is replaced only when it is empty or a
folder an earlier `sam2-edge track` wrote (marker present, nothing else in it) -- never a folder
of the user's (`sam2_edge.outputs`).
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from ..cli import int_arg, subcommand
from ..errors import InputError
from ..outputs import MARKER_NAME, StagedDir, check_dir, has_marker, only_entries, write_marker
from ..progress import Progress
from .video import (PromptSpec, VideoSink, apply_prompts, draw_masks, load_prompts, prompts_from_flags,
                    read_frames, result_masks, write_masks)
from .video.writers import MASK_NAME

log = logging.getLogger(__name__)

__all__ = ["prompts_from_args", "is_track_output"]

OVERLAY_NAME = "overlay.mp4"
MASKS_DIR = "masks"
TRACK_KIND = (f"the output of an earlier sam2-edge track (a {MARKER_NAME} marker, {MASKS_DIR}/ and "
              f"{OVERLAY_NAME}, nothing else)")


def is_track_output(folder: Path) -> bool:
    """True for a folder `sam2-edge track` wrote: its marker, and only its masks/ of mask PNGs
    and overlay.mp4 besides (a file of anyone else's in it makes it not ours)."""
    return has_marker(folder, "track") and only_entries(
        folder, lambda name: name in (MARKER_NAME, OVERLAY_NAME),
        {MASKS_DIR: lambda name: MASK_NAME.fullmatch(name) is not None})


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
    p.add_argument("--trusted-key", action="append", metavar="KEY.pub",
                   help="accept --bundle only if signed by this public key (repeatable; see sam2-edge keygen)")
    p.add_argument("--device", default="cpu", help="torch device for --checkpoint (cpu, cuda, mps)")
    p.add_argument("--source", required=True, help="video file, folder of frames, or camera index")
    p.add_argument("--point", action="append", help="positive click X,Y on frame 0 (repeatable)")
    p.add_argument("--box", help="box X0,Y0,X1,Y1 on frame 0")
    p.add_argument("--prompts", help="JSON prompts file (list or {\"prompts\": [...]} of obj_id/frame/points/labels/"
                                     "box/mask entries) for several objects / frames")
    p.add_argument("--out", default="sam2_edge_out",
                   help="output folder (masks/ and overlay.mp4); must be new, empty or an earlier track output, "
                        "which is replaced")
    p.add_argument("--max-frames", type=int_arg(1), default=None, help="stop after this many frames (>= 1)")

    def run(a: argparse.Namespace) -> int:
        from . import Tracker

        # everything is checked before the source opens and the model loads
        prompts = prompts_from_args(a)
        out = check_dir(a.out, "--out", is_track_output, TRACK_KIND)
        if a.checkpoint:
            from .backends.torch_backend import check_device

            check_device(a.device)
        origin = a.prompts or "--point/--box"
        by_frame: Dict[int, List[PromptSpec]] = {}
        for q in prompts:
            by_frame.setdefault(q.frame, []).append(q)
        frames, total, fps = read_frames(a.source)   # opens the source: a bad one fails before the model loads
        if a.max_frames:
            total = min(total, a.max_frames) if total else a.max_frames
        started = False
        interrupted = False
        n_frames = 0
        try:
            with StagedDir(out, "--out", is_track_output, TRACK_KIND) as stage:
                masks_dir = stage.path / MASKS_DIR
                masks_dir.mkdir()
                sink = VideoSink(str(stage.path / OVERLAY_NAME), fps)
                tracker = (Tracker.from_bundle(a.bundle, a.backend, trusted_keys=a.trusted_key) if a.bundle
                           else Tracker.from_checkpoint(a.checkpoint, a.variant, device=a.device))
                with sink, Progress(total, "track") as bar:
                    try:
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
                    except KeyboardInterrupt:             # a camera runs until Ctrl-C: keep what was tracked
                        interrupted = True
                if not started:
                    if interrupted:
                        raise KeyboardInterrupt
                    raise InputError("no prompt was applied: check the prompts' frame numbers against the source "
                                     "length")
                write_marker(stage.path, "track", source=str(a.source),
                             model=os.path.abspath(a.bundle or a.checkpoint), frames=n_frames,
                             interrupted=interrupted, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                stage.commit()
        finally:
            frames.close()                        # releases the source (camera) whatever happened
        for q in (q for qs in by_frame.values() for q in qs):
            log.warning("%s: %s was never applied: only %d frames were tracked", origin, q.describe(), n_frames)
        if interrupted:
            log.warning("interrupted after %d frames: wrote %s", n_frames, out)
            return 130
        log.info("wrote %s and %s", out / MASKS_DIR, out / OVERLAY_NAME)
        return 0
    return run
