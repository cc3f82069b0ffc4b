"""``mx.sym``: MXNet 1.x's symbolic API over mxc's graph IR.

A :class:`Symbol` is a list of output entries (:class:`~mxc.ir.graph.Entry`) of graph nodes;
composing symbols builds the graph directly. Operator functions are generated from the
registry on first access (``mx.sym.<op>``, ``mx.sym.op.<op>``, ``mx.sym._internal``,
``mx.sym.contrib`` ...) and follow MXNet's conventions exactly:

* automatic node names from :class:`~.name.NameManager` (``fullyconnected0``), with the hint
  the lower-cased function name;
* missing inputs become variables ``<node>_<input>`` (``fc1_weight``, ``bn_moving_mean``)
  carrying a copy of the node's attributes, as nnvm's ``Compose`` does, and the
  ``FSetInputVarAttrOnCompose`` initialisers of BatchNorm-like ops;
* attributes are stored as MXNet strings; ``attr=``/:class:`AttrScope` keys that MXNet
  hides (``lr_mult``, ``ctx_group``...) become ``__lr_mult__``...;
* JSON through :mod:`mxc.ir.formats.symbol_json` (byte-compatible with MXNet's ``tojson``).
"""
from __future__ import annotations

import copy as _copy
import os
import types

import numpy as np

from ..base import MXNetError
from ..ir import registry
from ..ir.graph import Entry, Graph, Node, variable
from .attribute import AttrScope
from .name import NameManager
from .ndarray_ops import attr_str, split_call

__all__ = [
    "Group",
    "Symbol",
    "Variable",
    "arange",
    "full",
    "hypot",
    "load",
    "load_json",
    "maximum",
    "minimum",
    "ones",
    "pow",
    "power",
    "var",
    "zeros",
]

_HIDDEN_KEYS = ("ctx_group", "lr_mult", "wd_mult", "force_mirroring", "mirror_stage",
                "profiler_scope")
_STORAGE_TYPE_STR_TO_ID = {"undefined": -1, "default": 0, "row_sparse": 1, "csr": 2}
numeric_types = (float, int, np.generic)


def _hidden_key(k: str) -> str:
    """MXNet's handling of attribute keys in MXSymbolCreateAtomicSymbol/MXSymbolSetAttr."""
    for hk in _HIDDEN_KEYS:
        pos = k.rfind(hk)
        if pos == 0 and len(k) == len(hk):
            return f"__{hk}__"
        if pos > 0 and pos == len(k) - len(hk) and not (k.startswith("__") and
                                                         k.endswith("__")):
            raise MXNetError(f"setting variable attributes with {k} is deprecated. please "
                             f"instead use\nw = Variable({hk}=...)\nsym = YourSymbolName("
                             f"{k[:pos - 1]}=w)")
    return k


def _entry_key(e: Entry) -> tuple:
    return (e.node.uid, e.index)


def _output_names(node: Node) -> list:
    """Names of the visible outputs of ``node`` as list_outputs spells them."""
    if node.is_variable:
        return [node.name]
    op = node.opdef
    a = node.parsed
    names = list(op.outputs(a))
    n = op.num_outputs(a)
    if len(names) != n:
        names = ["output"] if n == 1 else [f"output{i}" for i in range(n)]
    nvis = op.num_visible_outputs(a)
    return [f"{node.name}_{nm}" if node.name else nm for nm in names[:nvis]]


def _num_visible(node: Node) -> int:
    if node.is_variable:
        return 1
    return node.opdef.num_visible_outputs(node.parsed)


