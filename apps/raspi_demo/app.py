"""The demo application: command line, OpenCV window, tracker loop, HUD.

    python -m apps.raspi_demo --bundle DIR --source 0
    python -m apps.raspi_demo --checkpoint CKPT --source video.mp4 --headless --prompts p.json --out out.mp4
    sam2-edge demo ...                      (same arguments)

The interaction rules live in `events.DemoController`, the offline run loop in `headless`;
sources, capture threads, prompts files, mask drawing and writers are the video pipeline's
(`sam2_edge.runtimes.video`, shared with `sam2-edge track`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Protocol, Tuple

import cv2
import numpy as np

from sam2_edge.cli import describe_os_error, one_line
from sam2_edge.demo_cli import add_arguments
from sam2_edge.errors import InputError, Sam2EdgeError, StateError
from sam2_edge.outputs import StagedDir, check_dir, check_writable_dir
from sam2_edge.runtimes.video import (OutputError, VideoSink, check_video_path, draw_masks, is_masks_folder,
                                      load_prompts, object_color, open_reader, open_source, result_masks, safe_fps)
from sam2_edge.sysinfo import rss_bytes

from .events import (DeleteAction, DemoController, PauseAction, PromptAction, QuitAction, ResetAction,
                     SelectAction, SnapshotAction)
from .headless import memory_text, run_headless

log = logging.getLogger(__name__)

WINDOW_TITLE = "sam2-edge demo"
HELP_LINE = "L-click +pt  R-click -pt  drag box  1-9 select  n new  d delete  r reset  space pause  s snap  q quit"


class DisplayError(Sam2EdgeError):
    """No window can be opened (OpenCV without GUI support, or no display)."""


# ------------------------------------------------------------------------------------------ display
class Display(Protocol):
    def show(self, img: np.ndarray) -> None: ...

    def poll(self, delay_ms: int) -> Tuple[int, List[Tuple[int, int, int, int]]]: ...

    def close(self) -> None: ...


_NO_GUI_HINT = ("OpenCV was installed without GUI support (the opencv-python-headless wheel has no windows). "
                "For the interactive demo: pip uninstall -y opencv-python-headless && pip install opencv-python "
                "(or on a Raspberry Pi / Jetson: sudo apt install python3-opencv); "
                "or run without a window: --headless --prompts prompts.json --out out.mp4")


class CvDisplay:
    """An OpenCV highgui window. Mouse events are queued and handed out by `poll()`."""

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DisplayError("no display: DISPLAY / WAYLAND_DISPLAY are not set (over ssh use `ssh -X`, or "
                               "run on the board's desktop); or run without a window: "
                               "--headless --prompts prompts.json --out out.mp4")
        self.title = title
        self._events: List[Tuple[int, int, int, int]] = []
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
            cv2.setMouseCallback(title, self._on_mouse)
        except cv2.error as e:
            raise DisplayError(f"{_NO_GUI_HINT}. (OpenCV said: {str(e).strip().splitlines()[-1][:160]})") from None
        except AttributeError:
            raise DisplayError(_NO_GUI_HINT) from None
        self._open = True

    def _on_mouse(self, event: int, x: int, y: int, flags: int, param: Any = None) -> None:
        self._events.append((int(event), int(x), int(y), int(flags)))

    def show(self, img: np.ndarray) -> None:
        cv2.imshow(self.title, img)

    def poll(self, delay_ms: int) -> Tuple[int, List[Tuple[int, int, int, int]]]:
        key = cv2.waitKey(max(1, int(delay_ms)))
        events, self._events = self._events, []
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:  # closed with the window button
                key = ord("q")
        except cv2.error:
            key = ord("q")
        return key, events

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


# ------------------------------------------------------------------------------------------ HUD
class FpsMeter:
    """Frames per second, exponentially smoothed."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.fps = 0.0
        self._last: Optional[float] = None

    def tick(self, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        if self._last is not None and now > self._last:
            inst = 1.0 / (now - self._last)
            self.fps = inst if self.fps == 0 else self.smoothing * self.fps + (1 - self.smoothing) * inst
        self._last = now
        return self.fps


def format_timings(timings: Any) -> str:
    if timings is None:
        return "latency: -"
    parts = [("enc", "image_encoder"), ("attn", "memory_attention"), ("dec", "mask_decoder"),
             ("menc", "memory_encoder"), ("total", "total")]
    return "  ".join(f"{short} {float(getattr(timings, name, 0.0)):.1f}" for short, name in parts) + " ms"


def draw_hud(img: np.ndarray, lines: List[str], help_line: Optional[str] = HELP_LINE) -> np.ndarray:
    h, w = img.shape[:2]
    scale = 0.38 if w < 480 else 0.5
    lh = int(22 * scale / 0.5)
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in lines) + 10
    overlay = img.copy()
    cv2.rectangle(overlay, (0, 0), (min(width, w), lh * len(lines) + 6), (0, 0, 0), -1)
    img = cv2.addWeighted(overlay, 0.55, img, 0.45, 0)
    for k, t in enumerate(lines):
        cv2.putText(img, t, (5, lh * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    if help_line:
        hs = scale * 0.8
        cv2.putText(img, help_line, (5, h - 6), cv2.FONT_HERSHEY_SIMPLEX, hs, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, help_line, (5, h - 6), cv2.FONT_HERSHEY_SIMPLEX, hs, (255, 255, 255), 1, cv2.LINE_AA)
    return img


# ------------------------------------------------------------------------------------------ interactive
class InteractiveApp:
    """The live loop: read the newest frame, track, draw, show, apply the user's actions.

    `display` is a `CvDisplay` or any object with show/poll/close (tests pass a scripted one).
    `sink` (optional) records every processed frame as shown, HUD included.
    """

    def __init__(self, tracker: Any, reader: Any, display: Display, controller: Optional[DemoController] = None,
                 sink: Optional[VideoSink] = None, snapshot_dir: str = ".", display_scale: float = 1.0,
                 source_fps: Optional[float] = None, live: bool = True, show_help: bool = True,
                 max_frames: Optional[int] = None) -> None:
        self.tracker, self.reader, self.display, self.sink = tracker, reader, display, sink
        self.controller = controller or DemoController(display_scale=display_scale)
        self.display_scale = float(display_scale)
        self.snapshot_dir = snapshot_dir
        self.source_fps = source_fps
        self.live = live
        self.show_help = show_help
        self.max_frames = max_frames
        self.fps = FpsMeter()
        self.frame: Optional[Any] = None          # the current video.Frame
        self.rgb: Optional[np.ndarray] = None
        self.masks: Dict[int, np.ndarray] = {}
        self.timings: Any = None
        self.frames_processed = 0
        self.snapshots: List[str] = []
        self.end_reason = ""
        self._frame_in_tracker = False            # the current frame was given to the tracker
        self._last_frame_time: Optional[float] = None
        self._message = ""
        self._message_until = 0.0

    # ---------------------------------------------------------------- main loop
    def run(self) -> int:
        code = 0
        try:
            self.reader.start()
            while True:
                new_frame = False
                if self.max_frames is not None and self.frames_processed >= self.max_frames \
                        and not self.controller.paused:
                    self.end_reason = "max frames reached"
                    break
                if self.frame is None or not self.controller.paused:
                    f = self.reader.get(timeout=0.05) if self.live else self.reader.get()
                    if f is None:
                        if getattr(self.reader, "finished", True):
                            self.end_reason = getattr(self.reader, "end_reason", None) or "end of source"
                            log.info("source ended: %s", self.end_reason)
                            break
                    else:
                        self._process(f)
                        new_frame = True
                if self.frame is not None:
                    img = self._render()
                    if new_frame and self.sink is not None:
                        self.sink.write(img)
                    self.display.show(img)
                key, events = self.display.poll(self._delay_ms())
                quit_ = False
                for ev in events:
                    quit_ |= self._apply(self.controller.on_mouse(*ev))
                quit_ |= self._apply(self.controller.on_key(key))
                if quit_:
                    self.end_reason = "quit"
                    break
        except KeyboardInterrupt:
            self.end_reason = "interrupted (Ctrl-C)"
            log.warning("interrupted")
            code = 130
        finally:
            self.reader.stop()
            if self.sink is not None:
                self.sink.close()
            self.display.close()
        log.info("demo: %d frames processed, %d dropped; %s", self.frames_processed,
                 int(getattr(self.reader, "dropped", 0)), self.end_reason)
        return code

    def _delay_ms(self) -> int:
        if self.controller.paused or self.live or not self.source_fps:
            return 30 if self.controller.paused else 1
        # Files: do not play faster than real time.
        elapsed = time.monotonic() - (self._last_frame_time or 0.0)
        return max(1, int((1.0 / self.source_fps - elapsed) * 1000))

    def _process(self, f: Any) -> None:
        self.frame = f
        self.rgb = cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB)
        h, w = f.image.shape[:2]
        self.controller.set_frame_size(w, h)
        self.controller.on_new_frame()
        self.masks, self.timings = {}, None
        self._frame_in_tracker = False
        if self.tracker.object_ids:
            try:
                r = self.tracker.track(self.rgb)
                self.masks, self.timings = result_masks(r), r.timings
                self._frame_in_tracker = True
            except StateError as e:
                log.debug("track skipped: %s", e)
            except InputError as e:  # e.g. the camera changed resolution mid-stream
                log.warning("tracking failed on frame %d (%s): resetting the tracker", f.index, e)
                self._reset()
                self._say("tracker reset: " + str(e)[:60])
        self.frames_processed += 1
        self._last_frame_time = time.monotonic()
        self.fps.tick(self._last_frame_time)

    # ---------------------------------------------------------------- actions
    def _apply(self, action: Any) -> bool:
        """Apply one controller action to the tracker; True means quit."""
        if action is None:
            return False
        if isinstance(action, QuitAction):
            return True
        if isinstance(action, PromptAction):
            if self.frame is None:
                return False
            try:
                r = self.tracker.add_prompt(None if self._frame_in_tracker else self.rgb, action.obj_id,
                                            points=action.points, labels=action.labels, box=action.box)
            except (InputError, StateError) as e:
                log.warning("prompt for object %d refused: %s", action.obj_id, e)
                self._say(f"prompt refused: {e}"[:80])
                self.controller.undo_last()
                self.controller.sync_objects(list(self.tracker.object_ids))
                return False
            self._frame_in_tracker = True
            self.masks.update(result_masks(r))
            self.timings = r.timings
            self.controller.sync_objects(list(self.tracker.object_ids))
            if action.new_object:
                self._say(f"object {action.obj_id} added")
        elif isinstance(action, SelectAction):
            self._say("no object selected: left click adds a new one" if action.obj_id is None else
                      f"object {action.obj_id} selected" + (" (new: click on it)" if action.new_object else ""))
        elif isinstance(action, DeleteAction):
            try:
                self.tracker.remove_object(action.obj_id)
            except Sam2EdgeError as e:
                log.warning("cannot remove object %d: %s", action.obj_id, e)
            self.masks.pop(action.obj_id, None)
            self.controller.sync_objects(list(self.tracker.object_ids))
            self._say(f"object {action.obj_id} deleted")
        elif isinstance(action, ResetAction):
            self._reset()
            self._say("reset")
        elif isinstance(action, PauseAction):
            self._say("paused" if action.paused else "resumed")
        elif isinstance(action, SnapshotAction):
            self.snapshot()
        return False

    def _reset(self) -> None:
        self.tracker.reset()
        self.controller.sync_objects([])
        self.masks, self.timings = {}, None
        self._frame_in_tracker = False

    def snapshot(self) -> Optional[str]:
        if self.frame is None:
            return None
        os.makedirs(self.snapshot_dir, exist_ok=True)
        stem = os.path.join(self.snapshot_dir, f"snapshot_{time.strftime('%Y%m%d_%H%M%S')}_{self.frame.index:06d}")
        path = stem + ".png"
        if not cv2.imwrite(path, self._render(hud=False)):
            raise OutputError(f"cannot write snapshot {path!r}")
        for obj_id, m in self.masks.items():
            cv2.imwrite(f"{stem}_obj{obj_id}.png", m.astype(np.uint8) * 255)
        self.snapshots.append(path)
        log.info("snapshot: %s", path)
        self._say(f"saved {os.path.basename(path)}")
        return path

    def _say(self, text: str, seconds: float = 2.0) -> None:
        self._message, self._message_until = text, time.monotonic() + seconds

    # ---------------------------------------------------------------- drawing
    def hud_lines(self) -> List[str]:
        c = self.controller
        objs = " ".join(f"[{o}]" if o == c.selected else str(o) for o in c.objects) or "none"
        sel = "-" if c.selected is None else str(c.selected)
        rss = rss_bytes()
        lines = [
            f"FPS {self.fps.fps:4.1f}  frame {self.frame.index if self.frame else 0}  "
            f"dropped {int(getattr(self.reader, 'dropped', 0))}" + ("  PAUSED" if c.paused else ""),
            format_timings(self.timings),
            f"memory: tracker {memory_text(self.tracker)}" + (f"  process {rss / 2**20:.0f} MiB" if rss else ""),
            f"objects: {objs}  selected: {sel}",
        ]
        if self._message and time.monotonic() < self._message_until:
            lines.append(self._message)
        return lines

    def _render(self, hud: bool = True) -> np.ndarray:
        img = draw_masks(self.frame.image, self.masks)
        c = self.controller
        r = 3 if max(img.shape[:2]) < 400 else 5
        for obj_id in c.objects + ([c.selected] if c.selected is not None and c.selected not in c.objects else []):
            pts, labels, box = c.pending_clicks(obj_id)
            color = object_color(obj_id)
            for (x, y), lab in zip(pts, labels):
                cv2.circle(img, (int(round(x)), int(round(y))), r, (0, 255, 0) if lab else (0, 0, 255), -1, cv2.LINE_AA)
                cv2.circle(img, (int(round(x)), int(round(y))), r, color, 1, cv2.LINE_AA)
            if box:
                cv2.rectangle(img, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), color, 1)
        if c.drag_box:
            b = c.drag_box
            cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (255, 255, 255), 1)
        if self.display_scale != 1.0:
            img = cv2.resize(img, None, fx=self.display_scale, fy=self.display_scale, interpolation=cv2.INTER_LINEAR)
        if hud:
            img = draw_hud(img, self.hud_lines(), HELP_LINE if self.show_help else None)
        return img


