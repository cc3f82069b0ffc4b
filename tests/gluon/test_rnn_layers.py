"""gluon.rnn.RNN / LSTM / GRU: parameter names and shapes as MXNet 1.9.1, outputs against an
independent numpy implementation of the recurrences (gate orders LSTM i, f, g, o and GRU
r, z, n), the fused layer against the same network unrolled from cells, hybridized against
imperative, gradients against finite differences."""
import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.base import MXNetError
from mxc.gluon import rnn

RNG = np.random.RandomState(7)


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _cell_step(mode, x, h, c, wx, wh, bx, bh, clip=None):
    """One step of MXNet's recurrences in float64 (h, c)."""
    H = h.shape[1]
    gx = x @ wx.T + bx
    gh = h @ wh.T + bh
    if mode == "lstm":
        g = gx + gh
        i, f = _sig(g[:, :H]), _sig(g[:, H:2 * H])
        cand, o = np.tanh(g[:, 2 * H:3 * H]), _sig(g[:, 3 * H:])
        c = f * c + i * cand
        if clip is not None:
            c = np.clip(c, *clip)
        return o * np.tanh(c), c
    if mode == "gru":
        r = _sig(gx[:, :H] + gh[:, :H])
        z = _sig(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h, c
    pre = gx + gh
    return (np.tanh(pre) if mode == "rnn_tanh" else np.maximum(pre, 0)), c


def _np_layer(mode, params, prefix, x_tnc, h0, c0, num_layers, dirs, clip=None):
    """Stacked (bi)directional recurrence from the per-layer parameters (numpy)."""
    T = x_tnc.shape[0]
    inp = x_tnc.astype(np.float64)
    hy, cy = np.zeros_like(h0, dtype=np.float64), np.zeros_like(c0, dtype=np.float64)
    for layer in range(num_layers):
        outs = []
        for d, tag in enumerate("lr"[:dirs]):
            p = {k: params[f"{prefix}{tag}{layer}_{k}"].data().asnumpy().astype(np.float64)
                 for k in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")}
            h, c = h0[layer * dirs + d].astype(np.float64), c0[layer * dirs + d].astype(
                np.float64)
            y = np.zeros((T,) + h.shape)
            for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                h, c = _cell_step(mode, inp[t], h, c, p["i2h_weight"], p["h2h_weight"],
                                  p["i2h_bias"], p["h2h_bias"], clip)
                y[t] = h
            hy[layer * dirs + d], cy[layer * dirs + d] = h, c
            outs.append(y)
        inp = np.concatenate(outs, axis=2)
    return inp, hy, cy


def _make(mode, H, **kw):
    if mode == "lstm":
        return rnn.LSTM(H, **kw)
    if mode == "gru":
        return rnn.GRU(H, **kw)
    return rnn.RNN(H, activation=mode[4:], **kw)


def _init_random(layer):
    layer.initialize(mx.init.Uniform(0.5))


# ------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------
def test_parameter_names_shapes_and_deferred_input_size():
    with mx.name.NameManager():
        lstm = rnn.LSTM(5, num_layers=2, bidirectional=True)
        gru = rnn.GRU(3, input_size=7)
        simple = rnn.RNN(2)
    params = lstm.collect_params()
    names = [f"lstm0_{d}{i}_{k}" for i in range(2) for d in "lr"
             for k in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]
    assert list(params.keys()) == names
    assert params["lstm0_l0_i2h_weight"].shape == (20, 0)        # input size deferred
    assert params["lstm0_r0_h2h_weight"].shape == (20, 5)
    assert params["lstm0_l1_i2h_weight"].shape == (20, 10)       # D * H from layer 1 on
    assert params["lstm0_l1_i2h_bias"].shape == (20,)
    assert gru.collect_params()["gru0_l0_i2h_weight"].shape == (9, 7)
    assert next(iter(simple.collect_params().keys())) == "rnn0_l0_i2h_weight"
    lstm.initialize()
    lstm(mx.nd.ones((2, 3, 4)))
    assert params["lstm0_l0_i2h_weight"].shape == (20, 4)
    assert params["lstm0_r0_i2h_weight"].data().shape == (20, 4)
    assert repr(lstm) == "LSTM(4 -> 5, TNC, num_layers=2, bidirectional)"
    assert repr(rnn.GRU(3, layout="NTC", dropout=0.5)) == "GRU(None -> 3, NTC, dropout=0.5)"


def test_initializers_dtype_and_begin_state():
    layer = rnn.GRU(3, input_size=2, i2h_weight_initializer="ones",
                    h2h_weight_initializer=mx.init.Constant(0.5),
                    i2h_bias_initializer=mx.init.Constant(2.0), h2h_bias_initializer="zeros",
                    dtype="float64", prefix="g_")
    layer.initialize()
    p = layer.collect_params()
    np.testing.assert_array_equal(p["g_l0_i2h_weight"].data().asnumpy(), np.ones((9, 2)))
    np.testing.assert_array_equal(p["g_l0_h2h_weight"].data().asnumpy(), np.full((9, 3), 0.5))
    np.testing.assert_array_equal(p["g_l0_i2h_bias"].data().asnumpy(), np.full(9, 2.0))
    assert p["g_l0_i2h_weight"].data().dtype == np.float64
    states = layer.begin_state(4)
    assert len(states) == 1 and states[0].shape == (1, 4, 3) and states[0].dtype == np.float64
    ones = layer.begin_state(2, func=mx.nd.ones)
    np.testing.assert_array_equal(ones[0].asnumpy(), np.ones((1, 2, 3)))
    lstm = rnn.LSTM(6, num_layers=3, bidirectional=True)
    infos = lstm.state_info(5)
    assert [i["shape"] for i in infos] == [(6, 5, 6), (6, 5, 6)]
    assert infos[0]["__layout__"] == "LNC" and infos[0]["dtype"] == "float32"


# ------------------------------------------------------------------------------------------
# forward against numpy
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,num_layers,bidirectional,layout", [
    ("lstm", 1, False, "TNC"),
    ("lstm", 2, True, "NTC"),
    ("gru", 2, False, "TNC"),
    ("gru", 1, True, "NTC"),
    ("rnn_tanh", 2, True, "TNC"),
    ("rnn_relu", 1, False, "NTC"),
])
def test_forward_matches_numpy(mode, num_layers, bidirectional, layout):
    T, N, I, H = 3, 2, 5, 3
    dirs = 2 if bidirectional else 1
    layer = _make(mode, H, num_layers=num_layers, bidirectional=bidirectional, layout=layout,
                  prefix="net_")
    _init_random(layer)
    x_tnc = RNG.uniform(-1, 1, (T, N, I)).astype(np.float32)
    x = x_tnc if layout == "TNC" else x_tnc.transpose(1, 0, 2)
    h0 = RNG.uniform(-1, 1, (num_layers * dirs, N, H)).astype(np.float32)
    c0 = RNG.uniform(-1, 1, (num_layers * dirs, N, H)).astype(np.float32)
    states = [mx.nd.array(h0), mx.nd.array(c0)] if mode == "lstm" else [mx.nd.array(h0)]
    out, new_states = layer(mx.nd.array(x), states)
    ref, hy, cy = _np_layer(mode, layer.collect_params(), "net_", x_tnc, h0,
                            c0 if mode == "lstm" else np.zeros_like(h0), num_layers, dirs)
    if layout == "NTC":
        ref = ref.transpose(1, 0, 2)
    assert out.shape == ref.shape == ((T, N, dirs * H) if layout == "TNC" else (N, T, dirs * H))
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_states[0].asnumpy(), hy, rtol=1e-5, atol=1e-5)
    if mode == "lstm":
        assert len(new_states) == 2
        np.testing.assert_allclose(new_states[1].asnumpy(), cy, rtol=1e-5, atol=1e-5)
    else:
        assert len(new_states) == 1
    # without states: zeros, and only the output comes back
    out0 = layer(mx.nd.array(x))
    assert isinstance(out0, mx.nd.NDArray)
    zeros = np.zeros_like(h0)
    ref0, _, _ = _np_layer(mode, layer.collect_params(), "net_", x_tnc, zeros, zeros,
                           num_layers, dirs)
    if layout == "NTC":
        ref0 = ref0.transpose(1, 0, 2)
    np.testing.assert_allclose(out0.asnumpy(), ref0, rtol=1e-5, atol=1e-5)


