"""`quantize(fmt="coreml")`: a checkpoint (or a float CoreML bundle) -> a CoreML bundle whose
weights are compressed with coremltools.optimize.coreml, with a weight-level fidelity report.

Precisions (weight-only: the program's compute precision stays the source's, fp16 for the
default export, so the Neural Engine still runs fp16 activations):

* ``int8``: linear symmetric int8 weights, one scale per output channel
  (``OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel")``,
  ``linear_quantize_weights``) -> ``constexpr_affine_dequantize`` ops (iOS 16+).
* ``palettize4`` / ``palettize6`` / ``palettize8``: k-means palettisation, each weight an
  N-bit index into a lookup table of 2^N values (``OpPalettizerConfig(mode="kmeans")``,
  ``palettize_weights``) -> ``constexpr_lut_to_dense`` ops.

**Deployment target and granularity.** ``export/coreml_export.py`` converts with minimum
deployment target iOS 17 / macOS 14 (specification version 8). iOS 17's
``constexpr_lut_to_dense`` holds ONE lookup table per weight tensor, so on those bundles
palettisation is per tensor. A lookup table per group of ``GROUP_SIZE`` output channels
(``granularity="per_grouped_channel"``, iOS 18's op) needs iOS 18 / macOS 15 (specification
version >= 9); it is used automatically when the source package targets iOS 18 or newer
(coremltools refuses it below: "re-convert your model with minimum_deployment_target >= iOS18").
int8 is per output channel on every target.

**Policy** (which weights are compressed; the rest stay float, the reason recorded per weight):

* only the weight operand of ``conv`` / ``conv_transpose`` / ``linear`` / ``matmul`` is a
  candidate: biases, LayerNorm gains and shifts, embedding tables, learned tokens,
  positional-encoding tables and constant-folded tensors stay float (they are added to or scale
  activations directly, and are a few % of the bytes);
* weights under ``MIN_WEIGHT_ELEMENTS`` elements stay float (nothing to gain);
* ``FLOAT_GROUPS`` (the object-score head: its sign is the presence decision) stay float;
* measured: every compressed weight is read back from the compressed program (its
  constexpr op expanded) and compared with the float weight; a weight whose reconstruction
  SQNR is below ``MIN_WEIGHT_SQNR_DB[precision]`` is kept float (second compression pass).
* ``analyze=True`` also compresses every float-kept candidate once (probe pass) and reports what
  it would have cost.

**What is measured here and what is not.** CoreML programs run only on macOS, so this module
measures what Linux can: each weight's reconstruction error (cosine, SQNR dB, max abs) and the
sizes. Activation-level and end-to-end numerics (stage outputs, masks) need macOS: there,
`sam2-edge eval --model COMPRESSED_BUNDLE --reference FP16_BUNDLE_OR_CHECKPOINT` (coreml backend).
The calibration options of `quantize` (calib, calib_frames, holdout_frames, objects,
max_samples) are unused: weight-only compression needs no data.

Application layer, like `pipeline` (whose QuantizeResult, report names and output rules it uses).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np

from ..contract import STAGES, Precision, load_manifest
from ..errors import BackendUnavailableError, ConfigError, InputError
from ..progress import Progress
from . import fidelity as fid
from .pipeline import _OUT_KIND, QuantizeResult, _own_bundle, plot_two_panels, stage_ticks, write_quantized_bundle

log = logging.getLogger(__name__)

PALETTE_BITS = {Precision.PALETTIZE4: 4, Precision.PALETTIZE6: 6, Precision.PALETTIZE8: 8}
PRECISIONS = (Precision.INT8, *PALETTE_BITS)
# a lookup table per GROUP_SIZE output channels (iOS 18+); per tensor below
GROUP_SIZE = 16
GROUPED_LUT_SPEC_VERSION = 9  # iOS 18 / macOS 15
# ops whose const operand is a weight (the input name(s) that hold it)
WEIGHT_INPUTS = {"conv": ("weight",), "conv_transpose": ("weight",), "linear": ("weight",), "matmul": ("x", "y")}
NORM_OPS = frozenset({"layer_norm", "batch_norm", "instance_norm", "l2_norm"})
# below this many elements a weight stays float (a few kB: nothing to gain, LUT overhead)
MIN_WEIGHT_ELEMENTS = 2048
# module paths (as in the checkpoint) whose weights stay float
FLOAT_GROUPS = ("sam_mask_decoder.pred_obj_score_head",)
# a compressed weight reconstructed below this SQNR is kept float (measured floor, per precision:
# 8-12 dB under what a Gaussian weight gets: micro and tiny reach ~42 / 20 / 32 / 44 dB for
# int8 / palettize4 / 6 / 8, so only outlier-heavy tensors fall under it)
MIN_WEIGHT_SQNR_DB = {Precision.INT8: 30.0, Precision.PALETTIZE8: 30.0, Precision.PALETTIZE6: 22.0,
                      Precision.PALETTIZE4: 12.0}
_CONSTEXPR_SUFFIXES = ("_palettized", "_quantized")
_SOURCE_KIND = ("a SAM 2 checkpoint (.pt) or an fp16 / fp32 CoreML bundle made by sam2-edge "
                "(sam2-edge export --format coreml)")


def _require_coremltools():
    try:
        import coremltools as ct
        import coremltools.optimize.coreml  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(f"CoreML weight compression needs coremltools ({e}): "
                                      "pip install 'sam2-edge[coreml]'") from None
    return ct


# ------------------------------------------------------------------------------ the program's constants
def _load_program(path: Path):
    """The pymil program of a saved .mlpackage (no CoreML runtime needed)."""
    ct = _require_coremltools()
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.models import utils as model_utils

    model = ct.models.MLModel(str(path), skip_model_load=True)
    return model, model_utils._convert_model_spec_to_pymil_prog(model, model.get_spec().specificationVersion,
                                                                 milproto_load.load)


def _ops(prog):
    def walk(block):
        for op in block.operations:
            yield op
            for b in op.blocks:
                yield from walk(b)

    for f in prog.functions.values():
        yield from walk(f)


def module_path(const_name: str) -> str:
    """The checkpoint-style module path of a const op: `p_model_sam_mask_decoder_..._weight_to_fp16`
    -> `sam_mask_decoder_..._weight` (underscores: the converter flattens the dots)."""
    n = const_name
    for pre in ("p_model_", "p_"):
        if n.startswith(pre):
            n = n[len(pre):]
            break
    return n[:-len("_to_fp16")] if n.endswith("_to_fp16") else n


def weight_table(prog) -> Dict[str, dict]:
    """Every float const of a program with more than one element: name -> {value, role, consumers,
    shape}. role: "weight" (the weight operand of conv / conv_transpose / linear / matmul), "norm"
    (a normalisation's gain / shift) or "constant" (bias, table, token, folded tensor)."""
    out = {}
    for op in _ops(prog):
        if op.op_type != "const":
            continue
        val = op.outputs[0].val
        if not isinstance(val, np.ndarray) or val.size <= 1 or not np.issubdtype(val.dtype, np.floating):
            continue
        consumers = [c for c in op.outputs[0].child_ops]
        role = "constant"
        for c in consumers:
            names = WEIGHT_INPUTS.get(c.op_type, ())
            if any(k in names and getattr(v, "op", None) is op for k, v in c.inputs.items()):
                role = "weight"
                break
            if c.op_type in NORM_OPS:
                role = "norm"
        out[op.name] = {"value": val, "role": role, "consumers": sorted({c.op_type for c in consumers}),
                        "shape": list(val.shape)}
    return out


def expanded_weights(prog) -> Dict[str, np.ndarray]:
    """The dense value of every constexpr (compressed) weight of a program, by the name of the const
    it replaced (coremltools names it `<const>_palettized` / `<const>_quantized`)."""
    out = {}
    for op in _ops(prog):
        if not op.op_type.startswith("constexpr_"):
            continue
        name = op.name
        for suf in _CONSTEXPR_SUFFIXES:
            if name.endswith(suf):
                name = name[:-len(suf)]
                break
        out[name] = np.asarray(op.materialized_val_inference() if hasattr(op, "materialized_val_inference")
                               else op.value_inference())
    return out


def constexpr_ops(spec) -> Dict[str, int]:
    from ..export.coreml_export import program_ops

    return {k: v for k, v in sorted(program_ops(spec).items()) if k.startswith("constexpr_")}


# ------------------------------------------------------------------------------ policy and compression
def base_policy(table: Mapping[str, dict], p: Precision) -> Dict[str, Optional[str]]:
    """const name -> None (compress) or the reason it stays float (before measuring)."""
    groups = tuple(g.replace(".", "_") for g in FLOAT_GROUPS)
    out: Dict[str, Optional[str]] = {}
    for name, w in table.items():
        if w["role"] == "norm":
            out[name] = "normalisation parameter"
        elif w["role"] != "weight":
            out[name] = "not a conv / linear / matmul weight (bias, embedding or positional table, token, folded tensor)"
        elif int(np.prod(w["shape"])) < MIN_WEIGHT_ELEMENTS:
            out[name] = f"small (< {MIN_WEIGHT_ELEMENTS} elements)"
        elif any(g in module_path(name) for g in groups):
            out[name] = "policy group (" + ", ".join(g for g in FLOAT_GROUPS if g.replace(".", "_") in module_path(name)) + ")"
        else:
            out[name] = None
    return out


def op_config(p: Precision, spec_version: int, threads: int = 0):
    """The coremltools config of one compressed weight, and its granularity."""
    import coremltools.optimize.coreml as cto

    if p is Precision.INT8:
        return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                           weight_threshold=1), "per_channel"
    grouped = spec_version >= GROUPED_LUT_SPEC_VERSION
    gran = "per_grouped_channel" if grouped else "per_tensor"
    kw = {"group_size": GROUP_SIZE} if grouped else {}
    return cto.OpPalettizerConfig(mode="kmeans", nbits=PALETTE_BITS[p], granularity=gran, weight_threshold=1,
                                  num_kmeans_workers=max(1, int(threads or 1)), **kw), gran


