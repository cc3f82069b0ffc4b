"""The default schedule (``compiler.schedule``): tensor expressions to loop-nest kernels.

Checks the structure of the kernels it builds (task loop, vector loop, where reductions are
placed, chunking of long rows) and runs them through the renderer and the JIT on numpy
buffers: reductions of every kind over one, several and zero-extent axes, a softmax-like
compute, 0-d / size-1 / zero-size outputs and strided, transposed, offset views.
"""
from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mxc.base import CompileError
from mxc.codegen.jit import compile_ir
from mxc.codegen.llvm_render import render_module
from mxc.compiler import schedule as S
from mxc.compiler.schedule import UNROLL_MAX
from mxc.compiler.lower import LowerCtx, SlotTable
from mxc.ir import kernel as K
from mxc.ir.dtypes import as_dtype
from mxc.ir.graph import Node


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def buf(name: str, dtype: str, n: int) -> K.Buffer:
    return K.Buffer(name, as_dtype(dtype), n)


def ref(b: K.Buffer, shape, strides=None, offset=0) -> K.TensorRef:
    return K.TensorRef(b, tuple(shape), strides, offset)


def kernel(out: K.TensorRef, fn, buffers: list) -> K.Kernel:
    return S.schedule(K.compute(out, fn), "__K__", list(buffers))


def compile_kernels(kernels: list) -> list:
    text, names = render_module(kernels)
    cm = compile_ir(text, list(dict.fromkeys(names)))
    return [cm.functions[n] for n in names]


def call(kern: K.Kernel, fn, arrays: list, ranges=None) -> None:
    for a in arrays:
        assert a.flags.c_contiguous
    keep = [a if a.size else np.zeros(1, a.dtype) for a in arrays]
    args = (ctypes.c_void_p * len(keep))(*[a.ctypes.data for a in keep])
    for b, e in ranges if ranges is not None else [(0, kern.n_tasks)]:
        fn(b, e, args, None)


def run(out: K.TensorRef, fn, buffers: list, arrays: list) -> K.Kernel:
    k = kernel(out, fn, buffers)
    (f,) = compile_kernels([k])
    call(k, f, arrays)
    return k


def loops(stmts: list) -> list:
    """Every For in ``stmts``, outermost first."""
    out = []
    for s in stmts:
        if isinstance(s, K.For):
            out.append(s)
            out.extend(loops(s.body))
    return out


def reduce_loops(k: K.Kernel) -> list:
    return [lp for lp in loops(k.body) if lp.var.name.startswith("k")]


def inner_loop(k: K.Kernel) -> K.For:
    """The output's vector loop: the last top-level statement of the task body."""
    last = k.body[-1]
    assert isinstance(last, K.For) and last.kind == "vector"
    assert isinstance(last.body[-1], K.Store)
    return last


# ---------------------------------------------------------------------------------------------
# loop structure
# ---------------------------------------------------------------------------------------------
def test_leading_dims_fuse_into_tasks_and_last_dim_is_the_vector_loop():
    bx, bo = buf("x", "float32", 24), buf("o", "float32", 24)
    X = ref(bx, (2, 3, 4))
    k = kernel(ref(bo, (2, 3, 4)), lambda i, j, l: X[i, j, l] * 2.0, [bx, bo])
    assert k.n_tasks == 6 and k.name == "__K__" and k.buffers == [bx, bo]
    lp = inner_loop(k)
    assert lp.extent == K.const(4, "int64")
    assert len(loops(k.body)) == 1
    assert k.cost >= 24
    x = np.arange(24, dtype=np.float32)
    o = np.zeros(24, np.float32)
    (f,) = compile_kernels([k])
    call(k, f, [x, o])
    np.testing.assert_array_equal(o, x * 2)


