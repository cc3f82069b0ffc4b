"""Elementwise ops: forward vs the numpy reference and gradients vs finite differences."""
import numpy as np
import pytest

from mxc.base import OpError, ShapeError
from mxc.ir.ops.elemwise import BINARY, SCALAR, UNARY
from mxc.testing import check_forward, check_grad, run_op

RNG = np.random.default_rng(42)

# inputs inside each function's domain, away from kinks where finite differences break
DOMAIN = {
    "log": (0.2, 3), "log2": (0.2, 3), "log10": (0.2, 3), "log1p": (-0.5, 3),
    "sqrt": (0.2, 3), "rsqrt": (0.2, 3), "cbrt": (0.2, 3), "rcbrt": (0.2, 3),
    "reciprocal": (0.5, 3), "arcsin": (-0.8, 0.8), "arccos": (-0.8, 0.8),
    "arccosh": (1.2, 3), "arctanh": (-0.8, 0.8), "erfinv": (-0.8, 0.8),
    "gamma": (0.5, 3), "gammaln": (0.5, 3), "tan": (-1.2, 1.2),
}
NONSMOOTH = {"abs", "sign", "floor", "ceil", "round", "rint", "fix", "trunc", "relu",
             "logical_not", "gamma", "gammaln"}
UNARY_OPS = sorted(n for n in UNARY if n != "softrelu")


def _inp(name, shape, dtype=np.float32):
    lo, hi = DOMAIN.get(name, (-2, 2))
    x = RNG.uniform(lo, hi, size=shape)
    if name in NONSMOOTH:  # keep away from the kinks
        x = np.where(np.abs(x - np.round(x)) < 0.1, x + 0.25, x)
    return x.astype(dtype)


@pytest.mark.parametrize("name", UNARY_OPS)
def test_unary_forward_and_grad(name):
    x = _inp(name, (3, 7))
    check_forward(name, [x], rtol=2e-5, atol=1e-6)
    check_forward(name, [x.astype(np.float64)], rtol=1e-12, atol=1e-13) \
        if name not in ("erf", "erfinv", "gamma", "gammaln") else None
    if name not in ("gamma", "gammaln"):
        check_grad(name, [x.astype(np.float64)], rtol=1e-4, atol=1e-6, eps=1e-6)


@pytest.mark.parametrize("shape", [(0,), (1,), (2, 0, 3), (1, 1, 1), (5000,), (3, 9000)])
def test_unary_shapes(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    check_forward("tanh", [x])
    check_forward("negative", [x])


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32, np.int64, np.uint8, np.int8])
def test_unary_dtypes(dtype):
    x = (RNG.uniform(0, 5, (4, 5))).astype(dtype)
    for op in ("abs", "square", "relu", "negative" if np.dtype(dtype).kind != "u" else "sign"):
        check_forward(op, [x], rtol=1e-3 if dtype == np.float16 else 1e-6)
    if np.dtype(dtype).kind == "f":
        check_forward("exp", [x], rtol=1e-3 if dtype == np.float16 else 1e-6)


def test_special_values():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, 88.0, -88.0, -100.0],
                 np.float32)
    out = run_op("exp", [x])[0][0]
    np.testing.assert_array_equal(np.isnan(out), np.isnan(np.exp(x)))
    assert out[0] == np.inf and out[1] == 0.0
    sig = run_op("sigmoid", [x])[0][0]
    assert sig[0] == 1.0 and sig[1] == 0.0 and sig[8] >= 0.0
    th = run_op("tanh", [np.array([50.0, -50.0, 0.0], np.float32)])[0][0]
    np.testing.assert_array_equal(th, [1.0, -1.0, 0.0])


@pytest.mark.parametrize("fn", sorted(BINARY))
def test_binary_broadcast(fn):
    a = RNG.uniform(0.5, 2, (2, 3, 4)).astype(np.float64)
    b = RNG.uniform(0.5, 2, (1, 3, 1)).astype(np.float64)
    check_forward(f"broadcast_{fn}", [a, b], rtol=1e-12)
    if fn not in ("mod",):
        check_grad(f"broadcast_{fn}", [a, b], rtol=1e-4, atol=1e-6, eps=1e-6)
    ew = {"add": "elemwise_add", "sub": "elemwise_sub", "mul": "elemwise_mul",
          "div": "elemwise_div"}.get(fn, f"_{fn}")
    b2 = RNG.uniform(0.5, 2, a.shape)
    check_forward(ew, [a, b2], rtol=1e-12)


def test_broadcast_rank_mismatch_and_errors():
    a = RNG.standard_normal((4, 1, 5)).astype(np.float32)
    b = RNG.standard_normal((3, 1)).astype(np.float32)
    check_forward("broadcast_add", [a, b])
    check_grad("broadcast_mul", [a.astype(np.float64), b.astype(np.float64)], eps=1e-6,
               rtol=1e-5, atol=1e-7)
    with pytest.raises(ShapeError, match="broadcast"):
        run_op("broadcast_add", [np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)])
    with pytest.raises(ShapeError):
        run_op("elemwise_add", [np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32)])


def test_integer_binary_semantics():
    a = np.array([7, -7, 7, -7, 0], np.int32)
    b = np.array([2, 2, -2, -2, 3], np.int32)
    check_forward("broadcast_mod", [a, b], rtol=0, atol=0)
    check_forward("broadcast_maximum", [a, b], rtol=0, atol=0)
    out = run_op("broadcast_div", [a, b])[0][0]
    np.testing.assert_array_equal(out, np.trunc(a / b).astype(np.int32))


