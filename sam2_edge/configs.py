"""Model variants as frozen dataclasses and a registry of small builders.

Each builder states only what differs from the SAM 2.1 Hiera-tiny defaults. The ablation
flags of the released checkpoints are fixed in the model code, not exposed here. No torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

from .errors import ConfigError


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int = 96
    num_heads: int = 1
    stages: Tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: Tuple[int, ...] = (5, 7, 9)
    window_spec: Tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: Tuple[int, int] = (7, 7)

    @property
    def channel_list(self) -> Tuple[int, ...]:
        """Output channels of the four stages, deepest first (the neck's order)."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.stages)))[::-1]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str = "2.1"  # "2" (SAM 2, July 2024) or "2.1" (SAM 2.1, Sept 2024)
    image_size: int = 1024
    hiera: HieraConfig = field(default_factory=HieraConfig)
    d_model: int = 256  # neck / prompt / decoder / memory-attention width
    mem_dim: int = 64  # memory encoder output width
    mem_attn_layers: int = 4
    mem_attn_ffn_dim: int = 2048
    num_maskmem: int = 7
    max_obj_ptrs: int = 16

    @property
    def is_v21(self) -> bool:
        return self.version == "2.1"

    @property
    def feat_size(self) -> int:
        """Side of the stride-16 image embedding (64 for 1024 input)."""
        return self.image_size // 16

    @property
    def lowres_size(self) -> int:
        """Side of the low-resolution mask logits (S/4)."""
        return self.image_size // 4

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        h = d.pop("hiera")
        hiera = HieraConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in h.items()})
        return cls(hiera=hiera, **d)

    def with_image_size(self, image_size: int) -> "ModelConfig":
        if image_size % 32 != 0 or image_size < 64:
            raise ConfigError(f"image size must be a multiple of 32 and >= 64, got {image_size}")
        return dataclasses.replace(self, image_size=image_size)


_REGISTRY: Dict[str, Callable[[], ModelConfig]] = {}


def register(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    cfg = fn()
    _REGISTRY[cfg.name] = fn
    return fn


def get_config(name: str) -> ModelConfig:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown variant {name!r}; choose one of: {', '.join(list_variants())}")
    return _REGISTRY[name]()


def list_variants() -> list:
    return list(_REGISTRY)


_SMALL = HieraConfig(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13))
_BASE_PLUS = HieraConfig(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3),
                         global_att_blocks=(12, 16, 20), window_pos_embed_bkg_spatial_size=(14, 14))
_LARGE = HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                     window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7))

for _version, _prefix in (("2", "sam2"), ("2.1", "sam2.1")):
    for _suffix, _hiera in (("tiny", HieraConfig()), ("small", _SMALL),
                            ("base-plus", _BASE_PLUS), ("large", _LARGE)):
        register(lambda v=_version, p=_prefix, s=_suffix, h=_hiera:
                 ModelConfig(name=f"{p}-hiera-{s}", version=v, hiera=h))


@register
def micro() -> ModelConfig:
    """The 1.46 M-parameter test model of ``shared/reference/micro`` (official key layout)."""
    return ModelConfig(name="micro", image_size=256,
                       hiera=HieraConfig(embed_dim=16, stages=(1, 1, 3, 1), global_att_blocks=(3,)),
                       d_model=64, mem_dim=16, mem_attn_layers=2, mem_attn_ffn_dim=128)
