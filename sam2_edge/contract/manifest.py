"""The bundle manifest: one dataclass, written by the exporter with `Manifest.to_json()` and
read by the runtime with `Manifest.from_json()` / `load_manifest()`, so writer and reader
agree by construction.

A bundle is a folder with the four stage graphs and `manifest.json`. The folder is
untrusted: `from_json` validates every key and type, the schema version, that graph paths
are relative and stay inside the folder, and that the shapes declared for every graph are
the ones the recorded `TrackerSpec` implies (so the four graphs fit each other and the
tracker); `load_manifest` adds what needs the file system (symbolic links, existence,
sha256 of every graph and data file). Every failure raises `BundleError` naming the
problem and the fix. Every validated field is honoured: the pre-processing must be the
one this runtime implements (it is checked, then the tracker applies exactly that).

Standard library only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import BundleError
from .formats import FORMATS, Precision
from .preprocessing import COLOUR_ORDER, IMG_MEAN, IMG_STD, LAYOUT, RESIZE_PIL_BICUBIC, SCALE
from .spec import SPEC_DEFAULTS, SPEC_LIMITS, STAGES, TensorSpec, TrackerSpec, obj_batches_problem, spec_problem

SCHEMA_VERSION = 1  # the newest manifest schema this code reads (and the one it writes)
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 8 << 20  # a manifest is a few kB; refuse to parse anything huge
DTYPES = ("float32", "int32")
_REEXPORT = "Re-export the bundle (sam2-edge export)."


# ---------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class DataFile:
    """A file a graph loads at run time (ONNX external weights), relative to the bundle."""

    file: str
    sha256: str
    path: Optional[Path] = None  # resolved, inside the bundle (set by load_manifest)


@dataclass(frozen=True)
class GraphEntry:
    stage: str
    file: str  # relative to the bundle folder, POSIX separators
    sha256: str
    path: Optional[Path]  # resolved absolute path inside the bundle (set by load_manifest)
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    bytes: int = 0
    data_files: Tuple[DataFile, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": int(self.bytes),
                "inputs": [tensor_to_dict(t) for t in self.inputs],
                "outputs": [tensor_to_dict(t) for t in self.outputs],
                "data_files": [{"file": d.file, "sha256": d.sha256} for d in self.data_files],
                "extra": dict(self.extra)}


@dataclass(frozen=True)
class Preprocessing:
    """What the graphs expect of a frame; only the pipeline this runtime implements is valid."""

    image_size: int
    mean: Tuple[float, float, float] = tuple(float(str(x)) for x in IMG_MEAN)  # shortest decimals of float32
    std: Tuple[float, float, float] = tuple(float(str(x)) for x in IMG_STD)
    colour_order: str = COLOUR_ORDER
    resize: str = RESIZE_PIL_BICUBIC
    scale: float = SCALE
    layout: str = LAYOUT

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "resize": self.resize, "colour_order": self.colour_order,
                "layout": self.layout, "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Manifest:
    root: Optional[Path]  # the bundle folder (set by load_manifest)
    schema_version: int
    format: str
    precision: Precision
    variant: str
    model_config: Mapping[str, Any]
    spec: TrackerSpec
    graphs: Mapping[str, GraphEntry]
    preprocessing: Preprocessing
    checkpoint_sha256: str
    exporter: Mapping[str, Any]
    libraries: Mapping[str, str]
    created: str
    checkpoint_file: str = ""
    # files that are part of the bundle but no graph loads (a quantization report, its plot):
    # listed and hashed like graphs, so the bundle's integrity (and a signature) covers them
    attachments: Tuple[DataFile, ...] = ()

    @property
    def stage_files(self) -> Dict[str, Path]:
        """Resolved path of each stage's graph (a loaded manifest only)."""
        keys = self.spec.graph_keys()
        assert all(self.graphs[k].path is not None for k in keys), "stage_files needs a loaded manifest"
        return {k: self.graphs[k].path for k in keys}  # type: ignore[misc]

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "format": self.format,
            "precision": Precision(self.precision).value,
            "variant": self.variant,
            "model_config": dict(self.model_config),
            "spec": self.spec.to_dict(),
            "graphs": {k: self.graphs[k].to_dict() for k in self.spec.graph_keys()},
            "preprocessing": self.preprocessing.to_dict(),
            "checkpoint": {"file": self.checkpoint_file, "sha256": self.checkpoint_sha256},
            "exporter": dict(self.exporter),
            "libraries": dict(self.libraries),
            "created": self.created,
            **({"attachments": [{"file": a.file, "sha256": a.sha256} for a in self.attachments]}
               if self.attachments else {}),
        }

    def to_json(self) -> str:
        """The manifest.json text. It is validated by `from_json` before it is returned, so
        the exporter can never write a manifest the loader would refuse."""
        text = json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False) + "\n"
        Manifest.from_json(text)
        return text

    @classmethod
    def from_json(cls, text: str, root: Optional[Path] = None) -> "Manifest":
        """Parse and validate manifest text (no file-system access; see `load_manifest`)."""
        return cls.from_dict(parse_json(text), root)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Optional[Path] = None) -> "Manifest":
        return _manifest_from_dict(d, root)


