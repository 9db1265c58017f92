"""Full-size EdgeTAM bundles (S=1024) against the OFFICIAL EdgeTAM streaming goldens (`-m slow`).

The CI twin is tests/test_edgetam_export.py (`edgetam_micro`, S=256). Here the official-format
checkpoint of `../shared/reference/edgetam` (the one `edgetam_stream/manifest.json` names, its
sha256 checked) is exported once per module to an ONNX bundle and once to an ExecuTorch (XNNPACK)
bundle in a temporary folder, and every streaming scenario of `../shared/reference/edgetam_stream`
(two objects from frame 0, a late object, a correction after tracking, a click on an untracked
frame, mask prompts incl. an empty one, ring overflow; K = 10 / 18 frames) is run through
`Tracker.from_bundle` with `stream_golden.run_scenario`, as the micro tests do.

Tolerances, on every frame and object (every number is printed with `-s`):
* low-res logits |bundle - golden| <= tol * max(1, |golden|) + half an fp16 ulp of the golden.
  The micro goldens are fp32; the full-size ones store the logits in fp16, which alone puts up to
  2^-11 ~ 4.9e-4 of max(1, |x|) between the official fp32 result and the golden: the allowance
  for it is the one tests/test_export_onnx.py::test_tiny_tracking_matches_goldens uses for the
  fp16 tiny goldens.
  - ONNX: tol = the micro bundle tests' (imported from tests/test_edgetam_export.py), 1e-3 on an
    object's first 3 frames, 3e-3 later. Measured 2026-11-30 (x86, onnxruntime 1.32): worst
    8.4e-4 except the late object's prompt frame, 1.01e-3 (so it needs the fp16 allowance).
  - ExecuTorch (XNNPACK): tol = the repository's documented full-size tolerance for fp16 goldens
    (tests/test_tracker_parity.py TINY_TOL_EARLY / TINY_TOL_LATE, 1e-2 / 5e-2, which the torch
    slow test tests/test_edgetam_tracker.py::test_full_stream uses). The micro bar does NOT hold:
    measured worst 3.99e-3 (stream_init obj 2, frame 0, box) and 4.07e-3 (stream_click_untracked
    obj 1, frame 4, the click on an untracked frame), i.e. only on prompt (conditioning) frames;
    tracked frames stay <= 1.09e-3 and masks >= 99.992 % equal. Cause, measured stage by stage
    against the torch stages on identical inputs: XNNPACK's fp32 RepViT + FPN level-2 features
    (`vision_feats`) differ from torch's by up to 1.4e-3 (|x| <= 35) at 1024 px, and a prompt
    frame decodes straight from them (no memory attention); the decoder itself differs by
    <= 1.1e-4 (8.5e-5 relative), the memory stages by <= 2e-5.
* object-score logits (fp32 goldens) |d| <= 1e-3 (both formats; measured <= 4.7e-5);
* video-resolution masks >= 99.5 % equal pixels; an object present exactly where the official
  predictor yields it (as tests/test_tracker_parity.py: `compare`).
Each ONNX graph's own check at export (`max_abs_diff_vs_torch`) is held to the micro test's 1e-3.

The image-predictor goldens (`edgetam/image_truck.npz`) are not checked here: the micro bundle
tests check only the streaming boundaries (the bundle runs the tracker, whose pre-processing is
the video predictor's; the image path of the full-size model is tests/test_edgetam_image.py).

Skips (with the reason) when `../shared/reference/edgetam*` is absent, and the ExecuTorch tests
when executorch is not installed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import fp16_half_ulp
from stream_golden import golden_lowres, load_golden, run_scenario
from test_edgetam_export import MIN_MASK_AGREEMENT, SCENARIOS, TOL_EARLY, TOL_LATE

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
STREAM = SHARED / "edgetam_stream"
SCORE_ATOL = 1e-3  # as the micro bundle tests (test_edgetam_export._compare)
GRAPH_VS_TORCH_MAX = 1e-3  # as test_edgetam_export.test_onnx_bundle_manifest

WORST: dict = {}  # (format, scenario) -> worst numbers, printed at the end of the module


def _checkpoint() -> Path:
    """The checkpoint the full-size stream goldens were made with (skip when it is absent)."""
    man = STREAM / "manifest.json"
    if not man.is_file():
        pytest.skip(f"{STREAM} not present (full-size EdgeTAM goldens live in ../shared/reference)")
    w = json.loads(man.read_text())["weights"]
    ckpt = (STREAM / w["checkpoint_file"]).resolve()
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} not present (named by {man})")
    from sam2_edge.contract import sha256_file

    assert sha256_file(str(ckpt)) == w["checkpoint_sha256"], f"{ckpt} is not the checkpoint of {man}"
    return ckpt


def _export(tmp_path_factory, fmt: str) -> Path:
    from sam2_edge.export import export_bundle

    ckpt = _checkpoint()
    out = tmp_path_factory.mktemp("edgetam-full") / f"edgetam-1024-{fmt}"
    t0 = time.perf_counter()
    export_bundle(str(ckpt), str(out), format=fmt, show_progress=False)
    raw = json.loads((out / "manifest.json").read_text())
    sizes = {s: g["bytes"] for s, g in raw["graphs"].items()}
    print(f"\n[{fmt}] edgetam@1024 export: {time.perf_counter() - t0:.0f} s, bundle {sum(sizes.values()) / 2**20:.1f} "
          "MiB (" + ", ".join(f"{s} {b / 2**20:.1f}" for s, b in sizes.items()) + ")")
    return out


def _measure(run, scenario: str, tol_early: float, tol_late: float):
    """(worst numbers, violations) of a run against the goldens; every frame and object."""
    g = load_golden(STREAM / f"video_{scenario}.npz")
    w = {"early": 0.0, "late": 0.0, "early_x_tol": 0.0, "late_x_tol": 0.0, "score": 0.0, "agree": 1.0}
    bad = []
    for j, oid in enumerate(int(o) for o in g["obj_ids"]):
        frames, low = golden_lowres(STREAM, scenario, oid)
        for i, t in enumerate(int(t) for t in frames):
            if (t, oid) not in run.low:
                bad.append(f"object {oid} missing on frame {t}")
                continue
            key = "early" if t - int(frames[0]) < 3 else "late"
            d = np.abs(run.low[(t, oid)].astype(np.float64) - low[i])
            scale = np.maximum(1.0, np.abs(low[i]))
            allowed = (tol_early if key == "early" else tol_late) * scale + fp16_half_ulp(low[i])
            rel, x_tol = float((d / scale).max()), float((d / allowed).max())
            w[key], w[key + "_x_tol"] = max(w[key], rel), max(w[key + "_x_tol"], x_tol)
            if x_tol > 1.0:
                bad.append(f"object {oid} frame {t}: low-res logits {x_tol:.2f} x the allowed difference "
                           f"(rel {rel:.2e})")
            ds = abs(run.score[(t, oid)] - float(g["object_score_logits"][t, j]))
            w["score"] = max(w["score"], ds)
            if ds > SCORE_ATOL:
                bad.append(f"object {oid} frame {t}: object score differs by {ds:.2e}")
            agree = float((run.mask[(t, oid)] == g["videores_mask"][t, j]).mean())
            w["agree"] = min(w["agree"], agree)
            if agree < MIN_MASK_AGREEMENT:
                bad.append(f"object {oid} frame {t}: {agree:.5f} of the mask pixels equal the golden")
        mine = sorted(t for (t, o) in run.low if o == oid)
        if mine != [int(t) for t in np.flatnonzero(g["obj_present"][:, j])]:
            bad.append(f"object {oid} yielded on frames {mine}, officially on {np.flatnonzero(g['obj_present'][:, j])}")
    return w, bad


def _check(tracker, fmt: str, scenario: str, tol_early: float, tol_late: float) -> None:
    t0 = time.perf_counter()
    run = run_scenario(tracker, STREAM, f"stream_{scenario}")
    seconds = time.perf_counter() - t0
    w, bad = _measure(run, f"stream_{scenario}", tol_early, tol_late)
    WORST[(fmt, scenario)] = w
    print(f"\n[{fmt}] edgetam@1024 stream_{scenario} ({seconds:.0f} s): worst |d| / max(1, |golden|) first 3 frames "
          f"{w['early']:.2e} ({w['early_x_tol']:.2f} x allowed, tol {tol_early:g} + fp16 half ulp), later "
          f"{w['late']:.2e} ({w['late_x_tol']:.2f} x allowed, tol {tol_late:g} + fp16 half ulp); worst score diff "
          f"{w['score']:.2e} (tol {SCORE_ATOL:g}); min mask agreement {w['agree']:.5f} (>= {MIN_MASK_AGREEMENT})")
    assert not bad, f"{fmt} stream_{scenario}: " + "; ".join(bad[:10])


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if WORST:
        print("\nedgetam@1024 bundles vs official streaming goldens (worst per scenario):")
        for (fmt, sc), w in WORST.items():
            print(f"  {fmt:10s} {sc:16s} early {w['early']:.2e} ({w['early_x_tol']:.2f} x allowed) late "
                  f"{w['late']:.2e} ({w['late_x_tol']:.2f} x allowed) score {w['score']:.2e} "
                  f"mask agreement {w['agree']:.5f}")


# ---------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    return _export(tmp_path_factory, "onnx")


@pytest.fixture(scope="module")
def onnx_tracker(onnx_bundle):
    from sam2_edge.runtimes import Tracker

    return Tracker.from_bundle(str(onnx_bundle))


@pytest.mark.slow
def test_onnx_bundle_manifest(onnx_bundle):
    from sam2_edge.contract import load_manifest

    m = load_manifest(str(onnx_bundle))
    raw = json.loads((onnx_bundle / "manifest.json").read_text())
    assert m.variant == "edgetam" and m.format == "onnx"
    assert m.spec.image_size == 1024 and m.spec.mem_tokens == 512 and m.spec.mem_dim == 64
    assert raw["model_config"]["trunk"] == "repvit"
    for stage, g in raw["graphs"].items():
        worst = max(g["extra"]["max_abs_diff_vs_torch"].values())
        print(f"{stage}: {g['bytes']:,} bytes, {g['extra'].get('nodes')} nodes, max |onnxruntime - torch| {worst:.2e}")
        assert worst < GRAPH_VS_TORCH_MAX, (stage, worst)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_onnx_tracking_matches_goldens(onnx_tracker, scenario):
    _check(onnx_tracker, "onnx", scenario, TOL_EARLY, TOL_LATE)


# ---------------------------------------------------------------- ExecuTorch (XNNPACK)
@pytest.fixture(scope="module")
def executorch_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("executorch", reason="executorch is not installed (pip install 'sam2-edge[executorch]')")
    return _export(tmp_path_factory, "executorch")


@pytest.fixture(scope="module")
def executorch_tracker(executorch_bundle):
    from sam2_edge.runtimes import Tracker

    return Tracker.from_bundle(str(executorch_bundle))


@pytest.mark.slow
def test_executorch_bundle_manifest(executorch_bundle):
    from sam2_edge.contract import load_manifest

    m = load_manifest(str(executorch_bundle))
    assert m.variant == "edgetam" and m.format == "executorch"
    assert m.spec.image_size == 1024 and m.spec.mem_tokens == 512 and m.spec.mem_dim == 64


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_executorch_tracking_matches_goldens(executorch_tracker, scenario):
    from test_tracker_parity import TINY_TOL_EARLY, TINY_TOL_LATE

    _check(executorch_tracker, "executorch", scenario, TINY_TOL_EARLY, TINY_TOL_LATE)
