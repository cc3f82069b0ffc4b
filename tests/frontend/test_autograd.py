"""mx.autograd: recording, backward (one compiled graph per tape structure), grad_req
write/add/null, retain_graph, pause/train_mode/predict_mode, mark_variables, autograd.grad,
Function, get_symbol, error cases; an MLP and a small convnet against the Symbol executor,
numpy and finite differences; MXNet's gluon mlp training step recomputed imperatively."""
import json
from pathlib import Path

import numpy as np
import pytest

import mxc as mx
from mxc import autograd as ag
from mxc.base import MXNetError
from mxc.testing import reference

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture
def count_compiles(monkeypatch):
    """Counts compile_graph calls (imperative ops and backward programs alike)."""
    from mxc.compiler import build

    calls = []
    real = build.compile_graph

    def wrapped(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(build, "compile_graph", wrapped)
    return calls


# ------------------------------------------------------------------------------------------
# state
# ------------------------------------------------------------------------------------------
def test_recording_and_training_scopes():
    assert not ag.is_recording() and not ag.is_training()
    with ag.record():
        assert ag.is_recording() and ag.is_training()
        with ag.pause():
            assert not ag.is_recording() and not ag.is_training()
            with ag.train_mode():
                assert ag.is_training() and not ag.is_recording()
        with ag.predict_mode():
            assert not ag.is_training() and ag.is_recording()
        assert ag.is_recording() and ag.is_training()
    with ag.record(train_mode=False):
        assert ag.is_recording() and not ag.is_training()
        with ag.pause(train_mode=True):
            assert ag.is_training() and not ag.is_recording()
    assert not ag.is_recording() and not ag.is_training()
    assert ag.set_recording(True) is False
    assert ag.set_recording(False) is True
    assert ag.set_training(True) is False
    assert ag.set_training(False) is True


# ------------------------------------------------------------------------------------------
# elementary expressions
# ------------------------------------------------------------------------------------------
def test_expression_gradients_vs_numpy():
    r = _rng(1)
    xa = r.standard_normal((3, 4)).astype(np.float32)
    ya = r.standard_normal((1, 4)).astype(np.float32)
    x, y = mx.nd.array(xa), mx.nd.array(ya)
    x.attach_grad()
    y.attach_grad()
    with ag.record():
        z = x * x + 2 * x - y / 3 + mx.nd.exp(x) * y
        w = (z.sum() + (x.T * 1.5).sum()) * 0.5
    assert z.grad is None and w.grad is None
    w.backward()
    gx = 0.5 * (2 * xa + 2 + np.exp(xa) * ya + 1.5)
    gy = 0.5 * (-1.0 / 3 * 3 + np.exp(xa).sum(0, keepdims=True))
    np.testing.assert_allclose(x.grad.asnumpy(), gx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.grad.asnumpy(), gy, rtol=1e-5, atol=1e-5)


def test_head_gradient_and_multiple_heads():
    xa = _rng(2).standard_normal((2, 3)).astype(np.float32)
    x = mx.nd.array(xa)
    x.attach_grad()
    hg = _rng(3).standard_normal((2, 3)).astype(np.float32)
    with ag.record():
        y = mx.nd.tanh(x)
    y.backward(mx.nd.array(hg))
    np.testing.assert_allclose(x.grad.asnumpy(), hg * (1 - np.tanh(xa) ** 2), rtol=1e-5,
                               atol=1e-6)
    with ag.record():
        a = x * 2
        b = mx.nd.square(x)
    ag.backward([a, b], [None, mx.nd.ones((2, 3)) * 3])
    np.testing.assert_allclose(x.grad.asnumpy(), 2 + 6 * xa, rtol=1e-5, atol=1e-5)
    # the same head twice: gradients add up
    with ag.record():
        c = x * 3
    ag.backward([c, c])
    np.testing.assert_allclose(x.grad.asnumpy(), np.full((2, 3), 6.0), rtol=0, atol=0)


def test_views_copies_and_indexing_are_recorded():
    xa = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 10
    x = mx.nd.array(xa)
    x.attach_grad()
    with ag.record():
        a = x.reshape((6, 4))[1:5:2]            # slice with step
        b = x[1]                                # int index drops axis 0
        c = x[:, 2, ::-1]                       # mixed int + negative step
        d = x.astype("float64").astype("float32").copy()
        loss = (a * 2).sum() + (b * b).sum() + (c * 3).sum() + (d * d.detach()).sum()
    loss.backward()
    want = np.zeros_like(xa)
    want.reshape(6, 4)[1:5:2] += 2
    want[1] += 2 * xa[1]
    want[:, 2, :] += 3
    want += xa
    np.testing.assert_allclose(x.grad.asnumpy(), want, rtol=1e-6, atol=1e-6)
    # unrecorded forward values are unchanged
    np.testing.assert_array_equal(c.asnumpy(), xa[:, 2, ::-1])
    np.testing.assert_array_equal(b.asnumpy(), xa[1])


def test_multi_output_ops_and_out_argument():
    xa = np.arange(12, dtype=np.float32).reshape(4, 3)
    x = mx.nd.array(xa)
    x.attach_grad()
    buf = mx.nd.zeros((4, 3))
    with ag.record():
        a, _b = mx.nd.split(x, num_outputs=2, axis=0)   # two outputs, one unused below
        mx.nd.elemwise_mul(x, x, out=buf)               # out= a fresh array: recorded
        loss = (a * 5).sum() + buf.sum()
    loss.backward()
    want = 2 * xa
    want[:2] += 5
    np.testing.assert_allclose(x.grad.asnumpy(), want)


def test_variable_as_head_and_detach():
    x = mx.nd.array([1.0, 2.0])
    x.attach_grad()
    with ag.record():
        y = x * x.detach()                      # detach: a constant, no gradient through it
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), [1.0, 2.0])
    x.backward(mx.nd.array([5.0, 7.0]))         # d x / d x = head gradient
    np.testing.assert_allclose(x.grad.asnumpy(), [5.0, 7.0])
    assert x.detach()._ag is None
    assert x.detach().grad is None


