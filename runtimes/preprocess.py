"""Torch-free, PIL-free image pre/post-processing that reproduces the official SAM 2 pipeline.

Only numpy and OpenCV are used here, so this module runs unchanged on small ARM boards.

* :func:`resize_bicubic_pil` -- bit-exact re-implementation of Pillow's
  ``Image.fromarray(rgb).resize((size, size))`` (BICUBIC, a = -0.5, antialiased support,
  22-bit fixed-point coefficients, two separable passes with a uint8 clip after each; pass
  order as in Pillow >= 13, see :func:`pil_horizontal_first`).
* :func:`normalize_video` -- ``/255`` (float64) -> float32 -> ``(x - mean) / std`` in float32,
  exactly as ``sam2.utils.misc.load_video_frames`` does it.
* :func:`resize_bilinear_aa` -- ``F.interpolate(mode="bilinear", align_corners=False,
  antialias=True)``.
* :func:`resize_bilinear` -- ``F.interpolate(mode="bilinear", align_corners=False)``.

The two bilinear functions are bit-exact with torch's x86-64 (AVX2/AVX512) CPU kernels;
see the note above :func:`_fma32`. All coefficient tables are cached per (input size,
output size).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "IMG_MEAN",
    "IMG_STD",
    "normalize_video",
    "pil_horizontal_first",
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


# --------------------------------------------------------------------------------------
# Bilinear resizes matching torch.nn.functional.interpolate (align_corners=False)
# --------------------------------------------------------------------------------------
#
# Both functions reproduce ATen's CPU float32 kernels (aten/src/ATen/native/cpu/
# UpSampleKernel.cpp) operation by operation: indices and weights are computed in float32
# with the same float/double promotions, and the weighted sums are evaluated in the same
# order. On x86-64, torch runs the AVX2/AVX512 variants of those kernels, where the
# compiler contracts ``a * b + c`` into fused multiply-adds (and vectorises the antialias
# tap loop, see ``_aa_pass``); that is emulated with ``_fma32`` (product exact in float64,
# one float64 rounding, then float32 rounding -- equal to a true fused multiply-add except
# in double-rounding cases of probability ~2**-29). Against torch's DEFAULT (non-SIMD)
# kernels, e.g. ATEN_CPU_CAPABILITY=default, results differ by ~1 ulp.

_F32 = np.float32
_F64 = np.float64


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``fma(a, b, c)`` (see the note above)."""
    return (a.astype(_F64) * b.astype(_F64) + c.astype(_F64)).astype(_F32)


@lru_cache(maxsize=64)
def _torch_linear_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """``(i0, i1, lambda0, lambda1)`` of ATen ``compute_source_index_and_lambda`` for float32,
    align_corners=False, no scale factor: ``scale = float(in) / out``,
    ``src = max(fma(scale, i + 0.5f, -0.5f), 0)``, ``i0 = min(floor(src), in - 1)``,
    ``lambda1 = clamp(src - i0, 0, 1)``, ``i1 = i0 + (i0 < in - 1)``, ``lambda0 = 1 - lambda1``.
    Arrays are ``[out_size]``."""
    if in_size == out_size:
        i = np.arange(out_size, dtype=np.int64)
        res = (i, i, np.ones(out_size, _F32), np.zeros(out_size, _F32))
    else:
        scale = _F32(in_size) / _F32(out_size)
        d = np.arange(out_size, dtype=_F32) + _F32(0.5)
        src = _fma32(np.full_like(d, scale), d, np.full_like(d, -0.5))
        src = np.maximum(src, _F32(0.0))
        i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        lam1 = np.minimum(np.maximum(src - i0.astype(_F32), _F32(0.0)), _F32(1.0))
        i1 = i0 + (i0 < in_size - 1)
        res = (i0, i1, (_F32(1.0) - lam1).astype(_F32), lam1.astype(_F32))
    for r in res:
        r.setflags(write=False)
    return res


