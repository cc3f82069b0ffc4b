"""gluon.nn GroupNorm and the activation layers (Activation, LeakyReLU, PReLU, ELU, SELU,
GELU, Swish): MXNet 1.9.1 parameter names, shapes and initializers; forward and autograd
backward, imperative and hybridized, against numpy references and finite differences."""
import math

import numpy as np
import pytest

import mxc as mx
from mxc import autograd
from mxc.base import MXNetError
from mxc.gluon import nn
from mxc.testing import numeric_grad, reference

RNG = np.random.default_rng(11)
SELU_ALPHA, SELU_LAMBDA = 1.6732632423543772848, 1.0507009873554804934


def _run(layer, x, head, hybridize):
    """Forward and backward through ``layer``; returns (output, data grad)."""
    if hybridize:
        layer.hybridize()
    xa = mx.nd.array(x, dtype=x.dtype)
    xa.attach_grad()
    with autograd.record():
        y = layer(xa)
    y.backward(mx.nd.array(head, dtype=head.dtype))
    return y.asnumpy(), xa.grad.asnumpy()


# ---------------------------------------------------------------------------------------------
# GroupNorm
# ---------------------------------------------------------------------------------------------
def test_group_norm_parameters_and_repr():
    with mx.name.NameManager():
        layer = nn.GroupNorm(num_groups=2, in_channels=4)
        assert list(layer.collect_params().keys()) == ["groupnorm0_gamma", "groupnorm0_beta"]
        assert layer.gamma.shape == layer.beta.shape == (4,)
        assert repr(layer) == "GroupNorm(eps=1e-05, num_groups=2, center=True, scale=True)"
        fixed = nn.GroupNorm(center=False, scale=False)
        assert fixed.gamma.grad_req == "null" and fixed.beta.grad_req == "null"


@pytest.mark.parametrize("hybridize", [False, True])
def test_group_norm_layer(hybridize):
    shape, groups = (2, 6, 3, 2), 3
    x = RNG.standard_normal(shape)
    head = RNG.standard_normal(shape)
    layer = nn.GroupNorm(num_groups=groups, epsilon=1e-3, gamma_initializer="ones",
                         beta_initializer="zeros")
    layer.initialize()                    # deferred: gamma/beta get (C,) from the data
    layer.cast("float64")
    y, dx = _run(layer, x, head, hybridize)
    assert layer.gamma.shape == (6,)
    g, b = np.ones(6), np.zeros(6)
    attrs = {"num_groups": groups, "eps": 1e-3}
    np.testing.assert_allclose(y, reference("GroupNorm", [x, g, b], attrs)[0], rtol=1e-10,
                               atol=1e-12)
    want = numeric_grad("GroupNorm", [x, g, b], attrs, [head], eps=1e-6)
    np.testing.assert_allclose(dx, want[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.gamma.grad().asnumpy(), want[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.beta.grad().asnumpy(), head.sum(axis=(0, 2, 3)),
                               rtol=1e-10)


def test_group_norm_layer_rejects_bad_groups():
    layer = nn.GroupNorm(num_groups=4)
    layer.initialize()
    with pytest.raises(MXNetError, match="divisible"):
        layer(mx.nd.ones((2, 6, 3))).asnumpy()


# ---------------------------------------------------------------------------------------------
# activation layers
# ---------------------------------------------------------------------------------------------
def _erf(v):
    return np.vectorize(math.erf)(v)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


# layer factory, numpy forward, numpy derivative
ACTIVATIONS = {
    "relu": (lambda: nn.Activation("relu"), lambda v: np.maximum(v, 0),
             lambda v: (v > 0) * 1.0),
    "sigmoid": (lambda: nn.Activation("sigmoid"), _sigmoid,
                lambda v: _sigmoid(v) * (1 - _sigmoid(v))),
    "tanh": (lambda: nn.Activation("tanh"), np.tanh, lambda v: 1 - np.tanh(v) ** 2),
    "softrelu": (lambda: nn.Activation("softrelu"), lambda v: np.log1p(np.exp(v)), _sigmoid),
    "softsign": (lambda: nn.Activation("softsign"), lambda v: v / (1 + np.abs(v)),
                 lambda v: 1 / (1 + np.abs(v)) ** 2),
    "leaky": (lambda: nn.LeakyReLU(0.1), lambda v: np.where(v > 0, v, 0.1 * v),
              lambda v: np.where(v > 0, 1, 0.1)),
    "elu": (lambda: nn.ELU(0.7), lambda v: np.where(v > 0, v, 0.7 * np.expm1(v)),
            lambda v: np.where(v > 0, 1, 0.7 * np.exp(v))),
    "selu": (nn.SELU, lambda v: SELU_LAMBDA * np.where(v > 0, v, SELU_ALPHA * np.expm1(v)),
             lambda v: SELU_LAMBDA * np.where(v > 0, 1, SELU_ALPHA * np.exp(v))),
    "gelu": (nn.GELU, lambda v: 0.5 * v * (1 + _erf(v / math.sqrt(2))),
             lambda v: 0.5 * (1 + _erf(v / math.sqrt(2))) +
             v * np.exp(-v * v / 2) / math.sqrt(2 * math.pi)),
    "swish": (lambda: nn.Swish(1.5), lambda v: v * _sigmoid(1.5 * v),
              lambda v: _sigmoid(1.5 * v) + 1.5 * v * _sigmoid(1.5 * v) *
              (1 - _sigmoid(1.5 * v))),
}


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_layers(name, hybridize):
    make, fwd, deriv = ACTIVATIONS[name]
    x = RNG.uniform(-3, 3, (3, 5)).astype(np.float32)
    x[np.abs(x) < 0.05] = 0.5      # away from the kinks at 0
    head = RNG.standard_normal(x.shape).astype(np.float32)
    layer = make()
    layer.initialize()
    y, dx = _run(layer, x, head, hybridize)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(y, fwd(xd), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, head * deriv(xd), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hybridize", [False, True])
def test_prelu_layer(hybridize):
    with mx.name.NameManager():
        layer = nn.PReLU(in_channels=3)
        assert list(layer.collect_params().keys()) == ["prelu0_alpha"]
    layer.initialize()
    np.testing.assert_array_equal(layer.alpha.data().asnumpy(), [0.25] * 3)  # MXNet's default
    x = RNG.uniform(-2, 2, (2, 3, 4)).astype(np.float32)
    x[np.abs(x) < 0.05] = -0.5
    head = RNG.standard_normal(x.shape).astype(np.float32)
    y, dx = _run(layer, x, head, hybridize)
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.25 * x), rtol=1e-6)
    np.testing.assert_allclose(dx, head * np.where(x > 0, 1, 0.25), rtol=1e-6)
    np.testing.assert_allclose(layer.alpha.grad().asnumpy(),
                               np.sum(np.where(x > 0, 0, x) * head, axis=(0, 2)), rtol=1e-5)
    custom = nn.PReLU(alpha_initializer=mx.init.Constant(0.1))
    custom.initialize()
    assert custom.alpha.shape == (1,)
    np.testing.assert_allclose(custom.alpha.data().asnumpy(), [0.1])


def test_leaky_relu_layer_rejects_negative_slope():
    with pytest.raises(MXNetError, match="no less than 0"):
        nn.LeakyReLU(-0.1)
