"""mx.operator Custom operators: imperative (with autograd), in Symbol graphs run by the
executor / Module (forward, backward, grad_req, aux states), and their error messages.
The examples are MXNet's documented ones (a square op, the custom softmax of
example/numpy-ops/custom_softmax.py)."""
import numpy as np
import pytest

import mxc as mx
from mxc.test_utils import (
    assert_almost_equal,
    check_numeric_gradient,
    check_symbolic_backward,
    check_symbolic_forward,
)


class _Sqr(mx.operator.CustomOp):
    def forward(self, is_train, req, in_data, out_data, aux):
        self.assign(out_data[0], req[0], in_data[0] * in_data[0])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        self.assign(in_grad[0], req[0], 2 * in_data[0] * out_grad[0])


@mx.operator.register("t6_sqr")
class _SqrProp(mx.operator.CustomOpProp):
    def __init__(self):
        super().__init__(need_top_grad=True)

    def create_operator(self, ctx, shapes, dtypes):
        return _Sqr()


class _Softmax(mx.operator.CustomOp):
    def forward(self, is_train, req, in_data, out_data, aux):
        x = in_data[0].asnumpy()
        y = np.exp(x - x.max(axis=1, keepdims=True))
        y /= y.sum(axis=1, keepdims=True)
        self.assign(out_data[0], req[0], mx.nd.array(y))

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        lab = in_data[1].asnumpy().ravel().astype(np.int64)
        y = out_data[0].asnumpy()
        y[np.arange(lab.shape[0]), lab] -= 1.0
        self.assign(in_grad[0], req[0], mx.nd.array(y))


@mx.operator.register("t6_softmax")
class _SoftmaxProp(mx.operator.CustomOpProp):
    def __init__(self):
        super().__init__(need_top_grad=False)

    def list_arguments(self):
        return ["data", "label"]

    def infer_shape(self, in_shape):
        return [in_shape[0], (in_shape[0][0],)], [in_shape[0]], []

    def create_operator(self, ctx, shapes, dtypes):
        return _Softmax()


