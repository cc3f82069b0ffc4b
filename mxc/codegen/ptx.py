"""The PTX back end: the kernel IR rendered for NVIDIA GPUs (``nvptx64-nvidia-cuda``).

The same :class:`~mxc.ir.kernel.Kernel` loop nests the CPU renderer turns into LLVM IR are
rendered here with GPU hooks (thread indices, shared memory, barriers, warp shuffles), by
subclassing :class:`~mxc.codegen.llvm_render.KernelRenderer`; LLVM's NVPTX target turns the
module into PTX text (``tm.emit_assembly``). GEMM template kernels get a GPU template of
their own (shared-memory tiles). Math is mxc's own ``mathlib`` (plain IR, inlined), so the PTX
calls no external function; ``fast_math=True`` uses the ``ex2/lg2/tanh.approx`` instructions
for float32 exp/exp2/log/log2/sigmoid/tanh instead. ``llvm.exp`` & co. are never emitted:
LLVM aborts the whole process on them for NVPTX.

Calling convention of a GPU kernel (documented in docs/gpu.md)::

    .entry NAME(i64 task_begin, i64 task_end, ptr buf0, ptr buf1, ...)

one device pointer per kernel buffer, in ``Kernel.buffers`` order (already offset by the
launch plan's byte offsets), and the task range ``[task_begin, task_end)`` of the CPU
convention; there is no scratch pointer (GPU templates use shared memory). Every kernel
covers its task range with a grid-stride loop, so any grid size is correct: the launch plan's
grid is a performance choice only (the CPU emulator in ``ptx_emu`` runs 1-2 blocks).

Thread mapping, chosen per kernel by :func:`plan_kernel`:

* ``thread`` -- one thread per task (grid-stride over tasks); the task's loops run serially
  in the thread. For kernels with many short rows (and everything the analysis cannot prove
  safe to split).
* ``row`` -- one block per task (grid-stride over tasks with ``blockIdx``). The task body's
  statements before its final vector loop run uniformly in every thread of the block, except
  reductions, which are *cooperative*: each thread reduces a strided share of the reduction
  space, then a warp-shuffle butterfly and a shared-memory tree across warps combine the
  partials (a softmax's row max and row sum, ``sum(x, axis=-1)``: a block per row). The
  final vector loop ``j`` is split across the block: one ``j`` per thread (``thread``
  group), or -- when the loop body itself reduces and there are fewer than 64 ``j`` (e.g.
  ``sum(x[4, 300, 20], axis=1)``) -- one ``j`` per warp with the reduction split over the
  32 lanes (``warp`` group), or the whole block per ``j`` when there are only one or two
  (``block`` group). Stores of a cooperative group are made by its first lane only.
* ``gemm`` -- the tiled GEMM template: a 64x64 tile of C per block of 16x16 threads, each
  thread a 4x4 register tile; 64x16 A and 16x64 B tiles staged in shared memory; any
  M/N/K, strides (transposes), batch, alpha/beta and bias; tiles walked grid-stride.

The vector loop of a ``row`` kernel is split only when its iterations are independent: every
local it reads is assigned earlier in the same iteration (or before the loop), every store
index depends on the loop variable and a stored buffer is loaded only at the stored index.
Buffers that alias (an in-place memory plan) are assumed to be read only at the element the
same iteration writes, the contract of in-place ops.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..base import CompileError
from ..ir import kernel as K
from ..ir.dtypes import DType
from .llvm_render import (
    FMF,
    INTRINSIC_DECLS,
    KernelRenderer,
    _collect_locals,
    _dedupe_declarations,
    _renumber,
    compute_dtype_name,
    float_literal,
    stype,
    vtype,
)

__all__ = ["SM_PRESETS", "GPUModule", "Launch", "build_ptx", "emit_ptx", "find_ptxas",
           "gemm_template", "gpu_lowering", "lowering_for_gpu", "plan_kernel", "render_gpu_module", "run_ptxas"]

TRIPLE = "nvptx64-nvidia-cuda"
#: GPU presets: name -> (LLVM cpu, LLVM features). LLVM 22 picks PTX ISA 7.0 for sm_80 and 7.8
#: for sm_90; ptxas 12+/13 accepts both.
SM_PRESETS = {
    "sm_75": ("sm_75", ""),
    "sm_80": ("sm_80", ""),
    "sm_86": ("sm_86", ""),
    "sm_89": ("sm_89", ""),
    "sm_90": ("sm_90", ""),
}
MAX_GRID = 65535        # blocks per launch; the grid-stride loops cover any task count
BLOCK = 256             # threads per block (row mode with reductions, thread mode)
WARP = 32
COOP_MIN = 32           # reductions shorter than this stay serial in one thread
GEMM_BM = GEMM_BN = 64  # C tile per block
GEMM_BK = 16            # K step staged in shared memory
GEMM_THREADS = 256      # 16 x 16 threads, a 4x4 register tile each


@dataclass
class Launch:
    """How to launch one kernel: ``grid`` x ``block`` threads over tasks ``[0, n_tasks)``."""

    name: str
    mode: str            # thread | row | gemm | empty
    grid: int
    block: int
    n_tasks: int
    smem: int = 0        # static shared memory (bytes), for information
    sync: bool = False   # uses barriers / warp shuffles (the emulator runs real threads)
    detail: str = ""     # e.g. "j=warp coop=2"

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# analysis: which mapping a kernel gets
# ---------------------------------------------------------------------------------------------
@dataclass
class Coop:
    """A cooperative reduction loop: ``acc = combine(acc, ...)`` over ``chain`` (the loop and
    perfectly nested inner loops, flattened when all extents are constant)."""

    group: str           # block | warp
    acc: K.Local
    op: str              # add | mul | max | min
    ident: K.Const
    chain: list


@dataclass
class Plan:
    mode: str                           # thread | row | empty
    block: int
    grid: int
    coop: dict = field(default_factory=dict)   # id(For) -> Coop
    jloop: object = None                # the final vector loop (row mode)
    jgroup: str = "thread"              # thread | warp | block

    @property
    def sync(self) -> bool:
        return bool(self.coop)


def _expr_locals(e: K.Expr, out: list) -> None:
    if isinstance(e, K.Local):
        out.append(e)
    for c in K.children(e):
        _expr_locals(c, out)


def _stmt_reads(s) -> list:
    """Locals read by the expressions of ``s`` itself (not its nested statements)."""
    out: list = []
    if isinstance(s, K.Store):
        _expr_locals(s.index, out)
        _expr_locals(s.value, out)
    elif isinstance(s, K.Assign):
        _expr_locals(s.value, out)
    elif isinstance(s, K.For):
        _expr_locals(s.start, out)
        _expr_locals(s.extent, out)
    elif isinstance(s, K.If):
        _expr_locals(s.cond, out)
    return out


def _walk(stmts: list):
    for s in stmts:
        yield s
        if isinstance(s, K.For):
            yield from _walk(s.body)
        elif isinstance(s, K.If):
            yield from _walk(s.then)
            yield from _walk(s.otherwise)


def _assigned(stmts: list) -> set:
    return {s.local for s in _walk(stmts) if isinstance(s, K.Assign)}


def _has_store(stmts: list) -> bool:
    return any(isinstance(s, K.Store) for s in _walk(stmts))


def _defined_before_use(stmts: list, defined: set, region: set) -> bool:
    """True when every read of a local in ``region`` follows an assignment of it in the same
    pass over ``stmts`` (no value flows from one iteration of the enclosing loop to the next)."""
    for s in stmts:
        if any(loc in region and loc not in defined for loc in _stmt_reads(s)):
            return False
        if isinstance(s, K.Assign):
            defined.add(s.local)
        elif isinstance(s, K.For):
            if not _defined_before_use(s.body, set(defined), region):
                return False
        elif isinstance(s, K.If):
            d1, d2 = set(defined), set(defined)
            if not (_defined_before_use(s.then, d1, region)
                    and _defined_before_use(s.otherwise, d2, region)):
                return False
            defined |= d1 & d2
    return True


def _loads(e: K.Expr, out: list) -> None:
    if isinstance(e, K.Load):
        out.append(e)
    for c in K.children(e):
        _loads(c, out)


def _parallel_safe(loop: K.For) -> bool:
    """Iterations of ``loop`` may run in any order, in different threads."""
    body = loop.body
    if not _defined_before_use(body, set(), _assigned(body)):
        return False
    stores = [s for s in _walk(body) if isinstance(s, K.Store)]
    stored: dict = {}
    single = (_extent_bound(loop.extent) or 2) <= 1
    for s in stores:
        if loop.var not in K.free_vars(s.index) and not single:
            return False
        stored.setdefault(s.buf, set()).add(s.index)
    if not stored:
        return True
    loads: list = []
    for s in _walk(body):
        if isinstance(s, K.Store):
            _loads(s.index, loads)
            _loads(s.value, loads)
        elif isinstance(s, K.Assign):
            _loads(s.value, loads)
        elif isinstance(s, K.For):
            _loads(s.start, loads)
            _loads(s.extent, loads)
        elif isinstance(s, K.If):
            _loads(s.cond, loads)
    return all(ld.index in stored[ld.buf] for ld in loads if ld.buf in stored)


def _const_int(e) -> int | None:
    return int(e.value) if isinstance(e, K.Const) and e.dtype.kind in "iu" else None


def _extent_bound(e: K.Expr) -> int | None:
    """An upper bound of a loop extent, when one is visible."""
    c = _const_int(e)
    if c is not None:
        return c
    if isinstance(e, K.Bin) and e.op == "min":
        bs = [b for b in (_extent_bound(e.a), _extent_bound(e.b)) if b is not None]
        return min(bs) if bs else None
    return None


def _is_identity(op: str, c: K.Const) -> bool:
    d = c.dtype
    v = c.value
    if op == "add":
        return v == 0
    if op == "mul":
        return v == 1
    if d.kind == "f":
        return v == (-math.inf if op == "max" else math.inf)
    if d.kind == "b":
        return bool(v) == (op == "min")
    bits = d.itemsize * 8
    if d.kind == "u":
        return v == (0 if op == "max" else (1 << bits) - 1)
    return v == (-(1 << (bits - 1)) if op == "max" else (1 << (bits - 1)) - 1)


def _count_local(stmts: list, loc: K.Local) -> tuple[int, int]:
    """(reads, assignments) of ``loc`` in ``stmts``."""
    reads = assigns = 0
    for s in _walk(stmts):
        reads += sum(1 for x in _stmt_reads(s) if x == loc)
        if isinstance(s, K.Assign) and s.local == loc:
            assigns += 1
    return reads, assigns


def _match_coop(init, loop, group: str) -> Coop | None:
    """``init; loop`` is ``acc = identity; for ...: ...; acc = acc (op) value``?"""
    if not (isinstance(init, K.Assign) and isinstance(init.value, K.Const)
            and isinstance(loop, K.For)):
        return None
    acc = init.local
    chain = [loop]
    inner = loop
    while inner.body and isinstance(inner.body[-1], K.For):
        inner = inner.body[-1]
        chain.append(inner)
    last = inner.body[-1] if inner.body else None
    if not (isinstance(last, K.Assign) and last.local == acc and isinstance(last.value, K.Bin)
            and last.value.op in ("add", "mul", "max", "min") and last.value.a == acc):
        return None
    op = last.value.op
    if not _is_identity(op, init.value) or _count_local(loop.body, acc) != (1, 1):
        return None
    if _has_store(loop.body):
        return None
    if not _defined_before_use(loop.body, {acc}, _assigned(loop.body)):
        return None
    # flatten perfectly nested constant loops into one iteration space
    flat = [loop]
    for lp in chain[1:]:
        parent = flat[-1]
        if len(parent.body) == 1 and _const_int(lp.extent) is not None \
                and _const_int(parent.extent) is not None and isinstance(lp.start, K.Const) \
                and isinstance(parent.start, K.Const):
            flat.append(lp)
        else:
            break
    total = 1
    for lp in flat:
        b = _extent_bound(lp.extent)
        if b is None:
            total = None
            break
        total *= b
    if total is not None and total < COOP_MIN:
        return None
    return Coop(group, acc, op, init.value, flat)


def _find_coops(stmts: list, group: str) -> dict:
    out = {}
    for i in range(1, len(stmts)):
        c = _match_coop(stmts[i - 1], stmts[i], group)
        if c is not None:
            out[id(stmts[i])] = c
    return out


def _pow2ceil(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def plan_kernel(k: K.Kernel) -> Plan:
    """Choose the thread mapping of ``k`` (see the module docstring)."""
    n = int(k.n_tasks)
    if n <= 0:
        return Plan("empty", 1, 0)
    body = k.body
    if body and isinstance(body[-1], K.For) and body[-1].kind == "vector" \
            and not _has_store(body[:-1]) and _parallel_safe(body[-1]):
        jl = body[-1]
        pre = _find_coops(body[:-1], "block")
        jb = _extent_bound(jl.extent)
        top_stores = all(not isinstance(s, (K.For, K.If)) or not _has_store([s])
                         for s in jl.body)
        jgroup = "thread"
        jcoop: dict = {}
        if top_stores and jb is not None and jb < 2 * WARP:
            # few j: reduce each with a warp (or the block); with many, a thread per j keeps
            # the loads of neighbouring threads adjacent (j-level reductions are strided)
            jgroup = "block" if jb <= 2 else "warp"
            jcoop = _find_coops(jl.body, jgroup)
            if not jcoop:
                jgroup = "thread"
        if pre or jcoop or jb is None or jb >= WARP:
            block = BLOCK if (pre or jcoop or jb is None) else min(BLOCK, _pow2ceil(jb))
            return Plan("row", block, min(n, MAX_GRID), {**pre, **jcoop}, jl, jgroup)
    block = min(BLOCK, max(WARP, -(-n // WARP) * WARP))
    return Plan("thread", block, min(-(-n // block), MAX_GRID))


# ---------------------------------------------------------------------------------------------
# target hooks: real NVPTX or the CPU emulation of it (codegen.ptx_emu)
# ---------------------------------------------------------------------------------------------
class Hooks:
    """What differs between PTX and its CPU emulation: signature, thread indices, shared
    memory's address space, barriers and shuffles."""

    def __init__(self, emulate: bool = False) -> None:
        self.emulate = emulate
        self.sas = "" if emulate else " addrspace(3)"    # shared memory address space
        self.sptr = "ptr" + self.sas

    def header(self, name: str, nbufs: int) -> str:
        if self.emulate:
            return (f"define void @{name}(i64 %task_begin, i64 %task_end, ptr %args, "
                    "i32 %emu.tid, i32 %emu.ctaid, i32 %emu.nctaid, ptr %emu.ctx) #0 {")
        params = "".join(f", ptr %arg{i}" for i in range(nbufs))
        return f"define ptx_kernel void @{name}(i64 %task_begin, i64 %task_end{params}) #0 {{"

    def prologue(self, nbufs: int) -> list[str]:
        """Entry-block lines defining %g.tid32, %g.tid, %g.ctaid, %g.nctaid (i64) and the
        buffer pointers %arg<i>."""
        out = []
        if self.emulate:
            for i in range(nbufs):
                out += [f"%g.ap{i} = getelementptr inbounds ptr, ptr %args, i64 {i}",
                        f"%arg{i} = load ptr, ptr %g.ap{i}, align 8"]
            src = {"tid": "%emu.tid", "ctaid": "%emu.ctaid", "nctaid": "%emu.nctaid"}
            out += [f"%g.{n}32 = add i32 {v}, 0" for n, v in src.items()]
        else:
            for n in ("tid", "ctaid", "nctaid"):
                out.append(f"%g.{n}32 = call i32 @llvm.nvvm.read.ptx.sreg.{n}.x()")
        out += [f"%g.{n} = zext i32 %g.{n}32 to i64" for n in ("tid", "ctaid", "nctaid")]
        return out

    def shared(self, name: str, ty: str, align: int = 16) -> str:
        init = "zeroinitializer" if self.emulate else "undef"
        return f"@{name} = internal{self.sas} global {ty} {init}, align {align}"

    def barrier(self) -> str:
        if self.emulate:
            return "call void @mxc_emu_bar(i32 %g.tid32, ptr %emu.ctx)"
        return "call void @llvm.nvvm.barrier0()"

    def shfl(self, dst: str, v: str, arg: int | str, mode: str) -> str:
        """``dst = shfl.sync.<mode>.b32 v`` over the full warp (mode bfly | idx)."""
        if self.emulate:
            m = 0 if mode == "bfly" else 1
            return (f"{dst} = call i32 @mxc_emu_shfl(i32 {v}, i32 {arg}, i32 {m}, "
                    "i32 %g.tid32, ptr %emu.ctx)")
        return (f"{dst} = call i32 @llvm.nvvm.shfl.sync.{mode}.i32(i32 -1, i32 {v}, "
                f"i32 {arg}, i32 31)")

    def decls(self) -> str:
        fma = ("declare float @llvm.fma.f32(float, float, float)\n"
               "declare double @llvm.fma.f64(double, double, double)\n")
        if self.emulate:
            return fma + EMU_SYNC_IR
        return fma + ("declare i32 @llvm.nvvm.read.ptx.sreg.tid.x()\n"
                "declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()\n"
                "declare i32 @llvm.nvvm.read.ptx.sreg.nctaid.x()\n"
                "declare void @llvm.nvvm.barrier0()\n"
                "declare i32 @llvm.nvvm.shfl.sync.bfly.i32(i32, i32, i32, i32)\n"
                "declare i32 @llvm.nvvm.shfl.sync.idx.i32(i32, i32, i32, i32)\n"
                "declare float @llvm.nvvm.ex2.approx.f(float)\n"
                "declare float @llvm.nvvm.lg2.approx.f(float)\n"
                "declare float @llvm.nvvm.tanh.approx.f32(float)\n")