# ------------------------------------------------------------------------------------------ CLI
def load_tracker(args: argparse.Namespace) -> Any:
    """The tracker named by --bundle or --checkpoint."""
    try:
        from sam2_edge.runtimes import Tracker
    except ImportError as e:
        if isinstance(e, Sam2EdgeError):
            raise
        raise Sam2EdgeError(f"the streaming tracker (sam2_edge.runtimes.Tracker) is not available in this "
                            f"installation: {e}") from e
    if args.bundle:
        log.info("loading bundle %s", args.bundle)
        return Tracker.from_bundle(args.bundle, backend=args.backend,
                                   trusted_keys=getattr(args, "trusted_key", None))
    log.info("loading checkpoint %s", args.checkpoint)
    return Tracker.from_checkpoint(args.checkpoint, variant=args.variant, backend=args.backend or "torch",
                                   device=args.device)


MASKS_KIND = "a folder of mask PNGs an earlier demo run wrote (NNNNN_objK.png files only)"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_args(a: argparse.Namespace) -> None:
    """Every argument and output path, before the source opens and the model loads (the
    command line's type functions check the numbers too; this also covers callers that
    build the Namespace themselves)."""
    if a.headless:
        missing = [n for n, v in (("--prompts JSON", a.prompts), ("--out VIDEO", a.out)) if not v]
        if missing:
            raise InputError(f"--headless needs {' and '.join(missing)}")
    else:
        for flag, v in (("--prompts", a.prompts), ("--masks-out", a.masks_out)):
            if v:
                raise InputError(f"{flag} is for --headless runs (in the window, click the objects instead)")
    if not _finite(a.display_scale) or a.display_scale <= 0:
        raise InputError(f"--display-scale must be > 0, got {a.display_scale}")
    if a.retries < 0:
        raise InputError(f"--retries must be >= 0, got {a.retries}")
    if a.max_frames is not None and a.max_frames <= 0:
        raise InputError(f"--max-frames must be > 0, got {a.max_frames}")
    if a.fps is not None and not (_finite(a.fps) and 0 < a.fps <= 1000):
        raise InputError(f"--fps must be a number > 0 and <= 1000, got {a.fps}")
    for flag, v in (("--log-every", a.log_every), ("--retry-delay", a.retry_delay)):
        if not _finite(v) or v < 0:
            raise InputError(f"{flag} must be a finite number >= 0, got {v}")
    if a.out:
        check_video_path(a.out, "--out")
    if a.masks_out:
        check_dir(a.masks_out, "--masks-out", is_masks_folder, MASKS_KIND)
        if a.out and os.path.abspath(a.out).startswith(os.path.join(os.path.abspath(a.masks_out), "")):
            raise InputError(f"--out {a.out!r} lies inside --masks-out {a.masks_out!r}; put the video elsewhere")
    if not a.headless:
        check_writable_dir(a.snapshot_dir, "--snapshot-dir")