class _ScaleAcc(mx.operator.CustomOp):
    """out0 = x * scale, out1 = x + 1; aux counts the training forwards."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, is_train, req, in_data, out_data, aux):
        self.assign(out_data[0], req[0], in_data[0] * self.scale)
        self.assign(out_data[1], req[1], in_data[0] + 1)
        if is_train:
            aux[0][:] += 1

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        self.assign(in_grad[0], req[0], out_grad[0] * self.scale + out_grad[1])


@mx.operator.register("t6_scale")
class _ScaleProp(mx.operator.CustomOpProp):
    def __init__(self, scale="1.0"):
        super().__init__()
        self.scale = float(scale)   # attributes arrive as strings, as in MXNet

    def list_outputs(self):
        return ["scaled", "plus1"]

    def list_auxiliary_states(self):
        return ["count"]

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0], in_shape[0]], [(1,)]

    def infer_type(self, in_type):
        return in_type, [in_type[0], in_type[0]], [in_type[0]]

    def create_operator(self, ctx, shapes, dtypes):
        assert ctx == "cpu(0)" and shapes[0] == [2, 3] and dtypes[0] == np.float32
        return _ScaleAcc(self.scale)


def test_imperative_forward_and_autograd():
    x = mx.nd.array(np.arange(6).reshape(2, 3) - 2.5)
    y = mx.nd.Custom(x, op_type="t6_sqr")
    assert_almost_equal(y, (np.arange(6).reshape(2, 3) - 2.5) ** 2)
    x.attach_grad()
    with mx.autograd.record():
        z = mx.nd.sin(mx.nd.Custom(data=x, op_type="t6_sqr")) * 2
    z.backward()
    xn = x.asnumpy()
    assert_almost_equal(x.grad, 2 * np.cos(xn ** 2) * 2 * xn, rtol=1e-5, atol=1e-6)
    out = mx.nd.zeros((2, 3))
    assert mx.nd.Custom(x, op_type="t6_sqr", out=out) is out
    assert_almost_equal(out, xn ** 2)


def test_imperative_multi_output_aux_and_kwargs():
    x = mx.nd.array(np.random.rand(2, 3))
    count = mx.nd.zeros((1,))
    scaled, plus1 = mx.nd.Custom(x, count, op_type="t6_scale", scale=3)
    assert_almost_equal(scaled, x.asnumpy() * 3)
    assert_almost_equal(plus1, x.asnumpy() + 1)
    assert count.asscalar() == 0   # not training
    x.attach_grad()
    with mx.autograd.record():
        s, p = mx.nd.Custom(x, count, op_type="t6_scale", scale=3)
        loss = s * 2 + p * 5
    loss.backward()
    assert count.asscalar() == 1
    assert_almost_equal(x.grad, np.full((2, 3), 11.0))


def test_symbol_signature_and_inference():
    data = mx.sym.Variable("data")
    s = mx.sym.Custom(data, op_type="t6_scale", scale=0.5, name="sc")
    assert s.list_arguments() == ["data"]
    assert s.list_auxiliary_states() == ["sc_count"]
    assert s.list_outputs() == ["sc_scaled", "sc_plus1"]
    arg, out, aux = s.infer_shape(data=(2, 3))
    assert arg == [(2, 3)] and out == [(2, 3), (2, 3)] and aux == [(1,)]
    _, out_t, _ = s.infer_type(data=np.float64)
    assert out_t == [np.float64, np.float64]
    sm = mx.sym.Custom(data, op_type="t6_softmax", name="softmax")
    assert sm.list_arguments() == ["data", "softmax_label"]
    assert sm.infer_shape(data=(4, 5))[0] == [(4, 5), (4,)]
    js = sm.tojson()
    assert '"op": "Custom"' in js and '"op_type": "t6_softmax"' in js
    again = mx.sym.load_json(js)
    assert again.list_arguments() == sm.list_arguments()


def test_executor_forward_backward_grad_reqs():
    a = mx.sym.Variable("a")
    net = mx.sym.Custom(mx.sym.tanh(a), op_type="t6_sqr") * 3
    x = np.random.rand(3, 4)
    t = np.tanh(x)
    check_symbolic_forward(net, [x], [3 * t ** 2], rtol=1e-5, atol=1e-6)
    og = np.random.rand(3, 4)
    for req in ("write", "add", "null"):
        check_symbolic_backward(net, [x], [og], [og * 3 * 2 * t * (1 - t ** 2)],
                                grad_req=req, rtol=1e-4, atol=1e-5)
    check_numeric_gradient(net, [x], numeric_eps=1e-3, rtol=1e-2, atol=1e-3)
    with pytest.raises(AssertionError):
        check_symbolic_backward(net, [x], [og], [og * 2 * t * (1 - t ** 2)], rtol=1e-4,
                                atol=1e-5)


def test_executor_softmax_loss_and_aux():
    data = mx.sym.Variable("data")
    fc = mx.sym.FullyConnected(data, num_hidden=3, name="fc")
    net = mx.sym.Custom(fc, op_type="t6_softmax", name="softmax")
    exe = net.simple_bind(mx.cpu(), data=(4, 5))
    assert exe.arg_dict["softmax_label"].shape == (4,)
    rng = np.random.default_rng(0)
    xd = rng.standard_normal((4, 5)).astype(np.float32)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    lab = np.array([0, 1, 2, 1])
    exe.arg_dict["data"][:] = xd
    exe.arg_dict["fc_weight"][:] = w
    exe.arg_dict["fc_bias"][:] = 0.5
    exe.arg_dict["softmax_label"][:] = lab
    out = exe.forward(is_train=True)[0].asnumpy()
    z = xd @ w.T + 0.5
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert_almost_equal(out, p, rtol=1e-5, atol=1e-6)
    exe.backward()
    g = p.copy()
    g[np.arange(4), lab] -= 1
    assert_almost_equal(exe.grad_dict["fc_weight"], g.T @ xd, rtol=1e-4, atol=1e-5)
    assert_almost_equal(exe.grad_dict["fc_bias"], g.sum(0), rtol=1e-4, atol=1e-5)
    # auxiliary state written by the Python op through the executor
    s = mx.sym.Custom(data, op_type="t6_scale", scale=2, name="sc")
    e2 = s.simple_bind(mx.cpu(), data=(2, 3))
    e2.arg_dict["data"][:] = 1.0
    e2.forward(is_train=True)
    e2.forward(is_train=True)
    e2.forward(is_train=False)
    assert e2.aux_dict["sc_count"].asscalar() == 2
    assert_almost_equal(e2.outputs[1], np.full((2, 3), 2.0))


def test_module_trains_with_custom_loss():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 4)) * 3
    lab = rng.integers(0, 3, 60)
    xs = (centers[lab] + rng.standard_normal((60, 4)) * 0.3).astype(np.float32)
    data = mx.sym.Variable("data")
    net = mx.sym.Custom(mx.sym.FullyConnected(data, num_hidden=3, name="fc"),
                        op_type="t6_softmax", name="softmax")
    it = mx.io.NDArrayIter(xs, lab.astype(np.float32), batch_size=10,
                           label_name="softmax_label")
    mod = mx.mod.Module(net, data_names=["data"], label_names=["softmax_label"])
    mod.fit(it, num_epoch=8, optimizer="sgd", optimizer_params={"learning_rate": 0.1},
            initializer=mx.init.Xavier())
    assert mod.score(it, "acc")[0][1] > 0.9


def test_errors_are_clear():
    x = mx.nd.ones((2, 2))
    with pytest.raises(mx.MXNetError, match="op_type"):
        mx.nd.Custom(x)
    with pytest.raises(mx.MXNetError, match="Cannot find custom operator 'nope'"):
        mx.nd.Custom(x, op_type="nope")
    with pytest.raises(mx.MXNetError, match="takes 2 inputs"):
        mx.nd.Custom(x, op_type="t6_softmax")
    with pytest.raises(mx.MXNetError, match="CustomOpProp subclass"):
        mx.operator.register("bad")(int)
    data = mx.sym.Variable("data")
    s = mx.sym.Custom(data, op_type="t6_softmax")
    with pytest.raises(mx.MXNetError):
        s.infer_shape(data=(4, 5), **{s.list_arguments()[1]: (3,)})
    assert "Custom" in mx.operator.get_all_registered_operators()
    assert "t6_sqr" in mx.operator.get_all_registered_operators()


class _SqrNet(mx.gluon.HybridBlock):
    """Dense -> Custom square -> sum: a Custom node between compiled ops."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.dense = mx.gluon.nn.Dense(3, in_units=4)

    def hybrid_forward(self, F, x):
        return F.sum(F.Custom(self.dense(x), op_type="t6_sqr"), axis=1)


def test_hybridized_block_with_custom_op():
    """hybridize()d blocks run their Custom nodes node by node: same values and gradients
    as the imperative block, the CustomOp created once per node."""
    x = mx.nd.array(np.random.default_rng(0).standard_normal((5, 4)))
    results = []
    for hybrid in (False, True):
        net = _SqrNet()
        net.initialize(mx.init.Constant(0.3))
        if hybrid:
            net.hybridize()
        for _ in range(2):   # the second call reuses the cached graph and its runners
            with mx.autograd.record():
                y = net(x)
            y.backward()
        results.append((y.asnumpy(), net.dense.weight.grad().asnumpy()))
    assert_almost_equal(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    assert_almost_equal(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)
    w = np.full((3, 4), 0.3)
    h = x.asnumpy() @ w.T   # the bias keeps its own "zeros" initializer
    assert_almost_equal(results[0][0], (h * h).sum(axis=1), rtol=1e-5, atol=1e-5)
