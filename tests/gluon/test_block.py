"""gluon.Block / HybridBlock / SymbolBlock: MXNet 1.x naming, parameter files, hybridization
(compiled graphs give the same outputs and gradients as imperative runs), export."""
import json
import warnings

import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.base import MXNetError
from mxc.gluon import nn


def _fresh_names():
    return mx.name.NameManager()


# ------------------------------------------------------------------------------------------
# naming
# ------------------------------------------------------------------------------------------
def test_default_names():
    with _fresh_names():
        d = nn.Dense(10)
        assert list(d.collect_params().keys()) == ["dense0_weight", "dense0_bias"]
        assert d.name == "dense0" and d.prefix == "dense0_"
        assert nn.Dense(3).name == "dense1"
        assert nn.Conv2D(4, 3).name == "conv0"
        assert nn.Conv2DTranspose(4, 3).name == "conv1"
        assert nn.MaxPool2D().name == "pool0"
        assert nn.GlobalAvgPool2D().name == "pool1"
        assert nn.Activation("relu").name == "relu0"
        assert nn.BatchNorm().name == "batchnorm0"
        assert nn.HybridSequential().name == "hybridsequential0"
        assert nn.Dense(2, prefix="fc_").name == "fc"
        bn = nn.BatchNorm()
        assert list(bn.collect_params().keys()) == [
            "batchnorm1_gamma", "batchnorm1_beta", "batchnorm1_running_mean",
            "batchnorm1_running_var"]


def test_nested_names_and_structural_keys():
    class Model(gluon.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.body = nn.HybridSequential()
                with self.body.name_scope():
                    self.body.add(nn.Dense(8, activation="relu"), nn.Dense(8))
                self.out = nn.Dense(2)
            self.outside = nn.Dense(3)   # not in the name scope: a global name

        def hybrid_forward(self, F, x):
            return self.out(self.body(x)) + F.sum(self.outside(x))

    with _fresh_names():
        m = Model()
        assert m.prefix == "model0_"
        assert list(m.collect_params().keys()) == [
            "model0_hybridsequential0_dense0_weight", "model0_hybridsequential0_dense0_bias",
            "model0_hybridsequential0_dense1_weight", "model0_hybridsequential0_dense1_bias",
            "model0_dense0_weight", "model0_dense0_bias", "dense0_weight", "dense0_bias"]
        assert list(m._collect_params_with_prefix().keys()) == [
            "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "out.weight",
            "out.bias", "outside.weight", "outside.bias"]
        assert list(m.collect_params(".*dense0_weight").keys()) == [
            "model0_hybridsequential0_dense0_weight", "model0_dense0_weight", "dense0_weight"]
        assert list(m.params.keys()) == []


def test_param_sharing_and_sequential_slicing():
    with _fresh_names():
        d0 = nn.Dense(4, in_units=3)
        d1 = nn.Dense(4, in_units=3, params=d0.collect_params())
        assert d1.weight is d0.weight
        net = nn.Sequential()
        with net.name_scope():
            net.add(nn.Dense(3), nn.Dense(4), nn.Dense(5))
        assert len(net) == 3
        assert net[1].name == "sequential0_dense1"
        sub = net[1:]
        assert isinstance(sub, nn.Sequential) and len(sub) == 2
        assert sub[0] is net[1]
        with pytest.raises(ValueError, match="HybridBlock"):
            nn.HybridSequential().add(nn.Sequential())


def test_symbol_names_under_scope():
    with _fresh_names():
        net = nn.HybridSequential(prefix="net_")
        with net.name_scope():
            net.add(nn.Dense(3, activation="relu"), nn.Flatten(), nn.Dropout(0.5))
        out = net(mx.sym.var("data"))
        names = [n for n in out.get_internals().list_outputs()]
        assert names == ["data", "net_dense0_weight", "net_dense0_bias", "net_dense0_fwd_output",
                         "net_dense0_relu_fwd_output", "net_flatten0_flatten0_output",
                         "net_dropout0_fwd_output"]


# ------------------------------------------------------------------------------------------
# parameters in files
# ------------------------------------------------------------------------------------------
def _mlp(prefix=None):
    net = nn.HybridSequential(prefix=prefix)
    with net.name_scope():
        net.add(nn.Dense(6, activation="tanh"), nn.Dense(3))
    return net


def test_save_load_parameters(tmp_path):
    net = _mlp()
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(0).randn(2, 5))
    y = net(x)
    f = str(tmp_path / "net.params")
    net.save_parameters(f)
    assert sorted(mx.nd.load(f)) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    net2 = _mlp()   # different prefix: structural names still match
    net2.load_parameters(f)
    np.testing.assert_array_equal(net2(x).asnumpy(), y.asnumpy())
    # legacy full-name files
    g = str(tmp_path / "legacy.params")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.save_params(g)
    net3 = _mlp()
    net3.load_parameters(g)   # names without '.' are loaded with the block prefix restored
    np.testing.assert_array_equal(net3(x).asnumpy(), y.asnumpy())


