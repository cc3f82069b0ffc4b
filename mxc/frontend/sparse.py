"""``mx.nd.sparse``: minimal CSR and row-sparse NDArrays.

They hold their stored values and index arrays as NDArrays (``data``, ``indices``,
``indptr``) and convert to and from dense arrays; save/load keeps them sparse. Operators on
them run on the dense form (MXNet's storage fallback), so results are dense NDArrays.
"""
from __future__ import annotations

import numpy as np

from ..base import MXNetError
from ..ir import dtypes as _dt
from .context import as_context, current_context
from .ndarray import NDArray, _aligned, _wrap, to_dtype
from .ndarray import array as _dense_array

__all__ = [
    "BaseSparseNDArray",
    "CSRNDArray",
    "RowSparseNDArray",
    "array",
    "csr_matrix",
    "empty",
    "row_sparse_array",
    "zeros",
]

_IDX = _dt.int64


def _nd(a, dt=None, ctx=None) -> NDArray:
    a = np.asarray(a)
    d = dt or _dt.BY_NAME[a.dtype.name]
    out = _aligned(a.shape, d)
    np.copyto(out, a, casting="unsafe")
    return _wrap(out, d, ctx)


class BaseSparseNDArray(NDArray):
    """Common part of the sparse arrays: shape, dtype, context, dense conversion."""

    __slots__ = ()

    def _init(self, shape, dt, ctx, data: NDArray, indices: NDArray, indptr=None) -> None:
        self._data = None
        self._dt = dt
        self._ctx = ctx
        self.writable = True
        self.__dict__["_shape"] = tuple(int(s) for s in shape)
        self.__dict__["_sp"] = (data, indices, indptr)

    @property
    def shape(self) -> tuple:
        return self.__dict__["_shape"]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def data(self) -> NDArray:
        return self.__dict__["_sp"][0]

    @property
    def indices(self) -> NDArray:
        return self.__dict__["_sp"][1]

    def _float_view(self):
        return self._dense_np()

    def asnumpy(self) -> np.ndarray:
        return self._dense_np()

    def tostype(self, stype: str):
        if stype == "default":
            d = self._dense_np()
            return _wrap(d, self._dt, self._ctx)
        if stype == self.stype:
            return self.copy()
        return from_dense(self.tostype("default"), stype)

    def copy(self):
        return from_record_parts(self.stype, self.shape, self.data.copy(), self.indices.copy(),
                                 self.indptr.copy() if self.stype == "csr" else None, self._ctx)

    def copyto(self, other):
        if isinstance(other, NDArray) and not isinstance(other, BaseSparseNDArray):
            other[:] = self.tostype("default")
            return other
        return self.copy()

    def astype(self, dtype, copy: bool = True):
        dt = to_dtype(dtype)
        if not copy and dt is self._dt:
            return self
        return from_record_parts(self.stype, self.shape, self.data.astype(dt), self.indices,
                                 self.indptr if self.stype == "csr" else None, self._ctx)

    def reshape(self, *shape, **kwargs):
        raise MXNetError(f"reshape is not supported for {type(self).__name__}")

    def __repr__(self) -> str:
        shape_info = "x".join(str(d) for d in self.shape)
        return f"\n<{type(self).__name__} {shape_info} @{self._ctx}>"

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1) and self.stype == "csr":
            dense = self._dense_np()[key]
            return from_dense(_wrap(np.ascontiguousarray(dense), self._dt, self._ctx), "csr")
        raise MXNetError(f"{type(self).__name__} only supports row slicing with step 1")

    def __setitem__(self, key, value):
        if not (isinstance(key, slice) and key == slice(None)):
            raise MXNetError(f"{type(self).__name__} only supports assignment to [:]")
        src = value if isinstance(value, NDArray) else _dense_array(value, dtype=self._dt)
        new = from_dense(src.tostype("default") if src.stype != "default" else src,
                         self.stype)
        if new.shape != self.shape:
            raise MXNetError(f"cannot assign shape {new.shape} to {self.shape}")
        self.__dict__["_sp"] = new.__dict__["_sp"]

    def __getstate__(self):
        return {"stype": self.stype, "shape": self.shape, "data": self.data.asnumpy(),
                "indices": self.indices.asnumpy(),
                "indptr": self.indptr.asnumpy() if self.stype == "csr" else None}

    def __reduce__(self):
        return (_unpickle_sparse, (self.__getstate__(),))


