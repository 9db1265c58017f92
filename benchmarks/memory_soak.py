"""Bounded-memory soak: resident memory of a tracker with three objects after N frames.

    python benchmarks/memory_soak.py --frames 10000 [--checkpoint CKPT | --bundle DIR] [--json OUT]

Prints RSS after 200 frames and at the end, their ratio, and tracker.memory_bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sam2_edge.runtimes.video import read_frames
from sam2_edge.sysinfo import rss_bytes

ROOT = Path(__file__).resolve().parents[1]


def soak(tracker, frames, n: int, checkpoints=(200,), log_every: int = 1000):
    h, w = frames[0].shape[:2]
    tracker.reset()
    tracker.add_prompt(frames[0], 1, points=[[w * 0.22, h * 0.65]], labels=[1])
    tracker.add_prompt(None, 2, box=[w * 0.31, 0, w * 0.54, h * 0.74])
    tracker.add_prompt(None, 3, points=[[w * 0.62, h * 0.66]], labels=[1])
    marks = {}
    t0 = time.perf_counter()
    for i in range(1, n):
        tracker.track(frames[i % len(frames)])
        if i + 1 in checkpoints:
            marks[i + 1] = (rss_bytes(), tracker.memory_bytes)
        if log_every and (i + 1) % log_every == 0:
            print(f"{i + 1} frames, rss {rss_bytes() / 2**20:.1f} MiB, {(i + 1) / (time.perf_counter() - t0):.1f} fps",
                  file=sys.stderr, flush=True)
    marks[n] = (rss_bytes(), tracker.memory_bytes)
    return marks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--checkpoint", default=str(ROOT / "tests/fixtures/micro/sam2.1_hiera_micro_seed14.fp16.pt"))
    p.add_argument("--bundle", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    from sam2_edge.runtimes import Tracker

    tracker = Tracker.from_bundle(a.bundle, threads=1) if a.bundle else Tracker.from_checkpoint(a.checkpoint)
    frames = list(read_frames(str(ROOT / "tests/fixtures/micro_stream/frames"))[0])
    marks = soak(tracker, frames, a.frames)
    (r200, mb200), (rend, mbend) = marks[200], marks[a.frames]
    out = {"frames": a.frames, "objects": 3, "rss_after_200": r200, f"rss_after_{a.frames}": rend,
           "rss_ratio": rend / r200, "memory_bytes_after_200": mb200, "memory_bytes_end": mbend,
           "backend": tracker.backend.describe()}
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
