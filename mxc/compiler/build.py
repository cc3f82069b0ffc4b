"""Build a graph into a runnable :class:`~mxc.runtime.program.Program`.

The pipeline, in order (each step a small module of its own):

0. ``cse``       common-subexpression elimination (dead code: a graph is what its outputs
                 reach, so dropped duplicates and unused nodes are never lowered);
   (``fold_constants`` runs before, in callers with fixed parameters: ``CompiledModel``)
1. ``infer``     shapes and dtypes of every entry;
2. ``gradient``  (training binds) the backward graph for the requested arguments;
3. ``lower``     every node to kernels over storage slots (views share their input's slot);
                 computes are recorded unscheduled;
4. ``fuse``      relu/residual consumers folded into GEMM epilogues (``fuse_epilogue``),
                 producer computes inlined into their consumers, the rest scheduled
                 (``MXNET_USE_FUSION=0`` / ``fusion=False``: everything scheduled as lowered);
5. ``plan_memory`` gradients written in place, calls reordered for memory, temporaries
                 placed in one workspace arena (inplace + sharing; ``MXC_PLAN_MEMORY=0`` /
                 ``plan_memory=False``: one buffer per slot);
6. ``codegen``   kernels to one LLVM module, JIT-compiled through the object cache;
7. the Program: slots + calls, split into ``forward`` and ``backward`` sections.

Whole-program cache (``compile_graph(cache=True)``; ``CompiledModel`` uses it): steps 3-6 are
skipped when ``$MXC_CACHE_DIR/programs`` holds the program of the same graph structure (not
parameter values), input shapes/dtypes, compile options, environment switches
(``MXNET_USE_FUSION``, ``MXC_PLAN_MEMORY``, ``MXNET_EXEC_ENABLE_INPLACE``,
``NNVM_EXEC_MATCH_RANGE``), host CPU and mxc sources (sizes and modification times of every
module, so editing the compiler invalidates it). An entry holds the slot table, the calls,
sections, memory plan and the machine code (the objects, and on x86-64 Linux one prelinked image
mapped without LLVM); it is written atomically with a checksum and checked when read: a
damaged or inconsistent entry is ignored and rebuilt. The kernels, their LLVM IR and modules of
a cached program are recomputed on first access (``CompiledGraph.kernels``, ``llvm_ir``,
``modules``). ``MXC_PROGRAM_CACHE=0`` turns it off. It is opt-in because a program is only as
fresh as its key: in-process changes to the compiler (a test patching a module constant) are
invisible to it.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import sys
from dataclasses import fields
from pathlib import Path

from ..base import CompileError, MXNetError
from ..ir import kernel as K
from ..ir.dtypes import as_dtype
from ..ir.graph import Entry, Graph, Node, topo_order, variable
from ..runtime.program import KernelCall, Program, SlotInfo
from . import infer
from . import plan_memory as memplan
from .gradient import gradient
from ..codegen.jit import host_identity
from .cse import eliminate_common_subexpressions
from .lower import LowerCtx, LoweredKernel, SlotTable


class CompiledGraph:
    """A compiled graph: the Program and what callers need to bind and inspect it.

    ``kernels`` (LoweredKernel per call, for inspection), ``llvm_ir`` (every kernel module,
    concatenated) and ``modules`` are recomputed on first access for a program that came from
    the whole-program cache (``from_cache``)."""

    def __init__(self, program: Program, graph: Graph, shapes: dict, types: dict,
                 var_slots: dict, head_slots: list, head_grad_slots: list | None = None,
                 grad_slots: dict | None = None, entry_slot: dict | None = None,
                 kernels: list | None = None, llvm_ir: str | None = None,
                 kernels_unfused: int = 0, fused_groups: list | None = None,
                 memory=None, *, relower=None, from_cache: bool = False) -> None:
        self.program = program
        self.graph = graph
        self.shapes = shapes
        self.types = types
        self.var_slots = var_slots                          # variable name -> slot
        self.head_slots = head_slots                        # slot per graph output
        self.head_grad_slots = head_grad_slots if head_grad_slots is not None else []
        self.grad_slots = grad_slots if grad_slots is not None else {}  # name -> grad slot
        self.entry_slot = entry_slot if entry_slot is not None else {}
        self.kernels_unfused = kernels_unfused              # kernel count without fusion
        self.fused_groups = fused_groups if fused_groups is not None else []
        self.memory = memory                                # plan_memory.MemoryPlan, or None
        self.from_cache = from_cache                        # loaded from the program cache
        self._kernels = kernels
        self._llvm_ir = llvm_ir
        self._modules = None
        self._relower = relower     # () -> (kernels, modules), for a cached program

    def _relowered(self) -> None:
        kernels, modules = self._relower()
        calls = self.program.calls
        if len(kernels) != len(calls) or any(
                lk.node != c.node or list(lk.slots) != list(c.slots)
                for lk, c in zip(kernels, calls)):
            raise CompileError("the cached program does not match the graph lowered again "
                               "(the environment or the compiler changed since it was "
                               "built); clear $MXC_CACHE_DIR/programs")
        self._kernels, self._modules = kernels, modules

    @property
    def kernels(self) -> list:
        """LoweredKernel per call, in run order."""
        if self._kernels is None:
            self._relowered() if self._relower is not None else setattr(self, "_kernels", [])
        return self._kernels

    @kernels.setter
    def kernels(self, value: list) -> None:
        self._kernels = value

    @property
    def modules(self) -> list:
        """(function name, LLVM IR text) of each unique kernel module."""
        owner = self.program.owner
        mods = getattr(owner, "modules", None) if owner is not None else None
        if mods is not None:
            return mods
        if self._modules is None and self._relower is not None:
            self._relowered()
        return self._modules or []

    @property
    def llvm_ir(self) -> str:
        """Every kernel module's LLVM IR, concatenated."""
        if self._llvm_ir is None:
            self._llvm_ir = "\n\n".join(text for _, text in self.modules)
        return self._llvm_ir

    @llvm_ir.setter
    def llvm_ir(self, value: str) -> None:
        self._llvm_ir = value

    def __repr__(self) -> str:
        return (f"CompiledGraph({len(self.program.calls)} calls, {len(self.program.slots)} "
                f"slots{', from cache' if self.from_cache else ''})")


