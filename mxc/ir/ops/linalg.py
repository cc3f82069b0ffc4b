"""Linear-algebra operators: MXNet's ``_linalg_*`` family (mx.nd.linalg / mx.sym.linalg).

Follows MXNet 1.9.1 ``src/operator/tensor/la_op.{h,cc}`` and ``la_op-inl.h``: every op acts on
the trailing two axes (``gemm`` also on a chosen row ``axis``), batched over the leading ones,
float32/float64 only, with the backward formulas of la_op-inl.h (arXiv:1710.08717).

How the work is done, all by generated code:

* matrix products (gemm, syrk, trmm, every backward product) are GEMM-template calls
  (``ctx.gemm``) on strided 3-D views, transposes expressed as strides;
* factorizations and substitutions (Cholesky, triangular solves, LU with partial pivoting, LQ
  by Householder reflections, Jacobi eigen-decomposition) are sequential statement kernels
  (``K.Kernel`` with ``K.For`` / ``K.Store`` / ``K.Assign``), one task per matrix of the batch;
* diagonal/triangle copies and small reductions are ``ctx.compute`` kernels.

Data-dependent failures that LAPACK reports at run time (a matrix that is not positive
definite, a singular matrix) cannot raise from generated code: they give NaN/inf entries.
The numpy ``reference`` methods are test oracles only.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..dtypes import as_dtype
from ..graph import Entry
from ..params import Param, ParamSpec, parse_bool, parse_float, parse_int
from ..registry import OpDef, simple
from .common import collect_buffers, g
from .matrix import matmul

C = K.const
I64 = "int64"
_FLOATS = ("float32", "float64")


def _ci(v) -> K.Expr:
    return C(int(v), I64)


def _prod(s) -> int:
    return math.prod(int(d) for d in s)


# ---------------------------------------------------------------------------------------------
# views and small kernel-building helpers
# ---------------------------------------------------------------------------------------------
def _view(ref: K.TensorRef, shape, strides=None, offset: int = 0) -> K.TensorRef:
    return K.TensorRef(ref.buf, tuple(int(d) for d in shape),
                       None if strides is None else tuple(int(s) for s in strides),
                       ref.offset + int(offset))


def _mats(ref: K.TensorRef) -> K.TensorRef:
    """The (batch, rows, cols) view of a contiguous tensor of matrices (trailing two axes)."""
    s = ref.shape
    return _view(ref, (_prod(s[:-2]), s[-2], s[-1]))


def _vecs(ref: K.TensorRef) -> K.TensorRef:
    """The (batch, length) view of a contiguous tensor of vectors (trailing axis)."""
    s = ref.shape
    return _view(ref, (_prod(s[:-1]), s[-1]))


def _tr(v: K.TensorRef) -> K.TensorRef:
    """Transposed matrices of a 3-D view (a stride swap, no copy)."""
    return v.transpose((0, 2, 1))


def _loop(extent, body_fn, start=0) -> K.For:
    """A serial loop ``for v in [start, start + extent)``; ``body_fn(v)`` gives its body."""
    v = K.index_var("i")
    start = start if isinstance(start, K.Expr) else _ci(start)
    extent = extent if isinstance(extent, K.Expr) else _ci(extent)
    return K.For(v, extent, list(body_fn(v)), "serial", start=start)


def _emit_per_matrix(ctx, n_batch: int, build, name: str, cost: int) -> None:
    """One sequential kernel whose tasks are the matrices of a batch: ``build(b)`` returns the
    statements for matrix ``b`` (factorizations are sequential within a matrix)."""
    if n_batch == 0:
        return
    task = K.index_var("b")
    body = list(build(task))
    kern = K.Kernel("__K__", collect_buffers(body), task, int(n_batch), body,
                    cost=int(max(cost, 1)), note=name)
    ctx.emit(kern)


def _store(ref: K.TensorRef, idx, value) -> K.Store:
    return K.Store(ref.buf, ref.flat_index(list(idx)), K.cast(ref.dtype, value))


_nlocal = [0]


def _local(hint: str, dtype) -> K.Local:
    _nlocal[0] += 1
    return K.Local(f"%la_{hint}{_nlocal[0]}", as_dtype(dtype))


def _fill(ctx, ref: K.TensorRef, value: float = 0.0) -> None:
    if ref.size:
        ctx.compute(ref, lambda *i: C(value, ref.dtype), "la_fill")


def _copy(ctx, dst: K.TensorRef, src: K.TensorRef, scale: float = 1.0) -> None:
    if dst.size == 0:
        return
    if scale == 1.0:
        ctx.compute(dst, lambda *i: src[i], "la_copy")
    else:
        ctx.compute(dst, lambda *i: src[i] * C(scale, dst.dtype), "la_scale")


def _in_triangle(r, c, lower: bool) -> K.Expr:
    return r.ge(c) if lower else r.le(c)


def _masked_triangle(ctx, a: K.TensorRef, lower: bool) -> K.TensorRef:
    """A temp holding the lower (upper) triangle of ``a`` with zeros elsewhere: BLAS reads
    only that triangle of a triangular operand, so the other entries must not contribute."""
    t = ctx.temp(a.shape, a.dtype.name)
    if t.size:
        ctx.compute(t, lambda b, r, c: K.select(_in_triangle(r, c, lower), a[b, r, c],
                                                C(0, a.dtype)), "la_triangle")
    return t


def _zero_triangle(ctx, ref: K.TensorRef, keep_lower: bool) -> None:
    """Zero the strict upper (keep_lower) or strict lower triangle of ``ref`` in place."""
    if ref.size:
        ctx.compute(ref, lambda b, r, c: K.select(_in_triangle(r, c, keep_lower), ref[b, r, c],
                                                  C(0, ref.dtype)), "la_zero_triangle")


def _symmetrize(ctx, dst: K.TensorRef, src: K.TensorRef, from_lower: bool) -> None:
    """dst = src with one triangle mirrored onto the other (MXNet's
    CopyTriangularToOppositeSide): from_lower keeps the lower triangle and diagonal."""
    if dst.size == 0:
        return

    def body(b, r, c):
        lo, hi = K.maximum(r, c), K.minimum(r, c)
        return src[b, lo, hi] if from_lower else src[b, hi, lo]

    ctx.compute(dst, body, "la_symmetrize")


def _mm(ctx, x: K.TensorRef, y: K.TensorRef, out: K.TensorRef, *, tx: bool = False,
        ty: bool = False, alpha: float = 1.0, beta: float = 0.0) -> None:
    """out = alpha * op(x) @ op(y) + beta * out on 3-D views (the GEMM template; an empty
    contraction leaves the beta term)."""
    matmul(ctx, x, y, out, trans_a=tx, trans_b=ty, alpha=float(alpha), beta=float(beta))


def _solve_left(ctx, m: K.TensorRef, x: K.TensorRef, *, lower: bool, unit: bool = False,
                name: str = "la_trsv") -> None:
    """Solve M Y = X in place of ``x`` for triangular M (3-D strided views, any layout):
    forward substitution when M is lower triangular, backward when upper. Only M's triangle
    (and diagonal unless ``unit``) is read."""
    nb, n, ncol = x.shape
    if x.size == 0:
        return

    def build(b):
        def row(ii):
            i = ii if lower else _ci(n - 1) - ii
            if lower:
                kext, kstart = i, _ci(0)
            else:
                kext, kstart = _ci(n - 1) - i, i + _ci(1)
            stmts = [_loop(kext, lambda k: [_loop(ncol, lambda j: [
                _store(x, (b, i, j), x[b, i, j] - m[b, i, k] * x[b, k, j])])], kstart)]
            if not unit:
                stmts.append(_loop(ncol, lambda j: [
                    _store(x, (b, i, j), x[b, i, j] / m[b, i, i])]))
            return stmts

        return [_loop(n, row)]

    _emit_per_matrix(ctx, nb, build, name, cost=nb * n * n * ncol)


def _trsm(ctx, a: K.TensorRef, x: K.TensorRef, *, rightside: bool, lower: bool,
          transpose: bool) -> None:
    """x <- op(A)^-1 x (left) or x op(A)^-1 (right), in place; A triangular (lower/upper).
    The right-side case solves op(A)^T x^T = x^T on transposed views."""
    m = _tr(a) if transpose else a
    eff_lower = lower != transpose
    if rightside:
        _solve_left(ctx, _tr(m), _tr(x), lower=not eff_lower)
    else:
        _solve_left(ctx, m, x, lower=eff_lower)


def _trmm(ctx, a: K.TensorRef, x: K.TensorRef, out: K.TensorRef, *, rightside: bool,
          lower: bool, transpose: bool, alpha: float) -> None:
    """out = alpha * op(tri(A)) @ x (left) or alpha * x @ op(tri(A)) (right)."""
    t = _masked_triangle(ctx, a, lower)
    if rightside:
        _mm(ctx, x, t, out, ty=transpose, alpha=alpha)
    else:
        _mm(ctx, t, x, out, tx=transpose, alpha=alpha)


def _cholesky(ctx, a: K.TensorRef, out: K.TensorRef) -> None:
    """out = L with A = L L^T (lower triangle of A read, out's upper triangle zeroed)."""
    nb, n, _ = a.shape
    _fill(ctx, out)
    dt = out.dtype

    def build(b):
        acc = _local("acc", dt)

        def column(j):
            diag = [K.Assign(acc, a[b, j, j]),
                    _loop(j, lambda k: [K.Assign(acc, acc - out[b, j, k] * out[b, j, k])]),
                    _store(out, (b, j, j), K.sqrt(acc))]

            def below(i):
                return [K.Assign(acc, a[b, i, j]),
                        _loop(j, lambda k: [K.Assign(acc, acc - out[b, i, k] * out[b, j, k])]),
                        _store(out, (b, i, j), acc / out[b, j, j])]

            return diag + [_loop(_ci(n - 1) - j, below, j + _ci(1))]

        return [_loop(n, column)]

    _emit_per_matrix(ctx, nb, build, "la_potrf", cost=nb * n * n * n)


def _lu(ctx, a: K.TensorRef, lu: K.TensorRef, piv: K.TensorRef) -> None:
    """LU factorization with partial pivoting (P A = L U, L unit lower) into ``lu``;
    ``piv[b, k]`` is the 1-based row swapped with row k at step k (LAPACK getrf's ipiv).
    A zero pivot column is left unscaled, as getrf does, so singular matrices give a zero
    diagonal entry instead of NaNs."""
    nb, n, _ = a.shape
    _copy(ctx, lu, a)
    dt = lu.dtype

    def build(b):
        p, best, t, f = (_local("p", I64), _local("best", dt), _local("t", dt),
                         _local("f", dt))

        def step(k):
            search = [K.Assign(p, k), K.Assign(best, K.abs_(lu[b, k, k])),
                      _loop(_ci(n - 1) - k, lambda i: [K.If(K.abs_(lu[b, i, k]).gt(best), [
                          K.Assign(best, K.abs_(lu[b, i, k])), K.Assign(p, i)])], k + _ci(1))]
            swap = [_store(piv, (b, k), p + _ci(1)),
                    _loop(n, lambda j: [K.Assign(t, lu[b, k, j]),
                                        _store(lu, (b, k, j), lu[b, p, j]),
                                        _store(lu, (b, p, j), t)])]
            pivot = lu[b, k, k]
            zero = C(0, dt)

            def eliminate(i):
                return [K.Assign(f, K.select(pivot.eq(zero), zero, lu[b, i, k] / pivot)),
                        _store(lu, (b, i, k), K.select(pivot.eq(zero), lu[b, i, k], f)),
                        _loop(_ci(n - 1) - k, lambda j: [
                            _store(lu, (b, i, j), lu[b, i, j] - f * lu[b, k, j])], k + _ci(1))]

            return search + swap + [_loop(_ci(n - 1) - k, eliminate, k + _ci(1))]

        return [_loop(n, step)]

    _emit_per_matrix(ctx, nb, build, "la_getrf", cost=nb * n * n * n)


def _lu_inverse(ctx, lu: K.TensorRef, piv: K.TensorRef, out: K.TensorRef) -> None:
    """out = A^-1 from P A = L U: out = P (row swaps of I), then L Z = out, U X = Z."""
    nb, n, _ = lu.shape
    if out.size == 0:
        return
    ctx.compute(out, lambda b, r, c: K.select(r.eq(c), C(1, out.dtype), C(0, out.dtype)),
                "la_eye")
    dt = out.dtype

    def build(b):
        t = _local("t", dt)

        def swap(k):
            # clamp the stored pivot so a corrupted value can never address outside the matrix
            p = K.maximum(K.minimum(K.cast(I64, piv[b, k]) - _ci(1), _ci(n - 1)), _ci(0))
            return [_loop(n, lambda j: [K.Assign(t, out[b, k, j]),
                                        _store(out, (b, k, j), out[b, p, j]),
                                        _store(out, (b, p, j), t)])]

        return [_loop(n, swap)]

    _emit_per_matrix(ctx, nb, build, "la_permute", cost=nb * n * n)
    _solve_left(ctx, lu, out, lower=True, unit=True)
    _solve_left(ctx, lu, out, lower=False)


def _float_types(op: str, t) -> tuple:
    k = next((x for x in t if x is not None), None)
    if k is not None and k not in _FLOATS:
        raise OpError(f"{op}: the operator supports float32 and float64 data types only, "
                      f"got {k}")
    for x in t:
        if x is not None and x != k:
            raise OpError(f"{op}: inputs must have the same dtype, got {list(t)}")
    return k


def _need_matrices(op: str, s, what: str = "A", square: bool = False) -> None:
    if len(s) < 2:
        raise ShapeError(f"{op}: input {what} must be a tensor of matrices (ndim >= 2), "
                         f"got shape {tuple(s)}")
    if square and s[-1] != s[-2]:
        raise ShapeError(f"{op}: input {what} must be a tensor of square matrices, got "
                         f"shape {tuple(s)}")


def _tri_np(a, lower: bool):
    return np.tril(a) if lower else np.triu(a)


def _np_op(x, t: bool):
    return np.swapaxes(x, -1, -2) if t else x


class _LaOp(OpDef):
    """Common pieces: float32/float64 only, argument ``A``."""

    fusion = "opaque"

    def arguments(self, a):
        return ["A"]

    def infer_type(self, a, t):
        k = _float_types(self.name, t)
        return [k] * len(t), [k] * self.num_outputs(a)


class _LaBackward(_LaOp):
    """A backward op with one output shaped like input ``like`` (``index`` picks which
    gradient of a multi-input op it computes)."""

    differentiable = False
    like = 1

    def infer_shape(self, a, s):
        return s, [s[self.like]]


# ---------------------------------------------------------------------------------------------
# extractdiag / makediag / extracttrian / maketrian
# ---------------------------------------------------------------------------------------------
_DIAG = ParamSpec(offset=Param(parse_int, 0))
_TRIAN = ParamSpec(offset=Param(parse_int, 0), lower=Param(parse_bool, True))


def _tri_upper(a) -> bool:
    """Whether the triangle is the upper one (MXNet's CopyTrian switches coordinates)."""
    return a.offset > 0 or (a.offset == 0 and not a.lower)


def _tri_row_of(t: K.Expr) -> K.Expr:
    """Row r of packed index t in a row-major lower triangle: r(r+1)/2 <= t < (r+1)(r+2)/2.
    A float64 square root, corrected by one step either way against rounding."""
    f = K.cast("float64", t) * C(8.0, "float64") + C(1.0, "float64")
    r0 = K.cast(I64, (K.sqrt(f) - C(1.0, "float64")) * C(0.5, "float64"))
    r0 = K.maximum(r0, _ci(0))
    r1 = r0 - K.cast(I64, (r0 * (r0 + _ci(1)) // _ci(2)).gt(t))
    return r1 + K.cast(I64, ((r1 + _ci(1)) * (r1 + _ci(2)) // _ci(2)).le(t))


def _extracted_length(op: str, x: tuple, offset: int, what: str) -> int:
    """The diagonal length (square matrices, ``offset`` off the main diagonal) that
    extractdiag / extracttrian read."""
    _need_matrices(op, x, square=True)
    n = x[-1] - abs(offset)
    if n <= 0:
        raise ShapeError(f"{op}: illegal offset {offset} for {what} extraction of "
                         f"matrices of shape {tuple(x[-2:])}")
    return n


@simple("_linalg_extractdiag", aliases=("linalg_extractdiag",), params=_DIAG)
class LinalgExtractDiag(_LaOp):
    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None]
        n = _extracted_length(self.name, x, a.offset, "diag")
        return s, [tuple(x[:-2]) + (n,)]

    def lower(self, ctx):
        k = ctx.attrs.offset
        src, out = _mats(ctx.inputs[0]), _vecs(ctx.outputs[0])
        r0, c0 = max(-k, 0), max(k, 0)
        if out.size:
            ctx.compute(out, lambda b, i: src[b, i + _ci(r0), i + _ci(c0)], "la_extractdiag")

    def reference(self, a, inputs, is_train=False):
        return [np.diagonal(inputs[0], a.offset, -2, -1).copy()]

    def gradient(self, node, ograds):
        return [g("_linalg_makediag", ograds[0], offset=node.parsed.offset,
                  name=f"{node.name}_backward")]


@simple("_linalg_makediag", aliases=("linalg_makediag",), params=_DIAG)
class LinalgMakeDiag(_LaOp):
    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None]
        if len(x) < 1:
            raise ShapeError(f"{self.name}: input A must have ndim >= 1, got a scalar")
        n = x[-1] + abs(a.offset)
        return s, [tuple(x[:-1]) + (n, n)]

    def lower(self, ctx):
        k = ctx.attrs.offset
        src, out = _vecs(ctx.inputs[0]), _mats(ctx.outputs[0])
        if out.size == 0:
            return
        length, r0 = src.shape[1], max(-k, 0)
        if length == 0:
            return _fill(ctx, out)

        def body(b, r, c):
            i = K.maximum(K.minimum(r - _ci(r0), _ci(length - 1)), _ci(0))
            return K.select((c - r).eq(_ci(k)), src[b, i], C(0, out.dtype))

        ctx.compute(out, body, "la_makediag")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        n = x.shape[-1] + abs(a.offset)
        out = np.zeros(x.shape[:-1] + (n, n), x.dtype)
        i = np.arange(x.shape[-1])
        out[..., i + max(-a.offset, 0), i + max(a.offset, 0)] = x
        return [out]

    def gradient(self, node, ograds):
        return [g("_linalg_extractdiag", ograds[0], offset=node.parsed.offset,
                  name=f"{node.name}_backward")]


@simple("_linalg_extracttrian", aliases=("linalg_extracttrian",), params=_TRIAN)
class LinalgExtractTrian(_LaOp):
    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None]
        n = _extracted_length(self.name, x, a.offset, "trian")
        return s, [tuple(x[:-2]) + (n * (n + 1) // 2,)]

    def lower(self, ctx):
        a = ctx.attrs
        src, out = _mats(ctx.inputs[0]), _vecs(ctx.outputs[0])
        k, upper = abs(a.offset), _tri_upper(a)
        if out.size == 0:
            return

        def body(b, t):
            rt = _tri_row_of(t)
            ct = t - rt * (rt + _ci(1)) // _ci(2)
            if upper:
                return src[b, ct, rt + _ci(k)]
            return src[b, rt + _ci(k), ct]

        ctx.compute(out, body, "la_extracttrian")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        n = x.shape[-1]
        r, c = np.nonzero(np.tril(np.ones((n - abs(a.offset),) * 2, bool)))
        if _tri_upper(a):
            return [x[..., c, r + abs(a.offset)].copy()]
        return [x[..., r + abs(a.offset), c].copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_linalg_maketrian", ograds[0], offset=a.offset, lower=a.lower,
                  name=f"{node.name}_backward")]


@simple("_linalg_maketrian", aliases=("linalg_maketrian",), params=_TRIAN)
class LinalgMakeTrian(_LaOp):
    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None]
        if len(x) < 1:
            raise ShapeError(f"{self.name}: input A must have ndim >= 1, got a scalar")
        n = x[-1]
        m = math.floor(0.5 + (math.sqrt(8 * n + 1) - 1.0) * 0.5)
        if m * (m + 1) // 2 != n:
            raise ShapeError(f"{self.name}: input tensor has an invalid dimension for the last "
                             f"axis ({n} is not a triangular number m*(m+1)/2)")
        size = m + abs(a.offset)
        return s, [tuple(x[:-1]) + (size, size)]

    def lower(self, ctx):
        a = ctx.attrs
        src, out = _vecs(ctx.inputs[0]), _mats(ctx.outputs[0])
        k, upper, ntri = abs(a.offset), _tri_upper(a), src.shape[1]
        if out.size == 0:
            return
        if ntri == 0:
            return _fill(ctx, out)

        def body(b, r, c):
            rt, ct = (c - _ci(k), r) if upper else (r - _ci(k), c)
            inside = rt.ge(ct) & rt.ge(_ci(0))
            idx = K.maximum(K.minimum(rt * (rt + _ci(1)) // _ci(2) + ct, _ci(ntri - 1)), _ci(0))
            return K.select(inside, src[b, idx], C(0, out.dtype))

        ctx.compute(out, body, "la_maketrian")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        ntri = x.shape[-1]
        m = math.floor(0.5 + (math.sqrt(8 * ntri + 1) - 1.0) * 0.5)
        k = abs(a.offset)
        out = np.zeros(x.shape[:-1] + (m + k, m + k), x.dtype)
        r, c = np.nonzero(np.tril(np.ones((m, m), bool)))
        if _tri_upper(a):
            out[..., c, r + k] = x
        else:
            out[..., r + k, c] = x
        return [out]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_linalg_extracttrian", ograds[0], offset=a.offset, lower=a.lower,
                  name=f"{node.name}_backward")]


# ---------------------------------------------------------------------------------------------
# gemm: alpha * op(A) op(B) + beta * C, rows on ``axis``, columns on the last axis
# ---------------------------------------------------------------------------------------------
_GEMM = ParamSpec(transpose_a=Param(parse_bool, False), transpose_b=Param(parse_bool, False),
                  alpha=Param(parse_float, 1.0), beta=Param(parse_float, 1.0),
                  axis=Param(parse_int, -2))


def _row_axis(op: str, axis: int, ndim: int) -> int:
    ax = axis + ndim if axis < 0 else axis
    if not 0 <= ax < ndim - 1:
        raise ShapeError(f"{op}: invalid row axis ({axis}) for {ndim}-d inputs")
    return ax


def _gemm_shape(op: str, a, sa, sb) -> tuple:
    if len(sa) < 2 or len(sa) != len(sb):
        raise ShapeError(f"{op}: A and B must be tensors of the same rank >= 2, got "
                         f"{tuple(sa)} and {tuple(sb)}")
    nd = len(sa)
    ax = _row_axis(op, a.axis, nd)
    for i in range(nd - 1):
        if i != ax and sa[i] != sb[i]:
            raise ShapeError(f"{op}: shapes of inputs A {tuple(sa)} and B {tuple(sb)} must be "
                             f"the same except on the row/column axes")
    ka = sa[ax] if a.transpose_a else sa[-1]
    kb = sb[-1] if a.transpose_b else sb[ax]
    if ka != kb:
        raise ShapeError(f"{op}: incompatible matrix dimensions for multiplication: A "
                         f"{tuple(sa)} B {tuple(sb)} (transpose_a={a.transpose_a}, "
                         f"transpose_b={a.transpose_b}, axis={a.axis})")
    out = list(sa)
    out[ax] = sa[-1] if a.transpose_a else sa[ax]
    out[-1] = sb[ax] if a.transpose_b else sb[-1]
    return tuple(out)


def _axis_slabs(refs: list, axis: int) -> list:
    """Each tensor as a list of 3-D (batch, rows, cols) views, rows on ``axis``, columns on the
    last axis (MXNet's LaOpFlatten). With the default axis that is one view; otherwise the
    tensor is (P, rows, Q, cols) and the longer of P, Q becomes the GEMM batch while the
    shorter is looped over (no transposing copies). All tensors share P and Q."""
    s0 = refs[0].shape
    nd = len(s0)
    ax = axis + nd if axis < 0 else axis
    if ax == nd - 2:
        return [[_mats(r)] for r in refs]
    P, Q = _prod(s0[:ax]), _prod(s0[ax + 1:-1])
    out = []
    for r in refs:
        R, Cc = r.shape[ax], r.shape[-1]
        if P <= Q:
            out.append([_view(r, (Q, R, Cc), (Cc, Q * Cc, 1), p * R * Q * Cc) for p in range(P)])
        else:
            out.append([_view(r, (P, R, Cc), (R * Q * Cc, Q * Cc, 1), q * Cc) for q in range(Q)])
    return out


@simple("_linalg_gemm", aliases=("linalg_gemm",), params=_GEMM, fusion="complex")
class LinalgGemm(_LaOp):
    def arguments(self, a):
        return ["A", "B", "C"]

    def infer_shape(self, a, s):
        sa, sb, sc = s
        if sa is None or sb is None:
            return s, [sc]
        out = _gemm_shape(self.name, a, sa, sb)
        if sc is not None and tuple(sc) != out:
            raise ShapeError(f"{self.name}: input C has shape {tuple(sc)}, expected {out}")
        return [sa, sb, out], [out]

    def inplace(self, a):
        return [(2, 0)]

    def lower(self, ctx):
        a = ctx.attrs
        A, B, Cin = ctx.inputs
        out = ctx.outputs[0]
        if out.size == 0:
            return
        if a.beta != 0.0:
            ctx.compute(out, lambda *i: Cin[i], "la_copy")
        for x, y, o in zip(*_axis_slabs([A, B, out], a.axis)):
            _mm(ctx, x, y, o, tx=a.transpose_a, ty=a.transpose_b, alpha=a.alpha,
                beta=a.beta)

    def reference(self, a, inputs, is_train=False):
        A, B, Cm = (np.moveaxis(x.astype(np.float64), a.axis, -2) for x in inputs)
        r = a.alpha * (_np_op(A, a.transpose_a) @ _np_op(B, a.transpose_b)) + a.beta * Cm
        return [np.moveaxis(r, -2, a.axis).astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        kw = {k: getattr(node.parsed, k) for k in ("transpose_a", "transpose_b", "alpha",
                                                    "beta", "axis")}
        A, B, _ = node.inputs
        return [g("_backward_linalg_gemm", ograds[0], A, B, index=i,
                  name=f"{node.name}_backward_{'ABC'[i]}", **kw) for i in range(3)]


@simple("_backward_linalg_gemm", fusion="complex",
        params=ParamSpec(index=Param(parse_int), **_GEMM.params))
class BackwardLinalgGemm(_LaBackward):
    """One gradient of gemm: index 0 dA, 1 dB, 2 dC = beta * dOut (la_op-inl.h
    gemm_backward)."""

    def arguments(self, a):
        return ["ograd", "A", "B"]

    def infer_shape(self, a, s):
        return s, [s[0] if a.index == 2 else s[1 + a.index]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, A, B = ctx.inputs
        dx = ctx.outputs[0]
        if dx.size == 0:
            return
        if a.index == 2:
            return _copy(ctx, dx, dy, a.beta)
        tA, tB, al = a.transpose_a, a.transpose_b, a.alpha
        for d, x, y, o in zip(*_axis_slabs([dy, A, B, dx], a.axis)):
            if a.index == 0:
                if tA:
                    _mm(ctx, y, d, o, tx=tB, ty=True, alpha=al)
                else:
                    _mm(ctx, d, y, o, ty=not tB, alpha=al)
            elif tB:
                _mm(ctx, d, x, o, tx=True, ty=tA, alpha=al)
            else:
                _mm(ctx, x, d, o, tx=not tA, alpha=al)


# ---------------------------------------------------------------------------------------------
# trmm / trsm: products with and solves against triangular matrices
# ---------------------------------------------------------------------------------------------
_TRIANG = ParamSpec(transpose=Param(parse_bool, False), rightside=Param(parse_bool, False),
                    lower=Param(parse_bool, True), alpha=Param(parse_float, 1.0))


class _TriangOp(_LaOp):
    fusion = "complex"

    def arguments(self, a):
        return ["A", "B"]

    def infer_shape(self, a, s):
        sa, sb = s
        if sa is None or sb is None:
            return s, [None]
        if len(sa) < 2 or len(sa) != len(sb):
            raise ShapeError(f"{self.name}: A and B must be tensors of the same rank >= 2, "
                             f"got {tuple(sa)} and {tuple(sb)}")
        _need_matrices(self.name, sa, square=True)
        if tuple(sa[:-2]) != tuple(sb[:-2]):
            raise ShapeError(f"{self.name}: shapes of A {tuple(sa)} and B {tuple(sb)} must be "
                             f"the same except on the last two dimensions")
        if a.rightside and sa[-2] != sb[-1] or not a.rightside and sb[-2] != sa[-1]:
            raise ShapeError(f"{self.name}: incompatible matrix dimensions A {tuple(sa)}, B "
                             f"{tuple(sb)} (rightside={a.rightside})")
        return s, [tuple(sb)]

    def inplace(self, a):
        return [(1, 0)]


@simple("_linalg_trmm", aliases=("linalg_trmm",), params=_TRIANG)
class LinalgTrmm(_TriangOp):
    def lower(self, ctx):
        a = ctx.attrs
        A, B = (_mats(r) for r in ctx.inputs)
        _trmm(ctx, A, B, _mats(ctx.outputs[0]), rightside=a.rightside, lower=a.lower,
              transpose=a.transpose, alpha=a.alpha)

    def reference(self, a, inputs, is_train=False):
        A, B = (x.astype(np.float64) for x in inputs)
        T = _np_op(_tri_np(A, a.lower), a.transpose)
        r = a.alpha * (B @ T if a.rightside else T @ B)
        return [r.astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        kw = {k: getattr(node.parsed, k) for k in ("transpose", "rightside", "lower", "alpha")}
        A, B = node.inputs
        return [g("_backward_linalg_trmm", ograds[0], A, B, index=i,
                  name=f"{node.name}_backward_{'AB'[i]}", **kw) for i in range(2)]


@simple("_backward_linalg_trmm", fusion="complex",
        params=ParamSpec(index=Param(parse_int), **_TRIANG.params))
class BackwardLinalgTrmm(_LaBackward):
    """la_op-inl.h trmm_backward: dA = alpha * (dC op(B) or op(B) dC) on A's triangle,
    dB = trmm with the transposed triangle."""

    def arguments(self, a):
        return ["ograd", "A", "B"]

    def infer_shape(self, a, s):
        return s, [s[1 + a.index]]

    def lower(self, ctx):
        a = ctx.attrs
        dC, A, B = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        t = a.transpose
        if a.index == 0:
            if a.rightside == t:
                _mm(ctx, dC, B, out, tx=t, ty=not t, alpha=a.alpha)
            else:
                _mm(ctx, B, dC, out, tx=not t, ty=t, alpha=a.alpha)
            _zero_triangle(ctx, out, a.lower)
        else:
            _trmm(ctx, A, dC, out, rightside=a.rightside, lower=a.lower, transpose=not t,
                  alpha=a.alpha)


@simple("_linalg_trsm", aliases=("linalg_trsm",), params=_TRIANG)
class LinalgTrsm(_TriangOp):
    def lower(self, ctx):
        a = ctx.attrs
        A, B = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        _copy(ctx, out, B, a.alpha)
        _trsm(ctx, A, out, rightside=a.rightside, lower=a.lower, transpose=a.transpose)

    def reference(self, a, inputs, is_train=False):
        A, B = (x.astype(np.float64) for x in inputs)
        T = _np_op(_tri_np(A, a.lower), a.transpose)
        if a.rightside:   # X T = alpha B  <=>  T^T X^T = alpha B^T
            r = np.swapaxes(np.linalg.solve(np.swapaxes(T, -1, -2),
                                            a.alpha * np.swapaxes(B, -1, -2)), -1, -2)
        else:
            r = np.linalg.solve(T, a.alpha * B)
        return [r.astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        kw = {k: getattr(node.parsed, k) for k in ("transpose", "rightside", "lower", "alpha")}
        A, B = node.inputs
        out = Entry(node, 0)
        return [g("_backward_linalg_trsm", ograds[0], A, B, out, index=i,
                  name=f"{node.name}_backward_{'AB'[i]}", **kw) for i in range(2)]


@simple("_backward_linalg_trsm", fusion="complex",
        params=ParamSpec(index=Param(parse_int), **_TRIANG.params))
class BackwardLinalgTrsm(_LaBackward):
    """la_op-inl.h trsm_backward: dB = trsm(A, dC) with the transposed triangle;
    dA = -1/alpha * (dB op(C) or op(C) dB) restricted to A's triangle."""

    def arguments(self, a):
        return ["ograd", "A", "B", "out"]

    def infer_shape(self, a, s):
        return s, [s[1 + a.index]]

    def lower(self, ctx):
        a = ctx.attrs
        dC, A, _B, Cout = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        t = a.transpose
        dB = out if a.index == 1 else ctx.temp(dC.shape, dC.dtype.name)
        _copy(ctx, dB, dC, a.alpha)
        _trsm(ctx, A, dB, rightside=a.rightside, lower=a.lower, transpose=not t)
        if a.index == 1:
            return
        scale = -1.0 / a.alpha
        if a.rightside == t:
            _mm(ctx, dB, Cout, out, tx=t, ty=not t, alpha=scale)
        else:
            _mm(ctx, Cout, dB, out, tx=not t, ty=t, alpha=scale)
        _zero_triangle(ctx, out, a.lower)


# ---------------------------------------------------------------------------------------------
# potrf / potri: Cholesky factor and the inverse from it
# ---------------------------------------------------------------------------------------------
_CHOL = ParamSpec(lower=Param(parse_bool, True))


class _SquareOp(_LaOp):
    """One square-matrix input, output of the same shape."""

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None] * self.num_outputs(a)
        _need_matrices(self.name, s[0], square=True)
        return s, [tuple(s[0])]

    def inplace(self, a):
        return [(0, 0)]


@simple("_linalg_potrf", aliases=("linalg_potrf",), params=_CHOL)
class LinalgPotrf(_SquareOp):
    def lower(self, ctx):
        A, out = _mats(ctx.inputs[0]), _mats(ctx.outputs[0])
        if out.size == 0:
            return
        if ctx.attrs.lower:
            _cholesky(ctx, A, out)
        else:   # A = U^T U with U = L^T, L the Cholesky factor of A^T (reads A's upper part)
            _cholesky(ctx, _tr(A), _tr(out))

    def reference(self, a, inputs, is_train=False):
        A = inputs[0].astype(np.float64)
        if a.lower:
            L = np.linalg.cholesky(np.tril(A) + np.swapaxes(np.tril(A, -1), -1, -2))
        else:
            U = np.triu(A)
            L = np.swapaxes(np.linalg.cholesky(np.swapaxes(U, -1, -2) + np.triu(A, 1)), -1, -2)
        return [L.astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_linalg_potrf", ograds[0], Entry(node, 0), lower=node.parsed.lower,
                  name=f"{node.name}_backward")]


@simple("_backward_linalg_potrf", fusion="complex", params=_CHOL)
class BackwardLinalgPotrf(_LaBackward):
    """dA = 0.5 * L^-T copyLTU(L^T dL) L^-1 (la_op-inl.h potrf_backward; the upper case by
    the matching transpositions)."""

    def arguments(self, a):
        return ["ograd", "out"]

    def lower(self, ctx):
        lower = ctx.attrs.lower
        dL, L = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        if out.size == 0:
            return
        m = ctx.temp(out.shape, out.dtype.name)
        if lower:
            _mm(ctx, L, dL, m, tx=True)          # L^T dL
        else:
            _mm(ctx, dL, L, m, ty=True)          # dU U^T
        _symmetrize(ctx, out, m, from_lower=lower)
        _trsm(ctx, L, out, rightside=False, lower=lower, transpose=lower)
        _trsm(ctx, L, out, rightside=True, lower=lower, transpose=not lower)
        ctx.compute(out, lambda *i: out[i] * C(0.5, out.dtype), "la_scale")


@simple("_linalg_potri", aliases=("linalg_potri",), params=_CHOL)
class LinalgPotri(_SquareOp):
    def lower(self, ctx):
        lower = ctx.attrs.lower
        A, out = _mats(ctx.inputs[0]), _mats(ctx.outputs[0])
        if out.size == 0:
            return
        # X = A^-1 (a triangular solve against I), then out = X^T X (lower) or X X^T (upper)
        inv = ctx.temp(out.shape, out.dtype.name)
        ctx.compute(inv, lambda b, r, c: K.select(r.eq(c), C(1, out.dtype), C(0, out.dtype)),
                    "la_eye")
        _solve_left(ctx, A, inv, lower=lower)
        if lower:
            _mm(ctx, inv, inv, out, tx=True)
        else:
            _mm(ctx, inv, inv, out, ty=True)

    def reference(self, a, inputs, is_train=False):
        T = _tri_np(inputs[0].astype(np.float64), a.lower)
        prod = np.swapaxes(T, -1, -2) @ T if not a.lower else T @ np.swapaxes(T, -1, -2)
        return [np.linalg.inv(prod).astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_linalg_potri", ograds[0], node.inputs[0], Entry(node, 0),
                  lower=node.parsed.lower, name=f"{node.name}_backward")]


@simple("_backward_linalg_potri", fusion="complex", params=_CHOL)
class BackwardLinalgPotri(_LaBackward):
    """dL = -tril(out (dOut + dOut^T) L^-T) (lower; la_op-inl.h potri_backward)."""

    def arguments(self, a):
        return ["ograd", "A", "out"]

    def lower(self, ctx):
        lower = ctx.attrs.lower
        dO, L, O = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        if out.size == 0:
            return
        if lower:
            _mm(ctx, O, dO, out)
            _mm(ctx, O, dO, out, ty=True, beta=1.0)
        else:
            _mm(ctx, dO, O, out)
            _mm(ctx, dO, O, out, tx=True, beta=1.0)
        ctx.compute(out, lambda *i: -out[i], "la_negate")
        _trsm(ctx, L, out, rightside=lower, lower=lower, transpose=True)
        _zero_triangle(ctx, out, lower)


# ---------------------------------------------------------------------------------------------
# syrk, sumlogdiag
# ---------------------------------------------------------------------------------------------
_SYRK = ParamSpec(transpose=Param(parse_bool, False), alpha=Param(parse_float, 1.0))


@simple("_linalg_syrk", aliases=("linalg_syrk",), params=_SYRK, fusion="complex")
class LinalgSyrk(_LaOp):
    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None]
        _need_matrices(self.name, x)
        n = x[-1] if a.transpose else x[-2]
        return s, [tuple(x[:-2]) + (n, n)]

    def lower(self, ctx):
        a = ctx.attrs
        A, out = _mats(ctx.inputs[0]), _mats(ctx.outputs[0])
        if a.transpose:
            _mm(ctx, A, A, out, tx=True, alpha=a.alpha)
        else:
            _mm(ctx, A, A, out, ty=True, alpha=a.alpha)

    def reference(self, a, inputs, is_train=False):
        A = inputs[0].astype(np.float64)
        At = np.swapaxes(A, -1, -2)
        return [(a.alpha * (At @ A if a.transpose else A @ At)).astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_linalg_syrk", ograds[0], node.inputs[0], transpose=a.transpose,
                  alpha=a.alpha, name=f"{node.name}_backward")]


@simple("_backward_linalg_syrk", fusion="complex", params=_SYRK)
class BackwardLinalgSyrk(_LaBackward):
    """dA = alpha (dB + dB^T) A, or alpha A (dB + dB^T) with transpose (two GEMMs)."""

    def arguments(self, a):
        return ["ograd", "A"]

    def lower(self, ctx):
        a = ctx.attrs
        dB, A = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        if a.transpose:
            _mm(ctx, A, dB, out, alpha=a.alpha)
            _mm(ctx, A, dB, out, ty=True, alpha=a.alpha, beta=1.0)
        else:
            _mm(ctx, dB, A, out, alpha=a.alpha)
            _mm(ctx, dB, A, out, tx=True, alpha=a.alpha, beta=1.0)


def _batch_out_shape(s) -> tuple:
    """MXNet's LaReduceShape<2>: the leading dims, or (1,) for a single matrix."""
    return tuple(s[:-2]) if len(s) > 2 else (1,)


@simple("_linalg_sumlogdiag", aliases=("linalg_sumlogdiag",))
class LinalgSumLogDiag(_LaOp):
    fusion = "reduction"

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        _need_matrices(self.name, s[0], square=True)
        return s, [_batch_out_shape(s[0])]

    def lower(self, ctx):
        A = _mats(ctx.inputs[0])
        nb, n, _ = A.shape
        out = _view(ctx.outputs[0], (nb,))
        if nb == 0:
            return
        if n == 0:
            return _fill(ctx, out)
        r = K.reduce_axis(n, "d")
        ctx.compute(out, lambda b: K.reduce("sum", K.call("log", A[b, r.var, r.var]), [r]),
                    "la_sumlogdiag")

    def reference(self, a, inputs, is_train=False):
        A = inputs[0]
        r = np.sum(np.log(np.diagonal(A, 0, -2, -1).astype(np.float64)), axis=-1)
        return [np.asarray(r, np.float64).reshape(_batch_out_shape(A.shape)).astype(A.dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_linalg_sumlogdiag", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward")]


@simple("_backward_linalg_sumlogdiag", fusion="complex")
class BackwardLinalgSumLogDiag(_LaBackward):
    def arguments(self, a):
        return ["ograd", "A"]

    def lower(self, ctx):
        A = _mats(ctx.inputs[1])
        dB = _view(ctx.inputs[0], (A.shape[0],))
        out = _mats(ctx.outputs[0])
        if out.size:
            ctx.compute(out, lambda b, r, c: K.select(r.eq(c), dB[b] / A[b, r, c],
                                                      C(0, out.dtype)), "la_sumlogdiag_grad")


# ---------------------------------------------------------------------------------------------
# inverse, det, slogdet (LU with partial pivoting)
# ---------------------------------------------------------------------------------------------
@simple("_linalg_inverse", aliases=("linalg_inverse",))
class LinalgInverse(_SquareOp):
    def lower(self, ctx):
        A, out = _mats(ctx.inputs[0]), _mats(ctx.outputs[0])
        if out.size == 0:
            return
        lu = ctx.temp(A.shape, A.dtype.name)
        piv = ctx.temp(A.shape[:2], "int32")
        _lu(ctx, A, lu, piv)
        _lu_inverse(ctx, lu, piv, out)

    def reference(self, a, inputs, is_train=False):
        return [np.linalg.inv(inputs[0].astype(np.float64)).astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_linalg_inverse", ograds[0], Entry(node, 0),
                  name=f"{node.name}_backward")]


