"""Normalization operators: BatchNorm (training/inference, moving statistics), LayerNorm,
InstanceNorm, L2Normalization, LRN — forward against numpy, backward against finite
differences, bad attributes, kernel counts, and BatchNorm against real MXNet cases."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mxc.base import MXNetError, OpError, ShapeError
from mxc.compiler.build import compile_graph
from mxc.ir import registry
from mxc.ir.graph import Entry, Graph, make_node, variable
from mxc.ir.ops.norm import np_batchnorm_backward
from mxc.testing import check_forward, check_grad, reference, run_op

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
RNG = np.random.default_rng(7)


def _x(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _bn_inputs(shape, axis=1, dtype=np.float32, pdtype=None):
    c = shape[axis]
    pd = pdtype or dtype
    return [_x(shape, dtype) * 2 + 0.5, RNG.uniform(0.5, 1.5, c).astype(pd),
            _x((c,), pd), (_x((c,)) * 0.1).astype(pd), RNG.uniform(0.5, 1.5, c).astype(pd)]


# ---------------------------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------------------------
BN_ATTRS = [{}, {"fix_gamma": False}, {"fix_gamma": "False", "eps": 1e-5, "momentum": 0.8},
            {"use_global_stats": True, "fix_gamma": False}, {"use_global_stats": True},
            {"output_mean_var": True, "fix_gamma": False}, {"cudnn_off": True},
            {"min_calib_range": -1.0, "max_calib_range": "2.5"}]


@pytest.mark.parametrize("shape,axis", [((4, 3, 5, 6), 1), ((6, 4), 1), ((2, 3, 7), -1),
                                        ((3, 2, 2, 5), 3), ((5, 2, 3), 0), ((1, 3, 1, 1), 1)])
def test_batchnorm_forward(shape, axis):
    ins = _bn_inputs(shape, axis % len(shape))
    for attrs in BN_ATTRS:
        attrs = dict(attrs, axis=axis)
        for train in (False, True):
            check_forward("BatchNorm", ins, attrs, is_train=train, rtol=1e-5, atol=1e-5)


def test_batchnorm_mean_var_outputs():
    x, gamma, beta, mm, mv = _bn_inputs((4, 3, 5))
    attrs = {"output_mean_var": True, "eps": 1e-4}
    outs, _, _ = run_op("BatchNorm", [x, gamma, beta, mm, mv], attrs, is_train=True)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(outs[1], xd.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    # MXNet's 'var' output is the inverse std of the biased batch variance
    np.testing.assert_allclose(outs[2], 1 / np.sqrt(xd.var(axis=(0, 2)) + 1e-4), rtol=1e-5)
    outs, _, _ = run_op("BatchNorm", [x, gamma, beta, mm, mv], attrs, is_train=False)
    np.testing.assert_allclose(outs[1], mm)
    np.testing.assert_allclose(outs[2], 1 / np.sqrt(mv.astype(np.float64) + 1e-4), rtol=1e-6)
    assert len(run_op("BatchNorm", [x, gamma, beta, mm, mv], {})[0]) == 1


def test_batchnorm_fix_gamma_ignores_gamma():
    ins = _bn_inputs((3, 4, 5))
    ones = [ins[0], np.ones_like(ins[1])] + ins[2:]
    for train in (False, True):
        a = run_op("BatchNorm", ins, {}, is_train=train)[0][0]
        b = run_op("BatchNorm", ones, {"fix_gamma": False}, is_train=train)[0][0]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_batchnorm_dtypes():
    ins = _bn_inputs((3, 4, 6), dtype=np.float16, pdtype=np.float32)
    for train in (False, True):
        got = check_forward("BatchNorm", ins, {"fix_gamma": False}, is_train=train,
                            rtol=5e-3, atol=5e-3)
        assert got[0].dtype == np.float16
    got = run_op("BatchNorm", ins, {"output_mean_var": True}, is_train=True)[0]
    assert [o.dtype for o in got] == [np.float16, np.float32, np.float32]
    ins64 = _bn_inputs((3, 4, 6), dtype=np.float64)
    check_forward("BatchNorm", ins64, {"fix_gamma": False}, is_train=True, rtol=1e-12,
                  atol=1e-12)
    with pytest.raises(MXNetError):   # float16 data wants float32 parameters
        run_op("BatchNorm", _bn_inputs((3, 4, 6), dtype=np.float16), {})


@pytest.mark.parametrize("attrs", [{"fix_gamma": False}, {}, {"fix_gamma": False, "axis": -1},
                                   {"use_global_stats": True, "fix_gamma": False},
                                   {"use_global_stats": True}])
def test_batchnorm_grad(attrs):
    shape = (3, 2, 2, 3) if attrs.get("axis") != -1 else (3, 2, 4)
    ax = attrs.get("axis", 1) % len(shape)
    ins = _bn_inputs(shape, ax, np.float64)
    check_grad("BatchNorm", ins, attrs, which=[0, 1, 2], rtol=1e-5, atol=1e-6, eps=1e-6)
    # 2-D input (FullyConnected + BatchNorm)
    check_grad("BatchNorm", _bn_inputs((5, 3), 1, np.float64), attrs if "axis" not in attrs
               else {"fix_gamma": False}, which=[0, 1, 2], rtol=1e-5, atol=1e-6, eps=1e-6)


def test_batchnorm_fix_gamma_grad_is_zero():
    ins = _bn_inputs((3, 2, 4), 1, np.float64)
    _, grads, _ = run_op("BatchNorm", ins, {}, head_grads=[_x((3, 2, 4), np.float64)])
    np.testing.assert_array_equal(grads[1], [0.0, 0.0])
    assert grads[3] is None and grads[4] is None


@pytest.mark.parametrize("attrs", [{"fix_gamma": False, "momentum": 0.8}, {},
                                   {"fix_gamma": False, "axis": -1, "eps": 1e-5},
                                   {"use_global_stats": True, "fix_gamma": False}])
def test_batchnorm_moving_stats(attrs):
    """MXNet 1.9.1 updates moving_mean/moving_var in the backward pass (biased variance);
    a training forward alone and inference leave them unchanged."""
    shape = (4, 3, 5, 2) if attrs.get("axis") != -1 else (4, 5, 3)
    ax = attrs.get("axis", 1) % len(shape)
    ins = _bn_inputs(shape, ax)
    for train in (False, True):
        after = run_op("BatchNorm", ins, attrs, is_train=train)[2]
        np.testing.assert_array_equal(after[3], ins[3])
        np.testing.assert_array_equal(after[4], ins[4])
    hg = _x(shape)
    _outs, grads, after = run_op("BatchNorm", ins, attrs, is_train=True, head_grads=[hg])
    a = registry.get("BatchNorm").parse_attrs(attrs)
    dx, dg, db, mm, mv = np_batchnorm_backward(a, hg, *ins[:2], *ins[3:],
                                               train=not a.use_global_stats)
    np.testing.assert_allclose(grads[0], dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[1], dg, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[2], db, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after[3], mm, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(after[4], mv, rtol=1e-5, atol=1e-7)
    # the reference leaves the aux states alone in forward, as the compiled code does
    copies = [np.array(v) for v in ins]
    registry.get("BatchNorm").reference(a, copies, is_train=True)
    np.testing.assert_array_equal(copies[3], ins[3])


def test_batchnorm_bad_attrs():
    ins = _bn_inputs((2, 3, 4))
    with pytest.raises(ShapeError):
        run_op("BatchNorm", ins, {"axis": 3})
    with pytest.raises(ShapeError):
        run_op("BatchNorm", [ins[0], ins[1][:2]] + ins[2:], {})
    with pytest.raises(OpError):
        run_op("BatchNorm", ins, {"act_type": "relu"})
    with pytest.raises(OpError):
        run_op("BatchNorm", ins, {"eps": "tiny"})
    with pytest.raises(OpError):
        run_op("BatchNorm", ins, {"fix_gamma": "perhaps"})
    with pytest.raises(MXNetError):   # integer data
        run_op("BatchNorm", [np.ones((2, 3), np.int32)] + [np.ones(3, np.int32)] * 4, {})


def _node_kernels(op, shapes, attrs, is_train=False):
    vars_ = [variable(n) for n in shapes]
    node = make_node(op, [Entry(v, 0) for v in vars_], attrs, name="op")
    cg = compile_graph(Graph([Entry(node, 0)]), shapes, {n: "float32" for n in shapes},
                       is_train=is_train)
    return [k for k in cg.kernels if k.node == "op"]


def test_kernel_counts():
    bn = {"data": (4, 8, 6, 6), "gamma": (8,), "beta": (8,), "moving_mean": (8,),
          "moving_var": (8,)}
    assert len(_node_kernels("BatchNorm", bn, {})) == 1
    assert len(_node_kernels("BatchNorm", bn, {}, is_train=True)) == 4  # + fixed gamma <- 1
    ln = {"data": (4, 6, 10), "gamma": (10,), "beta": (10,)}
    assert len(_node_kernels("LayerNorm", ln, {})) == 1
    assert len(_node_kernels("LayerNorm", dict(ln, gamma=(6,), beta=(6,)), {"axis": 1})) == 1
    inn = {"data": (2, 3, 4, 5), "gamma": (3,), "beta": (3,)}
    assert len(_node_kernels("InstanceNorm", inn, {})) == 1
    assert len(_node_kernels("L2Normalization", {"data": (2, 3, 4)}, {"mode": "channel"})) == 1
    assert len(_node_kernels("LRN", {"data": (2, 5, 3, 3)}, {"nsize": 3})) == 1


def _directional_grad_check(op, ins, attrs, which):
    """Compiled backward against a central difference of the numpy reference along a random
    direction (cheap for large inputs)."""
    hg = RNG.standard_normal(reference(op, ins, attrs, True)[0].shape)
    _, grads, _ = run_op(op, ins, attrs, head_grads=[hg])
    for w in which:
        d = RNG.standard_normal(ins[w].shape)
        f = []
        for sgn in (1, -1):
            p = [v.copy() for v in ins]
            p[w] = p[w] + sgn * 1e-6 * d
            f.append(np.sum(reference(op, p, attrs, True)[0] * hg))
        num, ana = (f[0] - f[1]) / 2e-6, np.sum(grads[w] * d)
        assert abs(num - ana) <= 1e-6 * max(1.0, abs(num)), (op, w, num, ana)


def test_long_rows():
    """A few rows longer than the scheduler's chunking threshold: per-row statistics come
    from their own kernels; forward and backward unchanged."""
    x = _x((2, 20000), np.float64)
    ln_ins = [x, _x((20000,), np.float64), _x((20000,), np.float64)]
    check_forward("LayerNorm", [v.astype(np.float32) for v in ln_ins], {}, atol=1e-5)
    _directional_grad_check("LayerNorm", ln_ins, {}, [0, 1, 2])
    # one kernel per row, or row statistics first when long rows are split into chunks
    assert len(_node_kernels("LayerNorm", {"data": (2, 20000), "gamma": (20000,),
                                           "beta": (20000,)}, {})) in (1, 3)
    xi = _x((1, 3, 140, 140), np.float64)
    in_ins = [xi, _x((3,), np.float64), _x((3,), np.float64)]
    check_forward("InstanceNorm", [v.astype(np.float32) for v in in_ins], {}, atol=1e-5)
    _directional_grad_check("InstanceNorm", in_ins, {}, [0, 1, 2])
    for mode in ("instance", "spatial"):
        check_forward("L2Normalization", [xi.astype(np.float32)], {"mode": mode}, atol=1e-7)
        _directional_grad_check("L2Normalization", [xi], {"mode": mode}, [0])


# ---------------------------------------------------------------------------------------------
# BatchNorm against real MXNet (moving statistics after forward / forward+backward)
# ---------------------------------------------------------------------------------------------
def _conv3x3(x, w, b, pad=1):
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _c, h, wd = x.shape
    y = np.zeros((n, w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return (y + b[None, :, None, None]).astype(np.float32)


def _params(path):
    ndfile = pytest.importorskip("mxc.ir.formats.ndfile")
    names, recs = ndfile.load_nd(str(path))
    return {n: np.asarray(r) for n, r in zip(names, recs)}


@pytest.mark.parametrize("case,prefix,conv,bn,attrs,step", [
    ("bncnn", "", "bncnn_conv0", "bncnn_batchnorm0",
     {"eps": "1e-05", "fix_gamma": "False", "momentum": "0.9"}, "train/step1/params_after"),
    ("sym_convnet", "", "conv1", "bn1", {}, "module_train/step1/params_after"),
])
def test_batchnorm_real_mxnet(case, prefix, conv, bn, attrs, step):
    d = CASES / case
    if not (d / "meta.json").exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    p = _params(d / meta["params"])
    mean_key = "running_mean" if case == "bncnn" else "moving_mean"
    var_key = "running_var" if case == "bncnn" else "moving_var"
    x = _conv3x3(np.load(d / "in_data.npy"), p[f"arg:{conv}_weight"].astype(np.float64),
                 p[f"arg:{conv}_bias"].astype(np.float64))
    ins = [x, p[f"arg:{bn}_gamma"], p[f"arg:{bn}_beta"], p[f"aux:{bn}_{mean_key}"],
           p[f"aux:{bn}_{var_key}"]]
    # a training forward leaves the moving statistics as they were (aux_after_train_forward)
    after = run_op("BatchNorm", ins, attrs, is_train=True)[2]
    for i, key in ((3, mean_key), (4, var_key)):
        f = d / "aux_after_train_forward" / f"{bn}_{key}.npy"
        if f.exists():
            np.testing.assert_allclose(after[i], np.load(f), rtol=1e-5, atol=1e-6)
    # forward + backward: one update with the biased batch variance (the optimizer step that
    # follows does not touch aux states)
    _, _, after = run_op("BatchNorm", ins, attrs, is_train=True, head_grads=[np.ones_like(x)])
    for i, key in ((3, mean_key), (4, var_key)):
        want = np.load(d / step / f"{bn}_{key}.npy")
        np.testing.assert_allclose(after[i], want, rtol=1e-5, atol=1e-6, err_msg=key)


# ---------------------------------------------------------------------------------------------
# LayerNorm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [((2, 3, 4, 5), -1), ((2, 3, 4, 5), 1), ((6, 7), 0),
                                        ((3, 1, 4), 1), ((5, 8), -1), ((4,), 0)])
def test_layernorm_forward(shape, axis):
    m = shape[axis]
    x, gamma, beta = _x(shape) * 3 + 1, _x((m,)), _x((m,))
    for attrs in ({}, {"eps": 1e-3}, {"output_mean_var": True}):
        got = check_forward("LayerNorm", [x, gamma, beta], dict(attrs, axis=axis), rtol=1e-5,
                            atol=1e-5)
        if attrs.get("output_mean_var"):
            st = list(shape)
            st[axis] = 1
            assert got[1].shape == got[2].shape == tuple(st)
    check_forward("LayerNorm", [x.astype(np.float64), gamma.astype(np.float64),
                                beta.astype(np.float64)], {"axis": axis}, rtol=1e-12,
                  atol=1e-12)
    check_forward("LayerNorm", [x.astype(np.float16), gamma.astype(np.float16),
                                beta.astype(np.float16)], {"axis": axis}, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("shape,axis", [((2, 3, 4), -1), ((2, 3, 4), 1), ((3, 4), 0)])
def test_layernorm_grad(shape, axis):
    m = shape[axis]
    ins = [_x(shape, np.float64), _x((m,), np.float64), _x((m,), np.float64)]
    check_grad("LayerNorm", ins, {"axis": axis}, rtol=1e-5, atol=1e-6, eps=1e-6)
    check_grad("LayerNorm", ins, {"axis": axis, "eps": 0.1}, rtol=1e-5, atol=1e-6, eps=1e-6)


def test_layernorm_bad_attrs():
    x = _x((2, 3))
    with pytest.raises(ShapeError):
        run_op("LayerNorm", [x, _x((3,)), _x((3,))], {"axis": 2})
    with pytest.raises(ShapeError):
        run_op("LayerNorm", [x, _x((2,)), _x((2,))], {})
    with pytest.raises(OpError):
        run_op("LayerNorm", [x, _x((3,)), _x((3,))], {"center": True})
    with pytest.raises(MXNetError):
        run_op("LayerNorm", [np.ones((2, 3), np.int64)] + [np.ones(3, np.int64)] * 2, {})


# ---------------------------------------------------------------------------------------------
# InstanceNorm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 6), (1, 4, 2, 2, 2), (2, 3, 1)])
def test_instancenorm(shape):
    c = shape[1]
    x, gamma, beta = _x(shape) * 2 + 1, _x((c,)), _x((c,))
    for attrs in ({}, {"eps": 1e-5}):
        check_forward("InstanceNorm", [x, gamma, beta], attrs, rtol=1e-5, atol=1e-5)
    check_forward("InstanceNorm", [x.astype(np.float64), gamma.astype(np.float64),
                                   beta.astype(np.float64)], {}, rtol=1e-12, atol=1e-12)
    if np.prod(shape) <= 40:
        ins = [_x(shape, np.float64), _x((c,), np.float64), _x((c,), np.float64)]
        check_grad("InstanceNorm", ins, {"eps": 1e-2}, rtol=1e-5, atol=1e-6, eps=1e-6)


def test_instancenorm_grad_4d():
    ins = [_x((2, 2, 2, 3), np.float64), _x((2,), np.float64), _x((2,), np.float64)]
    check_grad("InstanceNorm", ins, {}, rtol=1e-5, atol=1e-6, eps=1e-6)


def test_instancenorm_bad():
    with pytest.raises(ShapeError):
        run_op("InstanceNorm", [_x((2, 3)), _x((3,)), _x((3,))], {})
    with pytest.raises(OpError):
        run_op("InstanceNorm", [_x((2, 3, 4)), _x((3,)), _x((3,))], {"axis": 1})


# ---------------------------------------------------------------------------------------------
# L2Normalization
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["instance", "channel", "spatial"])
def test_l2normalization(mode):
    x = _x((2, 3, 4, 5))
    for attrs in ({}, {"eps": 1e-4}):
        check_forward("L2Normalization", [x], dict(attrs, mode=mode), rtol=1e-5, atol=1e-6)
    check_forward("L2Normalization", [_x((3, 4, 2), np.float64)], {"mode": mode}, rtol=1e-12)
    check_grad("L2Normalization", [_x((2, 3, 2, 2), np.float64)], {"mode": mode}, rtol=1e-5,
               atol=1e-6, eps=1e-6)
    if mode == "instance":
        check_forward("L2Normalization", [x[:, :, 0, 0].copy()], {})
        check_grad("L2Normalization", [_x((3, 4), np.float64)], {}, rtol=1e-5, atol=1e-6,
                   eps=1e-6)
    else:
        with pytest.raises(ShapeError):
            run_op("L2Normalization", [_x((3, 4))], {"mode": mode})


def test_l2normalization_bad_mode():
    with pytest.raises(OpError):
        run_op("L2Normalization", [_x((2, 3))], {"mode": "batch"})


# ---------------------------------------------------------------------------------------------
# LRN
# ---------------------------------------------------------------------------------------------
def test_lrn():
    x = _x((2, 6, 3, 4))
    for attrs in ({"nsize": 5}, {"nsize": 3, "alpha": 0.1, "beta": 0.5, "knorm": 1.0},
                  {"nsize": "1"}, {"nsize": 9, "alpha": 0.01}):
        check_forward("LRN", [x], attrs, rtol=1e-5, atol=1e-6)
        check_grad("LRN", [_x((2, 4, 2, 2), np.float64)], dict(attrs, alpha=0.3), rtol=1e-5,
                   atol=1e-6, eps=1e-6)
    check_forward("LRN", [x.astype(np.float64)], {"nsize": 3}, rtol=1e-12)


def test_lrn_bad():
    with pytest.raises(OpError):
        run_op("LRN", [_x((1, 4, 2, 2))], {"nsize": 4})
    with pytest.raises(OpError):
        run_op("LRN", [_x((1, 4, 2, 2))], {})
    with pytest.raises(ShapeError):
        run_op("LRN", [_x((4, 2, 2))], {"nsize": 3})


# =============================================================================================
# GroupNorm
# =============================================================================================
@pytest.mark.parametrize("shape,groups", [((2, 6, 3, 5), 3), ((1, 4, 7), 1), ((3, 4, 2), 4),
                                          ((2, 6, 1, 1), 2), ((2, 2, 3, 2, 2), 2)])
def test_group_norm_forward(shape, groups):
    x = _x(shape)
    gamma, beta = _x((shape[1],)), _x((shape[1],))
    check_forward("GroupNorm", [x, gamma, beta], {"num_groups": groups}, rtol=1e-4, atol=1e-5)
    outs = check_forward("GroupNorm", [x, gamma, beta],
                         {"num_groups": groups, "output_mean_var": True, "eps": 1e-3},
                         rtol=1e-4, atol=1e-5)
    assert outs[1].shape == outs[2].shape == (shape[0], groups)


def test_group_norm_documented_example():
    # MXNet's GroupNorm docstring: (2, 3, 4) arange input, one group, gamma 1, beta 0
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    got, _, _ = run_op("GroupNorm", [x, np.ones(3, np.float32), np.zeros(3, np.float32)])
    row = [[-1.5932543, -1.3035717, -1.0138891, -0.7242065],
           [-0.4345239, -0.1448413, 0.1448413, 0.4345239],
           [0.7242065, 1.0138891, 1.3035717, 1.5932543]]
    np.testing.assert_allclose(got[0], np.array([row, row]), rtol=1e-6, atol=1e-6)


def test_group_norm_dtypes():
    x = _x((2, 4, 5), np.float16)
    g, b = _x((4,), np.float16), _x((4,), np.float16)
    check_forward("GroupNorm", [x, g, b], {"num_groups": 2}, rtol=5e-3, atol=5e-3)
    check_forward("GroupNorm", [_x((2, 4, 5), np.float64), _x((4,), np.float64),
                                _x((4,), np.float64)], {"num_groups": 2}, rtol=1e-10,
                  atol=1e-12)


@pytest.mark.parametrize("shape,groups", [((2, 4, 3), 2), ((1, 6, 2, 2), 3), ((3, 2, 5), 1)])
def test_group_norm_gradient(shape, groups):
    x = _x(shape, np.float64)
    check_grad("GroupNorm", [x, _x((shape[1],), np.float64), _x((shape[1],), np.float64)],
               {"num_groups": groups, "eps": 1e-3}, eps=1e-6, rtol=1e-5, atol=1e-7)


def test_group_norm_bad_input():
    g = np.ones(3, np.float32)
    with pytest.raises(ShapeError, match="divisible"):
        run_op("GroupNorm", [_x((2, 3, 4)), g, g], {"num_groups": 2})
    with pytest.raises(ShapeError, match="at least 3 dims"):
        run_op("GroupNorm", [_x((2, 3)), g, g])
    with pytest.raises(ShapeError, match="gamma"):
        run_op("GroupNorm", [_x((2, 3, 4)), np.ones(1, np.float32), g])
    with pytest.raises(OpError, match="num_groups"):
        run_op("GroupNorm", [_x((2, 3, 4)), g, g], {"num_groups": 0})
    with pytest.raises(OpError):
        run_op("GroupNorm", [_x((2, 3, 4)), g, g], {"axis": 1})
    with pytest.raises(OpError, match="floating-point"):
        run_op("GroupNorm", [np.ones((2, 3, 4), np.int32), np.ones(3, np.int32),
                             np.ones(3, np.int32)])


# --- _contrib_SyncBatchNorm (one device: BatchNorm on axis 1) ----------------------------------

def _sync_bn_inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4, 5, 2))
    return [x, rng.uniform(0.5, 1.5, 4), rng.standard_normal(4), rng.standard_normal(4) * 0.1,
            rng.uniform(0.5, 1.5, 4)]


@pytest.mark.parametrize("is_train", [True, False])
def test_sync_batchnorm_is_batchnorm(is_train):
    ins = _sync_bn_inputs()
    attrs = {"fix_gamma": False, "eps": 1e-3, "ndev": 4, "key": "bn0"}
    got = check_forward("_contrib_SyncBatchNorm", ins, attrs, is_train=is_train)
    bn = {k: v for k, v in attrs.items() if k not in ("ndev", "key")}
    want, _, _ = run_op("BatchNorm", ins, bn, is_train=is_train)
    np.testing.assert_array_equal(got[0], want[0])


def test_sync_batchnorm_gradient_and_attrs():
    check_grad("_contrib_SyncBatchNorm", _sync_bn_inputs(1), {"fix_gamma": False},
               which=[0, 1, 2], rtol=2e-2, atol=2e-3)
    with pytest.raises(OpError, match="axis"):   # not a SyncBatchNorm attribute in MXNet
        run_op("_contrib_SyncBatchNorm", _sync_bn_inputs(), {"axis": 2})
