"""Render kernel IR as LLVM IR text.

Tables map dtypes to LLVM value/storage types and IR ops to instructions (in the manner of
tinygrad's renderer). Math functions are mxc's own (``codegen.mathlib``), so generated code
never calls libm. Float arithmetic carries ``nsz arcp contract afn`` (never ``fast``/``nnan``:
NaN comparisons must stay correct); reduction accumulators also carry ``reassoc`` so LLVM may
vectorize them.

float16 and bfloat16 are stored as i16 and computed in float; bool is stored as i8 and
computed as i1.
"""
from __future__ import annotations

import hashlib
import re
import struct

from ..ir import kernel as K
from ..ir.dtypes import DType

FMF = "nsz arcp contract afn"
FMF_RED = "reassoc nsz arcp contract afn"

# value type (what arithmetic sees) and storage type (what memory holds)
_VALUE = {"float32": "float", "float64": "double", "float16": "float", "bfloat16": "float",
          "int8": "i8", "uint8": "i8", "int16": "i16", "uint16": "i16", "int32": "i32",
          "uint32": "i32", "int64": "i64", "uint64": "i64", "bool": "i1"}
_STORAGE = dict(_VALUE, float16="i16", bfloat16="i16", bool="i8")

_FBIN = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv", "mod": "frem"}
_IBIN = {"add": "add", "sub": "sub", "mul": "mul", "and": "and", "or": "or", "xor": "xor",
         "shl": "shl"}
_FCMP = {"lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge", "eq": "oeq", "ne": "une"}
_SCMP = {"lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge", "eq": "eq", "ne": "ne"}
_UCMP = {"lt": "ult", "le": "ule", "gt": "ugt", "ge": "uge", "eq": "eq", "ne": "ne"}


def vtype(d: DType) -> str:
    return _VALUE[d.name]


def stype(d: DType) -> str:
    return _STORAGE[d.name]


def _bits(t: str) -> int:
    return {"i1": 1, "i8": 8, "i16": 16, "i32": 32, "i64": 64, "float": 32, "double": 64}[t]


def float_literal(v: float, t: str) -> str:
    """LLVM spells float and double constants as the hex of a double."""
    if t == "float":
        v = struct.unpack("<f", struct.pack("<f", v))[0]
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]


def compute_dtype_name(d: DType) -> str:
    """mathlib flavour for a dtype: f32 for float32/float16/bfloat16, f64 for float64."""
    return "float64" if d.name == "float64" else "float32"


