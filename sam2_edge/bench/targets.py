"""What `sam2-edge bench` runs: a Target is one backend running one model at one thread
count. The Plan builds them from the command line: the torch model (a checkpoint or random
weights), bundles exported for the other backends (in a child process), the bundles given.

Backends, their formats and what they need come from `sam2_edge.contract`; nothing here is
imported from torch / onnxruntime / executorch until a target of that backend is built."""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

from ..contract import BACKENDS, backend_unavailable, resolve_backend
from ..errors import BackendUnavailableError, ConfigError, InputError, Sam2EdgeError
from ..quiet import is_verbose, quiet
from ..sysinfo import rss_bytes

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "sam2.1-hiera-tiny"
RANDOM_SEED = 0  # the random weights of a run without --checkpoint: torch.manual_seed(RANDOM_SEED)
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
    return parse_backends_named(text)[0]


def parse_backends_named(text: Optional[str]) -> Tuple[List[str], Set[str]]:
    """(canonical backend names of a comma list, the ones named explicitly). 'all' adds every
    backend without naming it: those that cannot run here are skipped, a named one that cannot
    is an error."""
    if text is None:
        return [], set()
    out: List[str] = []
    named: Set[str] = set()
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
        named.add(b)
        if b not in out:
            out.append(b)
    return out, named


