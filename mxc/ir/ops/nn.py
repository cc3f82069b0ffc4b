"""Neural-network activation and regularisation layers: LeakyReLU (leaky, elu, selu, gelu,
prelu, rrelu) and Dropout.

Random numbers (Dropout masks, RReLU slopes) come from a counter-based hash of the node's
seed (``ctx.rng_seed()``, refilled before every forward run) and the element index, so a
mask is reproducible for a given seed and independent of the thread count; the backward
pass reads the mask the forward pass stored in its hidden ``mask`` output.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..params import Param, ParamSpec, enum, optional, parse_bool, parse_float, parse_shape
from ..registry import OpDef, simple
from .common import flat, flat_map, g, norm_axis, outputs_of, reduce_to

C = K.const

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946

# ---------------------------------------------------------------------------------------------
# counter-based random numbers
# ---------------------------------------------------------------------------------------------
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def hash64(seed: K.Expr, counter: K.Expr) -> K.Expr:
    """splitmix64 of ``seed + (counter + 1) * golden``: a uint64 expression."""
    u = "uint64"
    z = seed + (K.cast(u, counter) + C(1, u)) * C(_GOLDEN, u)
    z = (z ^ (z >> C(30, u))) * C(_MIX1, u)
    z = (z ^ (z >> C(27, u))) * C(_MIX2, u)
    return z ^ (z >> C(31, u))


def uniform01(seed_ref: K.TensorRef, counter: K.Expr, stream: int = 0) -> K.Expr:
    """A float32 uniform in [0, 1) (24 random bits) for element ``counter``; ``stream``
    decorrelates several random tensors drawn from one seed."""
    seed = seed_ref[0]
    if stream:
        seed = seed ^ C((stream * _MIX2) & (2 ** 64 - 1), "uint64")
    h = hash64(seed, counter)
    return K.cast("float32", h >> C(40, "uint64")) * C(1.0 / (1 << 24), "float32")


def _np_uniform(shape, rng=None):
    rng = rng if rng is not None else np.random.default_rng()
    return rng.random(shape)


# ---------------------------------------------------------------------------------------------
# LeakyReLU
# ---------------------------------------------------------------------------------------------
_LRELU_PARAMS = ParamSpec(
    act_type=Param(enum("rrelu", "leaky", "prelu", "elu", "selu", "gelu"), "leaky"),
    slope=Param(parse_float, 0.25),
    lower_bound=Param(parse_float, 0.125),
    upper_bound=Param(parse_float, 0.334))


def prelu_gamma_shape(gshape, dshape) -> tuple:
    """MXNet's expand_shape: place gamma's dims at data axes <= 1 (right-aligned there)."""
    gshape, dshape = tuple(gshape), tuple(dshape)
    result = [1] * len(dshape)
    s = len(gshape) - 1
    for i in range(len(dshape) - 1, -1, -1):
        if s >= 0 and i <= 1 and (dshape[i] == gshape[s] or gshape[s] == 1):
            result[i] = gshape[s]
            s -= 1
    if s != -1:
        raise ShapeError(f"LeakyReLU(prelu): cannot broadcast gamma {gshape} to data {dshape}")
    return tuple(result)


def _erf_np(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _in_float32(fn, x: K.Expr) -> K.Expr:
    """MXNet's mshadow_op::gelu / gelu_grad cast to float and back: float64 data gets float32
    precision there, so it does here."""
    if x.dtype.name == "float64":
        return K.cast("float64", fn(K.cast("float32", x)))
    return fn(x)


def _gelu(x: K.Expr) -> K.Expr:
    """0.5 * x * (1 + erf(x / sqrt(2))): MXNet 1.x's exact (erf) form, not the tanh one."""
    def f(v):
        return C(0.5, v.dtype) * v * (C(1, v.dtype) + K.call("erf", v * C(1 / math.sqrt(2),
                                                                           v.dtype)))
    return _in_float32(f, x)


def _gelu_grad(x: K.Expr) -> K.Expr:
    def f(v):
        cdf = C(0.5, v.dtype) * (C(1, v.dtype) + K.call("erf", v * C(1 / math.sqrt(2),
                                                                     v.dtype)))
        pdf = K.call("exp", C(-0.5, v.dtype) * v * v) * C(1 / math.sqrt(2 * math.pi), v.dtype)
        return cdf + v * pdf
    return _in_float32(f, x)


