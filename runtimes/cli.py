"""`sam2-edge track`: track objects through a video, a folder of frames or a camera and write
per-frame mask PNGs and an overlay video."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..cli import subcommand
from ..errors import InputError
from ..progress import Progress

log = logging.getLogger(__name__)

COLOURS = [(255, 64, 64), (64, 160, 255), (64, 220, 64), (255, 200, 0), (200, 64, 255), (0, 220, 220)]


def _floats(text: str, n: int, what: str) -> List[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise InputError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return vals


def read_frames(source: str) -> Tuple[Iterator[np.ndarray], Optional[int], float]:
    """RGB frames of a video file, a folder of images (sorted by number) or a camera index.
    -> (iterator, frame count if known, fps)."""
    if os.path.isdir(source):
        exts = {".jpg", ".jpeg", ".png", ".bmp"}
        files = [p for p in Path(source).iterdir() if p.suffix.lower() in exts]
        if not files:
            raise InputError(f"no images (.jpg/.png) in folder {source!r}")
        files.sort(key=lambda p: (int(p.stem) if p.stem.isdigit() else float("inf"), p.name))

        def gen():
            for p in files:
                img = cv2.imread(str(p), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # as PIL: no EXIF rotation
                if img is None:
                    raise InputError(f"cannot decode image {p}")
                yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return gen(), len(files), 30.0
    cam = source.isdigit()
    if not cam and not os.path.exists(source) and "://" not in source:
        raise InputError(f"source {source!r} is neither a video file, a folder of frames nor a camera index")
    cap = cv2.VideoCapture(int(source) if cam else source)
    if not cap.isOpened():
        raise InputError(f"cannot open {'camera' if cam else 'video'} {source!r}")
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not cam else None
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0

    def gen():
        try:
            while True:
                ok, img = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
    return gen(), (n if n and n > 0 else None), fps


def load_prompts(args: argparse.Namespace) -> List[dict]:
    """Prompts from --prompts JSON (list of {obj_id, frame, points, labels | box}) or --point/--box."""
    if args.prompts:
        try:
            prompts = json.loads(Path(args.prompts).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read prompts file {args.prompts!r}: {e}") from None
        if not isinstance(prompts, list) or not all(isinstance(p, dict) for p in prompts):
            raise InputError('prompts JSON must be a list like [{"obj_id": 1, "frame": 0, "points": [[x, y]], "labels": [1]}]')
        for i, p in enumerate(prompts):
            if not isinstance(p.get("obj_id"), int) or not isinstance(p.get("frame", 0), int):
                raise InputError(f"prompt #{i}: obj_id and frame must be integers")
            if "points" in p and "labels" not in p:
                p["labels"] = [1] * len(p["points"])
        return prompts
    if not args.point and not args.box:
        raise InputError("give --point X,Y and/or --box X0,Y0,X1,Y1, or --prompts FILE.json")
    p: dict = {"obj_id": 1, "frame": 0}
    if args.point:
        p["points"] = [_floats(s, 2, "--point") for s in args.point]
        p["labels"] = [1] * len(p["points"])
    if args.box:
        p["box"] = _floats(args.box, 4, "--box")
    return [p]


def overlay(rgb: np.ndarray, ids: List[int], masks: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32)
    for oid, m in zip(ids, masks):
        c = np.array(COLOURS[oid % len(COLOURS)], np.float32)
        out[m] = out[m] * 0.45 + c * 0.55
    return out.clip(0, 255).astype(np.uint8)


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
    p.add_argument("--prompts", help="JSON list of prompts for several objects / frames")
    p.add_argument("--out", default="sam2_edge_out", help="output folder (masks/ and overlay.mp4)")
    p.add_argument("--max-frames", type=int, default=None)

    def run(a: argparse.Namespace) -> int:
        from . import Tracker

        prompts = load_prompts(a)
        frames, total, fps = read_frames(a.source)
        tracker = (Tracker.from_bundle(a.bundle, a.backend) if a.bundle
                   else Tracker.from_checkpoint(a.checkpoint, a.variant, device=a.device))
        out = Path(a.out)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        writer = None
        if a.max_frames:
            total = min(total, a.max_frames) if total else a.max_frames
        started = False
        with Progress(total, "track") as bar:
            for i, rgb in enumerate(frames):
                if a.max_frames and i >= a.max_frames:
                    break
                now = [q for q in prompts if q.get("frame", 0) == i]
                res = None
                for j, q in enumerate(now):
                    res = tracker.add_prompt(rgb if j == 0 else None, q["obj_id"], points=q.get("points"),
                                             labels=q.get("labels"), box=q.get("box"))
                    started = True
                if res is None and started:
                    res = tracker.track(rgb)
                vis = rgb
                if res is not None:
                    vis = overlay(rgb, res.object_ids, res.masks)
                    for oid, m in zip(res.object_ids, res.masks):
                        cv2.imwrite(str(out / "masks" / f"{i:05d}_obj{oid}.png"), m.astype(np.uint8) * 255)
                if writer is None:
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(str(out / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
                bar.update(1, f"{len(res.object_ids) if res else 0} objects")
        if writer is not None:
            writer.release()
        if not started:
            raise InputError("no prompt was applied: check the prompts' frame numbers against the source length")
        log.info("wrote %s and %s", out / "masks", out / "overlay.mp4")
        return 0
    return run
