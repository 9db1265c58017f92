"""Loading official SAM 2 / 2.1 checkpoints: `{"model": state_dict}` with official keys.

`torch.load(weights_only=True)` only: a checkpoint never executes code. Loading is strict:
every key consumed, every shape checked, the variant inferred from the shapes when not
given; failures raise `CheckpointError` before any model is returned.

A checkpoint is untrusted input. Before `torch.load` the zip archive torch.save writes is
read with `zipfile`: its central directory is checked against limits computed from the
registered variants' layouts (`checkpoint_limits`: no member, and no archive, larger than
the largest variant needs; no absurdly deflated member; no more members than a state dict
has tensors) and every member's CRC-32 is verified by streaming it in bounded chunks, so a
zip bomb is refused before a byte of it is inflated. After loading, before any model is
built, every key must be a string and every value a dense, finite, floating-point CPU
tensor (`read_state_dict`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .configs import ModelConfig, get_config, list_variants
from .errors import CheckpointError, ConfigError
from .modeling.sam2 import SAM2Model

log = logging.getLogger(__name__)

# Official names are used as they are; this table maps the few keys that older releases
# spell differently (none known for the released SAM 2 / 2.1 files).
RENAMES: Dict[str, str] = {}

# Dtypes a SAM 2 checkpoint may store its weights in (all are upcast to float32 on load).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WIDEST_BYTES = max(torch.empty(0, dtype=d).element_size() for d in FLOAT_DTYPES)  # float64: 8

# Limits on the archive (see `checkpoint_limits`).
METADATA_BYTES_PER_KEY = 1024  # data.pkl: ~133 B per tensor in the official files; 7x margin
METADATA_SLACK_BYTES = 1 << 20  # + 1 MiB for the dict around the state dict
MEMBER_SLACK = 64  # members beyond one storage per tensor: data.pkl, version, byteorder, ...
DIRECTORY_BYTES_PER_MEMBER = 1024  # a central-directory entry: 46 B + name (~40 B) + extra fields
MAX_DEFLATE_RATIO = 50.0  # float weights deflate ~1.1:1; only constant data deflates 50:1
DEFLATE_RATIO_FLOOR_BYTES = 64 << 10  # small all-zero tensors (biases) may deflate far more
MAX_ARCHIVE_DEFLATE_RATIO = 10.0  # all deflated members together (a bomb split into many)
_CRC_CHUNK = 4 << 20  # the CRC pass reads (and inflates) at most this much at a time

# The pickle magic of a legacy (pre-zip, PyTorch < 1.6) torch.save file.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


@dataclass(frozen=True)
class CheckpointLimits:
    """What a SAM 2 checkpoint file may contain, from the registered variants' layouts."""

    max_tensor_elements: int  # the largest tensor of any variant
    max_storage_bytes: int  # ... at the widest accepted dtype (float64 = float32 x 2)
    max_total_bytes: int  # the largest variant's state dict at float64 + metadata
    max_metadata_bytes: int  # data.pkl and the other non-storage members
    max_members: int  # the most tensors of any variant + MEMBER_SLACK
    max_tensors: int  # entries of the state dict: the most of any variant + MEMBER_SLACK
    max_total_elements: int  # all tensors together: the largest variant's + its largest tensor
    max_directory_bytes: int  # the zip central directory: max_members entries of <= 1 KiB


def checkpoint_limits() -> CheckpointLimits:
    """The limits for the variants registered now (computed once per registry state).

    Storage and total limits are the largest variant's float32 sizes with a 2x margin, which
    is exactly a float64 copy (float64 is an accepted dtype); a storage larger than the
    largest tensor of any variant, or an archive larger than the largest state dict, cannot
    be a SAM 2 checkpoint, whatever it claims."""
    return _limits(tuple(list_variants()))


