"""Constant folding for inference graphs whose parameter values are known at compile time
(``CompiledModel``; any caller holding fixed parameters can use :func:`fold_constants`): the
values are baked into new parameters, so the compiled graph does less work per run.

* **BatchNorm folding**: an inference BatchNorm whose data is a Convolution or
  FullyConnected output used by nothing else becomes part of that layer's weights:
  ``W' = W * s`` and ``b' = (b - mean) * s + beta`` per output channel, with
  ``s = gamma / sqrt(moving_var + eps)`` (gamma = 1 with ``fix_gamma``). The convolution gets a
  bias if it had none; the BatchNorm node disappears.
* **Parameter-only subgraphs**: nodes all of whose inputs are parameters (or such nodes) are
  compiled and run once — by mxc's own generated code, like any graph — and replaced by new
  parameters holding their values.

Never applied to training binds or executors (their parameters change between runs).
Needs: the graph and a dict of parameter values. Provides: an equivalent graph (new nodes;
the caller's graph is not modified) and the parameter values it uses.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Entry, Graph, Node, variable

_FOLDABLE = ("Convolution", "Convolution_v1", "FullyConnected")


def fold_constants(graph: Graph, params: dict, *, batchnorm: bool = True,
                   subgraphs: bool = True) -> tuple[Graph, dict]:
    """(folded graph, its parameter values) for inference with fixed ``params``."""
    params = dict(params)
    if batchnorm:
        graph, params = _fold_batchnorm(graph, params)
    if subgraphs:
        graph, params = _fold_param_subgraphs(graph, params)
    used = {n.name for n in graph.variables()}
    return graph, {k: v for k, v in params.items() if k in used}


# ---------------------------------------------------------------------------------------------
# shared rewriting helper
# ---------------------------------------------------------------------------------------------
def _uses(graph: Graph) -> dict:
    """(node uid, output index) -> number of uses (graph outputs count as uses)."""
    uses: dict = {}
    for n in graph.nodes:
        for e in n.inputs:
            k = (e.node.uid, e.index)
            uses[k] = uses.get(k, 0) + 1
    for e in graph.outputs:
        k = (e.node.uid, e.index)
        uses[k] = uses.get(k, 0) + 1
    return uses


def _rebuild(graph: Graph, replace: dict) -> Graph:
    """A copy of ``graph`` where ``replace[(uid, index)]`` (an Entry of new nodes, or a
    callable of the copied inputs returning one) stands for that entry."""
    new: dict = {}          # old uid -> new node

    def entry(e: Entry) -> Entry:
        r = replace.get((e.node.uid, e.index))
        if r is not None:
            return r(entry) if callable(r) else r
        return Entry(new[e.node.uid], e.index)

    for n in graph.nodes:
        if all((n.uid, i) in replace for i in range(n.num_outputs)) and not n.is_variable:
            continue        # fully replaced: its copy would be dead
        if n.is_variable:
            new[n.uid] = n  # variables are shared (names are what binds them)
            continue
        c = Node(n.op, n.name, n.attrs, [], subgraphs=n.subgraphs)
        new[n.uid] = c
        c.inputs = [entry(e) for e in n.inputs]
        c.control_deps = [new[d.uid] for d in n.control_deps if d.uid in new]
    return Graph([entry(e) for e in graph.outputs])


def _unique(name: str, taken: set) -> str:
    out, i = name, 1
    while out in taken:
        out = f"{name}{i}"
        i += 1
    taken.add(out)
    return out


# ---------------------------------------------------------------------------------------------
# BatchNorm into Convolution / FullyConnected
# ---------------------------------------------------------------------------------------------
def _fold_batchnorm(graph: Graph, params: dict) -> tuple[Graph, dict]:
    uses = _uses(graph)
    taken = {n.name for n in graph.variables()} | set(params)
    replace: dict = {}
    params = dict(params)
    for bn in graph.nodes:
        if bn.op != "BatchNorm":
            continue
        layer = bn.inputs[0].node
        if layer.op not in _FOLDABLE or bn.inputs[0].index != 0:
            continue
        if uses.get((layer.uid, 0), 0) != 1 or uses.get((bn.uid, 1)) or uses.get((bn.uid, 2)):
            continue
        vals = _bn_values(bn, layer, params)
        if vals is None:
            continue
        w, b, gamma, beta, mean, var = vals
        a = bn.parsed
        scale = (np.ones_like(var) if a.fix_gamma else gamma) / np.sqrt(var + a.eps)
        wf = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        bf = (b - mean) * scale + beta
        wname = _unique(f"{layer.name}_bnfold_weight", taken)
        bname = _unique(f"{layer.name}_bnfold_bias", taken)
        params[wname] = wf.astype(params[layer.inputs[1].node.name].dtype)
        params[bname] = bf.astype(params[wname].dtype)
        attrs = dict(layer.attrs)
        attrs["no_bias"] = "False"

        def make(entry, layer=layer, attrs=attrs, wname=wname, bname=bname) -> Entry:
            c = Node(layer.op, layer.name, attrs,
                     [entry(layer.inputs[0]), Entry(variable(wname), 0),
                      Entry(variable(bname), 0)])
            return Entry(c, 0)

        cache: dict = {}

        def once(entry, make=make, cache=cache) -> Entry:
            if "e" not in cache:
                cache["e"] = make(entry)
            return cache["e"]

        replace[(bn.uid, 0)] = once
        replace[(layer.uid, 0)] = once
    if not replace:
        return graph, params
    return _rebuild(graph, replace), params


def _bn_values(bn: Node, layer: Node, params: dict):
    """float64 (weight, bias, gamma, beta, mean, var) when the fold applies, else None."""
    a = bn.parsed
    la = layer.parsed
    names = [e.node.name if e.node.is_variable else None for e in bn.inputs[1:5]]
    lnames = [e.node.name if e.node.is_variable else None for e in layer.inputs[1:]]
    if any(n is None or n not in params for n in names + lnames):
        return None
    w = np.asarray(params[lnames[0]])
    if w.dtype.kind != "f" or w.dtype == np.float16:
        return None
    if layer.op == "FullyConnected":
        ndim = 2 if la.flatten else None
        channels = la.num_hidden
    else:
        if la.layout not in (None, "NCW", "NCHW", "NCDHW"):
            return None
        ndim = 2 + len(la.kernel)
        channels = la.num_filter
    axis = a.axis
    if ndim is None:
        if axis != -1:
            return None
    elif (axis % ndim if -ndim <= axis < ndim else None) != (1 if layer.op != "FullyConnected"
                                                            else ndim - 1):
        return None
    gamma, beta, mean, var = (np.asarray(params[n], np.float64) for n in names)
    if any(v.shape != (channels,) for v in (gamma, beta, mean, var)) or w.shape[0] != channels:
        return None
    b = np.zeros(channels) if la.no_bias else np.asarray(params[lnames[1]], np.float64)
    return w.astype(np.float64), b, gamma, beta, mean, var


# ---------------------------------------------------------------------------------------------
# parameter-only subgraphs
# ---------------------------------------------------------------------------------------------
def _fold_param_subgraphs(graph: Graph, params: dict) -> tuple[Graph, dict]:
    const: set = set()
    for n in graph.nodes:
        if n.is_variable:
            if n.name in params:
                const.add(n.uid)
            continue
        op = n.opdef
        if n.inputs and not op.random and all(e.node.uid in const for e in n.inputs):
            const.add(n.uid)
    heads = {(e.node.uid, e.index) for e in graph.outputs}
    frontier: list = []
    seen: set = set()
    for n in graph.nodes:
        if n.is_variable or n.uid in const:
            continue
        for e in n.inputs:
            k = (e.node.uid, e.index)
            if e.node.uid in const and not e.node.is_variable and k not in heads and \
                    k not in seen:
                seen.add(k)
                frontier.append(e)
    if not frontier:
        return graph, params
    values = _evaluate(Graph(frontier), params)
    taken = {n.name for n in graph.variables()} | set(params)
    params = dict(params)
    replace: dict = {}
    for e, v in zip(frontier, values):
        name = _unique(f"{e.node.name}_const{e.index}" if e.index else f"{e.node.name}_const",
                       taken)
        params[name] = v
        replace[(e.node.uid, e.index)] = Entry(variable(name), 0)
    return _rebuild(graph, replace), params


def _evaluate(sub: Graph, params: dict) -> list:
    """Run ``sub`` (inputs: parameters only) once with mxc's generated code."""
    from .build import compile_graph

    vals = {n.name: np.ascontiguousarray(params[n.name]) for n in sub.variables()}
    cg = compile_graph(sub, {k: v.shape for k, v in vals.items()},
                       {k: v.dtype.name for k, v in vals.items()})
    p = cg.program.clone()
    p.allocate({cg.var_slots[k]: v.view(np.uint8).reshape(-1) for k, v in vals.items()})
    p.run("forward")
    out = []
    for e, s in zip(sub.outputs, cg.head_slots):
        key = (e.node.uid, e.index)
        dt = np.dtype(cg.types[key])
        shape = tuple(cg.shapes[key])
        n = int(np.prod(shape)) * dt.itemsize
        out.append(np.array(p.storage[s][:n].view(dt).reshape(shape)))
    return out
