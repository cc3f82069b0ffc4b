"""Shape and data-movement operators: Reshape family (views), transpose, slicing, splitting and
joining, tiling/repeating/broadcasting, reverse, Pad, UpSampling, depth/space and diag;
shape_array/size_array, reshape_like, _split_v2, legacy Crop (``crop-inl.h``) and
_contrib_index_copy (``contrib/index_copy-inl.h``).

Semantics follow MXNet 1.x (``src/operator/tensor/matrix_op-inl.h``, ``slice_channel-inl.h``,
``concat-inl.h``, ``pad-inl.h``, ``nn/upsampling-inl.h``, ``broadcast_reduce_op.h``), including
its checks and error cases. Pure data movement is computed exactly; the summing backward passes
follow MXNet's summation order (``red::sum`` with Kahan compensation for the reductions of
tile/repeat/broadcast, row-major accumulation for Pad and UpSampling) so gradients match
MXNet bit for bit.

Shared helpers (views of a buffer, Kahan reduction kernels, scatter-add kernels) live here and
are reused by ``indexing.py``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
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
from ..registry import OpDef, simple
from .common import broadcast_view, flat, g, outputs_of

C = K.const
I64 = "int64"


# =============================================================================================
# helpers
# =============================================================================================
def _prod(s) -> int:
    return math.prod(int(d) for d in s)


def _ci(v: int) -> K.Expr:
    return C(int(v), I64)


def view(ref: K.TensorRef, shape, strides, offset) -> K.TensorRef:
    return K.TensorRef(ref.buf, tuple(int(s) for s in shape), tuple(int(s) for s in strides),
                       int(offset))


def narrow(ref: K.TensorRef, axis: int, start: int, length: int) -> K.TensorRef:
    """ref[..., start:start+length, ...] along ``axis`` (a strided view, no copy)."""
    shape = list(ref.shape)
    shape[axis] = length
    return view(ref, shape, ref.strides, ref.offset + start * ref.strides[axis])


def select_axis(ref: K.TensorRef, axis: int, index: int) -> K.TensorRef:
    """ref[..., index, ...]: the view with ``axis`` removed."""
    shape = [d for i, d in enumerate(ref.shape) if i != axis]
    strides = [s for i, s in enumerate(ref.strides) if i != axis]
    return view(ref, shape, strides, ref.offset + index * ref.strides[axis])


def copy_flat(ctx, name: str = "copy", src: int = 0, dst: int = 0) -> None:
    """out = in over the flat element order (the lowering of a view op when no view is made)."""
    o = flat(ctx.outputs[dst])
    i = flat(ctx.inputs[src])
    if o.size == 0:
        return
    ctx.compute(o, lambda k: K.cast(o.dtype, i[k]), name)


def copy_view(ctx, dst: K.TensorRef, src: K.TensorRef, name: str = "copy") -> None:
    if dst.size == 0:
        return
    if tuple(dst.shape) != tuple(src.shape):
        raise ShapeError(f"internal: copy {src.shape} -> {dst.shape}")
    if dst.ndim == 0:
        dst = view(dst, (1,), (1,), dst.offset)
        src = view(src, (1,), (1,), src.offset)
    ctx.compute(dst, lambda *i: K.cast(dst.dtype, src[i]), name)


def acc_dtype(d) -> str:
    """Accumulation type of sums (MXNet's AccType: half precision sums in float32)."""
    return "float32" if d.name in ("float16", "bfloat16") else d.name


def ordered_sum(terms: list) -> K.Expr:
    """((t0 + t1) + t2) + ...: an explicit left-to-right sum (no reassociation)."""
    acc = terms[0]
    for t in terms[1:]:
        acc = acc + t
    return acc


def _unravel(task: K.Expr, shape: Sequence[int]) -> list:
    idx = []
    stride = _prod(shape)
    for d in shape:
        stride //= max(int(d), 1)
        idx.append((task // _ci(stride)) % _ci(d) if d > 1 else _ci(0))
    return idx


def _buffers(*exprs) -> list:
    out: list = []
    seen: set = set()

    def go(x):
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, K.Load):
            out.append(x.buf)
        for c in K.children(x):
            go(c)

    for e in exprs:
        go(e)
    return list(dict.fromkeys(out))


def kahan_sum(ctx, dst: K.TensorRef, src_fn: Callable, red_extents: Sequence[int],
              name: str = "kahan_sum") -> None:
    """dst[o] = sum over r (row-major over ``red_extents``) of ``src_fn(o, r)``, accumulated
    with Kahan compensation exactly as MXNet's ``red::sum`` in ReduceAxesComputeImpl
    (the backward of tile, repeat and the broadcast ops), so sums match MXNet bit for bit.

    ``src_fn(o, r)`` gets lists of index expressions (output indices, reduction indices).
    """
    shape = tuple(int(s) for s in dst.shape)
    red = [int(e) for e in red_extents]
    if _prod(shape) == 0:
        return
    if dst.ndim == 0:
        dst = view(dst, (1,), (1,), dst.offset)
        fn0 = src_fn
        src_fn = lambda o, r: fn0([], r)
        shape = (1,)
    if _prod(red) == 0:
        ctx.compute(dst, lambda *i: C(0, dst.dtype), name + "_zero")
        return
    red_nz = [e for e in red if e != 1]
    if not red_nz:
        ctx.compute(dst, lambda *i: K.cast(dst.dtype, src_fn(list(i), [_ci(0)] * len(red))),
                    name)
        return
    adt = acc_dtype(dst.dtype)
    if shape[-1] > 1:
        return _kahan_sum_rows(ctx, dst, src_fn, red, shape, adt, name)
    task = K.index_var("task")
    j = K.index_var("j")
    oidx = _unravel(task, shape[:-1]) + [j]
    rvars = [K.index_var("r") if e != 1 else None for e in red]
    rexprs = [v if v is not None else _ci(0) for v in rvars]
    v = K.cast(adt, src_fn(oidx, rexprs))
    acc = K.Local("%kacc", v.dtype)
    res = K.Local("%kres", v.dtype)
    yl = K.Local("%ky", v.dtype)
    tl = K.Local("%kt", v.dtype)
    inner: list = [K.Assign(yl, v - res), K.Assign(tl, acc + yl),
                   K.Assign(res, (tl - acc) - yl), K.Assign(acc, tl)]
    for rv, ext in reversed(list(zip(rvars, red))):
        if rv is None:
            continue
        inner = [K.For(rv, _ci(ext), inner, "serial")]
    zero = C(0, v.dtype)
    body_j = [K.Assign(acc, zero), K.Assign(res, zero)] + inner + \
        [K.Store(dst.buf, dst.flat_index(oidx), K.cast(dst.dtype, acc))]
    body = [K.For(j, _ci(shape[-1]), body_j, "serial")]
    bufs = _buffers(v) + [dst.buf]
    bufs = list(dict.fromkeys(bufs))
    n_tasks = _prod(shape[:-1])
    kern = K.Kernel("__K__", bufs, task, n_tasks, body, cost=_prod(shape) * _prod(red) * 4,
                    note=name)
    ctx.emit(kern)


KAHAN_CHUNK = 1024


def _kahan_sum_rows(ctx, dst, src_fn, red, shape, adt, name) -> None:
    """kahan_sum when the last output dim is kept: the reduction loops run outside a
    contiguous (vectorizable) loop over that dim, with accumulators and Kahan residuals in
    scratch rows, so the source is read row by row. Same per-element order as kahan_sum."""
    last = shape[-1]
    nch = -(-last // KAHAN_CHUNK)
    task = K.index_var("task")
    row = task // _ci(nch) if nch > 1 else task
    start = (task % _ci(nch)) * _ci(KAHAN_CHUNK) if nch > 1 else _ci(0)
    extent = K.minimum(_ci(KAHAN_CHUNK), _ci(last) - start) if nch > 1 else _ci(last)
    j = K.index_var("j")
    oidx = _unravel(row, shape[:-1]) + [j]
    acc = dst if dst.dtype.name == adt else ctx.temp(shape, adt)
    res = ctx.temp(shape, adt)
    ai, ri = acc.flat_index(oidx), res.flat_index(oidx)
    zero = C(0, adt)
    rvars = [K.index_var("r") if e != 1 else None for e in red]
    v = K.cast(adt, src_fn(oidx, [x if x is not None else _ci(0) for x in rvars]))
    a_l, r_l = K.Load(acc.buf, ai), K.Load(res.buf, ri)
    yl, tl = K.Local("%ky", v.dtype), K.Local("%kt", v.dtype)
    step = [K.Assign(yl, v - r_l), K.Assign(tl, a_l + yl),
            K.Store(res.buf, ri, (tl - a_l) - yl), K.Store(acc.buf, ai, tl)]
    loop: list = [K.For(j, extent, step, "vector", start=start)]
    for rv, ext in reversed(list(zip(rvars, red))):
        if rv is not None:
            loop = [K.For(rv, _ci(ext), loop, "serial")]
    body = [K.For(j, extent, [K.Store(acc.buf, ai, zero), K.Store(res.buf, ri, zero)],
                  "vector", start=start)] + loop
    if acc is not dst:
        body.append(K.For(j, extent, [K.Store(dst.buf, dst.flat_index(oidx),
                                              K.cast(dst.dtype, a_l))], "vector", start=start))
    bufs = list(dict.fromkeys(_buffers(v) + [acc.buf, res.buf, dst.buf]))
    kern = K.Kernel("__K__", bufs, task, _prod(shape[:-1]) * nch, body,
                    cost=_prod(shape) * _prod(red) * 4, note=name)
    ctx.emit(kern)


SCATTER_CHUNK = 512


def scatter_add(ctx, dst: K.TensorRef, src: K.TensorRef, index_fn: Callable, name: str,
                zero: bool = True, assign: bool = False) -> None:
    """dst[p, index(k), q] += src[p, k, q] for k in order (deterministic, no atomics).

    ``dst`` is (P, N, Q), ``src`` is (P, Kn, Q) (views); ``index_fn(k)`` is an int64 expression
    in [0, N). Every (p, chunk of q) is one task that walks k sequentially, so repeated
    indices accumulate in index order, as MXNet's AddTakeGrad does. With ``assign`` the value
    is stored instead of added (last write wins, scatter_nd).
    """
    P, _N, Q = (int(s) for s in dst.shape)
    Kn = int(src.shape[1])
    if _prod(dst.shape) == 0:
        return
    if zero:
        ctx.compute(dst, lambda *i: C(0, dst.dtype), name + "_zero")
    if Kn == 0 or Q == 0:
        return
    nch = -(-Q // SCATTER_CHUNK)
    task = K.index_var("task")
    p = task // _ci(nch) if nch > 1 else task
    c = task % _ci(nch) if nch > 1 else _ci(0)
    k = K.index_var("k")
    q = K.index_var("q")
    r = index_fn(k)
    start = c * _ci(SCATTER_CHUNK)
    extent = K.minimum(_ci(SCATTER_CHUNK), _ci(Q) - start) if nch > 1 else _ci(Q)
    di = dst.flat_index([p, r, q])
    val = K.cast(dst.dtype, src[p, k, q])
    if not assign:
        val = K.Load(dst.buf, di) + val
    qloop = K.For(q, extent, [K.Store(dst.buf, di, val)], "vector", start=start)
    body = [K.For(k, _ci(Kn), [qloop], "serial")]
    bufs = list(dict.fromkeys(_buffers(val, r) + [dst.buf]))
    kern = K.Kernel("__K__", bufs, task, P * nch, body, cost=P * Kn * Q * 2, note=name)
    ctx.emit(kern)


def _norm_axis(axis: int, ndim: int, op: str, what: str = "axis", extra: int = 0) -> int:
    """Normalise ``axis`` into [0, ndim + extra); negative counts from the end."""
    n = ndim + extra
    a = axis + n if axis < 0 else axis
    if not 0 <= a < max(n, 1):
        raise ShapeError(f"{op}: {what}={axis} is out of range for a {ndim}-d input")
    return a


class _ShapeOp(OpDef):
    """Ops whose output dtype is the first input's (and which accept any dtype)."""

    fusion = "injective"

    def infer_type(self, a, t):
        t0 = next((x for x in t if x is not None), None)
        return [x if x is not None else t0 for x in t], [t0] * self.num_outputs(a)


class _BackwardLike(_ShapeOp):
    """Backward ops with inputs (ograd, data...) whose output takes the shape of input 1."""

    differentiable = False

    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def infer_type(self, a, t):
        return t, [t[0]]


# =============================================================================================
# Reshape family (views)
# =============================================================================================
def infer_reshape(shape: Sequence[int], dshape: Sequence[int], reverse: bool,
                  op: str = "Reshape") -> tuple:
    """MXNet's InferReshapeShape: special codes 0 -1 -2 -3 -4 (right to left with reverse)."""
    dv = [int(d) for d in dshape]
    pv = [int(p) for p in shape]
    if reverse:
        dv.reverse()
        pv.reverse()
    tmp: list = []
    src = 0
    inf = -1
    i = 0
    n = len(pv)
    while i < n:
        p = pv[i]
        if p == 0:
            if src >= len(dv):
                raise ShapeError(f"{op}: shape {tuple(shape)} copies (0) more dimensions than "
                                 f"the input {tuple(dshape)} has")
            tmp.append(dv[src])
            src += 1
        elif p == -1:
            if inf >= 0:
                raise ShapeError(f"{op}: shape {tuple(shape)}: one and only one dim can be "
                                 "inferred (-1)")
            inf = len(tmp)
            tmp.append(1)
            src += 1
        elif p == -2:
            tmp.extend(dv[src:])
            src = len(dv)
        elif p == -3:
            if src + 1 >= len(dv):
                raise ShapeError(f"{op}: shape {tuple(shape)}: -3 needs two input dimensions, "
                                 f"input is {tuple(dshape)}")
            tmp.append(dv[src] * dv[src + 1])
            src += 2
        elif p == -4:
            # MXNet reads the two entries that follow -4 in the (possibly reversed) list
            if i + 2 >= n:
                raise ShapeError(f"{op}: shape {tuple(shape)}: -4 must be followed by two "
                                 "dimensions")
            if src >= len(dv):
                raise ShapeError(f"{op}: shape {tuple(shape)}: -4 has no input dimension to "
                                 f"split in {tuple(dshape)}")
            d0 = dv[src]
            src += 1
            d1, d2 = pv[i + 1], pv[i + 2]
            i += 2
            if d1 == -1 and d2 == -1:
                raise ShapeError(f"{op}: split dims cannot both be -1")
            if d1 == -1:
                if d2 == 0:
                    raise ShapeError(f"{op}: cannot split {d0} by 0")
                d1 = d0 // d2
            if d2 == -1:
                if d1 == 0:
                    raise ShapeError(f"{op}: cannot split {d0} by 0")
                d2 = d0 // d1
            if d1 < 0 or d2 < 0 or d1 * d2 != d0:
                raise ShapeError(f"{op}: split dims {d1}, {d2} do not divide original dim {d0}")
            tmp.extend([d1, d2])
        elif p > 0:
            tmp.append(p)
            src += 1
        else:
            raise ShapeError(f"{op}: invalid value {p} in shape {tuple(shape)} (allowed: "
                             "positive sizes and the special values 0, -1, -2, -3, -4)")
        i += 1
    total = _prod(dshape)
    if inf >= 0:
        rest = _prod(tmp)
        if rest == 0:
            if total != 0:
                raise ShapeError(f"{op}: cannot reshape {tuple(dshape)} to {tuple(shape)}")
            raise ShapeError(f"{op}: cannot infer the -1 dimension of {tuple(shape)} for the "
                             f"zero-size input {tuple(dshape)}")
        tmp[inf] = total // rest
    if reverse:
        tmp.reverse()
    out = tuple(tmp)
    if _prod(out) != total:
        raise ShapeError(f"{op}: cannot reshape array of shape {tuple(dshape)} (size {total}) "
                         f"into shape {out} (size {_prod(out)}), from shape={tuple(shape)}"
                         f"{' reverse=True' if reverse else ''}")
    return out


class _View(_ShapeOp):
    """Output 0 has input 0's bytes: zero-copy view when possible, a flat copy otherwise."""

    inplace_identity = True

    def inplace(self, a):
        return [(0, 0)]

    def lower(self, ctx):
        copy_flat(ctx, name=self.name.lower())

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        _, (o,) = self.infer_shape(a, [tuple(x.shape)])
        return [x.reshape(o).copy()]

    def gradient(self, node, ograds):
        return [g("_backward_reshape", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward")]


@simple("Reshape", aliases=("reshape",),
        params=ParamSpec(shape=Param(parse_shape, ()), reverse=Param(parse_bool, False),
                         target_shape=Param(parse_shape, ()),
                         keep_highest=Param(parse_bool, False)))
class Reshape(_View):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if any(x is None for x in a.shape) or any(x is None for x in a.target_shape):
            raise ShapeError("Reshape: shape entries cannot be None")
        if len(a.shape):
            return s, [infer_reshape(a.shape, d, a.reverse)]
        if len(a.target_shape):
            o = list(a.target_shape)
            start = 1 if a.keep_highest else 0
            if a.keep_highest:
                if not d:
                    raise ShapeError("Reshape: keep_highest needs an input with at least 1 dim")
                o[0] = d[0]
            zeros = [i for i in range(start, len(o)) if o[i] == 0]
            if len(zeros) == 1:
                o[zeros[0]] = 1
                rest = _prod(o)
                if rest == 0:
                    raise ShapeError(f"Reshape: cannot infer target_shape {a.target_shape}")
                o[zeros[0]] = _prod(d) // rest
            o = tuple(o)
            if any(x < 0 for x in o) or _prod(o) != _prod(d):
                raise ShapeError(f"Reshape: cannot reshape array of shape {tuple(d)} into "
                                 f"target_shape {a.target_shape}")
            return s, [o]
        raise ShapeError("Reshape: the target shape is required (attribute 'shape')")


@simple("Flatten", aliases=("flatten",))
class Flatten(_View):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if len(d) == 0:
            raise ShapeError("Flatten: the input must have at least 1 dimension")
        return s, [(d[0], _prod(d[1:]))]


@simple("expand_dims", params=ParamSpec(axis=Param(parse_int)))
class ExpandDims(_View):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        nd = len(d)
        ax = a.axis + nd + 1 if a.axis < 0 else a.axis
        if not 0 <= ax <= nd:
            raise ShapeError(f"expand_dims: axis must be in the range [{-nd - 1}, {nd}] "
                             f"({a.axis} provided)")
        o = list(d)
        o.insert(ax, 1)
        return s, [tuple(o)]


@simple("squeeze", params=ParamSpec(axis=Param(optional(parse_shape), None)))
class Squeeze(_View):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        nd = len(d)
        drop = set()
        if a.axis is not None:
            for ax in a.axis:
                if ax is None:
                    raise ShapeError("squeeze: axis entries cannot be None")
                x = ax + nd if ax < 0 else ax
                if not 0 <= x < nd:
                    raise ShapeError(f"squeeze: axis {ax} is out of bounds for array of "
                                     f"dimension {nd}")
                if d[x] != 1:
                    raise ShapeError(f"squeeze: cannot select an axis to squeeze out which has "
                                     f"size={d[x]} not equal to one (axis {ax}, input "
                                     f"{tuple(d)})")
                if x in drop:
                    raise ShapeError(f"squeeze: duplicate value in axis {a.axis}")
                drop.add(x)
        else:
            drop = {i for i in range(nd) if d[i] == 1}
        o = tuple(v for i, v in enumerate(d) if i not in drop)
        if not o:
            o = (1,)  # MXNet keeps at least one dimension
        return s, [o]


@simple("_backward_reshape", differentiable=False)
class BackwardReshape(_View):
    """ograd reshaped to the shape of the forward input (input 1, read for its shape only)."""

    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        og, d = s
        if og is not None and d is not None and _prod(og) != _prod(d):
            raise ShapeError(f"_backward_reshape: gradient {tuple(og)} does not have the size "
                             f"of the input {tuple(d)}")
        return s, [d]

    def infer_type(self, a, t):
        return t, [t[0]]

    def reference(self, a, inputs, is_train=False):
        return [inputs[0].reshape(inputs[1].shape).copy()]


# =============================================================================================
# transpose, SwapAxis
# =============================================================================================
def _transpose_axes(a, nd: int, op: str = "transpose") -> tuple:
    if not len(a.axes):
        return tuple(reversed(range(nd)))
    if len(a.axes) != nd:
        raise ShapeError(f"{op}: axes {a.axes} must have one entry per input dimension ({nd})")
    ax = tuple(_norm_axis(int(x), nd, op, "axes entry") for x in a.axes)
    if sorted(ax) != list(range(nd)):
        raise ShapeError(f"{op}: axes {a.axes} is not a permutation of the {nd} dimensions")
    return ax


def _lower_permute(ctx, axes) -> None:
    o = ctx.outputs[0]
    if o.size == 0:
        return
    src = ctx.inputs[0].transpose(axes)
    if o.ndim == 0:
        return copy_flat(ctx)
    ctx.compute(o, lambda *i: src[i], "transpose")


@simple("transpose", params=ParamSpec(axes=Param(parse_shape, ())))
class Transpose(_ShapeOp):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if len(d) > 6:
            raise ShapeError("transpose: supports at most 6 dimensions")
        ax = _transpose_axes(a, len(d))
        return s, [tuple(d[x] for x in ax)]

    def lower(self, ctx):
        _lower_permute(ctx, _transpose_axes(ctx.attrs, ctx.inputs[0].ndim))

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [np.transpose(x, _transpose_axes(a, x.ndim)).copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        if not len(a.axes):
            return [g("transpose", ograds[0], name=f"{node.name}_backward")]
        nd = len(a.axes)
        ax = [int(x) % nd for x in a.axes]
        inv = [0] * nd
        for i, x in enumerate(ax):
            inv[x] = i
        return [g("transpose", ograds[0], axes=tuple(inv), name=f"{node.name}_backward")]


def _swap_axes(a, nd: int) -> tuple:
    d1 = _norm_axis(a.dim1, nd, "SwapAxis", "dim1")
    d2 = _norm_axis(a.dim2, nd, "SwapAxis", "dim2")
    ax = list(range(nd))
    ax[d1], ax[d2] = ax[d2], ax[d1]
    return tuple(ax)


@simple("SwapAxis", aliases=("swapaxes",),
        params=ParamSpec(dim1=Param(parse_int, 0), dim2=Param(parse_int, 0)))
class SwapAxis(_ShapeOp):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        ax = _swap_axes(a, len(d))
        return s, [tuple(d[x] for x in ax)]

    def lower(self, ctx):
        _lower_permute(ctx, _swap_axes(ctx.attrs, ctx.inputs[0].ndim))

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [np.transpose(x, _swap_axes(a, x.ndim)).copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("SwapAxis", ograds[0], dim1=a.dim1, dim2=a.dim2, name=f"{node.name}_backward")]


# =============================================================================================
# slicing
# =============================================================================================
_SLICE_PARAMS = ParamSpec(begin=Param(parse_shape), end=Param(parse_shape),
                          step=Param(parse_shape, ()))


def slice_ranges(a, dshape, op: str = "slice") -> list:
    """MXNet's GetIndexRange + SetSliceOpOutputDimSize: (begin, step, length) per dim."""
    nd = len(dshape)
    b_, e_, s_ = tuple(a.begin), tuple(a.end), tuple(a.step)
    if nd == 0:
        raise ShapeError(f"{op}: cannot slice a 0-d array")
    if len(b_) > nd or len(e_) > nd:
        raise ShapeError(f"{op}: slicing axis exceeds data dimensions (begin={b_}, end={e_}, "
                         f"data {tuple(dshape)})")
    if len(b_) != len(e_):
        raise ShapeError(f"{op}: begin {b_} and end {e_} must have the same length")
    if len(s_) and len(s_) != len(b_):
        raise ShapeError(f"{op}: step {s_} and begin {b_} must have the same length")
    out = []
    for i in range(nd):
        n = int(dshape[i])
        if i >= len(b_):
            out.append((0, 1, n))
            continue
        s = s_[i] if len(s_) and s_[i] is not None else 1
        if s == 0:
            raise ShapeError(f"{op}: step[{i}] cannot be 0")
        if n == 0:
            out.append((0, s, 0))
            continue
        b = b_[i] if b_[i] is not None else (n - 1 if s < 0 else 0)
        e = e_[i] if e_[i] is not None else (-1 if s < 0 else n)
        if b < 0:
            b += n
            if b < 0:
                raise ShapeError(f"{op}: slicing with begin[{i}]={b - n} exceeds limit of "
                                 f"input dimension[{i}]={n}")
        if b >= n:
            raise ShapeError(f"{op}: slicing with begin[{i}]={b} exceeds limit of input "
                             f"dimension[{i}]={n}")
        if e < 0 and e_[i] is not None:
            e += n
            if e < 0:
                raise ShapeError(f"{op}: slicing with end[{i}]={e - n} exceeds limit of "
                                 f"input dimension[{i}]={n}")
        if e > n:
            raise ShapeError(f"{op}: slicing with end[{i}]={e} exceeds limit of input "
                             f"dimension[{i}]={n}")
        if b == e:
            raise ShapeError(f"{op}: slicing with begin[{i}]=end[{i}]={e} results in an empty "
                             "tensor and is not supported")
        if s > 0:
            if not b < e:
                raise ShapeError(f"{op}: slicing with begin[{i}]={b}, end[{i}]={e}, and "
                                 f"step[{i}]={s} is invalid")
            length = (e - b - 1) // s + 1
        else:
            if not e < b:
                raise ShapeError(f"{op}: slicing with begin[{i}]={b}, end[{i}]={e}, and "
                                 f"step[{i}]={s} is invalid")
            length = (b - e - 1) // (-s) + 1
        out.append((b, s, length))
    return out


def _lower_slice(ctx, ranges) -> None:
    x = ctx.inputs[0]
    o = ctx.outputs[0]
    if o.size == 0:
        return
    # a strided view: element o is x[b + o*s] in every dim (negative strides are fine)
    off = x.offset + sum(b * st for (b, s, n), st in zip(ranges, x.strides))
    src = view(x, [n for b, s, n in ranges], [s * st for (b, s, n), st in
                                              zip(ranges, x.strides)], off)
    ctx.compute(o, lambda *i: src[i], "slice")


def _lower_slice_backward(ctx, ranges) -> None:
    """igrad = zeros with ograd scattered into the sliced positions (one gather kernel)."""
    dy = ctx.inputs[0]
    o = ctx.outputs[0]
    if o.size == 0:
        return

    def f(*i):
        valid = None
        src = []
        for d, ((b, s, n), ix) in enumerate(zip(ranges, i)):
            full = s == 1 and b == 0 and n == o.shape[d]
            if full:
                src.append(ix)
                continue
            if n == 0:
                valid = K.const(False, "bool")
                src.append(_ci(0))
                continue
            rel = (ix - _ci(b)) if s > 0 else (_ci(b) - ix)
            st = abs(s)
            ok = rel.ge(_ci(0))
            relc = K.maximum(rel, _ci(0))
            q = relc // _ci(st) if st != 1 else relc
            if st != 1:
                ok = ok & (relc % _ci(st)).eq(_ci(0))
            ok = ok & q.lt(_ci(n))
            src.append(K.minimum(q, _ci(n - 1)))
            valid = ok if valid is None else (valid & ok)
        v = dy[tuple(src)]
        if valid is None:
            return v
        return K.select(valid, v, C(0, o.dtype))

    if o.ndim == 0:
        return copy_flat(ctx)
    ctx.compute(o, f, "slice_backward")


def _np_slice(x, ranges):
    idx = []
    for b, s, n in ranges:
        if n == 0:
            idx.append(slice(0, 0))
            continue
        last = b + s * (n - 1)
        stop = last + (1 if s > 0 else -1)
        idx.append(slice(b, stop if stop >= 0 else None, s))
    return tuple(idx)


@simple("slice", aliases=("crop",), params=_SLICE_PARAMS)
class Slice(_ShapeOp):
    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [tuple(n for b, st, n in slice_ranges(a, s[0]))]

    def lower(self, ctx):
        _lower_slice(ctx, slice_ranges(ctx.attrs, ctx.inputs[0].shape))

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [x[_np_slice(x, slice_ranges(a, x.shape))].copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_slice", ograds[0], node.inputs[0], begin=a.begin, end=a.end,
                  step=a.step, name=f"{node.name}_backward")]


@simple("_backward_slice", params=_SLICE_PARAMS)
class BackwardSlice(_BackwardLike):
    def lower(self, ctx):
        _lower_slice_backward(ctx, slice_ranges(ctx.attrs, ctx.outputs[0].shape))

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs
        out = np.zeros(x.shape, dy.dtype)
        out[_np_slice(x, slice_ranges(a, x.shape))] = dy
        return [out]


_SLICE_AXIS_PARAMS = ParamSpec(axis=Param(parse_int), begin=Param(parse_int),
                               end=Param(optional(parse_int)))


def slice_axis_ranges(a, dshape, op: str = "slice_axis") -> list:
    nd = len(dshape)
    ax = a.axis + nd if a.axis < 0 else a.axis
    if not 0 <= ax < nd:
        raise ShapeError(f"{op}: axis={a.axis} is out of range for a {nd}-d input")
    n = int(dshape[ax])
    b = a.begin
    if b < 0:
        b += n
    if n > 0:
        e = n if a.end is None else a.end
        if e < 0:
            e += n
        if e > n:
            raise ShapeError(f"{op}: invalid end={a.end} for axis size {n}")
        if not b < e:
            raise ShapeError(f"{op}: invalid begin={a.begin}, end={a.end} for axis size {n}")
    else:
        b = e = 0
    if e < 0 or b < 0:
        raise ShapeError(f"{op}: invalid begin={a.begin}, end={a.end} for axis size {n}")
    return [(b, 1, e - b) if i == ax else (0, 1, int(d)) for i, d in enumerate(dshape)]


@simple("slice_axis", params=_SLICE_AXIS_PARAMS)
class SliceAxis(_ShapeOp):
    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [tuple(n for b, st, n in slice_axis_ranges(a, s[0]))]

    def lower(self, ctx):
        _lower_slice(ctx, slice_axis_ranges(ctx.attrs, ctx.inputs[0].shape))

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [x[_np_slice(x, slice_axis_ranges(a, x.shape))].copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_slice_axis", ograds[0], node.inputs[0], axis=a.axis,
                  begin=a.begin, end=a.end, name=f"{node.name}_backward")]


@simple("_backward_slice_axis", params=_SLICE_AXIS_PARAMS)
class BackwardSliceAxis(_BackwardLike):
    def lower(self, ctx):
        _lower_slice_backward(ctx, slice_axis_ranges(ctx.attrs, ctx.outputs[0].shape))

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs
        out = np.zeros(x.shape, dy.dtype)
        out[_np_slice(x, slice_axis_ranges(a, x.shape))] = dy
        return [out]


def slice_like_shape(a, ishape, fshape, op: str = "slice_like") -> tuple:
    nd = len(ishape)
    o = list(ishape)
    if not len(a.axes):
        if len(fshape) != nd:
            raise ShapeError(f"{op}: by default slice_like slices all axes, but ndim mismatch "
                             f"for inputs: {nd} vs. {len(fshape)}")
        axes = range(nd)
    else:
        axes = []
        for ax in a.axes:
            x = ax + nd if ax < 0 else ax
            if x < 0:
                raise ShapeError(f"{op}: slice axis {ax} too small")
            if x >= nd:
                raise ShapeError(f"{op}: slice axis {ax} exceeds first input: {nd}")
            if x >= len(fshape):
                raise ShapeError(f"{op}: slice axis {ax} exceeds second input: {len(fshape)}")
            axes.append(x)
    for x in axes:
        if fshape[x] > ishape[x]:
            raise ShapeError(f"{op}: slice axis {x} with size {fshape[x]} exceeds limit of "
                             f"input with size {ishape[x]}")
        o[x] = fshape[x]
    return tuple(o)


@simple("slice_like", params=ParamSpec(axes=Param(parse_shape, ())))
class SliceLike(_ShapeOp):
    def arguments(self, a):
        return ["data", "shape_like"]

    def infer_shape(self, a, s):
        if s[0] is None or s[1] is None:
            return s, [None]
        return s, [slice_like_shape(a, s[0], s[1])]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        o = ctx.outputs[0]
        _lower_slice(ctx, [(0, 1, n) for n in o.shape])

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        o = slice_like_shape(a, x.shape, inputs[1].shape)
        return [x[tuple(slice(0, n) for n in o)].copy()]

    def gradient(self, node, ograds):
        return [g("_backward_slice_like", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward"),
                g("zeros_like", node.inputs[1], name=f"{node.name}_backward_shape_like")]


@simple("_backward_slice_like")
class BackwardSliceLike(_BackwardLike):
    def lower(self, ctx):
        _lower_slice_backward(ctx, [(0, 1, n) for n in ctx.inputs[0].shape])

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs
        out = np.zeros(x.shape, dy.dtype)
        out[tuple(slice(0, n) for n in dy.shape)] = dy
        return [out]


# =============================================================================================
# SliceChannel / Concat / stack
# =============================================================================================
_SPLIT_PARAMS = ParamSpec(num_outputs=Param(parse_int), axis=Param(parse_int, 1),
                          squeeze_axis=Param(parse_bool, False))


def _split_shapes(a, d, op: str = "SliceChannel"):
    nd = len(d)
    if a.num_outputs < 1:
        raise ShapeError(f"{op}: num_outputs must be positive, got {a.num_outputs}")
    ax = _norm_axis(a.axis, nd, op)
    n = d[ax]
    if n % a.num_outputs:
        raise ShapeError(f"{op}: you are trying to split the {ax}-th axis of input tensor "
                         f"with shape {tuple(d)} into num_outputs={a.num_outputs} evenly "
                         f"sized chunks, but this is not possible because {a.num_outputs} "
                         f"does not evenly divide {n}")
    if a.squeeze_axis and n != 0 and n != a.num_outputs:
        raise ShapeError(f"{op}: if squeeze_axis is True, the size of the sliced axis must be "
                         f"the same as num_outputs. Input shape={tuple(d)}, axis={ax}, "
                         f"num_outputs={a.num_outputs}")
    chunk = n // a.num_outputs
    o = list(d)
    o[ax] = chunk
    if a.squeeze_axis:
        o.pop(ax)
    return ax, chunk, tuple(o)


@simple("SliceChannel", aliases=("split",), params=_SPLIT_PARAMS)
class SliceChannel(_ShapeOp):
    def outputs(self, a):
        return [f"output{i}" for i in range(a.num_outputs)]

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None] * a.num_outputs
        _, _, o = _split_shapes(a, s[0])
        return s, [o] * a.num_outputs

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        ax, chunk, _ = _split_shapes(a, x.shape)
        for i, o in enumerate(ctx.outputs):
            if o is None:
                continue
            src = select_axis(x, ax, i) if a.squeeze_axis else narrow(x, ax, i * chunk, chunk)
            copy_view(ctx, o, src, "split")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        ax, chunk, _ = _split_shapes(a, x.shape)
        outs = []
        for i in range(a.num_outputs):
            p = np.take(x, np.arange(i * chunk, (i + 1) * chunk), axis=ax)
            outs.append(np.squeeze(p, axis=ax) if a.squeeze_axis else p)
        return outs

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_SliceChannel", *ograds, num_outputs=a.num_outputs, axis=a.axis,
                  squeeze_axis=a.squeeze_axis, name=f"{node.name}_backward")]


@simple("_backward_SliceChannel", params=_SPLIT_PARAMS, differentiable=False)
class BackwardSliceChannel(_ShapeOp):
    """The input gradient of SliceChannel: the output gradients concatenated."""

    def arguments(self, a):
        return [f"ograd{i}" for i in range(a.num_outputs)]

    def infer_shape(self, a, s):
        k = next((x for x in s if x is not None), None)
        if k is None:
            return s, [None]
        o = list(k)
        if a.squeeze_axis:
            ax = _norm_axis(a.axis, len(k) + 1, "_backward_SliceChannel")
            o.insert(ax, a.num_outputs)
        else:
            ax = _norm_axis(a.axis, len(k), "_backward_SliceChannel")
            o[ax] = k[ax] * a.num_outputs
        return [k] * len(s), [tuple(o)]

    def lower(self, ctx):
        a = ctx.attrs
        out = ctx.outputs[0]
        ax = _norm_axis(a.axis, out.ndim, "_backward_SliceChannel")
        chunk = out.shape[ax] // a.num_outputs
        for i, dy in enumerate(ctx.inputs):
            dst = select_axis(out, ax, i) if a.squeeze_axis else narrow(out, ax, i * chunk,
                                                                        chunk)
            copy_view(ctx, dst, dy, "split_backward")

    def reference(self, a, inputs, is_train=False):
        if a.squeeze_axis:
            ax = _norm_axis(a.axis, inputs[0].ndim + 1, "_backward_SliceChannel")
            return [np.stack(inputs, axis=ax)]
        ax = _norm_axis(a.axis, inputs[0].ndim, "_backward_SliceChannel")
        return [np.concatenate(inputs, axis=ax)]


def _concat_shape(a, shapes, op: str = "Concat"):
    known = [x for x in shapes if x is not None]
    if not known:
        return None, None
    nd = len(known[0])
    ax = _norm_axis(a.dim, nd, op, "dim")
    for x in known:
        if len(x) != nd:
            raise ShapeError(f"{op}: all inputs must have the same number of dimensions, got "
                             f"{[tuple(s) if s is not None else None for s in shapes]}")
        for i in range(nd):
            if i != ax and x[i] != known[0][i]:
                raise ShapeError(f"{op}: inputs must have the same shape except on dim {ax}, "
                                 f"got {[tuple(s) if s is not None else None for s in shapes]}")
    if len(known) != len(shapes):
        return ax, None
    o = list(known[0])
    o[ax] = sum(x[ax] for x in shapes)
    return ax, tuple(o)


@simple("Concat", aliases=("concat",),
        params=ParamSpec(num_args=Param(parse_int), dim=Param(parse_int, 1)))
class Concat(_ShapeOp):
    def arguments(self, a):
        return [f"arg{i}" for i in range(a.num_args)]

    def num_inputs(self, a):
        return a.num_args

    def infer_shape(self, a, s):
        if a.num_args < 1:
            raise ShapeError(f"Concat: num_args must be at least 1, got {a.num_args}")
        _, o = _concat_shape(a, s)
        return s, [o]

    def infer_type(self, a, t):
        t0 = next((x for x in t if x is not None), None)
        for x in t:
            if x is not None and x != t0:
                raise OpError(f"Concat: inputs must have the same dtype, got {t}")
        return [t0] * len(t), [t0]

    def lower(self, ctx):
        out = ctx.outputs[0]
        ax = _norm_axis(ctx.attrs.dim, out.ndim, "Concat", "dim")
        start = 0
        for x in ctx.inputs:
            n = x.shape[ax]
            copy_view(ctx, narrow(out, ax, start, n), x, "concat")
            start += n

    def reference(self, a, inputs, is_train=False):
        ax = _norm_axis(a.dim, inputs[0].ndim, "Concat", "dim")
        return [np.concatenate(inputs, axis=ax)]

    def gradient(self, node, ograds):
        a = node.parsed
        outs = outputs_of("_backward_Concat", ograds[0], *node.inputs, n=a.num_args,
                          num_args=a.num_args, dim=a.dim, name=f"{node.name}_backward")
        return outs


@simple("_backward_Concat", params=ParamSpec(num_args=Param(parse_int), dim=Param(parse_int, 1)),
        differentiable=False)
class BackwardConcat(_ShapeOp):
    """Slices of the output gradient, one per Concat input (inputs 1.. give the shapes)."""

    def arguments(self, a):
        return ["ograd"] + [f"arg{i}" for i in range(a.num_args)]

    def outputs(self, a):
        return [f"output{i}" for i in range(a.num_args)]

    def infer_shape(self, a, s):
        return s, list(s[1:])

    def infer_type(self, a, t):
        return t, [t[0]] * a.num_args

    def lower(self, ctx):
        dy = ctx.inputs[0]
        ax = _norm_axis(ctx.attrs.dim, dy.ndim, "Concat", "dim")
        start = 0
        for o in ctx.outputs:
            if o is None:
                continue
            n = o.shape[ax]
            copy_view(ctx, o, narrow(dy, ax, start, n), "concat_backward")
            start += n

    def reference(self, a, inputs, is_train=False):
        dy = inputs[0]
        ax = _norm_axis(a.dim, dy.ndim, "Concat", "dim")
        cuts = np.cumsum([x.shape[ax] for x in inputs[1:]])[:-1]
        return [p.copy() for p in np.split(dy, cuts, axis=ax)]


_STACK_PARAMS = ParamSpec(axis=Param(parse_int, 0), num_args=Param(parse_int))


@simple("stack", params=_STACK_PARAMS)
class Stack(_ShapeOp):
    def arguments(self, a):
        return [f"arg{i}" for i in range(a.num_args)]

    def num_inputs(self, a):
        return a.num_args

    def infer_shape(self, a, s):
        if a.num_args < 1:
            raise ShapeError(f"stack: num_args must be at least 1, got {a.num_args}")
        known = [x for x in s if x is not None]
        if not known:
            return s, [None]
        for x in known:
            if tuple(x) != tuple(known[0]):
                raise ShapeError(f"stack: all inputs must have the same shape, got "
                                 f"{[tuple(v) if v is not None else None for v in s]}")
        d = tuple(known[0])
        ax = _norm_axis(a.axis, len(d), "stack", extra=1)
        o = list(d)
        o.insert(ax, a.num_args)
        return [d] * len(s), [tuple(o)]

    def infer_type(self, a, t):
        return Concat.infer_type(self, a, t)

    def lower(self, ctx):
        out = ctx.outputs[0]
        ax = _norm_axis(ctx.attrs.axis, out.ndim - 1, "stack", extra=1)
        for i, x in enumerate(ctx.inputs):
            copy_view(ctx, select_axis(out, ax, i), x, "stack")

    def reference(self, a, inputs, is_train=False):
        ax = _norm_axis(a.axis, inputs[0].ndim, "stack", extra=1)
        return [np.stack(inputs, axis=ax)]

    def gradient(self, node, ograds):
        a = node.parsed
        return outputs_of("_backward_stack", ograds[0], n=a.num_args, axis=a.axis,
                          num_args=a.num_args, name=f"{node.name}_backward")


@simple("_backward_stack", params=_STACK_PARAMS, differentiable=False)
class BackwardStack(_ShapeOp):
    def arguments(self, a):
        return ["ograd"]

    def outputs(self, a):
        return [f"output{i}" for i in range(a.num_args)]

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None] * a.num_args
        d = list(s[0])
        ax = _norm_axis(a.axis, len(d) - 1, "stack", extra=1)
        d.pop(ax)
        return s, [tuple(d)] * a.num_args

    def lower(self, ctx):
        dy = ctx.inputs[0]
        ax = _norm_axis(ctx.attrs.axis, dy.ndim - 1, "stack", extra=1)
        for i, o in enumerate(ctx.outputs):
            if o is not None:
                copy_view(ctx, o, select_axis(dy, ax, i), "stack_backward")

    def reference(self, a, inputs, is_train=False):
        dy = inputs[0]
        ax = _norm_axis(a.axis, dy.ndim - 1, "stack", extra=1)
        return [np.take(dy, i, axis=ax).copy() for i in range(a.num_args)]


# =============================================================================================
# tile, repeat, broadcast_to / broadcast_axis / broadcast_like
# =============================================================================================
def _tile_shapes(a, d):
    reps = tuple(a.reps)
    if any(r is None for r in reps):
        raise ShapeError("tile: reps entries cannot be None")
    if not reps:
        return tuple(d), tuple(d), (1,) * len(d)
    for r in reps:
        if r <= 0:
            raise ShapeError(f"tile: invalid reps={reps}, dim size must be greater than zero")
    n = max(len(d), len(reps))
    ishape = (1,) * (n - len(d)) + tuple(d)
    rp = (1,) * (n - len(reps)) + reps
    return ishape, tuple(x * r for x, r in zip(ishape, rp)), rp


@simple("tile", params=ParamSpec(reps=Param(parse_shape)))
class Tile(_ShapeOp):
    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [_tile_shapes(a, s[0])[1]]

    def lower(self, ctx):
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        ishape, _oshape, _ = _tile_shapes(ctx.attrs, x.shape)
        xv = x.reshape(ishape) if x.size else x
        if o.ndim == 0:
            return copy_flat(ctx)
        ctx.compute(o, lambda *i: xv[tuple(ix % _ci(d) if d > 1 else _ci(0)
                                           for ix, d in zip(i, ishape))], "tile")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if not len(a.reps):
            return [x.copy()]
        return [np.tile(x, tuple(a.reps))]

    def gradient(self, node, ograds):
        return [g("_backward_tile", ograds[0], node.inputs[0], reps=node.parsed.reps,
                  name=f"{node.name}_backward")]


@simple("_backward_tile", params=ParamSpec(reps=Param(parse_shape)))
class BackwardTile(_BackwardLike):
    def lower(self, ctx):
        dy = ctx.inputs[0]
        out = ctx.outputs[0]
        ishape, oshape, rp = _tile_shapes(ctx.attrs, out.shape)
        n = len(ishape)
        dv = dy.reshape(oshape)
        ov = out.reshape(ishape) if out.size else out

        def src(o, r):
            # ograd viewed as (rep_0, in_0, rep_1, in_1, ...): index r_d * in_d + o_d
            return dv[tuple(r[d] * _ci(ishape[d]) + o[d] for d in range(n))]

        kahan_sum(ctx, ov, src, rp, "tile_backward")

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs
        ishape, _oshape, rp = _tile_shapes(a, x.shape)
        inter = []
        for r, d in zip(rp, ishape):
            inter += [r, d]
        s = dy.astype(np.float64).reshape(inter).sum(axis=tuple(range(0, 2 * len(rp), 2)))
        return [s.reshape(x.shape).astype(dy.dtype)]


def _repeat_info(a, d, op: str = "repeat"):
    if a.repeats < 0:
        raise ShapeError(f"{op}: repeats cannot be a negative number ({a.repeats})")
    if a.axis is None:
        return None, (_prod(d) * a.repeats,)
    nd = len(d)
    ax = a.axis + nd if a.axis < 0 else a.axis
    if not 0 <= ax < nd:
        raise ShapeError(f"{op}: axis = {a.axis} out of bounds for a {nd}-d input")
    if a.repeats == 0:
        return ax, (0,)
    o = list(d)
    o[ax] *= a.repeats
    return ax, tuple(o)


_REPEAT_PARAMS = ParamSpec(repeats=Param(parse_int), axis=Param(optional(parse_int), None))


@simple("repeat", params=_REPEAT_PARAMS)
class Repeat(_ShapeOp):
    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [_repeat_info(a, s[0])[1]]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        ax, _ = _repeat_info(a, x.shape)
        r = _ci(a.repeats)
        if ax is None:
            xf = flat(x)
            ctx.compute(o, lambda i: xf[i // r], "repeat")
            return
        ctx.compute(o, lambda *i: x[tuple(ix // r if d == ax else ix for d, ix in
                                          enumerate(i))], "repeat")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if a.repeats == 0:
            return [np.zeros((0,), x.dtype)]
        return [np.repeat(x, a.repeats, axis=a.axis)]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_repeat", ograds[0], node.inputs[0], repeats=a.repeats, axis=a.axis,
                  name=f"{node.name}_backward")]


@simple("_backward_repeat", params=_REPEAT_PARAMS)
class BackwardRepeat(_BackwardLike):
    def lower(self, ctx):
        a = ctx.attrs
        dy = ctx.inputs[0]
        out = ctx.outputs[0]
        ax, _ = _repeat_info(a, out.shape)
        rep = a.repeats
        if ax is None:
            of = flat(out)
            dv = K.TensorRef(dy.buf, (of.size, rep), None, dy.offset)
            kahan_sum(ctx, of, lambda o, r: dv[o[0], r[0]], [rep], "repeat_backward")
            return
        shp = list(out.shape)
        inter = shp[:ax + 1] + [rep] + shp[ax + 1:]
        dv = K.TensorRef(dy.buf, tuple(inter), None, dy.offset) if rep else dy
        kahan_sum(ctx, out, lambda o, r: dv[tuple(o[:ax + 1] + [r[0]] + o[ax + 1:])], [rep],
                  "repeat_backward")

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs
        ax, _ = _repeat_info(a, x.shape)
        if a.repeats == 0:
            return [np.zeros(x.shape, dy.dtype)]
        if ax is None:
            return [dy.astype(np.float64).reshape(-1, a.repeats).sum(1).reshape(x.shape)
                    .astype(dy.dtype)]
        shp = list(x.shape)
        inter = shp[:ax + 1] + [a.repeats] + shp[ax + 1:]
        return [dy.astype(np.float64).reshape(inter).sum(ax + 1).astype(dy.dtype)]


def _broadcast_check(ishape, oshape, op):
    if len(ishape) != len(oshape):
        raise ShapeError(f"{op}: cannot broadcast {tuple(ishape)} to {tuple(oshape)} "
                         "(different number of dimensions)")
    for i, o in zip(ishape, oshape):
        if i != o and i != 1:
            raise ShapeError(f"{op}: array cannot be broadcasted from {tuple(ishape)} to "
                             f"{tuple(oshape)}")


def _lower_broadcast(ctx) -> None:
    o = ctx.outputs[0]
    if o.size == 0:
        return
    x = ctx.inputs[0]
    if o.ndim == 0:
        return copy_flat(ctx)
    src = broadcast_view(x, o.shape)
    ctx.compute(o, lambda *i: src[i], "broadcast")


class _Broadcast(_ShapeOp):
    fusion = "broadcast"

    def lower(self, ctx):
        _lower_broadcast(ctx)

    def reference(self, a, inputs, is_train=False):
        _, (o,) = self.infer_shape(a, [tuple(x.shape) for x in inputs])
        return [np.broadcast_to(inputs[0], o).copy()]

    def gradient(self, node, ograds):
        gx = g("_backward_broadcast_to", ograds[0], node.inputs[0],
               name=f"{node.name}_backward")
        return [gx] + [g("zeros_like", e) for e in node.inputs[1:]]


@simple("broadcast_to", params=ParamSpec(shape=Param(parse_shape, ())))
class BroadcastTo(_Broadcast):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if len(a.shape) != len(d):
            raise ShapeError(f"broadcast_to: shape {a.shape} must have the same number of "
                             f"dimensions as the input {tuple(d)}")
        o = tuple(i if t == 0 or t is None else t for i, t in zip(d, a.shape))
        _broadcast_check(d, o, "broadcast_to")
        return s, [o]


@simple("broadcast_axis", aliases=("broadcast_axes",),
        params=ParamSpec(axis=Param(parse_shape, ()), size=Param(parse_shape, ())))
class BroadcastAxis(_Broadcast):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if len(a.axis) != len(a.size):
            raise ShapeError(f"broadcast_axis: axis {a.axis} and size {a.size} must have the "
                             "same length")
        o = list(d)
        for ax, sz in zip(a.axis, a.size):
            x = _norm_axis(ax, len(d), "broadcast_axis")
            if d[x] != 1:
                raise ShapeError(f"broadcast_axis: size of the broadcasting axis {ax} in the "
                                 f"source must be 1, input is {tuple(d)}")
            if sz is None or sz < 0:
                raise ShapeError(f"broadcast_axis: invalid size {sz}")
            o[x] = sz
        return s, [tuple(o)]


@simple("broadcast_like",
        params=ParamSpec(lhs_axes=Param(optional(parse_shape), None),
                         rhs_axes=Param(optional(parse_shape), None)))
class BroadcastLike(_Broadcast):
    def arguments(self, a):
        return ["lhs", "rhs"]

    def infer_shape(self, a, s):
        lhs, rhs = s
        if lhs is None or rhs is None:
            return s, [None]
        if a.lhs_axes is None and a.rhs_axes is None:
            if len(lhs) != len(rhs):
                raise ShapeError(f"broadcast_like: operands {tuple(lhs)} and {tuple(rhs)} must "
                                 "have the same number of dimensions")
            o = tuple(rhs)
        else:
            la, ra = a.lhs_axes or (), a.rhs_axes or ()
            if len(la) != len(ra):
                raise ShapeError(f"broadcast_like: lhs_axes {la} and rhs_axes {ra} must have "
                                 "the same length")
            o = list(lhs)
            for x, y in zip(la, ra):
                xi = _norm_axis(x, len(lhs), "broadcast_like", "lhs_axes entry")
                yi = _norm_axis(y, len(rhs), "broadcast_like", "rhs_axes entry")
                o[xi] = rhs[yi]
            o = tuple(o)
        _broadcast_check(lhs, o, "broadcast_like")
        return s, [o]

    def infer_type(self, a, t):
        return t, [t[0]]


@simple("_backward_broadcast_to")
class BackwardBroadcast(_BackwardLike):
    """Sum of the output gradient over the broadcast axes (MXNet's Kahan-compensated sum)."""

    fusion = "reduction"

    def lower(self, ctx):
        dy = ctx.inputs[0]
        out = ctx.outputs[0]
        red = [ax for ax in range(out.ndim) if out.shape[ax] == 1 and dy.shape[ax] != 1]
        ext = [dy.shape[ax] for ax in red]

        def src(o, r):
            idx = list(o)
            for ax, rv in zip(red, r):
                idx[ax] = rv
            return dy[tuple(idx)]

        kahan_sum(ctx, out, src, ext, "broadcast_backward")

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs
        red = tuple(ax for ax in range(x.ndim) if x.shape[ax] == 1 and dy.shape[ax] != 1)
        return [dy.astype(np.float64).sum(axis=red, keepdims=True).astype(dy.dtype)
                .reshape(x.shape)]


# =============================================================================================
# reverse
# =============================================================================================
def _reverse_axes(a, nd: int) -> list:
    par: dict = {}
    for ax in a.axis:
        x = _norm_axis(int(ax), nd, "reverse")
        par[x] = par.get(x, 0) ^ 1
    return sorted(x for x, p in par.items() if p)


class _ReverseBase(_ShapeOp):
    params = ParamSpec(axis=Param(parse_shape))

    def lower(self, ctx):
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        axes = _reverse_axes(ctx.attrs, x.ndim)
        off = x.offset + sum((x.shape[ax] - 1) * x.strides[ax] for ax in axes)
        st = [-s if i in axes else s for i, s in enumerate(x.strides)]
        src = view(x, x.shape, st, off)
        if o.ndim == 0:
            return copy_flat(ctx)
        ctx.compute(o, lambda *i: src[i], "reverse")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        axes = _reverse_axes(a, x.ndim)
        return [np.flip(x, axis=tuple(axes)).copy() if axes else x.copy()]

    def gradient(self, node, ograds):
        return [g("reverse", ograds[0], axis=node.parsed.axis, name=f"{node.name}_backward")]


@simple("reverse", aliases=("flip",))
class Reverse(_ReverseBase):
    pass


@simple("_backward_reverse", differentiable=False)
class BackwardReverse(_ReverseBase):
    pass


# =============================================================================================
# Pad
# =============================================================================================
_PAD_PARAMS = ParamSpec(mode=Param(enum("constant", "edge", "reflect")),
                        pad_width=Param(parse_shape),
                        constant_value=Param(parse_float, 0.0))


def _pad_check(a, d, op: str = "Pad"):
    pw = tuple(a.pad_width)
    nd = len(d)
    if any(p is None or p < 0 for p in pw):
        raise ShapeError(f"{op}: pad_width {pw} must be non-negative integers")
    if len(pw) != 2 * nd:
        raise ShapeError(f"{op}: input shape {tuple(d)} vs padding spec {pw} mismatch: "
                         f"pad_width must have 2*ndim = {2 * nd} entries")
    if nd not in (4, 5) or any(pw[:4]):
        raise ShapeError(f"{op}: current implementation only supports 4D and 5D input arrays "
                         f"with padding applied only on axes 2, 3 (and 4); got input "
                         f"{tuple(d)} with pad_width {pw}")
    if a.mode == "reflect":
        for i in range(2, nd):
            if pw[2 * i] >= d[i] or pw[2 * i + 1] >= d[i]:
                raise ShapeError(f"{op}: reflection padding only supports padding sizes "
                                 f"smaller than the input size; got pad_width {pw} for input "
                                 f"{tuple(d)}")
    if a.mode == "edge":
        for i in range(2, nd):
            if d[i] == 0 and (pw[2 * i] or pw[2 * i + 1]):
                raise ShapeError(f"{op}: edge padding of an empty dimension ({tuple(d)})")
    return pw


def _pad_src_index(mode, j, n, before):
    """Input index of output index ``j`` along a padded dim (MXNet's pad.cc mapping)."""
    if mode == "edge":
        return K.minimum(K.maximum(j - _ci(before), _ci(0)), _ci(n - 1))
    # reflect: j < before -> before - j; j >= n + before -> 2n + before - 2 - j
    rel = j - _ci(before)
    left = _ci(before) - j
    right = _ci(2 * n + before - 2) - j
    r = K.select(j.lt(_ci(before)), left, K.select(rel.ge(_ci(n)), right, rel))
    return K.minimum(K.maximum(r, _ci(0)), _ci(n - 1))


@simple("Pad", aliases=("pad",), params=_PAD_PARAMS)
class Pad(_ShapeOp):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        pw = _pad_check(a, d)
        return s, [tuple(x + pw[2 * i] + pw[2 * i + 1] for i, x in enumerate(d))]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        pw = _pad_check(a, x.shape)
        nd = x.ndim
        if a.mode == "constant":
            cv = C(a.constant_value, o.dtype)

            def f(*i):
                inside = None
                src = []
                for d in range(nd):
                    b, n = pw[2 * d], x.shape[d]
                    if pw[2 * d] == 0 and pw[2 * d + 1] == 0:
                        src.append(i[d])
                        continue
                    rel = i[d] - _ci(b)
                    ok = rel.ge(_ci(0)) & rel.lt(_ci(n))
                    inside = ok if inside is None else inside & ok
                    src.append(K.minimum(K.maximum(rel, _ci(0)), _ci(max(n - 1, 0))))
                if x.size == 0:
                    return cv
                v = x[tuple(src)]
                return v if inside is None else K.select(inside, v, cv)

            ctx.compute(o, f, "pad_constant")
            return
        ctx.compute(o, lambda *i: x[tuple(
            _pad_src_index(a.mode, i[d], x.shape[d], pw[2 * d])
            if (pw[2 * d] or pw[2 * d + 1]) else i[d] for d in range(nd))], "pad_" + a.mode)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        pw = _pad_check(a, x.shape)
        w = [(pw[2 * i], pw[2 * i + 1]) for i in range(x.ndim)]
        if a.mode == "constant":
            return [np.pad(x, w, mode="constant",
                           constant_values=np.asarray(a.constant_value).astype(x.dtype))]
        return [np.pad(x, w, mode=a.mode)]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_Pad", ograds[0], mode=a.mode, pad_width=a.pad_width,
                  constant_value=a.constant_value, name=f"{node.name}_backward")]