class Symbol:
    """Symbolic outputs of a graph (MXNet's ``mx.sym.Symbol``)."""

    __slots__ = ("__weakref__", "_outputs")

    def __init__(self, outputs) -> None:
        self._outputs = list(outputs)

    # -- identity -----------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The node name of a single-output symbol, None for a group."""
        if len(self._outputs) != 1:
            return None
        return self._outputs[0].node.name

    def __repr__(self) -> str:
        name = self.name
        if name is None:
            return f"<{type(self).__name__} group [{', '.join(s.name for s in self)}]>"
        return f"<{type(self).__name__} {name}>"

    def __hash__(self) -> int:
        return id(self) // 16

    def __copy__(self) -> Symbol:
        return Symbol(_copy_graph(self._outputs)[0])

    def __deepcopy__(self, memo) -> Symbol:
        return self.__copy__()

    def copy(self) -> Symbol:
        return self.__copy__()

    def __getstate__(self):
        return {"handle": self.tojson()}

    def __setstate__(self, state) -> None:
        self._outputs = load_json(state["handle"])._outputs

    def __bool__(self):
        raise NotImplementedError("Symbol has no truth value (it is not computed)")

    # -- outputs ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._outputs)

    def __iter__(self):
        return (self[i] for i in range(len(self._outputs)))

    def __getitem__(self, index) -> Symbol:
        if isinstance(index, str):
            names = self.list_outputs()
            idx = None
            for i, nm in enumerate(names):
                if nm == index:
                    if idx is not None:
                        raise ValueError(f"There are multiple outputs with name \"{index}\"")
                    idx = i
            if idx is None:
                raise ValueError(f"Cannot find output that matches name \"{index}\"")
            index = idx
        if isinstance(index, slice):
            return Symbol(self._outputs[index])
        if not isinstance(index, (int, np.integer)):
            raise TypeError("Symbol only support integer index to fetch i-th output")
        if not -len(self._outputs) <= index < len(self._outputs):
            raise IndexError(f"output index {index} out of range ({len(self._outputs)} "
                             "outputs)")
        return Symbol([self._outputs[index]])

    def list_outputs(self) -> list:
        out = []
        for e in self._outputs:
            names = _output_names(e.node)
            if e.index < len(names):
                out.append(names[e.index])
            else:
                out.append(f"{e.node.name}_output{e.index}")
        return out

    def _graph(self) -> Graph:
        return Graph(self._outputs)

    def list_arguments(self) -> list:
        return [n.name for n in self._graph().arguments()]

    def list_auxiliary_states(self) -> list:
        return [n.name for n in self._graph().auxiliary()]

    def list_inputs(self) -> list:
        return [n.name for n in self._graph().variables()]

    def get_internals(self) -> Symbol:
        outs = []
        for n in self._graph().nodes:
            for i in range(_num_visible(n)):
                outs.append(Entry(n, i))
        return Symbol(outs)

    def get_children(self) -> Symbol | None:
        ins = []
        for e in self._outputs:
            ins.extend(e.node.inputs)
        if not ins:
            return None
        return Symbol(ins)

    # -- attributes ---------------------------------------------------------------------------
    def attr(self, key: str):
        if len(self._outputs) != 1:
            return None
        k = f"__{key}__" if key in _HIDDEN_KEYS else key
        return self._outputs[0].node.attrs.get(k)

    def list_attr(self, recursive: bool = False) -> dict:
        if recursive:
            raise DeprecationWarning("Symbol.list_attr with recursive=True has been "
                                     "deprecated. Please use attr_dict instead.")
        if len(self._outputs) != 1:
            return {}
        return dict(self._outputs[0].node.attrs)

    def attr_dict(self) -> dict:
        ret: dict = {}
        for n in self._graph().nodes:
            if n.attrs:
                ret[n.name] = dict(n.attrs)
        return ret

    def _set_attr(self, **kwargs) -> None:
        for k, v in kwargs.items():
            if not isinstance(v, str):
                raise ValueError("Set Attr only accepts string values")  # noqa: TRY004
            for e in self._outputs:
                e.node.attrs[_hidden_key(k)] = v
                e.node._parsed = None

    # -- composition ----------------------------------------------------------------------------
    def __call__(self, *args, **kwargs) -> Symbol:
        s = self.__copy__()
        s._compose(*args, **kwargs)
        return s

    def _compose(self, *args, **kwargs) -> None:
        kwargs.pop("name", None)
        if args and kwargs:
            raise TypeError("compose only accept input Symbols either as positional or "
                            "keyword arguments, not both")
        for a in list(args) + list(kwargs.values()):
            if not isinstance(a, Symbol):
                raise TypeError("Compose expect `Symbol` as arguments")
            if len(a._outputs) != 1:
                raise MXNetError("compose: each input must be a single-output symbol")
        replace: dict = {}
        nmatched = 0
        pos = list(args)
        for n in self._graph().nodes:
            if not n.is_variable:
                continue
            if pos:
                replace[n.uid] = pos.pop(0)._outputs[0]
            elif n.name in kwargs:
                replace[n.uid] = kwargs[n.name]._outputs[0]
                nmatched += 1
        if pos or nmatched != len(kwargs):
            names = self.list_inputs()
            bad = [k for k in kwargs if k not in names]
            raise MXNetError(f"compose: unmatched arguments {bad or len(pos)}; inputs are "
                             f"{names}")
        for n in self._graph().nodes:
            n.inputs = [replace.get(e.node.uid, e) for e in n.inputs]
        self._outputs = [replace.get(e.node.uid, e) for e in self._outputs]

    # -- arithmetic -----------------------------------------------------------------------------
    def __add__(self, other):
        return _sym_ufunc(self, other, "_Plus", "_PlusScalar")

    __radd__ = __add__

    def __sub__(self, other):
        return _sym_ufunc(self, other, "_Minus", "_MinusScalar")

    def __rsub__(self, other):
        return _sym_rscalar(self, other, "_RMinusScalar")

    def __mul__(self, other):
        return _sym_ufunc(self, other, "_Mul", "_MulScalar")

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _sym_ufunc(self, other, "_Div", "_DivScalar")

    def __rtruediv__(self, other):
        return _sym_rscalar(self, other, "_RDivScalar")

    __div__ = __truediv__
    __rdiv__ = __rtruediv__

    def __mod__(self, other):
        return _sym_ufunc(self, other, "_Mod", "_ModScalar")

    def __rmod__(self, other):
        return _sym_rscalar(self, other, "_RModScalar")

    def __pow__(self, other):
        return _sym_ufunc(self, other, "_Power", "_PowerScalar")

    def __rpow__(self, other):
        return _sym_rscalar(self, other, "_RPowerScalar")

    def __neg__(self):
        return self.__mul__(-1.0)

    def __abs__(self):
        return _sym_op("abs")(self)

    def __eq__(self, other):
        return _sym_ufunc(self, other, "_equal", "_equal_scalar")

    def __ne__(self, other):
        return _sym_ufunc(self, other, "_not_equal", "_not_equal_scalar")

    def __gt__(self, other):
        return _sym_ufunc(self, other, "_greater", "_greater_scalar")

    def __ge__(self, other):
        return _sym_ufunc(self, other, "_greater_equal", "_greater_equal_scalar")

    def __lt__(self, other):
        return _sym_ufunc(self, other, "_lesser", "_lesser_scalar")

    def __le__(self, other):
        return _sym_ufunc(self, other, "_lesser_equal", "_lesser_equal_scalar")

    # -- fluent methods ---------------------------------------------------------------------------
    def reshape(self, *args, **kwargs):
        if len(args) == 1 and isinstance(args[0], (tuple, list)) and "shape" not in kwargs:
            kwargs["shape"] = tuple(args[0])
            args = ()
        return _sym_op("Reshape")(self, *args, **kwargs)

    def astype(self, dtype, **kwargs):
        return _sym_op("Cast")(self, dtype=dtype, **kwargs)

    def __getattr__(self, name):
        from .ndarray import _FLUENT
        target = _FLUENT.get(name) or {"reshape_like": "reshape_like",
                                       "broadcast_to": "broadcast_to",
                                       "broadcast_like": "broadcast_like",
                                       "zeros_like": "zeros_like",
                                       "ones_like": "ones_like"}.get(name)
        if target is None or not registry.exists(target):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        fn = _sym_op(target)
        return types.MethodType(lambda s, *a, **k: fn(s, *a, **k), self)

    # -- inference ----------------------------------------------------------------------------
    def _known(self, args, kwargs, what: str) -> dict:
        known: dict = {}
        if args:
            names = self.list_arguments()
            if len(args) > len(names):
                raise MXNetError(f"{what}: {len(args)} positional arguments for "
                                 f"{len(names)} arguments {names}")
            for nm, v in zip(names, args):
                if v is not None:
                    known[nm] = v
        if kwargs:
            inputs = set(self.list_inputs())
            for k, v in kwargs.items():
                if k not in inputs:
                    raise MXNetError(f"{what}: keyword argument name {k} not found. "
                                     f"Candidate arguments: {self.list_inputs()}")
                if v is not None:
                    known[k] = v
        return known

    def _infer_shape_impl(self, partial: bool, args, kwargs):
        from ..compiler import infer
        known = {}
        for k, v in self._known(args, kwargs, "infer_shape").items():
            shp = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
            if any(d is None or d == 0 for d in shp) and len(shp) and not _np_shape_on():
                continue  # legacy: 0 marks an unknown dim
            if any(d is None or d < 0 for d in shp):
                continue
            known[k] = tuple(int(d) for d in shp)
        g = self._graph()
        shapes = infer.infer_shapes(g, known, partial=True)
        unknown = () if not _np_shape_on() else None

        def get(key):
            s = shapes.get(key)
            return tuple(s) if s is not None else unknown

        arg = [get((n.uid, 0)) for n in g.arguments()]
        out = [get(_entry_key(e)) for e in self._outputs]
        aux = [get((n.uid, 0)) for n in g.auxiliary()]
        complete = all(shapes.get((n.uid, 0)) is not None for n in g.variables()) and \
            all(shapes.get(_entry_key(e)) is not None for e in self._outputs)
        return arg, out, aux, complete

    def infer_shape(self, *args, **kwargs):
        """(arg_shapes, out_shapes, aux_shapes), or (None, None, None) when incomplete."""
        arg, out, aux, complete = self._infer_shape_impl(False, args, kwargs)
        if not complete:
            return None, None, None
        return arg, out, aux

    def infer_shape_partial(self, *args, **kwargs):
        """Like infer_shape, with unknown shapes as ``()`` instead of giving up."""
        arg, out, aux, _ = self._infer_shape_impl(True, args, kwargs)
        return arg, out, aux

    def _infer_type_impl(self, args, kwargs):
        from ..compiler import infer
        from .ndarray import _np_type, to_dtype
        known = {}
        for k, v in self._known(args, kwargs, "infer_type").items():
            known[k] = to_dtype(v).name
        g = self._graph()
        types_ = infer.infer_types(g, known, partial=True)

        def get(key):
            t = types_.get(key)
            return _np_type(to_dtype(t)) if t is not None else None

        arg = [get((n.uid, 0)) for n in g.arguments()]
        out = [get(_entry_key(e)) for e in self._outputs]
        aux = [get((n.uid, 0)) for n in g.auxiliary()]
        complete = all(x is not None for x in arg + out + aux)
        return arg, out, aux, complete

    def infer_type(self, *args, **kwargs):
        """(arg_types, out_types, aux_types) as numpy types, or (None, None, None)."""
        arg, out, aux, complete = self._infer_type_impl(args, kwargs)
        if not complete:
            return None, None, None
        return arg, out, aux

    def infer_type_partial(self, *args, **kwargs):
        arg, out, aux, _ = self._infer_type_impl(args, kwargs)
        return arg, out, aux

    # -- serialisation ------------------------------------------------------------------------
    def tojson(self, remove_amp_cast: bool = True) -> str:
        from ..ir.formats import dump_symbol_json
        d = self._graph().to_json_dict()
        if _np_shape_on():
            d["attrs"]["is_np_shape"] = ["int", 1]
        return dump_symbol_json(d)

    def save(self, fname, remove_amp_cast: bool = True) -> None:
        if not isinstance(fname, (str, os.PathLike)):
            raise TypeError("fname need to be string")
        with open(fname, "w") as f:
            f.write(self.tojson(remove_amp_cast))

    def debug_str(self) -> str:
        lines = []
        for n in self._graph().nodes:
            if n.is_variable:
                lines.append(f"Variable:{n.name}")
            else:
                lines.append("-" * 40)
                lines.append(f"Op:{n.op}, Name={n.name}")
                lines.append("Inputs:")
                for i, e in enumerate(n.inputs):
                    lines.append(f"\targ[{i}]={e.node.name}({e.index})")
                if n.attrs:
                    lines.append("Attrs:")
                    for k, v in n.attrs.items():
                        lines.append(f"\t{k}={v}")
        return "\n".join(lines) + "\n"

    # -- binding --------------------------------------------------------------------------------
    def simple_bind(self, ctx, grad_req="write", type_dict=None, stype_dict=None,
                    group2ctx=None, shared_arg_names=None, shared_exec=None,
                    shared_buffer=None, **kwargs):
        from .executor import simple_bind
        return simple_bind(self, ctx, grad_req, type_dict, shared_exec, shared_buffer,
                           kwargs)

    def bind(self, ctx, args, args_grad=None, grad_req="write", aux_states=None,
             group2ctx=None, shared_exec=None):
        from .executor import bind
        return bind(self, ctx, args, args_grad, grad_req, aux_states)

    _bind = bind
    _simple_bind = simple_bind

    def eval(self, ctx=None, **kwargs):
        from .context import current_context
        aux_names = self.list_auxiliary_states()
        args = {k: v for k, v in kwargs.items() if k not in aux_names}
        aux = {k: v for k, v in kwargs.items() if k in aux_names}
        exe = self.bind(ctx or current_context(), args, grad_req="null",
                        aux_states=aux if aux_names else None)
        return exe.forward()

    def gradient(self, wrt):
        raise NotImplementedError("Symbol.gradient is not implemented (as in MXNet 1.x)")


