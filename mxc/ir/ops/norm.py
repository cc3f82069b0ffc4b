"""Normalization operators: BatchNorm, LayerNorm, InstanceNorm, GroupNorm, L2Normalization,
LRN, with their backward ops.

BatchNorm follows MXNet 1.9.1 (CPU) exactly:

* training (``is_train`` and not ``use_global_stats``): normalise with the batch mean and the
  biased batch variance; the ``mean`` output is the batch mean and the ``var`` output is the
  *inverse std* ``1/sqrt(var + eps)``;
* inference (or ``use_global_stats``): normalise with ``moving_mean``/``moving_var``; the
  outputs are ``moving_mean`` and ``1/sqrt(moving_var + eps)``;
* ``fix_gamma=True``: gamma is treated as 1 and its gradient is 0;
* the moving statistics are updated **by the backward pass** (``_backward_BatchNorm``),
  ``moving = moving*momentum + batch*(1-momentum)`` with the biased variance, as MXNet's
  ``BatchNormBackwardImpl`` does. A training forward alone leaves them unchanged: the real
  MXNet reference cases (``bncnn``, ``sym_convnet``: ``aux_after_train_forward`` equals the
  stored aux states, ``train/step1`` has exactly one update) confirm this.

Per-channel statistics are reduction kernels over an ``(outer, C, inner)`` view; per-channel
factors inside elementwise kernels are wrapped in a trivial one-element reduction
(:func:`_once`) so the scheduler computes them once per task instead of once per element.
LayerNorm, InstanceNorm and L2Normalization are one kernel forward (row statistics hoisted by
the scheduler); their hidden outputs (mean/std/var/norm) are written only when visible, the
backward ops recompute what they need.

GroupNorm follows MXNet 1.9.1 (``src/operator/nn/group_norm{.cc,-inl.h}``): data ``(N, C, ...)``
is normalised per ``(sample, group of C/num_groups channels)``; ``gamma``/``beta`` are
per-channel ``(C,)``; the hidden outputs are ``mean`` and ``std = sqrt(var + eps)`` of shape
``(N, num_groups)``. Group statistics go to small per-group kernels first (a group can be
long: C/G * H * W elements), the elementwise kernels read them.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..graph import Entry
from ..params import Param, ParamSpec, enum, optional, parse_bool, parse_float, parse_int
from ..registry import OpDef, simple
from .common import g, outputs_of
from .reduce import _fwd_attrs, long_rows, require_float, row_stat, row_view

C = K.const


def _once(e: K.Expr) -> K.Expr:
    """``e`` as a one-element sum: the scheduler hoists it to the loop level its indices
    depend on (once per task for a per-channel factor) instead of the innermost loop."""
    return K.reduce("sum", e, [K.reduce_axis(1, "h")])


def _row_fns(ctx, view: K.TensorRef, fn, n: int, dt: str, name: str):
    """Per-row statistics ``fn(row) -> n expressions`` for a kernel over ``view``: inline
    (hoisted once per row by the scheduler) unless the rows are so long and few that the
    scheduler would cut them into chunks; then each statistic comes from its own per-row
    kernel into a temporary, so chunks do not recompute it."""
    if not long_rows(view):
        return fn
    temps = [row_stat(ctx, view, lambda row, k=k: fn(row)[k], dt, f"{name}{k}")
             for k in range(n)]
    return lambda row: tuple(t[tuple(row) + (0,)] for t in temps)


def _param_dtype(d: str) -> str:
    return "float32" if d in ("float16", "bfloat16") else d


def _split3(shape, axis: int) -> tuple:
    return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))


def _norm_axis(axis: int, shape, op: str) -> int:
    nd = len(shape)
    if not -nd <= axis < nd:
        raise ShapeError(f"{op}: axis {axis} is out of range for input shape {tuple(shape)}")
    return axis % nd


# =============================================================================================
# BatchNorm
# =============================================================================================
BATCHNORM = ParamSpec(eps=Param(parse_float, 1e-3), momentum=Param(parse_float, 0.9),
                      fix_gamma=Param(parse_bool, True),
                      use_global_stats=Param(parse_bool, False),
                      output_mean_var=Param(parse_bool, False), axis=Param(parse_int, 1),
                      cudnn_off=Param(parse_bool, False),
                      min_calib_range=Param(optional(parse_float), None),
                      max_calib_range=Param(optional(parse_float), None))


class _ChannelViews:
    """data as (outer, C, inner) and helpers to index per-channel vectors."""

    def __init__(self, ref: K.TensorRef, axis: int) -> None:
        self.outer, self.c, self.inner = _split3(ref.shape, axis)
        self.v3 = K.TensorRef(ref.buf, (self.outer, self.c, self.inner), None, ref.offset)
        # elementwise kernels: channel last when there is no inner extent (vectorizes over C)
        self.flat = self.inner == 1

    def ew(self, ref: K.TensorRef) -> K.TensorRef:
        if self.flat:
            return K.TensorRef(ref.buf, (self.outer, self.c), None, ref.offset)
        return K.TensorRef(ref.buf, (self.outer, self.c, self.inner), None, ref.offset)

    def chan(self, idx: tuple) -> K.Expr:
        return idx[1]

    def per_channel(self, e: K.Expr) -> K.Expr:
        return e if self.flat else _once(e)

    def channel_reduce(self, ctx, out: K.TensorRef, body, name: str) -> None:
        """out[c] = finish(sum over (outer, inner) of body(o, c, i))"""
        ro, ri = K.reduce_axis(self.outer, "ro"), K.reduce_axis(self.inner, "ri")
        ov = out.reshape((self.c, 1))
        ctx.compute(ov, lambda c, z: body(ro.var, c, ri.var, [ro, ri]), name)


def _vec(ref: K.TensorRef, c: K.Expr, dt: str) -> K.Expr:
    return K.cast(dt, ref[c])


@simple("BatchNorm", fusion="complex", params=BATCHNORM)
class BatchNorm(OpDef):
    uses_train_mode = True

    def arguments(self, a):
        return ["data", "gamma", "beta"]

    def aux_names(self, a):
        return ["moving_mean", "moving_var"]

    def outputs(self, a):
        return ["output", "mean", "var"]

    def num_visible_outputs(self, a):
        return 3 if a.output_mean_var else 1

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None, None, None]
        ax = _norm_axis(a.axis, x, "BatchNorm")
        c = (x[ax],)
        return [x, c, c, c, c], [x, c, c]

    def infer_type(self, a, t):
        d = t[0]
        if d is None:
            return t, [None] * 3
        require_float(self.name, d)
        p = _param_dtype(d)
        return [d] + [p] * (len(t) - 1), [d, p, p]

    def lower(self, ctx):
        a = ctx.attrs
        x, gamma, beta, mm, mv = ctx.inputs
        out, mean_o, var_o = ctx.outputs
        ax = _norm_axis(a.axis, x.shape, "BatchNorm")
        cv = _ChannelViews(x, ax)
        pt = mean_o.dtype.name
        eps = a.eps
        if ctx.is_train and not a.use_global_stats:
            cnt = cv.outer * cv.inner
            xv = cv.v3

            def mean_body(o, c, i, axes):
                return K.reduce("sum", K.cast(pt, xv[o, c, i]), axes) / C(cnt, pt)

            cv.channel_reduce(ctx, mean_o, mean_body, "bn_mean")

            def invstd_body(o, c, i, axes):
                d = K.cast(pt, xv[o, c, i]) - mean_o[c]
                ssq = K.reduce("sum", d * d, axes)
                inv = C(1, pt) / K.sqrt(ssq / C(cnt, pt) + C(eps, pt))
                if eps == 0.0:
                    inv = K.select(ssq.eq(C(0, pt)), C(0, pt), inv)
                return inv

            cv.channel_reduce(ctx, var_o, invstd_body, "bn_invstd")
            mean_of = lambda c: mean_o[c]
            inv_of = lambda c: var_o[c]
        else:
            inv_of = lambda c: C(1, pt) / K.sqrt(_vec(mv, c, pt) + C(eps, pt))
            mean_of = lambda c: _vec(mm, c, pt)
            if a.output_mean_var:
                ctx.compute(mean_o, lambda c: mean_of(c), "bn_mean")
                ctx.compute(var_o, lambda c: inv_of(c), "bn_invstd")
        xe, oe = cv.ew(x), cv.ew(out)

        def f(*i):
            c = cv.chan(i)
            scale = inv_of(c) if a.fix_gamma else inv_of(c) * _vec(gamma, c, pt)
            v = (K.cast(pt, xe[i]) - cv.per_channel(mean_of(c))) * cv.per_channel(scale)
            return v + cv.per_channel(_vec(beta, c, pt))

        ctx.compute(oe, f, "bn_out")
        if a.fix_gamma and ctx.is_train:
            # MXNet's CPU BatchNorm writes 1 into a fixed gamma during a training forward, so
            # the optimizer's weight decay then acts on 1 (sym_convnet module_train shows it)
            ctx.compute(gamma, lambda c: C(1, gamma.dtype), "bn_fix_gamma")

    def reference(self, a, inputs, is_train=False):
        x, gamma, beta, mm, mv = inputs
        if a.fix_gamma and is_train:
            gamma[...] = 1
        ax = _norm_axis(a.axis, x.shape, "BatchNorm")
        red = tuple(i for i in range(x.ndim) if i != ax)
        bshape = [1] * x.ndim
        bshape[ax] = x.shape[ax]
        xd = x.astype(np.float64)
        if is_train and not a.use_global_stats:
            mean = xd.mean(axis=red)
            var = xd.var(axis=red)
        else:
            mean, var = mm.astype(np.float64), mv.astype(np.float64)
        inv = 1.0 / np.sqrt(var + a.eps)
        w = np.ones_like(inv) if a.fix_gamma else gamma.astype(np.float64)
        y = (xd - mean.reshape(bshape)) * (inv * w).reshape(bshape) + \
            beta.astype(np.float64).reshape(bshape)
        pd = np.float32 if x.dtype == np.float16 else x.dtype
        return [y.astype(x.dtype), mean.astype(pd), inv.astype(pd)]

    def gradient(self, node, ograds):
        x, gamma, _beta, mm, mv = node.inputs
        dx, dg, db = outputs_of("_backward_BatchNorm", ograds[0], x, gamma, Entry(node, 1),
                                Entry(node, 2), mm, mv, n=3, name=f"{node.name}_backward",
                                **_fwd_attrs(node))
        return [dx, dg, db, None, None]


class _SyncBatchNormParams(ParamSpec):
    """``_contrib_SyncBatchNorm``'s own attributes; the BatchNorm fields it does not have
    take their fixed values (channels on axis 1, no calibration range)."""

    def parse(self, op: str, raw: dict, node_name: str = ""):
        out = super().parse(op, raw, node_name)
        out.update(axis=1, cudnn_off=False, min_calib_range=None, max_calib_range=None)
        return out


SYNC_BATCHNORM = _SyncBatchNormParams(
    eps=Param(parse_float, 1e-3), momentum=Param(parse_float, 0.9),
    fix_gamma=Param(parse_bool, True), use_global_stats=Param(parse_bool, False),
    output_mean_var=Param(parse_bool, False), ndev=Param(parse_int, 1),
    key=Param(str, ""))


@simple("_contrib_SyncBatchNorm", fusion="complex", params=SYNC_BATCHNORM)
class SyncBatchNorm(BatchNorm):
    """MXNet's cross-device BatchNorm (``src/operator/contrib/sync_batch_norm-inl.h``). mxc
    runs a graph on one device in one process, so the statistics over all ``ndev`` devices
    are this device's: BatchNorm on axis 1, and the same gradient."""

    def gradient(self, node, ograds):
        x, gamma, _beta, mm, mv = node.inputs
        attrs = {k: v for k, v in _fwd_attrs(node).items() if k not in ("ndev", "key")}
        dx, dg, db = outputs_of("_backward_BatchNorm", ograds[0], x, gamma, Entry(node, 1),
                                Entry(node, 2), mm, mv, n=3, name=f"{node.name}_backward",
                                **attrs)
        return [dx, dg, db, None, None]


