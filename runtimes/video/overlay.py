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


def draw_legend(img: np.ndarray, obj_ids, empty=(), title: str = "") -> np.ndarray:
    """A small legend in the top-left corner (in place): one colour swatch and "obj N" per
    object id, "obj N (no mask)" for the ids in `empty`; `title` above them if given."""
    ids = sorted(int(i) for i in obj_ids)
    if not ids and not title:
        return img
    h, w = img.shape[:2]
    scale = 0.35 if max(h, w) < 400 else 0.5
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    row = th + base + 4
    lines = ([(None, title)] if title else []) + [(i, f"obj {i}" + (" (no mask)" if i in set(empty) else ""))
                                                  for i in ids]
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for _, t in lines) + row + 8
    height = row * len(lines) + 4
    x0, y0 = 4, 4
    x1, y1 = min(w - 1, x0 + width), min(h - 1, y0 + height)
    if x1 <= x0 or y1 <= y0:
        return img
    patch = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (patch * 0.4).astype(np.uint8)  # darkened box behind the text
    for k, (obj_id, text) in enumerate(lines):
        y = y0 + 2 + row * k
        x = x0 + 4
        if obj_id is not None:
            cv2.rectangle(img, (x, y + 2), (x + row - 6, y + row - 4), object_color(obj_id), -1)
            x += row
        cv2.putText(img, text, (x, y + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img
