"""Per-object memory as fixed-size ring buffers, and the policy that decides which stored
frames fill which memory-attention slot. Pure numpy; unit-tested on its own.

Layout (capacities and the shape of one frame's memory from `TrackerSpec`):
  memory  [1, Kc + R, *frame]:        slots 0..Kc-1 conditioning frames, Kc + (t mod R) recent frame t
          (frame = [mem_dim, f, f] for SAM 2's spatial memory, [mem_tokens, mem_dim] for EdgeTAM's
          perceiver latents: the policy below never looks inside a frame)
  ptrs    [1, Kc + Pr, C]:            slots 0..Kc-1 conditioning frames, Kc + (t mod Pr) recent frame t
with R = num_maskmem - 1 (6) and Pr = 15. A slot is valid for frame f only if the frame
number stored with it is the one the official code would use, so stale entries never leak.

Official rules reproduced (SAM2Base._prepare_memory_conditioned_features, streaming):
  * memory of frame f: every kept conditioning frame (temporal slot 0, tpos index
    num_maskmem - 1) + the non-conditioning frames f-1 .. f-6 (tpos index d - 1 for f-d);
  * pointers of frame f: kept conditioning frames t <= f at distance f - t, then the
    non-conditioning frames f-1 .. f-15 at distance d;
  * more than Kc conditioning frames: the official `select_closest_cond_frames` keeps the Kc
    closest; in a stream every later frame is closest to the newest ones, so the oldest is
    evicted, and (as the official "unselected" conditioning outputs) it still serves as a
    recent frame while it lies within f-6 (memory) / f-15 (pointer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..contract import TrackerSpec


def round_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 precision (nearest, ties to even), kept as float32.
    The official predictor stores memories in bfloat16."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return r.view(np.float32)


@dataclass
class MemoryInputs:
    """Preallocated memory-attention inputs of one object (filled in place every frame)."""

    mem_tpos: np.ndarray  # [1, M] int32
    mem_valid: np.ndarray  # [1, M] float32
    ptr_dist: np.ndarray  # [1, P] float32
    ptr_valid: np.ndarray  # [1, P] float32


@dataclass
class ObjectMemory:
    spec: TrackerSpec
    memory: np.ndarray = field(init=False)  # [1, M, *spec.mem_frame_shape]
    mem_frame: np.ndarray = field(init=False)  # [M] int64, -1 = empty
    ptrs: np.ndarray = field(init=False)  # [1, P, C]
    ptr_frame: np.ndarray = field(init=False)  # [P] int64, -1 = empty
    inputs: MemoryInputs = field(init=False)

    def __post_init__(self) -> None:
        s = self.spec
        self.memory = np.zeros((1, s.mem_slots) + s.mem_frame_shape, np.float32)
        self.mem_frame = np.full(s.mem_slots, -1, np.int64)
        self.ptrs = np.zeros((1, s.ptr_slots, s.d_model), np.float32)
        self.ptr_frame = np.full(s.ptr_slots, -1, np.int64)
        self.inputs = MemoryInputs(np.zeros((1, s.mem_slots), np.int32), np.zeros((1, s.mem_slots), np.float32),
                                   np.zeros((1, s.ptr_slots), np.float32), np.zeros((1, s.ptr_slots), np.float32))

    @property
    def nbytes(self) -> int:
        i = self.inputs
        return int(self.memory.nbytes + self.ptrs.nbytes + self.mem_frame.nbytes + self.ptr_frame.nbytes
                   + i.mem_tpos.nbytes + i.mem_valid.nbytes + i.ptr_dist.nbytes + i.ptr_valid.nbytes)

    @property
    def cond_frames(self) -> np.ndarray:
        kc = self.spec.cond_slots
        return self.mem_frame[:kc][self.mem_frame[:kc] >= 0]

    def _recent_mem_slot(self, t: int) -> int:
        return self.spec.cond_slots + t % self.spec.recent_slots

    def _recent_ptr_slot(self, t: int) -> int:
        return self.spec.cond_slots + t % self.spec.ptr_recent

    def _write_recent(self, t: int, maskmem: np.ndarray, ptr: np.ndarray) -> None:
        ms, ps = self._recent_mem_slot(t), self._recent_ptr_slot(t)
        if self.mem_frame[ms] <= t:  # never overwrite a newer frame with an older one
            self.memory[0, ms] = maskmem
            self.mem_frame[ms] = t
        if self.ptr_frame[ps] <= t:
            self.ptrs[0, ps] = ptr
            self.ptr_frame[ps] = t

    def commit(self, t: int, maskmem: np.ndarray, ptr: np.ndarray, is_cond: bool) -> None:
        """Store frame t's memory features [*spec.mem_frame_shape] (already bf16-rounded) and pointer [C]."""
        kc = self.spec.cond_slots
        if not is_cond:
            self._write_recent(t, maskmem, ptr)
            return
        cond = self.mem_frame[:kc]
        hit = np.flatnonzero(cond == t)
        if hit.size:
            slot = int(hit[0])
        elif (cond < 0).any():
            slot = int(np.flatnonzero(cond < 0)[0])
        else:  # evict the oldest conditioning frame; it lives on as a recent frame
            slot = int(np.argmin(cond))
            old = int(cond[slot])
            self._write_recent(old, self.memory[0, slot].copy(), self.ptrs[0, slot].copy())
        self.memory[0, slot] = maskmem
        self.ptrs[0, slot] = ptr
        self.mem_frame[slot] = t
        self.ptr_frame[slot] = t

    def fill_inputs(self, f: int) -> MemoryInputs:
        """Slot validity, temporal-encoding indices and pointer distances for frame f."""
        s, kc = self.spec, self.spec.cond_slots
        inp = self.inputs
        inp.mem_valid[:] = 0.0
        inp.mem_tpos[:] = 0
        inp.ptr_valid[:] = 0.0
        inp.ptr_dist[:] = 0.0
        cond = self.mem_frame[:kc]
        inp.mem_valid[0, :kc] = cond >= 0
        inp.mem_tpos[0, :kc] = s.num_maskmem - 1
        for d in range(1, s.recent_slots + 1):
            slot = self._recent_mem_slot(f - d)
            if f - d >= 0 and self.mem_frame[slot] == f - d:
                inp.mem_valid[0, slot] = 1.0
                inp.mem_tpos[0, slot] = d - 1
        cptr = self.ptr_frame[:kc]
        ok = (cptr >= 0) & (cptr <= f)
        inp.ptr_valid[0, :kc] = ok
        inp.ptr_dist[0, :kc] = np.where(ok, f - cptr, 0)
        for d in range(1, s.ptr_recent + 1):
            slot = self._recent_ptr_slot(f - d)
            if f - d >= 0 and self.ptr_frame[slot] == f - d:
                inp.ptr_valid[0, slot] = 1.0
                inp.ptr_dist[0, slot] = d
        return inp
