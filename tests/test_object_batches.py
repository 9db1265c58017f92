"""All objects of a frame in few calls (speed issue item 2): the contract of batched graphs,
the tracker's grouping, and parity of batched against one-object-per-call tracking.

* contract (no torch): `split_objects`, `obj_batches` validation, the manifest's batched graph
  entries ("<stage>@<B>") required, checked and refused like the others;
* torch backend (dynamic shapes: all objects in one call): the same logits as one object per
  call, also when the objects' memories differ in which slots exist (grouped inside);
* bundles: the shared micro ONNX / ExecuTorch bundles are exported with OBJ_BATCHES = (1, 2)
  (tests/bundle_helpers.py), so every golden scenario of tests/test_export_onnx.py and
  tests/test_executorch_tracking.py runs its 2 and 3 (= 2 + 1) objects through the batch-2
  graphs; the parity of batched vs per-object calls on one bundle is asserted there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List

import numpy as np
import pytest

from bundle_helpers import MICRO_SPEC, make_fake_bundle, read_manifest, write_manifest
from stream_golden import run_scenario

from sam2_edge.contract import load_manifest
from sam2_edge.contract.spec import obj_batches_problem, split_objects
from sam2_edge.errors import BundleError
from sam2_edge.runtimes.backends.base import Backend

FIX = Path(__file__).parent / "fixtures"
MICRO = FIX / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
MICRO_STREAM = FIX / "micro_stream"
# batched vs one object per call: |a - b| <= ATOL + RTOL * |b| on every low-res logit (float
# summation order only). Eager torch: measured worst ~1e-5 on the micro model. Bundles: another
# graph per batch (other kernel blocking, ORT's fused attention over B rows), measured worst
# 1.5e-4 (ONNX); the tolerance is the one their goldens parity uses (1e-3 x max(1, |x|)).
ATOL, RTOL = 1e-4, 1e-4
BUNDLE_ATOL, BUNDLE_RTOL = 1e-3, 1e-3


class PerObject(Backend):
    """Runs another backend one object per call (what the tracker did before batching), and
    records the graph keys it was asked to run."""

    name = "per-object"

    def __init__(self, inner: Backend, batched: bool = False) -> None:
        super().__init__(inner.spec)
        self.inner, self.batched, self.keys = inner, batched, []

    def object_batches(self, n: int) -> List[int]:
        return self.inner.object_batches(n) if self.batched else [1] * n

    def run(self, stage, inputs):
        self.keys.append(stage)
        return self.inner.run(stage, inputs)


def assert_same_runs(a, b, atol: float = ATOL, rtol: float = RTOL) -> float:
    """Every (frame, object) low-res logit of run `a` within atol + rtol * |b| of run `b`;
    the masks at video resolution agree on >= 99.5 % of pixels. Returns the worst |d|."""
    assert set(a.low) == set(b.low)
    worst = 0.0
    for key in a.low:
        d = np.abs(a.low[key] - b.low[key])
        worst = max(worst, float(d.max()))
        assert (d <= atol + rtol * np.abs(b.low[key])).all(), (key, float(d.max()))
        assert (a.mask[key] == b.mask[key]).mean() >= 0.995, key
    return worst


# ------------------------------------------------------------------ contract (numpy only)
@pytest.mark.parametrize("n, batches, plan", [
    (0, (1,), []), (1, (1, 2, 4), [1]), (3, (1,), [1, 1, 1]), (3, (1, 2), [2, 1]), (7, (1, 2, 4), [4, 2, 1]),
    (8, (1, 4), [4, 4]), (5, (1, 16), [1, 1, 1, 1, 1]), (17, (1, 16), [16, 1])])
def test_split_objects(n, batches, plan):
    assert split_objects(n, batches) == plan
    assert sum(plan) == n


@pytest.mark.parametrize("bad", [[], [2, 4], [1, 1], [1, 4, 2], [1, "2"], [1, 0], [1, True], [1, 65], "1,2", None])
def test_obj_batches_problem(bad):
    assert obj_batches_problem(bad) is not None
    with pytest.raises(ValueError):
        replace(MICRO_SPEC, obj_batches=bad if isinstance(bad, (list, tuple)) else (bad,))


def test_spec_dict_and_keys():
    assert "obj_batches" not in MICRO_SPEC.to_dict()  # batch-1 bundles: the manifest older readers know
    spec = replace(MICRO_SPEC, obj_batches=(1, 2, 4))
    assert spec.to_dict()["obj_batches"] == [1, 2, 4]
    assert spec.graph_keys()[4:] == ("memory_attention@2", "mask_decoder@2", "memory_encoder@2",
                                     "memory_attention@4", "mask_decoder@4", "memory_encoder@4")
    io = spec.graph_io()
    ins, outs = io["mask_decoder@4"]
    shapes = {t.name: t.shape for t in ins + outs}
    assert shapes["pix_feat"][0] == 4 and shapes["point_labels"] == (4, spec.prompt_points)
    assert shapes["feat_s0"][0] == 1 and shapes["feat_s1"][0] == 1  # the frame's features are shared
    assert io["memory_encoder@2"][1][0].shape == (2,) + spec.mem_frame_shape
    assert io["memory_attention@2"][0][0].shape[0] == 1 and io["memory_attention@2"][0][2].shape[0] == 2


def test_manifest_with_batched_graphs(tmp_path):
    spec = replace(MICRO_SPEC, obj_batches=(1, 2))
    root = make_fake_bundle(tmp_path / "b", spec=spec)
    m = load_manifest(root)
    assert m.spec.obj_batches == (1, 2) and set(m.graphs) == set(spec.graph_keys())
    assert m.stage_files["mask_decoder@2"].name == "mask_decoder.b2.onnx"

    d = read_manifest(root)
    del d["graphs"]["memory_encoder@2"]
    write_manifest(root, d)
    with pytest.raises(BundleError, match=r"no graph for \['memory_encoder@2'\]"):
        load_manifest(root)

    d["graphs"]["memory_encoder@2"] = dict(d["graphs"]["memory_encoder"])  # batch-1 io under a batch-2 key
    d["graphs"]["memory_encoder@2"]["file"] = "memory_encoder.b2.onnx"
    write_manifest(root, d)
    with pytest.raises(BundleError, match="do not fit the bundle's tracker spec"):
        load_manifest(root, verify_hashes=False)

    d = read_manifest(make_fake_bundle(tmp_path / "c", spec=spec))
    d["spec"]["obj_batches"] = [2]
    write_manifest(tmp_path / "c", d)
    with pytest.raises(BundleError, match="obj_batches must start with 1"):
        load_manifest(tmp_path / "c")


def test_manifest_refuses_batched_graphs_not_in_spec(tmp_path):
    root = make_fake_bundle(tmp_path / "b", spec=replace(MICRO_SPEC, obj_batches=(1, 2)))
    d = read_manifest(root)
    del d["spec"]["obj_batches"]  # the graphs are there, the spec does not declare them
    write_manifest(root, d)
    with pytest.raises(BundleError, match="unknown graphs"):
        load_manifest(root)


# ------------------------------------------------------------------ torch backend (dynamic batch)
@pytest.fixture(scope="module")
def torch_backend():
    pytest.importorskip("torch")
    from sam2_edge.runtimes.backends.torch_backend import TorchBackend

    return TorchBackend.from_checkpoint(str(MICRO))


@pytest.mark.parametrize("scenario", ["late_object", "refine"])
def test_torch_batched_equals_per_object(torch_backend, scenario, monkeypatch):
    from sam2_edge.runtimes import Tracker

    assert torch_backend.object_batches(3) == [3]
    stage = torch_backend.stages["memory_attention"]
    rows = []
    real = stage.forward_present
    monkeypatch.setattr(stage, "forward_present", lambda *a: rows.append(a[2].shape[0]) or real(*a))
    batched = PerObject(torch_backend, batched=True)
    run_b = run_scenario(Tracker(batched), MICRO_STREAM, f"stream_{scenario}")
    calls_b = len(rows)
    run_1 = run_scenario(Tracker(PerObject(torch_backend)), MICRO_STREAM, f"stream_{scenario}")
    worst = assert_same_runs(run_b, run_1)
    print(f"\n[torch] {scenario}: batched vs per object max |d| {worst:.2e}")
    assert max(rows[:calls_b]) >= 2  # objects really shared a call
    if scenario == "late_object":  # the late object's memory has fewer frames: grouped by present slots
        assert calls_b > sum(1 for k in batched.keys if k.startswith("memory_attention"))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("arg, needle", [("2,4", "start with 1"), ("1,x", "comma-separated integers"),
                                         ("1,4,2", "increase strictly"), ("1,65", "integers 1..64")])
def test_export_cli_refuses_bad_obj_batches(arg, needle, tmp_path, capsys):
    from sam2_edge.cli import main

    rc = main(["export", "--checkpoint", str(MICRO), "--format", "onnx", "--out", str(tmp_path / "b"),
               "--obj-batches", arg])
    err = capsys.readouterr().err
    assert rc != 0 and needle in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_quantized_export_refuses_obj_batches(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from sam2_edge.cli import main

    rc = main(["export", "--checkpoint", str(MICRO), "--format", "onnx", "--out", str(tmp_path / "q"),
               "--precision", "int8", "--obj-batches", "1,2"])
    err = capsys.readouterr().err
    assert rc != 0 and "quantized bundles hold the batch-1 graphs" in err
    assert not (tmp_path / "q").exists()


def test_export_bundle_checks_obj_batches_first(tmp_path):
    from sam2_edge.errors import ConfigError
    from sam2_edge.export import export_bundle

    with pytest.raises(ConfigError, match="start with 1"):
        export_bundle(str(tmp_path / "missing.pt"), str(tmp_path / "b"), obj_batches=(2,))
    assert not (tmp_path / "b").exists()
