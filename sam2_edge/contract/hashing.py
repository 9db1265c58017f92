"""sha256 of checkpoints and bundle graphs: the one definition the exporter (writing the
manifest), the loader (checking it) and `sam2-edge info` use. Standard library only."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List

from ..errors import BundleError

CHUNK = 1 << 20


def sha256_bytes(data) -> str:
    """Hex sha256 of an in-memory buffer."""
    return hashlib.sha256(data).hexdigest()


def _sha256_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.digest()


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    return _sha256_digest(Path(path)).hex()


def package_files(root: Path) -> List[str]:
    """Relative POSIX paths of every regular file under directory `root`, sorted; a
    symbolic link to a directory inside it is refused (BundleError)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            out.append((Path(dirpath) / name).relative_to(root).as_posix())
        for name in dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise BundleError(f"{p} is a symbolic link to a directory; graph packages must hold plain files. "
                                  "Re-export the bundle (sam2-edge export).")
    return sorted(out)


def hash_graph(path) -> str:
    """sha256 (hex) of a graph: of the file's bytes for a file; for a directory (a CoreML
    .mlpackage) of the concatenation, over every regular file below it in sorted order of
    its relative POSIX path, of `path UTF-8 bytes + b"\\0" + sha256(file bytes) (32 bytes)`."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for rel in package_files(path):
            h.update(rel.encode("utf-8") + b"\0")
            h.update(_sha256_digest(path / rel))
        return h.hexdigest()
    return sha256_file(path)
