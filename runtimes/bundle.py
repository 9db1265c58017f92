"""The bundle format: a folder with the four stage graphs and `manifest.json`.

numpy only (no torch, no runtime package). `load_manifest` treats the folder as untrusted
and validates it completely before any graph is handed to a runtime: the JSON itself,
every key and type, the schema version, that every graph path stays inside the folder,
that every graph file exists and has the recorded sha256, and that the shapes declared
for every graph are the ones the recorded `TrackerSpec` implies (so the four graphs fit
each other and the tracker). Every failure raises `BundleError` naming the problem and
the fix. The exporter (`sam2_edge.export.bundle`) writes the same structures and uses
`hash_graph` from here, so writer and reader agree by construction.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

from ..errors import BundleError
from ..contract import STAGES, TensorSpec, TrackerSpec

SCHEMA_VERSION = 1  # the newest manifest schema this code reads (and the one it writes)
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 8 << 20  # a manifest is a few kB; refuse to parse anything huge

# bundle format -> suffix of its graph files (a CoreML .mlpackage is a directory)
FORMAT_SUFFIX = {"onnx": ".onnx", "executorch": ".pte", "coreml": ".mlpackage"}
PRECISIONS = ("fp32", "fp16")
DTYPES = ("float32", "int32")

# the preprocessing every bundle expects (official SAM 2 video predictor)
RESIZE_PIL_BICUBIC = "pil-bicubic"
COLOUR_ORDER = "RGB"


# ---------------------------------------------------------------------------------- hashing
def _sha256_file(path: Path, chunk: int = 1 << 20) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.digest()


def _package_files(root: Path) -> list:
    """Relative POSIX paths of every regular file under directory `root`, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            out.append(p.relative_to(root).as_posix())
        for name in dirnames:  # a symlinked sub-directory is not walked; hash what it points to as a file list
            p = Path(dirpath) / name
            if p.is_symlink():
                raise BundleError(f"{p} is a symbolic link to a directory; graph packages must hold plain files. "
                                  "Re-export the bundle (sam2-edge export).")
    return sorted(out)


