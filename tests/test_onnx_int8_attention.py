"""Run-time int8 attention scores (quantization/onnx_attention.py): a fused MultiHeadAttention of
an ONNX graph rewritten into DynamicQuantizeLinear + an integer QK^T, fp32 softmax and P.V.

Checked on synthetic attentions (one head as in memory attention, several heads, with and without
the key bias the fused graphs fold into an extra k column) against a float64 numpy emulation of
the same int8 arithmetic (q: ONNX's DynamicQuantizeLinear, per-tensor uint8; k: symmetric per-tensor
int8; both rounded half to even):
the rewrite must compute exactly that, with the bias added in fp32 outside the int8 keys. Against
the exact fp32 attention the error is the quantisation's, bounded from below here. What it cannot
rewrite (no recorded layout) it leaves fused and says why; query chunks change no number. On micro's exported
memory attention: every fused attention is rewritten, the graph's inputs / outputs are unchanged,
and the stage's output stays within the quantiser's per-stage target of the fp32 graph."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from test_onnx_fused_attention import (_attention_feeds, _attention_graph, _export, _reference,  # noqa: E402,F401
                                        _session, micro_stage)  # noqa: F811

from sam2_edge.export.onnx_fuse import FUSED_OP, LAYOUT_KEY, fuse_attention, fused_layout  # noqa: E402
from sam2_edge.quantization.onnx_attention import int8_attention_scores  # noqa: E402

# rewrite vs the numpy emulation of its int8 arithmetic: only fp32 rounding (scale products, softmax,
# P.V sums) differs; measured worst 6.7e-7 relative to the output's largest magnitude
EMULATION_TOL = 1e-4
# rewrite vs the exact fp32 attention on these Gaussian inputs (q / k std 2): measured 30.9-31.7 dB
# (with the -1e4 bias inside the int8 keys instead: 0.03-0.1 dB)
MIN_SQNR_VS_FP32_DB = 25.0


def _dql(x: np.ndarray):
    """ONNX DynamicQuantizeLinear: uint8, scale over [min(0, x), max(0, x)], zero point rounded half to even."""
    x = x.astype(np.float32)
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255.0)
    zp = np.clip(np.round(np.float32(0.0 - lo) / scale), 0, 255)
    return np.clip(np.round(x / scale) + zp, 0, 255), float(scale), float(zp)


def _symmetric_int8(x: np.ndarray):
    """The keys: int8, scale max|x| / 127, zero point 0 (QuantizeLinear: round half to even)."""
    scale = np.float32(np.float32(np.abs(x).max()) / np.float32(127.0))
    return np.clip(np.round(x.astype(np.float32) / scale), -128, 127), float(scale), 0.0


def _emulate(q, k, v, bias=None):
    """[B, H, Sq, D] / [B, H, Sk, D] / [B, H, Sk, Dv], q and k already scaled (as the fused graphs
    hold them), bias broadcastable to [B, H, 1, Sk]: the rewrite's arithmetic in float64."""
    qu, qs, qz = _dql(q)
    ku, ks, kz = _symmetric_int8(k)
    s = np.einsum("bhqd,bhkd->bhqk", qu - qz, ku - kz) * (qs * ks)
    if bias is not None:
        s = s + bias
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p, v.astype(np.float64))


def _sqnr_db(ref, got) -> float:
    return float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((got - ref) ** 2).sum()))


@pytest.mark.parametrize("b,h,sq,sk,d,dv,bias_shape", [
    (1, 1, 300, 700, 64, 48, (1, 1, 1, 700)),  # memory attention: one head, per-key bias (MatMulIntegerToFloat)
    (1, 1, 300, 700, 64, 64, None),            # self-attention: no bias, no padding columns
    (2, 4, 128, 520, 16, 16, (2, 1, 1, 520)),  # batch and heads: MatMulInteger, bias added per head
    (1, 3, 256, 257, 33, 8, (1, 257)),         # odd head size, rank-2 bias
])
def test_rewrite_computes_the_int8_arithmetic(b, h, sq, sk, d, dv, bias_shape):
    model, scale = _attention_graph(b, h, sq, sk, d, dv, bias_shape)
    assert fuse_attention(model, min_scores=1).fused
    inputs = [(i.name, i.type.SerializeToString()) for i in model.graph.input]
    outputs = [(o.name, o.type.SerializeToString()) for o in model.graph.output]
    rep = int8_attention_scores(model)
    assert len(rep.rewritten) == 1 and not rep.skipped
    assert rep.rewritten[0]["shape"] == [b, h, sq, sk, d, dv] and rep.rewritten[0]["bias"] == (bias_shape is not None)
    ops = {n.op_type for n in model.graph.node}
    assert FUSED_OP not in ops and "DynamicQuantizeLinear" in ops
    assert ops & {"MatMulIntegerToFloat", "MatMulInteger"}
    assert [(i.name, i.type.SerializeToString()) for i in model.graph.input] == inputs
    assert [(o.name, o.type.SerializeToString()) for o in model.graph.output] == outputs
    onnx.checker.check_model(model)

    feeds = _attention_feeds(np.random.default_rng(1), b, h, sq, sk, d, dv, bias_shape)  # -1e4: absent slots
    q, k, v, bias = feeds["q"], feeds["k"], feeds["v"], feeds.get("bias")
    if bias is not None:
        bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    got = _session(model, threads=2).run(None, feeds)[0]
    s = np.float32(np.sqrt(scale))  # the graph scales q and k by sqrt(scale) each before QK^T
    want = _emulate(q * s, k * s, v, bias)
    assert np.abs(got - want).max() <= EMULATION_TOL * float(np.abs(want).max())
    # the masked keys' -1e4 never entered the int8 keys (it would leave them a handful of levels)
    assert _sqnr_db(_reference(q, k, v, scale, bias), got) >= MIN_SQNR_VS_FP32_DB


