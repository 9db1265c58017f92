"""The official SAM 2 video pre-processing of a frame, torch-free: Pillow's bicubic resize to
S x S (:mod:`.pillow_resize`), then :func:`normalize_video`; and the mask resizes of
:mod:`.aten_resize`. numpy and OpenCV only, so it runs unchanged on small ARM boards.

* :func:`normalize_video` -- ``/255`` (float64) -> float32 -> ``(x - mean) / std`` in float32,
  exactly as ``sam2.utils.misc.load_video_frames`` does it (mean / std from the contract).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..contract import IMG_MEAN, IMG_STD
from .aten_resize import resize_bilinear, resize_bilinear_aa
from .pillow_resize import pil_horizontal_first, resize_bicubic_pil

__all__ = [
    "normalize_video",
    "pil_horizontal_first",
    "resize_bicubic_pil",
    "resize_bilinear",
    "resize_bilinear_aa",
]

# --------------------------------------------------------------------------------------
# Normalisation (official video predictor)
# --------------------------------------------------------------------------------------



@lru_cache(maxsize=1)
def _normalize_lut() -> np.ndarray:
    """``[3, 256]`` float32: for each channel and byte value, the exact float32 the official
    pipeline produces (``float32(v / 255.0)``, then float32 ``- mean``, then float32 ``/ std``).
    Elementwise IEEE arithmetic, so a table lookup is bit-identical to computing it per pixel."""
    x = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)  # [256]
    lut = (x[None, :] - IMG_MEAN[:, None]) / IMG_STD[:, None]  # float32 [3, 256]
    assert lut.dtype == np.float32
    lut.setflags(write=False)
    return lut


def normalize_video(frame_uint8: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Model input of the official video predictor from a resized RGB frame.

    Args:
        frame_uint8: ``[S, S, 3]`` uint8 RGB (e.g. from :func:`resize_bicubic_pil`).
        out: optional preallocated C-contiguous ``[1, 3, S, S]`` float32 array to fill
            (avoids a per-frame allocation).

    Returns:
        ``[1, 3, S, S]`` float32 equal to ``((frame / 255.0).astype(float32) - mean) / std``
        with float32 ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)`` --
        bit-identical to ``sam2.utils.misc.load_video_frames`` (``out`` itself if given).
    """
    if frame_uint8.ndim != 3 or frame_uint8.shape[2] != 3 or frame_uint8.dtype != np.uint8:
        raise ValueError(
            f"expected an SxSx3 uint8 array, got {frame_uint8.dtype} {frame_uint8.shape}"
        )
    h, w = frame_uint8.shape[:2]
    if out is None:
        out = np.empty((1, 3, h, w), dtype=np.float32)
    elif out.shape != (1, 3, h, w) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous float32 {(1, 3, h, w)} array, got {out.dtype} {out.shape}"
        )
    lut = _normalize_lut()  # [3, 256]
    planes = cv2.split(np.ascontiguousarray(frame_uint8))  # 3 x [S, S] uint8
    for c in range(3):
        dst = out[0, c]  # [S, S] float32, contiguous
        res = cv2.LUT(planes[c], lut[c].reshape(1, 256), dst=dst)  # table lookup, no arithmetic
        if res.ctypes.data != dst.ctypes.data:  # OpenCV allocated instead; copy into place
            dst[...] = res
    return out
