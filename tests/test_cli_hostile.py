"""The command line against a careless user or an attacker: each case runs as a user would
(`python -m sam2_edge.cli ...` in a subprocess, small inputs, most failing before any model
work) and must exit non-zero with one error line naming the problem and no traceback; and no
command ever deletes or overwrites what the user owns (the export that deleted a folder holding
a manifest.json, a symlink as --out, a file where a folder goes).

Also, in-process: the one output rule of `sam2_edge.outputs` (what is replaced, what is
refused), re-running track over its own output, and `main()`'s last line of defence (OSError,
unexpected exceptions, Ctrl-C)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from bundle_helpers import make_fake_bundle

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures"
MICRO = FIX / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
CLIP = Path(__file__).parent / "assets" / "bedroom_240x136_200f.mp4"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sam2_edge.cli", *map(str, args)], cwd=str(cwd), env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(r: subprocess.CompletedProcess, command: str, *needles: str, rc: int = 2) -> str:
    """Exit code `rc`, no traceback, exactly one `sam2-edge COMMAND: error: ...` line that
    names the problem; -> that line."""
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == rc, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"sam2-edge {command}: ")]
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith(f"sam2-edge {command}: error: "), line
    for n in needles:
        assert n in line, (n, line)
    return line


def user_files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def no_partials(folder: Path) -> List[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith((".partial", ".old"))]


@pytest.fixture
def prompts(tmp_path) -> Path:
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"obj_id": 1, "frame": 0, "points": [[52, 87]]}]))
    return p


def our_fake_bundle(path: Path) -> Path:
    """A bundle folder as sam2-edge export writes it (exporter.name "sam2-edge")."""
    make_fake_bundle(path)
    m = json.loads((path / "manifest.json").read_text())
    m["exporter"] = {"name": "sam2-edge", "version": "0.1.0"}
    (path / "manifest.json").write_text(json.dumps(m))
    return path


# ------------------------------------------------------------------ export: never delete the user's folder
@pytest.mark.parametrize("manifest", ["{}", "not json", json.dumps({"schema_version": 1, "exporter": {"name": "x"}}),
                                      json.dumps({"exporter": {"name": "sam2-edge"}})])
def test_export_keeps_a_folder_it_did_not_make(tmp_path, manifest):
    """mkdir proj; echo '{}' > proj/manifest.json; echo keep > proj/thesis.tex; export --out proj
    deleted thesis.tex and exited 0."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "manifest.json").write_text(manifest)
    (proj / "thesis.tex").write_text("keep")
    before = user_files(proj)
    r = cli("export", "--checkpoint", MICRO, "--format", "onnx", "--out", "proj", "--no-progress", cwd=tmp_path)
    assert_refused(r, "export", "'proj'", "not a bundle made by sam2-edge export", "untouched")
    assert user_files(proj) == before and (proj / "thesis.tex").read_text() == "keep"
    assert not no_partials(tmp_path)


def test_export_refuses_a_symlink_even_to_its_own_bundle(tmp_path):
    target = our_fake_bundle(tmp_path / "real-bundle")
    before = user_files(target)
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    r = cli("export", "--checkpoint", MICRO, "--format", "onnx", "--out", "link", "--no-progress", cwd=tmp_path)
    assert_refused(r, "export", "'link'", "symbolic link")
    assert (tmp_path / "link").is_symlink() and user_files(target) == before


@pytest.mark.parametrize("out, needle", [("/proc/x", "under /proc"), ("/sys/kernel/x", "under /sys"),
                                         ("afile", "is a file"), ("afile/sub", "is a file, not a folder"),
                                         (".", "by its name")])
def test_export_bad_out_fails_before_exporting(tmp_path, out, needle):
    (tmp_path / "afile").write_text("mine")
    r = cli("export", "--checkpoint", MICRO, "--format", "onnx", "--out", out, "--no-progress", cwd=tmp_path)
    assert_refused(r, "export", needle)
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("extra", [["--bench"], ["--analyze"], ["--calib", "clip.mp4"]])
def test_export_float_refuses_options_of_the_quantised_flow(tmp_path, extra):
    """--bench / --analyze / --calib only mean something for a quantised precision: a float export
    given one says so instead of ignoring it, before any work."""
    r = cli("export", "--checkpoint", MICRO, "--format", "onnx", "--out", "b", *extra, "--no-progress", cwd=tmp_path)
    assert_refused(r, "export", extra[0], "quantized precisions")
    assert not (tmp_path / "b").exists()


