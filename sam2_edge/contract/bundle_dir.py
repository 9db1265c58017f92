"""A bundle folder on disk: `load_manifest` reads `manifest.json` (bounded in size), validates
it with `Manifest.from_json`, then checks what needs the file system -- every graph and data
file resolves inside the folder (no symbolic link out), exists, is the kind of file its
format needs, and has the recorded sha256. Every failure is a `BundleError` naming the fix.

Standard library only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Mapping, Optional

from ..errors import BundleError
from .formats import FORMATS
from .hashing import hash_graph, hash_package, package_files, read_regular, sha256_bytes
from .manifest import _REEXPORT, MANIFEST_NAME, MAX_MANIFEST_BYTES, GraphEntry, Manifest, check_relative


def resolve_inside(root: Path, rel: str, where: str) -> Path:
    """`root / rel` resolved (symlinks followed), refusing anything that leaves `root`."""
    check_relative(rel, where)
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


def read_manifest_bytes(root: Path) -> bytes:
    """manifest.json's bytes: a regular file directly in the bundle folder (not a link), bounded."""
    if not root.exists():
        raise BundleError(f"bundle folder {str(root)!r} does not exist; export one with "
                          "`sam2-edge export --checkpoint CKPT --format onnx --out DIR`")
    if not root.is_dir():
        raise BundleError(f"{str(root)!r} is not a folder; a bundle is the folder holding {MANIFEST_NAME}")
    mpath = root / MANIFEST_NAME
    try:
        st = os.lstat(mpath)
    except OSError:
        raise BundleError(f"{str(root)!r} has no {MANIFEST_NAME}: not a sam2-edge bundle (or an incomplete "
                          "export); export one with `sam2-edge export ... --out DIR`") from None
    if stat.S_ISLNK(st.st_mode):
        raise BundleError(f"{mpath} is a symbolic link; a bundle's manifest must be a plain file inside the bundle. "
                          "Do not use this bundle; re-export it.")
    return read_regular(mpath, MAX_MANIFEST_BYTES, "manifest")


def read_manifest_text(root: Path) -> str:
    data = read_manifest_bytes(root)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{root / MANIFEST_NAME} is not valid JSON ({e}); the manifest is corrupt or truncated. "
                          f"{_REEXPORT}") from None


def load_manifest(bundle_dir, verify_hashes: bool = True) -> Manifest:
    """Read and validate a bundle's manifest and files. Raises BundleError on any problem.

    `verify_hashes=False` skips the sha256 of the graph files (for a quick look; a backend
    must never open an unverified bundle, and `open_bundle` always verifies).
    """
    root = Path(bundle_dir)
    return _load(root, read_manifest_bytes(root), verify_hashes)


def _load(root: Path, manifest_bytes: bytes, verify_hashes: bool) -> Manifest:
    try:
        text = manifest_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{root / MANIFEST_NAME} is not valid JSON ({e}); the manifest is corrupt or truncated. "
                          f"{_REEXPORT}") from None
    m = Manifest.from_json(text, root.resolve())
    fmt = m.format
    graphs: Dict[str, GraphEntry] = {}
    for stage, g in m.graphs.items():
        where = f"graphs.{stage}"
        path = resolve_inside(root, g.file, where)
        if not path.exists():
            raise BundleError(f"{where}: graph file {g.file!r} is missing from {root}; the bundle is incomplete "
                              "(copied partially?). Copy the whole folder again or re-export it.")
        if FORMATS[fmt].suffix == ".mlpackage":
            if not path.is_dir():
                raise BundleError(f"{where}: {g.file!r} must be a .mlpackage folder; re-export the bundle")
            _check_package_inside(root, path, where)
        elif not path.is_file():
            raise BundleError(f"{where}: {g.file!r} is not a file; re-export the bundle")
        dfs = []
        for i, df in enumerate(g.data_files):
            dpath = resolve_inside(root, df.file, f"{where}.data_files[{i}]")
            if not dpath.is_file():
                raise BundleError(f"{where}.data_files[{i}]: data file {df.file!r} is missing from {root}; copy the "
                                  "whole folder again or re-export the bundle")
            dfs.append(replace(df, path=dpath))
        graphs[stage] = replace(g, path=path, data_files=tuple(dfs))
    files = [g.path for g in graphs.values()]
    if len(set(files)) != len(files):
        raise BundleError(f"two stages of the manifest point at the same graph file. {_REEXPORT}")
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
    attachments = []
    for i, a in enumerate(m.attachments):
        apath = resolve_inside(root, a.file, f"attachments[{i}]")
        if not apath.is_file():
            raise BundleError(f"attachments[{i}]: {a.file!r} is missing from {root}; copy the whole folder again or "
                              "re-export the bundle")
        if verify_hashes and hash_graph(apath) != a.sha256:
            raise BundleError(f"{a.file!r} was altered or corrupted (sha256 {hash_graph(apath)}, manifest "
                              f"{a.sha256}); copy the bundle again or re-export it")
        attachments.append(replace(a, path=apath))
    return replace(m, graphs=graphs, attachments=tuple(attachments))


