"""`sam2-edge info`: describe a checkpoint (JSON and text), clean errors with exit code 2."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("torch")

from conftest import MICRO_CKPT_SHA256  # noqa: E402
from sam2_edge.cli import main  # noqa: E402

MICRO_PARAMETERS = 1457906  # nn.Parameters of micro (sum over model.parameters())
MICRO_STATE_DICT_ELEMENTS = 1457970  # + the prompt encoder's 2x32 random-Fourier buffer (manifest num_params)


@pytest.fixture(scope="module")
def info_json(micro_ckpt):
    """Run `info --json` once (variant inference builds every registered layout on meta)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["info", micro_ckpt, "--json"])
    assert rc == 0, err.getvalue()
    return json.loads(out.getvalue())


def test_info_json(info_json, micro_ckpt):
    info = info_json
    print(json.dumps(info, indent=1))
    assert info["variant"] == "micro"
    assert info["sam_version"] == "SAM 2.1"
    assert info["sha256"] == MICRO_CKPT_SHA256
    assert info["tensors"] == 347
    assert info["size_bytes"] == os.path.getsize(micro_ckpt)
    assert info["image_size"] == 256
    assert os.path.samefile(info["path"], micro_ckpt)


def test_info_parameters_count_nn_parameters(info_json):
    assert info_json["parameters"] == MICRO_PARAMETERS


def test_info_text(micro_ckpt, capsys):
    assert main(["info", micro_ckpt]) == 0
    out = capsys.readouterr().out
    assert "micro" in out and "SAM 2.1" in out and MICRO_CKPT_SHA256 in out


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html><body>Not Found</body></html>", b"", None],
                         ids=["html-page", "empty", "missing"])
def test_info_non_checkpoint_exit_2(tmp_path, capsys, content):
    p = tmp_path / "not_a_checkpoint.pt"
    if content is not None:
        p.write_bytes(content)
    rc = main(["info", str(p), "--json"])
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.out == ""
    assert cap.err.startswith("sam2-edge info: error: ") and str(p) in cap.err
    assert "Traceback" not in cap.err


def test_info_sam20_micro_exit_2(tmp_path, capsys, micro_ckpt):
    import torch

    sd = torch.load(micro_ckpt, map_location="cpu", weights_only=True)["model"]
    sd = {k: v for k, v in sd.items() if k != "no_obj_embed_spatial" and not k.startswith("obj_ptr_tpos_proj.")}
    p = tmp_path / "micro_v20.pt"
    torch.save({"model": sd}, str(p))
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err
    assert "matches no known variant" in err and "micro" in err  # the variants it could be are listed
