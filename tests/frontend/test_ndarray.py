"""mx.nd: creation, dtype rules, arithmetic and broadcasting, indexing, views, repr,
save/load round trips and sparse conversions, all against numpy."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError

ALL_DTYPES = ["float32", "float64", "float16", "uint8", "int8", "int32", "int64", "bool",
              "int16", "uint16", "uint32", "uint64"]


def _np(x):
    return x.asnumpy()


# --------------------------------------------------------------------------------------------
# creation and dtypes
# --------------------------------------------------------------------------------------------
def test_array_dtype_rules():
    assert mx.nd.array([1, 2, 3]).dtype == np.float32
    # MXNet 1.x: numpy sources become float32 unless dtype is given
    assert mx.nd.array(np.arange(3, dtype=np.int64)).dtype == np.float32
    assert mx.nd.array(np.arange(3), dtype="int64").dtype == np.int64
    # an NDArray source keeps its dtype
    assert mx.nd.array(mx.nd.ones(2, dtype="int8")).dtype == np.int8
    assert mx.nd.array([1, 2], dtype=np.float16).dtype == np.float16
    a = mx.nd.array([[1, 2], [3, 4]])
    assert a.shape == (2, 2) and a.ndim == 2 and a.size == 4
    assert a.context == mx.cpu() and a.ctx == mx.cpu(0) and a.stype == "default"
    assert a._data.ctypes.data % 64 == 0


def test_creation_functions():
    np.testing.assert_array_equal(_np(mx.nd.zeros((2, 3))), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(_np(mx.nd.ones(4, dtype="int32")), np.ones(4, np.int32))
    np.testing.assert_array_equal(_np(mx.nd.full((2, 2), 3.5)), np.full((2, 2), 3.5, np.float32))
    assert mx.nd.empty((3, 1)).shape == (3, 1)
    np.testing.assert_array_equal(_np(mx.nd.arange(5)), np.arange(5, dtype=np.float32))
    np.testing.assert_allclose(_np(mx.nd.arange(1, 3, 0.5, repeat=2)),
                               np.repeat(np.arange(1, 3, 0.5), 2).astype(np.float32))
    assert mx.nd.arange(0, 4, dtype="int32").dtype == np.int32
    z = mx.nd.zeros_like(mx.nd.ones((2, 2), dtype="float64"))
    assert z.dtype == np.float64 and _np(z).sum() == 0
    assert _np(mx.nd.ones_like(mx.nd.zeros((3,)))).sum() == 3


def test_context():
    assert str(mx.cpu()) == "cpu(0)" and repr(mx.gpu(1)) == "gpu(1)"
    assert mx.current_context() == mx.cpu()
    with mx.Context("cpu", 2):
        assert mx.current_context() == mx.cpu(2)
        assert mx.nd.zeros(1).context == mx.cpu(2)
    assert mx.current_context() == mx.cpu()
    assert mx.gpu(0) != mx.cpu(0) and mx.gpu(0).device_type == "gpu"
    with pytest.raises(MXNetError, match="no GPU back end"):
        mx.nd.zeros((2,), ctx=mx.gpu(0))
    with pytest.raises(MXNetError, match="no GPU back end"):
        mx.nd.ones((2,)).as_in_context(mx.gpu(0))


def test_astype_copy_copyto():
    a = mx.nd.array([1.7, -2.2, 3.0])
    np.testing.assert_array_equal(_np(a.astype("int32")), np.array([1, -2, 3], np.int32))
    assert a.astype("float32", copy=False) is a
    b = a.copy()
    b[0] = 9
    assert _np(a)[0] == np.float32(1.7)
    c = mx.nd.zeros(3, dtype="float64")
    a.copyto(c)
    np.testing.assert_allclose(_np(c), _np(a).astype(np.float64))
    with pytest.raises(MXNetError):
        a.copyto(mx.nd.zeros(4))
    assert a.as_in_context(mx.cpu()) is a


def test_scalar_helpers_and_bool():
    assert mx.nd.array([3.5]).asscalar() == np.float32(3.5)
    assert mx.nd.array([2]).item() == 2.0
    with pytest.raises(ValueError):
        mx.nd.ones(2).asscalar()
    assert bool(mx.nd.ones((1,))) and not bool(mx.nd.zeros((1,)))
    assert not bool(mx.nd.array([]))
    with pytest.raises(ValueError):
        bool(mx.nd.ones((2, 3)))
    assert len(mx.nd.ones((4, 2))) == 4
    assert [x.shape for x in mx.nd.ones((3, 2))] == [(2,)] * 3


# --------------------------------------------------------------------------------------------
# arithmetic
# --------------------------------------------------------------------------------------------
def _rand(shape, seed=0, lo=0.5, hi=2.0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize("sa,sb", [((2, 3), (2, 3)), ((2, 3), (1, 3)), ((4, 1, 3), (2, 1)),
                                   ((3,), (2, 3))])
def test_binary_broadcast(sa, sb):
    a, b = _rand(sa, 1), _rand(sb, 2)
    x, y = mx.nd.array(a), mx.nd.array(b)
    for got, want in [(x + y, a + b), (x - y, a - b), (x * y, a * b), (x / y, a / b),
                      (x ** y, a ** b), (x % y, np.mod(a, b)),
                      (x == y, (a == b)), (x != y, (a != b)), (x > y, a > b),
                      (x >= y, a >= b), (x < y, a < b), (x <= y, a <= b),
                      (mx.nd.maximum(x, y), np.maximum(a, b)),
                      (mx.nd.minimum(x, y), np.minimum(a, b))]:
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(_np(got), want.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_scalar_ops():
    a = _rand((2, 3), 3)
    x = mx.nd.array(a)
    cases = [(x + 2, a + 2), (2 + x, 2 + a), (x - 2, a - 2), (2 - x, 2 - a), (x * 3, a * 3),
             (3 * x, 3 * a), (x / 4, a / 4), (4 / x, 4 / a), (x ** 2, a ** 2), (2 ** x, 2 ** a),
             (x % 0.7, np.mod(a, np.float32(0.7))), (-x, -a), (abs(-x), a),
             (x > 1, (a > 1)), (1 < x, (a > 1)), (x <= 1, a <= 1), (x == a[0, 0], a == a[0, 0]),
             (mx.nd.maximum(x, 1), np.maximum(a, 1)), (mx.nd.minimum(1, x), np.minimum(a, 1))]
    for got, want in cases:
        np.testing.assert_allclose(_np(got), np.asarray(want, np.float32), rtol=1e-5, atol=1e-6)
    assert mx.nd.maximum(2, 3) == 3


def test_int_arithmetic_keeps_dtype():
    x = mx.nd.array([1, 2, 7], dtype="int32")
    r = x + 1
    assert r.dtype == np.int32
    np.testing.assert_array_equal(_np(r), [2, 3, 8])
    np.testing.assert_array_equal(_np(x * x), [1, 4, 49])
    assert (x / 2).dtype == np.int32


def test_inplace_ops():
    a = _rand((2, 3), 4)
    x = mx.nd.array(a)
    ref = x._data
    x += 1
    x *= mx.nd.array([1, 2, 3])
    x -= 0.5
    x /= 2
    assert x._data is ref
    np.testing.assert_allclose(_np(x), ((a + 1) * np.array([1, 2, 3], np.float32) - 0.5) / 2,
                               rtol=1e-6)
    with pytest.raises(MXNetError):
        y = mx.nd.ones((2, 3))
        y += mx.nd.ones((4, 2, 3))  # the result would not fit in y


def test_unsupported_operand():
    with pytest.raises(TypeError):
        mx.nd.ones(2) + "a"


def test_generated_ops_and_out():
    a = _rand((2, 3), 5, -1, 1)
    x = mx.nd.array(a)
    np.testing.assert_allclose(_np(mx.nd.relu(x)), np.maximum(a, 0))
    np.testing.assert_allclose(_np(mx.nd.op.exp(x)), np.exp(a), rtol=1e-5)
    np.testing.assert_allclose(_np(mx.nd.clip(x, -0.5, 0.5)), np.clip(a, -0.5, 0.5))
    np.testing.assert_allclose(_np(mx.nd.clip(x, a_min=-0.5, a_max=0.5)), np.clip(a, -0.5, 0.5))
    np.testing.assert_allclose(_np(mx.nd._internal._plus_scalar(x, scalar=1)), a + 1)
    out = mx.nd.zeros((2, 3))
    r = mx.nd.elemwise_add(x, x, out=out)
    assert r is out
    np.testing.assert_allclose(_np(out), a + a)
    # out aliasing an input of an op that is not elementwise in place: computed safely
    y = mx.nd.array(np.arange(6, dtype=np.float32).reshape(2, 3))
    sq = mx.nd.array(np.arange(9, dtype=np.float32).reshape(3, 3))
    mx.nd.transpose(sq, out=sq)
    np.testing.assert_array_equal(_np(sq), np.arange(9, dtype=np.float32).reshape(3, 3).T)
    with pytest.raises(MXNetError):
        mx.nd.elemwise_add(x, x, out=mx.nd.zeros((3, 2)))
    with pytest.raises(MXNetError):
        mx.nd.relu(x, bogus_attr=1)
    assert y.shape == (2, 3)


def test_fluent_and_views():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x = mx.nd.array(a)
    np.testing.assert_allclose(_np(x.sum(axis=1)), a.sum(axis=1))
    np.testing.assert_allclose(_np(x.exp()), np.exp(a), rtol=1e-5)
    assert x.T.shape == (4, 3, 2)
    # Reshape is a view: writes show through, as in MXNet
    r = mx.nd.reshape(x, shape=(4, -1))
    assert r.shape == (4, 6)
    r[0, 0] = -5
    assert _np(x)[0, 0, 0] == -5
    f = mx.nd.Flatten(x)
    assert f.shape == (2, 12) and np.shares_memory(f._data, x._data)


def test_reshape_special_values():
    x = mx.nd.zeros((2, 3, 4))
    assert x.reshape((0, -1)).shape == (2, 12)
    assert x.reshape(6, 4).shape == (6, 4)
    assert x.reshape(shape=(-3, 4)).shape == (6, 4)
    assert x.reshape((-2,)).shape == (2, 3, 4)
    assert x.reshape((-4, 1, 2, 0, 0)).shape == (1, 2, 3, 4)
    assert x.reshape((-1, 0), reverse=True).shape == (6, 4)
    with pytest.raises(MXNetError):
        x.reshape((5, 5))


# --------------------------------------------------------------------------------------------
# indexing
# --------------------------------------------------------------------------------------------
KEYS = [1, -1, slice(1, 3), slice(None, None, 2), (1, 2), (slice(None), 1), (Ellipsis, 1),
        (None, 1), (1, slice(0, 2), None), (slice(None, None, -1),), (0, 1, 2), ()]


@pytest.mark.parametrize("key", KEYS, ids=[str(k) for k in KEYS])
def test_getitem_basic(key):
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    got = mx.nd.array(a)[key]
    want = a[key]
    want = np.asarray(want).reshape(1) if np.ndim(want) == 0 else want
    assert got.shape == want.shape
    np.testing.assert_array_equal(_np(got), want)


def test_getitem_1d_int_is_shape_1():
    x = mx.nd.array([1, 2, 3])
    assert x[0].shape == (1,) and x[-1].asscalar() == 3


def test_getitem_view_semantics():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x = mx.nd.array(a)
    v = x[1]                      # contiguous: a view
    v[:] = 0
    assert _np(x)[1].sum() == 0
    x = mx.nd.array(a)
    v = x[1, 1:2]                 # contiguous: a view
    v[:] = -1
    assert (_np(x)[1, 1] == -1).all()
    x = mx.nd.array(a)
    c = x[:, :, 1]                # not contiguous: a copy
    c[:] = 100
    np.testing.assert_array_equal(_np(x), a)


def test_getitem_advanced():
    a = np.arange(20, dtype=np.float32).reshape(4, 5)
    x = mx.nd.array(a)
    np.testing.assert_array_equal(_np(x[[0, 2]]), a[[0, 2]])
    np.testing.assert_array_equal(_np(x[mx.nd.array([3, 1])]), a[[3, 1]])
    np.testing.assert_array_equal(_np(x[1:, [0, 4]]), a[1:, [0, 4]])


@pytest.mark.parametrize("key", [slice(None), 1, (1, 2), (slice(None), 1), (Ellipsis, 0),
                                 slice(None, None, 2), [0, 2]])
@pytest.mark.parametrize("kind", ["scalar", "numpy", "ndarray", "list"])
def test_setitem(key, kind):
    a = np.arange(24, dtype=np.float32).reshape(3, 8)
    x = mx.nd.array(a)
    shape = a[key].shape
    if kind == "scalar":
        val, v = 7, 7
    else:
        v = np.random.default_rng(0).standard_normal(shape[-1:] if shape else ()).astype(
            np.float32)
        val = {"numpy": v, "ndarray": mx.nd.array(v), "list": v.tolist()}[kind]
    x[key] = val
    a[key] = v
    np.testing.assert_allclose(_np(x), a)


def test_setitem_dtype_conversion_and_readonly():
    x = mx.nd.zeros(3, dtype="int32")
    x[:] = mx.nd.array([1.9, 2.2, -3.7])
    np.testing.assert_array_equal(_np(x), [1, 2, -3])
    y = mx.nd.zeros((2, 2))
    y[:] = mx.nd.ones((2,))
    assert _np(y).sum() == 4
    y.writable = False
    with pytest.raises(ValueError):
        y[0] = 1


# --------------------------------------------------------------------------------------------
# repr and pickling
# --------------------------------------------------------------------------------------------
def test_repr():
    x = mx.nd.array([[1, 2, 3], [4, 5, 6]])
    assert repr(x) == f"\n{np.array([[1, 2, 3], [4, 5, 6]], np.float32)}\n<NDArray 2x3 @cpu(0)>"
    assert repr(mx.nd.ones(3, dtype="int32")).endswith("<NDArray 3 @cpu(0)>")
    assert str(x) == repr(x)


def test_pickle():
    x = mx.nd.array(np.arange(6).reshape(2, 3), dtype="int64")
    y = pickle.loads(pickle.dumps(x))
    assert y.dtype == np.int64
    np.testing.assert_array_equal(_np(y), _np(x))


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------
def _sample(dt, shape=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    if dt == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dt).kind in "iu":
        return rng.integers(0, 100, shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


@pytest.mark.parametrize("dt", ALL_DTYPES)
def test_save_load_every_dtype(tmp_path, dt):
    a = _sample(dt)
    f = tmp_path / "x.nd"
    mx.nd.save(str(f), [mx.nd.array(a, dtype=dt)])
    (y,) = mx.nd.load(str(f))
    assert y.dtype == np.dtype(dt).type and y.shape == a.shape
    np.testing.assert_array_equal(_np(y), a)


def test_save_load_dict_list_and_buffer(tmp_path):
    d = {"arg:w": mx.nd.array(_sample("float32")), "aux:m": mx.nd.array(_sample("int32"),
                                                                       dtype="int32"),
         "empty": mx.nd.zeros((0, 3))}
    f = tmp_path / "d.params"
    mx.nd.save(f, d)
    back = mx.nd.load(str(f))
    assert isinstance(back, dict) and list(back) == list(d)
    for k, v in d.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(_np(back[k]), _np(v))
    lst = [mx.nd.ones((2,)), mx.nd.zeros((1, 1), dtype="float64")]
    mx.nd.save(str(f), lst)
    back = mx.nd.load(str(f))
    assert isinstance(back, list) and len(back) == 2
    back2 = mx.nd.load_frombuffer(f.read_bytes())
    np.testing.assert_array_equal(_np(back2[1]), _np(lst[1]))
    mx.nd.save(str(f), mx.nd.ones(3))
    assert len(mx.nd.load(str(f))) == 1


NDFILES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases" / \
    "ndarray_files"


@pytest.mark.parametrize("fname", ["dict_legacy.nd", "dict_npshape.nd", "list.nd",
                                   "sparse.nd"])
def test_load_mxnet_written_files(tmp_path, fname):
    """Files written by MXNet 1.9.1's mx.nd.save load bit-exactly and save back byte for
    byte."""
    if not NDFILES.exists():
        pytest.skip("reference cases absent")
    meta = json.loads((NDFILES / "meta.json").read_text())["files"][fname]
    with mx.util.np_shape(meta["np_shape_semantics"]):
        got = mx.nd.load(str(NDFILES / fname))
        if meta["named"]:
            assert isinstance(got, dict)
            assert list(got) == [e["key"] for e in meta["entries"]]
            vals = list(got.values())
        else:
            assert isinstance(got, list)
            vals = got
        assert len(vals) == len(meta["entries"])
        for v, e in zip(vals, meta["entries"]):
            want = np.load(NDFILES / e["file"])
            assert v.shape == tuple(e["shape"]), e
            assert np.dtype(v.dtype).name == e["dtype"], e
            np.testing.assert_array_equal(v.asnumpy(), want)
        out = tmp_path / "again.nd"
        mx.nd.save(str(out), got)
        assert out.read_bytes() == (NDFILES / fname).read_bytes()


# --------------------------------------------------------------------------------------------
# sparse
# --------------------------------------------------------------------------------------------
def test_csr_round_trip():
    a = np.array([[0, 1, 0], [2, 0, 3], [0, 0, 0]], np.float32)
    c = mx.nd.array(a).tostype("csr")
    assert isinstance(c, mx.nd.sparse.CSRNDArray) and c.stype == "csr"
    np.testing.assert_array_equal(_np(c.data), [1, 2, 3])
    np.testing.assert_array_equal(_np(c.indices), [1, 0, 2])
    np.testing.assert_array_equal(_np(c.indptr), [0, 1, 3, 3])
    np.testing.assert_array_equal(c.asnumpy(), a)
    assert repr(c) == "\n<CSRNDArray 3x3 @cpu(0)>"
    d = c.tostype("default")
    assert d.stype == "default"
    np.testing.assert_array_equal(_np(d), a)
    m = mx.nd.sparse.csr_matrix(([1, 2, 3], [1, 0, 2], [0, 1, 3, 3]), shape=(3, 3))
    np.testing.assert_array_equal(m.asnumpy(), a)
    np.testing.assert_array_equal(_np(c + 1), a + 1)  # dense fallback


def test_row_sparse_round_trip(tmp_path):
    a = np.zeros((4, 2), np.float32)
    a[1] = [1, 2]
    a[3] = [0, 5]
    r = mx.nd.array(a).tostype("row_sparse")
    assert isinstance(r, mx.nd.sparse.RowSparseNDArray)
    np.testing.assert_array_equal(_np(r.indices), [1, 3])
    np.testing.assert_array_equal(r.asnumpy(), a)
    r2 = mx.nd.sparse.row_sparse_array(([[1, 2], [0, 5]], [1, 3]), shape=(4, 2))
    np.testing.assert_array_equal(r2.asnumpy(), a)
    c = r.tostype("csr")
    np.testing.assert_array_equal(c.asnumpy(), a)
    f = tmp_path / "sp.nd"
    mx.nd.save(str(f), {"r": r, "c": c})
    back = mx.nd.load(str(f))
    assert back["r"].stype == "row_sparse" and back["c"].stype == "csr"
    np.testing.assert_array_equal(back["r"].asnumpy(), a)
    np.testing.assert_array_equal(back["c"].asnumpy(), a)
    z = mx.nd.zeros((3, 2), stype="row_sparse")
    assert z.stype == "row_sparse" and z.asnumpy().sum() == 0


# --------------------------------------------------------------------------------------------
# util, random
# --------------------------------------------------------------------------------------------
def test_np_shape_scope():
    assert not mx.util.is_np_shape()
    with mx.util.np_shape(True):
        assert mx.util.is_np_shape()
        assert mx.nd.array([1, 2, 3])[0].shape == ()

    @mx.util.use_np_shape
    def f():
        return mx.util.is_np_shape()

    assert f() and not mx.util.is_np_shape()
    prev = mx.util.set_np_shape(True)
    assert prev is False and mx.util.set_np_shape(False) is True
    assert mx.util.is_np_array() is False


def test_random_seed_and_version():
    mx.random.seed(42)
    assert mx.__version__ == "1.9.1" and mx.__mxc_version__
    assert issubclass(mx.base.MXNetError, RuntimeError)