@simple("_backward_linalg_inverse", fusion="complex")
class BackwardLinalgInverse(_LaBackward):
    """dA = -out^T dOut out^T (two GEMMs)."""

    def arguments(self, a):
        return ["ograd", "out"]

    def lower(self, ctx):
        dO, O = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        if out.size == 0:
            return
        t = ctx.temp(out.shape, out.dtype.name)
        _mm(ctx, dO, O, t, ty=True)
        _mm(ctx, O, t, out, tx=True, alpha=-1.0)


def _det_shape(s) -> tuple:
    if len(s) == 2:
        return () if _prod(s) == 0 else (1,)
    return tuple(s[:-2])


class _DetBase(_LaOp):
    """det/slogdet: visible outputs, then MXNet's hidden LU factors and int32 pivots."""

    n_visible = 1

    def outputs(self, a):
        return (["det"] if self.n_visible == 1 else ["sign", "logabsdet"]) + ["LU", "pivot"]

    def num_visible_outputs(self, a):
        return self.n_visible

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None] * self.num_outputs(a)
        _need_matrices(self.name, x, square=True)
        o = _det_shape(x)
        return s, [o] * self.n_visible + [tuple(x), tuple(x[:-1])]

    def infer_type(self, a, t):
        k = _float_types(self.name, t)
        return [k], [k] * (self.n_visible + 1) + ["int32"]

    def _factor(self, ctx):
        """LU-factor A into the hidden outputs; return the views (A, LU, pivots)."""
        A = _mats(ctx.inputs[0])
        n = A.shape[-1]
        lu = _mats(ctx.outputs[self.n_visible])
        piv = _vecs(ctx.outputs[self.n_visible + 1]) if n else None
        if A.size:
            _lu(ctx, A, lu, piv)
        return A, lu, piv

    def _sign_logdet(self, ctx, A, lu, piv, sign, logdet) -> None:
        nb, n, _ = A.shape
        dt = sign.dtype
        if nb == 0:
            return
        if n == 0:   # the empty matrix has determinant 1
            _fill(ctx, sign, 1.0)
            _fill(ctx, logdet, 0.0)
            return
        r = K.reduce_axis(n, "d")

        def sign_of(b):
            d = lu[b, r.var, r.var]
            s = K.cast(dt.name, d.gt(C(0, dt))) - K.cast(dt.name, d.lt(C(0, dt)))
            swapped = K.cast(I64, piv[b, r.var]).ne(r.var + _ci(1))
            return K.reduce("prod", K.select(swapped, -s, s), [r])

        ctx.compute(sign, sign_of, "la_det_sign")
        r2 = K.reduce_axis(n, "d")
        ctx.compute(logdet, lambda b: K.reduce(
            "sum", K.call("log", K.abs_(lu[b, r2.var, r2.var])), [r2]), "la_logabsdet")