# ---------------------------------------------------------------------------------- JSON
def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(c):
    raise ValueError(f"{c} is not allowed in a manifest")


def parse_json(text: str, what: str = MANIFEST_NAME) -> dict:
    """A JSON object, refusing NaN/Infinity, duplicate keys and absurd nesting."""
    try:
        data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        kind = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise BundleError(f"{what} is not valid JSON ({kind}); the manifest is corrupt or truncated. "
                          f"{_REEXPORT}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{what} must hold a JSON object, got {type(data).__name__}. {_REEXPORT}")
    return data


def _jsonable(x):
    if isinstance(x, Precision):
        return x.value
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


# ---------------------------------------------------------------------------------- field checks
def tensor_to_dict(t: TensorSpec) -> dict:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get(d: Mapping, key: str, types, where: str):
    if key not in d:
        raise BundleError(f"manifest is missing {_where(where, key)!r}; the bundle is incomplete or was not "
                          f"written by sam2-edge export. {_REEXPORT}")
    v = d[key]
    types_t = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, types_t) or (isinstance(v, bool) and bool not in types_t):
        names = "/".join(t.__name__ for t in types_t)
        raise BundleError(f"manifest entry {_where(where, key)!r} must be {names}, got {type(v).__name__} "
                          f"{v!r:.80}; the manifest is corrupt. {_REEXPORT}")
    return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor(d, where: str) -> TensorSpec:
    if not isinstance(d, Mapping):
        raise BundleError(f"manifest entry {where!r} must be an object {{name, shape, dtype}}, got {d!r:.80}; "
                          "re-export the bundle")
    name = _get(d, "name", str, where)
    shape = _get(d, "shape", list, where)
    if not all(_is_int(s) and s > 0 for s in shape):
        raise BundleError(f"manifest entry {where}.shape must be a list of positive integers (static shapes), "
                          f"got {shape!r:.80}; re-export the bundle")
    dtype = _get(d, "dtype", str, where)
    if dtype not in DTYPES:
        raise BundleError(f"manifest entry {where}.dtype is {dtype!r}; graph inputs and outputs are one of "
                          f"{DTYPES}. Re-export the bundle")
    return TensorSpec(name, tuple(shape), dtype)


def _tensors(v, where: str) -> Tuple[TensorSpec, ...]:
    if not isinstance(v, list):
        raise BundleError(f"manifest entry {where!r} must be a list of tensors, got {type(v).__name__}; "
                          "re-export the bundle")
    return tuple(_tensor(t, f"{where}[{i}]") for i, t in enumerate(v))


def _sha(v: str, where: str) -> str:
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise BundleError(f"manifest entry {where!r} must be a lowercase hex sha256 (64 characters), "
                          f"got {v!r:.80}; re-export the bundle")
    return v


