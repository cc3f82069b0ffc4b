"""gluon.rnn cells: one step against numpy (LSTM gates i, f, g, o; GRU r, z, n with the reset
gate on the recurrent product), unroll (layouts, merge_outputs, list inputs, valid_length),
the containers and modifiers, hybridized cells, gradients against finite differences, and
symbolic unrolls, with MXNet 1.9.1's names."""
import numpy as np
import pytest

import mxc as mx
from mxc import autograd
from mxc.base import MXNetError
from mxc.gluon import rnn

RNG = np.random.RandomState(11)


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _weights(cell):
    return [cell.params[cell.prefix + k].data().asnumpy().astype(np.float64)
            for k in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]


def _np_step(kind, cell, x, states, activation="tanh"):
    """One step of ``cell``'s recurrence in numpy; returns (output, states)."""
    wx, wh, bx, bh = _weights(cell)
    h = states[0]
    gx, gh = x @ wx.T + bx, h @ wh.T + bh
    H = h.shape[1]
    if kind == "lstm":
        g = gx + gh
        i, f, o = _sig(g[:, :H]), _sig(g[:, H:2 * H]), _sig(g[:, 3 * H:])
        c = f * states[1] + i * np.tanh(g[:, 2 * H:3 * H])
        h = o * np.tanh(c)
        return h, [h, c]
    if kind == "gru":
        r = _sig(gx[:, :H] + gh[:, :H])
        z = _sig(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        h = (1 - z) * n + z * h
        return h, [h]
    pre = gx + gh
    h = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0), "sigmoid": _sig,
         "softsign": lambda v: v / (1 + np.abs(v))}[activation](pre)
    return h, [h]


def _np_unroll(kind, cell, x_ntc, states, activation="tanh"):
    outs = []
    for t in range(x_ntc.shape[1]):
        out, states = _np_step(kind, cell, x_ntc[:, t], states, activation)
        outs.append(out)
    return np.stack(outs, axis=1), states


def _cell(kind, H, **kw):
    return {"lstm": rnn.LSTMCell, "gru": rnn.GRUCell, "rnn": rnn.RNNCell}[kind](H, **kw)


def _init(block):
    block.initialize(mx.init.Uniform(0.6))
    return block


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------
# single cells
# ------------------------------------------------------------------------------------------
def test_cell_names_shapes_state_info():
    with mx.name.NameManager():
        lstm, gru, simple = rnn.LSTMCell(4), rnn.GRUCell(3, input_size=5), rnn.RNNCell(2)
    assert lstm.prefix == "lstm0_" and gru.prefix == "gru0_" and simple.prefix == "rnn0_"
    assert list(lstm.collect_params().keys()) == [
        "lstm0_i2h_weight", "lstm0_h2h_weight", "lstm0_i2h_bias", "lstm0_h2h_bias"]
    assert lstm.params["lstm0_i2h_weight"].shape == (16, 0)
    assert lstm.params["lstm0_h2h_weight"].shape == (16, 4)
    assert gru.params["gru0_i2h_weight"].shape == (9, 5)
    assert simple.params["rnn0_h2h_bias"].shape == (2,)
    assert lstm.state_info(7) == [{"shape": (7, 4), "__layout__": "NC"}] * 2
    assert gru.state_info()[0]["shape"] == (0, 3)
    assert repr(gru) == "GRUCell(5 -> 9)" and repr(simple) == "RNNCell(None -> 2, tanh)"
    _init(lstm)
    lstm(mx.nd.ones((2, 3)), lstm.begin_state(2))
    assert lstm.params["lstm0_i2h_weight"].shape == (16, 3)       # deferred, now inferred
    states = gru.begin_state(batch_size=3, func=mx.nd.ones)
    assert len(states) == 1 and states[0].shape == (3, 3) and states[0].asnumpy().min() == 1


@pytest.mark.parametrize("kind,activation", [("lstm", None), ("gru", None), ("rnn", "tanh"),
                                             ("rnn", "relu"), ("rnn", "softsign")])
