"""``Executor``: a Symbol bound to arrays (MXNet's ``simple_bind``/``bind`` result).

The executor owns (or, for ``bind``, borrows) one NDArray per argument, gradient, auxiliary
state and output. It compiles lazily and keeps two compiled graphs: one for inference
(``forward(is_train=False)``, no gradients) and one for training (``is_train=True`` with the
backward graph for the requested ``grad_req``). Both are bound to the SAME NDArray storage,
so parameters, statistics, gradients and outputs are shared between them, and the training
program's forward temporaries stay alive for ``backward``.

``forward`` and ``backward`` push their program section to the dependency engine
(:mod:`mxc.runtime.engine`) and return at once: they read the engine variables of the bound
arguments and write those of the outputs, gradients, auxiliary states (and of the arguments the
graph mutates: a fixed BatchNorm gamma in training) plus one variable per program instance
standing for its internal storage (forward temporaries that backward reads). The ``outputs``
are valid after a wait (``asnumpy``, ``wait_to_read``, ``mx.nd.waitall``), and plain Python
updates such as ``w[:] -= lr * g`` are ordered after the backward that writes ``g``.
"""
from __future__ import annotations

import math

import numpy as np

from ..base import MXNetError, ShapeError
from ..ir.graph import Graph
from ..runtime import engine as _engine
from . import ndarray_ops as _ops
from .context import Context, as_context, check_runnable
from .ndarray import NDArray, _aligned, _wrap, to_dtype
from .ndarray import zeros as nd_zeros

__all__ = ["Executor", "bind", "simple_bind"]

_REQS = ("write", "add", "null", "inplace")


def _norm_req(r) -> str:
    if r not in _REQS:
        raise MXNetError(f"grad_req must be one of {list(_REQS)}, got {r!r}")
    return "write" if r == "inplace" else r


def _grad_req_dict(grad_req, arg_names: list) -> dict:
    if isinstance(grad_req, str):
        r = _norm_req(grad_req)
        return {n: r for n in arg_names}
    if isinstance(grad_req, (list, tuple)):
        if len(grad_req) != len(arg_names):
            raise MXNetError(f"grad_req list has {len(grad_req)} entries for "
                             f"{len(arg_names)} arguments {arg_names}")
        return {n: _norm_req(r) for n, r in zip(arg_names, grad_req)}
    if isinstance(grad_req, dict):
        for k in grad_req:
            if k not in arg_names:
                raise MXNetError(f"grad_req names '{k}', which is not an argument; arguments "
                                 f"are {arg_names}")
        return {n: _norm_req(grad_req.get(n, "null")) for n in arg_names}
    raise MXNetError(f"grad_req must be a str, list or dict, got {type(grad_req).__name__}")