def test_row_reduction_is_hoisted_out_of_the_inner_loop_and_computed_once():
    """A softmax-like compute: the row max is used three times and computed once per row,
    at task level, before the vector loop; the row sum uses the max in its body."""
    rows, n = 5, 7
    bx, bo = buf("x", "float64", rows * n), buf("o", "float64", rows * n)
    X = ref(bx, (rows, n))
    r1, r2 = K.reduce_axis(n), K.reduce_axis(n)

    def body(i, j):
        m = K.reduce("max", X[i, r1.var], [r1])
        s = K.reduce("sum", (X[i, r2.var] - m) * (X[i, r2.var] - m) + 1.0, [r2])
        return (X[i, j] - m) * (X[i, j] - m) / s + m

    k = kernel(ref(bo, (rows, n)), body, [bx, bo])
    assert k.n_tasks == rows
    red = reduce_loops(k)
    assert [lp.var for lp in red] == [r1.var, r2.var], "max once, sum once"
    inner = inner_loop(k)
    assert not loops(inner.body), "no reduction inside the output's vector loop"
    # both reductions sit at task level, the max before the sum that reads it
    top = [s for s in k.body if isinstance(s, K.For)]
    assert top[0].var == r1.var and top[1].var == r2.var and top[2] is inner
    assert not loops(top[1].body), "the max is not recomputed inside the sum's loop"
    text = K.dump(k.body)
    assert text.count("max[") == 0 and text.count(" max ") == 1

    rng = np.random.default_rng(0)
    x = rng.standard_normal(rows * n)
    o = np.zeros_like(x)
    (f,) = compile_kernels([k])
    call(k, f, [x, o])
    A = x.reshape(rows, n)
    m = A.max(axis=1, keepdims=True)
    want = (A - m) ** 2 / (((A - m) ** 2 + 1).sum(axis=1, keepdims=True)) + m
    np.testing.assert_allclose(o.reshape(rows, n), want, rtol=1e-13)