class KernelRenderer:
    """Renders one ``Kernel`` into a function definition; collects mathlib needs."""

    #: tag vector-loop accesses as parallel (see _group); subclasses may turn it off
    parallel_accesses = True

    def __init__(self, math_funcs: set, need_conv: list) -> None:
        self.math_funcs = math_funcs       # (func, 'float32'|'float64') used
        self.need_conv = need_conv         # [bool] set True when f16/bf16 conversions are used
        self.lines: list[str] = []
        self.n = 0
        self.block = "entry"
        self.env: dict = {}
        self.memo: list[dict] = [{}]
        self.locals: dict = {}
        self.bufptr: dict = {}
        self.loop_md: list = []
        self.load_keys: list = []
        self.loop_kinds: list = []   # kinds of the loops enclosing the current statement
        self.n_groups = 0            # access groups of vector loops (parallel_accesses)

    # -- helpers ------------------------------------------------------------------------------
    def tmp(self, hint: str = "t") -> str:
        self.n += 1
        return f"%{hint}{self.n}"

    def emit(self, s: str) -> None:
        self.lines.append("  " + s)

    def label(self, name: str) -> None:
        self.lines.append(f"{name[1:]}:")
        self.block = name

    # -- expressions ----------------------------------------------------------------------------
    def value(self, e: K.Expr) -> str:
        cacheable = not _uses_local(e)
        if cacheable:
            for scope in reversed(self.memo):
                if e in scope:
                    return scope[e]
        r = self._value(e)
        if cacheable:
            self.memo[-1][e] = r
            if _uses_load(e):
                self.load_keys.append((self.memo[-1], e))
        return r

    def forget_loads(self) -> None:
        """A store may change memory: values computed from loads must be loaded again."""
        for scope, key in self.load_keys:
            scope.pop(key, None)
        self.load_keys = []

    def _value(self, e: K.Expr) -> str:
        if isinstance(e, K.Const):
            t = vtype(e.dtype)
            if t in ("float", "double"):
                return float_literal(float(e.value), t)
            if t == "i1":
                return "true" if e.value else "false"
            v = int(e.value)
            bits = _bits(t)
            v &= (1 << bits) - 1
            if v >= 1 << (bits - 1):
                v -= 1 << bits
            return str(v)
        if isinstance(e, K.Var):
            try:
                return self.env[e]
            except KeyError:
                raise KeyError(f"kernel IR: unbound variable {e.name}") from None
        if isinstance(e, K.Local):
            r = self.tmp("l")
            self.emit(f"{r} = load {vtype(e.dtype)}, ptr {self.locals[e]}")
            return r
        if isinstance(e, K.Load):
            return self.load(e.buf, e.index)
        if isinstance(e, K.Bin):
            return self.binop(e.op, e.a, e.b, e.dtype)
        if isinstance(e, K.Unary):
            return self.unary(e)
        if isinstance(e, K.Select):
            c, a, b = self.value(e.cond), self.value(e.a), self.value(e.b)
            r = self.tmp("s")
            self.emit(f"{r} = select i1 {c}, {vtype(e.dtype)} {a}, {vtype(e.dtype)} {b}")
            return r
        if isinstance(e, K.Cast):
            return self.cast(self.value(e.a), e.a.dtype, e.dtype)
        if isinstance(e, K.Call):
            return self.call(e)
        if isinstance(e, K.Reduce):
            raise ValueError("kernel IR: Reduce must be scheduled before rendering")
        raise TypeError(f"kernel IR: cannot render {type(e).__name__}")

    def load(self, buf: K.Buffer, index: K.Expr) -> str:
        idx = self.value(index)
        st = stype(buf.dtype)
        p, r = self.tmp("p"), self.tmp("v")
        self.emit(f"{p} = getelementptr inbounds {st}, ptr {self.bufptr[buf]}, i64 {idx}")
        self.emit(f"{r} = load {st}, ptr {p}, align {buf.dtype.itemsize}{self._group()}")
        return self.from_storage(r, buf.dtype)

    def from_storage(self, r: str, d: DType) -> str:
        if d.name == "bool":
            o = self.tmp("b")
            self.emit(f"{o} = icmp ne i8 {r}, 0")
            return o
        if d.name in ("float16", "bfloat16"):
            self.need_conv[0] = True
            o = self.tmp("h")
            fn = "mxc_f16_to_f32" if d.name == "float16" else "mxc_bf16_to_f32"
            self.emit(f"{o} = call float @{fn}(i16 {r})")
            return o
        return r

    def to_storage(self, v: str, d: DType) -> str:
        if d.name == "bool":
            o = self.tmp("b")
            self.emit(f"{o} = zext i1 {v} to i8")
            return o
        if d.name in ("float16", "bfloat16"):
            self.need_conv[0] = True
            o = self.tmp("h")
            fn = "mxc_f32_to_f16" if d.name == "float16" else "mxc_f32_to_bf16"
            self.emit(f"{o} = call i16 @{fn}(float {v})")
            return o
        return v

    def binop(self, op: str, a: K.Expr, b: K.Expr, rdtype: DType, fmf: str = FMF) -> str:
        d = a.dtype
        t = vtype(d)
        x, y = self.value(a), self.value(b)
        r = self.tmp("r")
        isf = t in ("float", "double")
        uns = d.kind in "ub"
        if op in _FCMP or op in _SCMP:
            if isf:
                self.emit(f"{r} = fcmp {_FCMP[op]} {t} {x}, {y}")
            else:
                self.emit(f"{r} = icmp {(_UCMP if uns else _SCMP)[op]} {t} {x}, {y}")
            return r
        if op in ("max", "min"):
            c = self.tmp("c")
            if isf:
                # NaN-propagating like numpy/MXNet: llvm.maximum/minimum (an instruction
                # sequence on x86/AArch64/ARMv7/NVPTX, and a reduction LLVM vectorizes)
                fn = "maximum" if op == "max" else "minimum"
                self.emit(f"{r} = call {t} @llvm.{fn}.{_sfx(t)}({t} {x}, {t} {y})")
                return r
            else:
                cmp = ("ugt" if op == "max" else "ult") if uns else \
                    ("sgt" if op == "max" else "slt")
                self.emit(f"{c} = icmp {cmp} {t} {x}, {y}")
            self.emit(f"{r} = select i1 {c}, {t} {x}, {t} {y}")
            return r
        if op in ("pow", "atan2", "hypot"):
            if not isf:
                raise TypeError(f"kernel IR: integer '{op}' is not supported")
            if op == "hypot":
                return self._hypot(t, x, y)
            if op == "atan2":
                return self._atan2(d, t, x, y)
            return self.call_named(op, d, [x, y])
        if isf and op == "mod":
            # C fmod without libm (LLVM's frem becomes a call to fmodf): a - b*trunc(a/b)
            q, tr, m = self.tmp("q"), None, self.tmp("m")
            self.emit(f"{q} = fdiv {t} {x}, {y}")
            tr = self.call_named("trunc", d, [q])
            self.emit(f"{m} = fmul {t} {tr}, {y}")
            self.emit(f"{r} = fsub {t} {x}, {m}")
            return r
        if isf:
            if op not in _FBIN:
                raise TypeError(f"kernel IR: '{op}' on floats")
            self.emit(f"{r} = {_FBIN[op]} {fmf} {t} {x}, {y}")
            return r
        if op == "div":
            self.emit(f"{r} = {'udiv' if uns else 'sdiv'} {t} {x}, {y}")
        elif op == "mod":
            self.emit(f"{r} = {'urem' if uns else 'srem'} {t} {x}, {y}")
        elif op == "shr":
            self.emit(f"{r} = {'lshr' if uns else 'ashr'} {t} {x}, {y}")
        elif op in _IBIN:
            self.emit(f"{r} = {_IBIN[op]} {t} {x}, {y}")
        else:
            raise TypeError(f"kernel IR: unknown binary op '{op}'")
        return r

    def _hypot(self, t: str, x: str, y: str) -> str:
        # scaled so large inputs do not overflow: m*sqrt(1+(n/m)^2), m = max(|x|,|y|)
        ax, ay, m, n, q, q2, s1, r0, r, z = (self.tmp("h") for _ in range(10))
        self.emit(f"{ax} = call {t} @llvm.fabs.{_sfx(t)}({t} {x})")
        self.emit(f"{ay} = call {t} @llvm.fabs.{_sfx(t)}({t} {y})")
        c = self.tmp("c")
        self.emit(f"{c} = fcmp ogt {t} {ax}, {ay}")
        self.emit(f"{m} = select i1 {c}, {t} {ax}, {t} {ay}")
        self.emit(f"{n} = select i1 {c}, {t} {ay}, {t} {ax}")
        self.emit(f"{q} = fdiv {t} {n}, {m}")
        self.emit(f"{q2} = fmul {t} {q}, {q}")
        self.emit(f"{s1} = fadd {t} {q2}, {float_literal(1.0, t)}")
        self.emit(f"{r0} = call {t} @llvm.sqrt.{_sfx(t)}({t} {s1})")
        self.emit(f"{r} = fmul {t} {m}, {r0}")
        self.emit(f"{z} = fcmp oeq {t} {m}, {float_literal(0.0, t)}")
        out = self.tmp("h")
        self.emit(f"{out} = select i1 {z}, {t} {float_literal(0.0, t)}, {t} {r}")
        return out

    def _atan2(self, d: DType, t: str, y: str, x: str) -> str:
        """atan2(y, x) from mathlib's arctan with the quadrant fixed by selects."""
        import math

        q = self.tmp("q")
        self.emit(f"{q} = fdiv {t} {y}, {x}")
        at = self.call_named("arctan", d, [q])
        pi, hp = float_literal(math.pi, t), float_literal(math.pi / 2, t)
        zero = float_literal(0.0, t)
        xneg, yneg, xz = self.tmp("c"), self.tmp("c"), self.tmp("c")
        self.emit(f"{xneg} = fcmp olt {t} {x}, {zero}")
        self.emit(f"{yneg} = fcmp olt {t} {y}, {zero}")
        self.emit(f"{xz} = fcmp oeq {t} {x}, {zero}")
        plus, minus, adj = self.tmp("a"), self.tmp("a"), self.tmp("a")
        self.emit(f"{plus} = fadd {t} {at}, {pi}")
        self.emit(f"{minus} = fsub {t} {at}, {pi}")
        self.emit(f"{adj} = select i1 {yneg}, {t} {minus}, {t} {plus}")
        r1, half, r2 = self.tmp("a"), self.tmp("a"), self.tmp("a")
        self.emit(f"{r1} = select i1 {xneg}, {t} {adj}, {t} {at}")
        yz, nhp = self.tmp("c"), self.tmp("a")
        self.emit(f"{nhp} = fneg {t} {hp}")
        self.emit(f"{half} = select i1 {yneg}, {t} {nhp}, {t} {hp}")
        self.emit(f"{yz} = fcmp oeq {t} {y}, {zero}")
        z2 = self.tmp("a")
        self.emit(f"{z2} = select i1 {yz}, {t} {zero}, {t} {half}")
        self.emit(f"{r2} = select i1 {xz}, {t} {z2}, {t} {r1}")
        return r2

    def unary(self, e: K.Unary) -> str:
        t = vtype(e.dtype)
        x = self.value(e.a)
        r = self.tmp("u")
        isf = t in ("float", "double")
        if e.op == "neg":
            self.emit(f"{r} = fneg {FMF} {t} {x}" if isf else f"{r} = sub {t} 0, {x}")
        elif e.op == "not":
            self.emit(f"{r} = xor {t} {x}, {'true' if t == 'i1' else '-1'}")
        elif e.op == "abs":
            if isf:
                self.emit(f"{r} = call {t} @llvm.fabs.{_sfx(t)}({t} {x})")
            elif e.dtype.kind in "ub":
                return x
            else:
                n, c = self.tmp("n"), self.tmp("c")
                self.emit(f"{n} = sub {t} 0, {x}")
                self.emit(f"{c} = icmp slt {t} {x}, 0")
                self.emit(f"{r} = select i1 {c}, {t} {n}, {t} {x}")
        elif e.op == "sqrt":
            if not isf:
                raise TypeError("kernel IR: integer sqrt")
            self.emit(f"{r} = call {FMF} {t} @llvm.sqrt.{_sfx(t)}({t} {x})")
        else:
            raise TypeError(f"kernel IR: unknown unary op '{e.op}'")
        return r

    def call(self, e: K.Call) -> str:
        if e.dtype.kind != "f":
            raise TypeError(f"kernel IR: math function {e.func} on {e.dtype.name}")
        args = [self.value(a) for a in e.args]
        return self.call_named(e.func, e.dtype, args)

    def call_named(self, func: str, d: DType, args: list) -> str:
        from . import mathlib

        cd = compute_dtype_name(d)
        self.math_funcs.add((func, cd))
        t = "double" if cd == "float64" else "float"
        r = self.tmp("m")
        argtxt = ", ".join(f"{t} {a}" for a in args)
        self.emit(f"{r} = call {t} @{mathlib.math_function_name(func, cd)}({argtxt})")
        return r

    def cast(self, x: str, src: DType, dst: DType) -> str:
        ts, td = vtype(src), vtype(dst)
        fs, fd = ts in ("float", "double"), td in ("float", "double")
        if dst.name in ("float16", "bfloat16") and src.name != dst.name:
            # round through the narrow format; the value stays a float
            f = x if ts == "float" else self.cast(x, src, _f32())
            h = self.to_storage(f, dst)
            return self.from_storage(h, dst)
        if ts == td and src.kind == dst.kind:
            return x
        r = self.tmp("k")
        if fs and fd:
            op = "fpext" if _bits(td) > _bits(ts) else "fptrunc"
            self.emit(f"{r} = {op} {ts} {x} to {td}")
        elif fs:
            if td == "i1":
                self.emit(f"{r} = fcmp une {ts} {x}, {float_literal(0.0, ts)}")
            else:
                op = "fptoui" if dst.kind == "u" else "fptosi"
                self.emit(f"{r} = {op} {ts} {x} to {td}")
        elif fd:
            op = "uitofp" if src.kind in "ub" else "sitofp"
            self.emit(f"{r} = {op} {ts} {x} to {td}")
        else:
            if td == "i1":
                self.emit(f"{r} = icmp ne {ts} {x}, 0")
            elif _bits(td) == _bits(ts):
                return x
            elif _bits(td) < _bits(ts):
                self.emit(f"{r} = trunc {ts} {x} to {td}")
            else:
                op = "zext" if src.kind in "ub" else "sext"
                self.emit(f"{r} = {op} {ts} {x} to {td}")
        return r

    # -- statements ----------------------------------------------------------------------------
    def stmts(self, body: list) -> None:
        for s in body:
            self.stmt(s)

    def stmt(self, s) -> None:
        if isinstance(s, K.Store):
            idx = self.value(s.index)
            v = self.value(s.value)
            sv = self.to_storage(v, s.buf.dtype)
            st = stype(s.buf.dtype)
            p = self.tmp("p")
            self.emit(f"{p} = getelementptr inbounds {st}, ptr {self.bufptr[s.buf]}, i64 {idx}")
            self.emit(f"store {st} {sv}, ptr {p}, align {s.buf.dtype.itemsize}{self._group()}")
            self.forget_loads()
        elif isinstance(s, K.Assign):
            if s.local not in self.locals:
                raise KeyError(f"kernel IR: unknown local {s.local.name}")
            fmf = FMF_RED if getattr(s, "reassoc", False) else FMF
            e = s.value
            if isinstance(e, K.Bin) and e.op in ("add", "mul") and fmf == FMF_RED:
                v = self.binop(e.op, e.a, e.b, e.dtype, fmf)
            else:
                v = self.value(e)
            self.emit(f"store {vtype(s.local.dtype)} {v}, ptr {self.locals[s.local]}")
        elif isinstance(s, K.For):
            self.loop(s.var, self.value(s.start), s.extent, s.body, s.kind)
        elif isinstance(s, K.If):
            c = self.value(s.cond)
            lt, le, lx = self.tmp("Lthen"), self.tmp("Lelse"), self.tmp("Lend")
            self.emit(f"br i1 {c}, label {lt}, label {le}")
            self.label(lt)
            self.memo.append({})
            self.stmts(s.then)
            self.memo.pop()
            self.emit(f"br label {lx}")
            self.label(le)
            self.memo.append({})
            self.stmts(s.otherwise)
            self.memo.pop()
            self.emit(f"br label {lx}")
            self.label(lx)
        else:
            raise TypeError(f"kernel IR: unknown statement {type(s).__name__}")

    def _group(self) -> str:
        """Accesses directly inside a vector loop join its access group: a compute writes
        each output element once per iteration and reads its output (inplace) only at the
        element it writes, so iterations are independent and LLVM may vectorize without
        runtime alias checks (which send in-place calls to the scalar loop)."""
        if self.loop_kinds and self.loop_kinds[-1][0] == "vector":
            return f", !llvm.access.group !G{self.loop_kinds[-1][1]}"
        return ""

    def loop(self, var: K.Var, start: str, extent, body: list, kind: str,
             end_value: str | None = None) -> None:
        if end_value is None:
            ext = self.value(extent)
            end_value = self.tmp("end")
            self.emit(f"{end_value} = add i64 {start}, {ext}")
        pre = self.block
        h, b, latch, x = (self.tmp("Lh"), self.tmp("Lb"), self.tmp("Ll"), self.tmp("Lx"))
        iv, nxt = self.tmp("iv"), self.tmp("inext")
        self.emit(f"br label {h}")
        self.label(h)
        self.emit(f"{iv} = phi i64 [ {start}, {pre} ], [ {nxt}, {latch} ]")
        c = self.tmp("c")
        self.emit(f"{c} = icmp slt i64 {iv}, {end_value}")
        self.emit(f"br i1 {c}, label {b}, label {x}")
        self.label(b)
        self.env[var] = iv
        self.memo.append({})
        gid = None
        if kind == "vector" and self.parallel_accesses:
            gid = self.n_groups
            self.n_groups += 1
        self.loop_kinds.append((kind if gid is not None else f"{kind}-plain", gid))
        self.stmts(body)
        self.loop_kinds.pop()
        self.memo.pop()
        self.emit(f"br label {latch}")
        self.label(latch)
        self.emit(f"{nxt} = add nsw i64 {iv}, 1")
        md = f"!L{len(self.loop_md)}"
        self.loop_md.append((kind, gid))
        self.emit(f"br label {h}, !llvm.loop {md}")
        self.label(x)
        del self.env[var]

    # -- kernel ----------------------------------------------------------------------------------
    def render(self, k: K.Kernel, md_base: int) -> tuple[str, list[str]]:
        self.lines = []
        self.label("%entry")
        for i, buf in enumerate(k.buffers):
            p, q = self.tmp("a"), self.tmp("buf")
            self.emit(f"{p} = getelementptr inbounds ptr, ptr %args, i64 {i}")
            self.emit(f"{q} = load ptr, ptr {p}, align 8")
            self.bufptr[buf] = q
        locs = _collect_locals(k.body)
        for loc in locs:
            a = self.tmp("loc")
            self.emit(f"{a} = alloca {vtype(loc.dtype)}, align 8")
            self.locals[loc] = a
        self.loop(k.task_var, "%task_begin", None, k.body, "parallel", end_value="%task_end")
        if any(kind == "novector" for kind, _ in self.loop_md):
            # once inner max/min loops are unrolled, vectorizing the task loop around them
            # hits the same exponential case in LLVM's vectorizer
            self.loop_md[-1] = ("novector", None)
        self.emit("ret void")
        head = (f"define void @{k.name}(i64 %task_begin, i64 %task_end, ptr %args, "
                f"ptr %scratch) #0 {{")
        text = head + "\n" + "\n".join(self.lines) + "\n}\n"
        mds = []
        n = len(self.loop_md)
        for j, (kind, gid) in enumerate(self.loop_md):
            # loops with NaN-propagating max/min chains: LLVM 22's vectorizer can take
            # exponential time on them, so they stay scalar
            hint = '!{!"llvm.loop.vectorize.enable", i1 false}' if kind == "novector" \
                else '!{!"llvm.loop.mustprogress"}'
            extra = ""
            if gid is not None:
                pa = 3 * n + 2 * gid
                extra = f", !{pa + 1}"
                mds.append(f"!{pa} = distinct !{{}}\n"
                           f"!{pa + 1} = !{{!\"llvm.loop.parallel_accesses\", !{pa}}}")
            mds.append(f"!{2 * j} = distinct !{{!{2 * j}, !{2 * j + 1}{extra}}}\n"
                       f"!{2 * j + 1} = {hint}")
        for j in reversed(range(n)):
            text = text.replace(f"!llvm.loop !L{j}\n", f"!llvm.loop !{2 * j}\n")
        for j, (_kind, gid) in enumerate(self.loop_md):
            if gid is not None:
                text = text.replace(f"!llvm.access.group !G{gid}\n",
                                    f"!llvm.access.group !{3 * n + 2 * gid}\n")
        return text, mds


