"""What `sam2-edge bench` hands back: the report dict (JSON schema "sam2-edge-bench/1"),
the text table and the bar chart."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import BackendUnavailableError
from ..sysinfo import peak_rss_bytes
from .protocol import ROWS, STAGE_NAMES, stats
from .targets import Target

SCHEMA = "sam2-edge-bench/1"
# a report may be partial (Ctrl-C): "interrupted" is then true, a target's "runs" holds only the object
# counts measured (a run with "complete": false stopped early), first-frame figures may be empty
_SHORT = {"image_encoder": "image_enc", "memory_attention": "mem_attn", "mask_decoder": "mask_dec",
          "memory_encoder": "mem_enc", "pre_post": "pre/post", "total": "total"}


def _fmt_ms(x: Optional[float]) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB" if abs(n) < 2**30 else f"{n / 2**30:.2f} GiB"


def _round(obj, nd: int = 3):
    """`obj` with its floats rounded to `nd` decimals and NaN / inf as None (JSON-ready)."""
    if isinstance(obj, float):
        return round(obj, nd) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _round(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, nd) for v in obj]
    return obj


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b) or b <= 0:
        return None
    return a / b


def first_ff_median(t: Target) -> Optional[float]:
    xs = [p["total"] for p in t.prompt_samples]
    return float(np.median(xs)) if xs else None


def report(targets: List[Target], config: dict, notes: List[str], machine: dict, elapsed: float,
           skipped: Optional[List[dict]] = None, interrupted: Optional[str] = None) -> dict:
    """The JSON report. `skipped`: backends that did not run here ({"backend", "reason"});
    `interrupted`: the phase Ctrl-C stopped (the report then holds what was measured before)."""
    first = targets[0]
    out_targets = []
    for t in targets:
        runs = {}
        for k, run in t.runs.items():
            f = first.runs.get(k)
            run = dict(run)
            run["vs_first"] = {
                "fps": _ratio(run["fps"], f["fps"]) if f else None,
                "speedup": {s: _ratio(f["stages_ms"][s]["median"], run["stages_ms"][s]["median"]) if f else None
                            for s in ROWS},
            }
            runs[str(k)] = run
        ff = {s: stats([p[s] for p in t.prompt_samples]) for s in ROWS}
        out_targets.append({
            "label": t.label,
            "backend": t.backend,
            "describe": t.extra.get("describe", t.backend),
            "source": t.source,
            "variant": t.variant,
            "image_size": t.image_size,
            "precision": t.precision,
            "threads": t.threads_seen,  # None: the runtime schedules its own (Core ML)
            "threads_requested": t.threads,
            "model_bytes": t.model_bytes,
            "model_bytes_kind": t.model_bytes_kind,
            "checkpoint_bytes": t.extra.get("checkpoint_bytes"),
            "bundle": t.extra.get("bundle"),
            "bundle_cached": t.extra.get("bundle_cached"),
            "rss_added_bytes": t.rss_added,
            "first_frame_cold_ms": t.cold_first_ms,
            "first_frame_ms": ff["total"],
            "first_frame_stages_ms": ff,
            "first_frame_vs_first": _ratio(first_ff_median(first), ff["total"]["median"]),
            "runs": runs,
        })
    return _round({
        "schema": SCHEMA,
        "config": config,
        "machine": machine,
        "notes": notes,
        "skipped": list(skipped or []),
        "interrupted": interrupted is not None,
        "interrupted_during": interrupted,
        "peak_rss_bytes": peak_rss_bytes(),
        "elapsed_s": elapsed,
        "targets": out_targets,
    })


def format_table(rep: dict) -> str:
    c = rep["config"]
    m = rep["machine"]
    lines = []
    lo = m.get("load_average_start"), m.get("load_average_end")
    looped = ", looped" if c["frames"] > c["clip_frames_used"] else ""
    lines.append(f"sam2-edge bench  {c['variant']} @ {c['image_size']}  clip {Path(c['source']).name} "
                 f"({c['clip_size'][0]}x{c['clip_size'][1]}, {c['clip_frames_used']} frames used{looped})")
    lines.append(f"machine  {m['board'] or m['cpu']}, {m['logical_cpus']} logical CPUs, {m['platform']}; "
                 f"load average (1/5/15 min) start {lo[0]} end {lo[1]}")
    lines.append(f"protocol {c['frames']} frames per run, measured from frame {c['steady_from_frame']} on "
                 f"(memory full): {c['frames'] - c['steady_from_frame']} frames; warm-up {c['warmup']}; "
                 f"targets interleaved frame by frame"
                 f"{' (%g ms idle before each call)' % c['settle_ms'] if c.get('settle_ms') else ''}; "
                 f"ratios vs {rep['targets'][0]['label']}")
    for note in rep["notes"]:
        lines.append(f"note     {note}")
    if rep.get("interrupted"):
        lines.append(f"INTERRUPTED during {rep.get('interrupted_during')}: the results so far (a run marked '*' "
                     "stopped early; '-' was not measured)")
    w = max(12, max(len(t["label"]) for t in rep["targets"]))
    for k in c["objects"]:
        if not any(str(k) in t["runs"] for t in rep["targets"]):
            continue
        lines.append("")
        lines.append(f"{k} object{'s' if k > 1 else ''}: ms per frame, median/p90, stages summed over the objects; "
                     f"fps end to end; 'vs first' = fps / fps of the first target")
        lines.append(f"{'target':<{w}} {'thr':>3}" + "".join(f"  {_SHORT[s]:>13}" for s in ROWS)
                     + f"  {'fps':>7}  {'vs first':>8}")
        for t in rep["targets"]:
            run = t["runs"].get(str(k))
            if run is None:
                lines.append(f"{t['label']:<{w}} not measured")
                continue
            st = run["stages_ms"]
            cells = "".join(f"  {_fmt_ms(st[s]['median']) + '/' + _fmt_ms(st[s]['p90']):>13}" for s in ROWS)
            fps, vs = run["fps"], run["vs_first"]["fps"]
            thr = "-" if t["threads"] is None else t["threads"]
            partial = "" if run.get("complete", True) else f"  * {run['frames_measured']} frames"
            lines.append(f"{t['label']:<{w}} {thr:>3}" + cells
                         + f"  {'-' if fps is None else f'{fps:.3g}':>7}  {'-' if vs is None else f'x{vs:.2f}':>8}"
                         + partial)
    lines.append("")
    fps_heads = "".join(f"  {f'fps {k} obj':>10}" for k in c["objects"])
    lines.append(f"{'target':<{w}} {'first frame ms med/p90':>22}  {'cold':>7}{fps_heads}  {'model size':>11}  "
                 f"{'rss added':>10}  backend")
    for t in rep["targets"]:
        ff = t["first_frame_ms"]
        fps_vals = [(t["runs"].get(str(k)) or {}).get("fps") for k in c["objects"]]
        fps_cells = "".join(f"  {'-' if v is None else f'{v:.3g}':>10}" for v in fps_vals)
        kind = "params" if t["model_bytes_kind"] == "parameters" else "files"
        cached = {True: ", cached bundle", False: ", exported now"}.get(t.get("bundle_cached"), "")
        lines.append(f"{t['label']:<{w}} {_fmt_ms(ff['median']) + ' / ' + _fmt_ms(ff['p90']):>22}  "
                     f"{_fmt_ms(t['first_frame_cold_ms']):>7}{fps_cells}  "
                     f"{_fmt_bytes(t['model_bytes']) + ' ' + kind:>11}  {_fmt_bytes(t['rss_added_bytes']):>10}  "
                     f"{t['describe']} {t['precision']}{cached}")
    for sk in rep.get("skipped") or []:
        lines.append(f"{sk['backend']:<{w}} skipped: {sk['reason']}")
    lines.append(f"peak resident memory of the process (all targets loaded together): "
                 f"{_fmt_bytes(rep['peak_rss_bytes'])}; run a single target for its own peak")
    lines.append(f"elapsed {rep['elapsed_s']:.0f} s")
    return "\n".join(lines)


def check_plot_available() -> None:
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BackendUnavailableError("--plot needs matplotlib, which is not installed: pip install "
                                      "'sam2-edge[plot]' (or pip install matplotlib; or leave --plot out: --json "
                                      "has every number)")


def plot(rep: dict, path: str) -> None:
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = rep["config"]
    targets = rep["targets"]
    labels = [t["label"] for t in targets]
    k0 = c["objects"][0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.8 * len(targets) + 3.2), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(targets))
    left = np.zeros(len(targets))
    for s in STAGE_NAMES + ("pre_post",):
        vals = np.array([((t["runs"].get(str(k0)) or {}).get("stages_ms") or {}).get(s, {}).get("median") or 0.0
                         for t in targets])
        ax1.barh(y, vals, left=left, label=s.replace("pre_post", "pre/post"))
        left += vals
    ax1.set_yticks(y, labels)
    ax1.invert_yaxis()
    ax1.set_xlabel(f"ms per frame, median ({k0} object{'s' if k0 > 1 else ''}, memory full)")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=5, frameon=False)
    width = 0.8 / len(c["objects"])
    for j, k in enumerate(c["objects"]):
        vals = [(t["runs"].get(str(k)) or {}).get("fps") or 0.0 for t in targets]
        ax2.barh(y + (j - (len(c["objects"]) - 1) / 2) * width, vals, height=width, label=f"{k} obj")
    ax2.set_xlabel("frames per second, end to end")
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(c["objects"]), frameon=False)
    m = rep["machine"]
    fig.suptitle(f"sam2-edge bench: {c['variant']} @ {c['image_size']} on {m['board'] or m['cpu']} "
                 f"({m['logical_cpus']} CPUs)", fontsize=10)
    fig.tight_layout()
    from ..outputs import replacing_file

    try:
        with replacing_file(path, "--plot") as tmp:  # a temporary sibling renamed over `path` when complete
            fig.savefig(str(tmp), dpi=120, format=os.path.splitext(str(path))[1][1:].lower() or "png")
    finally:
        plt.close(fig)
