"""SAM mask decoder: two-way transformer over [obj_score, iou, mask x4, prompt tokens],
high-resolution feature upscaling, hypernetwork masks, IoU and object-score heads.

`select_single` implements the official output choice without Python branching on
tensor values: multimask -> best-IoU of tokens 1..3 (its token feeds the pointer);
single -> token 0 unless its stability is below 0.98, then the best multimask output
(the pointer still comes from token 0).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer

STABILITY_DELTA = 0.05
STABILITY_THRESH = 0.98


class MaskDecoder(nn.Module):
    def __init__(self, transformer_dim: int) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=c, num_heads=8, mlp_dim=2048)
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(4, c)
        self.obj_score_token = nn.Embedding(1, c)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(4))
        self.iou_prediction_head = MLP(c, 256, 4, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(c, c, 1, 3)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor, high_res: List[torch.Tensor],
                token_bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
        """image_embeddings [B, C, h, w], image_pe [1, C, h, w], sparse [B, N, C],
        dense [B, C, h, w], high_res = [feat_s0 [B, C/8, 4h, 4w], feat_s1 [B, C/4, 2h, 2w]]
        -> masks [B, 4, 4h, 4w], iou [B, 4], mask tokens [B, 4, C], object score [B, 1]."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], 0)
        tokens = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)  # [B, 6 + N, C]
        if token_bias is not None:
            token_bias = torch.cat((torch.zeros_like(token_bias[:, :1]).expand(-1, 6), token_bias), dim=1)
        src = image_embeddings + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens, token_bias)
        src = src.transpose(1, 2).reshape(b, c, h, w)  # [B, hw, C] -> [B, C, h, w]
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res
        up = act1(ln1(dc1(src) + feat_s1))
        up = act2(dc2(up) + feat_s0)  # [B, C/8, 4h, 4w]
        mask_tokens = hs[:, 2:6, :]
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        bb, cc, hh, ww = up.shape
        masks = (hyper @ up.reshape(bb, cc, hh * ww)).reshape(bb, 4, hh, ww)
        iou = self.iou_prediction_head(hs[:, 1, :])
        obj_score = self.pred_obj_score_head(hs[:, 0, :])
        return masks, iou, mask_tokens, obj_score


def stability_score(logits: torch.Tensor) -> torch.Tensor:
    """[B, h, w] -> [B]: #(logit > 0.05) / #(logit > -0.05), 1 when the denominator is 0."""
    flat = logits.flatten(1)
    inter = (flat > STABILITY_DELTA).float().sum(-1)
    union = (flat > -STABILITY_DELTA).float().sum(-1)
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))


def select_single(masks: torch.Tensor, iou: torch.Tensor, tokens: torch.Tensor,
                  multimask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick one output per batch item. multimask: [B] bool.

    masks [B, 4, H, W], iou [B, 4], tokens [B, 4, C] -> mask [B, 1, H, W], iou [B, 1], token [B, C].
    """
    best = torch.argmax(iou[:, 1:], dim=-1) + 1  # [B]
    b_idx = torch.arange(masks.shape[0], device=masks.device)
    best_mask, best_iou, best_tok = masks[b_idx, best], iou[b_idx, best], tokens[b_idx, best]
    stable = stability_score(masks[:, 0]) >= STABILITY_THRESH
    use_first = (~multimask) & stable
    mask = torch.where(use_first[:, None, None], masks[:, 0], best_mask).unsqueeze(1)
    iou_out = torch.where(use_first, iou[:, 0], best_iou).unsqueeze(1)
    token = torch.where(multimask[:, None], best_tok, tokens[:, 0])
    return mask, iou_out, token
