"""Pooling: every pool type and convention, 1-D/2-D/3-D, padding, global pooling; forward and
gradients, plus a loop-by-loop oracle for the numpy reference itself."""
import itertools
import math

import numpy as np
import pytest

from mxc.base import OpError, ShapeError
from mxc.testing import check_forward, check_grad, reference, run_op

RNG = np.random.default_rng(3)


def rnd(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def distinct(*shape, dtype="float64"):
    """Values at least 0.1 apart, so max pooling has no near-ties for finite differences."""
    n = math.prod(shape)
    return (RNG.permutation(n).reshape(shape) * 0.1 - 0.05 * n).astype(dtype)


def naive_pool(x, kernel, stride, pad, pool_type, convention="valid", include_pad=True,
               p_value=2, global_pool=False):
    """MXNet's pooling, one window at a time (pool.h semantics)."""
    nd = x.ndim - 2
    X = x.shape[2:]
    if global_pool:
        kernel, stride, pad = X, (1,) * nd, (0,) * nd
    out = []
    for xx, k, s, p in zip(X, kernel, stride, pad):
        if convention == "valid":
            out.append(1 + (xx + 2 * p - k) // s)
        elif convention == "full":
            out.append(1 + math.ceil((xx + 2 * p - k) / s))
        else:
            out.append(math.ceil((xx + 2 * p) / s))
    y = np.zeros(x.shape[:2] + tuple(out))
    for o in itertools.product(*[range(n) for n in out]):
        start = [oo * s - p for oo, s, p in zip(o, stride, pad)]
        end = [min(st + k, xx + p) for st, k, xx, p in zip(start, kernel, X, pad)]
        size = math.prod(e - st for st, e in zip(start, end))
        cs = [max(st, 0) for st in start]
        ce = [min(e, xx) for e, xx in zip(end, X)]
        if not include_pad:
            size = math.prod(e - st for st, e in zip(cs, ce))
        win = x[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(cs, ce))]
        win = win.reshape(x.shape[:2] + (-1,)).astype(np.float64)
        if pool_type == "max":
            v = win.max(-1) if win.shape[-1] else np.full(x.shape[:2], np.finfo(x.dtype).min)
        elif pool_type == "sum":
            v = win.sum(-1)
        elif pool_type == "avg":
            v = win.sum(-1) / size
        else:
            v = (win ** p_value).sum(-1) ** (1.0 / p_value)
        y[(slice(None), slice(None)) + o] = v
    return y


CASES = [  # data shape, attrs
    ((2, 3, 9), {"kernel": (3,), "stride": (2,), "pad": (1,)}),
    ((2, 3, 10), {"kernel": (4,), "stride": (3,), "pooling_convention": "full"}),
    ((2, 3, 10), {"kernel": (3,), "stride": (2,), "pooling_convention": "same"}),
    ((2, 3, 7, 9), {"kernel": (3, 2), "stride": (2, 2), "pad": (1, 1)}),
    ((1, 2, 8, 7), {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1), "pooling_convention": "full"}),
    ((2, 2, 9, 11), {"kernel": (3, 3), "pad": (1, 1)}),                      # stride 1
    ((2, 2, 6, 5), {"kernel": (2, 2), "stride": (2, 2)}),                    # non-overlapping
    ((1, 2, 5, 6, 7), {"kernel": (2, 3, 2), "stride": (1, 2, 2), "pad": (1, 1, 0)}),
    ((1, 2, 4, 5, 6), {"kernel": (3, 3, 3), "stride": (2, 2, 2), "pad": (1, 1, 1),
                           "pooling_convention": "full"}),
    ((2, 3, 5, 6), {"kernel": (1, 1), "global_pool": True}),
]


@pytest.mark.parametrize("shape,attrs", CASES)
@pytest.mark.parametrize("pool_type", ["max", "avg", "sum"])
def test_pool_forward(shape, attrs, pool_type):
    x = rnd(*shape)
    a = dict(attrs, pool_type=pool_type)
    got = check_forward("Pooling", [x], a, rtol=1e-5, atol=1e-5)
    want = naive_pool(x, attrs.get("kernel"), attrs.get("stride", (1,) * (len(shape) - 2)),
                      attrs.get("pad", (0,) * (len(shape) - 2)), pool_type,
                      attrs.get("pooling_convention", "valid"),
                      global_pool=attrs.get("global_pool", False))
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,attrs", [CASES[0], CASES[3], CASES[4], CASES[7]])
def test_avg_exclude_pad(shape, attrs):
    x = rnd(*shape)
    a = dict(attrs, pool_type="avg", count_include_pad=False)
    got = check_forward("Pooling", [x], a, rtol=1e-5, atol=1e-5)
    want = naive_pool(x, attrs["kernel"], attrs.get("stride", (1,) * (len(shape) - 2)),
                      attrs["pad"], "avg", attrs.get("pooling_convention", "valid"),
                      include_pad=False)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p_value", [1, 2, 3])
