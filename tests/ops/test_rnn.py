"""The fused RNN operator (lstm, gru, rnn_tanh, rnn_relu) and _rnn_param_concat.

Forward against a float64 numpy implementation of MXNet's cells, gradients (BPTT) against
finite differences of it on tiny sizes; dropout between layers against finite differences of
the compiled forward itself with the random seed held fixed.
"""
import numpy as np
import pytest

from mxc.base import MXNetError, OpError
from mxc.compiler.build import compile_graph
from mxc.ir.graph import Entry, Graph, make_node, variable
from mxc.ir.ops.rnn import rnn_forward_np, rnn_param_size, seq_lengths_np
from mxc.runtime import random as mxrandom
from mxc.testing import check_forward, check_grad, run_op

rng = np.random.default_rng(5)
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _inputs(mode, L, D, T, N, I, H, dtype=np.float64, scale=0.5):
    P = rnn_param_size(L, I, H, D, mode)
    ins = [rng.standard_normal((T, N, I)), rng.standard_normal(P) * scale,
           rng.standard_normal((L * D, N, H)) * 0.5]
    if mode == "lstm":
        ins.append(rng.standard_normal((L * D, N, H)) * 0.5)
    return [x.astype(dtype) for x in ins]


def _attrs(mode, L, D, H, **kw):
    return dict(mode=mode, state_size=H, num_layers=L, bidirectional=D == 2, **kw)


def test_param_size_matches_mxnet():
    # MXNet's GetRnnParamSize, e.g. a 2-layer bidirectional LSTM, I=10, H=20
    assert rnn_param_size(2, 10, 20, 2, "lstm") == 15040
    assert rnn_param_size(1, 5, 3, 1, "gru") == (5 + 3 + 2) * 9
    assert rnn_param_size(3, 4, 6, 1, "rnn_tanh") == (4 + 6 + 2) * 6 + 2 * (6 + 6 + 2) * 6
    # shape inference fills the parameter vector and the states from data
    node = make_node("RNN", [], _attrs("gru", 2, 2, 6, state_outputs=True))
    vs = [variable(n) for n in ("data", "parameters", "state")]
    node.inputs = [Entry(v, 0) for v in vs]
    from mxc.compiler.infer import infer_shapes
    shapes = infer_shapes(Graph([Entry(node, 0), Entry(node, 1)]), {"data": (7, 3, 5)})
    assert shapes[(vs[1].uid, 0)] == (rnn_param_size(2, 5, 6, 2, "gru"),)
    assert shapes[(vs[2].uid, 0)] == (4, 3, 6)
    assert shapes[(node.uid, 0)] == (7, 3, 12) and shapes[(node.uid, 1)] == (4, 3, 6)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_rnn_forward(mode):
    # (one layer, one direction); (three layers, bidirectional, state outputs);
    # a single timestep of a single sequence in float64
    for (L, D), so, T, N, dtype in [((1, 1), False, 5, 3, np.float32),
                                    ((3, 2), True, 4, 3, np.float32),
                                    ((2, 2), True, 1, 1, np.float64)]:
        ins = _inputs(mode, L, D, T=T, N=N, I=4, H=6, dtype=dtype)
        tol = 1e-4 if dtype == np.float32 else 1e-10
        check_forward("RNN", ins, _attrs(mode, L, D, 6, state_outputs=so), rtol=tol,
                      atol=tol / 10)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_rnn_gradient(mode):
    for (L, D), so, T in [((2, 2), True, 3), ((2, 1), False, 1)]:
        ins = _inputs(mode, L, D, T=T, N=2, I=3, H=2)
        check_grad("RNN", ins, _attrs(mode, L, D, 2, state_outputs=so), rtol=1e-4,
                   atol=1e-6, eps=1e-5)


def test_lstm_state_clip():
    ins = _inputs("lstm", 1, 2, T=4, N=2, I=3, H=3, scale=1.5)
    for lo, hi, nan in [(-0.3, 0.3, False), (None, 0.2, True)]:
        attrs = _attrs("lstm", 1, 2, 3, state_outputs=True, lstm_state_clip_min=lo,
                       lstm_state_clip_max=hi, lstm_state_clip_nan=nan)
        outs = check_forward("RNN", ins, attrs, rtol=1e-10, atol=1e-12)
        assert outs[2].max() <= hi + 1e-12
    check_grad("RNN", ins, _attrs("lstm", 1, 2, 3, state_outputs=True,
                                  lstm_state_clip_min=-0.3, lstm_state_clip_max=0.3),
               rtol=1e-4, atol=1e-6, eps=1e-6)


