"""Max-pooling backward template: dx of a 2-D NCHW max pooling, emitted as LLVM IR text.

The generic lowering computes the gradient in gather form: a padded copy of x, an argmax
kernel (the first window position equal to the window's output), a padded copy of dy and of
the argmax, then one kernel per stride phase summing the windows that picked each input --
seven passes over activation-sized tensors (resnet18's stem pool at batch 8: 9.4 ms). This
template makes one pass per (image, channel) plane: it zeroes dx, then walks the outputs in
order, finds each window's first position equal to the output (row-major, as MXNet's
``pool_max_2d_backward``; a padding position counts as the lowest value, and a match there
drops the gradient; NaN outputs match nothing) and adds dy there. Windows that overlap add
into the same dx element one after the other, so a plane is one task and a task is
sequential; planes run in parallel.

The window is unrolled (kh x kw loads, compares and selects picking the first match, no
branches); rows and columns whose windows lie inside the image take a variant without
bounds checks. Calling convention as every mxc CPU kernel: args = (dy, x, y, dx).
"""
from __future__ import annotations

from dataclasses import dataclass

from .irbuilder import FunctionBuilder, fconst
from .pool_template import _DTYPES, _FN_ATTRS, PoolSpec, lowest

__all__ = ["MaxBackwardKernel", "max_backward_kernel", "supported_backward"]

_MAX_TAPS = 64       # larger windows keep the generic lowering (the unrolled scan grows)


def supported_backward(spec: PoolSpec) -> bool:
    return spec.pool_type == "max" and spec.dtype in _DTYPES and \
        spec.kh * spec.kw <= _MAX_TAPS


@dataclass
class MaxBackwardKernel:
    name: str
    ir: str
    n_tasks: int
    cost: int


