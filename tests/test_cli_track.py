"""`sam2-edge track` end to end on the micro checkpoint and a folder of frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from sam2_edge.cli import main

FIX = Path(__file__).parent / "fixtures"


def test_track_frames_folder(tmp_path, tmp_path_factory):
    pytest.importorskip("torch")
    frames = tmp_path_factory.mktemp("frames")
    for p in sorted((FIX / "micro_stream" / "frames").glob("*.jpg"))[:4]:
        (frames / p.name).write_bytes(p.read_bytes())
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"obj_id": 1, "frame": 0, "points": [[52, 87]], "labels": [1]},
                                   {"obj_id": 2, "frame": 1, "box": [75, 0, 130, 100]}]))
    rc = main(["track", "--checkpoint", str(FIX / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"),
               "--source", str(frames), "--prompts", str(prompts), "--out", str(tmp_path / "out")])
    assert rc == 0
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert masks == ["00000_obj1.png", "00001_obj1.png", "00001_obj2.png", "00002_obj1.png", "00002_obj2.png",
                     "00003_obj1.png", "00003_obj2.png"]
    cap = cv2.VideoCapture(str(tmp_path / "out" / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    doc = json.loads((tmp_path / "out" / "masks.json").read_text())  # the same masks in COCO RLE
    assert [sorted(f["masks"]) for f in doc["frames"]] == [["1"], ["1", "2"], ["1", "2"], ["1", "2"]]


def test_track_bad_arguments(tmp_path, capsys):
    rc = main(["track", "--checkpoint", "x.pt", "--source", str(tmp_path / "missing.mp4"), "--point", "1,2"])
    assert rc == 2
    assert "neither a video file" in capsys.readouterr().err
    rc = main(["track", "--checkpoint", "x.pt", "--source", str(tmp_path), "--point", "1"])
    assert rc == 2
