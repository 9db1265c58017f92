"""One tracker stage -> one static-shape ONNX graph.

`torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript) is the exporter; the
TorchScript exporter is the fallback should it ever fail for a module. Shapes are static
(the example inputs' shapes). After export the graph is, in order: given an Identity for
any output that is a plain constant (e.g. the image encoder's vision_pos), its large
attentions rewritten into ONNX Runtime's fused `com.microsoft.MultiHeadAttention` (fp32
only, `onnx_fuse.py`: the flash kernel of ORT's CPU provider instead of a materialised
query x key score matrix), optionally converted to float16 compute with float32
inputs/outputs, saved (weights in a side file
`<name>.data` only when the graph is over ~1.8 GB), checked with `onnx.checker` (path
form, so > 2 GB models work), and run once in onnxruntime on the example inputs and
compared with the eager module.

fp16: weights and compute in float16 (onnxruntime's float16 converter, `keep_io_types`),
so the graph's inputs and outputs stay float32/int32 exactly as `TrackerSpec.io()` says
and the tracker is unchanged. Meant for GPU / CoreML / TensorRT execution providers;
onnxruntime's CPU provider runs it too (slower than fp32: it casts around most ops).
fp16 graphs keep the decomposed attention (MultiHeadAttention's CPU kernel is float32
only), so on the CPU provider they still materialise the score matrices.

Opset: DEFAULT_OPSET (18) is the standard ("ai.onnx") opset of every graph, unchanged by
the attention fusion. A fused fp32 graph additionally imports the `com.microsoft` domain
(version 1) for MultiHeadAttention, which onnxruntime's CPU and CUDA providers implement;
providers without it (TensorRT, CoreML) hand those nodes to the CPU provider. The opset-23
`Attention` op was measured and not used: ORT 1.32's CPU kernel materialises the scores
(see onnx_fuse.py). `fuse_attention=False` exports the plain decomposed graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import onnx
import torch

from ..contract import Precision
from ..errors import ConfigError
from .onnx_fuse import DEFAULT_MIN_SCORES, fuse_attention as _fuse_attention

DEFAULT_OPSET = 18  # >= 17 (LayerNormalization); supported by onnxruntime >= 1.14, TensorRT 8.6+, CoreML EP
EXTERNAL_DATA_THRESHOLD = 1800 << 20  # protobuf's hard limit is 2 GiB per file
SUFFIX = ".onnx"
# memory attention with folded values (P.V at width 64; modeling/memory_attention.py): ORT's fused
# MultiHeadAttention runs it 2.1x faster. fp32 only: the fp16 graphs keep the official weight products.
FOLD_MEMORY_VALUES = frozenset({"fp32"})

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet():
    """torch.onnx prints progress lines and warns about optional torchvision ops; keep the
    CLI's progress bar readable (errors still propagate)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir",
                                              "torch._dynamo", "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export_dynamo(module, args, input_names, output_names, opset: int) -> onnx.ModelProto:
    with _quiet():
        prog = torch.onnx.export(module, args, None, dynamo=True, input_names=list(input_names),
                                 output_names=list(output_names), opset_version=opset, optimize=True,
                                 verbose=False, external_data=False)
        return prog.model_proto


def _export_torchscript(module, args, input_names, output_names, opset: int, tmp: Path) -> onnx.ModelProto:
    with _quiet():
        torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=list(input_names),
                          output_names=list(output_names), opset_version=opset, do_constant_folding=True)
    return onnx.load(str(tmp))


def _constant_outputs_to_identity(graph: onnx.GraphProto) -> None:
    """An output that is an initializer gets an Identity node (the fp16 converter and some
    runtimes mishandle a constant as a graph output)."""
    consts = {i.name for i in graph.initializer}
    for out in graph.output:
        if out.name in consts:
            src = out.name + "__value"
            for init in graph.initializer:
                if init.name == out.name:
                    init.name = src
            for node in graph.node:
                node.input[:] = [src if i == out.name else i for i in node.input]
            graph.node.append(onnx.helper.make_node("Identity", [src], [out.name], name=out.name + "__identity"))


