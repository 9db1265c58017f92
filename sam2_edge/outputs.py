"""Where the commands write: one rule for every output path of `sam2-edge export`, `track`,
`demo` and `bench`, so that nothing the user owns is ever overwritten or deleted by surprise.

* **Checked first.** `check_dir` / `check_file` run before the long work starts (the export,
  the tracking, the benchmark): the path is not under /proc or /sys, is not a symbolic link,
  is a folder where a folder is needed and a file where a file is needed, and its parent exists
  (or can be created) and is writable. Any problem is an `OutputError` naming the path and the fix.
* **Folders are staged.** A command writes a folder into a temporary sibling (`StagedDir`,
  ``.NAME.XXXX.partial``) and moves it into place when it is complete (`replace_dir`). A folder
  already at the path is replaced only when it is empty or when the same command made it (the
  `owned` predicate the command gives: a bundle whose manifest sam2-edge wrote, a track output
  folder with its marker file, a folder of mask PNGs); anything else is an error and is left as
  it is. The old folder is renamed aside first and removed only once the new one is in place.
* **Files** are written to a temporary sibling and renamed over the path (`replacing_file`,
  `write_text`), so a crash never leaves half a file.

Standard library only (base layer).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from .errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]
Owned = Callable[[Path], bool]

# kernel pseudo-filesystems: writing there changes the machine, not a file
FORBIDDEN_ROOTS = ("/proc", "/sys")
# the marker file a command leaves in an output folder it made (see `write_marker`)
MARKER_NAME = "sam2_edge_output.json"
_MARKER_MAX_BYTES = 1 << 16
_MANIFEST_MAX_BYTES = 64 << 20

__all__ = ["OutputError", "MARKER_NAME", "check_dir", "check_file", "StagedDir", "replace_dir", "replacing_file",
           "write_text", "write_marker", "has_marker", "made_bundle", "is_empty_dir", "only_entries"]


def _name(flag: Optional[str], path: object) -> str:
    return f"{flag} {str(path)!r}" if flag else repr(str(path))


def _as_path(path: PathLike, flag: Optional[str]) -> Path:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise OutputError(f"{flag or 'the output path'} must be a path, got {path!r:.60}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise OutputError(f"{flag or 'the output path'} is empty; give a file or folder name")
    if "\0" in text:
        raise OutputError(f"{flag or 'the output path'} {text!r:.80} contains a NUL character")
    return Path(os.path.abspath(text))


def _under_forbidden(p: Path) -> Optional[str]:
    for cand in (str(p), os.path.realpath(p)):
        for root in FORBIDDEN_ROOTS:
            if cand == root or cand.startswith(root + os.sep):
                return root
    return None


def _nearest_existing(p: Path) -> Path:
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    return p


def _check_place(p: Path, flag: Optional[str]) -> None:
    """Not under /proc or /sys; the parent folder exists (or can be created) and is writable."""
    root = _under_forbidden(p)
    if root is not None:
        raise OutputError(f"{_name(flag, p)} is under {root}, a kernel file system, not a place for output; "
                          "give a path in one of your own folders")
    anc = _nearest_existing(p.parent)
    if not anc.is_dir():
        raise OutputError(f"{_name(flag, p)}: {str(anc)!r} is a file, not a folder; give a path whose folders "
                          "are folders")
    if not os.access(anc, os.W_OK | os.X_OK):
        what = "the folder" if anc == p.parent else "the nearest existing folder"
        raise OutputError(f"{_name(flag, p)}: cannot write in {what} {str(anc)!r} (permission denied or a "
                          "read-only file system); choose a folder you can write to")


def check_file(path: PathLike, flag: Optional[str] = None, suffixes: Optional[Sequence[str]] = None,
               what: str = "file") -> Path:
    """Check an output file path before the work that produces it; -> its absolute Path.

    An existing regular file there is overwritten (the user named it); a folder, a symbolic link,
    a device or a path under /proc or /sys is an OutputError. `suffixes`: the accepted extensions
    (lower case, with the dot)."""
    p = _as_path(path, flag)
    if os.path.islink(p):
        raise OutputError(f"{_name(flag, path)} is a symbolic link; sam2-edge does not write through links: "
                          "give the path of a real file")
    if p.exists():
        if p.is_dir():
            raise OutputError(f"{_name(flag, path)} is a folder; give a {what} name (e.g. "
                              f"{str(p / ('out' + (sorted(suffixes)[0] if suffixes else '')))!r})")
        if not p.is_file():
            raise OutputError(f"{_name(flag, path)} is not a regular file (a device, pipe or socket); "
                              f"give the path of a {what}")
        if not os.access(p, os.W_OK):
            raise OutputError(f"{_name(flag, path)} exists and is not writable; choose another {what} name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputError(f"{_name(flag, path)}: a {what} must end in one of {', '.join(sorted(suffixes))}, "
                          f"got {p.suffix or '(no extension)'!r}")
    _check_place(p, flag)
    return p


def _check_existing_dir(p: Path, flag: Optional[str], owned: Owned, kind: str, path: object) -> None:
    if os.path.islink(p):
        raise OutputError(f"{_name(flag, path)} is a symbolic link; sam2-edge never replaces a link (nor what "
                          "it points to): give the path of a real folder")
    if not os.path.lexists(p):
        return
    if not p.is_dir():
        raise OutputError(f"{_name(flag, path)} is a file; give a folder (a new one is created)")
    try:
        empty = is_empty_dir(p)
    except OSError as e:
        raise OutputError(f"{_name(flag, path)}: cannot read the folder ({e.strerror or e}); give another "
                          "folder") from None
    if not empty and not owned(p):
        raise OutputError(f"{_name(flag, path)} is a non-empty folder that is not {kind}; it was left untouched "
                          "(sam2-edge replaces only a folder it made itself). Give a new or empty folder, or move "
                          "its files away yourself")


def check_dir(path: PathLike, flag: Optional[str], owned: Owned, kind: str) -> Path:
    """Check an output folder path before the work that fills it; -> its absolute Path.

    The folder may be missing, empty, or one that `owned` says this command made (`kind`
    describes such a folder for the message, e.g. "a bundle made by sam2-edge export"); it is
    then replaced as a whole by `StagedDir`. Anything else is an OutputError."""
    p = _as_path(path, flag)
    if Path(os.fspath(path)).name in ("", ".", "..") or p.parent == p:
        raise OutputError(f"{_name(flag, path)}: give the output folder by its name (not '.', '..' or '/'), "
                          "e.g. a new folder next to your files")
    _check_existing_dir(p, flag, owned, kind, path)
    _check_place(p, flag)
    return p


def check_writable_dir(path: PathLike, flag: Optional[str] = None) -> Path:
    """Check a folder that a command only adds new files to (never replaces), e.g. the demo's
    snapshots: a folder or a creatable path, writable, not under /proc or /sys."""
    p = _as_path(path, flag)
    if os.path.lexists(p):
        root = _under_forbidden(p)
        if root is not None:
            raise OutputError(f"{_name(flag, path)} is under {root}, a kernel file system, not a place for "
                              "output; give a path in one of your own folders")
        if not p.is_dir():
            raise OutputError(f"{_name(flag, path)} is not a folder; give a folder (a new one is created)")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"{_name(flag, path)}: cannot write in this folder (permission denied or a "
                              "read-only file system); choose a folder you can write to")
        return p
    _check_place(p, flag)
    return p


def staging_dir(out: Path) -> Path:
    """A fresh temporary sibling of `out` to write into, with the permissions a folder made by
    mkdir would have (mkdtemp makes it 0700, which would leave the finished output unreadable
    to other users and services)."""
    path = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)
    return path


def replace_dir(tmp: PathLike, out: PathLike, flag: Optional[str], owned: Owned, kind: str) -> Path:
    """Move the complete folder `tmp` (a sibling of `out`) to `out`. A folder at `out` is checked
    again (it may have changed during the work) and replaced only when empty or `owned`; it is
    renamed aside first and deleted only once `tmp` is in place."""
    tmp, out = Path(tmp), Path(os.path.abspath(os.fspath(out)))
    _check_existing_dir(out, flag, owned, kind, out)
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return out
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rmdir(old)                     # a unique free name next to `out`
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)           # put the previous folder back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


class StagedDir:
    """Write an output folder into a temporary sibling; `commit()` moves it into place.

        out = check_dir(a.out, "--out", owned, kind)          # before the long work
        with StagedDir(out, "--out", owned, kind) as stage:
            ... write into stage.path ...
            stage.commit()

    Leaving the block without `commit()` (an error, Ctrl-C) removes the temporary folder.
    """

    def __init__(self, out: PathLike, flag: Optional[str], owned: Owned, kind: str) -> None:
        self.out = Path(os.path.abspath(os.fspath(out)))
        self.flag, self.owned, self.kind = flag, owned, kind
        self.path: Optional[Path] = None
        self.committed = False

    def __enter__(self) -> "StagedDir":
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"{_name(self.flag, self.out)}: a file is in the way of folder "
                              f"{str(self.out.parent)!r}") from None
        self.path = staging_dir(self.out)
        return self

    def commit(self) -> Path:
        assert self.path is not None, "commit() inside the with block"
        replace_dir(self.path, self.out, self.flag, self.owned, self.kind)
        self.committed = True
        return self.out

    def __exit__(self, *exc: object) -> None:
        if not self.committed and self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def replacing_file(path: PathLike, flag: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it is renamed over `path`
    (checked again first), on failure removed. The parent folders are created."""
    p = check_file(path, flag)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{_name(flag, path)}: a file is in the way of folder {str(p.parent)!r}") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial" + p.suffix, dir=p.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        check_file(p, flag)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: PathLike, text: str, flag: Optional[str] = None) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary sibling."""
    with replacing_file(path, flag) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(os.path.abspath(os.fspath(path)))


# ------------------------------------------------------------------ what a command made
def is_empty_dir(p: PathLike) -> bool:
    with os.scandir(p) as it:
        return next(it, None) is None


def _read_json(path: Path, max_bytes: int) -> object:
    """The decoded JSON of a small regular file, or None (missing, a link, too big, invalid)."""
    try:
        if os.path.islink(path) or not path.is_file() or path.stat().st_size > max_bytes:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def write_marker(folder: PathLike, command: str, **info: object) -> Path:
    """Leave `MARKER_NAME` in an output folder: the proof that `sam2-edge COMMAND` made it,
    which lets the next run of that command replace the folder."""
    from . import __version__

    data = {"written_by": "sam2-edge", "command": command, "version": __version__, **info}
    path = Path(folder) / MARKER_NAME
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def has_marker(folder: PathLike, command: str) -> bool:
    data = _read_json(Path(folder) / MARKER_NAME, _MARKER_MAX_BYTES)
    return isinstance(data, dict) and data.get("written_by") == "sam2-edge" and data.get("command") == command


def made_bundle(folder: PathLike, manifest_name: str) -> bool:
    """True for a bundle folder sam2-edge export wrote: its manifest parses as a JSON object
    with a schema_version and exporter.name == "sam2-edge"."""
    data = _read_json(Path(folder) / manifest_name, _MANIFEST_MAX_BYTES)
    if not isinstance(data, dict) or "schema_version" not in data:
        return False
    exporter = data.get("exporter")
    return isinstance(exporter, dict) and exporter.get("name") == "sam2-edge"


def only_entries(folder: PathLike, files: Callable[[str], bool],
                 dirs: Optional[dict] = None) -> bool:
    """True when every entry of `folder` is a regular file whose name `files` accepts, or a
    folder named in `dirs` whose entries that name's predicate accepts (regular files only).
    Links, devices and anything else make it False."""
    dirs = dirs or {}
    try:
        with os.scandir(folder) as it:
            entries = list(it)
        for e in entries:
            if e.is_symlink():
                return False
            if e.is_file(follow_symlinks=False):
                if not files(e.name):
                    return False
            elif e.is_dir(follow_symlinks=False) and e.name in dirs:
                if not only_entries(e.path, dirs[e.name]):
                    return False
            else:
                return False
    except OSError:
        return False
    return True
