"""Test helpers: run one operator through the whole compiler and check it against its numpy
reference (forward) and finite differences of that reference (gradient).

Modelled on tinygrad's ``helper_test_op``: one call checks shapes, dtypes, forward values and
gradients with separate tolerances. The compiled code is what runs; the numpy reference is
only the oracle.
"""
from __future__ import annotations

import numpy as np

from .ir import registry
from .ir.graph import Entry, Graph, make_node, variable


def _graph(op: str, n_inputs: int, attrs: dict):
    opdef = registry.get(op)
    node = make_node(op, [], attrs, name="op")
    names = opdef.input_names(node.parsed)
    if len(names) < n_inputs:
        names = names + [f"in{i}" for i in range(len(names), n_inputs)]
    vars_ = [variable(names[i]) for i in range(n_inputs)]
    node.inputs = [Entry(v, 0) for v in vars_]
    nvis = opdef.num_visible_outputs(node.parsed)
    return Graph([Entry(node, i) for i in range(nvis)]), vars_, node


def run_op(op: str, inputs: list, attrs: dict | None = None, *, is_train: bool = False,
           head_grads: list | None = None, grad_req: str | dict = "write"):
    """Compile and run ``op`` on numpy ``inputs``. Returns (outputs, input grads or None,
    inputs after the run — aux states may be updated)."""
    from .compiler.build import compile_graph

    attrs = attrs or {}
    graph, vars_, node = _graph(op, len(inputs), attrs)
    shapes = {v.name: tuple(x.shape) for v, x in zip(vars_, inputs)}
    types = {v.name: np.asarray(x).dtype.name for v, x in zip(vars_, inputs)}
    want_grad = head_grads is not None
    req = None
    if want_grad:
        aux = set(node.opdef.aux_indices(node.parsed))
        if isinstance(grad_req, str):
            req = {v.name: ("null" if i in aux else grad_req) for i, v in enumerate(vars_)}
        else:
            req = grad_req
    cg = compile_graph(graph, shapes, types, is_train=is_train or want_grad, grad_req=req)
    prog = cg.program
    prog.allocate()

    def view(slot, shape, dt):
        return prog.storage[slot][: int(np.prod(shape)) * np.dtype(dt).itemsize].view(dt) \
            .reshape(shape)

    for v, x in zip(vars_, inputs):
        x = np.asarray(x)
        view(cg.var_slots[v.name], x.shape, x.dtype)[...] = x
    prog.run("forward")
    outs = []
    for e, slot in zip(graph.outputs, cg.head_slots):
        k = (e.node.uid, e.index)
        outs.append(view(slot, cg.shapes[k], np.dtype(_np_name(cg.types[k]))).copy())
    grads = None
    if want_grad:
        for slot, hg, o in zip(cg.head_grad_slots, head_grads, outs):
            view(slot, o.shape, o.dtype)[...] = hg
        prog.run("backward")
        grads = []
        for v, x in zip(vars_, inputs):
            s = cg.grad_slots.get(v.name)
            grads.append(None if s is None else view(s, np.shape(x), np.asarray(x).dtype).copy())
    after = [view(cg.var_slots[v.name], np.shape(x), np.asarray(x).dtype).copy()
             for v, x in zip(vars_, inputs)]
    return outs, grads, after


def _np_name(dt: str) -> str:
    return "uint16" if dt == "bfloat16" else dt


def reference(op: str, inputs: list, attrs: dict | None = None, is_train: bool = False):
    opdef = registry.get(op)
    graph, vars_, node = _graph(op, len(inputs), attrs or {})
    outs = opdef.reference(node.parsed, [np.array(x, copy=True) for x in inputs], is_train)
    return outs[: opdef.num_visible_outputs(node.parsed)]


def check_forward(op: str, inputs: list, attrs: dict | None = None, *, rtol: float = 1e-5,
                  atol: float = 1e-6, is_train: bool = False) -> list:
    got, _, _ = run_op(op, inputs, attrs, is_train=is_train)
    want = reference(op, inputs, attrs, is_train)
    assert len(got) == len(want), f"{op}: {len(got)} outputs, reference has {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        b = np.asarray(b)
        assert a.shape == b.shape, f"{op} output {i}: shape {a.shape}, reference {b.shape}"
        assert a.dtype == b.dtype, f"{op} output {i}: dtype {a.dtype}, reference {b.dtype}"
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol,
                                   atol=atol, err_msg=f"{op} output {i} attrs={attrs}")
    return got


def numeric_grad(op: str, inputs: list, attrs: dict | None, head_grads: list,
                 eps: float = 1e-3, which: list | None = None, is_train: bool = True) -> list:
    """Central differences of sum(reference(x) * head_grad) in float64."""
    xs = [np.array(x, np.float64, copy=True, order="C") for x in inputs]
    which = range(len(xs)) if which is None else which

    def f(vals):
        outs = reference(op, [v.astype(inputs[i].dtype) if inputs[i].dtype.kind != "f"
                              else v for i, v in enumerate(vals)], attrs, is_train)
        return sum(float(np.sum(np.asarray(o, np.float64) * hg)) for o, hg in
                   zip(outs, head_grads))

    grads = []
    for i in range(len(xs)):
        if i not in which:
            grads.append(None)
            continue
        gi = np.zeros_like(xs[i])
        flat = xs[i].reshape(-1)
        gflat = gi.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            fp = f(xs)
            flat[j] = old - eps
            fm = f(xs)
            flat[j] = old
            gflat[j] = (fp - fm) / (2 * eps)
        grads.append(gi)
    return grads


def check_grad(op: str, inputs: list, attrs: dict | None = None, *, rtol: float = 1e-2,
               atol: float = 1e-3, eps: float = 1e-3, which: list | None = None,
               is_train: bool = True, seed: int = 0) -> None:
    """Compiled backward vs finite differences of the numpy reference (random head grads)."""
    rng = np.random.default_rng(seed)
    ref_out = reference(op, inputs, attrs, is_train)
    hgs = [rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype) for o in ref_out]
    _, grads, _ = run_op(op, inputs, attrs, head_grads=hgs, is_train=is_train)
    num = numeric_grad(op, inputs, attrs, hgs, eps, which, is_train)
    for i, (a, b) in enumerate(zip(grads, num)):
        if b is None:
            continue
        assert a is not None, f"{op}: no gradient for input {i}"
        np.testing.assert_allclose(a.astype(np.float64), b, rtol=rtol, atol=atol,
                                   err_msg=f"{op} gradient of input {i} attrs={attrs}")