@functools.lru_cache(maxsize=4)
def _limits(names: Tuple[str, ...]) -> CheckpointLimits:
    max_elems = max_total = max_keys = 0
    for name in names:
        shapes, _ = _layout(get_config(name))
        sizes = [math.prod(s) for _, s in shapes]
        max_elems = max(max_elems, max(sizes, default=0))
        max_total = max(max_total, sum(sizes))
        max_keys = max(max_keys, len(sizes))
    meta = max_keys * METADATA_BYTES_PER_KEY + METADATA_SLACK_BYTES
    return CheckpointLimits(
        max_tensor_elements=max_elems,
        max_storage_bytes=max_elems * _WIDEST_BYTES,
        max_total_bytes=max_total * _WIDEST_BYTES + meta,
        max_metadata_bytes=meta,
        max_members=max_keys + MEMBER_SLACK,
        max_tensors=max_keys + MEMBER_SLACK,
        max_total_elements=max_total + max_elems,
        max_directory_bytes=(max_keys + MEMBER_SLACK) * DIRECTORY_BYTES_PER_MEMBER,
    )


def _fmt_bytes(n: int, digits: int = 1) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.{digits}f} {unit}"
    return f"{n} B"


def _fmt_over(n: int, limit: int) -> Tuple[str, str]:
    """`n` and `limit` (n > limit) with enough decimals to tell them apart."""
    for digits in (1, 2, 3):
        a, b = _fmt_bytes(n, digits), _fmt_bytes(limit, digits)
        if a != b:
            return a, b
    return f"{n:,} bytes", f"{limit:,} bytes"


def _one_line(text: str, limit: int = 200) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _corrupt(path: str, detail: str) -> CheckpointError:
    return CheckpointError(f"{path!r} is not a readable torch checkpoint (truncated or corrupt?); "
                           f"download it again. ({_one_line(detail)})")


def _not_zip(path: str, head: bytes) -> CheckpointError:
    if head.startswith(_LEGACY_TORCH_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and head[1] <= 5):
        what = ("a legacy torch.save file (PyTorch < 1.6, or _use_new_zipfile_serialization=False)"
                if head.startswith(_LEGACY_TORCH_MAGIC) else "a bare pickle file")
        return CheckpointError(
            f"{path!r} is not a readable torch checkpoint: it is {what}, not the zip archive torch.save "
            "writes, and is refused unread (its contents cannot be checked before unpickling). If you "
            "trust it, re-save it with a current PyTorch: "
            "torch.save(torch.load('old.pt', weights_only=True), 'new.pt')")
    return CheckpointError(
        f"{path!r} is not a readable torch checkpoint: not a zip archive (it starts with {head[:12]!r}, "
        "a torch.save file with b'PK\\x03\\x04'): truncated, corrupt or not a checkpoint at all "
        "(an HTML error page?); download it again")


# ------------------------------------------------------------------ the archive, before torch.load
def check_archive(path: str, limits: Optional[CheckpointLimits] = None) -> None:
    """Refuse, before anything is unpickled or inflated, a file that is not a torch.save zip
    archive within `limits`, or one whose members fail their CRC-32 (streamed in bounded
    chunks: a member is never inflated past its declared size)."""
    lim = limits or checkpoint_limits()
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if not head.startswith(b"PK\x03\x04"):
                raise _not_zip(path, head)
            # The entry count of the end record, before zipfile builds one object per entry.
            end = zipfile._EndRecData(f) if hasattr(zipfile, "_EndRecData") else None
        if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > lim.max_members:
            raise _too_many(path, end[zipfile._ECD_ENTRIES_TOTAL], lim)
        if end is not None and end[zipfile._ECD_SIZE] > lim.max_directory_bytes:
            declared, most = _fmt_over(end[zipfile._ECD_SIZE], lim.max_directory_bytes)
            raise CheckpointError(f"{path!r} has a zip directory of {declared}, more than a SAM 2 checkpoint "
                                  f"needs (max {most}); refused unread")
        with zipfile.ZipFile(path) as zf:
            infos = _check_directory(path, zf, lim, os.path.getsize(path))
            _check_crcs(path, zf, infos)
    except CheckpointError:
        raise
    except OSError as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise CheckpointError(f"checkpoint {path!r} cannot be read: {e.strerror or e}") from None
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError,
            RuntimeError, OverflowError, IndexError, KeyError, UnicodeError, zlib.error) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None


