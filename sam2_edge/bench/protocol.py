"""How `sam2-edge bench` measures: the frames and prompts every target gets, and the
interleaved loop (cold first frame and warm-up, first-frame latency, streaming with full
memory) that fills each Target's results.

Interleaving fairness: every runtime's worker threads spin for a while after a call before they
sleep (OpenMP in torch, ONNX Runtime's pool, XNNPACK's pthreadpool), so on a 2-core machine the
target that runs next can find its cores taken. When several targets interleave, each timed call
starts after SETTLE_S of idle time (not counted). Measured: it does not remove the whole effect
-- torch's tiny @ 512 image encoder is ~640 ms in a run with ONNX Runtime and ExecuTorch targets,
with or without the pause, vs ~440 ms in a torch-only run (benchmarks/README.md) -- so compare a
runtime with torch also in runs of their own."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..progress import Progress
from ..sysinfo import rss_bytes
from .targets import Target

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_CLIP = ASSETS / "bedroom_480x270_24f.mp4"
STAGE_NAMES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
ROWS = STAGE_NAMES + ("pre_post", "total")  # pre_post = total - the four stages
# frames are measured once every object's memory ring is full: from frame num_maskmem + 1 on
# (num_maskmem = 7 in every released variant; the run checks each target's spec)
STEADY_FROM_DEFAULT = 8
SETTLE_S = 0.05  # idle time before each timed call when targets interleave (module docstring)


def stats(xs: Sequence[float]) -> Dict[str, float]:
    a = np.asarray(xs, np.float64)
    if a.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "mean": float("nan"), "min": float("nan"), "n": 0}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "min": float(a.min()), "n": int(a.size)}


# ---------------------------------------------------------------------------------- frames / prompts
def load_frames(source: Optional[str], limit: int) -> Tuple[List[np.ndarray], str]:
    """Up to `limit` decoded RGB frames of a video file or frames folder (default: the shipped clip)."""
    from ..runtimes.video import read_frames

    src = str(source) if source else str(SAMPLE_CLIP)
    if not source and not SAMPLE_CLIP.is_file():
        raise InputError(f"the sample clip {SAMPLE_CLIP} is missing from this installation; pass --source VIDEO")
    it, _, _ = read_frames(src)
    frames = []
    for rgb in it:
        frames.append(np.ascontiguousarray(rgb))
        if len(frames) >= limit:
            break
    if hasattr(it, "close"):
        it.close()
    if not frames:
        raise InputError(f"no frames could be decoded from {src!r}")
    return frames, src


def object_prompts(k: int, w: int, h: int) -> List[dict]:
    """Prompts for `k` objects: the first three are the people / bed of the sample clip
    (click, box, click); more objects get clicks on a grid."""
    base = [
        {"points": [[w * 0.22, h * 0.65]], "labels": [1]},
        {"box": [w * 0.31, h * 0.02, w * 0.54, h * 0.74]},
        {"points": [[w * 0.62, h * 0.66]], "labels": [1]},
    ]
    out = base[:k]
    i = 0
    while len(out) < k:
        gx, gy = (i % 5 + 0.5) / 5, ((i // 5) % 4 + 0.5) / 4
        out.append({"points": [[w * gx, h * gy]], "labels": [1]})
        i += 1
    return out


# ---------------------------------------------------------------------------------- measurement
def _timings(res) -> Dict[str, float]:
    t = res.timings
    d = {s: float(getattr(t, s)) for s in STAGE_NAMES}
    d["total"] = float(t.total)
    d["pre_post"] = max(0.0, d["total"] - sum(d[s] for s in STAGE_NAMES))
    return d


def _add(acc: Optional[Dict[str, float]], d: Dict[str, float]) -> Dict[str, float]:
    if acc is None:
        return dict(d)
    return {k: acc[k] + d[k] for k in acc}


def _rotate(targets: List[Target], i: int) -> List[Target]:
    k = i % len(targets)
    return targets[k:] + targets[:k]


def _prompt_frame(t: Target, frame: np.ndarray, prompts: List[dict]) -> Dict[str, float]:
    """Prompt len(prompts) objects on a new frame; the summed timings of the calls."""
    acc = None
    for j, p in enumerate(prompts):
        res = t.call(lambda j=j, p=p: t.tracker.add_prompt(frame if j == 0 else None, j + 1, **p))
        acc = _add(acc, _timings(res))
    return acc


def _finish_run(t: Target, k: int, first: Optional[Dict[str, float]], fr: List[Dict[str, float]],
                complete: bool) -> None:
    totals = [f["total"] for f in fr]
    t.runs[k] = {
        "objects": k,
        "frames_measured": len(fr),
        "complete": complete,  # False: interrupted (Ctrl-C) before the last frame
        "prompt_frame_ms": None if first is None else first["total"],  # all k objects prompted on frame 0
        "stages_ms": {s: stats([f[s] for f in fr]) for s in ROWS},
        "fps": 1000.0 * len(totals) / sum(totals) if totals and sum(totals) > 0 else None,
        "tracker_memory_bytes": int(t.tracker.memory_bytes),
    }


def _fmt(x: Optional[float], unit: str) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.3g} {unit}"


def run_bench(targets: List[Target], frames: List[np.ndarray], objects: List[int], n_frames: int, warmup: int,
              prompt_repeats: int, show_progress: Optional[bool], stream=None) -> dict:
    """Measure every target (results in the Targets). Ctrl-C stops the measuring but keeps what
    was measured: the returned dict then has "interrupted": True and the streaming run in
    progress is kept with the frames measured so far ("complete": False)."""
    h, w = frames[0].shape[:2]
    nf = len(frames)
    frame = lambda i: frames[i % nf]  # noqa: E731 - a short clip loops
    steady_from = max(t.tracker.spec.num_maskmem for t in targets) + 1
    if n_frames <= steady_from:
        raise InputError(f"--frames must be > {steady_from}: the objects' memory is full from frame {steady_from} "
                         "on, and only those frames are measured")
    n = len(targets)
    total = n * (1 + warmup) + n * prompt_repeats + sum(n * (k + n_frames - 1) for k in objects)
    one = object_prompts(1, w, h)
    phase = "loading"
    per: Dict[str, dict] = {}
    k_running: Optional[int] = None
    with Progress(total, "bench", stream=stream, enabled=show_progress) as bar:
        try:
            # 1. cold first frame + warm-up, one target after the other (RSS added by each)
            phase = "warm-up"
            for t in targets:
                gc.collect()
                r0 = rss_bytes()
                t.tracker.reset()
                t.cold_first_ms = _prompt_frame(t, frame(0), one)["total"]
                bar.update(1, t.label)
                for i in range(1, warmup + 1):
                    t.call(lambda i=i: t.tracker.track(frame(i)))
                    bar.update(1, t.label)
                r1 = rss_bytes()
                t.rss_added = None if (r0 is None or r1 is None) else r1 - r0 + t.extra.pop("rss_load", 0)
                bar.message(f"bench: {t.label}: cold first frame {_fmt(t.cold_first_ms, 'ms')}")
            # 2. first-frame (prompt) latency, interleaved
            phase = "first-frame latency"
            settle = (lambda: time.sleep(SETTLE_S)) if n > 1 else (lambda: None)
            for r in range(prompt_repeats):
                for t in _rotate(targets, r):
                    t.tracker.reset()
                    settle()
                    t.prompt_samples.append(_prompt_frame(t, frame(r), one))
                    bar.update(1, t.label)
            for t in targets:
                xs = [p["total"] for p in t.prompt_samples]
                bar.message(f"bench: {t.label}: first frame {_fmt(float(np.median(xs)), 'ms')} median "
                            f"of {len(xs)}")
            # 3. streaming, interleaved frame by frame, for each object count
            for k in objects:
                phase = f"streaming {k} object{'s' if k > 1 else ''}"
                k_running = k
                prompts = object_prompts(k, w, h)
                per = {}
                for t in targets:
                    t.tracker.reset()
                    per[t.label] = {"first": None, "frames": []}
                for t in targets:
                    per[t.label]["first"] = _prompt_frame(t, frame(0), prompts)
                    bar.update(k, f"{t.label} {k} obj")
                gc.collect()
                for i in range(1, n_frames):
                    for t in _rotate(targets, i):
                        settle()
                        res = t.call(lambda i=i: t.tracker.track(frame(i)))
                        if i >= steady_from:
                            per[t.label]["frames"].append(_timings(res))
                        bar.update(1, f"{t.label} {k} obj frame {i}")
                for t in targets:
                    _finish_run(t, k, per[t.label]["first"], per[t.label]["frames"], True)
                    run = t.runs[k]
                    bar.message(f"bench: {t.label}: {k} obj {_fmt(run['fps'], 'fps')}, "
                                f"{_fmt(run['stages_ms']['total']['median'], 'ms')} per frame median")
                k_running = None
        except KeyboardInterrupt:
            if k_running is not None:  # keep the frames of the run in progress that were measured
                for t in targets:
                    p = per.get(t.label)
                    if p is not None and p["frames"]:
                        _finish_run(t, k_running, p["first"], p["frames"], False)
            return {"steady_from_frame": steady_from, "interrupted": True, "interrupted_during": phase}
    return {"steady_from_frame": steady_from, "interrupted": False, "settle_ms": 1000 * SETTLE_S if n > 1 else 0}
