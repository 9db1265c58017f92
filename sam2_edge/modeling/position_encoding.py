"""Positional encodings: 2-D sine (DETR style), random Fourier (prompt encoder),
1-D sine (object-pointer time), and axial RoPE as real cos/sin tables."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn


def sine_pe_2d(num_pos_feats: int, h: int, w: int, temperature: float = 10000.0) -> torch.Tensor:
    """Normalised 2-D sine encoding of an h x w grid: [1, num_pos_feats, h, w] (y block, x block)."""
    half = num_pos_feats // 2
    scale, eps = 2 * math.pi, 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32).view(1, -1, 1).repeat(1, 1, w)
    x = torch.arange(1, w + 1, dtype=torch.float32).view(1, 1, -1).repeat(1, h, 1)
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t  # [1, h, w, half]
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)  # [1, h, w, C] -> [1, C, h, w]


def sine_pe_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """[N] positions -> [N, dim]: sin block then cos block (object-pointer time encoding)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    emb = pos.unsqueeze(-1) / dim_t
    return torch.cat([emb.sin(), emb.cos()], dim=-1)


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier encoding of (x, y) in [0, 1] (prompt encoder)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Dense encoding of an h x w grid of pixel centres: [1, C, h, w]."""
        ones = torch.ones((h, w), dtype=torch.float32, device=self.positional_encoding_gaussian_matrix.device)
        y = (ones.cumsum(dim=0) - 0.5) / h
        x = (ones.cumsum(dim=1) - 0.5) / w
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)

    def points(self, coords: torch.Tensor, image_size: int) -> torch.Tensor:
        """[B, N, 2] pixel coordinates (x, y) in the S x S model input -> [B, N, C]."""
        return self._encode(coords / image_size)


def rope_cos_sin(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Axial 2-D RoPE as real tables: cos, sin of shape [end_x * end_y, dim / 2].

    The first dim/4 frequencies rotate by the x index, the next dim/4 by the y index,
    over tokens in row-major order (the official complex formulation, made real).
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    tx, ty = t % end_x, torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x [B, h, N, d] by the angles of cos/sin [N, d/2]."""
    shape = x.shape
    x = x.reshape(*shape[:-1], -1, 2)
    x0, x1 = x[..., 0], x[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.reshape(shape)
