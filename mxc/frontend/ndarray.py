"""``mx.nd``: MXNet 1.x's imperative NDArray.

An :class:`NDArray` owns (or views) one C-contiguous numpy array, 64-byte aligned when mxc
allocates it; compiled kernels read and write that memory directly (see
:mod:`.ndarray_ops`). Every array owns an engine variable (views share their base's): operators
and copies are *pushed* to the dependency engine (:mod:`mxc.runtime.engine`) with the variables
they read and write and return at once; ``asnumpy``/``asscalar``/``repr``/``wait_to_read``
wait for the pending writes, writes from Python wait for (or are pushed behind) the pending
work, ``waitall`` waits for everything (docs/engine.md). Semantics follow MXNet 1.9.1 in legacy (non-numpy) mode: ``mx.nd.array`` defaults to
float32 unless given an NDArray, integer indexing of a 1-d array gives shape ``(1,)``, basic
indexing returns a view when the selected elements are contiguous and a copy otherwise,
arithmetic with scalars runs the ``_*_scalar`` operators and between arrays the
``broadcast_*`` operators.

Every registered operator is reachable as ``mx.nd.<name>`` (and ``mx.nd.op.<name>``,
``mx.nd._internal.<name>``, ``mx.nd.contrib.<name>`` for ``_contrib_<name>`` ...), generated
from the registry on first use.
"""
from __future__ import annotations

import math
import operator
import os
import types
import warnings

import numpy as np

from ..base import MXNetError
from ..ir import dtypes as _dt
from ..ir import registry
from ..runtime import engine as _engine
from .context import Context, as_context, check_runnable, cpu, current_context, gpu  # noqa: F401
from .gpu_storage import GpuBuffer
from .util import is_np_shape

__all__ = [
    "NDArray",
    "add",
    "arange",
    "array",
    "bfloat16",
    "concatenate",
    "divide",
    "empty",
    "equal",
    "from_numpy",
    "full",
    "greater",
    "greater_equal",
    "lesser",
    "lesser_equal",
    "load",
    "load_frombuffer",
    "logical_and",
    "logical_or",
    "logical_xor",
    "maximum",
    "minimum",
    "modulo",
    "moveaxis",
    "multiply",
    "not_equal",
    "ones",
    "power",
    "save",
    "subtract",
    "true_divide",
    "waitall",
    "zeros",
]

mx_real_t = np.float32
#: MXNet's numpy spelling of bfloat16 (raw uint16 bits)
bfloat16 = np.dtype([("bfloat16", np.uint16)])
numeric_types = (float, int, np.generic)
integer_types = (int, np.integer)


# ------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------
_DT_CACHE: dict = {}


def to_dtype(x) -> _dt.DType:
    """An mxc DType from any MXNet dtype spelling (name, numpy dtype/type, code, bfloat16)."""
    try:
        return _DT_CACHE[x]
    except (KeyError, TypeError):
        pass
    d = _to_dtype(x)
    try:
        _DT_CACHE[x] = d
    except TypeError:
        pass
    return d


def _to_dtype(x) -> _dt.DType:
    if isinstance(x, _dt.DType):
        return x
    if x is None:
        return _dt.float32
    if isinstance(x, np.dtype) and x == bfloat16:
        return _dt.bfloat16
    try:
        return _dt.as_dtype(x)
    except ValueError as e:
        raise TypeError(str(e)) from None


def dtype_name(x) -> str:
    return to_dtype(x).name


def _np_type(d: _dt.DType):
    """What ``NDArray.dtype`` returns: the numpy scalar type (MXNet's _DTYPE_MX_TO_NP)."""
    if d.name == "bfloat16":
        return bfloat16
    return d.np.type


# ------------------------------------------------------------------------------------------
# engine
# ------------------------------------------------------------------------------------------
_Var = _engine.Var
_get_engine = _engine.get


def _push(fn, reads, writes, name: str = "") -> None:
    """Push ``fn`` on the process-wide engine (reads/writes: engine variables)."""
    _get_engine().push(fn, reads, writes, name=name)


def _push_dev(fn, reads, writes, name: str, ctx) -> None:
    """``_push`` on the engine workers of ``ctx`` (a gpu context: its copy/launch work)."""
    _get_engine().push(fn, reads, writes, name=name, device=ctx)


_CPU = Context("cpu", 0)


def _host_context() -> Context:
    """The current context for arrays made from host memory: cpu when it is a gpu."""
    c = current_context()
    return _CPU if c.device_typeid == 2 else c


# ------------------------------------------------------------------------------------------
# NDArray
# ------------------------------------------------------------------------------------------
def _wrap(data: np.ndarray, dt: _dt.DType | None = None, ctx: Context | None = None,
          writable: bool = True, var=None) -> NDArray:
    """An NDArray over ``data`` (C-contiguous; bfloat16 kept as uint16 bits) with engine
    variable ``var`` (a view passes its base's; None: a fresh one)."""
    if type(data) is GpuBuffer:
        a = object.__new__(_GpuNDArray)
        if ctx is None:
            ctx = Context("gpu", getattr(data.device, "ordinal", 0))
    else:
        a = object.__new__(NDArray)
        if ctx is None:
            ctx = _host_context()
    a._buf = data
    a._var = var if var is not None else _Var()
    a._dt = dt if dt is not None else _dt.BY_NAME[data.dtype.name]
    a._ctx = ctx
    a.writable = writable
    return a


def _aligned(shape, dt: _dt.DType) -> np.ndarray:
    from .ndarray_ops import aligned_empty
    return aligned_empty(tuple(shape), dt.np)


def _bf16_bits(x) -> np.ndarray:
    from ..ir.formats import BF16Array
    return BF16Array.from_float32(np.asarray(x, np.float32)).bits