def _sfx(t: str) -> str:
    return {"float": "f32", "double": "f64"}[t]


def _f32() -> DType:
    from ..ir.dtypes import float32

    return float32


def _uses_local(e: K.Expr) -> bool:
    if isinstance(e, K.Local):
        return True
    return any(_uses_local(c) for c in K.children(e))


def _uses_load(e: K.Expr) -> bool:
    if isinstance(e, K.Load):
        return True
    return any(_uses_load(c) for c in K.children(e))


def _collect_locals(body: list) -> list:
    seen: dict = {}

    def walk_e(e):
        if isinstance(e, K.Local):
            seen.setdefault(e, None)
        for c in K.children(e):
            walk_e(c)

    def walk(stmts):
        for s in stmts:
            if isinstance(s, K.Assign):
                seen.setdefault(s.local, None)
                walk_e(s.value)
            elif isinstance(s, K.Store):
                walk_e(s.value)
                walk_e(s.index)
            elif isinstance(s, K.For):
                walk(s.body)
            elif isinstance(s, K.If):
                walk(s.then)
                walk(s.otherwise)

    walk(body)
    return list(seen)


INTRINSIC_DECLS = """declare float @llvm.maximum.f32(float, float)
declare double @llvm.maximum.f64(double, double)
declare float @llvm.minimum.f32(float, float)
declare double @llvm.minimum.f64(double, double)
declare float @llvm.fabs.f32(float)
declare double @llvm.fabs.f64(double)
declare float @llvm.sqrt.f32(float)
declare double @llvm.sqrt.f64(double)
"""