def test_load_parameters_missing_and_extra_are_named(tmp_path):
    net = _mlp()
    net.initialize()
    net(mx.nd.ones((1, 5)))
    f = str(tmp_path / "small.params")
    net.save_parameters(f)
    bigger = nn.HybridSequential()
    with bigger.name_scope():
        bigger.add(nn.Dense(6, activation="tanh"), nn.Dense(3), nn.Dense(2))
    with pytest.raises(MXNetError, match=r"'2\.weight', '2\.bias'.*missing"):
        bigger.load_parameters(f)
    with pytest.raises(AssertionError):
        bigger.load_parameters(f)
    bigger.load_parameters(f, allow_missing=True)
    np.testing.assert_array_equal(bigger[0].weight.data().asnumpy(),
                                  net[0].weight.data().asnumpy())
    smaller = nn.HybridSequential()
    with smaller.name_scope():
        smaller.add(nn.Dense(6, activation="tanh"))
    with pytest.raises(MXNetError, match=r"'1\.weight', '1\.bias'.*not present"):
        smaller.load_parameters(f)
    with pytest.raises(ValueError):
        smaller.load_parameters(f)
    smaller.load_parameters(f, ignore_extra=True)
    wrong = nn.HybridSequential()
    with wrong.name_scope():
        wrong.add(nn.Dense(7), nn.Dense(3))
    with pytest.raises(AssertionError, match="shape incompatible"):
        wrong.load_parameters(f)


