"""Automatic mixed precision operators: ``amp_cast``, ``amp_multicast`` (and their backward
ops), ``all_finite`` and ``multi_all_finite``.

Semantics follow MXNet 1.x ``src/operator/tensor/amp_cast.{h,cc}`` (AMPCastType: only
float32/float16/bfloat16 inputs are cast, others pass through; AMPMultiCastType: the common
widest type, or the narrowest with ``cast_narrow``) and ``src/operator/contrib/all_finite.cc``
(a float32 ``(1,)`` flag, 1 when every element is finite after a cast to float; with
``init_output=False`` the flag is only cleared, never set, so calls can accumulate into one
``out`` array).
"""
from __future__ import annotations

import numpy as np

from ...base import OpError
from .. import kernel as K
from ..dtypes import as_dtype
from ..params import Param, ParamSpec, parse_bool, parse_dtype_name, parse_int
from ..registry import OpDef, simple
from .common import flat, g, outputs_of

C = K.const
_AMP_FLOATS = ("float32", "float16", "bfloat16")
_FLT_MAX = float(np.finfo(np.float32).max)


def _np(dt: str):
    return as_dtype(dt).np


def _cast_flat(ctx, dst, src, name: str) -> None:
    o, i = flat(dst), flat(src)
    if o.size:
        ctx.compute(o, lambda k: K.cast(o.dtype, i[k]), name)


def _np_cast(x, dt: str):
    if dt == "bfloat16":
        raise OpError("amp reference: bfloat16 arrays are not representable in numpy tests")
    return x.astype(_np(dt))


# =============================================================================================
# amp_cast
# =============================================================================================
def _amp_cast_type(a, t: str | None) -> str | None:
    if t is None:
        return None
    return a.dtype if t in _AMP_FLOATS else t


