"""``mx.io``: MXNet 1.x's data iterators.

``DataDesc``/``DataBatch``/``DataIter`` are the protocol Module and the training loops use;
``NDArrayIter`` iterates over in-memory arrays with MXNet's exact batching, padding
('pad'), dropping ('discard') and carrying over ('roll_over') of the last batch;
``ResizeIter`` and ``PrefetchingIter`` wrap other iterators. The C++ iterators of MXNet are
re-implemented in Python where they are simple: ``CSVIter`` and ``MNISTIter`` follow
MXNet's batch loader (``round_batch`` wrap-around, padding counts, 1-D labels); the image
record iterators raise a clear error for now.
"""
from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import threading
import weakref
from collections import OrderedDict, namedtuple

import numpy as np

from ..base import MXNetError

_log = logging.getLogger(__name__)

__all__ = [
    "CSVIter",
    "DataBatch",
    "DataDesc",
    "DataIter",
    "ImageDetRecordIter",
    "ImageRecordInt8Iter",
    "ImageRecordIter",
    "ImageRecordUInt8Iter",
    "LibSVMIter",
    "MNISTIter",
    "MXDataIter",
    "NDArrayIter",
    "PrefetchingIter",
    "ResizeIter",
]

mx_real_t = np.float32


def _nd():
    from . import ndarray
    return ndarray


def _is_ndarray(x) -> bool:
    from .ndarray import NDArray
    return isinstance(x, NDArray)


def _is_csr(x) -> bool:
    return getattr(x, "stype", "default") == "csr"


def _is_nd_like(x) -> bool:
    """An mxc NDArray, dense or sparse."""
    return _is_ndarray(x) or getattr(x, "stype", None) in ("csr", "row_sparse")


class IOError_(MXNetError, AssertionError):
    """A failed check of an iterator (an AssertionError in MXNet; both classes here)."""


# ------------------------------------------------------------------------------------------
# descriptors and batches
# ------------------------------------------------------------------------------------------
class DataDesc(namedtuple("DataDesc", ["name", "shape"])):
    """Name, shape, dtype and layout of one input (``layout`` 'NCHW' by default; the batch
    axis is the position of 'N')."""

    def __new__(cls, name, shape, dtype=mx_real_t, layout="NCHW"):
        ret = super().__new__(cls, name, shape)
        ret.dtype = dtype
        ret.layout = layout
        return ret

    def __repr__(self):
        return f"DataDesc[{self.name},{self.shape},{self.dtype},{self.layout}]"

    def __getnewargs__(self):
        return (self.name, self.shape, self.dtype, self.layout)

    @staticmethod
    def get_batch_axis(layout):
        """The batch axis of ``layout`` (0 when None, -1 when there is no 'N')."""
        if layout is None:
            return 0
        return layout.find("N")

    @staticmethod
    def get_list(shapes, types):
        """DataDescs from ``[(name, shape)]`` and optionally ``[(name, dtype)]``."""
        if types is not None:
            type_dict = dict(types)
            return [DataDesc(x[0], x[1], type_dict[x[0]]) for x in shapes]
        return [DataDesc(x[0], x[1]) for x in shapes]


class DataBatch:
    """One batch: ``data`` and ``label`` (lists of NDArrays), ``pad`` (padded examples at
    the end), ``index``, ``bucket_key``, ``provide_data``/``provide_label``."""

    def __init__(self, data, label=None, pad=None, index=None, bucket_key=None,
                 provide_data=None, provide_label=None):
        if data is not None and not isinstance(data, (list, tuple)):
            raise IOError_("Data must be list of NDArrays")
        if label is not None and not isinstance(label, (list, tuple)):
            raise IOError_("Label must be list of NDArrays")
        self.data = data
        self.label = label
        self.pad = pad
        self.index = index
        self.bucket_key = bucket_key
        self.provide_data = provide_data
        self.provide_label = provide_label

    def __str__(self):
        data_shapes = [d.shape for d in self.data]
        label_shapes = [lb.shape for lb in self.label] if self.label else None
        return f"{self.__class__.__name__}: data shapes: {data_shapes} label shapes: " \
               f"{label_shapes}"


