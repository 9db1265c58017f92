"""torch.nn.functional.interpolate(mode="bilinear", align_corners=False), with and without
antialias, bit-exact with ATen's x86-64 CPU float32 kernels, in numpy (no torch).

* :func:`resize_bilinear_aa` -- ``F.interpolate(..., antialias=True)``: how the official
  predictor resizes a mask prompt to the model's input and low-res sizes.
* :func:`resize_bilinear` -- ``F.interpolate(...)``: how it upsamples low-res mask logits to
  the video resolution.

Written here because the torch-free runtime needs the official results exactly. Coefficient
tables are cached per (input size, output size).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = ["resize_bilinear", "resize_bilinear_aa"]

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
