"""mx.gluon.contrib.nn (MXNet 1.9.1): Concurrent, HybridConcurrent, Identity,
SparseEmbedding, SyncBatchNorm and PixelShuffle1D/2D/3D against numpy references."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import mxc as mx
from mxc import autograd
from mxc.base import MXNetError
from mxc.gluon import nn
from mxc.gluon.contrib import nn as cnn


@pytest.fixture(autouse=True)
def fresh_names():
    with mx.name.NameManager():
        yield


def _dense_ref(x, dense):
    return x @ dense.weight.data().asnumpy().T + dense.bias.data().asnumpy()


# -- Concurrent / HybridConcurrent / Identity ---------------------------------------------
@pytest.mark.parametrize("hybrid", [False, True])
def test_concurrent_concatenates_children(hybrid):
    net = cnn.HybridConcurrent(axis=1) if hybrid else cnn.Concurrent(axis=1)
    with net.name_scope():
        net.add(nn.Dense(3, in_units=5))
        net.add(nn.Dense(2, in_units=5))
        net.add(cnn.Identity())
    net.initialize(mx.init.Xavier())
    x = np.random.RandomState(0).uniform(-1, 1, (4, 5)).astype(np.float32)
    d0, d1 = net[0], net[1]
    want = np.concatenate([_dense_ref(x, d0), _dense_ref(x, d1), x], axis=1)
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), want, rtol=1e-5, atol=1e-6)
    prefix = "hybridconcurrent0_" if hybrid else "concurrent0_"
    assert sorted(net.collect_params().keys()) == sorted(
        f"{prefix}dense{i}_{p}" for i in (0, 1) for p in ("weight", "bias"))
    if hybrid:
        net.hybridize()
        np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), want, rtol=1e-5,
                                   atol=1e-6)


def test_concurrent_default_axis_is_last():
    net = cnn.HybridConcurrent()
    net.add(cnn.Identity(), cnn.Identity())
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(net(mx.nd.array(x)).asnumpy(),
                                  np.concatenate([x, x], axis=-1))
    assert net.axis == -1


def test_hybrid_concurrent_gradient_and_export(tmp_path):
    net = cnn.HybridConcurrent(axis=1)
    with net.name_scope():
        net.add(nn.Dense(3, in_units=2))
        net.add(cnn.Identity())
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.array(np.random.RandomState(1).uniform(-1, 1, (5, 2)))
    x.attach_grad()
    head = np.random.RandomState(2).uniform(-1, 1, (5, 5)).astype(np.float32)
    with autograd.record():
        y = net(x)
    y.backward(mx.nd.array(head))
    w = net[0].weight.data().asnumpy()
    # d/dx of [x W^T + b, x] with head g: g[:, :3] W + g[:, 3:]
    np.testing.assert_allclose(x.grad.asnumpy(), head[:, :3] @ w + head[:, 3:], rtol=1e-5,
                               atol=1e-6)
    net.export(str(tmp_path / "cc"))
    nodes = json.loads((tmp_path / "cc-symbol.json").read_text())["nodes"]
    assert [(n["name"], n["op"]) for n in nodes if n["op"] != "null"] == [
        ("hybridconcurrent0_dense0_fwd", "FullyConnected"),
        ("hybridconcurrent0_concat0", "Concat")]


def test_identity_passes_input_through():
    x = mx.nd.array(np.arange(6).reshape(2, 3))
    assert cnn.Identity()(x) is x  # imperative: the very same array, as in MXNet
    ident = cnn.Identity()
    ident.hybridize()
    np.testing.assert_array_equal(ident(x).asnumpy(), x.asnumpy())


# -- PixelShuffle ---------------------------------------------------------------------------
def _pixel_shuffle_ref(x, factors):
    """out[n, c, d1*f1+i1, d2*f2+i2, ...] = x[n, c*prod(f) + (i1*f2 + i2)..., d1, d2, ...],
    element by element."""
    n, cf = x.shape[:2]
    spatial = x.shape[2:]
    k = len(factors)
    c = cf // int(np.prod(factors))
    out = np.empty((n, c, *(s * f for s, f in zip(spatial, factors))), x.dtype)
    for idx in np.ndindex(*out.shape):
        b, ch, pos = idx[0], idx[1], idx[2:]
        src_sp = tuple(p // f for p, f in zip(pos, factors))
        sub = tuple(p % f for p, f in zip(pos, factors))
        offset = 0
        for i in range(k):
            offset = offset * factors[i] + sub[i]
        out[idx] = x[(b, ch * int(np.prod(factors)) + offset, *src_sp)]
    return out


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("block,factors,shape", [
    (lambda: cnn.PixelShuffle1D(2), (2,), (1, 8, 3)),
    (lambda: cnn.PixelShuffle1D(3), (3,), (2, 3, 5)),
    (lambda: cnn.PixelShuffle2D((2, 3)), (2, 3), (1, 12, 3, 5)),
    (lambda: cnn.PixelShuffle2D(2), (2, 2), (2, 8, 1, 3)),
    (lambda: cnn.PixelShuffle3D((2, 3, 4)), (2, 3, 4), (1, 48, 3, 2, 1)),
    (lambda: cnn.PixelShuffle3D(2), (2, 2, 2), (2, 8, 1, 2, 3)),
])
def test_pixel_shuffle_matches_numpy(block, factors, shape, hybridize):
    net = block()
    if hybridize:
        net.hybridize()
    x = np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)
    np.testing.assert_array_equal(net(mx.nd.array(x)).asnumpy(),
                                  _pixel_shuffle_ref(x, factors))


def test_pixel_shuffle_documented_shapes():
    # the examples of MXNet's docstrings
    assert cnn.PixelShuffle1D(2)(mx.nd.zeros((1, 8, 3))).shape == (1, 4, 6)
    assert cnn.PixelShuffle2D((2, 3))(mx.nd.zeros((1, 12, 3, 5))).shape == (1, 2, 6, 15)
    assert cnn.PixelShuffle3D((2, 3, 4))(mx.nd.zeros((1, 48, 3, 5, 7))).shape == \
        (1, 2, 6, 15, 28)
    assert repr(cnn.PixelShuffle2D(2)) == "PixelShuffle2D((2, 2))"
    assert repr(cnn.PixelShuffle1D(3)) == "PixelShuffle1D(3)"


def test_pixel_shuffle_gradient_is_inverse_shuffle():
    net = cnn.PixelShuffle2D((2, 3))
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 12, 2, 3)))
    x.attach_grad()
    head = np.random.RandomState(1).uniform(-1, 1, (2, 2, 4, 9)).astype(np.float32)
    with autograd.record():
        y = net(x)
    y.backward(mx.nd.array(head))
    # the shuffle is a permutation: grad[x_i] = head[position of x_i in the output]
    positions = _pixel_shuffle_ref(np.arange(x.size, dtype=np.int64).reshape(x.shape),
                                   (2, 3))
    want = np.empty(x.size, np.float32)
    want[positions.ravel()] = head.ravel()
    np.testing.assert_array_equal(x.grad.asnumpy(), want.reshape(x.shape))


def test_pixel_shuffle_errors():
    with pytest.raises(MXNetError, match="wrong length"):
        cnn.PixelShuffle2D((2, 3, 4))
    with pytest.raises(MXNetError, match="wrong length"):
        cnn.PixelShuffle3D((2, 3))
    with pytest.raises(MXNetError):
        # 10 channels cannot be split into groups of 4
        cnn.PixelShuffle2D(2)(mx.nd.zeros((1, 10, 2, 2))).asnumpy()


# -- SyncBatchNorm --------------------------------------------------------------------------
def _bn_ref(x, gamma, beta, mean, var, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * \
        gamma.reshape(shape) + beta.reshape(shape)


def test_sync_batchnorm_train_and_inference_match_batchnorm_semantics():
    rng = np.random.RandomState(0)
    x = rng.uniform(-2, 3, (4, 3, 5, 2)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.uniform(-1, 1, 3)
    rmean, rvar = rng.uniform(-1, 1, 3), rng.uniform(0.5, 2, 3)
    bn = cnn.SyncBatchNorm(in_channels=3, num_devices=1, momentum=0.8, epsilon=1e-3)
    bn.initialize()
    for p, v in zip((bn.gamma, bn.beta, bn.running_mean, bn.running_var),
                    (gamma, beta, rmean, rvar)):
        p.set_data(mx.nd.array(v))
    # inference: running statistics
    np.testing.assert_allclose(bn(mx.nd.array(x)).asnumpy(),
                               _bn_ref(x, gamma, beta, rmean, rvar, 1e-3), rtol=1e-5,
                               atol=1e-5)
    # training: batch statistics; as MXNet's BatchNorm, the running statistics take the
    # momentum step when the backward pass runs
    with autograd.record():
        out = bn(mx.nd.array(x))
    out.backward()
    bmean, bvar = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(out.asnumpy(), _bn_ref(x, gamma, beta, bmean, bvar, 1e-3),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.data().asnumpy(), 0.8 * rmean + 0.2 * bmean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.data().asnumpy(), 0.8 * rvar + 0.2 * bvar,
                               rtol=1e-4, atol=1e-6)


def test_sync_batchnorm_attributes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bn = cnn.SyncBatchNorm(num_devices=2, scale=False)
    assert bn._kwargs == {"eps": 1e-5, "momentum": 0.9, "fix_gamma": True,
                          "use_global_stats": False, "ndev": 2, "key": "syncbatchnorm0_"}
    assert sorted(bn.collect_params().keys()) == [
        "syncbatchnorm0_beta", "syncbatchnorm0_gamma", "syncbatchnorm0_running_mean",
        "syncbatchnorm0_running_var"]
    assert bn.gamma.grad_req == "null"
    with pytest.warns(UserWarning, match="num_devices"):
        cnn.SyncBatchNorm()


def test_sync_batchnorm_hybridized_in_a_network():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(4, 3, in_channels=2))
        net.add(cnn.SyncBatchNorm(num_devices=1))
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 2, 5, 5)))
    with autograd.record():
        imperative = net(x).asnumpy()
    net.hybridize()
    with autograd.record():
        hybrid = net(x).asnumpy()
    np.testing.assert_allclose(hybrid, imperative, rtol=1e-4, atol=1e-5)
    # train-mode output is normalized per channel
    np.testing.assert_allclose(hybrid.mean(axis=(0, 2, 3)), 0, atol=1e-5)


# -- SparseEmbedding ------------------------------------------------------------------------
def test_sparse_embedding_forward_and_row_gradient():
    emb = cnn.SparseEmbedding(7, 3)
    emb.initialize(mx.init.Uniform(1.0))
    assert emb.weight.stype == "row_sparse" and emb.weight.grad_stype == "row_sparse"
    assert repr(emb) == "SparseEmbedding(7 -> 3, float32)"
    w = emb.weight.row_sparse_data(mx.nd.array([0])).asnumpy()
    idx = np.array([[1, 4, 1], [6, 0, 4]], np.float32)
    with autograd.record():
        out = emb(mx.nd.array(idx))
    np.testing.assert_array_equal(out.asnumpy(), w[idx.astype(np.int64)])
    head = np.random.RandomState(0).uniform(-1, 1, (2, 3, 3)).astype(np.float32)
    out.backward(mx.nd.array(head))
    want = np.zeros_like(w)
    np.add.at(want, idx.astype(np.int64).ravel(), head.reshape(-1, 3))
    # mxc keeps the row-sparse gradient dense: the rows MXNet stores, zeros elsewhere
    np.testing.assert_allclose(emb.weight.grad().asnumpy(), want, rtol=1e-6, atol=1e-6)
