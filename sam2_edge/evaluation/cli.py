"""`sam2-edge eval`: J, F and J&F of a checkpoint or bundle on a DAVIS-layout dataset, or
against another model's masks as pseudo ground truth."""

from __future__ import annotations

import argparse
import json

from ..cli import int_arg, subcommand


@subcommand("eval")
def _eval(p: argparse.ArgumentParser):
    p.description = ("Score a model with the VOS metrics J (mask IoU), F (boundary F-measure, DAVIS definition) and "
                     "J&F. Either --davis ROOT (DAVIS folder layout; the first frame's masks are the prompts) or "
                     "--reference MODEL (its masks are the pseudo ground truth on --video, e.g. fp32 vs int8).")
    p.add_argument("--model", required=True, help="bundle folder or checkpoint (.pt) to score")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--davis", metavar="ROOT", help="dataset in the DAVIS layout (JPEGImages/<res>/, Annotations/<res>/)")
    g.add_argument("--reference", metavar="MODEL", help="bundle or checkpoint whose masks are the pseudo ground truth")
    p.add_argument("--resolution", default="480p", help="DAVIS resolution folder (default 480p)")
    p.add_argument("--videos", nargs="*", default=None, help="DAVIS videos to score (default: all)")
    p.add_argument("--max-frames", type=int_arg(2), default=None, help="score at most N frames per video")
    p.add_argument("--video", default=None, help="--reference mode: video or image folder (default: the shipped clip)")
    p.add_argument("--frames", type=int_arg(2, 100000), default=24, help="--reference mode: frames (default 24)")
    p.add_argument("--objects", type=int_arg(1, 16), default=2, help="--reference mode: objects (default 2)")
    p.add_argument("--threads", type=int_arg(0), default=0, help="runtime threads (0: default)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="--reference mode, a checkpoint --model: torch compute dtype (bf16: autocast, a CPU with "
                        "AVX512-BF16 / AMX or a bf16 GPU); the reference runs fp32")
    p.add_argument("--image-size", type=int_arg(64), default=None,
                   help="--reference mode: model input side for checkpoints (default: the variant's)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the scores as JSON")

    def run(a: argparse.Namespace) -> int:
        from .evaluate import evaluate_davis, evaluate_pseudo, format_table

        if a.davis:
            r = evaluate_davis(a.model, a.davis, a.resolution, a.videos, a.max_frames, a.threads)
        else:
            r = evaluate_pseudo(a.model, a.reference, a.video, a.frames, a.objects, a.threads, a.dtype, a.image_size)
        print(format_table(r))
        if a.json:
            from ..outputs import write_text

            write_text(a.json, json.dumps(r, indent=1) + "\n", "--json")
            print(f"scores   {a.json}")
        return 0
    return run
