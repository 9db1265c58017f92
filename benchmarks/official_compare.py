"""sam2-edge's streaming tracker against the OFFICIAL `SAM2VideoPredictor`, interleaved frame by
frame in one process on the same frames, prompts, weights and threads.

    pip install --no-deps sam2==1.1.0 hydra-core omegaconf antlr4-python3-runtime iopath portalocker
    python benchmarks/official_compare.py --checkpoint sam2.1_hiera_tiny.pt --frames 12 --objects 1
    python benchmarks/official_compare.py --image-size 512 --objects 3 --modes official,ours,ours-static,ours-bf16

The official package is installed without its dependencies (its torchvision pin pulls another
torch; the video predictor does not import torchvision) and is imported unchanged. Frames are
written once as JPEG into a temporary folder (the official predictor reads a folder) and the
same JPEG files, decoded with Pillow, are what the sam2-edge tracker gets, so both see the same
pixels. Per frame index the script records each mode's seconds, and the masks' IoU against
the official masks (the two compute the same model: a ratio of speeds only means something
when the masks agree). Frame 0 is the prompt: official `add_new_points_or_box` for every
object + the first `propagate_in_video` step (which encodes the prompted frame's memory),
against sam2-edge's `add_prompt` calls; frame i >= 1 is one propagation step against one
`Tracker.track` call (which encodes frame i-1's memory first).

Modes: `official`; `ours` (the torch backend: memory attention over only the memories that
exist); `ours-static` (every ring slot, absent ones masked: what the exported graphs compute);
`ours-bf16` (torch autocast bf16; needs a CPU with AVX512-BF16 / AMX or a bf16 GPU).
Random weights are fine for speed (the work does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

log = logging.getLogger("official_compare")
HERE = Path(__file__).resolve().parent
DEFAULT_CKPT = HERE.parent.parent / "shared" / "reference" / "tiny" / "sam2.1_hiera_t_seed2.fp16.pt"
OFFICIAL_CONFIG = {"sam2.1-hiera-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
                   "sam2.1-hiera-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
                   "sam2.1-hiera-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
                   "sam2.1-hiera-large": "configs/sam2.1/sam2.1_hiera_l.yaml"}
MODES = ("official", "ours", "ours-static", "ours-bf16")


def _frames(video: str, n: int, folder: Path) -> List[np.ndarray]:
    """The first n frames of `video` written as JPEG into `folder` and read back (RGB uint8)."""
    from PIL import Image

    from sam2_edge.runtimes.video import read_frames

    it, _, _ = read_frames(video)
    frames = [f for _, f in zip(range(n), it)]
    if len(frames) < n:
        raise SystemExit(f"{video} has {len(frames)} frames, --frames asks for {n}")
    out = []
    for i, f in enumerate(frames):
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(f).save(p, quality=95)
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def _official(ckpt: str, variant: str, size: int):
    try:
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as e:
        raise SystemExit(f"the official sam2 package is not importable ({e}); install it as this script's "
                         "docstring says") from None
    extra = [] if size == 1024 else [f"++model.image_size={size}"]
    return build_sam2_video_predictor(OFFICIAL_CONFIG[variant], ckpt, device="cpu", hydra_overrides_extra=extra)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CKPT), help="an official SAM 2.1 checkpoint")
    p.add_argument("--variant", default="sam2.1-hiera-tiny", choices=list(OFFICIAL_CONFIG))
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--video", default=None, help="video file (default: the clip shipped in the package)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: one per core)")
    p.add_argument("--modes", default="official,ours", help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--json", default=None, help="write every per-frame figure here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or "official" not in modes:
        raise SystemExit(f"--modes: {bad or 'official is required'}; choose from {', '.join(MODES)}")

    import torch

    from sam2_edge.bench.protocol import SAMPLE_CLIP
    from sam2_edge.quantization.calibration import auto_prompts
    from sam2_edge.runtimes import Tracker

    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="sam2-edge-official-"))
    frames = _frames(a.video or str(SAMPLE_CLIP), a.frames, tmp)
    h, w = frames[0].shape[:2]
    prompts = auto_prompts(w, h, a.objects)

    pred = _official(a.checkpoint, a.variant, a.image_size)
    state = pred.init_state(str(tmp))
    state["cached_features"] = {}  # init_state encodes frame 0 ahead ("warm up"): encode it inside frame 0's time
    trackers = {}
    for m in modes[1:]:
        trackers[m] = Tracker.from_checkpoint(a.checkpoint, a.variant, image_size=a.image_size,
                                              dtype="bf16" if m == "ours-bf16" else "fp32",
                                              static_memory=m == "ours-static")
    secs: Dict[str, List[float]] = {m: [] for m in modes}
    ious: Dict[str, List[float]] = {m: [] for m in modes[1:]}
    gen = None
    load = [os.getloadavg()]
    for i, frame in enumerate(frames):
        t = time.perf_counter()
        with torch.inference_mode():
            if i == 0:
                for oid, pr in enumerate(prompts, 1):
                    pred.add_new_points_or_box(state, 0, oid, points=pr.get("points"), labels=pr.get("labels"),
                                               box=pr.get("box"))
                gen = pred.propagate_in_video(state)
            idx, obj_ids, masks = next(gen)
        secs["official"].append(time.perf_counter() - t)
        assert idx == i, (idx, i)
        ref = {int(o): (masks[k, 0] > 0).cpu().numpy() for k, o in enumerate(obj_ids)}
        for m, tr in trackers.items():
            t = time.perf_counter()
            if i == 0:
                for j, (oid, pr) in enumerate(enumerate(prompts, 1)):
                    res = tr.add_prompt(frame if j == 0 else None, oid, **pr)
            else:
                res = tr.track(frame)
            secs[m].append(time.perf_counter() - t)
            got = {int(o): res.masks[k] for k, o in enumerate(res.object_ids)}
            ious[m].append(min(_iou(ref[o], got[o]) for o in ref))
        log.info("frame %2d  %s", i, "  ".join(f"{m} {secs[m][-1]:6.2f}s" for m in modes)
                 + "  " + "  ".join(f"IoU({m}) {ious[m][-1]:.4f}" for m in ious))
    load.append(os.getloadavg())

    steady = list(range(min(8, a.frames - 1), a.frames))  # memory full from frame 7 on (6 recent + cond)
    lines = ["| frame | " + " | ".join(f"{m} s" for m in modes) + " | "
             + " | ".join(f"official / {m}" for m in modes[1:]) + " |",
             "|---" * (1 + 2 * len(modes) - 1) + "|"]
    for i in range(a.frames):
        lines.append(f"| {i} | " + " | ".join(f"{secs[m][i]:.3f}" for m in modes) + " | "
                     + " | ".join(f"{secs['official'][i] / secs[m][i]:.2f}x" for m in modes[1:]) + " |")
    summary = {m: {"first_frames_1_6_s": statistics.median(secs[m][1:7]) if a.frames > 1 else None,
                   "steady_median_s": statistics.median([secs[m][i] for i in steady]),
                   "min_iou_vs_official": min(ious[m]) if m in ious else 1.0} for m in modes}
    for m in modes[1:]:
        summary[m]["ratio_steady"] = summary["official"]["steady_median_s"] / summary[m]["steady_median_s"]
        summary[m]["ratio_frames_1_6"] = (statistics.median([secs["official"][i] / secs[m][i] for i in range(1, 7)])
                                          if a.frames > 6 else None)
    import sam2

    info = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "official_sam2": getattr(sam2, "__version__", "?"), "threads": torch.get_num_threads(),
            "loadavg_start_end": load, "variant": a.variant, "image_size": a.image_size, "objects": a.objects,
            "frames": a.frames, "steady_frames": steady}
    try:
        info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print("\n".join(lines))
    print(json.dumps({"info": info, "summary": summary}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "summary": summary, "seconds": secs, "iou": ious},
                                           indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
