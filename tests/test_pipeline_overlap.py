"""The live path's overlap (speed issue item 4): frame t+1 read and pre-processed on a thread
while the model runs on frame t (`Prefetcher`, `Tracker.prepare`), outputs written on another
(`BackgroundWriter`). Ordering, newest-frame-wins for live sources, errors and release of
the source, and that a prepared frame tracks exactly like the raw frame."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sam2_edge.runtimes.video import BackgroundWriter, Prefetcher


class Frames:
    """An iterator of numbered frames with a close() that records the thread it ran on."""

    def __init__(self, n: int, delay: float = 0.0, fail_at: int = -1) -> None:
        self.n, self.delay, self.fail_at, self.i = n, delay, fail_at, 0
        self.closed_on = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.i == self.fail_at:
            raise OSError("read failed")
        if self.i >= self.n:
            raise StopIteration
        time.sleep(self.delay)
        self.i += 1
        return np.full((4, 4, 3), self.i - 1, np.uint8)

    def close(self):
        self.closed_on = threading.current_thread().name


def test_file_frames_in_order_prepared_ahead():
    src = Frames(7)
    with Prefetcher(src, live=False, prepare=lambda f: int(f[0, 0, 0]) * 10) as feed:
        got = [(int(rgb[0, 0, 0]), prep) for rgb, prep in feed]
    assert got == [(i, i * 10) for i in range(7)]
    assert feed.dropped == 0 and feed.read == 7
    assert src.closed_on == "prefetch"  # released by the reading thread


def test_live_source_newest_frame_wins():
    src = Frames(30, delay=0.002)
    seen = []
    with Prefetcher(src, live=True) as feed:
        for rgb, _ in feed:
            seen.append(int(rgb[0, 0, 0]))
            time.sleep(0.02)  # a slow model: frames captured meanwhile replace each other
    assert seen == sorted(seen) and seen[-1] == 29  # in order, and the last frame is delivered
    assert feed.dropped > 0 and feed.dropped + len(seen) == 30


def test_reader_error_raised_in_caller_and_source_released():
    src = Frames(10, fail_at=3)
    feed = Prefetcher(src, live=False)
    got = []
    with pytest.raises(OSError, match="read failed"):
        for rgb, _ in feed:
            got.append(int(rgb[0, 0, 0]))
    feed.close()
    assert got == [0, 1, 2] and src.closed_on == "prefetch"


def test_close_stops_a_reader_waiting_on_a_full_queue():
    src = Frames(1000)
    feed = Prefetcher(src, live=False, depth=2)
    next(feed)
    feed.close()
    assert src.closed_on == "prefetch" and src.i < 1000


def test_background_writer_order_and_errors():
    out = []
    with BackgroundWriter(depth=2) as w:
        for i in range(20):
            w.submit(out.append, i)
    assert out == list(range(20))
    w = BackgroundWriter()

    def boom(_):
        raise OSError("disk full")

    w.submit(boom, 0)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):  # the error surfaces on a later submit or on close
            w.submit(out.append, i)
            time.sleep(0.001)
        w.close()


def test_prepared_frame_tracks_like_the_raw_frame(micro_ckpt):
    pytest.importorskip("torch")
    from sam2_edge.errors import InputError
    from sam2_edge.runtimes import Tracker

    from stream_golden import read_frames
    from pathlib import Path

    frames = read_frames(Path(__file__).parent / "fixtures" / "micro_stream", 3)
    a, b = Tracker.from_checkpoint(micro_ckpt), Tracker.from_checkpoint(micro_ckpt)
    ra = a.add_prompt(frames[0], 1, box=[20, 20, 120, 90])
    rb = b.add_prompt(b.prepare(frames[0]), 1, box=[20, 20, 120, 90])
    np.testing.assert_array_equal(ra.low_res_logits, rb.low_res_logits)
    for f in frames[1:]:
        np.testing.assert_array_equal(a.track(f).low_res_logits, b.track(b.prepare(f)).low_res_logits)
    other = Tracker.from_checkpoint(micro_ckpt, image_size=128)
    with pytest.raises(InputError, match="prepared for a 256-px model"):
        other.track(a.prepare(frames[0]))
