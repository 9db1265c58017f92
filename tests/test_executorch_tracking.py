"""Tracking through an ExecuTorch (XNNPACK) bundle: the official streaming goldens and the
torch tracker's masks, and no drift over 200 real frames (micro in CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch")
torch = pytest.importorskip("torch")

from bundle_helpers import MICRO_CKPT, MICRO_STREAM, read_clip  # noqa: E402
from stream_golden import golden_lowres, load_golden, run_scenario  # noqa: E402

from sam2_edge.runtimes import Tracker  # noqa: E402
from sam2_edge.runtimes.backends.torch_backend import TorchBackend  # noqa: E402

CLIP_200 = Path(__file__).parent / "assets" / "bedroom_240x136_200f.mp4"
GOLDEN_LOWRES_TOL = 1e-3  # |d| <= 1e-3 * max(1, |golden|)
MASK_AGREE = 0.995  # per frame and object, vs golden and vs the torch tracker
DRIFT_MAX_DIFF = 0.005  # <= 0.5 % differing pixels on every one of 200 frames


@pytest.fixture(scope="module")
def et_bundle(tmp_path_factory):
    from bundle_helpers import micro_pte_bundle

    return micro_pte_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def torch_tracker():
    return Tracker(TorchBackend.from_checkpoint(str(MICRO_CKPT)))


@pytest.mark.parametrize("scenario", ["init", "refine", "mask", "click_untracked"])
def test_tracking_matches_goldens_and_torch(et_bundle, torch_tracker, scenario):
    tracker = Tracker.from_bundle(str(et_bundle))
    assert tracker.backend.name == "executorch"
    run = run_scenario(tracker, MICRO_STREAM, f"stream_{scenario}")
    ref = run_scenario(torch_tracker, MICRO_STREAM, f"stream_{scenario}")
    g = load_golden(MICRO_STREAM / f"video_stream_{scenario}.npz")
    worst, agree_g, agree_t = 0.0, 1.0, 1.0
    for j, oid in enumerate(g["obj_ids"]):
        frames, low = golden_lowres(MICRO_STREAM, f"stream_{scenario}", int(oid))
        for i, t in enumerate(frames):
            key = (int(t), int(oid))
            rel = float((np.abs(run.low[key] - low[i]) / np.maximum(1.0, np.abs(low[i]))).max())
            worst = max(worst, rel)
            agree_g = min(agree_g, float((run.mask[key] == g["videores_mask"][int(t), j]).mean()))
            agree_t = min(agree_t, float((run.mask[key] == ref.mask[key]).mean()))
    print(f"\n[executorch] stream_{scenario}: logits vs golden {worst:.2e}; mask agreement vs golden "
          f"{agree_g:.5f}, vs torch {agree_t:.5f}")
    assert worst <= GOLDEN_LOWRES_TOL and agree_g >= MASK_AGREE and agree_t >= MASK_AGREE
    assert set(run.mask) == set(ref.mask)


def test_no_drift_over_200_frames(et_bundle, torch_tracker):
    frames = read_clip(CLIP_200)
    assert len(frames) >= 200
    outs = {}
    for name, tr in (("executorch", Tracker.from_bundle(str(et_bundle))), ("torch", torch_tracker)):
        tr.reset()
        tr.add_prompt(frames[0], 1, points=[[120, 70]], labels=[1])
        r = tr.add_prompt(None, 2, box=[20, 60, 100, 130])
        masks = [r.masks.copy()]
        for f in frames[1:]:
            masks.append(tr.track(f).masks.copy())
        outs[name] = masks
    diffs = np.array([(a != b).mean(axis=(1, 2)) for a, b in zip(outs["executorch"], outs["torch"])])
    coverage = float(np.mean([m.mean() for m in outs["torch"]]))
    print(f"\n[executorch] drift over {len(diffs)} frames: max {diffs.max():.4%}, mean {diffs.mean():.5%}, "
          f"coverage {coverage:.2f}")
    assert 0.02 < coverage < 0.98
    assert diffs.max() <= DRIFT_MAX_DIFF


def test_batched_graphs_equal_per_object_calls(et_bundle):
    """The .pte bundle's batch-2 programs (OBJ_BATCHES in bundle_helpers) give the logits of one
    object per call: 3 objects run as 2 + 1, tolerances of test_object_batches.py."""
    from test_object_batches import BUNDLE_ATOL, BUNDLE_RTOL, PerObject, assert_same_runs

    from sam2_edge.runtimes.bundle_backends import open_bundle

    inner = open_bundle(et_bundle)
    assert inner.spec.obj_batches == (1, 2)
    batched = PerObject(inner, batched=True)
    run_b = run_scenario(Tracker(batched), MICRO_STREAM, "stream_late_object")
    run_1 = run_scenario(Tracker(PerObject(inner)), MICRO_STREAM, "stream_late_object")
    worst = assert_same_runs(run_b, run_1, BUNDLE_ATOL, BUNDLE_RTOL)
    print(f"\n[executorch] late_object: batch-2 programs vs per object max |d| {worst:.2e}")
    assert {"memory_attention@2", "mask_decoder@2", "memory_encoder@2"} <= set(batched.keys)