def _interior(o_count: int, s: int, p: int, k: int, X: int) -> tuple[int, int]:
    """[lo, hi): outputs whose whole window lies inside [0, X)."""
    lo = -(-p // s)
    hi = (X + p - k) // s + 1
    lo, hi = min(max(lo, 0), o_count), min(max(hi, 0), o_count)
    return (lo, hi) if lo < hi else (0, 0)


def max_backward_kernel(name: str, spec: PoolSpec) -> MaxBackwardKernel:
    """The template kernel for dx of ``spec`` (a max pooling); ISA-independent scalar IR."""
    if not supported_backward(spec):
        raise ValueError(f"max-pool backward template: {spec.pool_type} pooling of "
                         f"{spec.dtype} with a {spec.kh}x{spec.kw} window is not supported")
    sp = spec
    T, es = _DTYPES[sp.dtype]
    low = fconst(lowest(sp.dtype), sp.dtype)
    f = FunctionBuilder()
    ptr = [f.op(f"load ptr, ptr {f.gep('ptr', '%args', i)}, align 8", n)
           for i, n in enumerate(("dy", "x", "y", "dx"))]
    HW, OHW = sp.H * sp.W, sp.OH * sp.OW
    ih_lo, ih_hi = _interior(sp.OH, sp.sh, sp.ph, sp.kh, sp.H)
    iw_lo, iw_hi = _interior(sp.OW, sp.sw, sp.pw, sp.kw, sp.W)

    def window(xp, dxp, yv, g, hs, ws, checked: bool) -> None:
        """dx[first position equal to yv] += g over the window at (hs, ws)."""
        target = -1
        for a in reversed(range(sp.kh)):
            for b in reversed(range(sp.kw)):
                ih, iw = f.add(hs, a), f.add(ws, b)
                if checked:
                    ok = f.op(f"and i1 {f.op(f'icmp ult i64 {ih}, {sp.H}')}, "
                              f"{f.op(f'icmp ult i64 {iw}, {sp.W}')}")
                    at = f.op(f"select i1 {ok}, i64 {f.add(f.mul(ih, sp.W), iw)}, i64 0")
                    v = f.op(f"load {T}, ptr {f.gep(T, xp, at)}, align {es}")
                    v = f.op(f"select i1 {ok}, {T} {v}, {T} {low}")
                    pos = f.op(f"select i1 {ok}, i64 {at}, i64 -1")
                else:
                    pos = f.add(f.mul(ih, sp.W), iw)
                    v = f.op(f"load {T}, ptr {f.gep(T, xp, pos)}, align {es}")
                hit = f.op(f"fcmp oeq {T} {v}, {yv}")
                target = f.op(f"select i1 {hit}, i64 {pos}, i64 {target}")
        with f.if_(f.op(f"icmp sge i64 {target}, 0")):
            at = f.gep(T, dxp, target)
            cur = f.op(f"load {T}, ptr {at}, align {es}")
            f.ins(f"store {T} {f.op(f'fadd {T} {cur}, {g}')}, ptr {at}, align {es}")

    def outputs(xp, dxp, yp, dyp, oh, ow0, ow1, checked: bool) -> None:
        if isinstance(ow0, int) and isinstance(ow1, int) and ow0 >= ow1:
            return
        hs = f.sub(f.mul(oh, sp.sh), sp.ph)
        with f.loop(ow0, ow1) as ow:
            o = f.add(f.mul(oh, sp.OW), ow)
            yv = f.op(f"load {T}, ptr {f.gep(T, yp, o)}, align {es}")
            g = f.op(f"load {T}, ptr {f.gep(T, dyp, o)}, align {es}")
            window(xp, dxp, yv, g, hs, f.sub(f.mul(ow, sp.sw), sp.pw), checked)

    with f.loop("%task_begin", "%task_end") as t:
        xp, dxp = f.gep(T, ptr[1], f.mul(t, HW)), f.gep(T, ptr[3], f.mul(t, HW))
        yp, dyp = f.gep(T, ptr[2], f.mul(t, OHW)), f.gep(T, ptr[0], f.mul(t, OHW))
        with f.loop(0, HW) as i:     # LLVM vectorizes the zeroing
            f.ins(f"store {T} 0.0, ptr {f.gep(T, dxp, i)}, align {es}")
        with f.loop(0, sp.OH) as oh:
            inner = f.op(f"and i1 {f.op(f'icmp sge i64 {oh}, {ih_lo}')}, "
                         f"{f.op(f'icmp slt i64 {oh}, {ih_hi}')}")
            border, middle, done = (f.label_name(x) for x in ("brow", "irow", "rdone"))
            f.ins(f"br i1 {inner}, label %{middle}, label %{border}")
            f.label(middle)     # an interior row: checked columns only at the sides
            outputs(xp, dxp, yp, dyp, oh, 0, iw_lo, True)
            outputs(xp, dxp, yp, dyp, oh, iw_lo, iw_hi, False)
            outputs(xp, dxp, yp, dyp, oh, max(iw_hi, iw_lo), sp.OW, True)
            f.br(done)
            f.label(border)
            outputs(xp, dxp, yp, dyp, oh, 0, sp.OW, True)
            f.br(done)
            f.label(done)
    f.ins("ret void")
    ident = f"@{name}" if name.replace("_", "").isalnum() else f'@"{name}"'
    ir = f.render(f"define void {ident}(i64 %task_begin, i64 %task_end, ptr %args, "
                  f"ptr %scratch) {_FN_ATTRS}")
    return MaxBackwardKernel(name, ir, sp.N * sp.C, sp.N * sp.C * OHW * sp.kh * sp.kw)


def template_kernel(dy, x, y, dx, **fields):
    """The ``K.TemplateKernel`` computing dx of a max pooling (contiguous NCHW views, element
    offsets passed per call); ``fields`` are the :class:`PoolSpec` fields but the dtype."""
    from ..ir import kernel as K

    spec = PoolSpec(dtype=x.dtype.name, **fields)
    mk = max_backward_kernel("__K__", spec)
    kern = K.TemplateKernel("__K__", [dy.buf, x.buf, y.buf, dx.buf], mk.ir, mk.n_tasks, 0,
                            cost=mk.cost, note="pool_max_backward", writes=(3,))
    kern.offsets = [dy.offset, x.offset, y.offset, dx.offset]  # type: ignore[attr-defined]
    return kern
