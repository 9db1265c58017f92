"""The contract between the tracker and the four stage graphs: names, shapes and dtypes of
every input and output, and the ring-buffer capacities. Standard library only; shared by the
torch stages, the exporters (manifest) and every runtime backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .codes import MAX_CLICKS

STAGES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
# The stages that run once per object. A bundle may hold, besides their batch-1 graph, graphs
# for a batch of B objects ("<stage>@<B>": every per-object input and output has B rows, the
# frame's features stay batch 1 and are shared), so a frame with N objects makes a few calls
# per stage instead of N (see `split_objects`).
OBJECT_STAGES = ("memory_attention", "mask_decoder", "memory_encoder")
MAX_OBJ_BATCH = 64

# The range of every TrackerSpec number (inclusive). A bundle's manifest is checked against
# these before anything is allocated, and the tracker's own arguments use the same ranges.
SPEC_LIMITS: Dict[str, Tuple[int, int]] = {
    "image_size": (64, 2048),  # a multiple of 16; released models 1024, students 512
    "d_model": (8, 1024),  # a multiple of mem_dim
    "mem_dim": (4, 512),
    "num_maskmem": (2, 16),  # the released models: 7
    "cond_slots": (1, 64),
    "ptr_recent": (1, 64),  # the released models: 15
    "max_clicks": (1, 64),
    # memory tokens per frame: 0 = SAM 2's spatial map (mem_dim x f x f); EdgeTAM's perceiver: 512
    "mem_tokens": (0, 65536),
}
# fields a bundle written before they existed may lack: the default keeps the layout it was written with
SPEC_DEFAULTS: Dict[str, int] = {"mem_tokens": 0}
# one object's rings (memories + pointers, float32) may not exceed this
MAX_RING_BYTES = 1 << 30


def spec_problem(values: Dict[str, int]) -> Optional[str]:
    """None when `values` (TrackerSpec fields) are in range and consistent, else what is wrong."""
    values = {**SPEC_DEFAULTS, **values}
    for key, (lo, hi) in SPEC_LIMITS.items():
        v = values.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"{key} must be an integer {lo}..{hi}, got {v!r:.40}"
    if values["image_size"] % 16:
        return f"image_size {values['image_size']} is not a multiple of 16"
    if values["d_model"] % values["mem_dim"]:
        return f"d_model {values['d_model']} is not a multiple of mem_dim {values['mem_dim']}"
    f = values["image_size"] // 16
    tokens = values["mem_tokens"] or f * f
    ring = 4 * ((values["cond_slots"] + values["num_maskmem"] - 1) * values["mem_dim"] * tokens
                + (values["cond_slots"] + values["ptr_recent"]) * values["d_model"])
    if ring > MAX_RING_BYTES:
        return f"one object's memory rings would take {ring / 2**20:.0f} MiB (at most {MAX_RING_BYTES >> 20} MiB)"
    return None


def obj_batches_problem(batches) -> Optional[str]:
    """None when `batches` (the object batch sizes a bundle has graphs for) is valid: a strictly
    increasing list of integers 1..MAX_OBJ_BATCH that starts with 1."""
    if not isinstance(batches, (list, tuple)) or not batches:
        return f"obj_batches must be a non-empty list of integers, got {batches!r:.60}"
    if any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_OBJ_BATCH for b in batches):
        return f"obj_batches must be integers 1..{MAX_OBJ_BATCH}, got {list(batches)!r:.60}"
    if batches[0] != 1 or any(a >= b for a, b in zip(batches, batches[1:])):
        return f"obj_batches must start with 1 and increase strictly, got {list(batches)!r:.60}"
    return None


def split_objects(n: int, batches: Sequence[int]) -> List[int]:
    """How N objects are run with graphs for the batch sizes `batches` (which contain 1): the
    largest batch that fits, repeatedly -- no padding rows, so no wasted compute
    (e.g. N = 7 with (1, 2, 4) -> [4, 2, 1]). An empty list for N = 0."""
    out: List[int] = []
    sizes = sorted(set(batches), reverse=True)
    assert sizes and sizes[-1] == 1, "obj_batches must contain 1"
    while n > 0:
        b = next(b for b in sizes if b <= n)
        out.append(b)
        n -= b
    return out


def graph_key(stage: str, batch: int = 1) -> str:
    """The manifest / backend key of `stage`'s graph for a batch of `batch` objects."""
    return stage if batch == 1 else f"{stage}@{batch}"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[int, ...]
    dtype: str  # numpy dtype name: float32 / int32


