"""Reverse-mode differentiation of a graph (MXNet's Gradient pass).

Walks the graph backwards from the heads, asks each op's ``gradient`` for the gradients of
its inputs given those of its outputs, and sums contributions with ``add_n``. Outputs that
receive no gradient get ``zeros_like``. The result is new graph entries, so the backward pass
is an ordinary graph that the same shape inference, lowering and codegen handle.
"""
from __future__ import annotations

from ..base import MXNetError
from ..ir.graph import Entry, Graph, Node, make_node


def gradient(graph: Graph, head_grads: list[Entry], xs: list[Node]) -> list:
    """Gradient entries of ``xs`` (variables), or None where no gradient flows."""
    if len(head_grads) != len(graph.outputs):
        raise MXNetError(f"{len(graph.outputs)} outputs but {len(head_grads)} head gradients")
    contrib: dict[tuple, list[Entry]] = {}
    for h, g in zip(graph.outputs, head_grads):
        contrib.setdefault((h.node.uid, h.index), []).append(g)
    wanted = {x.uid for x in xs}
    # only nodes on a path to a wanted variable need gradients
    needs: dict[int, bool] = {}
    for n in graph.nodes:
        if n.is_variable:
            needs[n.uid] = n.uid in wanted
        else:
            needs[n.uid] = any(needs[e.node.uid] for e in n.inputs)
    for node in reversed(graph.nodes):
        if node.is_variable or not needs[node.uid]:
            continue
        outs = [contrib.get((node.uid, i)) for i in range(node.num_outputs)]
        if all(o is None for o in outs):
            continue
        out_grads = []
        for i, o in enumerate(outs):
            if o is None:
                out_grads.append(Entry(make_node("zeros_like", [Entry(node, i)],
                                                 name=f"{node.name}_zero_ograd{i}"), 0))
            else:
                out_grads.append(_sum(o, f"{node.name}_ograd{i}"))
        op = node.opdef
        if not op.differentiable:
            continue
        in_grads = op.gradient(node, out_grads)
        if len(in_grads) != len(node.inputs):
            raise MXNetError(f"gradient of {node.op} returned {len(in_grads)} entries for "
                             f"{len(node.inputs)} inputs")
        for e, g in zip(node.inputs, in_grads):
            if g is None or not needs[e.node.uid]:
                continue
            contrib.setdefault((e.node.uid, e.index), []).append(g)
    result = []
    for x in xs:
        c = contrib.get((x.uid, 0))
        result.append(None if c is None else _sum(c, f"{x.name}_grad_sum"))
    return result


def _sum(entries: list[Entry], name: str) -> Entry:
    if len(entries) == 1:
        return entries[0]
    # contributions arrive in reverse consumer order; MXNet sums them in forward order,
    # and float addition order decides the last bit
    entries = list(reversed(entries))
    return Entry(make_node("add_n", entries, {"num_args": len(entries)}, name=name), 0)
