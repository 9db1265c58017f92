"""Pillow's BICUBIC resize, bit-exact, in numpy + OpenCV (no Pillow, no torch).

:func:`resize_bicubic_pil` reproduces ``Image.fromarray(rgb).resize((size, size))`` (BICUBIC,
a = -0.5, antialiased support, 22-bit fixed-point coefficients, two separable passes with a
uint8 clip after each; pass order as in Pillow >= 13, see :func:`pil_horizontal_first`) --
the resize the official SAM 2 video predictor applies to every frame. Written here rather
than calling Pillow because the torch-free runtime must run on boards without it and the
result must be bit-identical. Coefficient tables are cached per (input size, output size).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = ["pil_horizontal_first", "resize_bicubic_pil"]

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


_BLOCK = 16  # output rows / columns per dense band block


@lru_cache(maxsize=32)
def _pil_bicubic_blocks(
    in_size: int, out_size: int
) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """The fixed-point table of :func:`_pil_bicubic_coeffs` as dense band blocks.

    Each entry ``(s, e, lo, hi, m)`` maps input samples ``lo:hi`` to output samples ``s:e``
    with ``m [e - s, hi - lo]`` float64. The entries are the integer coefficients times
    ``2**-22`` -- a power of two, so exact.
    """
    idx, kk = _pil_bicubic_coeffs(in_size, out_size)
    scaled = kk.astype(np.float64) * 2.0**-_PRECISION_BITS
    blocks = []
    for s in range(0, out_size, _BLOCK):
        e = min(s + _BLOCK, out_size)
        lo = int(idx[s:e].min())
        hi = int(idx[s:e].max()) + 1
        m = np.zeros((e - s, hi - lo), dtype=np.float64)
        rows = np.repeat(np.arange(e - s), idx.shape[1])
        np.add.at(m, (rows, (idx[s:e] - lo).ravel()), scaled[s:e].ravel())
        m.setflags(write=False)
        blocks.append((s, e, lo, hi, m))
    return tuple(blocks)


# Largest m * n * k of one GEMM call: OpenBLAS runs GEMMs up to 65536 * 4 multiply-adds on
# the calling thread only. Staying below that keeps the resize single-threaded and
# predictable -- threaded OpenBLAS calls degrade badly when the cores are already busy
# (e.g. with the model's own inference threads).
_GEMM_MAX_WORK = 65536 * 4


def _fixed_to_u8(a: np.ndarray, out: np.ndarray) -> None:
    """``a = acc * 2**-22`` (float64 2-D, ``acc`` integer) -> Pillow's ``clip8(acc + (1 << 21))``
    written into ``out`` (uint8, same shape).

    ``floor((acc + 2**21) / 2**22) == round((acc + 0.5) / 2**22)`` for integer ``acc`` and the
    right-hand side can never be a rounding tie, so OpenCV's round-to-nearest saturating
    conversion gives the exact result in one pass."""
    res = cv2.add(a, 2.0 ** -(_PRECISION_BITS + 1), dst=out, dtype=cv2.CV_8U)
    if res.ctypes.data != out.ctypes.data:  # OpenCV allocated instead; copy into place
        out[...] = res


def _bicubic_rows(y: np.ndarray, out_rows: int) -> np.ndarray:
    """One Pillow pass along axis 0 of a 2-D uint8 array: ``[N, M]`` -> ``[out_rows, M]``.

    Processes 16 output rows at a time: their input band is converted to float64 and
    multiplied by the dense band block (exact, see :func:`resize_bicubic_pil`), in column
    chunks small enough that every temporary stays in cache and every GEMM runs
    single-threaded."""
    n, mcols = y.shape
    out = np.empty((out_rows, mcols), dtype=np.uint8)  # [out_rows, M]
    blocks = _pil_bicubic_blocks(n, out_rows)
    band_max = max(hi - lo for _, _, lo, hi, _ in blocks)
    chunk = max(8, _GEMM_MAX_WORK // (_BLOCK * band_max))
    for c0 in range(0, mcols, chunk):
        c1 = min(c0 + chunk, mcols)
        acc = np.empty((_BLOCK, c1 - c0), dtype=np.float64)  # [16, chunk]
        for s, e, lo, hi, m in blocks:
            band = y[lo:hi, c0:c1].astype(np.float64)  # [hi - lo, chunk]
            a = acc[: e - s]
            np.matmul(m, band, out=a)
            _fixed_to_u8(a, out[s:e, c0:c1])
    return out


def pil_horizontal_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool:
    """Pass order of Pillow >= 13 (``ImagingResampleInner``): the vertical pass runs first
    when the height shrinks by more than twice as many pixels as the width does; otherwise
    the horizontal pass runs first. (Pillow <= 12 always runs the horizontal pass first.)"""
    dh = in_h - out_h
    return not (dh > 0 and dh > (in_w - out_w) * 2)


def _bicubic_v_pass(img: np.ndarray, out_h: int) -> np.ndarray:
    """Vertical pass: ``[H, W, C]`` uint8 -> ``[out_h, W, C]`` uint8."""
    h, w, c = img.shape
    return _bicubic_rows(img.reshape(h, w * c), out_h).reshape(out_h, w, c)


def _transpose_hw(img: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` -> contiguous ``[W, H, C]`` (OpenCV's SIMD transpose when it applies)."""
    c = img.shape[2]
    if c <= 4:
        t = cv2.transpose(img)
        return t.reshape(img.shape[1], img.shape[0], c)
    return np.ascontiguousarray(img.transpose(1, 0, 2))


