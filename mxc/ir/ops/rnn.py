"""Recurrent layers: MXNet's fused ``RNN`` operator (lstm, gru, rnn_relu, rnn_tanh; stacked,
bidirectional, dropout between layers) and ``_rnn_param_concat``.

Layout (MXNet's, cuDNN-compatible):

* ``data`` (T, N, I), ``state``/``state_cell`` (L*D, N, H), ``output`` (T, N, D*H);
* ``parameters`` is one flat vector: first every weight matrix — per layer, per direction,
  ``W_x`` (G*H, I or D*H) then ``W_h`` (G*H, H) — then every bias — per layer, per direction,
  ``b_x`` (G*H) then ``b_h`` (G*H). Gates: LSTM i, f, g, o; GRU r, z, n with
  ``n = tanh(W_xn x + b_xn + r * (W_hn h + b_hn))``.

Lowering, per layer and direction: the input projection of all timesteps is ONE gemm
(T*N x I times W_x^T, plus b_x), then per timestep one gemm for ``h_{t-1} W_h^T`` and a few
fused elementwise kernels. Per-timestep kernels are written once, on views relative to the
timestep, and called with per-call pointer offsets (like the gemm template), so a sequence
of any length compiles to a handful of functions.

Training keeps what the backward pass needs (gate activations, cell states, layer outputs,
dropout masks) in a hidden ``reserve`` output, like MXNet's reserve space; the backward
(BPTT) runs the same structure in reverse with gemms for the recurrent and weight gradients.

``use_sequence_length`` (cuDNN's padded layout, MXNet src/operator/cudnn_rnn-inl.h): the
argument ``sequence_length`` (N,) follows state / state_cell; a (T, N) validity mask makes
every step past a sequence's end carry h (and c) unchanged, so the forward direction ends at
step length-1 and the backward direction starts there from the initial state; the visible
output is zero past each length. ``projection_size`` (LSTMP) is not supported yet.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..params import Param, ParamSpec, enum, optional, parse_bool, parse_float, parse_int
from ..registry import OpDef, simple
from .common import flat, norm_axis, outputs_of
from .nn import uniform01

C = K.const

_GATES = {"rnn_relu": 1, "rnn_tanh": 1, "lstm": 4, "gru": 3}

_RNN_PARAMS = ParamSpec(
    state_size=Param(parse_int),
    num_layers=Param(parse_int),
    bidirectional=Param(parse_bool, False),
    mode=Param(enum("rnn_relu", "rnn_tanh", "lstm", "gru")),
    p=Param(parse_float, 0.0),
    state_outputs=Param(parse_bool, False),
    projection_size=Param(optional(parse_int), None),
    lstm_state_clip_min=Param(optional(parse_float), None),
    lstm_state_clip_max=Param(optional(parse_float), None),
    lstm_state_clip_nan=Param(parse_bool, False),
    use_sequence_length=Param(parse_bool, False))


def rnn_param_size(num_layers: int, input_size: int, state_size: int, directions: int,
                   mode: str) -> int:
    """MXNet's GetRnnParamSize (without projection)."""
    size = state_size * directions * _GATES[mode]
    size1 = (input_size + state_size + 2) * size
    size2 = (state_size * directions + state_size + 2) * size
    return size1 + (num_layers - 1) * size2


def param_offsets(L: int, D: int, I: int, H: int, G: int) -> dict:
    """(layer, direction) -> dict(wx, wh, bx, bh offsets, in_size)."""
    offs = {}
    cur = 0
    for l in range(L):
        ins = I if l == 0 else D * H
        for d in range(D):
            offs[(l, d)] = {"wx": cur, "wh": cur + G * H * ins, "in": ins}
            cur += G * H * (ins + H)
    for l in range(L):
        for d in range(D):
            offs[(l, d)]["bx"] = cur
            offs[(l, d)]["bh"] = cur + G * H
            cur += 2 * G * H
    return offs


def _check(a):
    if a.projection_size is not None:
        raise OpError("RNN: projection_size (LSTMP) is not supported by mxc yet")
    if a.state_size <= 0 or a.num_layers <= 0:
        raise OpError(f"RNN: state_size and num_layers must be positive, got "
                      f"{a.state_size}, {a.num_layers}")
    if not 0.0 <= a.p <= 1.0:
        raise OpError(f"RNN: p must be in [0, 1], got {a.p}")
    if a.mode != "lstm" and (a.lstm_state_clip_min is not None
                             or a.lstm_state_clip_max is not None):
        raise OpError("RNN: lstm_state_clip_min/max only apply to mode='lstm'")


class _Layout:
    """Where the training state lives: several hidden ``reserve_*`` outputs, so that the
    views one per-timestep kernel reads are in different buffers (their relative offsets,
    and thus the kernel IR, then do not depend on the timestep).

    ``reserve_y``: outputs of layers 0..L-2 (+ dropout masks and dropped inputs);
    ``reserve_gates``: gate activations (pre-activations for rnn_*) per (layer, direction);
    ``reserve_cell`` (lstm): cell states; ``reserve_gh`` (gru): W_h h + b_h per step.
    """

    def __init__(self, a, T: int, N: int, I: int) -> None:
        self.L, self.D, self.H = a.num_layers, 2 if a.bidirectional else 1, a.state_size
        self.G = _GATES[a.mode]
        self.T, self.N, self.I = T, N, I
        L, D, H, G = self.L, self.D, self.H, self.G
        TN = T * N
        self.y, self.mask, self.xd = {}, {}, {}
        cur = 0
        for l in range(L - 1):
            self.y[l] = cur
            cur += TN * D * H
            if a.p > 0:
                self.mask[l] = cur
                cur += TN * D * H
                self.xd[l] = cur
                cur += TN * D * H
        self.y_size = cur
        self.gates = {(l, d): (l * D + d) * TN * G * H for l in range(L) for d in range(D)}
        self.gates_size = L * D * TN * G * H
        self.cell = {(l, d): (l * D + d) * TN * H for l in range(L) for d in range(D)}
        self.cell_size = L * D * TN * H
        self.gh = {(l, d): (l * D + d) * TN * 3 * H for l in range(L) for d in range(D)}
        self.gh_size = L * D * TN * 3 * H

    @staticmethod
    def names(a) -> list:
        extra = ["reserve_cell"] if a.mode == "lstm" else ["reserve_gh"] if a.mode == "gru" \
            else []
        # with sequence lengths the last layer's carried states live here and the visible
        # output is their masked copy
        seq = ["reserve_out"] if a.use_sequence_length else []
        return ["reserve_y", "reserve_gates"] + extra + seq

    def shapes(self, a) -> list:
        out = [(self.y_size,), (self.gates_size,)]
        if a.mode == "lstm":
            out.append((self.cell_size,))
        elif a.mode == "gru":
            out.append((self.gh_size,))
        if a.use_sequence_length:
            out.append((self.T * self.N * self.D * self.H,))
        return out


