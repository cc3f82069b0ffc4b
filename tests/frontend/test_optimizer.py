"""mx.optimizer and mx.lr_scheduler: every optimizer's steps against numpy implementations of
MXNet's formulas (weight decay, rescale_grad, clip_gradient, lr schedules, multipliers), the
weight-decay-multiplier rule of symbolic training, Updater state save/load, schedules at chosen
steps, create() errors, and one real MXNet 1.9.1 SGD step per reference case (Module and gluon
Trainer semantics)."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from mxc.base import MXNetError
from mxc.frontend import lr_scheduler as lrs
from mxc.frontend import ndarray as nd
from mxc.frontend import optimizer as opt
from mxc.frontend import symbol as sym

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
RNG = np.random.default_rng(5)


# ---------------------------------------------------------------------------------------------
# numpy implementations of MXNet's update rules (float64)
# ---------------------------------------------------------------------------------------------
def _clip(x, c):
    return x if c is None else np.clip(x, -c, c)


class NumpyOpt:
    """One parameter's state and MXNet's update rule for optimizer ``name``; ``step`` takes the
    learning rate and weight decay MXNet would use for this update and the update count t."""

    def __init__(self, name, kw, shape):
        self.name, self.kw = name, kw
        z = lambda: np.zeros(shape)
        self.s = {"mom": z(), "m": z(), "v": z(), "h": z(), "acc_g": z(), "acc_d": z(),
                  "n": z(), "gs": z(), "delta": z(), "z": z()}

    def step(self, w, g, lr, wd, t, rg, cg):
        name = self.name
        if name == "adadelta":  # NDArray arithmetic, python float scalars
            return self._adadelta(w, g, wd, rg, cg)
        # the fused ops read their parameters as C floats (MXNet's float fields)
        f = lambda v: None if v is None else float(np.float32(v))
        k = {key: (f(v) if isinstance(v, float) else v) for key, v in self.kw.items()}
        s = self.s
        if name == "adam":  # the bias correction is folded into lr in python (double)
            b1, b2 = self.kw.get("beta1", 0.9), self.kw.get("beta2", 0.999)
            lr = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        lr, wd, rg, cg = f(lr), f(wd), f(rg), f(cg)
        if name in ("sgd", "nag"):
            m = k.get("momentum", 0.0)
            gc = _clip(rg * g, cg)
            if m == 0:
                return w - lr * (gc + wd * w)
            if name == "sgd":
                s["mom"] = m * s["mom"] - lr * (gc + wd * w)
                return w + s["mom"]
            mom1 = m * s["mom"]
            w_n = w - mom1 + (m + 1) * (mom1 - lr * (gc + wd * w))
            s["mom"] = mom1 - lr * (gc + wd * w_n)
            return w_n
        if name == "adam":
            b1, b2, eps = f(k.get("beta1", 0.9)), f(k.get("beta2", 0.999)), \
                f(k.get("epsilon", 1e-8))
            gr = _clip(rg * g + wd * w, cg)
            s["m"] = b1 * s["m"] + (1 - b1) * gr
            s["v"] = b2 * s["v"] + (1 - b2) * gr * gr
            return w - lr * s["m"] / (np.sqrt(s["v"]) + eps)
        if name == "adagrad":
            gr = _clip(rg * g, cg)
            s["h"] = s["h"] + gr * gr
            return w + (gr / np.sqrt(s["h"] + f(k.get("eps", 1e-7))) + w * wd) * -lr
        if name == "rmsprop":
            g1, eps = f(k.get("gamma1", 0.9)), f(k.get("epsilon", 1e-8))
            gr = _clip(rg * g + wd * w, cg)
            s["n"] = (1 - g1) * gr * gr + g1 * s["n"]
            if k.get("centered"):
                g2 = f(k.get("gamma2", 0.9))
                s["gs"] = (1 - g1) * gr + g1 * s["gs"]
                s["delta"] = g2 * s["delta"] - lr * gr / np.sqrt(s["n"] - s["gs"] ** 2 + eps)
                w_n = w + s["delta"]
            else:
                w_n = w - lr * gr / np.sqrt(s["n"] + eps)
            return _clip(w_n, k.get("clip_weights"))
        if name == "ftrl":
            l1, beta = f(k.get("lamda1", 0.01)), f(k.get("beta", 1.0))
            gr = _clip(rg * g, cg)
            s["z"] = s["z"] + gr - (np.sqrt(s["n"] + gr * gr) - np.sqrt(s["n"])) * w / lr
            s["n"] = s["n"] + gr * gr
            z_ = s["z"]
            return (np.sign(z_) * l1 - z_) / ((beta + np.sqrt(s["n"])) / lr + wd) * \
                (np.abs(z_) > l1)
        if name in ("signum", "signsgd"):
            m = 0.0 if name == "signsgd" else f(k.get("momentum", 0.9))
            if m == 0:
                return (1 - lr * wd) * w - lr * np.sign(g)
            s["mom"] = m * s["mom"] - (1 - m) * (wd * w + _clip(rg * g, cg))
            return (1 - lr * f(k.get("wd_lh", 0.0))) * w + lr * np.sign(s["mom"])
        if name == "lamb":
            b1, b2, eps = f(k.get("beta1", 0.9)), f(k.get("beta2", 0.999)), \
                f(k.get("epsilon", 1e-6))
            gr = _clip(rg * g, cg)
            s["m"] = b1 * s["m"] + (1 - b1) * gr
            s["v"] = b2 * s["v"] + (1 - b2) * gr * gr
            if k.get("bias_correction", True):
                mh, vh = s["m"] / (1 - f(b1 ** t)), s["v"] / (1 - f(b2 ** t))
            else:
                mh, vh = s["m"], s["v"]
            d = mh / (np.sqrt(vh) + eps) + wd * w
            r1, r2 = np.linalg.norm(w), np.linalg.norm(d)
            if k.get("lower_bound"):
                r1 = max(r1, k["lower_bound"])
            if k.get("upper_bound"):
                r1 = min(r1, k["upper_bound"])
            ratio = 1.0 if (r1 == 0 or r2 == 0) else r1 / r2
            return w - lr * ratio * d
        raise AssertionError(name)

    def _adadelta(self, w, g, wd, rg, cg):
        k, s = self.kw, self.s
        rho, eps = k.get("rho", 0.9), k.get("epsilon", 1e-5)
        gr = _clip(rg * g, cg)
        s["acc_g"] = rho * s["acc_g"] + (1 - rho) * gr * gr
        d = np.sqrt(s["acc_d"] + eps) / np.sqrt(s["acc_g"] + eps) * gr
        s["acc_d"] = rho * s["acc_d"] + (1 - rho) * d * d
        return w - (d + wd * w)


# name, kwargs, base learning rate (None: the optimizer's default), clip_gradient
OPTIMIZERS = [
    ("sgd", {}, 0.1, 0.8),
    ("sgd", {"momentum": 0.9}, 0.1, 0.8),
    ("sgd", {"momentum": 0.9, "lazy_update": False}, 0.1, None),
    ("nag", {"momentum": 0.9}, 0.1, 0.8),
    ("nag", {}, 0.1, None),
    ("adam", {}, 0.01, 0.8),
    ("adam", {"beta1": 0.8, "beta2": 0.99, "epsilon": 1e-6}, 0.01, None),
    ("adagrad", {"eps": 1e-6}, 0.1, 0.8),
    ("adadelta", {"rho": 0.8, "epsilon": 1e-4}, None, 0.8),
    ("rmsprop", {}, 0.01, 0.8),
    ("rmsprop", {"gamma1": 0.8, "clip_weights": 0.9}, 0.01, None),
    ("rmsprop", {"centered": True, "gamma1": 0.8, "gamma2": 0.7}, 0.01, 0.8),
    ("rmsprop", {"centered": True, "clip_weights": 0.9}, 0.01, None),
    ("ftrl", {"lamda1": 0.05, "beta": 0.5}, 0.1, 0.8),
    ("ftrl", {}, 0.1, None),
    ("signum", {"momentum": 0.9, "wd_lh": 0.05}, 0.01, 0.8),
    ("signum", {"momentum": 0.0}, 0.01, None),
    ("signsgd", {}, 0.01, None),
    ("lamb", {}, 0.01, 0.8),
    ("lamb", {"bias_correction": False, "lower_bound": 0.5, "upper_bound": 2.0}, 0.01, None),
]
TOL = {np.float32: (2e-5, 2e-6), np.float64: (1e-6, 1e-8)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", OPTIMIZERS, ids=lambda c: f"{c[0]}-{sorted(c[1])}-{c[3]}")
def test_optimizer_steps_match_mxnet_formulas(case, dtype):
    """Four steps on two parameters through an Updater, with weight decay, rescale_grad,
    clip_gradient and a FactorScheduler (lr halves after 2 updates), against numpy."""
    name, kw, lr, cg = case
    wd, rg = 0.01, 0.5
    sched = lrs.FactorScheduler(step=2, factor=0.5, base_lr=lr if lr is not None else 0.01)
    args = dict(kw, wd=wd, rescale_grad=rg, clip_gradient=cg, lr_scheduler=sched)
    if lr is not None:
        args["learning_rate"] = lr
    o = opt.create(name, **args)
    upd = opt.get_updater(o)
    shapes = [(7, 5), (9,)]
    ws = [RNG.uniform(-1, 1, s) for s in shapes]
    arrs = [nd.array(w, dtype=dtype) for w in ws]
    refs = [NumpyOpt(name, kw, s) for s in shapes]
    base = lr if lr is not None else 0.01
    rtol, atol = TOL[dtype]
    for t in range(1, 5):
        lr_t = base * (0.5 if t > 2 else 1.0)
        for i in range(2):
            g = RNG.uniform(-2, 2, shapes[i]).astype(dtype)
            ga = nd.array(g, dtype=dtype)
            upd(i, ga, arrs[i])
            ws[i] = refs[i].step(ws[i], g.astype(np.float64), lr_t, wd, t, rg, cg)
            np.testing.assert_allclose(arrs[i].asnumpy(), ws[i], rtol=rtol * t, atol=atol * t,
                                       err_msg=f"{name} {kw} param {i} step {t}")
            assert arrs[i].dtype == dtype
        assert o.num_update == t
        if lr is not None:
            assert o.learning_rate == pytest.approx(lr_t)


def test_defaults_and_default_learning_rates():
    assert opt.create("sgd").learning_rate == 0.01
    assert opt.create("adam").learning_rate == 0.001
    assert opt.create("rmsprop").learning_rate == 0.001
    assert opt.create("ftrl").learning_rate == 0.1
    assert opt.create("lamb").learning_rate == 0.001
    a = opt.create("Adam")
    assert (a.beta1, a.beta2, a.epsilon) == (0.9, 0.999, 1e-8)
    r = opt.create("rmsprop")
    assert (r.gamma1, r.gamma2, r.epsilon, r.centered) == (0.9, 0.9, 1e-8, False)
    s = opt.create("signum")
    assert (s.momentum, s.wd_lh, s.learning_rate) == (0.9, 0.0, 0.01)
    assert opt.create("adagrad").float_stable_eps == 1e-7
    d = opt.create("adadelta")
    assert (d.rho, d.epsilon) == (0.9, 1e-5)
    assert isinstance(opt.create("SGD", momentum=0.9), opt.SGD)
    o = opt.create("sgd", learning_rate=0.5)
    o.set_learning_rate(0.2)
    assert o.learning_rate == 0.2
    o = opt.create("sgd", lr_scheduler=lrs.FactorScheduler(step=1, base_lr=0.3))
    assert o.learning_rate == 0.3
    with pytest.raises(UserWarning):
        o.set_learning_rate(0.1)
    with pytest.raises(DeprecationWarning):
        o.set_lr_scale({})


def test_learning_rate_overrides_scheduler_base_lr(capsys):
    s = lrs.FactorScheduler(step=1, factor=0.5, base_lr=1.0)
    o = opt.create("sgd", learning_rate=0.4, lr_scheduler=s)
    assert "overwritten" in capsys.readouterr().out
    assert s.base_lr == 0.4 and o.learning_rate == 0.4
    # Poly/Cosine decay from their construction-time base_lr (MXNet's behaviour)
    c = lrs.CosineScheduler(max_update=10, base_lr=1.0)
    o = opt.create("sgd", learning_rate=0.4, lr_scheduler=c)
    o.num_update = 5
    assert o.learning_rate == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# multipliers and the weight decay rule
# ---------------------------------------------------------------------------------------------
def test_wd_mult_rule_with_param_idx2name():
    names = {0: "fc1_weight", 1: "fc1_bias", 2: "bn_gamma", 3: "bn_beta", 4: "bn_moving_mean",
             5: "embed_weight"}
    o = opt.create("sgd", wd=0.1, param_idx2name=names)
    assert [o._get_wd(i) for i in range(6)] == [0.1, 0.0, 0.1, 0.0, 0.0, 0.1]
    assert o.wd_mult == {"fc1_bias": 0.0, "bn_beta": 0.0, "bn_moving_mean": 0.0}
    # unknown index: no multiplier
    assert o._get_wd(17) == 0.1
    # without names every parameter decays (gluon-like)
    o = opt.create("sgd", wd=0.1)
    assert [o._get_wd(i) for i in range(3)] == [0.1] * 3
    # explicit multipliers by name or index override the rule
    o = opt.create("sgd", wd=0.1, param_idx2name=names)
    o.set_wd_mult({"fc1_bias": 0.5, 0: 2.0})
    assert o._get_wd(1) == pytest.approx(0.05) and o._get_wd(0) == pytest.approx(0.2)
    assert o._get_wd(3) == 0.0
    o.set_lr_mult({"fc1_weight": 0.1, 3: 3.0})
    assert o._get_lr(0) == pytest.approx(0.001) and o._get_lr(3) == pytest.approx(0.03)
    assert o._get_lr(1) == 0.01


def test_symbol_attribute_multipliers():
    data = sym.Variable("data")
    w = sym.Variable("fc_weight", lr_mult=0.5, wd_mult=3.0)
    b = sym.Variable("fc_bias", wd_mult=2.0)
    net = sym.FullyConnected(data, weight=w, bias=b, num_hidden=4, name="fc")
    net = sym.FullyConnected(net, num_hidden=2, name="out")
    names = [n for n in net.list_arguments() if n != "data"]
    idx2name = dict(enumerate(names))
    o = opt.create("sgd", learning_rate=0.1, wd=0.01, sym=net, param_idx2name=idx2name)
    lr = {n: o._get_lr(i) for i, n in idx2name.items()}
    wd = {n: o._get_wd(i) for i, n in idx2name.items()}
    assert lr == pytest.approx({"fc_weight": 0.05, "fc_bias": 0.1, "out_weight": 0.1,
                                "out_bias": 0.1})
    # __wd_mult__ overrides the name rule (fc_bias would be 0); out_bias keeps the rule
    assert wd == pytest.approx({"fc_weight": 0.03, "fc_bias": 0.02, "out_weight": 0.01,
                                "out_bias": 0.0})


def test_param_dict_multipliers_take_precedence():
    class P:
        def __init__(self, lr_mult, wd_mult):
            self.lr_mult, self.wd_mult = lr_mult, wd_mult

    o = opt.create("sgd", learning_rate=0.1, wd=0.01, param_idx2name={0: "a_bias"},
                   param_dict={0: P(2.0, 3.0), 1: P(1.0, 1.0)})
    assert o._get_lr(0) == pytest.approx(0.2) and o._get_wd(0) == pytest.approx(0.03)
    # pickling drops param_dict (the trainer sets it again)
    o2 = pickle.loads(pickle.dumps(o))
    assert o2.param_dict == {} and o2.lr == 0.1 and o2.idx2name == {0: "a_bias"}


def test_num_update_counts_per_index_and_begin_num_update():
    o = opt.create("sgd", learning_rate=0.1, begin_num_update=10,
                   lr_scheduler=lrs.FactorScheduler(step=11, factor=0.5, base_lr=0.1))
    u = opt.get_updater(o)
    w = [nd.zeros((2,)) for _ in range(3)]
    g = nd.ones((2,))
    u(0, g, w[0])
    assert o.num_update == 11 and o._index_update_count == {0: 11}
    u([0, 1], [g, g], [w[0], w[1]])
    assert o.num_update == 12 and o._index_update_count == {0: 12, 1: 11}
    assert o.learning_rate == pytest.approx(0.05)
    # the last update (index 1, num_update 12 > 21? no: 12 > 11) used the halved rate
    np.testing.assert_allclose(w[1].asnumpy(), [-0.05, -0.05], rtol=1e-6)
    np.testing.assert_allclose(w[0].asnumpy(), [-0.15, -0.15], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# special cases of individual optimizers
# ---------------------------------------------------------------------------------------------
def test_adadelta_scales_the_gradient_in_place():
    o = opt.create("adadelta", rescale_grad=0.5)
    w, g = nd.ones((3,)), nd.array([2.0, 4.0, -2.0])
    o.update(0, w, g, o.create_state(0, w))
    np.testing.assert_allclose(g.asnumpy(), [1.0, 2.0, -1.0])


def test_test_optimizer():
    o = opt.create("test", rescale_grad=2.0)
    w, g = nd.array([1.0, 2.0]), nd.array([0.5, -1.0])
    st = o.create_state(0, w)
    o.update(0, w, g, st)
    np.testing.assert_allclose(w.asnumpy(), [2.0, 0.0])
    np.testing.assert_allclose(st.asnumpy(), [2.0, 0.0])


def test_states_are_fused_op_states():
    o = opt.create("adam", learning_rate=0.1)
    w = nd.ones((4,), dtype="float64")
    mean, var = o.create_state(0, w)
    assert mean.dtype == np.float64 and var.shape == (4,)
    assert opt.create("sgd").create_state(0, w) is None
    assert opt.create("sgd", momentum=0.9).create_state(0, w).dtype == np.float64
    assert len(opt.create("rmsprop", centered=True).create_state(0, w)) == 3
    assert len(opt.create("rmsprop").create_state(0, w)) == 1


@pytest.mark.parametrize("name,kw", [("sgd", {"momentum": 0.9}), ("sgd", {}),
                                     ("nag", {"momentum": 0.9}), ("adam", {})])
def test_multi_precision_float16(name, kw):
    """float16 weights with multi_precision: float32 master weights, float16 copies."""
    o = opt.create(name, learning_rate=0.1, wd=0.01, rescale_grad=0.5, multi_precision=True,
                   **kw)
    ref = opt.create(name, learning_rate=0.1, wd=0.01, rescale_grad=0.5, **kw)
    u, ur = opt.get_updater(o), opt.get_updater(ref)
    w0 = RNG.uniform(-1, 1, (6, 3)).astype(np.float16)
    w16, w32 = nd.array(w0, dtype="float16"), nd.array(w0.astype(np.float32))
    for _ in range(3):
        g = RNG.uniform(-1, 1, (6, 3)).astype(np.float16)
        u(0, nd.array(g, dtype="float16"), w16)
        ur(0, nd.array(g.astype(np.float32)), w32)
    st = u.states[0]
    master = st[1] if name in ("sgd", "nag") else st[0]
    assert master.dtype == np.float32
    np.testing.assert_allclose(master.asnumpy(), w32.asnumpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(w16.asnumpy(), w32.asnumpy().astype(np.float16))


def test_float16_without_multi_precision_warns():
    o = opt.create("sgd", momentum=0.9)
    with pytest.warns(UserWarning, match="multi_precision"):
        st = o.create_state_multi_precision(0, nd.zeros((2,), dtype="float16"))
    assert st.dtype == np.float16


# ---------------------------------------------------------------------------------------------
# updater states
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", [("sgd", {"momentum": 0.9}), ("adam", {}),
                                     ("rmsprop", {"centered": True}), ("ftrl", {})])
def test_updater_states_round_trip(name, kw):
    o = opt.create(name, learning_rate=0.05, wd=0.01, **kw)
    u = opt.get_updater(o)
    shapes = [(3, 4), (5,)]
    ws = [nd.array(RNG.uniform(-1, 1, s)) for s in shapes]
    grads = [[nd.array(RNG.uniform(-1, 1, s)) for s in shapes] for _ in range(3)]
    for step in range(2):
        for i in range(2):
            u(i, grads[step][i], ws[i])
    blob = u.get_states()
    blob_opt = u.get_states(dump_optimizer=True)
    assert isinstance(pickle.loads(blob), dict) and set(pickle.loads(blob)) == {0, 1}
    _, opt2 = pickle.loads(blob_opt)
    assert isinstance(opt2, type(o)) and opt2.num_update == 2
    # a fresh updater with the saved states (and optimizer) continues identically
    u2 = opt.get_updater(opt.create(name, learning_rate=0.05, wd=0.01, **kw))
    u2.set_states(blob_opt)
    assert u2.optimizer.num_update == 2 and not any(u2.states_synced.values())
    u3 = opt.get_updater(o)
    u3.set_states(blob)
    assert u3.optimizer is o
    ws2 = [w.copy() for w in ws]
    ws3 = [w.copy() for w in ws]
    for i in range(2):
        u(i, grads[2][i], ws[i])
        u2(i, grads[2][i], ws2[i])
    assert all(u2.states_synced.values())
    for i in range(2):
        np.testing.assert_array_equal(ws2[i].asnumpy(), ws[i].asnumpy())
    # states only (u3 shares o, already counted): same state arrays restored
    st = u3.states[0]
    flat = st if isinstance(st, tuple) else (st,)
    assert all(isinstance(x, nd.NDArray) for x in flat)
    del ws3


def test_sync_state_context_and_bytes_index():
    u = opt.get_updater(opt.create("adam"))
    a = nd.zeros((2,))
    st = (a, [a, None], None)
    out = u.sync_state_context(st, a.context)
    assert isinstance(out, tuple) and isinstance(out[1], list) and out[2] is None
    assert out[0] is a
    w = nd.ones((2,))
    u(b"w0", nd.ones((2,)), w)
    assert "w0" in u.states


# ---------------------------------------------------------------------------------------------
# create / register
# ---------------------------------------------------------------------------------------------
def test_create_errors_and_registry():
    with pytest.raises(MXNetError) as e:
        opt.create("no_such_optimizer")
    msg = str(e.value)
    assert "no_such_optimizer" in msg
    for n in ("sgd", "nag", "adam", "adagrad", "adadelta", "rmsprop", "ftrl", "signum",
              "signsgd", "lamb", "test"):
        assert n in msg and n in opt.Optimizer.opt_registry
    with pytest.raises(ValueError):  # MXNet raises ValueError: both hold
        opt.create("nope")
    with pytest.raises(TypeError):
        opt.create("sgd", no_such_argument=1)
    assert type(opt.create("RmsProp")) is opt.RMSProp
    assert opt.Optimizer.create_optimizer("LAMB").__class__ is opt.LAMB

    @opt.register
    class MyTestOptimizerXyz(opt.Optimizer):
        pass

    try:
        assert isinstance(opt.create("mytestoptimizerxyz"), MyTestOptimizerXyz)
        with pytest.warns(UserWarning, match="overriding"):
            opt.register(MyTestOptimizerXyz)
    finally:
        del opt.Optimizer.opt_registry["mytestoptimizerxyz"]


# ---------------------------------------------------------------------------------------------
# learning rate schedules
# ---------------------------------------------------------------------------------------------
def test_factor_scheduler():
    s = lrs.FactorScheduler(step=2, factor=0.5, base_lr=1.0)
    assert [s(n) for n in (1, 2, 3, 4, 5, 9)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.0625]
    s = lrs.FactorScheduler(step=1, factor=0.1, stop_factor_lr=1e-3, base_lr=1.0)
    got = [s(n) for n in (1, 2, 3, 4, 5, 6)]
    assert got == pytest.approx([1.0, 0.1, 0.01, 0.001, 0.001, 0.001])
    # resuming at a large num_update applies all factors at once (while loop)
    s = lrs.FactorScheduler(step=10, factor=0.5, base_lr=0.8)
    assert s(35) == pytest.approx(0.1)
    # warmup: linear from warmup_begin_lr to base_lr over warmup_steps
    s = lrs.FactorScheduler(step=5, factor=0.5, base_lr=1.0, warmup_steps=4,
                            warmup_begin_lr=0.2)
    assert [s(n) for n in (0, 1, 2, 3, 4, 5, 6)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.5])
    s = lrs.FactorScheduler(step=5, base_lr=1.0, warmup_steps=3, warmup_begin_lr=0.1,
                            warmup_mode="constant")
    assert [s(n) for n in (0, 2, 3)] == [0.1, 0.1, 1.0]


def test_multifactor_scheduler():
    s = lrs.MultiFactorScheduler(step=[3, 6], factor=0.1, base_lr=1.0)
    got = [s(n) for n in range(1, 9)]
    assert got == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert s.cur_step_ind == 2 and s.count == 6
    s = lrs.MultiFactorScheduler(step=[5, 8], factor=0.5, base_lr=1.0, warmup_steps=2,
                                 warmup_begin_lr=0.5)
    assert [s(n) for n in (0, 1, 2, 6, 9)] == pytest.approx([0.5, 0.75, 1.0, 0.5, 0.25])


def test_poly_scheduler():
    s = lrs.PolyScheduler(max_update=10, base_lr=1.0, pwr=2)
    assert [s(n) for n in (0, 5, 10, 12)] == pytest.approx([1.0, 0.25, 0.0, 0.0])
    s = lrs.PolyScheduler(max_update=10, base_lr=1.0, pwr=1, final_lr=0.1)
    assert [s(n) for n in (0, 5, 10)] == pytest.approx([1.0, 0.55, 0.1])
    s = lrs.PolyScheduler(max_update=10, base_lr=1.0, pwr=2, warmup_steps=2)
    assert [s(n) for n in (0, 1, 2, 6, 10)] == pytest.approx([0.0, 0.5, 1.0, 0.25, 0.0])


def test_cosine_scheduler():
    s = lrs.CosineScheduler(max_update=10, base_lr=1.0)
    assert [s(n) for n in (0, 2, 5, 10, 15)] == pytest.approx(
        [1.0, (1 + math.cos(math.pi * 0.2)) / 2, 0.5, 0.0, 0.0])
    s = lrs.CosineScheduler(max_update=20, base_lr=0.5, final_lr=0.01)
    assert s(10) == pytest.approx(0.01 + 0.49 * 0.5)
    s = lrs.CosineScheduler(max_update=12, base_lr=1.0, final_lr=0.2, warmup_steps=2,
                            warmup_begin_lr=0.1)
    assert [s(n) for n in (0, 1, 2, 7, 12)] == pytest.approx([0.1, 0.55, 1.0, 0.6, 0.2])


def test_scheduler_errors():
    with pytest.raises(ValueError):
        lrs.FactorScheduler(step=0)
    with pytest.raises(ValueError):
        lrs.FactorScheduler(step=2, factor=1.5)
    with pytest.raises(ValueError):
        lrs.MultiFactorScheduler(step=[3, 3])
    with pytest.raises(ValueError):
        lrs.MultiFactorScheduler(step=[0, 3])
    with pytest.raises(ValueError):
        lrs.MultiFactorScheduler(step=[2, 3], factor=2)
    with pytest.raises(ValueError):
        lrs.PolyScheduler(max_update=0)
    with pytest.raises(ValueError):
        lrs.CosineScheduler(max_update=0)
    with pytest.raises(ValueError):
        lrs.LRScheduler(base_lr=0.1, warmup_begin_lr=0.2)
    with pytest.raises(ValueError):
        lrs.LRScheduler(warmup_steps=-1)
    with pytest.raises(ValueError):
        lrs.LRScheduler(warmup_mode="cosine")
    with pytest.raises(NotImplementedError):
        lrs.LRScheduler()(1)


# ---------------------------------------------------------------------------------------------
# real MXNet 1.9.1: one SGD step from the recorded gradients gives the recorded parameters
# ---------------------------------------------------------------------------------------------
def _load_params(case: str) -> dict:
    d = nd.load(str(CASES / case / f"{case}-0000.params"))
    return {k[4:]: v.asnumpy() for k, v in d.items() if k.startswith("arg:")}


def _npy_dir(path: Path) -> dict:
    return {p.stem: np.load(p) for p in sorted(path.glob("*.npy"))}


def _fix_gamma_names(case: str) -> list:
    """gamma inputs of BatchNorm nodes with fix_gamma=True (the default)."""
    path = CASES / case / f"{case}-symbol.json"
    if not path.exists():
        return []
    nodes = json.loads(path.read_text())["nodes"]
    out = []
    for n in nodes:
        attrs = n.get("attrs") or n.get("attr") or {}
        if n["op"] == "BatchNorm" and attrs.get("fix_gamma", "True") in ("True", "true", "1"):
            out.append(nodes[n["inputs"][1][0]]["name"])
    return out


def _run_steps(case, steps, make_optimizer, names, check_wd=None):
    params = _load_params(case)
    fixed = _fix_gamma_names(case)
    o = make_optimizer()
    if check_wd is not None:
        got = {n: o._get_wd(i) / o.wd for i, n in enumerate(names)}
        assert got == check_wd
    u = opt.get_updater(o)
    arrs = {n: nd.array(params[n]) for n in names}
    for st in steps:
        # MXNet's BatchNorm forward with fix_gamma=True writes 1 into its gamma array, so each
        # recorded step updated gamma = 1 (bn1_gamma: 0.99999 after step 1, 0.999981 after 2)
        for n in fixed:
            arrs[n][:] = 1.0
        d = CASES / case / st["dir"]
        grads = _npy_dir(d / "grad")
        after = _npy_dir(d / "params_after")
        for i, n in enumerate(names):
            u(i, nd.array(grads[n]), arrs[n])
        for n in names:
            np.testing.assert_allclose(arrs[n].asnumpy(), after[n], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{case} {st['dir']} {n}")
            # tighter than the tolerance: the update itself is exact up to float rounding
            assert np.abs(arrs[n].asnumpy() - after[n]).max() <= 1e-6, (case, n)


@pytest.mark.parametrize("case", ["sym_mlp", "sym_convnet"])
def test_module_sgd_steps_match_mxnet(case):
    """Module.init_optimizer('sgd', lr 0.1, momentum 0.9, wd 1e-4): sym + param_idx2name
    (no weight decay on biases/beta), rescale_grad = 1/batch."""
    if not (CASES / case).is_dir():
        pytest.skip("mxnet_cases not available")
    meta = json.loads((CASES / case / "meta.json").read_text())
    mt = meta["module_train"]
    net = sym.load(str(CASES / case / f"{case}-symbol.json"))
    inputs = {i["name"] for i in meta["inputs"]}
    names = [n for n in net.list_arguments() if n not in inputs]
    batch = meta["inputs"][0]["shape"][0]
    assert mt["rescale_grad"] == pytest.approx(1.0 / batch)

    def make():
        return opt.create("sgd", sym=net, param_idx2name=dict(enumerate(names)),
                          learning_rate=0.1, momentum=0.9, wd=1e-4, rescale_grad=1.0 / batch)

    _run_steps(case, mt["steps"], make, names, check_wd=mt["effective_wd_mult"])


@pytest.mark.parametrize("case", ["mlp", "lenet", "bncnn"])
def test_gluon_trainer_sgd_steps_match_mxnet(case):
    """gluon.Trainer('sgd', lr 0.1, momentum 0.9, wd 1e-4).step(B): parameters passed as
    param_dict (wd_mult 1 on every parameter), rescale_grad = 1/B."""
    if not (CASES / case).is_dir():
        pytest.skip("mxnet_cases not available")
    meta = json.loads((CASES / case / "meta.json").read_text())
    tr = meta["train"]
    hyper = tr["hyper"]
    names = sorted(tr["steps"][0]["grad_params"])

    class Param:
        lr_mult = 1.0
        wd_mult = 1.0

    def make():
        return opt.create("sgd", learning_rate=hyper["lr"], momentum=hyper["momentum"],
                          wd=hyper["wd"], rescale_grad=1.0 / hyper["batch_size"],
                          param_dict={i: Param() for i in range(len(names))})

    _run_steps(case, tr["steps"], make, names, check_wd={n: 1.0 for n in names})