def test_softmax_with_exp():
    pytest.importorskip("mxc.codegen.mathlib")
    rows, n = 4, 33
    bx, bo = buf("x", "float32", rows * n), buf("o", "float32", rows * n)
    X = ref(bx, (rows, n))
    r1, r2 = K.reduce_axis(n), K.reduce_axis(n)

    def body(i, j):
        m = K.reduce("max", X[i, r1.var], [r1])
        s = K.reduce("sum", K.call("exp", X[i, r2.var] - m), [r2])
        return K.call("exp", X[i, j] - m) / s

    k = kernel(ref(bo, (rows, n)), body, [bx, bo])
    assert len(reduce_loops(k)) == 2 and not loops(inner_loop(k).body)
    x = np.random.default_rng(1).standard_normal(rows * n).astype(np.float32) * 5
    o = np.zeros_like(x)
    (f,) = compile_kernels([k])
    call(k, f, [x, o])
    A = x.reshape(rows, n).astype(np.float64)
    e = np.exp(A - A.max(1, keepdims=True))
    np.testing.assert_allclose(o.reshape(rows, n), e / e.sum(1, keepdims=True), rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("c", [5, UNROLL_MAX + 3])
def test_reduction_depending_on_the_inner_index_stays_in_the_inner_loop(c):
    """out[i, j] = x[i, j] - sum_k y[j, k]: the sum depends on j, so it is computed inside
    the vector loop (once per element), not hoisted to task level: as a loop there, or, when
    it has at most UNROLL_MAX terms, unrolled into the element's expression."""
    a, b = 3, 4
    bx, by, bo = buf("x", "float64", a * b), buf("y", "float64", b * c), \
        buf("o", "float64", a * b)
    X, Y = ref(bx, (a, b)), ref(by, (b, c))
    r = K.reduce_axis(c)
    k = kernel(ref(bo, (a, b)), lambda i, j: X[i, j] - K.reduce("sum", Y[j, r.var], [r]),
               [bx, by, bo])
    inner = inner_loop(k)
    assert [lp.var for lp in loops(inner.body)] == ([] if c <= UNROLL_MAX else [r.var])
    x, y = np.arange(a * b, dtype=np.float64), np.arange(b * c, dtype=np.float64) ** 2
    o = np.zeros(a * b)
    (f,) = compile_kernels([k])
    call(k, f, [x, y, o])
    np.testing.assert_array_equal(o.reshape(a, b),
                                  x.reshape(a, b) - y.reshape(b, c).sum(1)[None, :])


def test_nested_reduction_over_an_outer_reduction_axis():
    """out[i] = sum_k max_l x[i, k, l]: the inner max depends on k, so it lives in k's loop."""
    a, b, c = 3, 4, 6
    bx, bo = buf("x", "float64", a * b * c), buf("o", "float64", a)
    X = ref(bx, (a, b, c))
    rk, rl = K.reduce_axis(b), K.reduce_axis(c)
    k = kernel(ref(bo, (a,)), lambda i: K.reduce(
        "sum", K.reduce("max", X[i, rk.var, rl.var], [rl]), [rk]), [bx, bo])
    x = np.random.default_rng(2).standard_normal(a * b * c)
    o = np.zeros(a)
    (f,) = compile_kernels([k])
    call(k, f, [x, o])
    np.testing.assert_allclose(o, x.reshape(a, b, c).max(2).sum(1), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------
NP_RED = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min, "argmax": None,
          "argmin": None}


def _np_reduce(op: str, a: np.ndarray, axes: tuple) -> np.ndarray:
    keep = [d for d in range(a.ndim) if d not in axes]
    moved = np.transpose(a, keep + list(axes)).reshape([a.shape[d] for d in keep] + [-1])
    if op in ("argmax", "argmin"):
        return getattr(np, op)(moved, axis=-1)
    return NP_RED[op](moved, axis=-1)


@pytest.mark.parametrize("axes,shape", [((2,), (3, 4, 5)), ((0,), (3, 4, 5)), ((1,), (3, 4, 5)),
                                        ((0, 2), (3, 4, 5)), ((1, 2), (3, 4, 5)),
                                        ((0, 1, 2), (2, 2, 3))])   # 0-d output
@pytest.mark.parametrize("dt", ["float64", "int32", "uint8"])
def test_reductions_over_one_or_several_axes(dt, axes, shape):
    rng = np.random.default_rng(3)
    if dt == "float64":
        a = rng.uniform(0.5, 1.5, shape)
    else:
        a = rng.integers(0, 4, shape).astype(dt)
    a[1, 1, 2] = a.max() + 1 if dt != "uint8" else 200   # a unique extreme somewhere
    a[0, 0, 0] = a.min() if dt == "float64" else 0
    flat = a.ravel()
    bx = buf("x", dt, a.size)
    X = ref(bx, shape)
    keep = [d for d in range(3) if d not in axes]
    assert len(NP_RED) == 6
    out_shape = tuple(shape[d] for d in keep)
    n_out = max(math.prod(out_shape), 1)
    kerns, outs = [], []
    for op in NP_RED:
        odt = "int64" if op.startswith("arg") else dt
        bo = buf("o", odt, n_out)
        raxes = [K.reduce_axis(shape[d]) for d in axes]

        def body(*idx, op=op, raxes=raxes):
            full = list(range(3))
            it = iter(idx)
            for d in range(3):
                full[d] = raxes[axes.index(d)].var if d in axes else next(it)
            return K.reduce(op, X[tuple(full)], raxes)

        kerns.append(kernel(ref(bo, out_shape), body, [bx, bo]))
        outs.append(np.zeros(n_out, as_dtype(odt).np))
    for op, k, f, o in zip(NP_RED, kerns, compile_kernels(kerns), outs):
        call(k, f, [flat, o])
        want = np.asarray(_np_reduce(op, a, axes)).astype(o.dtype).reshape(-1)
        if dt == "float64" and op in ("sum", "prod"):
            np.testing.assert_allclose(o, want, rtol=1e-12, err_msg=op)
        else:
            with np.errstate(over="ignore"):
                np.testing.assert_array_equal(o, want, err_msg=f"{op} over {axes}")


def test_integer_sum_and_prod_wrap_in_the_body_dtype():
    a = np.full((2, 40), 100, np.int8)
    bx, bs, bp = buf("x", "int8", 80), buf("s", "int8", 2), buf("p", "int8", 2)
    X = ref(bx, (2, 40))
    r = K.reduce_axis(40)
    ks = kernel(ref(bs, (2,)), lambda i: K.reduce("sum", X[i, r.var], [r]), [bx, bs])
    kp = kernel(ref(bp, (2,)), lambda i: K.reduce("prod", X[i, r.var], [r]), [bx, bp])
    fs, fp = compile_kernels([ks, kp])
    s, p = np.zeros(2, np.int8), np.zeros(2, np.int8)
    call(ks, fs, [a.ravel(), s])
    call(kp, fp, [a.ravel(), p])
    np.testing.assert_array_equal(s, a.sum(1, dtype=np.int8))
    np.testing.assert_array_equal(p, a.prod(1, dtype=np.int8))


def test_reduce_accumulates_in_the_requested_dtype():
    bb, b8 = buf("b", "bool", 8), buf("i", "int8", 8)
    o1, o2 = buf("o1", "int64", 2), buf("o2", "int32", 2)
    r1, r2 = K.reduce_axis(4), K.reduce_axis(4)
    k1 = kernel(ref(o1, (2,)), lambda i: K.reduce("sum", ref(bb, (2, 4))[i, r1.var], [r1],
                                                  dtype="int64"), [bb, o1])
    k2 = kernel(ref(o2, (2,)), lambda i: K.reduce("sum", ref(b8, (2, 4))[i, r2.var], [r2],
                                                  dtype="int32"), [b8, o2])
    f1, f2 = compile_kernels([k1, k2])
    b = np.array([1, 1, 1, 0, 1, 1, 0, 0], bool)
    i8 = np.array([100, 100, 100, 0, -100, -100, -100, 5], np.int8)
    s1, s2 = np.zeros(2, np.int64), np.zeros(2, np.int32)
    call(k1, f1, [b, s1])
    call(k2, f2, [i8, s2])
    assert s1.tolist() == [3, 2]
    assert s2.tolist() == [300, -295]


def test_argmax_argmin_first_occurrence_and_flat_index_over_several_axes():
    a = np.array([[[1, 5], [5, 0]],
                  [[-np.inf, -np.inf], [-np.inf, -np.inf]],
                  [[2, 2], [2, 2]],
                  [[0, -3], [7, -3]]], np.float32)
    bx = buf("x", "float32", a.size)
    X = ref(bx, a.shape)
    res = {}
    kerns = []
    for op in ("argmax", "argmin"):
        rj, rk = K.reduce_axis(2), K.reduce_axis(2)
        bo = buf("o", "int32", 4)
        kerns.append(kernel(ref(bo, (4,)), lambda i, op=op, rj=rj, rk=rk: K.reduce(
            op, X[i, rj.var, rk.var], [rj, rk], dtype="int32"), [bx, bo]))
    for op, k, f in zip(("argmax", "argmin"), kerns, compile_kernels(kerns)):
        o = np.zeros(4, np.int32)
        call(k, f, [a.ravel(), o])
        res[op] = o.tolist()
    assert res["argmax"] == [1, 0, 0, 2]   # first of the tied 5s; all -inf -> 0
    assert res["argmin"] == [3, 0, 0, 1]
    np.testing.assert_array_equal(res["argmax"], a.reshape(4, -1).argmax(1))
    np.testing.assert_array_equal(res["argmin"], a.reshape(4, -1).argmin(1))


@pytest.mark.parametrize("dt", ["float32", "int32", "uint8", "bool"])
def test_zero_extent_reduction_axes_give_the_identity(dt):
    rows = 3
    bx = buf("x", dt, 0)
    X = ref(bx, (rows, 0, 4))
    d = as_dtype(dt)
    if d.kind == "f":
        lo, hi = -np.inf, np.inf
    elif d.kind == "b":
        lo, hi = False, True
    else:
        lo, hi = np.iinfo(d.np).min, np.iinfo(d.np).max
    ops = {"sum": 0, "prod": 1, "max": lo, "min": hi, "argmax": 0, "argmin": 0}
    if dt == "bool":
        ops = {"max": lo, "min": hi, "argmax": 0, "argmin": 0}
    kerns, outs = [], []
    for op in ops:
        odt = "int64" if op.startswith("arg") else dt
        bo = buf("o", odt, rows)
        r1, r2 = K.reduce_axis(0), K.reduce_axis(4)
        kerns.append(kernel(ref(bo, (rows,)), lambda i, op=op, r1=r1, r2=r2: K.reduce(
            op, X[i, r1.var, r2.var], [r1, r2]), [bx, bo]))
        outs.append(np.full(rows, 7, as_dtype(odt).np))
    for (op, want), k, f, o in zip(ops.items(), kerns, compile_kernels(kerns), outs):
        call(k, f, [np.zeros(0, d.np), o])
        np.testing.assert_array_equal(o, np.full(rows, want, o.dtype), err_msg=op)


def test_sum_over_zero_extent_axis_with_nonzero_output():
    """np.sum(x, axis=1) of a (3, 0) array is zeros(3): every output element is written."""
    bx, bo = buf("x", "float64", 0), buf("o", "float64", 3)
    r = K.reduce_axis(0)
    o = np.full(3, 9.0)
    k = run(ref(bo, (3,)), lambda i: K.reduce("sum", ref(bx, (3, 0))[i, r.var], [r]),
            [bx, bo], [np.zeros(0), o])
    assert k.n_tasks == 1
    np.testing.assert_array_equal(o, np.zeros(3))


def test_max_min_reductions_propagate_nan():
    a = np.array([[1, np.nan, 3], [np.nan, 1, 2], [1, 2, np.nan], [1, 2, 3]], np.float32)
    bx = buf("x", "float32", 12)
    X = ref(bx, (4, 3))
    kerns = []
    for op in ("max", "min"):
        r = K.reduce_axis(3)
        bo = buf("o", "float32", 4)
        kerns.append(kernel(ref(bo, (4,)), lambda i, op=op, r=r: K.reduce(op, X[i, r.var], [r]),
                            [bx, bo]))
    got = {}
    for op, k, f in zip(("max", "min"), kerns, compile_kernels(kerns)):
        o = np.zeros(4, np.float32)
        call(k, f, [a.ravel(), o])
        got[op] = o
    np.testing.assert_array_equal(got["max"], np.max(a, axis=1))
    np.testing.assert_array_equal(got["min"], np.min(a, axis=1))


_INVARIANT_MAX = textwrap.dedent("""
    import sys
    from mxc.codegen.jit import compile_ir
    from mxc.codegen.llvm_render import render_module
    from mxc.compiler.schedule import schedule
    from mxc.ir import kernel as K
    from mxc.ir.dtypes import as_dtype
    x = K.Buffer("x", as_dtype("float32"), 64)
    o = K.Buffer("o", as_dtype("float32"), 1)
    r1, r2 = K.reduce_axis(8), K.reduce_axis(8)
    op = K.compute(K.TensorRef(o, ()), lambda: K.reduce(
        sys.argv[1], K.TensorRef(x, (8, 8))[r1.var, r2.var], [r1, r2]))
    text, names = render_module([schedule(op, "__K__", [x, o])])
    compile_ir(text, names)
    print("compiled")
""")


def test_task_invariant_float_max_reduction_compiles(tmp_path):
    op = "max"   # min, argmax and argmin behave the same
    env = dict(os.environ, MXC_CACHE_DIR=str(tmp_path))
    try:
        p = subprocess.run([sys.executable, "-c", _INVARIANT_MAX, op], env=env,
                           capture_output=True, text=True, timeout=6, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"compiling a 0-d {op} over an (8, 8) float32 tensor took over 6 s")
    assert p.returncode == 0 and "compiled" in p.stdout, p.stderr[-2000:]


def test_sum_reduction_of_nan_and_inf():
    a = np.array([[1, np.nan, 3], [np.inf, 1, 2], [np.inf, -np.inf, 0]], np.float64)
    bx, bo = buf("x", "float64", 9), buf("o", "float64", 3)
    r = K.reduce_axis(3)
    o = np.zeros(3)
    run(ref(bo, (3,)), lambda i: K.reduce("sum", ref(bx, (3, 3))[i, r.var], [r]), [bx, bo],
        [a.ravel(), o])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(o, a.sum(1))


# ---------------------------------------------------------------------------------------------
# 0-d, size-1 and zero-size outputs
# ---------------------------------------------------------------------------------------------
def test_zero_d_outputs():
    # a constant, a 0-d input at an offset, and a full reduction, each to a 0-d output
    x = np.arange(24, dtype=np.float64)
    bx = buf("x", "float64", 24)
    b1, b2, b3 = buf("a", "float64", 1), buf("b", "float64", 1), buf("c", "float64", 1)
    rs = [K.reduce_axis(n) for n in (2, 3, 4)]
    X3 = ref(bx, (2, 3, 4))
    k1 = kernel(ref(b1, ()), lambda: K.const(2.5, "float64"), [bx, b1])
    k2 = kernel(ref(b2, ()), lambda: ref(bx, (), (), 17)[()] * 2.0, [bx, b2])
    k3 = kernel(ref(b3, ()), lambda: K.reduce("sum", X3[rs[0].var, rs[1].var, rs[2].var], rs),
                [bx, b3])
    assert k1.n_tasks == k2.n_tasks == k3.n_tasks == 1
    outs = [np.zeros(1) for _ in range(3)]
    for k, f, o in zip((k1, k2, k3), compile_kernels([k1, k2, k3]), outs):
        call(k, f, [x, o])
    assert [o[0] for o in outs] == [2.5, 34.0, float(x.sum())]


def test_zero_d_output_at_an_offset():
    bo = buf("o", "int32", 5)
    o = np.zeros(5, np.int32)
    k = run(ref(bo, (), (), 3), lambda: K.const(-4, "int32"), [bo], [o])
    assert k.n_tasks == 1
    assert o.tolist() == [0, 0, 0, -4, 0]


@pytest.mark.parametrize("shape", [(3, 1, 4), (1, 5), (4, 1), (1,), (1, 1), (1, 1, 1, 6)])
def test_outputs_with_size_one_dimensions(shape):
    n = math.prod(shape)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(shape[-1]).astype(np.float32)
    bx, by, bo = buf("x", "float32", n), buf("y", "float32", shape[-1]), buf("o", "float32", n)
    X = ref(bx, shape)
    Yb = ref(by, (1,) * (len(shape) - 1) + (shape[-1],))   # broadcast over leading dims
    o = np.zeros(n, np.float32)
    zero = (0,) * (len(shape) - 1)
    k = run(ref(bo, shape), lambda *i: X[i] * Yb[zero + (i[-1],)] + 1.0, [bx, by, bo],
            [x, y, o])
    assert k.n_tasks == math.prod(shape[:-1])
    np.testing.assert_allclose(o.reshape(shape), x.reshape(shape) * y + 1, rtol=1e-6)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 5), (3, 0, 2)])
