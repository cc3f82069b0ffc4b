"""Direct convolution template: NCHW convolution with prepacked weights, emitted as LLVM IR.

The implicit GEMM (``gemm.py``) packs a block of the virtual im2col matrix before its
micro-kernel reads it: at resnet's 64-channel stage every packed element serves only 64
output channels, and the packing costs ~10 % of the layer. This template packs nothing at
run time. Its register tile is MR output pixels of one output row x NR = NV vectors of
output channels (the weights, prepacked once at bind time, are the vectors); for every
(input channel, tap) it loads NV weight vectors and broadcasts each of the MR input pixels
straight from the NCHW input -- on AVX-512 a broadcast is a memory operand of the FMA
(``vfmadd231ps zmm, zmm, [mem]{1to16}``), so strided and dilated taps cost nothing extra.

Padding never reaches memory: a tap row outside the image is skipped by the K loop's row
bounds (computed per output row), and a tap column outside the image for pixel i of a tile
simply has no FMA -- every tile position of a row is classified at compile time (left
border, interior, right border, ragged last tile) and each class gets its own unrolled
tile function. No load ever touches an element outside the input.

Loop nest (per task = one panel of NR output channels x a chunk of output rows, the batch
folded into the rows)::

    for channel block cb:                 weight slab (kh, kw, cbs, NR) of this panel
      for row in chunk:                   ky range of the row (padding rows skipped)
        for tile in row:                  MR x NV accumulators in registers
          acc = bias (first block) | scratch (later blocks)
          for ky in [klo, khi): for kx: for c in block:
              NV weight vectors; acc[i][v] += x[c, iy + ky, ix_i + kx] * w[v]
          last block: transpose in registers, epilogue (residual add, relu), store MR-pixel
          runs per output channel; else park acc in the task's scratch

Channel blocks only exist when a panel's weights (C*kh*kw*NR elements) exceed
``_SLAB_BYTES`` (stages 3/4 of resnet): they keep the slab in L2 while every row of the
chunk reuses it. Weights layout (``pack_weights``): panel-major, then channel block, then
(ky, kx, channel, NR lanes), zero lanes past F.

Calling convention as every mxc CPU kernel: ``define void @NAME(i64 %task_begin,
i64 %task_end, ptr %args, ptr %scratch)``; args = (x, packed w, y[, bias][, residual]).
Portable LLVM vector IR (no target intrinsics, no libc): one template for every ISA of the
GEMM table (avx512, avx2, neon, generic), cross targets included.
"""
from __future__ import annotations

from dataclasses import dataclass

from .gemm import _DTYPES, _FM, _FN_ATTRS, _ISA_TABLE
from .irbuilder import FunctionBuilder, VectorFMA, ident, transpose

__all__ = ["ConvKernel", "ConvSpec", "conv_kernel", "pack_weights", "plan_conv",
           "weight_layout"]

_SLAB_BYTES = 320 * 1024   # a panel's weights above this are cut into channel blocks (L2)
_ACC_BYTES = 128 * 1024    # accumulators parked per task between channel blocks
_MIN_TASKS = 8             # at least this many tasks (2 threads, balance by stealing)


