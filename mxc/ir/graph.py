"""The graph IR: nodes, entries and graphs, compatible with MXNet's (nnvm's) JSON.

A :class:`Node` is a variable (``op == "null"``) or an operator application with string
attributes (as MXNet stores them) and input :class:`Entry` s. A :class:`Graph` is a list of
output entries; everything reachable from them is the graph. Symbols in the frontend wrap the
same objects, so composing symbols builds graphs directly.
"""
from __future__ import annotations

import itertools
from typing import Iterable, NamedTuple

from ..base import MXNetError
from . import registry

_ids = itertools.count()


class Node:
    """One graph node. ``attrs`` holds MXNet string attributes (incl. hidden ``__x__`` keys)."""

    __slots__ = ("op", "name", "attrs", "inputs", "control_deps", "subgraphs", "uid",
                 "_parsed", "__weakref__")

    def __init__(self, op: str, name: str, attrs: dict | None = None,
                 inputs: Iterable["Entry"] = (), control_deps: Iterable["Node"] = (),
                 subgraphs: list | None = None) -> None:
        self.op = op
        self.name = name
        self.attrs = dict(attrs or {})
        self.inputs = list(inputs)
        self.control_deps = list(control_deps)
        self.subgraphs = subgraphs or []
        self.uid = next(_ids)
        self._parsed = None

    @property
    def is_variable(self) -> bool:
        return self.op == "null"

    @property
    def opdef(self) -> "registry.OpDef":
        return registry.get(self.op)

    @property
    def parsed(self):
        """Typed attributes, parsed once by the op's ParamSpec."""
        if self._parsed is None:
            self._parsed = self.opdef.parse_attrs(self.attrs, self.name)
        return self._parsed

    @property
    def num_outputs(self) -> int:
        if self.is_variable:
            return 1
        return self.opdef.num_outputs(self.parsed)

    def __repr__(self) -> str:
        return f"Node({self.op}, {self.name!r})"


class Entry(NamedTuple):
    """Output ``index`` of ``node``."""

    node: Node
    index: int = 0

    def __repr__(self) -> str:
        return f"{self.node.name}[{self.index}]"


def variable(name: str, attrs: dict | None = None) -> Node:
    return Node("null", name, attrs)


def make_node(op: str, inputs: list[Entry], attrs: dict | None = None,
              name: str | None = None) -> Node:
    """An op node with attrs formatted as MXNet strings (values may be typed)."""
    from .params import format_value

    opdef = registry.get(op)
    sattrs = {k: (v if isinstance(v, str) else format_value(v)) for k, v in (attrs or {}).items()
              if v is not None or k in opdef.params.params}
    node = Node(opdef.name, name or f"{op.lower()}{next(_ids)}", sattrs, inputs)
    return node


def topo_order(outputs: Iterable[Entry]) -> list[Node]:
    """Nodes reachable from ``outputs`` in nnvm's DFS post-order (inputs before users).

    Iterative, so deep graphs do not hit the recursion limit; a cycle (only possible in a
    hand-built or hand-edited graph) raises instead of looping.
    """
    order: list[Node] = []
    state: dict[int, int] = {}  # uid -> 1 visiting, 2 done
    for head in outputs:
        root = head.node
        if state.get(root.uid) == 2:
            continue
        stack = [(root, 0)]
        state[root.uid] = 1
        while stack:
            node, i = stack[-1]
            deps = node.control_deps + [e.node for e in node.inputs]
            if i < len(deps):
                stack[-1] = (node, i + 1)
                d = deps[i]
                st = state.get(d.uid)
                if st == 1:
                    raise MXNetError(f"graph has a cycle through node '{d.name}' ({d.op})")
                if st is None:
                    state[d.uid] = 1
                    stack.append((d, 0))
            else:
                stack.pop()
                state[node.uid] = 2
                order.append(node)
    return order


