"""2-D pooling template: NCHW max / avg / sum pooling emitted as vectorized LLVM IR text.

The generic kernel-IR lowering of ``Pooling`` computes every output as a k_h x k_w window
reduction: 9 strided loads per output of a 3x3 stride-2 max pool, and border columns in
kernels of their own. This template computes the window *separably* and in whole rows:

* horizontal pass, per input row: ``h[ow] = reduce_t row[s_w*ow + t]`` for every output
  column, one vector of output columns at a time. A stride-``s`` tap is a vector load of
  ``s*V`` consecutive elements and a strided ``shufflevector`` (even/odd deinterleave for
  stride 2: ``vpermt2ps`` on AVX-512, ``uzp`` on NEON); taps sharing a load share it.
  Rows that need horizontal padding are first copied into a per-thread row buffer whose pad
  columns hold the pad value, so the pass itself never tests a border;
* vertical pass, per output row: ``out[ow] = reduce_t h[s_h*oh - p_h + t][ow]``. The
  horizontal rows of a task stay in an L1-sized scratch block, each computed once and
  shared by the (k_h / s_h) output rows that read it. A tap row outside the image points at
  a scratch row holding the pad value.

Column tails never need masks or scalar code: the last vector of a row is placed to end at
the row's end, overlapping the previous one (the overlap is recomputed and stored twice with
the same values); rows narrower than a vector use the largest power-of-two width that fits.

Semantics are the generic lowering's, bit for bit for max: a window tap in the padding
contributes the dtype's lowest value (max) or 0 (avg/sum), max is ``llvm.maximum`` (NaN
propagates, -0 < +0), avg divides the sum by ``size_h * size_w`` with MXNet's
``count_include_pad`` rule. Avg/sum add each row's taps first, then the rows (the generic
lowering adds the taps in row-major order): results can differ in the last bit.

Tasks are (image, channel) planes, split into bands of output rows when there are few planes
or a plane's horizontal rows would not fit the scratch budget (a band recomputes the
``k_h - s_h`` input rows it shares with the previous one). Calling convention as every mxc
CPU kernel: ``define void @NAME(i64 %task_begin, i64 %task_end, ptr %args, ptr %scratch)``
with ``args`` = (input, output) element pointers and a per-thread 64-byte aligned scratch.
Portable LLVM vector IR only (no target intrinsics, no libc), so it serves every ISA of the
GEMM template (avx512, avx2, neon, generic), cross targets included.
"""
from __future__ import annotations

from dataclasses import dataclass

from .irbuilder import FunctionBuilder, fconst

__all__ = ["PoolKernel", "PoolSpec", "pool_kernel", "supported"]

# vector register bytes per ISA (the GEMM template's ISA names)
_VBYTES = {"avx512": 64, "avx2": 32, "neon": 16, "generic": 16}
_DTYPES = {"float32": ("float", 4), "float64": ("double", 8)}
_LINE = 64                 # scratch rows start on cache lines
_H_BUDGET = 24 * 1024     # bytes of horizontal rows per task: stay in L1 beside the input row
_MIN_TASKS = 16            # split planes into bands below this many tasks (2 threads, balance)
_FN_ATTRS = 'nounwind "no-builtins"'


@dataclass(frozen=True)
class PoolSpec:
    """One NCHW pooling, every size a compile-time constant; input and output contiguous."""

    N: int
    C: int
    H: int
    W: int
    OH: int
    OW: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    pool_type: str          # "max" | "avg" | "sum"
    include_pad: bool       # avg: count padded taps in the divisor
    dtype: str              # "float32" | "float64"


@dataclass
class PoolKernel:
    name: str
    ir: str                 # function definition + the intrinsic declarations it uses
    n_tasks: int
    scratch_bytes: int
    cost: int


def supported(pool_type: str, dtype: str) -> bool:
    return pool_type in ("max", "avg", "sum") and dtype in _DTYPES


