"""Reductions and the softmax family.

* ``sum mean max min prod nansum nanprod norm`` with MXNet's ``ReduceAxesParam`` semantics
  (``axis`` None / () / int / tuple, negative axes, ``keepdims``, ``exclude``) and their
  backward ops ``_backward_<op>`` (one generic kernel: ``dx = dy * partial(x, y)``);
* ``argmax argmin argmax_channel`` (MXNet 1.x: the index is returned in the input's dtype);
* ``moments`` (``axes``, ``keepdims``: mean and biased variance, MXNet's
  ``src/operator/nn/moments-inl.h``);
* ``masked_softmax masked_log_softmax`` (``axis``, ``temperature``, ``normalize``; a bool
  ``mask`` broadcastable to the data: MXNet 1.9.1's ``src/operator/nn/softmax-inl.h``);
* ``softmax log_softmax softmin`` (``axis``, ``temperature``, ``dtype``, ``use_length``) and
  ``SoftmaxActivation`` (``mode`` instance | channel), each ONE kernel forward and one kernel
  backward: the row maximum and the row sum are ``Reduce`` nodes that the scheduler hoists to
  the row level, so they are computed once per row. (Exception: fewer than 8 rows longer than
  16384 elements, which the scheduler cuts into chunk tasks; their row statistics come from
  small per-row kernels first, see :func:`long_rows`.) softmax/softmin whose input is not
  computed by a fusable op are instead one hand-scheduled kernel that evaluates exp once per
  element (:func:`_softmax_one_exp`).

Lowering idea shared by all of them: the input is viewed with consecutive reduced / kept axes
merged (MXNet's ``BroadcastReduceShapeCompact``), the output as the kept axes (plus a trailing
1 when the innermost axis is reduced, so kept rows become parallel tasks), and the reduction is
a ``K.reduce`` over the reduced groups. Softmax views the data as ``(outer, inner, M)`` with
the softmax axis last (a strided view when the axis is not the innermost one), so each task
is one row.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..dtypes import as_dtype
from ..graph import Entry
from ..params import (
    Param,
    ParamSpec,
    enum,
    optional,
    parse_bool,
    parse_float,
    parse_int,
    parse_shape,
)
from ..registry import OpDef, register, simple
from .common import broadcast_view, g

C = K.const


def _fwd_attrs(node) -> dict:
    """The forward node's MXNet attributes, for its backward node."""
    return {k: v for k, v in node.attrs.items() if not (k.startswith("__") and k.endswith("__"))}


def require_float(op: str, dtype: str | None) -> None:
    if dtype is not None and as_dtype(dtype).kind != "f":
        raise OpError(f"{op}: input must be a floating-point array (float16, float32, "
                      f"float64), got {dtype}")


def _float_type(*names: str) -> str:
    """The float type arithmetic on these dtypes is done in."""
    if "float64" in names:
        return "float64"
    for n in names:
        if as_dtype(n).kind == "f":
            return n
    return "float32"


# =============================================================================================
# axis semantics (ReduceAxesShapeImpl)
# =============================================================================================
def reduced_axes(axis, exclude: bool, ishape, op: str) -> tuple:
    """Sorted axes of ``ishape`` that are reduced. ``axis`` None or () reduces everything
    (``exclude`` is then ignored, as in MXNet)."""
    nd = len(ishape)
    if axis is None or len(axis) == 0:
        return tuple(range(nd))
    axes = []
    for ax in axis:
        if ax is None:
            raise ShapeError(f"{op}: invalid reduction axis None in {tuple(axis)}")
        a = ax + nd if ax < 0 else ax
        if not 0 <= a < nd:
            raise ShapeError(f"{op}: reduction axis {ax} is out of range for input shape "
                             f"{tuple(ishape)} ({nd}-d)")
        axes.append(a)
    axes.sort()
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{op}: reduction axes have duplicates: {tuple(axis)}")
    if exclude:
        axes = [i for i in range(nd) if i not in axes]
    return tuple(axes)


def reduced_shape(ishape, red: tuple, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in red else int(d) for i, d in enumerate(ishape))
    kept = tuple(int(d) for i, d in enumerate(ishape) if i not in red)
    return kept or (1,)


def _groups(ishape, red: tuple) -> list:
    """Consecutive axes of the same kind merged, size-1 axes dropped: [[size, reduced], ...]."""
    out: list = []
    for i, d in enumerate(ishape):
        if d == 1:
            continue
        r = i in red
        if out and out[-1][1] == r:
            out[-1][0] *= int(d)
        else:
            out.append([int(d), r])
    return out


def lower_reduction(ctx, x: K.TensorRef, out: K.TensorRef, red: tuple, op: str,
                    body=lambda v: v, finish=lambda acc, n: acc, name: str = "reduce") -> None:
    """out = finish(op over the ``red`` axes of body(x), count)."""
    groups = _groups(x.shape, red) or [[1, False]]
    xv = x.reshape([s for s, _ in groups])
    kept = [s for s, r in groups if not r]
    oshape = kept + ([1] if groups[-1][1] else [])
    ov = out.reshape(oshape or [1])
    raxes = [K.reduce_axis(s, "r") for s, r in groups if r]
    count = math.prod(s for s, r in groups if r)

    def f(*idx):
        it, rit = iter(idx), iter(raxes)
        ix = tuple(next(rit).var if r else next(it) for _, r in groups)
        v = body(xv[ix])
        acc = K.reduce(op, v, raxes) if raxes else (
            v if op not in ("argmax", "argmin") else C(0, "int64"))
        return finish(acc, count)

    ctx.compute(ov, f, name)


def broadcast_small(ref: K.TensorRef, groups: list) -> K.TensorRef:
    """A reduced-shape tensor (keepdims semantics) viewed at the compacted input shape."""
    small = [1 if r else s for s, r in groups]
    return broadcast_view(K.TensorRef(ref.buf, tuple(small), None, ref.offset),
                          [s for s, _ in groups])


# =============================================================================================
# sum mean max min prod nansum nanprod
# =============================================================================================
REDUCE_AXES = ParamSpec(axis=Param(optional(parse_shape), None),
                        keepdims=Param(parse_bool, False), exclude=Param(parse_bool, False))


def _isnan(v: K.Expr) -> K.Expr:
    return v.ne(v)


