"""Creation operators that fill an output from attributes: ``_eye`` (mx.nd.eye),
``_linspace`` (mx.nd.linspace) and ``_contrib_arange_like`` (mx.nd.contrib.arange_like).

Semantics follow MXNet 1.x ``src/operator/tensor/init_op.{h,cc}``: ``EyeParam`` /
``InitEyeShape`` / ``EyeFillImpl``, ``LinspaceParam`` / ``LinspaceShape`` / ``linspace_fwd``
(values ``start + step * i`` in double, cast on store) and ``RangeLikeParam`` /
``RangeLikeShape`` / ``range_fwd`` (``start + (i / repeat) * step`` in the output type).
``_zeros``/``_ones``/``_full``/``_arange`` live in ``elemwise.py``.
"""
from __future__ import annotations

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..dtypes import as_dtype
from ..params import (
    Param,
    ParamSpec,
    optional,
    parse_bool,
    parse_dtype_name,
    parse_float,
    parse_int,
    parse_str,
)
from ..registry import OpDef, simple
from .common import flat, g

C = K.const
I64 = "int64"

#: the dtypes EyeParam enumerates (MXNet leaves out bool and bfloat16 for eye)
_EYE_DTYPES = ("float32", "float64", "float16", "uint8", "int8", "int32", "int64")


def _eye_dtype(s) -> str:
    name = parse_dtype_name(s)
    if name not in _EYE_DTYPES:
        raise ValueError(f"expected one of {list(_EYE_DTYPES)}, got {s!r}")
    return name


class _Fill(OpDef):
    """No-input ops whose output dtype is the ``dtype`` attribute."""

    fusion = "elementwise"
    differentiable = False

    def arguments(self, a):
        return []

    def infer_type(self, a, t):
        return t, [a.dtype]


# =============================================================================================
# _eye
# =============================================================================================
def _eye_shape(a) -> tuple:
    if a.N < 0 or a.M < 0:
        raise ShapeError(f"_eye: N={a.N} and M={a.M} must be non-negative")
    return (a.N, a.M if a.M > 0 else a.N)


@simple("_eye", params=ParamSpec(N=Param(parse_int), M=Param(parse_int, 0),
                                 k=Param(parse_int, 0), ctx=Param(parse_str, ""),
                                 dtype=Param(_eye_dtype, "float32")))
class Eye(_Fill):
    """Ones on the k-th diagonal (k > 0 above the main one), zeros elsewhere."""

    def infer_shape(self, a, s):
        return s, [_eye_shape(a)]

    def lower(self, ctx):
        o = ctx.outputs[0]
        if o.size == 0:
            return
        k = C(int(ctx.attrs.k), I64)
        one, zero = C(1, o.dtype), C(0, o.dtype)
        ctx.compute(o, lambda i, j: K.select((j - i).eq(k), one, zero), "eye")

    def reference(self, a, inputs, is_train=False):
        n, m = _eye_shape(a)
        return [np.eye(n, m, a.k, dtype=as_dtype(a.dtype).np)]


# =============================================================================================
# _linspace
# =============================================================================================
@simple("_linspace", params=ParamSpec(start=Param(parse_float), stop=Param(parse_float),
                                      num=Param(parse_int), endpoint=Param(parse_bool, True),
                                      ctx=Param(parse_str, ""),
                                      dtype=Param(parse_dtype_name, "float32")))
class Linspace(_Fill):
    """``num`` values from ``start``; the last is ``stop`` when ``endpoint``."""

    @staticmethod
    def _step(a) -> float:
        # LinspaceCompute: a 0 step when there are no intervals (num <= 1 with endpoint)
        n = a.num - 1 if a.endpoint else a.num
        return (a.stop - a.start) / n if n > 0 else 0.0

    def infer_shape(self, a, s):
        if a.num < 0:
            raise ShapeError(f"_linspace: Number of sequence should be non-negative, received "
                             f"{a.num}")
        return s, [(a.num,)]

    def lower(self, ctx):
        a = ctx.attrs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        start, step = C(a.start, "float64"), C(self._step(a), "float64")
        ctx.compute(o, lambda i: K.cast(o.dtype, start + step * K.cast("float64", i)),
                    "linspace")

    def reference(self, a, inputs, is_train=False):
        v = a.start + self._step(a) * np.arange(a.num, dtype=np.float64)
        return [v.astype(as_dtype(a.dtype).np)]


# =============================================================================================
# _contrib_arange_like
# =============================================================================================
def _arange_like_shape(a, d) -> tuple:
    if a.axis is None:
        return tuple(d)
    nd = len(d)
    ax = a.axis + nd if a.axis < 0 else a.axis
    if not 0 <= ax < nd:
        raise ShapeError(f"_contrib_arange_like: cannot handle param.axis {a.axis} for a "
                         f"{nd}-d input")
    return (d[ax],)


def _range_terms(a, dtype):
    """(start, step) as range_fwd sees them: cast to the output type (through an integer
    first for unsigned types, as RangeCompute does)."""
    d = as_dtype(dtype)
    start, step = a.start, a.step
    if d.kind == "u":
        start, step = float(int(start)), float(int(step))
    if d.kind != "f":
        start, step = int(start), int(step)
    return start, step


@simple("_contrib_arange_like",
        params=ParamSpec(start=Param(parse_float, 0.0), step=Param(parse_float, 1.0),
                         repeat=Param(parse_int, 1), ctx=Param(parse_str, ""),
                         dtype=Param(parse_dtype_name, "float32"),
                         axis=Param(optional(parse_int), None)))
class ArangeLike(OpDef):
    """Evenly spaced values shaped like the input (or like one of its axes); the input is
    read for its shape only."""

    fusion = "injective"

    def infer_shape(self, a, s):
        if a.repeat <= 0:
            raise OpError(f"_contrib_arange_like: repeat must be positive, got {a.repeat}")
        if s[0] is None:
            return s, [None]
        return s, [_arange_like_shape(a, s[0])]

    def infer_type(self, a, t):
        return t, [a.dtype]

    def lower(self, ctx):
        a = ctx.attrs
        o = flat(ctx.outputs[0])
        if o.size == 0:
            return
        start, step = _range_terms(a, o.dtype.name)
        # range_fwd computes in the output type; half precision computes in float32
        cdt = "float32" if o.dtype.name in ("float16", "bfloat16") else (
            o.dtype.name if o.dtype.kind == "f" else I64)
        rep = C(int(a.repeat), I64)
        ctx.compute(o, lambda i: K.cast(o.dtype, C(start, cdt) + K.cast(cdt, i // rep) *
                                        C(step, cdt)), "arange_like")

    def reference(self, a, inputs, is_train=False):
        shape = _arange_like_shape(a, inputs[0].shape)
        n = int(np.prod(shape))
        dt = as_dtype(a.dtype).np
        start, step = _range_terms(a, a.dtype)
        k = np.arange(n, dtype=np.int64) // a.repeat
        if np.dtype(dt).kind == "f":
            cdt = np.float32 if np.dtype(dt).itemsize < 4 else dt
            v = np.asarray(start, cdt) + k.astype(cdt) * np.asarray(step, cdt)
        else:
            v = start + k * step
        return [v.astype(dt).reshape(shape)]

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0], name=f"{node.name}_backward")]
