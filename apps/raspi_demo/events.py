"""Interaction logic of the demo as a pure state machine (no OpenCV window, no tracker).

`DemoController` turns raw mouse events and key codes, as OpenCV's highgui delivers them,
into typed actions that the app then applies to the tracker:

* left click            -> positive point for the selected object (a new object when none is selected)
* right click           -> negative point for the selected object (ignored when none is selected)
* left drag             -> box for the selected object (a new object when none is selected)
* digit keys 1-9        -> select that object id (the next click creates it if it does not exist yet)
* ``0``                 -> clear the selection (the next left click creates a new object)
* ``n``                 -> select a new, unused object id
* ``d``                 -> delete the selected object
* ``r``                 -> reset: forget every object
* space                 -> pause / resume
* ``s``                 -> snapshot
* ``q`` or Esc          -> quit

Clicks accumulate per object while the displayed frame stays the same (e.g. while paused):
each `PromptAction` carries *all* the points (and the latest box) of that object on the
current frame, so that a tracker that replaces the object's prompt on a frame sees the
complete set. `on_new_frame()` starts a fresh set.

Mouse coordinates are window pixels; `display_scale` (window pixels per frame pixel)
maps them back to frame pixels, clipped to the frame when its size is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

# The numeric values of OpenCV's highgui constants, so this module does not need cv2.
EVENT_MOUSEMOVE = 0
EVENT_LBUTTONDOWN = 1
EVENT_RBUTTONDOWN = 2
EVENT_MBUTTONDOWN = 3
EVENT_LBUTTONUP = 4
EVENT_RBUTTONUP = 5
EVENT_FLAG_LBUTTON = 1

KEY_ESC = 27
KEY_SPACE = 32


@dataclass(frozen=True)
class PromptAction:
    """Prompt `obj_id` on the current frame with all its clicks and its box so far."""
    obj_id: int
    points: Optional[List[List[float]]] = None
    labels: Optional[List[int]] = None
    box: Optional[List[float]] = None
    new_object: bool = False


@dataclass(frozen=True)
class SelectAction:
    obj_id: Optional[int]
    new_object: bool = False


@dataclass(frozen=True)
class DeleteAction:
    obj_id: int


@dataclass(frozen=True)
class ResetAction:
    pass


@dataclass(frozen=True)
class PauseAction:
    paused: bool


@dataclass(frozen=True)
class SnapshotAction:
    pass


@dataclass(frozen=True)
class QuitAction:
    pass


Action = Union[PromptAction, SelectAction, DeleteAction, ResetAction, PauseAction, SnapshotAction, QuitAction]


@dataclass
class _ObjectPrompt:
    points: List[List[float]] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    box: Optional[List[float]] = None


class DemoController:
    """Mouse/keyboard state machine of the interactive demo.

    Args:
        drag_threshold: a left press and release further apart than this many window pixels
            in both x and y is a box, otherwise a click.
        display_scale: window pixels per frame pixel.
        max_objects: upper bound on simultaneously tracked objects (a new object beyond it is refused).
    """

    def __init__(self, drag_threshold: float = 6.0, display_scale: float = 1.0, max_objects: int = 64) -> None:
        if display_scale <= 0:
            raise ValueError(f"display_scale must be > 0, got {display_scale}")
        self.drag_threshold = float(drag_threshold)
        self.display_scale = float(display_scale)
        self.max_objects = int(max_objects)
        self.frame_size: Optional[Tuple[int, int]] = None  # (width, height) of the frame
        self.selected: Optional[int] = None
        self.objects: List[int] = []          # ids known to exist in the tracker, in creation order
        self.paused = False
        self._pending: Dict[int, _ObjectPrompt] = {}
        self._drag_start: Optional[Tuple[float, float]] = None
        self._drag_now: Optional[Tuple[float, float]] = None
        self._undo: Optional[Tuple[int, bool, Optional[List[float]]]] = None  # (obj, added a point, previous box)

    # ---------------------------------------------------------------- state queries
    @property
    def drag_box(self) -> Optional[List[float]]:
        """The rectangle being dragged, [x0, y0, x1, y1] in frame pixels, or None."""
        if self._drag_start is None or self._drag_now is None:
            return None
        if not self._is_drag(self._drag_start, self._drag_now):
            return None
        return self._box(self._drag_start, self._drag_now)

    def pending_clicks(self, obj_id: int) -> Tuple[List[List[float]], List[int], Optional[List[float]]]:
        """Points, labels and box given to `obj_id` on the current frame (for drawing)."""
        p = self._pending.get(obj_id)
        if p is None:
            return [], [], None
        return [list(q) for q in p.points], list(p.labels), (list(p.box) if p.box else None)

    def next_free_id(self) -> int:
        used = set(self.objects)
        i = 1
        while i in used:
            i += 1
        return i

    # ---------------------------------------------------------------- notifications from the app
    def set_frame_size(self, width: int, height: int) -> None:
        self.frame_size = (int(width), int(height))

    def on_new_frame(self) -> None:
        """The tracker moved on to a new frame: clicks start afresh on it."""
        self._pending.clear()
        self._undo = None

    def undo_last(self) -> None:
        """Forget the click or box of the last `PromptAction` (the tracker refused it)."""
        if self._undo is None:
            return
        obj, added_point, prev_box = self._undo
        self._undo = None
        p = self._pending.get(obj)
        if p is None:
            return
        if added_point and p.points:
            p.points.pop()
            p.labels.pop()
        else:
            p.box = prev_box
        if not p.points and p.box is None:
            del self._pending[obj]

    def sync_objects(self, object_ids: List[int]) -> None:
        """Adopt the tracker's list of objects (e.g. after it refused a prompt)."""
        ids = [int(i) for i in object_ids]
        self.objects = ids
        for k in list(self._pending):
            if k not in ids:
                del self._pending[k]

    # ---------------------------------------------------------------- events
    def on_mouse(self, event: int, x: float, y: float, flags: int = 0) -> Optional[Action]:
        fx, fy = self._to_frame(x, y)
        if event == EVENT_LBUTTONDOWN:
            self._drag_start = (fx, fy)
            self._drag_now = (fx, fy)
            return None
        if event == EVENT_MOUSEMOVE:
            if self._drag_start is not None:
                self._drag_now = (fx, fy)
            return None
        if event == EVENT_LBUTTONUP:
            start = self._drag_start
            self._drag_start = self._drag_now = None
            if start is None:  # release without a press seen (e.g. press outside the window)
                start = (fx, fy)
            if self._is_drag(start, (fx, fy)):
                return self._add(box=self._box(start, (fx, fy)))
            return self._add(point=(fx, fy), label=1)
        if event == EVENT_RBUTTONDOWN:
            if self.selected is None:
                return None  # a negative point needs an object to refine
            return self._add(point=(fx, fy), label=0)
        return None

    def on_key(self, key: int) -> Optional[Action]:
        if key is None or key < 0:
            return None
        key &= 0xFF
        if key in (ord("q"), ord("Q"), KEY_ESC):
            return QuitAction()
        if key == KEY_SPACE:
            self.paused = not self.paused
            return PauseAction(self.paused)
        if key in (ord("s"), ord("S")):
            return SnapshotAction()
        if key in (ord("r"), ord("R")):
            self.objects = []
            self.selected = None
            self._pending.clear()
            self._undo = None
            self._drag_start = self._drag_now = None
            return ResetAction()
        if key in (ord("n"), ord("N")):
            new_id = self.next_free_id()
            self.selected = new_id
            return SelectAction(new_id, new_object=True)
        if key in (ord("d"), ord("D")):
            if self.selected is None or self.selected not in self.objects:
                return None
            obj = self.selected
            self.objects.remove(obj)
            self._pending.pop(obj, None)
            self.selected = None
            return DeleteAction(obj)
        if ord("0") <= key <= ord("9"):
            digit = key - ord("0")
            self.selected = None if digit == 0 else digit
            new = self.selected is not None and self.selected not in self.objects
            return SelectAction(self.selected, new_object=new)
        return None

    # ---------------------------------------------------------------- helpers
    def _add(self, point: Optional[Tuple[float, float]] = None, label: int = 1,
             box: Optional[List[float]] = None) -> Optional[PromptAction]:
        obj = self.selected
        new = obj is None or obj not in self.objects
        if new and len(self.objects) >= self.max_objects:
            return None
        if obj is None:
            obj = self.next_free_id()
            self.selected = obj
        pend = self._pending.setdefault(obj, _ObjectPrompt())
        self._undo = (obj, point is not None, pend.box)
        if point is not None:
            pend.points.append([float(point[0]), float(point[1])])
            pend.labels.append(int(label))
        if box is not None:
            pend.box = [float(v) for v in box]
        if new:
            self.objects.append(obj)
        return PromptAction(
            obj_id=obj,
            points=[list(p) for p in pend.points] or None,
            labels=list(pend.labels) or None,
            box=list(pend.box) if pend.box is not None else None,
            new_object=new,
        )

    def _to_frame(self, x: float, y: float) -> Tuple[float, float]:
        fx, fy = float(x) / self.display_scale, float(y) / self.display_scale
        if self.frame_size is not None:
            w, h = self.frame_size
            fx = min(max(fx, 0.0), float(w - 1))
            fy = min(max(fy, 0.0), float(h - 1))
        return fx, fy

    def _is_drag(self, a: Tuple[float, float], b: Tuple[float, float]) -> bool:
        t = self.drag_threshold / self.display_scale
        return abs(a[0] - b[0]) > t and abs(a[1] - b[1]) > t

    @staticmethod
    def _box(a: Tuple[float, float], b: Tuple[float, float]) -> List[float]:
        return [min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])]