@lru_cache(maxsize=64)
def _torch_aa_linear_coeffs(
    in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ATen ``_compute_indices_min_size_weights_aa`` with the linear (triangle) filter for
    float32, align_corners=False, no scale factor, vectorised over the output samples with
    the C code's float/double promotions.

    Returns ``(idx, w, nvalid)``: ``idx [out, K]`` int64 source indices (clamped into range),
    ``w [out, K]`` float32 normalised weights (0 past ``nvalid``), ``nvalid [out]`` taps used."""
    scale = _F32(in_size) / _F32(out_size)  # area_pixel_compute_scale<float>
    if scale >= 1.0:
        support = _F32(1.0 * float(scale))  # (interp_size * 0.5) * scale, interp_size = 2
        invscale = _F32(1.0 / float(scale))
    else:
        support = _F32(1.0)
        invscale = _F32(1.0)
    ksize = int(np.ceil(support)) * 2 + 1
    i = np.arange(out_size, dtype=_F64)
    center = (float(scale) * (i + 0.5)).astype(_F32)  # float * double, stored as float  [out]
    # static_cast<int64_t>(float - float + 0.5 double): truncation toward zero
    xmin = np.maximum(np.trunc((center - support).astype(_F64) + 0.5), 0).astype(np.int64)
    xmax = np.trunc((center + support).astype(_F64) + 0.5).astype(np.int64)
    nvalid = np.clip(np.minimum(xmax, in_size) - xmin, 0, ksize)  # [out]
    j = np.arange(ksize, dtype=np.int64)
    valid = j[None, :] < nvalid[:, None]  # [out, K]
    d = (xmin[:, None] + j[None, :]).astype(_F32) - center[:, None]  # int64 - float -> float
    arg = ((d.astype(_F64) + 0.5) * float(invscale)).astype(_F32)  # double, passed as float
    ax = np.abs(arg)
    w = np.where(ax < 1.0, (1.0 - ax.astype(_F64)).astype(_F32), _F32(0.0))
    w = np.where(valid, w, _F32(0.0)).astype(_F32)  # [out, K]
    total = np.zeros(out_size, dtype=_F32)
    for k in range(ksize):  # float32 running sum, in tap order
        total = total + w[:, k]
    w = np.where(total[:, None] != 0.0, w / np.where(total != 0.0, total, _F32(1.0))[:, None], w)
    w = w.astype(_F32)
    idx = np.where(valid, xmin[:, None] + j[None, :], np.minimum(xmin, in_size - 1)[:, None])
    for r in (idx, w, nvalid):
        r.setflags(write=False)
    return idx, w, nvalid


def _axis_weights(w: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Reshape ``[out]`` weights to broadcast along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = w.shape[0]
    return w.reshape(shape)


def _aa_pass(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One ATen antialiased pass along ``axis`` (-1 horizontal, -2 vertical) of float32 ``x``.

    ATen evaluates ``out = x[t0] * w0; out += x[tj] * wj`` for ``j = 1 .. n-1``. In the
    AVX2/AVX512 builds the compiler vectorises that loop four taps at a time (products
    rounded, then added in order) and contracts the remaining ``(n - 1) % 4`` taps into
    fused multiply-adds; both are reproduced here per output sample."""
    idx, w, nvalid = _torch_aa_linear_coeffs(x.shape[axis], out_size)
    n_plain = ((nvalid - 1) // 4) * 4  # taps 1..n_plain are multiply-then-add  [out]
    out = np.take(x, idx[:, 0], axis=axis) * _axis_weights(w[:, 0], axis, x.ndim)
    for j in range(1, idx.shape[1]):
        used = nvalid > j
        if not used.any():
            break
        tap = np.take(x, idx[:, j], axis=axis)
        wj = _axis_weights(w[:, j], axis, x.ndim)
        plain = out + tap * wj
        fused = _fma32(tap, wj, out)
        sel_plain = _axis_weights(j <= n_plain, axis, x.ndim)
        sel_used = _axis_weights(used, axis, x.ndim)
        out = np.where(sel_used, np.where(sel_plain, plain, fused), out)
    return out


def resize_bilinear_aa(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False,
    antialias=True)`` for float32 ``x [..., H, W]`` -> ``[..., out_h, out_w]`` float32.

    Works for down- and up-scaling (each axis independently); separable like ATen: the
    horizontal pass first, then the vertical one, unchanged axes skipped. Used for mask
    prompts (``{0,1}`` H x W -> S x S, then ``>= 0.5``) and for ``mask * 20 - 10`` logits
    S -> S/4. Bit-exact with x86-64 torch in our tests (see the module note on FMA).
    """
    x = np.ascontiguousarray(x, dtype=_F32)
    if x.ndim < 2:
        raise ValueError(f"expected [..., H, W], got shape {x.shape}")
    out_h, out_w = int(out_h), int(out_w)
    y = x
    if x.shape[-1] != out_w:
        y = _aa_pass(y, -1, out_w)  # [..., H, out_w]
    if x.shape[-2] != out_h:
        y = _aa_pass(y, -2, out_h)  # [..., out_h, out_w]
    return y.copy() if y is x else y


_ROW_CHUNK = 32  # output rows per vertical-step chunk (keeps temporaries in cache)


def resize_bilinear(
    x: np.ndarray, out_h: int, out_w: int, *, exact: bool = True, out: np.ndarray | None = None
) -> np.ndarray:
    """``F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False)`` (no
    antialias) for float32 ``x [..., H, W]`` -> ``[..., out_h, out_w]`` float32.

    With ``exact=True`` (default) this reproduces ATen's x86-64 CPU kernels bit for bit: the
    generic one (``out = fma(t0, h0, t1 * h1)`` with ``tk = fma(x[k, j0], w0, x[k, j1] * w1)``,
    indices/weights from float32 ``fma(scale, i + 0.5, -0.5)``) and, when
    ``out_h + out_w <= 128``, the channels-last kernel ATen switches to for small outputs.
    (Not reproduced: ATen also takes the channels-last kernel for inputs with exactly 3
    channels when torch runs single-threaded; there results differ by ~1 ulp.)

    ``exact=False`` uses ``cv2.resize(INTER_LINEAR)`` when no axis shrinks -- about 20x
    faster. OpenCV samples at the same positions but computes them in double precision
    instead of torch's float32, so for size ratios that are not exact in float32 (e.g.
    256 -> 1080) results differ by up to ~1e-5 * (value step between neighbouring inputs),
    i.e. ~1e-4 on +-10 logits. Downscales always take the exact path.

    ``out``: optional preallocated float32 ``[..., out_h, out_w]`` result array (saves the
    per-frame allocation).
    """
    x = np.ascontiguousarray(x, dtype=_F32)
    if x.ndim < 2:
        raise ValueError(f"expected [..., H, W], got shape {x.shape}")
    h, w = x.shape[-2:]
    out_h, out_w = int(out_h), int(out_w)
    lead = x.shape[:-2]
    if out is not None and (
        out.shape != lead + (out_h, out_w) or out.dtype != _F32 or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"out must be a C-contiguous float32 {lead + (out_h, out_w)} array, "
            f"got {out.dtype} {out.shape}"
        )
    if not exact and out_h >= h and out_w >= w:
        flat = x.reshape(-1, h, w)  # [N, H, W]
        res = out if out is not None else np.empty(lead + (out_h, out_w), dtype=_F32)
        res_flat = res.reshape(-1, out_h, out_w)  # [N, out_h, out_w] (a view: res is contiguous)
        for n in range(flat.shape[0]):
            res_flat[n] = cv2.resize(flat[n], (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        return res
    a0, a1, h0, h1 = _torch_linear_coeffs(h, out_h)
    b0, b1, w0, w1 = _torch_linear_coeffs(w, out_w)
    if out_h + out_w <= 128:  # ATen cpu_upsample_linear_channels_last (scalar tail)
        hh0, hh1 = h0[:, None], h1[:, None]
        w00, w01, w10, w11 = hh0 * w0, hh0 * w1, hh1 * w0, hh1 * w1  # [out_h, out_w]
        r0 = np.take(x, a0, axis=-2)  # [..., out_h, W]
        r1 = np.take(x, a1, axis=-2)
        acc = np.take(r0, b1, axis=-1) * w01  # [..., out_h, out_w]
        acc = _fma32(np.take(r0, b0, axis=-1), w00, acc)
        acc = _fma32(np.take(r1, b0, axis=-1), w10, acc)
        acc = _fma32(np.take(r1, b1, axis=-1), w11, acc)
        if out is None:
            return acc
        out[...] = acc
        return out
    # generic kernel: horizontal interpolation of every input row, then vertical. Each 2-D
    # slice is processed separately, in chunks of rows, so float64 temporaries stay in cache.
    if out is None:
        out = np.empty(lead + (out_h, out_w), dtype=_F32)
    flat_x = x.reshape(-1, h, w)  # [N, H, W]
    flat_out = out.reshape(-1, out_h, out_w)  # [N, out_h, out_w] (view)
    w0d, h0d = w0.astype(_F64), h0.astype(_F64)
    for n in range(flat_x.shape[0]):
        xs = flat_x[n]  # [H, W]
        if w != out_w:
            t = flat_out[n] if h == out_h else np.empty((h, out_w), dtype=_F32)  # [H, out_w]
            for s in range(0, h, _ROW_CHUNK):
                e = min(s + _ROW_CHUNK, h)
                acc = np.take(xs[s:e].astype(_F64), b0, axis=1)  # [rows, out_w] float64
                acc *= w0d  # exact products
                acc += np.take(xs[s:e], b1, axis=1) * w1  # + float32 product, one rounding
                t[s:e] = acc  # float32 rounding
        else:
            t = xs
        if h == out_h:
            if t is xs:
                flat_out[n] = xs
            continue
        t64 = t.astype(_F64)
        for s in range(0, out_h, _ROW_CHUNK):
            e = min(s + _ROW_CHUNK, out_h)
            acc = np.take(t64, a0[s:e], axis=0)  # [rows, out_w] float64
            acc *= h0d[s:e, None]  # exact products
            p = np.take(t, a1[s:e], axis=0)
            p *= h1[s:e, None]  # float32 product t1 * h1
            acc += p  # one float64 rounding
            flat_out[n, s:e] = acc  # float32 rounding
    return out