# ------------------------------------------------------------------------------------------
# MLP: numpy and the Symbol executor
# ------------------------------------------------------------------------------------------
def _mlp_params(seed=0):
    r = _rng(seed)
    return {"data": r.standard_normal((6, 5)).astype(np.float32),
            "fc1_weight": (r.standard_normal((8, 5)) * 0.5).astype(np.float32),
            "fc1_bias": r.standard_normal(8).astype(np.float32),
            "fc2_weight": (r.standard_normal((4, 8)) * 0.5).astype(np.float32),
            "fc2_bias": r.standard_normal(4).astype(np.float32)}


LABEL = np.array([0, 3, 1, 2, 3, 0], np.float32)


def _imperative_mlp(nd, label):
    h = mx.nd.relu(mx.nd.FullyConnected(nd["data"], nd["fc1_weight"], nd["fc1_bias"],
                                        num_hidden=8))
    logits = mx.nd.FullyConnected(h, nd["fc2_weight"], nd["fc2_bias"], num_hidden=4)
    return -mx.nd.pick(mx.nd.log_softmax(logits), label)


def _numpy_mlp(p, label):
    z1 = p["data"] @ p["fc1_weight"].T + p["fc1_bias"]
    h = np.maximum(z1, 0)
    lg = h @ p["fc2_weight"].T + p["fc2_bias"]
    e = np.exp(lg - lg.max(1, keepdims=True))
    sm = e / e.sum(1, keepdims=True)
    onehot = np.eye(4, dtype=np.float32)[label.astype(int)]
    loss = -np.log((sm * onehot).sum(1))
    dlg = sm - onehot
    dh = dlg @ p["fc2_weight"] * (z1 > 0)
    return loss, {"fc2_weight": dlg.T @ h, "fc2_bias": dlg.sum(0),
                  "fc1_weight": dh.T @ p["data"], "fc1_bias": dh.sum(0),
                  "data": dh @ p["fc1_weight"]}