def _pad_sources(mode, n, before, after):
    """Per input index i of a padded dim: the output indices that map to it, in ascending
    order, as (extent, fn(i, r) -> (j, valid)). MXNet accumulates them in output order."""
    O = n + before + after
    if mode == "constant" or (before == 0 and after == 0):
        return 1, lambda i, r: (i + _ci(before), None)
    if mode == "edge":
        ext = O if n == 1 else max(before, after) + 1

        def f(i, r):
            lo = K.select(i.eq(_ci(0)), _ci(0), i + _ci(before))
            hi = K.select(i.eq(_ci(n - 1)), _ci(O - 1), i + _ci(before))
            j = lo + r
            return K.minimum(j, _ci(O - 1)), j.le(hi)
        return ext, f

    # reflect: left mirror (before - i, for 1 <= i <= before), centre, right mirror
    def f(i, r):
        jl = _ci(before) - i
        jc = i + _ci(before)
        jr = _ci(2 * n + before - 2) - i
        j = K.select(r.eq(_ci(0)), jl, K.select(r.eq(_ci(1)), jc, jr))
        okl = i.ge(_ci(1)) & i.le(_ci(before))
        okr = jr.ge(_ci(n + before)) & jr.le(_ci(O - 1))
        ok = K.select(r.eq(_ci(0)), okl, K.select(r.eq(_ci(1)), K.const(True, "bool"), okr))
        return K.minimum(K.maximum(j, _ci(0)), _ci(O - 1)), ok
    return 3, f


