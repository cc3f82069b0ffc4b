"""Indexing operators: take, Embedding, one_hot, pick, gather_nd, scatter_nd, batch_take and
SequenceMask (MXNet 1.x ``src/operator/tensor/indexing_op.{h,cc}``,
``broadcast_reduce_op.h`` for pick, ``sequence_mask-inl.h``).

Indices arrive as float arrays in MXNet 1.x (any dtype is accepted); kernels convert them to
integers by truncation toward zero (C's ``static_cast``) and clamp (or wrap) them before any
load, so no out-of-range index ever reaches memory.

``take`` with ``mode='raise'``: compiled code cannot raise at run time, so out-of-range indices
are clipped exactly like ``mode='clip'`` (MXNet raises an error on CPU).

Gradients that scatter (take, Embedding, gather_nd) use a deterministic kernel: every task owns
a column chunk of the gradient and walks the indices in order, summing repeated indices in
index order like MXNet's AddTakeGrad — no atomics.
"""
from __future__ import annotations

import numpy as np

from ...base import ShapeError
from .. import kernel as K
from ..dtypes import as_dtype
from ..params import (
    Param,
    ParamSpec,
    enum,
    optional,
    parse_bool,
    parse_dtype_name,
    parse_float,
    parse_int,
    parse_shape,
)
from ..registry import OpDef, simple
from .common import flat, g
from .shape import _ci, _norm_axis, _prod, scatter_add

C = K.const
I64 = "int64"


# =============================================================================================
# index conversion
# =============================================================================================
def to_int(e: K.Expr) -> K.Expr:
    """static_cast<int64>(e): truncation toward zero; floats are clamped first (NaN -> min)
    so the conversion is always defined."""
    if e.dtype.kind == "f":
        v = K.cast("float64", e)
        v = K.minimum(K.maximum(v, C(-4.0e18, "float64")), C(4.0e18, "float64"))
        return K.cast(I64, v)
    return K.cast(I64, e)


def index_expr(e: K.Expr, n: int, mode: str = "clip") -> K.Expr:
    """An int64 index in [0, n) from index value ``e`` (clip or wrap, as MXNet's take)."""
    n = max(int(n), 1)
    if mode == "wrap":
        i = to_int(e)
        r = i % _ci(n)
        return K.select(r.lt(_ci(0)), r + _ci(n), r)
    if e.dtype.kind == "f":
        v = K.cast("float64", e)
        v = K.minimum(K.maximum(v, C(0.0, "float64")), C(float(n - 1), "float64"))
        return K.cast(I64, v)
    return K.minimum(K.maximum(to_int(e), _ci(0)), _ci(n - 1))


def np_index(idx: np.ndarray, n: int, mode: str = "clip") -> np.ndarray:
    i = np.trunc(idx.astype(np.float64)) if idx.dtype.kind == "f" else idx.astype(np.int64)
    i = i.astype(np.int64)
    if mode == "wrap":
        return np.mod(i, max(n, 1))
    return np.clip(i, 0, max(n - 1, 0))


def _ref_flat(ref: K.TensorRef, shape) -> K.TensorRef:
    return K.TensorRef(ref.buf, tuple(int(s) for s in shape), None, ref.offset)


class _IndexOp(OpDef):
    fusion = "injective"

    def infer_type(self, a, t):
        return t, [t[0]]


# =============================================================================================
# take
# =============================================================================================
_TAKE = ParamSpec(axis=Param(parse_int, 0), mode=Param(enum("clip", "wrap", "raise"), "clip"))


def _take_mode(a) -> str:
    return "wrap" if a.mode == "wrap" else "clip"   # 'raise' behaves like 'clip' (see above)


def _take_shape(a, ash, ish):
    if len(ash) == 0:
        raise ShapeError("take: the data array must have at least 1 dimension")
    ax = _norm_axis(a.axis, len(ash), "take")
    return ax, tuple(ash[:ax]) + tuple(ish) + tuple(ash[ax + 1:])


