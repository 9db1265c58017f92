"""Reading a frame source: every frame in order, or only the newest one.

* `SequentialReader` gives every frame in order (video files, folders, headless runs).
* `LatestFrameGrabber` reads a live source on a background thread and keeps only the newest
  frame: a frame captured while the tracker is busy replaces the one waiting, and is counted
  in `dropped`. Latency therefore stays at one tracker step, however slow the board is.

Both retry a failing read of a live source a few times (a camera unplugged mid-stream, a
network hiccup), then end cleanly with `end_reason` set; a file simply ends at its last frame.

`read_frames` is the simple form for batch tools (`sam2-edge track`, `sam2-edge bench`): an
iterator of RGB frames of a video file, a folder of images or a camera index.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Iterator, Optional, Tuple

import cv2
import numpy as np

from .sources import Frame, FrameSource, ImageFolderSource, SourceError, open_source

log = logging.getLogger(__name__)


class SequentialReader:
    """Every frame of a source, in order, on the calling thread."""

    def __init__(self, source: FrameSource, max_retries: int = 5, retry_delay: float = 0.2) -> None:
        self.source = source
        self.max_retries, self.retry_delay = int(max_retries), float(retry_delay)
        self.captured = 0
        self.dropped = 0
        self.end_reason: Optional[str] = None
        self.finished = False
        self._released = False

    def start(self) -> "SequentialReader":
        return self

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        if self.finished:
            return None
        failures = 0
        while True:
            ok, img = self.source.read()
            if ok and img is not None:
                f = Frame(self.captured, img, time.monotonic())
                self.captured += 1
                return f
            if not self.source.is_live:
                expected = getattr(self.source, "frame_count", None)
                if expected and self.captured < expected:
                    self.end_reason = f"read failed after {self.captured} of {expected} frames"
                    log.warning("%s: %s", self.source.name, self.end_reason)
                else:
                    self.end_reason = "end of file"
                self.finished = True
                return None
            failures += 1
            if failures > self.max_retries:
                self.end_reason = f"read failed {failures} times in a row (camera unplugged or stream down?)"
                log.warning("%s: %s", self.source.name, self.end_reason)
                self.finished = True
                return None
            log.warning("%s: read failed, retrying (%d/%d)", self.source.name, failures, self.max_retries)
            time.sleep(self.retry_delay)

    def stop(self) -> None:
        if not self._released:
            self._released = True
            self.source.release()

    def __enter__(self) -> "SequentialReader":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class LatestFrameGrabber:
    """Reads a source on a background thread and keeps only the newest frame.

    `get()` returns a frame not returned before (waiting for one if needed), so the consumer
    always works on the freshest image; every frame replaced before it was taken is counted in
    `dropped`. No queue grows, whatever the speed of the consumer.
    """

    def __init__(self, source: FrameSource, max_retries: int = 5, retry_delay: float = 0.2) -> None:
        self.source = source
        self.max_retries, self.retry_delay = int(max_retries), float(retry_delay)
        self.captured = 0
        self.dropped = 0
        self.delivered = 0
        self.end_reason: Optional[str] = None
        self._latest: Optional[Frame] = None
        self._ended = False
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._released = False

    @property
    def finished(self) -> bool:
        """The source has ended and its last frame was taken."""
        with self._cond:
            return self._ended and self._latest is None

    def start(self) -> "LatestFrameGrabber":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"capture:{self.source.name}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                ok, img = self.source.read()
                if not ok or img is None:
                    if not self.source.is_live:
                        self._finish("end of file")
                        return
                    failures += 1
                    if failures > self.max_retries:
                        self._finish(f"read failed {failures} times in a row (camera unplugged or stream down?)")
                        return
                    log.warning("%s: read failed, retrying (%d/%d)", self.source.name, failures, self.max_retries)
                    self._stop.wait(self.retry_delay)
                    continue
                failures = 0
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = Frame(self.captured, img, time.monotonic())
                    self.captured += 1
                    self._cond.notify_all()
            self._finish("stopped")
        except Exception as e:  # never die silently: the consumer would wait forever
            log.exception("capture thread failed")
            self._finish(f"capture error: {type(e).__name__}: {e}")
        finally:
            # The reading thread releases the source itself: never concurrently with a read.
            self.source.release()

    def _finish(self, reason: str) -> None:
        with self._cond:
            if not self._ended:
                self._ended = True
                self.end_reason = reason
                if reason != "stopped" and reason != "end of file":
                    log.warning("%s: %s", self.source.name, reason)
            self._cond.notify_all()

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame not yet returned; None on timeout or when the source has ended
        (tell them apart with `finished`)."""
        if self._thread is None:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._latest is None and not self._ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            f, self._latest = self._latest, None
            if f is not None:
                self.delivered += 1
            return f

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture thread still blocked in read after %.1f s; it will release the source "
                            "when the read returns", timeout)
        elif not self._released:
            self._released = True
            self.source.release()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "LatestFrameGrabber":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def open_reader(source: FrameSource, drop_frames: Optional[bool] = None, max_retries: int = 5,
                retry_delay: float = 0.2):
    """A `LatestFrameGrabber` for live sources (or when `drop_frames`), else a `SequentialReader`."""
    drop = source.is_live if drop_frames is None else bool(drop_frames)
    cls = LatestFrameGrabber if drop else SequentialReader
    return cls(source, max_retries=max_retries, retry_delay=retry_delay)