@simple("_backward_Pad", params=_PAD_PARAMS, differentiable=False)
class BackwardPad(_ShapeOp):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        pw = tuple(a.pad_width)
        if len(pw) != 2 * len(d):
            raise ShapeError(f"_backward_Pad: pad_width {pw} does not match {tuple(d)}")
        return s, [tuple(x - pw[2 * i] - pw[2 * i + 1] for i, x in enumerate(d))]

    def lower(self, ctx):
        a = ctx.attrs
        dy = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        pw = tuple(a.pad_width)
        nd = o.ndim
        srcs = [_pad_sources(a.mode, o.shape[d], pw[2 * d], pw[2 * d + 1]) for d in range(nd)]
        exts = [e for e, _ in srcs]
        total = _prod(exts)

        def term(i, r):
            idx, ok = [], None
            for d in range(nd):
                j, v = srcs[d][1](i[d], r[d])
                idx.append(j)
                if v is not None:
                    ok = v if ok is None else ok & v
            val = dy[tuple(idx)]
            return val if ok is None else K.select(ok, val, C(0, dy.dtype))

        if total == 1:
            ctx.compute(o, lambda *i: term(i, [_ci(0)] * nd), "pad_backward")
            return
        adt = acc_dtype(o.dtype)
        if total <= 64:
            # unrolled in MXNet's accumulation order (output positions row-major)
            combos = list(np.ndindex(*exts))
            ctx.compute(o, lambda *i: ordered_sum([K.cast(adt, term(i, [_ci(c) for c in cb]))
                                                   for cb in combos]), "pad_backward")
            return
        raxes = [K.reduce_axis(e) for e in exts]
        ctx.compute(o, lambda *i: K.reduce("sum", K.cast(adt, term(i, [r.var for r in
                                                                         raxes])),
                                           raxes), "pad_backward")

    def reference(self, a, inputs, is_train=False):
        dy = inputs[0]
        pw = tuple(a.pad_width)
        nd = dy.ndim
        ishape = tuple(x - pw[2 * i] - pw[2 * i + 1] for i, x in enumerate(dy.shape))
        out = np.zeros(ishape, np.float64)
        maps = []
        for d in range(nd):
            n, b = ishape[d], pw[2 * d]
            js = np.arange(dy.shape[d])
            if a.mode == "constant":
                m = js - b
            elif a.mode == "edge":
                m = np.clip(js - b, 0, n - 1)
            else:
                m = np.where(js < b, b - js, np.where(js - b >= n, 2 * n + b - 2 - js, js - b))
            maps.append(m)
        for jidx in np.ndindex(*dy.shape):
            src = tuple(maps[d][jidx[d]] for d in range(nd))
            if all(0 <= s < ishape[d] for d, s in enumerate(src)):
                out[src] += dy[jidx]
        return [out.astype(dy.dtype)]


