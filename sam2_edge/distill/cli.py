"""`sam2-edge distill`: train a smaller student of a SAM 2 teacher on unlabelled videos."""

from __future__ import annotations

import argparse
import json

from ..cli import float_arg, int_arg, subcommand


@subcommand("distill")
def _distill(p: argparse.ArgumentParser):
    p.description = ("Distil a teacher checkpoint into a smaller student variant on unlabelled videos (prompts come "
                     "from the teacher's own masks). Stage 1: image features; stage 2: clips tracked through the "
                     "student's memory. One process, or several with torchrun --nproc_per_node N (same command). "
                     "Writes RUN_DIR/student.safetensors (a checkpoint every command takes), metrics.jsonl, "
                     "loss.png and summary.json (held-out J&F against the teacher).")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.pt or .safetensors)")
    p.add_argument("--student", required=True, help="student variant (sam2-edge distill lists them on error), "
                                                    "e.g. sam2.1-hiera-tiny-perceiver, micro-student")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="videos (.mp4 ...) or folders of them / of frames (DAVIS, SA-V layouts)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (new, empty, or a distill run)")
    p.add_argument("--steps", type=int_arg(1), default=200, help="optimizer steps (default 200)")
    p.add_argument("--image-steps", type=int_arg(0), default=None, help="stage-1 steps (default: 30%% of --steps)")
    p.add_argument("--batch", type=int_arg(1, 1024), default=2, help="clips per step, all processes (default 2)")
    p.add_argument("--frames", type=int_arg(2, 64), default=4, help="frames per clip (default 4)")
    p.add_argument("--stride", type=int_arg(1, 30), default=2, help="frame step within a clip (default 2)")
    p.add_argument("--lr", type=float_arg(above=0, maximum=1), default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--seed", type=int_arg(0), default=0)
    p.add_argument("--no-augment", action="store_true", help="no flips / crops / colour jitter")
    p.add_argument("--checkpoint-every", type=int_arg(0), default=100, help="steps between checkpoints (0: end only)")
    p.add_argument("--eval-every", type=int_arg(0), default=0, help="steps between held-out evaluations (0: end only)")
    p.add_argument("--eval-frames", type=int_arg(3, 10000), default=16, help="held-out frames (default 16)")
    p.add_argument("--eval-objects", type=int_arg(1, 16), default=2, help="objects prompted on held-out video")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast where the GPU has it, else fp32")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same arguments)")
    p.add_argument("--threads", type=int_arg(0, 1024), default=0,
                   help="torch CPU threads per process (0: torch's default; 1 avoids OpenMP spin-wait collapse on a "
                        "busy machine)")
    p.add_argument("--time-budget", type=float_arg(minimum=0), default=0.0, metavar="SECONDS",
                   help="stop training after this many seconds (checkpoint and evaluation follow); 0: none")

    def run(a: argparse.Namespace) -> int:
        from .trainer import TrainConfig, distill

        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        cfg = TrainConfig(teacher=a.teacher, student=a.student, data=tuple(a.data), out=a.out, steps=a.steps,
                          image_steps=-1 if a.image_steps is None else a.image_steps, batch=a.batch, frames=a.frames,
                          stride=a.stride, lr=a.lr, seed=a.seed, augment=not a.no_augment,
                          checkpoint_every=a.checkpoint_every, eval_every=a.eval_every, eval_frames=a.eval_frames,
                          eval_objects=a.eval_objects, device=a.device, precision=a.precision, resume=a.resume,
                          time_budget=a.time_budget)
        summary = distill(cfg)
        if summary.get("processes", 1) == 1 or int(__import__("os").environ.get("RANK", "0")) == 0:
            print(json.dumps(summary, indent=1))
        return 0
    return run