def test_rnn_empty_sequence():
    ins = _inputs("lstm", 1, 1, T=0, N=2, I=3, H=4, dtype=np.float32)
    outs = check_forward("RNN", ins, _attrs("lstm", 1, 1, 4, state_outputs=True))
    assert outs[0].shape == (0, 2, 4)
    np.testing.assert_array_equal(outs[1], ins[2])
    np.testing.assert_array_equal(outs[2], ins[3])


def test_rnn_bad_attributes():
    ins = _inputs("gru", 1, 1, T=2, N=2, I=3, H=2, dtype=np.float32)
    with pytest.raises(MXNetError):   # use_sequence_length without the lengths input
        run_op("RNN", ins, _attrs("gru", 1, 1, 2, use_sequence_length=True))
    with pytest.raises(MXNetError):   # one length per batch entry
        run_op("RNN", ins + [np.array([1.0, 2.0, 1.0])],
               _attrs("gru", 1, 1, 2, use_sequence_length=True))
    with pytest.raises(OpError):
        run_op("RNN", ins, _attrs("gru", 1, 1, 2, projection_size=2))
    with pytest.raises(OpError):
        run_op("RNN", ins, _attrs("lstmp", 1, 1, 2))
    with pytest.raises(MXNetError):
        run_op("RNN", [ins[0], ins[1][:-1], ins[2]], _attrs("gru", 1, 1, 2))
    with pytest.raises(MXNetError):
        run_op("RNN", [ins[0][0], ins[1], ins[2]], _attrs("gru", 1, 1, 2))


# ---------------------------------------------------------------------------------------------
# use_sequence_length
# ---------------------------------------------------------------------------------------------
def _seq_attrs(mode, L, D, H, **kw):
    return _attrs(mode, L, D, H, state_outputs=True, use_sequence_length=True, **kw)


def test_seq_lengths_truncated_and_clamped():
    # lengths are cast to int and clamped to [1, T] (cuDNN rejects 0 and lengths > T)
    np.testing.assert_array_equal(seq_lengths_np(np.array([0.0, 2.7, 9.0, -3.0]), 5),
                                  [1, 2, 5, 1])
    np.testing.assert_array_equal(seq_lengths_np(np.array([0, 3, 7], np.int32), 4), [1, 3, 4])


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_rnn_sequence_length_forward(mode):
    # 2 layers, bidirectional, odd sizes; lengths of every kind: full, 1, in between, and
    # out-of-range values (0, > T) that are clamped; float32 and int lengths
    T, N, I, H = 5, 4, 3, 3
    for L, D, dtype, lens in [(2, 2, np.float32, np.array([5, 1, 3, 2], np.int32)),
                              (1, 1, np.float64, np.array([0.0, 7.0, 2.9, 4.0]))]:
        ins = _inputs(mode, L, D, T=T, N=N, I=I, H=H, dtype=dtype) + [lens]
        tol = 1e-4 if dtype == np.float32 else 1e-10
        outs = check_forward("RNN", ins, _seq_attrs(mode, L, D, H), rtol=tol, atol=tol / 10)
        # zero past each length, and the states are those at the end of each sequence
        clamped = seq_lengths_np(lens, T)
        for n, ln in enumerate(clamped):
            assert not outs[0][ln:, n].any()
            assert mode == "rnn_relu" or outs[0][:ln, n].all()   # relu may give exact 0
        if D == 1:
            np.testing.assert_allclose(outs[1][-1], outs[0][clamped - 1, np.arange(N), :],
                                       rtol=1e-12)


def test_rnn_sequence_length_equals_truncated_run():
    # one sequence with length 2 == running the op on its first 2 steps
    mode, L, D, T, N, I, H = "lstm", 2, 2, 4, 1, 3, 2
    ins = _inputs(mode, L, D, T=T, N=N, I=I, H=H)
    full, _, _ = run_op("RNN", ins + [np.array([2.0])], _seq_attrs(mode, L, D, H))
    short, _, _ = run_op("RNN", [ins[0][:2]] + ins[1:], _attrs(mode, L, D, H,
                                                               state_outputs=True))
    np.testing.assert_allclose(full[0][:2], short[0], rtol=1e-12)
    assert not full[0][2:].any()
    for f, s in zip(full[1:], short[1:]):
        np.testing.assert_allclose(f, s, rtol=1e-12)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_rnn_sequence_length_gradient(mode):
    ins = _inputs(mode, 2, 2, T=3, N=3, I=2, H=2) + [np.array([3.0, 1.0, 2.0])]
    n_float = 4 if mode == "lstm" else 3
    check_grad("RNN", ins, _seq_attrs(mode, 2, 2, 2), rtol=1e-4, atol=1e-6, eps=1e-5,
               which=list(range(n_float)))
    # no gradient flows into the lengths
    hgs = [np.ones((3, 3, 4)), np.ones((4, 3, 2))] + ([np.ones((4, 3, 2))] if mode == "lstm"
                                                     else [])
    _, grads, _ = run_op("RNN", ins, _seq_attrs(mode, 2, 2, 2), head_grads=hgs)
    assert grads[-1] is None or not np.asarray(grads[-1]).any()