def test_step_matches_numpy(kind, activation):
    N, I, H = 3, 5, 2
    kw = {"activation": activation} if activation else {}
    cell = _init(_cell(kind, H, input_size=I, **kw))
    x = RNG.uniform(-1, 1, (N, I))
    states = [RNG.uniform(-1, 1, (N, H)) for _ in cell.state_info()]
    out, new = cell(mx.nd.array(x), [mx.nd.array(s) for s in states])
    ref, ref_states = _np_step(kind, cell, x, states, activation or "tanh")
    _close(out.asnumpy(), ref)
    assert len(new) == len(ref_states)
    for a, b in zip(new, ref_states):
        _close(a.asnumpy(), b)


def test_lstm_cell_activations():
    cell = _init(rnn.LSTMCell(3, input_size=2, activation="relu",
                              recurrent_activation="tanh"))
    x, h, c = (RNG.uniform(-1, 1, s) for s in ((2, 2), (2, 3), (2, 3)))
    out, (h1, c1) = cell(mx.nd.array(x), [mx.nd.array(h), mx.nd.array(c)])
    wx, wh, bx, bh = _weights(cell)
    g = x @ wx.T + bx + h @ wh.T + bh
    i, f, cand, o = np.tanh(g[:, :3]), np.tanh(g[:, 3:6]), np.maximum(g[:, 6:9], 0), \
        np.tanh(g[:, 9:])
    ref_c = f * c + i * cand
    _close(c1.asnumpy(), ref_c)
    _close(out.asnumpy(), o * np.maximum(ref_c, 0))
    _close(h1.asnumpy(), out.asnumpy())
    leaky = _init(rnn.RNNCell(2, input_size=2, activation=mx.gluon.nn.LeakyReLU(0.1)))
    out, _ = leaky(mx.nd.array(x), leaky.begin_state(2))
    wx, _, bx, _ = _weights(leaky)
    pre = x @ wx.T + bx
    _close(out.asnumpy(), np.where(pre > 0, pre, 0.1 * pre))


# ------------------------------------------------------------------------------------------
# unroll
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_unroll_layouts_and_merge(kind):
    N, T, I, H = 2, 3, 4, 3
    cell = _init(_cell(kind, H, input_size=I))
    x = RNG.uniform(-1, 1, (N, T, I))
    ref, ref_states = _np_unroll(kind, cell, x, [np.zeros((N, H))] * len(cell.state_info()))
    out, states = cell.unroll(T, mx.nd.array(x), layout="NTC", merge_outputs=True)
    assert out.shape == (N, T, H)
    _close(out.asnumpy(), ref)
    for a, b in zip(states, ref_states):
        _close(a.asnumpy(), b)
    out_tnc, _ = cell.unroll(T, mx.nd.array(x.transpose(1, 0, 2)), layout="TNC",
                             merge_outputs=True)
    _close(out_tnc.asnumpy(), ref.transpose(1, 0, 2))
    outs, _ = cell.unroll(T, mx.nd.array(x), layout="NTC", merge_outputs=False)
    assert isinstance(outs, list) and len(outs) == T
    for t in range(T):
        _close(outs[t].asnumpy(), ref[:, t])
    # a list of per-step inputs, merged into one output; None keeps the list
    steps = [mx.nd.array(x[:, t]) for t in range(T)]
    merged, _ = cell.unroll(T, steps, layout="NTC", merge_outputs=True)
    _close(merged.asnumpy(), ref)
    kept, _ = cell.unroll(T, steps, merge_outputs=None)
    assert isinstance(kept, list)
    # explicit begin states
    begin = [RNG.uniform(-1, 1, (N, H)) for _ in cell.state_info()]
    ref2, _ = _np_unroll(kind, cell, x, begin)
    out2, _ = cell.unroll(T, mx.nd.array(x), [mx.nd.array(b) for b in begin],
                          merge_outputs=True)
    _close(out2.asnumpy(), ref2)
    with pytest.raises(MXNetError, match="length"):
        cell.unroll(T + 1, mx.nd.array(x))


