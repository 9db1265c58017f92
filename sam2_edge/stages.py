"""The tracker's four per-frame stages as modules that take and return tensors only, with
static shapes (see `sam2_edge.contract.TrackerSpec.io`). The exporters trace these
very modules; the torch backend runs them eagerly. They hold the model, never subclass it.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .modeling.sam2 import SAM2Model
from .contract import MASK_FULL_BINARY, MASK_NONE, TrackerSpec

Tensor = torch.Tensor


def tracker_spec(model: SAM2Model, cond_slots: int = 2) -> TrackerSpec:
    cfg = model.cfg
    return TrackerSpec(image_size=cfg.image_size, d_model=cfg.d_model, mem_dim=cfg.mem_dim,
                       num_maskmem=cfg.num_maskmem, cond_slots=cond_slots, ptr_recent=cfg.max_obj_ptrs - 1,
                       mem_tokens=cfg.mem_tokens)


class ImageEncoderStage(nn.Module):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model
        model.image_encoder.trunk.freeze()  # Hiera: constant pos-embed; RepViT: BatchNorm folded

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        f = self.model.encode_image(image)  # [1, 3, S, S] -> s0, s1, level 2, its sine PE
        return f.feat_s0, f.feat_s1, f.vision_feats, f.vision_pos


class MemoryAttentionStage(nn.Module):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, vision_feats: Tensor, vision_pos: Tensor, memory: Tensor, mem_tpos: Tensor,
                mem_valid: Tensor, obj_ptrs: Tensor, ptr_dist: Tensor, ptr_valid: Tensor) -> Tensor:
        # the frame's features [1, C, h, w] are shared by the B objects of memory [B, M, ...]
        vision_feats = vision_feats.expand(memory.shape[0], -1, -1, -1)  # [1, C, h, w] -> [B, C, h, w]
        return self.model.condition_on_memory(vision_feats, vision_pos, memory, mem_tpos.long(),
                                              mem_valid > 0.5, obj_ptrs, ptr_dist, ptr_valid > 0.5)

    def forward_present(self, vision_feats: Tensor, vision_pos: Tensor, memory: Tensor, mem_tpos: Tensor,
                        obj_ptrs: Tensor, ptr_dist: Tensor) -> Tensor:
        """Eager only (dynamic shapes): the same computation over only the M' <= M memory slots and
        P' <= P pointer slots that are present (memory [1, M', ...], mem_tpos [1, M'], obj_ptrs
        [1, P', C], ptr_dist [1, P']) -- no key bias, so attention stays on the fused kernel and
        does no work for absent slots. Equal to `forward` on the full slots up to float
        summation order (an absent slot's softmax weight is exactly 0 there)."""
        b, m = memory.shape[:2]
        vision_feats = vision_feats.expand(b, -1, -1, -1)  # [1, C, h, w] -> [B, C, h, w]
        ones_m = torch.ones(b, m, dtype=torch.bool, device=memory.device)
        ones_p = torch.ones(b, obj_ptrs.shape[1], dtype=torch.bool, device=memory.device)
        return self.model.condition_on_memory(vision_feats, vision_pos, memory, mem_tpos.long(), ones_m,
                                              obj_ptrs, ptr_dist, ones_p, masked=False)


class MaskDecoderStage(nn.Module):
    """SAM heads for every mode in one graph: clicks/box (padded with ABSENT labels), an
    optional dense prompt (previous low-res logits, or a full-resolution binary mask through
    the learned mask_downsample), multimask or single output, and a final pointer gate."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pix_feat: Tensor, feat_s0: Tensor, feat_s1: Tensor, point_coords: Tensor,
                point_labels: Tensor, mask_lowres: Tensor, mask_full: Tensor, mask_mode: Tensor,
                multimask: Tensor, ptr_gate: Tensor, add_no_mem: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        m = self.model
        b = pix_feat.shape[0]  # objects; the frame's high-res features [1, ...] are shared
        feat_s0 = feat_s0.expand(b, -1, -1, -1)  # [1, C/8, 4f, 4f] -> [B, C/8, 4f, 4f]
        feat_s1 = feat_s1.expand(b, -1, -1, -1)  # [1, C/4, 2f, 2f] -> [B, C/4, 2f, 2f]
        # frames without memory (initial conditioning frames) add no_mem_embed to level 2
        pix_feat = pix_feat + (add_no_mem != 0).float()[:, None, None, None] * m.no_mem_embed.reshape(1, -1, 1, 1)
        full = (mask_mode == MASK_FULL_BINARY)[:, None, None, None]
        mask = torch.where(full, m.mask_downsample(mask_full), mask_lowres)  # [B, 1, S/4, S/4]
        out = m.heads(pix_feat, feat_s0, feat_s1, point_coords, point_labels.long(), mask,
                      mask_mode != MASK_NONE, multimask != 0)
        ptr = m.gate_pointer(out.obj_ptr, (ptr_gate > 0.5)[:, None])
        return out.low_res, out.iou, ptr, out.obj_score


class MemoryEncoderStage(nn.Module):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, vision_feats: Tensor, low_res: Tensor, obj_score: Tensor, binarize: Tensor) -> Tensor:
        vision_feats = vision_feats.expand(low_res.shape[0], -1, -1, -1)  # [1, C, f, f] -> [B, C, f, f]
        return self.model.encode_memory(vision_feats, low_res, obj_score, binarize != 0)


def build_stages(model: SAM2Model) -> Tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """The four stages in `spec.STAGES` order, in eval mode."""
    model.eval()
    return (ImageEncoderStage(model).eval(), MemoryAttentionStage(model).eval(),
            MaskDecoderStage(model).eval(), MemoryEncoderStage(model).eval())