def np_gelu(x: np.ndarray) -> np.ndarray:
    """The exact erf form in float64 (the oracle; the kernels' float32 rounding of float64 data
    stays far inside the tests' tolerances, and finite differences need a smooth function)."""
    xd = x.astype(np.float64)
    return 0.5 * xd * (1 + _erf_np(xd / math.sqrt(2)))


@simple("LeakyReLU", fusion="elementwise", params=_LRELU_PARAMS)
class LeakyReLU(OpDef):
    uses_train_mode = True
    variable_inputs = True
    random = True

    def arguments(self, a):
        return ["data", "gamma"] if a.act_type == "prelu" else ["data"]

    def outputs(self, a):
        return ["output", "mask"] if a.act_type == "rrelu" else ["output"]

    def num_visible_outputs(self, a):
        return 1

    def inplace(self, a):
        return [] if a.act_type == "prelu" else [(0, 0)]

    def infer_shape(self, a, s):
        d = s[0]
        if a.act_type == "prelu":
            gm = s[1]
            if d is None:
                return s, [None]
            if gm is None:
                gm = (d[1],) if len(d) > 1 else (1,)
            prelu_gamma_shape(gm, d)
            return [tuple(d), tuple(gm)], [tuple(d)]
        if d is None:
            return s, [None] * self.num_outputs(a)
        return [tuple(d)], [tuple(d)] * self.num_outputs(a)

    def infer_type(self, a, t):
        known = [x for x in t if x is not None]
        if not known:
            return t, [None] * self.num_outputs(a)
        return [known[0]] * len(t), [known[0]] * self.num_outputs(a)

    def lower(self, ctx):
        a = ctx.attrs
        t = a.act_type
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        dt = x.dtype
        if t == "leaky":
            s = a.slope
            flat_map(ctx, lambda v: K.select(v.gt(C(0, dt)), v, v * C(s, dt)), name="leaky")
        elif t == "elu":
            s = a.slope
            flat_map(ctx, lambda v: K.select(v.gt(C(0, dt)), v, C(s, dt) * K.call("expm1", v)),
                     name="elu")
        elif t == "selu":
            flat_map(ctx, lambda v: C(SELU_LAMBDA, dt) * K.select(
                v.gt(C(0, dt)), v, C(SELU_ALPHA, dt) * K.call("expm1", v)), name="selu")
        elif t == "gelu":
            flat_map(ctx, _gelu, name="gelu")
        elif t == "prelu":
            gm = ctx.inputs[1]
            gview = K.TensorRef(gm.buf, prelu_gamma_shape(gm.shape, x.shape), None, gm.offset)
            from .common import broadcast_view
            gb = broadcast_view(gview, x.shape)
            ctx.compute(o, lambda *i: K.select(x[i].gt(C(0, dt)), x[i], x[i] * gb[i]), "prelu")
        else:  # rrelu
            lo, hi = a.lower_bound, a.upper_bound
            m = ctx.outputs[1]
            fo, fx, fm = flat(o), flat(x), flat(m)
            if ctx.is_train:
                seed = ctx.rng_seed()
                ctx.compute(fm, lambda i: K.cast(dt, C(lo, "float32") + uniform01(seed, i) *
                                                 C(hi - lo, "float32")), "rrelu_mask")
                ctx.compute(fo, lambda i: K.select(fx[i].gt(C(0, dt)), fx[i], fx[i] * fm[i]),
                            "rrelu")
            else:
                s = (lo + hi) / 2.0
                ctx.compute(fm, lambda i: C(s, dt), "rrelu_mask")
                ctx.compute(fo, lambda i: K.select(fx[i].gt(C(0, dt)), fx[i],
                                                   fx[i] * C(s, dt)), "rrelu")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        xd = x.astype(np.float64)
        t = a.act_type
        mask = None
        if t == "leaky":
            y = np.where(xd > 0, xd, xd * a.slope)
        elif t == "elu":
            y = np.where(xd > 0, xd, a.slope * np.expm1(xd))
        elif t == "selu":
            y = SELU_LAMBDA * np.where(xd > 0, xd, SELU_ALPHA * np.expm1(xd))
        elif t == "gelu":
            y = np_gelu(x)
        elif t == "prelu":
            gm = inputs[1].astype(np.float64).reshape(prelu_gamma_shape(inputs[1].shape,
                                                                        x.shape))
            y = np.where(xd > 0, xd, xd * gm)
        else:
            if is_train:
                mask = a.lower_bound + _np_uniform(x.shape) * (a.upper_bound - a.lower_bound)
            else:
                mask = np.full(x.shape, (a.lower_bound + a.upper_bound) / 2.0)
            y = np.where(xd > 0, xd, xd * mask)
        outs = [y.astype(x.dtype)]
        if t == "rrelu":
            outs.append(mask.astype(x.dtype))
        return outs

    def gradient(self, node, ograds):
        a = node.parsed
        t = a.act_type
        ins = [ograds[0], node.inputs[0], type(node.inputs[0])(node, 0)]
        if t == "prelu":
            ins.append(node.inputs[1])
        if t == "rrelu":
            ins.append(type(node.inputs[0])(node, 1))
        n_out = 2 if t == "prelu" else 1
        outs = outputs_of("_backward_LeakyReLU", *ins, n=n_out, name=f"{node.name}_backward",
                          act_type=t, slope=a.slope, lower_bound=a.lower_bound,
                          upper_bound=a.upper_bound)
        return outs


