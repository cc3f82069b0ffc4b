"""``mx.test_utils``: the testing helpers of MXNet 1.9.1 (``python/mxnet/test_utils.py``).

MXNet's own unit tests and many user test suites import these: tolerance defaults per dtype,
``assert_almost_equal`` with MXNet's mismatch report, random shapes and arrays, the symbolic
checkers (``check_symbolic_forward`` / ``check_symbolic_backward`` / ``check_numeric_gradient``
/ ``check_consistency``) that bind a Symbol and run it through mxc's executor, and small
utilities (``environment``, ``discard_stderr``, ``DummyIter``...).

Everything runs mxc's compiled code: the checkers bind the symbol with ``Symbol.bind`` /
``simple_bind`` and compare the executor's results against the values the caller gives.
Downloads (``download``, ``get_mnist``...) need a network, which these machines do not have:
they raise a clear error unless the file is already on disk.
"""
from __future__ import annotations

import gzip
import logging
import numbers
import os
import struct
import sys
import traceback
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import numpy.random as rnd
import numpy.testing as npt

from .base import MXNetError
from .frontend.context import Context, current_context
from .frontend.io import DataIter

__all__ = [
    "DummyIter",
    "almost_equal",
    "almost_equal_ignore_nan",
    "assert_allclose",
    "assert_almost_equal",
    "assert_almost_equal_ignore_nan",
    "assert_almost_equal_with_err",
    "assert_exception",
    "assign_each",
    "assign_each2",
    "check_consistency",
    "check_numeric_gradient",
    "check_speed",
    "check_symbolic_backward",
    "check_symbolic_forward",
    "create_sparse_array",
    "create_sparse_array_zd",
    "default_atols",
    "default_context",
    "default_dtype",
    "default_numeric_eps",
    "default_rtols",
    "discard_stderr",
    "download",
    "effective_dtype",
    "environment",
    "find_max_violation",
    "get_atol",
    "get_etol",
    "get_mnist",
    "get_rtol",
    "get_tolerance",
    "get_tols",
    "list_gpus",
    "np_reduce",
    "numeric_grad",
    "rand_ndarray",
    "rand_shape_2d",
    "rand_shape_3d",
    "rand_shape_nd",
    "rand_sparse_ndarray",
    "random_arrays",
    "random_sample",
    "random_uniform_arrays",
    "retry",
    "same",
    "same_array",
    "set_default_context",
    "set_env_var",
    "simple_forward",
]


def _mx():
    import mxc
    return mxc


# ------------------------------------------------------------------------------------------
# context, dtype and tolerances
# ------------------------------------------------------------------------------------------
def default_context() -> Context:
    """The context tests run on: the current context."""
    return current_context()


def set_default_context(ctx) -> None:
    """Make ``ctx`` the current (default) context of this thread."""
    Context._default.value = ctx


def default_dtype():
    return np.float32


_INT_TYPES = (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
              np.uint64)


def default_rtols() -> dict:
    """Default relative tolerance per dtype (MXNet 1.9.1's table; exact for integers)."""
    d = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-5}
    d.update({np.dtype(t): 0 for t in _INT_TYPES})
    return d


def default_atols() -> dict:
    """Default absolute tolerance per dtype."""
    d = {np.dtype(np.float16): 1e-1, np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-20}
    d.update({np.dtype(t): 0 for t in _INT_TYPES})
    return d


def default_numeric_eps() -> dict:
    """Default finite-difference step per dtype."""
    return {np.dtype(np.float16): 1.0 / 2 ** 6, np.dtype(np.float32): 1.0 / 2 ** 9,
            np.dtype(np.float64): 1.0 / 2 ** 14}


def _np_dtype(dat) -> np.dtype:
    dt = getattr(dat, "dtype", None)
    if dt is None:
        return np.asarray(dat).dtype
    try:
        d = np.dtype(dt)
    except TypeError:
        return np.dtype(np.float32)
    # bfloat16 (MXNet spells it as a structured uint16 dtype) compares like float16
    return np.dtype(np.float16) if d.names else d


def effective_dtype(dat) -> np.dtype:
    """The dtype whose tolerances apply to ``dat``. MXNet returns float16 for float32 data on
    Ampere GPUs with TF32 math; mxc's kernels compute float32 in float32 everywhere."""
    return _np_dtype(dat)


def get_tolerance(dat, tol, default_tol: dict):
    """``tol`` when it is a number, else its entry for ``dat``'s dtype (a dict), else the
    default for that dtype."""
    if isinstance(tol, numbers.Number):
        return tol
    dtype = effective_dtype(dat)
    tol = {} if tol is None else tol
    if dtype in tol:
        return tol[dtype]
    return default_tol.get(dtype, 0)


def get_tols(x, y, rtol, atol) -> tuple:
    """(rtol, atol) for comparing ``x`` and ``y``: the larger default of their dtypes when not
    given."""
    if isinstance(x, numbers.Number):
        x = np.array(x)
    if isinstance(y, numbers.Number):
        y = np.array(y)
    rtol = max(get_tolerance(x, rtol, default_rtols()), get_tolerance(y, rtol, default_rtols()))
    atol = max(get_tolerance(x, atol, default_atols()), get_tolerance(y, atol, default_atols()))
    return rtol, atol


def get_atol(atol=None, dtype=np.dtype(np.float64)):
    """Default absolute threshold (of ``dtype``) unless ``atol`` is given."""
    return default_atols()[np.dtype(dtype)] if atol is None else atol


def get_rtol(rtol=None, dtype=np.dtype(np.float64)):
    """Default relative threshold (of ``dtype``) unless ``rtol`` is given."""
    return default_rtols()[np.dtype(dtype)] if rtol is None else rtol


def get_etol(etol=None):
    """Default error-rate threshold (0) unless ``etol`` is given."""
    return 0 if etol is None else etol


