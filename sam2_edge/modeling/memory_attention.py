"""Memory attention: the current frame's stride-16 features attend to a fixed number of
memory slots (spatial memories + object-pointer tokens). Axial RoPE with real cos/sin on
the queries and on the spatial keys (repeated per memory frame); pointer tokens are
excluded from RoPE. Absent slots carry an additive key bias of -1e4, so a half-full ring
computes what the official code computes on the shorter memory.

SAM 2 / 2.1 cross-attend with `RoPEAttention` (every memory token of a frame rotated by the
query table). EdgeTAM cross-attends with `RoPEAttentionv2`: each memory frame is
[global latents ; 2-D latents], only the 2-D latents are rotated, by their own (smaller) table.

Value folding (`fold_memory_values`, used by the ONNX and ExecuTorch exporters). The cross-attention
has one head and its values are never rotated, and every row of softmax(S) sums to 1, so

    out_proj(softmax(S) (X W_v^T + b_v)) = (softmax(S) X) (W_o W_v)^T + (W_o b_v + b_o)

exactly: the P.V product then runs at the memory width (64) instead of 256, and the value
projection of the 28,736 memory tokens disappears. ONNX Runtime's fused MultiHeadAttention runs
that 2.1x faster (v head size 64 vs 256, q/k 256; measured in benchmarks/README.md). Eager torch
keeps the unfolded form: its CPU flash kernel needs equal q/k and v widths and falls back to the
materialising math path otherwise (slower). The folded weights are computed once, when
`fold_memory_values` is called on the loaded model, and held as non-persistent buffers: loading
stays strict on the official names, and the exported graphs hold W_o W_v as one constant (a
product computed in the graph would run every call and be quantised as if it were a layer).
Folding is for inference and export; the module no longer follows later changes of W_v / W_o."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .common import attention
from .position_encoding import apply_rope, rope_cos_sin
from .transformer import Attention


def _values(attn: Attention, v: torch.Tensor) -> torch.Tensor:
    """[B, Nk, kv_in] -> [B, 1, Nk, d]: projected values, or (folded) the inputs themselves."""
    return attn.split(v) if attn.fold_values else attn.split(attn.v_proj(v))


def _project_out(attn: Attention, o: torch.Tensor) -> torch.Tensor:
    """Attention output [B, Nq, d] (or [B, Nq, kv_in] folded) -> [B, Nq, C]."""
    if not attn.fold_values:
        return attn.out_proj(o)
    return F.linear(o, attn.folded_weight, attn.folded_bias)  # W_o W_v [C, kv_in], W_o b_v + b_o [C]


def fold_memory_values(model: nn.Module) -> int:
    """Switch every single-head cross-attention whose values are narrower than its internal width
    (memory attention: 64 -> 256) to the folded form (module docstring). Exact up to float
    summation order; returns how many modules were switched. Call it on the loaded model: the
    folded weights are computed now, from the current W_v / W_o."""
    n = 0
    for m in model.modules():
        if isinstance(m, (RoPEAttention, RoPEAttentionv2)) and m.num_heads == 1 \
                and m.v_proj.in_features < m.v_proj.out_features:
            with torch.no_grad():
                w = m.out_proj.weight @ m.v_proj.weight  # [C, d] @ [d, kv_in] -> [C, kv_in]
                b = m.out_proj.weight @ m.v_proj.bias + m.out_proj.bias  # [C]
            m.register_buffer("folded_weight", w, persistent=False)
            m.register_buffer("folded_bias", b, persistent=False)
            m.fold_values = True
            n += 1
    return n


class RoPEAttention(Attention):
    def __init__(self, embedding_dim: int, feat_size: int, kv_in_dim: Optional[int] = None,
                 rope_theta: float = 10000.0) -> None:
        super().__init__(embedding_dim, num_heads=1, downsample_rate=1, kv_in_dim=kv_in_dim)
        self.fold_values = False  # see fold_memory_values
        cos, sin = rope_cos_sin(self.internal_dim, feat_size, feat_size, rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # [hw, d/2]
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                num_k_exclude_rope: int = 0, key_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        q, k, v = self.split(self.q_proj(q)), self.split(self.k_proj(k)), _values(self, v)
        q = apply_rope(q, self.rope_cos, self.rope_sin)
        n_rope = k.shape[-2] - num_k_exclude_rope
        hw = q.shape[-2]
        b, h, _, d = k.shape
        # spatial keys = n_rope / hw memory frames of hw tokens, each rotated like the queries
        # (broadcast over frames rather than a repeated table: exporters would fold that into constants)
        # (rank <= 4 throughout: CoreML supports rank <= 5 and apply_rope adds a pair axis)
        k_rope = apply_rope(k[:, :, :n_rope].reshape(b * h * (n_rope // hw), hw, d),
                            self.rope_cos, self.rope_sin).reshape(b, h, n_rope, d)
        k = torch.cat([k_rope, k[:, :, n_rope:]], dim=2) if num_k_exclude_rope > 0 else k_rope
        return _project_out(self, self.merge(attention(q, k, v, key_bias)))


class RoPEAttentionv2(Attention):
    """EdgeTAM's cross-attention to perceiver memories: queries rotated with a fixed
    q_size x q_size axial table; the keys of each of the `rope_k_repeat` memory frames are
    [T - k_size^2 unrotated (global latents) ; k_size^2 rotated with the k_size x k_size
    table] (the same table for every frame); the trailing pointer tokens are not rotated."""

    def __init__(self, embedding_dim: int, q_size: int, k_size: int, kv_in_dim: Optional[int] = None,
                 rope_theta: float = 10000.0) -> None:
        super().__init__(embedding_dim, num_heads=1, downsample_rate=1, kv_in_dim=kv_in_dim)
        self.fold_values = False  # see fold_memory_values
        cos, sin = rope_cos_sin(self.internal_dim, q_size, q_size, rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # [q_size^2, d/2]
        self.register_buffer("rope_sin", sin, persistent=False)
        cos, sin = rope_cos_sin(self.internal_dim, k_size, k_size, rope_theta)
        self.register_buffer("rope_k_cos", cos, persistent=False)  # [k_size^2, d/2]
        self.register_buffer("rope_k_sin", sin, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0,
                key_bias: Optional[torch.Tensor] = None, rope_k_repeat: int = 1) -> torch.Tensor:
        q, k, v = self.split(self.q_proj(q)), self.split(self.k_proj(k)), _values(self, v)
        q = apply_rope(q, self.rope_cos, self.rope_sin)
        b, h, n, d = k.shape
        n_mem = n - num_k_exclude_rope
        per_frame = n_mem // rope_k_repeat  # T tokens per memory frame
        n_rot = self.rope_k_cos.shape[0]
        frames = k[:, :, :n_mem].reshape(b * h * rope_k_repeat, per_frame, d)  # rank <= 4 (CoreML)
        rot = apply_rope(frames[:, per_frame - n_rot:], self.rope_k_cos, self.rope_k_sin)
        frames = torch.cat([frames[:, :per_frame - n_rot], rot], dim=1).reshape(b, h, n_mem, d)
        k = torch.cat([frames, k[:, :, n_mem:]], dim=2) if num_k_exclude_rope > 0 else frames
        return _project_out(self, self.merge(attention(q, k, v, key_bias)))


class MemoryAttentionLayer(nn.Module):
    def __init__(self, d_model: int, mem_dim: int, ffn_dim: int, feat_size: int, rope_k_size: int = 0) -> None:
        """rope_k_size 0: SAM 2 cross-attention (RoPEAttention); > 0: EdgeTAM's RoPEAttentionv2
        whose memory keys are perceiver latents with a rope_k_size^2 2-D grid per frame."""
        super().__init__()
        self.self_attn = RoPEAttention(d_model, feat_size)
        if rope_k_size:
            self.cross_attn_image = RoPEAttentionv2(d_model, feat_size, rope_k_size, kv_in_dim=mem_dim)
        else:
            self.cross_attn_image = RoPEAttention(d_model, feat_size, kv_in_dim=mem_dim)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_ptr_tokens: int, key_bias: Optional[torch.Tensor], num_mem_frames: int = 1) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)
        h = self.norm2(x)
        if isinstance(self.cross_attn_image, RoPEAttentionv2):
            x = x + self.cross_attn_image(h, memory + memory_pos, memory, num_ptr_tokens, key_bias, num_mem_frames)
        else:
            x = x + self.cross_attn_image(h, memory + memory_pos, memory, num_ptr_tokens, key_bias)
        h = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(h)))


class MemoryAttention(nn.Module):
    def __init__(self, d_model: int, mem_dim: int, num_layers: int, ffn_dim: int, feat_size: int,
                 rope_k_size: int = 0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(d_model, mem_dim, ffn_dim, feat_size, rope_k_size)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, num_ptr_tokens: int = 0,
                key_bias: Optional[torch.Tensor] = None, num_mem_frames: int = 1) -> torch.Tensor:
        """curr/curr_pos [B, hw, C]; memory/memory_pos [B, M*T + P, mem_dim] (M memory frames of T
        tokens first, the last num_ptr_tokens are pointer tokens); key_bias [B, M*T + P] -> [B, hw, C]."""
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_ptr_tokens, key_bias, num_mem_frames)
        return self.norm(x)
