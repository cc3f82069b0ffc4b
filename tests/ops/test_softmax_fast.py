"""The one-exp softmax kernel (``reduce._softmax_one_exp``): softmax/softmin of contiguous rows
whose input no fusable op computes are one hand-scheduled kernel that evaluates exp once per
element (the compute form evaluates it twice). Which path is taken, results against the numpy
reference and against the compute form (blocks of rows with a tail, tiny and LONG_ROW rows,
temperature, float64, NaN/inf rows), and gradients through it."""
from __future__ import annotations

import numpy as np
import pytest

import mxc as mx
from mxc.compiler.build import compile_graph
from mxc.ir import kernel as K
from mxc.ir.graph import Entry, Graph, make_node, variable
from mxc.ir.ops import reduce as R
from mxc.testing import check_forward, check_grad, run_op

RNG = np.random.default_rng(11)


def _x(shape, dtype=np.float32, scale=3.0):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def _exprs(stmts):
    for s in stmts:
        if isinstance(s, K.For):
            yield from _exprs(s.body)
        elif isinstance(s, K.If):
            yield from _exprs(s.then)
            yield from _exprs(s.otherwise)
        elif isinstance(s, (K.Store, K.Assign)):
            yield s.value


def _exp_calls(kern) -> int:
    """How many exp calls a kernel's IR holds (a Reduce body counts once)."""
    n = 0

    def go(e):
        nonlocal n
        if isinstance(e, K.Call) and e.func == "exp":
            n += 1
        for c in K.children(e):
            go(c)

    for e in _exprs(kern.body):
        go(e)
    return n


def _compile(sym, shapes: dict):
    return compile_graph(sym._graph(), shapes, {k: "float32" for k in shapes}, fusion=True)


def _op_kernels(op, shape, attrs):
    node = make_node(op, [Entry(variable("x"), 0)], attrs, name="op")
    cg = compile_graph(Graph([Entry(node, 0)]), {"x": shape}, {"x": "float32"})
    return [k.kernel for k in cg.kernels if k.node == "op"]


@pytest.mark.parametrize("op", ["softmax", "softmin"])
def test_one_exp_kernel_is_used(op):
    (k,) = _op_kernels(op, (300, 40), {})
    assert _exp_calls(k) == 1 and "sm_nxt" in K.dump(k.body)
    # log_softmax already evaluates exp once per element (in the row sum): compute form
    (k,) = _op_kernels("log_softmax", (300, 40), {})
    assert "sm_nxt" not in K.dump(k.body)
    # a strided row (axis not innermost) keeps the compute form
    (k,) = _op_kernels(op, (30, 40, 5), {"axis": 1})
    assert "sm_nxt" not in K.dump(k.body)


def test_one_exp_kernel_choice_follows_the_producer():
    x = mx.sym.Variable("x")
    # an elementwise prologue is inlined into the compute form: one kernel, no extra pass
    cg = _compile(mx.sym.softmax(x * 2 + 1, axis=-1), {"x": (64, 50)})
    assert len(cg.kernels) == 1 and "sm_nxt" not in K.dump(cg.kernels[0].kernel.body)
    # nothing to inline (a GEMM, or a view of a variable): the one-exp kernel
    fc = mx.sym.FullyConnected(x, num_hidden=50, name="fc")
    cg = _compile(mx.sym.softmax(fc, name="sm"), {"x": (64, 20)})
    (k,) = [k.kernel for k in cg.kernels if k.node == "sm"]
    assert "sm_nxt" in K.dump(k.body)
    cg = _compile(mx.sym.softmax(mx.sym.reshape(x, shape=(-1, 10)), name="sm"),
                  {"x": (64, 50)})
    (k,) = [k.kernel for k in cg.kernels if k.node == "sm"]
    assert "sm_nxt" in K.dump(k.body)


# rows: fewer than one block per task, blocks with a tail, exact blocks; tiny and long rows
SHAPES = [(1, 1), (3, 1), (1, 17), (131, 33), (1000, 7), (1100, 300), (2048, 64),
          (8, R.LONG_ROW), (9, R.LONG_ROW + 1)]


@pytest.mark.parametrize("op", ["softmax", "softmin"])
def test_one_exp_forward(op):
    for shape in SHAPES:
        x = _x(shape)
        check_forward(op, [x], {}, rtol=1e-5, atol=1e-7)
    x = _x((700, 129))
    for attrs in ({"temperature": 2.0}, {"temperature": "0.5"}, {"axis": 1},
                  {"temperature": 1.0}):
        check_forward(op, [x], attrs, rtol=1e-5, atol=1e-7)
    check_forward(op, [_x((257, 100), np.float64)], {"temperature": 3.0}, rtol=1e-12,
                  atol=1e-14)
    check_forward("SoftmaxActivation", [_x((130, 3, 4))], {"mode": "instance"}, rtol=1e-5,
                  atol=1e-7)


@pytest.mark.parametrize("op", ["softmax", "softmin"])
def test_one_exp_matches_compute_form(op, monkeypatch):
    """Same numbers as the compute form, NaN/inf rows included (a NaN anywhere in a row makes
    the whole row NaN either way; a +inf row divides inf by inf...)."""
    x = _x((200, 37))
    x[3, 5] = np.nan
    x[7, 0] = np.inf
    x[11, :] = -np.inf
    x[13, 2] = -np.inf
    x[17, 36] = np.nan
    x[19, [1, 4]] = np.inf
    x[23, :] = 0.0
    fast = run_op(op, [x], {"temperature": 1.5})[0][0]
    monkeypatch.setattr(R, "_one_exp_applies", lambda *a: False)
    ref = run_op(op, [x], {"temperature": 1.5})[0][0]
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref))
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=0)
    assert np.isnan(fast[3]).all() and np.isnan(fast[17]).all()


@pytest.mark.parametrize("op", ["softmax", "softmin"])
def test_one_exp_grad(op):
    check_grad(op, [_x((130, 3), np.float64, 1.0)], {}, rtol=1e-5, atol=1e-6)
    check_grad(op, [_x((5, 7), np.float64, 1.0)], {"temperature": 0.7}, rtol=1e-5, atol=1e-6)
