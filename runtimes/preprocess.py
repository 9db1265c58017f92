"""Torch-free, PIL-free image pre/post-processing that reproduces the official SAM 2 pipeline.

Only numpy and OpenCV are used here, so this module runs unchanged on small ARM boards.

* :func:`resize_bicubic_pil` -- bit-exact re-implementation of Pillow's
  ``Image.fromarray(rgb).resize((size, size))`` (BICUBIC, a = -0.5, antialiased support,
  22-bit fixed-point coefficients, horizontal pass then vertical pass, uint8 clip after each).
* :func:`normalize_video` -- ``/255`` (float64) -> float32 -> ``(x - mean) / std`` in float32,
  exactly as ``sam2.utils.misc.load_video_frames`` does it.
* :func:`resize_bilinear_aa` -- ``F.interpolate(mode="bilinear", align_corners=False,
  antialias=True)``.
* :func:`resize_bilinear` -- ``F.interpolate(mode="bilinear", align_corners=False)``.

All coefficient tables / weight matrices are cached per (input size, output size).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "IMG_MEAN",
    "IMG_STD",
    "normalize_video",
    "resize_bicubic_pil",
    "resize_bilinear",
    "resize_bilinear_aa",
]

# --------------------------------------------------------------------------------------
# Pillow BICUBIC resize (libImaging/Resample.c semantics, 8 bits per channel)
# --------------------------------------------------------------------------------------

_PRECISION_BITS = 32 - 8 - 2  # 22, as in Resample.c
_BICUBIC_SUPPORT = 2.0
_BICUBIC_A = -0.5


def _bicubic_filter(x: np.ndarray) -> np.ndarray:
    """Pillow's ``bicubic_filter`` evaluated elementwise in float64 with the same operation
    order as the C code (so the double results are identical)."""
    a = _BICUBIC_A
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0  # |x| < 1
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a  # 1 <= |x| < 2
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@lru_cache(maxsize=32)
def _pil_bicubic_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point coefficient table of Pillow's ``precompute_coeffs`` +
    ``normalize_coeffs_8bpc`` for the BICUBIC filter and the full-image box ``(0, in_size)``.

    Returns ``(idx, kk)``, both ``[out_size, ksize]``: ``idx`` int64 source indices
    (``xmin + k``, clamped into range; positions past ``xmax`` carry a zero coefficient) and
    ``kk`` int64 coefficients scaled by ``2**22``. Read-only (shared through the cache).
    """
    scale = float(in_size) / out_size  # (double)(in1 - in0) / outSize
    filterscale = max(scale, 1.0)
    support = _BICUBIC_SUPPORT * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    inv_filterscale = 1.0 / filterscale

    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale  # in0 = 0.0  [out]
    # C truncates toward zero; for negative values the clamp to 0 makes that equal to floor.
    xmin = np.maximum(np.floor(center - support + 0.5), 0).astype(np.int64)  # [out]
    xmax = np.minimum(np.floor(center + support + 0.5).astype(np.int64), in_size) - xmin  # [out]

    k = np.arange(ksize, dtype=np.int64)  # [K]
    valid = k[None, :] < xmax[:, None]  # [out, K]
    pos = (k[None, :] + xmin[:, None]).astype(np.float64)  # (double)(x + xmin)  [out, K]
    w = _bicubic_filter((pos - center[:, None] + 0.5) * inv_filterscale)
    w = np.where(valid, w, 0.0)  # [out, K]
    # ww accumulated left to right, like the C loop (adding exact zeros changes nothing)
    ww = np.zeros(out_size, dtype=np.float64)
    for j in range(ksize):
        ww = ww + w[:, j]
    safe = np.where(ww != 0.0, ww, 1.0)
    w = np.where(ww[:, None] != 0.0, w / safe[:, None], w)
    # normalize_coeffs_8bpc: (int)(+-0.5 + k * (1 << PRECISION_BITS)), truncating toward zero
    scaled = w * float(1 << _PRECISION_BITS)
    kk = np.trunc(np.where(w < 0.0, scaled - 0.5, scaled + 0.5)).astype(np.int64)
    kk[~valid] = 0
    idx = np.minimum(k[None, :] + xmin[:, None], in_size - 1)  # [out, K]
    idx.setflags(write=False)
    kk.setflags(write=False)
    return idx, kk