@dataclass(frozen=True)
class ConvSpec:
    """One 2-D NCHW convolution (a 1-D one as H = 1), groups = 1, every size a compile-time
    constant; x (N, C, H, W), y (N, F, Ho, Wo) and the residual (like y) contiguous."""

    N: int
    C: int
    H: int
    W: int
    F: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    ph: int
    pw: int
    Ho: int
    Wo: int
    dtype: str = "float32"
    bias: bool = False
    epilogue: tuple = ()    # steps after the bias: "add" (the residual), "relu"
    # element strides (n, c, h, w) of y and the residual; None: contiguous. A transposed
    # convolution's output phases are written in place this way (pixel stride = its stride)
    y_strides: tuple | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"ConvSpec.dtype {self.dtype!r}: float32 or float64")
        if any(e not in ("add", "relu") for e in self.epilogue):
            raise ValueError(f"ConvSpec.epilogue {self.epilogue}: steps are 'add' and 'relu'")
        # pads may be negative: the output window then starts inside the input (the phases
        # of a transposed convolution)
        if min(self.N, self.C, self.H, self.W, self.F, self.kh, self.kw, self.sh, self.sw,
               self.dh, self.dw, self.Ho, self.Wo) < 1:
            raise ValueError(f"ConvSpec {self}: sizes must be positive")
        if self.y_strides is not None:
            ys = tuple(int(v) for v in self.y_strides)
            if len(ys) != 4 or min(ys) < 1:
                raise ValueError(f"ConvSpec.y_strides {self.y_strides}: 4 positive strides")
            dense = (self.F * self.Ho * self.Wo, self.Ho * self.Wo, self.Wo, 1)
            object.__setattr__(self, "y_strides", None if ys == dense else ys)

    @property
    def ys(self) -> tuple:
        """Element strides (n, c, h, w) of y."""
        return self.y_strides or (self.F * self.Ho * self.Wo, self.Ho * self.Wo, self.Wo, 1)


@dataclass(frozen=True)
class PanelTiles:
    """The register tile of one kind of panel and how it covers an output row."""

    NV: int             # vectors of output channels per tile
    MR: int             # output pixels per tile (the last tiles of a row may be one shorter)
    tiles: int          # tiles per output row
    groups: tuple       # ((j0, j1, x0, r, invalid taps), ...): runs of tiles of one class,
    #                     the first at output column x0, each r pixels wide


@dataclass(frozen=True)
class ConvPlan:
    VL: int             # vector lanes
    CB: int             # input channels per block
    blocks: int         # channel blocks
    RC: int             # output rows per task
    chunks: int         # row chunks (tasks = panels x chunks)
    panels: int         # panels of output channels: full ones of NR, then the last
    full: PanelTiles    # every panel but the last
    last: PanelTiles    # the last panel: as many vectors as its channels need (80 channels
    #                     on AVX-512 = one 64-channel panel + one of 16, not 2 x 64)

    NV = property(lambda self: self.full.NV)
    MR = property(lambda self: self.full.MR)
    tiles = property(lambda self: self.full.tiles)
    groups = property(lambda self: self.full.groups)

    @property
    def NR(self) -> int:
        return self.full.NV * self.VL

    @property
    def NR_last(self) -> int:
        return self.last.NV * self.VL

    @property
    def lanes(self) -> int:
        """Output channels the packed weights hold (F rounded up to vectors)."""
        return (self.panels - 1) * self.NR + self.NR_last

    @property
    def n_tasks(self) -> int:
        return self.panels * self.chunks


@dataclass
class ConvKernel:
    name: str
    ir: str
    n_tasks: int
    scratch_bytes: int
    flops: int