def test_mlp_vs_numpy_and_executor():
    p = _mlp_params()
    nd = {k: mx.nd.array(v) for k, v in p.items()}
    for v in nd.values():
        v.attach_grad()
    with ag.record():
        loss = _imperative_mlp(nd, mx.nd.array(LABEL))
    loss.backward()
    want_loss, want = _numpy_mlp(p, LABEL)
    np.testing.assert_allclose(loss.asnumpy(), want_loss, rtol=1e-5, atol=1e-5)
    for k, g in want.items():
        np.testing.assert_allclose(nd[k].grad.asnumpy(), g, rtol=1e-4, atol=1e-5, err_msg=k)

    # the same graph through mx.sym + simple_bind: same gradient definitions, same numbers
    data = mx.sym.var("data")
    h = mx.sym.relu(mx.sym.FullyConnected(data, num_hidden=8, name="fc1"))
    lg = mx.sym.FullyConnected(h, num_hidden=4, name="fc2")
    s = -mx.sym.pick(mx.sym.log_softmax(lg), mx.sym.var("label"))
    exe = s.simple_bind(mx.cpu(), data=(6, 5), label=(6,),
                        grad_req={k: "write" for k in p})
    for k, v in p.items():
        exe.arg_dict[k][:] = v
    exe.arg_dict["label"][:] = LABEL
    exe.forward(is_train=True)
    exe.backward(mx.nd.ones((6,)))
    for k in p:
        np.testing.assert_allclose(nd[k].grad.asnumpy(), exe.grad_dict[k].asnumpy(),
                                   rtol=1e-6, atol=1e-7, err_msg=k)


# ------------------------------------------------------------------------------------------
# convnet: Convolution, BatchNorm (train), relu, Pooling, FullyConnected, SoftmaxOutput
# ------------------------------------------------------------------------------------------
CONV_SHAPES = {"data": (4, 3, 8, 8), "conv_weight": (6, 3, 3, 3), "conv_bias": (6,),
               "bn_gamma": (6,), "bn_beta": (6,), "fc_weight": (5, 96), "fc_bias": (5,)}
CONV_LABEL = np.array([1, 0, 3, 4], np.float32)


def _conv_params(seed=4):
    r = _rng(seed)
    p = {k: (r.standard_normal(s) * 0.5).astype(np.float32) for k, s in CONV_SHAPES.items()}
    aux = {"bn_moving_mean": (r.standard_normal(6) * 0.1).astype(np.float32),
           "bn_moving_var": (r.random(6) + 0.5).astype(np.float32)}
    return p, aux


def _imperative_convnet(nd, mm, mv, label, loss="softmax"):
    c = mx.nd.Convolution(nd["data"], nd["conv_weight"], nd["conv_bias"], kernel=(3, 3),
                          pad=(1, 1), num_filter=6)
    b = mx.nd.BatchNorm(c, nd["bn_gamma"], nd["bn_beta"], mm, mv, fix_gamma=False,
                        momentum=0.8)
    r = mx.nd.relu(b)
    pl = mx.nd.Pooling(r, kernel=(2, 2), stride=(2, 2), pool_type="max")
    f = mx.nd.FullyConnected(pl, nd["fc_weight"], nd["fc_bias"], num_hidden=5)
    if loss == "softmax":
        return mx.nd.SoftmaxOutput(f, label)
    return -mx.nd.pick(mx.nd.log_softmax(f), label)


