"""topk / sort / argsort: compiled kernels vs the numpy oracle, MXNet's documented examples,
ties and NaN order, gradients, and errors."""
import numpy as np
import pytest

from mxc.base import MXNetError
from mxc.testing import check_forward, check_grad, run_op

RNG = np.random.default_rng(7)
X_DOC = np.array([[0.3, 0.2, 0.4], [0.1, 0.3, 0.2]], np.float32)


def _run(op, x, attrs):
    return run_op(op, [x], attrs)[0]


# ---------------------------------------------------------------------------------------------
# documented MXNet examples (ordering_op.cc)
# ---------------------------------------------------------------------------------------------
def test_topk_doc_examples():
    np.testing.assert_array_equal(_run("topk", X_DOC, {})[0], [[2.0], [1.0]])
    np.testing.assert_allclose(_run("topk", X_DOC, {"ret_typ": "value", "k": 2})[0],
                               [[0.4, 0.3], [0.3, 0.2]])
    np.testing.assert_allclose(
        _run("topk", X_DOC, {"ret_typ": "value", "k": 2, "is_ascend": 1})[0],
        [[0.2, 0.3], [0.1, 0.2]])
    np.testing.assert_allclose(
        _run("topk", X_DOC, {"axis": 0, "ret_typ": "value", "k": 2})[0],
        [[0.3, 0.3, 0.4], [0.1, 0.2, 0.2]])
    v, i = _run("topk", X_DOC, {"ret_typ": "both", "k": 2})
    np.testing.assert_allclose(v, [[0.4, 0.3], [0.3, 0.2]])
    np.testing.assert_array_equal(i, [[2.0, 0.0], [1.0, 2.0]])
    assert i.dtype == np.float32


def test_sort_argsort_doc_examples():
    x = np.array([[1, 4], [3, 1]], np.float32)
    np.testing.assert_array_equal(_run("sort", x, {})[0], [[1, 4], [1, 3]])
    np.testing.assert_array_equal(_run("sort", x, {"axis": 0})[0], [[1, 1], [3, 4]])
    np.testing.assert_array_equal(_run("sort", x, {"axis": "None"})[0], [1, 1, 3, 4])
    np.testing.assert_array_equal(_run("sort", x, {"is_ascend": 0})[0], [[4, 1], [3, 1]])
    np.testing.assert_array_equal(_run("argsort", X_DOC, {})[0], [[1, 0, 2], [0, 2, 1]])
    np.testing.assert_array_equal(_run("argsort", X_DOC, {"axis": 0})[0], [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(_run("argsort", X_DOC, {"axis": None})[0], [3, 1, 5, 0, 4, 2])


# ---------------------------------------------------------------------------------------------
# against the oracle
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs", [
    {"k": 3, "ret_typ": "both", "axis": 1},
    {"k": 0, "ret_typ": "value", "axis": 0, "is_ascend": True},
    {"k": 2, "ret_typ": "mask", "axis": -1},
    {"k": 4, "ret_typ": "indices", "axis": None, "dtype": "int64"},
    {"k": 5, "ret_typ": "both", "axis": 2, "dtype": "uint8", "is_ascend": 1},
    {"k": 1, "ret_typ": "both", "axis": 1, "dtype": "float16"},
])
def test_topk_matches_reference(attrs):
    x = RNG.standard_normal((3, 5, 7)).astype(np.float32)
    check_forward("topk", [x], attrs, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["float64", "int32", "int64", "uint8", "int8"])
def test_sort_dtypes_with_ties(dtype):
    # few distinct values: many ties, checking the stable order of indices
    x = RNG.integers(0, 4, (4, 37)).astype(dtype)
    check_forward("sort", [x], {"axis": -1, "is_ascend": False}, rtol=0, atol=0)
    check_forward("argsort", [x], {"axis": 0, "dtype": "int32"}, rtol=0, atol=0)
    check_forward("argsort", [x], {"axis": 1, "is_ascend": 0, "dtype": "int64"}, rtol=0,
                  atol=0)
    check_forward("topk", [x], {"k": 9, "ret_typ": "both", "dtype": "int32"}, rtol=0, atol=0)


