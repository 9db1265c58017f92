"""What a run writes: the student (safetensors, with its variant, the teacher's sha256 and the
training config in the metadata: `build_sam2`, `Tracker.from_checkpoint`, `export` and `quantize`
read it as any checkpoint) and the training state for `--resume`. Every file is written to a
temporary sibling and renamed into place, so a checkpoint is never half-written; a full disk is
an OutputError that names the file."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch

from ..errors import ConfigError, InputError, OutputError
from ..outputs import replacing_file

STUDENT_FILE = "student.safetensors"
STATE_FILE = "state.pt"
FORMAT = "sam2-edge-student/1"
# training-config keys a resumed run may change (the rest must equal the run's)
RESUMABLE = ("steps", "checkpoint_every", "eval_every", "device", "precision", "out", "resume", "progress",
             "time_budget")


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path`, renamed over it on success; ENOSPC -> OutputError."""
    try:
        with replacing_file(path) as tmp:
            yield tmp
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputError(f"out of disk space writing {str(path)!r} (the previous file, if any, is intact); "
                              "free some space and rerun with --resume") from None
        raise


def check_free_space(out: Path, student_params: int) -> None:
    """Refuse to start when the run folder cannot hold its files (student + state + temp copies)."""
    need = student_params * 4 * 8  # safetensors + weights and two Adam moments in the state, each twice
    free = shutil.disk_usage(out if out.exists() else out.parent).free
    if free < need:
        raise OutputError(f"--out {str(out)!r}: {free / 2**20:.0f} MiB free, the run needs ~{need / 2**20:.0f} MiB "
                          "for its checkpoints; free some space or give another folder")


def save_student(path: Path, model: torch.nn.Module, meta: Dict[str, str]) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic(path) as tmp:
        save_file(sd, str(tmp), metadata={"format": FORMAT, **{k: str(v) for k, v in meta.items()}})


def save_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched, step: int,
               config: dict) -> None:
    state = {"step": step, "config": config, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict()}
    with atomic(path) as tmp:
        torch.save(state, tmp)


def config_diff(saved: dict, now: dict) -> Dict[str, tuple]:
    keys = (set(saved) | set(now)) - set(RESUMABLE)
    return {k: (saved.get(k), now.get(k)) for k in sorted(keys) if saved.get(k) != now.get(k)}


def load_state(path: Path, config: dict) -> dict:
    if not path.is_file():
        raise InputError(f"--resume: {str(path)!r} does not exist; nothing to resume (start without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise InputError(f"--resume: {str(path)!r} is not a readable training state ({type(e).__name__})") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "model" not in state:
        raise InputError(f"--resume: {str(path)!r} is not a sam2-edge distill training state")
    diff = config_diff(state["config"], config)
    if diff:
        said = "; ".join(f"{k}: run {a!r:.80}, now {b!r:.80}" for k, (a, b) in diff.items())
        raise ConfigError(f"--resume: the run in {str(path.parent)!r} was started with another config ({said}); "
                          "resume with the same arguments (only --steps, --checkpoint-every, --eval-every, --device, "
                          "--precision may change) or give a new --out")
    return state


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=float) + "\n")


def read_jsonl(path: Path, before: Optional[int] = None) -> list:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            r = json.loads(line)
            if before is None or r.get("step", 0) <= before:
                out.append(r)
    return out


def rewrite_jsonl(path: Path, records: list) -> None:
    with atomic(path) as tmp:
        tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in records), encoding="utf-8")


__all__ = ["STUDENT_FILE", "STATE_FILE", "save_student", "save_state", "load_state", "check_free_space",
           "append_jsonl", "read_jsonl", "rewrite_jsonl", "atomic", "config_diff"]
