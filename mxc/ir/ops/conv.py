"""Convolution and Deconvolution (1-D / 2-D / 3-D, NCW / NCHW / NCDHW), forward and backward.

Everything is expressed on a *convolution geometry* (input ``x`` (N, C, *X), weight
(F, C/G, *k), output ``y`` (N, F, *Y)); Deconvolution is the transpose of a convolution, so its
forward is the convolution's backward-data, its data gradient a convolution forward and its
weight gradient a convolution weight gradient with the roles of the tensors swapped.

Strategy (the heavy work always goes through the GEMM template):

* pointwise (1x1, stride 1, no pad): GEMM directly on the NCHW views, one batched call per
  group, batch = images;
* general: im2col into a temp laid out (C*k, images, Y) for a chunk of images (the chunk is
  bounded by COL_LIMIT, so the temp stays small for big batches; chunks reuse one kernel
  through run-time pointer offsets), then one batched GEMM per group (batch = images);
  backward-data: GEMM into a column buffer, then col2im in gather form (every input element
  sums the kernel taps that read it: no scatter, no atomics; strided convolutions run one
  kernel per stride phase so the indices stay affine); backward-weight: one GEMM per group
  and chunk with K = images x output pixels, accumulated over chunks with beta = 1;
* depthwise (one input channel per group): direct vectorised compute kernels on a padded
  copy of the input.

im2col / col2im split the innermost (vectorised) dimension into border runs, which clamp and
select, and an interior run with affine loads; narrow border runs are computed on a view with
the last two dims swapped so every task still loops over many elements.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..params import Param, ParamSpec, enum, optional, parse_bool, parse_int, parse_shape
from ..registry import OpDef, simple
from .common import g
from .matrix import GemmBackward, fill_zero, in_gemm_types, matmul
from .pool import (
    _runs,
    and_all,
    compute_at,
    compute_runs,
    idx,
    out_vars,
    pad_extents,
    pad_temp,
    segments,
    shift_last,
    tap_axes,
    tsegments,
    window_pos,
    window_stack,
)

C = K.const
I64 = "int64"

#: elements of the im2col buffer per chunk of images (the chunk holds at least one image)
COL_LIMIT = 1 << 22

_LAYOUTS = ("NCW", "NCHW", "NCDHW", "NHWC", "NDHWC")
_TUNE = enum("off", "limited_workspace", "fastest")

_CONV_PARAMS = {
    "kernel": Param(parse_shape), "stride": Param(parse_shape, ()), "dilate": Param(parse_shape, ()),
    "pad": Param(parse_shape, ()), "num_filter": Param(parse_int), "num_group": Param(parse_int, 1),
    "workspace": Param(parse_int, 1024), "no_bias": Param(parse_bool, False),
    "cudnn_tune": Param(optional(_TUNE), None), "cudnn_off": Param(parse_bool, False),
    "layout": Param(optional(enum(*_LAYOUTS)), None)}

_DECONV_PARAMS = dict(_CONV_PARAMS, adj=Param(parse_shape, ()),
                      target_shape=Param(parse_shape, ()),
                      workspace=Param(parse_int, 512), no_bias=Param(parse_bool, True))


def _prod(s) -> int:
    return math.prod(int(v) for v in s)


def _view(ref: K.TensorRef, shape, strides=None, offset: int = 0) -> K.TensorRef:
    return K.TensorRef(ref.buf, tuple(int(v) for v in shape),
                       None if strides is None else tuple(int(v) for v in strides),
                       ref.offset + int(offset))


# ---------------------------------------------------------------------------------------------
# attributes and geometry
# ---------------------------------------------------------------------------------------------
def _spatial(a, op: str):
    """(kernel, stride, dilate, pad) with MXNet's defaults, validated."""
    k = tuple(a.kernel)
    nd = len(k)
    if nd not in (1, 2, 3):
        raise OpError(f"{op}: kernel must have 1, 2 or 3 dims, got {k}")
    if a.layout is not None and a.layout not in ("NCW", "NCHW", "NCDHW"):
        raise OpError(f"{op}: layout {a.layout} is not supported (only NCW, NCHW and NCDHW)")
    if a.layout is not None and len(a.layout) != nd + 2:
        raise OpError(f"{op}: layout {a.layout} does not match the {nd}-d kernel {k}")
    s = tuple(a.stride) if len(a.stride) else (1,) * nd
    d = tuple(a.dilate) if len(a.dilate) else (1,) * nd
    p = tuple(a.pad) if len(a.pad) else (0,) * nd
    for name, v in (("stride", s), ("dilate", d), ("pad", p)):
        if len(v) != nd:
            raise OpError(f"{op}: {name} {v} must have the same number of dims as kernel {k}")
    if any(v is None or v <= 0 for v in k):
        raise OpError(f"{op}: kernel sizes must be positive, got {k}")
    if any(v is None or v <= 0 for v in s):
        raise OpError(f"{op}: strides must be positive, got {s}")
    if any(v is None or v <= 0 for v in d):
        raise OpError(f"{op}: dilations must be positive, got {d}")
    if any(v is None or v < 0 for v in p):
        raise OpError(f"{op}: pads must be non-negative, got {p}")
    if a.num_filter < 1:
        raise OpError(f"{op}: num_filter must be >= 1, got {a.num_filter}")
    if a.num_group < 1:
        raise OpError(f"{op}: num_group must be >= 1, got {a.num_group}")
    return k, s, d, p


def _check_data(op: str, dshape, nd: int, a) -> None:
    if len(dshape) != nd + 2:
        raise ShapeError(f"{op}: a {nd}-d kernel {tuple(a.kernel)} needs {nd + 2}-d data "
                         f"(N, C, {', '.join('DHW'[3 - nd:])}), got {tuple(dshape)}")
    if dshape[1] % a.num_group:
        raise ShapeError(f"{op}: input channels ({dshape[1]}) must be divisible by num_group "
                         f"({a.num_group})")
    if a.num_filter % a.num_group:
        raise ShapeError(f"{op}: num_filter ({a.num_filter}) must be divisible by num_group "
                         f"({a.num_group})")


