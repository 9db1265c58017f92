"""Model variants as frozen dataclasses and a registry of small builders.

Each builder states only what differs from the SAM 2.1 Hiera-tiny defaults. The ablation
flags of the released checkpoints are fixed in the model code, not exposed here. No torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

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
class RepViTConfig:
    """RepViT trunk (timm `repvit_m1`: 4.71 M parameters, BatchNorm, strides 4/8/16/32)."""

    embed_dim: Tuple[int, ...] = (48, 96, 192, 384)
    depth: Tuple[int, ...] = (2, 2, 14, 2)
    mlp_ratio: int = 2
    kernel_size: int = 3

    @property
    def channel_list(self) -> Tuple[int, ...]:
        """Output channels of the four stages, deepest first (the neck's order)."""
        return tuple(self.embed_dim)[::-1]


@dataclass(frozen=True)
class PerceiverConfig:
    """EdgeTAM's 2-D spatial perceiver: every memory frame becomes `num_latents` global tokens
    + `num_latents_2d` windowed tokens (a sqrt x sqrt grid), width mem_dim, one head."""

    num_latents: int = 256
    num_latents_2d: int = 256
    depth: int = 2
    ff_mult: int = 4

    @property
    def tokens(self) -> int:
        return self.num_latents + self.num_latents_2d

    @property
    def grid(self) -> int:
        """Side of the 2-D latent grid (16 for 256 latents)."""
        return int(round(self.num_latents_2d ** 0.5))


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
    trunk: str = "hiera"  # "hiera" (SAM 2 / 2.1) or "repvit" (EdgeTAM)
    repvit: Optional[RepViTConfig] = None  # the trunk's config when trunk == "repvit"
    perceiver: Optional[PerceiverConfig] = None  # EdgeTAM: memories compressed to latent tokens
    # SAM 2.1's memory flags (None: as the version says; SAM 2 and EdgeTAM have neither)
    no_obj_embed_spatial: Optional[bool] = None  # learned embedding added to the memory of absent objects
    obj_ptr_tpos_enc: Optional[bool] = None  # temporal encoding of object pointers (obj_ptr_tpos_proj)

    @property
    def is_v21(self) -> bool:
        return self.version == "2.1"

    @property
    def has_no_obj_embed_spatial(self) -> bool:
        return self.is_v21 if self.no_obj_embed_spatial is None else self.no_obj_embed_spatial

    @property
    def has_obj_ptr_tpos_enc(self) -> bool:
        return self.is_v21 if self.obj_ptr_tpos_enc is None else self.obj_ptr_tpos_enc

    @property
    def channel_list(self) -> Tuple[int, ...]:
        """Trunk output channels, deepest first (the FPN neck's backbone_channel_list)."""
        return self.repvit.channel_list if self.trunk == "repvit" else self.hiera.channel_list

    @property
    def mem_tokens(self) -> int:
        """Memory tokens per frame: 0 = the spatial map (mem_dim x f x f), else the perceiver's latents."""
        return 0 if self.perceiver is None else self.perceiver.tokens

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

        def sub(kind, v):
            return None if v is None else kind(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})

        d["hiera"] = sub(HieraConfig, d["hiera"])
        d["repvit"] = sub(RepViTConfig, d.get("repvit"))
        d["perceiver"] = sub(PerceiverConfig, d.get("perceiver"))
        return cls(**d)

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


def _edgetam(name: str, **differs) -> ModelConfig:
    """EdgeTAM (facebookresearch/EdgeTAM, `edgetam.yaml`): RepViT-M1 trunk, 2-layer memory
    attention whose cross-attention reads perceiver latents, SAM 2's memory flags."""
    base = dict(name=name, trunk="repvit", repvit=RepViTConfig(), mem_attn_layers=2, perceiver=PerceiverConfig(),
                no_obj_embed_spatial=False, obj_ptr_tpos_enc=False)
    base.update(differs)
    return ModelConfig(**base)


@register
def edgetam() -> ModelConfig:
    return _edgetam("edgetam")


@register
def edgetam_micro() -> ModelConfig:
    """The 5.92 M-parameter EdgeTAM test model of ``shared/reference/edgetam_micro`` (full RepViT-M1)."""
    return _edgetam("edgetam-micro", image_size=256, d_model=64, mem_dim=16, mem_attn_ffn_dim=128,
                    perceiver=PerceiverConfig(num_latents=32, num_latents_2d=64))


