"""ExecuTorch export (XNNPACK delegate) of the four tracker stages.

Micro checkpoint (CI): each stage exported once per module; the share of compute delegated
to XNNPACK; the programs' I/O against `TrackerSpec.io()`; per-stage parity of the `.pte`
programs run by `ExecuTorchBackend` against the eager torch stages on identical, realistic
inputs (a real frame's features, click / box / mask prompts padded as the tracker pads
them, memory slots from the memory encoder with partial validity and pointer distances);
fp16 on the memory encoder. `-m slow`: fp16 for every micro stage, and the full-size tiny
checkpoint (export time per stage, file sizes, delegation, parity).

`stage_cases` is shared with tests/test_export_coreml.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FIXTURES, REPO_ROOT, check_close, optional_tiny_ckpt  # noqa: E402
from sam2_edge.contract import (LABEL_ABSENT, LABEL_BOX_BR, LABEL_BOX_TL, LABEL_NEG,  # noqa: E402
                                     LABEL_NOT_A_POINT, LABEL_POS, MASK_FULL_BINARY, MASK_LOWRES_LOGITS,
                                     MASK_NONE, STAGES)

FRAME = FIXTURES / "micro_stream" / "frames" / "00000.jpg"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

# fp32: XNNPACK vs eager torch reorder float sums (GEMM blocking, softmax, mean); observed
# worst |d| ~1.5e-5 on values up to ~17 (micro). fp16 (compute in float16, I/O float32): ~1%.
FP32_TOL = dict(atol=5e-5, rtol=5e-5)
FP16_TOL = dict(atol=0.2, rtol=0.03)

Case = Tuple[str, Tuple[np.ndarray, ...]]


# --------------------------------------------------------------------------- inputs
def _image(size: int, frame: Path = FRAME) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(frame), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(2, 0, 1)[None])


def _points(spec, coords, labels) -> Tuple[np.ndarray, np.ndarray]:
    """As the tracker pads them: clicks / box corners, one NOT_A_POINT, then ABSENT."""
    n = spec.prompt_points
    pc = np.zeros((1, n, 2), np.float32)
    pl = np.full((1, n), LABEL_ABSENT, np.int32)
    k = len(labels)
    if k == 0:
        pl[0, 0] = LABEL_NOT_A_POINT
        k = 1
    else:
        pc[0, :k] = np.asarray(coords, np.float32)
        pl[0, :k] = labels
    pl[0, k] = LABEL_NOT_A_POINT
    return pc, pl


def stage_cases(model) -> Tuple[object, Dict[str, torch.nn.Module], Dict[str, List[Case]]]:
    """(spec, eager stage modules, realistic input cases per stage; the first case of each
    stage doubles as the export example). Everything downstream of the image encoder is
    computed by the eager stages from a real frame."""
    from sam2_edge.stages import build_stages, tracker_spec

    spec = tracker_spec(model)
    stages = dict(zip(STAGES, build_stages(model)))
    S, lo, f = spec.image_size, spec.lowres, spec.feat_size

    def run(stage, args):
        with torch.inference_mode():
            out = stages[stage](*[torch.from_numpy(np.ascontiguousarray(a)) for a in args])
        out = out if isinstance(out, tuple) else (out,)
        return tuple(o.numpy().copy() for o in out)

    def i32(v):
        return np.array([v], np.int32)

    def f32(v):
        return np.array([v], np.float32)

    zeros_low = np.zeros((1, 1, lo, lo), np.float32)
    zeros_full = np.zeros((1, 1, S, S), np.float32)
    cases: Dict[str, List[Case]] = {s: [] for s in STAGES}

    img = _image(S)
    cases["image_encoder"].append(("frame0", (img,)))
    s0, s1, feats, pos = run("image_encoder", (img,))

    # conditioning frame: one positive click (no memory -> add no_mem_embed), multimask
    pc, pl = _points(spec, [[0.45 * S, 0.55 * S]], [LABEL_POS])
    click = (feats, s0, s1, pc, pl, zeros_low, zeros_full, i32(MASK_NONE), i32(1), f32(1.0), i32(1))
    cases["mask_decoder"].append(("click_multimask", click))
    low, _, ptr, score = run("mask_decoder", click)

    # memory of that frame (prompted: binarised), and of a tracked frame (sigmoid)
    cases["memory_encoder"].append(("prompted_binarize", (feats, low, score, i32(1))))
    (mem0,) = run("memory_encoder", (feats, low, score, i32(1)))
    cases["memory_encoder"].append(("tracked_sigmoid", (feats, low * 0.5, score, i32(0))))
    cases["memory_encoder"].append(("absent_object", (feats, low, -np.abs(score) - 1.0, i32(0))))
    (mem1,) = run("memory_encoder", (feats, low * 0.5, score, i32(0)))

    # memory attention, a ring as the tracker fills it on frame 3: conditioning frame 0 in slot
    # 0 (tpos index num_maskmem - 1), recent frames 1, 2 (tpos d - 1), other slots invalid;
    # pointers of frames 0 (distance 3), 1, 2
    M, P, kc = spec.mem_slots, spec.ptr_slots, spec.cond_slots
    memory = np.zeros((1, M, spec.mem_dim, f, f), np.float32)
    tpos = np.zeros((1, M), np.int32)
    valid = np.zeros((1, M), np.float32)
    memory[0, 0], tpos[0, 0], valid[0, 0] = mem0[0], spec.num_maskmem - 1, 1
    for d, t in ((2, 1), (1, 2)):  # frame t at distance d = 3 - t
        slot = kc + t % spec.recent_slots
        memory[0, slot], tpos[0, slot], valid[0, slot] = mem1[0] * (0.8 + 0.1 * t), d - 1, 1
    ptrs = np.zeros((1, P, spec.d_model), np.float32)
    dist = np.zeros((1, P), np.float32)
    pvalid = np.zeros((1, P), np.float32)
    ptrs[0, 0], dist[0, 0], pvalid[0, 0] = ptr[0], 3, 1
    for t in (1, 2):
        slot = kc + t % spec.ptr_recent
        ptrs[0, slot], dist[0, slot], pvalid[0, slot] = ptr[0] * (1.0 - 0.1 * t), 3 - t, 1
    partial = (feats, pos, memory, tpos, valid, ptrs, dist, pvalid)
    cases["memory_attention"].append(("ring_partial", partial))
    # a full ring: every slot valid, all temporal indices and pointer distances in use
    full_mem = memory.copy()
    full_tpos = tpos.copy()
    for j in range(M):
        if valid[0, j] == 0:
            full_mem[0, j] = mem1[0] * (0.5 + 0.05 * j)
            full_tpos[0, j] = (j - kc) % spec.recent_slots if j >= kc else spec.num_maskmem - 1
    full_ptrs = ptrs.copy()
    full_dist = np.where(pvalid > 0, dist, np.arange(P, dtype=np.float32)[None] % spec.ptr_recent + 1)
    for j in range(P):
        if pvalid[0, j] == 0:
            full_ptrs[0, j] = ptr[0] * (0.5 + 0.02 * j)
    cases["memory_attention"].append(("ring_full", (feats, pos, full_mem, full_tpos, np.ones((1, M), np.float32),
                                                    full_ptrs, full_dist.astype(np.float32),
                                                    np.ones((1, P), np.float32))))
    (pix,) = run("memory_attention", partial)

    # tracked frame: memory-conditioned features, no prompt
    pc0, pl0 = _points(spec, [], [])
    cases["mask_decoder"].append(("track", (pix, s0, s1, pc0, pl0, zeros_low, zeros_full, i32(MASK_NONE), i32(1),
                                            f32(1.0), i32(0))))
    # correction on a tracked frame: box + negative click, previous logits as dense prompt, single
    pc2, pl2 = _points(spec, [[0.3 * S, 0.35 * S], [0.7 * S, 0.8 * S], [0.5 * S, 0.6 * S]],
                       [LABEL_BOX_TL, LABEL_BOX_BR, LABEL_NEG])
    cases["mask_decoder"].append(("box_negclick_lowres_single",
                                  (pix, s0, s1, pc2, pl2, np.clip(low, -32, 32), zeros_full, i32(MASK_LOWRES_LOGITS),
                                   i32(0), f32(1.0), i32(0))))
    # mask prompt: binary full-resolution mask through mask_downsample, gated pointer
    full = np.kron((low > 0).astype(np.float32), np.ones((1, 1, 4, 4), np.float32))
    cases["mask_decoder"].append(("mask_prompt", (feats, s0, s1, pc0, pl0, zeros_low, full, i32(MASK_FULL_BINARY),
                                                  i32(0), f32(1.0), i32(0))))
    return spec, stages, cases


def eager(stages, stage: str, args) -> Tuple[np.ndarray, ...]:
    with torch.inference_mode():
        out = stages[stage](*[torch.from_numpy(np.ascontiguousarray(a)) for a in args])
    out = out if isinstance(out, tuple) else (out,)
    return tuple(o.numpy() for o in out)


def export_all(spec, stages, cases, out_dir: Path, precision: str, which=STAGES) -> Dict[str, dict]:
    from sam2_edge.export.executorch_export import export_stage

    io = spec.io()
    infos = {}
    for stage in which:
        ins, outs = io[stage]
        example = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in cases[stage][0][1])
        infos[stage] = export_stage(stages[stage], example, [t.name for t in ins], [t.name for t in outs],
                                    out_dir / f"{stage}.pte", precision)
    return infos


def _print_delegation(title: str, infos: Dict[str, dict]) -> None:
    print(f"\n[executorch] {title}")
    for stage, i in infos.items():
        print(f"  {stage:17s} delegated {i['delegated_share']:.1%} of compute ops ({i['delegated_compute_ops']} / "
              f"{i['delegated_compute_ops'] + i['portable_compute_ops']}), heavy {i['heavy_delegated_share']:.0%}, "
              f"all ops {i['delegated_share_all_ops']:.1%}, {i['delegates']} delegate(s); portable: "
              f"{i['portable_op_kinds']}; {i['bytes'] / 1e6:.2f} MB, export {i['export_seconds']:.1f} s "
              f"({i['export_cpu_seconds']:.1f} s CPU)")


def _check_parity(backend, stages, cases, tol, group: str, which=STAGES) -> None:
    io = backend.spec.io()
    for stage in which:
        for name, args in cases[stage]:
            got = backend.run(stage, args)
            ref = eager(stages, stage, args)
            assert len(got) == len(ref) == len(io[stage][1])
            for t, g, r in zip(io[stage][1], got, ref):
                assert g.dtype == np.float32 and g.shape == t.shape, (stage, t.name, g.dtype, g.shape)
                check_close(f"{stage}/{name}/{t.name}", g, r, group=group, **tol)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def micro_cases(micro_model):
    model, _ = micro_model
    return stage_cases(model)


@pytest.fixture(scope="module")
def et_micro(micro_cases, tmp_path_factory):
    """The four micro stages exported (fp32; the session's shared micro .pte bundle, exported once
    for every module that needs it: its manifest holds each stage's export info) and loaded in
    the ExecuTorch backend."""
    pytest.importorskip("executorch")
    from bundle_helpers import micro_pte_bundle

    from sam2_edge.contract import load_manifest
    from sam2_edge.runtimes.backends.executorch_backend import ExecuTorchBackend

    m = load_manifest(micro_pte_bundle(tmp_path_factory))
    spec = replace(m.spec, obj_batches=(1,))  # the four stages' programs (the batched ones: test_executorch_tracking)
    files = {s: m.stage_files[s] for s in STAGES}
    infos = {s: dict(m.graphs[s].extra) for s in STAGES}
    _print_delegation("micro fp32", infos)
    return spec, infos, files, ExecuTorchBackend(spec, files)


# --------------------------------------------------------------------------- tests
def test_delegated_share(et_micro):
    _, infos, _, _ = et_micro
    for stage, i in infos.items():
        assert i["delegate"] == "XnnpackBackend"
        # every convolution / linear / matmul runs in XNNPACK
        assert i["heavy_delegated_share"] == 1.0, (stage, i["portable_op_kinds"])
        assert 0 < i["delegated_share"] <= 1
    # the image encoder is one delegate; the rest leaves only flag / label logic, casts and
    # gathers on tiny tensors to the portable kernels
    assert infos["image_encoder"]["delegates"] == 1 and infos["image_encoder"]["portable_ops"] == 0
    assert infos["memory_attention"]["delegated_share"] >= 0.95
    assert infos["memory_encoder"]["delegated_share"] >= 0.9
    assert infos["mask_decoder"]["delegated_share"] >= 0.8


def test_export_info(et_micro):
    spec, infos, files, _ = et_micro
    io = spec.io()
    for stage, i in infos.items():
        assert files[stage].is_file() and i["bytes"] == files[stage].stat().st_size
        assert i["format"] == "executorch" and i["precision"] == "fp32" and i["compute_dtype"] == "float32"
        assert i["inputs"] == [t.name for t in io[stage][0]] and i["outputs"] == [t.name for t in io[stage][1]]
        json.dumps(i)  # goes into the manifest


def test_program_io_matches_spec(et_micro):
    """Input/output count, shapes and dtypes of each .pte program (the backend checks them)."""
    from executorch.runtime import Runtime

    spec, _, files, _ = et_micro
    codes = {"float32": 6, "int32": 3}
    for stage, (ins, outs) in spec.io().items():
        meta = Runtime.get().load_program(files[stage]).metadata("forward")
        assert meta.num_inputs() == len(ins) and meta.num_outputs() == len(outs)
        for i, t in enumerate(ins):
            assert tuple(meta.input_tensor_meta(i).sizes()) == t.shape and meta.input_tensor_meta(i).dtype() == codes[t.dtype]
        for i, t in enumerate(outs):
            assert tuple(meta.output_tensor_meta(i).sizes()) == t.shape and meta.output_tensor_meta(i).dtype() == 6


@pytest.mark.parametrize("stage", STAGES)
def test_parity_fp32(et_micro, micro_cases, stage):
    _, stages, cases = micro_cases
    _check_parity(et_micro[3], stages, cases, FP32_TOL, "et32", which=(stage,))


def test_backend_is_repeatable_and_checks_inputs(et_micro, micro_cases):
    from sam2_edge.errors import InputError

    _, _, cases = micro_cases
    be = et_micro[3]
    args = cases["memory_encoder"][0][1]
    a = be.run("memory_encoder", args)[0]
    be.run("memory_attention", cases["memory_attention"][0][1])  # another program in between
    b = be.run("memory_encoder", tuple(np.array(x) for x in args))[0]
    np.testing.assert_array_equal(a, b)  # outputs are copies, runs are deterministic
    with pytest.raises(InputError, match="shape"):
        be.run("memory_encoder", (args[0][:, :8],) + args[1:])
    with pytest.raises(InputError, match="inputs"):
        be.run("memory_encoder", args[:2])
    # int64 / float64 arrays are accepted and cast to the spec dtypes
    c = be.run("memory_encoder", (args[0].astype(np.float64),) + args[1:3] + (args[3].astype(np.int64),))[0]
    np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-6)


def test_backend_rejects_bad_bundles(et_micro, tmp_path):
    from sam2_edge.errors import BundleError, InputError
    from sam2_edge.runtimes.backends.executorch_backend import ExecuTorchBackend

    spec, _, files, _ = et_micro
    with pytest.raises(BundleError, match="memory_encoder"):
        ExecuTorchBackend(spec, {s: p for s, p in files.items() if s != "memory_encoder"})
    swapped = dict(files, memory_encoder=files["memory_attention"])
    with pytest.raises(BundleError, match="inputs"):
        ExecuTorchBackend(spec, swapped)
    junk = tmp_path / "junk.pte"
    junk.write_bytes(b"not a program" * 10)
    with pytest.raises(BundleError, match="cannot load"):
        ExecuTorchBackend(spec, dict(files, image_encoder=junk))
    with pytest.raises(InputError, match="threads"):
        ExecuTorchBackend(spec, files, threads=-1)
    assert "XNNPACK" in ExecuTorchBackend(spec, files, threads=2).describe()


def test_fp16_memory_encoder(et_micro, micro_cases, micro_model, tmp_path):
    """fp16: float16 weights and compute inside the graph, float32 I/O; the model is untouched."""
    from sam2_edge.runtimes.backends.executorch_backend import ExecuTorchBackend

    spec, stages, cases = micro_cases
    info = export_all(spec, stages, cases, tmp_path, "fp16", which=("memory_encoder",))["memory_encoder"]
    _print_delegation("micro fp16", {"memory_encoder": info})
    assert info["precision"] == "fp16" and info["compute_dtype"] == "float16"
    assert info["heavy_delegated_share"] == 1.0
    assert all(p.dtype == torch.float32 for p in micro_model[0].parameters())
    files = dict(et_micro[2], memory_encoder=tmp_path / "memory_encoder.pte")  # fp32 for the other stages
    _check_parity(ExecuTorchBackend(spec, files), stages, cases, FP16_TOL, "et16", which=("memory_encoder",))


def test_rejects_unknown_precision(micro_cases, tmp_path):
    from sam2_edge.export.executorch_export import export_stage

    pytest.importorskip("executorch")
    _, stages, cases = micro_cases
    ex = tuple(torch.from_numpy(a) for a in cases["memory_encoder"][0][1])
    with pytest.raises(ValueError, match="precision"):
        export_stage(stages["memory_encoder"], ex, ["vision_feats", "low_res", "obj_score", "binarize"], ["maskmem"],
                     tmp_path / "x.pte", "int8")


def test_backend_module_imports_no_torch():
    """The runtime side must install without torch: importing the backend modules (and the
    CoreML backend refusing to start off macOS) loads no torch. ExecuTorch's own Python
    runtime does import torch when the backend is constructed (see executorch_backend)."""
    code = ("import sys\n"
            "import sam2_edge.runtimes.backends.executorch_backend as e, sam2_edge.runtimes.backends.coreml_backend as c\n"
            "from sam2_edge.contract import TrackerSpec\n"
            "if sys.platform != 'darwin':\n"
            "    try:\n"
            "        c.CoreMLBackend(TrackerSpec(256, 64, 16), {})\n"
            "    except Exception as err:\n"
            "        assert type(err).__name__ == 'BackendUnavailableError', err\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=120)


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_fp16_all_stages_micro(micro_cases, tmp_path):
    pytest.importorskip("executorch")
    from sam2_edge.runtimes.backends.executorch_backend import ExecuTorchBackend

    spec, stages, cases = micro_cases
    infos = export_all(spec, stages, cases, tmp_path, "fp16")
    _print_delegation("micro fp16", infos)
    for i in infos.values():
        assert i["heavy_delegated_share"] == 1.0
    be = ExecuTorchBackend(spec, {s: tmp_path / f"{s}.pte" for s in STAGES})
    _check_parity(be, stages, cases, FP16_TOL, "et16")


@pytest.mark.slow
def test_tiny_export_executorch(tmp_path):
    """Full-size sam2.1-hiera-tiny: export time and size per stage, delegation, fp32 parity."""
    pytest.importorskip("executorch")
    ckpt = optional_tiny_ckpt()
    if ckpt is None:
        pytest.skip("tiny reference checkpoint absent (shared/reference/tiny)")
    from sam2_edge.checkpoint import load_checkpoint
    from sam2_edge.runtimes.backends.executorch_backend import ExecuTorchBackend

    model, _ = load_checkpoint(str(ckpt))
    spec, stages, cases = stage_cases(model)
    t0 = time.perf_counter()
    infos = export_all(spec, stages, cases, tmp_path, "fp32")
    _print_delegation(f"tiny fp32 (all stages {time.perf_counter() - t0:.0f} s)", infos)
    total = sum(i["bytes"] for i in infos.values())
    print(f"  total {total / 1e6:.1f} MB")
    for i in infos.values():
        assert i["heavy_delegated_share"] == 1.0
    be = ExecuTorchBackend(spec, {s: tmp_path / f"{s}.pte" for s in STAGES})
    _check_parity(be, stages, cases, dict(atol=1e-3, rtol=1e-3), "et32T")