def _pil_pass(img: np.ndarray, axis: int, in_size: int, out_size: int) -> np.ndarray:
    """One Pillow 8bpc resampling pass along ``axis`` (0 = rows / vertical, 1 = columns /
    horizontal) of an ``H x W x C`` uint8 image; integer accumulation then ``clip8``."""
    idx, kk = _pil_bicubic_coeffs(in_size, out_size)
    shape = list(img.shape)
    shape[axis] = out_size
    acc = np.full(shape, 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    bshape = [1, 1, 1]
    bshape[axis] = out_size
    for j in range(idx.shape[1]):
        col = kk[:, j]
        if not col.any():
            continue
        src = np.take(img, idx[:, j], axis=axis)  # uint8, out shape
        acc += src * col.reshape(bshape)  # uint8 * int64 -> int64
    acc >>= _PRECISION_BITS  # arithmetic shift == C's `in >> PRECISION_BITS`
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def resize_bicubic_pil(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB image to ``size x size`` bit-exactly like Pillow's
    ``Image.fromarray(rgb).resize((size, size))`` (default BICUBIC resampling).

    Args:
        rgb: ``[H, W, 3]`` uint8 (any channel count works; Pillow semantics are per channel).
        size: output side length.

    Returns:
        ``[size, size, 3]`` uint8.

    Pillow's algorithm: separable bicubic convolution (a = -0.5) whose support is widened by
    the downscale factor (antialiasing), coefficients normalised to sum 1 then rounded to
    22-bit fixed point; the horizontal pass runs first, each pass adds ``1 << 21`` for
    rounding, shifts right by 22 and clips to uint8. A pass whose size does not change is
    skipped (it would be the identity anyway).
    """
    if rgb.ndim != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWxC uint8 array, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if h == size and w == size:
        return rgb.copy()
    out = rgb
    if w != size:  # horizontal pass  [H, W, C] -> [H, size, C]
        out = _pil_pass(out, 1, w, size)
    if h != size:  # vertical pass    [H, size, C] -> [size, size, C]
        out = _pil_pass(out, 0, h, size)
    return out


# --------------------------------------------------------------------------------------
# Normalisation (official video predictor)
# --------------------------------------------------------------------------------------

IMG_MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
IMG_STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)


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
        out: optional preallocated ``[1, 3, S, S]`` float32 C-contiguous array to fill
            (avoids a per-frame allocation).

    Returns:
        ``[1, 3, S, S]`` float32 equal to ``((frame / 255.0).astype(float32) - mean) / std``
        with float32 ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)``.
    """
    if frame_uint8.ndim != 3 or frame_uint8.shape[2] != 3 or frame_uint8.dtype != np.uint8:
        raise ValueError(f"expected an SxSx3 uint8 array, got {frame_uint8.dtype} {frame_uint8.shape}")
    h, w = frame_uint8.shape[:2]
    if out is None:
        out = np.empty((1, 3, h, w), dtype=np.float32)
    elif out.shape != (1, 3, h, w) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {(1, 3, h, w)}, got {out.dtype} {out.shape}")
    lut = _normalize_lut()
    for c in range(3):
        np.take(lut[c], frame_uint8[:, :, c], out=out[0, c])  # [S, S]
    return out


# --------------------------------------------------------------------------------------
# Bilinear resizes matching torch.nn.functional.interpolate (align_corners=False)
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _bilinear_aa_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float64 weights of torch's antialiased bilinear interpolation
    (the Pillow-style triangle filter whose support grows with the downscale factor;
    for upscaling it reduces to ordinary align_corners=False bilinear)."""
    scale = float(in_size) / out_size
    support = scale if scale >= 1.0 else 1.0  # (interp_size / 2) * scale, interp_size = 2
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        j = np.arange(xmin, xmax, dtype=np.float64)
        w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) * invscale))
        total = w.sum()
        if total != 0.0:
            w = w / total
        m[i, xmin:xmax] = w
    m.setflags(write=False)
    return m


@lru_cache(maxsize=64)
def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float64 weights of plain align_corners=False bilinear
    interpolation (torch ``upsample_bilinear2d``: ``src = max(scale * (i + 0.5) - 0.5, 0)``)."""
    scale = float(in_size) / out_size
    src = np.maximum(scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam1 = src - i0
    lam1[i0 == in_size - 1] = 0.0
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - lam1)
    np.add.at(m, (rows, i1), lam1)
    m.setflags(write=False)
    return m


@lru_cache(maxsize=64)
def _matrix_f32(kind: str, in_size: int, out_size: int) -> np.ndarray:
    base = _bilinear_aa_matrix if kind == "aa" else _bilinear_matrix
    m = base(in_size, out_size).astype(np.float32)
    m.setflags(write=False)
    return m


def _separable(x: np.ndarray, kind: str, out_h: int, out_w: int) -> np.ndarray:
    """``x [..., H, W]`` -> ``Mh [out_h, H] @ x @ Mw[out_w, W].T`` in float32."""
    h, w = x.shape[-2:]
    y = x
    if w != out_w:
        y = y @ _matrix_f32(kind, w, out_w).T  # [..., H, out_w]
    if h != out_h:
        y = _matrix_f32(kind, h, out_h) @ y  # [..., out_h, out_w]
    if y is x:
        y = x.copy()
    return np.ascontiguousarray(y, dtype=np.float32)


def resize_bilinear_aa(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False,
    antialias=True)`` for float32 ``x [..., H, W]`` -> ``[..., out_h, out_w]`` float32.

    Works for down- and up-scaling (each axis independently). Used for mask prompts
    (``{0,1}`` H x W -> S x S, then ``>= 0.5``) and for ``mask * 20 - 10`` logits S -> S/4.
    """
    x = np.asarray(x, dtype=np.float32)
    return _separable(x, "aa", int(out_h), int(out_w))


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False)`` (no
    antialias) for float32 ``x [..., H, W]`` -> ``[..., out_h, out_w]`` float32.

    Upscaling (both axes growing or unchanged) goes through ``cv2.resize(INTER_LINEAR)``,
    which uses the same sampling formula; any downscaled axis uses the explicit weight
    matrices instead (OpenCV switches some integer-factor downscales to INTER_AREA).
    """
    x = np.asarray(x, dtype=np.float32)
    h, w = x.shape[-2:]
    out_h, out_w = int(out_h), int(out_w)
    if out_h < h or out_w < w:
        return _separable(x, "bl", out_h, out_w)
    lead = x.shape[:-2]
    flat = x.reshape(-1, h, w)  # [N, H, W]
    out = np.empty((flat.shape[0], out_h, out_w), dtype=np.float32)  # [N, out_h, out_w]
    for n in range(flat.shape[0]):
        cv2.resize(flat[n], (out_w, out_h), dst=out[n], interpolation=cv2.INTER_LINEAR)
    return out.reshape(*lead, out_h, out_w)
