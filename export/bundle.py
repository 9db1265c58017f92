"""Export a checkpoint as a bundle: the four tracker stages as static-shape graphs of one
format (ONNX, ExecuTorch or CoreML) and a `manifest.json` that describes them.

    from sam2_edge.export import export_bundle
    export_bundle("sam2.1_hiera_tiny.pt", "bundles/tiny-onnx", format="onnx")

The manifest is a `sam2_edge.contract.Manifest`, written with its `to_json()` and read back
by the runtime with `load_manifest()`; `export/README.md` documents it for app developers.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import time
from dataclasses import replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .. import __version__
from ..contract import (FORMATS, MANIFEST_NAME, SCHEMA_VERSION, STAGES, DataFile, GraphEntry, Manifest, Precision,
                        Preprocessing, hash_graph, sha256_file)
from ..contract.bundle_dir import SIGNATURE_NAME
from ..contract.examples import example_inputs
from ..contract.spec import obj_batches_problem
from ..contract.signing import load_private_key, sign_manifest
from ..errors import BackendUnavailableError, ConfigError
from ..progress import Progress

log = logging.getLogger(__name__)

# the module of this package that exports each format of the contract's registry
_EXPORTER_MODULE = {"onnx": "onnx_export", "executorch": "executorch_export", "coreml": "coreml_export"}
# What the exported graphs compute, beyond the inputs of an export: raise it when a change of the
# exporters changes the graphs (so caches such as `sam2-edge bench`'s re-export). Written into the
# manifest's "exporter". 2: memory-attention values folded (fp32 ONNX / ExecuTorch); 3: W_o W_v held
# as one constant instead of computed in the graph.
GRAPHS_REVISION = 3
_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "executorch", "coremltools", "numpy")


def _exporter(fmt: str):
    name = f"{__package__}.{_EXPORTER_MODULE[fmt]}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            raise BackendUnavailableError(f"this sam2-edge has no {fmt} exporter ({name} is missing)") from None
        raise BackendUnavailableError(
            f"exporting {fmt} bundles needs {e.name!r}: pip install 'sam2-edge[{FORMATS[fmt].export_extra}]'") from None


def library_versions() -> Dict[str, str]:
    out = {"sam2_edge": __version__}
    for lib in _LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


_OUT_KIND = "a bundle made by sam2-edge export (its manifest.json written by the exporter)"


def _own_bundle(folder: Path) -> bool:
    from ..outputs import made_bundle

    return made_bundle(folder, MANIFEST_NAME)


def _prepare_out_dir(out: Path) -> None:
    """Before any work: `out` may be missing, empty or a bundle sam2-edge made (it is then
    replaced when the new one is complete); a file, a link, /proc, an unwritable place or any
    other folder is an OutputError (sam2_edge.outputs: nothing the user owns is deleted)."""
    from ..outputs import check_dir

    check_dir(out, "--out", _own_bundle, _OUT_KIND)


def export_bundle(checkpoint: str, out_dir: str, format: str = "onnx", variant: Optional[str] = None,
                  image_size: Optional[int] = None, precision: Optional[str] = None, cond_slots: int = 2,
                  show_progress: Optional[bool] = None, sign_key: Optional[str] = None,
                  obj_batches: Sequence[int] = (1,)) -> Path:
    """Export the four stages of `checkpoint` as a `format` bundle into `out_dir`, and for each
    object batch B > 1 of `obj_batches` (e.g. (1, 2, 4)) the per-object stages again for B objects
    (graphs "<stage>@<B>"), so the tracker runs a frame's objects in few calls.

    The bundle is written to a temporary folder next to `out_dir` and moved into place
    when complete, so `out_dir` never holds a half-written bundle (an older bundle there
    is replaced). Returns the bundle folder.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown bundle format {format!r}; choose one of: {', '.join(FORMATS)}")
    precision = FORMATS[format].default_precision if precision is None else Precision.parse(precision, format)
    if isinstance(cond_slots, bool) or not isinstance(cond_slots, int) or not 1 <= cond_slots <= 64:
        raise ConfigError(f"cond_slots must be an integer 1..64 (conditioning frames kept), got {cond_slots!r}")
    obj_batches = tuple(obj_batches) if isinstance(obj_batches, (list, tuple)) else obj_batches
    problem = obj_batches_problem(obj_batches)
    if problem:
        raise ConfigError(f"{problem} (object batch sizes to export graphs for, e.g. 1,2,4)")
    if sign_key is not None:
        load_private_key(sign_key)  # a wrong or unreadable key fails now, not after the export
    out = Path(out_dir)
    _prepare_out_dir(out)
    exporter = _exporter(format)
    try:
        import torch

        from ..checkpoint import load_checkpoint
        from ..stages import build_stages, tracker_spec
    except ModuleNotFoundError as e:
        raise BackendUnavailableError(f"exporting needs {e.name!r}: pip install 'sam2-edge[{FORMATS[format].export_extra}]'") \
            from None

    t_start = time.perf_counter()
    model, cfg = load_checkpoint(checkpoint, variant, image_size)
    if precision.value in exporter.FOLD_MEMORY_VALUES:  # exact: P.V at the memory width (memory_attention.py)
        from ..modeling.memory_attention import fold_memory_values

        log.debug("memory attention: values folded in %d cross-attentions", fold_memory_values(model))
    spec = replace(tracker_spec(model, cond_slots), obj_batches=obj_batches)
    io = spec.graph_io()
    keys = spec.graph_keys()
    stages = dict(zip(STAGES, build_stages(model)))
    suffix = FORMATS[format].suffix

    out.parent.mkdir(parents=True, exist_ok=True)
    from ..outputs import staging_dir

    tmp = staging_dir(out)
    try:
        graphs = {}
        from ..quiet import quiet  # the exporters' third-party logging / warnings, restored after (-v: all)

        with quiet(), Progress(len(keys), f"export {cfg.name} -> {format} {precision.value}",
                               enabled=show_progress) as bar:
            for key in keys:
                ins, outs = io[key]
                args = tuple(torch.from_numpy(a) for a in example_inputs(spec, key))
                stage, batch = spec.parse_key(key)
                fname = (stage if batch == 1 else f"{stage}.b{batch}") + suffix
                t0 = time.perf_counter()
                with torch.no_grad():
                    extra = exporter.export_stage(stages[stage], args, [t.name for t in ins], [t.name for t in outs],
                                                  tmp / fname, precision.value)
                extra = dict(extra or {})
                extra["export_seconds"] = round(time.perf_counter() - t0, 2)
                data_names = list(extra.pop("data_files", []) or [])
                path = tmp / fname
                graphs[key] = GraphEntry(
                    key, fname, hash_graph(path), None, ins, outs,
                    bytes=_size(path) + sum(_size(tmp / d) for d in data_names),
                    data_files=tuple(DataFile(d, hash_graph(tmp / d)) for d in data_names), extra=_jsonable(extra))
                bar.update(1, key)
        manifest = Manifest(
            root=None, schema_version=SCHEMA_VERSION, format=format, precision=precision, variant=cfg.name,
            model_config=cfg.to_dict(), spec=spec, graphs=graphs, preprocessing=Preprocessing(spec.image_size),
            checkpoint_sha256=sha256_file(str(checkpoint)), checkpoint_file=os.path.basename(str(checkpoint)),
            exporter={"name": "sam2-edge", "version": __version__, "graphs_revision": GRAPHS_REVISION,
                      "module": exporter.__name__,
                      "seconds": round(time.perf_counter() - t_start, 2)},
            libraries=library_versions(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        manifest_bytes = manifest.to_json().encode("utf-8")
        (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
        if sign_key is not None:  # Ed25519 over the exact manifest bytes (which hold every file's sha256)
            (tmp / SIGNATURE_NAME).write_bytes(sign_manifest(manifest_bytes, sign_key))
        from ..outputs import replace_dir

        replace_dir(tmp, out, "--out", _own_bundle, _OUT_KIND)  # checks `out` again; keeps anything not ours
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s bundle %s in %.1f s", format, out, time.perf_counter() - t_start)
    return out


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