@simple("_backward_LeakyReLU", fusion="elementwise", differentiable=False,
        params=_LRELU_PARAMS)
class BackwardLeakyReLU(OpDef):
    """Inputs: ograd, data, output (+ gamma for prelu, + mask for rrelu);
    outputs: ddata (+ dgamma for prelu)."""

    def arguments(self, a):
        extra = ["gamma"] if a.act_type == "prelu" else ["mask"] if a.act_type == "rrelu" \
            else []
        return ["ograd", "data", "output"] + extra

    def outputs(self, a):
        return ["data_grad", "gamma_grad"] if a.act_type == "prelu" else ["data_grad"]

    def infer_shape(self, a, s):
        d = s[0] or s[1] or s[2]
        ins = [d, d, d] + list(s[3:])
        if a.act_type == "rrelu":
            ins[3] = d
        outs = [d] + ([s[3]] if a.act_type == "prelu" else [])
        return ins, outs

    def infer_type(self, a, t):
        k = next((x for x in t if x is not None), None)
        return [k] * len(t), [k] * self.num_outputs(a)

    def lower(self, ctx):
        a = ctx.attrs
        t = a.act_type
        dy, x, y = ctx.inputs[:3]
        dt = x.dtype
        one, zero = C(1, dt), C(0, dt)
        if t == "leaky":
            s = a.slope
            flat_map(ctx, lambda g_, x_, y_: g_ * K.select(y_.gt(zero), one, C(s, dt)),
                     name="dleaky")
        elif t == "elu":
            s = a.slope
            flat_map(ctx, lambda g_, x_, y_: g_ * K.select(y_.gt(zero), one, y_ + C(s, dt)),
                     name="delu")
        elif t == "selu":
            flat_map(ctx, lambda g_, x_, y_: g_ * K.select(
                y_.gt(zero), C(SELU_LAMBDA, dt), y_ + C(SELU_ALPHA * SELU_LAMBDA, dt)),
                name="dselu")
        elif t == "gelu":
            flat_map(ctx, lambda g_, x_, y_: g_ * _gelu_grad(x_), name="dgelu")
        elif t == "rrelu":
            fo = flat(ctx.outputs[0])
            fdy, fy, fm = flat(dy), flat(y), flat(ctx.inputs[3])
            ctx.compute(fo, lambda i: fdy[i] * K.select(fy[i].gt(zero), one, fm[i]), "drrelu")
        else:  # prelu
            from .common import broadcast_view
            gm = ctx.inputs[3]
            gshape = prelu_gamma_shape(gm.shape, x.shape)
            gb = broadcast_view(K.TensorRef(gm.buf, gshape, None, gm.offset), x.shape)
            dx = ctx.outputs[0]
            ctx.compute(dx, lambda *i: dy[i] * K.select(x[i].gt(zero), one, gb[i]), "dprelu")
            dg = ctx.outputs[1]
            dgv = K.TensorRef(dg.buf, gshape, None, dg.offset)
            reduce_to(ctx, dgv, lambda g_, x_: K.select(x_.gt(zero), zero, x_) * g_,
                      x.shape, [dy, x], name="dprelu_gamma")


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------
_DROPOUT_PARAMS = ParamSpec(
    p=Param(parse_float, 0.5),
    mode=Param(enum("training", "always"), "training"),
    axes=Param(parse_shape, ()),
    cudnn_off=Param(optional(parse_bool), False))