def _conv_out(op, X, k, s, d, p) -> tuple:
    Y = []
    for x, kk, ss, dd, pp in zip(X, k, s, d, p):
        dk = dd * (kk - 1) + 1
        if dk > x + 2 * pp:
            raise ShapeError(f"{op}: kernel size exceeds input: dilated kernel {dk} > input "
                             f"{x} padded to {x + 2 * pp}")
        Y.append((x + 2 * pp - dk) // ss + 1)
    return tuple(Y)


def _deconv_pad_adj(a, X, k, s, d):
    """MXNet's DeconvolutionParam::InferPad: pads and output adjustments."""
    nd = len(k)
    ts = tuple(a.target_shape)
    if len(ts) and any(t for t in ts):
        if len(ts) != nd:
            raise OpError(f"Deconvolution: target_shape {ts} must have {nd} dims")
        pads, adjs = [], []
        for x, kk, ss, dd, t in zip(X, k, s, d, ts):
            total = ss * (x - 1) + dd * (kk - 1) + 1 - t
            if total < 0:
                raise ShapeError(f"Deconvolution: too big target shape {ts} for input "
                                 f"{tuple(X)}")
            adjs.append(total % 2)
            pads.append((total + 1) // 2)
        return tuple(pads), tuple(adjs)
    p = tuple(a.pad) if len(a.pad) else (0,) * nd
    adj = tuple(a.adj) if len(a.adj) else (0,) * nd
    if len(adj) != nd:
        raise OpError(f"Deconvolution: adj {adj} must have the same number of dims as kernel "
                      f"{k}")
    return p, adj


def _deconv_out(a, X, k, s, d):
    p, adj = _deconv_pad_adj(a, X, k, s, d)
    Y = []
    for x, kk, ss, dd, pp, aa in zip(X, k, s, d, p, adj):
        if aa < 0 or aa > ss - 1:
            raise ShapeError(f"Deconvolution: adj ({adj}) must be smaller than stride ({s})")
        y = ss * (x - 1) + dd * (kk - 1) + 1 - 2 * pp + aa
        if y <= 0:
            raise ShapeError(f"Deconvolution: output size {y} <= 0 for input {tuple(X)} "
                             f"(kernel {k}, stride {s}, pad {p})")
        Y.append(y)
    ts = tuple(a.target_shape)
    if len(ts) == len(k):
        for t, y in zip(ts, Y):
            if t > 0 and t != y:
                raise ShapeError(f"Deconvolution: target_shape {ts} is not reachable "
                                 f"(output would be {tuple(Y)})")
    return tuple(Y), p


@dataclass(frozen=True)
class Geom:
    """A convolution x (N, C, *X) * w (F, C/G, *k) -> y (N, F, *Y)."""

    N: int
    C: int
    F: int
    G: int
    X: tuple
    Y: tuple
    k: tuple
    s: tuple
    d: tuple
    p: tuple

    @property
    def nd(self):
        return len(self.k)

    def plane(self) -> dict:
        """A 1-D/2-D convolution's sizes with 1-D as height 1, as the templates' geometry
        fields: N, C, H, W, F, kh, kw, sh, sw, dh, dw, ph, pw, Ho, Wo."""
        def two(t, one):
            return (one,) + tuple(t) if self.nd == 1 else tuple(t)

        (H, W), (kh, kw), (sh, sw), (dh, dw), (ph, pw), (Ho, Wo) = (
            two(self.X, 1), two(self.k, 1), two(self.s, 1), two(self.d, 1), two(self.p, 0),
            two(self.Y, 1))
        return dict(N=self.N, C=self.C, H=H, W=W, F=self.F, kh=kh, kw=kw, sh=sh, sw=sw,
                    dh=dh, dw=dw, ph=ph, pw=pw, Ho=Ho, Wo=Wo)

    @property
    def Cg(self):
        return self.C // self.G

    @property
    def Fg(self):
        return self.F // self.G

    @property
    def Kp(self):
        return _prod(self.k)

    @property
    def Xp(self):
        return _prod(self.X)

    @property
    def Yp(self):
        return _prod(self.Y)

    @property
    def pointwise(self):
        return all(v == 1 for v in self.k) and all(v == 1 for v in self.s) and \
            not any(self.p) and self.X == self.Y

    @property
    def depthwise(self):
        return self.G > 1 and self.Cg == 1

    def chunk(self) -> int:
        """Images per im2col chunk: the largest divisor of N whose buffer fits COL_LIMIT."""
        per = max(1, self.C * self.Kp * self.Yp)
        cap = max(1, min(self.N, COL_LIMIT // per))
        for nb in range(cap, 0, -1):
            if self.N % nb == 0:
                return nb
        return 1


def conv_geom(a, xshape) -> Geom:
    k, s, d, p = _spatial(a, "Convolution")
    X = tuple(xshape[2:])
    Y = _conv_out("Convolution", X, k, s, d, p)
    return Geom(xshape[0], xshape[1], a.num_filter, a.num_group, X, Y, k, s, d, p)


def deconv_geom(a, xshape) -> Geom:
    """The convolution whose backward-data is this deconvolution: its input is the
    deconvolution's output and its output the deconvolution's input."""
    k, s, d, _ = _spatial(a, "Deconvolution")
    X = tuple(xshape[2:])
    Y, p = _deconv_out(a, X, k, s, d)
    return Geom(xshape[0], a.num_filter, xshape[1], a.num_group, Y, X, k, s, d, p)


# ---------------------------------------------------------------------------------------------
# emitting computes whose operands sit at (run-time) offsets
# ---------------------------------------------------------------------------------------------
def _col_ref(col: K.TensorRef, gm: Geom, nb: int) -> K.TensorRef:
    """The im2col buffer as (C, *k, nb, *Y)."""
    return K.TensorRef(col.buf, (gm.C,) + gm.k + (nb,) + gm.Y)


def _im2col(ctx, gm: Geom, x: K.TensorRef, n0: int, nb: int, col: K.TensorRef) -> None:
    """col[c, t..., b, o...] = x[n0 + b, c, o*s - p + t*d] (0 in the padding)."""
    nd = gm.nd
    xv = _view(x, (nb, gm.C) + gm.X, None, n0 * gm.C * gm.Xp)

    def make(a0, inner):
        def fn(i, xr):
            c = i[0]
            t = [C(0, I64) if kk == 1 else tv for tv, kk in zip(i[1:1 + nd], gm.k)]
            b = i[1 + nd]
            o = _shift_last(i[2 + nd:], a0, gm.Y)
            pos, cond = _win(gm, o, t, inner)
            v = xr[(b, c, *pos)]
            return v if cond is None else K.select(cond, v, C(0, v.dtype))
        return fn

    runs = segments(gm.X[-1], gm.Y[-1], gm.k[-1], gm.s[-1], gm.p[-1], gm.d[-1])
    compute_runs(ctx, _col_ref(col, gm, nb), [xv], runs, make, "im2col")


def _shift_last(o, a0: int, extents) -> list:
    o = list(o)
    if a0:
        return out_vars(o[:-1], extents[:-1]) + [idx(o[-1]) + a0]
    return out_vars(o, extents)


def _win(gm: Geom, o, t, inner_last: bool):
    """Forward-gather input positions (clamped) and the padding condition."""
    pos, conds = [], []
    for dd in range(gm.nd):
        pc, cd = window_pos(o[dd], t[dd], gm.X[dd], gm.Y[dd], gm.k[dd], gm.s[dd], gm.p[dd],
                            gm.d[dd], interior=inner_last and dd == gm.nd - 1)
        pos.append(pc)
        conds.append(cd)
    return pos, and_all(conds)


def _twin(gm: Geom, i, taps, inner_last: bool):
    """Transposed gather: for input position i and tap t, the output position
    q = (i + p - t*d) / s (clamped) and the condition that it exists."""
    qs, conds = [], []
    for dd in range(gm.nd):
        kk, ss, pp, dl = gm.k[dd], gm.s[dd], gm.p[dd], gm.d[dd]
        X, Y = gm.X[dd], gm.Y[dd]
        t = idx(i[dd]) + pp - taps[dd] * dl if kk > 1 else idx(i[dd]) + pp
        if inner_last and dd == gm.nd - 1:
            qs.append(t)
            conds.append(None)
            continue
        cd = []
        if pp - (kk - 1) * dl < 0:          # t may be negative
            cd.append(t.ge(C(0, I64)))
            t = K.maximum(t, C(0, I64))
        if ss > 1:
            cd.append((t % ss).eq(C(0, I64)))
            q = t // ss
        else:
            q = t
        if (X - 1 + pp) // ss >= Y:          # q may run past the output
            cd.append(q.lt(C(Y, I64)))
            q = K.minimum(q, C(Y - 1, I64))
        qs.append(q)
        conds.append(and_all(cd))
    return qs, and_all(conds)


def _col2im(ctx, gm: Geom, col: K.TensorRef, n0: int, nb: int, dx: K.TensorRef,
            bias: K.TensorRef | None) -> None:
    """dx[n0 + b, c, i...] = sum over taps t with i = o*s - p + t*d of col[c, t..., b, o...]
    (+ bias[c]): the gather form of col2im."""
    cref = _col_ref(col, gm, nb)
    dxv = _view(dx, (nb, gm.C) + gm.X, None, n0 * gm.C * gm.Xp)
    refs = [cref] + ([bias] if bias is not None else [])

    def make(a0, inner):
        def fn(i, cr, *br):
            b, c = i[0], i[1]
            iv = shift_last(i[2:], a0)
            axes, taps = tap_axes(gm.k)
            qs, cond = _twin(gm, iv, taps, inner)
            v = cr[(c, *taps, b, *qs)]
            if cond is not None:
                v = K.select(cond, v, C(0, v.dtype))
            v = K.reduce("sum", v, axes) if axes else v
            if br:
                v = v + br[0][c]
            return v
        return fn

    runs = tsegments(gm.X[-1], gm.Y[-1], gm.k[-1], gm.s[-1], gm.p[-1], gm.d[-1])
    compute_runs(ctx, dxv, refs, runs, make, "col2im")


def _col2im_phased(ctx, gm: Geom, col: K.TensorRef, n0: int, nb: int, dx: K.TensorRef,
                   bias: K.TensorRef | None) -> None:
    """col2im for strided convolutions, one kernel per phase: the inputs i = m*s + phi - p
    (phi fixed) are read by the taps t = t0 + j*step (t*d = phi mod s) at outputs
    q = m - c0 - j*(d/g), affine in m, so no division or modulo is left in the loop."""
    nd = gm.nd
    cref = _col_ref(col, gm, nb)
    dxv = _view(dx, (nb, gm.C) + gm.X, None, n0 * gm.C * gm.Xp)
    refs = [cref] + ([bias] if bias is not None else [])
    for phase in itertools.product(*[range(ss) for ss in gm.s]):
        dims = []
        for dd in range(nd):
            kk, ss, pp, dl, ph = gm.k[dd], gm.s[dd], gm.p[dd], gm.d[dd], phase[dd]
            m0 = -((ph - pp) // ss)                      # first m with i >= 0
            M = (gm.X[dd] - 1 + pp - ph) // ss - m0 + 1
            gg = math.gcd(dl, ss)
            step = ss // gg
            t0 = next((t for t in range(step) if (t * dl - ph) % ss == 0), None)
            J = 0 if t0 is None or t0 >= kk else -(-(kk - t0) // step)
            c0 = (t0 * dl - ph) // ss if J else 0
            dims.append((m0, M, t0, step, J, c0, dl // gg))
        if any(dm[1] <= 0 for dm in dims):
            continue
        view = K.TensorRef(dxv.buf, (nb, gm.C) + tuple(dm[1] for dm in dims),
                           tuple(dxv.strides[:2]) + tuple(ss * st for ss, st in
                                                          zip(gm.s, dxv.strides[2:])),
                           dxv.offset + sum((dm[0] * ss + ph - pp) * st for dm, ss, ph, pp, st
                                            in zip(dims, gm.s, phase, gm.p, dxv.strides[2:])))
        if any(dm[4] == 0 for dm in dims):     # no tap reads these inputs
            if bias is None:
                ctx.compute(view, lambda *i: C(0, dx.dtype), "zero")
            else:
                compute_at(ctx, view, [bias], lambda i, br: br[i[1]], "deconv_bias")
            continue

        def make(a0, inner, dims=dims):
            def fn(i, cr, *br):
                b, c = i[0], i[1]
                mv = shift_last(i[2:], a0)
                axes, taps, qs, conds = [], [], [], []
                for dd, (m0, M, t0, step, J, c0, e) in enumerate(dims):
                    m = idx(mv[dd]) + m0
                    if J > 1:
                        r = K.reduce_axis(J, "t")
                        axes.append(r)
                        j = r.var
                    else:
                        j = C(0, I64)
                    taps.append(j * step + t0)
                    q = m - c0 - j * e
                    Y = gm.Y[dd]
                    if inner and dd == nd - 1:
                        qs.append(q)
                        continue
                    cd = []
                    if m0 - c0 - (J - 1) * e < 0:
                        cd.append(q.ge(C(0, I64)))
                        q = K.maximum(q, C(0, I64))
                    if m0 + M - 1 - c0 > Y - 1:
                        cd.append(q.lt(C(Y, I64)))
                        q = K.minimum(q, C(Y - 1, I64))
                    qs.append(q)
                    conds.append(and_all(cd))
                v = cr[(c, *taps, b, *qs)]
                cond = and_all(conds)
                if cond is not None:
                    v = K.select(cond, v, C(0, v.dtype))
                v = K.reduce("sum", v, axes) if axes else v
                return v + br[0][c] if br else v
            return fn

        m0, M, t0, step, J, c0, e = dims[-1]
        runs = _runs(M, c0 + (J - 1) * e - m0, gm.Y[-1] + c0 - m0)
        compute_runs(ctx, view, refs, runs, make, "col2im")


def _wmat(w: K.TensorRef, gm: Geom, gi: int, rows: int, cols: int) -> K.TensorRef:
    """Group ``gi``'s (rows, cols) block of the weight viewed as (G*rows, cols)."""
    return _view(w, (rows, cols), (cols, 1), gi * rows * cols)


# ---------------------------------------------------------------------------------------------
# the three convolution passes
# ---------------------------------------------------------------------------------------------
#: The implicit GEMM computes each output row over the whole padded row and drops the extra
#: columns; it is taken while that costs at most this factor more GEMM columns than im2col
#: would, both rounded up to a register tile of IMPLICIT_TILE_N columns (the AVX-512 tile;
#: ResNet's 56/28/14/7-wide rows with pad 1 all qualify: 3264/3136, 224/224, 64/64, ...).
IMPLICIT_MAX_WASTE = 1.15
#: weights (elements) up to which a strided / non-"same" convolution's weight gradient takes
#: the direct template (``_conv_wgrad_direct``) instead of im2col + GEMM
WGRAD_DIRECT_MAX_WEIGHT = 32768
IMPLICIT_TILE_N = 32


@dataclass(frozen=True)
class Implicit:
    """The implicit-GEMM form of a 1-D/2-D convolution (1-D as height 1): the input is
    rewritten once into ``(N, C, PY, PX, Hq, Wq)`` -- zero-padded and, for stride s > 1,
    split into the s x s phases the taps use (space-to-depth) -- so that for every
    (channel, tap) the inputs of consecutive output pixels of a row are consecutive
    elements, and output row oy starts Wq elements after row oy - 1."""

    H: int
    W: int
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

    @property
    def phases(self) -> tuple:
        return min(self.sh, self.kh), min(self.sw, self.kw)

    @property
    def Hq(self) -> int:
        return self.Ho + (self.kh - 1) * self.dh // self.sh

    @property
    def Wq(self) -> int:
        return self.Wo + (self.kw - 1) * self.dw // self.sw

    @property
    def cols(self) -> int:
        return (self.Ho - 1) * self.Wq + self.Wo

    @property
    def copy_needed(self) -> bool:
        return bool(self.ph or self.pw or self.sh > 1 or self.sw > 1)

    @property
    def same(self) -> bool:
        """Stride 1 and output size = input size: the GEMM reads the unpadded input and
        pads while packing (``GemmSpec.b_same``), no rewrite of the input at all."""
        return self.sh == 1 and self.sw == 1 and (self.Ho, self.Wo) == (self.H, self.W)

    def same_gemm(self, channels: int) -> dict:
        """``ctx.gemm`` arguments reading a (channels, H, W) image as B, padded while packed
        (``same`` geometry; the forward reads x, the data gradient dy)."""
        return dict(b_kmap=((channels, self.H * self.W), (self.kh, self.dh * self.W),
                            (self.kw, self.dw)),
                    b_same=(self.H, self.W, self.kh, self.kw, self.dh, self.dw, self.ph,
                            self.pw))

    def kmap(self, Cg: int) -> tuple:
        """GemmSpec.b_kmap digits (channel, ky, kx) over the rewritten input."""
        PY, PX = self.phases
        plane = self.Hq * self.Wq

        def digit(k, s, d, unit, phase_stride):   # stride 1: dilated taps; else phases
            return (k, d * unit) if s == 1 else (k, unit, s, phase_stride)

        return ((Cg, PY * PX * plane), digit(self.kh, self.sh, self.dh, self.Wq, PX * plane),
                digit(self.kw, self.sw, self.dw, 1, plane))


def implicit_geometry(gm: Geom) -> Implicit | None:
    """The implicit-GEMM form of this forward convolution, or None: 1-D/2-D, not 1x1
    stride 1 (a plain GEMM) nor depthwise, dilation only with stride 1, and no more than
    IMPLICIT_MAX_WASTE extra GEMM columns."""
    if gm.nd not in (1, 2) or gm.pointwise or gm.depthwise:
        return None
    g = gm.plane()
    if (g["sh"] > 1 and g["dh"] > 1) or (g["sw"] > 1 and g["dw"] > 1):
        return None
    im = Implicit(**{k: v for k, v in g.items() if k not in ("N", "C", "F")})
    Ho, Wo = g["Ho"], g["Wo"]
    tile = IMPLICIT_TILE_N
    if not im.same and \
            -(-im.cols // tile) * tile > -(-(Ho * Wo) // tile) * tile * IMPLICIT_MAX_WASTE:
        return None
    return im


def _phase_split(ctx, im: Implicit, x4: K.TensorRef) -> K.TensorRef:
    """x (N, C, H, W) -> (N, C, PY, PX, Hq, Wq): t[.., py, px, i, j] = x[i*sh + py - ph,
    j*sw + px - pw], 0 outside x (for stride 1: just the zero-padded input)."""
    N, C_ = x4.shape[:2]
    PY, PX = im.phases
    t = ctx.temp((N, C_, PY, PX, im.Hq, im.Wq), x4.dtype)

    def make(a0, inner):
        def fn(i, xr):
            n, c, py, px, ii, j = shift_last(i, a0)
            r = idx(ii) * im.sh + py - im.ph
            # columns: the phases are the taps of a stride-sw window; on the interior run
            # every phase reads inside the row (affine loads, no clamp or select)
            q, qcond = window_pos(j, px, im.W, im.Wq, PX, im.sw, im.pw, interior=inner)
            conds = [r.ge(C(0, I64)), r.lt(C(im.H, I64))] + \
                ([qcond] if qcond is not None else [])
            v = xr[n, c, K.minimum(K.maximum(r, C(0, I64)), C(im.H - 1, I64)), q]
            return K.select(and_all(conds), v, C(0, v.dtype))
        return fn

    compute_runs(ctx, t, [x4], segments(im.W, im.Wq, PX, im.sw, im.pw), make,
                 "conv_phase_split")
    return t


def _conv_implicit(ctx, gm: Geom, im: Implicit, x, w, b, y, epilogue, residual) -> None:
    """y = conv(x, w) + b without an im2col buffer: x is rewritten once (padding, phases;
    see :class:`Implicit`), then per group one GEMM whose B rows are runs of that input at
    offsets computed from (channel, tap) -- ``b_kmap`` -- and whose output columns walk
    rows of Wq, storing only the Wo real ones -- ``c_ngrid``."""
    N, C_, F, Cg, Fg = gm.N, gm.C, gm.F, gm.Cg, gm.Fg
    x4 = _view(x, (N, C_, im.H, im.W))
    if im.same:
        return _conv_same(ctx, gm, im, x4, w, b, y, epilogue, residual)
    # one kernel (clamped loads + select) rather than pad_temp's three border/interior runs:
    # measured as fast, and two kernel launches fewer per convolution
    xs = _phase_split(ctx, im, x4) if im.copy_needed else x4
    PY, PX = im.phases
    per_c = PY * PX * im.Hq * im.Wq
    Yp, cols, Kg = im.Ho * im.Wo, im.cols, Cg * im.kh * im.kw
    for gi in range(gm.G):
        out = _view(y, (N, Fg, cols), (F * Yp, Yp, 1), gi * Fg * Yp)
        ctx.gemm(_wmat(w, gm, gi, Fg, Kg),
                 _view(xs, (N, Kg, cols), (C_ * per_c, 0, 1), gi * Cg * per_c), out,
                 bias=None if b is None else _view(b, (Fg,), None, gi * Fg),
                 bias_axis=None if b is None else "m",
                 b_kmap=im.kmap(Cg), c_ngrid=(im.Wq, im.Wo), epilogue=epilogue,
                 residual=None if residual is None else
                 _view(residual, out.shape, out.strides, gi * Fg * Yp))


def _conv_same(ctx, gm: Geom, im: Implicit, x4, w, b, y, epilogue, residual) -> None:
    """A stride-1 "same" convolution as one GEMM per group straight off the input: B rows
    are (channel, tap) shifts of the image, padded while packed (``b_same``)."""
    N, C_, F, Cg, Fg = gm.N, gm.C, gm.F, gm.Cg, gm.Fg
    HW = im.H * im.W
    Kg = Cg * im.kh * im.kw
    for gi in range(gm.G):
        out = _view(y, (N, Fg, HW), (F * HW, HW, 1), gi * Fg * HW)
        ctx.gemm(_wmat(w, gm, gi, Fg, Kg),
                 _view(x4, (N, Kg, HW), (C_ * HW, 0, 1), gi * Cg * HW), out,
                 bias=None if b is None else _view(b, (Fg,), None, gi * Fg),
                 bias_axis=None if b is None else "m", epilogue=epilogue,
                 **im.same_gemm(Cg),
                 residual=None if residual is None else
                 _view(residual, out.shape, out.strides, gi * Fg * HW))


def conv_forward(ctx, gm: Geom, x, w, b, y, epilogue: tuple = (), residual=None) -> None:
    """y = conv(x, w) + b, then the fused ``epilogue`` steps ("add" the ``residual``, laid
    out like y; "relu") -- see :func:`fusable_epilogue` for when they may be given."""
    if y.size == 0:
        return
    if epilogue and not fusable_epilogue(gm):
        raise OpError(f"Convolution: no fused epilogue for this geometry {gm}")
    if x.size == 0 or gm.Cg == 0:
        if b is None:
            fill_zero(ctx, y)
        else:
            yv = _view(y, (gm.N, gm.F, gm.Yp))
            ctx.compute(yv, lambda n, f, o: b[f], "conv_bias")
        return
    if gm.depthwise:
        return _dw_forward(ctx, gm, x, w, b, y)
    if _conv_direct(ctx, gm, x, w, b, y, tuple(epilogue), residual):
        return
    G, Cg, Fg, F, C_, Yp, Xp = gm.G, gm.Cg, gm.Fg, gm.F, gm.C, gm.Yp, gm.Xp
    CgK = Cg * gm.Kp
    epi = dict(epilogue=tuple(epilogue))

    def res(view: K.TensorRef):
        epi["residual"] = None if residual is None else \
            _view(residual, view.shape, view.strides, view.offset - y.offset)
        return epi

    if gm.pointwise:
        for gi in range(G):
            out = _view(y, (gm.N, Fg, Yp), (F * Yp, Yp, 1), gi * Fg * Yp)
            matmul(ctx, _wmat(w, gm, gi, Fg, Cg),
                   _view(x, (gm.N, Cg, Xp), (C_ * Xp, Xp, 1), gi * Cg * Xp), out,
                   bias=None if b is None else _view(b, (Fg,), None, gi * Fg),
                   bias_axis=None if b is None else "m", **res(out))
        return
    im = implicit_geometry(gm) if ctx.cpu_templates else None
    if im is not None:
        return _conv_implicit(ctx, gm, im, x, w, b, y, tuple(epilogue), residual)
    nb = gm.chunk()
    col = ctx.temp((C_ * gm.Kp * nb * Yp,), x.dtype)
    for n0 in range(0, gm.N, nb):
        _im2col(ctx, gm, x, n0, nb, col)
        for gi in range(G):
            out = _view(y, (nb, Fg, Yp), (F * Yp, Yp, 1), n0 * F * Yp + gi * Fg * Yp)
            matmul(ctx, _wmat(w, gm, gi, Fg, CgK),
                   _view(col, (nb, CgK, Yp), (Yp, nb * Yp, 1), gi * CgK * nb * Yp), out,
                   bias=None if b is None else _view(b, (Fg,), None, gi * Fg),
                   bias_axis=None if b is None else "m", **res(out))


def _conv_direct(ctx, gm: Geom, x, w, b, y, epilogue: tuple, residual) -> bool:
    """The direct convolution template (``codegen/conv_template.py``) for a 1-D/2-D
    convolution without groups whose weight the program stores prepacked (inference with
    constant parameters: ``LowerCtx.conv_direct`` decides); 1x1 stride-1 layers stay plain
    GEMMs. False: nothing emitted, take another path."""
    if not ctx.cpu_templates or not hasattr(ctx, "conv_direct") or gm.G != 1 or \
            gm.nd not in (1, 2) or gm.pointwise:
        return False
    if any(tuple(r.strides) != K.contiguous_strides(r.shape) for r in (x, y, w)):
        return False

    geometry = gm.plane()
    H, W, Ho, Wo, kh, kw = (geometry[k] for k in ("H", "W", "Ho", "Wo", "kh", "kw"))
    x4, y4 = _view(x, (gm.N, gm.C, H, W)), _view(y, (gm.N, gm.F, Ho, Wo))
    r4 = None if residual is None else _view(residual, y4.shape)
    if r4 is not None and tuple(residual.strides) != K.contiguous_strides(residual.shape):
        return False
    return ctx.conv_direct(x4, _view(w, (gm.F, gm.C, kh, kw)), b, y4, geometry, epilogue, r4)


def fusable_epilogue(gm: Geom) -> bool:
    """Whether the forward convolution of ``gm`` can take a fused epilogue: every path but
    the depthwise kernel and the degenerate (empty) cases ends in the GEMM template."""
    return not gm.depthwise and gm.Cg > 0 and gm.N * gm.F * gm.Yp > 0 and gm.Xp > 0


def _conv_same_backward_data(ctx, gm: Geom, im: Implicit, dy, w, dx, bias) -> None:
    """dx of a stride-1 "same" convolution is itself a "same" convolution of dy with the
    weights transposed (input <-> output channels) and flipped: one pass makes those
    weights, then one implicit GEMM per group reads dy unpadded (``b_same``) -- no col
    buffer, no col2im scatter."""
    G, Cg, Fg, kh, kw = gm.G, gm.Cg, gm.Fg, im.kh, im.kw
    HW = im.H * im.W
    wt = ctx.temp((G, Cg, Fg, kh, kw), w.dtype)
    w5 = _view(w, (G, Fg, Cg, kh, kw))
    ctx.compute(wt, lambda g, c, f, ky, kx: w5[g, f, c, C(kh - 1, I64) - idx(ky),
                                                C(kw - 1, I64) - idx(kx)], "conv_wflip")
    if G == 1:   # the direct template, as for a forward convolution of dy
        dual = Geom(gm.N, gm.F, gm.C, 1, gm.Y, gm.X, gm.k, gm.s, gm.d, gm.p)
        if _conv_direct(ctx, dual, dy, _view(wt, (gm.C, gm.F) + tuple(gm.k)), bias, dx, (),
                        None):
            return
    Kg = Fg * kh * kw
    for gi in range(G):
        ctx.gemm(_view(wt, (Cg, Kg), None, gi * Cg * Kg),
                 _view(dy, (gm.N, Kg, HW), (gm.F * HW, 0, 1), gi * Fg * HW),
                 _view(dx, (gm.N, Cg, HW), (gm.C * HW, HW, 1), gi * Cg * HW),
                 bias=None if bias is None else _view(bias, (Cg,), None, gi * Cg),
                 bias_axis=None if bias is None else "m", **im.same_gemm(Fg))


def _conv_transpose_phases(ctx, gm: Geom, dy, w, dx, bias) -> bool:
    """dx = conv^T(dy, w) (+ bias[c]) of a strided convolution -- its data gradient, or a
    strided Deconvolution -- by the direct convolution template. Along each spatial axis,
    output position i takes only the taps t = r + j*s of its phase r = (i + p) mod s, from
    dy[q - j] where i = q*s + r - p; so each of the s_y*s_x phases of dx is a stride-1
    convolution of dy with the flipped sub-kernel w[.., r + (J-1-j)*s] (input and output
    channels swapped), written straight into the phase's strided positions of dx (its pad
    J-1-q0 may be negative: the window starts inside dy). Phases no tap reaches get the
    bias (or 0). No col buffer, no col2im scatter. Groups 1, dilation 1, 1-D/2-D, and
    every phase taking the template (all or nothing); False: nothing emitted."""
    if not ctx.cpu_templates or not hasattr(ctx, "conv_direct") or gm.G != 1 or \
            gm.nd not in (1, 2) or any(v != 1 for v in gm.d) or all(v == 1 for v in gm.s):
        return False
    if any(tuple(r.strides) != K.contiguous_strides(r.shape) for r in (dy, w, dx)):
        return False

    N, C_, F = gm.N, gm.C, gm.F
    g0 = gm.plane()
    H, W, Ho, Wo, kh, kw, sh, sw, ph, pw = (g0[k] for k in ("H", "W", "Ho", "Wo", "kh", "kw",
                                                            "sh", "sw", "ph", "pw"))
    if N * H * W < ctx.direct_repack_min_pixels:
        return False

    def phase(r, k, st, p, X):   # (taps J, first q, count) of phase r along one axis
        q0 = -(-(p - r) // st)
        return max(0, -(-(k - r) // st)), q0, max(0, (X - 1 + p - r) // st - q0 + 1)

    dy4, w4 = _view(dy, (N, F, Ho, Wo)), _view(w, (F, C_, kh, kw))
    phases = []
    for ry in range(sh):
        Jy, qy, Qy = phase(ry, kh, sh, ph, H)
        for rx in range(sw):
            Jx, qx, Qx = phase(rx, kw, sw, pw, W)
            if not (Qy and Qx):
                continue
            view = K.TensorRef(dx.buf, (N, C_, Qy, Qx), (C_ * H * W, H * W, sh * W, sw),
                               dx.offset + (qy * sh + ry - ph) * W + qx * sw + rx - pw)
            geometry = dict(N=N, C=F, H=Ho, W=Wo, F=C_, kh=max(Jy, 1), kw=max(Jx, 1), sh=1,
                            sw=1, dh=1, dw=1, ph=Jy - 1 - qy, pw=Jx - 1 - qx, Ho=Qy, Wo=Qx)
            phases.append((ry, rx, Jy * Jx > 0, view, geometry))
    for _, _, taps, view, pg in phases:
        probe = K.TensorRef(w.buf, (C_, F, pg["kh"], pg["kw"]))
        if taps and not ctx.conv_direct(dy4, probe, bias, view, pg, dry_run=True, repack=True):
            return False
    for ry, rx, taps, view, pg in phases:
        if not taps:        # no tap reaches these positions
            ctx.compute(view, lambda n, c, i, j: bias[c] if bias is not None
                        else C(0, dx.dtype), "deconv_bias" if bias is not None else "zero")
            continue
        Jy, Jx = pg["kh"], pg["kw"]
        wt = ctx.temp((C_, F, Jy, Jx), w.dtype)
        ctx.compute(wt, lambda c, f, a, b_, ry=ry, rx=rx, Jy=Jy, Jx=Jx:
                    w4[f, c, (C(Jy - 1, I64) - idx(a)) * sh + ry,
                       (C(Jx - 1, I64) - idx(b_)) * sw + rx], "conv_wphase")
        if not ctx.conv_direct(dy4, wt, bias, view, pg, repack=True):
            raise OpError(f"Convolution: transposed phase {pg} was accepted, then refused")
    return True


def conv_backward_data(ctx, gm: Geom, dy, w, dx, bias=None) -> None:
    """dx = conv^T(dy, w) (+ bias[c] per input channel: Deconvolution's bias)."""
    if dx.size == 0:
        return
    if dy.size == 0 or gm.Fg == 0:
        if bias is None:
            fill_zero(ctx, dx)
        else:
            xv = _view(dx, (gm.N, gm.C, gm.Xp))
            ctx.compute(xv, lambda n, c, i: bias[c], "deconv_bias")
        return
    if gm.depthwise:
        return _dw_backward_data(ctx, gm, dy, w, dx, bias)
    G, Cg, Fg, F, C_, Yp, Xp = gm.G, gm.Cg, gm.Fg, gm.F, gm.C, gm.Yp, gm.Xp
    CgK = Cg * gm.Kp
    if gm.pointwise:
        for gi in range(G):
            matmul(ctx, _wmat(w, gm, gi, Fg, Cg),
                   _view(dy, (gm.N, Fg, Yp), (F * Yp, Yp, 1), gi * Fg * Yp),
                   _view(dx, (gm.N, Cg, Xp), (C_ * Xp, Xp, 1), gi * Cg * Xp), trans_a=True,
                   bias=None if bias is None else _view(bias, (Cg,), None, gi * Cg),
                   bias_axis=None if bias is None else "m")
        return
    im = implicit_geometry(gm) if ctx.cpu_templates else None
    if im is not None and im.same:
        return _conv_same_backward_data(ctx, gm, im, dy, w, dx, bias)
    if _conv_transpose_phases(ctx, gm, dy, w, dx, bias):
        return
    nb = gm.chunk()
    col = ctx.temp((C_ * gm.Kp * nb * Yp,), dy.dtype)
    for n0 in range(0, gm.N, nb):
        for gi in range(G):
            matmul(ctx, _wmat(w, gm, gi, Fg, CgK),
                   _view(dy, (nb, Fg, Yp), (F * Yp, Yp, 1), n0 * F * Yp + gi * Fg * Yp),
                   _view(col, (nb, CgK, Yp), (Yp, nb * Yp, 1), gi * CgK * nb * Yp),
                   trans_a=True)
        if any(v > 1 for v in gm.s):
            _col2im_phased(ctx, gm, col, n0, nb, dx, bias)
        else:
            _col2im(ctx, gm, col, n0, nb, dx, bias)


def conv_backward_weight(ctx, gm: Geom, x, dy, dw) -> None:
    """dw = sum over images of dy (*) x (the weight gradient of y = conv(x, w))."""
    if dw.size == 0:
        return
    if gm.N == 0 or gm.Yp == 0:
        fill_zero(ctx, dw)
        return
    if gm.depthwise:
        return _dw_backward_weight(ctx, gm, x, dy, dw)
    im = implicit_geometry(gm) if ctx.cpu_templates else None
    same = im is not None and im.same and not gm.pointwise
    # the direct weight gradient where the GEMM would need an im2col buffer (strided,
    # non-"same" layers) and the weight is small: its partial sums are reduced and
    # transposed into dw by generic kernels, which cost more than the template saves on
    # large weights (a stage-4 512x512x3x3 gradient: 5.2 ms of reduction for 3.5 ms of
    # template); resnet's 7x7/2 stem (64x3x7x7): 10.7 -> 6.2 ms at batch 8
    if not same and gm.F * gm.Cg * gm.Kp <= WGRAD_DIRECT_MAX_WEIGHT and \
            _conv_wgrad_direct(ctx, gm, x, dy, dw):
        return
    if same:
        return _conv_same_backward_weight(ctx, gm, im, x, dy, dw)
    G, Cg, Fg, F, C_, Yp, Xp = gm.G, gm.Cg, gm.Fg, gm.F, gm.C, gm.Yp, gm.Xp
    CgK = Cg * gm.Kp
    nb = gm.chunk()
    direct = gm.pointwise and nb == 1
    col = None if direct else ctx.temp((C_ * gm.Kp * nb * Yp,), x.dtype)
    dyt = ctx.temp((F * nb * Yp,), dy.dtype) if nb > 1 else None
    for n0 in range(0, gm.N, nb):
        if not direct:
            _im2col(ctx, gm, x, n0, nb, col)
        if dyt is not None:   # dy chunk as (F, nb, Yp): K = images x pixels is one stride
            src = _view(dy, (nb, F, Yp), None, n0 * F * Yp)
            compute_at(ctx, K.TensorRef(dyt.buf, (F, nb, Yp)), [src],
                       lambda i, s_: s_[i[1], i[0], i[2]], "dy_transpose")
        for gi in range(G):
            if dyt is not None:
                a = _view(dyt, (Fg, nb * Yp), None, gi * Fg * nb * Yp)
            else:
                a = _view(dy, (Fg, Yp), None, n0 * F * Yp + gi * Fg * Yp)
            if direct:
                bm = _view(x, (Cg, Xp), None, n0 * C_ * Xp + gi * Cg * Xp)
            else:
                bm = _view(col, (CgK, nb * Yp), None, gi * CgK * nb * Yp)
            matmul(ctx, a, bm, _wmat(dw, gm, gi, Fg, CgK), trans_b=True,
                   beta=0.0 if n0 == 0 else 1.0)


def _conv_wgrad_direct(ctx, gm: Geom, x, dy, dw) -> bool:
    """dw by the direct weight-gradient template (``LowerCtx.conv_wgrad_direct``): 1-D/2-D
    convolutions without groups, not 1x1 stride 1 (a plain GEMM), on the CPU."""
    if not ctx.cpu_templates or not hasattr(ctx, "conv_wgrad_direct") or gm.G != 1 or \
            gm.nd not in (1, 2) or gm.pointwise or gm.C < 1:
        return False
    if any(tuple(r.strides) != K.contiguous_strides(r.shape) for r in (x, dy, dw)):
        return False
    g = gm.plane()
    H, W, Ho, Wo, kh, kw = (g[k] for k in ("H", "W", "Ho", "Wo", "kh", "kw"))
    return ctx.conv_wgrad_direct(_view(x, (gm.N, gm.C, H, W)), _view(dy, (gm.N, gm.F, Ho, Wo)),
                                 _view(dw, (gm.F, gm.C, kh, kw)), g)


def _conv_same_backward_weight(ctx, gm: Geom, im: Implicit, x, dy, dw) -> None:
    """dw of a stride-1 "same" convolution: per image and group one GEMM dW += dY X^T whose
    B columns are the image shifted by their (channel, tap), padded while packed
    (``b_cols``) -- no im2col buffer, no transposed copy of dy."""
    G, Cg, Fg, F, C_ = gm.G, gm.Cg, gm.Fg, gm.F, gm.C
    HW = im.H * im.W
    Kg = Cg * im.kh * im.kw
    same = im.same_gemm(Cg)
    for n in range(gm.N):
        for gi in range(G):
            ctx.gemm(_view(dy, (Fg, HW), None, n * F * HW + gi * Fg * HW),
                     _view(x, (HW, Kg), (1, 0), n * C_ * HW + gi * Cg * HW),
                     _wmat(dw, gm, gi, Fg, Kg), beta=0.0 if n == 0 else 1.0,
                     b_cols=same["b_kmap"], b_same=same["b_same"])


def bias_grad(ctx, dy: K.TensorRef, db: K.TensorRef) -> None:
    """db[f] = sum over images and pixels of dy[n, f, ...]."""
    N, F = dy.shape[:2]
    P = _prod(dy.shape[2:])
    if N * P == 0:
        fill_zero(ctx, db)
        return
    v = _view(dy, (N, F, P))
    axes = ([K.reduce_axis(N, "n")] if N > 1 else []) + ([K.reduce_axis(P, "q")] if P > 1
                                                          else [])
    nv = axes[0].var if N > 1 else C(0, I64)
    pv = axes[-1].var if P > 1 else C(0, I64)

    def fn(f, _):
        e = v[nv, f, pv]
        return K.reduce("sum", e, axes) if axes else e

    ctx.compute(_view(db, (F, 1)), fn, "bias_grad")


# ---------------------------------------------------------------------------------------------
# depthwise (one input channel per group): direct kernels
# ---------------------------------------------------------------------------------------------
def _dw_source(ctx, gm: Geom, x):
    """x, or a zero-padded copy in which every window tap is in range: (ref, pads)."""
    lo, hi = pad_extents(gm.X, gm.Y, gm.k, gm.s, gm.p, gm.d)
    if not any(lo) and not any(hi):
        return x, lo
    return pad_temp(ctx, x, lo, hi, 0), lo


def _dw_pos(gm: Geom, o, t, lo):
    return [idx(od) * ss + idx(tt) * dd - (pp - ll)
            for od, tt, ss, dd, pp, ll in zip(o, t, gm.s, gm.d, gm.p, lo)]


def _dw_forward(ctx, gm: Geom, x, w, b, y) -> None:
    m = gm.Fg
    wv = _view(w, (gm.F,) + gm.k)
    lo, hi = pad_extents(gm.X, gm.Y, gm.k, gm.s, gm.p, gm.d)
    if not any(lo) and not any(hi):
        def body(n, f, *o):
            o = out_vars(o, gm.Y)
            axes, taps = tap_axes(gm.k)
            c = idx(f) // m if m > 1 else f
            e = x[(n, c, *_dw_pos(gm, o, taps, lo))] * wv[(f, *taps)]
            e = K.reduce("sum", e, axes) if axes else e
            return e + b[f] if b is not None else e

        ctx.compute(y, body, "dwconv")
        return

    # windows reaching into the padding: taps clamped and selected (a padded copy of the
    # input would cost a temp as large as the input); the interior run of the last dimension
    # keeps plain affine loads
    nd = len(gm.X)

    def make(a0, inner):
        def fn(i, xr, wr, *br):
            n, f = i[:2]
            o = out_vars(shift_last(i[2:], a0), gm.Y)
            axes, taps = tap_axes(gm.k)
            c = idx(f) // m if m > 1 else f
            pos, conds = [], []
            for dd in range(nd):
                pc, cd = window_pos(o[dd], taps[dd], gm.X[dd], gm.Y[dd], gm.k[dd], gm.s[dd],
                                    gm.p[dd], gm.d[dd], interior=inner and dd == nd - 1)
                pos.append(pc)
                conds.append(cd)
            v = xr[(n, c, *pos)]
            cond = and_all(conds)
            if cond is not None:
                v = K.select(cond, v, C(0, v.dtype))
            e = v * wr[(f, *taps)]
            e = K.reduce("sum", e, axes) if axes else e
            return e + br[0][f] if br else e
        return fn

    refs = [x, wv] + ([b] if b is not None else [])
    runs = segments(gm.X[-1], gm.Y[-1], gm.k[-1], gm.s[-1], gm.p[-1], gm.d[-1])
    compute_runs(ctx, y, refs, runs, make, "dwconv")


def _dw_backward_data(ctx, gm: Geom, dy, w, dx, bias) -> None:
    """dx[n, c, i] = sum over the channel's filters j and taps t with
    i = o*s - p + t*d of dy[n, c*m + j, o] * w[c*m + j, t]."""
    m = gm.Fg
    wv = _view(w, (gm.F,) + gm.k)
    plo = None
    src = dy
    if all(v == 1 for v in gm.s):
        # stride 1: pad dy so every tap reads in range: o = i + p - t*d, index o + plo
        plo = tuple(max(0, (kk - 1) * dd - pp) for kk, dd, pp in zip(gm.k, gm.d, gm.p))
        phi = tuple(max(0, x_ - 1 + pp - (y_ - 1))
                    for x_, pp, y_ in zip(gm.X, gm.p, gm.Y))
        if any(plo) or any(phi):
            src = pad_temp(ctx, dy, plo, phi, 0, name="pad_grad")

    def body(n, c, *i):
        axes, taps = tap_axes(gm.k)
        if m > 1:
            jr = K.reduce_axis(m, "j")
            axes = [jr] + axes
            f = idx(c) * m + jr.var
        else:
            f = c
        if plo is not None:
            qs = [idx(iv) + pp + ll - idx(tt) * dd
                  for iv, tt, dd, pp, ll in zip(i, taps, gm.d, gm.p, plo)]
            cond = None
        else:
            qs, cond = _twin(gm, i, taps, False)
        e = src[(n, f, *qs)] * wv[(f, *taps)]
        if cond is not None:
            e = K.select(cond, e, C(0, e.dtype))
        e = K.reduce("sum", e, axes) if axes else e
        return e + bias[c] if bias is not None else e

    ctx.compute(dx, body, "dwconv_grad_data")


def _dw_backward_weight(ctx, gm: Geom, x, dy, dw) -> None:
    """dw[f, t] = sum over images and outputs of dy[n, f, o] * x[n, c(f), o*s - p + t*d]."""
    m = gm.Fg
    out = _view(dw, (gm.F,) + gm.k)
    src, lo = _dw_source(ctx, gm, x)

    def body(f, *t):
        t = [C(0, I64) if kk == 1 else tv for tv, kk in zip(t, gm.k)]
        axes = []
        if gm.N > 1:
            nr = K.reduce_axis(gm.N, "n")
            axes.append(nr)
            n = nr.var
        else:
            n = C(0, I64)
        o = []
        for Y in gm.Y:
            if Y > 1:
                r = K.reduce_axis(Y, "o")
                axes.append(r)
                o.append(r.var)
            else:
                o.append(C(0, I64))
        c = idx(f) // m if m > 1 else f
        e = dy[(n, f, *o)] * src[(n, c, *_dw_pos(gm, o, t, lo))]
        return K.reduce("sum", e, axes) if axes else e

    ctx.compute(out, body, "dwconv_grad_weight")


# ---------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------
def _check_param_shape(op, name, got, want):
    if got is not None and tuple(got) != tuple(want):
        raise ShapeError(f"{op}: {name} shape {tuple(got)} does not match the expected "
                         f"{tuple(want)}")


@simple("Convolution", aliases=("Convolution_v1",), fusion="complex",
        params=ParamSpec(**_CONV_PARAMS))
class Convolution(OpDef):
    def arguments(self, a):
        return ["data", "weight"] + ([] if a.no_bias else ["bias"])

    def infer_shape(self, a, s):
        k, st, dl, p = _spatial(a, self.name)
        s = list(s)
        d = s[0]
        if not a.no_bias:
            _check_param_shape(self.name, "bias", s[2], (a.num_filter,))
            s[2] = (a.num_filter,)
        if d is None:
            return s, [None]
        _check_data(self.name, d, len(k), a)
        wexp = (a.num_filter, d[1] // a.num_group) + k
        _check_param_shape(self.name, "weight", s[1], wexp)
        s[1] = wexp
        Y = _conv_out(self.name, tuple(d[2:]), k, st, dl, p)
        return s, [(d[0], a.num_filter) + Y]

    def infer_type(self, a, t):
        for x in t:
            if x is not None and x not in ("float32", "float64", "float16"):
                raise OpError(f"{self.name}: only floating-point data is supported, got {x}")
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        in_gemm_types(ctx, lambda ins, outs: self._lower(ctx, ins, outs))

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        x, w = ins[:2]
        b = None if a.no_bias else ins[2]
        conv_forward(ctx, conv_geom(a, x.shape), x, w, b, outs[0])

    def reference(self, a, inputs, is_train=False):
        x, w = inputs[:2]
        gm = conv_geom(a, x.shape)
        y = conv_ref(x.astype(np.float64), w.astype(np.float64), gm)
        if not a.no_bias:
            y = y + inputs[2].astype(np.float64).reshape((-1,) + (1,) * gm.nd)
        return [y.astype(x.dtype)]

    def flops(self, a, in_shapes, out_shapes):
        gm = conv_geom(a, in_shapes[0])
        return 2 * gm.N * gm.F * gm.Yp * gm.Cg * gm.Kp

    def gradient(self, node, ograds):
        a = node.parsed
        x, w = node.inputs[:2]
        names = ["data", "weight", "bias"][: 2 if a.no_bias else 3]
        return [g("_backward_" + self.name, ograds[0], x, w, index=i,
                  name=f"{node.name}_backward_{nm}", **dict(a))
                for i, nm in enumerate(names)]


@simple("_backward_Convolution", fusion="complex", differentiable=False,
        params=ParamSpec(index=Param(parse_int), **_CONV_PARAMS))
class BackwardConvolution(GemmBackward):
    def bias_len(self, a) -> int:
        return a.num_filter

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        dy, x, w = ins
        out = outs[0]
        gm = conv_geom(a, x.shape)
        if a.index == 0:
            conv_backward_data(ctx, gm, dy, w, out)
        elif a.index == 1:
            conv_backward_weight(ctx, gm, x, dy, out)
        else:
            bias_grad(ctx, dy, out)


# ---------------------------------------------------------------------------------------------
# Deconvolution
# ---------------------------------------------------------------------------------------------
@simple("Deconvolution", aliases=(), fusion="complex", params=ParamSpec(**_DECONV_PARAMS))
class Deconvolution(Convolution):
    def infer_shape(self, a, s):
        k, st, dl, _ = _spatial(a, self.name)
        s = list(s)
        d = s[0]
        if not a.no_bias:
            _check_param_shape(self.name, "bias", s[2], (a.num_filter,))
            s[2] = (a.num_filter,)
        if d is None:
            return s, [None]
        _check_data(self.name, d, len(k), a)
        wexp = (d[1], a.num_filter // a.num_group) + k
        _check_param_shape(self.name, "weight", s[1], wexp)
        s[1] = wexp
        Y, _ = _deconv_out(a, tuple(d[2:]), k, st, dl)
        return s, [(d[0], a.num_filter) + Y]

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        x, w = ins[:2]
        b = None if a.no_bias else ins[2]
        conv_backward_data(ctx, deconv_geom(a, x.shape), x, w, outs[0], b)

    def reference(self, a, inputs, is_train=False):
        x, w = inputs[:2]
        gm = deconv_geom(a, x.shape)
        y = deconv_ref(x.astype(np.float64), w.astype(np.float64), gm)
        if not a.no_bias:
            y = y + inputs[2].astype(np.float64).reshape((-1,) + (1,) * gm.nd)
        return [y.astype(x.dtype)]

    def flops(self, a, in_shapes, out_shapes):
        gm = deconv_geom(a, in_shapes[0])
        return 2 * gm.N * gm.F * gm.Yp * gm.Cg * gm.Kp


@simple("_backward_Deconvolution", fusion="complex", differentiable=False,
        params=ParamSpec(index=Param(parse_int), **_DECONV_PARAMS))
class BackwardDeconvolution(BackwardConvolution):
    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        dy, x, w = ins
        out = outs[0]
        gm = deconv_geom(a, x.shape)
        if a.index == 0:
            conv_forward(ctx, gm, dy, w, None, out)
        elif a.index == 1:
            conv_backward_weight(ctx, gm, dy, x, out)
        else:
            bias_grad(ctx, dy, out)


# ---------------------------------------------------------------------------------------------
# numpy references (einsum over strided windows)
# ---------------------------------------------------------------------------------------------
def conv_ref(x: np.ndarray, w: np.ndarray, gm: Geom) -> np.ndarray:
    v, _ = window_stack(x, gm.k, gm.s, gm.p, gm.Y, gm.d, fill=0.0)   # (T, N, C, *Y)
    T = v.shape[0]
    v = v.reshape((T, gm.N, gm.G, gm.Cg) + gm.Y)
    wm = w.reshape(gm.G, gm.Fg, gm.Cg, T)
    y = np.einsum("tngc...,gfct->ngf...", v, wm)
    return y.reshape((gm.N, gm.F) + gm.Y)


def deconv_ref(x: np.ndarray, w: np.ndarray, gm: Geom) -> np.ndarray:
    """Transposed convolution of x (N, F_conv, *Y) with w (F_conv, C_conv/G, *k) into
    (N, C_conv, *X) (``gm`` is the convolution geometry)."""
    nd = gm.nd
    full = [max((y - 1) * s + (k - 1) * d + 1, p + X)
            for y, s, k, d, p, X in zip(gm.Y, gm.s, gm.k, gm.d, gm.p, gm.X)]
    out = np.zeros((gm.N, gm.G, gm.Cg) + tuple(full))
    xg = x.reshape((gm.N, gm.G, gm.Fg) + gm.Y)
    wg = w.reshape((gm.G, gm.Fg, gm.Cg, gm.Kp))
    for ti, tap in enumerate(np.ndindex(*gm.k)):
        contrib = np.einsum("ngf...,gfc->ngc...", xg, wg[..., ti])
        sl = tuple(slice(t * d, t * d + (y - 1) * s + 1, s)
                   for t, d, y, s in zip(tap, gm.d, gm.Y, gm.s))
        out[(slice(None),) * 3 + sl] += contrib
    crop = tuple(slice(p, p + X) for p, X in zip(gm.p, gm.X))
    out = out[(slice(None),) * 3 + crop]
    return out.reshape((gm.N, gm.C) + gm.X)[(slice(None),) * 2 + (slice(None),) * nd]


__all__ = [
    "Convolution",
    "Deconvolution",
    "Geom",
    "bias_grad",
    "compute_at",
    "conv_backward_data",
    "conv_backward_weight",
    "conv_forward",
    "conv_geom",
    "conv_ref",
    "deconv_geom",
    "deconv_ref",
]
