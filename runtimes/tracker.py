"""The streaming tracker: frames arrive one at a time, prompts only for the current frame,
objects may start on any frame, memory is a fixed-size ring per object. Gives the masks the
official `SAM2VideoPredictor` gives when driven frame by frame (see the goldens' README).

numpy + a backend only. The tracker holds a backend; the backend only runs graphs.
"""

from __future__ import annotations

import logging
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, InputError, StateError
from ..prompts import check_image, prompt_points
from . import preprocess
from .backends.base import Backend
from .memory import ObjectMemory, round_bf16
from ..contract import LABEL_ABSENT, LABEL_NOT_A_POINT, MASK_FULL_BINARY, MASK_LOWRES_LOGITS, MASK_NONE, TrackerSpec
from ..contract.spec import graph_key, spec_problem, split_objects

log = logging.getLogger(__name__)


@dataclass
class StageTimings:
    """Milliseconds spent per stage during one tracker call."""

    image_encoder: float = 0.0
    memory_attention: float = 0.0
    mask_decoder: float = 0.0
    memory_encoder: float = 0.0
    total: float = 0.0


@dataclass
class TrackResult:
    frame_index: int
    object_ids: List[int]
    masks: np.ndarray  # [N, H, W] bool
    mask_logits: np.ndarray  # [N, H, W] float32 at frame resolution
    object_scores: np.ndarray  # [N] float32
    low_res_logits: np.ndarray  # [N, S/4, S/4] float32 model-resolution logits
    timings: StageTimings = field(default_factory=StageTimings)


@dataclass
class FrameOutput:
    """One object's output on the current frame, before its memory is encoded."""

    frame: int
    low_res: np.ndarray  # [1, 1, S/4, S/4]
    obj_score: np.ndarray  # [1, 1]
    obj_ptr: np.ndarray  # [1, C]
    is_cond: bool  # an initial conditioning frame (prompted before it was tracked)
    binarize: bool  # memory from the binarised mask (prompted / corrected frames)
    mem_encoded: bool = False


@dataclass
class ObjectState:
    obj_id: int
    first_frame: int
    memory: ObjectMemory
    current: Optional[FrameOutput] = None


@dataclass(frozen=True)
class PreparedFrame:
    """A frame whose model input was computed ahead by `Tracker.prepare` (e.g. on a reader
    thread while the model works on the previous frame); `track` / `add_prompt` take it in
    place of the frame. `shape` is the frame's, so code reading `frame.shape` works on both."""

    rgb: np.ndarray  # [H, W, 3] uint8, the frame
    image: np.ndarray  # [1, 3, S, S] float32, the normalised model input
    image_size: int  # S it was prepared for

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.rgb.shape


@dataclass
class FrameFeatures:
    """Image-encoder outputs of the current frame (preallocated once, overwritten per frame)."""

    index: int
    hw: Tuple[int, int]
    feat_s0: np.ndarray
    feat_s1: np.ndarray
    vision_feats: np.ndarray
    vision_pos: np.ndarray


