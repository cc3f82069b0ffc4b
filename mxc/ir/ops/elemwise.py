"""Elementwise operators: unary math, binary (same-shape and broadcasting), scalar forms,
comparisons, add_n, clip, where, Cast, hard_sigmoid, identity-like ops and tensor creation.

Unary, binary and scalar ops are rows of tables holding the forward expression, the
derivative and the numpy reference; one generic gradient op per family
(``_backward_unary``, ``_backward_binary``, ``_backward_scalar``) evaluates the derivative
from the same table, so a new math op is one table row.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
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
    parse_str,
)
from ..registry import OpDef, register, simple
from .common import broadcast_map, broadcast_shapes, flat, flat_map, g, reduce_to

C = K.const


def _c(v, like: K.Expr) -> K.Expr:
    return C(v, like.dtype)


def _call(f, x):
    return K.call(f, x)


def _sign(x):
    return K.select(x.gt(_c(0, x)), _c(1, x), K.select(x.lt(_c(0, x)), _c(-1, x), _c(0, x)))


def _np_round(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _erf_np(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _erfinv_np(y):
    y = np.asarray(y, np.float64)
    # Newton on erf, from a rough initial guess (reference only, not run in models)
    x = np.clip(y, -0.999999, 0.999999)
    x = np.sign(x) * np.sqrt(-np.log((1 - x) * (1 + x))) * 0.8862269
    for _ in range(60):
        err = _erf_np(x) - y
        x = x - err / (2 / np.sqrt(np.pi) * np.exp(-x * x))
    return np.where(np.abs(y) >= 1, np.sign(y) * np.inf, x)


def _sigmoid_np(x):
    return 1 / (1 + np.exp(-x))


def _softrelu_np(x):
    return np.logaddexp(0, x)


# name: (forward(x), derivative(x, y) -> dy/dx, numpy(x))
UNARY = {
    "abs": (K.abs_, lambda x, y: _sign(x), np.abs),
    "negative": (lambda x: -x, lambda x, y: _c(-1, x), np.negative),
    "exp": (lambda x: _call("exp", x), lambda x, y: y, np.exp),
    "log": (lambda x: _call("log", x), lambda x, y: _c(1, x) / x, np.log),
    "log2": (lambda x: _call("log2", x), lambda x, y: _c(1 / math.log(2), x) / x, np.log2),
    "log10": (lambda x: _call("log10", x), lambda x, y: _c(1 / math.log(10), x) / x, np.log10),
    "log1p": (lambda x: _call("log1p", x), lambda x, y: _c(1, x) / (x + _c(1, x)), np.log1p),
    "expm1": (lambda x: _call("expm1", x), lambda x, y: y + _c(1, x), np.expm1),
    "sqrt": (K.sqrt, lambda x, y: _c(0.5, x) / y, np.sqrt),
    "rsqrt": (lambda x: _c(1, x) / K.sqrt(x), lambda x, y: _c(-0.5, x) * y * y * y,
              lambda x: 1 / np.sqrt(x)),
    "cbrt": (lambda x: _call("cbrt", x), lambda x, y: _c(1 / 3, x) / (y * y), np.cbrt),
    "rcbrt": (lambda x: _call("rcbrt", x), lambda x, y: _c(-1 / 3, x) * y / x,
              lambda x: 1 / np.cbrt(x)),
    "square": (lambda x: x * x, lambda x, y: _c(2, x) * x, np.square),
    "reciprocal": (lambda x: _c(1, x) / x, lambda x, y: -(y * y), np.reciprocal),
    "sign": (_sign, lambda x, y: _c(0, x), np.sign),
    "floor": (lambda x: _call("floor", x), lambda x, y: _c(0, x), np.floor),
    "ceil": (lambda x: _call("ceil", x), lambda x, y: _c(0, x), np.ceil),
    "round": (lambda x: _call("round", x), lambda x, y: _c(0, x), _np_round),
    "rint": (lambda x: _call("rint", x), lambda x, y: _c(0, x), np.rint),
    "fix": (lambda x: _call("trunc", x), lambda x, y: _c(0, x), np.fix),
    "trunc": (lambda x: _call("trunc", x), lambda x, y: _c(0, x), np.trunc),
    "sin": (lambda x: _call("sin", x), lambda x, y: _call("cos", x), np.sin),
    "cos": (lambda x: _call("cos", x), lambda x, y: -_call("sin", x), np.cos),
    "tan": (lambda x: _call("tan", x), lambda x, y: y * y + _c(1, x), np.tan),
    "arcsin": (lambda x: _call("arcsin", x),
               lambda x, y: _c(1, x) / K.sqrt(_c(1, x) - x * x), np.arcsin),
    "arccos": (lambda x: _call("arccos", x),
               lambda x, y: _c(-1, x) / K.sqrt(_c(1, x) - x * x), np.arccos),
    "arctan": (lambda x: _call("arctan", x), lambda x, y: _c(1, x) / (x * x + _c(1, x)),
               np.arctan),
    "sinh": (lambda x: _call("sinh", x), lambda x, y: _call("cosh", x), np.sinh),
    "cosh": (lambda x: _call("cosh", x), lambda x, y: _call("sinh", x), np.cosh),
    "tanh": (lambda x: _call("tanh", x), lambda x, y: _c(1, x) - y * y, np.tanh),
    "arcsinh": (lambda x: _call("arcsinh", x),
                lambda x, y: _c(1, x) / K.sqrt(x * x + _c(1, x)), np.arcsinh),
    "arccosh": (lambda x: _call("arccosh", x),
                lambda x, y: _c(1, x) / K.sqrt(x * x - _c(1, x)), np.arccosh),
    "arctanh": (lambda x: _call("arctanh", x), lambda x, y: _c(1, x) / (_c(1, x) - x * x),
                np.arctanh),
    "degrees": (lambda x: x * _c(180 / math.pi, x), lambda x, y: _c(180 / math.pi, x),
                np.degrees),
    "radians": (lambda x: x * _c(math.pi / 180, x), lambda x, y: _c(math.pi / 180, x),
                np.radians),
    "sigmoid": (lambda x: _call("sigmoid", x), lambda x, y: y * (_c(1, x) - y), _sigmoid_np),
    "relu": (lambda x: K.select(x.gt(_c(0, x)), x, _c(0, x)),
             lambda x, y: K.select(y.gt(_c(0, x)), _c(1, x), _c(0, x)),
             lambda x: np.maximum(x, 0)),
    "softsign": (lambda x: x / (_c(1, x) + K.abs_(x)),
                 lambda x, y: _c(1, x) / ((_c(1, x) + K.abs_(x)) * (_c(1, x) + K.abs_(x))),
                 lambda x: x / (1 + np.abs(x))),
    "softrelu": (lambda x: _call("softrelu", x), lambda x, y: _c(1, x) - _call("exp", -y),
                 _softrelu_np),
    "erf": (lambda x: _call("erf", x),
            lambda x, y: _c(2 / math.sqrt(math.pi), x) * _call("exp", -(x * x)), _erf_np),
    "erfinv": (lambda x: _call("erfinv", x),
               lambda x, y: _c(math.sqrt(math.pi) / 2, x) * _call("exp", y * y), _erfinv_np),
    "gamma": (lambda x: _call("gamma", x), None,
              np.vectorize(math.gamma, otypes=[np.float64])),
    "gammaln": (lambda x: _call("gammaln", x), None,
                np.vectorize(math.lgamma, otypes=[np.float64])),
    "logical_not": (lambda x: K.select(x.eq(_c(0, x)), _c(1, x), _c(0, x)),
                    lambda x, y: _c(0, x), lambda x: (x == 0).astype(x.dtype)),
}
UNARY_INT_OK = {"abs", "negative", "square", "sign", "relu", "logical_not", "floor", "ceil",
                "round", "rint", "fix", "trunc"}
_INT_IDENTITY = {"floor", "ceil", "round", "rint", "fix", "trunc"}


def unary_expr(name: str, x: K.Expr) -> K.Expr:
    fwd = UNARY[name][0]
    if x.dtype.kind != "f" and name not in UNARY_INT_OK:
        return K.cast(x.dtype, fwd(K.cast("float32", x)))
    if x.dtype.kind != "f" and name in _INT_IDENTITY:
        return x
    return fwd(x)


def unary_reference(name: str, x: np.ndarray) -> np.ndarray:
    r = UNARY[name][2](x.astype(np.float64) if x.dtype.kind == "f" else x)
    return np.asarray(r).astype(x.dtype)


class _Unary(OpDef):
    fusion = "elementwise"
    fn = ""

    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        flat_map(ctx, lambda x: unary_expr(self.fn, x), name=self.fn)

    def reference(self, a, inputs, is_train=False):
        return [unary_reference(self.fn, inputs[0])]

    def gradient(self, node, ograds):
        if UNARY[self.fn][1] is None:
            raise OpError(f"operator {self.name} has no gradient")
        return [g("_backward_unary", ograds[0], node.inputs[0], type(node.inputs[0])(node, 0),
                  fn=self.fn, name=f"{node.name}_backward")]


for _name in UNARY:
    if _name == "softrelu":
        continue  # only an Activation act_type in MXNet
    register(type(f"Op_{_name}", (_Unary,), {"name": _name, "fn": _name}))


@simple("_backward_unary", fusion="elementwise", differentiable=False,
        params=ParamSpec(fn=Param(parse_str)))
class BackwardUnary(OpDef):
    """dx = dy * f'(x, y): the gradient of any row of UNARY (inputs dy, x, y)."""

    def arguments(self, a):
        return ["ograd", "data", "output"]

    def infer_shape(self, a, s):
        return OpDef.infer_shape(self, a, s)

    def lower(self, ctx):
        deriv = UNARY[ctx.attrs.fn][1]

        def f(dy, x, y):
            if x.dtype.kind != "f":
                return K.cast(x.dtype, K.cast("float32", dy) * deriv(K.cast("float32", x),
                                                                     K.cast("float32", y)))
            return dy * deriv(x, y)

        flat_map(ctx, f, name=f"d{ctx.attrs.fn}")