def _reserves(a, refs: list) -> tuple:
    """(y, gates, cell or None, gh or None) reserve refs from the trailing hidden refs."""
    n = len(_Layout.names(a))
    r = list(refs[-n:])
    y, gates = r[0], r[1]
    cell = r[2] if a.mode == "lstm" else None
    gh = r[2] if a.mode == "gru" else None
    return y, gates, cell, gh


def _last_layer_y(a, refs: list, out: K.TensorRef) -> K.TensorRef:
    """Where the last layer's recurrent states live: the output itself, or (with sequence
    lengths, whose output is zero past each length) the ``reserve_out`` buffer."""
    if not a.use_sequence_length:
        return out
    return _view(refs[-1], 0, out.shape)


def _seq_len_index(a) -> int:
    """Position of ``sequence_length`` among the arguments (after state / state_cell)."""
    return 4 if a.mode == "lstm" else 3


def _seq_mask(ctx, seq: K.TensorRef, T: int, N: int, dt) -> K.TensorRef:
    """(T, N) scratch: 1 where step t is inside sequence n's length, else 0. Lengths are
    truncated to integers and clamped to [1, T] (cuDNN, MXNet's only backend for
    use_sequence_length, requires 1 <= length <= T)."""
    mask = ctx.temp((T, N), dt)
    kind = seq.dtype.kind

    def f(t, n):
        v = seq[n]
        if kind == "f":
            v = K.maximum(K.minimum(v, C(T, v.dtype)), C(1, v.dtype))
            length = K.cast("int64", v)
        else:
            length = K.maximum(K.minimum(K.cast("int64", v), C(T, "int64")), C(1, "int64"))
        return K.select(K.cast("int64", t).lt(length), C(1, dt), C(0, dt))

    ctx.compute(mask, f, "rnn_seq_mask")
    return mask


def _valid(m_: K.TensorRef, n) -> K.Expr:
    return m_[n].gt(C(0, m_.dtype))


def _view(ref: K.TensorRef, offset: int, shape, strides=None) -> K.TensorRef:
    return K.TensorRef(ref.buf, tuple(int(s) for s in shape),
                       None if strides is None else tuple(strides), ref.offset + int(offset))


def emit_shifted(ctx, out: K.TensorRef, ins: list, fn, name: str) -> None:
    """One kernel per distinct computation, shared by every timestep (see
    LowerCtx.compute_shifted)."""
    ctx.compute_shifted(out, ins, fn, name)


def _sig(x):
    return K.call("sigmoid", x)


def _tanh(x):
    return K.call("tanh", x)


def _clip_cell(a, c: K.Expr) -> K.Expr:
    lo, hi = a.lstm_state_clip_min, a.lstm_state_clip_max
    if lo is None and hi is None:
        return c
    r = c
    if lo is not None:
        r = K.maximum(r, C(lo, c.dtype))
    if hi is not None:
        r = K.minimum(r, C(hi, c.dtype))
    if not a.lstm_state_clip_nan:
        r = K.select(c.ne(c), c, r)
    return r


def _clip_mask(a, c: K.Expr) -> K.Expr | None:
    """1 where the (stored, clipped) cell value was not clipped, else 0."""
    lo, hi = a.lstm_state_clip_min, a.lstm_state_clip_max
    if lo is None and hi is None:
        return None
    cond = None
    if lo is not None:
        cond = c.gt(C(lo, c.dtype))
    if hi is not None:
        h = c.lt(C(hi, c.dtype))
        cond = h if cond is None else cond & h
    return K.select(cond, C(1, c.dtype), C(0, c.dtype))