# after compression the program goes back to an ML program through these passes only, not
# coremltools' whole default pipeline (what linear_quantize_weights / palettize_weights do): the
# float export ran that pipeline already; re-running it costs ~10x the time for the same ops, and
# its common::fuse_conv_bias reads `conv.weight.val` and fails on a compressed (constexpr) weight
# in the conv -> transpose -> add pattern (coremltools 9.0: "'NoneType' object has no attribute 'dtype'")
_POST_PASSES = ("common::const_deduplication", "common::dead_code_elimination")


def compress(model, names, p: Precision, threads: int = 0):
    """`model` with exactly the consts `names` compressed (everything else untouched).

    What `coremltools.optimize.coreml.linear_quantize_weights` / `palettize_weights` do (their
    compression pass on the model's MIL program, then the program back to an ML program), with
    only `_POST_PASSES` run on the way back."""
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.converter import mil_convert
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_pipeline import PassPipeline
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    spec = model.get_spec()
    cfg, _ = op_config(p, spec.specificationVersion, threads)
    config = cto.OptimizationConfig(global_config=None, op_name_configs={n: cfg for n in names})
    graph_pass = PASS_REGISTRY["compression::linear_quantize_weights" if p is Precision.INT8
                               else "compression::palettize_weights"]
    graph_pass.set_options([PassOption("config", config), PassOption("joint_compression", False)])
    prog = model_utils._convert_model_spec_to_pymil_prog(model, spec.specificationVersion, milproto_load.load)
    graph_pass.apply(prog)
    pipeline = PassPipeline(pass_names=list(_POST_PASSES), pipeline_name="sam2-edge post-compression")
    return mil_convert(prog, convert_to="mlprogram", convert_from="milinternal",
                       specification_version=spec.specificationVersion, compute_units=model.compute_unit,
                       model_description=spec.description, skip_model_load=True, pass_pipeline=pipeline)


