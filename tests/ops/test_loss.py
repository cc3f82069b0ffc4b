"""Loss heads: SoftmaxOutput, *RegressionOutput, MakeLoss, softmax_cross_entropy, smooth_l1.

The heads ignore their head gradient (MXNet's loss-layer convention), so their backward is
checked against MXNet's formula written in numpy, not against finite differences; the real
MXNet 1.9.1 case sym_loss_ops is run through the compiler as well.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from mxc.base import MXNetError, OpError, ShapeError
from mxc.ir import registry
from mxc.ir.ops.loss import make_loss_grad_np, regression_grad_np, softmax_output_grad_np
from mxc.testing import check_forward, check_grad, run_op

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
rng = np.random.default_rng(7)


def _attrs(op, attrs):
    return registry.get(op).parse_attrs(attrs)


def _run_loss(op, inputs, attrs, dtype=np.float32, head=None):
    """Forward (inference) + train-mode backward with random head grads."""
    ref = check_forward(op, inputs, attrs, rtol=1e-5, atol=1e-6)
    hg = [rng.standard_normal(r.shape).astype(dtype) for r in ref] if head is None else head
    outs, grads, _ = run_op(op, inputs, attrs, is_train=True, head_grads=hg)
    return outs, grads, hg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_output_basic(dtype):
    x = rng.standard_normal((5, 7)).astype(dtype)
    lab = rng.integers(0, 7, 5).astype(dtype)
    for attrs in [{}, {"grad_scale": 2.0, "normalization": "batch"},
                  {"use_ignore": True, "ignore_label": 3, "normalization": "valid"},
                  {"smooth_alpha": 0.1, "use_ignore": True, "ignore_label": 2},
                  {"out_grad": True, "grad_scale": 0.5}]:
        lab2 = lab.copy()
        lab2[0] = attrs.get("ignore_label", -1)
        outs, grads, hg = _run_loss("SoftmaxOutput", [x, lab2], attrs, dtype)
        want = softmax_output_grad_np(_attrs("SoftmaxOutput", attrs), outs[0], lab2, hg[0])
        np.testing.assert_allclose(grads[0], want, rtol=1e-5, atol=1e-6, err_msg=str(attrs))
        assert np.all(grads[1] == 0)
    # the deprecated name
    check_forward("Softmax", [x, lab], {})


def test_softmax_output_multi_and_shapes():
    x = rng.standard_normal((2, 4, 3, 2)).astype(np.float32)
    lab = rng.integers(0, 4, (2, 3, 2)).astype(np.float32)
    lab[0, 0, 0] = -1
    for attrs in [{"multi_output": True},
                  {"multi_output": True, "normalization": "batch", "grad_scale": 3.0},
                  {"multi_output": True, "use_ignore": True, "normalization": "valid"},
                  {"multi_output": True, "smooth_alpha": 0.2}]:
        outs, grads, _ = _run_loss("SoftmaxOutput", [x, lab], attrs)
        want = softmax_output_grad_np(_attrs("SoftmaxOutput", attrs), outs[0], lab)
        np.testing.assert_allclose(grads[0], want, rtol=1e-5, atol=1e-6, err_msg=str(attrs))
    # label (N, 1, d...) is accepted too; (N, d1*d2) is the default inferred shape
    outs, grads, _ = _run_loss("SoftmaxOutput", [x, lab.reshape(2, 1, 3, 2)],
                               {"multi_output": True})
    np.testing.assert_allclose(outs[0].sum(axis=1), 1.0, rtol=1e-5)
    # preserve_shape: softmax over the last axis, labels (N, T)
    x3 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    l3 = rng.integers(0, 5, (2, 3)).astype(np.float32)
    attrs = {"preserve_shape": True, "normalization": "batch"}
    outs, grads, _ = _run_loss("SoftmaxOutput", [x3, l3], attrs)
    np.testing.assert_allclose(outs[0].sum(-1), 1.0, rtol=1e-5)
    want = softmax_output_grad_np(_attrs("SoftmaxOutput", attrs), outs[0], l3)
    np.testing.assert_allclose(grads[0], want, rtol=1e-5, atol=1e-6)
    # probability labels (label shape == data shape): no normalization
    pl = rng.random((5, 7)).astype(np.float32)
    xx = rng.standard_normal((5, 7)).astype(np.float32)
    outs, grads, _ = _run_loss("SoftmaxOutput", [xx, pl], {"grad_scale": 2.0,
                                                           "normalization": "batch"})
    np.testing.assert_allclose(grads[0], (outs[0] - pl) * 2.0, rtol=1e-5, atol=1e-6)
    with pytest.raises(MXNetError):
        run_op("SoftmaxOutput", [xx, pl[:, :3]], {})
    with pytest.raises(OpError):
        run_op("SoftmaxOutput", [xx, pl], {"normalization": "bogus"})


@pytest.mark.parametrize("op,kind", [("LinearRegressionOutput", "linear"),
                                     ("LogisticRegressionOutput", "logistic"),
                                     ("MAERegressionOutput", "mae")])
def test_regression_outputs(op, kind):
    for shape, lshape in [((6, 3), (6, 3)), ((5, 1), (5,)), ((4, 2, 3), (4, 6))]:
        x = rng.standard_normal(shape).astype(np.float32)
        lab = rng.standard_normal(lshape).astype(np.float32)
        attrs = {"grad_scale": 1.5}
        outs, grads, _ = _run_loss(op, [x, lab], attrs)
        want = regression_grad_np(kind, 1.5, outs[0], lab)
        np.testing.assert_allclose(grads[0], want, rtol=1e-5, atol=1e-6)
        assert np.all(grads[1] == 0)
    with pytest.raises(ShapeError):
        run_op(op, [np.zeros((4, 3), np.float32), np.zeros((3, 4), np.float32)], {})


def test_make_loss():
    x = rng.standard_normal((4, 5)).astype(np.float32)
    for attrs in [{}, {"grad_scale": 0.5}, {"normalization": "batch", "grad_scale": 2.0},
                  {"normalization": "valid", "valid_thresh": 0.1}]:
        outs, grads, _ = _run_loss("MakeLoss", [x], attrs)
        np.testing.assert_array_equal(outs[0], x)
        want = make_loss_grad_np(_attrs("MakeLoss", attrs), x)
        np.testing.assert_allclose(grads[0], want, rtol=1e-6)


def test_softmax_cross_entropy_and_smooth_l1():
    x = rng.standard_normal((4, 6))
    lab = rng.integers(0, 6, 4).astype(np.float64)
    check_forward("softmax_cross_entropy", [x.astype(np.float32), lab.astype(np.float32)],
                  rtol=1e-5, atol=1e-5)
    check_grad("softmax_cross_entropy", [x, lab], which=[0], rtol=1e-5, atol=1e-7, eps=1e-6)
    v = rng.standard_normal((3, 7)) * 2
    for sigma in (1.0, 2.0):
        check_forward("smooth_l1", [v.astype(np.float32)], {"scalar": sigma})
        check_grad("smooth_l1", [v], {"scalar": sigma}, rtol=1e-5, atol=1e-7, eps=1e-6)


def test_sym_loss_ops_case():
    d = CASES / "sym_loss_ops"
    if not d.exists():
        pytest.skip(f"{d} not present")
    from mxc.compiler.build import compile_graph
    from mxc.ir.graph import Graph

    meta = json.loads((d / "meta.json").read_text())
    graph = Graph.from_json_dict(json.loads((d / meta["symbol"]).read_text()))
    feed = {i["name"]: np.load(d / i["file"]) for i in meta["inputs"]}
    shapes = {k: v.shape for k, v in feed.items()}
    types = {k: v.dtype.name for k, v in feed.items()}
    for is_train, prefix in ((False, "out_"), (True, "out_train_")):
        req = meta["backward"]["grad_req"] if is_train else None
        cg = compile_graph(graph, shapes, types, is_train=is_train, grad_req=req)
        prog = cg.program
        prog.allocate()

        def view(slot, key, cg=cg, prog=prog):
            shp, dt = cg.shapes[key], np.dtype(cg.types[key])
            return prog.storage[slot][: int(np.prod(shp)) * dt.itemsize].view(dt).reshape(shp)

        var = {n.name: n for n in graph.variables()}
        for name, x in feed.items():
            view(cg.var_slots[name], (var[name].uid, 0))[...] = x
        prog.run("forward")
        for k, (h, slot) in enumerate(zip(graph.outputs, cg.head_slots)):
            got = view(slot, (h.node.uid, h.index))
            want = np.load(d / f"{prefix}{k}.npy")
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"out {k}")
        if not is_train:
            continue
        for h, slot in zip(graph.outputs, cg.head_grad_slots):
            view(slot, (h.node.uid, h.index))[...] = 1.0
        prog.run("backward")
        for name, f in meta["backward"]["grads"].items():
            got = view(cg.grad_slots[name], (var[name].uid, 0))
            want = np.load(d / f)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"grad {name}")
