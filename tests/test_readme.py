"""README's `## Use` commands, run as a user would, so the README cannot drift from the product.

The fenced bash block under "## Use" in README.md is parsed line by line (comments dropped,
`a && b` run as two commands) and each `sam2-edge ...` command runs in a subprocess in a fresh
folder, with these substitutions (the README names files the user has, the test has small ones):

* ``sam2.1_hiera_tiny.pt`` (any ``*.pt``)  -> the micro checkpoint
  tests/fixtures/micro/sam2.1_hiera_micro_seed14.fp16.pt (same key layout, 1.46 M parameters);
* ``video.mp4``                           -> the clip tests/assets/bedroom_240x136_200f.mp4, and every
  `track` gets ``--max-frames 5``;
* ``--point X,Y`` / ``--box X0,Y0,X1,Y1`` -> scaled from a 640x480 video (what the README's numbers
  fit) to the 240x136 clip.

Skipped, and reported as skipped: a command with ``--source 0`` (a camera: none in CI) and
``sam2-edge demo`` (interactive: a window and the keyboard). Each command that runs must exit 0
and leave the files it promises: `info` prints the variant, `track` writes OUT/masks/*.png,
OUT/masks.json and OUT/overlay.mp4, `export` a bundle that `load_manifest` validates (at the
--image-size asked, signed when --sign), `keygen` KEY and KEY.pub.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MICRO = REPO / "tests" / "fixtures" / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"
CLIP = REPO / "tests" / "assets" / "bedroom_240x136_200f.mp4"
README_FRAME = (640, 480)  # the video size the README's coordinates are written for
CLIP_FRAME = (240, 136)


def use_block() -> List[str]:
    """The lines of the first ```bash block under '## Use'."""
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^## Use\s*$(.*?)^## ", text, re.S | re.M)
    assert m, "README.md has no '## Use' section"
    block = re.search(r"```bash\n(.*?)```", m.group(1), re.S)
    assert block, "the '## Use' section has no ```bash block"
    return block.group(1).splitlines()


def commands() -> List[List[str]]:
    """Each `sam2-edge` command of the block as argv (comments dropped, `&&` split)."""
    out: List[List[str]] = []
    for line in use_block():
        words = shlex.split(line, comments=True)
        cmd: List[str] = []
        for w in words + ["&&"]:
            if w == "&&":
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def _scale(value: str, n: int) -> str:
    nums = [float(v) for v in value.split(",")]
    assert len(nums) == n, value
    sx, sy = CLIP_FRAME[0] / README_FRAME[0], CLIP_FRAME[1] / README_FRAME[1]
    return ",".join(f"{v * (sx if k % 2 == 0 else sy):.0f}" for k, v in enumerate(nums))


def substitute(argv: List[str]) -> Tuple[Optional[List[str]], str]:
    """(the argv to run, "") or (None, why it is skipped)."""
    assert argv[0] == "sam2-edge", f"README's Use block runs {argv[0]!r}, not sam2-edge: {argv}"
    if "..." in argv:
        pytest.fail(f"README command {' '.join(argv)!r} has a '...' placeholder: write the command out")
    if len(argv) > 1 and argv[1] == "demo":
        return None, "interactive demo (a window and the keyboard)"
    if "--source" in argv and argv[argv.index("--source") + 1].isdigit():
        return None, "camera source (no camera here)"
    out = []
    k = 0
    while k < len(argv):
        w = argv[k]
        if w.endswith(".pt"):
            w = str(MICRO)
        elif w == "video.mp4":
            w = str(CLIP)
        elif k > 0 and argv[k - 1] == "--point":
            w = _scale(w, 2)
        elif k > 0 and argv[k - 1] == "--box":
            w = _scale(w, 4)
        out.append(w)
        k += 1
    if out[1] == "track":
        out += ["--max-frames", "5"]
    return out, ""


def _flag(argv: List[str], name: str) -> Optional[str]:
    return argv[argv.index(name) + 1] if name in argv else None


def check_outputs(argv: List[str], cwd: Path, stdout: str) -> None:
    """The files (or output) `argv` promises."""
    from sam2_edge.contract import load_manifest

    sub = argv[1]
    if sub == "info":
        assert "variant" in stdout and "micro" in stdout, stdout
    elif sub == "track":
        out = cwd / _flag(argv, "--out")
        assert sorted(p.name for p in (out / "masks").glob("*.png")), f"no mask PNGs in {out}"
        doc = json.loads((out / "masks.json").read_text())
        assert len(doc["frames"]) == 5
        assert (out / "overlay.mp4").stat().st_size > 0
    elif sub == "export":
        out = cwd / _flag(argv, "--out")
        m = load_manifest(out)  # every file present, every sha256 right
        assert m.format == _flag(argv, "--format")
        if _flag(argv, "--image-size"):
            assert m.spec.image_size == int(_flag(argv, "--image-size"))
        if _flag(argv, "--sign"):
            assert (out / "manifest.sig").is_file()
    elif sub == "keygen":
        key = cwd / argv[2]
        assert key.is_file() and Path(str(key) + ".pub").is_file()
    else:
        pytest.fail(f"README's Use block has a command this test does not know how to check: {argv}")


def test_readme_use_block_parses():
    cmds = commands()
    subs = [c[1] for c in cmds]
    assert {"info", "track", "export", "keygen", "demo"} <= set(subs), subs
    assert all(c[0] == "sam2-edge" for c in cmds)


def test_readme_use_commands_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    ran, skipped = [], []
    for argv in commands():
        run, why = substitute(argv)
        if run is None:
            skipped.append(f"{' '.join(argv)}  [skipped: {why}]")
            continue
        r = subprocess.run([sys.executable, "-m", "sam2_edge.cli", *run[1:]], cwd=tmp_path, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, (f"README command failed (exit {r.returncode}): {' '.join(argv)}\n"
                                   f"ran as: {' '.join(run)}\n{r.stderr[-3000:]}")
        check_outputs(run, tmp_path, r.stdout)
        ran.append(" ".join(argv))
    print("ran:\n  " + "\n  ".join(ran) + "\nskipped:\n  " + "\n  ".join(skipped))
    assert ran and len(skipped) == 2, (ran, skipped)  # the camera line and the demo
