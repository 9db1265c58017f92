"""EdgeTAM (RepViT-M1 trunk + FPN + SAM heads) image-path parity with the OFFICIAL EdgeTAM code
(facebookresearch/EdgeTAM, goldens of seeded random weights), and the variant / checkpoint /
block properties the issue asks for.

Boundaries (as tests/test_image_parity.py, whose helpers are reused): preprocessing -> FPN neck
levels (crop windows) -> conv_s0 / conv_s1 -> level 2 + no_mem_embed -> dense PE -> per prompt
case: low-res logits, IoU, object score, single-mask stability -> masks at image resolution.
`edgetam_micro` (S=256, fp32 goldens) runs in CI; `edgetam` (S=1024, fp16 goldens) is -m slow.

Tolerances: |ours - golden| <= 1e-4 + 1e-4 |golden| (+ half an fp16 ulp for fp16 goldens);
masks >= 99.5 % equal pixels. The BN-folded trunk (what the bundles run) is held to the same.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import IMAGE_CASES, check_close, load_golden, load_manifest, read_rgb  # noqa: E402
from test_image_parity import ATOL, RTOL, _check_case, _check_crops, _Encoded, _t  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
ET_MICRO_DIR = FIX / "edgetam_micro"
ET_MICRO_CKPT = ET_MICRO_DIR / "edgetam_micro_seed7.fp16.pt"
ET_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "edgetam"
ET_CKPT = ET_DIR / "edgetam_seed5.fp16.pt"


@pytest.fixture(scope="module")
def et_micro():
    from sam2_edge.checkpoint import load_checkpoint

    return load_checkpoint(str(ET_MICRO_CKPT))


@pytest.fixture(scope="module")
def et_golden():
    return load_golden(ET_MICRO_DIR / "image_truck.npz")


@pytest.fixture(scope="module")
def et_rgb():
    return read_rgb(ET_MICRO_DIR / "inputs" / "truck_div4.png")


@pytest.fixture(scope="module")
def et_enc(et_micro, et_rgb):
    model, cfg = et_micro
    return _Encoded(model, cfg, et_rgb)


# ---------------------------------------------------------------- variants, checkpoint, blocks
def test_variants_registered_and_inferred():
    from sam2_edge.checkpoint import match_variant, read_state_dict
    from sam2_edge.configs import get_config, list_variants

    assert {"edgetam", "edgetam-micro"} <= set(list_variants())
    full = get_config("edgetam")
    assert (full.image_size, full.d_model, full.mem_dim, full.mem_tokens) == (1024, 256, 64, 512)
    assert not full.has_no_obj_embed_spatial and not full.has_obj_ptr_tpos_enc
    assert match_variant(read_state_dict(str(ET_MICRO_CKPT))) == "edgetam-micro"


def test_checkpoint_loads_strictly(et_micro):
    """{"model": state_dict} with the official names (timm's trunk.body.* included): every key used."""
    model, cfg = et_micro
    raw = torch.load(str(ET_MICRO_CKPT), map_location="cpu", weights_only=True)["model"]
    assert cfg.name == "edgetam-micro" and set(model.state_dict()) == set(raw)
    assert len(raw) == load_manifest(ET_MICRO_DIR)["weights"]["num_tensors"]
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), raw[k].to(v.dtype).numpy(), err_msg=k)
    assert not any("no_obj_embed_spatial" in k or "obj_ptr_tpos_proj" in k for k in raw)


def test_full_size_layout_matches_official_checkpoint():
    """The edgetam variant's layout equals the official edgetam.yaml checkpoint's (meta build, no weights)."""
    from sam2_edge.checkpoint import expected_shapes
    from sam2_edge.configs import get_config

    exp = expected_shapes(get_config("edgetam"))
    assert sum(1 for k in exp if k.startswith("spatial_perceiver.")) == 2 + 2 * 20 + 2  # latents, 2 layers x 20 tensors, final norm
    assert exp["spatial_perceiver.latents"] == (256, 64) and exp["spatial_perceiver.latents_2d"] == (256, 64)
    assert exp["memory_attention.layers.1.cross_attn_image.k_proj.weight"] == (256, 64)
    if ET_CKPT.is_file():
        from sam2_edge.checkpoint import read_state_dict

        sd = read_state_dict(str(ET_CKPT))
        assert {k: tuple(v.shape) for k, v in sd.items()} == exp


