"""Pooling (max / avg / sum / lp; 1-D, 2-D, 3-D; valid / full / same conventions; global).

Forward: one compute per output element reducing over its kernel window. When windows reach
into the padding, taps are clamped into the input and selected against the pad value (the
lowest value for max, 0 otherwise), so no load leaves the input; the output's last dimension
is split into border runs and an interior run whose taps are all in range, where loads stay
plain and affine for the loop vectoriser. (No padded copy: it would cost a temp as large as
the input, the largest buffer of a ResNet's inference.)

Backward is gather-form (no scatter, no atomics): every input element sums the contributions
of the windows that contain it. Max pooling first records, per window, the position of the
first element equal to the window's output (MXNet's rule); each input element then takes the
gradient of the windows whose recorded position is itself. The gather runs per stride phase
(inputs i = m*s + phi - p): within a phase the windows containing i are o = m - j at window
offset j*s + phi, so with dy padded in front every index is affine in m (no division, modulo
or range check in the loop).

This module also holds the window/padding helpers conv.py shares (window_pos, pad_temp,
compute_at, compute_runs, ...).
"""
from __future__ import annotations

import itertools
import math
import os

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..params import Param, ParamSpec, enum, optional, parse_bool, parse_int, parse_shape
from ..registry import OpDef, simple
from .common import g

C = K.const
I64 = "int64"

_LAYOUTS = ("NCW", "NCHW", "NCDHW", "NWC", "NHWC", "NDHWC")

_POOL_PARAMS = {
    "kernel": Param(parse_shape, ()),
    "pool_type": Param(enum("max", "avg", "sum", "lp"), "max"),
    "global_pool": Param(parse_bool, False),
    "cudnn_off": Param(parse_bool, False),
    "pooling_convention": Param(enum("valid", "full", "same"), "valid"),
    "stride": Param(parse_shape, ()),
    "pad": Param(parse_shape, ()),
    "p_value": Param(optional(parse_int), None),
    "count_include_pad": Param(optional(parse_bool), None),
    "layout": Param(optional(enum(*_LAYOUTS)), None),
}


# ---------------------------------------------------------------------------------------------
# window index helpers (shared with conv.py)
# ---------------------------------------------------------------------------------------------
def idx(v) -> K.Expr:
    return v if isinstance(v, K.Expr) else C(int(v), I64)


def and_all(conds):
    out = None
    for c in conds:
        if c is None:
            continue
        out = c if out is None else out & c
    return out


def tap_axes(kernel):
    """Reduce axes for the kernel dims with extent > 1 and the tap index expression per dim."""
    axes, taps = [], []
    for kd in kernel:
        if kd > 1:
            r = K.reduce_axis(kd, "t")
            axes.append(r)
            taps.append(r.var)
        else:
            taps.append(C(0, I64))
    return axes, taps


def out_vars(o, O):
    """Output index vars with size-1 dims replaced by 0 (simpler index algebra)."""
    return [C(0, I64) if n == 1 else v for v, n in zip(o, O)]


def lowest(dtype) -> float:
    if dtype.kind == "f":
        return float(np.finfo(np.float16 if dtype.name in ("float16", "bfloat16")
                              else dtype.np).min)
    return float(np.iinfo(dtype.np).min)


def window_pos(o, t, X: int, O: int, kext: int, s: int, p: int, d: int = 1,
               interior: bool = False):
    """Input position ``o*s - p + t*d`` of output ``o`` and tap ``t`` along one dimension,
    clamped into [0, X), and the condition (or None) that it is a real (unpadded) element.
    ``interior``: the caller knows every position is in range (no clamp, affine index)."""
    pos = idx(o) * s + idx(t) * d - p
    if interior:
        return pos, None
    cond = None
    lo = p > 0
    hi = (O - 1) * s + (kext - 1) * d - p >= X
    if lo:
        cond = pos.ge(C(0, I64))
        pos_c = K.maximum(pos, C(0, I64))
    else:
        pos_c = pos
    if hi:
        c2 = pos.lt(C(X, I64))
        cond = c2 if cond is None else cond & c2
        pos_c = K.minimum(pos_c, C(X - 1, I64))
    return pos_c, cond


def pad_extents(X, O, k, s, p, d=None) -> tuple:
    """(lo, hi) zero-padding per dim so that every window tap of every output is in range."""
    d = d or (1,) * len(X)
    hi = tuple(max(0, (n - 1) * ss + (kk - 1) * dd + 1 - pp - x)
               for x, n, kk, ss, pp, dd in zip(X, O, k, s, p, d))
    return tuple(p), hi


