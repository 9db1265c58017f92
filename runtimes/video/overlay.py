"""Drawing masks on frames: a stable colour per object id, blended masks with outlines and id
labels. Shared by `sam2-edge track` (overlay video) and the demo (window, recordings)."""

from __future__ import annotations

from typing import Dict, Tuple

import cv2
import numpy as np


def object_color(obj_id: int) -> Tuple[int, int, int]:
    """A stable, distinct BGR colour per object id (golden-angle hues)."""
    hue = int((obj_id * 137.508) % 360) // 2
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_masks(img: np.ndarray, masks: Dict[int, np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """Blend each object's mask into a copy of the BGR image in its colour, outline it and label its id."""
    out = img.copy()
    h, w = out.shape[:2]
    for obj_id in sorted(masks):
        m = _fit_mask(masks[obj_id], h, w)
        if not m.any():
            continue
        color = np.array(object_color(obj_id), dtype=np.float32)
        region = out[m].astype(np.float32)
        out[m] = (region * (1.0 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, object_color(obj_id), 1 if max(h, w) < 400 else 2, cv2.LINE_AA)
        ys, xs = np.nonzero(m)
        label = str(obj_id)
        scale = 0.4 if max(h, w) < 400 else 0.6
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = int(min(max(xs.min(), 0), max(w - tw - 4, 0)))
        y = int(min(max(ys.min() - 2, th + 2), h - 1))
        cv2.rectangle(out, (x, y - th - 2), (x + tw + 3, y + base - 1), object_color(obj_id), -1)
        cv2.putText(out, label, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _fit_mask(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if m.shape != (h, w):
        m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return m