def _entry_key(e: Entry) -> tuple:
    return (e.node.uid, e.index)


def compile_graph(graph: Graph, arg_shapes: dict, arg_types: dict | None = None, *,
                  is_train: bool = False, grad_req: dict | None = None,
                  fusion: bool | None = None, plan_memory: bool = True,
                  retain_graph: bool = False, codegen: bool = True,
                  cache: bool = False, constants: tuple = ()) -> CompiledGraph:
    """Compile ``graph``. ``grad_req`` maps variable names to 'write' | 'add' | 'null'; when
    any is not 'null', the backward graph is built and compiled into section 'backward'.
    ``fusion`` (default: ``MXNET_USE_FUSION``, on) inlines producers into consumers.
    ``plan_memory`` (default on unless ``MXC_PLAN_MEMORY=0``) shares the temporaries' storage;
    the backward section then runs once per forward (as in MXNet) unless ``retain_graph``
    keeps the forward values it reads until its end, so it may run again. ``codegen=False``
    stops before machine code (calls get no function; ``compiler.aot`` renders the kernels
    for its own target). ``cache`` uses the whole-program cache (see the module docstring;
    ``MXC_PROGRAM_CACHE=0`` turns it off). ``constants`` names parameters whose values the
    caller fixes for the program's life: a convolution weight among them that nothing else
    reads may be stored prepacked for the GEMM (``program.slot_layouts`` says how; the caller
    writes it with ``codegen.gemm.pack_a_panels``)."""
    constants = tuple(sorted(set(constants)))
    source_outputs = list(graph.outputs)
    graph, cse_outputs = eliminate_common_subexpressions(graph)
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

    key = None
    if cache and codegen and program_cache_enabled():
        try:
            key = program_key(graph, arg_shapes, arg_types, is_train=is_train,
                              grad_req=wanted, fusion=fusion, plan_memory=plan_memory,
                              retain_graph=retain_graph, constants=constants)
        except (TypeError, ValueError, MXNetError):  # inputs the key cannot spell: no cache
            key = None
    if key is not None:
        relower = _relower_fn(graph, arg_shapes, arg_types, is_train, grad_req, fusion,
                              plan_memory, retain_graph, constants)
        cg = _load_program(key, full, shapes, types, relower)
        if cg is not None:
            return _alias_outputs(cg, source_outputs, cse_outputs)

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
    if constants:   # fixed parameters read by a single node may be stored prepacked
        readers: dict = {}
        for node in full.nodes:
            for e in node.inputs:
                readers.setdefault(e.node.uid, set()).add(node.uid)
        slots.packable = {var_slots[n.name] for n in full.variables()
                          if n.name in constants and len(readers.get(n.uid, ())) == 1
                          and not any(h.node is n for h in full.outputs)}

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
    objects: list | None = [] if key is not None else None
    program = _codegen(lowered, slots, n_fwd_kernels, memory, jit=codegen, objects=objects)
    program.slot_layouts = dict(slots.layouts)
    head_slots = [entry_slot[_entry_key(h)] for h in graph.outputs]
    cg = CompiledGraph(program, full, shapes, types, var_slots, head_slots,
                       [var_slots[v.name] for v in head_grad_vars], grad_slots, entry_slot,
                       lowered, None, fused.kernels_unfused, fused.groups, memory)
    if key is not None:
        _store_program(key, cg, objects)
    return _alias_outputs(cg, source_outputs, cse_outputs)