def test_zero_size_outputs_have_no_tasks_and_write_nothing(shape):
    bx, bo = buf("x", "float32", 4), buf("o", "float32", 0)
    r = K.reduce_axis(4)
    k = kernel(ref(bo, shape), lambda *i: K.reduce("sum", ref(bx, (4,))[r.var], [r]),
               [bx, bo])
    assert k.n_tasks == 0 and k.body == []
    (f,) = compile_kernels([k])
    guard = np.full(4, 3.0, np.float32)   # the output pointer: must stay untouched
    call(k, f, [np.ones(4, np.float32), guard], ranges=[(0, 0)])
    assert guard.tolist() == [3.0] * 4


# ---------------------------------------------------------------------------------------------
# long rows are chunked into tasks
# ---------------------------------------------------------------------------------------------
def _chunk_case(rows: int, n: int, with_reduction: bool = False):
    bx, bo = buf("x", "float32", rows * n), buf("o", "float32", rows * n)
    X = ref(bx, (rows, n))
    r = K.reduce_axis(n)
    if with_reduction:
        return kernel(ref(bo, (rows, n)),
                      lambda i, j: X[i, j] * 2.0 - K.reduce("max", X[i, r.var], [r]), [bx, bo])
    return kernel(ref(bo, (rows, n)),
                  lambda i, j: X[i, j] * 2.0 + K.cast("float32", j * 3 + i), [bx, bo])


