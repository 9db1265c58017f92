"""The ONNX exporter's attention fusion (export/onnx_fuse.py): the decomposed
MatMul -> [Add key bias] -> Softmax -> MatMul of an exported attention becomes one
com.microsoft.MultiHeadAttention, which ONNX Runtime's CPU provider runs with its flash
kernel (no query x key score matrix in memory).

On micro: the exported memory-attention graph holds the fused op for every cross-attention
(no Softmax over the memory keys is left), keeps TrackerSpec.io() exactly, and computes what
the eager stage computes -- all slots valid, half of the memory / pointer slots masked, and
a single valid slot -- within STAGE_TOL; fp16 graphs stay unfused. The rewrite itself is
checked on synthetic graphs against numpy (several heads, rank-2 and rank-4 key biases,
head sizes that need padding) and must leave alone what it cannot fold exactly.

The runtime side of the same memory work: the ONNX Runtime backend's sessions run without
ORT's per-session CPU arena and with glibc's mmap threshold fixed (runtimes/backends/heap.py),
and still compute what sessions with ORT's default options compute.
"""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

from bundle_helpers import MICRO_CKPT

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sam2_edge.export import example_inputs  # noqa: E402
from sam2_edge.export.onnx_export import export_stage  # noqa: E402
from sam2_edge.export.onnx_fuse import FUSED_OP, MS_DOMAIN, fuse_attention  # noqa: E402

# onnxruntime (fused) vs eager torch, float32: |d| <= STAGE_TOL * max(1, |torch|) per element,
# the bar of the unfused graphs in test_export_onnx.py (measured here: worst ~3e-6).
STAGE_TOL = 2e-4
# synthetic attention vs float64 numpy: the flash kernel sums in a different order
SYNTH_TOL = 1e-5


def _session(model_or_path, threads: int = 1):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------ micro memory attention
@pytest.fixture(scope="module")
def micro_stage():
    from sam2_edge.checkpoint import load_checkpoint
    from sam2_edge.stages import build_stages, tracker_spec
    from sam2_edge.contract import STAGES

    model, _ = load_checkpoint(str(MICRO_CKPT))
    spec = tracker_spec(model, 2)
    stages = dict(zip(STAGES, build_stages(model)))
    return spec, stages["memory_attention"].eval()


def _export(micro_stage, tmp_path, name: str, precision: str = "fp32"):
    spec, stage = micro_stage
    ins, outs = spec.io()["memory_attention"]
    args = tuple(torch.from_numpy(a) for a in example_inputs(spec, "memory_attention"))
    path = tmp_path / name
    with torch.no_grad():
        extra = export_stage(stage, args, [t.name for t in ins], [t.name for t in outs], path, precision)
    return path, extra


@pytest.fixture(scope="module")
def fused_graph(micro_stage, tmp_path_factory):
    return _export(micro_stage, tmp_path_factory.mktemp("fused"), "memory_attention.onnx")


def _n_keys(spec) -> int:
    """Memory keys of the cross-attention: M slots x T tokens + P pointers x split tokens."""
    t = spec.feat_size ** 2
    split = spec.d_model // spec.mem_dim
    return spec.mem_slots * t + spec.ptr_slots * split


def test_memory_attention_graph_is_fused(micro_stage, fused_graph):
    spec, stage = micro_stage
    path, extra = fused_graph
    model = onnx.load(str(path))
    g = model.graph
    n_layers = len(stage.model.memory_attention.layers)
    fused = [n for n in g.node if n.op_type == FUSED_OP and n.domain == MS_DOMAIN]
    # every layer's cross-attention (and, at this size, its self-attention) is one fused node
    assert len(fused) == 2 * n_layers, [n.name for n in fused]
    assert extra["fused_attention"] == 2 * n_layers
    assert any(o.domain == MS_DOMAIN for o in model.opset_import)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == extra["opset"]
    # no Softmax left at all, in particular none over the memory keys
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    n_keys = _n_keys(spec)
    softmaxes = [n for n in g.node if n.op_type == "Softmax"]
    assert not [n for n in softmaxes if shapes.get(n.input[0], [0])[-1] == n_keys]
    assert not softmaxes
    # the fused cross-attention reads n_keys keys with the key bias folded in (q/k head size padded)
    kv_lens = sorted(shapes[n.input[1]][1] for n in fused)
    assert kv_lens.count(n_keys) == n_layers, kv_lens
    # inputs / outputs exactly as the spec says
    ins, outs = spec.io()["memory_attention"]
    for vis, specs in ((g.input, ins), (g.output, outs)):
        assert [v.name for v in vis] == [t.name for t in specs]
        for v, t in zip(vis, specs):
            assert tuple(d.dim_value for d in v.type.tensor_type.shape.dim) == t.shape
            assert helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type) == np.dtype(t.dtype)
    onnx.checker.check_model(str(path))