@simple("_backward_BatchNorm", fusion="complex", differentiable=False, params=BATCHNORM)
class BackwardBatchNorm(OpDef):
    """Gradients of data, gamma, beta; in training mode also updates the moving statistics
    (inputs 5 and 6) in place, like MXNet's BatchNormBackwardImpl."""

    uses_train_mode = True

    def arguments(self, a):
        return ["ograd", "data", "gamma", "mean", "invstd", "moving_mean", "moving_var"]

    def outputs(self, a):
        return ["data_grad", "gamma_grad", "beta_grad"]

    def infer_shape(self, a, s):
        x = s[1] if s[1] is not None else s[0]
        if x is None:
            return s, [None] * 3
        ax = _norm_axis(a.axis, x, "BatchNorm")
        c = (x[ax],)
        return [x, x, c, c, c, c, c], [x, c, c]

    def infer_type(self, a, t):
        d = t[1] or t[0]
        if d is None:
            return t, [None] * 3
        p = _param_dtype(d)
        return [d, d, p, p, p, p, p], [d, p, p]

    def lower(self, ctx):
        a = ctx.attrs
        dy, x, gamma, mean_s, inv_s, mm, mv = ctx.inputs
        dx, dg, db = ctx.outputs
        ax = _norm_axis(a.axis, x.shape, "BatchNorm")
        cv = _ChannelViews(x, ax)
        pt = dg.dtype.name
        eps, mom = a.eps, a.momentum
        cnt = cv.outer * cv.inner
        xv = cv.v3
        dyv = K.TensorRef(dy.buf, xv.shape, None, dy.offset)
        train = ctx.is_train and not a.use_global_stats
        if train:
            mean_of = lambda c: mean_s[c]
            inv_of = lambda c: inv_s[c]
        else:
            mean_of = lambda c: _vec(mm, c, pt)
            inv_of = lambda c: C(1, pt) / K.sqrt(_vec(mv, c, pt) + C(eps, pt))
        w_of = (lambda c: C(1, pt)) if a.fix_gamma else (lambda c: _vec(gamma, c, pt))

        cv.channel_reduce(ctx, db, lambda o, c, i, axes: K.reduce(
            "sum", K.cast(pt, dyv[o, c, i]), axes), "bn_dbeta")

        def dotp(o, c, i, axes):
            return K.reduce("sum", (K.cast(pt, xv[o, c, i]) - mean_of(c)) *
                            K.cast(pt, dyv[o, c, i]), axes)

        if a.fix_gamma:
            dot = ctx.temp((cv.c,), pt)
            cv.channel_reduce(ctx, dot, dotp, "bn_dot")
            ctx.compute(dg, lambda c: C(0, pt), "bn_dgamma0")
            k_of = lambda c: dot[c] * inv_of(c) * inv_of(c)
        else:
            cv.channel_reduce(ctx, dg, lambda o, c, i, axes: dotp(o, c, i, axes) * inv_of(c),
                              "bn_dgamma")
            k_of = lambda c: dg[c] * inv_of(c)

        xe, dye, dxe = cv.ew(x), cv.ew(dy), cv.ew(dx)

        def f(*i):
            c = cv.chan(i)
            iw = cv.per_channel(inv_of(c) * w_of(c))
            d = K.cast(pt, dye[i])
            if not train:
                return d * iw
            k = cv.per_channel(k_of(c) / C(cnt, pt))
            gm = cv.per_channel(db[c] / C(cnt, pt))
            return (d - gm - (K.cast(pt, xe[i]) - cv.per_channel(mean_of(c))) * k) * iw

        ctx.compute(dxe, f, "bn_dx")
        if train:
            m = C(mom, pt)
            one_m = C(1.0 - mom, pt)
            ctx.compute(mm, lambda c: mm[c] * m + mean_s[c] * one_m, "bn_update_mean")

            def new_var(c):
                inv = K.cast("float64", inv_s[c])
                var = K.cast(pt, C(1, "float64") / (inv * inv) - C(eps, "float64"))
                return mv[c] * m + var * one_m

            ctx.compute(mv, new_var, "bn_update_var")


