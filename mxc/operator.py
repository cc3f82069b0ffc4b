"""``mx.operator``: operators written in Python (MXNet 1.9.1's ``python/mxnet/operator.py``
and ``src/operator/custom/custom.cc``).

A user subclasses :class:`CustomOpProp` (signature, shape/type inference, which operator to
create) and :class:`CustomOp` (``forward``/``backward`` over NDArrays), registers the prop with
``@mx.operator.register("name")`` and calls ``mx.nd.Custom(..., op_type="name")`` or
``mx.sym.Custom(..., op_type="name")``.

How mxc runs it
    ``Custom`` is a registered operator (:class:`CustomOpDef`) so Symbols, JSON, shape and
    type inference see it like any other: its arguments, outputs and auxiliary states are
    the prop's lists, its inference calls the prop's ``infer_shape`` / ``infer_type``. Its
    body is Python, so it has no lowering: compiled programs never contain it.

    * Imperatively, :func:`invoke` allocates the outputs from the prop's inference, creates
      the operator (``create_operator``, once per call as MXNet does) and calls its
      ``forward``. While autograd records, the call is an ``autograd.Function`` tape node, so
      ``backward`` calls the CustomOp's ``backward`` between the compiled segments of the
      rest of the tape.
    * In a bound Symbol, the executor runs a graph holding Custom nodes node by node (each
      other op as a compiled imperative kernel, each Custom node through :class:`NodeRunner`,
      whose CustomOp is created once per executor node) and differentiates it with
      autograd, which compiles the op runs between Custom nodes (``mxc.frontend.executor``).
"""
from __future__ import annotations

import numpy as np

from .base import MXNetError, OpError, ShapeError
from .ir import registry as _registry
from .ir.params import Attrs

__all__ = [
    "CustomOp",
    "CustomOpProp",
    "NodeRunner",
    "get_all_registered_operators",
    "get_registered_prop",
    "invoke",
    "register",
]

_PROPS: dict = {}


# ------------------------------------------------------------------------------------------
# the user API
# ------------------------------------------------------------------------------------------
class CustomOp:
    """Base class of Python operators: override ``forward`` and ``backward``."""

    def __init__(self) -> None:
        pass

    def forward(self, is_train, req, in_data, out_data, aux):
        """Compute ``out_data`` from ``in_data`` (lists of NDArrays); write each output with
        :meth:`assign` honouring ``req`` ('write', 'add', 'inplace', 'null')."""
        raise NotImplementedError("CustomOp.forward must be overridden")

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        """Compute ``in_grad`` (written with :meth:`assign` per ``req``) from ``out_grad``."""
        raise NotImplementedError("CustomOp.backward must be overridden")

    def assign(self, dst, req, src) -> None:
        """Write ``src`` into ``dst`` as ``req`` says."""
        if req == "null":
            return
        if req in ("write", "inplace"):
            dst[:] = src
        elif req == "add":
            dst[:] += src
        else:
            raise MXNetError(f"CustomOp.assign: unknown req {req!r}; expected 'null', "
                             "'write', 'inplace' or 'add'")


class CustomOpProp:
    """Base class of the properties of a Python operator: its inputs, outputs, auxiliary
    states, shape and type inference, and the operator it creates."""

    def __init__(self, need_top_grad: bool = True) -> None:
        self.need_top_grad_ = need_top_grad

    def infer_shape(self, in_shape):
        """(input shapes, output shapes[, aux shapes]) from the argument shapes; by default
        every output has the first argument's shape."""
        return in_shape, (in_shape[0],) * len(self.list_outputs()), ()

    def infer_type(self, in_type):
        """(input types, output types, aux types) from the argument types (numpy types); by
        default everything has the first argument's type."""
        return (in_type, [in_type[0]] * len(self.list_outputs()),
                [in_type[0]] * len(self.list_auxiliary_states()))

    def infer_storage_type(self, in_stype):
        """Storage types: mxc runs Custom operators on dense ('default') arrays."""
        for i, stype in enumerate(in_stype):
            if stype != "default":
                raise MXNetError(f"Custom operator: input {i} has storage type {stype!r}; "
                                 "only 'default' is supported")
        return (in_stype, ["default"] * len(self.list_outputs()),
                ["default"] * len(self.list_auxiliary_states()))

    def infer_storage_type_backward(self, ograd_stype, in_stype, out_stype, igrad_stype,
                                    aux_stype):
        return (ograd_stype, in_stype, out_stype, ["default"] * len(igrad_stype), aux_stype)

    def list_outputs(self):
        return ["output"]

    def list_arguments(self):
        return ["data"]

    def list_auxiliary_states(self):
        return []

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        """The values backward needs (MXNet frees the others early; mxc keeps the values
        of a recorded call alive anyway)."""
        deps = []
        if self.need_top_grad_:
            deps.extend(out_grad)
        deps.extend(in_data)
        deps.extend(out_data)
        return deps

    def create_operator(self, ctx, in_shapes, in_dtypes):
        """The :class:`CustomOp` computing this operator."""
        return CustomOp()


