"""Bounded memory: the tracker's buffers are fixed once its objects exist, and resident
memory does not grow with the stream (CI scale; the 10,000-frame soak is
benchmarks/memory_soak.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from memory_soak import rss_bytes, soak  # noqa: E402

from fake_backend import FakeBackend  # noqa: E402
from sam2_edge.runtimes import Tracker  # noqa: E402

FIX = Path(__file__).parent / "fixtures"


def test_memory_bytes_constant_with_fake_backend():
    t = Tracker(FakeBackend())
    frames = [np.full((40, 50, 3), i, np.uint8) for i in range(5)]
    marks = soak(t, frames, 400, checkpoints=(30, 200), log_every=0)
    assert marks[30][1] == marks[200][1] == marks[400][1] > 0


def test_resident_memory_bounded_micro():
    pytest.importorskip("torch")
    tracker = Tracker.from_checkpoint(str(FIX / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"))
    files = sorted((FIX / "micro_stream" / "frames").glob("*.jpg"))[:8]
    frames = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    soak(tracker, frames, 30, checkpoints=(), log_every=0)  # warm up allocators
    marks = soak(tracker, frames, 120, checkpoints=(40,), log_every=0)
    (r40, m40), (r120, m120) = marks[40], marks[120]
    print(f"rss after 40 frames {r40 / 2**20:.1f} MiB, after 120 {r120 / 2**20:.1f} MiB; memory_bytes {m120}")
    assert m40 == m120
    assert r120 <= r40 * 1.02 + 4 * 2**20, (r40, r120)  # within 2 % (+4 MiB allocator slack)