def _np_shape_on() -> bool:
    from .util import is_np_shape
    return is_np_shape()


def _copy_graph(outputs: list) -> tuple:
    """Copy every node reachable from ``outputs``; returns (new outputs, old uid -> node)."""
    from ..ir.graph import topo_order
    mapping: dict = {}
    for n in topo_order(outputs):
        nn = Node(n.op, n.name, dict(n.attrs),
                  [Entry(mapping[e.node.uid], e.index) for e in n.inputs],
                  [mapping[c.uid] for c in n.control_deps], _copy.deepcopy(n.subgraphs)
                  if n.subgraphs else None)
        nn._parsed = n._parsed
        mapping[n.uid] = nn
    return [Entry(mapping[e.node.uid], e.index) for e in outputs], mapping


# ------------------------------------------------------------------------------------------
# creating symbols
# ------------------------------------------------------------------------------------------
def var(name: str, attr: dict | None = None, shape=None, lr_mult=None, wd_mult=None,
        dtype=None, init=None, stype=None, profiler_scope=None, **kwargs) -> Symbol:
    """A variable (argument placeholder) with MXNet's hidden attributes."""
    if not isinstance(name, str):
        raise TypeError("Expect a string for variable `name`")
    attr = AttrScope.current.get(attr)
    if shape is not None:
        attr["__shape__"] = str(shape) if not isinstance(shape, tuple) else attr_str(
            tuple(shape))
    if lr_mult is not None:
        attr["__lr_mult__"] = str(lr_mult)
    if wd_mult is not None:
        attr["__wd_mult__"] = str(wd_mult)
    if dtype is not None:
        from .ndarray import to_dtype
        attr["__dtype__"] = str(to_dtype(dtype).code)
    if init is not None:
        if not isinstance(init, str):
            init = init.dumps()
        attr["__init__"] = init
    if stype is not None:
        attr["__storage_type__"] = str(_STORAGE_TYPE_STR_TO_ID[stype])
    if profiler_scope is not None:
        attr["__profiler_scope__"] = profiler_scope
    for k, v in kwargs.items():
        if k.startswith("__") and k.endswith("__"):
            attr[k] = str(v)
        else:
            raise ValueError(f"Attribute name={k} is not supported. Additional attributes "
                             "must start and end with double underscores, e.g, __yourattr__")
    node = variable(name)
    for k, v in attr.items():
        if not isinstance(v, str):
            raise ValueError("Set Attr only accepts string values")  # noqa: TRY004
        node.attrs[_hidden_key(k)] = v
    return Symbol([Entry(node, 0)])