def register(reg_name: str):
    """Class decorator registering a :class:`CustomOpProp` subclass as ``op_type``
    ``reg_name`` (a later registration under the same name replaces it, as in MXNet)."""
    if not isinstance(reg_name, str) or not reg_name:
        raise MXNetError(f"mx.operator.register: the name must be a non-empty str, got "
                         f"{reg_name!r}")

    def do_register(prop_cls):
        if not (isinstance(prop_cls, type) and issubclass(prop_cls, CustomOpProp)):
            raise MXNetError(f"mx.operator.register('{reg_name}'): {prop_cls!r} is not a "
                             "CustomOpProp subclass")
        _PROPS[reg_name] = prop_cls
        return prop_cls
    return do_register


def get_registered_prop(op_type: str):
    """The CustomOpProp class registered as ``op_type``."""
    cls = _PROPS.get(op_type)
    if cls is None:
        raise MXNetError(f"Cannot find custom operator {op_type!r}; register it with "
                         f"@mx.operator.register({op_type!r}) first (registered: "
                         f"{sorted(_PROPS)})")
    return cls


def get_all_registered_operators() -> list:
    """Names of every registered operator (built-in and Custom)."""
    return sorted(set(_registry.all_names()) | set(_PROPS))


# ------------------------------------------------------------------------------------------
# the registered ``Custom`` operator
# ------------------------------------------------------------------------------------------
def _np_type(name):
    return None if name is None else np.dtype(name).type


def _dtype_name(t, what: str) -> str | None:
    if t is None:
        return None
    try:
        return np.dtype(t).name
    except TypeError:
        raise OpError(f"{what}: {t!r} is not a dtype") from None


def _shape_tuple(s, what: str) -> tuple:
    try:
        return tuple(int(d) for d in s)
    except (TypeError, ValueError):
        raise ShapeError(f"{what}: {s!r} is not a shape (a list of ints)") from None