class Graph:
    """A computation: its output entries; nodes are whatever they reach."""

    def __init__(self, outputs: Iterable[Entry]) -> None:
        self.outputs = list(outputs)
        self._topo: list[Node] | None = None

    @property
    def nodes(self) -> list[Node]:
        if self._topo is None:
            self._topo = topo_order(self.outputs)
        return self._topo

    def variables(self) -> list[Node]:
        return [n for n in self.nodes if n.is_variable]

    def mutable_variables(self) -> set[int]:
        """uids of variables written by some op (auxiliary states such as moving_mean)."""
        aux: set[int] = set()
        for n in self.nodes:
            if n.is_variable:
                continue
            for i in n.opdef.aux_indices(n.parsed):
                aux.add(n.inputs[i].node.uid)
        return aux

    def arguments(self) -> list[Node]:
        aux = self.mutable_variables()
        return [n for n in self.variables() if n.uid not in aux]

    def auxiliary(self) -> list[Node]:
        aux = self.mutable_variables()
        return [n for n in self.variables() if n.uid in aux]

    # -- JSON (dict level; byte-level text in ir.formats.symbol_json) -----------------------
    def to_json_dict(self) -> dict:
        nodes = self.nodes
        index = {n.uid: i for i, n in enumerate(nodes)}
        out_nodes = []
        row_ptr = [0]
        for n in nodes:
            d = {"op": n.op, "name": n.name}
            if n.attrs:
                d["attrs"] = dict(sorted(n.attrs.items()))
            aux = set(n.opdef.aux_indices(n.parsed)) if not n.is_variable else set()
            # nnvm bumps a variable's version when an op mutates it (aux states)
            d["inputs"] = [[index[e.node.uid], e.index, 1 if i in aux else 0]
                           for i, e in enumerate(n.inputs)]
            if n.control_deps:
                d["control_deps"] = [index[c.uid] for c in n.control_deps]
            if n.subgraphs:
                d["subgraphs"] = n.subgraphs
            out_nodes.append(d)
            row_ptr.append(row_ptr[-1] + n.num_outputs)
        return {
            "nodes": out_nodes,
            "arg_nodes": [i for i, n in enumerate(nodes) if n.is_variable],
            "node_row_ptr": row_ptr,
            "heads": [[index[e.node.uid], e.index, 0] for e in self.outputs],
            "attrs": {"mxnet_version": ["int", 10901]},
        }

    @classmethod
    def from_json_dict(cls, d: dict, source: str = "<json>") -> "Graph":
        nodes: list[Node] = []
        for i, nd in enumerate(d["nodes"]):
            op = nd["op"]
            if op != "null" and not registry.exists(op):
                raise MXNetError(f"{source}: node {i} ('{nd.get('name')}') uses unknown operator "
                                 f"'{op}'")
            inputs = []
            for ent in nd.get("inputs", []):
                nid, idx = int(ent[0]), int(ent[1])
                if not 0 <= nid < i:
                    raise MXNetError(f"{source}: node {i} ('{nd.get('name')}') has input {nid}, "
                                     "which is not an earlier node (dangling input or cycle)")
                inputs.append(Entry(nodes[nid], idx))
            deps = []
            for c in nd.get("control_deps", []):
                if not 0 <= int(c) < i:
                    raise MXNetError(f"{source}: node {i} ('{nd.get('name')}') has control "
                                     f"dependency {c}, which is not an earlier node")
                deps.append(nodes[int(c)])
            node = Node(op, nd["name"], nd.get("attrs", {}), inputs, deps,
                        nd.get("subgraphs") or None)
            nodes.append(node)
        heads = []
        for h in d["heads"]:
            nid, idx = int(h[0]), int(h[1])
            if not 0 <= nid < len(nodes):
                raise MXNetError(f"{source}: head refers to missing node {nid}")
            heads.append(Entry(nodes[nid], idx))
        g = cls(heads)
        for n in g.nodes:
            for e in n.inputs:
                if not 0 <= e.index < e.node.num_outputs:
                    raise MXNetError(f"{source}: node '{n.name}' reads output {e.index} of "
                                     f"'{e.node.name}', which has {e.node.num_outputs}")
            if not n.is_variable:
                n.parsed  # validate attributes now, naming the node
                want = n.opdef.num_inputs(n.parsed)
                if want is not None and len(n.inputs) != want:
                    raise MXNetError(f"{source}: node '{n.name}' ({n.op}) has {len(n.inputs)} "
                                     f"inputs, expected {want}")
        for h in heads:
            if not 0 <= h.index < h.node.num_outputs:
                raise MXNetError(f"{source}: head reads output {h.index} of '{h.node.name}', "
                                 f"which has {h.node.num_outputs}")
        return g


def _op_input_names(op: str, attrs: dict):
    """Input names of an op for the JSON upgraders (None when unknown or unparsable)."""
    if not registry.exists(op):
        return None
    opdef = registry.get(op)
    try:
        return opdef.input_names(opdef.parse_attrs({k: v for k, v in attrs.items()}))
    except MXNetError:
        return None


def load_json(text: str | bytes, source: str = "<string>") -> Graph:
    """A Graph from MXNet symbol JSON (legacy spellings upgraded, structure validated)."""
    from .formats import parse_symbol_json

    d = parse_symbol_json(text, source=source, op_input_names=_op_input_names)
    return Graph.from_json_dict(d, source)


def dump_json(graph: Graph) -> str:
    """MXNet 1.9.1-compatible symbol JSON text of ``graph``."""
    from .formats import dump_symbol_json

    return dump_symbol_json(graph.to_json_dict())
