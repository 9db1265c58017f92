"""Training videos: video files and frame folders found under the --data paths, probed once,
then read clip by clip (a clip's frames only, never a whole video in memory).

Layouts: any tree of video files (SA-V's ``sav_train/sav_000/*.mp4``) and folders of frames
(DAVIS's ``JPEGImages/480p/<video>/*.jpg``, SA-V's ``JPEGImages_24fps/<video>/*.jpg``); folders
named ``Annotations*`` (label masks) are skipped. A file that cannot be decoded is skipped with
a warning and counted; no usable video at all is an InputError.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

VIDEO_EXT = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_EXT = (".jpg", ".jpeg", ".png")
MIN_FRAMES = 2


@dataclass(frozen=True)
class Source:
    path: str
    frames: Tuple[str, ...]  # a frame folder's files; () for a video file
    count: int  # frames

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip("/"))


@dataclass(frozen=True)
class Segment:
    """Frames [lo, hi) of a source."""

    source: Source
    lo: int
    hi: int


@dataclass(frozen=True)
class Dataset:
    sources: Tuple[Source, ...]
    skipped: Tuple[Tuple[str, str], ...]  # (path, why)


def _candidates(root: Path) -> List[Tuple[str, Tuple[str, ...]]]:
    if root.is_file():
        return [(str(root), ())]
    out = []
    for d, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(x for x in dirs if not x.startswith("Annotations") and not x.startswith("."))
        images = sorted(f for f in files if f.lower().endswith(IMAGE_EXT))
        if len(images) >= MIN_FRAMES:
            out.append((d, tuple(os.path.join(d, f) for f in images)))
        out.extend((os.path.join(d, f), ()) for f in sorted(files) if f.lower().endswith(VIDEO_EXT))
    return out


def _probe(path: str, frames: Tuple[str, ...]) -> Tuple[Optional[Source], str]:
    if frames:
        if read_image(frames[0]) is None:
            return None, f"cannot decode its first frame {os.path.basename(frames[0])}"
        return Source(path, frames, len(frames)), ""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return None, "not a readable video"
        ok, frame = cap.read()
        if not ok or frame is None:
            return None, "no decodable frame"
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if n < MIN_FRAMES:
        return None, f"{n} frame(s); at least {MIN_FRAMES} needed"
    return Source(path, (), n), ""


def open_dataset(paths: Sequence[str]) -> Dataset:
    """Every usable video under `paths`; InputError when a path is missing or none is usable."""
    if not paths:
        raise InputError("--data needs at least one folder or video")
    found = []
    for p in paths:
        root = Path(p)
        if not root.exists():
            raise InputError(f"--data {p!r} does not exist; give folders of videos (.mp4) or of frames (.jpg)")
        try:
            cands = _candidates(root)
        except OSError as e:
            raise InputError(f"--data {p!r} cannot be read: {e.strerror or e}") from None
        if not cands:
            raise InputError(f"--data {p!r} holds no video ({', '.join(VIDEO_EXT)}) and no folder of frames "
                             f"({', '.join(IMAGE_EXT)}); it is empty or of another layout")
        found.extend(cands)
    sources, skipped = [], []
    for path, frames in found:
        src, why = _probe(path, frames)
        if src is None:
            log.warning("skipped %s: %s", path, why)
            skipped.append((path, why))
        else:
            sources.append(src)
    if not sources:
        raise InputError(f"none of the {len(found)} videos under --data could be read ({skipped[0][0]}: "
                         f"{skipped[0][1]}); give readable videos or frame folders")
    if skipped:
        log.warning("%d of %d videos skipped (unreadable); training on %d", len(skipped), len(found), len(sources))
    return Dataset(tuple(sources), tuple(skipped))


def split(ds: Dataset, eval_frames: int, clip_span: int) -> Tuple[List[Segment], Segment]:
    """(training segments, held-out segment): the last video is held out when there are several;
    a single video gives its last `eval_frames` frames to evaluation and the rest to training."""
    if len(ds.sources) >= 2:
        held = ds.sources[-1]
        train = [Segment(s, 0, s.count) for s in ds.sources[:-1] if s.count >= clip_span]
        if not train:
            raise InputError(f"every training video is shorter than a clip ({clip_span} frames); "
                             "lower --frames or --stride")
        return train, Segment(held, 0, min(held.count, eval_frames))
    s = ds.sources[0]
    if s.count < eval_frames + clip_span:
        raise InputError(f"{s.path!r} has {s.count} frames: too few for a held-out part of {eval_frames} frames and a "
                         f"training clip of {clip_span}; give more videos or lower --eval-frames / --frames")
    return [Segment(s, 0, s.count - eval_frames)], Segment(s, s.count - eval_frames, s.count)


def read_image(path: str) -> Optional[np.ndarray]:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_clip(src: Source, start: int, count: int, stride: int = 1) -> List[np.ndarray]:
    """Frames start, start + stride, ... (count of them) as RGB uint8; InputError if any fails."""
    idx = [start + i * stride for i in range(count)]
    out: List[np.ndarray] = []
    if src.frames:
        for i in idx:
            img = read_image(src.frames[i]) if 0 <= i < len(src.frames) else None
            if img is None:
                raise InputError(f"cannot decode frame {i} of {src.path}")
            out.append(img)
        return out
    cap = cv2.VideoCapture(src.path)
    try:
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        pos = start
        for i in idx:
            while pos < i:
                if not cap.grab():
                    break
                pos += 1
            ok, bgr = cap.read()
            pos += 1
            if not ok or bgr is None:
                raise InputError(f"cannot decode frame {i} of {src.path}")
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return out


@dataclass(frozen=True)
class ClipDraw:
    segment: int
    start: int
    seed: int  # augmentation and prompt randomness of this clip


def draw_clips(seed: int, step: int, n: int, segments: Sequence[Segment], span: int) -> List[ClipDraw]:
    """The `n` clips of global step `step` (the same on every process: each takes its share)."""
    rng = np.random.default_rng([seed, step])
    out = []
    for _ in range(n):
        k = int(rng.integers(len(segments)))
        seg = segments[k]
        start = seg.lo + int(rng.integers(max(1, seg.hi - seg.lo - span + 1)))
        out.append(ClipDraw(k, start, int(rng.integers(2**31 - 1))))
    return out


__all__ = ["Source", "Segment", "Dataset", "open_dataset", "split", "read_clip", "draw_clips", "ClipDraw",
           "read_image"]
