"""int8 / int8-dynamic ONNX bundles (sam2_edge.quantization) on the micro model: each exports,
loads through the contract and tracks; the fidelity report holds the thresholds written here;
the sensitivity analysis has rows for every stage; bad inputs give typed errors and leave no
half-written bundle; and an honesty check with injected weight outliers (the test checkpoints
are seeded Gaussian weights, without the heavy tails of a trained SAM 2)."""

from __future__ import annotations

import json
import logging
from importlib import import_module

import numpy as np
import pytest

from bundle_helpers import CLIP_200, MICRO_CKPT, micro_onnx_bundle
from sam2_edge.contract import STAGES, Precision, load_manifest
from sam2_edge.errors import ConfigError, InputError, OutputError



def _importable(name: str) -> bool:
    try:
        import_module(name)
    except ImportError:
        return False
    return True


# a skip mark, not a module-level importorskip: the ExecuTorch tests import _outlier_checkpoint from here
pytestmark = pytest.mark.skipif(not _importable("onnxruntime.quantization"),
                                reason="needs onnxruntime.quantization: pip install 'sam2-edge[export-onnx]'")
logging.getLogger("root").setLevel(logging.ERROR)  # onnxruntime.quantization's "consider pre-processing"

# small but real: 6 calibration + 3 held-out frames of the shipped clip, 2 objects
FAST = dict(calib_frames=6, holdout_frames=3, objects=2, show_progress=False)
# thresholds for the micro model (seeded Gaussian weights); measured values are in quantization/README.md
MIN_STAGE_COSINE = 0.99
MIN_STAGE_SQNR_DB = 20.0
MIN_E2E_IOU_MEAN = {"int8": 0.90, "int8-dynamic": 0.95}
MIN_E2E_IOU_MIN = 0.80


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return micro_onnx_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def int8(fp32, tmp_path_factory):
    from sam2_edge.quantization.pipeline import quantize

    return quantize(str(fp32), tmp_path_factory.mktemp("q") / "micro-int8", "int8", analyze=True, **FAST)


def _check_report(r, precision):
    rep = r.report
    assert rep["precision"] == precision
    for s in STAGES:
        st = rep["stages"][s]
        held = st["held_out"]
        if st["policy"]["precision"] == "fp32":
            assert "target missed" in st["policy"]["reason"]
            continue
        assert held["cosine"] >= MIN_STAGE_COSINE, (s, held)
        assert held["sqnr_db"] >= MIN_STAGE_SQNR_DB, (s, held)
        assert st["calibration"]["cosine"] >= MIN_STAGE_COSINE
    e = rep["end_to_end"]
    assert e["objects"] >= 2 and e["frames"] == FAST["calib_frames"] + FAST["holdout_frames"]
    assert len(e["iou_curve"]) == e["frames"]
    assert e["iou_mean"] >= MIN_E2E_IOU_MEAN[precision], e
    assert e["iou_min"] >= MIN_E2E_IOU_MIN, e
    assert rep["sizes"]["total"]["bytes"] < 0.75 * rep["sizes"]["total"]["fp32_bytes"]


def _check_bundle(path, precision):
    from sam2_edge.runtimes import Tracker

    m = load_manifest(path)                                  # validates hashes, incl. the report
    assert m.format == "onnx" and m.precision is Precision(precision)
    assert [a.file for a in m.attachments][:1] == ["quantization.json"]  # hashed like the graphs
    assert all(not m.graphs[s].data_files for s in STAGES)
    for s in STAGES:
        q = m.graphs[s].extra["quantization"]
        assert "float_groups" in q and "op_types_quantized" in q and "held_out" in q
    tr = Tracker.from_bundle(str(path), isolate=False)
    import cv2

    cap = cv2.VideoCapture(str(CLIP_200))
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(3)]
    cap.release()
    tr.add_prompt(frames[0], 1, points=[[60, 70]], labels=[1])
    tr.add_prompt(None, 2, box=[120, 20, 200, 110])
    for f in frames[1:]:
        res = tr.track(f)
    assert res.masks.shape == (2, 136, 240)
    return m


def test_int8_static_bundle(int8):
    _check_report(int8, "int8")
    m = _check_bundle(int8.path, "int8")
    # the default policy is in the manifest: mask upscaling and object-score head stay float
    pol = m.graphs["mask_decoder"].extra["quantization"]
    assert "sam_mask_decoder.output_upscaling" in pol["float_groups"]
    assert "sam_mask_decoder.pred_obj_score_head" in pol["float_groups"]
    assert m.graphs["image_encoder"].extra["quant_ops"].get("QuantizeLinear", 0) > 0
    _check_int8_attention(int8, m)
    # static: linear layers' outputs stay float where the policy says so (no DQ per consumer)
    assert pol_of(m, "memory_attention")["float_output_op_types"] == ["Gemm", "MatMul"]
    assert "float_output_op_types" not in pol_of(m, "memory_encoder")


