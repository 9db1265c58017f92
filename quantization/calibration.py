"""Calibration data from real frames: the inputs each stage graph really receives while the fp32
tracker follows objects through a video, recorded by a backend wrapper.

Frames come from a video file or a folder of images (default: the clip shipped in the package,
`sam2_edge/assets/bedroom_480x270_24f.mp4`). Objects are prompted automatically on the first
frame with fixed prompts (a centred box, then clicks), so a run is reproducible: the same
frames and prompts give the same samples (nothing is random).

Application layer: it drives the runtime's `Tracker`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..contract import STAGES
from ..errors import InputError

log = logging.getLogger(__name__)

def sample_clip() -> Path:
    from ..bench.protocol import SAMPLE_CLIP

    return Path(SAMPLE_CLIP)


def load_frames(source: Optional[str], needed: int, flag: str = "--calib") -> Tuple[List[np.ndarray], str]:
    """The first `needed` RGB frames of `source` (a video file or an image folder; None: the
    shipped clip). InputError naming the fix when it is missing, unreadable, empty or shorter."""
    from ..runtimes.video import read_frames
    from ..runtimes.video.sources import SourceError

    src = str(source) if source else str(sample_clip())
    if source is None and not Path(src).is_file():
        raise InputError(f"the sample clip {src} is missing from this installation; pass {flag} VIDEO_OR_FOLDER")
    if source is not None and not Path(src).exists():
        raise InputError(f"{flag} {src!r} does not exist; give a video file or a folder of .jpg/.png frames")
    try:
        it, _, _ = read_frames(src)
    except SourceError as e:
        raise InputError(f"{flag} {src!r}: {e}; give a readable video file or a folder of .jpg/.png frames") from None
    frames: List[np.ndarray] = []
    try:
        for rgb in it:
            frames.append(np.ascontiguousarray(rgb))
            if len(frames) >= needed:
                break
    except Exception as e:  # noqa: BLE001 - a decoder error on a corrupt file
        raise InputError(f"{flag} {src!r}: cannot decode frames ({e}); give a readable video or image folder") \
            from None
    finally:
        if hasattr(it, "close"):
            it.close()
    if not frames:
        raise InputError(f"{flag} {src!r}: no frame could be decoded (empty or not a video / image folder); "
                         "give a readable video file or a folder of .jpg/.png frames")
    if len(frames) < needed:
        raise InputError(f"{flag} {src!r} has only {len(frames)} frames; calibration needs {needed} "
                         "(--calib-frames + --holdout-frames): give a longer video or lower those numbers")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise InputError(f"{flag} {src!r}: frames differ in size ({sorted(shapes)[:3]}); give frames of one size")
    return frames, src


def auto_prompts(w: int, h: int, k: int = 2) -> List[dict]:
    """Fixed prompts for `k` objects on the first frame: a centred box, then positive clicks
    left and right of centre, then a grid of clicks."""
    out: List[dict] = [{"box": [w * 0.30, h * 0.25, w * 0.70, h * 0.75]},
                       {"points": [[w * 0.20, h * 0.60]], "labels": [1]},
                       {"points": [[w * 0.80, h * 0.40]], "labels": [1]}]
    i = 0
    while len(out) < k:
        gx, gy = (i % 4 + 0.5) / 4, ((i // 4) % 4 + 0.5) / 4
        out.append({"points": [[w * gx, h * gy]], "labels": [1]})
        i += 1
    return out[:k]


class RecordingBackend:
    """Wraps a backend: every stage call's inputs are copied (the tracker reuses its buffers)
    and kept with the current frame index."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.spec = backend.spec
        self.frame = 0
        self.samples: Dict[str, List[Tuple[int, Tuple[np.ndarray, ...]]]] = {s: [] for s in STAGES}

    def object_batches(self, n: int) -> List[int]:
        """One object per call: the samples are the batch-1 inputs the quantised graphs receive."""
        return [1] * n

    def run(self, stage: str, inputs):
        self.samples[stage].append((self.frame, tuple(np.array(a, copy=True) for a in inputs)))
        return self.backend.run(stage, inputs)

    def describe(self) -> str:
        return f"recording {getattr(self.backend, 'describe', lambda: '?')()}"


@dataclass
class TrackRun:
    masks: List[Dict[int, np.ndarray]]  # per frame: object id -> H x W bool
    samples: Dict[str, List[Tuple[int, Tuple[np.ndarray, ...]]]] = field(default_factory=dict)


def track_clip(backend, frames: Sequence[np.ndarray], prompts: Sequence[dict], record: bool = False,
               first_masks: Optional[Mapping[int, np.ndarray]] = None) -> TrackRun:
    """Run the streaming tracker over `frames` with `prompts` on frame 0 (objects 1..k), or with
    `first_masks` ({id: mask}) as frame-0 mask prompts; the masks of every frame."""
    from ..runtimes import Tracker

    rec = RecordingBackend(backend) if record else None
    tracker = Tracker(rec if rec is not None else backend)
    out: List[Dict[int, np.ndarray]] = []
    for i, frame in enumerate(frames):
        if rec is not None:
            rec.frame = i
        if i == 0:
            res = None
            items = list(first_masks.items()) if first_masks is not None else list(enumerate(prompts, 1))
            for j, (oid, p) in enumerate(items):
                kw = {"mask": p} if first_masks is not None else p
                res = tracker.add_prompt(frame if j == 0 else None, int(oid), **kw)
        else:
            res = tracker.track(frame)
        out.append({int(o): res.masks[k].copy() for k, o in enumerate(res.object_ids)})
    return TrackRun(out, rec.samples if rec is not None else {})


def split_samples(samples: Mapping[str, List[Tuple[int, Tuple[np.ndarray, ...]]]], names: Mapping[str, Sequence[str]],
                  calib_frames: int, max_per_stage: int = 48) -> Dict[str, Dict[str, List[dict]]]:
    """{stage: {"calibration": [...], "held_out": [...]}}: samples of frames < calib_frames
    calibrate, the later ones are held out; each list is thinned evenly to `max_per_stage`."""
    out: Dict[str, Dict[str, List[dict]]] = {}
    for stage in STAGES:
        cal, held = [], []
        for frame, arrays in samples.get(stage, []):
            d = dict(zip(names[stage], arrays))
            (cal if frame < calib_frames else held).append(d)
        out[stage] = {"calibration": _thin(cal, max_per_stage), "held_out": _thin(held, max_per_stage)}
    return out


def _thin(xs: List[dict], n: int) -> List[dict]:
    if len(xs) <= n:
        return xs
    idx = np.linspace(0, len(xs) - 1, n).round().astype(int)
    return [xs[i] for i in sorted(set(idx.tolist()))]


__all__ = ["load_frames", "auto_prompts", "RecordingBackend", "TrackRun", "track_clip", "split_samples", "sample_clip"]