@pytest.mark.parametrize("name", sorted(SCALAR))
def test_scalar_ops(name):
    x = RNG.uniform(0.5, 2, (3, 5)).astype(np.float64)
    check_forward(name, [x], {"scalar": 1.5}, rtol=1e-12)
    if SCALAR[name][1] is not None and "mod" not in name:
        check_grad(name, [x], {"scalar": 1.5}, rtol=1e-4, atol=1e-6, eps=1e-6)


def test_add_n_clip_where_cast():
    x = RNG.standard_normal((4, 6))
    check_forward("add_n", [x, 2 * x, -x], {"num_args": 3})
    check_grad("add_n", [x, 2 * x, -x], {"num_args": 3}, eps=1e-6, rtol=1e-6)
    check_forward("clip", [x], {"a_min": -0.5, "a_max": 0.5})
    check_grad("clip", [x + 0.013], {"a_min": -0.5, "a_max": 0.5}, eps=1e-6, rtol=1e-6)
    c = (x > 0).astype(np.float64)
    check_forward("where", [c, x, -x])
    check_grad("where", [c, x, 3 * x], which=[1, 2], eps=1e-6, rtol=1e-6)
    c1 = np.array([1, 0, 1, 0], np.float64)
    check_forward("where", [c1, x, -x])
    for dt in ("float16", "float64", "int32", "uint8", "bool", "int64"):
        check_forward("Cast", [np.abs(x) * 3], {"dtype": dt}, rtol=1e-3)
    check_grad("Cast", [x], {"dtype": "float64"}, eps=1e-6, rtol=1e-6)


def test_creation_ops():
    check_forward("_zeros", [], {"shape": (2, 3), "dtype": "int32"}, rtol=0)
    check_forward("_ones", [], {"shape": (0, 3)}, rtol=0)
    check_forward("_full", [], {"shape": (4,), "value": 2.5, "dtype": "float64"}, rtol=0)
    check_forward("_arange", [], {"start": 2, "stop": 11, "step": 1.5, "repeat": 2}, rtol=0)
    check_forward("_arange", [], {"start": 5}, rtol=0)
    check_forward("_arange", [], {"start": 5, "stop": 0, "step": -1, "dtype": "int64"}, rtol=0)


def test_identity_family_and_gradients():
    x = RNG.standard_normal((3, 4))
    check_forward("_copy", [x], rtol=0)
    check_grad("_copy", [x], eps=1e-6, rtol=1e-6)
    _, grads, _ = run_op("BlockGrad", [x], head_grads=[np.ones_like(x)])
    np.testing.assert_array_equal(grads[0], 0)
    _, grads, _ = run_op("relu", [x], head_grads=[np.ones_like(x)], grad_req="null")
    assert grads == [None]


def test_bad_attributes():
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(OpError, match="unknown attribute 'foo'"):
        run_op("relu", [x], {"foo": 1})
    with pytest.raises(OpError, match="a_min"):
        run_op("clip", [x], {"a_max": 1})
    with pytest.raises(OpError, match="scalar"):
        run_op("_plus_scalar", [x], {"scalar": "abc"})
    with pytest.raises(OpError, match="act_type"):
        run_op("Activation", [x], {"act_type": "swish"})
    with pytest.raises(OpError, match="unknown operator"):
        run_op("NoSuchOp", [x])


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "softrelu", "softsign",
                                 "log_sigmoid", "mish"])
def test_activation(act):
    x = RNG.uniform(-2, 2, (4, 5))
    x = np.where(np.abs(x) < 0.05, 0.3, x)
    check_forward("Activation", [x.astype(np.float32)], {"act_type": act}, rtol=2e-5,
                  atol=1e-6)
    check_grad("Activation", [x], {"act_type": act}, eps=1e-6, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# hard_sigmoid
# ---------------------------------------------------------------------------------------------
def test_hard_sigmoid_forward():
    # defaults alpha=0.2, beta=0.5: saturates outside [-2.5, 2.5]
    x = np.array([-4, -2.5, -1, 0, 1, 2.4, 3], np.float32)
    out = check_forward("hard_sigmoid", [x])
    np.testing.assert_allclose(out[0], [0, 0, 0.3, 0.5, 0.7, 0.98, 1], rtol=1e-6, atol=1e-7)
    for dtype in (np.float32, np.float64, np.float16):
        y = RNG.uniform(-5, 5, (3, 7)).astype(dtype)
        check_forward("hard_sigmoid", [y], {"alpha": 0.3, "beta": 0.1}, rtol=1e-3 if
                      dtype == np.float16 else 1e-6, atol=1e-3 if dtype == np.float16 else 1e-7)
    check_forward("hard_sigmoid", [np.zeros((0, 4), np.float32)])


def test_hard_sigmoid_gradient():
    x = np.array([-4.0, -2.0, -0.3, 0.7, 1.9, 2.6, 6.0])   # away from the clip points
    check_grad("hard_sigmoid", [x], eps=1e-6, rtol=1e-6, atol=1e-8)
    check_grad("hard_sigmoid", [RNG.uniform(-1, 1, (2, 5))], {"alpha": 0.5, "beta": 0.2},
               eps=1e-6, rtol=1e-6, atol=1e-8)
    _, grads, _ = run_op("hard_sigmoid", [x.astype(np.float32)],
                         head_grads=[np.ones(x.shape, np.float32)])
    np.testing.assert_allclose(grads[0], np.where(np.abs(x) < 2.5, 0.2, 0), rtol=1e-6)


def test_hard_sigmoid_bad_input():
    with pytest.raises(OpError, match="floating-point"):
        run_op("hard_sigmoid", [np.ones((2, 2), np.int32)])
    with pytest.raises(OpError, match="alpha"):
        run_op("hard_sigmoid", [np.ones((2, 2), np.float32)], {"alpha": "x"})
