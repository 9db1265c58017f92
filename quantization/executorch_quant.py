"""`quantize(..., fmt="executorch")`: a checkpoint -> an int8 / int8-dynamic ExecuTorch bundle
(XNNPACK) with a measured fidelity report, in the schema of the ONNX flow (`pipeline.py`).

Why the library flow: ExecuTorch's own quantisation path is PT2E -- `torch.export` the stage,
`prepare_pt2e` with ExecuTorch's `XNNPACKQuantizer` (it annotates exactly the patterns XNNPACK
has int8 kernels for), calibrate, `convert_pt2e` (quantize / dequantize ops around the float
ops), then lower with the XNNPACK partitioner, which matches those Q/DQ patterns onto XNNPACK's
quantised kernels. A hand-written quantiser (or quantising an ONNX graph) would produce patterns
the partitioner does not recognise, so this flow starts from the torch module (a checkpoint, never
a bundle) and uses the library end to end: `torchao.quantization.pt2e.quantize_pt2e`
(prepare_pt2e / convert_pt2e) with `executorch.backends.xnnpack.quantizer.XNNPACKQuantizer`
(`get_symmetric_quantization_config(is_per_channel=True, is_dynamic=...)`).

* ``int8``: static W8A8 -- int8 weights per output channel, int8 activations with ranges from the
  calibration samples (the quantizer's HistogramObserver); XNNPACK qs8 kernels.
* ``int8-dynamic``: int8 weights per output channel, activations quantised at run time
  (XNNPACK qd8-f32-qc8w kernels); nothing to calibrate.

1. Checks before any work: precision / format (done by `pipeline.quantize`), the output folder,
   the input (a checkpoint file; a bundle is refused: PT2E needs the torch module), the
   calibration frames.
2. The fp32 ExecuTorch bundle (`export_bundle`, temporary): its manifest is the template of the
   new one, its graphs the fallback of a stage kept fp32 and the size reference. What is
   quantised is the same form its graphs trace: memory attention with folded values
   (`fold_memory_values`, exact; P.V at the memory width 64, no value projection of the memory
   tokens) -- unfolded, the int8 memory attention of tiny @ 1024 ran 1.74x slower than the
   folded fp32 one.
3. Calibration: the fp32 tracker (torch backend, eager stages) runs over the frames with automatic
   prompts; every stage's inputs are recorded (`calibration.py`).
4. Per stage: the policy (module groups and op kinds kept float; chosen from the sensitivity
   analysis with `analyze`), PT2E quantisation, lowering to XNNPACK, then the `.pte` run by the
   ExecuTorch runtime vs the fp32 eager stage on calibration and held-out inputs; a stage that
   misses `pipeline.STAGE_TARGETS` is shipped as its fp32 lowered graph, the reason written.
5. End to end, report, plot and manifest exactly as `pipeline.py` (its helpers are imported).

Application layer (it runs the tracker).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..contract import STAGES, Precision, load_manifest
from ..errors import BackendUnavailableError, ConfigError, InputError
from ..progress import Progress
from . import fidelity as fid
from .onnx_quant import StagePolicy, _group_of
from .pipeline import (write_quantized_bundle, QuantizeResult, _OUT_KIND, _own_bundle, _summary, analyzed_policy,
                       calibration_info, missed_targets, quantization_extra, sensitivity, stage_entry, stage_report,
                       track_end_to_end)

log = logging.getLogger(__name__)

# op kinds quantised by default: the weighted ones (the quantizer could also take add / mul / cat)
STATIC_KINDS = ("linear", "conv")
# dynamic: linear only -- with conv annotated, XNNPACK's lowering fails (executorch 1.5.1:
# ChannelsLastTaggedReshapePass "required rank 4 tensor to use channels_last format")
DYNAMIC_KINDS = ("linear",)
# never annotated by the XNNPACKQuantizer (no int8 pattern): they always run in float
FLOAT_OPS = ["layer_norm", "softmax", "scaled_dot_product_attention (attention scores: QK^T, PV)", "gelu",
             "(every op kind not in op_types_quantized)"]
# default float module groups: the mask logits (final upscaling) and the presence decision (the sign of
# the object score) stay float, as in the ONNX flow
DEFAULT_FLOAT_GROUPS: Dict[str, Tuple[str, ...]] = {
    "image_encoder": (),
    "memory_attention": (),
    "mask_decoder": ("sam_mask_decoder.output_upscaling", "sam_mask_decoder.pred_obj_score_head"),
    "memory_encoder": (),
}
METHOD = {
    Precision.INT8: "PT2E (torch.export -> torchao prepare_pt2e / convert_pt2e) with ExecuTorch's XNNPACKQuantizer: "
                    "static, int8 per-channel symmetric weights, int8 activations (HistogramObserver calibration); "
                    "lowered to XNNPACK",
    Precision.INT8_DYNAMIC: "PT2E (torch.export -> torchao prepare_pt2e / convert_pt2e) with ExecuTorch's "
                            "XNNPACKQuantizer: dynamic, int8 per-channel symmetric weights, int8 activations "
                            "quantised at run time; lowered to XNNPACK",
}


def default_policy(stage: str, precision: Precision) -> StagePolicy:
    kinds = STATIC_KINDS if precision is Precision.INT8 else DYNAMIC_KINDS
    return StagePolicy(precision.value, kinds, DEFAULT_FLOAT_GROUPS.get(stage, ()))


def policy_dict(policy: StagePolicy) -> dict:
    """The policy as the report / manifest write it (op kinds of the PT2E graph, not ONNX op types)."""
    return {**policy.to_dict(), "float_op_types": FLOAT_OPS}


def _imports():
    try:
        import torch
        from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ModuleNotFoundError as e:
        raise BackendUnavailableError(f"quantising ExecuTorch bundles needs {e.name!r} (torch, executorch, torchao): "
                                      "pip install 'sam2-edge[executorch]'") from None
    return torch, xq, prepare_pt2e, convert_pt2e


# ------------------------------------------------------------------------------------ PT2E per stage
# op kind -> the name of the XNNPACKQuantizer's set of targets for it (xnnpack_quantizer module)
_KIND_TARGETS = (("linear", "LINEAR_TARGETS"), ("conv", "CONV_TARGETS"), ("conv_transpose", "CONV_TRANSPOSE_TARGETS"),
                 ("add", "ADD_TARGETS"), ("mul", "MUL_TARGETS"), ("cat", "CAT_TARGETS"),
                 ("adaptive_avg_pool2d", "ADAPTIVE_AVG_POOL2D_TARGETS"))


def _kind(node, xq) -> Optional[str]:
    """The op kind of a graph node the XNNPACKQuantizer can annotate (None: it never does)."""
    for kind, targets in _KIND_TARGETS:
        if node.target in getattr(xq, targets):
            return kind
    return None


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v[0] for v in stack.values() if isinstance(v, tuple) and v and isinstance(v[0], str)]
    return max(paths, key=len) if paths else ""


def _group(node) -> str:
    """The node group: the first two components of its module path (`sam_mask_decoder.output_upscaling`)."""
    path = _module_path(node)
    return _group_of(path if path.startswith("model.") else f"model.{path}")


class StageQuantizer:
    """One stage through PT2E under a policy: export once, then for each policy prepare_pt2e with
    the XNNPACKQuantizer (a filter keeps the policy's float groups and op kinds out), calibrate on
    the recorded samples, convert_pt2e. Also the object `pipeline.sensitivity` drives."""

    def __init__(self, stage: str, module, example: Tuple, calibration: Sequence[Tuple], precision: Precision):
        torch, xq, _, _ = _imports()
        self.torch, self.xq = torch, xq
        self.stage = stage
        self.example = tuple(t.detach().contiguous().clone() for t in example)
        self.calibration = list(calibration)
        self.dynamic = precision is Precision.INT8_DYNAMIC
        with torch.no_grad():
            self.program = torch.export.export(module.eval(), self.example, strict=False)
        kinds = sorted({k for n in self.program.graph.nodes if n.op == "call_function"
                        for k in [_kind(n, xq)] if k is not None})
        # what pipeline.sensitivity reads: the op kinds present (as ONNX nodes' op_type)
        self.model = SimpleNamespace(graph=SimpleNamespace(node=[SimpleNamespace(op_type=k) for k in kinds]))
        self.converted: Dict[str, object] = {}  # probe path -> converted module (sensitivity)

    def groups(self, op_kinds: Sequence[str]) -> Dict[str, str]:
        """node name -> group of every quantisable node of `op_kinds`."""
        return {n.name: _group(n) for n in self.program.graph.nodes
                if n.op == "call_function" and _kind(n, self.xq) in op_kinds}

    def _quantizer(self, policy: StagePolicy, record: dict):
        xq = self.xq
        anchors = {k for k, _ in _KIND_TARGETS}

        def keep(node) -> bool:  # True: the quantizer may annotate this node
            if node.op != "call_function":  # weights, biases, inputs: decided by the op that uses them
                return True
            kind = _kind(node, xq)
            group = _group(node)
            if policy.only_groups is not None and group not in policy.only_groups:
                return False
            if group in policy.float_groups:
                return False
            return kind not in anchors or kind in policy.op_types

        class _Quantizer(xq.XNNPACKQuantizer):
            def transform_for_annotation(self, model):
                # the base turns every scalar operand of add / mul into a float32 constant; on an
                # integer op (argmax + 1: an index) that makes the index float. Put those scalars back.
                model = super().transform_for_annotation(model)
                changed = False
                for n in model.graph.nodes:
                    val = n.meta.get("val")
                    if n.op != "call_function" or _kind(n, xq) not in ("add", "mul") or val is None \
                            or val.dtype.is_floating_point:
                        continue
                    args = []
                    for a in n.args:
                        if getattr(a, "op", None) == "get_attr" and a.target.startswith("_tensor_constant_"):
                            v = float(getattr(model, a.target))
                            a = int(v) if v.is_integer() else v
                            changed = True
                        args.append(a)
                    n.args = tuple(args)
                if changed:
                    model.graph.eliminate_dead_code()
                    model.recompile()
                return model

            def annotate(self, model):
                model = super().annotate(model)
                q, f = [], []
                for n in model.graph.nodes:
                    kind = _kind(n, xq) if n.op == "call_function" else None
                    if kind is None:
                        continue
                    ann = n.meta.get("quantization_annotation")
                    name = f"{_module_path(n) or '?'}:{kind}"
                    (q if ann is not None and getattr(ann, "_annotated", False) else f).append(name)
                record["quantized"], record["float"] = q, f
                return model

        cfg = xq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=self.dynamic)
        quantizer = _Quantizer().set_global(cfg)
        quantizer.set_filter_function(keep)
        return quantizer

    def quantize(self, policy: StagePolicy, probe: Optional[Path] = None):
        """(converted module, info) under `policy`; with `probe` (the sensitivity analysis), the
        module is also kept under that name for `measure`."""
        torch = self.torch
        _, _, prepare_pt2e, convert_pt2e = _imports()
        record: dict = {}
        prepared = prepare_pt2e(self.program.module(), self._quantizer(policy, record))
        with torch.no_grad():
            for args in (self.calibration[:1] if self.dynamic else self.calibration):
                prepared(*args)
            converted = convert_pt2e(prepared)
        quantized = sorted(set(record.get("quantized", ())))
        info = {"quantized_nodes": len(record.get("quantized", ())), "quantized": quantized,
                "float_nodes": sorted(set(record.get("float", ()))), "quant_ops": _quant_ops(converted)}
        if probe is not None:
            self.converted[str(probe)] = converted
        return info if probe is not None else (converted, info)

    def run(self, module, samples: Sequence[Tuple]) -> List[Tuple[np.ndarray, ...]]:
        out = []
        with self.torch.no_grad():
            for args in samples:
                r = module(*args)
                r = (r,) if isinstance(r, self.torch.Tensor) else tuple(r)
                out.append(tuple(t.detach().float().numpy() if t.is_floating_point() else t.numpy() for t in r))
        return out

    def lower(self, module, path: Path) -> dict:
        """The converted module lowered to XNNPACK and written as `path` (.pte); the delegation stats."""
        from ..export.executorch_export import lower_program, write_program

        torch = self.torch
        with torch.no_grad():
            ep = torch.export.export(module, self.example, strict=False)
        edge, stats = lower_program(ep)
        write_program(edge, path)
        return stats


def _quant_ops(gm) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function":
            name = str(n.target)
            if name.startswith("quantized_decomposed."):
                key = name.split(".")[1]
                out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------ the flow
def _check_options(**values) -> None:
    lows = {"calib_frames": 2, "holdout_frames": 1, "objects": 1, "max_samples": 1}
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < lows[name]:
            raise ConfigError(f"{name} must be an integer >= {lows[name]}, got {v!r}")


def _check_source(src: Path, p: Precision) -> None:
    if not src.exists():
        raise InputError(f"--checkpoint {str(src)!r} does not exist; give a SAM 2 checkpoint (.pt)")
    if src.is_dir():
        try:
            m = load_manifest(src)
            what = f"{'an' if m.format[0] in 'aeio' else 'a'} {m.format} {Precision(m.precision).value} bundle"
        except Exception:  # noqa: BLE001 - any folder: the fix is the same
            what = "a folder"
        raise ConfigError(f"{str(src)!r} is {what}; an executorch bundle cannot be {p.value}-quantised from a "
                          "bundle: PT2E quantises the torch module, so give the checkpoint (.pt) it was exported "
                          "from (--checkpoint MODEL.pt)")


def quantize_bundle(source, out, precision: Precision, *, calib: Optional[str] = None, calib_frames: int = 16,
                    holdout_frames: int = 8, objects: int = 2, analyze: bool = False, variant: Optional[str] = None,
                    image_size: Optional[int] = None, cond_slots: int = 2, max_samples: int = 48,
                    show_progress: Optional[bool] = None, threads: int = 0,
                    sign_key: Optional[str] = None, bench: bool = False) -> QuantizeResult:
    """Quantise checkpoint `source` to a `precision` (int8 / int8-dynamic) ExecuTorch bundle in
    `out`; called by `pipeline.quantize(fmt="executorch")` (which checked the precision and,
    with `bench`, that the runtime is here)."""
    t_start = time.perf_counter()
    p = Precision(precision)
    _check_options(calib_frames=calib_frames, holdout_frames=holdout_frames, objects=objects, max_samples=max_samples)
    from ..outputs import check_dir

    out = check_dir(out, "--out", _own_bundle, _OUT_KIND)
    src = Path(source)
    _check_source(src, p)
    from .calibration import auto_prompts, load_frames, split_samples, track_clip

    frames, calib_src = load_frames(calib, calib_frames + holdout_frames)
    h, w = frames[0].shape[:2]
    prompts = auto_prompts(w, h, objects)
    torch = _imports()[0]

    from ..export import export_bundle
    from ..quiet import quiet
    from ..runtimes.backends.executorch_backend import ExecuTorchBackend
    from ..runtimes.backends.torch_backend import TorchBackend

    work = Path(tempfile.mkdtemp(prefix="sam2-edge-quantize-et-"))
    try:
        # the fp32 bundle: the manifest template, the fallback graphs, the sizes to compare with
        fp32_dir = export_bundle(str(src), str(work / "fp32"), format="executorch", precision="fp32", variant=variant,
                                 image_size=image_size, cond_slots=cond_slots, show_progress=show_progress)
        m32 = load_manifest(fp32_dir)
        log.info("fp32 executorch export %.1f s", time.perf_counter() - t_start)
        from ..checkpoint import load_checkpoint

        model, _ = load_checkpoint(str(src), variant, image_size)
        fp32 = TorchBackend(model, "cpu", cond_slots)  # the reference: eager stages, official form
        # what is quantised: the stages with memory attention's values folded (P.V at the memory
        # width, modeling/memory_attention.py), the exact form the fp32 ExecuTorch bundle runs
        import copy

        from ..modeling.memory_attention import fold_memory_values

        from ..stages import build_stages

        folded_model = copy.deepcopy(model).eval()
        folded = fold_memory_values(folded_model)
        to_quantize = dict(zip(STAGES, build_stages(folded_model)))
        log.info("memory attention: values folded in %d cross-attentions of the graphs quantised", folded)
        spec = fp32.spec
        if spec != m32.spec:
            raise ConfigError(f"the fp32 export's spec {m32.spec} differs from the model's {spec}")
        io = spec.io()
        in_names = {s: [t.name for t in io[s][0]] for s in STAGES}
        out_names = {s: [t.name for t in io[s][1]] for s in STAGES}

        t0 = time.perf_counter()
        ref_run = track_clip(fp32, frames, prompts, record=True)
        record_s = time.perf_counter() - t0
        log.info("fp32 tracker over %d frames (recording) %.1f s", len(frames), record_s)
        data = split_samples(ref_run.samples, in_names, calib_frames, max_samples)
        for stage in STAGES:
            for k in ("calibration", "held_out"):
                if not data[stage][k]:
                    raise InputError(f"the calibration run gave no {stage} samples on {k.replace('_', '-')} frames; "
                                     "give a longer video or raise --calib-frames / --holdout-frames")
        arrays = {s: {k: [tuple(d[n] for n in in_names[s]) for d in data[s][k]] for k in ("calibration", "held_out")}
                  for s in STAGES}
        tensors = {s: {k: [tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in x) for x in v]
                       for k, v in arrays[s].items()} for s in STAGES}
        ref = {s: {k: [fp32.run(s, x) for x in v] for k, v in arrays[s].items()} for s in STAGES}

        qdir = work / "graphs"
        qdir.mkdir()
        stages_report: Dict[str, dict] = {}
        analysis: Dict[str, List[dict]] = {}
        policies: Dict[str, StagePolicy] = {}
        infos: Dict[str, dict] = {}
        with quiet(), Progress(len(STAGES), f"quantize {m32.variant} -> executorch {p.value}",
                               enabled=show_progress) as bar:
            for stage in STAGES:
                sq = StageQuantizer(stage, to_quantize[stage], tensors[stage]["calibration"][0],
                                    tensors[stage]["calibration"], p)
                policy = default_policy(stage, p)
                if analyze:
                    def measure(pol, probe, sets=("held_out",), sq=sq, stage=stage):
                        mod = sq.converted.pop(str(probe))
                        return {k: fid.compare_outputs(out_names[stage], ref[stage][k],
                                                       sq.run(mod, tensors[stage][k])) for k in sets}

                    analysis[stage] = sensitivity(sq, policy, measure, qdir / f"{stage}.probe")
                    policy = analyzed_policy(policy, analysis[stage])
                t0 = time.perf_counter()
                converted, info = sq.quantize(policy)
                t1 = time.perf_counter()
                info["lowering"] = sq.lower(converted, qdir / f"{stage}.pte")
                log.info("%s: PT2E %.1f s, XNNPACK lowering %.1f s, %d nodes quantised", stage, t1 - t0,
                         time.perf_counter() - t1, info["quantized_nodes"])
                policies[stage], infos[stage] = policy, info
                bar.update(1, stage)

            # each lowered stage run by the ExecuTorch runtime vs the fp32 eager stage; the gate
            def measure_pte(stage: str) -> dict:
                backend = ExecuTorchBackend(spec, {s: qdir / f"{s}.pte" for s in STAGES}, threads=threads or None)
                return {k: fid.compare_outputs(out_names[stage], ref[stage][k],
                                               [backend.run(stage, x) for x in arrays[stage][k]])
                        for k in ("calibration", "held_out")}

            for stage in STAGES:
                res = measure_pte(stage)
                policy = policies[stage]
                why = missed_targets(res, "stage kept fp32 (its fp32 lowered graph)")
                if why:
                    log.warning("%s: %s", stage, why)
                    missed = {"policy": policy_dict(policy), **{k: _summary(v) for k, v in res.items()}}
                    policy = replace(policy, fp32=True, reason=why)
                    shutil.copyfile(m32.graphs[stage].path, qdir / f"{stage}.pte")
                    infos[stage] = {"quantized_nodes": 0, "float_nodes": sorted(infos[stage]["float_nodes"] +
                                                                     infos[stage]["quantized"]), "quant_ops": {},
                                    "lowering": {k: v for k, v in m32.graphs[stage].extra.items()
                                                 if k.startswith(("delegat", "heavy", "portable"))}}
                    res = measure_pte(stage)
                    res["quantized_attempt"] = missed
                policies[stage] = policy
                stages_report[stage] = stage_entry(policy_dict(policy), infos[stage],
                                                   {k: len(arrays[stage][k]) for k in ("calibration", "held_out")}, res)

        # end to end: the quantised tracker (ExecuTorch runtime) against the fp32 tracker
        graph_files = {s: qdir / f"{s}.pte" for s in STAGES}
        e2e = track_end_to_end(ExecuTorchBackend(spec, graph_files, threads=threads or None), ref_run, frames, prompts,
                               calib_frames)
        report = stage_report(
            p, "executorch", m32, graph_files, stages_report, e2e, analysis, method=METHOD[p],
            calibration=calibration_info(calib_src, calib_frames, holdout_frames, objects, prompts, record_s,
                                         "fixed frames and prompts; histogram ranges; no random sampling",
                                         reference="fp32 eager stages (torch backend)"))

        def extra_of(s: str, fpath: Path) -> dict:
            g = m32.graphs[s]
            extra = {k: v for k, v in dict(g.extra).items() if k in ("format", "executorch_version", "io_dtype")}
            extra.update(infos[s]["lowering"])
            extra["precision"] = policies[s].to_dict()["precision"]
            extra["quant_ops"] = infos[s]["quant_ops"]
            extra["source_sha256"] = g.sha256
            extra["quantization"] = quantization_extra(policy_dict(policies[s]), infos[s], stages_report[s])
            return extra

        from ..export.bundle import library_versions

        libraries = library_versions()
        try:
            from importlib.metadata import version

            libraries["torchao"] = version("torchao")
        except Exception:  # noqa: BLE001 - informational only
            pass
        from .speed import BenchRequest

        final = write_quantized_bundle(out, m32, p, graph_files, extra_of, report,
                                       "sam2_edge.quantization.executorch_quant", t_start, libraries=libraries,
                                       sign_key=sign_key,
                                       bench=BenchRequest(Path(fp32_dir), calib, threads) if bench else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("quantized executorch bundle %s (%s) in %.1f s", final, p.value, time.perf_counter() - t_start)
    return QuantizeResult(final, report)


__all__ = ["quantize_bundle", "StageQuantizer", "default_policy", "policy_dict", "DEFAULT_FLOAT_GROUPS", "METHOD"]
