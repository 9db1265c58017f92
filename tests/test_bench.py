"""`sam2-edge bench` smoke tests on the micro model (seconds).

The runs pass `--threads 1`: on a 2-core machine shared with other work, torch with one
OpenMP thread per core slows down by orders of magnitude whenever a core is taken (every
parallel region waits for the pre-empted thread), which would make a smoke test's time
depend on the machine's load. One thread measures the same code paths.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from sam2_edge import bench as B  # noqa: E402
from sam2_edge.cli import main  # noqa: E402

STAGES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder", "pre_post", "total")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _bench(tmp_path, *extra):
    out = tmp_path / "bench.json"
    argv = ["bench", "--checkpoint", str(_micro()), "--frames", "10", "--warmup", "2", "--objects", "1",
            "--json", str(out), "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def _micro():
    from pathlib import Path

    p = Path(__file__).parent / "fixtures" / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
    assert p.is_file()
    return p


def _check_stats(st, positive=True):
    assert set(st) >= {"median", "p90", "mean", "min", "n"}
    assert st["n"] >= 1
    assert st["p90"] >= st["median"] >= st["min"]
    if positive:
        assert st["median"] > 0


def test_bench_micro_json(tmp_path, capsys):
    rep = _bench(tmp_path, "--threads", "1")
    assert rep["schema"] == B.SCHEMA
    assert set(rep) >= {"config", "machine", "notes", "peak_rss_bytes", "elapsed_s", "targets"}
    c = rep["config"]
    assert c["variant"] == "micro" and c["image_size"] == 256 and c["objects"] == [1]
    assert c["frames"] == 10 and c["steady_from_frame"] == 8 and c["random_weights"] is False
    m = rep["machine"]
    assert m["logical_cpus"] >= 1 and "load_average_start" in m and "versions" in m
    assert rep["peak_rss_bytes"] is None or rep["peak_rss_bytes"] > 0

    (t,) = rep["targets"]
    assert t["backend"] == "torch" and t["threads"] == 1 and t["precision"] == "fp32"
    assert t["model_bytes_kind"] == "parameters"
    assert t["model_bytes"] == 4 * 1_457_906  # the micro model's 1.46 M parameters in fp32
    assert t["first_frame_cold_ms"] > 0
    _check_stats(t["first_frame_ms"])
    assert t["first_frame_ms"]["n"] == 3
    assert t["first_frame_stages_ms"]["memory_attention"]["median"] == 0  # a prompt frame has no memory

    run = t["runs"]["1"]
    assert run["objects"] == 1 and run["frames_measured"] == 2  # frames 8 and 9
    for s in STAGES:
        _check_stats(run["stages_ms"][s], positive=s != "pre_post")
    assert run["stages_ms"]["total"]["median"] >= run["stages_ms"]["image_encoder"]["median"]
    assert run["fps"] > 0 and math.isclose(run["fps"], 1000 / run["stages_ms"]["total"]["mean"], rel_tol=1e-2)
    assert run["prompt_frame_ms"] > 0 and run["tracker_memory_bytes"] > 0
    assert run["vs_first"]["fps"] == 1.0

    text = capsys.readouterr().out
    assert "image_enc" in text and "fps" in text and "first frame" in text


def test_bench_two_targets_interleaved_ratios(tmp_path):
    """Two targets in one run (here the torch backend twice: an A/A run) get ratios vs the first."""
    rep = _bench(tmp_path, "--threads", "1,1", "--prompt-repeats", "2")
    a, b = rep["targets"]
    assert a["label"] != b["label"]
    assert a["runs"]["1"]["vs_first"]["fps"] == 1.0
    r = b["runs"]["1"]["vs_first"]
    assert r["fps"] is not None and 0.1 < r["fps"] < 10
    assert math.isclose(r["fps"], b["runs"]["1"]["fps"] / a["runs"]["1"]["fps"], rel_tol=1e-2)
    for s in STAGES:
        if s != "pre_post":
            assert r["speedup"][s] > 0
    assert b["first_frame_vs_first"] > 0


def test_bench_rejects_too_few_frames(capsys):
    assert main(["bench", "--checkpoint", str(_micro()), "--frames", "8", "--no-progress"]) == 2
    assert "--frames must be > 8" in capsys.readouterr().err


def test_bench_unknown_backend(capsys):
    assert main(["bench", "--checkpoint", str(_micro()), "--backends", "tensorflow", "--no-progress"]) == 2
    assert "unknown backend" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed")
def test_bench_plot_without_matplotlib(tmp_path, capsys):
    rc = main(["bench", "--checkpoint", str(_micro()), "--plot", str(tmp_path / "p.png"), "--no-progress"])
    assert rc == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_stats_and_prompts():
    st = B.stats([3.0, 1.0, 2.0, 10.0])
    assert st["median"] == 2.5 and st["p90"] >= st["median"] and st["n"] == 4
    ps = B.object_prompts(5, 480, 270)
    assert len(ps) == 5 and "box" in ps[1]
    for p in ps:
        pts = np.asarray(p.get("points", [[0, 0]]))
        assert (pts >= 0).all() and (pts[:, 0] <= 480).all() and (pts[:, 1] <= 270).all()
    assert B.parse_backends("onnx,torch,ort") == ["onnxruntime", "torch"]


def test_sample_clip_is_shipped():
    assert B.SAMPLE_CLIP.is_file() and B.SAMPLE_CLIP.stat().st_size < 300_000
    frames, _ = B.load_frames(None, 100)
    assert len(frames) == 24 and frames[0].shape == (270, 480, 3) and frames[0].dtype == np.uint8


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plot_writes_png(tmp_path):
    stage = {"median": 2.0, "p90": 3.0, "mean": 2.2, "min": 1.5, "n": 4}
    run = {"fps": 10.0, "stages_ms": {s: stage for s in STAGES}}
    rep = {"config": {"objects": [1, 3], "variant": "micro", "image_size": 256},
           "machine": {"board": None, "cpu": "cpu", "logical_cpus": 2},
           "targets": [{"label": lab, "runs": {"1": run, "3": run}} for lab in ("torch", "onnxruntime")]}
    out = tmp_path / "p.png"
    B.plot(rep, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