Variable = var


def Group(symbols) -> Symbol:
    """One symbol whose outputs are those of ``symbols``, in order."""
    if not symbols or any(not isinstance(s, Symbol) for s in symbols):
        raise TypeError("Expected a list of symbols as input")
    outs = []
    for s in symbols:
        outs.extend(s._outputs)
    return Symbol(outs)


def _is_symbol(x) -> bool:
    return isinstance(x, Symbol)


def _create(op_name: str, hint: str, args: tuple, kwargs: dict, name, attr) -> Symbol:
    opdef = registry.get(op_name)
    pos, named, attrs = split_call(op_name, opdef, args, kwargs, _is_symbol)
    attrs.update(AttrScope.current.get(attr))
    if "dtype" in attrs and attrs["dtype"] is None and "dtype" in opdef.params.params:
        del attrs["dtype"]
    if "num_args" in opdef.params.params and "num_args" not in attrs:
        attrs["num_args"] = len(pos) + len(named)
    sattrs = {}
    for k, v in attrs.items():
        sattrs[_hidden_key(k)] = attr_str(v)
    name = NameManager.current.get(name, hint)
    parsed = opdef.parse_attrs(sattrs, name)
    input_names = list(opdef.input_names(parsed))
    want = opdef.num_inputs(parsed)
    variadic = want is None or "num_args" in opdef.params.params
    inputs: list = list(pos)
    for k, v in named.items():
        if k not in input_names:
            raise MXNetError(f"{op_name} ({name}): unknown input '{k}'; inputs are "
                             f"{input_names}")
        idx = input_names.index(k)
        while len(inputs) <= idx:
            inputs.append(None)
        if inputs[idx] is not None:
            raise TypeError(f"{op_name}() got multiple values for input '{k}'")
        inputs[idx] = v
    if want is not None:
        if len(inputs) > want:
            if all(x is None for x in inputs[want:]):
                inputs = inputs[:want]
            else:
                raise MXNetError(f"{op_name} ({name}): {len(inputs)} inputs given, it takes "
                                 f"{want} ({input_names})")
        if not variadic:
            inputs += [None] * (want - len(inputs))
    entries = []
    node = Node(opdef.name, name, sattrs)
    node._parsed = parsed
    for i, s in enumerate(inputs):
        if s is None:
            if variadic:
                raise MXNetError(f"{op_name} ({name}): input {i} is missing")
            argname = input_names[i]
            v = variable(f"{name}_{argname}", dict(sattrs))
            entries.append(Entry(v, 0))
            continue
        if len(s._outputs) != 1:
            nm = input_names[i] if i < len(input_names) else f"arg{i}"
            raise MXNetError(f"{op_name} ({name}): input '{nm}' is a group of "
                             f"{len(s._outputs)} outputs; a single output is required")
        entries.append(s._outputs[0])
    if want is not None and len(entries) != want:
        raise MXNetError(f"{op_name} ({name}): expects {want} inputs {input_names}, got "
                         f"{len(entries)}")
    node.inputs = entries
    _set_input_var_attrs(node)
    return Symbol([Entry(node, i) for i in range(opdef.num_visible_outputs(parsed))])