def _dropout_axes(a, ndim: int) -> tuple:
    return tuple(sorted({norm_axis(int(ax), ndim, "Dropout axes") for ax in a.axes}))


def _check_p(a):
    if not 0.0 <= a.p <= 1.0:
        raise OpError(f"Dropout: p must be in [0, 1], got {a.p}")


@simple("Dropout", fusion="elementwise", params=_DROPOUT_PARAMS)
class Dropout(OpDef):
    uses_train_mode = True
    random = True

    def outputs(self, a):
        return ["output", "mask"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        _check_p(a)
        d = s[0]
        if d is None:
            return s, [None, None]
        m = list(d)
        for ax in _dropout_axes(a, len(d)):
            m[ax] = 1
        return [tuple(d)], [tuple(d), tuple(m)]

    def infer_type(self, a, t):
        return t, [t[0], t[0]]

    @staticmethod
    def active(a, is_train: bool) -> bool:
        return is_train or a.mode == "always"

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        o, m = ctx.outputs
        dt = x.dtype
        if not self.active(a, ctx.is_train):
            flat_map(ctx, lambda v: v, name="dropout_copy")
            return
        pkeep = 1.0 - a.p
        scale = 1.0 / pkeep if pkeep > 0 else 0.0
        seed = ctx.rng_seed()
        fm = flat(m)
        ctx.compute(fm, lambda i: K.select(uniform01(seed, i).lt(C(pkeep, "float32")),
                                           C(scale, dt), C(0, dt)), "dropout_mask")
        if tuple(m.shape) == tuple(x.shape):
            fo, fx = flat(o), flat(x)
            ctx.compute(fo, lambda i: fx[i] * fm[i], "dropout")
        else:
            from .common import broadcast_view
            mb = broadcast_view(m, x.shape)
            ctx.compute(o, lambda *i: x[i] * mb[i], "dropout")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if not self.active(a, is_train):
            mshape = list(x.shape)
            for ax in _dropout_axes(a, x.ndim):
                mshape[ax] = 1
            return [x.copy(), np.ones(mshape, x.dtype)]
        pkeep = 1.0 - a.p
        mshape = list(x.shape)
        for ax in _dropout_axes(a, x.ndim):
            mshape[ax] = 1
        keep = _np_uniform(tuple(mshape)) < pkeep
        mask = keep * (1.0 / pkeep if pkeep > 0 else 0.0)
        return [(x.astype(np.float64) * mask).astype(x.dtype), mask.astype(x.dtype)]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_Dropout", ograds[0], type(node.inputs[0])(node, 1),
                  name=f"{node.name}_backward", p=a.p, mode=a.mode, axes=a.axes,
                  cudnn_off=a.cudnn_off)]


@simple("_backward_Dropout", fusion="elementwise", differentiable=False,
        params=_DROPOUT_PARAMS)
class BackwardDropout(OpDef):
    """dx = dy * mask (broadcast over ``axes``) in training, dy otherwise."""

    uses_train_mode = True

    def arguments(self, a):
        return ["ograd", "mask"]

    def infer_shape(self, a, s):
        return s, [s[0]]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, m = ctx.inputs
        o = ctx.outputs[0]
        if not Dropout.active(a, ctx.is_train):
            fo, fdy = flat(o), flat(dy)
            ctx.compute(fo, lambda i: fdy[i], "ddropout_copy")
        elif tuple(m.shape) == tuple(dy.shape):
            flat_map(ctx, lambda g_, m_: g_ * m_, name="ddropout")
        else:
            from .common import broadcast_view
            mb = broadcast_view(m, dy.shape)
            ctx.compute(o, lambda *i: dy[i] * mb[i], "ddropout")
