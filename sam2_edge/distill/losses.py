"""Distillation losses. Teacher maps at another resolution are resized to the student's.

Stage 1 (image): every FPN level the decoder uses (s0, s1 after their convs, level 2), each a
mean-squared error normalised by the teacher level's variance. Stage 2 (video) adds, per frame:
the mask logits (soft BCE on the teacher's probabilities + dice), the object score (soft BCE),
the object pointer and the memory-conditioned features (normalised MSE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F

from ..modeling.sam2 import ImageFeatures
from .rollout import Rollout

LOGIT_CLAMP = 20.0


@dataclass(frozen=True)
class LossWeights:
    features: float = 1.0
    mask: float = 1.0
    dice: float = 0.5
    score: float = 0.5
    pointer: float = 0.5
    memory_features: float = 0.5


def _fit(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if t.shape[-2:] == like.shape[-2:]:
        return t
    return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False, antialias=True)


def nmse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s, t = s.float(), t.float()
    return F.mse_loss(s, t) / (t.var(unbiased=False) + 1e-6)


def feature_loss(s: ImageFeatures, t: ImageFeatures) -> torch.Tensor:
    return sum(nmse(a, _fit(b, a)) for a, b in ((s.feat_s0, t.feat_s0), (s.feat_s1, t.feat_s1),
                                              (s.vision_feats, t.vision_feats))) / 3.0


def mask_losses(s_logits: torch.Tensor, t_logits: torch.Tensor) -> Dict[str, torch.Tensor]:
    s = s_logits.float().clamp(-LOGIT_CLAMP * 4, LOGIT_CLAMP * 4)
    p = torch.sigmoid(_fit(t_logits.float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP), s))
    bce = F.binary_cross_entropy_with_logits(s, p)
    q = torch.sigmoid(s)
    dice = 1 - (2 * (q * p).sum() + 1) / (q.sum() + p.sum() + 1)
    return {"mask": bce, "dice": dice}


def clip_loss(s: Rollout, t: Rollout, w: LossWeights) -> Dict[str, torch.Tensor]:
    """The weighted parts of one clip's loss (features only when the rollout has no frames)."""
    parts = {"features": w.features * feature_loss(s.feats, t.feats)}
    if not s.frames:
        return parts
    acc: Dict[str, torch.Tensor] = {}
    n_pix = 0
    for a, b in zip(s.frames, t.frames):
        m = mask_losses(a.low_raw, b.low)
        items = {"mask": w.mask * m["mask"], "dice": w.dice * m["dice"],
                 "score": w.score * F.binary_cross_entropy_with_logits(
                     a.score.float(), torch.sigmoid(b.score.float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP))),
                 "pointer": w.pointer * nmse(a.ptr, b.ptr)}
        if a.pix is not None and b.pix is not None:
            items["memory_features"] = w.memory_features * nmse(a.pix, _fit(b.pix, a.pix))
            n_pix += 1
        for k, v in items.items():
            acc[k] = acc.get(k, 0.0) + v
    n = len(s.frames)
    for k, v in acc.items():
        parts[k] = v / (n_pix if k == "memory_features" else n)
    return parts


__all__ = ["LossWeights", "feature_loss", "mask_losses", "clip_loss", "nmse"]
