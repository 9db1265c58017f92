"""CoreML export of one tracker stage: torch.export -> coremltools -> ML program
(`.mlpackage`), minimum deployment target iOS 17 / macOS 14 (specification version 8,
opset CoreML7).

Inputs and outputs keep the names, shapes and dtypes of `TrackerSpec.io()`: float32, and
int32 for the integer inputs (labels, modes, flags, temporal indices). "fp16" (the CLI
default for CoreML) sets compute_precision=FLOAT16: weights and intermediate tensors are
float16 (what the Neural Engine runs), the program's inputs and outputs stay float32.
"fp32" keeps float32 compute (GPU / CPU only).

With fp16, the ops of the mask decoder's stability score (pixel counts: reduce_sum, the
clamp and the ratio; also the small LayerNorm2d divisions, same op type) stay float32:
float16 holds integers exactly only up to 2048 and overflows at 65504, while the count runs
to (S/4)^2 = 65536 at S = 1024.

Two tiny graph adjustments, no model change: bool `&` / `|` become bitwise_and / bitwise_or
(coremltools' torch frontend maps those, not the `__and__` kind torch.export records), and
`alias` nodes (a no-op repeat of the RoPE tables) are dropped.

Conversion works on Linux; running a CoreML model needs macOS (see
`sam2_edge.runtimes.backends.coreml_backend`).

Compressed weights (int8, palettize4/6/8) are not made here: `sam2_edge.quantization.coreml_quant`
compresses these float packages with coremltools.optimize.coreml. With this iOS 17 target,
palettisation has one lookup table per weight tensor; a table per group of channels needs
iOS 18 / macOS 15 (specification version 9), which this exporter does not set.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..contract import Precision
from ..errors import BackendUnavailableError

# op types kept in float32 under fp16 compute (see the module docstring)
FP32_OPS = frozenset({"reduce_sum", "clip", "real_div"})
DEPLOYMENT_TARGET = "iOS17"
SPECIFICATION_VERSION = 8  # iOS 17 / macOS 14
OPSET = "CoreML7"
# memory-attention value folding (modeling/memory_attention.py) is not used for CoreML: its numerics
# cannot be checked on Linux, and the fp16 programs keep the official weight products.
FOLD_MEMORY_VALUES = frozenset()

# MIL proto DataType numbers -> numpy dtype names (the ones these programs use)
_MIL_DTYPES = {1: "bool", 2: "string", 10: "float16", 11: "float32", 12: "float64", 21: "int8", 22: "int16", 23: "int32",
               24: "int64", 31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64"}
# ML model description ArrayDataType numbers
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}


def _require_coremltools():
    try:
        import coremltools as ct
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            f"CoreML export needs coremltools ({e}): pip install 'sam2-edge[coreml]'") from None
    return ct


def _prepare_program(module: nn.Module, example_inputs: Tuple[torch.Tensor, ...]):
    aten = torch.ops.aten
    ep = torch.export.export(module.eval(), example_inputs, strict=False)
    ep = ep.run_decompositions({aten.__and__.Tensor: lambda a, b: torch.bitwise_and(a, b),
                                aten.__or__.Tensor: lambda a, b: torch.bitwise_or(a, b)})
    outputs = set()
    for node in ep.graph.nodes:
        if node.op == "output":
            outputs = {a for a in node.args[0] if isinstance(a, torch.fx.Node)}
    for node in list(ep.graph.nodes):
        if node.op == "call_function" and node.target == aten.alias.default and node not in outputs:
            node.replace_all_uses_with(node.args[0])
            ep.graph.erase_node(node)
    ep.graph_module.recompile()
    return ep


def _np_dtype(t: torch.Tensor):
    if t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
        return np.int32
    if t.dtype == torch.bool:
        return np.bool_
    return np.float32


def program_ops(spec) -> Counter:
    """Op types of an ML program spec (main function, nested blocks included)."""
    f = spec.mlProgram.functions["main"]
    c: Counter = Counter()

    def walk(block):
        for op in block.operations:
            c[op.type] += 1
            for b in op.blocks:
                walk(b)

    walk(f.block_specializations[f.opset])
    return c


def program_tensor_dtypes(spec) -> Counter:
    """Dtypes of every op output in an ML program spec."""
    f = spec.mlProgram.functions["main"]
    c: Counter = Counter()

    def walk(block):
        for op in block.operations:
            for o in op.outputs:
                if o.type.HasField("tensorType"):
                    c[_MIL_DTYPES.get(o.type.tensorType.dataType, str(o.type.tensorType.dataType))] += 1
            for b in op.blocks:
                walk(b)

    walk(f.block_specializations[f.opset])
    return c


def unsupported_ops(spec, target=None) -> List[str]:
    """Op types of the program that coremltools' MIL registry does not define for the
    deployment target (or that are custom / dialect ops)."""
    ct = _require_coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    target = target or getattr(ct.target, DEPLOYMENT_TARGET)
    bad = []
    for op in program_ops(spec):
        versions = SSAOpRegistry.core_ops.get(op)
        if not versions or not any(v <= target for v in versions):
            bad.append(op)
    return sorted(bad)


def describe_io(spec) -> Dict[str, List[dict]]:
    def feats(fs):
        return [{"name": f.name, "shape": [int(s) for s in f.type.multiArrayType.shape],
                 "dtype": _ARRAY_DTYPES.get(f.type.multiArrayType.dataType, str(f.type.multiArrayType.dataType))}
                for f in fs]

    return {"inputs": feats(spec.description.input), "outputs": feats(spec.description.output)}


def export_stage(module: nn.Module, example_inputs: Sequence[torch.Tensor], input_names: List[str],
                 output_names: List[str], path: Path, precision: str = "fp16") -> dict:
    """Write `path` (.mlpackage directory) for one stage; return its manifest info."""
    ct = _require_coremltools()
    precision = Precision.parse(precision, "coreml").value
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"a CoreML ML program is saved as a .mlpackage directory, got {path}")
    example_inputs = tuple(t.detach().contiguous().clone() for t in example_inputs)
    if len(input_names) != len(example_inputs):
        raise ValueError(f"{len(input_names)} input names for {len(example_inputs)} example inputs")

    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        ep = _prepare_program(module, example_inputs)
        n_out = len(ep.graph_signature.user_outputs)
        if n_out != len(output_names):
            raise ValueError(f"the graph has {n_out} outputs, {len(output_names)} output names given")
        placeholders = [s.arg.name for s in ep.graph_signature.input_specs
                        if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
        inputs = [ct.TensorType(name=p, shape=tuple(t.shape), dtype=_np_dtype(t))
                  for p, t in zip(placeholders, example_inputs)]
        mlmodel = ct.convert(
            ep,
            inputs=inputs,
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in output_names],
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
            compute_precision=(ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type not in FP32_OPS)
                               if precision == "fp16" else ct.precision.FLOAT32),
            skip_model_load=True,
        )
    spec = mlmodel.get_spec()
    renamed = False
    for old, new in zip([i.name for i in spec.description.input], input_names):
        if old != new:  # torch.export names placeholders after forward's arguments; enforce the spec's
            ct.utils.rename_feature(spec, old, new)
            renamed = True
    if renamed:
        mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
        spec = mlmodel.get_spec()
    got = [o.name for o in spec.description.output]
    if got != list(output_names):
        raise RuntimeError(f"converted outputs {got} != {list(output_names)}")

    tmp = path.with_name(path.name + ".tmp.mlpackage")  # written whole, then renamed into place
    if tmp.exists():
        shutil.rmtree(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(tmp))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)

    ops = program_ops(spec)
    return {
        "format": "coreml",
        "coremltools_version": ct.__version__,
        "convert_to": "mlprogram",
        "deployment_target": DEPLOYMENT_TARGET,
        "specification_version": int(spec.specificationVersion),
        "opset": spec.mlProgram.functions["main"].opset,
        "precision": precision,
        "compute_precision": "float16" if precision == "fp16" else "float32",
        "float32_ops": sorted(FP32_OPS) if precision == "fp16" else [],
        **describe_io(spec),
        "mil_ops": int(sum(v for k, v in ops.items() if k != "const")),
        "export_seconds": round(time.perf_counter() - t0, 2),
        "export_cpu_seconds": round(time.process_time() - c0, 2),
        "bytes": int(sum(f.stat().st_size for f in path.rglob("*") if f.is_file())),
    }