@simple("_linalg_det", aliases=("linalg_det",))
class LinalgDet(_DetBase):
    n_visible = 1

    def lower(self, ctx):
        A, lu, piv = self._factor(ctx)
        nb = A.shape[0]
        det = _view(ctx.outputs[0], (nb,))
        sign = ctx.temp((nb,), det.dtype.name)
        self._sign_logdet(ctx, A, lu, piv, sign, det)
        if nb:   # det = sign * exp(log|det|), as MXNet computes it
            ctx.compute(det, lambda b: sign[b] * K.call("exp", det[b]), "la_det")

    def reference(self, a, inputs, is_train=False):
        A = inputs[0]
        d = np.linalg.det(A.astype(np.float64)).reshape(_det_shape(A.shape)).astype(A.dtype)
        return [d]

    def gradient(self, node, ograds):
        return [g("_backward_linalg_det", ograds[0], Entry(node, 0), Entry(node, 1),
                  Entry(node, 2), name=f"{node.name}_backward")]


@simple("_linalg_slogdet", aliases=("linalg_slogdet",))
class LinalgSlogdet(_DetBase):
    n_visible = 2

    def lower(self, ctx):
        A, lu, piv = self._factor(ctx)
        nb = A.shape[0]
        sign, logdet = (_view(o, (nb,)) for o in ctx.outputs[:2])
        self._sign_logdet(ctx, A, lu, piv, sign, logdet)

    def reference(self, a, inputs, is_train=False):
        A = inputs[0]
        s, l = np.linalg.slogdet(A.astype(np.float64))
        shp = _det_shape(A.shape)
        return [np.reshape(s, shp).astype(A.dtype), np.reshape(l, shp).astype(A.dtype)]

    def gradient(self, node, ograds):
        # the sign has no gradient (MXNet passes none back)
        return [g("_backward_linalg_slogdet", ograds[1], Entry(node, 1), Entry(node, 2),
                  Entry(node, 3), name=f"{node.name}_backward")]


