"""A compiled graph as the runtime sees it: storage slots and a list of kernel calls.

The compiler produces a :class:`Program`; the runtime binds numpy-backed storage to its slots
and runs the calls in order on the thread pool. Nothing here knows about LLVM: a call is an
opaque ctypes function plus the slots of its arguments, so the same runtime runs programs
built elsewhere (and a future artifact loader needs only this module).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np

from .threadpool import get_pool


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

    def clone(self) -> "Program":
        """A new instance sharing the compiled calls, with its own (unallocated) storage."""
        return Program(self.slots, self.calls, self.owner, [], self.sections)

    def allocate(self, bound: dict | None = None) -> None:
        """Give every slot storage: ``bound`` maps slot -> numpy array to use as is."""
        bound = bound or {}
        self.storage = []
        for i, s in enumerate(self.slots):
            arr = bound.get(i)
            if arr is None:
                arr = np.empty(max(s.nbytes, 1) + 64, np.uint8)
                off = (-arr.ctypes.data) % 64
                arr = arr[off: off + max(s.nbytes, 1)]
            self.storage.append(arr)
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

    def reseed(self) -> None:
        """Fresh seeds for the random kernels (Dropout) of the next run."""
        from .random import next_seed

        for slot, info in enumerate(self.slots):
            if info.kind == "rng":
                self.storage[slot][:8].view(np.uint64)[0] = next_seed()

    def run(self, section: str | None = None) -> None:
        pool = get_pool()
        if section in (None, "forward"):
            self.reseed()
        b, e = self.sections.get(section, (0, len(self.calls))) if section else \
            (0, len(self.calls))
        calls, args = self.calls, self._args
        for i in range(b, e):
            c = calls[i]
            pool.run(c.fn, c.n_tasks, args[i], c.scratch_bytes, c.cost)
