"""Build a graph for an NVIDIA GPU: PTX text plus a launch plan, with no GPU needed.

The pipeline is ``build.compile_graph``'s forward path with the GPU back end at its end:

1. ``infer``        shapes and dtypes;
2. ``lower``        every node to kernels (``ctx.gemm`` emits GPU GEMM templates: lowering
                    runs inside ``codegen.ptx.lowering_for_gpu``);
3. ``fuse``         as on the CPU (the same kernel IR);
4. ``plan_memory``  temporaries placed in one arena (one device allocation at run time);
5. ``codegen.ptx``  kernels -> one NVPTX module -> PTX for ``sm`` (cached on disk), with a
                    :class:`~mxc.codegen.ptx.Launch` (grid, block, mode) per kernel call.

The result, :class:`CudaGraph`, holds the PTX, the JSON-ready launch plan
(:meth:`CudaGraph.launch_plan`) and the variable/output slots; :meth:`CudaGraph.program`
binds it to a device (``runtime.cuda``) as a :class:`~mxc.runtime.cuda.GPUProgram`. Built
with ``emulate=True`` it also renders the CPU emulation of the same kernels
(``codegen.ptx_emu``), so a program can run on :class:`~mxc.codegen.ptx_emu.EmuDevice`.
Inference graphs only (no gradient section) for now.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..base import MXNetError
from ..codegen import ptx as P
from ..ir.dtypes import as_dtype
from ..ir.graph import Graph
from . import infer
from . import plan_memory as memplan
from .build import _entry_key, _fuse, _lower_node, _plan_memory
from .lower import LoweredKernel, SlotTable

PLAN_VERSION = 1


@dataclass
class CudaGraph:
    graph: Graph
    sm: str
    ptx: str
    module: P.GPUModule
    slots: SlotTable
    kernels: list                    # LoweredKernel per call, in run order
    launches: list                   # codegen.ptx.Launch per call
    var_slots: dict                  # variable name -> slot
    head_slots: list                 # slot per graph output
    shapes: dict
    types: dict
    memory: object = None            # plan_memory.MemoryPlan or None
    emu_module: object = None        # codegen.ptx.GPUModule rendered for the emulator
    extra: dict = field(default_factory=dict)

    def launch_plan(self) -> dict:
        """Everything a runtime needs besides the PTX, as plain JSON data."""
        kernels = []
        for lk, ln in zip(self.kernels, self.launches):
            k = lk.kernel
            offs = getattr(k, "offsets", None) or [0] * len(k.buffers)
            kernels.append({
                "name": ln.name, "grid": ln.grid, "block": ln.block, "smem": ln.smem,
                "smem_dynamic": 0, "n_tasks": ln.n_tasks, "mode": ln.mode, "sync": ln.sync,
                "slots": [int(s) for s in lk.slots],
                "offsets": [int(o) * b.dtype.itemsize for o, b in zip(offs, k.buffers)],
                "node": lk.node, "detail": ln.detail})
        mem = self.memory
        arena = {} if mem is None else {"arena_offsets": {str(s): int(o) for s, o in
                                                           mem.offsets.items()},
                                        "arena_bytes": int(mem.arena_bytes)}
        return {
            "version": PLAN_VERSION, "target": f"nvptx64-{self.sm}", "sm": self.sm,
            "convention": "k(i64 task_begin, i64 task_end, ptr buf0, ...); 1-D grid x block",
            "slots": [{"nbytes": int(n), "kind": kd, "name": nm} for n, kd, nm in
                      zip(self.slots.nbytes, self.slots.kinds, self.slots.names)],
            "kernels": kernels,
            "sections": {"forward": [0, len(kernels)]},
            "inputs": {n: int(s) for n, s in self.var_slots.items()},
            "outputs": [int(s) for s in self.head_slots],
            **arena,
        }

    def plan_json(self) -> str:
        return json.dumps(self.launch_plan(), indent=1)

    def program(self, device):
        """A :class:`~mxc.runtime.cuda.GPUProgram` of this graph on ``device`` (a
        ``runtime.cuda`` device or ``codegen.ptx_emu.EmuDevice``), storage allocated."""
        from ..runtime.cuda import GPUProgram

        if hasattr(device, "register"):
            if self.emu_module is None:
                raise MXNetError("this CudaGraph was built without emulate=True")
            device.register(self.ptx, self.emu_module)
        prog = GPUProgram(self.ptx, self.launch_plan(), device)
        prog.allocate()
        return prog

    def run(self, device, inputs: dict, params: dict | None = None) -> list:
        """Upload ``params`` and ``inputs`` (name -> array), run, download the outputs."""
        prog = self.program(device)
        vals = {**(params or {}), **inputs}
        for name, slot in self.var_slots.items():
            if name not in vals:
                raise MXNetError(f"no value for '{name}'")
            key = self._var_key(name)
            want = np.dtype(self.types[key])
            a = np.asarray(vals[name])
            if a.shape != tuple(self.shapes[key]):
                raise MXNetError(f"'{name}': expected shape {tuple(self.shapes[key])}, "
                                 f"got {a.shape}")
            prog.upload(slot, a.astype(want, copy=False))
        prog.run("forward")
        outs = []
        for e, slot in zip(self.graph.outputs, self.head_slots):
            k = _entry_key(e)
            outs.append(prog.download(slot, self.shapes[k], np.dtype(self.types[k])))
        prog.release()
        return outs

    def _var_key(self, name: str) -> tuple:
        for v in self.graph.variables():
            if v.name == name:
                return (v.uid, 0)
        raise KeyError(name)


@dataclass
class GPULowered:
    """A graph lowered for the GPU, before code generation."""

    kernels: list                    # LoweredKernel per call, in run order
    slots: SlotTable
    var_slots: dict
    entry_slot: dict
    shapes: dict
    types: dict
    memory: object = None


def lower_for_gpu(graph: Graph, shapes: dict, types: dict | None = None, *,
                  fusion: bool | None = None, plan_memory: bool = True) -> GPULowered:
    """Steps 1-4: infer, lower (GPU GEMM templates), fuse, plan memory."""
    shp = infer.infer_shapes(graph, shapes)
    tys = infer.infer_types(graph, dict(types or {}))
    slots = SlotTable()
    entry_slot: dict = {}
    buf_slot: dict = {}
    var_slots: dict = {}
    aux_uids = graph.mutable_variables()
    for n in graph.variables():
        s = shp[(n.uid, 0)]
        d = as_dtype(tys[(n.uid, 0)])
        slot = slots.new(math.prod(s) * d.itemsize, "aux" if n.uid in aux_uids else "input",
                         n.name)
        entry_slot[(n.uid, 0)] = slot
        var_slots[n.name] = slot
    lowered: list[LoweredKernel] = []
    with P.lowering_for_gpu():
        for node in graph.nodes:
            if not node.is_variable:
                _lower_node(node, shp, tys, False, slots, entry_slot, buf_slot, lowered)
    fused = _fuse(lowered, slots, len(lowered), graph, entry_slot, fusion)
    lowered = fused.kernels
    memory = None
    if memplan.enabled(plan_memory):
        lowered, memory = _plan_memory(lowered, slots, fused.n_fwd, graph, graph, entry_slot,
                                       {}, {}, {}, False)
    return GPULowered(lowered, slots, var_slots, entry_slot, shp, tys, memory)


def compile_graph_cuda(graph: Graph, shapes: dict, types: dict | None = None,
                       sm: str = "sm_80", *, fusion: bool | None = None,
                       plan_memory: bool = True, fast_math: bool = False,
                       emulate: bool = False) -> CudaGraph:
    """Compile ``graph`` (inference) to PTX for ``sm`` and a launch plan. Needs no GPU.

    ``fast_math`` uses the ex2/lg2/tanh.approx instructions for float32 exp, log, sigmoid and
    tanh; ``emulate`` also renders the CPU emulation (``CudaGraph.program(EmuDevice())``)."""
    if sm not in P.SM_PRESETS:
        raise MXNetError(f"unknown GPU target '{sm}'; presets: {', '.join(P.SM_PRESETS)}")
    lw = lower_for_gpu(graph, shapes, types, fusion=fusion, plan_memory=plan_memory)
    kernels = [lk.kernel for lk in lw.kernels]
    mod = P.render_gpu_module(kernels, fast_math=fast_math)
    mod.ptx = P.ir_to_ptx(mod.ir, sm)
    mod.sm = sm
    emu = P.render_gpu_module(kernels, emulate=True, fast_math=fast_math) if emulate else None
    head_slots = [lw.entry_slot[_entry_key(h)] for h in graph.outputs]
    return CudaGraph(graph, sm, mod.ptx, mod, lw.slots, lw.kernels, mod.launches,
                     lw.var_slots, head_slots, lw.shapes, lw.types, lw.memory, emu)
