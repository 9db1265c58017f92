"""A clip tracked through a model's own memory, in torch (differentiable for the student, under
no_grad for the teacher): the streaming tracker's semantics for one object prompted on frame 0
(conditioning frame: temporal slot num_maskmem - 1; recent frames t-1 .. t-6 at slots d - 1;
pointers of the conditioning frame and of t-1 .. t-15), without the fixed-size rings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..contract import LABEL_NOT_A_POINT
from ..modeling.mask_decoder import select_single
from ..modeling.sam2 import NO_OBJ_SCORE, ImageFeatures, SAM2Model
from .prompts import Prompt


@dataclass
class FrameOut:
    low_raw: torch.Tensor  # [1, 1, S/4, S/4] selected logits before the object gate (what the loss sees)
    low: torch.Tensor  # ... gated (-1024 where absent): what the memory encoder and the tracker see
    score: torch.Tensor  # [1, 1]
    ptr: torch.Tensor  # [1, C]
    pix: Optional[torch.Tensor]  # [1, C, f, f] memory-conditioned features (None on the prompted frame)


@dataclass
class Rollout:
    feats: ImageFeatures  # every frame's features, batched [T, ...]
    frames: List[FrameOut]


def _points(model: SAM2Model, coords: Optional[np.ndarray], labels: Optional[np.ndarray], device):
    """Clicks / box corners + the padding point (the model's own NOT_A_POINT when there are none)."""
    if coords is None or len(coords) == 0:
        pc, pl = np.zeros((2, 2), np.float32), np.full(2, LABEL_NOT_A_POINT, np.int64)
    else:
        pc = np.concatenate([coords, np.zeros((1, 2), np.float32)]).astype(np.float32)
        pl = np.concatenate([labels, [LABEL_NOT_A_POINT]]).astype(np.int64)
    return torch.from_numpy(pc)[None].to(device), torch.from_numpy(pl)[None].to(device)


def _heads(model: SAM2Model, feats: ImageFeatures, t: int, pix, pc, pl, mask, has_mask: bool,
           multimask: bool) -> FrameOut:
    dev = pix.device
    masks, iou, tokens, score = model.decode(pix, feats.feat_s0[t:t + 1], feats.feat_s1[t:t + 1], pc, pl, mask,
                                             torch.tensor([has_mask], device=dev))
    low, _, token = select_single(masks, iou, tokens, torch.tensor([multimask], device=dev))
    present = score > 0
    gated = torch.where(present[:, :, None, None], low, torch.full_like(low, NO_OBJ_SCORE))
    return FrameOut(low, gated, score, model.gate_pointer(model.obj_ptr_proj(token), present), None)


def prompt_frame(model: SAM2Model, feats: ImageFeatures, t: int, prompt: Prompt) -> FrameOut:
    """Frame t as an initial conditioning frame (no memory), prompted by clicks, a box or a mask."""
    s, lo = model.cfg.image_size, model.cfg.lowres_size
    vf = feats.vision_feats[t:t + 1]
    dev = vf.device
    zeros_low = torch.zeros(1, 1, lo, lo, device=dev, dtype=vf.dtype)
    if prompt.mask is not None:  # as the tracker: the binary mask through mask_downsample, fixed score
        m = torch.from_numpy(prompt.mask.astype(np.float32))[None, None].to(dev)
        full = (F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False) >= 0.5).to(vf.dtype)
        present = bool(full.any())
        pc, pl = _points(model, None, None, dev)
        out = _heads(model, feats, t, vf, pc, pl, model.mask_downsample(full), True, False)
        low = F.interpolate(full * 20.0 - 10.0, size=(lo, lo), mode="bilinear", align_corners=False, antialias=True)
        score = torch.full((1, 1), 10.0 if present else -10.0, device=dev)
        ptr = out.ptr if present else model.no_obj_ptr.expand(1, -1)
        return FrameOut(low, low, score, ptr, None)
    coords = prompt.coords * (s / prompt.scale)
    pc, pl = _points(model, coords, prompt.labels, dev)
    return _heads(model, feats, t, model.add_no_mem_embed(vf), pc, pl, zeros_low, False, len(prompt.labels) <= 1)


def track_frame(model: SAM2Model, feats: ImageFeatures, t: int, mems: List[torch.Tensor],
                outs: List[FrameOut]) -> FrameOut:
    """Frame t (>= 1) tracked from the memories of frames 0 (prompted) .. t-1."""
    cfg = model.cfg
    dev = feats.vision_feats.device
    recent = list(range(t - 1, max(0, t - cfg.num_maskmem + 1) - 1, -1))  # t-1 .. t-6, never frame 0
    recent = [r for r in recent if r >= 1]
    memory = torch.stack([mems[0]] + [mems[r] for r in recent])[None]  # [1, M, ...]
    tpos = torch.tensor([[cfg.num_maskmem - 1] + [t - r - 1 for r in recent]], device=dev)
    ptr_frames = [0] + [r for r in range(t - 1, max(0, t - cfg.max_obj_ptrs) - 1, -1) if r >= 1]
    ptrs = torch.stack([outs[r].ptr[0] for r in ptr_frames])[None]  # [1, P, C]
    dist = torch.tensor([[float(t - r) for r in ptr_frames]], device=dev)
    ones_m = torch.ones(1, memory.shape[1], dtype=torch.bool, device=dev)
    ones_p = torch.ones(1, ptrs.shape[1], dtype=torch.bool, device=dev)
    pix = model.condition_on_memory(feats.vision_feats[t:t + 1], feats.vision_pos, memory, tpos, ones_m, ptrs,
                                    dist, ones_p)
    lo = cfg.lowres_size
    pc, pl = _points(model, None, None, dev)
    out = _heads(model, feats, t, pix, pc, pl, torch.zeros(1, 1, lo, lo, device=dev, dtype=pix.dtype), False, True)
    out.pix = pix
    return out


def rollout(model: SAM2Model, images: torch.Tensor, prompt: Optional[Prompt]) -> Rollout:
    """images [T, 3, S, S] (normalised) -> features of every frame and, with a prompt, the object
    tracked on frames 0 .. T-1 (prompt on frame 0)."""
    feats = model.encode_image(images)
    frames: List[FrameOut] = []
    if prompt is None:
        return Rollout(feats, frames)
    mems: List[torch.Tensor] = []
    for t in range(images.shape[0]):
        out = prompt_frame(model, feats, 0, prompt) if t == 0 else track_frame(model, feats, t, mems, frames)
        frames.append(out)
        if t + 1 < images.shape[0]:  # the memory of frame t, for the frames after it
            binarize = torch.tensor([t == 0], device=images.device)
            mems.append(model.encode_memory(feats.vision_feats[t:t + 1], out.low, out.score, binarize)[0])
    return Rollout(feats, frames)


__all__ = ["FrameOut", "Rollout", "rollout", "prompt_frame", "track_frame"]