def test_ties_are_stable():
    x = np.array([[2, 1, 2, 1, 2, 3, 1]], np.float32)
    np.testing.assert_array_equal(_run("argsort", x, {"dtype": "int32"})[0],
                                  [[1, 3, 6, 0, 2, 4, 5]])
    np.testing.assert_array_equal(_run("argsort", x, {"is_ascend": 0, "dtype": "int32"})[0],
                                  [[5, 0, 2, 4, 1, 3, 6]])


def test_nan_order():
    x = np.array([[1.0, np.nan, -2.0, np.inf, np.nan, 0.5]], np.float32)
    asc = _run("argsort", x, {"dtype": "int32"})[0]
    np.testing.assert_array_equal(asc, [[2, 5, 0, 3, 1, 4]])
    desc = _run("argsort", x, {"is_ascend": False, "dtype": "int32"})[0]
    np.testing.assert_array_equal(desc, [[1, 4, 3, 0, 5, 2]])
    check_forward("sort", [x], {"is_ascend": False}, rtol=0, atol=0)


def test_long_rows_and_odd_shapes():
    x = RNG.standard_normal((2, 1031)).astype(np.float32)
    check_forward("sort", [x], {}, rtol=0, atol=0)
    check_forward("topk", [x], {"k": 7, "ret_typ": "both"}, rtol=0, atol=0)
    one = RNG.standard_normal((1, 1, 1)).astype(np.float32)
    check_forward("topk", [one], {"axis": 1, "ret_typ": "both"}, rtol=0, atol=0)
    check_forward("argsort", [one], {"axis": None}, rtol=0, atol=0)


def test_argsort_scalar_and_empty():
    out = _run("argsort", np.array(3.5, np.float32), {})[0]
    np.testing.assert_array_equal(out, [0.0])
    assert out.shape == (1,)
    empty = np.zeros((0, 4), np.float32)
    assert _run("argsort", empty, {})[0].shape == (0, 4)
    # a zero-size batch dimension with non-empty rows is fine for topk
    assert _run("topk", empty, {"k": 2, "ret_typ": "value"})[0].shape == (0, 2)


def test_sort_hidden_outputs_and_types():
    x = RNG.standard_normal((2, 3)).astype(np.float64)
    v = _run("topk", x, {"k": 2, "ret_typ": "value"})
    assert len(v) == 1 and v[0].dtype == np.float64
    m = _run("topk", x, {"k": 2, "ret_typ": "mask"})[0]
    assert m.dtype == np.float64 and m.shape == (2, 3) and m.sum() == 4


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------
def test_gradients():
    x = RNG.permutation(60).reshape(3, 4, 5).astype(np.float64) / 7.0
    check_grad("topk", [x], {"k": 2, "ret_typ": "value", "axis": 1})
    check_grad("topk", [x], {"k": 3, "ret_typ": "value", "axis": None})
    check_grad("sort", [x], {"axis": 0, "is_ascend": False})
    # both: the head gradient of the indices output is ignored
    hg = [np.ones((3, 4, 2)), np.full((3, 4, 2), 5.0)]
    _, grads, _ = run_op("topk", [x], {"k": 2, "ret_typ": "both", "axis": -1}, head_grads=hg)
    want = np.zeros_like(x)
    np.put_along_axis(want, np.argsort(-x, axis=-1)[..., :2], 1.0, axis=-1)
    np.testing.assert_array_equal(grads[0], want)
    # indices and mask have zero gradient
    _, grads, _ = run_op("topk", [x], {"k": 2}, head_grads=[np.ones((3, 4, 2), np.float32)])
    np.testing.assert_array_equal(grads[0], np.zeros_like(x))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs,x", [
    ("topk", {"k": 8}, np.zeros((2, 7), np.float32)),
    ("topk", {"axis": 2}, np.zeros((2, 7), np.float32)),
    ("topk", {"ret_typ": "values"}, np.zeros((2, 7), np.float32)),
    ("topk", {"dtype": "int8"}, np.zeros((2, 7), np.float32)),
    ("sort", {}, np.zeros((2, 7), np.float16)),
    ("sort", {}, np.zeros((2, 0), np.float32)),
    ("argsort", {"axis": 1}, np.array(1.0, np.float32)),
])
def test_errors(op, attrs, x):
    with pytest.raises(MXNetError):
        run_op(op, [x], attrs)
