"""``mx.autograd``: MXNet 1.x's imperative automatic differentiation, compiled.

Recording (MXNet's ``Imperative::RecordOp``)
    While :func:`is_recording`, every imperative operator call whose inputs include an array in
    a recorded graph appends a tape node to that graph: the op template (op + attributes), the
    tape entries of its inputs, and the values of ALL its outputs -- hidden ones included
    (Dropout's mask, BatchNorm's batch mean / inverse std), read back from the call's program.
    The entries live on the arrays (``NDArray._ag`` = ``(node, output index)``), so a graph
    lives exactly as long as arrays that reach it, as in MXNet. Inputs that are not in a graph
    become constant leaves; :func:`mark_variables` / ``attach_grad`` make variable leaves.
    Ops run with ``is_train`` = :func:`is_training` (BatchNorm, Dropout...).

Backward (MXNet's ``Imperative::Backward``)
    The tape reachable from the heads is turned into ONE mxc graph: tape nodes become graph
    nodes, leaves and head gradients become variables. ``mxc.compiler.gradient.gradient`` (the
    same per-op gradient definitions the symbolic executor uses) differentiates it. Then every
    reference of the backward nodes to a forward output is replaced by a variable bound to the
    value recorded at forward time, so the forward is NOT recomputed: Dropout reuses the mask it
    drew, BatchNorm the statistics of its batch. The graph of the remaining backward nodes (plus
    an ``elemwise_add`` per ``grad_req='add'`` variable) is compiled with ``compile_graph`` and
    run once; its outputs are bound straight to the ``.grad`` arrays. ``_backward_BatchNorm``
    updates the moving statistics in place (mxc's and MXNet's CPU BatchNorm do it in backward).

    Compiled backward programs are cached by the tape's structure (op templates, how entries
    connect, leaf shapes/dtypes, heads, which variables and their grad_req, train mode), so a
    training loop compiles its backward once.

    A :class:`Function` (Python forward/backward) cannot live inside a compiled program: a tape
    that contains one is differentiated segment by segment (the op runs between Functions are
    each one compiled graph, also cached), with gradients accumulated between segments.

On a GPU (``mx.gpu(i)`` arrays)
    The tape's values are device buffers (``gpu_storage.GpuBuffer``; ``gpu_storage.invoke_gpu``
    records the calls). The same backward graph is compiled with ``compile_graph_cuda`` (the
    plan cache key includes the GPU target) and ``gpu_storage.run_backward`` runs it bound to
    the recorded values and the ``.grad`` arrays on the device: nothing is differentiated on
    the host. A tape spanning contexts, or holding a Function, is refused with an MXNetError.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np

from ..base import MXNetError
from . import gpu_storage as _gpu
from . import ndarray_ops as _ops
from .gpu_storage import GpuBuffer
from .ndarray import NDArray, _wrap

__all__ = [
    "Function",
    "backward",
    "get_symbol",
    "grad",
    "is_recording",
    "is_training",
    "mark_variables",
    "pause",
    "predict_mode",
    "record",
    "set_recording",
    "set_training",
    "train_mode",
]

_REQS = ("null", "write", "inplace", "add")
_REQ_CODES = {0: "null", 1: "write", 2: "inplace", 3: "add"}

_NOT_IN_GRAPH = ("Cannot differentiate node because it is not in a computational graph. "
                 "You need to set is_recording to true or use autograd.record() to save "
                 "computational graphs for backward. If you want to differentiate the same "
                 "graph twice, you need to pass retain_graph=True to backward.")
_INPLACE = ("Assigning to NDArrays that are already in a computational graph will cause "
            "undefined behavior when evaluating gradients. Please call backward first to "
            "clear the graph or do this out side of a record section. Also note that you "
            "cannot use inplace operations like +=, *=, relu(x, out=x), y[idx]=x, etc inside "
            "a record section.")


# ------------------------------------------------------------------------------------------
# state
# ------------------------------------------------------------------------------------------
class _State(threading.local):
    recording = False
    training = False


_state = _State()


def set_recording(is_recording: bool) -> bool:
    """Set recording on/off; returns the previous state."""
    prev = _state.recording
    _state.recording = bool(is_recording)
    return prev


def set_training(train_mode: bool) -> bool:
    """Set training/predicting mode (``is_train`` of the ops); returns the previous state."""
    prev = _state.training
    _state.training = bool(train_mode)
    return prev


def is_recording() -> bool:
    return _state.recording


def is_training() -> bool:
    return _state.training


class _RecordingStateScope:
    """``with`` scope setting recording and/or training state, restored on exit."""

    def __init__(self, is_record, train_mode) -> None:
        self._enter_is_record = is_record
        self._enter_train_mode = train_mode
        self._prev_is_record = None
        self._prev_train_mode = None

    def __enter__(self):
        if self._enter_is_record is not None:
            self._prev_is_record = set_recording(self._enter_is_record)
        if self._enter_train_mode is not None:
            self._prev_train_mode = set_training(self._enter_train_mode)
        return self

    def __exit__(self, ptype, value, trace) -> None:
        if self._enter_is_record is not None and self._prev_is_record != self._enter_is_record:
            set_recording(self._prev_is_record)
        if self._enter_train_mode is not None and \
                self._prev_train_mode != self._enter_train_mode:
            set_training(self._prev_train_mode)


def record(train_mode: bool = True) -> _RecordingStateScope:
    """Scope that records operations for differentiation (and sets train mode)."""
    return _RecordingStateScope(True, train_mode)


def pause(train_mode: bool = False) -> _RecordingStateScope:
    """Scope that stops recording (predict mode unless ``train_mode``)."""
    return _RecordingStateScope(False, train_mode)


def train_mode() -> _RecordingStateScope:
    """Scope in training mode, recording state unchanged."""
    return _RecordingStateScope(None, True)


def predict_mode() -> _RecordingStateScope:
    """Scope in inference mode, recording state unchanged."""
    return _RecordingStateScope(None, False)


# ------------------------------------------------------------------------------------------
# tape
# ------------------------------------------------------------------------------------------
_var_count = itertools.count()
_node_count = itertools.count()


class _Leaf:
    """A graph input: a marked variable (``is_var``) or a constant. ``var`` is the engine
    variable of the array ``data`` belongs to."""

    __slots__ = ("cleared", "data", "dt", "fresh", "grad", "grad_req", "is_var", "name", "var")

    def __init__(self, data: np.ndarray, dt, name: str, grad=None, grad_req: str = "null",
                 is_var: bool = False, var=None) -> None:
        self.data = data
        self.var = var
        self.dt = dt
        self.name = name
        self.grad = grad
        self.grad_req = grad_req
        self.is_var = is_var
        self.fresh = False
        self.cleared = False

    is_leaf = True
    func = None


class _Node:
    """One recorded op call (``tmpl``) or Function call (``func``). ``outs`` are the values
    of its outputs (numpy storage, computed by pushed engine work), ``vars`` their engine
    variables (hidden outputs share one of the op's)."""

    __slots__ = ("cleared", "func", "inputs", "is_train", "name", "out_dt", "outs", "tmpl",
                 "vars")
    is_leaf = False

    def __init__(self, tmpl, func, is_train: bool, inputs: list, outs: list, out_dt: list,
                 vars_: list) -> None:
        self.vars = vars_
        self.tmpl = tmpl
        self.func = func
        self.is_train = is_train
        self.inputs = inputs
        self.outs = outs
        self.out_dt = out_dt
        self.name = f"node_{next(_node_count)}"
        self.cleared = False


def _live(x) -> tuple | None:
    """The tape entry of array ``x`` when it is in a (not yet freed) graph."""
    e = x._ag
    if e is None or e[0].cleared:
        return None
    return e


def _entry_of_input(x, data) -> tuple:
    e = x._ag
    if e is None or e[0].cleared:
        e = (_Leaf(data, x._dt, f"null{next(_var_count)}", var=x._var), 0)
        x._ag = e  # MXNet attaches a constant node to the input array too
    return e


def _check_out(tmpl, inputs, out) -> None:
    """``out=`` while recording: the output must not be in a graph, nor an input of a
    recorded call (MXNet's in-place checks in RecordOp)."""
    outs = [out] if isinstance(out, NDArray) else list(out)
    for o in outs:
        if _live(o) is not None:
            raise MXNetError(_INPLACE)
    if any(_live(x) is not None for x in inputs):
        for o in outs:
            if any(o is x or (o._buf.ctypes.data == x._buf.ctypes.data and
                              o._buf.nbytes == x._buf.nbytes) for x in inputs):
                raise MXNetError("Inplace operations (+=, -=, x[:]=, etc) are not supported "
                                 "when recording with autograd.")


def _record(tmpl, is_train: bool, inputs, datas, outputs, hidden, hidden_var=None) -> None:
    """Append a tape node for one op call (installed as ndarray_ops' record hook); the
    values are written by the call's pushed work (``hidden_var``: the hidden outputs')."""
    for x in inputs:
        e = x._ag
        if e is not None and not e[0].cleared:
            break
    else:
        return  # no input needs a gradient: nothing to record
    entries = [_entry_of_input(x, d) for x, d in zip(inputs, datas)]
    outs = [o._buf for o in outputs]
    out_dt = [o._dt for o in outputs]
    vars_ = [o._var for o in outputs]
    if hidden:
        if tmpl.opdef.name == "Dropout" and not tmpl.opdef.active(tmpl.parsed, is_train):
            # an inactive Dropout never writes its mask; its backward may still use it
            # (backward(train_mode=True) after a predict-mode forward): make it identity
            hidden = [(_ones_like(*hidden[0]), hidden[0][1])] + list(hidden[1:])
        outs += [h for h, _ in hidden]
        out_dt += [d for _, d in hidden]
        vars_ += [hidden_var] * len(hidden)
    node = _Node(tmpl, None, is_train, entries, outs, out_dt, vars_)
    for i, o in enumerate(outputs):
        o._ag = (node, i)


def _ones_like(v, dt):
    """Ones shaped like recorded value ``v`` (host array or device buffer) of DType ``dt``."""
    if type(v) is GpuBuffer:
        return _gpu.device_ones(v.device, v.shape, dt)
    return np.ones_like(v)


def _record_manual(op_name: str, attrs: dict, inputs: list, outputs: list) -> None:
    """Record a call computed outside ``invoke`` (views and copies made by NDArray methods)
    when recording."""
    if not _state.recording:
        return
    _record(_ops.template(op_name, attrs), False, inputs, [x._buf for x in inputs],
            outputs, [])


def _record_copy(src, dst) -> None:
    """Record ``dst`` as a copy of ``src`` (``copy``/``copyto``) when recording."""
    if not _state.recording:
        return
    if dst._dt is src._dt:
        _record(_ops.template("_copy", {}), False, [src], [src._buf], [dst], [])
    else:
        _record(_ops.template("Cast", {"dtype": dst._dt.name}), False, [src], [src._buf],
                [dst], [])


def _check_setitem(x) -> None:
    if _state.recording and _live(x) is not None:
        raise MXNetError(_INPLACE)


def _record_getitem(x, key):
    """Basic indexing of an array in a graph while recording, through the ``slice`` (+
    ``Reshape``) operators so that it is differentiable; None when not recording or for keys
    this does not handle (advanced indexing, empty results), which then run unrecorded."""
    if not _state.recording or _live(x) is None:
        return None
    from .ndarray import _basic_index, _convert_key, _is_basic, _op
    from .util import is_np_shape

    d = x._buf
    if d.ndim == 0:
        return None
    if type(key) is int:
        n = d.shape[0]
        if not -n <= key < n:
            return None
        final = d.shape[1:] if d.ndim > 1 or is_np_shape() else (1,)
        items = [key]
    else:
        key = _convert_key(key)
        if not _is_basic(key):
            return None
        try:
            final = _basic_index(d.probe() if type(d) is GpuBuffer else d, key).shape
        except (IndexError, ValueError):
            return None
        if len(final) == 0 and not is_np_shape():
            final = (1,)
        items = list(key) if isinstance(key, tuple) else [key]
    n_real = sum(1 for k in items if k is not None and k is not Ellipsis)
    if Ellipsis in items:
        i = items.index(Ellipsis)
        items[i: i + 1] = [slice(None)] * (d.ndim - n_real)
    begin, end, step = [], [], []
    axis = 0
    for k in items:
        if k is None:
            continue
        n = d.shape[axis]
        if isinstance(k, slice):
            b, e, s = k.indices(n)
            if len(range(b, e, s)) == 0:
                return None
            begin.append(b)
            end.append(None if s < 0 and e < 0 else e)
            step.append(s)
        else:
            k = int(k) % n
            begin.append(k)
            end.append(k + 1)
            step.append(1)
        axis += 1
    y = _op("slice")(x, begin=tuple(begin), end=tuple(end), step=tuple(step))
    if y.shape != tuple(final):
        y = y.reshape(final)
    return y


_ops.set_autograd_hooks(_state, _record, _check_out)
_ops.set_train_mode_hook(is_training)


# ------------------------------------------------------------------------------------------
# variables
# ------------------------------------------------------------------------------------------
def _norm_req(r) -> str:
    if isinstance(r, (int, np.integer)) and int(r) in _REQ_CODES:
        r = _REQ_CODES[int(r)]
    if r not in _REQS:
        raise MXNetError(f"grad_req must be one of {list(_REQS)}, got {r!r}")
    return "write" if r == "inplace" else r


def mark_variables(variables, gradients, grad_reqs="write") -> None:
    """Mark arrays as variables whose gradients backward writes into ``gradients``."""
    if isinstance(variables, NDArray):
        if not isinstance(gradients, NDArray):
            raise MXNetError("mark_variables: a single variable needs a single gradient array")
        variables, gradients = [variables], [gradients]
    variables, gradients = list(variables), list(gradients)
    if len(variables) != len(gradients):
        raise MXNetError(f"mark_variables: {len(variables)} variables but {len(gradients)} "
                         "gradient arrays")
    if isinstance(grad_reqs, (str, int, np.integer)):
        grad_reqs = [grad_reqs] * len(variables)
    grad_reqs = [_norm_req(r) for r in grad_reqs]
    if len(grad_reqs) != len(variables):
        raise MXNetError(f"mark_variables: {len(variables)} variables but {len(grad_reqs)} "
                         "grad_reqs")
    for v, g, r in zip(variables, gradients, grad_reqs):
        if not isinstance(v, NDArray) or not isinstance(g, NDArray):
            raise MXNetError("mark_variables: variables and gradients must be NDArrays")
        if v.stype != "default" or g.stype != "default":
            raise MXNetError("mark_variables: sparse variables/gradients are not supported yet")
        if g.shape != v.shape:
            raise MXNetError(f"mark_variables: gradient array has shape {g.shape}, the "
                             f"variable has shape {v.shape}")
        if g._ctx != v._ctx:
            raise MXNetError(f"mark_variables: the gradient array is on {g._ctx}, the "
                             f"variable on {v._ctx}: they must be on the same context")
        v._ag = (_Leaf(v._buf, v._dt, f"var{next(_var_count)}", g, r, True, v._var), 0)


def _attach_grad(x: NDArray, grad_req: str = "write", stype=None) -> None:
    if stype not in (None, "default"):
        raise MXNetError(f"attach_grad: stype={stype!r} gradients are not supported yet")
    from .ndarray import zeros
    mark_variables([x], [zeros(x.shape, x._ctx, dtype=x._dt.name)], grad_req)


def _grad_of(x: NDArray):
    e = x._ag
    if e is None or not e[0].is_leaf or not e[0].is_var or e[0].cleared:
        return None
    return e[0].grad


def _get_fresh(x: NDArray) -> bool:
    e = x._ag
    if e is None or not e[0].is_leaf or not e[0].is_var:
        return False
    return e[0].fresh


def _set_fresh(x: NDArray, state: bool) -> None:
    e = x._ag
    if e is not None and e[0].is_leaf and e[0].is_var:
        e[0].fresh = bool(state)


# ------------------------------------------------------------------------------------------
# graph walk
# ------------------------------------------------------------------------------------------
def _walk(head_entries: list) -> tuple:
    """(recorded nodes in topological order, leaves in discovery order) reachable from the
    heads, in a deterministic order that depends only on the graph's structure."""
    order: list = []
    leaves: list = []
    state: dict = {}
    for e in head_entries:
        root = e[0]
        if id(root) in state:
            continue
        if root.is_leaf:
            state[id(root)] = 2
            leaves.append(root)
            continue
        stack = [(root, 0)]
        state[id(root)] = 1
        while stack:
            node, i = stack[-1]
            if i < len(node.inputs):
                stack[-1] = (node, i + 1)
                d = node.inputs[i][0]
                if id(d) in state:
                    continue
                if d.cleared:
                    raise MXNetError("backward: part of this graph was freed by an earlier "
                                     "backward; pass retain_graph=True to that backward to "
                                     "differentiate through it again")
                if d.is_leaf:
                    state[id(d)] = 2
                    leaves.append(d)
                else:
                    state[id(d)] = 1
                    stack.append((d, 0))
            else:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
    return order, leaves


# ------------------------------------------------------------------------------------------
# compiled backward of a run of recorded op nodes
# ------------------------------------------------------------------------------------------
class _Plan:
    """One compiled backward graph and how to bind it. ``program``: the CPU ``Program``, or
    on a GPU the ``CudaGraph`` (``gpu_storage.run_backward`` instantiates it per run)."""

    __slots__ = ("binds", "has_rng", "mutated", "program", "results")

    def __init__(self, program, binds, results, has_rng: bool = False) -> None:
        self.mutated = None       # [(node position, input index)] written in place
        self.program = program
        self.binds = binds        # [(slot, kind, a, b)] kind: e ext | s saved | h head | o old
        self.results = results    # per target: None (no gradient) | (slot, direct?)
        self.has_rng = has_rng


_plans: dict = {}
_MAX_PLANS = 1024
_plans_lock = threading.Lock()
#: compiled backward graphs built so far (tests check a training loop compiles once)
stats = {"compiles": 0, "hits": 0}


def _segment_key(nodes, ext, heads, targets, train_mode) -> tuple:
    """Refs: (k, i) for output i of nodes[k], (-1 - j, 0) for ext[j]."""
    pos = {id(n): k for k, n in enumerate(nodes)}
    ext_pos = {}
    ext_list = []

    def ref(e):
        k = pos.get(id(e[0]))
        if k is not None:
            return (k, e[1])
        key = (id(e[0]), e[1])
        j = ext_pos.get(key)
        if j is None:
            j = ext_pos[key] = len(ext_list)
            ext_list.append(e)
        return (-1 - j, 0)

    node_refs = tuple((n.tmpl, tuple(ref(e) for e in n.inputs)) for n in nodes)
    head_refs = tuple(ref(e) for e in heads)
    target_refs = tuple((ref(e) if e is not None else None, mode) for e, mode in targets)
    ext_sig = tuple((tuple(_value(e).shape), _dtype_of(e).name) for e in ext_list)
    ext[:] = ext_list
    return (bool(train_mode), node_refs, head_refs, target_refs, ext_sig)


def _value(e) -> np.ndarray:
    n, i = e
    return n.data if n.is_leaf else n.outs[i]


def _dtype_of(e):
    n, i = e
    return n.dt if n.is_leaf else n.out_dt[i]


def _build_plan(key, nodes, ext, dev=None) -> _Plan:
    """Differentiate and compile the segment of ``key`` (see :func:`_segment_key`) for the CPU,
    or for GPU device ``dev``."""
    from ..compiler.gradient import gradient
    from ..ir.graph import Entry, Graph, Node, make_node, variable

    _where, train_mode, node_refs, head_refs, target_refs, ext_sig = key
    shapes: dict = {}
    types: dict = {}
    sources: dict = {}
    ext_vars = []
    for j, (shape, dtn) in enumerate(ext_sig):
        v = variable(f"e{j}")
        ext_vars.append(v)
        shapes[v.name], types[v.name] = shape, dtn
        sources[v.name] = ("e", j, 0)

    def entry(r, gn):
        return Entry(gn[r[0]], r[1]) if r[0] >= 0 else Entry(ext_vars[-1 - r[0]], 0)

    gn: list = []
    for k, (tmpl, refs) in enumerate(node_refs):
        n = Node(tmpl.opdef.name, f"n{k}", tmpl.attrs, [entry(r, gn) for r in refs])
        n._parsed = tmpl.parsed
        gn.append(n)
    head_entries = [entry(r, gn) for r in head_refs]
    hg_vars = []
    for h, (r, e) in enumerate(zip(head_refs, head_entries)):
        v = variable(f"hg{h}")
        hg_vars.append(v)
        val = _value(_head_src(nodes, ext, r))
        shapes[v.name] = tuple(val.shape)
        types[v.name] = _dtype_of(_head_src(nodes, ext, r)).name
        sources[v.name] = ("h", h, 0)
    x_js = sorted({-1 - r[0] for r, _ in target_refs if r is not None})
    grads = gradient(Graph(head_entries), [Entry(v, 0) for v in hg_vars],
                     [ext_vars[j] for j in x_js]) if x_js else []
    grad_of = dict(zip(x_js, grads))

    # backward nodes read forward outputs from variables bound to the recorded values
    fwd = {n.uid: k for k, n in enumerate(gn)}
    saved: dict = {}

    def sub(e):
        k = fwd.get(e.node.uid)
        if k is None:
            return e
        v = saved.get((k, e.index))
        if v is None:
            v = saved[(k, e.index)] = variable(f"s{k}_{e.index}")
            val = nodes[k].outs[e.index]
            shapes[v.name] = tuple(val.shape)
            types[v.name] = nodes[k].out_dt[e.index].name
            sources[v.name] = ("s", k, e.index)
        return Entry(v, 0)

    seen: set = set()
    stack = [g.node for g in grads if g is not None]
    while stack:
        n = stack.pop()
        if n.uid in seen or n.uid in fwd or n.is_variable:
            continue
        seen.add(n.uid)
        n.inputs = [sub(e) for e in n.inputs]
        stack.extend(e.node for e in n.inputs)

    outs: list = []
    result_idx: list = []
    for t, (r, mode) in enumerate(target_refs):
        ge = grad_of.get(-1 - r[0]) if r is not None else None
        if ge is None:
            result_idx.append(None)
            continue
        ge = sub(ge)
        if mode == "add":
            old = variable(f"old{t}")
            j = -1 - r[0]
            shapes[old.name], types[old.name] = ext_sig[j]
            sources[old.name] = ("o", t, 0)
            ge = Entry(make_node("elemwise_add", [ge, Entry(old, 0)], name=f"grad_add{t}"), 0)
        result_idx.append(len(outs))
        outs.append(ge)
    if not outs:
        return _Plan(None, [], [None] * len(target_refs))
    cg, program, has_rng = _compile_backward(Graph(outs), shapes, types, train_mode, node_refs,
                                             dev)
    stats["compiles"] += 1
    binds = [(slot, *sources[name]) for name, slot in cg.var_slots.items() if name in sources]
    var_slot_set = set(cg.var_slots.values())
    used: set = set()
    results = []
    for idx in result_idx:
        if idx is None:
            results.append(None)
            continue
        slot = cg.head_slots[idx]
        direct = slot not in var_slot_set and slot not in used
        used.add(slot)
        results.append((slot, direct))
    return _Plan(program, binds, results, has_rng)


def _compile_backward(graph, shapes: dict, types: dict, train_mode: bool, node_refs,
                      dev) -> tuple:
    """(compiled graph, program to run, has random kernels) of the backward ``graph``: a CPU
    program, or with ``dev`` the GPU build (``compile_graph_cuda``), whose failure names the
    recorded operators -- a tape on a GPU is never differentiated on the host."""
    if dev is None:
        from ..compiler.build import compile_graph
        cg = compile_graph(graph, shapes, types, is_train=train_mode)
        return cg, cg.program, True
    ops = sorted({tmpl.op_name for tmpl, _ in node_refs})
    cg = _gpu.compile_cuda(graph, shapes, types, dev, is_train=train_mode,
                           what=f"the recorded operators ({', '.join(ops)})",
                           section="autograd backward")
    has_rng = any(s["kind"] == "rng" for s in cg.launch_plan()["slots"])
    return cg, cg, has_rng


def _head_src(nodes, ext, r):
    return (nodes[r[0]], r[1]) if r[0] >= 0 else ext[-1 - r[0]]


def _var_of(e):
    """The engine variable of a tape entry's value."""
    n, i = e
    return n.var if n.is_leaf else n.vars[i]


def _mutated_refs(nodes: list) -> list:
    """(node position, input index) of the inputs the backward of ``nodes`` writes in place:
    auxiliary states (``_backward_BatchNorm`` updates the moving statistics)."""
    out = []
    for k, n in enumerate(nodes):
        if n.tmpl is not None:
            for i in n.tmpl.opdef.aux_indices(n.tmpl.parsed):
                if i < len(n.inputs):
                    out.append((k, i))
    return out


def _run_segment(nodes: list, heads: list, head_grads: list, targets: list,
                 train_mode: bool, wait: bool = False, dev=None) -> list:
    """Differentiate the recorded op ``nodes`` (topological order) from ``heads`` (entries,
    with gradient arrays ``head_grads``: ``(array, engine var or None)``) to the entries of
    ``targets``: ``(entry, mode, array, var)`` with mode 'write' | 'add' (into ``array``, a
    numpy array -- or a device buffer with ``dev`` -- with engine variable ``var``) or 'new'.
    The work is pushed to the engine (reading the recorded values, writing the targets);
    ``wait``: return once it is done. ``dev``: the GPU the tape lives on (None: the CPU).
    Returns the 'new' results (``(array, var)``, None where no gradient flows)."""
    plan, ext = _plan_for(nodes, heads, targets, train_mode, dev)
    new = [None] * len(targets)
    outs = []
    zero = []
    writes = []
    for t, ((e, mode, arr, var), res) in enumerate(zip(targets, plan.results)):
        if res is None:
            if mode == "write":
                zero.append(arr)
                writes.append(var)
            outs.append(None)
            continue
        if mode == "new":
            arr = _new_grad(e, dev)
            var = _ops._Var()
            new[t] = (arr, var)
        outs.append(arr)
        writes.append(var)
    if plan.program is None and not zero:
        return new
    reads = []
    inputs: dict = {}
    if plan.program is not None:
        for slot, kind, a, b in plan.binds:
            inputs[slot], var = _bind_source(kind, a, b, nodes, ext, head_grads, targets)
            if var is not None:
                reads.append(var)
        if plan.mutated is None:
            plan.mutated = _mutated_refs(nodes)
        for k, i in plan.mutated:
            writes.append(_var_of(nodes[k].inputs[i]))
    results = [(arr, *res) for arr, res in zip(outs, plan.results) if res is not None]
    if dev is not None:
        _gpu.run_backward(plan.program, dev, _gpu.context_of(dev), inputs, results, zero,
                          reads, writes, plan.has_rng)
    else:
        _launch_cpu(plan, inputs, results, zero, reads, writes)
    if wait:
        eng = _ops._get_engine()
        for v in writes:
            eng.wait_to_read(v)
    return new


def _plan_for(nodes: list, heads: list, targets: list, train_mode: bool, dev) -> tuple:
    """(the cached or new :class:`_Plan` of a segment, its external entries)."""
    ext: list = []
    where = None
    if dev is not None:
        where = _gpu.target_of(dev)
    key = (where,) + _segment_key(nodes, ext, heads, [(t[0], t[1]) for t in targets],
                                  train_mode)
    plan = _plans.get(key)
    if plan is None:
        with _plans_lock:
            plan = _plans.get(key)
            if plan is None:
                if len(_plans) >= _MAX_PLANS:
                    _plans.clear()  # (a bound on memory for programs with ever-new shapes)
                plan = _plans[key] = _build_plan(key, nodes, ext, dev)
    else:
        stats["hits"] += 1
    return plan, ext


def _new_grad(e, dev):
    """Uninitialised storage for a 'new' gradient of entry ``e`` (on ``dev`` when given)."""
    d = _dtype_of(e)
    shape = tuple(_value(e).shape)
    if dev is not None:
        return GpuBuffer.empty(dev, shape, d.np)
    return _ops.aligned_empty(shape, d.np)


def _bind_source(kind: str, a: int, b: int, nodes, ext, head_grads, targets) -> tuple:
    """(value, engine variable or None) a backward input slot reads: an external entry
    (``e``), a recorded output (``s``), a head gradient (``h``), an old gradient (``o``)."""
    if kind == "e":
        return _value(ext[a]), _var_of(ext[a])
    if kind == "s":
        return nodes[a].outs[b], nodes[a].vars[b]
    if kind == "h":
        return head_grads[a]
    return targets[a][2], targets[a][3]


def _launch_cpu(plan: _Plan, inputs: dict, results: list, zero: list, reads: list,
                writes: list) -> None:
    """Push one run of a CPU backward program: ``inputs`` slot -> array, ``results``
    ``(array, slot, direct)`` (direct: bound to the slot, else copied after the run)."""
    prog = None
    copies = []
    if plan.program is not None:
        bound = dict(inputs)
        for arr, slot, direct in results:
            if direct:
                bound[slot] = arr
            else:
                copies.append((arr, slot))
        prog = plan.program.clone()
        prog.allocate(bound)
    st = prog.storage if prog is not None else None

    def finish() -> None:
        for arr in zero:
            arr[...] = 0
        for arr, slot in copies:
            np.copyto(arr, st[slot][:arr.nbytes].view(arr.dtype).reshape(arr.shape))

    if prog is not None:
        _ops.launch(prog, "forward", reads, writes, "autograd.backward", True,
                    after=finish if (zero or copies) else None)
    else:
        _ops._get_engine().push(finish, reads, writes, name="autograd.backward")


# ------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------
_ones_cache: dict = {}


def _ones(shape: tuple, dt) -> np.ndarray:
    """A read-only array of ones (shared: backward programs never write head gradients)."""
    key = (shape, dt.name)
    a = _ones_cache.get(key)
    if a is None:
        a = _ops.aligned_empty(shape, dt.np)
        if dt.name == "bfloat16":
            a.fill(0x3F80)
        else:
            a.fill(1)
        a.flags.writeable = False
        if len(_ones_cache) > 256:
            _ones_cache.clear()
        _ones_cache[key] = a
    return a


def _as_list(x, what: str) -> list:
    if isinstance(x, NDArray):
        return [x]
    if isinstance(x, (list, tuple)):
        return list(x)
    raise MXNetError(f"{what} must be an NDArray or a list of NDArrays, got {type(x).__name__}")


def _head_grad_arrays(heads: list, head_grads) -> list:
    """``(array, engine var or None)`` of each head's gradient (shared ones when None)."""
    if head_grads is None:
        head_grads = [None] * len(heads)
    else:
        head_grads = _as_list(head_grads, "head_grads")
        if len(head_grads) != len(heads):
            raise MXNetError(f"heads and head_grads must be lists of the same length: "
                             f"{len(heads)} heads, {len(head_grads)} head gradients")
    out = []
    for i, (h, g) in enumerate(zip(heads, head_grads)):
        if g is None:
            out.append((_ones_like(h._buf, h._dt) if type(h._buf) is GpuBuffer
                        else _ones(h.shape, h._dt), None))
            continue
        if not isinstance(g, NDArray):
            raise MXNetError(f"head gradient {i} must be an NDArray, got {type(g).__name__}")
        if g._ctx != h._ctx:
            raise MXNetError(f"backward: head gradient {i} is on {g._ctx}, but head {i} is on "
                             f"{h._ctx}: they must be on the same context")
        if g.stype != "default":
            g = g.tostype("default")
        if g.shape != h.shape:
            raise MXNetError(f"backward: head gradient {i} has shape {g.shape}, but head {i} "
                             f"has shape {h.shape}")
        if g._dt is not h._dt:
            g = g.astype(h._dt.name)
        out.append((g._buf, g._var))
    return out


def _differentiate(heads, head_grads, variables, retain_graph: bool, train_mode: bool):
    heads = _as_list(heads, "heads")
    head_entries = []
    for h in heads:
        if not isinstance(h, NDArray):
            raise MXNetError(f"heads must be NDArrays, got {type(h).__name__}")
        e = _live(h)
        if e is None:
            raise MXNetError(_NOT_IN_GRAPH)
        head_entries.append(e)
    hgs = _head_grad_arrays(heads, head_grads)
    order, leaves = _walk(head_entries)
    dev = _tape_device(order, leaves)

    if variables is not None:
        targets_leaves = []
        for i, v in enumerate(variables):
            e = _live(v) if isinstance(v, NDArray) else None
            if e is None or not e[0].is_leaf or not e[0].is_var:
                raise MXNetError(f"Cannot differentiate with respect to the {i + 1}-th variable "
                                 "because it does not require gradient.")
            targets_leaves.append(e[0])
        modes = ["new"] * len(targets_leaves)
        arrays = [None] * len(targets_leaves)
    else:
        targets_leaves = [lf for lf in leaves if lf.is_var and lf.grad_req != "null"]
        if not targets_leaves:
            raise MXNetError("There are no inputs in computation graph that require "
                             "gradients.")
        modes = [lf.grad_req for lf in targets_leaves]
        arrays = [(lf.grad._buf, lf.grad._var) for lf in targets_leaves]

    with _RecordingStateScope(False, train_mode):
        if not any(n.func is not None for n in order):
            targets = [((lf, 0), m, a[0], a[1]) if a is not None else ((lf, 0), m, None, None)
                       for lf, m, a in zip(targets_leaves, modes, arrays)]
            new = _run_segment(order, head_entries, hgs, targets, train_mode, dev=dev)
        elif dev is not None:
            name = type(next(n.func for n in order if n.func is not None)).__name__
            raise MXNetError(f"autograd: the graph recorded on {_ctx_name(dev)} contains the "
                             f"autograd.Function '{name}', which is not supported on a GPU "
                             "yet (its gradients are combined on the host); record on "
                             "mx.cpu() or express it with operators")
        else:
            new = _differentiate_segments(order, head_entries, hgs, targets_leaves, modes,
                                          arrays, train_mode)

    if variables is None:
        for lf in targets_leaves:
            lf.fresh = True
    if not retain_graph:
        for n in order:
            n.cleared = True
            n.outs = None
            n.inputs = []
        for lf in leaves:
            if not (lf.is_var and lf.grad_req != "null"):
                lf.cleared = True
    if variables is None:
        return None
    result = []
    for lf, g in zip(targets_leaves, new):
        if g is None:
            result.append(_zeros_like_leaf(lf, dev))
        else:
            result.append(_wrap(g[0], lf.dt, None, True, g[1]))
    return result


def _zeros_like_leaf(lf, dev) -> NDArray:
    """The gradient of a variable no path from the heads reaches (``autograd.grad``)."""
    if dev is not None:
        from .ndarray import zeros
        return zeros(lf.data.shape, _gpu.context_of(dev), dtype=lf.dt.name)
    a = _ops.aligned_empty(lf.data.shape, lf.dt.np)
    a[...] = 0
    return _wrap(a, lf.dt, None)


def _device_of(v):
    """The GPU device a recorded value lives on, None for host memory."""
    return v.device if type(v) is GpuBuffer else None


def _ctx_name(dev) -> str:
    if dev is None:
        return "cpu"
    return str(_gpu.context_of(dev))


def _tape_device(order: list, leaves: list):
    """The GPU device every value of the tape lives on, None when they are all on the host.
    A tape spanning contexts (a ``copyto``/``as_in_context`` recorded between a cpu and a
    gpu array) is refused, naming the operator that crosses: its backward would have to move
    gradients between devices, which is not supported."""
    devs = {id(_device_of(lf.data)): _device_of(lf.data) for lf in leaves}
    for n in order:
        d = _device_of(n.outs[0]) if n.outs else None
        devs.setdefault(id(d), d)
        for e in n.inputs:
            src = _device_of(_value(e))
            if src is not d:
                what = n.tmpl.op_name if n.tmpl is not None else type(n.func).__name__
                raise MXNetError(
                    f"autograd: the recorded graph spans contexts: '{what}' reads an array "
                    f"on {_ctx_name(src)} and makes one on {_ctx_name(d)} (e.g. copyto/"
                    "as_in_context while recording). Differentiating across contexts is not "
                    "supported: move the data to one context before autograd.record()")
    if len(devs) > 1:   # heads of separate graphs on different contexts
        raise MXNetError("autograd: the recorded graph spans contexts ("
                         f"{', '.join(sorted(_ctx_name(d) for d in devs.values()))}); "
                         "differentiating across contexts is not supported")
    return next(iter(devs.values()))


def _differentiate_segments(order, head_entries, hgs, targets_leaves, modes, arrays,
                            train_mode) -> list:
    """Backward through a tape holding Functions: op runs between them are compiled
    segments; gradients are accumulated (numpy) between segments. Runs synchronously: each
    segment's pushed work is waited for, the Python parts read values after waiting."""
    eng = _ops._get_engine()
    for _, var in hgs:
        if var is not None:
            eng.wait_to_read(var)
    hgs = [a for a, _ in hgs]
    x_ids = {id(lf) for lf in targets_leaves}
    needs: dict = {}
    for n in order:
        needs[id(n)] = any((id(e[0]) in x_ids) if e[0].is_leaf else needs.get(id(e[0]), False)
                           for e in n.inputs)

    def need(e) -> bool:
        return id(e[0]) in x_ids if e[0].is_leaf else needs.get(id(e[0]), False)

    acc: dict = {}

    def add(e, g: np.ndarray) -> None:
        k = (id(e[0]), e[1])
        cur = acc.get(k)
        if cur is None:
            acc[k] = np.array(g, copy=True)
        else:
            cur += g

    for e, g in zip(head_entries, hgs):
        add(e, g)
    i = len(order) - 1
    while i >= 0:
        n = order[i]
        if n.func is not None:
            _function_backward(n, acc, need, add, train_mode)
            i -= 1
            continue
        j = i
        while j > 0 and order[j - 1].func is None:
            j -= 1
        seg = order[j:i + 1]
        heads, grads = [], []
        for m in seg:
            for k in range(len(m.outs)):
                g = acc.pop((id(m), k), None)
                if g is not None:
                    heads.append((m, k))
                    grads.append(g)
        if heads:
            seg_ids = {id(m) for m in seg}
            ext = []
            seen = set()
            for m in seg:
                for e in m.inputs:
                    k = (id(e[0]), e[1])
                    if id(e[0]) not in seg_ids and k not in seen and need(e):
                        seen.add(k)
                        ext.append(e)
            res = _run_segment(seg, heads, [(g, None) for g in grads],
                               [(e, "new", None, None) for e in ext], train_mode, wait=True)
            for e, g in zip(ext, res):
                if g is not None:
                    add(e, g[0])
        i = j - 1
    new = []
    for lf, mode, arr in zip(targets_leaves, modes, arrays):
        g = acc.get((id(lf), 0))
        if mode == "new":
            new.append((g, _ops._Var()) if g is not None else None)
            continue
        arr, var = arr
        eng.wait_to_write(var)
        if mode == "write":
            if g is None:
                arr[...] = 0
            else:
                np.copyto(arr, g, casting="unsafe")
            new.append(None)
        else:
            if g is not None:
                arr += g
            new.append(None)
    return new


def _function_backward(n, acc, need, add, train_mode) -> None:
    ograds = [acc.pop((id(n), k), None) for k in range(len(n.outs))]
    if all(g is None for g in ograds):
        return
    if not any(need(e) for e in n.inputs):
        return
    og = []
    for k, g in enumerate(ograds):
        d = n.out_dt[k]
        if g is None:
            g = np.zeros(n.outs[k].shape, d.np)
        og.append(_wrap(np.ascontiguousarray(g), d, None, writable=False))
    with _RecordingStateScope(False, train_mode):
        rets = n.func.backward(*og)
    if isinstance(rets, NDArray):
        rets = (rets,)
    rets = list(rets) if isinstance(rets, (list, tuple)) else [rets]
    name = type(n.func).__name__
    if len(rets) != len(n.inputs):
        raise MXNetError(f"{name}.backward must return exactly the same number of NDArrays as "
                         f"the number of NDArrays arguments to forward. Expecting "
                         f"{len(n.inputs)} got {len(rets)}")
    for e, r in zip(n.inputs, rets):
        if not isinstance(r, NDArray):
            raise MXNetError(f"autograd.Function.backward must return NDArrays, not "
                             f"{type(r).__name__}")
        if not need(e):
            continue
        want = tuple(_value(e).shape)
        if r.shape != want:
            raise MXNetError(f"{name}.backward returned a gradient of shape {r.shape} for an "
                             f"input of shape {want}")
        d = _dtype_of(e)
        add(e, r._data if r._dt is d else r.astype(d.name)._data)


def backward(heads, head_grads=None, retain_graph: bool = False,
             train_mode: bool = True) -> None:
    """Compute the gradients of ``heads`` w.r.t. the marked variables into their ``.grad``
    (write or add per their grad_req)."""
    _differentiate(heads, head_grads, None, bool(retain_graph), bool(train_mode))


def grad(heads, variables, head_grads=None, retain_graph=None, create_graph: bool = False,
         train_mode: bool = True):
    """Gradients of ``heads`` w.r.t. ``variables``, returned as new arrays (``.grad`` is not
    touched)."""
    if create_graph:
        raise MXNetError("autograd.grad: create_graph=True (recording the gradient graph for "
                         "higher-order gradients) is not supported yet")
    single = isinstance(variables, NDArray)
    vs = [variables] if single else list(variables)
    if not vs:
        raise MXNetError("variables cannot be an empty list.")
    retain = bool(retain_graph) if retain_graph is not None else bool(create_graph)
    res = _differentiate(heads, head_grads, vs, retain, bool(train_mode))
    return res[0] if single else res


# ------------------------------------------------------------------------------------------
# get_symbol
# ------------------------------------------------------------------------------------------
def get_symbol(x):
    """The recorded computation that produced ``x``, as a Symbol."""
    from ..ir.graph import Entry, Node, variable
    from .symbol import Symbol

    e = _live(x) if isinstance(x, NDArray) else None
    if e is None:
        raise MXNetError(_NOT_IN_GRAPH)
    order, leaves = _walk([e])
    gmap: dict = {}
    for lf in leaves:
        gmap[id(lf)] = variable(lf.name)
    for n in order:
        if n.func is not None:
            raise MXNetError("get_symbol: the graph contains an autograd.Function, which has "
                             "no symbolic form")
        gnode = Node(n.tmpl.opdef.name, n.name, n.tmpl.attrs,
                     [Entry(gmap[id(i[0])], i[1]) for i in n.inputs])
        gmap[id(n)] = gnode
    return Symbol([Entry(gmap[id(e[0])], e[1])])


# ------------------------------------------------------------------------------------------
# Function
# ------------------------------------------------------------------------------------------
class Function:
    """Custom differentiation: subclass, define ``forward(*inputs)`` and
    ``backward(*output_grads)`` over NDArrays (one gradient per forward input)."""

    def __init__(self) -> None:
        self._used = False
        self.saved_tensors = ()

    def save_for_backward(self, *args) -> None:
        self.saved_tensors = args

    def forward(self, *inputs):
        raise NotImplementedError

    def backward(self, *output_grads):
        raise NotImplementedError

    def __call__(self, *inputs):
        if self._used:
            raise MXNetError("Each Function instance can only be called once. Please create "
                             "another instance.")
        self._used = True
        prev = set_recording(False)
        try:
            outputs = self.forward(*inputs)
        finally:
            set_recording(prev)
        if not prev:
            return outputs
        outs = (outputs,) if isinstance(outputs, NDArray) else tuple(outputs)
        for o in outs:
            if not isinstance(o, NDArray):
                raise MXNetError(f"{type(self).__name__}.forward must return NDArrays, not "
                                 f"{type(o).__name__}")
        for x in inputs:
            if not isinstance(x, NDArray):
                raise MXNetError(f"{type(self).__name__} inputs must be NDArrays, not "
                                 f"{type(x).__name__}")
        if not any(_live(x) is not None for x in inputs):
            return outputs
        for o in outs:
            if _live(o) is not None:
                raise MXNetError(_INPLACE)
        entries = [_entry_of_input(x, x._buf) for x in inputs]
        node = _Node(None, self, _state.training, entries, [o._buf for o in outs],
                     [o._dt for o in outs], [o._var for o in outs])
        for i, o in enumerate(outs):
            o._ag = (node, i)
        return outputs