def test_repvit_fold_is_exact_to_float_precision(et_micro):
    """BN folded into the convs and the RepVggDw branches merged: same trunk outputs to ~1e-6 relative."""
    import copy

    model, _ = et_micro
    trunk = copy.deepcopy(model.image_encoder.trunk)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = trunk(x)
        trunk.fold()
        got = trunk(x)
    assert set(trunk.state_dict()) == set(model.image_encoder.trunk.state_dict())  # folding adds no keys
    for i, (a, b) in enumerate(zip(got, ref)):
        rel = float((a - b).abs().max() / b.abs().max())
        print(f"stage {i}: folded vs BN max |d| / max |x| = {rel:.2e}")
        assert rel < 1e-5


def test_repvit_equals_timm_when_available(et_micro):
    """Cross-check against timm's repvit_m1 (features_only, pretrained=False, the checkpoint's
    trunk weights loaded strictly). timm is optional: on torch builds without a matching
    torchvision (timm imports it) this is skipped; the goldens above check the trunk anyway."""
    try:
        import timm
    except Exception as e:  # noqa: BLE001 - timm raises RuntimeError when torchvision does not match torch
        pytest.skip(f"timm not importable here ({type(e).__name__}: {str(e)[:80]})")
    model, _ = et_micro
    ref = timm.create_model("repvit_m1", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3)).eval()
    ref.load_state_dict(model.image_encoder.trunk.body.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        for a, b in zip(model.image_encoder.trunk(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_spatial_perceiver_shapes_and_pe(et_micro):
    """Memory of a frame: [32 global ; 64 windowed] tokens x 16; PE [zeros ; sine of the 8x8 grid]."""
    from sam2_edge.modeling.position_encoding import sine_pe_2d

    model, cfg = et_micro
    p = model.spatial_perceiver
    assert tuple(p.pos.shape) == (cfg.mem_tokens, cfg.mem_dim) == (96, 16)
    assert not p.pos[:32].any()
    np.testing.assert_array_equal(p.pos[32:].numpy(), sine_pe_2d(16, 8, 8).flatten(2)[0].T.numpy())
    x = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = p(x, model.maskmem_pos)
        one = p(x[1:], model.maskmem_pos)
        # window i only sees its own 2x2 window: changing another window leaves latent i unchanged
        y = x.clone()
        y[:, :, :2, :2] = torch.randn(2, 16, 2, 2, generator=torch.Generator().manual_seed(2))
        out2 = p(y, model.maskmem_pos)
    assert tuple(out.shape) == (2, 96, 16)
    torch.testing.assert_close(out[1:], one, rtol=1e-5, atol=1e-5)  # batch items independent
    assert (out2[:, 32] - out[:, 32]).abs().max() > 1e-3  # latent 0 of the grid reads window (0, 0)
    torch.testing.assert_close(out2[:, 33:], out[:, 33:], rtol=0, atol=0)


# ---------------------------------------------------------------- image parity (micro, CI)
def test_micro_rgb_decode_matches_golden(et_rgb, et_golden):
    info = load_manifest(ET_MICRO_DIR)["images"][0]
    assert list(et_rgb.shape[:2]) == info["hw"] == list(et_golden["image_hw"])
    assert hashlib.sha256(et_rgb.tobytes()).hexdigest() == info["decoded_rgb_sha256"]


def test_micro_preprocessing(et_enc, et_golden):
    check_close("model_input (preprocess_image)", et_enc.x.numpy(), et_golden["model_input"], ATOL, RTOL,
                group="etmic")


@pytest.mark.parametrize("folded", [False, True], ids=["bn", "folded"])
def test_micro_encoder_from_golden_input(et_micro, et_golden, folded):
    """Encoder boundaries with the official model_input fed directly (isolates the encoder)."""
    import copy

    model, _ = et_micro
    if folded:
        model = copy.deepcopy(model)
        model.image_encoder.trunk.fold()
    g = et_golden
    lab = " (BN folded)" if folded else ""
    with torch.inference_mode():
        x = _t(g["model_input"])
        feats = model.encode_image(x)
        levels = model.image_encoder(x)
        embed = model.add_no_mem_embed(feats.vision_feats)
        pe = model.sam_prompt_encoder.dense_pe()
    check_close("high_res_feat0" + lab, feats.feat_s0.numpy(), g["high_res_feat0"], ATOL, RTOL, group="etmic")
    check_close("high_res_feat1" + lab, feats.feat_s1.numpy(), g["high_res_feat1"], ATOL, RTOL, group="etmic")
    check_close("image_embed" + lab, embed.numpy(), g["image_embed"], ATOL, RTOL, group="etmic")
    check_close("image_pe", pe.numpy(), g["image_pe"], ATOL, RTOL, group="etmic")
    check_close("neck_level1 (fp16 golden)" + lab, levels[1].numpy(), g["neck_level1"], ATOL, RTOL, fp16_ref=True,
                group="etmic")
    _check_crops("etmic", g, levels, feats, embed, ATOL, RTOL, lab)


def test_micro_encoder_end_to_end_crops(et_enc, et_golden):
    _check_crops("etmic", et_golden, et_enc.levels, et_enc.feats, et_enc.embed, ATOL, RTOL, " (e2e)")
    check_close("image_embed (e2e)", et_enc.embed.numpy(), et_golden["image_embed"], ATOL, RTOL, group="etmic")


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_micro_image_case(et_micro, et_enc, et_golden, case):
    model, _ = et_micro
    cases = {c["case"]: c for c in load_manifest(ET_MICRO_DIR)["images"][0]["cases"]}
    # Logits: atol 5e-4 + rtol 5e-4. The float32 sums through the BN-folded RepViT trunk depend on
    # the thread count (oneDNN's blocking): measured worst |d| 1.7e-4 with 2 threads, 2.5e-4 with 1
    # (relative 2.2e-4), so SAM 2's 1e-4 fails on a 1-core machine; masks must still agree >= 99.5 %.
    _check_case("etmic", model, et_enc, et_golden, case, False, cases[case], logits_tol=(5e-4, 5e-4))


# ---------------------------------------------------------------- full size (-m slow)
@pytest.fixture(scope="module")
def et_full():
    if not ET_CKPT.is_file():
        pytest.skip(f"{ET_CKPT} not present (full-size goldens live in ../shared/reference)")
    from sam2_edge.checkpoint import load_checkpoint

    model, cfg = load_checkpoint(str(ET_CKPT))
    assert cfg.name == "edgetam"
    rgb = read_rgb(ET_DIR / load_manifest(ET_DIR)["images"][0]["input_file"])
    return model, _Encoded(model, cfg, rgb), load_golden(ET_DIR / "image_truck.npz"), rgb


@pytest.mark.slow
def test_full_encoder_end_to_end(et_full):
    model, enc, g, rgb = et_full
    info = load_manifest(ET_DIR)["images"][0]
    assert hashlib.sha256(rgb.tobytes()).hexdigest() == info["decoded_rgb_sha256"]
    _check_crops("edgetam", g, enc.levels, enc.feats, enc.embed, ATOL, RTOL, " (e2e)")
    check_close("image_embed (fp16 golden, e2e)", enc.embed.numpy(), g["image_embed"], ATOL, RTOL, fp16_ref=True,
                group="edgetam")


@pytest.mark.slow
@pytest.mark.parametrize("case", IMAGE_CASES)
def test_full_image_case(et_full, case):
    model, enc, g, _ = et_full
    cases = {c["case"]: c for c in load_manifest(ET_DIR)["images"][0]["cases"]}
    # The full-size goldens are fp16. Through the 1024-px RepViT trunk (BatchNorm, depthwise convs)
    # our float32 sums differ from the official ones by more than Hiera's do: measured, 98.7 % of
    # logits round to the identical fp16 value, the rest differ by one fp16 ulp (|d| <= 8.2e-3 at
    # |x| in [8, 16), relative <= 7.9e-4), and near zero by |d| <= 3.3e-4. atol 5e-4 + rtol 1e-3
    # (one fp16 ulp is 2**-10 relative) admits that and no more; masks must still agree (>= 99.5 %,
    # checked in _check_case).
    _check_case("edgetam", model, enc, g, case, True, cases[case], logits_tol=(5e-4, 1e-3))
