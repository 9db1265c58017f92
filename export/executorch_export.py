"""ExecuTorch export of one tracker stage: torch.export -> edge dialect -> XNNPACK delegate
-> `.pte`.

The stage modules are exported unchanged. Before lowering, a handful of exact rewrites turn
ops that XNNPACK cannot take into ops it can, so each graph stays in few large delegates
instead of being cut at every attention and normalisation (every cut costs a copy out of
and back into XNNPACK, and about two seconds of lowering time):

  * scaled_dot_product_attention -> bmm / softmax / bmm (plus the additive mask), in 3-D
    (a 4-D matmul decomposes with expand ops XNNPACK does not take). The default
    decomposition is the "safe softmax" one (eq / any / where / logical_not, guarding rows
    masked entirely with -inf), which XNNPACK does not run. The stages mask with a finite
    -1e4 bias, never -inf, so plain softmax is the same function.
  * layer_norm and mean over non-spatial axes (LayerNorm2d) -> XNNPACK's only mean: the
    4-D mean over the two innermost axes, after a permute/reshape to [1, rows, n, 1].
  * select / unbind (x[..., 0], Hiera's q, k, v) -> slice + reshape (squeeze is not an
    XNNPACK op); alias and same-shape expand -> view (their portable kernels copy); nearest x2 upsampling (FPN top-down) -> cat + reshape (an exact copy, as
    nearest with an integer factor is).
  * constant folding: everything computed from weights and buffers alone (the prompt
    encoder's dense positional grid, RoPE tables repeated per memory frame, the pointer
    sine encoding's frequencies) becomes a constant.

What stays outside XNNPACK runs on ExecuTorch's portable kernels: integer and boolean logic
(prompt label tests, torch.where on flags, argmax, the mask-selection gather, memory tpos
gather), dtype casts and a few shape ops. `export_stage` reports the delegated share.

Precision: XNNPACK runs float32 and float16 graphs (no bfloat16 by default). "fp32" (the
default) exports the stage as is. "fp16" casts the weights and every float activation to
float16 inside the graph, keeping the stage's float32 inputs and outputs (the casts are
part of the graph), so the runtime contract (`TrackerSpec.io`) is the same for both. The
decoder's stability-score pixel counts stay float32 (float16 is exact only to 2048 and
overflows at 65504; the count reaches 65536 at 1024 px). XNNPACK has no float16 GELU, so
in fp16 the GELUs run on portable kernels between delegates. fp16 halves the weights;
whether it is faster depends on the CPU (native fp16 arithmetic: ARMv8.2-A, e.g. the
Cortex-A76 of a Raspberry Pi 5; the Pi 4's A72 and most x86 CPUs only convert).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..contract import Precision
from ..errors import BackendUnavailableError


aten = torch.ops.aten
# memory attention with folded values (P.V at width 64; modeling/memory_attention.py): the P.V
# matrix product of the lowered attention shrinks 4x. fp32 only: fp16 keeps the official weight products.
FOLD_MEMORY_VALUES = frozenset({"fp32"})

# Ops that only move or re-view data (or are graph plumbing); everything else counts as
# a compute op in the delegated share.
_STRUCTURAL = {
    "getitem", "view_copy", "_unsafe_view", "view", "reshape", "expand_copy", "squeeze_copy",
    "unsqueeze_copy", "permute_copy", "select_copy", "slice_copy", "alias_copy", "clone",
    "_to_dim_order_copy", "_clone_dim_order", "_to_copy", "t_copy", "transpose_copy", "cat",
    "split_copy", "split_with_sizes_copy", "unbind_copy", "executorch_call_delegate",
    "_assert_tensor_metadata", "sym_size", "detach_copy",
}
# Ops that carry nearly all the arithmetic of these graphs.
_HEAVY = {"convolution", "linear", "addmm", "mm", "bmm", "matmul"}


def _require_executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes.constant_prop_pass import constant_prop_pass
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            f"ExecuTorch export needs the executorch package ({e}): pip install 'sam2-edge[executorch]'") from None
    return XnnpackPartitioner, ExecutorchBackendConfig, to_edge_transform_and_lower, constant_prop_pass


# --------------------------------------------------------------------------- rewrites
def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if is_causal or dropout_p != 0.0 or enable_gqa or q.dim() < 3 or k.shape[:-2] != q.shape[:-2]:
        return NotImplemented  # not used by the stages; keep torch's own decomposition
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return NotImplemented
    lead = list(q.shape[:-2])
    n, m, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    s = scale if scale is not None else 1.0 / math.sqrt(d)
    # 3-D bmm: a 4-D matmul decomposes with expand ops that XNNPACK does not take
    q3, k3, v3 = q.reshape(-1, n, d) * s, k.reshape(-1, m, d), v.reshape(-1, m, dv)
    logits = torch.bmm(q3, k3.transpose(1, 2))
    if attn_mask is not None:
        logits = (logits.reshape(lead + [n, m]) + attn_mask).reshape(-1, n, m)
    out = torch.bmm(torch.softmax(logits, dim=-1), v3)
    return out.reshape(lead + [n, dv])


def _mean_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """Mean over the last axis of x viewed as [rows, n], as XNNPACK's 4-D spatial mean:
    returns [1, rows, 1, 1]."""
    return torch.mean(x.reshape(1, -1, n, 1), dim=[2, 3], keepdim=True)


def _mean_dim(x, dim=None, keepdim=False, dtype=None):
    if dtype is not None or dim is None or x.dim() == 0 or not x.dtype.is_floating_point:
        return NotImplemented
    r = x.dim()
    dims = sorted({d % r for d in ([dim] if isinstance(dim, int) else dim)})
    if r == 4 and dims == [2, 3] and keepdim:
        return NotImplemented  # already XNNPACK's form
    kept = [d for d in range(r) if d not in dims]
    n = 1
    for d in dims:
        n *= x.shape[d]
    xt = x.permute(*kept, *dims) if kept + dims != list(range(r)) else x
    m = _mean_rows(xt, n)
    shape = [1 if d in dims else x.shape[d] for d in range(r)] if keepdim else [x.shape[d] for d in kept]
    return m.reshape(shape)


def _layer_norm_stats(x, normalized_shape, weight, bias, eps):
    """(y, mean, rstd) with the means as XNNPACK 4-D means over [1, rows, n, 1]."""
    n = 1
    for s in normalized_shape:
        n *= s
    k = x.dim() - len(normalized_shape)
    x4 = x.reshape(1, -1, n, 1)
    mu = torch.mean(x4, dim=[2, 3], keepdim=True)
    d = x4 - mu
    rstd = torch.rsqrt(torch.mean(d * d, dim=[2, 3], keepdim=True) + eps)
    y = (d * rstd).reshape(x.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    stat_shape = list(x.shape[:k]) + [1] * len(normalized_shape)
    return y, mu.reshape(stat_shape), rstd.reshape(stat_shape)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return _layer_norm_stats(x, normalized_shape, weight, bias, eps)[0]


def _native_layer_norm(x, normalized_shape, weight, bias, eps):
    return _layer_norm_stats(x, normalized_shape, weight, bias, eps)


def _select(x, dim, index):
    d = dim % x.dim()
    i = index % x.shape[d]
    shape = [s for j, s in enumerate(x.shape) if j != d]
    return torch.ops.aten.slice.Tensor(x, d, i, i + 1).reshape(shape)


def _unbind(x, dim=0):
    d = dim % x.dim()
    shape = [s for j, s in enumerate(x.shape) if j != d]
    return [torch.ops.aten.slice.Tensor(x, d, i, i + 1).reshape(shape) for i in range(x.shape[d])]


def _upsample_nearest2d(x, output_size=None, scale_factors=None):
    """Nearest upsampling by integer factors as an exact copy (4-D cat + reshape)."""
    if x.dim() != 4:
        return NotImplemented
    b, c, h, w = x.shape
    if output_size is not None:
        oh, ow = output_size
    elif scale_factors is not None:
        oh, ow = int(h * scale_factors[0]), int(w * scale_factors[1])
    else:
        return NotImplemented
    if oh % h or ow % w:
        return NotImplemented
    fh, fw = oh // h, ow // w
    if scale_factors is not None and (scale_factors[0] != fh or scale_factors[1] != fw):
        return NotImplemented  # non-integer factors index differently
    if not (1 <= fh <= 5 and 1 <= fw <= 5):
        return NotImplemented  # XNNPACK concatenates at most 5 tensors
    # each copy is its own reshape node: XNNPACK's cat counts distinct input nodes
    y = x
    if fw > 1:
        y = torch.cat([y.reshape(1, b * c * h, w, 1) for _ in range(fw)], dim=3)  # [1, bch, w, fw]
    if fh > 1:
        y = torch.cat([y.reshape(1, b * c * h, 1, ow) for _ in range(fh)], dim=2)  # [1, bch, fh, ow]
    return y.reshape(b, c, oh, ow)


def _expand(x, size, implicit=False):
    """expand to the tensor's own shape (e.g. `pos.expand(b, -1, -1)` at batch 1) is a no-op;
    the portable expand_copy kernel would copy it."""
    if len(size) == x.dim() and all(s == -1 or s == d for s, d in zip(size, x.shape)):
        return x.view(x.shape)
    return NotImplemented


def _alias(x):
    """alias (a full-range slice, a repeat by 1) becomes a portable alias_copy, which copies
    and splits the delegate; a same-shape view stays inside XNNPACK."""
    return x.view(x.shape)


def _decompositions(keep: Sequence[torch._ops.OpOverload] = ()) -> Dict[torch._ops.OpOverload, Callable]:
    """The core-ATen table plus the rewrites above; `keep`: ops left whole (those the XNNPACK
    partitioner matches undecomposed: linear, max_pool2d, upsample_bilinear2d, ...)."""
    table = torch.export.default_decompositions()
    for op in keep:
        table.pop(op, None)
    table[aten.scaled_dot_product_attention.default] = _sdpa
    table[aten.layer_norm.default] = _layer_norm
    table[aten.native_layer_norm.default] = _native_layer_norm
    table[aten.mean.dim] = _mean_dim
    table[aten.select.int] = _select
    table[aten.unbind.int] = _unbind
    table[aten.upsample_nearest2d.vec] = _upsample_nearest2d
    table[aten.expand.default] = _expand
    table[aten.alias.default] = _alias
    return table


# --------------------------------------------------------------------------- fp16
class _Half(nn.Module):
    """Runs a float16 graph module with float32 inputs/outputs (integer tensors untouched)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: torch.Tensor):
        out = self.module(*[a.half() if a.is_floating_point() else a for a in args])
        if isinstance(out, torch.Tensor):
            return out.float()
        return tuple(o.float() if o.is_floating_point() else o for o in out)