@simple("take", params=_TAKE)
class Take(_IndexOp):
    def arguments(self, a):
        return ["a", "indices"]

    def infer_shape(self, a, s):
        if s[0] is None or s[1] is None:
            return s, [None]
        return s, [_take_shape(a, s[0], s[1])[1]]

    def lower(self, ctx):
        a = ctx.attrs
        x, idx = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        ax, _ = _take_shape(a, x.shape, idx.shape)
        n = x.shape[ax]
        if n == 0:
            ctx.compute(o, lambda *i: C(0, o.dtype), "take_empty")
            return
        ni = idx.ndim
        mode = _take_mode(a)

        def f(*i):
            pre, mid, post = i[:ax], i[ax:ax + ni], i[ax + ni:]
            j = index_expr(idx[tuple(mid)], n, mode)
            return x[tuple(pre) + (j,) + tuple(post)]

        ctx.compute(o, f, "take")

    def reference(self, a, inputs, is_train=False):
        x, idx = inputs
        ax, o = _take_shape(a, x.shape, idx.shape)
        if x.shape[ax] == 0:
            return [np.zeros(o, x.dtype)]
        return [np.take(x, np_index(idx, x.shape[ax], _take_mode(a)), axis=ax)]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_take", ograds[0], node.inputs[1], node.inputs[0], axis=a.axis,
                  mode=a.mode, name=f"{node.name}_backward"), None]


