"""Imperative operator dispatch: ``mx.nd.<op>(...)`` through the compiler, cached.

Every registered operator runs the same way (MXNet's ``MXImperativeInvoke``):

1. the call's attributes become MXNet strings once per distinct attribute set, parsed and
   validated by the op's ParamSpec (:class:`OpTemplate`, cached per op + attributes);
2. per distinct (input shapes, dtypes, train mode) the op is built as a one-node graph and
   compiled (``compile_graph``), cached on the template;
3. per call the compiled :class:`~mxc.runtime.program.Program` is cloned and its slots bound
   straight to the NDArrays' numpy storage (inputs, aux states, outputs: no copies), then
   its forward section is *pushed* to the dependency engine (:mod:`mxc.runtime.engine`)
   reading the inputs' variables and writing the outputs' (and the inputs the op mutates:
   auxiliary states such as optimizer states, a fixed BatchNorm gamma in training), and the
   call returns at once with the output arrays. An output that the compiler made a view of an
   input (Reshape, Flatten, ...) is returned as an NDArray sharing that input's memory and
   engine variable, as MXNet does. Random seeds are drawn at push time, in program order, so
   the threaded and the naive engine compute the same numbers.

   Fast path: a tiny op (estimated work below ``INLINE_COST``) whose variables are all idle
   runs inline in the caller instead (the engine would run it at once anyway; a push and a
   worker wake-up cost more than such a kernel).

The functions exposed as ``mx.nd.<op>`` are generated here from the registry on first
access, so nothing in this module lists operators.
"""
from __future__ import annotations

import ctypes
import math
import threading

import numpy as np

from ..base import MXNetError
from ..ir import registry
from ..ir.dtypes import BY_NAME, DType
from ..ir.graph import Entry, Graph, Node, variable
from ..runtime import engine as _engine
from .context import Context, current_context

__all__ = [
    "OpTemplate",
    "aligned_empty",
    "attr_str",
    "invoke",
    "make_function",
    "mutated_inputs",
    "set_train_mode_hook",
]

_lock = threading.RLock()
_templates: dict = {}


# ------------------------------------------------------------------------------------------
# attribute values -> MXNet strings
# ------------------------------------------------------------------------------------------
def attr_str(v) -> str:
    """Format a Python attribute value as MXNet's frontend writes it (``str(v)``, with numpy
    scalars, dtypes and contexts spelled the MXNet way)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (int, float)):
        return str(v)
    if v is None:
        return "None"
    if isinstance(v, np.generic):
        return str(v)  # numpy's shortest repr: str(np.float32(0.1)) == "0.1", like MXNet
    if isinstance(v, tuple):
        inner = ", ".join(attr_str(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(attr_str(x) for x in v) + "]"
    if isinstance(v, Context):
        return str(v)
    dt = _dtype_name_or_none(v)
    if dt is not None:
        return dt
    return str(v)


def _dtype_name_or_none(v):
    from .ndarray import dtype_name
    if isinstance(v, np.dtype) or (isinstance(v, type) and issubclass(v, np.generic)):
        try:
            return dtype_name(v)
        except (TypeError, ValueError):
            return None
    return None


_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    # (ctypes.addressof of a from_buffer view is ~4x cheaper than ndarray.ctypes.data)
    off = (-_addressof(_from_buffer(buf))) % 64
    return np.ndarray(shape, dt, buf, off)


# ------------------------------------------------------------------------------------------
# train mode (autograd sets the hook later; imperative ops default to inference)
# ------------------------------------------------------------------------------------------
def _inference_mode() -> bool:
    return False


_train_mode = _inference_mode


def set_train_mode_hook(fn) -> None:
    """Install the function telling whether imperative ops run in training mode."""
    global _train_mode
    _train_mode = fn or _inference_mode


# ------------------------------------------------------------------------------------------
# autograd recording (mxc.frontend.autograd installs these when it loads)
# ------------------------------------------------------------------------------------------
_ag_state = None      # thread-local with a ``recording`` attribute
_ag_record = None     # record(tmpl, is_train, inputs, datas, outputs, hidden)
_ag_check_out = None  # check_out(tmpl, inputs, outs): raise when out= is not allowed


def set_autograd_hooks(state, record, check_out) -> None:
    """Install autograd's recording state and its callbacks (see :func:`invoke`)."""
    global _ag_state, _ag_record, _ag_check_out
    _ag_record = record
    _ag_check_out = check_out
    _ag_state = state


