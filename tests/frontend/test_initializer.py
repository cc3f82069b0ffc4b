"""mx.init: name-based dispatch, __init__ attribute overrides, JSON dumps/create, the fan
computations of Xavier/MSRAPrelu, Orthogonal, Bilinear, LSTMBias, FusedRNN, Mixed, Load,
and reproducibility under mx.random.seed."""
import json
import warnings

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError
from mxc.frontend import initializer as init
from mxc.frontend import random as mxrandom


def _run(ini, name, shape, attrs=None, dtype="float32"):
    arr = mx.nd.zeros(shape, dtype=dtype)
    ini(init.InitDesc(name, attrs), arr)
    return arr.asnumpy()


def test_name_dispatch():
    u = init.Uniform(0.5)
    w = _run(u, "fc1_weight", (20, 30))
    assert np.abs(w).max() <= 0.5 and np.abs(w).max() > 0.3 and w.std() > 0.1
    np.testing.assert_array_equal(_run(u, "fc1_bias", (7,)), np.zeros(7, np.float32))
    np.testing.assert_array_equal(_run(u, "bn_gamma", (7,)), np.ones(7, np.float32))
    np.testing.assert_array_equal(_run(u, "bn_beta", (7,)), np.zeros(7, np.float32))
    np.testing.assert_array_equal(_run(u, "bn_moving_mean", (3,)), np.zeros(3, np.float32))
    np.testing.assert_array_equal(_run(u, "bn_moving_var", (3,)), np.ones(3, np.float32))
    np.testing.assert_array_equal(_run(u, "q_min", (2,)), np.zeros(2, np.float32))
    np.testing.assert_array_equal(_run(u, "q_max", (2,)), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="Unknown initialization pattern"):
        _run(u, "mystery", (2,))
    # the variable's own initializer wins over the name rule
    attrs = {"__init__": init.Constant(3.0).dumps()}
    np.testing.assert_array_equal(_run(u, "fc1_bias", (4,), attrs), np.full(4, 3.0, np.float32))
    np.testing.assert_array_equal(_run(u, "anything", (2, 2), {"__init__": '["one", {}]'}),
                                  np.ones((2, 2), np.float32))
    # global_init is filled in
    d = init.InitDesc("x_weight")
    u(d, mx.nd.zeros((2, 2)))
    assert d.global_init is u


def test_legacy_string_call():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        a = mx.nd.zeros((4,))
        init.Uniform()("bn_moving_var", a)
        np.testing.assert_array_equal(a.asnumpy(), np.ones(4, np.float32))
        a = mx.nd.zeros((6,))
        init.Uniform()("stn_loc_bias", a)
        np.testing.assert_array_equal(a.asnumpy(), [1, 0, 0, 0, 1, 0])
        with pytest.raises(TypeError):
            init.Uniform()(3, a)


