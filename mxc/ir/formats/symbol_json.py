"""MXNet symbol JSON (``-symbol.json``) at the dict level: parse, upgrade, validate, dump.

The :class:`~mxc.ir.graph.Graph` converts from and to the *normalized dict* this module
produces and consumes::

    {"nodes": [{"op": str, "name": str, "attrs": {str: str},
                "inputs": [[node_id, out_index, version], ...],
                "control_deps": [node_id, ...],      # only when non-empty
                "subgraphs": [<graph dict>, ...]},   # only when non-empty
               ...],
     "arg_nodes": [node_id, ...],
     "node_row_ptr": [0, ...],                       # only when the file had a consistent one
     "heads": [[node_id, out_index, version], ...],
     "attrs": {"mxnet_version": ["int", 10901], ...}}   # typed values as [tag, value]

Reading (nnvm ``saveload_json.cc`` ``JSONNode::Load``/``JSONGraph::Load``, then MXNet's
``legacy_json_util.cc`` upgraders, chosen by the file's ``mxnet_version``; a file without
one counts as 0.8.0):

* legacy spellings: node attributes under ``attrs``, ``attr`` (the later of the two wins,
  as each replaces the map) and ``param`` (merged without overriding), ``backward_source_id``
  ignored, 2-element entries (version 0), no ``node_row_ptr``, no graph ``attrs``;
* ``< 1.9.1``: hidden keys (``lr_mult`` ...) become ``__lr_mult__``; the deprecated suffix
  form ``<arg>_<key>`` on an op node moves onto that input when it is a variable (needs the
  op's input names from ``op_input_names``);
* ``< 0.9.0``: missing trailing inputs (aux states) are created as variables
  ``<node>_<arg>`` carrying a copy of the node's attributes (needs ``op_input_names``);
* ``< 0.9.4``: ``FSetInputVarAttrOnCompose`` re-applied (BatchNorm-style ``__init__`` of
  moving statistics, LeakyReLU's prelu gamma), see :data:`INPUT_VAR_INIT`;
* ``< 0.9.5``: ``argmin``/``argmax`` with ``axis`` ``"-1"`` lose the axis.

Upgrades touch the top-level graph only (MXNet does not upgrade subgraphs).

Validation raises :class:`FormatError` naming the source, the node (index and name) and
what was wrong: malformed JSON, missing keys, wrong types, inputs that are not earlier nodes
(a dangling reference or a cycle), bad head entries, ``arg_nodes`` that are not variables.
An inconsistent ``node_row_ptr`` is dropped with a warning (MXNet ignores it on load).

Writing (:func:`dump_symbol_json`) reproduces MXNet 1.9.1's ``tojson``/``save`` byte for
byte: dmlc's ``JSONWriter`` layout (2-space indent, ``", "`` separators, arrays of scalars
or entries on one line unless longer than 10, maps on one line when they hold one key),
node attributes sorted by key, ``arg_nodes`` recomputed as every variable, and graph
attributes ``mxnet_version`` (``["int", 10901]``) plus ``is_np_shape`` when set. Node order
is written as given; the Graph class produces nnvm's DFS order.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable

from .errors import FormatError

__all__ = [
    "HIDDEN_KEYS",
    "INPUT_VAR_INIT",
    "MXNET_VERSION",
    "dump_symbol_json",
    "make_version",
    "parse_symbol_json",
]

HIDDEN_KEYS = ("ctx_group", "lr_mult", "wd_mult", "force_mirroring", "mirror_stage",
               "profiler_scope")


def make_version(major: int, minor: int, patch: int) -> int:
    """``MXNET_MAKE_VERSION``: 1.9.1 -> 10901."""
    return major * 10000 + minor * 100 + patch


MXNET_VERSION = make_version(1, 9, 1)
_DEFAULT_VERSION = make_version(0, 8, 0)
_U32 = 1 << 32

_ZERO = '["zero", {}]'
_ONE = '["one", {}]'
#: ``FSetInputVarAttrOnCompose`` of MXNet 1.x ops: op -> {input index: __init__ value}, set on
#: a variable input that has no ``__init__`` yet.
INPUT_VAR_INIT: dict[str, dict[int, str]] = {
    "BatchNorm": {3: _ZERO, 4: _ONE},
    "BatchNorm_v1": {3: _ZERO, 4: _ONE},
    "_contrib_SyncBatchNorm": {3: _ZERO, 4: _ONE},
    "LeakyReLU": {1: '["Constant", {"value": 0.25}]'},
    "IdentityAttachKLSparseReg": {1: _ZERO},
}

OpInputNames = Callable[[str, dict], "list[str] | None"]


class _JObj(dict):
    """A JSON object that remembers its keys in text order (for attrs/attr precedence)."""

    __slots__ = ("order",)


def _pairs(pairs):
    obj = _JObj(pairs)
    obj.order = [k for k, _ in pairs]
    return obj


# --------------------------------------------------------------------------------------------
# parsing and validation
# --------------------------------------------------------------------------------------------
class _Ctx:
    def __init__(self, source: str, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix

    def fail(self, what: str) -> FormatError:
        return FormatError(f"{self.prefix}{what}", source=self.source)

    def sub(self, prefix: str) -> _Ctx:
        return _Ctx(self.source, self.prefix + prefix)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _node_label(i: int, nd) -> str:
    name = nd.get("name") if isinstance(nd, dict) else None
    return f"node {i} ('{name}')" if isinstance(name, str) else f"node {i}"


def _entry(ctx: _Ctx, e, what: str, limit: int, limit_what: str) -> list[int]:
    if not isinstance(e, list) or len(e) not in (2, 3) or not all(_is_int(x) for x in e):
        raise ctx.fail(f"{what} must be [node_id, index] or [node_id, index, version] with "
                       f"integer fields, found {json.dumps(e)[:80]}")
    if not all(0 <= x < _U32 for x in e):
        raise ctx.fail(f"{what} has a field outside 0..2^32-1: {e}")
    if e[0] >= limit:
        raise ctx.fail(f"{what} refers to node {e[0]}, {limit_what}")
    return [e[0], e[1], e[2] if len(e) == 3 else 0]


def _str_map(ctx: _Ctx, m, what: str) -> dict[str, str]:
    if not isinstance(m, dict):
        raise ctx.fail(f"{what} must be a JSON object of strings, found "
                       f"{type(m).__name__}")
    for k, v in m.items():
        if not isinstance(v, str):
            raise ctx.fail(f"{what} value of '{k}' must be a string (MXNet stores every "
                           f"attribute as text), found {json.dumps(v)[:60]}")
    return dict(m)


def _node(ctx: _Ctx, i: int, nd, n_nodes: int) -> dict:
    label = _node_label(i, nd)
    if not isinstance(nd, dict):
        raise ctx.fail(f"{label} must be a JSON object, found {type(nd).__name__}")
    for key in ("op", "name", "inputs"):
        if key not in nd:
            raise ctx.fail(f"{label} is missing the required key '{key}'")
    if not isinstance(nd["op"], str) or not nd["op"]:
        raise ctx.fail(f"{label}: 'op' must be a non-empty string")
    if not isinstance(nd["name"], str):
        raise ctx.fail(f"{label}: 'name' must be a string")
    # "attrs" and "attr" each replace the map (dmlc reads a map after clearing it): the
    # later one in the text wins; "param" is merged in without overriding.
    attrs: dict[str, str] = {}
    order = getattr(nd, "order", list(nd))
    for key in order:
        if key in ("attrs", "attr"):
            attrs = _str_map(ctx, nd[key], f"{label} '{key}'")
    if "param" in nd:
        for k, v in _str_map(ctx, nd["param"], f"{label} 'param'").items():
            attrs.setdefault(k, v)
    if "backward_source_id" in nd and not _is_int(nd["backward_source_id"]):
        raise ctx.fail(f"{label}: 'backward_source_id' must be an integer")
    if not isinstance(nd["inputs"], list):
        raise ctx.fail(f"{label}: 'inputs' must be a list")
    inputs = [_entry(ctx, e, f"{label} input {k}", i,
                     "which is not an earlier node (a cycle or a dangling reference)")
              for k, e in enumerate(nd["inputs"])]
    out = {"op": nd["op"], "name": nd["name"], "attrs": attrs, "inputs": inputs}
    deps = nd.get("control_deps", [])
    if not isinstance(deps, list) or not all(_is_int(d) for d in deps):
        raise ctx.fail(f"{label}: 'control_deps' must be a list of node ids")
    for d in deps:
        if not 0 <= d < i:
            raise ctx.fail(f"{label}: control dependency {d} is not an earlier node (a cycle "
                           "or a dangling reference)")
    if deps:
        out["control_deps"] = list(deps)
    subs = nd.get("subgraphs", [])
    if not isinstance(subs, list):
        raise ctx.fail(f"{label}: 'subgraphs' must be a list of graphs")
    if subs:
        out["subgraphs"] = [_graph(ctx.sub(f"{label} subgraph {k}: "), sg)
                            for k, sg in enumerate(subs)]
    return out


def _graph_attrs(ctx: _Ctx, attrs) -> dict:
    if not isinstance(attrs, dict):
        raise ctx.fail(f"graph 'attrs' must be a JSON object, found {type(attrs).__name__}")
    out = {}
    for k, v in attrs.items():
        if not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], str):
            raise ctx.fail(f"graph attribute '{k}' must be a typed pair [type_name, value], "
                           f"found {json.dumps(v)[:80]}")
        out[k] = [v[0], v[1]]
    mv = out.get("mxnet_version")
    if mv is not None and (mv[0] != "int" or not _is_int(mv[1])):
        raise ctx.fail(f"graph attribute 'mxnet_version' must be [\"int\", <version>], found "
                       f"{json.dumps(mv)[:80]}")
    return out


def _row_ptr(ctx: _Ctx, rp, nodes: list[dict]) -> list[int] | None:
    if not isinstance(rp, list) or not all(_is_int(x) for x in rp):
        raise ctx.fail("'node_row_ptr' must be a list of integers")
    ok = len(rp) == len(nodes) + 1 and (not rp or rp[0] == 0)
    if ok:
        for i, n in enumerate(nodes):
            d = rp[i + 1] - rp[i]
            if d < 0 or (n["op"] == "null" and d != 1):
                ok = False
                break
    if not ok:
        warnings.warn(f"{ctx.source}: {ctx.prefix}ignoring an inconsistent 'node_row_ptr' "
                      "(MXNet ignores it on load too)", stacklevel=4)
        return None
    return list(rp)


def _check_index(ctx: _Ctx, e: list[int], what: str, nodes: list[dict], rp) -> None:
    nid, idx = e[0], e[1]
    if nodes[nid]["op"] == "null":
        if idx != 0:
            raise ctx.fail(f"{what} takes output {idx} of variable {_node_label(nid, nodes[nid])}"
                           ", which has one output")
    elif rp is not None and idx >= rp[nid + 1] - rp[nid]:
        raise ctx.fail(f"{what} takes output {idx} of {_node_label(nid, nodes[nid])}, which "
                       f"has {rp[nid + 1] - rp[nid]} outputs")


def _graph(ctx: _Ctx, obj) -> dict:
    if not isinstance(obj, dict):
        raise ctx.fail(f"expected a JSON object for the graph, found {type(obj).__name__}")
    for key in ("nodes", "arg_nodes", "heads"):
        if key not in obj:
            raise ctx.fail(f"graph is missing the required key '{key}'")
    raw = obj["nodes"]
    if not isinstance(raw, list):
        raise ctx.fail("'nodes' must be a list")
    nodes = [_node(ctx, i, nd, len(raw)) for i, nd in enumerate(raw)]
    rp = _row_ptr(ctx, obj["node_row_ptr"], nodes) if "node_row_ptr" in obj else None
    for i, n in enumerate(nodes):
        for k, e in enumerate(n["inputs"]):
            _check_index(ctx, e, f"{_node_label(i, n)} input {k}", nodes, rp)
    args = obj["arg_nodes"]
    if not isinstance(args, list) or not all(_is_int(a) for a in args):
        raise ctx.fail("'arg_nodes' must be a list of node ids")
    for a in args:
        if not 0 <= a < len(nodes):
            raise ctx.fail(f"'arg_nodes' refers to node {a}, but there are {len(nodes)} nodes")
        if nodes[a]["op"] != "null":
            raise ctx.fail(f"'arg_nodes' lists {_node_label(a, nodes[a])}, which is not a "
                           f"variable (op '{nodes[a]['op']}')")
    heads_raw = obj["heads"]
    if not isinstance(heads_raw, list):
        raise ctx.fail("'heads' must be a list of entries")
    heads = []
    for k, e in enumerate(heads_raw):
        h = _entry(ctx, e, f"head {k}", len(nodes), f"but there are {len(nodes)} nodes")
        _check_index(ctx, h, f"head {k}", nodes, rp)
        heads.append(h)
    out = {"nodes": nodes, "arg_nodes": list(args)}
    if rp is not None:
        out["node_row_ptr"] = rp
    out["heads"] = heads
    out["attrs"] = _graph_attrs(ctx, obj["attrs"]) if "attrs" in obj else {}
    return out


# --------------------------------------------------------------------------------------------
# upgrades (legacy_json_util.cc)
# --------------------------------------------------------------------------------------------
def _fix_hidden_keys(g: dict, op_input_names: OpInputNames | None) -> None:
    nodes = g["nodes"]
    for n in nodes:
        attrs = n["attrs"]
        hidden = []
        for k in list(attrs):
            for key in HIDDEN_KEYS:
                pos = k.rfind(key)
                if pos == 0 or (pos != -1 and pos == len(k) - len(key)):
                    hidden.append((k, attrs.pop(k)))
                    break
        for k, v in hidden:
            moved = False
            for key in HIDDEN_KEYS:
                pos = k.rfind(key)
                if pos == 0 and len(key) == len(k):
                    attrs[f"__{key}__"] = v
                    moved = True
                    break
                if pos > 1 and pos == len(k) - len(key):
                    # deprecated "<argname>_<key>" on an op: move it onto that input variable
                    if n["op"] == "null" or op_input_names is None:
                        break
                    names = op_input_names(n["op"], dict(attrs))
                    arg = k[:pos - 1]
                    if names and arg in names:
                        idx = list(names).index(arg)
                        if idx < len(n["inputs"]):
                            var = nodes[n["inputs"][idx][0]]
                            if var["op"] == "null":
                                var["attrs"][f"__{key}__"] = v
                                moved = True
                    break
            if not moved:
                attrs[k] = v


def _add_missing_aux(g: dict, op_input_names: OpInputNames | None) -> None:
    """< 0.9.0: aux states were not stored; create them as variables."""
    if op_input_names is None:
        return
    old = g["nodes"]
    rp = g.get("node_row_ptr")
    nout = [rp[i + 1] - rp[i] for i in range(len(old))] if rp is not None else None
    remap: list[int] = []
    nodes: list[dict] = []
    new_nout: list[int] = []
    added: list[int] = []
    for i, n in enumerate(old):
        n["inputs"] = [[remap[e[0]], e[1], e[2]] for e in n["inputs"]]
        if "control_deps" in n:
            n["control_deps"] = [remap[d] for d in n["control_deps"]]
        names = op_input_names(n["op"], dict(n["attrs"])) if n["op"] != "null" else None
        if names is not None and len(n["inputs"]) < len(names):
            for arg in list(names)[len(n["inputs"]):]:
                vname = f"{n['name']}_{arg}" if n["name"] else arg
                added.append(len(nodes))
                n["inputs"].append([len(nodes), 0, 0])
                nodes.append({"op": "null", "name": vname, "attrs": dict(n["attrs"]),
                              "inputs": []})
                new_nout.append(1)
        remap.append(len(nodes))
        nodes.append(n)
        if nout is not None:
            new_nout.append(nout[i])
    if not added:
        return
    g["nodes"] = nodes
    g["heads"] = [[remap[e[0]], e[1], e[2]] for e in g["heads"]]
    g["arg_nodes"] = sorted([remap[a] for a in g["arg_nodes"]] + added)
    if nout is not None:
        ptr = [0]
        for k in new_nout:
            ptr.append(ptr[-1] + k)
        g["node_row_ptr"] = ptr


def _set_input_var_init(g: dict) -> None:
    """< 0.9.4: FSetInputVarAttrOnCompose."""
    nodes = g["nodes"]
    for n in nodes:
        table = INPUT_VAR_INIT.get(n["op"])
        if not table:
            continue
        for i, e in enumerate(n["inputs"]):
            var = nodes[e[0]]
            if var["op"] == "null" and i in table and "__init__" not in var["attrs"]:
                var["attrs"]["__init__"] = table[i]


def _argminmax_axis(g: dict) -> None:
    """< 0.9.5: ReduceAxisParam axis became optional; -1 used to mean "none"."""
    for n in g["nodes"]:
        if n["op"] in ("argmin", "argmax") and n["attrs"].get("axis") == "-1":
            del n["attrs"]["axis"]


def parse_symbol_json(text: str | bytes, *, source: str = "<string>",
                      op_input_names: OpInputNames | None = None) -> dict:
    """Parse MXNet symbol JSON into the normalized dict (see the module docstring).

    ``op_input_names(op, attrs) -> list[str] | None`` gives an operator's full input names
    (arguments then aux states) for the upgrades of pre-1.9.1 files that need them; ``None``
    (or no callback) leaves such nodes as they are.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"symbol JSON is not valid UTF-8 ({e.reason})", source=source,
                              offset=e.start) from None
    try:
        obj = json.loads(text, strict=False, object_pairs_hook=_pairs)
    except json.JSONDecodeError as e:
        raise FormatError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                          source=source, offset=e.pos) from None
    except RecursionError:
        raise FormatError("JSON is nested too deeply", source=source) from None
    g = _graph(_Ctx(source), obj)
    mv = g["attrs"].get("mxnet_version")
    version = mv[1] if mv is not None else _DEFAULT_VERSION
    if version < MXNET_VERSION:
        _fix_hidden_keys(g, op_input_names)
    if version < make_version(0, 9, 0):
        _add_missing_aux(g, op_input_names)
    if version < make_version(0, 9, 4):
        _set_input_var_init(g)
    if version < make_version(0, 9, 5):
        _argminmax_axis(g)
    return g


