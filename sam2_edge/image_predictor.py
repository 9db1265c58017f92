"""Single-image prediction with the official `SAM2ImagePredictor` API shape.

    predictor = ImagePredictor(build_sam2(checkpoint="sam2.1_hiera_tiny.pt"))
    predictor.set_image(rgb)                       # H x W x 3 uint8 RGB
    masks, ious, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])

The predictor *holds* a model. Coordinates are pixels of the original image (or [0, 1]
when normalize_coords=False). Bad input raises `InputError` naming the fix.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError, StateError
from .modeling.mask_decoder import select_single
from .modeling.sam2 import ImageFeatures, SAM2Model
from .prompts import check_image, prompt_points
from .contract import IMG_MEAN, IMG_STD



def preprocess_image(rgb: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """Official image-predictor preprocessing: /255, antialiased bilinear resize of the float
    tensor to S x S (aspect not kept), then (x - mean) / std. -> [1, 3, S, S]."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).float() / 255.0
    x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear",
                      align_corners=False, antialias=True)
    mean = torch.from_numpy(IMG_MEAN).to(device).view(1, 3, 1, 1)
    std = torch.from_numpy(IMG_STD).to(device).view(1, 3, 1, 1)
    return (x - mean) / std


class ImagePredictor:
    def __init__(self, model: SAM2Model, mask_threshold: float = 0.0) -> None:
        self.model = model.eval()
        self.mask_threshold = mask_threshold
        self._features: Optional[ImageFeatures] = None
        self._image_embed: Optional[torch.Tensor] = None
        self._orig_hw: Optional[Tuple[int, int]] = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    def reset_predictor(self) -> None:
        self._features = self._image_embed = self._orig_hw = None

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Encode an H x W x 3 uint8 RGB image (the expensive step; prompts are cheap after)."""
        check_image(image)
        x = preprocess_image(image, self.model.cfg.image_size, self.device)
        self._features = self.model.encode_image(x)
        self._image_embed = self.model.add_no_mem_embed(self._features.vision_feats)
        self._orig_hw = (int(image.shape[0]), int(image.shape[1]))

    @torch.inference_mode()
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False,
                normalize_coords: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> masks [M, H, W] (bool, or float logits with return_logits), iou [M],
        low-res logits [M, S/4, S/4] clamped to +-32 (feed one back as mask_input)."""
        if self._features is None:
            raise StateError("call set_image(image) before predict()")
        s = self.model.cfg.image_size
        coords, labels = prompt_points(point_coords, point_labels, box, self._orig_hw,
                                       normalize_coords, s, allow_empty=mask_input is not None)
        coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])  # official padding point
        labels = np.concatenate([labels, np.full((1,), -1, np.int64)])
        dev = self.device
        low_res = s // 4
        has_mask = mask_input is not None
        if has_mask:
            m = np.asarray(mask_input, dtype=np.float32)
            if m.ndim == 2:
                m = m[None]
            if m.shape != (1, low_res, low_res) or not np.isfinite(m).all():
                raise InputError(f"mask_input must be finite low-res logits of shape (1, {low_res}, {low_res}) "
                                 f"(a low_res_logits entry of a previous predict), got shape {m.shape}")
            mask_t = torch.from_numpy(m).to(dev)[None]
        else:
            mask_t = torch.zeros(1, 1, low_res, low_res, device=dev)
        f = self._features
        masks, iou, _, _ = self.model.decode(
            self._image_embed, f.feat_s0, f.feat_s1, torch.from_numpy(coords).to(dev)[None],
            torch.from_numpy(labels).to(dev)[None], mask_t, torch.tensor([has_mask], device=dev))
        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
        else:
            masks, iou, _ = select_single(masks, iou, masks.new_zeros(1, 4, 1),
                                          torch.zeros(1, dtype=torch.bool, device=dev))
        h, w = self._orig_hw
        full = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        out = full if return_logits else full > self.mask_threshold
        low = torch.clamp(masks, -32.0, 32.0)
        return out[0].cpu().numpy(), iou[0].float().cpu().numpy(), low[0].float().cpu().numpy()
