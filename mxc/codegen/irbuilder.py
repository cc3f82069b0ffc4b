"""LLVM IR text builder shared by the hand-written kernel templates (``gemm.py``,
``pool_template.py``): a function body as lines of text, SSA values as strings, i64
constants folded as Python ints, loop counters in allocas hoisted to the entry block (mem2reg
promotes them), structured loops and ifs."""
from __future__ import annotations

import math
import struct

__all__ = ["FunctionBuilder", "If", "Loop", "VectorFMA", "fconst", "ident", "mask_type",
           "transpose"]


def mask_type(ty: str) -> str:
    """The i1 type matching a value type: <n x i1> for a vector <n x T>, else i1."""
    return f"<{ty[1:].split(' x ')[0]} x i1>" if ty.startswith("<") else "i1"


def fconst(x: float, dtype: str) -> str:
    """A float constant as LLVM hex (exact; floats are written as their double value)."""
    if dtype == "float32":
        try:
            x = struct.unpack("<f", struct.pack("<f", float(x)))[0]
        except OverflowError:   # beyond float range
            x = math.copysign(math.inf, x)
    bits = struct.unpack("<Q", struct.pack("<d", float(x)))[0]
    return f"0x{bits:016X}"


def ident(name: str) -> str:
    ok = name and all(c.isalnum() or c in "._$-" for c in name) and not name[0].isdigit()
    return f"@{name}" if ok else '@"' + name.replace("\\", "\\5C").replace('"', "\\22") + '"'


def transpose(f: FunctionBuilder, rows: list[str], VL: int, V: str) -> list[str]:
    """Transpose up to VL row vectors of type ``V`` (missing rows are poison) into VL column
    vectors: log2(VL) stages, each swapping the off-diagonal b x b blocks of row pairs
    (i, i+b)."""
    r = list(rows) + ["poison"] * (VL - len(rows))
    b = 1
    while b < VL:
        lo = [(lane if not lane & b else VL + lane - b) for lane in range(VL)]
        hi = [(lane + b if not lane & b else VL + lane) for lane in range(VL)]
        lo_m = "<" + ", ".join(f"i32 {x}" for x in lo) + ">"
        hi_m = "<" + ", ".join(f"i32 {x}" for x in hi) + ">"
        out = list(r)
        for i in range(VL):
            if i & b:
                continue
            x, y = r[i], r[i + b]
            if x == "poison" and y == "poison":
                continue
            out[i] = f.op(f"shufflevector {V} {x}, {V} {y}, <{VL} x i32> {lo_m}")
            out[i + b] = f.op(f"shufflevector {V} {x}, {V} {y}, <{VL} x i32> {hi_m}")
        r = out
        b *= 2
    return r


class VectorFMA:
    """A template's vector type ``<VL x T>``: splats and the multiply-add of its ISA --
    ``llvm.fma`` / ``llvm.fmuladd`` (declared into ``decls``) or, for "muladd", fmul + fadd
    that LLVM may contract -- every float op carrying the fast-math ``flags``."""

    def __init__(self, T: str, VL: int, es: int, kind: str, decls: set, flags: str):
        self.T, self.VL, self.kind, self.flags = T, VL, kind, flags
        self.V = f"<{VL} x {T}>"
        if kind in ("fma", "fmuladd"):
            self.fn = f"@llvm.{kind}.v{VL}f{es * 8}"
            decls.add(f"declare {self.V} {self.fn}({self.V}, {self.V}, {self.V})")

    def splat(self, f: FunctionBuilder, s: str) -> str:
        v = f.op(f"insertelement {self.V} poison, {self.T} {s}, i64 0")
        return f.op(f"shufflevector {self.V} {v}, {self.V} poison, "
                    f"<{self.VL} x i32> zeroinitializer")

    def fma(self, f: FunctionBuilder, a: str, b: str, c: str) -> str:
        """a * b + c."""
        if self.kind == "muladd":
            m = f.op(f"fmul {self.flags} {self.V} {a}, {b}")
            return f.op(f"fadd {self.flags} {self.V} {m}, {c}")
        return f.op(f"call {self.flags} {self.V} {self.fn}({self.V} {a}, {self.V} {b}, "
                    f"{self.V} {c})")