def check_relative(rel: str, where: str) -> None:
    """A bundle path must be a non-empty relative path without '..'."""
    if not rel or "\0" in rel:
        raise BundleError(f"{where}: empty or invalid file name {rel!r}; re-export the bundle")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise BundleError(f"{where}: graph path {rel!r} is absolute; bundle paths must be relative to the bundle "
                          "folder. The bundle is malformed or malicious: do not use it; re-export it.")
    if ".." in rel.replace("\\", "/").split("/"):
        raise BundleError(f"{where}: graph path {rel!r} contains '..' and could leave the bundle folder. "
                          "The bundle is malformed or malicious: do not use it; re-export it.")


def spec_from_dict(d, where: str = "spec") -> TrackerSpec:
    if not isinstance(d, Mapping):
        raise BundleError(f"manifest entry {where!r} must be an object; re-export the bundle")
    fields = tuple(SPEC_LIMITS)
    # a field added after a bundle was written (SPEC_DEFAULTS) takes the default that keeps its layout
    vals = {k: _get(d, k, int, where) for k in fields if k in d or k not in SPEC_DEFAULTS}
    vals.update({k: v for k, v in SPEC_DEFAULTS.items() if k not in d})
    unknown = sorted(set(d) - set(fields) - {"obj_batches"})
    if unknown:
        raise BundleError(f"manifest entry {where!r} has unknown keys {unknown}; the bundle was written by a newer "
                          "sam2-edge: upgrade sam2-edge (pip install -U sam2-edge)")
    problem = spec_problem(vals)
    if problem:
        raise BundleError(f"manifest entry {where}.{problem}; the bundle is corrupt or not for this sam2-edge. "
                          "Re-export the bundle")
    batches = d.get("obj_batches", [1])  # absent: a bundle with the batch-1 graphs only
    problem = obj_batches_problem(batches)
    if problem:
        raise BundleError(f"manifest entry {where}.{problem}; the bundle is corrupt. Re-export the bundle")
    return TrackerSpec(**vals, obj_batches=tuple(batches))


def _preprocessing(pre: Mapping, spec: TrackerSpec) -> Preprocessing:
    size = _get(pre, "image_size", int, "preprocessing")
    if size != spec.image_size:
        raise BundleError(f"preprocessing.image_size {size} differs from spec.image_size {spec.image_size}; "
                          f"the manifest is inconsistent. {_REEXPORT}")
    ours = Preprocessing(size)
    got = {}
    for nm in ("mean", "std"):
        v = _get(pre, nm, list, "preprocessing")
        if len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                  for x in v):
            raise BundleError(f"preprocessing.{nm} must be three finite numbers (R, G, B), got {v!r:.80}; "
                              "re-export the bundle")
        if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(v, getattr(ours, nm))):
            raise BundleError(f"preprocessing.{nm} {v} is not the one this sam2-edge applies "
                              f"{list(getattr(ours, nm))} (the official SAM 2 normalisation); a bundle exported for "
                              "another normalisation cannot run here. Re-export it with sam2-edge export.")
        got[nm] = tuple(float(x) for x in v)
    colour = _get(pre, "colour_order", str, "preprocessing")
    resize = _get(pre, "resize", str, "preprocessing")
    layout = pre.get("layout", LAYOUT)
    if colour != COLOUR_ORDER or resize != RESIZE_PIL_BICUBIC or layout != LAYOUT:
        raise BundleError(f"preprocessing {colour}/{resize}/{layout!r:.20} is not supported by this sam2-edge (it "
                          f"implements {COLOUR_ORDER}/{RESIZE_PIL_BICUBIC}/{LAYOUT}); upgrade sam2-edge")
    scale = pre.get("scale", SCALE)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isclose(scale, SCALE, rel_tol=1e-6):
        raise BundleError(f"preprocessing.scale must be 1/255 (what this sam2-edge applies), got {scale!r:.80}; "
                          "re-export the bundle")
    return Preprocessing(size, got["mean"], got["std"], colour, resize, SCALE, LAYOUT)  # what was checked


