"""Ordering operators: ``topk``, ``sort``, ``argsort`` and ``_backward_topk``.

Semantics follow MXNet 1.x ``src/operator/tensor/ordering_op-inl.h`` / ``ordering_op.cc``:

* a row is the data along ``axis`` (``axis=None``: the flattened array, one row);
* ``k < 1`` selects the whole row; ``k`` larger than the row raises;
* ``topk`` returns ``value`` / ``indices`` / ``mask`` / ``both``; ``value`` (and ``sort``)
  carry a hidden int32 indices output that the backward pass scatters through;
* indices are written in ``dtype`` (float32 by default); a mask has the data's dtype;
* float16 data is rejected like MXNet's ``MXNET_NO_FLOAT16_TYPE_SWITCH``.

Order of ties and NaN: MXNet's CPU kernel uses ``std::sort`` / ``std::partial_sort`` whose tie
order is unspecified (insertion sort, hence stable, for rows of at most 16 elements), and its
GPU kernel a stable radix sort. We sort *stably* (equal values keep their index order) and
place NaN after every number (first when descending), as the GPU kernel and numpy do.

Generated code: one task per row. The row is copied into a scratch (key, index) buffer and
sorted by a bottom-up merge sort (``ceil(log2 n)`` passes ping-ponging between two halves of
the scratch), O(n log n) per row. Runs of a bottom-up merge always hold a contiguous range of
original positions, so a merge that takes the right element only when it is strictly before
the left one is stable without comparing indices.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..graph import Entry
from ..params import Param, ParamSpec, enum, optional, parse_bool, parse_dtype_name, parse_int
from ..registry import OpDef, simple
from .common import collect_buffers, g
from .indexing import to_int

C = K.const
I64 = "int64"

#: data dtypes of MXNET_NO_FLOAT16_TYPE_SWITCH
_DATA_DTYPES = ("float32", "float64", "uint8", "int8", "int32", "int64")
_INDEX_DTYPES = ("uint8", "int32", "int64", "float16", "float32", "float64")
#: the largest row length whose indices a dtype holds exactly (MaxIntegerValue<IDType>)
_INDEX_LIMIT = {"uint8": 255, "int32": 2**31 - 1, "int64": 2**63 - 1, "float16": 2**11,
                "float32": 2**24, "float64": 2**53}
#: dtype of the hidden indices output of ``topk(ret_typ='value')`` and ``sort``
_HIDDEN_INDEX_DTYPE = "int32"


def _index_dtype(s) -> str:
    name = parse_dtype_name(s)
    if name not in _INDEX_DTYPES:
        raise ValueError(f"expected one of {list(_INDEX_DTYPES)}, got {s!r}")
    return name


_TOPK = ParamSpec(axis=Param(optional(parse_int), -1), k=Param(parse_int, 1),
                  ret_typ=Param(enum("value", "indices", "mask", "both"), "indices"),
                  is_ascend=Param(parse_bool, False),
                  dtype=Param(_index_dtype, "float32"))
_SORT = ParamSpec(axis=Param(optional(parse_int), -1), is_ascend=Param(parse_bool, True))
_ARGSORT = ParamSpec(axis=Param(optional(parse_int), -1), is_ascend=Param(parse_bool, True),
                     dtype=Param(_index_dtype, "float32"))


def _ci(v: int) -> K.Expr:
    return C(int(v), I64)


# =============================================================================================
# geometry (ParseTopKParam)
# =============================================================================================
def _norm_axis(op: str, axis: int, ndim: int) -> int:
    ax = axis + ndim if axis < 0 else axis
    if not 0 <= ax < ndim:
        raise ShapeError(f"{op}: invalid axis {axis} for a {ndim}-d input; axis should be "
                         f"between 0 and {ndim}")
    return ax


def _geometry(op: str, shape, axis, k_param: int) -> tuple:
    """(outer, n, inner, k): rows of length n, ``outer x inner`` of them, k selected."""
    shape = tuple(int(s) for s in shape)
    if axis is None:
        outer, n, inner = 1, math.prod(shape), 1
    else:
        ax = _norm_axis(op, axis, len(shape))
        outer, n, inner = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])
    k = n if k_param <= 0 else k_param
    if not 1 <= k <= n:
        raise ShapeError(f"{op}: k must be smaller than {n}, get k = {k}")
    return outer, n, inner, k


def _target_shape(shape, axis, k: int, ret_typ: str) -> tuple:
    shape = tuple(int(s) for s in shape)
    if ret_typ == "mask":
        return shape
    if axis is None:
        return (k,)
    ax = _norm_axis("topk", axis, len(shape))
    return shape[:ax] + (k,) + shape[ax + 1:]


def _check_data_dtype(op: str, t) -> None:
    if t is not None and t not in _DATA_DTYPES:
        raise OpError(f"{op}: data of dtype {t} is not supported (MXNet's ordering ops take "
                      f"{', '.join(_DATA_DTYPES)})")


# =============================================================================================
# the row sort kernel
# =============================================================================================
def _before(a: K.Expr, b: K.Expr, ascend: bool) -> K.Expr:
    """Whether value ``a`` goes strictly before ``b``; NaN counts as larger than any number."""
    if a.dtype.kind != "f":
        return a.lt(b) if ascend else a.gt(b)
    if ascend:
        return a.lt(b) | (b.ne(b) & a.eq(a))
    return a.gt(b) | (a.ne(a) & b.eq(b))


def _merge_pass(keys, ids, row, n: int, width: int, src: int, dst: int, ascend: bool,
                tag: str) -> K.Stmt:
    """Merge neighbouring sorted runs of ``width`` from scratch half ``src`` into ``dst``."""
    b, t = K.index_var("blk"), K.index_var("t")
    start = b * _ci(2 * width)
    mid = K.minimum(start + _ci(width), _ci(n))
    end = K.minimum(start + _ci(2 * width), _ci(n))
    li, ri = K.Local(f"%srt_li{tag}", K.INDEX), K.Local(f"%srt_ri{tag}", K.INDEX)
    lk, rk = (K.Local(f"%srt_{s}{tag}", keys.dtype) for s in ("lk", "rk"))
    take = K.Local(f"%srt_take{tag}", K.BOOL)
    # both cursors are clamped before loading: an exhausted run's cursor points past it
    lpos, rpos = K.minimum(li, _ci(n - 1)), K.minimum(ri, _ci(n - 1))
    merge = [K.Assign(lk, keys[row, src, lpos]), K.Assign(rk, keys[row, src, rpos]),
             K.Assign(take, ri.lt(end) & (li.ge(mid) | _before(rk, lk, ascend))),
             K.Store(keys.buf, keys.flat_index((row, dst, t)), K.select(take, rk, lk)),
             K.Store(ids.buf, ids.flat_index((row, dst, t)),
                     K.select(take, ids[row, src, rpos], ids[row, src, lpos])),
             K.Assign(li, li + K.select(take, _ci(0), _ci(1))),
             K.Assign(ri, ri + K.select(take, _ci(1), _ci(0)))]
    block = [K.Assign(li, start), K.Assign(ri, mid),
             K.For(t, end - start, merge, "serial", start=start)]
    return K.For(b, _ci(-(-n // (2 * width))), block, "serial")


def sort_rows(ctx, x: K.TensorRef, outer: int, n: int, inner: int, k: int, ascend: bool, *,
              value: K.TensorRef | None = None, index: K.TensorRef | None = None,
              mask: K.TensorRef | None = None, note: str = "topk") -> None:
    """Sort every row of ``x`` (viewed as (outer, n, inner), rows along n) and write the
    first ``k`` sorted values / indices (views (outer, k, inner)) and/or the 0-1 mask
    (outer, n, inner) of the selected positions."""
    rows = outer * inner
    if rows == 0 or n == 0:
        return
    if n > _INDEX_LIMIT["int32"]:
        raise OpError(f"{note}: rows of {n} elements are longer than int32 indices allow")
    x3 = x.reshape((outer, n, inner))
    keys = ctx.temp((rows, 2, n), x.dtype.name)
    ids = ctx.temp((rows, 2, n), "int32")
    row = K.index_var("row")
    o = row // _ci(inner) if inner > 1 else row
    i = row % _ci(inner) if inner > 1 else _ci(0)

    t = K.index_var("t")
    body: list = [K.For(t, _ci(n), [
        K.Store(keys.buf, keys.flat_index((row, 0, t)), x3[o, t, i]),
        K.Store(ids.buf, ids.flat_index((row, 0, t)), K.cast("int32", t))], "serial")]
    width, npass = 1, 0
    while width < n:
        body.append(_merge_pass(keys, ids, row, n, width, npass % 2, 1 - npass % 2, ascend,
                                str(npass)))
        width, npass = width * 2, npass + 1
    fin = npass % 2

    j = K.index_var("j")
    sel = K.minimum(K.maximum(K.cast(I64, ids[row, fin, j]), _ci(0)), _ci(n - 1))
    stores = []
    if value is not None:
        v3 = value.reshape((outer, k, inner))
        stores.append(K.Store(v3.buf, v3.flat_index((o, j, i)), keys[row, fin, j]))
    if index is not None:
        x3i = index.reshape((outer, k, inner))
        stores.append(K.Store(x3i.buf, x3i.flat_index((o, j, i)),
                              K.cast(index.dtype, ids[row, fin, j])))
    if mask is not None:
        m3 = mask.reshape((outer, n, inner))
        t2 = K.index_var("t")
        body.append(K.For(t2, _ci(n), [K.Store(m3.buf, m3.flat_index((o, t2, i)),
                                                C(0, m3.dtype))], "serial"))
        stores.append(K.Store(m3.buf, m3.flat_index((o, sel, i)), C(1, m3.dtype)))
    body.append(K.For(j, _ci(k), stores, "serial"))
    ctx.emit(K.Kernel("__K__", collect_buffers(body), row, rows, body,
                      cost=rows * n * (npass + 2) * 8, note=note))


# =============================================================================================
# numpy oracle
# =============================================================================================
def np_sort_order(rows: np.ndarray, ascend: bool) -> np.ndarray:
    """Stable order of each row of a 2-D array (NaN largest), as positions in the row."""
    if rows.shape[-1] == 0:
        return np.zeros(rows.shape, np.int64)
    if ascend:
        return np.argsort(rows, axis=-1, kind="stable")
    # descending stably = ascending stably on the reversed row, read backwards
    n = rows.shape[-1]
    return n - 1 - np.argsort(rows[:, ::-1], axis=-1, kind="stable")[:, ::-1]


def _np_rows(x: np.ndarray, axis) -> tuple:
    """(rows (outer*inner, n), outer, n, inner) of ``x`` along ``axis``."""
    if axis is None:
        return x.reshape(1, -1), 1, x.size, 1
    ax = axis % x.ndim
    outer, n, inner = math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1:])
    r = x.reshape(outer, n, inner).transpose(0, 2, 1).reshape(outer * inner, n)
    return r, outer, n, inner


def _np_unrows(r: np.ndarray, outer: int, inner: int, shape) -> np.ndarray:
    m = r.shape[-1]
    return r.reshape(outer, inner, m).transpose(0, 2, 1).reshape(shape)


def np_topk(x: np.ndarray, axis, k_param: int, ret_typ: str, ascend: bool, dtype: str) -> list:
    outer, _n, inner, k = _geometry("topk", x.shape, axis, k_param)
    rows, *_ = _np_rows(x, axis)
    order = np_sort_order(rows, ascend)[:, :k]
    shape = _target_shape(x.shape, axis, k, ret_typ)
    if ret_typ == "mask":
        m = np.zeros(rows.shape, x.dtype)
        np.put_along_axis(m, order, 1, axis=-1)
        return [_np_unrows(m, outer, inner, x.shape)]
    vals = _np_unrows(np.take_along_axis(rows, order, axis=-1), outer, inner, shape)
    idx = _np_unrows(order, outer, inner, shape)
    if ret_typ == "indices":
        return [idx.astype(dtype)]
    idt = _HIDDEN_INDEX_DTYPE if ret_typ == "value" else dtype
    return [vals, idx.astype(idt)]


# =============================================================================================
# operators
# =============================================================================================
@simple("topk", fusion="opaque", params=_TOPK)
class TopK(OpDef):
    """The k largest (or smallest) elements of each row: values, indices, mask or both."""

    def outputs(self, a):
        if a.ret_typ in ("indices", "mask"):
            return ["output"]
        return ["output", "indices"]

    def num_visible_outputs(self, a):
        return 2 if a.ret_typ == "both" else 1

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None] * self.num_outputs(a)
        *_, k = _geometry("topk", s[0], a.axis, a.k)
        out = _target_shape(s[0], a.axis, k, a.ret_typ)
        return s, [out] * self.num_outputs(a)

    def infer_type(self, a, t):
        _check_data_dtype("topk", t[0])
        if a.ret_typ == "indices":
            return t, [a.dtype]
        if a.ret_typ == "mask":
            return t, [t[0]]
        return t, [t[0], _HIDDEN_INDEX_DTYPE if a.ret_typ == "value" else a.dtype]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        outer, n, inner, k = _geometry("topk", x.shape, a.axis, a.k)
        outs = ctx.outputs
        kw = {"value": outs[0], "index": outs[1]} if a.ret_typ in ("value", "both") else \
            {"index": outs[0]} if a.ret_typ == "indices" else {"mask": outs[0]}
        sort_rows(ctx, x, outer, n, inner, k, a.is_ascend, note="topk", **kw)

    def reference(self, a, inputs, is_train=False):
        return np_topk(inputs[0], a.axis, a.k, a.ret_typ, a.is_ascend, a.dtype)

    def gradient(self, node, ograds):
        a = node.parsed
        if a.ret_typ in ("indices", "mask"):
            return [g("zeros_like", node.inputs[0], name=f"{node.name}_backward")]
        return [g("_backward_topk", ograds[0], Entry(node, 1), node.inputs[0],
                  name=f"{node.name}_backward", axis=a.axis, k=a.k, ret_typ=a.ret_typ,
                  is_ascend=a.is_ascend, dtype=a.dtype)]


@simple("sort", fusion="opaque", params=_SORT)
class Sort(OpDef):
    """Sorted copy of the data along ``axis`` (ascending by default)."""

    def outputs(self, a):
        return ["output", "indices"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        if s[0] is None:
            return s, [None, None]
        *_, k = _geometry("sort", s[0], a.axis, 0)
        out = _target_shape(s[0], a.axis, k, "value")
        return s, [out, out]

    def infer_type(self, a, t):
        _check_data_dtype("sort", t[0])
        return t, [t[0], _HIDDEN_INDEX_DTYPE]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        outer, n, inner, k = _geometry("sort", x.shape, a.axis, 0)
        sort_rows(ctx, x, outer, n, inner, k, a.is_ascend, value=ctx.outputs[0],
                  index=ctx.outputs[1], note="sort")

    def reference(self, a, inputs, is_train=False):
        return np_topk(inputs[0], a.axis, 0, "value", a.is_ascend, _HIDDEN_INDEX_DTYPE)

    def gradient(self, node, ograds):
        a = node.parsed
        return [g("_backward_topk", ograds[0], Entry(node, 1), node.inputs[0],
                  name=f"{node.name}_backward", axis=a.axis, k=0, ret_typ="value",
                  is_ascend=a.is_ascend)]


@simple("argsort", fusion="opaque", params=_ARGSORT)
class ArgSort(OpDef):
    """Indices that sort the data along ``axis``; a 0-d input gives ``[0]``."""

    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if len(d) == 0:
            if a.axis not in (None, -1, 0):
                raise ShapeError(f"argsort: axis can only be -1 or 0 for a scalar tensor, "
                                 f"got {a.axis}")
            return s, [(1,)]
        if a.axis is None:
            return s, [(math.prod(d),)]
        _norm_axis("argsort", a.axis, len(d))
        return s, [tuple(d)]

    def infer_type(self, a, t):
        _check_data_dtype("argsort", t[0])
        return t, [a.dtype]

    def lower(self, ctx):
        a = ctx.attrs
        x, o = ctx.inputs[0], ctx.outputs[0]
        if x.ndim == 0:
            ctx.compute(o, lambda *i: C(0, o.dtype), "argsort_scalar")
            return
        if x.size == 0:
            return
        outer, n, inner, k = _geometry("argsort", x.shape, a.axis, 0)
        sort_rows(ctx, x, outer, n, inner, k, a.is_ascend, index=o, note="argsort")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if x.ndim == 0:
            return [np.zeros((1,), a.dtype)]
        if x.size == 0:
            return [np.zeros((x.size,) if a.axis is None else x.shape, a.dtype)]
        return np_topk(x, a.axis, 0, "indices", a.is_ascend, a.dtype)

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0], name=f"{node.name}_backward")]


@simple("_backward_topk", fusion="opaque", differentiable=False, params=_TOPK)
class BackwardTopK(OpDef):
    """d data: zero except at the selected positions, which receive the head gradient of the
    values (MXNet's TopKBackwardImpl; ``indices`` is the forward's indices output)."""

    def arguments(self, a):
        return ["ograd", "indices", "data"]

    def infer_shape(self, a, s):
        return s, [s[2]]

    def infer_type(self, a, t):
        return t, [t[2] if t[2] is not None else t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, idx, x = ctx.inputs
        dx = ctx.outputs[0]
        outer, n, inner, k = _geometry("_backward_topk", x.shape, a.axis, a.k)
        limit = _INDEX_LIMIT.get(idx.dtype.name, _INDEX_LIMIT["int64"])
        if n > limit:
            raise OpError(f"_backward_topk: indices of dtype {idx.dtype.name} cannot represent "
                          f"the {n} positions of a row")
        rows = outer * inner
        if rows == 0:
            return
        dx3 = dx.reshape((outer, n, inner))
        dy3, id3 = dy.reshape((outer, k, inner)), idx.reshape((outer, k, inner))
        row, t, j = K.index_var("row"), K.index_var("t"), K.index_var("j")
        o = row // _ci(inner) if inner > 1 else row
        i = row % _ci(inner) if inner > 1 else _ci(0)
        pos = K.minimum(K.maximum(to_int(id3[o, j, i]), _ci(0)), _ci(n - 1))
        body = [K.For(t, _ci(n), [K.Store(dx3.buf, dx3.flat_index((o, t, i)),
                                          C(0, dx.dtype))], "serial"),
                K.For(j, _ci(k), [K.Store(dx3.buf, dx3.flat_index((o, pos, i)),
                                          K.cast(dx.dtype, dy3[o, j, i]))], "serial")]
        ctx.emit(K.Kernel("__K__", collect_buffers(body), row, rows, body,
                          cost=rows * (n + k) * 2, note="topk_backward"))

    def reference(self, a, inputs, is_train=False):
        dy, idx, x = inputs
        rows, outer, _n, inner = _np_rows(np.zeros(x.shape, dy.dtype), a.axis)
        dyr, *_ = _np_rows(dy, a.axis)
        idr, *_ = _np_rows(idx, a.axis)
        np.put_along_axis(rows, idr.astype(np.int64), dyr, axis=-1)
        return [_np_unrows(rows, outer, inner, x.shape)]
