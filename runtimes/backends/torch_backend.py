"""Torch backend: runs the eager stage modules (CPU, CUDA or MPS). The reference for every
exported backend. Imports torch only when constructed.

Two things only an eager backend can do, both on by request of the speed issue:
* memory attention over only the memory / pointer slots that are present (dynamic shapes,
  as the official predictor attends to the memories that exist): no work for empty slots
  and no key bias, so SDPA stays on its fused kernel. `static_memory=True` runs the
  exported graphs' static-slot computation instead (to compare with a bundle bit for bit).
* `dtype="bf16"`: the stages under torch.autocast(bfloat16) -- matmuls, convolutions and
  attention in bf16, LayerNorm / softmax / reductions in fp32 (autocast's own op lists),
  as the official SAM 2 runs on GPUs. Only where the hardware has native bf16 (CPUs with
  AVX512-BF16 or AMX, CUDA GPUs with bf16, Apple MPS): elsewhere bf16 is emulated and slower
  than fp32, so it is refused with the fix named."""

from __future__ import annotations

import numbers
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...errors import BackendUnavailableError, ConfigError
from ...contract import STAGES, TrackerSpec
from ...contract.spec import SPEC_LIMITS
from .base import Backend

DEVICE_TYPES = ("cpu", "cuda", "mps")
DTYPES = ("fp32", "bf16")


def _import_torch():
    try:
        import torch
    except ModuleNotFoundError as e:
        if e.name == "torch":
            raise BackendUnavailableError("the torch backend needs PyTorch: pip install 'sam2-edge[torch]'") from None
        raise
    return torch


def check_device(device: Any) -> str:
    """A torch device that exists on this machine -> its name ("cpu", "cuda:0", "mps");
    ConfigError for anything else: not a device string, a device type sam2-edge does not run
    on, CUDA without a CUDA build / GPU, a GPU index past the last, MPS off a Mac."""
    torch = _import_torch()
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"device must be a string like 'cpu', 'cuda', 'cuda:1' or 'mps', got {device!r:.60}")
    try:
        d = torch.device(device.strip())
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device {device!r:.60} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if d.type not in DEVICE_TYPES:
        raise ConfigError(f"device {device!r}: sam2-edge runs the torch backend on {', '.join(DEVICE_TYPES)}, "
                          f"not {d.type}")
    if d.index is not None and d.index < 0:
        raise ConfigError(f"device {device!r}: the device index must be >= 0")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            build = f"PyTorch {torch.__version__} " + ("has no CUDA support" if torch.version.cuda is None
                                                       else "finds no CUDA GPU (driver / CUDA_VISIBLE_DEVICES)")
            raise ConfigError(f"device {device!r}: {build}; use --device cpu, or install a CUDA build of PyTorch "
                              "on a machine with an NVIDIA GPU")
        n = torch.cuda.device_count()
        if (d.index or 0) >= n:
            raise ConfigError(f"device {device!r}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    elif d.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {device!r}: Apple's MPS is not available here (it needs macOS on Apple "
                              "silicon and an MPS build of PyTorch); use --device cpu")
        if (d.index or 0) > 0:
            raise ConfigError(f"device {device!r}: there is one MPS device, 'mps'")
    elif d.index not in (None, 0):
        raise ConfigError(f"device {device!r}: there is one CPU device, 'cpu'")
    return str(d)


def check_cond_slots(cond_slots: Any) -> int:
    """The number of conditioning frames each object keeps: an integer in the contract's range."""
    lo, hi = SPEC_LIMITS["cond_slots"]
    if isinstance(cond_slots, (bool, np.bool_)) or not isinstance(cond_slots, numbers.Integral) \
            or not lo <= cond_slots <= hi:
        raise ConfigError(f"cond_slots must be an integer {lo}..{hi} (conditioning frames kept per object), "
                          f"got {cond_slots!r:.40}")
    return int(cond_slots)


def check_image_size(image_size: Any) -> Optional[int]:
    """The model input side: None (the variant's) or a multiple of 32 in the contract's range."""
    if image_size is None:
        return None
    lo, hi = SPEC_LIMITS["image_size"]
    if isinstance(image_size, (bool, np.bool_)) or not isinstance(image_size, numbers.Integral) \
            or not lo <= image_size <= hi or image_size % 32:
        raise ConfigError(f"image_size must be None (the variant's) or a multiple of 32 in {lo}..{hi}, "
                          f"got {image_size!r:.40}")
    return int(image_size)


def native_bf16(device: str) -> Optional[str]:
    """None when `device` (a checked device name) computes bf16 natively, else why not."""
    torch = _import_torch()
    kind = torch.device(device).type
    if kind == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this CUDA GPU has no native bf16 (compute capability < 8.0)"
    if kind == "mps":
        return None
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(f is not None and f() for f in probes):
        return None
    return "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated and slower than fp32"


