"""sam2-edge eval: J / F / J&F as the DAVIS evaluator defines them (values worked out by hand
for rectangles), the DAVIS-layout reader on a fixture built from the test clip, pseudo ground
truth, and the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sam2_edge.errors import InputError
from sam2_edge.evaluation.metrics import (bound_pixels, boundary_prf, disk, f_measure, jaccard, score_sequence,
                                          seg2bmap)

H, W = 100, 100


def rect(r0, c0, r1, c1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_jaccard_by_hand():
    gt = rect(20, 20, 60, 60)                           # 40 x 40
    assert jaccard(gt, gt) == 1.0
    assert jaccard(rect(20, 21, 60, 61), gt) == pytest.approx(40 * 39 / (40 * 41))   # one column shifted
    assert jaccard(rect(20, 30, 60, 70), gt) == pytest.approx(1200 / 2000)            # 10 columns: 0.6
    assert jaccard(rect(0, 0, 10, 10), gt) == 0.0
    assert jaccard(np.zeros((H, W), bool), np.zeros((H, W), bool)) == 1.0               # both empty
    assert jaccard(np.zeros((H, W), bool), gt) == 0.0


def test_boundary_tolerance_and_disk():
    assert bound_pixels((100, 100)) == 2                # ceil(0.008 * 141.4) = ceil(1.13)
    assert bound_pixels((480, 854)) == 8                # DAVIS 480p: ceil(7.84)
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    # seg2bmap of a single pixel: the pixel and its left / upper / upper-left neighbours
    b = seg2bmap(rect(5, 5, 6, 6, 10, 10))
    assert sorted(zip(*np.nonzero(b))) == [(4, 4), (4, 5), (5, 4), (5, 5)]


def test_f_measure_by_hand():
    gt = rect(20, 20, 60, 60)
    assert f_measure(gt, gt) == 1.0
    # a 1-pixel shift: every boundary pixel lies within the 2-pixel tolerance -> F = 1 while J < 1
    assert f_measure(rect(20, 21, 60, 61), gt) == 1.0
    # far apart: no boundary pixel matched -> P = R = 0 -> F = 0
    assert f_measure(rect(80, 80, 95, 95), gt) == 0.0
    # empty prediction: P = 1, R = 0 -> F = 0; both empty: F = 1
    assert boundary_prf(np.zeros((H, W), bool), gt) == {"precision": 1.0, "recall": 0.0, "f": 0.0}
    assert f_measure(np.zeros((H, W), bool), np.zeros((H, W), bool)) == 1.0
    # a 10-column shift: the vertical edges (8 px apart) never match; of the top and bottom edges
    # only the overlapping span matches. Counted on the boundary maps with the definition:
    pred = rect(20, 30, 60, 70)
    r = boundary_prf(pred, gt)
    bp, bg = seg2bmap(pred), seg2bmap(gt)
    yy, xx = np.nonzero(bg)
    py, px = np.nonzero(bp)
    d = np.sqrt((py[:, None] - yy[None]) ** 2 + (px[:, None] - xx[None]) ** 2)
    prec = float(np.mean(d.min(1) <= 2))
    rec = float(np.mean(d.min(0) <= 2))
    assert r["precision"] == pytest.approx(prec) and r["recall"] == pytest.approx(rec)
    assert r["f"] == pytest.approx(2 * prec * rec / (prec + rec))
    assert 0.3 < r["f"] < 0.8


def test_score_sequence_skips_first_and_last_frame():
    gt = [{1: rect(20, 20, 60, 60)} for _ in range(4)]
    pred = [{1: np.zeros((H, W), bool)}, {1: rect(20, 20, 60, 60)}, {1: rect(20, 30, 60, 70)}, {}]
    r = score_sequence(pred, gt)
    assert r["frames_scored"] == [1, 2]
    assert r["J"] == pytest.approx((1.0 + 0.6) / 2)
    assert r["JF"] == pytest.approx((r["J"] + r["F"]) / 2)


# ------------------------------------------------------------------ DAVIS-layout fixture
@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    """3 + 4 frames of the bedroom clip as a two-video DAVIS layout, two rectangle objects."""
    import cv2

    from bundle_helpers import CLIP_200
    from sam2_edge.evaluation.davis import write_ids

    root = tmp_path_factory.mktemp("davis")
    cap = cv2.VideoCapture(str(CLIP_200))
    frames = [cap.read()[1] for _ in range(7)]
    cap.release()
    h, w = frames[0].shape[:2]
    for name, idx in (("vid_a", range(0, 3)), ("vid_b", range(3, 7))):
        fd = root / "JPEGImages" / "480p" / name
        ad = root / "Annotations" / "480p" / name
        fd.mkdir(parents=True)
        ad.mkdir(parents=True)
        for k, i in enumerate(idx):
            cv2.imwrite(str(fd / f"{k:05d}.jpg"), frames[i])
            ids = np.zeros((h, w), np.uint8)
            ids[20:90, 30:110] = 1
            ids[40:120, 140:220] = 2
            write_ids(fd.parent.parent.parent / "Annotations" / "480p" / name / f"{k:05d}.png", ids)
    return root


def test_davis_reader_round_trip(davis_root):
    from sam2_edge.evaluation.davis import list_videos, read_ids

    vids = list_videos(davis_root)
    assert [v.name for v in vids] == ["vid_a", "vid_b"]
    assert len(vids[1].frames) == 4 and sorted(vids[1].annotations) == [0, 1, 2, 3]
    ids = read_ids(vids[0].annotations[0])
    assert set(np.unique(ids).tolist()) == {0, 1, 2}
    assert int((ids == 1).sum()) == 70 * 80
    with pytest.raises(InputError, match="DAVIS-layout"):
        list_videos(davis_root / "JPEGImages")


def test_eval_davis_and_pseudo(davis_root, tmp_path_factory, capsys):
    from bundle_helpers import micro_onnx_bundle
    from sam2_edge.cli import main
    from sam2_edge.evaluation.evaluate import evaluate_davis

    bundle = micro_onnx_bundle(tmp_path_factory)
    r = evaluate_davis(str(bundle), str(davis_root))
    assert set(r["videos"]) == {"vid_a", "vid_b"}
    for v in r["videos"].values():
        assert set(v["objects"]) == {"1", "2"}
        assert 0.0 <= v["J"] <= 1.0 and 0.0 <= v["F"] <= 1.0
    assert r["JF"] == pytest.approx((r["J"] + r["F"]) / 2)
    # a model against itself as pseudo ground truth: perfect
    out = tmp_path_factory.mktemp("eval") / "scores.json"
    assert main(["eval", "--model", str(bundle), "--reference", str(bundle), "--frames", "4",
                 "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["J"] == 1.0 and s["F"] == 1.0 and s["JF"] == 1.0
    assert "J&F" in capsys.readouterr().out
    assert main(["eval", "--model", str(bundle), "--davis", str(davis_root / "nope")]) == 2
