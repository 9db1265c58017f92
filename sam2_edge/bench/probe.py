"""What `sam2-edge bench` records about the machine: platform, CPU / board, library versions,
thread-related environment, and the default thread count. Standard library only (torch is
imported only to read its own default thread count when a torch target runs)."""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import Optional

from ..contract import backend_unavailable
from ..sysinfo import board_name, cpu_name, load_average, peak_rss_bytes, physical_cores, rss_bytes

VERSIONED = ("numpy", "torch", "onnxruntime", "executorch", "coremltools")
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")
# distributions that install the `onnxruntime` module under another name
_ORT_DISTS = ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")


def library_version(module: str) -> Optional[str]:
    """The installed version of `module` ("installed" when it has no distribution metadata),
    None when it is not installed."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib import metadata

        try:
            return metadata.version(module)
        except metadata.PackageNotFoundError:
            for alt in _ORT_DISTS if module == "onnxruntime" else ():
                try:
                    return metadata.version(alt)
                except metadata.PackageNotFoundError:
                    continue
    except Exception:  # noqa: BLE001 - broken metadata: the module is still there
        pass
    return "installed"


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "board": board_name(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {m: library_version(m) for m in VERSIONED},
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }


def default_threads(need_torch: bool = False) -> int:
    """torch's default intra-op thread count when a torch target runs (one per physical core),
    else the physical core count (torch is not imported for bundle-only runs)."""
    if need_torch and backend_unavailable("torch") is None:
        import torch

        return int(torch.get_num_threads())
    return physical_cores()


__all__ = ["machine_info", "library_version", "default_threads", "load_average", "physical_cores", "rss_bytes",
           "peak_rss_bytes"]
