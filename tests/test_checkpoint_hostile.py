"""Hostile checkpoints: every attack is refused with a typed CheckpointError that says what was
found, before anything is inflated, unpickled or built (issue "hardening", item 5).

The hostile files are built in tmp_path from the micro fixture checkpoint; the archive-level
ones are written by a small hand-rolled zip writer (`_write_zip`) so that the central
directory can declare whatever an attacker likes.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import pytest

torch = pytest.importorskip("torch")

from conftest import MICRO_CKPT, REPO_ROOT, optional_tiny_ckpt  # noqa: E402
from sam2_edge import CheckpointError  # noqa: E402
from sam2_edge import checkpoint as ckpt  # noqa: E402
from sam2_edge.checkpoint import (build_sam2, check_archive, checkpoint_limits,  # noqa: E402
                                  load_checkpoint, read_state_dict)

GiB = 1 << 30
MiB = 1 << 20
KEY = "sam_mask_decoder.iou_prediction_head.layers.0.weight"  # any micro tensor


@pytest.fixture(scope="module")
def micro_sd():
    """The micro checkpoint's raw (fp16) state dict; copy before modifying."""
    return torch.load(str(MICRO_CKPT), map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def micro_members():
    """[(name, bytes)] of the micro archive, in order (all stored, as torch.save writes them)."""
    with zipfile.ZipFile(MICRO_CKPT) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


@pytest.fixture
def no_torch_load(monkeypatch):
    """Fail the test if anything is unpickled (a refusal must come first)."""
    def refuse(*a, **k):
        raise AssertionError("torch.load was called on a file that should have been refused before it")
    monkeypatch.setattr(ckpt.torch, "load", refuse)


@pytest.fixture
def no_inflating(monkeypatch, no_torch_load):
    """... and fail it if any member of the archive is read (so nothing is inflated either)."""
    def refuse(*a, **k):
        raise AssertionError("a zip member was read from a file that should have been refused unread")
    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


def _save(tmp_path, name, obj, **kw):
    p = tmp_path / name
    torch.save(obj, str(p), **kw)
    return str(p)


def _with(micro_sd, key, value):
    sd = dict(micro_sd)
    sd[key] = value
    return {"model": sd}


def _refused(path, match=None, fn=load_checkpoint):
    with pytest.raises(CheckpointError) as ei:
        fn(path)
    msg = str(ei.value)
    print(msg)
    assert "\n" not in msg and path in msg
    if match is not None:
        for m in [match] if isinstance(match, str) else match:
            assert m in msg, (m, msg)
    return msg


# ------------------------------------------------------------------ a zip writer that can lie
def _entry(name, data, method=zipfile.ZIP_STORED, crc=None, size=None, csize=None, at=None):
    """A member: `data` as written (already deflated when method is ZIP_DEFLATED, raw, -15);
    crc/size default to those of stored data; size/csize override what the central directory
    declares; `at` reuses the local header of an earlier member (overlapping entries)."""
    if method == zipfile.ZIP_STORED:
        crc = zlib.crc32(data) if crc is None else crc
        size = len(data) if size is None else size
    return dict(name=name, data=data, method=method, crc=crc, size=size,
                csize=len(data) if csize is None else csize, at=at)


def _write_zip(path, entries):
    offsets = {}
    central = []
    with open(path, "wb") as f:
        for e in entries:
            n = e["name"].encode()
            if e["at"] is None:
                offsets[e["name"]] = f.tell()
                f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, e["method"], 0, 0x21,
                                    e["crc"], len(e["data"]), e["size"], len(n), 0) + n + e["data"])
            off = offsets[e["at"] if e["at"] is not None else e["name"]]
            central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, e["method"], 0, 0x21,
                                       e["crc"], e["csize"], e["size"], len(n), 0, 0, 0, 0, 0, off) + n)
        cd = b"".join(central)
        cd_off = f.tell()
        f.write(cd + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cd), cd_off, 0))
    return str(path)