def _masked_inputs(spec, seed: int, case: str) -> List[np.ndarray]:
    ins, _ = spec.io()["memory_attention"]
    x = dict(zip([t.name for t in ins], example_inputs(spec, "memory_attention", seed)))
    rng = np.random.default_rng(seed)
    for name in ("mem_valid", "ptr_valid"):
        n = x[name].shape[1]
        v = np.zeros_like(x[name])
        if case == "all":
            v[:] = 1.0
        elif case == "half":  # half of the slots masked (random ones), the first always valid
            keep = 1 + rng.permutation(n - 1)[: n - n // 2 - 1]
            v[0, keep] = 1.0
            v[0, 0] = 1.0
        elif case == "one":  # only the first slot
            v[0, 0] = 1.0
        x[name] = v
    return [x[t.name] for t in ins]


@pytest.mark.parametrize("case", ["all", "half", "one"])
def test_fused_graph_matches_eager(micro_stage, fused_graph, case):
    spec, stage = micro_stage
    path, _ = fused_graph
    sess = _session(path)
    names = [i.name for i in sess.get_inputs()]
    for seed in range(3):
        inputs = _masked_inputs(spec, seed, case)
        if case == "half":
            assert inputs[names.index("mem_valid")].sum() == spec.mem_slots - spec.mem_slots // 2
        with torch.no_grad():
            ref = stage(*(torch.from_numpy(a) for a in inputs)).numpy()
        got = sess.run(None, dict(zip(names, inputs)))[0]
        assert got.shape == ref.shape and np.isfinite(got).all()
        d = np.abs(got.astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref))
        assert d.max() <= STAGE_TOL, f"{case} seed {seed}: max rel |d| {d.max():.3e}"


def test_masked_slots_do_not_count(micro_stage, fused_graph):
    """Changing the content of a masked memory slot changes nothing (its keys are removed)."""
    spec, _ = micro_stage
    path, _ = fused_graph
    sess = _session(path)
    names = [i.name for i in sess.get_inputs()]
    inputs = _masked_inputs(spec, 5, "half")
    mem_valid = inputs[names.index("mem_valid")][0]
    absent = int(np.flatnonzero(mem_valid == 0)[0])
    a = sess.run(None, dict(zip(names, inputs)))[0]
    inputs[names.index("memory")][0, absent] = 100.0
    b = sess.run(None, dict(zip(names, inputs)))[0]
    np.testing.assert_array_equal(a, b)


def test_unfused_and_fp16_exports(micro_stage, fused_graph, tmp_path):
    """fuse_attention=False gives the decomposed graph with the same numbers; fp16 graphs stay
    decomposed (MultiHeadAttention's CPU kernel is float32 only) and keep working."""
    spec, stage = micro_stage
    ins, outs = spec.io()["memory_attention"]
    args = tuple(torch.from_numpy(a) for a in example_inputs(spec, "memory_attention"))
    plain = tmp_path / "plain.onnx"
    with torch.no_grad():
        extra = export_stage(stage, args, [t.name for t in ins], [t.name for t in outs], plain, "fp32",
                             fuse_attention=False)
    assert "fused_attention" not in extra
    m = onnx.load(str(plain))
    assert not [n for n in m.graph.node if n.op_type == FUSED_OP]
    assert [n for n in m.graph.node if n.op_type == "Softmax"]
    feeds = {t.name: a.numpy() for t, a in zip(ins, args)}
    a = _session(plain).run(None, feeds)[0]
    b = _session(fused_graph[0]).run(None, feeds)[0]
    assert np.abs(a - b).max() <= STAGE_TOL * max(1.0, float(np.abs(a).max()))

    half, extra16 = _export(micro_stage, tmp_path, "fp16.onnx", "fp16")
    m16 = onnx.load(str(half))
    assert not [n for n in m16.graph.node if n.op_type == FUSED_OP]
    assert "fused_attention" not in extra16
    assert max(extra16["max_abs_diff_vs_torch"].values()) < 1e-1


