"""Kernel IR -> LLVM IR text -> machine code, checked against numpy on real buffers.

Hand-written computes go through ``compiler.schedule`` (loop nest), ``codegen.llvm_render``
(``render_module``) and ``codegen.jit`` (``compile_ir``) and are called with ctypes on numpy
arrays: arithmetic of every dtype, casts between every pair of dtypes, C integer division,
NaN comparisons, select, the on-disk object cache (also from a fresh process) and the rule
that generated code never calls libm/libc (undefined symbols of the emitted object).
"""
from __future__ import annotations

import ctypes
import importlib
import itertools
import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from mxc.codegen import jit
from mxc.codegen.llvm_render import render_module
from mxc.compiler.schedule import schedule
from mxc.ir import kernel as K
from mxc.ir.dtypes import as_dtype

ALL_DTYPES = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64",
              "uint8", "uint16", "uint32", "uint64", "bool"]
HALF = {"float16", "bfloat16"}


def _mathlib():
    """The mathlib module when it is complete enough to link f16/bf16 conversions and math
    functions, else None (it is written concurrently)."""
    try:
        m = importlib.import_module("mxc.codegen.mathlib")
    except ImportError:
        return None
    if not all(hasattr(m, a) for a in ("math_ir", "conversion_ir", "math_function_name")):
        return None
    return m


def need_mathlib():
    m = _mathlib()
    if m is None:
        pytest.skip("mxc.codegen.mathlib (math_ir/conversion_ir) is not available yet")
    return m


def needs(dtypes) -> None:
    if HALF & set(dtypes):
        need_mathlib()


# ---------------------------------------------------------------------------------------------
# helpers: build, compile and call kernels
# ---------------------------------------------------------------------------------------------
def buf(name: str, dtype: str, n: int) -> K.Buffer:
    return K.Buffer(name, as_dtype(dtype), n)


def ref(b: K.Buffer, shape, strides=None, offset=0) -> K.TensorRef:
    return K.TensorRef(b, tuple(shape), strides, offset)


def kernel(out: K.TensorRef, fn, buffers: list) -> K.Kernel:
    """Schedule ``out[idx] = fn(*idx)``; ``buffers`` is the argument order."""
    return schedule(K.compute(out, fn), "__K__", list(buffers))


def compile_kernels(kernels: list) -> list:
    """One module for all ``kernels``; returns one ctypes function per kernel."""
    text, names = render_module(kernels)
    cm = jit.compile_ir(text, list(dict.fromkeys(names)))
    return [cm.functions[n] for n in names]


def np_storage(dtype: str) -> np.dtype:
    return as_dtype(dtype).np  # bfloat16 lives in uint16


def call(kern: K.Kernel, fn, arrays: list, ranges=None) -> None:
    arrays = [np.ascontiguousarray(a) if a.size else np.zeros(1, a.dtype) for a in arrays]
    args = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    for b, e in ranges if ranges is not None else [(0, kern.n_tasks)]:
        fn(b, e, args, None)


def run_unary_map(src: str, dst: str, fn, x: np.ndarray, fn_out=None) -> np.ndarray:
    n = x.size
    bx, bo = buf("x", src, n), buf("o", dst, n)
    k = kernel(ref(bo, (n,)), lambda i: fn(ref(bx, (n,))[i]), [bx, bo])
    (f,) = compile_kernels([k])
    out = np.zeros(n, np_storage(dst))
    call(k, f, [x, out])
    return out


# bfloat16 reference (numpy has no bfloat16): bits in uint16, round to nearest even
def bf16_from_f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)  # stays a (quiet) NaN
    return rounded


def bf16_to_f32(h: np.ndarray) -> np.ndarray:
    return (np.asarray(h, np.uint16).astype(np.uint32) << 16).view(np.float32)


def as_real(a: np.ndarray, dtype: str) -> np.ndarray:
    """Values of an output array as numpy sees them (bfloat16 decoded to float32)."""
    return bf16_to_f32(a) if dtype == "bfloat16" else a


# ---------------------------------------------------------------------------------------------
# elementwise arithmetic of every dtype
# ---------------------------------------------------------------------------------------------
def _int_samples(dt: str, n: int, rng) -> np.ndarray:
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)


@pytest.mark.parametrize("dt", ["int8", "int16", "int32", "int64", "uint8", "uint16",
                                "uint32", "uint64"])