def test_reexport_over_its_own_bundle_still_works(tmp_path):
    """A bundle sam2-edge made is replaced as a whole (old files gone, no temporary left)."""
    out = our_fake_bundle(tmp_path / "b")
    (out / "stale.onnx").write_text("from the earlier export")
    r = cli("export", "--checkpoint", MICRO, "--format", "onnx", "--out", "b", "--no-progress", cwd=tmp_path,
            timeout=900)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["exporter"]["name"] == "sam2-edge" and m["variant"] == "micro"
    assert not (out / "stale.onnx").exists() and (out / "image_encoder.onnx").stat().st_size > 1000
    assert no_partials(tmp_path) == []


# ------------------------------------------------------------------ track
@pytest.mark.parametrize("out, needle", [("afile", "is a file"), ("afile/sub", "is a file, not a folder"),
                                         ("/proc/x", "under /proc"), ("mine", "not the output of an earlier"),
                                         ("link", "symbolic link")])
def test_track_bad_out_fails_before_the_model(tmp_path, prompts, out, needle):
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "mine", target_is_directory=True)
    r = cli("track", "--checkpoint", "missing.pt", "--source", CLIP, "--prompts", prompts, "--out", out,
            "--max-frames", "3", cwd=tmp_path)
    assert_refused(r, "track", needle)
    assert (tmp_path / "afile").read_text() == "mine" and (tmp_path / "mine" / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(IS_ROOT, reason="root may write anywhere")
def test_track_unwritable_parent(tmp_path, prompts):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = cli("track", "--checkpoint", "missing.pt", "--source", CLIP, "--prompts", prompts, "--out", ro / "o",
                cwd=tmp_path)
        assert_refused(r, "track", "cannot write in the folder")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("content, needle", [
    (b'[{"obj_id": 1, "frame": 0, "points": 5}]', "entry #0 (obj_id 1, frame 0): 'points'"),
    (b'[{"obj_id": 1, "frame": 0, "points": null}]', "entry #0 (obj_id 1, frame 0): 'points'"),
    (b'[{"obj_id": 1, "frame": 0, "points": [[1, 2]], "labels": null}]', "'labels'"),
    (b'[{"obj_id": 1, "frame": 0, "box": null}]', "'box'"),
    (b'[{"obj_id": 1, "frame": 0, "mask": null}]', "'mask'"),
    (b'[{"obj_id": 1, "obj_id": 2, "frame": 0, "points": [[1, 2]]}]', "entry #0: key(s) ['obj_id'] given more"),
    (b'\xff\xfe[{"obj_id": 1}]', "not UTF-8"),
    (b"[" * 200_000 + b"]" * 200_000, "nests too deeply"),
    (b'[[[[[[[[[[[1]]]]]]]]]]]', "nests more than"),
    (b'{"prompts": 5}', "expected a JSON list"),
    (b'[{"obj_id": 1, "frame": 0, "points": [[1e999, 2]]}]', "'points'"),
])
def test_track_hostile_prompts_file(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    r = cli("track", "--checkpoint", "missing.pt", "--source", CLIP, "--prompts", p, "--out", "o", cwd=tmp_path)
    line = assert_refused(r, "track", needle)
    assert str(p) in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, needle", [
    (["--device", "bogus"], "not a torch device"),
    (["--device", "meta"], "not meta"),
    (["--max-frames", "0"], "argument --max-frames: must be >= 1"),
    (["--max-frames", "-3"], "argument --max-frames: must be >= 1"),
    (["--max-frames", "many"], "argument --max-frames: expected an integer"),
])
def test_track_bad_options(tmp_path, prompts, args, needle):
    r = cli("track", "--checkpoint", MICRO, "--source", CLIP, "--prompts", prompts, "--out", "o", *args,
            cwd=tmp_path)
    assert_refused(r, "track", needle)
    assert not (tmp_path / "o").exists()


