"""Fused optimizer update operators (sgd_update, adam_update, ...): one and several steps of the
compiled kernels against the numpy references in float32 and float64, the in-place contract
(``out=weight``, states mutated), the ``_hyper_`` twins, mixed precision, hand-written MXNet
formulas, one kernel per op, and bad attributes/shapes/dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import mxc.ir.ops.optimizer as O
from mxc.base import MXNetError, OpError, ShapeError
from mxc.compiler.build import compile_graph
from mxc.frontend import ndarray as nd
from mxc.ir import registry
from mxc.ir.graph import Entry, Graph, make_node, variable
from mxc.testing import run_op

RNG = np.random.default_rng(11)


def _r(shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape)


# op -> (state initialisers, attribute sets); states that enter a sqrt start non-negative
def _nonneg(shape):
    return _r(shape, 0.0, 1.0)


def _signed(shape):
    return _r(shape)


def _zero(shape):
    return np.zeros(shape)


CASES = {
    "sgd_update": ([], [{"lr": 0.1}, {"lr": 0.05, "wd": 0.01, "rescale_grad": 0.5,
                                        "clip_gradient": 0.3, "lazy_update": False}]),
    "sgd_mom_update": ([_signed], [{"lr": 0.1, "momentum": 0.9},
                                   {"lr": 0.05, "momentum": 0.8, "wd": 0.02, "rescale_grad": 2.0,
                                    "clip_gradient": 0.5}]),
    "nag_mom_update": ([_signed], [{"lr": 0.1, "momentum": 0.9, "wd": 0.05},
                                   {"lr": 0.05, "momentum": 0.5, "wd": 0.01, "rescale_grad": 0.5,
                                    "clip_gradient": 0.2}]),
    "signsgd_update": ([], [{"lr": 0.01, "wd": 0.1, "rescale_grad": 3.0,
                             "clip_gradient": 0.001}]),
    "signum_update": ([_signed], [{"lr": 0.01, "momentum": 0.9},
                                  {"lr": 0.02, "momentum": 0.5, "wd": 0.1, "wd_lh": 0.05,
                                   "rescale_grad": 0.5, "clip_gradient": 0.4}]),
    "adam_update": ([_signed, _nonneg], [{"lr": 0.01},
                                         {"lr": 0.02, "beta1": 0.8, "beta2": 0.99,
                                          "epsilon": 1e-6, "wd": 0.1, "rescale_grad": 0.5,
                                          "clip_gradient": 0.3}]),
    "rmsprop_update": ([_nonneg], [{"lr": 0.01},
                                   {"lr": 0.02, "gamma1": 0.8, "epsilon": 1e-4, "wd": 0.1,
                                    "rescale_grad": 2.0, "clip_gradient": 0.5,
                                    "clip_weights": 0.6}]),
    "rmspropalex_update": ([_zero, _zero, _signed],
                           [{"lr": 0.01},
                            {"lr": 0.02, "gamma1": 0.8, "gamma2": 0.7, "epsilon": 1e-4,
                             "wd": 0.1, "rescale_grad": 2.0, "clip_gradient": 0.5,
                             "clip_weights": 0.7}]),
    "ftrl_update": ([_signed, _nonneg], [{"lr": 0.1},
                                         {"lr": 0.2, "lamda1": 0.05, "beta": 0.5, "wd": 0.1,
                                          "rescale_grad": 0.5, "clip_gradient": 0.3}]),
    "adagrad_update": ([_nonneg], [{"lr": 0.1},
                                   {"lr": 0.05, "epsilon": 1e-5, "wd": 0.1,
                                    "rescale_grad": 2.0, "clip_gradient": 0.5}]),
    "lamb_update_phase1": ([_signed, _nonneg],
                           [{"t": 1, "wd": 0.0},
                            {"t": 3, "wd": 0.01, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-5,
                             "rescale_grad": 0.5, "clip_gradient": 0.3},
                            {"t": 2, "wd": 0.1, "bias_correction": False}]),
}
# float32 tolerances (the reference computes in float64); cancellation in ftrl/rmspropalex
TOL32 = {"ftrl_update": (1e-4, 1e-5), "rmspropalex_update": (1e-4, 1e-5)}


def _inputs(op, shape, dtype):
    inits, _ = CASES[op]
    return [_r(shape).astype(dtype), (_r(shape) * 2).astype(dtype)] + \
        [f(shape).astype(dtype) for f in inits]


def _ref_step(op, ins, attrs):
    """One reference step: (out, inputs with states updated)."""
    opdef = registry.get(op)
    cur = [np.array(x, copy=True) for x in ins]
    out = opdef.reference(opdef.parse_attrs(attrs), cur)[0]
    return out, cur


def _tol(op, dtype):
    if dtype == np.float64:
        return 1e-12, 1e-13
    return TOL32.get(op, (1e-5, 1e-6))


@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_step_compiled_graph(op, dtype):
    """Compiled as a graph node: output and the states written back into the aux inputs."""
    n_args = len(registry.get(op).arguments(registry.get(op).parse_attrs(CASES[op][1][0])))
    for attrs in CASES[op][1]:
        ins = _inputs(op, (3, 7), dtype)
        outs, _, after = run_op(op, ins, attrs)
        want, want_in = _ref_step(op, ins, attrs)
        rtol, atol = _tol(op, dtype)
        assert outs[0].dtype == dtype and outs[0].shape == (3, 7)
        np.testing.assert_allclose(outs[0], want, rtol=rtol, atol=atol, err_msg=f"{op} {attrs}")
        for k in range(n_args, len(ins)):
            np.testing.assert_allclose(after[k], want_in[k], rtol=rtol, atol=atol,
                                       err_msg=f"{op} state {k} {attrs}")
        # the weight input itself is not touched by the graph (out is a separate array)
        np.testing.assert_array_equal(after[0], ins[0])


@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_steps_in_place(op, dtype):
    """mx.nd.<op>(weight, grad, *states, out=weight) four times, as the optimizers call it,
    on an array larger than one task (several chunks), against the iterated reference."""
    attrs = CASES[op][1][-1]
    shape = (3, O.CHUNK + 5)
    ins = _inputs(op, shape, dtype)
    arrs = [nd.array(x, dtype=dtype) for x in ins]
    ref = [x.copy() for x in ins]
    in_place = registry.get(op).inplace(registry.get(op).parse_attrs(attrs)) == [(0, 0)]
    rtol, atol = _tol(op, dtype)
    for step in range(4):
        g = (_r(shape) * 2).astype(dtype)
        arrs[1][:] = g
        ref[1] = g
        fn = getattr(nd, op)
        if in_place:
            res = fn(*arrs, out=arrs[0], **attrs)
            assert res is arrs[0]
        else:
            res = fn(*arrs, **attrs)
        want, ref = _ref_step(op, ref, attrs)
        if in_place:
            ref[0] = want
        np.testing.assert_allclose(res.asnumpy(), want, rtol=rtol * 4, atol=atol * 4,
                                   err_msg=f"{op} step {step}")
        for k in range(2, len(ins)):
            np.testing.assert_allclose(arrs[k].asnumpy(), ref[k], rtol=rtol * 4, atol=atol * 4,
                                       err_msg=f"{op} state {k} step {step}")


@pytest.mark.parametrize("op", sorted(CASES))
def test_hyper_twin_matches_public_op(op):
    """_hyper_<op> (hyper-parameters as a run-time input) computes what <op> computes, and one
    compiled kernel serves every learning rate."""
    for attrs in CASES[op][1]:
        ins = _inputs(op, (2, 5), np.float32)
        vec, sw = O.hyper_args(op, attrs)
        n_args = len(registry.get(op).arguments(registry.get(op).parse_attrs(attrs)))
        h_ins = ins[:n_args] + [vec] + ins[n_args:]
        o1, _, a1 = run_op(op, ins, attrs)
        o2, _, a2 = run_op(f"_hyper_{op}", h_ins, {"switches": sw})
        np.testing.assert_allclose(o2[0], o1[0], rtol=1e-6, atol=1e-7)
        for k in range(n_args, len(ins)):
            np.testing.assert_allclose(a2[k + 1], a1[k], rtol=1e-6, atol=1e-7)
    # one template, one compiled program for several learning rates
    arrs = [nd.array(x) for x in _inputs(op, (4,), np.float32)]
    attrs = dict(CASES[op][1][0])
    n_args = len(registry.get(op).arguments(registry.get(op).parse_attrs(attrs)))
    fn = getattr(nd, f"_hyper_{op}")
    from mxc.frontend.ndarray_ops import template
    _, sw0 = O.hyper_args(op, attrs)
    before = set(template(f"_hyper_{op}", {"switches": sw0}).compiled)
    for scale in (1.0, 0.5, 0.25):
        if "lr" in attrs:
            attrs["lr"] = CASES[op][1][0]["lr"] * scale
        vec, sw = O.hyper_args(op, attrs)
        want, _ = _ref_step(op, [a.asnumpy() for a in arrs], attrs)
        got = fn(*arrs[:n_args], nd.array(vec, dtype="float64"), *arrs[n_args:], switches=sw)
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-6)
    assert sw == sw0
    assert len(set(template(f"_hyper_{op}", {"switches": sw}).compiled) - before) <= 1


def test_lamb_phase2():
    w = _r((4, 6)).astype(np.float32)
    g = _r((4, 6)).astype(np.float32)
    r1 = np.array([np.linalg.norm(w)], np.float32)
    r2 = np.array([np.linalg.norm(g)], np.float32)
    for attrs, ratio in [({"lr": 0.1}, r1[0] / r2[0]),
                         ({"lr": 0.1, "lower_bound": 10.0}, 10.0 / r2[0]),
                         ({"lr": 0.1, "upper_bound": 0.5}, 0.5 / r2[0]),
                         ({"lr": 0.1, "lower_bound": 0.1, "upper_bound": 100.0}, r1[0] / r2[0])]:
        for dtype in (np.float32, np.float64):
            ins = [x.astype(dtype) for x in (w, g, r1, r2)]
            outs, _, _ = run_op("lamb_update_phase2", ins, attrs)
            want = w.astype(np.float64) - 0.1 * ratio * g.astype(np.float64)
            np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-6)
    # r1 == 0 or r2 == 0: plain lr
    for z in ((np.zeros(1, np.float32), r2), (r1, np.zeros(1, np.float32))):
        outs, _, _ = run_op("lamb_update_phase2", [w, g, *z], {"lr": 0.1})
        np.testing.assert_allclose(outs[0], w - np.float32(0.1) * g, rtol=1e-6)
    # the nd path with norms from mx.nd.norm, in place
    wa, ga = nd.array(w), nd.array(g)
    nd.lamb_update_phase2(wa, ga, wa.norm(), ga.norm(), out=wa, lr=0.1)
    np.testing.assert_allclose(wa.asnumpy(), w - 0.1 * r1[0] / r2[0] * g, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the formulas, written out as MXNet documents them
# ---------------------------------------------------------------------------------------------
def _f32(v):
    return float(np.float32(v))


def test_formulas_against_mxnet_docs():
    w, g = _r((5, 4)), _r((5, 4)) * 3
    mom, var, n = _r((5, 4)), _nonneg((5, 4)), _nonneg((5, 4))
    lr, wd, rg, cg, m = 0.1, 0.01, 0.5, 0.4, 0.9
    f = lambda v: np.float64(_f32(v))  # float parameters, like MXNet
    clip = lambda x: np.clip(x, -f(cg), f(cg))
    common = {"lr": lr, "wd": wd, "rescale_grad": rg, "clip_gradient": cg}

    def run(op, ins, extra):
        outs, _, after = run_op(op, [x.copy() for x in ins], dict(common, **extra))
        return outs[0], after

    # sgd_mom_update: mom = momentum*mom - lr*(clip(rescale*grad) + wd*weight); w += mom
    out, after = run("sgd_mom_update", [w, g, mom], {"momentum": m})
    mom_n = f(m) * mom - f(lr) * (clip(f(rg) * g) + f(wd) * w)
    np.testing.assert_allclose(after[2], mom_n, rtol=1e-12)
    np.testing.assert_allclose(out, w + mom_n, rtol=1e-12)
    # adam_update: g = clip(rescale*grad + wd*w); m, v; w -= lr*m/(sqrt(v)+eps)
    out, after = run("adam_update", [w, g, mom, var], {})
    gr = np.clip(f(rg) * g + f(wd) * w, -f(cg), f(cg))
    m_n = f(0.9) * mom + (1 - f(0.9)) * gr
    v_n = f(0.999) * var + (1 - f(0.999)) * gr ** 2
    np.testing.assert_allclose(out, w - f(lr) * m_n / (np.sqrt(v_n) + f(1e-8)), rtol=1e-12)
    np.testing.assert_allclose(after[2], m_n, rtol=1e-12)
    np.testing.assert_allclose(after[3], v_n, rtol=1e-12)
    # rmsprop_update: n = (1-g1)*g^2 + g1*n; w -= lr*g/sqrt(n + eps)
    out, after = run("rmsprop_update", [w, g, n], {"gamma1": 0.9})
    n_n = (1 - f(0.9)) * gr ** 2 + f(0.9) * n
    np.testing.assert_allclose(out, w - f(lr) * gr / np.sqrt(n_n + f(1e-8)), rtol=1e-12)
    # ftrl_update (wd in the denominator, gradient without weight decay)
    out, after = run("ftrl_update", [w, g, mom, n], {"lamda1": 0.01, "beta": 1.0})
    gc = clip(f(rg) * g)
    z_n = mom + gc - (np.sqrt(n + gc ** 2) - np.sqrt(n)) * w / f(lr)
    n_n = n + gc ** 2
    want = (np.sign(z_n) * f(0.01) - z_n) / ((1 + np.sqrt(n_n)) / f(lr) + f(wd)) * \
        (np.abs(z_n) > f(0.01))
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-14)
    # signum_update: mom = m*mom - (1-m)*(wd*w + clip(rg*g)); w = (1-lr*wd_lh)*w + lr*sign(mom)
    out, after = run("signum_update", [w, g, mom], {"momentum": m, "wd_lh": 0.1})
    mom_n = f(m) * mom - (1 - f(m)) * (f(wd) * w + clip(f(rg) * g))
    np.testing.assert_allclose(out, (1 - f(lr) * f(0.1)) * w + f(lr) * np.sign(mom_n),
                               rtol=1e-12)
    # signsgd_update ignores rescale_grad and clip_gradient
    out, _ = run("signsgd_update", [w, g], {})
    np.testing.assert_allclose(out, (1 - f(lr) * f(wd)) * w - f(lr) * np.sign(g), rtol=1e-12)
    # nag_mom_update (in-place semantics: wd of the new weight in the momentum)
    out, after = run("nag_mom_update", [w, g, mom], {"momentum": m})
    gc = clip(f(rg) * g)
    mom1 = f(m) * mom
    w_n = w - mom1 + (f(m) + 1) * (mom1 - f(lr) * (gc + f(wd) * w))
    np.testing.assert_allclose(out, w_n, rtol=1e-12)
    np.testing.assert_allclose(after[2], mom1 - f(lr) * (gc + f(wd) * w_n), rtol=1e-12)
    # adagrad: history += g^2; w += (g/sqrt(history + eps) + w*wd) * -lr
    out, after = run("adagrad_update", [w, g, n], {"epsilon": 1e-7})
    h_n = n + gc ** 2
    np.testing.assert_allclose(out, w + (gc / np.sqrt(h_n + f(1e-7)) + w * f(wd)) * -f(lr),
                               rtol=1e-12)
    # float64 weights use MXNet's float32-rounded parameters
    out, _, _ = run_op("sgd_update", [w, g], {"lr": 0.1})
    np.testing.assert_allclose(out[0], w - np.float64(np.float32(0.1)) * g, rtol=1e-14)
    assert np.abs(out[0] - (w - 0.1 * g)).max() > 1e-11


def test_clip_gradient_zero_clips_and_negative_disables():
    w, g = np.ones(4, np.float32), np.array([2.0, -3.0, 0.5, 0.0], np.float32)
    out, _, _ = run_op("sgd_update", [w, g], {"lr": 1.0, "clip_gradient": 0.0})
    np.testing.assert_array_equal(out[0], w)
    out, _, _ = run_op("sgd_update", [w, g], {"lr": 1.0, "clip_gradient": -0.5})
    np.testing.assert_array_equal(out[0], w - g)
    out, _, _ = run_op("sgd_update", [w, g], {"lr": 1.0, "clip_gradient": 1.0})
    np.testing.assert_array_equal(out[0], w - np.clip(g, -1, 1))
    # mshadow's clip passes NaN through
    out, _, _ = run_op("sgd_update", [w, np.array([np.nan, 1, 1, 1], np.float32)],
                       {"lr": 1.0, "clip_gradient": 1.0})
    assert np.isnan(out[0][0])


def test_mixed_precision_ops():
    shape = (6, 5)
    w32 = _r(shape).astype(np.float32)
    w16 = w32.astype(np.float16)
    g16 = (_r(shape) * 2).astype(np.float16)
    mom = _r(shape).astype(np.float32)
    attrs = {"lr": 0.1, "momentum": 0.9, "wd": 0.01, "rescale_grad": 0.5}
    f = lambda v: np.float64(_f32(v))
    g = f(0.5) * g16.astype(np.float64)
    # mp_sgd_mom_update: float32 momentum and master weights, float16 output
    outs, _, after = run_op("mp_sgd_mom_update", [w16, g16, mom, w32], attrs)
    mom_n = f(0.9) * mom - f(0.1) * f(0.01) * w32 - f(0.1) * g
    assert outs[0].dtype == np.float16
    np.testing.assert_allclose(after[2], mom_n, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after[3], w32 + mom_n, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(outs[0], after[3].astype(np.float16))
    # mp_sgd_update
    outs, _, after = run_op("mp_sgd_update", [w16, g16, w32], {"lr": 0.1, "wd": 0.01})
    want = (1 - f(0.1) * f(0.01)) * w32 - f(0.1) * g16.astype(np.float64)
    np.testing.assert_allclose(after[2], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(outs[0], after[2].astype(np.float16))
    # mp_nag_mom_update against nag_mom_update in float32 on the master weights
    _, _, a1 = run_op("mp_nag_mom_update", [w16, g16, mom, w32], attrs)
    o2, _, a2 = run_op("nag_mom_update", [w32, g16.astype(np.float32), mom], attrs)
    np.testing.assert_allclose(a1[3], o2[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a1[2], a2[2], rtol=1e-6, atol=1e-7)
    # plain float16 weights compute in float32 and round on store
    outs, _, after = run_op("sgd_mom_update", [w16, g16, mom.astype(np.float16)], attrs)
    ref, ref_in = _ref_step("sgd_mom_update", [w16, g16, mom.astype(np.float16)], attrs)
    np.testing.assert_allclose(outs[0].astype(np.float32), ref.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(after[2].astype(np.float32), ref_in[2].astype(np.float32),
                               atol=2e-3)


def _kernels(op, shapes, dtypes, attrs):
    opdef = registry.get(op)
    node = make_node(op, [], attrs, name="u")
    names = opdef.input_names(node.parsed)
    vs = [variable(n) for n in names]
    node.inputs = [Entry(v, 0) for v in vs]
    cg = compile_graph(Graph([Entry(node, 0)]), dict(zip(names, shapes)), dict(zip(names, dtypes)))
    return len(cg.program.calls)


def test_one_kernel_per_update():
    for op in sorted(CASES):
        attrs = CASES[op][1][-1]
        n_in = len(_inputs(op, (2,), np.float32))
        assert _kernels(op, [(100, 50)] * n_in, ["float32"] * n_in, attrs) == 1, op
    assert _kernels("lamb_update_phase2", [(9, 3), (9, 3), (1,), (1,)], ["float32"] * 4,
                    {"lr": 0.1}) == 1


def test_signature_and_symbol_api():
    from mxc.frontend import symbol as sym

    s = sym.adam_update(sym.Variable("w"), sym.Variable("g"), sym.Variable("m"),
                        sym.Variable("v"), lr=0.1)
    assert s.list_arguments() == ["w", "g"]
    assert s.list_auxiliary_states() == ["m", "v"]
    s = sym.rmspropalex_update(*[sym.Variable(x) for x in "wgnpd"], lr=0.1)
    assert s.list_auxiliary_states() == ["n", "p", "d"]
    op = registry.get("sgd_mom_update")
    assert op.input_names(op.parse_attrs({"lr": 1})) == ["weight", "grad", "mom"]
    assert registry.get("_sparse_adagrad_update") is registry.get("adagrad_update")
    for name in O.UPDATE_OPS:
        assert registry.exists(name) and registry.exists(f"_hyper_{name}")


def test_zero_size_and_scalar_shapes():
    outs, _, after = run_op("adam_update", [np.zeros((0, 3), np.float32)] * 4, {"lr": 0.1})
    assert outs[0].shape == (0, 3)
    w, g, m = np.float32([1.5]), np.float32([2.0]), np.float32([0.5])
    outs, _, after = run_op("sgd_mom_update", [w, g, m], {"lr": 0.5, "momentum": 0.5})
    np.testing.assert_allclose(after[2], [0.25 - 1.0])
    np.testing.assert_allclose(outs[0], [1.5 - 0.75])


def test_bad_attributes_shapes_dtypes():
    w = np.ones((2, 3), np.float32)
    with pytest.raises(OpError, match="lr"):
        run_op("sgd_update", [w, w], {})
    with pytest.raises(OpError, match="momentum"):
        run_op("sgd_update", [w, w], {"lr": 0.1, "momentum": 0.9})
    with pytest.raises(OpError, match="'t'"):
        run_op("lamb_update_phase1", [w] * 4, {"wd": 0.1})
    with pytest.raises(OpError):
        run_op("adam_update", [w, w, w, w], {"lr": "fast"})
    with pytest.raises(ShapeError):
        run_op("sgd_mom_update", [w, w, np.ones((3, 2), np.float32)], {"lr": 0.1})
    with pytest.raises(ShapeError):
        run_op("lamb_update_phase2", [w, w, np.ones(2, np.float32), np.ones(1, np.float32)],
               {"lr": 0.1})
    with pytest.raises(OpError):
        run_op("sgd_update", [w, w.astype(np.float64)], {"lr": 0.1})
    with pytest.raises(OpError):
        run_op("sgd_update", [w.astype(np.int32)] * 2, {"lr": 0.1})
    with pytest.raises(OpError):
        run_op("mp_sgd_update", [w.astype(np.float16)] * 3, {"lr": 0.1})
    with pytest.raises(OpError, match="switches"):
        run_op("_hyper_sgd_update", [w, w, np.zeros(4)], {"switches": "momentum"})
    with pytest.raises(ShapeError):
        run_op("_hyper_sgd_update", [w, w, np.zeros(3)], {"switches": ""})
    with pytest.raises(MXNetError):
        nd.sgd_mom_update(nd.array(w), nd.array(w), lr=0.1)  # missing the momentum state
