"""Frame sources of the video pipeline: what can be opened as a stream of frames.

Owns the `FrameSource` protocol and its implementations (a `cv2.VideoCapture` for files,
cameras, V4L2 devices, network streams and GStreamer pipelines; picamera2 for Raspberry Pi
camera modules; a folder of numbered images), the classification of a ``--source`` value
(`parse_source`) and the opening of one (`open_source`, whose error lists every attempt).

How the frames are then read (in order, or newest-only on a background thread) lives in
`readers`. Frames are BGR uint8 (OpenCV's order); `readers.read_frames` gives RGB.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Protocol, Tuple

import cv2
import numpy as np

from sam2_edge.errors import InputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class SourceError(InputError):
    """A frame source cannot be opened or decoded; the message lists what was tried."""


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


class ImageFolderSource:
    """A folder of images (.jpg/.jpeg/.png/.bmp) read in the order of their numeric stems
    (``0.jpg, 1.jpg, ..., 10.jpg``; non-numeric names last, by name). EXIF orientation is
    ignored, as PIL does, so frames match what the PyTorch reference sees."""

    is_live = False
    fps: Optional[float] = None

    def __init__(self, folder: str) -> None:
        self.name = str(folder)
        if not os.path.isdir(folder):
            raise SourceError(f"folder of frames {folder!r} not found")
        files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise SourceError(f"no images (.jpg/.png) in folder {folder!r}")
        files.sort(key=lambda p: (int(p.stem) if p.stem.isdigit() else float("inf"), p.name))
        self.files: List[Path] = files
        self.frame_count: Optional[int] = len(files)
        self._next = 0

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        if self._next >= len(self.files):
            return False, None
        p = self.files[self._next]
        self._next += 1
        img = cv2.imread(str(p), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # as PIL: no EXIF rotation
        if img is None:
            raise SourceError(f"cannot decode image {p}")
        return True, img

    def release(self) -> None:
        self._next = len(self.files)


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
    ("gstreamer", pipeline), ("stream", url), ("folder", path) or ("file", path)."""
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
    if os.path.isdir(s):
        return "folder", s
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
    """Open a --source value (see `parse_source`). Raises SourceError listing every attempt
    when nothing works.

    `opener` replaces `cv2.VideoCapture` and `picamera_factory` replaces `PiCamera2Source`
    (tests inject fakes).
    """
    opener = opener or cv2.VideoCapture
    kind, target = parse_source(spec)

    if kind == "folder":
        src = ImageFolderSource(target)
        log.info("opened folder %s (%d images)", target, src.frame_count)
        return src

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