# ------------------------------------------------------------------------------------------
# random data
# ------------------------------------------------------------------------------------------
def random_arrays(*shapes):
    """Standard-normal float32 numpy arrays of the given shapes (one array for one shape)."""
    arrays = [np.array(np.random.randn(), dtype=default_dtype()) if len(s) == 0
              else np.random.randn(*s).astype(default_dtype()) for s in shapes]
    if len(arrays) == 1:
        return arrays[0]
    return arrays


def random_uniform_arrays(*shapes, **kwargs):
    """Uniform [low, high) numpy arrays of the given shapes (always a list)."""
    low = kwargs.pop("low", 0.0)
    high = kwargs.pop("high", 1.0)
    dtype = kwargs.pop("dtype", default_dtype())
    if kwargs:
        raise TypeError("Got unexpected argument/s : " + str(kwargs.keys()))
    return [np.random.uniform(low, high, size=s).astype(dtype) for s in shapes]


def random_sample(population, k):
    """``k`` elements of ``population`` in random order."""
    assert 0 <= k <= len(population)
    population_copy = population[:]
    np.random.shuffle(population_copy)
    return population_copy[0:k]


def _sorted_items(d):
    return sorted(d.items(), key=lambda t: t[0])


def _sorted_dict(d):
    return OrderedDict(_sorted_items(d))


def rand_shape_2d(dim0=10, dim1=10, allow_zero_size=False):
    low = 0 if allow_zero_size else 1
    return rnd.randint(low, dim0 + 1), rnd.randint(low, dim1 + 1)


def rand_shape_3d(dim0=10, dim1=10, dim2=10, allow_zero_size=False):
    low = 0 if allow_zero_size else 1
    return rnd.randint(low, dim0 + 1), rnd.randint(low, dim1 + 1), rnd.randint(low, dim2 + 1)


def rand_shape_nd(num_dim, dim=10, allow_zero_size=False):
    low = 0 if allow_zero_size else 1
    return tuple(int(x) for x in rnd.randint(low, dim + 1, size=num_dim))


def rand_coord_2d(x_low, x_high, y_low, y_high):
    x = np.random.randint(x_low, x_high, dtype=np.int64)
    y = np.random.randint(y_low, y_high, dtype=np.int64)
    return x, y


def assign_each(the_input, function):
    """``function`` applied to every element (a float64 array); a copy when None."""
    if function is None:
        return np.array(the_input)
    flat = np.asarray(the_input).reshape(-1)
    return np.array([function(v) for v in flat], dtype=np.float64).reshape(np.shape(the_input))


def assign_each2(input1, input2, function):
    """``function`` applied to every pair of elements (a float64 array)."""
    if function is None:
        return np.array(input1)
    assert np.shape(input1) == np.shape(input2)
    a = np.asarray(input1).reshape(-1)
    b = np.asarray(input2).reshape(-1)
    return np.array([function(x, y) for x, y in zip(a, b)],
                    dtype=np.float64).reshape(np.shape(input1))


def _csr_uniform(num_rows, num_cols, density, dtype, data_init, shuffle):
    if shuffle:
        raise MXNetError("rand_sparse_ndarray: shuffle_csr_indices=True is not supported by "
                         "mxc's CSRNDArray (it keeps column indices sorted)")
    total = int(num_rows * num_cols * density)
    flat = np.zeros(num_rows * num_cols, dtype=dtype)
    pick = rnd.choice(num_rows * num_cols, total, replace=False)
    flat[pick] = rnd.rand(total) if data_init is None else data_init
    # a stored zero would be dropped by the conversion: keep stored values non-zero
    flat[pick] = np.where(flat[pick] == 0, 1, flat[pick])
    dense = flat.reshape(num_rows, num_cols)
    return _mx().nd.sparse.csr_matrix(dense, dtype=dtype)


def _csr_powerlaw(num_rows, num_cols, density, dtype):
    total = int(num_rows * num_cols * density)
    if total < 2 * num_rows:
        raise ValueError(f"not supported for this density: {density} for this shape "
                         f"({num_rows}, {num_cols}) Please keep : num_rows * num_cols * "
                         "density >= 2 * num_rows")
    out = np.zeros((num_rows, num_cols), dtype=dtype)
    unused = total
    for row in range(num_rows):     # one value at the start of each row: no empty row
        out[row][0] = 1 + rnd.uniform(0.001, 2)
        unused -= 1
        if unused <= 0:
            return _mx().nd.array(out, dtype=dtype).tostype("csr")
    col_max = 2
    for row in range(num_rows):     # then 2^i values in row i, full rows once wide enough
        col_limit = min(num_cols, col_max)
        if col_limit == num_cols and unused > col_limit:
            out[row] = 1 + rnd.uniform(0.001, 2)
            unused = unused - col_limit + 1
            if unused <= 0:
                return _mx().nd.array(out, dtype=dtype).tostype("csr")
            continue
        for col in range(1, col_limit):
            out[row][col] = 1 + rnd.uniform(0.001, 2)
            unused -= 1
            if unused <= 0:
                return _mx().nd.array(out, dtype=dtype).tostype("csr")
        col_max *= 2
    if unused > 0:
        raise ValueError(f"not supported for this density: {density} for this shape "
                         f"({num_rows},{num_cols})")
    return _mx().nd.array(out, dtype=dtype).tostype("csr")


