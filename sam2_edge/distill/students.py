"""Students and their teachers: compatibility, size and the initial weights."""

from __future__ import annotations

import logging
import math
import re
from typing import Dict, List, Tuple

import torch

from ..checkpoint import expected_shapes, parameter_names
from ..configs import ModelConfig
from ..errors import ConfigError
from ..modeling.sam2 import SAM2Model

log = logging.getLogger(__name__)


def parameter_count(cfg: ModelConfig) -> int:
    names = parameter_names(cfg)
    return int(sum(math.prod(s) for k, s in expected_shapes(cfg).items() if k in names))


def memory_tokens_per_frame(cfg: ModelConfig) -> int:
    return cfg.mem_tokens or cfg.feat_size ** 2


def check_student(teacher: ModelConfig, student: ModelConfig) -> Dict[str, Tuple[int, int]]:
    """ConfigError unless `student` can learn from `teacher` (the same decoder width, so features,
    pointers and heads compare one to one) and is smaller: no larger in parameters, input size,
    memory tokens per frame or memory-attention depth, and smaller in at least one.
    -> {measure: (teacher, student)}."""
    if student.d_model != teacher.d_model:
        raise ConfigError(f"student {student.name!r} is not compatible with teacher {teacher.name!r}: its feature "
                          f"width d_model is {student.d_model}, the teacher's {teacher.d_model}; the features, "
                          "pointers and heads are distilled one to one, so they must match")
    if student.num_maskmem != teacher.num_maskmem or student.max_obj_ptrs != teacher.max_obj_ptrs:
        raise ConfigError(f"student {student.name!r} is not compatible with teacher {teacher.name!r}: its memory "
                          f"ring ({student.num_maskmem} frames, {student.max_obj_ptrs} pointers) differs from the "
                          f"teacher's ({teacher.num_maskmem}, {teacher.max_obj_ptrs})")
    sizes = {"parameters": (parameter_count(teacher), parameter_count(student)),
             "image_size": (teacher.image_size, student.image_size),
             "memory_tokens_per_frame": (memory_tokens_per_frame(teacher), memory_tokens_per_frame(student)),
             "memory_attention_layers": (teacher.mem_attn_layers, student.mem_attn_layers)}
    larger = [f"{k} {s:,} > {t:,}" for k, (t, s) in sizes.items() if s > t]
    if larger:
        raise ConfigError(f"student {student.name!r} is not smaller than teacher {teacher.name!r}: "
                          + ", ".join(larger) + "; pick a smaller student (sam2-edge info lists the variants)")
    if all(s == t for t, s in sizes.values()):
        raise ConfigError(f"student {student.name!r} is not smaller than teacher {teacher.name!r}: the same "
                          "parameters, input size and memory; distillation would only copy it")
    return sizes


_BLOCK = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.(.+)$")
_MEM_LAYER = re.compile(r"^memory_attention\.layers\.(\d+)\.(.+)$")


def _spread(n_from: int, n_to: int) -> List[int]:
    """`n_to` indices of 0..n_from-1 spread evenly, first and last kept."""
    if n_to == 1:
        return [0]
    return [round(i * (n_from - 1) / (n_to - 1)) for i in range(n_to)]


def _hiera_map(t: ModelConfig, s: ModelConfig) -> Dict[int, int]:
    """Student block -> teacher block: stage by stage, each stage's blocks spread over the teacher's."""
    if t.trunk != "hiera" or s.trunk != "hiera" or len(t.hiera.stages) != len(s.hiera.stages):
        return {}
    out: Dict[int, int] = {}
    t0 = s0 = 0
    for nt, ns in zip(t.hiera.stages, s.hiera.stages):
        for j, i in enumerate(_spread(nt, ns) if ns <= nt else list(range(nt)) + [nt - 1] * (ns - nt)):
            out[s0 + j] = t0 + i
        t0, s0 = t0 + nt, s0 + ns
    return out


def init_from_teacher(student: SAM2Model, teacher: SAM2Model) -> Tuple[int, int]:
    """Copy the teacher's tensors into the student wherever the (mapped) name and shape match:
    Hiera blocks stage by stage, memory-attention layers spread over the teacher's.
    -> (tensors copied, tensors of the student)."""
    tsd = teacher.state_dict()
    bmap = _hiera_map(teacher.cfg, student.cfg)
    lmap = dict(enumerate(_spread(teacher.cfg.mem_attn_layers, student.cfg.mem_attn_layers)))
    ssd = student.state_dict()
    copied = 0
    with torch.no_grad():
        for k, v in ssd.items():
            src = k
            m = _BLOCK.match(k)
            if m and int(m.group(1)) in bmap:
                src = f"image_encoder.trunk.blocks.{bmap[int(m.group(1))]}.{m.group(2)}"
            m = _MEM_LAYER.match(k)
            if m and int(m.group(1)) in lmap:
                src = f"memory_attention.layers.{lmap[int(m.group(1))]}.{m.group(2)}"
            w = tsd.get(src)
            if w is not None and w.shape == v.shape and w.dtype == v.dtype:
                v.copy_(w)
                copied += 1
    log.info("student %s: %d of %d tensors start from the teacher %s", student.cfg.name, copied, len(ssd),
             teacher.cfg.name)
    return copied, len(ssd)


__all__ = ["check_student", "init_from_teacher", "parameter_count", "memory_tokens_per_frame"]
