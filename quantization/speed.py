"""Speed beside the float source: the quantised bundle and the float bundle it came from, in one
interleaved `sam2-edge bench` run (the bench's own command line and protocol, as
`sam2-edge bench --bundle FLOAT --bundle QUANTISED` would run it), condensed into the report's
`speed` entry. Opt-in (`sam2-edge quantize --bench`): a full-size model takes minutes.

The bench runs on the finished bundle in its temporary folder, before it is moved into place, so
the numbers in `quantization.json` are of the exact files that ship; the bench's table is the
place for more object counts or frames (`sam2-edge bench` on the two folders).

Application layer (it runs the trackers)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional

from ..contract import FORMATS, backend_unavailable
from ..errors import ConfigError

log = logging.getLogger(__name__)

BENCH_FRAMES = 12  # the bench measures frames 8.. (memory full): 4 measured frames per bundle
BENCH_OBJECTS = 1
ROWS = ("float", "quantized")


@dataclass(frozen=True)
class BenchRequest:
    """What `write_quantized_bundle` needs to bench the new bundle beside its float source."""
    float_bundle: Path  # the fp32 (fp16 for CoreML) bundle the quantised one was made from
    source: Optional[str] = None  # frames: the calibration video / folder (None: the shipped clip)
    threads: int = 0  # 0: the bench's default


def check_bench_possible(fmt: str) -> None:
    """Before any work: `--bench` needs the format's runtime on this machine."""
    why = backend_unavailable(FORMATS[fmt].backend)
    if why is not None:
        raise ConfigError(f"--bench: {fmt} bundles do not run here ({why}); leave --bench out and run "
                          "`sam2-edge bench --bundle FLOAT --bundle QUANTISED` where they run")


def bench_argv(req: BenchRequest, quantized: Path) -> List[str]:
    argv = ["bench", "--bundle", str(req.float_bundle), "--bundle", str(quantized), "--frames", str(BENCH_FRAMES),
            "--warmup", "1", "--objects", str(BENCH_OBJECTS), "--prompt-repeats", "1", "--no-progress"]
    if req.source:
        argv += ["--source", str(req.source)]
    if req.threads:
        argv += ["--threads", str(req.threads)]
    return argv


def side_by_side(req: BenchRequest, quantized: Path) -> dict:
    """Run the bench on the two bundles; -> the report's `speed` entry."""
    from ..bench.cli import bench
    from ..cli import build_parser

    log.info("quantize: benchmarking the quantised bundle beside its float source (%d frames, %d object)",
             BENCH_FRAMES, BENCH_OBJECTS)
    rep = bench(build_parser().parse_args(bench_argv(req, quantized)))
    # the command as a user would re-run it, the two (temporary) folders named by their role
    shown = bench_argv(replace(req, float_bundle=Path("<float bundle>")), Path("<quantized bundle>"))
    return condense(rep, "sam2-edge " + " ".join(shown))


def condense(rep: dict, command: str) -> dict:
    """The bench report -> fps, per-stage median ms and sizes of the two rows, and the ratios."""
    rows = {}
    for name, t in zip(ROWS, rep["targets"]):
        run = t["runs"][str(BENCH_OBJECTS)]
        rows[name] = {"backend": t["describe"], "precision": t["precision"], "threads": t["threads"],
                      "fps": run["fps"], "frames_measured": run["frames_measured"],
                      "first_frame_ms": t["first_frame_ms"]["median"],
                      "stages_ms": {s: v["median"] for s, v in run["stages_ms"].items()},
                      "bundle_bytes": t["model_bytes"]}
    q = rep["targets"][1]
    m = rep["machine"]
    return {"command": command,
            "objects": BENCH_OBJECTS, "image_size": rep["config"]["image_size"],
            "machine": {"cpu": m.get("cpu"), "logical_cpus": m.get("logical_cpus"),
                        "load_average_start": m.get("load_average_start"),
                        "load_average_end": m.get("load_average_end")},
            "rows": rows,
            "fps_ratio": q["runs"][str(BENCH_OBJECTS)]["vs_first"]["fps"],
            "stage_speedup": q["runs"][str(BENCH_OBJECTS)]["vs_first"]["speedup"],
            "notes": list(rep.get("notes", []))}


def format_speed(speed: dict) -> List[str]:
    f, q = speed["rows"]["float"], speed["rows"]["quantized"]
    load = speed["machine"].get("load_average_start") or [None]
    lines = [f"speed ({speed['command']}; {speed['machine']['cpu']}, load {load[0]}):"]
    for name, r in (("float", f), ("quantized", q)):
        st = r["stages_ms"]
        lines.append(f"  {name:9s} {r['precision']:12s} {r['fps']:7.2f} fps  frame {st['total']:8.1f} ms  (image "
                     f"{st['image_encoder']:.1f}, memory attention {st['memory_attention']:.1f}, decoder "
                     f"{st['mask_decoder']:.1f}, memory encoder {st['memory_encoder']:.1f})  "
                     f"{r['bundle_bytes'] / 1e6:.1f} MB")
    lines.append(f"  quantized / float: {speed['fps_ratio']:.2f}x fps, {q['bundle_bytes'] / f['bundle_bytes']:.2f}x "
                 "size")
    return lines


__all__ = ["BenchRequest", "check_bench_possible", "side_by_side", "condense", "format_speed", "BENCH_FRAMES"]