def test_unroll_valid_length():
    N, T, I, H = 3, 4, 2, 3
    cell = _init(rnn.LSTMCell(H, input_size=I))
    x = RNG.uniform(-1, 1, (N, T, I))
    lengths = np.array([4, 1, 2])
    out, (h, c) = cell.unroll(T, mx.nd.array(x), layout="NTC", merge_outputs=True,
                              valid_length=mx.nd.array(lengths))
    for n, ln in enumerate(lengths):
        ref, (rh, rc) = _np_unroll("lstm", cell, x[n:n + 1, :ln], [np.zeros((1, H))] * 2)
        _close(out.asnumpy()[n, :ln], ref[0])
        np.testing.assert_array_equal(out.asnumpy()[n, ln:], 0)     # padding masked
        _close(h.asnumpy()[n], rh[0])                                # last valid state
        _close(c.asnumpy()[n], rc[0])
    outs, _ = cell.unroll(T, mx.nd.array(x), layout="NTC", merge_outputs=False,
                          valid_length=mx.nd.array(lengths))
    assert len(outs) == T
    _close(np.stack([o.asnumpy() for o in outs], 1), out.asnumpy())


# ------------------------------------------------------------------------------------------
# containers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("container", [rnn.SequentialRNNCell, rnn.HybridSequentialRNNCell])
def test_sequential_stack(container):
    N, T, I = 2, 3, 3
    with mx.name.NameManager():
        stack = container()
        with stack.name_scope():
            stack.add(rnn.LSTMCell(4, input_size=I))
            stack.add(rnn.DropoutCell(0.5))
            stack.add(rnn.GRUCell(2, input_size=4))
    prefix = container.__name__.lower() + "0_"
    assert list(stack.collect_params().keys())[:2] == [prefix + "lstm0_i2h_weight",
                                                      prefix + "lstm0_h2h_weight"]
    assert prefix + "gru0_h2h_bias" in stack.collect_params()
    assert len(stack) == 3 and isinstance(stack[2], rnn.GRUCell)
    _init(stack)
    assert [i["shape"] for i in stack.state_info(N)] == [(N, 4), (N, 4), (N, 2)]
    x = RNG.uniform(-1, 1, (N, T, I))
    out, states = stack.unroll(T, mx.nd.array(x), layout="NTC", merge_outputs=True)
    mid, (h1, c1) = _np_unroll("lstm", stack[0], x, [np.zeros((N, 4))] * 2)
    ref, (h2,) = _np_unroll("gru", stack[2], mid, [np.zeros((N, 2))])
    _close(out.asnumpy(), ref)
    assert len(states) == 3
    for a, b in zip(states, [h1, c1, h2]):
        _close(a.asnumpy(), b)
    # stepping the stack consumes each cell's slice of the state list
    step_out, step_states = stack(mx.nd.array(x[:, 0]), stack.begin_state(batch_size=N))
    _close(step_out.asnumpy(), ref[:, 0])
    assert len(step_states) == 3


