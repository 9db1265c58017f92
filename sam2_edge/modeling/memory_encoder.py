"""Memory encoder: mask downsampler (4 x conv-s2 + LayerNorm2d + GELU, then 1x1) added to
the projected stride-16 features, two ConvNeXt blocks (CXBlock), 1x1 out projection."""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d


class MaskDownSampler(nn.Module):
    def __init__(self, embed_dim: int, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                 total_stride: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential()
        cin = 1
        n = 0
        s = 1
        while s < total_stride:
            cout = cin * stride * stride
            self.encoder.append(nn.Conv2d(cin, cout, kernel_size, stride, padding))
            self.encoder.append(LayerNorm2d(cout))
            self.encoder.append(nn.GELU())
            cin, s, n = cout, s * stride, n + 1
        self.encoder.append(nn.Conv2d(cin, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # [B, 1, S, S] -> [B, C, S/16, S/16]


class CXBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # [B, C, H, W] -> [B, H, W, C]
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, mask_for_mem: torch.Tensor) -> torch.Tensor:
        """pix_feat [B, C, h, w] (raw stride-16 features), mask_for_mem [B, 1, S, S]
        (already scaled to the memory-encoder range) -> [B, mem_dim, h, w]."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask_for_mem)
        return self.out_proj(self.fuser(x))
