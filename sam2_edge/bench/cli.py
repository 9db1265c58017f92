"""`sam2-edge bench`: the command line (registered by `sam2_edge.cli`) and the run it drives:
check the arguments, load the frames, build the targets, measure, report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import List

from ..cli import subcommand
from ..errors import ConfigError
from ..errors import InputError, OutputError
from ..outputs import check_file, check_writable_dir, write_text
from ..quiet import quiet
from ..sysinfo import load_average
from .probe import default_threads, machine_info
from .protocol import STEADY_FROM_DEFAULT, load_frames, run_bench
from .report import check_plot_available, format_table, plot, report
from .targets import DEFAULT_VARIANT, Plan, build_targets, default_export_dir

log = logging.getLogger(__name__)

# a run without --checkpoint / --bundle (random weights; `sam2-edge bench` with no arguments) uses a
# size and length that finish in minutes on a small CPU; --image-size / --frames ask for more
QUICK_IMAGE_SIZE = 512
QUICK_FRAMES = 12
QUICK_OBJECTS = "1"
QUICK_WARMUP = 1
QUICK_PROMPT_REPEATS = 2
FULL_FRAMES = 16
FULL_OBJECTS = "1,3"
FULL_WARMUP = 2
FULL_PROMPT_REPEATS = 3

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
    if a.export_dir:  # the folder bench caches exported bundles in (the default one is checked when used)
        check_writable_dir(a.export_dir, "--export-dir")
    if a.device != "cpu":
        from ..runtimes.backends.torch_backend import check_device

        check_device(a.device)
    a.dtypes = _dtypes(a.dtype, a.device)


def _dtypes(text: str, device: str) -> list:
    """--dtype D[,D] -> the torch rows' compute dtypes, each checked for this device now."""
    names = [d.strip().lower() for d in str(text).split(",") if d.strip()]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"--dtype takes a comma list of distinct dtypes (fp32, bf16), got {text!r}")
    if names == ["fp32"]:
        return names
    from ..runtimes.backends.torch_backend import check_dtype

    return [check_dtype(d, device) for d in names]


def _apply_defaults(a: argparse.Namespace) -> dict:
    """Fill the options left out (None); -> what was chosen for the user (config["defaults"]).
    Without --checkpoint / --bundle (random weights, e.g. no arguments at all) the quick profile:
    512 px, 12 frames, 1 object, 1 warm-up frame, 2 first-frame samples."""
    quick = not a.checkpoint and not a.bundle
    chosen = {}
    for name, q, full in (("frames", QUICK_FRAMES, FULL_FRAMES), ("objects", QUICK_OBJECTS, FULL_OBJECTS),
                          ("warmup", QUICK_WARMUP, FULL_WARMUP),
                          ("prompt_repeats", QUICK_PROMPT_REPEATS, FULL_PROMPT_REPEATS)):
        if getattr(a, name, None) is None:
            setattr(a, name, q if quick else full)
            chosen[name] = getattr(a, name)
    if a.image_size is None and quick:
        # the quick size, never above the variant's own (a 256-px student runs at 256)
        from ..configs import get_config, list_variants

        variant = getattr(a, "variant", None) or DEFAULT_VARIANT
        own = get_config(variant).image_size if variant in list_variants() else QUICK_IMAGE_SIZE
        if own < QUICK_IMAGE_SIZE:
            a.image_size = own
        else:
            a.image_size = QUICK_IMAGE_SIZE
            chosen["image_size"] = a.image_size
    return chosen


