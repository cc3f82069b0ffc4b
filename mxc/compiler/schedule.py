"""Scheduling: turn a tensor expression (``ComputeOp``) into a loop-nest ``Kernel``.

The default schedule, good for elementwise, broadcast, injective and row-wise reduction ops:

* the output's leading dimensions are fused into one *parallel* task loop (so even batch-1
  tensors split across threads), the last dimension is the *vector* loop the LLVM loop
  vectorizer works on; very long rows are cut into chunks that become tasks too;
* every ``Reduce`` is computed at the shallowest loop level that binds all the variables it
  depends on, so a softmax row maximum is computed once per row, not once per element, and
  identical reductions are computed once (structural equality);
* a small reduction (at most UNROLL_MAX terms, e.g. a pooling window) that depends on the
  vector loop's index is unrolled into the element's expression: a reduction loop inside the
  vector loop would keep LLVM's loop vectorizer (innermost loops only) from vectorizing it.
"""
from __future__ import annotations

import itertools
import math

from ..ir import kernel as K
from ..ir.dtypes import DType

CHUNK = 4096          # inner-loop length when a long row is cut into tasks
MIN_TASKS = 8         # below this many outer rows, long rows are chunked for parallelism
UNROLL_MAX = 32       # reductions of at most this many terms inside the vector loop unroll


class _Level:
    def __init__(self, bound: frozenset) -> None:
        self.bound = bound
        self.pre: list = []
        self.memo: dict = {}


def _identity(op: str, dtype: DType) -> K.Expr:
    if op == "sum":
        return K.const(0, dtype)
    if op == "prod":
        return K.const(1, dtype)
    if dtype.kind == "f":
        return K.const(float("-inf") if op in ("max", "argmax") else float("inf"), dtype)
    if dtype.kind == "b":
        return K.const(op in ("min", "argmin"), dtype)
    bits = dtype.itemsize * 8
    if dtype.kind == "u":
        return K.const(0 if op in ("max", "argmax") else (1 << bits) - 1, dtype)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return K.const(lo if op in ("max", "argmax") else hi, dtype)