# =============================================================================================
# UpSampling
# =============================================================================================
_UP_PARAMS = ParamSpec(scale=Param(parse_shape), num_filter=Param(parse_int, 0),
                       sample_type=Param(enum("nearest", "bilinear")),
                       multi_input_mode=Param(enum("concat", "sum"), "concat"),
                       num_args=Param(parse_int), workspace=Param(parse_int, 512))


def _up_scale(a) -> tuple:
    sc = tuple(a.scale)
    if len(sc) == 1:
        r = (sc[0], sc[0])
    elif len(sc) == 2:
        r = sc
    elif len(sc) == 4:
        r = sc[2:]
    else:
        raise ShapeError(f"UpSampling: scale {sc} must have 1, 2 or 4 entries")
    if any(x is None or x < 1 for x in r):
        raise ShapeError(f"UpSampling: scale must be >= 1, got {sc}")
    return r


def _bilinear_geom(s: int):
    k = int(2 * s - s % 2)
    p = math.ceil((s - 1) / 2.0)
    return k, p


def _up_shapes(a, s):
    sh, sw = _up_scale(a)
    d0 = s[0]
    if a.sample_type == "nearest":
        if len(s) != a.num_args:
            raise ShapeError(f"UpSampling: expected {a.num_args} inputs, got {len(s)}")
        if any(x is None for x in s):
            return None
        c = 0
        oh, ow = d0[2] * sh, d0[3] * sw
        for x in s:
            if len(x) != 4:
                raise ShapeError("UpSampling: input data should be 4D in (batch, channel, y, x)"
                                 f", got {tuple(x)}")
            if x[2] == 0 or x[3] == 0 or oh % x[2] or ow % x[3]:
                raise ShapeError(f"UpSampling: input size {tuple(x[2:])} does not divide the "
                                 f"output size {(oh, ow)}")
            if x[0] != d0[0]:
                raise ShapeError(f"UpSampling: inputs have different batch sizes: "
                                 f"{[tuple(v) for v in s]}")
            if a.multi_input_mode == "sum" and a.num_args > 1:
                if c and c != x[1]:
                    raise ShapeError("UpSampling: number of channels must be the same when "
                                     "multi_input_mode==sum")
                c = x[1]
            else:
                c += x[1]
        return (d0[0], c, oh, ow)
    if sh != sw:
        raise ShapeError("UpSampling: scale should be the same along all dimensions for "
                         "bilinear upsampling")
    if d0 is None:
        return None
    if len(d0) != 4:
        raise ShapeError(f"UpSampling: input data should be 4D in (batch, channel, y, x), got "
                         f"{tuple(d0)}")
    return (d0[0], d0[1], d0[2] * sh, d0[3] * sw)