class DataIter:
    """Base class of data iterators: ``next()`` returns a :class:`DataBatch` or raises
    ``StopIteration``; ``reset()`` rewinds."""

    def __init__(self, batch_size=0):
        self.batch_size = batch_size

    def __iter__(self):
        return self

    def reset(self):
        """Rewind to the first batch."""

    def next(self):
        """The next batch."""
        if self.iter_next():
            return DataBatch(data=self.getdata(), label=self.getlabel(), pad=self.getpad(),
                             index=self.getindex())
        raise StopIteration

    def __next__(self):
        return self.next()

    def iter_next(self):
        """Move to the next batch; False at the end."""

    def getdata(self):
        """Data of the current batch (list of NDArrays)."""

    def getlabel(self):
        """Label of the current batch (list of NDArrays)."""

    def getindex(self):
        """Example indices of the current batch (or None)."""
        return

    def getpad(self):
        """Number of padding examples in the current batch."""


class ResizeIter(DataIter):
    """Make ``data_iter`` yield exactly ``size`` batches per epoch (restarting it when it
    runs out; ``reset_internal`` resets it with this iterator)."""

    def __init__(self, data_iter, size, reset_internal=True):
        super().__init__()
        self.data_iter = data_iter
        self.size = size
        self.reset_internal = reset_internal
        self.cur = 0
        self.current_batch = None
        self.provide_data = data_iter.provide_data
        self.provide_label = data_iter.provide_label
        self.batch_size = data_iter.batch_size
        if hasattr(data_iter, "default_bucket_key"):
            self.default_bucket_key = data_iter.default_bucket_key

    def reset(self):
        self.cur = 0
        if self.reset_internal:
            self.data_iter.reset()

    def iter_next(self):
        if self.cur == self.size:
            return False
        try:
            self.current_batch = self.data_iter.next()
        except StopIteration:
            self.data_iter.reset()
            self.current_batch = self.data_iter.next()
        self.cur += 1
        return True

    def getdata(self):
        return self.current_batch.data

    def getlabel(self):
        return self.current_batch.label

    def getindex(self):
        return self.current_batch.index

    def getpad(self):
        return self.current_batch.pad


class PrefetchingIter(DataIter):
    """Fetch the batches of one or more iterators in background threads; the batches of
    several iterators are joined (data and labels concatenated as lists).
    ``rename_data``/``rename_label``: per iterator, a dict old name -> new name."""

    def __init__(self, iters, rename_data=None, rename_label=None):
        super().__init__()
        if not isinstance(iters, list):
            iters = [iters]
        self.n_iter = len(iters)
        if self.n_iter == 0:
            raise IOError_("PrefetchingIter needs at least one iterator")
        self.iters = iters
        self.rename_data = rename_data
        self.rename_label = rename_label
        self.batch_size = self.provide_data[0][1][0]
        self.data_ready = [threading.Event() for _ in range(self.n_iter)]
        self.data_taken = [threading.Event() for _ in range(self.n_iter)]
        for e in self.data_taken:
            e.set()
        self.started = True
        self.current_batch = None
        self.next_batch = [None for _ in range(self.n_iter)]
        self._errors = [None for _ in range(self.n_iter)]

        # the threads hold the iterator weakly, so an unreferenced iterator is collected
        # (its __del__ stops them)
        ref = weakref.ref(self)
        taken, ready = self.data_taken, self.data_ready

        def prefetch_func(i):
            while True:
                taken[i].wait()
                obj = ref()
                if obj is None or not obj.started:
                    break
                try:
                    obj.next_batch[i] = obj.iters[i].next()
                    obj._errors[i] = None
                except StopIteration:
                    obj.next_batch[i] = None
                except Exception as e:  # noqa: BLE001 - surfaced in iter_next
                    obj.next_batch[i] = None
                    obj._errors[i] = e
                del obj
                taken[i].clear()
                ready[i].set()

        self.prefetch_threads = [threading.Thread(target=prefetch_func, args=[i], daemon=True)
                                 for i in range(self.n_iter)]
        for thread in self.prefetch_threads:
            thread.start()

    def close(self):
        """Stop the prefetching threads."""
        if not getattr(self, "started", False):
            return
        self.started = False
        for e in self.data_taken:
            e.set()
        for thread in self.prefetch_threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def _renamed(self, attr, renames):
        if renames is None:
            return list(itertools.chain.from_iterable(getattr(i, attr) for i in self.iters))
        return [DataDesc(r[x.name], x.shape, x.dtype) if isinstance(x, DataDesc)
                else DataDesc(*x) for r, i in zip(renames, self.iters) for x in getattr(i, attr)]

    @property
    def provide_data(self):
        return self._renamed("provide_data", self.rename_data)

    @property
    def provide_label(self):
        return self._renamed("provide_label", self.rename_label)

    def reset(self):
        for e in self.data_ready:
            e.wait()
        for i in self.iters:
            i.reset()
        for e in self.data_ready:
            e.clear()
        for e in self.data_taken:
            e.set()

    def iter_next(self):
        for e in self.data_ready:
            e.wait()
        for err in self._errors:
            if err is not None:
                raise err
        if self.next_batch[0] is None:
            for b in self.next_batch:
                if b is not None:
                    raise IOError_("Number of entry mismatches between iterators")
            return False
        for batch in self.next_batch:
            if batch is None or batch.pad != self.next_batch[0].pad:
                raise IOError_("Number of entry mismatches between iterators")
        self.current_batch = DataBatch([d for b in self.next_batch for d in b.data],
                                       [lb for b in self.next_batch for lb in (b.label or [])],
                                       self.next_batch[0].pad, self.next_batch[0].index,
                                       provide_data=self.provide_data,
                                       provide_label=self.provide_label)
        for e in self.data_ready:
            e.clear()
        for e in self.data_taken:
            e.set()
        return True

    def next(self):
        if self.iter_next():
            return self.current_batch
        raise StopIteration

    def getdata(self):
        return self.current_batch.data

    def getlabel(self):
        return self.current_batch.label

    def getindex(self):
        return self.current_batch.index

    def getpad(self):
        return self.current_batch.pad