def np_batchnorm_backward(a, dy, x, gamma, mm, mv, train: bool):
    """numpy gradients (dx, dgamma, dbeta) and updated (moving_mean, moving_var)."""
    ax = a.axis % x.ndim
    red = tuple(i for i in range(x.ndim) if i != ax)
    bs = [1] * x.ndim
    bs[ax] = x.shape[ax]
    xd, dyd = x.astype(np.float64), dy.astype(np.float64)
    n = x.size // x.shape[ax]
    if train:
        mean, var = xd.mean(axis=red), xd.var(axis=red)
    else:
        mean, var = mm.astype(np.float64), mv.astype(np.float64)
    inv = 1 / np.sqrt(var + a.eps)
    w = np.ones_like(inv) if a.fix_gamma else gamma.astype(np.float64)
    sdy = dyd.sum(axis=red)
    dot = ((xd - mean.reshape(bs)) * dyd).sum(axis=red)
    if train:
        dx = (dyd - (sdy / n).reshape(bs) - (xd - mean.reshape(bs)) *
              (dot * inv * inv / n).reshape(bs)) * (inv * w).reshape(bs)
        new_mm = mm * a.momentum + mean * (1 - a.momentum)
        new_mv = mv * a.momentum + var * (1 - a.momentum)
    else:
        dx = dyd * (inv * w).reshape(bs)
        new_mm, new_mv = mm, mv
    dg = np.zeros_like(inv) if a.fix_gamma else dot * inv
    return dx, dg, sdy, new_mm, new_mv


# =============================================================================================
# LayerNorm
# =============================================================================================
LAYERNORM = ParamSpec(axis=Param(parse_int, -1), eps=Param(parse_float, 1e-5),
                      output_mean_var=Param(parse_bool, False))


def _row_stats(xv: K.TensorRef, row: tuple, eps: float, dt: str):
    """(mean, std) of one row of a row view: reductions hoisted to the row's loop level."""
    m = xv.shape[-1]
    r1, r2 = K.reduce_axis(m, "mu"), K.reduce_axis(m, "va")
    mean = K.reduce("sum", K.cast(dt, xv[row + (r1.var,)]), [r1]) / C(m, dt)
    d = K.cast(dt, xv[row + (r2.var,)]) - mean
    var = K.reduce("sum", d * d, [r2]) / C(m, dt)
    return mean, K.sqrt(var + C(eps, dt))


