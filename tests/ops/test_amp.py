"""amp_cast, amp_multicast, all_finite, multi_all_finite (mxc/ir/ops/amp.py): MXNet's dtype
rules (only float32/float16 are cast; widest / narrowest common type), values against numpy,
gradients cast back to the input dtype, and the finite flags with init_output."""
from __future__ import annotations

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError, OpError, ShapeError
from mxc.ir import registry
from mxc.testing import check_forward, check_grad, run_op

RNG = np.random.default_rng(5)
EXACT = {"rtol": 0, "atol": 0}
ERRORS = (ShapeError, OpError, MXNetError)


def _x(shape, dtype):
    return (RNG.standard_normal(shape) * 3).astype(dtype)


@pytest.mark.parametrize("src,dst,want", [("float32", "float16", "float16"),
                                          ("float16", "float32", "float32"),
                                          ("float64", "float16", "float64"),
                                          ("int32", "float16", "int32"),
                                          ("float32", "float64", "float64")])
def test_amp_cast(src, dst, want):
    out = check_forward("amp_cast", [_x((3, 7), src)], {"dtype": dst}, **EXACT)[0]
    assert out.dtype == np.dtype(want)


def test_amp_cast_grad():
    check_grad("amp_cast", [_x((2, 5), np.float64)], {"dtype": "float16"}, rtol=1e-6,
               atol=1e-7)
    x = _x((4,), np.float32)
    _, grads, _ = run_op("amp_cast", [x], {"dtype": "float16"},
                         head_grads=[np.array([1, 2, 3, 4], np.float16)])
    assert grads[0].dtype == np.float32
    np.testing.assert_array_equal(grads[0], [1, 2, 3, 4])


@pytest.mark.parametrize("types,narrow,want", [
    (["float16", "float32"], False, ["float32", "float32"]),
    (["float16", "float16"], False, ["float16", "float16"]),
    (["float16", "float32", "int32"], False, ["float32", "float32", "int32"]),
    (["float16", "float32"], True, ["float16", "float16"]),
    (["float32", "float32"], True, ["float32", "float32"]),
    # the target starts at input 0's type: float16 follows a leading float64
    (["float64", "float16"], False, ["float64", "float64"]),
    (["float16", "float64"], False, ["float16", "float64"]),
])
def test_amp_multicast_types(types, narrow, want):
    ins = [_x((2, 3 + i), t) for i, t in enumerate(types)]
    outs = check_forward("amp_multicast", ins, {"num_outputs": len(ins), "cast_narrow": narrow},
                         **EXACT)
    assert [o.dtype.name for o in outs] == want
    op = registry.get("amp_multicast")
    assert op.input_names(op.parse_attrs({"num_outputs": 2})) == ["data_0", "data_1"]


def test_amp_multicast_grad():
    ins = [_x((3,), np.float16), _x((2, 2), np.float32)]
    hgs = [np.ones(3, np.float32), np.full((2, 2), 2, np.float32)]
    _, grads, _ = run_op("amp_multicast", ins, {"num_outputs": 2}, head_grads=hgs)
    assert grads[0].dtype == np.float16 and grads[1].dtype == np.float32
    np.testing.assert_array_equal(grads[0], np.ones(3))
    np.testing.assert_array_equal(grads[1], np.full((2, 2), 2))
    check_grad("amp_multicast", [_x((3,), np.float64), _x((2,), np.float64)],
               {"num_outputs": 2}, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_all_finite(dtype):
    x = _x((5, 3), dtype)
    assert run_op("all_finite", [x])[0][0].tolist() == [1.0]
    for bad in (np.inf, -np.inf, np.nan):
        y = x.copy()
        y[4, 2] = bad
        out = check_forward("all_finite", [y], **EXACT)[0]
        assert out.tolist() == [0.0] and out.dtype == np.float32
    assert run_op("all_finite", [np.zeros((0, 3), dtype)])[0][0].tolist() == [1.0]


def test_all_finite_float64_beyond_float32_range():
    # MXNet casts to float before isfinite: 1e300 overflows to inf
    assert run_op("all_finite", [np.array([1e300])])[0][0].tolist() == [0.0]


def test_multi_all_finite():
    a, b, c = _x((7,), np.float32), _x((2, 3), np.float32), _x((1,), np.float32)
    assert check_forward("multi_all_finite", [a, b, c], {"num_arrays": 3}, **EXACT)[0] == 1
    b[1, 1] = np.nan
    assert check_forward("multi_all_finite", [a, b, c], {"num_arrays": 3}, **EXACT)[0] == 0
    with pytest.raises(ERRORS):
        run_op("multi_all_finite", [a, _x((2,), np.float16)], {"num_arrays": 2})
    with pytest.raises(ERRORS):
        run_op("all_finite", [np.ones(3, np.int32)])


def test_init_output_false_accumulates_into_out():
    flag = mx.nd.ones((1,))
    good = mx.nd.array([1.0, 2.0])
    bad = mx.nd.array([1.0, np.inf])
    mx.nd.all_finite(good, init_output=False, out=flag)
    assert flag.asnumpy().tolist() == [1.0]
    mx.nd.multi_all_finite(good, bad, num_arrays=2, init_output=False, out=flag)
    assert flag.asnumpy().tolist() == [0.0]
    # a finite array does not set the flag back
    mx.nd.all_finite(good, init_output=False, out=flag)
    assert flag.asnumpy().tolist() == [0.0]
    assert mx.nd.all_finite(good).asnumpy().tolist() == [1.0]


def test_user_level_amp():
    x = mx.nd.array([1.5, -2.0])
    y = mx.nd.amp_cast(x, dtype="float16")
    assert y.dtype == np.float16
    a, b = mx.nd.amp_multicast(y, x, num_outputs=2)
    assert a.dtype == np.float32 and b.dtype == np.float32
    s = mx.sym.amp_cast(mx.sym.var("x"), dtype="float16")
    ex = s.simple_bind(mx.cpu(), x=(2,))
    ex.forward(x=x)
    assert ex.outputs[0].dtype == np.float16