def test_rnn_sequence_length_with_clip_and_dropout():
    ins = _inputs("lstm", 1, 2, T=4, N=3, I=2, H=3, scale=1.5) + [np.array([4, 2, 1])]
    attrs = _seq_attrs("lstm", 1, 2, 3, lstm_state_clip_min=-0.3, lstm_state_clip_max=0.3)
    check_forward("RNN", ins, attrs, rtol=1e-10, atol=1e-12)
    check_grad("RNN", ins, attrs, rtol=1e-4, atol=1e-6, eps=1e-6, which=[0, 1, 2, 3])
    # dropout between layers in training still zeroes the padded steps
    ins = _inputs("gru", 2, 1, T=4, N=3, I=2, H=2) + [np.array([1, 4, 2])]
    outs, _, _ = run_op("RNN", ins, _seq_attrs("gru", 2, 1, 2, p=0.5), is_train=True)
    assert not outs[0][1:, 0].any() and not outs[0][2:, 2].any()


class _Compiled:
    """One compiled RNN node (training bind), run many times on the same storage."""

    def __init__(self, inputs, attrs):
        node = make_node("RNN", [], attrs, name="rnn")
        names = node.opdef.arguments(node.parsed)
        self.vars = [variable(n) for n in names]
        node.inputs = [Entry(v, 0) for v in self.vars]
        nvis = node.opdef.num_visible_outputs(node.parsed)
        graph = Graph([Entry(node, i) for i in range(nvis)])
        shapes = {v.name: x.shape for v, x in zip(self.vars, inputs)}
        types = {v.name: x.dtype.name for v, x in zip(self.vars, inputs)}
        self.cg = compile_graph(graph, shapes, types, is_train=True,
                                grad_req={v.name: "write" for v in self.vars})
        self.graph = graph
        self.cg.program.allocate()

    def view(self, slot, key):
        shp, dt = self.cg.shapes[key], np.dtype(self.cg.types[key])
        return self.cg.program.storage[slot][: int(np.prod(shp)) * dt.itemsize].view(dt) \
            .reshape(shp)

    def forward(self, inputs, seed):
        for v, x in zip(self.vars, inputs):
            self.view(self.cg.var_slots[v.name], (v.uid, 0))[...] = x
        mxrandom.seed(seed)
        self.cg.program.run("forward")
        return [self.view(s, (h.node.uid, h.index)).copy()
                for h, s in zip(self.graph.outputs, self.cg.head_slots)]

    def backward(self, head_grads):
        for h, s, g in zip(self.graph.outputs, self.cg.head_grad_slots, head_grads):
            self.view(s, (h.node.uid, h.index))[...] = g
        self.cg.program.run("backward")
        return [self.view(self.cg.grad_slots[v.name], (v.uid, 0)).copy() for v in self.vars]


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_rnn_dropout_between_layers(mode):
    p = 0.4
    ins = _inputs(mode, 3, 2, T=2, N=2, I=2, H=2)
    attrs = _attrs(mode, 3, 2, 2, p=p, state_outputs=True)
    # inference: no dropout at all
    check_forward("RNN", ins, attrs, rtol=1e-10, atol=1e-12)
    # training: dropout changes the result, reproducibly for a fixed seed
    prog = _Compiled(ins, attrs)
    ref = rnn_forward_np(prog.graph.outputs[0].node.parsed, *ins)
    a = prog.forward(ins, seed=1)
    b = prog.forward(ins, seed=1)
    c = prog.forward(ins, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], ref[0]) and not np.allclose(a[0], c[0])
    # BPTT through the dropped-out layers: finite differences of the compiled forward
    hgs = [rng.standard_normal(o.shape) for o in a]
    prog.forward(ins, seed=1)
    grads = prog.backward(hgs)
    eps = 1e-6
    for k in (0, 1, 2):
        x = ins[k]
        num = np.zeros_like(x)
        flat, nflat = x.reshape(-1), num.reshape(-1)
        idx = rng.choice(flat.size, min(flat.size, 25), replace=False)
        for j in idx:
            old = flat[j]
            flat[j] = old + eps
            fp = sum(float(np.sum(o * h)) for o, h in zip(prog.forward(ins, 1), hgs))
            flat[j] = old - eps
            fm = sum(float(np.sum(o * h)) for o, h in zip(prog.forward(ins, 1), hgs))
            flat[j] = old
            nflat[j] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grads[k].reshape(-1)[idx], nflat[idx], rtol=1e-4,
                                   atol=1e-7, err_msg=f"input {k}")