class Tracker:
    def __init__(self, backend: Backend) -> None:
        spec = getattr(backend, "spec", None)
        if not isinstance(spec, TrackerSpec) or not callable(getattr(backend, "run", None)):
            raise ConfigError(f"Tracker(backend) takes a backend (a .spec TrackerSpec and a .run(stage, inputs)), "
                              f"got {type(backend).__name__}; use Tracker.from_checkpoint(...) or "
                              "Tracker.from_bundle(...)")
        problem = spec_problem(spec.to_dict())
        if problem:
            raise ConfigError(f"the backend's tracker spec is invalid: {problem}")
        self.backend = backend
        self.spec: TrackerSpec = backend.spec
        self._objects: Dict[int, ObjectState] = {}
        self._frame: Optional[FrameFeatures] = None
        self._next_index = 0
        self._hw: Optional[Tuple[int, int]] = None
        s = self.spec
        self._image = np.zeros((1, 3, s.image_size, s.image_size), np.float32)
        self._zeros_full = np.zeros((1, 1, s.image_size, s.image_size), np.float32)
        self._zeros_low = np.zeros((1, 1, s.lowres, s.lowres), np.float32)
        self._timings = StageTimings()
        self._no_prompt: Dict[int, Tuple[np.ndarray, ...]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path: str, variant: Optional[str] = None, backend: str = "torch",
                        device: str = "cpu", image_size: Optional[int] = None, cond_slots: int = 2,
                        dtype: str = "fp32", static_memory: bool = False) -> "Tracker":
        """A tracker running `path` (an official checkpoint) with the torch backend. Every
        argument is checked before the checkpoint is read: ConfigError for a device this
        machine lacks, cond_slots / image_size out of the contract's range or of another type,
        dtype "bf16" where the device has no native bf16. Memory attention runs over the
        memories that exist (static_memory=True: over every slot, masked, as the bundles do)."""
        if backend != "torch":
            raise InputError(f"from_checkpoint runs the torch backend; for {backend!r:.40} export a bundle "
                             "(sam2-edge export) and use Tracker.from_bundle")
        from .backends.torch_backend import TorchBackend

        return cls(TorchBackend.from_checkpoint(path, variant, device, image_size, cond_slots, dtype, static_memory))

    @classmethod
    def from_bundle(cls, bundle_dir: str, backend: Optional[str] = None, **options) -> "Tracker":
        """A tracker running an exported bundle; `options` go to `open_bundle`: trusted_keys=[KEY.pub, ...]
        (refuse bundles not signed by one of them), require_signature, isolate (smoke-run the graphs in a
        child process first; default on for bundles without a trusted signature), and the backend's own
        (onnxruntime: providers=..., threads=N; executorch: threads=N), checked before the bundle loads."""
        if isinstance(bundle_dir, bool) or not isinstance(bundle_dir, (str, os.PathLike)):
            raise ConfigError(f"bundle_dir must be a folder path, got {bundle_dir!r:.60}")
        if backend is not None and not isinstance(backend, str):
            raise ConfigError(f"backend must be a name (str) or None, got {backend!r:.60}")
        threads = options.get("threads")
        if threads is not None and (isinstance(threads, (bool, np.bool_)) or not isinstance(threads, numbers.Integral)
                                    or threads < 0):
            raise ConfigError(f"threads must be a non-negative integer (0 or None: the runtime's default), "
                              f"got {threads!r:.40}")
        from .bundle_backends import open_bundle

        return cls(open_bundle(bundle_dir, backend, **options))

    # ------------------------------------------------------------------ public API
    @property
    def object_ids(self) -> List[int]:
        return list(self._objects)

    @property
    def frame_index(self) -> int:
        return -1 if self._frame is None else self._frame.index

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the tracker's buffers (constant once the objects' rings exist)."""
        n = self._image.nbytes + self._zeros_full.nbytes + self._zeros_low.nbytes
        n += sum(a.nbytes for inputs in self._no_prompt.values() for a in inputs)
        if self._frame is not None:
            f = self._frame
            n += f.feat_s0.nbytes + f.feat_s1.nbytes + f.vision_feats.nbytes + f.vision_pos.nbytes
        for o in self._objects.values():
            n += o.memory.nbytes
            if o.current is not None:
                n += o.current.low_res.nbytes + o.current.obj_ptr.nbytes + o.current.obj_score.nbytes
        return int(n)

    def prepare(self, frame: np.ndarray) -> PreparedFrame:
        """The model input of `frame` (HxWx3 uint8 RGB), computed now: thread-safe (reads only the
        spec), so a reader thread can prepare frame t+1 while `track` runs on frame t."""
        check_image(frame, "frame")
        s = self.spec.image_size
        small = preprocess.resize_bicubic_pil(frame, s)
        image = preprocess.normalize_video(small, out=np.empty((1, 3, s, s), np.float32))
        return PreparedFrame(frame, image, s)

    def reset(self) -> None:
        self._objects.clear()
        self._frame = None
        self._next_index = 0
        self._hw = None

    def remove_object(self, obj_id: int) -> None:
        obj_id = self._check_obj_id(obj_id)
        if obj_id not in self._objects:
            raise InputError(f"unknown object id {obj_id}; known ids: {self.object_ids}")
        del self._objects[obj_id]

    def track(self, frame: np.ndarray) -> TrackResult:
        """Track every object on a new frame (HxWx3 uint8 RGB, or a `prepare`d frame)."""
        self._check_frame(frame)
        if not self._objects:
            raise StateError("track() needs at least one object: call add_prompt(frame, obj_id, ...) first")
        t0 = self._start()
        self._new_frame(frame)
        self._track_objects(list(self._objects.values()))
        return self._result(t0)

    def add_prompt(self, frame: Optional[np.ndarray], obj_id: int, points=None, labels=None, box=None,
                   mask=None) -> TrackResult:
        """Prompt object `obj_id` (new or existing) on a new frame (`frame` array; every other
        object is tracked on it too) or on the current frame (`frame=None`).

        On a frame the object has not been tracked on, the prompt makes an initial
        conditioning frame; on a frame it has been tracked on, it is a correction (memory
        attention as for tracking, the previous logits as mask prompt). Points and box are
        pixels of the frame; mask is an HxW bool array (an all-False mask = object absent).
        """
        obj_id = self._check_obj_id(obj_id)
        if frame is not None:
            self._check_frame(frame)
            hw = (int(frame.shape[0]), int(frame.shape[1]))
        else:
            if self._frame is None:
                raise StateError("no current frame: pass the frame to add_prompt(frame, ...)")
            hw = self._frame.hw
        prompt = self._check_prompt(hw, points, labels, box, mask)
        t0 = self._start()
        if frame is not None:
            self._new_frame(frame)
        obj = self._objects.get(obj_id)
        if obj is None:
            obj = ObjectState(obj_id, self._frame.index, ObjectMemory(self.spec))
            self._objects[obj_id] = obj
        self._prompt_object(obj, prompt)
        if frame is not None:
            self._track_objects([other for other in self._objects.values() if other is not obj])
        return self._result(t0)

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_obj_id(obj_id) -> int:
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise InputError(f"obj_id must be an integer, got {obj_id!r}")
        return int(obj_id)

    def _check_frame(self, frame) -> None:
        if isinstance(frame, PreparedFrame):
            if frame.image_size != self.spec.image_size or frame.image.shape != self._image.shape:
                raise InputError(f"the frame was prepared for a {frame.image_size}-px model, this tracker's is "
                                 f"{self.spec.image_size} px; prepare it with this tracker's prepare()")
            frame = frame.rgb
        check_image(frame, "frame")
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        if self._hw is not None and hw != self._hw:
            raise InputError(f"frame resolution changed mid-stream from {self._hw[1]}x{self._hw[0]} to "
                             f"{hw[1]}x{hw[0]}; call reset() before a stream of another resolution")

    def _check_prompt(self, hw, points, labels, box, mask):
        if mask is not None:
            if points is not None or labels is not None or box is not None:
                raise InputError("give either a mask or points/box, not both")
            m = np.asarray(mask)
            if m.shape != hw:
                raise InputError(f"mask must have the frame's shape {hw}, got {m.shape}")
            if m.dtype != np.bool_:
                if not np.issubdtype(m.dtype, np.number):
                    raise InputError(f"mask must be a bool (or 0/1) array, got dtype {m.dtype}")
                if not np.isfinite(m).all():
                    raise InputError("mask contains NaN or inf; give a bool array (True = object)")
                m = m > 0.5 if np.issubdtype(m.dtype, np.floating) else m != 0
            return ("mask", m.astype(bool))
        coords, labs = prompt_points(points, labels, box, hw, True, self.spec.image_size)
        if coords.shape[0] > self.spec.max_clicks + 2:
            raise InputError(f"at most {self.spec.max_clicks} clicks plus a box per prompt")
        return ("points", (coords, labs))

    # ------------------------------------------------------------------ internals
    def _start(self) -> float:
        self._timings = StageTimings()
        return time.perf_counter()

    def _run(self, stage: str, inputs, batch: int = 1):
        """Run `stage`'s graph for a batch of `batch` objects (per-object stages only)."""
        t = time.perf_counter()
        out = self.backend.run(graph_key(stage, batch), inputs)
        setattr(self._timings, stage, getattr(self._timings, stage) + (time.perf_counter() - t) * 1e3)
        return out

    def _batches(self, objs: List[ObjectState]) -> List[List[ObjectState]]:
        """`objs` split into the object batches the backend runs in one call each."""
        out, i = [], 0
        plan = getattr(self.backend, "object_batches", None)  # a duck-typed backend: the spec's batches
        for b in plan(len(objs)) if plan is not None else split_objects(len(objs), self.spec.obj_batches):
            out.append(objs[i:i + b])
            i += b
        assert i == len(objs), "object_batches must cover every object"
        return out

    def _flush_memories(self) -> None:
        """Encode the memory of each object's output on the current frame (the official code
        does this when tracking moves on), then commit it to the object's ring. All objects
        of a batch in one memory-encoder call."""
        if self._frame is None:
            return
        todo = [o for o in self._objects.values()
                if o.current is not None and not o.current.mem_encoded and o.current.frame == self._frame.index]
        for group in self._batches(todo):
            cur = [o.current for o in group]
            (maskmem,) = self._run("memory_encoder", (  # [B, 1, S/4, S/4] masks -> [B, *frame] memories
                self._frame.vision_feats, np.concatenate([c.low_res for c in cur]),
                np.concatenate([c.obj_score for c in cur]), np.array([int(c.binarize) for c in cur], np.int32)),
                len(group))
            for r, (obj, c) in enumerate(zip(group, cur)):
                obj.memory.commit(c.frame, round_bf16(maskmem[r]), c.obj_ptr[0], c.is_cond)
                c.mem_encoded = True

    def _new_frame(self, frame: np.ndarray) -> None:
        self._flush_memories()
        s = self.spec
        if isinstance(frame, PreparedFrame):  # model input computed ahead (another thread)
            self._image[...] = frame.image
        else:
            small = preprocess.resize_bicubic_pil(frame, s.image_size)
            preprocess.normalize_video(small, out=self._image)
        s0, s1, feats, pos = self._run("image_encoder", (self._image,))
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        self._frame = FrameFeatures(self._next_index, hw, s0, s1, feats, pos)
        self._hw = hw
        self._next_index += 1

    def _points_input(self, coords: Optional[np.ndarray], labels: Optional[np.ndarray]):
        n = self.spec.prompt_points
        pc = np.zeros((1, n, 2), np.float32)
        pl = np.full((1, n), LABEL_ABSENT, np.int32)
        k = 0
        if coords is None or coords.shape[0] == 0:
            pl[0, 0] = LABEL_NOT_A_POINT  # the model's own (0, 0, -1) point when no clicks
            k = 1
        else:
            k = coords.shape[0]
            pc[0, :k] = coords
            pl[0, :k] = labels
        pl[0, k] = LABEL_NOT_A_POINT  # the prompt encoder's padding point
        return pc, pl

    def _decode(self, pix_feat, coords, labels, mask_mode: int, mask_low, mask_full, multimask: bool,
                ptr_gate: float, add_no_mem: bool):
        """One object's mask decoder call with a prompt (batch 1)."""
        f = self._frame
        pc, pl = self._points_input(coords, labels)
        return self._run("mask_decoder", (pix_feat, f.feat_s0, f.feat_s1, pc, pl, mask_low, mask_full,
                                          np.array([mask_mode], np.int32), np.array([int(multimask)], np.int32),
                                          np.array([ptr_gate], np.float32), np.array([int(add_no_mem)], np.int32)))

    def _memory_attention(self, objs: List[ObjectState]) -> np.ndarray:
        """Memory-conditioned features of a batch of objects: [B, C, f, f]."""
        f = self._frame
        fills = [o.memory.fill_inputs(f.index) for o in objs]

        def cat(rows):  # one object (the common case): its ring itself, no per-frame copy
            return rows[0] if len(rows) == 1 else np.concatenate(rows)
        (pix,) = self._run("memory_attention", (
            f.vision_feats, f.vision_pos, cat([o.memory.memory for o in objs]),  # [B, M, *frame]
            cat([i.mem_tpos for i in fills]), cat([i.mem_valid for i in fills]),  # [B, M]
            cat([o.memory.ptrs for o in objs]),  # [B, P, C]
            cat([i.ptr_dist for i in fills]), cat([i.ptr_valid for i in fills])), len(objs))  # [B, P]
        return pix

    def _tracking_prompt(self, b: int):
        """The mask decoder's prompt inputs of `b` objects tracked without a prompt (cached per b)."""
        cached = self._no_prompt.get(b)
        if cached is None:
            pc, pl = self._points_input(None, None)
            s = self.spec
            cached = (np.repeat(pc, b, 0), np.repeat(pl, b, 0), np.zeros((b, 1, s.lowres, s.lowres), np.float32),
                      np.zeros((b, 1, s.image_size, s.image_size), np.float32), np.full(b, MASK_NONE, np.int32),
                      np.ones(b, np.int32), np.ones(b, np.float32), np.zeros(b, np.int32))
            self._no_prompt[b] = cached
        return cached

    def _track_objects(self, objs: List[ObjectState]) -> None:
        """Track `objs` on the current frame from their memories, a batch of objects per call."""
        f = self._frame
        for group in self._batches(objs):
            b = len(group)
            pix = self._memory_attention(group)  # [B, C, f, f]
            low, _, ptr, score = self._run("mask_decoder", (pix, f.feat_s0, f.feat_s1) + self._tracking_prompt(b), b)
            for r, obj in enumerate(group):  # [B, ...] -> each object's [1, ...]
                obj.current = FrameOutput(f.index, low[r:r + 1], score[r:r + 1], ptr[r:r + 1], is_cond=False,
                                          binarize=False)

    def _prompt_object(self, obj: ObjectState, prompt) -> None:
        f = self._frame
        prev = obj.current if (obj.current is not None and obj.current.frame == f.index) else None
        # a frame the object was tracked on (non-conditioning output) -> correction
        is_cond = prev is None or prev.is_cond
        kind, value = prompt
        s = self.spec
        if kind == "mask":
            full = preprocess.resize_bilinear_aa(value.astype(np.float32)[None, None], s.image_size, s.image_size)
            full = (full >= 0.5).astype(np.float32)  # [1, 1, S, S]
            present = bool(full.any())
            low = preprocess.resize_bilinear_aa(full * 20.0 - 10.0, s.lowres, s.lowres).astype(np.float32)
            _, _, ptr, _ = self._decode(f.vision_feats, None, None, MASK_FULL_BINARY, self._zeros_low, full,
                                        False, float(present), False)
            score = np.array([[10.0 if present else -10.0]], np.float32)
            obj.current = FrameOutput(f.index, low, score, ptr, is_cond=is_cond, binarize=True)
            return
        coords, labels = value
        if prev is not None:
            mask_mode, mask_low = MASK_LOWRES_LOGITS, np.clip(prev.low_res, -32.0, 32.0)
        else:
            mask_mode, mask_low = MASK_NONE, self._zeros_low
        pix = f.vision_feats if is_cond else self._memory_attention([obj])
        multimask = coords.shape[0] <= 1
        low, _, ptr, score = self._decode(pix, coords, labels, mask_mode, mask_low, self._zeros_full,
                                          multimask, 1.0, is_cond)
        obj.current = FrameOutput(f.index, low, score, ptr, is_cond=is_cond, binarize=True)

    def _result(self, t0: float) -> TrackResult:
        f = self._frame
        h, w = f.hw
        ids, logits, scores, lows = [], [], [], []
        for obj in self._objects.values():
            cur = obj.current
            if cur is None or cur.frame != f.index:
                continue
            ids.append(obj.obj_id)
            logits.append(preprocess.resize_bilinear(cur.low_res[0, 0], h, w))
            scores.append(float(cur.obj_score[0, 0]))
            lows.append(cur.low_res[0, 0])
        self._timings.total = (time.perf_counter() - t0) * 1e3
        lo = self.spec.lowres
        lg = np.stack(logits) if logits else np.zeros((0, h, w), np.float32)
        low = np.stack(lows) if lows else np.zeros((0, lo, lo), np.float32)
        return TrackResult(f.index, ids, lg > 0, lg.astype(np.float32, copy=False),
                           np.asarray(scores, np.float32), low, self._timings)