def test_lstm_state_clip_and_single_state_array():
    T, N, I, H = 4, 1, 2, 2
    layer = rnn.LSTM(H, input_size=I, state_clip_min=-0.2, state_clip_max=0.3,
                     prefix="clip_")
    layer.initialize(mx.init.Uniform(2.0))
    x = RNG.uniform(-2, 2, (T, N, I)).astype(np.float32)
    h0, c0 = np.zeros((1, N, H), np.float32), np.zeros((1, N, H), np.float32)
    out, (hy, cy) = layer(mx.nd.array(x), [mx.nd.array(h0), mx.nd.array(c0)])
    ref, rh, rc = _np_layer("lstm", layer.collect_params(), "clip_", x, h0, c0, 1, 1,
                            clip=(-0.2, 0.3))
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cy.asnumpy(), rc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hy.asnumpy(), rh, rtol=1e-5, atol=1e-6)
    assert cy.asnumpy().max() <= 0.3 + 1e-7 and cy.asnumpy().min() >= -0.2 - 1e-7
    # GRU / RNN take their single state as a bare NDArray too
    gru = rnn.GRU(H, input_size=I)
    gru.initialize()
    out, states = gru(mx.nd.array(x), mx.nd.zeros((1, N, H)))
    assert out.shape == (T, N, H) and states[0].shape == (1, N, H)


