"""Build a graph for an NVIDIA GPU: PTX text plus a launch plan, with no GPU needed.

The pipeline is ``build.compile_graph``'s up to machine code (``codegen=False``): infer,
gradient (when ``grad_req`` asks), lower -- inside ``codegen.ptx.lowering_for_gpu``, so
``ctx.gemm`` emits GPU GEMM templates --, fuse and plan memory, on the same kernel IR as the
CPU. Then the GPU back end: kernels -> one NVPTX module -> PTX for ``sm`` (cached on disk),
with a :class:`~mxc.codegen.ptx.Launch` (grid, block, mode) per kernel call.

The result, :class:`CudaGraph`, holds the PTX, the JSON-ready launch plan
(:meth:`CudaGraph.launch_plan`: slots, calls, sections, the memory plan's arena) and the
compiled graph's variable/output/gradient slots; :meth:`CudaGraph.program` binds it to a
device (``runtime.cuda``) as a :class:`~mxc.runtime.cuda.GPUProgram`. Built with
``emulate=True`` it also renders the CPU emulation of the same kernels (``codegen.ptx_emu``),
so the program can run on :class:`~mxc.codegen.ptx_emu.EmuDevice`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..base import MXNetError
from ..codegen import ptx as P
from ..ir.graph import Graph
from .build import CompiledGraph, _entry_key, compile_graph

PLAN_VERSION = 1


@dataclass
class CudaGraph:
    compiled: CompiledGraph          # the lowered graph (no CPU code): slots, calls, sections
    sm: str
    ptx: str
    module: P.GPUModule
    launches: list                   # codegen.ptx.Launch per call, in run order
    emu_module: object = None        # codegen.ptx.GPUModule rendered for the emulator

    graph = property(lambda self: self.compiled.graph)
    kernels = property(lambda self: self.compiled.kernels)      # LoweredKernel per call
    var_slots = property(lambda self: self.compiled.var_slots)
    head_slots = property(lambda self: self.compiled.head_slots)
    shapes = property(lambda self: self.compiled.shapes)
    types = property(lambda self: self.compiled.types)

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
        prog = self.compiled.program
        c = self.compiled
        return {
            "version": PLAN_VERSION, "target": f"nvptx64-{self.sm}", "sm": self.sm,
            "convention": "k(i64 task_begin, i64 task_end, ptr buf0, ...); 1-D grid x block",
            "slots": [{"nbytes": int(si.nbytes), "kind": si.kind, "name": si.name}
                      for si in prog.slots],
            "kernels": kernels,
            "sections": {n: [int(b), int(e)] for n, (b, e) in prog.sections.items()},
            "inputs": {n: int(s) for n, s in c.var_slots.items()},
            "outputs": [int(s) for s in c.head_slots],
            "head_grads": [int(s) for s in c.head_grad_slots],
            "grads": {n: int(s) for n, s in c.grad_slots.items()},
            "arena_offsets": {str(s): int(o) for s, o in prog.arena_offsets.items()},
            "arena_bytes": int(prog.arena_bytes),
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
                if name.startswith("__head_grad_"):
                    continue  # a training build's backward inputs
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


def lower_for_gpu(graph: Graph, shapes: dict, types: dict | None = None, *,
                  is_train: bool = False, grad_req: dict | None = None,
                  fusion: bool | None = None, plan_memory: bool = True) -> CompiledGraph:
    """The graph lowered for the GPU (GEMM templates from the spec), fused and memory-planned,
    without CPU code (``compile_graph(codegen=False)``)."""
    with P.lowering_for_gpu():
        return compile_graph(graph, shapes, types, is_train=is_train, grad_req=grad_req,
                             fusion=fusion, plan_memory=plan_memory, codegen=False)


def compile_graph_cuda(graph: Graph, shapes: dict, types: dict | None = None,
                       sm: str = "sm_80", *, is_train: bool = False,
                       grad_req: dict | None = None, fusion: bool | None = None,
                       plan_memory: bool = True, fast_math: bool = False,
                       emulate: bool = False) -> CudaGraph:
    """Compile ``graph`` to PTX for ``sm`` and a launch plan. Needs no GPU.

    ``grad_req`` (as for ``compile_graph``) adds a ``backward`` section; ``fast_math`` uses
    the ex2/lg2/tanh.approx instructions for float32 exp, log, sigmoid and tanh; ``emulate``
    also renders the CPU emulation (``CudaGraph.program(EmuDevice())``)."""
    if sm not in P.SM_PRESETS:
        raise MXNetError(f"unknown GPU target '{sm}'; presets: {', '.join(P.SM_PRESETS)}")
    cg = lower_for_gpu(graph, shapes, types, is_train=is_train, grad_req=grad_req,
                       fusion=fusion, plan_memory=plan_memory)
    return cuda_graph(cg, sm, fast_math=fast_math, emulate=emulate)


def cuda_graph(cg: CompiledGraph, sm: str = "sm_80", *, fast_math: bool = False,
               emulate: bool = False) -> CudaGraph:
    """The GPU back end for a graph already lowered by :func:`lower_for_gpu` (or by
    ``compile_graph(codegen=False)`` inside ``codegen.ptx.lowering_for_gpu()``, as the
    ``cuda-sm*`` artifact builds of ``compiler.aot`` do): PTX for ``sm`` and the launches."""
    if sm not in P.SM_PRESETS:
        raise MXNetError(f"unknown GPU target '{sm}'; presets: {', '.join(P.SM_PRESETS)}")
    kernels = [lk.kernel for lk in cg.kernels]
    mod = P.render_gpu_module(kernels, fast_math=fast_math)
    mod.ptx = P.ir_to_ptx(mod.ir, sm) if kernels else ""
    mod.sm = sm
    emu = P.render_gpu_module(kernels, emulate=True, fast_math=fast_math) if emulate else None
    return CudaGraph(cg, sm, mod.ptx, mod, mod.launches, emu)
