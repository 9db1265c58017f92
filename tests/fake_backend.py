"""A deterministic stand-in backend with the exact stage shapes of a TrackerSpec, for fast
tests of tracker logic (validation, state handling, memory bounds). No torch."""

from __future__ import annotations

import numpy as np

from sam2_edge.runtimes.backends.base import Backend
from sam2_edge.contract import TrackerSpec


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, spec: TrackerSpec | None = None) -> None:
        super().__init__(spec or TrackerSpec(image_size=64, d_model=32, mem_dim=8))
        self.io = self.spec.io()
        self.calls = []

    def run(self, stage, inputs):
        self.calls.append(stage)
        _, outs = self.io[stage]
        for spec_in, a in zip(self.io[stage][0], inputs):
            assert a.shape == spec_in.shape and a.dtype == np.dtype(spec_in.dtype), (stage, spec_in, a.shape, a.dtype)
        seed = float(np.asarray(inputs[0]).ravel()[:16].sum())
        res = []
        for o in outs:
            v = np.full(o.shape, np.tanh(seed) + 0.5, dtype=o.dtype)
            if o.name == "low_res":  # a disc of positive logits so masks are non-trivial
                n = o.shape[-1]
                yy, xx = np.mgrid[:n, :n]
                v[...] = (n / 4) - np.hypot(yy - n / 2, xx - n / 2)
            res.append(v)
        return tuple(res)


def state_fingerprint(tracker) -> tuple:
    """Everything a rejected call must leave unchanged."""
    objs = []
    for oid, o in tracker._objects.items():
        cur = o.current
        objs.append((oid, o.first_frame, o.memory.memory.tobytes(), o.memory.mem_frame.tobytes(),
                     o.memory.ptrs.tobytes(), o.memory.ptr_frame.tobytes(),
                     None if cur is None else (cur.frame, cur.low_res.tobytes(), cur.is_cond, cur.mem_encoded)))
    return (tracker.frame_index, tracker._next_index, tracker._hw, tuple(objs))