def rand_sparse_ndarray(shape, stype, density=None, dtype=None, distribution=None,
                        data_init=None, rsp_indices=None, modifier_func=None,
                        shuffle_csr_indices=False, ctx=None):
    """A random sparse NDArray and its parts: ``(arr, (values, indices))`` for row_sparse,
    ``(arr, (indptr, indices, data))`` for csr."""
    mx = _mx()
    ctx = ctx if ctx else default_context()
    density = rnd.rand() if density is None else density
    if density < 0 or density > 1:
        raise ValueError("density has to be between 0 and 1")
    dtype = default_dtype() if dtype is None else dtype
    distribution = "uniform" if distribution is None else distribution
    if stype == "row_sparse":
        assert distribution == "uniform", \
            f"Distribution {distribution} not supported for row_sparse"
        if rsp_indices is not None:
            indices = np.asarray(rsp_indices)
            assert len(indices) <= shape[0]
        else:
            indices = np.argwhere(rnd.rand(shape[0]) < density).flatten()
        if indices.shape[0] == 0:
            result = mx.nd.sparse.zeros("row_sparse", shape, ctx=ctx, dtype=dtype)
            return result, (np.array([], dtype=dtype), np.array([]))
        val = rnd.rand(indices.shape[0], *shape[1:]).astype(dtype)
        if data_init is not None:
            val.fill(data_init)
        if modifier_func is not None:
            val = assign_each(val, modifier_func)
        arr = mx.nd.sparse.row_sparse_array((val, indices), shape=shape, dtype=dtype, ctx=ctx)
        return arr, (val, indices)
    if stype == "csr":
        assert len(shape) == 2
        if shape[0] <= 0 or shape[1] <= 0:
            raise ValueError("num_rows or num_cols should be greater than 0")
        if distribution == "uniform":
            csr = _csr_uniform(shape[0], shape[1], density, dtype, data_init,
                               shuffle_csr_indices)
        elif distribution == "powerlaw":
            csr = _csr_powerlaw(shape[0], shape[1], density, dtype)
        else:
            raise AssertionError(f"Distribution not supported: {distribution}")
        return csr, (csr.indptr, csr.indices, csr.data)
    raise AssertionError(f"unknown storage type {stype!r}")


def rand_ndarray(shape, stype="default", density=None, dtype=None, modifier_func=None,
                 shuffle_csr_indices=False, distribution=None, ctx=None):
    """A random NDArray: standard normal values for ``stype='default'``, a random sparse
    array for 'csr' / 'row_sparse'."""
    mx = _mx()
    ctx = ctx if ctx else default_context()
    if stype == "default":
        return mx.nd.array(random_arrays(shape), dtype=dtype, ctx=ctx)
    arr, _ = rand_sparse_ndarray(shape, stype, density=density, modifier_func=modifier_func,
                                 dtype=dtype, shuffle_csr_indices=shuffle_csr_indices,
                                 distribution=distribution, ctx=ctx)
    return arr


def create_sparse_array(shape, stype, data_init=None, rsp_indices=None, dtype=None,
                        modifier_func=None, density=.5, shuffle_csr_indices=False):
    """A sparse array; row_sparse indices sorted (canonical)."""
    if stype == "row_sparse":
        idx = None if rsp_indices is None else np.sort(np.asarray(rsp_indices))
        arr, _ = rand_sparse_ndarray(shape, stype, density=density, data_init=data_init,
                                     rsp_indices=idx, dtype=dtype,
                                     modifier_func=modifier_func)
    elif stype == "csr":
        arr, _ = rand_sparse_ndarray(shape, stype, density=density, data_init=data_init,
                                     dtype=dtype, modifier_func=modifier_func,
                                     shuffle_csr_indices=shuffle_csr_indices)
    else:
        raise AssertionError("Unknown storage type: " + stype)
    return arr


def create_sparse_array_zd(shape, stype, density, data_init=None, rsp_indices=None,
                           dtype=None, modifier_func=None, shuffle_csr_indices=False):
    """A sparse array whose row_sparse density comes from ``rsp_indices`` only."""
    if stype == "row_sparse":
        density = 0.0
        if rsp_indices is not None:
            assert len(rsp_indices) <= shape[0]
    return create_sparse_array(shape, stype, data_init=data_init, rsp_indices=rsp_indices,
                               dtype=dtype, modifier_func=modifier_func, density=density,
                               shuffle_csr_indices=shuffle_csr_indices)


def np_reduce(dat, axis, keepdims, numpy_reduce_func):
    """Reduce ``dat`` over ``axis`` (int, list or None) one axis at a time with
    ``numpy_reduce_func`` (``np.sum``...), keeping reduced axes as 1 when ``keepdims``."""
    if isinstance(axis, int):
        axis = [axis]
    else:
        axis = list(axis) if axis is not None else range(len(dat.shape))
    ret = dat
    for i in reversed(sorted(axis)):
        ret = numpy_reduce_func(ret, axis=i)
    if keepdims:
        keepdims_shape = list(dat.shape)
        for i in axis:
            keepdims_shape[i] = 1
        ret = ret.reshape(tuple(keepdims_shape))
    return ret


# ------------------------------------------------------------------------------------------
# comparisons
# ------------------------------------------------------------------------------------------
def _as_np(x):
    mx = _mx()
    if isinstance(x, mx.nd.NDArray):
        return x.asnumpy()
    return x


def find_max_violation(a, b, rtol=None, atol=None) -> tuple:
    """(index, violation) of the element that exceeds the tolerance the most; violation is
    ``|a-b| / (atol + rtol*|b|)`` (inf == inf counts as equal, as in ``np.allclose``)."""
    rtol, atol = get_tols(a, b, rtol, atol)
    a = np.asarray(a)
    b = np.asarray(b)
    with np.errstate(invalid="ignore", over="ignore"):
        absdiff = np.where(np.equal(a, b), 0, np.abs(a - b))
        tol = atol + rtol * np.abs(b)
        violation = absdiff / (tol + 1e-20)
    violation = np.broadcast_to(violation, np.broadcast(a, b).shape)
    loc = np.argmax(np.nan_to_num(violation, nan=np.inf))
    idx = tuple(int(i) for i in np.unravel_index(loc, violation.shape))
    return idx, np.max(violation)


def same(a, b) -> bool:
    """Whether two numpy arrays (or NDArrays) are exactly equal."""
    return np.array_equal(_as_np(a), _as_np(b))


def checkShapes(a, b) -> None:
    if a.shape != b.shape:
        msg = npt.build_err_msg([a, b], err_msg=f"a.shape = {a.shape} and b.shape = "
                                                f"{b.shape} are not equal")
        raise AssertionError(msg)


