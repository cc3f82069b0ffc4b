"""Common-subexpression elimination (``compiler.cse``): duplicates computed once, callers'
output entries still resolve, random / train-mode / aux-updating ops never merged."""
from __future__ import annotations

import numpy as np

import mxc as mx
from mxc.compiler.build import compile_graph
from mxc.compiler.cse import eliminate_common_subexpressions

V = mx.sym.Variable
RNG = np.random.default_rng(3)


def _run(sym, values):
    shapes = {k: v.shape for k, v in values.items()}
    cg = compile_graph(sym._graph(), shapes)
    p = cg.program
    p.allocate()
    for k, v in values.items():
        p.storage[cg.var_slots[k]][: v.nbytes].view(v.dtype)[:] = v.ravel()
    p.run("forward")
    outs = []
    for e, s in zip(sym._graph().outputs, cg.head_slots):
        shape = cg.shapes[(e.node.uid, e.index)]      # the caller's entries resolve
        outs.append(p.storage[s][: int(np.prod(shape)) * 4].view(np.float32).reshape(shape))
    return cg, outs


def test_duplicates_merged_and_outputs_resolve():
    x, w = V("x"), V("w")
    a = mx.sym.FullyConnected(x, w, no_bias=True, num_hidden=6, name="fc_a")
    b = mx.sym.FullyConnected(x, w, no_bias=True, num_hidden=6, name="fc_b")   # same
    y = mx.sym.Group([mx.sym.exp(a) + mx.sym.exp(b), b])
    g = y._graph()
    g2, outs = eliminate_common_subexpressions(g)
    ops = [n.op for n in g2.nodes if not n.is_variable]
    assert ops.count("FullyConnected") == 1 and ops.count("exp") == 1
    assert len([n for n in g.nodes if n.op == "FullyConnected"]) == 2    # input untouched
    vals = {"x": RNG.standard_normal((3, 5)).astype(np.float32),
            "w": RNG.standard_normal((6, 5)).astype(np.float32)}
    _, (o1, o2) = _run(y, vals)
    h = vals["x"] @ vals["w"].T
    np.testing.assert_allclose(o1, 2 * np.exp(h), rtol=1e-5)
    np.testing.assert_allclose(o2, h, rtol=1e-5, atol=1e-6)


def test_different_attributes_or_inputs_stay():
    x = V("x")
    y = mx.sym.Group([mx.sym.sum(x, axis=0), mx.sym.sum(x, axis=1), mx.sym.exp(x),
                      mx.sym.exp(x * 2)])
    g2, _ = eliminate_common_subexpressions(y._graph())
    assert g2 is y._graph() or len(g2.nodes) == len(y._graph().nodes)


def test_random_and_train_mode_ops_never_merged():
    x = V("x")
    y = mx.sym.Group([mx.sym.random.uniform(shape=(3,)), mx.sym.random.uniform(shape=(3,)),
                      mx.sym.Dropout(x, p=0.5), mx.sym.Dropout(x, p=0.5)])
    g2, _ = eliminate_common_subexpressions(y._graph())
    ops = [n.op for n in g2.nodes if not n.is_variable]
    assert ops.count("Dropout") == 2 and len(ops) == 4
