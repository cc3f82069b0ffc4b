"""LeakyReLU (leaky, elu, selu, gelu, prelu, rrelu) and Dropout."""
import json
from pathlib import Path

import numpy as np
import pytest

from mxc.base import MXNetError, OpError
from mxc.runtime import random as mxrandom
from mxc.testing import check_forward, check_grad, run_op

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
rng = np.random.default_rng(3)


def _x(shape, dtype=np.float64):
    x = rng.standard_normal(shape)
    x[np.abs(x) < 1e-2] += 0.1  # keep finite differences away from the kinks
    return x.astype(dtype)


@pytest.mark.parametrize("act", ["leaky", "elu", "selu", "gelu"])
def test_leaky_relu_family(act):
    for dtype, shape in [(np.float32, (2, 3, 4)), (np.float64, (5, 3)), (np.float32, (7,))]:
        x = _x(shape, dtype)
        for attrs in [{"act_type": act}, {"act_type": act, "slope": 0.1}]:
            check_forward("LeakyReLU", [x], attrs, rtol=1e-5, atol=1e-6)
    x = _x((3, 4))
    check_grad("LeakyReLU", [x], {"act_type": act, "slope": 0.3}, rtol=1e-5, atol=1e-7,
               eps=1e-6)
    check_forward("LeakyReLU", [_x((2, 3), np.float16)], {"act_type": act}, rtol=2e-3,
                  atol=2e-3)


def test_leaky_relu_default_and_zero_size():
    x = _x((4, 5), np.float32)
    out = check_forward("LeakyReLU", [x])
    np.testing.assert_allclose(out[0], np.where(x > 0, x, 0.25 * x), rtol=1e-6)
    check_forward("LeakyReLU", [np.zeros((0, 3), np.float32)], {"act_type": "elu"})
    with pytest.raises(OpError):
        run_op("LeakyReLU", [x], {"act_type": "swish"})
    with pytest.raises(OpError):
        run_op("LeakyReLU", [x], {"alpha": 0.1})


def test_prelu():
    x = _x((2, 3, 4, 2))
    for g in [rng.random(3) * 0.5, np.array([0.2])]:
        check_forward("LeakyReLU", [x.astype(np.float32), g.astype(np.float32)],
                      {"act_type": "prelu"}, rtol=1e-6)
        check_grad("LeakyReLU", [x, g], {"act_type": "prelu"}, rtol=1e-5, atol=1e-7, eps=1e-6)
    check_grad("LeakyReLU", [_x((5, 4)), rng.random(4)], {"act_type": "prelu"}, rtol=1e-5,
               atol=1e-7, eps=1e-6)
    with pytest.raises(MXNetError):
        run_op("LeakyReLU", [x, np.ones(5)], {"act_type": "prelu"})


def test_rrelu():
    lo, hi = 0.1, 0.4
    x = _x((50, 40), np.float32)
    attrs = {"act_type": "rrelu", "lower_bound": lo, "upper_bound": hi}
    # inference: a leaky ReLU with the mean slope
    out = check_forward("LeakyReLU", [x], attrs, rtol=1e-6)
    np.testing.assert_allclose(out[0], np.where(x > 0, x, x * (lo + hi) / 2), rtol=1e-6)
    # training: a random slope per element in [lo, hi), used again by the backward pass
    neg = -np.abs(x) - 0.1
    outs, grads, _ = run_op("LeakyReLU", [neg], attrs, is_train=True,
                            head_grads=[np.ones_like(neg)])
    slope = outs[0] / neg
    assert slope.min() >= lo - 1e-6 and slope.max() < hi + 1e-6
    assert abs(slope.mean() - (lo + hi) / 2) < 0.01 and slope.std() > 0.05
    np.testing.assert_allclose(grads[0], slope, rtol=1e-5)
    outs, grads, _ = run_op("LeakyReLU", [np.abs(x)], attrs, is_train=True,
                            head_grads=[np.ones_like(x)])
    np.testing.assert_array_equal(outs[0], np.abs(x))
    np.testing.assert_array_equal(grads[0], np.ones_like(x))