def _unpickle_sparse(st):
    return from_record_parts(st["stype"], st["shape"], _nd(st["data"]), _nd(st["indices"]),
                             _nd(st["indptr"]) if st["indptr"] is not None else None,
                             current_context())


class CSRNDArray(BaseSparseNDArray):
    """Compressed sparse row matrix: ``data`` (nnz), ``indices`` (nnz columns), ``indptr``."""

    __slots__ = ()
    stype = "csr"

    @property
    def indptr(self) -> NDArray:
        return self.__dict__["_sp"][2]

    def _dense_np(self) -> np.ndarray:
        out = _aligned(self.shape, self._dt)
        out[...] = 0
        ptr = self.indptr._data.astype(np.int64)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(ptr))
        out[rows, self.indices._data.astype(np.int64)] = self.data._data
        return out

    def asscipy(self):
        import scipy.sparse as spsp
        return spsp.csr_matrix((self.data.asnumpy(), self.indices.asnumpy(),
                                self.indptr.asnumpy()), shape=self.shape)


class RowSparseNDArray(BaseSparseNDArray):
    """Row-sparse array: the rows ``indices`` hold ``data``; every other row is zero."""

    __slots__ = ()
    stype = "row_sparse"

    @property
    def indptr(self):
        raise AttributeError("RowSparseNDArray has no indptr")

    def _dense_np(self) -> np.ndarray:
        out = _aligned(self.shape, self._dt)
        out[...] = 0
        if self.indices.size:
            out[self.indices._data.astype(np.int64)] = self.data._data
        return out

    def retain(self, indices):
        keep = np.asarray(indices.asnumpy() if isinstance(indices, NDArray) else indices,
                          np.int64)
        idx = self.indices._data.astype(np.int64)
        mask = np.isin(idx, keep)
        return from_record_parts("row_sparse", self.shape, _nd(self.data._data[mask]),
                                 _nd(idx[mask]), None, self._ctx)


def from_record_parts(stype, shape, data: NDArray, indices: NDArray, indptr, ctx):
    cls = CSRNDArray if stype == "csr" else RowSparseNDArray
    a = object.__new__(cls)
    a._init(shape, data._dt, ctx or current_context(), data, indices, indptr)
    return a


def from_record(r):
    """A sparse NDArray from an ``ir.formats.SparseRecord``."""
    from ..ir.formats import BF16Array
    if isinstance(r.data, BF16Array):
        d = _wrap(np.array(r.data.bits), _dt.bfloat16, current_context())
    else:
        d = _nd(r.data)
    return from_record_parts(r.stype, r.shape, d, _nd(r.indices),
                             _nd(r.indptr) if r.indptr is not None else None,
                             current_context())


def from_dense(x: NDArray, stype: str):
    """Convert a dense NDArray to ``stype`` ('csr' needs 2-d)."""
    d = x._data
    if stype == "csr":
        if d.ndim != 2:
            raise MXNetError(f"csr needs a 2-d array, got shape {x.shape}")
        nz = d != 0
        rows, cols = np.nonzero(nz)
        indptr = np.zeros(d.shape[0] + 1, np.int64)
        np.cumsum(nz.sum(axis=1), out=indptr[1:])
        return from_record_parts("csr", d.shape, _nd(d[rows, cols], x._dt),
                                 _nd(cols.astype(np.int64)), _nd(indptr), x._ctx)
    if stype == "row_sparse":
        if d.ndim == 0:
            raise MXNetError("row_sparse needs at least 1 dimension")
        flat = d.reshape(d.shape[0], -1)
        rows = np.nonzero(np.any(flat != 0, axis=1))[0].astype(np.int64)
        return from_record_parts("row_sparse", d.shape, _nd(d[rows], x._dt), _nd(rows), None,
                                 x._ctx)
    if stype == "default":
        return x.copy()
    raise MXNetError(f"unknown storage type {stype!r}")


def _prepare_dtype(src, dtype):
    if dtype is not None:
        return to_dtype(dtype)
    if isinstance(src, NDArray):
        return src._dt
    if isinstance(src, np.ndarray) and src.dtype.name in _dt.BY_NAME:
        return _dt.BY_NAME[src.dtype.name]
    return _dt.float32


def _vals(src, dt):
    if isinstance(src, NDArray):
        return src.asnumpy().astype(dt.np)
    return np.asarray(src, dtype=dt.np)