# ------------------------------------------------------------------------------------------
# NDArrayIter
# ------------------------------------------------------------------------------------------
def _to_nd(v, name):
    """An input value as an NDArray (MXNet's ``array(v)``: float32 unless an NDArray)."""
    if _is_nd_like(v):
        return v
    nd = _nd()
    try:
        import scipy.sparse as spsp
        if spsp.issparse(v):
            from . import sparse
            return sparse.array(v)
    except ImportError:
        pass
    try:
        return nd.array(v)
    except Exception:  # noqa: BLE001 - MXNet turns any failure into this TypeError
        raise TypeError(f"Invalid type '{type(v)}' for {name}, should be NDArray, "
                        "numpy.ndarray or h5py.Dataset") from None


def _init_data(data, allow_empty, default_name):
    """Inputs in canonical form: a name-sorted list of (name, NDArray)."""
    if data is None and not allow_empty:
        raise IOError_("data must not be None")
    if data is None:
        data = []
    if isinstance(data, np.ndarray) or _is_nd_like(data) or _is_scipy_sparse(data):
        data = [data]
    if isinstance(data, (list, tuple)):
        data = list(data)
        if not allow_empty and len(data) == 0:
            raise IOError_("data must not be empty")
        if len(data) == 1:
            data = OrderedDict([(default_name, data[0])])
        else:
            data = OrderedDict([(f"_{i}_{default_name}", d) for i, d in enumerate(data)])
    if not isinstance(data, dict):
        raise TypeError("Input must be NDArray, numpy.ndarray, h5py.Dataset a list of them or "
                        "dict with them as values")
    data = dict(data)
    for k, v in data.items():
        data[k] = _to_nd(v, k)
    return sorted(data.items())


def _is_scipy_sparse(x) -> bool:
    try:
        import scipy.sparse as spsp
    except ImportError:
        return False
    return spsp.issparse(x)


def _has_instance_csr(data) -> bool:
    return any(_is_csr(arr) for _, arr in data)