def _zero_if_nan(v, fill):
    if v.dtype.kind != "f":
        return v
    return K.select(_isnan(v), C(fill, v.dtype), v)


def _mean_finish(acc: K.Expr, n: int) -> K.Expr:
    if acc.dtype.kind == "f":
        return acc / C(n, acc.dtype) if n else acc / C(0, acc.dtype)
    return acc / C(n, acc.dtype) if n else C(0, acc.dtype)


# name: (kernel reduce op, body, finish, numpy reference(x64, axes, dtype))
def _np_mean(x, axes, dt):
    if dt.kind == "f":
        n = math.prod(x.shape[a] for a in axes) if axes else 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sum(x, axis=axes) / n
    s = np.sum(x, axis=axes, dtype=np.int64)
    n = math.prod(x.shape[a] for a in axes) if axes else 1
    return np.where(s < 0, -((-s) // max(n, 1)), s // max(n, 1)) if n else s * 0


REDUCE_TABLE = {
    "sum": ("sum", lambda v: v, lambda a, n: a, lambda x, ax, dt: np.sum(x, axis=ax)),
    "mean": ("sum", lambda v: v, _mean_finish, _np_mean),
    "max": ("max", lambda v: v, lambda a, n: a, lambda x, ax, dt: np.max(x, axis=ax)),
    "min": ("min", lambda v: v, lambda a, n: a, lambda x, ax, dt: np.min(x, axis=ax)),
    "prod": ("prod", lambda v: v, lambda a, n: a, lambda x, ax, dt: np.prod(x, axis=ax)),
    "nansum": ("sum", lambda v: _zero_if_nan(v, 0), lambda a, n: a,
               lambda x, ax, dt: np.nansum(x, axis=ax)),
    "nanprod": ("prod", lambda v: _zero_if_nan(v, 1), lambda a, n: a,
                lambda x, ax, dt: np.nanprod(x, axis=ax)),
}
_ALIASES = {"sum": ("sum_axis",), "max": ("max_axis",), "min": ("min_axis",)}


def _partial(fn: str, x: K.Expr, y: K.Expr) -> K.Expr | None:
    """d reduce / d x for the *UseInOut* backward ops (MXNet's mshadow_op functors)."""
    one, zero = C(1, x.dtype), C(0, x.dtype)
    if fn in ("max", "min"):
        return K.select(x.eq(y), one, zero)        # every tied element gets the gradient
    if fn == "prod":
        return y / x                               # mshadow_op::rdiv
    if fn == "nansum":
        return K.select(_isnan(x), zero, one) if x.dtype.kind == "f" else one
    if fn == "nanprod":
        return K.select(_isnan(x), zero, y / x) if x.dtype.kind == "f" else y / x
    return None


class _Reduce(OpDef):
    fusion = "reduction"
    params = REDUCE_AXES
    fn = ""

    def red(self, a, ishape):
        return reduced_axes(a.axis, a.exclude, ishape, self.name)

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        red = self.red(a, s[0])
        if self.fn in ("max", "min") and math.prod(s[0]) == 0:
            raise ShapeError(f"{self.name}: reduction input's size should be > 0, got "
                             f"{tuple(s[0])}")
        return s, [reduced_shape(s[0], red, a.keepdims)]

    def lower(self, ctx):
        x, out = ctx.inputs[0], ctx.outputs[0]
        op, body, finish, _ = REDUCE_TABLE[self.fn]
        lower_reduction(ctx, x, out, self.red(ctx.attrs, x.shape), op, body, finish, self.fn)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        red = self.red(a, x.shape)
        dt = as_dtype(x.dtype.name)
        xx = x.astype(np.float64) if dt.kind == "f" else x
        r = REDUCE_TABLE[self.fn][3](xx, red, dt) if red else REDUCE_TABLE[self.fn][3](
            xx, (), dt)
        r = np.asarray(r).astype(x.dtype).reshape(reduced_shape(x.shape, red, a.keepdims))
        return [r]

    def gradient(self, node, ograds):
        ins = [ograds[0], node.inputs[0]]
        if self.fn not in ("sum", "mean"):
            ins.append(Entry(node, 0))
        return [g(f"_backward_{self.fn}", *ins, name=f"{node.name}_backward",
                  **_fwd_attrs(node))]


for _fn in REDUCE_TABLE:
    register(type(f"Op_{_fn}", (_Reduce,), {"name": _fn, "fn": _fn,
                                            "aliases": _ALIASES.get(_fn, ())}))


class _ReduceBackward(OpDef):
    """dx = broadcast(dy) * partial(x, broadcast(y)); inputs (ograd, data[, output])."""

    fusion = "broadcast"
    differentiable = False
    params = REDUCE_AXES
    fn = ""

    def arguments(self, a):
        return ["ograd", "data"] + ([] if self.fn in ("sum", "mean") else ["output"])

    def red(self, a, ishape):
        return reduced_axes(a.axis, a.exclude, ishape, self.name)

    def infer_shape(self, a, s):
        x = s[1]
        if x is None:
            return s, [None]
        small = reduced_shape(x, self.red(a, x), a.keepdims)
        return [small, x] + [small] * (len(s) - 2), [x]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        x, dx = ctx.inputs[1], ctx.outputs[0]
        red = self.red(ctx.attrs, x.shape)
        groups = _groups(x.shape, red) or [[1, False]]
        full = [s for s, _ in groups]
        xv = x.reshape(full)
        dy = broadcast_small(ctx.inputs[0], groups)
        y = broadcast_small(ctx.inputs[2], groups) if len(ctx.inputs) > 2 else None
        count = math.prod(s for s, r in groups if r)
        fn = self.fn
        dt = dx.dtype

        def f(*i):
            d = K.cast(dt, dy[i])
            if fn == "sum":
                return d
            if fn == "mean":
                return _mean_finish(d, count)
            if fn == "norm":
                return _norm_partial(ctx.attrs.ord, d, xv[i], y[i])
            return d * _partial(fn, xv[i], K.cast(dt, y[i]))

        ctx.compute(dx.reshape(full), f, f"d{fn}")


for _fn in list(REDUCE_TABLE):
    register(type(f"Op_backward_{_fn}", (_ReduceBackward,),
                  {"name": f"_backward_{_fn}", "fn": _fn}))


# =============================================================================================
# norm
# =============================================================================================
def _parse_ord(v):
    o = parse_int(v)
    if o not in (1, 2):
        raise ValueError(f"norm only supports ord=1 and ord=2, got {o}")
    return o


NORM = ParamSpec(ord=Param(_parse_ord, 2), axis=Param(optional(parse_shape), None),
                 out_dtype=Param(optional(enum("float16", "float32", "float64", "int64",
                                                "int32", "int8")), None),
                 keepdims=Param(parse_bool, False))


def _norm_partial(ord_: int, dy: K.Expr, x: K.Expr, y: K.Expr) -> K.Expr:
    ct = _float_type(dy.dtype.name, x.dtype.name)
    xf, dyf = K.cast(ct, x), K.cast(ct, dy)
    if ord_ == 1:
        s = K.select(xf.gt(C(0, ct)), C(1, ct), K.select(xf.lt(C(0, ct)), C(-1, ct), C(0, ct)))
        return dyf * s
    return dyf * xf / K.cast(ct, y)


@simple("norm", fusion="reduction", params=NORM)
class Norm(OpDef):
    def red(self, a, ishape):
        return reduced_axes(a.axis, False, ishape, self.name)

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [reduced_shape(s[0], self.red(a, s[0]), a.keepdims)]

    def infer_type(self, a, t):
        if a.out_dtype is not None:
            return t, [a.out_dtype]
        return t, [t[0]]

    def lower(self, ctx):
        x, out = ctx.inputs[0], ctx.outputs[0]
        ct = _float_type(x.dtype.name, out.dtype.name)
        if ctx.attrs.ord == 1:
            lower_reduction(ctx, x, out, self.red(ctx.attrs, x.shape), "sum",
                            lambda v: K.abs_(K.cast(ct, v)), name="norm1")
        else:
            lower_reduction(ctx, x, out, self.red(ctx.attrs, x.shape), "sum",
                            lambda v: K.cast(ct, v) * K.cast(ct, v),
                            lambda acc, n: K.sqrt(acc), name="norm2")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        red = self.red(a, x.shape)
        xx = x.astype(np.float64)
        r = np.sum(np.abs(xx), axis=red) if a.ord == 1 else np.sqrt(np.sum(xx * xx, axis=red))
        odt = as_dtype(a.out_dtype).np if a.out_dtype else x.dtype
        return [np.asarray(r).astype(odt).reshape(reduced_shape(x.shape, red, a.keepdims))]

    def gradient(self, node, ograds):
        return [g("_backward_norm", ograds[0], node.inputs[0], Entry(node, 0),
                  name=f"{node.name}_backward", **_fwd_attrs(node))]


@simple("_backward_norm", fusion="broadcast", differentiable=False, params=NORM)
class BackwardNorm(_ReduceBackward):
    fn = "norm"

    def arguments(self, a):
        return ["ograd", "data", "output"]

    def red(self, a, ishape):
        return reduced_axes(a.axis, False, ishape, self.name)


# =============================================================================================
# argmax argmin argmax_channel
# =============================================================================================
REDUCE_AXIS = ParamSpec(axis=Param(optional(parse_int), None),
                        keepdims=Param(parse_bool, False))


class _ArgReduce(OpDef):
    fusion = "reduction"
    params = REDUCE_AXIS
    fn = "argmax"

    def axis_of(self, a, ishape):
        if a.axis is None:
            return None
        nd = len(ishape)
        if not -max(nd, 1) <= a.axis < max(nd, 1):
            raise ShapeError(f"{self.name}: axis {a.axis} is out of range for input shape "
                             f"{tuple(ishape)}")
        return a.axis % nd if nd else 0

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None]
        ax = self.axis_of(a, x)
        if ax is None:
            if math.prod(x) == 0:
                raise ShapeError(f"{self.name}: attempt to search an empty sequence "
                                 f"(input shape {tuple(x)})")
            return s, [(1,) * len(x) if a.keepdims else (1,)]
        if x[ax] == 0:
            raise ShapeError(f"{self.name}: searching input tensor of shape {tuple(x)} along "
                             f"axis = {ax} of zero dim-size is not allowed")
        return s, [reduced_shape(x, (ax,), a.keepdims)]

    def lower(self, ctx):
        x, out = ctx.inputs[0], ctx.outputs[0]
        ax = self.axis_of(ctx.attrs, x.shape)
        if ax is None:
            x = x.reshape((1, x.size))
            ax = 1
        lower_reduction(ctx, x, out, (ax,), self.fn, name=self.fn)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        ax = self.axis_of(a, x.shape)
        f = np.argmax if self.fn == "argmax" else np.argmin
        if ax is None:
            r = np.asarray(f(x.reshape(-1))).reshape((1,) * x.ndim if a.keepdims else (1,))
        else:
            r = f(x, axis=ax)
            r = np.asarray(r).reshape(reduced_shape(x.shape, (ax,), a.keepdims))
        return [r.astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0])]


