"""`sam2-edge distill`: student variants, data, prompts, the safetensors student checkpoint and
its hostile-input checks, bad input, and a short micro -> micro-student run end to end."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import save_file  # noqa: E402

from sam2_edge.checkpoint import build_sam2, read_state_dict  # noqa: E402
from sam2_edge.cli import main  # noqa: E402
from sam2_edge.configs import get_config, list_variants, teacher_of  # noqa: E402
from sam2_edge.errors import CheckpointError, ConfigError, InputError, OutputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "fixtures" / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
CLIP = REPO / "sam2_edge" / "assets" / "bedroom_480x270_24f.mp4"
STUDENTS = ["sam2.1-hiera-tiny-512", "sam2.1-hiera-tiny-perceiver", "sam2.1-hiera-nano-512", "sam2.1-repvit-512",
            "micro-student"]
JF_THRESHOLD = 0.88  # held-out J&F of micro-student vs micro after the 6-step CI run (0.83 at step 0)


# ---------------------------------------------------------------- the registry
@pytest.mark.parametrize("name", STUDENTS)
def test_students_are_registered_smaller_and_compatible(name):
    from sam2_edge.distill.students import check_student

    assert name in list_variants()
    s, t = get_config(name), get_config(teacher_of(name))
    sizes = check_student(t, s)
    assert any(b < a for a, b in sizes.values())


def test_student_feature_sizes_follow_resolution():
    c = get_config("sam2.1-hiera-nano-512")
    assert (c.feat_size, c.lowres_size, c.hiera.stages) == (32, 128, (1, 2, 3, 1))
    assert get_config("sam2.1-hiera-tiny-perceiver").mem_tokens == 512


def test_bad_students_are_refused_with_the_reason():
    from sam2_edge.distill.students import check_student

    micro = get_config("micro")
    with pytest.raises(ConfigError, match="not compatible.*d_model is 256"):
        check_student(micro, get_config("sam2.1-hiera-tiny"))
    with pytest.raises(ConfigError, match="not smaller.*parameters"):
        check_student(get_config("micro-student"), micro)
    with pytest.raises(ConfigError, match="not smaller.*the same"):
        check_student(micro, micro)


def test_student_starts_from_the_teacher_stage_by_stage():
    from sam2_edge.distill.students import _hiera_map, init_from_teacher
    from sam2_edge.modeling.sam2 import SAM2Model

    assert _hiera_map(get_config("sam2.1-hiera-tiny"), get_config("sam2.1-hiera-nano-512")) == {
        0: 0, 1: 1, 2: 2, 3: 3, 4: 6, 5: 9, 6: 10}
    teacher = build_sam2(str(MICRO))
    student = SAM2Model(get_config("micro-student"))
    copied, total = init_from_teacher(student, teacher)
    assert copied == total
    assert torch.equal(student.image_encoder.trunk.blocks[2].attn.qkv.weight,
                       teacher.image_encoder.trunk.blocks[2].attn.qkv.weight)
    assert torch.equal(student.image_encoder.trunk.blocks[3].mlp.layers[0].weight,
                       teacher.image_encoder.trunk.blocks[5].mlp.layers[0].weight)


# ---------------------------------------------------------------- data
def _frames_dir(root: Path, n: int = 4) -> Path:
    import cv2

    root.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / f"{i:05d}.jpg"), np.full((32, 48, 3), 40 * i, np.uint8))
    return root


def test_data_layouts_and_corrupt_videos(tmp_path, caplog):
    from sam2_edge.distill.data import open_dataset, read_clip, split

    davis = tmp_path / "davis"
    _frames_dir(davis / "JPEGImages" / "480p" / "cat")
    _frames_dir(davis / "Annotations" / "480p" / "cat")  # labels: never a training video
    sav = tmp_path / "sav" / "sav_000"
    sav.mkdir(parents=True)
    shutil.copy(CLIP, sav / "sav_000001.mp4")
    (sav / "sav_000002.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with caplog.at_level(logging.WARNING):
        ds = open_dataset([str(davis), str(tmp_path / "sav")])
    assert [s.name for s in ds.sources] == ["cat", "sav_000001.mp4"]
    assert len(ds.skipped) == 1 and "sav_000002" in ds.skipped[0][0]
    assert "1 of 3 videos skipped" in caplog.text
    train, held = split(ds, 8, 3)
    assert held.source.name == "sav_000001.mp4" and (held.lo, held.hi) == (0, 8)
    clip = read_clip(ds.sources[1], 5, 3, 2)
    assert len(clip) == 3 and clip[0].shape == (270, 480, 3)
    assert read_clip(ds.sources[0], 0, 2)[1].mean() == pytest.approx(40, abs=2)


def test_empty_and_unreadable_data_are_input_errors(tmp_path):
    from sam2_edge.distill.data import open_dataset

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video"):
        open_dataset([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="does not exist"):
        open_dataset([str(tmp_path / "missing")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="none of the 1 videos"):
        open_dataset([str(tmp_path / "bad")])


def test_prompts_come_from_the_teacher_mask():
    from sam2_edge.distill.prompts import from_mask

    mask = np.zeros((64, 64), bool)
    mask[10:20, 30:50] = True
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(40):
        p = from_mask(rng, mask, 256)
        kinds.add(p.kind)
        if p.kind == "points":
            for (x, y), lab in zip(p.coords, p.labels):
                assert mask[int(y // 4), int(x // 4)] == bool(lab)
        elif p.kind == "box":
            assert abs(p.coords[0, 0] - 120) < 16 and abs(p.coords[1, 1] - 80) < 16
        else:
            assert np.array_equal(p.mask, mask)
    assert kinds == {"points", "box", "mask"}


# ---------------------------------------------------------------- the student checkpoint
@pytest.fixture(scope="module")
def micro_sd():
    return read_state_dict(str(MICRO))


def test_safetensors_checkpoint_loads_like_a_pt(tmp_path, micro_sd):
    p = tmp_path / "m.safetensors"
    save_file({k: v.half() for k, v in micro_sd.items()}, str(p), metadata={"variant": "micro"})
    sd = read_state_dict(str(p))
    assert set(sd) == set(micro_sd) and all(v.dtype == torch.float32 for v in sd.values())
    assert build_sam2(str(p)).cfg.name == "micro"


@pytest.mark.parametrize("spoil, match", [
    (lambda sd: sd.update({"x.num": torch.zeros(3, dtype=torch.int32)}), "dtype I32"),
    (lambda sd: sd["no_mem_embed"].view(-1).__setitem__(0, float("nan")), "non-finite"),
])
def test_hostile_safetensors_are_refused(tmp_path, micro_sd, spoil, match):
    sd = {k: v.clone() for k, v in micro_sd.items()}
    spoil(sd)
    p = tmp_path / "bad.safetensors"
    save_file(sd, str(p))
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(str(p))


def test_safetensors_header_lies_are_refused(tmp_path):
    def write(header: dict, data: bytes = b"") -> str:
        raw = json.dumps(header).encode()
        p = tmp_path / "h.safetensors"
        p.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
        return str(p)

    huge = {"a": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}
    with pytest.raises(CheckpointError, match="elements"):
        read_state_dict(write(huge))
    with pytest.raises(CheckpointError, match="data_offsets"):
        read_state_dict(write({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8))
    p = tmp_path / "long.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        read_state_dict(str(p))


def test_a_full_disk_leaves_no_half_written_checkpoint(tmp_path, monkeypatch):
    from sam2_edge.distill import store
    from sam2_edge.modeling.sam2 import SAM2Model

    model = SAM2Model(get_config("micro-student"))
    target = tmp_path / store.STUDENT_FILE
    store.save_student(target, model, {"variant": "micro-student"})
    before = target.read_bytes()

    def full(*a, **k):
        Path(a[1]).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(OutputError, match="out of disk space"):
        store.save_student(target, model, {"variant": "micro-student"})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [store.STUDENT_FILE]


# ---------------------------------------------------------------- the command, end to end
def _distill(out: Path, *extra: str) -> int:
    return main(["distill", "--teacher", str(MICRO), "--student", "micro-student", "--data", str(CLIP),
                 "--out", str(out), "--steps", "6", "--image-steps", "3", "--batch", "1", "--frames", "3",
                 "--eval-frames", "6", "--eval-every", "6", "--threads", "1", *extra])


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_distill_micro_end_to_end(tmp_path, capsys, restore_threads):
    from sam2_edge.checkpoint import safetensors_metadata
    from sam2_edge.contract import sha256_file
    from sam2_edge.runtimes import Tracker

    out = tmp_path / "run"
    assert _distill(out) == 0
    assert json.loads(capsys.readouterr().out)["heldout"]["JF"] >= JF_THRESHOLD
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    stage1 = [r["loss"] for r in records if r.get("stage") == 1]
    assert len(stage1) == 3 and stage1[-1] < stage1[0]  # the image stage's feature loss falls
    assert {"mask", "pointer", "memory_features", "score"} <= set(next(r for r in records if r.get("stage") == 2))
    assert summary["heldout"]["JF"] >= JF_THRESHOLD, summary
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in evals] == [0, 6] and evals[1]["eval"]["JF"] > evals[0]["eval"]["JF"]  # it learned
    student = out / "student.safetensors"
    meta = safetensors_metadata(str(student))
    assert meta["variant"] == "micro-student" and meta["teacher_sha256"] == sha256_file(str(MICRO))
    assert json.loads(meta["training_config"])["steps"] == 6
    assert build_sam2(str(student)).cfg.name == "micro-student"
    assert main(["info", str(student), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variant"] == "micro-student"
    tracker = Tracker.from_checkpoint(str(student))
    res = tracker.add_prompt(np.zeros((64, 80, 3), np.uint8), 1, points=[[40, 30]], labels=[1])
    assert res.masks.shape == (1, 64, 80)

    # a finished run is not overwritten; a resume must keep the run's config
    with pytest.raises(OutputError, match="--resume"):
        _distill_raise(out)
    assert _distill(out, "--resume", "--lr", "2e-4") == 2
    assert "started with another config" in capsys.readouterr().err
    assert _distill(out, "--resume", "--steps", "7") == 0  # one more step on top of the state
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 8))


def _distill_raise(out: Path) -> None:
    from sam2_edge.distill.trainer import TrainConfig, distill

    distill(TrainConfig(teacher=str(MICRO), student="micro-student", data=(str(CLIP),), out=str(out), steps=6,
                        image_steps=3, batch=1, frames=3, eval_frames=6, eval_every=6))


def test_distill_command_refuses_bad_input(tmp_path, capsys):
    base = ["distill", "--teacher", str(MICRO), "--data", str(CLIP), "--steps", "1"]
    assert main(base + ["--student", "sam2.1-hiera-tiny", "--out", str(tmp_path / "a")]) == 2
    assert "not compatible" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["distill", "--teacher", str(MICRO), "--student", "micro-student", "--data", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "b"), "--steps", "1"]) == 2
    assert "no video" in capsys.readouterr().err
    assert main(base + ["--student", "micro-student", "--out", str(tmp_path / "c"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_stage1_is_skipped_when_the_student_has_the_teachers_encoder():
    from sam2_edge.distill.trainer import TrainConfig

    cfg = TrainConfig(teacher="t.pt", student="s", data=("d",), out="o", steps=10)
    assert (cfg.stage1_steps(False), cfg.stage1_steps(True)) == (3, 0)
    assert TrainConfig(teacher="t.pt", student="s", data=("d",), out="o", steps=10, image_steps=4).stage1_steps(True) == 4


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    """DDP on CPU (gloo): 2 processes with --batch 2 give the 1-process losses up to float noise."""
    import os
    import subprocess
    import sys

    args = ["distill", "--teacher", str(MICRO), "--student", "micro-student", "--data", str(CLIP), "--steps", "3",
            "--image-steps", "1", "--batch", "2", "--frames", "2", "--eval-frames", "4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "-m", "sam2_edge.cli",
               *args, "--out", str(out)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[n] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(runs[1], runs[2]):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert json.loads((tmp_path / "p2" / "summary.json").read_text())["processes"] == 2


# ---------------------------------------------------------------- the lighter live-tracking students
LIVE_LITE = "sam2.1-repvit-256-lite"
LIVE_LITE_224 = "sam2.1-repvit-224-lite"


def test_live_lite_student_differs_from_repvit_256_only_in_memory_attention():
    import dataclasses

    from sam2_edge.distill.students import check_student, parameter_count

    s, base = get_config(LIVE_LITE), get_config("sam2.1-repvit-256")
    differs = {f.name for f in dataclasses.fields(s) if getattr(s, f.name) != getattr(base, f.name)}
    assert differs == {"name", "mem_attn_layers", "mem_attn_ffn_dim"}
    assert (s.mem_attn_layers, s.mem_attn_ffn_dim, s.image_size, s.mem_tokens) == (1, 1024, 256, 128)
    assert teacher_of(LIVE_LITE) == teacher_of("sam2.1-repvit-256") == "sam2.1-hiera-tiny"
    sizes = check_student(get_config(teacher_of(LIVE_LITE)), s)
    assert sizes["memory_attention_layers"] == (4, 1)
    assert parameter_count(s) < parameter_count(base)


def test_live_lite_224_student_is_the_256_one_at_224_px():
    import dataclasses

    from sam2_edge.distill.students import check_student

    s, base = get_config(LIVE_LITE_224), get_config(LIVE_LITE)
    differs = {f.name for f in dataclasses.fields(s) if getattr(s, f.name) != getattr(base, f.name)}
    assert differs == {"name", "image_size", "perceiver"}
    assert (s.image_size, s.feat_size, s.perceiver.num_latents, s.perceiver.grid) == (224, 14, 64, 7)
    assert s.feat_size % s.perceiver.grid == 0  # 2 x 2 windows of the 14 x 14 map
    sizes = check_student(get_config(teacher_of(LIVE_LITE_224)), s)
    assert sizes["image_size"] == (1024, 224) and sizes["memory_tokens_per_frame"] == (4096, 113)


@pytest.mark.parametrize("name", [LIVE_LITE, LIVE_LITE_224])
def test_live_lite_student_starts_from_the_teacher_and_tracks_from_its_checkpoint(tmp_path, name):
    """As `sam2-edge distill` builds it: from a (random) tiny teacher where names and shapes match
    (memory-attention layer 0 <- the teacher's layer 0, except its narrower FFN), saved as the
    distiller saves a student, then opened by the runtime like any checkpoint."""
    from sam2_edge.distill.store import save_student
    from sam2_edge.distill.students import init_from_teacher
    from sam2_edge.modeling.sam2 import SAM2Model
    from sam2_edge.runtimes import Tracker

    torch.manual_seed(0)
    teacher, student = SAM2Model(get_config("sam2.1-hiera-tiny")), SAM2Model(get_config(name))
    copied, total = init_from_teacher(student, teacher)
    assert 0 < copied < total
    t0, s0 = teacher.memory_attention.layers[0], student.memory_attention.layers[0]
    assert torch.equal(s0.self_attn.q_proj.weight, t0.self_attn.q_proj.weight)
    assert torch.equal(s0.cross_attn_image.k_proj.weight, t0.cross_attn_image.k_proj.weight)
    assert tuple(s0.linear1.weight.shape) == (1024, 256) and tuple(t0.linear1.weight.shape) == (2048, 256)
    del teacher
    path = tmp_path / "student.safetensors"
    save_student(path, student, {"variant": name})
    assert build_sam2(str(path)).cfg.name == name
    tracker = Tracker.from_checkpoint(str(path))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (90, 160, 3), dtype=np.uint8) for _ in range(3)]
    r = tracker.add_prompt(frames[0], 1, box=[40, 20, 120, 70])
    for f in frames[1:]:
        r = tracker.track(f)
    assert r.masks.shape == (1, 90, 160) and np.isfinite(r.mask_logits).all()