def almost_equal(a, b, rtol=None, atol=None, equal_nan=False, use_broadcast=True) -> bool:
    """Whether ``a`` and ``b`` are element-wise equal within the tolerances."""
    a = _as_np(a)
    b = _as_np(b)
    rtol, atol = get_tols(a, b, rtol, atol)
    if not use_broadcast:
        checkShapes(np.asarray(a), np.asarray(b))
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def locationError(a, b, index, names, maxError=False) -> str:
    """The mismatch line of the report: location and both values."""
    maximum = "maximum " if maxError else ""
    return "Location of %serror: %s, %s=%.8f, %s=%.8f" % (
        maximum, str(index), names[0], a[index], names[1], b[index])


def _mismatch_report(a, b, rtol, atol, names, equal_nan, mismatches) -> str:
    """MXNet's report: up to ``mismatches[0]`` worst elements printed, up to
    ``mismatches[1]`` counted."""
    index, rel = find_max_violation(a, b, rtol, atol)
    if index == ():
        return "Error %f exceeds tolerance rtol=%e, atol=%e.\n" % (rel, rtol, atol)
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    index_err, rel_err = index, rel
    print(f"\n*** Maximum errors for vector of size {a.size}:  rtol={rtol}, atol={atol}\n")
    a_tmp = np.array(a, copy=True)
    b_tmp = np.array(b, copy=True)
    i = 1
    while i <= a.size:
        if i <= mismatches[0]:
            print("%3d: Error %f  %s" % (i, rel, locationError(a, b, index, names)))
        a_tmp[index] = b_tmp[index] = 0
        if almost_equal(a_tmp, b_tmp, rtol, atol, equal_nan=equal_nan):
            break
        i += 1
        if i <= mismatches[1] or mismatches[1] <= 0:
            index, rel = find_max_violation(a_tmp, b_tmp, rtol, atol)
        else:
            break
    degree = "at least " if 0 < mismatches[1] < i else ""
    return "Error %f exceeds tolerance rtol=%e, atol=%e (mismatch %s%f%%).\n%s" % (
        rel_err, rtol, atol, degree, 100 * i / a.size,
        locationError(a, b, index_err, names, maxError=True))


def assert_almost_equal(a, b, rtol=None, atol=None, names=("a", "b"), equal_nan=False,
                        use_broadcast=True, mismatches=(10, 10)) -> None:
    """Raise AssertionError, with MXNet's mismatch report, unless ``a`` and ``b`` (numpy
    arrays or NDArrays) are almost equal. rtol/atol default per dtype (:func:`get_tols`)."""
    rtol, atol = get_tols(a, b, rtol, atol)
    a = _as_np(a)
    b = _as_np(b)
    if not use_broadcast:
        checkShapes(np.asarray(a), np.asarray(b))
    if getattr(a, "dtype", None) == np.bool_ and getattr(b, "dtype", None) == np.bool_:
        np.testing.assert_equal(a, b)
        return
    if almost_equal(a, b, rtol, atol, equal_nan=equal_nan):
        return
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        try:
            np.broadcast(a, b)
        except ValueError:
            raise AssertionError(npt.build_err_msg(
                [a, b], err_msg=f"shapes {a.shape} and {b.shape} do not broadcast")) from None
    err = _mismatch_report(a, b, rtol, atol, names, equal_nan, mismatches)
    with np.printoptions(threshold=4, suppress=True):
        msg = npt.build_err_msg([a, b], err_msg=err, names=names)
    raise AssertionError(msg)


def assert_allclose(a, b, rtol=1e-07, atol=0, equal_nan=True) -> None:
    assert_almost_equal(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)


def assert_almost_equal_with_err(a, b, rtol=None, atol=None, etol=None, names=("a", "b"),
                                 equal_nan=False, mismatches=(10, 10)) -> None:
    """Like :func:`assert_almost_equal`, but passes while the fraction of mismatching
    elements is at most ``etol``."""
    etol = get_etol(etol)
    if etol <= 0:
        assert_almost_equal(a, b, rtol=rtol, atol=atol, names=names, equal_nan=equal_nan,
                            mismatches=mismatches)
        return
    rtol, atol = get_tols(a, b, rtol, atol)
    a = np.asarray(_as_np(a))
    b = np.asarray(_as_np(b))
    equals = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
    err = 1 - np.count_nonzero(equals) / equals.size
    if err > etol:
        report = _mismatch_report(a, b, rtol, atol, names, equal_nan, mismatches)
        with np.printoptions(threshold=4, suppress=True):
            msg = npt.build_err_msg([a, b], err_msg=report, names=names)
        raise AssertionError(msg)


def almost_equal_ignore_nan(a, b, rtol=None, atol=None) -> bool:
    """:func:`almost_equal` with NaN positions (in either array) ignored."""
    a = np.copy(_as_np(a))
    b = np.copy(_as_np(b))
    nan_mask = np.logical_or(np.isnan(a), np.isnan(b))
    a[nan_mask] = 0
    b[nan_mask] = 0
    return almost_equal(a, b, rtol, atol)


def assert_almost_equal_ignore_nan(a, b, rtol=None, atol=None, names=("a", "b")) -> None:
    """:func:`assert_almost_equal` with NaN positions (in either array) ignored."""
    a = np.copy(_as_np(a))
    b = np.copy(_as_np(b))
    nan_mask = np.logical_or(np.isnan(a), np.isnan(b))
    a[nan_mask] = 0
    b[nan_mask] = 0
    assert_almost_equal(a, b, rtol, atol, names)


def assert_exception(f, exception_type, *args, **kwargs) -> None:
    """Assert that ``f(*args, **kwargs)`` raises ``exception_type``."""
    try:
        f(*args, **kwargs)
    except exception_type:
        return
    raise AssertionError(f"{getattr(f, '__name__', f)} did not raise "
                         f"{getattr(exception_type, '__name__', exception_type)}")


def retry(n: int):
    """Decorator: run a stochastic test up to ``n`` times before failing."""
    assert n > 0

    def decorate(f):
        def wrapper(*args, **kwargs):
            err = None
            for _ in range(n):
                try:
                    f(*args, **kwargs)
                except AssertionError as e:
                    err = e
                    continue
                return
            raise err
        wrapper.__name__ = f.__name__
        return wrapper
    return decorate


