"""Helpers shared by the bundle tests: the micro ONNX bundle (exported once per test
session, whichever module asks first) and synthetic bundles (placeholder graph files
with a consistent manifest) for torch-free manifest-validation tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from sam2_edge.contract import FORMATS, SCHEMA_VERSION, hash_graph, tensor_to_dict
from sam2_edge.contract import TrackerSpec

REPO = Path(__file__).resolve().parents[1]
MICRO_CKPT = REPO / "tests" / "fixtures" / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
MICRO_STREAM = REPO / "tests" / "fixtures" / "micro_stream"
CLIP_200 = REPO / "tests" / "assets" / "bedroom_240x136_200f.mp4"
MICRO_SPEC = TrackerSpec(image_size=256, d_model=64, mem_dim=16, num_maskmem=7, cond_slots=2, ptr_recent=15)

_CACHE: Dict[str, Path] = {}


# object batches of the shared micro bundles: the golden scenarios' 2 and 3 objects then run
# through the batch-2 graphs (3 = 2 + 1), so every golden test checks the batched graphs too
OBJ_BATCHES = (1, 2)


def micro_onnx_bundle(tmp_path_factory, precision: str = "fp32") -> Path:
    """The micro checkpoint exported as an ONNX bundle (fp32: with the batch-2 graphs), once per
    session (read-only use: copy it before altering anything)."""
    key = f"onnx-{precision}"
    if key not in _CACHE:
        from sam2_edge.export import export_bundle

        out = tmp_path_factory.mktemp("bundles") / f"micro-{key}"
        export_bundle(str(MICRO_CKPT), str(out), format="onnx", precision=precision, show_progress=False,
                      obj_batches=OBJ_BATCHES if precision == "fp32" else (1,))
        _CACHE[key] = out
    return _CACHE[key]


def micro_pte_bundle(tmp_path_factory) -> Path:
    """The micro checkpoint exported as an ExecuTorch bundle, once per session (read-only)."""
    if "pte" not in _CACHE:
        from sam2_edge.export import export_bundle

        out = tmp_path_factory.mktemp("bundles") / "micro-pte"
        export_bundle(str(MICRO_CKPT), str(out), format="executorch", show_progress=False, obj_batches=OBJ_BATCHES)
        _CACHE["pte"] = out
    return _CACHE["pte"]


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def make_fake_bundle(root: Path, fmt: str = "onnx", spec: Optional[TrackerSpec] = None) -> Path:
    """A bundle whose graphs are placeholder bytes (not runnable) but whose manifest is
    complete and consistent: for testing validation without torch or a runtime."""
    spec = spec or MICRO_SPEC
    root.mkdir(parents=True, exist_ok=True)
    io = spec.graph_io()
    graphs = {}
    for i, stage in enumerate(spec.graph_keys()):
        name = stage.replace("@", ".b") + FORMATS[fmt].suffix
        p = root / name
        if fmt == "coreml":  # an .mlpackage is a folder
            (p / "Data" / "com.apple.CoreML").mkdir(parents=True)
            (p / "Manifest.json").write_text(json.dumps({"stage": stage}))
            (p / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(bytes([i]) * 100)
            (p / "Data" / "com.apple.CoreML" / "weights.bin").write_bytes(np.arange(50, dtype=np.uint8).tobytes())
        else:
            p.write_bytes(f"placeholder graph {stage}".encode() * 10)
        ins, outs = io[stage]
        graphs[stage] = {"file": name, "sha256": hash_graph(p), "bytes": 0,
                         "inputs": [tensor_to_dict(t) for t in ins], "outputs": [tensor_to_dict(t) for t in outs],
                         "data_files": [], "extra": {}}
    manifest = {
        "schema_version": SCHEMA_VERSION, "format": fmt, "precision": "fp32", "variant": "micro",
        "model_config": {"name": "micro", "image_size": spec.image_size, "d_model": spec.d_model,
                         "mem_dim": spec.mem_dim, "num_maskmem": spec.num_maskmem},
        "spec": spec.to_dict(), "graphs": graphs,
        "preprocessing": {"image_size": spec.image_size, "resize": "pil-bicubic", "colour_order": "RGB",
                          "layout": "NCHW", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225]},
        "checkpoint": {"file": "x.pt", "sha256": "0" * 64},
        "exporter": {"name": "test"}, "libraries": {}, "created": "2025-01-01T00:00:00+00:00",
    }
    write_manifest(root, manifest)
    return root


def read_manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def write_manifest(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))


def read_clip(path: Path, n: Optional[int] = None):
    """RGB uint8 frames of a video file (all, or the first n)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while n is None or len(frames) < n:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    finally:
        cap.release()
    return frames