class _DetBackward(_LaBackward):
    """dA = scale * A^-T with A^-1 rebuilt from the LU factors; zero where det(A) = 0
    (MXNet's StopZeroDetGrad). ``scale`` is ddet*det (det) or dlogabsdet (slogdet)."""

    like = 2

    def arguments(self, a):
        return ["ograd", "value", "LU", "pivot"]

    def infer_type(self, a, t):
        k = _float_types(self.name, t[:3])
        return [k, k, k, "int32"], [k]

    def lower(self, ctx):
        dv, val, lu_ref, piv_ref = ctx.inputs
        lu = _mats(lu_ref)
        nb = lu.shape[0]
        out = _mats(ctx.outputs[0])
        if out.size == 0:
            return
        dv, val = _view(dv, (nb,)), _view(val, (nb,))
        inv = ctx.temp(lu.shape, lu.dtype.name)
        _lu_inverse(ctx, lu, _vecs(piv_ref), inv)
        dt = out.dtype
        zero_at = self.zero_value(dt)

        def body(b, r, c):
            g_ = self.scale(dv[b], val[b]) * inv[b, c, r]
            return K.select(val[b].eq(zero_at), C(0, dt), g_)

        ctx.compute(out, body, "la_det_grad")


@simple("_backward_linalg_det", fusion="complex")
class BackwardLinalgDet(_DetBackward):
    def zero_value(self, dt):
        return C(0, dt)

    def scale(self, ddet, det):
        return ddet * det