# ---------------------------------------------------------------------------------------------
# Activation (MXNet's legacy op, same kernels as the unary table)
# ---------------------------------------------------------------------------------------------
@simple("Activation", fusion="elementwise",
        params=ParamSpec(act_type=Param(enum("relu", "sigmoid", "tanh", "softrelu",
                                             "softsign", "log_sigmoid", "mish"))))
class Activation(OpDef):
    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        t = ctx.attrs.act_type
        if t == "log_sigmoid":
            flat_map(ctx, lambda x: -_call("softrelu", -x), name=t)
        elif t == "mish":
            flat_map(ctx, lambda x: x * _call("tanh", _call("softrelu", x)), name=t)
        else:
            flat_map(ctx, lambda x: unary_expr(t, x), name=t)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        t = a.act_type
        if t == "log_sigmoid":
            return [(-_softrelu_np(-x.astype(np.float64))).astype(x.dtype)]
        if t == "mish":
            xd = x.astype(np.float64)
            return [(xd * np.tanh(_softrelu_np(xd))).astype(x.dtype)]
        return [unary_reference(t, x)]

    def gradient(self, node, ograds):
        t = node.parsed.act_type
        if t in ("log_sigmoid", "mish"):
            return [g("_backward_Activation", ograds[0], node.inputs[0],
                      type(node.inputs[0])(node, 0), act_type=t)]
        return [g("_backward_unary", ograds[0], node.inputs[0], type(node.inputs[0])(node, 0),
                  fn=t, name=f"{node.name}_backward")]


