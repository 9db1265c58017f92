"""Tests of sam2_edge.runtimes.video, the one "video in, masks out" pipeline of `sam2-edge track`
and the demo: the folder-of-images source, read_frames on a video and a folder, the prompts of
track's --point/--box options, and that track and the demo share one prompts validator.
A small fake tracker stands in for the model (no torch needed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from sam2_edge.errors import InputError
from sam2_edge.runtimes import video
from sam2_edge.runtimes.video import (ImageFolderSource, PromptError, PromptSpec, SequentialReader, SourceError,
                                      load_prompts, open_source, parse_source, prompts_from_flags, read_frames)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # apps/ is not installed: import it from the checkout
    sys.path.insert(0, str(REPO))

VIDEO = REPO / "tests" / "assets" / "bedroom_240x136_20f.mp4"
W, H, N_FRAMES = 240, 136, 20


# ------------------------------------------------------------------------------------------ helpers
def _solid(value: int, h: int = 8, w: int = 12) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value          # blue channel in OpenCV's BGR order
    img[..., 2] = 255 - value    # red
    return img


@pytest.fixture
def numbered_folder(tmp_path) -> Path:
    """Images 1, 2, 10 (out of name order), a non-numeric one, and files that are not images."""
    d = tmp_path / "frames"
    d.mkdir()
    for stem, value in (("10", 30), ("2", 20), ("1", 10)):
        assert cv2.imwrite(str(d / f"{stem}.png"), _solid(value))
    assert cv2.imwrite(str(d / "cover.bmp"), _solid(40))
    (d / "notes.txt").write_text("not a frame")
    (d / "sub").mkdir()
    return d


class FakeTracker:
    """The Tracker API: each object's mask is a square around its last positive click / box centre."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.centres: Dict[int, Tuple[float, float]] = {}
        self.hw: Optional[Tuple[int, int]] = None

    @property
    def object_ids(self) -> List[int]:
        return list(self.centres)

    def add_prompt(self, frame, obj_id, points=None, labels=None, box=None, mask=None):
        if frame is not None:
            self.hw = frame.shape[:2]
        if points:
            c = points[-1]
        elif box:
            c = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        else:
            ys, xs = np.nonzero(mask)
            c = (float(xs.mean()), float(ys.mean()))
        self.centres[obj_id] = (float(c[0]), float(c[1]))
        self.calls.append(("add_prompt", frame is not None, obj_id, points, labels, box, mask is not None))
        return self._result()

    def prepare(self, frame):  # the model input computed ahead: nothing to compute here
        return frame

    def track(self, frame):
        self.hw = frame.shape[:2]
        self.calls.append(("track",))
        return self._result()

    def _result(self):
        h, w = self.hw
        masks = np.zeros((len(self.centres), h, w), bool)
        for k, (x, y) in enumerate(self.centres.values()):
            masks[k, max(int(y) - 5, 0):int(y) + 5, max(int(x) - 5, 0):int(x) + 5] = True

        class R:
            object_ids = list(self.centres)
        R.masks = masks
        return R()


# ------------------------------------------------------------------------------------------ sources
def test_folder_source_orders_by_number_and_skips_non_images(numbered_folder):
    assert parse_source(str(numbered_folder)) == ("folder", str(numbered_folder))
    src = open_source(str(numbered_folder))
    assert isinstance(src, ImageFolderSource)
    assert not src.is_live and src.frame_count == 4 and src.fps is None
    assert [p.name for p in src.files] == ["1.png", "2.png", "10.png", "cover.bmp"]
    with SequentialReader(src) as reader:
        got = []
        while (f := reader.get()) is not None:
            assert f.image.shape == (8, 12, 3) and f.image.dtype == np.uint8
            got.append(int(f.image[0, 0, 0]))          # BGR: the blue channel
        assert got == [10, 20, 30, 40]
        assert reader.end_reason == "end of file"


def test_folder_source_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(SourceError, match="no images"):
        open_source(str(empty))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0.jpg").write_bytes(b"not a jpeg")
    src = open_source(str(bad))
    with pytest.raises(SourceError, match="cannot decode image"):
        src.read()
    assert issubclass(SourceError, InputError)     # a user input problem: `sam2-edge ...` exits 2