def _stat_view(ref: K.TensorRef) -> K.TensorRef:
    """A per-row statistic (shape = data with axis set to 1) as (rows..., 1)."""
    return K.TensorRef(ref.buf, tuple(ref.shape) + (1,), None, ref.offset)


class _MeanStdNorm(OpDef):
    """LayerNorm / GroupNorm's signature: (data, gamma, beta) -> output and, with
    ``output_mean_var``, the mean and std of each normalized group."""

    def arguments(self, a):
        return ["data", "gamma", "beta"]

    def outputs(self, a):
        return ["output", "mean", "std"]

    def num_visible_outputs(self, a):
        return 3 if a.output_mean_var else 1


@simple("LayerNorm", fusion="complex", params=LAYERNORM)
class LayerNorm(_MeanStdNorm):
    def infer_type(self, a, t):
        require_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None] * 3
        ax = _norm_axis(a.axis, x, "LayerNorm")
        st = tuple(1 if i == ax else d for i, d in enumerate(x))
        return [x, (x[ax],), (x[ax],)], [x, st, st]

    def lower(self, ctx):
        a = ctx.attrs
        x, gamma, beta = ctx.inputs
        out, mean_o, std_o = ctx.outputs
        ax = _norm_axis(a.axis, x.shape, "LayerNorm")
        dt = "float64" if x.dtype.name == "float64" else "float32"
        xv, ov = row_view(x, ax), row_view(out, ax)
        stats = _row_fns(ctx, ov, lambda row: _row_stats(xv, row, a.eps, dt), 2, dt, "ln")

        def f(*i):
            row, j = i[:-1], i[-1]
            mean, std = stats(row)
            y = (K.cast(dt, xv[i]) - mean) / std
            return y * K.cast(dt, gamma[j]) + K.cast(dt, beta[j])

        ctx.compute(ov, f, "layernorm")
        if a.output_mean_var:
            o, _m, inner = _split3(x.shape, ax)
            rows = (o, inner) if inner != 1 else (o,)
            mv = K.TensorRef(mean_o.buf, rows, None, mean_o.offset)
            sv = K.TensorRef(std_o.buf, rows, None, std_o.offset)
            ctx.compute(_stat_view(mv), lambda *i: _row_stats(xv, i[:-1], a.eps, dt)[0],
                        "layernorm_mean")
            ctx.compute(_stat_view(sv), lambda *i: _row_stats(xv, i[:-1], a.eps, dt)[1],
                        "layernorm_std")

    def reference(self, a, inputs, is_train=False):
        x, gamma, beta = inputs
        ax = _norm_axis(a.axis, x.shape, "LayerNorm")
        xd = x.astype(np.float64)
        mean = xd.mean(axis=ax, keepdims=True)
        std = np.sqrt(xd.var(axis=ax, keepdims=True) + a.eps)
        bs = [1] * x.ndim
        bs[ax] = x.shape[ax]
        y = (xd - mean) / std * gamma.astype(np.float64).reshape(bs) + \
            beta.astype(np.float64).reshape(bs)
        return [y.astype(x.dtype), mean.astype(x.dtype), std.astype(x.dtype)]

    def gradient(self, node, ograds):
        x, gamma, _beta = node.inputs
        return outputs_of("_backward_LayerNorm", ograds[0], x, gamma, n=3,
                          name=f"{node.name}_backward", **_fwd_attrs(node))


@simple("_backward_LayerNorm", fusion="complex", differentiable=False, params=LAYERNORM)
class BackwardLayerNorm(OpDef):
    def arguments(self, a):
        return ["ograd", "data", "gamma"]

    def outputs(self, a):
        return ["data_grad", "gamma_grad", "beta_grad"]

    def infer_shape(self, a, s):
        x = s[1] if s[1] is not None else s[0]
        if x is None:
            return s, [None] * 3
        ax = _norm_axis(a.axis, x, "LayerNorm")
        return [x, x, (x[ax],)], [x, (x[ax],), (x[ax],)]

    def infer_type(self, a, t):
        d = t[1] or t[0]
        return [d, d, d], [d, d, d]

    def lower(self, ctx):
        a = ctx.attrs
        dy, x, gamma = ctx.inputs
        dx, dg, db = ctx.outputs
        ax = _norm_axis(a.axis, x.shape, "LayerNorm")
        dt = "float64" if x.dtype.name == "float64" else "float32"
        o, m, inner = _split3(x.shape, ax)
        rows = (o, inner) if inner != 1 else (o,)
        xv, dyv, dxv = row_view(x, ax), row_view(dy, ax), row_view(dx, ax)
        mean_t, std_t = ctx.temp(rows, dt), ctx.temp(rows, dt)
        ctx.compute(_stat_view(mean_t), lambda *i: _row_stats(xv, i[:-1], a.eps, dt)[0],
                    "ln_mean")
        ctx.compute(_stat_view(std_t), lambda *i: _row_stats(xv, i[:-1], a.eps, dt)[1],
                    "ln_std")

        def gdy(row, k):
            return K.cast(dt, gamma[k]) * K.cast(dt, dyv[row + (k,)])

        def xhat(row, k):
            return (K.cast(dt, xv[row + (k,)]) - mean_t[row]) / std_t[row]

        def sums(row):
            r1, r2 = K.reduce_axis(m, "g1"), K.reduce_axis(m, "g2")
            return (K.reduce("sum", gdy(row, r1.var), [r1]) / C(m, dt),
                    K.reduce("sum", gdy(row, r2.var) * xhat(row, r2.var), [r2]) / C(m, dt))

        row_sums = _row_fns(ctx, dxv, sums, 2, dt, "ln_dsum")

        def f(*i):
            row, j = i[:-1], i[-1]
            s1, s2 = row_sums(row)
            return (gdy(row, j) - s1 - xhat(row, j) * s2) / std_t[row]

        ctx.compute(dxv, f, "ln_dx")
        # gamma/beta gradients: sums over every row, per position along the axis
        x3 = K.TensorRef(x.buf, (o, m, inner), None, x.offset)
        dy3 = K.TensorRef(dy.buf, (o, m, inner), None, dy.offset)
        mean3 = K.TensorRef(mean_t.buf, (o, inner), None, 0)
        std3 = K.TensorRef(std_t.buf, (o, inner), None, 0)

        def col_sum(body):
            def fn(j, z):
                ro, ri = K.reduce_axis(o, "ro"), K.reduce_axis(inner, "ri")
                return K.reduce("sum", body(ro.var, j, ri.var), [ro, ri])
            return fn

        ctx.compute(dg.reshape((m, 1)), col_sum(
            lambda r, j, i: K.cast(dt, dy3[r, j, i]) * (K.cast(dt, x3[r, j, i]) - mean3[r, i])
            / std3[r, i]), "ln_dgamma")
        ctx.compute(db.reshape((m, 1)), col_sum(lambda r, j, i: K.cast(dt, dy3[r, j, i])),
                    "ln_dbeta")


