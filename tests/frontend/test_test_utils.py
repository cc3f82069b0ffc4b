"""mx.test_utils against MXNet 1.9.1's documented behaviour: tolerances per dtype, the
mismatch report, random shapes/arrays, and the symbolic checkers run on mxc's executor
(they must pass on correct gradients and FAIL on wrong expectations)."""
import os

import numpy as np
import pytest

import mxc as mx
from mxc import test_utils as tu


def test_defaults_and_tolerances():
    assert tu.default_context() == mx.current_context()
    assert tu.default_dtype() is np.float32
    assert tu.get_rtol() == 1e-5 and tu.get_atol() == 1e-20
    assert tu.get_rtol(dtype=np.float16) == 1e-2 and tu.get_atol(0.5) == 0.5
    assert tu.get_tols(np.zeros(2, np.float16), np.zeros(2, np.float32), None, None) == \
        (1e-2, 1e-1)
    assert tu.get_tols(np.zeros(2, np.int32), np.zeros(2, np.int32), None, None) == (0, 0)
    assert tu.get_tols(mx.nd.zeros((2,)), np.zeros(2), None, None) == (1e-4, 1e-3)
    assert tu.effective_dtype(mx.nd.zeros((1,), dtype="float16")) == np.float16
    assert tu.get_tolerance(np.zeros(1), {np.dtype(np.float64): 7.0}, {}) == 7.0
    prev = tu.default_context()
    try:
        tu.set_default_context(mx.cpu(1))
        assert mx.current_context() == mx.cpu(1)
    finally:
        tu.set_default_context(prev)


def test_assert_almost_equal_and_report(capsys):
    a = np.array([1.0, 2.0, 3.0, 4.0])
    tu.assert_almost_equal(a, a + 1e-7)
    tu.assert_almost_equal(mx.nd.array(a), a)          # NDArray vs numpy
    tu.assert_almost_equal(a, a + 0.05, rtol=0.1, atol=0)
    b = a.copy()
    b[2] = 3.5
    with pytest.raises(AssertionError) as e:
        tu.assert_almost_equal(a, b, names=("got", "want"))
    msg = str(e.value)
    assert "exceeds tolerance rtol=1.000000e-05" in msg
    assert "mismatch 25.000000%" in msg
    assert "Location of maximum error: (2,), got=3.00000000, want=3.50000000" in msg
    assert "*** Maximum errors for vector of size 4" in capsys.readouterr().out
    nan = np.array([1.0, np.nan])
    with pytest.raises(AssertionError):
        tu.assert_almost_equal(nan, nan)
    tu.assert_almost_equal(nan, nan, equal_nan=True)
    tu.assert_allclose(np.ones(3), np.ones(3))
    with pytest.raises(AssertionError):
        tu.assert_almost_equal(np.ones(3), np.ones(4), use_broadcast=False)
    assert tu.almost_equal(np.ones(2), np.ones(2) + 1e-9)
    assert not tu.almost_equal(np.ones(2), np.ones(2) + 1e-3)
    assert tu.almost_equal_ignore_nan(np.array([np.nan, 1.0]), np.array([5.0, 1.0]))
    idx, viol = tu.find_max_violation(a, b, 1e-5, 0)
    assert idx == (2,) and viol > 1e3
    assert tu.same(mx.nd.array(a), a) and not tu.same(a, b)
    tu.assert_almost_equal_with_err(a, b, etol=0.3)
    with pytest.raises(AssertionError):
        tu.assert_almost_equal_with_err(a, b, etol=0.2)