# ---------------------------------------------------------------------------------------------
# the operator
# ---------------------------------------------------------------------------------------------
@simple("RNN", fusion="opaque", params=_RNN_PARAMS)
class RNN(OpDef):
    uses_train_mode = True
    variable_inputs = True
    random = True

    def arguments(self, a):
        names = ["data", "parameters", "state"]
        if a.mode == "lstm":
            names.append("state_cell")
        if a.use_sequence_length:
            names.append("sequence_length")
        return names

    def outputs(self, a):
        names = ["output"]
        if a.state_outputs:
            names.append("state_output")
            if a.mode == "lstm":
                names.append("statecell_output")
        return names + _Layout.names(a)

    def num_visible_outputs(self, a):
        return len(self.outputs(a)) - len(_Layout.names(a))

    def infer_shape(self, a, s):
        _check(a)
        d = s[0]
        nout = self.num_outputs(a)
        if d is None:
            return s, [None] * nout
        d = tuple(d)
        if len(d) != 3:
            raise ShapeError(f"RNN: data must be (sequence length, batch, input size), got {d}")
        T, N, I = d
        D = 2 if a.bidirectional else 1
        L, H = a.num_layers, a.state_size
        ins = list(s)
        want = [d, (rnn_param_size(L, I, H, D, a.mode),), (L * D, N, H)]
        if a.mode == "lstm":
            want.append((L * D, N, H))
        if a.use_sequence_length:
            want.append((N,))
        for i, w in enumerate(want):
            if ins[i] is not None and tuple(ins[i]) != w:
                name = self.arguments(a)[i]
                raise ShapeError(f"RNN: {name} should have shape {w}, got {tuple(ins[i])}")
            ins[i] = w
        outs = [(T, N, D * H)]
        if a.state_outputs:
            outs.append((L * D, N, H))
            if a.mode == "lstm":
                outs.append((L * D, N, H))
        outs += _Layout(a, T, N, I).shapes(a)
        return ins, outs

    def infer_type(self, a, t):
        t = list(t)
        nfloat = len(t)
        seq_t = None
        if a.use_sequence_length:
            # sequence_length may have any dtype (MXNet casts it to int)
            nfloat = _seq_len_index(a)
            seq_t = t[nfloat] if len(t) > nfloat else None
        k = next((x for x in t[:nfloat] if x is not None), None)
        ins = [k] * nfloat
        if a.use_sequence_length:
            ins.append(seq_t if seq_t is not None else k)
        return ins, [k] * self.num_outputs(a)

    # -- lowering -------------------------------------------------------------------------------
    def lower(self, ctx):
        a = ctx.attrs
        _check(a)
        x, w, h0 = ctx.inputs[:3]
        c0 = ctx.inputs[3] if a.mode == "lstm" else None
        seq = ctx.inputs[_seq_len_index(a)] if a.use_sequence_length else None
        outs = ctx.outputs
        out = outs[0]
        ry, rg, rc, rgh = _reserves(a, outs)
        hy = outs[1] if a.state_outputs else None
        cy = outs[2] if a.state_outputs and a.mode == "lstm" else None
        T, N, I = x.shape
        lay = _Layout(a, T, N, I)
        L, D, H, G = lay.L, lay.D, lay.H, lay.G
        if T == 0 or N == 0:
            # an empty sequence leaves the states as they were
            for src, dst in ((h0, hy), (c0, cy)):
                if dst is not None and dst.size:
                    ctx.copy(dst, src)
            return
        dt = x.dtype
        po = param_offsets(L, D, I, H, G)
        train_drop = ctx.is_train and a.p > 0 and L > 1
        seed = ctx.rng_seed() if train_drop else None
        TN = T * N
        # with sequence lengths every step past a sequence's end carries the state unchanged
        mask = _seq_mask(ctx, seq, T, N, dt) if seq is not None else None
        ylast = _last_layer_y(a, outs, out)
        xin = _view(x, 0, (TN, I))
        for l in range(L):
            yl = ylast if l == L - 1 else _view(ry, lay.y[l], (T, N, D * H))
            ins = po[(l, 0)]["in"]
            for d in range(D):
                p = po[(l, d)]
                wx = _view(w, p["wx"], (G * H, ins))
                wh = _view(w, p["wh"], (G * H, H))
                bx = _view(w, p["bx"], (G * H,))
                bh = _view(w, p["bh"], (G * H,))
                gates = _view(rg, lay.gates[(l, d)], (T, N, G * H))
                ctx.gemm(xin, wx, _view(gates, 0, (TN, G * H)), trans_b=True, bias=bx,
                         bias_axis="n")
                order = list(range(T)) if d == 0 else list(range(T - 1, -1, -1))
                h_init = _view(h0, (l * D + d) * N * H, (N, H))
                c_init = _view(c0, (l * D + d) * N * H, (N, H)) if c0 is not None else None
                cell = _view(rc, lay.cell[(l, d)], (T, N, H)) if a.mode == "lstm" else None
                gh = _view(rgh, lay.gh[(l, d)], (T, N, 3 * H)) if a.mode == "gru" else None

                def hslice(t, yl=yl, d=d):
                    return _view(yl, t * N * D * H + d * H, (N, H), (D * H, 1))

                for step, t in enumerate(order):
                    hp = hslice(order[step - 1]) if step else h_init
                    g_t = _view(gates, t * N * G * H, (N, G * H))
                    m_t = _view(mask, t * N, (N,)) if mask is not None else None
                    if a.mode == "lstm":
                        self._lstm_step(ctx, a, g_t, hp, wh, bh, cell, t,
                                        order[step - 1] if step else None, c_init, hslice(t),
                                        m_t)
                    elif a.mode == "gru":
                        self._gru_step(ctx, g_t, hp, wh, bh, _view(gh, t * N * 3 * H,
                                                                   (N, 3 * H)), hslice(t), m_t)
                    else:
                        ctx.gemm(hp, wh, g_t, trans_b=True, beta=1.0)
                        act = a.mode

                        def fh(r, i, act=act):
                            g_, b_ = r[:2]
                            v = g_[i] + b_[i[1]]
                            if act == "rnn_tanh":
                                h = _tanh(v)
                            else:
                                h = K.select(v.gt(C(0, v.dtype)), v, C(0, v.dtype))
                            if len(r) > 2:
                                h = K.select(_valid(r[3], i[0]), h, r[2][i])
                            return h

                        ins_h = [g_t, bh] + ([hp, m_t] if m_t is not None else [])
                        emit_shifted(ctx, hslice(t), ins_h, fh, "rnn_h")
                last = order[-1]
                if hy is not None:
                    dst = _view(hy, (l * D + d) * N * H, (N, H))
                    emit_shifted(ctx, dst, [hslice(last)], lambda r, i: r[0][i], "rnn_hy")
                if cy is not None:
                    dst = _view(cy, (l * D + d) * N * H, (N, H))
                    emit_shifted(ctx, dst, [_view(cell, last * N * H, (N, H))],
                                 lambda r, i: r[0][i], "rnn_cy")
            # input of the next layer
            if l < L - 1:
                if train_drop:
                    m = _view(ry, lay.mask[l], (TN * D * H,))
                    xd = _view(ry, lay.xd[l], (TN * D * H,))
                    pkeep = 1.0 - a.p
                    scale = 1.0 / pkeep if pkeep > 0 else 0.0
                    ctx.compute(m, lambda i, stream=l + 1, pk=pkeep, sc=scale: K.select(
                        uniform01(seed, i, stream=stream).lt(C(pk, "float32")),
                        C(sc, dt), C(0, dt)), "rnn_dropout_mask")
                    yf = flat(yl)
                    ctx.compute(xd, lambda i, yf=yf, m=m: yf[i] * m[i], "rnn_dropout")
                    xin = _view(xd, 0, (TN, D * H))
                else:
                    xin = _view(yl, 0, (TN, D * H))
        if mask is not None:
            # the visible output is zero past each sequence's length
            ctx.compute(out, lambda t, n, k: K.select(_valid(mask, (t, n)), ylast[t, n, k],
                                                      C(0, dt)), "rnn_seq_output")

    @staticmethod
    def _lstm_step(ctx, a, g_t, hp, wh, bh, cell, t, tprev, c_init, hdst, m_t=None):
        N, GH = g_t.shape
        H = GH // 4
        ctx.gemm(hp, wh, g_t, trans_b=True, beta=1.0)
        # activations in place: sigmoid for i, f, o; tanh(x) = 2 sigmoid(2x) - 1 for g
        g3 = _view(g_t, 0, (N, 4, H))
        b2 = _view(bh, 0, (4, H))

        def fact(r, i):
            g_, b_ = r
            _, blk, k = i
            v = g_[i] + b_[blk, k]
            isg = blk.eq(C(2, "int64"))
            two, one = C(2, v.dtype), C(1, v.dtype)
            s = _sig(K.select(isg, two * v, v))
            return K.select(isg, two * s - one, s)

        emit_shifted(ctx, g3, [g3, b2], fact, "lstm_gates")
        c_t = _view(cell, t * N * H, (N, H))
        c_prev = _view(cell, tprev * N * H, (N, H)) if tprev is not None else c_init

        def fc(r, i):
            g_, cp = r[:2]
            n, k = i
            ig, fg, gg = g_[n, k], g_[n, k + C(H, "int64")], g_[n, k + C(2 * H, "int64")]
            c = _clip_cell(a, fg * cp[i] + ig * gg)
            return K.select(_valid(r[2], n), c, cp[i]) if len(r) > 2 else c

        seq = [m_t] if m_t is not None else []
        emit_shifted(ctx, c_t, [g_t, c_prev] + seq, fc, "lstm_cell")

        def fh(r, i):
            g_, c_ = r[:2]
            n, k = i
            h = g_[n, k + C(3 * H, "int64")] * _tanh(c_[i])
            return K.select(_valid(r[3], n), h, r[2][i]) if len(r) > 2 else h

        emit_shifted(ctx, hdst, [g_t, c_t] + ([hp, m_t] if m_t is not None else []), fh,
                     "lstm_h")

    @staticmethod
    def _gru_step(ctx, g_t, hp, wh, bh, gh_t, hdst, m_t=None):
        N, GH = g_t.shape
        H = GH // 3
        ctx.gemm(hp, wh, gh_t, trans_b=True, bias=bh, bias_axis="n")
        rz = _view(g_t, 0, (N, 2, H), (GH, H, 1))
        ghrz = _view(gh_t, 0, (N, 2, H), (GH, H, 1))
        emit_shifted(ctx, rz, [rz, ghrz], lambda r, i: _sig(r[0][i] + r[1][i]), "gru_rz")
        nn_ = _view(g_t, 2 * H, (N, H), (GH, 1))
        rr = _view(g_t, 0, (N, H), (GH, 1))
        ghn = _view(gh_t, 2 * H, (N, H), (GH, 1))
        emit_shifted(ctx, nn_, [nn_, rr, ghn],
                     lambda r, i: _tanh(r[0][i] + r[1][i] * r[2][i]), "gru_n")
        zz = _view(g_t, H, (N, H), (GH, 1))

        def fh(r, i):
            z, n_, h_ = r[:3]
            one = C(1, z[i].dtype)
            h = (one - z[i]) * n_[i] + z[i] * h_[i]
            return K.select(_valid(r[3], i[0]), h, h_[i]) if len(r) > 3 else h

        emit_shifted(ctx, hdst, [zz, nn_, hp] + ([m_t] if m_t is not None else []), fh,
                     "gru_h")

    # -- reference ------------------------------------------------------------------------------
    def reference(self, a, inputs, is_train=False):
        _check(a)
        x = inputs[0].astype(np.float64)
        w = inputs[1].astype(np.float64)
        h0 = inputs[2].astype(np.float64)
        c0 = inputs[3].astype(np.float64) if a.mode == "lstm" else None
        seq = inputs[_seq_len_index(a)] if a.use_sequence_length else None
        outs, hy, cy = rnn_forward_np(a, x, w, h0, c0, seq_len=seq)
        res = [outs.astype(inputs[0].dtype)]
        if a.state_outputs:
            res.append(hy.astype(inputs[0].dtype))
            if a.mode == "lstm":
                res.append(cy.astype(inputs[0].dtype))
        for shp in _Layout(a, *x.shape).shapes(a):
            res.append(np.zeros(shp, inputs[0].dtype))
        return res

    # -- gradient -------------------------------------------------------------------------------
    def gradient(self, node, ograds):
        a = node.parsed
        E = type(node.inputs[0])
        nvis = self.num_visible_outputs(a)
        ins = list(ograds[:nvis]) + list(node.inputs[:len(self.arguments(a))])
        nres = len(_Layout.names(a))
        nall = self.num_outputs(a)
        ins += [E(node, 0)] + [E(node, i) for i in range(nall - nres, nall)]
        attrs = {k: a[k] for k in _RNN_PARAMS.params}
        n_out = 4 if a.mode == "lstm" else 3
        grads = outputs_of("_backward_RNN", *ins, n=n_out, name=f"{node.name}_backward",
                           **attrs)
        # sequence_length is an integer count: no gradient
        return grads + ([None] if a.use_sequence_length else [])