# ------------------------------------------------------------------------------------------
# fused layer == unrolled cells
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,bidirectional", [("lstm", True), ("gru", False),
                                                ("rnn_tanh", False)])
def test_layer_equals_unfused_cells(mode, bidirectional):
    T, N, I, H, L = 3, 2, 4, 3, 2
    dirs = 2 if bidirectional else 1
    layer = _make(mode, H, num_layers=L, bidirectional=bidirectional, input_size=I)
    _init_random(layer)
    stack = layer._unfuse()
    # the cells share the layer's parameters (same names)
    assert set(stack.collect_params().keys()) == set(layer.collect_params().keys())
    x = mx.nd.array(RNG.uniform(-1, 1, (N, T, I)))
    nst = 2 if mode == "lstm" else 1
    fused_states = [mx.nd.array(RNG.uniform(-1, 1, (L * dirs, N, H))) for _ in range(nst)]
    out, states = layer(x.swapaxes(0, 1), fused_states)
    # the cells' state list: per layer (and direction), its states in order
    cell_states = [fused_states[s][k] for k in range(L * dirs) for s in range(nst)]
    cell_out, cell_new = stack.unroll(T, x, cell_states, layout="NTC", merge_outputs=True)
    np.testing.assert_allclose(cell_out.asnumpy(), out.swapaxes(0, 1).asnumpy(), rtol=1e-5,
                               atol=1e-5)
    for s in range(nst):
        got = np.stack([cell_new[k * nst + s].asnumpy() for k in range(L * dirs)])
        np.testing.assert_allclose(got, states[s].asnumpy(), rtol=1e-5, atol=1e-5)


