"""``mx.viz``: print a Symbol as a layer table, draw it with Graphviz (MXNet 1.9.1's
``python/mxnet/visualization.py``).

Both work on the symbol's MXNet JSON (``Symbol.tojson``), as MXNet does, so the node names,
attributes and output names are exactly what MXNet would show. ``print_summary`` prints the
same table (layer, output shape without the batch axis, parameter count, inputs) and total;
``plot_network`` returns a ``graphviz.Digraph`` when the ``graphviz`` package is installed.
"""
from __future__ import annotations

import copy
import json
import re
import warnings

__all__ = ["plot_network", "print_summary"]


def _str2tuple(string: str) -> list:
    """The numbers of an MXNet tuple attribute as strings: '(3, 3)' -> ['3', '3']."""
    return re.findall(r"\d+", string)


def _check_symbol(symbol) -> None:
    from .frontend.symbol import Symbol
    if not isinstance(symbol, Symbol):
        raise TypeError("symbol must be Symbol")


def _internal_dict(symbol, values: dict, infer: str, what: str) -> dict:
    """Output name of every internal node -> its inferred shape (or dtype)."""
    internals = symbol.get_internals()
    _, outs, _ = getattr(internals, infer)(**values)
    if outs is None:
        raise ValueError(f"Input {what} is incomplete")
    return dict(zip(internals.list_outputs(), outs))


def _print_row(fields, positions) -> None:
    line = ""
    for i, field in enumerate(fields):
        line += str(field)
        line = line[: positions[i]]
        line += " " * (positions[i] - len(line))
    print(line)


def _layer_params(node: dict, pre_filter: int, shape_dict) -> int:
    """Parameter count of a layer as MXNet's summary estimates it (Convolution,
    FullyConnected, BatchNorm, Embedding; 0 for the rest)."""
    op = node["op"]
    attrs = node.get("attrs", {})
    no_bias = attrs.get("no_bias", "False") == "True"
    if op == "Convolution":
        num_group = int(attrs.get("num_group", "1"))
        n = pre_filter * int(attrs["num_filter"]) // num_group
        for k in _str2tuple(attrs["kernel"]):
            n *= int(k)
        return n if no_bias else n + int(attrs["num_filter"])
    if op == "FullyConnected":
        return (pre_filter if no_bias else pre_filter + 1) * int(attrs["num_hidden"])
    if op == "BatchNorm" and shape_dict is not None:
        return int(shape_dict[node["name"] + "_output"][1]) * 2
    if op == "Embedding":
        return int(attrs["input_dim"]) * int(attrs["output_dim"])
    return 0


def print_summary(symbol, shape=None, line_length=120, positions=(.44, .64, .74, 1.)):
    """Print the layers of ``symbol``: name(op), output shape (batch axis dropped, when
    ``shape`` gives the input shapes), parameter count and the layers feeding it; then the
    total parameter count."""
    _check_symbol(symbol)
    shape_dict = _internal_dict(symbol, shape, "infer_shape", "shape") \
        if shape is not None else None
    conf = json.loads(symbol.tojson())
    nodes = conf["nodes"]
    heads = set(conf["heads"][0])
    positions = list(positions)
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    print("_" * line_length)
    _print_row(["Layer (type)", "Output Shape", "Param #", "Previous Layer"], positions)
    print("=" * line_length)

    def layer(node: dict, out_shape) -> int:
        pre_node = []
        pre_filter = 0
        if node["op"] != "null":
            for item in node["inputs"]:
                inp = nodes[item[0]]
                if inp["op"] == "null" and item[0] not in heads:
                    continue   # weights and data are not layers
                pre_node.append(inp["name"])
                if shape_dict is not None:
                    key = inp["name"] + "_output" if inp["op"] != "null" else inp["name"]
                    if key in shape_dict:
                        pre_filter += int(shape_dict[key][1:][0])
        params = _layer_params(node, pre_filter, shape_dict)
        _print_row([f"{node['name']}({node['op']})", "x".join(str(x) for x in out_shape),
                    params, pre_node[0] if pre_node else ""], positions)
        for extra in pre_node[1:]:
            _print_row(["", "", "", extra], positions)
        return params

    total_params = 0
    for i, node in enumerate(nodes):
        out_shape = []
        op = node["op"]
        if op == "null" and i > 0:
            continue
        if (op != "null" or i in heads) and shape_dict is not None:
            key = node["name"] + "_output" if op != "null" else node["name"]
            if key in shape_dict:
                out_shape = shape_dict[key][1:]
        total_params += layer(node, out_shape)
        print(("=" if i == len(nodes) - 1 else "_") * line_length)
    print(f"Total params: {total_params}")
    print("_" * line_length)