@simple("argmax")
class ArgMax(_ArgReduce):
    fn = "argmax"


@simple("argmin")
class ArgMin(_ArgReduce):
    fn = "argmin"


@simple("argmax_channel", params=ParamSpec())
class ArgMaxChannel(_ArgReduce):
    """argmax along the last axis (MXNet fixes axis=-1, keepdims=False)."""

    fn = "argmax"

    def parse_attrs(self, raw, node_name=""):
        a = ParamSpec().parse(self.name, raw, node_name)
        a["axis"], a["keepdims"] = -1, False
        return a


# =============================================================================================
# softmax family
# =============================================================================================
SOFTMAX = ParamSpec(axis=Param(parse_int, -1), temperature=Param(optional(parse_float), None),
                    dtype=Param(optional(enum("float16", "float32", "float64")), None),
                    use_length=Param(optional(parse_bool), False))


def row_view(ref: K.TensorRef, axis: int) -> K.TensorRef:
    """``ref`` (contiguous) as (outer, M) or (outer, inner, M): the axis last, so one task is
    one row; a strided view when the axis is not the innermost one."""
    s = ref.shape
    outer, m, inner = math.prod(s[:axis]), s[axis], math.prod(s[axis + 1:])
    if inner == 1:
        return K.TensorRef(ref.buf, (outer, m), None, ref.offset)
    return K.TensorRef(ref.buf, (outer, inner, m), (m * inner, 1, inner), ref.offset)