def same_array(array1, array2) -> bool:
    """Whether two NDArrays share the same memory (checked by writing to one)."""
    array1[:] += 1
    if not same(array1.asnumpy(), array2.asnumpy()):
        array1[:] -= 1
        return False
    array1[:] -= 1
    return same(array1.asnumpy(), array2.asnumpy())


# ------------------------------------------------------------------------------------------
# symbolic checkers
# ------------------------------------------------------------------------------------------
def simple_forward(sym, ctx=None, is_train=False, **inputs):
    """Bind ``sym`` to numpy ``inputs`` and run forward; numpy results (one array for one
    output)."""
    mx = _mx()
    ctx = ctx or default_context()
    inputs = {k: mx.nd.array(v) for k, v in inputs.items()}
    exe = sym.bind(ctx, args=inputs)
    exe.forward(is_train=is_train)
    outputs = [x.asnumpy() for x in exe.outputs]
    if len(outputs) == 1:
        outputs = outputs[0]
    return outputs


def _nd_of(v, ctx, dtype):
    mx = _mx()
    if isinstance(v, np.ndarray) or np.isscalar(v):
        v = np.asarray(v)
        return mx.nd.array(v, ctx=ctx, dtype=v.dtype if dtype == "asnumpy" else dtype)
    return v


def _parse_location(sym, location, ctx, dtype=default_dtype()):
    """The argument values as an ordered dict name -> NDArray (all arguments required)."""
    assert isinstance(location, (dict, list, tuple))
    assert dtype == "asnumpy" or dtype in (np.float16, np.float32, np.float64)
    if isinstance(location, dict):
        if set(location.keys()) != set(sym.list_arguments()):
            raise ValueError("Symbol arguments and keys of the given location do not match."
                             f"symbol args:{set(sym.list_arguments())}, "
                             f"location.keys():{set(location.keys())}")
    else:
        location = dict(zip(sym.list_arguments(), location))
    location = {k: _nd_of(v, ctx, dtype) for k, v in location.items()}
    return _sorted_dict(location)


def _parse_aux_states(sym, aux_states, ctx, dtype=default_dtype()):
    """The auxiliary states as a dict name -> NDArray (all of them required), or None."""
    assert dtype == "asnumpy" or dtype in (np.float16, np.float32, np.float64)
    if aux_states is None:
        return None
    if isinstance(aux_states, dict):
        if set(aux_states.keys()) != set(sym.list_auxiliary_states()):
            raise ValueError("Symbol aux_states names and given aux_states do not match."
                             f"symbol aux_names:{set(sym.list_auxiliary_states())}, "
                             f"aux_states.keys:{set(aux_states.keys())}")
    elif isinstance(aux_states, (list, tuple)):
        aux_states = dict(zip(sym.list_auxiliary_states(), aux_states))
    return {k: _nd_of(v, ctx, dtype) for k, v in aux_states.items()}


def numeric_grad(executor, location, aux_states=None, eps=1e-4, use_forward_train=True,
                 dtype=default_dtype()):
    """Central finite differences of ``sum(executor.outputs[0])`` with respect to every
    floating-point argument in ``location`` (dict name -> numpy array)."""
    assert dtype in (np.float16, np.float32, np.float64)
    approx_grads = {k: np.zeros(v.shape, dtype=dtype) for k, v in location.items()}
    for k, v in location.items():
        executor.arg_dict[k][:] = np.asarray(v, dtype=dtype)
    for k in location:
        location[k] = np.array(location[k], order="C", copy=True)
    for k, v in location.items():
        if v.dtype.kind != "f":
            continue
        old_value = v.copy()
        flat = v.reshape(-1)
        for i in range(flat.size):
            values = []
            for step in (eps / 2.0, -eps):
                flat[i] += step
                executor.arg_dict[k][:] = np.asarray(v, dtype=dtype)
                if aux_states is not None:
                    for key, val in aux_states.items():
                        executor.aux_dict[key][:] = val
                executor.forward(is_train=use_forward_train)
                values.append(executor.outputs[0].asnumpy().astype(np.float64))
            approx_grads[k].reshape(-1)[i] = (values[0] - values[1]).sum() / eps
            flat[i] = old_value.reshape(-1)[i]
        executor.arg_dict[k][:] = np.asarray(old_value, dtype=dtype)
    return approx_grads


def _grad_nodes_req(sym, grad_nodes) -> tuple:
    if grad_nodes is None:
        nodes = sym.list_arguments()
        return nodes, {k: "write" for k in nodes}
    if isinstance(grad_nodes, (list, tuple)):
        nodes = list(grad_nodes)
        return nodes, {k: "write" for k in nodes}
    if isinstance(grad_nodes, dict):
        return list(grad_nodes.keys()), dict(grad_nodes)
    raise ValueError(f"grad_nodes must be None, a list or a dict, got {type(grad_nodes)}")