def default_export_dir() -> Path:
    """Where `sam2-edge bench` caches the bundles it exports: $XDG_CACHE_HOME/sam2-edge/bundles
    (~/.cache/sam2-edge/bundles; %LOCALAPPDATA%\\sam2-edge\\bundles on Windows)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base and sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
    if not base:
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sam2-edge" / "bundles"


def bundle_cache_name(variant: str, image_size: Optional[int], fmt: str, weights_key: str,
                      obj_batches: Tuple[int, ...] = (1,)) -> str:
    """`<variant>-<size>-<format>-<12 hex>`: the hash covers the weights (a checkpoint's sha256, or
    the random-weights seed), the format, the object batches, the sam2-edge version and the
    exporters' graphs revision, so a cached bundle is reused only for the same model, size, format
    and graphs."""
    from .. import __version__
    from ..export.bundle import GRAPHS_REVISION

    batches = "" if tuple(obj_batches) == (1,) else f"|obj_batches {list(obj_batches)}"
    h = hashlib.sha256(f"{weights_key}|{variant}|{image_size}|{fmt}{batches}|sam2-edge {__version__}"
                       f"|graphs {GRAPHS_REVISION}".encode()).hexdigest()
    return f"{variant}-{image_size or 'default'}-{fmt}-{h[:12]}"


def check_cached_bundle(path: Path, fmt: str, variant: Optional[str], image_size: Optional[int],
                        checkpoint_sha256: Optional[str], obj_batches: Tuple[int, ...] = (1,)) -> Optional[str]:
    """None when `path` holds a complete, valid bundle of this model (every file hashed against
    the manifest by `sam2_edge.contract.load_manifest`); else why it cannot be reused."""
    from ..contract import load_manifest

    if not path.exists():
        return "not exported yet"
    try:
        m = load_manifest(path)
    except Sam2EdgeError as e:
        return f"the cached bundle is not valid ({e})"
    if m.format != fmt:
        return f"the cached bundle is {m.format}, not {fmt}"
    if variant and m.variant != variant:
        return f"the cached bundle is {m.variant}, not {variant}"
    if image_size and m.spec.image_size != image_size:
        return f"the cached bundle runs at {m.spec.image_size}, not {image_size}"
    if checkpoint_sha256 and m.checkpoint_sha256 != checkpoint_sha256:
        return "the cached bundle was exported from another checkpoint"
    if m.spec.obj_batches != tuple(obj_batches):
        return f"the cached bundle has graphs for object batches {list(m.spec.obj_batches)}, not {list(obj_batches)}"
    from ..export.bundle import GRAPHS_REVISION

    if m.exporter.get("graphs_revision") != GRAPHS_REVISION:
        return "the cached bundle was exported by an older sam2-edge (its graphs differ)"
    return None


def bench_obj_batches(objects) -> Tuple[int, ...]:
    """The object batches bench exports graphs for: 1 and every object count it streams (so K
    objects run in one call per stage, as the torch backend does)."""
    from ..contract.spec import MAX_OBJ_BATCH

    return tuple(sorted({1} | {min(int(k), MAX_OBJ_BATCH) for k in objects}))


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


# the child's lines shown to the user: sam2-edge's own log lines and its error line (library noise,
# C++ logging and the export's summary are dropped; `-v` shows everything)
HEARTBEAT_S = 30.0
_SHOWN = re.compile(r"^(?:(?:INFO|WARNING|ERROR|CRITICAL) sam2_edge|sam2-edge export: )")


def export_bundle_subprocess(checkpoint: str, variant: Optional[str], fmt: str, image_size: Optional[int], out: Path,
                             progress: bool, obj_batches: Tuple[int, ...] = (1,)) -> Path:
    """Export a bundle in a child process (keeps the exporter's memory out of this process's
    peak RSS). Of its output only sam2-edge's own log lines are passed on (all with -v); the
    last lines are kept for the error message if it fails."""
    verbose = is_verbose()
    cmd = [sys.executable, "-c", "import sys; from sam2_edge.cli import main; sys.exit(main(sys.argv[1:]))"]
    if verbose:
        cmd.append("-v")
    cmd += ["export", "--checkpoint", checkpoint, "--format", fmt, "--out", str(out)]
    if variant:
        cmd += ["--variant", variant]
    if image_size:
        cmd += ["--image-size", str(image_size)]
    if tuple(obj_batches) != (1,):
        cmd += ["--obj-batches", ",".join(map(str, obj_batches))]
    if not progress:
        cmd.append("--no-progress")
    log.info("bench: exporting a %s bundle of %s at S=%s to %s (about a minute at 512 on a small CPU, several "
             "at 1024) ...", fmt, variant or checkpoint, image_size or "default", out)
    t0 = time.perf_counter()
    tail: collections.deque = collections.deque(maxlen=40)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            bufsize=1)
    last_shown = [time.perf_counter()]
    done = threading.Event()

    def heartbeat() -> None:  # a stage can take minutes: never silent for longer than HEARTBEAT_S
        while not done.wait(5.0):
            if progress and time.perf_counter() - last_shown[0] >= HEARTBEAT_S:
                last_shown[0] = time.perf_counter()
                log.info("bench: still exporting the %s bundle (%.0f s so far)", fmt, time.perf_counter() - t0)

    beat = threading.Thread(target=heartbeat, name="export-heartbeat", daemon=True)
    beat.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if verbose or _SHOWN.match(line):
                last_shown[0] = time.perf_counter()
                sys.stderr.write(line)
                sys.stderr.flush()
        rc = proc.wait()
    except BaseException:  # Ctrl-C (the child may not have got it: a signal to this process only)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        done.set()
        if proc.stdout is not None:
            proc.stdout.close()
    if rc != 0:
        shown = [ln for ln in tail if ln.strip()][-12:]
        raise Sam2EdgeError(f"exporting the {fmt} bundle failed (exit code {rc}; the same as "
                            f"`sam2-edge {' '.join(cmd[3:])}`){': ' + ' | '.join(shown) if shown else ''}")
    log.info("bench: %s bundle exported in %.0f s (cached for the next run)", fmt, time.perf_counter() - t0)
    return out


@contextlib.contextmanager
def _muted(logger: str, on: bool):
    lg = logging.getLogger(logger)
    old = lg.level
    if on:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


class Plan:
    """Builds the targets a command line asks for."""

    def __init__(self, a: argparse.Namespace, threads: List[int], notes: List[str],
                 checkpoint: Optional[str] = None) -> None:
        self.a = a
        self.threads = threads
        self.notes = notes
        self.tmp: Optional[tempfile.TemporaryDirectory] = None
        self._model = None
        self.given_checkpoint = checkpoint  # one --checkpoint (a Plan each); None: random weights
        self._checkpoint: Optional[str] = checkpoint  # or the random weights saved for an exporter
        self.random_weights = checkpoint is None
        self.variant: Optional[str] = a.variant
        self._noted_own_scheduling = False
        self.skipped: List[Dict[str, str]] = []  # backends that did not run here, and why
        self.exports: Dict[str, dict] = {}  # format -> {"bundle", "cached", "seconds"}
        self._checkpoint_sha: Optional[str] = None

    @property
    def objects(self) -> List[int]:
        """The object counts streamed (--objects, checked by the command line before the plan)."""
        return [int(x) for x in str(self.a.objects or 1).split(",") if x.strip()]

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

                torch.manual_seed(RANDOM_SEED)
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
        dtypes = getattr(self.a, "dtypes", None) or ["fp32"]  # one row per dtype and thread count
        for dtype, n in [(d, n) for d in dtypes for n in self.threads]:
            activate, used = _torch_threads(n)
            activate()
            be = TorchBackend(model, self.a.device, dtype=dtype)
            out.append(Target(label="torch" if dtype == "fp32" else f"torch {dtype}", backend="torch",
                              source=self.source(), threads=n,
                              tracker=Tracker(be), model_bytes=_param_bytes(model),
                              model_bytes_kind="parameters", image_size=model.cfg.image_size,
                              precision=dtype,
                              variant=model.cfg.name, activate=activate, threads_used=used,
                              extra={"describe": f"torch {torch.__version__} eager ({self.a.device}, {dtype})",
                                     "device": self.a.device,
                                     "checkpoint_bytes": (os.path.getsize(self._checkpoint)
                                                          if not self.random_weights else None)}))
        return out

    def export_dir(self) -> Path:
        return Path(self.a.export_dir) if self.a.export_dir else default_export_dir()

    def export_bundle(self, backend: str) -> Path:
        """The `backend`'s bundle of this model: reused from the export folder (the user cache by
        default) when a valid one is there, else exported into it (and kept for the next run)."""
        from ..contract import sha256_file

        fmt = BACKENDS[backend].format
        if self.variant is None and not self.random_weights:  # name the cache entry by the variant
            from ..checkpoint import match_variant, read_state_dict

            self.variant = match_variant(read_state_dict(str(self._checkpoint)))
        size = self.a.image_size
        if size is None and self.variant:
            from ..configs import get_config

            size = get_config(self.variant).image_size
        if self.random_weights:
            key, ckpt_sha = f"random weights, torch.manual_seed({RANDOM_SEED})", None
            label = self.variant or DEFAULT_VARIANT
        else:
            if self._checkpoint_sha is None:
                self._checkpoint_sha = sha256_file(str(self._checkpoint))
            key = ckpt_sha = self._checkpoint_sha
            label = self.variant or Path(str(self._checkpoint)).stem
        batches = bench_obj_batches(self.objects)
        path = self.export_dir() / bundle_cache_name(label, size, fmt, key, batches)
        why = check_cached_bundle(path, fmt, self.variant, size, ckpt_sha, batches)
        if why is None:
            log.info("bench: using the cached %s bundle %s (delete it to export again)", fmt, path)
            self.exports[fmt] = {"bundle": str(path), "cached": True, "export_seconds": None}
            return path
        if path.exists():
            log.info("bench: %s: %s; exporting it again", path, why)
        from ..outputs import check_writable_dir

        check_writable_dir(self.export_dir(), "--export-dir")
        t0 = time.perf_counter()
        ckpt = self.checkpoint()
        export_bundle_subprocess(ckpt, self.variant, fmt, size, path, not self.a.no_progress, batches)
        self.exports[fmt] = {"bundle": str(path), "cached": False,
                             "export_seconds": round(time.perf_counter() - t0, 1)}
        return path

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
            # runtimes print their own C++ logging when they load a graph; a bundle this run exported
            # itself needs no "not signed" warning
            with quiet(fd=True), _muted("sam2_edge.runtimes.bundle_backends", source is not None):
                tracker = Tracker.from_bundle(str(bundle), name, **options, **own)
            if name == "onnxruntime":
                used = (lambda n=n: n)
            be = tracker.backend
            out.append(Target(label=name, backend=name, source=source or str(bundle), threads=n, tracker=tracker,
                              model_bytes=_dir_bytes(Path(bundle)), model_bytes_kind="bundle files",
                              image_size=manifest.spec.image_size, precision=precision,
                              variant=manifest.variant, activate=activate, threads_used=used,
                              extra={"describe": be.describe(), "bundle": str(bundle), "format": manifest.format,
                                     "exported": source is not None,
                                     "bundle_cached": self.exports.get(manifest.format, {}).get("cached")
                                     if source is not None else None}))
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


def _tag_checkpoints(plans: List[Plan], per_plan: List[List[Target]]) -> None:
    """Several --checkpoint: each plan's rows are labelled with its variant (`torch [edgetam]`), or
    with the checkpoint's file name where two checkpoints are of one variant."""
    variants = [p.variant for p in plans]
    stems = [Path(str(p.given_checkpoint)).stem for p in plans]
    tags = variants if len(set(variants)) == len(variants) else stems
    for tag, rows in zip(tags, per_plan):
        for t in rows:
            t.label = f"{t.label} [{tag}]"