@simple("_backward_Activation", fusion="elementwise", differentiable=False,
        params=ParamSpec(act_type=Param(parse_str)))
class BackwardActivation(OpDef):
    def arguments(self, a):
        return ["ograd", "data", "output"]

    def lower(self, ctx):
        t = ctx.attrs.act_type
        if t == "log_sigmoid":
            flat_map(ctx, lambda dy, x, y: dy * (_c(1, x) - _call("sigmoid", x)), name=t)
        else:  # mish: d/dx x*tanh(sp(x)) = tanh(sp) + x*sigmoid(x)*(1-tanh(sp)^2)
            def f(dy, x, y):
                t_ = _call("tanh", _call("softrelu", x))
                return dy * (t_ + x * _call("sigmoid", x) * (_c(1, x) - t_ * t_))
            flat_map(ctx, f, name=t)


# ---------------------------------------------------------------------------------------------
# hard_sigmoid (MXNet's src/operator/tensor/elemwise_unary_op.h: HardSigmoidParam)
# ---------------------------------------------------------------------------------------------
HARD_SIGMOID = ParamSpec(alpha=Param(parse_float, 0.2), beta=Param(parse_float, 0.5))


def _require_real(op: str, dtype) -> None:
    if dtype is not None and as_dtype(dtype).kind != "f":
        raise OpError(f"{op}: input must be a floating-point array, got {dtype}")


@simple("hard_sigmoid", fusion="elementwise", params=HARD_SIGMOID)
class HardSigmoid(OpDef):
    """y = clip(alpha * x + beta, 0, 1)."""

    def inplace(self, a):
        return [(0, 0)]

    def infer_type(self, a, t):
        _require_real(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        a = ctx.attrs
        flat_map(ctx, lambda x: K.minimum(K.maximum(_c(a.alpha, x) * x + _c(a.beta, x),
                                                    _c(0, x)), _c(1, x)), name="hard_sigmoid")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [np.clip(a.alpha * x.astype(np.float64) + a.beta, 0, 1).astype(x.dtype)]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_hard_sigmoid", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward", alpha=a.alpha, beta=a.beta)]


@simple("_backward_hard_sigmoid", fusion="elementwise", differentiable=False,
        params=HARD_SIGMOID)
class BackwardHardSigmoid(OpDef):
    """dx = dy * alpha where 0 < alpha * x + beta < 1 (the unclipped region), else 0."""

    def arguments(self, a):
        return ["ograd", "data"]

    def lower(self, ctx):
        a = ctx.attrs

        def f(dy, x):
            v = _c(a.alpha, x) * x + _c(a.beta, x)
            inside = v.gt(_c(0, x)) & v.lt(_c(1, x))
            return K.select(inside, dy * _c(a.alpha, x), _c(0, x))

        flat_map(ctx, f, name="dhard_sigmoid")


