"""Build a graph into a runnable :class:`~mxc.runtime.program.Program`.

The pipeline, in order (each step a small module of its own):

1. ``infer``     shapes and dtypes of every entry;
2. ``gradient``  (training binds) the backward graph for the requested arguments;
3. ``lower``     every node to kernels over storage slots (views share their input's slot);
                 computes are recorded unscheduled;
4. ``fuse``      producer computes inlined into their consumers, the rest scheduled
                 (``MXNET_USE_FUSION=0`` / ``fusion=False``: everything scheduled as lowered);
5. ``plan_memory`` gradients written in place, calls reordered for memory, temporaries
                 placed in one workspace arena (inplace + sharing; ``MXC_PLAN_MEMORY=0`` /
                 ``plan_memory=False``: one buffer per slot);
6. ``codegen``   kernels to one LLVM module, JIT-compiled through the object cache;
7. the Program: slots + calls, split into ``forward`` and ``backward`` sections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..base import CompileError, MXNetError
from ..ir import kernel as K
from ..ir.dtypes import as_dtype
from ..ir.graph import Entry, Graph, Node, topo_order, variable
from ..runtime.program import KernelCall, Program, SlotInfo
from . import infer
from . import plan_memory as memplan
from .gradient import gradient
from .lower import LowerCtx, LoweredKernel, SlotTable


@dataclass
class CompiledGraph:
    program: Program
    graph: Graph
    shapes: dict
    types: dict
    var_slots: dict                       # variable name -> slot
    head_slots: list                      # slot per graph output
    head_grad_slots: list = field(default_factory=list)
    grad_slots: dict = field(default_factory=dict)   # variable name -> slot of its grad array
    entry_slot: dict = field(default_factory=dict)
    kernels: list = field(default_factory=list)      # LoweredKernel, for inspection
    llvm_ir: str = ""                                # every kernel module, concatenated
    kernels_unfused: int = 0                         # kernel count without fusion
    fused_groups: list = field(default_factory=list)  # node names per fused kernel
    memory: object = None                            # plan_memory.MemoryPlan, or None

    @property
    def modules(self) -> list:
        """(function name, LLVM IR text) of each unique kernel module."""
        owner = self.program.owner
        return getattr(owner, "modules", []) if owner is not None else []


def _entry_key(e: Entry) -> tuple:
    return (e.node.uid, e.index)


def compile_graph(graph: Graph, arg_shapes: dict, arg_types: dict | None = None, *,
                  is_train: bool = False, grad_req: dict | None = None,
                  fusion: bool | None = None, plan_memory: bool = True,
                  retain_graph: bool = False, codegen: bool = True) -> CompiledGraph:
    """Compile ``graph``. ``grad_req`` maps variable names to 'write' | 'add' | 'null'; when
    any is not 'null', the backward graph is built and compiled into section 'backward'.
    ``fusion`` (default: ``MXNET_USE_FUSION``, on) inlines producers into consumers.
    ``plan_memory`` (default on unless ``MXC_PLAN_MEMORY=0``) shares the temporaries' storage;
    the backward section then runs once per forward (as in MXNet) unless ``retain_graph``
    keeps the forward values it reads until its end, so it may run again. ``codegen=False``
    stops before machine code (calls get no function; ``compiler.aot`` renders the kernels
    for its own target)."""
    arg_types = arg_types or {}
    fwd_shapes = infer.infer_shapes(graph, arg_shapes)
    fwd_types = infer.infer_types(graph, arg_types)
    wanted = {n: r for n, r in (grad_req or {}).items() if r != "null"}
    head_grad_vars: list[Node] = []
    grad_entries: dict = {}
    full = graph
    shapes, types = fwd_shapes, fwd_types
    if wanted:
        for i, h in enumerate(graph.outputs):
            v = variable(f"__head_grad_{i}__")
            head_grad_vars.append(v)
        var_by_name = {n.name: n for n in graph.variables()}
        xs = [var_by_name[n] for n in wanted if n in var_by_name]
        grads = gradient(graph, [Entry(v, 0) for v in head_grad_vars], xs)
        grad_entries = {x.name: g for x, g in zip(xs, grads)}
        extra = [g for g in grads if g is not None]
        full = Graph(list(graph.outputs) + extra + [Entry(v, 0) for v in head_grad_vars])
        hs = dict(arg_shapes)
        ht = dict(arg_types)
        for v, h in zip(head_grad_vars, graph.outputs):
            hs[v.name] = fwd_shapes[_entry_key(h)]
            ht[v.name] = fwd_types[_entry_key(h)]
        for n in graph.variables():
            hs.setdefault(n.name, fwd_shapes[(n.uid, 0)])
            ht.setdefault(n.name, fwd_types[(n.uid, 0)])
        shapes = infer.infer_shapes(full, hs)
        types = infer.infer_types(full, ht)

    slots = SlotTable()
    entry_slot: dict = {}
    buf_slot: dict = {}
    var_slots: dict = {}
    aux_uids = graph.mutable_variables()
    for n in full.variables():
        s = shapes[(n.uid, 0)]
        d = as_dtype(types[(n.uid, 0)])
        kind = "aux" if n.uid in aux_uids else "input"
        slot = slots.new(math.prod(s) * d.itemsize, kind, n.name)
        entry_slot[(n.uid, 0)] = slot
        var_slots[n.name] = slot

    # forward nodes first (in the forward graph's order), then the backward-only nodes
    fwd_nodes = [n for n in graph.nodes if not n.is_variable]
    fwd_ids = {n.uid for n in fwd_nodes}
    bwd_nodes = [n for n in full.nodes if not n.is_variable and n.uid not in fwd_ids]
    lowered: list[LoweredKernel] = []
    n_fwd_kernels = 0
    for phase, nodes in (("forward", fwd_nodes), ("backward", bwd_nodes)):
        for node in nodes:
            _lower_node(node, shapes, types, is_train, slots, entry_slot, buf_slot, lowered)
        if phase == "forward":
            n_fwd_kernels = len(lowered)

    # gradient outputs: write/add into the bound gradient arrays
    grad_slots: dict = {}
    for name, req in wanted.items():
        var = next((n for n in graph.variables() if n.name == name), None)
        if var is None:
            continue
        s = shapes[(var.uid, 0)]
        d = as_dtype(types[(var.uid, 0)])
        gslot = slots.new(math.prod(s) * d.itemsize, "grad", f"{name}_grad")
        grad_slots[name] = gslot
        gbuf = K.Buffer("g", d, math.prod(s))
        dst = K.TensorRef(gbuf, tuple(s))
        ge = grad_entries.get(name)
        fake = Node("_grad_out", f"{name}_grad")
        ctx = LowerCtx(fake, {}, [], [dst], True, slots, {gbuf: gslot}, lowered, defer=True)
        if ge is None:
            if req == "write":
                ctx.compute(dst, lambda *i: K.const(0, d), "zero_grad")
            continue
        gd = as_dtype(types[_entry_key(ge)])
        sbuf = K.Buffer("s", gd, math.prod(s))
        ctx._buf_slot[sbuf] = entry_slot[_entry_key(ge)]
        src = K.TensorRef(sbuf, tuple(s))
        if req == "add":
            ctx.compute(dst, lambda *i: dst[i] + K.cast(d, src[i]), "grad_add")
        else:
            ctx.compute(dst, lambda *i: K.cast(d, src[i]), "grad_write")

    fused = _fuse(lowered, slots, n_fwd_kernels, full, entry_slot, fusion)
    lowered, n_fwd_kernels = fused.kernels, fused.n_fwd
    memory = None
    if memplan.enabled(plan_memory):
        lowered, memory = _plan_memory(lowered, slots, n_fwd_kernels, graph, full, entry_slot,
                                       grad_entries, grad_slots, wanted, retain_graph)
    program = _codegen(lowered, slots, n_fwd_kernels, memory, jit=codegen)
    head_slots = [entry_slot[_entry_key(h)] for h in graph.outputs]
    return CompiledGraph(program, full, shapes, types, var_slots, head_slots,
                         [var_slots[v.name] for v in head_grad_vars], grad_slots, entry_slot,
                         lowered, program.owner.ir_text if program.owner else "",
                         fused.kernels_unfused, fused.groups, memory)


def _plan_memory(lowered: list, slots: SlotTable, n_fwd: int, graph: Graph, full: Graph,
                 entry_slot: dict, grad_entries: dict, grad_slots: dict, wanted: dict,
                 retain_graph: bool):
    """Run the memory planner. Slots of the nodes producing graph outputs stay out of the
    arena (callers read them, and the hidden outputs of an imperative op, after a run)."""
    protected = set()
    for h in graph.outputs:
        if not h.node.is_variable:
            for i in range(h.node.num_outputs):
                s = entry_slot.get((h.node.uid, i))
                if s is not None:
                    protected.add(s)
    declared: dict = {}
    for n in full.nodes:
        if n.is_variable:
            continue
        for i, o in n.opdef.inplace(n.parsed):
            if i < len(n.inputs):
                si = entry_slot.get(_entry_key(n.inputs[i]))
                so = entry_slot.get((n.uid, o))
                if si is not None and so is not None and si != so:
                    declared.setdefault(n.name, []).append((si, so))
    copies = {}
    for name, ge in grad_entries.items():
        if ge is not None and wanted.get(name) == "write" and name in grad_slots:
            copies.setdefault(entry_slot[_entry_key(ge)], grad_slots[name])
    lowered, renamed = memplan.elide_copies(lowered, slots.nbytes, slots.kinds, n_fwd, copies,
                                            protected)
    if renamed:
        for k, s in list(entry_slot.items()):
            if s in renamed:
                entry_slot[k] = renamed[s]
    return memplan.plan_program(lowered, slots.nbytes, slots.kinds, n_fwd,
                                protected=protected, node_inplace=declared,
                                retain_graph=retain_graph)


def _fuse(lowered: list, slots: SlotTable, n_fwd: int, full: Graph, entry_slot: dict,
          option: bool | None):
    """Run the fusion pass; slots it leaves unwritten get no storage (kind 'fused')."""
    from .fuse import fuse, fusion_enabled

    keep = {entry_slot[_entry_key(h)] for h in full.outputs}
    owner = {}
    for n in full.nodes:
        if not n.is_variable:
            for i in range(n.num_outputs):
                s = entry_slot.get((n.uid, i))
                if s is not None:
                    owner.setdefault(s, n.name)
    res = fuse(lowered, slots.nbytes, slots.kinds, n_fwd, keep=keep, owner=owner,
               enabled=fusion_enabled(option))
    for s in res.inlined_slots:
        slots.nbytes[s] = 0
        slots.kinds[s] = "fused"
    return res


def _lower_node(node: Node, shapes, types, is_train, slots: SlotTable, entry_slot, buf_slot,
                lowered) -> None:
    op = node.opdef
    attrs = node.parsed
    in_refs = []
    for i, e in enumerate(node.inputs):
        k = _entry_key(e)
        d = as_dtype(types[k])
        s = shapes[k]
        buf = K.Buffer(f"in{i}_{slots_len(slots)}", d, math.prod(s))
        buf_slot[buf] = entry_slot[k]
        in_refs.append(K.TensorRef(buf, tuple(s)))
    out_refs = []
    for i in range(node.num_outputs):
        k = (node.uid, i)
        d = as_dtype(types[k])
        s = shapes[k]
        if (op.inplace_identity and i == 0 and node.inputs
                and math.prod(s) == in_refs[0].size and d == in_refs[0].dtype):
            # a view: the output is the input's bytes, no kernel needed
            entry_slot[k] = entry_slot[_entry_key(node.inputs[0])]
            out_refs.append(None)
            continue
        slot = slots.new(math.prod(s) * d.itemsize, "temp", f"{node.name}_output{i}")
        entry_slot[k] = slot
        buf = K.Buffer(f"out{i}_{slot}", d, math.prod(s))
        buf_slot[buf] = slot
        out_refs.append(K.TensorRef(buf, tuple(s)))
    if all(r is None for r in out_refs):
        return
    ctx = LowerCtx(node, attrs, in_refs, out_refs, is_train, slots, buf_slot, lowered,
                   defer=True)
    try:
        op.lower(ctx)
    except MXNetError:
        raise
    except NotImplementedError as e:
        raise CompileError(f"cannot compile node '{node.name}': {e}") from None


def slots_len(slots: SlotTable) -> int:
    return len(slots.nbytes)


def _codegen(lowered: list, slots: SlotTable, n_fwd: int, memory=None,
             jit: bool = True) -> Program:
    from ..codegen.jit import compile_modules
    from ..codegen.llvm_render import render_modules

    infos = [SlotInfo(nb, kd, nm) for nb, kd, nm in zip(slots.nbytes, slots.kinds, slots.names)]
    arena = {} if memory is None else {"arena_offsets": memory.offsets,
                                       "arena_bytes": memory.arena_bytes,
                                       "poison": memory.poison}
    if not lowered:
        return Program(infos, [], None, sections={"forward": (0, 0), "backward": (0, 0)},
                       **arena)
    if not jit:  # lowered only: calls without functions (ahead-of-time builds)
        calls = [KernelCall(None, "", lk.slots, _byte_offsets(lk.kernel), lk.kernel.n_tasks,
                            lk.kernel.scratch_bytes, lk.kernel.cost, lk.node) for lk in lowered]
        return Program(infos, calls, None, sections={"forward": (0, n_fwd),
                                                     "backward": (n_fwd, len(calls))}, **arena)
    modules, names = render_modules([lk.kernel for lk in lowered])
    try:
        cm = compile_modules(modules)
    except CompileError:
        raise
    except RuntimeError as e:
        raise CompileError(f"LLVM failed to compile the graph: {e}") from None
    cm.ir_text = "\n\n".join(text for _, text in modules)
    cm.modules = modules
    calls = []
    for lk, fname in zip(lowered, names):
        k = lk.kernel
        calls.append(KernelCall(cm.functions[fname], fname, lk.slots, _byte_offsets(k),
                                k.n_tasks, k.scratch_bytes, k.cost, lk.node))
    return Program(infos, calls, cm, sections={"forward": (0, n_fwd),
                                              "backward": (n_fwd, len(calls))}, **arena)


def _byte_offsets(k) -> list:
    """Byte offset into its slot of each buffer argument of kernel ``k``."""
    offs = getattr(k, "offsets", None)
    return [o * b.dtype.itemsize for o, b in zip(offs, k.buffers)] if offs else \
        [0] * len(k.buffers)


__all__ = ["compile_graph", "CompiledGraph", "topo_order"]