@simple("UpSampling", params=_UP_PARAMS)
class UpSampling(_ShapeOp):
    fusion = "injective"

    def arguments(self, a):
        if a.sample_type == "nearest":
            return [f"arg{i}" for i in range(a.num_args)]
        return ["data", "weight"]

    def infer_shape(self, a, s):
        if a.num_args < 1:
            raise ShapeError(f"UpSampling: num_args must be >= 1, got {a.num_args}")
        if a.sample_type == "bilinear":
            d = s[0]
            if d is None:
                return s, [None]
            o = _up_shapes(a, s)
            k, _ = _bilinear_geom(_up_scale(a)[0])
            w = (d[1], 1, k, k)
            if s[1] is not None and tuple(s[1]) != w:
                raise ShapeError(f"UpSampling: bilinear weight must have shape {w}, got "
                                 f"{tuple(s[1])}")
            if a.num_filter and a.num_filter != d[1]:
                raise ShapeError(f"UpSampling: num_filter ({a.num_filter}) must equal the "
                                 f"number of channels ({d[1]}) for bilinear upsampling")
            return [d, w], [o]
        return s, [_up_shapes(a, s)]

    def lower(self, ctx):
        a = ctx.attrs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        if a.sample_type == "bilinear":
            return _lower_bilinear(ctx)
        oh, ow = o.shape[2], o.shape[3]
        xs = ctx.inputs
        if len(xs) == 1:
            sh, sw = _up_scale(a)
            x = xs[0]
            ctx.compute(o, lambda n, c, y, z: x[n, c, y // _ci(sh), z // _ci(sw)],
                        "upsampling_nearest")
            return
        if a.multi_input_mode == "sum":
            def f(n, c, y, z):
                return ordered_sum([x[n, c, y // _ci(oh // x.shape[2]), z // _ci(ow // x.shape[3])]
                                    for x in xs])
            ctx.compute(o, f, "upsampling_nearest_sum")
            return
        start = 0
        for x in xs:
            dst = narrow(o, 1, start, x.shape[1])
            hs, ws = oh // x.shape[2], ow // x.shape[3]
            if dst.size:
                ctx.compute(dst, lambda n, c, y, z, x=x, hs=hs, ws=ws:
                            x[n, c, y // _ci(hs), z // _ci(ws)], "upsampling_nearest")
            start += x.shape[1]

    def reference(self, a, inputs, is_train=False):
        o = _up_shapes(a, [tuple(x.shape) for x in inputs])
        if a.sample_type == "bilinear":
            return [_bilinear_ref(a, inputs[0], inputs[1])]
        oh, ow = o[2], o[3]
        ups = []
        for x in inputs:
            hs, ws = oh // x.shape[2], ow // x.shape[3]
            ups.append(x.repeat(hs, axis=2).repeat(ws, axis=3))
        if a.multi_input_mode == "sum" and len(inputs) > 1:
            acc = ups[0].copy()
            for u in ups[1:]:
                acc = acc + u
            return [acc.astype(inputs[0].dtype)]
        return [np.concatenate(ups, axis=1)]

    def gradient(self, node, ograds):
        a = node.parsed
        n = len(node.inputs)
        return outputs_of("_backward_UpSampling", ograds[0], *node.inputs, n=n,
                          scale=a.scale, num_filter=a.num_filter, sample_type=a.sample_type,
                          multi_input_mode=a.multi_input_mode, num_args=a.num_args,
                          workspace=a.workspace, name=f"{node.name}_backward")


@simple("_backward_UpSampling", params=_UP_PARAMS, differentiable=False)
class BackwardUpSampling(_ShapeOp):
    """Inputs (ograd, forward inputs...); one gradient per forward input."""

    def arguments(self, a):
        return ["ograd"] + UpSampling.arguments(self, a)

    def outputs(self, a):
        n = a.num_args if a.sample_type == "nearest" else 2
        return [f"output{i}" for i in range(n)]

    def infer_shape(self, a, s):
        return s, list(s[1:])

    def infer_type(self, a, t):
        return t, [t[0]] * (len(t) - 1)

    def lower(self, ctx):
        a = ctx.attrs
        if a.sample_type == "bilinear":
            return _lower_bilinear_backward(ctx)
        dy = ctx.inputs[0]
        oh, ow = dy.shape[2], dy.shape[3]
        start = 0
        adt = acc_dtype(dy.dtype)
        for x, gx in zip(ctx.inputs[1:], ctx.outputs):
            hs, ws = oh // x.shape[2], ow // x.shape[3]
            off = 0 if (a.multi_input_mode == "sum" and a.num_args > 1) else start
            start += x.shape[1]
            if gx is None or gx.size == 0:
                continue
            src = narrow(dy, 1, off, x.shape[1])

            def f(n, c, y, z, src=src, hs=hs, ws=ws):
                terms = [K.cast(adt, src[n, c, y * _ci(hs) + _ci(p), z * _ci(ws) + _ci(q)])
                         for p in range(hs) for q in range(ws)]
                return ordered_sum(terms)

            if hs * ws <= 64:
                ctx.compute(gx, f, "upsampling_backward")
            else:
                rh, rw = K.reduce_axis(hs), K.reduce_axis(ws)
                ctx.compute(gx, lambda n, c, y, z, src=src, hs=hs, ws=ws, rh=rh, rw=rw: K.reduce(
                    "sum", K.cast(adt, src[n, c, y * _ci(hs) + rh.var, z * _ci(ws) + rw.var]),
                    [rh, rw]), "upsampling_backward")

    def reference(self, a, inputs, is_train=False):
        dy = inputs[0]
        xs = inputs[1:]
        if a.sample_type == "bilinear":
            return _bilinear_backward_ref(a, dy, xs[0], xs[1])
        oh, ow = dy.shape[2], dy.shape[3]
        outs = []
        start = 0
        for x in xs:
            hs, ws = oh // x.shape[2], ow // x.shape[3]
            off = 0 if (a.multi_input_mode == "sum" and a.num_args > 1) else start
            start += x.shape[1]
            part = dy[:, off:off + x.shape[1]].astype(np.float64)
            n, c = x.shape[:2]
            outs.append(part.reshape(n, c, x.shape[2], hs, x.shape[3], ws).sum((3, 5))
                        .astype(dy.dtype))
        return outs


# --- bilinear upsampling: a depthwise deconvolution with kernel 2s - s%2, stride s ---------
def _lower_bilinear(ctx):
    a = ctx.attrs
    x, w = ctx.inputs
    o = ctx.outputs[0]
    s = _up_scale(a)[0]
    k, p = _bilinear_geom(s)
    H, W = x.shape[2], x.shape[3]
    t = -(-k // s)
    adt = acc_dtype(o.dtype)
    rty, rtx = K.reduce_axis(t), K.reduce_axis(t)

    def f(n, c, oy, ox):
        # output oy gets input iy with oy = iy*s - p + ky  ->  ky = (oy+p) % s + s*t
        def tap(o_, rt, L):
            base = o_ + _ci(p)
            kk = base % _ci(s) + rt.var * _ci(s)
            ii = base // _ci(s) - rt.var
            ok = kk.lt(_ci(k)) & ii.ge(_ci(0)) & ii.lt(_ci(L))
            return K.minimum(kk, _ci(k - 1)), K.minimum(K.maximum(ii, _ci(0)), _ci(L - 1)), ok
        ky, iy, oky = tap(oy, rty, H)
        kx, ix, okx = tap(ox, rtx, W)
        v = K.cast(adt, x[n, c, iy, ix]) * K.cast(adt, w[c, _ci(0), ky, kx])
        return K.reduce("sum", K.select(oky & okx, v, C(0, adt)), [rty, rtx])

    ctx.compute(o, f, "upsampling_bilinear")


def _lower_bilinear_backward(ctx):
    a = ctx.attrs
    dy, x, w = ctx.inputs
    gx, gw = ctx.outputs
    s = _up_scale(a)[0]
    k, p = _bilinear_geom(s)
    N, _Cc, H, W = x.shape
    OH, OW = dy.shape[2], dy.shape[3]
    adt = acc_dtype(dy.dtype)
    if gx is not None and gx.size:
        rky, rkx = K.reduce_axis(k), K.reduce_axis(k)

        def fx(n, c, iy, ix):
            oy = iy * _ci(s) - _ci(p) + rky.var
            ox = ix * _ci(s) - _ci(p) + rkx.var
            ok = oy.ge(_ci(0)) & oy.lt(_ci(OH)) & ox.ge(_ci(0)) & ox.lt(_ci(OW))
            v = K.cast(adt, dy[n, c, K.minimum(K.maximum(oy, _ci(0)), _ci(OH - 1)),
                               K.minimum(K.maximum(ox, _ci(0)), _ci(OW - 1))]) * \
                K.cast(adt, w[c, _ci(0), rky.var, rkx.var])
            return K.reduce("sum", K.select(ok, v, C(0, adt)), [rky, rkx])

        ctx.compute(gx, fx, "upsampling_bilinear_dx")
    if gw is not None and gw.size:
        rn, ry, rx = K.reduce_axis(N), K.reduce_axis(H), K.reduce_axis(W)

        def fw(c, z, ky, kx):
            oy = ry.var * _ci(s) - _ci(p) + ky
            ox = rx.var * _ci(s) - _ci(p) + kx
            ok = oy.ge(_ci(0)) & oy.lt(_ci(OH)) & ox.ge(_ci(0)) & ox.lt(_ci(OW))
            v = K.cast(adt, dy[rn.var, c, K.minimum(K.maximum(oy, _ci(0)), _ci(OH - 1)),
                               K.minimum(K.maximum(ox, _ci(0)), _ci(OW - 1))]) * \
                K.cast(adt, x[rn.var, c, ry.var, rx.var])
            return K.reduce("sum", K.select(ok, v, C(0, adt)), [rn, ry, rx])

        if N * H * W:
            ctx.compute(gw, fw, "upsampling_bilinear_dw")
        else:
            ctx.compute(gw, lambda *i: C(0, gw.dtype), "upsampling_bilinear_dw")


def _bilinear_ref(a, x, w):
    s = _up_scale(a)[0]
    k, p = _bilinear_geom(s)
    N, Cc, H, W = x.shape
    full = np.zeros((N, Cc, (H - 1) * s + k, (W - 1) * s + k), np.float64)
    for iy in range(H):
        for ix in range(W):
            full[:, :, iy * s:iy * s + k, ix * s:ix * s + k] += \
                x[:, :, iy:iy + 1, ix:ix + 1].astype(np.float64) * w[None, :, 0].astype(
                    np.float64)
    return full[:, :, p:p + H * s, p:p + W * s].astype(x.dtype)


def _bilinear_backward_ref(a, dy, x, w):
    s = _up_scale(a)[0]
    k, p = _bilinear_geom(s)
    N, Cc, H, W = x.shape
    full = np.zeros((N, Cc, (H - 1) * s + k, (W - 1) * s + k), np.float64)
    full[:, :, p:p + H * s, p:p + W * s] = dy
    gx = np.zeros(x.shape, np.float64)
    gw = np.zeros(w.shape, np.float64)
    for iy in range(H):
        for ix in range(W):
            patch = full[:, :, iy * s:iy * s + k, ix * s:ix * s + k]
            gx[:, :, iy, ix] = (patch * w[None, :, 0]).sum((2, 3))
            gw[:, 0] += (patch * x[:, :, iy:iy + 1, ix:ix + 1]).sum(0)
    return [gx.astype(x.dtype), gw.astype(w.dtype)]


# =============================================================================================
# depth_to_space / space_to_depth
# =============================================================================================
_BLOCK = ParamSpec(block_size=Param(parse_int))


def _d2s_shape(a, d, op):
    b = a.block_size
    if len(d) != 4:
        raise ShapeError(f"{op}: requires exactly a 4D tensor, got {tuple(d)}")
    if b <= 0:
        raise ShapeError(f"{op}: block_size must be a positive integer value, got {b}")
    if any(x == 0 for x in d):
        raise ShapeError(f"{op}: dimensions cannot be 0, got {tuple(d)}")
    if op == "depth_to_space":
        if d[1] % (b * b):
            raise ShapeError(f"{op}: dimension 1 (depth) {d[1]} should be a multiple of "
                             f"block^2 = {b * b}")
        return (d[0], d[1] // (b * b), d[2] * b, d[3] * b)
    if d[2] % b or d[3] % b:
        raise ShapeError(f"{op}: spatial dimensions {tuple(d[2:])} should be multiples of "
                         f"block_size {b}")
    return (d[0], d[1] * b * b, d[2] // b, d[3] // b)


class _DepthSpace(_ShapeOp):
    params = _BLOCK
    inverse = ""

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [_d2s_shape(a, s[0], self.name)]

    def lower(self, ctx):
        b = ctx.attrs.block_size
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        bb = _ci(b)
        if self.name == "depth_to_space":
            Co = o.shape[1]

            def f(n, c, y, z):
                ch = (y % bb) * _ci(b * Co) + (z % bb) * _ci(Co) + c
                return x[n, ch, y // bb, z // bb]
        else:
            Ci = x.shape[1]

            def f(n, c, y, z):
                b1 = c // _ci(b * Ci)
                b2 = (c // _ci(Ci)) % bb
                ci = c % _ci(Ci)
                return x[n, ci, y * bb + b1, z * bb + b2]
        ctx.compute(o, f, self.name)

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        b = a.block_size
        N, Cc, H, W = x.shape
        if self.name == "depth_to_space":
            t = x.reshape(N, b, b, Cc // (b * b), H, W).transpose(0, 3, 4, 1, 5, 2)
            return [t.reshape(N, Cc // (b * b), H * b, W * b).copy()]
        t = x.reshape(N, Cc, H // b, b, W // b, b).transpose(0, 3, 5, 1, 2, 4)
        return [t.reshape(N, Cc * b * b, H // b, W // b).copy()]

    def gradient(self, node, ograds):
        return [g(self.inverse, ograds[0], block_size=node.parsed.block_size,
                  name=f"{node.name}_backward")]


@simple("depth_to_space", inverse="space_to_depth")
class DepthToSpace(_DepthSpace):
    pass


@simple("space_to_depth", inverse="depth_to_space")
class SpaceToDepth(_DepthSpace):
    pass


# =============================================================================================
# diag
# =============================================================================================
_DIAG = ParamSpec(k=Param(parse_int, 0), axis1=Param(parse_int, 0), axis2=Param(parse_int, 1))


def _diag_info(a, d, op="diag"):
    nd = len(d)
    if nd == 0:
        raise ShapeError(f"{op}: the input must have at least 1 dimension")
    if nd == 1:
        n = d[0] + abs(a.k)
        return None, (n, n)
    x1 = _norm_axis(a.axis1, nd, op, "axis1")
    x2 = _norm_axis(a.axis2, nd, op, "axis2")
    if x1 == x2:
        raise ShapeError(f"{op}: axis1 and axis2 cannot refer to the same axis {x1}")
    h, w = d[x1], d[x2]
    k = a.k
    if k > 0:
        L = max(min(h, w - k), 0)
    else:
        L = max(min(h + k, w), 0)
    o = tuple(v for i, v in enumerate(d) if i not in (x1, x2)) + (L,)
    return (x1, x2), o


@simple("diag", params=_DIAG)
class Diag(_ShapeOp):
    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [_diag_info(a, s[0])[1]]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        axes, _ = _diag_info(a, x.shape)
        k = a.k
        if axes is None:
            n = x.shape[0]

            def f(i, j):
                src = i if k >= 0 else j
                ok = (j - i).eq(_ci(k))
                return K.select(ok, x[K.minimum(src, _ci(max(n - 1, 0)))], C(0, o.dtype))
            if x.size == 0:
                ctx.compute(o, lambda i, j: C(0, o.dtype), "diag")
                return
            ctx.compute(o, f, "diag")
            return
        x1, x2 = axes
        rest = [i for i in range(x.ndim) if i not in (x1, x2)]

        def f2(*i):
            idx = [None] * x.ndim
            for d, ix in zip(rest, i[:-1]):
                idx[d] = ix
            t = i[-1]
            idx[x1] = t + _ci(max(-k, 0))
            idx[x2] = t + _ci(max(k, 0))
            return x[tuple(idx)]
        ctx.compute(o, f2, "diag")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if x.ndim == 1:
            return [np.diag(x, a.k)]
        axes, _ = _diag_info(a, x.shape)
        return [np.diagonal(x, a.k, axes[0], axes[1]).copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_diag", ograds[0], node.inputs[0], k=a.k, axis1=a.axis1,
                  axis2=a.axis2, name=f"{node.name}_backward")]


@simple("_backward_diag", params=_DIAG)
class BackwardDiag(_BackwardLike):
    def lower(self, ctx):
        a = ctx.attrs
        dy = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        axes, _ = _diag_info(a, o.shape)
        k = a.k
        if axes is None:
            ctx.compute(o, lambda i: dy[i + _ci(max(-k, 0)), i + _ci(max(k, 0))], "diag_bwd")
            return
        x1, x2 = axes
        rest = [i for i in range(o.ndim) if i not in (x1, x2)]
        L = dy.shape[-1]

        def f(*i):
            t = i[x1] - _ci(max(-k, 0))
            ok = (i[x2] - i[x1]).eq(_ci(k)) & t.ge(_ci(0)) & t.lt(_ci(L))
            idx = [i[d] for d in rest] + [K.minimum(K.maximum(t, _ci(0)), _ci(max(L - 1, 0)))]
            if L == 0:
                return C(0, o.dtype)
            return K.select(ok, dy[tuple(idx)], C(0, o.dtype))
        ctx.compute(o, f, "diag_bwd")

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs
        out = np.zeros(x.shape, dy.dtype)
        if x.ndim == 1:
            n = x.shape[0]
            for i in range(n):
                out[i] = dy[i + max(-a.k, 0), i + max(a.k, 0)]
            return [out]
        axes, _ = _diag_info(a, x.shape)
        x1, x2 = axes
        L = dy.shape[-1]
        for t in range(L):
            idx = [slice(None)] * x.ndim
            idx[x1] = t + max(-a.k, 0)
            idx[x2] = t + max(a.k, 0)
            out[tuple(idx)] = dy[..., t]
        return [out]


# =============================================================================================
# shape_array / size_array / reshape_like (matrix_op.cc, elemwise_unary_op_basic.cc)
# =============================================================================================
class _ShapeInfo(OpDef):
    """int64 outputs describing the input's shape; the input's values are never read."""

    fusion = "injective"

    def infer_type(self, a, t):
        return t, [I64]

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0], name=f"{node.name}_backward")]


@simple("shape_array")
class ShapeArray(_ShapeInfo):
    """The input's shape as a 1-D int64 array."""

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None]
        return s, [(len(s[0]),)]

    def lower(self, ctx):
        o = ctx.outputs[0]
        dims = ctx.inputs[0].shape
        if o.size == 0:
            return

        def f(i):
            v = _ci(dims[-1])
            for d in range(len(dims) - 2, -1, -1):
                v = K.select(i.eq(_ci(d)), _ci(dims[d]), v)
            return v
        ctx.compute(o, f, "shape_array")

    def reference(self, a, inputs, is_train=False):
        return [np.array(inputs[0].shape, np.int64)]


@simple("size_array")
class SizeArray(_ShapeInfo):
    """The input's number of elements as a (1,) int64 array."""

    def infer_shape(self, a, s):
        return s, [(1,)]

    def lower(self, ctx):
        n = _prod(ctx.inputs[0].shape)
        ctx.compute(ctx.outputs[0], lambda i: _ci(n), "size_array")

    def reference(self, a, inputs, is_train=False):
        return [np.array([inputs[0].size], np.int64)]


_RESHAPE_LIKE = ParamSpec(lhs_begin=Param(optional(parse_int), None),
                          lhs_end=Param(optional(parse_int), None),
                          rhs_begin=Param(optional(parse_int), None),
                          rhs_end=Param(optional(parse_int), None))


def _like_range(nd: int, side: str, begin, end) -> tuple:
    """MXNet's ReshapeLikeRangeCanonicalize: [begin, end) with negatives counted from the end."""
    b = 0 if begin is None else begin
    if b < 0:
        b += nd
    e = nd if end is None else (end + nd if end < 0 else end)
    if e > nd:
        raise ShapeError(f"reshape_like: invalid {side}_end={end} as dimension number is {nd}")
    if not b < e:
        raise ShapeError(f"reshape_like: invalid begin, end, get {side}_begin={begin}, "
                         f"{side}_end={end}")
    if e < 0 or b < 0:
        raise ShapeError(f"reshape_like: invalid {side}_begin={begin}, {side}_end={end}")
    return b, e


def reshape_like_shape(a, lshape, rshape) -> tuple:
    lb, le = _like_range(len(lshape), "lhs", a.lhs_begin, a.lhs_end)
    rb, re_ = _like_range(len(rshape), "rhs", a.rhs_begin, a.rhs_end)
    out = tuple(lshape[:lb]) + tuple(rshape[rb:re_]) + tuple(lshape[le:])
    if _prod(out) != _prod(lshape):
        raise ShapeError(f"reshape_like: cannot reshape lhs with shape {tuple(lshape)} to new "
                         f"shape {out} because they have different size")
    return out


@simple("reshape_like", params=_RESHAPE_LIKE)
class ReshapeLike(_View):
    """lhs reshaped with dims [lhs_begin, lhs_end) replaced by rhs's [rhs_begin, rhs_end)."""

    def arguments(self, a):
        return ["lhs", "rhs"]

    def infer_shape(self, a, s):
        if s[0] is None or s[1] is None:
            return s, [None]
        return s, [reshape_like_shape(a, s[0], s[1])]

    def infer_type(self, a, t):
        return t, [t[0]]

    def reference(self, a, inputs, is_train=False):
        lhs, rhs = inputs
        return [lhs.reshape(reshape_like_shape(a, lhs.shape, rhs.shape)).copy()]

    def gradient(self, node, ograds):
        return [g("_backward_reshape", ograds[0], node.inputs[0], name=f"{node.name}_backward"),
                g("zeros_like", node.inputs[1], name=f"{node.name}_backward_rhs")]


# =============================================================================================
# _split_v2 (matrix_op-inl.h SplitParam / SplitOpShape)
# =============================================================================================
_SPLIT_V2 = ParamSpec(indices=Param(parse_shape), axis=Param(parse_int, 1),
                      squeeze_axis=Param(parse_bool, False), sections=Param(parse_int, 0))


def _split_v2_outputs(a) -> int:
    n = a.sections if a.sections > 0 else len(a.indices)
    if n < 1:
        raise OpError("_split_v2: needs at least one output (indices or sections)")
    return n


def split_v2_bounds(a, d, op: str = "_split_v2") -> tuple:
    """(axis, [(start, end)...]): the part of axis ``axis`` each output takes."""
    ax = _norm_axis(a.axis, len(d), op)
    n = d[ax]
    if a.sections > 0:
        if n % a.sections:
            raise ShapeError(f"{op}: the size of axis {ax} ({n}) is not divisible by "
                             f"sections={a.sections}")
        size = n // a.sections
        starts = [i * size for i in range(a.sections)]
    else:
        starts = [int(i) for i in a.indices]
    if starts[0] != 0:
        raise ShapeError(f"{op}: the first split index must be 0 so the outputs cover axis "
                         f"{ax} of {tuple(d)}, got indices {tuple(starts)}")
    bounds = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        if not s < e:
            raise ShapeError(f"{op}: start {s} is not less than end {e} for subarray {i} "
                             f"(axis {ax} of {tuple(d)})")
        if e > n:
            raise ShapeError(f"{op}: end {e} exceeds the size {n} of axis {ax}")
        if a.squeeze_axis and e - s != 1:
            raise ShapeError(f"{op}: squeeze_axis expects axis size 1 for every output but "
                             f"subarray {i} has {e - s}")
        bounds.append((s, e))
    return ax, bounds


def _split_v2_shapes(a, d) -> list:
    ax, bounds = split_v2_bounds(a, d)
    out = []
    for s, e in bounds:
        o = list(d)
        o[ax] = e - s
        if a.squeeze_axis:
            o.pop(ax)
        out.append(tuple(o))
    return out


@simple("_split_v2", params=_SPLIT_V2)
class SplitV2(_ShapeOp):
    """Split along ``axis`` at ``indices`` (or into ``sections`` equal parts)."""

    def outputs(self, a):
        return [f"output{i}" for i in range(_split_v2_outputs(a))]

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None] * _split_v2_outputs(a)
        return s, _split_v2_shapes(a, s[0])

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        ax, bounds = split_v2_bounds(a, x.shape)
        for o, (s, e) in zip(ctx.outputs, bounds):
            if o is None:
                continue
            src = select_axis(x, ax, s) if a.squeeze_axis else narrow(x, ax, s, e - s)
            copy_view(ctx, o, src, "split_v2")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        ax, bounds = split_v2_bounds(a, x.shape)
        outs = []
        for s, e in bounds:
            p = np.take(x, np.arange(s, e), axis=ax)
            outs.append(np.squeeze(p, axis=ax) if a.squeeze_axis else p)
        return outs

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_split_v2_backward", *ograds, indices=a.indices, axis=a.axis,
                  squeeze_axis=a.squeeze_axis, sections=a.sections,
                  name=f"{node.name}_backward")]


@simple("_split_v2_backward", params=_SPLIT_V2, differentiable=False)
class BackwardSplitV2(_ShapeOp):
    """The input gradient of _split_v2: the output gradients joined along the axis."""

    def arguments(self, a):
        return [f"ograd{i}" for i in range(_split_v2_outputs(a))]

    def _full_shape(self, a, s) -> tuple:
        if a.squeeze_axis:
            k = s[0]
            ax = _norm_axis(a.axis, len(k) + 1, self.name)
            return tuple(k[:ax]) + (len(s),) + tuple(k[ax:])
        ax = _norm_axis(a.axis, len(s[0]), self.name)
        o = list(s[0])
        o[ax] = sum(x[ax] for x in s)
        return tuple(o)

    def infer_shape(self, a, s):
        if any(x is None for x in s):
            return s, [None]
        return s, [self._full_shape(a, s)]

    def lower(self, ctx):
        a = ctx.attrs
        out = ctx.outputs[0]
        ax, bounds = split_v2_bounds(a, out.shape, self.name)
        for dy, (s, e) in zip(ctx.inputs, bounds):
            dst = select_axis(out, ax, s) if a.squeeze_axis else narrow(out, ax, s, e - s)
            copy_view(ctx, dst, dy, "split_v2_backward")

    def reference(self, a, inputs, is_train=False):
        full = self._full_shape(a, [x.shape for x in inputs])
        ax = _norm_axis(a.axis, len(full), self.name)
        if a.squeeze_axis:
            return [np.stack(inputs, axis=ax)]
        return [np.concatenate(inputs, axis=ax)]


# =============================================================================================
# Crop (legacy src/operator/crop-inl.h)
# =============================================================================================
_CROP = ParamSpec(num_args=Param(parse_int), offset=Param(parse_shape, (0, 0)),
                  h_w=Param(parse_shape, (0, 0)), center_crop=Param(parse_bool, False))


def _crop_geometry(a, dshape, like_shape) -> tuple:
    """((offset_h, offset_w), output shape) as CropProp::InferShape and InferCropOfferset."""
    if a.num_args not in (1, 2):
        raise OpError(f"Crop: num_args must be 1 or 2, got {a.num_args}")
    if len(dshape) != 4:
        raise ShapeError(f"Crop: input data should be 4D in batch-num_filter-y-x, got "
                         f"{tuple(dshape)}")
    if a.num_args == 1:
        if len(a.h_w) != 2:
            raise ShapeError(f"Crop: h_w must have 2 entries, got {a.h_w}")
        h, w = a.h_w
        if not 1 <= h <= dshape[2]:
            raise ShapeError(f"Crop: the crop height h_w[0]={h} should be in [1, "
                             f"{dshape[2]}] (the input data's height)")
        if not 1 <= w <= dshape[3]:
            raise ShapeError(f"Crop: the crop width h_w[1]={w} should be in [1, {dshape[3]}] "
                             "(the input data's width)")
    else:
        if len(like_shape) != 4:
            raise ShapeError(f"Crop: crop_like (arg1) should be 4D, got {tuple(like_shape)}")
        h, w = like_shape[2], like_shape[3]
        if h > dshape[2] or w > dshape[3]:
            raise ShapeError(f"Crop: crop size ({h}, {w}) of crop_like exceeds the data's "
                             f"spatial size {tuple(dshape[2:])}")
    if a.center_crop:
        off = ((dshape[2] - h) // 2, (dshape[3] - w) // 2)
    else:
        if len(a.offset) != 2:
            raise ShapeError(f"Crop: offset must have 2 entries, got {a.offset}")
        off = tuple(a.offset)
        for i, (o, room) in enumerate(zip(off, (dshape[2] - h, dshape[3] - w))):
            if not 0 <= o <= room:
                raise ShapeError(f"Crop: offset[{i}]={o} should be in [0, {room}] (the "
                                 f"residual space of {'height' if i == 0 else 'width'})")
    return off, (dshape[0], dshape[1], h, w)


@simple("Crop", params=_CROP)
class Crop(_ShapeOp):
    """Crop the spatial dims of NCHW data to h_w (or to arg1's size) at offset or centered."""

    def arguments(self, a):
        if a.num_args not in (1, 2):
            raise OpError(f"Crop: num_args must be 1 or 2, got {a.num_args}")
        return [f"arg{i}" for i in range(a.num_args)]

    def infer_shape(self, a, s):
        if s[0] is None or (a.num_args == 2 and s[1] is None):
            return s, [None]
        return s, [_crop_geometry(a, s[0], s[1] if a.num_args == 2 else None)[1]]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        (oh, ow), oshape = _crop_geometry(a, x.shape, ctx.inputs[1].shape if a.num_args == 2
                                          else None)
        _lower_slice(ctx, [(0, 1, oshape[0]), (0, 1, oshape[1]), (oh, 1, oshape[2]),
                           (ow, 1, oshape[3])])

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        (oh, ow), o = _crop_geometry(a, x.shape, inputs[1].shape if a.num_args == 2 else None)
        return [x[:, :, oh:oh + o[2], ow:ow + o[3]].copy()]

    def gradient(self, node, ograds):
        a = node.parsed
        gx = g("_backward_Crop", ograds[0], node.inputs[0], *node.inputs[1:],
               num_args=a.num_args, offset=a.offset, h_w=a.h_w, center_crop=a.center_crop,
               name=f"{node.name}_backward")
        rest = [g("zeros_like", e, name=f"{node.name}_backward_crop_like")
                for e in node.inputs[1:]]
        return [gx] + rest


@simple("_backward_Crop", params=_CROP, differentiable=False)
class BackwardCrop(_ShapeOp):
    """Inputs (ograd, data[, crop_like]): ograd placed at the crop window, zeros elsewhere."""

    def arguments(self, a):
        return ["ograd", "data"] + (["crop_like"] if a.num_args == 2 else [])

    def infer_shape(self, a, s):
        return s, [s[1]]

    def infer_type(self, a, t):
        return t, [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        dy = ctx.inputs[0]
        (oh, ow), o = _crop_geometry(a, ctx.outputs[0].shape, ctx.inputs[2].shape
                                     if a.num_args == 2 else None)
        _lower_slice_backward(ctx, [(0, 1, o[0]), (0, 1, o[1]), (oh, 1, dy.shape[2]),
                                    (ow, 1, dy.shape[3])])

    def reference(self, a, inputs, is_train=False):
        dy, x = inputs[0], inputs[1]
        (oh, ow), o = _crop_geometry(a, x.shape, inputs[2].shape if a.num_args == 2 else None)
        out = np.zeros(x.shape, dy.dtype)
        out[:, :, oh:oh + o[2], ow:ow + o[3]] = dy
        return [out]


# =============================================================================================
# _contrib_index_copy (src/operator/contrib/index_copy-inl.h)
# =============================================================================================
def _index_copy_check(old, idx, new, op: str = "_contrib_index_copy") -> None:
    if len(idx) != 1:
        raise ShapeError(f"{op}: index_vector must be 1-D, got {tuple(idx)}")
    if len(old) != len(new) or len(old) == 0:
        raise ShapeError(f"{op}: old_tensor {tuple(old)} and new_tensor {tuple(new)} must have "
                         "the same (non-zero) number of dimensions")
    if new[0] > old[0] or tuple(new[1:]) != tuple(old[1:]):
        raise ShapeError(f"{op}: new_tensor {tuple(new)} must match old_tensor {tuple(old)} "
                         "in every dim but the first, and have no more rows")
    if idx[0] != new[0]:
        raise ShapeError(f"{op}: index_vector has {idx[0]} entries but new_tensor has "
                         f"{new[0]} rows")


def _as_index(e: K.Expr) -> K.Expr:
    from .indexing import to_int
    return to_int(e)


def _copied_from(idx: K.TensorRef, row: K.Expr) -> K.Expr:
    """The last position i with index[i] == row, or -1 (rows written in index order, so the
    last duplicate wins; out-of-range indices write nothing)."""
    r = K.reduce_axis(idx.shape[0])
    return K.reduce("max", K.select(_as_index(idx[r.var]).eq(row), r.var, _ci(-1)), [r])


def _np_copied_from(index, rows: int) -> np.ndarray:
    src = np.full(rows, -1, np.int64)
    for i, v in enumerate(np.trunc(index.astype(np.float64)).astype(np.int64)):
        if 0 <= v < rows:
            src[v] = i
    return src


@simple("_contrib_index_copy")
class IndexCopy(OpDef):
    """old_tensor with rows index_vector[i] replaced by new_tensor[i]."""

    fusion = "injective"

    def arguments(self, a):
        return ["old_tensor", "index_vector", "new_tensor"]

    def infer_shape(self, a, s):
        if any(x is None for x in s):
            return s, [s[0]]
        _index_copy_check(*s)
        return s, [s[0]]

    def infer_type(self, a, t):
        dt = t[0] if t[0] is not None else t[2]
        if t[0] is not None and t[2] is not None and t[0] != t[2]:
            raise OpError(f"_contrib_index_copy: old_tensor ({t[0]}) and new_tensor ({t[2]}) "
                          "must have the same dtype")
        return [dt, t[1] if t[1] is not None else "int64", dt], [dt]

    def lower(self, ctx):
        old, idx, new = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        if new.shape[0] == 0:
            return copy_view(ctx, o, old, "index_copy")
        last = _ci(new.shape[0] - 1)

        def f(r, *rest):
            j = _copied_from(idx, r)
            src = K.minimum(K.maximum(j, _ci(0)), last)
            return K.select(j.ge(_ci(0)), new[(src,) + rest], old[(r,) + rest])
        ctx.compute(o, f, "index_copy")

    def reference(self, a, inputs, is_train=False):
        old, idx, new = inputs
        out = old.copy()
        for r, i in enumerate(_np_copied_from(idx, old.shape[0])):
            if i >= 0:
                out[r] = new[i]
        return [out]

    def gradient(self, node, ograds):
        outs = outputs_of("_contrib_backward_index_copy", ograds[0], *node.inputs, n=3,
                          name=f"{node.name}_backward")
        return [outs[0], outs[1], outs[2]]


@simple("_contrib_backward_index_copy", differentiable=False)
class BackwardIndexCopy(OpDef):
    """Inputs (ograd, old_tensor, index_vector, new_tensor); outputs the gradients of the
    three forward inputs (ograd with the copied rows zeroed, zeros, ograd's copied rows)."""

    fusion = "injective"

    def arguments(self, a):
        return ["ograd", "old_tensor", "index_vector", "new_tensor"]

    def outputs(self, a):
        return ["old_grad", "index_grad", "new_grad"]

    def infer_shape(self, a, s):
        return s, [s[1], s[2], s[3]]

    def infer_type(self, a, t):
        return t, [t[0], t[2], t[0]]

    def lower(self, ctx):
        dy, _old, idx, _new = ctx.inputs
        g_old, g_idx, g_new = ctx.outputs
        rows = dy.shape[0]
        if g_old is not None and g_old.size:
            if idx.shape[0] == 0:
                copy_view(ctx, g_old, dy, "index_copy_bwd_old")
            else:
                ctx.compute(g_old, lambda r, *rest: K.select(
                    _copied_from(idx, r).ge(_ci(0)), C(0, g_old.dtype), dy[(r,) + rest]),
                    "index_copy_bwd_old")
        if g_idx is not None and g_idx.size:
            ctx.compute(g_idx, lambda i: C(0, g_idx.dtype), "index_copy_bwd_index")
        if g_new is not None and g_new.size:
            def f(i, *rest):
                v = _as_index(idx[i])
                ok = v.ge(_ci(0)) & v.lt(_ci(rows))
                src = K.minimum(K.maximum(v, _ci(0)), _ci(rows - 1))
                return K.select(ok, dy[(src,) + rest], C(0, g_new.dtype))
            ctx.compute(g_new, f, "index_copy_bwd_new")

    def reference(self, a, inputs, is_train=False):
        dy, old, idx, new = inputs
        src = _np_copied_from(idx, old.shape[0])
        g_old = np.where((src >= 0).reshape((-1,) + (1,) * (dy.ndim - 1)), 0, dy).astype(
            dy.dtype)
        g_new = np.zeros(new.shape, dy.dtype)
        for i, v in enumerate(np.trunc(idx.astype(np.float64)).astype(np.int64)):
            if 0 <= v < old.shape[0]:
                g_new[i] = dy[v]
        return [g_old, np.zeros(idx.shape, idx.dtype), g_new]
