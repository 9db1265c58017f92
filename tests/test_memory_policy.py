"""The ring-buffer policy (runtimes/memory.py) on its own: which stored frames fill which
memory-attention slot, with which temporal index and pointer distance (official rules)."""

from __future__ import annotations

import numpy as np

from sam2_edge.runtimes.memory import ObjectMemory, round_bf16
from sam2_edge.contract import TrackerSpec

SPEC = TrackerSpec(image_size=64, d_model=32, mem_dim=8, cond_slots=2)


def commit(mem: ObjectMemory, t: int, cond: bool = False) -> None:
    mem.commit(t, np.full((8, 4, 4), t, np.float32), np.full(32, t, np.float32), cond)


def used(mem: ObjectMemory, f: int):
    inp = mem.fill_inputs(f)
    frames = {int(mem.mem_frame[i]): int(inp.mem_tpos[0, i]) for i in np.flatnonzero(inp.mem_valid[0])}
    ptrs = {int(mem.ptr_frame[i]): float(inp.ptr_dist[0, i]) for i in np.flatnonzero(inp.ptr_valid[0])}
    # the slot's stored data is the frame it claims to be
    for i in np.flatnonzero(inp.mem_valid[0]):
        assert mem.memory[0, i, 0, 0, 0] == mem.mem_frame[i]
    return frames, ptrs


def test_memory_uses_cond_plus_six_previous_frames():
    mem = ObjectMemory(SPEC)
    commit(mem, 0, cond=True)
    for t in range(1, 20):
        frames, ptrs = used(mem, t)
        expect = {0: 6} | {g: t - g - 1 for g in range(max(1, t - 6), t)}
        assert frames == expect, (t, frames)
        expect_ptr = {0: float(t)} | {g: float(t - g) for g in range(max(1, t - 15), t)}
        assert ptrs == expect_ptr, (t, ptrs)
        commit(mem, t)


def test_rings_overflow_and_counts_match_official():
    """micro stream_long: from frame 16 on, 7 memory frames and 16 pointers."""
    mem = ObjectMemory(SPEC)
    commit(mem, 0, cond=True)
    for t in range(1, 40):
        frames, ptrs = used(mem, t)
        assert len(frames) == min(t - 1, 6) + 1
        assert len(ptrs) == min(t - 1, 15) + 1
        commit(mem, t)


def test_second_conditioning_frame_is_kept_and_used_by_all_later_frames():
    mem = ObjectMemory(SPEC)
    commit(mem, 0, cond=True)
    for t in range(1, 4):
        commit(mem, t)
    commit(mem, 4, cond=True)  # stream_click_untracked: frame 4 is prompted before tracking
    for t in range(5, 30):
        frames, ptrs = used(mem, t)
        assert frames[0] == 6 and frames[4] == 6  # both in temporal slot 0
        assert ptrs[0] == t and ptrs[4] == t - 4
        # two conditioning frames + the non-conditioning frames among t-1..t-6 (frames 1..3, 5..)
        recent = [g for g in range(t - 6, t) if g >= 1 and g != 4]
        assert len(frames) == 2 + len(recent)
        commit(mem, t)
    frames, ptrs = used(mem, 30)
    assert len(frames) == 8 and len(ptrs) == 17  # the official counts (README: 8 and 17)


def test_eviction_keeps_newest_cond_frames_and_reuses_evicted_as_recent():
    mem = ObjectMemory(SPEC)
    commit(mem, 0, cond=True)
    commit(mem, 1)
    commit(mem, 2, cond=True)
    commit(mem, 3, cond=True)  # three prompts, two slots: frame 0 evicted
    assert sorted(mem.cond_frames.tolist()) == [2, 3]
    frames, ptrs = used(mem, 4)
    # frame 0 is an "unselected" conditioning frame: used as a recent frame (4 - 0 = 4 <= 6)
    assert frames == {2: 6, 3: 6, 1: 2, 0: 3}
    assert ptrs == {2: 2.0, 3: 1.0, 1: 3.0, 0: 4.0}
    frames, _ = used(mem, 7)
    assert 0 not in frames  # 7 - 0 > 6


def test_stale_slots_never_leak():
    mem = ObjectMemory(SPEC)
    commit(mem, 0, cond=True)
    commit(mem, 1)
    frames, ptrs = used(mem, 9)  # frames 2..8 were never stored (e.g. object removed/re-added)
    assert frames == {0: 6} and ptrs == {0: 9.0, 1: 8.0}  # frame 1: pointer range 15, memory range 6


def test_correction_on_same_frame_overwrites():
    mem = ObjectMemory(SPEC)
    commit(mem, 0, cond=True)
    commit(mem, 5)
    mem.commit(5, np.full((8, 4, 4), 55, np.float32), np.full(32, 55, np.float32), False)
    inp = mem.fill_inputs(6)
    slot = [i for i in np.flatnonzero(inp.mem_valid[0]) if mem.mem_frame[i] == 5][0]
    assert mem.memory[0, slot, 0, 0, 0] == 55


def test_buffers_are_fixed_size():
    mem = ObjectMemory(SPEC)
    ids = (id(mem.memory), id(mem.ptrs), mem.nbytes)
    commit(mem, 0, cond=True)
    for t in range(1, 100):
        commit(mem, t)
        mem.fill_inputs(t + 1)
    assert (id(mem.memory), id(mem.ptrs), mem.nbytes) == ids


def test_round_bf16_matches_bfloat16_round_to_nearest_even():
    x = np.array([1.0, 1.00390625, 1.01171875, -3.1415927, 1e-8, 65504.0, 0.0], np.float32)
    r = round_bf16(x)
    # bf16 keeps 8 mantissa bits: 1 + 2^-8 is a tie -> even (1.0); 1 + 3*2^-8 tie -> 1 + 2^-6
    assert r[0] == 1.0 and r[1] == 1.0 and r[2] == np.float32(1.015625)
    assert (r.view(np.uint32) & 0xFFFF).max() == 0
    try:
        import torch
    except ImportError:
        return
    y = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 10
    ref = torch.from_numpy(y).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(round_bf16(y), ref)