def _numpy_convnet_loss(p, aux):
    """float64 loss sum(-log_softmax picked) through the ops' numpy references."""
    c = reference("Convolution", [p["data"], p["conv_weight"], p["conv_bias"]],
                  {"kernel": (3, 3), "pad": (1, 1), "num_filter": 6})[0]
    b = reference("BatchNorm", [c, p["bn_gamma"], p["bn_beta"], aux["bn_moving_mean"],
                                aux["bn_moving_var"]], {"fix_gamma": False}, is_train=True)[0]
    r = np.maximum(b, 0)
    pl = reference("Pooling", [r], {"kernel": (2, 2), "stride": (2, 2),
                                    "pool_type": "max"})[0]
    f = pl.reshape(pl.shape[0], -1) @ p["fc_weight"].T + p["fc_bias"]
    m = f.max(1, keepdims=True)
    lsm = f - m - np.log(np.exp(f - m).sum(1, keepdims=True))
    return -lsm[np.arange(len(CONV_LABEL)), CONV_LABEL.astype(int)].sum()


def test_convnet_vs_executor_numeric_and_moving_stats():
    p, aux = _conv_params()
    d = mx.sym.var("data")
    c = mx.sym.Convolution(d, kernel=(3, 3), pad=(1, 1), num_filter=6, name="conv")
    b = mx.sym.BatchNorm(c, fix_gamma=False, momentum=0.8, name="bn")
    r = mx.sym.Activation(b, act_type="relu")
    pl = mx.sym.Pooling(r, kernel=(2, 2), stride=(2, 2), pool_type="max")
    f = mx.sym.FullyConnected(pl, num_hidden=5, name="fc")
    s = mx.sym.SoftmaxOutput(f, mx.sym.var("softmax_label"), name="sm")
    exe = s.simple_bind(mx.cpu(), data=CONV_SHAPES["data"], softmax_label=(4,),
                        grad_req={k: "write" for k in CONV_SHAPES})
    for k, v in p.items():
        exe.arg_dict[k][:] = v
    exe.arg_dict["softmax_label"][:] = CONV_LABEL
    for k, v in aux.items():
        exe.aux_dict[k][:] = v
    exe.forward(is_train=True)
    exe.backward()

    nd = {k: mx.nd.array(v) for k, v in p.items()}
    for v in nd.values():
        v.attach_grad()
    mm, mv = mx.nd.array(aux["bn_moving_mean"]), mx.nd.array(aux["bn_moving_var"])
    with ag.record():
        out = _imperative_convnet(nd, mm, mv, mx.nd.array(CONV_LABEL))
    # train-mode forward alone leaves the moving statistics alone (as MXNet's CPU BatchNorm)
    np.testing.assert_array_equal(mm.asnumpy(), aux["bn_moving_mean"])
    out.backward()
    np.testing.assert_allclose(out.asnumpy(), exe.outputs[0].asnumpy(), rtol=1e-6, atol=1e-7)
    for k in CONV_SHAPES:
        np.testing.assert_allclose(nd[k].grad.asnumpy(), exe.grad_dict[k].asnumpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=k)
    # backward updated them exactly like the executor's backward
    np.testing.assert_allclose(mm.asnumpy(), exe.aux_dict["bn_moving_mean"].asnumpy(),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mv.asnumpy(), exe.aux_dict["bn_moving_var"].asnumpy(),
                               rtol=1e-6, atol=1e-7)
    assert not np.allclose(mm.asnumpy(), aux["bn_moving_mean"])

    # log_softmax loss: finite differences of the float64 numpy reference network
    nd2 = {k: mx.nd.array(v) for k, v in p.items()}
    for v in nd2.values():
        v.attach_grad()
    with ag.record():
        loss = _imperative_convnet(nd2, mx.nd.array(aux["bn_moving_mean"]),
                                   mx.nd.array(aux["bn_moving_var"]),
                                   mx.nd.array(CONV_LABEL), loss="log_softmax")
    loss.backward()
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    r = _rng(9)
    eps = 1e-5
    for k in CONV_SHAPES:
        got = nd2[k].grad.asnumpy()
        flat = p64[k].reshape(-1)
        for j in r.choice(flat.size, size=min(6, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + eps
            fp = _numpy_convnet_loss(p64, aux)
            flat[j] = old - eps
            fm = _numpy_convnet_loss(p64, aux)
            flat[j] = old
            num = (fp - fm) / (2 * eps)
            assert abs(got.reshape(-1)[j] - num) <= 2e-3 + 2e-3 * abs(num), (k, j, got, num)


def test_training_loop_compiles_once(count_compiles):
    p, aux = _conv_params(5)
    nd = {k: mx.nd.array(v) for k, v in p.items() if k != "data"}
    for v in nd.values():
        v.attach_grad()
    mm, mv = mx.nd.array(aux["bn_moving_mean"]), mx.nd.array(aux["bn_moving_var"])
    r = _rng(6)

    def step():
        nd["data"] = mx.nd.array(r.standard_normal(CONV_SHAPES["data"]))
        with ag.record():
            out = _imperative_convnet(nd, mm, mv, mx.nd.array(CONV_LABEL), "log_softmax")
        out.backward()
        with ag.pause():
            for k, v in nd.items():
                if k != "data":
                    v[:] = v - 0.01 * v.grad
        return out

    step()
    first = len(count_compiles)
    assert first > 0
    for _ in range(3):
        step()
    assert len(count_compiles) == first, "iterations after the first must not compile"


# ------------------------------------------------------------------------------------------
# grad_req, retain_graph, pause
# ------------------------------------------------------------------------------------------
def test_grad_req_add_write_null():
    xa = _rng(7).standard_normal((3,)).astype(np.float32)
    x, y, z = mx.nd.array(xa), mx.nd.array(xa), mx.nd.array(xa)
    x.attach_grad("add")
    y.attach_grad("write")
    z.attach_grad("null")
    for it in range(3):
        with ag.record():
            out = (x * x + y * 3 + z * 5).sum()
        out.backward()
        np.testing.assert_allclose(x.grad.asnumpy(), (it + 1) * 2 * xa, rtol=1e-6)
        np.testing.assert_allclose(y.grad.asnumpy(), np.full(3, 3.0))
    assert z.grad is None or np.all(z.grad.asnumpy() == 0)
    # a variable not reached by the heads is left untouched; one reached without a gradient
    # path gets zeros (write)
    x.grad[:] = 0
    y.grad[:] = 42
    with ag.record():
        out = (x * 2).sum() + mx.nd.BlockGrad(y).sum()
    out.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), np.full(3, 2.0))
    np.testing.assert_allclose(y.grad.asnumpy(), np.zeros(3))


