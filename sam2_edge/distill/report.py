"""Held-out J&F of the student against the teacher (both tracked by the runtime's tracker with
the same automatic prompts; sam2_edge.evaluation scores them), and the loss curve."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..evaluation.metrics import score_sequence
from .data import Segment, read_clip
from .store import atomic

log = logging.getLogger(__name__)


class HeldOut:
    """The held-out frames and the teacher's masks on them (computed once)."""

    def __init__(self, segment: Segment, teacher, objects: int = 2) -> None:
        from ..quantization.calibration import auto_prompts

        self.name = f"{segment.source.name}[{segment.lo}:{segment.hi}]"
        self.frames = read_clip(segment.source, segment.lo, segment.hi - segment.lo)
        h, w = self.frames[0].shape[:2]
        self.prompts = auto_prompts(w, h, objects)
        self.objects = list(range(1, objects + 1))
        self.teacher_masks = self._track(teacher)

    def _track(self, model) -> List[Dict[int, np.ndarray]]:
        from ..quantization.calibration import track_clip
        from ..runtimes.backends.torch_backend import TorchBackend

        backend = TorchBackend(copy.deepcopy(model).float().cpu())  # the stages freeze a copy, never the student
        return track_clip(backend, self.frames, self.prompts).masks

    def score(self, student) -> Dict[str, float]:
        r = score_sequence(self._track(student), self.teacher_masks, self.objects)
        return {"J": r["J"], "F": r["F"], "JF": r["JF"], "frames": len(self.frames), "video": self.name}


def plot(path: Path, records: Sequence[dict]) -> bool:
    """loss.png: the training loss (and held-out J&F) against the step; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    for stage, colour in ((1, "tab:blue"), (2, "tab:orange")):
        pts = [(r["step"], r["loss"]) for r in train if r.get("stage") == stage]
        if pts:
            ax.plot(*zip(*pts), color=colour, lw=1, label=f"stage {stage} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r["eval"]["JF"] for r in evals], "g-o", label="held-out J&F vs teacher")
        ax2.set_ylabel("J&F vs teacher")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower right")
    ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


__all__ = ["HeldOut", "plot"]