# ------------------------------------------------------------------ distillation students
# Each student is its teacher's config with only what differs (sam2_edge.distill trains them);
# `teacher_of(name)` names the teacher whose weights it starts from where shapes match.
_TEACHER_OF: Dict[str, str] = {}


def _student(teacher: str, name: str, **differs) -> ModelConfig:
    _TEACHER_OF[name] = teacher
    return dataclasses.replace(get_config(teacher), name=name, **differs)


def teacher_of(name: str) -> Optional[str]:
    """The registered teacher of a student variant (None for a variant that is no student)."""
    return _TEACHER_OF.get(name)


@register
def tiny_512() -> ModelConfig:
    """SAM 2.1 Hiera-tiny at 512 px: the teacher's weights, resolution only (~4x less compute)."""
    return _student("sam2.1-hiera-tiny", "sam2.1-hiera-tiny-512", image_size=512)


@register
def tiny_perceiver() -> ModelConfig:
    """Hiera-tiny with EdgeTAM's memory: perceiver-compressed memory frames (512 tokens instead
    of 4096), 2 memory-attention layers instead of 4."""
    return _student("sam2.1-hiera-tiny", "sam2.1-hiera-tiny-perceiver", mem_attn_layers=2,
                    perceiver=PerceiverConfig())


@register
def tiny_nano_512() -> ModelConfig:
    """A 7-block Hiera trunk (tiny's widths, stages 1-2-3-1), 2 memory-attention layers, 512 px."""
    return _student("sam2.1-hiera-tiny", "sam2.1-hiera-nano-512", image_size=512, mem_attn_layers=2,
                    hiera=HieraConfig(stages=(1, 2, 3, 1), global_att_blocks=(4, 5)))


@register
def tiny_repvit_512() -> ModelConfig:
    """EdgeTAM's blocks under SAM 2.1's heads: RepViT-M1 trunk, perceiver memory, 2 layers, 512 px."""
    return _student("sam2.1-hiera-tiny", "sam2.1-repvit-512", image_size=512, trunk="repvit",
                    repvit=RepViTConfig(), mem_attn_layers=2, perceiver=PerceiverConfig())


@register
def tiny_repvit_256() -> ModelConfig:
    """The live-tracking student: sam2.1-repvit-512's blocks at 256 px, each memory frame
    compressed to 64 global + 64 windowed latents (an 8 x 8 grid of 2 x 2 windows)."""
    return _student("sam2.1-hiera-tiny", "sam2.1-repvit-256", image_size=256, trunk="repvit",
                    repvit=RepViTConfig(), mem_attn_layers=2, perceiver=PerceiverConfig(num_latents=64, num_latents_2d=64))


@register
def tiny_repvit_256_lite() -> ModelConfig:
    """sam2.1-repvit-256 with a lighter memory attention: 1 layer instead of 2, FFN 1024 wide
    instead of 2048 (the FFN was 2/3 of that stage's FLOPs); everything else the same."""
    return _student("sam2.1-hiera-tiny", "sam2.1-repvit-256-lite", image_size=256, trunk="repvit",
                    repvit=RepViTConfig(), mem_attn_layers=1, mem_attn_ffn_dim=1024,
                    perceiver=PerceiverConfig(num_latents=64, num_latents_2d=64))


@register
def tiny_repvit_224_lite() -> ModelConfig:
    """sam2.1-repvit-256-lite at 224 px: a 14 x 14 stride-16 map, so 64 global + 49 windowed
    latents (a 7 x 7 grid of 2 x 2 windows) per memory frame."""
    return _student("sam2.1-hiera-tiny", "sam2.1-repvit-224-lite", image_size=224, trunk="repvit",
                    repvit=RepViTConfig(), mem_attn_layers=1, mem_attn_ffn_dim=1024,
                    perceiver=PerceiverConfig(num_latents=64, num_latents_2d=49))


@register
def micro_student() -> ModelConfig:
    """The distillation test student of `micro`: one block per Hiera stage, 1 memory-attention layer."""
    return _student("micro", "micro-student", mem_attn_layers=1,
                    hiera=HieraConfig(embed_dim=16, stages=(1, 1, 1, 1), global_att_blocks=(2,)))
