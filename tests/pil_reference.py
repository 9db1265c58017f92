"""The literal integer form of Pillow's 8-bpc bicubic pass (as Resample.c writes it): a slow
reference the tests compare the product's BLAS formulation against."""

from __future__ import annotations

import numpy as np

from sam2_edge.runtimes.pillow_resize import _PRECISION_BITS, _pil_bicubic_coeffs, pil_horizontal_first


def _pil_pass_int(img: np.ndarray, axis: int, in_size: int, out_size: int) -> np.ndarray:
    """One Pillow 8bpc resampling pass along ``axis`` (0 = rows / vertical, 1 = columns /
    horizontal) of an ``H x W x C`` uint8 image, written as literally as the C code: integer
    accumulation from ``1 << 21``, arithmetic shift by 22, ``clip8``. Slow reference used by
    the tests; :func:`resize_bicubic_pil` uses the BLAS formulation below."""
    idx, kk = _pil_bicubic_coeffs(in_size, out_size)
    shape = list(img.shape)
    shape[axis] = out_size
    acc = np.full(shape, 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    bshape = [1] * img.ndim
    bshape[axis] = out_size
    for j in range(idx.shape[1]):
        src = np.take(img, idx[:, j], axis=axis)  # uint8, out shape
        acc += src * kk[:, j].reshape(bshape)  # uint8 * int64 -> int64
    acc >>= _PRECISION_BITS  # arithmetic shift == C's `in >> PRECISION_BITS`
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def _resize_bicubic_pil_int(
    rgb: np.ndarray, size: int, *, horizontal_first: bool | None = None
) -> np.ndarray:
    """Integer reference of :func:`resize_bicubic_pil` (same result, several times slower)."""
    h, w = rgb.shape[:2]
    if horizontal_first is None:
        horizontal_first = pil_horizontal_first(h, w, size, size)
    out = rgb.copy()
    for axis in ((1, 0) if horizontal_first else (0, 1)):
        n = out.shape[axis]
        if n != size:
            out = _pil_pass_int(out, axis, n, size)
    return out  # [size, size, C]