def test_random_helpers():
    np.random.seed(3)
    for _ in range(20):
        s2 = tu.rand_shape_2d(4, 5)
        assert 1 <= s2[0] <= 4 and 1 <= s2[1] <= 5
        s3 = tu.rand_shape_3d(2, 3, 4, allow_zero_size=True)
        assert all(0 <= d <= m for d, m in zip(s3, (2, 3, 4)))
        sn = tu.rand_shape_nd(4, 3)
        assert len(sn) == 4 and all(1 <= d <= 3 for d in sn)
    x = tu.random_arrays((2, 3))
    assert x.shape == (2, 3) and x.dtype == np.float32
    xs = tu.random_arrays((2,), ())
    assert len(xs) == 2 and xs[1].shape == ()
    arr = tu.rand_ndarray((3, 4), dtype="float64")
    assert isinstance(arr, mx.nd.NDArray) and arr.shape == (3, 4) and arr.dtype == np.float64
    csr = tu.rand_ndarray((5, 7), "csr", density=0.3)
    assert csr.stype == "csr" and csr.shape == (5, 7)
    assert np.count_nonzero(csr.asnumpy()) == int(5 * 7 * 0.3)
    rsp, (vals, idx) = tu.rand_sparse_ndarray((6, 2), "row_sparse", density=0.5,
                                              rsp_indices=np.array([1, 4]))
    dense = rsp.asnumpy()
    assert rsp.stype == "row_sparse" and np.allclose(dense[[1, 4]], vals)
    assert not dense[[0, 2, 3, 5]].any()
    # MXNet's documented powerlaw example: each row has twice the previous row's values
    pl, _ = tu.rand_sparse_ndarray((5, 16), "csr", density=0.5, distribution="powerlaw")
    indptr = pl.indptr.asnumpy()
    assert indptr[3] - indptr[2] == 2 * (indptr[2] - indptr[1])
    assert indptr[4] - indptr[3] == 2 * (indptr[3] - indptr[2])
    with pytest.raises(AssertionError):
        tu.rand_ndarray((2, 2), "bogus")
    assert sorted(tu.random_sample(list(range(10)), 4))[0] >= 0
    d = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_allclose(tu.np_reduce(d, (0, 2), True, np.sum),
                               d.sum(axis=(0, 2), keepdims=True))
    np.testing.assert_allclose(tu.np_reduce(d, None, False, np.max), 23.0)


def test_check_symbolic_forward_documented_example():
    lhs, rhs = mx.sym.Variable("lhs"), mx.sym.Variable("rhs")
    mat1 = np.array([[1, 2], [3, 4]])
    mat2 = np.array([[5, 6], [7, 8]])
    outs = tu.check_symbolic_forward(mx.sym.dot(lhs, rhs), [mat1, mat2],
                                     [np.array([[19, 22], [43, 50]])])
    assert outs[0].shape == (2, 2)
    with pytest.raises(AssertionError):
        tu.check_symbolic_forward(mx.sym.dot(lhs, rhs), [mat1, mat2],
                                  [np.array([[19, 22], [43, 51]])])
    # dict forms, aux states and float64
    data = mx.sym.Variable("data")
    bn = mx.sym.BatchNorm(data, fix_gamma=False, name="bn", eps=1e-3)
    x = np.random.rand(2, 3, 2).astype(np.float64)
    g, b, mm, mv = np.random.rand(3), np.random.rand(3), np.random.rand(3), \
        np.random.rand(3) + 0.5
    want = (x - mm[None, :, None]) / np.sqrt(mv[None, :, None] + 1e-3) * \
        g[None, :, None] + b[None, :, None]
    tu.check_symbolic_forward(bn, {"data": x, "bn_gamma": g, "bn_beta": b},
                              {"bn_output": want}, aux_states=[mm, mv], dtype=np.float64,
                              rtol=1e-6, atol=1e-8)


def test_check_symbolic_backward_grad_reqs():
    a, b = mx.sym.Variable("a"), mx.sym.Variable("b")
    x = np.random.rand(3, 5)
    y = np.random.rand(3, 5)
    og = np.random.rand(3, 5)
    sym = a * b
    for req in ("write", "add", {"a": "null", "b": "write"}):
        tu.check_symbolic_backward(sym, [x, y], [og], [og * y, og * x], grad_req=req)
    with pytest.raises(AssertionError):
        tu.check_symbolic_backward(sym, [x, y], [og], [og * x, og * x])
    grads = tu.check_symbolic_backward(sym, {"a": x, "b": y}, {sym.list_outputs()[0]: og},
                                       {"a": og * y, "b": og * x})
    assert set(grads) == {"a", "b"}