class CustomOpDef(_registry.OpDef):
    """``Custom``: the operator whose signature and body come from a registered prop."""

    name = "Custom"
    fusion = "opaque"
    uses_train_mode = True

    def parse_attrs(self, raw: dict, node_name: str = "") -> Attrs:
        where = "operator Custom" + (f" (node '{node_name}')" if node_name else "")
        kwargs = {k: str(v) for k, v in raw.items()
                  if not (k.startswith("__") and k.endswith("__"))}
        op_type = kwargs.pop("op_type", None)
        if op_type is None:
            raise OpError(f"{where}: required attribute 'op_type' is missing")
        cls = _PROPS.get(op_type)
        if cls is None:
            raise OpError(f"{where}: Cannot find custom operator {op_type!r}; register it "
                          f"with @mx.operator.register({op_type!r}) (registered: "
                          f"{sorted(_PROPS)})")
        try:
            prop = cls(**kwargs)
        except TypeError as e:
            raise OpError(f"{where}: {cls.__name__}({kwargs}) failed: {e}") from None
        out = Attrs(op_type=op_type, kwargs=kwargs)
        out["prop"] = prop
        out["where"] = where
        return out

    def arguments(self, a) -> list:
        return list(a.prop.list_arguments())

    def aux_names(self, a) -> list:
        return list(a.prop.list_auxiliary_states())

    def outputs(self, a) -> list:
        return list(a.prop.list_outputs())

    def infer_shape(self, a, in_shapes: list) -> tuple:
        n_args = len(self.arguments(a))
        n_out = len(self.outputs(a))
        args = in_shapes[:n_args]
        if all(s is None for s in args):
            return in_shapes, [None] * n_out
        # MXNet passes unknown argument shapes as empty lists (a label deduced from data)
        try:
            ishape, oshape, ashape = _split3(a.prop.infer_shape(
                [list(s) if s is not None else [] for s in args]), "infer_shape", a)
        except (IndexError, TypeError, ValueError, KeyError):
            if any(s is None for s in args):
                return in_shapes, [None] * n_out  # needs the shapes not known yet
            raise
        _check_len(ishape, n_args, "input shapes", a)
        _check_len(oshape, n_out, "output shapes", a)
        _check_len(ashape, len(self.aux_names(a)), "aux shapes", a)
        full = [_shape_tuple(s, a.where) for s in list(ishape) + list(ashape)]
        for i, (given, got) in enumerate(zip(in_shapes, full)):
            if given is not None and tuple(given) != got:
                names = self.input_names(a)
                raise ShapeError(f"{a.where}: infer_shape of '{a.op_type}' says input "
                                 f"'{names[i]}' has shape {got}, but it has {tuple(given)}")
        return full, [_shape_tuple(s, a.where) for s in oshape]

    def infer_type(self, a, in_types: list) -> tuple:
        n_args = len(self.arguments(a))
        n_out = len(self.outputs(a))
        args = in_types[:n_args]
        if all(t is None for t in args):
            return in_types, [None] * n_out
        itype, otype, atype = _split3(a.prop.infer_type([_np_type(t) for t in args]),
                                      "infer_type", a)
        _check_len(itype, n_args, "input types", a)
        _check_len(otype, n_out, "output types", a)
        _check_len(atype, len(self.aux_names(a)), "aux types", a)
        full = [_dtype_name(t, a.where) for t in list(itype) + list(atype)]
        full = [f if f is not None else g for f, g in zip(full, in_types)]
        for i, (given, got) in enumerate(zip(in_types, full)):
            if given is not None and got is not None and given != got:
                names = self.input_names(a)
                raise OpError(f"{a.where}: infer_type of '{a.op_type}' says input "
                              f"'{names[i]}' has dtype {got}, but it has {given}")
        return full, [_dtype_name(t, a.where) for t in otype]

    def gradient(self, node, out_grads: list) -> list:
        raise OpError(f"{node.parsed.where}: a Custom operator ('{node.parsed.op_type}') has "
                      "no graph gradient; its backward is Python, run by autograd / the "
                      "executor's node-by-node mode")

    def lower(self, ctx) -> None:
        raise OpError("operator Custom: its body is Python and cannot be compiled; graphs "
                      "with Custom nodes run node by node (mx.nd.Custom, or the executor)")


def _split3(ret, what: str, a) -> tuple:
    if not isinstance(ret, (list, tuple)) or len(ret) not in (2, 3):
        raise OpError(f"{a.where}: {what} of '{a.op_type}' must return 2 or 3 lists, got "
                      f"{ret!r}")
    if len(ret) == 2:
        return ret[0], ret[1], []
    return ret[0], ret[1], ret[2]


def _check_len(lst, n: int, what: str, a) -> None:
    if len(lst) != n:
        raise OpError(f"{a.where}: '{a.op_type}' returned {len(lst)} {what}, expecting {n}")


if not _registry.exists("Custom"):
    _registry.register(CustomOpDef)


# ------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------
def _frontend():
    from .frontend import autograd, ndarray
    return ndarray, autograd


def _infer(a, inputs: list) -> tuple:
    """Output shapes and dtype names of a call on NDArray ``inputs``."""
    opdef = _registry.get("Custom")
    shapes = [tuple(x.shape) for x in inputs]
    _, oshapes = opdef.infer_shape(a, shapes)
    _, otypes = opdef.infer_type(a, [np.dtype(x.dtype).name for x in inputs])
    return oshapes, otypes


