"""EdgeTAM's 2-D spatial perceiver (`PerceiverResampler`): compresses one frame's memory
features (mem_dim x f x f, 4,096 tokens at S = 1024) to `num_latents` global latents that
attend to the whole map + `num_latents_2d` latents on a g x g grid, each attending only to
its own (f/g x f/g) window. Both paths run the SAME layers (cross-attention, FF, latent
self-attention, FF) and the final LayerNorm. One head of width mem_dim, no biases,
LayerNorm eps 1e-5, exact GELU.

Output tokens = [global ; 2-D], each mem_dim wide; their positional encoding (a constant,
`pos`) = [zeros ; 2-D sine of the g x g latent grid], the same for every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import PerceiverConfig
from .position_encoding import sine_pe_2d


def FeedForward(dim: int, mult: int = 4) -> nn.Sequential:  # noqa: N802 (official name, children 0..3)
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """Latents attend to inputs x; the inputs' positional encoding (if any) is added to the
    projected keys AND values."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos=None) -> torch.Tensor:
        """latents [B, L, d], x [B, N, d], pos [B or 1, N, d] or None -> [B, L, d]."""
        q = self.to_q(self.norm_latents(latents))
        k, v = self.to_kv(self.norm_x(x)).chunk(2, dim=-1)
        if pos is not None:
            k, v = k + pos, v + pos
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])  # one head
        return self.to_out(out[:, 0])


class Attention(nn.Module):
    """Self-attention of the latents (pre-norm, one head)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])
        return self.to_out(out[:, 0])


class PerceiverEncoderLayer(nn.Module):
    def __init__(self, dim: int, ff_mult: int) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim)
        self.ff = FeedForward(dim, ff_mult)
        self.self_attn = Attention(dim)
        self.self_ff = FeedForward(dim, ff_mult)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos=None) -> torch.Tensor:
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        latents = latents + self.self_attn(latents)
        return latents + self.self_ff(latents)


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, cfg: PerceiverConfig) -> None:
        super().__init__()
        self.num_latents, self.num_latents_2d, self.grid = cfg.num_latents, cfg.num_latents_2d, cfg.grid
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, dim))
        self.latents_2d = nn.Parameter(torch.randn(cfg.num_latents_2d, dim))
        self.layers = nn.ModuleList(PerceiverEncoderLayer(dim, cfg.ff_mult) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim)
        g = cfg.grid
        pos_2d = sine_pe_2d(dim, g, g).flatten(2).transpose(1, 2)[0]  # [g*g, d], row-major over the grid
        pos = torch.cat([torch.zeros(cfg.num_latents, dim), pos_2d], dim=0)
        self.register_buffer("pos", pos, persistent=False)  # [T, d]: the output tokens' encoding

    def forward_1d(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, d, h, w], pos [1, d, h, w] -> [B, num_latents, d]."""
        b = x.shape[0]
        tokens = x.flatten(2).transpose(1, 2)  # [B, hw, d]
        p = pos.flatten(2).transpose(1, 2)  # [1, hw, d]
        lat = self.latents[None].expand(b, -1, -1)
        for layer in self.layers:
            lat = layer(lat, tokens, p)
        return self.norm(lat)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, d, h, w] -> [B, num_latents_2d, d]: latent i reads window i of a g x g grid
        (windows row-major, tokens row-major inside a window), without positional encoding."""
        b, d, h, w = x.shape
        g = self.grid
        ws = h // g
        win = x.permute(0, 2, 3, 1).reshape(b, g, ws, g, ws, d).permute(0, 1, 3, 2, 4, 5)
        win = win.reshape(b * g * g, ws * ws, d)  # [B*g*g, ws*ws, d]
        lat = self.latents_2d[None].expand(b, -1, -1).reshape(b * g * g, 1, d)
        for layer in self.layers:
            lat = layer(lat, win)
        return self.norm(lat.reshape(b, g * g, d))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Memory features x [B, d, h, w] and their sine encoding pos [1, d, h, w] ->
        memory tokens [B, num_latents + num_latents_2d, d] (encoding: `self.pos`)."""
        return torch.cat([self.forward_1d(x, pos), self.forward_2d(x)], dim=1)
