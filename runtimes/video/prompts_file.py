"""The one prompts schema of the video pipeline (`sam2-edge track --prompts`, the demo's
``--headless --prompts``), its validator, and how prompts are given to a tracker.

Prompts file: a JSON list (or ``{"prompts": [...]}``) of entries such as::

    [{"obj_id": 1, "frame": 0, "points": [[x, y]], "labels": [1]},
     {"obj_id": 2, "frame": 0, "box": [x0, y0, x1, y1]},
     {"obj_id": 3, "frame": 5, "mask": "obj3_mask.png"}]

Coordinates are pixels of the source frames. ``labels`` (1 = positive, 0 = negative) default
to all-positive; ``mask`` is a PNG (relative to the prompts file) of the frame's size, non-zero
= object. ``frame`` is the index of the frame in the output: for a video file this is the
source frame index; for a live source it counts the frames actually processed. Unknown keys
are errors. `prompts_from_flags` builds the same `PromptSpec` list from ``--point X,Y`` /
``--box X0,Y0,X1,Y1`` options.

`apply_prompts` gives one frame's prompts to a tracker: the first with
``add_prompt(frame, ...)`` (it brings the frame), the others with ``add_prompt(None, ...)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sam2_edge.errors import InputError

from .writers import result_masks

log = logging.getLogger(__name__)

_KEYS = {"obj_id", "frame", "points", "labels", "box", "mask"}


class PromptError(InputError):
    """The prompts file is unreadable or one of its entries is invalid (the message names it)."""


MAX_FILE_BYTES = 16 << 20   # a prompts file is a few entries; masks are separate PNG files
MAX_DEPTH = 8               # {"prompts": [{"points": [[x, y]]}]} is 5 levels deep


class _Object(dict):
    """A decoded JSON object that remembers keys given more than once (json keeps the last)."""

    duplicates: Tuple[str, ...] = ()


def _object_pairs(pairs: List[Tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        obj.duplicates = tuple(sorted({k for k, _ in pairs if k in seen or seen.add(k)}))
    return obj


def _too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """True when containers nest deeper than `limit` (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth > limit:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def _show(v: Any, n: int = 80) -> str:
    """A short JSON rendering of a value for a message (never raises)."""
    try:
        text = json.dumps(v)
    except (TypeError, ValueError, RecursionError):
        text = repr(v)
    return text[:n]


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
    if _too_deep(data):
        raise PromptError(f"{origin}: the JSON nests more than {MAX_DEPTH} levels deep; a prompts file is a "
                          "list of flat objects like {\"obj_id\": 1, \"frame\": 0, \"points\": [[x, y]]}")
    if isinstance(data, dict) and set(data) == {"prompts"}:
        if getattr(data, "duplicates", ()):
            raise PromptError(f"{origin}: the key 'prompts' is given more than once; give one list")
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
                              f"\"points\": [[x, y]], \"labels\": [1]}}, got {_show(e, 60)}")
        if getattr(e, "duplicates", ()):
            raise PromptError(f"{where}: key(s) {list(e.duplicates)} given more than once; give each key once")
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
                                  f"{_show(pts)}")
            labels = e.get("labels", [1] * len(pts))
            if (not isinstance(labels, list) or len(labels) != len(pts)
                    or not all(_is_int(v) and v in (0, 1) for v in labels)):
                raise PromptError(f"{where}: 'labels' must be a list of {len(pts)} values, each 1 (positive) "
                                  f"or 0 (negative), got {_show(labels)}")
            spec.points = [[float(x), float(y)] for x, y in pts]
            spec.labels = [int(v) for v in labels]
        elif "labels" in e:
            raise PromptError(f"{where}: 'labels' given without 'points'")
        if "box" in e:
            b = e["box"]
            if (not isinstance(b, list) or len(b) != 4 or not all(_is_num(v) for v in b)
                    or not (b[0] < b[2] and b[1] < b[3])):
                raise PromptError(f"{where}: 'box' must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got "
                                  f"{_show(b)}")
            spec.box = [float(v) for v in b]
        if "mask" in e:
            if "points" in e or "box" in e:
                raise PromptError(f"{where}: give either 'mask' or 'points'/'box', not both")
            m = e["mask"]
            if not isinstance(m, str) or not m or "\0" in m:
                raise PromptError(f"{where}: 'mask' must be the path of a PNG file, got {_show(m)}")
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
    """Read and validate a prompts file (UTF-8 JSON, see the module doc); PromptError naming the
    file and the entry on any problem, never another exception."""
    if not isinstance(path, (str, os.PathLike)) or "\0" in os.fspath(path):
        raise PromptError(f"prompts file {path!r:.80}: not a file path")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PromptError(f"prompts file {path!r} not found" + (" (it is a folder)" if os.path.isdir(path) else ""))
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise PromptError(f"{path}: {size / 2**20:.0f} MiB is too big for a prompts file (at most "
                              f"{MAX_FILE_BYTES >> 20} MiB); masks go in separate PNG files")
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise PromptError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save the "
                          "prompts file as UTF-8 JSON") from None
    try:
        data = json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as e:
        raise PromptError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise PromptError(f"{path}: the JSON nests too deeply to be a prompts file (at most {MAX_DEPTH} levels)") \
            from None
    return parse_prompts(data, origin=path, base_dir=os.path.dirname(os.path.abspath(path)))


def _numbers(text: str, n: int, flag: str) -> List[float]:
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise PromptError(f"{flag} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise PromptError(f"{flag} must be {n} comma-separated numbers, got {text!r}")
    return vals


def prompts_from_flags(points: Optional[Sequence[str]] = None, box: Optional[str] = None,
                       obj_id: int = 1, frame: int = 0) -> List[PromptSpec]:
    """One prompt from command-line options: positive clicks ``--point X,Y`` (repeatable)
    and/or ``--box X0,Y0,X1,Y1``, for object `obj_id` on frame `frame`. Validated by
    `parse_prompts` like a prompts file entry."""
    if not points and not box:
        raise PromptError("give --point X,Y and/or --box X0,Y0,X1,Y1, or --prompts FILE.json")
    entry: Dict[str, Any] = {"obj_id": obj_id, "frame": frame}
    if points:
        entry["points"] = [_numbers(s, 2, "--point") for s in points]
        entry["labels"] = [1] * len(entry["points"])
    if box:
        entry["box"] = _numbers(box, 4, "--box")
    return parse_prompts([entry], origin="--point/--box")


def apply_prompts(tracker: Any, rgb: np.ndarray, prompts: Sequence[PromptSpec],
                  origin: str = "prompts") -> Tuple[Any, Dict[int, np.ndarray]]:
    """Give the prompts of one frame to `tracker` (the sam2_edge.runtimes.Tracker API): the
    first with the frame, the others on the same frame. Each is checked against the frame's
    size first; a prompt the tracker refuses raises PromptError naming the entry.

    -> (the last TrackResult, {obj_id: HxW bool} of every object, later prompts winning).
    """
    h, w = rgb.shape[:2]
    last = None
    masks: Dict[int, np.ndarray] = {}
    for k, p in enumerate(prompts):
        p.check_fits(w, h, origin)
        try:
            last = tracker.add_prompt(rgb if k == 0 else None, p.obj_id, points=p.points,
                                      labels=p.labels, box=p.box, mask=p.mask)
        except InputError as e:
            raise PromptError(f"{origin}: {p.describe()}: the tracker refused it: {e}") from e
        masks.update(result_masks(last))
    return last, masks