def _bicubic_h_pass(img: np.ndarray, out_w: int) -> np.ndarray:
    """Horizontal pass: ``[H, W, C]`` uint8 -> ``[H, out_w, C]`` uint8 (run as a row pass on the
    transposed image)."""
    t = _transpose_hw(img)  # [W, H, C]
    t = _bicubic_v_pass(t, out_w)  # [out_w, H, C]
    return _transpose_hw(t)  # [H, out_w, C]


def resize_bicubic_pil(
    rgb: np.ndarray, size: int, *, horizontal_first: bool | None = None
) -> np.ndarray:
    """Resize an RGB image to ``size x size`` bit-exactly like Pillow's
    ``Image.fromarray(rgb).resize((size, size))`` (default BICUBIC resampling).

    Args:
        rgb: ``[H, W, 3]`` uint8 (any channel count works; Pillow semantics are per channel).
        size: output side length.
        horizontal_first: pass order. ``None`` (default) follows Pillow >= 13 (see
            :func:`pil_horizontal_first`; it only matters for portrait inputs whose height
            shrinks a lot more than their width); ``True`` reproduces Pillow <= 12, which
            always ran the horizontal pass first.

    Returns:
        ``[size, size, 3]`` uint8, C-contiguous.

    Pillow's algorithm (libImaging/Resample.c): separable bicubic convolution (a = -0.5)
    whose support is widened by the downscale factor (antialiasing), coefficients normalised
    to sum 1 then rounded to 22-bit fixed point; each pass adds ``1 << 21`` to the integer
    sum, shifts right by 22 and clips to uint8. A pass whose size does not change is skipped
    (it would be the identity anyway).

    Implementation: the integer sums are evaluated as float64 products/sums of integers times
    powers of two -- every partial result fits in 53 bits, so BLAS band-block matmuls compute
    them *exactly* (in any summation order) and much faster than numpy integer loops.
    """
    if rgb.ndim != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWxC uint8 array, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if h == size and w == size:
        return rgb.copy()
    if horizontal_first is None:
        horizontal_first = pil_horizontal_first(h, w, size, size)
    img = np.ascontiguousarray(rgb)  # [H, W, C]
    if horizontal_first:
        if w != size:
            img = _bicubic_h_pass(img, size)  # [H, size, C]
        if h != size:
            img = _bicubic_v_pass(img, size)  # [size, size, C]
    else:
        if h != size:
            img = _bicubic_v_pass(img, size)  # [size, W, C]
        if w != size:
            img = _bicubic_h_pass(img, size)  # [size, size, C]
    return img
