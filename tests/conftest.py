"""Shared test helpers: golden loading (with bit-mask decoding), fixture paths, the micro and
tiny reference checkpoints, tolerance checks and a parity report.

Nothing here imports torch at module level, so torch-free tests (packaging, runtimes) can
collect without it; fixtures that need torch import it lazily.

Goldens: see tests/fixtures/REFERENCE_README.md (official SAM 2 code, seeded random weights).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

# Under pytest-xdist (README's test command runs one worker per core) each worker gets its share
# of the cores, so torch / ONNX Runtime / XNNPACK thread pools do not oversubscribe them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
MICRO_DIR = FIXTURES / "micro"
MICRO_CKPT = MICRO_DIR / "sam2.1_hiera_micro_seed14.fp16.pt"
MICRO_CKPT_SHA256 = "92832630526c9e7e043cec30846786289288a57f0f322b839b0677b84535b3e6"
# Full-size goldens are not copied into the repository (88 MB); they live next to it.
TINY_DIR = Path(__file__).parents[1].parent / "shared" / "reference" / "tiny"
TINY_CKPT_NAME = "sam2.1_hiera_t_seed2.fp16.pt"

IMAGE_CASES = [f"{p}_{m}" for p in ("point1", "point2", "box", "boxpoint") for m in ("multi", "single")]


# ------------------------------------------------------------------ goldens
def load_golden(path) -> Dict[str, np.ndarray]:
    """All arrays of a golden .npz; `X_bits` + `X_shape` are decoded to a bool array `X`."""
    return dict(_load_golden_cached(str(path)))


@functools.lru_cache(maxsize=8)
def _load_golden_cached(path: str) -> Dict[str, np.ndarray]:
    from stream_golden import load_golden

    g = load_golden(path)
    for v in g.values():
        v.setflags(write=False)  # shared between tests: never modified in place
    return g


def load_manifest(folder) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def read_rgb(path) -> np.ndarray:
    """H x W x 3 uint8 RGB as the goldens decoded it (cv2 BGR -> RGB)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def case_prompts(g: Dict[str, np.ndarray], case: str):
    """(point_coords or None, point_labels or None, box or None, multimask) of an image case,
    exactly as the golden fed them to SAM2ImagePredictor.predict."""
    pc, pl, box = g[f"{case}/point_coords"], g[f"{case}/point_labels"], g[f"{case}/box"]
    return (pc if len(pc) else None, pl if len(pl) else None,
            None if np.isnan(box).all() else box, case.endswith("_multi"))


def window_slices(window_level2, level: int) -> Tuple[slice, slice]:
    """(rows, cols) of the golden `crop/*` window on FPN level `level` (0: stride 4, 1: stride 8,
    2: stride 16). `crop/window_level2` = [start, stop) of the level-2 rows and cols (the same
    range for both, a centred square); level 1 scales it by 2, level 0 by 4."""
    start, stop = (int(v) for v in window_level2)
    f = 2 ** (2 - level)
    return slice(start * f, stop * f), slice(start * f, stop * f)


# ------------------------------------------------------------------ tolerances / report
_REPORT: List[Tuple[str, str, float, float, float, str]] = []


def fp16_half_ulp(ref: np.ndarray) -> np.ndarray:
    """Half the float16 spacing at each stored value: the rounding error of a golden stored as fp16."""
    r = np.abs(np.asarray(ref, dtype=np.float16))
    return 0.5 * np.spacing(r).astype(np.float64)


