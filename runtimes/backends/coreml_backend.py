"""CoreML backend: runs the four stage ML programs (`.mlpackage`) with coremltools'
`MLModel.predict`. CoreML runs only on macOS (Apple's runtime); on other systems the
constructor raises BackendUnavailableError.

Nothing is imported at module import time; coremltools itself imports torch only if it is
installed (it is optional for prediction).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Mapping, Tuple

import numpy as np

from ...errors import BackendUnavailableError, BundleError, InputError
from ...contract import TrackerSpec
from ...contract.bundle_dir import GraphBlob
from .base import Backend

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class CoreMLBackend(Backend):
    name = "coreml"

    def __init__(self, spec: TrackerSpec, stage_files: Mapping[str, Path], compute_units: str = "ALL") -> None:
        super().__init__(spec)
        units = str(compute_units).upper()
        if units not in COMPUTE_UNITS:
            raise InputError(f"compute_units must be one of {COMPUTE_UNITS}, got {compute_units!r}")
        if sys.platform != "darwin":
            raise BackendUnavailableError(
                f"CoreML runs only on macOS (this is {sys.platform}); use the onnxruntime or executorch "
                "backend here, or run the bundle's .mlpackage files on a Mac / iPhone / iPad")
        try:
            import coremltools as ct
        except ImportError as e:
            raise BackendUnavailableError(f"the CoreML backend needs coremltools: pip install 'sam2-edge[coreml]' ({e})") from None
        self.compute_units = units
        self._io = spec.graph_io()
        self._models = {}
        for stage in spec.graph_keys():
            path = stage_files.get(stage)
            if path is None:
                raise BundleError(f"no CoreML model for stage {stage!r}")
            if isinstance(path, GraphBlob):  # verified bytes: run exactly those, from a private copy
                path = self._private_copy(path)
            path = Path(path)
            if not path.exists():
                raise BundleError(f"CoreML model {path} is missing")
            try:
                model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units))
            except Exception as e:
                raise BundleError(f"cannot load CoreML model {path}: {e}") from e
            desc = model.get_spec().description
            ins, outs = self._io[stage]
            got_in, got_out = [i.name for i in desc.input], [o.name for o in desc.output]
            if got_in != [t.name for t in ins] or got_out != [t.name for t in outs]:
                raise BundleError(f"{path}: inputs {got_in} / outputs {got_out} do not match the {stage} stage")
            self._models[stage] = model

    def _private_copy(self, blob: GraphBlob) -> Path:
        """Write a verified .mlpackage to a private temporary folder (mode 0700) kept for the
        backend's lifetime, so CoreML loads the bytes that were hashed, not the bundle's files."""
        if not hasattr(self, "_tmp"):
            self._tmp = tempfile.TemporaryDirectory(prefix="sam2-edge-coreml-")
        pkg = Path(self._tmp.name) / Path(blob.file).name
        for rel, data in blob.package.items():
            dst = pkg / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        return pkg

    def run(self, stage: str, inputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
        self.check_stage(stage)
        ins, outs = self._io[stage]
        if len(inputs) != len(ins):
            raise InputError(f"{stage}: {len(inputs)} inputs given, {len(ins)} expected")
        feed = {}
        for t, a in zip(ins, inputs):
            a = np.ascontiguousarray(a, dtype=t.dtype)
            if a.shape != t.shape:
                raise InputError(f"{stage}: input {t.name} has shape {a.shape}, expected {t.shape}")
            feed[t.name] = a
        result = self._models[stage].predict(feed)
        return tuple(np.asarray(result[t.name], dtype=np.float32).reshape(t.shape) for t in outs)

    def describe(self) -> str:
        return f"coreml ({self.compute_units})"