def test_rnn_long_sequence_shares_kernels():
    # every timestep's kernels are one compiled function called with other offsets
    T = 40
    ins = _inputs("lstm", 1, 2, T=T, N=2, I=3, H=4)
    attrs = _attrs("lstm", 1, 2, 4, state_outputs=True)
    prog = _Compiled(ins, attrs)
    calls = prog.cg.program.calls
    assert len(calls) > 10 * T and len({c.name for c in calls}) < 30
    got = prog.forward(ins, seed=0)
    want = rnn_forward_np(prog.graph.outputs[0].node.parsed, *ins)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# _rnn_param_concat
# ---------------------------------------------------------------------------------------------
def test_rnn_param_concat():
    xs = [rng.standard_normal(n) for n in (6, 3, 4)]
    check_forward("_rnn_param_concat", [x.astype(np.float32) for x in xs],
                  {"num_args": 3, "dim": 0})
    check_grad("_rnn_param_concat", xs, {"num_args": 3, "dim": 0}, rtol=1e-6, atol=1e-8)
    ys = [rng.standard_normal((2, n, 3)) for n in (1, 4)]
    check_forward("_rnn_param_concat", ys, {"num_args": 2})
    check_grad("_rnn_param_concat", ys, {"num_args": 2, "dim": -2}, rtol=1e-6, atol=1e-8)
    with pytest.raises(MXNetError):
        run_op("_rnn_param_concat", [np.ones((2, 3)), np.ones((3, 3))], {"num_args": 2})


def test_rnn_fed_by_param_concat():
    """Gluon's layout: per-gate weights reshaped and concatenated into the flat vector."""
    mode, L, D, T, N, I, H = "gru", 1, 2, 3, 2, 3, 2
    G = GATES[mode]
    pieces = []
    for _ in range(D):
        pieces += [rng.standard_normal(G * H * I) * 0.5, rng.standard_normal(G * H * H) * 0.5]
    for _ in range(D):
        pieces += [rng.standard_normal(G * H) * 0.5, rng.standard_normal(G * H) * 0.5]
    flat = np.concatenate(pieces)
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((L * D, N, H))
    vs = [variable(f"w{i}") for i in range(len(pieces))]
    cat = make_node("_rnn_param_concat", [Entry(v, 0) for v in vs],
                    {"num_args": len(pieces), "dim": 0})
    vx, vh = variable("x"), variable("h0")
    rnn = make_node("RNN", [Entry(vx, 0), Entry(cat, 0), Entry(vh, 0)], _attrs(mode, L, D, H))
    graph = Graph([Entry(rnn, 0)])
    shapes = {f"w{i}": p.shape for i, p in enumerate(pieces)}
    shapes.update(x=x.shape, h0=h0.shape)
    types = {k: "float64" for k in shapes}
    cg = compile_graph(graph, shapes, types, is_train=True, grad_req={k: "write" for k in shapes})
    prog = cg.program
    prog.allocate()

    def view(slot, key):
        shp, dt = cg.shapes[key], np.dtype(cg.types[key])
        return prog.storage[slot][: int(np.prod(shp)) * dt.itemsize].view(dt).reshape(shp)

    allv = {**{f"w{i}": (v, pieces[i]) for i, v in enumerate(vs)}, "x": (vx, x), "h0": (vh, h0)}
    for name, (v, val) in allv.items():
        view(cg.var_slots[name], (v.uid, 0))[...] = val
    prog.run("forward")
    got = view(cg.head_slots[0], (rnn.uid, 0))
    want = rnn_forward_np(rnn.parsed, x, flat, h0)[0]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    hg = rng.standard_normal(got.shape)
    view(cg.head_grad_slots[0], (rnn.uid, 0))[...] = hg
    prog.run("backward")
    _, grads, _ = run_op("RNN", [x, flat, h0], _attrs(mode, L, D, H), head_grads=[hg])
    gw = np.concatenate([view(cg.grad_slots[f"w{i}"], (v.uid, 0)) for i, v in enumerate(vs)])
    np.testing.assert_allclose(gw, grads[1], rtol=1e-10, atol=1e-12)