def _make_function_class():
    _, autograd = _frontend()

    class _CustomCall(autograd.Function):
        """One Custom call as an autograd.Function: its backward is the CustomOp's."""

        def __init__(self, a, op, ctx) -> None:
            super().__init__()
            self.a = a
            self.op = op
            self.ctx = ctx
            self.n_args = len(a.prop.list_arguments())

        def forward(self, *inputs):
            nd, ag = _frontend()
            in_data = list(inputs[: self.n_args])
            aux = list(inputs[self.n_args:])
            oshapes, otypes = _infer(self.a, list(inputs))
            out_data = [nd.zeros(s, ctx=self.ctx, dtype=t) for s, t in zip(oshapes, otypes)]
            self.op.forward(is_train=ag.is_training(), req=["write"] * len(out_data),
                            in_data=in_data, out_data=out_data, aux=aux)
            self.saved = (in_data, out_data, aux)
            return out_data[0] if len(out_data) == 1 else out_data

        def backward(self, *out_grads):
            nd, _ = _frontend()
            in_data, out_data, aux = self.saved
            in_grad = [nd.zeros(x.shape, ctx=x.context, dtype=x.dtype) for x in in_data]
            self.op.backward(req=["write"] * len(in_grad), out_grad=list(out_grads),
                             in_data=in_data, out_data=out_data, in_grad=in_grad, aux=aux)
            # auxiliary states get no gradient
            return in_grad + [nd.zeros(x.shape, ctx=x.context, dtype=x.dtype) for x in aux]

    return _CustomCall


_function_class = None


def _call(a, op, inputs: list, ctx):
    global _function_class
    if _function_class is None:
        _function_class = _make_function_class()
    return _function_class(a, op, ctx)(*inputs)


def _create_operator(a, inputs: list, ctx):
    op = a.prop.create_operator(str(ctx), [list(x.shape) for x in inputs],
                                [np.dtype(x.dtype).type for x in inputs])
    if not isinstance(op, CustomOp):
        raise MXNetError(f"{a.where}: create_operator of '{a.op_type}' must return a "
                         f"CustomOp, got {type(op).__name__}")
    return op


def _check_inputs(a, inputs: list) -> None:
    nd, _ = _frontend()
    names = list(a.prop.list_arguments()) + list(a.prop.list_auxiliary_states())
    if len(inputs) != len(names):
        raise MXNetError(f"{a.where}: '{a.op_type}' takes {len(names)} inputs {names}, got "
                         f"{len(inputs)}")
    for n, x in zip(names, inputs):
        if not isinstance(x, nd.NDArray):
            raise MXNetError(f"{a.where}: input '{n}' must be an NDArray, got "
                             f"{type(x).__name__}")


def invoke(*args, op_type=None, out=None, name=None, **kwargs):
    """``mx.nd.Custom(*inputs, op_type=..., **kwargs)``: run a registered Python operator
    imperatively (recorded by autograd). Inputs are the prop's arguments then auxiliary
    states, positional or by name; other keyword arguments go to the prop's constructor as
    strings."""
    nd, _ = _frontend()
    from .frontend.ndarray_ops import attr_str, template
    if op_type is None:
        raise MXNetError("Custom: required argument 'op_type' is missing")
    named = {k: v for k, v in kwargs.items() if isinstance(v, nd.NDArray)}
    attrs = {"op_type": op_type}
    attrs.update({k: attr_str(v) for k, v in kwargs.items() if k not in named})
    a = template("Custom", attrs).parsed
    inputs = list(args)
    if named:
        names = list(a.prop.list_arguments()) + list(a.prop.list_auxiliary_states())
        for k, v in named.items():
            if k not in names:
                raise MXNetError(f"{a.where}: unknown input '{k}'; inputs are {names}")
            i = names.index(k)
            while len(inputs) <= i:
                inputs.append(None)
            if inputs[i] is not None:
                raise TypeError(f"Custom() got multiple values for input '{k}'")
            inputs[i] = v
    _check_inputs(a, inputs)
    ctx = inputs[0].context if inputs else nd.current_context()
    res = _call(a, _create_operator(a, inputs, ctx), inputs, ctx)
    if out is None:
        return res
    outs = [out] if isinstance(out, nd.NDArray) else list(out)
    got = [res] if isinstance(res, nd.NDArray) else list(res)
    if len(outs) != len(got):
        raise MXNetError(f"{a.where}: {len(got)} outputs, but {len(outs)} arrays given as out")
    for o, r in zip(outs, got):
        o[:] = r
    return out


class NodeRunner:
    """Runs one graph node's Custom operator for an executor: the CustomOp is created on
    the first call and kept (MXNet creates it once per bound node)."""

    def __init__(self, node) -> None:
        self.a = node.parsed
        self.op = None

    def __call__(self, inputs: list, ctx) -> list:
        _check_inputs(self.a, inputs)
        if self.op is None:
            self.op = _create_operator(self.a, inputs, ctx)
        res = _call(self.a, self.op, inputs, ctx)
        nd, _ = _frontend()
        return [res] if isinstance(res, nd.NDArray) else list(res)
