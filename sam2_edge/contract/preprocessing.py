"""The pre-processing every model and bundle expects (the official SAM 2 video predictor):
RGB uint8 -> Pillow bicubic resize to S x S -> /255 -> (x - mean) / std, NCHW float32."""

from __future__ import annotations

import numpy as np

IMG_MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
IMG_STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)
RESIZE_PIL_BICUBIC = "pil-bicubic"
COLOUR_ORDER = "RGB"
LAYOUT = "NCHW"
SCALE = 1.0 / 255.0
