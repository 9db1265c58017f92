"""Bad input to the tracker: an error that names the problem, and the tracker state is
unchanged by the rejected call. Uses a shape-exact fake backend (tracker logic only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fake_backend import FakeBackend, state_fingerprint
from sam2_edge.errors import InputError, StateError
from sam2_edge.runtimes import Tracker

H, W = 48, 64


def frame(v: int = 100) -> np.ndarray:
    return np.full((H, W, 3), v, np.uint8)


@pytest.fixture
def tracker():
    t = Tracker(FakeBackend())
    t.add_prompt(frame(), 1, points=[[10, 10]], labels=[1])
    t.track(frame(120))
    return t


def test_track_before_any_prompt():
    t = Tracker(FakeBackend())
    with pytest.raises(StateError, match="add_prompt"):
        t.track(frame())
    with pytest.raises(StateError, match="no current frame"):
        t.add_prompt(None, 1, points=[[1, 1]], labels=[1])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((H, W, 3), np.float32), "uint8"),
    (np.zeros((H, W), np.uint8), "H x W x 3"),
    (np.zeros((H, W, 4), np.uint8), "H x W x 3"),
    ([[1, 2, 3]], "numpy array"),
    (np.zeros((H + 2, W, 3), np.uint8), "resolution changed"),
])
def test_bad_frames(tracker, bad, match):
    before = state_fingerprint(tracker)
    with pytest.raises(InputError, match=match):
        tracker.track(bad)
    with pytest.raises(InputError, match=match):
        tracker.add_prompt(bad, 2, points=[[1, 1]], labels=[1])
    assert state_fingerprint(tracker) == before


@pytest.mark.parametrize("kwargs, match", [
    (dict(points=[[W + 5, 3]], labels=[1]), "inside the image"),
    (dict(points=[[-1, 3]], labels=[1]), "inside the image"),
    (dict(points=[[3, 3], [4, 4]], labels=[1]), "labels"),
    (dict(points=[[3, 3]]), "together"),
    (dict(points=[[3, 3]], labels=[7]), "1 \\(positive\\) or 0"),
    (dict(), "empty prompt"),
    (dict(box=[30, 5, 10, 20]), "x1 > x0"),
    (dict(box=[1, 2, 3]), "x0, y0, x1, y1"),
    (dict(mask=np.full((H, W), np.nan, np.float32)), "NaN"),
    (dict(mask=np.zeros((H, W + 1), bool)), "frame's shape"),
    (dict(mask=np.zeros((H, W), bool), points=[[1, 1]], labels=[1]), "either a mask"),
    (dict(points=[[np.inf, 1]], labels=[1]), "finite"),
])
def test_bad_prompts(tracker, kwargs, match):
    before = state_fingerprint(tracker)
    with pytest.raises(InputError, match=match):
        tracker.add_prompt(None, 1, **kwargs)
    with pytest.raises(InputError, match=match):
        tracker.add_prompt(frame(7), 3, **kwargs)
    assert state_fingerprint(tracker) == before


def test_unknown_object_and_bad_ids(tracker):
    before = state_fingerprint(tracker)
    with pytest.raises(InputError, match="unknown object id 9"):
        tracker.remove_object(9)
    with pytest.raises(InputError, match="integer"):
        tracker.add_prompt(None, "a", points=[[1, 1]], labels=[1])
    assert state_fingerprint(tracker) == before


def test_remove_and_reset(tracker):
    tracker.add_prompt(None, 2, box=[5, 5, 30, 30])
    assert tracker.object_ids == [1, 2]
    tracker.remove_object(1)
    r = tracker.track(frame(130))
    assert r.object_ids == [2] and r.masks.shape == (1, H, W) and r.masks.dtype == bool
    assert r.mask_logits.dtype == np.float32 and r.object_scores.shape == (1,)
    tracker.reset()
    assert tracker.object_ids == [] and tracker.frame_index == -1
    # after reset a stream of another resolution is fine
    r = tracker.add_prompt(np.zeros((20, 30, 3), np.uint8), 5, points=[[3, 3]], labels=[1])
    assert r.frame_index == 0 and r.masks.shape == (1, 20, 30)


def test_new_object_on_any_frame_and_frame_none(tracker):
    r = tracker.add_prompt(frame(50), 7, points=[[20, 20]], labels=[1])  # new frame, obj 1 tracked too
    assert r.frame_index == 2 and r.object_ids == [1, 7]
    r = tracker.add_prompt(None, 8, box=[1, 1, 20, 20])  # current frame
    assert r.frame_index == 2 and r.object_ids == [1, 7, 8]


coord = st.one_of(st.floats(-100, 200), st.just(float("nan")), st.just(float("inf")))
prompt_value = st.one_of(st.none(), st.integers(-5, 200), st.floats(allow_nan=True, allow_infinity=True),
                         st.lists(coord, max_size=5),
                         st.lists(st.lists(coord, min_size=0, max_size=3), max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=prompt_value, labels=prompt_value, box=prompt_value)
def test_random_prompts_either_work_or_leave_state_unchanged(tracker, points, labels, box):
    before = state_fingerprint(tracker)
    try:
        r = tracker.add_prompt(None, 1, points=points, labels=labels, box=box)
    except InputError:
        assert state_fingerprint(tracker) == before
    else:
        assert r.object_ids == [1] and r.masks.shape == (1, H, W)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(st.integers(0, 70), st.integers(0, 70), st.integers(0, 5)),
       dtype=st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]))
def test_random_frames_either_work_or_leave_state_unchanged(tracker, shape, dtype):
    before = state_fingerprint(tracker)
    arr = np.zeros(shape, dtype)
    try:
        tracker.track(arr)
    except InputError:
        assert state_fingerprint(tracker) == before
    else:
        assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
