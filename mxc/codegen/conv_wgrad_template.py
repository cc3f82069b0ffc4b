"""Direct weight-gradient template: dW of a 2-D NCHW convolution, emitted as LLVM IR text.

    dW[f, c, ky, kx] = sum over n, oy, ox of dy[n, f, oy, ox] * x[n, c, iy, ix]
    with iy = oy*sh + ky*dh - ph, ix = ox*sw + kx*dw - pw (taps outside x contribute 0)

The forward's mirror image (``conv_template.py``): the register tile is MR input channels x
NV vectors of output channels, for one tap; per output pixel it loads NV vectors of dy --
from ``dyT``, dy transposed once per call to pixel-major (n, oy, ox, f) with f padded to
the panel width -- and broadcasts the MR input pixels straight from x. No im2col buffer, no
packing; strides, dilation and padding are only other addresses and loop bounds (a tap's
rows and columns that fall outside x are left out of its pixel loops).

Tasks split the output pixels (whole rows, the batch folded in) into ``slices`` slices per
panel of NR output channels; a task walks its slice in blocks of rows (dyT's block stays in
L1) and for every (tap, channel tile) adds the block's contribution to the accumulators it
keeps in its slice of ``partial`` -- (slices, taps, C, Fp) -- which a small reduction kernel
then sums into dW. Calling convention as every mxc CPU kernel: args = (x, dyT, partial).
"""
from __future__ import annotations

from dataclasses import dataclass

from .conv_template import ConvKernel, ConvSpec
from .gemm import _DTYPES, _FM, _FN_ATTRS, _ISA_TABLE
from .irbuilder import FunctionBuilder, VectorFMA, ident

__all__ = ["WgradSpec", "plan_wgrad", "wgrad_kernel"]

_BLOCK_BYTES = 24 * 1024   # dyT bytes of a row block, at least (stays in L1 for every tap)
_BLOCK_MAX = 160 * 1024    # ... and at most (L2)


#: the convolution whose weight gradient is computed (its bias, epilogue and output strides
#: play no part): x (N, C, H, W) and dy (N, F, Ho, Wo) contiguous, groups 1
WgradSpec = ConvSpec


@dataclass(frozen=True)
class WgradPlan:
    VL: int
    NV: int
    MR: int          # input channels per register tile
    panels: int      # panels of NR = NV*VL output channels (dyT is panels*NR wide)
    slices: int      # pixel slices (tasks = panels x slices), each a range of output rows
    rows: int        # output rows (n, oy) per slice
    block: int       # output rows per block inside a slice

    @property
    def NR(self) -> int:
        return self.NV * self.VL

    @property
    def Fp(self) -> int:
        return self.panels * self.NR

    @property
    def n_tasks(self) -> int:
        return self.panels * self.slices


