"""gluon.Trainer: MXNet 1.x's update rule (rescale_grad = 1/batch_size, wd on every parameter,
lr/wd multipliers), learning rate control, optimizer states, stale gradients, several
contexts."""
import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.gluon import nn


def _net(in_units=3):
    net = nn.Dense(2, in_units=in_units)
    net.initialize(mx.init.Constant(0.5))
    return net


def _backward(net, x, ctx=None):
    with autograd.record():
        y = net(x)
        loss = (y * y).sum()
    loss.backward()


def test_sgd_momentum_wd_rule():
    net = _net()
    params = net.collect_params()
    tr = gluon.Trainer(params, "sgd", {"learning_rate": 0.1, "momentum": 0.9, "wd": 0.01})
    x = mx.nd.array(np.random.RandomState(0).randn(4, 3))
    w = {k: p.data().asnumpy().astype(np.float64) for k, p in params.items()}
    mom = {k: np.zeros_like(v) for k, v in w.items()}
    for _ in range(3):
        _backward(net, x)
        g = {k: p.grad().asnumpy().astype(np.float64) for k, p in params.items()}
        tr.step(4)
        for k in list(w):  # wd applies to the bias too (Gluon: wd_mult = 1 everywhere)
            mom[k] = 0.9 * mom[k] - 0.1 * (g[k] / 4 + 0.01 * w[k])
            w[k] = w[k] + mom[k]
            np.testing.assert_allclose(params[k].data().asnumpy(), w[k], rtol=1e-5, atol=1e-7)
    assert tr.optimizer.rescale_grad == 0.25


def test_lr_mult_wd_mult_and_learning_rate():
    net = _net()
    net.bias.lr_mult = 0.0
    net.weight.wd_mult = 0.0
    tr = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5, "wd": 0.1})
    assert tr.learning_rate == 0.5
    tr.set_learning_rate(0.25)
    assert tr.learning_rate == 0.25
    b0 = net.bias.data().asnumpy().copy()
    w0 = net.weight.data().asnumpy().copy()
    _backward(net, mx.nd.ones((1, 3)))
    gw = net.weight.grad().asnumpy().copy()
    tr.step(1)
    np.testing.assert_array_equal(net.bias.data().asnumpy(), b0)  # lr_mult 0
    np.testing.assert_allclose(net.weight.data().asnumpy(), w0 - 0.25 * gw, rtol=1e-6)


def test_optimizer_instance_and_errors():
    net = _net()
    opt = mx.optimizer.SGD(learning_rate=0.3)
    tr = gluon.Trainer(net.collect_params(), opt)
    assert tr.optimizer is opt and tr.learning_rate == pytest.approx(0.3)
    with pytest.raises(ValueError):
        gluon.Trainer(net.collect_params(), opt, {"learning_rate": 0.1})
    with pytest.raises(ValueError):
        gluon.Trainer(net.weight, "sgd")
    with pytest.raises(ValueError):
        gluon.Trainer([net.weight, "x"], "sgd")


def test_stale_gradient():
    net = _net()
    extra = gluon.Parameter("unused", shape=(2,))
    extra.initialize()
    params = list(net.collect_params().values()) + [extra]
    tr = gluon.Trainer(params, "sgd", {"learning_rate": 0.1})
    _backward(net, mx.nd.ones((1, 3)))
    with pytest.raises(UserWarning, match="unused"):
        tr.step(1)
    _backward(net, mx.nd.ones((1, 3)))
    before = extra.data().asnumpy().copy()
    tr.step(1, ignore_stale_grad=True)
    np.testing.assert_array_equal(extra.data().asnumpy(), before)


def test_allreduce_update_and_states(tmp_path):
    net = _net()
    tr = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.01})
    x = mx.nd.ones((2, 3))
    _backward(net, x)
    tr.allreduce_grads()
    tr.update(2)
    f = str(tmp_path / "trainer.states")
    tr.save_states(f)
    snapshot = {k: p.data().copy() for k, p in net.collect_params().items()}
    _backward(net, x)
    tr.step(2)
    after = {k: p.data().asnumpy() for k, p in net.collect_params().items()}
    # restore weights and optimizer state: the same step gives the same result
    for k, p in net.collect_params().items():
        p.set_data(snapshot[k])
    tr2 = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.01})
    tr2.load_states(f)
    _backward(net, x)
    tr2.step(2)
    for k, p in net.collect_params().items():
        np.testing.assert_allclose(p.data().asnumpy(), after[k], rtol=1e-6)


def test_multiple_contexts_reduce_gradients():
    ctxs = [mx.cpu(0), mx.cpu(1)]
    rs = np.random.RandomState(3)
    x = rs.randn(4, 3).astype(np.float32)
    single = nn.Dense(2, in_units=3)
    single.initialize(mx.init.Constant(0.2))
    multi = nn.Dense(2, in_units=3)
    multi.initialize(mx.init.Constant(0.2), ctx=ctxs)
    t1 = gluon.Trainer(single.collect_params(), "sgd", {"learning_rate": 0.1})
    t2 = gluon.Trainer(multi.collect_params(), "sgd", {"learning_rate": 0.1})
    _backward(single, mx.nd.array(x))
    t1.step(4)
    parts = gluon.utils.split_and_load(x, ctxs)
    with autograd.record():
        losses = [(multi(p) * multi(p)).sum() for p in parts]
    for loss in losses:
        loss.backward()
    t2.step(4)
    for c in ctxs:
        np.testing.assert_allclose(multi.weight.data(c).asnumpy(),
                                   single.weight.data().asnumpy(), rtol=1e-5, atol=1e-6)


def test_all_parameters_same_contexts():
    a = gluon.Parameter("a", shape=(1,))
    a.initialize(ctx=mx.cpu(0))
    b = gluon.Parameter("b", shape=(1,))
    b.initialize(ctx=[mx.cpu(0), mx.cpu(1)])
    with pytest.raises(ValueError, match="same set of contexts"):
        gluon.Trainer([a, b], "sgd")
