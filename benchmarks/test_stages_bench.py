"""Per-stage and end-to-end tracker benchmarks for every backend (pytest-benchmark).

    pytest benchmarks/ --benchmark-json=bench.json [--bench-image-size 512] [--bench-threads 1]

Each stage runs on the inputs it really gets on a frame with full memory (recorded from a
short stream of the shipped clip); `track` streams the clip with 1 and 3 objects, memory full.
See conftest.py for the options and benchmarks/README.md for results.
"""

from __future__ import annotations

import pytest

from sam2_edge.contract import STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_stage(benchmark, bench_session, target, stage):
    name, backend = target
    inputs = bench_session.stage_inputs(backend)[stage]
    benchmark.group = f"stage:{stage}"
    benchmark.extra_info.update(bench_session.info(backend), stage=stage)
    bench_session.activate()
    out = benchmark.pedantic(backend.run, args=(stage, inputs), rounds=bench_session.rounds, iterations=1,
                             warmup_rounds=1)
    assert len(out) == len(backend.spec.io()[stage][1])


@pytest.mark.parametrize("objects", [1, 3])
def test_track(benchmark, bench_session, target, objects):
    name, backend = target
    tracker, step = bench_session.stream(backend, objects)
    benchmark.group = f"track:{objects}obj"
    benchmark.extra_info.update(bench_session.info(backend), objects=objects)
    bench_session.activate()
    res = benchmark.pedantic(step, rounds=bench_session.rounds, iterations=1, warmup_rounds=1)
    assert len(res.object_ids) == objects


def test_first_frame(benchmark, bench_session, target):
    """add_prompt on a new frame after reset(): the image encoder plus one prompt decode."""
    name, backend = target
    from sam2_edge import bench as B
    from sam2_edge.runtimes import Tracker

    tracker = Tracker(backend)
    frames = bench_session.frames
    h, w = frames[0].shape[:2]
    prompt = B.object_prompts(1, w, h)[0]

    def first():
        tracker.reset()
        return tracker.add_prompt(frames[0], 1, **prompt)

    benchmark.group = "first_frame"
    benchmark.extra_info.update(bench_session.info(backend))
    bench_session.activate()
    res = benchmark.pedantic(first, rounds=bench_session.rounds, iterations=1, warmup_rounds=1)
    assert res.object_ids == [1]