_COLORS = ("#8dd3c7", "#fb8072", "#ffffb3", "#bebada", "#80b1d3", "#fdb462", "#b3de69",
           "#fccde5")
_WEIGHT_LIKE = ("_weight", "_bias", "_beta", "_gamma", "_moving_var", "_moving_mean",
                "_running_var", "_running_mean")


def _node_look(node: dict) -> tuple:
    """(label, fill colour) of an operator node, as MXNet draws it."""
    op = node["op"]
    attrs = node.get("attrs", {})
    if op == "Convolution":
        stride = "x".join(_str2tuple(attrs["stride"])) if "stride" in attrs else "1"
        return (r"Convolution\n%s/%s, %s" % ("x".join(_str2tuple(attrs["kernel"])), stride,
                                            attrs["num_filter"]), _COLORS[1])
    if op == "FullyConnected":
        return r"FullyConnected\n%s" % attrs["num_hidden"], _COLORS[1]
    if op == "BatchNorm":
        return node["name"], _COLORS[3]
    if op == "Activation":
        return r"Activation\n%s" % attrs["act_type"], _COLORS[2]
    if op == "LeakyReLU":
        return r"LeakyReLU\n%s" % attrs.get("act_type", "Leaky"), _COLORS[2]
    if op == "Pooling":
        stride = "x".join(_str2tuple(attrs["stride"])) if "stride" in attrs else "1"
        kernel = "x".join(_str2tuple(attrs.get("kernel", "")))
        return (r"Pooling\n%s, %s/%s" % (attrs.get("pool_type", "max"), kernel, stride),
                _COLORS[4])
    if op in ("Concat", "Flatten", "Reshape"):
        return node["name"], _COLORS[5]
    if op == "Softmax":
        return node["name"], _COLORS[6]
    if op == "Custom":
        return attrs["op_type"], _COLORS[7]
    return node["name"], _COLORS[7]


def _edge_key(inp: dict) -> str:
    if inp["op"] == "null":
        return inp["name"]
    key = inp["name"] + "_output"
    n = inp.get("attrs", {}).get("num_outputs")
    if n is not None:
        key += str(int(n) - 1)
    return key


def plot_network(symbol, title="plot", save_format="pdf", shape=None, dtype=None,
                 node_attrs=None, hide_weights=True):
    """A ``graphviz.Digraph`` of ``symbol``: one box per operator, ovals for inputs
    (weights hidden unless ``hide_weights=False``), edges labelled with shapes / dtypes
    when ``shape`` / ``dtype`` give the inputs'. Needs the ``graphviz`` package."""
    try:
        from graphviz import Digraph
    except ImportError:
        raise ImportError("Draw network requires graphviz library (pip install graphviz)") \
            from None
    _check_symbol(symbol)
    shape_dict = _internal_dict(symbol, shape, "infer_shape", "shape") \
        if shape is not None else None
    type_dict = _internal_dict(symbol, dtype, "infer_type", "type") \
        if dtype is not None else None
    conf = json.loads(symbol.tojson())
    nodes = conf["nodes"]
    names = [n["name"] for n in nodes]
    if len(names) != len(set(names)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        warnings.warn("There are multiple variables with the same name in your graph, this "
                      "may result in cyclic graph. Repeated names: " + ",".join(repeated),
                      RuntimeWarning, stacklevel=2)
    node_attr = {"shape": "box", "fixedsize": "true", "width": "1.3", "height": "0.8034",
                 "style": "filled"}
    node_attr.update(node_attrs or {})
    dot = Digraph(name=title, format=save_format)
    hidden = set()
    for node in nodes:
        attr = copy.deepcopy(node_attr)
        if node["op"] == "null":
            if node["name"].endswith(_WEIGHT_LIKE):
                if hide_weights:
                    hidden.add(node["name"])
                continue   # not hidden: drawn by the edge as an empty oval
            attr["shape"] = "oval"
            label, attr["fillcolor"] = node["name"], _COLORS[0]
        else:
            label, attr["fillcolor"] = _node_look(node)
        dot.node(name=node["name"], label=label, **attr)
    for node in nodes:
        if node["op"] == "null":
            continue
        inputs = node["inputs"]
        if node["op"] == "_contrib_BilinearResize2D":
            inputs = inputs[:1]
        for item in inputs:
            inp = nodes[item[0]]
            if inp["name"] in hidden:
                continue
            attr = {"dir": "back", "arrowtail": "open", "label": ""}
            key = _edge_key(inp)
            if shape_dict is not None:
                attr["label"] = "x".join(str(x) for x in shape_dict[key][1:])
            if type_dict is not None:
                attr["label"] += "(" + type_dict[key].__name__ + ")"
            dot.edge(tail_name=node["name"], head_name=inp["name"], **attr)
    return dot