# ---------------------------------------------------------------------------------------------
# backward (BPTT)
# ---------------------------------------------------------------------------------------------
@simple("_backward_RNN", fusion="opaque", differentiable=False, params=_RNN_PARAMS)
class BackwardRNN(OpDef):
    """Inputs: d(output) [, d(state_output) [, d(statecell_output)]], data, parameters,
    state [, state_cell], output, reserve. Outputs: d(data), d(parameters), d(state)
    [, d(state_cell)]."""

    uses_train_mode = True

    def arguments(self, a):
        names = ["ograd_output"]
        if a.state_outputs:
            names.append("ograd_state")
            if a.mode == "lstm":
                names.append("ograd_statecell")
        names += ["data", "parameters", "state"]
        if a.mode == "lstm":
            names.append("state_cell")
        if a.use_sequence_length:
            names.append("sequence_length")
        return names + ["output"] + _Layout.names(a)

    def outputs(self, a):
        return ["data_grad", "parameters_grad", "state_grad"] + \
            (["state_cell_grad"] if a.mode == "lstm" else [])

    def _nog(self, a):
        return 1 + (0 if not a.state_outputs else (2 if a.mode == "lstm" else 1))

    def infer_shape(self, a, s):
        k = self._nog(a)
        fwd = s[k:k + (4 if a.mode == "lstm" else 3)]
        return s, list(fwd)

    def infer_type(self, a, t):
        k = next((x for x in t if x is not None), None)
        ins = [k] * len(t)
        if a.use_sequence_length:
            # sequence_length keeps its own (possibly integer) dtype
            i = self._nog(a) + _seq_len_index(a)
            ins[i] = t[i] if t[i] is not None else k
        return ins, [k] * self.num_outputs(a)

    def lower(self, ctx):
        a = ctx.attrs
        _check(a)
        k = self._nog(a)
        dout = ctx.inputs[0]
        dhy = ctx.inputs[1] if a.state_outputs else None
        dcy = ctx.inputs[2] if a.state_outputs and a.mode == "lstm" else None
        x, w, h0 = ctx.inputs[k:k + 3]
        c0 = ctx.inputs[k + 3] if a.mode == "lstm" else None
        seq = ctx.inputs[k + _seq_len_index(a)] if a.use_sequence_length else None
        nres = len(_Layout.names(a))
        out = ctx.inputs[-nres - 1]
        ry, rg, rc, rgh = _reserves(a, ctx.inputs)
        dx, dw, dh0 = ctx.outputs[:3]
        dc0 = ctx.outputs[3] if a.mode == "lstm" else None
        T, N, I = x.shape
        lay = _Layout(a, T, N, I)
        L, D, H, G = lay.L, lay.D, lay.H, lay.G
        dt = x.dtype
        zero = C(0, dt)
        if T == 0 or N == 0:
            for o in ctx.outputs:
                if o.size:
                    fo = flat(o)
                    ctx.compute(fo, lambda i: zero, "rnn_zero_grad")
            return
        po = param_offsets(L, D, I, H, G)
        train_drop = ctx.is_train and a.p > 0 and L > 1
        TN = T * N
        DH = D * H
        # scratch shared by every (layer, direction): processed one after another
        dgate = ctx.temp((T, N, G * H), dt)
        dcell = ctx.temp((T, N, H), dt) if a.mode in ("lstm", "gru") else None
        dan = ctx.temp((T, N, H), dt) if a.mode == "gru" else None
        dhn = ctx.temp((N, H), dt)
        ones = ctx.temp((2, TN), dt)
        fo = flat(ones)
        ctx.compute(fo, lambda i: C(1, dt), "rnn_ones")
        dy_lower = {l: ctx.temp((T, N, DH), dt) for l in range(L - 1)}
        dy_l = dout
        mask = None
        if seq is not None:
            mask = _seq_mask(ctx, seq, T, N, dt)
            # the output is constant 0 past each length: its gradient does not flow back
            dy_l = ctx.temp((T, N, DH), dt)
            ctx.compute(dy_l, lambda t, n, j: K.select(_valid(mask, (t, n)), dout[t, n, j],
                                                       C(0, dt)), "rnn_seq_dout")
        ylast = _last_layer_y(a, ctx.inputs, out)
        for l in range(L - 1, -1, -1):
            yl = ylast if l == L - 1 else _view(ry, lay.y[l], (T, N, DH))
            if l == 0:
                xin = _view(x, 0, (TN, I))
            elif train_drop:
                xin = _view(ry, lay.xd[l - 1], (TN, DH))
            else:
                xin = _view(ry, lay.y[l - 1], (TN, DH))
            dxin = _view(dx, 0, (TN, I)) if l == 0 else _view(dy_lower[l - 1], 0, (TN, DH))
            for d in range(D):
                p = po[(l, d)]
                ins = p["in"]
                sidx = (l * D + d) * N * H
                env = _BEnv(
                    a=a, T=T, N=N, H=H, G=G, D=D, d=d, dt=dt,
                    wx=_view(w, p["wx"], (G * H, ins)), wh=_view(w, p["wh"], (G * H, H)),
                    dwx=_view(dw, p["wx"], (G * H, ins)), dwh=_view(dw, p["wh"], (G * H, H)),
                    dbx=_view(dw, p["bx"], (G * H,)), dbh=_view(dw, p["bh"], (G * H,)),
                    gates=_view(rg, lay.gates[(l, d)], (T, N, G * H)),
                    cell=_view(rc, lay.cell[(l, d)], (T, N, H)) if a.mode == "lstm"
                    else None,
                    gh=_view(rgh, lay.gh[(l, d)], (T, N, 3 * H)) if a.mode == "gru" else None,
                    yl=yl, dy=dy_l, xin=xin, dxin=dxin,
                    h_init=_view(h0, sidx, (N, H)),
                    c_init=_view(c0, sidx, (N, H)) if c0 is not None else None,
                    dhy=_view(dhy, sidx, (N, H)) if dhy is not None else None,
                    dcy=_view(dcy, sidx, (N, H)) if dcy is not None else None,
                    dh0=_view(dh0, sidx, (N, H)),
                    dc0=_view(dc0, sidx, (N, H)) if dc0 is not None else None,
                    dgate=dgate, dcell=dcell, dan=dan, dhn=dhn, ones=ones, mask=mask)
                if mask is not None and a.mode != "gru":
                    # the recurrent gradient is carried through skipped steps in dhn
                    hy_grad = env.dhy
                    if hy_grad is not None:
                        emit_shifted(ctx, dhn, [hy_grad], lambda r, i: r[0][i], "rnn_seq_dhy")
                    else:
                        emit_shifted(ctx, dhn, [], lambda r, i: zero, "rnn_seq_dhy")
                    env.dhy = dhn
                if a.mode == "lstm":
                    _lstm_backward(ctx, env)
                elif a.mode == "gru":
                    _gru_backward(ctx, env)
                else:
                    _rnn_backward(ctx, env)
            if l > 0:
                dprev = dy_lower[l - 1]
                if train_drop:
                    m = _view(ry, lay.mask[l - 1], (TN * DH,))
                    fd = flat(dprev)
                    ctx.compute(fd, lambda i, fd=fd, m=m: fd[i] * m[i], "rnn_ddropout")
                dy_l = dprev


