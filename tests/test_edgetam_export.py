"""EdgeTAM bundles through the existing exporters, and torch-free tracking with them.

* The bundle contract carries the compressed memory layout (`spec.mem_tokens`: memory
  [1, Kc + R, T, mem_dim], maskmem [1, T, mem_dim]); bundles written before the field existed
  still open with SAM 2's spatial layout (torch-free unit tests below).
* ONNX: `edgetam_micro` exported once per module; tracking through `Tracker.from_bundle`
  (onnxruntime, no torch in the process) reproduces every streaming golden scenario with the
  tolerances of tests/test_edgetam_tracker.py (logits 1e-3 / 3e-3 x max(1, |golden|), masks
  >= 99.5 %).
* ExecuTorch (XNNPACK): the same for the .pte bundle (skipped without executorch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_golden import run_scenario

from sam2_edge.contract import TrackerSpec
from sam2_edge.contract.manifest import spec_from_dict

FIX = Path(__file__).parent / "fixtures"
STREAM = FIX / "edgetam_micro_stream"
CKPT = FIX / "edgetam_micro" / "edgetam_micro_seed7.fp16.pt"
SCENARIOS = ["init", "late_object", "refine", "click_untracked", "mask", "long"]
TOL_EARLY, TOL_LATE, MIN_MASK_AGREEMENT = 1e-3, 3e-3, 0.995
OLD_SPEC = {"image_size": 256, "d_model": 64, "mem_dim": 16, "num_maskmem": 7, "cond_slots": 2,
            "ptr_recent": 15, "max_clicks": 16}


# ---------------------------------------------------------------- contract (no torch)
def test_spec_without_mem_tokens_keeps_sam2_layout():
    """A manifest written before `mem_tokens` existed opens with SAM 2's spatial memory."""
    spec = spec_from_dict(dict(OLD_SPEC))
    assert spec.mem_tokens == 0 and spec.mem_frame_shape == (16, 16, 16)
    io = spec.io()
    assert dict((t.name, t.shape) for t in io["memory_attention"][0])["memory"] == (1, 8, 16, 16, 16)
    assert io["memory_encoder"][1][0].shape == (1, 16, 16, 16)


def test_sam2_manifest_spec_is_unchanged():
    """A SAM 2 spec is written without `mem_tokens` (older readers still open SAM 2 bundles);
    an EdgeTAM spec carries it (older readers refuse it: unknown key -> "upgrade sam2-edge")."""
    assert TrackerSpec(256, 64, 16).to_dict() == OLD_SPEC
    assert TrackerSpec(256, 64, 16, mem_tokens=96).to_dict() == {**OLD_SPEC, "mem_tokens": 96}
    assert spec_from_dict(TrackerSpec(256, 64, 16, mem_tokens=96).to_dict()).mem_tokens == 96


def test_spec_with_mem_tokens_is_the_compressed_layout():
    spec = spec_from_dict({**OLD_SPEC, "mem_tokens": 96})
    assert spec == TrackerSpec(256, 64, 16, mem_tokens=96)
    assert dict((t.name, t.shape) for t in spec.io()["memory_attention"][0])["memory"] == (1, 8, 96, 16)
    full = TrackerSpec(1024, 256, 64, mem_tokens=512)  # the issue's [Kc + R, 512, 64] per object
    assert dict((t.name, t.shape) for t in full.io()["memory_attention"][0])["memory"] == (1, 8, 512, 64)


@pytest.mark.parametrize("bad", [-1, 1 << 20, 1.5, True, "512"])
def test_spec_refuses_bad_mem_tokens(bad):
    from sam2_edge.errors import BundleError

    with pytest.raises(BundleError, match="mem_tokens"):
        spec_from_dict({**OLD_SPEC, "mem_tokens": bad})


def test_memory_ring_follows_the_spec():
    import numpy as np

    from sam2_edge.runtimes.memory import ObjectMemory

    mem = ObjectMemory(TrackerSpec(256, 64, 16, mem_tokens=96))
    assert mem.memory.shape == (1, 8, 96, 16)
    mem.commit(0, np.ones((96, 16), np.float32), np.ones(64, np.float32), True)
    inp = mem.fill_inputs(1)
    assert inp.mem_valid[0, 0] == 1 and mem.memory[0, 0].sum() == 96 * 16


