"""`sam2-edge bench`: on-device speed of the streaming tracker.

    sam2-edge bench                                   # tiny @512, random weights, shipped clip, every backend here
    sam2-edge bench --checkpoint sam2.1_hiera_tiny.pt --backends torch,onnx --image-size 512
    sam2-edge bench --bundle bundles/tiny-onnx --bundle bundles/tiny-et --json out.json --plot out.png
    sam2-edge bench --variant sam2.1-hiera-tiny --backends torch --threads 1,2,4
    sam2-edge bench --checkpoint sam2.1_hiera_tiny.pt --checkpoint edgetam.pt --backends torch,executorch

What is measured, per target (a backend running a model; several in ONE run):

* per-stage latency (image_encoder, memory_attention, mask_decoder, memory_encoder, and
  pre/post = preprocessing + mask upsampling = total - stages), median and p90 in ms per
  frame, summed over the objects, on the frames where every object's memory ring is full
  (frame index >= num_maskmem + 1 = 8);
* first-frame (prompt) latency: `add_prompt(frame, one object)` on a fresh tracker, median and
  p90 over `--prompt-repeats`; the cold one (the very first call after loading) separately;
* streaming FPS end to end (`Tracker.track` calls on decoded frames; video decoding excluded)
  for each `--objects` count (default 1 and 3), on the same full-memory frames;
* resident memory: the process peak (every target is loaded in the one process) and the RSS
  each target added while it was loaded and warmed up; `Tracker.memory_bytes`;
* model size on disk: the bundle's files; for torch the parameter bytes;
* threads: the intra-op threads each target ran with (torch.set_num_threads, ONNX Runtime
  intra_op_num_threads, the ExecuTorch threadpool).

Targets are run interleaved frame by frame (round-robin, the order rotated every frame), so a
change of machine load hits every target alike; ratios are against the first target. Several
--checkpoint (a student beside its teacher, EdgeTAM beside tiny) run every backend for each
checkpoint in the same run, the rows labelled with the variant (`torch [edgetam]`).

With no arguments (random weights) the run is sized to finish in minutes on a small CPU:
sam2.1-hiera-tiny at 512 px and 12 frames (the config's "defaults" and a note say so;
--image-size 1024 / --frames N ask for more). Bundles exported for --backends are cached in
--export-dir (default $XDG_CACHE_HOME/sam2-edge/bundles, one folder per
<variant>-<size>-<format>-<hash of the weights>) and reused when `load_manifest` validates them.
`all` (and the no-argument default) means every backend that runs here; the others are listed as
skipped with the reason. Progress is a bar on a terminal and log lines otherwise; Ctrl-C keeps
the results so far (table, --json; exit code 130).

No torch at import: torch-free devices benchmark bundles with ONNX Runtime / ExecuTorch.

Modules: `probe` (machine, library versions, default threads), `targets` (Target, the plan,
bundles exported in a child process), `protocol` (the interleaved measuring loop), `report`
(the JSON report, the text table, the plot), `cli` (the `sam2-edge bench` subcommand).
"""

from .probe import default_threads, load_average, machine_info, peak_rss_bytes, physical_cores, rss_bytes
from .protocol import (ROWS, SAMPLE_CLIP, STAGE_NAMES, STEADY_FROM_DEFAULT, load_frames, object_prompts, run_bench,
                       stats)
from .report import SCHEMA, check_plot_available, format_table, plot, report
from .report import _round  # noqa: F401 - benchmarks/profile_step.py rounds its JSON with it
from .targets import (DEFAULT_VARIANT, Plan, Target, backend_takes_threads, build_targets, bundle_cache_name,
                      check_cached_bundle, default_export_dir, export_bundle_subprocess, parse_backends,
                      parse_backends_named)

__all__ = [
    "SCHEMA", "DEFAULT_VARIANT", "SAMPLE_CLIP", "STAGE_NAMES", "ROWS", "STEADY_FROM_DEFAULT", "Target", "Plan",
    "backend_takes_threads", "build_targets", "export_bundle_subprocess", "parse_backends", "parse_backends_named",
    "default_export_dir", "bundle_cache_name", "check_cached_bundle", "load_frames",
    "object_prompts", "run_bench", "stats", "report", "format_table", "plot", "check_plot_available",
    "machine_info", "default_threads", "load_average", "physical_cores", "rss_bytes", "peak_rss_bytes",
]
