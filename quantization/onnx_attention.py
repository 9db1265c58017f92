"""Run-time int8 attention scores for ONNX graphs: each fused `MultiHeadAttention` of a quantised
stage becomes QK^T in int8 (`DynamicQuantizeLinear` + `MatMulInteger`), softmax and P.V in fp32.

Why this is written here and not taken from `onnxruntime.quantization`: ORT quantises ops with
weights (MatMul / Gemm / Conv against an initializer); an attention's QK^T multiplies two
activations, and ORT's fused MultiHeadAttention kernel, which the fp32 bundles use for it
(export/onnx_fuse.py), is float32 only. In an int8 bundle of sam2.1-hiera-tiny at 512 those
fp32 products are most of memory attention and 46-83 % of a frame. The one int8 path ONNX
Runtime's CPU provider offers for an activation x activation product is `MatMulInteger` on
operands quantised at run time, which `benchmarks/attention_kernels.py` measured 1.43x faster
than the fused kernel on one 512 cross-attention (25.0 vs 35.7 ms; 1.22x at 1024, where the
score matrix it must materialise makes it memory-bound), at 42.8 dB SQNR on Gaussian inputs.

The form, per fused node (layout from `onnx_fuse.fused_layout`):

    q4 = q[B, Sq, H, Dq][..., :D]  -> uint8 (per tensor, run time)         -> [B, H, Sq, D]
    k4 = k[B, Sk, H, Dq][..., :D]  -> int8, symmetric (per tensor, run time) -> [B, H, D, Sk]
    S  = MatMulInteger(q4, k4) * (s_q * s_k)  [+ key bias, column D of k, in fp32]
    O  = Softmax(S * scale) @ v                                     (fp32)

The key bias the fused graphs fold into column D of k (0 for a valid memory slot, -1e4 for an
absent one) is taken out before the keys are quantised: one -1e4 in a per-tensor int8 k would
leave the real keys a handful of levels. Unlike the fused kernel this form materialises the
scores, so the queries run in chunks of at most `CHUNK_SCORES` scores (q is quantised whole, so
chunking changes no number): a 1024 cross-attention's 4096 x 32,836 scores would be 538 MB.
Every graph input and output keeps its name; the rewritten nodes keep the fused node's
metadata (module path), so node groups and the manifest read as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

log = logging.getLogger(__name__)

# Scores per query chunk (Sq/n x Sk elements per batch and head): 16 Mi, 64 MiB in fp32. tiny's
# cross-attention at 512 (1024 x 8,260) runs whole, at 1024 (4096 x 32,836) in 9 chunks. Each chunk
# re-packs k for the integer GEMM: tiny's int8-dynamic memory attention at 512 (2 threads, quiet)
# measured 134-166 ms per call in 3 chunks of 4 Mi vs 133-139 ms whole.
CHUNK_SCORES = 1 << 24


@dataclass
class AttentionReport:
    rewritten: List[Dict[str, object]] = field(default_factory=list)  # node, [B, H, Sq, Sk, D, Dv], bias
    skipped: List[str] = field(default_factory=list)  # why a fused node was left fused

    def as_info(self) -> Dict[str, object]:
        return {"int8_attention": len(self.rewritten), "int8_attention_skipped": list(self.skipped)}


def int8_attention_scores(model, chunk_scores: int = CHUNK_SCORES) -> AttentionReport:
    """Rewrite, in place, every fused attention of `model` (an onnx ModelProto) that carries its
    layout into the run-time int8 QK^T form, its queries in chunks of at most `chunk_scores` scores
    per (batch, head)."""
    from onnx import TensorProto, helper, numpy_helper

    from ..export.onnx_fuse import FUSED_OP, LAYOUT_KEY, MS_DOMAIN, fused_layout

    g = model.graph
    report = AttentionReport()
    new_nodes = []
    for node in g.node:
        if node.op_type != FUSED_OP or node.domain != MS_DOMAIN:
            new_nodes.append(node)
            continue
        where = node.name or node.output[0]
        lay = fused_layout(node)
        if lay is None:
            report.skipped.append(f"{where}: no layout recorded (fused by an older sam2-edge; "
                                  "re-export the fp32 bundle)")
            new_nodes.append(node)
            continue
        if len(node.input) != 3 or any(not i for i in node.input) or len(node.output) != 1:
            report.skipped.append(f"{where}: not the q / k / v form fuse_attention writes")
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if int(attrs.get("num_heads", -1)) != lay.heads:
            report.skipped.append(f"{where}: num_heads {attrs.get('num_heads')} != recorded {lay.heads}")
            new_nodes.append(node)
            continue
        scale = float(attrs.get("scale", 1.0 / np.sqrt(lay.qk_head_size)))
        pre = f"{where}/int8"
        built = []

        def const(name: str, arr) -> str:
            full = f"{pre}/{name}"
            g.initializer.append(numpy_helper.from_array(np.asarray(arr), full))
            return full

        def op(op_type: str, inputs, name: str, n_out: int = 1, **kw):
            outs = [f"{pre}/{name}"] if n_out == 1 else [f"{pre}/{name}_{i}" for i in range(n_out)]
            built.append(helper.make_node(op_type, list(inputs), outs, name=f"{pre}/{name}_node", **kw))
            return outs[0] if n_out == 1 else outs

        i64 = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
        q_in, k_in, v_in = node.input
        split = const("bshd", i64([0, 0, lay.heads, lay.qk_head_size]))  # 0: keep that dimension
        q4 = op("Reshape", [q_in, split], "q4")  # [B, Sq, H*Dq] -> [B, Sq, H, Dq]
        k4 = op("Reshape", [k_in, split], "k4")  # [B, Sk, H*Dq] -> [B, Sk, H, Dq]
        if lay.qk_head_size != lay.head_size:  # drop the bias column and the padding
            starts, ends = const("d_from", i64([0])), const("d_to", i64([lay.head_size]))
            axes = const("d_axis", i64([3]))
            q4 = op("Slice", [q4, starts, ends, axes], "q_d")  # [B, Sq, H, D]
            kd = op("Slice", [k4, starts, ends, axes], "k_d")  # [B, Sk, H, D]
        else:
            kd = k4
        qu, qs, qz = op("DynamicQuantizeLinear", [q4], "q_u8", 3)  # uint8, per-tensor scale / zero point
        # k: symmetric int8 (scale max|k| / 127, zero point 0): MLAS's u8 x s8 kernel is the VNNI one,
        # 2.1x the u8 x u8 kernel DynamicQuantizeLinear's uint8 keys would take (measured, 342 x 256 x 8,260)
        kmax = op("ReduceMax", [op("Abs", [kd], "k_abs")], "k_absmax", keepdims=0)  # scalar
        ks = op("Max", [op("Div", [kmax, const("i8_levels", np.float32(127.0))], "k_scale_raw"),
                        const("tiny", np.float32(1e-30))], "k_scale")  # all-zero keys: no division by 0
        kz = const("k_zero", np.int8(0))
        ku = op("QuantizeLinear", [kd, ks, kz], "k_i8")  # int8, round half to even
        qt = op("Transpose", [qu], "q_bhsd", perm=[0, 2, 1, 3])  # [B, H, Sq, D]
        kt = op("Transpose", [ku], "k_bhds", perm=[0, 2, 3, 1])  # [B, H, D, Sk]
        bias = None
        if lay.bias:  # column D of k: the per-key bias, added in fp32 as the fused kernel did
            bias = op("Slice", [k4, const("b_from", i64([lay.head_size])), const("b_to", i64([lay.head_size + 1])),
                                const("b_axis", i64([3]))], "key_bias")  # [B, Sk, H, 1]
            if lay.batch * lay.heads == 1:
                bias = op("Reshape", [bias, const("b_flat", i64([lay.keys]))], "key_bias_flat")  # [Sk]
            else:
                bias = op("Transpose", [bias], "key_bias_bh1s", perm=[0, 2, 3, 1])  # [B, H, 1, Sk]
        v4 = op("Reshape", [v_in, const("v_bshd", i64([0, 0, lay.heads, lay.v_head_size]))], "v4")  # [B, Sk, H, Dv]
        vt = op("Transpose", [v4], "v_bhsd", perm=[0, 2, 1, 3])  # [B, H, Sk, Dv]
        # query chunks of at most chunk_scores scores each: the same numbers (q was quantised whole),
        # a bounded score matrix (and one that stays in cache at 512)
        n_chunks = max(1, -(-lay.queries * lay.keys // chunk_scores))
        n_chunks = min(n_chunks, lay.queries)
        sizes = [lay.queries // n_chunks + (i < lay.queries % n_chunks) for i in range(n_chunks)]
        q_chunks = [qt] if n_chunks == 1 else op("Split", [qt, const("q_chunks", i64(sizes))], "q_chunk", n_chunks,
                                                 axis=2)  # n x [B, H, Sq/n, D]
        o_chunks = []
        for c, qc in enumerate(q_chunks):
            tag = "" if n_chunks == 1 else f"_{c}"
            if lay.batch * lay.heads == 1:
                # one score matrix: ORT's MatMulIntegerToFloat takes the scales and the per-key bias ([Sk])
                # into the integer product's epilogue (no separate pass over the scores)
                sc = op("MatMulIntegerToFloat", [qc, kt, qs, ks, qz, kz] + ([bias] if bias else []), f"scores{tag}",
                        domain=MS_DOMAIN)  # [1, 1, Sq/n, Sk] float
            else:
                si = op("MatMulInteger", [qc, kt, qz, kz], f"scores_i32{tag}")  # [B, H, Sq/n, Sk] int32
                sf = op("Cast", [si], f"scores_f32{tag}", to=TensorProto.FLOAT)
                sc = op("Mul", [sf, op("Mul", [qs, ks], f"scores_scale{tag}")], f"scores{tag}")
                if bias is not None:
                    sc = op("Add", [sc, bias], f"scores_biased{tag}")  # + [B, H, 1, Sk]
            if scale != 1.0:
                sc = op("Mul", [sc, const(f"scale{tag}", np.float32(scale))], f"scores_scaled{tag}")
            pc = op("Softmax", [sc], f"probs{tag}", axis=-1)  # [B, H, Sq/n, Sk]
            o_chunks.append(op("MatMul", [pc, vt], f"o_bhsd{tag}"))  # [B, H, Sq/n, Dv]
        o = o_chunks[0] if n_chunks == 1 else op("Concat", o_chunks, "o_bhsd", axis=2)  # [B, H, Sq, Dv]
        ot = op("Transpose", [o], "o_bshd", perm=[0, 2, 1, 3])  # [B, Sq, H, Dv]
        built.append(helper.make_node("Reshape", [ot, const("o_shape", i64([0, 0, lay.heads * lay.v_head_size]))],
                                      [node.output[0]], name=f"{pre}/out_node"))  # [B, Sq, H*Dv], the fused output
        keep = [m for m in node.metadata_props if m.key != LAYOUT_KEY]  # the module path; not the layout
        for n in built:
            n.metadata_props.extend(keep)
        new_nodes.extend(built)
        report.rewritten.append({"node": where, "shape": [lay.batch, lay.heads, lay.queries, lay.keys,
                                                          lay.head_size, lay.v_head_size], "bias": lay.bias,
                                 "query_chunks": n_chunks})
    if report.rewritten:
        # MatMulInteger / DynamicQuantizeLinear need opset >= 10; the exporter writes 17+
        assert any(o.domain in ("", "ai.onnx") and o.version >= 10 for o in model.opset_import)
        del g.node[:]
        g.node.extend(new_nodes)
    log.debug("int8 attention scores: %d rewritten, %d left fused: %s", len(report.rewritten), len(report.skipped),
              report.skipped)
    return report


__all__ = ["CHUNK_SCORES", "AttentionReport", "int8_attention_scores"]