def _graph(stage: str, g, fmt: str, expected, root: Optional[Path]) -> GraphEntry:
    where = f"graphs.{stage}"
    if not isinstance(g, dict):
        raise BundleError(f"manifest entry {where!r} must be an object; re-export the bundle")
    rel = _get(g, "file", str, where)
    check_relative(rel, where)
    suffix = FORMATS[fmt].suffix
    if not rel.endswith(suffix):
        raise BundleError(f"{where}: file {rel!r} does not end with {suffix!r}, the suffix of a {fmt} graph; "
                          f"the manifest is inconsistent. {_REEXPORT}")
    sha = _sha(_get(g, "sha256", str, where), f"{where}.sha256")
    inputs = _tensors(_get(g, "inputs", list, where), f"{where}.inputs")
    outputs = _tensors(_get(g, "outputs", list, where), f"{where}.outputs")
    exp_in, exp_out = expected
    for kind, got, exp in (("inputs", inputs, exp_in), ("outputs", outputs, exp_out)):
        if got != exp:
            raise BundleError(f"{where}.{kind} do not fit the bundle's tracker spec: {_io_diff(got, exp)}. The "
                              "graphs and the spec disagree (edited manifest or mixed exports); re-export the bundle.")
    dfs = g.get("data_files", [])
    if dfs is None:
        dfs = []
    if not isinstance(dfs, list):
        raise BundleError(f"manifest entry {where}.data_files must be a list, got {type(dfs).__name__}; "
                          "re-export the bundle")
    data_files = []
    for i, df in enumerate(dfs):
        w = f"{where}.data_files[{i}]"
        if not isinstance(df, dict):
            raise BundleError(f"manifest entry {w!r} must be an object {{file, sha256}}; re-export the bundle")
        drel = _get(df, "file", str, w)
        check_relative(drel, w)
        data_files.append(DataFile(drel, _sha(_get(df, "sha256", str, w), f"{w}.sha256")))
    extra = g.get("extra", {})
    if not isinstance(extra, dict):
        raise BundleError(f"manifest entry {where}.extra must be an object; re-export the bundle")
    nbytes = g.get("bytes", 0)
    return GraphEntry(stage, rel, sha, None, inputs, outputs, int(nbytes) if _is_int(nbytes) else 0,
                      tuple(data_files), extra)