def bench(a: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    chosen = _apply_defaults(a)
    _check_outputs(a)
    if a.frames <= STEADY_FROM_DEFAULT:
        raise InputError(f"--frames must be > {STEADY_FROM_DEFAULT}: the objects' memory is full from frame "
                         f"{STEADY_FROM_DEFAULT} on, and only those frames are measured")
    if a.warmup < 0 or a.prompt_repeats < 1:
        raise InputError("--warmup must be >= 0 and --prompt-repeats >= 1")
    objects = _int_list(a.objects, "--objects")
    # a repeated count is kept: `--threads 2,2` runs every target twice (an A/A run shows the noise floor)
    notes: List[str] = []
    load_start = load_average()
    cpus = os.cpu_count() or 1
    busy = bool(load_start and load_start[0] > 0.75 * cpus)
    if busy and "image_size" in chosen and "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        # the quick default on a busy machine: torch's OpenMP threads would spin-wait for a pre-empted
        # peer (up to 100x slower); passive waiting is what such a machine should run with
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        notes.append("the machine was busy at the start: this quick run set OMP_WAIT_POLICY=PASSIVE for torch "
                     "(its OpenMP threads sleep instead of spinning while a core is taken); set OMP_WAIT_POLICY "
                     "yourself to choose")
    torch_target = not (a.bundle and a.backends is None and not (a.checkpoint or a.variant))
    threads = _int_list(a.threads, "--threads", unique=False) if a.threads else [default_threads(torch_target)]
    if a.image_size is not None and (a.image_size % 32 or a.image_size < 64):
        raise InputError(f"--image-size must be a multiple of 32 and >= 64, got {a.image_size}")
    for d in a.bundle or []:
        if not Path(d).is_dir():
            raise InputError(f"--bundle {d!r} is not a folder")
    frames, source = load_frames(a.source, max(a.frames, a.warmup + 1, a.prompt_repeats))
    if busy:
        notes.append(f"the machine was busy at the start (1-min load average {load_start[0]} on {cpus} logical CPUs): "
                     "timings include waiting for the CPU" + (
                         "" if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else
                         ". torch's OpenMP threads spin-wait for each other and slow down by up to 100x when a "
                         "core is taken: set OMP_WAIT_POLICY=PASSIVE (before starting) or use --threads 1 on a "
                         "shared machine"))
    if not a.checkpoint and not a.bundle and chosen:
        said = []
        if "image_size" in chosen:
            said.append(f"{a.variant or DEFAULT_VARIANT} at {a.image_size} px (the released models run at 1024: "
                        "--image-size 1024 for their speed, about 4x the compute)")
        if "frames" in chosen:
            said.append(f"{a.frames} frames ({a.frames - STEADY_FROM_DEFAULT} measured; --frames 16 for more)")
        if "objects" in chosen:
            said.append(f"{a.objects} object (--objects 1,3 adds the 3-object run)")
        if "warmup" in chosen or "prompt_repeats" in chosen:
            said.append(f"{a.warmup} warm-up frame(s), {a.prompt_repeats} first-frame samples")
        notes.append("quick default (sized to finish in minutes on a small CPU): " + "; ".join(said))
    if a.checkpoint and len(a.checkpoint) > 1 and a.variant:
        raise InputError("--variant names the variant of one checkpoint; with several --checkpoint each one's "
                         "variant is read from its weights (leave --variant out)")
    plans = [Plan(a, threads, notes, checkpoint=c) for c in (a.checkpoint or [None])]
    plan = plans[0]
    try:
        try:
            targets = build_targets(a, plans, notes)
        except KeyboardInterrupt:
            done = [e["bundle"] for p in plans for e in p.exports.values()]
            log.warning("interrupted before any measurement: nothing to report%s", f" (bundles kept for the next "
                        f"run: {', '.join(done)})" if done else "")
            raise
        if plan.random_weights and any(t.source.find("random weights") >= 0 for t in targets):
            notes.insert(0, RANDOM_WEIGHTS_NOTE)
        log.info("bench: %s; %d run(s) of %d frames",
                 ", ".join(f"{t.label} ({t.extra.get('describe')})" for t in targets), len(objects), a.frames)
        # the runtimes' native logging (XNNPACK's cpuinfo, thread-pool resizes) stays off the terminal
        with quiet(fd=True) as terminal:
            extra = run_bench(targets, frames, objects, a.frames, a.warmup, a.prompt_repeats,
                              False if a.no_progress else None, stream=terminal)
        interrupted = extra.get("interrupted_during") if extra.get("interrupted") else None
        if interrupted:
            notes.append(f"interrupted (Ctrl-C) during {interrupted}: these are the results measured before")
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
            "defaults": chosen,  # what this run chose for options left out (quick default size / frames)
            "export_dir": str(plan.export_dir()),
            # format -> {"bundle", "cached", "export_seconds"}; with several --checkpoint: "<format>:<file name>"
            "exports": plan.exports if len(plans) == 1 else {
                f"{fmt}:{Path(str(p.given_checkpoint)).name}": e for p in plans for fmt, e in p.exports.items()},
            "checkpoints": list(a.checkpoint or []),
            "random_weights": plan.random_weights and not a.bundle,
            "steady_from_frame": extra["steady_from_frame"],
            "interleaved": True,
            "settle_ms": extra.get("settle_ms", 0),  # idle time before each interleaved timed call
        }
        return report(targets, config, notes, machine, time.perf_counter() - t_start, plan.skipped, interrupted)
    finally:
        for p in plans:
            p.cleanup()