def _chunk_check(k, rows: int, n: int, order=1, with_reduction: bool = False):
    x = np.random.default_rng(rows + n).standard_normal(rows * n).astype(np.float32)
    o = np.full(rows * n, np.nan, np.float32)
    (f,) = compile_kernels([k])
    ranges = [(t, t + 1) for t in range(k.n_tasks)][::order]
    call(k, f, [x, o], ranges)
    A = x.reshape(rows, n)
    if with_reduction:
        want = A * 2 - A.max(1, keepdims=True)
    else:
        want = A * 2 + (np.arange(n)[None, :] * 3 + np.arange(rows)[:, None]).astype(np.float32)
    np.testing.assert_array_equal(o.reshape(rows, n), want)


def test_long_rows_are_chunked_into_tasks():
    n = 2 * S.CHUNK + 5
    k = _chunk_case(2, n)
    assert k.n_tasks == 2 * 3
    lp = inner_loop(k)
    assert not isinstance(lp.extent, K.Const), "the last chunk is shorter"
    _chunk_check(k, 2, n, order=-1)   # tasks one by one, backwards


def test_rows_with_reductions_are_not_chunked():
    """Chunks would each recompute the row's reduction: such rows stay one task each."""
    n = 2 * S.CHUNK + 5
    k = _chunk_case(2, n, with_reduction=True)
    assert k.n_tasks == 2
    _chunk_check(k, 2, n, order=-1, with_reduction=True)


