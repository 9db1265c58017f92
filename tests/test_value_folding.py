"""Memory attention with folded values (modeling/memory_attention.py, `fold_memory_values`).

The cross-attention has one head and unrotated values, and softmax rows sum to 1, so
out_proj(P (X W_v^T + b_v)) = (P X)(W_o W_v)^T + (W_o b_v + b_o): the ONNX and ExecuTorch
exporters trace that form (the P.V product at the memory width). Checked here:

* eager, SAM 2 (micro) and EdgeTAM (edgetam_micro): the folded stage (W_o W_v and W_o b_v + b_o
  computed once, as non-persistent buffers) equals the official form on
  random memories with absent slots, within FOLD_TOL x max(1, |x|) (measured ~3e-7 relative);
  the parameter names and shapes are unchanged (loading stays strict), and only the
  cross-attentions with narrower values are switched;
* ONNX: a folded fp32 export fuses every cross-attention into MultiHeadAttention whose value
  head size is the memory width (so no value projection of the memory is left in the graph), and
  matches the unfolded eager stage within the fused-graph bar of test_onnx_fused_attention.py.
The golden parity of whole bundles (test_export_onnx.py, test_executorch_tracking.py) runs
the folded graphs too, since export_bundle folds fp32 ONNX / ExecuTorch exports.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundle_helpers import MICRO_CKPT, REPO

torch = pytest.importorskip("torch")

from sam2_edge.checkpoint import load_checkpoint  # noqa: E402
from sam2_edge.contract import STAGES  # noqa: E402
from sam2_edge.contract.examples import example_inputs  # noqa: E402
from sam2_edge.modeling.memory_attention import RoPEAttention, RoPEAttentionv2, fold_memory_values  # noqa: E402
from sam2_edge.stages import build_stages, tracker_spec  # noqa: E402

EDGETAM_MICRO_CKPT = REPO / "tests" / "fixtures" / "edgetam_micro" / "edgetam_micro_seed7.fp16.pt"
FOLD_TOL = 1e-5  # eager folded vs official form, float32, relative to max(1, |x|)
STAGE_TOL = 2e-4  # onnxruntime (fused) vs eager torch, as test_onnx_fused_attention.py


def _random_inputs(spec, seed: int):
    """memory_attention inputs with random features / memories and about a third of the slots absent."""
    ins, _ = spec.io()["memory_attention"]
    x = dict(zip([t.name for t in ins], example_inputs(spec, "memory_attention", seed)))
    g = torch.Generator().manual_seed(seed)
    for name in ("vision_feats", "memory", "obj_ptrs"):
        x[name] = torch.randn(x[name].shape, generator=g).numpy()
    for name in ("mem_valid", "ptr_valid"):
        v = (torch.rand(x[name].shape, generator=g) > 0.35).float().numpy()
        v[:, 0] = 1.0
        x[name] = v
    return [x[t.name] for t in ins]


@pytest.mark.parametrize("ckpt", [MICRO_CKPT, EDGETAM_MICRO_CKPT], ids=["sam2.1-micro", "edgetam-micro"])
def test_folded_stage_equals_official_form(ckpt):
    model, _ = load_checkpoint(str(ckpt))
    spec = tracker_spec(model, 2)
    stage = dict(zip(STAGES, build_stages(model)))["memory_attention"]
    names = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    cases = [_random_inputs(spec, seed) for seed in range(3)]
    with torch.no_grad():
        ref = [stage(*(torch.from_numpy(a) for a in c)) for c in cases]
        n = fold_memory_values(model)
        got = [stage(*(torch.from_numpy(a) for a in c)) for c in cases]
    layers = len(model.memory_attention.layers)
    assert n == layers  # the cross-attentions only: self-attention values are as wide as the queries
    for layer in model.memory_attention.layers:
        assert layer.cross_attn_image.fold_values and not layer.self_attn.fold_values
        assert isinstance(layer.cross_attn_image, (RoPEAttention, RoPEAttentionv2))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == names  # buffers not persistent
    for r, g in zip(ref, got):
        d = ((g - r).abs() / r.abs().clamp(min=1.0)).max().item()
        assert d <= FOLD_TOL, d
        assert d > 0 or torch.equal(g, r)  # computed, not the same code path by accident


def test_folded_onnx_export_runs_values_at_memory_width(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from sam2_edge.export.onnx_export import FOLD_MEMORY_VALUES, export_stage
    from sam2_edge.export.onnx_fuse import FUSED_OP, MS_DOMAIN

    assert "fp32" in FOLD_MEMORY_VALUES and "fp16" not in FOLD_MEMORY_VALUES
    model, _ = load_checkpoint(str(MICRO_CKPT))
    spec = tracker_spec(model, 2)
    stage = dict(zip(STAGES, build_stages(model)))["memory_attention"]
    cases = [_random_inputs(spec, seed) for seed in range(3)]
    with torch.no_grad():
        ref = [stage(*(torch.from_numpy(a) for a in c)).numpy() for c in cases]  # official form
    fold_memory_values(model)
    ins, outs = spec.io()["memory_attention"]
    args = tuple(torch.from_numpy(a) for a in example_inputs(spec, "memory_attention"))
    path = tmp_path / "memory_attention.onnx"
    with torch.no_grad():
        extra = export_stage(stage, args, [t.name for t in ins], [t.name for t in outs], path, "fp32")
    layers = len(model.memory_attention.layers)
    n_keys = spec.mem_slots * spec.feat_size ** 2 + spec.ptr_slots * (spec.d_model // spec.mem_dim)
    shapes = [json.loads(s) for s in extra["fused_attention_shapes"]]  # distinct [B, H, Sq, Sk, D, Dv]
    cross = [s for s in shapes if s[3] == n_keys]
    assert extra["fused_attention"] == 2 * layers
    assert len(cross) == 1 and cross[0][5] == spec.mem_dim, extra["fused_attention_shapes"]
    g = onnx.load(str(path)).graph
    fused = [n for n in g.node if n.op_type == FUSED_OP and n.domain == MS_DOMAIN]
    assert len(fused) == 2 * layers
    # W_o W_v is one constant of the graph, not a product of two weights computed at every call
    # (which quantisers would also take for a layer)
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    assert not [n.name for n in g.node if n.op_type in ("MatMul", "Gemm") and all(i in inits for i in n.input[:2])]
    assert not [k for k in inits if "v_proj" in k and "cross_attn" in k]  # the value projection is gone
    assert sum(1 for d in inits.values() if sorted(d) == sorted((spec.d_model, spec.mem_dim))) >= layers
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed_names = [i.name for i in sess.get_inputs()]
    for c, r in zip(cases, ref):
        out = sess.run(None, dict(zip(feed_names, c)))[0]
        d = np.abs(out.astype(np.float64) - r) / np.maximum(1.0, np.abs(r))
        assert d.max() <= STAGE_TOL, d.max()