@simple("_backward_take", params=_TAKE, differentiable=False)
class BackwardTake(_IndexOp):
    """Gradient of take w.r.t. ``a``: ograd scatter-added into the taken positions."""

    def arguments(self, a):
        return ["ograd", "indices", "a"]

    def infer_shape(self, a, s):
        return s, [s[2]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, idx, x = ctx.inputs
        o = ctx.outputs[0]
        ax, _ = _take_shape(a, x.shape, idx.shape)
        P, N, Q = _prod(x.shape[:ax]), x.shape[ax], _prod(x.shape[ax + 1:])
        Kn = idx.size
        dst = _ref_flat(o, (P, N, Q))
        src = _ref_flat(dy, (P, Kn, Q))
        fi = _ref_flat(idx, (max(Kn, 1),))
        mode = _take_mode(a)
        scatter_add(ctx, dst, src, lambda k: index_expr(fi[k], N, mode), "take_backward")

    def reference(self, a, inputs, is_train=False):
        dy, idx, x = inputs
        ax, _ = _take_shape(a, x.shape, idx.shape)
        N = x.shape[ax]
        out = np.zeros(x.shape, np.float64)
        j = np_index(idx, N, _take_mode(a)).reshape(-1)
        P, Q = _prod(x.shape[:ax]), _prod(x.shape[ax + 1:])
        o3 = out.reshape(P, N, Q)
        d3 = dy.reshape(P, j.size, Q)
        for k, r in enumerate(j):
            o3[:, r, :] += d3[:, k, :]
        return [out.astype(dy.dtype)]


# =============================================================================================
# batch_take
# =============================================================================================
def _batch_take_check(ash, ish):
    if len(ash) == 0:
        raise ShapeError("batch_take: the data array must have at least 1 dimension")
    M = ash[-1]
    if M and _prod(ash) // M != _prod(ish):
        raise ShapeError(f"batch_take: data {tuple(ash)} has {_prod(ash) // M} rows but "
                         f"indices {tuple(ish)} have {_prod(ish)} entries")
    return M


@simple("batch_take")
class BatchTake(_IndexOp):
    def arguments(self, a):
        return ["a", "indices"]

    def infer_shape(self, a, s):
        if s[0] is None or s[1] is None:
            return s, [s[1]]
        _batch_take_check(s[0], s[1])
        return s, [tuple(s[1])]

    def lower(self, ctx):
        x, idx = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        M = _batch_take_check(x.shape, idx.shape)
        of = flat(o)
        if M == 0:
            ctx.compute(of, lambda i: C(0, o.dtype), "batch_take")
            return
        x2 = _ref_flat(x, (o.size, M))
        fi = flat(idx)
        ctx.compute(of, lambda i: x2[i, index_expr(fi[i], M)], "batch_take")

    def reference(self, a, inputs, is_train=False):
        x, idx = inputs
        M = x.shape[-1]
        x2 = x.reshape(-1, M)
        j = np_index(idx, M).reshape(-1)
        return [x2[np.arange(j.size), j].reshape(idx.shape)]

    def gradient(self, node, ograds):
        return [g("_backward_batch_take", ograds[0], node.inputs[1], node.inputs[0],
                  name=f"{node.name}_backward"), None]


@simple("_backward_batch_take", differentiable=False)
class BackwardBatchTake(_IndexOp):
    def arguments(self, a):
        return ["ograd", "indices", "a"]

    def infer_shape(self, a, s):
        return s, [s[2]]

    def lower(self, ctx):
        dy, idx, x = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        M = x.shape[-1]
        R = o.size // M
        o2 = _ref_flat(o, (R, M))
        fd, fi = flat(dy), flat(idx)
        ctx.compute(o2, lambda i, j: K.select(j.eq(index_expr(fi[i], M)), fd[i],
                                              C(0, o.dtype)), "batch_take_backward")

    def reference(self, a, inputs, is_train=False):
        dy, idx, x = inputs
        M = x.shape[-1]
        out = np.zeros((x.size // M, M), dy.dtype)
        j = np_index(idx, M).reshape(-1)
        out[np.arange(j.size), j] = dy.reshape(-1)
        return [out.reshape(x.shape)]


# =============================================================================================
# Embedding
# =============================================================================================
_EMB = ParamSpec(input_dim=Param(parse_int), output_dim=Param(parse_int),
                 dtype=Param(parse_dtype_name, "float32"), sparse_grad=Param(parse_bool, False))


@simple("Embedding", params=_EMB)
class Embedding(OpDef):
    fusion = "injective"

    def arguments(self, a):
        return ["data", "weight"]

    def infer_shape(self, a, s):
        if a.input_dim <= 0 or a.output_dim <= 0:
            raise ShapeError(f"Embedding: input_dim ({a.input_dim}) and output_dim "
                             f"({a.output_dim}) must be positive")
        w = (a.input_dim, a.output_dim)
        if s[1] is not None and tuple(s[1]) != w:
            raise ShapeError(f"Embedding: weight must have shape {w} (input_dim, output_dim), "
                             f"got {tuple(s[1])}")
        o = None if s[0] is None else tuple(s[0]) + (a.output_dim,)
        return [s[0], w], [o]

    def infer_type(self, a, t):
        w = t[1] if t[1] is not None else a.dtype
        return [t[0], w], [w]

    def lower(self, ctx):
        a = ctx.attrs
        idx, w = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        fi = flat(idx)
        o2 = _ref_flat(o, (idx.size, a.output_dim))
        ctx.compute(o2, lambda i, j: w[index_expr(fi[i], a.input_dim), j], "embedding")

    def reference(self, a, inputs, is_train=False):
        idx, w = inputs
        return [w[np_index(idx, a.input_dim)]]

    def gradient(self, node, ograds):
        a = node.parsed
        return [None, g("_backward_Embedding", ograds[0], node.inputs[0],
                        input_dim=a.input_dim, output_dim=a.output_dim, dtype=a.dtype,
                        sparse_grad=a.sparse_grad, name=f"{node.name}_backward")]


@simple("_backward_Embedding", params=_EMB, differentiable=False)
class BackwardEmbedding(OpDef):
    """dweight[r] = sum of the ograd rows whose index is r, in index order (AddTakeGrad)."""

    fusion = "opaque"

    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        return s, [(a.input_dim, a.output_dim)]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, idx = ctx.inputs
        o = ctx.outputs[0]
        Kn = idx.size
        dst = _ref_flat(o, (1, a.input_dim, a.output_dim))
        src = _ref_flat(dy, (1, Kn, a.output_dim))
        fi = _ref_flat(idx, (max(Kn, 1),))
        scatter_add(ctx, dst, src, lambda k: index_expr(fi[k], a.input_dim),
                    "embedding_backward")

    def reference(self, a, inputs, is_train=False):
        dy, idx = inputs
        out = np.zeros((a.input_dim, a.output_dim), np.float64)
        j = np_index(idx, a.input_dim).reshape(-1)
        d2 = dy.reshape(-1, a.output_dim)
        for k, r in enumerate(j):
            out[r] += d2[k]
        return [out.astype(dy.dtype)]


# =============================================================================================
# one_hot
# =============================================================================================
@simple("one_hot",
        params=ParamSpec(depth=Param(parse_int), on_value=Param(parse_float, 1.0),
                         off_value=Param(parse_float, 0.0),
                         dtype=Param(parse_dtype_name, "float32")))
class OneHot(OpDef):
    fusion = "injective"

    def arguments(self, a):
        return ["indices"]

    def infer_shape(self, a, s):
        if a.depth < 0:
            raise ShapeError(f"one_hot: depth must be non-negative, got {a.depth}")
        return s, [None if s[0] is None else tuple(s[0]) + (a.depth,)]

    def infer_type(self, a, t):
        return t, [a.dtype]

    def lower(self, ctx):
        a = ctx.attrs
        idx = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        fi = flat(idx)
        o2 = _ref_flat(o, (idx.size, a.depth))
        on, off = C(a.on_value, o.dtype), C(a.off_value, o.dtype)
        ctx.compute(o2, lambda i, j: K.select(to_int(fi[i]).eq(j), on, off), "one_hot")

    def reference(self, a, inputs, is_train=False):
        idx = inputs[0]
        i = np.trunc(idx.astype(np.float64)).astype(np.int64)
        out = np.where(i[..., None] == np.arange(a.depth), a.on_value, a.off_value)
        return [out.astype(as_dtype(a.dtype).np)]

    def gradient(self, node, ograds):
        return [None]


# =============================================================================================
# pick
# =============================================================================================
_PICK = ParamSpec(axis=Param(optional(parse_int), -1), keepdims=Param(parse_bool, False),
                  mode=Param(enum("clip", "wrap"), "clip"))


def _pick_shapes(a, d, op="pick"):
    if a.axis is None:
        raise ShapeError(f"{op}: axis=None is not supported by pick yet. Must specify an axis.")
    if len(d) == 0:
        raise ShapeError(f"{op}: data must have at least 1 dimension")
    ax = _norm_axis(a.axis, len(d), op)
    keep = tuple(1 if i == ax else v for i, v in enumerate(d))
    red = tuple(v for i, v in enumerate(d) if i != ax)
    return ax, keep, red


@simple("pick", params=_PICK)
class Pick(_IndexOp):
    def arguments(self, a):
        return ["data", "index"]

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        _ax, keep, red = _pick_shapes(a, s[0])
        idx = s[1]
        if idx is None:
            idx = red
        elif tuple(idx) not in (keep, red) or (len(idx) == len(s[0]) and tuple(idx) != keep):
            raise ShapeError(f"pick: index shape {tuple(idx)} must be {red} (or {keep}) for "
                             f"data {tuple(s[0])} and axis {a.axis}")
        return [s[0], tuple(idx)], [keep if a.keepdims else red]

    def lower(self, ctx):
        a = ctx.attrs
        x, idx = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        ax, keep, _red = _pick_shapes(a, x.shape)
        n = x.shape[ax]
        iv = _ref_flat(idx, keep)
        ov = _ref_flat(o, keep)

        def f(*i):
            if n == 0:
                return C(0, o.dtype)
            j = index_expr(iv[i], n, a.mode)
            return x[tuple(j if d == ax else v for d, v in enumerate(i))]

        ctx.compute(ov, f, "pick")

    def reference(self, a, inputs, is_train=False):
        x, idx = inputs
        ax, keep, red = _pick_shapes(a, x.shape)
        j = np_index(idx, x.shape[ax], a.mode).reshape(keep)
        out = np.take_along_axis(x, j, axis=ax)
        return [out if a.keepdims else out.reshape(red)]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_pick", ograds[0], node.inputs[1], node.inputs[0], axis=a.axis,
                  keepdims=a.keepdims, mode=a.mode, name=f"{node.name}_backward"), None]


@simple("_backward_pick", params=_PICK, differentiable=False)
class BackwardPick(_IndexOp):
    def arguments(self, a):
        return ["ograd", "index", "data"]

    def infer_shape(self, a, s):
        return s, [s[2]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, idx, x = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        ax, keep, _red = _pick_shapes(a, x.shape)
        n = x.shape[ax]
        iv = _ref_flat(idx, keep)
        dv = _ref_flat(dy, keep)

        def f(*i):
            k = tuple(_ci(0) if d == ax else v for d, v in enumerate(i))
            return K.select(i[ax].eq(index_expr(iv[k], n, a.mode)), dv[k], C(0, o.dtype))

        ctx.compute(o, f, "pick_backward")

    def reference(self, a, inputs, is_train=False):
        dy, idx, x = inputs
        ax, keep, _red = _pick_shapes(a, x.shape)
        j = np_index(idx, x.shape[ax], a.mode).reshape(keep)
        out = np.zeros(x.shape, dy.dtype)
        np.put_along_axis(out, j, dy.reshape(keep), axis=ax)
        return [out]


# =============================================================================================
# gather_nd / scatter_nd
# =============================================================================================
def _gather_shape(dsh, ish, op="gather_nd"):
    if len(ish) < 1:
        raise ShapeError(f"{op}: indices must have at least 1 dimension, got {tuple(ish)}")
    M = ish[0]
    if M > len(dsh):
        raise ShapeError(f"{op}: number of indices {M} exceeds data dimension {len(dsh)} "
                         f"(data {tuple(dsh)}, indices {tuple(ish)})")
    if M > 10:
        raise ShapeError(f"{op}: supports indexing along at most 10 dimensions")
    return M, tuple(ish[1:]) + tuple(dsh[M:])


def _nd_index(e: K.Expr, m: int) -> K.Expr:
    """MXNet's gather_nd index: (int)(idx + m) % m, kept in [0, m)."""
    if e.dtype.kind == "f":
        v = to_int(K.cast("float64", e) + C(float(m), "float64"))
    else:
        v = to_int(e) + _ci(m)
    r = v % _ci(max(m, 1))
    r = K.select(r.lt(_ci(0)), r + _ci(m), r)
    return K.minimum(K.maximum(r, _ci(0)), _ci(max(m - 1, 0)))


def _np_nd_index(idx, m):
    if idx.dtype.kind == "f":
        v = np.trunc(idx.astype(np.float64) + m).astype(np.int64)
    else:
        v = idx.astype(np.int64) + m
    return np.clip(np.mod(v, max(m, 1)), 0, max(m - 1, 0))


def _nd_offset(idx_ref: K.TensorRef, dshape, M: int, y) -> K.Expr:
    """Flat offset into the first M dims of data for index column ``y`` (a flat position)."""
    strides = []
    acc = 1
    for d in reversed(dshape[:M]):
        strides.append(acc)
        acc *= d
    strides = list(reversed(strides))
    off = _ci(0)
    for j in range(M):
        off = off + _nd_index(idx_ref[_ci(j), y], dshape[j]) * _ci(strides[j])
    return off


@simple("gather_nd")
class GatherND(_IndexOp):
    def arguments(self, a):
        return ["data", "indices"]

    def infer_shape(self, a, s):
        if s[0] is None or s[1] is None:
            return s, [None]
        return s, [_gather_shape(s[0], s[1])[1]]

    def lower(self, ctx):
        x, idx = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        M, _ = _gather_shape(x.shape, idx.shape)
        N = _prod(idx.shape[1:])
        Kq = _prod(x.shape[M:])
        if _prod(x.shape[:M]) == 0:
            ctx.compute(o, lambda *i: C(0, o.dtype), "gather_nd_empty")
            return
        i2 = _ref_flat(idx, (M, N))
        x2 = _ref_flat(x, (_prod(x.shape[:M]), Kq))
        o2 = _ref_flat(o, (N, Kq))
        ctx.compute(o2, lambda y, q: x2[_nd_offset(i2, x.shape, M, y), q], "gather_nd")

    def reference(self, a, inputs, is_train=False):
        x, idx = inputs
        M = idx.shape[0]
        ii = tuple(_np_nd_index(idx[j], x.shape[j]) for j in range(M))
        return [x[ii].copy()]

    def gradient(self, node, ograds):
        return [g("_backward_gather_nd", ograds[0], node.inputs[1], node.inputs[0],
                  name=f"{node.name}_backward"), None]


@simple("_backward_gather_nd", differentiable=False)
class BackwardGatherND(_IndexOp):
    """Scatter-add of ograd into the gathered positions (sequential in index order)."""

    def arguments(self, a):
        return ["ograd", "indices", "data"]

    def infer_shape(self, a, s):
        return s, [s[2]]

    def lower(self, ctx):
        dy, idx, x = ctx.inputs
        o = ctx.outputs[0]
        M, _ = _gather_shape(x.shape, idx.shape)
        N = _prod(idx.shape[1:])
        Kq = _prod(x.shape[M:])
        R = _prod(x.shape[:M])
        i2 = _ref_flat(idx, (M, max(N, 1)))
        dst = _ref_flat(o, (1, R, Kq))
        src = _ref_flat(dy, (1, N, Kq))
        scatter_add(ctx, dst, src, lambda k: _nd_offset(i2, x.shape, M, k), "gather_nd_backward")

    def reference(self, a, inputs, is_train=False):
        dy, idx, x = inputs
        M = idx.shape[0]
        out = np.zeros(x.shape, np.float64)
        ii = tuple(_np_nd_index(idx[j], x.shape[j]) for j in range(M))
        np.add.at(out, ii, dy)
        return [out.astype(dy.dtype)]


@simple("scatter_nd", params=ParamSpec(shape=Param(parse_shape)))
class ScatterND(_IndexOp):
    def arguments(self, a):
        return ["data", "indices"]

    def infer_shape(self, a, s):
        shp = tuple(a.shape)
        if any(v is None or v < 0 for v in shp):
            raise ShapeError(f"scatter_nd: invalid shape {shp}")
        if s[1] is not None:
            _M, want = _gather_shape(shp, s[1], "scatter_nd")
            if s[0] is not None and tuple(s[0]) != want:
                raise ShapeError(f"scatter_nd: data must have shape {want} for indices "
                                 f"{tuple(s[1])} and shape {shp}, got {tuple(s[0])}")
            return [want, s[1]], [shp]
        return s, [shp]

    def lower(self, ctx):
        a = ctx.attrs
        x, idx = ctx.inputs
        o = ctx.outputs[0]
        shp = tuple(a.shape)
        M, _ = _gather_shape(shp, idx.shape, "scatter_nd")
        N = _prod(idx.shape[1:])
        Kq = _prod(shp[M:])
        R = _prod(shp[:M])
        i2 = _ref_flat(idx, (M, max(N, 1)))
        dst = _ref_flat(o, (1, R, Kq))
        src = _ref_flat(x, (1, N, Kq))
        scatter_add(ctx, dst, src, lambda k: _nd_offset(i2, shp, M, k), "scatter_nd",
                    assign=True)

    def reference(self, a, inputs, is_train=False):
        x, idx = inputs
        shp = tuple(a.shape)
        M = idx.shape[0]
        out = np.zeros(shp, x.dtype)
        ii = tuple(_np_nd_index(idx[j], shp[j]) for j in range(M))
        out[ii] = x
        return [out]

    def gradient(self, node, ograds):
        return [g("gather_nd", ograds[0], node.inputs[1], name=f"{node.name}_backward"), None]


# =============================================================================================
# SequenceMask
# =============================================================================================
_SEQ = ParamSpec(use_sequence_length=Param(parse_bool, False), value=Param(parse_float, 0.0),
                 axis=Param(parse_int, 0))


def _seq_check(a, d, ls, op="SequenceMask"):
    if a.axis not in (0, 1):
        raise ShapeError(f"{op}: axis must be 0 or 1, got {a.axis}")
    if len(d) < 2:
        raise ShapeError(f"{op}: data must have at least 2 dimensions, got {tuple(d)}")
    b = d[1 - a.axis]
    if ls is not None and tuple(ls) != (b,):
        raise ShapeError(f"{op}: sequence_length must have shape ({b},), got {tuple(ls)}")
    return (b,)


def _lower_seq_mask(ctx, a, data, lens, o, fill) -> None:
    if o.size == 0:
        return
    if lens is None:
        ctx.compute(o, lambda *i: data[i], "sequence_mask")
        return
    t_ax, b_ax = (0, 1) if a.axis == 0 else (1, 0)
    ctx.compute(o, lambda *i: K.select(i[t_ax].lt(to_int(lens[i[b_ax]])), data[i], fill),
                "sequence_mask")


@simple("SequenceMask", params=_SEQ)
class SequenceMask(_IndexOp):
    def arguments(self, a):
        return ["data", "sequence_length"] if a.use_sequence_length else ["data"]

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        b = _seq_check(a, s[0], s[1] if len(s) > 1 else None)
        if a.use_sequence_length:
            return [s[0], b], [s[0]]
        return s, [s[0]]

    def infer_type(self, a, t):
        if len(t) > 1:
            return [t[0], t[1] if t[1] is not None else t[0]], [t[0]]
        return t, [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        lens = ctx.inputs[1] if a.use_sequence_length else None
        o = ctx.outputs[0]
        _lower_seq_mask(ctx, a, ctx.inputs[0], lens, o, C(a.value, o.dtype))

    def reference(self, a, inputs, is_train=False):
        x = inputs[0].copy()
        if not a.use_sequence_length:
            return [x]
        lens = np.trunc(inputs[1].astype(np.float64)).astype(np.int64)
        T = x.shape[a.axis]
        for b, L in enumerate(lens):
            for t in range(max(L, 0), T):
                if a.axis == 0:
                    x[t, b] = a.value
                else:
                    x[b, t] = a.value
        return [x]

    def gradient(self, node, ograds):
        a = node.parsed
        if not a.use_sequence_length:
            return [ograds[0]]
        return [g("_backward_SequenceMask", ograds[0], node.inputs[1],
                  use_sequence_length=True, axis=a.axis, value=a.value,
                  name=f"{node.name}_backward"), None]


@simple("_backward_SequenceMask", params=_SEQ, differentiable=False)
class BackwardSequenceMask(_IndexOp):
    def arguments(self, a):
        return ["ograd", "sequence_length"]

    def infer_shape(self, a, s):
        return s, [s[0]]

    def lower(self, ctx):
        a = ctx.attrs
        o = ctx.outputs[0]
        _lower_seq_mask(ctx, a, ctx.inputs[0], ctx.inputs[1], o, C(0, o.dtype))

    def reference(self, a, inputs, is_train=False):
        dy, lens = inputs
        a2 = dict(a)
        a2["value"] = 0.0
        from ..params import Attrs
        return SequenceMask.reference(self, Attrs(a2), [dy, lens])



# =============================================================================================
# ravel_multi_index / unravel_index (MXNet src/operator/tensor/ravel.{h,cc})
# =============================================================================================
_RAVEL = ParamSpec(shape=Param(parse_shape))


def _ravel_target(a, op: str) -> tuple:
    shp = tuple(int(s) for s in a.shape)
    if not shp:
        raise ShapeError(f"{op}: shape must not be empty")
    if any(s <= 0 for s in shp[1:]) or shp[0] == 0 or shp[0] < -1:
        raise ShapeError(f"{op}: shape {shp} must be positive (-1 allowed as the first "
                         f"dimension only)")
    return shp


@simple("_ravel_multi_index", aliases=("ravel_multi_index",), params=_RAVEL)
class RavelMultiIndex(_IndexOp):
    """Flat indices of the multi-indices in the rows of ``data`` (ndim, ...), row-major in
    ``shape``; ``shape[0]`` may be -1 (it never enters the result). Indices are not
    bounds-checked (as MXNet); float values are truncated at each step like its kernel."""

    def infer_shape(self, a, s):
        shp = _ravel_target(a, "ravel_multi_index")
        d = s[0]
        if d is None:
            return s, [None]
        if len(d) < 1 or d[0] != len(shp):
            raise ShapeError(f"ravel_multi_index: data must have shape ({len(shp)}, ...) for "
                             f"shape {shp}, got {tuple(d)}")
        return s, [tuple(d[1:]) if len(d) > 1 else (1,)]

    def lower(self, ctx):
        shp = _ravel_target(ctx.attrs, "ravel_multi_index")
        x, o = ctx.inputs[0], ctx.outputs[0]
        n = o.size
        if n == 0:
            return
        xv = _ref_flat(x, (len(shp), n))
        ov = _ref_flat(o, (n,))

        def f(i):
            acc = to_int(xv[0, i])
            for j in range(1, len(shp)):
                if x.dtype.kind == "f":   # MXNet adds in the data's float type, truncates
                    acc = to_int(K.cast(x.dtype, acc * _ci(shp[j])) + xv[j, i])
                else:
                    acc = acc * _ci(shp[j]) + to_int(xv[j, i])
            return K.cast(o.dtype, acc)

        ctx.compute(ov, f, "ravel_multi_index")

    def reference(self, a, inputs, is_train=False):
        shp = _ravel_target(a, "ravel_multi_index")
        x = inputs[0].reshape(len(shp), -1)
        acc = np.trunc(x[0].astype(np.float64)).astype(np.int64)
        for j in range(1, len(shp)):
            if x.dtype.kind == "f":
                acc = np.trunc((acc * shp[j]).astype(x.dtype) + x[j]).astype(np.int64)
            else:
                acc = acc * shp[j] + x[j].astype(np.int64)
        out_shape = inputs[0].shape[1:] if inputs[0].ndim > 1 else (1,)
        return [acc.astype(inputs[0].dtype).reshape(out_shape)]

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0], name=f"{node.name}_backward")]