def test_integer_arithmetic_wraps_like_numpy(dt):
    rng = np.random.default_rng(1)
    n = 67   # not a multiple of any vector width: exercises the vector loop's tail
    a, b = _int_samples(dt, n, rng), _int_samples(dt, n, rng)
    bits = np.iinfo(dt).bits
    sh = rng.integers(0, bits, n).astype(dt)  # shift counts must be < bit width
    ba, bb, bs = buf("a", dt, n), buf("b", dt, n), buf("s", dt, n)
    A, B, S = ref(ba, (n,)), ref(bb, (n,)), ref(bs, (n,))
    c3, c7 = K.const(3, dt), K.const(7, dt)
    cases = {
        "lin": (lambda i: A[i] * c3 + B[i] - c7,
                lambda: a * np.array(3, dt) + b - np.array(7, dt)),
        "neg": (lambda i: -A[i], lambda: (np.zeros(n, dt) - a)),
        "max": (lambda i: K.maximum(A[i], B[i]), lambda: np.maximum(a, b)),
        "min": (lambda i: K.minimum(A[i], B[i]), lambda: np.minimum(a, b)),
        "abs": (lambda i: K.abs_(A[i]), lambda: np.abs(a) if dt[0] == "i" else a),
        "and": (lambda i: A[i] & B[i], lambda: a & b),
        "or": (lambda i: A[i] | B[i], lambda: a | b),
        "xor": (lambda i: A[i] ^ B[i], lambda: a ^ b),
        "not": (lambda i: ~A[i], lambda: ~a),
        "shl": (lambda i: A[i] << S[i], lambda: np.left_shift(a, sh)),
        "shr": (lambda i: A[i] >> S[i], lambda: np.right_shift(a, sh)),  # arithmetic if signed
    }
    outs = {k: buf("o", dt, n) for k in cases}
    kerns = [kernel(ref(outs[k], (n,)), f, [ba, bb, bs, outs[k]]) for k, (f, _) in cases.items()]
    fns = compile_kernels(kerns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for (name, (_, want)), k, f in zip(cases.items(), kerns, fns):
            out = np.zeros(n, dt)
            call(k, f, [a, b, sh, out])
            np.testing.assert_array_equal(out, want().astype(dt), err_msg=f"{dt} {name}")


@pytest.mark.parametrize("dt", ["int8", "int64", "uint8", "uint32", "uint64", "bool"])
def test_integer_comparisons_respect_signedness(dt):
    rng = np.random.default_rng(5)
    n = 33
    if dt == "bool":
        a, b = rng.integers(0, 2, n).astype(bool), rng.integers(0, 2, n).astype(bool)
    else:
        a, b = _int_samples(dt, n, rng), _int_samples(dt, n, rng)
        a[:3] = [np.iinfo(dt).max, np.iinfo(dt).min, 0]
        b[:3] = [np.iinfo(dt).min, np.iinfo(dt).max, 0]
    ba, bb = buf("a", dt, n), buf("b", dt, n)
    A, B = ref(ba, (n,)), ref(bb, (n,))
    ops = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
           "eq": np.equal, "ne": np.not_equal}
    outs = {op: buf("o", "bool", n) for op in ops}
    kerns = [kernel(ref(outs[op], (n,)), lambda i, op=op: getattr(A[i], op)(B[i]),
                    [ba, bb, outs[op]]) for op in ops]
    for (op, npf), k, f in zip(ops.items(), kerns, compile_kernels(kerns)):
        out = np.zeros(n, bool)
        call(k, f, [a, b, out])
        np.testing.assert_array_equal(out, npf(a, b), err_msg=f"{dt} {op}")
    # a non-bool condition selects where it is non-zero
    if dt != "bool":
        bo = buf("o", dt, n)
        k = kernel(ref(bo, (n,)), lambda i: K.select(A[i], B[i], A[i]), [ba, bb, bo])
        (f,) = compile_kernels([k])
        out = np.zeros(n, dt)
        call(k, f, [a, b, out])
        np.testing.assert_array_equal(out, np.where(a != 0, b, a))


@pytest.mark.parametrize("dt", ["float32", "float64", "float16", "bfloat16"])
def test_float_arithmetic(dt):
    """Floats compute in their value type (float16/bfloat16 in float32, rounded on store)."""
    needs([dt])
    rng = np.random.default_rng(2)
    n = 45
    a = rng.uniform(-10, 10, n)
    b = rng.uniform(0.5, 10, n)
    if dt == "bfloat16":
        sa, sb = bf16_from_f32(a), bf16_from_f32(b)
        fa, fb = bf16_to_f32(sa), bf16_to_f32(sb)
    else:
        sa, sb = a.astype(dt), b.astype(dt)
        fa, fb = sa, sb
    cdt = np.float64 if dt == "float64" else np.float32   # compute type
    fa, fb = fa.astype(cdt), fb.astype(cdt)
    ba, bb = buf("a", dt, n), buf("b", dt, n)
    A, B = ref(ba, (n,)), ref(bb, (n,))
    c = K.const(1.5, dt)
    cases = {
        "lin": (lambda i: A[i] * c + B[i], fa * cdt(1.5) + fb),
        "div": (lambda i: A[i] / B[i] - A[i], fa / fb - fa),
        "neg_abs": (lambda i: -K.abs_(A[i]), -np.abs(fa)),
        "sqrt": (lambda i: K.sqrt(B[i]), np.sqrt(fb)),
        "max": (lambda i: K.maximum(A[i], B[i]), np.maximum(fa, fb)),
        "min": (lambda i: K.minimum(A[i], B[i]), np.minimum(fa, fb)),
    }
    outs = {k: buf("o", dt, n) for k in cases}
    kerns = [kernel(ref(outs[k], (n,)), f, [ba, bb, outs[k]]) for k, (f, _) in cases.items()]
    fns = compile_kernels(kerns)
    # one rounding of the float32 result to the storage format (+ contract/arcp slack)
    rtol, atol = {"float32": (2e-6, 1e-5), "float64": (1e-14, 1e-13),
                  "float16": (1e-3, 1e-3), "bfloat16": (8e-3, 8e-3)}[dt]
    for (name, (_, want)), k, f in zip(cases.items(), kerns, fns):
        out = np.zeros(n, np_storage(dt))
        call(k, f, [sa, sb, out])
        np.testing.assert_allclose(as_real(out, dt).astype(np.float64), want, rtol=rtol,
                                   atol=atol, err_msg=f"{dt} {name}")