def _alias_outputs(cg: CompiledGraph, source: list, compiled: list) -> CompiledGraph:
    """Let the caller's output entries (of the graph it passed) find their shapes, types
    and slots when common-subexpression elimination made other nodes compute them."""
    for old, new in zip(source, compiled):
        if old.node is new.node:
            continue
        for i in range(min(old.node.num_outputs, new.node.num_outputs)):
            for table in (cg.shapes, cg.types, cg.entry_slot):
                if (new.node.uid, i) in table:
                    table[(old.node.uid, i)] = table[(new.node.uid, i)]
    return cg


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
             jit: bool = True, objects: list | None = None) -> Program:
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
        cm = compile_modules(modules, objects)
    except CompileError:
        raise
    except RuntimeError as e:
        raise CompileError(f"LLVM failed to compile the graph: {e}") from None
    cm.modules = modules
    calls = []
    for lk, fname in zip(lowered, names):
        k = lk.kernel
        calls.append(KernelCall(cm.functions[fname], fname, lk.slots, _byte_offsets(k),
                                k.n_tasks, k.scratch_bytes, k.cost, lk.node))
    return Program(infos, calls, cm, native=_native_pool(), sections={"forward": (0, n_fwd),
                                              "backward": (n_fwd, len(calls))}, **arena)


def _byte_offsets(k) -> list:
    """Byte offset into its slot of each buffer argument of kernel ``k``."""
    offs = getattr(k, "offsets", None)
    return [o * b.dtype.itemsize for o, b in zip(offs, k.buffers)] if offs else \
        [0] * len(k.buffers)


# ---------------------------------------------------------------------------------------------
# whole-program cache
# ---------------------------------------------------------------------------------------------
PROGRAM_FORMAT = 2
_ENV_SWITCHES = ("MXNET_USE_FUSION", "MXC_PLAN_MEMORY", "MXNET_EXEC_ENABLE_INPLACE",
                 "NNVM_EXEC_MATCH_RANGE", "MXC_CPU", "MXC_CPU_FEATURES", "MXC_POOL_TEMPLATE")
_fingerprint: str | None = None