def test_layer_equals_hand_built_cells():
    """A 1-layer LSTM against an LSTMCell given the same weights (not via _unfuse)."""
    T, N, I, H = 5, 3, 2, 4
    layer = rnn.LSTM(H, input_size=I, layout="NTC", prefix="lay_")
    _init_random(layer)
    cell = rnn.LSTMCell(H, input_size=I, prefix="cell_")
    cell.initialize()
    for k in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"):
        cell.collect_params()[f"cell_{k}"].set_data(layer.collect_params()[f"lay_l0_{k}"]
                                                    .data())
    x = mx.nd.array(RNG.uniform(-1, 1, (N, T, I)))
    out, (hy, cy) = layer(x, layer.begin_state(N))
    cell_out, (h, c) = cell.unroll(T, x, layout="NTC", merge_outputs=True)
    np.testing.assert_allclose(cell_out.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h.asnumpy(), hy.asnumpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.asnumpy(), cy.asnumpy()[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# hybridize, gradients
# ------------------------------------------------------------------------------------------
def _run_with_grads(layer, x, states):
    x = x.copy()
    x.attach_grad()
    with autograd.record():
        out, new_states = layer(x, states)
        loss = (out * out).sum() + sum((s * 0.5).sum() for s in new_states)
    loss.backward()
    grads = {k: p.grad().asnumpy().copy() for k, p in layer.collect_params().items()}
    return out.asnumpy(), [s.asnumpy() for s in new_states], x.grad.asnumpy(), grads


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_hybridized_equals_imperative(mode):
    T, N, I, H = 3, 2, 3, 2
    layer = _make(mode, H, num_layers=2, bidirectional=True, layout="NTC")
    _init_random(layer)
    x = mx.nd.array(RNG.uniform(-1, 1, (N, T, I)))
    states = layer.begin_state(N, func=mx.nd.ones)
    ref = _run_with_grads(layer, x, states)
    layer.hybridize()
    got = _run_with_grads(layer, x, states)
    for a, b in zip([ref[0], *ref[1], ref[2]], [got[0], *got[1], got[2]]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for k in ref[3]:
        np.testing.assert_allclose(got[3][k], ref[3][k], rtol=1e-5, atol=1e-6)
    # the hybridized layer switches between "output" and "(output, states)" per call
    assert isinstance(layer(x), mx.nd.NDArray)
    out, new_states = layer(x, states)
    np.testing.assert_allclose(out.asnumpy(), ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_states[-1].asnumpy(), ref[1][-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,bidirectional", [("gru", False), ("lstm", True)])
def test_layer_inside_hybridized_block(mode, bidirectional):
    """Traced with symbols and no states: zero states come from the input's batch size."""
    class Net(gluon.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.rnn = _make(mode, 3, layout="NTC", bidirectional=bidirectional)
                self.out = gluon.nn.Dense(2, flatten=False)

        def hybrid_forward(self, F, x):
            return self.out(self.rnn(x))

    def run(net, x):
        with autograd.record():
            out = net(x)
            loss = (out * out).sum()
        loss.backward()
        return [out.asnumpy()] + [p.grad().asnumpy().copy()
                                  for p in net.collect_params().values()]

    with mx.name.NameManager():
        net = Net()
    w_name = f"net0_{mode}0_l0_i2h_weight"
    assert w_name in net.collect_params()
    net.initialize(mx.init.Uniform(0.5))
    net.hybridize()            # before the first forward: the input size is still unknown
    x = mx.nd.array(RNG.uniform(-1, 1, (2, 4, 3)))
    got = run(net, x)
    assert net.collect_params()[w_name].shape == (3 * (4 if mode == "lstm" else 3), 3)
    net.hybridize(False)
    ref = run(net, x)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    net.hybridize()
    x5 = mx.nd.array(RNG.uniform(-1, 1, (5, 4, 3)))        # another batch size
    assert net(x5).shape == (5, 4, 2)


@pytest.mark.parametrize("mode,bidirectional", [("gru", True), ("lstm", False),
                                                ("rnn_tanh", False)])
def test_gradients_match_finite_differences(mode, bidirectional):
    T, N, I, H = 2, 1, 2, 2
    layer = _make(mode, H, bidirectional=bidirectional, input_size=I, dtype="float64",
                  prefix="fd_")
    _init_random(layer)
    dirs = 2 if bidirectional else 1
    x = RNG.uniform(-1, 1, (T, N, I))
    head = RNG.uniform(-1, 1, (T, N, dirs * H))
    nst = 2 if mode == "lstm" else 1
    st = [RNG.uniform(-1, 1, (dirs, N, H)) for _ in range(nst)]

    def loss_of(xv, pname=None, pval=None):
        params = layer.collect_params()
        if pname is not None:
            params[pname].set_data(mx.nd.array(pval, dtype="float64"))
        out = layer(mx.nd.array(xv, dtype="float64"),
                    [mx.nd.array(s, dtype="float64") for s in st])[0]
        return float((out.asnumpy() * head).sum())

    xin = mx.nd.array(x, dtype="float64")
    xin.attach_grad()
    with autograd.record():
        out, _ = layer(xin, [mx.nd.array(s, dtype="float64") for s in st])
        loss = (out * mx.nd.array(head, dtype="float64")).sum()
    loss.backward()
    eps = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = (loss_of(xp) - loss_of(xm)) / (2 * eps)
    np.testing.assert_allclose(xin.grad.asnumpy(), num, rtol=1e-5, atol=1e-7)
    for pname in ("fd_l0_h2h_weight", "fd_l0_i2h_bias"):
        param = layer.collect_params()[pname]
        analytic = param.grad().asnumpy().copy()
        base = param.data().asnumpy().copy()
        num = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            bp, bm = base.copy(), base.copy()
            bp[idx] += eps
            bm[idx] -= eps
            num[idx] = (loss_of(x, pname, bp) - loss_of(x, pname, bm)) / (2 * eps)
        param.set_data(mx.nd.array(base, dtype="float64"))
        np.testing.assert_allclose(analytic, num, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------
# dropout, saving, errors
# ------------------------------------------------------------------------------------------
def test_dropout_between_layers_only_in_training():
    layer = rnn.LSTM(8, num_layers=2, dropout=0.5, input_size=3)
    _init_random(layer)
    plain = rnn.LSTM(8, num_layers=2, input_size=3, params=layer.collect_params())
    x = mx.nd.array(RNG.uniform(-1, 1, (4, 2, 3)))
    np.testing.assert_allclose(layer(x).asnumpy(), plain(x).asnumpy(), rtol=1e-6)
    with autograd.record(train_mode=True):
        dropped = layer(x)
    assert np.isfinite(dropped.asnumpy()).all()
    assert not np.allclose(dropped.asnumpy(), plain(x).asnumpy())


def test_save_parameters_structural_names(tmp_path):
    layer = rnn.GRU(3, num_layers=2, bidirectional=True, input_size=2)
    _init_random(layer)
    keys = set(layer._collect_params_with_prefix().keys())
    assert "_unfused.0.l_cell.i2h_weight" in keys and "_unfused.1.r_cell.h2h_bias" in keys
    single = rnn.LSTM(2, input_size=2)
    assert set(single._collect_params_with_prefix()) == {
        "_unfused.0.i2h_weight", "_unfused.0.h2h_weight", "_unfused.0.i2h_bias",
        "_unfused.0.h2h_bias"}
    f = str(tmp_path / "gru.params")
    layer.save_parameters(f)
    other = rnn.GRU(3, num_layers=2, bidirectional=True, input_size=2)
    other.load_parameters(f)
    x = mx.nd.array(RNG.uniform(-1, 1, (3, 2, 2)))
    np.testing.assert_array_equal(other(x).asnumpy(), layer(x).asnumpy())


def test_export_and_import(tmp_path):
    layer = rnn.LSTM(3, num_layers=2, bidirectional=True, input_size=4, prefix="lstm0_")
    _init_random(layer)
    layer.hybridize()
    x = mx.nd.array(RNG.uniform(-1, 1, (5, 2, 4)))
    states = layer.begin_state(2, func=mx.nd.ones)
    out, new_states = layer(x, states)
    path = str(tmp_path / "lstm")
    layer.export(path)
    saved = mx.nd.load(path + "-0000.params")
    assert set(saved) == {f"arg:{k}" for k in layer.collect_params()}
    sym = mx.sym.load(path + "-symbol.json")
    assert [n for n in sym.get_internals().list_outputs() if "concat" in n]
    imported = gluon.SymbolBlock.imports(path + "-symbol.json", ["data0", "data1", "data2"],
                                         path + "-0000.params")
    got = imported(x, *states)
    assert len(got) == 3
    np.testing.assert_allclose(got[0].asnumpy(), out.asnumpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[2].asnumpy(), new_states[1].asnumpy(), rtol=1e-6,
                               atol=1e-7)


def test_errors():
    with pytest.raises(MXNetError, match="layout"):
        rnn.LSTM(3, layout="CNT")
    with pytest.raises(MXNetError, match="activation"):
        rnn.RNN(3, activation="sigmoid")
    layer = rnn.GRU(3, input_size=2)
    layer.initialize()
    x = mx.nd.ones((4, 2, 2))
    with pytest.raises(ValueError, match="Invalid recurrent state shape"):
        layer(x, mx.nd.zeros((1, 3, 3)))
    with pytest.raises(MXNetError):
        layer(mx.nd.ones((4, 2, 5)))                       # input size 5 vs 2
    with pytest.raises(MXNetError, match="3 dimensions"):
        layer(mx.nd.ones((4, 2)))
    proj = rnn.LSTM(4, projection_size=2, input_size=3, prefix="p_")
    assert proj.collect_params()["p_l0_h2r_weight"].shape == (2, 4)
    assert proj.collect_params()["p_l0_h2h_weight"].shape == (16, 2)
    assert proj.state_info(5)[0]["shape"] == (1, 5, 2)
    proj.initialize()
    with pytest.raises(MXNetError, match="projection_size"):
        proj(mx.nd.ones((2, 5, 3)))
    with pytest.raises(MXNetError, match="projection"):
        proj._unfuse()


# ------------------------------------------------------------------------------------------
# use_sequence_length
# ------------------------------------------------------------------------------------------
def _seq_call(layer, x, states, lens):
    x = x.copy()
    x.attach_grad()
    with autograd.record():
        out, new_states = layer(x, states, lens)
        loss = (out * out).sum() + sum((s * 0.5).sum() for s in new_states)
    loss.backward()
    grads = {k: p.grad().asnumpy().copy() for k, p in layer.collect_params().items()}
    return out.asnumpy(), [s.asnumpy() for s in new_states], x.grad.asnumpy(), grads


@pytest.mark.parametrize("mode,layout", [("lstm", "TNC"), ("gru", "NTC"),
                                         ("rnn_tanh", "TNC")])
def test_use_sequence_length_end_to_end(mode, layout):
    """Each sequence as if run alone on its first `length` steps (numpy), zero output past
    it; hybridized equals imperative, gradients included."""
    T, N, I, H, L = 4, 3, 3, 2, 2
    layer = _make(mode, H, num_layers=L, bidirectional=True, layout=layout,
                  use_sequence_length=True)
    layer.initialize(mx.init.Uniform(0.5))
    x_tnc = RNG.uniform(-1, 1, (T, N, I))
    x = mx.nd.array(x_tnc if layout == "TNC" else x_tnc.transpose(1, 0, 2))
    states = [mx.nd.array(RNG.uniform(-0.5, 0.5, s["shape"]))
              for s in layer.state_info(N)]
    lens = [4, 1, 3]
    ref = _seq_call(layer, x, states, mx.nd.array(lens))
    out_tnc = ref[0] if layout == "TNC" else ref[0].transpose(1, 0, 2)
    h0 = states[0].asnumpy()
    c0 = states[1].asnumpy() if mode == "lstm" else np.zeros_like(h0)
    params = layer.collect_params()
    for n, ln in enumerate(lens):
        want, hy, cy = _np_layer(mode, params, layer.prefix, x_tnc[:ln, n:n + 1],
                                 h0[:, n:n + 1], c0[:, n:n + 1], L, 2)
        np.testing.assert_allclose(out_tnc[:ln, n:n + 1], want, rtol=1e-5, atol=1e-6)
        assert not out_tnc[ln:, n].any()
        np.testing.assert_allclose(ref[1][0][:, n:n + 1], hy, rtol=1e-5, atol=1e-6)
        if mode == "lstm":
            np.testing.assert_allclose(ref[1][1][:, n:n + 1], cy, rtol=1e-5, atol=1e-6)
    # padded steps get no input gradient
    gx = ref[2] if layout == "TNC" else ref[2].transpose(1, 0, 2)
    assert not gx[1:, 1].any() and gx[0, 1].any()
    layer.hybridize()
    got = _seq_call(layer, x, states, mx.nd.array(lens))
    for a, b in zip([ref[0], *ref[1], ref[2]], [got[0], *got[1], got[2]]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for k in ref[3]:
        np.testing.assert_allclose(got[3][k], ref[3][k], rtol=1e-5, atol=1e-6)
