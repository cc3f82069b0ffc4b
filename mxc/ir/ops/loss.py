"""Loss heads: SoftmaxOutput (alias Softmax), Linear/Logistic/MAE RegressionOutput, MakeLoss,
softmax_cross_entropy and smooth_l1.

MXNet's loss heads compute a forward value (softmax, identity, sigmoid) and a *fixed*
backward: the gradient of the loss they stand for, ignoring the head gradient (except
SoftmaxOutput with ``out_grad=True``). Labels receive zero gradients.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..graph import Entry
from ..params import Param, ParamSpec, enum, parse_bool, parse_float
from ..registry import OpDef, register, simple
from .common import collect_buffers, flat, flat_map, g

C = K.const

_INT_CLAMP = float(1 << 30)


def _as_int(v: K.Expr) -> K.Expr:
    """C's static_cast<int> of a label value (truncation), clamped so the cast is defined."""
    if v.dtype.kind in "iu":
        return K.cast("int64", v)
    f = K.minimum(K.maximum(v, C(-_INT_CLAMP, v.dtype)), C(_INT_CLAMP, v.dtype))
    return K.cast("int64", f)


def _np_int(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return np.trunc(np.nan_to_num(np.clip(v, -_INT_CLAMP, _INT_CLAMP))).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# SoftmaxOutput
# ---------------------------------------------------------------------------------------------
_SMO_PARAMS = ParamSpec(
    grad_scale=Param(parse_float, 1.0),
    ignore_label=Param(parse_float, -1.0),
    multi_output=Param(parse_bool, False),
    use_ignore=Param(parse_bool, False),
    preserve_shape=Param(parse_bool, False),
    normalization=Param(enum("null", "batch", "valid"), "null"),
    out_grad=Param(parse_bool, False),
    smooth_alpha=Param(parse_float, 0.0))


def _softmax_rows(ctx, x: K.TensorRef, o: K.TensorRef) -> None:
    """o = softmax over the last axis of 2-D views."""
    n = x.shape[-1]

    def f(i, j):
        r1 = K.reduce_axis(n)
        mx = K.reduce("max", x[i, r1.var], [r1])
        r2 = K.reduce_axis(n)
        s = K.reduce("sum", K.call("exp", x[i, r2.var] - mx), [r2])
        return K.call("exp", x[i, j] - mx) / s

    ctx.compute(o, f, "softmax")


def _softmax_axis1(ctx, x: K.TensorRef, o: K.TensorRef) -> None:
    """o = softmax over axis 1 of 3-D views (N, C, D): max and sum go to temps so every
    kernel stays vectorized along D."""
    N, Cn, D = x.shape
    dt = x.dtype
    mx = ctx.temp((N, 1, D), dt)
    sm = ctx.temp((N, 1, D), dt)

    def fmax(n, _, d):
        r = K.reduce_axis(Cn)
        return K.reduce("max", x[n, r.var, d], [r])

    def fsum(n, _, d):
        r = K.reduce_axis(Cn)
        return K.reduce("sum", K.call("exp", x[n, r.var, d] - mx[n, 0, d]), [r])

    ctx.compute(mx, fmax, "softmax_max")
    ctx.compute(sm, fsum, "softmax_sum")
    ctx.compute(o, lambda n, c, d: K.call("exp", x[n, c, d] - mx[n, 0, d]) / sm[n, 0, d],
                "softmax")


def _smo_views(a, shape) -> tuple:
    """(kind, shape used by the kernels): 'rows' -> (R, C), 'multi' -> (N, C, D)."""
    size = math.prod(shape)
    if a.multi_output:
        n, c = shape[0], shape[1]
        return "multi", (n, c, size // max(n * c, 1))
    if a.preserve_shape:
        return "rows", (size // max(shape[-1], 1), shape[-1])
    n = shape[0]
    return "rows", (n, size // max(n, 1))


def _np_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


@simple("SoftmaxOutput", aliases=("Softmax",), fusion="complex", params=_SMO_PARAMS)
class SoftmaxOutput(OpDef):
    variable_inputs = True

    def arguments(self, a):
        return ["data", "label"]

    def infer_shape(self, a, s):
        d, lab = s
        if d is None:
            return s, [None]
        d = tuple(d)
        if len(d) == 0:
            raise ShapeError("SoftmaxOutput: data must have at least one dimension")
        if lab is not None and tuple(lab) == d:
            return [d, d], [d]
        if a.multi_output:
            if len(d) < 2:
                raise ShapeError(f"SoftmaxOutput(multi_output): data {d} needs >= 2 dims")
            l1 = (d[0], math.prod(d) // max(d[0] * d[1], 1))
            l2 = (d[0],) + d[2:]
            l3 = (d[0], 1) + d[2:]
            if lab is None:
                lab = l1
            elif tuple(lab) not in (l1, l2, l3):
                raise ShapeError(f"SoftmaxOutput: expecting label shape {l1} or {l2}, got "
                                 f"{tuple(lab)}")
        else:
            want = d[:-1]
            if lab is None:
                lab = want
            elif tuple(lab) != want:
                raise ShapeError(f"SoftmaxOutput: label shape {tuple(lab)} does not match "
                                 f"the expected {want} for data {d}")
        return [d, tuple(lab)], [d]

    def infer_type(self, a, t):
        dt = t[0] if t[0] is not None else t[1]
        return [dt, t[1] if t[1] is not None else dt], [dt]

    def lower(self, ctx):
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        kind, shp = _smo_views(ctx.attrs, x.shape)
        if o.size == 0:
            return
        if kind == "multi" and shp[2] > 1:
            _softmax_axis1(ctx, x.reshape(shp), o.reshape(shp))
        else:  # rows, or multi_output with nothing after the class axis
            shp2 = (shp[0], shp[1])
            _softmax_rows(ctx, x.reshape(shp2), o.reshape(shp2))

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        _, shp = _smo_views(a, x.shape)
        xd = x.astype(np.float64).reshape(shp)
        y = _np_softmax(xd, 1)
        return [y.reshape(x.shape).astype(x.dtype)]

    def gradient(self, node, ograds):
        a = node.parsed
        y = type(node.inputs[0])(node, 0)
        ins = [y, node.inputs[1]] + ([ograds[0]] if a.out_grad else [])
        attrs = {k: a[k] for k in _SMO_PARAMS.params}
        dx = g("_backward_SoftmaxOutput", *ins, name=f"{node.name}_backward", **attrs)
        return [dx, g("zeros_like", node.inputs[1], name=f"{node.name}_label_grad")]


def softmax_output_grad_np(a, out, label, ograd=None):
    """MXNet's SoftmaxOutput backward in numpy (the tests' oracle)."""
    out = np.asarray(out, np.float64)
    label = np.asarray(label, np.float64)
    ign = int(_np_int(a.ignore_label))
    alpha = a.smooth_alpha
    if out.shape == label.shape:
        gr = (out - label) * a.grad_scale
        if a.out_grad:
            gr = gr * ograd
        return gr
    kind, shp = _smo_views(a, out.shape)
    if kind == "multi":
        n, c, d = shp
        o3 = out.reshape(shp)
        lab = _np_int(label.reshape(n, d))
        onehot = (np.arange(c)[None, :, None] == lab[:, None, :])
        if alpha > 0:
            gr = o3 - np.where(onehot, 1.0 - alpha, alpha / (c - 1))
        else:
            gr = o3 - onehot
        if a.use_ignore:
            gr = np.where((lab == ign)[:, None, :], 0.0, gr)
        cnt = lab.size
        if a.normalization == "batch":
            cnt = n
        elif a.normalization == "valid":
            cnt = max(int(np.sum(lab != ign)), 1)
        else:
            cnt = 1
        gr = gr * (a.grad_scale / (1 if a.normalization == "valid" else d) / cnt)
    else:
        r, c = shp
        o2 = out.reshape(shp)
        labf = _np_int(label.reshape(-1))
        lab = labf[np.minimum(np.arange(r), labf.size - 1)]
        onehot = (np.arange(c)[None, :] == lab[:, None])
        if alpha > 0:
            gr = o2 - np.where(onehot, 1.0 - alpha, alpha / (c - 1))
        else:
            gr = o2 - onehot
        if a.use_ignore:
            gr = np.where((lab == ign)[:, None], 0.0, gr)
        if a.normalization == "batch":
            cnt = labf.size
        elif a.normalization == "valid":
            cnt = max(int(np.sum(labf != ign)), 1)
        else:
            cnt = 1
        gr = gr * (a.grad_scale / cnt)
    if a.out_grad:
        gr = gr * np.asarray(ograd, np.float64).reshape(gr.shape)
    return gr.reshape(out.shape)


@simple("_backward_SoftmaxOutput", fusion="complex", differentiable=False, params=_SMO_PARAMS)
class BackwardSoftmaxOutput(OpDef):
    """Inputs: output, label (+ ograd when out_grad); output: data gradient."""

    def arguments(self, a):
        return ["output", "label"] + (["ograd"] if a.out_grad else [])

    def infer_shape(self, a, s):
        return s, [s[0]]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        out, lab = ctx.inputs[:2]
        og = ctx.inputs[2] if a.out_grad else None
        dx = ctx.outputs[0]
        dt = out.dtype
        if dx.size == 0:
            return
        gs = a.grad_scale
        if tuple(out.shape) == tuple(lab.shape):
            if og is not None:
                flat_map(ctx, lambda o_, l_, g_: C(gs, dt) * (o_ - K.cast(dt, l_)) * g_,
                         name="dsmo_prob")
            else:
                flat_map(ctx, lambda o_, l_: (o_ - K.cast(dt, l_)) * C(gs, dt),
                         name="dsmo_prob")
            return
        ign = int(_np_int(a.ignore_label))
        alpha = a.smooth_alpha
        kind, shp = _smo_views(a, out.shape)
        nclass = shp[1]
        flab = flat(lab)
        # normalizer: a constant, or (valid) a count computed once into a temp
        cnt_ref = None
        if a.normalization == "valid":
            cnt_ref = ctx.temp((1,), dt)
            nl = flab.size

            def fcnt(i):
                r = K.reduce_axis(nl)
                c = K.reduce("sum", K.select(_as_int(flab[r.var]).ne(C(ign, "int64")),
                                             C(1, dt), C(0, dt)), [r])
                return K.maximum(c, C(1, dt))

            ctx.compute(cnt_ref, fcnt, "dsmo_valid_count")
        if kind == "multi":
            n, _, d = shp
            const_scale = gs / (1 if a.normalization == "valid" else d) / \
                (n if a.normalization == "batch" else 1)
        else:
            const_scale = gs / (flab.size if a.normalization == "batch" else 1)

        def grad_elem(o_, k, cls):
            if alpha > 0:
                sub = K.select(cls.eq(k), C(1.0 - alpha, dt), C(alpha / (nclass - 1), dt))
            else:
                sub = K.select(cls.eq(k), C(1, dt), C(0, dt))
            gv = o_ - sub
            if a.use_ignore:
                gv = K.select(k.eq(C(ign, "int64")), C(0, dt), gv)
            gv = gv * C(const_scale, dt)
            if cnt_ref is not None:
                gv = gv / cnt_ref[0]
            return gv

        if kind == "multi":
            n, _, d = shp
            o3 = out.reshape(shp)
            l2 = K.TensorRef(lab.buf, (n, d), None, lab.offset)
            g3 = og.reshape(shp) if og is not None else None

            def f(i, j, m):
                v = grad_elem(o3[i, j, m], _as_int(l2[i, m]), j)
                return v * g3[i, j, m] if g3 is not None else v

            ctx.compute(dx.reshape(shp), f, "dsoftmax_output")
        else:
            r = shp[0]
            o2 = out.reshape(shp)
            g2 = og.reshape(shp) if og is not None else None
            nl = flab.size

            def f(i, j):
                li = K.minimum(i, C(nl - 1, "int64")) if nl < r else i
                v = grad_elem(o2[i, j], _as_int(flab[li]), j)
                return v * g2[i, j] if g2 is not None else v

            ctx.compute(dx.reshape(shp), f, "dsoftmax_output")

    def reference(self, a, inputs, is_train=False):
        out, lab = inputs[:2]
        og = inputs[2] if a.out_grad else None
        return [softmax_output_grad_np(a, out, lab, og).astype(out.dtype)]


# ---------------------------------------------------------------------------------------------
# regression outputs
# ---------------------------------------------------------------------------------------------
_REG_PARAMS = ParamSpec(grad_scale=Param(parse_float, 1.0))


def _sigmoid_np(x):
    return 1.0 / (1.0 + np.exp(-x))


class _Regression(OpDef):
    variable_inputs = True
    params = _REG_PARAMS
    fusion = "elementwise"
    kind = "linear"
    bwd = ""

    def arguments(self, a):
        return ["data", "label"]

    def inplace(self, a):
        return [(0, 0)]

    def infer_shape(self, a, s):
        d, lab = s
        if d is None:
            return s, [None]
        d = tuple(d)
        if lab is None:
            lab = (d[0],) if len(d) == 2 and d[1] == 1 else d
        else:
            lab = tuple(lab)
            if (len(lab) == 0 or len(d) == 0 or lab[0] != d[0]
                    or math.prod(lab) != math.prod(d)):
                raise ShapeError(f"{self.name}: shape inconsistent, provided label {lab}, "
                                 f"inferred data shape {d}")
        return [d, lab], [d]

    def infer_type(self, a, t):
        dt = t[0] if t[0] is not None else t[1]
        return [dt, t[1] if t[1] is not None else dt], [dt]

    def lower(self, ctx):
        o = flat(ctx.outputs[0])
        x = flat(ctx.inputs[0])
        if self.kind == "logistic":
            ctx.compute(o, lambda i: K.call("sigmoid", x[i]), "logistic")
        else:
            ctx.compute(o, lambda i: x[i], "regression_copy")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if self.kind == "logistic":
            return [_sigmoid_np(x.astype(np.float64)).astype(x.dtype)]
        return [x.copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        y = type(node.inputs[0])(node, 0)
        dx = g(self.bwd, node.inputs[1], y, name=f"{node.name}_backward",
               grad_scale=a.grad_scale)
        return [dx, g("zeros_like", node.inputs[1], name=f"{node.name}_label_grad")]


def regression_grad_np(kind, grad_scale, out, label):
    out = np.asarray(out, np.float64)
    lab = np.asarray(label, np.float64).reshape(out.shape)
    num_output = np.asarray(label).size / np.asarray(label).shape[0]
    if kind == "mae":
        gr = np.where(out - lab > 0, 1.0, -1.0)
    else:
        gr = out - lab
    return gr * (grad_scale / num_output)


class _BackwardRegression(OpDef):
    params = _REG_PARAMS
    fusion = "elementwise"
    differentiable = False
    kind = "linear"

    def arguments(self, a):
        return ["label", "output"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        lab, out = ctx.inputs
        dx = flat(ctx.outputs[0])
        fl, fo = flat(lab), flat(out)
        dt = out.dtype
        num_output = lab.size / lab.shape[0] if lab.ndim and lab.shape[0] else 1.0
        sc = C(ctx.attrs.grad_scale / num_output, dt)
        if self.kind == "mae":
            ctx.compute(dx, lambda i: K.select((fo[i] - K.cast(dt, fl[i])).gt(C(0, dt)),
                                               C(1, dt), C(-1, dt)) * sc, "dmae")
        else:
            ctx.compute(dx, lambda i: (fo[i] - K.cast(dt, fl[i])) * sc, "dregression")

    def reference(self, a, inputs, is_train=False):
        lab, out = inputs
        return [regression_grad_np(self.kind, a.grad_scale, out, lab).astype(out.dtype)]


for _kind, _name, _bname in (("linear", "LinearRegressionOutput", "_backward_linear_reg_out"),
                             ("logistic", "LogisticRegressionOutput",
                              "_backward_logistic_reg_out"),
                             ("mae", "MAERegressionOutput", "_backward_mae_reg_out")):
    register(type(f"Op_{_name}", (_Regression,), {"name": _name, "kind": _kind,
                                                  "bwd": _bname}))
    register(type(f"Op{_bname}", (_BackwardRegression,), {"name": _bname, "kind": _kind}))


# ---------------------------------------------------------------------------------------------
# MakeLoss
# ---------------------------------------------------------------------------------------------
_MAKELOSS_PARAMS = ParamSpec(grad_scale=Param(parse_float, 1.0),
                             valid_thresh=Param(parse_float, 0.0),
                             normalization=Param(enum("null", "batch", "valid"), "null"))


@simple("MakeLoss", fusion="injective", params=_MAKELOSS_PARAMS)
class MakeLoss(OpDef):
    inplace_identity = True

    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        flat_map(ctx, lambda v: v, name="copy")

    def reference(self, a, inputs, is_train=False):
        return [inputs[0].copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_MakeLoss", node.inputs[0], name=f"{node.name}_backward",
                  grad_scale=a.grad_scale, valid_thresh=a.valid_thresh,
                  normalization=a.normalization)]


def make_loss_grad_np(a, x):
    x = np.asarray(x)
    if a.normalization == "valid":
        cnt = max(float(np.sum(x.astype(np.float64) > a.valid_thresh)), 1.0)
        return np.full(x.shape, a.grad_scale / cnt)
    if a.normalization == "batch":
        rows = math.prod(x.shape[:-1]) if x.ndim else 1
        return np.full(x.shape, a.grad_scale / rows)
    return np.full(x.shape, a.grad_scale)


@simple("_backward_MakeLoss", fusion="elementwise", differentiable=False,
        params=_MAKELOSS_PARAMS)
class BackwardMakeLoss(OpDef):
    """The gradient MakeLoss emits: grad_scale, divided by the batch (MXNet's FlatTo2D rows:
    the product of all but the last dim) or by the count of elements > valid_thresh."""

    def lower(self, ctx):
        a = ctx.attrs
        x = flat(ctx.inputs[0])
        o = flat(ctx.outputs[0])
        dt = o.dtype
        if o.size == 0:
            return
        if a.normalization == "valid":
            n = x.size

            def f(i):
                r = K.reduce_axis(n)
                cnt = K.reduce("sum", K.select(x[r.var].gt(C(a.valid_thresh, x.dtype)),
                                               C(1, dt), C(0, dt)), [r])
                return C(a.grad_scale, dt) / K.maximum(cnt, C(1, dt))

            cnt_ref = ctx.temp((1,), dt)
            ctx.compute(cnt_ref, f, "dmakeloss_valid")
            ctx.compute(o, lambda i: cnt_ref[0], "dmakeloss")
        else:
            shape = ctx.inputs[0].shape
            rows = math.prod(shape[:-1]) if len(shape) else 1
            v = a.grad_scale / rows if a.normalization == "batch" else a.grad_scale
            ctx.compute(o, lambda i: C(v, dt), "dmakeloss")

    def reference(self, a, inputs, is_train=False):
        return [make_loss_grad_np(a, inputs[0]).astype(inputs[0].dtype)]


# ---------------------------------------------------------------------------------------------
# softmax_cross_entropy
# ---------------------------------------------------------------------------------------------
@simple("softmax_cross_entropy", fusion="complex")
class SoftmaxCrossEntropy(OpDef):
    def arguments(self, a):
        return ["data", "label"]

    def infer_shape(self, a, s):
        d, lab = s
        if d is None:
            return s, [None]
        d = tuple(d)
        if len(d) != 2:
            raise ShapeError(f"softmax_cross_entropy: data must be 2-D (batch, classes), got {d}")
        if lab is None:
            lab = (d[0],)
        elif tuple(lab) != (d[0],):
            raise ShapeError(f"softmax_cross_entropy: label must have shape {(d[0],)}, got "
                             f"{tuple(lab)}")
        return [d, tuple(lab)], [(1,)]

    def infer_type(self, a, t):
        dt = t[0] if t[0] is not None else t[1]
        return [dt, t[1] if t[1] is not None else dt], [dt]

    def lower(self, ctx):
        x, lab = ctx.inputs
        o = ctx.outputs[0]
        n, c = x.shape
        dt = x.dtype

        def f(_):
            rn = K.reduce_axis(n)
            i = rn.var
            r1 = K.reduce_axis(c)
            mx = K.reduce("max", x[i, r1.var], [r1])
            r2 = K.reduce_axis(c)
            lse = mx + K.call("log", K.reduce("sum", K.call("exp", x[i, r2.var] - mx), [r2]))
            k = K.maximum(K.minimum(_as_int(lab[i]), C(c - 1, "int64")), C(0, "int64"))
            return K.reduce("sum", lse - x[i, k], [rn])

        if n == 0:
            ctx.compute(o, lambda _: C(0, dt), "softmax_ce")
        else:
            ctx.compute(o, f, "softmax_ce")

    def reference(self, a, inputs, is_train=False):
        x, lab = inputs
        xd = x.astype(np.float64)
        p = _np_softmax(xd, 1)
        k = np.clip(_np_int(lab), 0, x.shape[1] - 1)
        v = -np.sum(np.log(p[np.arange(x.shape[0]), k]))
        return [np.array([v]).astype(x.dtype)]

    def gradient(self, node, ograds):
        dx = g("_backward_softmax_cross_entropy", ograds[0], node.inputs[0], node.inputs[1],
               name=f"{node.name}_backward")
        return [dx, g("zeros_like", node.inputs[1], name=f"{node.name}_label_grad")]


@simple("_backward_softmax_cross_entropy", fusion="complex", differentiable=False)
class BackwardSoftmaxCrossEntropy(OpDef):
    def arguments(self, a):
        return ["ograd", "data", "label"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        og, x, lab = ctx.inputs
        o = ctx.outputs[0]
        c = x.shape[1]
        dt = x.dtype

        def f(i, j):
            r1 = K.reduce_axis(c)
            mx = K.reduce("max", x[i, r1.var], [r1])
            r2 = K.reduce_axis(c)
            s = K.reduce("sum", K.call("exp", x[i, r2.var] - mx), [r2])
            p = K.call("exp", x[i, j] - mx) / s
            k = _as_int(lab[i])
            return (p - K.select(j.eq(k), C(1, dt), C(0, dt))) * og[0]

        ctx.compute(o, f, "dsoftmax_ce")


# ---------------------------------------------------------------------------------------------
# smooth_l1
# ---------------------------------------------------------------------------------------------
_SL1_PARAMS = ParamSpec(scalar=Param(parse_float, 1.0), is_int=Param(parse_bool, True))


def _smooth_l1(x: K.Expr, sigma: float) -> K.Expr:
    dt = x.dtype
    bsq = sigma * sigma
    ib = 1.0 / bsq
    return K.select(x.gt(C(ib, dt)), x - C(0.5 * ib, dt),
                    K.select(x.lt(C(-ib, dt)), -x - C(0.5 * ib, dt), C(0.5 * bsq, dt) * x * x))


def _smooth_l1_grad(x: K.Expr, sigma: float) -> K.Expr:
    dt = x.dtype
    bsq = sigma * sigma
    ib = 1.0 / bsq
    return K.select(x.gt(C(ib, dt)), C(1, dt),
                    K.select(x.lt(C(-ib, dt)), C(-1, dt), C(bsq, dt) * x))


@simple("smooth_l1", fusion="elementwise", params=_SL1_PARAMS)
class SmoothL1(OpDef):
    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        s = ctx.attrs.scalar
        flat_map(ctx, lambda v: _smooth_l1(v, s), name="smooth_l1")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0].astype(np.float64)
        b = a.scalar * a.scalar
        ib = 1.0 / b
        y = np.where(x > ib, x - 0.5 * ib, np.where(x < -ib, -x - 0.5 * ib, 0.5 * b * x * x))
        return [y.astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_smooth_l1", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward", scalar=node.parsed.scalar)]


@simple("_backward_smooth_l1", fusion="elementwise", differentiable=False, params=_SL1_PARAMS)
class BackwardSmoothL1(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def lower(self, ctx):
        s = ctx.attrs.scalar
        flat_map(ctx, lambda g_, v: g_ * _smooth_l1_grad(v, s), name="dsmooth_l1")


__all__ = ["OpError", "make_loss_grad_np", "regression_grad_np", "softmax_output_grad_np"]


# ---------------------------------------------------------------------------------------------
# CTCLoss (MXNet src/operator/nn/ctc_loss-inl.h over warp-ctc's CpuCTC)
# ---------------------------------------------------------------------------------------------
_CTC_PARAMS = ParamSpec(use_data_lengths=Param(parse_bool, False),
                        use_label_lengths=Param(parse_bool, False),
                        blank_label=Param(enum("first", "last"), "first"))


def _ctc_arguments(a) -> list:
    return (["data", "label"] + (["data_lengths"] if a.use_data_lengths else [])
            + (["label_lengths"] if a.use_label_lengths else []))


def _ctc_check(a, s) -> None:
    d, lab = s[0], s[1]
    if len(d) != 3:
        raise ShapeError(f"CTCLoss: data must be 3-D (sequence_length, batch_size, "
                         f"alphabet_size), got {tuple(d)}")
    if lab is not None and (len(lab) != 2 or lab[0] != d[1]):
        raise ShapeError(f"CTCLoss: label must be (batch_size, label_sequence_length) = "
                         f"({d[1]}, L), got {tuple(lab)}")
    for name, sh in zip(_ctc_arguments(a)[2:], s[2:]):
        if sh is not None and tuple(sh) != (d[1],):
            raise ShapeError(f"CTCLoss: {name} must have shape ({d[1]},), got {tuple(sh)}")


def _log_add(a: K.Expr, b: K.Expr) -> K.Expr:
    """log(exp(a) + exp(b)) that stays -inf when both are -inf (warp-ctc's log_plus)."""
    m = K.maximum(a, b)
    ninf = C(float("-inf"), a.dtype)
    return K.select(m.eq(ninf), ninf, m + K.call("log1p", K.call("exp", K.minimum(a, b) - m)))


@simple("CTCLoss", aliases=("ctc_loss", "_contrib_CTCLoss", "_contrib_ctc_loss"),
        fusion="opaque", params=_CTC_PARAMS)
class CTCLoss(OpDef):
    """Connectionist temporal classification loss of unnormalised activations ``data``
    (T, N, C) against ``label`` (N, L); output: the loss per batch item (N,).

    Like MXNet (warp-ctc), the gradient w.r.t. ``data`` (softmax minus the normalised
    alpha*beta occupancy) is computed in the forward pass into a hidden second output, which
    the backward pass scales by the head gradient. ``blank_label='first'``: blank is class 0
    and label value 0 pads; ``'last'``: blank is C-1 and -1 pads. Without ``label_lengths``
    a label ends at its first padding value. Time steps past ``data_lengths`` get zero
    gradient. An impossible alignment (label + repeats longer than the sequence) gives loss 0
    and zero gradient, as warp-ctc's CpuCTC returns.
    """

    def arguments(self, a):
        return _ctc_arguments(a)

    def outputs(self, a):
        return ["output", "grad"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None, None]
        _ctc_check(a, s)
        s = list(s)
        for i in range(2, len(s)):
            s[i] = s[i] if s[i] is not None else (d[1],)
        return s, [(d[1],), tuple(d)]

    def infer_type(self, a, t):
        dt = t[0]
        if dt is not None and dt not in ("float32", "float64"):
            raise OpError(f"CTCLoss: data must be float32 or float64, got {dt}")
        return [dt if i == 0 else (x if x is not None else dt) for i, x in enumerate(t)], \
            [dt, dt]

    def lower(self, ctx):
        _lower_ctc(ctx, ctx.attrs)

    def reference(self, a, inputs, is_train=False):
        return list(ctc_np(a, *inputs))

    def gradient(self, node, ograds):
        dx = g("_backward_CTCLoss", ograds[0], Entry(node, 1), name=f"{node.name}_backward")
        return [dx] + [g("zeros_like", e, name=f"{node.name}_in{i}_grad")
                       for i, e in enumerate(node.inputs[1:], 1)]


@simple("_backward_CTCLoss", fusion="broadcast", differentiable=False)
class BackwardCTCLoss(OpDef):
    """d data = grad (from the forward) * d loss, broadcast over time and classes."""

    def arguments(self, a):
        return ["ograd", "grad"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def lower(self, ctx):
        dy, gr = ctx.inputs
        o = ctx.outputs[0]
        if o.size:
            ctx.compute(o, lambda t, b, c: gr[t, b, c] * K.cast(o.dtype, dy[b]), "ctc_backward")

    def reference(self, a, inputs, is_train=False):
        dy, gr = inputs
        return [(gr * dy[None, :, None]).astype(gr.dtype)]


def _ctc_label_len(a, lab: K.TensorRef, lens, b, L: int, pad: int, prog: list) -> K.Local:
    """The label length of batch item b: label_lengths[b], or the position of the first
    padding value."""
    n = K.Local("%ctc_L", K.INDEX)
    if lens is not None:
        prog.append(K.Assign(n, K.minimum(K.maximum(_as_int(lens[b]), C(0, K.INDEX)),
                                          C(L, K.INDEX))))
        return n
    found = K.Local("%ctc_found", K.INDEX)
    j = K.index_var("j")
    prog += [K.Assign(n, C(0, K.INDEX)), K.Assign(found, C(0, K.INDEX)),
             K.For(j, C(L, K.INDEX), [
                 K.Assign(found, K.maximum(found, K.select(_as_int(lab[b, j]).eq(
                     C(pad, K.INDEX)), C(1, K.INDEX), C(0, K.INDEX)))),
                 K.Assign(n, n + C(1, K.INDEX) - found)], "serial")]
    return n


def _lower_ctc(ctx, a) -> None:
    
    x, lab = ctx.inputs[0], ctx.inputs[1]
    extra = dict(zip(_ctc_arguments(a)[2:], ctx.inputs[2:]))
    loss, grad = ctx.outputs
    T, N, Cn = (int(v) for v in x.shape)
    L = int(lab.shape[1])
    if N == 0:
        return
    if T == 0 or Cn == 0:
        ctx.compute(loss, lambda b: C(0, loss.dtype), "ctc_empty")
        return
    dt = x.dtype
    S = 2 * L + 1
    blank = 0 if a.blank_label == "first" else Cn - 1
    pad = 0 if a.blank_label == "first" else -1
    I = K.INDEX

    def ci(v):
        return C(int(v), I)

    ninf = C(float("-inf"), dt)
    # log-softmax over classes, every (t, b) (steps past a sequence's length are unused)
    lp = ctx.temp((T, N, Cn), dt.name)

    def log_softmax(t, b, c):
        r1, r2 = K.reduce_axis(Cn), K.reduce_axis(Cn)
        m = K.reduce("max", x[t, b, r1.var], [r1])
        den = K.reduce("sum", K.call("exp", x[t, b, r2.var] - m), [r2])
        return x[t, b, c] - m - K.call("log", den)

    ctx.compute(lp, log_softmax, "ctc_log_softmax")
    ext = ctx.temp((N, S), "int64")          # label with blanks: blank l1 blank l2 ... blank
    alpha = ctx.temp((N, T, S), dt.name)
    beta = ctx.temp((N, T, S), dt.name)
    occ = ctx.temp((N, Cn), dt.name)         # log sum of alpha*beta per class at one step

    b = K.index_var("b")
    prog: list = []
    nl = _ctc_label_len(a, lab, extra.get("label_lengths"), b, L, pad, prog)
    tl = K.Local("%ctc_T", I)
    if "data_lengths" in extra:
        prog.append(K.Assign(tl, K.minimum(K.maximum(_as_int(extra["data_lengths"][b]), ci(0)),
                                           ci(T))))
    else:
        prog.append(K.Assign(tl, ci(T)))
    sb = K.Local("%ctc_S", I)
    prog.append(K.Assign(sb, nl * ci(2) + ci(1)))
    s = K.index_var("s")
    if L:
        raw = _as_int(lab[b, K.minimum((s - ci(1)) // ci(2), ci(L - 1))])
    else:
        raw = ci(blank)
    lab_s = K.minimum(K.maximum(raw, ci(0)), ci(Cn - 1))   # out-of-range labels are clamped
    prog.append(K.For(s, ci(S), [K.Store(ext.buf, ext.flat_index((b, s)),
                                         K.select((s % ci(2)).eq(ci(0)), ci(blank), lab_s))],
                      "serial"))

    def e(si):  # extended label at a position clamped into the row
        return ext[b, K.minimum(K.maximum(si, ci(0)), ci(S - 1))]

    def lpv(t, cls):
        return lp[K.minimum(K.maximum(t, ci(0)), ci(T - 1)), b, cls]

    def cell(buf, t, si):
        return buf[b, K.minimum(K.maximum(t, ci(0)), ci(T - 1)),
                   K.minimum(K.maximum(si, ci(0)), ci(S - 1))]

    def store(buf, t, si, v):
        return K.Store(buf.buf, buf.flat_index((b, t, si)), v)

    # the step may skip a blank: not on a blank and not between repeated labels
    def can_skip_back(si):
        return si.ge(ci(2)) & e(si).ne(ci(blank)) & e(si).ne(e(si - ci(2)))

    def can_skip_fwd(si):
        return (si + ci(2)).lt(sb) & e(si).ne(ci(blank)) & e(si).ne(e(si + ci(2)))

    acc = K.Local("%ctc_acc", dt)
    t = K.index_var("t")
    s1, s2 = K.index_var("s"), K.index_var("s")
    # alphas: every cell -inf, then the first step and the recursion over t
    prog.append(K.For(t, ci(T), [K.For(s1, ci(S), [store(alpha, t, s1, ninf),
                                                   store(beta, t, s1, ninf)], "serial")],
                      "serial"))
    has_t = tl.gt(ci(0))
    prog.append(K.If(has_t, [
        store(alpha, ci(0), ci(0), lpv(ci(0), ci(blank))),
        K.If(nl.gt(ci(0)), [store(alpha, ci(0), ci(1), lpv(ci(0), e(ci(1))))])]))
    fwd = [K.Assign(acc, cell(alpha, t - ci(1), s2)),
           K.Assign(acc, K.select(s2.ge(ci(1)), _log_add(acc, cell(alpha, t - ci(1), s2 - ci(1))),
                                  acc)),
           K.Assign(acc, K.select(can_skip_back(s2),
                                  _log_add(acc, cell(alpha, t - ci(1), s2 - ci(2))), acc)),
           store(alpha, t, s2, acc + lpv(t, e(s2)))]
    prog.append(K.For(t, tl - ci(1), [K.For(s2, sb, fwd, "serial")], "serial", start=ci(1)))
    # log-likelihood: end in the last blank or the last label
    ll = K.Local("%ctc_ll", dt)
    last = tl - ci(1)
    prog += [K.Assign(ll, cell(alpha, last, sb - ci(1))),
             K.If(nl.gt(ci(0)), [K.Assign(ll, _log_add(ll, cell(alpha, last, sb - ci(2))))])]
    feasible = K.Local("%ctc_ok", K.BOOL)
    prog.append(K.Assign(feasible, has_t & ll.ne(ninf)))
    prog.append(K.Store(loss.buf, loss.flat_index((b,)), K.select(feasible, -ll, C(0, dt))))
    # betas, backwards in time
    s3 = K.index_var("s")
    prog.append(K.If(has_t, [
        store(beta, last, sb - ci(1), lpv(last, ci(blank))),
        K.If(nl.gt(ci(0)), [store(beta, last, sb - ci(2), lpv(last, e(sb - ci(2))))])]))
    tt = K.index_var("tt")
    tb = tl - ci(2) - tt
    bwd = [K.Assign(acc, cell(beta, tb + ci(1), s3)),
           K.Assign(acc, K.select((s3 + ci(1)).lt(sb),
                                  _log_add(acc, cell(beta, tb + ci(1), s3 + ci(1))), acc)),
           K.Assign(acc, K.select(can_skip_fwd(s3),
                                  _log_add(acc, cell(beta, tb + ci(1), s3 + ci(2))), acc)),
           store(beta, tb, s3, acc + lpv(tb, e(s3)))]
    prog.append(K.For(tt, K.maximum(tl - ci(1), ci(0)), [K.For(s3, sb, bwd, "serial")],
                      "serial"))
    # gradient: softmax - exp(log sum_{s: ext[s]=c} alpha*beta - log y_c - log p)
    t4, c4, s4, c5 = (K.index_var(n) for n in ("t", "c", "s", "c"))
    cls = e(s4)
    ab = cell(alpha, t4, s4) + cell(beta, t4, s4)
    occ_at = occ[b, cls]
    y = lp[t4, b, c5]
    gval = K.call("exp", y) - K.call("exp", occ[b, c5] - y - ll)
    # warp-ctc keeps the softmax where the occupancy is unset (-inf) or exactly log 1
    plain = occ[b, c5].eq(ninf) | occ[b, c5].eq(C(0.0, dt)) | y.eq(ninf)
    gval = K.select(plain, K.call("exp", y), gval)
    live = t4.lt(tl) & feasible
    step = [K.For(c4, ci(Cn), [K.Store(occ.buf, occ.flat_index((b, c4)), ninf)], "serial"),
            K.For(s4, sb, [K.Store(occ.buf, occ.flat_index((b, cls)), _log_add(occ_at, ab))],
                  "serial"),
            K.For(c5, ci(Cn), [K.Store(grad.buf, grad.flat_index((t4, b, c5)),
                                       K.select(live, gval, C(0, dt)))], "serial")]
    prog.append(K.For(t4, ci(T), step, "serial"))
    ctx.emit(K.Kernel("__K__", collect_buffers(prog), b, N, prog,
                      cost=T * S * 40 + T * Cn * 30, note="ctc_loss"))


def _np_log_add(a, b):
    m = np.maximum(a, b)
    with np.errstate(invalid="ignore"):
        r = m + np.log1p(np.exp(np.minimum(a, b) - m))
    return np.where(m == -np.inf, -np.inf, r)


def ctc_np(a, data, label, *lengths):
    """numpy CTC: loss (N,) and d loss / d data (T, N, C), computed in float64 with the
    forward (alpha) and backward (beta) recursions in log space."""
    extra = dict(zip(_ctc_arguments(a)[2:], lengths))
    T, N, Cn = data.shape
    x = data.astype(np.float64)
    lp = x - x.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    blank = 0 if a.blank_label == "first" else Cn - 1
    pad = 0 if a.blank_label == "first" else -1
    loss = np.zeros(N)
    grad = np.zeros((T, N, Cn))
    for b in range(N):
        labs = _np_int(label[b])
        if "label_lengths" in extra:
            nl = int(np.clip(_np_int(extra["label_lengths"][b]), 0, len(labs)))
        else:
            hit = np.nonzero(labs == pad)[0]
            nl = int(hit[0]) if hit.size else len(labs)
        tl = T if "data_lengths" not in extra else \
            int(np.clip(_np_int(extra["data_lengths"][b]), 0, T))
        seq = np.clip(labs[:nl], 0, Cn - 1)
        ext = np.full(2 * nl + 1, blank)
        ext[1::2] = seq
        S = len(ext)
        if tl == 0:
            continue
        al = np.full((tl, S), -np.inf)
        be = np.full((tl, S), -np.inf)
        al[0, 0] = lp[0, b, blank]
        if nl:
            al[0, 1] = lp[0, b, ext[1]]
        for t in range(1, tl):
            for s in range(S):
                v = al[t - 1, s]
                if s >= 1:
                    v = _np_log_add(v, al[t - 1, s - 1])
                if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                    v = _np_log_add(v, al[t - 1, s - 2])
                al[t, s] = v + lp[t, b, ext[s]]
        ll = al[tl - 1, S - 1] if not nl else _np_log_add(al[tl - 1, S - 1], al[tl - 1, S - 2])
        if ll == -np.inf:
            continue
        loss[b] = -ll
        be[tl - 1, S - 1] = lp[tl - 1, b, blank]
        if nl:
            be[tl - 1, S - 2] = lp[tl - 1, b, ext[S - 2]]
        for t in range(tl - 2, -1, -1):
            for s in range(S):
                v = be[t + 1, s]
                if s + 1 < S:
                    v = _np_log_add(v, be[t + 1, s + 1])
                if s + 2 < S and ext[s] != blank and ext[s] != ext[s + 2]:
                    v = _np_log_add(v, be[t + 1, s + 2])
                be[t, s] = v + lp[t, b, ext[s]]
        for t in range(tl):
            occ = np.full(Cn, -np.inf)
            for s in range(S):
                occ[ext[s]] = _np_log_add(occ[ext[s]], al[t, s] + be[t, s])
            y = lp[t, b]
            with np.errstate(invalid="ignore"):
                gv = np.exp(y) - np.exp(occ - y - ll)
            plain = (occ == -np.inf) | (occ == 0.0) | (y == -np.inf)
            grad[t, b] = np.where(plain, np.exp(y), gv)
    return loss.astype(data.dtype), grad.astype(data.dtype)