def test_leaky_relu_against_mxnet():
    d = CASES / "sym_elemwise_ops"
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    names = [o["name"] for o in meta["outputs"]]
    x = np.load(d / "in_x.npy")
    for name, attrs in [("leaky_output", {"act_type": "leaky", "slope": "0.1"}),
                        ("elu_output", {"act_type": "elu", "slope": "0.5"}),
                        ("selu_output", {"act_type": "selu"}),
                        ("gelu_output", {"act_type": "gelu"})]:
        want = np.load(d / f"out_{names.index(name)}.npy")
        got, _, _ = run_op("LeakyReLU", [x], attrs)
        np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------
def test_dropout_inference_is_identity():
    x = _x((3, 4, 5), np.float32)
    for attrs in [{}, {"p": 0.7}, {"p": 0.3, "axes": (1,)}, {"cudnn_off": True}]:
        out = check_forward("Dropout", [x], attrs)
        np.testing.assert_array_equal(out[0], x)
    with pytest.raises(OpError):
        run_op("Dropout", [x], {"mode": "sometimes"})


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_training_statistics(p):
    x = np.ones((200, 300), np.float32)
    outs, grads, _ = run_op("Dropout", [x], {"p": p}, is_train=True,
                            head_grads=[np.full_like(x, 2.0)])
    y = outs[0]
    assert abs((y == 0).mean() - p) < 0.01
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - p), rtol=1e-6)
    # backward multiplies by the same mask
    np.testing.assert_allclose(grads[0], 2.0 * y, rtol=1e-6)


def test_dropout_values_and_modes():
    x = _x((64, 50), np.float32)
    outs, _, _ = run_op("Dropout", [x], {"p": 0.4}, is_train=True)
    kept = outs[0] != 0
    np.testing.assert_allclose(outs[0][kept], x[kept] / 0.6, rtol=1e-6)
    # mode='always' drops in inference too
    outs, _, _ = run_op("Dropout", [np.ones((100, 100), np.float32)],
                        {"p": 0.5, "mode": "always"})
    assert 0.45 < (outs[0] == 0).mean() < 0.55
    # p = 0: identity even in training; p = 1: everything dropped
    outs, grads, _ = run_op("Dropout", [x], {"p": 0.0}, is_train=True,
                            head_grads=[np.ones_like(x)])
    np.testing.assert_array_equal(outs[0], x)
    np.testing.assert_array_equal(grads[0], np.ones_like(x))
    outs, _, _ = run_op("Dropout", [x], {"p": 1.0}, is_train=True)
    assert np.all(outs[0] == 0)


def test_dropout_axes():
    x = np.ones((4, 30, 6), np.float32)
    outs, grads, _ = run_op("Dropout", [x], {"p": 0.5, "axes": (0, 2)}, is_train=True,
                            head_grads=[np.ones_like(x)])
    y = outs[0]
    # one decision per index of axis 1, shared over axes 0 and 2
    assert np.all(y == y[:1, :, :1])
    assert 0 < (y[0, :, 0] == 0).sum() < 30
    np.testing.assert_array_equal(grads[0], y)
    outs, _, _ = run_op("Dropout", [x], {"p": 0.5, "axes": (-1,)}, is_train=True)
    assert np.all(outs[0] == outs[0][:, :, :1])


def test_dropout_seeds():
    x = np.ones((64, 64), np.float32)

    def mask(seed=None):
        if seed is not None:
            mxrandom.seed(seed)
        return run_op("Dropout", [x], {"p": 0.5}, is_train=True)[0][0] != 0

    a, b = mask(11), mask(11)
    np.testing.assert_array_equal(a, b)
    c = mask(12)
    assert (a != c).mean() > 0.3
    d, e = mask(), mask()
    assert (d != e).mean() > 0.3


def test_gelu_is_mxnets_erf_form():
    # MXNet 1.x's LeakyReLU(gelu) is x * Phi(x) with the erf, not the tanh approximation
    # (0.8411920 at x = 1), computed in float32 precision also for float64 data
    x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    for dtype in (np.float32, np.float64):
        got, grads, _ = run_op("LeakyReLU", [x.astype(dtype)], {"act_type": "gelu"},
                               head_grads=[np.ones(5, dtype)])
        np.testing.assert_allclose(got[0], [-0.04550026, -0.15865525, 0.0, 0.84134475,
                                            2.99595031], rtol=2e-7, atol=1e-8)
        np.testing.assert_allclose(grads[0], [-0.08523180, -0.08331547, 0.5, 1.08331547,
                                              1.01194565], rtol=1e-6, atol=1e-7)
        assert abs(got[0][3] - 0.8411920) > 1e-4
