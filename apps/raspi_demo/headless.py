"""Headless mode: track a source with prompts from a JSON file, write an annotated video and,
optionally, one PNG per frame and object.

Prompts file: a JSON list (or ``{"prompts": [...]}``) of entries such as::

    [{"obj_id": 1, "frame": 0, "points": [[x, y]], "labels": [1]},
     {"obj_id": 2, "frame": 0, "box": [x0, y0, x1, y1]},
     {"obj_id": 3, "frame": 5, "mask": "obj3_mask.png"}]

Coordinates are pixels of the source frames. ``labels`` (1 = positive, 0 = negative) default
to all-positive; ``mask`` is a PNG (relative to the prompts file) of the frame's size, non-zero
= object. ``frame`` is the index of the frame in the output video: for a video file this is
the source frame index; for a live source it counts the frames actually processed.

For each frame i: the first prompt of frame i is given with ``add_prompt(frame_i, ...)`` (it
brings the frame), the others with ``add_prompt(None, ...)`` (same frame); a frame without
prompts goes through ``track(frame_i)``; frames before the first prompt are written unmodified.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sam2_edge.errors import InputError, Sam2EdgeError

log = logging.getLogger(__name__)

_KEYS = {"obj_id", "frame", "points", "labels", "box", "mask"}


class PromptError(InputError):
    """The prompts file is unreadable or one of its entries is invalid (the message names it)."""


class OutputError(Sam2EdgeError):
    """An output file (video, mask, snapshot) cannot be written."""


# ------------------------------------------------------------------------------------------ prompts
@dataclass
class PromptSpec:
    entry: int                                   # position in the file (0-based)
    obj_id: int
    frame: int
    points: Optional[List[List[float]]] = None
    labels: Optional[List[int]] = None
    box: Optional[List[float]] = None
    mask: Optional[np.ndarray] = None            # HxW bool
    mask_path: Optional[str] = None

    def describe(self) -> str:
        return f"entry #{self.entry} (obj_id {self.obj_id}, frame {self.frame})"

    def check_fits(self, width: int, height: int, origin: str = "prompts") -> None:
        """Raise PromptError if the prompt lies outside a `width` x `height` frame."""
        def inside(x: float, y: float) -> bool:
            return 0 <= x <= width and 0 <= y <= height

        for p in self.points or []:
            if not inside(*p):
                raise PromptError(f"{origin}: {self.describe()}: point {p} lies outside the "
                                  f"{width}x{height} frame (coordinates are source pixels)")
        if self.box is not None and not (inside(self.box[0], self.box[1]) and inside(self.box[2], self.box[3])):
            raise PromptError(f"{origin}: {self.describe()}: box {self.box} lies outside the "
                              f"{width}x{height} frame (coordinates are source pixels)")
        if self.mask is not None and self.mask.shape != (height, width):
            raise PromptError(f"{origin}: {self.describe()}: mask {self.mask_path!r} is "
                              f"{self.mask.shape[1]}x{self.mask.shape[0]}, the frame is {width}x{height}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_prompts(data: Any, origin: str = "prompts", base_dir: str = ".") -> List[PromptSpec]:
    """Validate decoded JSON and return the prompts sorted by frame (file order within a frame)."""
    if isinstance(data, dict) and set(data) == {"prompts"}:
        data = data["prompts"]
    if not isinstance(data, list):
        raise PromptError(f"{origin}: expected a JSON list of prompt objects, got {type(data).__name__}")
    if not data:
        raise PromptError(f"{origin}: the list of prompts is empty")
    out: List[PromptSpec] = []
    for i, e in enumerate(data):
        where = f"{origin}: entry #{i}"
        if not isinstance(e, dict):
            raise PromptError(f"{where}: expected an object like {{\"obj_id\": 1, \"frame\": 0, "
                              f"\"points\": [[x, y]], \"labels\": [1]}}, got {json.dumps(e)[:60]}")
        unknown = sorted(set(e) - _KEYS)
        if unknown:
            raise PromptError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
        if "obj_id" not in e or not _is_int(e["obj_id"]) or e["obj_id"] < 0:
            raise PromptError(f"{where}: 'obj_id' must be an integer >= 0, got {e.get('obj_id')!r}")
        frame = e.get("frame", 0)
        if not _is_int(frame) or frame < 0:
            raise PromptError(f"{where}: 'frame' must be an integer >= 0, got {frame!r}")
        where = f"{origin}: entry #{i} (obj_id {e['obj_id']}, frame {frame})"
        spec = PromptSpec(entry=i, obj_id=int(e["obj_id"]), frame=int(frame))
        if not any(k in e for k in ("points", "box", "mask")):
            raise PromptError(f"{where}: give at least one of 'points', 'box' or 'mask'")
        if "points" in e:
            pts = e["points"]
            if (not isinstance(pts, list) or not pts
                    or not all(isinstance(p, list) and len(p) == 2 and all(_is_num(c) for c in p) for p in pts)):
                raise PromptError(f"{where}: 'points' must be a non-empty list of [x, y] pixel pairs, got "
                                  f"{json.dumps(pts)[:80]}")
            labels = e.get("labels", [1] * len(pts))
            if (not isinstance(labels, list) or len(labels) != len(pts)
                    or not all(_is_int(v) and v in (0, 1) for v in labels)):
                raise PromptError(f"{where}: 'labels' must be a list of {len(pts)} values, each 1 (positive) "
                                  f"or 0 (negative), got {json.dumps(labels)[:80]}")
            spec.points = [[float(x), float(y)] for x, y in pts]
            spec.labels = [int(v) for v in labels]
        elif "labels" in e:
            raise PromptError(f"{where}: 'labels' given without 'points'")
        if "box" in e:
            b = e["box"]
            if (not isinstance(b, list) or len(b) != 4 or not all(_is_num(v) for v in b)
                    or not (b[0] < b[2] and b[1] < b[3])):
                raise PromptError(f"{where}: 'box' must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got "
                                  f"{json.dumps(b)[:80]}")
            spec.box = [float(v) for v in b]
        if "mask" in e:
            if "points" in e or "box" in e:
                raise PromptError(f"{where}: give either 'mask' or 'points'/'box', not both")
            m = e["mask"]
            if not isinstance(m, str) or not m:
                raise PromptError(f"{where}: 'mask' must be the path of a PNG file, got {json.dumps(m)[:80]}")
            path = m if os.path.isabs(m) else os.path.join(base_dir, m)
            img = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.exists(path) else None
            if img is None:
                raise PromptError(f"{where}: cannot read mask image {path!r}")
            spec.mask = img > 0
            spec.mask_path = path
        out.append(spec)
    seen = set()
    for s in out:
        key = (s.frame, s.obj_id)
        if key in seen:
            raise PromptError(f"{origin}: {s.describe()}: a second prompt for the same object and frame; "
                              f"put all its points (and box) in one entry")
        seen.add(key)
    return sorted(out, key=lambda s: (s.frame, s.entry))


def load_prompts(path: str) -> List[PromptSpec]:
    if not os.path.isfile(path):
        raise PromptError(f"prompts file {path!r} not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise PromptError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"{path}: cannot read: {e}") from None
    return parse_prompts(data, origin=path, base_dir=os.path.dirname(os.path.abspath(path)))


# ------------------------------------------------------------------------------------------ drawing
def object_color(obj_id: int) -> Tuple[int, int, int]:
    """A stable, distinct BGR colour per object id (golden-angle hues)."""
    hue = int((obj_id * 137.508) % 360) // 2
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_masks(img: np.ndarray, masks: Dict[int, np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """Blend each object's mask into a copy of the BGR image in its colour, outline it and label its id."""
    out = img.copy()
    h, w = out.shape[:2]
    for obj_id in sorted(masks):
        m = _fit_mask(masks[obj_id], h, w)
        if not m.any():
            continue
        color = np.array(object_color(obj_id), dtype=np.float32)
        region = out[m].astype(np.float32)
        out[m] = (region * (1.0 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, object_color(obj_id), 1 if max(h, w) < 400 else 2, cv2.LINE_AA)
        ys, xs = np.nonzero(m)
        label = str(obj_id)
        scale = 0.4 if max(h, w) < 400 else 0.6
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = int(min(max(xs.min(), 0), max(w - tw - 4, 0)))
        y = int(min(max(ys.min() - 2, th + 2), h - 1))
        cv2.rectangle(out, (x, y - th - 2), (x + tw + 3, y + base - 1), object_color(obj_id), -1)
        cv2.putText(out, label, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _fit_mask(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if m.shape != (h, w):
        m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return m


def result_masks(result: Any) -> Dict[int, np.ndarray]:
    """{obj_id: HxW bool} of a TrackResult."""
    masks = np.asarray(result.masks)
    return {int(o): masks[k].astype(bool) for k, o in enumerate(result.object_ids)}


# ------------------------------------------------------------------------------------------ outputs
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class VideoSink:
    """cv2.VideoWriter opened on the first frame; `close()` finalises the file (idempotent)."""

    def __init__(self, path: str, fps: float = 30.0) -> None:
        self.path = path
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.frames = 0
        self._writer: Optional[Any] = None
        self._size: Optional[Tuple[int, int]] = None
        ext = os.path.splitext(path)[1].lower()
        if ext not in _FOURCC:
            raise OutputError(f"output video {path!r}: unsupported extension {ext or '(none)'!r}; "
                              f"use one of {sorted(_FOURCC)}")
        self._fourcc = _FOURCC[ext]
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise OutputError(f"output video {path!r}: folder {parent!r} does not exist")

    def write(self, img: np.ndarray) -> None:
        h, w = img.shape[:2]
        if self._writer is None:
            self._writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self._fourcc), self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise OutputError(f"cannot write video {self.path!r} with codec {self._fourcc!r} at {w}x{h}")
            self._size = (w, h)
        elif (w, h) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(img))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            log.info("wrote %s (%d frames)", self.path, self.frames)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_masks(folder: str, frame_index: int, masks: Dict[int, np.ndarray]) -> int:
    """One PNG per object, ``{frame:05d}_obj{id}.png``, 255 = object. Returns the number written."""
    n = 0
    for obj_id, m in sorted(masks.items()):
        path = os.path.join(folder, f"{frame_index:05d}_obj{obj_id}.png")
        if not cv2.imwrite(path, np.asarray(m, dtype=bool).astype(np.uint8) * 255):
            raise OutputError(f"cannot write mask {path!r}")
        n += 1
    return n


def memory_text(tracker: Any) -> str:
    mb = getattr(tracker, "memory_bytes", None)
    return f"{mb / 2**20:.1f} MiB" if isinstance(mb, (int, float)) else "n/a"


# ------------------------------------------------------------------------------------------ run
@dataclass
class HeadlessResult:
    frames_read: int = 0
    frames_written: int = 0
    masks_written: int = 0
    dropped: int = 0
    interrupted: bool = False
    end_reason: str = ""
    unused_prompts: List[PromptSpec] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 0


def run_headless(tracker: Any, reader: Any, prompts: Sequence[PromptSpec], out_path: str,
                 masks_out: Optional[str] = None, fps: Optional[float] = None, log_every: float = 5.0,
                 max_frames: Optional[int] = None, origin: str = "prompts") -> HeadlessResult:
    """Track every frame `reader` gives and write the annotated video (one frame per frame read).

    Takes ownership of `reader`: it is stopped (and its source released) on return. The video
    is finalised whatever happens: end of source, read failures, errors, Ctrl-C.
    """
    by_frame: Dict[int, List[PromptSpec]] = {}
    for p in prompts:
        by_frame.setdefault(p.frame, []).append(p)
    if masks_out:
        os.makedirs(masks_out, exist_ok=True)

    res = HeadlessResult()
    sink = VideoSink(out_path, fps or 30.0)
    started = False           # a prompt was given: from then on every frame is tracked
    t0 = t_last = time.monotonic()
    n_last = 0
    last_result = None
    try:
        reader.start()
        while max_frames is None or res.frames_read < max_frames:
            f = reader.get()
            if f is None:
                if getattr(reader, "finished", True):
                    break
                continue
            i = res.frames_read
            res.frames_read += 1
            bgr = f.image
            todo = by_frame.pop(i, [])
            masks: Dict[int, np.ndarray] = {}
            if todo or started:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if todo:
                    h, w = bgr.shape[:2]
                    for k, p in enumerate(todo):
                        p.check_fits(w, h, origin)
                        try:
                            last_result = tracker.add_prompt(rgb if k == 0 else None, p.obj_id, points=p.points,
                                                             labels=p.labels, box=p.box, mask=p.mask)
                        except InputError as e:
                            raise PromptError(f"{origin}: {p.describe()}: the tracker refused it: {e}") from e
                        masks.update(result_masks(last_result))  # later prompts of the frame win
                    started = True
                else:
                    last_result = tracker.track(rgb)
                    masks = result_masks(last_result)
                sink.write(draw_masks(bgr, masks))
                if masks_out:
                    res.masks_written += write_masks(masks_out, i, masks)
            else:
                sink.write(bgr)
            res.frames_written = sink.frames

            now = time.monotonic()
            if log_every and now - t_last >= log_every:
                timing = ""
                if last_result is not None and getattr(last_result, "timings", None) is not None:
                    timing = f", tracker {last_result.timings.total:.1f} ms/frame"
                log.info("frame %d: %.1f FPS%s, memory %s, dropped %d", i, (res.frames_read - n_last) / (now - t_last),
                         timing, memory_text(tracker), getattr(reader, "dropped", 0))
                t_last, n_last = now, res.frames_read
    except KeyboardInterrupt:
        res.interrupted = True
        res.end_reason = "interrupted (Ctrl-C)"
        log.warning("interrupted: finalising %s after %d frames", out_path, sink.frames)
    finally:
        reader.stop()
        sink.close()
        res.frames_written = sink.frames
        res.dropped = int(getattr(reader, "dropped", 0))
        if not res.end_reason:
            res.end_reason = getattr(reader, "end_reason", None) or (
                "max frames reached" if max_frames is not None and res.frames_read >= max_frames else "done")

    res.unused_prompts = [p for ps in by_frame.values() for p in ps]
    for p in res.unused_prompts:
        log.warning("%s: %s was never applied: the source gave only %d frames", origin, p.describe(), res.frames_read)
    dt = max(time.monotonic() - t0, 1e-9)
    log.info("headless: %d frames in %.1f s (%.1f FPS), %d mask files, %d dropped; %s",
             res.frames_read, dt, res.frames_read / dt, res.masks_written, res.dropped, res.end_reason)
    return res