# ------------------------------------------------------------------------------------------
# templates (op + attributes) and their compiled forms (per shapes/dtypes/mode)
# ------------------------------------------------------------------------------------------
class _Compiled:
    __slots__ = (
        "compiled",
        "cost",
        "has_rng",
        "hidden",
        "in_slots",
        "mut_inputs",
        "n_calls",
        "out_alias",
        "out_dt",
        "out_np",
        "out_shapes",
        "out_slots",
        "program",
    )

    def __init__(self, cg, in_names, heads, node=None, mut_inputs=()) -> None:
        self.compiled = cg
        self.program = cg.program
        self.n_calls = len(cg.program.calls)
        self.has_rng = any(s.kind == "rng" for s in cg.program.slots)
        self.cost = sum(max(c.cost, 1) for c in cg.program.calls)
        self.mut_inputs = tuple(mut_inputs)
        self.in_slots = [cg.var_slots[n] for n in in_names]
        self.out_slots = list(cg.head_slots)
        self.out_shapes = []
        self.out_dt = []
        self.out_np = []
        self.out_alias = []
        for h, slot in zip(heads, self.out_slots):
            k = (h.node.uid, h.index)
            self.out_shapes.append(tuple(cg.shapes[k]))
            d = BY_NAME[cg.types[k]]
            self.out_dt.append(d)
            self.out_np.append(d.np)
            self.out_alias.append(self.in_slots.index(slot) if slot in self.in_slots else None)
        # hidden outputs (Dropout's mask, BatchNorm's mean/invstd): their slots, read back
        # after a run when autograd records the call (the backward needs them)
        self.hidden = []
        if node is not None:
            for i in range(len(heads), node.num_outputs):
                k = (node.uid, i)
                slot = cg.entry_slot.get(k)
                if slot is None:
                    continue
                d = BY_NAME[cg.types[k]]
                self.hidden.append((slot, tuple(cg.shapes[k]), d))


class OpTemplate:
    """One operator with one attribute set: parsed once, compiled per input signature."""

    __slots__ = (
        "attrs",
        "compiled",
        "inplace",
        "input_names",
        "n_inputs",
        "n_vis",
        "op_name",
        "opdef",
        "parsed",
        "uses_train",
    )

    def __init__(self, op_name: str, attrs: dict) -> None:
        opdef = registry.get(op_name)
        self.op_name = op_name
        self.opdef = opdef
        self.attrs = attrs
        self.parsed = opdef.parse_attrs(attrs)
        self.input_names = list(opdef.input_names(self.parsed))
        self.n_inputs = opdef.num_inputs(self.parsed)
        self.n_vis = opdef.num_visible_outputs(self.parsed)
        self.uses_train = bool(opdef.uses_train_mode)
        self.inplace = set(opdef.inplace(self.parsed))
        self.compiled: dict = {}

    def build_graph(self, n: int) -> tuple:
        """The one-node graph of this op with ``n`` inputs: (graph, input names, heads,
        node)."""
        names = list(self.input_names[:n]) + [f"arg{i}" for i in range(len(
            self.input_names), n)]
        vars_ = [variable(nm) for nm in names]
        node = Node(self.opdef.name, self.op_name.lower(), self.attrs,
                    [Entry(v, 0) for v in vars_])
        node._parsed = self.parsed
        heads = [Entry(node, i) for i in range(self.n_vis)]
        return Graph(heads), names, heads, node

    def compile(self, key) -> _Compiled:
        from ..compiler.build import compile_graph

        shapes, dtypes, is_train = key
        with _lock:
            c = self.compiled.get(key)
            if c is not None:
                return c
            n = len(shapes)
            g, names, heads, node = self.build_graph(n)
            cg = compile_graph(g, dict(zip(names, shapes)),
                               dict(zip(names, dtypes)), is_train=is_train)
            c = _Compiled(cg, names, heads, node,
                          [i for i in mutated_inputs(self.opdef, self.parsed, is_train,
                                                     self.input_names) if i < n])
            self.compiled[key] = c
            return c


def mutated_inputs(opdef, parsed, is_train: bool, input_names=None) -> list:
    """Indices of the inputs an op writes in place (MXNet's ``FMutateInputs``): its auxiliary
    states (BatchNorm's moving statistics, optimizer states) and, in training, a fixed gamma
    (MXNet's CPU BatchNorm writes 1 into it)."""
    idx = list(opdef.aux_indices(parsed))
    if is_train and parsed.get("fix_gamma"):
        names = input_names if input_names is not None else opdef.input_names(parsed)
        if "gamma" in names:
            idx.append(list(names).index("gamma"))
    return sorted(set(idx))


