"""Open an exported bundle with the backend that runs its format.

numpy only at import; the runtime package (onnxruntime, executorch, coremltools) is
imported when the backend is built, and a missing one raises BackendUnavailableError
naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Dict, Optional, Tuple

from ..errors import BackendUnavailableError, BundleError, InputError
from .backends.base import Backend
from .bundle import Manifest, load_manifest

# backend name -> (module under runtimes.backends, class, bundle format it runs, pip extra)
BACKENDS: Dict[str, Tuple[str, str, str, str]] = {
    "onnxruntime": ("onnxruntime_backend", "OnnxRuntimeBackend", "onnx", "onnx"),
    "executorch": ("executorch_backend", "ExecuTorchBackend", "executorch", "executorch"),
    "coreml": ("coreml_backend", "CoreMLBackend", "coreml", "coreml"),
}
DEFAULT_BACKEND = {fmt: name for name, (_, _, fmt, _) in BACKENDS.items()}  # format -> backend
_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "et": "executorch", "pte": "executorch",
            "coremltools": "coreml", "mlpackage": "coreml"}
_RUNTIME_PACKAGES = {"onnxruntime", "executorch", "coremltools"}


def backend_name(manifest: Manifest, backend: Optional[str]) -> str:
    """The backend that will run `manifest`'s graphs (given name checked against the format)."""
    if backend is None:
        return DEFAULT_BACKEND[manifest.format]
    if not isinstance(backend, str):
        raise InputError(f"backend must be a name ({', '.join(BACKENDS)}), got {backend!r}")
    name = _ALIASES.get(backend.lower(), backend.lower())
    if name == "torch":
        raise InputError("the torch backend runs a checkpoint, not a bundle: use Tracker.from_checkpoint(...)")
    if name not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    fmt = BACKENDS[name][2]
    if fmt != manifest.format:
        raise InputError(f"backend {name!r} runs {fmt} bundles, but {manifest.root} is a {manifest.format} bundle; "
                         f"use backend={DEFAULT_BACKEND[manifest.format]!r} (or leave it out), or export a {fmt} "
                         "bundle (sam2-edge export --format " + fmt + ")")
    return name


def _backend_class(name: str):
    module, cls, _, extra = BACKENDS[name]
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


__all__ = ["open_bundle", "backend_name", "BACKENDS", "DEFAULT_BACKEND", "BundleError"]