@simple("_backward_linalg_slogdet", fusion="complex")
class BackwardLinalgSlogdet(_DetBackward):
    def zero_value(self, dt):
        return C(float("-inf"), dt)

    def scale(self, dlog, logdet):
        return dlog


# ---------------------------------------------------------------------------------------------
# gelqf: LQ factorization by Householder reflections (LAPACK gelqf + orglq conventions)
# ---------------------------------------------------------------------------------------------
def _householder_lq(ctx, A: K.TensorRef, R: K.TensorRef, tau: K.TensorRef) -> None:
    """Reduce each row i of R (a copy of A, m x n, m <= n) with a reflector H_i acting on
    columns i.., as LAPACK's gelq2/larfg: beta = -sign(alpha) * ||(alpha, x)||, the vector v
    (v_i = 1) is stored right of the diagonal and tau_i = (beta - alpha) / beta; a row that is
    already reduced (x = 0) gets tau = 0."""
    nb, m, n = A.shape
    _copy(ctx, R, A)
    dt = R.dtype
    zero, one = C(0, dt), C(1, dt)

    def build(b):
        acc, alpha, beta, tl, sc, w = (_local(h, dt) for h in ("acc", "al", "be", "tau",
                                                                "sc", "w"))

        def row(i):
            rest = _ci(n - 1) - i
            done = acc.eq(zero)
            stmts = [K.Assign(acc, zero),
                     _loop(rest, lambda j: [K.Assign(acc, acc + R[b, i, j] * R[b, i, j])],
                           i + _ci(1)),
                     K.Assign(alpha, R[b, i, i]),
                     K.Assign(beta, K.sqrt(alpha * alpha + acc)),
                     K.Assign(beta, K.select(alpha.ge(zero), -beta, beta)),
                     K.Assign(tl, K.select(done, zero, (beta - alpha) / beta)),
                     K.Assign(sc, K.select(done, one, one / (alpha - beta))),
                     K.Assign(beta, K.select(done, alpha, beta)),
                     _loop(rest, lambda j: [_store(R, (b, i, j), R[b, i, j] * sc)], i + _ci(1)),
                     _store(R, (b, i, i), beta),
                     _store(tau, (b, i), tl)]

            def apply(r):   # row r of R times H_i
                return [K.Assign(w, R[b, r, i]),
                        _loop(rest, lambda j: [K.Assign(w, w + R[b, r, j] * R[b, i, j])],
                              i + _ci(1)),
                        K.Assign(w, w * tl),
                        _store(R, (b, r, i), R[b, r, i] - w),
                        _loop(rest, lambda j: [_store(R, (b, r, j), R[b, r, j] - w * R[b, i, j])],
                              i + _ci(1))]

            return stmts + [_loop(_ci(m - 1) - i, apply, i + _ci(1))]

        return [_loop(m, row)]

    _emit_per_matrix(ctx, nb, build, "la_gelqf", cost=nb * m * m * n * 2)