def test_folder_ignores_exif_orientation_like_pil(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    d = tmp_path / "exif"
    d.mkdir()
    rgb = np.zeros((10, 30, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6                                 # "rotate 90 CW" on display
    im.save(d / "0.jpg", exif=exif.tobytes(), quality=95)
    frames, n, _ = read_frames(str(d))
    f = next(frames)
    ref = np.asarray(Image.open(d / "0.jpg").convert("RGB"))
    assert n == 1 and f.shape == ref.shape == (10, 30, 3)   # not rotated to 30x10
    assert np.abs(f.astype(int) - ref.astype(int)).mean() < 3


# ------------------------------------------------------------------------------------------ read_frames
def test_read_frames_video():
    frames, n, fps = read_frames(str(VIDEO))
    assert n == N_FRAMES and fps > 0
    got = list(frames)
    assert len(got) == N_FRAMES
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in got)
    cap = cv2.VideoCapture(str(VIDEO))
    ok, bgr = cap.read()
    cap.release()
    assert ok and np.array_equal(got[0], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))   # RGB, not BGR


def test_read_frames_folder(numbered_folder):
    frames, n, fps = read_frames(str(numbered_folder))
    assert n == 4 and fps == 30.0
    got = list(frames)
    assert [int(f[0, 0, 2]) for f in got] == [10, 20, 30, 40]   # RGB: blue is the last channel
    assert [int(f[0, 0, 0]) for f in got] == [245, 235, 225, 215]


def test_read_frames_releases_and_errors(tmp_path):
    frames, _, _ = read_frames(str(VIDEO))
    next(frames)
    frames.close()                                   # stopping early releases the capture
    assert not frames.source.cap.isOpened()
    with pytest.raises(StopIteration):
        next(frames)
    frames, _, _ = read_frames(str(VIDEO))
    frames.close()                                   # ... also before the first frame (model failed to load)
    assert not frames.source.cap.isOpened()
    with pytest.raises(SourceError, match="neither a video file, a folder of frames nor a camera index"):
        read_frames(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="no images"):
        read_frames(str(tmp_path))


# ------------------------------------------------------------------------------------------ prompts
def test_prompts_from_track_flags():
    (p,) = prompts_from_flags(["10,20", "30.5,40"], "1,2,50,60")
    assert isinstance(p, PromptSpec)
    assert (p.obj_id, p.frame) == (1, 0)
    assert p.points == [[10.0, 20.0], [30.5, 40.0]] and p.labels == [1, 1]
    assert p.box == [1.0, 2.0, 50.0, 60.0] and p.mask is None
    (p,) = prompts_from_flags(None, "0,0,5,5")
    assert p.points is None and p.labels is None and p.box == [0.0, 0.0, 5.0, 5.0]
    (p,) = prompts_from_flags(["3,4"], None)
    assert p.points == [[3.0, 4.0]] and p.box is None


@pytest.mark.parametrize("points, box, match", [
    (None, None, "give --point X,Y"),
    (["1"], None, "--point must be 2 comma-separated numbers"),
    (["a,b"], None, "--point must be 2 comma-separated numbers"),
    (None, "1,2,3", "--box must be 4 comma-separated numbers"),
    (None, "50,2,10,60", "x0 < x1"),                 # the same box rule as a prompts file
    (["nan,3"], None, "pixel pairs"),
])
def test_prompts_from_track_flags_errors(points, box, match):
    with pytest.raises(PromptError, match=match):
        prompts_from_flags(points, box)


def test_prompts_file_schema(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[20:40, 30:60] = 255
    cv2.imwrite(str(tmp_path / "m.png"), m)
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"prompts": [{"obj_id": 2, "frame": 3, "mask": "m.png"},
                                         {"obj_id": 1, "points": [[5, 6]]}]}))
    a, b = load_prompts(str(f))
    assert (a.obj_id, a.frame, a.labels) == (1, 0, [1])          # sorted by frame, labels default positive
    assert b.mask.shape == (H, W) and b.mask.sum() == 20 * 30


# ------------------------------------------------------------------------------------------ one validator
BAD_FILES = [
    [{"obj_id": 1, "frame": 0, "points": [[5, 5]], "colour": "red"}],   # unknown key
    [{"obj_id": 1, "frame": 0, "box": [50, 5, 10, 60]}],                # x0 > x1
    {"objects": []},                                                    # not a list
]