def test_track_cuda_and_mps_on_a_machine_without_them(tmp_path, prompts):
    torch = pytest.importorskip("torch")
    for dev, available in (("cuda", torch.cuda.is_available()),
                           ("mps", getattr(torch.backends, "mps", None) is not None
                            and torch.backends.mps.is_available())):
        if available:
            continue
        r = cli("track", "--checkpoint", MICRO, "--source", CLIP, "--prompts", prompts, "--out", "o",
                "--device", dev, "--max-frames", "3", cwd=tmp_path)
        assert_refused(r, "track", f"device '{dev}'", "--device cpu")
        assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ demo
@pytest.mark.parametrize("args, needle", [
    (["--fps", "inf"], "argument --fps: must be a finite number"),
    (["--fps", "nan"], "argument --fps: must be a finite number"),
    (["--fps", "0"], "argument --fps: must be > 0"),
    (["--fps", "1e9"], "argument --fps: must be <= 1000"),
    (["--max-frames", "0"], "argument --max-frames: must be >= 1"),
    (["--display-scale", "nan"], "argument --display-scale"),
    (["--retry-delay", "-1"], "argument --retry-delay"),
    (["--masks-out", "afile"], "--masks-out 'afile' is a file"),
    (["--masks-out", "mine"], "--masks-out 'mine' is a non-empty folder"),
    (["--masks-out", "/proc/m"], "under /proc"),
    (["--device", "bogus"], "not a torch device"),
])
def test_demo_bad_options(tmp_path, prompts, args, needle):
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    r = cli("demo", "--checkpoint", MICRO, "--source", CLIP, "--headless", "--prompts", prompts,
            "--out", "o.mp4", "--max-frames", "3", *args, cwd=tmp_path, timeout=120)
    assert_refused(r, "demo", needle)
    assert (tmp_path / "afile").read_text() == "mine" and (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("out, needle", [("/proc/x.mp4", "under /proc"), ("adir.mp4", "is a folder"),
                                         ("o.txt", "must end in one of"), ("afile/o.mp4", "is a file, not a folder")])
def test_demo_bad_video_out(tmp_path, prompts, out, needle):
    (tmp_path / "adir.mp4").mkdir()
    (tmp_path / "afile").write_text("mine")
    r = cli("demo", "--checkpoint", MICRO, "--source", CLIP, "--headless", "--prompts", prompts, "--out", out,
            cwd=tmp_path, timeout=120)
    assert_refused(r, "demo", needle)


# ------------------------------------------------------------------ bench
@pytest.mark.parametrize("args, needle", [
    (["--json", "/proc/x.json"], "--json '/proc/x.json' is under /proc"),
    (["--json", "adir"], "--json 'adir' is a folder"),
    (["--json", "afile/x.json"], "is a file, not a folder"),
    (["--device", "bogus"], "not a torch device"),
    (["--export-dir", "afile"], "--export-dir 'afile' is not a folder"),
])
def test_bench_bad_outputs_fail_before_benchmarking(tmp_path, args, needle):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("mine")
    r = cli("bench", "--checkpoint", MICRO, "--frames", "10", "--objects", "1", "--threads", "1", "--no-progress",
            *args, cwd=tmp_path, timeout=120)
    assert_refused(r, "bench", needle)
    assert "fps" not in r.stdout  # no benchmark ran


def test_bench_plot_path_is_checked_first(tmp_path):
    pytest.importorskip("matplotlib")
    r = cli("bench", "--checkpoint", MICRO, "--frames", "10", "--no-progress", "--plot", "p.txt", cwd=tmp_path,
            timeout=120)
    assert_refused(r, "bench", "--plot 'p.txt'", "must end in one of")


def test_cuda_device_without_cuda_for_demo_and_bench(tmp_path, prompts):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("demo", "--checkpoint", MICRO, "--source", CLIP, "--headless", "--prompts", prompts, "--out", "o.mp4",
            "--device", "cuda", cwd=tmp_path, timeout=120)
    assert_refused(r, "demo", "device 'cuda'")
    assert not (tmp_path / "o.mp4").exists()
    r = cli("bench", "--checkpoint", MICRO, "--device", "cuda", "--no-progress", cwd=tmp_path, timeout=120)
    assert_refused(r, "bench", "device 'cuda'")


# ------------------------------------------------------------------ in-process: the output rule
def test_outputs_rule(tmp_path):
    from sam2_edge.errors import OutputError
    from sam2_edge.outputs import StagedDir, check_dir, check_file, has_marker, write_marker

    def ours(p):
        return has_marker(p, "test")

    kind = "a test output"
    # a missing folder: created; an empty folder: replaced
    for name, make in (("new", None), ("empty", lambda p: p.mkdir())):
        out = tmp_path / name
        if make:
            make(out)
        check_dir(out, "--out", ours, kind)
        with StagedDir(out, "--out", ours, kind) as st:
            (st.path / "a.txt").write_text("1")
            write_marker(st.path, "test")
            st.commit()
        assert (out / "a.txt").read_text() == "1" and ours(out)
    # our folder: replaced as a whole
    out = tmp_path / "new"
    with StagedDir(out, "--out", ours, kind) as st:
        (st.path / "b.txt").write_text("2")
        write_marker(st.path, "test")
        st.commit()
    assert sorted(os.listdir(out)) == ["b.txt", "sam2_edge_output.json"]
    # a folder that became the user's during the work: refused at the end, nothing lost
    out = tmp_path / "race"
    with pytest.raises(OutputError, match="untouched"):
        with StagedDir(out, "--out", ours, kind) as st:
            (st.path / "c.txt").write_text("3")
            out.mkdir()
            (out / "thesis.tex").write_text("keep")
            st.commit()
    assert (out / "thesis.tex").read_text() == "keep" and no_partials(tmp_path) == []
    # an error before commit: the temporary folder is removed, the old folder kept
    with pytest.raises(RuntimeError):
        with StagedDir(tmp_path / "new", "--out", ours, kind) as st:
            raise RuntimeError("boom")
    assert (tmp_path / "new" / "b.txt").exists() and no_partials(tmp_path) == []
    # files: a folder, a link, /proc are refused; a regular file is fine
    (tmp_path / "f.json").write_text("{}")
    assert check_file(tmp_path / "f.json", "--json") == tmp_path / "f.json"
    (tmp_path / "lnk.json").symlink_to(tmp_path / "f.json")
    for bad, needle in ((tmp_path / "new", "is a folder"), (tmp_path / "lnk.json", "symbolic link"),
                        ("/proc/self/x", "under /proc"), ("", "empty"), ("a\0b", "NUL")):
        with pytest.raises(OutputError, match=needle):
            check_file(bad, "--json")


def test_track_rerun_replaces_its_own_output_only(tmp_path, monkeypatch, capsys):
    """Re-running track over its own output replaces it (stale masks gone); a file of the
    user's put into that folder makes it the user's: refused, kept."""
    from sam2_edge.cli import main
    from sam2_edge.runtimes import Tracker
    from test_raspi_demo import FakeTracker

    monkeypatch.setattr(Tracker, "from_checkpoint", staticmethod(lambda *a, **k: FakeTracker()))
    out = tmp_path / "o"
    args = ["track", "--checkpoint", "unused.pt", "--source", str(CLIP), "--point", "52,87", "--out", str(out)]
    assert main(args + ["--max-frames", "4"]) == 0
    assert sorted(os.listdir(out / "masks")) == [f"{i:05d}_obj1.png" for i in range(4)]
    assert (out / "sam2_edge_output.json").is_file()
    assert main(args + ["--max-frames", "2"]) == 0
    assert sorted(os.listdir(out / "masks")) == [f"{i:05d}_obj1.png" for i in range(2)]
    (out / "notes.txt").write_text("mine")
    assert main(args + ["--max-frames", "2"]) == 2
    assert "not the output of an earlier sam2-edge track" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and len(os.listdir(out / "masks")) == 2
    assert no_partials(tmp_path) == []


def test_track_ctrl_c_keeps_what_was_tracked(tmp_path, monkeypatch, capsys):
    """A camera runs until Ctrl-C: the frames tracked so far are written, exit 130."""
    from sam2_edge.cli import main
    from sam2_edge.runtimes import Tracker
    from test_raspi_demo import FakeTracker

    monkeypatch.setattr(Tracker, "from_checkpoint", staticmethod(lambda *a, **k: FakeTracker(interrupt_at_track=3)))
    out = tmp_path / "o"
    rc = main(["track", "--checkpoint", "unused.pt", "--source", str(CLIP), "--point", "52,87", "--out", str(out)])
    assert rc == 130
    assert "Traceback" not in capsys.readouterr().err
    marker = json.loads((out / "sam2_edge_output.json").read_text())
    assert marker["command"] == "track" and marker["interrupted"] is True
    assert len(os.listdir(out / "masks")) == marker["frames"] - 1 >= 1
    assert no_partials(tmp_path) == []


def test_demo_masks_out_replaces_only_a_masks_folder(tmp_path, monkeypatch):
    from apps.raspi_demo import app as demo_app
    from test_raspi_demo import FakeTracker

    monkeypatch.setattr(demo_app, "load_tracker", lambda a: FakeTracker())
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"obj_id": 1, "frame": 0, "points": [[52, 87]]}]))
    masks = tmp_path / "m"
    base = ["--bundle", "b", "--source", str(CLIP), "--headless", "--prompts", str(p), "--out",
            str(tmp_path / "o.mp4"), "--masks-out", str(masks)]
    assert demo_app.main(base + ["--max-frames", "3"]) == 0
    assert sorted(os.listdir(masks)) == [f"{i:05d}_obj1.png" for i in range(3)]
    assert demo_app.main(base + ["--max-frames", "2"]) == 0       # its own masks folder: replaced
    assert sorted(os.listdir(masks)) == [f"{i:05d}_obj1.png" for i in range(2)]
    (masks / "notes.txt").write_text("mine")
    assert demo_app.main(base + ["--max-frames", "2"]) == 2
    assert (masks / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ in-process: main()'s last line of defence
@pytest.mark.parametrize("exc, rc, needle", [
    (PermissionError(13, "Permission denied", "/data/x.json"), 1, "error: '/data/x.json': Permission denied"),
    (OSError(28, "No space left on device"), 1, "error: No space left on device"),
    (ZeroDivisionError("division by zero"), 1,
     "internal error: ZeroDivisionError: division by zero (run with -v for the traceback)"),
    (RecursionError("maximum recursion depth exceeded"), 1, "internal error: RecursionError"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_main_turns_every_failure_into_one_line(monkeypatch, capsys, exc, rc, needle):
    from sam2_edge import cli

    def make(p):
        def run(a):
            raise exc
        return run

    monkeypatch.setitem(cli._COMMANDS, "boom", make)
    assert cli.main(["boom"]) == rc
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"sam2-edge boom: {needle}"] or needle in err.strip().splitlines()[-1]
    assert len(err.strip().splitlines()) == 1


def test_main_verbose_shows_the_traceback(monkeypatch, capsys):
    from sam2_edge import cli

    def make(p):
        def run(a):
            raise ValueError("multi\nline")
        return run

    monkeypatch.setitem(cli._COMMANDS, "boom", make)
    assert cli.main(["-v", "boom"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "sam2-edge boom: internal error: ValueError: multi line"


def test_typed_error_is_one_line(monkeypatch, capsys):
    from sam2_edge import cli
    from sam2_edge.errors import InputError

    def make(p):
        def run(a):
            raise InputError("could not open x. Tried:\n  a: no\n  b: no")
        return run

    monkeypatch.setitem(cli._COMMANDS, "boom", make)
    assert cli.main(["boom"]) == 2
    assert capsys.readouterr().err == "sam2-edge boom: error: could not open x. Tried: a: no b: no\n"


def test_output_folders_get_normal_permissions(tmp_path):
    """A finished output folder is readable like any folder mkdir makes (mkdtemp's 0700 would
    leave a bundle unreadable to the service that runs it)."""
    import stat

    from sam2_edge.outputs import staging_dir

    mask = os.umask(0o022)
    try:
        d = staging_dir(tmp_path / "bundle")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755