def pol_of(m, stage):
    return m.graphs[stage].extra["quantization"]


def _check_int8_attention(r, m):
    """Memory attention's fused attentions run their QK^T in int8 (run time), unless the gate dropped it."""
    import onnx

    st = r.report["stages"]["memory_attention"]
    if not st["policy"]["int8_attention_scores"]:
        assert "attention scores" in st["policy"]["reason"] or st["policy"]["precision"] == "fp32"
        return
    ops = [n.op_type for n in onnx.load(str(r.path / "memory_attention.onnx")).graph.node]
    assert st["int8_attention"] == ops.count("MatMulIntegerToFloat") >= 2 and "MultiHeadAttention" not in ops
    assert m.graphs["memory_attention"].extra["quantization"]["int8_attention"] == st["int8_attention"]


def test_static_int8_quantises_linear_layers_with_their_bias(int8):
    """Static int8 graphs are prepared with ORT's basic optimiser: every linear layer is one Gemm
    whose bias is an int32 tensor of the integer product (QGemm at load), not a float Add between a
    dequantise and a quantise; the module paths carried over keep the float groups float."""
    import onnx
    from onnx import TensorProto

    g = onnx.load(str(int8.path / "image_encoder.onnx")).graph
    produced_by = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    gemms = [n for n in g.node if n.op_type == "Gemm"]
    assert len(gemms) >= 4
    for n in gemms:
        dq = produced_by[n.input[2]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT32, n.name
        # the module path of the MatMul it was fused from (what the policy's groups are read from)
        assert "image_encoder" in {p.key: p.value for p in n.metadata_props}.get("namespace", ""), n.name
    dec = onnx.load(str(int8.path / "mask_decoder.onnx")).graph
    produced_by = {o: n for n in dec.node for o in n.output}
    kept = 0
    for n in dec.node:
        ns = {p.key: p.value for p in n.metadata_props}.get("namespace", "")
        if n.op_type in ("Gemm", "MatMul", "ConvTranspose") and ("output_upscaling" in ns or "pred_obj_score_head" in ns):
            assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear" for i in n.input), n.name
            kept += 1
    assert kept >= 3  # the float groups' nodes were found by their carried module paths
    # memory attention's linear layers keep float outputs (DEFAULT_FLOAT_OUTPUTS): no Gemm output is
    # re-quantised, so ORT can still fuse the RoPE selects that read them
    ma = onnx.load(str(int8.path / "memory_attention.onnx")).graph
    consumers = {}
    for n in ma.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    ma_gemms = [n for n in ma.node if n.op_type == "Gemm"]
    assert ma_gemms and not any("QuantizeLinear" in consumers.get(n.output[0], []) for n in ma_gemms)


def test_quantized_bundles_keep_onnxruntime_arenas(fp32, int8):
    """open_bundle runs float bundles in the low-memory mode and quantised ones with ONNX Runtime's
    arenas (their many small Q/DQ tensors made every run re-map its buffers), unless told."""
    from sam2_edge.runtimes.bundle_backends import open_bundle

    q = open_bundle(int8.path, "onnxruntime", isolate=False, threads=1)
    f = open_bundle(fp32, "onnxruntime", isolate=False, threads=1)
    assert q.low_memory is False and f.low_memory is True
    assert all(s.get_session_options().enable_cpu_mem_arena for s in q.sessions.values())
    assert open_bundle(int8.path, "onnxruntime", isolate=False, threads=1, low_memory=True).low_memory is True


def test_sensitivity_analysis_has_rows_per_stage(int8):
    from sam2_edge.quantization.pipeline import format_report

    a = int8.report["analysis"]
    assert set(a) == set(STAGES)
    for s in STAGES:
        kinds = {r["kind"] for r in a[s]}
        # memory attention: + the run-time int8 attention scores alone (onnx_attention.py)
        assert kinds == {"stage", "group", "op_type"} | ({"attention"} if s == "memory_attention" else set()), (s, kinds)
        assert all(-1000 <= r["sqnr_db"] <= 999 and 0.0 <= r["cosine"] <= 1.0 for r in a[s])
    text = format_report(int8.report)
    assert "sensitivity memory_attention" in text and "end to end" in text
    on_disk = json.loads((int8.path / "quantization.json").read_text())
    assert on_disk["end_to_end"]["iou_mean"] == int8.report["end_to_end"]["iou_mean"]


def test_int8_dynamic_through_export_cli(fp32, tmp_path, capsys):
    from sam2_edge.cli import main

    from sam2_edge.contract.signing import generate_key

    (tmp_path / "keys").mkdir()
    keys = generate_key(tmp_path / "keys" / "alice")  # a quantized bundle is signed like an export
    other = generate_key(tmp_path / "keys" / "mallory")
    out = tmp_path / "micro-dyn"
    assert main(["export", "--checkpoint", str(fp32), "--format", "onnx", "--precision", "int8-dynamic",
                 "--out", str(out), "--calib-frames", "6", "--holdout-frames", "3", "--no-progress",
                 "--sign", str(keys["private"]), "--bench"]) == 0
    text = capsys.readouterr().out
    assert "end to end" in text and "quantized / float:" in text
    from sam2_edge.quantization.pipeline import QuantizeResult

    rep = json.loads((out / "quantization.json").read_text())
    _check_report(QuantizeResult(out, rep), "int8-dynamic")
    # --bench: the shipped bundle beside its float source in one interleaved bench run
    sp = rep["speed"]
    f, q = sp["rows"]["float"], sp["rows"]["quantized"]
    assert (f["precision"], q["precision"]) == ("fp32", "int8-dynamic") and sp["objects"] == 1
    assert f["frames_measured"] == q["frames_measured"] == 12 - 8 and f["threads"] == q["threads"] >= 1
    assert f["fps"] > 0 and q["fps"] > 0
    assert sp["fps_ratio"] == pytest.approx(q["fps"] / f["fps"], rel=0.02)
    assert q["bundle_bytes"] < f["bundle_bytes"]
    assert sp["command"].startswith("sam2-edge bench --bundle <float bundle> --bundle <quantized bundle> --frames 12")
    m = _check_bundle(out, "int8-dynamic")
    assert m.graphs["image_encoder"].extra["quant_ops"].get("DynamicQuantizeLinear", 0) > 0
    _check_int8_attention(QuantizeResult(out, rep), m)
    from sam2_edge.errors import Sam2EdgeError
    from sam2_edge.runtimes.bundle_backends import open_bundle

    assert open_bundle(str(out), trusted_keys=[keys["public"]], threads=1).spec.image_size == 256
    with pytest.raises(Sam2EdgeError, match="sign"):
        open_bundle(str(out), trusted_keys=[other["public"]], require_signature=True)
    # a bad key fails before any work, and leaves nothing
    bad = tmp_path / "not-a-key"
    bad.write_text("nope")
    assert main(["quantize", "--checkpoint", str(fp32), "--precision", "int8", "--out", str(tmp_path / "x"),
                 "--sign", str(bad)]) == 2
    assert not (tmp_path / "x").exists()


def test_a_failed_bench_keeps_the_bundle(fp32, tmp_path, monkeypatch):
    """--bench runs after the quantisation: if the benchmark fails, the bundle is still written
    (nothing lost) and its report says why it has no speed entry."""
    from sam2_edge.errors import BackendUnavailableError
    from sam2_edge.quantization import speed
    from sam2_edge.quantization.pipeline import quantize

    def fail(req, quantized):
        raise BackendUnavailableError("no runtime for the bench")

    monkeypatch.setattr(speed, "side_by_side", fail)
    r = quantize(str(fp32), tmp_path / "dyn", "int8-dynamic", bench=True, **FAST)
    rep = json.loads((r.path / "quantization.json").read_text())
    assert "speed" not in rep and rep["speed_error"] == "no runtime for the bench"
    _check_bundle(r.path, "int8-dynamic")  # hashes (the rewritten report included) verify


def test_the_gate_drops_int8_attention_before_the_stage(fp32, tmp_path, monkeypatch):
    """A run-time int8 attention that breaks the stage's fidelity is dropped, and the stage keeps its
    int8 linear layers (not fp32 whole); the report says why and keeps the missed attempt."""
    import onnx
    from sam2_edge.quantization import onnx_attention
    from sam2_edge.quantization.pipeline import quantize

    real = onnx_attention.int8_attention_scores

    def broken(model, **kw):  # the rewrite, then its softmax taken over the queries: garbage scores
        rep = real(model, **kw)
        for n in model.graph.node:
            if n.op_type == "Softmax" and n.name.endswith("/int8/probs_node"):
                n.attribute[0].CopyFrom(onnx.helper.make_attribute("axis", 2))
        return rep

    monkeypatch.setattr(onnx_attention, "int8_attention_scores", broken)
    r = quantize(str(fp32), tmp_path / "gated", "int8-dynamic", **FAST)
    st = r.report["stages"]["memory_attention"]
    assert st["policy"]["precision"] == "int8-dynamic" and st["policy"]["int8_attention_scores"] is False
    assert st["policy"]["reason"].startswith("run-time int8 attention scores: fidelity target missed")
    assert st["quantized_attempt"]["policy"]["int8_attention_scores"] is True
    assert st["quantized_attempt"]["held_out"]["sqnr_db"] < MIN_STAGE_SQNR_DB <= st["held_out"]["sqnr_db"]
    assert st["quantized_nodes"] > 0 and "int8_attention" not in st
    ops = [n.op_type for n in onnx.load(str(r.path / "memory_attention.onnx")).graph.node]
    assert "MultiHeadAttention" in ops and "DynamicQuantizeLinear" in ops


def test_bad_inputs_are_typed_and_leave_nothing(fp32, int8, tmp_path):
    from sam2_edge.quantization.pipeline import quantize

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown precision"):
        quantize(str(fp32), out, "int4", **FAST)
    with pytest.raises(ConfigError, match="cannot be int8"):
        quantize(str(fp32), out, "int8", fmt="executorch", **FAST)
    with pytest.raises(ConfigError, match="sam2-edge export --precision fp16"):
        quantize(str(fp32), out, "fp16", **FAST)
    with pytest.raises(ConfigError, match="already a int8 bundle"):
        quantize(str(int8.path), out, "int8", **FAST)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="--calib"):
        quantize(str(fp32), out, "int8", calib=str(empty), **FAST)
    with pytest.raises(InputError, match="has only 20 frames"):
        quantize(str(fp32), out, "int8", calib=str(CLIP_200.with_name("bedroom_240x136_20f.mp4")),
                 **{**FAST, "calib_frames": 16, "holdout_frames": 8})
    with pytest.raises(InputError, match="does not exist"):
        quantize(str(tmp_path / "missing.pt"), out, "int8", **FAST)
    import sys

    if sys.platform != "darwin":  # --bench needs the format's runtime: refused before any work
        with pytest.raises(ConfigError, match="--bench: coreml bundles do not run here"):
            quantize(str(fp32), out, "palettize4", fmt="coreml", bench=True, **FAST)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        quantize(str(fp32), foreign, "int8", **FAST)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    from sam2_edge.cli import main

    assert main(["quantize", "--checkpoint", str(fp32), "--precision", "int8", "--format", "coreml",
                 "--out", str(out)]) == 2