# ---------------------------------------------------------------------------------------------
# planning (compile time)
# ---------------------------------------------------------------------------------------------
def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _rup(a: int, b: int) -> int:
    return -(-a // b) * b


@dataclass
class _Plan:
    T: str                  # LLVM element type
    es: int                 # element bytes
    lanes: int              # output columns per vector (<= OW)
    clanes: int             # elements per vector of the row copy (<= W)
    direct: bool            # horizontal pass reads the input rows in place only (no copy)
    runs: list              # horizontal blocks: (first column, count, reads the input in place)
    copies: list            # (start, length) of the input row copied for the border blocks
    Wp: int                 # padded row buffer length (elements)
    OWs: int                # scratch row stride of horizontal rows (elements)
    R: int                  # output rows per band
    nb: int                 # bands per plane
    RB: int                 # horizontal rows per band (at most)
    off_fill: int           # scratch byte offsets
    off_row: int
    off_cw: int
    off_h: int
    scratch: int


def _band_rows(sp: PoolSpec, R: int) -> int:
    return min(sp.H, sp.sh * (R - 1) + sp.kh)


def _plan(sp: PoolSpec, isa: str) -> _Plan:
    T, es = _DTYPES[sp.dtype]
    V = max(_VBYTES.get(isa, 16) // es, 1)
    lanes = V if sp.OW >= V else _pow2_floor(sp.OW)
    clanes = V if sp.W >= V else _pow2_floor(sp.W)
    # elements of the (padded) row the horizontal pass reads: the last block starts at
    # OW - lanes; tap t loads sw*lanes elements from sw*ow0 + (t // sw)*sw
    need = sp.sw * (sp.OW - lanes) + ((sp.kw - 1) // sp.sw) * sp.sw + sp.sw * lanes
    runs, copies = _hblocks(sp, lanes)
    direct = not copies
    per_line = _LINE // es
    Wp = _rup(max(sp.pw + sp.W, need), per_line)
    OWs = _rup(sp.OW, per_line)
    P = sp.N * sp.C
    R = sp.OH
    if P < _MIN_TASKS:
        R = -(-sp.OH // -(-_MIN_TASKS // P))
    while R > 1 and _band_rows(sp, R) * OWs * es > _H_BUDGET:
        R -= 1
    nb = -(-sp.OH // R)
    R = -(-sp.OH // nb)           # balance the bands
    RB = _band_rows(sp, R)
    off = 0
    offs = []
    for n in (OWs, 0 if direct else Wp, OWs if sp.pool_type == "avg" else 0, RB * OWs):
        offs.append(off)
        off += _rup(n * es, _LINE)
    return _Plan(T, es, lanes, clanes, direct, runs, copies, Wp, OWs, R, nb, RB, *offs,
                 max(off, _LINE))


def _hblocks(sp: PoolSpec, lanes: int) -> tuple[list, list]:
    """The horizontal pass's vector blocks as runs (first column, count, inside): ``inside``
    blocks read only real input columns and load them in place; the others (pad columns,
    or loads past the row's end) read the padded row buffer, for which only the input
    columns they need are copied: (start, length) regions of the row."""
    span = ((sp.kw - 1) // sp.sw) * sp.sw + sp.sw * lanes   # elements one block loads
    pos = list(range(0, sp.OW - lanes + 1, lanes))
    if sp.OW % lanes:
        pos.append(sp.OW - lanes)
    runs: list = []
    need: list = []           # input columns the border blocks read
    for i, ow0 in enumerate(pos):
        a = sp.sw * ow0 - sp.pw
        inside = a >= 0 and a + span <= sp.W
        if not inside and min(a + span, sp.W) > max(a, 0):
            need.append([max(a, 0), min(a + span, sp.W)])
        tail = i == len(pos) - 1 and sp.OW % lanes
        if runs and runs[-1][2] == inside and not tail:
            runs[-1][1] += 1
        else:
            runs.append([ow0, 1, inside])
    merged: list = []
    for a, b in sorted(need):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return runs, [(a, b - a) for a, b in merged]


def lowest(dtype: str) -> float:
    import numpy as np
    return float(np.finfo(np.float32 if dtype == "float32" else np.float64).min)


# ---------------------------------------------------------------------------------------------
# emission
# ---------------------------------------------------------------------------------------------
class _Emitter:
    def __init__(self, name: str, sp: PoolSpec, plan: _Plan) -> None:
        self.name, self.sp, self.p = name, sp, plan
        self.T = plan.T
        self.f = FunctionBuilder()
        self.decls: set[str] = set()
        self.fill = lowest(sp.dtype) if sp.pool_type == "max" else 0.0

    # --- vector helpers ---
    def vt(self, n: int) -> str:
        return f"<{n} x {self.T}>"

    def vload(self, ptr: str, n: int) -> str:
        return self.f.op(f"load {self.vt(n)}, ptr {ptr}, align {self.p.es}", "v")

    def vstore(self, v: str, ptr: str, n: int) -> None:
        self.f.ins(f"store {self.vt(n)} {v}, ptr {ptr}, align {self.p.es}")

    def splat_const(self, x: float, n: int) -> str:
        c = fconst(x, self.sp.dtype)
        return "<" + ", ".join(f"{self.T} {c}" for _ in range(n)) + ">"

    def splat(self, s: str, n: int) -> str:
        v = self.f.op(f"insertelement {self.vt(n)} poison, {self.T} {s}, i64 0")
        return self.f.op(f"shufflevector {self.vt(n)} {v}, {self.vt(n)} poison, "
                         f"<{n} x i32> zeroinitializer")

    def combine(self, a: str, b: str, n: int) -> str:
        """max: NaN-propagating llvm.maximum (the generic lowering's); else an add."""
        if self.sp.pool_type != "max":
            return self.f.op(f"fadd {self.vt(n)} {a}, {b}")
        fn = f"@llvm.maximum.v{n}f{self.p.es * 8}"
        self.decls.add(f"declare {self.vt(n)} {fn}({self.vt(n)}, {self.vt(n)})")
        return self.f.op(f"call {self.vt(n)} {fn}({self.vt(n)} {a}, {self.vt(n)} {b})")

    def elem(self, base: str, i) -> str:
        return self.f.gep(self.T, base, i)

    def blocks(self, n: int, lanes: int, body) -> None:
        """``body(start)`` for vectors of ``lanes`` covering [0, n) (``lanes <= n``): a loop
        over the whole vectors, then one more ending at ``n`` (overlapping) if n % lanes."""
        full = n // lanes
        if full == 1:
            body(0)
        elif full > 1:
            with self.f.loop(0, full * lanes, lanes) as j:
                body(j)
        if n % lanes:
            body(n - lanes)

    def fill_buffer(self, ptr: str, n: int) -> None:
        """``n`` (a multiple of a cache line) elements of the pad value."""
        per = _LINE // self.p.es
        v = self.splat_const(self.fill, per)
        with self.f.loop(0, n, per) as j:
            self.vstore(v, self.elem(ptr, j), per)

    # --- passes ---
    def copy_row(self, src: str, dst: str) -> None:
        """The input columns the border blocks read, into the padded row buffer."""
        for a, n in self.p.copies:
            lanes = min(self.p.clanes, _pow2_floor(n))
            s0, d0 = self.elem(src, a), self.elem(dst, a)
            self.blocks(n, lanes, lambda j, s0=s0, d0=d0, v=lanes: self.vstore(
                self.vload(self.elem(s0, j), v), self.elem(d0, j), v))

    def hpass(self, padded: str, inplace: str, dst: str) -> None:
        """dst[ow] = reduce over t of row[sw*ow + t] in padded-row coordinates: border blocks
        read the padded row buffer ``padded``, inside blocks the input row itself
        (``inplace`` = its address minus the pad)."""
        sp, n, s = self.sp, self.p.lanes, self.sp.sw

        def block(ow0, src):
            base = self.f.mul(ow0, s)
            loads: dict = {}
            acc = None
            for t in range(sp.kw):
                b = (t // s) * s
                if b not in loads:
                    loads[b] = self.vload(self.elem(src, self.f.add(base, b)), n * s)
                v = loads[b]
                if s > 1:
                    mask = ", ".join(f"i32 {t % s + s * j}" for j in range(n))
                    v = self.f.op(f"shufflevector {self.vt(n * s)} {v}, {self.vt(n * s)} "
                                  f"poison, <{n} x i32> <{mask}>")
                acc = v if acc is None else self.combine(acc, v, n)
            self.vstore(acc, self.elem(dst, ow0), n)

        for ow0, count, inside in self.p.runs:
            src = inplace if inside else padded
            if count == 1:
                block(ow0, src)
            else:
                with self.f.loop(ow0, ow0 + count * n, n) as j:
                    block(j, src)

    def vpass(self, rows: list, dst: str, scale) -> None:
        """dst[ow] = reduce over t of rows[t][ow] (divided by scale * cw[ow] for avg)."""
        sp, n = self.sp, self.p.lanes
        cw = self.elem("%scratch", self.p.off_cw // self.p.es) if scale is not None else None

        def block(ow0):
            acc = None
            for r in rows:
                v = self.vload(self.elem(r, ow0), n)
                acc = v if acc is None else self.combine(acc, v, n)
            if scale is not None:
                size = self.f.op(f"fmul {self.vt(n)} {self.splat(scale, n)}, "
                                 f"{self.vload(self.elem(cw, ow0), n)}")
                acc = self.f.op(f"fdiv {self.vt(n)} {acc}, {size}")
            self.vstore(acc, self.elem(dst, ow0), n)

        self.blocks(sp.OW, n, block)

    # --- setup per call (the scratch is shared with other kernels of the thread) ---
    def init_scratch(self) -> tuple[str, str, str]:
        f, p, sp = self.f, self.p, self.sp
        fill = f.gep("i8", "%scratch", p.off_fill)
        row = f.gep("i8", "%scratch", p.off_row)
        hbuf = f.gep("i8", "%scratch", p.off_h)
        self.fill_buffer(fill, p.OWs)
        if not p.direct:
            self.fill_buffer(row, p.Wp)
        if sp.pool_type == "avg":
            cw = f.gep("i8", "%scratch", p.off_cw)
            with f.loop(0, sp.OW) as ow:
                fz = self.to_float(self.window_size(ow, sp.sw, sp.pw, sp.kw, sp.W))
                f.ins(f"store {self.T} {fz}, ptr {self.elem(cw, ow)}, align {p.es}")
        return fill, row, hbuf

    def to_float(self, v) -> str:
        """A small i64 as a float: through i32, since an i64 conversion is a libgcc call
        (__floatdidf) on 32-bit ARM and the kernel must stay freestanding."""
        v32 = self.f.op(f"trunc i64 {v} to i32")
        return self.f.op(f"sitofp i32 {v32} to {self.T}")

    def window_size(self, o, s: int, pad: int, k: int, X: int):
        """Taps avg pooling counts for output ``o`` along one dim (the generic lowering's
        ``_size_expr``): up to the padded end, or only the real ones."""
        f = self.f
        start = f.add(f.mul(o, s), -pad)
        end = f.add(start, k)
        if self.sp.include_pad:
            return f.sub(f.smin(end, X + pad), start)
        return f.sub(f.smin(end, X), f.smax(start, 0))

    def emit(self) -> str:
        f, p, sp = self.f, self.p, self.sp
        x = f.op("load ptr, ptr %args, align 8", "x")
        y = f.op(f"load ptr, ptr {f.gep('ptr', '%args', 1)}, align 8", "y")
        fill, row, hbuf = self.init_scratch()
        with f.loop("%task_begin", "%task_end") as task:
            q = f.udiv(task, p.nb)
            b = f.urem(task, p.nb)
            oh0 = f.mul(b, p.R)
            oh1 = f.smin(f.add(oh0, p.R), sp.OH)
            r0 = f.smax(f.add(f.mul(oh0, sp.sh), -sp.ph), 0)
            last = f.add(f.mul(oh1, sp.sh), sp.kh - sp.ph - sp.sh)
            r1 = f.smin(last, sp.H)
            xq = self.elem(x, f.mul(q, sp.H * sp.W))
            yq = self.elem(y, f.mul(q, sp.OH * sp.OW))
            # horizontal rows of the band's input rows
            with f.loop(r0, r1) as r:
                src = self.elem(xq, f.mul(r, sp.W))
                if not p.direct:
                    self.copy_row(src, self.elem(row, sp.pw))
                self.hpass(row, self.elem(src, -sp.pw),
                           self.elem(hbuf, f.mul(f.sub(r, r0), p.OWs)))
            # output rows: taps outside the image read the pad row
            with f.loop(oh0, oh1) as oh:
                top = f.add(f.mul(oh, sp.sh), -sp.ph)
                rows = [self.tap_row(f.add(top, t), r0, hbuf, fill) for t in range(sp.kh)]
                scale = None
                if sp.pool_type == "avg":
                    scale = self.to_float(self.window_size(oh, sp.sh, sp.ph, sp.kh, sp.H))
                self.vpass(rows, self.elem(yq, f.mul(oh, sp.OW)), scale)
        f.ins("ret void")
        ident = f"@{self.name}" if self.name.replace("_", "").isalnum() else f'@"{self.name}"'
        text = f.render(f"define void {ident}(i64 %task_begin, i64 %task_end, ptr %args, "
                        f"ptr %scratch) {_FN_ATTRS}")
        return text + "\n".join(sorted(self.decls)) + "\n"

    def tap_row(self, rr: str, r0, hbuf: str, fill: str) -> str:
        f, sp = self.f, self.sp
        lo = f.op(f"icmp sge i64 {rr}, 0")
        hi = f.op(f"icmp slt i64 {rr}, {sp.H}")
        ok = f.op(f"and i1 {lo}, {hi}")
        at = self.elem(hbuf, f.mul(f.sub(rr, r0), self.p.OWs))
        return f.op(f"select i1 {ok}, ptr {at}, ptr {fill}", "p")


def pool_kernel(name: str, spec: PoolSpec, isa: str) -> PoolKernel:
    """The template kernel for ``spec`` on ``isa`` (one of the GEMM template's ISA names)."""
    if not supported(spec.pool_type, spec.dtype):
        raise ValueError(f"pool template: {spec.pool_type} pooling of {spec.dtype} is not "
                         "supported")
    plan = _plan(spec, isa)
    ir = _Emitter(name, spec, plan).emit()
    n_tasks = spec.N * spec.C * plan.nb
    cost = spec.N * spec.C * spec.OH * spec.OW * (spec.kh + spec.kw)
    return PoolKernel(name, ir, n_tasks, plan.scratch, cost)


def template_kernel(x, y, **fields):
    """The ``K.TemplateKernel`` computing ``y = Pooling(x)`` (contiguous NCHW views, element
    offsets passed per call) for the ISA code is being generated for; ``fields`` are the
    :class:`PoolSpec` fields other than the dtype."""
    from ..ir import kernel as K
    from .targets import gemm_isa

    spec = PoolSpec(dtype=x.dtype.name, **fields)
    pk = pool_kernel("__K__", spec, gemm_isa())
    kern = K.TemplateKernel("__K__", [x.buf, y.buf], pk.ir, pk.n_tasks, pk.scratch_bytes,
                            cost=pk.cost, note="pool")
    kern.offsets = [x.offset, y.offset]  # type: ignore[attr-defined]
    return kern
