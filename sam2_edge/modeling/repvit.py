"""RepViT trunk (Wang et al., "RepViT: Revisiting Mobile CNN From ViT Perspective"), the image
encoder of EdgeTAM: timm's `repvit_m1` built `features_only` (four stages, strides 4/8/16/32),
with timm's parameter names under `body` (EdgeTAM's `TimmBackbone.body`), so the official
EdgeTAM checkpoints load strictly into it.

timm itself is not imported: this is the same computation (BatchNorm in eval mode with its
running statistics, eps 1e-5; legacy RepVggDw `conv3x3_dw + conv1x1_dw + x`, both branches
conv + BN; squeeze-excite with ReLU and a sigmoid gate on every other block; 1x1 MLP with
exact GELU; stem of two stride-2 conv3x3 + BN with GELU between). `RepViT.fold()` folds every
BatchNorm into its convolution and the three RepVggDw branches into one depthwise conv
(re-parameterisation; equal to float precision) for the exported graphs.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import RepViTConfig


def make_divisible(v: float, divisor: int = 8) -> int:
    """timm's channel rounding (round_limit 0): nearest multiple of `divisor`, at least `divisor`."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def _set_folded(m: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Keep folded conv weights as non-persistent buffers (they follow .to(); the state dict
    keeps the official conv + BN tensors) and switch the module's forward to them."""
    with torch.no_grad():
        m.register_buffer("fold_weight", weight.detach().clone(), persistent=False)
        m.register_buffer("fold_bias", bias.detach().clone(), persistent=False)
    m.folded = True


class ConvNorm(nn.Module):
    """Conv2d without bias + BatchNorm2d (timm `ConvNorm`: children `c`, `bn`)."""

    def __init__(self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.folded = False

    def folded_weights(self):
        """(weight, bias) of the conv with the eval-mode BatchNorm folded in."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = self.c.weight * scale[:, None, None, None]
        return w, bn.bias - bn.running_mean * scale

    def fold(self) -> None:
        _set_folded(self, *self.folded_weights())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            c = self.c
            return F.conv2d(x, self.fold_weight, self.fold_bias, c.stride, c.padding, c.dilation, c.groups)
        return self.bn(self.c(x))


class RepVggDw(nn.Module):
    """Token mixer: depthwise 3x3 (+BN) + depthwise 1x1 (+BN) + identity (timm legacy form)."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel_size, 1, (kernel_size - 1) // 2, groups=dim)
        self.conv1 = ConvNorm(dim, dim, 1, 1, 0, groups=dim)
        self.folded = False

    def fold(self) -> None:
        """One depthwise conv: W3 + centre(W1) + centre(1), b3 + b1."""
        with torch.no_grad():
            w3, b3 = self.conv.folded_weights()
            w1, b1 = self.conv1.folded_weights()
            k = w3.shape[-1]
            p = k // 2
            w = w3 + F.pad(w1, (p, p, p, p))
            w[:, 0, p, p] += 1.0
        _set_folded(self, w, b3 + b1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            c = self.conv.c
            return F.conv2d(x, self.fold_weight, self.fold_bias, 1, c.padding, 1, c.groups)
        return self.conv(x) + self.conv1(x) + x


class SqueezeExcite(nn.Module):
    """timm SEModule: global mean -> 1x1 (C -> C/4) -> ReLU -> 1x1 -> sigmoid gate."""

    def __init__(self, dim: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd = make_divisible(dim * rd_ratio)
        self.fc1 = nn.Conv2d(dim, rd, 1)
        self.fc2 = nn.Conv2d(rd, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # [B, C, 1, 1]
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class RepViTMlp(nn.Module):
    """Channel mixer: 1x1 ConvNorm -> GELU -> 1x1 ConvNorm."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.GELU()
        self.conv2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class RepViTBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int, kernel_size: int, use_se: bool) -> None:
        super().__init__()
        self.token_mixer = RepVggDw(dim, kernel_size)
        self.se = SqueezeExcite(dim) if use_se else nn.Identity()
        self.channel_mixer = RepViTMlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)


class RepViTDownsample(nn.Module):
    """Block, depthwise stride-2 ConvNorm, 1x1 ConvNorm to the new width, residual MLP."""

    def __init__(self, dim: int, mlp_ratio: int, out_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.pre_block = RepViTBlock(dim, mlp_ratio, kernel_size, use_se=False)
        self.spatial_downsample = ConvNorm(dim, dim, kernel_size, 2, (kernel_size - 1) // 2, groups=dim)
        self.channel_downsample = ConvNorm(dim, out_dim, 1, 1)
        self.ffn = RepViTMlp(out_dim, out_dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class RepViTStage(nn.Module):
    def __init__(self, dim: int, out_dim: int, depth: int, mlp_ratio: int, kernel_size: int,
                 downsample: bool) -> None:
        super().__init__()
        self.downsample = RepViTDownsample(dim, mlp_ratio, out_dim, kernel_size) if downsample else nn.Identity()
        # squeeze-excite on blocks 0, 2, 4, ... of every stage
        self.blocks = nn.Sequential(*(RepViTBlock(out_dim, mlp_ratio, kernel_size, use_se=i % 2 == 0)
                                      for i in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class RepViTStem(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(cin, cout // 2, 3, 2, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvNorm(cout // 2, cout, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act1(self.conv1(x)))


class RepViTFeatures(nn.Module):
    """timm's features_only RepViT: `stem`, `stages_0` .. `stages_3` (FeatureListNet names)."""

    def __init__(self, cfg: RepViTConfig) -> None:
        super().__init__()
        dims = cfg.embed_dim
        self.stem = RepViTStem(3, dims[0])
        prev = dims[0]
        for i, (dim, depth) in enumerate(zip(dims, cfg.depth)):
            self.add_module(f"stages_{i}", RepViTStage(prev, dim, depth, cfg.mlp_ratio, cfg.kernel_size,
                                                       downsample=i > 0))
            prev = dim
        self.num_stages = len(dims)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)  # [B, 3, S, S] -> [B, C0, S/4, S/4]
        out = []
        for i in range(self.num_stages):
            x = getattr(self, f"stages_{i}")(x)
            out.append(x)
        return out


class RepViT(nn.Module):
    """EdgeTAM's `TimmBackbone`: [B, 3, S, S] -> four stage outputs [B, C_i, S/4/2^i, S/4/2^i],
    shallowest first (C = 48, 96, 192, 384 for M1)."""

    def __init__(self, cfg: RepViTConfig) -> None:
        super().__init__()
        self.body = RepViTFeatures(cfg)
        self.channel_list = tuple(cfg.channel_list)

    def fold(self) -> None:
        """Fold BatchNorm (eval statistics) into the convs and RepVggDw branches into one conv.
        The state dict is unchanged; only the forward uses the folded convs. Idempotent."""
        for m in self.modules():
            if isinstance(m, RepVggDw):
                m.fold()
            elif isinstance(m, ConvNorm):
                m.fold()

    def freeze(self) -> None:
        """Prepare for the exported (inference-only) graphs: BatchNorm folded."""
        self.fold()

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.body(x)