class _BEnv:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def hslice(self, ref, t):
        """(N, H) slice of direction d at time t of a (T, N, D*H) tensor."""
        return _view(ref, t * self.N * self.D * self.H + self.d * self.H, (self.N, self.H),
                     (self.D * self.H, 1))

    def rows(self, ref, t, width):
        return _view(ref, t * self.N * width, (self.N, width))

    def mrow(self, t):
        """(N,) validity of step t (None without sequence lengths)."""
        return None if self.mask is None or t is None else _view(self.mask, t * self.N,
                                                                 (self.N,))

    def carry_dh(self, ctx, step, t) -> K.TensorRef:
        """Where the gemm dG_t W_h accumulates (beta=1 when carrying): with sequence
        lengths the recurrent gradient of a skipped step passes through unchanged, so the
        target first gets dhn on skipped rows and 0 on valid ones."""
        dst = self.dh0 if step == 0 else self.dhn
        m_t = self.mrow(t)
        if m_t is None:
            return dst
        zero = C(0, self.dt)
        emit_shifted(ctx, dst, [self.dhn, m_t], lambda r, i: K.select(
            _valid(r[1], i[0]), zero, r[0][i]), "rnn_seq_dcarry")
        return dst

    @property
    def order(self):
        return list(range(self.T)) if self.d == 0 else list(range(self.T - 1, -1, -1))


def _weight_grads(ctx, e, dg_x: list, dg_h: K.TensorRef) -> None:
    """dW_x = sum_t dGx^T x, dW_h = sum_t dGh^T h_prev, dX (+)= dGx W_x.

    ``dg_x``: (row offset into the gate dim, (T*N, rows) gradient view) pieces covering the
    G*H gate rows of W_x; ``dg_h``: (T, N, G*H) gradient of the recurrent pre-activations.
    """
    T, N, H, D, d = e.T, e.N, e.H, e.D, e.d
    TN = T * N
    GH = e.G * H
    ins = e.xin.shape[1]
    for off, piece in dg_x:
        rows = piece.shape[1]
        ctx.gemm(piece, e.xin, _view(e.dwx, off * ins, (rows, ins)), trans_a=True)
        wpart = _view(e.wx, off * ins, (rows, ins))
        beta = 1.0 if (d == 1 or off > 0) else 0.0
        ctx.gemm(piece, wpart, e.dxin, beta=beta)
    # recurrent weights: h_prev[t] is the layer output at the previously processed step
    dgh2 = _view(dg_h, 0, (TN, GH))
    if T > 1:
        if d == 0:
            dgs = _view(dgh2, N * GH, ((T - 1) * N, GH))
            hps = _view(e.yl, d * H, ((T - 1) * N, H), (D * H, 1))
            t0 = 0
        else:
            dgs = _view(dgh2, 0, ((T - 1) * N, GH))
            hps = _view(e.yl, N * D * H + d * H, ((T - 1) * N, H), (D * H, 1))
            t0 = T - 1
        ctx.gemm(dgs, hps, e.dwh, trans_a=True)
        ctx.gemm(_view(dgh2, t0 * N * GH, (N, GH)), e.h_init, e.dwh, trans_a=True, beta=1.0)
    else:
        ctx.gemm(_view(dgh2, 0, (N, GH)), e.h_init, e.dwh, trans_a=True)


