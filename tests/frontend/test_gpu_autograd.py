"""mx.autograd on mx.gpu(i) arrays: recorded ops run on the device, the backward of the tape
is compiled with compile_graph_cuda and runs on the device (docs/autograd.md, docs/gpu.md).

Every check compares with the same computation on mx.cpu(). Without a GPU, gpu(0) is the CPU
emulator of the PTX kernels (MXC_GPU_EMULATOR=1, set per test; slow, so shapes are tiny); the
``gpu``-marked variants run the same checks on a real CUDA device and skip without one.
"""
import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.base import MXNetError

RNG = np.random.default_rng(5)


@pytest.fixture
def ctx(gpu_ctx):   # tests/conftest.py: the emulator, or a real GPU (gpu marker)
    return gpu_ctx


def _r(*shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def _grads(fn, inputs, c, head=None):
    """(output, gradients of ``fn(*inputs)`` w.r.t. every input) computed on context ``c``;
    the gradients must live on ``c``."""
    xs = [mx.nd.array(a, ctx=c) for a in inputs]
    for x in xs:
        x.attach_grad()
    with autograd.record():
        y = fn(*xs)
    y.backward(None if head is None else mx.nd.array(head, ctx=c))
    for x in xs:
        assert x.grad.context == c
    return y.asnumpy(), [x.grad.asnumpy() for x in xs]


def _check(fn, inputs, ctx, head=None, rtol=1e-5, atol=1e-6):
    want_y, want = _grads(fn, inputs, mx.cpu(), head)
    got_y, got = _grads(fn, inputs, ctx, head)
    np.testing.assert_allclose(got_y, want_y, rtol=rtol, atol=atol)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"gradient {i}")


def test_square_sum(ctx):
    x = mx.nd.array([[1, 2, 3], [4, 5, 6]], ctx=ctx)
    x.attach_grad()
    with autograd.record():
        y = (x * x).sum()
    y.backward()
    assert x.grad.context == ctx
    np.testing.assert_allclose(x.grad.asnumpy(), 2 * x.asnumpy())


def test_elementwise_ops(ctx):
    def f(a, b):
        return (mx.nd.exp(a) * mx.nd.tanh(b) + mx.nd.sigmoid(a) / b
                - mx.nd.relu(a * b) + mx.nd.log(b) * mx.nd.sqrt(b))
    _check(f, [_r(3, 4), _r(3, 4, positive=True)], ctx, head=_r(3, 4))


def test_broadcast_and_reduce_ops(ctx):
    def f(a, b, c):
        s = mx.nd.broadcast_mul(a, b) + mx.nd.broadcast_sub(c, b)
        return mx.nd.sum(s, axis=1) * mx.nd.mean(a)
    _check(f, [_r(3, 1), _r(1, 4), _r(3, 4)], ctx)


def test_dot_and_fully_connected(ctx):
    def f(x, w, b, v):
        h = mx.nd.FullyConnected(x, w, b, num_hidden=5)
        return mx.nd.dot(mx.nd.Activation(h, act_type="tanh"), v, transpose_b=True)
    _check(f, [_r(4, 3), _r(5, 3), _r(5), _r(2, 5)], ctx, head=_r(4, 2))


def test_views_and_copies_are_recorded(ctx):
    def f(x):
        y = x[1:3].reshape((4, 3)) * 3 + x.astype("float64").astype("float32")[0:2].reshape(
            (4, 3))
        return y.copy() * x.reshape((8, 3))[0:4] + x[:, 1] + x[2, 0]
    _check(f, [_r(4, 2, 3)], ctx, head=_r(4, 3))


def test_dropout_backward_uses_the_forward_mask(ctx):
    x = mx.nd.array(_r(6, 8, positive=True), ctx=ctx)
    x.attach_grad()
    with autograd.record():
        y = mx.nd.Dropout(x, p=0.5)
    y.backward()
    mask = (y.asnumpy() != 0)
    assert 0 < mask.sum() < mask.size
    np.testing.assert_allclose(x.grad.asnumpy(), mask * 2.0)
    # predict mode: identity, its mask recorded as ones
    with autograd.record(train_mode=False):
        y = mx.nd.Dropout(x, p=0.5)
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), np.ones((6, 8)))


def test_grad_req_add_null_and_retain_graph(ctx):
    a, b = _r(2, 3), _r(2, 3)
    x = mx.nd.array(a, ctx=ctx)
    w = mx.nd.array(b, ctx=ctx)
    x.attach_grad(grad_req="add")
    w.attach_grad(grad_req="null")
    with autograd.record():
        y = x * w
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(w.grad.asnumpy(), np.zeros((2, 3)))   # 'null': not written
    y.backward(mx.nd.ones((2, 3), ctx=ctx) * 3)   # retained graph, explicit head gradient
    np.testing.assert_allclose(x.grad.asnumpy(), 4 * b, rtol=1e-6)
    with pytest.raises(MXNetError, match="retain_graph"):
        y.backward()
        (y * 2).backward()
    # 'write' overwrites, and a variable no path reaches gets zeros
    u = mx.nd.array(a, ctx=ctx)
    v = mx.nd.array(b, ctx=ctx)
    for t in (u, v):
        t.attach_grad()
        t.grad[:] = 7
    with autograd.record():
        z = u * 2 + 0 * mx.nd.stop_gradient(v)
    z.backward()
    np.testing.assert_allclose(u.grad.asnumpy(), np.full((2, 3), 2.0))
    np.testing.assert_array_equal(v.grad.asnumpy(), np.zeros((2, 3)))