class _Bound:
    """One compiled graph and a program instance bound to the executor's arrays."""

    def __init__(self, exe: Executor, is_train: bool, grad_req: dict | None) -> None:
        from ..compiler.build import compile_graph

        g = exe._graph
        cg = compile_graph(g, exe._shapes, exe._types, is_train=is_train, grad_req=grad_req)
        self.cg = cg
        prog = cg.program.clone()
        self.has_rng = any(s.kind == "rng" for s in prog.slots)
        # the engine variable of this instance's own storage (temporaries, head gradients)
        self.var = _engine.Var("executor")
        mutated = _mutated_args(g, is_train)
        reads, writes, grad_writes = [], [self.var], [self.var]
        bound: dict = {}
        for name, arr in exe.arg_dict.items():
            slot = cg.var_slots.get(name)
            if slot is not None:
                bound[slot] = arr._buf
                (writes if name in mutated else reads).append(arr._var)
        for name, arr in exe.aux_dict.items():
            slot = cg.var_slots.get(name)
            if slot is not None:
                bound[slot] = arr._buf
                writes.append(arr._var)
                grad_writes.append(arr._var)
        for name, slot in cg.grad_slots.items():
            garr = exe.grad_dict.get(name)
            if garr is None:
                raise MXNetError(f"internal: no gradient array for '{name}'")
            bound[slot] = garr._buf
            grad_writes.append(garr._var)
        writes += [o._var for o in exe.outputs]
        self.reads = reads                 # forward: arguments read
        self.writes = writes               # forward: outputs, aux, mutated args, own storage
        # backward reads the arguments and the outputs (loss heads read their forward
        # output), writes the gradients, the aux states and its own storage
        self.bwd_reads = reads + [o._var for o in exe.outputs]
        self.bwd_writes = grad_writes
        # outputs: bind a head slot to its output array unless the slot is also an input,
        # aux, grad or another head's (then copy after the run)
        self.copy_out = []
        used = set(bound)
        seen = set()
        for i, slot in enumerate(cg.head_slots):
            out = exe.outputs[i]
            if slot in used or slot in seen:
                self.copy_out.append((i, slot))
            else:
                bound[slot] = out._buf
            seen.add(slot)
        prog.allocate(bound)
        self.prog = prog
        self.head_grad_views = [self._view(s, exe.outputs[i].shape, exe.outputs[i]._dt)
                                for i, s in enumerate(cg.head_grad_slots)]
        self.copy_out = [(i, self._view(s, exe.outputs[i].shape, exe.outputs[i]._dt))
                         for i, s in self.copy_out]

    def _view(self, slot: int, shape, dt) -> np.ndarray:
        st = self.prog.storage[slot]
        n = math.prod(shape) * dt.itemsize
        return st[:n].view(dt.np).reshape(shape)

    def run_forward(self, exe: Executor) -> None:
        """Push the forward section (and the copies of outputs bound elsewhere)."""
        after = None
        if self.copy_out:
            pairs = [(exe.outputs[i]._buf, v) for i, v in self.copy_out]

            def after() -> None:
                for dst, src in pairs:
                    np.copyto(dst, src)
        _ops.launch(self.prog, "forward", self.reads, self.writes, "executor.forward",
                    self.has_rng, after=after)

    def run_backward(self, fills: list, srcs: list) -> None:
        """Push the backward section after filling the head-gradient slots: ``fills``
        (views set to 1) and ``srcs`` ``(view, NDArray)`` copied in."""
        reads = self.bwd_reads + [g._var for _, g in srcs]
        pairs = [(view, g._buf, None if g._buf.dtype == view.dtype else g._dt)
                 for view, g in srcs]
        run = self.prog.run

        def work() -> None:
            for view in fills:
                view[...] = 1
            for view, buf, dt in pairs:
                np.copyto(view, buf if dt is None else _float_of(buf, dt), casting="unsafe")
            run("backward")
        _engine.get().push(work, reads, self.bwd_writes, name="executor.backward")


def _float_of(buf: np.ndarray, dt) -> np.ndarray:
    from .ndarray import _bf16_float
    return _bf16_float(buf) if dt.name == "bfloat16" else buf


class _GpuBound:
    """``_Bound`` on a gpu context: the graph built by ``compile_graph_cuda`` (PTX + launch
    plan, same sections and slots as the CPU build), one ``GPUProgram`` instance whose
    argument, auxiliary, gradient and output slots are the bound arrays' device pointers;
    its other storage (the memory plan's arena, head gradients) is its own, kept while the
    executor lives. Forward/backward push their launches on the engine like the CPU."""

    def __init__(self, exe: Executor, is_train: bool, grad_req: dict | None) -> None:
        from . import gpu_storage as gs

        dev = gs.get_device(exe._ctx)
        what = f"the executor's graph (outputs {exe._output_names})"
        cuda = gs.compile_cuda(exe._graph, exe._shapes, exe._types, dev, is_train=is_train,
                               grad_req=grad_req, what=what)
        self.cuda = cuda
        self.cg = cg = cuda.compiled
        self.ctx = exe._ctx
        self.device = dev
        self.has_rng = any(s["kind"] == "rng" for s in cuda.launch_plan()["slots"])
        self.var = _engine.Var("executor")
        mutated = _mutated_args(exe._graph, is_train)
        reads, writes, grad_writes = [], [self.var], [self.var]
        bound: dict = {}
        keep = []
        for name, arr in exe.arg_dict.items():
            slot = cg.var_slots.get(name)
            if slot is not None:
                bound[slot] = arr._buf.ptr
                keep.append(arr._buf)
                (writes if name in mutated else reads).append(arr._var)
        for name, arr in exe.aux_dict.items():
            slot = cg.var_slots.get(name)
            if slot is not None:
                bound[slot] = arr._buf.ptr
                keep.append(arr._buf)
                writes.append(arr._var)
                grad_writes.append(arr._var)
        for name, slot in cg.grad_slots.items():
            garr = exe.grad_dict.get(name)
            if garr is None:
                raise MXNetError(f"internal: no gradient array for '{name}'")
            bound[slot] = garr._buf.ptr
            keep.append(garr._buf)
            grad_writes.append(garr._var)
        writes += [o._var for o in exe.outputs]
        self.reads = reads
        self.writes = writes
        self.bwd_reads = reads + [o._var for o in exe.outputs]
        self.bwd_writes = grad_writes
        copy_out = []
        used = set(bound)
        seen = set()
        for i, slot in enumerate(cg.head_slots):
            out = exe.outputs[i]
            keep.append(out._buf)
            if slot in used or slot in seen:
                copy_out.append((i, slot))
            else:
                bound[slot] = out._buf.ptr
            seen.add(slot)
        self.keep = keep
        self.prog = prog = gs.new_program(cuda, dev, bound, keep=True)
        if prog is None:   # no kernel at all (a graph of views): outputs alias inputs
            self.ptrs = dict(bound)
        else:
            self.ptrs = dict(enumerate(prog.ptrs))
        self.ptrs = {**{i: 0 for i in range(len(cg.program.slots))}, **self.ptrs}
        self.head_grad_views = [self._view(s, exe.outputs[i].shape, exe.outputs[i]._dt)
                                for i, s in enumerate(cg.head_grad_slots)]
        self.copy_out = [(i, self._view(s, exe.outputs[i].shape, exe.outputs[i]._dt))
                         for i, s in copy_out]

    def _view(self, slot: int, shape, dt):
        from .gpu_storage import GpuBuffer
        return GpuBuffer(self.device, self.ptrs[slot], shape, dt.np, self.prog)

    def run_forward(self, exe: Executor) -> None:
        from . import gpu_storage as gs
        after = None
        if self.copy_out:
            pairs = [(exe.outputs[i]._buf, v) for i, v in self.copy_out]

            def after() -> None:
                for dst, src in pairs:
                    dst.copy_from(src)
        gs.launch(self.prog, "forward", self.reads, self.writes, "executor.forward",
                  self.ctx, self.has_rng, after=after, keep=self.keep)

    def run_backward(self, fills: list, srcs: list) -> None:
        from . import gpu_storage as gs
        from .gpu_storage import GpuBuffer, host_converted
        reads = self.bwd_reads + [g._var for _, g in srcs]
        pairs = [(view, g._buf, g._dt) for view, g in srcs]

        def before() -> None:
            for view in fills:
                view.fill(1)
            for view, buf, dt in pairs:
                if type(buf) is GpuBuffer and buf.dtype == view.dtype and \
                        buf.device is view.device:
                    view.copy_from(buf)
                else:
                    h = buf.to_host() if type(buf) is GpuBuffer else buf
                    view.upload(host_converted(h, dt, _dt_of(view.dtype)))
        gs.launch(self.prog, "backward", reads, self.bwd_writes, "executor.backward",
                  self.ctx, False, before=before, keep=self.keep)


