"""`sam2-edge bench`: on-device speed of the streaming tracker.

    sam2-edge bench                                   # tiny, random weights, shipped clip, every installed backend
    sam2-edge bench --checkpoint sam2.1_hiera_tiny.pt --backends torch,onnx --image-size 512
    sam2-edge bench --bundle bundles/tiny-onnx --bundle bundles/tiny-et --json out.json --plot out.png
    sam2-edge bench --variant sam2.1-hiera-tiny --backends torch --threads 1,2,4

What is measured, per target (a backend running a model; several in ONE run):

* per-stage latency (image_encoder, memory_attention, mask_decoder, memory_encoder, and
  pre/post = preprocessing + mask upsampling = total - stages), median and p90 in ms per
  frame, summed over the objects, on the frames where every object's memory ring is full
  (frame index >= num_maskmem + 1 = 8);
* first-frame (prompt) latency: `add_prompt(frame, one object)` on a fresh tracker, median and
  p90 over `--prompt-repeats`; the cold one (the very first call after loading) separately;
* streaming FPS end to end (`Tracker.track` calls on decoded frames; video decoding excluded)
  for each `--objects` count (default 1 and 3), on the same full-memory frames;
* resident memory: the process peak (every target is loaded in the one process) and the RSS
  each target added while it was loaded and warmed up; `Tracker.memory_bytes`;
* model size on disk: the bundle's files; for torch the parameter bytes;
* threads: the intra-op threads each target ran with (torch.set_num_threads, ONNX Runtime
  intra_op_num_threads, the ExecuTorch threadpool).

Targets are run interleaved frame by frame (round-robin, the order rotated every frame), so a
change of machine load hits every target alike; ratios are against the first target.

No torch at import: torch-free devices benchmark bundles with ONNX Runtime / ExecuTorch.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cli import subcommand
from .errors import BackendUnavailableError, InputError, Sam2EdgeError
from .progress import Progress

log = logging.getLogger(__name__)

SCHEMA = "sam2-edge-bench/1"
DEFAULT_VARIANT = "sam2.1-hiera-tiny"
ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_CLIP = ASSETS / "bedroom_480x270_24f.mp4"
STAGE_NAMES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
ROWS = STAGE_NAMES + ("pre_post", "total")  # pre_post = total - the four stages
_SHORT = {"image_encoder": "image_enc", "memory_attention": "mem_attn", "mask_decoder": "mask_dec",
          "memory_encoder": "mem_enc", "pre_post": "pre/post", "total": "total"}
# frames are measured once every object's memory ring is full: from frame num_maskmem + 1 on
# (num_maskmem = 7 in every released variant; the run checks each target's spec)
STEADY_FROM_DEFAULT = 8
RANDOM_WEIGHTS_NOTE = ("random weights: speed does not depend on the weights (the same static-shape graphs "
                       "and kernels run, with no data-dependent control flow), so the numbers hold for the "
                       "released checkpoint of this architecture")

# backend name -> (bundle format, modules it needs to run, modules it needs to export, pip extra)
_BACKENDS = {
    "torch": (None, ("torch",), (), "torch"),
    "onnxruntime": ("onnx", ("onnxruntime",), ("torch", "onnx", "onnxscript"), "export-onnx"),
    "executorch": ("executorch", ("executorch",), ("torch", "executorch"), "executorch"),
    "coreml": ("coreml", ("coremltools",), ("torch", "coremltools"), "coreml"),
}
_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "et": "executorch", "pte": "executorch",
            "xnnpack": "executorch", "coremltools": "coreml", "pytorch": "torch", "eager": "torch"}
_RUNTIME_MODULE = {"onnxruntime": "onnxruntime_backend", "executorch": "executorch_backend",
                   "coreml": "coreml_backend"}
_EXPORT_MODULE = {"onnx": "onnx_export", "executorch": "executorch_export", "coreml": "coreml_export"}


# ---------------------------------------------------------------------------------- small helpers
def stats(xs: Sequence[float]) -> Dict[str, float]:
    a = np.asarray(xs, np.float64)
    if a.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "mean": float("nan"), "min": float("nan"), "n": 0}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "min": float(a.min()), "n": int(a.size)}


def rss_bytes() -> Optional[int]:
    """Current resident set size of this process (None where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            import resource

            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ImportError):
        pass
    try:
        import psutil  # type: ignore

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - optional
        return None


