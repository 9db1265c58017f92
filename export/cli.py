"""`sam2-edge export`: a checkpoint -> a bundle folder (four stage graphs + manifest.json).

Registered by `sam2_edge.cli`; torch and the format's exporter load only when it runs.
"""

from __future__ import annotations

import argparse
import time

from ..cli import subcommand
from ..contract import FORMATS, Precision
from ..contract.spec import obj_batches_problem
from ..errors import ConfigError


@subcommand("export")
def _export(p: argparse.ArgumentParser):
    p.description = ("Export a SAM 2 / 2.1 checkpoint as a bundle for an edge runtime: the four tracker stages "
                     "(image_encoder, memory_attention, mask_decoder, memory_encoder) as static-shape graphs "
                     "plus manifest.json. Run it with Tracker.from_bundle(DIR) or from Swift / Kotlin "
                     "(see export/README.md).")
    p.add_argument("--checkpoint", required=True, help="official .pt checkpoint ({'model': state_dict})")
    p.add_argument("--variant", default=None, help="model variant (default: inferred from the checkpoint)")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="graph format of the bundle")
    p.add_argument("--out", required=True, help="bundle folder to create (an existing bundle there is replaced)")
    p.add_argument("--image-size", type=int, default=None,
                   help="model input side S (multiple of 32; default: the variant's, 1024 for released models)")
    p.add_argument("--precision", choices=[p.value for p in Precision], default=None,
                   help="weights / compute precision; inputs and outputs stay float32 "
                        "(default: fp16 for coreml, fp32 otherwise)")
    p.add_argument("--cond-slots", type=int, default=2,
                   help="conditioning (prompted) frames kept in each object's memory (default 2)")
    p.add_argument("--sign", metavar="KEY", default=None,
                   help="Ed25519 private key (from `sam2-edge keygen KEY`): writes manifest.sig, so a tracker "
                        "given KEY.pub as a trusted key accepts this bundle")
    p.add_argument("--obj-batches", default="1", metavar="B,B,...",
                   help="object batch sizes to export the per-object stages for, e.g. 1,2,4: a frame with N "
                        "objects then runs N split into these batches (7 -> 4+2+1), one call per stage each, "
                        "instead of N calls; each size > 1 adds a copy of the three per-object graphs "
                        "(default 1: one object per call)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    try:  # int8 / int8-dynamic: sam2_edge.quantization (calibration options shared with `sam2-edge quantize`)
        from ..quantization.cli import add_quantize_args, run_quantize
    except ImportError:
        add_quantize_args = run_quantize = None
    if add_quantize_args is not None:
        # every quantized precision of every format goes to `sam2-edge quantize`'s flow (run below)
        add_quantize_args(p.add_argument_group("quantized precisions: int8 / int8-dynamic (ONNX, ExecuTorch; "
                                               "calibrated), int8 / palettize4/6/8 (CoreML; weights only, the "
                                               "calibration options are not used)"))

    def run(a: argparse.Namespace) -> int:
        from ..contract import load_manifest
        from .bundle import export_bundle

        batches = parse_obj_batches(a.obj_batches)
        if a.precision is not None and Precision(a.precision).quantized:
            if batches != (1,):
                raise ConfigError(f"--obj-batches {a.obj_batches}: quantized bundles hold the batch-1 graphs only; "
                                  "drop --obj-batches or export --precision fp32 / fp16")
            if run_quantize is None:
                raise ConfigError("this installation has no sam2_edge.quantization; int8 bundles need it")
            return run_quantize(a, a.precision, False if a.no_progress else None)
        given = [flag for flag, on in (("--calib", getattr(a, "calib", None)), ("--analyze", getattr(a, "analyze", False)),
                                       ("--bench", getattr(a, "bench", False))) if on]
        if given:  # options of the quantised flow are never silently ignored
            raise ConfigError(f"{', '.join(given)}: for quantized precisions (int8, int8-dynamic, palettize4/6/8); a "
                              f"{a.precision or 'default'} export uses no calibration, analysis or speed run (drop "
                              "them, or compare bundles with sam2-edge bench --bundle A --bundle B)")

        t0 = time.perf_counter()
        signing = {"sign_key": a.sign} if a.sign else {}
        out = export_bundle(a.checkpoint, a.out, format=a.format, variant=a.variant, image_size=a.image_size,
                            precision=a.precision, cond_slots=a.cond_slots, obj_batches=batches,
                            show_progress=False if a.no_progress else None, **signing)
        seconds = time.perf_counter() - t0
        m = load_manifest(out)
        total = 0
        print(f"bundle   {out}  ({m.format}, {m.precision}, {m.variant}, S={m.spec.image_size}, "
              f"cond_slots={m.spec.cond_slots}, obj_batches={','.join(map(str, m.spec.obj_batches))})")
        for stage, g in m.graphs.items():
            total += g.bytes
            print(f"  {stage:19s} {g.file:28s} {g.bytes / 1e6:9.2f} MB  sha256 {g.sha256[:16]}…")
        print(f"total    {total / 1e6:.2f} MB in {seconds:.1f} s")
        return 0
    return run


def parse_obj_batches(text: str) -> tuple:
    """"1,2,4" -> (1, 2, 4), checked by the contract; ConfigError naming the form otherwise."""
    try:
        batches = tuple(int(x) for x in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--obj-batches {text!r:.40} must be comma-separated integers, e.g. 1,2,4") from None
    problem = obj_batches_problem(batches)
    if problem:
        raise ConfigError(f"--obj-batches {text!r:.40}: {problem}")
    return batches


@subcommand("keygen")
def _keygen(p: argparse.ArgumentParser):
    p.description = ("Make an Ed25519 key pair for signing bundles: KEY (private, mode 0600; keep it secret) and "
                     "KEY.pub (give it to the devices that run your bundles: --trusted-key KEY.pub).")
    p.add_argument("key", help="path of the private key to create (KEY.pub is written beside it)")

    def run(a: argparse.Namespace) -> int:
        from ..contract.signing import generate_key

        r = generate_key(a.key)
        print(f"private key {r['private']}  (keep secret; sign with: sam2-edge export ... --sign {r['private']})")
        print(f"public key  {r['public']}  (key id {r['key_id']}; trust with: --trusted-key {r['public']})")
        return 0
    return run