def _dt_of(npdt):
    from ..ir.dtypes import BY_NAME
    return BY_NAME[np.dtype(npdt).name]


def _mutated_args(graph: Graph, is_train: bool) -> set:
    """Names of the variables the graph writes in place besides its auxiliary states (a
    fixed BatchNorm gamma in training)."""
    out = set()
    for n in graph.nodes:
        if n.is_variable:
            continue
        for i in _ops.mutated_inputs(n.opdef, n.parsed, is_train):
            if i < len(n.inputs) and n.inputs[i].node.is_variable:
                out.add(n.inputs[i].node.name)
    return out


class _Interpreted:
    """The graph run node by node: each operator as its compiled imperative kernel
    (``ndarray_ops.invoke``), each ``Custom`` node through its Python operator
    (:class:`mxc.operator.NodeRunner`, created once per node). Used when the graph holds
    Custom nodes (they cannot be compiled into a program) and while a monitor callback is
    installed (it sees every node's outputs, which a fused program does not keep).

    Training records the run with autograd (the executor's arguments marked as variables
    whose gradients are the executor's gradient arrays, with its grad_req); ``backward`` is
    then autograd's, which compiles the op runs between Custom nodes and calls the Custom
    operators' backward in between."""

    def __init__(self, exe: Executor) -> None:
        self.nodes = exe._graph.nodes
        self.runners: dict = {}
        self.heads = None   # the recorded outputs of the last training forward

    def _value_of_variable(self, exe: Executor, node) -> NDArray:
        arr = exe.arg_dict.get(node.name)
        if arr is None:
            arr = exe.aux_dict.get(node.name)
        if arr is None:
            raise MXNetError(f"internal: no array bound for variable '{node.name}'")
        return arr

    def _run_node(self, exe: Executor, node, ins: list) -> list:
        if node.op == "Custom":
            runner = self.runners.get(node.uid)
            if runner is None:
                from ..operator import NodeRunner
                runner = self.runners[node.uid] = NodeRunner(node)
            return runner(ins, exe._ctx)
        res = _ops.invoke(_ops.template(node.op, node.attrs), ins)
        return [res] if isinstance(res, NDArray) else list(res)

    def forward(self, exe: Executor, is_train: bool) -> None:
        from . import autograd as ag
        from .symbol import _output_names

        need = [n for n in exe._arg_names if exe._grad_req.get(n, "null") != "null"]
        record = bool(is_train and need)
        mon = exe._monitor
        values: dict = {}
        with ag._RecordingStateScope(record, bool(is_train)):
            if record:
                ag.mark_variables([exe.arg_dict[n] for n in need],
                                  [exe.grad_dict[n] for n in need],
                                  [exe._grad_req[n] for n in need])
            for node in self.nodes:
                if node.is_variable:
                    values[(node.uid, 0)] = self._value_of_variable(exe, node)
                    continue
                ins = [values[(e.node.uid, e.index)] for e in node.inputs]
                if mon is not None and exe._monitor_all:
                    names = node.opdef.input_names(node.parsed)
                    for i, x in enumerate(ins):
                        mon(f"{node.name}_{names[i] if i < len(names) else i}", x)
                outs = self._run_node(exe, node, ins)
                for i, o in enumerate(outs):
                    values[(node.uid, i)] = o
                if mon is not None:
                    for nm, o in zip(_output_names(node), outs):
                        mon(nm, o)
        heads = []
        for e in exe._symbol._outputs:
            v = values.get((e.node.uid, e.index))
            if v is None:
                raise MXNetError(f"executor: output {e.index} of '{e.node.name}' is a hidden "
                                 "output, which node-by-node execution does not expose")
            heads.append(v)
        from .ndarray import _copy_into
        for out, h in zip(exe.outputs, heads):
            _copy_into(out, h)
        if record:
            # the graph keeps its leaves; the executor's arrays stay plain arrays outside
            for n in need:
                exe.arg_dict[n]._ag = None
        self.heads = heads if record else None

    def backward(self, exe: Executor, out_grads: list) -> None:
        from . import autograd as ag
        if self.heads is None:
            raise MXNetError("backward: call forward(is_train=True) first")
        grads = [out_grads[i] if i < len(out_grads) else None for i in range(len(self.heads))]
        ag.backward(self.heads, grads, retain_graph=True, train_mode=True)