def test_autograd_grad(ctx):
    a, b = _r(3, 2), _r(3, 2)
    x, w, u = (mx.nd.array(v, ctx=ctx) for v in (a, b, b))
    for t in (x, w, u):
        t.attach_grad()
    with autograd.record():
        y = x * x * w
    gx, gw, gu = autograd.grad(y, [x, w, u], head_grads=mx.nd.ones((3, 2), ctx=ctx) * 2,
                               retain_graph=True)
    for g in (gx, gw, gu):
        assert g.context == ctx
    np.testing.assert_allclose(gx.asnumpy(), 4 * a * b, rtol=1e-5)
    np.testing.assert_allclose(gw.asnumpy(), 2 * a * a, rtol=1e-5)
    np.testing.assert_array_equal(gu.asnumpy(), np.zeros((3, 2)))
    np.testing.assert_array_equal(x.grad.asnumpy(), np.zeros((3, 2)))  # .grad untouched
    gx = autograd.grad(y, x)
    np.testing.assert_allclose(gx.asnumpy(), 2 * a * b, rtol=1e-5)


def test_mixing_contexts_raises(ctx):
    x = mx.nd.ones((2, 2), ctx=ctx)
    with pytest.raises(MXNetError, match="same context"):
        autograd.mark_variables([x], [mx.nd.zeros((2, 2))])
    x.attach_grad()
    with autograd.record():
        y = x * 2
        h = y.as_in_context(mx.cpu()) * 3        # a recorded copy to the host
    with pytest.raises(MXNetError, match=r"spans contexts: '_copy' reads an array on gpu\(0\)"):
        h.backward()
    with autograd.record():
        y = x * 2
    with pytest.raises(MXNetError, match=r"head gradient 0 is on cpu\(0\), but head 0 is on "
                                         r"gpu\(0\)"):
        y.backward(mx.nd.ones((2, 2)))
    with pytest.raises(MXNetError, match=r"is on cpu\(0\), but the operator runs on gpu\(0\)"), \
            autograd.record():
        x * mx.nd.ones((2, 2))


def test_function_on_gpu_is_a_clear_error(ctx):
    class Sq(autograd.Function):
        def forward(self, x):
            return x * x

        def backward(self, dy):
            return dy * 2

    x = mx.nd.ones((2,), ctx=ctx)
    x.attach_grad()
    with autograd.record():
        y = Sq()(x) + x
    with pytest.raises(MXNetError, match="autograd.Function 'Sq'.*not supported on a GPU"):
        y.backward()


def _lenet(prefix):
    net = gluon.nn.HybridSequential(prefix=prefix)
    with net.name_scope():
        net.add(gluon.nn.Conv2D(3, 3, padding=1), gluon.nn.BatchNorm(),
                gluon.nn.Activation("relu"), gluon.nn.MaxPool2D(2),
                gluon.nn.Dense(6, activation="tanh"), gluon.nn.Dropout(0.0), gluon.nn.Dense(3))
    return net


def _train_step(make, c, x, y, hybridize, steps=1):
    mx.random.seed(3)
    net = make("p_")
    net.initialize(mx.init.Xavier(), ctx=c)
    if hybridize:
        net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-3})
    xs, ys = mx.nd.array(x, ctx=c), mx.nd.array(y, ctx=c)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(steps):
        with autograd.record():
            loss = loss_fn(net(xs), ys)
        loss.backward()
        trainer.step(x.shape[0])
    params = sorted(net.collect_params().items())
    for _, p in params:
        assert p.data(c).context == c
        if p.grad_req != "null":
            assert p.grad(c).context == c
    return loss.asnumpy(), [(n[2:], p.data(c).asnumpy()) for n, p in params]


@pytest.mark.parametrize("hybridize", [False, True])
def test_gluon_conv_net_training_step_matches_cpu(ctx, hybridize):
    x = _r(2, 1, 4, 4)
    y = np.array([0, 2], np.float32)
    want_loss, want = _train_step(_lenet, mx.cpu(), x, y, hybridize)
    got_loss, got = _train_step(_lenet, ctx, x, y, hybridize)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    for (n, g), (_, w) in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=n)


def test_gluon_mlp_training_loop_compiles_backward_once(ctx):
    from mxc.frontend import autograd as ag

    def mlp(prefix):
        net = gluon.nn.HybridSequential(prefix=prefix)
        with net.name_scope():
            net.add(gluon.nn.Dense(16, activation="relu"), gluon.nn.Dense(3))
        return net
    x = _r(8, 5)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.float32)
    _train_step(mlp, ctx, x, y, False, steps=1)
    before = ag.stats["compiles"]
    got_loss, got = _train_step(mlp, ctx, x, y, False, steps=3)
    assert ag.stats["compiles"] == before
    want_loss, want = _train_step(mlp, mx.cpu(), x, y, False, steps=3)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    for (n, g), (_, w) in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=n)
