"""Validation and normalisation of images and prompts (numpy only; shared by the image
predictor and the streaming tracker). Every rejection names the fix."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from .contract import MAX_CLICKS
from .errors import InputError


def check_image(image, what: str = "image") -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be a numpy array H x W x 3 of uint8 RGB, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 RGB (0..255), got dtype {image.dtype}; "
                         "convert with (x * 255).clip(0, 255).astype(np.uint8)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{what} must have shape H x W x 3 (RGB), got {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"{what} is too small: {image.shape[:2]}")


def prompt_points(point_coords, point_labels, box, hw: Tuple[int, int], normalize_coords: bool,
                  image_size: int, allow_empty: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Points and box as the model takes them: box corners (labels 2, 3) first, then clicks,
    in S x S model pixels. -> coords [N, 2] float32, labels [N] int64 (no padding)."""
    h, w = hw
    if (point_coords is None) != (point_labels is None):
        raise InputError("point_coords and point_labels must be given together (one label per point)")
    coords = np.zeros((0, 2), np.float32)
    labels = np.zeros((0,), np.int64)
    if point_coords is not None:
        try:
            coords = np.asarray(point_coords, dtype=np.float32).reshape(-1, 2)
        except (ValueError, TypeError):
            raise InputError(f"points must be a list of [x, y] pairs, got {point_coords!r}") from None
        try:
            labels = np.asarray(point_labels, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError):
            raise InputError(f"point labels must be a list of 1 (positive) or 0 (negative), got {point_labels!r}") from None
        if labels.shape[0] != coords.shape[0]:
            raise InputError(f"got {coords.shape[0]} points but {labels.shape[0]} labels; give one label per point")
        if not np.isin(labels, (0, 1)).all():
            raise InputError(f"point labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
        labels = labels.astype(np.int64)
        if coords.shape[0] > MAX_CLICKS:
            raise InputError(f"at most {MAX_CLICKS} points per prompt, got {coords.shape[0]}")
    if not np.isfinite(coords).all():
        raise InputError("points must be finite numbers")
    lim = (1.0, 1.0) if not normalize_coords else (float(w), float(h))
    if coords.size and ((coords < 0).any() or (coords[:, 0] > lim[0]).any() or (coords[:, 1] > lim[1]).any()):
        raise InputError(f"points must lie inside the image: 0 <= x <= {lim[0]:g}, 0 <= y <= {lim[1]:g}; "
                         f"got {coords.tolist()}")
    if box is not None:
        try:
            b = np.asarray(box, dtype=np.float32).reshape(4)
        except (ValueError, TypeError):
            raise InputError(f"box must be [x0, y0, x1, y1], got {box!r}") from None
        if not np.isfinite(b).all():
            raise InputError("box must be finite numbers [x0, y0, x1, y1]")
        if not (b[2] > b[0] and b[3] > b[1]):
            raise InputError(f"box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {b.tolist()}")
        if b[0] < 0 or b[1] < 0 or b[2] > lim[0] or b[3] > lim[1]:
            raise InputError(f"box must lie inside the image (0..{lim[0]:g} x 0..{lim[1]:g}), got {b.tolist()}")
        coords = np.concatenate([b.reshape(2, 2), coords])
        labels = np.concatenate([np.array([2, 3], np.int64), labels])
    if coords.shape[0] == 0 and not allow_empty:
        raise InputError("empty prompt: give points with labels, a box, or a mask")
    scale = np.array([w, h], np.float32) if normalize_coords else np.ones(2, np.float32)
    coords = coords / scale * image_size
    return coords.astype(np.float32), labels
