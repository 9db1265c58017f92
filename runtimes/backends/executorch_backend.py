"""ExecuTorch backend: runs the four stage `.pte` programs (XNNPACK-delegated) with
ExecuTorch's Python runtime (`executorch.runtime`).

Nothing is imported at module import time. Note that ExecuTorch's Python bindings are not
torch-free: the pip wheel's extension links libtorch, `executorch.runtime` imports torch,
and a method only accepts torch tensors. So this backend needs `torch` installed next to
`executorch` (both come with `pip install 'sam2-edge[executorch]'`); it converts numpy
arrays to and from tensors without copying. A torch-free deployment of the same `.pte`
files uses ExecuTorch's C++ runtime (or the ONNX Runtime backend from Python).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Tuple

import numpy as np

from ...errors import BackendUnavailableError, BundleError, InputError
from ...contract import TrackerSpec
from ...contract.bundle_dir import GraphBlob
from .base import Backend

# ExecuTorch ScalarType codes (TensorInfo.dtype) of the dtypes the stages use
_SCALAR_TYPES = {"float32": 6, "int32": 3}


class ExecuTorchBackend(Backend):
    name = "executorch"

    def __init__(self, spec: TrackerSpec, stage_files: Mapping[str, Path], threads: Optional[int] = None,
                 verify: bool = True) -> None:
        """threads: size of ExecuTorch's (process-wide) thread pool that XNNPACK uses; None or
        0 keeps the runtime's default. verify: full structural check of each program on load."""
        super().__init__(spec)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise InputError(f"threads must be a non-negative integer (0 = executorch default), got {threads!r}")
        try:
            from executorch.runtime import Runtime, Verification
        except ImportError as e:
            raise BackendUnavailableError(
                f"the ExecuTorch backend needs executorch (and torch, which its Python runtime links): "
                f"pip install 'sam2-edge[executorch]' ({e})") from None
        import torch  # already loaded by executorch.runtime; its methods take torch tensors only

        self._torch = torch
        runtime = Runtime.get()
        if not runtime.backend_registry.is_available("XnnpackBackend"):
            raise BackendUnavailableError("this executorch build has no XNNPACK backend "
                                          f"(registered: {runtime.backend_registry.registered_backend_names})")
        if threads:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)  # before any method runs
        self.threads = threads or 0
        io = spec.graph_io()
        self._io = io
        self._methods = {}
        for stage in spec.graph_keys():
            source = stage_files.get(stage)
            if source is None:
                raise BundleError(f"no ExecuTorch program for stage {stage!r}")
            if isinstance(source, GraphBlob):  # bytes read once and checked against the manifest
                path, data = Path(source.file), source.data
            else:
                path = data = Path(source)
                if not path.is_file():
                    raise BundleError(f"ExecuTorch program {path} is missing")
            try:
                program = runtime.load_program(
                    data, verification=Verification.InternalConsistency if verify else Verification.Minimal)
                method = program.load_method("forward")
            except Exception as e:  # the bindings raise RuntimeError / ValueError on bad files
                raise BundleError(f"cannot load ExecuTorch program {path}: {e}") from e
            self._check_meta(stage, path, method.metadata)
            # keep the program alive with its method, and the verified bytes it may point into (a program
            # loaded from a buffer can reference it rather than copy it)
            self._methods[stage] = (program, method, data)

    def _check_meta(self, stage: str, path: Path, meta) -> None:
        ins, outs = self._io[stage]
        if meta.num_inputs() != len(ins) or meta.num_outputs() != len(outs):
            raise BundleError(f"{path}: {meta.num_inputs()} inputs / {meta.num_outputs()} outputs, "
                              f"the {stage} stage has {len(ins)} / {len(outs)}")
        for kind, specs, get in (("input", ins, meta.input_tensor_meta), ("output", outs, meta.output_tensor_meta)):
            for i, t in enumerate(specs):
                info = get(i)
                if tuple(info.sizes()) != t.shape or info.dtype() != _SCALAR_TYPES[t.dtype]:
                    raise BundleError(f"{path}: {kind} {i} ({t.name}) is {tuple(info.sizes())} dtype code "
                                      f"{info.dtype()}, expected {t.shape} {t.dtype}")

    def run(self, stage: str, inputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
        self.check_stage(stage)
        ins, outs = self._io[stage]
        if len(inputs) != len(ins):
            raise InputError(f"{stage}: {len(inputs)} inputs given, {len(ins)} expected")
        args = []
        for t, a in zip(ins, inputs):
            a = np.ascontiguousarray(a, dtype=t.dtype)
            if a.shape != t.shape:
                raise InputError(f"{stage}: input {t.name} has shape {a.shape}, expected {t.shape}")
            args.append(self._torch.from_numpy(a))
        _, method, _ = self._methods[stage]
        result = method.execute(args)  # outputs are copied out of the program's arenas
        return tuple(r.numpy() for r in result)

    def describe(self) -> str:
        threads = f", {self.threads} threads" if self.threads else ""
        return f"executorch (XNNPACK{threads})"


# ---------------------------------------------------------------------------------- thread pool
# ExecuTorch's XNNPACK thread pool is process-wide. Its Python bindings reach it only through
# private functions of `portable_lib`; they are used here and nowhere else in sam2-edge.
def _threadpool_api():
    """(get, reset) of ExecuTorch's thread pool, or None where this executorch lacks them."""
    try:
        from executorch.extension.pybindings import portable_lib  # type: ignore
    except ImportError:
        return None
    get = getattr(portable_lib, "_threadpool_get_thread_count", None)
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    return None if get is None or reset is None else (get, reset)


def threadpool_size() -> Optional[int]:
    """Threads in ExecuTorch's (process-wide) thread pool; None where it cannot be read
    (executorch not installed, or a build without the thread-pool bindings)."""
    api = _threadpool_api()
    return None if api is None else int(api[0]())


def set_threadpool_size(n: int) -> None:
    """Resize ExecuTorch's process-wide thread pool to `n` threads (no-op when it has `n`).
    The runtime logs every resize on file descriptor 2; that line is silenced."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"the thread pool size must be a positive integer, got {n!r}")
    api = _threadpool_api()
    if api is None:
        raise BackendUnavailableError("this executorch cannot resize its thread pool (no thread-pool bindings "
                                      "in executorch.extension.pybindings.portable_lib): pip install "
                                      "'sam2-edge[executorch]'")
    get, reset = api
    if int(get()) == n:
        return
    with _quiet_stderr_fd():
        reset(n)


class _quiet_stderr_fd:
    """Point file descriptor 2 at /dev/null for a moment (C++ logging that Python cannot silence)."""

    def __enter__(self):
        import os
        import sys

        self.saved = None
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        except (OSError, AttributeError, ValueError):
            self.saved = None
        return self

    def __exit__(self, *exc):
        import os

        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