def test_bidirectional_cell():
    N, T, I, H = 2, 3, 2, 3
    with mx.name.NameManager():
        bi = rnn.BidirectionalCell(rnn.GRUCell(H, input_size=I, prefix="l_"),
                                   rnn.LSTMCell(H, input_size=I, prefix="r_"))
    _init(bi)
    assert sorted(bi.collect_params().keys()) == sorted(
        f"{d}_{k}" for d in "lr" for k in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"))
    assert len(bi.state_info(N)) == 3
    x = RNG.uniform(-1, 1, (N, T, I))
    out, states = bi.unroll(T, mx.nd.array(x), layout="NTC", merge_outputs=True)
    left, (lh,) = _np_unroll("gru", bi._children["l_cell"], x, [np.zeros((N, H))])
    right, (rh, rc) = _np_unroll("lstm", bi._children["r_cell"], x[:, ::-1],
                                 [np.zeros((N, H))] * 2)
    _close(out.asnumpy(), np.concatenate([left, right[:, ::-1]], axis=2))
    for a, b in zip(states, [lh, rh, rc]):
        _close(a.asnumpy(), b)
    outs, _ = bi.unroll(T, mx.nd.array(x.transpose(1, 0, 2)), layout="TNC",
                        merge_outputs=False)
    _close(outs[1].asnumpy(), out.asnumpy()[:, 1])
    with pytest.raises(NotImplementedError):
        bi(mx.nd.array(x[:, 0]), bi.begin_state(batch_size=N))
    # valid_length: each sequence is reversed within its own length
    lengths = np.array([3, 2])
    out_v, _ = bi.unroll(T, mx.nd.array(x), layout="NTC", merge_outputs=True,
                         valid_length=mx.nd.array(lengths))
    n, ln = 1, 2
    left, _ = _np_unroll("gru", bi._children["l_cell"], x[n:n + 1, :ln], [np.zeros((1, H))])
    right, _ = _np_unroll("lstm", bi._children["r_cell"], x[n:n + 1, :ln][:, ::-1],
                          [np.zeros((1, H))] * 2)
    _close(out_v.asnumpy()[n, :ln], np.concatenate([left, right[:, ::-1]], axis=2)[0])
    np.testing.assert_array_equal(out_v.asnumpy()[n, ln:], 0)


# ------------------------------------------------------------------------------------------
# modifiers
# ------------------------------------------------------------------------------------------
def test_dropout_cell():
    x = mx.nd.array(RNG.uniform(1, 2, (4, 5, 6)))
    drop = rnn.DropoutCell(0.5)
    out, states = drop.unroll(5, x, merge_outputs=True)
    np.testing.assert_array_equal(out.asnumpy(), x.asnumpy())     # identity in inference
    assert states == []
    with autograd.record(train_mode=True):
        out, _ = drop.unroll(5, x, merge_outputs=True)
        step, _ = drop(x[:, 0], [])
    vals = out.asnumpy()
    assert (vals == 0).any() and np.allclose(vals[vals != 0], 2 * x.asnumpy()[vals != 0])
    assert (step.asnumpy() == 0).any()
    shared = rnn.DropoutCell(0.5, axes=(1,))
    with autograd.record(train_mode=True):
        out, _ = shared.unroll(5, x, merge_outputs=True)
    zero = out.asnumpy() == 0
    assert (zero == zero[:, :1, :]).all()                         # mask shared along T
    with pytest.raises(MXNetError, match="rate"):
        rnn.DropoutCell("0.5")


def test_zoneout_and_residual_cells():
    N, T, H = 2, 3, 3
    base = _init(rnn.GRUCell(H, input_size=H))
    zone = rnn.ZoneoutCell(base, zoneout_outputs=1.0, zoneout_states=1.0)
    assert zone.prefix == base.prefix + "zoneout"
    assert zone.params is base.params
    x = mx.nd.array(RNG.uniform(-1, 1, (N, T, H)))
    # inference: zoneout is a no-op
    ref, (ref_h,) = _np_unroll("gru", base, x.asnumpy(), [np.zeros((N, H))])
    out, states = zone.unroll(T, x, merge_outputs=True)
    _close(out.asnumpy(), ref)
    _close(states[0].asnumpy(), ref_h)
    # training with p=1: every element keeps its previous value (zeros from the start)
    with autograd.record(train_mode=True):
        out, states = zone.unroll(T, x, merge_outputs=True)
    np.testing.assert_array_equal(out.asnumpy(), 0)
    np.testing.assert_array_equal(states[0].asnumpy(), 0)
    with pytest.raises(MXNetError, match="modifier"):
        base.begin_state(batch_size=N)
    with pytest.raises(MXNetError, match="already modified"):
        rnn.ResidualCell(base)
    with pytest.raises(MXNetError, match="zoneout"):
        rnn.ZoneoutCell(rnn.BidirectionalCell(rnn.GRUCell(2), rnn.GRUCell(2)))

    res_base = _init(rnn.LSTMCell(H, input_size=H))
    res = rnn.ResidualCell(res_base)
    ref, _ = _np_unroll("lstm", res_base, x.asnumpy(), [np.zeros((N, H))] * 2)
    out, _ = res.unroll(T, x, merge_outputs=True)
    _close(out.asnumpy(), ref + x.asnumpy())
    outs, _ = res.unroll(T, x, merge_outputs=False)
    _close(outs[2].asnumpy(), ref[:, 2] + x.asnumpy()[:, 2])
    step, _ = res(x[:, 0], res.begin_state(batch_size=N, func=mx.nd.zeros))
    _close(step.asnumpy(), ref[:, 0] + x.asnumpy()[:, 0])
    lengths = mx.nd.array([1, 3])
    out_v, _ = res.unroll(T, x, merge_outputs=True, valid_length=lengths)
    np.testing.assert_array_equal(out_v.asnumpy()[0, 1:], 0)


# ------------------------------------------------------------------------------------------
# hybridize, gradients, symbols, reset
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_hybridized_cell_equals_imperative(kind):
    N, T, I, H = 2, 3, 3, 2
    cell = _init(_cell(kind, H, input_size=I))
    x = mx.nd.array(RNG.uniform(-1, 1, (N, T, I)))

    def run():
        xv = x.copy()
        xv.attach_grad()
        with autograd.record():
            out, states = cell.unroll(T, xv, merge_outputs=True)
            loss = (out * out).sum() + states[-1].sum()
        loss.backward()
        return out.asnumpy(), xv.grad.asnumpy(), cell.params[cell.prefix + "h2h_weight"] \
            .grad().asnumpy().copy()

    ref = run()
    cell.hybridize()
    got = run()
    for a, b in zip(ref, got):
        _close(b, a)


def test_cell_gradient_matches_finite_differences():
    N, T, I, H = 1, 2, 2, 2
    cell = rnn.LSTMCell(H, input_size=I, prefix="fd_")
    cell.initialize(mx.init.Uniform(0.8))
    cell.cast("float64")
    x = RNG.uniform(-1, 1, (N, T, I))
    head = RNG.uniform(-1, 1, (N, T, H))

    def begin():
        return cell.begin_state(N, dtype="float64")   # float32 zeros by default, as MXNet

    def loss_np(xv):
        out, _ = cell.unroll(T, mx.nd.array(xv, dtype="float64"), begin(), merge_outputs=True)
        return float((out.asnumpy() * head).sum())

    xin = mx.nd.array(x, dtype="float64")
    xin.attach_grad()
    with autograd.record():
        out, _ = cell.unroll(T, xin, begin(), merge_outputs=True)
        loss = (out * mx.nd.array(head, dtype="float64")).sum()
    loss.backward()
    eps = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = (loss_np(xp) - loss_np(xm)) / (2 * eps)
    np.testing.assert_allclose(xin.grad.asnumpy(), num, rtol=1e-5, atol=1e-8)
    w = cell.params["fd_i2h_weight"]
    analytic = w.grad().asnumpy().copy()
    base = w.data().asnumpy().copy()
    num = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        vals = []
        for delta in (eps, -eps):
            b = base.copy()
            b[idx] += delta
            w.set_data(mx.nd.array(b, dtype="float64"))
            vals.append(loss_np(x))
        num[idx] = (vals[0] - vals[1]) / (2 * eps)
    w.set_data(mx.nd.array(base, dtype="float64"))
    np.testing.assert_allclose(analytic, num, rtol=1e-5, atol=1e-8)


def test_symbolic_unroll_and_names():
    N, T, I, H = 2, 3, 2, 3
    with mx.name.NameManager():
        cell = rnn.GRUCell(H, input_size=I, prefix="g_")
        data = mx.sym.var("data")
        out, states = cell.unroll(T, data, layout="NTC", merge_outputs=True)
    args = out.list_arguments()
    assert args[0] == "data"
    assert {"g_i2h_weight", "g_h2h_weight", "g_i2h_bias", "g_h2h_bias"} <= set(args)
    internals = out.get_internals().list_outputs()
    assert "g_t0_i2h_output" in internals and "g_t2_out_output" in internals
    _init(cell)
    x = RNG.uniform(-1, 1, (N, T, I))
    feed = {"data": mx.nd.array(x)}
    feed.update({k: v.data() for k, v in cell.collect_params().items()})
    ex = mx.sym.Group([out] + states).bind(mx.cpu(), feed)
    res = ex.forward()
    ref, (h,) = _np_unroll("gru", cell, x, [np.zeros((N, H))])
    _close(res[0].asnumpy(), ref)
    _close(res[1].asnumpy(), h)
    # begin states as variables, named after the cell and its begin-state counter
    cell.reset()
    with mx.name.NameManager():
        begin = cell.begin_state(func=mx.sym.var)
    assert begin[0].name == "g_begin_state_0"


def test_reset_counters():
    cell = _init(rnn.RNNCell(2, input_size=2))
    x = mx.nd.ones((1, 2))
    cell(x, cell.begin_state(1))
    cell(x, cell.begin_state(1))
    assert cell._counter == 1 and cell._init_counter == 1
    cell.reset()
    assert cell._counter == -1 and cell._init_counter == -1
