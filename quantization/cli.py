"""`sam2-edge quantize`: a checkpoint (or an fp32 ONNX bundle) -> an int8 / int8-dynamic ONNX or
ExecuTorch bundle with a fidelity report. Registered by `sam2_edge.cli`; onnxruntime / executorch
load only when it runs."""

from __future__ import annotations

import argparse
import json

from ..cli import int_arg, subcommand


def add_quantize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib", default=None, metavar="VIDEO_OR_DIR",
                   help="calibration frames: a video file or a folder of images (default: the clip shipped "
                        "in the package)")
    p.add_argument("--calib-frames", type=int_arg(2, 10000), default=16,
                   help="frames whose stage inputs calibrate the activation ranges (default 16)")
    p.add_argument("--holdout-frames", type=int_arg(1, 10000), default=8,
                   help="the next frames, held out for the fidelity numbers (default 8)")
    p.add_argument("--objects", type=int_arg(1, 16), default=2,
                   help="objects prompted automatically on the first calibration frame (default 2)")
    p.add_argument("--analyze", action="store_true",
                   help="sensitivity analysis: quantise each node group / op type alone, report the error, and "
                        "keep float the groups that cost too much")
    p.add_argument("--bench", action="store_true",
                   help="also benchmark the new bundle beside its float source (one interleaved `sam2-edge bench` "
                        "run, 12 frames, 1 object; minutes at full size) and write the speed into the report")


def run_quantize(a: argparse.Namespace, precision: str, show_progress) -> int:
    import importlib

    from .pipeline import FORMAT_FLOWS, format_report, quantize

    r = quantize(a.checkpoint, a.out, precision, fmt=a.format, calib=a.calib, calib_frames=a.calib_frames,
                 holdout_frames=a.holdout_frames, objects=a.objects, analyze=a.analyze, variant=a.variant,
                 image_size=a.image_size, cond_slots=a.cond_slots, show_progress=show_progress,
                 sign_key=getattr(a, "sign", None), bench=a.bench)
    if a.format in FORMAT_FLOWS:  # a format's own flow formats its own report
        format_report = getattr(importlib.import_module(FORMAT_FLOWS[a.format], __package__), "format_report",
                                format_report)
    print(format_report(r.report))
    if r.report.get("speed"):
        from .speed import format_speed

        print("\n".join(format_speed(r.report["speed"])))
    elif r.report.get("speed_error"):
        print(f"speed    not measured: {r.report['speed_error']}")
    print(f"bundle   {r.path}  (report: {r.path / 'quantization.json'})")
    if getattr(a, "json", False):
        print(json.dumps(r.report, indent=1))
    return 0


@subcommand("quantize")
def _quantize(p: argparse.ArgumentParser):
    from ..contract import FORMATS

    p.description = ("Quantise a SAM 2 / 2.1 checkpoint to an int8 (static W8A8, calibrated on real frames) or "
                     "int8-dynamic bundle -- ONNX (onnxruntime.quantization) or ExecuTorch (PT2E with the "
                     "XNNPACKQuantizer, lowered to XNNPACK) -- with a measured fidelity report (per stage and end "
                     "to end vs fp32) written into the bundle as quantization.json. See quantization/README.md.")
    p.add_argument("--checkpoint", required=True,
                   help="official .pt checkpoint; for --format onnx also an fp32 ONNX bundle folder (skips the "
                        "export). ExecuTorch quantises the torch module, so it needs the checkpoint")
    p.add_argument("--format", default="onnx", choices=list(FORMATS),
                   help="bundle format: onnx (int8, int8-dynamic), executorch (int8, int8-dynamic: PT2E + "
                        "XNNPACKQuantizer), coreml (its own precisions); default onnx")
    p.add_argument("--precision", required=True, help="int8 or int8-dynamic")
    p.add_argument("--out", required=True, help="bundle folder to create (an older bundle there is replaced)")
    p.add_argument("--variant", default=None, help="model variant (default: inferred from the checkpoint)")
    p.add_argument("--image-size", type=int, default=None, help="model input side S (default: the variant's)")
    p.add_argument("--cond-slots", type=int, default=2, help="conditioning frames per object (default 2)")
    add_quantize_args(p)
    p.add_argument("--sign", metavar="KEY", default=None,
                   help="sign the bundle with this Ed25519 private key (sam2-edge keygen); devices accept it with "
                        "--trusted-key KEY.pub")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(a: argparse.Namespace) -> int:
        return run_quantize(a, a.precision, False if a.no_progress else None)
    return run