def _lstm_backward(ctx, e) -> None:
    a, N, H, T = e.a, e.N, e.H, e.T
    GH = 4 * H
    I64 = "int64"
    order = e.order
    hk = [C(j * H, I64) for j in range(4)]
    for step in range(T - 1, -1, -1):
        t = order[step]
        first = step == T - 1          # first processed in backward
        tn = None if first else order[step + 1]
        tp = order[step - 1] if step else None
        g_t = e.rows(e.gates, t, GH)
        c_t = e.rows(e.cell, t, H)
        dy_t = e.hslice(e.dy, t)
        dc_t = e.rows(e.dcell, t, H)
        dhn = e.dhy if first else e.dhn   # recurrent gradient into h_t (None: zero)
        # dc_t = (dh * o * (1 - tanh(c)^2) + dc_{t+1} * f_{t+1}) * clip mask
        m_t, m_tn = e.mrow(t), e.mrow(tn)
        seq = e.mask is not None
        ins = [g_t, c_t, dy_t] + ([dhn] if dhn is not None else [])
        if first:
            ins += [e.dcy] if e.dcy is not None else []
        else:
            ins += [e.rows(e.dcell, tn, H), e.rows(e.gates, tn, GH)]
            ins += [m_tn] if seq else []
        ins += [m_t] if seq else []

        def fdc(r, i, first=first, has_dh=dhn is not None, has_dc=e.dcy is not None, seq=seq):
            g_, c_, dy_ = r[:3]
            rest = list(r[3:])
            valid = _valid(rest.pop(), i[0]) if seq else None
            n, k = i
            dh = dy_[i]
            if has_dh:
                dh = dh + rest.pop(0)[i]
            tc = _tanh(c_[i])
            one = C(1, tc.dtype)
            own = dh * g_[n, k + hk[3]] * (one - tc * tc)
            nxt = None
            if first:
                if has_dc:
                    nxt = rest.pop(0)[i]
            else:
                dcn, gn = rest[:2]
                nxt = dcn[i] * gn[n, k + hk[1]]
                if seq:   # a skipped next step carried c_t unchanged
                    nxt = K.select(_valid(rest[2], n), nxt, dcn[i])
            v = own if nxt is None else own + nxt
            m = _clip_mask(a, c_[i])
            v = v * m if m is not None else v
            if seq:   # a skipped step: c_t only reaches the loss through later steps
                v = K.select(valid, v, nxt if nxt is not None else C(0, v.dtype))
            return v

        emit_shifted(ctx, dc_t, ins, fdc, "lstm_dcell")
        # gate gradients (pre-activation), one kernel over (N, 4, H)
        c_prev = e.rows(e.cell, tp, H) if tp is not None else e.c_init
        dg3 = _view(e.dgate, t * N * GH, (N, 4, H))
        ins = [g_t, c_t, dc_t, c_prev, dy_t] + ([dhn] if dhn is not None else [])
        ins += [m_t] if seq else []

        def fdg(r, i, has_dh=dhn is not None, seq=seq):
            g_, c_, dc_, cp_, dy_ = r[:5]
            n, blk, k = i
            ig, fg = g_[n, k], g_[n, k + hk[1]]
            gg, og = g_[n, k + hk[2]], g_[n, k + hk[3]]
            dc = dc_[n, k]
            one = C(1, ig.dtype)
            dh = dy_[n, k]
            if has_dh:
                dh = dh + r[5][n, k]
            v_i = dc * gg * ig * (one - ig)
            v_f = dc * cp_[n, k] * fg * (one - fg)
            v_g = dc * ig * (one - gg * gg)
            v_o = dh * _tanh(c_[n, k]) * og * (one - og)
            v = K.select(blk.eq(C(0, I64)), v_i, K.select(blk.eq(C(1, I64)), v_f, K.select(
                blk.eq(C(2, I64)), v_g, v_o)))
            return K.select(_valid(r[-1], n), v, C(0, v.dtype)) if seq else v

        emit_shifted(ctx, dg3, ins, fdg, "lstm_dgates")
        dg_t = _view(e.dgate, t * N * GH, (N, GH))
        ctx.gemm(dg_t, e.wh, e.carry_dh(ctx, step, t), beta=1.0 if seq else 0.0)
        if step == 0:
            # d c_init = dc * f (dc itself when the step was skipped)
            def fdc0(r, i):
                v = r[0][i] * r[1][i[0], i[1] + hk[1]]
                return K.select(_valid(r[2], i[0]), v, r[0][i]) if len(r) > 2 else v

            emit_shifted(ctx, e.dc0, [dc_t, g_t] + ([m_t] if seq else []), fdc0, "lstm_dc0")
    dg2 = _view(e.dgate, 0, (T * N, GH))
    _weight_grads(ctx, e, [(0, dg2)], e.dgate)
    # d b_x = d b_h = column sums of dG: one gemm with a (2, T*N) matrix of ones
    ctx.gemm(e.ones, dg2, _view(e.dbx, 0, (2, GH)))