def _dedupe_initializers(graph: onnx.GraphProto) -> int:
    """Replace initializers that are byte-identical copies of an earlier one (e.g. the RoPE
    tables every memory-attention layer holds) by references to it. Returns bytes saved."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node
           for a in n.attribute):
        return 0  # control-flow subgraphs may reference outer names: leave them alone
    outputs = {o.name for o in graph.output}
    first: Dict[Tuple, str] = {}
    rename: Dict[str, str] = {}
    keep = []
    saved = 0
    for init in graph.initializer:
        blob = init.raw_data if init.HasField("raw_data") else init.SerializeToString()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(blob).digest()) if len(blob) >= 1024 else None
        if key is not None and key in first and init.name not in outputs:
            rename[init.name] = first[key]
            saved += len(blob)
            continue
        if key is not None:
            first.setdefault(key, init.name)
        keep.append(init)
    if rename:
        del graph.initializer[:]
        graph.initializer.extend(keep)
        for node in graph.node:
            node.input[:] = [rename.get(i, i) for i in node.input]
    return saved


def _toposort(graph: onnx.GraphProto) -> None:
    """Order nodes so every input is produced before use (the fp16 converter appends casts)."""
    avail = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending: List[onnx.NodeProto] = list(graph.node)
    ordered: List[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                ordered.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in avail})[:5]
            raise RuntimeError(f"ONNX graph has unresolved node inputs {missing}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    _toposort(m16.graph)
    return m16


def _check_io(model: onnx.ModelProto, args: Sequence[torch.Tensor], input_names, output_names) -> None:
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(input_names) or got_out != list(output_names):
        raise RuntimeError(f"exported graph has inputs {got_in} / outputs {got_out}, expected "
                           f"{list(input_names)} / {list(output_names)}")
    for vi, a in zip(model.graph.input, args):
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]
        if dims != list(a.shape):
            raise RuntimeError(f"exported input {vi.name} has shape {dims}, expected static {list(a.shape)}")


def _save(model: onnx.ModelProto, path: Path) -> List[str]:
    """Save; returns the side files written (external weights), relative to path's folder."""
    data = path.name + ".data"
    if os.path.exists(path.parent / data):
        os.remove(path.parent / data)
    if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data, size_threshold=1024)
        return [data]
    onnx.save_model(model, str(path))
    return []


def _run_ort(path: Path, input_names, args) -> List[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a.detach().cpu().numpy() for n, a in zip(input_names, args)})


def export_stage(module: torch.nn.Module, example_inputs: Tuple[torch.Tensor, ...], input_names: Sequence[str],
                 output_names: Sequence[str], path: Path, precision: str = "fp32",
                 opset: int = DEFAULT_OPSET, verify: bool = True, fuse_attention: bool = True,
                 fuse_min_scores: int = DEFAULT_MIN_SCORES) -> Dict[str, object]:
    """Export one stage module to `path` (.onnx). Returns extra manifest info: opset,
    exporter used, node count, data files, fused attentions (fp32), and (verify) the largest
    |onnxruntime - eager| per output on the example inputs. `fuse_attention`: rewrite every
    float32 attention with at least `fuse_min_scores` query x key scores per head into
    com.microsoft.MultiHeadAttention (see onnx_fuse.py)."""
    precision = Precision.parse(precision, "onnx").value
    if opset < 17:
        raise ConfigError(f"ONNX opset must be >= 17 (LayerNormalization), got {opset}")
    path = Path(path)
    module = module.eval()
    with torch.no_grad():
        ref = module(*example_inputs)
    ref = (ref,) if isinstance(ref, torch.Tensor) else tuple(ref)

    exporter = "torch.onnx.export(dynamo=True)"
    try:
        model = _export_dynamo(module, example_inputs, input_names, output_names, opset)
    except Exception as e:  # noqa: BLE001 - any failure of the new exporter: try the TorchScript one
        log.warning("dynamo ONNX export of %s failed (%s); falling back to the TorchScript exporter",
                    type(module).__name__, e)
        exporter = "torch.onnx.export(dynamo=False)"
        model = _export_torchscript(module, example_inputs, input_names, output_names, opset,
                                    path.with_suffix(".tmp.onnx"))
        os.remove(path.with_suffix(".tmp.onnx"))
    _constant_outputs_to_identity(model.graph)
    _dedupe_initializers(model.graph)
    fused = None
    if fuse_attention and precision == "fp32":
        fused = _fuse_attention(model, min_scores=fuse_min_scores)
        log.debug("%s: %d attention(s) fused into com.microsoft.MultiHeadAttention", type(module).__name__,
                  len(fused.fused))
    if precision == "fp16":
        model = _to_fp16(model)
    _check_io(model, example_inputs, input_names, output_names)
    model.producer_name = "sam2-edge"
    onnx.helper.set_model_props(model, {"sam2_edge.precision": precision, "sam2_edge.exporter": exporter})
    opset_used = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    n_nodes = len(model.graph.node)
    data_files = _save(model, path)
    del model
    onnx.checker.check_model(str(path))  # path form: works for graphs with external data

    extra: Dict[str, object] = {"opset": int(opset_used), "exporter": exporter, "nodes": n_nodes}
    if fused is not None:
        extra.update(fused.as_extra())
    if data_files:
        extra["data_files"] = data_files
    if verify:
        outs = _run_ort(path, input_names, example_inputs)
        diffs = {}
        for name, r, o in zip(output_names, ref, outs):
            r = r.detach().float().cpu().numpy()
            if r.shape != o.shape:
                raise RuntimeError(f"onnxruntime output {name} has shape {o.shape}, eager {r.shape}")
            diffs[name] = float(np.abs(r - o.astype(np.float32)).max()) if r.size else 0.0
        extra["max_abs_diff_vs_torch"] = diffs
    return extra
