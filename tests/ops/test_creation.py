"""_eye, _linspace, _contrib_arange_like (mxc/ir/ops/creation.py): values against numpy,
MXNet's documented examples, every attribute and dtype, and the user-level mx.nd.eye /
mx.nd.linspace / mx.sym.eye / mx.sym.linspace / mx.nd.contrib.arange_like calls."""
from __future__ import annotations

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError, OpError, ShapeError
from mxc.testing import check_forward, run_op

EXACT = {"rtol": 0, "atol": 0}
ERRORS = (ShapeError, OpError, MXNetError)


@pytest.mark.parametrize("attrs", [{"N": 3}, {"N": 4, "M": 6, "k": 2}, {"N": 5, "M": 2, "k": -1},
                                   {"N": 1}, {"N": 3, "k": 7}, {"N": 0, "M": 3},
                                   {"N": 3, "M": 3, "k": -2, "dtype": "int32"},
                                   {"N": 2, "dtype": "float16"}, {"N": 2, "dtype": "uint8"},
                                   {"N": 3, "M": 2, "dtype": "float64"}])
def test_eye(attrs):
    out = check_forward("_eye", [], attrs, **EXACT)[0]
    assert out.shape == (attrs["N"], attrs.get("M") or attrs["N"])


def test_eye_bad_dtype():
    with pytest.raises(ERRORS):
        run_op("_eye", [], {"N": 2, "dtype": "bool"})


@pytest.mark.parametrize("attrs", [{"start": 0, "stop": 1, "num": 5},
                                   {"start": 2, "stop": -3, "num": 7, "endpoint": False},
                                   {"start": 1.5, "stop": 9, "num": 1},
                                   {"start": 1.5, "stop": 9, "num": 1, "endpoint": False},
                                   {"start": 0, "stop": 10, "num": 0},
                                   {"start": -4, "stop": 7, "num": 6, "dtype": "int32"},
                                   {"start": 0, "stop": 3, "num": 13, "dtype": "float64"},
                                   {"start": 0, "stop": 3, "num": 5, "dtype": "float16"}])
def test_linspace(attrs):
    check_forward("_linspace", [], attrs, rtol=1e-7, atol=0)


def test_linspace_matches_numpy_and_errors():
    out = run_op("_linspace", [], {"start": 0, "stop": 1, "num": 11, "dtype": "float64"})[0][0]
    np.testing.assert_allclose(out, np.linspace(0, 1, 11), rtol=1e-15)
    with pytest.raises(ERRORS):
        run_op("_linspace", [], {"start": 0, "stop": 1, "num": -1})


def test_arange_like_doc_example():
    x = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    out = run_op("_contrib_arange_like", [x], {"start": 0})[0][0]
    np.testing.assert_array_equal(out, np.arange(12, dtype=np.float32).reshape(3, 4))
    out = run_op("_contrib_arange_like", [x], {"start": 0, "axis": -1})[0][0]
    np.testing.assert_array_equal(out, [0, 1, 2, 3])


@pytest.mark.parametrize("attrs", [{}, {"start": 1.5, "step": -0.25, "repeat": 3},
                                   {"axis": 1, "start": 2, "step": 3},
                                   {"start": -2.7, "step": 2.5, "dtype": "int32"},
                                   {"start": 3, "step": 7, "dtype": "uint8", "repeat": 2},
                                   {"start": 0.1, "step": 0.3, "dtype": "float64"}])
def test_arange_like(attrs):
    x = np.zeros((2, 5, 3), np.float16)
    check_forward("_contrib_arange_like", [x], attrs, **EXACT)


def test_arange_like_errors_and_grad():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ERRORS):
        run_op("_contrib_arange_like", [x], {"axis": 2})
    with pytest.raises(ERRORS):
        run_op("_contrib_arange_like", [x], {"repeat": 0})
    _, grads, _ = run_op("_contrib_arange_like", [x], {}, head_grads=[np.ones((2, 3),
                                                                          np.float32)])
    np.testing.assert_array_equal(grads[0], np.zeros((2, 3)))


def test_user_level_eye_linspace():
    np.testing.assert_array_equal(mx.nd.eye(3).asnumpy(), np.eye(3, dtype=np.float32))
    e = mx.nd.eye(2, 4, 1, dtype="int64")
    assert e.dtype == np.int64
    np.testing.assert_array_equal(e.asnumpy(), np.eye(2, 4, 1))
    np.testing.assert_allclose(mx.nd.linspace(0, 1, 5).asnumpy(), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(mx.nd.linspace(0, 1, 4, endpoint=False).asnumpy(),
                               [0, 0.25, 0.5, 0.75])
    sym = mx.sym.broadcast_add(mx.sym.eye(3, 4, k=-1), mx.sym.linspace(0, 3, 4))
    ex = sym.simple_bind(mx.cpu())
    ex.forward()
    np.testing.assert_allclose(ex.outputs[0].asnumpy(), np.eye(3, 4, -1) + np.arange(4.0))
    x = mx.nd.ones((2, 3))
    np.testing.assert_array_equal(mx.nd.contrib.arange_like(x, axis=0).asnumpy(), [0, 1])
