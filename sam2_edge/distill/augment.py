"""SAM 2's training augmentations, drawn once per clip so every frame of it changes alike:
horizontal flip, random resized crop to the square model input, colour jitter and grayscale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np

from ..contract.preprocessing import IMG_MEAN, IMG_STD


@dataclass(frozen=True)
class Aug:
    flip: bool = False
    crop: Tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 as fractions
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    gray: bool = False


def draw_aug(rng: np.random.Generator, enabled: bool = True) -> Aug:
    if not enabled:
        return Aug()
    scale = float(rng.uniform(0.6, 1.0))  # area kept
    ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = min(1.0, float(np.sqrt(scale * ratio)))
    h = min(1.0, float(np.sqrt(scale / ratio)))
    x0, y0 = float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h))
    j = lambda s: float(rng.uniform(1 - s, 1 + s))  # noqa: E731
    return Aug(flip=bool(rng.random() < 0.5), crop=(x0, y0, x0 + w, y0 + h), brightness=j(0.3), contrast=j(0.3),
               saturation=j(0.3), gray=bool(rng.random() < 0.05))


def apply(frames: List[np.ndarray], aug: Aug, size: int) -> np.ndarray:
    """RGB uint8 frames -> [T, 3, size, size] float32, normalised as the model takes them."""
    out = np.empty((len(frames), 3, size, size), np.float32)
    for i, rgb in enumerate(frames):
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = aug.crop
        c = rgb[int(y0 * h):max(int(y1 * h), int(y0 * h) + 1), int(x0 * w):max(int(x1 * w), int(x0 * w) + 1)]
        interp = cv2.INTER_AREA if c.shape[0] > size else cv2.INTER_LINEAR
        x = cv2.resize(c, (size, size), interpolation=interp).astype(np.float32) / 255.0
        if aug.flip:
            x = x[:, ::-1]
        x = x * aug.brightness
        mean = x.mean()
        x = (x - mean) * aug.contrast + mean
        g = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = g[..., None] + (x - g[..., None]) * (0.0 if aug.gray else aug.saturation)
        x = (np.clip(x, 0.0, 1.0) - IMG_MEAN) / IMG_STD
        out[i] = x.transpose(2, 0, 1)
    return out


__all__ = ["Aug", "draw_aug", "apply"]