def _getdata_by_idx(data, idx):
    """The inputs reordered by ``idx`` (dtype kept; MXNet's version turns them float32)."""
    nd = _nd()
    out = []
    for k, v in data:
        if _is_csr(v):
            from . import sparse
            dense = v.tostype("default").asnumpy()[idx]
            out.append((k, sparse.from_dense(nd.array(dense, dtype=v.dtype), "csr")))
        else:
            out.append((k, nd.array(v.asnumpy()[idx], ctx=v.context, dtype=v.dtype)))
    return out


def _concat(first, second):
    if not first or not second:
        return first if first else second
    if len(first) != len(second):
        raise IOError_("data source should contain the same size")
    nd = _nd()
    return [nd.concatenate([a, b], axis=0) for a, b in zip(first, second)]


def _tile(data, repeats):
    if not data:
        return []
    nd = _nd()
    out = []
    for d in data:
        reps = [1] * len(d.shape)
        reps[0] = repeats
        out.append(nd.array(np.tile(d.asnumpy(), reps), ctx=d.context, dtype=d.dtype))
    return out


class NDArrayIter(DataIter):
    """Iterate over NDArrays / numpy arrays (or lists or dicts of them) in batches.

    ``last_batch_handle``: 'pad' fills the last batch with examples from the start (its
    ``pad`` says how many), 'discard' drops it, 'roll_over' carries the leftover examples
    into the first batch of the next epoch. Unnamed inputs are called ``data`` /
    ``softmax_label`` (``_0_data``, ``_1_data``, ... for lists); dict inputs are ordered by
    name. ``shuffle`` permutes the examples with numpy's global generator at every reset.
    """

    def __init__(self, data, label=None, batch_size=1, shuffle=False, last_batch_handle="pad",
                 data_name="data", label_name="softmax_label"):
        super().__init__(batch_size)
        if last_batch_handle not in ("pad", "discard", "roll_over"):
            raise IOError_(f"last_batch_handle must be 'pad', 'discard' or 'roll_over', got "
                           f"{last_batch_handle!r}")
        self.data = _init_data(data, allow_empty=False, default_name=data_name)
        self.label = _init_data(label, allow_empty=True, default_name=label_name)
        if (_has_instance_csr(self.data) or _has_instance_csr(self.label)) and \
                last_batch_handle != "discard":
            raise NotImplementedError("`NDArrayIter` only supports ``CSRNDArray`` with "
                                      "`last_batch_handle` set to `discard`.")
        n = self.data[0][1].shape[0]
        for k, v in self.data + self.label:
            if v.shape[0] != n:
                raise IOError_(f"NDArrayIter: input '{k}' has {v.shape[0]} examples, "
                               f"'{self.data[0][0]}' has {n}")
        self.idx = np.arange(n)
        self.shuffle = shuffle
        self.last_batch_handle = last_batch_handle
        self.batch_size = batch_size
        self.cursor = -self.batch_size
        self.num_data = self.idx.shape[0]
        self.reset()
        self.data_list = [x[1] for x in self.data] + [x[1] for x in self.label]
        self.num_source = len(self.data_list)
        # used for 'roll_over'
        self._cache_data = None
        self._cache_label = None

    @property
    def provide_data(self):
        """DataDescs of the data: (batch_size, *example shape)."""
        return [DataDesc(k, tuple([self.batch_size] + list(v.shape[1:])), v.dtype)
                for k, v in self.data]

    @property
    def provide_label(self):
        """DataDescs of the labels."""
        return [DataDesc(k, tuple([self.batch_size] + list(v.shape[1:])), v.dtype)
                for k, v in self.label]

    def hard_reset(self):
        """Rewind ignoring any rolled-over examples."""
        if self.shuffle:
            self._shuffle_data()
        self.cursor = -self.batch_size
        self._cache_data = None
        self._cache_label = None

    def reset(self):
        """Rewind (keeping, with 'roll_over', the leftover examples of the last batch)."""
        if self.shuffle:
            self._shuffle_data()
        if self.last_batch_handle == "roll_over" and \
                self.num_data - self.batch_size < self.cursor < self.num_data:
            # (cursor - num_data) examples are carried into the next epoch's first batch
            self.cursor = self.cursor - self.num_data - self.batch_size
        else:
            self.cursor = -self.batch_size

    def iter_next(self):
        self.cursor += self.batch_size
        return self.cursor < self.num_data

    def next(self):
        if not self.iter_next():
            raise StopIteration
        data = self.getdata()
        label = self.getlabel()
        # an incomplete last batch ('discard', 'roll_over') ends the epoch; kept for roll_over
        if data[0].shape[0] != self.batch_size:
            self._cache_data = data
            self._cache_label = label
            raise StopIteration
        return DataBatch(data=data, label=label, pad=self.getpad(), index=None)

    def _getdata(self, data_source, start=None, end=None):
        if start is None and end is None:
            raise IOError_("should at least specify start or end")
        start = start if start is not None else 0
        if end is None:
            end = data_source[0][1].shape[0] if data_source else 0
        s = slice(start, end)
        return [x[1][s] for x in data_source]

    def _batchify(self, data_source):
        if not self.cursor < self.num_data:
            raise IOError_("DataIter needs reset.")
        # first batch of the next epoch with 'roll_over'
        if self.last_batch_handle == "roll_over" and -self.batch_size < self.cursor < 0:
            if self._cache_data is None and self._cache_label is None:
                raise IOError_("next epoch should have cached data")
            cache_data = self._cache_data if self._cache_data is not None else self._cache_label
            second_data = self._getdata(data_source, end=self.cursor + self.batch_size)
            if self._cache_data is not None:
                self._cache_data = None
            else:
                self._cache_label = None
            return _concat(cache_data, second_data)
        # last batch with 'pad'
        if self.last_batch_handle == "pad" and self.cursor + self.batch_size > self.num_data:
            pad = self.batch_size - self.num_data + self.cursor
            first_data = self._getdata(data_source, start=self.cursor)
            if pad > self.num_data:
                repeats = pad // self.num_data
                second_data = _tile(self._getdata(data_source, end=self.num_data), repeats)
                if pad % self.num_data != 0:
                    second_data = _concat(second_data,
                                          self._getdata(data_source, end=pad % self.num_data))
            else:
                second_data = self._getdata(data_source, end=pad)
            return _concat(first_data, second_data)
        # normal case (and the incomplete last batch)
        end_idx = min(self.cursor + self.batch_size, self.num_data)
        return self._getdata(data_source, self.cursor, end_idx)

    def getdata(self):
        return self._batchify(self.data)

    def getlabel(self):
        return self._batchify(self.label)

    def getpad(self):
        if self.last_batch_handle == "pad" and self.cursor + self.batch_size > self.num_data:
            return self.cursor + self.batch_size - self.num_data
        if self.last_batch_handle == "roll_over" and -self.batch_size < self.cursor < 0:
            return -self.cursor
        return 0

    def _shuffle_data(self):
        np.random.shuffle(self.idx)
        self.data = _getdata_by_idx(self.data, self.idx)
        self.label = _getdata_by_idx(self.label, self.idx)