def _retarget_dtype(node) -> None:
    """float32 -> float16 in a node's `dtype` argument (casts, factory ops)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return
    for i, arg in enumerate(schema.arguments):
        if arg.name != "dtype":
            continue
        if i < len(node.args) and node.args[i] == torch.float32:
            node.args = node.args[:i] + (torch.float16,) + node.args[i + 1:]
        elif node.kwargs.get("dtype") == torch.float32:
            node.kwargs = {**node.kwargs, "dtype": torch.float16}


def _feeds_only_sums(node) -> bool:
    """A float32 cast whose every user is a sum: a count (the decoder's stability score
    counts up to (S/4)^2 = 65536 pixels; float16 is exact only to 2048 and overflows at
    65504), kept in float32 together with what is computed from it."""
    users = list(node.users)
    return bool(users) and all(u.op == "call_function" and getattr(u.target, "__name__", "").startswith("sum")
                               for u in users)


def _half_module(module: nn.Module, example_inputs: Tuple[torch.Tensor, ...]) -> nn.Module:
    """The stage as a float16 graph with float32 I/O. The model code pins float32 in a few
    places (`.float()` of flags, float32 factory tensors); tracing it once in float32 and
    retargeting those dtype arguments in the graph leaves the model code untouched."""
    import copy

    # a deep copy: the unlifted module shares its Parameter objects with `module`
    gm = copy.deepcopy(torch.export.export(module, example_inputs, strict=False).module())
    for node in gm.graph.nodes:
        if node.op == "call_function" and not _feeds_only_sums(node):
            _retarget_dtype(node)
    gm.recompile()
    gm = gm.half()
    for name, val in list(vars(gm).items()):  # constants kept as plain tensor attributes
        if isinstance(val, torch.Tensor) and val.dtype == torch.float32:
            setattr(gm, name, val.half())
    for node in gm.graph.nodes:  # and any nested ones
        if node.op == "get_attr":
            owner, _, leaf = node.target.rpartition(".")
            obj = gm.get_submodule(owner) if owner else gm
            val = getattr(obj, leaf)
            if isinstance(val, torch.Tensor) and val.dtype == torch.float32:
                if isinstance(val, nn.Parameter):
                    val.data = val.data.half()
                else:
                    setattr(obj, leaf, val.half())
    return _Half(gm)


# --------------------------------------------------------------------------- statistics
def _op_name(node) -> str:
    t = node.target
    schema = getattr(t, "_schema", None)
    if schema is not None:  # OpOverload / EdgeOpOverload: "aten::convolution" -> "convolution"
        return schema.name.split("::")[-1]
    return getattr(t, "__name__", str(t))


def _call_ops(graph) -> List[str]:
    return [_op_name(n) for n in graph.nodes if n.op == "call_function"]


def delegation_stats(edge_program) -> dict:
    """Counts of the ops inside XNNPACK delegates vs. left to portable kernels in a lowered
    edge program. `delegated_share`: delegated compute ops / all compute ops (pure data
    movement and graph plumbing, see _STRUCTURAL, not counted); `heavy_delegated_share`:
    the same for convolution / linear / matmul ops alone."""
    gm = edge_program.graph_module
    inside: Counter = Counter()
    n_delegates = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and _op_name(node) == "executorch_call_delegate":
            n_delegates += 1
            lowered = getattr(gm, node.args[0].target)
            inside.update(_call_ops(lowered.original_module.graph))
    outside = Counter(o for o in _call_ops(gm.graph) if o not in ("getitem", "executorch_call_delegate"))

    def compute(c: Counter) -> int:
        return sum(v for k, v in c.items() if k not in _STRUCTURAL)

    def heavy(c: Counter) -> int:
        return sum(v for k, v in c.items() if k in _HEAVY)

    ci, co, hi, ho = compute(inside), compute(outside), heavy(inside), heavy(outside)
    ai, ao = sum(inside.values()), sum(outside.values())
    return {
        "delegate": "XnnpackBackend",
        "delegates": n_delegates,
        "delegated_share": round(ci / max(1, ci + co), 4),
        "delegated_compute_ops": ci,
        "portable_compute_ops": co,
        "heavy_delegated_share": round(hi / max(1, hi + ho), 4),
        "delegated_share_all_ops": round(ai / max(1, ai + ao), 4),
        "delegated_ops": ai,
        "portable_ops": ao,
        "portable_op_kinds": dict(sorted(outside.items())),
    }


# --------------------------------------------------------------------------- export
def lower_stage(module: nn.Module, example_inputs: Tuple[torch.Tensor, ...], precision: str = "fp32"):
    """(edge program manager after XNNPACK lowering, delegation stats)."""
    _require_executorch()
    precision = Precision.parse(precision, "executorch").value
    module = module.eval()
    # contiguous: a strided example input (e.g. a numpy view) would export a non-default dim order
    example_inputs = tuple(t.detach().contiguous().clone() for t in example_inputs)
    with torch.no_grad():
        if precision == "fp16":
            module = _half_module(module, tuple(example_inputs))
        ep = torch.export.export(module, tuple(example_inputs), strict=False)
    return lower_program(ep)


def lower_program(ep):
    """An exported program (float, or PT2E-quantised: its quantize / dequantize ops are what
    XNNPACK's quantised kernels match) through the rewrites above, constant folding and XNNPACK
    lowering: (edge program manager, delegation stats)."""
    XnnpackPartitioner, _, to_edge_transform_and_lower, constant_prop_pass = _require_executorch()
    with torch.no_grad():
        partitioner = XnnpackPartitioner()
        keep, _ = partitioner.ops_to_not_decompose(ep)
        ep = ep.run_decompositions(_decompositions(keep))
        ep = constant_prop_pass(ep, custom_skip_targets=_const_prop_skip())
        edge = to_edge_transform_and_lower(ep, partitioner=[partitioner])
    return edge, delegation_stats(edge.exported_program())


def _const_prop_skip():
    """constant_prop_pass's default skip set (edge ops) plus the ATen-level quantize / dequantize
    ops: folded before to_edge, the dequantize of an int8 weight would become a float weight and
    XNNPACK would get no quantised pattern. A float graph has none of them (unchanged for it)."""
    from executorch.exir.operator.util import _QUANT_PRIMITIVES
    from executorch.exir.passes.constant_prop_pass import _DEFAULT_SKIP_TARGETS

    return set(_DEFAULT_SKIP_TARGETS) | set(_QUANT_PRIMITIVES)


def write_program(edge, path: Path) -> Path:
    """The lowered program as a `.pte` file at `path` (written to a sibling, then renamed)."""
    _, ExecutorchBackendConfig, _, _ = _require_executorch()
    path = Path(path)
    prog = edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        prog.write_to_file(f)
    tmp.replace(path)
    return path


def export_stage(module: nn.Module, example_inputs: Sequence[torch.Tensor], input_names: List[str],
                 output_names: List[str], path: Path, precision: str = "fp32") -> dict:
    """Write `path` (.pte) for one stage and return its manifest info (delegation, timing)."""
    _require_executorch()
    import executorch

    path = Path(path)
    example_inputs = tuple(example_inputs)
    if len(input_names) != len(example_inputs):
        raise ValueError(f"{len(input_names)} input names for {len(example_inputs)} example inputs")
    t0, c0 = time.perf_counter(), time.process_time()
    edge, stats = lower_stage(module, example_inputs, precision)
    n_out = len(edge.exported_program().graph_signature.user_outputs)
    if n_out != len(output_names):
        raise ValueError(f"the graph has {n_out} outputs, {len(output_names)} output names given")
    write_program(edge, path)
    return {
        "format": "executorch",
        "executorch_version": getattr(executorch, "__version__", None) or _dist_version("executorch"),
        "precision": precision,
        "io_dtype": "float32/int32",
        "compute_dtype": "float16" if precision == "fp16" else "float32",
        "inputs": list(input_names),
        "outputs": list(output_names),
        "export_seconds": round(time.perf_counter() - t0, 2),
        "export_cpu_seconds": round(time.process_time() - c0, 2),
        "bytes": path.stat().st_size,
        **stats,
    }


def _dist_version(name: str):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover
        return None