def _renumber(text: str, attr_base: int, md_base: int) -> str:
    """Move a part's attribute groups (#N) and metadata (!N) into a private number range so
    independently generated parts can share one module."""
    text = re.sub(r"#(\d+)\b", lambda m: f"#{attr_base + int(m.group(1))}", text)
    return re.sub(r"!(\d+)\b", lambda m: f"!{md_base + int(m.group(1))}", text)


def _dedupe_declarations(text: str) -> str:
    seen: set = set()
    out = []
    for line in text.split("\n"):
        if line.startswith("declare "):
            key = re.sub(r"\s+#\d+\s*$", "", line.strip())
            if key in seen:
                continue
            seen.add(key)
        out.append(line)
    return "\n".join(out)


def render_kernel_module(k) -> tuple[str, str]:
    """(function name, LLVM IR text of a standalone module) for one kernel.

    The function name is derived from the kernel's text, so identical kernels (repeated
    layers, other graphs with the same op and shapes) share one name and one cached object.
    """
    math_funcs: set = set()
    need_conv = [False]
    if isinstance(k, K.TemplateKernel):
        text, mds = k.ir, []
    else:
        text, mds = KernelRenderer(math_funcs, need_conv).render(k, 0)
    ident = hashlib.sha1(text.replace(k.name, "__K__").encode()).hexdigest()[:16]
    fname = f"mxc_k{ident}"
    text = text.replace(f"@{k.name}", f"@{fname}")
    if isinstance(k, K.TemplateKernel):
        text = _renumber(text, 100, 100000)
    pre = [INTRINSIC_DECLS]
    if math_funcs or need_conv[0]:
        from . import mathlib
        if math_funcs:
            pre.append(_renumber(mathlib.math_ir(sorted(math_funcs)), 50, 50000))
        pre.append(_renumber(mathlib.conversion_ir(), 70, 70000))
    attrs = 'attributes #0 = { nounwind "no-builtins" }\n'
    module = "\n".join(pre + [text]) + "\n" + attrs + "\n".join(mds) + "\n"
    return fname, _dedupe_declarations(module)