def _form_q(ctx, R: K.TensorRef, tau: K.TensorRef, Q: K.TensorRef) -> None:
    """Q = [I 0] H_{m-1} ... H_0 (LAPACK orglq): the first m rows of the product."""
    nb, m, n = Q.shape
    ctx.compute(Q, lambda b, r, c: K.select(r.eq(c), C(1, Q.dtype), C(0, Q.dtype)), "la_eye")
    dt = Q.dtype

    def build(b):
        w = _local("w", dt)

        def reflector(ii):
            i = _ci(m - 1) - ii
            rest = _ci(n - 1) - i

            def apply(q):
                return [K.Assign(w, Q[b, q, i]),
                        _loop(rest, lambda j: [K.Assign(w, w + Q[b, q, j] * R[b, i, j])],
                              i + _ci(1)),
                        K.Assign(w, w * tau[b, i]),
                        _store(Q, (b, q, i), Q[b, q, i] - w),
                        _loop(rest, lambda j: [_store(Q, (b, q, j), Q[b, q, j] - w * R[b, i, j])],
                              i + _ci(1))]

            return [_loop(m, apply)]

        return [_loop(m, reflector)]

    _emit_per_matrix(ctx, nb, build, "la_orglq", cost=nb * m * m * n * 2)


@simple("_linalg_gelqf", aliases=("linalg_gelqf",))
class LinalgGelqf(_LaOp):
    def outputs(self, a):
        return ["Q", "L"]

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None, None]
        _need_matrices(self.name, x)
        if x[-2] > x[-1]:
            raise ShapeError(f"{self.name}: input A shape {tuple(x)} is wrong: the last "
                             f"dimension must be >= the second to last")
        return s, [tuple(x), tuple(x[:-1]) + (x[-2],)]

    def lower(self, ctx):
        A = _mats(ctx.inputs[0])
        Q, L = (_mats(o) for o in ctx.outputs)
        nb, m, _ = A.shape
        if A.size == 0:
            _fill(ctx, L)
            return
        R = ctx.temp(A.shape, A.dtype.name)
        tau = ctx.temp((nb, m), A.dtype.name)
        _householder_lq(ctx, A, R, tau)
        ctx.compute(L, lambda b, r, c: K.select(r.ge(c), R[b, r, c], C(0, L.dtype)), "la_lq_l")
        _form_q(ctx, R, tau, Q)

    def reference(self, a, inputs, is_train=False):
        A = inputs[0].astype(np.float64)
        q, r = np.linalg.qr(np.swapaxes(A, -1, -2))   # A^T = q r (LAPACK geqrf == gelqf of A)
        return [np.swapaxes(q, -1, -2).astype(inputs[0].dtype),
                np.swapaxes(r, -1, -2).astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_linalg_gelqf", ograds[0], ograds[1], Entry(node, 0),
                  Entry(node, 1), name=f"{node.name}_backward")]