def length_view(ref: K.TensorRef, x: K.TensorRef, axis: int) -> K.TensorRef:
    s = x.shape
    outer, inner = math.prod(s[:axis]), math.prod(s[axis + 1:])
    return K.TensorRef(ref.buf, (outer, inner) if inner != 1 else (outer,), None, ref.offset)


def _norm_softmax_axis(axis: int, shape, op: str) -> int:
    nd = len(shape)
    if not -nd <= axis < nd:
        raise ShapeError(f"{op}: axis {axis} is out of range for input shape {tuple(shape)}")
    return axis % nd


# The scheduler cuts rows longer than 2*CHUNK into tasks when there are fewer than MIN_TASKS
# rows (compiler/schedule.py: CHUNK=4096, MIN_TASKS=8); each chunk would then recompute the
# row's reductions. Rows that long get their statistics from a separate kernel instead.
LONG_ROW, FEW_ROWS = 4 * 4096, 8


def long_rows(view: K.TensorRef) -> bool:
    return view.shape[-1] > LONG_ROW and math.prod(view.shape[:-1]) < FEW_ROWS


def row_stat(ctx, view: K.TensorRef, fn, dtype, name: str) -> K.TensorRef:
    """A (rows..., 1) temporary holding fn(row) for every row of ``view``."""
    t = ctx.temp(tuple(view.shape[:-1]) + (1,), dtype)
    ctx.compute(t, lambda *i: fn(i[:-1]), name)
    return t


def softmax_expr(kind: str, xv: K.TensorRef, idx: tuple, temperature, lv=None,
                 what: str = "out", stats: tuple = (None, None)) -> K.Expr:
    """One element of softmax / log_softmax / softmin along the last axis of ``xv``
    (``what``: 'out', or the row's 'max' / 'sum'; ``stats``: those read from temporaries)."""
    row, j = idx[:-1], idx[-1]
    m = xv.shape[-1]
    dt = xv.dtype
    neg = kind == "softmin"

    def val(k):
        v = xv[row + (k,)]
        return -v if neg else v

    valid = None
    if lv is not None:
        n = K.cast("int64", lv[row] if lv.ndim == len(row) else lv[row[0]])
        valid = lambda k: k.lt(n)
    r1, r2 = K.reduce_axis(m, "sm"), K.reduce_axis(m, "ss")
    v1 = val(r1.var)
    if valid is not None:
        v1 = K.select(valid(r1.var), v1, C(float("-inf"), dt))
    mx = K.reduce("max", v1, [r1]) if stats[0] is None else K.cast(dt, stats[0][row + (0,)])
    if what == "max":
        return mx

    def scaled(k):
        d = val(k) - mx
        return d if temperature is None or temperature == 1.0 else d / C(temperature, dt)

    e2 = K.call("exp", scaled(r2.var))
    if valid is not None:
        e2 = K.select(valid(r2.var), e2, C(0, dt))
    s = K.reduce("sum", e2, [r2]) if stats[1] is None else K.cast(dt, stats[1][row + (0,)])
    if what == "sum":
        return s
    if kind == "log_softmax":
        out = scaled(j) - K.call("log", s)
    else:
        out = K.call("exp", scaled(j)) / s
    if valid is not None:
        out = K.select(valid(j), out, C(0, dt))
    return out


def softmax_grad_expr(kind: str, dyv, yv, idx, temperature, out_dt, lv=None,
                      what: str = "out", stat: K.TensorRef | None = None) -> K.Expr:
    """One element of the softmax-family gradient (``what='sum'``: the row's reduction,
    ``stat``: that reduction read from a temporary)."""
    row, j = idx[:-1], idx[-1]
    m = yv.shape[-1]
    ct = _float_type(yv.dtype.name)
    dy = lambda k: K.cast(ct, dyv[row + (k,)])
    y = lambda k: K.cast(ct, yv[row + (k,)])
    valid = None
    if lv is not None:
        n = K.cast("int64", lv[row] if lv.ndim == len(row) else lv[row[0]])
        valid = lambda k: k.lt(n)
    r = K.reduce_axis(m, "sg")
    if kind == "log_softmax":
        term = dy(r.var)
    else:
        term = dy(r.var) * y(r.var)
    if valid is not None:
        term = K.select(valid(r.var), term, C(0, ct))
    s = K.reduce("sum", term, [r]) if stat is None else K.cast(ct, stat[row + (0,)])
    if what == "sum":
        return s
    if kind == "log_softmax":
        d = dy(j) - K.call("exp", y(j)) * s
    else:
        d = y(j) * (dy(j) - s)
    if kind == "softmin":
        d = -d
    if temperature is not None and temperature != 1.0:
        d = d / C(temperature, ct)
    if valid is not None:
        d = K.select(valid(j), d, C(0, ct))
    return K.cast(out_dt, d)


def lower_softmax(ctx, kind: str, xv: K.TensorRef, ov: K.TensorRef, temperature, lv) -> None:
    """One kernel; for a few very long rows, the row max and sum come first (two small
    kernels) so that the chunked output kernel does not recompute them per chunk. softmax and
    softmin whose input no fusable op computes get the hand-scheduled one-exp kernel."""
    if _one_exp_applies(ctx, kind, xv, ov, lv):
        _softmax_one_exp(ctx, kind, xv, ov, temperature)
        return
    stats: tuple = (None, None)
    if long_rows(ov):
        tmax = row_stat(ctx, xv, lambda i: softmax_expr(kind, xv, i + (0,), temperature, lv,
                                                        "max"), xv.dtype, f"{kind}_max")
        tsum = row_stat(ctx, xv, lambda i: softmax_expr(kind, xv, i + (0,), temperature, lv,
                                                        "sum", (tmax, None)),
                        xv.dtype, f"{kind}_sum")
        stats = (tmax, tsum)
    ctx.compute(ov, lambda *i: softmax_expr(kind, xv, i, temperature, lv, "out", stats), kind)