# ------------------------------------------------------------------------------------------
# MXNet's C++ iterators, in Python
# ------------------------------------------------------------------------------------------
class MXDataIter(DataIter):
    """Base of the iterators MXNet implements in C++ (here: over in-memory examples).

    It follows MXNet's BatchLoader: with ``round_batch`` the last incomplete batch is
    completed from the start of the data (``pad`` = that count) and the next epoch then
    starts after those examples; without it, the batch's ``pad`` rows keep the previous
    batch's values. Labels of shape (batch, 1) are returned as (batch,), as MXNet does.
    """

    def __init__(self, data, label, batch_size, round_batch=True, data_name="data",
                 label_name="softmax_label", dtype=None):
        super().__init__(batch_size)
        if batch_size <= 0:
            raise IOError_(f"batch_size must be positive, got {batch_size}")
        self._data = data       # (N, *shape) numpy
        self._label = label     # (N, *shape) numpy
        self._round_batch = bool(round_batch)
        self._pos = 0
        self._num_overflow = 0
        self._buf_data = np.zeros((batch_size,) + data.shape[1:], data.dtype)
        self._buf_label = np.zeros((batch_size,) + label.shape[1:], label.dtype)
        self._cur = None
        self._index = None
        ls = self._label_shape()
        self.provide_data = [DataDesc(data_name, (batch_size,) + data.shape[1:], data.dtype)]
        self.provide_label = [DataDesc(label_name, ls, label.dtype)]

    def _label_shape(self):
        shape = (self.batch_size,) + self._label.shape[1:]
        if len(shape) > 1 and shape[1] == 1:
            shape = (shape[0],) + shape[2:]
        return shape

    def reset(self):
        if not self._round_batch or self._num_overflow == 0:
            self._pos = 0
        else:
            self._num_overflow = 0

    def iter_next(self):
        self._cur = None
        if self._num_overflow != 0:
            return False
        n = self._data.shape[0]
        if self._pos >= n:
            return False
        bs = self.batch_size
        take = min(bs, n - self._pos)
        index = np.zeros(bs, np.uint64)
        self._buf_data[:take] = self._data[self._pos:self._pos + take]
        self._buf_label[:take] = self._label[self._pos:self._pos + take]
        index[:take] = np.arange(self._pos, self._pos + take)
        self._pos += take
        pad = 0
        if take < bs:
            if self._round_batch:
                extra = bs - take
                if extra > n:
                    raise MXNetError("number of input must be bigger than batch size")
                self._buf_data[take:] = self._data[:extra]
                self._buf_label[take:] = self._label[:extra]
                index[take:] = np.arange(extra)
                self._num_overflow = extra
                self._pos = extra
                pad = extra
            else:
                pad = bs - take
        nd = _nd()
        label = self._buf_label.reshape(self._label_shape())
        self._cur = DataBatch(data=[nd.array(self._buf_data, dtype=self._buf_data.dtype)],
                              label=[nd.array(label, dtype=label.dtype)], pad=pad,
                              index=index)
        return True

    def next(self):
        if self.iter_next():
            return self._cur
        raise StopIteration

    def getdata(self):
        return self._cur.data[0]

    def getlabel(self):
        return self._cur.label[0]

    def getindex(self):
        return self._cur.index

    def getpad(self):
        return self._cur.pad


