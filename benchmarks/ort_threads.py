"""ONNX Runtime thread-pool settings for a bundle's four stage sessions, run in tracker order.

    python benchmarks/ort_threads.py BUNDLE [--threads 2] [--frames 5] [--rounds 2]

Each stage of an ONNX bundle is its own InferenceSession with its own intra-op pool; this runs the
four stages one after the other as the tracker does (image encoder, memory attention, mask
decoder, memory encoder; seeded example inputs of the bundle's spec, arenas off as the backend's
low-memory default) under three settings, each in a fresh process (a process-wide pool can only
be chosen before the first session), the settings alternated for --rounds rounds:

* `spin`: ONNX Runtime's default, workers busy-wait after a run;
* `nospin`: `session.intra_op.allow_spinning = 0` (what `OnnxRuntimeBackend` sets);
* `global`: one process-wide pool (`set_global_thread_pool_sizes`, `use_per_session_threads=False`).

Prints the median ms per stage and per frame of --frames frames after one warm-up frame.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ("spin", "nospin", "global")
STAGES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")


def run_mode(bundle: str, mode: str, threads: int, frames: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    if mode == "global":
        from onnxruntime.capi import _pybind_state

        _pybind_state.set_global_thread_pool_sizes(threads, 1)
    from sam2_edge.contract import load_manifest
    from sam2_edge.contract.examples import example_inputs

    m = load_manifest(bundle)
    sessions, feeds = {}, {}
    for s in STAGES:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_cpu_mem_arena = False
        if mode == "nospin":
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if mode == "global":
            so.use_per_session_threads = False
        sessions[s] = ort.InferenceSession(str(m.graphs[s].path), so, providers=["CPUExecutionProvider"])
        feeds[s] = dict(zip([i.name for i in sessions[s].get_inputs()], example_inputs(m.spec, s)))
    times = {s: [] for s in STAGES}
    for f in range(frames + 1):
        for s in STAGES:
            t0 = time.perf_counter()
            sessions[s].run(None, feeds[s])
            if f:  # frame 0 warms up
                times[s].append(time.perf_counter() - t0)
    out = {s: round(float(np.median(v)) * 1e3, 1) for s, v in times.items()}
    out["frame"] = round(sum(out.values()), 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="an fp32 ONNX bundle folder (sam2-edge export --format onnx)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # the child process
    a = p.parse_args(argv)
    if a.mode:
        print(json.dumps(run_mode(a.bundle, a.mode, a.threads, a.frames)))
        return 0
    from sam2_edge.contract import load_manifest
    from sam2_edge.sysinfo import cpu_name

    from sam2_edge.errors import Sam2EdgeError

    try:
        m = load_manifest(a.bundle)  # a missing or foreign folder fails here, with the contract's message
    except Sam2EdgeError as e:
        p.error(str(e))
    if m.format != "onnx":
        p.error(f"{a.bundle} is a {m.format} bundle; give an ONNX one")
    print(f"CPU {cpu_name()}, {a.threads} threads, load {os.getloadavg()[0]:.2f}; median ms of {a.frames} frames")
    print(f"{'round':>5} {'mode':7} " + " ".join(f"{s[:16]:>16}" for s in STAGES) + f" {'frame':>8}")
    for r in range(a.rounds):
        for mode in MODES:
            cmd = [sys.executable, os.path.abspath(__file__), a.bundle, "--mode", mode, "--threads", str(a.threads),
                   "--frames", str(a.frames)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{r + 1:>5} {mode:7} " + " ".join(f"{row[s]:>16.1f}" for s in STAGES) + f" {row['frame']:>8.1f}")
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
