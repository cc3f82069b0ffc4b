"""Helpers shared by operator definitions: graph building in gradients, shape utilities,
and the lowering patterns most ops reuse (flat elementwise maps, broadcasting)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..graph import Entry, Node, make_node
from ..params import Param, ParamSpec, optional, parse_bool, parse_float, parse_int, parse_shape

__all__ = ["g", "Param", "ParamSpec", "optional", "parse_bool", "parse_float", "parse_int",
           "parse_shape", "norm_axis", "norm_axes", "broadcast_shapes", "flat_map",
           "broadcast_map", "reduce_to", "np_dtype", "K", "OpError", "ShapeError",
           "collect_buffers"]


def g(op: str, *inputs: Entry, name: str | None = None, **attrs) -> Entry:
    """Add a node to the (gradient) graph and return its first output entry."""
    return Entry(make_node(op, list(inputs), attrs, name=name), 0)


def outputs_of(op: str, *inputs: Entry, n: int, name: str | None = None, **attrs) -> list:
    node = make_node(op, list(inputs), attrs, name=name)
    return [Entry(node, i) for i in range(n)]


def out_entry(node: Node, i: int = 0) -> Entry:
    return Entry(node, i)


def norm_axis(axis: int, ndim: int, what: str = "axis") -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ShapeError(f"{what} {axis} is out of range for a {ndim}-d input")
    return axis % ndim if ndim else 0


def norm_axes(axes, ndim: int) -> tuple:
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    out = tuple(sorted({norm_axis(int(a), ndim) for a in axes}))
    return out


def broadcast_shapes(a: Sequence[int], b: Sequence[int], op: str = "broadcast") -> tuple:
    """numpy broadcasting (MXNet's BinaryBroadcastShapeCompact)."""
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(f"{op}: shapes {tuple(a)} and {tuple(b)} cannot be broadcast")
    return tuple(out)


def np_dtype(d) -> np.dtype:
    from ..dtypes import as_dtype

    return as_dtype(d).np


def flat(ref: K.TensorRef) -> K.TensorRef:
    return K.TensorRef(ref.buf, (ref.size,), (1,), ref.offset)


def flat_map(ctx, fn: Callable[..., K.Expr], out: int = 0, name: str = "map") -> None:
    """out = fn(*inputs) elementwise over same-shaped contiguous tensors, as one flat loop."""
    o = flat(ctx.outputs[out])
    ins = [flat(r) for r in ctx.inputs]
    ctx.compute(o, lambda i: fn(*[r[i] for r in ins]), name)


def broadcast_view(ref: K.TensorRef, shape: Sequence[int]) -> K.TensorRef:
    """View ``ref`` as ``shape`` under numpy broadcasting (stride 0 on broadcast dims)."""
    n = len(shape)
    rs = (1,) * (n - ref.ndim) + tuple(ref.shape)
    st = (0,) * (n - ref.ndim) + tuple(ref.strides)
    strides = tuple(0 if (d == 1 and s != 1) else t for d, s, t in zip(rs, shape, st))
    return K.TensorRef(ref.buf, tuple(shape), strides, ref.offset)


def broadcast_map(ctx, fn: Callable[..., K.Expr], name: str = "bmap") -> None:
    """out = fn(*inputs) with numpy broadcasting of every input to the output's shape."""
    o = ctx.outputs[0]
    if all(tuple(r.shape) == tuple(o.shape) for r in ctx.inputs):
        return flat_map(ctx, fn, name=name)
    ins = [broadcast_view(r, o.shape) for r in ctx.inputs]
    ctx.compute(o, lambda *i: fn(*[r[i] for r in ins]), name)


def reduce_to(ctx, dst: K.TensorRef, fn: Callable[..., K.Expr], full_shape: Sequence[int],
              srcs: Sequence[K.TensorRef], name: str = "reduce_to") -> None:
    """dst = sum over the broadcast axes of fn(*srcs viewed at full_shape).

    The gradient of a broadcasting op: dst has the shape the input had before broadcasting.
    """
    full = tuple(full_shape)
    n = len(full)
    dshape = (1,) * (n - dst.ndim) + tuple(dst.shape)
    red_axes = [ax for ax in range(n) if dshape[ax] == 1 and full[ax] != 1]
    views = [broadcast_view(s, full) for s in srcs]
    dview = K.TensorRef(dst.buf, dshape, None, dst.offset)
    if not red_axes:
        ctx.compute(dview, lambda *i: fn(*[v[i] for v in views]), name)
        return
    raxes = [K.reduce_axis(full[ax]) for ax in red_axes]

    def body(*i):
        idx = list(i)
        for ax, r in zip(red_axes, raxes):
            idx[ax] = r.var
        return K.reduce("sum", fn(*[v[tuple(idx)] for v in views]), raxes)

    ctx.compute(dview, body, name)


def prod(shape) -> int:
    return math.prod(shape)


def collect_buffers(stmts: list) -> list:
    """The buffers a statement-level kernel body reads or writes, in first-use order (the
    ``buffers`` of a hand-built ``K.Kernel``)."""
    out: dict = {}
    seen: set = set()

    def expr(e):
        if id(e) in seen:      # shared sub-trees are walked once
            return
        seen.add(id(e))
        if isinstance(e, K.Load):
            out.setdefault(e.buf, None)
        for c in K.children(e):
            expr(c)

    def walk(ss):
        for s in ss:
            if isinstance(s, K.Store):
                expr(s.index)
                expr(s.value)
                out.setdefault(s.buf, None)
            elif isinstance(s, K.Assign):
                expr(s.value)
            elif isinstance(s, K.For):
                expr(s.extent)
                expr(s.start)
                walk(s.body)
            elif isinstance(s, K.If):
                expr(s.cond)
                walk(s.then)
                walk(s.otherwise)

    walk(stmts)
    return list(out)
