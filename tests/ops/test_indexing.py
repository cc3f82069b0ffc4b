"""Indexing operators (mxc/ir/ops/indexing.py): take, Embedding, one_hot, pick, gather_nd,
scatter_nd, batch_take, SequenceMask. Forward bit-exact against the numpy reference with float
and integer indices (out of range, negative, fractional), gradients against finite
differences, the deterministic scatter-add order of repeated indices, errors naming the op."""
from __future__ import annotations

import numpy as np
import pytest

from mxc.base import MXNetError, OpError, ShapeError
from mxc.testing import check_forward, check_grad, run_op

RNG = np.random.default_rng(11)
EXACT = {"rtol": 0, "atol": 0}
ERRORS = (ShapeError, OpError, MXNetError)


def _x(shape, dtype=np.float32):
    return (RNG.standard_normal(shape) * 3).astype(dtype)


def fwd(op, inputs, attrs=None):
    return check_forward(op, inputs, attrs or {}, **EXACT)


def grad(op, inputs, attrs, which):
    check_grad(op, [np.asarray(x, np.float64) if i in which else x
                    for i, x in enumerate(inputs)], attrs, which=which, rtol=1e-6, atol=1e-7)


def _raises(op, inputs, attrs, match=None):
    with pytest.raises(ERRORS, match=match or op):
        run_op(op, inputs, attrs)


IDX_F = np.array([[0, 3.7], [-1, 9], [2, -0.5]], np.float32)   # clip: 0 3 0 4 2 0


@pytest.mark.parametrize("mode", ["clip", "wrap", "raise"])
def test_take_forward(mode):
    a = _x((5, 4, 3))
    for axis in (0, 1, 2, -1, -3):
        fwd("take", [a, IDX_F], {"axis": axis, "mode": mode})
    fwd("take", [a, np.array(2.0, np.float32)], {"axis": 1, "mode": mode})
    for it in (np.int32, np.int64, np.uint8, np.float64):
        fwd("take", [a, np.array([4, 0, 7, 1]).astype(it)], {"mode": mode})
    for dt in (np.int32, np.float64, np.bool_):
        fwd("take", [_x((4, 3), dt), IDX_F], {"axis": 0, "mode": mode})


def test_take_semantics():
    a = np.arange(5, dtype=np.float32)
    idx = np.array([-7, -1, -0.9, 0.9, 4.5, 6, 12], np.float32)
    got = run_op("take", [a, idx], {"mode": "clip"})[0][0]
    assert got.tolist() == [0, 0, 0, 0, 4, 4, 4]
    got = run_op("take", [a, idx], {"mode": "wrap"})[0][0]
    assert got.tolist() == [3, 4, 0, 0, 4, 1, 2]
    got = run_op("take", [a, np.array([np.nan, 1e30, -1e30], np.float32)], {})[0][0]
    assert got.tolist() == [0, 4, 0]


def test_take_grad_and_errors():
    a = _x((5, 4, 3))
    idx = np.array([[1, 3, 1], [4, 1, 0]], np.float32)
    for attrs in [{"axis": 0}, {"axis": 1, "mode": "wrap"}, {"axis": -1}]:
        grad("take", [a, idx], attrs, which=[0])
    _, g, _ = run_op("take", [a, idx], {}, head_grads=[np.ones((2, 3, 4, 3), np.float32)])
    assert g[0][1].tolist() == np.full((4, 3), 3).tolist() and not g[1].any()
    _raises("take", [a, idx], {"axis": 3})
    _raises("take", [a, idx], {"mode": "nearest"})
    _raises("take", [np.array(1.0, np.float32), idx], {})


def test_scatter_add_order_is_index_order():
    """Repeated indices accumulate sequentially in index order (MXNet's AddTakeGrad)."""
    w = np.zeros((3, 2), np.float32)
    idx = np.array([1, 1, 1, 1, 0], np.float32)
    hg = np.array([[1e8, 1], [1, 1e8], [-1e8, 1], [1, -1e8], [5, 5]], np.float32)
    _, g, _ = run_op("Embedding", [idx, w], {"input_dim": 3, "output_dim": 2},
                     head_grads=[hg])
    want = np.zeros(2, np.float32)
    for r in hg[:4]:
        want = (want + r).astype(np.float32)
    assert np.array_equal(g[1][1], want) and np.array_equal(g[1][0], hg[4])
    assert not g[1][2].any()