def _set_input_var_attrs(node: Node) -> None:
    """nnvm's FSetInputVarAttrOnCompose: BatchNorm's moving statistics get ``__init__``."""
    from ..ir.formats.symbol_json import INPUT_VAR_INIT
    table = INPUT_VAR_INIT.get(node.op)
    if not table:
        return
    for i, e in enumerate(node.inputs):
        if i in table and e.node.is_variable and "__init__" not in e.node.attrs:
            e.node.attrs["__init__"] = table[i]


def make_function(op_name: str, func_name: str | None = None):
    """The ``mx.sym.<op>`` function of a registered operator."""
    opdef = registry.get(op_name)
    fname = func_name or op_name
    hint = fname.lower()

    def fn(*args, name=None, attr=None, out=None, **kwargs):
        return _create(op_name, hint, args, kwargs, name, attr)

    fn.__name__ = fname
    fn.__qualname__ = fname
    fn.__doc__ = (opdef.__class__.__doc__ or f"The {op_name} operator.")
    return fn


_fn_cache: dict = {}


def _sym_op(name: str, hint_name: str | None = None):
    """The mx.sym function of ``name``; ``hint_name`` (MXNet's function name) when it is not
    registered under that spelling."""
    key = (name, hint_name)
    fn = _fn_cache.get(key)
    if fn is None:
        if not registry.exists(name):
            raise MXNetError(f"operator '{name}' is not available in mxc (not registered)")
        fn = _fn_cache[key] = make_function(name, hint_name or name)
    return fn


