"""sam2_edge.runtimes.preprocess: parity with the official pipeline (Pillow resize, torch
normalisation / interpolation). Pillow and torch are only used as references here."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import cv2
import numpy as np
import pytest

from pil_reference import _resize_bicubic_pil_int
from sam2_edge.contract import IMG_MEAN, IMG_STD
from sam2_edge.runtimes.preprocess import (
    normalize_video,
    pil_horizontal_first,
    resize_bicubic_pil,
    resize_bilinear,
    resize_bilinear_aa,
)

MICRO = Path(__file__).parent / "fixtures" / "micro_stream"


def _cv2_rgb(path: Path) -> np.ndarray:
    """Decode like PIL's ``Image.open(p).convert("RGB")``: no EXIF auto-rotation."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # [H, W, 3] uint8


def _frames() -> list[tuple[Path, dict]]:
    manifest = json.loads((MICRO / "manifest.json").read_text())
    return [(MICRO / f["file"], f) for f in manifest["video"]["frames"]]


def _pil_major() -> int:
    import PIL

    return int(PIL.__version__.split(".")[0])


def _torch_simd() -> bool:
    """True where torch runs the AVX2/AVX512 CPU kernels our bilinear emulation targets."""
    import torch

    return platform.machine().lower() in ("x86_64", "amd64") and (
        torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    )


# ------------------------------------------------------------------------------------------
# JPEG decode + golden model input (no Pillow needed)
# ------------------------------------------------------------------------------------------


def test_cv2_decode_matches_manifest_hashes():
    """cv2 decodes the fixture JPEGs to the very pixels the official (PIL) run recorded."""
    frames = _frames()
    assert len(frames) == 24
    for path, meta in frames:
        rgb = _cv2_rgb(path)
        assert list(rgb.shape[:2]) == meta["hw"]
        assert hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest() == meta[
            "decoded_rgb_sha256"
        ], path.name


def test_cv2_decode_matches_pil():
    Image = pytest.importorskip("PIL.Image")
    for path, _ in _frames():
        ref = np.asarray(Image.open(path).convert("RGB"))
        np.testing.assert_array_equal(_cv2_rgb(path), ref, err_msg=path.name)


def test_golden_model_input_uint8():
    """Bit-exact with the official pipeline's resized frames (240x135 -> 256x256)."""
    golden = np.load(MICRO / "video_stream_init.npz")["model_input_uint8"]  # [24, 256, 256, 3]
    frames = _frames()
    assert golden.shape == (len(frames), 256, 256, 3)
    for i, (path, _) in enumerate(frames):
        out = resize_bicubic_pil(_cv2_rgb(path), 256)
        assert out.dtype == np.uint8 and out.shape == (256, 256, 3) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, golden[i], err_msg=path.name)


# ------------------------------------------------------------------------------------------
# Pillow BICUBIC
# ------------------------------------------------------------------------------------------

# (h, w, size): up, down, mixed, portrait (vertical pass first in Pillow >= 13), tiny, huge
# reduction, identity axis
BICUBIC_CASES = [
    (135, 240, 256),
    (540, 960, 1024),
    (1080, 1920, 1024),
    (1920, 1080, 1024),
    (640, 480, 256),
    (300, 200, 1024),
    (1024, 800, 1024),
    (17, 33, 64),
    (7, 5, 3),
    (1, 1, 8),
    (700, 5, 32),
    (4000, 300, 64),
    (333, 517, 300),
    (1100, 1000, 1024),
]