def program_cache_enabled() -> bool:
    """On unless ``MXC_PROGRAM_CACHE=0``; never while lowering for an AOT or GPU target."""
    if os.environ.get("MXC_PROGRAM_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    targets = sys.modules.get("mxc.codegen.targets")
    if targets is not None and targets.active() is not None:
        return False
    ptx = sys.modules.get("mxc.codegen.ptx")
    return not (ptx is not None and ptx.gpu_lowering())


def source_fingerprint() -> str:
    """mxc's version and the size and modification time of each of its modules: a program
    built by other compiler sources is never reused."""
    global _fingerprint
    if _fingerprint is None:
        import mxc

        root = Path(mxc.__file__).resolve().parent
        h = hashlib.sha256(f"{getattr(mxc, '__mxc_version__', '')}".encode())
        stack = [root]
        files = []
        while stack:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            if e.name != "__pycache__":
                                stack.append(e.path)
                        elif e.name.endswith(".py"):
                            st = e.stat()
                            files.append((os.path.relpath(e.path, root), st.st_size,
                                          st.st_mtime_ns))
            except OSError:
                continue
        for f in sorted(files):
            h.update(repr(f).encode())
        _fingerprint = h.hexdigest()
    return _fingerprint


def _graph_signature(graph: Graph) -> list:
    nodes = graph.nodes
    index = {n.uid: i for i, n in enumerate(nodes)}
    out = []
    for n in nodes:
        out.append([n.op, n.name, sorted(n.attrs.items()),
                    [[index[e.node.uid], e.index] for e in n.inputs],
                    [index[c.uid] for c in n.control_deps], n.subgraphs or None])
    out.append([[index[e.node.uid], e.index] for e in graph.outputs])
    return out


def program_key(graph: Graph, arg_shapes: dict, arg_types: dict | None = None, *,
                is_train: bool = False, grad_req: dict | None = None,
                fusion: bool | None = None, plan_memory: bool = True,
                retain_graph: bool = False, constants: tuple = ()) -> str:
    """The whole-program cache key of a ``compile_graph`` call: graph structure (ops, names,
    attributes, edges; not parameter values), input shapes and dtypes, options, environment
    switches, host and compiler sources."""
    shapes = sorted((str(k), tuple(int(d) for d in v)) for k, v in arg_shapes.items())
    types = sorted((str(k), as_dtype(v).name) for k, v in (arg_types or {}).items())
    req = sorted((str(k), str(v)) for k, v in (grad_req or {}).items() if v != "null")
    doc = {"format": PROGRAM_FORMAT, "graph": _graph_signature(graph), "shapes": shapes,
           "types": types, "is_train": bool(is_train), "grad_req": req,
           "fusion": None if fusion is None else bool(fusion),
           "plan_memory": None if plan_memory is None else bool(plan_memory),
           "retain_graph": bool(retain_graph), "constants": sorted(constants),
           "env": [os.environ.get(k) for k in _ENV_SWITCHES],
           "host": host_identity(), "sources": source_fingerprint()}
    text = json.dumps(doc, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _program_path(key: str) -> Path:
    from ..codegen.jit import cache_dir

    return cache_dir() / "programs" / key[:2] / f"{key}.prog"


class _DataUnpickler(pickle.Unpickler):
    """Plain data only (dict, list, tuple, str, bytes, numbers): a cache entry never names
    a class or function to call."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"cache entries hold plain data, not {module}.{name}")


def _relower_fn(graph, arg_shapes, arg_types, is_train, grad_req, fusion, plan_memory,
                retain_graph, constants=()):
    """What ``CompiledGraph.kernels``/``modules`` of a cached program recompute: the same
    compile without machine code (same slots and calls), and its kernels rendered."""
    arg_shapes, arg_types = dict(arg_shapes), dict(arg_types or {})
    grad_req = dict(grad_req) if grad_req else None

    def relower():
        from ..codegen.llvm_render import render_modules

        cg = compile_graph(graph, arg_shapes, arg_types, is_train=is_train, grad_req=grad_req,
                           fusion=fusion, plan_memory=plan_memory, retain_graph=retain_graph,
                           codegen=False, constants=constants)
        kernels = cg.kernels
        modules = render_modules([lk.kernel for lk in kernels])[0] if kernels else []
        return kernels, modules

    return relower


def _store_program(key: str, cg: CompiledGraph, objects: list | None) -> None:
    """Write ``cg``'s program to the cache (best effort: a read-only cache, or a program whose
    code cannot be collected, only costs the next process a compile)."""
    prog = cg.program
    if objects is None or (prog.calls and not objects):
        return
    from ..codegen import jit

    owner = prog.owner
    names = list(owner.functions) if owner is not None else []
    try:
        image = jit.link_image(objects, names) if names and jit.image_supported() else None
        index = {n.uid: i for i, n in enumerate(cg.graph.nodes)}
        mem = cg.memory
        payload = {
            "format": PROGRAM_FORMAT, "key": key, "n_nodes": len(index),
            "slots": [(s.nbytes, s.kind, s.name) for s in prog.slots],
            "calls": [(c.name, list(c.slots), list(c.offsets), c.n_tasks, c.scratch_bytes,
                       c.cost, c.node) for c in prog.calls],
            "sections": dict(prog.sections), "arena_offsets": dict(prog.arena_offsets),
            "arena_bytes": prog.arena_bytes, "poison": dict(prog.poison),
            "slot_layouts": {int(k): tuple(v) for k, v in prog.slot_layouts.items()},
            "memory": None if mem is None else {f.name: getattr(mem, f.name)
                                                 for f in fields(mem)},
            "entry_slot": [(index[u], i, s) for (u, i), s in cg.entry_slot.items()
                           if u in index],
            "var_slots": dict(cg.var_slots), "head_slots": list(cg.head_slots),
            "head_grad_slots": list(cg.head_grad_slots), "grad_slots": dict(cg.grad_slots),
            "kernels_unfused": cg.kernels_unfused,
            "fused_groups": [list(g) for g in cg.fused_groups],
            "functions": names, "objects": list(objects), "image": image,
        }
        data = b"MXCPROG\0" + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except (TypeError, ValueError, AttributeError, pickle.PicklingError):
        return
    if jit.write_entry(_program_path(key), data) and owner is not None:
        with jit._lock:  # this process maps the program's code once, whichever way it asks
            jit._memory_cache.setdefault(key, owner)


def _load_program(key: str, full: Graph, shapes: dict, types: dict,
                  relower) -> CompiledGraph | None:
    """The cached program of ``key`` bound to ``full``'s nodes, or None (missing, damaged,
    inconsistent or unloadable entries are a miss)."""
    from ..codegen import jit

    data = jit.read_entry(_program_path(key))
    if data is None or not data.startswith(b"MXCPROG\0"):
        return None
    try:
        f = io.BytesIO(data)
        f.seek(8)
        p = _DataUnpickler(f).load()
        return _program_from_payload(p, key, full, shapes, types, relower)
    except Exception:  # noqa: BLE001 - any damage is a cache miss, never an error
        return None


def _program_from_payload(p: dict, key: str, full: Graph, shapes: dict, types: dict,
                          relower) -> CompiledGraph | None:
    from ..codegen import jit

    nodes = full.nodes
    if p["format"] != PROGRAM_FORMAT or p["key"] != key or p["n_nodes"] != len(nodes):
        return None
    slots = [SlotInfo(int(nb), str(kd), str(nm)) for nb, kd, nm in p["slots"]]
    n_slots = len(slots)
    names = list(p["functions"])
    fset = set(names)
    for fname, cslots, offs, *_ in p["calls"]:
        if fname not in fset or len(cslots) != len(offs) or \
                any(not 0 <= s < n_slots for s in cslots):
            return None
    slot_lists = (list(p["var_slots"].values()), p["head_slots"], p["head_grad_slots"],
                  list(p["grad_slots"].values()), [s for _, _, s in p["entry_slot"]],
                  list(p["arena_offsets"]))
    if any(not 0 <= s < n_slots for lst in slot_lists for s in lst):
        return None
    if any(not 0 <= pos < len(nodes) for pos, _, _ in p["entry_slot"]):
        return None
    if set(p["var_slots"]) != {n.name for n in nodes if n.is_variable}:
        return None
    n_calls = len(p["calls"])
    if any(not 0 <= b <= e <= n_calls for b, e in p["sections"].values()):
        return None
    arena = int(p["arena_bytes"])
    if any(not 0 <= off <= arena - slots[s].nbytes for s, off in p["arena_offsets"].items()):
        return None
    if any(not 0 <= o <= slots[s].nbytes for _, cslots, offs, *_ in p["calls"]
           for s, o in zip(cslots, offs)):
        return None
    owner = None
    if names:
        objects = p["objects"]
        if not isinstance(objects, list) or not all(isinstance(o, bytes) for o in objects):
            return None
        image = p["image"]
        if image is not None and jit.image_supported():
            try:
                owner = jit.map_image(image, key)
            except (OSError, ValueError, TypeError, KeyError):
                owner = None
        if owner is None:
            owner = jit.load_objects(objects, names, key)
    calls = [KernelCall(owner.functions[fname], fname, list(cslots), list(offs), int(nt),
                        int(sb), int(cost), str(node))
             for fname, cslots, offs, nt, sb, cost, node in p["calls"]]
    memory = None
    if p["memory"] is not None:
        memory = memplan.MemoryPlan(**p["memory"])
    program = Program(slots, calls, owner, native=_native_pool(), sections=dict(p["sections"]),
                      arena_offsets=memory.offsets if memory is not None
                      else dict(p["arena_offsets"]),
                      arena_bytes=int(p["arena_bytes"]), poison=p["poison"],
                      slot_layouts={int(k): tuple(v) for k, v in p["slot_layouts"].items()})
    entry_slot = {(nodes[pos].uid, i): s for pos, i, s in p["entry_slot"]}
    stats = jit.STATS  # the program's modules came from the disk cache
    stats["program_hits"] = stats.get("program_hits", 0) + 1
    stats["cache_hits"] = stats.get("cache_hits", 0) + (len(p["objects"]) if names else 0)
    return CompiledGraph(program, full, shapes, types, dict(p["var_slots"]),
                         list(p["head_slots"]), list(p["head_grad_slots"]),
                         dict(p["grad_slots"]), entry_slot, None, None,
                         int(p["kernels_unfused"]), [list(g) for g in p["fused_groups"]],
                         memory, relower=relower, from_cache=True)


def _native_pool():
    """The native pool programs run on (None: the Python pool; MXC_NATIVE_POOL=0)."""
    from ..codegen.native_pool import native_pool
    return native_pool()


__all__ = ["compile_graph", "CompiledGraph", "topo_order"]
