"""`quantize`: a checkpoint (or an fp32 ONNX bundle) -> an int8 / int8-dynamic ONNX bundle with
a measured fidelity report.

1. Checks first (nothing is computed before): precision / format, the output folder, the
   calibration source (long enough), the input (not already quantised).
2. The fp32 bundle: `export_bundle` into a temporary folder (or the given fp32 bundle).
3. Calibration: the fp32 tracker runs over the calibration frames with automatic prompts;
   every stage's inputs are recorded (`calibration.py`). Frames `< calib_frames` calibrate,
   the next `holdout_frames` are held out for the fidelity numbers.
4. Per stage: the policy (default, or chosen from the sensitivity analysis with `analyze`),
   quantisation with onnxruntime.quantization, the error vs fp32 on calibration and held-out
   inputs; a stage missing its target (STAGE_TARGETS) stays fp32.
5. End to end: the quantised tracker against the fp32 tracker over every frame (per-frame
   mask IoU of >= 2 objects).
6. The bundle (graphs, `quantization.json`, a plot when matplotlib is installed, the manifest
   through the contract) is written to a temporary sibling of `out` and moved into place.

Application layer (it runs the tracker).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import __version__
from ..contract import (FORMATS, MANIFEST_NAME, STAGES, DataFile, GraphEntry, Precision, hash_graph,
                        load_manifest)
from ..errors import ConfigError, InputError
from ..progress import Progress
from . import fidelity as fid
from .onnx_quant import StagePolicy, StageQuantizer, default_policy, graph_info, run_graph

if TYPE_CHECKING:
    from .speed import BenchRequest

log = logging.getLogger(__name__)

REPORT_NAME = "quantization.json"
PLOT_NAME = "quantization.png"
# a stage is kept quantised only when its outputs on calibration AND held-out inputs reach these (else fp32)
STAGE_TARGETS = {"cosine": 0.99, "sqnr_db": 20.0}
# with --analyze: a node group whose quantisation alone costs more than this stays float
GROUP_MIN_SQNR_DB = 30.0
ATTENTION_ROW = "attention scores (run-time int8 QK^T)"  # the sensitivity row of onnx_attention.py's rewrite
_OUT_KIND = "a bundle made by sam2-edge export / quantize (its manifest.json written by sam2-edge)"
# the module (in this package) whose quantize_bundle(source, out, precision, **options) makes each
# non-ONNX format's quantised bundle; ONNX's flow is `quantize` below
FORMAT_FLOWS = {"executorch": ".executorch_quant", "coreml": ".coreml_quant"}


def _own_bundle(folder: Path) -> bool:
    from ..outputs import made_bundle

    return made_bundle(folder, MANIFEST_NAME)


@dataclass
class QuantizeResult:
    path: Path
    report: dict


def check_precision(precision, fmt: str = "onnx") -> Precision:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown bundle format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    p = Precision.parse(precision, fmt, quantized=True)
    if not p.quantized:
        raise ConfigError(f"sam2-edge quantize makes int8 / int8-dynamic bundles; for {p.value} use "
                          f"`sam2-edge export --precision {p.value}`")
    return p


def _source_bundle(source: Path):
    """The fp32 ONNX manifest of a bundle given as input; a clear error for any other bundle."""
    m = load_manifest(source)
    if m.format != "onnx":
        raise ConfigError(f"{str(source)!r} is a {m.format} bundle; quantisation starts from a checkpoint or an "
                          "fp32 ONNX bundle (sam2-edge export --format onnx)")
    if Precision(m.precision) is not Precision.FP32:
        raise ConfigError(f"{str(source)!r} is already a {m.precision} bundle; quantise from the checkpoint (or its "
                          "fp32 ONNX bundle), never from a quantised or fp16 one")
    return m


def quantize(source, out, precision="int8", fmt: str = "onnx", calib: Optional[str] = None, calib_frames: int = 16,
             holdout_frames: int = 8, objects: int = 2, analyze: bool = False, variant: Optional[str] = None,
             image_size: Optional[int] = None, cond_slots: int = 2, max_samples: int = 48,
             show_progress: Optional[bool] = None, threads: int = 0, sign_key: Optional[str] = None,
             bench: bool = False) -> QuantizeResult:
    """Quantise `source` (a checkpoint .pt or an fp32 ONNX bundle folder) to a `precision`
    bundle in `out`. Returns the bundle path and the fidelity report (also in the bundle).
    `sign_key` (an Ed25519 private key file, `sam2-edge keygen`): the bundle is signed
    (manifest.sig), the key checked before any work. `bench`: the finished bundle is benchmarked
    beside its float source (`speed.py`; the report's `speed` entry).
    Each format's own flow lives in its module (`FORMAT_FLOWS`); this function is ONNX's."""
    t_start = time.perf_counter()
    p = check_precision(precision, fmt)
    if sign_key is not None:
        from ..contract.signing import load_private_key

        load_private_key(sign_key)  # a wrong or unreadable key fails now, not after the work
    if bench:
        from .speed import check_bench_possible

        check_bench_possible(fmt)  # a runtime that is not here fails now, not after the work
    if fmt != "onnx":
        import importlib

        flow = getattr(importlib.import_module(FORMAT_FLOWS[fmt], __package__), "quantize_bundle")
        return flow(source, out, p, calib=calib, calib_frames=calib_frames, holdout_frames=holdout_frames,
                    objects=objects, analyze=analyze, variant=variant, image_size=image_size, cond_slots=cond_slots,
                    max_samples=max_samples, show_progress=show_progress, threads=threads,
                    sign_key=sign_key, bench=bench)
    for name, v, lo in (("calib_frames", calib_frames, 2), ("holdout_frames", holdout_frames, 1), ("objects", objects, 1),
                        ("max_samples", max_samples, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    from ..outputs import check_dir

    out = check_dir(out, "--out", _own_bundle, _OUT_KIND)
    src = Path(source)
    if not src.exists():
        raise InputError(f"--checkpoint {str(src)!r} does not exist; give a SAM 2 checkpoint (.pt) or an fp32 ONNX "
                         "bundle folder")
    src_manifest = _source_bundle(src) if src.is_dir() else None
    from .calibration import auto_prompts, load_frames, split_samples, track_clip

    frames, calib_src = load_frames(calib, calib_frames + holdout_frames)
    h, w = frames[0].shape[:2]
    prompts = auto_prompts(w, h, objects)

    work = Path(tempfile.mkdtemp(prefix="sam2-edge-quantize-"))
    try:
        if src_manifest is None:
            from ..export import export_bundle

            fp32_dir = export_bundle(str(src), str(work / "fp32"), format="onnx", precision="fp32", variant=variant,
                                     image_size=image_size, cond_slots=cond_slots, show_progress=show_progress)
            m32 = load_manifest(fp32_dir)
        else:
            m32 = src_manifest
        spec = replace(m32.spec, obj_batches=(1,))  # quantised graphs: batch 1 (a source's batched graphs unused)
        io = spec.io()
        in_names = {s: [t.name for t in io[s][0]] for s in STAGES}
        out_names = {s: [t.name for t in io[s][1]] for s in STAGES}

        from ..runtimes.backends.onnxruntime_backend import OnnxRuntimeBackend

        fp32_backend = OnnxRuntimeBackend(spec, m32.stage_files, threads=threads)
        t0 = time.perf_counter()
        ref_run = track_clip(fp32_backend, frames, prompts, record=True)
        record_s = time.perf_counter() - t0
        data = split_samples(ref_run.samples, in_names, calib_frames, max_samples)
        for stage in STAGES:
            if not data[stage]["calibration"] or not data[stage]["held_out"]:
                raise InputError(f"the calibration run gave no {stage} samples on "
                                 f"{'calibration' if not data[stage]['calibration'] else 'held-out'} frames; give a "
                                 "longer video or raise --calib-frames / --holdout-frames")

        qdir = work / "graphs"
        qdir.mkdir()
        stages_report: Dict[str, dict] = {}
        analysis: Dict[str, List[dict]] = {}
        policies: Dict[str, StagePolicy] = {}
        infos: Dict[str, dict] = {}
        steps = len(STAGES)
        with Progress(steps, f"quantize {m32.variant} -> onnx {p.value}", enabled=show_progress) as bar:
            for stage in STAGES:
                sq = StageQuantizer(stage, m32.graphs[stage].path, data[stage]["calibration"], work / f"q-{stage}",
                                    optimize=p == Precision.INT8)
                ref = {k: run_graph(m32.graphs[stage].path, data[stage][k], out_names[stage], threads)
                       for k in ("calibration", "held_out")}

                def measure(policy: StagePolicy, path: Path, sets=("held_out",)) -> dict:
                    res = {}
                    for k in sets:
                        got = run_graph(path, data[stage][k], out_names[stage], threads)
                        res[k] = fid.compare_outputs(out_names[stage], ref[k], got)
                    return res

                policy = default_policy(stage, p)
                if analyze:
                    extra = [("attention", ATTENTION_ROW, replace(policy, only_groups=(), int8_attention=True))] \
                        if policy.int8_attention else []
                    analysis[stage] = sensitivity(sq, policy, measure, qdir / f"{stage}.probe.onnx", extra)
                    policy = analyzed_policy(policy, analysis[stage])
                path = qdir / f"{stage}.onnx"
                info = sq.quantize(policy, path)
                res = measure(policy, path, ("calibration", "held_out"))
                # the gate: the int8 attention scores go first, then the whole stage
                fallbacks = ([("int8 attention scores dropped", lambda pol, why: replace(
                    pol, int8_attention=False,
                    reason="; ".join(filter(None, [f"run-time int8 attention scores: {why}", pol.reason]))))]
                    if policy.int8_attention else [])
                fallbacks.append(("stage kept fp32", lambda pol, why: replace(pol, fp32=True, reason=why)))
                for consequence, fallback in fallbacks:
                    why = missed_targets(res, consequence)
                    if not why:
                        break
                    log.warning("%s: %s", stage, why)
                    missed = {"policy": policy.to_dict(), **{k: _summary(v) for k, v in res.items()
                                                             if k in ("calibration", "held_out")}}
                    policy = fallback(policy, why)
                    info = sq.quantize(policy, path)
                    # quantized_attempt: the policy first tried; later_attempts: the fallbacks that missed too
                    first = res.get("quantized_attempt")
                    later = res.get("later_attempts", []) + ([missed] if first is not None else [])
                    res = {**measure(policy, path, ("calibration", "held_out")),
                           "quantized_attempt": missed if first is None else first, **({"later_attempts": later}
                                                                                      if later else {})}
                policies[stage] = policy
                infos[stage] = info
                stages_report[stage] = stage_entry(policy.to_dict(), info, {k: len(data[stage][k]) for k in
                                                                             ("calibration", "held_out")}, res)
                bar.update(1, stage)

        # end to end: the quantised tracker against the fp32 tracker
        graph_files = {s: qdir / f"{s}.onnx" for s in STAGES}
        e2e = track_end_to_end(OnnxRuntimeBackend(spec, graph_files, threads=threads), ref_run, frames, prompts,
                               calib_frames)
        report = stage_report(
            p, "onnx", m32, graph_files, stages_report, e2e, analysis,
            method=("onnxruntime.quantization.quantize_static (QDQ, per-channel int8 weights, uint8 activations, "
                    "MinMax calibration)" if p is Precision.INT8 else
                    "onnxruntime.quantization.quantize_dynamic (per-channel int8 weights, uint8 activations "
                    "quantised at run time)"),
            calibration=calibration_info(calib_src, calib_frames, holdout_frames, objects, prompts, record_s,
                                         "fixed frames and prompts; MinMax ranges; no random sampling"))

        def extra_of(s: str, fpath: Path) -> dict:
            g = m32.graphs[s]
            extra = {k: v for k, v in dict(g.extra).items() if k in ("opset", "exporter")}
            extra.update(graph_info(fpath))
            extra["source_sha256"] = g.sha256
            extra["quantization"] = quantization_extra(policies[s].to_dict(), infos[s], stages_report[s])
            return extra

        from .speed import BenchRequest

        float_dir = fp32_dir if src_manifest is None else src
        final = write_quantized_bundle(out, m32, p, graph_files, extra_of, report,
                                       "sam2_edge.quantization.pipeline", t_start, sign_key=sign_key,
                                       bench=BenchRequest(Path(float_dir), calib, threads) if bench else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("quantized bundle %s (%s) in %.1f s", final, p.value, time.perf_counter() - t_start)
    return QuantizeResult(final, report)


def _graph_bytes(path: Path) -> int:
    """Bytes of a graph file, or of every file of a graph folder (.mlpackage)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def write_quantized_bundle(out: Path, source, precision: Precision, graph_files: Mapping[str, Path], extra_of,
                           report: dict, module: str, t_start: float, write_plot_fn=None,
                           libraries: Optional[dict] = None, sign_key: Optional[str] = None,
                           bench: Optional["BenchRequest"] = None) -> Path:
    """The one way every format's quantised bundle is written: into a temporary sibling of `out`,
    the stage graphs (files or .mlpackage folders) copied from `graph_files`, `quantization.json`
    (+ the plot, `write_plot_fn(report, path) -> bool`) as hashed attachments, and the manifest
    made from the source bundle's (`source`, a Manifest) with the new graphs -- each graph's
    manifest `extra` is `extra_of(stage, path)` of the written copy -- through the contract,
    checked with `load_manifest` as the loader will; with `bench`, the finished bundle is
    benchmarked there beside its float source (`speed.side_by_side`) and the report rewritten with
    the `speed` entry; signed with `sign_key` (manifest.sig over the exact manifest bytes, which
    hold every file's sha256) when given, then moved into place."""
    from ..export.bundle import library_versions
    from ..outputs import StagedDir

    with StagedDir(out, "--out", _own_bundle, _OUT_KIND) as staged:
        tmp = staged.path
        for s in STAGES:
            src = Path(graph_files[s])
            dst = tmp / src.name
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
        graphs = {}
        for s in STAGES:
            g = source.graphs[s]
            path = tmp / Path(graph_files[s]).name
            graphs[s] = GraphEntry(s, path.name, hash_graph(path), None, g.inputs, g.outputs,
                                   bytes=_graph_bytes(path), extra=fid.rounded(extra_of(s, path)))

        def write_report_and_manifest() -> bytes:
            (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
            report_files = [REPORT_NAME]
            if (write_plot_fn or write_plot)(report, tmp / PLOT_NAME):
                report_files.append(PLOT_NAME)
            # quantised bundles hold the batch-1 graphs of the stages (objects run one call each)
            manifest = replace(source, root=None, precision=precision, graphs=graphs,  # the report: hashed attachments
                               spec=replace(source.spec, obj_batches=(1,)),
                               attachments=tuple(DataFile(f, hash_graph(tmp / f)) for f in report_files),
                               exporter={"name": "sam2-edge", "version": __version__, "module": module,
                                         "source_precision": Precision(source.precision).value,
                                         "report": REPORT_NAME, "seconds": round(time.perf_counter() - t_start, 2)},
                               libraries=libraries if libraries is not None else library_versions(),
                               created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            manifest_bytes = manifest.to_json().encode("utf-8")
            (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
            load_manifest(tmp)  # what the loader will see: refuse to move a bundle it would refuse
            return manifest_bytes

        manifest_bytes = write_report_and_manifest()
        if bench is not None:
            from ..errors import Sam2EdgeError
            from .speed import side_by_side

            try:
                report["speed"] = side_by_side(bench, tmp)
            except Sam2EdgeError as e:  # the bundle is good: keep it, and say why it has no speed entry
                log.warning("--bench failed, the bundle is written without speed figures: %s", e)
                report["speed_error"] = str(e)
            manifest_bytes = write_report_and_manifest()
        if sign_key is not None:
            from ..contract.bundle_dir import SIGNATURE_NAME
            from ..contract.signing import sign_manifest

            (tmp / SIGNATURE_NAME).write_bytes(sign_manifest(manifest_bytes, sign_key))
        return staged.commit()


def _summary(r: Mapping) -> dict:
    return {k: r[k] for k in ("cosine", "sqnr_db", "max_abs")}


def analyzed_policy(policy: StagePolicy, rows: Sequence[Mapping]) -> StagePolicy:
    """`policy` with every node group that costs more than GROUP_MIN_SQNR_DB alone (a `sensitivity` row)
    kept float, the reason written."""
    weak = sorted({r["name"] for r in rows if r["kind"] == "group" and r["sqnr_db"] < GROUP_MIN_SQNR_DB})
    weak_attention = policy.int8_attention and any(r["kind"] == "attention" and r["sqnr_db"] < GROUP_MIN_SQNR_DB
                                                   for r in rows)
    if not weak and not weak_attention:
        return policy
    why = [f"groups below {GROUP_MIN_SQNR_DB:g} dB alone kept float: {', '.join(weak)}"] if weak else []
    if weak_attention:
        why.append(f"{ATTENTION_ROW} below {GROUP_MIN_SQNR_DB:g} dB alone: kept float")
    return replace(policy, float_groups=tuple(sorted(set(policy.float_groups) | set(weak))),
                   int8_attention=policy.int8_attention and not weak_attention, reason="; ".join(why))


def missed_targets(res: Mapping, consequence: str) -> Optional[str]:
    """The gate: None when a stage's error on BOTH its calibration and its held-out inputs (`res`:
    set -> summary) reaches STAGE_TARGETS, else the reason (ending with `consequence`, what the flow
    does about it). Both sets: the prompted frames' calls are in the calibration set (the held-out
    frames are tracked only), and a stage that fails on prompts fails the user's first frame."""
    for name, label in (("held_out", "held-out"), ("calibration", "calibration")):
        r = res[name]
        if r["cosine"] < STAGE_TARGETS["cosine"] or r["sqnr_db"] < STAGE_TARGETS["sqnr_db"]:
            return (f"fidelity target missed ({label} cosine {r['cosine']:.4f}, SQNR {r['sqnr_db']:.1f} dB; "
                    f"targets >= {STAGE_TARGETS['cosine']}, >= {STAGE_TARGETS['sqnr_db']:g} dB): {consequence}")
    return None


def calibration_info(source: str, frames: int, held_out_frames: int, objects: int, prompts, record_seconds: float,
                     deterministic: str, reference: Optional[str] = None) -> dict:
    """The report's `calibration` entry (the same keys for every calibrated flow)."""
    info = {"source": os.path.basename(source), "frames": frames, "held_out_frames": held_out_frames,
            "objects": objects, "prompts": prompts, "record_seconds": round(record_seconds, 2)}
    if reference is not None:
        info["reference"] = reference
    info["deterministic"] = deterministic
    return info


def stage_report(precision: Precision, fmt: str, source, graph_files: Mapping[str, Path], stages: dict, e2e: dict,
                 analysis: dict, *, method: str, calibration: dict) -> dict:
    """The fidelity report of a calibrated flow (ONNX, ExecuTorch), JSON-ready (`fid.rounded`): the
    per-stage results, end to end, the targets, and each graph's size against the fp32 source
    bundle's (`source`, a Manifest) with the total."""
    report = {
        "precision": precision.value, "format": fmt, "variant": source.variant, "image_size": source.spec.image_size,
        "method": method,
        "calibration": calibration,
        "targets": {"stage": STAGE_TARGETS, "group_min_sqnr_db": GROUP_MIN_SQNR_DB},
        "stages": stages,
        "end_to_end": e2e,
        "sizes": {s: {"fp32_bytes": source.graphs[s].bytes, "bytes": Path(graph_files[s]).stat().st_size}
                  for s in STAGES},
        "analysis": analysis,
    }
    report["sizes"]["total"] = {k: sum(v[k] for v in report["sizes"].values()) for k in ("fp32_bytes", "bytes")}
    return fid.rounded(report)


def quantization_extra(policy: dict, info: Mapping, stage: Mapping) -> dict:
    """A graph's `extra["quantization"]` in the manifest: the policy (as the report writes it), the
    node counts and the held-out error of the stage's report entry."""
    attention = {k: info[k] for k in ("int8_attention", "int8_attention_skipped") if k in info}
    return {**policy, "quantized_nodes": info["quantized_nodes"], "float_nodes": info["float_nodes"], **attention,
            "held_out": _summary(stage["held_out"])}


def sensitivity(sq: StageQuantizer, policy: StagePolicy, measure, probe: Path,
                extra: Sequence[Tuple[str, str, StagePolicy]] = ()) -> List[dict]:
    """One stage's sensitivity: its default policy, then each node group and each op type
    quantised alone (everything else float), then the `extra` rows (kind, name, policy; ONNX:
    the int8 attention scores alone), measured on held-out inputs."""
    rows = []

    def row(kind: str, name: str, pol: StagePolicy) -> None:
        t0 = time.perf_counter()
        info = sq.quantize(pol, probe)
        res = measure(pol, probe)["held_out"]
        rows.append({"kind": kind, "name": name, "nodes": info["quantized_nodes"], **_summary(res),
                     "seconds": round(time.perf_counter() - t0, 2)})

    row("stage", "default policy", policy)
    groups = sq.groups(policy.op_types)
    for g in sorted(set(groups.values())):
        row("group", g, replace(policy, float_groups=(), only_groups=(g,), int8_attention=False))
    for op in policy.op_types:
        if any(n.op_type == op for n in sq.model.graph.node):
            row("op_type", op, replace(policy, op_types=(op,), float_groups=(), int8_attention=False))
    for kind, name, pol in extra:
        row(kind, name, pol)
    probe.unlink(missing_ok=True)
    return rows


def stage_entry(policy: dict, info: Mapping, samples: Mapping[str, int], res: Mapping) -> dict:
    """One stage's entry in the report: the policy (as the report writes it), node counts, samples
    per set and the measured error (`res`: calibration, held_out, the missed attempt if any)."""
    attention = {k: info[k] for k in ("int8_attention", "int8_attention_skipped") if k in info}
    return {"policy": policy, "quantized_nodes": info["quantized_nodes"], "float_nodes": len(info["float_nodes"]),
            **attention, "samples": dict(samples), **res}


def track_end_to_end(backend, ref_run, frames, prompts, calib_frames: int) -> dict:
    """The quantised tracker (`backend`) over the calibration clip with the fp32 run's prompts,
    scored against the fp32 run's masks (`end_to_end`), with the seconds it took."""
    from .calibration import track_clip

    t0 = time.perf_counter()
    q_run = track_clip(backend, frames, prompts)
    e2e = end_to_end(ref_run.masks, q_run.masks, calib_frames)
    e2e["seconds"] = round(time.perf_counter() - t0, 2)
    return e2e


def end_to_end(ref: Sequence[Mapping[int, np.ndarray]], got: Sequence[Mapping[int, np.ndarray]],
               calib_frames: int) -> dict:
    """Per-frame mask IoU of the quantised tracker against the fp32 tracker (mean and min over
    objects), its mean / min over frames, split into calibration and held-out frames, and J&F
    with the fp32 masks as pseudo ground truth."""
    from ..evaluation.metrics import frame_iou, score_sequence

    per_mean, per_min = [], []
    for a, b in zip(ref, got):
        ious = frame_iou(a, b)
        per_mean.append(float(np.mean(ious)))
        per_min.append(float(np.min(ious)))
    held = per_mean[calib_frames:]
    jf = score_sequence(got, ref, skip_first_last=False)
    return {"frames": len(ref), "objects": len(ref[0]) if ref else 0,
            "iou_mean": float(np.mean(per_mean)), "iou_min": float(np.min(per_min)),
            "iou_mean_held_out": float(np.mean(held)) if held else None,
            "iou_curve": per_mean, "iou_min_curve": per_min,
            "J": jf["J"], "F": jf["F"], "JF": jf["JF"]}


def plot_two_panels(path: Path, left, right) -> bool:
    """The one figure of every quantised bundle's report: two panels side by side, `left(ax)` and
    `right(ax)` draw them, written as a PNG to `path`; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    left(a1)
    right(a2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def stage_ticks(ax, x, names) -> None:
    """Stage names under bars at `x` (two lines each)."""
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)


def write_plot(report: dict, path: Path) -> bool:
    """The IoU curve and per-stage SQNR as a PNG; False when matplotlib is not installed."""
    def iou_curve(a1) -> None:
        e2e = report["end_to_end"]
        a1.plot(e2e["iou_curve"], label="mean over objects")
        a1.plot(e2e["iou_min_curve"], label="min over objects")
        a1.axvline(report["calibration"]["frames"] - 0.5, color="grey", ls=":", label="held-out from here")
        a1.set_xlabel("frame")
        a1.set_ylabel(f"mask IoU {report['precision']} vs fp32")
        a1.set_ylim(0, 1.02)
        a1.legend(fontsize=8)

    def stage_sqnr(a2) -> None:
        names = list(report["stages"])
        for k, off in (("calibration", -0.2), ("held_out", 0.2)):
            a2.bar(np.arange(len(names)) + off, [min(report["stages"][s][k]["sqnr_db"], 80) for s in names], 0.4,
                   label=k)
        stage_ticks(a2, range(len(names)), names)
        a2.set_ylabel("SQNR dB (vs fp32)")
        a2.legend(fontsize=8)

    return plot_two_panels(path, iou_curve, stage_sqnr)


def format_report(report: dict) -> str:
    """The fidelity report as text tables."""
    lines = [f"{report['precision']} ({report['method']})",
             f"{'stage':17s} {'policy':10s} {'q.nodes':>7s} {'float':>5s} | {'calib cos':>9s} {'SQNR dB':>7s} "
             f"{'max abs':>8s} | {'held cos':>8s} {'SQNR dB':>7s} {'max abs':>8s} | {'MB fp32':>7s} {'MB':>6s}"]
    for s, r in report["stages"].items():
        c, h = r["calibration"], r["held_out"]
        sz = report["sizes"][s]
        lines.append(f"{s:17s} {r['policy']['precision']:10s} {r['quantized_nodes']:7d} {r['float_nodes']:5d} | "
                     f"{c['cosine']:9.5f} {c['sqnr_db']:7.1f} {c['max_abs']:8.4f} | {h['cosine']:8.5f} "
                     f"{h['sqnr_db']:7.1f} {h['max_abs']:8.4f} | {sz['fp32_bytes'] / 1e6:7.2f} {sz['bytes'] / 1e6:6.2f}")
        if r.get("int8_attention"):
            lines.append(f"    attention scores: run-time int8 QK^T in {r['int8_attention']} fused attention(s)"
                         + (f", {len(r['int8_attention_skipped'])} left fused" if r.get("int8_attention_skipped") else ""))
        if r["policy"].get("reason"):
            lines.append(f"    {r['policy']['reason']}")
    t = report["sizes"]["total"]
    e = report["end_to_end"]
    lines.append(f"total size {t['fp32_bytes'] / 1e6:.2f} MB fp32 -> {t['bytes'] / 1e6:.2f} MB")
    held = e.get("iou_mean_held_out")
    lines.append(f"end to end vs fp32 tracker ({e['frames']} frames, {e['objects']} objects): mask IoU mean "
                 f"{e['iou_mean']:.4f}, min {e['iou_min']:.4f}" + (f", held-out mean {held:.4f}" if held is not None
                                                                     else "")
                 + f"; J&F {e['JF']:.4f} (J {e['J']:.4f}, F {e['F']:.4f})")
    for stage, rows in (report.get("analysis") or {}).items():
        lines.append(f"sensitivity {stage} (held-out, each row quantised alone):")
        for r in rows:
            lines.append(f"  {r['kind']:8s} {r['name']:44s} {r['nodes']:4d} nodes  cos {r['cosine']:.5f}  "
                         f"SQNR {r['sqnr_db']:6.1f} dB  max abs {r['max_abs']:.4f}")
    return "\n".join(lines)


__all__ = ["quantize", "QuantizeResult", "check_precision", "write_quantized_bundle", "sensitivity", "end_to_end", "format_report",
           "analyzed_policy", "missed_targets", "stage_entry", "track_end_to_end", "calibration_info", "stage_report", "quantization_extra", "write_plot", "plot_two_panels", "REPORT_NAME",
           "PLOT_NAME", "STAGE_TARGETS", "GROUP_MIN_SQNR_DB"]
