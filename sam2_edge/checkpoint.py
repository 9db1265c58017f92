"""Loading official SAM 2 / 2.1 checkpoints: `{"model": state_dict}` with official keys.

`torch.load(weights_only=True)` only: a checkpoint never executes code. Loading is strict:
every key consumed, every shape checked, the variant inferred from the shapes when not
given; failures raise `CheckpointError` before any model is returned.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from typing import Dict, Optional, Tuple

import torch

from .configs import ModelConfig, get_config, list_variants
from .errors import CheckpointError
from .modeling.sam2 import SAM2Model

log = logging.getLogger(__name__)

# Official names are used as they are; this table maps the few keys that older releases
# spell differently (none known for the released SAM 2 / 2.1 files).
RENAMES: Dict[str, str] = {}


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The checkpoint's float32 state dict, or a CheckpointError that says what is wrong."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty; download it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as e:  # torch's readers raise many types on garbage (IndexError, KeyError, struct.error...)
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in text:
            raise CheckpointError(
                f"{path!r} needs code execution to unpickle and was refused (weights_only=True). "
                f"Only plain tensor checkpoints are loaded; re-save it as {{'model': state_dict}}. ({text[:300]})"
            ) from None
        raise CheckpointError(
            f"{path!r} is not a readable torch checkpoint (truncated or corrupt?); download it again. "
            f"(the reader failed with {type(e).__name__})") from None
    if not isinstance(obj, dict) or "model" not in obj or not isinstance(obj["model"], dict):
        raise CheckpointError(f"{path!r} is not a SAM 2 checkpoint: expected a dict with a 'model' state dict")
    sd = {}
    for k, v in obj["model"].items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path!r}: entry {k!r} is not a tensor; not a SAM 2 checkpoint")
        sd[RENAMES.get(k, k)] = v.float() if v.is_floating_point() else v
    return sd


@functools.lru_cache(maxsize=None)
def _layout(cfg: ModelConfig) -> Tuple[Tuple[Tuple[str, Tuple[int, ...]], ...], frozenset]:
    with torch.device("meta"):
        model = SAM2Model(cfg)
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return shapes, frozenset(k for k, _ in model.named_parameters())


def expected_shapes(cfg: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Official key -> shape of a variant (built once on the meta device, cached)."""
    return dict(_layout(cfg)[0])


def parameter_names(cfg: ModelConfig) -> frozenset:
    """State-dict keys that are learnable parameters (not buffers such as the random-Fourier matrix)."""
    return _layout(cfg)[1]


def match_variant(sd: Dict[str, torch.Tensor]) -> Optional[str]:
    """The registered variant whose keys and shapes equal the state dict's, if any."""
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for name in list_variants():
        if expected_shapes(get_config(name)) == shapes:
            return name
    return None


def check_state_dict(sd: Dict[str, torch.Tensor], cfg: ModelConfig, path: str) -> None:
    exp = expected_shapes(cfg)
    missing = sorted(set(exp) - set(sd))
    unexpected = sorted(set(sd) - set(exp))
    wrong = sorted(k for k in set(exp) & set(sd) if tuple(sd[k].shape) != exp[k])
    if not (missing or unexpected or wrong):
        return
    other = match_variant(sd)
    if other is not None:
        raise CheckpointError(f"{path!r} is a {other!r} checkpoint, not {cfg.name!r}; "
                              f"pass variant={other!r} (or leave the variant out to infer it)")
    if not any(k.startswith("image_encoder.trunk.") for k in sd):
        raise CheckpointError(f"{path!r} is not a SAM 2 checkpoint (no image_encoder.trunk.* weights)")
    detail = []
    if missing:
        detail.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        detail.append("shape mismatch: " + ", ".join(f"{k} {tuple(sd[k].shape)} vs {exp[k]}" for k in wrong[:3]))
    raise CheckpointError(f"{path!r} does not fit variant {cfg.name!r}: " + "; ".join(detail))


def load_checkpoint(path: str, variant: Optional[str] = None,
                    image_size: Optional[int] = None) -> Tuple[SAM2Model, ModelConfig]:
    sd = read_state_dict(path)
    if variant is None:
        variant = match_variant(sd)
        if variant is None:
            if not any(k.startswith("image_encoder.trunk.") for k in sd):
                raise CheckpointError(f"{path!r} is not a SAM 2 checkpoint (no image_encoder.trunk.* weights)")
            raise CheckpointError(f"{path!r} matches no known variant ({', '.join(list_variants())}); "
                                  "its keys or shapes differ from every official layout")
    cfg = get_config(variant)
    check_state_dict(sd, cfg, path)
    if image_size is not None and image_size != cfg.image_size:
        cfg = cfg.with_image_size(image_size)
    model = SAM2Model(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()
    log.info("loaded %s (%s) from %s", cfg.name, f"SAM {cfg.version}", path)
    return model, cfg


def build_sam2(variant: Optional[str] = None, checkpoint: Optional[str] = None, device: str = "cpu",
               image_size: Optional[int] = None) -> SAM2Model:
    """A SAM 2 model in eval mode: from an official checkpoint (variant inferred when not
    given) or, without a checkpoint, with random weights of the named variant."""
    if checkpoint is not None:
        model, _ = load_checkpoint(checkpoint, variant, image_size)
    else:
        if variant is None:
            raise CheckpointError("give a checkpoint, or a variant to build with random weights")
        cfg = get_config(variant)
        if image_size is not None:
            cfg = cfg.with_image_size(image_size)
        model = SAM2Model(cfg).eval()
    return model.to(device)