def check_numeric_gradient(sym, location, aux_states=None, numeric_eps=None, rtol=None,
                           atol=None, grad_nodes=None, use_forward_train=True, ctx=None,
                           grad_stype_dict=None, dtype=default_dtype()):
    """Check the executor's backward of ``sym`` against finite differences: the output is
    multiplied by a random projection and made a loss, as MXNet does."""
    mx = _mx()
    assert dtype in (np.float16, np.float32, np.float64)
    ctx = ctx or default_context()
    location = _parse_location(sym=sym, location=location, ctx=ctx, dtype=dtype)
    location_npy = {k: v.asnumpy() for k, v in location.items()}
    aux_states = _parse_aux_states(sym=sym, aux_states=aux_states, ctx=ctx, dtype=dtype)
    aux_states_npy = None if aux_states is None else \
        {k: v.asnumpy() for k, v in aux_states.items()}
    grad_nodes, grad_req = _grad_nodes_req(sym, grad_nodes)
    _, out_shape, _ = sym.infer_shape(**{k: v.shape for k, v in location.items()})
    proj = mx.sym.Variable("__random_proj")
    out = mx.sym.make_loss(sym * proj)
    # the projection's elements must not be tiny: precision of the numeric gradient
    location = dict(list(location.items()) + [("__random_proj", mx.nd.array(
        np.random.rand(*out_shape[0]) + 0.1, ctx=ctx, dtype=dtype))])
    args_grad_npy = {k: np.random.normal(0, 0.01, size=location[k].shape) for k in grad_nodes}
    args_grad_npy["__random_proj"] = np.random.normal(0, 0.01, size=out_shape[0])
    args_grad = {k: mx.nd.array(v, ctx=ctx, dtype=dtype) for k, v in args_grad_npy.items()}
    if grad_stype_dict is not None:
        for k, v in grad_stype_dict.items():
            if k in args_grad and v not in (None, "default"):
                raise MXNetError(f"check_numeric_gradient: sparse gradient storage {v!r} for "
                                 f"'{k}' is not supported (mxc binds dense gradients)")
    grad_req["__random_proj"] = "write"
    executor = out.bind(ctx, grad_req=grad_req, args=location, args_grad=args_grad,
                        aux_states=aux_states)
    if len(executor.arg_arrays) != len(location):
        raise ValueError("Executor arg_arrays and and location len do not match."
                         f"Got {len(executor.arg_arrays)} inputs and {len(location)} "
                         "locations")
    executor.forward(is_train=True)
    assert len(executor.outputs) == 1
    eps = get_tolerance(executor.outputs[0], numeric_eps, default_numeric_eps())
    if dtype in (np.float32, np.float16):
        # finite differences with a tiny step need more precision than these types have
        assert eps >= 1e-5
    executor.backward()
    symbolic_grads = executor.grad_dict
    numeric_gradients = numeric_grad(executor, location_npy, aux_states_npy, eps=eps,
                                     use_forward_train=use_forward_train, dtype=dtype)
    for name in grad_nodes:
        fd_grad = numeric_gradients[name]
        orig_grad = args_grad_npy[name]
        req = grad_req[name]
        names = (f"NUMERICAL_{name}", f"BACKWARD_{name}")
        if req == "write":
            assert_almost_equal(fd_grad, symbolic_grads[name], rtol, atol, names)
        elif req == "add":
            assert_almost_equal(fd_grad, symbolic_grads[name].asnumpy() - orig_grad, rtol,
                                atol, names)
        elif req == "null":
            assert symbolic_grads.get(name) is None
        else:
            raise ValueError(f"Invalid grad_req {req} for argument {name}")


def check_symbolic_forward(sym, location, expected, rtol=None, atol=None, aux_states=None,
                           ctx=None, equal_nan=False, dtype=default_dtype()):
    """Bind ``sym`` at ``location``, run forward (inference) and compare every output with
    ``expected`` (list in output order, or dict by output name). Returns the outputs."""
    mx = _mx()
    assert dtype == "asnumpy" or dtype in (np.float16, np.float32, np.float64)
    ctx = ctx or default_context()
    location = _parse_location(sym=sym, location=location, ctx=ctx, dtype=dtype)
    aux_states = _parse_aux_states(sym=sym, aux_states=aux_states, ctx=ctx, dtype=dtype)
    if isinstance(expected, dict):
        expected = [expected[k] for k in sym.list_outputs()]
    args_grad = {k: mx.nd.zeros(v.shape, ctx=ctx, dtype=v.dtype) for k, v in location.items()}
    executor = sym.bind(ctx=ctx, args=location, args_grad=args_grad, aux_states=aux_states)
    executor.forward(is_train=False)
    outputs = executor.outputs
    if len(expected) != len(outputs):
        raise AssertionError(f"check_symbolic_forward: {len(expected)} expected values for "
                             f"{len(outputs)} outputs {sym.list_outputs()}")
    for output_name, expect, output in zip(sym.list_outputs(), expected, outputs):
        assert_almost_equal(expect, output, rtol, atol,
                            (f"EXPECTED_{output_name}", f"FORWARD_{output_name}"),
                            equal_nan=equal_nan)
    return executor.outputs


def check_symbolic_backward(sym, location, out_grads, expected, rtol=None, atol=None,
                            aux_states=None, grad_req="write", ctx=None, grad_stypes=None,
                            equal_nan=False, dtype=default_dtype()):
    """Bind ``sym`` at ``location``, run forward(is_train=True) and backward(``out_grads``),
    and compare the gradients with ``expected`` (list in argument order or dict by name).
    The gradient arrays start as random values, so 'add' and 'null' are checked too.
    Returns the gradient arrays."""
    mx = _mx()
    assert dtype == "asnumpy" or dtype in (np.float16, np.float32, np.float64)
    ctx = ctx or default_context()
    location = _parse_location(sym=sym, location=location, ctx=ctx, dtype=dtype)
    aux_states = _parse_aux_states(sym=sym, aux_states=aux_states, ctx=ctx, dtype=dtype)
    if isinstance(expected, (list, tuple)):
        expected = dict(zip(sym.list_arguments(), expected))
    # the gradient buffers start dirty, deterministically, so 'add'/'null' are visible
    args_grad_npy = {k: np.random.normal(size=np.shape(v)) for k, v in _sorted_items(expected)}
    args_grad_data = {}
    for k, v in args_grad_npy.items():
        dt = np.asarray(expected[k]).dtype if dtype == "asnumpy" else dtype
        if grad_stypes is not None and grad_stypes.get(k) not in (None, "default"):
            raise MXNetError(f"check_symbolic_backward: sparse gradient storage "
                             f"{grad_stypes[k]!r} for '{k}' is not supported (mxc binds "
                             "dense gradients)")
        args_grad_data[k] = mx.nd.array(v, ctx=ctx, dtype=dt)
    if isinstance(grad_req, str):
        grad_req = {k: grad_req for k in sym.list_arguments()}
    elif isinstance(grad_req, (list, tuple)):
        grad_req = dict(zip(sym.list_arguments(), grad_req))
    executor = sym.bind(ctx=ctx, args=location, args_grad=args_grad_data,
                        aux_states=aux_states, grad_req=grad_req)
    outputs = executor.forward(is_train=True)
    if isinstance(out_grads, (tuple, list)):
        outg = []
        for i, arr in enumerate(out_grads):
            if isinstance(arr, np.ndarray):
                dt = arr.dtype if dtype == "asnumpy" else dtype
                outg.append(mx.nd.array(arr, ctx=ctx, dtype=dt))
            else:
                outg.append(arr)
        out_grads = outg
    elif isinstance(out_grads, dict):
        outg = {}
        for k, v in out_grads.items():
            if isinstance(v, np.ndarray):
                dt = v.dtype if dtype == "asnumpy" else dtype
                outg[k] = mx.nd.array(v, ctx=ctx, dtype=dt)
            else:
                outg[k] = v
        out_grads = outg
    else:
        assert out_grads is None
    del outputs
    executor.backward(out_grads)
    grads = args_grad_data
    for name in expected:
        req = grad_req.get(name, "null")
        names = (f"EXPECTED_{name}", f"BACKWARD_{name}")
        if req == "write":
            assert_almost_equal(expected[name], grads[name], rtol, atol, names,
                                equal_nan=equal_nan)
        elif req == "add":
            assert_almost_equal(expected[name], grads[name].asnumpy() - args_grad_npy[name],
                                rtol, atol, names, equal_nan=equal_nan)
        elif req == "null":
            assert_almost_equal(args_grad_npy[name], grads[name], rtol, atol, names,
                                equal_nan=equal_nan)
        else:
            raise ValueError(f"Invalid grad_req {req} for argument {name}")
    return args_grad_data


