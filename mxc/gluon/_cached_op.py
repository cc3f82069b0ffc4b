"""Running a hybridized block's graph (MXNet's ``CachedOp``).

A :class:`CachedOp` holds the Symbol a HybridBlock traced and runs it on NDArrays given in
``list_inputs()`` order (data and parameters). It compiles the whole graph once per input
signature (shapes, dtypes, training mode, which inputs want gradients) with
:func:`mxc.compiler.build.compile_graph` and binds each call's program straight to the
arrays' storage: inputs and parameters are read in place, BatchNorm's running statistics
(auxiliary states) are updated in place, outputs are fresh arrays.

Under ``autograd.record()`` the call is one node on autograd's tape: the forward runs the
training program (forward section), and that node's backward runs the same program instance's
backward section, which writes the gradient of every differentiable input. The node is made
with ``mx.autograd.Function`` (MXNet's custom-function API). When autograd offers no
``Function``, the graph is instead interpreted op by op with ``mx.nd`` operators, which
autograd records one by one (same numbers, slower).

On a gpu context (``mx.gpu(i)``: a CUDA device, or the emulator with ``MXC_GPU_EMULATOR=1``)
the graph is built with ``compiler.cuda_build.compile_graph_cuda`` instead and run as a
``runtime.cuda.GPUProgram`` bound to the arrays' device pointers (:class:`_GpuCompiled`,
:func:`_gpu_run`). Under ``autograd.record()`` a gpu call is interpreted op by op (each op a
device launch, recorded by autograd), and autograd compiles the backward of the tape as one
GPU program.

Both sections are pushed to the dependency engine (:mod:`mxc.runtime.engine`), like every
imperative op: the forward reads the inputs' engine variables and writes the outputs', the
auxiliary states' (and a fixed BatchNorm gamma's in training) and one variable per run standing
for its program storage, which the backward reads and writes. The storage goes back to the pool
only after the work pending on that variable.
"""
from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from ..base import MXNetError
from . import _autograd as ag

__all__ = ["CachedOp", "run_graph_imperative"]

_lock = threading.RLock()


def _nd():
    from ..frontend import ndarray
    return ndarray


class _Compiled:
    """One compiled program of the graph for one input signature, with a pool of storage for
    its internal slots (temporaries, gradients) so that calls reuse memory instead of paying
    for fresh pages every time."""

    _POOL_MAX = 4

    def __init__(self, op: CachedOp, shapes: dict, types: dict, is_train: bool,
                 grad_names: tuple) -> None:
        from ..compiler.build import compile_graph
        from ..ir.dtypes import BY_NAME

        req = {n: "write" for n in grad_names} or None
        # retain_graph: autograd may run this backward twice on one forward
        cg = compile_graph(op.graph, shapes, types, is_train=is_train, grad_req=req,
                           retain_graph=True)
        self.cg = cg
        self.in_slots = [cg.var_slots.get(n) for n in op.input_names]
        self.out_shapes = []
        self.out_dt = []
        for h in op.graph.outputs:
            k = (h.node.uid, h.index)
            self.out_shapes.append(tuple(cg.shapes[k]))
            self.out_dt.append(BY_NAME[cg.types[k]])
        self.grad_names = grad_names
        self.grad_slots = [cg.grad_slots.get(n) for n in grad_names]
        self.head_grad_slots = list(cg.head_grad_slots)
        fixed = {s for s in self.in_slots if s is not None} | set(cg.head_slots)
        planned = cg.program.arena_offsets
        self._internal = [(i, s.nbytes) for i, s in enumerate(cg.program.slots)
                          if i not in fixed and i not in planned]
        self._pool: list = []
        self._pool_lock = threading.Lock()
        self.has_rng = any(s.kind == "rng" for s in cg.program.slots)
        from ..frontend.executor import _mutated_args
        mutated = set(op.aux_names) | _mutated_args(op.graph, is_train)
        #: positions of the inputs the program writes in place
        self.mut_idx = {i for i, n in enumerate(op.input_names) if n in mutated}

    def take(self) -> dict:
        """Storage for the internal slots (slot -> uint8 array; key ``"arena"``: the
        workspace of the planned temporaries): pooled or new."""
        if _released:
            _push_released()
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        from ..frontend.ndarray_ops import aligned_empty
        st = {i: aligned_empty((max(n, 1),), np.uint8) for i, n in self._internal}
        st["arena"] = self.cg.program.new_arena()
        return st

    def give(self, storage: dict) -> None:
        with self._pool_lock:
            if len(self._pool) < self._POOL_MAX:
                self._pool.append(storage)


