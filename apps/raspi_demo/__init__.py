"""SAM 2 live video object tracking demo for edge boards (Raspberry Pi 5, Jetson, Mac).

    python -m apps.raspi_demo --bundle DIR --source 0
    sam2-edge demo --bundle DIR --source 0

See README.md in this folder. Modules: `events` (interaction state machine, no GUI),
`capture` (sources, newest-frame capture thread), `headless` (prompts file -> video + masks),
`app` (window, HUD, command line).
"""

from .capture import LatestFrameGrabber, SequentialReader, SourceError, open_reader, open_source
from .events import DemoController
from .headless import PromptError, load_prompts, parse_prompts, run_headless

__all__ = ["DemoController", "LatestFrameGrabber", "SequentialReader", "SourceError", "open_reader", "open_source",
           "PromptError", "load_prompts", "parse_prompts", "run_headless"]
