"""Memory planning: where each temporary storage slot of a lowered graph lives.

Needs: the lowered kernel sequence in call order (``compiler.lower.LoweredKernel``: a kernel and
the storage slot of each of its buffers), the slot table, the forward/backward split, and the
slots the caller reads after a run (graph outputs). Provides: a :class:`MemoryPlan`, one byte
offset per planned slot into ONE 64-byte-aligned workspace arena, plus the figures
``mxc inspect --memory`` prints. Only slots of kind ``temp`` are planned; inputs, parameters,
auxiliary states, gradients, random seeds and graph outputs keep storage of their own.

The steps, each a function below:

1. ``kernel_accesses``: which slots every call reads and writes, and which (input, output)
   slot pairs of a call may share bytes. A pair is *safe* when the kernel is a loop nest in
   which every load of the input sits in the value of a store to the output at the very same
   index (same element size and view offset) and the output is never read: each element is
   then read before it is overwritten, by the same iteration. GEMM templates, reductions over
   the input, transposes, stencils and multi-store kernels are never safe.
2. ``liveness``: each planned slot lives from the first call that touches it to the last one
   (MXNet's semantics: the backward frees the forward values it has read, so one forward
   supports one backward). With ``retain_graph`` a forward value the backward reads lives to
   the end of the program, so ``backward`` can run again (gluon, autograd's retain_graph).
3. ``mxnet_blocks``: MXNet's ``PlanMemory`` (src/nnvm/plan_memory.cc), ported call by call:
   per call, first *inplace* (an output takes the block of an input that dies at this call,
   where the op declares the pair and step 1 finds it safe), then the new outputs request
   blocks largest first from a free list, searching sizes within the match range
   (``NNVM_EXEC_MATCH_RANGE``, default 16): the smallest free block at least as large, else
   the largest smaller one, which grows; then the dying inputs release their blocks. Blocks
   are laid one after another, as MXNet allocates them.
4. ``pack``: the improvement. Storage is one arena, so a value may reuse *part* of a freed
   block or span two: groups of slots (an inplace chain, or one MXNet block) are placed at
   byte offsets such that no two slots alive at the same call overlap, in several orders
   (largest first, longest lifetime, largest area, first use, most crowded call first) with
   first-fit or best-fit offsets; inplace chains there use every safe pair, declared or not
   (BatchNorm, fused kernels).
5. ``plan_liveness``: the smallest arena of all candidates is kept (orders still above the
   lower bound are perturbed a little first) and verified (``check``). It never exceeds the
   naive sum, which is a candidate itself.

``plan_program`` is what ``compile_graph`` runs: it also compares the calls' order as lowered
with the order of ``compiler.reorder`` (per section) and plans the one with the lower peak;
``elide_copies`` lets gradient producers write straight into the gradient arrays.

``MXNET_EXEC_ENABLE_INPLACE=0`` turns inplace off, ``NNVM_EXEC_MATCH_RANGE=0`` turns sharing
off (as in MXNet). ``lower_bound`` is the largest number of bytes alive at one call (an input
handing its bytes to an output at that call counted once): no plan of this call order does
better.
"""
from __future__ import annotations

import bisect
import itertools
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from ..ir import kernel as K

ALIGN = 64