def check_speed(sym, location=None, ctx=None, N=20, grad_req=None, typ="whole", **kwargs):
    """Seconds per forward+backward (``typ='whole'``) or per forward (``'forward'``)."""
    import time
    mx = _mx()
    ctx = ctx or default_context()
    grad_req = grad_req or "write"
    if location is None:
        exe = sym.simple_bind(grad_req=grad_req, ctx=ctx, **kwargs)
        location = {k: np.random.normal(size=arr.shape, scale=1.0)
                    for k, arr in exe.arg_dict.items()}
    else:
        assert isinstance(location, dict), f'Expect dict, get "location"={location}'
        exe = sym.simple_bind(grad_req=grad_req, ctx=ctx,
                              **{k: v.shape for k, v in location.items()})
    for name, iarr in location.items():
        exe.arg_dict[name][:] = iarr.astype(exe.arg_dict[name].dtype)
    if typ not in ("whole", "forward"):
        raise ValueError('typ can only be "whole" or "forward".')
    train = typ == "whole"

    def step():
        exe.forward(is_train=train)
        if train:
            exe.backward(out_grads=exe.outputs)
    step()
    mx.nd.waitall()
    tic = time.time()
    for _ in range(N):
        step()
    mx.nd.waitall()
    return (time.time() - tic) / N


def check_consistency(sym, ctx_list, scale=1.0, grad_req="write", arg_params=None,
                      aux_params=None, rtol=None, atol=None, raise_on_err=True,
                      ground_truth=None, equal_nan=False, use_uniform=False,
                      rand_type=np.float64):
    """Run ``sym`` (or one symbol per entry) under every ``ctx_list`` entry (a dict of
    simple_bind arguments: ``ctx``, input shapes, ``type_dict``) on the same random inputs
    and compare outputs (and, unless grad_req is 'null', gradients) with the most precise
    run. Returns the ground truth dict."""
    mx = _mx()
    assert len(ctx_list) > 1
    if isinstance(sym, mx.sym.Symbol):
        sym = [sym] * len(ctx_list)
    else:
        assert len(sym) == len(ctx_list)
    output_names = sym[0].list_outputs()
    arg_names = sym[0].list_arguments()
    exe_list = []
    for s, spec in zip(sym, ctx_list):
        assert s.list_arguments() == arg_names
        assert s.list_outputs() == output_names
        exe_list.append(s.simple_bind(grad_req=grad_req, **spec))
    arg_params = {} if arg_params is None else arg_params
    aux_params = {} if aux_params is None else aux_params

    def smaller_dtype(dt1, dt2):
        return dt1 if dt2 is None or np.dtype(dt1).itemsize < np.dtype(dt2).itemsize else dt2

    for n, arr in _sorted_items(exe_list[0].arg_dict):
        if n not in arg_params:
            if use_uniform:
                arg_params[n] = np.random.uniform(low=-0.92 * scale, high=0.92 * scale,
                                                  size=arr.shape).astype(rand_type)
            else:
                arg_params[n] = np.random.normal(size=arr.shape, scale=scale).astype(rand_type)
    for n in exe_list[0].aux_dict:
        aux_params.setdefault(n, 0)
    for exe in exe_list:
        for name, arr in exe.arg_dict.items():
            arr[:] = arg_params[name]
        for name, arr in exe.aux_dict.items():
            arr[:] = aux_params[name]
        if grad_req == "add":
            for arr in exe.grad_arrays:
                if arr is not None:
                    arr[:] = 0
    for exe in exe_list:
        exe.forward(is_train=False)
    dtypes = [np.dtype(exe.outputs[0].dtype) for exe in exe_list]
    gt_idx = int(np.argmax([d.itemsize for d in dtypes]))
    gt = ground_truth
    if gt is None:
        gt = exe_list[gt_idx].output_dict.copy()

    def compare(arr, gtarr, rt, at, what):
        try:
            assert_almost_equal(arr, gtarr, rtol=rt, atol=at, equal_nan=equal_nan)
        except AssertionError as e:
            print(what)
            traceback.print_exc()
            if raise_on_err:
                raise e
            print(str(e))

    for i, exe in enumerate(exe_list):
        if i == gt_idx:
            continue
        for name, arr in zip(output_names, exe.outputs):
            compare(arr, gt[name], rtol, atol, f"Predict Err: ctx {i} vs ctx {gt_idx} at "
                                               f"{name}")
    if grad_req != "null":
        for exe in exe_list:
            exe.forward(is_train=True)
        least = [out.dtype for out in exe_list[0].outputs]
        for exe in exe_list:
            least = [smaller_dtype(o.dtype, dt) for o, dt in zip(exe.outputs, least)]
        golden = [o.astype(dt).asnumpy() for o, dt in zip(exe_list[0].outputs, least)]
        for exe in exe_list:
            exe.backward([mx.nd.array(g, ctx=exe._ctx, dtype=o.dtype)
                          for g, o in zip(golden, exe.outputs)])
        gt = ground_truth
        if gt is None:
            gt = exe_list[gt_idx].output_dict.copy()
            gt.update(exe_list[gt_idx].grad_dict)
        for i, exe in enumerate(exe_list):
            if i == gt_idx:
                continue
            grads = [exe.grad_dict.get(n) for n in arg_names]
            for name, arr in zip(output_names + arg_names, list(exe.outputs) + grads):
                if gt.get(name) is None:
                    assert arr is None, name
                    continue
                gtarr = gt[name]
                rt, at = rtol, atol
                # a float16 run's float32 gradients (BatchNorm gamma) get float16 tolerances
                sa = smaller_dtype(arr.dtype, dtypes[i])
                sg = smaller_dtype(gtarr.dtype, dtypes[gt_idx])
                if sa != arr.dtype or sg != gtarr.dtype:
                    rt, at = get_tols(arr.astype(sa), gtarr.astype(sg), rtol, atol)
                compare(arr, gtarr, rt, at, f"Train Err: ctx {i} vs ctx {gt_idx} at {name}")
    return gt