def _slot_view(st: np.ndarray, shape, dt) -> np.ndarray:
    n = math.prod(shape) * dt.itemsize
    return st[:n].view(dt.np).reshape(shape)


class _Run:
    """One call's program instance. Its internal storage goes back to the pool after the
    forward pass (inference) or when the run is dropped (recorded: backward needs the forward
    temporaries, possibly more than once with ``retain_graph``)."""

    __slots__ = ("__weakref__", "comp", "outputs", "prog", "reads", "var", "writes")

    def __init__(self, comp: _Compiled, arrays: list, ctx, keep: bool) -> None:
        from ..frontend import ndarray_ops as ops
        nd = _nd()
        self.comp = comp
        self.var = ops._Var("CachedOp")
        prog = comp.cg.program.clone()
        internal = comp.take()
        bound = {k: v for k, v in internal.items() if k != "arena"}
        reads, mutated = [], []
        for i, (slot, a) in enumerate(zip(comp.in_slots, arrays)):
            if slot is not None:
                bound[slot] = a._buf
                (mutated if i in comp.mut_idx else reads).append(a._var)
        outs = []
        copy_back = []
        for i, slot in enumerate(comp.cg.head_slots):
            shape, dt = comp.out_shapes[i], comp.out_dt[i]
            arr = _aligned(shape, dt)
            if slot in bound:
                copy_back.append((arr, slot))
            else:
                bound[slot] = arr
            outs.append(nd._wrap(arr, dt, ctx))
        prog.allocate(bound, internal["arena"])
        st = prog.storage
        copies = [(arr, st[slot][: arr.nbytes].view(arr.dtype).reshape(arr.shape))
                  for arr, slot in copy_back]

        def after() -> None:
            for dst, src in copies:
                np.copyto(dst, src)
            if not keep:
                comp.give(internal)
        self.reads = reads
        self.writes = mutated + [self.var]
        ops.launch(prog, "forward", reads, self.writes + [o._var for o in outs], "CachedOp",
                   comp.has_rng, after=after if copies or not keep else None)
        self.outputs = outs
        if keep:
            self.prog = prog
            fin = weakref.finalize(self, _give_after, comp, internal, self.var)
            fin.atexit = False
        else:
            self.prog = None

    def backward(self, head_grads: list, grad_shapes: list, grad_dts: list, ctx) -> list:
        """Gradients of the inputs named ``comp.grad_names`` given the heads' gradients
        (None means zeros), as new arrays computed by pushed work."""
        from ..frontend import ndarray_ops as ops
        nd = _nd()
        comp = self.comp
        st = self.prog.storage
        heads = []
        reads = list(self.reads)
        for i, (slot, g) in enumerate(zip(comp.head_grad_slots, head_grads)):
            v = _slot_view(st[slot], comp.out_shapes[i], comp.out_dt[i])
            if g is None:
                heads.append((v, None, None))
            else:
                if g.stype != "default":
                    g = g.tostype("default")
                heads.append((v, g._buf, g._dt if v.dtype != g._buf.dtype else None))
                reads.append(g._var)
        grads = []
        outs = []
        for slot, shape, dt in zip(comp.grad_slots, grad_shapes, grad_dts):
            arr = _aligned(shape, dt)
            if slot is None:
                arr[...] = 0
            else:
                outs.append((arr, _slot_view(st[slot], shape, dt)))
            grads.append(nd._wrap(arr, dt, ctx))
        run = self.prog.run

        def work() -> None:
            for v, buf, dt in heads:
                if buf is None:
                    v[...] = 0
                else:
                    np.copyto(v, buf if dt is None else _float_of(buf, dt), casting="unsafe")
            run("backward")
            for arr, src in outs:
                np.copyto(arr, src)
        ops._get_engine().push(work, reads, self.writes + [g._var for g in grads],
                               name="CachedOp.backward")
        return grads


