"""mx.nd.linalg.* (MXNet's _linalg_* family): forward against numpy.linalg and MXNet's
documented examples, gradients against finite differences of the numpy references."""
import numpy as np
import pytest

from mxc.base import OpError, ShapeError
from mxc.testing import check_forward, check_grad, reference, run_op

RNG = np.random.default_rng(11)


def rnd(*shape, dtype="float64"):
    return RNG.standard_normal(shape).astype(dtype)


def spd(*shape, dtype="float64"):
    """Well-conditioned symmetric positive definite matrices."""
    x = rnd(*shape)
    n = shape[-1]
    return (x @ np.swapaxes(x, -1, -2) + n * np.eye(n)).astype(dtype)


def tri(*shape, lower=True, dtype="float64"):
    """Well-conditioned triangular matrices (garbage in the other triangle, which the ops
    must ignore)."""
    n = shape[-1]
    x = rnd(*shape) * 0.3 + 2.0 * np.eye(n)
    return x.astype(dtype)


def sym(*shape, dtype="float64"):
    x = rnd(*shape)
    return (x + np.swapaxes(x, -1, -2)).astype(dtype)


def tol(dtype):
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == "float32" else {"rtol": 1e-8, "atol": 1e-9}


def check_sym_grad(op, a, attrs, out_index_weights=None, eps=1e-5, rtol=1e-4):
    """For ops defined on symmetric matrices (reading one triangle): the compiled gradient G
    must give the directional derivative along symmetric directions E: <G, E> =
    d/dt sum(head * op(A + tE))."""
    outs = reference(op, [a], attrs)
    heads = [RNG.standard_normal(np.shape(o)) for o in outs]
    _, grads, _ = run_op(op, [a], attrs, head_grads=heads)
    for _ in range(3):
        e = sym(*a.shape)

        def f(x):
            return sum(float(np.sum(np.asarray(o) * h)) for o, h in
                       zip(reference(op, [x], attrs), heads))

        num = (f(a + eps * e) - f(a - eps * e)) / (2 * eps)
        np.testing.assert_allclose(np.sum(grads[0] * e), num, rtol=rtol, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# extractdiag / makediag / extracttrian / maketrian
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0, 2, -1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_diag_forward(offset, dtype):
    check_forward("_linalg_extractdiag", [rnd(2, 3, 5, 5, dtype=dtype)], {"offset": offset})
    got = check_forward("_linalg_makediag", [rnd(3, 4, dtype=dtype)], {"offset": offset})
    assert got[0].shape == (3, 4 + abs(offset), 4 + abs(offset))


def test_diag_documented_examples():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    assert run_op("_linalg_extractdiag", [a])[0][0].tolist() == [1.0, 4.0]
    assert run_op("_linalg_extractdiag", [a], {"offset": 1})[0][0].tolist() == [2.0]
    b = run_op("_linalg_makediag", [np.array([1.0, 2.0], "float32")], {"offset": 1})[0][0]
    assert b.tolist() == [[0, 1, 0], [0, 0, 2], [0, 0, 0]]


@pytest.mark.parametrize("offset,lower", [(0, True), (0, False), (1, True), (-2, False)])
def test_trian_forward(offset, lower):
    attrs = {"offset": offset, "lower": lower}
    check_forward("_linalg_extracttrian", [rnd(2, 5, 5, dtype="float32")], attrs)
    check_forward("_linalg_extracttrian", [rnd(1, 1)], {"lower": lower})
    check_forward("_linalg_maketrian", [rnd(3, 10)], attrs)
    check_forward("_linalg_maketrian", [rnd(1, dtype="float32")], attrs)


def test_trian_documented_examples():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    ex = lambda **kw: run_op("_linalg_extracttrian", [a], kw)[0][0].tolist()
    assert ex() == [1.0, 3.0, 4.0]
    assert ex(lower=False) == [1.0, 2.0, 4.0]
    assert ex(offset=1) == [2.0] and ex(offset=-1) == [3.0]
    v = np.array([1.0, 2.0, 3.0])
    mk = lambda **kw: run_op("_linalg_maketrian", [v], kw)[0][0].tolist()
    assert mk() == [[1, 0], [2, 3]]
    assert mk(lower=False) == [[1, 2], [0, 3]]
    assert mk(offset=1) == [[0, 1, 2], [0, 0, 3], [0, 0, 0]]
    assert mk(offset=-1) == [[0, 0, 0], [1, 0, 0], [2, 3, 0]]
    # extracttrian inverts maketrian on a large triangle (the packed-row search is exact)
    big = rnd(820)   # 40 * 41 / 2
    m = run_op("_linalg_maketrian", [big], {"offset": 0})[0][0]
    np.testing.assert_array_equal(run_op("_linalg_extracttrian", [m])[0][0], big)


def test_diag_trian_gradients():
    check_grad("_linalg_extractdiag", [rnd(2, 3, 3)], {"offset": 1})
    check_grad("_linalg_makediag", [rnd(2, 3)], {"offset": -1})
    check_grad("_linalg_extracttrian", [rnd(2, 4, 4)], {"offset": 0, "lower": False})
    check_grad("_linalg_maketrian", [rnd(2, 6)], {"offset": 1})


def test_diag_trian_shape_errors():
    with pytest.raises(ShapeError):
        run_op("_linalg_extractdiag", [rnd(3, 4)])          # not square
    with pytest.raises(ShapeError):
        run_op("_linalg_extractdiag", [rnd(3, 3)], {"offset": 3})
    with pytest.raises(ShapeError):
        run_op("_linalg_maketrian", [rnd(4)])               # 4 is not triangular
    with pytest.raises(OpError):
        run_op("_linalg_extracttrian", [rnd(3, 3)], {"upper": True})


# ---------------------------------------------------------------------------------------------
# gemm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_forward(ta, tb, dtype):
    m, k, n = 3, 5, 1
    a = rnd(2, k, m, dtype=dtype) if ta else rnd(2, m, k, dtype=dtype)
    b = rnd(2, n, k, dtype=dtype) if tb else rnd(2, k, n, dtype=dtype)
    attrs = {"transpose_a": ta, "transpose_b": tb, "alpha": 1.5, "beta": -0.5}
    check_forward("_linalg_gemm", [a, b, rnd(2, m, n, dtype=dtype)], attrs, **tol(dtype))


@pytest.mark.parametrize("shapes", [((2, 3, 2, 4), (2, 4, 2, 5)), ((5, 3, 2, 4), (5, 4, 2, 5)),
                                    ((3, 2, 4), (4, 2, 5))])
def test_gemm_axis(shapes):
    sa, sb = shapes
    out = list(sa)
    out[-1] = sb[-1]
    attrs = {"axis": -3, "beta": 2.0}
    check_forward("_linalg_gemm", [rnd(*sa), rnd(*sb), rnd(*out)], attrs, rtol=1e-10)
    check_grad("_linalg_gemm", [rnd(*sa), rnd(*sb), rnd(*out)], attrs)


def test_gemm_documented_examples():
    a, b, c = np.ones((2, 2)), np.ones((3, 2)), np.ones((2, 3))
    out = run_op("_linalg_gemm", [a, b, c], {"transpose_b": True, "alpha": 2.0, "beta": 10.0})
    np.testing.assert_allclose(out[0][0], np.full((2, 3), 14.0))
    a = np.array([[[1.0, 1.0]], [[0.1, 0.1]]])
    out = run_op("_linalg_gemm", [a, a, np.array([[[10.0]], [[0.01]]])],
                 {"transpose_b": True, "alpha": 2.0, "beta": 10.0})
    np.testing.assert_allclose(out[0][0], [[[104.0]], [[0.14]]])


@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)])
def test_gemm_gradient(ta, tb):
    a = rnd(2, 4, 3) if ta else rnd(2, 3, 4)
    b = rnd(2, 5, 4) if tb else rnd(2, 4, 5)
    check_grad("_linalg_gemm", [a, b, rnd(2, 3, 5)],
               {"transpose_a": ta, "transpose_b": tb, "alpha": 0.7, "beta": 0.3})


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_gemm_empty_contraction(beta):
    """k == 0: the product is zero, only beta * C is left (never reading C when beta == 0)."""
    rng = np.random.default_rng(5)
    a = np.zeros((2, 3, 0), np.float32)
    b = np.zeros((2, 0, 4), np.float32)
    c = rng.standard_normal((2, 3, 4)).astype(np.float32)
    out = check_forward("_linalg_gemm", [a, b, c], {"alpha": 2.0, "beta": beta})
    np.testing.assert_allclose(out[0], beta * c, rtol=1e-6)


