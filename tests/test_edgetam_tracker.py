"""The streaming tracker (torch backend) on EdgeTAM against the OFFICIAL EdgeTAM video predictor
goldens made in streaming order (`edgetam_micro_stream` in CI, `edgetam_stream` as slow): the
same Tracker, rings and policy as SAM 2.1, with the compressed memory layout of the contract
([Kc + R, 512, 64] per object; micro [8, 96, 16]).

Every scenario (two objects from frame 0, a late object, a correction after tracking, a click
on an untracked frame, mask prompts incl. an empty one, ring overflow), every frame and object:
low-res logits |d| <= tol * max(1, |golden|) with tol 1e-3 on the first 3 frames of an object
and 3e-3 later (micro, fp32 goldens; fp16 full-size goldens 1e-2 / 5e-2), object scores, and
video-resolution masks >= 99.5 % equal pixels (the helpers of tests/test_tracker_parity.py).
The perceiver memories themselves (bf16, [T, 96, 16]) are checked against the goldens' too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_golden import golden_lowres, load_golden, run_scenario

pytest.importorskip("torch")
from sam2_edge.runtimes import Tracker  # noqa: E402
from sam2_edge.runtimes.memory import round_bf16  # noqa: E402
from test_tracker_parity import (MICRO_TOL_EARLY, MICRO_TOL_LATE, SCENARIOS, TINY_TOL_EARLY,  # noqa: E402
                                 TINY_TOL_LATE, compare)

FIX = Path(__file__).parent / "fixtures"
STREAM = FIX / "edgetam_micro_stream"
CKPT = FIX / "edgetam_micro" / "edgetam_micro_seed7.fp16.pt"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="module")
def et_tracker():
    return Tracker.from_checkpoint(str(CKPT))


def test_spec_has_compressed_memory_layout(et_tracker):
    s = et_tracker.spec
    assert s.mem_tokens == 96 and s.mem_frame_shape == (96, 16)
    ins, outs = s.io()["memory_attention"][0], s.io()["memory_encoder"][1]
    assert dict((t.name, t.shape) for t in ins)["memory"] == (1, 8, 96, 16)
    assert outs[0].shape == (1, 96, 16)


def test_stream_manifest_references_the_fixture_checkpoint():
    import json

    from sam2_edge.contract import sha256_file

    w = json.loads((STREAM / "manifest.json").read_text())["weights"]
    assert (STREAM / w["checkpoint_file"]).resolve() == CKPT.resolve()
    assert sha256_file(CKPT) == w["checkpoint_sha256"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_micro_stream(et_tracker, scenario):
    run = run_scenario(et_tracker, STREAM, f"stream_{scenario}")
    compare(run, STREAM, f"stream_{scenario}", MICRO_TOL_EARLY, MICRO_TOL_LATE, 1e-3)


def test_micro_refine_replaces_tracked_output(et_tracker):
    """The correction's output replaces the tracked one (and differs from it)."""
    g = load_golden(STREAM / "video_stream_refine.npz")
    t, oid = int(g["refine_frame"][0]), int(g["refine_obj_id"][0])
    run = run_scenario(et_tracker, STREAM, "stream_refine")
    before = g[f"obj{oid}/pre_refine_lowres_logits"].astype(np.float32)
    frames, low = golden_lowres(STREAM, "stream_refine", oid)
    after = low[list(frames).index(t)]
    assert np.abs(after - before).max() > 1.0
    np.testing.assert_allclose(run.low[(t, oid)], after, rtol=1e-3, atol=1e-3)


def test_micro_perceiver_memories_match_golden(et_tracker):
    """memory_encoder stage (memory encoder + spatial perceiver) from the golden outputs of
    stream_long, bf16-rounded as the tracker stores them, against the official memories."""
    from sam2_edge.runtimes import preprocess

    be = et_tracker.backend
    g = load_golden(STREAM / "video_stream_long.npz")
    inputs = load_golden(STREAM / "video_stream_init.npz")["model_input_uint8"]
    s = et_tracker.spec
    image = np.zeros((1, 3, s.image_size, s.image_size), np.float32)
    worst = 0.0
    for t in (0, 1, 2, 7, 16, 23):
        preprocess.normalize_video(inputs[t], out=image)
        _, _, feats, _ = be.run("image_encoder", (image,))
        for j, oid in enumerate(g["obj_ids"]):
            low = g[f"obj{oid}/lowres_logits"][t].astype(np.float32)[None, None]
            score = np.array([[g["object_score_logits"][t, j]]], np.float32)
            binarize = np.array([int(g["is_cond_frame"][t, j])], np.int32)
            (mem,) = be.run("memory_encoder", (feats, low, score, binarize))
            ref = g[f"obj{oid}/maskmem_features"][t]
            got = round_bf16(mem[0])
            assert got.shape == ref.shape == (96, 16)
            # a value near a bf16 rounding boundary may land one bf16 step (2^-8 relative) away
            d = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-2)
            worst = max(worst, float(np.abs(got - ref).max()))
            assert (d <= 2 ** -7).all(), (t, oid, float(d.max()))
            assert (got == ref).mean() > 0.97, (t, oid, float((got == ref).mean()))
    print(f"perceiver memories: worst |d| {worst:.3e} (bf16)")


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_full_stream(scenario):
    folder = SHARED / "edgetam_stream"
    ckpt = SHARED / "edgetam" / "edgetam_seed5.fp16.pt"
    if not (folder.is_dir() and ckpt.is_file()):
        pytest.skip(f"{folder} not present (full-size goldens live in ../shared/reference)")
    tracker = Tracker.from_checkpoint(str(ckpt))
    run = run_scenario(tracker, folder, f"stream_{scenario}")
    compare(run, folder, f"stream_{scenario}", TINY_TOL_EARLY, TINY_TOL_LATE, 5e-2)
