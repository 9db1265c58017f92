"""Frame sources of the demo (camera, V4L2 device, video file, network stream, Pi camera) and
the two ways of reading them:

* `SequentialReader` gives every frame in order (video files, headless runs).
* `LatestFrameGrabber` reads a live source on a background thread and keeps only the newest
  frame: a frame captured while the tracker is busy replaces the one waiting, and is counted
  in `dropped`. Latency therefore stays at one tracker step, however slow the board is.

Both retry a failing read of a live source a few times (a camera unplugged mid-stream, a
network hiccup), then end cleanly with `end_reason` set; a file simply ends at its last frame.

Frames are BGR uint8 (OpenCV's order); the app converts them to RGB for the tracker.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Protocol, Tuple

import cv2
import numpy as np

from sam2_edge.errors import Sam2EdgeError

log = logging.getLogger(__name__)


class SourceError(Sam2EdgeError):
    """A frame source cannot be opened; the message lists what was tried."""


@dataclass
class Frame:
    index: int              # position in the source (counts dropped frames too)
    image: np.ndarray       # HxWx3 uint8, BGR
    timestamp: float        # time.monotonic() when it was read


class FrameSource(Protocol):
    name: str
    is_live: bool
    fps: Optional[float]
    frame_count: Optional[int]

    def read(self) -> Tuple[bool, Optional[np.ndarray]]: ...

    def release(self) -> None: ...


# ------------------------------------------------------------------------------------------ sources
class CvSource:
    """A `cv2.VideoCapture` (or anything with the same isOpened/read/get/release methods)."""

    def __init__(self, cap: Any, name: str, is_live: bool, first: Optional[np.ndarray] = None) -> None:
        self.cap, self.name, self.is_live = cap, name, is_live
        self._first = first
        fps = _safe_get(cap, cv2.CAP_PROP_FPS)
        self.fps: Optional[float] = fps if fps and 0 < fps < 1000 else None
        n = _safe_get(cap, cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count: Optional[int] = int(n) if (not is_live and n and n > 0) else None

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        if self._first is not None:
            img, self._first = self._first, None
            return True, img
        try:
            ok, img = self.cap.read()
        except cv2.error as e:  # some backends raise instead of returning False when a device vanishes
            log.debug("%s: read raised %s", self.name, e)
            return False, None
        if not ok or img is None:
            return False, None
        return True, _as_bgr(img)

    def release(self) -> None:
        try:
            self.cap.release()
        except Exception as e:  # pragma: no cover - best effort
            log.debug("%s: release failed: %s", self.name, e)


class PiCamera2Source:
    """A Raspberry Pi camera module through picamera2 (libcamera); OpenCV cannot open those directly."""

    is_live = True
    frame_count = None

    def __init__(self, camera_num: int = 0, width: Optional[int] = None, height: Optional[int] = None) -> None:
        from picamera2 import Picamera2  # optional dependency (apt install python3-picamera2)

        self.name = f"picamera2 camera {camera_num}"
        self._cam = Picamera2(camera_num)
        size = (int(width or 1280), int(height or 720))
        # picamera2's "RGB888" is B, G, R in memory: OpenCV's order.
        config = self._cam.create_video_configuration(main={"size": size, "format": "RGB888"})
        self._cam.configure(config)
        self._cam.start()
        self.fps: Optional[float] = None

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        try:
            img = self._cam.capture_array("main")
        except Exception as e:
            log.debug("%s: capture failed: %s", self.name, e)
            return False, None
        return True, _as_bgr(np.ascontiguousarray(img[..., :3]))

    def release(self) -> None:
        try:
            self._cam.stop()
            self._cam.close()
        except Exception as e:  # pragma: no cover - best effort
            log.debug("%s: close failed: %s", self.name, e)


def _safe_get(cap: Any, prop: int) -> float:
    try:
        return float(cap.get(prop))
    except Exception:
        return 0.0


def _as_bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


# ------------------------------------------------------------------------------------------ opening
def parse_source(spec: str) -> Tuple[str, Any]:
    """Classify a --source value: ("camera", index), ("device", path), ("picamera", index),
    ("gstreamer", pipeline), ("stream", url) or ("file", path)."""
    s = str(spec).strip()
    if not s:
        raise SourceError("empty --source: give a camera index (0), a device (/dev/video0), a video file or a URL")
    if s.isdigit():
        return "camera", int(s)
    low = s.lower()
    if low in ("picam", "picamera", "picamera2") or low.startswith(("picam:", "picamera:", "picamera2:")):
        num = s.split(":", 1)[1] if ":" in s else "0"
        if not num.isdigit():
            raise SourceError(f"bad Pi camera source {spec!r}: use picam or picam:N")
        return "picamera", int(num)
    if "!" in s and " " in s:
        return "gstreamer", s
    if "://" in s:
        return "stream", s
    if s.startswith("/dev/video"):
        return "device", s
    return "file", s


def _default_backend() -> Tuple[Optional[int], str]:
    if sys.platform.startswith("linux"):
        return cv2.CAP_V4L2, "CAP_V4L2"
    if sys.platform == "darwin":
        return cv2.CAP_AVFOUNDATION, "CAP_AVFOUNDATION"
    if sys.platform.startswith("win"):
        return cv2.CAP_DSHOW, "CAP_DSHOW"
    return None, ""


def _video_devices() -> List[str]:
    return sorted(glob.glob("/dev/video*"))


def open_source(spec: str, width: Optional[int] = None, height: Optional[int] = None,
                opener: Optional[Callable[..., Any]] = None,
                picamera_factory: Optional[Callable[..., FrameSource]] = None,
                try_picamera: bool = True) -> FrameSource:
    """Open a --source value. Raises SourceError listing every attempt when nothing works.

    `opener` replaces `cv2.VideoCapture` and `picamera_factory` replaces `PiCamera2Source`
    (tests inject fakes).
    """
    opener = opener or cv2.VideoCapture
    kind, target = parse_source(spec)

    if kind == "file":
        if not os.path.exists(target):
            hint = " (a camera is a number such as 0, or /dev/videoN)" if target.startswith("/dev/") else ""
            raise SourceError(f"video file {target!r} not found{hint}")
        cap = opener(target)
        if not cap.isOpened():
            raise SourceError(f"cannot decode video file {target!r}: OpenCV's video backends could not open it "
                              f"(tried cv2.VideoCapture({target!r}))")
        return CvSource(cap, name=target, is_live=False)

    if kind == "stream":
        cap = opener(target)
        if not cap.isOpened():
            raise SourceError(f"cannot open stream {target!r}; tried cv2.VideoCapture({target!r}) "
                              f"(check the URL, credentials and that OpenCV was built with FFmpeg)")
        return CvSource(cap, name=target, is_live=True)

    if kind == "gstreamer":  # e.g. a Jetson CSI camera: "nvarguscamerasrc ! ... ! appsink"
        cap = opener(target, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            raise SourceError(f"cannot open GStreamer pipeline {target!r}; tried cv2.VideoCapture(pipeline, "
                              f"CAP_GSTREAMER) (needs an OpenCV built with GStreamer, e.g. JetPack's python3-opencv; "
                              f"the pip wheels have none)")
        return CvSource(cap, name="gstreamer pipeline", is_live=True)

    tried: List[str] = []
    attempts: List[Tuple[str, Callable[[], Any]]] = []
    api, api_name = _default_backend()
    if kind == "device":
        path = target
        num = path[len("/dev/video"):]
        index = int(num) if num.isdigit() else None
        if os.path.exists(path):
            attempts.append((f"cv2.VideoCapture({path!r}{', ' + api_name if api_name else ''})",
                             (lambda: opener(path, api)) if api is not None else (lambda: opener(path))))
        else:
            tried.append(f"{path}: device does not exist")
    else:
        index = target
    if kind in ("camera", "device") and index is not None:
        if api is not None:
            attempts.append((f"cv2.VideoCapture({index}, {api_name})", lambda: opener(index, api)))
        attempts.append((f"cv2.VideoCapture({index}) (any backend)", lambda: opener(index)))

    for label, make in attempts:
        cap = None
        try:
            cap = make()
            if not cap.isOpened():
                tried.append(f"{label}: not opened")
                continue
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: we want the newest frame
            ok, img = cap.read()
            if not ok or img is None:
                tried.append(f"{label}: opened but the first read failed")
                cap.release()
                continue
            log.info("opened %s (%dx%d)", label, img.shape[1], img.shape[0])
            return CvSource(cap, name=label, is_live=True, first=_as_bgr(img))
        except Exception as e:  # cv2.error and friends: record and go on
            tried.append(f"{label}: {type(e).__name__}: {e}")
            if cap is not None:
                try:
                    cap.release()
                except Exception:
                    pass

    cam_num = index if index is not None else 0
    if kind == "picamera" or (try_picamera and kind in ("camera", "device")):
        factory = picamera_factory or PiCamera2Source
        try:
            src = factory(cam_num, width, height)
            log.info("opened picamera2 camera %d", cam_num)
            return src
        except ImportError:
            tried.append("picamera2: not installed (Raspberry Pi camera modules: sudo apt install python3-picamera2)")
        except Exception as e:
            tried.append(f"picamera2 camera {cam_num}: {type(e).__name__}: {e}")

    devices = _video_devices()
    what = f"Pi camera {cam_num}" if kind == "picamera" else f"camera {spec!r}"
    lines = "\n".join(f"  - {t}" for t in tried)
    raise SourceError(
        f"could not open {what}. Tried:\n{lines}\n"
        f"Video devices present: {', '.join(devices) if devices else 'none'}. "
        f"Check the cable and permissions (the user must be in the 'video' group), "
        f"or pass --source FILE / rtsp://... instead.")


# ------------------------------------------------------------------------------------------ readers
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