def hash_graph(path) -> str:
    """sha256 (hex) of a graph: of the file's bytes for a file; for a directory (a CoreML
    .mlpackage) of the concatenation, over every regular file below it in sorted order of
    its relative POSIX path, of `path UTF-8 bytes + b"\\0" + sha256(file bytes) (32 bytes)`.
    The one definition used by the exporter (writing) and `load_manifest` (checking)."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for rel in _package_files(path):
            h.update(rel.encode("utf-8") + b"\0")
            h.update(_sha256_file(path / rel))
        return h.hexdigest()
    return _sha256_file(path).hex()


# ---------------------------------------------------------------------------------- manifest types
@dataclass(frozen=True)
class DataFile:
    """A file a graph loads at run time (ONNX external weights), relative to the bundle."""

    file: str
    sha256: str
    path: Path  # resolved, inside the bundle


@dataclass(frozen=True)
class GraphEntry:
    stage: str
    file: str  # relative to the bundle folder, POSIX separators
    sha256: str
    path: Path  # resolved absolute path, inside the bundle
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    bytes: int = 0
    data_files: Tuple[DataFile, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    colour_order: str = COLOUR_ORDER
    resize: str = RESIZE_PIL_BICUBIC
    scale: float = 1.0 / 255.0


@dataclass(frozen=True)
class Manifest:
    root: Path
    schema_version: int
    format: str
    precision: str
    variant: str
    model_config: Mapping[str, Any]
    spec: TrackerSpec
    graphs: Mapping[str, GraphEntry]
    preprocessing: Preprocessing
    checkpoint_sha256: str
    exporter: Mapping[str, Any]
    libraries: Mapping[str, str]
    created: str

    @property
    def stage_files(self) -> Dict[str, Path]:
        return {s: self.graphs[s].path for s in STAGES}


# ---------------------------------------------------------------------------------- helpers
def tensor_to_dict(t: TensorSpec) -> dict:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get(d: Mapping, key: str, types, where: str, fix: str = ""):
    if key not in d:
        raise BundleError(f"manifest is missing {_where(where, key)!r}; the bundle is incomplete or was not "
                          f"written by sam2-edge export{fix}. Re-export it (sam2-edge export).")
    v = d[key]
    types_t = types if isinstance(types, tuple) else (types,)
    ok = isinstance(v, types_t) and not (isinstance(v, bool) and bool not in types_t)
    if not ok:
        names = "/".join(t.__name__ for t in types_t)
        raise BundleError(f"manifest entry {_where(where, key)!r} must be {names}, got {type(v).__name__} "
                          f"{v!r:.80}; the manifest is corrupt. Re-export the bundle (sam2-edge export).")
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


def resolve_inside(root: Path, rel: str, where: str) -> Path:
    """`root / rel` resolved (symlinks followed), refusing anything that leaves `root`."""
    if not rel or "\0" in rel:
        raise BundleError(f"{where}: empty or invalid file name {rel!r}; re-export the bundle")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise BundleError(f"{where}: graph path {rel!r} is absolute; bundle paths must be relative to the bundle "
                          "folder. The bundle is malformed or malicious: do not use it; re-export it.")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise BundleError(f"{where}: graph path {rel!r} contains '..' and could leave the bundle folder. "
                          "The bundle is malformed or malicious: do not use it; re-export it.")
    root_r = root.resolve()
    p = (root_r / rel).resolve()
    if p != root_r and root_r not in p.parents:
        raise BundleError(f"{where}: graph path {rel!r} resolves to {p}, outside the bundle folder {root_r} "
                          "(a symbolic link?). The bundle is malformed or malicious: do not use it; re-export it.")
    return p


def _check_package_inside(root: Path, pkg: Path, where: str) -> None:
    """Every file and link inside a directory graph must stay inside the bundle."""
    root_r = root.resolve()
    for dirpath, dirnames, filenames in os.walk(pkg, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                t = p.resolve()
                if t != root_r and root_r not in t.parents:
                    raise BundleError(f"{where}: {p} is a symbolic link to {t}, outside the bundle folder. "
                                      "The bundle is malformed or malicious: do not use it; re-export it.")


# ---------------------------------------------------------------------------------- spec
def spec_from_dict(d, where: str = "spec") -> TrackerSpec:
    if not isinstance(d, Mapping):
        raise BundleError(f"manifest entry {where!r} must be an object; re-export the bundle")
    fields = ("image_size", "d_model", "mem_dim", "num_maskmem", "cond_slots", "ptr_recent", "max_clicks")
    vals = {}
    for k in fields:
        v = _get(d, k, int, where)
        if v <= 0:
            raise BundleError(f"manifest entry {where}.{k} must be a positive integer, got {v}; re-export the bundle")
        vals[k] = v
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise BundleError(f"manifest entry {where!r} has unknown keys {unknown}; the bundle was written by a newer "
                          "sam2-edge: upgrade sam2-edge (pip install -U sam2-edge)")
    if vals["image_size"] % 16:
        raise BundleError(f"{where}.image_size {vals['image_size']} is not a multiple of 16; re-export the bundle")
    if vals["num_maskmem"] < 2:
        raise BundleError(f"{where}.num_maskmem must be >= 2, got {vals['num_maskmem']}; re-export the bundle")
    if vals["d_model"] % vals["mem_dim"]:
        raise BundleError(f"{where}: d_model {vals['d_model']} is not a multiple of mem_dim {vals['mem_dim']}; "
                          "re-export the bundle")
    return TrackerSpec(**vals)


# ---------------------------------------------------------------------------------- loading
def _read_json(root: Path) -> dict:
    if not root.exists():
        raise BundleError(f"bundle folder {str(root)!r} does not exist; export one with "
                          "`sam2-edge export --checkpoint CKPT --format onnx --out DIR`")
    if not root.is_dir():
        raise BundleError(f"{str(root)!r} is not a folder; a bundle is the folder holding {MANIFEST_NAME}")
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{str(root)!r} has no {MANIFEST_NAME}: not a sam2-edge bundle (or an incomplete "
                          "export); export one with `sam2-edge export ... --out DIR`")
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{mpath} is {mpath.stat().st_size} bytes, far larger than any manifest; "
                          "the bundle is corrupt. Re-export it.")
    try:
        text = mpath.read_text(encoding="utf-8")
        data = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} not allowed")))
    except (UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e}); the manifest is corrupt or truncated. "
                          "Re-export the bundle (sam2-edge export).") from None
    if not isinstance(data, dict):
        raise BundleError(f"{mpath} must hold a JSON object, got {type(data).__name__}; re-export the bundle")
    return data


def load_manifest(bundle_dir, verify_hashes: bool = True) -> Manifest:
    """Read and validate a bundle's manifest. Raises BundleError on any problem.

    `verify_hashes=False` skips the sha256 of the graph files (for a quick look; a backend
    must never open an unverified bundle, and `open_bundle` always verifies).
    """
    root = Path(bundle_dir)
    d = _read_json(root)

    version = _get(d, "schema_version", int, "")
    if version > SCHEMA_VERSION:
        raise BundleError(f"bundle schema_version {version} is newer than this sam2-edge supports "
                          f"({SCHEMA_VERSION}); upgrade sam2-edge (pip install -U sam2-edge) to open it")
    if version < 1:
        raise BundleError(f"bundle schema_version {version} is invalid (the first schema is 1); re-export the bundle")

    fmt = _get(d, "format", str, "")
    if fmt not in FORMAT_SUFFIX:
        raise BundleError(f"bundle format {fmt!r} is unknown (known: {', '.join(FORMAT_SUFFIX)}); "
                          "upgrade sam2-edge or re-export the bundle")
    precision = _get(d, "precision", str, "")
    if precision not in PRECISIONS:
        raise BundleError(f"bundle precision {precision!r} is unknown (known: {', '.join(PRECISIONS)}); "
                          "upgrade sam2-edge or re-export the bundle")
    variant = _get(d, "variant", str, "")
    model_config = _get(d, "model_config", dict, "")
    spec = spec_from_dict(_get(d, "spec", dict, ""))

    # model config and spec must describe the same model
    for key in ("image_size", "d_model", "mem_dim", "num_maskmem"):
        if key in model_config and model_config[key] != getattr(spec, key):
            raise BundleError(f"manifest model_config.{key} = {model_config[key]!r} but spec.{key} = "
                              f"{getattr(spec, key)}; the manifest is inconsistent. Re-export the bundle.")

    pre = _get(d, "preprocessing", dict, "")
    size = _get(pre, "image_size", int, "preprocessing")
    if size != spec.image_size:
        raise BundleError(f"preprocessing.image_size {size} differs from spec.image_size {spec.image_size}; "
                          "the manifest is inconsistent. Re-export the bundle.")
    mean = _get(pre, "mean", list, "preprocessing")
    std = _get(pre, "std", list, "preprocessing")
    for nm, v in (("mean", mean), ("std", std)):
        if len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                  for x in v):
            raise BundleError(f"preprocessing.{nm} must be three finite numbers (R, G, B), got {v!r:.80}; "
                              "re-export the bundle")
    if not all(x > 0 for x in std):
        raise BundleError(f"preprocessing.std must be positive, got {std}; re-export the bundle")
    colour = _get(pre, "colour_order", str, "preprocessing")
    resize = _get(pre, "resize", str, "preprocessing")
    if colour != COLOUR_ORDER or resize != RESIZE_PIL_BICUBIC:
        raise BundleError(f"preprocessing {colour}/{resize} is not supported by this sam2-edge (it implements "
                          f"{COLOUR_ORDER}/{RESIZE_PIL_BICUBIC}); upgrade sam2-edge")
    scale = pre.get("scale", 1.0 / 255.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise BundleError(f"preprocessing.scale must be a positive number, got {scale!r:.80}; re-export the bundle")
    preprocessing = Preprocessing(size, tuple(float(x) for x in mean), tuple(float(x) for x in std),
                                  colour, resize, float(scale))

    ckpt = _get(d, "checkpoint", dict, "")
    ckpt_sha = _sha(_get(ckpt, "sha256", str, "checkpoint"), "checkpoint.sha256")
    exporter = _get(d, "exporter", dict, "")
    libraries = _get(d, "libraries", dict, "")
    created = _get(d, "created", str, "")

    graphs_d = _get(d, "graphs", dict, "")
    missing = [s for s in STAGES if s not in graphs_d]
    if missing:
        raise BundleError(f"manifest lists no graph for {missing}; a bundle has the four stages {list(STAGES)}. "
                          "Re-export the bundle.")
    unknown = sorted(set(graphs_d) - set(STAGES))
    if unknown:
        raise BundleError(f"manifest lists unknown graphs {unknown}; upgrade sam2-edge or re-export the bundle")

    expected_io = spec.io()
    suffix = FORMAT_SUFFIX[fmt]
    graphs: Dict[str, GraphEntry] = {}
    for stage in STAGES:
        where = f"graphs.{stage}"
        g = graphs_d[stage]
        if not isinstance(g, dict):
            raise BundleError(f"manifest entry {where!r} must be an object; re-export the bundle")
        rel = _get(g, "file", str, where)
        path = resolve_inside(root, rel, where)
        if not rel.endswith(suffix):
            raise BundleError(f"{where}: file {rel!r} does not end with {suffix!r}, the suffix of a {fmt} graph; "
                              "the manifest is inconsistent. Re-export the bundle.")
        if not path.exists():
            raise BundleError(f"{where}: graph file {rel!r} is missing from {root}; the bundle is incomplete "
                              "(copied partially?). Copy the whole folder again or re-export it.")
        if fmt == "coreml":
            if not path.is_dir():
                raise BundleError(f"{where}: {rel!r} must be a .mlpackage folder; re-export the bundle")
            _check_package_inside(root, path, where)
        elif not path.is_file():
            raise BundleError(f"{where}: {rel!r} is not a file; re-export the bundle")
        sha = _sha(_get(g, "sha256", str, where), f"{where}.sha256")
        inputs = _tensors(_get(g, "inputs", list, where), f"{where}.inputs")
        outputs = _tensors(_get(g, "outputs", list, where), f"{where}.outputs")
        exp_in, exp_out = expected_io[stage]
        for kind, got, exp in (("inputs", inputs, exp_in), ("outputs", outputs, exp_out)):
            if got != exp:
                detail = _io_diff(got, exp)
                raise BundleError(f"{where}.{kind} do not fit the bundle's tracker spec: {detail}. The graphs and "
                                  "the spec disagree (edited manifest or mixed exports); re-export the bundle.")
        data_files = []
        for i, df in enumerate(g.get("data_files", []) or []):
            w = f"{where}.data_files[{i}]"
            if not isinstance(df, dict):
                raise BundleError(f"manifest entry {w!r} must be an object {{file, sha256}}; re-export the bundle")
            drel = _get(df, "file", str, w)
            dpath = resolve_inside(root, drel, w)
            if not dpath.is_file():
                raise BundleError(f"{w}: data file {drel!r} is missing from {root}; copy the whole folder again "
                                  "or re-export the bundle")
            data_files.append(DataFile(drel, _sha(_get(df, "sha256", str, w), f"{w}.sha256"), dpath))
        extra = g.get("extra", {})
        if not isinstance(extra, dict):
            raise BundleError(f"manifest entry {where}.extra must be an object; re-export the bundle")
        nbytes = g.get("bytes", 0)
        graphs[stage] = GraphEntry(stage, rel, sha, path, inputs, outputs, int(nbytes) if _is_int(nbytes) else 0,
                                   tuple(data_files), extra)

    files = [g.path for g in graphs.values()]
    if len(set(files)) != len(files):
        raise BundleError("two stages of the manifest point at the same graph file; re-export the bundle")

    if verify_hashes:
        for stage, g in graphs.items():
            actual = hash_graph(g.path)
            if actual != g.sha256:
                raise BundleError(f"graph {g.file!r} ({stage}) was altered or corrupted: its sha256 is {actual}, the "
                                  f"manifest records {g.sha256}. Copy the bundle again or re-export it "
                                  "(sam2-edge export).")
            for df in g.data_files:
                actual = hash_graph(df.path)
                if actual != df.sha256:
                    raise BundleError(f"data file {df.file!r} of {stage} was altered or corrupted (sha256 {actual}, "
                                      f"manifest {df.sha256}); copy the bundle again or re-export it")

    return Manifest(root=root.resolve(), schema_version=version, format=fmt, precision=precision, variant=variant,
                    model_config=model_config, spec=spec, graphs=graphs, preprocessing=preprocessing,
                    checkpoint_sha256=ckpt_sha, exporter=exporter, libraries=libraries, created=created)


def _io_diff(got: Tuple[TensorSpec, ...], exp: Tuple[TensorSpec, ...]) -> str:
    if len(got) != len(exp):
        return (f"{len(got)} tensors ({', '.join(t.name for t in got)}) where the spec has {len(exp)} "
                f"({', '.join(t.name for t in exp)})")
    for g, e in zip(got, exp):
        if g != e:
            return (f"{g.name} {list(g.shape)} {g.dtype} where the spec expects {e.name} {list(e.shape)} {e.dtype}")
    return "order differs"

