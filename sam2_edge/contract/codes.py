"""Integer codes the stage graphs take as inputs: point labels and mask-prompt modes.

The same numbers are baked into exported graphs (see `export/README.md`), so they are part
of the bundle contract and never change meaning.
"""

from __future__ import annotations

# mask_decoder point labels (official SAM 2: 0 negative, 1 positive, 2 / 3 box corners,
# -1 the padding point), plus ABSENT: a static-shape filler masked out of attention entirely
LABEL_NEG, LABEL_POS, LABEL_BOX_TL, LABEL_BOX_BR, LABEL_NOT_A_POINT, LABEL_ABSENT = 0, 1, 2, 3, -1, -2
# mask_decoder mask_mode: no mask prompt, previous low-res logits, a full-resolution binary mask
MASK_NONE, MASK_LOWRES_LOGITS, MASK_FULL_BINARY = 0, 1, 2
# clicks per prompt (the graphs take MAX_CLICKS + 3 points: clicks, two box corners, padding)
MAX_CLICKS = 16