def aligned(nbytes: int) -> int:
    """Bytes a slot takes in the arena: whole 64-byte lines, at least one."""
    return max(ALIGN, -(-int(nbytes) // ALIGN) * ALIGN)


# ---------------------------------------------------------------------------------------------
# 1. what each call touches
# ---------------------------------------------------------------------------------------------
@dataclass
class Access:
    """The slots one kernel call reads and writes, and the (input, output) slot pairs that may
    share storage at this call: ``safe`` (proven from the kernel IR) and ``declared`` (the op's
    ``inplace`` option, MXNet's FInplaceOption)."""

    reads: frozenset
    writes: frozenset
    safe: frozenset = frozenset()
    declared: frozenset = frozenset()


def kernel_accesses(lowered: list, node_inplace: dict | None = None) -> list:
    """One :class:`Access` per lowered kernel. ``node_inplace`` maps a node name to the slot
    pairs (input slot, output slot) its op declares in-place."""
    node_inplace = node_inplace or {}
    out = []
    for lk in lowered:
        k = lk.kernel
        slots = list(lk.slots)
        if isinstance(k, K.Kernel):
            reads, writes, safe = _analyze(k, slots)
        elif getattr(k, "writes", None) is not None:
            # a template that stores into some buffers only (GEMM and direct convolution:
            # buffer 2, read too when a GEMM's beta != 0), reads the rest
            reads, writes = frozenset(slots), frozenset(slots[i] for i in k.writes)
            safe = frozenset()
        else:  # another template: every buffer may be read and written, nothing shares
            reads = writes = frozenset(slots)
            safe = frozenset()
        declared = frozenset(p for p in node_inplace.get(lk.node, ()) if p in safe)
        out.append(Access(frozenset(reads), frozenset(writes), safe, declared))
    return out


def _analyze(k: K.Kernel, slots: list) -> tuple:
    offs = getattr(k, "offsets", None) or [0] * len(k.buffers)
    where = {}  # buffer -> (slot, element size, byte offset)
    for b, s, o in zip(k.buffers, slots, offs):
        where[b] = (s, b.dtype.itemsize, o * b.dtype.itemsize)
    stores = []        # (slot, itemsize, byte offset, index, loads inside the value, complete)
    free_loads = []    # loads outside any store value: (slot, ...)
    task_loops = [k.task_var] if k.n_tasks > 1 else []

    memo: dict = {}   # id(expr) -> the distinct loads under it (shared sub-trees: once)

    def loads_under(e) -> tuple:
        r = memo.get(id(e))
        if r is not None:
            return r[1]
        if isinstance(e, (K.Const, K.Var, K.Local)):
            out: tuple = ()
        else:
            kids = K.children(e)
            parts = [loads_under(c) for c in kids]
            if isinstance(e, K.Load):
                parts.append((e,))
            parts = [p for p in parts if p]
            if not parts:
                out = ()
            elif len(parts) == 1:
                out = parts[0]
            else:
                out = tuple({id(x): x for p in parts for x in p}.values())
        memo[id(e)] = (e, out)   # keep e alive: ids stay unique while memoized
        return out

    def loads_of(e, acc, _seen=None):
        acc.extend(loads_under(e))

    def visit(stmts, loop_vars):
        for s in stmts:
            if isinstance(s, K.Store):
                acc: list = []
                loads_of(s.value, acc, set())
                seen_ix: list = []
                loads_of(s.index, seen_ix, set())
                free_loads.extend(seen_ix)
                fv = K.free_vars(s.index)
                complete = not seen_ix and all(v in fv for v in loop_vars)
                stores.append((s.buf, s.index, acc, complete))
            elif isinstance(s, K.Assign):
                loads_of(s.value, free_loads, set())
            elif isinstance(s, K.If):
                loads_of(s.cond, free_loads, set())
                visit(s.then, loop_vars)
                visit(s.otherwise, loop_vars)
            elif isinstance(s, K.For):
                loads_of(s.extent, free_loads, set())
                loads_of(s.start, free_loads, set())
                trivial = isinstance(s.extent, K.Const) and s.extent.value == 1
                visit(s.body, loop_vars if trivial else loop_vars + [s.var])

    visit(k.body, task_loops)
    reads = set()
    writes = set()
    for buf, _, acc, _ in stores:
        writes.add(where[buf][0])
        reads.update(where[ld.buf][0] for ld in acc)
    reads.update(where[ld.buf][0] for ld in free_loads)

    # (input I, output O) is safe when every load of I sits in a store to O at the store's
    # own index, view offset and element size, O is never read and I never written
    bad_in = {where[ld.buf][0] for ld in free_loads}
    out_ok: dict = {}
    seen_idx: dict = defaultdict(list)
    for buf, index, _, complete in stores:
        so = where[buf][0]
        ok = complete and not any(index == j for j in seen_idx[so])  # each element once
        seen_idx[so].append(index)
        out_ok[so] = out_ok.get(so, True) and ok
    targets: dict = defaultdict(set)
    for buf, index, acc, _ in stores:
        so, size_o, off_o = where[buf]
        for ld in acc:
            si, size_i, off_i = where[ld.buf]
            same = ld.index == index and size_i == size_o and off_i == off_o
            targets[si].add(so if same else None)
    safe = set()
    for si, tg in targets.items():
        if len(tg) != 1:
            continue
        so = next(iter(tg))
        if so is None or si == so or si in bad_in or si in writes or so in reads:
            continue
        if out_ok.get(so):
            safe.add((si, so))
    return reads, writes, frozenset(safe)


# ---------------------------------------------------------------------------------------------
# 2. liveness
# ---------------------------------------------------------------------------------------------
@dataclass
class Liveness:
    """Call intervals of the planned slots and the inplace handoffs allowed between them."""

    slots: list                  # planned slots, by first use
    first: dict                  # slot -> first call touching it
    last: dict                   # slot -> last call touching it (extended, see module doc)
    size: dict                   # slot -> bytes in the arena (aligned)
    n_calls: int
    pairs: dict                  # call -> [(in slot, out slot)] safe handoffs at that call
    declared: dict               # call -> [(in slot, out slot)] safe and declared by the op
    n_fwd: int | None = None     # calls of the forward section


def liveness(accesses: list, nbytes: list, plannable, n_fwd: int | None = None,
             retain_graph: bool = False) -> Liveness:
    """First and last call of each plannable slot that some call touches, and the inplace
    handoffs (safe pairs whose input dies where the output is born)."""
    n = len(accesses)
    plannable = set(plannable)
    first: dict = {}
    last: dict = {}
    for k, a in enumerate(accesses):
        for s in a.reads | a.writes:
            if s in plannable:
                first.setdefault(s, k)
                last[s] = k
    if retain_graph and n_fwd is not None and 0 < n_fwd < n:
        for s, f in first.items():
            if f < n_fwd <= last[s]:
                last[s] = n - 1
    pairs: dict = {}
    declared: dict = {}
    for k, a in enumerate(accesses):
        ok = sorted((i, o) for i, o in a.safe
                    if i in first and o in first and last[i] == k and first[o] == k)
        if ok:
            pairs[k] = ok
            d = [p for p in ok if p in a.declared]
            if d:
                declared[k] = d
    slots = sorted(first, key=lambda s: (first[s], s))
    size = {s: aligned(nbytes[s]) for s in slots}
    return Liveness(slots, first, last, size, n, pairs, declared, n_fwd)


# ---------------------------------------------------------------------------------------------
# 3. MXNet's planner
# ---------------------------------------------------------------------------------------------
def mxnet_blocks(lv: Liveness, *, inplace: bool = True, sharing: bool = True,
                 match_range: int = 16, declared_only: bool = True) -> list:
    """Storage blocks (lists of slots sharing one block) as MXNet's PlanMemory assigns them,
    run over kernel calls instead of graph nodes."""
    births = defaultdict(list)
    deaths = defaultdict(list)
    for s in lv.slots:
        births[lv.first[s]].append(s)
        deaths[lv.last[s]].append(s)
    handoffs = lv.declared if declared_only else lv.pairs
    block_of: dict = {}
    bsize: list = []
    members: list = []
    free: list = []                     # sorted (bytes, seq, block): MXNet's multimap
    seq = itertools.count()

    def new(nb):
        bsize.append(nb)
        members.append([])
        return len(bsize) - 1

    def request(nb):
        if not sharing or match_range <= 0:
            return new(nb)
        mid = bisect.bisect_left(free, (nb, -1, -1))
        pick = None
        if mid < len(free) and free[mid][0] <= nb * match_range:
            pick = mid                  # the smallest free block at least as large
        elif mid > 0 and free[mid - 1][0] >= nb // match_range:
            pick = mid - 1              # else the largest smaller one, which grows
        if pick is None:
            return new(nb)
        b = free.pop(pick)[2]
        bsize[b] = max(bsize[b], nb)
        return b

    for k in range(lv.n_calls):
        handed = set()
        if inplace:
            for i, o in handoffs.get(k, ()):
                if i in handed or o in block_of:
                    continue
                b = block_of[i]
                block_of[o] = b
                members[b].append(o)
                bsize[b] = max(bsize[b], lv.size[o])
                handed.add(i)
        born = [s for s in births.get(k, ()) if s not in block_of]
        for s in sorted(born, key=lambda s: -lv.size[s]):
            b = request(lv.size[s])
            block_of[s] = b
            members[b].append(s)
        for s in deaths.get(k, ()):
            if s in handed:
                continue
            b = block_of[s]
            bisect.insort(free, (bsize[b], next(seq), b))
    return [m for m in members if m]


def chains(lv: Liveness, declared_only: bool = False) -> list:
    """Groups of slots linked by inplace handoffs (each input gives to one output, each output
    takes from one input; larger overlaps first)."""
    handoffs = lv.declared if declared_only else lv.pairs
    nxt: dict = {}
    prev: dict = {}
    for k in sorted(handoffs):
        for i, o in sorted(handoffs[k], key=lambda p: -min(lv.size[p[0]], lv.size[p[1]])):
            if i in nxt or o in prev:
                continue
            nxt[i] = o
            prev[o] = i
    out = []
    for s in lv.slots:
        if s in prev:
            continue
        g = [s]
        while g[-1] in nxt:
            g.append(nxt[g[-1]])
        out.append(g)
    return out


def consecutive(lv: Liveness, groups: list) -> dict:
    """Offsets laying each group's block after the previous one (MXNet: one array per block)."""
    off = {}
    pos = 0
    for g in groups:
        for s in g:
            off[s] = pos
        pos += max(lv.size[s] for s in g)
    return off


# ---------------------------------------------------------------------------------------------
# 4. interval packing into one arena
# ---------------------------------------------------------------------------------------------
ORDERS = ("size", "lifetime", "area", "first", "breadth")
PERTURB_ROUNDS = 8


def _order(lv: Liveness, groups: list, how: str) -> list:
    def span(g):
        return lv.last[g[-1]] - lv.first[g[0]] + 1 if g else 0

    def big(g):
        return max(lv.size[s] for s in g)

    idx = range(len(groups))
    if how == "size":
        return sorted(idx, key=lambda i: (-big(groups[i]), -span(groups[i]), i))
    if how == "lifetime":
        return sorted(idx, key=lambda i: (-span(groups[i]), -big(groups[i]), i))
    if how == "area":
        return sorted(idx, key=lambda i: (-sum(lv.size[s] * (lv.last[s] - lv.first[s] + 1)
                                                for s in groups[i]), i))
    if how == "first":
        return sorted(idx, key=lambda i: (min(lv.first[s] for s in groups[i]), i))
    if how == "breadth":
        # the most crowded calls first; at each, its groups largest first
        live = _live_bytes(lv, {})
        gof = {s: i for i, g in enumerate(groups) for s in g}
        at = defaultdict(list)
        for s in lv.slots:
            for k in range(lv.first[s], lv.last[s] + 1):
                at[k].append(s)
        out, done = [], set()
        for k in sorted(range(lv.n_calls), key=lambda k: (-live[k], k)):
            for s in sorted(at.get(k, ()), key=lambda s: -lv.size[s]):
                g = gof[s]
                if g not in done:
                    done.add(g)
                    out.append(g)
        return out + [i for i in idx if i not in done]
    raise ValueError(f"unknown order {how!r}")


def pack(lv: Liveness, groups: list, order: str = "size", fit: str = "best",
         sequence: list | None = None) -> dict:
    """Byte offsets (slot -> offset) placing each group (its slots at one offset) so that no
    two slots alive at the same call overlap; groups in ``order`` (or the explicit index
    ``sequence``), each at the lowest (``fit='first'``) or the tightest (``fit='best'``)
    feasible offset."""
    n = len(lv.slots)
    pf = np.empty(n, np.int64)
    pl = np.empty(n, np.int64)
    po = np.empty(n, np.int64)
    ps = np.empty(n, np.int64)
    m = 0
    off: dict = {}
    for gi in (sequence if sequence is not None else _order(lv, groups, order)):
        g = groups[gi]
        los, his = [], []
        for s in g:
            if m == 0:
                break
            mask = (pf[:m] <= lv.last[s]) & (pl[:m] >= lv.first[s])
            if mask.any():
                # forbidden base offsets: the open interval (o - size, o + psize)
                los.append(po[:m][mask] - lv.size[s] + 1)
                his.append(po[:m][mask] + ps[:m][mask])
        base = 0
        if los:
            lo = np.concatenate(los)
            hi = np.concatenate(his)
            o = np.argsort(lo, kind="stable")
            lo, hi = lo[o], hi[o]
            reach = np.maximum(np.maximum.accumulate(hi), 0)
            cur = np.concatenate(([0], reach[:-1]))
            gap = lo > cur                      # feasible offsets [cur, lo - 1]
            top = int(reach[-1])
            if fit == "first":
                base = int(cur[gap][0]) if gap.any() else top
            else:
                if gap.any():
                    slack = lo[gap] - 1 - cur[gap]
                    j = int(np.argmin(slack))
                    base = int(cur[gap][j])
                else:
                    base = top
        for s in g:
            off[s] = base
            pf[m], pl[m], po[m], ps[m] = lv.first[s], lv.last[s], base, lv.size[s]
            m += 1
    return off


# ---------------------------------------------------------------------------------------------
# figures and checks
# ---------------------------------------------------------------------------------------------
def _live_bytes(lv: Liveness, pairs: dict) -> np.ndarray:
    d = np.zeros(lv.n_calls + 1, np.int64)
    for s in lv.slots:
        d[lv.first[s]] += lv.size[s]
        d[lv.last[s] + 1] -= lv.size[s]
    live = np.cumsum(d)[:lv.n_calls]
    for k, prs in pairs.items():
        # bytes an input may hand to an output at this call: an upper bound of the best
        # matching (each input to one output, each output from one input)
        by_out: dict = {}
        by_in: dict = {}
        for i, o in prs:
            w = min(lv.size[i], lv.size[o])
            by_out[o] = max(by_out.get(o, 0), w)
            by_in[i] = max(by_in.get(i, 0), w)
        live[k] -= min(sum(by_out.values()), sum(by_in.values()))
    return live


def lower_bound(lv: Liveness, inplace: bool = True) -> int:
    """The largest number of bytes alive at one call."""
    if not lv.slots:
        return 0
    return int(_live_bytes(lv, lv.pairs if inplace else {}).max())


def arena_size(lv: Liveness, off: dict) -> int:
    return max((off[s] + lv.size[s] for s in lv.slots), default=0)


def check(lv: Liveness, off: dict, inplace: bool = True) -> None:
    """Raise ``ValueError`` when two slots alive at the same call share bytes (other than an
    input handing its storage to an output at the call where one dies and the other is born)
    or an offset is not aligned."""
    slots = lv.slots
    if not slots:
        return
    allowed = set()
    if inplace:
        for prs in lv.pairs.values():
            allowed.update(prs)
    f = np.array([lv.first[s] for s in slots])
    la = np.array([lv.last[s] for s in slots])
    o = np.array([off[s] for s in slots])
    z = np.array([lv.size[s] for s in slots])
    if (o % ALIGN).any() or (o < 0).any():
        raise ValueError("memory plan: an offset is negative or not 64-byte aligned")
    for j, s in enumerate(slots):
        clash = (f <= la[j]) & (la >= f[j]) & (o < o[j] + z[j]) & (o + z > o[j])
        clash[j] = False
        for t in np.nonzero(clash)[0]:
            t_slot = slots[int(t)]
            ok = (o[t] == o[j]) and (((s, t_slot) in allowed and la[j] == f[t]) or
                                     ((t_slot, s) in allowed and la[t] == f[j]))
            if not ok:
                raise ValueError(
                    f"memory plan: slots {s} (calls {f[j]}..{la[j]}, bytes {o[j]}+{z[j]}) and "
                    f"{t_slot} (calls {f[t]}..{la[t]}, bytes {o[t]}+{z[t]}) overlap")


def backward_reruns(lv: Liveness, off: dict) -> bool:
    """Whether the backward section may run again on the same forward: no forward value it
    reads shares bytes with a value born in the backward section."""
    nf = lv.n_fwd
    if nf is None or nf >= lv.n_calls:
        return True
    kept = [s for s in lv.slots if lv.first[s] < nf <= lv.last[s]]
    born = [s for s in lv.slots if lv.first[s] >= nf]
    if not kept or not born:
        return True
    o = np.array([off[s] for s in born])
    z = np.array([lv.size[s] for s in born])
    return not any(((o < off[s] + lv.size[s]) & (o + z > off[s])).any() for s in kept)


def poison_events(lv: Liveness, off: dict, reruns: bool = False) -> dict:
    """call -> [(offset, nbytes)] of arena bytes that hold no live value after that call (the
    runtime's debug mode fills them with NaN garbage). ``reruns``: backward may run again,
    so the forward values it reads are never dead within a run."""
    nf = lv.n_fwd if lv.n_fwd is not None else lv.n_calls
    kept = {s for s in lv.slots if reruns and lv.first[s] < nf <= lv.last[s]}
    deaths = defaultdict(list)
    for s in lv.slots:
        if s not in kept:
            deaths[lv.last[s]].append(s)
    f = np.array([lv.first[s] for s in lv.slots])
    la = np.array([lv.n_calls if s in kept else lv.last[s] for s in lv.slots])
    o = np.array([off[s] for s in lv.slots])
    z = np.array([lv.size[s] for s in lv.slots])
    out: dict = {}
    for k, dying in deaths.items():
        alive = (f <= k) & (la > k)
        ranges = []
        for s in dying:
            a, b = off[s], off[s] + lv.size[s]
            m = alive & (o < b) & (o + z > a)
            pieces = [(a, b)]
            for c0, c1 in sorted(zip(o[m].tolist(), (o[m] + z[m]).tolist())):
                nxt = []
                for p0, p1 in pieces:
                    if c1 <= p0 or c0 >= p1:
                        nxt.append((p0, p1))
                        continue
                    if p0 < c0:
                        nxt.append((p0, c0))
                    if c1 < p1:
                        nxt.append((c1, p1))
                pieces = nxt
            ranges.extend((p0, p1 - p0) for p0, p1 in pieces if p1 > p0)
        if ranges:
            out[k] = ranges
    return out


# ---------------------------------------------------------------------------------------------
# 5. the plan
# ---------------------------------------------------------------------------------------------
@dataclass
class MemoryPlan:
    """Where the planned slots live and what it saves. Byte figures count internal memory the
    way MXNet does (everything but inputs, parameters, auxiliary states and gradients): the
    planned temporaries plus the temps kept out of the arena (graph outputs)."""

    offsets: dict                 # slot -> byte offset into the arena
    arena_bytes: int
    strategy: str                 # the winning candidate
    naive_bytes: int              # every temp slot on its own
    inplace_bytes: int            # inplace handoffs only
    sharing_bytes: int            # sharing only (best of MXNet's and the arena packings)
    planned_bytes: int            # the plan in use (inplace + sharing)
    lower_bound_bytes: int        # the most bytes alive at one call, + the kept temps
    mxnet_bytes: int              # MXNet's PlanMemory (declared inplace + sharing)
    fixed_bytes: int              # temps kept out of the arena (graph outputs...)
    inplace_pairs: list = field(default_factory=list)   # (in slot, out slot) sharing bytes
    intervals: dict = field(default_factory=dict)       # slot -> (first, last) call
    poison: dict = field(default_factory=dict)          # call -> [(offset, nbytes)]
    candidates: dict = field(default_factory=dict)      # strategy -> arena bytes
    backward_reruns: bool = True  # no forward value backward reads shares bytes with a
    #                               backward temp: backward may run twice on one forward

    def summary(self) -> dict:
        return {"naive_bytes": self.naive_bytes, "inplace_bytes": self.inplace_bytes,
                "sharing_bytes": self.sharing_bytes, "planned_bytes": self.planned_bytes,
                "lower_bound_bytes": self.lower_bound_bytes, "mxnet_bytes": self.mxnet_bytes,
                "arena_bytes": self.arena_bytes, "strategy": self.strategy}


def env_inplace() -> bool:
    return os.environ.get("MXNET_EXEC_ENABLE_INPLACE", "1").strip().lower() not in (
        "0", "false", "no", "off")


def env_match_range() -> int:
    try:
        return int(os.environ.get("NNVM_EXEC_MATCH_RANGE", "16"))
    except ValueError:
        return 16


def plan_liveness(lv: Liveness, *, inplace: bool | None = None,
                  match_range: int | None = None, fixed_bytes: int = 0,
                  thorough: bool = True) -> MemoryPlan:
    """Run every strategy on ``lv`` and keep the smallest verified arena."""
    inplace = env_inplace() if inplace is None else inplace
    match_range = env_match_range() if match_range is None else match_range
    sharing = match_range > 0
    cands: dict = {}

    singles = [[s] for s in lv.slots]
    cands["naive"] = consecutive(lv, singles)
    inpl_groups = chains(lv) if inplace else singles
    cands["inplace"] = consecutive(lv, inpl_groups)
    cands["mxnet-nosharing"] = consecutive(
        lv, mxnet_blocks(lv, inplace=inplace, sharing=False))
    if sharing:
        for ip in ((False, True) if inplace else (False,)):
            tag = "mxnet" if ip else "mxnet-noinplace"
            # MXNet's NNVM_AUTO_SEARCH_MATCH_RANGE: powers of two up to the match range
            ranges = [r for r in (1, 2, 4, 8, 16, 32) if r < match_range] if thorough else []
            for mr in ranges + [match_range]:
                blocks = mxnet_blocks(lv, inplace=ip, match_range=mr)
                cands[f"{tag}-range{mr}"] = consecutive(lv, blocks)
                if thorough and mr == match_range:
                    for how in ("size", "first"):
                        cands[f"{tag}-blocks-packed-{how}"] = pack(lv, blocks, how, "best")
        group_sets = [("noinplace", singles)]
        if inplace:
            group_sets.append(("inplace", inpl_groups))
        orders = ORDERS if thorough else ("size",)
        fits = ("best", "first") if thorough else ("best",)
        for tag, groups in group_sets:
            for how in orders:
                for fit in fits:
                    cands[f"pack-{how}-{fit}-{tag}"] = pack(lv, groups, how, fit)

    sizes = {name: arena_size(lv, off) for name, off in cands.items()}

    def best(names):
        return min(names, key=lambda n: (sizes[n], n != "naive", n))

    # still above the bound: perturb the best packing orders a little (fixed seeds, so plans
    # are reproducible) and keep what improves
    bound = lower_bound(lv, inplace)
    if sharing and thorough and sizes[best(list(sizes))] > bound:
        tops = sorted((n for n in sizes if n.startswith("pack-") and n.endswith("-best-"
                       + ("inplace" if inplace else "noinplace"))), key=lambda n: sizes[n])[:2]
        groups = inpl_groups if inplace else singles
        for trial in range(PERTURB_ROUNDS):
            rng = random.Random(trial)
            for name in tops:
                how = name.split("-")[1]
                seq = _order(lv, groups, how)
                for i in range(len(seq) - 1):
                    if rng.random() < 0.15:
                        seq[i], seq[i + 1] = seq[i + 1], seq[i]
                off = pack(lv, groups, fit="best", sequence=seq)
                tag = f"{name}-perturbed{trial}"
                cands[tag], sizes[tag] = off, arena_size(lv, off)
            if sizes[best(list(sizes))] <= bound:
                break

    winner = best(list(sizes))
    off = cands[winner]
    check(lv, off, inplace=inplace)
    if sharing:
        mx_name = f"mxnet{'' if inplace else '-noinplace'}-range{match_range}"
    else:
        mx_name = "mxnet-nosharing"
    share_only = [n for n in sizes if "noinplace" in n] or ["naive"]
    reruns = backward_reruns(lv, off)
    pairs_used = []
    if inplace:
        for prs in lv.pairs.values():
            pairs_used.extend((i, o) for i, o in prs if off[i] == off[o])
    return MemoryPlan(
        offsets=off,
        arena_bytes=sizes[winner],
        strategy=winner,
        naive_bytes=sizes["naive"] + fixed_bytes,
        inplace_bytes=sizes["inplace"] + fixed_bytes,
        sharing_bytes=sizes[best(share_only)] + fixed_bytes,
        planned_bytes=sizes[winner] + fixed_bytes,
        lower_bound_bytes=lower_bound(lv, inplace) + fixed_bytes,
        mxnet_bytes=sizes[mx_name] + fixed_bytes,
        fixed_bytes=fixed_bytes,
        inplace_pairs=pairs_used,
        intervals={s: (lv.first[s], lv.last[s]) for s in lv.slots},
        poison=poison_events(lv, off, reruns),
        candidates=sizes,
        backward_reruns=reruns,
    )


def plan(lowered: list, nbytes: list, kinds: list, n_fwd: int | None = None, *,
         protected=(), node_inplace: dict | None = None, inplace: bool | None = None,
         match_range: int | None = None, retain_graph: bool = False,
         thorough: bool = True) -> MemoryPlan | None:
    """Plan the temp slots of a lowered graph in its order (see the module doc).
    ``protected``: temp slots read by the caller after a run (graph outputs), kept out of the
    arena. Returns None when there is nothing to plan."""
    protected = set(protected)
    temps = [s for s, kd in enumerate(kinds) if kd == "temp"]
    acc = kernel_accesses(lowered, node_inplace)
    candidates = [s for s in temps if s not in protected]
    lv = liveness(acc, nbytes, candidates, n_fwd, retain_graph)
    planned = set(lv.slots)
    fixed = sum(aligned(nbytes[s]) for s in temps if s not in planned)
    if not lv.slots:
        return None
    return plan_liveness(lv, inplace=inplace, match_range=match_range, fixed_bytes=fixed,
                         thorough=thorough)




# ---------------------------------------------------------------------------------------------
# before planning: gradients written in place, calls reordered
# ---------------------------------------------------------------------------------------------
def _pure_copy(k) -> bool:
    """Whether kernel ``k`` only copies one buffer into another, element by element."""
    if not isinstance(k, K.Kernel):
        return False
    stores: list = []

    def visit(stmts) -> bool:
        for s in stmts:
            if isinstance(s, K.Store):
                stores.append(s)
            elif isinstance(s, K.For):
                if not visit(s.body):
                    return False
            else:
                return False
        return True

    if not visit(k.body) or len(stores) != 1:
        return False
    st = stores[0]
    v = st.value
    if isinstance(v, K.Cast) and v.dtype == v.a.dtype:
        v = v.a
    return isinstance(v, K.Load) and v.index == st.index and v.buf.dtype == st.buf.dtype


def elide_copies(lowered: list, nbytes: list, kinds: list, n_fwd: int, copies: dict,
                 protected=()) -> tuple:
    """Let the producers of gradients write straight into the bound gradient arrays.

    ``copies`` maps a temp slot S to a slot G that a ``grad_write`` kernel fills with a plain
    copy of S. When S is touched only by the backward section, is no graph output and has G's
    size, and G is touched by nothing but that copy, every access of S becomes an access of
    G and the copy disappears (MXNet's backward ops likewise write into the gradient arrays
    with kWriteTo). Returns (new kernel list, {S: G} renamed)."""
    protected = set(protected)
    touching: dict = defaultdict(list)
    for j, lk in enumerate(lowered):
        for s in set(lk.slots):
            touching[s].append(j)
    drop: set = set()
    rename: dict = {}
    for s, g in copies.items():
        if kinds[s] != "temp" or s in protected or nbytes[s] != nbytes[g] or s in rename:
            continue
        if any(j < n_fwd for j in touching.get(s, ())):
            continue
        users_g = touching.get(g, [])
        if len(users_g) != 1:
            continue
        j = users_g[0]
        lk = lowered[j]
        if set(lk.slots) != {s, g} or not _pure_copy(lk.kernel):
            continue
        a = kernel_accesses([lk])[0]
        if a.reads != frozenset([s]) or a.writes != frozenset([g]):
            continue
        drop.add(j)
        rename[s] = g
    if not rename:
        return lowered, {}
    out = []
    for j, lk in enumerate(lowered):
        if j in drop:
            continue
        if any(s in rename for s in lk.slots):
            lk = replace(lk, slots=[rename.get(s, s) for s in lk.slots])
            if getattr(lk, "buf_slots", None):
                lk.buf_slots = {b: rename.get(s, s) for b, s in lk.buf_slots.items()}
        out.append(lk)
    for s in rename:
        nbytes[s] = 0
        kinds[s] = "alias"
    return out, rename


def enabled(option: bool | None = True) -> bool:
    """Planning on unless the option or ``MXC_PLAN_MEMORY=0`` turns it off."""
    if option is False:
        return False
    return os.environ.get("MXC_PLAN_MEMORY", "1").strip().lower() not in (
        "0", "false", "no", "off")


def plan_program(lowered: list, nbytes: list, kinds: list, n_fwd: int, *, protected=(),
                 node_inplace: dict | None = None, retain_graph: bool = False,
                 inplace: bool | None = None, match_range: int | None = None) -> tuple:
    """The planning step of a build: try the calls' order as lowered and reordered for memory
    (``compiler.reorder``, per section), keep the order whose peak of live bytes is lowest,
    and plan it. Returns (kernel list in the chosen order, MemoryPlan or None)."""
    from .reorder import reorder, units_by_node

    inplace = env_inplace() if inplace is None else inplace
    protected = set(protected)
    acc = kernel_accesses(lowered, node_inplace)
    plannable = [s for s, kd in enumerate(kinds) if kd == "temp" and s not in protected]
    if len(plannable) < 2:
        return lowered, None
    n = len(lowered)
    n_fwd = min(n_fwd, n)
    size = {s: aligned(nbytes[s]) for s in plannable}
    nodes = [lk.node for lk in lowered]
    fwd_touched: set = set()
    for a in acc[:n_fwd]:
        fwd_touched.update(a.reads | a.writes)
    keep = fwd_touched if retain_graph else set()

    orders = [list(range(n))]
    bwd = reorder(acc, size, plannable, units_by_node(nodes, n_fwd, n), keep)
    fwd = reorder(acc, size, plannable, units_by_node(nodes, 0, n_fwd))
    orders.append(list(range(n_fwd)) + bwd)
    orders.append(fwd + bwd)

    def peak(order):
        lv = liveness([acc[i] for i in order], nbytes, plannable, n_fwd, retain_graph)
        return lower_bound(lv, inplace), lv

    best = None
    for order in orders:
        pk, lv = peak(order)
        if best is None or pk < best[0]:
            best = (pk, lv, order)
    _, lv, order = best
    if order != orders[0]:
        lowered = [lowered[i] for i in order]
    temps = [s for s, kd in enumerate(kinds) if kd == "temp"]
    planned = set(lv.slots)
    fixed = sum(aligned(nbytes[s]) for s in temps if s not in planned)
    if not lv.slots:
        return lowered, None
    return lowered, plan_liveness(lv, inplace=inplace, match_range=match_range,
                                  fixed_bytes=fixed)


__all__ = ["ALIGN", "Access", "Liveness", "MemoryPlan", "aligned", "check", "elide_copies",
           "enabled", "kernel_accesses", "liveness", "lower_bound", "mxnet_blocks", "pack",
           "plan", "plan_liveness", "plan_program"]
