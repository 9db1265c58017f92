"""Memory attention's cross-attention in ONNX Runtime: the fused fp32 kernel against the forms an
int8 bundle could use instead, at the real shapes, with the error of each against fp32.

    python benchmarks/attention_kernels.py --image-size 512 --image-size 1024 --json attn.json

Why this exists: the quantization issue's target (an int8 ONNX bundle >= 2x the frames per second
of the fp32 one) was limited by memory attention, whose attention products have no int8 kernel in
ONNX Runtime (with the fused `com.microsoft.MultiHeadAttention` in fp32 they were 63-83 % of an
int8 frame of sam2.1-hiera-tiny). This script measures the forms of the attention as plain ops
with the QK^T product quantised at run time; the int8 bundles now run `int8-qk-s8k`
(quantization/onnx_attention.py):

* `mha`: `MultiHeadAttention` (one head), what the fp32 bundles run;
* `matmul-fp32`: MatMul -> Softmax -> MatMul (the score matrix materialised);
* `int8-qk`: DynamicQuantizeLinear on q and k, `MatMulInteger` for QK^T, fp32 softmax and P.V;
* `int8-qk-pv`: as `int8-qk`, and P.V in `MatMulInteger` too;
* `int8-qk-s8k`: what the int8 bundles run (quantization/onnx_attention.py): q uint8 as above, k
  symmetric int8 (scale max|k| / 127), QK^T in `MatMulIntegerToFloat` (u8 x s8: MLAS's VNNI kernel),
  fp32 softmax and P.V.

Shapes follow the graphs `sam2-edge export` writes for a 4-layer, one-head SAM 2 memory attention:
queries = (S/16)^2 tokens, keys = slots x (S/16)^2 memory tokens + the object-pointer tokens,
key width = 256 (+1: the graphs append the key-validity bias as one extra q/k column), value
width = the memory width 64 (values folded, `fold_memory_values`). Inputs are seeded Gaussians
(the kernels' speed does not depend on the values; the error figures are for Gaussian inputs,
an optimistic case for int8: trained activations have outlier channels). Error: SQNR (dB) of each
form's output against `mha`'s. Timings: median of --repeats runs after one warm-up, one process,
the forms interleaved run by run; the CPU and the load average are printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List

import numpy as np

FORMS = ("mha", "matmul-fp32", "int8-qk", "int8-qk-pv", "int8-qk-s8k")


def _graph(form: str, sq: int, sk: int, d: int, dv: int) -> bytes:
    """One attention as an ONNX model: inputs q [1, Sq, D], k [1, Sk, D], v [1, Sk, Dv] -> o [1, Sq, Dv]."""
    from onnx import TensorProto as T
    from onnx import helper as h

    ins = [h.make_tensor_value_info("q", T.FLOAT, [1, sq, d]),
           h.make_tensor_value_info("k", T.FLOAT, [1, sk, d]),
           h.make_tensor_value_info("v", T.FLOAT, [1, sk, dv])]
    out = h.make_tensor_value_info("o", T.FLOAT, [1, sq, dv])
    inits = [h.make_tensor("scale", T.FLOAT, [], [1.0 / float(np.sqrt(d))])]
    n = h.make_node
    if form == "mha":
        nodes = [n("MultiHeadAttention", ["q", "k", "v"], ["o"], domain="com.microsoft", num_heads=1)]
        inits = []
    elif form == "matmul-fp32":
        nodes = [n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),          # [1, Sk, D] -> [1, D, Sk]
                 n("MatMul", ["q", "kt"], ["s0"]),                       # [1, Sq, Sk]
                 n("Mul", ["s0", "scale"], ["s"]),
                 n("Softmax", ["s"], ["p"], axis=-1),
                 n("MatMul", ["p", "v"], ["o"])]                         # [1, Sq, Dv]
    elif form in ("int8-qk", "int8-qk-pv"):
        nodes = [n("DynamicQuantizeLinear", ["q"], ["qq", "qs", "qz"]),   # uint8, per tensor
                 n("DynamicQuantizeLinear", ["k"], ["kq", "ks", "kz"]),
                 n("Transpose", ["kq"], ["kqt"], perm=[0, 2, 1]),
                 n("MatMulInteger", ["qq", "kqt", "qz", "kz"], ["si"]),  # int32 [1, Sq, Sk]
                 n("Cast", ["si"], ["sf"], to=T.FLOAT),
                 n("Mul", ["qs", "ks"], ["s1"]), n("Mul", ["s1", "scale"], ["s2"]),
                 n("Mul", ["sf", "s2"], ["s"]),
                 n("Softmax", ["s"], ["p"], axis=-1)]
        if form == "int8-qk":
            nodes.append(n("MatMul", ["p", "v"], ["o"]))
        else:
            nodes += [n("DynamicQuantizeLinear", ["p"], ["pq", "ps", "pz"]),
                      n("DynamicQuantizeLinear", ["v"], ["vq", "vs", "vz"]),
                      n("MatMulInteger", ["pq", "vq", "pz", "vz"], ["oi"]),
                      n("Cast", ["oi"], ["of"], to=T.FLOAT),
                      n("Mul", ["ps", "vs"], ["os"]), n("Mul", ["of", "os"], ["o"])]
    elif form == "int8-qk-s8k":
        inits += [h.make_tensor("levels", T.FLOAT, [], [127.0]), h.make_tensor("tiny", T.FLOAT, [], [1e-30]),
                  h.make_tensor("kz", T.INT8, [], [0])]
        nodes = [n("DynamicQuantizeLinear", ["q"], ["qq", "qs", "qz"]),
                 n("Abs", ["k"], ["ka"]), n("ReduceMax", ["ka"], ["km"], keepdims=0),
                 n("Div", ["km", "levels"], ["ks0"]), n("Max", ["ks0", "tiny"], ["ks"]),
                 n("QuantizeLinear", ["k", "ks", "kz"], ["kq"]),                 # int8, symmetric
                 n("Transpose", ["kq"], ["kqt"], perm=[0, 2, 1]),
                 n("Mul", ["qs", "scale"], ["qs2"]),
                 n("MatMulIntegerToFloat", ["qq", "kqt", "qs2", "ks", "qz", "kz"], ["s"], domain="com.microsoft"),
                 n("Softmax", ["s"], ["p"], axis=-1),
                 n("MatMul", ["p", "v"], ["o"])]
    else:
        raise ValueError(f"unknown form {form!r}; one of {', '.join(FORMS)}")
    g = h.make_graph(nodes, form, ins, [out], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def shapes(image_size: int, slots: int, ptr_tokens: int) -> Dict[str, int]:
    hw = (image_size // 16) ** 2
    return {"sq": hw, "sk": slots * hw + ptr_tokens, "d": 256 + 1, "dv": 64}


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    err = float(((out.astype(np.float64) - ref) ** 2).sum())
    return float("inf") if err == 0.0 else 10.0 * float(np.log10(float((ref.astype(np.float64) ** 2).sum()) / err))


def measure(image_size: int, slots: int, ptr_tokens: int, threads: int, repeats: int, seed: int) -> dict:
    import onnxruntime as ort

    shp = shapes(image_size, slots, ptr_tokens)
    rng = np.random.default_rng(seed)
    feeds = {"q": rng.standard_normal((1, shp["sq"], shp["d"]), dtype=np.float32),
             "k": rng.standard_normal((1, shp["sk"], shp["d"]), dtype=np.float32) * np.float32(0.5),
             "v": rng.standard_normal((1, shp["sk"], shp["dv"]), dtype=np.float32)}
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    # the forms run interleaved, each session with its own pool: none may spin on the next one's cores
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {f: ort.InferenceSession(_graph(f, **shp), so, providers=["CPUExecutionProvider"]) for f in FORMS}
    outs = {f: s.run(None, feeds)[0] for f, s in sessions.items()}          # warm-up + outputs
    times: Dict[str, List[float]] = {f: [] for f in FORMS}
    for _ in range(repeats):                                                 # interleaved
        for f, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds)
            times[f].append(time.perf_counter() - t)
    ref = outs["mha"]
    rows = {}
    for f in FORMS:
        med = statistics.median(times[f])
        rows[f] = {"median_ms": round(med * 1e3, 2), "min_ms": round(min(times[f]) * 1e3, 2),
                   "vs_mha": round(statistics.median(times["mha"]) / med, 3),
                   "sqnr_db_vs_mha": None if f == "mha" else round(sqnr_db(ref, outs[f]), 1)}
    return {"image_size": image_size, "shape": shp, "forms": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, action="append", help="model input side (repeatable; default 512 and 1024)")
    p.add_argument("--slots", type=int, default=8, help="memory slots attended (default 8: 7 + a second conditioning frame)")
    p.add_argument("--ptr-tokens", type=int, default=68, help="object-pointer tokens (default 68: 17 pointers x 4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    sizes = a.image_size or [512, 1024]
    if any(s <= 0 or s % 16 for s in sizes):
        p.error("--image-size must be a positive multiple of 16")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from sam2_edge.sysinfo import cpu_name

    result = {"cpu": cpu_name(), "threads": a.threads, "load_average_start": list(os.getloadavg()), "runs": []}
    print(f"CPU {result['cpu']}, {a.threads} threads, load {os.getloadavg()[0]:.2f}")
    print(f"{'size':>5} {'form':12} {'median ms':>10} {'vs mha':>7} {'SQNR dB':>8}")
    for s in sizes:
        run = measure(s, a.slots, a.ptr_tokens, a.threads, a.repeats, a.seed)
        result["runs"].append(run)
        for f, r in run["forms"].items():
            sq = "" if r["sqnr_db_vs_mha"] is None else f"{r['sqnr_db_vs_mha']:.1f}"
            print(f"{s:>5} {f:12} {r['median_ms']:>10.1f} {r['vs_mha']:>6.2f}x {sq:>8}")
    result["load_average_end"] = list(os.getloadavg())
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
