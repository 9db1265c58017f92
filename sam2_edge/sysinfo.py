"""What this process and machine look like: resident memory, load, CPU, cores. Standard
library only (psutil used when installed); shared by `sam2-edge bench`, the demo's HUD and
the soak benchmark, so there is one RSS reader."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import List, Optional


def rss_bytes() -> Optional[int]:
    """Current resident set size of this process in bytes (None where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            import resource

            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ImportError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - optional dependency, any failure means "unknown"
        return None


def peak_rss_bytes() -> Optional[int]:
    """Peak resident set size of this process in bytes (None where it cannot be read)."""
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil  # type: ignore

            return int(psutil.Process().memory_info().peak_wset)
        except Exception:  # noqa: BLE001 - optional dependency
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_name() -> str:
    """The CPU model as the OS names it (/proc/cpuinfo, sysctl on macOS, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and val.strip():
                    return val.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def board_name() -> Optional[str]:
    """The board model on single-board computers (Raspberry Pi, Jetson), from the device tree."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\0 \n") or None
    except OSError:
        return None


def physical_cores() -> int:
    """Physical CPU cores (torch's and ONNX Runtime's default thread count), without torch."""
    try:
        import psutil  # type: ignore

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:  # noqa: BLE001 - optional dependency
        pass
    try:
        cores, phys = set(), None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = val.strip()
                elif key == "core id":
                    cores.add((phys, val.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=5)
            return int(out.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return int(os.cpu_count() or 1)