def plan_wgrad(spec: WgradSpec, isa: str, slices: int | None = None,
               block_bytes: int | None = None) -> WgradPlan:
    tab = _ISA_TABLE[isa]
    es = _DTYPES[spec.dtype][1]
    VL = tab.vbytes // es
    NV = min(4 if tab.nregs >= 32 else 2, -(-spec.F // VL))
    MR = max(1, min(spec.C, (tab.nregs - NV - 1) // NV))
    panels = -(-spec.F // (NV * VL))
    total = spec.N * spec.Ho
    want = slices if slices is not None else max(1, -(-8 // panels))
    rows = -(-total // min(total, want))
    if block_bytes is None:   # the accumulators are re-read per block: bigger blocks when
        # they are big (a deep layer's 1.2 MB per panel), L1-sized ones when small (the stem)
        acc = spec.kh * spec.kw * spec.C * NV * VL * es
        block_bytes = min(max(_BLOCK_BYTES, acc // 2), _BLOCK_MAX)
    block = max(1, min(rows, block_bytes // max(1, spec.Wo * NV * VL * es)))
    return WgradPlan(VL=VL, NV=NV, MR=MR, panels=panels, slices=-(-total // rows), rows=rows,
                     block=block)


def wgrad_kernel(name: str, spec: WgradSpec, isa: str, *, slices: int | None = None,
                 block_bytes: int | None = None) -> ConvKernel:
    """Render the weight gradient of ``spec`` for ``isa``: args (x, dyT, partial), no
    scratch."""
    p = plan_wgrad(spec, isa, slices, block_bytes)
    s = spec
    T, es = _DTYPES[s.dtype]
    VL, NV, NR, Fp = p.VL, p.NV, p.NR, p.Fp
    V = f"<{VL} x {T}>"
    decls: set = set()
    vec = VectorFMA(T, VL, es, _ISA_TABLE[isa].fma, decls, _FM)
    taps = s.kh * s.kw
    HW = s.H * s.W
    parts = []

    def tile_fn(r: int) -> str:
        """``tile(x, dyT, acc, row0, row1, ky, kx, first)``: acc (r channels x NV vectors,
        vector i*Fp + v*VL apart) += the rows [row0, row1) of the slice for one tap; ``x``
        at channel c0 of image 0, ``dyT`` at the panel's first lane."""
        f = FunctionBuilder(f"define internal void {ident(f'{name}.t{r}')}(ptr %x, "
                            "ptr %dyT, ptr %acc, i64 %row0, i64 %row1, i64 %ky, i64 %kx, "
                            f"i1 %first) noinline {_FN_ATTRS}")
        slots = [[f.alloca(V) for _ in range(NV)] for _ in range(r)]
        for i in range(r):
            for v in range(NV):
                prev = f.op(f"load {V}, ptr {f.gep(T, '%acc', i * Fp + v * VL)}, align {es}")
                f.ins(f"store {V} {f.op(f'select i1 %first, {V} zeroinitializer, {V} {prev}')}"
                      f", ptr {slots[i][v]}")
        # the tap's columns: ox with 0 <= ox*sw + kx*dw - pw < W
        off = f.sub(f.mul("%kx", s.dw), s.pw)
        neg = f.op(f"icmp slt i64 {off}, 0")
        up = f.udiv(f.add(f.sub(0, off), s.sw - 1), s.sw)
        lo = f.op(f"select i1 {neg}, i64 {up}, i64 0")
        lim = f.sub(s.W - 1, off)
        cnt = f.smin(f.add(f.udiv(lim, s.sw), 1), s.Wo)
        hi = f.op(f"select i1 {f.op(f'icmp slt i64 {lim}, 0')}, i64 0, i64 {cnt}")
        with f.loop("%row0", "%row1") as row:
            n = f.udiv(row, s.Ho)
            oy = f.urem(row, s.Ho)
            iy = f.add(f.mul(oy, s.sh), f.sub(f.mul("%ky", s.dh), s.ph))
            inside = f.op(f"icmp ult i64 {iy}, {s.H}")
            with f.if_(inside):
                xr = f.gep(T, "%x", f.add(f.add(f.mul(n, s.C * HW), f.mul(iy, s.W)), off))
                dr = f.gep(T, "%dyT", f.mul(row, s.Wo * Fp))
                with f.loop(lo, hi) as ox:
                    d = [f.op(f"load {V}, ptr {f.gep(T, dr, f.add(f.mul(ox, Fp), v * VL))}, "
                              f"align {es}") for v in range(NV)]
                    xo = f.gep(T, xr, f.mul(ox, s.sw))
                    for i in range(r):
                        b = vec.splat(f, f.op(f"load {T}, ptr {f.gep(T, xo, i * HW)}, "
                                              f"align {es}"))
                        for v in range(NV):
                            a = f.op(f"load {V}, ptr {slots[i][v]}")
                            f.ins(f"store {V} {vec.fma(f, b, d[v], a)}, ptr {slots[i][v]}")
        for i in range(r):
            for v in range(NV):
                a = f.op(f"load {V}, ptr {slots[i][v]}")
                f.ins(f"store {V} {a}, ptr {f.gep(T, '%acc', i * Fp + v * VL)}, align {es}")
        f.ins("ret void")
        return f.render()

    widths = sorted({p.MR} | ({s.C % p.MR} if s.C % p.MR else set()))
    parts += [tile_fn(r) for r in widths]
    f = FunctionBuilder(f"define void {ident(name)}(i64 %task_begin, i64 %task_end, "
                        f"ptr %args, ptr %scratch) {_FN_ATTRS}")
    xp, dyp, part = (f.op(f"load ptr, ptr {f.gep('ptr', '%args', i)}, align 8", nm)
                     for i, nm in enumerate(("x", "dyT", "part")))
    total = s.N * s.Ho
    full = s.C - s.C % p.MR
    with f.loop("%task_begin", "%task_end") as t:
        panel = f.udiv(t, p.slices)
        sl = f.urem(t, p.slices)
        r0 = f.mul(sl, p.rows)
        r1 = f.smin(f.add(r0, p.rows), total)
        dpan = f.gep(T, dyp, f.mul(panel, NR))
        pbase = f.gep(T, part, f.add(f.mul(sl, taps * s.C * Fp), f.mul(panel, NR)))
        with f.loop(r0, r1, p.block) as b0:
            b1 = f.smin(f.add(b0, p.block), r1)
            first = f.op(f"icmp eq i64 {b0}, {r0}")
            with f.loop(0, taps) as tap:
                ky, kx = f.udiv(tap, s.kw), f.urem(tap, s.kw)
                tbase = f.gep(T, pbase, f.mul(tap, s.C * Fp))

                def call(c0, r, ky=ky, kx=kx, tbase=tbase, b0=b0, b1=b1, first=first):
                    f.ins(f"call void {ident(f'{name}.t{r}')}(ptr {f.gep(T, xp, f.mul(c0, HW))}"
                          f", ptr {dpan}, ptr {f.gep(T, tbase, f.mul(c0, Fp))}, i64 {b0}, "
                          f"i64 {b1}, i64 {ky}, i64 {kx}, i1 {first})")
                if full:
                    with f.loop(0, full, p.MR) as c0:
                        call(c0, p.MR)
                if s.C % p.MR:
                    call(full, s.C % p.MR)
    f.ins("ret void")
    parts.append(f.render())
    ir = "\n".join(sorted(decls) + [""] + parts)
    return ConvKernel(name, ir, p.n_tasks, 0, 2 * s.N * s.F * s.C * s.Ho * s.Wo * s.kh * s.kw)