# ``out = exp(x - max) / sum`` as one compute evaluates exp twice per element: once inside the
# row-sum reduction and once for the output (a compute cannot keep its reduction's values).
# When nothing would be fused into that compute anyway, a hand-scheduled kernel does better:
# exp(x - max) is written to the output while it is summed, then the output row (still in
# L1/L2) is divided by the sum in place. Each row's max is taken while the previous row's
# exps are computed, so that row is fetched from memory under the exp work instead of
# stalling a max pass of its own (rows of ~1K floats otherwise wait on memory at every row
# start). softmax 4096x1024 float32 on the 2-core dev machine: 2.7 -> 1.5 ms on one core,
# 1.5 -> 0.9 ms on two.
SOFTMAX_BLOCK = 16    # rows per task of that kernel: one extra max pass per block


def _one_exp_applies(ctx, kind: str, xv: K.TensorRef, ov: K.TensorRef, lv) -> bool:
    """Whether ``_softmax_one_exp`` computes this softmax: softmax/softmin (log_softmax
    evaluates exp once per element already) of contiguous float32/float64 rows of at most
    LONG_ROW elements (so a row stays in L1/L2 between its passes), no ``length``, output in
    the input's dtype (the stored exps are then exactly the values the compute form divides),
    for the CPU (the PTX back end maps a compute's row reductions onto a block of threads per
    row; this kernel would run one thread per row there), and only when no elementwise,
    broadcast or injective op computes the input: the fusion pass may inline such a prologue
    into the compute form (softmax(x * scale + mask) stays one kernel), never into a
    hand-scheduled kernel."""
    if kind == "log_softmax" or lv is not None or ov.size == 0 or xv.ndim != 2 or \
            xv.shape[-1] > LONG_ROW or xv.strides[-1] != 1 or ov.strides[-1] != 1 or \
            ov.dtype != xv.dtype or xv.dtype.name not in ("float32", "float64") or \
            not ctx.cpu_templates:
        return False
    e = ctx.node.inputs[0]
    while e.node.op != "null" and e.node.opdef.inplace_identity and e.node.inputs:
        e = e.node.inputs[0]   # Reshape, Flatten...: views of their input, no kernel
    return e.node.op == "null" or e.node.opdef.fusion not in ("elementwise", "broadcast",
                                                              "injective")


