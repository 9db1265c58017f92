"""pytest-benchmark suites of the tracker, per stage and per backend (NOT part of the CI run:
pyproject's testpaths is `tests`; run these explicitly):

    pytest benchmarks/ --benchmark-json=bench.json                            # tiny @ 1024, every backend
    pytest benchmarks/ --bench-image-size 512 --bench-backends torch,onnx --bench-threads 1
    pytest benchmarks/ --bench-variant micro --bench-rounds 3                  # seconds: a smoke run
    pytest benchmarks/ --bench-bundle bundles/tiny-onnx --bench-backends none  # a bundle you exported

Without --bench-checkpoint the model has random weights (seed 0): speed does not depend on
the weights. ONNX / ExecuTorch bundles are exported once per session into a temporary
folder (or --bench-export-dir) from the same weights; a backend that is not installed is
skipped with the reason.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

from sam2_edge import bench as B
from sam2_edge.contract import BACKENDS, backend_unavailable

# the same object prompts as `sam2-edge bench` on the shipped clip
FILL_FRAMES = B.STEADY_FROM_DEFAULT  # frames streamed before measuring: every memory ring full


def pytest_addoption(parser):
    g = parser.getgroup("sam2-edge benchmarks")
    g.addoption("--bench-variant", default=B.DEFAULT_VARIANT,
                help="model variant (random weights without a checkpoint)")
    g.addoption("--bench-checkpoint", default=None, help="official checkpoint (default: random weights)")
    g.addoption("--bench-image-size", type=int, default=None, help="model input side (default: the variant's)")
    g.addoption("--bench-backends", default="torch,onnxruntime,executorch",
                help="comma list of torch, onnx(runtime), executorch, coreml; 'none' for bundles only")
    g.addoption("--bench-bundle", action="append", default=[], help="an exported bundle to benchmark too")
    g.addoption("--bench-threads", type=int, default=None, help="intra-op threads (default: torch's default)")
    g.addoption("--bench-rounds", type=int, default=5, help="measured rounds per benchmark (default 5)")
    g.addoption("--bench-export-dir", default=None, help="keep exported bundles here (default: a temp folder)")


def _target_ids(config) -> List[str]:
    names = [] if config.getoption("--bench-backends") in ("none", "") else \
        B.parse_backends(config.getoption("--bench-backends"))
    return names + [f"bundle:{Path(d).name}" for d in config.getoption("--bench-bundle")]


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", _target_ids(metafunc.config), indirect=True)


class _Recorder:
    """A backend wrapper keeping a copy of the last inputs of each stage (real, steady-state
    inputs for the per-stage benchmarks)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.name = inner.name
        self.last: Dict[str, Tuple[np.ndarray, ...]] = {}

    def run(self, stage, inputs):
        self.last[stage] = tuple(np.array(a, copy=True) for a in inputs)
        return self.inner.run(stage, inputs)

    def describe(self) -> str:
        return self.inner.describe()