#: barriers and shuffles of the CPU emulation (codegen.ptx_emu), on pthread barriers; the
#: context holds the block's barrier, one barrier per warp, then the shuffle exchange slots
EMU_BARRIER_BYTES = 128
EMU_CTX_BYTES = EMU_BARRIER_BYTES * 33 + 4 * 1024
EMU_SYNC_IR = f"""declare i32 @pthread_barrier_wait(ptr)
define internal void @mxc_emu_bar(i32 %tid, ptr %ctx) {{
  %r = call i32 @pthread_barrier_wait(ptr %ctx)
  ret void
}}
define internal i32 @mxc_emu_shfl(i32 %v, i32 %arg, i32 %mode, i32 %tid, ptr %ctx) {{
  %w = lshr i32 %tid, 5
  %lane = and i32 %tid, 31
  %xb = getelementptr i8, ptr %ctx, i64 {EMU_BARRIER_BYTES * 33}
  %tid64 = zext i32 %tid to i64
  %mine = getelementptr i32, ptr %xb, i64 %tid64
  store volatile i32 %v, ptr %mine
  %w1 = add i32 %w, 1
  %w64 = zext i32 %w1 to i64
  %wo = mul i64 %w64, {EMU_BARRIER_BYTES}
  %wb = getelementptr i8, ptr %ctx, i64 %wo
  %r1 = call i32 @pthread_barrier_wait(ptr %wb)
  %x = xor i32 %lane, %arg
  %isb = icmp eq i32 %mode, 0
  %s0 = select i1 %isb, i32 %x, i32 %arg
  %s1 = and i32 %s0, 31
  %ws = shl i32 %w, 5
  %src = add i32 %ws, %s1
  %src64 = zext i32 %src to i64
  %theirs = getelementptr i32, ptr %xb, i64 %src64
  %r = load volatile i32, ptr %theirs
  %r2 = call i32 @pthread_barrier_wait(ptr %wb)
  ret i32 %r
}}
"""

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
FAST_FUNCS = ("exp", "exp2", "log", "log2", "sigmoid", "tanh")