def _manifest_from_dict(d: Mapping[str, Any], root: Optional[Path]) -> Manifest:
    version = _get(d, "schema_version", int, "")
    if version > SCHEMA_VERSION:
        raise BundleError(f"bundle schema_version {version} is newer than this sam2-edge supports "
                          f"({SCHEMA_VERSION}); upgrade sam2-edge (pip install -U sam2-edge) to open it")
    if version < 1:
        raise BundleError(f"bundle schema_version {version} is invalid (the first schema is 1); re-export the bundle")
    fmt = _get(d, "format", str, "")
    if fmt not in FORMATS:
        raise BundleError(f"bundle format {fmt!r} is unknown (known: {', '.join(FORMATS)}); "
                          "upgrade sam2-edge or re-export the bundle")
    precision_s = _get(d, "precision", str, "")
    if precision_s not in [p.value for p in FORMATS[fmt].precisions]:
        raise BundleError(f"bundle precision {precision_s!r} is unknown for {fmt} bundles (known: "
                          f"{', '.join(p.value for p in FORMATS[fmt].precisions)}); upgrade sam2-edge or re-export "
                          "the bundle")
    variant = _get(d, "variant", str, "")
    model_config = _get(d, "model_config", dict, "")
    spec = spec_from_dict(_get(d, "spec", dict, ""))
    for key in ("image_size", "d_model", "mem_dim", "num_maskmem"):  # config and spec: the same model
        if key in model_config and model_config[key] != getattr(spec, key):
            raise BundleError(f"manifest model_config.{key} = {model_config[key]!r} but spec.{key} = "
                              f"{getattr(spec, key)}; the manifest is inconsistent. {_REEXPORT}")
    preprocessing = _preprocessing(_get(d, "preprocessing", dict, ""), spec)
    ckpt = _get(d, "checkpoint", dict, "")
    ckpt_sha = _sha(_get(ckpt, "sha256", str, "checkpoint"), "checkpoint.sha256")
    ckpt_file = ckpt.get("file", "")
    exporter = _get(d, "exporter", dict, "")
    libraries = _get(d, "libraries", dict, "")
    created = _get(d, "created", str, "")

    graphs_d = _get(d, "graphs", dict, "")
    missing = [s for s in STAGES if s not in graphs_d]
    if missing:
        raise BundleError(f"manifest lists no graph for {missing}; a bundle has the four stages {list(STAGES)}. "
                          f"{_REEXPORT}")
    keys = spec.graph_keys()  # the four stages + the per-object stages for each object batch of the spec
    missing = [k for k in keys if k not in graphs_d]
    if missing:
        raise BundleError(f"manifest lists no graph for {missing} although spec.obj_batches is "
                          f"{list(spec.obj_batches)}. {_REEXPORT}")
    unknown = sorted(set(graphs_d) - set(keys))
    if unknown:
        raise BundleError(f"manifest lists unknown graphs {unknown}; upgrade sam2-edge or re-export the bundle")
    io = spec.graph_io()
    graphs = {k: _graph(k, graphs_d[k], fmt, io[k], root) for k in keys}
    names = [g.file for g in graphs.values()]
    if len(set(names)) != len(names):
        raise BundleError(f"two stages of the manifest point at the same graph file. {_REEXPORT}")
    return Manifest(root=root, schema_version=version, format=fmt, precision=Precision(precision_s), variant=variant,
                    model_config=model_config, spec=spec, graphs=graphs, preprocessing=preprocessing,
                    checkpoint_sha256=ckpt_sha, exporter=exporter, libraries=libraries, created=created,
                    checkpoint_file=ckpt_file if isinstance(ckpt_file, str) else "",
                    attachments=_attachments(d.get("attachments", [])))


def _attachments(v) -> Tuple[DataFile, ...]:
    if not isinstance(v, list):
        raise BundleError(f"manifest entry 'attachments' must be a list, got {type(v).__name__}; re-export the bundle")
    out = []
    for i, a in enumerate(v):
        w = f"attachments[{i}]"
        if not isinstance(a, dict):
            raise BundleError(f"manifest entry {w!r} must be an object {{file, sha256}}; re-export the bundle")
        rel = _get(a, "file", str, w)
        check_relative(rel, w)
        if rel == MANIFEST_NAME:
            raise BundleError(f"manifest entry {w!r} names the manifest itself; re-export the bundle")
        out.append(DataFile(rel, _sha(_get(a, "sha256", str, w), f"{w}.sha256")))
    if len({a.file for a in out}) != len(out):
        raise BundleError(f"manifest lists an attachment twice. {_REEXPORT}")
    return tuple(out)


def _io_diff(got: Tuple[TensorSpec, ...], exp: Tuple[TensorSpec, ...]) -> str:
    if len(got) != len(exp):
        return (f"{len(got)} tensors ({', '.join(t.name for t in got)}) where the spec has {len(exp)} "
                f"({', '.join(t.name for t in exp)})")
    for g, e in zip(got, exp):
        if g != e:
            return f"{g.name} {list(g.shape)} {g.dtype} where the spec expects {e.name} {list(e.shape)} {e.dtype}"
    return "order differs"


__all__ = ["SCHEMA_VERSION", "MANIFEST_NAME", "MAX_MANIFEST_BYTES", "DTYPES", "DataFile", "GraphEntry",
           "Preprocessing", "Manifest", "parse_json", "spec_from_dict", "tensor_to_dict", "check_relative"]