def test_embedding():
    w = _x((10, 6))
    d = np.array([[1, 3, 3], [9, 0, 12], [-2, 5.5, 9]], np.float32)
    fwd("Embedding", [d, w], {"input_dim": 10, "output_dim": 6})
    fwd("Embedding", [d.astype(np.int32), w.astype(np.float64)],
        {"input_dim": 10, "output_dim": 6, "dtype": "float64"})
    fwd("Embedding", [np.array(4.0, np.float32), w], {"input_dim": 10, "output_dim": 6,
                                                       "sparse_grad": True})
    grad("Embedding", [d, w], {"input_dim": 10, "output_dim": 6}, which=[1])
    big = RNG.integers(0, 40, (7, 9)).astype(np.float32)
    wb = _x((40, 1100))     # > one column chunk of the scatter kernel
    _, g, _ = run_op("Embedding", [big, wb], {"input_dim": 40, "output_dim": 1100},
                     head_grads=[np.ones((7, 9, 1100), np.float32)])
    counts = np.bincount(big.astype(np.int64).ravel(), minlength=40)
    assert np.array_equal(g[1], np.repeat(counts[:, None], 1100, 1).astype(np.float32))
    _raises("Embedding", [d, _x((9, 6))], {"input_dim": 10, "output_dim": 6})
    _raises("Embedding", [d, w], {"input_dim": 10})
    _raises("Embedding", [d, w], {"input_dim": 0, "output_dim": 6})


def test_one_hot():
    idx = np.array([[0, 2.9, -1], [9, 10, 3]], np.float32)
    fwd("one_hot", [idx], {"depth": 10})
    got = fwd("one_hot", [idx], {"depth": 4, "on_value": 5, "off_value": -2,
                                  "dtype": "int32"})[0]
    assert got.dtype == np.int32 and got.shape == (2, 3, 4)
    assert got[0, 1].tolist() == [-2, -2, 5, -2] and got[0, 2].tolist() == [-2] * 4
    fwd("one_hot", [np.array([1, 0, 5], np.int64)], {"depth": 3, "dtype": "float64"})
    _, g, _ = run_op("one_hot", [idx], {"depth": 4}, head_grads=[np.ones((2, 3, 4), np.float32)])
    assert not g[0].any()
    _raises("one_hot", [idx], {})
    _raises("one_hot", [idx], {"depth": 3, "dtype": "complex"})


def test_pick():
    x = _x((3, 4, 5))
    i1 = np.array([[0, 1, 2, 3, 9], [1, 1, 1, 1, -2], [0, 0, 3, 3, 2]], np.float32)
    for mode in ("clip", "wrap"):
        fwd("pick", [x, i1], {"axis": 1, "mode": mode})
        fwd("pick", [x, i1], {"axis": -2, "keepdims": True, "mode": mode})
        fwd("pick", [x, i1[:, None, :]], {"axis": 1, "mode": mode})
    fwd("pick", [x, np.array([[0, 4, 1, 2], [3, 3, 3, 3], [1, 0, 5, -1]], np.int32)], {})
    fwd("pick", [x, np.array([[2, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 2, 2, 2, 2],
                              [0, 1, 2, 0, 1]], np.float32)], {"axis": 0})
    grad("pick", [x, i1], {"axis": 1}, which=[0])
    grad("pick", [x, i1], {"axis": 1, "keepdims": True, "mode": "wrap"}, which=[0])
    _raises("pick", [x, i1], {"axis": "None"})
    _raises("pick", [x, i1], {"axis": 0})
    _raises("pick", [x, i1], {"axis": 3})


def test_gather_scatter_nd():
    x = _x((3, 4, 5))
    gi = np.array([[0, 2, -1, 1], [1, 3, 4, -4]], np.float32)
    fwd("gather_nd", [x, gi])
    fwd("gather_nd", [x, np.array([[2, 0], [1, 1], [4, 0]], np.int32)])
    fwd("gather_nd", [x, np.array([1, 2], np.float32)])
    fwd("gather_nd", [x.astype(np.int64), gi[:1]])
    grad("gather_nd", [x, np.array([[0, 2, 0], [1, 3, 1]], np.float32)], {}, which=[0])
    data = _x((3, 5))
    si = np.array([[0, 2, 1], [1, 3, 0]], np.float32)
    fwd("scatter_nd", [data, si], {"shape": (3, 4, 5)})
    fwd("scatter_nd", [_x((2,), np.int32), np.array([[1, 0], [2, 3]], np.int64)],
        {"shape": (2, 4)})
    grad("scatter_nd", [data, si], {"shape": (3, 4, 5)}, which=[0])
    _raises("gather_nd", [x, np.zeros((4, 2), np.float32)], {})
    _raises("scatter_nd", [_x((2, 5)), si], {"shape": (3, 4, 5)})
    _raises("scatter_nd", [data, si], {})