class Executor:
    """A bound symbol: run ``forward``/``backward`` on its arrays."""

    def __init__(self, symbol, ctx: Context, arg_arrays: list, grad_arrays: list,
                 grad_req: dict, aux_arrays: list, shapes: dict, types: dict) -> None:
        self._symbol = symbol
        self._ctx = ctx
        self._graph = Graph(symbol._outputs)
        self._arg_names = symbol.list_arguments()
        self._aux_names = symbol.list_auxiliary_states()
        self.arg_arrays = list(arg_arrays)
        self.grad_arrays = list(grad_arrays)
        self.aux_arrays = list(aux_arrays)
        self._grad_req = dict(grad_req)
        self.arg_dict = dict(zip(self._arg_names, self.arg_arrays))
        self.grad_dict = {n: g for n, g in zip(self._arg_names, self.grad_arrays)
                          if g is not None}
        self.aux_dict = dict(zip(self._aux_names, self.aux_arrays))
        self._shapes = shapes
        self._types = types
        from ..compiler import infer
        fshapes = infer.infer_shapes(self._graph, shapes)
        ftypes = infer.infer_types(self._graph, types)
        self.outputs = []
        for e in symbol._outputs:
            k = (e.node.uid, e.index)
            dt = to_dtype(ftypes[k])
            if ctx.device_typeid == 2:
                self.outputs.append(nd_zeros(fshapes[k], ctx, dt))
                continue
            arr = _aligned(fshapes[k], dt)
            arr[...] = 0
            self.outputs.append(_wrap(arr, dt, ctx))
        self._output_names = symbol.list_outputs()
        self._bound: dict = {}
        self._train_ran = False
        self._backward_ran = False
        self._monitor = None
        self._monitor_all = False
        self._has_custom = any(n.op == "Custom" for n in self._graph.nodes)
        self._interp = None          # the node-by-node runner (_Interpreted), made on use
        self._train_interp = False   # whether the last training forward ran node by node

    # -- properties -----------------------------------------------------------------------------
    @property
    def output_dict(self) -> dict:
        return dict(zip(self._output_names, self.outputs))

    @property
    def symbol(self):
        return self._symbol

    def _program(self, is_train: bool) -> _Bound:
        key = bool(is_train)
        b = self._bound.get(key)
        if b is None:
            req = {n: r for n, r in self._grad_req.items() if r != "null"} if is_train \
                else None
            cls = _GpuBound if self._ctx.device_typeid == 2 else _Bound
            b = self._bound[key] = cls(self, is_train, req or None)
        return b

    # -- running --------------------------------------------------------------------------------
    def forward(self, is_train: bool = False, **kwargs) -> list:
        """Run the forward pass; keyword arguments are copied into the argument arrays."""
        for name, value in kwargs.items():
            dst = self.arg_dict.get(name)
            if dst is None:
                raise MXNetError(f"forward: unknown argument '{name}'; arguments are "
                                 f"{self._arg_names}")
            shape = value.shape if isinstance(value, NDArray) else np.shape(value)
            if tuple(shape) != dst.shape:
                raise MXNetError(f"Shape not match! Argument {name}, need: {dst.shape}, "
                                 f"received: {tuple(shape)}")
            dst[:] = value
        interp = self._has_custom or self._monitor is not None
        if interp:
            if self._interp is None:
                self._interp = _Interpreted(self)
            self._interp.forward(self, is_train)
        else:
            self._program(is_train).run_forward(self)
        if is_train:
            self._train_ran = True
            self._backward_ran = False
            self._train_interp = interp
        return self.outputs

    def backward(self, out_grads=None, is_train: bool = True) -> None:
        """Run the backward pass of the last ``forward(is_train=True)``: gradients are
        written (or added, grad_req 'add') into ``grad_arrays``. ``out_grads`` are the head
        gradients (default ones; loss heads ignore them)."""
        if not any(r != "null" for r in self._grad_req.values()):
            return
        if not self._train_ran:
            raise MXNetError("backward: call forward(is_train=True) first")
        if self._train_interp:
            self._interp.backward(self, self._head_grads(out_grads))
            self._backward_ran = True
            return
        b = self._program(True)
        mem = b.cg.memory
        if self._backward_ran and mem is not None and not mem.backward_reruns:
            raise MXNetError(
                "backward: this forward pass was already differentiated, and the memory plan "
                "let that backward reuse the storage of the forward values it read (as "
                "MXNet's planner does); call forward(is_train=True) again first, or set "
                "MXC_PLAN_MEMORY=0 to keep every value")
        if out_grads is None:
            out_grads = []
        elif isinstance(out_grads, NDArray):
            out_grads = [out_grads]
        elif isinstance(out_grads, dict):
            out_grads = [out_grads.get(n) for n in self._output_names]
        if out_grads and len(out_grads) != len(self.outputs):
            raise MXNetError(f"backward: {len(out_grads)} head gradients for "
                             f"{len(self.outputs)} outputs")
        fills, srcs = [], []
        for i, view in enumerate(b.head_grad_views):
            g = out_grads[i] if i < len(out_grads) else None
            if g is None:
                fills.append(view)
                continue
            if not isinstance(g, NDArray):
                from .ndarray import array as nd_array
                g = nd_array(np.asarray(g), dtype=self.outputs[i].dtype)
            elif g.stype != "default":
                g = g.tostype("default")
            if tuple(g.shape) != view.shape:
                raise MXNetError(f"backward: head gradient {i} has shape {tuple(g.shape)}, "
                                 f"output '{self._output_names[i]}' has {view.shape}")
            srcs.append((view, g))
        b.run_backward(fills, srcs)
        self._backward_ran = True

    # -- parameters -----------------------------------------------------------------------------
    def copy_params_from(self, arg_params: dict, aux_params: dict | None = None,
                         allow_extra_params: bool = False) -> None:
        for name, array in arg_params.items():
            if name in self.arg_dict:
                dst = self.arg_dict[name]
                _copy_param(array, dst, name)
            elif not allow_extra_params:
                raise ValueError(f'Find name "{name}" that is not in the arguments')
        if aux_params is None:
            return
        for name, array in aux_params.items():
            if name in self.aux_dict:
                _copy_param(array, self.aux_dict[name], name)
            elif not allow_extra_params:
                raise ValueError(f'Find name {name} that is not in the auxiliary states')

    def reshape(self, partial_shaping: bool = False, allow_up_sizing: bool = False,
                **kwargs) -> Executor:
        """A new executor for new input shapes, sharing the parameter arrays."""
        arg_shapes, _, aux_shapes = self._symbol.infer_shape(**kwargs)
        if arg_shapes is None:
            raise MXNetError(f"reshape: cannot infer all shapes from {kwargs}")
        new_args, new_grads, new_aux = {}, {}, {}
        for i, name in enumerate(self._arg_names):
            new_shape = tuple(arg_shapes[i])
            arr = self.arg_arrays[i]
            darr = self.grad_arrays[i]
            if partial_shaping or name in kwargs or new_shape == arr.shape:
                new_args[name] = _resized(arr, new_shape, allow_up_sizing, name)
                if darr is not None:
                    new_grads[name] = _resized(darr, new_shape, allow_up_sizing, name)
            else:
                raise AssertionError(
                    f"Shape of unspecified array arg:{name} changed. This can cause the new "
                    "executor to not share parameters with the old one. Please check for "
                    "error in network. If this is intended, set partial_shaping=True to "
                    "suppress this warning.")
        for i, name in enumerate(self._aux_names):
            new_shape = tuple(aux_shapes[i])
            arr = self.aux_arrays[i]
            if partial_shaping or new_shape == arr.shape:
                new_aux[name] = _resized(arr, new_shape, allow_up_sizing, name)
            else:
                raise AssertionError(
                    f"Shape of unspecified array aux:{name} changed. This can cause the new "
                    "executor to not share parameters with the old one. Please check for "
                    "error in network. If this is intended, set partial_shaping=True to "
                    "suppress this warning.")
        return bind(self._symbol, self._ctx, new_args, new_grads, self._grad_req, new_aux)

    def _head_grads(self, out_grads) -> list:
        """``out_grads`` as a list of NDArrays (None: ones) for node-by-node backward."""
        if out_grads is None:
            return []
        if isinstance(out_grads, NDArray):
            out_grads = [out_grads]
        elif isinstance(out_grads, dict):
            out_grads = [out_grads.get(n) for n in self._output_names]
        if out_grads and len(out_grads) != len(self.outputs):
            raise MXNetError(f"backward: {len(out_grads)} head gradients for "
                             f"{len(self.outputs)} outputs")
        res = []
        for i, g in enumerate(out_grads):
            if g is not None and not isinstance(g, NDArray):
                from .ndarray import array as nd_array
                g = nd_array(np.asarray(g), ctx=self._ctx, dtype=self.outputs[i].dtype)
            elif g is not None and g.stype != "default":
                g = g.tostype("default")
            if g is not None and tuple(g.shape) != self.outputs[i].shape:
                raise MXNetError(f"backward: head gradient {i} has shape {tuple(g.shape)}, "
                                 f"output '{self._output_names[i]}' has "
                                 f"{self.outputs[i].shape}")
            res.append(g)
        return res

    def set_monitor_callback(self, callback, monitor_all: bool = False) -> None:
        """Call ``callback(name, array)`` with every node's outputs (``<node>_output``...)
        during forward, and its inputs too when ``monitor_all``. While a callback is set
        the graph runs node by node, so every intermediate value exists; None removes it."""
        self._monitor = callback
        self._monitor_all = bool(monitor_all)

    def debug_str(self) -> str:
        lines = [f"Symbol outputs: {self._output_names}"]
        for n in self._graph.nodes:
            if n.is_variable:
                arr = self.arg_dict.get(n.name)
                if arr is None:
                    arr = self.aux_dict.get(n.name)
                shape = arr.shape if arr is not None else "?"
                lines.append(f"Variable:{n.name} shape={shape}")
            else:
                ins = ", ".join(f"{e.node.name}[{e.index}]" for e in n.inputs)
                lines.append(f"Op:{n.op}, Name={n.name} <- ({ins})")
        total = sum(a.size * a._dt.itemsize for a in self.arg_arrays + self.aux_arrays)
        lines.append(f"Total {total / 1048576:.3f} MB of arguments and auxiliary states")
        for key, b in self._bound.items():
            prog = b.cg.program
            mem = b.cg.memory
            internal = sum(s.nbytes for s in prog.slots if s.kind == "temp")
            if mem is not None:
                internal = mem.planned_bytes
            lines.append(f"{'train' if key else 'inference'} program: "
                         f"{len(prog.calls)} kernel calls")
            lines.append(f"Total {internal / 1048576:.0f} MB allocated")
            if mem is not None:
                lines.append(f"  memory plan '{mem.strategy}': {mem.naive_bytes / 1048576:.3f} "
                             f"MB without reuse, {mem.planned_bytes / 1048576:.3f} MB planned "
                             f"(lower bound {mem.lower_bound_bytes / 1048576:.3f} MB)")
        return "\n".join(lines) + "\n"