def plan_conv(spec: ConvSpec, isa: str, params: dict | None = None) -> ConvPlan:
    """Tile, blocks and task split, all at compile time. ``params`` (tests, tuning): ``nv``,
    ``mr``, ``cb``, ``rc``."""
    params = params or {}
    if isa not in _ISA_TABLE:
        raise ValueError(f"conv_kernel: unknown isa {isa!r}")
    tab = _ISA_TABLE[isa]
    es = _DTYPES[spec.dtype][1]
    VL = tab.vbytes // es
    NV = int(params.get("nv", min(4 if tab.nregs >= 32 else 2, -(-spec.F // VL))))
    NR = NV * VL
    panels = -(-spec.F // NR)
    nv_last = -(-(spec.F - (panels - 1) * NR) // VL)
    per_c = spec.kh * spec.kw * NR * es
    CB = spec.C if spec.C * per_c <= _SLAB_BYTES else max(1, _SLAB_BYTES // per_c)
    if CB < spec.C:     # prefer a divisor of C close to the budget (no ragged last block)
        div = max(d for d in range(1, CB + 1) if spec.C % d == 0)
        CB = div if 2 * div >= CB else CB
    CB = min(int(params.get("cb", CB)), spec.C)
    blocks = -(-spec.C // CB)
    rows = spec.N * spec.Ho
    chunks = -(-_MIN_TASKS // panels)
    if blocks > 1:
        row_bytes = spec.Wo * NR * es
        chunks = max(chunks, -(-rows * row_bytes // _ACC_BYTES))
    RC = int(params.get("rc", -(-rows // min(rows, chunks))))
    chunks = -(-rows // RC)
    full = _panel_tiles(spec, VL, NV, tab.nregs, params.get("mr"))
    last = full if nv_last == NV else _panel_tiles(spec, VL, nv_last, tab.nregs, None)
    return ConvPlan(VL=VL, CB=CB, blocks=blocks, RC=RC, chunks=chunks, panels=panels,
                    full=full, last=last)


def _panel_tiles(spec: ConvSpec, VL: int, NV: int, nregs: int, mr) -> PanelTiles:
    """MR x NV accumulators + NV weight vectors + the broadcast pixel fill the register file;
    a row's tiles balanced (56 -> 6 x 6 + 4 x 5, 10 -> 2 x 5) and classified by the padding
    taps of their pixels."""
    top = min(VL, (nregs - NV - 1) // NV)
    top = max(1, int(mr if mr is not None else top))
    tiles = -(-spec.Wo // top)
    MR = -(-spec.Wo // tiles)
    long = spec.Wo - tiles * (MR - 1)            # tiles of MR pixels, then MR - 1
    groups: list = []
    x0 = 0
    for j in range(tiles):
        r = MR if j < long else MR - 1
        bad = frozenset((i, kx) for i in range(r) for kx in range(spec.kw)
                        if not 0 <= (x0 + i) * spec.sw + kx * spec.dw - spec.pw < spec.W)
        if groups and groups[-1][3:] == (r, bad):
            groups[-1] = (groups[-1][0], j + 1) + groups[-1][2:]
        else:
            groups.append((j, j + 1, x0, r, bad))
        x0 += r
    return PanelTiles(NV=NV, MR=MR, tiles=tiles, groups=tuple(groups))


def weight_layout(spec: ConvSpec, isa: str) -> tuple:
    """The prepacked weight layout a program records for the slot (``Program.slot_layouts``):
    ("conv_direct", F, C*kh*kw, NR, (C, kh, kw, CB, NR_last)); the packed weight holds
    ``plan.lanes`` x C*kh*kw elements."""
    p = plan_conv(spec, isa)
    return ("conv_direct", spec.F, spec.C * spec.kh * spec.kw, p.NR,
            (spec.C, spec.kh, spec.kw, p.CB, p.NR_last))


def pack_weights(w, nr: int, cb: int, nr_last: int | None = None):
    """An (F, C, kh, kw) weight in the template's layout (bind time): panels of ``nr``
    output channels, the last one ``nr_last`` wide (default ``nr``; zero past F), each cut
    into blocks of ``cb`` channels stored as (kh, kw, cbs, width)."""
    import numpy as np

    F, C, kh, kw = w.shape
    panels = -(-F // nr)
    nr_last = nr if nr_last is None else nr_last
    wp = np.zeros(((panels - 1) * nr + nr_last, C, kh, kw), w.dtype)
    wp[:F] = w
    parts = [wp[p * nr:p * nr + (nr if p < panels - 1 else nr_last), c0:c0 + cb]
             .transpose(2, 3, 1, 0).ravel() for p in range(panels) for c0 in range(0, C, cb)]
    return np.concatenate(parts) if parts else np.zeros(0, w.dtype)


class _Emitter:
    def __init__(self, name: str, spec: ConvSpec, plan: ConvPlan, isa: str):
        self.name, self.spec, self.p = name, spec, plan
        self.T, self.es = _DTYPES[spec.dtype]
        self.VL = plan.VL
        self.V = f"<{self.VL} x {self.T}>"
        self.decls: set[str] = set()
        self.md: list[str] = []     # loop metadata; !0 is "do not unroll"
        self.stores: set = set()    # (panel kind, tile width) whose store function is needed
        # panel kinds: "f" (full panels, also the last one when it is as wide), "l" (a
        # narrower last panel); each with its tiles and whether its channels can run out
        F, NR, last = spec.F, plan.NR, plan.last
        narrow = last.NV != plan.full.NV
        self.kinds = {"f": (plan.full, not narrow and F % NR != 0)}
        if narrow:
            self.kinds["l"] = (last, F - (plan.panels - 1) * NR != plan.NR_last)
        vec = VectorFMA(self.T, self.VL, self.es, _ISA_TABLE[isa].fma, self.decls, _FM)
        self.splat, self.vfma = vec.splat, vec.fma

    def sym(self, suffix: str) -> str:
        return ident(f"{self.name}.{suffix}")

    def masked(self, n: int) -> tuple[str, str, str]:
        """(vector type, masked load, masked store) intrinsics for n-lane vectors."""
        VM, MK, vt = f"<{n} x {self.T}>", f"<{n} x i1>", f"v{n}f{self.es * 8}"
        ld, st = f"@llvm.masked.load.{vt}.p0", f"@llvm.masked.store.{vt}.p0"
        self.decls.add(f"declare {VM} {ld}(ptr, i32, {MK}, {VM})")
        self.decls.add(f"declare void {st}({VM}, ptr, i32, {MK})")
        return VM, ld, st

    # --- the tile function of one class of tile positions ---
    def emit_tile(self, kind: str, idx: int, r: int, bad: frozenset) -> str:
        """``tile(x, w, y, bias, res, acc, klo, khi, cbs, first, last, ocleft)``: one tile
        of ``r`` pixels whose taps ``bad`` (pixel, kx) fall in the padding columns. ``x``
        points at the tile's input origin (channel c0, row oy*sh - ph, column x0*sw - pw:
        possibly outside the image, never read there), ``w`` at the (panel, block) slab,
        ``y``/``res`` at the tile's first output element of the panel's first channel.
        ``noinline``: inlined into the entry's row and tile loops, the one big loop nest
        made loop strength reduction take over half of the compile time (0.67 -> 0.15 s for
        a resnet stage-1 kernel), for no speed."""
        s, p, T, V, es, VL = self.spec, self.p, self.T, self.V, self.es, self.VL
        tiles, ragged = self.kinds[kind]
        NV = tiles.NV
        NR = NV * VL
        HW = s.H * s.W
        f = FunctionBuilder(f"define internal void {self.sym(f't{kind}{idx}')}(ptr %x, "
                            "ptr %w, ptr %y, ptr %bias, ptr %res, ptr %acc, i64 %klo, "
                            "i64 %khi, i64 %cbs, i1 %first, i1 %last, i64 %ocleft) noinline "
                            f"{_FN_ATTRS}")
        slots = [[f.alloca(V) for _ in range(NV)] for _ in range(r)]
        init = []
        for v in range(NV):
            if not s.bias:
                init.append("zeroinitializer")
                continue
            bp = f.gep(T, "%bias", v * VL)
            if ragged:
                _, ld, _ = self.masked(VL)
                lim = f.op(f"sub i64 %ocleft, {v * VL}")
                mask = self.lane_mask(f, VL, lim)
                init.append(f.op(f"call {V} {ld}(ptr {bp}, i32 {es}, <{VL} x i1> {mask}, "
                                 f"{V} zeroinitializer)"))
            else:
                init.append(f.op(f"load {V}, ptr {bp}, align {es}"))
        for i in range(r):
            for v in range(NV):
                a0 = init[v]
                if p.blocks > 1:
                    prev = f.op(f"load {V}, ptr {f.gep(T, '%acc', i * NR + v * VL)}, "
                                f"align {es}")
                    a0 = f.op(f"select i1 %first, {V} {a0}, {V} {prev}")
                f.ins(f"store {V} {a0}, ptr {slots[i][v]}")
        # K runs (ky, kx, channel): the channel loop is innermost, one tap per iteration.
        # Taps were innermost first (each channel's 3 x 3 window at once): then the same
        # input element (pixel i, tap kx+1 = pixel i+1, tap kx) is shared between taps and
        # LLVM keeps it in a register across them, and the tile spills.
        good = [kx for kx in range(s.kw) if not any((i, kx) in bad for i in range(r))]
        edge = [kx for kx in range(s.kw) if kx not in good and
                any((i, kx) not in bad for i in range(r))]
        tap_slab = f.mul("%cbs", NR)

        def channels(xk, wk, kx, pixels):
            xt = f.gep(T, xk, f.mul(kx, s.dw))
            wt = f.gep(T, wk, f.mul(kx, tap_slab))
            with f.loop(0, "%cbs") as c:
                xc = f.gep(T, xt, f.mul(c, HW))
                wc = f.gep(T, wt, f.mul(c, NR))
                acc = [[f.op(f"load {V}, ptr {slots[i][v]}") for v in range(NV)]
                       for i in pixels]
                wv = [f.op(f"load {V}, ptr {f.gep(T, wc, v * VL)}, align {es}")
                      for v in range(NV)]
                for a, i in zip(acc, pixels):
                    xs = f.op(f"load {T}, ptr {f.gep(T, xc, i * s.sw)}, align {es}")
                    b = self.splat(f, xs)
                    for v in range(NV):
                        f.ins(f"store {V} {self.vfma(f, b, wv[v], a[v])}, "
                              f"ptr {slots[i][v]}")

        with f.loop("%klo", "%khi") as ky:
            xk = f.gep(T, "%x", f.mul(ky, s.dh * s.W))
            wk = f.gep(T, "%w", f.mul(ky, f.mul(tap_slab, s.kw)))
            for kx in edge:
                channels(xk, wk, kx, [i for i in range(r) if (i, kx) not in bad])
            if len(good) == 1:
                channels(xk, wk, good[0], list(range(r)))
            elif good:
                with f.loop(good[0], good[-1] + 1) as kx:
                    channels(xk, wk, kx, list(range(r)))
        # the tile leaves through memory: parked in the task's scratch between channel
        # blocks, else in a stack buffer that the store function of its width reads
        if p.blocks > 1:
            out = "%acc"
        else:
            out = "%accbuf"
            f.allocas.append(f"  %accbuf = alloca [{r * NR} x {T}], align 64")
        for i in range(r):
            for v in range(NV):
                a = f.op(f"load {V}, ptr {slots[i][v]}")
                f.ins(f"store {V} {a}, ptr {f.gep(T, out, i * NR + v * VL)}, align {es}")
        self.stores.add((kind, r))
        with f.if_("%last"):
            f.ins(f"call void {self.sym(f's{kind}{r}')}(ptr {out}, ptr %y, ptr %res, "
                  "i64 %ocleft)")
        f.ins("ret void")
        return f.render()

    def emit_store_fn(self, kind: str, r: int) -> str:
        """``store(acc, y, res, ocleft)``: the epilogue of every tile r pixels wide, one
        function per panel kind and width (not one copy per tile class: the transposes are
        most of a tile function's code)."""
        T, V, es, VL = self.T, self.V, self.es, self.VL
        tiles, ragged = self.kinds[kind]
        NV = tiles.NV
        f = FunctionBuilder(f"define internal void {self.sym(f's{kind}{r}')}(ptr %acc, "
                            f"ptr %y, ptr %res, i64 %ocleft) noinline {_FN_ATTRS}")
        acc = [[f.op(f"load {V}, ptr {f.gep(T, '%acc', i * NV * VL + v * VL)}, align {es}")
                for v in range(NV)] for i in range(r)]
        self.emit_store(f, acc, r, ragged)
        f.ins("ret void")
        return f.render()

    def no_unroll(self) -> str:
        """A fresh loop-metadata id asking LLVM not to unroll the loop."""
        n = len(self.md) + 1
        self.md.append(f"!{n} = distinct !{{!{n}, !0}}")
        return f"!{n}"

    def lane_mask(self, f: FunctionBuilder, n: int, lim) -> str:
        """<n x i1>: lane l < lim (lim an i64 value)."""
        vi = f"<{n} x i64>"
        lanes = "<" + ", ".join(f"i64 {i}" for i in range(n)) + ">"
        lv = f.op(f"insertelement {vi} poison, i64 {lim}, i64 0")
        lv = f.op(f"shufflevector {vi} {lv}, {vi} poison, <{n} x i32> zeroinitializer")
        return f.op(f"icmp slt {vi} {lanes}, {lv}")

    def emit_store(self, f: FunctionBuilder, acc, r: int, ragged: bool) -> None:
        """Transpose each channel vector's r pixel rows into one r-pixel run per channel,
        parked in a tile buffer; then one loop over the channels applies the epilogue and
        stores each run (a masked store of the next power of two): one loop body, not NR
        unrolled copies, so the IR -- and the compile time -- stays small. With a pixel
        stride ps > 1 a run is spread over P*ps lanes and stored under a mask that leaves
        the lanes between the pixels untouched."""
        s, T, es, VL = self.spec, self.T, self.es, self.VL
        NR = len(acc[0]) * VL
        P = 1 << (r - 1).bit_length()
        VM = f"<{P} x {T}>"
        pick = "<" + ", ".join(f"i32 {i}" for i in range(P)) + ">"
        run_load, run_store = self.run_access(r, P)
        buf = f"%tile{r}"
        f.allocas.append(f"  {buf} = alloca [{NR * P} x {T}], align 64")
        for v in range(len(acc[0])):
            cols = transpose(f, [acc[i][v] for i in range(r)], VL, self.V)
            for lane, col in enumerate(cols):
                x = f.op(f"shufflevector {self.V} {col}, {self.V} poison, <{P} x i32> {pick}")
                f.ins(f"store {VM} {x}, ptr {f.gep(T, buf, (v * VL + lane) * P, True)}, "
                      f"align {es}")
        channels = f.smin("%ocleft", NR) if ragged else NR
        with f.loop(0, channels) as oc:
            x = f.op(f"load {VM}, ptr {f.gep(T, buf, f.mul(oc, P), True)}, align {es}")
            off = f.mul(oc, s.ys[1])
            for step in s.epilogue:
                if step == "add":
                    x = f.op(f"fadd {_FM} {VM} {x}, {run_load(f, f.gep(T, '%res', off))}")
                else:   # relu: max(x, 0), NaN -> 0
                    c = f.op(f"fcmp ogt {VM} {x}, zeroinitializer")
                    x = f.op(f"select <{P} x i1> {c}, {VM} {x}, {VM} zeroinitializer")
            run_store(f, x, f.gep(T, "%y", off))

    def run_access(self, r: int, P: int):
        """(load(f, ptr), store(f, value, ptr)) of an r-pixel run (a <P x T> value, lanes
        past r unused) at the output's pixel stride."""
        T, es = self.T, self.es
        ps = self.spec.ys[3]
        L = P * ps
        VM, ld, st = self.masked(L)
        VP = f"<{P} x {T}>"
        mask = "<" + ", ".join(f"i1 {'true' if i % ps == 0 and i // ps < r else 'false'}"
                               for i in range(L)) + ">"
        full = L == r
        spread = "<" + ", ".join(f"i32 {i // ps}" if i % ps == 0 else "i32 poison"
                                 for i in range(L)) + ">"
        gather = "<" + ", ".join(f"i32 {i * ps}" for i in range(P)) + ">"

        def load(f, src):
            v = f.op(f"load {VM}, ptr {src}, align {es}") if full else \
                f.op(f"call {VM} {ld}(ptr {src}, i32 {es}, <{L} x i1> {mask}, "
                     f"{VM} zeroinitializer)")
            return v if ps == 1 else \
                f.op(f"shufflevector {VM} {v}, {VM} poison, <{P} x i32> {gather}")

        def store(f, x, dst):
            if ps > 1:
                x = f.op(f"shufflevector {VP} {x}, {VP} poison, <{L} x i32> {spread}")
            if full:
                f.ins(f"store {VM} {x}, ptr {dst}, align {es}")
            else:
                f.ins(f"call void {st}({VM} {x}, ptr {dst}, i32 {es}, <{L} x i1> {mask})")
        return load, store

    # --- the task entry ---
    def emit_entry(self) -> str:
        s, p, T = self.spec, self.p, self.T
        NR = p.NR
        f = FunctionBuilder(f"define void {ident(self.name)}(i64 %task_begin, i64 %task_end, "
                            f"ptr %args, ptr %scratch) {_FN_ATTRS}")
        names = ["x", "w", "y"] + (["bias"] if s.bias else []) + \
            (["res"] if "add" in s.epilogue else [])
        ptr = {}
        for i, n in enumerate(names):
            ptr[n] = f.op(f"load ptr, ptr {f.gep('ptr', '%args', i)}, align 8", n)
        rows = s.N * s.Ho
        slab = s.C * s.kh * s.kw * NR
        with f.loop("%task_begin", "%task_end") as t:
            panel = f.udiv(t, p.chunks)
            chunk = f.urem(t, p.chunks)
            row0 = f.mul(chunk, p.RC)
            row1 = f.smin(f.add(row0, p.RC), rows)
            oc0 = f.mul(panel, NR)
            ocleft = f.sub(s.F, oc0)
            wp = f.gep(T, ptr["w"], f.mul(panel, slab))
            bias = f.gep(T, ptr["bias"], oc0) if s.bias else "null"
            if len(self.kinds) == 1:
                self.emit_panel(f, "f", ptr, wp, row0, row1, oc0, ocleft, bias)
            else:   # the narrower last panel has tile functions of its own
                lastp = f.op(f"icmp eq i64 {panel}, {p.panels - 1}")
                tl, tf, done = (f.label_name(x) for x in ("lastp", "fullp", "pdone"))
                f.ins(f"br i1 {lastp}, label %{tl}, label %{tf}")
                f.label(tl)
                self.emit_panel(f, "l", ptr, wp, row0, row1, oc0, ocleft, bias)
                f.br(done)
                f.label(tf)
                self.emit_panel(f, "f", ptr, wp, row0, row1, oc0, ocleft, bias)
                f.br(done)
                f.label(done)
        f.ins("ret void")
        return f.render()

    def emit_panel(self, f: FunctionBuilder, kind: str, ptr: dict, wp, row0, row1, oc0,
                   ocleft, bias) -> None:
        """One task's panel: channel blocks x rows x tiles, with the ``kind``'s tiles."""
        s, p, T = self.spec, self.p, self.T
        tiles, _ = self.kinds[kind]
        NR = tiles.NV * self.VL
        HW = s.H * s.W
        with f.loop(0, p.blocks) as cb:
            c0 = f.mul(cb, p.CB)
            cbs = f.smin(f.sub(s.C, c0), p.CB) if s.C % p.CB else p.CB
            first = f.op(f"icmp eq i64 {cb}, 0")
            last = f.op(f"icmp eq i64 {cb}, {p.blocks - 1}")
            wb = f.gep(T, wp, f.mul(c0, s.kh * s.kw * NR))
            with f.loop(row0, row1) as row:
                n = f.udiv(row, s.Ho)
                oy = f.urem(row, s.Ho)
                iy0 = f.sub(f.mul(oy, s.sh), s.ph)
                klo, khi = self.row_taps(f, iy0)
                xr = f.gep(T, ptr["x"], f.sub(f.add(f.add(f.mul(n, s.C * HW), f.mul(c0, HW)),
                                                     f.mul(iy0, s.W)), s.pw))
                yoff = f.add(f.add(f.mul(n, s.ys[0]), f.mul(oc0, s.ys[1])),
                             f.mul(oy, s.ys[2]))
                yr = f.gep(T, ptr["y"], yoff)
                rr = f.gep(T, ptr["res"], yoff) if "add" in s.epilogue else "null"
                accr = f.gep(T, "%scratch", f.mul(f.sub(row, row0), s.Wo * NR)) \
                    if p.blocks > 1 else "null"
                for gi, (j0, j1, x0, r, _) in enumerate(tiles.groups):
                    def call(j, gi=gi, j0=j0, x0=x0, r=r):
                        col = f.add(x0, f.mul(f.sub(j, j0), r))
                        xo, yo = f.mul(col, s.sw), f.mul(col, s.ys[3])
                        ao = f.mul(col, NR)
                        f.ins(f"call void {self.sym(f't{kind}{gi}')}(ptr {f.gep(T, xr, xo)}, "
                              f"ptr {wb}, ptr {f.gep(T, yr, yo)}, ptr {bias}, "
                              f"ptr {f.gep(T, rr, yo) if rr != 'null' else 'null'}, "
                              f"ptr {f.gep(T, accr, ao) if accr != 'null' else 'null'}, "
                              f"i64 {klo}, i64 {khi}, i64 {cbs}, i1 {first}, i1 {last}, "
                              f"i64 {ocleft})")
                    if j1 - j0 == 1:
                        call(j0)
                    else:
                        with f.loop(j0, j1) as j:
                            call(j)

    def row_taps(self, f: FunctionBuilder, iy0: str) -> tuple[str, str]:
        """[klo, khi): the kernel rows ky whose input row iy0 + ky*dh lies in the image."""
        s = self.spec
        neg = f.op(f"icmp slt i64 {iy0}, 0")
        up = f.udiv(f.add(f.sub(0, iy0), s.dh - 1), s.dh)
        klo = f.op(f"select i1 {neg}, i64 {up}, i64 0")
        lim = f.sub(s.H - 1, iy0)
        below = f.op(f"icmp slt i64 {lim}, 0")
        cnt = f.smin(f.add(f.udiv(lim, s.dh), 1), s.kh)
        khi = f.op(f"select i1 {below}, i64 0, i64 {cnt}")
        return klo, khi

    def render(self) -> str:
        tiles = [self.emit_tile(kind, gi, r, bad) for kind, (pt, _) in self.kinds.items()
                 for gi, (_, _, _, r, bad) in enumerate(pt.groups)]
        entry = self.emit_entry()
        tiles += [self.emit_store_fn(kind, r) for kind, r in sorted(self.stores)]
        md = ['!0 = !{!"llvm.loop.unroll.disable"}'] + self.md if self.md else []
        return "\n".join(sorted(self.decls) + [""] + tiles + [entry] + md)


def conv_kernel(name: str, spec: ConvSpec, isa: str, *, _params: dict | None = None
                ) -> ConvKernel:
    """Render ``spec`` as a task-parallel kernel named ``name`` for ``isa``; its weight
    argument is in the layout of :func:`pack_weights` (``weight_layout``)."""
    plan = plan_conv(spec, isa, _params)
    ir = _Emitter(name, spec, plan, isa).render()
    scratch = plan.RC * spec.Wo * plan.NR * _DTYPES[spec.dtype][1] \
        if plan.blocks > 1 else 0
    flops = 2 * spec.N * spec.F * spec.Ho * spec.Wo * spec.C * spec.kh * spec.kw
    return ConvKernel(name=name, ir=ir, n_tasks=plan.n_tasks, scratch_bytes=scratch,
                      flops=flops)