# ---------------------------------------------------------------------------------------------
# binary ops
# ---------------------------------------------------------------------------------------------
def _mod(a, b):
    # Python/numpy-style modulo (sign of the divisor), as MXNet's mshadow_op::mod
    if a.dtype.kind == "f":
        r = a - _call("floor", a / b) * b
        return r
    r = a % b
    return K.select((r.ne(_c(0, r))) & (r.lt(_c(0, r)).ne(b.lt(_c(0, b)))), r + b, r)


def _cmp(op):
    def f(a, b):
        return K.select(getattr(a, op)(b), _c(1, a), _c(0, a))
    return f


def _zero(a, b, y):
    return _c(0, a)


# name: (forward(a, b), d/da(a, b, y), d/db(a, b, y), numpy(a, b))
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b, y: _c(1, a), lambda a, b, y: _c(1, a), np.add),
    "sub": (lambda a, b: a - b, lambda a, b, y: _c(1, a), lambda a, b, y: _c(-1, a),
            np.subtract),
    "mul": (lambda a, b: a * b, lambda a, b, y: b, lambda a, b, y: a, np.multiply),
    "div": (lambda a, b: a / b, lambda a, b, y: _c(1, a) / b, lambda a, b, y: -a / (b * b),
            lambda a, b: (a / b) if a.dtype.kind == "f" else np.trunc(a / b).astype(a.dtype)),
    "mod": (_mod, lambda a, b, y: _c(1, a), lambda a, b, y: -_call("floor", a / b), np.mod),
    "power": (lambda a, b: K.binop("pow", a, b),
              lambda a, b, y: b * K.binop("pow", a, b - _c(1, a)),
              lambda a, b, y: y * _call("log", a), np.power),
    "maximum": (K.maximum, lambda a, b, y: K.select(a.ge(b), _c(1, a), _c(0, a)),
                lambda a, b, y: K.select(a.lt(b), _c(1, a), _c(0, a)), np.maximum),
    "minimum": (K.minimum, lambda a, b, y: K.select(a.le(b), _c(1, a), _c(0, a)),
                lambda a, b, y: K.select(a.gt(b), _c(1, a), _c(0, a)), np.minimum),
    "hypot": (lambda a, b: K.sqrt(a * a + b * b), lambda a, b, y: a / y, lambda a, b, y: b / y,
              np.hypot),
    "equal": (_cmp("eq"), _zero, _zero, lambda a, b: (a == b)),
    "not_equal": (_cmp("ne"), _zero, _zero, lambda a, b: (a != b)),
    "greater": (_cmp("gt"), _zero, _zero, lambda a, b: (a > b)),
    "greater_equal": (_cmp("ge"), _zero, _zero, lambda a, b: (a >= b)),
    "lesser": (_cmp("lt"), _zero, _zero, lambda a, b: (a < b)),
    "lesser_equal": (_cmp("le"), _zero, _zero, lambda a, b: (a <= b)),
    "logical_and": (lambda a, b: K.select(a.ne(_c(0, a)) & b.ne(_c(0, b)), _c(1, a), _c(0, a)),
                    _zero, _zero, lambda a, b: np.logical_and(a, b)),
    "logical_or": (lambda a, b: K.select(a.ne(_c(0, a)) | b.ne(_c(0, b)), _c(1, a), _c(0, a)),
                   _zero, _zero, lambda a, b: np.logical_or(a, b)),
    "logical_xor": (lambda a, b: K.select(a.ne(_c(0, a)).ne(b.ne(_c(0, b))), _c(1, a),
                                          _c(0, a)), _zero, _zero,
                    lambda a, b: np.logical_xor(a, b)),
}
_NO_GRAD = {"equal", "not_equal", "greater", "greater_equal", "lesser", "lesser_equal",
            "logical_and", "logical_or", "logical_xor"}


def binary_expr(fn: str, a: K.Expr, b: K.Expr) -> K.Expr:
    if a.dtype.kind != "f" and fn in ("power", "hypot"):
        return K.cast(a.dtype, BINARY[fn][0](K.cast("float64", a), K.cast("float64", b)))
    return BINARY[fn][0](a, b)


def binary_reference(fn: str, a, b):
    r = BINARY[fn][3](a, b)
    return np.asarray(r).astype(a.dtype)