# ---------------------------------------------------------------------------------------------
# emitting kernels: run-time offsets, border runs
# ---------------------------------------------------------------------------------------------
def _runs(n: int, lo: int, hi: int, min_len: int = 4) -> list:
    lo = min(max(lo, 0), n)
    hi = min(max(hi, lo), n)
    if lo == 0 and hi == n:
        return [(0, n, True)]
    if hi - lo < min_len:
        return [(0, n, False)]
    out = [(0, lo, False)] if lo > 0 else []
    out.append((lo, hi, True))
    if hi < n:
        out.append((hi, n, False))
    return out


def segments(X: int, O: int, k: int, s: int, p: int, d: int = 1) -> list:
    """Runs (start, stop, interior) covering the outputs [0, O) of a window gather along one
    dimension; in 'interior' runs every tap of every window is in [0, X), so loads need no
    clamp and stay affine in the (vectorised) output index."""
    top = X - 1 + p - (k - 1) * d
    hi = top // s + 1 if top >= 0 else 0
    return _runs(O, -(-p // s), hi)


def tsegments(X: int, Y: int, k: int, s: int, p: int, d: int = 1) -> list:
    """Runs over the inputs [0, X) of a transposed gather (input i reads outputs
    (i + p - t*d) / s); interior runs (stride 1 only) read every tap in [0, Y)."""
    if s != 1:
        return [(0, X, False)]
    return _runs(X, (k - 1) * d - p, Y - p)


def seg_view(ref: K.TensorRef, a: int, b: int) -> K.TensorRef:
    """``ref`` restricted to [a, b) along its last dimension."""
    return K.TensorRef(ref.buf, tuple(ref.shape[:-1]) + (b - a,), ref.strides,
                       ref.offset + a * ref.strides[-1])


def compute_at(ctx, out: K.TensorRef, refs: list, fn, name: str) -> None:
    """``out[i] = fn(i, *refs)``. The views' element offsets become run-time pointer offsets
    of the kernel call (as ``ctx.gemm`` does), so a loop over image chunks or border runs
    compiles one kernel per distinct shape instead of one per offset."""
    offs: dict = {}
    ok = True
    for r in list(refs) + [out]:
        if r.buf in offs and offs[r.buf] != r.offset:
            ok = False
        offs[r.buf] = r.offset
    if not ok or not any(offs.values()):
        ctx.compute(out, lambda *i: fn(i, *refs), name)
        return
    z = [K.TensorRef(r.buf, r.shape, r.strides, 0) for r in refs]
    zo = K.TensorRef(out.buf, out.shape, out.strides, 0)
    ctx.compute(zo, lambda *i: fn(i, *z), name, offsets=offs)


def compute_runs(ctx, out: K.TensorRef, refs: list, runs: list, make_fn, name: str) -> None:
    """One kernel per run (start, stop, interior) of ``out``'s last dimension;
    ``make_fn(start, interior)`` gives ``fn(i, *refs)`` with ``i[-1]`` relative to the run.
    Narrow border runs are computed on the view with the last two dims swapped, so each task
    still loops over many elements."""
    for a0, a1, inner in runs:
        if a1 <= a0:
            continue
        fn = make_fn(a0, inner)
        v = seg_view(out, a0, a1)
        w = a1 - a0
        if not inner and w < 8 and v.ndim >= 2 and v.shape[-2] > 2 * w:
            axes = tuple(range(v.ndim - 2)) + (v.ndim - 1, v.ndim - 2)
            compute_at(ctx, v.transpose(axes), refs,
                       lambda i, *r, fn=fn: fn(tuple(i[:-2]) + (i[-1], i[-2]), *r), name)
        else:
            compute_at(ctx, v, refs, fn, name)


def shift_last(i, a0: int) -> list:
    i = list(i)
    if a0:
        i[-1] = idx(i[-1]) + a0
    return i


def pad_temp(ctx, x: K.TensorRef, lo, hi, fill, n0: int = 0, nb: int | None = None,
             name: str = "pad") -> K.TensorRef:
    """A temp holding images [n0, n0+nb) of x (N, C, *X) padded by lo/hi with ``fill``."""
    N, Ch = x.shape[:2]
    X = tuple(x.shape[2:])
    nb = N if nb is None else nb
    Xp = tuple(a + b + c for a, b, c in zip(lo, X, hi))
    t = ctx.temp((nb, Ch) + Xp, x.dtype)
    xv = K.TensorRef(x.buf, (nb, Ch) + X, x.strides, x.offset + n0 * x.strides[0])
    nd = len(X)

    def make(a0, inner):
        def fn(i, xr):
            n, c = i[:2]
            iv = shift_last(i[2:], a0)
            pos, conds = [], []
            for dd in range(nd):
                pc, cd = window_pos(iv[dd], 0, X[dd], Xp[dd], 1, 1, lo[dd],
                                    interior=inner and dd == nd - 1)
                if Xp[dd] == 1:
                    pc = C(0, I64)
                pos.append(pc)
                conds.append(cd)
            v = xr[(n, c, *pos)]
            cond = and_all(conds)
            return v if cond is None else K.select(cond, v, C(fill, v.dtype))
        return fn

    compute_runs(ctx, t, [xv], _runs(Xp[-1], lo[-1], lo[-1] + X[-1]), make, name)
    return t


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
def _geom(a, dshape, op: str = "Pooling"):
    """(kernel, stride, pad, out_spatial) for data shape ``dshape`` (NC + spatial)."""
    if len(dshape) not in (3, 4, 5):
        raise ShapeError(f"{op}: data must be 3-D (N, C, W), 4-D (N, C, H, W) or 5-D "
                         f"(N, C, D, H, W), got {tuple(dshape)}")
    nd = len(dshape) - 2
    if a.layout is not None:
        if a.layout not in ("NCW", "NCHW", "NCDHW"):
            raise OpError(f"{op}: layout {a.layout} is not supported (only NCW, NCHW, NCDHW)")
        if len(a.layout) != len(dshape):
            raise ShapeError(f"{op}: layout {a.layout} does not match {len(dshape)}-d data "
                             f"{tuple(dshape)}")
    if a.pool_type == "lp":
        if a.p_value is None:
            raise OpError(f"{op}: pool_type='lp' needs p_value")
        if a.p_value not in (1, 2, 3):
            raise OpError(f"{op}: p_value={a.p_value} is not supported (1, 2 or 3)")
    X = tuple(dshape[2:])
    if a.global_pool:
        return X, (1,) * nd, (0,) * nd, (1,) * nd
    k = tuple(a.kernel)
    if len(k) != nd:
        raise ShapeError(f"{op}: kernel {k} has {len(k)} dims but data {tuple(dshape)} has "
                         f"{nd} spatial dims")
    s = tuple(a.stride) if len(a.stride) else (1,) * nd
    p = tuple(a.pad) if len(a.pad) else (0,) * nd
    if len(s) != nd or len(p) != nd:
        raise OpError(f"{op}: stride {s} and pad {p} must have the same length as kernel {k}")
    if any(v is None or v <= 0 for v in k):
        raise OpError(f"{op}: kernel sizes must be positive, got {k}")
    if any(v is None or v <= 0 for v in s):
        raise OpError(f"{op}: strides must be positive, got {s}")
    if any(v is None or v < 0 for v in p):
        raise OpError(f"{op}: pads must be non-negative, got {p}")
    conv = a.pooling_convention
    if conv == "same":
        if nd != 1:
            raise ShapeError(f"{op}: pooling_convention='same' supports only 1-D pooling "
                             f"(3-D data), got {tuple(dshape)}")
        if any(p):
            raise OpError(f"{op}: pooling_convention='same' does not allow pad, got {p}")
    O = []
    for x, kk, ss, pp in zip(X, k, s, p):
        if kk > x + 2 * pp:
            raise ShapeError(f"{op}: kernel size ({kk}) exceeds input ({x} padded to "
                             f"{x + 2 * pp}) of data {tuple(dshape)}")
        if conv == "valid":
            O.append(1 + (x + 2 * pp - kk) // ss)
        elif conv == "full":
            O.append(1 + -(-(x + 2 * pp - kk) // ss))
        else:
            O.append(-(-(x + 2 * pp) // ss))
    return k, s, p, tuple(O)


def _include_pad(a) -> bool:
    return True if a.count_include_pad is None else bool(a.count_include_pad)


def _contiguous(r: K.TensorRef) -> bool:
    want, acc = [], 1
    for n in reversed(r.shape):
        want.append(acc)
        acc *= n
    return all(n == 1 or st == w for n, st, w in zip(r.shape, r.strides, reversed(want)))


def _use_template(ctx, a, x: K.TensorRef, y: K.TensorRef) -> bool:
    """Whether the forward runs as the 2-D pooling template (``codegen/pool_template.py``,
    through ``ctx.pool2d``): NCHW max/avg/sum pooling of contiguous float32/float64 data
    with the valid or full convention, on the CPU. Global pooling (a plain reduction), 1-D
    and 3-D pooling, lp pooling and other dtypes keep the generic lowering below, as does
    ``MXC_POOL_TEMPLATE=0`` (to compare the two)."""
    if os.environ.get("MXC_POOL_TEMPLATE", "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    if not getattr(ctx, "cpu_templates", False) or not hasattr(ctx, "pool2d"):
        return False
    return (x.ndim == 4 and not a.global_pool and a.pool_type in ("max", "avg", "sum")
            and a.pooling_convention in ("valid", "full")
            and x.dtype.name in ("float32", "float64") and y.dtype == x.dtype
            and _contiguous(x) and _contiguous(y))


def _size_expr(o, X, O, k, s, p, include_pad: bool):
    """Number of elements avg pooling divides by, for output ``o`` (int64 expr)."""
    total = None
    for od, x, n, kk, ss, pp in zip(o, X, O, k, s, p):
        start = idx(od) * ss - pp
        if not (pp > 0 or (n - 1) * ss - pp + kk > x):
            sz = C(kk, I64)
        elif include_pad:
            sz = K.minimum(start + kk, C(x + pp, I64)) - start
        else:
            sz = K.minimum(start + kk, C(x, I64)) - K.maximum(start, C(0, I64))
        total = sz if total is None else total * sz
    return total


def _padded_source(ctx, x, X, O, k, s, p, fill):
    """x itself, or a padded copy so every window tap is in range: (ref, pad offsets)."""
    lo, hi = pad_extents(X, O, k, s, p)
    if not any(lo) and not any(hi):
        return x, (0,) * len(X)
    return pad_temp(ctx, x, lo, hi, fill), lo


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
@simple("Pooling", aliases=("Pooling_v1",), fusion="complex", params=ParamSpec(**_POOL_PARAMS))
class Pooling(OpDef):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        *_, O = _geom(a, d)
        return s, [tuple(d[:2]) + O]

    def infer_type(self, a, t):
        if t[0] is not None and as_kind(t[0]) != "f" and a.pool_type != "max":
            raise OpError(f"Pooling: pool_type={a.pool_type} needs floating-point data, "
                          f"got {t[0]}")
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        y = ctx.outputs[0]
        if y.size == 0:
            return
        k, s, p, O = _geom(a, x.shape)
        X = tuple(x.shape[2:])
        dt = x.dtype
        pt = a.pool_type
        include = _include_pad(a)
        fill = lowest(dt) if pt == "max" else 0

        def value(o, v, axes):
            def red(op, e):
                return K.reduce(op, e, axes) if axes else e

            if pt == "max":
                return red("max", v)
            if pt in ("sum", "avg"):
                acc = red("sum", v)
                if pt == "sum":
                    return acc
                return acc / K.cast(dt, _size_expr(o, X, O, k, s, p, include))
            pv = a.p_value
            if pv == 1:
                return red("sum", v)
            if pv == 2:
                return K.sqrt(red("sum", v * v))
            return K.call("cbrt", red("sum", v * v * v))

        if _use_template(ctx, a, x, y):
            ctx.pool2d(x, y, N=x.shape[0], C=x.shape[1], H=X[0], W=X[1], OH=O[0], OW=O[1],
                       kh=k[0], kw=k[1], sh=s[0], sw=s[1], ph=p[0], pw=p[1], pool_type=pt,
                       include_pad=include)
            return

        lo, hi = pad_extents(X, O, k, s, p)
        if not any(lo) and not any(hi):
            def body(n, c, *o):
                o = out_vars(o, O)
                axes, taps = tap_axes(k)
                pos = [idx(od) * ss + tt - pp for od, ss, tt, pp in zip(o, s, taps, p)]
                return value(o, x[(n, c, *pos)], axes)

            ctx.compute(y, body, f"pool_{pt}")
            return

        # windows reaching into the padding: no padded copy of the input (it would cost a
        # temp as large as the input); taps are clamped and selected instead, except on the
        # interior run of the last dimension where every tap is in range (affine loads)
        nd = len(X)

        def make(a0, inner):
            def fn(i, xr):
                n, c = i[:2]
                o = out_vars(shift_last(i[2:], a0), O)
                axes, taps = tap_axes(k)
                pos, conds = [], []
                for dd in range(nd):
                    pc, cd = window_pos(o[dd], taps[dd], X[dd], O[dd], k[dd], s[dd], p[dd],
                                        interior=inner and dd == nd - 1)
                    pos.append(pc)
                    conds.append(cd)
                v = xr[(n, c, *pos)]
                cond = and_all(conds)
                if cond is not None:
                    v = K.select(cond, v, C(fill, dt))
                return value(o, v, axes)
            return fn

        compute_runs(ctx, y, [x], segments(X[-1], O[-1], k[-1], s[-1], p[-1]), make,
                     f"pool_{pt}")

    def reference(self, a, inputs, is_train=False):
        return [pool_reference(a, inputs[0])]

    def flops(self, a, in_shapes, out_shapes):
        k, *_ = _geom(a, in_shapes[0])
        return math.prod(out_shapes[0]) * math.prod(k)

    def gradient(self, node, ograds):
        return [g("_backward_Pooling", ograds[0], node.inputs[0], type(node.inputs[0])(node, 0),
                  name=f"{node.name}_backward", **dict(node.parsed))]


def as_kind(tname: str) -> str:
    from ..dtypes import as_dtype
    return as_dtype(tname).kind


@simple("_backward_Pooling", fusion="complex", differentiable=False,
        params=ParamSpec(**_POOL_PARAMS))
class BackwardPooling(OpDef):
    def arguments(self, a):
        return ["ograd", "data", "output"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, x, y = ctx.inputs
        dx = ctx.outputs[0]
        if dx.size == 0:
            return
        k, s, p, O = _geom(a, x.shape)
        X = tuple(x.shape[2:])
        nd = len(X)
        dt = x.dtype
        pt = a.pool_type
        include = _include_pad(a)
        zero = C(0, dt)
        if y.size == 0:
            ctx.compute(dx, lambda *i: zero, "zero")
            return
        if pt == "max" and _use_template(ctx, a, x, y) and _contiguous(dy) and \
                _contiguous(dx) and hasattr(ctx, "pool2d_max_backward") and k[0] * k[1] <= 64:
            ctx.pool2d_max_backward(dy, x, y, dx, N=x.shape[0], C=x.shape[1], H=X[0],
                                    W=X[1], OH=O[0], OW=O[1], kh=k[0], kw=k[1], sh=s[0],
                                    sw=s[1], ph=p[0], pw=p[1], pool_type=pt,
                                    include_pad=include)
            return
        refs = [dy, x, y]
        if pt == "max":
            refs.append(self._argmax(ctx, x, y, X, O, k, s, p))
        J = [-(-kk // ss) for kk, ss in zip(k, s)]
        if all(j <= n for j, n in zip(J, O)) and any(n > 1 for n in O):
            self._phase_gather(ctx, refs, dx, X, O, k, s, p, J, include)
            return
        # generic form (global pooling, windows larger than the output): windows containing
        # input i along a dim: o in [(i+p-k)/s + 1, (i+p)/s] ∩ [0, O)
        R = [min(jj, n) for jj, n in zip(J, O)]

        def body(n, c, *i):
            dyr, xr, yr = refs[:3]
            raxes, os, conds, offs = [], [], [], []
            for dd in range(nd):
                r = None
                if R[dd] > 1:
                    r = K.reduce_axis(R[dd], "w")
                    raxes.append(r)
                hi = K.minimum((idx(i[dd]) + p[dd]) // s[dd], C(O[dd] - 1, I64)) \
                    if O[dd] > 1 else C(0, I64)
                od = hi - r.var if r is not None else hi
                off = idx(i[dd]) + p[dd] - od * s[dd]   # position inside the window
                cd = []
                if r is not None:
                    cd.append(od.ge(C(0, I64)))
                    od = K.maximum(od, C(0, I64))
                if O[dd] > 1 or k[dd] < X[dd] + p[dd]:
                    cd.append(off.lt(C(k[dd], I64)))
                os.append(od)
                conds.append(and_all(cd))
                offs.append(off)
            cond = and_all(conds)
            g_ = dyr[(n, c, *os)]
            if pt == "max":
                flat = C(0, I64)
                for dd in range(nd):
                    flat = flat * k[dd] + offs[dd]
                hit = K.cast(I64, refs[3][(n, c, *os)]).eq(flat)
                contrib = K.select(hit, g_, zero)
            elif pt == "sum" or (pt == "lp" and a.p_value == 1):
                contrib = g_
            elif pt == "avg":
                contrib = g_ / K.cast(dt, _size_expr(os, X, O, k, s, p, include))
            else:
                yv = yr[(n, c, *os)]
                ratio = xr[(n, c, *i)] / yv
                if a.p_value == 3:
                    ratio = ratio * ratio
                contrib = K.select(yv.eq(zero), zero, g_ * ratio)
            if cond is not None:
                contrib = K.select(cond, contrib, zero)
            return K.reduce("sum", contrib, raxes) if raxes else contrib

        ctx.compute(dx, body, f"pool_{pt}_grad")

    def _phase_gather(self, ctx, refs, dx, X, O, k, s, p, J, include):
        """Gather-form backward by phase: input i = m*s + phi - p (phi fixed per kernel) lies
        in the windows o = m - j, j < ceil((k - phi)/s), at window offset j*s + phi. With dy
        (and the argmax / output) padded by ceil(k/s) - 1 in front, every index is affine in
        m and needs no range check."""
        a = ctx.attrs
        pt = a.pool_type
        nd = len(X)
        dt = dx.dtype
        zero = C(0, dt)
        dy, x, y = refs[:3]
        PL = tuple(jj - 1 for jj in J)
        PH = tuple(max(0, (xx - 1 + pp) // ss - (n - 1)) for xx, pp, ss, n in zip(X, p, s, O))
        padded = any(PL) or any(PH)
        dyp = pad_temp(ctx, dy, PL, PH, 0, name="pad_grad") if padded else dy
        yp = y
        if pt == "lp" and a.p_value > 1 and padded:
            yp = pad_temp(ctx, y, PL, PH, 0, name="pad_out")
        amp = None
        if pt == "max":
            amp = pad_temp(ctx, refs[3], PL, PH, -1, name="pad_argmax") if padded else refs[3]
        kst = [math.prod(k[dd + 1:]) for dd in range(nd)]
        for phase in itertools.product(*[range(ss) for ss in s]):
            m0 = [-((ph - pp) // ss) for ph, pp, ss in zip(phase, p, s)]
            mx = [(xx - 1 + pp - ph) // ss for xx, pp, ph, ss in zip(X, p, phase, s)]
            if any(b < a_ for a_, b in zip(m0, mx)):
                continue
            M = [b - a_ + 1 for a_, b in zip(m0, mx)]
            i0 = [a_ * ss + ph - pp for a_, ss, ph, pp in zip(m0, s, phase, p)]
            view = K.TensorRef(dx.buf, tuple(dx.shape[:2]) + tuple(M),
                               tuple(dx.strides[:2]) + tuple(ss * st for ss, st in
                                                             zip(s, dx.strides[2:])),
                               dx.offset + sum(i * st for i, st in zip(i0, dx.strides[2:])))
            Jp = [-(-(kk - ph) // ss) if ph < kk else 0 for kk, ph, ss in zip(k, phase, s)]
            if 0 in Jp:   # these inputs are in no window
                ctx.compute(view, lambda *i: zero, "zero")
                continue

            def body(ii, dyr, *rest, phase=phase, m0=m0, Jp=Jp):
                n, c = ii[:2]
                axes, os, ops, flat, xi = [], [], [], C(0, I64), []
                for dd in range(nd):
                    m = idx(ii[2 + dd]) + m0[dd]
                    if Jp[dd] > 1:
                        r = K.reduce_axis(Jp[dd], "w")
                        axes.append(r)
                        j = r.var
                    else:
                        j = C(0, I64)
                    od = m - j
                    os.append(od)
                    ops.append(od + PL[dd] if PL[dd] else od)
                    flat = flat + (j * s[dd] + phase[dd]) * kst[dd]
                    xi.append(m * s[dd] + (phase[dd] - p[dd]))
                g_ = dyr[(n, c, *ops)]
                if pt == "max":
                    contrib = K.select(K.cast(I64, rest[0][(n, c, *ops)]).eq(flat), g_, zero)
                elif pt == "sum" or (pt == "lp" and a.p_value == 1):
                    contrib = g_
                elif pt == "avg":
                    size = K.maximum(_size_expr(os, X, O, k, s, p, include), C(1, I64))
                    contrib = g_ / K.cast(dt, size)
                else:
                    xr, yr = rest
                    yv = yr[(n, c, *ops)]
                    ratio = xr[(n, c, *xi)] / yv
                    if a.p_value == 3:
                        ratio = ratio * ratio
                    contrib = K.select(yv.eq(zero), zero, g_ * ratio)
                return K.reduce("sum", contrib, axes) if axes else contrib

            extra = [amp] if pt == "max" else ([x, yp] if pt == "lp" and a.p_value > 1
                                                else [])
            compute_at(ctx, view, [dyp] + extra, body, f"pool_{pt}_grad")

    @staticmethod
    def _argmax(ctx, x, y, X, O, k, s, p):
        """Per window, the position (flat over the kernel window) of the first element equal
        to the window's output (MXNet's rule), -1 where there is none."""
        am = ctx.temp(y.shape, "int32")
        src, lo = _padded_source(ctx, x, X, O, k, s, p, lowest(x.dtype))

        def body(n, c, *o):
            o = out_vars(o, O)
            axes, taps = tap_axes(k)
            pos = [idx(od) * ss + tt - (pp - ll) for od, ss, tt, pp, ll in
                   zip(o, s, taps, p, lo)]
            match = src[(n, c, *pos)].eq(y[(n, c, *o)])
            if not axes:
                return K.select(match, C(0, "int32"), C(-1, "int32"))
            hit = K.select(match, C(1, "int32"), C(0, "int32"))
            first = K.reduce("argmax", hit, axes, dtype="int32")
            found = K.reduce("max", hit, axes)
            return K.select(found.gt(C(0, "int32")), first, C(-1, "int32"))

        ctx.compute(am, body, "pool_argmax")
        return am


# ---------------------------------------------------------------------------------------------
# numpy reference
# ---------------------------------------------------------------------------------------------
def window_stack(x: np.ndarray, k, s, p, O, d=None, fill=0.0):
    """(taps, N, C, *O) values of every kernel tap of every window, and the validity mask."""
    nd = len(k)
    d = d or (1,) * nd
    X = x.shape[2:]
    hi = [max(0, (n - 1) * ss + (kk - 1) * dd + 1 - pp - xx)
          for n, ss, kk, dd, pp, xx in zip(O, s, k, d, p, X)]
    pads = [(0, 0), (0, 0)] + [(pp, h) for pp, h in zip(p, hi)]
    xp = np.pad(x, pads, constant_values=fill)
    mp = np.pad(np.ones(X, bool), pads[2:], constant_values=False)
    vals, masks = [], []
    for tap in np.ndindex(*k):
        sl = tuple(slice(t * dd, t * dd + (n - 1) * ss + 1, ss)
                   for t, dd, n, ss in zip(tap, d, O, s))
        vals.append(xp[(slice(None), slice(None)) + sl])
        masks.append(mp[sl])
    return np.stack(vals), np.stack(masks)


def pool_reference(a, x: np.ndarray) -> np.ndarray:
    k, s, p, O = _geom(a, x.shape)
    X = x.shape[2:]
    xd = x.astype(np.float64)
    v, m = window_stack(xd, k, s, p, O)
    m = np.broadcast_to(m[:, None, None], v.shape)
    pt = a.pool_type
    if pt == "max":
        r = np.where(m, v, lowest(_dt(x))).max(axis=0)
        return r.astype(x.dtype)
    if pt == "lp":
        e = a.p_value
        acc = np.where(m, v ** e, 0).sum(axis=0)
        r = acc if e == 1 else (np.sqrt(acc) if e == 2 else np.cbrt(acc))
        return r.astype(x.dtype)
    acc = np.where(m, v, 0).sum(axis=0)
    if pt == "sum":
        return acc.astype(x.dtype)
    include = _include_pad(a)
    size = np.ones(O)
    for dd, (xx, n, kk, ss, pp) in enumerate(zip(X, O, k, s, p)):
        start = np.arange(n) * ss - pp
        if include:
            sz = np.minimum(start + kk, xx + pp) - start
        else:
            sz = np.minimum(start + kk, xx) - np.maximum(start, 0)
        shp = [1] * len(O)
        shp[dd] = n
        size = size * sz.reshape(shp)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (acc / size).astype(x.dtype)


def _dt(x: np.ndarray):
    from ..dtypes import as_dtype
    return as_dtype(x.dtype.name)