def template(op_name: str, attrs: dict) -> OpTemplate:
    """The cached template of ``op_name`` with raw attribute values ``attrs``."""
    try:
        key = (op_name, tuple(attrs.items()))
        t = _templates.get(key)
    except TypeError:  # unhashable values (lists): key on their strings
        key = (op_name, tuple((k, attr_str(v)) for k, v in attrs.items()))
        t = _templates.get(key)
    if t is None:
        sattrs = {k: attr_str(v) for k, v in attrs.items() if not (v is None and k in (
            "ctx",))}
        t = OpTemplate(op_name, sattrs)
        _templates[key] = t
    return t


# ------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------
_NDArray = None
_wrap = None


def _bind_ndarray() -> None:
    global _NDArray, _wrap
    from .ndarray import NDArray
    from .ndarray import _wrap as w
    _NDArray, _wrap = NDArray, w


#: estimated work (element-operations, the kernels' ``cost``) below which an op whose engine
#: variables are all idle runs inline instead of being pushed
INLINE_COST = 1 << 12

_Var = _engine.Var
_get_engine = _engine.get


def _no_reseed() -> None:
    pass


def launch(prog, section: str, const_vars, mutable_vars, name: str, has_rng: bool,
           tiny: bool = False, after=None) -> None:
    """Push ``prog.run(section)`` (then ``after()``) on the engine. The seeds of its random
    kernels are drawn now, in program order; ``tiny`` work whose variables are all idle runs
    inline (see the module doc)."""
    if section == "forward":
        if has_rng:
            type(prog).reseed(prog)
        prog.reseed = _no_reseed   # (run() reseeds the forward: done above, here)
    run = prog.run
    if after is None:
        def fn() -> None:
            run(section)
    else:
        def fn() -> None:
            run(section)
            after()
    eng = _get_engine()
    if tiny and eng.run_inline_if_idle(fn, const_vars, mutable_vars, name=name):
        return
    eng.push(fn, const_vars, mutable_vars, name=name)


def invoke(tmpl: OpTemplate, inputs: list, out=None, ctx: Context | None = None):
    """Run ``tmpl`` on NDArray ``inputs``; returns an NDArray, a list of them (several
    visible outputs) or ``out``. The kernels are pushed to the engine (see the module doc):
    the results are valid after a wait."""
    if _wrap is None:
        _bind_ndarray()
    datas = []
    dtn = []
    ivars = []
    on_gpu = False
    for x in inputs:
        if x._ctx.device_typeid == 2:
            on_gpu = True
        if x.stype != "default":
            x = x.tostype("default")  # storage fallback, as MXNet does for dense-only ops
        datas.append(x._buf)
        dtn.append(x._dt.name)
        ivars.append(x._var)
    if out is not None and not on_gpu:
        on_gpu = any(o._ctx.device_typeid == 2 for o in (
            [out] if isinstance(out, _NDArray) else out))
        if ctx is None and not inputs:
            ctx = (out if isinstance(out, _NDArray) else out[0])._ctx
    if ctx is None:
        ctx = inputs[0]._ctx if inputs else current_context()
    if on_gpu or ctx.device_typeid == 2:
        from .gpu_storage import invoke_gpu
        return invoke_gpu(tmpl, inputs, out, ctx)
    key = (tuple([d.shape for d in datas]), tuple(dtn),
           _train_mode() if tmpl.uses_train else False)
    c = tmpl.compiled.get(key)
    if c is None:
        c = tmpl.compile(key)
    prog = c.program.clone()
    bound = dict(zip(c.in_slots, datas))
    st = _ag_state
    rec = st is not None and st.recording
    mut = [ivars[j] for j in c.mut_inputs] if c.mut_inputs else []
    if out is not None:
        if rec:
            _ag_check_out(tmpl, inputs, out)
        outs = [out] if isinstance(out, _NDArray) else list(out)
        after = _bind_out(tmpl, c, prog, bound, datas, outs, mut)
        hidden, hvar = _hidden(c, prog, rec, mut)
        if rec:
            _ag_record(tmpl, key[2], inputs, datas, outs, hidden, hvar)
        if c.n_calls or after is not None:
            launch(prog, "forward", ivars, mut, tmpl.op_name, c.has_rng,
                   c.cost < INLINE_COST, after)
        return out
    outs_np = []
    ovars = []
    slot_var = {}
    for i, slot in enumerate(c.out_slots):
        j = c.out_alias[i]
        if j is not None:
            d = datas[j]
            arr = d.reshape(c.out_shapes[i]) if d.dtype == c.out_np[i] else \
                d.view(c.out_np[i]).reshape(c.out_shapes[i])
            v = ivars[j]
        elif slot in bound:
            arr = bound[slot].view(c.out_np[i]).reshape(c.out_shapes[i])
            v = slot_var[slot]
        else:
            arr = aligned_empty(c.out_shapes[i], c.out_np[i])
            bound[slot] = arr
            v = slot_var[slot] = _Var()
        outs_np.append(arr)
        ovars.append(v)
        mut.append(v)
    prog.allocate(bound)
    if rec:
        res = [_wrap(a, c.out_dt[i], ctx, True, ovars[i]) for i, a in enumerate(outs_np)]
        hidden, hvar = _hidden(c, prog, rec, mut)
        _ag_record(tmpl, key[2], inputs, datas, res, hidden, hvar)
    if c.n_calls:
        launch(prog, "forward", ivars, mut, tmpl.op_name, c.has_rng, c.cost < INLINE_COST)
    if rec:
        return res[0] if len(res) == 1 else res
    if len(outs_np) == 1:
        return _wrap(outs_np[0], c.out_dt[0], ctx, True, ovars[0])
    return [_wrap(a, c.out_dt[i], ctx, True, ovars[i]) for i, a in enumerate(outs_np)]