def _float_of(buf: np.ndarray, dt) -> np.ndarray:
    from ..frontend.ndarray import _bf16_float
    return _bf16_float(buf) if dt.name == "bfloat16" else buf


_released: list = []


def _give_after(comp: _Compiled, internal: dict, var) -> None:
    """A kept run was dropped: its storage goes back to the pool once the work pending on it
    is done. (Finalizers run wherever garbage is collected, possibly while the engine's lock
    is held: the release is only queued here and pushed by the next call.)"""
    _released.append((comp, internal, var))


def _push_released() -> None:
    from ..runtime import engine
    while _released:
        try:
            comp, internal, var = _released.pop()
        except IndexError:
            return
        engine.get().push(lambda c=comp, i=internal: c.give(i), (), (var,),
                          name="CachedOp.release")


def _aligned(shape, dt) -> np.ndarray:
    from ..frontend.ndarray_ops import aligned_empty
    return aligned_empty(tuple(shape), dt.np)


class CachedOp:
    """The compiled form of a symbol, called on NDArrays in ``list_inputs()`` order."""

    def __init__(self, sym, flags=()) -> None:
        from ..ir.graph import Graph
        self.sym = sym
        self.graph = Graph(sym._outputs)
        self.input_names = sym.list_inputs()
        self.aux_names = set(sym.list_auxiliary_states())
        self.flags = dict(flags)
        self._compiled: dict = {}
        # Custom (Python) operators cannot be compiled: such graphs run node by node, each
        # Custom node's operator created once (mxc.operator.NodeRunner)
        self._custom = any(n.op == "Custom" for n in self.graph.nodes)
        self._runners: dict = {}

    # -- signature --------------------------------------------------------------------------
    def _compiled_for_gpu(self, arrays: list, is_train: bool, ctx) -> _GpuCompiled:
        from ..frontend.gpu_storage import get_device, target_of
        dev = get_device(ctx)
        shapes = {n: tuple(a.shape) for n, a in zip(self.input_names, arrays)}
        types = {n: a._dt.name for n, a in zip(self.input_names, arrays)}
        key = ("gpu", tuple(shapes.values()), tuple(types.values()), is_train,
               target_of(dev))
        c = self._compiled.get(key)
        if c is None:
            with _lock:
                c = self._compiled.get(key)
                if c is None:
                    c = self._compiled[key] = _GpuCompiled(self, shapes, types, is_train, dev)
        return c

    def _compiled_for(self, arrays: list, is_train: bool, grad_names: tuple) -> _Compiled:
        shapes = {n: tuple(a.shape) for n, a in zip(self.input_names, arrays)}
        types = {n: a._dt.name for n, a in zip(self.input_names, arrays)}
        key = (tuple(shapes.values()), tuple(types.values()), is_train, grad_names)
        c = self._compiled.get(key)
        if c is None:
            with _lock:
                c = self._compiled.get(key)
                if c is None:
                    c = self._compiled[key] = _Compiled(self, shapes, types, is_train,
                                                        grad_names)
        return c

    def __call__(self, *args):
        """Run on ``args`` (one NDArray per input); returns the list of outputs."""
        nd = _nd()
        arrays = list(args)
        if len(arrays) != len(self.input_names):
            raise MXNetError(f"CachedOp: {len(arrays)} inputs given, the graph takes "
                             f"{len(self.input_names)} ({self.input_names})")
        for n, a in zip(self.input_names, arrays):
            if not isinstance(a, nd.NDArray):
                raise MXNetError(f"CachedOp: input '{n}' must be an NDArray, got "
                                 f"{type(a).__name__}")
        ctx = arrays[0].context if arrays else None
        if any(a.context.device_typeid == 2 for a in arrays):
            return self._call_gpu(arrays, ctx)
        arrays = [a.tostype("default") if a.stype != "default" else a for a in arrays]
        if self._custom:
            return run_graph_imperative(self.sym, dict(zip(self.input_names, arrays)),
                                        self._runners)
        is_train = ag.is_training()
        if ag.is_recording():
            m = ag.module()
            if getattr(m, "Function", None) is not None:
                return self._call_recorded(arrays, is_train, ctx)
            return run_graph_imperative(self.sym, dict(zip(self.input_names, arrays)))
        comp = self._compiled_for(arrays, is_train, ())
        return _Run(comp, arrays, ctx, keep=False).outputs

    def _call_gpu(self, arrays: list, ctx) -> list:
        from ..frontend.gpu_storage import check_same_context
        check_same_context("CachedOp (hybridized block)", ctx, arrays, self.input_names)
        for n, a in zip(self.input_names, arrays):
            if a.stype != "default":
                raise MXNetError(f"CachedOp: input '{n}' is {a.stype}; sparse storage is not "
                                 f"supported on {ctx}")
        if ag.is_recording() and self._grad_inputs(arrays):
            # recorded op by op (each op runs on the device); autograd compiles the backward
            # of the whole tape as one GPU program
            return run_graph_imperative(self.sym, dict(zip(self.input_names, arrays)))
        comp = self._compiled_for_gpu(arrays, ag.is_training(), ctx)
        return _gpu_run(comp, arrays, ctx)

    # -- recording ----------------------------------------------------------------------------
    def _grad_inputs(self, arrays: list) -> tuple:
        """Names of the inputs whose gradient backward needs: those autograd tracks (marked
        variables with a gradient, or outputs of recorded ops), floating point, not
        auxiliary states."""
        out = []
        for n, a in zip(self.input_names, arrays):
            if n in self.aux_names or a._dt.kind != "f":
                continue
            if _needs_grad(a):
                out.append(n)
        return tuple(out)

    def _call_recorded(self, arrays: list, is_train: bool, ctx) -> list:
        m = ag.module()
        grad_names = self._grad_inputs(arrays)
        comp = self._compiled_for(arrays, is_train, grad_names)
        if not grad_names:  # nothing to differentiate: not recorded
            return _Run(comp, arrays, ctx, keep=False).outputs
        op = self
        idx = {n: i for i, n in enumerate(self.input_names)}
        shapes = [arrays[idx[n]].shape for n in grad_names]
        dts = [arrays[idx[n]]._dt for n in grad_names]

        class _GraphFunction(m.Function):
            """The whole cached graph as one autograd node."""

            def forward(self, *inputs):
                self._run = _Run(comp, list(inputs), ctx, keep=True)
                outs = self._run.outputs
                self._run.outputs = None  # the outputs refer to this node: no cycle
                return outs[0] if len(outs) == 1 else tuple(outs)

            def backward(self, *head_grads):
                nd = _nd()
                grads = self._run.backward(list(head_grads), shapes, dts, ctx)
                by_name = dict(zip(grad_names, grads))
                res = []
                for n, a in zip(op.input_names, arrays):
                    g = by_name.get(n)
                    if g is None:  # not differentiated: autograd ignores this entry
                        g = nd.zeros(a.shape, ctx=a.context, dtype=a.dtype)
                    res.append(g)
                return res[0] if len(res) == 1 else tuple(res)

        outs = _GraphFunction()(*arrays)
        return list(outs) if isinstance(outs, (list, tuple)) else [outs]