class _Lowerer:
    def __init__(self) -> None:
        self.levels: list[_Level] = []
        self.n_locals = 0

    def local(self, dtype: DType, hint: str) -> K.Local:
        self.n_locals += 1
        return K.Local(f"%{hint}{self.n_locals}", dtype)

    def expr(self, e: K.Expr) -> K.Expr:
        """Rewrite ``e`` with every Reduce replaced by a local computed at its level."""
        if not _has_reduce(e):
            return e
        if isinstance(e, K.Reduce):
            return self.reduce(e)
        if isinstance(e, K.Load):
            return K.Load(e.buf, self.expr(e.index))
        if isinstance(e, K.Bin):
            return K.Bin(e.op, self.expr(e.a), self.expr(e.b), e.dtype)
        if isinstance(e, K.Unary):
            return K.Unary(e.op, self.expr(e.a), e.dtype)
        if isinstance(e, K.Cast):
            return K.Cast(e.dtype, self.expr(e.a))
        if isinstance(e, K.Call):
            return K.Call(e.func, tuple(self.expr(a) for a in e.args), e.dtype)
        if isinstance(e, K.Select):
            return K.Select(self.expr(e.cond), self.expr(e.a), self.expr(e.b))
        return e

    def reduce(self, r: K.Reduce) -> K.Expr:
        if not r.axes:
            return K.cast(r.dtype, self.expr(r.body)) if r.op not in ("argmax", "argmin") \
                else K.const(0, r.dtype)
        fv = K.free_vars(r)
        depth = 0
        for d, lv in enumerate(self.levels):
            if lv.bound & fv:
                depth = d
        level = self.levels[depth]
        if r in level.memo:
            return level.memo[r]
        if self._unrollable(r, depth):
            level.memo[r] = self._unrolled(r)
            return level.memo[r]
        saved = self.levels
        self.levels = self.levels[: depth + 1]
        arg = r.op in ("argmax", "argmin")
        orig = r
        body = r.body
        if r.op in ("sum", "prod") and r.dtype != body.dtype:
            body = K.cast(r.dtype, body)  # accumulate in the requested type (bool/int8 sums)
            r = K.Reduce(r.op, body, r.axes, r.dtype)
        vdtype = r.body.dtype
        acc = self.local(vdtype, "acc")
        stmts = [K.Assign(acc, _identity(r.op, vdtype))]
        idx_local = None
        if arg:
            idx_local = self.local(K.INDEX, "arg")
            stmts.append(K.Assign(idx_local, K.const(0, K.INDEX)))
        # one level per reduction axis, so nested reductions hoist to the right loop
        inner_levels = []
        for ax in r.axes:
            lv = _Level(frozenset([ax.var]))
            self.levels.append(lv)
            inner_levels.append(lv)
        val = self.expr(r.body)
        innermost = inner_levels[-1]
        if arg:
            flat: K.Expr = K.const(0, K.INDEX)
            for ax in r.axes:
                flat = flat * K.const(ax.extent, K.INDEX) + ax.var
            better = val.gt(acc) if r.op == "argmax" else val.lt(acc)
            # the first element always wins, so an all-NaN/-inf row still yields index 0
            take = better | flat.eq(K.const(0, K.INDEX)) if r.axes else better
            innermost.pre.append(K.Assign(idx_local, K.Select(take, flat, idx_local)))
            innermost.pre.append(K.Assign(acc, K.Select(take, val, acc)))
        else:
            combine = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[r.op]
            innermost.pre.append(K.Assign(acc, K.Bin(combine, acc, val, vdtype), ))
            innermost.pre[-1].reassoc = True  # type: ignore[attr-defined]
        # build the loops inside-out; each axis loop starts with its hoisted statements
        # argmax/argmin chains of selects make LLVM 22's vectorizer take exponential time:
        # keep those scalar (max/min use llvm.maximum/minimum, which it vectorizes)
        inner_kind = "novector" if (arg and vdtype.kind == "f") else "vector"
        loop = K.For(r.axes[-1].var, K.const(r.axes[-1].extent, K.INDEX), innermost.pre,
                     inner_kind)
        for ax, lv in reversed(list(zip(r.axes[:-1], inner_levels[:-1]))):
            loop = K.For(ax.var, K.const(ax.extent, K.INDEX), lv.pre + [loop],
                         "novector" if inner_kind == "novector" else "serial")
        stmts.append(loop)
        self.levels = saved
        result: K.Expr = idx_local if arg else acc
        if result.dtype != r.dtype:
            result = K.cast(r.dtype, result)
        level.pre.extend(stmts)
        level.memo[orig] = result
        return result


    def _unrollable(self, r: K.Reduce, depth: int) -> bool:
        """Computed per element of the vector loop (the kernel's two levels, bound at the
        inner one), small, a plain fold, nothing nested."""
        return (len(self.levels) == 2 and depth == 1 and r.op in ("sum", "prod", "max", "min")
                and math.prod(ax.extent for ax in r.axes) <= UNROLL_MAX
                and not _has_reduce(r.body))

    def _unrolled(self, r: K.Reduce) -> K.Expr:
        """``r`` as a left fold over its terms in loop order (the loop's exact arithmetic)."""
        body = r.body
        if r.op in ("sum", "prod") and r.dtype != body.dtype:
            body = K.cast(r.dtype, body)
        vdtype = body.dtype
        combine = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[r.op]
        acc: K.Expr = _identity(r.op, vdtype)
        for taps in itertools.product(*(range(int(ax.extent)) for ax in r.axes)):
            term = K.substitute(body, {ax.var: K.const(t, K.INDEX)
                                       for ax, t in zip(r.axes, taps)})
            acc = K.Bin(combine, acc, term, vdtype)
        return acc if acc.dtype == r.dtype else K.cast(r.dtype, acc)


