"""Checkpoint loading: variant inference, strict loading, helpful CheckpointErrors, and the
registered variants' layouts (keys, shapes, parameter counts) on the `meta` device."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import MICRO_CKPT, MICRO_DIR, load_manifest, optional_tiny_ckpt  # noqa: E402
from sam2_edge import CheckpointError, get_config, list_variants  # noqa: E402
from sam2_edge.checkpoint import build_sam2, load_checkpoint, read_state_dict  # noqa: E402
from sam2_edge.modeling.sam2 import SAM2Model  # noqa: E402

OFFICIAL = [f"{p}-hiera-{s}" for p in ("sam2", "sam2.1") for s in ("tiny", "small", "base-plus", "large")]
# Parameter counts published with the official checkpoints (millions).
OFFICIAL_PARAMS_M = {"tiny": 38.9, "small": 46.0, "base-plus": 80.8, "large": 224.4}
V21_ONLY = {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"}


@pytest.fixture(scope="module")
def micro_sd():
    """The micro checkpoint's raw (fp16) state dict; copy before modifying."""
    return torch.load(str(MICRO_CKPT), map_location="cpu", weights_only=True)["model"]


def _save(tmp_path, name, obj):
    p = tmp_path / name
    torch.save(obj, str(p))
    return str(p)


def _meta_model(variant):
    with torch.device("meta"):
        return SAM2Model(get_config(variant))