# ---------------------------------------------------------------- bundles
def _compare(run, scenario):
    from test_tracker_parity import compare

    return compare(run, STREAM, f"stream_{scenario}", TOL_EARLY, TOL_LATE, 1e-3)


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from sam2_edge.export import export_bundle

    out = tmp_path_factory.mktemp("et") / "edgetam-micro-onnx"
    return Path(export_bundle(str(CKPT), str(out), format="onnx", show_progress=False))


def test_onnx_bundle_manifest(onnx_bundle):
    from sam2_edge.contract import load_manifest

    m = load_manifest(str(onnx_bundle))
    raw = json.loads((onnx_bundle / "manifest.json").read_text())
    assert m.variant == "edgetam-micro" and m.spec.mem_tokens == 96 and raw["spec"]["mem_tokens"] == 96
    assert raw["model_config"]["trunk"] == "repvit" and raw["model_config"]["perceiver"]["num_latents_2d"] == 64
    for stage, g in raw["graphs"].items():
        worst = max(g["extra"]["max_abs_diff_vs_torch"].values())
        print(f"{stage}: {g['bytes']:,} bytes, {g['extra']['nodes']} nodes, max |onnxruntime - torch| {worst:.2e}")
        assert worst < 1e-3
    # BatchNorm folded into the RepViT convs: no BatchNormalization node is left in the encoder
    import onnx

    enc = onnx.load(str(onnx_bundle / raw["graphs"]["image_encoder"]["file"]))
    assert not [n for n in enc.graph.node if n.op_type == "BatchNormalization"]


@pytest.fixture(scope="module")
def onnx_tracker(onnx_bundle):
    from sam2_edge.runtimes import Tracker

    return Tracker.from_bundle(str(onnx_bundle), threads=1)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_onnx_tracking_matches_goldens(onnx_tracker, scenario):
    _compare(run_scenario(onnx_tracker, STREAM, f"stream_{scenario}"), scenario)


def test_onnx_tracking_is_torch_free(onnx_bundle, tmp_path):
    """The bundle tracks in a process where importing torch fails."""
    code = f"""
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from stream_golden import run_scenario
from sam2_edge.runtimes import Tracker
run = run_scenario(Tracker.from_bundle({str(onnx_bundle)!r}, threads=1), Path({str(STREAM)!r}), "stream_late_object")
assert "torch" not in sys.modules
import json, numpy as np
json.dump({{f"{{t}},{{o}}": v.tolist() for (t, o), v in run.low.items()}}, open({str(tmp_path / "low.json")!r}, "w"))
"""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import numpy as np

    from stream_golden import golden_lowres

    low = {tuple(int(x) for x in k.split(",")): np.asarray(v, np.float32)
           for k, v in json.loads((tmp_path / "low.json").read_text()).items()}
    for oid in (1, 2, 3):
        frames, ref = golden_lowres(STREAM, "stream_late_object", oid)
        for i, t in enumerate(frames):
            d = np.abs(low[(int(t), oid)] - ref[i]) / np.maximum(1.0, np.abs(ref[i]))
            assert d.max() <= TOL_LATE, (oid, int(t), float(d.max()))


@pytest.fixture(scope="module")
def executorch_tracker(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("executorch")
    from sam2_edge.export import export_bundle
    from sam2_edge.runtimes import Tracker

    out = tmp_path_factory.mktemp("et") / "edgetam-micro-pte"
    export_bundle(str(CKPT), str(out), format="executorch", show_progress=False)
    return Tracker.from_bundle(str(out))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_executorch_tracking_matches_goldens(executorch_tracker, scenario):
    _compare(run_scenario(executorch_tracker, STREAM, f"stream_{scenario}"), scenario)


# ------------------------------------------------------------------ CoreML (structure here; numerics on macOS)
def test_coreml_bundle_structure(tmp_path):
    """An EdgeTAM CoreML bundle goes through the same exporter: every graph is an iOS 17 ML
    program whose IO is the compressed-memory spec (numerics need macOS: test_export_coreml)."""
    pytest.importorskip("coremltools")
    from test_export_coreml import _assert_program_is_valid

    from sam2_edge.contract import STAGES, load_manifest
    from sam2_edge.export import export_bundle

    out = export_bundle(str(CKPT), str(tmp_path / "cm"), format="coreml", show_progress=False)
    m = load_manifest(out)
    assert m.format == "coreml" and m.variant == "edgetam-micro" and m.spec.mem_tokens > 0
    for stage in STAGES:
        _assert_program_is_valid(m.spec, m.graphs[stage].path, stage)
