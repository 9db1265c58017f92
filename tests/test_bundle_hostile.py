"""Hostile bundles: each test is named after the attack it stops. The product must answer
with a BundleError (or a clean result), never run unverified bytes, never hang, never let
the process die."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bundle_helpers import copy_bundle, make_fake_bundle, micro_onnx_bundle, read_manifest, write_manifest
from sam2_edge.contract import STAGES, hash_graph, load_manifest
from sam2_edge.contract.bundle_dir import read_bundle
from sam2_edge.contract.examples import example_inputs
from sam2_edge.errors import BundleError, ConfigError
from sam2_edge.runtimes import bundle_backends

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fake(tmp_path):
    return make_fake_bundle(tmp_path / "fake")


@pytest.fixture(scope="module")
def micro_bundle(tmp_path_factory):
    return micro_onnx_bundle(tmp_path_factory)


def _rehash(root: Path, stage: str) -> None:
    m = read_manifest(root)
    m["graphs"][stage]["sha256"] = hash_graph(root / m["graphs"][stage]["file"])
    write_manifest(root, m)


# ------------------------------------------------------------------ the bytes checked are the bytes run
def test_graph_overwritten_after_loading_does_not_reach_the_running_backend(micro_bundle, tmp_path):
    root = copy_bundle(micro_bundle, tmp_path / "b")
    be = bundle_backends.open_bundle(root, isolate=False, threads=1)
    spec = be.spec
    args = example_inputs(spec, "mask_decoder")
    before = be.run("mask_decoder", args)
    # swap the file for another stage's graph (and even fix the manifest): the backend runs the
    # bytes it verified when it was opened, read once into memory
    (root / "mask_decoder.onnx").write_bytes((root / "memory_encoder.onnx").read_bytes())
    _rehash(root, "mask_decoder")
    after = be.run("mask_decoder", args)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_file_swapped_between_hash_and_load_is_never_run(micro_bundle, tmp_path, monkeypatch):
    """Reading a graph is the only access: the sha256 is computed over the very bytes handed to
    the runtime, so a swap after the check cannot be loaded."""
    root = copy_bundle(micro_bundle, tmp_path / "b")
    from sam2_edge.contract import bundle_dir

    real = bundle_dir.read_regular
    reads = []

    def spy(path, *a, **k):
        data = real(path, *a, **k)
        reads.append(Path(path).name)
        if Path(path).name == "image_encoder.onnx":  # an attacker swaps the file right after it was read
            (root / "image_encoder.onnx").write_bytes(b"not a graph")
        return data

    monkeypatch.setattr(bundle_dir, "read_regular", spy)
    be = bundle_backends.open_bundle(root, isolate=False, threads=1)
    assert reads.count("image_encoder.onnx") == 1
    out = be.run("image_encoder", example_inputs(be.spec, "image_encoder"))
    assert all(np.isfinite(o).all() for o in out)


# ------------------------------------------------------------------ ONNX external data
def _with_external_data(src: Path, dst: Path, location: str, list_it: bool) -> Path:
    onnx = pytest.importorskip("onnx")
    root = copy_bundle(src, dst)
    model = onnx.load(str(root / "memory_encoder.onnx"))
    onnx.save_model(model, str(root / "memory_encoder.onnx"), save_as_external_data=True,
                    location="memory_encoder.onnx.data", all_tensors_to_one_file=True, size_threshold=1024)
    model = onnx.load(str(root / "memory_encoder.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save_model(model, str(root / "memory_encoder.onnx"))
    m = read_manifest(root)
    g = m["graphs"]["memory_encoder"]
    g["sha256"] = hash_graph(root / "memory_encoder.onnx")
    if list_it:
        g["data_files"] = [{"file": "memory_encoder.onnx.data",
                            "sha256": hash_graph(root / "memory_encoder.onnx.data")}]
    write_manifest(root, m)
    return root


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../etc/passwd", "memory_encoder.onnx.data"])
def test_external_weights_outside_the_manifest_are_refused(micro_bundle, tmp_path, location):
    """A graph naming weights the manifest does not list (and hash) -- /etc/passwd, a path out
    of the bundle, or an unlisted file next to it -- is refused before onnxruntime opens it."""
    root = _with_external_data(micro_bundle, tmp_path / "ext", location, list_it=False)
    with pytest.raises(BundleError, match="not one of the data files"):
        bundle_backends.open_bundle(root, isolate=False)


def test_listed_external_weights_load_from_memory(micro_bundle, tmp_path):
    root = _with_external_data(micro_bundle, tmp_path / "ext", "memory_encoder.onnx.data", list_it=True)
    ref = bundle_backends.open_bundle(micro_bundle, isolate=False, threads=1)
    be = bundle_backends.open_bundle(root, isolate=False, threads=1)
    args = example_inputs(be.spec, "memory_encoder")
    np.testing.assert_array_equal(be.run("memory_encoder", args)[0], ref.run("memory_encoder", args)[0])
    # altering the listed data file afterwards changes nothing; altering it before is caught
    (root / "memory_encoder.onnx.data").write_bytes(b"\0" * 64)
    with pytest.raises(BundleError, match="altered"):
        bundle_backends.open_bundle(root, isolate=False)


# ------------------------------------------------------------------ files that are not files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_as_graph_is_refused_without_hanging(fake):
    os.remove(fake / "mask_decoder.onnx")
    os.mkfifo(fake / "mask_decoder.onnx")
    t0 = time.perf_counter()
    with pytest.raises(BundleError, match="not a regular file|not a file"):
        read_bundle(fake)
    with pytest.raises(BundleError, match="not a regular file|not a file"):
        load_manifest(fake)
    assert time.perf_counter() - t0 < 5


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_inside_mlpackage_is_refused_without_hanging(tmp_path):
    root = make_fake_bundle(tmp_path / "cm", fmt="coreml")
    os.mkfifo(root / "image_encoder.mlpackage" / "Data" / "fifo")
    t0 = time.perf_counter()
    with pytest.raises(BundleError, match="not a regular file"):
        load_manifest(root)
    with pytest.raises(BundleError, match="not a regular file"):
        read_bundle(root)
    assert time.perf_counter() - t0 < 5


def test_manifest_symlink_out_of_the_bundle_is_refused(fake, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text((fake / "manifest.json").read_text())
    os.remove(fake / "manifest.json")
    os.symlink(outside, fake / "manifest.json")
    with pytest.raises(BundleError, match="symbolic link"):
        load_manifest(fake)


# ------------------------------------------------------------------ JSON and limits
def test_duplicate_json_keys_are_refused(fake):
    text = (fake / "manifest.json").read_text()
    (fake / "manifest.json").write_text(text.replace('"variant": "micro"', '"variant": "micro", "variant": "evil"'))
    with pytest.raises(BundleError, match="duplicate key"):
        load_manifest(fake)


def test_deeply_nested_json_is_a_bundle_error(fake):
    m = read_manifest(fake)
    text = json.dumps(m)[:-1] + ', "extra": ' + "[" * 200_000 + "]" * 200_000 + "}"
    (fake / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="nested too deeply|not valid JSON"):
        load_manifest(fake)


def test_data_files_of_wrong_type_is_a_bundle_error(fake):
    m = read_manifest(fake)
    m["graphs"]["image_encoder"]["data_files"] = 5
    write_manifest(fake, m)
    with pytest.raises(BundleError, match="data_files must be a list"):
        load_manifest(fake)


@pytest.mark.parametrize("key,value", [("cond_slots", 10**6), ("image_size", 2**20), ("max_clicks", 10**9),
                                       ("mem_dim", 10**5), ("num_maskmem", 1000)])
def test_absurd_spec_is_refused_before_any_allocation(fake, key, value):
    m = read_manifest(fake)
    m["spec"][key] = value
    if key == "image_size":
        m["preprocessing"]["image_size"] = value
        m["model_config"]["image_size"] = value
    write_manifest(fake, m)
    with pytest.raises(BundleError, match=f"spec.{key}"):
        load_manifest(fake, verify_hashes=False)


def test_preprocessing_that_would_be_ignored_is_refused(fake):
    """Every validated field is honoured: a bundle asking for another normalisation than the
    one the runtime applies is refused, not silently run with the wrong one."""
    m = read_manifest(fake)
    m["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
    write_manifest(fake, m)
    with pytest.raises(BundleError, match="mean"):
        load_manifest(fake)


# ------------------------------------------------------------------ origin: signatures
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from sam2_edge.contract.signing import generate_key

    d = tmp_path_factory.mktemp("keys")
    return generate_key(d / "alice"), generate_key(d / "mallory")


def _signed(src: Path, dst: Path, key: str) -> Path:
    from sam2_edge.contract.signing import sign_manifest

    root = copy_bundle(src, dst)
    (root / "manifest.sig").write_bytes(sign_manifest((root / "manifest.json").read_bytes(), key))
    return root


def test_signed_bundle_with_trusted_key_loads_without_isolation(micro_bundle, tmp_path, keys, monkeypatch):
    alice, _ = keys
    root = _signed(micro_bundle, tmp_path / "s", alice["private"])
    import sam2_edge.runtimes.smoke as smoke

    monkeypatch.setattr(smoke, "smoke_in_child", lambda *a, **k: pytest.fail("a trusted bundle needs no child"))
    be = bundle_backends.open_bundle(root, trusted_keys=[alice["public"]], threads=1)
    assert be.signed_by == alice["key_id"]


def test_bundle_signed_by_an_untrusted_key_is_refused(micro_bundle, tmp_path, keys):
    alice, mallory = keys
    root = _signed(micro_bundle, tmp_path / "s", mallory["private"])
    with pytest.raises(BundleError, match="not one of the trusted keys"):
        bundle_backends.open_bundle(root, trusted_keys=[alice["public"]])


def test_manifest_edited_after_signing_is_refused(micro_bundle, tmp_path, keys):
    alice, _ = keys
    root = _signed(micro_bundle, tmp_path / "s", alice["private"])
    m = read_manifest(root)
    m["variant"] = "micro-but-edited"
    write_manifest(root, m)
    with pytest.raises(BundleError, match="does not match its manifest"):
        bundle_backends.open_bundle(root, trusted_keys=[alice["public"]])


def test_unsigned_bundle_is_refused_when_keys_are_given(micro_bundle, keys):
    alice, _ = keys
    with pytest.raises(BundleError, match="not signed"):
        bundle_backends.open_bundle(micro_bundle, trusted_keys=[alice["public"]])
    with pytest.raises(ConfigError, match="trusted_keys"):
        bundle_backends.open_bundle(micro_bundle, require_signature=True)


def test_unsigned_bundle_loads_with_a_warning_and_an_isolated_smoke_run(micro_bundle, caplog, monkeypatch):
    import sam2_edge.runtimes.smoke as smoke

    calls = []
    real = smoke.smoke_in_child
    monkeypatch.setattr(smoke, "smoke_in_child", lambda *a, **k: calls.append(real(*a, **k)))
    with caplog.at_level("WARNING"):
        bundle_backends.open_bundle(micro_bundle, threads=1)
    assert "not signed" in caplog.text
    assert len(calls) == 1 and calls[0] > 0
    print(f"\n[isolation] child load + smoke run of the micro ONNX bundle: {calls[0]:.2f} s")


def test_keygen_never_overwrites_a_key(keys):
    from sam2_edge.contract.signing import generate_key

    alice, _ = keys
    before = Path(alice["private"]).read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_key(alice["private"])
    assert Path(alice["private"]).read_bytes() == before
    assert oct(os.stat(alice["private"]).st_mode & 0o777) == "0o600"


def test_export_sign_and_cli_trusted_key(tmp_path, keys):
    """`sam2-edge keygen` + `sam2-edge export --sign` write a bundle that the trusted key opens."""
    from bundle_helpers import MICRO_CKPT

    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "sam2_edge.cli", "keygen", str(tmp_path / "k")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "sam2_edge.cli", "export", "--checkpoint", str(MICRO_CKPT), "--format",
                        "onnx", "--out", str(tmp_path / "b"), "--sign", str(tmp_path / "k"), "--no-progress"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "manifest.sig").is_file()
    be = bundle_backends.open_bundle(tmp_path / "b", trusted_keys=[tmp_path / "k.pub"], threads=1)
    assert be.signed_by is not None


# ------------------------------------------------------------------ a crash in the runtime
def test_a_runtime_crash_in_the_child_becomes_a_bundle_error(monkeypatch, tmp_path):
    import signal

    import sam2_edge.runtimes.smoke as smoke

    monkeypatch.setattr(smoke.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -signal.SIGSEGV, "",
                                                                                              ""))
    with pytest.raises(BundleError, match="crashed the executorch runtime \\(SIGSEGV\\)"):
        smoke.smoke_in_child(tmp_path, "executorch", {}, "0" * 64)


# ------------------------------------------------------------------ fuzz: mutated graph bytes
_FUZZ_CHILD = textwrap.dedent("""
    import sys
    from sam2_edge.errors import Sam2EdgeError
    from sam2_edge.runtimes import Tracker
    import numpy as np
    try:
        t = Tracker.from_bundle(sys.argv[1])
        frame = np.zeros((64, 96, 3), np.uint8)
        t.add_prompt(frame, obj_id=1, points=[[40, 30]], labels=[1])
        t.track(frame)
        print("CLEAN")
    except Sam2EdgeError as e:
        print("REFUSED", type(e).__name__)