def peak_rss_bytes() -> Optional[int]:
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil  # type: ignore

            return int(psutil.Process().memory_info().peak_wset)
        except Exception:  # noqa: BLE001
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _board() -> Optional[str]:
    """The board name on a Raspberry Pi / Jetson (device tree), else None."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
    except OSError:
        return None


def _version(module: str) -> Optional[str]:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        from importlib import metadata

        dist = {"onnxruntime": "onnxruntime", "torch": "torch", "executorch": "executorch",
                "coremltools": "coremltools", "numpy": "numpy"}.get(module, module)
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            for alt in ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
                try:
                    return metadata.version(alt)
                except metadata.PackageNotFoundError:
                    continue
    except Exception:  # noqa: BLE001
        pass
    return "installed"


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "board": _board(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("numpy", "torch", "onnxruntime", "executorch", "coremltools")},
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS",
                                           "KMP_BLOCKTIME") if k in os.environ},
    }


def _fmt_ms(x: Optional[float]) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB" if abs(n) < 2**30 else f"{n / 2**30:.2f} GiB"


def _round(obj, nd: int = 3):
    if isinstance(obj, float):
        return round(obj, nd) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _round(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, nd) for v in obj]
    return obj


def _int_list(text: str, what: str, minimum: int = 1, unique: bool = True) -> List[int]:
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < minimum for v in vals):
        raise InputError(f"{what} must be integers >= {minimum}, got {text!r}")
    return sorted(set(vals), key=vals.index) if unique else vals


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def backend_available(name: str, export: bool) -> Optional[str]:
    """None when backend `name` can run here (and be exported to, if `export`), else why not."""
    fmt, run_mods, export_mods, extra = _BACKENDS[name]
    if name == "coreml" and sys.platform != "darwin":
        return "the CoreML runtime runs on macOS only"
    mods = run_mods + (export_mods if export else ())
    missing = [m for m in mods if not _has(m)]
    if missing:
        return f"needs {', '.join(sorted(set(missing)))}: pip install 'sam2-edge[{extra}]'"
    if name != "torch":
        if not _has(f"sam2_edge.runtimes.backends.{_RUNTIME_MODULE[name]}"):
            return f"this sam2-edge has no {name} runtime backend"
        if export and not _has(f"sam2_edge.export.{_EXPORT_MODULE[fmt]}"):
            return f"this sam2-edge has no {fmt} exporter"
    return None


def parse_backends(text: Optional[str]) -> List[str]:
    if text is None:
        return []
    out: List[str] = []
    for raw in str(text).split(","):
        b = raw.strip().lower()
        if not b:
            continue
        if b == "all":
            out.extend(n for n in _BACKENDS if n not in out)
            continue
        b = _ALIASES.get(b, b)
        if b not in _BACKENDS:
            raise InputError(f"unknown backend {raw.strip()!r}; choose from torch, onnx, executorch, coreml, all")
        if b not in out:
            out.append(b)
    return out


def physical_cores() -> int:
    """Physical CPU cores (torch's and ONNX Runtime's default thread count), without importing torch."""
    try:
        import psutil  # type: ignore

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:  # noqa: BLE001 - optional
        pass
    try:
        cores, phys = set(), None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = val.strip()
                elif key == "core id":
                    cores.add((phys, val.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=5)
            return int(out.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return int(os.cpu_count() or 1)


def default_threads(need_torch: bool = False) -> int:
    """torch's default intra-op thread count when a torch target runs (one per physical core),
    else the physical core count (torch is not imported for bundle-only runs)."""
    if need_torch and _has("torch"):
        import torch

        return int(torch.get_num_threads())
    return physical_cores()


# ---------------------------------------------------------------------------------- frames / prompts
def load_frames(source: Optional[str], limit: int) -> Tuple[List[np.ndarray], str]:
    """Up to `limit` decoded RGB frames of a video file or frames folder (default: the shipped clip)."""
    from .runtimes.cli import read_frames

    src = str(source) if source else str(SAMPLE_CLIP)
    if not source and not SAMPLE_CLIP.is_file():
        raise InputError(f"the sample clip {SAMPLE_CLIP} is missing from this installation; pass --source VIDEO")
    it, _, _ = read_frames(src)
    frames = []
    for rgb in it:
        frames.append(np.ascontiguousarray(rgb))
        if len(frames) >= limit:
            break
    if hasattr(it, "close"):
        it.close()
    if not frames:
        raise InputError(f"no frames could be decoded from {src!r}")
    return frames, src


def object_prompts(k: int, w: int, h: int) -> List[dict]:
    """Prompts for `k` objects: the first three are the people / bed of the sample clip
    (click, box, click); more objects get clicks on a grid."""
    base = [
        {"points": [[w * 0.22, h * 0.65]], "labels": [1]},
        {"box": [w * 0.31, h * 0.02, w * 0.54, h * 0.74]},
        {"points": [[w * 0.62, h * 0.66]], "labels": [1]},
    ]
    out = base[:k]
    i = 0
    while len(out) < k:
        gx, gy = (i % 5 + 0.5) / 5, ((i // 5) % 4 + 0.5) / 4
        out.append({"points": [[w * gx, h * gy]], "labels": [1]})
        i += 1
    return out


# ---------------------------------------------------------------------------------- targets
@dataclass
class Target:
    label: str
    backend: str  # torch / onnxruntime / executorch / coreml
    source: str  # "random weights <variant>", a checkpoint path or a bundle folder
    threads: Optional[int]
    tracker: object
    model_bytes: int
    model_bytes_kind: str  # "parameters" (torch) or "bundle files"
    image_size: int
    precision: str
    variant: str
    activate: Callable[[], None] = lambda: None
    threads_used: Callable[[], Optional[int]] = lambda: None
    extra: dict = field(default_factory=dict)
    # results
    threads_seen: Optional[int] = None  # threads_used() right after the last activate()
    cold_first_ms: Optional[float] = None
    rss_added: Optional[int] = None
    prompt_samples: List[Dict[str, float]] = field(default_factory=list)
    runs: Dict[int, dict] = field(default_factory=dict)

    def call(self, fn: Callable[[], object]):
        self.activate()
        self.threads_seen = self.threads_used()
        return fn()


def _torch_threads_setter(n: int) -> Tuple[Callable[[], None], Callable[[], Optional[int]]]:
    import torch

    def activate() -> None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    return activate, lambda: int(torch.get_num_threads())


def _executorch_threads_setter(n: int) -> Tuple[Callable[[], None], Callable[[], Optional[int]]]:
    """ExecuTorch's XNNPACK threadpool is process-global: resize it before each call when needed."""
    try:
        from executorch.extension.pybindings import portable_lib as pl  # type: ignore

        get, reset = pl._threadpool_get_thread_count, pl._unsafe_reset_threadpool
    except (ImportError, AttributeError):
        return (lambda: None), (lambda: None)

    def activate() -> None:
        if get() != n:
            with _quiet_stderr_fd():  # the runtime logs every reset on fd 2
                reset(n)

    return activate, lambda: int(get())


