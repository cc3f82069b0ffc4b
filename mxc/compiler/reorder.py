"""Memory-aware order of kernel calls within a section.

Needs: the calls' slot accesses (``plan_memory.kernel_accesses``), slot sizes and the slots
the memory planner may reuse. Provides: a new order of the calls of one section that
respects every dependency through storage (read after write, write after read, write after
write: the program's meaning is its sequential order over slots) and frees memory early.

Why: the backward graph comes out of differentiation in depth-first order, which computes
every data gradient of the network before the first weight gradient, so each layer's output
gradient and saved activation stay alive until the very end. A list scheduler fixes that:
among the calls whose dependencies are done, run the one that frees the most bytes net of
what it allocates (ties: the original order), the classic greedy for register/memory
pressure. The planner then sees short lifetimes.
"""
from __future__ import annotations

from collections import defaultdict


def units_by_node(nodes: list, start: int, end: int) -> list:
    """Runs of consecutive calls of one graph node (or fused group): the units reordered."""
    out: list = []
    for k in range(start, end):
        if out and nodes[k] == nodes[out[-1][-1]]:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def reorder(accesses: list, nbytes: dict, plannable, units: list,
            keep: set | frozenset = frozenset()) -> list:
    """The calls of ``units`` (lists of consecutive call indices, kept together and in
    order; together a contiguous range) in a memory-friendly order that keeps every
    dependency. ``nbytes``: slot -> bytes of the planned slots; ``keep``: planned slots that
    stay alive after the range whatever happens."""
    flat = [k for u in units for k in u]
    if len(units) < 3:
        return flat
    start, end = min(flat), max(flat) + 1
    plannable = set(plannable)
    unit_of = {k: j for j, u in enumerate(units) for k in u}
    preds: dict = {j: set() for j in range(len(units))}
    last_writer: dict = {}
    readers: dict = defaultdict(list)
    for k in flat:
        a = accesses[k]
        j = unit_of[k]
        for s in a.reads:
            w = last_writer.get(s)
            if w is not None and w != j:
                preds[j].add(w)
        for s in a.writes:
            w = last_writer.get(s)
            if w is not None and w != j:
                preds[j].add(w)
            for r in readers.get(s, ()):
                if r != j:
                    preds[j].add(r)
        for s in a.reads:
            readers[s].append(j)
        for s in a.writes:
            last_writer[s] = j
            readers[s] = [r for r in readers[s] if r == j]
    succs: dict = defaultdict(list)
    for j, ps in preds.items():
        for p in ps:
            succs[p].append(j)
    waiting = {j: len(ps) for j, ps in preds.items()}

    # planned slots alive when the range starts, and how many units still touch each
    live: set = set()
    for k in range(start):
        a = accesses[k]
        live.update(s for s in a.reads | a.writes if s in plannable)
    later: set = set()
    for k in range(end, len(accesses)):
        a = accesses[k]
        later.update(a.reads | a.writes)
    touches = {}
    for j, u in enumerate(units):
        ts: set = set()
        for k in u:
            ts.update(s for s in accesses[k].reads | accesses[k].writes if s in plannable)
        touches[j] = ts
    remaining: dict = defaultdict(int)
    for ts in touches.values():
        for s in ts:
            remaining[s] += 1

    def score(j):
        """Bytes this unit frees minus the bytes it leaves allocated."""
        net = 0
        for s in touches[j]:
            dies = remaining[s] == 1 and s not in keep and s not in later
            if s not in live:
                if not dies:
                    net -= nbytes[s]
            elif dies:
                net += nbytes[s]
        return net

    ready = [j for j in range(len(units)) if waiting[j] == 0]
    order: list = []
    while ready:
        best = max(ready, key=lambda j: (score(j), -j))
        ready.remove(best)
        order.append(best)
        for s in touches[best]:
            live.add(s)
            remaining[s] -= 1
        for q in succs.get(best, ()):
            waiting[q] -= 1
            if waiting[q] == 0:
                ready.append(q)
    if len(order) != len(units):  # cannot happen: the original order satisfies every edge
        return flat
    return [k for j in order for k in units[j]]


__all__ = ["reorder", "units_by_node"]