class _Binary(OpDef):
    fn = ""
    broadcast = False

    def arguments(self, a):
        return ["lhs", "rhs"]

    def inplace(self, a):
        return [(0, 0), (1, 0)]

    def infer_shape(self, a, s):
        if not self.broadcast:
            return OpDef.infer_shape(self, a, s)
        if s[0] is None or s[1] is None:
            return s, [None]
        return s, [broadcast_shapes(s[0], s[1], self.name)]

    def lower(self, ctx):
        broadcast_map(ctx, lambda x, y: binary_expr(self.fn, x, y), name=self.fn)

    def reference(self, a, inputs, is_train=False):
        return [binary_reference(self.fn, inputs[0], inputs[1])]

    def gradient(self, node, ograds):
        if self.fn in _NO_GRAD:
            return [g("zeros_like", node.inputs[0]), g("zeros_like", node.inputs[1])]
        y = type(node.inputs[0])(node, 0)
        return [g("_backward_binary", ograds[0], node.inputs[0], node.inputs[1], y, fn=self.fn,
                  side=s, name=f"{node.name}_backward_{'lhs' if s == 0 else 'rhs'}")
                for s in (0, 1)]


_ELEMWISE_NAMES = {"add": ("elemwise_add", ["_plus", "_add", "_Plus"]),
                   "sub": ("elemwise_sub", ["_minus", "_sub", "_Minus"]),
                   "mul": ("elemwise_mul", ["_mul", "_Mul"]),
                   "div": ("elemwise_div", ["_div", "_Div"])}
for _fn in BINARY:
    _ew, _al = _ELEMWISE_NAMES.get(_fn, (f"_{_fn}", []))
    if _fn == "power":
        _al = ["_Power"]
    elif _fn in ("maximum", "minimum"):
        _al = [f"_{_fn.capitalize()}"]
    register(type(f"Op_ew_{_fn}", (_Binary,), {"name": _ew, "aliases": tuple(_al), "fn": _fn,
                                               "fusion": "elementwise"}))
    _bname = f"broadcast_{_fn}"
    _bal = ["broadcast_plus"] if _fn == "add" else ["broadcast_minus"] if _fn == "sub" else []
    register(type(f"Op_bc_{_fn}", (_Binary,), {"name": _bname, "aliases": tuple(_bal),
                                               "fn": _fn, "broadcast": True,
                                               "fusion": "broadcast"}))


@simple("_backward_binary", fusion="broadcast", differentiable=False,
        params=ParamSpec(fn=Param(parse_str), side=Param(parse_int)))
class BackwardBinary(OpDef):
    """Gradient of one side of a (broadcasting) binary op, summed back to that side's shape.
    Inputs: dy, lhs, rhs, y."""

    def arguments(self, a):
        return ["ograd", "lhs", "rhs", "output"]

    def infer_shape(self, a, s):
        return s, [s[1 + a.side]]

    def infer_type(self, a, t):
        return t, [t[1 + a.side]]

    def lower(self, ctx):
        fn, side = ctx.attrs.fn, ctx.attrs.side
        deriv = BINARY[fn][1 + side]
        dy, lhs, rhs, y = ctx.inputs

        def f(dy_, a_, b_, y_):
            if a_.dtype.kind != "f":
                return K.cast(a_.dtype, K.cast("float64", dy_) * deriv(
                    K.cast("float64", a_), K.cast("float64", b_), K.cast("float64", y_)))
            return dy_ * deriv(a_, b_, y_)

        reduce_to(ctx, ctx.outputs[0], f, dy.shape, [dy, lhs, rhs, y], name=f"d{fn}{side}")