def render_modules(kernels: list) -> tuple[list[tuple[str, str]], list[str]]:
    """Unique (function name, module text) pairs for ``kernels`` and each kernel's name."""
    modules: dict[str, str] = {}
    names = []
    for k in kernels:
        fname, text = render_kernel_module(k)
        modules.setdefault(fname, text)
        names.append(fname)
    return list(modules.items()), names
def render_module(kernels: list) -> tuple[str, list[str]]:  # one module (AOT, tests)
    """LLVM IR text of a module holding ``kernels`` (Kernel or TemplateKernel, each named
    ``__K__`` or anything else) plus the math functions they use, and the function name of
    each kernel. Identical kernels (same text) become one function."""
    math_funcs: set = set()
    need_conv = [False]
    parts = []
    mds: list[str] = []
    names: list[str] = []
    by_text: dict[str, str] = {}
    for i, k in enumerate(kernels):
        if isinstance(k, K.TemplateKernel):
            text, kmds = k.ir, []
        else:
            r = KernelRenderer(math_funcs, need_conv)
            text, kmds = r.render(k, 0)
        ident = hashlib.sha1(text.replace(k.name, "__K__").encode()).hexdigest()[:16]
        fname = by_text.get(ident)
        if fname is None:
            fname = f"mxc_k{ident}"
            by_text[ident] = fname
            text = text.replace(f"@{k.name}", f"@{fname}")
            if isinstance(k, K.TemplateKernel):
                parts.append(_renumber(text, 100 * (len(parts) + 1), 100000 * (len(parts) + 1)))
            else:
                base = 1000 + 10 * len(mds)  # past every index the kernels before used
                text = re.sub(r"!(llvm\.loop|llvm\.access\.group) !(\d+)\b",
                              lambda m: f"!{m.group(1)} !{base + int(m.group(2))}", text)
                kmds = [re.sub(r"!(\d+)\b", lambda m: f"!{base + int(m.group(1))}", md)
                        for md in kmds]
                parts.append(text)
                mds.extend(kmds)
        names.append(fname)
    pre = [INTRINSIC_DECLS]
    if math_funcs or need_conv[0]:
        from . import mathlib
    if math_funcs:
        pre.append(_renumber(mathlib.math_ir(sorted(math_funcs)), 50, 50000))
    if need_conv[0] or math_funcs:
        pre.append(_renumber(mathlib.conversion_ir(), 70, 70000))
    attrs = 'attributes #0 = { nounwind "no-builtins" }\n'
    text = "\n".join(pre + parts) + "\n" + attrs + "\n".join(mds) + "\n"
    return _dedupe_declarations(text), names