def test_batch_take():
    a = _x((4, 3))
    idx = np.array([0, 2, 5, -1], np.float32)
    fwd("batch_take", [a, idx])
    fwd("batch_take", [_x((2, 2, 3), np.int32), np.array([[1, 2], [0, 9]], np.int64)])
    grad("batch_take", [a, idx], {}, which=[0])
    _raises("batch_take", [a, np.zeros(3, np.float32)], {})


def test_sequence_mask():
    x = _x((5, 3, 2))
    lens = np.array([1, 5, 0], np.float32)
    fwd("SequenceMask", [x])
    fwd("SequenceMask", [x, lens], {"use_sequence_length": True, "value": -1})
    fwd("SequenceMask", [x.transpose(1, 0, 2).copy(), np.array([2, 3.5, 9], np.float32)],
        {"use_sequence_length": True, "axis": 1})
    fwd("SequenceMask", [x.astype(np.int32), lens.astype(np.int32)],
        {"use_sequence_length": True, "value": 7})
    grad("SequenceMask", [x, lens], {"use_sequence_length": True, "value": 3}, which=[0])
    grad("SequenceMask", [x], {}, which=[0])
    _raises("SequenceMask", [x, np.ones(5, np.float32)], {"use_sequence_length": True})
    _raises("SequenceMask", [x, lens], {"use_sequence_length": True, "axis": 2})


def test_zero_size():
    a = _x((4, 3))
    assert fwd("take", [a, np.zeros((0, 2), np.float32)])[0].shape == (0, 2, 3)
    assert fwd("Embedding", [np.zeros((0,), np.float32), a],
               {"input_dim": 4, "output_dim": 3})[0].shape == (0, 3)
    _, g, _ = run_op("Embedding", [np.zeros((2, 0), np.float32), a],
                     {"input_dim": 4, "output_dim": 3},
                     head_grads=[np.zeros((2, 0, 3), np.float32)])
    assert g[1].shape == (4, 3) and not g[1].any()
    assert fwd("one_hot", [np.zeros((0,), np.float32)], {"depth": 3})[0].shape == (0, 3)
    assert fwd("take", [np.zeros((0, 3), np.float32), np.array([1.0], np.float32)])[0].shape \
        == (1, 3)


# ---------------------------------------------------------------------------------------------
# ravel_multi_index / unravel_index
# ---------------------------------------------------------------------------------------------
def test_ravel_unravel_doc_examples():
    a = np.array([[3, 6, 6], [4, 5, 1]], np.float32)
    b = np.array([22, 41, 37], np.float32)
    for shape in ((7, 6), (-1, 6)):
        np.testing.assert_array_equal(run_op("ravel_multi_index", [a], {"shape": shape})[0][0], b)
        np.testing.assert_array_equal(run_op("_ravel_multi_index", [a], {"shape": shape})[0][0],
                                      b)
        np.testing.assert_array_equal(run_op("unravel_index", [b], {"shape": shape})[0][0], a)
        np.testing.assert_array_equal(run_op("_unravel_index", [b], {"shape": shape})[0][0], a)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_ravel_unravel_roundtrip(dtype):
    shape = (3, 1, 5, 7)
    flat_idx = RNG.integers(0, 105, (2, 11)).astype(dtype)
    check_forward("unravel_index", [flat_idx], {"shape": shape}, rtol=0, atol=0)
    multi = np.stack(np.unravel_index(flat_idx.astype(np.int64), shape)).astype(dtype)
    check_forward("ravel_multi_index", [multi], {"shape": shape}, rtol=0, atol=0)
    got = run_op("unravel_index", [flat_idx], {"shape": shape})[0][0]
    np.testing.assert_array_equal(got, multi)
    np.testing.assert_array_equal(run_op("ravel_multi_index", [multi], {"shape": shape})[0][0],
                                  flat_idx)


def test_unravel_out_of_range_wraps_like_mxnet():
    # coordinates are idx - (idx / dim) * dim with C division: the first one wraps
    x = np.array([5, 23, -7], np.int64)
    check_forward("unravel_index", [x], {"shape": (3, 4)}, rtol=0, atol=0)
    check_forward("unravel_index", [np.zeros((0,), np.float32)], {"shape": (3, 4)})


def test_ravel_bad_shapes():
    with pytest.raises(MXNetError):
        run_op("ravel_multi_index", [np.zeros((3, 2), np.float32)], {"shape": (4, 5)})
    with pytest.raises(MXNetError):
        run_op("unravel_index", [np.zeros((3,), np.float32)], {"shape": (4, -1)})