@pytest.mark.parametrize("heads,bias_shape", [(1, (1, 1, 1, 700)), (2, (1, 2, 1, 700))])
def test_query_chunks_change_no_number(heads, bias_shape):
    """Large score matrices run in query chunks (bounded memory); q is quantised whole, so the chunked
    graph computes what the one-chunk graph computes."""
    outs = []
    for chunk_scores in (1 << 22, 300 * 700 // 3):  # one chunk; three (100 queries each)
        model, _ = _attention_graph(1, heads, 300, 700, 32, 16, bias_shape)
        fuse_attention(model, min_scores=1)
        rep = int8_attention_scores(model, chunk_scores=chunk_scores)
        assert [r["query_chunks"] for r in rep.rewritten] == [1 if chunk_scores == 1 << 22 else 3]
        rng = np.random.default_rng(2)
        bias = np.where(rng.random(bias_shape) < 0.3, -1.0e4, 0.0).astype(np.float32)
        feeds = {"q": rng.standard_normal((1, heads, 300, 32)).astype(np.float32),
                 "k": rng.standard_normal((1, heads, 700, 32)).astype(np.float32),
                 "v": rng.standard_normal((1, heads, 700, 16)).astype(np.float32), "bias": bias}
        outs.append(_session(model, threads=1).run(None, feeds)[0])
    assert np.abs(outs[0] - outs[1]).max() <= 1e-6 * float(np.abs(outs[0]).max())


def test_what_it_cannot_rewrite_stays_fused():
    model, _ = _attention_graph(1, 1, 300, 700, 64, 48, (1, 1, 1, 700))
    fuse_attention(model, min_scores=1)
    node = next(n for n in model.graph.node if n.op_type == FUSED_OP)
    assert fused_layout(node).bias is True
    keep = [p for p in node.metadata_props if p.key != LAYOUT_KEY]
    del node.metadata_props[:]
    node.metadata_props.extend(keep)  # a graph fused before the layout was recorded
    rep = int8_attention_scores(model)
    assert not rep.rewritten and "re-export" in rep.skipped[0]
    assert [n.op_type for n in model.graph.node].count(FUSED_OP) == 1


def test_micro_memory_attention(micro_stage, tmp_path):
    """Every fused attention of micro's memory attention is rewritten; the stage's output on real-sized
    inputs (half the memory slots absent) stays within the quantiser's stage target of the fp32 graph."""
    spec, _ = micro_stage
    path, _ = _export(micro_stage, tmp_path, "memory_attention.onnx")
    model = onnx.load(str(path))
    n_fused = sum(n.op_type == FUSED_OP for n in model.graph.node)
    rep = int8_attention_scores(model)
    assert n_fused >= 2 and len(rep.rewritten) == n_fused and not rep.skipped
    assert any(r["bias"] for r in rep.rewritten) and not any(n.op_type == FUSED_OP for n in model.graph.node)
    ref_s = _session(path)
    rng = np.random.default_rng(3)
    feeds = {}
    for i in ref_s.get_inputs():
        shape = list(i.shape)
        if i.type == "tensor(int32)":
            feeds[i.name] = np.ones(shape, np.int32)
        elif i.name.endswith("valid"):
            feeds[i.name] = (np.arange(shape[-1]) % 2 == 0).astype(np.float32).reshape(shape)  # half absent
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    want = ref_s.run(None, feeds)
    got = _session(model).run(None, feeds)
    for w, g in zip(want, got):
        cos = float((w * g).sum() / np.sqrt((w * w).sum() * (g * g).sum()))
        assert cos >= 0.99 and _sqnr_db(w, g) >= 20.0  # pipeline.STAGE_TARGETS
