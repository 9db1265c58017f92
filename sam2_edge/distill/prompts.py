"""Prompts sampled from the teacher's own masks, so no labels are needed: a seed click gives the
teacher's mask on the first frame of a clip; the training prompt is then clicks inside (and
outside) that mask, its box (jittered) or the mask itself, as SAM 2's training mixes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..contract import LABEL_BOX_BR, LABEL_BOX_TL

KINDS = ("points", "box", "mask")
KIND_P = (0.4, 0.3, 0.3)
MIN_AREA, MAX_AREA = 0.01, 0.8  # a seed mask covering less / more of the frame is re-drawn


@dataclass(frozen=True)
class Prompt:
    kind: str
    scale: int  # coords are pixels of a scale x scale model input (rescaled for another input size)
    coords: Optional[np.ndarray] = None  # [N, 2] float32
    labels: Optional[np.ndarray] = None  # [N] int64 (1 positive, 0 negative, 2 / 3 box corners)
    mask: Optional[np.ndarray] = None  # [L, L] bool (teacher low-res grid)


def click(x: float, y: float, scale: int) -> Prompt:
    return Prompt("points", scale, np.array([[x, y]], np.float32), np.array([1], np.int64))


def sample_prompt(rng: np.random.Generator, teacher_mask: Callable[[Prompt], np.ndarray], scale: int,
                  tries: int = 4) -> Prompt:
    """`teacher_mask(prompt)` -> the teacher's low-res logits [L, L] on the clip's first frame."""
    mask = None
    for _ in range(tries):
        seed = click(*(rng.uniform(0.1, 0.9, 2) * scale), scale)
        m = teacher_mask(seed) > 0
        if m.any():
            mask = m
        if MIN_AREA <= m.mean() <= MAX_AREA:
            break
    if mask is None:
        return seed  # the teacher sees nothing anywhere: the student learns that too
    return from_mask(rng, mask, scale)


def from_mask(rng: np.random.Generator, mask: np.ndarray, scale: int) -> Prompt:
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_P))]
    cell = scale / mask.shape[0]
    if kind == "mask":
        return Prompt("mask", scale, mask=mask.copy())
    ys, xs = np.nonzero(mask)
    if kind == "box":
        x0, x1, y0, y1 = xs.min() * cell, (xs.max() + 1) * cell, ys.min() * cell, (ys.max() + 1) * cell
        jit = rng.normal(0.0, 0.05, 4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        b = np.clip(np.array([x0, y0, x1, y1]) + jit, 0, scale - 1)
        b = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])], np.float32)
        return Prompt("box", scale, b.reshape(2, 2), np.array([LABEL_BOX_TL, LABEL_BOX_BR], np.int64))
    n_pos = int(rng.integers(1, 4))
    pick = rng.choice(len(xs), size=n_pos)
    pts = [[(xs[i] + 0.5) * cell, (ys[i] + 0.5) * cell] for i in pick]
    labels = [1] * n_pos
    out_y, out_x = np.nonzero(~mask)
    if len(out_x) and rng.random() < 0.5:
        i = int(rng.integers(len(out_x)))
        pts.append([(out_x[i] + 0.5) * cell, (out_y[i] + 0.5) * cell])
        labels.append(0)
    return Prompt("points", scale, np.array(pts, np.float32), np.array(labels, np.int64))


__all__ = ["Prompt", "click", "sample_prompt", "from_mask", "KINDS"]
