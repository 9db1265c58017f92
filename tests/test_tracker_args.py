"""Tracker constructor arguments: every bad value is a typed sam2-edge error raised before any
work (no untyped ValueError from track() later, no MemoryError, no AssertionError), and the
valid values still build a working tracker (the micro checkpoint loads in about a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam2_edge.contract import TrackerSpec
from sam2_edge.errors import ConfigError, InputError, Sam2EdgeError
from sam2_edge.runtimes import Tracker

from fake_backend import FakeBackend

FIX = Path(__file__).parent / "fixtures"
MICRO = FIX / "micro" / "sam2.1_hiera_micro_seed14.fp16.pt"


@pytest.fixture(scope="module")
def micro_tracker_ok():
    pytest.importorskip("torch")
    return Tracker.from_checkpoint(str(MICRO))


def _frame(h=64, w=96):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("cond_slots", [0, -1, "2", None, 2.5, 10**6, True, 65])
def test_from_checkpoint_rejects_bad_cond_slots(cond_slots, monkeypatch):
    pytest.importorskip("torch")
    import sam2_edge.checkpoint as ck

    def never(*a, **k):
        raise AssertionError("the checkpoint must not be read before the arguments are checked")

    monkeypatch.setattr(ck, "load_checkpoint", never)
    with pytest.raises(ConfigError, match="cond_slots must be an integer 1..64"):
        Tracker.from_checkpoint(str(MICRO), cond_slots=cond_slots)


@pytest.mark.parametrize("device, needle", [
    ("bogus", "not a torch device"),
    ("", "must be a string"),
    (None, "must be a string"),
    (0, "must be a string"),
    ("meta", "not meta"),
    ("cpu:3", "one CPU device"),
])
def test_from_checkpoint_rejects_bad_device(device, needle):
    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match=needle):
        Tracker.from_checkpoint(str(MICRO), device=device)


def test_from_checkpoint_rejects_devices_this_machine_lacks():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="use --device cpu"):
            Tracker.from_checkpoint(str(MICRO), device="cuda")
    else:
        n = torch.cuda.device_count()
        with pytest.raises(ConfigError, match="CUDA device"):
            Tracker.from_checkpoint(str(MICRO), device=f"cuda:{n}")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(ConfigError, match="MPS is not available"):
            Tracker.from_checkpoint(str(MICRO), device="mps")


@pytest.mark.parametrize("image_size", [0, 100, 48, 4096, "256", 256.0, True, -256])
def test_from_checkpoint_rejects_bad_image_size(image_size):
    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match="image_size"):
        Tracker.from_checkpoint(str(MICRO), image_size=image_size)


@pytest.mark.parametrize("kw", [{"path": None}, {"path": 5}, {"variant": 3}])
def test_from_checkpoint_rejects_bad_path_and_variant(kw):
    pytest.importorskip("torch")
    args = {"path": str(MICRO), **kw}
    with pytest.raises(ConfigError):
        Tracker.from_checkpoint(args.pop("path"), **args)


def test_from_checkpoint_other_backend_is_typed():
    with pytest.raises(InputError, match="from_bundle"):
        Tracker.from_checkpoint(str(MICRO), backend="onnx")


@pytest.mark.parametrize("threads", [-1, "2", 2.5, True])
def test_from_bundle_rejects_bad_threads(tmp_path, threads):
    # checked before the bundle is opened: the folder need not even exist
    with pytest.raises(ConfigError, match="threads must be a non-negative integer"):
        Tracker.from_bundle(str(tmp_path / "no-bundle"), threads=threads)


@pytest.mark.parametrize("bundle_dir", [None, 3, True])
def test_from_bundle_rejects_bad_folder_argument(bundle_dir):
    with pytest.raises(ConfigError, match="bundle_dir"):
        Tracker.from_bundle(bundle_dir)


def test_from_bundle_rejects_bad_backend_name(tmp_path):
    with pytest.raises(ConfigError, match="backend"):
        Tracker.from_bundle(str(tmp_path), backend=7)


def test_init_rejects_what_is_not_a_backend():
    for bad in (None, "torch", object()):
        with pytest.raises(ConfigError, match="takes a backend"):
            Tracker(bad)


@pytest.mark.parametrize("cond_slots", [0, -1, 10**6])
def test_init_rejects_a_backend_with_an_invalid_spec(cond_slots):
    """The bug: cond_slots=0 was accepted and every track() raised an untyped ValueError; -1
    aliased ring slots; 10**6 ran out of memory."""
    be = FakeBackend(TrackerSpec(image_size=64, d_model=32, mem_dim=8, cond_slots=cond_slots))
    with pytest.raises(ConfigError, match="cond_slots"):
        Tracker(be)


def test_errors_are_sam2_edge_errors():
    assert issubclass(ConfigError, Sam2EdgeError) and issubclass(ConfigError, ValueError)


def test_valid_values_still_work(micro_tracker_ok):
    """Defaults, explicit valid values and numpy integers build trackers that track."""
    import torch

    t = micro_tracker_ok
    assert t.spec.cond_slots == 2
    r = t.add_prompt(_frame(), 1, points=[[20, 30]], labels=[1])
    assert r.masks.shape == (1, 64, 96)
    assert t.track(_frame()).masks.shape == (1, 64, 96)

    t3 = Tracker.from_checkpoint(str(MICRO), cond_slots=np.int64(3), image_size=128, device=torch.device("cpu"))
    assert t3.spec.cond_slots == 3 and t3.spec.image_size == 128
    t3.add_prompt(_frame(), 1, box=[10, 10, 60, 50])
    for _ in range(3):
        assert t3.track(_frame()).masks.shape == (1, 64, 96)

    t1 = Tracker.from_checkpoint(MICRO, cond_slots=1, device="cpu")  # a Path is a path
    assert t1.spec.cond_slots == 1


def test_fake_backend_trackers_still_build():
    t = Tracker(FakeBackend())
    t.add_prompt(_frame(), 1, points=[[5, 5]], labels=[1])
    assert t.track(_frame()).masks.shape == (1, 64, 96)
