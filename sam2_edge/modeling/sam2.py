"""SAM 2 / SAM 2.1 / EdgeTAM composed from their blocks, with the official attribute (state-dict)
names. EdgeTAM differs only by blocks and flags of its config: a RepViT trunk, a spatial
perceiver after the memory encoder (memory frames of latent tokens), RoPEAttentionv2
cross-attention, no `no_obj_embed_spatial` and no pointer temporal encoding.

This module holds the blocks and the small glue the paper defines between them; it has no
video policy (which memories fill which slot lives in `sam2_edge.runtimes`). Every method
takes and returns tensors with static shapes, so the export stages call them unchanged.
The released checkpoints' ablation flags are fixed here (see the README of the goldens):
high-res features in SAM, object-score head (MLP) with a hard gate and fixed no-object
pointer, MLP pointer projection, multimask token for the pointer, memory from the
sigmoid (tracked) or binarised (prompted) mask scaled by 20 and shifted by -10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ModelConfig
from .common import MASKED, MLP
from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder, select_single
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .perceiver import PerceiverResampler
from .position_encoding import sine_pe_1d, sine_pe_2d
from .prompt_encoder import PromptEncoder

NO_OBJ_SCORE = -1024.0
MEM_SCALE, MEM_BIAS = 20.0, -10.0


@dataclass
class ImageFeatures:
    feat_s0: torch.Tensor  # [B, C/8, S/4, S/4]   (after conv_s0)
    feat_s1: torch.Tensor  # [B, C/4, S/8, S/8]   (after conv_s1)
    vision_feats: torch.Tensor  # [B, C, S/16, S/16] raw FPN level 2 (no no_mem_embed)
    vision_pos: torch.Tensor  # [1, C, S/16, S/16] sine encoding of level 2


@dataclass
class HeadsOutput:
    low_res: torch.Tensor  # [B, 1, S/4, S/4] selected logits, -1024 where the object is absent
    iou: torch.Tensor  # [B, 1]
    obj_ptr: torch.Tensor  # [B, C] gated object pointer
    obj_score: torch.Tensor  # [B, 1]


class SAM2Model(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, m, f = cfg.d_model, cfg.mem_dim, cfg.feat_size
        self.image_encoder = ImageEncoder(cfg)
        rope_k = cfg.perceiver.grid if cfg.perceiver is not None else 0  # EdgeTAM: RoPEAttentionv2
        self.memory_attention = MemoryAttention(c, m, cfg.mem_attn_layers, cfg.mem_attn_ffn_dim, f, rope_k)
        self.memory_encoder = MemoryEncoder(c, m)
        self.sam_prompt_encoder = PromptEncoder(c, f, cfg.image_size)
        self.sam_mask_decoder = MaskDecoder(c)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, m))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))  # unused at inference, kept for strict loading
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.obj_ptr_proj = MLP(c, c, c, 3)
        if cfg.has_no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m))
        if cfg.has_obj_ptr_tpos_enc:
            self.obj_ptr_tpos_proj = nn.Linear(c, m)
        if cfg.perceiver is not None:  # EdgeTAM: each frame's memory -> [global ; 2-D] latent tokens
            self.spatial_perceiver = PerceiverResampler(m, cfg.perceiver)
        self.register_buffer("maskmem_pos", sine_pe_2d(m, f, f), persistent=False)  # [1, m, f, f]

    # ---------------------------------------------------------------- image
    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        """[B, 3, S, S] normalised image -> features for the decoder and the memory path."""
        s0, s1, s2 = self.image_encoder(image)
        dec = self.sam_mask_decoder
        return ImageFeatures(dec.conv_s0(s0), dec.conv_s1(s1), s2, self.image_encoder.pos_level2)

    def add_no_mem_embed(self, vision_feats: torch.Tensor) -> torch.Tensor:
        """Features of a frame without memory (images, initial conditioning frames)."""
        return vision_feats + self.no_mem_embed.reshape(1, -1, 1, 1)

    # ---------------------------------------------------------------- SAM heads
    def decode(self, pix_feat: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor,
               point_coords: torch.Tensor, point_labels: torch.Tensor, mask_logits: torch.Tensor,
               has_mask: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """All four decoder outputs. point_coords [B, N, 2] in S x S pixels, point_labels [B, N]
        (see prompt_encoder for the codes), mask_logits [B, 1, S/4, S/4] used where has_mask [B]
        -> masks [B, 4, S/4, S/4], iou [B, 4], mask tokens [B, 4, C], obj_score [B, 1]."""
        pe = self.sam_prompt_encoder
        sparse, bias = pe.embed_points(point_coords, point_labels)
        dense = torch.where(has_mask[:, None, None, None], pe.embed_mask(mask_logits),
                            pe.no_mask_dense(pix_feat.shape[0]))
        return self.sam_mask_decoder(pix_feat, pe.dense_pe(), sparse, dense, [feat_s0, feat_s1], bias)

    def gate_pointer(self, obj_ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Hard object gate: absent -> no_obj_ptr. obj_ptr [B, C], present [B, 1] bool."""
        lam = present.float()
        return lam * obj_ptr + (1 - lam) * self.no_obj_ptr

    def heads(self, pix_feat: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor,
              point_coords: torch.Tensor, point_labels: torch.Tensor, mask_logits: torch.Tensor,
              has_mask: torch.Tensor, multimask: torch.Tensor) -> HeadsOutput:
        """Decoder + official output selection + object-score gating (video semantics)."""
        masks, iou, tokens, score = self.decode(pix_feat, feat_s0, feat_s1, point_coords,
                                                point_labels, mask_logits, has_mask)
        present = score > 0  # [B, 1]
        low, iou1, token = select_single(masks, iou, tokens, multimask)
        low = torch.where(present[:, :, None, None], low, torch.full_like(low, NO_OBJ_SCORE))
        return HeadsOutput(low, iou1, self.gate_pointer(self.obj_ptr_proj(token), present), score)

    # ---------------------------------------------------------------- memory
    def encode_memory(self, vision_feats: torch.Tensor, low_res: torch.Tensor, obj_score: torch.Tensor,
                      binarize: torch.Tensor) -> torch.Tensor:
        """Memory of one frame. low_res [B, 1, S/4, S/4] logits; binarize [B] bool (prompted
        frames) -> maskmem features in float32 (not yet bf16-rounded): [B, mem_dim, S/16, S/16],
        or with a perceiver (EdgeTAM) [B, T, mem_dim] latent tokens."""
        s = self.cfg.image_size
        high = F.interpolate(low_res, size=(s, s), mode="bilinear", align_corners=False)
        mask = torch.where(binarize[:, None, None, None], (high > 0).float(), torch.sigmoid(high))
        feats = self.memory_encoder(vision_feats, mask * MEM_SCALE + MEM_BIAS)
        if self.cfg.has_no_obj_embed_spatial:
            absent = (obj_score <= 0).float()[:, :, None, None]  # [B, 1, 1, 1]
            feats = feats + absent * self.no_obj_embed_spatial.reshape(1, -1, 1, 1)
        if self.cfg.perceiver is not None:
            feats = self.spatial_perceiver(feats, self.maskmem_pos)  # [B, m, f, f] -> [B, T, m]
        return feats

    def memory_tokens_pos(self) -> torch.Tensor:
        """Spatial encoding of one memory frame's tokens: [T, mem_dim] (T = f*f, or the perceiver's)."""
        if self.cfg.perceiver is not None:
            return self.spatial_perceiver.pos
        return self.maskmem_pos.flatten(2).transpose(1, 2)[0]

    def pointer_pos(self, dist: torch.Tensor) -> torch.Tensor:
        """Temporal encoding of pointers at distance `dist` frames: [P] -> [P, mem_dim]."""
        if not self.cfg.has_obj_ptr_tpos_enc:  # SAM 2, EdgeTAM: pointers carry no temporal encoding
            return torch.zeros(dist.shape[0], self.cfg.mem_dim, dtype=torch.float32, device=dist.device)
        norm = float(self.cfg.max_obj_ptrs - 1)  # stream of unknown length: min(N, 16) - 1 = 15
        return self.obj_ptr_tpos_proj(sine_pe_1d(dist / norm, self.cfg.d_model))

    def condition_on_memory(self, vision_feats: torch.Tensor, vision_pos: torch.Tensor,
                            memory: torch.Tensor, mem_tpos: torch.Tensor, mem_valid: torch.Tensor,
                            obj_ptrs: torch.Tensor, ptr_dist: torch.Tensor,
                            ptr_valid: torch.Tensor, masked: bool = True) -> torch.Tensor:
        """Memory attention over fixed slots.

        vision_feats [B, C, h, w], vision_pos [1, C, h, w], memory [B, M, mem_dim, h, w]
        (SAM 2 spatial layout) or [B, M, T, mem_dim] (perceiver tokens, EdgeTAM),
        mem_tpos [B, M] int (index into maskmem_tpos_enc = num_maskmem - slot - 1),
        mem_valid [B, M] bool, obj_ptrs [B, P, C], ptr_dist [B, P] float, ptr_valid [B, P] bool
        -> memory-conditioned features [B, C, h, w].

        masked=False (eager backends only, the graphs always mask): every slot given is present,
        mem_valid / ptr_valid are not read and the attention runs without a key bias -- the
        caller passed only the memories that exist, as the official code attends to them.
        """
        b, c, h, w = vision_feats.shape
        m_slots, m_dim = memory.shape[1], self.cfg.mem_dim
        curr = vision_feats.flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, hw, C]
        curr_pos = vision_pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        if memory.dim() == 5:  # [B, M, m, h, w] -> [B, M, hw, m]
            memory = memory.flatten(3).transpose(2, 3)
        n_tok = memory.shape[2]  # T tokens per memory frame
        mem = memory.reshape(b, m_slots * n_tok, m_dim)  # [B, M*T, m]
        tpos = self.maskmem_tpos_enc.reshape(-1, m_dim)[mem_tpos]  # [B, M, m]
        sine = self.memory_tokens_pos()[None]  # [1, T, m]
        mem_pos = (sine[:, None] + tpos[:, :, None, :]).reshape(b, m_slots * n_tok, m_dim)
        split = c // m_dim  # each C-dim pointer becomes `split` tokens sharing one encoding
        p = obj_ptrs.shape[1]
        ptr_tokens = obj_ptrs.reshape(b, p * split, m_dim)
        ptr_pos = self.pointer_pos(ptr_dist.reshape(-1)).reshape(b, p, 1, m_dim)
        ptr_pos = ptr_pos.expand(b, p, split, m_dim).reshape(b, p * split, m_dim)
        zeros = torch.zeros(b, 1, dtype=torch.float32, device=memory.device)
        absent = torch.full_like(zeros, MASKED)
        mem_bias = torch.where(mem_valid, zeros, absent)[:, :, None].expand(b, m_slots, n_tok)
        ptr_bias = torch.where(ptr_valid, zeros, absent)[:, :, None].expand(b, p, split)
        keys = torch.cat([mem, ptr_tokens], dim=1)
        keys_pos = torch.cat([mem_pos, ptr_pos], dim=1)
        bias = torch.cat([mem_bias.reshape(b, -1), ptr_bias.reshape(b, -1)], dim=1) if masked else None
        out = self.memory_attention(curr, curr_pos, keys, keys_pos, p * split, bias, m_slots)
        return out.transpose(1, 2).reshape(b, c, h, w)  # [B, hw, C] -> [B, C, h, w]
