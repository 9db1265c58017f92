"""`sam2-edge demo`: the live tracking demo of apps/raspi_demo (same arguments as
`python -m apps.raspi_demo`).

The demo application lives in the repository (apps/raspi_demo), not in the wheel: from a
checkout it is found next to the sam2_edge package; elsewhere the subcommand explains how
to get it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .cli import subcommand
from .errors import Sam2EdgeError

_APP = "apps.raspi_demo.app"


def _import_app():
    try:
        return importlib.import_module(_APP)
    except ModuleNotFoundError as e:
        if e.name not in ("apps", "apps.raspi_demo", _APP):
            raise
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "apps", "raspi_demo", "app.py")) and root not in sys.path:
        sys.path.append(root)
        try:
            return importlib.import_module(_APP)
        except ModuleNotFoundError as e:
            if e.name not in ("apps", "apps.raspi_demo", _APP):
                raise
    return None


@subcommand("demo")
def _demo(p: argparse.ArgumentParser):
    app = _import_app()
    if app is not None:
        return app.configure_parser(p)

    p.description = "SAM 2 live tracking demo (needs a checkout of the sam2-edge repository)."
    p.add_argument("args", nargs=argparse.REMAINDER)

    def run(a: argparse.Namespace) -> int:
        raise Sam2EdgeError("the demo app (apps/raspi_demo) is not installed with the wheel: clone the sam2-edge "
                            "repository and run `python -m apps.raspi_demo ...` (or `sam2-edge demo ...`) from it")
    return run
