"""Graph rewrite: exported attention -> ONNX Runtime's fused `com.microsoft.MultiHeadAttention`.

Why. `torch.onnx.export` decomposes `F.scaled_dot_product_attention` into

    S = MatMul(Q * s, K^T * s) [+ bias];  P = Softmax(S, axis=-1);  O = MatMul(P, V)

and ONNX Runtime runs that literally: the whole score matrix S (and the Add / Softmax copies
of it) is materialised. For the memory attention of sam2.1-hiera-tiny at 1024 px that is
4096 queries x ~28 700 memory keys = 470 MB per tensor per layer, which made the ONNX
tracker hold 4.7 GB peak RSS and run slower than torch's flash kernel.

What ORT 1.32's CPU provider runs without materialising the scores (measured with
synthetic graphs, q 4096x256, k/v 28 736x256, one head; see benchmarks/README.md, "ONNX
fused attention"):

* `com.microsoft.MultiHeadAttention` (float32, 3-D [B, S, N*H] query / key / value, no
  `key_padding_mask`, no `attention_bias`, no past / present) takes MLAS's flash-attention
  kernel: ~100 MB working set instead of ~1.9 GB for the decomposed graph.
  With a key padding mask or an attention bias, or with 4-D (BNSH) key / value, it falls
  back to the unfused path (scores materialised).
* The opset-23 `Attention` op materialises the scores on CPU (~480 MB for that shape, even
  without a mask) and requires a mask with the query length as its second-last dimension,
  so a per-key bias would have to be expanded to [Sq, Sk] first; not used.

A per-key additive bias (the tracker's -1e4 for absent memory slots, the decoder's padding
of absent prompt points) is folded into the dot product instead of passed as a mask, which
keeps the flash path: with q' = [q*s, 1, 0...] and k' = [k*s, b, 0...],

    q' . k'  =  (q*s) . (k*s) + b

exactly the biased score (a masked key's product is ~ -1e4 whatever the rounding, and its
softmax weight underflows to 0 as before). The head size of q / k grows by `pad` columns
(rounded up to a multiple of 16 for the GEMM kernels); v keeps its own head size
(MultiHeadAttention allows v_head_size != qk_head_size). Only a bias that is constant over
the query axis (shape [1 or B, 1 or H, 1, Sk]) is folded; any other attention is left as is.

The rewrite keeps every graph input and output (names, shapes, dtypes), so the graph still
matches `TrackerSpec.io()`. MultiHeadAttention's CPU kernel is float32 only: fp16 graphs are
not rewritten (the exporter fuses only fp32). Execution providers without the contrib op
(TensorRT, CoreML) leave those nodes to the CPU provider.

Each fused node records its layout in its metadata (`LAYOUT_KEY`: [B, H, Sq, Sk, D, Dv], the
padded q/k head size, whether column D of each head is the folded key bias; `fused_layout`
reads it back), so a later rewrite of the same attention (the quantiser's run-time int8 QK^T,
quantization/onnx_attention.py) can take q / k / v from the node's own 3-D inputs, whatever
an optimiser did to the ops before them, and keep the bias column out of the int8 keys.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
FUSED_OP = "MultiHeadAttention"
# Fuse an attention when one (batch, head) score matrix has at least this many elements
# (Sq * Sk). Smaller ones (Hiera's windowed attention, the decoder's token self-attention)
# gain nothing from a flash kernel and pay the layout transposes.
DEFAULT_MIN_SCORES = 1 << 16
PAD_MULTIPLE = 16  # q/k head size of a biased attention is rounded up to this (bias column included)
LAYOUT_KEY = "sam2_edge.fused_attention"  # metadata_props key of a fused node: its FusedLayout as JSON

log = logging.getLogger(__name__)


@dataclass
class FuseReport:
    fused: List[Dict[str, object]] = field(default_factory=list)  # one per rewritten attention
    skipped: List[str] = field(default_factory=list)  # why a Softmax was left alone

    def as_extra(self) -> Dict[str, object]:
        """Manifest info: how many attentions were fused and their [B, H, Sq, Sk, D, Dv]."""
        return {"fused_attention": len(self.fused),
                "fused_attention_shapes": sorted({str(f["shape"]) for f in self.fused})}


def _tensor_info(model: onnx.ModelProto) -> Tuple[Dict[str, List[int]], Dict[str, int]]:
    """Shapes (-1 for an unknown dimension) and element types of every tensor: the value_info
    the exporter wrote (the dynamo exporter writes all), completed by ONNX shape inference
    (the TorchScript exporter writes none)."""
    g = model.graph
    vis = list(g.value_info) + list(g.input) + list(g.output)
    produced = {o for n in g.node for o in n.output}
    if not produced <= {vi.name for vi in vis}:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
            vis = list(inferred.graph.value_info) + vis
        except Exception as e:  # noqa: BLE001 - e.g. a > 2 GB proto: fuse only what the exporter typed
            log.warning("ONNX shape inference failed (%s); attentions without exported shapes stay unfused", e)
    shapes: Dict[str, List[int]] = {}
    types: Dict[str, int] = {}
    for vi in vis:
        t = vi.type.tensor_type
        if t.elem_type:
            types[vi.name] = t.elem_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    return shapes, types


def _static(shape: Optional[Sequence[int]], rank: int) -> bool:
    return shape is not None and len(shape) == rank and all(d > 0 for d in shape)


@dataclass(frozen=True)
class FusedLayout:
    """What one fused MultiHeadAttention computes. Its 3-D inputs are q [B, Sq, H*Dq], k [B, Sk, H*Dq],
    v [B, Sk, H*Dv] (Dq = `qk_head_size`); per head, columns [0, D) are the scaled q / k, and with
    `bias` column D of q is 1 and of k the key bias (columns after it are 0)."""

    batch: int
    heads: int
    queries: int
    keys: int
    head_size: int  # D
    v_head_size: int  # Dv
    qk_head_size: int  # Dq >= D (+ the bias column and padding)
    bias: bool

    def to_json(self) -> str:
        return json.dumps({"shape": [self.batch, self.heads, self.queries, self.keys, self.head_size, self.v_head_size],
                           "qk_head_size": self.qk_head_size, "bias": self.bias})


def fused_layout(node: onnx.NodeProto) -> Optional[FusedLayout]:
    """The layout `fuse_attention` recorded on a fused node; None for a node without one (not ours,
    or fused by a sam2-edge before 2026-11-30) or with one that does not add up."""
    raw = next((p.value for p in node.metadata_props if p.key == LAYOUT_KEY), None)
    if node.op_type != FUSED_OP or node.domain != MS_DOMAIN or raw is None:
        return None
    try:
        d = json.loads(raw)
        b, h, sq, sk, hd, dv = (int(x) for x in d["shape"])
        lay = FusedLayout(b, h, sq, sk, hd, dv, int(d["qk_head_size"]), bool(d["bias"]))
    except (ValueError, KeyError, TypeError):
        return None
    ok = min(b, h, sq, sk, hd, dv) > 0 and lay.qk_head_size >= hd + int(lay.bias)
    return lay if ok else None


class _Builder:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []

    def name(self, s: str) -> str:
        return f"{self.prefix}/{s}"

    def const(self, s: str, arr: np.ndarray) -> str:
        n = self.name(s)
        self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def node(self, op: str, inputs: Sequence[str], out: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out + "_node", domain=domain or None,
                                           **attrs))
        return out


def fuse_attention(model: onnx.ModelProto, min_scores: int = DEFAULT_MIN_SCORES,
                   pad_multiple: int = PAD_MULTIPLE) -> FuseReport:
    """Rewrite, in place, every float32 `MatMul(Q, Kt) [+ key bias] -> Softmax(-1) -> MatMul(., V)`
    with rank-4 [B, H, S, D] operands into one com.microsoft.MultiHeadAttention (flash kernel
    on ORT's CPU provider). Returns what was fused and what was skipped (and why)."""
    g = model.graph
    report = FuseReport()
    shapes, types = _tensor_info(model)
    producer = {o: n for n in g.node for o in n.output}
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}

    def single_use(name: str) -> bool:
        return name not in graph_outputs and len(consumers.get(name, [])) == 1

    remove: set = set()
    insert_at: Dict[int, _Builder] = {}  # id(PV MatMul) -> replacement
    for sm in list(g.node):
        if sm.op_type != "Softmax" or sm.domain not in ("", "ai.onnx"):
            continue
        where = sm.name or sm.output[0]
        axis = next((helper.get_attribute_value(a) for a in sm.attribute if a.name == "axis"), -1)
        s_shape = shapes.get(sm.input[0])
        if not _static(s_shape, 4) or axis not in (-1, 3):
            report.skipped.append(f"{where}: not a rank-4 softmax over the last axis")
            continue
        if types.get(sm.input[0]) != TensorProto.FLOAT:
            report.skipped.append(f"{where}: not float32")
            continue
        pv = consumers.get(sm.output[0], [])
        if len(pv) != 1 or pv[0].op_type != "MatMul" or pv[0].input[0] != sm.output[0] or \
                sm.output[0] in graph_outputs:
            report.skipped.append(f"{where}: probabilities not used by one MatMul(P, V)")
            continue
        pv = pv[0]
        s_node = producer.get(sm.input[0])
        bias = None
        if s_node is not None and s_node.op_type == "Add" and single_use(s_node.output[0]):
            add = s_node
            a0, a1 = (producer.get(add.input[0]), producer.get(add.input[1]))
            if a0 is not None and a0.op_type == "MatMul" and shapes.get(add.input[0]) == s_shape:
                qk, bias = a0, add.input[1]
            elif a1 is not None and a1.op_type == "MatMul" and shapes.get(add.input[1]) == s_shape:
                qk, bias = a1, add.input[0]
            else:
                report.skipped.append(f"{where}: Add without a MatMul(Q, Kt) operand")
                continue
        elif s_node is not None and s_node.op_type == "MatMul":
            add, qk = None, s_node
        else:
            report.skipped.append(f"{where}: softmax input is not MatMul(Q, Kt) [+ bias]")
            continue
        if not single_use(qk.output[0]):
            report.skipped.append(f"{where}: scores used elsewhere")
            continue
        q_name, kt_name, v_name = qk.input[0], qk.input[1], pv.input[1]
        q_s, kt_s, v_s = shapes.get(q_name), shapes.get(kt_name), shapes.get(v_name)
        if not (_static(q_s, 4) and _static(kt_s, 4) and _static(v_s, 4)):
            report.skipped.append(f"{where}: Q / Kt / V not static rank 4")
            continue
        b, h, sq, d = q_s
        sk = kt_s[3]
        dv = v_s[3]
        if kt_s[:3] != [b, h, d] or v_s[:3] != [b, h, sk] or s_shape != [b, h, sq, sk]:
            report.skipped.append(f"{where}: shapes {q_s} x {kt_s} x {v_s} are not one attention")
            continue
        if any(types.get(x) != TensorProto.FLOAT for x in (q_name, kt_name, v_name)):
            report.skipped.append(f"{where}: not float32")
            continue
        if bias is not None:
            b_s = shapes.get(bias)
            if b_s is None or len(b_s) > 4 or types.get(bias) != TensorProto.FLOAT:
                report.skipped.append(f"{where}: bias of unknown shape / type")
                continue
            b_s = [1] * (4 - len(b_s)) + list(b_s)  # -1: unknown, but broadcastable to the scores
            if b_s[0] not in (-1, 1, b) or b_s[1] not in (-1, 1, h) or b_s[2] != 1 or b_s[3] not in (-1, 1, sk):
                report.skipped.append(f"{where}: bias {b_s} varies over queries (only a per-key bias is folded)")
                continue
        if sq * sk < min_scores:
            report.skipped.append(f"{where}: small ({sq} x {sk} scores)")
            continue

        bld = _Builder(f"fused_attn_{len(report.fused)}")
        i64 = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
        q4 = bld.node("Transpose", [q_name], bld.name("q_bsnh"), perm=[0, 2, 1, 3])  # [B, Sq, H, D]
        k4 = bld.node("Transpose", [kt_name], bld.name("k_bsnh"), perm=[0, 3, 1, 2])  # [B, Sk, H, D]
        v4 = bld.node("Transpose", [v_name], bld.name("v_bsnh"), perm=[0, 2, 1, 3])  # [B, Sk, H, Dv]
        dq = d
        if bias is not None:
            pad = (-(d + 1)) % pad_multiple + 1
            dq = d + pad
            one = np.zeros((1, 1, 1, pad), np.float32)
            one[..., 0] = 1.0
            q_ext = bld.node("Expand", [bld.const("q_ones", one), bld.const("q_ext_shape", i64([b, sq, h, pad]))],
                             bld.name("q_ext"))
            q4 = bld.node("Concat", [q4, q_ext], bld.name("q_aug"), axis=3)
            b4 = bias
            if len(shapes[bias]) != 4:
                b4 = bld.node("Unsqueeze", [bias, bld.const("bias4_axes", i64(range(4 - len(shapes[bias]))))],
                              bld.name("bias4"))
            bt = bld.node("Transpose", [b4], bld.name("bias_t"), perm=[0, 3, 1, 2])  # [b0, Sk, h0, 1]
            parts = [bld.node("Expand", [bt, bld.const("bias_shape", i64([b, sk, h, 1]))], bld.name("bias_col"))]
            if pad > 1:
                parts.append(bld.node("Expand", [bld.const("k_zeros", np.zeros((1, 1, 1, pad - 1), np.float32)),
                                                 bld.const("k_zero_shape", i64([b, sk, h, pad - 1]))],
                                      bld.name("k_zero")))
            k4 = bld.node("Concat", [k4] + parts, bld.name("k_aug"), axis=3)
        q3 = bld.node("Reshape", [q4, bld.const("q3_shape", i64([b, sq, h * dq]))], bld.name("q"))
        k3 = bld.node("Reshape", [k4, bld.const("k3_shape", i64([b, sk, h * dq]))], bld.name("k"))
        v3 = bld.node("Reshape", [v4, bld.const("v3_shape", i64([b, sk, h * dv]))], bld.name("v"))
        o3 = bld.node(FUSED_OP, [q3, k3, v3], bld.name("out"), domain=MS_DOMAIN, num_heads=h, scale=1.0)
        fused_node = bld.nodes[-1]
        o4 = bld.node("Reshape", [o3, bld.const("o4_shape", i64([b, sq, h, dv]))], bld.name("o_bsnh"))
        bld.node("Transpose", [o4], pv.output[0], perm=[0, 2, 1, 3])  # the original [B, H, Sq, Dv] output name
        for n in bld.nodes:  # keep the module path the exporter recorded (quantization groups nodes by it)
            n.metadata_props.extend(pv.metadata_props)
        layout = FusedLayout(b, h, sq, sk, d, dv, dq, bias is not None)
        fused_node.metadata_props.add(key=LAYOUT_KEY, value=layout.to_json())
        remove.update(id(n) for n in (qk, sm, pv) + ((add,) if add is not None else ()))
        insert_at[id(pv)] = bld
        report.fused.append({"softmax": where, "shape": [b, h, sq, sk, d, dv], "bias": bias is not None,
                             "qk_head_size": dq})

    if report.fused:
        reproduced = {o for bld in insert_at.values() for n in bld.nodes for o in n.output}
        removed_outputs = set()
        new_nodes: List[onnx.NodeProto] = []
        for n in g.node:
            if id(n) in insert_at:
                new_nodes.extend(insert_at[id(n)].nodes)
                g.initializer.extend(insert_at[id(n)].inits)
            if id(n) in remove:
                removed_outputs.update(o for o in n.output if o not in reproduced)
                continue
            new_nodes.append(n)
        del g.node[:]
        g.node.extend(new_nodes)
        keep_vi = [vi for vi in g.value_info if vi.name not in removed_outputs]
        del g.value_info[:]
        g.value_info.extend(keep_vi)
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    log.debug("fused %d attention(s) into %s; left %d softmax(es): %s", len(report.fused), FUSED_OP,
              len(report.skipped), report.skipped)
    return report