def test_retain_graph():
    x = mx.nd.array([1.0, 2.0, 3.0])
    x.attach_grad("add")
    with ag.record():
        y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), 3 * 2 * np.array([1.0, 2.0, 3.0]))
    with pytest.raises(MXNetError, match="not in a computational graph"):
        y.backward()


def test_pause_excludes_operations():
    x = mx.nd.array([1.0, 2.0])
    x.attach_grad()
    with ag.record():
        a = x * 2
        with ag.pause():
            assert not ag.is_recording()
            b = x * 10                          # not recorded: a constant for backward
        out = (a * b).sum()
    out.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), 2 * 10 * np.array([1.0, 2.0]))
    assert b._ag is None or b._ag[0].is_leaf and not b._ag[0].is_var


# ------------------------------------------------------------------------------------------
# train / predict mode: Dropout, BatchNorm
# ------------------------------------------------------------------------------------------
def test_dropout_train_and_predict_mode():
    xa = _rng(8).standard_normal((40, 50)).astype(np.float32) + 3
    x = mx.nd.array(xa)
    x.attach_grad()
    with ag.record():                           # train mode: random mask, scaled by 1/(1-p)
        y = mx.nd.Dropout(x, p=0.5)
    ya = y.asnumpy()
    kept = ya != 0
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(ya[kept], 2 * xa[kept], rtol=1e-6)
    y.backward()
    # the backward used the SAME mask the forward drew (not a fresh one)
    np.testing.assert_allclose(x.grad.asnumpy(), np.where(kept, 2.0, 0.0))

    with ag.record(train_mode=False):           # predict mode: identity
        y = mx.nd.Dropout(x, p=0.5)
    np.testing.assert_array_equal(y.asnumpy(), xa)
    y.backward()                                # (backward train_mode=True by default)
    np.testing.assert_allclose(x.grad.asnumpy(), np.ones_like(xa))

    with ag.record(), ag.predict_mode():
        y = mx.nd.Dropout(x, p=0.5)
    np.testing.assert_array_equal(y.asnumpy(), xa)
    with ag.train_mode():                       # not recording, but training: drops
        y = mx.nd.Dropout(x, p=0.5)
    assert (y.asnumpy() == 0).any()
    y = mx.nd.Dropout(x, p=0.5)                 # default imperative mode: inference
    np.testing.assert_array_equal(y.asnumpy(), xa)