@simple("_unravel_index", aliases=("unravel_index",), params=_RAVEL)
class UnravelIndex(_IndexOp):
    """Multi-indices (ndim, ...) of the flat indices in ``data`` for ``shape``: the last
    coordinate varies fastest; each coordinate is ``idx - (idx / dim) * dim`` with C integer
    division (so the first coordinate wraps when out of range); ``shape[0] = -1`` leaves the
    first coordinate unbounded."""

    def infer_shape(self, a, s):
        shp = _ravel_target(a, "unravel_index")
        d = s[0]
        if d is None:
            return s, [None]
        return s, [(len(shp),) + tuple(d)]

    def lower(self, ctx):
        shp = _ravel_target(ctx.attrs, "unravel_index")
        x, o = ctx.inputs[0], ctx.outputs[0]
        n = x.size
        if n == 0:
            return
        xv = _ref_flat(x, (n,))
        ov = _ref_flat(o, (len(shp), n))

        def f(j, i):
            idx = to_int(xv[i])
            coords = []   # peeled from the last dimension, as MXNet's unravel_index kernel
            for d in range(len(shp) - 1, -1, -1):
                dim = shp[d]
                if d == 0 and dim == -1:
                    coords.append(idx)
                else:
                    q = idx // _ci(dim)
                    coords.append(idx - q * _ci(dim))
                    idx = q
            coords = coords[::-1]
            out = coords[-1]
            for d in range(len(shp) - 2, -1, -1):
                out = K.select(j.eq(_ci(d)), coords[d], out)
            return K.cast(o.dtype, out)

        ctx.compute(ov, f, "unravel_index")

    def reference(self, a, inputs, is_train=False):
        shp = _ravel_target(a, "unravel_index")
        x = inputs[0]
        idx = np.trunc(x.astype(np.float64)).astype(np.int64).reshape(-1)
        coords = []
        for d in range(len(shp) - 1, -1, -1):
            dim = shp[d]
            if d == 0 and dim == -1:
                coords.append(idx)
            else:
                q = np.fix(idx / dim).astype(np.int64)   # C division truncates toward zero
                coords.append(idx - q * dim)
                idx = q
        out = np.stack(coords[::-1]).astype(x.dtype)
        return [out.reshape((len(shp),) + x.shape)]

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0], name=f"{node.name}_backward")]


__all__ = ["index_expr", "np_index", "to_int"]