def test_check_numeric_gradient_passes_and_fails():
    a, b = mx.sym.Variable("a"), mx.sym.Variable("b")
    x = np.random.rand(2, 3) + 0.5
    y = np.random.rand(2, 3)
    tu.check_numeric_gradient(mx.sym.tanh(a) * b, [x, y], numeric_eps=1e-3, rtol=1e-2,
                              atol=1e-3)
    tu.check_numeric_gradient(mx.sym.log(a), {"a": x}, numeric_eps=1e-4, rtol=1e-3,
                              atol=1e-4, dtype=np.float64)
    tu.check_numeric_gradient(mx.sym.sin(a) + b, [x, y], grad_nodes={"a": "write",
                                                                    "b": "add"},
                              numeric_eps=1e-3, rtol=1e-2, atol=1e-3)
    # BlockGrad's symbolic gradient is 0, finite differences are not: must fail
    with pytest.raises(AssertionError):
        tu.check_numeric_gradient(mx.sym.BlockGrad(a) * 3, [x], numeric_eps=1e-3,
                                  rtol=1e-2, atol=1e-3)


def test_check_consistency_and_simple_forward():
    data = mx.sym.Variable("data")
    fc = mx.sym.FullyConnected(data, num_hidden=3, name="fc")
    ctx_list = [{"ctx": mx.cpu(0), "data": (2, 4), "type_dict": {"data": np.float64}},
                {"ctx": mx.cpu(0), "data": (2, 4), "type_dict": {"data": np.float32}}]
    gt = tu.check_consistency(fc, ctx_list)
    assert "fc_output" in gt and "fc_weight" in gt
    out = tu.simple_forward(mx.sym.relu(data), data=np.array([[-1.0, 2.0]]))
    np.testing.assert_array_equal(out, [[0.0, 2.0]])


def test_environment_and_misc(tmp_path):
    key = "MXC_TEST_UTILS_PROBE"
    os.environ.pop(key, None)
    with tu.environment(key, "1"):
        assert os.environ[key] == "1"
        with tu.environment({key: None}):
            assert key not in os.environ
        assert os.environ[key] == "1"
    assert key not in os.environ
    with pytest.raises(RuntimeError), tu.environment(key, "2"):
        raise RuntimeError("boom")
    assert key not in os.environ
    assert tu.set_env_var(key, "x", "dflt") == "dflt"
    assert tu.set_env_var(key, "y") == "x"
    os.environ.pop(key)
    tu.assert_exception(int, ValueError, "not a number")
    with pytest.raises(AssertionError):
        tu.assert_exception(int, ValueError, "12")
    assert list(tu.list_gpus()) == list(range(mx.num_gpus()))
    with tu.discard_stderr():
        os.write(2, b"")
    it = mx.io.NDArrayIter(np.arange(8.0).reshape(4, 2), np.arange(4.0), batch_size=2)
    dummy = tu.DummyIter(it)
    b1, b2 = next(dummy), next(dummy)
    assert b1 is b2 and dummy.batch_size == 2
    with pytest.raises(mx.MXNetError, match="network"):
        tu.download("http://example.invalid/x.bin", dirname=str(tmp_path))
    (tmp_path / "x.bin").write_bytes(b"1")
    assert tu.download("http://example.invalid/x.bin", dirname=str(tmp_path)).endswith("x.bin")
    with pytest.raises(mx.MXNetError, match="network"):
        tu.get_mnist(str(tmp_path))
    calls = []

    @tu.retry(3)
    def flaky():
        calls.append(1)
        assert len(calls) >= 2
    flaky()
    assert len(calls) == 2
