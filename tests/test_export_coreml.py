"""CoreML export (ML program, iOS 17) of the four tracker stages.

CoreML models only run on macOS, so everywhere the tests check the converted program
itself, from the saved `.mlpackage`: input/output names, shapes and dtypes against
`TrackerSpec.io()` (int32 for the integer inputs), the deployment target (specification
version 8, opset CoreML7), every MIL op defined for iOS 17 in coremltools' registry, no
control flow and no 64-bit tensors, and the compute precision. The numerical tests (CoreML
vs eager torch on the same realistic inputs as the ExecuTorch tests) are marked `macos`
and skip elsewhere. `-m slow`: the full-size tiny checkpoint (export time, sizes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")

from conftest import check_close, optional_tiny_ckpt  # noqa: E402
from sam2_edge.contract import STAGES  # noqa: E402
from test_export_executorch import eager, stage_cases  # noqa: E402  (realistic inputs, shared)

ON_MACOS = sys.platform == "darwin"
macos_only = pytest.mark.skipif(not ON_MACOS, reason="CoreML models run only on macOS (Apple's runtime)")

CONTROL_FLOW = {"cond", "while_loop"}
# fp16 compute: weights and activations in float16 -> ~1e-2 relative, like ExecuTorch fp16;
# the inputs/outputs stay float32.
FP16_TOL = dict(atol=0.2, rtol=0.03)
FP32_TOL = dict(atol=1e-3, rtol=1e-3)


def export_all(spec, stages, cases, out_dir: Path, precision: str, which=STAGES) -> Dict[str, dict]:
    from sam2_edge.export.coreml_export import export_stage

    io = spec.io()
    infos = {}
    for stage in which:
        ins, outs = io[stage]
        example = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in cases[stage][0][1])
        infos[stage] = export_stage(stages[stage], example, [t.name for t in ins], [t.name for t in outs],
                                    out_dir / f"{stage}.mlpackage", precision)
    return infos


@pytest.fixture(scope="module")
def micro_cases(micro_model):
    model, _ = micro_model
    return stage_cases(model)


@pytest.fixture(scope="module")
def coreml_micro(micro_cases, tmp_path_factory):
    """The four micro stages converted once with the default fp16 compute precision."""
    spec, stages, cases = micro_cases
    out = tmp_path_factory.mktemp("coreml_micro")
    infos = export_all(spec, stages, cases, out, "fp16")
    for stage, i in infos.items():
        print(f"\n[coreml] micro fp16 {stage:17s} {i['mil_ops']} MIL ops, {i['bytes'] / 1e6:.2f} MB, "
              f"export {i['export_seconds']:.1f} s ({i['export_cpu_seconds']:.1f} s CPU)")
    return spec, infos, {s: out / f"{s}.mlpackage" for s in STAGES}


def _assert_program_is_valid(spec, path: Path, stage: str) -> dict:
    from sam2_edge.export.coreml_export import (OPSET, SPECIFICATION_VERSION, describe_io, program_ops,
                                                program_tensor_dtypes, unsupported_ops)

    assert path.is_dir() and (path / "Manifest.json").is_file()
    mspec = ct.utils.load_spec(str(path))
    model = ct.models.MLModel(str(path), skip_model_load=True)  # loads the package without the runtime
    assert model.get_spec().description.input[0].name == mspec.description.input[0].name
    assert mspec.WhichOneof("Type") == "mlProgram"
    assert mspec.specificationVersion == SPECIFICATION_VERSION  # iOS 17 / macOS 14
    assert mspec.mlProgram.functions["main"].opset == OPSET
    io = describe_io(mspec)
    ins, outs = spec.graph_io()[stage]
    assert io["inputs"] == [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in ins]
    assert io["outputs"] == [{"name": t.name, "shape": list(t.shape), "dtype": "float32"} for t in outs]
    ops = program_ops(mspec)
    assert unsupported_ops(mspec) == [], ops
    assert not CONTROL_FLOW & set(ops), ops
    dtypes = program_tensor_dtypes(mspec)
    assert not {"int64", "float64", "uint64"} & set(dtypes), dtypes
    return {"ops": ops, "dtypes": dtypes, "spec": mspec}


@pytest.mark.parametrize("stage", STAGES)
def test_program_fp16(coreml_micro, stage):
    spec, infos, files = coreml_micro
    p = _assert_program_is_valid(spec, files[stage], stage)
    assert p["dtypes"]["float16"] > p["dtypes"].get("float32", 0)  # fp16 compute
    # the count-based stability score stays float32 (float16 overflows at 65504)
    f = p["spec"].mlProgram.functions["main"]
    for op in f.block_specializations[f.opset].operations:
        if op.type == "reduce_sum":
            assert op.outputs[0].type.tensorType.dataType == 11, "reduce_sum must compute in float32"


def test_export_info(coreml_micro):
    spec, infos, files = coreml_micro
    io = spec.io()
    for stage, i in infos.items():
        assert i["format"] == "coreml" and i["convert_to"] == "mlprogram"
        assert i["deployment_target"] == "iOS17" and i["specification_version"] == 8 and i["opset"] == "CoreML7"
        assert i["precision"] == "fp16" and i["compute_precision"] == "float16"
        assert [x["name"] for x in i["inputs"]] == [t.name for t in io[stage][0]]
        assert [x["dtype"] for x in i["inputs"]] == [t.dtype for t in io[stage][0]]
        assert [x["name"] for x in i["outputs"]] == [t.name for t in io[stage][1]]
        assert i["bytes"] > 0 and i["mil_ops"] > 0


def test_program_fp32(micro_cases, tmp_path):
    spec, stages, cases = micro_cases
    info = export_all(spec, stages, cases, tmp_path, "fp32", which=("memory_encoder",))["memory_encoder"]
    assert info["compute_precision"] == "float32"
    p = _assert_program_is_valid(spec, tmp_path / "memory_encoder.mlpackage", "memory_encoder")
    assert "float16" not in p["dtypes"], p["dtypes"]


def test_rejects_bad_arguments(micro_cases, tmp_path):
    from sam2_edge.export.coreml_export import export_stage

    spec, stages, cases = micro_cases
    ex = tuple(torch.from_numpy(a) for a in cases["memory_encoder"][0][1])
    names = ([t.name for t in spec.io()["memory_encoder"][0]], ["maskmem"])
    with pytest.raises(ValueError, match="precision"):
        export_stage(stages["memory_encoder"], ex, *names, tmp_path / "m.mlpackage", "int8")
    with pytest.raises(ValueError, match="mlpackage"):
        export_stage(stages["memory_encoder"], ex, *names, tmp_path / "m.pte", "fp16")


@pytest.mark.skipif(ON_MACOS, reason="checks the refusal off macOS")
def test_backend_refuses_off_macos(coreml_micro):
    from sam2_edge.errors import BackendUnavailableError
    from sam2_edge.runtimes.backends.coreml_backend import CoreMLBackend

    spec, _, files = coreml_micro
    with pytest.raises(BackendUnavailableError, match="only on macOS"):
        CoreMLBackend(spec, files)


# --------------------------------------------------------------------------- macOS only
@pytest.mark.macos
@macos_only
@pytest.mark.parametrize("compute_units", ["CPU_ONLY", "ALL"])
def test_parity_fp16_macos(coreml_micro, micro_cases, compute_units):
    from sam2_edge.runtimes.backends.coreml_backend import CoreMLBackend

    spec, _, files = coreml_micro
    _, stages, cases = micro_cases
    be = CoreMLBackend(spec, files, compute_units=compute_units)
    for stage in STAGES:
        for name, args in cases[stage]:
            for t, g, r in zip(spec.io()[stage][1], be.run(stage, args), eager(stages, stage, args)):
                assert g.dtype == np.float32 and g.shape == t.shape
                check_close(f"{stage}/{name}/{t.name}", g, r, group="cml16", **FP16_TOL)


@pytest.mark.macos
@macos_only
def test_parity_fp32_macos(micro_cases, tmp_path):
    from sam2_edge.runtimes.backends.coreml_backend import CoreMLBackend

    spec, stages, cases = micro_cases
    export_all(spec, stages, cases, tmp_path, "fp32")
    be = CoreMLBackend(spec, {s: tmp_path / f"{s}.mlpackage" for s in STAGES}, compute_units="CPU_ONLY")
    for stage in STAGES:
        for name, args in cases[stage]:
            for t, g, r in zip(spec.io()[stage][1], be.run(stage, args), eager(stages, stage, args)):
                check_close(f"{stage}/{name}/{t.name}", g, r, group="cml32", **FP32_TOL)


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_tiny_export_coreml(tmp_path, precision):
    """Full-size sam2.1-hiera-tiny: conversion time and package size per stage."""
    ckpt = optional_tiny_ckpt()
    if ckpt is None:
        pytest.skip("tiny reference checkpoint absent (shared/reference/tiny)")
    from sam2_edge.checkpoint import load_checkpoint

    model, _ = load_checkpoint(str(ckpt))
    spec, stages, cases = stage_cases(model)
    t0 = time.perf_counter()
    infos = export_all(spec, stages, cases, tmp_path, precision)
    print(f"\n[coreml] tiny {precision} (all stages {time.perf_counter() - t0:.0f} s)")
    for stage, i in infos.items():
        print(f"  {stage:17s} {i['mil_ops']} MIL ops, {i['bytes'] / 1e6:.2f} MB, export {i['export_seconds']:.1f} s "
              f"({i['export_cpu_seconds']:.1f} s CPU)")
        _assert_program_is_valid(spec, tmp_path / f"{stage}.mlpackage", stage)
    print(f"  total {sum(i['bytes'] for i in infos.values()) / 1e6:.1f} MB")


@pytest.fixture(scope="module")
def coreml_batch2(micro_cases, tmp_path_factory):
    """The three per-object stages converted for a batch of 2 objects ("<stage>@2" graphs)."""
    from dataclasses import replace

    from sam2_edge.contract.examples import example_inputs
    from sam2_edge.export.coreml_export import export_stage

    spec, stages, _ = micro_cases
    spec = replace(spec, obj_batches=(1, 2))
    out = tmp_path_factory.mktemp("coreml_batch2")
    io = spec.graph_io()
    files = {}
    for key in spec.graph_keys()[4:]:
        ins, outs = io[key]
        example = tuple(torch.from_numpy(a) for a in example_inputs(spec, key, seed=3))
        files[key] = out / f"{key.replace('@', '.b')}.mlpackage"
        export_stage(stages[spec.parse_key(key)[0]], example, [t.name for t in ins], [t.name for t in outs],
                     files[key], "fp16")
    return spec, stages, files


def test_batched_programs_are_valid(coreml_batch2):
    """Batch-2 programs: the contract's batched io (per-object inputs with 2 rows, the frame's
    features batch 1), static shapes, no unsupported ops or control flow."""
    spec, _, files = coreml_batch2
    assert sorted(files) == ["mask_decoder@2", "memory_attention@2", "memory_encoder@2"]
    for key, path in files.items():
        _assert_program_is_valid(spec, path, key)


@pytest.mark.macos
@macos_only
def test_batched_parity_macos(coreml_batch2):
    """Each row of a batch-2 program == the eager stage on that object (fp16 tolerance)."""
    from sam2_edge.contract.examples import example_inputs

    spec, stages, files = coreml_batch2
    for key, path in files.items():
        stage = spec.parse_key(key)[0]
        ins, outs = spec.graph_io()[key]
        x = example_inputs(spec, key, seed=4)
        got = ct.models.MLModel(str(path)).predict({t.name: a for t, a in zip(ins, x)})
        with torch.no_grad():
            ref = stages[stage](*[torch.from_numpy(a) for a in x])
        ref = ref if isinstance(ref, tuple) else (ref,)
        for t, r in zip(outs, ref):
            r = r.numpy()
            assert np.abs(got[t.name] - r).max() <= 2e-2 * max(1.0, float(np.abs(r).max())), (key, t.name)
