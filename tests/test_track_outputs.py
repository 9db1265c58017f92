"""What `sam2-edge track` hands the user: masks.json in COCO RLE (pycocotools' format, encoded
here in numpy), the end-of-run summary, the empty-mask warning, the overlay legend, the codec
choice, and error messages that say what --out takes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from sam2_edge.cli import main
from sam2_edge.runtimes.video import draw_legend, rle_decode, rle_encode
from sam2_edge.runtimes.video import rle as R
from sam2_edge.runtimes.video.summary import TrackSummary

REPO = Path(__file__).resolve().parent.parent
MICRO = REPO / "tests" / "fixtures" / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
CLIP = REPO / "tests" / "assets" / "bedroom_240x136_200f.mp4"


# ------------------------------------------------------------------ COCO RLE
def test_rle_hand_made_3x3():
    """0 1 0 / 0 1 1 / 0 0 0 read column by column: 0 0 0 | 1 1 0 | 0 1 0 -> runs 3 zeros, 2 ones,
    2 zeros, 1 one, 1 zero. Compressed (rleToString): 3 -> '3', 2 -> '2', 2 -> '2', then each
    count minus the one two before: 1 - 2 = -1 -> 31 + 48 = 'O', 1 - 2 = -1 -> 'O'."""
    m = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=np.uint8)
    assert R.run_lengths(m) == [3, 2, 2, 1, 1]
    assert rle_encode(m) == {"size": [3, 3], "counts": "322OO"}
    assert rle_encode(np.ones((2, 2), bool)) == {"size": [2, 2], "counts": "04"}  # starts with an empty 0-run
    assert R.run_lengths(np.zeros((2, 3), bool)) == [6]
    assert (rle_decode({"size": [3, 3], "counts": [3, 2, 2, 1, 1]}) == m.astype(bool)).all()  # uncompressed form


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        m = rng.random((h, w)) < rng.random()
        enc = rle_encode(m)
        assert enc["size"] == [h, w] and isinstance(enc["counts"], str)
        assert R.string_to_counts(enc["counts"]) == R.run_lengths(m)
        assert np.array_equal(rle_decode(enc), m)
    big = np.zeros((720, 1280), bool)
    big[100:600, 200:1100] = True  # long runs: multi-character counts
    assert np.array_equal(rle_decode(rle_encode(big)), big)
    with pytest.raises(ValueError):
        rle_decode({"size": [3, 3], "counts": [3, 2]})


def test_rle_matches_pycocotools_when_installed():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    m = rng.random((37, 23)) < 0.4
    ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    assert rle_encode(m)["counts"] == ref["counts"].decode("ascii")


# ------------------------------------------------------------------ summary / legend
def test_summary_warns_on_consecutive_empty_masks(caplog):
    s = TrackSummary(empty_after=3)
    full, empty = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    with caplog.at_level(logging.WARNING):
        for i in range(10):
            s.add(i, {1: full, 2: empty if 2 <= i <= 6 else full})
    s.finish()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "object 2" in warnings[0] and "since frame 2" in warnings[0] and "3 consecutive frames" in warnings[0]
    d = s.as_dict()
    assert d["1"] == {"first_frame": 0, "frames": 10, "present": 10, "empty_runs": []}
    assert d["2"]["present"] == 5 and d["2"]["empty_runs"] == [[2, 6]]
    assert "  object 2: mask on 5 of 10 frames (from frame 0); empty on frames 2-6" in s.lines()


def test_legend_is_drawn():
    img = np.zeros((136, 240, 3), np.uint8)
    out = draw_legend(img.copy(), [1, 2], empty=[2])
    assert out[:40, :100].any() and not out[60:, 120:].any()


# ------------------------------------------------------------------ the command
def test_track_writes_masks_json_and_summary(tmp_path, capsys, caplog):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"obj_id": 1, "frame": 0, "points": [[60, 90]], "labels": [1]},
                                   {"obj_id": 3, "frame": 1, "box": [75, 0, 130, 100]}]))
    with caplog.at_level(logging.INFO):
        rc = main(["track", "--checkpoint", str(MICRO), "--source", str(CLIP), "--prompts", str(prompts),
                   "--max-frames", "5", "--out", str(out), "--threads", "1", "--image-size", "256"])
    assert rc == 0
    doc = json.loads((out / "masks.json").read_text())
    assert doc["width"] == 240 and doc["height"] == 136
    assert [f["frame"] for f in doc["frames"]] == [0, 1, 2, 3, 4]
    assert set(doc["frames"][0]["masks"]) == {"1"} and set(doc["frames"][1]["masks"]) == {"1", "3"}
    for f in doc["frames"]:
        for obj, enc in f["masks"].items():
            png = cv2.imread(str(out / "masks" / f"{f['frame']:05d}_obj{obj}.png"), cv2.IMREAD_GRAYSCALE)
            assert np.array_equal(rle_decode(enc), png > 0)  # the JSON holds exactly the PNG masks
    assert doc["objects"]["1"]["frames"] == 5 and doc["objects"]["3"]["frames"] == 4
    text = capsys.readouterr().out
    assert "tracked 5 of 5 frames read" in text and "FPS" in text
    assert "9 mask PNGs" in text  # object 1 on frames 0-4, object 3 on 1-4
    assert "masks.json" in text and "overlay.mp4 5 frames, codec " in text
    assert "object 1: mask on" in text and "object 3: mask on" in text and "of 4 frames (from frame 1)" in text
    codec_lines = [r.getMessage() for r in caplog.records if "overlay.mp4" in r.getMessage()]
    assert any("avc1" in m or "H.264" in m for m in codec_lines)  # says which codec was used
    marker = json.loads((out / "sam2_edge_output.json").read_text())
    assert marker["summary"]["frames_tracked"] == 5 and marker["summary"]["overlay_codec"] in ("avc1", "mp4v")
    # an earlier track output (now with masks.json) is replaced by the next run
    assert main(["track", "--checkpoint", str(MICRO), "--source", str(CLIP), "--point", "60,90",
                 "--max-frames", "2", "--out", str(out), "--threads", "1"]) == 0
    assert len(json.loads((out / "masks.json").read_text())["frames"]) == 2


def test_track_out_errors_say_it_takes_a_folder(tmp_path, capsys):
    rc = main(["track", "--checkpoint", str(MICRO), "--source", str(CLIP), "--point", "1,2",
               "--out", str(tmp_path / "result.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "takes a FOLDER" in err and "demo's --out takes a video file" in err
    f = tmp_path / "afile"
    f.write_text("x")
    rc = main(["track", "--checkpoint", str(MICRO), "--source", str(CLIP), "--point", "1,2", "--out", str(f)])
    assert rc == 2 and "takes a FOLDER" in capsys.readouterr().err
    rc = main(["track", "--bundle", str(tmp_path), "--source", str(CLIP), "--point", "1,2", "--image-size", "512",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "--image-size applies to --checkpoint" in capsys.readouterr().err


def test_video_file_errors_say_it_takes_a_file(tmp_path):
    from sam2_edge.errors import OutputError
    from sam2_edge.runtimes.video import check_video_path

    with pytest.raises(OutputError, match="takes a video FILE"):
        check_video_path(str(tmp_path), "--out")
