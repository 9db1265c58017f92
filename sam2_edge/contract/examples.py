"""Valid example inputs of each stage graph: what the exporters trace with and what a bundle's
smoke run feeds before a tracker trusts it. numpy only."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from .codes import (LABEL_ABSENT, LABEL_BOX_BR, LABEL_BOX_TL, LABEL_NEG, LABEL_NOT_A_POINT, LABEL_POS,
                    MASK_LOWRES_LOGITS)
from .spec import TrackerSpec


def example_inputs(spec: TrackerSpec, stage: str, seed: int = 0) -> Tuple[np.ndarray, ...]:
    """Random but valid inputs of one graph (`stage`: a stage or a graph key such as
    "mask_decoder@4", see `TrackerSpec.graph_keys`), in its io order: normalised-image-like
    values, ring slots partly valid, temporal indices and pointer distances in range, a
    prompt with box corners, clicks, the padding point and absent fillers, mask prompts."""
    rng = np.random.default_rng(seed)
    ins, _ = spec.graph_io()[stage]
    out = []
    for t in ins:
        n = t.name
        if n == "mem_tpos":
            v = rng.integers(0, spec.num_maskmem, t.shape)
        elif n in ("mem_valid", "ptr_valid"):
            v = (rng.random(t.shape) < 0.6).astype(np.float32)
            v[:, 0] = 1.0  # at least one valid slot (the official code always has one)
        elif n == "ptr_dist":
            v = rng.integers(0, spec.ptr_recent + 1, t.shape).astype(np.float32)
        elif n == "point_coords":
            v = rng.uniform(0, spec.image_size, t.shape)
        elif n == "point_labels":
            v = np.full(t.shape, LABEL_ABSENT)
            v[:, :5] = (LABEL_BOX_TL, LABEL_BOX_BR, LABEL_POS, LABEL_NEG, LABEL_NOT_A_POINT)
        elif n == "mask_lowres":
            v = rng.normal(0, 8, t.shape)
        elif n == "mask_full":
            v = (rng.random(t.shape) < 0.3).astype(np.float32)
        elif n == "mask_mode":
            v = np.full(t.shape, MASK_LOWRES_LOGITS)
        elif n in ("multimask", "add_no_mem", "ptr_gate"):
            v = np.ones(t.shape)
        elif n == "binarize":
            v = np.zeros(t.shape)
        elif n in ("low_res",):
            v = rng.normal(0, 8, t.shape)
        else:
            v = rng.standard_normal(t.shape)
        out.append(np.ascontiguousarray(v, dtype=t.dtype))
    return tuple(out)
