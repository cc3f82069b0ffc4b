"""Sequence operators over padded batches: ``SequenceLast`` and ``SequenceReverse`` with their
backward passes (``SequenceMask`` lives in ``indexing.py``).

Semantics follow MXNet 1.x ``src/operator/sequence_last-inl.h`` and
``sequence_reverse-inl.h``: data is ``(T, B, ...)`` (``SequenceLast`` also takes ``axis=1``:
``(B, T, ...)``), ``sequence_length`` is a ``(B,)`` array of any dtype whose values are
truncated to integers. MXNet does not check the lengths against ``T`` (an out-of-range length
reads out of bounds there); here a length is clamped to ``[1, T]`` (SequenceLast) or
``[0, T]`` (SequenceReverse) before any load, so every access stays in bounds.
"""
from __future__ import annotations

import numpy as np

from ...base import ShapeError
from .. import kernel as K
from ..params import Param, ParamSpec, parse_bool, parse_int
from ..registry import OpDef, simple
from .common import g
from .indexing import to_int

C = K.const
I64 = "int64"
_SEQ = ParamSpec(use_sequence_length=Param(parse_bool, False), axis=Param(parse_int, 0))


def _ci(v: int) -> K.Expr:
    return C(int(v), I64)


def _np_lengths(lens, T: int, lo: int) -> np.ndarray:
    v = np.trunc(np.asarray(lens, np.float64)).astype(np.int64)
    return np.clip(v, lo, T)


class _SeqOp(OpDef):
    fusion = "injective"
    params = _SEQ

    def arguments(self, a):
        return ["data", "sequence_length"] if a.use_sequence_length else ["data"]

    def infer_type(self, a, t):
        # sequence_length keeps its own dtype; unknown, it defaults to the data's
        if len(t) > 1:
            return [t[0], t[1] if t[1] is not None else t[0]], [t[0]]
        return t, [t[0]]


def _check(op: str, a, d, lens, allowed_axes) -> int:
    """Validate shapes; returns the batch size."""
    if a.axis not in allowed_axes:
        raise ShapeError(f"{op}: axis must be {' or '.join(map(str, allowed_axes))}, got "
                         f"{a.axis}")
    if len(d) < 2:
        raise ShapeError(f"{op}: the data array must be of rank 2 or greater, got {tuple(d)}")
    b = d[1 - a.axis]
    if lens is not None and tuple(lens) != (b,):
        raise ShapeError(f"{op}: sequence_length must have shape ({b},) (the batch size), got "
                         f"{tuple(lens)}")
    return b


# =============================================================================================
# SequenceLast
# =============================================================================================
def _last_index(a, lens, T: int, b: K.Expr) -> K.Expr:
    """The time step SequenceLast reads for batch entry ``b``: length - 1, kept in [0, T)."""
    if lens is None:
        return _ci(T - 1)
    return K.minimum(K.maximum(to_int(lens[b]) - _ci(1), _ci(0)), _ci(T - 1))


@simple("SequenceLast", params=_SEQ)
class SequenceLast(_SeqOp):
    """The last valid element of every sequence: output is data without the time axis."""

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        d = s[0]
        b = _check(self.name, a, d, s[1] if len(s) > 1 else None, (0, 1))
        out = tuple(v for i, v in enumerate(d) if i != a.axis)
        if d[a.axis] == 0 and int(np.prod(out)) > 0:
            raise ShapeError(f"SequenceLast: the sequence axis {a.axis} of {tuple(d)} is empty")
        return ([d, (b,)] if a.use_sequence_length else s), [out]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        lens = ctx.inputs[1] if a.use_sequence_length else None
        T = x.shape[a.axis]

        def f(b, *rest):
            t = _last_index(a, lens, T, b)
            idx = (t, b) if a.axis == 0 else (b, t)
            return x[idx + rest]
        ctx.compute(o, f, "sequence_last")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        xt = np.moveaxis(x, a.axis, 0)          # (T, B, ...)
        T, B = xt.shape[:2]
        if a.use_sequence_length:
            t = _np_lengths(inputs[1], T, 1) - 1
        else:
            t = np.full(B, T - 1)
        return [np.stack([xt[t[b], b] for b in range(B)]) if B else
                np.zeros(xt.shape[1:], x.dtype)]

    def gradient(self, node, ograds):
        a = node.parsed
        ins = [ograds[0], node.inputs[0]] + ([node.inputs[1]] if a.use_sequence_length else [])
        gx = g("_backward_SequenceLast", *ins, use_sequence_length=a.use_sequence_length,
               axis=a.axis, name=f"{node.name}_backward")
        return [gx] + ([None] if a.use_sequence_length else [])


@simple("_backward_SequenceLast", params=_SEQ, differentiable=False)
class BackwardSequenceLast(_SeqOp):
    """Inputs (ograd, data[, sequence_length]): ograd placed at each sequence's last step,
    zeros elsewhere (data is read for its shape only)."""

    def arguments(self, a):
        return ["ograd", "data"] + (["sequence_length"] if a.use_sequence_length else [])

    def infer_shape(self, a, s):
        return s, [s[1]]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        dy = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        lens = ctx.inputs[2] if a.use_sequence_length else None
        T = o.shape[a.axis]

        def f(*i):
            t, b = (i[0], i[1]) if a.axis == 0 else (i[1], i[0])
            hit = t.eq(_last_index(a, lens, T, b))
            return K.select(hit, dy[(b,) + i[2:]], C(0, o.dtype))
        ctx.compute(o, f, "sequence_last_backward")

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs[0], inputs[1]
        out = np.zeros(x.shape, dy.dtype)
        ot = np.moveaxis(out, a.axis, 0)        # a view: writes land in out
        T, B = ot.shape[:2]
        t = _np_lengths(inputs[2], T, 1) - 1 if a.use_sequence_length else np.full(B, T - 1)
        for b in range(B):
            ot[t[b], b] = dy[b]
        return [out]


# =============================================================================================
# SequenceReverse
# =============================================================================================
@simple("SequenceReverse", params=_SEQ)
class SequenceReverse(_SeqOp):
    """Reverse the first ``sequence_length[b]`` steps of every sequence (all ``T`` without
    lengths); padding steps stay in place."""

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        b = _check(self.name, a, s[0], s[1] if len(s) > 1 else None, (0,))
        return ([s[0], (b,)] if a.use_sequence_length else s), [s[0]]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        T = x.shape[0]
        if not a.use_sequence_length:
            ctx.compute(o, lambda t, b, *r: x[(_ci(T - 1) - t, b) + r], "sequence_reverse")
            return
        lens = ctx.inputs[1]

        def f(t, b, *r):
            n = K.minimum(K.maximum(to_int(lens[b]), _ci(0)), _ci(T))
            src = K.select(t.lt(n), n - _ci(1) - t, t)    # in [0, T) for every t < T
            return x[(src, b) + r]
        ctx.compute(o, f, "sequence_reverse")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        out = x.copy()
        T, B = x.shape[:2]
        n = _np_lengths(inputs[1], T, 0) if a.use_sequence_length else np.full(B, T)
        for b in range(B):
            out[:n[b], b] = x[:n[b], b][::-1]
        return [out]

    def gradient(self, node, ograds):
        # the reversal is its own inverse: the gradient is the same reversal of ograd
        a = node.parsed
        ins = [ograds[0]] + ([node.inputs[1]] if a.use_sequence_length else [])
        gx = g("SequenceReverse", *ins, use_sequence_length=a.use_sequence_length,
               axis=a.axis, name=f"{node.name}_backward")
        return [gx] + ([None] if a.use_sequence_length else [])