def _bf16_float(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class NDArray:
    """An n-dimensional array on a device context (MXNet's ``mx.nd.NDArray``)."""

    # _buf: the storage (numpy); _var: the engine variable of that storage (shared by views)
    __slots__ = ("__dict__", "__weakref__", "_buf", "_ctx", "_dt", "_var", "writable")
    __array_priority__ = 1000.0
    stype = "default"
    #: autograd tape entry ``(node, output index)`` once the array is in a recorded graph
    _ag = None

    def __init__(self, data=None, ctx=None, dtype=None, writable: bool = True) -> None:
        """Wrap array-like ``data`` (copied into aligned storage). Prefer ``mx.nd.array``."""
        ctx = as_context(ctx)
        if ctx.device_typeid == 2:
            check_runnable(ctx)
        dt = to_dtype(dtype if dtype is not None else getattr(data, "dtype", None)) \
            if data is not None else _dt.float32
        src = np.asarray(data if data is not None else [], dtype=None)
        arr = _aligned(src.shape, dt)
        arr[...] = src
        if ctx.device_typeid == 2:
            arr = _upload_new(arr, ctx)
            self.__class__ = _GpuNDArray
        self._buf = arr
        self._var = _Var()
        self._dt = dt
        self._ctx = ctx
        self.writable = writable

    # -- storage ------------------------------------------------------------------------------
    @property
    def _data(self) -> np.ndarray:
        """The storage once every pending engine op on it has finished (reads and writes), for
        code that touches it from Python; dispatch code uses ``_buf`` with the engine."""
        _get_engine().wait_for_var(self._var)
        return self._buf

    @_data.setter
    def _data(self, value) -> None:
        self._buf = value
        try:
            self._var  # noqa: B018
        except AttributeError:
            self._var = _Var()

    # -- properties ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._buf.shape

    @property
    def size(self) -> int:
        return self._buf.size

    @property
    def ndim(self) -> int:
        return self._buf.ndim

    @property
    def dtype(self):
        return _np_type(self._dt)

    @property
    def context(self) -> Context:
        return self._ctx

    ctx = context

    @property
    def handle(self):
        return self

    @property
    def T(self) -> NDArray:
        if self.ndim < 2:
            return self
        return _op("transpose")(self)

    # -- conversion -------------------------------------------------------------------------
    def asnumpy(self) -> np.ndarray:
        """A numpy copy of the data (waits for the pending writes)."""
        _get_engine().wait_to_read(self._var)
        if self._dt.name == "bfloat16":
            return self._buf.copy().view(bfloat16)
        return self._buf.copy()

    def _float_view(self) -> np.ndarray:
        """The values as numpy (bfloat16 widened to float32), no copy when possible; waits
        for the pending writes."""
        _get_engine().wait_to_read(self._var)
        return self._float_buf()

    def _float_buf(self) -> np.ndarray:
        """``_float_view`` without waiting (inside pushed work)."""
        if self._dt.name == "bfloat16":
            return _bf16_float(self._buf)
        return self._buf

    def asscalar(self):
        if self.size != 1:
            raise ValueError("The current array is not a scalar")
        return self._float_view().reshape(-1)[0].copy()

    def item(self):
        return self.asscalar().item()

    def astype(self, dtype, copy: bool = True) -> NDArray:
        dt = to_dtype(dtype)
        if not copy and dt is self._dt:
            return self
        if self._dt.name == "bfloat16" or dt.name == "bfloat16":
            return _op("Cast")(self, dtype=dt.name)
        arr = _aligned(self.shape, dt)
        out = _wrap(arr, dt, self._ctx)
        src = self._buf
        _push(lambda: np.copyto(arr, src, casting="unsafe"), (self._var,), (out._var,),
              "astype")
        if self._ag is not None:
            _autograd()._record_manual("Cast", {"dtype": dt.name}, [self], [out])
        return out

    def copy(self) -> NDArray:
        return self.copyto(self._ctx)

    def copyto(self, other):
        if isinstance(other, NDArray):
            if other is self or (other._buf.ctypes.data == self._buf.ctypes.data
                                 and other._buf.nbytes == self._buf.nbytes):
                warnings.warn("You are attempting to copy an array to itself", RuntimeWarning)
                return False
            if other.shape != self.shape:
                raise MXNetError(f"copyto: shape mismatch, source {self.shape} vs destination "
                                 f"{other.shape}")
            rec = (self._ag is not None or other._ag is not None) and \
                _autograd().is_recording()
            if rec:
                _autograd()._check_out(None, [self], other)
            _copy_into(other, self)
            if rec:
                _autograd()._record_copy(self, other)
            return other
        if isinstance(other, Context):
            check_runnable(other)
            if other.device_typeid == 2 or type(self._buf) is GpuBuffer:
                out = empty(self.shape, other, self._dt)
                _copy_into(out, self)
                if self._ag is not None:
                    _autograd()._record_copy(self, out)
                return out
            arr = _aligned(self.shape, self._dt)
            out = _wrap(arr, self._dt, other)
            src = self._buf
            _push(lambda: np.copyto(arr, src), (self._var,), (out._var,), "copyto")
            if self._ag is not None:
                _autograd()._record_copy(self, out)
            return out
        raise TypeError(f"copyto does not support type {type(other).__name__}")

    def as_in_context(self, context: Context) -> NDArray:
        if self._ctx == context:
            return self
        return self.copyto(context)

    as_in_ctx = as_in_context

    def as_nd_ndarray(self) -> NDArray:
        return self

    def tostype(self, stype: str):
        if stype == "default":
            return self.copy()
        from . import sparse
        return sparse.from_dense(self, stype)

    def wait_to_read(self) -> None:
        """Block until the pending writes of this array have finished (re-raising an error
        of the work that computed it)."""
        if self._buf is None:  # sparse: its parts
            for part in self.__dict__.get("_sp", ()):
                if part is not None:
                    part.wait_to_read()
        _get_engine().wait_to_read(self._var)

    def wait_to_write(self) -> None:
        """Block until every pending read and write of this array has finished."""
        if self._buf is None:
            for part in self.__dict__.get("_sp", ()):
                if part is not None:
                    part.wait_to_write()
        _get_engine().wait_to_write(self._var)

    def reshape(self, *shape, **kwargs) -> NDArray:
        """A view with a new shape; MXNet's special values 0, -1, -2, -3, -4 and ``reverse``."""
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = shape[0]
        elif not shape:
            shape = kwargs.get("shape")
            if shape is None:
                raise MXNetError("reshape: a shape must be given")
        for k in kwargs:
            if k not in ("shape", "reverse"):
                raise TypeError(f"Got unknown keywords in reshape: {k}. Accepted keyword "
                                "arguments are 'shape' and 'reverse'.")
        new = infer_reshape(self.shape, tuple(shape), bool(kwargs.get("reverse", False)))
        if math.prod(new) != self.size:
            raise MXNetError(f"reshape: cannot reshape an array of shape {self.shape} "
                             f"({self.size} elements) into shape {tuple(shape)}")
        out = _wrap(self._buf.reshape(new), self._dt, self._ctx, self.writable, self._var)
        if self._ag is not None:
            _autograd()._record_manual("Reshape", {"shape": new}, [self], [out])
        return out

    def reshape_like(self, *args, **kwargs):
        if args and isinstance(args[0], NDArray) and not kwargs and len(args) == 1:
            return self.reshape(args[0].shape)
        return _op("reshape_like")(self, *args, **kwargs)

    def broadcast_to(self, shape) -> NDArray:
        shape = tuple(shape)
        cur = self.shape
        err = f"operands could not be broadcast together with remapped shapes " \
            f"[original->remapped]: {cur} and requested shape {shape}"
        if len(shape) < len(cur):
            raise ValueError(err)
        cur = (1,) * (len(shape) - len(cur)) + cur
        if any(c != s and c != 1 for c, s in zip(cur, shape)):
            raise ValueError(err)
        src = self.reshape(cur) if cur != self.shape else self
        return _op("broadcast_to")(src, shape=shape)

    def broadcast_like(self, other) -> NDArray:
        return self.broadcast_to(other.shape)

    def zeros_like(self, *args, **kwargs):
        return _op("zeros_like")(self, *args, **kwargs)

    def ones_like(self, *args, **kwargs):
        return _op("ones_like")(self, *args, **kwargs)

    # -- autograd -------------------------------------------------------------------------------
    def attach_grad(self, grad_req: str = "write", stype=None) -> None:
        """Attach a zero gradient buffer (``.grad``) and mark the array as a variable that
        ``backward`` computes gradients for (``grad_req`` 'write' | 'add' | 'null')."""
        _autograd()._attach_grad(self, grad_req, stype)

    @property
    def grad(self):
        """The gradient buffer attached by ``attach_grad``/``mark_variables``, or None."""
        if self._ag is None:
            return None
        return _autograd()._grad_of(self)

    def detach(self) -> NDArray:
        """An array sharing this one's data, outside any recorded graph."""
        return _wrap(self._buf, self._dt, self._ctx, self.writable, self._var)

    def backward(self, out_grad=None, retain_graph: bool = False,
                 train_mode: bool = True) -> None:
        """Compute the gradients of this array w.r.t. the marked variables."""
        _autograd().backward([self], None if out_grad is None else [out_grad],
                             retain_graph=retain_graph, train_mode=train_mode)

    @property
    def _fresh_grad(self) -> bool:
        if self._ag is None:
            return False
        return _autograd()._get_fresh(self)

    @_fresh_grad.setter
    def _fresh_grad(self, state) -> None:
        if self._ag is not None:
            _autograd()._set_fresh(self, state)

    # -- python protocol ----------------------------------------------------------------------
    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d NDArray")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __bool__(self) -> bool:
        n = self.size
        if n == 0:
            return False
        if n == 1:
            return bool(self.asscalar())
        raise ValueError("The truth value of an NDArray with multiple elements is ambiguous.")

    __nonzero__ = __bool__

    def __hash__(self) -> int:
        return id(self) // 16

    def __repr__(self) -> str:
        shape_info = "x".join(str(d) for d in self.shape)
        return f"\n{self._float_view()!s}\n<{type(self).__name__} {shape_info} @{self._ctx}>"

    def __array__(self, dtype=None, copy=None):
        a = self._float_view()
        return a.astype(dtype) if dtype is not None else a

    def __getstate__(self):
        _get_engine().wait_to_read(self._var)
        return {"data": self._buf.copy(), "dtype": self._dt.name, "writable": self.writable}

    def __setstate__(self, state) -> None:
        dt = _dt.BY_NAME[state["dtype"]]
        arr = _aligned(state["data"].shape, dt)
        arr[...] = state["data"]
        self._buf = arr
        self._var = _Var()
        self._dt = dt
        self._ctx = _host_context()
        self.writable = state.get("writable", True)

    def __reduce__(self):
        return (_unpickle, (self.__getstate__(),))

    def __dlpack__(self, stream=None):
        return self._data.__dlpack__()

    # -- indexing -------------------------------------------------------------------------
    def __getitem__(self, key):
        if self._ag is not None:
            r = _autograd()._record_getitem(self, key)
            if r is not None:
                return r
        d = self._buf
        if type(key) is int:
            if d.ndim == 0:
                raise IndexError("too many indices for a 0-d NDArray")
            n = d.shape[0]
            if not -n <= key < n:
                raise IndexError(f"index {key} is out of bounds for axis 0 with size {n}")
            k = key % n
            v = d[k] if d.ndim > 1 or is_np_shape() else d[k: k + 1]
            if d.ndim == 1 and is_np_shape():
                v = d[k: k + 1].reshape(())
            return _wrap(v, self._dt, self._ctx, self.writable, self._var)
        key = _convert_key(key)
        if _is_basic(key):
            v = _basic_index(d, key)
            if v.ndim == 0 and not is_np_shape():
                v = v.reshape(1)
            if v.flags.c_contiguous:
                return _wrap(v, self._dt, self._ctx, self.writable, self._var)
            # a strided view: copied by pushed work
            arr = _aligned(v.shape, self._dt)
            out = _wrap(arr, self._dt, self._ctx)
            _push(lambda: np.copyto(arr, v), (self._var,), (out._var,), "getitem")
            return out
        # advanced indexing: the result's shape may depend on the values (boolean masks)
        _get_engine().wait_to_read(self._var)
        v = d[key]
        if not isinstance(v, np.ndarray):
            v = np.asarray(v)
        if v.ndim == 0 and not is_np_shape():
            v = v.reshape(1)
        arr = _aligned(v.shape, self._dt)
        np.copyto(arr, v)
        return _wrap(arr, self._dt, self._ctx)

    def _setitem_key(self, key):
        """The indexing key of an assignment, after the checks every context shares."""
        if not self.writable:
            raise ValueError("Failed to assign to a readonly NDArray")
        if self._ag is not None:
            _autograd()._check_setitem(self)
        return _convert_key(key)

    def __setitem__(self, key, value) -> None:
        key = self._setitem_key(key)
        d = self._buf
        if isinstance(key, tuple) and len(key) == 0 and d.ndim > 0:
            key = Ellipsis
        if isinstance(value, NDArray) and value.stype != "default":
            value = value.tostype("default")
        if d.ndim > 0 and _is_basic(key) and isinstance(
                value, (NDArray, np.generic, int, float, bool)):
            self._push_assign(key, value)
            return
        # a numpy/list source (read now, as MXNet's synchronous copy from CPU) or advanced
        # indexing: wait for the pending work on this array, then write from here
        if isinstance(value, NDArray):
            _get_engine().wait_to_read(value._var)
            if type(value._buf) is GpuBuffer:
                src = host_values(value, self._dt)
            elif value._dt is self._dt:
                src = value._buf
            elif self._dt.name == "bfloat16":
                src = _bf16_bits(value._float_buf())
            else:
                src = value._float_buf()
        elif self._dt.name == "bfloat16":
            src = _bf16_bits(np.asarray(value, np.float32))
        elif isinstance(value, (np.ndarray, np.generic, int, float, bool)):
            src = value
        else:
            try:
                src = np.asarray(value, dtype=self._dt.np)
            except (TypeError, ValueError):
                raise TypeError(f"NDArray does not support assignment with non-array-like "
                                f"object {value!r} of type {type(value)}") from None
        _get_engine().wait_to_write(self._var)
        try:
            d[key] = src
        except ValueError as e:
            raise MXNetError(f"cannot assign a value of shape {np.shape(src)} to "
                             f"NDArray[{key}] of shape {self.shape}: {e}") from None

    def _push_assign(self, key, value) -> None:
        """``self[key] = value`` for a basic ``key`` and an NDArray or scalar ``value``, as
        pushed work (checked here, so that errors are raised at the call)."""
        tgt = _basic_index(self._buf, key)   # a view: writing it writes self
        sdt = self._dt
        if not isinstance(value, NDArray):
            try:
                if sdt.name == "bfloat16":
                    val = _bf16_bits(np.asarray(value, np.float32))
                else:
                    val = np.asarray(value, dtype=sdt.np)
            except (ValueError, OverflowError) as e:
                raise MXNetError(f"cannot assign {value!r} to an NDArray of dtype "
                                 f"{sdt.name}: {e}") from None

            def fill() -> None:
                tgt[...] = val
            _push(fill, (), (self._var,), "setitem")
            return
        vbuf, vdt = value._buf, value._dt
        if not _assignable(vbuf.shape, tgt.shape):
            raise MXNetError(f"cannot assign a value of shape {vbuf.shape} to "
                             f"NDArray[{key}] of shape {self.shape}: could not broadcast "
                             f"input array from shape {vbuf.shape} into shape {tgt.shape}")
        if type(vbuf) is GpuBuffer:   # a gpu value into a cpu array: through the host
            def fetch() -> None:
                tgt[...] = host_values(value, sdt)
            _push_dev(fetch, (value._var,), (self._var,), "setitem", value._ctx)
            return
        if vdt is sdt and vbuf.shape == tgt.shape and vbuf.strides == tgt.strides and \
                vbuf.ctypes.data == tgt.ctypes.data:
            # the value is the target (``w[:] -= g`` assigns w's view to itself): nothing
            # to copy; pending writes of the value are writes of this array already
            return

        def copy() -> None:
            if vdt is sdt:
                src = vbuf
            elif sdt.name == "bfloat16":
                src = _bf16_bits(_bf16_float(vbuf) if vdt.name == "bfloat16" else vbuf)
            else:
                src = _bf16_float(vbuf) if vdt.name == "bfloat16" else vbuf
            tgt[...] = src
        _push(copy, (value._var,), (self._var,), "setitem")

    # -- arithmetic -----------------------------------------------------------------------
    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __iadd__(self, other):
        return _inplace(self, other, "broadcast_add", "_plus_scalar", "add to")

    def __sub__(self, other):
        return subtract(self, other)

    def __rsub__(self, other):
        return subtract(other, self)

    def __isub__(self, other):
        return _inplace(self, other, "broadcast_sub", "_minus_scalar", "subtract from")

    def __mul__(self, other):
        return multiply(self, other)

    __rmul__ = __mul__

    def __imul__(self, other):
        return _inplace(self, other, "broadcast_mul", "_mul_scalar", "multiply to")

    def __truediv__(self, other):
        return divide(self, other)

    def __rtruediv__(self, other):
        return divide(other, self)

    __div__ = __truediv__
    __rdiv__ = __rtruediv__

    def __itruediv__(self, other):
        return _inplace(self, other, "broadcast_div", "_div_scalar", "divide to")

    __idiv__ = __itruediv__

    def __mod__(self, other):
        return modulo(self, other)

    def __rmod__(self, other):
        return modulo(other, self)

    def __imod__(self, other):
        return _inplace(self, other, "broadcast_mod", "_mod_scalar", "take modulo to")

    def __pow__(self, other):
        return power(self, other)

    def __rpow__(self, other):
        return power(other, self)

    def __neg__(self):
        return _scalar_op("_mul_scalar", self, -1.0)

    def __pos__(self):
        return self

    def __abs__(self):
        return _op("abs")(self)

    def __eq__(self, other):
        return equal(self, other)

    def __ne__(self, other):
        return not_equal(self, other)

    def __gt__(self, other):
        return greater(self, other)

    def __ge__(self, other):
        return greater_equal(self, other)

    def __lt__(self, other):
        return lesser(self, other)

    def __le__(self, other):
        return lesser_equal(self, other)

    # -- fluent methods -------------------------------------------------------------------
    def __getattr__(self, name):
        target = _FLUENT.get(name)
        if target is None or not registry.exists(target):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        fn = _op(target)
        return types.MethodType(lambda s, *a, **k: fn(s, *a, **k), self)

    def __dir__(self):
        return sorted(set(object.__dir__(self)) | set(_FLUENT))


_autograd_mod = None


def _autograd():
    global _autograd_mod
    if _autograd_mod is None:
        from . import autograd
        _autograd_mod = autograd
    return _autograd_mod


def _unpickle(state):
    a = object.__new__(NDArray)
    a.__setstate__(state)
    return a


# ------------------------------------------------------------------------------------------
# arrays on a gpu context
# ------------------------------------------------------------------------------------------
def _upload_new(host: np.ndarray, ctx: Context) -> GpuBuffer:
    """A new device buffer on gpu ``ctx`` holding the host storage array ``host``."""
    from .gpu_storage import get_device
    b = GpuBuffer.empty(get_device(ctx), host.shape, host.dtype)
    b.upload(host)
    return b


def _gpu_from_host(host: np.ndarray, dt: _dt.DType, ctx: Context) -> NDArray:
    return _wrap(_upload_new(np.ascontiguousarray(host), ctx), dt, ctx)


def _store_region(d: GpuBuffer, key, tgt, tshape: tuple, h: np.ndarray) -> None:
    """``d[key] = h`` (host values in ``d``'s storage dtype, assignable to ``tshape``) where
    ``tgt`` is the contiguous view of ``d[key]`` or None (then read-modify-write)."""
    if tgt is not None:
        tmp = np.empty(tshape, d.dtype)
        tmp[...] = h
        tgt.upload(tmp)
        return
    full = d.to_host()
    _basic_index(full, key)[...] = h
    d.upload(full)


def _store_advanced(d: GpuBuffer, key, h: np.ndarray, shape: tuple) -> None:
    """``d[key] = h`` for an advanced (non-view) index: through a host copy of ``d``."""
    full = d.to_host()
    try:
        full[key] = h
    except ValueError as e:
        raise MXNetError(f"cannot assign a value of shape {h.shape} to NDArray[{key}] of "
                         f"shape {shape}: {e}") from None
    d.upload(full)


class _GpuNDArray(NDArray):
    """An NDArray on a gpu context: ``_buf`` is a :class:`~.gpu_storage.GpuBuffer` (device
    memory). Operators run on the device (``gpu_storage.invoke_gpu``); reads from Python copy
    to the host after waiting for the engine and the device stream. ``type(x).__name__`` is
    the only visible difference: it is an ``NDArray`` for ``isinstance`` and prints as one."""

    __slots__ = ()

    @property
    def _data(self) -> np.ndarray:
        """A read-only host copy of the data once every pending op on it has finished."""
        _get_engine().wait_for_var(self._var)
        h = self._buf.to_host()
        h.flags.writeable = False
        return h

    def asnumpy(self) -> np.ndarray:
        _get_engine().wait_to_read(self._var)
        h = self._buf.to_host()
        return h.view(bfloat16) if self._dt.name == "bfloat16" else h

    def _float_view(self) -> np.ndarray:
        _get_engine().wait_to_read(self._var)
        return self._float_buf()

    def _float_buf(self) -> np.ndarray:
        h = self._buf.to_host()
        return _bf16_float(h) if self._dt.name == "bfloat16" else h

    def astype(self, dtype, copy: bool = True) -> NDArray:
        dt = to_dtype(dtype)
        if dt is self._dt:
            return self.copy() if copy else self
        return _op("Cast")(self, dtype=dt.name)

    def tostype(self, stype: str):
        if stype == "default":
            return self.copy()
        raise MXNetError(f"tostype('{stype}'): sparse storage is not supported on {self._ctx}; "
                         "copy the array to mx.cpu() first")

    def wait_to_read(self) -> None:
        _get_engine().wait_to_read(self._var)
        self._buf.device.synchronize()

    def wait_to_write(self) -> None:
        _get_engine().wait_to_write(self._var)
        self._buf.device.synchronize()

    def __repr__(self) -> str:
        shape_info = "x".join(str(d) for d in self.shape)
        return f"\n{self._float_view()!s}\n<NDArray {shape_info} @{self._ctx}>"

    def __getstate__(self):
        _get_engine().wait_to_read(self._var)
        return {"data": self._buf.to_host(), "dtype": self._dt.name,
                "writable": self.writable}

    def __dlpack__(self, stream=None):
        raise MXNetError(f"DLPack export of {self._ctx} arrays is not supported; copy to "
                         "mx.cpu() first")

    # -- indexing -------------------------------------------------------------------------
    def __getitem__(self, key):
        if self._ag is not None:   # recorded as slice (+ Reshape), as on the CPU
            r = _autograd()._record_getitem(self, key)
            if r is not None:
                return r
        d = self._buf
        ctx = self._ctx
        if type(key) is not int:
            key = _convert_key(key)
        if type(key) is int or _is_basic(key):
            if d.ndim == 0 and type(key) is int:
                raise IndexError("too many indices for a 0-d NDArray")
            view, shape = d.index(key)
            fix = len(shape) == 0 and not is_np_shape()
            if view is not None:
                return _wrap(view.reshape(1) if fix else view, self._dt, ctx, self.writable,
                             self._var)
            # a strided selection: copied by pushed work (through the host)
            out = empty((1,) if fix else shape, ctx, self._dt)
            ob = out._buf

            def run() -> None:
                v = _basic_index(d.to_host(), key)
                ob.upload(np.ascontiguousarray(v).reshape(ob.shape))
            _push_dev(run, (self._var,), (out._var,), "getitem", ctx)
            return out
        # advanced indexing: the result's shape may depend on the values
        _get_engine().wait_to_read(self._var)
        v = np.asarray(d.to_host()[key])
        if v.ndim == 0 and not is_np_shape():
            v = v.reshape(1)
        return _gpu_from_host(v, self._dt, ctx)

    def __setitem__(self, key, value) -> None:
        key = self._setitem_key(key)
        d = self._buf
        sdt = self._dt
        ctx = self._ctx
        if isinstance(key, tuple) and len(key) == 0 and d.ndim > 0:
            key = Ellipsis
        if isinstance(value, NDArray) and value.stype != "default":
            value = value.tostype("default")
        basic = _is_basic(key)
        if basic:
            if d.ndim == 0 and (key is Ellipsis or key == ()):
                tgt, tshape = d, ()
            else:
                tgt, tshape = d.index(key)
        if isinstance(value, NDArray):
            vb, vdt = value._buf, value._dt
            if not basic:
                _get_engine().wait_to_read(value._var)
                h = host_values(value, sdt)
                _get_engine().wait_to_write(self._var)
                _store_advanced(d, key, h, self.shape)
                return
            if not _assignable(vb.shape, tshape):
                raise MXNetError(f"cannot assign a value of shape {vb.shape} to "
                                 f"NDArray[{key}] of shape {self.shape}: could not broadcast "
                                 f"input array from shape {vb.shape} into shape {tshape}")
            if tgt is not None and type(vb) is GpuBuffer and vb.ptr == tgt.ptr and \
                    vb.nbytes == tgt.nbytes and vdt is sdt:
                return  # the value is the target (``w[:] -= g``)
            if tgt is not None and type(vb) is GpuBuffer and vdt is sdt and \
                    vb.device is d.device and vb.size == math.prod(tshape):
                from .gpu_storage import dtod

                def copy() -> None:
                    dtod(d.device, tgt.ptr, vb.ptr, tgt.nbytes)
            else:
                from .gpu_storage import host_converted

                def copy() -> None:
                    h = vb.to_host() if type(vb) is GpuBuffer else vb
                    _store_region(d, key, tgt, tshape, host_converted(h, vdt, sdt))
            _push_dev(copy, (value._var,), (self._var,), "setitem", ctx)
            return
        # a scalar, numpy array or list: read now
        try:
            if sdt.name == "bfloat16":
                val = _bf16_bits(np.asarray(value, np.float32))
            else:
                val = np.array(value, dtype=sdt.np)
        except (TypeError, ValueError, OverflowError) as e:
            if isinstance(value, (np.generic, int, float, bool)):
                raise MXNetError(f"cannot assign {value!r} to an NDArray of dtype "
                                 f"{sdt.name}: {e}") from None
            raise TypeError(f"NDArray does not support assignment with non-array-like "
                            f"object {value!r} of type {type(value)}") from None
        if not basic:
            _get_engine().wait_to_write(self._var)
            _store_advanced(d, key, val, self.shape)
            return
        if not _assignable(val.shape, tshape):
            raise MXNetError(f"cannot assign a value of shape {val.shape} to NDArray[{key}] "
                             f"of shape {self.shape}: could not broadcast input array from "
                             f"shape {val.shape} into shape {tshape}")
        if tgt is not None and val.ndim == 0:
            def fill() -> None:
                tgt.fill(val)
        else:
            def fill() -> None:
                _store_region(d, key, tgt, tshape, val)
        _push_dev(fill, (), (self._var,), "setitem", ctx)


def host_values(x: NDArray, dt: _dt.DType) -> np.ndarray:
    """The values of ``x`` (waited for) as host storage of dtype ``dt``."""
    from .gpu_storage import host_converted
    h = x._buf.to_host() if type(x._buf) is GpuBuffer else x._buf
    return host_converted(h, x._dt, dt)


# methods MXNet 1.x NDArray forwards to the operator of the same name
_FLUENT = {n: n for n in [
    "broadcast_axes", "repeat", "pad", "swapaxes", "split", "slice", "slice_axis",
    "slice_like", "take", "one_hot", "pick", "sort", "topk", "argsort", "argmax",
    "argmax_channel", "argmin", "clip", "abs", "sign", "flatten", "shape_array",
    "size_array", "expand_dims", "tile", "transpose", "flip", "depth_to_space",
    "space_to_depth", "diag", "sum", "nansum", "prod", "nanprod", "mean", "max", "min",
    "norm", "round", "rint", "fix", "floor", "ceil", "trunc", "sin", "cos", "tan", "arcsin",
    "arccos", "arctan", "degrees", "radians", "sinh", "cosh", "tanh", "arcsinh", "arccosh",
    "arctanh", "exp", "expm1", "log", "log10", "log2", "log1p", "log_sigmoid", "sqrt",
    "rsqrt", "cbrt", "rcbrt", "square", "reciprocal", "relu", "sigmoid", "softmax",
    "log_softmax", "softmin", "mish", "squeeze"]}
_FLUENT["split_v2"] = "_split_v2"


def _copy_into(dst: NDArray, src: NDArray) -> None:
    """Copy ``src`` into ``dst`` (same shape), converting the dtype; pushed work."""
    d, s, sdt = dst._buf, src._buf, src._dt
    if type(d) is GpuBuffer or type(s) is GpuBuffer:
        from .gpu_storage import copy_into
        copy_into(dst, src)
        return
    if dst._dt is sdt:
        def run() -> None:
            np.copyto(d, s)
    elif dst._dt.name == "bfloat16":
        def run() -> None:
            np.copyto(d, _bf16_bits(_bf16_float(s) if sdt.name == "bfloat16" else s))
    else:
        def run() -> None:
            np.copyto(d, _bf16_float(s) if sdt.name == "bfloat16" else s, casting="unsafe")
    _push(run, (src._var,), (dst._var,), "copyto")


def _assignable(src_shape: tuple, tgt_shape: tuple) -> bool:
    """Whether numpy assigns a value of ``src_shape`` into ``tgt_shape`` (broadcasting,
    leading 1s dropped)."""
    s = tuple(src_shape)
    while len(s) > len(tgt_shape) and s[0] == 1:
        s = s[1:]
    if len(s) > len(tgt_shape):
        return False
    return all(a in (b, 1) for a, b in zip(reversed(s), reversed(tgt_shape)))


# ------------------------------------------------------------------------------------------
# indexing helpers
# ------------------------------------------------------------------------------------------
def _convert_key(key):
    if isinstance(key, NDArray):
        return key._float_view().astype(np.int64) if key._dt.kind == "f" else \
            key._float_view().copy()
    if isinstance(key, tuple):
        return tuple(_convert_key(k) if isinstance(k, (NDArray, list)) else k for k in key)
    if isinstance(key, list):
        a = np.asarray(key)
        return a if a.dtype == np.bool_ else a.astype(np.int64)
    return key


def _is_basic(key) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    for k in items:
        if not (k is None or k is Ellipsis or isinstance(k, slice) or (
                isinstance(k, integer_types) and not isinstance(k, (bool, np.bool_)))):
            return False
    return True


def _basic_index(d: np.ndarray, key) -> np.ndarray:
    """numpy basic indexing that always returns a view (integers become length-1 slices,
    then their axes are dropped)."""
    items = list(key) if isinstance(key, tuple) else [key]
    n_real = sum(1 for k in items if k is not None and k is not Ellipsis)
    if n_real > d.ndim:
        raise IndexError(f"too many indices ({n_real}) for array with {d.ndim} dimensions")
    if Ellipsis in items:
        i = items.index(Ellipsis)
        items[i: i + 1] = [slice(None)] * (d.ndim - n_real)
    else:
        items += [slice(None)] * (d.ndim - n_real)
    slc = []
    final = []
    axis = 0
    for k in items:
        if k is None:
            slc.append(None)
            final.append("new")
            continue
        if isinstance(k, slice):
            if k.step == 0:
                raise ValueError("slice step cannot be zero")
            slc.append(k)
            final.append("keep")
        else:
            n = d.shape[axis]
            k = int(k)
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
            k %= n
            slc.append(slice(k, k + 1))
            final.append("drop")
        axis += 1
    v = d[tuple(slc)]
    if "drop" in final:
        shape = [s for s, f in zip(v.shape, final) if f != "drop"]
        v = v.reshape(shape) if v.flags.c_contiguous else v.squeeze(
            axis=tuple(i for i, f in enumerate(final) if f == "drop"))
    return v


def infer_reshape(src: tuple, target: tuple, reverse: bool = False) -> tuple:
    """MXNet's Reshape shape rules: 0 copies a dim, -1 infers one, -2 copies the rest,
    -3 merges two dims, -4 splits one into the next two values."""
    src = tuple(src)
    target = tuple(int(t) for t in target)
    if reverse:
        src = src[::-1]
        target = target[::-1]
    out: list = []
    si = 0
    inf = -1
    i = 0
    try:
        while i < len(target):
            p = target[i]
            if p > 0:
                out.append(p)
                si += 1
            elif p == 0:
                out.append(src[si])
                si += 1
            elif p == -1:
                if inf >= 0:
                    raise MXNetError("reshape: one and only one dim can be inferred (-1)")
                inf = len(out)
                out.append(1)
                si += 1
            elif p == -2:
                out.extend(src[si:])
                si = len(src)
            elif p == -3:
                out.append(src[si] * src[si + 1])
                si += 2
            elif p == -4:
                d0 = src[si]
                si += 1
                d1, d2 = target[i + 1], target[i + 2]
                i += 2
                if d1 == -1 and d2 == -1:
                    raise MXNetError("reshape: -4 split dims cannot both be -1")
                if d1 == -1:
                    d1 = d0 // d2
                if d2 == -1:
                    d2 = d0 // d1
                if d1 * d2 != d0:
                    raise MXNetError(f"reshape: -4 split of dim {d0} into ({d1}, {d2})")
                out += [d1, d2]
            else:
                raise MXNetError(f"reshape: invalid shape value {p}")
            i += 1
    except IndexError:
        raise MXNetError(f"reshape: target {target} does not fit source shape {src}") from None
    if inf >= 0:
        known = math.prod(d for j, d in enumerate(out) if j != inf)
        total = math.prod(src)
        if known == 0 or total % known:
            raise MXNetError(f"reshape: cannot infer -1 in {target} for shape {src}")
        out[inf] = total // known
    if reverse:
        out = out[::-1]
    return tuple(out)


# ------------------------------------------------------------------------------------------
# operator access
# ------------------------------------------------------------------------------------------
_fn_cache: dict = {}


def _op(name: str):
    """The generated function of registered operator ``name``."""
    fn = _fn_cache.get(name)
    if fn is None:
        from .ndarray_ops import make_function
        if not registry.exists(name):
            raise MXNetError(f"operator '{name}' is not available in mxc (not registered)")
        fn = _fn_cache[name] = make_function(name)
    return fn


_scalar_tmpl: dict = {}


def _scalar_op(op_name: str, x: NDArray, scalar: float) -> NDArray:
    from .ndarray_ops import invoke, template
    return invoke(template(op_name, {"scalar": scalar}), [x])


def _ufunc(lhs, rhs, fn_array: str, fn_scalar, lfn_scalar: str, rfn_scalar: str | None = None):
    if isinstance(lhs, numeric_types):
        if isinstance(rhs, numeric_types):
            return fn_scalar(lhs, rhs)
        if not isinstance(rhs, NDArray):
            raise TypeError(f"type {type(rhs)} not supported")
        return _scalar_op(rfn_scalar or lfn_scalar, rhs, float(lhs))
    if isinstance(rhs, numeric_types):
        return _scalar_op(lfn_scalar, lhs, float(rhs))
    if isinstance(rhs, NDArray):
        return _op(fn_array)(lhs, rhs)
    raise TypeError(f"type {type(rhs)} not supported")


def _inplace(self: NDArray, other, array_op: str, scalar_op: str, what: str):
    if not self.writable:
        raise ValueError(f"trying to {what} a readonly NDArray")
    if isinstance(other, NDArray):
        return _op(array_op)(self, other, out=self)
    if isinstance(other, numeric_types):
        from .ndarray_ops import invoke, template
        return invoke(template(scalar_op, {"scalar": float(other)}), [self], out=self)
    raise TypeError(f"type {type(other)} not supported")


def add(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_add", operator.add, "_plus_scalar")


def subtract(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_sub", operator.sub, "_minus_scalar", "_rminus_scalar")


def multiply(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_mul", operator.mul, "_mul_scalar")


def divide(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_div", operator.truediv, "_div_scalar", "_rdiv_scalar")


true_divide = divide


def modulo(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_mod", operator.mod, "_mod_scalar", "_rmod_scalar")


def power(base, exp):
    return _ufunc(base, exp, "broadcast_power", operator.pow, "_power_scalar",
                  "_rpower_scalar")


def maximum(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_maximum", lambda x, y: max(y, x),
                  "_maximum_scalar")


def minimum(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_minimum", lambda x, y: min(y, x),
                  "_minimum_scalar")


def _cmp(pyop):
    return lambda x, y: 1 if pyop(x, y) else 0


def equal(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_equal", _cmp(operator.eq), "_equal_scalar")


def not_equal(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_not_equal", _cmp(operator.ne), "_not_equal_scalar")


def greater(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_greater", _cmp(operator.gt), "_greater_scalar",
                  "_lesser_scalar")


def greater_equal(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_greater_equal", _cmp(operator.ge),
                  "_greater_equal_scalar", "_lesser_equal_scalar")


def lesser(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_lesser", _cmp(operator.lt), "_lesser_scalar",
                  "_greater_scalar")


def lesser_equal(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_lesser_equal", _cmp(operator.le),
                  "_lesser_equal_scalar", "_greater_equal_scalar")


def logical_and(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_logical_and", lambda x, y: 1 if x and y else 0,
                  "_logical_and_scalar")


def logical_or(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_logical_or", lambda x, y: 1 if x or y else 0,
                  "_logical_or_scalar")


def logical_xor(lhs, rhs):
    return _ufunc(lhs, rhs, "broadcast_logical_xor",
                  lambda x, y: 1 if bool(x) != bool(y) else 0, "_logical_xor_scalar")


# ------------------------------------------------------------------------------------------
# creation
# ------------------------------------------------------------------------------------------
def _shape_tuple(shape) -> tuple:
    if isinstance(shape, integer_types):
        return (int(shape),)
    return tuple(int(s) for s in shape)


def _ctx(ctx) -> Context:
    if ctx is None:
        return current_context()
    c = as_context(ctx)
    if c.device_typeid == 2:
        check_runnable(c)
    return c


def empty(shape, ctx=None, dtype=None) -> NDArray:
    """An uninitialised array (float32 unless ``dtype``)."""
    c = _ctx(ctx)
    dt = to_dtype(dtype if dtype is not None else mx_real_t)
    if c.device_typeid == 2:
        from .gpu_storage import get_device
        return _wrap(GpuBuffer.empty(get_device(c), _shape_tuple(shape), dt.np), dt, c)
    return _wrap(_aligned(_shape_tuple(shape), dt), dt, c)


def full(shape, val, ctx=None, dtype=mx_real_t, out=None) -> NDArray:
    """An array filled with ``val``."""
    if out is not None:
        out[:] = val
        return out
    a = empty(shape, ctx, dtype)
    if a._dt.name == "bfloat16":
        a._buf.fill(_bf16_bits(np.float32(val)).item())
    elif type(a._buf) is GpuBuffer:
        a._buf.fill(np.array(val).astype(a._dt.np))
    else:
        a._buf.fill(val)
    return a


def zeros(shape, ctx=None, dtype=None, stype=None, **kwargs) -> NDArray:
    """An array of zeros (``stype='csr'|'row_sparse'`` for an empty sparse array)."""
    if stype not in (None, "default"):
        from . import sparse
        return sparse.zeros(stype, shape, ctx=ctx, dtype=dtype)
    return full(shape, 0, ctx, dtype if dtype is not None else mx_real_t, kwargs.get("out"))


def ones(shape, ctx=None, dtype=None, **kwargs) -> NDArray:
    return full(shape, 1, ctx, dtype if dtype is not None else mx_real_t, kwargs.get("out"))


def array(source_array, ctx=None, dtype=None) -> NDArray:
    """Copy ``source_array`` into a new NDArray; float32 unless ``dtype`` (or an NDArray's
    own dtype), as in MXNet 1.x."""
    try:
        import scipy.sparse as spsp
        if isinstance(source_array, spsp.spmatrix) or type(source_array).__name__ in (
                "csr_array", "csr_matrix"):
            from . import sparse
            return sparse.array(source_array, ctx=ctx, dtype=dtype)
    except ImportError:
        pass
    if isinstance(source_array, NDArray):
        if source_array.stype != "default":
            from . import sparse
            return sparse.array(source_array, ctx=ctx, dtype=dtype)
        dtype = source_array.dtype if dtype is None else dtype
        dt = to_dtype(dtype)
        out = empty(source_array.shape, ctx if ctx is not None else source_array._ctx, dt)
        _copy_into(out, source_array)
        return out
    dt = to_dtype(mx_real_t if dtype is None else dtype)
    if not isinstance(source_array, np.ndarray):
        try:
            source_array = np.array(source_array, dtype=np.float32 if dt.name == "bfloat16"
                                    else dt.np)
        except (TypeError, ValueError):
            raise TypeError("source_array must be array like object") from None
    c = _ctx(ctx)
    if c.device_typeid == 2:
        host = _bf16_bits(source_array) if dt.name == "bfloat16" else \
            np.asarray(source_array).astype(dt.np)
        return _wrap(_upload_new(host, c), dt, c)
    out = empty(source_array.shape, c, dt)
    if dt.name == "bfloat16":
        out._buf[...] = _bf16_bits(source_array)
    else:
        np.copyto(out._buf, source_array, casting="unsafe")
    return out


def from_numpy(ndarray: np.ndarray, zero_copy: bool = True) -> NDArray:
    """An NDArray over a numpy array (shares memory when it is C-contiguous)."""
    a = np.asarray(ndarray)
    if zero_copy and a.flags.c_contiguous and a.dtype.name in _dt.BY_NAME:
        return _wrap(a, _dt.BY_NAME[a.dtype.name], _host_context())
    return array(a, dtype=a.dtype)


def arange(start, stop=None, step=1.0, repeat=1, infer_range=None, ctx=None,
           dtype=mx_real_t) -> NDArray:
    """Evenly spaced values in [start, stop), each repeated ``repeat`` times."""
    if infer_range is not None:
        warnings.warn("`infer_range` argument has been deprecated", DeprecationWarning)
    if stop is None:
        start, stop = 0.0, start
    if step == 0:
        raise MXNetError("arange: step must not be 0")
    n = max(math.ceil((stop - start) / step), 0)
    vals = start + np.arange(n, dtype=np.float64) * step
    if repeat != 1:
        vals = np.repeat(vals, int(repeat))
    return array(vals, ctx=ctx, dtype=dtype)


def eye(N, M=0, k=0, ctx=None, dtype=None, **kwargs) -> NDArray:
    """A 2-D array with ones on the k-th diagonal (MXNet's wrapper over ``_eye``)."""
    return _op("_eye")(N=N, M=M, k=k, ctx=ctx,
                       dtype=dtype if dtype is not None else mx_real_t, **kwargs)


def linspace(start, stop, num, endpoint=True, ctx=None, dtype=mx_real_t) -> NDArray:
    """``num`` evenly spaced values over [start, stop] (MXNet's wrapper over ``_linspace``)."""
    return _op("_linspace")(start=start, stop=stop, num=num, endpoint=endpoint, ctx=ctx,
                            dtype=dtype if dtype is not None else mx_real_t)


def split_v2(ary, indices_or_sections, axis=0, squeeze_axis=False):
    """Split ``ary`` along ``axis`` into equal sections (an int) or at the indices of a
    tuple/list (MXNet's wrapper over ``_split_v2``)."""
    if isinstance(indices_or_sections, integer_types):
        sections = int(indices_or_sections)
        axis_size = ary.shape[axis]
        if sections <= 0 or axis_size % sections:
            raise ValueError("array split does not result in an equal division")
        size = axis_size // sections
        indices = [i * size for i in range(sections)]
    elif isinstance(indices_or_sections, (tuple, list)):
        indices = [0] + list(indices_or_sections)
    else:
        raise ValueError("indices_or_sections must either int or tuple of ints")  # noqa: TRY004 (MXNet raises ValueError)
    return _op("_split_v2")(ary, indices=tuple(indices), axis=axis, squeeze_axis=squeeze_axis)


def moveaxis(tensor: NDArray, source, destination) -> NDArray:
    """Move axis ``source`` to position ``destination`` (MXNet's helper over transpose)."""
    axes = list(range(tensor.ndim))
    try:
        src = axes[source]
        dst = axes[destination]
    except IndexError:
        raise IndexError(f"Source should satisfy -{tensor.ndim} <= source < {tensor.ndim}, "
                         f"and destination should satisfy -{tensor.ndim} <= destination < "
                         f"{tensor.ndim}") from None
    axes.pop(src)
    axes.insert(dst, src)
    return _op("transpose")(tensor, axes=tuple(axes))


def concatenate(arrays, axis: int = 0, always_copy: bool = True) -> NDArray:
    """Join arrays along ``axis`` (MXNet's Python helper; ``concat`` is the operator)."""
    if not arrays:
        raise MXNetError("concatenate needs at least one array")
    if not always_copy and len(arrays) == 1:
        return arrays[0]
    if any(type(a._buf) is GpuBuffer for a in arrays):
        return _op("concat")(*arrays, dim=axis)
    shape0 = arrays[0].shape
    total = 0
    for a in arrays:
        if a.shape[:axis] != shape0[:axis] or a.shape[axis + 1:] != shape0[axis + 1:]:
            raise MXNetError(f"concatenate: shapes {shape0} and {a.shape} differ off axis "
                             f"{axis}")
        total += a.shape[axis]
    out = empty(shape0[:axis] + (total,) + shape0[axis + 1:], arrays[0]._ctx, arrays[0]._dt)
    parts = []
    idx = 0
    for a in arrays:
        sl = (slice(None),) * axis + (slice(idx, idx + a.shape[axis]),)
        parts.append((sl, a._buf))
        idx += a.shape[axis]
    buf = out._buf

    def run() -> None:
        for sl, src in parts:
            buf[sl] = src
    _push(run, tuple(a._var for a in arrays), (out._var,), "concatenate")
    return out


def waitall() -> None:
    """Wait for all pending work (MXNet's ``MXNDArrayWaitAll``); re-raises the first error
    raised by pushed work that nobody has waited for yet. GPU streams are synchronized."""
    _get_engine().wait_all()
    from .gpu_storage import synchronize_all
    synchronize_all()


# ------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------
def _to_record(x, what: str):
    from ..ir.formats import NoneRecord, SparseRecord
    if x is None:
        return NoneRecord()
    if not isinstance(x, NDArray):
        raise TypeError(f"{what}: only NDArrays can be saved, got {type(x).__name__}")
    if x.stype != "default":
        return SparseRecord(x.stype, x.shape, _rec_values(x.data), x.indices._data,
                            x.indptr._data if x.stype == "csr" else None)
    return _rec_values(x)


def _rec_values(x: NDArray):
    from ..ir.formats import BF16Array
    if x._dt.name == "bfloat16":
        return BF16Array(x._data)
    return x._data


def _from_record(r):
    from ..ir.formats import BF16Array, NoneRecord, SparseRecord
    if isinstance(r, NoneRecord):
        return None
    if isinstance(r, SparseRecord):
        from . import sparse
        return sparse.from_record(r)
    if isinstance(r, BF16Array):
        arr = _aligned(r.shape, _dt.bfloat16)
        arr[...] = r.bits
        return _wrap(arr, _dt.bfloat16, _host_context())
    a = np.asarray(r)
    dt = _dt.BY_NAME[a.dtype.name]
    arr = _aligned(a.shape, dt)
    arr[...] = a
    return _wrap(arr, dt, _host_context())


def save(fname, data) -> None:
    """Save an NDArray, a list of them or a dict str -> NDArray (MXNet's ``.nd`` format)."""
    from ..ir.formats import save_nd
    if isinstance(data, NDArray):
        data = [data]
    if isinstance(data, dict):
        payload = {}
        for k, v in data.items():
            if not isinstance(k, str):
                raise TypeError("save only accepts dict str->NDArray or list of NDArray")
            payload[k] = _to_record(v, f"array {k!r}")
    elif isinstance(data, (list, tuple)):
        payload = [_to_record(v, f"array {i}") for i, v in enumerate(data)]
    else:
        # MXNet raises ValueError here
        raise ValueError("data needs to either be a NDArray, dict of str, NDArray pairs or "  # noqa: TRY004
                         "a list of NDarrays.")
    save_nd(os.fspath(fname) if not hasattr(fname, "write") else fname, payload,
            np_shape=is_np_shape())


def _unpack(names, recs):
    vals = [_from_record(r) for r in recs]
    if names is None:
        return vals
    return dict(zip(names, vals))


def load(fname):
    """Load a file written by ``mx.nd.save``: a list, or a dict when names were saved."""
    from ..ir.formats import load_nd
    src = fname if hasattr(fname, "read") else os.fspath(fname)
    names, recs = load_nd(src, np_shape=is_np_shape())
    return _unpack(names, recs)


def load_frombuffer(buf):
    """``load`` from the bytes of a file."""
    from ..ir.formats import load_nd
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise TypeError("buf must be bytes-like")
    names, recs = load_nd(bytes(buf), np_shape=is_np_shape())
    return _unpack(names, recs)


# ------------------------------------------------------------------------------------------
# operator namespaces: mx.nd.<op>, mx.nd.op / _internal / contrib / linalg / image / random
# ------------------------------------------------------------------------------------------
class OpNamespace(types.ModuleType):
    """A module-like namespace whose attributes are generated operator functions
    (``prefix + name`` in the registry, e.g. ``contrib.foo`` -> ``_contrib_foo``)."""

    def __init__(self, name: str, prefixes: tuple, maker, wrappers=None) -> None:
        super().__init__(name)
        self._prefixes = prefixes
        self._maker = maker
        self._cache: dict = {}
        #: () -> {name: function}: hand-written frontend functions that take precedence over
        #: the generated ones (``mx.nd.random.uniform`` dispatching to ``_random_uniform`` or
        #: ``_sample_uniform``)
        self._wrappers = wrappers

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        fn = self._cache.get(name)
        if fn is not None:
            return fn
        if self._wrappers is not None:
            fn = self._wrappers().get(name)
            if fn is not None:
                self._cache[name] = fn
                return fn
        for p in self._prefixes:
            if registry.exists(p + name):
                fn = self._cache[name] = self._maker(p + name, name)
                return fn
        raise AttributeError(f"module '{self.__name__}' has no operator '{name}'")

    def __dir__(self):
        out = set()
        for n in registry.all_names():
            for p in self._prefixes:
                if p and n.startswith(p):
                    out.add(n[len(p):])
                elif not p:
                    out.add(n)
        if self._wrappers is not None:
            out.update(self._wrappers())
        return sorted(out)


def _make_nd(op_name: str, func_name: str):
    if func_name == op_name:
        return _op(op_name)
    from .ndarray_ops import make_function
    return make_function(op_name, func_name)


op = OpNamespace(__name__ + ".op", ("",), _make_nd)
_internal = OpNamespace(__name__ + "._internal", ("",), _make_nd)
contrib = OpNamespace(__name__ + ".contrib", ("_contrib_",), _make_nd)
linalg = OpNamespace(__name__ + ".linalg", ("_linalg_",), _make_nd)
image = OpNamespace(__name__ + ".image", ("_image_",), _make_nd)


def _random_wrappers() -> dict:
    from .random import nd_functions
    return nd_functions()


random = OpNamespace(__name__ + ".random", ("_random_", "_sample_"), _make_nd,
                     _random_wrappers)

_NAMESPACES = ("op", "_internal", "contrib", "linalg", "image", "random")


def __getattr__(name: str):
    if name == "sparse":
        from . import sparse
        return sparse
    if name in ("CSRNDArray", "RowSparseNDArray", "BaseSparseNDArray"):
        from . import sparse
        return getattr(sparse, name)
    if name == "Custom":  # Python operators (mx.operator) run through their own invoker
        from ..operator import invoke
        return invoke
    if name.startswith("__"):
        raise AttributeError(name)
    if registry.exists(name):
        return _op(name)
    raise AttributeError(f"module 'mxc.nd' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(registry.all_names()) | {"sparse"})