class _quiet_stderr_fd:
    """Point file descriptor 2 at /dev/null for a moment (C++ logging that Python cannot silence)."""

    def __enter__(self):
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
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)


def _param_bytes(model) -> int:
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def export_bundle_subprocess(checkpoint: str, variant: Optional[str], fmt: str, image_size: Optional[int], out: Path,
            progress: bool) -> Path:
    """Export a bundle in a child process (keeps the exporter's memory out of this process's
    peak RSS); its output goes to stderr."""
    cmd = [sys.executable, "-c", "import sys; from sam2_edge.cli import main; sys.exit(main(sys.argv[1:]))",
           "export", "--checkpoint", checkpoint, "--format", fmt, "--out", str(out)]
    if variant:
        cmd += ["--variant", variant]
    if image_size:
        cmd += ["--image-size", str(image_size)]
    if not progress:
        cmd.append("--no-progress")
    print(f"bench: exporting a {fmt} bundle of {variant or checkpoint} at S={image_size or 'default'} "
          f"(minutes for a full-size model) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        err_fd = sys.stderr.fileno()
        r = subprocess.run(cmd, stdout=err_fd, stderr=err_fd)
        tail = ""
    except (AttributeError, OSError, ValueError):  # stderr replaced (tests, notebooks): capture instead
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = (r.stdout or "")[-3000:]
    if r.returncode != 0:
        raise Sam2EdgeError(f"exporting the {fmt} bundle failed (exit code {r.returncode}; the same as "
                            f"`sam2-edge {' '.join(cmd[3:])}`){': ' + tail if tail else ''}")
    print(f"bench: {fmt} bundle exported in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


class _Plan:
    """Builds the targets a command line asks for."""

    def __init__(self, a: argparse.Namespace, threads: List[int], notes: List[str]) -> None:
        self.a = a
        self.threads = threads
        self.notes = notes
        self.tmp: Optional[tempfile.TemporaryDirectory] = None
        self._model = None
        self._checkpoint: Optional[str] = a.checkpoint
        self.random_weights = a.checkpoint is None
        self.variant: Optional[str] = a.variant

    def workdir(self) -> Path:
        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="sam2-edge-bench-")
        return Path(self.tmp.name)

    def cleanup(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def model(self):
        """The torch model (shared by every torch target): the checkpoint's, or random weights."""
        if self._model is None:
            from .checkpoint import build_sam2, load_checkpoint

            if self._checkpoint is not None:
                self._model, cfg = load_checkpoint(self._checkpoint, self.variant, self.a.image_size)
                self.variant = cfg.name
            else:
                import torch

                torch.manual_seed(0)
                self._model = build_sam2(self.variant or DEFAULT_VARIANT, image_size=self.a.image_size)
                self.variant = self._model.cfg.name
        return self._model

    def checkpoint(self) -> str:
        """A checkpoint file for the exporter: the given one, or the random weights saved as
        `{"model": state_dict}` (the state dict does not depend on the image size)."""
        if self._checkpoint is None:
            import torch

            only_for_export = self._model is None
            model = self.model()
            path = self.workdir() / "random_weights.pt"
            torch.save({"model": model.state_dict()}, str(path))
            self._checkpoint = str(path)
            if only_for_export:  # no torch target: do not keep the model resident
                self._model = None
                gc.collect()
        return self._checkpoint

    def _source(self) -> str:
        return f"random weights {self.variant}" if self.random_weights else str(self._checkpoint)

    def torch_targets(self) -> List[Target]:
        import torch

        from .runtimes import Tracker
        from .runtimes.backends.torch_backend import TorchBackend

        model = self.model()
        out = []
        for n in self.threads:
            activate, used = _torch_threads_setter(n)
            activate()
            be = TorchBackend(model, self.a.device)
            dtype = str(next(model.parameters()).dtype).replace("torch.", "")
            out.append(Target(label="torch", backend="torch", source=self._source(), threads=n,
                              tracker=Tracker(be), model_bytes=_param_bytes(model),
                              model_bytes_kind="parameters", image_size=model.cfg.image_size,
                              precision={"float32": "fp32", "float16": "fp16"}.get(dtype, dtype),
                              variant=model.cfg.name, activate=activate, threads_used=used,
                              extra={"describe": f"torch {torch.__version__} eager ({self.a.device})",
                                     "device": self.a.device,
                                     "checkpoint_bytes": (os.path.getsize(self._checkpoint)
                                                          if not self.random_weights else None)}))
        return out

    def export_bundle(self, backend: str) -> Path:
        fmt = _BACKENDS[backend][0]
        ckpt = self.checkpoint()
        base = Path(self.a.export_dir) if self.a.export_dir else self.workdir()
        size = self.a.image_size
        if size is None and self.variant:
            from .configs import get_config

            size = get_config(self.variant).image_size
        name = f"{(self.variant or Path(ckpt).stem).replace('.', '_')}-{size or 'default'}-{fmt}"
        return export_bundle_subprocess(ckpt, self.variant, fmt, size, base / name, not self.a.no_progress)

    def bundle_targets(self, bundle: Path, backend: Optional[str], source: Optional[str] = None) -> List[Target]:
        from .runtimes import Tracker
        from .runtimes.bundle import load_manifest
        from .runtimes.bundle_backends import backend_name

        manifest = load_manifest(bundle)
        name = backend_name(manifest, backend)
        out = []
        for n in self.threads:
            options: dict = {}
            activate, used = (lambda: None), (lambda: None)
            if name == "onnxruntime":
                options["threads"] = n
                if self.a.ort_providers:
                    options["providers"] = self.a.ort_providers
            elif name == "executorch":
                options["threads"] = n
                # the pool is process-wide: set it before every call (targets with other counts share it)
                activate, used = _executorch_threads_setter(n)
            elif "Core ML schedules" not in " ".join(self.notes):
                self.notes.append(f"{name}: Core ML schedules its own CPU / GPU / Neural Engine work; "
                                  "--threads does not apply")
            try:
                tracker = Tracker.from_bundle(str(bundle), name, **options)
            except InputError as e:
                if "threads" not in options or "does not take options" not in str(e):
                    raise
                options.pop("threads")  # a backend without a threads option: set the runtime's pool instead
                tracker = Tracker.from_bundle(str(bundle), name, **options)
                if name != "executorch":
                    self.notes.append(f"{name} takes no thread count: it ran with its runtime's default")
            if name == "onnxruntime":
                used = (lambda n=n: n)
            be = tracker.backend
            out.append(Target(label=name, backend=name, source=source or str(bundle), threads=n, tracker=tracker,
                              model_bytes=_dir_bytes(Path(bundle)), model_bytes_kind="bundle files",
                              image_size=manifest.spec.image_size, precision=manifest.precision,
                              variant=manifest.variant, activate=activate, threads_used=used,
                              extra={"describe": be.describe(), "bundle": str(bundle), "format": manifest.format}))
        return out


def _unique_labels(targets: List[Target], several_threads: bool) -> None:
    for t in targets:
        if t.backend != "torch" and t.extra.get("bundle") and not t.source.startswith("exported"):
            t.label = f"{t.backend}:{Path(t.extra['bundle']).name}"
        if several_threads:
            t.label += f" t={t.threads}"
    seen: Dict[str, int] = {}
    for t in targets:
        if t.label in seen:
            seen[t.label] += 1
            t.label = f"{t.label} #{seen[t.label]}"
        else:
            seen[t.label] = 1


def build_targets(a: argparse.Namespace, plan: _Plan, notes: List[str]) -> List[Target]:
    explicit = a.backends is not None
    if explicit:
        backends = parse_backends(a.backends)
    elif a.bundle:
        backends = ["torch"] if (a.checkpoint or a.variant) else []
    elif a.checkpoint or a.variant:
        backends = ["torch"]
    else:
        backends = list(_BACKENDS)  # the no-argument default: every installed backend
    targets: List[Target] = []

    def add(make: Callable[[], List[Target]]) -> None:
        """Build targets, charging the resident memory their loading added to the first one."""
        gc.collect()
        r0 = rss_bytes()
        new = make()
        r1 = rss_bytes()
        for i, t in enumerate(new):
            t.extra["rss_load"] = (r1 - r0) if (i == 0 and r0 is not None and r1 is not None) else 0
        targets.extend(new)

    for b in backends:
        why = backend_available(b, export=b != "torch")
        if why is not None:
            if explicit:
                raise BackendUnavailableError(f"backend {b}: {why}")
            notes.append(f"{b}: skipped ({why})")
            continue
        if b == "torch":
            add(plan.torch_targets)
            continue
        try:
            bundle = plan.export_bundle(b)
            add(lambda: plan.bundle_targets(bundle, b, source=f"exported from {plan._source()}"))
        except Sam2EdgeError as e:
            if explicit:
                raise
            notes.append(f"{b}: skipped ({e})")
    for d in a.bundle or []:
        add(lambda d=d: plan.bundle_targets(Path(d), a.bundle_backend))
    if not targets:
        raise BackendUnavailableError("no backend could run: " + "; ".join(notes) if notes else
                                      "nothing to benchmark")
    _unique_labels(targets, len(plan.threads) > 1)
    sizes = {t.image_size for t in targets}
    if len(sizes) > 1:
        notes.append(f"the targets run different image sizes {sorted(sizes)}: their ratios compare different work")
    return targets


# ---------------------------------------------------------------------------------- measurement
def _timings(res) -> Dict[str, float]:
    t = res.timings
    d = {s: float(getattr(t, s)) for s in STAGE_NAMES}
    d["total"] = float(t.total)
    d["pre_post"] = max(0.0, d["total"] - sum(d[s] for s in STAGE_NAMES))
    return d


def _add(acc: Optional[Dict[str, float]], d: Dict[str, float]) -> Dict[str, float]:
    if acc is None:
        return dict(d)
    return {k: acc[k] + d[k] for k in acc}


def _rotate(targets: List[Target], i: int) -> List[Target]:
    k = i % len(targets)
    return targets[k:] + targets[:k]


def _prompt_frame(t: Target, frame: np.ndarray, prompts: List[dict]) -> Dict[str, float]:
    """Prompt len(prompts) objects on a new frame; the summed timings of the calls."""
    acc = None
    for j, p in enumerate(prompts):
        res = t.call(lambda j=j, p=p: t.tracker.add_prompt(frame if j == 0 else None, j + 1, **p))
        acc = _add(acc, _timings(res))
    return acc


def run_bench(targets: List[Target], frames: List[np.ndarray], objects: List[int], n_frames: int, warmup: int,
              prompt_repeats: int, show_progress: Optional[bool]) -> dict:
    h, w = frames[0].shape[:2]
    nf = len(frames)
    frame = lambda i: frames[i % nf]  # noqa: E731 - a short clip loops
    steady_from = max(t.tracker.spec.num_maskmem for t in targets) + 1
    if n_frames <= steady_from:
        raise InputError(f"--frames must be > {steady_from}: the objects' memory is full from frame {steady_from} "
                         "on, and only those frames are measured")
    n = len(targets)
    total = n * (1 + warmup) + n * prompt_repeats + sum(n * (k + n_frames - 1) for k in objects)
    one = object_prompts(1, w, h)
    with Progress(total, "bench", enabled=show_progress) as bar:
        # 1. cold first frame + warm-up, one target after the other (RSS added by each)
        for t in targets:
            gc.collect()
            r0 = rss_bytes()
            t.tracker.reset()
            t.cold_first_ms = _prompt_frame(t, frame(0), one)["total"]
            bar.update(1, t.label)
            for i in range(1, warmup + 1):
                t.call(lambda i=i: t.tracker.track(frame(i)))
                bar.update(1, t.label)
            r1 = rss_bytes()
            t.rss_added = None if (r0 is None or r1 is None) else r1 - r0 + t.extra.pop("rss_load", 0)
        # 2. first-frame (prompt) latency, interleaved
        for r in range(prompt_repeats):
            for t in _rotate(targets, r):
                t.tracker.reset()
                t.prompt_samples.append(_prompt_frame(t, frame(r), one))
                bar.update(1, t.label)
        # 3. streaming, interleaved frame by frame, for each object count
        for k in objects:
            prompts = object_prompts(k, w, h)
            per: Dict[str, dict] = {}
            for t in targets:
                t.tracker.reset()
                per[t.label] = {"first": None, "frames": []}
            for t in targets:
                per[t.label]["first"] = _prompt_frame(t, frame(0), prompts)
                bar.update(k, f"{t.label} {k} obj")
            gc.collect()
            for i in range(1, n_frames):
                for t in _rotate(targets, i):
                    res = t.call(lambda i=i: t.tracker.track(frame(i)))
                    if i >= steady_from:
                        per[t.label]["frames"].append(_timings(res))
                    bar.update(1, f"{t.label} {k} obj frame {i}")
            for t in targets:
                fr = per[t.label]["frames"]
                totals = [f["total"] for f in fr]
                t.runs[k] = {
                    "objects": k,
                    "frames_measured": len(fr),
                    "prompt_frame_ms": per[t.label]["first"]["total"],  # all k objects prompted on frame 0
                    "stages_ms": {s: stats([f[s] for f in fr]) for s in ROWS},
                    "fps": 1000.0 * len(totals) / sum(totals) if totals and sum(totals) > 0 else None,
                    "tracker_memory_bytes": int(t.tracker.memory_bytes),
                }
    return {"steady_from_frame": steady_from}


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b) or b <= 0:
        return None
    return a / b


def report(targets: List[Target], config: dict, notes: List[str], machine: dict, elapsed: float) -> dict:
    first = targets[0]
    out_targets = []
    for t in targets:
        runs = {}
        for k, run in t.runs.items():
            f = first.runs[k]
            run = dict(run)
            run["vs_first"] = {
                "fps": _ratio(run["fps"], f["fps"]),
                "speedup": {s: _ratio(f["stages_ms"][s]["median"], run["stages_ms"][s]["median"]) for s in ROWS},
            }
            runs[str(k)] = run
        ff = {s: stats([p[s] for p in t.prompt_samples]) for s in ROWS}
        out_targets.append({
            "label": t.label,
            "backend": t.backend,
            "describe": t.extra.get("describe", t.backend),
            "source": t.source,
            "variant": t.variant,
            "image_size": t.image_size,
            "precision": t.precision,
            "threads": t.threads_seen,  # None: the runtime schedules its own (Core ML)
            "threads_requested": t.threads,
            "model_bytes": t.model_bytes,
            "model_bytes_kind": t.model_bytes_kind,
            "checkpoint_bytes": t.extra.get("checkpoint_bytes"),
            "bundle": t.extra.get("bundle"),
            "rss_added_bytes": t.rss_added,
            "first_frame_cold_ms": t.cold_first_ms,
            "first_frame_ms": ff["total"],
            "first_frame_stages_ms": ff,
            "first_frame_vs_first": _ratio(first_ff_median(first), ff["total"]["median"]),
            "runs": runs,
        })
    return _round({
        "schema": SCHEMA,
        "config": config,
        "machine": machine,
        "notes": notes,
        "peak_rss_bytes": peak_rss_bytes(),
        "elapsed_s": elapsed,
        "targets": out_targets,
    })


def first_ff_median(t: Target) -> Optional[float]:
    xs = [p["total"] for p in t.prompt_samples]
    return float(np.median(xs)) if xs else None


def format_table(rep: dict) -> str:
    c = rep["config"]
    m = rep["machine"]
    lines = []
    lo = m.get("load_average_start"), m.get("load_average_end")
    looped = ", looped" if c["frames"] > c["clip_frames_used"] else ""
    lines.append(f"sam2-edge bench  {c['variant']} @ {c['image_size']}  clip {Path(c['source']).name} "
                 f"({c['clip_size'][0]}x{c['clip_size'][1]}, {c['clip_frames_used']} frames used{looped})")
    lines.append(f"machine  {m['board'] or m['cpu']}, {m['logical_cpus']} logical CPUs, {m['platform']}; "
                 f"load average (1/5/15 min) start {lo[0]} end {lo[1]}")
    lines.append(f"protocol {c['frames']} frames per run, measured from frame {c['steady_from_frame']} on "
                 f"(memory full): {c['frames'] - c['steady_from_frame']} frames; warm-up {c['warmup']}; "
                 f"targets interleaved frame by frame; ratios vs {rep['targets'][0]['label']}")
    for note in rep["notes"]:
        lines.append(f"note     {note}")
    w = max(12, max(len(t["label"]) for t in rep["targets"]))
    for k in c["objects"]:
        lines.append("")
        lines.append(f"{k} object{'s' if k > 1 else ''}: ms per frame, median/p90, stages summed over the objects; "
                     f"fps end to end; 'vs first' = fps / fps of the first target")
        lines.append(f"{'target':<{w}} {'thr':>3}" + "".join(f"  {_SHORT[s]:>13}" for s in ROWS)
                     + f"  {'fps':>7}  {'vs first':>8}")
        for t in rep["targets"]:
            run = t["runs"][str(k)]
            st = run["stages_ms"]
            cells = "".join(f"  {_fmt_ms(st[s]['median']) + '/' + _fmt_ms(st[s]['p90']):>13}" for s in ROWS)
            fps, vs = run["fps"], run["vs_first"]["fps"]
            thr = "-" if t["threads"] is None else t["threads"]
            lines.append(f"{t['label']:<{w}} {thr:>3}" + cells
                         + f"  {'-' if fps is None else f'{fps:.3g}':>7}  {'-' if vs is None else f'x{vs:.2f}':>8}")
    lines.append("")
    fps_heads = "".join(f"  {f'fps {k} obj':>10}" for k in c["objects"])
    lines.append(f"{'target':<{w}} {'first frame ms med/p90':>22}  {'cold':>7}{fps_heads}  {'model size':>11}  "
                 f"{'rss added':>10}  backend")
    for t in rep["targets"]:
        ff = t["first_frame_ms"]
        fps_cells = "".join(f"  {t['runs'][str(k)]['fps'] or float('nan'):>10.3g}" for k in c["objects"])
        kind = "params" if t["model_bytes_kind"] == "parameters" else "files"
        lines.append(f"{t['label']:<{w}} {_fmt_ms(ff['median']) + ' / ' + _fmt_ms(ff['p90']):>22}  "
                     f"{_fmt_ms(t['first_frame_cold_ms']):>7}{fps_cells}  "
                     f"{_fmt_bytes(t['model_bytes']) + ' ' + kind:>11}  {_fmt_bytes(t['rss_added_bytes']):>10}  "
                     f"{t['describe']} {t['precision']}")
    lines.append(f"peak resident memory of the process (all targets loaded together): "
                 f"{_fmt_bytes(rep['peak_rss_bytes'])}; run a single target for its own peak")
    lines.append(f"elapsed {rep['elapsed_s']:.0f} s")
    return "\n".join(lines)


def check_plot_available() -> None:
    if not _has("matplotlib"):
        raise BackendUnavailableError("--plot needs matplotlib, which is not installed: pip install matplotlib "
                                      "(or leave --plot out; --json has every number)")


def plot(rep: dict, path: str) -> None:
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = rep["config"]
    targets = rep["targets"]
    labels = [t["label"] for t in targets]
    k0 = c["objects"][0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.8 * len(targets) + 3.2), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(targets))
    left = np.zeros(len(targets))
    for s in STAGE_NAMES + ("pre_post",):
        vals = np.array([t["runs"][str(k0)]["stages_ms"][s]["median"] or 0.0 for t in targets])
        ax1.barh(y, vals, left=left, label=s.replace("pre_post", "pre/post"))
        left += vals
    ax1.set_yticks(y, labels)
    ax1.invert_yaxis()
    ax1.set_xlabel(f"ms per frame, median ({k0} object{'s' if k0 > 1 else ''}, memory full)")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=5, frameon=False)
    width = 0.8 / len(c["objects"])
    for j, k in enumerate(c["objects"]):
        vals = [t["runs"][str(k)]["fps"] or 0.0 for t in targets]
        ax2.barh(y + (j - (len(c["objects"]) - 1) / 2) * width, vals, height=width, label=f"{k} obj")
    ax2.set_xlabel("frames per second, end to end")
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(c["objects"]), frameon=False)
    m = rep["machine"]
    fig.suptitle(f"sam2-edge bench: {c['variant']} @ {c['image_size']} on {m['board'] or m['cpu']} "
                 f"({m['logical_cpus']} CPUs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------- command line
def bench(a: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    if a.plot:
        check_plot_available()
    if a.frames <= STEADY_FROM_DEFAULT:
        raise InputError(f"--frames must be > {STEADY_FROM_DEFAULT}: the objects' memory is full from frame "
                         f"{STEADY_FROM_DEFAULT} on, and only those frames are measured")
    if a.warmup < 0 or a.prompt_repeats < 1:
        raise InputError("--warmup must be >= 0 and --prompt-repeats >= 1")
    objects = _int_list(a.objects, "--objects")
    # a repeated count is kept: `--threads 2,2` runs every target twice (an A/A run shows the noise floor)
    torch_target = not (a.bundle and a.backends is None and not (a.checkpoint or a.variant))
    threads = _int_list(a.threads, "--threads", unique=False) if a.threads else [default_threads(torch_target)]
    if a.image_size is not None and (a.image_size % 32 or a.image_size < 64):
        raise InputError(f"--image-size must be a multiple of 32 and >= 64, got {a.image_size}")
    for d in a.bundle or []:
        if not Path(d).is_dir():
            raise InputError(f"--bundle {d!r} is not a folder")
    frames, source = load_frames(a.source, max(a.frames, a.warmup + 1, a.prompt_repeats))
    notes: List[str] = []
    load_start = load_average()
    cpus = os.cpu_count() or 1
    if load_start and load_start[0] > 0.75 * cpus:
        notes.append(f"the machine was busy at the start (1-min load average {load_start[0]} on {cpus} logical CPUs): "
                     "timings include waiting for the CPU. torch's OpenMP threads spin-wait for each other and "
                     "slow down by up to 100x when a core is taken: set OMP_WAIT_POLICY=PASSIVE (before starting) "
                     "or use --threads 1 on a shared machine")
    plan = _Plan(a, threads, notes)
    try:
        targets = build_targets(a, plan, notes)
        if plan.random_weights and any(t.source.find("random weights") >= 0 for t in targets):
            notes.insert(0, RANDOM_WEIGHTS_NOTE)
        print("bench: " + ", ".join(f"{t.label} ({t.extra.get('describe')})" for t in targets)
              + f"; {len(objects)} run(s) of {a.frames} frames", file=sys.stderr, flush=True)
        extra = run_bench(targets, frames, objects, a.frames, a.warmup, a.prompt_repeats,
                          False if a.no_progress else None)
        machine = machine_info()
        machine["load_average_start"] = load_start
        machine["load_average_end"] = load_average()
        t0 = targets[0]
        config = {
            "variant": t0.variant,
            "image_size": t0.image_size,
            "source": source,
            "clip_frames_used": len(frames),
            "clip_size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
            "frames": a.frames,
            "warmup": a.warmup,
            "prompt_repeats": a.prompt_repeats,
            "objects": objects,
            "threads": threads,
            "random_weights": plan.random_weights and not a.bundle,
            "steady_from_frame": extra["steady_from_frame"],
            "interleaved": True,
        }
        return report(targets, config, notes, machine, time.perf_counter() - t_start)
    finally:
        plan.cleanup()


@subcommand("bench")
def _bench(p: argparse.ArgumentParser):
    p.description = ("Benchmark the streaming tracker on this device: per-stage latency (median, p90), "
                     "first-frame latency, end-to-end FPS with full memory for 1 and 3 objects, resident "
                     "memory, model size, threads. Several backends / bundles run interleaved frame by frame "
                     "with ratios against the first. With no arguments: sam2.1-hiera-tiny with random "
                     "weights on the shipped sample clip, on every installed backend.")
    p.add_argument("--bundle", action="append", metavar="DIR", help="an exported bundle to benchmark (repeatable)")
    p.add_argument("--bundle-backend", default=None, help="backend for --bundle (default: the bundle's format)")
    p.add_argument("--variant", default=None,
                   help=f"model variant; without --checkpoint: random weights of it (default {DEFAULT_VARIANT})")
    p.add_argument("--checkpoint", default=None, help="official .pt checkpoint (torch; exported for other backends)")
    p.add_argument("--backends", default=None, metavar="LIST",
                   help="comma list of torch, onnx, executorch, coreml, all (onnx / executorch / coreml export a "
                        "temporary bundle). Default: torch with --checkpoint / --variant, every installed backend "
                        "without arguments, none with only --bundle")
    p.add_argument("--image-size", type=int, default=None, help="model input side (default: the variant's, 1024)")
    p.add_argument("--objects", default="1,3", metavar="K[,K]", help="object counts to stream (default 1,3)")
    p.add_argument("--frames", type=int, default=16,
                   help="frames per streaming run incl. the prompt frame; frames 8.. are measured (default 16)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up frames per target (default 2)")
    p.add_argument("--prompt-repeats", type=int, default=3, help="first-frame latency samples (default 3)")
    p.add_argument("--threads", default=None, metavar="T[,T]",
                   help="intra-op threads (torch.set_num_threads / ORT intra_op_num_threads / XNNPACK pool); "
                        "a list runs every target at each count. Default: torch's default (physical cores)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, mps; default cpu)")
    p.add_argument("--ort-providers", default=None, help="ONNX Runtime providers, e.g. cuda or tensorrt,cuda")
    p.add_argument("--source", default=None, help="video file or frames folder (default: the shipped sample clip)")
    p.add_argument("--export-dir", default=None, help="keep the bundles exported for --backends here")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON ('-': to stdout)")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="bar chart (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(a: argparse.Namespace) -> int:
        rep = bench(a)
        if a.json == "-":
            print(json.dumps(rep, indent=1))
        else:
            print(format_table(rep))
            if a.json:
                Path(a.json).parent.mkdir(parents=True, exist_ok=True)
                Path(a.json).write_text(json.dumps(rep, indent=1))
                print(f"wrote {a.json}")
        if a.plot:
            plot(rep, a.plot)
            print(f"wrote {a.plot}", file=sys.stderr if a.json == "-" else sys.stdout)
        return 0
    return run