def test_bool_logic_and_select():
    rng = np.random.default_rng(3)
    n = 40
    a, b, c = (rng.integers(0, 2, n).astype(bool) for _ in range(3))
    ba, bb, bc = buf("a", "bool", n), buf("b", "bool", n), buf("c", "bool", n)
    A, B, C = ref(ba, (n,)), ref(bb, (n,)), ref(bc, (n,))
    cases = {
        "logic": (lambda i: (A[i] & B[i]) | (~C[i] ^ A[i]), (a & b) | (~c ^ a)),
        "eq": (lambda i: A[i].eq(B[i]), a == b),
        "select": (lambda i: K.select(C[i], A[i], B[i]), np.where(c, a, b)),
        "max": (lambda i: K.maximum(A[i], B[i]), a | b),
        "min": (lambda i: K.minimum(A[i], B[i]), a & b),
    }
    outs = {k: buf("o", "bool", n) for k in cases}
    kerns = [kernel(ref(outs[k], (n,)), f, [ba, bb, bc, outs[k]]) for k, (f, _) in cases.items()]
    for (name, (_, want)), k, f in zip(cases.items(), kerns, compile_kernels(kerns)):
        out = np.zeros(n, bool)
        call(k, f, [a, b, c, out])
        np.testing.assert_array_equal(out, want, err_msg=name)
        assert set(out.view(np.uint8).tolist()) <= {0, 1}, f"{name}: bool stored as 0/1"


@pytest.mark.parametrize("dt", ["float32", "float64", "int32", "uint8", "int64", "float16"])
def test_select_of_every_kind(dt):
    needs([dt])
    n = 20
    x = np.arange(n) - 7
    xs = x.astype(dt) if dt != "uint8" else (x % 256).astype(dt)
    bx, bo = buf("x", dt, n), buf("o", dt, n)
    X = ref(bx, (n,))
    two = K.const(2, dt)
    # nested select keyed on a comparison and on a computed int condition
    k = kernel(ref(bo, (n,)), lambda i: K.select(
        X[i].gt(two), X[i] * two, K.select((i % 3).eq(0), K.const(0, dt), X[i])), [bx, bo])
    (f,) = compile_kernels([k])
    out = np.zeros(n, dt)
    call(k, f, [xs, out])
    idx = np.arange(n)
    want = np.where(xs > 2, xs * np.array(2, dt), np.where(idx % 3 == 0, 0, xs)).astype(dt)
    np.testing.assert_array_equal(out, want)


