"""Common-subexpression and dead-code elimination on the graph.

Two op nodes are the same computation when they have the same op, the same attributes (every
string attribute, hidden ``__x__`` keys included) and the same input entries: the later one is
dropped and its consumers read the earlier one. Never merged: random ops (two samplers are two
draws), ops that read the train/inference mode or update auxiliary states (Dropout,
BatchNorm: their effects are per node), ops with subgraphs or control dependencies.

Dead code needs no pass of its own: a ``Graph`` is what its outputs reach (``Graph.nodes``),
so nodes no output needs -- including the duplicates dropped here -- are never lowered.

Needs: a graph. Provides: an equivalent graph (the input graph is not modified; nodes are
copied only where an input changed, variables are shared) and, for every output entry of
the input graph, the entry that now computes it.
"""
from __future__ import annotations

from ..ir.graph import Entry, Graph, Node


def eliminate_common_subexpressions(graph: Graph) -> tuple[Graph, list]:
    """(graph without duplicate computations, its output entries in the input's order);
    returns the input graph itself when nothing is duplicated."""
    kept: dict = {}           # computation key -> representative node (of the new graph)
    new: dict = {}            # old uid -> node standing for it in the new graph
    changed = False
    for n in graph.nodes:
        if n.is_variable:
            new[n.uid] = n
            continue
        inputs = [Entry(new[e.node.uid], e.index) for e in n.inputs]
        same_inputs = all(a.node is e.node for a, e in zip(inputs, n.inputs))
        key = _key(n, inputs)
        if key is not None and key in kept:
            new[n.uid] = kept[key]
            changed = True
            continue
        if same_inputs:
            node = n
        else:
            node = Node(n.op, n.name, n.attrs, inputs, n.control_deps, n.subgraphs)
            changed = True
        new[n.uid] = node
        if key is not None:
            kept[key] = node
    if not changed:
        return graph, list(graph.outputs)
    outs = [Entry(new[e.node.uid], e.index) for e in graph.outputs]
    return Graph(outs), outs


def _key(n: Node, inputs: list):
    op = n.opdef
    if op.random or op.uses_train_mode or n.subgraphs or n.control_deps or \
            op.aux_indices(n.parsed):
        return None
    return (n.op, tuple(sorted(n.attrs.items())),
            tuple((e.node.uid, e.index) for e in inputs))