# =============================================================================================
# InstanceNorm
# =============================================================================================
INSTANCENORM = ParamSpec(eps=Param(parse_float, 1e-3))


def _inst_view(ref: K.TensorRef) -> K.TensorRef:
    s = ref.shape
    return K.TensorRef(ref.buf, (s[0], s[1], math.prod(s[2:])), None, ref.offset)


def _inst_stats(xv: K.TensorRef, n, c, eps: float, dt: str):
    """(mean, 1/sqrt(var + eps)) of instance (n, c)."""
    m = xv.shape[-1]
    r1, r2 = K.reduce_axis(m, "mu"), K.reduce_axis(m, "va")
    mean = K.reduce("sum", K.cast(dt, xv[n, c, r1.var]), [r1]) / C(m, dt)
    d = K.cast(dt, xv[n, c, r2.var]) - mean
    var = K.reduce("sum", d * d, [r2]) / C(m, dt)
    return mean, C(1, dt) / K.sqrt(var + C(eps, dt))


@simple("InstanceNorm", fusion="complex", params=INSTANCENORM)
class InstanceNorm(OpDef):
    def infer_type(self, a, t):
        require_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def arguments(self, a):
        return ["data", "gamma", "beta"]

    def outputs(self, a):
        return ["output", "mean", "var"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None] * 3
        if len(x) < 3:
            raise ShapeError(f"InstanceNorm: input must have at least 3 dims (batch, channel, "
                             f"spatial...), got {tuple(x)}")
        c = (x[1],)
        return [x, c, c], [x, (x[0], x[1]), (x[0], x[1])]

    def lower(self, ctx):
        x, gamma, beta = ctx.inputs
        out = ctx.outputs[0]
        dt = "float64" if x.dtype.name == "float64" else "float32"
        xv, ov = _inst_view(x), _inst_view(out)
        eps = ctx.attrs.eps
        stats = _row_fns(ctx, ov, lambda row: _inst_stats(xv, *row, eps, dt), 2, dt, "in")

        def f(n, c, j):
            mean, inv = stats((n, c))
            y = (K.cast(dt, xv[n, c, j]) - mean) * inv
            return y * _once(K.cast(dt, gamma[c])) + _once(K.cast(dt, beta[c]))

        ctx.compute(ov, f, "instancenorm")

    def reference(self, a, inputs, is_train=False):
        x, gamma, beta = inputs
        xd = x.astype(np.float64)
        red = tuple(range(2, x.ndim))
        mean = xd.mean(axis=red, keepdims=True)
        var = xd.var(axis=red, keepdims=True)
        bs = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        y = (xd - mean) / np.sqrt(var + a.eps) * gamma.astype(np.float64).reshape(bs) + \
            beta.astype(np.float64).reshape(bs)
        return [y.astype(x.dtype), mean.reshape(x.shape[:2]).astype(x.dtype),
                var.reshape(x.shape[:2]).astype(x.dtype)]

    def gradient(self, node, ograds):
        x, gamma, _beta = node.inputs
        return outputs_of("_backward_InstanceNorm", ograds[0], x, gamma, n=3,
                          name=f"{node.name}_backward", **_fwd_attrs(node))


@simple("_backward_InstanceNorm", fusion="complex", differentiable=False, params=INSTANCENORM)
class BackwardInstanceNorm(OpDef):
    def arguments(self, a):
        return ["ograd", "data", "gamma"]

    def outputs(self, a):
        return ["data_grad", "gamma_grad", "beta_grad"]

    def infer_shape(self, a, s):
        x = s[1] if s[1] is not None else s[0]
        if x is None:
            return s, [None] * 3
        return [x, x, (x[1],)], [x, (x[1],), (x[1],)]

    def infer_type(self, a, t):
        d = t[1] or t[0]
        return [d, d, d], [d, d, d]

    def lower(self, ctx):
        dy, x, gamma = ctx.inputs
        dx, dg, db = ctx.outputs
        dt = "float64" if x.dtype.name == "float64" else "float32"
        xv, dyv, dxv = _inst_view(x), _inst_view(dy), _inst_view(dx)
        nb, nc, m = xv.shape
        eps = ctx.attrs.eps

        def row_fn(row):
            n, c = row
            mean, inv = _inst_stats(xv, n, c, eps, dt)
            r1, r2 = K.reduce_axis(m, "g1"), K.reduce_axis(m, "g2")
            s1 = K.reduce("sum", K.cast(dt, dyv[n, c, r1.var]), [r1]) / C(m, dt)
            s2 = K.reduce("sum", K.cast(dt, dyv[n, c, r2.var]) *
                          (K.cast(dt, xv[n, c, r2.var]) - mean), [r2]) * inv / C(m, dt)
            return mean, inv, s1, s2

        stats = _row_fns(ctx, dxv, row_fn, 4, dt, "in_d")

        def f(n, c, j):
            mean, inv, s1, s2 = stats((n, c))
            xh = (K.cast(dt, xv[n, c, j]) - mean) * inv
            return (K.cast(dt, dyv[n, c, j]) - s1 - xh * s2) * inv * \
                _once(K.cast(dt, gamma[c]))

        ctx.compute(dxv, f, "in_dx")

        def dgamma(c, z):
            rn, rj = K.reduce_axis(nb, "rn"), K.reduce_axis(m, "rj")
            mean, inv = _inst_stats(xv, rn.var, c, eps, dt)
            return K.reduce("sum", K.cast(dt, dyv[rn.var, c, rj.var]) *
                            (K.cast(dt, xv[rn.var, c, rj.var]) - mean) * inv, [rn, rj])

        ctx.compute(dg.reshape((nc, 1)), dgamma, "in_dgamma")

        def dbeta(c, z):
            rn, rj = K.reduce_axis(nb, "rn"), K.reduce_axis(m, "rj")
            return K.reduce("sum", K.cast(dt, dyv[rn.var, c, rj.var]), [rn, rj])

        ctx.compute(db.reshape((nc, 1)), dbeta, "in_dbeta")


