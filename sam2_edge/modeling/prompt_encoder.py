"""Prompt encoder: points / box corners -> sparse tokens, mask logits -> dense embedding.

Label convention (official, plus one addition for static shapes):
  1 positive click, 0 negative click, 2 box top-left, 3 box bottom-right,
  -1 "not a point" (the official padding token: it takes part in attention),
  -2 ABSENT: a static-shape filler that is masked out of attention entirely, so a
     prompt padded with -2 computes exactly what the official code computes without it.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..contract import LABEL_ABSENT as ABSENT
from .common import MASKED, LayerNorm2d
from .position_encoding import PositionEmbeddingRandom


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, image_embedding_size: int, input_image_size: int,
                 mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """[1, C, S/16, S/16] positional encoding of the image embedding grid."""
        return self.pe_layer.grid(self.image_embedding_size, self.image_embedding_size)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """coords [B, N, 2] (x, y in S x S input pixels), labels [B, N] int
        -> sparse tokens [B, N, C] and an additive key bias [B, N] (MASKED where ABSENT)."""
        pe = self.pe_layer.points(coords + 0.5, self.input_image_size)  # +0.5: pixel centre
        lab = labels.unsqueeze(-1)
        emb = torch.where(lab < 0, torch.zeros_like(pe) + self.not_a_point_embed.weight, pe)
        for i in range(4):
            emb = torch.where(lab == i, emb + self.point_embeddings[i].weight, emb)
        bias = torch.where(labels == ABSENT, torch.full_like(pe[..., 0], MASKED), torch.zeros_like(pe[..., 0]))
        return emb, bias

    def embed_mask(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """[B, 1, S/4, S/4] mask logits -> [B, C, S/16, S/16]."""
        return self.mask_downscaling(mask_logits)

    def no_mask_dense(self, batch: int) -> torch.Tensor:
        s = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, s, s)