class _GpuCompiled:
    """The GPU build (``compile_graph_cuda``) of the graph for one input signature."""

    def __init__(self, op: CachedOp, shapes: dict, types: dict, is_train: bool, dev) -> None:
        from ..frontend.executor import _mutated_args
        from ..frontend.gpu_storage import compile_cuda
        from ..ir.dtypes import BY_NAME

        cg = compile_cuda(op.graph, shapes, types, dev, is_train=is_train,
                          what="the hybridized block's graph")
        self.cg = cg
        self.device = dev
        self.in_slots = [cg.var_slots.get(n) for n in op.input_names]
        self.out_shapes, self.out_dt = [], []
        for h in op.graph.outputs:
            k = (h.node.uid, h.index)
            self.out_shapes.append(tuple(cg.shapes[k]))
            self.out_dt.append(BY_NAME[cg.types[k]])
        self.has_rng = any(s["kind"] == "rng" for s in cg.launch_plan()["slots"])
        mutated = set(op.aux_names) | _mutated_args(op.graph, is_train)
        self.mut_idx = {i for i, n in enumerate(op.input_names) if n in mutated}


def _gpu_run(comp: _GpuCompiled, arrays: list, ctx) -> list:
    """One forward run on the device: inputs read in place, aux states updated in place,
    fresh output arrays; the program's own storage is released once its launches are
    queued."""
    from ..frontend import gpu_storage as gs
    nd = _nd()
    dev = comp.device
    bound, reads, mutated, keep = {}, [], [], []
    for i, (slot, a) in enumerate(zip(comp.in_slots, arrays)):
        if slot is not None:
            bound[slot] = a._buf.ptr
            keep.append(a._buf)
            (mutated if i in comp.mut_idx else reads).append(a._var)
    outs, copies = [], []
    for i, slot in enumerate(comp.cg.head_slots):
        shape, dt = comp.out_shapes[i], comp.out_dt[i]
        o = nd.empty(shape, ctx, dt)
        if slot in bound:
            copies.append((o._buf, slot))
        else:
            bound[slot] = o._buf.ptr
        keep.append(o._buf)
        outs.append(o)
    prog = gs.new_program(comp.cg, dev, bound, keep=False)
    after = None
    if copies:
        ptrs = prog.ptrs if prog is not None else bound
        pairs = [(o, ptrs[slot]) for o, slot in copies]

        def after() -> None:
            for o, src in pairs:
                gs.dtod(dev, o.ptr, src, o.nbytes)
    gs.launch(prog, "forward", reads, mutated + [o._var for o in outs], "CachedOp", ctx,
              comp.has_rng, after=after, release=True, keep=keep)
    return outs