# =============================================================================================
# GroupNorm
# =============================================================================================
GROUPNORM = ParamSpec(num_groups=Param(parse_int, 1), eps=Param(parse_float, 1e-5),
                      output_mean_var=Param(parse_bool, False))


def _check_groups(a, shape) -> None:
    if a.num_groups <= 0:
        raise OpError(f"GroupNorm: num_groups must be positive, got {a.num_groups}")
    if len(shape) < 3:
        raise ShapeError(f"GroupNorm: input should have at least 3 dims (batch, channel, "
                         f"spatial...), got {tuple(shape)}")
    if shape[1] % a.num_groups:
        raise ShapeError(f"GroupNorm: number of channels {shape[1]} must be divisible by "
                         f"num_groups={a.num_groups} (data {tuple(shape)})")


class _GroupViews:
    """data as (N, G, Cg, S) for elementwise kernels and (N, G, Cg*S) for group statistics;
    per-channel vectors as (G, Cg)."""

    def __init__(self, shape, groups: int) -> None:
        self.n, self.g = shape[0], groups
        self.cg, self.s = shape[1] // groups, math.prod(shape[2:])
        self.m = self.cg * self.s

    def v4(self, ref: K.TensorRef) -> K.TensorRef:
        return K.TensorRef(ref.buf, (self.n, self.g, self.cg, self.s), None, ref.offset)

    def v3(self, ref: K.TensorRef) -> K.TensorRef:
        return K.TensorRef(ref.buf, (self.n, self.g, self.m), None, ref.offset)

    def chan(self, ref: K.TensorRef) -> K.TensorRef:
        return K.TensorRef(ref.buf, (self.g, self.cg), None, ref.offset)


def _group_stats(ctx, gv: _GroupViews, x: K.TensorRef, eps: float, dt: str):
    """(N, G, 1) temporaries with each group's mean and std = sqrt(biased var + eps)."""
    x3 = gv.v3(x)
    mean_t, std_t = ctx.temp((gv.n, gv.g, 1), dt), ctx.temp((gv.n, gv.g, 1), dt)

    def mean(n, g, z):
        r = K.reduce_axis(gv.m, "gm")
        return K.reduce("sum", K.cast(dt, x3[n, g, r.var]), [r]) / C(gv.m, dt)

    def std(n, g, z):
        r = K.reduce_axis(gv.m, "gv")
        d = K.cast(dt, x3[n, g, r.var]) - mean_t[n, g, z]
        return K.sqrt(K.reduce("sum", d * d, [r]) / C(gv.m, dt) + C(eps, dt))

    ctx.compute(mean_t, mean, "gn_mean")
    ctx.compute(std_t, std, "gn_std")
    return mean_t, std_t


def _compute_dtype(d) -> str:
    return "float64" if str(d) == "float64" else "float32"


@simple("GroupNorm", fusion="complex", params=GROUPNORM)
class GroupNorm(_MeanStdNorm):

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None] * 3
        _check_groups(a, x)
        c = (x[1],)
        for name, got in (("gamma", s[1]), ("beta", s[2])):
            if got is not None and tuple(got) != c:
                raise ShapeError(f"GroupNorm: {name} must have shape {c} (one value per "
                                 f"channel of data {tuple(x)}), got {tuple(got)}")
        moments = (x[0], a.num_groups)
        return [tuple(x), c, c], [tuple(x), moments, moments]

    def infer_type(self, a, t):
        d = next((x for x in t if x is not None), None)
        if d is None:
            return t, [None] * 3
        require_float(self.name, d)
        return [d] * 3, [d] * 3

    def lower(self, ctx):
        a = ctx.attrs
        x, gamma, beta = ctx.inputs
        out, mean_o, std_o = ctx.outputs
        if x.size == 0:
            return
        gv = _GroupViews(x.shape, a.num_groups)
        dt = _compute_dtype(x.dtype.name)
        mean_t, std_t = _group_stats(ctx, gv, x, a.eps, dt)
        x4, o4, g2, b2 = gv.v4(x), gv.v4(out), gv.chan(gamma), gv.chan(beta)

        def f(n, g, c, s):
            y = (K.cast(dt, x4[n, g, c, s]) - mean_t[n, g, 0]) / std_t[n, g, 0]
            return y * _once(K.cast(dt, g2[g, c])) + _once(K.cast(dt, b2[g, c]))

        ctx.compute(o4, f, "groupnorm")
        if a.output_mean_var:
            for t, o, name in ((mean_t, mean_o, "gn_mean_out"), (std_t, std_o, "gn_std_out")):
                ctx.compute(o.reshape((gv.n, gv.g, 1)), lambda n, g, z, t=t: t[n, g, z], name)

    def reference(self, a, inputs, is_train=False):
        x, gamma, beta = inputs
        n, c = x.shape[:2]
        xg = x.astype(np.float64).reshape((n, a.num_groups, -1))
        mean = xg.mean(axis=2, keepdims=True)
        std = np.sqrt(xg.var(axis=2, keepdims=True) + a.eps)
        bs = (1, c) + (1,) * (x.ndim - 2)
        y = ((xg - mean) / std).reshape(x.shape) * gamma.astype(np.float64).reshape(bs) + \
            beta.astype(np.float64).reshape(bs)
        return [y.astype(x.dtype), mean.reshape(n, -1).astype(x.dtype),
                std.reshape(n, -1).astype(x.dtype)]

    def gradient(self, node, ograds):
        x, gamma, _beta = node.inputs
        return outputs_of("_backward_GroupNorm", ograds[0], x, gamma, n=3,
                          name=f"{node.name}_backward", **_fwd_attrs(node))


