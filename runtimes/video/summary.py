"""What a tracking run saw, for the end-of-run summary of `sam2-edge track`: frames, speed,
on how many frames each object had a mask, and objects whose mask stayed empty (lost)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ObjectStats", "TrackSummary"]


@dataclass
class ObjectStats:
    first_frame: int                       # the frame the object was first prompted / tracked on
    frames: int = 0                        # frames with a result for it
    present: int = 0                       # ... of which its mask was not empty
    empty_since: Optional[int] = None      # the first frame of the current run of empty masks
    warned: bool = False                   # the current empty run was reported
    lost_runs: List[List[int]] = field(default_factory=list)  # [first, last] frames of empty runs >= N


class TrackSummary:
    """Feed it every frame's {obj_id: mask} (`add`); it warns once per run of `empty_after`
    consecutive empty masks of an object (which object, since which frame) and says at the
    end on how many frames each object was present."""

    def __init__(self, empty_after: int = 10) -> None:
        self.empty_after = max(1, int(empty_after))
        self.objects: Dict[int, ObjectStats] = {}
        self.frames = 0
        self.last_frame = -1

    def add(self, frame: int, masks: Mapping[int, np.ndarray]) -> None:
        self.frames += 1
        self.last_frame = frame
        for obj_id, m in masks.items():
            st = self.objects.setdefault(int(obj_id), ObjectStats(first_frame=frame))
            st.frames += 1
            if np.asarray(m).any():
                st.present += 1
                self._end_run(st, frame - 1)
                continue
            if st.empty_since is None:
                st.empty_since = frame
            n = frame - st.empty_since + 1
            if n >= self.empty_after and not st.warned:
                st.warned = True
                log.warning("object %d: empty mask for %d consecutive frames since frame %d (lost? add a prompt "
                            "for it on a later frame)", obj_id, n, st.empty_since)

    def _end_run(self, st: ObjectStats, last: int) -> None:
        if st.empty_since is not None and st.warned:
            st.lost_runs.append([st.empty_since, last])
        st.empty_since, st.warned = None, False

    def finish(self) -> None:
        for st in self.objects.values():
            self._end_run(st, self.last_frame)

    def as_dict(self) -> Dict[str, dict]:
        return {str(k): {"first_frame": v.first_frame, "frames": v.frames, "present": v.present,
                         "empty_runs": v.lost_runs} for k, v in sorted(self.objects.items())}

    def lines(self) -> List[str]:
        out = []
        for k, v in sorted(self.objects.items()):
            lost = "; empty on frames " + ", ".join(f"{a}-{b}" for a, b in v.lost_runs) if v.lost_runs else ""
            out.append(f"  object {k}: mask on {v.present} of {v.frames} frames (from frame {v.first_frame}){lost}")
        return out
