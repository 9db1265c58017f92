"""Packaging: importing sam2_edge never imports torch, and the wheel installs only the
`sam2_edge` namespace (the top-level `export/`, `quantization/`, `runtimes/` folders of the
repository map to sam2_edge.export / .quantization / .runtimes, never to bare packages)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["sam2_edge", "sam2_edge.export", "sam2_edge.quantization", "sam2_edge.runtimes",
               "sam2_edge.runtimes.backends"]
TORCH_PACKAGES = ["sam2_edge.modeling"]  # need torch: only checked to be in the wheel
BARE = ["export", "runtimes", "quantization"]


def _run(cmd, timeout, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def test_import_never_imports_torch():
    code = ("import sam2_edge, sam2_edge.runtimes, sam2_edge.runtimes.backends, sam2_edge.export, "
            "sam2_edge.quantization, sam2_edge.cli, sys; "
            "from sam2_edge import CheckpointError, get_config, list_variants; "
            "assert list_variants(), 'no variants'; "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not bad, bad; print('ok')")
    r = _run([sys.executable, "-c", code], 120, cwd=str(REPO_ROOT.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "ok"


def _copy_source(dst: Path) -> Path:
    """Build from a clean copy: an in-tree build would leave build/ and *.egg-info behind and can
    pick stale files from an old build/lib."""
    src = dst / "src"
    ignore = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".git", ".venv*", "tests",
                                    "benchmarks", "apps", "out", "*.onnx", "*.pte", "*.mlpackage")
    shutil.copytree(REPO_ROOT, src, ignore=ignore)
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_source(tmp)
    wheel_dir = tmp / "dist"
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
              "-w", str(wheel_dir), str(src)], 180)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(wheel_dir.glob("sam2_edge-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    """A clean venv (no system site packages) with the wheel and its deps from the index."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    r = _run([sys.executable, "-m", "venv", str(venv)], 120)
    assert r.returncode == 0, r.stdout + r.stderr
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # dependencies (numpy, opencv-python-headless) come from the package index
    r = _run([str(py), "-m", "pip", "install", "-q", str(wheel)], 300)
    if r.returncode != 0:
        out = r.stdout + r.stderr
        unreachable = ("No matching distribution", "Could not find a version", "NewConnectionError",
                       "Temporary failure in name resolution", "Network is unreachable", "ConnectTimeout",
                       "ProxyError", "Max retries exceeded", "HTTPSConnection")
        if any(s in out for s in unreachable):
            pytest.skip("pip cannot reach the package index for numpy / opencv-python-headless:\n" + out[-800:])
        pytest.fail("pip install of the wheel failed:\n" + out)
    return py


@pytest.mark.wheel
def test_wheel_contents(wheel):
    zf = zipfile.ZipFile(wheel)
    names = zf.namelist()
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    top = {n.split("/")[0] for n in names}
    assert top == {"sam2_edge", dist_info}, sorted(top)
    for pkg in SUBPACKAGES + TORCH_PACKAGES:
        assert pkg.replace(".", "/") + "/__init__.py" in names, f"{pkg} missing from the wheel"
    assert "sam2_edge/modeling/sam2.py" in names
    for bare in BARE:
        assert not any(n.startswith(bare + "/") for n in names), f"bare top-level '{bare}' in the wheel"
    assert zf.read(f"{dist_info}/top_level.txt").decode().split() == ["sam2_edge"]
    assert "sam2-edge = sam2_edge.cli:main" in zf.read(f"{dist_info}/entry_points.txt").decode()


@pytest.mark.wheel
def test_wheel_installs_only_sam2_edge(venv_python, tmp_path):
    check = textwrap.dedent(f"""
        import importlib, importlib.util, json, sys
        found = {{}}
        for name in {SUBPACKAGES!r}:
            m = importlib.import_module(name)
            found[name] = m.__file__
        bare = {{b: importlib.util.find_spec(b) is not None for b in {BARE!r}}}
        modeling = importlib.util.find_spec("sam2_edge.modeling") is not None
        torch = "torch" in sys.modules
        print(json.dumps({{"found": found, "bare": bare, "modeling": modeling, "torch": torch}}))
    """)
    # run outside the repository so the source tree can never shadow the installed package
    r = _run([str(venv_python), "-c", check], 120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    venv = str(venv_python.parents[1])
    for name, f in res["found"].items():
        assert f.startswith(venv), f"{name} imported from {f}, not from the venv"
    assert res["bare"] == {b: False for b in BARE}, res["bare"]
    assert res["modeling"] is True
    assert res["torch"] is False

    # the console script works without torch
    exe = venv_python.parent / ("sam2-edge.exe" if os.name == "nt" else "sam2-edge")
    r = _run([str(exe), "--help"], 120, cwd=str(tmp_path))
    assert r.returncode == 0 and "info" in r.stdout, r.stdout + r.stderr


@pytest.mark.wheel
def test_cli_info_without_torch_names_the_extra(venv_python, tmp_path):
    exe = venv_python.parent / ("sam2-edge.exe" if os.name == "nt" else "sam2-edge")
    ckpt = REPO_ROOT / "tests" / "fixtures" / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
    r = _run([str(exe), "info", str(ckpt)], 120, cwd=str(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "sam2-edge[torch]" in r.stderr
