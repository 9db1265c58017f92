"""CUDA reference parity (marker `cuda`): the torch reference on CUDA against the ONNX Runtime
and ExecuTorch bundles on CPU, per stage and end to end. Skipped without CUDA (CI has none);
run on a GPU machine with `python -m pytest -m cuda -s`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")]

from stream_golden import golden_lowres, load_golden, run_scenario  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
CKPT = FIX / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
# CUDA kernels (TF32 off) vs CPU kernels: fp32 rounding differences only
STAGE_ATOL, STAGE_RTOL = 1e-3, 1e-3
MIN_MASK_AGREEMENT = 0.995


@pytest.fixture(scope="module")
def cuda_backend():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from sam2_edge.runtimes.backends.torch_backend import TorchBackend
    return TorchBackend.from_checkpoint(str(CKPT), device="cuda")


@pytest.fixture(scope="module", params=["onnx", "executorch"])
def bundle(request, tmp_path_factory):
    fmt = request.param
    if fmt == "executorch":
        pytest.importorskip("executorch")
    from sam2_edge.export import export_bundle
    return export_bundle(str(CKPT), str(tmp_path_factory.mktemp(fmt)), format=fmt)


def test_stages_cuda_vs_bundle_cpu(cuda_backend, bundle):
    from sam2_edge.export.bundle import example_inputs
    from sam2_edge.runtimes.bundle_backends import open_bundle
    from sam2_edge.contract import STAGES

    cpu = open_bundle(str(bundle))
    for stage in STAGES:
        for seed in range(3):
            ins = example_inputs(cpu.spec, stage, seed)
            ref = cuda_backend.run(stage, ins)
            got = cpu.run(stage, ins)
            for r, g in zip(ref, got):
                d = np.abs(r - g)
                print(f"{bundle.name} {stage} seed {seed}: max abs {d.max():.2e}, "
                      f"max rel {(d / np.maximum(np.abs(r), 1.0)).max():.2e}")
                np.testing.assert_allclose(g, r, atol=STAGE_ATOL, rtol=STAGE_RTOL)


@pytest.mark.parametrize("scenario", ["init", "refine", "mask"])
def test_tracking_cuda_vs_bundle_cpu(cuda_backend, bundle, scenario):
    from sam2_edge.runtimes import Tracker

    folder = FIX / "micro_stream"
    ref = run_scenario(Tracker(cuda_backend), folder, f"stream_{scenario}")
    got = run_scenario(Tracker.from_bundle(str(bundle)), folder, f"stream_{scenario}")
    g = load_golden(folder / f"video_stream_{scenario}.npz")
    worst = 1.0
    for key, mask in ref.mask.items():
        worst = min(worst, float((got.mask[key] == mask).mean()))
        t, oid = key
        j = list(g["obj_ids"]).index(oid)
        assert (mask == g["videores_mask"][t, j]).mean() >= MIN_MASK_AGREEMENT
    for oid in g["obj_ids"]:
        frames, low = golden_lowres(folder, f"stream_{scenario}", int(oid))
        for i, t in enumerate(frames):
            rel = np.abs(ref.low[(int(t), int(oid))] - low[i]) / np.maximum(1.0, np.abs(low[i]))
            assert rel.max() <= 3e-3
    print(f"{bundle.name} {scenario}: min mask agreement CUDA torch vs CPU bundle {worst:.5f}")
    assert worst >= MIN_MASK_AGREEMENT