def _deflated_zeros(size):
    """(raw deflate stream, crc) of `size` zero bytes (a multiple of 1 MiB), made without
    compressing them: after a full flush every 1 MiB block of zeros deflates to the same
    ~1 KiB, so the stream is that block repeated (1 GiB -> ~1 MiB)."""
    assert size % MiB == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MiB)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(zeros, crc)
    return block * (size // MiB) + c.flush(), crc


# ------------------------------------------------------------------ zip bombs and lying archives
def test_zip_bomb_storage_is_refused_before_inflating(tmp_path, micro_members, no_inflating):
    """A ~1 MB checkpoint whose storage data/0 inflates to 1 GiB of zeros (a real bomb: the
    stream and CRC are valid); refused from the central directory alone."""
    assert GiB > checkpoint_limits().max_storage_bytes
    stream, crc = _deflated_zeros(GiB)
    entries = [_entry(n, d) if n != "archive/data/0" else
               _entry(n, stream, zipfile.ZIP_DEFLATED, crc=crc, size=GiB) for n, d in micro_members]
    p = _write_zip(tmp_path / "bomb.pt", entries)
    assert os.path.getsize(p) < 5 * MiB
    _refused(p, ["storage data/0 declares 1.0 GiB", "more than any SAM 2 variant needs",
                 f"max {ckpt._fmt_bytes(checkpoint_limits().max_storage_bytes)}", "refused before inflating"])
    _refused(p, "declares 1.0 GiB", fn=read_state_dict)
    _refused(p, "declares 1.0 GiB", fn=lambda q: build_sam2(checkpoint=q))


def test_absurdly_deflated_storage_under_the_size_limit_is_refused(tmp_path, micro_members, no_inflating):
    """32 MiB of zeros (under the per-storage limit) in ~33 KB: refused by its ratio."""
    size = 32 * MiB
    assert size <= checkpoint_limits().max_storage_bytes
    stream, crc = _deflated_zeros(size)
    entries = [_entry(n, d) if n != "archive/data/0" else
               _entry(n, stream, zipfile.ZIP_DEFLATED, crc=crc, size=size) for n, d in micro_members]
    p = _write_zip(tmp_path / "ratio.pt", entries)
    _refused(p, ["storage data/0 deflates", ":1 (32.0 MiB from", "zip bomb", "refused before inflating"])


def test_zip_bomb_split_into_many_small_members_is_refused(tmp_path, micro_members, no_inflating):
    """Many 64 KiB deflated members of zeros (each under the per-member ratio floor)."""
    lim = checkpoint_limits()
    piece = 64 << 10
    n = min(lim.max_members - len(micro_members), lim.max_storage_bytes // piece + 16)
    assert n * piece > lim.max_storage_bytes
    stream = zlib.compress(bytes(piece), 9)[2:-4]  # raw deflate
    crc = zlib.crc32(bytes(piece))
    entries = [_entry(nm, d) for nm, d in micro_members]
    entries += [_entry(f"archive/data/x{i}", stream, zipfile.ZIP_DEFLATED, crc=crc, size=piece) for i in range(n)]
    p = _write_zip(tmp_path / "split_bomb.pt", entries)
    _refused(p, ["deflated members inflate", "zip bomb", "refused before inflating"])


def test_archive_declaring_more_than_the_largest_variant_is_refused(tmp_path, micro_members, no_inflating):
    """Members that each stay under the per-storage limit but together declare more than the
    largest variant's state dict (the central directory lies: the data is not there)."""
    lim = checkpoint_limits()
    per = lim.max_storage_bytes
    n = lim.max_total_bytes // per + 2
    entries = [_entry(nm, d) for nm, d in micro_members]
    entries += [_entry(f"archive/data/big{i}", b"\0" * 16, crc=0, size=per, csize=per) for i in range(n)]
    p = _write_zip(tmp_path / "too_big.pt", entries)
    declared, most = ckpt._fmt_over(n * per + sum(len(d) for _, d in micro_members), lim.max_total_bytes)
    assert declared != most
    _refused(p, [f"declares {declared} in all, more than the largest SAM 2 variant needs", f"(max {most})"])


def test_huge_pickle_member_is_refused(tmp_path, micro_members, no_inflating):
    entries = [_entry(n, d, size=64 * MiB, csize=64 * MiB) if n == "archive/data.pkl" else _entry(n, d)
               for n, d in micro_members]
    p = _write_zip(tmp_path / "big_pickle.pt", entries)
    _refused(p, ["member data.pkl declares 64.0 MiB", "metadata"])


def test_too_many_members_are_refused(tmp_path, micro_members, no_inflating):
    lim = checkpoint_limits()
    entries = [_entry(n, d) for n, d in micro_members]
    entries += [_entry(f"archive/data/extra{i}", b"") for i in range(lim.max_members)]
    p = _write_zip(tmp_path / "many.pt", entries)
    _refused(p, [f"holds {len(entries)} files", f"max {lim.max_members}"])


def test_duplicate_member_names_are_refused(tmp_path, micro_members, no_inflating):
    entries = [_entry(n, d) for n, d in micro_members] + [_entry("archive/data/0", b"\0" * 8)]
    p = _write_zip(tmp_path / "dup.pt", entries)
    _refused(p, ["'archive/data/0' twice", "refused"])


def test_overlapping_members_are_refused(tmp_path, micro_members, no_inflating):
    """Two directory entries sharing one local header (how overlapping-file bombs multiply)."""
    entries = [_entry(n, d) for n, d in micro_members]
    first = next(e for e in entries if e["name"] == "archive/data/0")
    entries.append(dict(first, name="archive/data/again", at="archive/data/0"))
    p = _write_zip(tmp_path / "overlap.pt", entries)
    _refused(p, ["overlaps", "truncated or corrupt"])


def test_zip_without_data_pkl_is_refused(tmp_path, no_torch_load):
    p = _write_zip(tmp_path / "other.zip", [_entry("docs/readme.txt", b"hello")])
    _refused(p, "is a zip archive but not a torch checkpoint")


def _data_offset(data: bytes, zf: zipfile.ZipFile, name: str) -> int:
    info = zf.getinfo(name)
    n_name, n_extra = struct.unpack("<2H", data[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + n_name + n_extra


def test_crc_failure_is_refused(tmp_path, micro_sd, monkeypatch):
    """One flipped bit inside a stored tensor's bytes: torch reads it without a word, we refuse."""
    data = bytearray(MICRO_CKPT.read_bytes())
    with zipfile.ZipFile(MICRO_CKPT) as zf:
        name = "archive/data/7"
        info = zf.getinfo(name)
        pos = _data_offset(data, zf, name) + info.file_size // 2
    data[pos] ^= 0x01
    p = tmp_path / "bitflip.pt"
    p.write_bytes(bytes(data))
    torch.load(str(p), map_location="cpu", weights_only=True)  # the hole: torch does not check CRCs
    monkeypatch.setattr(ckpt.torch, "load", lambda *a, **k: pytest.fail("torch.load before the CRC check"))
    _refused(str(p), ["storage data/7 fails its CRC-32 check", "download it again"])


def test_legacy_non_zip_checkpoint_is_refused_with_how_to_resave(tmp_path, micro_sd, no_torch_load):
    p = _save(tmp_path, "legacy.pt", {"model": dict(micro_sd)}, _use_new_zipfile_serialization=False)
    _refused(p, ["legacy torch.save file", "not the zip archive", "re-save",
                 "torch.save(torch.load('old.pt', weights_only=True), 'new.pt')"])


def test_bare_pickle_is_refused_unread(tmp_path, no_torch_load):
    import pickle

    p = tmp_path / "bare.pkl"
    p.write_bytes(pickle.dumps({"model": {}}))
    _refused(str(p), ["bare pickle file", "refused unread"])


def test_random_bytes_say_not_a_zip(tmp_path, no_torch_load):
    p = tmp_path / "page.pt"
    p.write_bytes(b"<!DOCTYPE html><html>Not Found</html>")
    msg = _refused(str(p), ["not a readable torch checkpoint", "not a zip archive", "download it again"])
    assert "code" not in msg


# ------------------------------------------------------------------ loadable, but not weights
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_nan_weights_are_refused(tmp_path, micro_sd, bad):
    w = micro_sd[KEY].clone()
    w[1, 2] = bad
    w[3, 0] = bad
    p = _save(tmp_path, "nan.pt", _with(micro_sd, KEY, w))
    _refused(p, [KEY, "non-finite values (2 of", "index [1, 2]", repr(bad)])
    _refused(p, KEY, fn=read_state_dict)


def test_float64_beyond_float32_range_is_refused(tmp_path, micro_sd):
    w = micro_sd[KEY].double()
    w[0, 0] = 1e300  # finite in the file, inf in the float32 model
    p = _save(tmp_path, "f64.pt", _with(micro_sd, KEY, w))
    _refused(p, [KEY, "non-finite", "float64"])


def test_huge_but_finite_weights_still_load(tmp_path, micro_sd):
    """Finite values whose float32 sum overflows are not mistaken for inf."""
    w = micro_sd[KEY].float()
    w[:] = 3e38
    p = _save(tmp_path, "huge.pt", _with(micro_sd, KEY, w))
    sd = read_state_dict(p)
    assert torch.isfinite(sd[KEY]).all()


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int32, torch.uint8, torch.complex64],
                         ids=lambda d: str(d).replace("torch.", ""))
def test_non_float_dtypes_are_refused(tmp_path, micro_sd, dtype):
    w = torch.zeros(micro_sd[KEY].shape, dtype=dtype)
    p = _save(tmp_path, "dtype.pt", _with(micro_sd, KEY, w))
    name = str(dtype).replace("torch.", "")
    _refused(p, [KEY, f"dtype {name}", "float16, bfloat16, float32 or float64"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=lambda d: str(d).replace("torch.", ""))
def test_float_dtypes_load_as_float32(tmp_path, micro_sd, dtype):
    p = _save(tmp_path, "ok.pt", _with(micro_sd, KEY, micro_sd[KEY].to(dtype)))
    sd = read_state_dict(p)
    assert sd[KEY].dtype == torch.float32 and sd[KEY].shape == micro_sd[KEY].shape


def test_meta_tensors_are_refused(tmp_path, micro_sd):
    p = _save(tmp_path, "meta.pt", _with(micro_sd, KEY, torch.empty(micro_sd[KEY].shape, device="meta")))
    _refused(p, [KEY, "meta tensor"])


@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr"])
def test_sparse_tensors_are_refused(tmp_path, micro_sd, layout):
    w = micro_sd[KEY].float()
    w = w.to_sparse() if layout == "sparse_coo" else w.to_sparse_csr()
    p = _save(tmp_path, "sparse.pt", _with(micro_sd, KEY, w))
    _refused(p, [KEY, f"{layout} tensor", "dense"])


def test_quantized_tensors_are_refused(tmp_path, micro_sd):
    w = torch.quantize_per_tensor(micro_sd[KEY].float(), 0.01, 0, torch.qint8)
    p = _save(tmp_path, "quant.pt", _with(micro_sd, KEY, w))
    _refused(p, [KEY, "quantized tensor (qint8)"])


def test_expanded_tensor_is_refused_before_materialising(tmp_path, micro_sd):
    """A 2-byte storage viewed with stride 0 as 2^34 elements: .float() would need 64 GiB."""
    w = torch.zeros(1, dtype=torch.float16).expand(1 << 17, 1 << 17)
    p = _save(tmp_path, "expanded.pt", _with(micro_sd, KEY, w))
    assert os.path.getsize(p) < 10 * MiB
    _refused(p, [KEY, "17,179,869,184 elements", "more than any SAM 2 variant's largest tensor"])


def test_many_views_of_one_storage_are_refused_before_upcasting(tmp_path, micro_sd):
    """Each entry under the per-tensor limit, all views of one 2-byte storage: together more
    elements than the largest variant (upcasting them would materialise every one)."""
    lim = checkpoint_limits()
    view = torch.zeros(1, dtype=torch.float16).expand(lim.max_tensor_elements)
    n = lim.max_total_elements // lim.max_tensor_elements + 2
    sd = dict(micro_sd)
    sd.update({f"view.{i}": view for i in range(n)})
    p = _save(tmp_path, "views.pt", {"model": sd})
    assert os.path.getsize(p) < 10 * MiB
    _refused(p, ["elements in all, more than any SAM 2 variant", f"max {lim.max_total_elements:,}"])


def test_too_many_state_dict_entries_are_refused(tmp_path, micro_sd):
    lim = checkpoint_limits()
    shared = torch.zeros(1, dtype=torch.float16)  # one storage: the archive itself stays small
    sd = dict(micro_sd)
    sd.update({f"extra.{i}": shared for i in range(lim.max_tensors)})
    p = _save(tmp_path, "entries.pt", {"model": sd})
    _refused(p, [f"holds {len(sd):,} entries", f"max {lim.max_tensors:,}"])


def test_oversized_zip_directory_is_refused(tmp_path, micro_members, no_inflating):
    lim = checkpoint_limits()
    long = 60000
    n = lim.max_directory_bytes // long + 2
    entries = [_entry(nm, d) for nm, d in micro_members]
    entries += [_entry("archive/data/" + "x" * long + str(i), b"") for i in range(n)]
    p = _write_zip(tmp_path / "long_names.pt", entries)
    _refused(p, ["zip directory of", "more than a SAM 2 checkpoint needs"])


def test_int_keys_are_refused(tmp_path, micro_sd):
    p = _save(tmp_path, "int_keys.pt", {"model": {i: v for i, v in enumerate(micro_sd.values())}})
    _refused(p, ["key 0 of type int", "strings"])
    _refused(p, "key 0 of type int", fn=read_state_dict)


def test_mixed_keys_are_refused(tmp_path, micro_sd):
    sd = dict(micro_sd)
    sd[(1, 2)] = torch.zeros(2)
    sd[3] = torch.zeros(2)
    p = _save(tmp_path, "mixed_keys.pt", {"model": sd})
    _refused(p, ["key (1, 2) of type tuple", "strings"])
    _refused(p, "of type tuple", fn=lambda q: load_checkpoint(q, variant="micro"))


def test_non_tensor_values_are_refused(tmp_path, micro_sd):
    p = _save(tmp_path, "nested.pt", _with(micro_sd, KEY, {"weight": micro_sd[KEY]}))
    _refused(p, [KEY, "is not a tensor (dict)"])


# ------------------------------------------------------------------ pickles that run code
class _RunsCodeOnLoad:
    """Unpickling this would create the marker file: a stand-in for a malicious payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Custom:
    pass


def test_code_executing_pickle_is_refused_not_called_corrupt(tmp_path, micro_sd):
    marker = tmp_path / "pwned"
    p = _save(tmp_path, "evil.pt", {"model": dict(micro_sd), "x": _RunsCodeOnLoad(str(marker))})
    msg = _refused(p, ["needs to run code to load (", "open", "): refused",
                       "a SAM 2 checkpoint is a plain state dict"])
    assert "corrupt" not in msg
    assert not marker.exists(), "loading executed code from the checkpoint"


def test_payload_inside_the_state_dict_is_refused(tmp_path, micro_sd):
    marker = tmp_path / "pwned"
    p = _save(tmp_path, "evil_sd.pt", _with(micro_sd, KEY, _RunsCodeOnLoad(str(marker))))
    _refused(p, "needs to run code to load (", fn=read_state_dict)
    assert not marker.exists()


def test_custom_class_pickle_names_the_class(tmp_path, micro_sd):
    p = _save(tmp_path, "custom.pt", {"model": dict(micro_sd), "x": _Custom()})
    _refused(p, ["needs to run code to load (", "_Custom)", "refused"])


def test_truncated_file_is_still_called_truncated(tmp_path, no_torch_load):
    data = MICRO_CKPT.read_bytes()
    p = tmp_path / "cut.pt"
    p.write_bytes(data[: len(data) * 3 // 4])
    msg = _refused(str(p), ["truncated or corrupt", "download it again"])
    assert "run code" not in msg


# ------------------------------------------------------------------ good checkpoints still load
def test_good_micro_checkpoint_loads(micro_sd):
    check_archive(str(MICRO_CKPT))
    sd = read_state_dict(str(MICRO_CKPT))
    assert set(sd) == set(micro_sd) and all(v.dtype == torch.float32 for v in sd.values())
    _, cfg = load_checkpoint(str(MICRO_CKPT))
    assert cfg.name == "micro"


def test_resaved_and_deflated_micro_checkpoint_loads(tmp_path, micro_members, micro_sd):
    """A checkpoint re-zipped with deflate (not what torch.save writes, but legal) is fine."""
    p = tmp_path / "deflated.pt"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in micro_members:
            zf.writestr(n, d)
    sd = read_state_dict(str(p))
    assert all(torch.equal(sd[k], v.float()) for k, v in micro_sd.items())


def test_limits_follow_the_registry():
    from sam2_edge.configs import get_config, list_variants

    lim = checkpoint_limits()
    for name in list_variants():
        shapes = ckpt.expected_shapes(get_config(name))
        assert max(int(torch.Size(s).numel()) for s in shapes.values()) <= lim.max_tensor_elements
        assert sum(int(torch.Size(s).numel()) for s in shapes.values()) * 8 <= lim.max_total_bytes
        assert len(shapes) < lim.max_members
    assert lim.max_storage_bytes == 8 * lim.max_tensor_elements


@pytest.mark.slow
def test_good_tiny_checkpoint_loads_and_checks_fast():
    p = optional_tiny_ckpt()
    if p is None:
        pytest.skip("tiny reference checkpoint (shared/reference/tiny) is absent")
    checkpoint_limits()
    t0 = time.perf_counter()
    check_archive(str(p))
    t1 = time.perf_counter()
    sd = read_state_dict(str(p))
    t2 = time.perf_counter()
    print(f"tiny ({os.path.getsize(p) / MiB:.0f} MiB): archive + CRC check {t1 - t0:.3f} s, "
          f"read_state_dict (incl. check, load, tensor checks) {t2 - t1:.3f} s")
    assert len(sd) == 471
    _, cfg = load_checkpoint(str(p))
    assert cfg.name == "sam2.1-hiera-tiny"


# ------------------------------------------------------------------ sam2-edge info
def _run_info(path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "sam2_edge.cli", "info", str(path)], cwd=str(REPO_ROOT),
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_info_reports_hostile_files_in_one_line(tmp_path, micro_sd, micro_members):
    marker = tmp_path / "pwned"
    nan = micro_sd[KEY].clone()
    nan[0, 0] = float("nan")
    stream, crc = _deflated_zeros(128 * MiB)
    cases = {
        "nan.pt": (_save(tmp_path, "nan.pt", _with(micro_sd, KEY, nan)), "non-finite values"),
        "bomb.pt": (_write_zip(tmp_path / "bomb.pt", [
            _entry(n, d) if n != "archive/data/0" else
            _entry(n, stream, zipfile.ZIP_DEFLATED, crc=crc, size=128 * MiB) for n, d in micro_members]),
            "storage data/0 declares 128.0 MiB"),
        "evil.pt": (_save(tmp_path, "evil.pt", {"model": dict(micro_sd), "x": _RunsCodeOnLoad(str(marker))}),
                    "needs to run code to load"),
    }
    # Two subprocesses (each imports torch); the third case goes through main() in-process.
    for name in ("nan.pt", "bomb.pt"):
        path, expect = cases[name]
        r = _run_info(path)
        print(r.stderr)
        assert r.returncode == 2, r.stderr
        assert r.stdout == ""
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sam2-edge info: error: ")
        assert expect in lines[0] and path in lines[0]
    from sam2_edge.cli import main

    path, expect = cases["evil.pt"]
    assert main(["info", path]) == 2
    assert not marker.exists()