def _copy_param(array, dst: NDArray, name: str) -> None:
    if isinstance(array, NDArray):
        if array.stype != "default":
            array = array.tostype("default")
        if array.shape != dst.shape:
            raise MXNetError(f"copy_params_from: '{name}' has shape {array.shape}, the "
                             f"executor's array has {dst.shape}")
        from .ndarray import _copy_into
        _copy_into(dst, array)
    else:
        dst[:] = np.asarray(array)


def _resized(arr: NDArray, shape: tuple, allow_up_sizing: bool, name: str) -> NDArray:
    n = math.prod(shape)
    if n > arr.size:
        if not allow_up_sizing:
            raise AssertionError(
                f"New shape of arg: {name} larger than original. First making a big executor "
                "and then down sizing it is more efficient than the reverse. If you really "
                "want to up size, set allow_up_sizing=True to enable allocation of new "
                "arrays.")
        if arr._ctx.device_typeid == 2:
            return nd_zeros(shape, arr._ctx, arr._dt)
        a = _aligned(shape, arr._dt)
        a[...] = 0
        return _wrap(a, arr._dt, arr._ctx)
    if arr._ctx.device_typeid == 2:
        return _wrap(arr._buf.region(0, shape, arr._buf.dtype), arr._dt, arr._ctx,
                     arr.writable, arr._var)
    return _wrap(arr._buf.reshape(-1)[:n].reshape(shape), arr._dt, arr._ctx, arr.writable,
                 arr._var)