# ---------------------------------------------------------------------------------------------
# scalar ops
# ---------------------------------------------------------------------------------------------
# name: (forward(x, s), d/dx(x, s, y), numpy(x, s))
SCALAR = {
    "_plus_scalar": (lambda x, s: x + s, lambda x, s, y: _c(1, x), lambda x, s: x + s),
    "_minus_scalar": (lambda x, s: x - s, lambda x, s, y: _c(1, x), lambda x, s: x - s),
    "_rminus_scalar": (lambda x, s: s - x, lambda x, s, y: _c(-1, x), lambda x, s: s - x),
    "_mul_scalar": (lambda x, s: x * s, lambda x, s, y: s, lambda x, s: x * s),
    "_div_scalar": (lambda x, s: x / s, lambda x, s, y: _c(1, x) / s, lambda x, s: x / s),
    "_rdiv_scalar": (lambda x, s: s / x, lambda x, s, y: -s / (x * x), lambda x, s: s / x),
    "_mod_scalar": (lambda x, s: _mod(x, s), lambda x, s, y: _c(1, x), np.mod),
    "_rmod_scalar": (lambda x, s: _mod(s, x), lambda x, s, y: -_call("floor", s / x),
                     lambda x, s: np.mod(s, x)),
    "_power_scalar": (lambda x, s: K.binop("pow", x, s),
                      lambda x, s, y: s * K.binop("pow", x, s - _c(1, x)), np.power),
    "_rpower_scalar": (lambda x, s: K.binop("pow", s, x), lambda x, s, y: y * _call("log", s),
                       lambda x, s: np.power(s, x)),
    "_maximum_scalar": (K.maximum, lambda x, s, y: K.select(x.ge(s), _c(1, x), _c(0, x)),
                        np.maximum),
    "_minimum_scalar": (K.minimum, lambda x, s, y: K.select(x.le(s), _c(1, x), _c(0, x)),
                        np.minimum),
    "_hypot_scalar": (lambda x, s: K.sqrt(x * x + s * s), lambda x, s, y: x / y, np.hypot),
    "_equal_scalar": (_cmp("eq"), None, lambda x, s: x == s),
    "_not_equal_scalar": (_cmp("ne"), None, lambda x, s: x != s),
    "_greater_scalar": (_cmp("gt"), None, lambda x, s: x > s),
    "_greater_equal_scalar": (_cmp("ge"), None, lambda x, s: x >= s),
    "_lesser_scalar": (_cmp("lt"), None, lambda x, s: x < s),
    "_lesser_equal_scalar": (_cmp("le"), None, lambda x, s: x <= s),
    "_logical_and_scalar": (lambda x, s: K.select(x.ne(_c(0, x)) & s.ne(_c(0, x)), _c(1, x),
                                                  _c(0, x)), None,
                            lambda x, s: np.logical_and(x, s)),
    "_logical_or_scalar": (lambda x, s: K.select(x.ne(_c(0, x)) | s.ne(_c(0, x)), _c(1, x),
                                                 _c(0, x)), None,
                           lambda x, s: np.logical_or(x, s)),
    "_logical_xor_scalar": (lambda x, s: K.select(x.ne(_c(0, x)).ne(s.ne(_c(0, x))), _c(1, x),
                                                  _c(0, x)), None,
                            lambda x, s: np.logical_xor(x, s)),
}
_SCALAR_ALIASES = {"_plus_scalar": ["_PlusScalar"], "_minus_scalar": ["_MinusScalar"],
                   "_rminus_scalar": ["_RMinusScalar"], "_mul_scalar": ["_MulScalar"],
                   "_div_scalar": ["_DivScalar"], "_rdiv_scalar": ["_RDivScalar"],
                   "_power_scalar": ["_PowerScalar"], "_rpower_scalar": ["_RPowerScalar"],
                   "_maximum_scalar": ["_MaximumScalar"], "_minimum_scalar": ["_MinimumScalar"],
                   "_equal_scalar": ["_EqualScalar"], "_greater_scalar": ["_GreaterScalar"],
                   "_lesser_scalar": ["_LesserScalar"]}

SCALAR_PARAMS = ParamSpec(scalar=Param(parse_float, 1.0), is_int=Param(parse_bool, True))


def scalar_expr(fn: str, x: K.Expr, scalar: float) -> K.Expr:
    s = C(scalar, x.dtype)
    if x.dtype.kind != "f" and fn in ("_power_scalar", "_rpower_scalar", "_hypot_scalar",
                                      "_div_scalar", "_rdiv_scalar") and \
            fn not in ("_div_scalar", "_rdiv_scalar"):
        xf = K.cast("float64", x)
        return K.cast(x.dtype, SCALAR[fn][0](xf, C(scalar, "float64")))
    return SCALAR[fn][0](x, s)


class _Scalar(OpDef):
    fusion = "elementwise"
    params = SCALAR_PARAMS

    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        flat_map(ctx, lambda x: scalar_expr(self.name, x, ctx.attrs.scalar), name=self.name)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        s = np.asarray(a.scalar).astype(x.dtype) if x.dtype.kind != "f" else \
            np.asarray(a.scalar, np.float64)
        r = SCALAR[self.name][2](x.astype(np.float64) if x.dtype.kind == "f" else x, s)
        return [np.asarray(r).astype(x.dtype)]

    def gradient(self, node, ograds):
        if SCALAR[self.name][1] is None:
            return [g("zeros_like", node.inputs[0])]
        return [g("_backward_scalar", ograds[0], node.inputs[0], type(node.inputs[0])(node, 0),
                  fn=self.name, scalar=node.parsed.scalar, name=f"{node.name}_backward")]


for _sname in SCALAR:
    register(type(f"Op{_sname}", (_Scalar,), {"name": _sname,
                                              "aliases": tuple(_SCALAR_ALIASES.get(_sname, ()))}))


@simple("_backward_scalar", fusion="elementwise", differentiable=False,
        params=ParamSpec(fn=Param(parse_str), scalar=Param(parse_float, 1.0)))
class BackwardScalar(OpDef):
    def arguments(self, a):
        return ["ograd", "data", "output"]

    def lower(self, ctx):
        deriv = SCALAR[ctx.attrs.fn][1]
        flat_map(ctx, lambda dy, x, y: dy * deriv(x, C(ctx.attrs.scalar, x.dtype), y),
                 name="dscalar")