def _too_many(path: str, n: int, lim: CheckpointLimits) -> CheckpointError:
    return CheckpointError(f"{path!r} holds {n} files, more than any SAM 2 checkpoint "
                           f"(max {lim.max_members}: one per tensor plus torch.save's own); refused unread")


def _check_directory(path: str, zf: zipfile.ZipFile, lim: CheckpointLimits, file_size: int) -> List[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > lim.max_members:
        raise _too_many(path, len(infos), lim)
    if not infos:
        raise _corrupt(path, "an empty zip archive")
    names = [i.filename for i in infos]
    prefix = names[0].split("/", 1)[0] + "/"
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise CheckpointError(f"{path!r} names the file {_one_line(repr(dup), 120)} twice; a torch.save archive never does "
                              "(two readers may pick different copies): refused")
    if any(not n.startswith(prefix) for n in names) or prefix + "data.pkl" not in names:
        raise CheckpointError(f"{path!r} is a zip archive but not a torch checkpoint (expected one folder "
                              f"with data.pkl and data/<n> storages, found {_one_line(str(names[:4]))})")
    total = deflated_in = deflated_out = 0
    for i in infos:
        rel = _one_line(i.filename[len(prefix):], 80)
        storage = rel.startswith("data/")
        what = f"storage {rel}" if storage else f"member {rel}"
        limit = lim.max_storage_bytes if storage else lim.max_metadata_bytes
        if i.flag_bits & 0x1:
            raise CheckpointError(f"{path!r}: {what} is encrypted; a torch checkpoint never is: refused")
        if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{path!r}: {what} uses zip compression method {i.compress_type}; torch "
                                  "reads only stored or deflated members: refused")
        if i.file_size > limit:
            need = "any SAM 2 variant needs" if storage else "a SAM 2 checkpoint's metadata needs"
            declared, most = _fmt_over(i.file_size, limit)
            raise CheckpointError(f"{path!r}: {what} declares {declared}, more than {need} "
                                  f"(max {most}); refused before inflating it")
        if i.compress_type == zipfile.ZIP_STORED and i.compress_size != i.file_size:
            raise _corrupt(path, f"{what} is stored ({i.compress_size} bytes) but declares {i.file_size} bytes")
        if i.compress_type == zipfile.ZIP_DEFLATED:
            ratio = i.file_size / max(i.compress_size, 1)
            if i.file_size > DEFLATE_RATIO_FLOOR_BYTES and ratio > MAX_DEFLATE_RATIO:
                raise CheckpointError(
                    f"{path!r}: {what} deflates {ratio:.0f}:1 ({_fmt_bytes(i.file_size)} from "
                    f"{_fmt_bytes(i.compress_size)}); weights deflate about 1.1:1, so this is a zip bomb, "
                    f"not a checkpoint (max {MAX_DEFLATE_RATIO:.0f}:1): refused before inflating it")
            deflated_in += i.compress_size
            deflated_out += i.file_size
        total += i.file_size
    if total > lim.max_total_bytes:
        declared, most = _fmt_over(total, lim.max_total_bytes)
        raise CheckpointError(f"{path!r} declares {declared} in all, more than the largest SAM 2 "
                              f"variant needs (max {most}); refused before inflating it")
    if deflated_out > lim.max_storage_bytes and deflated_out > MAX_ARCHIVE_DEFLATE_RATIO * deflated_in:
        raise CheckpointError(
            f"{path!r}: its deflated members inflate {deflated_out / max(deflated_in, 1):.0f}:1 "
            f"({_fmt_bytes(deflated_out)} from {_fmt_bytes(deflated_in)}); a zip bomb, not a checkpoint "
            f"(max {MAX_ARCHIVE_DEFLATE_RATIO:.0f}:1): refused before inflating it")
    # Members may not share bytes (overlapping entries multiply what a small file declares).
    spans = sorted((i.header_offset, i.compress_size, i.filename) for i in infos)
    ends = [off for off, _, _ in spans[1:]] + [zf.start_dir]
    for (off, size, name), nxt in zip(spans, ends):
        if off + size > nxt or nxt > file_size:
            raise _corrupt(path, f"{name[len(prefix):]} overlaps the next entry or runs past the end of the file")
    return infos