def _gru_backward(ctx, e) -> None:
    N, H, T = e.N, e.H, e.T
    GH = 3 * H
    I64 = "int64"
    order = e.order
    for step in range(T - 1, -1, -1):
        t = order[step]
        first = step == T - 1
        tn = None if first else order[step + 1]
        tp = order[step - 1] if step else None
        seq = e.mask is not None
        m_t = [e.mrow(t)] if seq else []
        g_t = e.rows(e.gates, t, GH)
        dh_t = e.rows(e.dcell, t, H)       # total gradient into h_t
        dy_t = e.hslice(e.dy, t)
        if first:
            ins = [dy_t] + ([e.dhy] if e.dhy is not None else [])
            emit_shifted(ctx, dh_t, ins,
                         lambda r, i: r[0][i] + r[1][i] if len(r) > 1 else r[0][i], "gru_dh")
        else:
            ins = [dy_t, e.dhn, e.rows(e.dcell, tn, H), e.rows(e.gates, tn, GH)]
            ins += [e.mrow(tn)] if seq else []

            def fdh(r, i):
                z = r[3][i[0], i[1] + C(H, I64)]
                if len(r) > 4:   # a skipped next step carried h_t unchanged
                    z = K.select(_valid(r[4], i[0]), z, C(1, z.dtype))
                return r[0][i] + r[1][i] + r[2][i] * z

            emit_shifted(ctx, dh_t, ins, fdh, "gru_dh")
        hp = e.hslice(e.yl, tp) if tp is not None else e.h_init
        gh_t = e.rows(e.gh, t, GH)
        dg3 = _view(e.dgate, t * N * GH, (N, 3, H))

        def fdg(r, i):
            g_, gh_, dh_, hp_ = r[:4]
            n, blk, k = i
            rg, zg, ng = g_[n, k], g_[n, k + C(H, I64)], g_[n, k + C(2 * H, I64)]
            dh = dh_[n, k]
            one = C(1, rg.dtype)
            da_n = dh * (one - zg) * (one - ng * ng)
            v_r = da_n * gh_[n, k + C(2 * H, I64)] * rg * (one - rg)
            v_z = dh * (hp_[n, k] - ng) * zg * (one - zg)
            v_n = da_n * rg
            v = K.select(blk.eq(C(0, I64)), v_r, K.select(blk.eq(C(1, I64)), v_z, v_n))
            return K.select(_valid(r[4], n), v, C(0, v.dtype)) if len(r) > 4 else v

        emit_shifted(ctx, dg3, [g_t, gh_t, dh_t, hp] + m_t, fdg, "gru_dgates")
        dan_t = e.rows(e.dan, t, H)

        def fdan(r, i):
            g_, dh_ = r[:2]
            n, k = i
            zg, ng = g_[n, k + C(H, I64)], g_[n, k + C(2 * H, I64)]
            one = C(1, zg.dtype)
            v = dh_[i] * (one - zg) * (one - ng * ng)
            return K.select(_valid(r[2], n), v, C(0, v.dtype)) if len(r) > 2 else v

        emit_shifted(ctx, dan_t, [g_t, dh_t] + m_t, fdan, "gru_dan")
        dg_t = _view(e.dgate, t * N * GH, (N, GH))
        ctx.gemm(dg_t, e.wh, e.dhn)
        if step == 0:
            def fdh0(r, i):
                z = r[2][i[0], i[1] + C(H, I64)]
                if len(r) > 3:   # a skipped step: h_init reached h_t unchanged
                    z = K.select(_valid(r[3], i[0]), z, C(1, z.dtype))
                return r[0][i] + r[1][i] * z

            emit_shifted(ctx, e.dh0, [e.dhn, dh_t, g_t] + m_t, fdh0, "gru_dh0")
    TN = T * N
    dgh2 = _view(e.dgate, 0, (TN, GH))
    rz = _view(e.dgate, 0, (TN, 2 * H), (GH, 1))
    dan2 = _view(e.dan, 0, (TN, H))
    _weight_grads(ctx, e, [(0, rz), (2 * H, dan2)], e.dgate)
    one = _view(e.ones, 0, (1, TN))
    ctx.gemm(one, rz, _view(e.dbx, 0, (1, 2 * H)))
    ctx.gemm(one, dan2, _view(e.dbx, 2 * H, (1, H)))
    ctx.gemm(one, dgh2, _view(e.dbh, 0, (1, GH)))


def _rnn_backward(ctx, e) -> None:
    a, N, H, T = e.a, e.N, e.H, e.T
    order = e.order
    for step in range(T - 1, -1, -1):
        t = order[step]
        first = step == T - 1
        dhn = e.dhy if first else e.dhn
        dg_t = e.rows(e.dgate, t, H)
        seq = e.mask is not None
        ins = [e.hslice(e.yl, t), e.hslice(e.dy, t)] + ([dhn] if dhn is not None else [])
        ins += [e.mrow(t)] if seq else []

        def f(r, i, act=a.mode, seq=seq):
            r = list(r)
            m_ = r.pop() if seq else None
            h_, dy_ = r[:2]
            dh = dy_[i] + r[2][i] if len(r) > 2 else dy_[i]
            hv = h_[i]
            if act == "rnn_tanh":
                v = dh * (C(1, hv.dtype) - hv * hv)
            else:
                v = K.select(hv.gt(C(0, hv.dtype)), dh, C(0, hv.dtype))
            return K.select(_valid(m_, i[0]), v, C(0, v.dtype)) if seq else v

        emit_shifted(ctx, dg_t, ins, f, "rnn_dgate")
        ctx.gemm(dg_t, e.wh, e.carry_dh(ctx, step, t), beta=1.0 if seq else 0.0)
    dg2 = _view(e.dgate, 0, (T * N, H))
    _weight_grads(ctx, e, [(0, dg2)], e.dgate)
    ctx.gemm(e.ones, dg2, _view(e.dbx, 0, (2, H)))


# ---------------------------------------------------------------------------------------------
# numpy reference (the tests' oracle)
# ---------------------------------------------------------------------------------------------
def _np_sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def seq_lengths_np(seq_len, T: int) -> np.ndarray:
    """Sequence lengths as the operator uses them: truncated, clamped to [1, T]."""
    v = np.asarray(seq_len)
    if v.dtype.kind == "f":
        v = np.clip(v.astype(np.float64), 1, T)
    return np.clip(v.astype(np.int64), 1, T)