# ------------------------------------------------------------------------------------------
# binding
# ------------------------------------------------------------------------------------------
def _infer_all(symbol, shapes: dict, types: dict, what: str) -> tuple:
    """Shapes and dtypes of every variable; errors name the argument at fault."""
    from ..compiler import infer
    g = Graph(symbol._outputs)
    try:
        fs = infer.infer_shapes(g, shapes)
    except ShapeError as e:
        culprit = _find_culprit(g, shapes)
        if culprit:
            raise ShapeError(f"{what}: {culprit}") from None
        raise ShapeError(f"{what}: {e}") from None
    try:
        ft = infer.infer_types(g, types)
    except MXNetError as e:
        culprit = _find_type_culprit(g, types)
        if culprit:
            raise MXNetError(f"{what}: {culprit}") from None
        raise MXNetError(f"{what}: dtypes are inconsistent: {e}") from None
    vshapes = {n.name: fs[(n.uid, 0)] for n in g.variables()}
    vtypes = {n.name: ft[(n.uid, 0)] for n in g.variables()}
    return vshapes, vtypes


def _find_culprit(g: Graph, shapes: dict) -> str | None:
    from ..compiler import infer
    for name, given in shapes.items():
        others = {k: v for k, v in shapes.items() if k != name}
        try:
            fs = infer.infer_shapes(g, others, partial=True)
        except MXNetError:
            continue
        var = next((n for n in g.variables() if n.name == name), None)
        if var is None:
            continue
        want = fs.get((var.uid, 0))
        if want is not None and tuple(want) != tuple(given):
            return (f"argument '{name}' has shape {tuple(given)}, but the graph needs "
                    f"{tuple(want)} (inferred from the other arguments)")
    return None


