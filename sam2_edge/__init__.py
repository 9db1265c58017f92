"""sam2-edge: SAM 2 / SAM 2.1 on edge and mobile devices.

`import sam2_edge` never imports torch; the torch-based model parts load on first use:

    from sam2_edge import build_sam2, ImagePredictor      # needs the `torch` extra
    from sam2_edge.runtimes import Tracker                 # numpy + a backend runtime
"""

from __future__ import annotations

from .configs import ModelConfig, get_config, list_variants
from .errors import (BackendUnavailableError, BundleError, CheckpointError, ConfigError, InputError,
                     Sam2EdgeError, StateError)

__version__ = "0.1.0"

_LAZY = {
    "build_sam2": ("sam2_edge.checkpoint", "build_sam2"),
    "load_checkpoint": ("sam2_edge.checkpoint", "load_checkpoint"),
    "ImagePredictor": ("sam2_edge.image_predictor", "ImagePredictor"),
    "SAM2Model": ("sam2_edge.modeling.sam2", "SAM2Model"),
}

__all__ = ["ModelConfig", "get_config", "list_variants", "Sam2EdgeError", "CheckpointError", "ConfigError",
           "InputError", "StateError", "BundleError", "BackendUnavailableError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name][0])
        except ModuleNotFoundError as e:
            if e.name == "torch":
                raise BackendUnavailableError(
                    f"sam2_edge.{name} needs PyTorch: pip install 'sam2-edge[torch]'") from None
            raise
        return getattr(module, _LAZY[name][1])
    raise AttributeError(f"module 'sam2_edge' has no attribute {name!r}")
