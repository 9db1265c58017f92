"""Outputs of the video pipeline: the annotated video (`VideoSink`) and one mask PNG per frame
and object (`write_masks`, named ``{frame:05d}_obj{id}.png``, 255 = object)."""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from sam2_edge.errors import OutputError  # defined once in sam2_edge.errors; re-exported here
from sam2_edge.outputs import check_file, only_entries

log = logging.getLogger(__name__)

# what `write_masks` names its files; a folder holding only these is a masks folder sam2-edge wrote
MASK_NAME = re.compile(r"\d{5,}_obj\d+\.png")
MAX_FPS = 1000.0


def result_masks(result: Any) -> Dict[int, np.ndarray]:
    """{obj_id: HxW bool} of a TrackResult."""
    masks = np.asarray(result.masks)
    return {int(o): masks[k].astype(bool) for k, o in enumerate(result.object_ids)}


_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
# tried first where OpenCV's VideoWriter can open it: H.264 plays everywhere (browsers, phones);
# the pip OpenCV wheels usually lack an H.264 encoder, and the fallback above is used
_PREFERRED = {".mp4": "avc1", ".m4v": "avc1", ".mov": "avc1"}
VIDEO_EXTENSIONS = tuple(sorted(_FOURCC))


VIDEO_OUT_HINT = "the demo's --out takes a video FILE (e.g. out.mp4); sam2-edge track's --out takes a FOLDER"


def check_video_path(path: str, flag: Optional[str] = None) -> str:
    """Check an output video path before any work (extension, folder, not a link / folder /
    /proc); OutputError naming the problem otherwise (for --out, saying it takes a video file)."""
    try:
        check_file(path, flag or "output video", suffixes=VIDEO_EXTENSIONS, what="video file")
    except OutputError as e:
        if flag == "--out":
            raise OutputError(f"{e} ({VIDEO_OUT_HINT})") from None
        raise
    return path


def _open_writer(path: str, fourccs: Tuple[str, ...], fps: float, size: Tuple[int, int]) -> Tuple[Any, str]:
    """The first codec of `fourccs` OpenCV can open at `size`; its failed attempts (FFmpeg's
    messages on stderr) are kept quiet. -> (writer or None, codec)."""
    from sam2_edge.quiet import quiet

    for k, cc in enumerate(fourccs):
        last = k == len(fourccs) - 1
        with (quiet(fd=True) if not last else _nothing()):
            w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*cc), fps, size)
        if w.isOpened():
            return w, cc
        w.release()
    return None, fourccs[-1]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def is_masks_folder(path: str) -> bool:
    """True for a folder holding only mask PNGs named as `write_masks` names them."""
    return only_entries(path, lambda name: MASK_NAME.fullmatch(name) is not None)


def safe_fps(fps: Any, default: float = 30.0) -> float:
    """A usable video frame rate: `fps` when finite and in (0, 1000], else `default` (sources
    report 0, NaN or absurd rates; an infinite rate makes the encoder hang)."""
    try:
        f = float(fps)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) and 0 < f <= MAX_FPS else default


class VideoSink:
    """cv2.VideoWriter opened on the first frame; `close()` finalises the file (idempotent).
    .mp4 / .m4v / .mov: H.264 (`avc1`) when OpenCV can encode it, else MPEG-4 Part 2 (`mp4v`);
    `codec` says which (logged when the writer opens)."""

    def __init__(self, path: str, fps: float = 30.0) -> None:
        self.path = path
        self.fps = safe_fps(fps)
        self.frames = 0
        self._writer: Optional[Any] = None
        self._size: Optional[Tuple[int, int]] = None
        ext = os.path.splitext(path)[1].lower()
        if ext not in _FOURCC:
            raise OutputError(f"output video {path!r}: unsupported extension {ext or '(none)'!r}; "
                              f"use one of {sorted(_FOURCC)}")
        self._fourcc = _FOURCC[ext]
        self._fourccs = tuple(dict.fromkeys((_PREFERRED.get(ext, self._fourcc), self._fourcc)))
        self.codec: Optional[str] = None
        check_video_path(path)            # not a folder, a link, /proc ...; its folder writable
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise OutputError(f"output video {path!r}: cannot create folder {parent!r}: {e.strerror or e}") from None

    def write(self, img: np.ndarray) -> None:
        h, w = img.shape[:2]
        if self._writer is None:
            self._writer, cc = _open_writer(self.path, self._fourccs, self.fps, (w, h))
            if self._writer is None:
                raise OutputError(f"cannot write video {self.path!r} with codec {' or '.join(self._fourccs)} "
                                  f"at {w}x{h}")
            self.codec = cc
            if cc != self._fourccs[0]:
                log.info("%s: H.264 (avc1) is not available in this OpenCV build; writing %s (MPEG-4 Part 2, "
                         "plays in VLC / ffmpeg, not in every browser)", os.path.basename(self.path), cc)
            else:
                log.info("%s: writing %s%s", os.path.basename(self.path), cc, " (H.264)" if cc == "avc1" else "")
            self._size = (w, h)
        elif (w, h) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(img))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            staged = ".partial" + os.sep in self.path  # inside a folder the command moves into place later
            log.log(logging.DEBUG if staged else logging.INFO, "wrote %s (%d frames, %s)", self.path, self.frames,
                    self.codec)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_masks(folder: str, frame_index: int, masks: Dict[int, np.ndarray]) -> int:
    """One PNG per object, ``{frame:05d}_obj{id}.png``, 255 = object. Returns the number written."""
    n = 0
    for obj_id, m in sorted(masks.items()):
        path = os.path.join(folder, f"{frame_index:05d}_obj{obj_id}.png")
        if not cv2.imwrite(path, np.asarray(m, dtype=bool).astype(np.uint8) * 255):
            raise OutputError(f"cannot write mask {path!r}")
        n += 1
    return n


class BackgroundWriter:
    """Runs output jobs (overlay drawing, video frames, mask files) in order on one thread, so
    the tracker never waits on drawing or the disk. Bounded: when the outputs fall `depth` jobs
    behind, `submit` waits (memory stays bounded, nothing is dropped). An error in a job stops
    the writer and is raised by the next `submit` or by `close`."""

    def __init__(self, depth: int = 4) -> None:
        import queue
        import threading

        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, int(depth)))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job[0](*job[1])
                except BaseException as e:  # noqa: BLE001 - raised on the caller's thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def submit(self, fn, *args) -> None:
        self._raise()
        self._q.put((fn, args))

    def close(self) -> None:
        """Finish every submitted job, stop the thread, raise a job's error."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._raise()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: finish the outputs queued so far, keep the original error
            try:
                self.close()
            except BaseException:  # noqa: BLE001
                log.exception("writing outputs failed while handling another error")