def _parse_shape(shape):
    if isinstance(shape, str):
        shape = shape.strip().strip("()[]")
        return tuple(int(s) for s in shape.split(",") if s.strip())
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(s) for s in shape)


def _read_csv(path, shape, dtype, what):
    size = int(np.prod(shape))
    rows = []
    try:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                fields = [x for x in line.split(",")]
                if fields and fields[-1].strip() == "":
                    fields = fields[:-1]
                if len(fields) != size:
                    raise MXNetError(f"The data size in CSV do not match size of shape: "
                                     f"specified shape={shape}, the csv row-length="
                                     f"{len(fields)} ({path} line {lineno})")
                try:
                    rows.append([float(x) for x in fields])
                except ValueError:
                    raise MXNetError(f"CSVIter: cannot parse {what} '{path}' line {lineno}: "
                                     f"{line!r}") from None
    except OSError as e:
        raise MXNetError(f"CSVIter: cannot open {what} '{path}': {e}") from None
    arr = np.asarray(rows, dtype=np.float64).reshape((len(rows),) + tuple(shape))
    return arr.astype(dtype)


class CSVIter(MXDataIter):
    """Batches from CSV files: each row of ``data_csv`` is one example of ``data_shape``;
    ``label_csv`` (optional, labels are 0 without it) holds one label of ``label_shape``
    per row. ``round_batch`` (default True) completes the last batch from the start.

    >>> it = mx.io.CSVIter(data_csv='data.csv', data_shape=(3,), batch_size=2)
    """

    def __init__(self, data_csv, data_shape, batch_size, label_csv="NULL", label_shape=(1,),
                 round_batch=True, dtype="float32", data_name="data",
                 label_name="softmax_label", prefetch_buffer=4, ctx="cpu", **kwargs):
        dt = np.dtype(dtype if dtype is not None else "float32")
        if dt.name not in ("float32", "int32", "int64"):
            raise MXNetError(f"CSVIter: dtype must be float32, int32 or int64, got {dt.name}")
        data_shape = _parse_shape(data_shape)
        label_shape = _parse_shape(label_shape)
        data = _read_csv(data_csv, data_shape, dt, "data_csv")
        if label_csv is None or label_csv == "NULL":
            label = np.zeros((data.shape[0], 1), dt)
        else:
            label = _read_csv(label_csv, label_shape, dt, "label_csv")
            if label.shape[0] < data.shape[0]:
                raise MXNetError("Data CSV's row is smaller than the number of rows in "
                                 "label_csv")
            label = label[:data.shape[0]]
        if data.shape[0] == 0:
            raise MXNetError(f"CSVIter: '{data_csv}' holds no rows")
        super().__init__(data, label, int(batch_size), round_batch, data_name, label_name)


