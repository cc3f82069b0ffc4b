"""The kernel IR: a small, target-neutral loop language that code generators render.

Two layers:

* **Expressions and statements** (``Const``, ``Load``, ``Bin``, ``Call``, ``Reduce``...;
  ``For``, ``Store``, ``Assign``...), from which CPU (LLVM) and later PTX code is rendered.
* **Tensor expressions** (:class:`TensorRef`, :func:`compute`), the way operators describe
  their outputs: ``out[i, j] = expr(i, j)`` with ``Reduce`` nodes for reductions, much like
  TVM's ``te.compute``. ``compiler.schedule`` turns a compute into a loop nest (parallel outer
  loop, vectorizable inner loop, reductions hoisted to the loop level they depend on).

Every kernel has one calling convention: ``void k(i64 task_begin, i64 task_end, ptr args,
ptr scratch)``; the outermost parallel loop runs tasks ``[task_begin, task_end)`` so the
runtime's thread pool (or an artifact's host callback) can split the work.

Expressions are immutable and compared structurally (dataclasses), so identical sub-trees are
computed once and IR text is a stable cache key.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

from .dtypes import DType, as_dtype

_names = itertools.count()

INDEX = as_dtype("int64")
BOOL = as_dtype("bool")

Number = Union[int, float, bool]


# ---------------------------------------------------------------------------------------------
# expressions
# ---------------------------------------------------------------------------------------------
class Expr:
    """Base of expression nodes. Arithmetic operators build new nodes."""

    dtype: DType

    # arithmetic sugar; numbers are converted to constants of the other operand's dtype
    def __add__(self, o): return binop("add", self, o)
    def __radd__(self, o): return binop("add", o, self)
    def __sub__(self, o): return binop("sub", self, o)
    def __rsub__(self, o): return binop("sub", o, self)
    def __mul__(self, o): return binop("mul", self, o)
    def __rmul__(self, o): return binop("mul", o, self)
    def __truediv__(self, o): return binop("div", self, o)
    def __rtruediv__(self, o): return binop("div", o, self)
    def __floordiv__(self, o): return binop("div", self, o)
    def __mod__(self, o): return binop("mod", self, o)
    def __neg__(self): return Unary("neg", self, self.dtype)
    def __and__(self, o): return binop("and", self, o)
    def __or__(self, o): return binop("or", self, o)
    def __xor__(self, o): return binop("xor", self, o)
    def __lshift__(self, o): return binop("shl", self, o)
    def __rshift__(self, o): return binop("shr", self, o)
    def __invert__(self): return Unary("not", self, self.dtype)

    def lt(self, o): return binop("lt", self, o)
    def le(self, o): return binop("le", self, o)
    def gt(self, o): return binop("gt", self, o)
    def ge(self, o): return binop("ge", self, o)
    def eq(self, o): return binop("eq", self, o)
    def ne(self, o): return binop("ne", self, o)

    def astype(self, dtype) -> "Expr":
        return cast(dtype, self)


@dataclass(frozen=True, eq=True)
class Const(Expr):
    value: Number
    dtype: DType

    def __repr__(self) -> str:
        return f"{self.value}:{self.dtype.name}"


@dataclass(frozen=True, eq=True)
class Var(Expr):
    """A loop or index variable (int64)."""

    name: str
    dtype: DType = INDEX

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=True)
class Buffer:
    """A kernel argument: a pointer to elements of ``dtype`` (``args[position]``)."""

    name: str
    dtype: DType
    size: int = -1  # element count when known (bounds documentation, not checked)


@dataclass(frozen=True, eq=True)
class Load(Expr):
    buf: Buffer
    index: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.buf.dtype


@dataclass(frozen=True, eq=True)
class Bin(Expr):
    """Binary op. add sub mul div mod max min pow atan2 hypot | lt le gt ge eq ne | and or xor
    shl shr. Comparisons yield bool; ``div``/``mod`` on integers truncate like C."""

    op: str
    a: Expr
    b: Expr
    dtype: DType


@dataclass(frozen=True, eq=True)
class Unary(Expr):
    """neg | not | abs | sqrt (instruction-level unary ops; math functions use Call)."""

    op: str
    a: Expr
    dtype: DType


@dataclass(frozen=True, eq=True)
class Call(Expr):
    """A math function of codegen.mathlib (exp, log, tanh, erf, pow, ...), computed in the
    float type of ``dtype`` (float16/bfloat16 compute in float32)."""

    func: str
    args: tuple
    dtype: DType


@dataclass(frozen=True, eq=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.a.dtype


@dataclass(frozen=True, eq=True)
class Cast(Expr):
    dtype: DType
    a: Expr


@dataclass(frozen=True, eq=True)
class ReduceAxis:
    var: Var
    extent: int


@dataclass(frozen=True, eq=True)
class Reduce(Expr):
    """``op`` over ``axes`` of ``body``: sum | prod | max | min.

    ``argmax``/``argmin`` reduce ``body`` and yield the flat position (over ``axes``, row-major)
    of the first extreme value, as int64 (``dtype`` may cast it).
    """

    op: str
    body: Expr
    axes: tuple
    dtype: DType


@dataclass(frozen=True, eq=True)
class Local(Expr):
    """A scalar local variable (accumulators in lowered code)."""

    name: str
    dtype: DType


# ---------------------------------------------------------------------------------------------
# statements
# ---------------------------------------------------------------------------------------------
@dataclass
class Stmt:
    pass


@dataclass
class Store(Stmt):
    buf: Buffer
    index: Expr
    value: Expr


@dataclass
class Assign(Stmt):
    local: Local
    value: Expr


@dataclass
class For(Stmt):
    """``for var in [start, start + extent)``; kind: serial | vector | parallel (task loop)."""

    var: Var
    extent: Expr
    body: list
    kind: str = "serial"
    start: Expr = field(default_factory=lambda: Const(0, INDEX))


@dataclass
class If(Stmt):
    cond: Expr
    then: list
    otherwise: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
@dataclass
class Kernel:
    """A loop-nest kernel: ``body`` runs once per task in the parallel range."""

    name: str
    buffers: list          # list[Buffer], the order of ``args``
    task_var: Var
    n_tasks: int
    body: list             # statements, executed for task_var in [task_begin, task_end)
    scratch_bytes: int = 0
    cost: int = 0          # rough work estimate (elements x ops), for threading decisions
    note: str = ""


@dataclass
class TemplateKernel:
    """A kernel produced by a schedule template (GEMM...) as ready LLVM IR text."""

    name: str
    buffers: list
    ir: str
    n_tasks: int
    scratch_bytes: int = 0
    cost: int = 0
    note: str = ""
    #: indices of the buffers the kernel stores into; None: any of them (the memory planner
    #: and the artifact writer treat the others as read-only)
    writes: tuple | None = None


# ---------------------------------------------------------------------------------------------
# constructors
# ---------------------------------------------------------------------------------------------
def const(v: Number, dtype) -> Const:
    d = as_dtype(dtype)
    if d.kind == "f":
        v = float(v)
    elif d.kind == "b":
        v = bool(v)
    else:
        v = int(v)
    return Const(v, d)


def wrap(x, like: Expr | None = None) -> Expr:
    if isinstance(x, Expr):
        return x
    if like is not None:
        return const(x, like.dtype)
    if isinstance(x, bool):
        return const(x, BOOL)
    if isinstance(x, int):
        return const(x, INDEX)
    return const(x, "float32")


_CMP = {"lt", "le", "gt", "ge", "eq", "ne"}


def binop(op: str, a, b) -> Expr:
    if not isinstance(a, Expr) and not isinstance(b, Expr):
        raise TypeError("binop needs at least one expression")
    a = wrap(a, b if isinstance(b, Expr) else None)
    b = wrap(b, a)
    if a.dtype != b.dtype:
        raise TypeError(f"kernel IR: '{op}' of {a.dtype.name} and {b.dtype.name}; cast first")
    # fold the trivial index algebra so IR (and cache keys) stay small
    if isinstance(a, Const) and isinstance(b, Const) and a.dtype.kind in "iu" and op in (
            "add", "sub", "mul"):
        return const({"add": a.value + b.value, "sub": a.value - b.value,
                      "mul": a.value * b.value}[op], a.dtype)
    if a.dtype.kind in "iu":
        if op == "add":
            if isinstance(b, Const) and b.value == 0:
                return a
            if isinstance(a, Const) and a.value == 0:
                return b
        if op == "mul":
            if isinstance(b, Const) and b.value == 1:
                return a
            if isinstance(a, Const) and a.value == 1:
                return b
            if (isinstance(b, Const) and b.value == 0) or (isinstance(a, Const) and a.value == 0):
                return const(0, a.dtype)
        if op == "sub" and isinstance(b, Const) and b.value == 0:
            return a
        if op in ("div", "mod") and isinstance(b, Const) and b.value == 1:
            return a if op == "div" else const(0, a.dtype)
    dt = BOOL if op in _CMP else a.dtype
    return Bin(op, a, b, dt)


def maximum(a, b) -> Expr:
    return binop("max", a, b)


def minimum(a, b) -> Expr:
    return binop("min", a, b)


def select(c: Expr, a, b) -> Expr:
    a = wrap(a, b if isinstance(b, Expr) else None)
    b = wrap(b, a)
    if a.dtype != b.dtype:
        raise TypeError(f"select of {a.dtype.name} and {b.dtype.name}")
    if c.dtype != BOOL:
        c = c.ne(const(0, c.dtype))
    return Select(c, a, b)


def cast(dtype, a) -> Expr:
    d = as_dtype(dtype)
    a = wrap(a)
    if a.dtype == d:
        return a
    if isinstance(a, Const):
        return const(a.value, d) if d.kind != "b" else const(bool(a.value), d)
    return Cast(d, a)


def call(func: str, *args, dtype=None) -> Expr:
    args = tuple(wrap(x, args[0] if isinstance(args[0], Expr) else None) for x in args)
    d = as_dtype(dtype) if dtype is not None else args[0].dtype
    return Call(func, args, d)


def abs_(a: Expr) -> Expr:
    return Unary("abs", a, a.dtype)


def sqrt(a: Expr) -> Expr:
    return Unary("sqrt", a, a.dtype)


def reduce(op: str, body: Expr, axes: Sequence[ReduceAxis], dtype=None) -> Expr:
    axes = tuple(ax for ax in axes)
    if op in ("argmax", "argmin"):
        d = as_dtype(dtype) if dtype is not None else INDEX
    else:
        d = as_dtype(dtype) if dtype is not None else body.dtype
    return Reduce(op, body, axes, d)


def reduce_axis(extent: int, name: str = "k") -> ReduceAxis:
    return ReduceAxis(Var(f"{name}{next(_names)}"), int(extent))


def index_var(name: str = "i") -> Var:
    return Var(f"{name}{next(_names)}")


# ---------------------------------------------------------------------------------------------
# tensor views
# ---------------------------------------------------------------------------------------------
def contiguous_strides(shape: Sequence[int]) -> tuple:
    strides = []
    acc = 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class TensorRef:
    """A strided view of a buffer: element (i0, i1, ...) is at offset + sum(i_k*stride_k)."""

    buf: Buffer
    shape: tuple
    strides: tuple = None  # type: ignore[assignment]
    offset: int = 0

    def __post_init__(self) -> None:
        if self.strides is None:
            object.__setattr__(self, "strides", contiguous_strides(self.shape))

    @property
    def dtype(self) -> DType:
        return self.buf.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def flat_index(self, idx: Sequence) -> Expr:
        if len(idx) != len(self.shape):
            raise IndexError(f"{self.buf.name}: {len(idx)} indices for {len(self.shape)}-d tensor")
        e: Expr = const(self.offset, INDEX)
        for i, s, d in zip(idx, self.strides, self.shape):
            if d == 1:
                continue  # broadcast-safe: a size-1 dim contributes nothing
            if isinstance(i, Expr):
                e = e + i * const(s, INDEX)
            else:
                e = e + const(int(i) * s, INDEX)
        return e

    def __getitem__(self, idx) -> Expr:
        if not isinstance(idx, tuple):
            idx = (idx,)
        return Load(self.buf, self.flat_index(idx))

    def reshape(self, shape: Sequence[int]) -> "TensorRef":
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"reshape {self.shape} -> {shape}")
        if self.strides != contiguous_strides(self.shape):
            raise ValueError("reshape of a non-contiguous view")
        return TensorRef(self.buf, shape, None, self.offset)

    def transpose(self, axes: Sequence[int]) -> "TensorRef":
        return TensorRef(self.buf, tuple(self.shape[a] for a in axes),
                         tuple(self.strides[a] for a in axes), self.offset)


@dataclass
class ComputeOp:
    """``out[idx] = fn(idx)`` over out's shape (the unit the scheduler lowers)."""

    out: TensorRef
    axes: tuple          # index Vars, one per output dim
    body: Expr
    name: str = "compute"


