"""The distillation loop: stage 1 (image features), then stage 2 (clips tracked through the
student's own memory), in one process or under torchrun (DistributedDataParallel: gloo on CPU,
nccl on GPUs). Every process draws the same global batch of clips for a step and takes its share,
so N processes with --batch B give one process's result with --batch B up to float noise."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint
from ..configs import get_config
from ..contract import sha256_file
from ..errors import ConfigError, OutputError
from ..modeling.sam2 import SAM2Model
from ..outputs import check_dir, has_marker, write_marker
from ..progress import Progress
from . import augment, store
from .data import draw_clips, open_dataset, read_clip, split
from .losses import LossWeights, clip_loss
from .prompts import sample_prompt
from .report import HeldOut, plot
from .rollout import prompt_frame, rollout
from .students import check_student, init_from_teacher, parameter_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    teacher: str
    student: str
    data: Tuple[str, ...]
    out: str
    steps: int = 200
    image_steps: int = -1  # stage-1 steps; -1: 30% of --steps
    batch: int = 2  # clips per step, all processes together
    frames: int = 4  # frames per clip (stage 2)
    stride: int = 2  # frame step within a clip
    lr: float = 1e-4
    weight_decay: float = 0.01
    seed: int = 0
    augment: bool = True
    checkpoint_every: int = 100
    eval_every: int = 0  # 0: only at the end
    eval_frames: int = 16
    eval_objects: int = 2
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    resume: bool = False
    progress: bool = True
    time_budget: float = 0.0  # seconds of training after which the run stops early (0: none)

    def stage1_steps(self, encoder_is_teachers: bool = False) -> int:
        """--image-steps, or by default 30% of --steps (none when the student's image encoder is the
        teacher's own, weights and resolution: there is nothing for stage 1 to learn)."""
        if self.image_steps >= 0:
            return min(self.image_steps, self.steps)
        return 0 if encoder_is_teachers else int(round(0.3 * self.steps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = [os.path.abspath(p) for p in self.data]
        d["out"] = os.path.abspath(self.out)
        d["teacher"] = os.path.abspath(self.teacher)
        return d


class Objective(nn.Module):
    """The student and its loss: forward(clips) -> (loss, parts); DDP wraps this module."""

    def __init__(self, student: SAM2Model, weights: LossWeights) -> None:
        super().__init__()
        self.student = student
        self.weights = weights

    def forward(self, clips: List[dict]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        total, parts = 0.0, {}
        for c in clips:
            s = rollout(self.student, c["images"], c["prompt"])
            for k, v in clip_loss(s, c["teacher"], self.weights).items():
                parts[k] = parts.get(k, 0.0) + v.detach() / len(clips)
                total = total + v / len(clips)
        return total, parts


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU on this machine (use --device cpu or auto)")
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available on this machine (use --device cpu or auto)")
    return torch.device(name)


def _bf16(precision: str, dev: torch.device) -> bool:
    if precision == "fp32":
        return False
    has = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or dev.type == "mps"
    if precision == "bf16" and not has and dev.type != "cpu":
        raise ConfigError(f"--precision bf16: {dev.type} has no bfloat16 here; use --precision fp32")
    return has or precision == "bf16"


class Distiller:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if cfg.batch % self.world:
            raise ConfigError(f"--batch {cfg.batch} must be a multiple of the {self.world} processes")
        self.out = check_dir(cfg.out, "--out", lambda p: has_marker(p, "distill"), "a run folder of sam2-edge distill")
        teacher, tcfg = load_checkpoint(cfg.teacher)
        scfg = get_config(cfg.student)
        self.sizes = check_student(tcfg, scfg)
        state_path = self.out / store.STATE_FILE
        if state_path.exists() and not cfg.resume:
            raise OutputError(f"--out {cfg.out!r} holds a run already ({store.STATE_FILE}); pass --resume to continue "
                              "it, or give a new folder")
        self.ds = open_dataset(cfg.data)
        span = (cfg.frames - 1) * cfg.stride + 1
        self.train_segments, self.held_segment = split(self.ds, cfg.eval_frames, span)
        self.span = span
        self.teacher_sha = sha256_file(cfg.teacher)
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.dev = _device(cfg.device, self.local_rank)
        self.bf16 = _bf16(cfg.precision, self.dev)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.dev.type == "cuda" else "gloo")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            store.check_free_space(self.out, parameter_count(scfg))
            write_marker(self.out, "distill", student=scfg.name, teacher=tcfg.name)
        torch.manual_seed(cfg.seed)
        self.student = SAM2Model(scfg)
        self.copied = init_from_teacher(self.student, teacher)
        tsd, ssd = teacher.state_dict(), self.student.state_dict()
        enc = [k for k in ssd if k.startswith("image_encoder.")]
        same = (tcfg.image_size == scfg.image_size and len(enc) == sum(k.startswith("image_encoder.") for k in tsd)
                and all(k in tsd and torch.equal(ssd[k], tsd[k]) for k in enc))
        self.stage1 = cfg.stage1_steps(same)
        self.teacher = teacher.to(self.dev).eval().requires_grad_(False)
        self.student.to(self.dev).train()
        self.objective = Objective(self.student, LossWeights())
        self.model: nn.Module = self.objective
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.dev.index] if self.dev.type == "cuda" else None,
                find_unused_parameters=True)
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, min(20, cfg.steps // 10))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
        self.start = 0
        self.metrics = self.out / "metrics.jsonl"
        if cfg.resume:
            st = store.load_state(state_path, cfg.to_dict())
            self.student.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
            self.sched.load_state_dict(st["scheduler"])
            self.start = int(st["step"])
            if self.rank == 0:
                store.rewrite_jsonl(self.metrics, store.read_jsonl(self.metrics, before=self.start))
            log.info("resumed %s at step %d", self.out, self.start)
        self.held = HeldOut(self.held_segment, self.teacher, cfg.eval_objects) if self.rank == 0 else None

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _clip(self, step: int, draw, video: bool) -> dict:
        cfg, tcfg, scfg = self.cfg, self.teacher.cfg, self.student.cfg
        rng = np.random.default_rng(draw.seed)
        seg = self.train_segments[draw.segment]
        frames = read_clip(seg.source, draw.start, cfg.frames, cfg.stride)
        x = torch.from_numpy(augment.apply(frames, augment.draw_aug(rng, cfg.augment), tcfg.image_size)).to(self.dev)
        xs = x if scfg.image_size == tcfg.image_size else F.interpolate(
            x, size=(scfg.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad(), self._autocast():
            if not video:
                return {"images": xs, "prompt": None, "teacher": rollout(self.teacher, x, None)}
            feats = self.teacher.encode_image(x)

            def teacher_mask(p):
                return prompt_frame(self.teacher, feats, 0, p).low[0, 0].float().cpu().numpy()

            prompt = sample_prompt(rng, teacher_mask, tcfg.image_size)
            return {"images": xs, "prompt": prompt, "teacher": rollout(self.teacher, x, prompt)}

    def step(self, step: int) -> Dict[str, float]:
        video = step >= self.stage1
        draws = draw_clips(self.cfg.seed, step, self.cfg.batch, self.train_segments, self.span)
        clips = [self._clip(step, d, video) for d in draws[self.rank::self.world]]
        with self._autocast():
            loss, parts = self.model(clips)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        vals = torch.stack([loss.detach().float()] + [parts[k].float() for k in sorted(parts)]).cpu()
        if self.world > 1:
            dist.all_reduce(vals)
            vals /= self.world
        out = {"loss": float(vals[0]), **{k: float(v) for k, v in zip(sorted(parts), vals[1:])}}
        out["grad_norm"] = float(gnorm)
        if not math.isfinite(out["loss"]):
            raise ConfigError(f"the loss became {out['loss']} at step {step}; lower --lr (now {self.cfg.lr:g})")
        return out

    # ------------------------------------------------------------------ the run
    def _meta(self, step: int) -> Dict[str, str]:
        return {"variant": self.student.cfg.name, "teacher_sha256": self.teacher_sha,
                "teacher_variant": self.teacher.cfg.name, "step": str(step),
                "training_config": json.dumps(self.cfg.to_dict(), sort_keys=True)}

    def _checkpoint(self, step: int) -> None:
        if self.rank == 0:
            store.save_student(self.out / store.STUDENT_FILE, self.student, self._meta(step))
            store.save_state(self.out / store.STATE_FILE, self.student, self.opt, self.sched, step, self.cfg.to_dict())
        if self.world > 1:
            dist.barrier()

    def _evaluate(self, step: int) -> Optional[dict]:
        r = None
        if self.rank == 0:
            self.student.eval()
            r = self.held.score(self.student)
            self.student.train()
            store.append_jsonl(self.metrics, {"step": step, "eval": r})
            log.info("step %d: held-out J&F vs the teacher %.4f (J %.4f, F %.4f) on %s", step, r["JF"], r["J"],
                     r["F"], r["video"])
        if self.world > 1:
            dist.barrier()
        return r

    def _out_of_time(self, mine: bool) -> bool:
        """Rank 0's clock decides for every process (they must stop at the same step)."""
        flag = torch.tensor([float(mine)])
        if self.world > 1:
            dist.broadcast(flag, 0)
        return bool(flag.item())

    def run(self) -> dict:
        cfg = self.cfg
        if self.rank == 0:
            log.info("distilling %s (%s parameters, %d px) from %s (%s, %d px): %d of %d student tensors from the "
                     "teacher; stage 1 (image) %d of %d steps; %d training videos (%d skipped), held out: %s; "
                     "%d process(es) on %s%s",
                     self.student.cfg.name, f"{self.sizes['parameters'][1]:,}", self.student.cfg.image_size,
                     self.teacher.cfg.name, f"{self.sizes['parameters'][0]:,}", self.teacher.cfg.image_size,
                     *self.copied, self.stage1, cfg.steps, len(self.train_segments), len(self.ds.skipped), self.held.name, self.world,
                     self.dev, ", bf16 autocast" if self.bf16 else "")
        last: Dict[str, float] = {}
        evals = []
        if self.start == 0 and cfg.eval_every:
            evals.append(self._evaluate(0))  # the student as initialised: the baseline
        t0 = time.perf_counter()  # the time budget and elapsed_s count from here
        bar = Progress(cfg.steps - self.start, "distill", enabled=None if cfg.progress and self.rank == 0 else False)
        for step in range(self.start, cfg.steps):
            ts = time.perf_counter()
            last = self.step(step)
            rate = cfg.batch / max(time.perf_counter() - ts, 1e-9)
            if self.rank == 0:
                store.append_jsonl(self.metrics, {"step": step + 1, "stage": 1 if step < self.stage1 else 2,
                                                  **last, "clips_per_s": rate, "lr": self.sched.get_last_lr()[0],
                                                  "elapsed_s": time.perf_counter() - t0})
                bar.update(1, f"loss {last['loss']:.4f} {rate:.2f} clips/s")
            done = step + 1
            if cfg.time_budget and self._out_of_time(time.perf_counter() - t0 >= cfg.time_budget):
                if self.rank == 0:
                    bar.message(f"time budget of {cfg.time_budget:g} s spent after {done} steps")
                break
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                self._checkpoint(done)
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                evals.append(self._evaluate(done))
        bar.close()
        done = self.start if cfg.steps == self.start else done
        self._checkpoint(done)
        final = self._evaluate(done)
        summary = {"student": str(self.out / store.STUDENT_FILE), "steps": done, "final_loss": last.get("loss"),
                   "heldout": final, "seconds": round(time.perf_counter() - t0, 1), "processes": self.world,
                   "skipped_videos": len(self.ds.skipped)}
        if self.rank == 0:
            records = store.read_jsonl(self.metrics)
            if plot(self.out / "loss.png", records):
                summary["plot"] = str(self.out / "loss.png")
            with store.atomic(self.out / "summary.json") as tmp:
                tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        if self.world > 1:
            dist.destroy_process_group()
        return summary


def distill(cfg: TrainConfig) -> dict:
    return Distiller(cfg).run()


__all__ = ["TrainConfig", "Distiller", "distill", "Objective"]
