"""Drive a tracker through an official streaming golden scenario (`video_stream_*.npz`)
exactly as the goldens were made: prompts arriving with frame t are given with that frame,
`after_track` corrections after it was tracked. Returns what the tracker produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np


def load_golden(path) -> Dict[str, np.ndarray]:
    with np.load(path) as z:
        g = {k: z[k] for k in z.files}
    for k in [k for k in g if k.endswith("_bits")]:
        base = k[:-5]
        shape = tuple(int(s) for s in g[base + "_shape"])
        g[base] = np.unpackbits(g[k], count=int(np.prod(shape)), bitorder="little").astype(bool).reshape(shape)
    return g


def golden_lowres(folder: Path, scenario: str, oid: int) -> Tuple[np.ndarray, np.ndarray]:
    """(frames, low-res logits float32) of object oid, resolving de-duplication."""
    g = load_golden(folder / f"video_{scenario}.npz")
    frames = g[f"obj{oid}/frames"]
    if oid in g["dedup_obj_ids"]:
        src = load_golden(folder / str(g["dedup_source"][0]))
        idx = np.searchsorted(src[f"obj{oid}/frames"], frames)
        return frames, src[f"obj{oid}/lowres_logits"][idx].astype(np.float32)
    return frames, g[f"obj{oid}/lowres_logits"].astype(np.float32)


def read_frames(folder: Path, n: int) -> List[np.ndarray]:
    files = sorted((folder / "frames").glob("*.jpg"), key=lambda p: int(p.stem))[:n]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files]


@dataclass
class Prompt:
    frame: int
    obj_id: int
    after_track: bool
    points: object = None
    labels: object = None
    box: object = None
    mask: object = None


def prompts_of(g: Dict[str, np.ndarray]) -> List[Prompt]:
    out = []
    n = 0
    while f"prompt{n}/frame" in g:
        p = f"prompt{n}/"
        pr = Prompt(int(g[p + "frame"][0]), int(g[p + "obj_id"][0]), bool(g[p + "after_track"][0]))
        if p + "mask" in g:
            pr.mask = g[p + "mask"]
        else:
            if g[p + "points"].shape[0]:
                pr.points, pr.labels = g[p + "points"], g[p + "labels"]
            if not np.isnan(g[p + "box"]).all():
                pr.box = g[p + "box"]
        out.append(pr)
        n += 1
    return out


@dataclass
class ScenarioRun:
    # per (frame, obj_id): low-res logits, video-res mask, object score
    low: Dict[Tuple[int, int], np.ndarray] = field(default_factory=dict)
    mask: Dict[Tuple[int, int], np.ndarray] = field(default_factory=dict)
    score: Dict[Tuple[int, int], float] = field(default_factory=dict)


def run_scenario(tracker, folder: Path, scenario: str) -> ScenarioRun:
    g = load_golden(folder / f"video_{scenario}.npz")
    k = len(g["frame_idx"])
    frames = read_frames(folder, k)
    prompts = prompts_of(g)
    tracker.reset()
    run = ScenarioRun()
    for t in range(k):
        before = [p for p in prompts if p.frame == t and not p.after_track]
        after = [p for p in prompts if p.frame == t and p.after_track]
        res = None
        for i, p in enumerate(before):
            res = tracker.add_prompt(frames[t] if i == 0 else None, p.obj_id, points=p.points,
                                     labels=p.labels, box=p.box, mask=p.mask)
        if res is None:
            res = tracker.track(frames[t])
        for p in after:
            res = tracker.add_prompt(None, p.obj_id, points=p.points, labels=p.labels, box=p.box, mask=p.mask)
        assert res.frame_index == t
        for j, oid in enumerate(res.object_ids):
            run.low[(t, oid)] = res.low_res_logits[j]
            run.mask[(t, oid)] = res.masks[j]
            run.score[(t, oid)] = float(res.object_scores[j])
    return run