@simple("_backward_linalg_gelqf", fusion="complex")
class BackwardLinalgGelqf(_LaBackward):
    """dA = L^-T (dQ + copyLTU(M) Q), M = L^T dL - dQ Q^T (la_op-inl.h gelqf_backward)."""

    like = 2

    def arguments(self, a):
        return ["dQ", "dL", "Q", "L"]

    def lower(self, ctx):
        dQ, dL, Q, L = (_mats(r) for r in ctx.inputs)
        out = _mats(ctx.outputs[0])
        if out.size == 0:
            return
        dt = out.dtype.name
        m = ctx.temp(dL.shape, dt)
        _mm(ctx, L, dL, m, tx=True)
        _mm(ctx, dQ, Q, m, ty=True, alpha=-1.0, beta=1.0)
        sym = ctx.temp(dL.shape, dt)
        _symmetrize(ctx, sym, m, from_lower=True)
        _copy(ctx, out, dQ)
        _mm(ctx, sym, Q, out, beta=1.0)
        _trsm(ctx, L, out, rightside=False, lower=True, transpose=True)


# ---------------------------------------------------------------------------------------------
# syevd: symmetric eigen-decomposition by cyclic Jacobi rotations
# ---------------------------------------------------------------------------------------------
def _jacobi_sweeps(n: int) -> int:
    """Cyclic Jacobi converges quadratically; this many sweeps reach rounding level for the
    sizes these ops see (a fixed count: generated code has no data-dependent loop exit)."""
    return 10 + max(n, 1).bit_length()


