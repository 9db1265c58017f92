"""The process heap: make glibc's malloc give large freed blocks back to the system.

Why. glibc's malloc serves a block from its heap unless it is at least the mmap threshold,
which starts at 128 KiB and *rises* (up to 32 MiB) each time a larger mmap'ed block is freed.
After ONNX Runtime has parsed a graph (thousands of weight buffers, freed once the session
holds its own copies) and run a stage (activations of 1-144 MiB each, allocated and freed
every frame when the memory arena is off), most of that freed memory stays in the heap's free
lists: resident, unused, counted in the process's RSS. Measured with sam2.1-hiera-tiny at
1024 px (benchmarks/README.md, "ONNX Runtime: where the memory goes"): the image encoder's
session holds 269 MiB with the default threshold and 151 MiB with a fixed 1 MiB threshold.

A fixed threshold (`mallopt(M_MMAP_THRESHOLD)`) turns the dynamic adjustment off: every block
of at least `threshold` bytes is its own mapping, returned to the system when freed. Smaller
blocks are served from the heap as before. Process-wide, so it is done once, only on glibc
(Linux boards: Raspberry Pi OS, Jetson Linux, Debian / Ubuntu), and never when the user set
the threshold themselves (the MALLOC_MMAP_THRESHOLD_ environment variable or GLIBC_TUNABLES).
Standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
from typing import Optional

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
DEFAULT_MMAP_THRESHOLD = 1 << 20  # 1 MiB: large blocks come back; per-node buffers below it stay fast

_lock = threading.Lock()
_applied: Optional[int] = None  # the threshold set in this process, once set


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return libc


def user_set_threshold() -> bool:
    """True when the user tuned glibc's malloc themselves (left as they set it)."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def return_large_blocks_to_os(threshold: int = DEFAULT_MMAP_THRESHOLD) -> Optional[int]:
    """Fix glibc's mmap threshold at `threshold` bytes (once per process). Returns the
    threshold in effect from this call on, or None where nothing was changed (not glibc,
    or the user's own setting, which is kept)."""
    global _applied
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number of bytes, got {threshold!r}")
    with _lock:
        if _applied is not None:
            return _applied
        if user_set_threshold():
            return None
        libc = _glibc()
        if libc is None:
            return None
        if libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) != 1:
            return None
        _applied = int(threshold)
        return _applied


def applied_threshold() -> Optional[int]:
    """The threshold this module set in this process, or None."""
    return _applied