def _test_image(rng: np.random.Generator, h: int, w: int, kind: str, c: int = 3) -> np.ndarray:
    if kind == "noise":
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if kind == "flat":  # saturated + constant channels: exercises the clips and exact ties
        return np.broadcast_to(np.array([0, 255, 97][:c], np.uint8), (h, w, c)).copy()
    small = rng.integers(0, 256, (max(h // 8, 1), max(w // 8, 1), c), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c)


@pytest.mark.parametrize("h,w,size", BICUBIC_CASES)
def test_bicubic_matches_pillow(h, w, size):
    Image = pytest.importorskip("PIL.Image")
    order = None if _pil_major() >= 13 else True  # Pillow <= 12: always horizontal first
    rng = np.random.default_rng(h * 7919 + w * 31 + size)
    for kind in ("noise", "smooth", "flat"):
        img = _test_image(rng, h, w, kind)
        ref = np.asarray(Image.fromarray(img).resize((size, size)))
        out = resize_bicubic_pil(img, size, horizontal_first=order)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, ref, err_msg=f"{kind} {h}x{w}->{size}")


@pytest.mark.parametrize("h,w,size", [(135, 240, 256), (480, 640, 200), (64, 40, 100)])
def test_bicubic_single_channel_matches_pillow_L(h, w, size):
    Image = pytest.importorskip("PIL.Image")
    img = _test_image(np.random.default_rng(5), h, w, "noise", c=1)
    ref = np.asarray(Image.fromarray(img[:, :, 0]).resize((size, size)))
    out = resize_bicubic_pil(img, size)
    assert out.shape == (size, size, 1)
    np.testing.assert_array_equal(out[:, :, 0], ref)


@pytest.mark.parametrize(
    "h,w,size", [(135, 240, 256), (90, 160, 64), (200, 120, 150), (50, 400, 37), (33, 12, 33)]
)
@pytest.mark.parametrize("horizontal_first", [None, True, False])
def test_bicubic_blas_path_matches_integer_reference(h, w, size, horizontal_first):
    """The float64/BLAS evaluation equals the literal int64 transcription of Resample.c."""
    img = _test_image(np.random.default_rng(h + w + size), h, w, "noise")
    np.testing.assert_array_equal(
        resize_bicubic_pil(img, size, horizontal_first=horizontal_first),
        _resize_bicubic_pil_int(img, size, horizontal_first=horizontal_first),
    )


def test_pil_horizontal_first_rule():
    assert pil_horizontal_first(135, 240, 256, 256)  # upscale
    assert pil_horizontal_first(1080, 1920, 1024, 1024)  # landscape
    assert not pil_horizontal_first(1920, 1080, 1024, 1024)  # portrait: 896 > 2 * 56
    assert not pil_horizontal_first(1100, 1000, 1024, 1024)  # height shrinks, width grows
    assert not pil_horizontal_first(2000, 1100, 1024, 1024)
    assert pil_horizontal_first(1300, 1200, 1024, 1024)  # 276 <= 2 * 176


def test_bicubic_identity_and_errors():
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = resize_bicubic_pil(img, 64)
    np.testing.assert_array_equal(out, img)
    assert out is not img
    with pytest.raises(ValueError):
        resize_bicubic_pil(img.astype(np.float32), 32)
    with pytest.raises(ValueError):
        resize_bicubic_pil(img[:, :, 0], 32)


# ------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------


def _normalize_reference_numpy(frame: np.ndarray) -> np.ndarray:
    x = (frame / 255.0).astype(np.float32).transpose(2, 0, 1)[None]  # [1, 3, S, S]
    x = x - IMG_MEAN[:, None, None]
    return x / IMG_STD[:, None, None]


def test_normalize_video_matches_formula_and_reuses_out():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame[0, :3] = [[0, 0, 0], [255, 255, 255], [1, 128, 254]]
    ref = _normalize_reference_numpy(frame)
    out = normalize_video(frame)
    assert out.dtype == np.float32 and out.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(out, ref)
    buf = np.full((1, 3, 64, 64), np.nan, np.float32)
    assert normalize_video(frame, out=buf) is buf
    np.testing.assert_array_equal(buf, ref)
    with pytest.raises(ValueError):
        normalize_video(frame, out=np.empty((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError):
        normalize_video(frame, out=np.empty((1, 3, 64, 64), np.float64))


def test_normalize_video_matches_torch():
    """Same ops as sam2.utils.misc.load_video_frames / _load_img_as_tensor."""
    torch = pytest.importorskip("torch")
    golden = np.load(MICRO / "video_stream_init.npz")["model_input_uint8"][:4]
    mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
    for frame in list(golden) + [np.arange(256 * 3, dtype=np.uint8).reshape(16, 16, 3)]:
        images = torch.zeros(1, 3, *frame.shape[:2], dtype=torch.float32)
        images[0] = torch.from_numpy(frame / 255.0).permute(2, 0, 1)
        images -= mean
        images /= std
        np.testing.assert_array_equal(normalize_video(frame), images.numpy())


# ------------------------------------------------------------------------------------------
# Bilinear (torch F.interpolate, align_corners=False)
# ------------------------------------------------------------------------------------------

# (h, w, out_h, out_w)
BILINEAR_CASES = [
    (135, 240, 256, 256),  # mask prompt, video res -> S (mixed)
    (1080, 1920, 1024, 1024),  # mask prompt, both axes shrink
    (600, 1000, 1024, 1024),
    (256, 256, 64, 64),  # mask*20-10 logits S -> S/4
    (1024, 1024, 256, 256),
    (480, 640, 256, 256),
    (64, 64, 135, 240),  # S/4 logits -> video res
    (256, 256, 540, 960),
    (256, 256, 1080, 1920),
    (33, 17, 100, 7),  # small outputs (ATen's channels-last kernel when out_h + out_w <= 128)
    (7, 100, 33, 17),
    (17, 19, 16, 18),
    (64, 64, 64, 65),
    (5, 5, 1, 1),
    (1, 1, 5, 5),
    (100, 100, 100, 100),
    (64, 100, 64, 33),
    (9, 64, 3, 64),
]
_LOGIT_ATOL = 4e-6  # +-10 data: a few float32 ulps (ulp(10) ~ 9.5e-7)
_MASK_ATOL = 4e-7  # [0, 1] data


def _torch_interp(x: np.ndarray, oh: int, ow: int, antialias: bool) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    y = F.interpolate(
        torch.from_numpy(x), size=(oh, ow), mode="bilinear", align_corners=False,
        antialias=antialias,
    )
    return y.numpy()


def _bilinear_inputs(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (rng.random((1, 1, h, w)) > 0.5).astype(np.float32)  # [1, 1, H, W] {0, 1}
    n = 2 if h * w <= 256 * 256 else 1  # several objects, but keep the big cases cheap
    logits = (rng.random((n, 1, h, w)) * 20 - 10).astype(np.float32)  # [N, 1, H, W]
    return mask, logits


@pytest.mark.parametrize("h,w,oh,ow", BILINEAR_CASES)
def test_bilinear_aa_matches_torch(h, w, oh, ow):
    pytest.importorskip("torch")
    mask, logits = _bilinear_inputs(h, w, h * 131 + w + oh)
    exact = _torch_simd()
    for x, atol in ((mask, _MASK_ATOL), (logits, _LOGIT_ATOL)):
        ref = _torch_interp(x, oh, ow, antialias=True)
        out = resize_bilinear_aa(x, oh, ow)
        assert out.shape == ref.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=0, atol=atol)
        if exact:  # x86-64 AVX2/AVX512 torch: bit-exact, so mask thresholds agree everywhere
            np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("h,w,oh,ow", BILINEAR_CASES)
def test_bilinear_matches_torch(h, w, oh, ow):
    pytest.importorskip("torch")
    _, logits = _bilinear_inputs(h, w, h * 17 + w * 3 + ow)
    ref = _torch_interp(logits, oh, ow, antialias=False)
    out = resize_bilinear(logits, oh, ow)
    assert out.shape == ref.shape and out.dtype == np.float32
    if _torch_simd():
        np.testing.assert_array_equal(out, ref)
    else:
        # torch's non-SIMD (DEFAULT) kernels compute the sample positions without the fused
        # multiply-add, shifting them by ~1e-5 px: up to ~1.5e-4 on these +-10 inputs
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)
    buf = np.empty_like(ref)
    assert resize_bilinear(logits, oh, ow, out=buf) is buf
    np.testing.assert_array_equal(buf, out)


@pytest.mark.parametrize(
    "h,w,oh,ow", [(64, 64, 135, 240), (256, 256, 1080, 1920), (256, 256, 1024, 1024)]
)
def test_bilinear_cv2_fast_path_close_to_torch(h, w, oh, ow):
    """exact=False (cv2.resize) samples at double-precision positions instead of torch's
    float32 ones: ~1e-5 of the step between neighbouring inputs (steps here are up to 20)."""
    pytest.importorskip("torch")
    _, logits = _bilinear_inputs(h, w, 3)
    ref = _torch_interp(logits, oh, ow, antialias=False)
    out = resize_bilinear(logits, oh, ow, exact=False)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)


def test_bilinear_shapes_and_errors():
    x = np.random.default_rng(0).random((8, 8)).astype(np.float32)  # plain 2-D input
    assert resize_bilinear(x, 16, 12).shape == (16, 12)
    assert resize_bilinear(x, 16, 12, exact=False).shape == (16, 12)
    assert resize_bilinear_aa(x, 4, 3).shape == (4, 3)
    y = resize_bilinear_aa(x, 8, 8)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    with pytest.raises(ValueError):
        resize_bilinear(x, 16, 16, out=np.empty((16, 15), np.float32))
    with pytest.raises(ValueError):
        resize_bilinear(np.zeros(5, np.float32), 2, 2)