def _find_type_culprit(g: Graph, types: dict) -> str | None:
    from ..compiler import infer
    for name, given in types.items():
        others = {k: v for k, v in types.items() if k != name}
        try:
            ft = infer.infer_types(g, others, partial=True)
        except MXNetError:
            continue
        var = next((n for n in g.variables() if n.name == name), None)
        want = ft.get((var.uid, 0)) if var is not None else None
        if want is not None and want != given:
            return (f"argument '{name}' has dtype {given}, but the graph needs {want} "
                    "(inferred from the other arguments)")
    return None


def simple_bind(symbol, ctx, grad_req, type_dict, shared_exec, shared_buffer,
                shape_kwargs: dict) -> Executor:
    """Allocate every array from the given input shapes (and dtypes) and bind."""
    ctx = as_context(ctx)
    check_runnable(ctx)
    arg_names = symbol.list_arguments()
    aux_names = symbol.list_auxiliary_states()
    inputs = set(symbol.list_inputs())
    shapes = {}
    for k, v in shape_kwargs.items():
        if k not in inputs:
            raise MXNetError(f"simple_bind: '{k}' is not an input of the symbol; inputs are "
                             f"{symbol.list_inputs()}")
        shapes[k] = (int(v),) if isinstance(v, (int, np.integer)) else tuple(int(d) for d in v)
    types = {}
    for k, v in (type_dict or {}).items():
        if k in inputs:
            types[k] = to_dtype(v).name
    vshapes, vtypes = _infer_all(symbol, shapes, types, "simple_bind")
    req = _grad_req_dict(grad_req, arg_names)

    def alloc(name, kind):
        shape, dt = vshapes[name], to_dtype(vtypes[name])
        for src in ((shared_exec.arg_dict if kind == "arg" else shared_exec.aux_dict)
                    if shared_exec is not None else {}, shared_buffer or {}):
            a = src.get(name)
            if a is not None and a.shape == shape and a._dt is dt and (
                    a._ctx == ctx or 2 not in (a._ctx.device_typeid, ctx.device_typeid)):
                return a
        a = nd_zeros(shape, ctx, dt)
        if shared_buffer is not None and kind == "arg":
            shared_buffer[name] = a
        return a

    args = [alloc(n, "arg") for n in arg_names]
    grads = []
    for n, a in zip(arg_names, args):
        if req[n] == "null":
            grads.append(None)
        else:
            ga = shared_exec.grad_dict.get(n) if shared_exec is not None else None
            grads.append(ga if ga is not None and ga.shape == a.shape and ga._dt is a._dt
                         and ga._ctx == a._ctx else nd_zeros(a.shape, ctx, a._dt))
    aux = [alloc(n, "aux") for n in aux_names]
    return Executor(symbol, ctx, args, grads, req, aux, vshapes, vtypes)


