"""Torch backend: runs the eager stage modules (CPU, CUDA or MPS). The reference for every
exported backend. Imports torch only when constructed."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ...errors import BackendUnavailableError
from ...contract import STAGES
from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, device: str = "cpu", cond_slots: int = 2) -> None:
        import torch

        from ...stages import build_stages, tracker_spec

        super().__init__(tracker_spec(model, cond_slots))
        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.stages = dict(zip(STAGES, build_stages(self.model)))

    @classmethod
    def from_checkpoint(cls, path: str, variant: Optional[str] = None, device: str = "cpu",
                        image_size: Optional[int] = None, cond_slots: int = 2) -> "TorchBackend":
        try:
            from ...checkpoint import load_checkpoint
        except ModuleNotFoundError as e:
            if e.name == "torch":
                raise BackendUnavailableError("the torch backend needs PyTorch: pip install 'sam2-edge[torch]'") from None
            raise
        model, _ = load_checkpoint(path, variant, image_size)
        return cls(model, device, cond_slots)

    def run(self, stage: str, inputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
        torch = self.torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
            out = self.stages[stage](*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return tuple(o.detach().float().cpu().numpy() for o in out)
