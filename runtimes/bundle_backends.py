"""Open an exported bundle with the backend that runs its format.

numpy only at import; the runtime package (onnxruntime, executorch, coremltools) is
imported when the backend is built, and a missing one raises BackendUnavailableError
naming the extra to install.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Dict, Optional, Sequence, Tuple

from ..contract import BACKENDS, FORMATS, Manifest, backend_unavailable, resolve_backend, sha256_bytes
from ..contract.bundle_dir import VerifiedBundle, read_bundle
from ..contract.signing import verify_manifest
from ..errors import BackendUnavailableError, BundleError, ConfigError, InputError
from .backends.base import Backend

log = logging.getLogger(__name__)

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
    return _options_of(cls)


def _options_of(cls) -> frozenset:
    params = list(inspect.signature(cls.__init__).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset({"*"})  # takes any keyword
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)) - {
        "self", "spec", "stage_files"}


def check_origin(bundle: VerifiedBundle, trusted_keys: Optional[Sequence] = None,
                 require_signature: bool = False) -> Optional[str]:
    """Who signed the bundle: the trusted key id, or None for an unsigned bundle that the
    policy allows (logged as a warning). BundleError when a signature is required but absent,
    or present but not made by a trusted key / not matching the manifest."""
    where = bundle.manifest.root
    if trusted_keys:
        if bundle.signature is None:
            raise BundleError(f"bundle {where} is not signed (no manifest.sig) but trusted keys were given; "
                              "ask its maker for a signed bundle (sam2-edge export --sign KEY)")
        return verify_manifest(bundle.manifest_bytes, bundle.signature, trusted_keys)
    if require_signature:
        raise ConfigError("require_signature needs trusted_keys: the public keys whose signatures you accept")
    log.warning("bundle %s is %s; loading it on integrity checks alone (pass trusted_keys / --trusted-key to "
                "require its maker's signature)", where,
                "signed, but no trusted key was given" if bundle.signature is not None else "not signed")
    return None


def open_bundle(bundle_dir, backend: Optional[str] = None, *, trusted_keys: Optional[Sequence] = None,
                require_signature: bool = False, isolate: Optional[bool] = None, **options) -> Backend:
    """Validate the bundle (manifest, paths, shapes), read every graph once into memory and
    check its sha256, check who signed it, then build the backend for its format (or the
    named one) from those bytes with `options` (onnxruntime: providers, threads; executorch:
    threads). BundleError on any problem.

    trusted_keys: public keys (PEM paths or bytes); when given, the bundle must carry a valid
    signature by one of them. isolate: load and smoke-run every graph in a child process
    first, so a graph that crashes the runtime becomes a BundleError here; default: on for
    bundles not signed by a trusted key."""
    bundle = read_bundle(bundle_dir)
    manifest = bundle.manifest
    name = backend_name(manifest, backend)
    cls, extra = _backend_class(name)
    takes = _options_of(cls)
    unknown = sorted(set(options) - takes) if "*" not in takes else []
    if unknown:
        raise InputError(f"backend {name!r} does not take options {unknown}; it takes {sorted(takes) or 'none'}")
    if "low_memory" in takes and "low_memory" not in options:
        # A backend's low-memory mode (ONNX Runtime: no arenas, freed blocks returned to the system)
        # is the default for float bundles only. Quantised graphs are a third of the weights, and
        # their many small quantise / dequantise tensors made every run re-map its buffers: tiny's
        # int8 image encoder @ 512 ran 1.6x slower that way (benchmarks/README.md).
        options = dict(options, low_memory=not manifest.precision.quantized)
    signer = check_origin(bundle, trusted_keys, require_signature)
    if isolate is None:
        isolate = signer is None
    if isolate:
        missing = backend_unavailable(name)  # say so here, not as a failed smoke run
        if missing:
            raise BackendUnavailableError(f"the {name} backend {missing}")
        from .smoke import smoke_in_child

        smoke_in_child(manifest.root, name, options, sha256_bytes(bundle.manifest_bytes))
    try:
        be = cls(manifest.spec, bundle.graphs, **options)
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root in _RUNTIME_PACKAGES:
            raise BackendUnavailableError(f"the {name} backend needs {root!r}: pip install 'sam2-edge[{extra}]'") \
                from None
        raise
    be.manifest = manifest  # type: ignore[attr-defined]  # for describe() / apps showing the bundle's origin
    be.signed_by = signer  # type: ignore[attr-defined]
    return be


__all__ = ["open_bundle", "backend_name", "backend_options", "check_origin", "BundleError"]