@simple("amp_cast", fusion="elementwise", params=ParamSpec(dtype=Param(parse_dtype_name)))
class AmpCast(OpDef):
    """Cast between float32 and the low precision floats; other dtypes pass through."""

    def inplace(self, a):
        return [(0, 0)]

    def infer_type(self, a, t):
        return t, [_amp_cast_type(a, t[0])]

    def lower(self, ctx):
        _cast_flat(ctx, ctx.outputs[0], ctx.inputs[0], "amp_cast")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [_np_cast(x, _amp_cast_type(a, x.dtype.name))]

    def gradient(self, node, ograds):
        return [g("_backward_amp_cast", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward")]


@simple("_backward_amp_cast", fusion="elementwise", differentiable=False)
class BackwardAmpCast(OpDef):
    """The gradient cast back to the forward input's dtype (input 1, read for its dtype)."""

    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        k = s[0] if s[0] is not None else s[1]
        return [k, k], [k]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        _cast_flat(ctx, ctx.outputs[0], ctx.inputs[0], "amp_cast_backward")

    def reference(self, a, inputs, is_train=False):
        return [_np_cast(inputs[0], inputs[1].dtype.name)]


# =============================================================================================
# amp_multicast
# =============================================================================================
_MULTI = ParamSpec(num_outputs=Param(parse_int), cast_narrow=Param(parse_bool, False))


def _check_n(a, op: str) -> int:
    if a.num_outputs < 1:
        raise OpError(f"{op}: num_outputs must be at least 1, got {a.num_outputs}")
    return a.num_outputs


def _multicast_types(a, types: list) -> list:
    """AMPMultiCastType: the target is float32 if any input is float32 (else input 0's type);
    with cast_narrow it is the last low precision type seen (else float32)."""
    target = "float32" if a.cast_narrow else types[0]
    for t in types:
        if not a.cast_narrow and t == "float32":
            target = "float32"
        elif a.cast_narrow and t in ("float16", "bfloat16"):
            target = t
    return [target if t in _AMP_FLOATS else t for t in types]


@simple("amp_multicast", fusion="elementwise", params=_MULTI)
class AmpMulticast(OpDef):
    """Cast every float32/float16/bfloat16 input to the common widest (or narrowest) type."""

    def arguments(self, a):
        return [f"data_{i}" for i in range(_check_n(a, self.name))]

    def outputs(self, a):
        return [f"output{i}" for i in range(_check_n(a, self.name))]

    def inplace(self, a):
        return [(i, i) for i in range(a.num_outputs)]

    def infer_shape(self, a, s):
        return s, list(s)

    def infer_type(self, a, t):
        if any(x is None for x in t):
            return t, [None] * len(t)
        return t, _multicast_types(a, list(t))

    def lower(self, ctx):
        for i, (x, o) in enumerate(zip(ctx.inputs, ctx.outputs)):
            if o is not None:
                _cast_flat(ctx, o, x, f"amp_multicast{i}")

    def reference(self, a, inputs, is_train=False):
        types = _multicast_types(a, [x.dtype.name for x in inputs])
        return [_np_cast(x, t) for x, t in zip(inputs, types)]

    def gradient(self, node, ograds):
        n = node.parsed.num_outputs
        return outputs_of("_backward_amp_multicast", *ograds, *node.inputs, n=n,
                          num_outputs=n, cast_narrow=node.parsed.cast_narrow,
                          name=f"{node.name}_backward")


@simple("_backward_amp_multicast", fusion="elementwise", differentiable=False, params=_MULTI)
class BackwardAmpMulticast(OpDef):
    """Inputs (grad_0..grad_{n-1}, data_0..data_{n-1}): each gradient cast back to its forward
    input's dtype (the data inputs are read for their dtypes only)."""

    def arguments(self, a):
        n = _check_n(a, self.name)
        return [f"grad_{i}" for i in range(n)] + [f"data_{i}" for i in range(n)]

    def outputs(self, a):
        return [f"output{i}" for i in range(a.num_outputs)]

    def infer_shape(self, a, s):
        n = a.num_outputs
        shapes = [s[i] if s[i] is not None else s[n + i] for i in range(n)]
        return shapes + shapes, shapes

    def infer_type(self, a, t):
        return t, list(t[a.num_outputs:])

    def lower(self, ctx):
        for i, o in enumerate(ctx.outputs):
            if o is not None:
                _cast_flat(ctx, o, ctx.inputs[i], f"amp_multicast_backward{i}")

    def reference(self, a, inputs, is_train=False):
        n = a.num_outputs
        return [_np_cast(inputs[i], inputs[n + i].dtype.name) for i in range(n)]


# =============================================================================================
# all_finite / multi_all_finite
# =============================================================================================
def _finite_flag(x: K.TensorRef) -> K.Expr:
    """1 when every element of ``x`` is finite as a float (MXNet casts to float first, so
    float64 values beyond the float32 range count as infinite), else 0; int32."""
    f = flat(x)
    if f.size == 0:
        return C(1, "int32")
    r = K.reduce_axis(f.size)
    v = K.abs_(K.cast("float32", f[r.var]))
    ok = K.select(v.le(C(_FLT_MAX, "float32")), C(1, "int32"), C(0, "int32"))   # NaN -> 0
    return K.reduce("min", ok, [r])


def _lower_finite(ctx, arrays: list) -> None:
    o = ctx.outputs[0]
    flag = None
    for x in arrays:
        f = _finite_flag(x)
        flag = f if flag is None else K.minimum(flag, f)
    ok = flag.eq(C(1, "int32"))
    if ctx.attrs.init_output:
        ctx.compute(o, lambda i: K.select(ok, C(1.0, "float32"), C(0.0, "float32")),
                    "all_finite")
    else:
        # the flag is only cleared: the output keeps its previous value when all is finite
        ctx.compute(o, lambda i: K.select(ok, o[i], C(0.0, "float32")), "all_finite_acc")


def _finite_ref(a, inputs) -> list:
    ok = all(np.isfinite(x.astype(np.float32)).all() for x in inputs)
    return [np.array([1.0 if ok else 0.0], np.float32)]


def _check_real(op: str, types: list) -> None:
    for t in types:
        if t is not None and as_dtype(t).kind != "f":
            raise OpError(f"{op}: inputs must be floating point (MSHADOW_REAL_TYPE_SWITCH), "
                          f"got {t}")


@simple("all_finite", params=ParamSpec(init_output=Param(parse_bool, True)),
        differentiable=False)
class AllFinite(OpDef):
    def infer_shape(self, a, s):
        return s, [(1,)]

    def infer_type(self, a, t):
        _check_real(self.name, t)
        return t, ["float32"]

    def lower(self, ctx):
        _lower_finite(ctx, ctx.inputs)

    def reference(self, a, inputs, is_train=False):
        return _finite_ref(a, inputs)


@simple("multi_all_finite", differentiable=False,
        params=ParamSpec(num_arrays=Param(parse_int, 1), init_output=Param(parse_bool, True)))
class MultiAllFinite(OpDef):
    def arguments(self, a):
        if a.num_arrays < 1:
            raise OpError(f"multi_all_finite: num_arrays must be at least 1, got "
                          f"{a.num_arrays}")
        return [f"array_{i}" for i in range(a.num_arrays)]

    def infer_shape(self, a, s):
        return s, [(1,)]

    def infer_type(self, a, t):
        _check_real(self.name, t)
        known = [x for x in t if x is not None]
        if len(set(known)) > 1:
            # MXNet reads every array with input 0's element type
            raise OpError(f"multi_all_finite: all arrays must have the same dtype, got {t}")
        return t, ["float32"]

    def lower(self, ctx):
        _lower_finite(ctx, ctx.inputs)

    def reference(self, a, inputs, is_train=False):
        return _finite_ref(a, inputs)