def _check_crcs(path: str, zf: zipfile.ZipFile, infos: List[zipfile.ZipInfo]) -> None:
    for i in infos:
        n = 0
        try:
            with zf.open(i) as m:  # zipfile checks the local header and, at the end, the CRC-32
                while True:
                    chunk = m.read(_CRC_CHUNK)  # never inflates past the declared size
                    if not chunk:
                        break
                    n += len(chunk)
        except zipfile.BadZipFile as e:
            if "CRC" in str(e):
                rel = _one_line(i.filename.split("/", 1)[-1], 80)
                what = f"storage {rel}" if rel.startswith("data/") else f"member {rel}"
                raise CheckpointError(
                    f"{path!r} is corrupt: {what} fails its CRC-32 check (its bytes are not the ones "
                    "torch.save wrote); download it again") from None
            raise
        if n != i.file_size:
            raise _corrupt(path, f"{i.filename} holds {n} bytes, not the {i.file_size} it declares")


# ------------------------------------------------------------------ reading the state dict
_GLOBAL_PATTERNS = (
    re.compile(r"GLOBAL ([\w.<>]+)"),  # "Unsupported global: GLOBAL io.open was not ..." / "unsupported GLOBAL x whose module"
    re.compile(r"call reduce for unrecognized function (.+?)(?: which belongs| *$)", re.M),
    re.compile(r"(?:create new object for|Can only build) .*? but got (.+?)$", re.M),
)


def _code_needed(e: BaseException) -> Optional[str]:
    """The global (class or function) a pickle asked for that weights_only refused, if that
    is why torch.load failed; None for other failures (garbage, truncation)."""
    if not isinstance(e, pickle.UnpicklingError):
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    for pat in _GLOBAL_PATTERNS:
        m = pat.search(text)
        if m:
            return _one_line(m.group(1), 120)
    if "Unsupported global" in text or "Unsupported class" in text:
        return "a global that is not allowed"
    return None


def _load(path: str, lim: CheckpointLimits):
    check_archive(path, lim)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as e:  # torch's readers raise many types on garbage (IndexError, KeyError, struct.error...)
        wanted = _code_needed(e)
        if wanted is not None:
            raise CheckpointError(
                f"{path!r} needs to run code to load ({wanted}): refused; a SAM 2 checkpoint is a plain "
                "state dict, so no code execution is needed (weights_only=True). Re-save it as "
                "{'model': state_dict} from a trusted copy") from None
        raise _corrupt(path, f"the reader failed with {type(e).__name__}") from None


def _check_tensor(path: str, key: str, v, lim: CheckpointLimits) -> bool:
    """Refuse `v` unless it is a dense floating-point CPU tensor of a plausible size (nothing is
    converted or read yet); False for an entry that is kept as it is instead of upcast."""
    where = f"{path!r}: entry {key!r}"
    if not isinstance(v, torch.Tensor):
        raise CheckpointError(f"{where} is not a tensor ({type(v).__name__}); not a SAM 2 checkpoint")
    if v.is_meta:
        raise CheckpointError(f"{where} is a meta tensor (a shape without data); a checkpoint must hold weights")
    if v.layout != torch.strided:
        raise CheckpointError(f"{where} is a {str(v.layout).replace('torch.', '')} tensor; SAM 2 weights are dense")
    if v.is_quantized:
        raise CheckpointError(f"{where} is a quantized tensor ({str(v.dtype).replace('torch.', '')}); "
                              "SAM 2 weights are float16, bfloat16, float32 or float64")
    if key.endswith(".num_batches_tracked") and v.dtype == torch.int64 and v.dim() == 0 and not v.is_meta:
        return False  # BatchNorm's step counter (EdgeTAM's RepViT trunk): an int64 scalar, unused in eval mode
    if v.dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{where} has dtype {str(v.dtype).replace('torch.', '')}; SAM 2 weights are "
                              "float16, bfloat16, float32 or float64")
    if v.device.type != "cpu":
        raise CheckpointError(f"{where} is on device {v.device.type!r}, not loaded to the CPU")
    if v.numel() > lim.max_tensor_elements:
        raise CheckpointError(f"{where} has {v.numel():,} elements (shape {tuple(v.shape)}), more than any "
                              f"SAM 2 variant's largest tensor ({lim.max_tensor_elements:,})")
    return True


