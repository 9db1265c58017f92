"""`sam2-edge track`: track objects through a video, a folder of frames or a camera and write
per-frame mask PNGs, all masks as one COCO-RLE JSON, and an overlay video.

The frames, the prompts file (the demo's schema: a list or ``{"prompts": [...]}`` of
points / labels / box / mask entries), the drawing and the writers are the video pipeline's
(`sam2_edge.runtimes.video`); this module is the command line and the tracking loop.

Output layout: ``OUT/masks/{frame:05d}_obj{id}.png`` (255 = object) for every frame from the
first prompt on, ``OUT/masks.json`` (the same masks in COCO RLE, pycocotools' format: per frame
and object ``{"size": [h, w], "counts": "..."}``), ``OUT/overlay.mp4`` with every frame (masks
with outlines, ids and a legend from the first prompt on; H.264 where OpenCV can write it, else
MPEG-4 Part 2) and ``OUT/sam2_edge_output.json`` (the marker: what made the folder, and the
run's summary). At the end a summary (frames, FPS, files, each object's frames with a mask) is
printed; an object whose mask stays empty for --warn-empty frames in a row is warned about. The folder is written next to
OUT and moved into place when complete; an existing OUT is replaced only when it is empty or a
folder an earlier `sam2-edge track` wrote (marker present, nothing else in it) -- never a folder
of the user's (`sam2_edge.outputs`).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..cli import int_arg, subcommand
from ..errors import InputError, OutputError
from ..outputs import MARKER_NAME, StagedDir, check_dir, has_marker, only_entries, write_marker
from ..progress import Progress
from .video import (BackgroundWriter, Prefetcher, PromptSpec, VideoSink, apply_prompts, draw_legend, draw_masks,
                    load_prompts, prompts_from_flags, read_frames, result_masks, rle_encode, write_masks)
from .video.summary import TrackSummary
from .video.writers import MASK_NAME, VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

__all__ = ["prompts_from_args", "is_track_output"]

OVERLAY_NAME = "overlay.mp4"
MASKS_DIR = "masks"
MASKS_JSON = "masks.json"
TRACK_KIND = (f"the output of an earlier sam2-edge track (a {MARKER_NAME} marker, {MASKS_DIR}/, {MASKS_JSON} and "
              f"{OVERLAY_NAME}, nothing else)")
OUT_HINT = ("sam2-edge track's --out takes a FOLDER (it writes masks/, masks.json and overlay.mp4 in it); "
            "the demo's --out takes a video file")


def is_track_output(folder: Path) -> bool:
    """True for a folder `sam2-edge track` wrote: its marker, and only its masks/ of mask PNGs,
    masks.json and overlay.mp4 besides (a file of anyone else's in it makes it not ours)."""
    return has_marker(folder, "track") and only_entries(
        folder, lambda name: name in (MARKER_NAME, OVERLAY_NAME, MASKS_JSON),
        {MASKS_DIR: lambda name: MASK_NAME.fullmatch(name) is not None})


def check_out_folder(path: str) -> Path:
    """--out checked before any work: a folder (a name ending in a video extension is refused:
    that is the demo's --out), new, empty or an earlier track output."""
    if os.path.splitext(str(path))[1].lower() in VIDEO_EXTENSIONS and not os.path.isdir(path):
        raise OutputError(f"--out {path!r} looks like a video file name; {OUT_HINT}: e.g. --out "
                          f"{os.path.splitext(str(path))[0] or 'out'}/")
    try:
        return check_dir(path, "--out", is_track_output, TRACK_KIND)
    except OutputError as e:
        raise OutputError(f"{e} ({OUT_HINT})") from None


def _backend_threads(a: argparse.Namespace) -> dict:
    """--threads for --bundle: the backend's `threads` option when it takes one."""
    if a.threads is None:
        return {}
    from ..contract import load_manifest
    from ..errors import BackendUnavailableError
    from .bundle_backends import backend_name, backend_options

    try:
        name = backend_name(load_manifest(a.bundle, verify_hashes=False), a.backend)
        takes = backend_options(name)
    except (BackendUnavailableError, InputError, OutputError):
        return {"threads": a.threads}  # opening the bundle reports the problem
    except Exception:  # noqa: BLE001 - a broken bundle: open_bundle says what is wrong
        return {"threads": a.threads}
    if "threads" in takes or "*" in takes:
        return {"threads": a.threads}
    log.warning("--threads: the %s backend schedules its own threads; ignored", name)
    return {}


def _write_masks_json(path: Path, source: str, size, frames: List[dict], objects: dict) -> None:
    doc = {"written_by": "sam2-edge track",
           "encoding": "COCO RLE as pycocotools writes it: column-major, counts compressed to a string "
                       "(pycocotools.mask.decode reads each entry)",
           "source": source, "width": int(size[1]) if size else None, "height": int(size[0]) if size else None,
           "objects": objects, "frames": frames}
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")


@dataclass
class _Outputs:
    """What the writer thread has written so far (only that thread changes it while tracking)."""

    summary: TrackSummary
    size: Optional[Tuple[int, int]] = None
    n_pngs: int = 0
    rle_frames: List[dict] = field(default_factory=list)


def _emit(st: _Outputs, sink: VideoSink, masks_dir: str, i: int, rgb: np.ndarray,
          masks: Optional[Dict[int, np.ndarray]]) -> None:
    """Frame i's outputs (on the writer thread): the overlay frame, its mask PNGs and RLEs;
    before the first prompt (masks None) the frame as it is."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if masks is None:
        sink.write(bgr)
        return
    st.summary.add(i, masks)
    empty = [o for o, m in masks.items() if not m.any()]
    sink.write(draw_legend(draw_masks(bgr, masks), masks.keys(), empty))
    st.n_pngs += write_masks(masks_dir, i, masks)
    st.rle_frames.append({"frame": i, "masks": {str(o): rle_encode(m) for o, m in sorted(masks.items())}})


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
    p.add_argument("--out", default="sam2_edge_out", metavar="FOLDER",
                   help="output FOLDER (masks/, masks.json, overlay.mp4; not a video file -- that is the demo's "
                        "--out); must be new, empty or an earlier track output, which is replaced")
    p.add_argument("--max-frames", type=int_arg(1), default=None, help="stop after this many frames (>= 1)")
    p.add_argument("--image-size", type=int_arg(64), default=None,
                   help="model input side for --checkpoint (multiple of 32; default the variant's, 1024; 512 is "
                        "~4x faster). A bundle's size is fixed when it is exported")
    p.add_argument("--threads", type=int_arg(1), default=None,
                   help="CPU threads (torch.set_num_threads for --checkpoint; the ONNX Runtime / ExecuTorch "
                        "thread pool for --bundle). Default: the runtime's (one per core)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="torch compute dtype for --checkpoint: bf16 (autocast) needs a CPU with AVX512-BF16 / AMX, "
                        "an Ampere+ GPU or Apple MPS (default fp32)")
    p.add_argument("--warn-empty", type=int_arg(1), default=10, metavar="N",
                   help="warn when an object's mask is empty for N consecutive frames (default 10)")

    def run(a: argparse.Namespace) -> int:
        from . import Tracker

        # everything is checked before the source opens and the model loads
        prompts = prompts_from_args(a)
        out = check_out_folder(a.out)
        if a.image_size is not None:
            if a.bundle:
                raise InputError("--image-size applies to --checkpoint; a bundle runs at the size it was exported "
                                 "with (sam2-edge export --image-size)")
            if a.image_size % 32:
                raise InputError(f"--image-size must be a multiple of 32, got {a.image_size}")
        if a.checkpoint:
            from .backends.torch_backend import check_device, check_dtype

            check_dtype(a.dtype, check_device(a.device))
        elif a.dtype != "fp32":
            raise InputError("--dtype applies to --checkpoint (the torch backend); a bundle's precision is fixed "
                             "when it is exported or quantized")
        origin = a.prompts or "--point/--box"
        by_frame: Dict[int, List[PromptSpec]] = {}
        for q in prompts:
            by_frame.setdefault(q.frame, []).append(q)
        frames, total, fps = read_frames(a.source)   # opens the source: a bad one fails before the model loads
        if a.max_frames:
            total = min(total, a.max_frames) if total else a.max_frames
        out_state = _Outputs(TrackSummary(a.warn_empty))
        started = False
        interrupted = False
        n_frames = 0
        track_s = 0.0
        wall_s = 0.0
        codec = None
        feed = None
        try:
            with StagedDir(out, "--out", is_track_output, TRACK_KIND) as stage:
                masks_dir = stage.path / MASKS_DIR
                masks_dir.mkdir()
                sink = VideoSink(str(stage.path / OVERLAY_NAME), fps)
                if a.bundle:
                    tracker = Tracker.from_bundle(a.bundle, a.backend, trusted_keys=a.trusted_key,
                                                  **_backend_threads(a))
                else:
                    if a.threads is not None:
                        import torch

                        torch.set_num_threads(a.threads)
                    tracker = Tracker.from_checkpoint(a.checkpoint, a.variant, device=a.device,
                                                      image_size=a.image_size, dtype=a.dtype)
                # frame t+1 is read and pre-processed on a thread while the model runs on frame t; the
                # outputs of frame t are drawn and written on another (newest frame wins for a camera)
                live = bool(getattr(getattr(frames, "source", None), "is_live", False))
                feed = Prefetcher(frames, live, tracker.prepare)
                emit = functools.partial(_emit, out_state, sink, str(masks_dir))
                t_wall = time.perf_counter()
                with sink, BackgroundWriter() as writer, Progress(total, "track") as bar:
                    try:
                        for i, (rgb, prepared) in enumerate(feed):
                            if a.max_frames and i >= a.max_frames:
                                break
                            n_frames = i + 1
                            out_state.size = rgb.shape[:2]
                            masks: Dict[int, np.ndarray] = {}
                            todo = by_frame.pop(i, [])
                            t0 = time.perf_counter()
                            if todo:                      # first prompt brings the frame, the others are on it
                                _, masks = apply_prompts(tracker, prepared, todo, origin)
                                started = True
                            elif started:
                                masks = result_masks(tracker.track(prepared))
                            track_s += time.perf_counter() - t0
                            writer.submit(emit, i, rgb, masks if started else None)
                            bar.update(1, f"{len(masks)} objects")
                    except KeyboardInterrupt:             # a camera runs until Ctrl-C: keep what was tracked
                        interrupted = True
                wall_s = time.perf_counter() - t_wall
                codec = sink.codec
                if not started:
                    if interrupted:
                        raise KeyboardInterrupt
                    raise InputError("no prompt was applied: check the prompts' frame numbers against the source "
                                     "length")
                summary = out_state.summary
                summary.finish()
                _write_masks_json(stage.path / MASKS_JSON, str(a.source), out_state.size, out_state.rle_frames,
                                  summary.as_dict())
                tracked = len(out_state.rle_frames)
                write_marker(stage.path, "track", source=str(a.source),
                             model=os.path.abspath(a.bundle or a.checkpoint), frames=n_frames,
                             interrupted=interrupted, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             summary={"frames_read": n_frames, "frames_tracked": tracked,
                                      "tracking_fps": round(tracked / track_s, 3) if track_s > 0 else None,
                                      "achieved_fps": round(n_frames / wall_s, 3) if wall_s > 0 else None,
                                      "dropped_frames": feed.dropped, "live_source": live,
                                      "overlay_codec": codec, "mask_pngs": out_state.n_pngs,
                                      # counts only: the marker stays small (masks.json has the empty runs)
                                      "objects": {k: {**v, "empty_runs": len(v["empty_runs"])}
                                                  for k, v in summary.as_dict().items()}})
                stage.commit()
        finally:
            if feed is not None:
                feed.close()                      # the reader thread releases the source (camera)
            else:
                frames.close()
        for q in (q for qs in by_frame.values() for q in qs):
            log.warning("%s: %s was never applied: only %d frames were tracked", origin, q.describe(), n_frames)
        tracked = len(out_state.rle_frames)
        speed = f", {tracked / track_s:.2f} FPS tracking (model time)" if track_s > 0 else ""
        if wall_s > 0:
            speed += f", {n_frames / wall_s:.2f} FPS achieved (wall clock, reading and writing overlapped)"
        dropped = f"; {feed.dropped} frames dropped (live source: newest frame wins)" if feed and feed.live else ""
        print(f"tracked {tracked} of {n_frames} frames read{speed}{dropped}{' (interrupted)' if interrupted else ''}")
        print(f"wrote {out}/")
        print(f"  {MASKS_DIR}/      {out_state.n_pngs} mask PNGs ({{frame:05d}}_obj{{id}}.png, 255 = object)")
        print(f"  {MASKS_JSON}  the same masks in COCO RLE (pycocotools format)")
        print(f"  {OVERLAY_NAME} {n_frames} frames, codec {codec}{' (H.264)' if codec == 'avc1' else ''}")
        for line in out_state.summary.lines():
            print(line)
        if interrupted:
            log.warning("interrupted after %d frames: wrote %s", n_frames, out)
            return 130
        return 0
    return run