@dataclass(frozen=True)
class GraphBlob:
    """One stage graph read into memory once and checked against the manifest's sha256: the
    bytes a backend runs (a later change of the files cannot reach a running tracker)."""

    stage: str
    file: str
    data: bytes  # the graph file (.onnx / .pte); b"" for a package
    package: Mapping[str, bytes]  # a CoreML .mlpackage: relative POSIX path -> bytes
    data_files: Mapping[str, bytes]  # ONNX external data: file name as the manifest lists it -> bytes


@dataclass(frozen=True)
class VerifiedBundle:
    manifest: Manifest
    manifest_bytes: bytes  # exactly what was parsed (and what a signature covers)
    graphs: Mapping[str, GraphBlob]
    signature: Optional[bytes]  # manifest.sig, when present (checked by sam2_edge.contract.signing)


# a bundle's graphs are read into memory: refuse anything larger than any model needs
MAX_GRAPH_BYTES = 4 << 30
SIGNATURE_NAME = "manifest.sig"
MAX_SIGNATURE_BYTES = 64 << 10


def read_bundle(bundle_dir) -> VerifiedBundle:
    """Validate a bundle and read every graph (and data file) into memory exactly once,
    checking the sha256 of those bytes. BundleError on any problem."""
    root = Path(bundle_dir)
    manifest_bytes = read_manifest_bytes(root)
    m = _load(root, manifest_bytes, verify_hashes=False)
    blobs: Dict[str, GraphBlob] = {}
    for stage, g in m.graphs.items():
        if g.path.is_dir():
            files = {rel: read_regular(g.path / rel, MAX_GRAPH_BYTES, f"{stage} graph file")
                     for rel in package_files(g.path)}
            actual, data = hash_package(files), b""
        else:
            files, data = {}, read_regular(g.path, MAX_GRAPH_BYTES, f"{stage} graph")
            actual = sha256_bytes(data)
        if actual != g.sha256:
            raise BundleError(f"graph {g.file!r} ({stage}) was altered or corrupted: its sha256 is {actual}, the "
                              f"manifest records {g.sha256}. Copy the bundle again or re-export it "
                              "(sam2-edge export).")
        extra = {}
        for df in g.data_files:
            blob = read_regular(df.path, MAX_GRAPH_BYTES, f"{stage} data file")
            if sha256_bytes(blob) != df.sha256:
                raise BundleError(f"data file {df.file!r} of {stage} was altered or corrupted (sha256 "
                                  f"{sha256_bytes(blob)}, manifest {df.sha256}); copy the bundle again or re-export it")
            extra[df.file] = blob
        blobs[stage] = GraphBlob(stage, g.file, data, files, extra)
    for a in m.attachments:  # not run, but covered by the bundle's integrity (and signature)
        if sha256_bytes(read_regular(a.path, MAX_GRAPH_BYTES, "attachment")) != a.sha256:
            raise BundleError(f"{a.file!r} was altered or corrupted; copy the bundle again or re-export it")
    sig_path = root / SIGNATURE_NAME
    signature = None
    if os.path.lexists(sig_path):
        if os.path.islink(sig_path):
            raise BundleError(f"{sig_path} is a symbolic link; do not use this bundle")
        signature = read_regular(sig_path, MAX_SIGNATURE_BYTES, "signature")
    return VerifiedBundle(m, manifest_bytes, blobs, signature)


__all__ = ["load_manifest", "read_manifest_text", "read_manifest_bytes", "resolve_inside", "read_bundle",
           "GraphBlob", "VerifiedBundle", "SIGNATURE_NAME"]