def test_save_parameters_deduplicate(tmp_path):
    class Shared(gluon.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.a = nn.Dense(3, in_units=3)
                self.b = nn.Dense(3, in_units=3, params=self.a.params)

        def hybrid_forward(self, F, x):
            return self.b(self.a(x))

    s = Shared()
    s.initialize()
    f = str(tmp_path / "s.params")
    s.save_parameters(f)
    assert len(mx.nd.load(f)) == 4
    s.save_parameters(f, deduplicate=True)
    assert len(mx.nd.load(f)) == 2
    s2 = Shared()
    s2.load_parameters(f)
    np.testing.assert_array_equal(s2.b.weight.data().asnumpy(), s.a.weight.data().asnumpy())


def test_block_save_load_model(tmp_path):
    net = _mlp()
    net.initialize()
    net.hybridize()
    x = mx.nd.ones((2, 5))
    y = net(x)
    net.save(str(tmp_path / "m"))
    net2 = _mlp()
    net2.load(str(tmp_path / "m"))
    np.testing.assert_allclose(net2(x).asnumpy(), y.asnumpy(), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# blocks
# ------------------------------------------------------------------------------------------
def test_hooks_apply_repr_summary(capsys):
    net = _mlp("hk_")
    net.initialize()
    seen = []
    h1 = net.register_forward_pre_hook(lambda b, a: seen.append(("pre", a[0].shape)))
    h2 = net.register_forward_hook(lambda b, a, o: seen.append(("post", o.shape)))
    net(mx.nd.ones((2, 5)))
    assert seen == [("pre", (2, 5)), ("post", (2, 3))]
    h1.detach()
    h2.detach()
    net(mx.nd.ones((2, 5)))
    assert len(seen) == 2
    names = []
    net.apply(lambda b: names.append(b.name))
    assert names == ["hk_dense0_relu" if False else "hk_dense0_tanh", "hk_dense0", "hk_dense1",
                     "hk"]
    assert repr(net) == ("HybridSequential(\n  (0): Dense(5 -> 6, Activation(tanh))\n"
                         "  (1): Dense(6 -> 3, linear)\n)")
    net.summary(mx.nd.ones((2, 5)))
    out = capsys.readouterr().out
    assert "Total params: 57" in out and "Dense-3" in out and "Activation-1" in out


def test_deferred_init_through_hybridize():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Dense(2))
    net.initialize()
    net.hybridize()
    out = net(mx.nd.ones((2, 3, 5, 5)))
    assert out.shape == (2, 2)
    assert net[0].weight.shape == (4, 3, 3, 3)
    assert net[1].gamma.shape == (4,)
    assert net[2].weight.shape == (2, 36)


def test_infer_shape_and_type():
    net = nn.Dense(3)
    net.infer_shape(mx.nd.ones((4, 7)))
    assert net.weight.shape == (3, 7)
    net.infer_type(mx.nd.ones((4, 7)))
    assert np.dtype(net.weight.dtype) == np.float32


def test_cast_float64():
    net = _mlp()
    net.initialize()
    net.cast("float64")
    x = mx.nd.ones((2, 5), dtype="float64")
    assert net(x).dtype == np.float64
    net.hybridize()
    assert net(x).dtype == np.float64


def test_hybridize_changes_nothing_numerically():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(4, 3, padding=1, activation="relu"), nn.BatchNorm(),
                nn.MaxPool2D(), nn.Dropout(0.3), nn.Dense(5))
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(1).randn(3, 2, 6, 6))
    net(x)  # finish the deferred initialization (it draws random numbers)
    start = {k: p.data().copy() for k, p in net.collect_params().items()}
    res = []
    for hyb in (False, True):
        for k, p in net.collect_params().items():
            p.set_data(start[k])
        net.hybridize(hyb)
        mx.random.seed(7)
        x.attach_grad()
        with autograd.record():
            y = net(x)
        y.backward(mx.nd.ones_like(y) * 0.5)
        res.append([y.asnumpy(), x.grad.asnumpy()] +
                   [p.grad().asnumpy() for p in net.collect_params().values()
                    if p.grad_req != "null"] +
                   [p.data().asnumpy() for p in net.collect_params().values()])
        res.append(net(x).asnumpy())
    for a, b in zip(res[0], res[2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res[1], res[3])


LAYERS = {
    "dense": (lambda: nn.Dense(5, activation="tanh", flatten=False), (2, 3, 4)),
    "conv1d": (lambda: nn.Conv1D(4, 3, padding=1, dilation=1), (2, 3, 8)),
    "conv2d": (lambda: nn.Conv2D(4, 3, strides=2, activation="relu"), (2, 3, 7, 7)),
    "conv2d_group": (lambda: nn.Conv2D(4, 3, groups=2, use_bias=False), (1, 4, 5, 5)),
    "conv3d": (lambda: nn.Conv3D(2, 2), (1, 2, 3, 3, 3)),
    "deconv1d": (lambda: nn.Conv1DTranspose(3, 3, strides=2), (2, 2, 5)),
    "deconv2d": (lambda: nn.Conv2DTranspose(3, 3, strides=2, output_padding=1), (1, 2, 4, 4)),
    "deconv3d": (lambda: nn.Conv3DTranspose(2, 2), (1, 2, 2, 2, 2)),
    "maxpool1d": (lambda: nn.MaxPool1D(), (2, 3, 8)),
    "maxpool2d": (lambda: nn.MaxPool2D(3, 2, ceil_mode=True), (2, 3, 7, 7)),
    "maxpool3d": (lambda: nn.MaxPool3D(), (1, 2, 4, 4, 4)),
    "avgpool1d": (lambda: nn.AvgPool1D(3, 2, 1), (2, 3, 8)),
    "avgpool2d": (lambda: nn.AvgPool2D(3, 2, 1, count_include_pad=False), (2, 3, 7, 7)),
    "avgpool3d": (lambda: nn.AvgPool3D(), (1, 2, 4, 4, 4)),
    "gavg1d": (lambda: nn.GlobalAvgPool1D(), (2, 3, 8)),
    "gmax2d": (lambda: nn.GlobalMaxPool2D(), (2, 3, 5, 5)),
    "gavg3d": (lambda: nn.GlobalAvgPool3D(), (1, 2, 3, 3, 3)),
    "batchnorm": (lambda: nn.BatchNorm(), (4, 3, 2, 2)),
    "batchnorm_axis": (lambda: nn.BatchNorm(axis=-1, scale=False), (4, 2, 3)),
    "layernorm": (lambda: nn.LayerNorm(), (2, 3, 5)),
    "instancenorm": (lambda: nn.InstanceNorm(scale=True), (2, 3, 5)),
    "dropout": (lambda: nn.Dropout(0.5), (4, 6)),
    "dropout_axes": (lambda: nn.Dropout(0.5, axes=(1,)), (4, 3, 5)),
    "flatten": (lambda: nn.Flatten(), (2, 3, 4)),
    "sigmoid": (lambda: nn.Activation("sigmoid"), (2, 5)),
    "leaky": (lambda: nn.LeakyReLU(0.1), (2, 5)),
    "prelu": (lambda: nn.PReLU(), (2, 5)),
    "elu": (lambda: nn.ELU(0.7), (2, 5)),
    "selu": (lambda: nn.SELU(), (2, 5)),
    "gelu": (lambda: nn.GELU(), (2, 5)),
    "swish": (lambda: nn.Swish(2.0), (2, 5)),
    "hybridlambda": (lambda: nn.HybridLambda("tanh"), (2, 5)),
    "hybridlambda_fn": (lambda: nn.HybridLambda(lambda F, x: F.relu(x) * 2), (2, 5)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_hybrid_equals_imperative(name):
    make, shape = LAYERS[name]
    x0 = np.random.RandomState(0).randn(*shape).astype(np.float32)
    res = []
    for hyb in (False, True):
        mx.random.seed(3)
        layer = make()
        layer.initialize(mx.init.Xavier() if name != "prelu" else None)
        if hyb:
            layer.hybridize()
        x = mx.nd.array(x0)
        x.attach_grad()
        with autograd.record():
            y = layer(x)
        y.backward(mx.nd.array(np.random.RandomState(1).randn(*y.shape)))
        grads = [p.grad().asnumpy() for p in layer.collect_params().values()
                 if p.grad_req != "null"]
        res.append((y.asnumpy(), x.grad.asnumpy(), grads, layer(x).asnumpy()))
    (y0, gx0, g0, i0), (y1, gx1, g1, i1) = res
    np.testing.assert_allclose(y1, y0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i1, i0, rtol=1e-6, atol=1e-6)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_embedding_and_lambda():
    emb = nn.Embedding(10, 4)
    emb.initialize()
    idx = mx.nd.array([[1, 2], [3, 9]])
    out = emb(idx)
    np.testing.assert_array_equal(out.asnumpy(), emb.weight.data().asnumpy()[[[1, 2], [3, 9]]])
    emb.hybridize()
    np.testing.assert_array_equal(emb(idx).asnumpy(), out.asnumpy())
    lam = nn.Lambda("relu")
    np.testing.assert_array_equal(lam(mx.nd.array([-1, 2])).asnumpy(), [0, 2])
    assert repr(lam) == "Lambda(relu)"
    with pytest.raises(MXNetError):
        nn.Lambda("no_such_function")


def test_nested_inputs_outputs_and_none():
    class Multi(gluon.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.d = nn.Dense(3, in_units=4)

        def hybrid_forward(self, F, x, pair, extra=None):
            a, b = pair
            h = self.d(x)
            out = [h + a, (F.relu(h), b * 2)]
            if extra is not None:
                out.append(extra + 1)
            return out

    m = Multi()
    m.initialize()
    x, a, b = mx.nd.ones((2, 4)), mx.nd.ones((2, 3)), mx.nd.ones((5,))
    ref = m(x, [a, b])
    m.hybridize()
    got = m(x, [a, b])
    assert isinstance(got, list) and len(got) == 2 and isinstance(got[1], list)
    np.testing.assert_array_equal(got[0].asnumpy(), ref[0].asnumpy())
    np.testing.assert_array_equal(got[1][1].asnumpy(), ref[1][1].asnumpy())
    m2 = Multi(params=m.collect_params())
    m2.hybridize()
    got3 = m2(x, [a, b], mx.nd.zeros((1,)))
    assert len(got3) == 3
    with pytest.raises(ValueError, match="argument structure"):
        m2(x, a)


def test_export_imports_roundtrip_and_module(tmp_path):
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(3, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.Flatten(),
                nn.Dense(4))
    net.initialize(mx.init.Xavier())
    with pytest.raises(MXNetError, match="hybridize"):
        net.export(str(tmp_path / "x"))
    net.hybridize()
    x = mx.nd.array(np.random.RandomState(2).randn(2, 2, 4, 4))
    y = net(x)
    net.export(str(tmp_path / "net"), epoch=7)
    sym_json = json.loads((tmp_path / "net-symbol.json").read_text())
    assert sym_json["attrs"]["mxnet_version"] == ["int", 10901]
    saved = mx.nd.load(str(tmp_path / "net-0007.params"))
    prefix = net.prefix
    assert sorted(saved) == sorted(
        [f"arg:{prefix}conv0_weight", f"arg:{prefix}conv0_bias", f"arg:{prefix}batchnorm0_gamma",
         f"arg:{prefix}batchnorm0_beta", f"aux:{prefix}batchnorm0_running_mean",
         f"aux:{prefix}batchnorm0_running_var", f"arg:{prefix}dense0_weight",
         f"arg:{prefix}dense0_bias"])
    sb = gluon.SymbolBlock.imports(str(tmp_path / "net-symbol.json"), ["data"],
                                   str(tmp_path / "net-0007.params"))
    np.testing.assert_array_equal(sb(x).asnumpy(), y.asnumpy())
    sb.hybridize()
    np.testing.assert_array_equal(sb(x).asnumpy(), y.asnumpy())
    # symbolic use of a SymbolBlock composes its graph
    out = sb(mx.sym.var("data"))
    assert out.list_outputs() == [f"{prefix}dense0_fwd_output"]
    # the same files through the Module API
    sym, args, auxs = mx.model.load_checkpoint(str(tmp_path / "net"), 7)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", x.shape)], for_training=False)
    mod.set_params(args, auxs)
    mod.forward(mx.io.DataBatch([x]), is_train=False)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), y.asnumpy(), rtol=1e-6,
                               atol=1e-6)


def test_symbolblock_feature_extraction_shares_params():
    net = _mlp("fe_")
    net.initialize()
    x = mx.nd.ones((2, 5))
    net(x)
    internals = net(mx.sym.var("data")).get_internals()
    feat = gluon.SymbolBlock(internals["fe_dense0_tanh_fwd_output"], mx.sym.var("data"),
                             params=net.collect_params())
    np.testing.assert_allclose(feat(x).asnumpy(),
                               np.tanh(x.asnumpy() @ net[0].weight.data().asnumpy().T),
                               rtol=1e-5, atol=1e-6)
    assert sorted(feat.collect_params()) == ["fe_dense0_bias", "fe_dense0_weight"]


def test_mixed_symbol_ndarray_and_bad_child():
    net = nn.Dense(2)
    net.initialize()
    with pytest.raises(ValueError, match="mixed"):
        net(mx.nd.ones((1, 2)), mx.sym.var("a"))

    class Bad(gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            self.child = gluon.Block()

    with pytest.raises(ValueError, match="must also be HybridBlock"):
        Bad()


def test_recording_without_function_falls_back_to_op_by_op(monkeypatch):
    # without autograd.Function the cached graph is interpreted op by op under record()
    from mxc.frontend import autograd as ag_mod
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(4, in_units=3, activation="relu"), nn.BatchNorm(in_channels=4),
                nn.Dense(2, in_units=4))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.array(np.random.RandomState(5).randn(6, 3))
    start = {k: p.data().copy() for k, p in net.collect_params().items()}
    res = []
    for no_function in (False, True):
        for k, p in net.collect_params().items():
            p.set_data(start[k])
        if no_function:
            monkeypatch.setattr(ag_mod, "Function", None)
        with autograd.record():
            y = net(x)
            loss = (y * y).sum()
        loss.backward()
        res.append([y.asnumpy()] + [p.grad().asnumpy() for p in net.collect_params().values()
                                    if p.grad_req != "null"] +
                   [p.data().asnumpy() for p in net.collect_params().values()])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