def _outlier_checkpoint(path):
    """The micro checkpoint with heavy-tailed channels like a trained SAM 2: a few LayerNorm
    gains x30 (activation outlier channels) and a few weight input columns x30, seeded. Also
    used by tests/test_quantization_executorch.py (the same checkpoint for both flows)."""
    import torch

    sd = torch.load(str(MICRO_CKPT), weights_only=True)
    m = sd["model"]
    rng = np.random.default_rng(14)
    for k in sorted(m):
        v = m[k]
        if v.ndim == 1 and "norm" in k and k.endswith("weight") and k.startswith(("image_encoder.trunk",
                                                                                  "memory_attention.layers")):
            idx = rng.choice(v.shape[0], 2, replace=False)
            v[idx] = v[idx] * 30
        elif v.ndim == 2 and k.endswith("mlp.layers.0.weight"):
            idx = rng.choice(v.shape[1], 2, replace=False)
            v[:, idx] = v[:, idx] * 30
    torch.save(sd, str(path))
    return path


def test_honesty_outlier_weights(int8, tmp_path):
    """With injected outliers the quantised stages still hold the targets (or the policy keeps the
    stage fp32, saying so); the outliers do cost fidelity (the check bites)."""
    from sam2_edge.quantization.pipeline import quantize

    ckpt = _outlier_checkpoint(tmp_path / "micro_outliers.pt")
    r = quantize(str(ckpt), tmp_path / "outliers-int8", "int8", **FAST)
    _check_bundle(r.path, "int8")
    for s in STAGES:
        st = r.report["stages"][s]
        if st["policy"]["precision"] != "fp32":
            assert st["held_out"]["sqnr_db"] >= MIN_STAGE_SQNR_DB
    clean = int8.report["stages"]["image_encoder"]["held_out"]["sqnr_db"]
    attempt = r.report["stages"]["image_encoder"].get("quantized_attempt", r.report["stages"]["image_encoder"])
    got = (attempt["held_out"] if "held_out" in attempt else attempt)["sqnr_db"]
    print("outliers: image_encoder SQNR", got, "dB vs clean", clean, "dB; policy",
          {s: r.report["stages"][s]["policy"]["precision"] for s in STAGES}, "e2e", r.report["end_to_end"]["iou_mean"])
    assert got < clean
    assert r.report["end_to_end"]["iou_mean"] >= 0.8