def _finite_float32(path: str, key: str, v: torch.Tensor) -> torch.Tensor:
    """`v` (checked by `_check_tensor`) as float32, refused if any element is not finite."""
    where = f"{path!r}: entry {key!r}"
    f = v.detach().float()  # float64 beyond float32's range becomes inf here, and is refused with the rest
    # The sum is finite when every element is (or it overflowed: then the element scan finds none);
    # it reads the tensor once and allocates nothing. numpy's sum is single-threaded: torch's
    # parallel one is 50x slower on a CPU shared with other processes. Only a suspect tensor is
    # scanned element-wise.
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(f.numpy().sum()) if f.numel() else 0.0
    if not math.isfinite(total):
        bad = ~torch.isfinite(f)
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise CheckpointError(
                f"{where} holds non-finite values ({int(bad.sum()):,} of {f.numel():,}; the first, at index "
                f"{list(idx)}, is {v[idx].item()!r}{'' if v.dtype != torch.float64 else ' in float64'}); "
                "a usable checkpoint has finite float32 weights")
    return f


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The checkpoint's float32 state dict, or a CheckpointError that says what is wrong."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty; download it again")
    lim = checkpoint_limits()
    if _is_safetensors(path):  # a student of `sam2-edge distill` (or any safetensors state dict)
        return {RENAMES.get(k, k): v for k, v in _read_safetensors(path, lim).items()}
    obj = _load(path, lim)
    if not isinstance(obj, dict) or "model" not in obj or not isinstance(obj["model"], dict):
        raise CheckpointError(f"{path!r} is not a SAM 2 checkpoint: expected a dict with a 'model' state dict")
    model = obj["model"]
    for k in model:
        if not isinstance(k, str):
            raise CheckpointError(f"{path!r}: the state dict has a key {_one_line(repr(k), 80)} of type {type(k).__name__}; "
                                  "a SAM 2 state dict is keyed by parameter names (strings) only")
    if len(model) > lim.max_tensors:
        raise CheckpointError(f"{path!r}: the state dict holds {len(model):,} entries, more than any SAM 2 "
                              f"variant has (max {lim.max_tensors:,})")
    upcast = {k: _check_tensor(path, k, v, lim) for k, v in model.items()}
    # Views (stride 0, shared storages) let a small file describe many elements: bound them
    # all before anything is upcast (the upcast materialises them).
    total = sum(v.numel() for v in model.values())
    if total > lim.max_total_elements:
        raise CheckpointError(f"{path!r}: its tensors hold {total:,} elements in all, more than any SAM 2 "
                              f"variant (max {lim.max_total_elements:,}; views of shared storage count in full)")
    return {RENAMES.get(k, k): _finite_float32(path, k, v) if upcast[k] else v for k, v in model.items()}


# ------------------------------------------------------------------ safetensors (distilled students)
_ST_DTYPES = {"F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2), "F32": (torch.float32, 4),
              "F64": (torch.float64, 8)}


