"""Error of a quantized graph against its float reference: cosine similarity, SQNR and the
largest absolute difference, per output and summarised per stage. numpy only.

* cosine similarity of the flattened tensors (1.0 = same direction; two all-zero tensors: 1.0);
* SQNR (signal-to-quantisation-noise ratio) in dB: ``10 log10(sum(ref^2) / sum((ref - q)^2))``,
  +inf when identical (written as 999.0 in JSON);
* max abs error: ``max |ref - q|``.

Every number is computed over all samples of a stage at once (the samples concatenated).
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence

import numpy as np

SQNR_EXACT = 999.0  # JSON has no infinity: an exact match is reported as 999 dB


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(got, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    a = np.asarray(ref, np.float64).ravel()
    d = a - np.asarray(got, np.float64).ravel()
    noise = float(np.dot(d, d))
    signal = float(np.dot(a, a))
    if noise == 0.0:
        return SQNR_EXACT
    if signal == 0.0:
        return -SQNR_EXACT
    return float(min(SQNR_EXACT, 10.0 * math.log10(signal / noise)))


def max_abs(ref: np.ndarray, got: np.ndarray) -> float:
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(got, np.float64).ravel()
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def compare(ref: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {got.shape}")
    return {"cosine": cosine(ref, got), "sqnr_db": sqnr_db(ref, got), "max_abs": max_abs(ref, got)}


def compare_outputs(names: Sequence[str], ref: Sequence[Sequence[np.ndarray]],
                    got: Sequence[Sequence[np.ndarray]]) -> Dict[str, object]:
    """`ref` / `got`: per sample, the tuple of a stage's outputs. -> {"outputs": {name:
    metrics}, "cosine": min, "sqnr_db": min, "max_abs": max} over the float outputs."""
    if len(ref) != len(got) or not ref:
        raise ValueError(f"need the same non-zero number of samples, got {len(ref)} and {len(got)}")
    per: Dict[str, Dict[str, float]] = {}
    for i, name in enumerate(names):
        r = [np.asarray(s[i]) for s in ref]
        if not np.issubdtype(r[0].dtype, np.floating):
            continue
        g = [np.asarray(s[i]) for s in got]
        per[name] = compare(np.concatenate([x.ravel() for x in r]), np.concatenate([x.ravel() for x in g]))
    return {"outputs": per, **summarise(per.values())}


def summarise(rows) -> Dict[str, float]:
    rows = list(rows)
    if not rows:
        return {"cosine": 1.0, "sqnr_db": SQNR_EXACT, "max_abs": 0.0}
    return {"cosine": min(r["cosine"] for r in rows), "sqnr_db": min(r["sqnr_db"] for r in rows),
            "max_abs": max(r["max_abs"] for r in rows)}


def rounded(d, digits: int = 6):
    """A JSON-ready copy with floats rounded (and non-finite values clipped)."""
    if isinstance(d, Mapping):
        return {k: rounded(v, digits) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [rounded(v, digits) for v in d]
    if isinstance(d, (float, np.floating)):
        x = float(d)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return SQNR_EXACT if x > 0 else -SQNR_EXACT
        return round(x, digits)
    if isinstance(d, np.integer):
        return int(d)
    return d


__all__ = ["SQNR_EXACT", "cosine", "sqnr_db", "max_abs", "compare", "compare_outputs", "summarise", "rounded"]