def build_targets(a: argparse.Namespace, plans: List[Plan], notes: List[str]) -> List[Target]:
    """The targets of the command line: every backend for each plan (one per --checkpoint, or one of
    random weights), then the --bundle folders. A backend named in --backends that cannot run here
    is an error; one that `all` (or the no-argument default) adds is skipped: `plans[0].skipped`
    and a note say which and why (once, whatever the number of checkpoints)."""
    named: Set[str] = set()
    if a.backends is not None:
        backends, named = parse_backends_named(a.backends)
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
        with quiet(fd=True):  # runtimes print native logging (cpuinfo, thread pools) when they load
            new = make()
        r1 = rss_bytes()
        for i, t in enumerate(new):
            t.extra["rss_load"] = (r1 - r0) if (i == 0 and r0 is not None and r1 is not None) else 0
        targets.extend(new)

    def skip(b: str, why: str) -> None:
        plans[0].skipped.append({"backend": b, "reason": why})
        notes.append(f"{b}: skipped ({why})")

    runnable = []
    for b in backends:
        why = backend_unavailable(b, export=b != "torch")
        if why is None:
            runnable.append(b)
        elif b in named:
            raise BackendUnavailableError(f"backend {b}: {why}")
        else:
            skip(b, why)
    per_plan: List[List[Target]] = []
    for plan in plans:
        start = len(targets)
        for b in runnable:
            if b == "torch":
                add(plan.torch_targets)
                continue
            try:
                bundle = plan.export_bundle(b)
                add(lambda: plan.bundle_targets(bundle, b,  # noqa: B023 - add() calls it at once
                                                source=f"exported from {plan.source()}"))
            except Sam2EdgeError as e:
                if b in named:
                    raise
                skip(b, str(e))
        per_plan.append(targets[start:])
    if len(plans) > 1:
        _tag_checkpoints(plans, per_plan)
    for d in a.bundle or []:
        add(lambda d=d: plans[0].bundle_targets(Path(d), a.bundle_backend))
    if not targets:
        raise BackendUnavailableError("no backend could run: " + "; ".join(notes) if notes else
                                      "nothing to benchmark")
    _unique_labels(targets, len(plans[0].threads) > 1)
    sizes = {t.image_size for t in targets}
    if len(sizes) > 1:
        notes.append(f"the targets run different image sizes {sorted(sizes)}: their ratios compare different work")
    note = heap_note(targets)
    if note:
        notes.append(note)
    return targets


def heap_note(targets: List[Target]) -> Optional[str]:
    """A torch row beside an ONNX bundle in low-memory mode: that mode fixed glibc's mmap threshold
    for the whole process (runtimes/backends/heap.py), so torch's large blocks are fresh mappings
    too -- measured on tiny @ 512: torch's image encoder 473 -> 526 ms (+11 %)."""
    from ..runtimes.backends import heap

    low = [t for t in targets if t.backend == "onnxruntime" and getattr(t.tracker.backend, "low_memory", False)]
    if not low or not any(t.backend == "torch" for t in targets) or heap.applied_threshold() is None:
        return None
    return (f"{low[0].label} runs in low-memory mode, which fixed glibc's mmap threshold at "
            f"{heap.applied_threshold() >> 20} MiB for this whole process: the torch rows ran with it too "
            "(measured: torch's tiny @ 512 image encoder +11 %); for torch's own speed, bench it in a run "
            "without ONNX float bundles")