def rnn_forward_np(a, x, w, h0, c0=None, dropout_masks=None, seq_len=None):
    """MXNet's RNN forward in float64 numpy. Returns (output, hy, cy). With ``seq_len``
    only the first length steps of each sequence run (the backward direction starts at its
    sequence's last step), outputs past it are 0 and the states are those at its end."""
    T, N, I = x.shape
    lens = seq_lengths_np(seq_len, T) if seq_len is not None and T else np.full(N, T)
    L, H = a.num_layers, a.state_size
    D = 2 if a.bidirectional else 1
    G = _GATES[a.mode]
    po = param_offsets(L, D, I, H, G)
    hy = np.zeros((L * D, N, H))
    cy = np.zeros((L * D, N, H))
    lo, hi = a.lstm_state_clip_min, a.lstm_state_clip_max
    inp = x
    for l in range(L):
        ins = inp.shape[2]
        y = np.zeros((T, N, D * H))
        for d in range(D):
            p = po[(l, d)]
            wx = w[p["wx"]:p["wx"] + G * H * ins].reshape(G * H, ins)
            wh = w[p["wh"]:p["wh"] + G * H * H].reshape(G * H, H)
            bx = w[p["bx"]:p["bx"] + G * H]
            bh = w[p["bh"]:p["bh"] + G * H]
            h = h0[l * D + d].copy()
            c = c0[l * D + d].copy() if c0 is not None else None
            ts = range(T) if d == 0 else range(T - 1, -1, -1)
            for t in ts:
                valid = (t < lens)[:, None]
                h_old, c_old = h, c
                gx = inp[t] @ wx.T + bx
                gh = h @ wh.T + bh
                if a.mode == "lstm":
                    gs = gx + gh
                    i_, f_ = _np_sig(gs[:, :H]), _np_sig(gs[:, H:2 * H])
                    g_, o_ = np.tanh(gs[:, 2 * H:3 * H]), _np_sig(gs[:, 3 * H:])
                    c = f_ * c + i_ * g_
                    if lo is not None:
                        c = np.maximum(c, lo)
                    if hi is not None:
                        c = np.minimum(c, hi)
                    h = o_ * np.tanh(c)
                elif a.mode == "gru":
                    r = _np_sig(gx[:, :H] + gh[:, :H])
                    z = _np_sig(gx[:, H:2 * H] + gh[:, H:2 * H])
                    n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
                    h = (1 - z) * n + z * h
                elif a.mode == "rnn_tanh":
                    h = np.tanh(gx + gh)
                else:
                    h = np.maximum(gx + gh, 0)
                y[t, :, d * H:(d + 1) * H] = np.where(valid, h, 0.0)
                h = np.where(valid, h, h_old)
                if c is not None:
                    c = np.where(valid, c, c_old)
            hy[l * D + d] = h
            if c is not None:
                cy[l * D + d] = c
        inp = y
        if dropout_masks is not None and l < L - 1:
            inp = y * dropout_masks[l]
    return y, hy, cy


# ---------------------------------------------------------------------------------------------
# _rnn_param_concat
# ---------------------------------------------------------------------------------------------
_CONCAT_PARAMS = ParamSpec(num_args=Param(parse_int), dim=Param(parse_int, 1))


def _concat_axis(a, ndim):
    return norm_axis(a.dim, ndim, "_rnn_param_concat dim")


@simple("_rnn_param_concat", aliases=("_npi_rnn_param_concat",), fusion="injective",
        params=_CONCAT_PARAMS)
class RNNParamConcat(OpDef):
    """Concat with MXNet's RNNParamConcatShape: one or two inputs of unknown size along
    ``dim`` are inferred from the (known) output, as Gluon's RNN layers need."""

    def arguments(self, a):
        return [f"arg{i}" for i in range(a.num_args)]

    def num_inputs(self, a):
        return a.num_args

    def infer_shape(self, a, s):
        if a.num_args < 1:
            raise OpError("_rnn_param_concat: num_args must be >= 1")
        known = [x for x in s if x is not None]
        ndim = len(known[0]) if known else None
        axis = None
        if ndim is not None:
            if ndim == 0:
                raise ShapeError("_rnn_param_concat: zero-dimensional arrays cannot be "
                                 "concatenated")
            axis = _concat_axis(a, ndim)
        # template shape (everything but the axis)
        tmpl = None
        for x in known:
            if len(x) != ndim:
                raise ShapeError(f"_rnn_param_concat: inputs must have the same rank, got {s}")
            t = tuple(v for i, v in enumerate(x) if i != axis)
            if tmpl is not None and t != tmpl:
                raise ShapeError(f"_rnn_param_concat: incompatible input shapes {s}")
            tmpl = t
        unknown = [i for i, x in enumerate(s) if x is None]
        if not unknown:
            o = list(known[0])
            o[axis] = sum(x[axis] for x in known)
            return list(s), [tuple(o)]
        return list(s), [None]

    def infer_shape_backward(self, a, s, outs):
        out = outs[0]
        unknown = [i for i, x in enumerate(s) if x is None]
        if out is None or len(unknown) != 1:
            return s
        axis = _concat_axis(a, len(out))
        rest = out[axis] - sum(x[axis] for x in s if x is not None)
        if rest < 0:
            raise ShapeError(f"_rnn_param_concat: inputs {s} exceed the output {out}")
        shape = list(out)
        shape[axis] = rest
        s = list(s)
        s[unknown[0]] = tuple(shape)
        return s

    def infer_type(self, a, t):
        k = next((x for x in t if x is not None), None)
        return [k] * len(t), [k]

    def lower(self, ctx):
        o = ctx.outputs[0]
        axis = _concat_axis(ctx.attrs, o.ndim)
        outer = math.prod(o.shape[:axis])
        inner = math.prod(o.shape[axis + 1:])
        tot = o.shape[axis]
        pos = 0
        for x in ctx.inputs:
            k = x.shape[axis]
            if x.size:
                src = x.reshape((outer, k, inner))
                dst = K.TensorRef(o.buf, (outer, k, inner), (tot * inner, inner, 1),
                                  o.offset + pos * inner)
                ctx.compute(dst, lambda i, j, m, src=src: src[i, j, m], "rnn_param_concat")
            pos += k

    def reference(self, a, inputs, is_train=False):
        return [np.concatenate(inputs, axis=_concat_axis(a, inputs[0].ndim))]

    def gradient(self, node, ograds):
        a = node.parsed
        return outputs_of("_backward_rnn_param_concat", ograds[0], *node.inputs,
                          n=a.num_args, name=f"{node.name}_backward", num_args=a.num_args,
                          dim=a.dim)


@simple("_backward_rnn_param_concat", fusion="injective", differentiable=False,
        params=_CONCAT_PARAMS)
class BackwardRNNParamConcat(OpDef):
    """Inputs: ograd, then the forward inputs (for their shapes); outputs: one slice each."""

    def arguments(self, a):
        return ["ograd"] + [f"arg{i}" for i in range(a.num_args)]

    def outputs(self, a):
        return [f"arg{i}_grad" for i in range(a.num_args)]

    def num_inputs(self, a):
        return a.num_args + 1

    def infer_shape(self, a, s):
        return s, list(s[1:])

    def infer_type(self, a, t):
        return t, [t[0]] * a.num_args

    def lower(self, ctx):
        og = ctx.inputs[0]
        axis = _concat_axis(ctx.attrs, og.ndim)
        outer = math.prod(og.shape[:axis])
        inner = math.prod(og.shape[axis + 1:])
        tot = og.shape[axis]
        pos = 0
        for o in ctx.outputs:
            k = o.shape[axis]
            if o.size:
                src = K.TensorRef(og.buf, (outer, k, inner), (tot * inner, inner, 1),
                                  og.offset + pos * inner)
                dst = o.reshape((outer, k, inner))
                ctx.compute(dst, lambda i, j, m, src=src: src[i, j, m], "drnn_param_concat")
            pos += k