# ---------------------------------------------------------------------------------------------
# the loop-nest renderer
# ---------------------------------------------------------------------------------------------
class GPURenderer(KernelRenderer):
    """Renders one ``Kernel`` for the GPU following its :class:`Plan`."""

    def __init__(self, math_funcs: set, need_conv: list, hooks: Hooks,
                 fast_math: bool = False) -> None:
        super().__init__(math_funcs, need_conv)
        self.hooks = hooks
        self.fast_math = fast_math
        self.plan: Plan | None = None
        self.leader: str | None = None   # i1: this thread stores for its cooperative group
        self.shared_decls: list[str] = []
        self.kname = ""
        self._vars = 0

    # -- small emitters ------------------------------------------------------------------------
    def add64(self, a: str, b: str) -> str:
        r = self.tmp("g")
        self.emit(f"{r} = add i64 {a}, {b}")
        return r

    def if_(self, cond: str, body) -> None:
        t, x = self.tmp("Lif"), self.tmp("Lfi")
        self.emit(f"br i1 {cond}, label {t}, label {x}")
        self.label(t)
        body()
        self.emit(f"br label {x}")
        self.label(x)

    def strided_loop(self, var: K.Var | None, start: str, end: str, step: str, body) -> str:
        """``for var = start; var < end; var += step: body()``; returns the iv's name."""
        pre = self.block
        h, b, latch, x = (self.tmp("Lh"), self.tmp("Lb"), self.tmp("Ll"), self.tmp("Lx"))
        iv, nxt = self.tmp("iv"), self.tmp("inext")
        self.emit(f"br label {h}")
        self.label(h)
        self.emit(f"{iv} = phi i64 [ {start}, {pre} ], [ {nxt}, {latch} ]")
        c = self.tmp("c")
        self.emit(f"{c} = icmp slt i64 {iv}, {end}")
        self.emit(f"br i1 {c}, label {b}, label {x}")
        self.label(b)
        if var is not None:
            self.env[var] = iv
        self.memo.append({})
        body(iv)
        self.memo.pop()
        self.emit(f"br label {latch}")
        self.label(latch)
        self.emit(f"{nxt} = add nsw i64 {iv}, {step}")
        self.emit(f"br label {h}")
        self.label(x)
        if var is not None:
            del self.env[var]
        return iv

    def tmpvar(self, value: str, dtype: DType) -> K.Var:
        """An expression standing for an already computed SSA value."""
        self._vars += 1
        v = K.Var(f"__ssa{self._vars}", dtype)
        self.env[v] = value
        return v

    # -- warp and block reductions ---------------------------------------------------------------
    def shuffle(self, x: str, t: str, arg, mode: str) -> str:
        h = self.hooks
        if t == "i32":
            r = self.tmp("sh")
            self.emit(h.shfl(r, x, arg, mode))
            return r
        if t == "float":
            i, r, f = self.tmp("sh"), self.tmp("sh"), self.tmp("sh")
            self.emit(f"{i} = bitcast float {x} to i32")
            self.emit(h.shfl(r, i, arg, mode))
            self.emit(f"{f} = bitcast i32 {r} to float")
            return f
        if t in ("i64", "double"):
            w = x
            if t == "double":
                w = self.tmp("sh")
                self.emit(f"{w} = bitcast double {x} to i64")
            lo, hi0, hi = self.tmp("sh"), self.tmp("sh"), self.tmp("sh")
            self.emit(f"{lo} = trunc i64 {w} to i32")
            self.emit(f"{hi0} = lshr i64 {w}, 32")
            self.emit(f"{hi} = trunc i64 {hi0} to i32")
            slo, shi = self.tmp("sh"), self.tmp("sh")
            self.emit(h.shfl(slo, lo, arg, mode))
            self.emit(h.shfl(shi, hi, arg, mode))
            a, b, c, r = self.tmp("sh"), self.tmp("sh"), self.tmp("sh"), self.tmp("sh")
            self.emit(f"{a} = zext i32 {slo} to i64")
            self.emit(f"{b} = zext i32 {shi} to i64")
            self.emit(f"{c} = shl i64 {b}, 32")
            self.emit(f"{r} = or i64 {a}, {c}")
            if t == "double":
                d = self.tmp("sh")
                self.emit(f"{d} = bitcast i64 {r} to double")
                return d
            return r
        # i1 / i8 / i16
        w, r, n = self.tmp("sh"), self.tmp("sh"), self.tmp("sh")
        self.emit(f"{w} = zext {t} {x} to i32")
        self.emit(h.shfl(r, w, arg, mode))
        self.emit(f"{n} = trunc i32 {r} to {t}")
        return n

    def combine(self, op: str, x: str, y: str, d: DType) -> str:
        return self.binop(op, self.tmpvar(x, d), self.tmpvar(y, d), d)

    def warp_allreduce(self, x: str, op: str, d: DType) -> str:
        t = vtype(d)
        for m in (16, 8, 4, 2, 1):
            y = self.shuffle(x, t, m, "bfly")
            x = self.combine(op, x, y, d)
        return x

    def group_reduce(self, c: Coop) -> None:
        """Combine every thread's partial ``c.acc`` over its group; all get the result."""
        d = c.acc.dtype
        t = vtype(d)
        slot = self.locals[c.acc]
        x = self.tmp("red")
        self.emit(f"{x} = load {t}, ptr {slot}")
        x = self.warp_allreduce(x, c.op, d)
        B = self.plan.block
        if c.group == "block" and B > WARP:
            nw = B // WARP
            red = f"@{self.kname}_red"
            if red not in "".join(self.shared_decls):
                self.shared_decls.append(self.hooks.shared(red[1:], "[32 x i64]", 8))
            sp = self.hooks.sptr
            is0 = self.tmp("c")
            self.emit(f"{is0} = icmp eq i64 %g.lane, 0")

            def put():
                p = self.tmp("p")
                self.emit(f"{p} = getelementptr [32 x i64], {sp} {red}, i64 0, i64 %g.warp")
                self.emit(f"store {t} {x}, {sp} {p}")
            self.if_(is0, put)
            self.emit(self.hooks.barrier())
            inr, idx, p, v, y = (self.tmp("r") for _ in range(5))
            self.emit(f"{inr} = icmp ult i64 %g.lane, {nw}")
            self.emit(f"{idx} = and i64 %g.lane, {nw - 1}")
            self.emit(f"{p} = getelementptr [32 x i64], {sp} {red}, i64 0, i64 {idx}")
            self.emit(f"{v} = load {t}, {sp} {p}")
            ident = self.value(c.ident)
            self.emit(f"{y} = select i1 {inr}, {t} {v}, {t} {ident}")
            x = self.warp_allreduce(y, c.op, d)
        x = self.shuffle(x, t, 0, "idx")   # every lane takes lane 0's bits: one result
        self.emit(f"store {t} {x}, ptr {slot}")
        if c.group == "block" and B > WARP:
            self.emit(self.hooks.barrier())   # the shared slots may be reused right after

    def coop_loop(self, s: K.For, c: Coop) -> None:
        if c.group == "block":
            idx, size = "%g.tid", str(self.plan.block)
        else:
            idx, size = "%g.lane", str(WARP)
        if len(c.chain) == 1:
            start = self.value(s.start)
            end = self.add64(start, self.value(s.extent))
            self.strided_loop(s.var, self.add64(start, idx), end, size,
                              lambda iv: self.stmts(s.body))
        else:
            exts = [_const_int(lp.extent) for lp in c.chain]
            total = math.prod(exts)
            inner = c.chain[-1]

            def body(f: str) -> None:
                rest = 1
                for lp, e in reversed(list(zip(c.chain, exts))):
                    q, r, v = self.tmp("q"), self.tmp("q"), self.tmp("q")
                    self.emit(f"{q} = udiv i64 {f}, {rest}")
                    self.emit(f"{r} = urem i64 {q}, {e}")
                    self.emit(f"{v} = add i64 {r}, {self.value(lp.start)}")
                    self.env[lp.var] = v
                    rest *= e
                self.stmts(inner.body)
                for lp in c.chain:
                    del self.env[lp.var]
            self.strided_loop(None, idx, str(total), size, body)
        self.group_reduce(c)

    # -- statements -------------------------------------------------------------------------
    def stmt(self, s) -> None:
        if isinstance(s, K.For):
            c = self.plan.coop.get(id(s))
            if c is not None:
                self.coop_loop(s, c)
                return
            if s is self.plan.jloop:
                self.vector_loop(s)
                return
            start = self.value(s.start)
            end = self.add64(start, self.value(s.extent))
            self.strided_loop(s.var, start, end, "1", lambda iv: self.stmts(s.body))
            return
        if isinstance(s, K.Store) and self.leader is not None:
            idx = self.value(s.index)
            v = self.value(s.value)
            sv = self.to_storage(v, s.buf.dtype)
            st = stype(s.buf.dtype)

            def put():
                p = self.tmp("p")
                self.emit(f"{p} = getelementptr inbounds {st}, ptr {self.bufptr[s.buf]}, "
                          f"i64 {idx}")
                self.emit(f"store {st} {sv}, ptr {p}, align {s.buf.dtype.itemsize}")
            self.if_(self.leader, put)
            self.forget_loads()
            return
        super().stmt(s)

    def vector_loop(self, s: K.For) -> None:
        """The final vector loop of a row-mode task, split over the block."""
        g = self.plan.jgroup
        start = self.value(s.start)
        end = self.add64(start, self.value(s.extent))
        if g == "thread":
            self.strided_loop(s.var, self.add64(start, "%g.tid"), end, str(self.plan.block),
                              lambda iv: self.stmts(s.body))
            return
        if g == "warp":
            first, step, lead = self.add64(start, "%g.warp"), str(self.plan.block // WARP), \
                "%g.lane0"
        else:
            first, step, lead = start, "1", "%g.tid0"
        saved = self.leader
        self.leader = lead
        self.strided_loop(s.var, first, end, step, lambda iv: self.stmts(s.body))
        self.leader = saved

    # -- math -------------------------------------------------------------------------------
    def call_named(self, func: str, d: DType, args: list) -> str:
        if not (self.fast_math and func in FAST_FUNCS and compute_dtype_name(d) == "float32"):
            return super().call_named(func, d, args)
        x = args[0]

        def ex2(v: str) -> str:
            if self.hooks.emulate:
                return super(GPURenderer, self).call_named("exp2", d, [v])
            r = self.tmp("fx")
            self.emit(f"{r} = call float @llvm.nvvm.ex2.approx.f(float {v})")
            return r

        def lg2(v: str) -> str:
            if self.hooks.emulate:
                return super(GPURenderer, self).call_named("log2", d, [v])
            r = self.tmp("fx")
            self.emit(f"{r} = call float @llvm.nvvm.lg2.approx.f(float {v})")
            return r

        def fmul(a: str, c: float) -> str:
            r = self.tmp("fx")
            self.emit(f"{r} = fmul {FMF} float {a}, {float_literal(c, 'float')}")
            return r

        if func == "exp2":
            return ex2(x)
        if func == "exp":
            return ex2(fmul(x, _LOG2E))
        if func == "log2":
            return lg2(x)
        if func == "log":
            return fmul(lg2(x), _LN2)
        if func == "sigmoid":
            e = ex2(fmul(x, -_LOG2E))
            s, r = self.tmp("fx"), self.tmp("fx")
            self.emit(f"{s} = fadd {FMF} float {e}, {float_literal(1.0, 'float')}")
            self.emit(f"{r} = fdiv {FMF} float {float_literal(1.0, 'float')}, {s}")
            return r
        # tanh
        if self.hooks.emulate:
            return super().call_named("tanh", d, [x])
        r = self.tmp("fx")
        self.emit(f"{r} = call float @llvm.nvvm.tanh.approx.f32(float {x})")
        return r

    # -- kernel -------------------------------------------------------------------------------
    def render_gpu(self, k: K.Kernel, plan: Plan) -> str:
        self.plan = plan
        self.kname = k.name
        self.lines = []
        self.shared_decls = []
        self.label("%entry")
        for line in self.hooks.prologue(len(k.buffers)):
            self.emit(line)
        self.emit("%g.lane = and i64 %g.tid, 31")
        self.emit("%g.warp = lshr i64 %g.tid, 5")
        self.emit("%g.lane0 = icmp eq i64 %g.lane, 0")
        self.emit("%g.tid0 = icmp eq i64 %g.tid, 0")
        for i, buf in enumerate(k.buffers):
            self.bufptr[buf] = f"%arg{i}"
        for loc in _collect_locals(k.body):
            a = self.tmp("loc")
            self.emit(f"{a} = alloca {vtype(loc.dtype)}, align 8")
            self.locals[loc] = a
        B = plan.block
        if plan.mode == "thread":
            gid, gsz, first = self.tmp("g"), self.tmp("g"), None
            self.emit(f"{gid} = mul i64 %g.ctaid, {B}")
            self.emit(f"{gsz} = mul i64 %g.nctaid, {B}")
            g2 = self.add64(gid, "%g.tid")
            first = self.add64("%task_begin", g2)
            self.strided_loop(k.task_var, first, "%task_end", gsz,
                              lambda iv: self.stmts(k.body))
        elif plan.mode == "row":
            first = self.add64("%task_begin", "%g.ctaid")
            self.strided_loop(k.task_var, first, "%task_end", "%g.nctaid",
                              lambda iv: self.stmts(k.body))
        self.emit("ret void")
        head = self.hooks.header(k.name, len(k.buffers))
        return "\n".join(self.shared_decls + [head] + self.lines + ["}", ""])


# ---------------------------------------------------------------------------------------------
# GEMM template
# ---------------------------------------------------------------------------------------------
_gpu_lowering: contextvars.ContextVar = contextvars.ContextVar("mxc_gpu_lowering", default=False)


@contextlib.contextmanager
def lowering_for_gpu():
    """Inside the block, ``LowerCtx.gemm`` emits GPU GEMM templates (:func:`gemm_template`)
    instead of generating the CPU template's LLVM IR."""
    tok = _gpu_lowering.set(True)
    try:
        yield
    finally:
        _gpu_lowering.reset(tok)


def gpu_lowering() -> bool:
    return _gpu_lowering.get()


def gemm_template(spec, bufs: list, cost: int = 0) -> K.TemplateKernel:
    """The TemplateKernel ``ctx.gemm`` emits when lowering for the GPU: it carries the spec,
    the GPU renderer builds the tiled kernel from it (no CPU IR is generated)."""
    tiles = spec.batch * -(-spec.M // GEMM_BM) * -(-spec.N // GEMM_BN)
    kern = K.TemplateKernel("__K__", list(bufs), "", tiles, 0,
                            cost=cost or 2 * spec.batch * spec.M * spec.N * spec.K, note="gemm",
                            writes=(2,))
    kern.gemm_spec = spec  # type: ignore[attr-defined]
    return kern


def gemm_ir(spec, name: str, hooks: Hooks) -> tuple[str, Launch]:
    """LLVM IR of the shared-memory tiled GEMM for ``spec`` (a ``codegen.gemm.GemmSpec``)."""
    if spec.dtype not in ("float32", "float64"):
        raise CompileError(f"GPU GEMM: dtype {spec.dtype} is not supported (float32/float64)")
    T = "float" if spec.dtype == "float32" else "double"
    es = 4 if T == "float" else 8
    sfx = "f32" if T == "float" else "f64"
    M, N, Kd, batch = spec.M, spec.N, spec.K, spec.batch
    if min(M, N, Kd, batch) <= 0:
        raise CompileError(f"GPU GEMM: empty problem {batch}x{M}x{N}x{Kd} (handled by the caller)")
    sab, sam, sak = spec.a_strides
    sbb, sbk, sbn = spec.b_strides
    scb, scm, scn = spec.c_strides
    BM, BN, BK, P = GEMM_BM, GEMM_BN, GEMM_BK, 1
    tm, tn = -(-M // BM), -(-N // BN)
    ntiles = batch * tm * tn
    sty_a = f"[{BK} x [{BM + P} x {T}]]"
    sty_b = f"[{BK} x [{BN + P} x {T}]]"
    sp = hooks.sptr
    L: list[str] = []
    cnt = [0]

    def t(p: str = "t") -> str:
        cnt[0] += 1
        return f"%{p}{cnt[0]}"

    def op(text: str, p: str = "t") -> str:
        r = t(p)
        L.append(f"  {r} = {text}")
        return r

    def ins(text: str) -> None:
        L.append(f"  {text}")

    def lab(n: str) -> None:
        L.append(f"{n}:")

    zero = float_literal(0.0, T)
    nb = 4 if spec.bias else 3
    L.append(hooks.header(name, nb))
    lab("entry")
    for line in hooks.prologue(nb):
        ins(line)
    ins("%tx = and i64 %g.tid, 15")
    ins("%ty = lshr i64 %g.tid, 4")
    for i in range(4):
        for j in range(4):
            ins(f"%acc{i}{j} = alloca {T}, align {es}")
    ins("%t0 = add i64 %task_begin, %g.ctaid")
    ins("br label %tile.h")
    lab("tile.h")
    ins("%t = phi i64 [ %t0, %entry ], [ %t.next, %tile.latch ]")
    ins("%t.c = icmp slt i64 %t, %task_end")
    ins("br i1 %t.c, label %tile.b, label %exit")
    lab("tile.b")
    ins(f"%bi = udiv i64 %t, {tm * tn}")
    ins(f"%tr = urem i64 %t, {tm * tn}")
    ins(f"%tmi = udiv i64 %tr, {tn}")
    ins(f"%tni = urem i64 %tr, {tn}")
    ins(f"%m0 = mul i64 %tmi, {BM}")
    ins(f"%n0 = mul i64 %tni, {BN}")
    ins(f"%aoff = mul i64 %bi, {sab}")
    ins(f"%boff = mul i64 %bi, {sbb}")
    ins(f"%coff = mul i64 %bi, {scb}")
    ins(f"%Ab = getelementptr {T}, ptr %arg0, i64 %aoff")
    ins(f"%Bb = getelementptr {T}, ptr %arg1, i64 %boff")
    ins(f"%Cb = getelementptr {T}, ptr %arg2, i64 %coff")
    for i in range(4):
        for j in range(4):
            ins(f"store {T} {zero}, ptr %acc{i}{j}")
    ins("br label %k.h")
    lab("k.h")
    ins("%k0 = phi i64 [ 0, %tile.b ], [ %k0.next, %k.b ]")
    ins(f"%k.c = icmp slt i64 %k0, {Kd}")
    ins("br i1 %k.c, label %k.b, label %epi")
    lab("k.b")

    def stage(base: str, rows: int, rows_n: int, s_row: int, s_k: int, row0: str,
              shared: str, sty: str, k_fast: bool) -> None:
        """Copy a (rows x BK) block of an operand (rows along M or N) into shared[k][row]."""
        for r in range(4):
            if k_fast:      # consecutive threads read consecutive k
                kk = op("and i64 %g.tid, 15")
                rr0 = op("lshr i64 %g.tid, 4")
                rr = op(f"add i64 {rr0}, {16 * r}")
            else:           # consecutive threads read consecutive rows
                rr = op(f"and i64 %g.tid, {rows - 1}")
                kk0 = op(f"lshr i64 %g.tid, {int(math.log2(rows))}")
                kk = op(f"add i64 {kk0}, {(GEMM_THREADS // rows) * r}")
            gr = op(f"add i64 {row0}, {rr}")
            gk = op(f"add i64 %k0, {kk}")
            okr = op(f"icmp slt i64 {gr}, {rows_n}")
            okk = op(f"icmp slt i64 {gk}, {Kd}")
            ok = op(f"and i1 {okr}, {okk}")
            cr = op(f"select i1 {okr}, i64 {gr}, i64 {rows_n - 1}")
            ck = op(f"select i1 {okk}, i64 {gk}, i64 {Kd - 1}")
            o1 = op(f"mul i64 {cr}, {s_row}")
            o2 = op(f"mul i64 {ck}, {s_k}")
            o = op(f"add i64 {o1}, {o2}")
            p = op(f"getelementptr {T}, ptr {base}, i64 {o}")
            v = op(f"load {T}, ptr {p}, align {es}")
            v2 = op(f"select i1 {ok}, {T} {v}, {T} {zero}")
            q = op(f"getelementptr {sty}, {sp} {shared}, i64 0, i64 {kk}, i64 {rr}")
            ins(f"store {T} {v2}, {sp} {q}, align {es}")

    As, Bs = f"@{name}_As", f"@{name}_Bs"
    # the operand rows (A: m, B: n) are read along their contiguous stride when it is 1
    stage("%Ab", BM, M, sam, sak, "%m0", As, sty_a, k_fast=(sak == 1 and sam != 1))
    stage("%Bb", BN, N, sbn, sbk, "%n0", Bs, sty_b, k_fast=(sbk == 1 and sbn != 1))
    ins(hooks.barrier())
    acc = {(i, j): op(f"load {T}, ptr %acc{i}{j}") for i in range(4) for j in range(4)}
    for kk in range(BK):
        av, bv = [], []
        for i in range(4):
            r = op(f"add i64 %ty, {16 * i}")
            q = op(f"getelementptr {sty_a}, {sp} {As}, i64 0, i64 {kk}, i64 {r}")
            av.append(op(f"load {T}, {sp} {q}, align {es}"))
        for j in range(4):
            r = op(f"add i64 %tx, {16 * j}")
            q = op(f"getelementptr {sty_b}, {sp} {Bs}, i64 0, i64 {kk}, i64 {r}")
            bv.append(op(f"load {T}, {sp} {q}, align {es}"))
        for i in range(4):
            for j in range(4):
                acc[i, j] = op(f"call {T} @llvm.fma.{sfx}({T} {av[i]}, {T} {bv[j]}, "
                               f"{T} {acc[i, j]})")
    for i in range(4):
        for j in range(4):
            ins(f"store {T} {acc[i, j]}, ptr %acc{i}{j}")
    ins(hooks.barrier())
    ins(f"%k0.next = add i64 %k0, {BK}")
    ins("br label %k.h")
    lab("epi")
    fm = "nsz arcp contract afn"
    for i in range(4):
        for j in range(4):
            gm = op("add i64 %m0, %ty", "gm")
            gm = op(f"add i64 {gm}, {16 * i}", "gm")
            gn = op("add i64 %n0, %tx", "gn")
            gn = op(f"add i64 {gn}, {16 * j}", "gn")
            c1 = op(f"icmp slt i64 {gm}, {M}")
            c2 = op(f"icmp slt i64 {gn}, {N}")
            c = op(f"and i1 {c1}, {c2}")
            st, nx = f"st{i}{j}", f"nx{i}{j}"
            ins(f"br i1 {c}, label %{st}, label %{nx}")
            lab(st)
            x = op(f"load {T}, ptr %acc{i}{j}")
            if spec.alpha != 1.0:
                x = op(f"fmul {fm} {T} {x}, {float_literal(spec.alpha, T)}")
            o1 = op(f"mul i64 {gm}, {scm}")
            o2 = op(f"mul i64 {gn}, {scn}")
            o = op(f"add i64 {o1}, {o2}")
            pc = op(f"getelementptr {T}, ptr %Cb, i64 {o}")
            if spec.beta != 0.0:
                cv = op(f"load {T}, ptr {pc}, align {es}")
                if spec.beta != 1.0:
                    cv = op(f"fmul {fm} {T} {cv}, {float_literal(spec.beta, T)}")
                x = op(f"fadd {fm} {T} {x}, {cv}")
            if spec.bias:
                bo0 = op(f"mul i64 %bi, {spec.bias_stride_batch}")
                bo = op(f"add i64 {bo0}, {gm if spec.bias == 'm' else gn}")
                pb = op(f"getelementptr {T}, ptr %arg3, i64 {bo}")
                bv = op(f"load {T}, ptr {pb}, align {es}")
                x = op(f"fadd {fm} {T} {x}, {bv}")
            ins(f"store {T} {x}, ptr {pc}, align {es}")
            ins(f"br label %{nx}")
            lab(nx)
    ins("br label %tile.latch")
    lab("tile.latch")
    ins("%t.next = add i64 %t, %g.nctaid")
    ins("br label %tile.h")
    lab("exit")
    ins("ret void")
    L.append("}")
    shared = [hooks.shared(As[1:], sty_a), hooks.shared(Bs[1:], sty_b)]
    smem = BK * (BM + P) * es + BK * (BN + P) * es
    launch = Launch(name, "gemm", min(ntiles, MAX_GRID), GEMM_THREADS, ntiles, smem, True,
                    f"{batch}x{M}x{N}x{Kd} tiles={ntiles}")
    return "\n".join(shared + L) + "\n", launch


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
@dataclass
class GPUModule:
    ir: str                      # LLVM IR text of the whole module
    names: list                  # function name per input kernel (identical kernels share)
    launches: list               # Launch per input kernel
    emulate: bool = False
    ptx: str = ""
    sm: str = ""


def _render_kernel(k, hooks: Hooks, math_funcs: set, need_conv: list,
                   fast_math: bool) -> tuple[str, Launch]:
    if isinstance(k, K.TemplateKernel):
        spec = getattr(k, "gemm_spec", None)
        if spec is None:
            raise CompileError(f"template kernel '{k.note or k.name}' has no GPU version "
                               "(only GEMM templates do)")
        return gemm_ir(spec, k.name, hooks)
    plan = plan_kernel(k)
    r = GPURenderer(math_funcs, need_conv, hooks, fast_math)
    text = r.render_gpu(k, plan)
    detail = f"j={plan.jgroup} coop={len(plan.coop)}" if plan.mode == "row" else ""
    smem = 8 * 32 if any(c.group == "block" for c in plan.coop.values()) \
        and plan.block > WARP else 0
    return text, Launch(k.name, plan.mode, plan.grid, plan.block, int(k.n_tasks), smem,
                        plan.sync, detail)


def render_gpu_module(kernels: list, *, emulate: bool = False,
                      fast_math: bool = False) -> GPUModule:
    """One LLVM module holding ``kernels`` (Kernel or GEMM TemplateKernel) for the GPU (or
    for its CPU emulation), the math functions they use and a launch per kernel."""
    from . import mathlib

    hooks = Hooks(emulate)
    math_funcs: set = set()
    need_conv = [False]
    parts: list[str] = []
    names: list[str] = []
    launches: list[Launch] = []
    seen: set = set()
    for k in kernels:
        text, launch = _render_kernel(k, hooks, math_funcs, need_conv, fast_math)
        # the name comes from the PTX rendering, so an emulation module names kernels alike
        named = text if not emulate else _render_kernel(k, Hooks(False), set(), [False],
                                                         fast_math)[0]
        ident = hashlib.sha1(named.replace(k.name, "__K__").encode()).hexdigest()[:16]
        fname = f"mxc_g{ident}"
        if fname not in seen:
            parts.append(text.replace(f"@{k.name}", f"@{fname}"))
            seen.add(fname)
        launch.name = fname
        names.append(fname)
        launches.append(launch)
    pre = [INTRINSIC_DECLS, hooks.decls()]
    if math_funcs:
        pre.append(_renumber(mathlib.math_ir(sorted(math_funcs)), 50, 50000))
    if math_funcs or need_conv[0]:
        pre.append(_renumber(mathlib.conversion_ir(), 70, 70000))
    attrs = 'attributes #0 = { nounwind "no-builtins" }\n'
    text = "\n".join(pre + parts) + "\n" + attrs
    return GPUModule(_dedupe_declarations(text), names, launches, emulate)


# ---------------------------------------------------------------------------------------------
# LLVM -> PTX
# ---------------------------------------------------------------------------------------------
_lock = threading.Lock()
_tms: dict = {}


def _target_machine(sm: str):
    import llvmlite.binding as llvm

    if sm not in SM_PRESETS:
        raise CompileError(f"unknown GPU target '{sm}'; presets: {', '.join(SM_PRESETS)}")
    tm = _tms.get(sm)
    if tm is None:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        cpu, feats = SM_PRESETS[sm]
        tm = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=cpu, features=feats,
                                                                   opt=3)
        _tms[sm] = tm
    return tm


def _ptx_cache_path(ir: str, sm: str) -> Path:
    from .jit import cache_dir

    h = hashlib.sha256()
    for part in (ir, sm, TRIPLE, "ptx-v1"):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()
    return cache_dir() / "ptx" / key[:2] / f"{key}.ptx"


def ir_to_ptx(ir: str, sm: str = "sm_80") -> str:
    """PTX text of an NVPTX LLVM module (O3), cached on disk like CPU objects."""
    import llvmlite.binding as llvm

    path = _ptx_cache_path(ir, sm)
    try:
        return path.read_text()
    except OSError:
        pass
    bad = re.search(r"@llvm\.(exp|exp10|log|log10|sin|cos|tan|pow|powi)\.|"
                    r"@llvm\.(exp2|log2)\.f64", ir)
    if bad:
        raise CompileError(f"refusing to compile libm intrinsic {bad.group(0)[1:]} for NVPTX "
                           "(LLVM would abort the process)")
    with _lock:
        tm = _target_machine(sm)
        try:
            mod = llvm.parse_assembly(ir)
            mod.verify()
        except RuntimeError as e:
            if os.environ.get("MXC_DEBUG"):
                Path("/tmp/mxc_bad_gpu.ll").write_text(ir)
            raise CompileError(f"generated GPU LLVM IR is invalid: {e}") from None
        mod.triple = TRIPLE
        mod.data_layout = str(tm.target_data)
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        ptx = tm.emit_assembly(mod)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(ptx)
        os.replace(tmp, path)
    except OSError:
        pass
    return ptx


def build_ptx(kernels: list, sm: str = "sm_80", *, fast_math: bool = False) -> GPUModule:
    """Render ``kernels`` for the GPU and compile them to PTX for ``sm``."""
    mod = render_gpu_module(kernels, fast_math=fast_math)
    mod.ptx = ir_to_ptx(mod.ir, sm)
    mod.sm = sm
    return mod


def emit_ptx(kernels: list, sm: str = "sm_80", *, fast_math: bool = False) -> str:
    """PTX text of ``kernels`` (see :func:`build_ptx` for names and launches)."""
    return build_ptx(kernels, sm, fast_math=fast_math).ptx


# ---------------------------------------------------------------------------------------------
# ptxas
# ---------------------------------------------------------------------------------------------
def find_ptxas() -> str | None:
    """ptxas on PATH, in $CUDA_HOME/bin, or from the pip package nvidia-cuda-nvcc."""
    p = shutil.which("ptxas")
    if p:
        return p
    for env in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(env)
        if home and os.access(os.path.join(home, "bin", "ptxas"), os.X_OK):
            return os.path.join(home, "bin", "ptxas")
    try:
        import nvidia  # type: ignore

        for root in getattr(nvidia, "__path__", []):
            for sub in ("cu13", "cuda_nvcc", "cu12"):
                cand = os.path.join(root, sub, "bin", "ptxas")
                if os.access(cand, os.X_OK):
                    return cand
    except ImportError:
        pass
    return None


def run_ptxas(ptx: str, sm: str = "sm_80", ptxas: str | None = None) -> tuple[bool, str]:
    """Assemble ``ptx`` for ``sm`` with ptxas: (accepted, ptxas's messages)."""
    exe = ptxas or find_ptxas()
    if exe is None:
        raise CompileError("ptxas not found: put CUDA's bin directory on PATH, set CUDA_HOME, "
                           "or `pip install nvidia-cuda-nvcc`")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        Path(src).write_text(ptx)
        r = subprocess.run([exe, "--gpu-name", sm, src, "-o", os.path.join(d, "k.cubin")],
                           check=False, capture_output=True, text=True, timeout=300)
    return r.returncode == 0, (r.stdout + r.stderr).strip()