# ------------------------------------------------------------------------------------------
# environment and small utilities
# ------------------------------------------------------------------------------------------
def list_gpus():
    """``range(n)`` for the n GPUs mxc can run on (empty without one)."""
    from .frontend.context import num_gpus
    return range(num_gpus())


def set_env_var(key, val, default_val=""):
    """Set environment variable ``key`` to ``val``; returns its previous value (or
    ``default_val``)."""
    prev = os.environ.get(key, default_val)
    os.environ[key] = val
    return prev


@contextmanager
def environment(*args):
    """``with environment('NAME', 'value'):`` or ``with environment({'A': '1', 'B': None}):``
    sets (None: unsets) environment variables for the block and restores them after, also
    when the block raises."""
    if len(args) == 2:
        spec = {args[0]: args[1]}
    elif len(args) == 1 and isinstance(args[0], dict):
        spec = dict(args[0])
    else:
        raise ValueError("environment() takes (name, value) or a dict {name: value}")
    for k, v in spec.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, str)):
            raise ValueError(f"environment(): names must be str and values str or None, got "
                             f"{k!r}: {v!r}")
    saved = {k: os.environ.get(k) for k in spec}
    try:
        for k, v in spec.items():
            _setenv(k, v)
        yield
    finally:
        for k, v in saved.items():
            _setenv(k, v)


def _setenv(k: str, v) -> None:
    if v is None:
        os.environ.pop(k, None)
    else:
        os.environ[k] = v


@contextmanager
def discard_stderr():
    """Discard everything written to file descriptor 2 (also by native code) in the block."""
    with open(os.devnull, "w") as bit_bucket:
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            # stderr is not a real file (pytest capture): nothing to redirect at fd level
            yield
            return
        sys.stderr.flush()
        old = os.dup(fd)
        try:
            os.dup2(bit_bucket.fileno(), fd)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(old, fd)
            os.close(old)


class DummyIter(DataIter):
    """An iterator that returns the first batch of ``real_iter`` forever (benchmarks)."""

    def __init__(self, real_iter) -> None:
        super().__init__()
        self.real_iter = real_iter
        self.provide_data = real_iter.provide_data
        self.provide_label = real_iter.provide_label
        self.batch_size = real_iter.batch_size
        self.the_batch = next(real_iter)

    def __iter__(self):
        return self

    def next(self):
        return self.the_batch

    __next__ = next


# ------------------------------------------------------------------------------------------
# data sets (no network here: only files already on disk)
# ------------------------------------------------------------------------------------------
def download(url, fname=None, dirname=None, overwrite=False, retries=5):
    """Return the local path of ``url`` when it is already downloaded (and not
    ``overwrite``); mxc has no network access, so a missing file raises MXNetError."""
    assert retries >= 0, "Number of retries should be at least 0"
    if fname is None:
        fname = url.split("/")[-1]
    if dirname is not None:
        fname = os.path.join(dirname, fname)
    if not overwrite and os.path.exists(fname):
        logging.info("%s exists, skipping download", fname)
        return fname
    raise MXNetError(f"download: cannot fetch {url}: mxc runs without network access here; "
                     f"place the file at {os.path.abspath(fname)} first")


def _mnist_file(path: str, name: str) -> str:
    for cand in (name, name[:-3] if name.endswith(".gz") else name + ".gz"):
        p = os.path.join(path, cand)
        if os.path.exists(p):
            return p
    return download("https://repo.mxnet.io/gluon/dataset/mnist/" + name, dirname=path)


def _open_maybe_gz(p: str):
    return gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")


def get_mnist(path="data"):
    """The MNIST arrays from the idx files in ``path`` (gzipped or not): dict with
    train_data (N,1,28,28 float32 in [0,1]), train_label (int8), test_data, test_label."""
    def read(label_name, image_name):
        with _open_maybe_gz(_mnist_file(path, label_name)) as flbl:
            struct.unpack(">II", flbl.read(8))
            label = np.frombuffer(flbl.read(), dtype=np.int8)
        with _open_maybe_gz(_mnist_file(path, image_name)) as fimg:
            _, _, rows, cols = struct.unpack(">IIII", fimg.read(16))
            image = np.frombuffer(fimg.read(), dtype=np.uint8).reshape(len(label), rows, cols)
            image = image.reshape(image.shape[0], 1, 28, 28).astype(np.float32) / 255
        return label, image
    train_lbl, train_img = read("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz")
    test_lbl, test_img = read("t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
    return {"train_data": train_img, "train_label": train_lbl, "test_data": test_img,
            "test_label": test_lbl}