def _hidden(c: _Compiled, prog, rec: bool, mut: list) -> tuple:
    """(array, DType) of each hidden output of the run of ``prog`` (views of its storage)
    when recording, and the engine variable standing for them (added to ``mut``)."""
    if not rec or not c.hidden:
        return [], None
    out = []
    for slot, shape, d in c.hidden:
        st = prog.storage[slot]
        n = math.prod(shape) * d.itemsize
        out.append((st[:n].view(d.np).reshape(shape), d))
    v = _Var()
    mut.append(v)
    return out, v


def _bind_out(tmpl, c, prog, bound, datas, outs, mut):
    """Bind the ``out=`` arrays to the program (their variables appended to ``mut``);
    returns the copies to make after the run (a function) or None."""
    if len(outs) != len(c.out_slots):
        raise MXNetError(f"{tmpl.op_name}: {len(c.out_slots)} outputs, but {len(outs)} "
                         "arrays given as out")
    copy_back = []
    for i, slot in enumerate(c.out_slots):
        shape = c.out_shapes[i]
        j = c.out_alias[i]
        o = outs[i]
        if o.shape != shape:
            raise MXNetError(f"{tmpl.op_name}: out has shape {o.shape}, the result has "
                             f"shape {shape}")
        if o._dt is not c.out_dt[i]:
            raise MXNetError(f"{tmpl.op_name}: out has dtype {o._dt.name}, the result has "
                             f"dtype {c.out_dt[i].name}")
        od = o._buf
        mut.append(o._var)
        if j is not None or slot in bound or _overlaps(od, datas, (i, tmpl.inplace)):
            # result first elsewhere, then copied (views, or out aliasing an input of an op
            # that cannot run in place)
            if j is not None:
                tmp = datas[j].reshape(shape) if datas[j].dtype == c.out_np[i] else \
                    datas[j].view(c.out_np[i]).reshape(shape)
            elif slot in bound:
                tmp = bound[slot].view(c.out_np[i]).reshape(shape)
            else:
                tmp = aligned_empty(shape, c.out_np[i])
                bound[slot] = tmp
            if od.ctypes.data != tmp.ctypes.data:
                copy_back.append((od, tmp))
        else:
            bound[slot] = od
    prog.allocate(bound)
    if not copy_back:
        return None

    def after() -> None:
        for dst, src in copy_back:
            np.copyto(dst, src, casting="unsafe")
    return after


def _overlaps(od: np.ndarray, datas: list, info) -> bool:
    """Whether output array ``od`` shares memory with an input in a way the op cannot run
    with (an exact alias is fine for an input the op lists as in-place with this output)."""
    i, inplace = info
    for j, d in enumerate(datas):
        if np.may_share_memory(od, d):
            exact = od.ctypes.data == d.ctypes.data and od.nbytes == d.nbytes
            if not (exact and (j, i) in inplace):
                return True
    return False


