"""Image encoder: Hiera (SAM 2 / 2.1) or RepViT (EdgeTAM) trunk + FPN neck (nearest top-down
into the two coarsest levels [2, 3], sum fusion; the stride-32 level is dropped after feeding level 2)."""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ModelConfig
from .hiera import Hiera
from .repvit import RepViT
from .position_encoding import sine_pe_2d


class FpnNeck(nn.Module):
    """1x1 lateral convs; nearest x2 top-down into levels 2 and 3 only; sum fusion."""

    def __init__(self, d_model: int, backbone_channel_list: Tuple[int, ...]) -> None:
        super().__init__()
        self.d_model = d_model
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            seq = nn.Sequential()
            seq.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(seq)
        self.top_down_levels = (2, 3)

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        n = len(self.convs) - 1
        out: List[torch.Tensor] = [xs[0]] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                prev = lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            else:
                prev = lateral
            out[i] = prev
        return out


class ImageEncoder(nn.Module):
    """[B, 3, S, S] -> three FPN levels (strides 4, 8, 16; the stride-32 level is dropped)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.trunk == "repvit":
            self.trunk = RepViT(cfg.repvit)
        else:
            self.trunk = Hiera(cfg.hiera, cfg.image_size)
        self.neck = FpnNeck(cfg.d_model, cfg.channel_list)
        f = cfg.feat_size
        # only the stride-16 level's sine encoding is used downstream (memory attention)
        self.register_buffer("pos_level2", sine_pe_2d(cfg.d_model, f, f), persistent=False)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = self.neck(self.trunk(x))
        return feats[:3]  # scalp=1: drop the stride-32 level
