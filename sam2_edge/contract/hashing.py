"""sha256 of checkpoints and bundle graphs: the one definition the exporter (writing the
manifest), the loader (checking it) and `sam2-edge info` use. Standard library only."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import List, Optional

from ..errors import BundleError

CHUNK = 1 << 20


def sha256_bytes(data) -> str:
    """Hex sha256 of an in-memory buffer."""
    return hashlib.sha256(data).hexdigest()


def open_regular(path, what: str = "file"):
    """Open `path` for reading only if it is a regular file (a FIFO, device or socket would
    block or never end: BundleError). Returns a binary file object."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise BundleError(f"cannot open {what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{what} {path} is not a regular file (a FIFO, device or socket?); a bundle holds "
                              "plain files only. Do not use this bundle; re-export it.")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path, limit: Optional[int] = None, what: str = "file") -> bytes:
    """The bytes of regular file `path` (at most `limit`, else BundleError), read once."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise BundleError(f"{what} {path} is {size} bytes, more than the {limit} allowed; the bundle is "
                              "corrupt. Re-export it.")
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise BundleError(f"{what} {path} grew past {limit} bytes while it was read; re-export the bundle")
    return data


def _sha256_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open_regular(path, "graph file") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.digest()


def hash_package(files) -> str:
    """hash_graph of a folder given in memory as {relative POSIX path: bytes}."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode("utf-8") + b"\0")
        h.update(hashlib.sha256(files[rel]).digest())
    return h.hexdigest()


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