@simple("_backward_GroupNorm", fusion="complex", differentiable=False, params=GROUPNORM)
class BackwardGroupNorm(OpDef):
    """Inputs (ograd, data, gamma); the group statistics are recomputed (two small kernels)
    rather than read from the forward's hidden outputs, which float16 data would round.

    With xhat = (x - mean) / std and sums over the group's M elements:
    dx = (dy*gamma - sum(dy*gamma)/M - xhat * sum(dy*gamma*xhat)/M) / std,
    dgamma[c] = sum over (n, spatial) of dy*xhat, dbeta[c] = sum of dy."""

    def arguments(self, a):
        return ["ograd", "data", "gamma"]

    def outputs(self, a):
        return ["data_grad", "gamma_grad", "beta_grad"]

    def infer_shape(self, a, s):
        x = s[1] if s[1] is not None else s[0]
        if x is None:
            return s, [None] * 3
        c = (x[1],)
        return [x, x, c], [x, c, c]

    def infer_type(self, a, t):
        d = t[1] or t[0]
        return [d, d, d], [d, d, d]

    def lower(self, ctx):
        a = ctx.attrs
        dy, x, gamma = ctx.inputs
        dx, dg, db = ctx.outputs
        gv = _GroupViews(x.shape, a.num_groups)
        if x.size == 0:
            for o in (dg, db):
                if o.size:
                    ctx.compute(o, lambda c, o=o: C(0, o.dtype), "gn_dzero")
            return
        dt = _compute_dtype(x.dtype.name)
        mean_t, std_t = _group_stats(ctx, gv, x, a.eps, dt)
        x4, dy4, dx4, g2 = gv.v4(x), gv.v4(dy), gv.v4(dx), gv.chan(gamma)

        def xhat(n, g, c, s):
            return (K.cast(dt, x4[n, g, c, s]) - mean_t[n, g, 0]) / std_t[n, g, 0]

        def per_channel(body):
            def fn(g, c, z):
                rn, rs = K.reduce_axis(gv.n, "rn"), K.reduce_axis(gv.s, "rs")
                return K.reduce("sum", body(rn.var, g, c, rs.var), [rn, rs])
            return fn

        ctx.compute(db.reshape((gv.g, gv.cg, 1)),
                    per_channel(lambda n, g, c, s: K.cast(dt, dy4[n, g, c, s])), "gn_dbeta")
        ctx.compute(dg.reshape((gv.g, gv.cg, 1)), per_channel(
            lambda n, g, c, s: K.cast(dt, dy4[n, g, c, s]) * xhat(n, g, c, s)), "gn_dgamma")

        def gdy(n, g, c, s):
            return K.cast(dt, dy4[n, g, c, s]) * K.cast(dt, g2[g, c])

        def group_sum(body):
            def fn(n, g, z):
                rc, rs = K.reduce_axis(gv.cg, "rc"), K.reduce_axis(gv.s, "rs")
                return K.reduce("sum", body(n, g, rc.var, rs.var), [rc, rs]) / C(gv.m, dt)
            return fn

        s1, s2 = ctx.temp((gv.n, gv.g, 1), dt), ctx.temp((gv.n, gv.g, 1), dt)
        ctx.compute(s1, group_sum(gdy), "gn_dsum")
        ctx.compute(s2, group_sum(lambda *i: gdy(*i) * xhat(*i)), "gn_dsum_xhat")

        def f(n, g, c, s):
            d = gdy(n, g, c, s) - s1[n, g, 0] - xhat(n, g, c, s) * s2[n, g, 0]
            return d / std_t[n, g, 0]

        ctx.compute(dx4, f, "gn_dx")


# =============================================================================================
# L2Normalization
# =============================================================================================
L2NORM = ParamSpec(eps=Param(parse_float, 1e-10),
                   mode=Param(enum("instance", "channel", "spatial"), "instance"))


def _l2_view(ref: K.TensorRef, mode: str) -> K.TensorRef:
    """Row view: the normalised elements of one norm are the last axis."""
    s = ref.shape
    if mode == "instance":
        return K.TensorRef(ref.buf, (s[0], math.prod(s[1:])), None, ref.offset)
    if mode == "spatial":
        return K.TensorRef(ref.buf, (s[0] * s[1], math.prod(s[2:])), None, ref.offset)
    return row_view(K.TensorRef(ref.buf, (s[0], s[1], math.prod(s[2:])), None, ref.offset), 1)


def _l2_norm(xv: K.TensorRef, row: tuple, eps: float, dt: str) -> K.Expr:
    r = K.reduce_axis(xv.shape[-1], "l2")
    v = K.cast(dt, xv[row + (r.var,)])
    return K.sqrt(K.reduce("sum", v * v, [r]) + C(eps, dt))


@simple("L2Normalization", fusion="complex", params=L2NORM)
class L2Normalization(OpDef):
    def infer_type(self, a, t):
        require_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def outputs(self, a):
        return ["output", "norm"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None, None]
        if a.mode == "instance":
            if len(x) < 2:
                raise ShapeError(f"L2Normalization: input must have at least 2 dims, got "
                                 f"{tuple(x)}")
            return s, [x, (x[0],)]
        if len(x) < 3:
            raise ShapeError(f"L2Normalization: mode='{a.mode}' needs at least 3 dims, got "
                             f"{tuple(x)}")
        if a.mode == "channel":
            return s, [x, (x[0],) + tuple(x[2:])]
        return s, [x, (x[0], x[1])]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        out = ctx.outputs[0]
        dt = "float64" if x.dtype.name == "float64" else "float32"
        xv, ov = _l2_view(x, a.mode), _l2_view(out, a.mode)
        norm = _row_fns(ctx, ov, lambda row: (_l2_norm(xv, row, a.eps, dt),), 1, dt, "l2")
        ctx.compute(ov, lambda *i: K.cast(dt, xv[i]) / norm(i[:-1])[0], "l2normalization")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        xd = x.astype(np.float64)
        red = {"instance": tuple(range(1, x.ndim)), "channel": (1,),
               "spatial": tuple(range(2, x.ndim))}[a.mode]
        n = np.sqrt(np.sum(xd * xd, axis=red, keepdims=True) + a.eps)
        return [(xd / n).astype(x.dtype), np.squeeze(n, axis=red).astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_L2Normalization", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward", **_fwd_attrs(node))]