def test_long_rows_are_not_chunked_when_there_are_enough_rows():
    n = 2 * S.CHUNK + 5
    k = _chunk_case(S.MIN_TASKS, n)
    assert k.n_tasks == S.MIN_TASKS
    k = _chunk_case(1, 2 * S.CHUNK)   # exactly 2*CHUNK: not "very long"
    assert k.n_tasks == 1


@pytest.mark.parametrize("extra", [1, 8, 0])
def test_chunk_boundaries_with_a_small_chunk(monkeypatch, extra):
    monkeypatch.setattr(S, "CHUNK", 16)
    n = 3 * 16 + extra
    k = _chunk_case(3, n)
    assert k.n_tasks == 3 * -(-n // 16)
    _chunk_check(k, 3, n)
    _chunk_check(k, 3, n, order=-1)


# ---------------------------------------------------------------------------------------------
# strided, transposed and offset views
# ---------------------------------------------------------------------------------------------
def test_strided_transposed_views_with_offsets():
    base = np.arange(100, dtype=np.float32)
    bx, bo = buf("x", "float32", 100), buf("o", "float32", 60)
    Xv = ref(bx, (3, 4), (2, 10), 5)                 # x[5 + 2i + 10j]
    Ov = ref(bo, (4, 3), (5, 1), 3).transpose((1, 0))  # o[3 + i + 5j]: strided last dim
    assert Ov.shape == (3, 4) and Ov.strides == (1, 5) and Ov.offset == 3
    out = np.full(60, -1.0, np.float32)
    run(Ov, lambda i, j: Xv[i, j] + 1.0, [bx, bo], [base, out])
    xv = np.lib.stride_tricks.as_strided(base[5:], (3, 4), (2 * 4, 10 * 4))
    ov = np.lib.stride_tricks.as_strided(out[3:], (3, 4), (1 * 4, 5 * 4))
    np.testing.assert_array_equal(ov, xv + 1)
    written = {3 + i + 5 * j for i in range(3) for j in range(4)}
    untouched = [v for p, v in enumerate(out) if p not in written]
    assert untouched == [-1.0] * (60 - 12), "wrote outside the view"


def test_transposed_input_with_reduction_over_its_strided_axis():
    # x is (5, 6) row-major; reduce the transpose (6, 5) over its last axis = x's columns
    x = np.random.default_rng(6).standard_normal(30 + 7)
    bx, bo = buf("x", "float64", 37), buf("o", "float64", 6)
    XT = ref(bx, (5, 6), None, 7).transpose((1, 0))
    r = K.reduce_axis(5)
    o = np.zeros(6)
    run(ref(bo, (6,)), lambda j: K.reduce("sum", XT[j, r.var] * XT[j, r.var], [r]), [bx, bo],
        [x, o])
    np.testing.assert_allclose(o, (x[7:].reshape(5, 6) ** 2).sum(0), rtol=1e-13)


def test_broadcast_view_with_zero_strides():
    x = np.array([1.0, 2.0, 3.0])
    bx, bo = buf("x", "float64", 3), buf("o", "float64", 12)
    Xb = ref(bx, (4, 3), (0, 1))
    o = np.zeros(12)
    run(ref(bo, (4, 3)), lambda i, j: Xb[i, j] * K.cast("float64", i), [bx, bo], [x, o])
    np.testing.assert_array_equal(o.reshape(4, 3), np.arange(4)[:, None] * x[None, :])


def test_reshape_and_transpose_of_tensor_refs():
    b = buf("x", "float32", 24)
    r = ref(b, (2, 3, 4))
    assert r.strides == (12, 4, 1)
    t = r.transpose((2, 0, 1))
    assert t.shape == (4, 2, 3) and t.strides == (1, 12, 4)
    assert r.reshape((6, 4)).strides == (4, 1)
    with pytest.raises(ValueError):
        t.reshape((24,))            # not contiguous
    with pytest.raises(ValueError):
        r.reshape((5, 5))
    with pytest.raises(IndexError):
        r[0, 1]


# ---------------------------------------------------------------------------------------------
# through the lowering context
# ---------------------------------------------------------------------------------------------
def test_lower_ctx_compute_maps_buffers_to_slots():
    slots = SlotTable()
    s_in = slots.new(4 * 12, "input", "x")
    s_out = slots.new(4 * 12, "temp", "y")
    bi, bo = buf("in0", "float32", 12), buf("out0", "float32", 12)
    lowered: list = []
    node = Node("_copy", "copy0")
    ctx = LowerCtx(node, {}, [ref(bi, (3, 4))], [ref(bo, (4, 3))], False, slots,
                   {bi: s_in, bo: s_out}, lowered)
    ctx.copy(ctx.outputs[0], ctx.inputs[0].transpose((1, 0)))
    t = ctx.temp((5,), "int32")
    assert slots.nbytes[-1] == 20 and t.buf in ctx._buf_slot
    (lk,) = lowered
    assert lk.node == "copy0" and lk.slots == [s_in, s_out]
    (f,) = compile_kernels([lk.kernel])
    x = np.arange(12, dtype=np.float32)
    o = np.zeros(12, np.float32)
    call(lk.kernel, f, [x, o])
    np.testing.assert_array_equal(o.reshape(4, 3), x.reshape(3, 4).T)
    stranger = ref(buf("elsewhere", "float32", 12), (4, 3))
    with pytest.raises(CompileError, match="copy0.*not an input, output or temp"):
        ctx.compute(ctx.outputs[0], lambda i, j: stranger[i, j])
    with pytest.raises(CompileError):
        ctx.copy(ctx.outputs[0], ctx.inputs[0])   # shapes (4, 3) vs (3, 4)