def _open_maybe_gz(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise MXNetError(f"MNISTIter: cannot open '{path}': {e}") from None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw


class MNISTIter(MXDataIter):
    """Batches of the MNIST idx files ``image``/``label``: data (batch, 1, 28, 28) (or
    (batch, 784) with ``flat``) scaled by 1/256, labels (batch,). Incomplete last batches
    are dropped. ``shuffle`` (default True) permutes once at load with ``seed`` (a
    different permutation from MXNet's C++ generator). ``num_parts``/``part_index`` read a
    slice of the file."""

    def __init__(self, image="./train-images-idx3-ubyte", label="./train-labels-idx1-ubyte",
                 batch_size=128, shuffle=True, flat=False, seed=0, silent=False, num_parts=1,
                 part_index=0, data_name="data", label_name="softmax_label", **kwargs):
        img_raw = _open_maybe_gz(image)
        lab_raw = _open_maybe_gz(label)
        if len(img_raw) < 16 or len(lab_raw) < 8:
            raise MXNetError("invalid mnist format")
        _, count, rows, cols = np.frombuffer(img_raw[:16], ">i4")
        _, lcount = np.frombuffer(lab_raw[:8], ">i4")
        if not (0 <= part_index < num_parts):
            raise MXNetError(f"MNISTIter: part_index {part_index} out of range for num_parts "
                             f"{num_parts}")

        def part(n):
            return int(n / num_parts * part_index), int(n / num_parts * (part_index + 1))
        s, e = part(int(count))
        px = int(rows) * int(cols)
        body = img_raw[16 + s * px:16 + e * px]
        if len(body) != (e - s) * px:
            raise MXNetError(f"invalid mnist format: '{image}' is truncated")
        img = np.frombuffer(body, np.uint8).astype(np.float32).reshape(e - s, rows, cols)
        img *= np.float32(1.0 / 256.0)
        ls, le = part(int(lcount))
        lab = np.frombuffer(lab_raw[8 + ls:8 + le], np.uint8).astype(np.float32)
        if lab.shape[0] != le - ls:
            raise MXNetError(f"invalid mnist format: '{label}' is truncated")
        n = min(img.shape[0], lab.shape[0])
        img, lab = img[:n], lab[:n]
        if shuffle:
            perm = np.random.default_rng(int(seed)).permutation(n)
            img, lab = img[perm], lab[perm]
        data = img.reshape(n, rows * cols) if flat else img.reshape(n, 1, rows, cols)
        if not silent:
            _log.info("MNISTIter: load %d images, shuffle=%d, shape=%s", n, int(shuffle),
                         (batch_size,) + data.shape[1:])
        super().__init__(data, lab.reshape(n, 1), int(batch_size), False, data_name,
                         label_name)

    def iter_next(self):
        # MNISTIter drops the incomplete last batch
        if self._pos + self.batch_size > self._data.shape[0]:
            self._cur = None
            return False
        return super().iter_next()


def _unsupported(name):
    def __init__(self, *args, **kwargs):
        raise MXNetError(f"mx.io.{name} is not supported by mxc yet (it needs MXNet's C++ "
                         "image decoding pipeline); use mx.recordio with your own decoding, "
                         "or mx.io.NDArrayIter")
    return type(name, (MXDataIter,), {"__init__": __init__,
                                      "__doc__": "Not supported yet: raises MXNetError."})


ImageRecordIter = _unsupported("ImageRecordIter")
ImageRecordUInt8Iter = _unsupported("ImageRecordUInt8Iter")
ImageRecordInt8Iter = _unsupported("ImageRecordInt8Iter")
ImageDetRecordIter = _unsupported("ImageDetRecordIter")
LibSVMIter = _unsupported("LibSVMIter")
