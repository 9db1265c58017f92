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
from pathlib import Path
from unittest import mock

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


def test_bench_two_targets_interleaved_ratios(tmp_path, monkeypatch):
    """Two targets in one run (here the torch backend twice: an A/A run) get ratios vs the first;
    each interleaved timed call (2 first-frame repeats + 9 streamed frames, per target) starts after
    SETTLE_S of idle time, so no target runs on cores the other's spinning threads still hold."""
    from sam2_edge.bench import protocol

    sleeps = []
    real_sleep = protocol.time.sleep
    monkeypatch.setattr(protocol.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    rep = _bench(tmp_path, "--threads", "1,1", "--prompt-repeats", "2")
    assert sleeps.count(protocol.SETTLE_S) == 2 * (2 + 9) and protocol.SETTLE_S > 0
    assert rep["config"]["settle_ms"] == 1000 * protocol.SETTLE_S
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


def test_bench_several_checkpoints_one_run(tmp_path, capsys):
    """`--checkpoint A --checkpoint B`: each checkpoint's torch row in one interleaved run, labelled
    with its variant, with its own model size; the second row's ratios are against the first."""
    edgetam = Path(__file__).parent / "fixtures" / "edgetam_micro" / "edgetam_micro_seed7.fp16.pt"
    rep = _bench(tmp_path, "--threads", "1", "--checkpoint", str(edgetam), "--prompt-repeats", "1")
    a, b = rep["targets"]
    assert (a["label"], a["variant"]) == ("torch [micro]", "micro")
    assert b["variant"] == "edgetam-micro" and b["label"] == "torch [edgetam-micro]"
    assert a["source"] == str(_micro()) and b["source"] == str(edgetam)
    assert a["model_bytes"] == 4 * 1_457_906 and b["model_bytes"] != a["model_bytes"]
    assert rep["config"]["checkpoints"] == [str(_micro()), str(edgetam)]
    r = b["runs"]["1"]["vs_first"]["fps"]
    assert math.isclose(r, b["runs"]["1"]["fps"] / a["runs"]["1"]["fps"], rel_tol=1e-2)
    assert "torch [edgetam-micro]" in capsys.readouterr().out
    # one --variant cannot name the variants of two checkpoints
    assert main(["bench", "--checkpoint", str(_micro()), "--checkpoint", str(edgetam), "--variant", "micro",
                 "--no-progress"]) == 2
    assert "leave --variant out" in capsys.readouterr().err


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


# ------------------------------------------------------------------ first-run experience
def test_no_argument_defaults_are_quick_and_stated():
    import argparse

    from sam2_edge.bench import cli as bench_cli

    def ns(**kw):
        base = dict(checkpoint=None, bundle=None, frames=None, image_size=None, objects=None, warmup=None,
                    prompt_repeats=None)
        base.update(kw)
        return argparse.Namespace(**base)

    a = ns()
    assert bench_cli._apply_defaults(a) == {"frames": 12, "image_size": 512, "objects": "1", "warmup": 1,
                                            "prompt_repeats": 2}
    a = ns(variant="sam2.1-repvit-256")  # the quick size never exceeds the variant's own
    assert "image_size" not in bench_cli._apply_defaults(a) and a.image_size == 256
    a = ns(frames=20, image_size=1024, objects="1,3", warmup=2, prompt_repeats=3)  # the user asks for more
    assert bench_cli._apply_defaults(a) == {} and (a.image_size, a.frames) == (1024, 20)
    a = ns(checkpoint="x.pt")  # a real checkpoint: its own size, the full protocol
    assert bench_cli._apply_defaults(a) == {"frames": 16, "objects": "1,3", "warmup": 2, "prompt_repeats": 3}
    assert a.image_size is None


def test_progress_logs_when_not_a_terminal(caplog):
    import io
    import logging

    from sam2_edge.progress import Progress

    stream = io.StringIO()  # not a TTY: no bar, periodic log lines instead
    with caplog.at_level(logging.INFO, logger="sam2_edge.progress"):
        with Progress(4, "bench", stream=stream, interval=0.0) as bar:
            for _ in range(4):
                bar.update(1, "torch 1 obj")
            bar.message("bench: torch: 1 obj 3.2 fps")
    assert stream.getvalue() == ""
    msgs = [r.getMessage() for r in caplog.records]
    assert any("bench: 2/4 (50%)" in m and "torch 1 obj" in m for m in msgs)
    assert "bench: torch: 1 obj 3.2 fps" in msgs
    assert any("finished 4/4" in m for m in msgs)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sam2_edge.progress"):
        with Progress(4, "quick", stream=io.StringIO()) as bar:  # quick work (under the interval): silent
            bar.update(4)
        with Progress(4, "off", stream=io.StringIO(), enabled=False, interval=0.0) as bar:  # --no-progress
            bar.update(4)
    assert caplog.records == []


def test_all_means_every_backend_that_runs_here(tmp_path, monkeypatch, capsys):
    """`--backends all`: the backends that cannot run here are listed as skipped, with the reason;
    one named explicitly that cannot run is an error."""
    from sam2_edge.bench import targets as T

    def unavailable(name, export=False):
        return None if name == "torch" else f"{name} is not installed here (test)"

    monkeypatch.setattr(T, "backend_unavailable", unavailable)
    rep = _bench(tmp_path, "--threads", "1", "--backends", "all", "--export-dir", str(tmp_path / "cache"))
    assert [t["backend"] for t in rep["targets"]] == ["torch"]
    assert {s["backend"]: s["reason"] for s in rep["skipped"]} == {
        b: f"{b} is not installed here (test)" for b in ("onnxruntime", "executorch", "coreml")}
    out = capsys.readouterr().out
    assert "coreml" in out and "skipped: coreml is not installed here (test)" in out
    rc = main(["bench", "--checkpoint", str(_micro()), "--backends", "torch,coreml", "--no-progress",
               "--export-dir", str(tmp_path / "cache")])
    assert rc == 2 and "backend coreml: coreml is not installed here" in capsys.readouterr().err


def test_ctrl_c_keeps_the_results_so_far(tmp_path, monkeypatch, capsys):
    """Ctrl-C while streaming 3 objects: the JSON and the table still come out, with the 1-object run
    complete and the 3-object run marked partial; exit code 130."""
    from sam2_edge.bench.targets import Target

    calls = {"n": 0}
    orig = Target.call

    def call(self, fn):
        calls["n"] += 1
        # 3 cold + warm-up, 3 first-frame, 1 + 9 for 1 object, 3 prompts + frames 1..8 for 3 objects
        if calls["n"] == 28:
            raise KeyboardInterrupt
        return orig(self, fn)

    monkeypatch.setattr(Target, "call", call)
    out = tmp_path / "bench.json"
    rc = main(["bench", "--checkpoint", str(_micro()), "--frames", "10", "--objects", "1,3", "--threads", "1",
               "--json", str(out), "--no-progress", "--export-dir", str(tmp_path / "cache")])
    assert rc == 130
    rep = json.loads(out.read_text())
    assert rep["interrupted"] is True and rep["interrupted_during"] == "streaming 3 objects"
    (t,) = rep["targets"]
    assert t["runs"]["1"]["complete"] is True and t["runs"]["1"]["frames_measured"] == 2
    assert t["runs"]["3"]["complete"] is False and t["runs"]["3"]["frames_measured"] == 1
    text = capsys.readouterr().out
    assert "INTERRUPTED during streaming 3 objects" in text and "* 1 frames" in text


def test_cache_name_and_validation(tmp_path):
    from sam2_edge.bench import targets as T

    a = T.bundle_cache_name("sam2.1-hiera-tiny", 512, "onnx", "random weights, torch.manual_seed(0)")
    assert a.startswith("sam2.1-hiera-tiny-512-onnx-") and len(a.rsplit("-", 1)[1]) == 12
    assert a == T.bundle_cache_name("sam2.1-hiera-tiny", 512, "onnx", "random weights, torch.manual_seed(0)")
    assert a != T.bundle_cache_name("sam2.1-hiera-tiny", 512, "onnx", "ab" * 32)        # other weights
    assert a != T.bundle_cache_name("sam2.1-hiera-tiny", 1024, "onnx", "random weights, torch.manual_seed(0)")
    assert T.check_cached_bundle(tmp_path / "none", "onnx", None, None, None) == "not exported yet"
    (tmp_path / "junk").mkdir()
    assert "not valid" in T.check_cached_bundle(tmp_path / "junk", "onnx", None, None, None)
    # bundles exported with graphs for the object counts streamed (3 objects: one call per stage)
    assert T.bench_obj_batches([1, 3]) == (1, 3) and T.bench_obj_batches([3]) == (1, 3)
    assert T.bench_obj_batches([1]) == (1,) and T.bench_obj_batches([100]) == (1, 64)
    assert a != T.bundle_cache_name("sam2.1-hiera-tiny", 512, "onnx", "random weights, torch.manual_seed(0)", (1, 3))
    from dataclasses import replace

    from bundle_helpers import MICRO_SPEC, make_fake_bundle

    from bundle_helpers import read_manifest, write_manifest
    from sam2_edge.export.bundle import GRAPHS_REVISION

    fake = make_fake_bundle(tmp_path / "b13", spec=replace(MICRO_SPEC, obj_batches=(1, 3)))
    # a bundle from an exporter whose graphs differ (no or another graphs_revision) is exported again
    assert "older sam2-edge" in T.check_cached_bundle(fake, "onnx", None, None, None, (1, 3))
    m = read_manifest(fake)
    m["exporter"]["graphs_revision"] = GRAPHS_REVISION - 1
    write_manifest(fake, m)
    assert "older sam2-edge" in T.check_cached_bundle(fake, "onnx", None, None, None, (1, 3))
    m["exporter"]["graphs_revision"] = GRAPHS_REVISION
    write_manifest(fake, m)
    assert T.check_cached_bundle(fake, "onnx", None, None, None, (1, 3)) is None
    assert "object batches [1, 3], not [1]" in T.check_cached_bundle(fake, "onnx", None, None, None)
    with mock.patch("sam2_edge.export.bundle.GRAPHS_REVISION", GRAPHS_REVISION + 1):  # the name follows it
        assert a != T.bundle_cache_name("sam2.1-hiera-tiny", 512, "onnx", "random weights, torch.manual_seed(0)")


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    from sam2_edge.bench import targets as T

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert T.default_export_dir() == tmp_path / "sam2-edge" / "bundles"


def test_exported_bundle_is_cached_between_runs(tmp_path):
    """The ONNX bundle a run exports is reused by the next (validated with load_manifest), and a
    damaged one is exported again."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cache = tmp_path / "cache"
    args = ("--threads", "1", "--backends", "onnx", "--objects", "1", "--export-dir", str(cache),
            "--prompt-repeats", "1")
    first = _bench(tmp_path, *args)
    (t,) = first["targets"]
    assert t["backend"] == "onnxruntime" and t["bundle_cached"] is False
    (entry,) = first["config"]["exports"].values()
    assert entry["cached"] is False and entry["export_seconds"] > 0
    bundle = Path(t["bundle"])
    assert bundle.parent == cache and bundle.name.startswith("micro-256-onnx-")
    second = _bench(tmp_path, *args)
    assert second["targets"][0]["bundle_cached"] is True and second["targets"][0]["bundle"] == str(bundle)
    graph = next(bundle.glob("image_encoder*"))
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")  # damaged: its sha256 no longer matches
    third = _bench(tmp_path, *args)
    assert third["targets"][0]["bundle_cached"] is False


# ------------------------------------------------------------------ sam2_edge.quiet
def test_quiet_lowers_third_party_loggers_and_restores():
    import logging
    import warnings

    from sam2_edge.quiet import quiet

    lg = logging.getLogger("torch._dynamo")
    lg.setLevel(logging.INFO)
    own = logging.getLogger("sam2_edge.bench")
    own_level = own.level
    logging.getLogger("sam2_edge").setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet():
                assert lg.level == logging.ERROR and own.level == own_level
                warnings.warn_explicit("third-party noise", FutureWarning, "/x/site-packages/torch/foo.py", 1,
                                       module="torch.foo")
                warnings.warn_explicit("copyreg noise", FutureWarning, "/usr/lib/python3/copyreg.py", 1,
                                       module="copyreg")
                import sam2_edge.quiet as q

                warnings.warn_explicit("ours", UserWarning, q.__file__, 1, module="sam2_edge.quiet")
        assert [str(w.message) for w in seen] == ["ours"]  # a sam2_edge warning is never filtered
        assert lg.level == logging.INFO
    finally:
        lg.setLevel(logging.NOTSET)
        logging.getLogger("sam2_edge").setLevel(logging.NOTSET)


def test_quiet_is_a_no_op_at_debug():
    import logging

    from sam2_edge.quiet import quiet

    lg = logging.getLogger("executorch")
    logging.getLogger("sam2_edge").setLevel(logging.DEBUG)
    try:
        with quiet():
            assert lg.level == logging.NOTSET
    finally:
        logging.getLogger("sam2_edge").setLevel(logging.NOTSET)


def test_quiet_fd_captures_native_stderr(capfd):
    import os

    from sam2_edge.quiet import quiet

    with quiet(fd=True):
        os.write(2, b"[threadpool.cpp:66] native noise\n")
    assert "native noise" not in capfd.readouterr().err
    try:
        with quiet(fd=True, tail_lines=5):
            os.write(2, b"the native context of a failure\n")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert "the native context of a failure" in capfd.readouterr().err  # kept when the block fails


def test_export_child_output_is_filtered():
    """Of the export child's output only sam2-edge's own log lines and its error line pass."""
    from sam2_edge.bench.targets import _SHOWN

    assert _SHOWN.match("INFO sam2_edge.progress: export micro -> onnx fp32: 2/4 (50%)")
    assert _SHOWN.match("sam2-edge export: error: cannot write ...")
    for noise in ("[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version",
                  "W1130 00:39:21.742000 3409 site-packages/torch/utils/_pytree.py:630] <enum ...",
                  "/usr/lib/python3.11/copyreg.py:105: FutureWarning: `isinstance(treespec, LeafSpec)`",
                  "INFO onnxscript.rewriter: applied 12 rewrites", "bundle   /x/y  (onnx, fp32, micro, S=256)"):
        assert not _SHOWN.match(noise), noise


def test_heap_note_when_torch_runs_beside_a_low_memory_onnx_bundle(monkeypatch):
    """The ONNX backend's low-memory mode fixes glibc's mmap threshold process-wide, so a torch row
    in the same run is slowed too: the bench says so (and only then)."""
    from types import SimpleNamespace

    from sam2_edge.bench.targets import Target, heap_note
    from sam2_edge.runtimes.backends import heap

    def target(backend, low_memory=None):
        be = SimpleNamespace() if low_memory is None else SimpleNamespace(low_memory=low_memory)
        return Target(label=backend, backend=backend, source="", threads=1, tracker=SimpleNamespace(backend=be),
                      model_bytes=0, model_bytes_kind="", image_size=256, precision="fp32", variant="micro")

    monkeypatch.setattr(heap, "applied_threshold", lambda: 1 << 20)
    note = heap_note([target("torch"), target("onnxruntime", True)])
    assert note is not None and "1 MiB" in note and "torch rows" in note
    assert heap_note([target("torch"), target("onnxruntime", False)]) is None  # arenas: no threshold set by it
    assert heap_note([target("onnxruntime", True)]) is None  # no torch row to slow
    monkeypatch.setattr(heap, "applied_threshold", lambda: None)  # not glibc / the user's own setting
    assert heap_note([target("torch"), target("onnxruntime", True)]) is None