""")


def _fuzz(bundle: Path, suffix: str, tmp_path: Path, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    outcomes = {"CLEAN": 0, "REFUSED": 0}
    for i in range(n):
        root = copy_bundle(bundle, tmp_path / f"f{i}")
        stage = STAGES[i % len(STAGES)]
        path = root / f"{stage}{suffix}"
        data = bytearray(path.read_bytes())
        for _ in range(int(rng.integers(1, 4))):  # flip 1-3 bytes, anywhere
            j = int(rng.integers(0, len(data)))
            data[j] ^= int(rng.integers(1, 256))
        if i % 5 == 4:  # sometimes truncate instead
            data = data[: int(rng.integers(16, len(data)))]
        path.write_bytes(bytes(data))
        _rehash(root, stage)  # the attacker writes the manifest too
        r = subprocess.run([sys.executable, "-c", _FUZZ_CHILD, str(root)], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert r.returncode == 0, f"mutation {i} of {stage}{suffix} killed the process (rc {r.returncode}): " \
                                  f"{r.stderr[-2000:]}"
        verdict = r.stdout.strip().splitlines()[-1].split()[0]
        assert verdict in outcomes, r.stdout
        outcomes[verdict] += 1
    return outcomes


def test_fuzzed_onnx_bytes_give_bundle_error_or_clean_result(micro_bundle, tmp_path):
    out = _fuzz(micro_bundle, ".onnx", tmp_path, n=6, seed=1)
    print(f"\n[fuzz onnx] {out}")
    assert sum(out.values()) == 6


@pytest.fixture(scope="module")
def micro_pte(tmp_path_factory):
    pytest.importorskip("executorch")
    from bundle_helpers import micro_pte_bundle

    return micro_pte_bundle(tmp_path_factory)


def test_fuzzed_pte_bytes_give_bundle_error_or_clean_result(micro_pte, tmp_path):
    out = _fuzz(micro_pte, ".pte", tmp_path, n=6, seed=2)
    print(f"\n[fuzz pte] {out}")
    assert sum(out.values()) == 6


def test_pte_with_a_non_utf8_method_name_is_a_bundle_error_not_an_abort(micro_pte, tmp_path):
    """ExecuTorch aborts the process (SIGABRT) on a program whose method name is not UTF-8;
    an untrusted bundle is loaded in a child first, so this process gets a BundleError."""
    root = copy_bundle(micro_pte, tmp_path / "b")
    path = root / "mask_decoder.pte"
    data = path.read_bytes()
    assert b"forward" in data
    path.write_bytes(data.replace(b"forward", b"forw\xffrd"))
    _rehash(root, "mask_decoder")
    with pytest.raises(BundleError):
        bundle_backends.open_bundle(root, threads=1)


def test_pte_truncated_under_a_running_tracker_does_not_reach_it(micro_pte, tmp_path):
    """Programs are loaded from the verified bytes, not memory-mapped from the bundle: truncating
    or overwriting a .pte after loading cannot crash (SIGBUS) or change the running tracker."""
    root = copy_bundle(micro_pte, tmp_path / "b")
    be = bundle_backends.open_bundle(root, isolate=False, threads=1)
    args = example_inputs(be.spec, "memory_encoder")
    before = be.run("memory_encoder", args)
    with open(root / "memory_encoder.pte", "r+b") as f:
        f.truncate(100)
    (root / "image_encoder.pte").write_bytes(b"\0" * 1000)
    after = be.run("memory_encoder", args)
    np.testing.assert_array_equal(before[0], after[0])
    assert all(np.isfinite(o).all() for o in be.run("image_encoder", example_inputs(be.spec, "image_encoder")))



def test_altered_attachment_is_refused(fake):
    """Files no graph loads (a quantization report) are listed and hashed too: editing them is
    caught like editing a graph."""
    (fake / "report.json").write_text('{"iou": 0.99}')
    m = read_manifest(fake)
    m["attachments"] = [{"file": "report.json", "sha256": hash_graph(fake / "report.json")}]
    write_manifest(fake, m)
    assert [a.file for a in load_manifest(fake).attachments] == ["report.json"]
    (fake / "report.json").write_text('{"iou": 1.00}')
    with pytest.raises(BundleError, match="altered"):
        load_manifest(fake)
    with pytest.raises(BundleError, match="altered"):
        read_bundle(fake)
    m["attachments"] = [{"file": "../outside.json", "sha256": "0" * 64}]
    write_manifest(fake, m)
    with pytest.raises(BundleError, match=r"\.\."):
        load_manifest(fake)
