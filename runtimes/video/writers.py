"""Outputs of the video pipeline: the annotated video (`VideoSink`) and one mask PNG per frame
and object (`write_masks`, named ``{frame:05d}_obj{id}.png``, 255 = object)."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from sam2_edge.errors import Sam2EdgeError

log = logging.getLogger(__name__)


class OutputError(Sam2EdgeError):
    """An output file (video, mask, snapshot) cannot be written."""


def result_masks(result: Any) -> Dict[int, np.ndarray]:
    """{obj_id: HxW bool} of a TrackResult."""
    masks = np.asarray(result.masks)
    return {int(o): masks[k].astype(bool) for k, o in enumerate(result.object_ids)}


_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class VideoSink:
    """cv2.VideoWriter opened on the first frame; `close()` finalises the file (idempotent)."""

    def __init__(self, path: str, fps: float = 30.0) -> None:
        self.path = path
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.frames = 0
        self._writer: Optional[Any] = None
        self._size: Optional[Tuple[int, int]] = None
        ext = os.path.splitext(path)[1].lower()
        if ext not in _FOURCC:
            raise OutputError(f"output video {path!r}: unsupported extension {ext or '(none)'!r}; "
                              f"use one of {sorted(_FOURCC)}")
        self._fourcc = _FOURCC[ext]
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise OutputError(f"output video {path!r}: folder {parent!r} does not exist")

    def write(self, img: np.ndarray) -> None:
        h, w = img.shape[:2]
        if self._writer is None:
            self._writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self._fourcc), self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise OutputError(f"cannot write video {self.path!r} with codec {self._fourcc!r} at {w}x{h}")
            self._size = (w, h)
        elif (w, h) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(img))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            log.info("wrote %s (%d frames)", self.path, self.frames)

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
