"""Quantise one ONNX stage graph with `onnxruntime.quantization` (no hand-written quantiser),
under a per-stage policy saying which op types are quantised and which node groups stay float.

* ``int8-dynamic``: `quantize_dynamic` -- int8 weights (per output channel), activations
  quantised at run time (uint8, DynamicQuantizeLinear + MatMulInteger).
* ``int8``: `quantize_static`, QDQ format -- int8 weights per channel, uint8 activations whose
  ranges come from calibration samples (MinMax), computed once per stage and kept in a
  calibration cache so the sensitivity analysis re-quantises without re-calibrating. Its graph
  is first run through ORT's basic optimiser (`quant_pre_process`), which turns each linear
  layer's MatMul + Add into one Gemm, so the quantiser writes the bias into the integer product
  (QGemm) instead of leaving a float Add between a dequantise and a quantise: tiny's image
  encoder at 512 runs 1.2x faster that way at the same SQNR (benchmarks/README.md). The
  optimiser drops the nodes' metadata; it is carried over by node name (a fused Gemm keeps its
  MatMul's name plus "/MatMulAddFusion"). Dynamic int8 keeps the unoptimised graph:
  `quantize_dynamic` has no integer Gemm.

Node groups come from the module path the exporter records on each node
(``metadata_props["namespace"]``, e.g. ``model.sam_mask_decoder.output_upscaling.0``): the
first two non-numeric components (``sam_mask_decoder.output_upscaling``), plus
``attention_scores`` for the activation x activation MatMuls of attention (QK^T, PV).

ORT quantises no attention the fp32 bundles fuse (`com.microsoft.MultiHeadAttention`, float32
only). A policy with `int8_attention` rewrites those of a stage, after ORT's quantisation, into a
run-time int8 QK^T (`onnx_attention.py`); by default memory attention's, where they are most of
the stage's time, and the flow's fidelity gate drops it before it drops the whole stage.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..contract import Precision
from ..errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

# ops whose weights carry the compute: what int8 quantises by default
STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm")
# ConvInteger has no int8-weight kernel in the CPU provider: dynamic quantisation covers MatMul / Gemm
DYNAMIC_OP_TYPES = ("MatMul", "Gemm")
ATTENTION_SCORES = "attention_scores"
MASK_PRODUCT = "sam_mask_decoder.mask_product"
OTHER = "other"

# the default policy (quantization/README.md): LayerNorm and Softmax are never in the quantised op
# types; these groups stay float in every precision because the tracker's decisions hang on them
DEFAULT_FLOAT_GROUPS: Dict[str, Tuple[str, ...]] = {
    "image_encoder": (),
    # QK^T / PV over the memory bank: the most sensitive group of the stage (measured, README)
    "memory_attention": (ATTENTION_SCORES,),
    # the final mask upscaling (transposed convs to the S/4 logits and the product with the
    # hypernetwork tokens that makes the mask logits) and the object-score head (its sign
    # decides presence) stay float
    "mask_decoder": ("sam_mask_decoder.output_upscaling", MASK_PRODUCT, "sam_mask_decoder.pred_obj_score_head"),
    "memory_encoder": (),
}
# stages whose fused attentions get run-time int8 QK^T scores by default (onnx_attention.py): memory
# attention's cross-attention over the memory bank is 46-83 % of an int8 frame; the image encoder's
# global attention is a few per cent of its stage and is left fused
DEFAULT_INT8_ATTENTION = ("memory_attention",)
# static int8: op types whose outputs stay float (ORT's OpTypesToExcludeOutputQuantization; the
# weights and inputs are int8 as before). Quantised outputs cost a DequantizeLinear per consumer:
# in memory attention that split every RoPE select into its own DQ + Gather (ORT could no longer
# fuse them into one Split): tiny@512's int8 memory attention 344 -> 255 ms, held-out SQNR 37.4 ->
# 39.8 dB; the image encoder runs as fast (441 / 436 ms) at 31.2 instead of 29.6 dB. The memory
# encoder's conv chains run slower with float conv outputs (40 -> 61 ms): it keeps them quantised.
DEFAULT_FLOAT_OUTPUTS: Dict[str, Tuple[str, ...]] = {"image_encoder": ("Gemm", "MatMul"),
                                                     "memory_attention": ("Gemm", "MatMul")}


@dataclass(frozen=True)
class StagePolicy:
    """What one stage's quantisation does. `fp32`: the stage is not quantised at all."""

    precision: str
    op_types: Tuple[str, ...]
    float_groups: Tuple[str, ...] = ()
    fp32: bool = False
    reason: str = ""
    only_groups: Optional[Tuple[str, ...]] = None  # analysis: quantise these groups only
    int8_attention: bool = False  # ONNX: fused attentions' QK^T in run-time int8 (onnx_attention.py)
    float_outputs: Tuple[str, ...] = ()  # static int8: op types whose outputs are not quantised

    def to_dict(self) -> dict:
        d = {"precision": "fp32" if self.fp32 else self.precision, "op_types_quantized": list(self.op_types),
             "float_groups": list(self.float_groups), "float_op_types": ["LayerNormalization", "Softmax",
                                                                       "(every op type not listed)"],
             "int8_attention_scores": self.int8_attention and not self.fp32}
        if self.float_outputs and not self.fp32:
            d["float_output_op_types"] = list(self.float_outputs)
        if self.fp32:
            d["kept_fp32"] = True
        if self.reason:
            d["reason"] = self.reason
        return d