# ---------------------------------------------------------------- loading the micro checkpoint
def test_micro_variant_inferred_and_strict(micro_model, micro_sd):
    model, cfg = micro_model
    assert cfg.name == "micro" and cfg.version == "2.1" and cfg.image_size == 256
    assert not model.training
    sd = model.state_dict()
    assert set(sd) == set(micro_sd)  # strict: every key consumed, nothing left at its init value
    for k, v in micro_sd.items():
        assert sd[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        # fp16 -> fp32 is exact: the weights are the checkpoint's, bit for bit
        assert torch.equal(sd[k], v.float() if v.is_floating_point() else v), k
    man = load_manifest(MICRO_DIR)["weights"]
    assert len(micro_sd) == man["num_tensors"]
    assert sum(v.numel() for v in micro_sd.values()) == man["num_params"]


def test_explicit_variant_and_build_sam2(micro_ckpt):
    model, cfg = load_checkpoint(micro_ckpt, variant="micro")
    assert cfg.name == "micro"
    m2 = build_sam2(checkpoint=micro_ckpt)
    assert m2.cfg.name == "micro" and not m2.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_wrong_variant_requested_names_micro(micro_ckpt):
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(micro_ckpt, variant="sam2.1-hiera-tiny")
    msg = str(ei.value)
    print(msg)
    assert "'micro'" in msg and "sam2.1-hiera-tiny" in msg
    assert "variant='micro'" in msg  # names the fix


# ---------------------------------------------------------------- unreadable files
def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="does not exist") as ei:
        load_checkpoint(p)
    assert p in str(ei.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as ei:
        load_checkpoint(str(p))
    assert "download it again" in str(ei.value)


def test_truncated_checkpoint(tmp_path):
    data = MICRO_CKPT.read_bytes()
    p = tmp_path / "truncated.pt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(str(p))
    msg = str(ei.value)
    print(msg)
    assert "truncated or corrupt" in msg and "download it again" in msg


RANDOM_4K = np.random.default_rng(0).bytes(4096)
HTML_PAGE = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
# Non-checkpoint files. torch.load falls back to the legacy (non-zip) pickle reader for them,
# and its weights-only unpickler raises whatever the garbage triggers.
NOT_CHECKPOINTS = [
    pytest.param(RANDOM_4K, id="random-4k"),
    pytest.param(HTML_PAGE, id="html-error-page"),
    pytest.param(b"q\x00", id="pickle-binput-empty-stack"),  # IndexError
    pytest.param(b"h\x05", id="pickle-binget-unknown-memo"),  # KeyError
    pytest.param(b"J\x00", id="pickle-short-binint"),  # struct.error
]


@pytest.mark.parametrize("data", NOT_CHECKPOINTS)
def test_not_a_checkpoint_raises_checkpoint_error(tmp_path, data):
    p = tmp_path / "garbage.pt"
    p.write_bytes(data)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(str(p))
    assert str(p) in str(ei.value)


@pytest.mark.parametrize("data", [RANDOM_4K, HTML_PAGE], ids=["random-4k", "html-error-page"])
def test_not_a_checkpoint_message_says_corrupt(tmp_path, data):
    p = tmp_path / "garbage.pt"
    p.write_bytes(data)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(str(p))
    msg = str(ei.value)
    assert "code execution" not in msg and "not a readable torch checkpoint" in msg


class _RunsCodeOnLoad:
    """Unpickling this would create the marker file (open(path, 'w')): a stand-in for malicious code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Custom:
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize("payload", ["reduce", "custom-class"])
def test_pickle_needing_code_execution_is_refused(tmp_path, micro_sd, payload):
    marker = tmp_path / "pwned"
    obj = _RunsCodeOnLoad(str(marker)) if payload == "reduce" else _Custom()
    p = _save(tmp_path, "evil.pt", {"model": dict(micro_sd), "x": obj})
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p)
    msg = str(ei.value)
    print(msg.splitlines()[0])
    assert "code execution" in msg and "refused" in msg
    assert not marker.exists(), "loading executed code from the checkpoint"


# ---------------------------------------------------------------- readable, but not SAM 2
def test_dict_without_model_key(tmp_path, micro_sd):
    p = _save(tmp_path, "bare_sd.pt", dict(micro_sd))  # a bare state dict, not {"model": sd}
    with pytest.raises(CheckpointError, match="expected a dict with a 'model' state dict"):
        load_checkpoint(p)
    p = _save(tmp_path, "list.pt", [torch.zeros(2)])
    with pytest.raises(CheckpointError, match="'model'"):
        load_checkpoint(p)


def test_model_entry_not_tensor(tmp_path, micro_sd):
    sd = dict(micro_sd)
    sd["no_mem_embed"] = 1.5
    p = _save(tmp_path, "nontensor.pt", {"model": sd})
    with pytest.raises(CheckpointError, match="'no_mem_embed' is not a tensor"):
        load_checkpoint(p)


def test_not_sam2_state_dict(tmp_path):
    p = _save(tmp_path, "other.pt", {"model": {"backbone.conv.weight": torch.zeros(8, 3, 3, 3)}})
    with pytest.raises(CheckpointError, match="not a SAM 2 checkpoint"):
        load_checkpoint(p)


def test_sam20_style_micro_is_rejected(tmp_path, micro_sd):
    """micro without the SAM 2.1-only tensors: a SAM 2.0 layout that is not registered."""
    sd = {k: v for k, v in micro_sd.items() if k not in V21_ONLY}
    assert len(sd) == len(micro_sd) - 3
    p = _save(tmp_path, "micro_v20.pt", {"model": sd})
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p)
    msg = str(ei.value)
    print(msg)
    assert "matches no known variant" in msg and "micro" in msg and "sam2.1-hiera-tiny" in msg
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p, variant="micro")
    msg = str(ei.value)
    print(msg)
    assert "does not fit variant 'micro'" in msg and "3 missing" in msg
    assert "no_obj_embed_spatial" in msg and "obj_ptr_tpos_proj" in msg


def test_shape_corrupted_state_dict(tmp_path, micro_sd):
    sd = dict(micro_sd)
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    w = sd[key]
    sd[key] = torch.zeros(w.shape[0], w.shape[1] + 1, dtype=w.dtype)
    p = _save(tmp_path, "bad_shape.pt", {"model": sd})
    with pytest.raises(CheckpointError, match="matches no known variant"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p, variant="micro")
    msg = str(ei.value)
    print(msg)
    assert "shape mismatch" in msg and key in msg
    assert str(tuple(sd[key].shape)) in msg and str(tuple(w.shape)) in msg


def test_unexpected_extra_key(tmp_path, micro_sd):
    p = _save(tmp_path, "extra.pt", {"model": {**micro_sd, "extra.weight": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="matches no known variant"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match=r"1 unexpected .*extra\.weight"):
        load_checkpoint(p, variant="micro")


def test_read_state_dict_upcasts_to_float32(micro_sd):
    sd = read_state_dict(str(MICRO_CKPT))
    assert set(sd) == set(micro_sd)
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())


# ---------------------------------------------------------------- registered variants
def test_registry_has_official_variants():
    names = list_variants()
    assert set(OFFICIAL) | {"micro"} <= set(names)
    for n in OFFICIAL:
        assert get_config(n).version == ("2.1" if n.startswith("sam2.1") else "2")


@pytest.mark.parametrize("variant", OFFICIAL + ["micro"])
def test_variant_builds_on_meta(variant):
    model = _meta_model(variant)
    keys = set(model.state_dict())
    v21 = get_config(variant).is_v21
    assert (V21_ONLY <= keys) if v21 else not (V21_ONLY & keys)
    assert any(k.startswith("image_encoder.trunk.") for k in keys)
    if variant.startswith("sam2"):
        size = variant.split("-hiera-")[1]
        n = sum(p.numel() for p in model.parameters())
        official = OFFICIAL_PARAMS_M[size] * 1e6
        print(f"{variant}: {n:,} parameters (official {OFFICIAL_PARAMS_M[size]} M, "
              f"{100 * (n - official) / official:+.2f} %)")
        assert abs(n - official) <= 0.01 * official


def test_sam2_and_sam21_layouts_differ_only_by_v21_tensors():
    for size in OFFICIAL_PARAMS_M:
        a = {k: tuple(v.shape) for k, v in _meta_model(f"sam2-hiera-{size}").state_dict().items()}
        b = {k: tuple(v.shape) for k, v in _meta_model(f"sam2.1-hiera-{size}").state_dict().items()}
        assert set(b) - set(a) == V21_ONLY and not set(a) - set(b)
        assert all(a[k] == b[k] for k in a)


def test_micro_layout_equals_checkpoint(micro_sd):
    ours = {k: tuple(v.shape) for k, v in _meta_model("micro").state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in micro_sd.items()}


def test_tiny_layout_equals_official_checkpoint():
    p = optional_tiny_ckpt()
    if p is None:
        pytest.skip("tiny reference checkpoint (shared/reference/tiny) is absent")
    ref = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)["model"]
    ref_shapes = {k: tuple(v.shape) for k, v in ref.items()}
    ours = {k: tuple(v.shape) for k, v in _meta_model("sam2.1-hiera-tiny").state_dict().items()}
    assert sorted(set(ref_shapes) - set(ours)) == [] and sorted(set(ours) - set(ref_shapes)) == []
    assert ours == ref_shapes
    man = load_manifest(p.parent)["weights"]
    assert len(ref) == man["num_tensors"] == 471
    assert sum(int(np.prod(s)) for s in ours.values()) == man["num_params"]
