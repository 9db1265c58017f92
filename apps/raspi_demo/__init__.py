"""SAM 2 live video object tracking demo for edge boards (Raspberry Pi 5, Jetson, Mac).

    python -m apps.raspi_demo --bundle DIR --source 0
    sam2-edge demo --bundle DIR --source 0

See README.md in this folder. Modules: `events` (interaction state machine, no GUI),
`headless` (prompts file -> video + masks), `app` (window, HUD, command line). Sources, the
newest-frame capture thread, the prompts schema, mask drawing and writers are the video
pipeline's (`sam2_edge.runtimes.video`, shared with `sam2-edge track`); the names below are
re-exported from there.
"""

from sam2_edge.runtimes.video import (LatestFrameGrabber, PromptError, SequentialReader, SourceError, load_prompts,
                                      open_reader, open_source, parse_prompts)

from .events import DemoController
from .headless import run_headless

__all__ = ["DemoController", "LatestFrameGrabber", "SequentialReader", "SourceError", "open_reader", "open_source",
           "PromptError", "load_prompts", "parse_prompts", "run_headless"]
