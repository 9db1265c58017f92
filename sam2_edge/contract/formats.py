"""Bundle formats, precisions and backends: the one registry the exporters, the runtime, the
CLI and `sam2-edge bench` read. A new format, precision or backend is added here (and its
exporter module / backend module is written); nothing else lists them.

Standard library only.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Dict, Optional, Tuple

from ..errors import ConfigError


class Precision(str, Enum):
    """Numeric precision of a bundle's graphs (inputs and outputs stay fp32 / int32)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # static W8A8: int8 weights (per channel), calibrated int8 activations (ONNX QDQ)
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantised at run time
    # CoreML weight palettisation (coremltools.optimize): each weight an index into a 2^n-entry lookup table
    PALETTIZE4 = "palettize4"
    PALETTIZE6 = "palettize6"
    PALETTIZE8 = "palettize8"

    @property
    def quantized(self) -> bool:
        """An integer / palettised precision: made by sam2_edge.quantization (sam2-edge quantize), not by
        the exporters."""
        return self not in (Precision.FP32, Precision.FP16)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value, fmt: Optional[str] = None, quantized: bool = False) -> "Precision":
        """`value` as a Precision, checked against what format `fmt` can express. The exporters
        (quantized=False) make float bundles only: int8 / int8-dynamic are refused there, they are
        made by sam2_edge.quantization (which passes quantized=True)."""
        allowed = FORMATS[fmt].precisions if fmt in FORMATS else tuple(cls)
        if not quantized:
            allowed = tuple(x for x in allowed if not x.quantized)
        try:
            p = cls(value.value if isinstance(value, cls) else value)
        except ValueError:
            raise ConfigError(f"unknown precision {value!r}; choose one of: "
                              f"{', '.join(x.value for x in allowed)}") from None
        if p.quantized and not quantized:
            raise ConfigError(f"unknown precision {p.value!r} for an export (choose one of: "
                              f"{', '.join(x.value for x in allowed)}); {p.value} bundles are made by quantization: "
                              f"`sam2-edge quantize --precision {p.value}` or `sam2-edge export --precision {p.value}` "
                              "(sam2_edge.quantization.pipeline.quantize)")
        if p not in allowed:
            raise ConfigError(f"a {fmt} bundle cannot be {p.value}; choose one of: "
                              f"{', '.join(x.value for x in allowed)}")
        return p


@dataclass(frozen=True)
class BundleFormat:
    name: str  # as written in manifest.json "format"
    suffix: str  # of each graph file (a CoreML .mlpackage is a folder)
    backend: str  # the backend that runs it by default
    precisions: Tuple[Precision, ...]
    default_precision: Precision
    export_modules: Tuple[str, ...]  # Python packages the exporter needs
    export_extra: str  # pip extra that installs them


@dataclass(frozen=True)
class BackendInfo:
    name: str
    format: Optional[str]  # bundle format it runs; None: it runs a checkpoint (torch)
    modules: Tuple[str, ...]  # Python packages the backend needs to run
    extra: str  # pip extra that installs them
    platforms: Optional[Tuple[str, ...]] = None  # sys.platform values it runs on (None: any)
    platform_note: str = ""


FORMATS: Dict[str, BundleFormat] = {
    # int8 / int8-dynamic: written by sam2_edge.quantization (onnxruntime.quantization) from an fp32 export
    "onnx": BundleFormat("onnx", ".onnx", "onnxruntime",
                         (Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT8_DYNAMIC), Precision.FP32,
                         ("torch", "onnx", "onnxscript", "onnxruntime"), "export-onnx"),
    # int8 / int8-dynamic: PT2E with the XNNPACK quantizer, lowered to XNNPACK (sam2_edge.quantization)
    "executorch": BundleFormat("executorch", ".pte", "executorch",
                               (Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT8_DYNAMIC), Precision.FP32,
                               ("torch", "executorch"), "executorch"),
    # CoreML runs fp16 on the Neural Engine / GPU: fp16 compute is its default; int8 (linear weight
    # quantisation) and palettize4/6/8 (weight lookup tables) come from coremltools.optimize
    "coreml": BundleFormat("coreml", ".mlpackage", "coreml",
                           (Precision.FP16, Precision.FP32, Precision.INT8, Precision.PALETTIZE4, Precision.PALETTIZE6,
                            Precision.PALETTIZE8), Precision.FP16,
                           ("torch", "coremltools"), "coreml"),
}

BACKENDS: Dict[str, BackendInfo] = {
    "torch": BackendInfo("torch", None, ("torch",), "torch"),
    "onnxruntime": BackendInfo("onnxruntime", "onnx", ("onnxruntime",), "onnx"),
    "executorch": BackendInfo("executorch", "executorch", ("executorch",), "executorch"),
    "coreml": BackendInfo("coreml", "coreml", ("coremltools",), "coreml", ("darwin",),
                          "the CoreML runtime runs on macOS only (on Linux or Windows, track with an ONNX or "
                          "ExecuTorch bundle of the same checkpoint)"),
}

BACKEND_ALIASES: Dict[str, str] = {
    "onnx": "onnxruntime", "ort": "onnxruntime", "et": "executorch", "pte": "executorch", "xnnpack": "executorch",
    "coremltools": "coreml", "mlpackage": "coreml", "pytorch": "torch", "eager": "torch",
}


def resolve_backend(name: str) -> str:
    """The canonical backend name of `name` (aliases accepted); ConfigError when unknown."""
    if not isinstance(name, str):
        raise ConfigError(f"backend must be a name ({', '.join(BACKENDS)}), got {name!r}")
    key = name.strip().lower()
    key = BACKEND_ALIASES.get(key, key)
    if key not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return key


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def backend_unavailable(name: str, export: bool = False) -> Optional[str]:
    """None when backend `name` runs here (and its format can be exported, if `export`),
    else the reason, naming the fix."""
    info = BACKENDS[resolve_backend(name)]
    if info.platforms is not None and sys.platform not in info.platforms:
        return info.platform_note or f"the {info.name} backend does not run on {sys.platform}"
    mods = info.modules
    extra = info.extra
    if export and info.format is not None:
        fmt = FORMATS[info.format]
        mods = mods + fmt.export_modules
        extra = fmt.export_extra
    missing = sorted({m for m in mods if not _installed(m)})
    if missing:
        return f"needs {', '.join(missing)}: pip install 'sam2-edge[{extra}]'"
    return None


__all__ = ["Precision", "BundleFormat", "BackendInfo", "FORMATS", "BACKENDS", "BACKEND_ALIASES", "resolve_backend",
           "backend_unavailable"]