# --------------------------------------------------------------------------------------------
# writing (dmlc::JSONWriter layout)
# --------------------------------------------------------------------------------------------
_ESCAPES = {"\r": "\\r", "\n": "\\n", "\\": "\\\\", "\t": "\\t", '"': '\\"'}


def _quote(s: str) -> str:
    return '"' + "".join(_ESCAPES.get(c, c) for c in s) + '"'


class _Writer:
    """dmlc::JSONWriter: scopes are multi-line or not; items are separated by ", "."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.multi: list[bool] = []
        self.count: list[int] = []

    def _sep(self) -> None:
        if not self.multi or self.multi[-1]:
            self.out.append("\n" + " " * (2 * len(self.multi)))

    def begin(self, ch: str, multi: bool) -> None:
        self.out.append(ch)
        self.multi.append(multi)
        self.count.append(0)

    def end(self, ch: str) -> None:
        multi = self.multi.pop()
        n = self.count.pop()
        if multi and n:
            self._sep()
        self.out.append(ch)

    def key(self, k: str) -> None:
        if self.count[-1]:
            self.out.append(", ")
        self._sep()
        self.out.append(_quote(k) + ": ")
        self.count[-1] += 1

    def item(self) -> None:
        if self.count[-1]:
            self.out.append(", ")
        self.count[-1] += 1
        self._sep()

    def raw(self, s: str) -> None:
        self.out.append(s)

    # composite values
    def uints(self, xs) -> None:
        self.begin("[", len(xs) > 10)
        for x in xs:
            self.item()
            self.raw(str(int(x)))
        self.end("]")

    def entries(self, es) -> None:
        self.begin("[", len(es) > 10)   # Entry is POD: one line unless more than 10
        for e in es:
            self.item()
            self.entry(e)
        self.end("]")

    def entry(self, e) -> None:
        e = list(e)
        if len(e) == 2:
            e.append(0)
        self.uints(e)

    def typed(self, tag: str, value) -> None:
        self.begin("[", False)
        self.item()
        self.raw(_quote(tag))
        self.item()
        if isinstance(value, str):
            self.raw(_quote(value))
        elif isinstance(value, list):
            if all(_is_int(v) for v in value):
                self.uints(value)
            else:
                self.begin("[", True)
                for v in value:
                    self.item()
                    self.raw(_quote(str(v)))
                self.end("]")
        else:
            self.raw(str(int(value)))
        self.end("]")


def _bytes_key(k: str) -> bytes:
    return k.encode("utf-8", "surrogatepass")


def _default_row_ptr(g: dict, num_outputs) -> list[int]:
    nodes = g["nodes"]
    if num_outputs is not None:
        counts = [int(num_outputs(n)) for n in nodes]
    else:
        # without op knowledge: one output per variable, and for an op as many as are used
        counts = [1] * len(nodes)
        refs = [e for n in nodes for e in n.get("inputs", [])] + list(g.get("heads", []))
        for e in refs:
            if nodes[e[0]]["op"] != "null":
                counts[e[0]] = max(counts[e[0]], int(e[1]) + 1)
    ptr = [0]
    for c in counts:
        ptr.append(ptr[-1] + c)
    return ptr


def _write_node(w: _Writer, n: dict, num_outputs) -> None:
    w.begin("{", True)
    w.key("op")
    w.raw(_quote(n["op"]))
    w.key("name")
    w.raw(_quote(n["name"]))
    attrs = n.get("attrs") or {}
    if attrs:
        w.key("attrs")
        w.begin("{", len(attrs) > 1)
        for k in sorted(attrs, key=_bytes_key):
            v = attrs[k]
            if not isinstance(v, str):
                raise TypeError(f"node '{n['name']}': attribute '{k}' must be a string, got "
                                f"{type(v).__name__}")
            w.key(k)
            w.raw(_quote(v))
        w.end("}")
    w.key("inputs")
    w.entries(n.get("inputs", []))
    if n.get("control_deps"):
        w.key("control_deps")
        w.uints(n["control_deps"])
    if n.get("subgraphs"):
        w.key("subgraphs")
        w.begin("[", True)
        for sg in n["subgraphs"]:
            w.item()
            _write_graph(w, sg, None, num_outputs)
        w.end("]")
    w.end("}")


def _write_graph(w: _Writer, g: dict, graph_attrs: dict | None, num_outputs) -> None:
    nodes = g["nodes"]
    w.begin("{", True)
    w.key("nodes")
    w.begin("[", True)
    for n in nodes:
        w.item()
        _write_node(w, n, num_outputs)
    w.end("]")
    w.key("arg_nodes")
    w.uints([i for i, n in enumerate(nodes) if n["op"] == "null"])
    rp = g.get("node_row_ptr")
    if rp is None or len(rp) != len(nodes) + 1:
        rp = _default_row_ptr(g, num_outputs)
    w.key("node_row_ptr")
    w.uints(rp)
    w.key("heads")
    w.entries(g.get("heads", []))
    if graph_attrs:
        w.key("attrs")
        w.begin("{", len(graph_attrs) > 1)
        for k, (tag, value) in graph_attrs.items():
            w.key(k)
            w.typed(tag, value)
        w.end("}")
    w.end("}")


def dump_symbol_json(graph_dict: dict, *, mxnet_version: int = MXNET_VERSION,
                     is_np_shape: int | None = None,
                     num_outputs: Callable[[dict], int] | None = None) -> str:
    """Write the normalized dict exactly as MXNet 1.9.1's ``Symbol.tojson()`` does.

    The graph attributes written are MXNet's: ``mxnet_version`` (``["int", 10901]``) and, when
    ``is_np_shape`` is non-zero (default: taken from ``graph_dict["attrs"]``), ``is_np_shape``
    - listed first, as MXNet's hash map yields it. A missing or mis-sized ``node_row_ptr`` is
    computed from ``num_outputs(node_dict)``; without that callback an op gets as many outputs
    as its highest used output index (pass the callback for ops with unused outputs).
    """
    if is_np_shape is None:
        v = (graph_dict.get("attrs") or {}).get("is_np_shape")
        is_np_shape = int(v[1]) if isinstance(v, (list, tuple)) and len(v) == 2 else 0
    attrs: dict = {}
    if is_np_shape:
        attrs["is_np_shape"] = ["int", int(is_np_shape)]
    attrs["mxnet_version"] = ["int", int(mxnet_version)]
    w = _Writer()
    _write_graph(w, graph_dict, attrs, num_outputs)
    return "".join(w.out)