def _by_mxnet_name(mx_name: str, fallback: str):
    """MXNet's internal function ``mx_name`` (e.g. ``_PlusScalar``), run as the registered op
    (alias or ``fallback``), named with MXNet's hint."""
    if registry.exists(mx_name):
        return _sym_op(mx_name)
    return _sym_op(fallback, mx_name)


_SCALAR_FALLBACK = {"_PlusScalar": "_plus_scalar", "_MinusScalar": "_minus_scalar",
                    "_RMinusScalar": "_rminus_scalar", "_MulScalar": "_mul_scalar",
                    "_DivScalar": "_div_scalar", "_RDivScalar": "_rdiv_scalar",
                    "_ModScalar": "_mod_scalar", "_RModScalar": "_rmod_scalar",
                    "_PowerScalar": "_power_scalar", "_RPowerScalar": "_rpower_scalar",
                    "_MaximumScalar": "_maximum_scalar", "_MinimumScalar": "_minimum_scalar",
                    "_HypotScalar": "_hypot_scalar",
                    "_Plus": "elemwise_add", "_Minus": "elemwise_sub", "_Mul": "elemwise_mul",
                    "_Div": "elemwise_div", "_Mod": "_mod", "_Power": "_power",
                    "_Maximum": "_maximum", "_Minimum": "_minimum", "_Hypot": "_hypot"}


