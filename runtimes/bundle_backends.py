"""Open an exported bundle with the backend that runs its format.

numpy only at import; the runtime package (onnxruntime, executorch, coremltools) is
imported when the backend is built, and a missing one raises BackendUnavailableError
naming the extra to install.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Dict, Optional, Tuple

from ..contract import BACKENDS, FORMATS, Manifest, load_manifest, resolve_backend
from ..errors import BackendUnavailableError, BundleError, ConfigError, InputError
from .backends.base import Backend

# the class under runtimes.backends that implements each bundle backend of the contract's registry
_CLASSES: Dict[str, Tuple[str, str]] = {
    "onnxruntime": ("onnxruntime_backend", "OnnxRuntimeBackend"),
    "executorch": ("executorch_backend", "ExecuTorchBackend"),
    "coreml": ("coreml_backend", "CoreMLBackend"),
}
_RUNTIME_PACKAGES = {m for b in BACKENDS.values() for m in b.modules}


def backend_name(manifest: Manifest, backend: Optional[str]) -> str:
    """The backend that will run `manifest`'s graphs (given name checked against the format)."""
    default = FORMATS[manifest.format].backend
    if backend is None:
        return default
    try:
        name = resolve_backend(backend)
    except ConfigError:
        raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(_CLASSES)}") from None
    if name == "torch":
        raise InputError("the torch backend runs a checkpoint, not a bundle: use Tracker.from_checkpoint(...)")
    fmt = BACKENDS[name].format
    if fmt != manifest.format:
        raise InputError(f"backend {name!r} runs {fmt} bundles, but {manifest.root} is a {manifest.format} bundle; "
                         f"use backend={default!r} (or leave it out), or export a {fmt} "
                         "bundle (sam2-edge export --format " + str(fmt) + ")")
    return name


def _backend_class(name: str):
    module, cls = _CLASSES[name]
    extra = BACKENDS[name].extra
    full = f"{__package__}.backends.{module}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            raise BackendUnavailableError(f"this sam2-edge has no {name} backend ({full} is missing); "
                                          "upgrade sam2-edge") from None
        root = (e.name or "").split(".")[0]
        if root in _RUNTIME_PACKAGES or root == "torch":
            raise BackendUnavailableError(f"the {name} backend needs {root!r}: pip install 'sam2-edge[{extra}]'") \
                from None
        raise
    return getattr(mod, cls), extra


def backend_options(name: str) -> frozenset:
    """Names of the options (keyword arguments of `open_bundle`) that backend `name` takes,
    read from its constructor; BackendUnavailableError when its runtime is not installed."""
    cls, _ = _backend_class(resolve_backend(name))
    params = inspect.signature(cls.__init__).parameters.values()
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)) - {
        "self", "spec", "stage_files"}


def open_bundle(bundle_dir, backend: Optional[str] = None, **options) -> Backend:
    """Validate the bundle (manifest, paths, hashes, shapes; BundleError on any problem),
    then build the backend for its format (or the named one) with `options`
    (onnxruntime: providers=..., threads=...)."""
    manifest = load_manifest(bundle_dir)
    name = backend_name(manifest, backend)
    cls, extra = _backend_class(name)
    try:
        be = cls(manifest.spec, manifest.stage_files, **options)
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root in _RUNTIME_PACKAGES:
            raise BackendUnavailableError(f"the {name} backend needs {root!r}: pip install 'sam2-edge[{extra}]'") \
                from None
        raise
    except TypeError as e:
        if options and "argument" in str(e):
            raise InputError(f"backend {name!r} does not take options {sorted(options)}: {e}") from None
        raise
    be.manifest = manifest  # type: ignore[attr-defined]  # for describe() / apps showing the bundle's origin
    return be


__all__ = ["open_bundle", "backend_name", "backend_options", "BundleError"]