# ---------------------------------------------------------------------------------------------
# add_n, identity family, zeros_like/ones_like, clip, where, Cast
# ---------------------------------------------------------------------------------------------
@simple("add_n", aliases=("ElementWiseSum", "_sparse_add_n"), fusion="elementwise",
        params=ParamSpec(num_args=Param(parse_int)))
class AddN(OpDef):
    def arguments(self, a):
        return [f"arg{i}" for i in range(a.num_args)]

    def num_inputs(self, a):
        return a.num_args

    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        def f(*xs):
            acc = xs[0]
            for x in xs[1:]:
                acc = acc + x
            return acc
        flat_map(ctx, f, name="add_n")

    def reference(self, a, inputs, is_train=False):
        acc = inputs[0].copy()
        for x in inputs[1:]:
            acc = acc + x
        return [acc.astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [ograds[0] for _ in node.inputs]


class _Identity(OpDef):
    fusion = "injective"
    inplace_identity = True

    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        flat_map(ctx, lambda x: x, name="copy")

    def reference(self, a, inputs, is_train=False):
        return [inputs[0].copy()]

    def gradient(self, node, ograds):
        return [ograds[0]]


@simple("_copy", aliases=("identity", "_identity_with_attr_like_rhs_unused"))
class Copy(_Identity):
    pass


@simple("BlockGrad", aliases=("stop_gradient",))
class BlockGrad(_Identity):
    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0])]


@simple("make_loss")
class MakeLossLower(_Identity):
    def gradient(self, node, ograds):
        return [g("ones_like", node.inputs[0])]


@simple("zeros_like", fusion="elementwise", differentiable=True)
class ZerosLike(OpDef):
    def lower(self, ctx):
        o = flat(ctx.outputs[0])
        ctx.compute(o, lambda i: C(0, o.dtype), "zeros")

    def reference(self, a, inputs, is_train=False):
        return [np.zeros_like(inputs[0])]

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0])]


@simple("ones_like", fusion="elementwise")
class OnesLike(ZerosLike):
    def lower(self, ctx):
        o = flat(ctx.outputs[0])
        ctx.compute(o, lambda i: C(1, o.dtype), "ones")

    def reference(self, a, inputs, is_train=False):
        return [np.ones_like(inputs[0])]


@simple("clip", fusion="elementwise",
        params=ParamSpec(a_min=Param(parse_float), a_max=Param(parse_float)))
class Clip(OpDef):
    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        lo, hi = ctx.attrs.a_min, ctx.attrs.a_max
        flat_map(ctx, lambda x: K.minimum(K.maximum(x, C(lo, x.dtype)), C(hi, x.dtype)),
                 name="clip")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [np.minimum(np.maximum(x, np.asarray(a.a_min).astype(x.dtype)),
                           np.asarray(a.a_max).astype(x.dtype))]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_clip", ograds[0], node.inputs[0], a_min=a.a_min, a_max=a.a_max)]


@simple("_backward_clip", fusion="elementwise", differentiable=False,
        params=ParamSpec(a_min=Param(parse_float), a_max=Param(parse_float)))