def _is_safetensors(path: str) -> bool:
    if path.lower().endswith(".safetensors"):
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def safetensors_header(path: str, lim: Optional[CheckpointLimits] = None) -> dict:
    """The JSON header of a safetensors file, checked against `lim` before any tensor is read:
    bounded size, float dtypes only, offsets inside the file, element counts within the limits."""
    import json
    import struct

    lim = lim or checkpoint_limits()
    size = os.path.getsize(path)
    if size > lim.max_total_bytes:
        over, most = _fmt_over(size, lim.max_total_bytes)
        raise CheckpointError(f"{path!r} is {over}, more than the largest SAM 2 variant needs (max {most})")
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n < 2 or n > lim.max_metadata_bytes or 8 + n > size:
            raise _corrupt(path, f"safetensors header length {n} (file {size} bytes, max {lim.max_metadata_bytes})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeError, ValueError) as e:
            raise _corrupt(path, f"safetensors header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "safetensors header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _corrupt(path, "safetensors __metadata__ must map strings to strings")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > lim.max_tensors:
        raise CheckpointError(f"{path!r}: the state dict holds {len(entries):,} entries, more than any SAM 2 "
                              f"variant has (max {lim.max_tensors:,})")
    total = 0
    for k, e in entries.items():
        where = f"{path!r}: entry {_one_line(k, 80)!r}"
        if not isinstance(e, dict) or e.get("dtype") not in _ST_DTYPES:
            dt = e.get("dtype") if isinstance(e, dict) else e
            raise CheckpointError(f"{where} has dtype {_one_line(str(dt), 40)}; SAM 2 weights are "
                                  "float16, bfloat16, float32 or float64")
        shape, offs = e.get("shape"), e.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)):
            raise _corrupt(path, f"entry {_one_line(k, 80)} has a malformed shape or data_offsets")
        numel = math.prod(shape)
        if numel > lim.max_tensor_elements:
            raise CheckpointError(f"{where} has {numel:,} elements (shape {tuple(shape)}), more than any SAM 2 "
                                  f"variant's largest tensor ({lim.max_tensor_elements:,})")
        if offs[1] - offs[0] != numel * _ST_DTYPES[e["dtype"]][1] or offs[0] < 0 or 8 + n + offs[1] > size:
            raise _corrupt(path, f"entry {_one_line(k, 80)}: its data_offsets do not fit its shape or the file")
        total += numel
    if total > lim.max_total_elements:
        raise CheckpointError(f"{path!r}: its tensors hold {total:,} elements in all, more than any SAM 2 "
                              f"variant (max {lim.max_total_elements:,})")
    return header


def safetensors_metadata(path: str) -> Dict[str, str]:
    """The `__metadata__` of a safetensors checkpoint ({} for a .pt file)."""
    if not os.path.isfile(path) or not _is_safetensors(path):
        return {}
    return dict(safetensors_header(path).get("__metadata__", {}))


def _read_safetensors(path: str, lim: CheckpointLimits) -> Dict[str, torch.Tensor]:
    safetensors_header(path, lim)
    try:
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise CheckpointError(f"{path!r} is a safetensors file: pip install 'safetensors>=0.4'") from None
    try:
        sd = load_file(path, device="cpu")
    except Exception as e:  # noqa: BLE001 - the parser's own errors on a corrupt file
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None
    return {k: _finite_float32(path, k, v) if _check_tensor(path, k, v, lim) else v for k, v in sd.items()}


@functools.lru_cache(maxsize=None)
def _layout(cfg: ModelConfig) -> Tuple[Tuple[Tuple[str, Tuple[int, ...]], ...], frozenset]:
    with torch.device("meta"):
        model = SAM2Model(cfg)
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return shapes, frozenset(k for k, _ in model.named_parameters())