@pytest.mark.parametrize("data", BAD_FILES)
def test_track_and_demo_reject_the_same_bad_prompts_file(tmp_path, data, capsys, caplog, monkeypatch):
    from apps.raspi_demo import app as demo_app
    from sam2_edge.cli import main as cli_main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(PromptError) as info:
        load_prompts(str(bad))
    expected = str(info.value)

    def no_model(*a, **k):
        raise AssertionError("the model must not load before the prompts file is validated")

    monkeypatch.setattr(demo_app, "load_tracker", no_model)
    # track: checkpoint "missing.pt" would fail differently if the model were loaded first
    rc = cli_main(["track", "--checkpoint", str(tmp_path / "missing.pt"), "--source", str(VIDEO),
                   "--prompts", str(bad), "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"sam2-edge track: error: {expected}" in err
    with caplog.at_level(logging.ERROR):
        rc = demo_app.main(["--bundle", "b", "--source", str(VIDEO), "--headless", "--prompts", str(bad),
                            "--out", str(tmp_path / "demo.mp4")])
    assert rc == 2
    assert expected in [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not (tmp_path / "demo.mp4").exists() and not (tmp_path / "out" / "overlay.mp4").exists()


def test_error_classes_are_defined_once():
    import apps.raspi_demo as demo
    from apps.raspi_demo import app as demo_app
    from apps.raspi_demo import headless

    assert demo.SourceError is video.SourceError is video.sources.SourceError
    assert demo.PromptError is headless.PromptError is video.prompts_file.PromptError
    assert demo_app.OutputError is headless.OutputError is video.writers.OutputError
    assert not (REPO / "apps" / "raspi_demo" / "capture.py").exists()


def test_package_imports_no_torch_nor_cli():
    code = ("import sys, sam2_edge.runtimes.video; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'apps') or m.startswith("
            "('sam2_edge.bench', 'sam2_edge.export', 'sam2_edge.cli'))]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ track
def test_track_uses_the_pipeline(tmp_path, monkeypatch):
    """track with the demo's schema ({"prompts": [...]}, a mask prompt): prompt frames go through
    add_prompt (the first with the frame), the others through track; output layout unchanged."""
    from sam2_edge.cli import main as cli_main
    from sam2_edge.runtimes import Tracker

    fake = FakeTracker()
    monkeypatch.setattr(Tracker, "from_checkpoint", staticmethod(lambda *a, **k: fake))
    m = np.zeros((H, W), np.uint8)
    m[60:80, 100:130] = 255
    cv2.imwrite(str(tmp_path / "m3.png"), m)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": [
        {"obj_id": 1, "frame": 1, "points": [[52, 87]]},
        {"obj_id": 2, "frame": 1, "box": [75, 0, 130, 100]},
        {"obj_id": 3, "frame": 3, "mask": "m3.png"},
    ]}))
    out = tmp_path / "out"
    rc = cli_main(["track", "--checkpoint", "unused.pt", "--source", str(VIDEO), "--prompts", str(prompts),
                   "--out", str(out), "--max-frames", "5"])
    assert rc == 0
    kinds = [c[:3] if c[0] == "add_prompt" else c for c in fake.calls]
    assert kinds == [("add_prompt", True, 1), ("add_prompt", False, 2), ("track",),
                     ("add_prompt", True, 3), ("track",)]
    assert fake.calls[0][4] == [1]                    # labels default to positive
    assert fake.calls[3][6]                           # the mask prompt reached the tracker
    names = sorted(os.listdir(out / "masks"))
    assert names == sorted([f"{i:05d}_obj{o}.png" for i in (1, 2, 3, 4) for o in (1, 2)]
                           + ["00003_obj3.png", "00004_obj3.png"])
    mk = cv2.imread(str(out / "masks" / "00001_obj1.png"), cv2.IMREAD_GRAYSCALE)
    assert mk.shape == (H, W) and mk[87, 52] == 255 and mk[0, 0] == 0
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_track_point_flags_and_prompt_outside_frame(tmp_path, monkeypatch, capsys):
    from sam2_edge.cli import main as cli_main
    from sam2_edge.runtimes import Tracker

    fake = FakeTracker()
    monkeypatch.setattr(Tracker, "from_checkpoint", staticmethod(lambda *a, **k: fake))
    rc = cli_main(["track", "--checkpoint", "unused.pt", "--source", str(VIDEO), "--point", "52,87",
                   "--box", "40,60,70,110", "--out", str(tmp_path / "o"), "--max-frames", "3"])
    assert rc == 0
    assert fake.calls[0][:6] == ("add_prompt", True, 1, [[52.0, 87.0]], [1], [40.0, 60.0, 70.0, 110.0])
    assert sorted(os.listdir(tmp_path / "o" / "masks")) == [f"{i:05d}_obj1.png" for i in range(3)]
    rc = cli_main(["track", "--checkpoint", "unused.pt", "--source", str(VIDEO), "--point", "500,87",
                   "--out", str(tmp_path / "o2")])
    assert rc == 2
    assert "lies outside the 240x136 frame" in capsys.readouterr().err