def check_dtype(dtype: Any, device: str) -> str:
    """The torch backend's compute dtype: "fp32", or "bf16" where `device` has native bf16."""
    if not isinstance(dtype, str) or dtype.strip().lower() not in DTYPES + ("bfloat16", "float32"):
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r:.40}")
    dtype = {"bfloat16": "bf16", "float32": "fp32"}.get(dtype.strip().lower(), dtype.strip().lower())
    if dtype == "bf16":
        why = native_bf16(device)
        if why:
            raise ConfigError(f"dtype bf16 on {device}: {why}; use dtype fp32 (or a bf16 device: a CPU with "
                              "AVX512-BF16 / AMX, an Ampere or newer GPU, Apple silicon)")
    return dtype


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, device: str = "cpu", cond_slots: int = 2, dtype: str = "fp32",
                 static_memory: bool = False) -> None:
        device = check_device(device)
        cond_slots = check_cond_slots(cond_slots)
        dtype = check_dtype(dtype, device)
        if not isinstance(static_memory, bool):
            raise ConfigError(f"static_memory must be True or False, got {static_memory!r:.40}")
        torch = _import_torch()

        from ...stages import build_stages, tracker_spec

        super().__init__(tracker_spec(model, cond_slots))
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = dtype
        self.static_memory = static_memory
        self.model = model.to(self.device).eval()
        self.stages = dict(zip(STAGES, build_stages(self.model)))

    @classmethod
    def from_checkpoint(cls, path: str, variant: Optional[str] = None, device: str = "cpu",
                        image_size: Optional[int] = None, cond_slots: int = 2, dtype: str = "fp32",
                        static_memory: bool = False) -> "TorchBackend":
        # every argument checked before the checkpoint is read
        if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"the checkpoint must be a file path, got {path!r:.60}")
        if variant is not None and not isinstance(variant, str):
            raise ConfigError(f"variant must be a name (str) or None, got {variant!r:.60}")
        device = check_device(device)
        cond_slots = check_cond_slots(cond_slots)
        image_size = check_image_size(image_size)
        dtype = check_dtype(dtype, device)
        if not isinstance(static_memory, bool):
            raise ConfigError(f"static_memory must be True or False, got {static_memory!r:.40}")
        try:
            from ...checkpoint import load_checkpoint
        except ModuleNotFoundError as e:
            if e.name == "torch":
                raise BackendUnavailableError("the torch backend needs PyTorch: pip install 'sam2-edge[torch]'") from None
            raise
        model, _ = load_checkpoint(os.fspath(path), variant, image_size)
        return cls(model, device, cond_slots, dtype, static_memory)

    def describe(self) -> str:
        return f"torch ({self.device}, {self.dtype})"

    def object_batches(self, n: int) -> List[int]:
        """Eager modules take any batch: all `n` objects in one call per stage."""
        return [n] if n else []

    def _present_only(self, inputs: Tuple[np.ndarray, ...]):
        """memory_attention inputs of B objects -> groups [(rows, forward_present inputs)], the
        objects of a group sharing the same present memory / pointer slots (usually all of them),
        each over only those slots; None when the static path must run (no memory frame at all)."""
        feats, pos, memory, tpos, mem_valid, ptrs, dist, ptr_valid = inputs
        patterns: Dict[bytes, List[int]] = {}
        for r in range(memory.shape[0]):  # [B, M] / [B, P] validity -> rows with equal patterns
            key = (mem_valid[r] > 0.5).tobytes() + (ptr_valid[r] > 0.5).tobytes()
            patterns.setdefault(key, []).append(r)
        groups = []
        for rows in patterns.values():
            mi = np.flatnonzero(mem_valid[rows[0]] > 0.5)  # [M'] present memory slots
            pi = np.flatnonzero(ptr_valid[rows[0]] > 0.5)  # [P'] present pointer slots
            if mi.size == 0:
                return None
            ix = np.asarray(rows)[:, None]
            groups.append((rows, (feats, pos, memory[ix, mi], tpos[ix, mi], ptrs[ix, pi], dist[ix, pi])))
        return groups

    def run(self, stage: str, inputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
        torch = self.torch
        stage, _ = TrackerSpec.parse_key(stage)  # eager modules take any object batch
        fn = self.stages[stage]
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.dtype == "bf16"):
            groups = self._present_only(inputs) if stage == "memory_attention" and not self.static_memory else None
            if groups is not None:
                if len(groups) == 1 and len(groups[0][0]) == inputs[2].shape[0]:
                    out = self.stages[stage].forward_present(*self._tensors(groups[0][1]))
                else:  # objects whose memories differ in which slots exist: one call per group
                    b = inputs[2].shape[0]
                    out = None
                    for rows, args in groups:
                        part = self.stages[stage].forward_present(*self._tensors(args))
                        if out is None:
                            out = part.new_empty((b,) + tuple(part.shape[1:]))
                        out[torch.as_tensor(rows, device=part.device)] = part
            else:
                out = fn(*self._tensors(inputs))
        if isinstance(out, torch.Tensor):
            out = (out,)
        return tuple(o.detach().float().cpu().numpy() for o in out)

    def _tensors(self, arrays):
        return [self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
