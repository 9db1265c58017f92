"""Profile ONE tracking step of the streaming tracker with the torch backend (torch.profiler).

    python benchmarks/profile_step.py                          # sam2.1-hiera-tiny, random weights, 1024
    python benchmarks/profile_step.py --image-size 512 --threads 1 --objects 3 --json prof.json
    python benchmarks/profile_step.py --trace step.json        # chrome://tracing / Perfetto timeline

Streams the shipped sample clip until every object's memory ring is full (`--fill`, default 8
frames), then:

1. times one `Tracker.track` step without the profiler: the share of each stage (and of the
   tracker's own pre/post-processing) in the step;
2. profiles one more step: the operators with the largest self CPU time over the whole step
   (the top costs), with their input shapes;
3. profiles each stage alone on the inputs it got in that step: its top operators.

Random weights by default: the operators, shapes and so the costs do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from sam2_edge import bench as B
from sam2_edge.contract import STAGES


class Recorder:
    """Wraps a backend: keeps the last inputs of each stage and labels each call for the profiler."""

    def __init__(self, inner) -> None:
        self.inner, self.spec, self.name = inner, inner.spec, inner.name
        self.last: Dict[str, tuple] = {}
        self.label = False

    def run(self, stage, inputs):
        self.last[stage] = tuple(np.array(a, copy=True) for a in inputs)
        if self.label:
            import torch

            with torch.profiler.record_function(f"stage::{stage}"):
                return self.inner.run(stage, inputs)
        return self.inner.run(stage, inputs)

    def describe(self) -> str:
        return self.inner.describe()


def _ops(prof, top: int, total_us: float, shapes: bool) -> List[dict]:
    events = prof.key_averages(group_by_input_shape=shapes)
    rows = sorted((e for e in events if not e.key.startswith("stage::")), key=lambda e: e.self_cpu_time_total,
                  reverse=True)
    out = []
    for e in rows[:top]:
        out.append({"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count,
                    "share": e.self_cpu_time_total / total_us if total_us else None,
                    "input_shapes": str(e.input_shapes)[:160] if shapes else None})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default=B.DEFAULT_VARIANT)
    p.add_argument("--checkpoint", default=None, help="official checkpoint (default: random weights, seed 0)")
    p.add_argument("--image-size", type=int, default=None, help="model input side (default: the variant's, 1024)")
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--fill", type=int, default=B.STEADY_FROM_DEFAULT, help="frames streamed before the step")
    p.add_argument("--top", type=int, default=10, help="operators listed for the whole step")
    p.add_argument("--repeats", type=int, default=1, help="profiled runs of each stage alone (default 1)")
    p.add_argument("--trace", default=None, help="write a chrome trace of the profiled step")
    p.add_argument("--json", default=None, help="write the findings as JSON")
    a = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from sam2_edge.checkpoint import build_sam2
    from sam2_edge.runtimes import Tracker
    from sam2_edge.runtimes.backends.torch_backend import TorchBackend

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_sam2(None if a.checkpoint else a.variant, checkpoint=a.checkpoint, image_size=a.image_size)
    rec = Recorder(TorchBackend(model))
    tracker = Tracker(rec)  # type: ignore[arg-type]
    frames, _ = B.load_frames(None, 24)
    frame = lambda i: frames[i % len(frames)]  # noqa: E731
    h, w = frames[0].shape[:2]
    load0 = B.load_average()
    t0 = time.perf_counter()
    for j, pr in enumerate(B.object_prompts(a.objects, w, h)):
        tracker.add_prompt(frame(0) if j == 0 else None, j + 1, **pr)
    for i in range(1, a.fill):
        tracker.track(frame(i))
        print(f"\rfilling memory: frame {i}/{a.fill - 1}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    # 1. one plain step: per-stage shares
    res = tracker.track(frame(a.fill))
    t = res.timings
    stages = {s: getattr(t, s) for s in STAGES}
    stages["pre_post"] = max(0.0, t.total - sum(stages.values()))
    shares = {s: v / t.total for s, v in stages.items()}

    # 2. one profiled step
    rec.label = True
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        res2 = tracker.track(frame(a.fill + 1))
    rec.label = False
    if a.trace:
        prof.export_chrome_trace(a.trace)
    events = prof.key_averages()
    total_self_us = sum(e.self_cpu_time_total for e in events)
    stage_us = {e.key[7:]: e.cpu_time_total for e in events if e.key.startswith("stage::")}
    top_ops = _ops(prof, a.top, total_self_us, shapes=False)
    top_shapes = _ops(prof, a.top, total_self_us, shapes=True)

    # 3. each stage alone on the inputs it got in that step
    per_stage = {}
    inputs = dict(rec.last)
    for s in STAGES:
        rec.inner.run(s, inputs[s])  # warm
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as ps:
            for _ in range(a.repeats):
                rec.inner.run(s, inputs[s])
        tot = sum(e.self_cpu_time_total for e in ps.key_averages())
        top = _ops(ps, 3, tot, shapes=True)
        for r in top:  # per run
            r["self_ms"] /= a.repeats
            r["calls"] //= a.repeats
        per_stage[s] = {"total_ms": tot / 1e3 / a.repeats, "top": top}

    load1 = B.load_average()
    out = {
        "variant": model.cfg.name, "image_size": model.cfg.image_size, "objects": a.objects,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "random_weights": not a.checkpoint,
        "machine": B.machine_info(), "load_average_start": load0, "load_average_end": load1,
        "step_ms": t.total, "stage_ms": stages, "stage_share": shares,
        "profiled_step_ms": res2.timings.total, "profiled_stage_ms": {k: v / 1e3 for k, v in stage_us.items()},
        "top_ops": top_ops, "top_ops_by_shape": top_shapes, "per_stage": per_stage,
        "elapsed_s": time.perf_counter() - t0,
    }

    m = out["machine"]
    print(f"one tracking step: {out['variant']} @ {out['image_size']}, {a.objects} object(s), torch "
          f"{torch.__version__} eager fp32, {out['threads']} thread(s), memory full (frame {a.fill}); "
          f"{m['board'] or m['cpu']}, load average {load0} -> {load1}")
    print(f"\nstep {t.total:.1f} ms (unprofiled)")
    for s, v in stages.items():
        print(f"  {s:17s} {v:10.1f} ms  {100 * shares[s]:5.1f} %")
    print(f"\ntop operators by self CPU time over the profiled step ({res2.timings.total:.1f} ms with profiler):")
    for r in top_ops:
        print(f"  {r['op']:45s} {r['self_ms']:10.1f} ms  {100 * r['share']:5.1f} %  x{r['calls']}")
    print("\nthe same, split by input shapes:")
    for r in top_shapes[:5]:
        print(f"  {r['op']:45s} {r['self_ms']:10.1f} ms  {100 * r['share']:5.1f} %  x{r['calls']}  {r['input_shapes']}")
    for s, d in per_stage.items():
        print(f"\n{s} alone: {d['total_ms']:.1f} ms self CPU; top 3:")
        for r in d["top"]:
            print(f"  {r['op']:45s} {r['self_ms']:10.1f} ms  {100 * r['share']:5.1f} %  x{r['calls']}  "
                  f"{r['input_shapes']}")
    if a.json:
        Path(a.json).write_text(json.dumps(B._round(out), indent=1))
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