def _measure(table: Mapping[str, dict], dense: Mapping[str, np.ndarray]) -> Dict[str, dict]:
    out = {}
    for name, v in dense.items():
        if name in table and tuple(v.shape) == tuple(table[name]["shape"]):
            out[name] = fid.compare(table[name]["value"].astype(np.float64), v.astype(np.float64))
    return out


def _bytes(path: Path) -> int:
    return int(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()))


def compress_stage(src: Path, dst: Path, p: Precision, analyze: bool = False, threads: int = 0) -> dict:
    """Compress one stage package `src` into `dst` under the policy; return its report."""
    from ..quiet import quiet

    t0 = time.perf_counter()
    model, prog = _load_program(src)
    spec_version = int(model.get_spec().specificationVersion)
    table = weight_table(prog)
    policy = base_policy(table, p)
    probe: Dict[str, dict] = {}
    with quiet():
        if analyze:  # what each float-kept candidate would cost (compressed alone, once)
            kept = [n for n, why in policy.items() if why is not None]
            if kept:
                _, pprog = _load_program(_saved(compress(model, kept, p, threads), dst))
                probe = _measure(table, expanded_weights(pprog))
        chosen = [n for n, why in policy.items() if why is None]
        q = compress(model, chosen, p, threads)
        _, qprog = _load_program(_saved(q, dst))
        dense = expanded_weights(qprog)
        got = _measure(table, dense)
        floor = MIN_WEIGHT_SQNR_DB[p]
        weak = sorted(n for n in chosen if n in got and got[n]["sqnr_db"] < floor)
        if weak:
            log.warning("%s: %d weight(s) below %.0f dB reconstructed kept float: %s", src.stem, len(weak), floor,
                        ", ".join(weak[:5]) + (" ..." if len(weak) > 5 else ""))
            for n in weak:
                policy[n] = f"measured: reconstruction {got[n]['sqnr_db']:.1f} dB < {floor:g} dB"
                probe[n] = got.pop(n)
            chosen = [n for n in chosen if n not in weak]
            q = compress(model, chosen, p, threads)
            _, qprog = _load_program(_saved(q, dst))
            dense = expanded_weights(qprog)
            got = _measure(table, dense)
    missing = sorted(set(chosen) - set(got))
    if missing:
        raise RuntimeError(f"{src.name}: {len(missing)} weight(s) chosen for compression have no constexpr op in the "
                           f"compressed program: {missing[:5]}")
    _, gran = op_config(p, spec_version)
    weights = []
    for name, w in table.items():
        row = {"name": name, "shape": w["shape"], "elements": int(np.prod(w["shape"])), "role": w["role"],
               "consumers": w["consumers"], "compressed": name in got}
        if name in got:
            row.update(got[name])
        else:
            row["float_reason"] = policy[name]
            if name in probe:
                row["if_compressed"] = probe[name]
        weights.append(row)
    comp = [r for r in weights if r["compressed"]]
    src_bytes, out_bytes = _bytes(src), _bytes(dst)
    fp16_const_bytes = sum(int(w["value"].nbytes) for w in table.values() if w["value"].dtype == np.float16)
    fp16 = fp16_const_bytes > 0
    sq = [r["sqnr_db"] for r in comp]
    float_reasons: Dict[str, List[str]] = {}
    float_bytes: Dict[str, int] = {}
    for r in weights:
        if not r["compressed"]:
            float_reasons.setdefault(r["float_reason"], []).append(r["name"])
            float_bytes[r["float_reason"]] = float_bytes.get(r["float_reason"], 0) + int(table[r["name"]]["value"].nbytes)
    return {
        "granularity": gran, "spec_version": spec_version,
        "compressed_weights": len(comp), "float_weights": len(weights) - len(comp),
        "compressed_elements": int(sum(r["elements"] for r in comp)),
        "float_elements": int(sum(r["elements"] for r in weights if not r["compressed"])),
        "weight_fidelity": {**(fid.summarise(comp) if comp else fid.summarise([])),
                            "sqnr_db_median": float(np.median(sq)) if sq else fid.SQNR_EXACT,
                            "pooled_sqnr_db": _pooled_sqnr(table, dense, [r["name"] for r in comp])},
        "min_weight_sqnr_db": MIN_WEIGHT_SQNR_DB[p],
        "float_reasons": {k: sorted(v) for k, v in sorted(float_reasons.items())},
        "float_bytes_by_reason": dict(sorted(float_bytes.items())),
        "sizes": {"source_bytes": src_bytes, "bytes": out_bytes,
                  # fp16 source: every fp16 const twice as wide in an fp32 export (the real fp32 exports of
                  # micro and tiny are 1-3 % smaller than this estimate)
                  "fp32_bytes": src_bytes + fp16_const_bytes if fp16 else src_bytes,
                  "fp32_bytes_estimated": fp16},
        "constexpr_ops": constexpr_ops(ct_spec(dst)),
        "weights": weights,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _pooled_sqnr(table: Mapping[str, dict], dense: Mapping[str, np.ndarray], names) -> float:
    """SQNR over all compressed weights at once (signal and noise energies summed): the
    element-weighted figure, not dominated by one small tensor."""
    sig = noise = 0.0
    for n in names:
        a = table[n]["value"].astype(np.float64).ravel()
        d = a - np.asarray(dense[n], np.float64).ravel()
        sig += float(a @ a)
        noise += float(d @ d)
    if noise == 0.0:
        return fid.SQNR_EXACT
    return float(min(fid.SQNR_EXACT, 10 * math.log10(sig / noise))) if sig > 0 else -fid.SQNR_EXACT


def ct_spec(path: Path):
    ct = _require_coremltools()
    return ct.utils.load_spec(str(path))


def _saved(model, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    model.save(str(dst))
    return dst


# ------------------------------------------------------------------------------ the flow
def _source_bundle(source: Path):
    m = load_manifest(source)
    if m.format != "coreml":
        raise ConfigError(f"{str(source)!r} is a {m.format} bundle; CoreML compression starts from {_SOURCE_KIND}")
    if Precision(m.precision) not in (Precision.FP16, Precision.FP32):
        raise ConfigError(f"{str(source)!r} is already a {m.precision} bundle (compressed weights); compress from the "
                          "checkpoint or its fp16 CoreML bundle (sam2-edge export --format coreml), never from a "
                          "compressed one")
    return m


def quantize_bundle(source, out, precision: Precision, *, calib=None, calib_frames: int = 16, holdout_frames: int = 8,
                    objects: int = 2, analyze: bool = False, variant: Optional[str] = None,
                    image_size: Optional[int] = None, cond_slots: int = 2, max_samples: int = 48,
                    show_progress: Optional[bool] = None, threads: int = 0,
                    sign_key: Optional[str] = None, bench: bool = False) -> QuantizeResult:
    """Compress the weights of `source` (a checkpoint .pt, or an fp16 / fp32 CoreML bundle) to
    `precision` (int8 / palettize4 / palettize6 / palettize8) into the bundle folder `out`.
    The calibration options are accepted and unused (weight-only compression needs no data)."""
    t_start = time.perf_counter()
    p = Precision.parse(precision, "coreml", quantized=True)
    if p not in PRECISIONS:
        raise ConfigError(f"CoreML weight compression makes {', '.join(x.value for x in PRECISIONS)} bundles, not "
                          f"{p.value}; for fp16 / fp32 use `sam2-edge export --format coreml --precision {p.value}`")
    from ..outputs import check_dir

    out = check_dir(out, "--out", _own_bundle, _OUT_KIND)
    src = Path(source)
    if not src.exists():
        raise InputError(f"--checkpoint {str(src)!r} does not exist; give {_SOURCE_KIND}")
    src_manifest = _source_bundle(src) if src.is_dir() else None
    _require_coremltools()
    if calib is not None:
        log.info("CoreML weight compression needs no calibration data: --calib is not used")

    work = Path(tempfile.mkdtemp(prefix="sam2-edge-coreml-quant-"))
    try:
        if src_manifest is None:
            from ..export import export_bundle

            float_dir = export_bundle(str(src), str(work / "float"), format="coreml", precision="fp16",
                                      variant=variant, image_size=image_size, cond_slots=cond_slots,
                                      show_progress=show_progress)
            m0 = load_manifest(float_dir)
        else:
            m0 = src_manifest
        qdir = work / "compressed"
        qdir.mkdir()
        stages: Dict[str, dict] = {}
        with Progress(len(STAGES), f"compress {m0.variant} -> coreml {p.value}", enabled=show_progress) as bar:
            for s in STAGES:
                stages[s] = compress_stage(m0.graphs[s].path, qdir / f"{s}.mlpackage", p, analyze, threads)
                log.info("%s: %d weights compressed (%s), %d float; weight SQNR min %.1f dB; %.2f -> %.2f MB",
                         s, stages[s]["compressed_weights"], stages[s]["granularity"], stages[s]["float_weights"],
                         stages[s]["weight_fidelity"]["sqnr_db"], stages[s]["sizes"]["source_bytes"] / 1e6,
                         stages[s]["sizes"]["bytes"] / 1e6)
                bar.update(1, s)
        report = build_report(m0, p, stages, analyze)
        from ..export.coreml_export import program_ops

        def extra_of(s: str, path: Path) -> dict:
            g = m0.graphs[s]
            st = stages[s]
            extra = {k: v for k, v in dict(g.extra).items()
                     if k not in ("export_seconds", "export_cpu_seconds", "bytes", "mil_ops")}
            extra["precision"] = p.value
            extra["mil_ops"] = int(sum(v for k, v in program_ops(ct_spec(path)).items() if k != "const"))
            extra["source_sha256"] = g.sha256
            extra["constexpr_ops"] = st["constexpr_ops"]
            extra["quantization"] = {
                "method": report["method"], "granularity": st["granularity"],
                "compressed_weights": st["compressed_weights"], "float_weights": st["float_weights"],
                "float_reasons": st["float_reasons"], "float_bytes_by_reason": st["float_bytes_by_reason"],
                "weight_fidelity": st["weight_fidelity"],
                "min_weight_sqnr_db": st["min_weight_sqnr_db"], "sizes": st["sizes"]}
            return extra

        from .speed import BenchRequest

        final = write_quantized_bundle(out, m0, p, {s: qdir / f"{s}.mlpackage" for s in STAGES}, extra_of, report,
                                       "sam2_edge.quantization.coreml_quant", t_start, write_plot_fn=write_plot,
                                       sign_key=sign_key,
                                       bench=BenchRequest(Path(m0.root), calib, threads) if bench else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t_start, 2)
    log.info("compressed CoreML bundle %s (%s) in %.1f s", final, p.value, report["seconds"])
    return QuantizeResult(final, report)


def build_report(m0, p: Precision, stages: Mapping[str, dict], analyze: bool) -> dict:
    gran = {s: st["granularity"] for s, st in stages.items()}
    method = ("coremltools.optimize.coreml.linear_quantize_weights (OpLinearQuantizerConfig linear_symmetric int8, "
              "per output channel)" if p is Precision.INT8 else
              f"coremltools.optimize.coreml.palettize_weights (OpPalettizerConfig kmeans, {PALETTE_BITS[p]} bits, "
              f"{sorted(set(gran.values()))[0]} lookup tables)")
    sizes = {s: st["sizes"] for s, st in stages.items()}
    sizes["total"] = {k: sum(v[k] for v in sizes.values()) for k in ("source_bytes", "bytes", "fp32_bytes")}
    sizes["total"]["fp32_bytes_estimated"] = any(st["sizes"]["fp32_bytes_estimated"] for st in stages.values())
    spec_v = min(st["spec_version"] for st in stages.values())
    return fid.rounded({
        "precision": p.value, "format": "coreml", "variant": m0.variant, "image_size": m0.spec.image_size,
        "source_precision": Precision(m0.precision).value, "method": method,
        "compute_precision": "unchanged (the source's: float16 for the default export)",
        "deployment_target": {"specification_version": spec_v, "granularity": gran,
                              "note": ("per-tensor lookup tables: the bundle targets iOS 17 / macOS 14; per-grouped-"
                                       f"channel tables ({GROUP_SIZE} channels) need iOS 18 / macOS 15"
                                       if p is not Precision.INT8 and spec_v < GROUPED_LUT_SPEC_VERSION else "")},
        "policy": {"weight_ops": sorted(WEIGHT_INPUTS), "min_weight_elements": MIN_WEIGHT_ELEMENTS,
                   "float_groups": list(FLOAT_GROUPS), "min_weight_sqnr_db": MIN_WEIGHT_SQNR_DB[p],
                   "analyze": bool(analyze)},
        "calibration": "none: weight-only compression (the calibration options are not used)",
        "measured_here": "weight reconstruction error (expanded constexpr weight vs float weight) and sizes",
        "not_measured_here": ("activation-level and end-to-end numerics: CoreML runs only on macOS; there, score this "
                              "bundle's masks against the float bundle's (or the checkpoint's): `sam2-edge eval --model "
                              "THIS_BUNDLE --reference FP16_BUNDLE` (coreml backend)"),
        "stages": {s: {k: v for k, v in st.items() if k != "sizes"} for s, st in stages.items()},
        "sizes": sizes,
    })


def write_plot(report: dict, path: Path) -> bool:
    """Per-stage sizes and weight SQNR as a PNG; False when matplotlib is not installed."""
    names = list(STAGES)
    x = np.arange(len(names))

    def sizes(a1) -> None:
        sz = report["sizes"]
        fp32 = "fp32 (estimated)" if sz["total"]["fp32_bytes_estimated"] else "fp32"
        for k, off, label in (("fp32_bytes", -0.27, fp32), ("source_bytes", 0.0, report["source_precision"]),
                              ("bytes", 0.27, report["precision"])):
            a1.bar(x + off, [sz[s][k] / 1e6 for s in names], 0.27, label=label)
        stage_ticks(a1, x, names)
        a1.set_ylabel("MB")
        a1.legend(fontsize=8)

    def weight_sqnr(a2) -> None:
        data = [[r["sqnr_db"] for r in report["stages"][s]["weights"] if r["compressed"]] or [0.0] for s in names]
        a2.boxplot(data)
        stage_ticks(a2, x + 1, names)
        a2.axhline(report["policy"]["min_weight_sqnr_db"], color="grey", ls=":", label="floor (kept float below)")
        a2.set_ylabel(f"weight SQNR dB ({report['precision']} vs float)")
        a2.legend(fontsize=8)

    return plot_two_panels(path, sizes, weight_sqnr)


def format_report(report: dict) -> str:
    """The compression report as a text table."""
    lines = [f"{report['precision']} ({report['method']})",
             f"{'stage':17s} {'granularity':19s} {'comp.':>5s} {'float':>5s} | {'min cos':>8s} {'min SQNR':>8s} "
             f"{'median':>6s} {'max abs':>8s} | {'MB fp32':>7s} {'MB src':>6s} {'MB':>6s}"]
    for s in STAGES:
        st = report["stages"][s]
        f = st["weight_fidelity"]
        sz = report["sizes"][s]
        lines.append(f"{s:17s} {st['granularity']:19s} {st['compressed_weights']:5d} {st['float_weights']:5d} | "
                     f"{f['cosine']:8.5f} {f['sqnr_db']:8.1f} {f['sqnr_db_median']:6.1f} {f['max_abs']:8.4f} | "
                     f"{sz['fp32_bytes'] / 1e6:7.2f} {sz['source_bytes'] / 1e6:6.2f} {sz['bytes'] / 1e6:6.2f}")
    t = report["sizes"]["total"]
    lines.append(f"total {t['fp32_bytes'] / 1e6:.2f} MB fp32{' (estimated)' if t['fp32_bytes_estimated'] else ''}, "
                 f"{t['source_bytes'] / 1e6:.2f} MB {report['source_precision']} -> {t['bytes'] / 1e6:.2f} MB "
                 f"({100 * t['bytes'] / t['fp32_bytes']:.0f} % of fp32)")
    if report["deployment_target"]["note"]:
        lines.append(report["deployment_target"]["note"])
    lines.append("weight-level fidelity only; " + report["not_measured_here"])
    return "\n".join(lines)


__all__ = ["quantize_bundle", "compress_stage", "weight_table", "expanded_weights", "base_policy", "format_report",
           "write_plot", "PRECISIONS", "PALETTE_BITS", "GROUP_SIZE", "MIN_WEIGHT_ELEMENTS", "FLOAT_GROUPS",
           "MIN_WEIGHT_SQNR_DB"]