# ------------------------------------------------------------------ the rewrite on synthetic graphs
def _attention_graph(b, h, sq, sk, d, dv, bias_shape=None, scale=None):
    """The pattern torch.onnx.export(dynamo=True) writes for scaled_dot_product_attention:
    MatMul(Q * s, Kt * s) [+ bias] -> Softmax -> MatMul(., V), with Q/Kt/V computed in the graph."""
    F = TensorProto.FLOAT
    s = float((1.0 / np.sqrt(d)) ** 0.5) if scale is None else scale
    inputs = [helper.make_tensor_value_info("q", F, [b, h, sq, d]),
              helper.make_tensor_value_info("k", F, [b, h, sk, d]),
              helper.make_tensor_value_info("v", F, [b, h, sk, dv])]
    nodes = [helper.make_node("Mul", ["q", "s"], ["qs"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("Mul", ["kt", "s"], ["kts"]),
             helper.make_node("MatMul", ["qs", "kts"], ["scores"])]
    last = "scores"
    if bias_shape is not None:
        inputs.append(helper.make_tensor_value_info("bias", F, list(bias_shape)))
        nodes.append(helper.make_node("Add", ["scores", "bias"], ["biased"]))
        last = "biased"
    nodes += [helper.make_node("Softmax", [last], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["o"]),
              helper.make_node("Identity", ["o"], ["out"])]
    graph = helper.make_graph(nodes, "attn", inputs, [helper.make_tensor_value_info("out", F, [b, h, sq, dv])],
                              [numpy_helper.from_array(np.array([s], np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model), s * s


def _attention_feeds(rng, b, h, sq, sk, d, dv, bias_shape=None):
    """Inputs of `_attention_graph`: q / k of std 2, v of std 1, and a key bias of 0 / -1e4 (about
    half the keys absent, never the first), the arrays the graph is fed."""
    feeds = {"q": rng.standard_normal((b, h, sq, d)).astype(np.float32) * 2,
             "k": rng.standard_normal((b, h, sk, d)).astype(np.float32) * 2,
             "v": rng.standard_normal((b, h, sk, dv)).astype(np.float32)}
    if bias_shape is not None:
        bias = np.where(rng.random(bias_shape) < 0.5, -1.0e4, 0.0).astype(np.float32)
        bias.reshape(-1)[:1] = 0.0
        feeds["bias"] = bias
    return feeds


def _reference(q, k, v, scale, bias=None):
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale
    if bias is not None:
        s = s + bias
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p, v.astype(np.float64))


@pytest.mark.parametrize("b,h,sq,sk,d,dv,bias_shape", [
    (1, 1, 300, 700, 64, 64, None),
    (1, 1, 300, 700, 64, 48, (1, 1, 1, 700)),  # memory attention: per-key bias, v head size differs
    (2, 4, 128, 520, 16, 16, (2, 1, 1, 520)),  # several heads, batch, q/k head size 16 -> 32 with the bias
    (1, 3, 256, 257, 33, 8, (1, 257)),  # rank-2 bias, odd head size
    (1, 2, 256, 300, 8, 8, (1, 2, 1, 300)),  # a bias per head
])
def test_rewrite_matches_numpy(b, h, sq, sk, d, dv, bias_shape):
    model, scale = _attention_graph(b, h, sq, sk, d, dv, bias_shape)
    rep = fuse_attention(model, min_scores=1)
    assert len(rep.fused) == 1, rep.skipped
    assert not [n for n in model.graph.node if n.op_type in ("Softmax", "MatMul")]
    onnx.checker.check_model(model)
    rng = np.random.default_rng(0)
    feeds = _attention_feeds(rng, b, h, sq, sk, d, dv, bias_shape)
    q, k, v, bias = feeds["q"], feeds["k"], feeds["v"], feeds.get("bias")
    if bias is not None and len(bias_shape) == 4 and bias_shape[1] == 1:
        # any per-key bias, not only 0 / -1e4 (in place: the array fed)
        bias[..., : sk // 3] += rng.standard_normal(sk // 3).astype(np.float32)
    got = _session(model, threads=2).run(None, feeds)[0]
    ref = _reference(q, k, v, scale, None if bias is None else bias.reshape((1,) * (4 - bias.ndim) + bias.shape))
    assert np.abs(got - ref).max() <= SYNTH_TOL * max(1.0, float(np.abs(ref).max()))


def test_rewrite_leaves_what_it_cannot_fold():
    # a bias that varies over the queries (not a key mask): left decomposed
    model, _ = _attention_graph(1, 1, 64, 1200, 16, 16, (1, 1, 64, 1200))
    rep = fuse_attention(model, min_scores=1)
    assert not rep.fused and "varies over queries" in rep.skipped[0]
    # small attentions (below min_scores) are left alone
    model, _ = _attention_graph(1, 1, 64, 64, 16, 16, None)
    assert not fuse_attention(model).fused
    # scores also used elsewhere (an extra graph output): left alone
    model, _ = _attention_graph(1, 1, 300, 300, 16, 16, None)
    model.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 300, 300]))
    assert not fuse_attention(model, min_scores=1).fused


# ------------------------------------------------------------------ runtime memory: session options, heap
def test_backend_frees_stage_memory_between_runs(tmp_path_factory):
    """The ONNX Runtime backend's sessions run without ORT's per-session CPU arena (each arena
    kept its stage's peak for good: the process held the sum of the four peaks; see
    benchmarks/README.md, "ONNX Runtime: where the memory goes"), keep the memory pattern and
    full graph optimisation, fix glibc's mmap threshold (heap.py) where that applies, and
    compute what sessions with ONNX Runtime's default options compute."""
    from bundle_helpers import micro_onnx_bundle
    from sam2_edge.contract import STAGES
    from sam2_edge.runtimes.backends import heap
    from sam2_edge.runtimes.bundle_backends import open_bundle

    bundle = micro_onnx_bundle(tmp_path_factory)
    be = open_bundle(bundle, "onnxruntime", isolate=False, threads=1)
    for key, sess in be.sessions.items():
        so = sess.get_session_options()
        assert so.enable_cpu_mem_arena is False, key
        assert so.enable_mem_pattern is True, key
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL, key
        assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL, key
        # one pool per session, run one after the other: a finished pool must not spin on the
        # cores the next stage's pool needs (onnxruntime_backend's docstring)
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0", key
    if heap._glibc() is not None and not heap.user_set_threshold():
        assert heap.applied_threshold() == heap.DEFAULT_MMAP_THRESHOLD
    for stage in STAGES:
        ref_sess = _session(bundle / f"{stage}.onnx")  # ORT's defaults: arena on
        assert ref_sess.get_session_options().enable_cpu_mem_arena is True
        for seed in (0, 1):  # twice: the second run reuses nothing a first run left behind
            x = example_inputs(be.spec, stage, seed)
            got = be.run(stage, x)
            ref = ref_sess.run(None, {i.name: a for i, a in zip(ref_sess.get_inputs(), x)})
            for g, r in zip(got, ref):
                np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6, err_msg=stage)
    # low_memory=False (where memory is plentiful, ~9 % faster): ONNX Runtime's arenas kept
    fast = open_bundle(bundle, "onnxruntime", isolate=False, threads=1, low_memory=False)
    assert all(sess.get_session_options().enable_cpu_mem_arena is True for sess in fast.sessions.values())
    assert all(s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
               for s in fast.sessions.values())
    assert "arenas" in fast.describe() and "arenas" not in be.describe()
    from sam2_edge.errors import InputError

    with pytest.raises(InputError, match="low_memory must be True or False"):
        open_bundle(bundle, "onnxruntime", isolate=False, low_memory="no")


def test_heap_threshold_is_set_once_and_leaves_the_users_own(monkeypatch):
    from sam2_edge.runtimes.backends import heap

    for bad in (0, -1, True, 1.5, "1M"):
        with pytest.raises(ValueError):
            heap.return_large_blocks_to_os(bad)
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(heap, "_applied", None)
    monkeypatch.setattr(heap, "_glibc", lambda: FakeLibc())
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert heap.return_large_blocks_to_os() is None and not calls  # the user's tunable is kept
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert heap.return_large_blocks_to_os() is None and not calls  # the user's variable is kept
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert heap.return_large_blocks_to_os() == heap.DEFAULT_MMAP_THRESHOLD
    assert heap.return_large_blocks_to_os(4096) == heap.DEFAULT_MMAP_THRESHOLD  # once per process
    assert calls == [(heap.M_MMAP_THRESHOLD, heap.DEFAULT_MMAP_THRESHOLD)]
    monkeypatch.setattr(heap, "_applied", None)
    monkeypatch.setattr(heap, "_glibc", lambda: None)  # macOS, Windows, musl: nothing to do
    assert heap.return_large_blocks_to_os() is None and heap.applied_threshold() is None
