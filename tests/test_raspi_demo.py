"""Tests of apps/raspi_demo: headless pipeline, interaction state machine, capture thread,
error handling. A FakeTracker implementing the sam2_edge.runtimes.Tracker API stands in for
the model; one optional test drives the real tracker on the micro checkpoint."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from sam2_edge.errors import InputError, StateError

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # apps/ is not installed: import it from the checkout (bare `pytest` runs)
    sys.path.insert(0, str(REPO))

from apps.raspi_demo import app as demo_app  # noqa: E402
from apps.raspi_demo import events as ev  # noqa: E402
from apps.raspi_demo.events import (DeleteAction, DemoController, PauseAction, PromptAction,  # noqa: E402
                                    QuitAction, ResetAction, SelectAction, SnapshotAction)
from apps.raspi_demo.headless import run_headless  # noqa: E402
from sam2_edge.runtimes.video import (LatestFrameGrabber, PromptError, SequentialReader, SourceError,  # noqa: E402
                                      load_prompts, open_reader, open_source, parse_prompts)

VIDEO = REPO / "tests" / "assets" / "bedroom_240x136_20f.mp4"
W, H, N_FRAMES = 240, 136, 20
MICRO_CKPT = REPO / "tests" / "fixtures" / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"


# ------------------------------------------------------------------------------------------ fakes
@dataclass
class FakeTimings:
    image_encoder: float = 4.0
    memory_attention: float = 3.0
    mask_decoder: float = 2.0
    memory_encoder: float = 1.0
    total: float = 10.0


@dataclass
class FakeResult:
    frame_index: int
    object_ids: List[int]
    masks: np.ndarray
    mask_logits: np.ndarray
    object_scores: np.ndarray
    timings: FakeTimings


class FakeTracker:
    """The Tracker API with masks = a disc around each object's last positive click (or box centre)."""

    def __init__(self, radius: int = 12, interrupt_at_track: Optional[int] = None) -> None:
        self.radius = radius
        self.calls: List[tuple] = []
        self._centres: Dict[int, Tuple[float, float]] = {}
        self._frame: Optional[np.ndarray] = None
        self._frame_index = -1
        self._tracks = 0
        self.interrupt_at_track = interrupt_at_track

    @property
    def object_ids(self) -> List[int]:
        return list(self._centres)

    @property
    def memory_bytes(self) -> int:
        return 4096 * len(self._centres)

    def prepare(self, frame: np.ndarray) -> np.ndarray:  # the model input computed ahead: nothing here
        return frame

    def _check_frame(self, frame: np.ndarray) -> None:
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8):
            raise InputError("frame must be HxWx3 uint8 RGB")

    def add_prompt(self, frame, obj_id, points=None, labels=None, box=None, mask=None):
        if frame is None and self._frame is None:
            raise StateError("no current frame: give one with the first prompt")
        if points is None and box is None and mask is None:
            raise InputError("empty prompt")
        if frame is not None:
            self._check_frame(frame)
            self._frame = frame
            self._frame_index += 1
        if points is not None and labels is not None and len(points) != len(labels):
            raise InputError("points and labels differ in length")
        centre = None
        if points is not None:
            pos = [p for p, lab in zip(points, labels or [1] * len(points)) if lab == 1]
            if pos:
                centre = tuple(pos[-1])
        if centre is None and box is not None:
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        if centre is None and mask is not None:
            ys, xs = np.nonzero(mask)
            centre = (float(xs.mean()), float(ys.mean()))
        if centre is None:
            centre = self._centres.get(obj_id, (0.0, 0.0))
        self._centres[obj_id] = centre
        self.calls.append(("add_prompt", frame is not None, obj_id, points, labels, box))
        return self._result()

    def track(self, frame):
        if not self._centres:
            raise StateError("track() before any prompt")
        self._check_frame(frame)
        self._tracks += 1
        if self.interrupt_at_track is not None and self._tracks >= self.interrupt_at_track:
            raise KeyboardInterrupt
        self._frame = frame
        self._frame_index += 1
        self.calls.append(("track",))
        return self._result()

    def remove_object(self, obj_id):
        if obj_id not in self._centres:
            raise InputError(f"no object {obj_id}")
        del self._centres[obj_id]
        self.calls.append(("remove_object", obj_id))

    def reset(self):
        self._centres.clear()
        self._frame = None
        self._frame_index = -1
        self.calls.append(("reset",))

    def _result(self) -> FakeResult:
        h, w = self._frame.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        ids = self.object_ids
        masks = np.zeros((len(ids), h, w), bool)
        for k, o in enumerate(ids):
            cx, cy = self._centres[o]
            masks[k] = (xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius ** 2
        return FakeResult(self._frame_index, ids, masks, np.where(masks, 5.0, -5.0).astype(np.float32),
                          np.ones(len(ids), np.float32), FakeTimings())


class FakeSource:
    """A live source: `n_ok` frames (pixel value = index), then reads fail forever."""

    def __init__(self, n_ok: int = 10, is_live: bool = True, delay: float = 0.0, size=(W, H)) -> None:
        self.name = "fake"
        self.is_live = is_live
        self.fps = 30.0
        self.frame_count = None
        self.n_ok, self.delay, self.size = n_ok, delay, size
        self.reads = 0
        self.released = False
        self.lock = threading.Lock()

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            i = self.reads
            self.reads += 1
        if self.released:
            return False, None
        if i >= self.n_ok:
            return False, None
        img = np.full((self.size[1], self.size[0], 3), i % 256, np.uint8)
        return True, img

    def release(self):
        self.released = True


class ScriptedDisplay:
    """Display stand-in: poll() plays a script of (key, [mouse events]); never opens a window."""

    def __init__(self, script: List[Tuple[int, list]]) -> None:
        self.script = list(script)
        self.shown: List[np.ndarray] = []
        self.closed = False

    def show(self, img):
        self.shown.append(img)

    def poll(self, delay_ms):
        if self.script:
            return self.script.pop(0)
        return -1, []

    def close(self):
        self.closed = True


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def write_prompts(tmp_path, prompts, name="prompts.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(prompts))
    return str(p)


PROMPTS = [
    {"obj_id": 1, "frame": 0, "points": [[52, 87]], "labels": [1]},
    {"obj_id": 2, "frame": 0, "box": [75, 0, 130, 100]},
    {"obj_id": 1, "frame": 5, "points": [[57, 57], [60, 100]], "labels": [1, 0]},
    {"obj_id": 3, "frame": 10, "points": [[200, 100]]},
]


@pytest.fixture
def fake_tracker(monkeypatch):
    tracker = FakeTracker()
    monkeypatch.setattr(demo_app, "load_tracker", lambda args: tracker)
    return tracker


# ------------------------------------------------------------------------------------------ headless
def test_headless_writes_video_and_masks(tmp_path, fake_tracker):
    prompts = write_prompts(tmp_path, PROMPTS)
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    code = demo_app.main(["--checkpoint", "unused.pt", "--source", str(VIDEO), "--headless", "--prompts", prompts,
                          "--out", str(out), "--masks-out", str(masks)])
    assert code == 0
    assert count_frames(out) == N_FRAMES
    expected = {f"{i:05d}_obj{o}.png" for i in range(N_FRAMES) for o in (1, 2)}
    expected |= {f"{i:05d}_obj3.png" for i in range(10, N_FRAMES)}
    assert set(os.listdir(masks)) == expected
    m = cv2.imread(str(masks / "00000_obj1.png"), cv2.IMREAD_GRAYSCALE)
    assert m.shape == (H, W) and m[87, 52] == 255 and m[0, 0] == 0
    m = cv2.imread(str(masks / "00007_obj1.png"), cv2.IMREAD_GRAYSCALE)
    assert m[57, 57] == 255  # the correction on frame 5 moved object 1
    # Call order: first prompt of a frame brings the frame, the others use the current frame.
    calls = fake_tracker.calls
    assert calls[0][:3] == ("add_prompt", True, 1) and calls[1][:3] == ("add_prompt", False, 2)
    assert calls[2:6] == [("track",)] * 4
    assert calls[6][:3] == ("add_prompt", True, 1) and calls[6][4] == [1, 0]
    assert calls[11][:3] == ("add_prompt", True, 3) and calls[11][4] == [1]  # labels default to positive
    assert sum(c[0] == "track" for c in calls) == N_FRAMES - 3


def test_headless_frames_before_first_prompt_are_unmodified(tmp_path):
    tracker = FakeTracker()
    prompts = parse_prompts([{"obj_id": 4, "frame": 3, "box": [10, 10, 60, 60]}])
    out, masks = tmp_path / "out.avi", tmp_path / "m"
    res = run_headless(tracker, SequentialReader(open_source(str(VIDEO))), prompts, str(out), masks_out=str(masks))
    assert res.frames_read == res.frames_written == N_FRAMES and res.exit_code == 0
    assert count_frames(out) == N_FRAMES
    assert tracker.calls[0][:3] == ("add_prompt", True, 4)
    assert len(tracker.calls) == N_FRAMES - 3
    assert sorted(os.listdir(masks))[0] == "00003_obj4.png" and len(os.listdir(masks)) == N_FRAMES - 3
    # Frame 0 went out untouched (MJPG is lossy: compare loosely with the source).
    src = cv2.VideoCapture(str(VIDEO)).read()[1]
    got = cv2.VideoCapture(str(out)).read()[1]
    assert np.abs(src.astype(int) - got.astype(int)).mean() < 6


def test_headless_unreached_prompt_is_reported(tmp_path):
    prompts = parse_prompts([{"obj_id": 1, "frame": 0, "points": [[5, 5]]},
                             {"obj_id": 1, "frame": 99, "points": [[5, 5]]}])
    res = run_headless(FakeTracker(), SequentialReader(open_source(str(VIDEO))), prompts, str(tmp_path / "o.mp4"))
    assert [p.frame for p in res.unused_prompts] == [99]


def test_sam2_edge_demo_subcommand(tmp_path, fake_tracker):
    from sam2_edge.cli import main as cli_main

    prompts = write_prompts(tmp_path, PROMPTS[:2])
    out = tmp_path / "cli.mp4"
    code = cli_main(["demo", "--bundle", str(tmp_path), "--source", str(VIDEO), "--headless", "--prompts", prompts,
                     "--out", str(out), "--max-frames", "6"])
    assert code == 0 and count_frames(out) == 6


def test_headless_ctrl_c_finalises_video(tmp_path):
    tracker = FakeTracker(interrupt_at_track=5)
    prompts = parse_prompts(PROMPTS[:1])
    out = tmp_path / "int.mp4"
    res = run_headless(tracker, SequentialReader(open_source(str(VIDEO))), prompts, str(out))
    assert res.interrupted and res.exit_code == 130
    assert res.frames_written == 5 and count_frames(out) == 5  # frame 0 (prompt) + 4 tracked


# ------------------------------------------------------------------------------------------ robustness
def test_read_failure_mid_stream_exits_cleanly(tmp_path):
    src = FakeSource(n_ok=7)
    prompts = parse_prompts([{"obj_id": 1, "frame": 2, "points": [[30, 30]]}])
    out, masks = tmp_path / "cam.mp4", tmp_path / "masks"
    t0 = time.monotonic()
    res = run_headless(FakeTracker(), SequentialReader(src, max_retries=3, retry_delay=0.01), prompts, str(out),
                       masks_out=str(masks))
    assert time.monotonic() - t0 < 5
    assert res.exit_code == 0 and "read failed 4 times" in res.end_reason
    assert src.reads == 7 + 4 and src.released
    assert res.frames_written == 7 and count_frames(out) == 7
    assert len(os.listdir(masks)) == 5


def test_read_failure_with_capture_thread_exits_cleanly(tmp_path):
    src = FakeSource(n_ok=12, delay=0.002)
    reader = open_reader(src, max_retries=2, retry_delay=0.01)
    assert isinstance(reader, LatestFrameGrabber)
    out = tmp_path / "grab.mp4"
    res = run_headless(FakeTracker(), reader, parse_prompts(PROMPTS[:1]), str(out))
    assert res.exit_code == 0 and "read failed" in res.end_reason
    assert 1 <= res.frames_written <= 12 and count_frames(out) == res.frames_written
    assert res.frames_written + res.dropped == 12
    assert not reader.alive and src.released


def test_interactive_read_failure_finalises_recording(tmp_path):
    src = FakeSource(n_ok=6)
    tracker = FakeTracker()
    display = ScriptedDisplay([(-1, [(ev.EVENT_LBUTTONDOWN, 40, 40, 1), (ev.EVENT_LBUTTONUP, 40, 40, 0)])])
    sink = demo_app.VideoSink(str(tmp_path / "rec.mp4"), 30)
    app = demo_app.InteractiveApp(tracker, SequentialReader(src, max_retries=1, retry_delay=0.001), display,
                                  sink=sink, live=True)
    assert app.run() == 0
    assert "read failed" in app.end_reason and display.closed and src.released
    assert count_frames(tmp_path / "rec.mp4") == 6
    assert tracker.calls[0][:3] == ("add_prompt", True, 1)
    assert tracker.calls[1:] == [("track",)] * 5


def test_missing_camera_lists_attempts():
    class NeverOpens:
        def __init__(self, *a):
            self.args = a

        def isOpened(self):
            return False

        def release(self):
            pass

    def no_picamera(*a):
        raise ImportError("No module named 'picamera2'")

    with pytest.raises(SourceError) as ei:
        open_source("3", opener=NeverOpens, picamera_factory=no_picamera)
    msg = str(ei.value)
    assert "could not open camera '3'" in msg and "Tried:" in msg
    assert "cv2.VideoCapture(3) (any backend): not opened" in msg
    assert "picamera2: not installed" in msg and "Video devices present" in msg

    with pytest.raises(SourceError) as ei:  # real OpenCV, a device that does not exist
        open_source("/dev/video57", picamera_factory=no_picamera)
    msg = str(ei.value)
    assert "/dev/video57: device does not exist" in msg and "cv2.VideoCapture(57" in msg

    with pytest.raises(SourceError, match="not found"):
        open_source("/no/such/video.mp4")


def test_missing_camera_from_cli_returns_error(tmp_path, fake_tracker, caplog):
    prompts = write_prompts(tmp_path, PROMPTS[:1])
    code = demo_app.main(["--bundle", "b", "--source", "/dev/video57", "--headless", "--prompts", prompts,
                          "--out", str(tmp_path / "x.mp4")])
    assert code == 2
    assert "Tried:" in caplog.text and "/dev/video57" in caplog.text


def test_gui_unavailable_names_opencv_python(monkeypatch):
    def no_gui(*a, **k):
        raise cv2.error("OpenCV(5.0.0) window.cpp:1200: error: (-2:Unspecified error) The function is not implemented.")

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    with pytest.raises(demo_app.DisplayError, match="pip install opencv-python"):
        demo_app.CvDisplay()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if os.uname().sysname == "Linux":
        with pytest.raises(demo_app.DisplayError, match="--headless"):
            demo_app.CvDisplay()


# ------------------------------------------------------------------------------------------ prompts file
@pytest.mark.parametrize("content, needle", [
    ("[{\"obj_id\": 1, \"frame\": 0, \"points\": [[1, 2]]}", "not valid JSON"),
    ('{"obj_id": 1}', "expected a JSON list"),
    ("[]", "empty"),
    ('[{"frame": 0, "points": [[1, 2]]}]', "entry #0: 'obj_id'"),
    ('[{"obj_id": 1, "frame": 0, "box": [1, 2, 3, 4]}, {"obj_id": 2, "frame": -1, "box": [1, 2, 3, 4]}]',
     "entry #1: 'frame'"),
    ('[{"obj_id": 1, "frame": 0, "points": [[1, 2]]}, {"obj_id": 2, "frame": 0, "box": [5, 5, 1, 1]}]',
     "entry #1 (obj_id 2, frame 0): 'box'"),
    ('[{"obj_id": 1, "frame": 0, "points": [[1, 2], [3, 4]], "labels": [1]}]', "'labels' must be a list of 2"),
    ('[{"obj_id": 1, "frame": 0, "points": [[1, 2, 3]]}]', "'points'"),
    ('[{"obj_id": 1, "frame": 0, "point": [[1, 2]]}]', "unknown key(s) ['point']"),
    ('[{"obj_id": 1, "frame": 0}]', "at least one of"),
    ('[{"obj_id": 1, "frame": 0, "mask": "nope.png"}]', "cannot read mask"),
    ('[{"obj_id": 1, "frame": 0, "box": [0, 0, 5, 5]}, {"obj_id": 1, "frame": 0, "points": [[1, 1]]}]',
     "second prompt for the same object"),
    ('[7]', "entry #0: expected an object"),
    ('[{"obj_id": 1, "frame": 0, "mask": "m.png", "box": [0, 0, 5, 5]}]', "either 'mask' or 'points'/'box'"),
])
def test_invalid_prompts_json(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(PromptError) as ei:
        load_prompts(str(p))
    assert needle in str(ei.value) and str(p) in str(ei.value)


def test_invalid_prompts_from_cli_and_out_of_frame(tmp_path, fake_tracker, caplog):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"obj_id": 1, "frame": 0, "labels": [1]}]')
    code = demo_app.main(["--bundle", "b", "--source", str(VIDEO), "--headless", "--prompts", str(bad),
                          "--out", str(tmp_path / "x.mp4")])
    assert code == 2 and "entry #0" in caplog.text
    assert fake_tracker.calls == []  # nothing ran

    # A point outside the frame is caught when its frame arrives; the video so far is finalised.
    far = write_prompts(tmp_path, [{"obj_id": 1, "frame": 0, "points": [[10, 10]]},
                                   {"obj_id": 2, "frame": 3, "points": [[1000, 10]]}], "far.json")
    out = tmp_path / "far.mp4"
    code = demo_app.main(["--bundle", "b", "--source", str(VIDEO), "--headless", "--prompts", far, "--out", str(out)])
    assert code == 2 and "entry #1 (obj_id 2, frame 3)" in caplog.text and "outside the 240x136 frame" in caplog.text
    assert count_frames(out) == 3


def test_mask_prompt(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[20:40, 100:140] = 255
    cv2.imwrite(str(tmp_path / "m.png"), m)
    p = write_prompts(tmp_path, [{"obj_id": 5, "frame": 0, "mask": "m.png"}])
    specs = load_prompts(p)
    assert specs[0].mask.shape == (H, W) and specs[0].mask.sum() == 20 * 40
    tracker = FakeTracker()
    res = run_headless(tracker, SequentialReader(open_source(str(VIDEO))), specs, str(tmp_path / "o.mp4"),
                       max_frames=3)
    assert res.frames_written == 3 and tracker.object_ids == [5]


def test_cli_argument_checks(tmp_path, caplog):
    assert demo_app.main(["--bundle", "b", "--source", str(VIDEO), "--headless", "--out", "x.mp4"]) == 2
    assert "--prompts JSON" in caplog.text
    assert demo_app.main(["--bundle", "b", "--source", str(VIDEO), "--prompts", "p.json"]) == 2
    assert "for --headless" in caplog.text
    with pytest.raises(SystemExit):  # --bundle and --checkpoint are exclusive
        demo_app.main(["--bundle", "b", "--checkpoint", "c"])


# ------------------------------------------------------------------------------------------ events
def test_controller_clicks_and_drag():
    c = DemoController(drag_threshold=5)
    c.set_frame_size(W, H)
    assert c.on_mouse(ev.EVENT_LBUTTONDOWN, 50, 60) is None
    a = c.on_mouse(ev.EVENT_LBUTTONUP, 51, 61)          # tiny move: still a click
    assert a == PromptAction(obj_id=1, points=[[51.0, 61.0]], labels=[1], box=None, new_object=True)
    assert c.selected == 1 and c.objects == [1]

    a = c.on_mouse(ev.EVENT_RBUTTONDOWN, 10, 20)        # negative point for the selected object
    assert a == PromptAction(1, [[51.0, 61.0], [10.0, 20.0]], [1, 0], None, False)

    c.on_mouse(ev.EVENT_LBUTTONDOWN, 100, 30)
    c.on_mouse(ev.EVENT_MOUSEMOVE, 140, 80, ev.EVENT_FLAG_LBUTTON)
    assert c.drag_box == [100.0, 30.0, 140.0, 80.0]
    a = c.on_mouse(ev.EVENT_LBUTTONUP, 90, 20)          # dragged up-left past the start
    assert a.box == [90.0, 20.0, 100.0, 30.0] and a.points == [[51.0, 61.0], [10.0, 20.0]] and a.obj_id == 1
    assert c.drag_box is None
    pts, labels, box = c.pending_clicks(1)
    assert labels == [1, 0] and box == [90.0, 20.0, 100.0, 30.0]

    c.on_new_frame()                                    # clicks start afresh on a new frame
    a = c.on_mouse(ev.EVENT_RBUTTONDOWN, 5, 5)
    assert a.points == [[5.0, 5.0]] and a.labels == [0] and a.box is None
    assert c.on_mouse(ev.EVENT_MOUSEMOVE, 1, 1) is None

    a = c.on_mouse(ev.EVENT_LBUTTONUP, 1000, -5)        # clipped to the frame
    assert a.points[-1] == [W - 1.0, 0.0]


def test_controller_right_click_without_selection_is_ignored():
    c = DemoController()
    assert c.on_mouse(ev.EVENT_RBUTTONDOWN, 10, 10) is None
    assert c.objects == [] and c.selected is None


def test_controller_keys_selection_delete_reset():
    c = DemoController()
    assert c.on_key(-1) is None and c.on_key(ord("x")) is None
    c.on_mouse(ev.EVENT_LBUTTONDOWN, 1, 1)
    c.on_mouse(ev.EVENT_LBUTTONUP, 1, 1)                # object 1
    assert c.on_key(ord("n")) == SelectAction(2, new_object=True)
    a = c.on_mouse(ev.EVENT_LBUTTONUP, 9, 9)
    assert a.obj_id == 2 and a.new_object and c.objects == [1, 2]
    assert c.on_key(ord("1")) == SelectAction(1, new_object=False)
    a = c.on_mouse(ev.EVENT_LBUTTONUP, 3, 3)
    assert a.obj_id == 1 and not a.new_object and a.points == [[1.0, 1.0], [3.0, 3.0]]
    assert c.on_key(ord("7")) == SelectAction(7, new_object=True)
    assert c.on_mouse(ev.EVENT_LBUTTONUP, 4, 4).obj_id == 7
    assert c.on_key(ord("0")) == SelectAction(None)
    assert c.on_key(ord("d")) is None                    # nothing selected: nothing to delete
    assert c.on_mouse(ev.EVENT_LBUTTONUP, 5, 5).obj_id == 3   # no selection: the next free id
    c.on_key(ord("2"))
    assert c.on_key(ord("d")) == DeleteAction(2)
    assert c.objects == [1, 7, 3] and c.selected is None
    assert c.on_key(ord("n")) == SelectAction(2, new_object=True)  # freed id is reused
    assert c.on_key(ord(" ")) == PauseAction(True) and c.paused
    assert c.on_key(ord(" ")) == PauseAction(False) and not c.paused
    assert c.on_key(ord("s")) == SnapshotAction()
    assert c.on_key(ord("r")) == ResetAction()
    assert c.objects == [] and c.selected is None and c.pending_clicks(1) == ([], [], None)
    assert c.on_key(ord("q")) == QuitAction() and c.on_key(27) == QuitAction()
    assert c.on_key(ord("q") | 0x100000) == QuitAction()  # waitKeyEx-style high bits


def test_controller_undo_after_refusal():
    c = DemoController()
    c.on_mouse(ev.EVENT_LBUTTONUP, 1, 1)
    c.on_mouse(ev.EVENT_RBUTTONDOWN, 2, 2)
    c.undo_last()                                       # the tracker refused the negative click
    assert c.pending_clicks(1) == ([[1.0, 1.0]], [1], None)
    c.on_mouse(ev.EVENT_LBUTTONDOWN, 10, 10)
    c.on_mouse(ev.EVENT_LBUTTONUP, 50, 50)
    c.undo_last()                                       # ... and the box
    assert c.pending_clicks(1) == ([[1.0, 1.0]], [1], None)
    a = c.on_mouse(ev.EVENT_LBUTTONUP, 3, 3)
    assert a.points == [[1.0, 1.0], [3.0, 3.0]]


def test_interactive_prompt_refused_is_survived(tmp_path):
    class TwoClickTracker(FakeTracker):
        def add_prompt(self, frame, obj_id, points=None, labels=None, box=None, mask=None):
            if points is not None and len(points) > 2:
                raise InputError("at most 2 clicks")
            return super().add_prompt(frame, obj_id, points, labels, box, mask)

    clicks = [(ev.EVENT_LBUTTONUP, 10 * k, 10 * k, 0) for k in range(1, 5)]
    display = ScriptedDisplay([(ord(" "), clicks[:1]), (-1, clicks[1:]), (ord("q"), [])])
    tracker = TwoClickTracker()
    app = demo_app.InteractiveApp(tracker, SequentialReader(open_source(str(VIDEO))), display, live=False)
    assert app.run() == 0
    assert [len(c[3]) for c in tracker.calls if c[0] == "add_prompt"] == [1, 2]
    assert app.controller.pending_clicks(1)[0] == [[10.0, 10.0], [20.0, 20.0]]
    assert tracker.object_ids == [1] and app.controller.objects == [1]


def test_controller_display_scale_and_sync():
    c = DemoController(display_scale=2.0)
    c.set_frame_size(W, H)
    a = c.on_mouse(ev.EVENT_LBUTTONUP, 100, 50)
    assert a.points == [[50.0, 25.0]]
    c.sync_objects([])  # the tracker refused it
    assert c.objects == [] and c.pending_clicks(1) == ([], [], None)


# ------------------------------------------------------------------------------------------ interactive app
def test_interactive_app_with_scripted_events(tmp_path):
    tracker = FakeTracker()
    L_DOWN, L_UP, R_DOWN, MOVE = ev.EVENT_LBUTTONDOWN, ev.EVENT_LBUTTONUP, ev.EVENT_RBUTTONDOWN, ev.EVENT_MOUSEMOVE
    script = [
        (-1, []),                                              # frame 0 shown, no objects: not tracked
        (ord(" "), [(L_DOWN, 52, 87, 1), (L_UP, 52, 87, 0)]),  # click -> object 1 on frame 1; pause
        (-1, [(R_DOWN, 10, 10, 2)]),                           # negative point, same (paused) frame
        (ord("n"), []),
        (-1, [(L_DOWN, 75, 5, 1), (MOVE, 100, 50, 1), (L_UP, 130, 100, 0)]),  # drag -> box for object 2
        (ord("s"), []),
        (ord(" "), []),                                        # resume
        (-1, []),
        (ord("2"), []),
        (ord("d"), []),                                        # delete object 2
        (-1, []),
        (ord("r"), []),                                        # reset
        (-1, []),
        (ord("q"), []),
    ]
    display = ScriptedDisplay(script)
    rec = tmp_path / "rec.avi"
    app = demo_app.InteractiveApp(tracker, SequentialReader(open_source(str(VIDEO))), display,
                                  sink=demo_app.VideoSink(str(rec), 30), snapshot_dir=str(tmp_path / "snaps"),
                                  live=True)
    assert app.run() == 0 and app.end_reason == "quit" and display.closed
    calls = tracker.calls
    assert calls[0] == ("add_prompt", True, 1, [[52.0, 87.0]], [1], None)   # brings the displayed frame
    assert calls[1] == ("add_prompt", False, 1, [[52.0, 87.0], [10.0, 10.0]], [1, 0], None)
    assert calls[2] == ("add_prompt", False, 2, None, None, [75.0, 5.0, 130.0, 100.0])
    # resumed: frames 2, 3, 4 tracked with both objects, then object 2 deleted, frames 5, 6 tracked, reset
    assert calls[3:] == [("track",)] * 3 + [("remove_object", 2)] + [("track",)] * 2 + [("reset",)]
    assert app.frames_processed == 9 and tracker.object_ids == []
    assert all(img.shape == (H, W, 3) for img in display.shown)
    snaps = sorted(os.listdir(tmp_path / "snaps"))
    assert len(snaps) == 3 and snaps[0].endswith(".png") and any(s.endswith("_obj2.png") for s in snaps)
    assert count_frames(rec) == app.frames_processed
    lines = app.hud_lines()
    assert lines[0].startswith("FPS") and "enc" in lines[1] and "memory" in lines[2] and "objects" in lines[3]


def test_interactive_max_frames_and_ctrl_c(tmp_path):
    class InterruptingDisplay(ScriptedDisplay):
        def poll(self, delay_ms):
            if len(self.shown) >= 4:
                raise KeyboardInterrupt
            return -1, []

    app = demo_app.InteractiveApp(FakeTracker(), SequentialReader(open_source(str(VIDEO))), ScriptedDisplay([]),
                                  live=False, max_frames=3)
    assert app.run() == 0 and app.end_reason == "max frames reached" and app.frames_processed == 3

    display = InterruptingDisplay([])
    rec = tmp_path / "rec.mp4"
    app = demo_app.InteractiveApp(FakeTracker(), SequentialReader(open_source(str(VIDEO))), display,
                                  sink=demo_app.VideoSink(str(rec), 30), live=False, source_fps=None)
    assert app.run() == 130 and display.closed
    assert count_frames(rec) == 4


# ------------------------------------------------------------------------------------------ capture thread
def test_capture_thread_keeps_only_newest_frame():
    src = FakeSource(n_ok=10)
    grabber = LatestFrameGrabber(src, max_retries=0).start()
    deadline = time.monotonic() + 5
    while not grabber._ended and time.monotonic() < deadline:  # the consumer is "busy" meanwhile
        time.sleep(0.005)
    f = grabber.get(timeout=1)
    assert f.index == 9 and int(f.image[0, 0, 0]) == 9
    assert grabber.captured == 10 and grabber.dropped == 9 and grabber.delivered == 1
    assert grabber.get(timeout=1) is None and grabber.finished
    grabber.stop()
    assert not grabber.alive and src.released


def test_capture_thread_slow_consumer_no_backlog():
    src = FakeSource(n_ok=10**9, delay=0.001)
    got = []
    with LatestFrameGrabber(src) as grabber:
        for _ in range(5):
            newest_before = grabber.captured - 1
            f = grabber.get(timeout=2)
            assert f is not None
            assert f.index >= newest_before               # never an older frame than the newest one captured
            got.append(f.index)
            time.sleep(0.03)                              # a slow tracker step
        assert grabber.dropped > 0
    assert all(b > a + 1 for a, b in zip(got, got[1:]))   # stale frames were skipped, never re-delivered
    assert not grabber.alive and src.released
    assert grabber.captured == grabber.dropped + grabber.delivered + (1 if grabber._latest is not None else 0)


def test_parse_source():
    from sam2_edge.runtimes.video import parse_source

    assert parse_source("0") == ("camera", 0)
    assert parse_source("/dev/video2") == ("device", "/dev/video2")
    assert parse_source("picam:1") == ("picamera", 1) and parse_source("picam") == ("picamera", 0)
    assert parse_source("rtsp://cam.local/stream") == ("stream", "rtsp://cam.local/stream")
    assert parse_source("v4l2src ! videoconvert ! appsink")[0] == "gstreamer"
    assert parse_source("clip.mp4") == ("file", "clip.mp4")
    with pytest.raises(SourceError):
        parse_source("  ")


def test_open_reader_picks_by_liveness():
    assert isinstance(open_reader(FakeSource(is_live=False)), SequentialReader)
    assert isinstance(open_reader(FakeSource(is_live=True)), LatestFrameGrabber)
    assert isinstance(open_reader(FakeSource(is_live=True), drop_frames=False), SequentialReader)


# ------------------------------------------------------------------------------------------ real tracker
def test_headless_with_real_tracker(tmp_path):
    try:
        from sam2_edge.runtimes import Tracker
    except ImportError as e:
        pytest.skip(f"sam2_edge.runtimes.Tracker not importable: {e}")
    if not MICRO_CKPT.exists():
        pytest.skip(f"checkpoint {MICRO_CKPT} missing")
    try:
        tracker = Tracker.from_checkpoint(str(MICRO_CKPT))
    except ImportError as e:  # torch (the backend of from_checkpoint) not installed
        pytest.skip(f"real tracker unavailable: {e}")
    # Kept to two frames (a prompt frame, a tracked frame): the real model is the slow part here.
    prompts = parse_prompts(PROMPTS[:2])
    out, masks = tmp_path / "real.mp4", tmp_path / "masks"
    res = run_headless(tracker, SequentialReader(open_source(str(VIDEO))), prompts, str(out), masks_out=str(masks),
                       max_frames=2)
    assert res.exit_code == 0 and res.frames_written == 2 and count_frames(out) == 2
    assert set(os.listdir(masks)) == {f"{i:05d}_obj{o}.png" for i in range(2) for o in (1, 2)}
    assert cv2.imread(str(masks / "00001_obj2.png"), cv2.IMREAD_GRAYSCALE).shape == (H, W)
    assert tracker.object_ids == [1, 2] and tracker.memory_bytes > 0