class BackwardClip(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def lower(self, ctx):
        lo, hi = ctx.attrs.a_min, ctx.attrs.a_max
        flat_map(ctx, lambda dy, x: K.select(x.ge(C(lo, x.dtype)) & x.le(C(hi, x.dtype)), dy,
                                             C(0, x.dtype)), name="dclip")


@simple("where", fusion="elementwise")
class Where(OpDef):
    def arguments(self, a):
        return ["condition", "x", "y"]

    def infer_shape(self, a, s):
        c, x, y = s
        xy = x if x is not None else y
        if x is not None and y is not None and tuple(x) != tuple(y):
            raise ShapeError(f"where: x {x} and y {y} must have the same shape")
        if c is not None and xy is not None and tuple(c) != tuple(xy):
            if not (len(c) == 1 and c[0] == xy[0]):
                raise ShapeError(f"where: condition {c} must match x {xy} or be 1-d of "
                                 "length x.shape[0]")
        return [c, xy, xy], [xy]

    def infer_type(self, a, t):
        xy = t[1] or t[2]
        return [t[0] or xy, xy, xy], [xy]

    def lower(self, ctx):
        c, x, y = ctx.inputs
        o = ctx.outputs[0]
        if tuple(c.shape) == tuple(o.shape):
            flat_map(ctx, lambda c_, x_, y_: K.select(c_.ne(C(0, c_.dtype)), x_, y_),
                     name="where")
        else:
            ctx.compute(o, lambda *i: K.select(c[i[0]].ne(C(0, c.dtype)), x[i], y[i]), "where")

    def reference(self, a, inputs, is_train=False):
        c, x, y = inputs
        if c.shape != x.shape:
            c = c.reshape((-1,) + (1,) * (x.ndim - 1))
        return [np.where(c != 0, x, y)]

    def gradient(self, node, ograds):
        c, x, y = node.inputs
        return [g("zeros_like", c),
                g("_backward_where", ograds[0], c, side=0),
                g("_backward_where", ograds[0], c, side=1)]


@simple("_backward_where", fusion="elementwise", differentiable=False,
        params=ParamSpec(side=Param(parse_int)))
class BackwardWhere(OpDef):
    def arguments(self, a):
        return ["ograd", "condition"]

    def infer_shape(self, a, s):
        return s, [s[0]]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        dy, c = ctx.inputs
        o = ctx.outputs[0]
        side = ctx.attrs.side

        def f(*i):
            cond = (c[i] if tuple(c.shape) == tuple(o.shape) else c[i[0]]).ne(C(0, c.dtype))
            z = C(0, dy.dtype)
            return K.select(cond, dy[i], z) if side == 0 else K.select(cond, z, dy[i])

        ctx.compute(o, f, "dwhere")


@simple("Cast", aliases=("cast",), fusion="elementwise",
        params=ParamSpec(dtype=Param(parse_dtype_name)))
class Cast(OpDef):
    def infer_type(self, a, t):
        return t, [a.dtype]

    def lower(self, ctx):
        flat_map(ctx, lambda x: K.cast(a_dtype(ctx), x), name="cast")

    def reference(self, a, inputs, is_train=False):
        return [inputs[0].astype(as_dtype(a.dtype).np)]

    def gradient(self, node, ograds):
        return [g("_backward_Cast", ograds[0], node.inputs[0])]


def a_dtype(ctx):
    return ctx.outputs[0].dtype


@simple("_backward_Cast", fusion="elementwise", differentiable=False)
class BackwardCast(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        return s, [s[0] or s[1]]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        o = flat(ctx.outputs[0])
        dy = flat(ctx.inputs[0])
        ctx.compute(o, lambda i: K.cast(o.dtype, dy[i]), "dcast")


# ---------------------------------------------------------------------------------------------
# creation ops (no inputs)
# ---------------------------------------------------------------------------------------------
_CREATE = ParamSpec(shape=Param(parse_shape, ()), ctx=Param(parse_str, ""),
                    dtype=Param(parse_dtype_name, "float32"))


class _Create(OpDef):
    fusion = "elementwise"
    params = _CREATE
    value = 0.0
    differentiable = False

    def arguments(self, a):
        return []

    def infer_shape(self, a, s):
        return s, [tuple(a.shape)]

    def infer_type(self, a, t):
        return t, [a.dtype]

    def fill(self, a):
        return self.value

    def lower(self, ctx):
        o = flat(ctx.outputs[0])
        v = self.fill(ctx.attrs)
        ctx.compute(o, lambda i: C(v, o.dtype), self.name)

    def reference(self, a, inputs, is_train=False):
        return [np.full(a.shape, self.fill(a), as_dtype(a.dtype).np)]


@simple("_zeros", aliases=("zeros",))
class Zeros(_Create):
    value = 0.0


@simple("_ones", aliases=("ones",))
class Ones(_Create):
    value = 1.0


@simple("_full", aliases=("full",),
        params=ParamSpec(shape=Param(parse_shape, ()), ctx=Param(parse_str, ""),
                         dtype=Param(parse_dtype_name, "float32"), value=Param(parse_float)))
class Full(_Create):
    def fill(self, a):
        return a.value


@simple("_arange", aliases=("arange",),
        params=ParamSpec(start=Param(parse_float), stop=Param(optional(parse_float), None),
                         step=Param(parse_float, 1.0), repeat=Param(parse_int, 1),
                         infer_range=Param(parse_bool, False), ctx=Param(parse_str, ""),
                         dtype=Param(parse_dtype_name, "float32")))
class Arange(_Create):
    @staticmethod
    def _range(a):
        start, stop, step = a.start, a.stop, a.step
        if stop is None:
            start, stop = 0.0, start
        if step == 0:
            raise OpError("arange: step must not be 0")
        n = int(math.ceil((stop - start) / step))
        return start, step, max(n, 0)

    def infer_shape(self, a, s):
        start, step, n = self._range(a)
        return s, [(n * a.repeat,)]

    def lower(self, ctx):
        a = ctx.attrs
        start, step, _ = self._range(a)
        o = ctx.outputs[0]

        def f(i):
            k = i // C(a.repeat, "int64")
            return K.cast(o.dtype, C(start, "float64") + K.cast("float64", k) * C(step,
                                                                                  "float64"))
        ctx.compute(o, f, "arange")

    def reference(self, a, inputs, is_train=False):
        start, step, n = self._range(a)
        v = start + np.arange(n, dtype=np.float64) * step
        return [np.repeat(v, a.repeat).astype(as_dtype(a.dtype).np)]