def test_constant_zero_one_dtypes():
    np.testing.assert_array_equal(_run(init.Zero(), "w_weight", (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(_run(init.One(), "w_weight", (2, 3), dtype="float64"),
                                  np.ones((2, 3)))
    np.testing.assert_array_equal(_run(init.Constant(42), "w_weight", (2,), dtype="int32"),
                                  [42, 42])
    eye = np.eye(3, dtype=np.float32)
    np.testing.assert_array_equal(_run(init.Constant(eye), "w_weight", (3, 3)), eye)
    c = init.Constant(mx.nd.array(eye))
    assert json.loads(c.dumps()) == ["constant", {"value": eye.tolist()}]
    np.testing.assert_array_equal(_run(init.create(c.dumps()), "w_weight", (3, 3)), eye)


def test_dumps_and_create():
    assert init.Normal(0.5).dumps() == '["normal", {"sigma": 0.5}]'
    assert json.loads(init.Xavier(factor_type="in", magnitude=2.34).dumps()) == \
        ["xavier", {"rnd_type": "uniform", "factor_type": "in", "magnitude": 2.34}]
    assert json.loads(init.MSRAPrelu().dumps()) == ["msraprelu",
                                                    {"factor_type": "avg", "slope": 0.25}]
    for ini in [init.Uniform(0.3), init.Normal(2.0), init.Xavier("gaussian", "out", 2),
                init.MSRAPrelu("in", 0.1), init.Orthogonal(2.0, "normal"), init.Zero(),
                init.One(), init.Bilinear(), init.LSTMBias(2.0), init.Constant(1.5)]:
        again = init.create(ini.dumps())
        assert type(again) is type(ini) and again._kwargs == ini._kwargs and again == ini
    assert isinstance(init.create("zeros"), init.Zero)
    assert isinstance(init.create("ones"), init.One)
    assert isinstance(init.create("Xavier", magnitude=2), init.Xavier)
    x = init.Xavier()
    assert init.create(x) is x
    assert isinstance(init.create('{"initializer": "normal", "sigma": 3}'), init.Normal)
    with pytest.raises(MXNetError, match="not registered"):
        init.create("no_such_init")
    with pytest.raises(AssertionError):     # MXNet raises AssertionError: both work
        init.create("no_such_init")


def test_register_custom():
    @init.register
    @init.alias("myinit_alias")
    class MyInit(init.Initializer):
        def __init__(self, v=0.1):
            super().__init__(v=v)
            self.v = v

        def _init_weight(self, _, arr):
            arr[:] = self.v

        def _init_bias(self, _, arr):
            arr[:] = 1

    np.testing.assert_allclose(_run(init.create("myinit", v=0.25), "a_weight", (2,)), 0.25)
    np.testing.assert_array_equal(_run(init.create("myinit_alias"), "a_bias", (2,)), 1)
    np.testing.assert_allclose(_run(init.Zero(), "w_weight", (2,),
                                    {"__init__": MyInit(0.5).dumps()}), 0.5)


@pytest.mark.parametrize("factor_type", ["avg", "in", "out"])
def test_xavier_fans_conv_kernel(factor_type):
    shape = (64, 32, 3, 3)
    fan_in, fan_out = 32 * 9, 64 * 9
    factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[factor_type]
    scale = np.sqrt(3.0 / factor)
    w = _run(init.Xavier("uniform", factor_type, 3), "conv_weight", shape)
    assert np.abs(w).max() <= scale and np.abs(w).max() > 0.99 * scale
    assert abs(w.std() - scale / np.sqrt(3)) < 0.03 * scale       # U(-s, s): std = s/sqrt(3)
    assert init.Xavier(factor_type=factor_type)._scale("w", shape) == pytest.approx(scale)
    g = _run(init.Xavier("gaussian", factor_type, 2), "conv_weight", shape)
    assert abs(g.std() - np.sqrt(2.0 / factor)) < 0.03 * np.sqrt(2.0 / factor)
    with pytest.raises(ValueError, match="at least 2D"):
        _run(init.Xavier(), "v_weight", (5,))
    with pytest.raises(ValueError, match="Incorrect factor type"):
        _run(init.Xavier(factor_type="bad"), "v_weight", (5, 5))


def test_msraprelu():
    m = init.MSRAPrelu("in", slope=0.0)      # He init: std = sqrt(2 / fan_in)
    assert m.rnd_type == "gaussian" and m.magnitude == 2.0
    w = _run(m, "fc_weight", (400, 200))
    assert abs(w.std() - np.sqrt(2.0 / 200)) < 0.02 * np.sqrt(2.0 / 200)
    assert init.MSRAPrelu(slope=0.25).magnitude == pytest.approx(2.0 / 1.0625)


@pytest.mark.parametrize("shape", [(4, 10), (10, 4), (6, 2, 3)])
def test_orthogonal(shape):
    w = _run(init.Orthogonal(scale=2.0), "rnn_weight", shape)
    m = w.reshape(shape[0], -1) / 2.0
    if m.shape[0] <= m.shape[1]:
        np.testing.assert_allclose(m @ m.T, np.eye(m.shape[0]), atol=1e-5)
    else:
        np.testing.assert_allclose(m.T @ m, np.eye(m.shape[1]), atol=1e-5)


def test_bilinear_against_loop():
    shape = (2, 1, 4, 4)
    w = _run(init.Bilinear(), "up_weight", shape)
    f = np.ceil(shape[3] / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ref = np.zeros(int(np.prod(shape)), np.float32)
    for i in range(ref.size):
        x = i % shape[3]
        y = (i // shape[3]) % shape[2]
        ref[i] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    np.testing.assert_allclose(w, ref.reshape(shape), rtol=1e-6)
    # the classic 2x upsampling kernel: [0.25, 0.75, 0.75, 0.25] outer product
    k = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(w[0, 0], np.outer(k, k), rtol=1e-6)


def test_lstm_bias():
    b = _run(init.LSTMBias(forget_bias=2.0), "lstm_i2h_bias",
             (12,), {"__init__": init.LSTMBias(2.0).dumps()})
    np.testing.assert_array_equal(b, [0, 0, 0, 2, 2, 2, 0, 0, 0, 0, 0, 0])


def test_fused_rnn_lstm():
    h, li, layers = 3, 5, 2
    # per layer: 4 gates * h * (in + h + 2)
    size = 4 * h * (li + h + 2) + 4 * h * (h + h + 2)
    ini = init.FusedRNN(init.One(), num_hidden=h, num_layers=layers, mode="lstm",
                        forget_bias=7.0)
    flat = _run(init.Xavier(), "lstm_parameters", (size,), {"__init__": ini.dumps()})
    nw = 4 * h * (li + h) + 4 * h * (h + h)
    np.testing.assert_array_equal(flat[:nw], 1.0)
    biases = flat[nw:].reshape(layers, 2, 4, h)       # layer, i2h/h2h, gate i f c o, hidden
    np.testing.assert_array_equal(biases[:, :, 1], 7.0)
    np.testing.assert_array_equal(biases[:, :, [0, 2, 3]], 0.0)
    with pytest.raises(MXNetError, match="does not fit"):
        _run(init.Xavier(), "p", (size + 1,), {"__init__": ini.dumps()})


def test_mixed_and_load(tmp_path):
    mixed = init.Mixed(["bias", ".*"], [init.Zero(), init.Constant(0.5)])
    a = mx.nd.ones((3,))
    mixed(init.InitDesc("bias_fc_weight"), a)    # re.match: only at the start of the name
    np.testing.assert_array_equal(a.asnumpy(), 0)
    mixed(init.InitDesc("fc_bias_weight"), a)
    np.testing.assert_array_equal(a.asnumpy(), 0.5)
    with pytest.raises(ValueError):
        init.Mixed(["x"], [init.Zero()])("y", a)

    params = {"arg:fc_weight": mx.nd.array([[1, 2], [3, 4]]), "aux:bn_moving_var": mx.nd.ones(2)}
    fname = str(tmp_path / "p.params")
    mx.nd.save(fname, params)
    for src in (params, fname):
        ld = init.Load(src, default_init=init.Constant(9.0))
        w = mx.nd.zeros((2, 2))
        ld(init.InitDesc("fc_weight"), w)
        np.testing.assert_array_equal(w.asnumpy(), [[1, 2], [3, 4]])
        other = mx.nd.zeros((2,))
        ld(init.InitDesc("fc2_weight"), other)
        np.testing.assert_array_equal(other.asnumpy(), 9.0)
        with pytest.raises(MXNetError, match="Shape mismatch"):
            ld(init.InitDesc("fc_weight"), mx.nd.zeros((3,)))
    with pytest.raises(MXNetError, match="no default"):
        init.Load(params)(init.InitDesc("zzz_weight"), mx.nd.zeros(1))


def test_seed_reproducibility():
    def draw():
        out = []
        for ini in [init.Uniform(), init.Normal(), init.Xavier(), init.Orthogonal(),
                    init.MSRAPrelu()]:
            out.append(_run(ini, "w_weight", (8, 6)))
        return out

    mxrandom.seed(123)
    a = draw()
    mxrandom.seed(123)
    b = draw()
    mxrandom.seed(124)
    c = draw()
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)


def test_verbose(caplog):
    import logging
    ini = init.Uniform().set_verbosity(True)
    with caplog.at_level(logging.INFO):
        _run(ini, "fc_weight", (2, 2))
    assert "Initialized fc_weight as weight" in caplog.text
