"""`sam2-edge demo`: the live tracking demo of apps/raspi_demo. Same arguments as
`python -m apps.raspi_demo` (both use `add_arguments` below).

The demo application lives in the repository (apps/raspi_demo), not in the wheel: from a
checkout it is found next to the sam2_edge package; elsewhere the subcommand says how to
get it. Nothing here imports OpenCV or torch until the command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .cli import float_arg, int_arg, subcommand
from .errors import Sam2EdgeError

_APP = "apps.raspi_demo.app"
_APP_MODULES = ("apps", "apps.raspi_demo", _APP)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("SAM 2 live video object tracking demo: an OpenCV window where you click objects to track "
                     "them, or --headless with a prompts file.")
    m = p.add_argument_group("model (one of)")
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--bundle", metavar="DIR", help="exported bundle (sam2-edge export ... --out DIR)")
    g.add_argument("--checkpoint", metavar="CKPT", help="official .pt checkpoint (needs the torch extra)")
    m.add_argument("--backend", default=None, help="runtime backend (bundle: default auto; checkpoint: torch)")
    m.add_argument("--trusted-key", action="append", metavar="KEY.pub",
                   help="accept --bundle only if signed by this public key (repeatable; see sam2-edge keygen)")
    m.add_argument("--variant", default=None, help="checkpoint variant (default: detected)")
    m.add_argument("--device", default="cpu", help="torch device for --checkpoint (default cpu)")
    s = p.add_argument_group("source")
    s.add_argument("--source", default="0",
                   help="camera index (0), /dev/videoN, picam[:N] (picamera2), video file, rtsp://... URL or a "
                        "GStreamer pipeline ending in appsink (default 0)")
    s.add_argument("--width", type=int_arg(1, 16384), default=None, help="requested camera width")
    s.add_argument("--height", type=int_arg(1, 16384), default=None, help="requested camera height")
    s.add_argument("--drop-frames", choices=("auto", "yes", "no"), default="auto",
                   help="keep only the newest frame while the tracker works (auto: for live sources)")
    s.add_argument("--retries", type=int_arg(0, 1_000_000), default=5,
                   help="read retries of a live source before giving up (5)")
    s.add_argument("--retry-delay", type=float_arg(0, 60), default=0.2, help="seconds between read retries (0.2)")
    s.add_argument("--max-frames", type=int_arg(1), default=None, help="stop after this many frames (>= 1)")
    o = p.add_argument_group("headless / output")
    o.add_argument("--headless", action="store_true", help="no window: prompts from --prompts, video to --out")
    o.add_argument("--prompts", metavar="JSON", help="prompts file (headless)")
    o.add_argument("--out", metavar="VIDEO", help="annotated output video (.mp4/.avi); interactive: a recording")
    o.add_argument("--masks-out", metavar="DIR", help="headless: one PNG per frame and object")
    o.add_argument("--fps", type=float_arg(above=0, maximum=1000), default=None,
                   help="output video FPS, > 0 and <= 1000 (default: the source's, else 30)")
    o.add_argument("--log-every", type=float_arg(0, 86400), default=5.0,
                   help="seconds between FPS log lines (headless; 0: none)")
    w = p.add_argument_group("window")
    w.add_argument("--snapshot-dir", default=".", help="where `s` saves snapshots (default .)")
    w.add_argument("--display-scale", type=float_arg(above=0, maximum=16), default=1.0,
                   help="window size / frame size (default 1)")
    w.add_argument("--no-help", action="store_true", help="hide the key help line")


def _import_app():
    try:
        return importlib.import_module(_APP)
    except ModuleNotFoundError as e:
        if e.name not in _APP_MODULES:
            raise
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "apps", "raspi_demo", "app.py")) and root not in sys.path:
        sys.path.append(root)
        try:
            return importlib.import_module(_APP)
        except ModuleNotFoundError as e:
            if e.name not in _APP_MODULES:
                raise
    raise Sam2EdgeError("the demo app (apps/raspi_demo) is not installed with the wheel: clone the sam2-edge "
                        "repository and run `python -m apps.raspi_demo ...` (or `sam2-edge demo ...`) from it")


@subcommand("demo")
def _demo(p: argparse.ArgumentParser):
    add_arguments(p)

    def run(a: argparse.Namespace) -> int:
        return int(_import_app().run(a))
    return run
