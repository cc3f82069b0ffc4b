"""Operator fusion: producer computes inlined into their consumers at the tensor-expression
level, so chains of elementwise/broadcast/injective ops run as one kernel and reductions
(softmax, norms, loss heads built from primitives) absorb their elementwise prologues.

Ops lower to ``ComputeOp``s (``out[idx] = body(idx)``) that ``LowerCtx`` records unscheduled.
A compute is *inlined* — not materialized — when nothing but later computes of the same graph
section read its output: each ``Load(buf, index)`` of that output in a consumer becomes the
producer's body evaluated at the producer axes recovered from ``index`` (flat index -> axes by
div/mod of the producer's contiguous shape, simplified with the index ranges, so the common
case is the identity). Everything else (GEMM templates, offset kernels, multi-writer buffers,
graph outputs, values the backward section needs, hidden outputs such as BatchNorm's saved
statistics) stays materialized.

Cost guard: a producer is *cheap* when its own body has no math call and no reduction and few
operations. A producer that is not cheap is inlined only where each of its elements is
evaluated at most once (counted with the scheduler's hoisting of reductions; paths that read
element for element and meet in one kernel count once, as the renderer computes equal
expressions once), a reduction only into its sole consumer and not inside another reduction,
so transcendental work is never multiplied. A producer evaluated in several kernels is
duplicated only while it stays cheap with what it absorbed and the duplicates read no more
memory than materializing it would. No producer moves into a kernel with much less
parallelism (e.g. a full reduction).

Before inlining, ``fuse_epilogue`` folds relu / residual-add consumers of matrix products into
the GEMM template's epilogue.

Needs: the deferred lowered kernel list and the slot table. Provides: scheduled kernels,
the section boundary, the unfused kernel count, the fused groups and the slots that are no
longer materialized.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from ..ir import kernel as K
from ..ir.dtypes import as_dtype
from .fuse_epilogue import fuse_gemm_epilogues
from .lower import LoweredKernel, schedule_deferred
from .schedule import CHUNK, MIN_TASKS, schedule

CHEAP_WEIGHT = 32       # a producer without calls/reductions at most this heavy is "cheap"
MAX_TREE = 4000         # inlined expression trees larger than this stay materialized
_EPS = 1e-9


def fusion_enabled(option: bool | None = None) -> bool:
    """The compile option if given, else ``MXNET_USE_FUSION`` (default on)."""
    if option is not None:
        return bool(option)
    v = os.environ.get("MXNET_USE_FUSION", "1").strip().lower()
    return v not in ("0", "false", "off", "no")


@dataclass
class FusionResult:
    kernels: list                     # LoweredKernel, scheduled, in run order
    n_fwd: int                        # kernels of the forward section
    kernels_unfused: int              # kernels the graph lowers to without fusion
    groups: list = field(default_factory=list)          # node names per fused kernel
    inlined_slots: set = field(default_factory=set)     # slots no kernel writes any more


def fuse(lowered: list, slot_nbytes: list, slot_kinds: list, n_fwd: int, *,
         keep: set = frozenset(), owner: dict | None = None,
         enabled: bool = True) -> FusionResult:
    """Schedule ``lowered`` (LowerCtx output, computes deferred), inlining producers when
    ``enabled``. ``keep``: slots that must be materialized (graph outputs); ``owner``: node
    name per node-output slot (outputs read only by their own node are hidden outputs and
    stay materialized)."""
    if not enabled:
        out = [schedule_deferred(lk) if lk.kernel is None else _as_member(lk) for lk in lowered]
        groups = [lk.members for lk in out if len(lk.members) > 1]
        return FusionResult(out, n_fwd, len(lowered), groups)
    unfused = len(lowered)
    lowered, n_fwd, gone = fuse_gemm_epilogues(lowered, slot_nbytes, slot_kinds, n_fwd,
                                               set(keep))
    res = _Fuser(lowered, slot_nbytes, slot_kinds, n_fwd, set(keep), owner or {}).run()
    res.kernels_unfused = unfused
    res.inlined_slots |= gone
    return res


def _as_member(lk: LoweredKernel) -> LoweredKernel:
    if lk.members is None:
        lk.members = [lk.node]
    return lk


# ---------------------------------------------------------------------------------------------
# the pass
# ---------------------------------------------------------------------------------------------
@dataclass
class _Item:
    pos: int
    lk: LoweredKernel
    section: int
    out_slot: int = -1
    reads: frozenset = frozenset()
    writes: frozenset = frozenset()


@dataclass
class _Inlined:
    """A producer that is not materialized: its final body over its own axes."""

    axes: tuple
    shape: tuple
    body: K.Expr
    reads: frozenset          # slots its final body loads
    nodes: list               # node names it stands for (itself and what it absorbed)


class _Fuser:
    def __init__(self, lowered, nbytes, kinds, n_fwd, keep, owner) -> None:
        self.lowered = lowered
        self.nbytes = nbytes
        self.kinds = kinds
        self.n_fwd = n_fwd
        self.keep = keep
        self.owner = owner
        self.items: list[_Item] = []
        for i, lk in enumerate(lowered):
            it = _Item(i, lk, 0 if i < n_fwd else 1)
            if lk.kernel is None:
                op = lk.compute
                it.out_slot = lk.buf_slots[op.out.buf]
                it.writes = frozenset([it.out_slot])
                it.reads = frozenset(lk.buf_slots[b] for b in _load_buffers(op.body))
            else:   # templates, offset kernels: may read and write any argument
                it.writes = it.reads = frozenset(lk.slots)
            self.items.append(it)
        self.node_pos: dict = {}
        for it in self.items:
            self.node_pos.setdefault(it.lk.node, it.pos)
        self.readers: dict = {}
        self.writers: dict = {}
        for it in self.items:
            for s in it.reads:
                self.readers.setdefault(s, []).append(it.pos)
            for s in it.writes:
                self.writers.setdefault(s, []).append(it.pos)

    # -- which computes could be inlined -------------------------------------------------------
    def candidate(self, it: _Item) -> bool:
        lk = it.lk
        if lk.kernel is not None:
            return False
        s = it.out_slot
        op = lk.compute
        if s in self.keep or self.kinds[s] != "temp" or self.writers.get(s) != [it.pos]:
            return False
        if s in it.reads:
            return False
        out = op.out
        if out.offset != 0 or out.size * out.dtype.itemsize != self.nbytes[s] or \
                not _contiguous(out):
            return False
        readers = [r for r in self.readers.get(s, []) if r != it.pos]
        if not readers:
            return False
        for r in readers:
            ri = self.items[r]
            if r < it.pos or ri.lk.kernel is not None or ri.section != it.section:
                return False
        own = self.owner.get(s)
        if own is not None and all(self.items[r].lk.node == own for r in readers):
            return False    # a hidden output (saved statistics, masks): read back by callers
        return not self.hazard(it.reads, it.pos, max(readers))

    def hazard(self, reads, start: int, end: int) -> bool:
        """Whether a slot in ``reads`` is written by a kernel in (start, end]."""
        for s in reads:
            for w in self.writers.get(s, ()):
                if start < w <= end:
                    return True
        return False

    # -- decisions: consumers first, so a producer knows how often it would be evaluated ------
    def decide(self) -> dict:
        """pos -> duplicated? for the computes to inline. For each, ``sinks`` records the kernels it
        would end up in: sink pos -> (evaluations per element, hoisted evaluations, inside a
        reduction, read element-for-element on every path). Paths that are all
        element-for-element reach a sink with the same index, where the renderer computes
        the (structurally equal) expression once."""
        sinks: dict = {}
        reads_cache: dict = {}
        virtual: dict = {}
        for it in reversed(self.items):
            if not self.candidate(it):
                continue
            s = it.out_slot
            op = it.lk.compute
            size = max(op.out.size, 1)
            per: dict = {}
            readers = [r for r in self.readers[s] if r != it.pos]
            for r in readers:
                rop = self.items[r].lk.compute
                if r not in reads_cache:
                    reads_cache[r] = _reads(rop, self.items[r].lk.buf_slots)
                e, h, red = reads_cache[r].get(s, (0, 0, False))
                ident = _identity_read(rop, self.items[r].lk.buf_slots, s, op)
                e, h = e / size, h / size
                if r in virtual:
                    paths = [(k, e * m, h * mh, red or rk, ident and ik)
                             for k, (m, mh, rk, ik) in sinks[r].items()]
                else:
                    paths = [(r, e, h, red, ident)]
                for k, m, mh, rk, ik in paths:
                    if k not in per:
                        per[k] = (m, mh, rk, ik)
                    else:
                        pm, pmh, prk, pik = per[k]
                        if pik and ik:
                            per[k] = (max(pm, m), max(pmh, mh), prk or rk, True)
                        else:
                            per[k] = (pm + m, pmh + mh, prk or rk, False)
            m_elem = sum(v[0] for v in per.values())
            m_hoist = sum(v[1] for v in per.values())
            in_reduce = any(v[2] for v in per.values())
            body = op.body
            has_call, has_red = _has_call(body), _has_reduce(body)
            cheap = not has_call and not has_red and _weight(body) <= CHEAP_WEIGHT
            ok = True
            if not cheap:
                if has_call and m_elem > 1 + _EPS:
                    ok = False
                if has_red and (m_hoist > 1 + _EPS or in_reduce or len(per) > 1):
                    ok = False
            # never move work into a kernel with much less parallelism (e.g. a full
            # reduction); a flat sink reading element for element adopts the producer's
            # shape (_adopt_domain)
            own = _tasks(op)
            min_tasks = min(max(_tasks(self.items[k].lk.compute), own if v[3] else 0)
                            for k, v in per.items())
            if min_tasks < min(own, 16):
                ok = False
            if ok:
                virtual[it.pos] = m_elem > 1 + _EPS    # True: evaluated more than once
                sinks[it.pos] = per
        self.sinks = sinks
        return virtual

    # -- building the kernels ------------------------------------------------------------------
    def run(self) -> FusionResult:
        virtual = self.decide()
        self.canon: dict = {}    # (slot, dtype) -> Buffer; buffer -> slot in self.canon_slot
        self.canon_slot: dict = {}
        inlined: dict = {}       # slot -> _Inlined
        out: list = []
        n_fwd = len(self.items)
        for it in self.items:
            if it.pos == self.n_fwd:
                n_fwd = len(out)
            lk = it.lk
            if lk.kernel is not None:
                out.append(_as_member(lk))
                continue
            uses = any(s in inlined for s in it.reads)
            if it.pos in virtual:
                op, nodes, reads = self.build(it, inlined)
                last = max(r for r in self.readers[it.out_slot] if r != it.pos)
                dup_ok = not virtual[it.pos] or self.duplicable(it, op, reads)
                if dup_ok and not self.hazard(reads, it.pos, last) and \
                        _tree_size(op.body) <= MAX_TREE:
                    inlined[it.out_slot] = _Inlined(op.axes, tuple(op.out.shape), op.body,
                                                    reads, nodes)
                    continue
            if not uses:
                out.append(schedule_deferred(lk))
                continue
            op, nodes, reads = self.build(it, inlined)
            out.append(self.emit(it, op, nodes))
        if self.n_fwd >= len(self.items):
            n_fwd = len(out)
        groups = [k.members for k in out if len(k.members) > 1]
        return FusionResult(out, n_fwd, len(self.items), groups, set(inlined))

    def duplicable(self, it: _Item, op: K.ComputeOp, reads) -> bool:
        """Whether a producer evaluated in m > 1 kernels is still worth inlining with what
        it absorbed: cheap, and m kernels each reading its k large inputs move no more
        memory than writing it once and reading it m times (m*k <= k + 1 + m)."""
        if _weight(op.body) > CHEAP_WEIGHT or _has_call(op.body):
            return False
        m = len(self.sinks.get(it.pos, ())) or 2
        big = self.nbytes[it.out_slot] / 4
        k = sum(1 for s in reads if self.nbytes[s] >= big)
        return m * k <= k + 1 + m

    def cbuf(self, s: int, d) -> K.Buffer:
        """The one buffer standing for slot ``s`` in fused expressions (buffer descriptions
        of different nodes may be equal while naming different slots)."""
        b = self.canon.get((s, d))
        if b is None:
            b = K.Buffer(f"s{s}", d, self.nbytes[s] // max(d.itemsize, 1))
            self.canon[(s, d)] = b
            self.canon_slot[b] = s
        return b

    def build(self, it: _Item, inlined: dict):
        """The compute of ``it`` over canonical buffers, inlined producers substituted."""
        lk = it.lk
        op = _adopt_domain(lk.compute, lk.buf_slots, inlined)
        bslots = lk.buf_slots
        ext = _extents(op)
        cache: dict = {}
        nodes: list = []
        reads: set = set()
        memo: dict = {}

        def go(x: K.Expr) -> K.Expr:
            k = id(x)
            if k in memo:
                return memo[k][1]
            if isinstance(x, K.Load):
                idx = go(x.index)
                s = bslots[x.buf]
                v = inlined.get(s)
                if v is None:
                    reads.add(s)
                    r = K.Load(self.cbuf(s, x.buf.dtype), idx)
                else:
                    key = (s, idx)
                    r = cache.get(key)
                    if r is None:
                        r = _instantiate(v, idx, ext)
                        cache[key] = r
                    for n in v.nodes:
                        if n not in nodes:
                            nodes.append(n)
                    reads.update(v.reads)
            else:
                r = _rebuild(x, go)
            memo[k] = (x, r)
            return r

        body = go(op.body)
        if nodes:
            body = _simplify_indices(body, ext)
        if lk.node not in nodes:
            nodes.append(lk.node)
        nodes.sort(key=lambda n: self.node_pos.get(n, 0))
        out = K.TensorRef(self.cbuf(bslots[op.out.buf], op.out.dtype), op.out.shape,
                          op.out.strides, op.out.offset)
        return K.ComputeOp(out, op.axes, body, op.name), nodes, frozenset(reads)

    def emit(self, it: _Item, op: K.ComputeOp, nodes: list) -> LoweredKernel:
        lk = it.lk
        bufs = list(dict.fromkeys(_load_buffers(op.body) + [op.out.buf]))
        kern = schedule(op, "__K__", bufs)
        kern.note = f"{op.name} (fused {len(nodes)})"
        name = lk.node
        if lk.node_op == "_grad_out" and len(nodes) > 1:
            # a gradient copy takes the name of the (last) op it absorbed
            name = [n for n in nodes if n != lk.node][-1]
        return LoweredKernel(kern, [self.canon_slot[b] for b in bufs], name,
                             node_op=lk.node_op, members=nodes)


# ---------------------------------------------------------------------------------------------
# expression helpers
# ---------------------------------------------------------------------------------------------
def _rebuild(x: K.Expr, go) -> K.Expr:
    if isinstance(x, K.Bin):
        a, b = go(x.a), go(x.b)
        return x if (a is x.a and b is x.b) else K.Bin(x.op, a, b, x.dtype)
    if isinstance(x, K.Unary):
        a = go(x.a)
        return x if a is x.a else K.Unary(x.op, a, x.dtype)
    if isinstance(x, K.Cast):
        a = go(x.a)
        return x if a is x.a else K.Cast(x.dtype, a)
    if isinstance(x, K.Call):
        args = tuple(go(a) for a in x.args)
        return x if all(a is b for a, b in zip(args, x.args)) else K.Call(x.func, args, x.dtype)
    if isinstance(x, K.Select):
        c, a, b = go(x.cond), go(x.a), go(x.b)
        return x if (c is x.cond and a is x.a and b is x.b) else K.Select(c, a, b)
    if isinstance(x, K.Reduce):
        b = go(x.body)
        return x if b is x.body else K.Reduce(x.op, b, x.axes, x.dtype)
    if isinstance(x, K.Load):
        i = go(x.index)
        return x if i is x.index else K.Load(x.buf, i)
    return x


def _walk(e: K.Expr, visit) -> None:
    seen: set = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        visit(x)
        stack.extend(K.children(x))


def _load_buffers(e: K.Expr) -> list:
    out: list = []

    def v(x):
        if isinstance(x, K.Load):
            out.append(x.buf)

    _walk(e, v)
    return list(dict.fromkeys(out))


def _has_call(e: K.Expr) -> bool:
    found = []

    def v(x):
        if isinstance(x, K.Call) or (isinstance(x, K.Bin) and x.op in ("pow", "atan2")):
            found.append(x)

    _walk(e, v)
    return bool(found)


def _has_reduce(e: K.Expr, trivial: bool = False) -> bool:
    """Whether ``e`` reduces over more than one element (``trivial``: any Reduce, also the
    one-element sums ops use to hoist per-channel factors)."""
    found = []
    _walk(e, lambda x: found.append(x) if isinstance(x, K.Reduce) and (
        trivial or math.prod(ax.extent for ax in x.axes) > 1) else None)
    return bool(found)


def _weight(e: K.Expr) -> int:
    """Operations in the expression DAG (shared sub-trees once)."""
    n = [0]

    def v(x):
        if not isinstance(x, (K.Const, K.Var)):
            n[0] += 20 if isinstance(x, K.Call) else 1

    _walk(e, v)
    return n[0]


def _tree_size(e: K.Expr, cap: int = MAX_TREE + 1) -> int:
    """Nodes of the expression as a tree (what non-memoized traversals visit)."""
    memo: dict = {}

    def go(x):
        k = id(x)
        if k in memo:
            return memo[k][1]
        n = 1 + sum(go(c) for c in K.children(x))
        n = min(n, cap)
        memo[k] = (x, n)
        return n

    return go(e)


def _contiguous(ref: K.TensorRef) -> bool:
    want = K.contiguous_strides(ref.shape)
    return all(d == 1 or s == w for d, s, w in zip(ref.shape, ref.strides, want))


def _tasks(op: K.ComputeOp) -> int:
    """Parallel tasks of the default schedule (compiler.schedule)."""
    shape = tuple(int(s) for s in op.out.shape) or (1,)
    outer = math.prod(shape[:-1])
    last = shape[-1]
    if last > 2 * CHUNK and outer < MIN_TASKS and not _has_reduce(op.body):
        return outer * -(-last // CHUNK)
    return outer


def _identity_read(rop: K.ComputeOp, bslots: dict, s: int, pop: K.ComputeOp) -> bool:
    """Whether ``rop`` reads slot ``s`` only element for element: one distinct load, at the
    flat position of its own output element, of a producer of the same size."""
    if rop.out.size != pop.out.size or not _contiguous(rop.out):
        return False
    loads = []
    _walk(rop.body, lambda x: loads.append(x) if isinstance(x, K.Load) and
          bslots.get(x.buf) == s else None)
    if len(set(loads)) != 1:
        return False
    own = K.TensorRef(rop.out.buf, rop.out.shape).flat_index(rop.axes) if rop.axes else \
        K.const(0, K.INDEX)
    return _lin(loads[0].index) == _lin(own)


def _extents(op: K.ComputeOp) -> dict:
    ext = {ax: int(d) for ax, d in zip(op.axes, op.out.shape)}

    def v(x):
        if isinstance(x, K.Reduce):
            for ax in x.axes:
                ext[ax.var] = int(ax.extent)

    _walk(op.body, v)
    return ext


def _reads(op: K.ComputeOp, bslots: dict) -> dict:
    """slot -> (element evaluations, evaluations with reductions hoisted, read inside a
    reduction) of every slot ``op`` loads, following the scheduler: the outer output dims are
    the task level, the last dim the inner level, a reduction is computed once per level that
    binds its free variables; structurally equal loads at one level count once."""
    shape = tuple(int(s) for s in op.out.shape)
    if shape:
        n = math.prod(shape)
        outer_n = math.prod(shape[:-1])
        levels = ((frozenset(op.axes[:-1]), outer_n), (frozenset(op.axes[-1:]), n))
    else:
        levels = ((frozenset(), 1),)
    res: dict = {}
    seen: set = set()
    counted: set = set()
    alive: list = []

    def depth_of(fv, lv) -> int:
        d = 0
        for i, (bound, _) in enumerate(lv):
            if bound & fv:
                d = i
        return d

    def go(x, lv, in_red):
        key = (id(x), id(lv))
        if key in seen:
            return
        seen.add(key)
        if isinstance(x, K.Load):
            s = bslots.get(x.buf)
            if s is not None and (x, lv) not in counted:
                counted.add((x, lv))
                cnt = lv[-1][1]
                hoisted = lv[depth_of(K.free_vars(x.index), lv)][1]
                e, h, r = res.get(s, (0, 0, False))
                res[s] = (e + cnt, h + hoisted, r or in_red)
            go(x.index, lv, in_red)
            return
        if isinstance(x, K.Reduce):
            d = depth_of(K.free_vars(x), lv)
            base = lv[: d + 1]
            cnt = base[-1][1]
            inner = list(base)
            for ax in x.axes:
                cnt *= max(int(ax.extent), 1)
                inner.append((frozenset([ax.var]), cnt))
            inner_t = tuple(inner)
            alive.append(inner_t)
            go(x.body, inner_t, True)
            return
        for c in K.children(x):
            go(c, lv, in_red)

    go(op.body, levels, False)
    return res


# ---------------------------------------------------------------------------------------------
# index algebra: linear forms over variables and opaque atoms
# ---------------------------------------------------------------------------------------------
def _lin(e: K.Expr):
    """(const, {term: coeff}) for an int64 index expression; non-linear parts are atoms."""
    if isinstance(e, K.Const) and e.dtype.kind in "iu":
        return int(e.value), {}
    if isinstance(e, K.Bin) and e.dtype == K.INDEX:
        if e.op in ("add", "sub"):
            ca, ta = _lin(e.a)
            cb, tb = _lin(e.b)
            sg = 1 if e.op == "add" else -1
            t = dict(ta)
            for k, v in tb.items():
                t[k] = t.get(k, 0) + sg * v
            return ca + sg * cb, {k: v for k, v in t.items() if v}
        if e.op == "mul":
            for x, y in ((e.a, e.b), (e.b, e.a)):
                if isinstance(y, K.Const):
                    c, t = _lin(x)
                    m = int(y.value)
                    return c * m, {k: v * m for k, v in t.items() if v * m}
    return 0, {e: 1}


def _combine(c: int, t: dict):
    """Fold (X // D) * D*k + (X % D) * k into X * k."""
    changed = True
    while changed:
        changed = False
        for a in list(t):
            if isinstance(a, K.Bin) and a.op == "mod" and isinstance(a.b, K.Const):
                dv = K.Bin("div", a.a, a.b, a.dtype)
                k = t[a]
                D = int(a.b.value)
                if t.get(dv) == k * D:
                    del t[a]
                    del t[dv]
                    cx, tx = _lin(a.a)
                    c += k * cx
                    for kk, v in tx.items():
                        t[kk] = t.get(kk, 0) + k * v
                        if not t[kk]:
                            del t[kk]
                    changed = True
                    break
    return c, t


def _term_max(t: K.Expr, ext: dict):
    if isinstance(t, K.Var):
        e = ext.get(t)
        return None if e is None else e - 1
    if isinstance(t, K.Bin) and isinstance(t.b, K.Const) and int(t.b.value) > 0:
        if t.op == "mod" and _nonneg(t.a, ext):
            return int(t.b.value) - 1
        if t.op == "div":
            m = _max(_lin(t.a), ext)
            return None if m is None else m // int(t.b.value)
    return None


def _nonneg(e: K.Expr, ext: dict) -> bool:
    c, t = _lin(e)
    return c >= 0 and all(v > 0 and _term_nonneg(k, ext) for k, v in t.items())


def _term_nonneg(t, ext) -> bool:
    if isinstance(t, K.Var):
        return t in ext
    if isinstance(t, K.Bin) and t.op in ("div", "mod") and isinstance(t.b, K.Const):
        return int(t.b.value) > 0 and _nonneg(t.a, ext)
    return False


def _max(lin, ext: dict):
    c, t = lin
    total = c
    for k, v in t.items():
        m = _term_max(k, ext)
        if m is None or v < 0:
            return None
        total += v * m
    return total


def _build(lin) -> K.Expr:
    c, t = lin
    e: K.Expr | None = None
    for k, v in t.items():
        term = k if v == 1 else k * K.const(v, K.INDEX)
        e = term if e is None else e + term
    if e is None:
        return K.const(c, K.INDEX)
    return e + K.const(c, K.INDEX) if c else e


def _split(lin, D: int, ext: dict):
    """(quotient lin, low lin, low fits below D) for a non-negative linear form, or None."""
    c, t = lin
    if c < 0 or any(v < 0 or not _term_nonneg(k, ext) for k, v in t.items()):
        return None
    q, r = divmod(c, D)
    high = {k: v // D for k, v in t.items() if v % D == 0}
    low = {k: v for k, v in t.items() if v % D != 0}
    m = _max((r, low), ext)
    return (q, high), (r, low), (m is not None and m < D)


def _div(lin, D: int, ext: dict):
    if D == 1:
        return lin
    sp = _split(lin, D, ext)
    if sp is None:
        return K.Bin("div", _build(lin), K.const(D, K.INDEX), K.INDEX)
    (q, high), low, fits = sp
    if fits:
        return q, high
    t = dict(high)
    lo = _build(low)
    if isinstance(lo, K.Const):
        return q + int(lo.value) // D, t
    t[K.Bin("div", lo, K.const(D, K.INDEX), K.INDEX)] = 1
    return q, t


def _mod(lin, D: int, ext: dict):
    if D == 1:
        return 0, {}
    sp = _split(lin, D, ext)
    if sp is None:
        return K.Bin("mod", _build(lin), K.const(D, K.INDEX), K.INDEX)
    _, low, fits = sp
    if fits:
        return low
    lo = _build(low)
    if isinstance(lo, K.Const):
        return int(lo.value) % D, {}
    return 0, {K.Bin("mod", lo, K.const(D, K.INDEX), K.INDEX): 1}


def _as_lin(x):
    return _lin(x) if isinstance(x, K.Expr) else x


def _unravel(index: K.Expr, shape: tuple, ext: dict) -> list:
    """Axes of a contiguous ``shape`` at flat element ``index``."""
    flat = _combine(*_lin(index))
    strides = K.contiguous_strides(shape)
    axes = []
    for d, s in zip(shape, strides):
        if d == 1:
            axes.append(K.const(0, K.INDEX))
            continue
        q = _as_lin(_div(flat, s, ext))
        axes.append(_build(_as_lin(_mod(q, d, ext))))
    return axes


def _instantiate(v: _Inlined, index: K.Expr, ext: dict) -> K.Expr:
    """The producer's value at flat ``index``, rounded as its store would round it
    (float16/bfloat16 values are computed in float32 and rounded when stored)."""
    body = v.body
    if v.axes:
        body = K.substitute(body, dict(zip(v.axes, _unravel(index, v.shape, ext))))
    if body.dtype.name in ("float16", "bfloat16"):
        body = K.Cast(body.dtype, K.Cast(as_dtype("float32"), body))
    return body


def _simplify_indices(e: K.Expr, ext: dict) -> K.Expr:
    """Re-normalize load indices after substitution (folds div/mod pairs back)."""
    memo: dict = {}

    def go(x):
        k = id(x)
        if k in memo:
            return memo[k][1]
        if isinstance(x, K.Load):
            idx = go(x.index)
            if isinstance(idx, K.Bin):
                c, t = _combine(*_lin(idx))
                if all(isinstance(a, K.Var) or (isinstance(a, K.Bin) and a.op in ("div", "mod"))
                       for a in t):
                    idx = _build((c, t))
            r = x if idx is x.index else K.Load(x.buf, idx)
        else:
            r = _rebuild(x, go)
        memo[k] = (x, r)
        return r

    return go(e)


def _adopt_domain(op: K.ComputeOp, bslots: dict, inlined: dict) -> K.ComputeOp:
    """A flat (1-D, contiguous) consumer reading an inlined N-d producer element for element
    is re-expressed over the producer's shape, so the producer's axes need no div/mod."""
    if len(op.axes) != 1 or op.out.strides[0] != 1:
        return op
    i = op.axes[0]
    best = None
    for b in _load_buffers(op.body):
        v = inlined.get(bslots[b])
        if v is None or len(v.shape) < 2 or math.prod(v.shape) != op.out.size:
            continue
        if best is None or len(v.shape) > len(best):
            best = v.shape
    if best is None:
        return op
    found = []
    _walk(op.body, lambda x: found.append(x) if isinstance(x, K.Load) and x.index == i and
          inlined.get(bslots[x.buf]) is not None and inlined[bslots[x.buf]].shape == best
          else None)
    if not found:
        return op
    axes = tuple(K.index_var("i") for _ in best)
    flat: K.Expr = K.const(0, K.INDEX)
    for a, s in zip(axes, K.contiguous_strides(best)):
        flat = flat + a * K.const(s, K.INDEX)
    body = K.substitute(op.body, {i: flat})
    out = K.TensorRef(op.out.buf, tuple(best), None, op.out.offset)
    return K.ComputeOp(out, axes, body, op.name)