def _jacobi_eigen(ctx, A: K.TensorRef, U: K.TensorRef, lam: K.TensorRef) -> None:
    """U rows = eigenvectors, lam = eigenvalues ascending, of the symmetric matrices whose
    lower triangles are in A. Rotations act on a symmetrized copy W; U accumulates V^T."""
    nb, n, _ = A.shape
    dt = U.dtype
    W = ctx.temp(A.shape, dt.name)
    _symmetrize(ctx, W, A, from_lower=True)
    ctx.compute(U, lambda b, r, c: K.select(r.eq(c), C(1, dt), C(0, dt)), "la_eye")
    zero, one, two = C(0, dt), C(1, dt), C(2, dt)
    sweeps = _jacobi_sweeps(n)

    def build(b):
        th, t, c, s, x, y = (_local(h, dt) for h in ("th", "t", "c", "s", "x", "y"))
        p_, best = _local("p", I64), _local("best", dt)

        def rotate(p, q):
            apq = W[b, p, q]
            cols = _loop(n, lambda k: [K.Assign(x, W[b, k, p]), K.Assign(y, W[b, k, q]),
                                       _store(W, (b, k, p), c * x - s * y),
                                       _store(W, (b, k, q), s * x + c * y)])
            rows = _loop(n, lambda k: [K.Assign(x, W[b, p, k]), K.Assign(y, W[b, q, k]),
                                       _store(W, (b, p, k), c * x - s * y),
                                       _store(W, (b, q, k), s * x + c * y)])
            vecs = _loop(n, lambda k: [K.Assign(x, U[b, p, k]), K.Assign(y, U[b, q, k]),
                                       _store(U, (b, p, k), c * x - s * y),
                                       _store(U, (b, q, k), s * x + c * y)])
            # t = tan of the angle zeroing W[p, q] (the smaller root, for stability)
            return [K.If(apq.ne(zero), [
                K.Assign(th, (W[b, q, q] - W[b, p, p]) / (two * apq)),
                K.Assign(t, one / (K.abs_(th) + K.sqrt(th * th + one))),
                K.Assign(t, K.select(th.lt(zero), -t, t)),
                K.Assign(c, one / K.sqrt(t * t + one)),
                K.Assign(s, t * c), cols, rows, vecs])]

        sweep = _loop(sweeps, lambda _s: [_loop(n, lambda p: [
            _loop(_ci(n - 1) - p, lambda q: rotate(p, q), p + _ci(1))])])
        take = _loop(n, lambda i: [_store(lam, (b, i), W[b, i, i])])

        def select_min(i):   # selection sort, ascending, rows of U follow their eigenvalue
            return [K.Assign(p_, i), K.Assign(best, lam[b, i]),
                    _loop(_ci(n - 1) - i, lambda j: [K.If(lam[b, j].lt(best), [
                        K.Assign(best, lam[b, j]), K.Assign(p_, j)])], i + _ci(1)),
                    _store(lam, (b, p_), lam[b, i]), _store(lam, (b, i), best),
                    _loop(n, lambda k: [K.Assign(x, U[b, i, k]),
                                        _store(U, (b, i, k), U[b, p_, k]),
                                        _store(U, (b, p_, k), x)])]

        def fix_sign(i):     # MXNet's SyevdEigenVecSigns: the largest |entry| is positive
            return [K.Assign(p_, _ci(0)), K.Assign(best, K.abs_(U[b, i, 0])),
                    _loop(n - 1, lambda j: [K.If(K.abs_(U[b, i, j]).gt(best), [
                        K.Assign(best, K.abs_(U[b, i, j])), K.Assign(p_, j)])], 1),
                    K.If(U[b, i, p_].lt(zero), [
                        _loop(n, lambda k: [_store(U, (b, i, k), -U[b, i, k])])])]

        return [sweep, take, _loop(n, select_min), _loop(n, fix_sign)]

    _emit_per_matrix(ctx, nb, build, "la_syevd", cost=nb * sweeps * n * n * n * 6)


@simple("_linalg_syevd")
class LinalgSyevd(_LaOp):
    def outputs(self, a):
        return ["U", "L"]

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None, None]
        _need_matrices(self.name, x, square=True)
        return s, [tuple(x), tuple(x[:-1])]

    def lower(self, ctx):
        A, U = _mats(ctx.inputs[0]), _mats(ctx.outputs[0])
        lam = _view(ctx.outputs[1], U.shape[:2])
        if A.size:
            _jacobi_eigen(ctx, A, U, lam)

    def reference(self, a, inputs, is_train=False):
        A = inputs[0].astype(np.float64)
        lam, V = np.linalg.eigh(A, "L")
        U = np.swapaxes(V, -1, -2).copy()
        idx = np.argmax(np.abs(U), axis=-1)[..., None]
        flip = np.take_along_axis(U, idx, -1) < 0
        U = np.where(flip, -U, U)
        return [U.astype(inputs[0].dtype), lam.astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_linalg_syevd", ograds[0], ograds[1], Entry(node, 0),
                  Entry(node, 1), name=f"{node.name}_backward")]


@simple("_backward_linalg_syevd", fusion="complex")
class BackwardLinalgSyevd(_LaBackward):
    """dA = U^T Y U with X = dU U^T, Y_ij = (X_ij - X_ji) / (2 max(l_i - l_j, eps)) for
    i > j (mirrored), Y_ii = dl_i (la_op-inl.h syevd_backward / SyevdBackHelper)."""

    like = 2

    def arguments(self, a):
        return ["dU", "dL", "U", "L"]

    def lower(self, ctx):
        dU, U = _mats(ctx.inputs[0]), _mats(ctx.inputs[2])
        nb, n, _ = U.shape
        dL, lam = (_view(r, (nb, n)) for r in (ctx.inputs[1], ctx.inputs[3]))
        out = _mats(ctx.outputs[0])
        if out.size == 0:
            return
        dt = out.dtype
        X = ctx.temp(U.shape, dt.name)
        _mm(ctx, dU, U, X, ty=True)
        eps = C(1e-100 if dt.name == "float64" else 1e-30, dt)

        def y(b, r, c):
            lo, hi = K.maximum(r, c), K.minimum(r, c)
            denom = K.maximum(lam[b, lo] - lam[b, hi], eps) * C(2, dt)
            return K.select(r.eq(c), dL[b, r], (X[b, lo, hi] - X[b, hi, lo]) / denom)

        Y = ctx.temp(U.shape, dt.name)
        ctx.compute(Y, y, "la_syevd_helper")
        _mm(ctx, U, Y, X, tx=True)
        _mm(ctx, X, U, out)
