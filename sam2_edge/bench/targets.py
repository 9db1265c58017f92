"""What `sam2-edge bench` runs: a Target is one backend running one model at one thread
count. The Plan builds them from the command line: the torch model (a checkpoint or random
weights), bundles exported for the other backends (in a child process), the bundles given.

Backends, their formats and what they need come from `sam2_edge.contract`; nothing here is
imported from torch / onnxruntime / executorch until a target of that backend is built."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..contract import BACKENDS, backend_unavailable, resolve_backend
from ..errors import BackendUnavailableError, ConfigError, InputError, Sam2EdgeError
from ..sysinfo import rss_bytes

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "sam2.1-hiera-tiny"
ThreadHooks = Tuple[Callable[[], None], Callable[[], Optional[int]]]


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


def parse_backends(text: Optional[str]) -> List[str]:
    """Canonical backend names of a comma list (aliases accepted, 'all': every backend)."""
    if text is None:
        return []
    out: List[str] = []
    for raw in str(text).split(","):
        b = raw.strip().lower()
        if not b:
            continue
        if b == "all":
            out.extend(n for n in BACKENDS if n not in out)
            continue
        try:
            b = resolve_backend(b)
        except ConfigError:
            raise InputError(f"unknown backend {raw.strip()!r}; choose from {', '.join(BACKENDS)}, all") from None
        if b not in out:
            out.append(b)
    return out


def backend_takes_threads(name: str) -> bool:
    """Whether runtime backend `name` takes a `threads` option (its constructor says so).
    True when its runtime is not installed: opening the bundle reports that."""
    from ..errors import BackendUnavailableError
    from ..runtimes.bundle_backends import backend_options

    try:
        return "threads" in backend_options(name)
    except BackendUnavailableError:
        return True


def _torch_threads(n: int) -> ThreadHooks:
    import torch

    def activate() -> None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    return activate, lambda: int(torch.get_num_threads())


def _executorch_threads(n: int) -> ThreadHooks:
    """ExecuTorch's XNNPACK threadpool is process-global: resize it before each call when needed."""
    from ..runtimes.backends.executorch_backend import set_threadpool_size, threadpool_size

    def activate() -> None:
        size = threadpool_size()
        if size is not None and size != n:
            set_threadpool_size(n)

    return activate, threadpool_size


def _param_bytes(model) -> int:
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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
    log.info("bench: exporting a %s bundle of %s at S=%s (minutes for a full-size model) ...", fmt,
             variant or checkpoint, image_size or "default")
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
    log.info("bench: %s bundle exported in %.0f s", fmt, time.perf_counter() - t0)
    return out


class Plan:
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
        self._noted_own_scheduling = False

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
            from ..checkpoint import build_sam2, load_checkpoint

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

    def source(self) -> str:
        return f"random weights {self.variant}" if self.random_weights else str(self._checkpoint)

    def torch_targets(self) -> List[Target]:
        import torch

        from ..runtimes import Tracker
        from ..runtimes.backends.torch_backend import TorchBackend

        model = self.model()
        out = []
        for n in self.threads:
            activate, used = _torch_threads(n)
            activate()
            be = TorchBackend(model, self.a.device)
            dtype = str(next(model.parameters()).dtype).replace("torch.", "")
            out.append(Target(label="torch", backend="torch", source=self.source(), threads=n,
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
        fmt = BACKENDS[backend].format
        ckpt = self.checkpoint()
        base = Path(self.a.export_dir) if self.a.export_dir else self.workdir()
        size = self.a.image_size
        if size is None and self.variant:
            from ..configs import get_config

            size = get_config(self.variant).image_size
        name = f"{(self.variant or Path(ckpt).stem).replace('.', '_')}-{size or 'default'}-{fmt}"
        return export_bundle_subprocess(ckpt, self.variant, fmt, size, base / name, not self.a.no_progress)

    def bundle_targets(self, bundle: Path, backend: Optional[str], source: Optional[str] = None) -> List[Target]:
        from ..contract import load_manifest
        from ..runtimes import Tracker
        from ..runtimes.bundle_backends import backend_name

        manifest = load_manifest(bundle, verify_hashes=False)  # opening the bundle verifies it
        name = backend_name(manifest, backend)
        precision = str(getattr(manifest.precision, "value", manifest.precision))  # "fp32", not an enum
        takes_threads = backend_takes_threads(name)
        if name == "onnxruntime" and not takes_threads:
            self.notes.append(f"{name} takes no thread count: it ran with its runtime's default")
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
                activate, used = _executorch_threads(n)
            elif not self._noted_own_scheduling:
                self._noted_own_scheduling = True
                self.notes.append(f"{name}: Core ML schedules its own CPU / GPU / Neural Engine work; "
                                  "--threads does not apply")
            if not takes_threads:  # a backend without a threads option: the runtime's pool is set instead
                options.pop("threads", None)
            # a bundle this run exported itself is trusted; one the user names gets the default policy
            # (an isolated smoke run unless it is signed)
            own = {"isolate": False} if source is not None else {}
            tracker = Tracker.from_bundle(str(bundle), name, **options, **own)
            if name == "onnxruntime":
                used = (lambda n=n: n)
            be = tracker.backend
            out.append(Target(label=name, backend=name, source=source or str(bundle), threads=n, tracker=tracker,
                              model_bytes=_dir_bytes(Path(bundle)), model_bytes_kind="bundle files",
                              image_size=manifest.spec.image_size, precision=precision,
                              variant=manifest.variant, activate=activate, threads_used=used,
                              extra={"describe": be.describe(), "bundle": str(bundle), "format": manifest.format,
                                     "exported": source is not None}))
        return out


def _unique_labels(targets: List[Target], several_threads: bool) -> None:
    for t in targets:
        if t.backend != "torch" and t.extra.get("bundle") and not t.extra.get("exported"):
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


def build_targets(a: argparse.Namespace, plan: Plan, notes: List[str]) -> List[Target]:
    explicit = a.backends is not None
    if explicit:
        backends = parse_backends(a.backends)
    elif a.bundle:
        backends = ["torch"] if (a.checkpoint or a.variant) else []
    elif a.checkpoint or a.variant:
        backends = ["torch"]
    else:
        backends = list(BACKENDS)  # the no-argument default: every installed backend
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
        why = backend_unavailable(b, export=b != "torch")
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
            add(lambda: plan.bundle_targets(bundle, b,  # noqa: B023 - add() calls it at once
                                            source=f"exported from {plan.source()}"))
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
