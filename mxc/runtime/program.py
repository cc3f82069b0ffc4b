"""A compiled graph as the runtime sees it: storage slots and a list of kernel calls.

The compiler produces a :class:`Program`; the runtime binds numpy-backed storage to its slots
and runs the calls in order on the thread pool. Nothing here knows about LLVM: a call is an
opaque ctypes function plus the slots of its arguments, so the same runtime runs programs
built elsewhere (and a future artifact loader needs only this module).

Memory: the compiler's memory plan places the temporaries at byte offsets of one workspace
*arena* (``arena_offsets``, ``arena_bytes``); ``allocate`` makes the arena once and binds
those slots as views into it, every other slot (inputs, parameters, gradients, outputs) gets
the caller's array or a buffer of its own. Debug mode (``MXC_POISON_MEMORY=1`` or
``debug_poison = True``) fills the arena with NaN bytes before the forward section and the
bytes of every value after its last use, so a plan that let two live values share storage
shows up as NaNs in the results.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

import numpy as np

from .threadpool import PARALLEL_THRESHOLD, get_pool, worker_scratch


@dataclass
class KernelCall:
    fn: object                 # ctypes function k(begin, end, args, scratch)
    name: str
    slots: list                # storage slot per argument
    offsets: list              # byte offset into the slot per argument
    n_tasks: int
    scratch_bytes: int = 0
    cost: int = 0
    node: str = ""             # graph node that produced it (debugging, profiling)


@dataclass
class SlotInfo:
    nbytes: int
    kind: str = "temp"         # temp | input | output | param | aux | grad
    name: str = ""


@dataclass
class Program:
    slots: list                                  # list[SlotInfo]
    calls: list                                  # list[KernelCall]
    owner: object = None                         # keeps the compiled module alive
    storage: list = field(default_factory=list)  # numpy uint8 arrays, one per slot
    sections: dict = field(default_factory=dict)  # name -> (start, end) call ranges
    _args: list = field(default_factory=list)     # per-call ctypes argument arrays
    arena_offsets: dict = field(default_factory=dict)  # slot -> byte offset in the arena
    arena_bytes: int = 0
    poison: dict = field(default_factory=dict)    # call -> [(offset, nbytes)] dead after it
    arena: np.ndarray | None = None               # the workspace of this instance
    debug_poison: bool | None = None              # None: MXC_POISON_MEMORY
    _rng_slots: list | None = field(default=None, repr=False)  # slots reseeded per run
    #: a native pool (``codegen.native_pool.NativePool``, set by the compiler) that runs a
    #: whole section of calls with no Python between kernels; None: the Python pool
    native: object = None
    _native_calls: object = field(default=None, repr=False)
    _native_scratch: int = field(default=0, repr=False)   # largest scratch of any call
    #: slot -> ("gemm_a", M, K, panel, order) / ("gemm_b", K, N, panel, transposed): a constant
    #: parameter stored in the GEMM's prepacked layout (``codegen.gemm.pack_a_panels`` /
    #: ``pack_b_panels``), not as its plain array
    slot_layouts: dict = field(default_factory=dict)

    def clone(self) -> Program:
        """A new instance sharing the compiled calls, with its own (unallocated) storage."""
        return Program(self.slots, self.calls, self.owner, [], self.sections,
                       arena_offsets=self.arena_offsets, arena_bytes=self.arena_bytes,
                       poison=self.poison, debug_poison=self.debug_poison,
                       native=self.native, slot_layouts=self.slot_layouts)

    def new_arena(self) -> np.ndarray | None:
        """A 64-byte-aligned workspace for the planned slots (None when nothing is planned)."""
        if not self.arena_offsets:
            return None
        return _aligned_bytes(self.arena_bytes)

    def allocate(self, bound: dict | None = None, arena: np.ndarray | None = None) -> None:
        """Give every slot storage: ``bound`` maps slot -> numpy array to use as is; planned
        slots not bound are views of ``arena`` (made here when not given)."""
        bound = bound or {}
        if any(i not in bound for i in self.arena_offsets):
            if arena is None:
                arena = self.new_arena()
            elif arena.nbytes < self.arena_bytes or arena.ctypes.data % 64:
                raise ValueError(f"workspace arena has {arena.nbytes} bytes at "
                                 f"{arena.ctypes.data:#x}; the plan needs {self.arena_bytes} "
                                 "bytes, 64-byte aligned")
        else:
            arena = None
        self.arena = arena
        self.storage = []
        for i, s in enumerate(self.slots):
            arr = bound.get(i)
            if arr is None:
                off = self.arena_offsets.get(i)
                if off is not None:
                    arr = arena[off: off + max(s.nbytes, 1)]
                else:
                    arr = _aligned_bytes(max(s.nbytes, 1))
            self.storage.append(arr)
        if self.debug_poison is None:
            self.debug_poison = os.environ.get("MXC_POISON_MEMORY", "0") not in ("", "0")
        self._prepare()

    def rebind(self, slot: int, arr: np.ndarray) -> None:
        self.storage[slot] = arr
        self._prepare()

    def _prepare(self) -> None:
        ptrs = [a.ctypes.data for a in self.storage]
        for i, a in enumerate(self.storage):
            if a.nbytes < self.slots[i].nbytes:
                raise ValueError(f"storage for slot {i} ({self.slots[i].name}) has {a.nbytes} "
                                 f"bytes, needs {self.slots[i].nbytes}")
        self._args = [(ctypes.c_void_p * max(len(c.slots), 1))(
            *[ptrs[s] + o for s, o in zip(c.slots, c.offsets)]) for c in self.calls]
        self._native_calls = None   # rebuilt from the new argument arrays on the next run

    def reseed(self) -> None:
        """Fresh seeds for the random kernels (Dropout) of the next run."""
        rng = self._rng_slots
        if rng is None:
            rng = self._rng_slots = [i for i, info in enumerate(self.slots)
                                     if info.kind == "rng"]
        if not rng:
            return
        from .random import next_seed

        for slot in rng:
            self.storage[slot][:8].view(np.uint64)[0] = next_seed()

    def run(self, section: str | None = None) -> None:
        pool = get_pool()
        if section in (None, "forward"):
            self.reseed()
        b, e = self.sections.get(section, (0, len(self.calls))) if section else \
            (0, len(self.calls))
        calls, args = self.calls, self._args
        if self.debug_poison and self.arena is not None:
            self._run_poisoned(pool, b, e, section in (None, "forward"))
            return
        if self.native is not None and e > b:
            self._run_native(pool, b, e)
            return
        for i in range(b, e):
            c = calls[i]
            pool.run(c.fn, c.n_tasks, args[i], c.scratch_bytes, c.cost)

    def _run_native(self, pool, b: int, e: int) -> None:
        """Calls [b, e) in one native call: {fn, args, n_tasks, parallel} per call, split
        like ``ThreadPool.run`` would (parallel only above PARALLEL_THRESHOLD)."""
        arr = self._native_calls
        if arr is None:
            arr = (ctypes.c_int64 * (4 * len(self.calls)))()
            for i, c in enumerate(self.calls):
                arr[4 * i] = ctypes.cast(c.fn, ctypes.c_void_p).value or 0
                arr[4 * i + 1] = ctypes.addressof(self._args[i])
                arr[4 * i + 2] = c.n_tasks
                arr[4 * i + 3] = int(c.cost >= PARALLEL_THRESHOLD)
            self._native_calls = arr
            self._native_scratch = max((c.scratch_bytes for c in self.calls), default=0)
        nt = pool.num_threads
        native = self.native
        if native.workers < nt - 1:
            native.ensure_workers(nt - 1)
        need = self._native_scratch
        scratch = (ctypes.c_void_p * max(nt, 1))(pool.caller_scratch(need),
                                                  *worker_scratch(need, nt - 1))
        native.run(ctypes.addressof(arr) + 32 * b, e - b, scratch, nt)

    def _run_poisoned(self, pool, b: int, e: int, fresh: bool) -> None:
        """``run`` in debug mode: dead arena bytes hold NaN garbage (0xFF bytes)."""
        arena = self.arena
        if fresh:
            arena.fill(0xFF)
        for i in range(b, e):
            c = self.calls[i]
            pool.run(c.fn, c.n_tasks, self._args[i], c.scratch_bytes, c.cost)
            for off, n in self.poison.get(i, ()):
                arena[off: off + n] = 0xFF


def _aligned_bytes(nbytes: int) -> np.ndarray:
    arr = np.empty(nbytes + 64, np.uint8)
    off = (-arr.ctypes.data) % 64
    return arr[off: off + nbytes]
