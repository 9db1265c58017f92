"""COCO run-length encoding of binary masks, as pycocotools writes it (numpy only).

`encode(mask)` -> ``{"size": [h, w], "counts": "..."}``: the mask read column by column
(Fortran order, as pycocotools), the lengths of alternating runs starting with a run of 0s
(which may be empty), compressed into pycocotools' ASCII string (`rleToString`: each count
minus the count two before it, in 5-bit groups with a continuation bit, offset by 48).
`pycocotools.mask.decode` reads it, and `decode` here reads it back (or an uncompressed
``counts`` list, the other form COCO files use).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

import numpy as np

__all__ = ["run_lengths", "counts_to_string", "string_to_counts", "encode", "decode"]


def run_lengths(mask: np.ndarray) -> List[int]:
    """Uncompressed COCO counts of a 2-D mask: column-major run lengths, 0-runs first."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H x W), got shape {m.shape}")
    flat = m.astype(bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return ([0] + runs) if flat[0] else runs


def counts_to_string(counts: Sequence[int]) -> str:
    """pycocotools' `rleToString`."""
    out = []
    cnts = [int(c) for c in counts]
    for i, c in enumerate(cnts):
        x = c - cnts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a signed long
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_to_counts(s: str) -> List[int]:
    """pycocotools' `rleFrString`."""
    cnts: List[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated RLE counts string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return cnts


def encode(mask: np.ndarray) -> Dict[str, object]:
    """{"size": [h, w], "counts": str} of a 2-D mask (nonzero = object)."""
    m = np.asarray(mask)
    counts = run_lengths(m)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts_to_string(counts)}


def decode(rle: Dict[str, object]) -> np.ndarray:
    """The H x W bool mask of {"size": [h, w], "counts": str or list of ints}."""
    h, w = (int(v) for v in rle["size"])  # type: ignore[union-attr]
    counts: Union[str, bytes, Sequence[int]] = rle["counts"]  # type: ignore[assignment]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    cnts = string_to_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in cnts) or sum(cnts) != h * w:
        raise ValueError(f"RLE counts sum to {sum(cnts)}, not {h}x{w} = {h * w}")
    values = np.zeros(len(cnts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, cnts)
    return flat.reshape((w, h)).T.copy()