def test_gemm_errors():
    with pytest.raises(ShapeError):
        run_op("_linalg_gemm", [rnd(3, 4), rnd(5, 2), rnd(3, 2)])
    with pytest.raises(ShapeError):
        run_op("_linalg_gemm", [rnd(3, 4), rnd(4, 2), rnd(3, 3)])
    with pytest.raises(ShapeError):
        run_op("_linalg_gemm", [rnd(3, 4), rnd(4, 2), rnd(3, 2)], {"axis": -1})
    with pytest.raises(OpError):
        run_op("_linalg_gemm", [x.astype("int32") for x in (rnd(3, 4), rnd(4, 2), rnd(3, 2))])


# ---------------------------------------------------------------------------------------------
# trmm / trsm
# ---------------------------------------------------------------------------------------------
TRI_CASES = [(rs, lo, t) for rs in (False, True) for lo in (True, False) for t in (False, True)]


@pytest.mark.parametrize("rightside,lower,transpose", TRI_CASES)
def test_trmm_trsm(rightside, lower, transpose):
    attrs = {"rightside": rightside, "lower": lower, "transpose": transpose, "alpha": -1.5}
    a = tri(2, 3, 3)
    b = rnd(2, 5, 3) if rightside else rnd(2, 3, 5)
    check_forward("_linalg_trmm", [a, b], attrs, rtol=1e-10, atol=1e-12)
    check_forward("_linalg_trsm", [a, b], attrs, rtol=1e-8, atol=1e-10)
    check_grad("_linalg_trmm", [a, b], attrs)
    check_grad("_linalg_trsm", [a, b], attrs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trmm_trsm_odd_shapes(dtype):
    for n, k in ((1, 1), (5, 3)):
        a, b = tri(3, n, n, dtype=dtype), rnd(3, n, k, dtype=dtype)
        check_forward("_linalg_trmm", [a, b], {}, **tol(dtype))
        check_forward("_linalg_trsm", [a, b], {"alpha": 2.0}, **tol(dtype))


def test_trmm_trsm_documented_examples():
    a = np.array([[1.0, 0], [1.0, 1.0]])
    out = run_op("_linalg_trmm", [a, np.ones((2, 3))], {"alpha": 2.0})[0][0]
    np.testing.assert_allclose(out, [[2.0] * 3, [4.0] * 3])
    b = np.array([[2.0] * 3, [4.0] * 3])
    out = run_op("_linalg_trsm", [a, b], {"alpha": 0.5})[0][0]
    np.testing.assert_allclose(out, np.ones((2, 3)))
    with pytest.raises(ShapeError):
        run_op("_linalg_trsm", [rnd(3, 3), rnd(4, 2)])


# ---------------------------------------------------------------------------------------------
# potrf / potri
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_potrf_potri_forward(lower, dtype):
    for shape in ((1, 1), (2, 3, 3), (5, 5)):
        a = spd(*shape, dtype=dtype)
        f = check_forward("_linalg_potrf", [a], {"lower": lower}, **tol(dtype))[0]
        check_forward("_linalg_potri", [f], {"lower": lower}, **tol(dtype))
        inv = run_op("_linalg_potri", [f], {"lower": lower})[0][0]
        np.testing.assert_allclose(inv, np.linalg.inv(a.astype(np.float64)), **tol(dtype))


def test_potrf_potri_documented_examples():
    a = np.array([[[4.0, 1.0], [1.0, 4.25]], [[16.0, 4.0], [4.0, 17.0]]])
    np.testing.assert_allclose(run_op("_linalg_potrf", [a])[0][0],
                               [[[2.0, 0], [0.5, 2.0]], [[4.0, 0], [1.0, 4.0]]])
    np.testing.assert_allclose(run_op("_linalg_potri", [np.array([[2.0, 0], [0.5, 2.0]])])[0][0],
                               [[0.265625, -0.0625], [-0.0625, 0.25]])


@pytest.mark.parametrize("lower", [True, False])
def test_potrf_potri_gradient(lower):
    check_sym_grad("_linalg_potrf", spd(2, 4, 4), {"lower": lower})
    check_grad("_linalg_potri", [tri(2, 3, 3, lower=lower)], {"lower": lower})


# ---------------------------------------------------------------------------------------------
# syrk / sumlogdiag
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transpose", [False, True])
def test_syrk(transpose):
    check_forward("_linalg_syrk", [rnd(2, 3, 5, dtype="float32")],
                  {"transpose": transpose, "alpha": 0.5}, rtol=1e-5, atol=1e-5)
    check_grad("_linalg_syrk", [rnd(2, 3, 4)], {"transpose": transpose, "alpha": 1.5})
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    want = [[17, 22, 27], [22, 29, 36], [27, 36, 45]] if transpose else [[14, 32], [32, 77]]
    np.testing.assert_allclose(run_op("_linalg_syrk", [a], {"transpose": transpose})[0][0],
                               want)


def test_sumlogdiag():
    got = check_forward("_linalg_sumlogdiag", [spd(3, 4, 4)], rtol=1e-10)
    assert got[0].shape == (3,)
    got = check_forward("_linalg_sumlogdiag", [spd(1, 1, dtype="float32")])
    assert got[0].shape == (1,)
    check_grad("_linalg_sumlogdiag", [spd(2, 3, 3)])
    a = np.array([[[1.0, 1.0], [1.0, 7.0]], [[3.0, 0], [0, 17.0]]])
    np.testing.assert_allclose(run_op("_linalg_sumlogdiag", [a])[0][0], [1.9459, 3.9318],
                               rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# inverse / det / slogdet
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inverse_det_forward(dtype):
    for shape in ((1, 1), (3, 3), (2, 5, 5)):
        a = (rnd(*shape) + 2 * np.eye(shape[-1])).astype(dtype)
        check_forward("_linalg_inverse", [a], **tol(dtype))
        got = check_forward("_linalg_det", [a], **tol(dtype))
        assert got[0].shape == (shape[:-2] or (1,))
        check_forward("_linalg_slogdet", [a], **tol(dtype))


def test_inverse_det_documented_examples():
    a = np.array([[[1.0, 4.0], [2.0, 3.0]], [[1.0, 3.0], [2.0, 4.0]]])
    np.testing.assert_allclose(run_op("_linalg_inverse", [a])[0][0],
                               [[[-0.6, 0.8], [0.4, -0.2]], [[-2.0, 1.5], [1.0, -0.5]]])
    a = np.array([[[1.0, 4.0], [2.0, 3.0]], [[2.0, 3.0], [1.0, 4.0]]])
    np.testing.assert_allclose(run_op("_linalg_det", [a])[0][0], [-5.0, 5.0])
    a = np.array([[[2.0, 3.0], [1.0, 4.0]], [[1.0, 2.0], [2.0, 4.0]], [[1.0, 2.0], [4.0, 3.0]]])
    sign, logdet = run_op("_linalg_slogdet", [a])[0]
    np.testing.assert_allclose(sign, [1.0, 0.0, -1.0])
    np.testing.assert_allclose(logdet, [1.609438, -np.inf, 1.609438], rtol=1e-6)


def test_inverse_det_gradient():
    a = rnd(2, 3, 3) + 2 * np.eye(3)
    check_grad("_linalg_inverse", [a], rtol=1e-4, atol=1e-6, eps=1e-6)
    check_grad("_linalg_det", [a], rtol=1e-4, atol=1e-6, eps=1e-6)
    check_grad("_linalg_slogdet", [a], rtol=1e-4, atol=1e-6, eps=1e-6)
    # no gradient flows back through a singular matrix (MXNet's StopZeroDetGrad)
    s = np.array([[1.0, 2.0], [2.0, 4.0]])
    _, grads, _ = run_op("_linalg_det", [s], head_grads=[np.ones(1)])
    np.testing.assert_array_equal(grads[0], np.zeros((2, 2)))


def test_det_errors():
    with pytest.raises(ShapeError):
        run_op("_linalg_det", [rnd(2, 3)])
    with pytest.raises(OpError):
        run_op("_linalg_inverse", [rnd(2, 2).astype("float16")])


# ---------------------------------------------------------------------------------------------
# gelqf / syevd
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gelqf_forward(dtype):
    for shape in ((1, 1), (3, 5), (2, 4, 4), (2, 1, 3)):
        check_forward("_linalg_gelqf", [rnd(*shape, dtype=dtype)], **tol(dtype))


def test_gelqf_documented_example_and_gradient():
    q, lo = run_op("_linalg_gelqf", [np.array([[[1.0, 2, 3], [4, 5, 6]],
                                               [[7, 8, 9], [10, 11, 12]]])])[0]
    np.testing.assert_allclose(q[1], [[-0.50257071, -0.57436653, -0.64616234],
                                      [0.7620735, 0.05862104, -0.64483142]], rtol=1e-6)
    np.testing.assert_allclose(lo[0], [[-3.74165739, 0.0], [-8.55235974, 1.96396101]],
                               rtol=1e-7)
    check_grad("_linalg_gelqf", [rnd(2, 3, 5)], rtol=1e-4, atol=1e-6, eps=1e-6)
    with pytest.raises(ShapeError):
        run_op("_linalg_gelqf", [rnd(4, 3)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_syevd_forward(dtype):
    for shape in ((1, 1), (2, 3, 3), (6, 6)):
        check_forward("_linalg_syevd", [sym(*shape, dtype=dtype)], **tol(dtype))


def test_syevd_documented_example_and_gradient():
    u, lam = run_op("_linalg_syevd", [np.array([[[1.0, 2.0], [2.0, 4.0]],
                                                [[1.0, 2.0], [2.0, 5.0]]])])[0]
    np.testing.assert_allclose(u, [[[0.89442719, -0.4472136], [0.4472136, 0.89442719]],
                                   [[0.92387953, -0.38268343], [0.38268343, 0.92387953]]],
                               rtol=1e-7)
    np.testing.assert_allclose(lam, [[0.0, 5.0], [0.17157288, 5.82842712]], atol=1e-8)
    check_sym_grad("_linalg_syevd", sym(2, 4, 4), {})


# ---------------------------------------------------------------------------------------------
# front-end names
# ---------------------------------------------------------------------------------------------
def test_namespaces():
    import mxc as mx

    a = mx.nd.array(spd(3, 3))
    lo = mx.nd.linalg.potrf(a)
    back = mx.nd.linalg.gemm2(lo, lo, transpose_b=True)
    np.testing.assert_allclose(back.asnumpy(), a.asnumpy(), rtol=1e-5)
    assert mx.nd.linalg_potrf is not None and hasattr(mx.sym.linalg, "syevd")