def csr_matrix(arg1, shape=None, ctx=None, dtype=None):
    """A CSRNDArray from (data, indices, indptr), (M, N), a dense array or a scipy matrix."""
    ctx = as_context(ctx)
    if isinstance(arg1, tuple) and len(arg1) == 2 and all(isinstance(v, int) for v in arg1):
        return zeros("csr", arg1, ctx=ctx, dtype=dtype)
    if isinstance(arg1, tuple) and len(arg1) == 3:
        data, indices, indptr = arg1
        dt = _prepare_dtype(data, dtype)
        ind = np.asarray(indices.asnumpy() if isinstance(indices, NDArray) else indices,
                         np.int64)
        ptr = np.asarray(indptr.asnumpy() if isinstance(indptr, NDArray) else indptr,
                         np.int64)
        if shape is None:
            if ind.size == 0:
                raise ValueError("invalid shape")
            shape = (len(ptr) - 1, int(ind.max()) + 1)
        return from_record_parts("csr", shape, _nd(_vals(data, dt), dt), _nd(ind), _nd(ptr),
                                 ctx)
    if hasattr(arg1, "tocsr") and hasattr(arg1, "indptr"):
        m = arg1.tocsr()
        m.sort_indices()
        return csr_matrix((m.data, m.indices, m.indptr), shape=m.shape, ctx=ctx,
                          dtype=dtype if dtype is not None else m.data.dtype)
    dense = arg1 if isinstance(arg1, NDArray) else _dense_array(
        arg1, ctx=ctx, dtype=_prepare_dtype(arg1, dtype))
    if isinstance(dense, BaseSparseNDArray):
        dense = dense.tostype("default")
    if dtype is not None:
        dense = dense.astype(dtype)
    return from_dense(dense, "csr")


def row_sparse_array(arg1, shape=None, ctx=None, dtype=None):
    """A RowSparseNDArray from (data, indices), a shape tuple or a dense array."""
    ctx = as_context(ctx)
    if isinstance(arg1, tuple) and len(arg1) >= 1 and all(isinstance(v, int) for v in arg1):
        return zeros("row_sparse", arg1, ctx=ctx, dtype=dtype)
    if isinstance(arg1, tuple) and len(arg1) == 2:
        data, indices = arg1
        dt = _prepare_dtype(data, dtype)
        vals = _vals(data, dt)
        ind = np.asarray(indices.asnumpy() if isinstance(indices, NDArray) else indices,
                         np.int64)
        if shape is None:
            if ind.size == 0:
                raise ValueError("invalid shape")
            shape = (int(ind.max()) + 1,) + vals.shape[1:]
        return from_record_parts("row_sparse", shape, _nd(vals, dt), _nd(ind), None, ctx)
    dense = arg1 if isinstance(arg1, NDArray) else _dense_array(
        arg1, ctx=ctx, dtype=_prepare_dtype(arg1, dtype))
    if isinstance(dense, BaseSparseNDArray):
        dense = dense.tostype("default")
    if dtype is not None:
        dense = dense.astype(dtype)
    return from_dense(dense, "row_sparse")


def zeros(stype, shape, ctx=None, dtype=None, **kwargs):
    """An all-zero array of storage type ``stype``."""
    ctx = as_context(ctx)
    dt = to_dtype(dtype if dtype is not None else np.float32)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if stype == "default":
        from .ndarray import zeros as dz
        return dz(shape, ctx=ctx, dtype=dt)
    if stype == "csr":
        if len(shape) != 2:
            raise MXNetError("csr needs a 2-d shape")
        return from_record_parts("csr", shape, _nd(np.zeros(0, dt.np), dt),
                                 _nd(np.zeros(0, np.int64)),
                                 _nd(np.zeros(shape[0] + 1, np.int64)), ctx)
    if stype == "row_sparse":
        return from_record_parts("row_sparse", shape,
                                 _nd(np.zeros((0,) + shape[1:], dt.np), dt),
                                 _nd(np.zeros(0, np.int64)), None, ctx)
    raise MXNetError(f"unknown storage type {stype!r}")


def empty(stype, shape, ctx=None, dtype=None):
    return zeros(stype, shape, ctx=ctx, dtype=dtype)


def array(source_array, ctx=None, dtype=None):
    """A sparse array from a sparse NDArray or a scipy csr matrix."""
    if isinstance(source_array, BaseSparseNDArray):
        a = source_array.copy() if dtype is None else source_array.astype(dtype)
        if ctx is not None:
            a._ctx = as_context(ctx)
        return a
    if hasattr(source_array, "tocsr"):
        return csr_matrix(source_array, ctx=ctx, dtype=dtype)
    raise ValueError("Unexpected source_array type: expected a sparse NDArray or a scipy "
                     "csr matrix")
