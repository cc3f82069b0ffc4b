"""Constant folding for inference with known parameters (``compiler.fold_constants``):
BatchNorm folded into the Convolution / FullyConnected before it, parameter-only subgraphs
evaluated once; the folded model gives the same numbers."""
from __future__ import annotations

import numpy as np
import pytest

import mxc as mx
from mxc.compiler.fold_constants import fold_constants
from mxc.compiler.model import CompiledModel

RNG = np.random.default_rng(3)
V = mx.sym.Variable


def _bn_params(prefix, c):
    return {f"{prefix}_gamma": RNG.uniform(0.5, 2, c).astype(np.float32),
            f"{prefix}_beta": RNG.standard_normal(c).astype(np.float32),
            f"{prefix}_moving_mean": RNG.standard_normal(c).astype(np.float32),
            f"{prefix}_moving_var": RNG.uniform(0.5, 2, c).astype(np.float32)}


def _bn(x, prefix, **kw):
    return mx.sym.BatchNorm(x, V(f"{prefix}_gamma"), V(f"{prefix}_beta"),
                            V(f"{prefix}_moving_mean"), V(f"{prefix}_moving_var"),
                            name=prefix, **kw)


def _compare(sym, params, feed, n_bn_left=0, rtol=1e-4, atol=1e-5):
    graph = sym._graph()
    aux = {n.name for n in graph.auxiliary()}
    arg = {k: v for k, v in params.items() if k not in aux}
    auxp = {k: v for k, v in params.items() if k in aux}
    shapes = {k: v.shape for k, v in feed.items()}
    plain = CompiledModel(graph, arg, auxp, shapes, fold=False)
    folded = CompiledModel(graph, arg, auxp, shapes)
    for a, b in zip(folded(**feed), plain(**feed)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    assert sum(n.op == "BatchNorm" for n in folded.graph.nodes) == n_bn_left
    return plain, folded


def test_conv_batchnorm_relu():
    x = V("data")
    c1 = mx.sym.Convolution(x, V("w1"), V("b1"), kernel=(3, 3), pad=(1, 1), num_filter=6,
                            name="c1")
    c2 = mx.sym.Convolution(c1, V("w2"), kernel=(1, 1), num_filter=4, no_bias=True,
                            num_group=2, name="c2")
    y = mx.sym.broadcast_add(mx.sym.relu(_bn(c2, "bn2", fix_gamma=False)),
                             mx.sym.sum(_bn(c1, "bn1", fix_gamma=True, eps=1e-3)))
    params = {"w1": RNG.standard_normal((6, 3, 3, 3)).astype(np.float32),
              "b1": RNG.standard_normal(6).astype(np.float32),
              "w2": RNG.standard_normal((4, 3, 1, 1)).astype(np.float32),
              **_bn_params("bn1", 6), **_bn_params("bn2", 4)}
    feed = {"data": RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    # c1 feeds both c2 and bn1: bn1 cannot fold; bn2 folds into c2 (which gains a bias)
    _, folded = _compare(y, params, feed, n_bn_left=1)
    c2n = next(n for n in folded.graph.nodes if n.name == "c2")
    assert c2n.attrs["no_bias"] == "False" and len(c2n.inputs) == 3


def test_fc_batchnorm_and_unused_params_dropped():
    x = V("data")
    fc = mx.sym.FullyConnected(x, V("w"), V("b"), num_hidden=5, name="fc")
    y = mx.sym.softmax(_bn(fc, "bn", fix_gamma=False))
    params = {"w": RNG.standard_normal((5, 12)).astype(np.float32),
              "b": RNG.standard_normal(5).astype(np.float32), **_bn_params("bn", 5)}
    feed = {"data": RNG.standard_normal((3, 2, 6)).astype(np.float32)}
    plain, folded = _compare(y, params, feed)
    assert len(folded.compiled.kernels) < len(plain.compiled.kernels) or \
        folded.compiled.kernels_unfused < plain.compiled.kernels_unfused
    names = {n.name for n in folded.graph.variables()}
    assert not names & {"w", "b", "bn_gamma", "bn_moving_var"}


def test_batchnorm_not_folded_when_stats_are_outputs_or_axis_differs():
    x = V("data")
    conv = mx.sym.Convolution(x, V("w"), kernel=(1, 1), num_filter=3, no_bias=True, name="c")
    params = {"w": RNG.standard_normal((3, 3, 1, 1)).astype(np.float32), **_bn_params("bn", 3)}
    g, _ = fold_constants(_bn(conv, "bn", axis=1)._graph(), params)
    assert not any(n.op == "BatchNorm" for n in g.nodes)
    bn = _bn(conv, "bn", output_mean_var=True)
    g, _ = fold_constants(mx.sym.Group([bn[0], bn[1]])._graph(), params)
    assert any(n.op == "BatchNorm" for n in g.nodes)
    g, _ = fold_constants(_bn(conv, "bn", axis=3)._graph(),
                          {**params, **{k: v for k, v in _bn_params("bn", 3).items()}})
    assert any(n.op == "BatchNorm" for n in g.nodes)
    # the caller's graph is untouched
    orig = _bn(conv, "bn")._graph()
    before = [n.op for n in orig.nodes]
    fold_constants(orig, params)
    assert [n.op for n in orig.nodes] == before


def test_parameter_only_subgraph():
    x = V("data")
    w = mx.sym.transpose(V("wt")) * 0.5 + 1.0        # parameter-only: folded once
    y = mx.sym.FullyConnected(x, w, V("b"), num_hidden=4, name="fc")
    params = {"wt": RNG.standard_normal((7, 4)).astype(np.float32),
              "b": RNG.standard_normal(4).astype(np.float32)}
    feed = {"data": RNG.standard_normal((3, 7)).astype(np.float32)}
    plain, folded = _compare(y, params, feed)
    assert [n.op for n in folded.graph.nodes if not n.is_variable] == ["FullyConnected"]
    assert folded.compiled.kernels_unfused < plain.compiled.kernels_unfused


def test_resnet18_batchnorms_fold():
    import json
    from pathlib import Path

    from mxc.compiler.model import load_model

    d = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases" / "resnet18_v1"
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    graph, arg, aux = load_model(d / meta["symbol"], d / meta["params"])
    feed = {i["name"]: np.load(d / i["file"]) for i in meta["inputs"]}
    m = CompiledModel(graph, arg, aux, {k: v.shape for k, v in feed.items()})
    assert not any(n.op == "BatchNorm" for n in m.graph.nodes)
    want = np.load(d / meta["outputs"][0]["file"])
    np.testing.assert_allclose(m(**feed)[0], want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