@subcommand("bench")
def _bench(p: argparse.ArgumentParser):
    p.description = ("Benchmark the streaming tracker on this device: per-stage latency (median, p90), "
                     "first-frame latency, end-to-end FPS with full memory for 1 and 3 objects, resident "
                     "memory, model size, threads. Several backends / bundles run interleaved frame by frame "
                     "with ratios against the first. With no arguments: sam2.1-hiera-tiny with random "
                     f"weights at {QUICK_IMAGE_SIZE} px, {QUICK_FRAMES} frames, 1 object, on the shipped sample clip, on "
                     "every backend that runs here (a few minutes on a small CPU; the bundles it exports are "
                     "cached for the next run). Ctrl-C stops it and still prints / writes the results so far.")
    p.add_argument("--bundle", action="append", metavar="DIR", help="an exported bundle to benchmark (repeatable)")
    p.add_argument("--bundle-backend", default=None, help="backend for --bundle (default: the bundle's format)")
    p.add_argument("--variant", default=None,
                   help=f"model variant; without --checkpoint: random weights of it (default {DEFAULT_VARIANT})")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="official .pt checkpoint (torch; exported for other backends). Repeatable: every "
                        "backend runs each checkpoint, interleaved, labelled with its variant (e.g. a student "
                        "beside its teacher)")
    p.add_argument("--backends", default=None, metavar="LIST",
                   help="comma list of torch, onnx, executorch, coreml, all (onnx / executorch / coreml export a "
                        "bundle, cached in --export-dir). 'all': every backend that runs here, the others listed "
                        "as skipped with the reason; a backend named that cannot run is an error. Default: torch "
                        "with --checkpoint / --variant, all without arguments, none with only --bundle")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"model input side (default: {QUICK_IMAGE_SIZE} with random weights, the quick default; "
                        "the checkpoint's, 1024, with --checkpoint)")
    p.add_argument("--objects", default=None, metavar="K[,K]",
                   help=f"object counts to stream (default {QUICK_OBJECTS} with random weights, {FULL_OBJECTS} "
                        "with --checkpoint / --bundle)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames per streaming run incl. the prompt frame; frames 8.. are measured (default "
                        f"{QUICK_FRAMES} with random weights, {FULL_FRAMES} with --checkpoint / --bundle)")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"warm-up frames per target (default {QUICK_WARMUP} with random weights, {FULL_WARMUP} "
                        "otherwise)")
    p.add_argument("--prompt-repeats", type=int, default=None,
                   help=f"first-frame latency samples (default {QUICK_PROMPT_REPEATS} with random weights, "
                        f"{FULL_PROMPT_REPEATS} otherwise)")
    p.add_argument("--threads", default=None, metavar="T[,T]",
                   help="intra-op threads (torch.set_num_threads / ORT intra_op_num_threads / XNNPACK pool); "
                        "a list runs every target at each count. Default: torch's default (physical cores)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, mps; default cpu)")
    p.add_argument("--dtype", default="fp32", metavar="D[,D]",
                   help="torch compute dtype(s): fp32 (default), bf16 (autocast; a CPU with AVX512-BF16 / AMX, "
                        "an Ampere+ GPU or Apple MPS); a list gives one torch row per dtype, interleaved")
    p.add_argument("--ort-providers", default=None, help="ONNX Runtime providers, e.g. cuda or tensorrt,cuda")
    p.add_argument("--source", default=None, help="video file or frames folder (default: the shipped sample clip)")
    p.add_argument("--export-dir", default=None,
                   help=f"where the bundles exported for --backends are cached and reused when valid (default "
                        f"$XDG_CACHE_HOME/sam2-edge/bundles, here {default_export_dir()}); one folder per "
                        "<variant>-<size>-<format>-<hash of the weights>")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON ('-': to stdout)")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="bar chart (needs matplotlib: pip install 'sam2-edge[plot]')")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (a bar on a terminal, a log line every 15 s otherwise)")

    def run(a: argparse.Namespace) -> int:
        rep = bench(a)
        rc = 130 if rep.get("interrupted") else 0
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
        if rc:
            log.warning("interrupted: %s the results measured before Ctrl-C", "wrote" if a.json else "printed")
        return rc
    return run
