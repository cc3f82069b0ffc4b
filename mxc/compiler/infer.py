"""Shape and type inference over a graph (MXNet's InferShape / InferType passes).

Each op's ``infer_shape`` may complete its inputs (FullyConnected infers its weight shape from
the data) as well as its outputs, so the pass sweeps the graph until nothing changes. Partial
inference leaves unknowns as None; full inference names the first entry it could not infer.
"""
from __future__ import annotations

from ..base import MXNetError, ShapeError
from ..ir.graph import Graph, Node
from ..ir.params import parse_shape

Key = tuple  # (node uid, output index)


def _key(node: Node, i: int = 0) -> Key:
    return (node.uid, i)


def _shape_from_attr(node: Node):
    s = node.attrs.get("__shape__")
    if s is None:
        return None
    shp = parse_shape(s)
    if any(d is None or d == 0 for d in shp) and len(shp) > 0:
        return None  # partially known hint: not a full shape
    return tuple(shp)


def infer_shapes(graph: Graph, known: dict[str, tuple], partial: bool = False) -> dict:
    """Return {entry key: shape}. ``known`` maps variable names to shapes."""
    shapes: dict = {}
    for n in graph.variables():
        s = known.get(n.name)
        if s is None:
            s = _shape_from_attr(n)
        if s is not None:
            shapes[_key(n)] = tuple(int(d) for d in s)
    nodes = [n for n in graph.nodes if not n.is_variable]
    for _ in range(len(nodes) + 2):
        changed = False
        for n in nodes:
            op = n.opdef
            ins = [shapes.get(_key(e.node, e.index)) for e in n.inputs]
            outs_before = [shapes.get(_key(n, i)) for i in range(n.num_outputs)]
            try:
                new_in, new_out = op.infer_shape(n.parsed, list(ins))
            except ShapeError as e:
                raise ShapeError(f"shape inference failed at node '{n.name}' ({n.op}): {e}; "
                                 f"input shapes {_fmt(n, ins)}") from None
            except MXNetError:
                raise
            except (ValueError, TypeError, IndexError, ZeroDivisionError) as e:
                raise ShapeError(f"shape inference failed at node '{n.name}' ({n.op}): {e}; "
                                 f"input shapes {_fmt(n, ins)}") from None
            for e, s in zip(n.inputs, new_in):
                changed |= _merge(shapes, _key(e.node, e.index), s, n, e)
            for i, s in enumerate(new_out):
                if i < len(outs_before):
                    changed |= _merge(shapes, _key(n, i), s, n, None)
            ins = [shapes.get(_key(e.node, e.index)) for e in n.inputs]
            if any(s is None for s in ins):
                outs = [shapes.get(_key(n, i)) for i in range(n.num_outputs)]
                if any(s is not None for s in outs):
                    back = op.infer_shape_backward(n.parsed, list(ins), outs)
                    for e, s in zip(n.inputs, back):
                        changed |= _merge(shapes, _key(e.node, e.index), s, n, e)
        if not changed:
            break
    if not partial:
        for n in graph.nodes:
            for i in range(n.num_outputs):
                if shapes.get(_key(n, i)) is None:
                    if n.is_variable:
                        raise ShapeError(f"cannot infer the shape of input '{n.name}': give it "
                                         "a shape (e.g. data=(1, 3, 224, 224))")
                    raise ShapeError(f"cannot infer the shape of output {i} of node "
                                     f"'{n.name}' ({n.op})")
    return shapes


def _fmt(n: Node, ins: list) -> str:
    names = n.opdef.input_names(n.parsed)
    parts = []
    for i, s in enumerate(ins):
        nm = names[i] if i < len(names) else f"arg{i}"
        parts.append(f"{nm}={s}")
    return "{" + ", ".join(parts) + "}"


def _merge(shapes: dict, key: Key, s, node: Node, entry) -> bool:
    if s is None:
        return False
    s = tuple(int(d) for d in s)
    old = shapes.get(key)
    if old is None:
        shapes[key] = s
        return True
    if old != s:
        what = f"input '{entry.node.name}'" if entry is not None else f"output of '{node.name}'"
        raise ShapeError(f"shape mismatch at node '{node.name}' ({node.op}) for {what}: "
                         f"inferred {s}, but it is {old}")
    return False


def infer_types(graph: Graph, known: dict[str, str], partial: bool = False) -> dict:
    """Return {entry key: dtype name}. Unknown inputs default to float32 (as MXNet's
    simple_bind does) unless ``partial``."""
    from ..ir.dtypes import as_dtype

    types: dict = {}
    for n in graph.variables():
        t = known.get(n.name)
        if t is None and "__dtype__" in n.attrs:
            code = int(n.attrs["__dtype__"])
            t = as_dtype(code).name if code >= 0 else None
        if t is not None:
            try:
                types[_key(n)] = as_dtype(t).name
            except ValueError as e:
                raise MXNetError(f"input '{n.name}': {e}") from None
    nodes = [n for n in graph.nodes if not n.is_variable]
    for _ in range(len(nodes) + 2):
        changed = False
        for n in nodes:
            ins = [types.get(_key(e.node, e.index)) for e in n.inputs]
            try:
                new_in, new_out = n.opdef.infer_type(n.parsed, list(ins))
            except MXNetError as e:
                raise type(e)(f"type inference failed at node '{n.name}' ({n.op}): {e}") \
                    from None
            for e, t in zip(n.inputs, new_in):
                k = _key(e.node, e.index)
                if t is not None and types.get(k) is None:
                    types[k] = t
                    changed = True
                elif t is not None and types[k] != t:
                    raise MXNetError(f"type mismatch at node '{n.name}' ({n.op}): input "
                                     f"'{e.node.name}' is {types[k]}, expected {t}")
            for i, t in enumerate(new_out):
                k = _key(n, i)
                if t is not None and types.get(k) is None:
                    types[k] = t
                    changed = True
        if not changed:
            break
    if not partial:
        # MXNet defaults unknown argument types to float32 and infers again
        missing = [n for n in graph.variables() if _key(n) not in types]
        if missing:
            known2 = dict(known)
            for n in missing:
                known2[n.name] = "float32"
            return infer_types(graph, known2, partial=False)
        for n in graph.nodes:
            for i in range(n.num_outputs):
                if types.get(_key(n, i)) is None:
                    raise MXNetError(f"cannot infer the dtype of output {i} of '{n.name}'")
    return types