@simple("_backward_L2Normalization", fusion="complex", differentiable=False, params=L2NORM)
class BackwardL2Normalization(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        x = s[1] if s[1] is not None else s[0]
        return [x, x], [x]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, x = ctx.inputs
        dx = ctx.outputs[0]
        dt = "float64" if x.dtype.name == "float64" else "float32"
        xv, dyv, dxv = (_l2_view(r, a.mode) for r in (x, dy, dx))

        def row_fn(row):
            r = K.reduce_axis(xv.shape[-1], "dl")
            return _l2_norm(xv, row, a.eps, dt), K.reduce(
                "sum", K.cast(dt, dyv[row + (r.var,)]) * K.cast(dt, xv[row + (r.var,)]), [r])

        stats = _row_fns(ctx, dxv, row_fn, 2, dt, "dl2")

        def f(*i):
            n, s = stats(i[:-1])
            return (K.cast(dt, dyv[i]) - K.cast(dt, xv[i]) * s / (n * n)) / n

        ctx.compute(dxv, f, "dl2normalization")


# =============================================================================================
# LRN
# =============================================================================================
def _parse_nsize(v):
    n = parse_int(v)
    if n <= 0 or n % 2 == 0:
        raise ValueError(f"LRN only supports odd positive values for nsize, got {n}")
    return n


LRN = ParamSpec(alpha=Param(parse_float, 1e-4), beta=Param(parse_float, 0.75),
                knorm=Param(parse_float, 2.0), nsize=Param(_parse_nsize))


def _lrn_view(ref: K.TensorRef) -> K.TensorRef:
    s = ref.shape
    return K.TensorRef(ref.buf, (s[0], s[1], math.prod(s[2:])), None, ref.offset)


def _window_sum(xv: K.TensorRef, n, c, j, nsize: int, fn) -> K.Expr:
    """sum of fn(value at channel c') for c' in [c - nsize//2, c + nsize//2] inside [0, C)."""
    nc = xv.shape[1]
    r = K.reduce_axis(nsize, "w")
    cc = c + (r.var - C(nsize // 2, "int64"))
    valid = cc.ge(C(0, "int64")) & cc.lt(C(nc, "int64"))
    ci = K.maximum(K.minimum(cc, C(nc - 1, "int64")), C(0, "int64"))
    v = fn(ci)
    return K.reduce("sum", K.select(valid, v, C(0, v.dtype)), [r])


def _lrn_scale(xv, n, c, j, a, dt):
    def sq(ci):
        v = K.cast(dt, xv[n, ci, j])
        return v * v
    return C(a.knorm, dt) + C(a.alpha / a.nsize, dt) * _window_sum(xv, n, c, j, a.nsize, sq)


@simple("LRN", fusion="complex", params=LRN)
class LRNOp(OpDef):
    def infer_type(self, a, t):
        require_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def outputs(self, a):
        return ["output", "tmp_norm"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        x = s[0]
        if x is None:
            return s, [None, None]
        if len(x) != 4:
            raise ShapeError(f"LRN: input data should be 4-D (batch, channel, y, x), got "
                             f"{tuple(x)}")
        return s, [x, x]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        out = ctx.outputs[0]
        dt = "float64" if x.dtype.name == "float64" else "float32"
        xv, ov = _lrn_view(x), _lrn_view(out)

        def f(n, c, j):
            s = _lrn_scale(xv, n, c, j, a, dt)
            return K.cast(dt, xv[n, c, j]) * K.binop("pow", s, C(-a.beta, dt))

        ctx.compute(ov, f, "lrn")

    @staticmethod
    def np_scale(a, x):
        xd = x.astype(np.float64)
        sq = xd * xd
        h = a.nsize // 2
        pad = np.pad(sq, ((0, 0), (h, h), (0, 0), (0, 0)))
        win = sum(pad[:, i:i + x.shape[1]] for i in range(a.nsize))
        return a.knorm + a.alpha / a.nsize * win

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        s = self.np_scale(a, x)
        return [(x.astype(np.float64) * s ** (-a.beta)).astype(x.dtype), s.astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_LRN", ograds[0], node.inputs[0], name=f"{node.name}_backward",
                  **_fwd_attrs(node))]


@simple("_backward_LRN", fusion="complex", differentiable=False, params=LRN)
class BackwardLRN(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        x = s[1] if s[1] is not None else s[0]
        return [x, x], [x]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, x = ctx.inputs
        dx = ctx.outputs[0]
        dt = "float64" if x.dtype.name == "float64" else "float32"
        xv, dyv, dxv = _lrn_view(x), _lrn_view(dy), _lrn_view(dx)
        sv = ctx.temp(xv.shape, dt)
        ctx.compute(sv, lambda n, c, j: _lrn_scale(xv, n, c, j, a, dt), "lrn_scale")

        def f(n, c, j):
            def term(ci):
                return K.cast(dt, dyv[n, ci, j]) * K.cast(dt, xv[n, ci, j]) * \
                    K.binop("pow", sv[n, ci, j], C(-a.beta - 1.0, dt))
            w = _window_sum(xv, n, c, j, a.nsize, term)
            return K.cast(dt, dyv[n, c, j]) * K.binop("pow", sv[n, c, j], C(-a.beta, dt)) - \
                C(2.0 * a.beta * a.alpha / a.nsize, dt) * K.cast(dt, xv[n, c, j]) * w

        ctx.compute(dxv, f, "dlrn")


__all__ = ["OpError", "np_batchnorm_backward"]
