"""Hiera trunk (Ryali et al. 2023) as used by SAM 2: windowed / global multi-scale blocks
with 2x2 query pooling at stage changes. Official parameter names."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import HieraConfig
from .common import MLP


def window_partition(x: torch.Tensor, ws: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """[B, H, W, C] -> [B * nW, ws, ws, C], zero-padding H, W up to multiples of ws."""
    b, h, w, c = x.shape
    ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // ws, ws, wp // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(x: torch.Tensor, ws: int, pad_hw: Tuple[int, int],
                       hw: Tuple[int, int]) -> torch.Tensor:
    """[B * nW, ws, ws, C] -> [B, H, W, C], dropping the padding."""
    hp, wp = pad_hw
    h, w = hw
    b = x.shape[0] // (hp * wp // ws // ws)
    x = x.reshape(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # [B, 3, S, S] -> [B, S/4, S/4, C]


class MultiScaleAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)  # each [B, HW, heads, d]
        if self.q_pool:
            q = q.reshape(b, h, w, -1).permute(0, 3, 1, 2)
            q = F.max_pool2d(q, kernel_size=2, stride=2).permute(0, 2, 3, 1)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x.transpose(1, 2).reshape(b, h, w, -1)  # [B, heads, HW, d] -> [B, H, W, C]
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, window_size: int, q_pool: bool) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_pool = q_pool
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, 4 * dim_out, dim_out, 2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x  # [B, H, W, C]
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x).permute(0, 3, 1, 2)
            shortcut = F.max_pool2d(shortcut, kernel_size=2, stride=2).permute(0, 2, 3, 1)
        ws = self.window_size
        h, w = x.shape[1], x.shape[2]
        if ws > 0:
            x, pad_hw = window_partition(x, ws)
        x = self.attn(x)
        if self.q_pool:
            ws = self.window_size // 2
            h, w = shortcut.shape[1:3]
            pad_hw = (h + (ws - h % ws) % ws, w + (ws - w % ws) % ws) if ws > 0 else (h, w)
        if self.window_size > 0:
            x = window_unpartition(x, ws, pad_hw, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    def __init__(self, cfg: HieraConfig, image_size: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        ws0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, ws0, ws0))
        self.stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        q_pool_blocks = [e + 1 for e in self.stage_ends[:-1]]
        self.blocks = nn.ModuleList()
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(sum(cfg.stages)):
            dim_out = dim
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            if i - 1 in self.stage_ends:  # first block of a new stage pools queries
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            self.blocks.append(MultiScaleBlock(dim, dim_out, heads, window, i in q_pool_blocks))
            dim = dim_out
        self._feat_hw = image_size // 4
        self._pos_cache: Optional[torch.Tensor] = None

    def freeze_positional_embedding(self) -> None:
        """Compute the positional embedding once (weights are fixed at inference) so exported
        graphs carry a constant instead of a bicubic resize."""
        with torch.no_grad():
            self._pos_cache = self.positional_embedding().detach().clone()

    def freeze(self) -> None:
        """Prepare for the exported (inference-only) graphs (every trunk has this hook)."""
        self.freeze_positional_embedding()

    def positional_embedding(self) -> torch.Tensor:
        """Bicubic-resized background embed + tiled window embed: [1, S/4, S/4, C]."""
        hw = self._feat_hw
        pos = F.interpolate(self.pos_embed, size=(hw, hw), mode="bicubic")
        reps = [p // w for p, w in zip(pos.shape, self.pos_embed_window.shape)]
        return (pos + self.pos_embed_window.tile(reps)).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """[B, 3, S, S] -> four stage outputs [B, C_i, S/4/2^i, S/4/2^i], shallowest first."""
        pos = self._pos_cache if self._pos_cache is not None else self.positional_embedding()
        x = self.patch_embed(x) + pos
        outputs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