# ---------------------------------------------------------------------------------------------
# integer division and modulo truncate like C
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", ["int8", "int16", "int32", "int64", "uint8", "uint32", "uint64"])
def test_integer_div_mod_truncate_like_c(dt):
    if dt[0] == "i":
        a = np.array([7, -7, 7, -7, 0, 100, -100, 1, -1, 5, 127, -127], dt)
        b = np.array([2, 2, -2, -2, 3, 7, 7, -1, 3, -5, 10, 10], dt)
    else:
        a = np.array([7, 200, 7, 0, 9, 100, 255, 1, 254, 3, 99, 250], dt)
        b = np.array([2, 3, 5, 4, 3, 7, 7, 1, 255, 7, 10, 251], dt)
    n = a.size
    ba, bb, bq, br, bf = (buf(s, dt, n) for s in "abqrf")
    A, B = ref(ba, (n,)), ref(bb, (n,))
    kq = kernel(ref(bq, (n,)), lambda i: A[i] / B[i], [ba, bb, bq])
    kr = kernel(ref(br, (n,)), lambda i: A[i] % B[i], [ba, bb, br])
    kf = kernel(ref(bf, (n,)), lambda i: A[i] // B[i], [ba, bb, bf])  # also C division
    fq, fr, ff = compile_kernels([kq, kr, kf])
    q, r, fl = (np.zeros(n, dt) for _ in range(3))
    call(kq, fq, [a, b, q])
    call(kr, fr, [a, b, r])
    call(kf, ff, [a, b, fl])
    want_q = np.trunc(a.astype(np.float64) / b.astype(np.float64)).astype(dt)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(fl, want_q)
    np.testing.assert_array_equal(r, np.fmod(a, b))   # C remainder: sign of the dividend
    if dt[0] == "i":
        assert q[1] == -3 and r[1] == -1 and q[2] == -3 and r[2] == 1


def test_index_arithmetic_with_constant_divisors():
    """The scheduler's task decomposition uses // and % by constants on int64 indices."""
    n = 30
    bo = buf("o", "int64", n)
    k = kernel(ref(bo, (n,)), lambda i: (i // 4) * 100 + i % 4 + (i - 13) / 5, [bo])
    (f,) = compile_kernels([k])
    out = np.zeros(n, np.int64)
    call(k, f, [out])
    i = np.arange(n)
    np.testing.assert_array_equal(out, i // 4 * 100 + i % 4 + np.fix((i - 13) / 5).astype(int))


# ---------------------------------------------------------------------------------------------
# NaN semantics
# ---------------------------------------------------------------------------------------------
NAN_A = [np.nan, 1.0, np.nan, 2.0, np.inf, -0.0, -np.inf, np.nan]
NAN_B = [1.0, np.nan, np.nan, 2.0, np.inf, 0.0, np.nan, -np.inf]


@pytest.mark.parametrize("dt", ["float32", "float64", "float16", "bfloat16"])
def test_comparisons_with_nan_follow_ieee(dt):
    needs([dt])
    a64, b64 = np.array(NAN_A), np.array(NAN_B)
    if dt == "bfloat16":
        a, b = bf16_from_f32(a64), bf16_from_f32(b64)
    else:
        a, b = a64.astype(dt), b64.astype(dt)
    n = a.size
    ba, bb = buf("a", dt, n), buf("b", dt, n)
    A, B = ref(ba, (n,)), ref(bb, (n,))
    ops = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
           "eq": np.equal, "ne": np.not_equal}
    outs = {op: buf("o", "bool", n) for op in ops}
    kerns = [kernel(ref(outs[op], (n,)), lambda i, op=op: getattr(A[i], op)(B[i]),
                    [ba, bb, outs[op]]) for op in ops]
    for (op, npf), k, f in zip(ops.items(), kerns, compile_kernels(kerns)):
        out = np.zeros(n, bool)
        call(k, f, [a, b, out])
        np.testing.assert_array_equal(out, npf(a64, b64), err_msg=f"{dt} {op}")
    # select on a NaN comparison: NaN < x is false, so the else branch is taken
    bo = buf("o", dt, n)
    k = kernel(ref(bo, (n,)), lambda i: K.select(A[i].lt(B[i]), A[i], B[i]), [ba, bb, bo])
    (f,) = compile_kernels([k])
    out = np.zeros(n, np_storage(dt))
    call(k, f, [a, b, out])
    want = np.where(a64 < b64, a64, b64)
    got = as_real(out, dt).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(want)], want[~np.isnan(want)])


def test_elementwise_max_min_propagate_nan():
    a = np.array(NAN_A, np.float32)
    b = np.array(NAN_B, np.float32)
    n = a.size
    ba, bb, bx, bn = buf("a", "float32", n), buf("b", "float32", n), buf("x", "float32", n), \
        buf("m", "float32", n)
    A, B = ref(ba, (n,)), ref(bb, (n,))
    kx = kernel(ref(bx, (n,)), lambda i: K.maximum(A[i], B[i]), [ba, bb, bx])
    kn = kernel(ref(bn, (n,)), lambda i: K.minimum(A[i], B[i]), [ba, bb, bn])
    fx, fn = compile_kernels([kx, kn])
    mx, mn = np.zeros(n, np.float32), np.zeros(n, np.float32)
    call(kx, fx, [a, b, mx])
    call(kn, fn, [a, b, mn])
    np.testing.assert_array_equal(mx, np.maximum(a, b))
    np.testing.assert_array_equal(mn, np.minimum(a, b))


# ---------------------------------------------------------------------------------------------
# casts between every pair of dtypes
# ---------------------------------------------------------------------------------------------
def _cast_source(src: str, dst: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """(source array in storage form, the same values as numpy float64/int/bool for the
    reference). Float values stay where float->int conversion is defined for ``dst``."""
    n = 48
    if src == "bool":
        v = rng.integers(0, 2, n).astype(bool)
        return v, v
    if as_dtype(src).kind == "f":
        lo = 0.0 if as_dtype(dst).kind in "ub" else -120.0
        v = rng.uniform(lo, 120.0, n)
        v[:6] = [0.0, 0.5, 1.0, 99.75, 2.5, 127.0]
        if as_dtype(dst).kind == "f" or dst == "bool":
            v[6:10] = [np.nan, np.inf, -np.inf, -0.0]
        if as_dtype(dst).kind == "f":
            v[10:14] = [1e-3, -3.3e4, 6.5e4, 1.0e-6]  # subnormal and near-overflow float16
        if src == "bfloat16":
            h = bf16_from_f32(v)
            return h, bf16_to_f32(h).astype(np.float64)
        s = v.astype(src)
        return s, s.astype(np.float64)
    s = _int_samples(src, n, rng)
    s[:4] = [0, 1, np.iinfo(src).max, np.iinfo(src).min]
    return s, s


def _cast_reference(x: np.ndarray, vals: np.ndarray, src: str, dst: str) -> np.ndarray:
    if dst == "bfloat16":
        # through float32 (as MXNet's bf16 constructor does), then round to nearest even
        return bf16_from_f32(vals.astype(np.float32))
    with np.errstate(over="ignore", invalid="ignore"):   # overflow to inf is intended
        if src == "bfloat16":
            return vals.astype(dst)   # vals: the exact float values of the bfloat16 input
        return x.astype(dst)


def _same(got: np.ndarray, want: np.ndarray, dst: str) -> bool:
    g, w = as_real(got, dst), as_real(want, dst)
    if as_dtype(dst).kind == "f":
        return bool(np.array_equal(np.isnan(g), np.isnan(w))
                    and np.array_equal(g[~np.isnan(g)], w[~np.isnan(w)])
                    and np.array_equal(np.signbit(g[~np.isnan(g)]), np.signbit(w[~np.isnan(w)])))
    return bool(np.array_equal(g, w))


@pytest.mark.parametrize("group", ["no_half", "half"])
def test_casts_between_all_pairs_match_numpy_astype(group):
    if group == "half":
        need_mathlib()
        pairs = [(s, d) for s, d in itertools.product(ALL_DTYPES, ALL_DTYPES)
                 if s in HALF or d in HALF]
    else:
        pairs = [(s, d) for s, d in itertools.product(ALL_DTYPES, ALL_DTYPES)
                 if s not in HALF and d not in HALF]
    rng = np.random.default_rng(4)
    kerns, data = [], []
    for src, dst in pairs:
        x, vals = _cast_source(src, dst, rng)
        n = x.size
        bx, bo = buf("x", src, n), buf("o", dst, n)
        kerns.append(kernel(ref(bo, (n,)), lambda i, bx=bx, n=n, dst=dst:
                            K.cast(dst, ref(bx, (n,))[i]), [bx, bo]))
        data.append((src, dst, x, vals))
    fns = compile_kernels(kerns)   # one module: a single compile for every pair
    bad = []
    for (src, dst, x, vals), k, f in zip(data, kerns, fns):
        out = np.zeros(x.size, np_storage(dst))
        call(k, f, [x, out])
        want = _cast_reference(x, vals, src, dst)
        if not _same(out, want, dst):
            m = ~((as_real(out, dst) == as_real(want, dst))
                  | (np.isnan(as_real(out, dst).astype(np.float64))
                     & np.isnan(as_real(want, dst).astype(np.float64))))
            bad.append(f"{src}->{dst}: in {x[m][:3]} got {out[m][:3]} want {want[m][:3]}")
    assert not bad, "\n".join(bad)


def test_float_to_bool_and_bool_to_float():
    v = np.array([0.0, -0.0, 1e-30, -2.0, np.nan, np.inf], np.float32)
    got = run_unary_map("float32", "bool", lambda e: K.cast("bool", e), v)
    np.testing.assert_array_equal(got, v.astype(bool))
    b = np.array([True, False, True])
    got = run_unary_map("bool", "float64", lambda e: K.cast("float64", e), b)
    np.testing.assert_array_equal(got, [1.0, 0.0, 1.0])


def test_float16_rounding_is_nearest_even():
    need_mathlib()
    # halfway cases between neighbouring float16 values, overflow, underflow, subnormals
    v = np.array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 2048 + 1, 2048 + 3, 65504, 65519.99, 65520,
                  2 ** -24, 2 ** -25, 2 ** -25 * 1.5, 2 ** -14 * 0.75, -0.0, 1e9, -1e9],
                 np.float32)
    got = run_unary_map("float32", "float16", lambda e: K.cast("float16", e), v)
    with np.errstate(over="ignore"):
        want = v.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