def test_lp_pool(p_value):
    x = np.abs(rnd(2, 3, 7, 8)) + 0.1
    a = {"kernel": (3, 2), "stride": (2, 1), "pad": (1, 0), "pool_type": "lp", "p_value": p_value}
    got = check_forward("Pooling", [x], a, rtol=1e-5, atol=1e-5)
    want = naive_pool(x, (3, 2), (2, 1), (1, 0), "lp", p_value=p_value)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
    xg = np.abs(rnd(1, 2, 5, 4, dtype="float64")) + 0.5
    check_grad("Pooling", [xg], dict(a, stride=(1, 1)))


GRAD_CASES = [
    ((1, 2, 7), {"kernel": (3,), "stride": (2,), "pad": (1,)}),
    ((1, 2, 9), {"kernel": (3,), "stride": (2,), "pooling_convention": "same"}),
    ((1, 2, 5, 6), {"kernel": (3, 2), "stride": (2, 2), "pad": (1, 1), "pooling_convention": "full"}),
    ((1, 2, 6, 7), {"kernel": (3, 3), "pad": (1, 1)}),
    ((2, 1, 4, 6), {"kernel": (2, 2), "stride": (2, 2)}),
    ((1, 1, 3, 4, 5), {"kernel": (2, 2, 3), "stride": (1, 2, 2), "pad": (1, 1, 1)}),
    ((2, 2, 3, 4), {"kernel": (1, 1), "global_pool": True}),
]


@pytest.mark.parametrize("shape,attrs", GRAD_CASES)
@pytest.mark.parametrize("pool_type", ["max", "avg", "sum"])
def test_pool_grad(shape, attrs, pool_type):
    check_grad("Pooling", [distinct(*shape)], dict(attrs, pool_type=pool_type))


def test_avg_exclude_pad_grad():
    a = {"kernel": (3, 3), "stride": (2, 1), "pad": (1, 1), "pool_type": "avg", "count_include_pad": False}
    check_grad("Pooling", [rnd(1, 2, 5, 6, dtype="float64")], a)


def test_max_grad_goes_to_first_max():
    # ties: MXNet routes the gradient to the first maximal element of each window
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 5.0
    _, grads, _ = run_op("Pooling", [x], {"kernel": (2, 2), "stride": (1, 1)},
                         head_grads=[np.ones((1, 1, 3, 3), np.float32)])
    g = grads[0][0, 0]
    # windows containing both maxima send everything to (1, 1); the others to their own first
    assert g[1, 1] == 4.0 and g[1, 2] == 2.0
    assert g[0, 0] == 0.0 and g.sum() == 9.0


def test_pool_float64_float16():
    x = rnd(2, 3, 7, 9, dtype="float64")
    check_forward("Pooling", [x], {"kernel": (3, 3), "stride": (2, 2), "pool_type": "avg"},
                  rtol=1e-12, atol=1e-12)
    x16 = rnd(2, 3, 7, 9, dtype="float16")
    check_forward("Pooling", [x16], {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1)},
                  rtol=1e-3, atol=1e-3)


def test_output_shapes():
    def out(shape, **a):
        return reference("Pooling", [np.zeros(shape, np.float32)], a)[0].shape
    assert out((1, 1, 10, 10), kernel=(3, 3), stride=(2, 2)) == (1, 1, 4, 4)
    assert out((1, 1, 10, 10), kernel=(3, 3), stride=(2, 2),
               pooling_convention="full") == (1, 1, 5, 5)
    assert out((1, 1, 10), kernel=(3,), stride=(3,), pooling_convention="same") == (1, 1, 4)
    assert out((2, 5, 7, 3, 4), kernel=(1, 1, 1), global_pool=True) == (2, 5, 1, 1, 1)
    got, _, _ = run_op("Pooling", [rnd(2, 5, 6, 7)], {"global_pool": True, "pool_type": "avg"})
    assert got[0].shape == (2, 5, 1, 1)


