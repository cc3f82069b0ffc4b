"""Operator fusion (``compiler.fuse``): kernel counts and fused-vs-unfused numerics.

Chains of elementwise/broadcast ops become one kernel; producers read by several kernels are
duplicated only when cheap; reductions absorb their prologues (and a scale epilogue) but an
expensive producer is never evaluated more than once per element; multi-output nodes, hidden
outputs and the backward graph; ``MXNET_USE_FUSION=0`` / ``fusion=False``; the real-MXNet
reference cases give the same numbers fused and unfused.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mxc as mx
from mxc.compiler.build import compile_graph
from mxc.compiler.fuse import fusion_enabled

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
RNG = np.random.default_rng(7)


class Run:
    """Compile a symbol (fusion on or off), feed inputs, run forward (and backward)."""

    def __init__(self, sym, values: dict, *, fusion: bool | None = None, grad: tuple = (),
                 head_grads: list | None = None) -> None:
        shapes = {k: np.shape(v) for k, v in values.items()}
        types = {k: np.asarray(v).dtype.name for k, v in values.items()}
        req = {k: "write" for k in grad} or None
        self.cg = cg = compile_graph(sym._graph(), shapes, types, is_train=bool(grad),
                                     grad_req=req, fusion=fusion)
        p = cg.program
        p.allocate()
        self.graph = sym._graph()
        for k, v in values.items():
            v = np.ascontiguousarray(v)
            p.storage[cg.var_slots[k]][: v.nbytes].view(v.dtype)[:] = v.ravel()
        p.run("forward")
        self.outputs = [self._view(s, (e.node.uid, e.index)).copy()
                        for e, s in zip(self.graph.outputs, cg.head_slots)]
        self.grads = {}
        if grad:
            for i, s in enumerate(cg.head_grad_slots):
                hg = np.ones_like(self.outputs[i]) if head_grads is None else head_grads[i]
                p.storage[s][: hg.nbytes].view(hg.dtype)[:] = hg.ravel()
            p.run("backward")
            for k in grad:
                v = np.asarray(values[k])
                self.grads[k] = p.storage[cg.grad_slots[k]][: v.nbytes].view(v.dtype) \
                    .reshape(v.shape).copy()

    def _view(self, slot, key):
        shape = self.cg.shapes[key]
        dt = np.dtype(self.cg.types[key])
        n = int(np.prod(shape)) * dt.itemsize
        return self.cg.program.storage[slot][:n].view(dt).reshape(shape)

    @property
    def n(self) -> int:
        return len(self.cg.kernels)


def both(sym, values, grad=(), rtol=1e-5, atol=1e-6):
    """Run fused and unfused; assert equal numbers; return (fused, unfused)."""
    f = Run(sym, values, fusion=True, grad=grad)
    u = Run(sym, values, fusion=False, grad=grad)
    # (the memory planner may still elide gradient copies of the unfused graph)
    assert u.cg.kernels_unfused == f.cg.kernels_unfused and f.n <= u.n <= u.cg.kernels_unfused
    for a, b in zip(f.outputs, u.outputs):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    for k in grad:
        np.testing.assert_allclose(f.grads[k], u.grads[k], rtol=rtol, atol=atol, err_msg=k)
    return f, u


def x_(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def gelu(x, a, b):
    t = mx.sym.broadcast_add(mx.sym.broadcast_mul(x, a), b)
    return 0.5 * t * (1 + mx.sym.tanh((t + 0.044715 * t * t * t) * 0.7978845608))


def gelu_np(x, a, b):
    t = x * a + b
    return 0.5 * t * (1 + np.tanh((t + 0.044715 * t ** 3) * 0.7978845608))


V = mx.sym.Variable


# ---------------------------------------------------------------------------------------------
# chains, diamonds, reductions
# ---------------------------------------------------------------------------------------------
def test_gelu_chain_is_one_kernel():
    vals = {"x": x_(32, 48), "a": x_(48), "b": x_(48)}
    f, u = both(gelu(V("x"), V("a"), V("b")), vals)
    assert f.cg.kernels_unfused == 11 and f.n == 1 and u.n == 11
    assert len(f.cg.fused_groups) == 1 and len(f.cg.fused_groups[0]) == 11
    assert any("tanh" in n for n in f.cg.fused_groups[0])
    np.testing.assert_allclose(f.outputs[0], gelu_np(vals["x"], vals["a"], vals["b"]),
                               rtol=1e-5, atol=1e-5)
    # fused slots get no storage
    assert sum(1 for s in f.cg.program.slots if s.kind == "fused") >= 10


def test_flat_chain_and_scalar_ops():
    x = V("x")
    y = mx.sym.relu(mx.sym.exp(x * 0.5 - 1.0) + mx.sym.sigmoid(x))
    f, _ = both(y, {"x": x_(1000)})
    assert f.n == 1


def test_fusion_off(monkeypatch):
    vals = {"x": x_(8, 16), "a": x_(16), "b": x_(16)}
    monkeypatch.setenv("MXNET_USE_FUSION", "0")
    assert not fusion_enabled()
    r = Run(gelu(V("x"), V("a"), V("b")), vals)
    assert r.n == r.cg.kernels_unfused == 11 and r.cg.fused_groups == []
    assert r.cg.program.slots and all(s.kind != "fused" for s in r.cg.program.slots)
    assert Run(gelu(V("x"), V("a"), V("b")), vals, fusion=True).n == 1   # option wins
    monkeypatch.setenv("MXNET_USE_FUSION", "1")
    assert fusion_enabled() and not fusion_enabled(False)


def test_diamond_expensive_producer_not_duplicated():
    x = V("x")
    p = mx.sym.exp(x)
    f, _ = both(mx.sym.Group([p + 1, p * 2]), {"x": x_(500)})
    assert f.cg.kernels_unfused == 3 and f.n == 3       # exp stays its own kernel


def test_diamond_cheap_producer_duplicated():
    x = V("x")
    p = x * 3 + 1
    f, _ = both(mx.sym.Group([mx.sym.exp(p), mx.sym.tanh(p)]), {"x": x_(500)})
    assert f.cg.kernels_unfused == 4 and f.n == 2       # x*3+1 inlined into both


def test_reconverging_diamond_is_one_kernel():
    x = V("x")
    p = mx.sym.exp(x)
    f, _ = both((p + 1) * mx.sym.sqrt(p), {"x": x_(500)})
    assert f.n == 1       # both paths read exp(x) at the same element: computed once


def test_softmax_and_layernorm_absorb_prologue():
    x, y = V("x"), V("y")
    f, _ = both(mx.sym.softmax(x * 2 + y, axis=-1), {"x": x_(16, 40), "y": x_(16, 40)})
    assert f.cg.kernels_unfused == 3 and f.n == 1
    f, _ = both(mx.sym.LayerNorm(x + y, V("g"), V("b"), axis=-1),
                {"x": x_(16, 40), "y": x_(16, 40), "g": x_(40), "b": x_(40)}, atol=1e-5)
    assert f.n == 1
    f, _ = both(mx.sym.log_softmax(mx.sym.relu(x), axis=1), {"x": x_(4, 7, 5)})
    assert f.n == 1


def test_expensive_prologue_read_several_times_stays():
    # softmax reads its input three times per element (max, sum, output): exp(x) is kept
    x = V("x")
    f, _ = both(mx.sym.softmax(mx.sym.exp(x), axis=-1), {"x": x_(16, 40)})
    assert f.n == 2
    # read once per element inside a row reduction: inlined
    f, _ = both(mx.sym.sum(mx.sym.exp(x), axis=1), {"x": x_(64, 40)})
    assert f.n == 1


def test_reduction_epilogue():
    x = V("x")
    f, _ = both(mx.sym.sum(x, axis=1) * 0.5 + 1, {"x": x_(64, 40)})
    assert f.cg.kernels_unfused == 3 and f.n == 1
    # row statistics broadcast back over the row: one kernel, the sum hoisted per row
    # (positive rows: a row sum near 0 would turn summation-order rounding into a large
    # relative difference, and the data depend on which tests drew from RNG before)
    f, _ = both(mx.sym.broadcast_div(x, mx.sym.sum(x, axis=1, keepdims=True)),
                {"x": np.abs(x_(64, 40)) + 0.5})
    assert f.n == 1
    # a reduction consumed by two kernels stays materialized
    s = mx.sym.sum(x, axis=1)
    f, _ = both(mx.sym.Group([s * 2, s + 1]), {"x": x_(64, 40)})
    assert f.n == 3


def test_no_serialization_into_full_reduction():
    x = V("x")
    f, _ = both(mx.sym.sum(mx.sym.exp(x)), {"x": x_(256, 64)})
    assert f.n == 2      # exp stays parallel; the full sum is one task
    f, _ = both(mx.sym.sum(x * 2), {"x": x_(256, 64)})
    assert f.n == 2      # also a cheap producer keeps its parallelism


def test_injective_ops():
    x, y = V("x"), V("y")
    t = mx.sym.transpose(mx.sym.exp(x), axes=(1, 0))
    f, _ = both(mx.sym.relu(t + y), {"x": x_(24, 40), "y": x_(40, 24)})
    assert f.n == 1
    s = mx.sym.slice_axis(x * 2, axis=1, begin=3, end=20)
    f, _ = both(mx.sym.exp(s), {"x": x_(24, 40)})
    assert f.n == 1
    r = mx.sym.reshape(mx.sym.tanh(x), shape=(40, 24))
    f, _ = both(r * mx.sym.transpose(y), {"x": x_(24, 40), "y": x_(24, 40)})
    assert f.n == 1


def test_multi_output_node():
    x = V("x")
    parts = mx.sym.split(mx.sym.exp(x), num_outputs=3, axis=1)
    y = parts[0] * 1 + parts[1] * 2 + parts[2] * 3
    f, _ = both(y, {"x": x_(8, 30)})
    assert f.n == 1
    # a part that is also a graph output stays materialized
    f, _ = both(mx.sym.Group([y, parts[1]]), {"x": x_(8, 30)})
    assert f.n == 2


def test_hidden_outputs_stay():
    # BatchNorm in training keeps its saved mean/invstd (read back by imperative callers)
    x = V("x")
    bn = mx.sym.BatchNorm(x * 2, V("g"), V("b"), V("mm"), V("mv"), fix_gamma=False)
    vals = {"x": x_(4, 3, 5, 5), "g": x_(3), "b": x_(3), "mm": np.zeros(3, np.float32),
            "mv": np.ones(3, np.float32)}
    r = Run(mx.sym.relu(bn), vals, grad=("x",))
    u = Run(mx.sym.relu(bn), vals, grad=("x",), fusion=False)
    np.testing.assert_allclose(r.outputs[0], u.outputs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.grads["x"], u.grads["x"], rtol=1e-4, atol=1e-5)
    assert r.n < u.n
    kinds = {s.name: s.kind for s in r.cg.program.slots}
    assert all(k != "fused" for n, k in kinds.items() if "batchnorm" in n.lower() and
               ("output1" in n or "output2" in n))


def test_backward_fuses():
    vals = {"x": x_(16, 24), "a": x_(24), "b": x_(24)}
    f, u = both(gelu(V("x"), V("a"), V("b")), vals, grad=("x", "a", "b"), rtol=1e-4,
                atol=1e-5)
    fwd_f = f.cg.program.sections["forward"]
    bwd_f = f.cg.program.sections["backward"]
    bwd_u = u.cg.program.sections["backward"]
    # forward values the backward reads stay materialized; the rest fuses
    assert fwd_f[1] - fwd_f[0] < 11
    assert bwd_f[1] - bwd_f[0] <= (bwd_u[1] - bwd_u[0]) * 2 // 3
    # gradient copies absorb their producers: a kernel named after the op, not the copy
    assert not any(k.node.endswith("_grad") and len(k.members) > 1 for k in f.cg.kernels)


def test_dtypes_and_casts():
    x = V("x")
    y = mx.sym.Cast(mx.sym.Cast(x * 3, dtype="float16") + 1, dtype="float32")
    f, _ = both(y, {"x": x_(300)})
    assert f.n == 1
    xi = V("xi")
    f, _ = both(mx.sym.Cast(xi * 2, dtype="float32") * 0.5,
                {"xi": RNG.integers(-5, 5, 64).astype(np.int32)})
    assert f.n == 1


# ---------------------------------------------------------------------------------------------
# the reference cases, fused vs unfused
# ---------------------------------------------------------------------------------------------
SYMBOL_CASES = ["sym_mlp", "sym_convnet", "sym_elemwise_ops", "sym_loss_ops", "sym_reduce_ops",
                "sym_reshape_ops", "mlp", "lenet", "bncnn", "resnet18_v1"]


@pytest.mark.parametrize("name", SYMBOL_CASES)
def test_reference_case_fused_equals_unfused(name):
    from mxc.compiler.model import load_model

    d = CASES / name
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    graph, arg, aux = load_model(d / meta["symbol"], d / meta["params"])
    feed = {i["name"]: np.load(d / i["file"]) for i in meta["inputs"]}
    values = {**arg, **aux, **feed}
    names = {v.name for v in graph.variables()}
    values = {k: v for k, v in values.items() if k in names}
    grad = tuple(k for k in arg if k in names) if "backward" in meta else ()
    runs = {}
    for fz in (True, False):
        runs[fz] = _run_graph(graph, values, fz, grad)
    (fo, fg, fk, fu), (uo, ug, uk, uu) = runs[True], runs[False]
    assert fu == uu and fk <= uk <= uu
    for a, b in zip(fo, uo):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()))
    for k in fg:
        scale = max(1.0, float(np.abs(ug[k]).max()))
        np.testing.assert_allclose(fg[k], ug[k], rtol=1e-3, atol=1e-5 * scale, err_msg=k)


def _run_graph(graph, values, fusion, grad):
    shapes = {k: v.shape for k, v in values.items()}
    types = {k: v.dtype.name for k, v in values.items()}
    aux = {n.name for n in graph.auxiliary()}
    req = {k: "write" for k in grad if k not in aux} or None
    cg = compile_graph(graph, shapes, types, is_train=bool(req), grad_req=req, fusion=fusion)
    p = cg.program
    p.allocate()
    for k, v in values.items():
        if k in cg.var_slots:
            v = np.ascontiguousarray(v)
            p.storage[cg.var_slots[k]][: v.nbytes].view(v.dtype)[:] = v.ravel()
    p.run("forward")
    outs = []
    for e, s in zip(graph.outputs, cg.head_slots):
        key = (e.node.uid, e.index)
        dt = np.dtype(cg.types[key])
        n = int(np.prod(cg.shapes[key])) * dt.itemsize
        outs.append(p.storage[s][:n].view(dt).copy())
    grads = {}
    if req:
        for e, s in zip(graph.outputs, cg.head_grad_slots):
            key = (e.node.uid, e.index)
            dt = np.dtype(cg.types[key])
            n = int(np.prod(cg.shapes[key]))
            p.storage[s][: n * dt.itemsize].view(dt)[:] = 1
        p.run("backward")
        for k in req:
            v = values[k]
            grads[k] = p.storage[cg.grad_slots[k]][: v.nbytes].view(v.dtype).copy()
    return outs, grads, len(cg.kernels), cg.kernels_unfused


def test_resnet18_kernel_count():
    from mxc.compiler.model import load_model

    d = CASES / "resnet18_v1"
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    graph, arg, aux = load_model(d / meta["symbol"], d / meta["params"])
    shapes = {i["name"]: tuple(np.load(d / i["file"]).shape) for i in meta["inputs"]}
    shapes.update({k: v.shape for k, v in {**arg, **aux}.items()})
    cg = compile_graph(graph, shapes, fusion=True)
    ops = [n.op for n in graph.nodes]
    # every BatchNorm (inference affine) folds into the ReLU / residual add after it, and the
    # add and its ReLU share a kernel (which one materializes depends on who reads the ReLU:
    # the next block's input rewrite may absorb it): no kernel of its own for BatchNorm or
    # elemwise_add
    assert cg.kernels_unfused - len(cg.kernels) >= ops.count("BatchNorm") + \
        ops.count("elemwise_add")
    assert len(cg.fused_groups) >= ops.count("Activation")
    assert all(len(k.members) > 1 for k in cg.kernels
               if k.node_op in ("BatchNorm", "elemwise_add"))


def test_resnet18_inference_kernels_per_convolution():
    # CompiledModel folds BatchNorm into the convolutions, whose weights it stores prepacked:
    # every convolution is one direct-convolution template kernel (strided ones read the
    # input in place: no phase-split rewrite), ReLU and residual adds join their epilogues;
    # plus the two pooling kernels and the dense GEMM
    from mxc.compiler.model import CompiledModel, load_model

    d = CASES / "resnet18_v1"
    if not d.exists():
        pytest.skip(f"{d} not present")
    graph, arg, aux = load_model(d / "resnet18_v1-symbol.json", d / "resnet18_v1-0000.params")
    m = CompiledModel(graph, arg, aux, {"data": (1, 3, 224, 224)})
    convs = sum(n.op == "Convolution" for n in graph.nodes)
    kernels = m.compiled.kernels
    direct = [k for k in kernels if getattr(k.kernel, "conv_spec", None) is not None]
    gemms = [k for k in kernels if getattr(k.kernel, "gemm_spec", None) is not None]
    assert len(direct) == convs and len(gemms) == 1         # the dense layer
    assert len(kernels) == convs + 3
    epi = [k.kernel.conv_spec.epilogue for k in direct]
    assert epi.count(("relu",)) + epi.count(("add", "relu")) == \
        sum(n.op == "Activation" for n in graph.nodes)
    assert epi.count(("add", "relu")) == sum(n.op == "elemwise_add" for n in graph.nodes)


@pytest.mark.slow
def test_op_suite_unfused():
    """Every op test with fusion off (they run fused by default)."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, MXNET_USE_FUSION="0")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        str(root / "tests" / "ops")], cwd=root, env=env, capture_output=True,
                       text=True, timeout=3000, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_inspect_fusion_cli(tmp_path):
    from click.testing import CliRunner

    from mxc.cli.main import main

    x = V("x")
    y = mx.sym.softmax(mx.sym.relu(mx.sym.FullyConnected(x, num_hidden=8, name="fc")) * 2,
                       name="sm")
    p = tmp_path / "m-symbol.json"
    p.write_text(y.tojson())
    r = CliRunner().invoke(main, ["inspect", str(p), "--shape", "x=4,5", "--fusion", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["kernels_unfused"] == 4 and rep["kernels"] == 2
    # relu in the FullyConnected GEMM's epilogue, *2 inlined into the softmax
    epi, grp = rep["fused_groups"]
    assert epi["nodes"][0] == "fc" and len(epi["nodes"]) == 2
    assert grp["kernel"] == "sm" and len(grp["nodes"]) == 2 and grp["nodes"][-1] == "sm"
    r = CliRunner().invoke(main, ["inspect", str(p), "--shape", "x=4,5", "--fusion"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and "4 kernels unfused -> 2 fused" in r.output, r.output


def _random_graph(rng, shape):
    """A random chain/diamond of elementwise, broadcast, injective and reduction ops."""
    pool = [(V("x"), shape)]
    for _ in range(rng.integers(3, 12)):
        s, sh = pool[rng.integers(len(pool))]
        c = int(rng.integers(12))
        n = None
        if c == 0:
            n = (mx.sym.exp(s * 0.1), sh)
        elif c == 1:
            n = (s * 2 + 1, sh)
        elif c == 2 and len(sh) >= 2:
            n = (mx.sym.transpose(s), tuple(reversed(sh)))
        elif c == 3 and len(sh) >= 2:
            n = (mx.sym.sum(s, axis=len(sh) - 1, keepdims=True), sh[:-1] + (1,))
        elif c == 4:
            n = (mx.sym.tanh(s), sh)
        elif c == 5 and sh[-1] > 2:
            n = (mx.sym.slice_axis(s, axis=len(sh) - 1, begin=1, end=sh[-1] - 1),
                 sh[:-1] + (sh[-1] - 2,))
        elif c == 6:
            s2, sh2 = pool[rng.integers(len(pool))]
            n = (s * s2, sh) if sh2 == sh else None
        elif c == 7 and len(sh) >= 2 and sh[-1] == 1:
            n = (mx.sym.broadcast_to(s, shape=sh[:-1] + (5,)), sh[:-1] + (5,))
        elif c == 8 and len(sh) == 2:
            n = (mx.sym.softmax(s, axis=-1), sh)
        elif c == 9:
            n = (mx.sym.reshape(s, shape=(-1,)), (int(np.prod(sh)),))
        elif c == 10 and len(sh) == 1 and sh[0] % 4 == 0:
            n = (mx.sym.reshape(s, shape=(4, -1)), (4, sh[0] // 4))
        elif c == 11 and len(sh) >= 2:
            n = (mx.sym.max(s, axis=0), sh[1:])
        if n is not None:
            pool.append(n)
    return mx.sym.Group([p[0] for p in pool[-3:]])


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_fused_equals_unfused(seed):
    rng = np.random.default_rng(seed)
    shape = [(6, 8), (3, 4, 5), (24,), (2, 3, 4, 2)][seed % 4]
    sym = _random_graph(rng, shape)
    x = rng.standard_normal(shape).astype(np.float32)
    both(sym, {"x": x}, grad=("x",), rtol=1e-4, atol=1e-5)