def compute(out: TensorRef, fn: Callable[..., Expr], name: str = "compute") -> ComputeOp:
    axes = tuple(index_var("i") for _ in out.shape)
    body = wrap(fn(*axes), None)
    if body.dtype != out.dtype:
        body = cast(out.dtype, body)
    return ComputeOp(out, axes, body, name)


# ---------------------------------------------------------------------------------------------
# traversal helpers
# ---------------------------------------------------------------------------------------------
def children(e: Expr) -> tuple:
    if isinstance(e, Load):
        return (e.index,)
    if isinstance(e, Bin):
        return (e.a, e.b)
    if isinstance(e, (Unary, Cast)):
        return (e.a,)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, Reduce):
        return (e.body,)
    return ()


def free_vars(e: Expr, _memo: dict | None = None) -> frozenset:
    """Index variables an expression depends on (reduction axes are bound, not free)."""
    memo = _memo if _memo is not None else {}
    key = id(e)
    if key in memo:
        return memo[key][1]
    if isinstance(e, Var):
        r = frozenset([e])
    elif isinstance(e, Reduce):
        inner = free_vars(e.body, memo)
        r = inner - frozenset(ax.var for ax in e.axes)
    else:
        r = frozenset()
        for c in children(e):
            r = r | free_vars(c, memo)
    memo[key] = (e, r)
    return r