@pytest.mark.parametrize("shape,attrs,err", [
    ((1, 1, 5, 5), {"kernel": (3, 3), "layout": "NHWC"}, OpError),
    ((1, 1, 5, 5), {"kernel": (6, 6)}, ShapeError),                         # kernel > input
    ((1, 1, 5, 5), {"kernel": (3,)}, ShapeError),                           # rank mismatch
    ((1, 1, 5, 5), {"kernel": (3, 3), "pool_type": "lp"}, OpError),            # needs p_value
    ((1, 1, 5, 5), {"kernel": (3, 3), "pool_type": "lp", "p_value": 4}, OpError),
    ((1, 1, 5, 5), {"kernel": (3, 3), "pooling_convention": "same"}, ShapeError),
    ((1, 1, 5), {"kernel": (3,), "pad": (1,), "pooling_convention": "same"}, OpError),
    ((1, 1, 5, 5), {"kernel": (3, 3), "stride": (0, 1)}, OpError),
    ((1, 1, 5, 5), {"kernel": (3, 3), "pool_type": "median"}, OpError),
    ((1, 1, 5, 5), {"kernel": (3, 3), "padding": (1, 1)}, OpError),
    ((5, 5), {"kernel": (3, 3)}, ShapeError),
])
def test_pool_errors(shape, attrs, err):
    with pytest.raises(err, match="Pooling"):
        run_op("Pooling", [rnd(*shape)], attrs)


# --- the 2-D pooling template (codegen/pool_template.py) through the whole compiler -----------
TEMPLATE_CASES = [  # data shape, kernel, stride, pad: odd sizes around the vector width
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
    ((1, 3, 1, 1), (3, 3), (2, 2), (1, 1)),
    ((3, 17, 5, 6), (2, 2), (2, 2), (0, 0)),
    ((1, 3, 11, 37), (3, 3), (2, 2), (1, 1)),
    ((2, 1, 9, 19), (3, 3), (1, 1), (1, 1)),
    ((1, 3, 13, 23), (5, 5), (3, 3), (2, 2)),
    ((1, 2, 16, 33), (3, 2), (3, 1), (2, 0)),
]


@pytest.mark.parametrize("shape,k,s,p", TEMPLATE_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_template_forward(shape, k, s, p, dtype):
    x = rnd(*shape, dtype=dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    a = {"kernel": k, "stride": s, "pad": p}
    check_forward("Pooling", [x], dict(a, pool_type="max"), rtol=0, atol=0)
    check_forward("Pooling", [x], dict(a, pool_type="avg"), rtol=tol, atol=tol)
    check_forward("Pooling", [x], dict(a, pool_type="avg", count_include_pad=False),
                  rtol=tol, atol=tol)
    check_forward("Pooling", [x], dict(a, pool_type="sum"), rtol=tol, atol=tol)


def _generic(monkeypatch, x, attrs):
    """The generic kernel-IR lowering's result (the template switched off, no program cache)."""
    with monkeypatch.context() as m:
        m.setenv("MXC_POOL_TEMPLATE", "0")
        m.setenv("MXC_PROGRAM_CACHE", "0")
        return run_op("Pooling", [x], attrs)[0][0]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_template_bit_exact_with_generic_lowering(monkeypatch):
    # max: the same values bit for bit, NaN, +-inf and signed zeros included
    x = rnd(2, 3, 10, 21)
    x[0, 0, 0, 0] = x[0, 1, 5, 9] = x[1, 2, 9, 20] = np.nan
    x[0, 2] = -np.inf
    x[1, 0, 3:7, 4:9] = 0.0
    x[1, 0, 4, 5:7] = -0.0
    x[1, 1, 2, 2] = np.inf
    for attrs in ({"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1)},
                  {"kernel": (2, 2), "stride": (1, 1)},
                  {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1),
                   "pooling_convention": "full"}):
        a = dict(attrs, pool_type="max")
        got = run_op("Pooling", [x], a)[0][0]
        want = _generic(monkeypatch, x, a)
        assert got.tobytes() == want.tobytes(), attrs
        a = dict(attrs, pool_type="avg")
        got = run_op("Pooling", [x], a)[0][0]
        np.testing.assert_allclose(got, _generic(monkeypatch, x, a), rtol=1e-6, atol=1e-6)


def test_template_grad_resnet_stem():
    # the backward reads the template's forward output (first-max routing needs it exact)
    check_grad("Pooling", [distinct(1, 2, 9, 10)],
               {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1), "pool_type": "max"})