def default_policy(stage: str, precision) -> StagePolicy:
    p = Precision(precision)
    if not p.quantized:
        raise ConfigError(f"default_policy is for int8 / int8-dynamic, got {p.value}")
    ops = STATIC_OP_TYPES if p is Precision.INT8 else DYNAMIC_OP_TYPES
    return StagePolicy(p.value, ops, DEFAULT_FLOAT_GROUPS.get(stage, ()),
                       int8_attention=stage in DEFAULT_INT8_ATTENTION,
                       float_outputs=DEFAULT_FLOAT_OUTPUTS.get(stage, ()) if p is Precision.INT8 else ())


def _imports():
    try:
        import onnx
        from onnxruntime import quantization as q
    except ModuleNotFoundError as e:
        raise BackendUnavailableError(f"quantising ONNX bundles needs {e.name!r}: pip install "
                                      "'sam2-edge[export-onnx]'") from None
    return onnx, q


# ------------------------------------------------------------------------------------ node groups
_MODULE = re.compile(r"model\.[A-Za-z0-9_.]+")


def _group_of(namespace: str) -> str:
    paths = _MODULE.findall(namespace or "")
    if not paths:
        return OTHER
    parts = [p for p in max(paths, key=len).split(".")[1:] if p and not p.isdigit()]
    return ".".join(parts[:2]) or OTHER


def node_groups(model) -> Dict[str, str]:
    """node name -> group, for every node of `model` (an onnx ModelProto)."""
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    out = {}
    for n in model.graph.node:
        md = {p.key: p.value for p in n.metadata_props}
        ns = md.get("namespace", "")
        if n.op_type == "MatMul" and "scaled_dot_product_attention" in ns.rsplit("/", 1)[-1] \
                and not any(i in inits or i in consts for i in n.input):
            out[n.name] = ATTENTION_SCORES
        else:
            g = _group_of(ns)
            if g == "sam_mask_decoder" and n.op_type == "MatMul":
                g = MASK_PRODUCT  # masks = hypernetwork tokens @ upscaled embedding
            out[n.name] = g
    return out


FUSION_SUFFIXES = ("/MatMulAddFusion",)  # what ORT's basic optimiser appends to a node it fused