def substitute(e: Expr, mapping: dict) -> Expr:
    """Replace sub-expressions (by equality) using ``mapping``; rebuilds only what changes."""
    memo: dict[int, Expr] = {}

    def go(x: Expr) -> Expr:
        k = id(x)
        if k in memo:
            return memo[k]
        if x in mapping:
            r = mapping[x]
        elif isinstance(x, Load):
            r = Load(x.buf, go(x.index))
        elif isinstance(x, Bin):
            r = Bin(x.op, go(x.a), go(x.b), x.dtype)
        elif isinstance(x, Unary):
            r = Unary(x.op, go(x.a), x.dtype)
        elif isinstance(x, Cast):
            r = Cast(x.dtype, go(x.a))
        elif isinstance(x, Call):
            r = Call(x.func, tuple(go(a) for a in x.args), x.dtype)
        elif isinstance(x, Select):
            r = Select(go(x.cond), go(x.a), go(x.b))
        elif isinstance(x, Reduce):
            r = Reduce(x.op, go(x.body), x.axes, x.dtype)
        else:
            r = x
        memo[k] = r
        return r

    return go(e)


def dump(stmts: list, indent: int = 0) -> str:
    """Readable text of lowered statements (``mxc inspect --dump-ir``)."""
    pad = "  " * indent
    out = []
    for s in stmts:
        if isinstance(s, For):
            out.append(f"{pad}for {s.var} in [{s.start}, +{s.extent}) {s.kind}:")
            out.append(dump(s.body, indent + 1))
        elif isinstance(s, Store):
            out.append(f"{pad}{s.buf.name}[{_fmt(s.index)}] = {_fmt(s.value)}")
        elif isinstance(s, Assign):
            out.append(f"{pad}{s.local.name} = {_fmt(s.value)}")
        elif isinstance(s, If):
            out.append(f"{pad}if {_fmt(s.cond)}:")
            out.append(dump(s.then, indent + 1))
            if s.otherwise:
                out.append(f"{pad}else:")
                out.append(dump(s.otherwise, indent + 1))
    return "\n".join(x for x in out if x)


def _fmt(e: Expr) -> str:
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, (Var, Local)):
        return e.name
    if isinstance(e, Load):
        return f"{e.buf.name}[{_fmt(e.index)}]"
    if isinstance(e, Bin):
        return f"({_fmt(e.a)} {e.op} {_fmt(e.b)})"
    if isinstance(e, Unary):
        return f"{e.op}({_fmt(e.a)})"
    if isinstance(e, Cast):
        return f"{e.dtype.name}({_fmt(e.a)})"
    if isinstance(e, Call):
        return f"{e.func}({', '.join(_fmt(a) for a in e.args)})"
    if isinstance(e, Select):
        return f"({_fmt(e.cond)} ? {_fmt(e.a)} : {_fmt(e.b)})"
    if isinstance(e, Reduce):
        axes = ",".join(f"{a.var.name}<{a.extent}" for a in e.axes)
        return f"{e.op}[{axes}]({_fmt(e.body)})"
    return repr(e)