def expected_shapes(cfg: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Official key -> shape of a variant (built once on the meta device, cached)."""
    return dict(_layout(cfg)[0])


def parameter_names(cfg: ModelConfig) -> frozenset:
    """State-dict keys that are learnable parameters (not buffers such as the random-Fourier matrix)."""
    return _layout(cfg)[1]


def match_variant(sd: Dict[str, torch.Tensor]) -> Optional[str]:
    """The registered variant whose keys and shapes equal the state dict's, if any."""
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for name in list_variants():
        if expected_shapes(get_config(name)) == shapes:
            return name
    return None


def check_state_dict(sd: Dict[str, torch.Tensor], cfg: ModelConfig, path: str) -> None:
    exp = expected_shapes(cfg)
    missing = sorted(set(exp) - set(sd))
    unexpected = sorted(set(sd) - set(exp))
    wrong = sorted(k for k in set(exp) & set(sd) if tuple(sd[k].shape) != exp[k])
    if not (missing or unexpected or wrong):
        return
    other = match_variant(sd)
    if other is not None:
        raise CheckpointError(f"{path!r} is a {other!r} checkpoint, not {cfg.name!r}; "
                              f"pass variant={other!r} (or leave the variant out to infer it)")
    if not any(k.startswith("image_encoder.trunk.") for k in sd):
        raise CheckpointError(f"{path!r} is not a SAM 2 checkpoint (no image_encoder.trunk.* weights)")
    detail = []
    if missing:
        detail.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        detail.append("shape mismatch: " + ", ".join(f"{k} {tuple(sd[k].shape)} vs {exp[k]}" for k in wrong[:3]))
    raise CheckpointError(f"{path!r} does not fit variant {cfg.name!r}: " + "; ".join(detail))


def checkpoint_variant(path: str, sd: Dict[str, torch.Tensor]) -> str:
    """The variant of checkpoint `path` (state dict `sd`): the one a student's safetensors names
    in its metadata (sam2.1-hiera-tiny-512 has tiny's shapes), else the one its keys and shapes
    match; CheckpointError when none."""
    variant = safetensors_metadata(path).get("variant")
    variant = variant if variant in list_variants() else match_variant(sd)
    if variant is None:
        if not any(k.startswith("image_encoder.trunk.") for k in sd):
            raise CheckpointError(f"{path!r} is not a SAM 2 checkpoint (no image_encoder.trunk.* weights)")
        raise CheckpointError(f"{path!r} matches no known variant ({', '.join(list_variants())}); "
                              "its keys or shapes differ from every official layout")
    return variant


def load_checkpoint(path: str, variant: Optional[str] = None,
                    image_size: Optional[int] = None) -> Tuple[SAM2Model, ModelConfig]:
    sd = read_state_dict(path)
    if variant is None:
        variant = checkpoint_variant(path, sd)
    cfg = get_config(variant)
    check_state_dict(sd, cfg, path)
    if image_size is not None and image_size != cfg.image_size:
        cfg = cfg.with_image_size(image_size)
    model = SAM2Model(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()
    log.info("loaded %s (%s) from %s", cfg.name, f"SAM {cfg.version}", path)
    return model, cfg


def build_sam2(variant: Optional[str] = None, checkpoint: Optional[str] = None, device: str = "cpu",
               image_size: Optional[int] = None) -> SAM2Model:
    """A SAM 2 model in eval mode: from an official checkpoint (variant inferred when not
    given) or, without a checkpoint, with random weights of the named variant.

    As in the official `build_sam2(config, ckpt)`, the first argument may also be the
    checkpoint itself: `build_sam2("sam2.1_hiera_tiny.pt")` infers the variant from it."""
    if checkpoint is None and isinstance(variant, (str, os.PathLike)) and str(variant) not in list_variants():
        text = os.fspath(variant)
        if os.path.exists(text) or text.lower().endswith((".pt", ".pth", ".ckpt", ".safetensors")):
            variant, checkpoint = None, text  # a checkpoint given positionally
        else:
            raise ConfigError(f"{text!r} is neither a registered variant ({', '.join(list_variants())}) nor a "
                              "checkpoint file; give build_sam2(checkpoint='path.pt') or a variant name")
    if checkpoint is not None:
        model, _ = load_checkpoint(checkpoint, variant, image_size)
    else:
        if variant is None:
            raise CheckpointError("give a checkpoint, or a variant to build with random weights")
        cfg = get_config(variant)
        if image_size is not None:
            cfg = cfg.with_image_size(image_size)
        model = SAM2Model(cfg).eval()
    return model.to(device)
