"""Score a model (a checkpoint run with the torch backend, or a bundle) with J, F and J&F:
on a DAVIS-layout dataset (first-frame masks as prompts), or against another model's masks
as pseudo ground truth on any video (both prompted identically on the first frame)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import InputError
from .davis import list_videos, read_ids
from .metrics import mean_scores, score_sequence


def open_model(model: str, threads: int = 0, dtype: str = "fp32", image_size: Optional[int] = None):
    """A backend for `model`: a bundle folder (its format's backend) or a checkpoint (torch, in
    `dtype`, at `image_size`: options of a checkpoint only, a bundle's are fixed at export)."""
    p = Path(model)
    if not p.exists():
        raise InputError(f"model {model!r} does not exist; give a bundle folder or a checkpoint (.pt)")
    if p.is_dir():
        if dtype != "fp32" or image_size is not None:
            raise InputError(f"{model!r} is a bundle: --dtype / --image-size apply to checkpoints (a bundle's "
                             "precision and size are fixed when it is exported)")
        from ..runtimes.bundle_backends import open_bundle

        return open_bundle(str(p), **({"threads": threads} if threads else {}))
    from ..runtimes.backends.torch_backend import TorchBackend

    return TorchBackend.from_checkpoint(str(p), image_size=image_size, dtype=dtype)


def _track(backend, frames, first_masks=None, prompts=None):
    from ..quantization.calibration import track_clip

    return track_clip(backend, frames, prompts or [], first_masks=first_masks).masks


def evaluate_davis(model: str, root: str, resolution: str = "480p", videos: Optional[Sequence[str]] = None,
                   max_frames: Optional[int] = None, threads: int = 0) -> dict:
    backend = open_model(model, threads)
    per_video: Dict[str, dict] = {}
    all_objects = []
    t0 = time.perf_counter()
    for v in list_videos(root, resolution, videos):
        n = len(v.frames) if max_frames is None else min(len(v.frames), max_frames)
        frames = [v.read_frame(i) for i in range(n)]
        first = read_ids(v.annotations[0])
        ids = [int(i) for i in np.unique(first) if i != 0]
        if not ids:
            raise InputError(f"video {v.name!r}: the first frame's annotation has no object")
        pred = _track(backend, frames, first_masks={i: first == i for i in ids})
        scored = sorted(t for t in v.annotations if t < n)
        gt = []
        for t in scored:
            a = read_ids(v.annotations[t])
            gt.append({i: a == i for i in ids})
        res = score_sequence([pred[t] for t in scored], gt, ids)
        per_video[v.name] = _public(res, scored)
        all_objects.extend(res["objects"].values())
    return {"mode": "davis", "model": os.path.basename(str(model).rstrip("/")), "dataset": str(root),
            "videos": per_video, **mean_scores(all_objects), "seconds": round(time.perf_counter() - t0, 2)}


def evaluate_pseudo(model: str, reference: str, source: Optional[str], frames_n: int = 24, objects: int = 2,
                    threads: int = 0, dtype: str = "fp32", image_size: Optional[int] = None) -> dict:
    """`model` against `reference`'s masks (pseudo ground truth), both prompted with the same
    automatic prompts on the first frame of `source` (default: the shipped clip). `dtype`
    applies to `model` (a checkpoint; e.g. bf16 vs the fp32 reference), `image_size` to both."""
    from ..quantization.calibration import auto_prompts, load_frames

    frames, src = load_frames(source, frames_n, "--video")
    h, w = frames[0].shape[:2]
    prompts = auto_prompts(w, h, objects)
    t0 = time.perf_counter()
    ref_size = image_size if not Path(reference).is_dir() else None
    ref = _track(open_model(reference, threads, image_size=ref_size), frames, prompts=prompts)
    got = _track(open_model(model, threads, dtype, image_size), frames, prompts=prompts)
    res = score_sequence(got, ref, list(range(1, objects + 1)))
    from .metrics import frame_iou

    ious = [float(np.min(frame_iou(a, b))) for a, b in zip(ref, got)]  # per frame, the worst object
    name = os.path.basename(src)
    return {"mode": "pseudo", "model": os.path.basename(str(model).rstrip("/")) + ("" if dtype == "fp32" else
                                                                                     f" ({dtype})"),
            "reference": os.path.basename(str(reference).rstrip("/")), "videos": {name: _public(res, range(len(frames)))},
            **{k: res[k] for k in ("J", "F", "JF")}, "iou_min_object_mean": float(np.mean(ious)),
            "iou_min": float(np.min(ious)), "seconds": round(time.perf_counter() - t0, 2)}


def _public(res: dict, frames) -> dict:
    return {"J": res["J"], "F": res["F"], "JF": res["JF"], "frames": len(list(frames)),
            "objects": {str(k): {"J": o["J"], "F": o["F"]} for k, o in res["objects"].items()}}


def format_table(r: dict) -> str:
    lines = [f"{'video':24s} {'J':>7s} {'F':>7s} {'J&F':>7s}  objects"]
    for name, v in r["videos"].items():
        lines.append(f"{name[:24]:24s} {v['J']:7.4f} {v['F']:7.4f} {v['JF']:7.4f}  {len(v['objects'])}")
    what = f"vs {r['reference']} (pseudo ground truth)" if r["mode"] == "pseudo" else "(DAVIS annotations)"
    lines.append(f"{'mean':24s} {r['J']:7.4f} {r['F']:7.4f} {r['JF']:7.4f}  {r['model']} {what}")
    if "iou_min" in r:
        lines.append(f"per-frame mask IoU of the worst object: mean {r['iou_min_object_mean']:.4f}, "
                     f"min {r['iou_min']:.4f}")
    return "\n".join(lines)


__all__ = ["open_model", "evaluate_davis", "evaluate_pseudo", "format_table"]
