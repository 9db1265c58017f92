"""The standard video-object-segmentation scores, as the DAVIS 2017 evaluator defines them
(github.com/davisvideochallenge/davis2017-evaluation, `davis2017/metrics.py`). numpy + cv2 only.

* **J** (region similarity): the IoU of the predicted and ground-truth masks; 1 when both are empty.
* **F** (contour accuracy): the boundary F-measure. Each mask's boundary is `seg2bmap` (a pixel
  differs from its right, lower or lower-right neighbour); a boundary pixel is matched when the
  other boundary lies within `ceil(0.008 * image diagonal)` pixels (dilation with a disk of that
  radius); precision = matched predicted / predicted boundary pixels, recall = matched truth /
  truth boundary pixels, F = 2PR / (P + R). Empty boundaries: both empty -> P = R = 1; only the
  prediction empty -> P = 1, R = 0; only the truth empty -> P = 0, R = 1.
* A sequence is scored, per object, over its frames **except the first (the prompt) and the
  last** (the DAVIS semi-supervised protocol); J-Mean / F-Mean average the per-object means
  over every object of every sequence, and J&F = (J-Mean + F-Mean) / 2.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np

BOUND_TH = 0.008


def _bool(m, what: str) -> np.ndarray:
    a = np.asarray(m)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D mask (H x W), got shape {a.shape}")
    return a.astype(bool) if a.dtype != np.bool_ else a


def jaccard(pred, gt, void=None) -> float:
    """Region similarity J: |pred & gt| / |pred | gt| (1.0 when both are empty)."""
    p, g = _bool(pred, "pred"), _bool(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {g.shape}")
    keep = np.ones_like(p) if void is None else ~_bool(void, "void")
    union = int(np.count_nonzero((p | g) & keep))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & g & keep)) / union


def seg2bmap(seg) -> np.ndarray:
    """Boundary map of a binary mask (the DAVIS `_seg2bmap` at the mask's own size)."""
    seg = _bool(seg, "mask")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """skimage.morphology.disk: a (2r+1)^2 uint8 kernel, 1 where x^2 + y^2 <= r^2."""
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return ((x * x + y * y) <= r * r).astype(np.uint8)


def bound_pixels(shape, bound_th: float = BOUND_TH) -> int:
    """The match tolerance in pixels: `bound_th` itself when >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def boundary_prf(pred, gt, void=None, bound_th: float = BOUND_TH) -> Dict[str, float]:
    """Boundary precision, recall and F of `pred` against `gt`."""
    p, g = _bool(pred, "pred"), _bool(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {g.shape}")
    if void is not None:
        keep = ~_bool(void, "void")
        p, g = p & keep, g & keep
    k = disk(bound_pixels(p.shape, bound_th))
    fg_b, gt_b = seg2bmap(p), seg2bmap(g)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), k) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), k) > 0
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        prec, rec = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        prec, rec = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        prec, rec = 1.0, 1.0
    else:
        prec = int(np.count_nonzero(fg_b & gt_dil)) / n_fg
        rec = int(np.count_nonzero(gt_b & fg_dil)) / n_gt
    f = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return {"precision": prec, "recall": rec, "f": f}


def f_measure(pred, gt, void=None, bound_th: float = BOUND_TH) -> float:
    """Contour accuracy F."""
    return boundary_prf(pred, gt, void, bound_th)["f"]


def score_sequence(pred: Sequence[Mapping[int, np.ndarray]], gt: Sequence[Mapping[int, np.ndarray]],
                   objects: Optional[Sequence[int]] = None, skip_first_last: bool = True,
                   voids: Optional[Sequence[Optional[np.ndarray]]] = None) -> Dict[str, object]:
    """Per-object J and F of one sequence. `pred[t]` / `gt[t]`: {object id: H x W bool} per frame (a
    missing object is an empty mask). Frames scored: all but the first and the last (DAVIS), or all
    when `skip_first_last` is False or there are fewer than 3 frames.
    -> {"objects": {id: {"J": mean, "F": mean, "J_frames": [...], "F_frames": [...]}}, "J", "F", "JF"}"""
    if len(pred) != len(gt):
        raise ValueError(f"prediction has {len(pred)} frames, ground truth {len(gt)}")
    if not gt:
        raise ValueError("no frames to score")
    ids = sorted(objects if objects is not None else {k for g in gt for k in g})
    frames = range(1, len(gt) - 1) if skip_first_last and len(gt) >= 3 else range(len(gt))
    shape = None
    for g in gt:
        for m in g.values():
            shape = np.asarray(m).shape
            break
        if shape is not None:
            break
    if shape is None:
        for p in pred:
            for m in p.values():
                shape = np.asarray(m).shape
                break
    per: Dict[int, Dict[str, object]] = {}
    for oid in ids:
        js, fs = [], []
        for t in frames:
            empty = np.zeros(shape, bool)
            g = gt[t].get(oid, empty)
            p = pred[t].get(oid, empty)
            v = voids[t] if voids is not None else None
            js.append(jaccard(p, g, v))
            fs.append(f_measure(p, g, v))
        per[oid] = {"J": float(np.mean(js)) if js else float("nan"), "F": float(np.mean(fs)) if fs else float("nan"),
                    "J_frames": js, "F_frames": fs}
    return {"objects": per, **mean_scores(per.values()), "frames_scored": list(frames)}


def mean_scores(objects) -> Dict[str, float]:
    """J-Mean, F-Mean and J&F over per-object scores ({"J", "F"} each)."""
    objs = list(objects)
    if not objs:
        return {"J": float("nan"), "F": float("nan"), "JF": float("nan")}
    j = float(np.mean([o["J"] for o in objs]))
    f = float(np.mean([o["F"] for o in objs]))
    return {"J": j, "F": f, "JF": (j + f) / 2}


def frame_iou(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray]) -> List[float]:
    """Per-object IoU of two frames' masks (objects of either; a missing object is empty)."""
    ids = sorted(set(a) | set(b))
    out = []
    for oid in ids:
        ref = a.get(oid)
        got = b.get(oid)
        shape = (ref if ref is not None else got).shape
        out.append(jaccard(ref if ref is not None else np.zeros(shape, bool),
                           got if got is not None else np.zeros(shape, bool)))
    return out


__all__ = ["BOUND_TH", "jaccard", "seg2bmap", "disk", "bound_pixels", "boundary_prf", "f_measure", "score_sequence",
           "mean_scores", "frame_iou"]