class FunctionBuilder:
    """Builds one function's body.  i64 values are Python ints (constants, folded) or SSA
    names; loop counters live in allocas (hoisted to the entry block) that mem2reg/SROA
    promote to registers."""

    def __init__(self, header: str = ""):
        self.header = header
        self.allocas: list[str] = []
        self.body: list[str] = []
        self.n = 0

    def _name(self, p: str = "t") -> str:
        self.n += 1
        return f"%{p}{self.n}"

    def label_name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def op(self, text: str, p: str = "t") -> str:
        r = self._name(p)
        self.body.append(f"  {r} = {text}")
        return r

    def ins(self, text: str) -> None:
        self.body.append(f"  {text}")

    def label(self, lab: str) -> None:
        self.body.append(f"{lab}:")

    def br(self, lab: str) -> None:
        self.ins(f"br label %{lab}")

    def alloca(self, ty: str) -> str:
        r = self._name("v")
        self.allocas.append(f"  {r} = alloca {ty}, align 8")
        return r

    # --- i64 arithmetic with constant folding ---
    def add(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return a + b
        if a == 0:
            return b
        if b == 0:
            return a
        return self.op(f"add i64 {a}, {b}")

    def sub(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return a - b
        if b == 0:
            return a
        return self.op(f"sub i64 {a}, {b}")

    def mul(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return a * b
        if a == 0 or b == 0:
            return 0
        if a == 1:
            return b
        if b == 1:
            return a
        return self.op(f"mul i64 {a}, {b}")

    def udiv(self, a, b: int):
        if isinstance(a, int):
            return a // b
        return a if b == 1 else self.op(f"udiv i64 {a}, {b}")

    def urem(self, a, b: int):
        if isinstance(a, int):
            return a % b
        return 0 if b == 1 else self.op(f"urem i64 {a}, {b}")

    def smin(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return min(a, b)
        c = self.op(f"icmp slt i64 {a}, {b}")
        return self.op(f"select i1 {c}, i64 {a}, i64 {b}")

    def smax(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return max(a, b)
        c = self.op(f"icmp sgt i64 {a}, {b}")
        return self.op(f"select i1 {c}, i64 {a}, i64 {b}")

    def gep(self, ty: str, p: str, idx, inb: bool = False) -> str:
        if idx == 0:
            return p
        return self.op(f"getelementptr {'inbounds ' if inb else ''}{ty}, ptr {p}, i64 {idx}",
                       "p")

    # --- structured control flow ---
    def loop(self, start, end, step: int = 1, md: str | None = None):
        """A counted loop; ``md`` names loop metadata (``!N``, defined by the caller at
        module level) attached to its back edge, e.g. one that disables unrolling."""
        return Loop(self, start, end, step, md)

    def if_(self, cond: str):
        return If(self, cond)

    def render(self, header: str | None = None) -> str:
        """The function's text (``header``: its ``define ...`` line, if not given before)."""
        head = self.header if header is None else header
        return "\n".join([head + " {", "entry:", *self.allocas, *self.body, "}", ""])


class Loop:
    def __init__(self, f: FunctionBuilder, start, end, step: int, md: str | None = None):
        self.f, self.start, self.end, self.step, self.md = f, start, end, step, md

    def __enter__(self):
        f = self.f
        self.ctr = f.alloca("i64")
        self.head, self.bodyl, self.exit = (f.label_name(p) for p in ("lh", "lb", "lx"))
        f.ins(f"store i64 {self.start}, ptr {self.ctr}")
        f.br(self.head)
        f.label(self.head)
        i = f.op(f"load i64, ptr {self.ctr}", "i")
        c = f.op(f"icmp slt i64 {i}, {self.end}")
        f.ins(f"br i1 {c}, label %{self.bodyl}, label %{self.exit}")
        f.label(self.bodyl)
        self.i = i
        return i

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        f = self.f
        nxt = f.op(f"add i64 {self.i}, {self.step}")
        f.ins(f"store i64 {nxt}, ptr {self.ctr}")
        f.ins(f"br label %{self.head}" + (f", !llvm.loop {self.md}" if self.md else ""))
        f.label(self.exit)
        return False


class If:
    def __init__(self, f: FunctionBuilder, cond: str):
        self.f, self.cond = f, cond

    def __enter__(self):
        f = self.f
        self.then, self.cont = f.label_name("it"), f.label_name("ic")
        f.ins(f"br i1 {self.cond}, label %{self.then}, label %{self.cont}")
        f.label(self.then)

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        self.f.br(self.cont)
        self.f.label(self.cont)
        return False