# ------------------------------------------------------------------------------------------
# generated mx.nd.<op> functions
# ------------------------------------------------------------------------------------------
def _is_array(x) -> bool:
    if _NDArray is None:
        _bind_ndarray()
    return isinstance(x, _NDArray)


def split_call(op_name: str, opdef, args: tuple, kwargs: dict, is_input) -> tuple:
    """Split a call into (positional inputs, named inputs, attrs) following MXNet's generated
    signatures ``op(input..., param..., **kwargs)``: leading array (or None) positionals are
    inputs, later positionals fill the op's parameters in declaration order."""
    pos_inputs = []
    i = 0
    n = len(args)
    while i < n and (args[i] is None or is_input(args[i])):
        pos_inputs.append(args[i])
        i += 1
    attrs = {}
    named = {}
    if i < n:
        pnames = [p for p in opdef.params.params]
        rest = args[i:]
        if len(rest) > len(pnames):
            raise TypeError(f"{op_name}() takes at most {len(pnames)} positional parameters "
                            f"after its inputs ({pnames}), got {len(rest)}")
        for p, v in zip(pnames, rest):
            if is_input(v):
                raise TypeError(f"{op_name}(): inputs must come before parameters")
            attrs[p] = v
    for k, v in kwargs.items():
        if is_input(v):
            named[k] = v
        elif k in attrs:
            raise TypeError(f"{op_name}() got multiple values for argument '{k}'")
        else:
            attrs[k] = v
    return pos_inputs, named, attrs


def order_inputs(op_name: str, tmpl: OpTemplate, pos_inputs: list, named: dict) -> list:
    """Positional then named inputs, in the op's input order; trailing Nones dropped."""
    inputs = list(pos_inputs)
    if named:
        names = tmpl.input_names
        for k, v in named.items():
            if k not in names:
                raise MXNetError(f"{op_name}: unknown input '{k}'; inputs are {names}")
            idx = names.index(k)
            if idx < len(inputs) and inputs[idx] is not None:
                raise TypeError(f"{op_name}() got multiple values for input '{k}'")
            while len(inputs) <= idx:
                inputs.append(None)
            inputs[idx] = v
    want = tmpl.n_inputs
    if want is not None:
        while len(inputs) > want and inputs[-1] is None:
            inputs.pop()
    if any(x is None for x in inputs) or (want is not None and len(inputs) != want):
        given = ["<missing>" if x is None else "array" for x in inputs]
        raise MXNetError(f"{op_name}: expects {want} inputs {tmpl.input_names}, got "
                         f"{len([x for x in inputs if x is not None])} ({given})")
    return inputs


def make_function(op_name: str, func_name: str | None = None):
    """The ``mx.nd.<op>`` function of a registered operator."""
    opdef = registry.get(op_name)
    has_num_args = "num_args" in opdef.params.params
    takes_ctx = "ctx" in opdef.params.params
    takes_dtype = "dtype" in opdef.params.params

    def fn(*args, out=None, name=None, **kwargs):
        pos, named, attrs = split_call(op_name, opdef, args, kwargs, _is_array)
        ctx = None
        if takes_ctx and "ctx" in attrs:
            c = attrs["ctx"]
            if c is None:
                del attrs["ctx"]
            elif isinstance(c, Context):
                ctx = c
        if takes_dtype and attrs.get("dtype", 0) is None:
            del attrs["dtype"]
        if has_num_args and "num_args" not in attrs:
            attrs["num_args"] = len(pos) + len(named)
        tmpl = template(op_name, attrs)
        inputs = order_inputs(op_name, tmpl, pos, named) if named or \
            (tmpl.n_inputs is not None and len(pos) != tmpl.n_inputs) or \
            any(x is None for x in pos) else pos
        return invoke(tmpl, inputs, out, ctx)

    fn.__name__ = func_name or op_name
    fn.__qualname__ = fn.__name__
    fn.__doc__ = (opdef.__class__.__doc__ or f"The {op_name} operator.") + \
        f"\n\nInputs: {_safe_inputs(opdef)}; parameters: {list(opdef.params.params)}."
    return fn


def _safe_inputs(opdef) -> list:
    try:
        return opdef.input_names(opdef.parse_attrs({}))
    except MXNetError:
        return ["..."]


def dtype_of(x) -> DType:
    return x._dt
