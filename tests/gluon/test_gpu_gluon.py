"""Gluon on mx.gpu(i): parameters on the device, imperative and hybridized forward, Trainer.

Without a GPU, gpu(0) is the CPU emulator of the PTX kernels (MXC_GPU_EMULATOR=1, set per
test); the ``gpu``-marked variants run the same checks on a real CUDA device.
"""
import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.base import MXNetError

RNG = np.random.default_rng(11)


@pytest.fixture
def ctx(gpu_ctx):   # tests/conftest.py: the emulator, or a real GPU (gpu marker)
    return gpu_ctx


def _mlp(prefix):
    net = gluon.nn.HybridSequential(prefix=prefix)
    with net.name_scope():
        net.add(gluon.nn.Dense(8, activation="relu"), gluon.nn.Dense(3))
    return net


def _pairs(a, b):
    return zip(sorted(a.collect_params().items()), sorted(b.collect_params().items()))


@pytest.mark.parametrize("hybridize", [False, True])
def test_dense_net_matches_cpu(ctx, hybridize, tmp_path):
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    ref_net = _mlp("ref_")
    ref_net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    want = ref_net(mx.nd.array(x)).asnumpy()
    f = str(tmp_path / "net.params")
    ref_net.save_parameters(f)

    net = _mlp("dev_")
    net.initialize(ctx=ctx)                    # deferred: shapes come with the first batch
    if hybridize:
        net.hybridize()
    y = net(mx.nd.array(x, ctx=ctx))
    assert y.context == ctx and y.shape == (4, 3)
    w = net[0].weight
    assert w.list_ctx() == [ctx] and w.data(ctx).context == ctx and w.grad(ctx).context == ctx
    net.load_parameters(f, ctx=ctx)
    y = net(mx.nd.array(x, ctx=ctx))
    assert y.context == ctx
    np.testing.assert_allclose(y.asnumpy(), want, rtol=1e-5, atol=1e-6)
    # parameters come back to the host for saving
    net.save_parameters(str(tmp_path / "back.params"))
    back = mx.nd.load(str(tmp_path / "back.params"))
    np.testing.assert_array_equal(back["0.weight"].asnumpy(), ref_net[0].weight.data().asnumpy())
    # a cpu batch for a net on the gpu: MXNet's errors
    msg = r"is on gpu\(0\), but the operator runs on cpu" if hybridize else \
        r"was not initialized on context cpu\(0\)"
    with pytest.raises(MXNetError, match=msg):
        net(mx.nd.array(x))
    assert mx.current_context() == mx.cpu()


def test_conv_bn_hybridized_matches_cpu(ctx):
    def make(prefix):
        net = gluon.nn.HybridSequential(prefix=prefix)
        with net.name_scope():
            net.add(gluon.nn.Conv2D(3, 3, padding=1), gluon.nn.BatchNorm(),
                    gluon.nn.Activation("relu"), gluon.nn.MaxPool2D(2), gluon.nn.Dense(2))
        return net
    x = RNG.standard_normal((2, 1, 4, 4)).astype(np.float32)
    cpu_net, dev_net = make("c_"), make("g_")
    cpu_net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    cpu_net(mx.nd.array(x))
    dev_net.initialize(ctx=ctx)
    dev_net(mx.nd.array(x, ctx=ctx))
    for (_, pc), (_, pg) in _pairs(cpu_net, dev_net):
        pg.set_data(pc.data())
    cpu_net.hybridize()
    dev_net.hybridize()
    for train in (False, True):   # train mode: batch statistics, moving stats updated in place
        with autograd.train_mode() if train else autograd.predict_mode():
            want = cpu_net(mx.nd.array(x)).asnumpy()
            got = dev_net(mx.nd.array(x, ctx=ctx)).asnumpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for (n, pc), (_, pg) in _pairs(cpu_net, dev_net):
        np.testing.assert_allclose(pg.data(ctx).asnumpy(), pc.data().asnumpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=n)


def test_trainer_step_on_the_device(ctx):
    cpu_net, dev_net = _mlp("tc_"), _mlp("tg_")
    for net, c in ((cpu_net, mx.cpu()), (dev_net, ctx)):
        net.initialize(mx.init.One(), ctx=c)
        net(mx.nd.ones((1, 5), ctx=c))
    kw = {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4}
    tc = gluon.Trainer(cpu_net.collect_params(), "sgd", kw)
    tg = gluon.Trainer(dev_net.collect_params(), "sgd", kw)
    for _ in range(2):
        for (_, pc), (_, pg) in _pairs(cpu_net, dev_net):
            g = RNG.standard_normal(pc.shape).astype(np.float32)
            pc.grad()[:] = g
            pg.grad(ctx)[:] = g
            # gradients written by hand, not by backward: mark them fresh
            pc.data()._fresh_grad = True
            pg.data(ctx)._fresh_grad = True
        tc.step(4)
        tg.step(4)
    for (n, pc), (_, pg) in _pairs(cpu_net, dev_net):
        assert pg.data(ctx).context == ctx
        np.testing.assert_allclose(pg.data(ctx).asnumpy(), pc.data().asnumpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=n)


@pytest.mark.parametrize("hybridize", [False, True])
def test_autograd_records_on_gpu(ctx, hybridize):
    # (training steps against the CPU: tests/frontend/test_gpu_autograd.py)
    net = _mlp("ag_")
    net.initialize(mx.init.One(), ctx=ctx)
    x = mx.nd.ones((2, 5), ctx=ctx)
    net(x)
    if hybridize:
        net.hybridize()
    with autograd.record():
        y = net(x)
    y.backward()
    g = net[1].bias.grad(ctx)
    assert g.context == ctx
    np.testing.assert_allclose(g.asnumpy(), np.full((3,), 2.0))
