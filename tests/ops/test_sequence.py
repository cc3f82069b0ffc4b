"""SequenceLast / SequenceReverse (mxc/ir/ops/sequence.py): forward against the numpy
reference and MXNet's documented examples, gradients against finite differences, lengths of
any dtype (truncated), out-of-range lengths clamped, shape errors."""
from __future__ import annotations

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError, OpError, ShapeError
from mxc.testing import check_forward, check_grad, run_op

RNG = np.random.default_rng(3)
EXACT = {"rtol": 0, "atol": 0}
ERRORS = (ShapeError, OpError, MXNetError)
DOC_X = np.arange(1, 28, dtype=np.float32).reshape(3, 3, 3)


def test_sequence_last_doc_examples():
    out = run_op("SequenceLast", [DOC_X])[0][0]
    np.testing.assert_array_equal(out, [[19, 20, 21], [22, 23, 24], [25, 26, 27]])
    lens = np.array([1, 1, 1], np.float32)
    out = run_op("SequenceLast", [DOC_X, lens], {"use_sequence_length": True})[0][0]
    np.testing.assert_array_equal(out, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    lens = np.array([1, 2, 3], np.float32)
    out = run_op("SequenceLast", [DOC_X, lens], {"use_sequence_length": True})[0][0]
    np.testing.assert_array_equal(out, [[1, 2, 3], [13, 14, 15], [25, 26, 27]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
def test_sequence_last_forward(dtype):
    x = (RNG.standard_normal((5, 3, 2)) * 5).astype(dtype)
    check_forward("SequenceLast", [x], {}, **EXACT)
    # lengths of another dtype, truncated; 0 and > T are clamped into range
    lens = np.array([2.7, 0, 9], np.float32)
    check_forward("SequenceLast", [x, lens], {"use_sequence_length": True}, **EXACT)
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    check_forward("SequenceLast", [xt, np.array([1, 5, 3], np.int64)],
                  {"use_sequence_length": True, "axis": 1}, **EXACT)


def test_sequence_last_odd_shapes():
    check_forward("SequenceLast", [RNG.standard_normal((1, 1))], {}, **EXACT)
    check_forward("SequenceLast", [RNG.standard_normal((7, 2, 1, 3)),
                                   np.array([7, 4], np.int32)],
                  {"use_sequence_length": True}, **EXACT)
    out = run_op("SequenceLast", [np.zeros((3, 0, 2), np.float32)])[0][0]
    assert out.shape == (0, 2)


def test_sequence_last_grad():
    x = RNG.standard_normal((4, 3, 2))
    check_grad("SequenceLast", [x], {}, rtol=1e-6, atol=1e-7)
    lens = np.array([1, 4, 2], np.float64)
    check_grad("SequenceLast", [x, lens], {"use_sequence_length": True}, which=[0],
               rtol=1e-6, atol=1e-7)
    check_grad("SequenceLast", [np.ascontiguousarray(x.transpose(1, 0, 2)), lens],
               {"use_sequence_length": True, "axis": 1}, which=[0], rtol=1e-6, atol=1e-7)


def test_sequence_reverse_doc_examples():
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 2, 2)
    out = run_op("SequenceReverse", [x])[0][0]
    np.testing.assert_array_equal(out, [[[9, 10], [11, 12]], [[5, 6], [7, 8]],
                                        [[1, 2], [3, 4]]])
    out = run_op("SequenceReverse", [x, np.array([2, 2], np.float32)],
                 {"use_sequence_length": True})[0][0]
    np.testing.assert_array_equal(out, [[[5, 6], [7, 8]], [[1, 2], [3, 4]],
                                        [[9, 10], [11, 12]]])
    out = run_op("SequenceReverse", [x, np.array([2, 3], np.float32)],
                 {"use_sequence_length": True})[0][0]
    np.testing.assert_array_equal(out, [[[5, 6], [11, 12]], [[1, 2], [7, 8]],
                                        [[9, 10], [3, 4]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64])
def test_sequence_reverse_forward(dtype):
    x = (RNG.standard_normal((7, 3, 5)) * 5).astype(dtype)
    check_forward("SequenceReverse", [x], {}, **EXACT)
    check_forward("SequenceReverse", [x, np.array([0, 7, 3.9], np.float32)],
                  {"use_sequence_length": True}, **EXACT)
    check_forward("SequenceReverse", [x, np.array([-2, 11, 1], np.int32)],
                  {"use_sequence_length": True}, **EXACT)
    check_forward("SequenceReverse", [x[:1].copy()], {}, **EXACT)


def test_sequence_reverse_grad():
    x = RNG.standard_normal((5, 2, 3))
    check_grad("SequenceReverse", [x], {}, rtol=1e-6, atol=1e-7)
    check_grad("SequenceReverse", [x, np.array([3, 5], np.float64)],
               {"use_sequence_length": True}, which=[0], rtol=1e-6, atol=1e-7)


def test_sequence_errors():
    x = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(ERRORS):
        run_op("SequenceLast", [x], {"axis": 2})
    with pytest.raises(ERRORS):
        run_op("SequenceReverse", [x], {"axis": 1})
    with pytest.raises(ERRORS):
        run_op("SequenceLast", [x, np.ones(4, np.float32)], {"use_sequence_length": True})
    with pytest.raises(ERRORS):
        run_op("SequenceReverse", [np.zeros(4, np.float32)])


def test_sequence_user_level():
    x = mx.nd.array(DOC_X)
    lens = mx.nd.array([1, 2, 3])
    out = mx.nd.SequenceLast(x, lens, use_sequence_length=True)
    np.testing.assert_array_equal(out.asnumpy(), [[1, 2, 3], [13, 14, 15], [25, 26, 27]])
    data = mx.sym.var("data")
    sl = mx.sym.var("sequence_length")
    sym = mx.sym.SequenceReverse(data, sl, use_sequence_length=True)
    assert sym.list_arguments() == ["data", "sequence_length"]
    ex = sym.simple_bind(mx.cpu(), data=(3, 3, 3), sequence_length=(3,))
    ex.forward(data=x, sequence_length=lens)
    want = DOC_X.copy()
    want[:2, 1] = DOC_X[:2, 1][::-1]
    want[:3, 2] = DOC_X[:3, 2][::-1]
    np.testing.assert_array_equal(ex.outputs[0].asnumpy(), want)
