"""`sam2-edge bench`: the command line (registered by `sam2_edge.cli`) and the run it drives:
check the arguments, load the frames, build the targets, measure, report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import List

from ..cli import subcommand
from ..errors import InputError, OutputError
from ..outputs import check_file, check_writable_dir, write_text
from ..sysinfo import load_average
from .probe import default_threads, machine_info
from .protocol import STEADY_FROM_DEFAULT, load_frames, run_bench
from .report import check_plot_available, format_table, plot, report
from .targets import DEFAULT_VARIANT, Plan, build_targets

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTE = ("random weights: speed does not depend on the weights (the same static-shape graphs "
                       "and kernels run, with no data-dependent control flow), so the numbers hold for the "
                       "released checkpoint of this architecture")


def _int_list(text: str, what: str, minimum: int = 1, unique: bool = True) -> List[int]:
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < minimum for v in vals):
        raise InputError(f"{what} must be integers >= {minimum}, got {text!r}")
    return sorted(set(vals), key=vals.index) if unique else vals


PLOT_EXTENSIONS = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp", ".eps", ".ps", ".tif", ".tiff")


def _check_outputs(a: argparse.Namespace) -> None:
    """--json, --plot and --export-dir, before any frame is read or model built."""
    if a.json and a.json != "-":
        check_file(a.json, "--json", what="JSON file")
    if a.plot:
        check_plot_available()
        check_file(a.plot, "--plot", suffixes=PLOT_EXTENSIONS, what="plot image")
        if a.json and a.json != "-" and os.path.abspath(a.json) == os.path.abspath(a.plot):
            raise OutputError(f"--json and --plot are the same file {a.json!r}; give two names")
    if a.export_dir:
        # a folder bench adds bundle folders to (each replaced only if sam2-edge export made it)
        check_writable_dir(a.export_dir, "--export-dir")
    if a.device != "cpu":
        from ..runtimes.backends.torch_backend import check_device

        check_device(a.device)


def bench(a: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    _check_outputs(a)
    if a.frames <= STEADY_FROM_DEFAULT:
        raise InputError(f"--frames must be > {STEADY_FROM_DEFAULT}: the objects' memory is full from frame "
                         f"{STEADY_FROM_DEFAULT} on, and only those frames are measured")
    if a.warmup < 0 or a.prompt_repeats < 1:
        raise InputError("--warmup must be >= 0 and --prompt-repeats >= 1")
    objects = _int_list(a.objects, "--objects")
    # a repeated count is kept: `--threads 2,2` runs every target twice (an A/A run shows the noise floor)
    torch_target = not (a.bundle and a.backends is None and not (a.checkpoint or a.variant))
    threads = _int_list(a.threads, "--threads", unique=False) if a.threads else [default_threads(torch_target)]
    if a.image_size is not None and (a.image_size % 32 or a.image_size < 64):
        raise InputError(f"--image-size must be a multiple of 32 and >= 64, got {a.image_size}")
    for d in a.bundle or []:
        if not Path(d).is_dir():
            raise InputError(f"--bundle {d!r} is not a folder")
    frames, source = load_frames(a.source, max(a.frames, a.warmup + 1, a.prompt_repeats))
    notes: List[str] = []
    load_start = load_average()
    cpus = os.cpu_count() or 1
    if load_start and load_start[0] > 0.75 * cpus:
        notes.append(f"the machine was busy at the start (1-min load average {load_start[0]} on {cpus} logical CPUs): "
                     "timings include waiting for the CPU. torch's OpenMP threads spin-wait for each other and "
                     "slow down by up to 100x when a core is taken: set OMP_WAIT_POLICY=PASSIVE (before starting) "
                     "or use --threads 1 on a shared machine")
    plan = Plan(a, threads, notes)
    try:
        targets = build_targets(a, plan, notes)
        if plan.random_weights and any(t.source.find("random weights") >= 0 for t in targets):
            notes.insert(0, RANDOM_WEIGHTS_NOTE)
        log.info("bench: %s; %d run(s) of %d frames",
                 ", ".join(f"{t.label} ({t.extra.get('describe')})" for t in targets), len(objects), a.frames)
        extra = run_bench(targets, frames, objects, a.frames, a.warmup, a.prompt_repeats,
                          False if a.no_progress else None)
        machine = machine_info()
        machine["load_average_start"] = load_start
        machine["load_average_end"] = load_average()
        t0 = targets[0]
        config = {
            "variant": t0.variant,
            "image_size": t0.image_size,
            "source": source,
            "clip_frames_used": len(frames),
            "clip_size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
            "frames": a.frames,
            "warmup": a.warmup,
            "prompt_repeats": a.prompt_repeats,
            "objects": objects,
            "threads": threads,
            "random_weights": plan.random_weights and not a.bundle,
            "steady_from_frame": extra["steady_from_frame"],
            "interleaved": True,
        }
        return report(targets, config, notes, machine, time.perf_counter() - t_start)
    finally:
        plan.cleanup()


@subcommand("bench")
def _bench(p: argparse.ArgumentParser):
    p.description = ("Benchmark the streaming tracker on this device: per-stage latency (median, p90), "
                     "first-frame latency, end-to-end FPS with full memory for 1 and 3 objects, resident "
                     "memory, model size, threads. Several backends / bundles run interleaved frame by frame "
                     "with ratios against the first. With no arguments: sam2.1-hiera-tiny with random "
                     "weights on the shipped sample clip, on every installed backend.")
    p.add_argument("--bundle", action="append", metavar="DIR", help="an exported bundle to benchmark (repeatable)")
    p.add_argument("--bundle-backend", default=None, help="backend for --bundle (default: the bundle's format)")
    p.add_argument("--variant", default=None,
                   help=f"model variant; without --checkpoint: random weights of it (default {DEFAULT_VARIANT})")
    p.add_argument("--checkpoint", default=None, help="official .pt checkpoint (torch; exported for other backends)")
    p.add_argument("--backends", default=None, metavar="LIST",
                   help="comma list of torch, onnx, executorch, coreml, all (onnx / executorch / coreml export a "
                        "temporary bundle). Default: torch with --checkpoint / --variant, every installed backend "
                        "without arguments, none with only --bundle")
    p.add_argument("--image-size", type=int, default=None, help="model input side (default: the variant's, 1024)")
    p.add_argument("--objects", default="1,3", metavar="K[,K]", help="object counts to stream (default 1,3)")
    p.add_argument("--frames", type=int, default=16,
                   help="frames per streaming run incl. the prompt frame; frames 8.. are measured (default 16)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up frames per target (default 2)")
    p.add_argument("--prompt-repeats", type=int, default=3, help="first-frame latency samples (default 3)")
    p.add_argument("--threads", default=None, metavar="T[,T]",
                   help="intra-op threads (torch.set_num_threads / ORT intra_op_num_threads / XNNPACK pool); "
                        "a list runs every target at each count. Default: torch's default (physical cores)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, mps; default cpu)")
    p.add_argument("--ort-providers", default=None, help="ONNX Runtime providers, e.g. cuda or tensorrt,cuda")
    p.add_argument("--source", default=None, help="video file or frames folder (default: the shipped sample clip)")
    p.add_argument("--export-dir", default=None, help="keep the bundles exported for --backends here")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON ('-': to stdout)")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="bar chart (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(a: argparse.Namespace) -> int:
        rep = bench(a)
        if a.json == "-":
            print(json.dumps(rep, indent=1))
        else:
            print(format_table(rep))
            if a.json:
                write_text(a.json, json.dumps(rep, indent=1), "--json")
                print(f"wrote {a.json}")
        if a.plot:
            plot(rep, a.plot)
            if a.json == "-":  # stdout is the JSON document
                log.info("wrote %s", a.plot)
            else:
                print(f"wrote {a.plot}")
        return 0
    return run
