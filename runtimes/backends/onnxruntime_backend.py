"""ONNX Runtime backend: one InferenceSession per stage graph of an ONNX bundle.

numpy + onnxruntime only (never torch). CPU by default; CUDA, TensorRT and CoreML
execution providers when asked for and present in the installed onnxruntime build
(onnxruntime-gpu for CUDA / TensorRT; the macOS wheel has CoreML). The CPU provider is
always appended as the fallback for nodes another provider does not take. Graph
optimisation level ORT_ENABLE_ALL; `threads` sets the intra-op thread count (0 or None:
onnxruntime's default, one per physical core).

Threads do not spin. Each stage's session has its own intra-op pool, and by default ONNX Runtime's
worker threads busy-wait after a run for more work; a tracker runs the four sessions one after
the other, so the pool that just finished kept spinning on the cores the next stage's pool
needed. Measured (sam2.1-hiera-tiny @ 512, fp32, 2 threads, 2 vCPUs, the four stages in tracker
order, two runs; benchmarks/README.md): 956 / 964 ms per frame spinning, 786 / 864 ms not
(mask decoder 23-40 -> 16-21 ms, memory encoder 57-67 -> 29-34 ms); one process-wide pool
(`use_per_session_threads=False`) gave 840 / 887 ms but must be fixed before the first session
of the process and would tie every backend of a process to one thread count.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import BackendUnavailableError, BundleError, InputError
from ...contract import TrackerSpec
from ...contract.bundle_dir import GraphBlob
from .base import Backend
from .onnx_external import external_locations

log = logging.getLogger(__name__)

_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
}
_PACKAGE_HINT = {
    "CUDAExecutionProvider": "pip install onnxruntime-gpu (instead of onnxruntime) with a matching CUDA / cuDNN",
    "TensorrtExecutionProvider": "pip install onnxruntime-gpu and TensorRT (libnvinfer) on the library path",
    "CoreMLExecutionProvider": "use the macOS onnxruntime wheel (pip install onnxruntime on macOS)",
    "DmlExecutionProvider": "pip install onnxruntime-directml (Windows)",
    "OpenVINOExecutionProvider": "pip install onnxruntime-openvino",
}
_ORT_TYPES = {"float32": "tensor(float)", "int32": "tensor(int32)"}

ProviderArg = Union[str, Tuple[str, Mapping[str, object]]]


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("the onnxruntime backend needs ONNX Runtime: pip install 'sam2-edge[onnx]'") \
            from None
    return ort


def resolve_providers(providers: Optional[Sequence[ProviderArg]], available: Sequence[str]) -> List[ProviderArg]:
    """Provider names (aliases cpu / cuda / tensorrt / coreml ... or full names, optionally
    (name, options) pairs) -> the list for InferenceSession, CPU last. A provider that the
    installed onnxruntime lacks raises BackendUnavailableError naming the package to install."""
    if providers is None:
        providers = ["cpu"]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    out: List[ProviderArg] = []
    names = []
    for p in providers:
        opts = None
        if isinstance(p, (tuple, list)):
            if len(p) != 2 or not isinstance(p[1], Mapping):
                raise InputError(f"a provider is a name or (name, options dict), got {p!r}")
            p, opts = p
        if not isinstance(p, str):
            raise InputError(f"provider names are strings, got {p!r}")
        name = _ALIASES.get(p.lower(), p)
        if name not in available:
            hint = _PACKAGE_HINT.get(name, "install an onnxruntime build that has it")
            raise BackendUnavailableError(f"ONNX Runtime execution provider {name} is not available in this "
                                          f"onnxruntime (available: {', '.join(available)}); {hint}")
        if name in names:
            continue
        names.append(name)
        out.append((name, dict(opts)) if opts else name)
    if "CPUExecutionProvider" not in names:
        out.append("CPUExecutionProvider")
    return out


def _name(source) -> str:
    return source.file if isinstance(source, GraphBlob) else str(source)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, spec: TrackerSpec, stage_files: Mapping[str, Path],
                 providers: Optional[Sequence[ProviderArg]] = None, threads: Optional[int] = None,
                 low_memory: bool = True) -> None:
        """low_memory (default): each stage's buffers are freed after its run (no per-session
        arena, large blocks returned to the system), so the process peak is the largest stage's
        (tiny @ 1024: 1.1 GiB instead of 2.7); False keeps ONNX Runtime's arenas, ~9 % faster per
        frame where memory is plentiful (benchmarks/README.md, "ONNX Runtime: where the memory goes").
        `open_bundle` passes low_memory=False for quantised bundles unless told otherwise."""
        super().__init__(spec)
        ort = _import_ort()
        self.ort = ort
        missing = [s for s in spec.graph_keys() if s not in stage_files]
        if missing:
            raise BundleError(f"no graph file given for stages {missing}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise InputError(f"threads must be a non-negative integer (0 = onnxruntime default), got {threads!r}")
        if not isinstance(low_memory, bool):
            raise InputError(f"low_memory must be True or False, got {low_memory!r:.40}")
        self.low_memory = low_memory
        self.providers = resolve_providers(providers, ort.get_available_providers())
        self.threads = threads or 0
        so = self._options()
        io = spec.graph_io()
        self.sessions: Dict[str, object] = {}
        self._in_names: Dict[str, List[str]] = {}
        self._out_names: Dict[str, List[str]] = {}
        self._in_dtypes: Dict[str, List[np.dtype]] = {}
        for stage in spec.graph_keys():
            source = stage_files[stage]
            try:
                sess = self._session(stage, source, so)
            except BundleError:
                raise
            except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
                raise BundleError(f"onnxruntime cannot load the {stage} graph {_name(source)}: {e}. The file is "
                                  "not a valid ONNX graph for this onnxruntime; re-export the bundle or upgrade "
                                  "onnxruntime") from None
            ins, outs = io[stage]
            self._check_session(stage, sess, ins, outs)
            self.sessions[stage] = sess
            self._in_names[stage] = [t.name for t in ins]
            self._out_names[stage] = [t.name for t in outs]
            self._in_dtypes[stage] = [np.dtype(t.dtype) for t in ins]
        self.active_providers = list(self.sessions[spec.graph_keys()[0]].get_providers())

    def _options(self):
        ort = self.ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only; ORT warns about benign things (unused initializers, ...)
        # no busy-waiting between runs: the next stage's session has its own pool (module docstring)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Memory (benchmarks/README.md, "ONNX Runtime: where the memory goes"): each session's CPU
        # arena keeps the high-water mark of its own runs for good, so the process held the sum of
        # the four stages' peaks; without it a stage's buffers are freed after its run and the
        # process peak is the largest stage's. The memory pattern (one planned block per run) stays.
        if self.low_memory:
            so.enable_cpu_mem_arena = False
            # ... and glibc must give those freed blocks back (a fixed 1 MiB mmap threshold; heap.py)
            from .heap import return_large_blocks_to_os

            return_large_blocks_to_os()
        return so

    def _session(self, stage: str, source, base_options):
        """An InferenceSession of a verified in-memory graph (GraphBlob: bytes checked against the
        manifest; its external data only from the manifest's hashed data files, from memory)
        or, for a trusted local file, of a path."""
        ort = self.ort
        if not isinstance(source, GraphBlob):
            return ort.InferenceSession(str(Path(source)), base_options, providers=self.providers)
        so = base_options
        try:
            locations = external_locations(source.data)
        except BundleError as e:
            raise BundleError(f"onnxruntime cannot load the {stage} graph {source.file}: {e}") from None
        if locations:
            folder = posixpath.dirname(source.file)
            names, buffers = [], []
            for loc in locations:
                rel = posixpath.normpath(posixpath.join(folder, loc))
                if (posixpath.isabs(loc) or "\\" in loc or ".." in loc.split("/") or rel not in source.data_files):
                    raise BundleError(f"the {stage} graph reads its weights from {loc!r}, which is not one of the "
                                      f"data files its manifest lists and hashes ({sorted(source.data_files)}). "
                                      "The bundle is malformed or malicious: do not use it; re-export it.")
                names.append(loc)
                buffers.append(source.data_files[rel])
            so = self._options()
            so.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
        return ort.InferenceSession(source.data, so, providers=self.providers)

    @staticmethod
    def _check_session(stage, sess, ins, outs) -> None:
        """The graph's own inputs/outputs must be the spec's (names, static shapes, types)."""
        for kind, got, exp in (("inputs", sess.get_inputs(), ins), ("outputs", sess.get_outputs(), outs)):
            got_l = [(a.name, tuple(a.shape), a.type) for a in got]
            exp_l = [(t.name, tuple(t.shape), _ORT_TYPES[t.dtype]) for t in exp]
            if got_l != exp_l:
                raise BundleError(f"the {stage} graph's {kind} {got_l} differ from the bundle spec {exp_l}; "
                                  "the graph does not belong to this bundle. Re-export the bundle.")

    def run(self, stage: str, inputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
        self.check_stage(stage)
        names = self._in_names[stage]
        if len(inputs) != len(names):
            raise InputError(f"{stage} takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        feeds = {n: np.ascontiguousarray(a, dtype=dt) for n, a, dt in zip(names, inputs, self._in_dtypes[stage])}
        return tuple(self.sessions[stage].run(self._out_names[stage], feeds))

    def describe(self) -> str:
        threads = self.threads or "default"
        arenas = "" if self.low_memory else "; arenas"
        return f"onnxruntime {self.ort.__version__} ({', '.join(self.active_providers)}; threads={threads}{arenas})"