@dataclass(frozen=True)
class TrackerSpec:
    """Static shapes of one model's stages and its ring-buffer capacities."""

    image_size: int
    d_model: int
    mem_dim: int
    num_maskmem: int = 7
    cond_slots: int = 2  # conditioning (prompted) frames kept; the official rule keeps the closest
    ptr_recent: int = 15  # max_obj_ptrs_in_encoder - 1 previous frames' pointers
    max_clicks: int = MAX_CLICKS
    # Memory layout of one frame. 0: SAM 2's spatial map, a frame is [mem_dim, f, f]; N > 0: N
    # memory tokens (EdgeTAM: 256 global + 256 2-D perceiver latents), a frame is [N, mem_dim].
    mem_tokens: int = 0
    # object batch sizes the per-object stages have graphs for (always 1; e.g. (1, 2, 4))
    obj_batches: Tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "obj_batches", tuple(self.obj_batches))
        problem = obj_batches_problem(self.obj_batches)
        if problem:
            raise ValueError(problem)

    def graph_keys(self) -> Tuple[str, ...]:
        """Every graph of a bundle with this spec: the four stages, then the batched ones."""
        return STAGES + tuple(graph_key(s, b) for b in self.obj_batches[1:] for s in OBJECT_STAGES)

    @staticmethod
    def parse_key(key: str) -> Tuple[str, int]:
        """graph key -> (stage, batch)."""
        stage, _, b = key.partition("@")
        return stage, int(b) if b else 1

    @property
    def mem_frame_shape(self) -> Tuple[int, ...]:
        """Shape of one frame's memory: [m, f, f] (spatial) or [mem_tokens, m] (latent tokens)."""
        if self.mem_tokens:
            return (self.mem_tokens, self.mem_dim)
        return (self.mem_dim, self.feat_size, self.feat_size)

    @property
    def feat_size(self) -> int:
        return self.image_size // 16

    @property
    def lowres(self) -> int:
        return self.image_size // 4

    @property
    def recent_slots(self) -> int:
        return self.num_maskmem - 1

    @property
    def mem_slots(self) -> int:
        return self.cond_slots + self.recent_slots

    @property
    def ptr_slots(self) -> int:
        return self.cond_slots + self.ptr_recent

    @property
    def prompt_points(self) -> int:
        return self.max_clicks + 3  # clicks + two box corners + the official padding point

    def to_dict(self) -> dict:
        """The manifest's `spec`. A field still at its SPEC_DEFAULTS value is left out, so a SAM 2
        bundle's manifest is what it was before the field existed (older readers open it), and a
        bundle that needs the field (EdgeTAM) is refused by them with "upgrade sam2-edge"."""
        d = {k: v for k, v in asdict(self).items() if not (k in SPEC_DEFAULTS and v == SPEC_DEFAULTS[k])}
        if self.obj_batches == (1,):  # a bundle without batched graphs: the manifest older readers know
            del d["obj_batches"]
        else:
            d["obj_batches"] = list(self.obj_batches)
        return d

    def graph_io(self) -> Dict[str, Tuple[Tuple[TensorSpec, ...], Tuple[TensorSpec, ...]]]:
        """`io` of every graph key (`graph_keys`)."""
        out = dict(self.io())
        for b in self.obj_batches[1:]:
            batched = self.io(b)
            out.update({graph_key(s, b): batched[s] for s in OBJECT_STAGES})
        return out

    def io(self, batch: int = 1) -> Dict[str, Tuple[Tuple[TensorSpec, ...], Tuple[TensorSpec, ...]]]:
        """Inputs and outputs of each stage; with `batch` B, the per-object stages' for B objects
        (the frame's features -- vision_feats, vision_pos, feat_s0, feat_s1 -- stay batch 1)."""
        S, C, f, lo = self.image_size, self.d_model, self.feat_size, self.lowres
        M, P, N, B = self.mem_slots, self.ptr_slots, self.prompt_points, batch
        frame = self.mem_frame_shape
        t = TensorSpec
        feats = t("vision_feats", (1, C, f, f), "float32")
        s0 = t("feat_s0", (1, C // 8, 4 * f, 4 * f), "float32")
        s1 = t("feat_s1", (1, C // 4, 2 * f, 2 * f), "float32")
        return {
            "image_encoder": ((t("image", (1, 3, S, S), "float32"),),
                              (s0, s1, feats, t("vision_pos", (1, C, f, f), "float32"))),
            "memory_attention": ((feats, t("vision_pos", (1, C, f, f), "float32"),
                                  t("memory", (B, M) + frame, "float32"), t("mem_tpos", (B, M), "int32"),
                                  t("mem_valid", (B, M), "float32"), t("obj_ptrs", (B, P, C), "float32"),
                                  t("ptr_dist", (B, P), "float32"), t("ptr_valid", (B, P), "float32")),
                                 (t("pix_feat", (B, C, f, f), "float32"),)),
            "mask_decoder": ((t("pix_feat", (B, C, f, f), "float32"), s0, s1,
                              t("point_coords", (B, N, 2), "float32"), t("point_labels", (B, N), "int32"),
                              t("mask_lowres", (B, 1, lo, lo), "float32"), t("mask_full", (B, 1, S, S), "float32"),
                              t("mask_mode", (B,), "int32"), t("multimask", (B,), "int32"),
                              t("ptr_gate", (B,), "float32"), t("add_no_mem", (B,), "int32")),
                             (t("low_res", (B, 1, lo, lo), "float32"), t("iou", (B, 1), "float32"),
                              t("obj_ptr", (B, C), "float32"), t("obj_score", (B, 1), "float32"))),
            "memory_encoder": ((feats, t("low_res", (B, 1, lo, lo), "float32"), t("obj_score", (B, 1), "float32"),
                                t("binarize", (B,), "int32")),
                               (t("maskmem", (B,) + frame, "float32"),)),
        }