def _sym_fn(mx_name: str):
    return _by_mxnet_name(mx_name, _SCALAR_FALLBACK.get(mx_name, mx_name))


def _sym_ufunc(self: Symbol, other, array_fn: str, scalar_fn: str):
    if isinstance(other, Symbol):
        return _sym_fn(array_fn)(self, other)
    if isinstance(other, numeric_types):
        return _sym_fn(scalar_fn)(self, scalar=other)
    raise TypeError(f"type {type(other)} not supported")


def _sym_rscalar(self: Symbol, other, scalar_fn: str):
    if isinstance(other, numeric_types):
        return _sym_fn(scalar_fn)(self, scalar=other)
    raise TypeError(f"type {type(other)} not supported")


def _helper(left, right, array_fn, scalar_fn, rscalar_fn, pyfn):
    if isinstance(left, Symbol) and isinstance(right, Symbol):
        return _sym_fn(array_fn)(left, right)
    if isinstance(left, Symbol) and isinstance(right, numeric_types):
        return _sym_fn(scalar_fn)(left, scalar=right)
    if isinstance(left, numeric_types) and isinstance(right, Symbol):
        return _sym_fn(rscalar_fn)(right, scalar=left)
    if isinstance(left, numeric_types) and isinstance(right, numeric_types):
        return pyfn(left, right)
    raise TypeError(f"types ({type(left)}, {type(right)}) not supported")


def pow(base, exp):
    return _helper(base, exp, "_Power", "_PowerScalar", "_RPowerScalar", lambda a, b: a ** b)


power = pow


def maximum(left, right):
    return _helper(left, right, "_Maximum", "_MaximumScalar", "_MaximumScalar",
                   lambda a, b: max(b, a))


def minimum(left, right):
    return _helper(left, right, "_Minimum", "_MinimumScalar", "_MinimumScalar",
                   lambda a, b: min(b, a))


def hypot(left, right):
    import math
    return _helper(left, right, "_Hypot", "_HypotScalar", "_HypotScalar", math.hypot)


def zeros(shape, dtype=None, **kwargs) -> Symbol:
    return _sym_op("_zeros")(shape=shape, dtype=dtype if dtype is not None else np.float32,
                             **kwargs)


def ones(shape, dtype=None, **kwargs) -> Symbol:
    return _sym_op("_ones")(shape=shape, dtype=dtype if dtype is not None else np.float32,
                            **kwargs)


def full(shape, val, dtype=None, **kwargs) -> Symbol:
    return _sym_op("_full")(shape=shape, dtype=dtype if dtype is not None else np.float32,
                            value=float(val), **kwargs)


def arange(start, stop=None, step=1.0, repeat=1, infer_range=False, name=None,
           dtype=None) -> Symbol:
    return _sym_op("_arange")(start=start, stop=stop, step=step, repeat=repeat,
                              infer_range=infer_range, name=name,
                              dtype=dtype if dtype is not None else np.float32)