def carry_metadata(source, optimized) -> int:
    """Copy each node's metadata (the exporter's module path) from `source` to the node of the same
    name in `optimized` (ORT's optimiser drops it), a fused node taking its first node's; -> the
    number of nodes given metadata. Nodes the optimiser created anew keep none (group "other")."""
    meta = {n.name: list(n.metadata_props) for n in source.graph.node if n.name}
    done = 0
    for n in optimized.graph.node:
        name = n.name
        for suffix in FUSION_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if name in meta and not n.metadata_props:
            n.metadata_props.extend(meta[name])
            done += 1
    return done


def quantizable_nodes(model, op_types: Sequence[str]) -> Dict[str, str]:
    """node name -> group of the nodes whose op type is in `op_types`."""
    groups = node_groups(model)
    return {n.name: groups[n.name] for n in model.graph.node if n.op_type in op_types}


# ------------------------------------------------------------------------------------ calibration
class _Reader:
    """A CalibrationDataReader over recorded input dicts."""

    def __init__(self, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.samples = list(samples)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return {k: np.ascontiguousarray(v) for k, v in self.samples[self.i - 1].items()}

    def __len__(self) -> int:
        return len(self.samples)

    def rewind(self) -> None:
        self.i = 0


def _reader(samples):
    _, q = _imports()

    class Reader(_Reader, q.CalibrationDataReader):
        pass

    return Reader(samples)


# ------------------------------------------------------------------------------------ quantising
@dataclass
class StageQuantizer:
    """Quantises one stage graph under any policy, calibrating (static int8) at most once."""

    stage: str
    fp32_path: Path
    calib: Sequence[Mapping[str, np.ndarray]] = ()
    work: Optional[Path] = None
    optimize: bool = False  # ORT's basic optimiser first (static int8: linear layers become Gemm)
    _prepared: Optional[Path] = field(default=None, init=False)
    _cache: Optional[Path] = field(default=None, init=False)
    _model = None

    def __post_init__(self) -> None:
        self.fp32_path = Path(self.fp32_path)
        if self.work is None:
            self.work = Path(tempfile.mkdtemp(prefix=f"sam2q-{self.stage}-"))
        self.work = Path(self.work)
        self.work.mkdir(parents=True, exist_ok=True)

    @property
    def prepared(self) -> Path:
        """The fp32 graph after `quant_pre_process` (shape inference; with `optimize`, ORT's basic
        optimiser too, the module paths carried over to the nodes it rewrote)."""
        if self._prepared is None:
            onnx, q = _imports()
            from onnxruntime.quantization.shape_inference import quant_pre_process

            out = self.work / f"{self.stage}.pre.onnx"
            skip_opt = not self.optimize
            try:
                quant_pre_process(str(self.fp32_path), str(out), skip_optimization=skip_opt, skip_symbolic_shape=False)
            except Exception as e:  # noqa: BLE001 - symbolic shape inference can fail on some graphs
                log.info("quant_pre_process(%s) with symbolic shapes failed (%s); retrying with ONNX shapes only",
                         self.stage, e)
                quant_pre_process(str(self.fp32_path), str(out), skip_optimization=skip_opt, skip_symbolic_shape=True)
            if self.optimize:
                model = onnx.load(str(out))
                carry_metadata(onnx.load(str(self.fp32_path), load_external_data=False), model)
                onnx.save(model, str(out))
            self._prepared = out
        return self._prepared

    @property
    def model(self):
        if self._model is None:
            onnx, _ = _imports()
            self._model = onnx.load(str(self.prepared))
        return self._model

    def groups(self, op_types: Sequence[str]) -> Dict[str, str]:
        return quantizable_nodes(self.model, op_types)

    def _calibration_cache(self) -> Path:
        """Activation ranges of every tensor a static int8 graph may quantise (all op types of
        STATIC_OP_TYPES), computed once from the calibration samples."""
        if self._cache is None:
            onnx, q = _imports()
            if not self.calib:
                raise ConfigError(f"static int8 needs calibration samples for {self.stage}; none were recorded")
            cache = self.work / f"{self.stage}.calib.json"
            out = self.work / f"{self.stage}.calibrate.onnx"
            q.quantize_static(str(self.prepared), str(out), _reader(self.calib), quant_format=q.QuantFormat.QDQ,
                              op_types_to_quantize=list(STATIC_OP_TYPES), per_channel=True,
                              activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax, calibration_cache_path=str(cache))
            out.unlink(missing_ok=True)
            self._cache = cache
        return self._cache

    def quantize(self, policy: StagePolicy, out: Path) -> Dict[str, object]:
        """Write the graph quantised under `policy` to `out`; -> what was done (for the manifest)."""
        onnx, q = _imports()
        out = Path(out)
        if policy.fp32:
            out.write_bytes(self.fp32_path.read_bytes())
            return {"quantized_nodes": 0, "float_nodes": []}
        info = self._quantize_ops(policy, out)
        if policy.int8_attention:
            from .onnx_attention import int8_attention_scores

            model = onnx.load(str(out))
            info.update(int8_attention_scores(model).as_info())
            onnx.save(model, str(out))
        return info

    def _quantize_ops(self, policy: StagePolicy, out: Path) -> Dict[str, object]:
        """ORT's quantisation of the weight-carrying ops `policy` chooses (the float graph if none)."""
        onnx, q = _imports()
        nodes = self.groups(policy.op_types)
        if policy.only_groups is not None:
            chosen = [n for n, g in nodes.items() if g in policy.only_groups]
        else:
            chosen = [n for n, g in nodes.items() if g not in policy.float_groups]
        excluded = sorted(n for n in nodes if n not in chosen)
        if not chosen:  # nothing to quantise under this policy: the float graph
            out.write_bytes(self.fp32_path.read_bytes())
            return {"quantized_nodes": 0, "float_nodes": excluded}
        if policy.precision == Precision.INT8.value:
            q.quantize_static(str(self.prepared), str(out), None, quant_format=q.QuantFormat.QDQ,
                              op_types_to_quantize=list(policy.op_types), nodes_to_quantize=chosen,
                              per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax,
                              calibration_cache_path=str(self._calibration_cache()),
                              extra_options={"OpTypesToExcludeOutputQuantization": list(policy.float_outputs)})
        elif policy.precision == Precision.INT8_DYNAMIC.value:
            q.quantize_dynamic(str(self.prepared), str(out), op_types_to_quantize=list(policy.op_types),
                               nodes_to_quantize=chosen, per_channel=True, weight_type=q.QuantType.QInt8)
        else:
            raise ConfigError(f"cannot quantise to {policy.precision!r}; choose int8 or int8-dynamic")
        return {"quantized_nodes": len(chosen), "float_nodes": excluded}


# ------------------------------------------------------------------------------------ running
def run_graph(path, samples: Sequence[Mapping[str, np.ndarray]], output_names: Sequence[str],
              threads: int = 0) -> List[Tuple[np.ndarray, ...]]:
    """Run an ONNX graph (a file we wrote) on each sample with onnxruntime's CPU provider."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [tuple(sess.run(list(output_names), dict(s))) for s in samples]


def graph_info(path) -> Dict[str, object]:
    """Node count and the op types of a graph (for the manifest's extra)."""
    onnx, _ = _imports()
    m = onnx.load(str(path), load_external_data=False)
    ops: Dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    q_ops = {k: v for k, v in ops.items() if k in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                                                   "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv")}
    return {"nodes": len(m.graph.node), "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                                                     default=0), "quant_ops": q_ops}


__all__ = ["STATIC_OP_TYPES", "DYNAMIC_OP_TYPES", "ATTENTION_SCORES", "MASK_PRODUCT", "DEFAULT_FLOAT_GROUPS",
           "DEFAULT_INT8_ATTENTION", "DEFAULT_FLOAT_OUTPUTS", "StagePolicy",
           "default_policy", "node_groups", "quantizable_nodes", "StageQuantizer", "run_graph", "graph_info"]