def _has_reduce(e: K.Expr, _cache: dict = {}) -> bool:  # noqa: B006 - deliberate memo
    if isinstance(e, K.Reduce):
        return True
    return any(_has_reduce(c) for c in K.children(e))


def schedule(op: K.ComputeOp, name: str, buffers: list) -> K.Kernel:
    """Lower one compute to a kernel over ``buffers`` (the kernel's argument order)."""
    shape = tuple(int(s) for s in op.out.shape)
    axes = op.axes
    body_expr = op.body
    if not shape:  # 0-d output: a single element
        shape, axes = (1,), (K.index_var("s"),)
        body_expr = K.substitute(body_expr, {}) if not op.axes else body_expr
        out_index = lambda idx: K.const(op.out.offset, K.INDEX)  # noqa: E731
    else:
        out_index = op.out.flat_index
    n = math.prod(shape)
    task = K.Var(f"task{name}")
    low = _Lowerer()
    if n == 0:
        return K.Kernel(name, buffers, task, 0, [], note="empty")
    outer_shape = list(shape[:-1])
    last = shape[-1]
    outer_n = math.prod(outer_shape)
    # chunking a row into tasks would make every chunk recompute the row's reductions
    chunked = last > 2 * CHUNK and outer_n < MIN_TASKS and not _reduces(op.body)
    n_chunks = -(-last // CHUNK) if chunked else 1
    n_tasks = outer_n * n_chunks
    # decompose the task index into the outer indices (and the chunk number)
    mapping: dict = {}
    rem: K.Expr = task
    chunk_var: K.Expr = K.const(0, K.INDEX)
    if chunked:
        chunk_var = rem % K.const(n_chunks, K.INDEX)
        rem = rem // K.const(n_chunks, K.INDEX)
    stride = outer_n
    for ax, d in zip(axes[:-1], outer_shape):
        stride //= d
        mapping[ax] = (rem // K.const(stride, K.INDEX)) % K.const(d, K.INDEX) if d > 1 \
            else K.const(0, K.INDEX)
    j = K.Var(f"j{name}")
    if chunked:
        start = chunk_var * K.const(CHUNK, K.INDEX)
        extent = K.minimum(K.const(CHUNK, K.INDEX), K.const(last, K.INDEX) - start)
        mapping[axes[-1]] = start + j
    else:
        extent = K.const(last, K.INDEX)
        mapping[axes[-1]] = j
    outer_vars = frozenset([task])
    body_expr = K.substitute(body_expr, mapping)
    out_idx = out_index([mapping[a] for a in axes]) if op.axes else out_index(())
    outer = _Level(outer_vars)
    inner = _Level(frozenset([j]))
    low.levels = [outer, inner]
    value = low.expr(body_expr)
    if value.dtype != op.out.dtype:
        value = K.cast(op.out.dtype, value)
    inner_loop = K.For(j, extent, inner.pre + [K.Store(op.out.buf, out_idx, value)], "vector")
    red = 1
    for r in _reduces(op.body):
        red = max(red, math.prod(ax.extent for ax in r.axes))
    cost = n * red * _op_weight(op.body)
    return K.Kernel(name, buffers, task, n_tasks, outer.pre + [inner_loop], cost=cost,
                    note=op.name)


def _reduces(e: K.Expr) -> list:
    out = []
    if isinstance(e, K.Reduce):
        out.append(e)
    for c in K.children(e):
        out.extend(_reduces(c))
    return out


def _op_weight(e: K.Expr) -> int:
    """Rough per-element cost: transcendental calls are ~20x a plain add."""
    w = 1
    if isinstance(e, K.Call):
        w += 20
    for c in K.children(e):
        w += _op_weight(c) - 1 if not isinstance(c, (K.Const, K.Var)) else 0
    return max(w, 1)
