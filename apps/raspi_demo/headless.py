"""Headless mode: track a source with prompts from a JSON file, write an annotated video and,
optionally, one PNG per frame and object.

The prompts schema, its validator, the drawing and the writers are the video pipeline's
(`sam2_edge.runtimes.video`, shared with `sam2-edge track`); this module is the demo's run
loop over them. See `sam2_edge.runtimes.video.prompts_file` for the prompts file format.

For each frame i: the first prompt of frame i is given with ``add_prompt(frame_i, ...)`` (it
brings the frame), the others with ``add_prompt(None, ...)`` (same frame); a frame without
prompts goes through ``track(frame_i)``; frames before the first prompt are written unmodified.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from sam2_edge.runtimes.video import (OutputError, PromptError, PromptSpec, VideoSink, apply_prompts, draw_masks,
                                      load_prompts, object_color, parse_prompts, result_masks, write_masks)

log = logging.getLogger(__name__)

# Re-exported for the app and older imports; defined in sam2_edge.runtimes.video.
__all__ = ["HeadlessResult", "run_headless", "memory_text", "OutputError", "PromptError", "PromptSpec", "VideoSink",
           "draw_masks", "load_prompts", "object_color", "parse_prompts", "result_masks", "write_masks"]


def memory_text(tracker: Any) -> str:
    mb = getattr(tracker, "memory_bytes", None)
    return f"{mb / 2**20:.1f} MiB" if isinstance(mb, (int, float)) else "n/a"


# ------------------------------------------------------------------------------------------ run
@dataclass
class HeadlessResult:
    frames_read: int = 0
    frames_written: int = 0
    masks_written: int = 0
    dropped: int = 0
    interrupted: bool = False
    end_reason: str = ""
    unused_prompts: List[PromptSpec] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 0


def run_headless(tracker: Any, reader: Any, prompts: Sequence[PromptSpec], out_path: str,
                 masks_out: Optional[str] = None, fps: Optional[float] = None, log_every: float = 5.0,
                 max_frames: Optional[int] = None, origin: str = "prompts") -> HeadlessResult:
    """Track every frame `reader` gives and write the annotated video (one frame per frame read).

    Takes ownership of `reader`: it is stopped (and its source released) on return. The video
    is finalised whatever happens: end of source, read failures, errors, Ctrl-C.
    """
    by_frame: Dict[int, List[PromptSpec]] = {}
    for p in prompts:
        by_frame.setdefault(p.frame, []).append(p)
    if masks_out:
        os.makedirs(masks_out, exist_ok=True)

    res = HeadlessResult()
    sink = VideoSink(out_path, fps or 30.0)
    started = False           # a prompt was given: from then on every frame is tracked
    t0 = t_last = time.monotonic()
    n_last = 0
    last_result = None
    try:
        reader.start()
        while max_frames is None or res.frames_read < max_frames:
            f = reader.get()
            if f is None:
                if getattr(reader, "finished", True):
                    break
                continue
            i = res.frames_read
            res.frames_read += 1
            bgr = f.image
            todo = by_frame.pop(i, [])
            masks: Dict[int, np.ndarray] = {}
            if todo or started:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if todo:
                    last_result, masks = apply_prompts(tracker, rgb, todo, origin)  # later prompts win
                    started = True
                else:
                    last_result = tracker.track(rgb)
                    masks = result_masks(last_result)
                sink.write(draw_masks(bgr, masks))
                if masks_out:
                    res.masks_written += write_masks(masks_out, i, masks)
            else:
                sink.write(bgr)
            res.frames_written = sink.frames

            now = time.monotonic()
            if log_every and now - t_last >= log_every:
                timing = ""
                if last_result is not None and getattr(last_result, "timings", None) is not None:
                    timing = f", tracker {last_result.timings.total:.1f} ms/frame"
                log.info("frame %d: %.1f FPS%s, memory %s, dropped %d", i, (res.frames_read - n_last) / (now - t_last),
                         timing, memory_text(tracker), getattr(reader, "dropped", 0))
                t_last, n_last = now, res.frames_read
    except KeyboardInterrupt:
        res.interrupted = True
        res.end_reason = "interrupted (Ctrl-C)"
        log.warning("interrupted: finalising %s after %d frames", out_path, sink.frames)
    finally:
        reader.stop()
        sink.close()
        res.frames_written = sink.frames
        res.dropped = int(getattr(reader, "dropped", 0))
        if not res.end_reason:
            res.end_reason = getattr(reader, "end_reason", None) or (
                "max frames reached" if max_frames is not None and res.frames_read >= max_frames else "done")

    res.unused_prompts = [p for ps in by_frame.values() for p in ps]
    for p in res.unused_prompts:
        log.warning("%s: %s was never applied: the source gave only %d frames", origin, p.describe(), res.frames_read)
    dt = max(time.monotonic() - t0, 1e-9)
    log.info("headless: %d frames in %.1f s (%.1f FPS), %d mask files, %d dropped; %s",
             res.frames_read, dt, res.frames_read / dt, res.masks_written, res.dropped, res.end_reason)
    return res
