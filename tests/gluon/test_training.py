"""A Gluon training loop learns a synthetic classification task, deterministically."""
import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.gluon import nn


def _data():
    rs = np.random.RandomState(42)
    n, d, k = 512, 10, 3
    centers = rs.randn(k, d) * 2.0
    y = rs.randint(0, k, n)
    x = centers[y] + rs.randn(n, d)
    return x.astype(np.float32), y.astype(np.float32)


def _train(hybridize: bool):
    mx.random.seed(1)
    x, y = _data()
    net = nn.HybridSequential()
    with net.name_scope():
        # shapes given up front: deferred initialization would draw the initial weights at
        # the first forward, interleaved with Dropout's draws imperatively, all before them
        # when hybridized (as in MXNet), and the two runs would differ
        net.add(nn.Dense(32, activation="relu", in_units=10), nn.BatchNorm(in_channels=32),
                nn.Dropout(0.1), nn.Dense(3, in_units=32))
    net.initialize(mx.init.Xavier())
    if hybridize:
        net.hybridize()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4})
    batch = 64
    for _epoch in range(3):
        for i in range(0, len(x), batch):
            xb, yb = mx.nd.array(x[i:i + batch]), mx.nd.array(y[i:i + batch])
            with autograd.record():
                loss = loss_fn(net(xb), yb)
            loss.backward()
            trainer.step(batch)
    pred = net(mx.nd.array(x)).asnumpy().argmax(axis=1)
    acc = float((pred == y).mean())
    return acc, {k: p.data().asnumpy() for k, p in net.collect_params().items()}


@pytest.mark.parametrize("hybridize", [False, True])
def test_training_learns_and_is_deterministic(hybridize):
    acc, params = _train(hybridize)
    assert acc > 0.9
    acc2, params2 = _train(hybridize)
    assert acc2 == acc
    for k in params:
        np.testing.assert_array_equal(params[k], params2[_match(params2, k)])


def _match(d, key):
    # parameter names differ between runs (global block counters): match by suffix order
    suffix = key.split("_", 1)[1]
    return next(k for k in d if k.split("_", 1)[1] == suffix)


def test_hybridized_and_imperative_training_agree():
    acc0, p0 = _train(False)
    acc1, p1 = _train(True)
    assert acc0 == acc1
    for k in p0:
        np.testing.assert_allclose(p0[k], p1[_match(p1, k)], rtol=1e-4, atol=1e-5)