# ---------------------------------------------------------------------------------------------
# the object cache
# ---------------------------------------------------------------------------------------------
_KEEP: list = []   # modules these tests drop from jit._memory_cache stay mapped


def _add_const_ir(c: float, n: int = 10) -> tuple[str, list]:
    bx, bo = buf("x", "float32", n), buf("o", "float32", n)
    k = kernel(ref(bo, (n,)), lambda i: ref(bx, (n,))[i] + K.const(c, "float32"), [bx, bo])
    return render_module([k])


_SUBPROCESS = textwrap.dedent("""
    import ctypes, json, sys
    import numpy as np
    from mxc.codegen import jit
    text = open(sys.argv[1]).read()
    name = sys.argv[2]
    cm = jit.compile_ir(text, [name])
    x = np.arange(10, dtype=np.float32)
    o = np.zeros(10, np.float32)
    args = (ctypes.c_void_p * 2)(x.ctypes.data, o.ctypes.data)
    cm.functions[name](0, 1, args, None)
    print(json.dumps({"stats": jit.STATS, "out": o.tolist()}))
""")


def _compile_in_subprocess(tmp_path, text: str, name: str, cache: str) -> tuple[int, dict]:
    ir = tmp_path / "k.ll"
    ir.write_text(text)
    env = dict(os.environ, MXC_CACHE_DIR=cache)
    p = subprocess.run([sys.executable, "-c", _SUBPROCESS, str(ir), name], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    info = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
    return p.returncode, info


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("MXC_CACHE_DIR", str(d))
    monkeypatch.setattr(jit, "STATS", {"compiled": 0, "cache_hits": 0, "memory_hits": 0})
    return d


def test_object_cache_memory_disk_and_fresh_process(fresh_cache, tmp_path):
    text, names = _add_const_ir(0.8125)
    key = jit._key(text)
    path = fresh_cache / key[:2] / f"{key}.o"
    mkey = jit._key(text + "\0" + "\0".join(names))  # in memory: keyed by text and names
    jit._memory_cache.pop(mkey, None)  # compiled by an earlier test? start cold in memory
    cm = jit.compile_ir(text, names)
    _KEEP.append(cm)
    assert jit.STATS == {"compiled": 1, "cache_hits": 0, "memory_hits": 0}
    assert path.is_file() and path.stat().st_size > 0
    assert not list(path.parent.glob("*.tmp*")), "temporary file left behind"

    assert jit.compile_ir(text, names) is cm
    assert jit.STATS["memory_hits"] == 1 and jit.STATS["compiled"] == 1

    jit._memory_cache.pop(mkey)         # forget it in memory (cm stays alive in _KEEP)
    cm2 = jit.compile_ir(text, names)
    _KEEP.append(cm2)
    assert jit.STATS == {"compiled": 1, "cache_hits": 1, "memory_hits": 1}
    x, o = np.arange(10, dtype=np.float32), np.zeros(10, np.float32)
    args = (ctypes.c_void_p * 2)(x.ctypes.data, o.ctypes.data)
    cm2.functions[names[0]](0, 1, args, None)
    np.testing.assert_array_equal(o, x + np.float32(0.8125))

    # a fresh process maps the cached object and compiles nothing
    rc, info = _compile_in_subprocess(tmp_path, text, names[0], str(fresh_cache))
    assert rc == 0
    assert info["stats"]["cache_hits"] == 1 and info["stats"]["compiled"] == 0
    assert info["out"] == (x + np.float32(0.8125)).tolist()


def test_compile_modules_caches_each_kernel_separately(fresh_cache):
    """The graph path (render_modules + compile_modules): a kernel shared by two graphs is
    compiled once and found in the disk cache the second time."""
    from mxc.codegen.jit import compile_modules
    from mxc.codegen.llvm_render import render_modules

    n = 12
    bx, bo = buf("x", "float32", n), buf("o", "float32", n)
    X = ref(bx, (n,))
    k1, k2, k3 = (kernel(ref(bo, (n,)), lambda i, c=c: X[i] * K.const(c, "float32"), [bx, bo])
                  for c in (1.125, 2.375, 3.625))
    mods_a, names_a = render_modules([k1, k2, k1])
    assert len(mods_a) == 2 and names_a[0] == names_a[2] != names_a[1]
    for _, text in mods_a:
        jit._memory_cache.pop(jit._key(text), None)
    cm_a = compile_modules(mods_a)
    _KEEP.append(cm_a)
    assert jit.STATS["compiled"] == 2 and jit.STATS["cache_hits"] == 0
    mods_b, names_b = render_modules([k3, k1])
    assert names_b[1] == names_a[0]
    cm_b = compile_modules(mods_b)
    _KEEP.append(cm_b)
    assert jit.STATS["compiled"] == 3 and jit.STATS["cache_hits"] == 1
    x = np.arange(n, dtype=np.float32)
    for cm, names, consts in ((cm_a, names_a, (1.125, 2.375, 1.125)),
                              (cm_b, names_b, (3.625, 1.125))):
        for name, c in zip(names, consts):
            o = np.zeros(n, np.float32)
            cm.functions[name](0, 1, (ctypes.c_void_p * 2)(x.ctypes.data, o.ctypes.data), None)
            np.testing.assert_array_equal(o, x * np.float32(c))


def test_cache_key_depends_on_ir_text(fresh_cache):
    t1, _ = _add_const_ir(1.0)
    t2, _ = _add_const_ir(2.0)
    assert jit._key(t1) == jit._key(t1)
    assert jit._key(t1) != jit._key(t2)


def test_unwritable_cache_dir_only_costs_compile_time(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("MXC_CACHE_DIR", str(blocker))
    monkeypatch.setattr(jit, "STATS", {"compiled": 0, "cache_hits": 0, "memory_hits": 0})
    text, names = _add_const_ir(0.6875)
    jit._memory_cache.pop(jit._key(text), None)
    cm = jit.compile_ir(text, names)
    _KEEP.append(cm)
    assert jit.STATS["compiled"] == 1
    x, o = np.arange(10, dtype=np.float32), np.zeros(10, np.float32)
    args = (ctypes.c_void_p * 2)(x.ctypes.data, o.ctypes.data)
    cm.functions[names[0]](0, 1, args, None)
    np.testing.assert_array_equal(o, x + np.float32(0.6875))




@pytest.mark.parametrize("damage", ["garbage", "truncated",
                                    "empty", "not_elf"])
def test_corrupted_cache_file_is_recompiled(damage, fresh_cache, tmp_path):
    text, names = _add_const_ir(0.40625 + len(damage))
    key = jit._key(text)
    # populate the cache from a fresh process, then damage the file
    rc, info = _compile_in_subprocess(tmp_path, text, names[0], str(fresh_cache))
    assert rc == 0 and info["stats"]["compiled"] == 1
    path = fresh_cache / key[:2] / f"{key}.o"
    good = path.read_bytes()
    path.write_bytes({"garbage": b"\x7fELF" + bytes(range(256)) * 4,
                      "truncated": good[: len(good) // 2], "empty": b"",
                      "not_elf": b"MZ" + good[2:]}[damage])
    rc, info = _compile_in_subprocess(tmp_path, text, names[0], str(fresh_cache))
    assert rc == 0, f"compiling with a damaged ({damage}) cache file exited with {rc}"
    assert info["stats"]["compiled"] == 1
    x = np.arange(10, dtype=np.float32)
    assert info["out"] == (x + np.float32(0.40625 + len(damage))).tolist()
    # ...and the damaged entry was replaced by a good one
    rc, info = _compile_in_subprocess(tmp_path, text, names[0], str(fresh_cache))
    assert rc == 0 and info["stats"]["cache_hits"] == 1


_RELEASE = textwrap.dedent("""
    import ctypes, gc
    import numpy as np
    from mxc.codegen import jit
    from mxc.codegen.llvm_render import render_module
    from mxc.compiler.schedule import schedule
    from mxc.ir import kernel as K
    from mxc.ir.dtypes import as_dtype

    def ir(c):
        x = K.Buffer("x", as_dtype("float32"), 4)
        o = K.Buffer("o", as_dtype("float32"), 4)
        op = K.compute(K.TensorRef(o, (4,)),
                       lambda i: K.TensorRef(x, (4,))[i] + K.const(c, "float32"))
        return render_module([schedule(op, "__K__", [x, o])])

    t1, n1 = ir(1.0)
    cm = jit.compile_ir(t1, n1)
    del cm
    jit._memory_cache.clear()   # the only other reference: the module is released
    gc.collect()
    t2, n2 = ir(2.0)
    cm = jit.compile_ir(t2, n2)
    x = np.arange(4, dtype=np.float32)
    o = np.zeros(4, np.float32)
    cm.functions[n2[0]](0, 1, (ctypes.c_void_p * 2)(x.ctypes.data, o.ctypes.data), None)
    assert (o == x + 2).all(), o
    print("ok")
""")


def test_releasing_a_module_does_not_break_later_compiles(tmp_path):
    """Each MCJIT engine owns its target machine; releasing one module must not free a
    target machine that later compiles use (a crash in a fresh process otherwise)."""
    env = dict(os.environ, MXC_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", _RELEASE], env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "ok"


def test_memory_cache_hit_provides_every_requested_function(fresh_cache):
    n = 8
    bx, bo = buf("x", "float32", n), buf("o", "float32", n)
    ks = [kernel(ref(bo, (n,)), lambda i, c=c: ref(bx, (n,))[i] * K.const(c, "float32"),
                 [bx, bo]) for c in (3.25, 5.75)]
    text, names = render_module(ks)
    assert len(set(names)) == 2
    _KEEP.append(jit.compile_ir(text, names[:1]))
    cm = jit.compile_ir(text, names)
    _KEEP.append(cm)
    assert set(names) <= set(cm.functions)


# ---------------------------------------------------------------------------------------------
# generated code is freestanding: no libm/libc symbols
# ---------------------------------------------------------------------------------------------
def elf_undefined_symbols(obj: bytes) -> list[str]:
    """Names of undefined symbols in an ELF64 little-endian relocatable object."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        pytest.skip("host objects are not ELF64 little-endian")
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = []
    for i in range(shnum):
        (_name, sh_type, _flags, _addr, off, size, link, _info, _align,
         entsize) = struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize)
        sections.append((sh_type, off, size, link, entsize))
    undefined = []
    for sh_type, off, size, link, entsize in sections:
        if sh_type != 2:   # SHT_SYMTAB
            continue
        str_off = sections[link][1]
        for j in range(1, size // entsize):
            st_name, _st_info, _other, shndx, _value, _size = struct.unpack_from(
                "<IBBHQQ", obj, off + j * entsize)
            if shndx == 0 and st_name:
                end = obj.index(b"\0", str_off + st_name)
                undefined.append(obj[str_off + st_name:end].decode())
    return undefined


def host_object(kernels: list) -> bytes:
    text, _ = render_module(kernels)
    tm = jit.host_target_machine()
    mod = jit.parse(text, tm)
    jit.optimize(mod, tm)
    return tm.emit_object(mod)


def test_elf_parser_sees_an_undefined_symbol():
    """The checker itself: a module calling an external function must report it."""
    tm = jit.host_target_machine()
    mod = jit.parse("declare float @fmodf(float, float)\n"
                    "define float @f(float %a) {\n  %r = call float @fmodf(float %a, "
                    "float 2.0)\n  ret float %r\n}\n", tm)
    assert "fmodf" in elf_undefined_symbols(tm.emit_object(mod))


def test_fill_copy_and_reduction_loops_are_not_turned_into_libc_calls():
    """Zero-fill and copy loops would become memset/memcpy without "no-builtins"."""
    n = 4096
    bx, bo = buf("x", "float32", n), buf("o", "float32", n)
    X = ref(bx, (n,))
    b2 = buf("x2", "float64", n * 8)
    o2 = buf("o2", "float64", 8)
    kerns = [kernel(ref(bo, (n,)), lambda i: K.const(0.0, "float32"), [bo]),
             kernel(ref(bo, (n,)), lambda i: X[i], [bx, bo]),
             kernel(ref(bo, (n,)), lambda i: K.cast("float32", K.cast("uint8", X[i])),
                    [bx, bo])]
    r = K.reduce_axis(n)
    kerns.append(kernel(ref(o2, (8,)), lambda i: K.reduce(
        "sum", ref(b2, (8, n))[i, r.var], [r]), [b2, o2]))
    assert elf_undefined_symbols(host_object(kerns)) == []


def test_float_mod_does_not_call_libm():
    n = 64
    bx, by, bo = buf("x", "float32", n), buf("y", "float32", n), buf("o", "float32", n)
    X, Y = ref(bx, (n,)), ref(by, (n,))
    k = kernel(ref(bo, (n,)), lambda i: X[i] % Y[i], [bx, by, bo])
    assert elf_undefined_symbols(host_object([k])) == []


UNARY_MATH = ["exp", "log", "log1p", "expm1", "log2", "log10", "sin", "cos", "tan", "tanh",
              "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh",
              "erf", "erfinv", "sigmoid", "softrelu", "gamma", "gammaln", "cbrt", "rcbrt",
              "floor", "ceil", "round", "rint", "trunc"]


def test_every_math_function_is_freestanding():
    m = need_mathlib()
    funcs = list(dict.fromkeys(UNARY_MATH + list(getattr(m, "MATH_FUNCS", ()))))
    binary = set(getattr(m, "_BINARY", ())) | {"pow"}
    n = 64
    kerns = []
    for dt in ("float32", "float64", "float16", "bfloat16"):
        bx, by, bo = buf("x", dt, n), buf("y", dt, n), buf("o", dt, n)
        X, Y = ref(bx, (n,)), ref(by, (n,))
        for f in funcs:
            if f in binary:
                body = (lambda i, f=f, X=X, Y=Y: K.call(f, X[i], Y[i]))
            else:
                body = (lambda i, f=f, X=X: K.call(f, X[i]))
            kerns.append(kernel(ref(bo, (n,)), body, [bx, by, bo]))
        kerns.append(kernel(ref(bo, (n,)), lambda i, X=X, Y=Y: K.binop("pow", X[i], Y[i]),
                            [bx, by, bo]))
    assert elf_undefined_symbols(host_object(kerns)) == []


def _mathlib_lacks(func: str) -> bool:
    m = _mathlib()
    return m is not None and func not in getattr(m, "MATH_FUNCS", (func,))


@pytest.mark.parametrize("op", [
    "pow",
    pytest.param("atan2"),
    pytest.param("hypot"),
])
def test_binary_math_ops_render_and_are_freestanding(op):
    """``Bin`` documents pow, atan2 and hypot; the renderer routes them to mathlib."""
    need_mathlib()
    n = 16
    kerns = []
    for dt in ("float32", "float64"):
        bx, by, bo = buf("x", dt, n), buf("y", dt, n), buf("o", dt, n)
        X, Y = ref(bx, (n,)), ref(by, (n,))
        kerns.append(kernel(ref(bo, (n,)), lambda i, X=X, Y=Y: K.binop(op, X[i], Y[i]),
                            [bx, by, bo]))
    assert elf_undefined_symbols(host_object(kerns)) == []


def test_math_functions_compute_through_jit():
    """A few math calls, run: the mathlib IR links into kernels and gives numpy's values."""
    need_mathlib()
    x = np.linspace(-3, 3, 50)
    for dt, tol in (("float32", 2e-6), ("float64", 1e-14)):
        xs = x.astype(dt)
        for f, npf in (("exp", np.exp), ("tanh", np.tanh), ("sin", np.sin),
                       ("floor", np.floor)):
            got = run_unary_map(dt, dt, lambda e, f=f: K.call(f, e), xs)
            np.testing.assert_allclose(got, npf(xs.astype(np.float64)), rtol=tol, atol=tol,
                                       err_msg=f"{f} {dt}")