def check_close(name: str, actual, expected, atol: float, rtol: float, fp16_ref: bool = False,
                group: str = "") -> Tuple[float, float]:
    """Assert |actual - expected| <= atol + rtol * |expected| (+ half an fp16 ulp of expected when
    the golden is stored in fp16) element-wise; print and record the worst differences.

    Returns (worst |diff|, worst |diff| / max(1, |expected|))."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != golden {e.shape}"
    assert np.isfinite(a).all(), f"{name}: non-finite values"
    diff = np.abs(a - e)
    tol = atol + rtol * np.abs(e)
    if fp16_ref:
        tol = tol + fp16_half_ulp(expected)
    worst_abs = float(diff.max()) if diff.size else 0.0
    worst_rel = float((diff / np.maximum(1.0, np.abs(e))).max()) if diff.size else 0.0
    ratio = float((diff / tol).max()) if diff.size else 0.0
    extra = ""
    if fp16_ref:  # how far ours is at the golden's own resolution: ours rounded to fp16 vs golden, in fp16 ulps
        a16 = a.astype(np.float16).astype(np.float64)
        e16 = np.asarray(expected).astype(np.float16)
        ulps = np.abs(a16 - e16.astype(np.float64)) / np.spacing(np.abs(e16)).astype(np.float64)
        big = np.abs(e16) >= 1  # near 0 the fp16 ulp is far below fp32 compute noise: count ulps where |x| >= 1
        max_ulp = float(ulps[big].max()) if big.any() else 0.0
        extra = f"; fp16(ours)==golden on {float((ulps == 0).mean()):.4%}, max {max_ulp:.0f} fp16 ulp where |x|>=1"
    print(f"[parity] {group:6s} {name:42s} max|d|={worst_abs:.3e}  max|d|/max(1,|ref|)={worst_rel:.3e}  "
          f"(d/tol={ratio:.3f}; atol={atol:g} rtol={rtol:g}{' +fp16 half-ulp' if fp16_ref else ''}{extra})")
    _REPORT.append((group, name, worst_abs, worst_rel, ratio,
                    f"atol={atol:g} rtol={rtol:g}{' +½ulp16' if fp16_ref else ''}{extra}"))
    bad = diff > tol
    if bad.any():
        idx = np.unravel_index(int(np.argmax(diff / tol)), diff.shape)
        raise AssertionError(f"{name}: {int(bad.sum())}/{diff.size} elements outside tolerance; worst at {idx}: "
                             f"got {a[idx]!r}, golden {e[idx]!r}, |d|={diff[idx]:.3e} > tol {tol[idx]:.3e}")
    return worst_abs, worst_rel


def check_mask_agreement(name: str, actual, expected, min_agreement: float, group: str = "") -> float:
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != golden {e.shape}"
    assert a.dtype == bool, f"{name}: masks must be bool, got {a.dtype}"
    agree = float((a == e).mean())
    flipped = int((a != e).sum())
    print(f"[parity] {group:6s} {name:42s} agreement={agree:.7f} ({flipped} of {a.size} pixels differ; "
          f"need >= {min_agreement})")
    _REPORT.append((group, name, float(flipped), 1.0 - agree, 0.0, f"mask agreement >= {min_agreement}"))
    assert agree >= min_agreement, f"{name}: binary masks agree on {agree:.5%} of pixels (< {min_agreement:.2%})"
    return agree


def pytest_sessionfinish(session):
    """Under pytest-xdist, a worker hands its parity rows to the controller (below)."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["parity_report"] = json.dumps(_REPORT)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: collect a finished worker's parity rows for the summary."""
    rows = getattr(node, "workeroutput", {}).get("parity_report")
    if rows:
        _REPORT.extend(tuple(r) for r in json.loads(rows))


def pytest_terminal_summary(terminalreporter):
    if not _REPORT:
        return
    tr = terminalreporter
    tr.section("official-parity differences (worst per boundary)")
    tr.write_line(f"{'set':6s} {'boundary':42s} {'max|d| / #flipped':>18s} {'max rel / 1-agree':>18s} "
                  f"{'d/tol':>7s}  tolerance")
    for group, name, worst_abs, worst_rel, ratio, tol in _REPORT:
        tr.write_line(f"{group:6s} {name:42s} {worst_abs:18.3e} {worst_rel:18.3e} {ratio:7.3f}  {tol}")


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def micro_dir() -> Path:
    return MICRO_DIR


@pytest.fixture(scope="session")
def micro_ckpt() -> str:
    assert MICRO_CKPT.is_file(), f"missing fixture {MICRO_CKPT}"
    return str(MICRO_CKPT)


@pytest.fixture(scope="session")
def micro_golden() -> Dict[str, np.ndarray]:
    return load_golden(MICRO_DIR / "image_truck.npz")


@pytest.fixture(scope="session")
def micro_model(micro_ckpt):
    """(model, cfg) of the micro checkpoint, float32, eval, CPU. Shared: do not modify."""
    pytest.importorskip("torch")
    from sam2_edge.checkpoint import load_checkpoint

    return load_checkpoint(micro_ckpt)


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    if not (TINY_DIR / "manifest.json").is_file():
        pytest.skip(f"full-size goldens not available: {TINY_DIR} is absent "
                    "(copy shared/reference/tiny next to the repository to run the -m slow tests)")
    return TINY_DIR


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_dir) -> str:
    p = tiny_dir / TINY_CKPT_NAME
    if not p.is_file():
        pytest.skip(f"tiny reference checkpoint {p} is absent")
    return str(p)


def optional_tiny_ckpt() -> Optional[Path]:
    p = TINY_DIR / TINY_CKPT_NAME
    return p if p.is_file() else None