def read_frames(source: str) -> Tuple[Iterator[np.ndarray], Optional[int], float]:
    """RGB uint8 frames of a video file, a folder of images (sorted by number), a camera
    index, a /dev/videoN device or a stream URL. -> (iterator, frame count if known, fps).

    A folder reports its number of images and 30 FPS; a camera or stream no frame count. The
    source opens now (errors are raised here, as SourceError) and is released when the
    iterator ends or is closed. A failed read ends the iteration (no retries).
    """
    source = str(source)
    src: FrameSource
    if os.path.isdir(source):       # before the camera index: a folder named "0" is a folder here
        src = ImageFolderSource(source)
    elif not source.isdigit() and not os.path.exists(source) and "://" not in source:
        raise SourceError(f"source {source!r} is neither a video file, a folder of frames nor a camera index")
    else:
        src = open_source(source)

    return RGBFrames(src), src.frame_count, float(src.fps or 30.0)


class RGBFrames(Iterator[np.ndarray]):
    """The iterator `read_frames` returns: RGB frames of a source until its first failed read.
    The source is released at the end, on an error, or by `close()` (also before the first frame)."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.closed = False

    def __iter__(self) -> "RGBFrames":
        return self

    def __next__(self) -> np.ndarray:
        if self.closed:
            raise StopIteration
        try:
            ok, img = self.source.read()
        except BaseException:
            self.close()
            raise
        if not ok or img is None:
            self.close()
            raise StopIteration
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.source.release()

    def __enter__(self) -> "RGBFrames":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_END = object()


class Prefetcher(Iterator[Tuple[np.ndarray, Any]]):
    """Frames read -- and `prepare`d, e.g. resized and normalised by `Tracker.prepare` -- on a
    background thread while the caller tracks the previous one, so decoding and pre-processing
    never sit on the model's critical path.

    A file or a folder (`live=False`) gives every frame in order through a queue of `depth`
    (the reader waits when it is full: nothing is skipped). A live source (`live=True`) gives
    the newest frame: one captured while the caller is busy replaces the one waiting and is
    counted in `dropped` (latency stays one tracker step, as the demo's capture thread).
    Yields (rgb, prepared). An error on the reader thread is raised by the next `next()`.
    The reader thread closes `frames` itself (never concurrently with a read).
    """

    def __init__(self, frames: Iterator[np.ndarray], live: bool, prepare=None, depth: int = 2) -> None:
        import queue

        self.frames, self.live, self.prepare = frames, bool(live), prepare
        self.dropped = 0
        self.read = 0
        self._q: "queue.Queue" = queue.Queue(maxsize=1 if self.live else max(1, int(depth)))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Queue `item`; False when stopped. Live: replace a waiting frame (counted as dropped)."""
        import queue

        while not self._stop.is_set():
            if self.live and item is not _END and not isinstance(item, BaseException):
                with self._lock:
                    try:
                        self._q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
                    self._q.put_nowait(item)
                    return True
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for rgb in self.frames:
                if self._stop.is_set():
                    break
                self.read += 1
                if not self._put((rgb, self.prepare(rgb) if self.prepare is not None else None)):
                    break
            self._put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(e)
        finally:
            close = getattr(self.frames, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Tuple[np.ndarray, Any]:
        import queue

        while True:
            try:
                item = self._q.get(timeout=0.2)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._q.empty():
                    raise StopIteration from None
        if item is _END:
            self._q.put_nowait(_END)  # stay ended for any later call
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, timeout: float = 2.0) -> None:
        """Stop reading and wait for the reader thread (which releases the source)."""
        import queue

        self._stop.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("frame reader still blocked in a read after %.1f s; it releases the source when the "
                        "read returns", timeout)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