def _softmax_one_exp(ctx, kind: str, xv: K.TensorRef, ov: K.TensorRef, temperature) -> None:
    """softmax/softmin of the (rows, M) views, exp computed once per element; the arithmetic
    of ``softmax_expr``: e = exp((x - max) / t), out = e / sum(e). One task per block of rows:

        cur = max(x[first])
        for r in block:
            for k: e = exp((x[r, k] - cur) / t); out[r, k] = e; s += e; nxt = max(nxt, x[r+1, k])
            for k: out[r, k] = out[r, k] / s
            cur = nxt
    """
    rows, m = xv.shape
    dt = xv.dtype
    block = max(1, min(SOFTMAX_BLOCK, rows // 64))   # keep >= 64 tasks for the thread pool

    def ci(v):  # an index constant
        return C(v, K.INDEX)

    def val(row, k):
        v = xv[row, k]
        return -v if kind == "softmin" else v

    task = K.index_var("task")
    i, k0, k1, k2 = (K.index_var("k") for _ in range(4))
    cur, nxt, s, e = (K.Local(f"%sm_{n}", dt) for n in ("cur", "nxt", "sum", "exp"))
    first = task * ci(block)
    r = first + i
    # the block's last row takes the next block's max (read again, from cache, by that task);
    # the last row of all reads itself, staying in bounds
    r_next = K.minimum(r + ci(1), ci(rows - 1))
    d = val(r, k1) - cur
    if temperature is not None and temperature != 1.0:
        d = d / C(temperature, dt)
    add = K.Assign(s, s + e)
    add.reassoc = True   # a reduction: LLVM may reorder it to vectorize (as compiler.schedule)
    exp_pass = [K.Assign(e, K.call("exp", d)), K.Store(ov.buf, ov.flat_index((r, k1)), e), add,
                K.Assign(nxt, K.maximum(nxt, val(r_next, k1)))]
    scale_pass = [K.Store(ov.buf, ov.flat_index((r, k2)), ov[r, k2] / s)]
    row_body = [K.Assign(nxt, C(float("-inf"), dt)), K.Assign(s, C(0, dt)),
                K.For(k1, ci(m), exp_pass, "vector"), K.For(k2, ci(m), scale_pass, "vector"),
                K.Assign(cur, nxt)]
    n_rows = ci(block) if rows % block == 0 else K.minimum(ci(block), ci(rows) - first)
    body = [K.Assign(cur, C(float("-inf"), dt)),
            K.For(k0, ci(m), [K.Assign(cur, K.maximum(cur, val(first, k0)))], "vector"),
            K.For(i, n_rows, row_body, "serial")]
    # cost: an exp weighs ~20 plain ops in compiler.schedule's estimate, plus ~5 per element
    ctx.emit(K.Kernel("__K__", [xv.buf, ov.buf], task, -(-rows // block), body,
                      cost=ov.size * 25, note=kind))


def lower_softmax_grad(ctx, kind: str, dyv, yv, dxv, temperature, lv) -> None:
    stat = None
    if long_rows(dxv):
        stat = row_stat(ctx, yv, lambda i: softmax_grad_expr(
            kind, dyv, yv, i + (0,), temperature, dxv.dtype, lv, "sum"),
            _float_type(yv.dtype.name), f"d{kind}_sum")
    ctx.compute(dxv, lambda *i: softmax_grad_expr(kind, dyv, yv, i, temperature, dxv.dtype,
                                                  lv, "out", stat), f"d{kind}")


def np_softmax(kind: str, x, axis: int, temperature, length=None):
    x = np.asarray(x, np.float64)
    if kind == "softmin":
        x = -x
    t = 1.0 if temperature is None else temperature
    xm = np.moveaxis(x, axis, -1)
    mask = None
    if length is not None:
        ln = np.asarray(length).astype(np.int64).reshape(xm.shape[:-1])
        mask = np.arange(xm.shape[-1]) < ln[..., None]
        xm = np.where(mask, xm, -np.inf)
    mx = np.max(xm, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0)
    d = (xm - mx) / t
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.exp(d)
        s = np.sum(e, axis=-1, keepdims=True)
        out = d - np.log(s) if kind == "log_softmax" else e / s
    if mask is not None:
        out = np.where(mask, out, 0)
    return np.moveaxis(out, -1, axis)


class _Softmax(OpDef):
    fusion = "complex"
    params = SOFTMAX
    kind = "softmax"

    def arguments(self, a):
        return ["data", "length"] if a.use_length else ["data"]

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None]
        ax = _norm_softmax_axis(a.axis, x, self.name)
        if a.use_length:
            ls = tuple(d for i, d in enumerate(x) if i != ax) or (1,)
            if s[1] is not None and tuple(s[1]) != ls:
                raise ShapeError(f"{self.name}: length must have shape {ls} (data {tuple(x)} "
                                 f"without axis {ax}), got {tuple(s[1])}")
            return [x, ls], [x]
        return s, [x]

    def infer_type(self, a, t):
        require_float(self.name, t[0])
        out = a.dtype if a.dtype is not None else t[0]
        if a.use_length:
            return [t[0], t[1] or "int32"], [out]
        return t, [out]

    def lower(self, ctx):
        a = ctx.attrs
        x, out = ctx.inputs[0], ctx.outputs[0]
        ax = _norm_softmax_axis(a.axis, x.shape, self.name)
        xv, ov = row_view(x, ax), row_view(out, ax)
        lv = length_view(ctx.inputs[1], x, ax) if a.use_length else None
        lower_softmax(ctx, self.kind, xv, ov, a.temperature, lv)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        ax = _norm_softmax_axis(a.axis, x.shape, self.name)
        r = np_softmax(self.kind, x, ax, a.temperature, inputs[1] if a.use_length else None)
        return [r.astype(as_dtype(a.dtype).np if a.dtype else x.dtype)]

    def gradient(self, node, ograds):
        ins = [ograds[0], node.inputs[0]]
        if node.parsed.use_length:
            ins.append(node.inputs[1])
        ins.append(Entry(node, 0))
        dx = g(f"_backward_{self.name}", *ins, name=f"{node.name}_backward",
               **_fwd_attrs(node))
        if node.parsed.use_length:
            return [dx, g("zeros_like", node.inputs[1])]
        return [dx]


@simple("softmax")
class Softmax(_Softmax):
    kind = "softmax"


@simple("log_softmax")
class LogSoftmax(_Softmax):
    kind = "log_softmax"


@simple("softmin")
class Softmin(_Softmax):
    kind = "softmin"


class _SoftmaxBackward(OpDef):
    """Inputs (ograd, data[, length], output); dx has data's shape and dtype."""

    fusion = "complex"
    params = SOFTMAX
    differentiable = False
    kind = "softmax"

    def arguments(self, a):
        return ["ograd", "data"] + (["length"] if a.use_length else []) + ["output"]

    def infer_shape(self, a, s):
        x = s[1] if s[1] is not None else s[0]
        ins = list(s)
        ins[0], ins[1], ins[-1] = x, x, x
        return ins, [x]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, x, y = ctx.inputs[0], ctx.inputs[1], ctx.inputs[-1]
        dx = ctx.outputs[0]
        ax = _norm_softmax_axis(a.axis, x.shape, self.name)
        dyv, yv, dxv = row_view(dy, ax), row_view(y, ax), row_view(dx, ax)
        lv = length_view(ctx.inputs[2], x, ax) if a.use_length else None
        lower_softmax_grad(ctx, self.kind, dyv, yv, dxv, a.temperature, lv)


for _k in ("softmax", "log_softmax", "softmin"):
    register(type(f"Op_backward_{_k}", (_SoftmaxBackward,),
                  {"name": f"_backward_{_k}", "kind": _k}))


# =============================================================================================
# masked_softmax, masked_log_softmax
# =============================================================================================
# Masked-out positions take no part in the row's max and sum and read 0 (softmax) or -inf
# (log_softmax), as MXNet, which softmaxes the data with masked-out values replaced by the
# lowest finite value, then overwrites them. A fully masked row is therefore all 0 / -inf.
# ``normalize`` (subtract the row max) only changes overflow behaviour; MXNet's CPU kernel
# always subtracts it, and so does this one.
MASKED_SOFTMAX = ParamSpec(axis=Param(parse_int, -1),
                           temperature=Param(optional(parse_float), None),
                           normalize=Param(optional(parse_bool), True))


def _masked_views(refs, mask: K.TensorRef, axis: int):
    """The same-shaped ``refs`` and the mask broadcast to them, each with ``axis`` moved last
    (the softmax row is the last index)."""
    shape = refs[0].shape
    perm = [i for i in range(len(shape)) if i != axis] + [axis]
    views = [r.transpose(perm) for r in refs]
    return views, broadcast_view(mask, shape).transpose(perm)


def _check_mask(op: str, x, m) -> None:
    if len(m) != len(x):
        raise ShapeError(f"{op}: mask must have as many dims as data: data {tuple(x)}, "
                         f"mask {tuple(m)}")
    if len(x) == 0:
        raise ShapeError(f"{op}: data must have at least one dim")
    for d, k in zip(x, m):
        if k != d and k != 1:
            raise ShapeError(f"{op}: mask {tuple(m)} cannot be broadcast to data {tuple(x)}")


def _temp_div(v: K.Expr, temperature) -> K.Expr:
    return v if temperature is None or temperature == 1.0 else v / C(temperature, v.dtype)


def masked_softmax_expr(kind: str, xv, mv, idx: tuple, temperature, ct: str) -> K.Expr:
    """One output element of masked (log_)softmax along the last axis of ``xv``."""
    row, j = idx[:-1], idx[-1]
    m = xv.shape[-1]
    r1, r2 = K.reduce_axis(m, "mm"), K.reduce_axis(m, "ms")
    x = lambda k: K.cast(ct, xv[row + (k,)])
    valid = lambda k: mv[row + (k,)]
    mx = K.reduce("max", K.select(valid(r1.var), x(r1.var), C(float("-inf"), ct)), [r1])
    # a fully masked row has max -inf; any finite shift keeps its (discarded) values finite
    mx = K.select(mx.eq(C(float("-inf"), ct)), C(0, ct), mx)
    e = K.call("exp", _temp_div(x(r2.var) - mx, temperature))
    s = K.reduce("sum", K.select(valid(r2.var), e, C(0, ct)), [r2])
    z = _temp_div(x(j) - mx, temperature)
    if kind == "masked_log_softmax":
        return K.select(valid(j), z - K.call("log", s), C(float("-inf"), ct))
    return K.select(valid(j), K.call("exp", z) / s, C(0, ct))


def masked_softmax_grad_expr(kind: str, dyv, yv, mv, idx: tuple, temperature,
                             ct: str) -> K.Expr:
    """MXNet's MaskedSoftmaxGrad: the plain softmax gradient of the masked head gradient,
    masked again (masked-out positions get 0)."""
    row, j = idx[:-1], idx[-1]
    r = K.reduce_axis(yv.shape[-1], "mg")
    dy = lambda k: K.cast(ct, dyv[row + (k,)])
    y = lambda k: K.cast(ct, yv[row + (k,)])
    valid = lambda k: mv[row + (k,)]
    if kind == "masked_log_softmax":
        s = K.reduce("sum", K.select(valid(r.var), dy(r.var), C(0, ct)), [r])
        d = dy(j) - K.call("exp", y(j)) * s
    else:
        s = K.reduce("sum", K.select(valid(r.var), dy(r.var) * y(r.var), C(0, ct)), [r])
        d = y(j) * (dy(j) - s)
    return K.select(valid(j), _temp_div(d, temperature), C(0, ct))


def np_masked_softmax(kind: str, x, mask, axis: int, temperature):
    xd = np.asarray(x, np.float64)
    valid = np.broadcast_to(np.asarray(mask).astype(bool), xd.shape)
    t = 1.0 if temperature is None else temperature
    mx = np.max(np.where(valid, xd, -np.inf), axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0)
    z = (xd - mx) / t
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.where(valid, np.exp(np.where(valid, z, 0)), 0)
        s = np.sum(e, axis=axis, keepdims=True)
        if kind == "masked_log_softmax":
            return np.where(valid, z - np.log(s), -np.inf)
        return np.where(valid, e / s, 0)


class _MaskedSoftmax(OpDef):
    fusion = "complex"
    params = MASKED_SOFTMAX
    kind = "masked_softmax"

    def arguments(self, a):
        return ["data", "mask"]

    def inplace(self, a):
        return [(0, 0)]

    def infer_shape(self, a, s):
        x, m = s
        if x is None or m is None:
            return s, [x]
        _check_mask(self.name, x, m)
        _norm_softmax_axis(a.axis, x, self.name)
        return s, [tuple(x)]

    def infer_type(self, a, t):
        require_float(self.name, t[0])
        if t[1] is not None and t[1] != "bool":
            raise OpError(f"{self.name}: mask must be a bool array, got {t[1]}")
        return [t[0], "bool"], [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        x, mask = ctx.inputs
        out = ctx.outputs[0]
        if x.size == 0:
            return
        ax = _norm_softmax_axis(a.axis, x.shape, self.name)
        (xv, ov), mv = _masked_views([x, out], mask, ax)
        ct = _float_type(x.dtype.name)
        ctx.compute(ov, lambda *i: masked_softmax_expr(self.kind, xv, mv, i, a.temperature, ct),
                    self.kind)

    def reference(self, a, inputs, is_train=False):
        x, mask = inputs
        ax = _norm_softmax_axis(a.axis, x.shape, self.name)
        return [np_masked_softmax(self.kind, x, mask, ax, a.temperature).astype(x.dtype)]

    def gradient(self, node, ograds):
        dx = g(f"_backward_{self.name}", ograds[0], node.inputs[1], Entry(node, 0),
               name=f"{node.name}_backward_data", **_fwd_attrs(node))
        return [dx, g("zeros_like", node.inputs[1], name=f"{node.name}_backward_mask")]


@simple("masked_softmax", aliases=("_npx_masked_softmax",))
class MaskedSoftmax(_MaskedSoftmax):
    kind = "masked_softmax"


@simple("masked_log_softmax", aliases=("_npx_masked_log_softmax",))
class MaskedLogSoftmax(_MaskedSoftmax):
    kind = "masked_log_softmax"


class _MaskedSoftmaxBackward(OpDef):
    """Inputs (ograd, mask, output), as MXNet's ``_backward_masked_softmax``."""

    fusion = "complex"
    params = MASKED_SOFTMAX
    differentiable = False
    kind = "masked_softmax"

    def arguments(self, a):
        return ["ograd", "mask", "output"]

    def infer_shape(self, a, s):
        x = s[0] if s[0] is not None else s[2]
        return [x, s[1], x], [x]

    def infer_type(self, a, t):
        d = t[0] or t[2]
        return [d, "bool", d], [d]

    def lower(self, ctx):
        a = ctx.attrs
        dy, mask, y = ctx.inputs
        dx = ctx.outputs[0]
        if dx.size == 0:
            return
        ax = _norm_softmax_axis(a.axis, y.shape, self.name)
        (dyv, yv, dxv), mv = _masked_views([dy, y, dx], mask, ax)
        ct = _float_type(y.dtype.name)
        ctx.compute(dxv, lambda *i: K.cast(dx.dtype, masked_softmax_grad_expr(
            self.kind, dyv, yv, mv, i, a.temperature, ct)), f"d{self.kind}")


for _k in ("masked_softmax", "masked_log_softmax"):
    register(type(f"Op_backward_{_k}", (_MaskedSoftmaxBackward,),
                  {"name": f"_backward_{_k}", "kind": _k}))


# =============================================================================================
# moments
# =============================================================================================
MOMENTS = ParamSpec(axes=Param(optional(parse_shape), None), keepdims=Param(parse_bool, False))


def _moments_axes(a, ishape) -> tuple:
    if a.axes is None or len(a.axes) == 0:
        raise OpError("moments: empty axes is not supported; for global moments pass every "
                      "axis in axes")
    return reduced_axes(a.axes, False, ishape, "moments")


def _moments_views(x: K.TensorRef, small: K.TensorRef, red: tuple):
    """x at its compacted shape, a reduced-shape tensor broadcast to it, and the groups."""
    groups = _groups(x.shape, red) or [[1, False]]
    return x.reshape([s for s, _ in groups]), broadcast_small(small, groups), groups


@simple("moments", fusion="reduction", params=MOMENTS)
class Moments(OpDef):
    """mean and biased variance over ``axes``: two reduction kernels (the variance kernel
    reads the mean)."""

    def outputs(self, a):
        return ["mean", "var"]

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None, None]
        out = reduced_shape(s[0], _moments_axes(a, s[0]), a.keepdims)
        return s, [out, out]

    def infer_type(self, a, t):
        require_float(self.name, t[0])
        return t, [t[0], t[0]]

    def lower(self, ctx):
        x = ctx.inputs[0]
        mean_o, var_o = ctx.outputs
        red = _moments_axes(ctx.attrs, x.shape)
        lower_reduction(ctx, x, mean_o, red, "sum", finish=_mean_finish, name="moments_mean")
        xv, mean_b, groups = _moments_views(x, mean_o, red)
        ct = _float_type(x.dtype.name)
        raxes_sizes = [sz for sz, r in groups if r]
        kept = [sz for sz, r in groups if not r]
        ov = var_o.reshape((kept + ([1] if groups[-1][1] else [])) or [1])
        count = math.prod(raxes_sizes)

        def var(*idx):
            raxes = [K.reduce_axis(sz, "r") for sz in raxes_sizes]
            it, rit = iter(idx), iter(raxes)
            ix = tuple(next(rit).var if r else next(it) for _, r in groups)
            d = K.cast(ct, xv[ix]) - K.cast(ct, mean_b[ix])
            acc = K.reduce("sum", d * d, raxes) if raxes else d * d
            return K.cast(var_o.dtype, _mean_finish(acc, count))

        ctx.compute(ov, var, "moments_var")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        red = _moments_axes(a, x.shape)
        xd = x.astype(np.float64)
        shape = reduced_shape(x.shape, red, a.keepdims)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = xd.mean(axis=red, keepdims=True)
            var = ((xd - mean) ** 2).mean(axis=red)
        return [mean.reshape(shape).astype(x.dtype), var.reshape(shape).astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_moments", ograds[0], ograds[1], node.inputs[0], Entry(node, 0),
                  name=f"{node.name}_backward", **_fwd_attrs(node))]


@simple("_backward_moments", fusion="broadcast", differentiable=False, params=MOMENTS)
class BackwardMoments(OpDef):
    """dx = dmean / N + dvar * 2 * (x - mean) / N, N the number of reduced elements."""

    def arguments(self, a):
        return ["mean_grad", "var_grad", "data", "mean"]

    def infer_shape(self, a, s):
        x = s[2]
        if x is None:
            return s, [None]
        small = reduced_shape(x, _moments_axes(a, x), a.keepdims)
        return [small, small, x, small], [x]

    def infer_type(self, a, t):
        return [t[2]] * 4, [t[2]]

    def lower(self, ctx):
        dmean, dvar, x, mean = ctx.inputs
        dx = ctx.outputs[0]
        red = _moments_axes(ctx.attrs, x.shape)
        xv, mean_b, groups = _moments_views(x, mean, red)
        dmean_b, dvar_b = (broadcast_small(r, groups) for r in (dmean, dvar))
        n = math.prod(sz for sz, r in groups if r)
        ct = _float_type(x.dtype.name)
        inv_n = C(1.0 / n if n else float("nan"), ct)

        def f(*i):
            d = K.cast(ct, xv[i]) - K.cast(ct, mean_b[i])
            v = (K.cast(ct, dmean_b[i]) + C(2, ct) * K.cast(ct, dvar_b[i]) * d) * inv_n
            return K.cast(dx.dtype, v)

        ctx.compute(dx.reshape([sz for sz, _ in groups]), f, "dmoments")


SOFTMAX_ACT = ParamSpec(mode=Param(enum("instance", "channel"), "instance"))


def _act_view(ref: K.TensorRef, mode: str) -> K.TensorRef:
    s = ref.shape
    if mode == "instance" or len(s) <= 2:
        return K.TensorRef(ref.buf, (s[0], math.prod(s[1:])), None, ref.offset)
    return row_view(K.TensorRef(ref.buf, (s[0], s[1], math.prod(s[2:])), None, ref.offset), 1)


@simple("SoftmaxActivation", fusion="complex", params=SOFTMAX_ACT)
class SoftmaxActivation(OpDef):
    def infer_type(self, a, t):
        require_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def infer_shape(self, a, s):
        if s[0] is not None and len(s[0]) < 2 and a.mode == "channel":
            raise ShapeError(f"SoftmaxActivation: mode='channel' needs an input of at least "
                             f"2 dims (batch, channel, ...), got {tuple(s[0])}")
        return OpDef.infer_shape(self, a, s)

    def lower(self, ctx):
        x, out = ctx.inputs[0], ctx.outputs[0]
        if len(x.shape) == 1:
            x, out = x.reshape((1, x.size)), out.reshape((1, out.size))
        xv, ov = _act_view(x, ctx.attrs.mode), _act_view(out, ctx.attrs.mode)
        lower_softmax(ctx, "softmax", xv, ov, None, None)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if a.mode == "instance" or x.ndim <= 2:
            r = np_softmax("softmax", x.reshape(x.shape[0] if x.ndim else 1, -1), 1, None)
        else:
            r = np_softmax("softmax", x, 1, None)
        return [r.reshape(x.shape).astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_SoftmaxActivation", ograds[0], Entry(node, 0),
                  name=f"{node.name}_backward", **_fwd_attrs(node))]


@simple("_backward_SoftmaxActivation", fusion="complex", differentiable=False,
        params=SOFTMAX_ACT)
class BackwardSoftmaxActivation(OpDef):
    def arguments(self, a):
        return ["ograd", "output"]

    def lower(self, ctx):
        dy, y = ctx.inputs
        dx = ctx.outputs[0]
        if len(y.shape) == 1:
            dy, y, dx = (r.reshape((1, r.size)) for r in (dy, y, dx))
        m = ctx.attrs.mode
        dyv, yv, dxv = _act_view(dy, m), _act_view(y, m), _act_view(dx, m)
        lower_softmax_grad(ctx, "softmax", dyv, yv, dxv, None, None)


__all__ = [
    "OpError",
    "lower_reduction",
    "np_masked_softmax",
    "np_softmax",
    "reduced_axes",
    "reduced_shape",
    "require_float",
    "row_view",
    "softmax_expr",
    "softmax_grad_expr",
]