def test_batchnorm_train_and_predict_mode():
    r = _rng(10)
    xa = r.standard_normal((5, 3, 2, 2)).astype(np.float32) * 2 + 1
    gamma = (r.random(3) + 0.5).astype(np.float32)
    beta = r.standard_normal(3).astype(np.float32)
    mm0 = r.standard_normal(3).astype(np.float32)
    mv0 = (r.random(3) + 0.5).astype(np.float32)
    x, g, b = mx.nd.array(xa), mx.nd.array(gamma), mx.nd.array(beta)
    mm, mv = mx.nd.array(mm0), mx.nd.array(mv0)
    for a in (x, g, b):
        a.attach_grad()
    eps = 1e-3
    bs = (1, 3, 1, 1)
    # predict mode: moving statistics normalise; backward(train_mode=False) leaves them
    with ag.record(train_mode=False):
        y = mx.nd.BatchNorm(x, g, b, mm, mv, fix_gamma=False, eps=eps)
    inv = 1 / np.sqrt(mv0 + eps)
    np.testing.assert_allclose(y.asnumpy(), (xa - mm0.reshape(bs)) * (inv * gamma).reshape(bs)
                               + beta.reshape(bs), rtol=1e-5, atol=1e-5)
    y.backward(train_mode=False)
    np.testing.assert_allclose(x.grad.asnumpy(), np.broadcast_to((inv * gamma).reshape(bs),
                                                                 xa.shape), rtol=1e-5)
    np.testing.assert_array_equal(mm.asnumpy(), mm0)
    np.testing.assert_array_equal(mv.asnumpy(), mv0)
    # train mode: batch statistics; backward updates the moving statistics once
    with ag.record():
        y = mx.nd.BatchNorm(x, g, b, mm, mv, fix_gamma=False, eps=eps, momentum=0.9)
        loss = (y * y).sum()
    mean = xa.mean((0, 2, 3))
    var = xa.var((0, 2, 3))
    np.testing.assert_allclose(
        y.asnumpy(), (xa - mean.reshape(bs)) / np.sqrt(var + eps).reshape(bs) *
        gamma.reshape(bs) + beta.reshape(bs), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(mm.asnumpy(), mm0)
    loss.backward()
    np.testing.assert_allclose(mm.asnumpy(), 0.9 * mm0 + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mv.asnumpy(), 0.9 * mv0 + 0.1 * var, rtol=1e-4, atol=1e-5)
    # d/dbeta sum(y^2) = 2 sum(y) = 2 * N * beta per channel (batch-normalised part sums to 0)
    np.testing.assert_allclose(b.grad.asnumpy(), 2 * 20 * beta, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------
# mark_variables, grad, Function, get_symbol
# ------------------------------------------------------------------------------------------
def test_mark_variables():
    x = mx.nd.array([1.0, 2.0])
    w = mx.nd.array([3.0, 4.0])
    gx, gw = mx.nd.zeros((2,)), mx.nd.ones((2,))
    ag.mark_variables([x, w], [gx, gw], ["write", "add"])
    assert x.grad is gx and w.grad is gw
    with ag.record():
        y = (x * w).sum()
    y.backward()
    np.testing.assert_allclose(gx.asnumpy(), [3.0, 4.0])
    np.testing.assert_allclose(gw.asnumpy(), [2.0, 3.0])     # 1 + x
    assert x._fresh_grad and w._fresh_grad
    x._fresh_grad = False
    assert not x._fresh_grad
    ag.mark_variables(x, gx)                                # single arrays, 'write'
    with pytest.raises(MXNetError, match="shape"):
        ag.mark_variables([x], [mx.nd.zeros((3,))])
    with pytest.raises(MXNetError, match="grad_req"):
        ag.mark_variables([x], [gx], "sometimes")


def test_autograd_grad():
    xa = np.array([0.5, -1.0, 2.0], np.float32)
    x = mx.nd.array(xa)
    x.attach_grad()
    x.grad[:] = 7
    with ag.record():
        y = mx.nd.exp(x) + x
    dx = ag.grad(y, [x], retain_graph=True)
    assert isinstance(dx, list) and len(dx) == 1
    np.testing.assert_allclose(dx[0].asnumpy(), np.exp(xa) + 1, rtol=1e-6)
    np.testing.assert_allclose(x.grad.asnumpy(), np.full(3, 7.0))   # untouched
    dx = ag.grad(y, x, head_grads=mx.nd.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(dx.asnumpy(), (np.exp(xa) + 1) * [1, 2, 3], rtol=1e-6)
    with ag.record():
        y = x * 2
    with pytest.raises(MXNetError, match="not supported yet"):
        ag.grad(y, [x], create_graph=True)
    c = mx.nd.array([1.0, 2.0, 3.0])
    with pytest.raises(MXNetError, match="does not require gradient"):
        ag.grad(y, [c])
    # a marked variable the heads do not reach: zeros
    u = mx.nd.array([1.0])
    u.attach_grad()
    du = ag.grad(y, [u])
    np.testing.assert_array_equal(du[0].asnumpy(), [0.0])


class _Sigmoid(ag.Function):
    def forward(self, x):
        y = 1 / (1 + mx.nd.exp(-x))
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        (y,) = self.saved_tensors
        return dy * y * (1 - y)


class _MulAdd(ag.Function):
    """Two inputs, two outputs; backward deliberately scaled to show it is the one used."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b, a + b

    def backward(self, d_prod, d_sum):
        a, b = self.saved_tensors
        return 10 * (d_prod * b + d_sum), 10 * (d_prod * a + d_sum)


def test_function():
    xa = np.array([-1.0, 0.0, 2.0], np.float32)
    x = mx.nd.array(xa)
    x.attach_grad()
    with ag.record():
        h = x * 2                               # compiled op before the Function
        m = _Sigmoid()(h)
        out = (m * m).sum()                     # and after it
    out.backward()
    s = 1 / (1 + np.exp(-2 * xa))
    np.testing.assert_allclose(x.grad.asnumpy(), 2 * s * s * (1 - s) * 2, rtol=1e-5,
                               atol=1e-6)
    a, b = mx.nd.array([1.0, 2.0]), mx.nd.array([3.0, 5.0])
    a.attach_grad()
    b.attach_grad()
    with ag.record():
        p, q = _MulAdd()(a, b)
        out = (p + 2 * q).sum()
    out.backward()
    np.testing.assert_allclose(a.grad.asnumpy(), 10 * (np.array([3.0, 5.0]) + 2))
    np.testing.assert_allclose(b.grad.asnumpy(), 10 * (np.array([1.0, 2.0]) + 2))
    f = _Sigmoid()
    f(x)
    with pytest.raises(MXNetError, match="only be called once"):
        f(x)
    # outside record: plain forward
    np.testing.assert_allclose(_Sigmoid()(mx.nd.array([0.0])).asnumpy(), [0.5])


def test_get_symbol():
    p = _mlp_params(11)
    nd = {k: mx.nd.array(v) for k, v in p.items()}
    for k, v in nd.items():
        if k != "data":
            v.attach_grad()
    label = mx.nd.array(LABEL)
    with ag.record():
        loss = _imperative_mlp(nd, label)
    sym = ag.get_symbol(loss)
    assert isinstance(sym, mx.sym.Symbol)
    args = sym.list_arguments()
    assert len(args) == 6
    ops = {n.op for n in sym._graph().nodes}
    assert {"FullyConnected", "relu", "log_softmax", "pick"} <= ops
    # evaluate it: same values (inputs bound in argument order = order of first use)
    order = [nd["data"], nd["fc1_weight"], nd["fc1_bias"], nd["fc2_weight"], nd["fc2_bias"],
             label]
    exe = sym.bind(mx.cpu(), {n: a for n, a in zip(args, order)})
    np.testing.assert_allclose(exe.forward()[0].asnumpy(), loss.asnumpy(), rtol=1e-6)
    with pytest.raises(MXNetError, match="not in a computational graph"):
        ag.get_symbol(mx.nd.ones((2,)))


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
def test_error_cases():
    x = mx.nd.array([1.0, 2.0])
    y = x * 2
    with pytest.raises(MXNetError, match="not in a computational graph"):
        y.backward()                            # nothing recorded
    with ag.record():
        y = x * 2                               # no variable: nothing recorded either
    with pytest.raises(MXNetError, match="not in a computational graph"):
        y.backward()
    w = mx.nd.array([1.0, 2.0])
    w.attach_grad("null")
    with ag.record():
        y = w * 2
    with pytest.raises(MXNetError, match="no inputs in computation graph that require"):
        y.backward()
    x.attach_grad()
    with ag.record():
        y = x * 2
    with pytest.raises(MXNetError, match=r"\(3,\).*\(2,\)"):
        y.backward(mx.nd.ones((3,)))
    with pytest.raises(MXNetError, match="same length"):
        ag.backward([y], [None, None])
    y.backward()
    with pytest.raises(MXNetError, match="not in a computational graph"):
        y.backward()                            # second time, no retain_graph
    with ag.record():
        with pytest.raises(MXNetError, match="computational graph"):
            x += 1                              # in-place on a variable while recording
        with pytest.raises(MXNetError, match="computational graph"):
            x[0] = 5
        z = x * 3
        with pytest.raises(MXNetError, match="computational graph"):
            mx.nd.relu(x, out=z)
    np.testing.assert_array_equal(x.asnumpy(), [1.0, 2.0])
    x += 1                                      # fine outside record
    np.testing.assert_array_equal(x.asnumpy(), [2.0, 3.0])


# ------------------------------------------------------------------------------------------
# MXNet gluon mlp training step, recomputed imperatively
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (CASES / "mlp" / "meta.json").exists(), reason="mxnet_cases absent")
def test_gluon_mlp_case_step1_grads():
    d = CASES / "mlp"
    meta = json.loads((d / "meta.json").read_text())
    _, arg_params, _ = mx.model.load_checkpoint(str(d / "mlp"), 0)
    params = {k: v.copy() for k, v in arg_params.items()}
    for v in params.values():
        v.attach_grad()
    data = mx.nd.array(np.load(d / "train" / "data.npy"))
    label = mx.nd.array(np.load(d / "train" / "label.npy"))
    with ag.record():
        h = data
        for i, act in ((0, True), (1, True), (2, False)):
            h = mx.nd.FullyConnected(h, params[f"mlp_dense{i}_weight"],
                                     params[f"mlp_dense{i}_bias"],
                                     num_hidden=params[f"mlp_dense{i}_bias"].shape[0],
                                     flatten=True)
            if act:
                h = mx.nd.Activation(h, act_type="relu")
        loss = -mx.nd.pick(mx.nd.log_softmax(h), label)
    loss.backward()
    step = meta["train"]["steps"][0]
    np.testing.assert_allclose(loss.asnumpy().mean(), step["loss_mean"], rtol=1e-5)
    for name in step["grad_params"]:
        want = np.load(d / step["dir"] / "grad" / f"{name}.npy")
        np.testing.assert_allclose(params[name].grad.asnumpy(), want, rtol=1e-3,
                                   atol=1e-5 * np.abs(want).max(), err_msg=name)