def _as_list(what: str, arrays, names: list, allow_missing: bool) -> list:
    if arrays is None:
        return [None] * len(names)
    if isinstance(arrays, dict):
        out = []  # (extra keys are ignored, as in MXNet)
        for n in names:
            a = arrays.get(n)
            if a is None and not allow_missing:
                raise MXNetError(f"bind: key `{n}` is missing in `{what}`")
            out.append(a)
        return out
    if isinstance(arrays, (list, tuple)):
        if len(arrays) != len(names):
            kind = "auxiliary states" if what == "aux_states" else "arguments"
            raise MXNetError(f"bind: length of {what} ({len(arrays)}) does not match the "
                             f"number of {kind} ({len(names)}: {names})")
        return list(arrays)
    raise MXNetError(f"bind: {what} must be a list or a dict of NDArrays")


def _check_bind_contexts(ctx: Context, named: list) -> None:
    """Arrays bound to a gpu executor must live on its context (and no gpu array can be
    bound to a cpu executor): mxc places no copies between devices."""
    for n, a in named:
        if a._ctx != ctx and (a._ctx.device_typeid == 2 or ctx.device_typeid == 2):
            raise MXNetError(f"bind: '{n}' is on {a._ctx}, but the executor is bound to "
                             f"{ctx}; every array must be on the executor's context (copy "
                             f"with .as_in_context({ctx}))")


def bind(symbol, ctx, args, args_grad=None, grad_req="write", aux_states=None) -> Executor:
    """Bind the given arrays (shared, not copied)."""
    ctx = as_context(ctx)
    check_runnable(ctx)
    arg_names = symbol.list_arguments()
    aux_names = symbol.list_auxiliary_states()
    arg_list = _as_list("args", args, arg_names, False)
    grad_list = _as_list("args_grad", args_grad, arg_names, True)
    if aux_states is None and aux_names:
        raise MXNetError(f"bind: aux_states must be given for the auxiliary states "
                         f"{aux_names}")
    aux_list = _as_list("aux_states", aux_states if aux_states is not None else [], aux_names,
                        False)
    for n, a in list(zip(arg_names, arg_list)) + list(zip(aux_names, aux_list)):
        if not isinstance(a, NDArray):
            raise MXNetError(f"bind: '{n}' must be an NDArray, got {type(a).__name__}")
        if a.stype != "default":
            raise MXNetError(f"bind: '{n}' is {a.stype}; mxc binds dense arrays only")
    _check_bind_contexts(ctx, list(zip(arg_names, arg_list)) + list(zip(aux_names, aux_list))
                         + [(f"gradient of {n}", g) for n, g in zip(arg_names, grad_list)
                            if isinstance(g, NDArray)])
    shapes = {n: a.shape for n, a in zip(arg_names, arg_list)}
    shapes.update({n: a.shape for n, a in zip(aux_names, aux_list)})
    types = {n: a._dt.name for n, a in zip(arg_names, arg_list)}
    types.update({n: a._dt.name for n, a in zip(aux_names, aux_list)})
    vshapes, vtypes = _infer_all(symbol, shapes, types, "bind")
    for n, a in list(zip(arg_names, arg_list)) + list(zip(aux_names, aux_list)):
        if vtypes[n] != a._dt.name:
            raise MXNetError(f"bind: '{n}' has dtype {a._dt.name}, the graph needs "
                             f"{vtypes[n]}")
    req = _grad_req_dict(grad_req, arg_names)
    for i, n in enumerate(arg_names):
        g = grad_list[i]
        if g is None:
            req[n] = "null"
            continue
        if req[n] == "null":
            continue
        if g.shape != arg_list[i].shape:
            raise MXNetError(f"bind: gradient array of '{n}' has shape {g.shape}, the "
                             f"argument has {arg_list[i].shape}")
        if g._dt is not arg_list[i]._dt:
            raise MXNetError(f"bind: gradient array of '{n}' has dtype {g._dt.name}, the "
                             f"argument has {arg_list[i]._dt.name}")
    grads = [g if req[n] != "null" else None for n, g in zip(arg_names, grad_list)]
    return Executor(symbol, ctx, arg_list, grads, req, aux_list, vshapes, vtypes)