def _needs_grad(x) -> bool:
    """Whether autograd will want the gradient of ``x``."""
    e = getattr(x, "_ag", None)
    if e is None:
        return False
    node = e[0]
    if getattr(node, "cleared", False):
        return False
    if getattr(node, "is_leaf", False):
        return bool(getattr(node, "is_var", False)) and getattr(node, "grad_req", "null") != \
            "null"
    return True


# ------------------------------------------------------------------------------------------
# op-by-op interpretation
# ------------------------------------------------------------------------------------------
def run_graph_imperative(sym, inputs: dict, runners: dict | None = None) -> list:
    """Evaluate ``sym`` with one ``mx.nd`` operator call per node (so autograd records each);
    ``inputs`` maps variable names to NDArrays. Custom nodes run their Python operator,
    kept in ``runners`` (node uid -> ``mxc.operator.NodeRunner``) across calls."""
    from ..frontend.ndarray_ops import invoke, template
    from ..ir.graph import topo_order

    vals: dict = {}
    for n in topo_order(sym._outputs):
        if n.is_variable:
            try:
                vals[(n.uid, 0)] = inputs[n.name]
            except KeyError:
                raise MXNetError(f"no value for graph input '{n.name}'") from None
            continue
        ins = [vals[(e.node.uid, e.index)] for e in n.inputs]
        if n.op == "Custom":
            from ..operator import NodeRunner
            runners = {} if runners is None else runners
            runner = runners.get(n.uid)
            if runner is None:
                runner = runners[n.uid] = NodeRunner(n)
            from ..frontend.context import current_context
            outs = runner(ins, ins[0].context if ins else current_context())
        else:
            attrs = {k: v for k, v in n.attrs.items() if not (k.startswith("__") and
                                                              k.endswith("__"))}
            out = invoke(template(n.op, attrs), ins)
            outs = out if isinstance(out, list) else [out]
        for i, o in enumerate(outs):
            vals[(n.uid, i)] = o
    res = []
    for e in sym._outputs:
        v = vals.get((e.node.uid, e.index))
        if v is None:
            raise MXNetError(f"output {e.index} of '{e.node.name}' is hidden; it cannot be "
                             "computed imperatively")
        res.append(v)
    return res