class Session:
    """Lazily built models, bundles and backends of one benchmark session."""

    def __init__(self, config) -> None:
        self.config = config
        self.variant = config.getoption("--bench-variant")
        self.checkpoint: Optional[str] = config.getoption("--bench-checkpoint")
        self.image_size: Optional[int] = config.getoption("--bench-image-size")
        self.threads = config.getoption("--bench-threads") or B.default_threads()
        self.rounds = config.getoption("--bench-rounds")
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._model = None
        self._backends: Dict[str, object] = {}
        self._inputs: Dict[object, Dict[str, Tuple[np.ndarray, ...]]] = {}
        frames, _ = B.load_frames(None, 24)
        self.frames = frames

    def workdir(self) -> Path:
        d = self.config.getoption("--bench-export-dir")
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
            return Path(d)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sam2-edge-benchmarks-")
        return Path(self._tmp.name)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def model(self):
        if self._model is None:
            import torch

            from sam2_edge.checkpoint import build_sam2

            torch.manual_seed(0)
            self._model = build_sam2(None if self.checkpoint else self.variant, checkpoint=self.checkpoint,
                                     image_size=self.image_size)
        return self._model

    def weights_file(self) -> str:
        if self.checkpoint:
            return self.checkpoint
        import torch

        path = self.workdir() / f"{self.variant}-random-seed0.pt"
        if not path.is_file():
            torch.save({"model": self.model().state_dict()}, str(path))
        return str(path)

    def backend(self, target_id: str):
        """(backend, description) of a target id, or pytest.skip with the reason."""
        if target_id in self._backends:
            return self._backends[target_id]
        if target_id.startswith("bundle:"):
            d = next(d for d in self.config.getoption("--bench-bundle") if Path(d).name == target_id[7:])
            be = self._open_bundle(d, None)
        elif target_id == "torch":
            why = backend_unavailable("torch")
            if why:
                pytest.skip(f"torch: {why}")
            from sam2_edge.runtimes.backends.torch_backend import TorchBackend

            be = TorchBackend(self.model())
        else:
            why = backend_unavailable(target_id, export=True)
            if why:
                pytest.skip(f"{target_id}: {why}")
            fmt = BACKENDS[target_id].format
            size = self.image_size or self.model().cfg.image_size
            out = self.workdir() / f"{self.model().cfg.name}-{size}-{fmt}"
            if not (out / "manifest.json").is_file():
                B.export_bundle_subprocess(self.weights_file(), None if self.checkpoint else self.variant, fmt,
                                           size, out, progress=False)
            be = self._open_bundle(out, target_id)
        self._backends[target_id] = be
        return be

    def _open_bundle(self, d, backend):
        from sam2_edge.contract import load_manifest
        from sam2_edge.runtimes.bundle_backends import backend_name, open_bundle

        if B.backend_takes_threads(backend_name(load_manifest(d, verify_hashes=False), backend)):
            return open_bundle(str(d), backend, threads=self.threads)
        return open_bundle(str(d), backend)  # a backend without a threads option

    def activate(self) -> None:
        """Set torch's intra-op threads (the torch backend; harmless for the others)."""
        if backend_unavailable("torch") is None:
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)

    def stage_inputs(self, backend) -> Dict[str, Tuple[np.ndarray, ...]]:
        """The inputs each stage got on the last frame of a stream with full memory (one object)."""
        key = backend.spec
        if key not in self._inputs:
            from sam2_edge.runtimes import Tracker

            rec = _Recorder(backend)
            tr = Tracker(rec)  # type: ignore[arg-type]
            h, w = self.frames[0].shape[:2]
            tr.add_prompt(self.frames[0], 1, **B.object_prompts(1, w, h)[0])
            for i in range(1, FILL_FRAMES + 1):
                tr.track(self.frames[i % len(self.frames)])
            self._inputs[key] = dict(rec.last)
        return self._inputs[key]

    def stream(self, backend, objects: int):
        """A tracker on `backend` with `objects` objects whose memory rings are full, and a
        function that tracks the next frame."""
        from sam2_edge.runtimes import Tracker

        tr = Tracker(backend)
        h, w = self.frames[0].shape[:2]
        for j, p in enumerate(B.object_prompts(objects, w, h)):
            tr.add_prompt(self.frames[0] if j == 0 else None, j + 1, **p)
        for i in range(1, FILL_FRAMES):
            tr.track(self.frames[i % len(self.frames)])
        state = {"i": FILL_FRAMES}

        def step():
            r = tr.track(self.frames[state["i"] % len(self.frames)])
            state["i"] += 1
            return r
        return tr, step

    def info(self, backend) -> dict:
        return {"backend": backend.describe(), "image_size": backend.spec.image_size, "threads": self.threads,
                "variant": self.variant if not self.checkpoint else os.path.basename(self.checkpoint),
                "random_weights": not self.checkpoint, "load_average": B.load_average()}


@pytest.fixture(scope="session")
def bench_session(request):
    s = Session(request.config)
    yield s
    s.close()


@pytest.fixture(scope="session")
def target(request, bench_session):
    """(target id, backend) for the parametrised backend."""
    bench_session.activate()
    return request.param, bench_session.backend(request.param)