def _headless(a: argparse.Namespace, tracker: Any, reader: Any, prompts: Any, fps: float) -> int:
    """run_headless; with --masks-out the PNGs go to a temporary sibling folder that replaces
    --masks-out at the end (also after an error or Ctrl-C, like the video: what was written is kept)."""
    if not a.masks_out:
        return run_headless(tracker, reader, prompts, a.out, fps=fps, log_every=a.log_every,
                            max_frames=a.max_frames, origin=a.prompts).exit_code
    with StagedDir(a.masks_out, "--masks-out", is_masks_folder, MASKS_KIND) as stage:
        try:
            res = run_headless(tracker, reader, prompts, a.out, masks_out=str(stage.path), fps=fps,
                               log_every=a.log_every, max_frames=a.max_frames, origin=a.prompts)
        except BaseException:
            with contextlib.suppress(Sam2EdgeError, OSError):
                stage.commit()
            raise
        stage.commit()
    return res.exit_code


def run(a: argparse.Namespace) -> int:
    _check_args(a)
    prompts = load_prompts(a.prompts) if a.headless else None
    display = None if a.headless else CvDisplay()   # fail early, before loading the model
    try:
        source = open_source(a.source, width=a.width, height=a.height)
    except Sam2EdgeError:
        if display is not None:
            display.close()
        raise
    drop = {"auto": None, "yes": True, "no": False}[a.drop_frames]
    reader = open_reader(source, drop_frames=drop, max_retries=a.retries, retry_delay=a.retry_delay)
    sink = None
    try:
        fps = safe_fps(a.fps or source.fps)
        sink = VideoSink(a.out, fps) if (a.out and not a.headless) else None  # checks the path before loading
        tracker = load_tracker(a)
        if a.headless:
            return _headless(a, tracker, reader, prompts, fps)
        app = InteractiveApp(tracker, reader, display, sink=sink, snapshot_dir=a.snapshot_dir,
                             display_scale=a.display_scale, source_fps=source.fps, live=source.is_live,
                             show_help=not a.no_help, max_frames=a.max_frames)
        return app.run()
    finally:
        # Idempotent: the run functions already stopped them unless loading the tracker failed.
        reader.stop()
        if sink is not None:
            sink.close()
        if display is not None:
            display.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.raspi_demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except Sam2EdgeError as e:
        log.error("%s", one_line(e))
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        log.debug("traceback", exc_info=True)
        log.error("%s", describe_os_error(e))
        return 1
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (unless -v)
        log.debug("traceback", exc_info=True)
        log.error("internal error: %s: %s%s", type(e).__name__, one_line(e),
                  "" if args.verbose else " (run with -v for the traceback)")
        return 1