def eye(N, M=0, k=0, dtype=None, **kwargs) -> Symbol:
    """A 2-D symbol with ones on the k-th diagonal (MXNet's wrapper over ``_eye``)."""
    return _sym_op("_eye")(N=N, M=M, k=k, dtype=dtype if dtype is not None else np.float32,
                           **kwargs)


def linspace(start, stop, num, endpoint=True, name=None, dtype=None) -> Symbol:
    """``num`` evenly spaced values over [start, stop] (MXNet's wrapper over ``_linspace``)."""
    return _sym_op("_linspace")(start=start, stop=stop, num=num, endpoint=endpoint, name=name,
                                dtype=dtype if dtype is not None else np.float32)


def split_v2(ary, indices_or_sections, axis=0, squeeze_axis=False) -> Symbol:
    """Split ``ary`` along ``axis`` into equal sections (an int) or at the indices of a
    tuple/list (MXNet's wrapper over ``_split_v2``)."""
    indices: list = []
    sections = 0
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
    elif isinstance(indices_or_sections, (tuple, list)):
        indices = [0] + list(indices_or_sections)
    else:
        raise ValueError("indices_or_sections must either int or tuple of ints")  # noqa: TRY004 (as MXNet)
    return _sym_op("_split_v2")(ary, indices=tuple(indices), axis=axis,
                                squeeze_axis=squeeze_axis, sections=sections)


# ------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------
def _op_input_names(op: str, attrs: dict):
    if not registry.exists(op):
        return None
    try:
        opdef = registry.get(op)
        return opdef.input_names(opdef.parse_attrs(attrs))
    except MXNetError:
        return None


def load_json(json_str: str) -> Symbol:
    """A symbol from MXNet symbol JSON text."""
    from ..ir.formats import parse_symbol_json
    if not isinstance(json_str, (str, bytes)):
        raise TypeError("json_str needs to be string")
    d = parse_symbol_json(json_str, source="<json>", op_input_names=_op_input_names)
    return Symbol(Graph.from_json_dict(d, source="<json>").outputs)


def load(fname) -> Symbol:
    """A symbol from a ``-symbol.json`` file."""
    from ..ir.formats import parse_symbol_json
    if not isinstance(fname, (str, os.PathLike)):
        raise TypeError("fname need to be string")
    src = os.fspath(fname)
    with open(src, "rb") as f:
        text = f.read()
    d = parse_symbol_json(text, source=src, op_input_names=_op_input_names)
    return Symbol(Graph.from_json_dict(d, source=src).outputs)


# ------------------------------------------------------------------------------------------
# namespaces
# ------------------------------------------------------------------------------------------
def _make_sym(op_name: str, func_name: str):
    return _sym_op(op_name, func_name if func_name != op_name else None)


def _random_wrappers() -> dict:
    from .random import sym_functions
    return sym_functions()


def _namespaces():
    from .ndarray import OpNamespace
    return {
        "op": OpNamespace(__name__ + ".op", ("",), _make_sym),
        "_internal": OpNamespace(__name__ + "._internal", ("",), _make_sym),
        "contrib": OpNamespace(__name__ + ".contrib", ("_contrib_",), _make_sym),
        "linalg": OpNamespace(__name__ + ".linalg", ("_linalg_",), _make_sym),
        "image": OpNamespace(__name__ + ".image", ("_image_",), _make_sym),
        "random": OpNamespace(__name__ + ".random", ("_random_", "_sample_"), _make_sym,
                              _random_wrappers),
        "sparse": OpNamespace(__name__ + ".sparse", ("_sparse_", ""), _make_sym),
    }


_NS = _namespaces()
op = _NS["op"]
_internal = _NS["_internal"]
contrib = _NS["contrib"]
linalg = _NS["linalg"]
image = _NS["image"]
random = _NS["random"]
sparse = _NS["sparse"]


def __getattr__(name: str):
    if name == "Custom":  # registered when mx.operator is imported
        from .. import operator  # noqa: F401
    if name.startswith("__"):
        raise AttributeError(name)
    if registry.exists(name):
        return _sym_op(name)
    raise AttributeError(f"module 'mxc.sym' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(registry.all_names()))

