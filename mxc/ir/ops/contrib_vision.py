"""Vision operators of MXNet 1.x: resizing and adaptive pooling, region pooling (ROIPooling,
ROIAlign), spatial transformers (GridGenerator, BilinearSampler, SpatialTransformer) and
detection boxes (box_iou, MultiBoxPrior, box_nms).

Follows MXNet 1.9.1 ``src/operator/contrib/{bilinear_resize,adaptive_avg_pooling,roi_align,
multibox_prior,bounding_box}*`` and ``src/operator/{roi_pooling,grid_generator,
bilinear_sampler,spatial_transformer}*``.

Dense outputs are ``ctx.compute`` kernels. Work whose extent depends on data (the window of
a region, the sample grid of ROIAlign, NMS) is written as hand-built kernels
(:class:`_Body`): serial loops with data-dependent bounds inside one parallel task loop.
Backward passes that scatter (bilinear weights, region windows) give every task a disjoint
part of the gradient (one image plane or one channel) and walk the outputs in order, so
sums are deterministic and need no atomics. Every index computed from data is clamped into
its tensor before it is used for a load or store.
"""
from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..graph import Entry
from ..params import (
    Param,
    ParamSpec,
    enum,
    optional,
    parse_bool,
    parse_float,
    parse_float_tuple,
    parse_int,
    parse_shape,
)
from ..registry import OpDef, simple
from .common import collect_buffers, g, outputs_of

C = K.const
I64 = "int64"
_local_ids = itertools.count()


# =============================================================================================
# hand-built kernels
# =============================================================================================
class _Body:
    """Statements of a hand-built kernel: locals, stores, loops and conditions, in order."""

    def __init__(self) -> None:
        self.stmts: list = []

    def let(self, e, hint: str = "v") -> K.Local:
        e = K.wrap(e)
        loc = K.Local(f"%cv{hint}{next(_local_ids)}", e.dtype)
        self.stmts.append(K.Assign(loc, e))
        return loc

    def set(self, loc: K.Local, e) -> None:
        self.stmts.append(K.Assign(loc, K.cast(loc.dtype, e)))

    def store(self, ref: K.TensorRef, idx, value) -> None:
        self.stmts.append(K.Store(ref.buf, ref.flat_index(tuple(idx)),
                                  K.cast(ref.dtype, value)))

    def add_to(self, ref: K.TensorRef, idx, value) -> None:
        """ref[idx] += value (computed in the accumulation dtype of ``value``)."""
        i = ref.flat_index(tuple(idx))
        old = K.cast(K.wrap(value).dtype, K.Load(ref.buf, i))
        self.stmts.append(K.Store(ref.buf, i, K.cast(ref.dtype, old + value)))

    @contextlib.contextmanager
    def loop(self, extent, start=0, hint: str = "j"):
        var = K.index_var(hint)
        outer, self.stmts = self.stmts, []
        try:
            yield var
        finally:
            body, self.stmts = self.stmts, outer
            self.stmts.append(K.For(var, K.wrap(extent), body, "serial", start=K.wrap(start)))

    @contextlib.contextmanager
    def when(self, cond):
        outer, self.stmts = self.stmts, []
        try:
            yield
        finally:
            body, self.stmts = self.stmts, outer
            self.stmts.append(K.If(cond, body))


def _emit(ctx, n_tasks: int, build, name: str, cost: int) -> None:
    """One kernel of ``n_tasks`` tasks; ``build(body, task)`` writes a task's statements."""
    if n_tasks <= 0:
        return
    task = K.index_var("task")
    body = _Body()
    build(body, task)
    kern = K.Kernel("__K__", collect_buffers(body.stmts), task, n_tasks, body.stmts,
                    cost=max(int(cost), 1), note=name)
    ctx.emit(kern)


def _zero(ctx, ref: K.TensorRef, name: str) -> None:
    if ref.size:
        ctx.compute(ref, lambda *i: C(0, ref.dtype), name + "_zero")


def _acc(dtype) -> str:
    """Accumulation / coordinate dtype: float64 for float64 data, float32 otherwise."""
    return "float64" if dtype.name == "float64" else "float32"


def _i(v) -> K.Expr:
    return v if isinstance(v, K.Expr) else C(int(v), I64)


def _to_int(e: K.Expr) -> K.Expr:
    """static_cast<int> of a float (truncation), clamped first so the conversion is defined
    for any value (NaN and huge values included); callers clamp the result to a tensor."""
    lim = C(1.0e9, e.dtype)
    return K.cast(I64, K.minimum(K.maximum(e, -lim), lim))


def _clamp(e: K.Expr, lo: int, hi: int) -> K.Expr:
    return K.minimum(K.maximum(e, _i(lo)), _i(hi))


def _floor(e: K.Expr) -> K.Expr:
    return K.call("floor", e)


def _ceil(e: K.Expr) -> K.Expr:
    return K.call("ceil", e)


def _f(v, dt: str) -> K.Expr:
    return v if isinstance(v, K.Expr) else C(float(v), dt)


def _need_float(op: str, t) -> None:
    if t is not None and t not in ("float16", "float32", "float64", "bfloat16"):
        raise OpError(f"{op}: needs floating-point data, got {t}")


def _nd(op: str, shape, n: int, what: str = "data") -> None:
    if len(shape) != n:
        raise ShapeError(f"{op}: {what} must be {n}-D, got shape {tuple(shape)}")


# =============================================================================================
# _contrib_BilinearResize2D
# =============================================================================================
_RESIZE_MODES = ("size", "odd_scale", "like", "to_even_down", "to_even_up", "to_odd_down",
                 "to_odd_up")


def _resize_out_hw(a, dshape, like_shape) -> tuple:
    H, W = dshape[2], dshape[3]
    m = a.mode
    if m == "size":
        if a.scale_height is not None:
            # MXNet keys both dims on scale_height being set (the width then needs
            # scale_width)
            if a.scale_width is None:
                raise OpError("_contrib_BilinearResize2D: scale_height is set, so scale_width "
                              "is needed too")
            return int(a.scale_height * H), int(a.scale_width * W)
        return a.height, a.width
    if m == "odd_scale":
        if a.scale_height is None or a.scale_width is None:
            raise OpError("_contrib_BilinearResize2D: mode='odd_scale' needs scale_height and "
                          "scale_width")
        oh = int(H * a.scale_height) if H % 2 == 0 else int((H - 1) * a.scale_height) + 1
        ow = int(W * a.scale_width) if W % 2 == 0 else int((W - 1) * a.scale_width) + 1
        return oh, ow
    if m == "like":
        if like_shape is None:
            return None
        if len(like_shape) != 4:
            raise ShapeError(f"_contrib_BilinearResize2D: like must be 4-D, got "
                             f"{tuple(like_shape)}")
        return like_shape[2], like_shape[3]
    even = m.startswith("to_even")
    up = m.endswith("up")
    out = []
    for n in (H, W):
        keep = (n % 2 == 0) == even
        out.append(n if keep else (n + 1 if up else n - 1))
    return tuple(out)


def _resize_scale(i: int, o: int, align: bool, dt) -> float:
    """MXNet's area_pixel_compute_scale, rounded to the coordinate dtype."""
    if o <= 1:
        return 0.0
    s = (i - 1) / (o - 1) if align else i / o
    return float(np.dtype(dt).type(s))


def _resize_axis(o: K.Expr, i_size: int, o_size: int, align: bool, dt: str):
    """(i0, step to the second tap (0 or 1), lambda0, lambda1) of output index ``o``."""
    scale = C(_resize_scale(i_size, o_size, align, dt), dt)
    of = K.cast(dt, o)
    if align:
        r = scale * of
    else:
        r = K.maximum(scale * (of + C(0.5, dt)) - C(0.5, dt), C(0.0, dt))
    i0 = _clamp(_to_int(r), 0, i_size - 1)
    step = K.select(i0.lt(_i(i_size - 1)), _i(1), _i(0))
    l1 = r - K.cast(dt, i0)
    return i0, step, C(1.0, dt) - l1, l1


@simple("_contrib_BilinearResize2D", fusion="injective", params=ParamSpec(
    height=Param(parse_int, 1), width=Param(parse_int, 1),
    scale_height=Param(optional(parse_float), None),
    scale_width=Param(optional(parse_float), None),
    mode=Param(enum(*_RESIZE_MODES), "size"), align_corners=Param(parse_bool, True)))
class BilinearResize2D(OpDef):
    def arguments(self, a):
        return ["data", "like"] if a.mode == "like" else ["data"]

    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        _nd(self.name, d, 4)
        hw = _resize_out_hw(a, d, s[1] if a.mode == "like" else None)
        if hw is None:
            return s, [None]
        if hw[0] < 1 or hw[1] < 1:
            raise ShapeError(f"{self.name}: output size {hw} from data {tuple(d)} and mode "
                             f"{a.mode} is not positive")
        return s, [tuple(d[:2]) + tuple(hw)]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return [t[0]] * len(t), [t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        x, y = ctx.inputs[0], ctx.outputs[0]
        if y.size == 0:
            return
        H, W = x.shape[2:]
        OH, OW = y.shape[2:]
        if (H, W) == (OH, OW):
            ctx.compute(y, lambda *i: x[i], "resize_copy")
            return
        dt = _acc(x.dtype)

        def body(n, c, h, w):
            h0, hp, hl0, hl1 = _resize_axis(h, H, OH, a.align_corners, dt)
            w0, wp, wl0, wl1 = _resize_axis(w, W, OW, a.align_corners, dt)

            def v(hh, ww):
                return K.cast(dt, x[n, c, hh, ww])
            top = wl0 * v(h0, w0) + wl1 * v(h0, w0 + wp)
            bot = wl0 * v(h0 + hp, w0) + wl1 * v(h0 + hp, w0 + wp)
            return hl0 * top + hl1 * bot

        ctx.compute(y, body, "bilinear_resize")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        like = inputs[1].shape if a.mode == "like" else None
        OH, OW = _resize_out_hw(a, x.shape, like)
        return [resize_reference(x, OH, OW, a.align_corners)]

    def gradient(self, node, ograds):
        dx = g("_backward_contrib_BilinearResize2D", ograds[0], node.inputs[0],
               name=f"{node.name}_backward", **dict(node.parsed))
        return [dx] + [None] * (len(node.inputs) - 1)


def _resize_taps(i_size: int, o_size: int, align: bool, dt) -> list:
    """Per output index: (i0, i0 + step, lambda0, lambda1) as MXNet computes them."""
    ft = np.dtype(dt).type
    scale = ft(_resize_scale(i_size, o_size, align, dt))
    out = []
    for o in range(o_size):
        r = scale * ft(o) if align else max(scale * (ft(o) + ft(0.5)) - ft(0.5), ft(0))
        i0 = min(int(r), i_size - 1)
        step = 1 if i0 < i_size - 1 else 0
        l1 = ft(r) - ft(i0)
        out.append((i0, i0 + step, ft(1) - l1, l1))
    return out


def resize_reference(x: np.ndarray, OH: int, OW: int, align: bool) -> np.ndarray:
    N, Ch, H, W = x.shape
    if (H, W) == (OH, OW):
        return x.copy()
    dt = _acc(_dtype_of(x))
    xd = x.astype(np.float64)
    out = np.zeros((N, Ch, OH, OW), np.float64)
    for oh, (h0, h1, hl0, hl1) in enumerate(_resize_taps(H, OH, align, dt)):
        for ow, (w0, w1, wl0, wl1) in enumerate(_resize_taps(W, OW, align, dt)):
            out[:, :, oh, ow] = (hl0 * (wl0 * xd[:, :, h0, w0] + wl1 * xd[:, :, h0, w1])
                                 + hl1 * (wl0 * xd[:, :, h1, w0] + wl1 * xd[:, :, h1, w1]))
    return out.astype(x.dtype)


def _dtype_of(x: np.ndarray):
    from ..dtypes import as_dtype
    return as_dtype(x.dtype.name)


@simple("_backward_contrib_BilinearResize2D", fusion="complex", differentiable=False,
        params=BilinearResize2D.params)
class BackwardBilinearResize2D(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, _x = ctx.inputs
        dx = ctx.outputs[0]
        N, Ch, H, W = dx.shape
        OH, OW = dy.shape[2:]
        if dx.size == 0:
            return
        if (H, W) == (OH, OW):
            ctx.compute(dx, lambda *i: dy[i], "resize_copy")
            return
        dt = _acc(dx.dtype)
        _zero(ctx, dx, "resize_grad")

        # one task per image plane: the plane's outputs scatter their four weights in order
        def build(b, task):
            n, c = task // _i(Ch), task % _i(Ch)
            with b.loop(OH, hint="oh") as oh:
                h0, hp, hl0, hl1 = _resize_axis(oh, H, OH, a.align_corners, dt)
                hv = [b.let(e, "h") for e in (h0, hp, hl0, hl1)]
                with b.loop(OW, hint="ow") as ow:
                    w0, wp, wl0, wl1 = _resize_axis(ow, W, OW, a.align_corners, dt)
                    gy = b.let(K.cast(dt, dy[n, c, oh, ow]), "g")
                    for hh, hl in ((hv[0], hv[2]), (hv[0] + hv[1], hv[3])):
                        b.add_to(dx, (n, c, hh, w0), hl * wl0 * gy)
                        b.add_to(dx, (n, c, hh, w0 + wp), hl * wl1 * gy)

        _emit(ctx, N * Ch, build, "bilinear_resize_grad", N * Ch * OH * OW * 8)


# =============================================================================================
# _contrib_AdaptiveAvgPooling2D
# =============================================================================================
def _adaptive_out(a, op: str) -> tuple:
    s = tuple(a.output_size)
    if len(s) == 0:
        s = (1, 1)
    elif len(s) == 1:
        s = (s[0], s[0])
    elif len(s) != 2:
        raise OpError(f"{op}: output_size must have 1 or 2 entries, got {a.output_size}")
    if any(v is None or v < 1 for v in s):
        raise OpError(f"{op}: output_size must be positive, got {a.output_size}")
    return s


def _window(o, n_in: int, n_out: int):
    """[start, end) of adaptive window ``o``: floor(o*I/O), ceil((o+1)*I/O) (int exprs)."""
    start = (_i(o) * n_in) // _i(n_out)
    end = ((_i(o) + 1) * n_in + (n_out - 1)) // _i(n_out)
    return start, end


def _max_window(n_in: int, n_out: int) -> int:
    return max((-(-(o + 1) * n_in // n_out)) - (o * n_in // n_out) for o in range(n_out))


@simple("_contrib_AdaptiveAvgPooling2D", fusion="complex",
        params=ParamSpec(output_size=Param(parse_shape, ())))
class AdaptiveAvgPooling2D(OpDef):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        _nd(self.name, d, 4)
        return s, [tuple(d[:2]) + _adaptive_out(a, self.name)]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        x, y = ctx.inputs[0], ctx.outputs[0]
        if y.size == 0:
            return
        H, W = x.shape[2:]
        OH, OW = y.shape[2:]
        dt = _acc(x.dtype)
        if H == 0 or W == 0:
            ctx.compute(y, lambda *i: C(float("nan"), y.dtype), "adaptive_pool_empty")
            return
        KH, KW = _max_window(H, OH), _max_window(W, OW)

        def body(n, c, oh, ow):
            hs, he = _window(oh, H, OH)
            ws, we = _window(ow, W, OW)
            rh, rw = K.reduce_axis(KH, "ph"), K.reduce_axis(KW, "pw")
            inside = rh.var.lt(he - hs) & rw.var.lt(we - ws)
            hh = K.minimum(hs + rh.var, _i(H - 1))
            ww = K.minimum(ws + rw.var, _i(W - 1))
            v = K.select(inside, K.cast(dt, x[n, c, hh, ww]), C(0.0, dt))
            area = K.cast(dt, (he - hs) * (we - ws))
            return K.reduce("sum", v, [rh, rw]) / area

        ctx.compute(y, body, "adaptive_avg_pool")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        OH, OW = _adaptive_out(a, self.name)
        N, Ch, H, W = x.shape
        out = np.zeros((N, Ch, OH, OW), np.float64)
        for oh in range(OH):
            hs, he = oh * H // OH, -(-(oh + 1) * H // OH)
            for ow in range(OW):
                ws, we = ow * W // OW, -(-(ow + 1) * W // OW)
                out[:, :, oh, ow] = x[:, :, hs:he, ws:we].astype(np.float64).mean(axis=(2, 3))
        return [out.astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_contrib_AdaptiveAvgPooling2D", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward", **dict(node.parsed))]


@simple("_backward_contrib_AdaptiveAvgPooling2D", fusion="complex", differentiable=False,
        params=AdaptiveAvgPooling2D.params)
class BackwardAdaptiveAvgPooling2D(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def lower(self, ctx):
        dy, _x = ctx.inputs
        dx = ctx.outputs[0]
        N, Ch, H, W = dx.shape
        OH, OW = dy.shape[2:]
        if dx.size == 0:
            return
        dt = _acc(dx.dtype)
        _zero(ctx, dx, "adaptive_pool_grad")

        def build(b, task):
            n, c = task // _i(Ch), task % _i(Ch)
            with b.loop(OH, hint="oh") as oh:
                hs, he = _window(oh, H, OH)
                with b.loop(OW, hint="ow") as ow:
                    ws, we = _window(ow, W, OW)
                    gv = b.let(K.cast(dt, dy[n, c, oh, ow]) / K.cast(dt, (he - hs) * (we - ws)))
                    with b.loop(he - hs, hs, "h") as h, b.loop(we - ws, ws, "w") as w:
                        b.add_to(dx, (n, c, h, w), gv)

        _emit(ctx, N * Ch, build, "adaptive_avg_pool_grad", dx.size * 2)


# =============================================================================================
# ROIPooling
# =============================================================================================
def _pooled(a, op: str) -> tuple:
    p = tuple(a.pooled_size)
    if len(p) != 2 or any(v is None or v < 1 for v in p):
        raise OpError(f"{op}: pooled_size must be two positive ints (h, w), got "
                      f"{a.pooled_size}")
    return p


def _roi_shapes(op: str, s, C_out=None):
    d, r = s[0], s[1]
    if d is not None:
        _nd(op, d, 4)
    if r is not None and (len(r) != 2 or r[1] != 5):
        raise ShapeError(f"{op}: rois must be 2-D (num_rois, 5) [batch_index, x1, y1, x2, y2], "
                         f"got {tuple(r)}")


def _batch_index(rois: K.TensorRef, r, N: int, dt: str) -> K.Expr:
    """The region's image, clamped into the batch (MXNet asserts it is in range)."""
    return _clamp(_to_int(K.cast(dt, rois[r, 0])), 0, N - 1)


@simple("ROIPooling", fusion="complex", params=ParamSpec(
    pooled_size=Param(parse_shape), spatial_scale=Param(parse_float)))
class ROIPooling(OpDef):
    def arguments(self, a):
        return ["data", "rois"]

    def outputs(self, a):
        return ["output", "maxidx"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        _roi_shapes(self.name, s)
        PH, PW = _pooled(a, self.name)
        if s[0] is None or s[1] is None:
            return s, [None, None]
        o = (s[1][0], s[0][1], PH, PW)
        return s, [o, o]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        a = ctx.attrs
        x, rois = ctx.inputs
        y, amax = ctx.outputs
        N, Ch, H, W = x.shape
        R = rois.shape[0]
        PH, PW = _pooled(a, self.name)
        dt = _acc(x.dtype)
        if y.size == 0:
            return
        if x.size == 0:
            raise ShapeError(f"ROIPooling '{ctx.node.name}': data {x.shape} is empty")
        lowest = float(np.finfo(np.float64 if dt == "float64" else np.float32).min)

        def build(b, task):
            r, c = task // _i(Ch), task % _i(Ch)
            n = b.let(_batch_index(rois, r, N, dt), "n")
            sc = C(a.spatial_scale, dt)
            coords = [b.let(_to_int(K.call("round", K.cast(dt, rois[r, k]) * sc)), "rc")
                      for k in range(1, 5)]
            x1, y1, x2, y2 = coords
            bh = b.let(K.cast(dt, K.maximum(y2 - y1 + 1, _i(1))) / C(float(PH), dt), "bh")
            bw = b.let(K.cast(dt, K.maximum(x2 - x1 + 1, _i(1))) / C(float(PW), dt), "bw")
            with b.loop(PH, hint="ph") as ph:
                hs = b.let(_clamp(_to_int(_floor(K.cast(dt, ph) * bh)) + y1, 0, H), "hs")
                he = b.let(_clamp(_to_int(_ceil(K.cast(dt, ph + 1) * bh)) + y1, 0, H), "he")
                with b.loop(PW, hint="pw") as pw:
                    ws = b.let(_clamp(_to_int(_floor(K.cast(dt, pw) * bw)) + x1, 0, W), "ws")
                    we = b.let(_clamp(_to_int(_ceil(K.cast(dt, pw + 1) * bw)) + x1, 0, W),
                               "we")
                    best = b.let(C(lowest, dt), "best")
                    arg = b.let(_i(-1), "arg")
                    with b.loop(he - hs, hs, "h") as h, b.loop(we - ws, ws, "w") as w:
                        v = b.let(K.cast(dt, x[n, c, h, w]), "x")
                        with b.when(v.gt(best)):
                            b.set(best, v)
                            b.set(arg, h * W + w)
                    empty = he.le(hs) | we.le(ws)
                    b.store(y, (r, c, ph, pw), K.select(empty, C(0.0, dt), best))
                    b.store(amax, (r, c, ph, pw), K.cast(dt, K.select(empty, _i(-1), arg)))

        _emit(ctx, R * Ch, build, "roi_pool", y.size * 4)

    def reference(self, a, inputs, is_train=False):
        x, rois = inputs
        y, am = roi_pool_reference(x, rois, _pooled(a, self.name), a.spatial_scale)
        return [y, am]

    def gradient(self, node, ograds):
        dx = g("_backward_ROIPooling", ograds[0], node.inputs[1], Entry(node, 1),
               node.inputs[0], name=f"{node.name}_backward", **dict(node.parsed))
        return [dx, None]


def _c_round(v: float) -> float:
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def roi_pool_reference(x, rois, pooled, scale):
    """MXNet's ROIPooling: max over each bin of the rounded, scaled region (loops)."""
    N, Ch, H, W = x.shape
    PH, PW = pooled
    R = rois.shape[0]
    ft = np.float64 if x.dtype == np.float64 else np.float32
    y = np.zeros((R, Ch, PH, PW), np.float64)
    am = np.full((R, Ch, PH, PW), -1.0)
    for r in range(R):
        n = min(max(int(rois[r, 0]), 0), N - 1)
        x1, y1, x2, y2 = (int(_c_round(float(ft(rois[r, k]) * ft(scale)))) for k in range(1, 5))
        bh = ft(max(y2 - y1 + 1, 1)) / ft(PH)
        bw = ft(max(x2 - x1 + 1, 1)) / ft(PW)
        for ph in range(PH):
            hs = min(max(math.floor(ft(ph) * bh) + y1, 0), H)
            he = min(max(math.ceil(ft(ph + 1) * bh) + y1, 0), H)
            for pw in range(PW):
                ws = min(max(math.floor(ft(pw) * bw) + x1, 0), W)
                we = min(max(math.ceil(ft(pw + 1) * bw) + x1, 0), W)
                if he <= hs or we <= ws:
                    continue
                win = x[n, :, hs:he, ws:we].reshape(Ch, -1)
                k = win.argmax(axis=1)
                y[r, :, ph, pw] = win[np.arange(Ch), k]
                wh = we - ws
                am[r, :, ph, pw] = (hs + k // wh) * W + ws + k % wh
    return y.astype(x.dtype), am.astype(x.dtype)


@simple("_backward_ROIPooling", fusion="complex", differentiable=False,
        params=ROIPooling.params)
class BackwardROIPooling(OpDef):
    def arguments(self, a):
        return ["ograd", "rois", "maxidx", "data"]

    def infer_shape(self, a, s):
        return s, [s[3]]

    def lower(self, ctx):
        dy, rois, amax, _x = ctx.inputs
        dx = ctx.outputs[0]
        N, Ch, H, W = dx.shape
        R, _, PH, PW = dy.shape
        if dx.size == 0:
            return
        dt = _acc(dx.dtype)
        _zero(ctx, dx, "roi_pool_grad")
        if dy.size == 0:
            return
        flat = dx.reshape((N, Ch, H * W))

        # one task per channel: every region's bins add to that channel only
        def build(b, c):
            with b.loop(R, hint="r") as r:
                n = b.let(_batch_index(rois, r, N, dt), "n")
                with b.loop(PH * PW, hint="p") as p:
                    ph, pw = p // _i(PW), p % _i(PW)
                    k = b.let(_to_int(K.cast(dt, amax[r, c, ph, pw])), "k")
                    with b.when(k.ge(_i(0))):
                        b.add_to(flat, (n, c, K.minimum(k, _i(H * W - 1))),
                                 K.cast(dt, dy[r, c, ph, pw]))

        _emit(ctx, Ch, build, "roi_pool_grad", dy.size * 2)


# =============================================================================================
# _contrib_ROIAlign
# =============================================================================================
def _ps_channels(a, Ch: int, PH: int, PW: int, op: str) -> int:
    """Output channels: C, or C / (PH*PW) for position-sensitive pooling."""
    if not a.position_sensitive:
        return Ch
    if Ch % (PH * PW):
        raise ShapeError(f"{op}: position_sensitive needs data channels ({Ch}) divisible by "
                         f"pooled_size product ({PH * PW})")
    return Ch // (PH * PW)


def _align_region(b: _Body, a, rois, r, PH: int, PW: int, dt: str) -> dict:
    """Locals describing region ``r``: raw batch index, start, bin size, sample grid."""
    sc = C(a.spatial_scale, dt)
    off = C(0.5 if a.aligned else 0.0, dt)
    v = {"n": b.let(_to_int(K.cast(dt, rois[r, 0])), "n")}
    x1, y1, x2, y2 = (K.cast(dt, rois[r, k]) * sc - off for k in range(1, 5))
    v["y0"], v["x0"] = b.let(y1, "y0"), b.let(x1, "x0")
    rh, rw = y2 - v["y0"], x2 - v["x0"]
    if not a.aligned:   # malformed regions are forced to 1x1
        rh, rw = K.maximum(rh, C(1.0, dt)), K.maximum(rw, C(1.0, dt))
    v["bh"] = b.let(rh / C(float(PH), dt), "bh")
    v["bw"] = b.let(rw / C(float(PW), dt), "bw")
    if a.sample_ratio > 0:
        v["gh"] = v["gw"] = _i(a.sample_ratio)
    else:
        v["gh"] = b.let(_to_int(_ceil(v["bh"])), "gh")
        v["gw"] = b.let(_to_int(_ceil(v["bw"])), "gw")
    # an empty aligned region samples nothing; dividing by 1 keeps its bins 0, not NaN
    v["count"] = b.let(K.cast(dt, K.maximum(v["gh"] * v["gw"], _i(1))), "cnt")
    return v


def _align_taps(b: _Body, y, x, H: int, W: int, dt: str):
    """MXNet's bilinear_interpolate: (valid, [(h, w, weight)] x 4) at (y, x)."""
    one, zero = C(1.0, dt), C(0.0, dt)
    valid = b.let(~(y.lt(C(-1.0, dt)) | y.gt(C(float(H), dt)) | x.lt(C(-1.0, dt))
                    | x.gt(C(float(W), dt))), "ok")
    taps = []
    for p, n in ((y, H), (x, W)):
        p = K.maximum(p, zero)
        lo = _clamp(_to_int(p), 0, n - 1)
        at_end = lo.ge(_i(n - 1))
        hi = b.let(K.select(at_end, _i(n - 1), lo + 1), "hi")
        lo = b.let(lo, "lo")
        frac = b.let(K.select(at_end, zero, p - K.cast(dt, lo)), "fr")
        taps.append((lo, hi, one - frac, frac))
    (yl, yh, hy, ly), (xl, xh, hx, lx) = taps
    return valid, [(yl, xl, hy * hx), (yl, xh, hy * lx), (yh, xl, ly * hx), (yh, xh, ly * lx)]


def _align_bins(b: _Body, v: dict, ph, pw, dt: str, visit) -> None:
    """Loop over the samples of bin (ph, pw); ``visit(y, x)`` emits each sample's work."""
    with b.loop(v["gh"], hint="iy") as iy:
        y = b.let(v["y0"] + K.cast(dt, ph) * v["bh"]
                  + (K.cast(dt, iy) + C(0.5, dt)) * v["bh"] / K.cast(dt, v["gh"]), "sy")
        with b.loop(v["gw"], hint="ix") as ix:
            x = b.let(v["x0"] + K.cast(dt, pw) * v["bw"]
                      + (K.cast(dt, ix) + C(0.5, dt)) * v["bw"] / K.cast(dt, v["gw"]), "sx")
            visit(y, x)


_ALIGN_PARAMS = ParamSpec(pooled_size=Param(parse_shape), spatial_scale=Param(parse_float),
                          sample_ratio=Param(parse_int, -1),
                          position_sensitive=Param(parse_bool, False),
                          aligned=Param(parse_bool, False))


@simple("_contrib_ROIAlign", fusion="complex", params=_ALIGN_PARAMS)
class ROIAlign(OpDef):
    def arguments(self, a):
        return ["data", "rois"]

    def infer_shape(self, a, s):
        _roi_shapes(self.name, s)
        PH, PW = _pooled(a, self.name)
        if s[0] is None or s[1] is None:
            return s, [None]
        co = _ps_channels(a, s[0][1], PH, PW, self.name)
        return s, [(s[1][0], co, PH, PW)]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        a = ctx.attrs
        x, rois = ctx.inputs
        y = ctx.outputs[0]
        N, _Ch, H, W = x.shape
        PH, PW = _pooled(a, self.name)
        Co = y.shape[1]
        dt = _acc(x.dtype)
        if y.size == 0:
            return
        if x.size == 0:
            raise ShapeError(f"_contrib_ROIAlign '{ctx.node.name}': data {x.shape} is empty")

        def build(b, task):
            r, c = task // _i(Co), task % _i(Co)
            v = _align_region(b, a, rois, r, PH, PW, dt)
            n = b.let(K.minimum(v["n"], _i(N - 1)), "nb")
            with b.loop(PH, hint="ph") as ph, b.loop(PW, hint="pw") as pw:
                cu = c * (PH * PW) + ph * PW + pw if a.position_sensitive else c
                acc = b.let(C(0.0, dt), "acc")

                def visit(yy, xx):
                    ok, taps = _align_taps(b, yy, xx, H, W, dt)
                    val = None
                    for hh, ww, wt in taps:
                        t = wt * K.cast(dt, x[n, cu, hh, ww])
                        val = t if val is None else val + t
                    b.set(acc, acc + K.select(ok, val, C(0.0, dt)))

                _align_bins(b, v, ph, pw, dt, visit)
                out = K.select(v["n"].lt(_i(0)), C(0.0, dt), acc / v["count"])
                b.store(y, (r, c, ph, pw), out)

        _emit(ctx, rois.shape[0] * Co, build, "roi_align", y.size * 16)

    def reference(self, a, inputs, is_train=False):
        return [roi_align_reference(a, *inputs)]

    def gradient(self, node, ograds):
        dx = g("_backward_ROIAlign", ograds[0], node.inputs[1], node.inputs[0],
               name=f"{node.name}_backward", **dict(node.parsed))
        return [dx, None]


def _np_bilinear(y, x, H, W):
    """numpy mirror of MXNet's bilinear_interpolate: list of (h, w, weight)."""
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return []
    taps = []
    for p, n in ((max(y, 0.0), H), (max(x, 0.0), W)):
        lo = int(p)
        if lo >= n - 1:
            taps.append((n - 1, n - 1, 1.0, 0.0))
        else:
            taps.append((lo, lo + 1, 1.0 - (p - lo), p - lo))
    (yl, yh, hy, ly), (xl, xh, hx, lx) = taps
    return [(yl, xl, hy * hx), (yl, xh, hy * lx), (yh, xl, ly * hx), (yh, xh, ly * lx)]


def roi_align_reference(a, x, rois):
    """MXNet's ROIAlign as plain loops (float64)."""
    N, Ch, H, W = x.shape
    PH, PW = tuple(a.pooled_size)
    Co = Ch // (PH * PW) if a.position_sensitive else Ch
    R = rois.shape[0]
    out = np.zeros((R, Co, PH, PW))
    off = 0.5 if a.aligned else 0.0
    for r in range(R):
        n = int(rois[r, 0])
        if n < 0:
            continue
        n = min(n, N - 1)
        x1, y1, x2, y2 = (float(rois[r, k]) * a.spatial_scale - off for k in range(1, 5))
        rh, rw = y2 - y1, x2 - x1
        if not a.aligned:
            rh, rw = max(rh, 1.0), max(rw, 1.0)
        bh, bw = rh / PH, rw / PW
        gh = a.sample_ratio if a.sample_ratio > 0 else math.ceil(bh)
        gw = a.sample_ratio if a.sample_ratio > 0 else math.ceil(bw)
        count = max(gh * gw, 1)
        for c, ph, pw in itertools.product(range(Co), range(PH), range(PW)):
            cu = c * PH * PW + ph * PW + pw if a.position_sensitive else c
            s = 0.0
            for iy, ix in itertools.product(range(max(gh, 0)), range(max(gw, 0))):
                yy = y1 + ph * bh + (iy + 0.5) * bh / gh
                xx = x1 + pw * bw + (ix + 0.5) * bw / gw
                s += sum(wt * float(x[n, cu, hh, ww]) for hh, ww, wt in _np_bilinear(yy, xx, H, W))
            out[r, c, ph, pw] = s / count
    return out.astype(x.dtype)


@simple("_backward_ROIAlign", fusion="complex", differentiable=False, params=_ALIGN_PARAMS)
class BackwardROIAlign(OpDef):
    def arguments(self, a):
        return ["ograd", "rois", "data"]

    def infer_shape(self, a, s):
        return s, [s[2]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, rois, _x = ctx.inputs
        dx = ctx.outputs[0]
        N, _Ch, H, W = dx.shape
        R, Co, PH, PW = dy.shape
        dt = _acc(dx.dtype)
        if dx.size == 0:
            return
        _zero(ctx, dx, "roi_align_grad")
        if dy.size == 0:
            return

        # one task per output channel: the data channels it reads are its own
        def build(b, c):
            with b.loop(R, hint="r") as r:
                v = _align_region(b, a, rois, r, PH, PW, dt)
                with b.when(v["n"].ge(_i(0))):
                    n = b.let(K.minimum(v["n"], _i(N - 1)), "nb")
                    with b.loop(PH, hint="ph") as ph, b.loop(PW, hint="pw") as pw:
                        cu = c * (PH * PW) + ph * PW + pw if a.position_sensitive else c
                        gv = b.let(K.cast(dt, dy[r, c, ph, pw]) / v["count"], "g")

                        def visit(yy, xx):
                            ok, taps = _align_taps(b, yy, xx, H, W, dt)
                            with b.when(ok):
                                for hh, ww, wt in taps:
                                    b.add_to(dx, (n, cu, hh, ww), wt * gv)

                        _align_bins(b, v, ph, pw, dt, visit)

        _emit(ctx, Co, build, "roi_align_grad", dy.size * 32)


# =============================================================================================
# GridGenerator, BilinearSampler, SpatialTransformer
# =============================================================================================
def _target(a, op: str) -> tuple:
    t = tuple(a.target_shape)
    if len(t) != 2 or any(v is None or v < 1 for v in t):
        raise OpError(f"{op}: target_shape must be two positive ints (h, w) for an affine "
                      f"transform, got {a.target_shape}")
    return t


def _norm_step(n: int) -> float:
    """Spacing of the normalised target grid over [-1, 1] (a single point sits at -1)."""
    return 2.0 / (n - 1) if n > 1 else 0.0


def _affine_grid(theta: K.TensorRef, n, k, h, w, H: int, W: int, dt: str) -> K.Expr:
    """Source coordinate k (0: x, 1: y) of target pixel (h, w): row k of theta @ (x, y, 1)."""
    xs = C(-1.0, dt) + K.cast(dt, w) * C(_norm_step(W), dt)
    ys = C(-1.0, dt) + K.cast(dt, h) * C(_norm_step(H), dt)
    row = k * 3
    return (K.cast(dt, theta[n, row]) * xs + K.cast(dt, theta[n, row + 1]) * ys
            + K.cast(dt, theta[n, row + 2]))


@simple("GridGenerator", fusion="complex", params=ParamSpec(
    transform_type=Param(enum("affine", "warp")), target_shape=Param(parse_shape, (0, 0))))
class GridGenerator(OpDef):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if a.transform_type == "affine":
            if len(d) != 2 or d[1] != 6:
                raise ShapeError(f"GridGenerator: affine data must be (batch, 6), got {tuple(d)}")
            return s, [(d[0], 2) + _target(a, self.name)]
        if len(d) != 4 or d[1] != 2:
            raise ShapeError(f"GridGenerator: warp data must be (batch, 2, h, w), got {tuple(d)}")
        return s, [tuple(d)]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        a = ctx.attrs
        x, y = ctx.inputs[0], ctx.outputs[0]
        if y.size == 0:
            return
        H, W = y.shape[2:]
        dt = _acc(x.dtype)
        if a.transform_type == "affine":
            ctx.compute(y, lambda n, k, h, w: K.select(
                k.eq(_i(0)), _affine_grid(x, n, 0, h, w, H, W, dt),
                _affine_grid(x, n, 1, h, w, H, W, dt)), "affine_grid")
            return
        # warp: pixel + flow, normalised to [-1, 1]
        rx, ry = C((W - 1) / 2.0, dt), C((H - 1) / 2.0, dt)

        def body(n, k, h, w):
            pos = K.select(k.eq(_i(0)), K.cast(dt, w), K.cast(dt, h))
            return (K.cast(dt, x[n, k, h, w]) + pos) / K.select(k.eq(_i(0)), rx, ry) \
                - C(1.0, dt)

        ctx.compute(y, body, "warp_grid")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0].astype(np.float64)
        if a.transform_type == "affine":
            H, W = _target(a, self.name)
            xs = -1.0 + np.arange(W) * _norm_step(W)
            ys = -1.0 + np.arange(H) * _norm_step(H)
            gy, gx = np.meshgrid(ys, xs, indexing="ij")
            dst = np.stack([gx.ravel(), gy.ravel(), np.ones(H * W)])
            out = (x.reshape(-1, 2, 3) @ dst).reshape(-1, 2, H, W)
        else:
            H, W = x.shape[2:]
            gy, gx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
            out = np.stack([(x[:, 0] + gx) / ((W - 1) / 2.0) - 1,
                            (x[:, 1] + gy) / ((H - 1) / 2.0) - 1], axis=1)
        return [out.astype(inputs[0].dtype)]

    def gradient(self, node, ograds):
        return [g("_backward_GridGenerator", ograds[0], node.inputs[0],
                  name=f"{node.name}_backward", **dict(node.parsed))]


@simple("_backward_GridGenerator", fusion="complex", differentiable=False,
        params=GridGenerator.params)
class BackwardGridGenerator(OpDef):
    def arguments(self, a):
        return ["ograd", "data"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, _x = ctx.inputs
        dx = ctx.outputs[0]
        if dx.size == 0:
            return
        H, W = dy.shape[2:]
        dt = _acc(dx.dtype)
        if a.transform_type == "warp":
            rx, ry = C((W - 1) / 2.0, dt), C((H - 1) / 2.0, dt)
            ctx.compute(dx, lambda n, k, h, w: K.cast(dt, dy[n, k, h, w])
                        / K.select(k.eq(_i(0)), rx, ry), "warp_grid_grad")
            return

        # d theta[n, 3k + j] = sum over target pixels of dy[n, k] * (x, y, 1)[j]
        def body(n, e):
            k, j = e // _i(3), e % _i(3)
            rh, rw = K.reduce_axis(H, "h"), K.reduce_axis(W, "w")
            xs = C(-1.0, dt) + K.cast(dt, rw.var) * C(_norm_step(W), dt)
            ys = C(-1.0, dt) + K.cast(dt, rh.var) * C(_norm_step(H), dt)
            basis = K.select(j.eq(_i(0)), xs, K.select(j.eq(_i(1)), ys, C(1.0, dt)))
            return K.reduce("sum", K.cast(dt, dy[n, k, rh.var, rw.var]) * basis, [rh, rw])

        ctx.compute(dx, body, "affine_grid_grad")


def _sampler_taps(grid: K.TensorRef, n, h, w, H: int, W: int, dt: str):
    """Corner (y, x), fractional weights and in-range flags of the 2x2 taps that a grid
    point samples (MXNet's BilinearSampler: taps outside the image read 0)."""
    xr = (K.cast(dt, grid[n, 0, h, w]) + C(1.0, dt)) * C((W - 1) / 2.0, dt)
    yr = (K.cast(dt, grid[n, 1, h, w]) + C(1.0, dt)) * C((H - 1) / 2.0, dt)
    fx, fy = _floor(xr), _floor(yr)
    x0, y0 = _to_int(fx), _to_int(fy)
    wx = C(1.0, dt) - (xr - fx)     # weight of the left column
    wy = C(1.0, dt) - (yr - fy)     # weight of the top row
    return x0, y0, wx, wy


def _tap(ref, n, c, yy, xx, H: int, W: int, dt: str):
    inside = yy.ge(_i(0)) & yy.lt(_i(H)) & xx.ge(_i(0)) & xx.lt(_i(W))
    v = K.cast(dt, ref[n, c, _clamp(yy, 0, H - 1), _clamp(xx, 0, W - 1)])
    return inside, K.select(inside, v, C(0.0, dt))


def _sample(x: K.TensorRef, grid: K.TensorRef, n, c, h, w, dt: str) -> K.Expr:
    H, W = x.shape[2:]
    x0, y0, wx, wy = _sampler_taps(grid, n, h, w, H, W, dt)
    one = C(1.0, dt)
    tl = _tap(x, n, c, y0, x0, H, W, dt)[1]
    tr = _tap(x, n, c, y0, x0 + 1, H, W, dt)[1]
    bl = _tap(x, n, c, y0 + 1, x0, H, W, dt)[1]
    br = _tap(x, n, c, y0 + 1, x0 + 1, H, W, dt)[1]
    return wy * (wx * tl + (one - wx) * tr) + (one - wy) * (wx * bl + (one - wx) * br)


def sampler_reference(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """MXNet's BilinearSampler as loops over output pixels (float64)."""
    N, Ch, H, W = x.shape
    OH, OW = grid.shape[2:]
    out = np.zeros((N, Ch, OH, OW))
    xd = x.astype(np.float64)
    for n, h, w in itertools.product(range(N), range(OH), range(OW)):
        xr = (float(grid[n, 0, h, w]) + 1) * (W - 1) / 2
        yr = (float(grid[n, 1, h, w]) + 1) * (H - 1) / 2
        x0, y0 = math.floor(xr), math.floor(yr)
        wx, wy = 1 - (xr - x0), 1 - (yr - y0)
        for yy, xx, wt in ((y0, x0, wy * wx), (y0, x0 + 1, wy * (1 - wx)),
                           (y0 + 1, x0, (1 - wy) * wx), (y0 + 1, x0 + 1, (1 - wy) * (1 - wx))):
            if 0 <= yy < H and 0 <= xx < W:
                out[n, :, h, w] += wt * xd[n, :, yy, xx]
    return out.astype(x.dtype)


def _sampler_shapes(op: str, d, gshape):
    if d is not None:
        _nd(op, d, 4)
    if gshape is not None and (len(gshape) != 4 or gshape[1] != 2):
        raise ShapeError(f"{op}: grid must be (batch, 2, h, w), got {tuple(gshape)}")
    if d is not None and gshape is not None and d[0] != gshape[0]:
        raise ShapeError(f"{op}: data {tuple(d)} and grid {tuple(gshape)} differ in batch size")


@simple("BilinearSampler", fusion="complex",
        params=ParamSpec(cudnn_off=Param(optional(parse_bool), None)))
class BilinearSampler(OpDef):
    def arguments(self, a):
        return ["data", "grid"]

    def infer_shape(self, a, s):
        _sampler_shapes(self.name, s[0], s[1])
        if s[0] is None or s[1] is None:
            return s, [None]
        return s, [tuple(s[0][:2]) + tuple(s[1][2:])]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        x, grid = ctx.inputs
        y = ctx.outputs[0]
        if y.size == 0:
            return
        if x.shape[2] == 0 or x.shape[3] == 0:
            ctx.compute(y, lambda *i: C(0, y.dtype), "sampler_empty")
            return
        dt = _acc(x.dtype)
        ctx.compute(y, lambda n, c, h, w: _sample(x, grid, n, c, h, w, dt), "bilinear_sampler")

    def reference(self, a, inputs, is_train=False):
        return [sampler_reference(*inputs)]

    def gradient(self, node, ograds):
        dd, dg = outputs_of("_backward_BilinearSampler", ograds[0], node.inputs[0],
                            node.inputs[1], n=2, name=f"{node.name}_backward")
        return [dd, dg]


def sampler_backward(ctx, dy, x, grid, dx, dgrid) -> None:
    """Gradients of the bilinear sampler: data (scattered per image plane) and grid
    (per output pixel, summed over channels)."""
    N, Ch, H, W = x.shape
    OH, OW = dy.shape[2:]
    dt = _acc(x.dtype)
    one = C(1.0, dt)
    if dgrid is not None and dgrid.size:
        def gbody(n, k, h, w):
            x0, y0, wx, wy = _sampler_taps(grid, n, h, w, H, W, dt)
            rc = K.reduce_axis(Ch, "c")
            c = rc.var
            tl = _tap(x, n, c, y0, x0, H, W, dt)[1]
            tr = _tap(x, n, c, y0, x0 + 1, H, W, dt)[1]
            bl = _tap(x, n, c, y0 + 1, x0, H, W, dt)[1]
            br = _tap(x, n, c, y0 + 1, x0 + 1, H, W, dt)[1]
            cross = tl - tr - bl + br
            g_ = K.cast(dt, dy[n, c, h, w])
            # d out / d y_real and d out / d x_real, scaled by d real / d grid
            d_y = -(tr - br + cross * wx)
            d_x = -(bl - br + cross * wy)
            dxy = K.select(k.eq(_i(0)), d_x * C((W - 1) / 2.0, dt), d_y * C((H - 1) / 2.0, dt))
            return K.reduce("sum", g_ * dxy, [rc])

        if Ch:
            ctx.compute(dgrid, gbody, "sampler_grid_grad")
        else:
            _zero(ctx, dgrid, "sampler_grid_grad")
    if dx is None or dx.size == 0:
        return
    _zero(ctx, dx, "sampler_data_grad")

    def build(b, task):
        n, c = task // _i(Ch), task % _i(Ch)
        with b.loop(OH * OW, hint="p") as p:
            h, w = p // _i(OW), p % _i(OW)
            x0, y0, wx, wy = _sampler_taps(grid, n, h, w, H, W, dt)
            x0, y0, wx, wy = (b.let(e, "s") for e in (x0, y0, wx, wy))
            gv = b.let(K.cast(dt, dy[n, c, h, w]), "g")
            for yy, xx, wt in ((y0, x0, wy * wx), (y0, x0 + 1, wy * (one - wx)),
                               (y0 + 1, x0, (one - wy) * wx),
                               (y0 + 1, x0 + 1, (one - wy) * (one - wx))):
                inside = yy.ge(_i(0)) & yy.lt(_i(H)) & xx.ge(_i(0)) & xx.lt(_i(W))
                with b.when(inside):
                    b.add_to(dx, (n, c, _clamp(yy, 0, H - 1), _clamp(xx, 0, W - 1)), wt * gv)

    _emit(ctx, N * Ch, build, "sampler_data_grad", N * Ch * OH * OW * 8)


@simple("_backward_BilinearSampler", fusion="complex", differentiable=False,
        params=BilinearSampler.params)
class BackwardBilinearSampler(OpDef):
    def arguments(self, a):
        return ["ograd", "data", "grid"]

    def outputs(self, a):
        return ["data_grad", "grid_grad"]

    def infer_shape(self, a, s):
        return s, [s[1], s[2]]

    def lower(self, ctx):
        dy, x, grid = ctx.inputs
        dx, dgrid = ctx.outputs
        if x.shape[2] == 0 or x.shape[3] == 0:
            _zero(ctx, dx, "sampler_grad")
            _zero(ctx, dgrid, "sampler_grad")
            return
        sampler_backward(ctx, dy, x, grid, dx, dgrid)


@simple("SpatialTransformer", fusion="complex", params=ParamSpec(
    target_shape=Param(parse_shape, (0, 0)), transform_type=Param(enum("affine")),
    sampler_type=Param(enum("bilinear")), cudnn_off=Param(optional(parse_bool), None)))
class SpatialTransformer(OpDef):
    def arguments(self, a):
        return ["data", "loc"]

    def infer_shape(self, a, s):
        d, loc = s
        if d is not None:
            _nd(self.name, d, 4)
        if loc is not None and (len(loc) != 2 or loc[1] != 6):
            raise ShapeError(f"SpatialTransformer: loc must be (batch, 6), got {tuple(loc)}")
        if d is not None and loc is not None and d[0] != loc[0]:
            raise ShapeError(f"SpatialTransformer: data {tuple(d)} and loc {tuple(loc)} differ "
                             f"in batch size")
        if d is None:
            return s, [None]
        return s, [tuple(d[:2]) + _target(a, self.name)]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        x, loc = ctx.inputs
        y = ctx.outputs[0]
        if y.size == 0:
            return
        N, _Ch, H, W = x.shape
        OH, OW = y.shape[2:]
        if H == 0 or W == 0:
            ctx.compute(y, lambda *i: C(0, y.dtype), "sampler_empty")
            return
        dt = _acc(x.dtype)
        grid = ctx.temp((N, 2, OH, OW), dt)
        ctx.compute(grid, lambda n, k, h, w: K.select(
            k.eq(_i(0)), _affine_grid(loc, n, 0, h, w, OH, OW, dt),
            _affine_grid(loc, n, 1, h, w, OH, OW, dt)), "affine_grid")
        ctx.compute(y, lambda n, c, h, w: _sample(x, grid, n, c, h, w, dt), "bilinear_sampler")

    def reference(self, a, inputs, is_train=False):
        x, loc = inputs
        gen = GridGenerator.params.parse("GridGenerator", {
            "transform_type": "affine", "target_shape": tuple(a.target_shape)})
        grid = GridGenerator().reference(gen, [loc.astype(np.float64)])[0]
        return [sampler_reference(x, grid)]

    def gradient(self, node, ograds):
        x, loc = node.inputs
        ts = tuple(node.parsed.target_shape)
        grid = g("GridGenerator", loc, transform_type="affine", target_shape=ts,
                 name=f"{node.name}_grid")
        dd, dg = outputs_of("_backward_BilinearSampler", ograds[0], x, grid, n=2,
                            name=f"{node.name}_sampler_backward")
        dloc = g("_backward_GridGenerator", dg, loc, transform_type="affine", target_shape=ts,
                 name=f"{node.name}_grid_backward")
        return [dd, dloc]


# =============================================================================================
# boxes: _contrib_box_iou, _contrib_MultiBoxPrior, _contrib_box_nms
# =============================================================================================
_BOX_FORMAT = enum("corner", "center")


def _intersect_1d(a1, a2, b1, b2, fmt: str, dt: str) -> K.Expr:
    """Overlap of two intervals (corner: [lo, hi]; center: (center, extent)), clipped at 0."""
    if fmt == "center":
        half = C(0.5, dt)
        a1, a2 = a1 - a2 * half, a1 + a2 * half
        b1, b2 = b1 - b2 * half, b1 + b2 * half
    w = K.minimum(a2, b2) - K.maximum(a1, b1)
    return K.select(w.gt(C(0.0, dt)), w, C(0.0, dt))


def _area(box, fmt: str, dt: str) -> K.Expr:
    w, h = (box[2] - box[0], box[3] - box[1]) if fmt == "corner" else (box[2], box[3])
    neg = w.lt(C(0.0, dt)) | h.lt(C(0.0, dt))
    return K.select(neg, C(0.0, dt), w * h)


def _overlap(ba, bb, fmt: str, dt: str):
    """(intersection, union) of two boxes given as 4 coordinate expressions each."""
    inter = _intersect_1d(ba[0], ba[2], bb[0], bb[2], fmt, dt) \
        * _intersect_1d(ba[1], ba[3], bb[1], bb[3], fmt, dt)
    return inter, _area(ba, fmt, dt) + _area(bb, fmt, dt) - inter


def _np_intersect(a1, a2, b1, b2, fmt):
    if fmt == "center":
        a1, a2, b1, b2 = a1 - a2 / 2, a1 + a2 / 2, b1 - b2 / 2, b1 + b2 / 2
    w = min(a2, b2) - max(a1, b1)
    return w if w > 0 else 0.0


def _np_area(b, fmt):
    w, h = (b[2] - b[0], b[3] - b[1]) if fmt == "corner" else (b[2], b[3])
    return 0.0 if (w < 0 or h < 0) else w * h


def _np_overlap(a, b, fmt):
    inter = _np_intersect(a[0], a[2], b[0], b[2], fmt) * _np_intersect(a[1], a[3], b[1], b[3], fmt)
    return inter, _np_area(a, fmt) + _np_area(b, fmt) - inter


@simple("_contrib_box_iou", fusion="complex", params=ParamSpec(format=Param(_BOX_FORMAT, "corner")))
class BoxIoU(OpDef):
    def arguments(self, a):
        return ["lhs", "rhs"]

    def infer_shape(self, a, s):
        for name, sh in zip(("lhs", "rhs"), s):
            if sh is not None and (len(sh) < 2 or sh[-1] != 4):
                raise ShapeError(f"_contrib_box_iou: {name} must have >= 2 dims with last dim 4, "
                                 f"got {tuple(sh)}")
        if s[0] is None or s[1] is None:
            return s, [None]
        return s, [tuple(s[0][:-1]) + tuple(s[1][:-1])]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        a = ctx.attrs
        lhs, rhs = ctx.inputs
        y = ctx.outputs[0]
        if y.size == 0:
            return
        L, R = lhs.size // 4, rhs.size // 4
        lv, rv = lhs.reshape((L, 4)), rhs.reshape((R, 4))
        dt = _acc(y.dtype)

        def body(i, j):
            ba = [K.cast(dt, lv[i, k]) for k in range(4)]
            bb = [K.cast(dt, rv[j, k]) for k in range(4)]
            inter, union = _overlap(ba, bb, a.format, dt)
            return K.select(inter.gt(C(0.0, dt)), inter / union, C(0.0, dt))

        ctx.compute(y.reshape((L, R)), body, "box_iou")

    def reference(self, a, inputs, is_train=False):
        lhs, rhs = inputs
        lv, rv = lhs.reshape(-1, 4).astype(np.float64), rhs.reshape(-1, 4).astype(np.float64)
        out = np.zeros((len(lv), len(rv)))
        for i, j in itertools.product(range(len(lv)), range(len(rv))):
            inter, union = _np_overlap(lv[i], rv[j], a.format)
            out[i, j] = inter / union if inter > 0 else 0.0
        return [out.reshape(lhs.shape[:-1] + rhs.shape[:-1]).astype(lhs.dtype)]

    def gradient(self, node, ograds):
        return [None, None]     # MXNet's backward is zero for both boxes


# ---------------------------------------------------------------------------------------------
def _prior_table(a, H: int, W: int) -> list:
    """Half width and half height of each anchor at a location, MXNet's order: every size
    with the first ratio, then every further ratio with the first size (float32 math)."""
    f = np.float32
    sizes, ratios = list(a.sizes), list(a.ratios)
    if not sizes or not ratios:
        raise OpError("_contrib_MultiBoxPrior: sizes and ratios must not be empty")
    out = []
    pairs = [(s, ratios[0]) for s in sizes] + [(sizes[0], r) for r in ratios[1:]]
    for s, r in pairs:
        sr = np.sqrt(f(r))
        out.append((float(f(s) * f(H) / f(W) * sr / f(2)), float(f(s) / sr / f(2))))
    return out


def _prior_steps(a, H: int, W: int) -> tuple:
    st, of = tuple(a.steps), tuple(a.offsets)
    if len(st) != 2 or len(of) != 2:
        raise OpError(f"_contrib_MultiBoxPrior: steps and offsets need 2 values, got {st}, {of}")
    sy = st[0] if st[0] > 0 else 1.0 / H
    sx = st[1] if st[1] > 0 else 1.0 / W
    return float(np.float32(sy)), float(np.float32(sx)), of[0], of[1]


@simple("_contrib_MultiBoxPrior", fusion="complex", params=ParamSpec(
    sizes=Param(parse_float_tuple, (1.0,)), ratios=Param(parse_float_tuple, (1.0,)),
    clip=Param(parse_bool, False), steps=Param(parse_float_tuple, (-1.0, -1.0)),
    offsets=Param(parse_float_tuple, (0.5, 0.5))))
class MultiBoxPrior(OpDef):
    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None]
        if len(d) != 4:
            raise ShapeError(f"_contrib_MultiBoxPrior: data must be 4-D (N, C, H, W), got "
                             f"{tuple(d)}")
        A = len(a.sizes) + len(a.ratios) - 1
        return s, [(1, d[2] * d[3] * A, 4)]

    def lower(self, ctx):
        a = ctx.attrs
        x, y = ctx.inputs[0], ctx.outputs[0]
        if y.size == 0:
            return
        H, W = x.shape[2:]
        table = _prior_table(a, H, W)
        A = len(table)
        sy, sx, oy, ox = _prior_steps(a, H, W)
        dt = "float32"

        def pick(aidx, k):
            e = C(table[-1][k], dt)
            for j in range(A - 2, -1, -1):
                e = K.select(aidx.eq(_i(j)), C(table[j][k], dt), e)
            return e

        def body(_z, p, j):
            loc, aidx = p // _i(A), p % _i(A)
            cy = (K.cast(dt, loc // _i(W)) + C(oy, dt)) * C(sy, dt)
            cx = (K.cast(dt, loc % _i(W)) + C(ox, dt)) * C(sx, dt)
            hw, hh = pick(aidx, 0), pick(aidx, 1)
            v = K.select(j.eq(_i(0)), cx - hw, K.select(j.eq(_i(1)), cy - hh, K.select(
                j.eq(_i(2)), cx + hw, cy + hh)))
            if a.clip:
                v = K.minimum(K.maximum(v, C(0.0, dt)), C(1.0, dt))
            return v

        ctx.compute(y, body, "multibox_prior")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        H, W = x.shape[2:]
        table = _prior_table(a, H, W)
        sy, sx, oy, ox = _prior_steps(a, H, W)
        f = np.float32
        rows = []
        for r, c in itertools.product(range(H), range(W)):
            cy, cx = (f(r) + f(oy)) * f(sy), (f(c) + f(ox)) * f(sx)
            for hw, hh in table:
                rows.append([cx - f(hw), cy - f(hh), cx + f(hw), cy + f(hh)])
        out = np.array(rows, np.float32).reshape(1, -1, 4)
        if a.clip:
            out = np.clip(out, 0, 1)
        return [out.astype(x.dtype)]

    def gradient(self, node, ograds):
        return [None]   # anchors depend only on the data's shape


# ---------------------------------------------------------------------------------------------
_NMS_PARAMS = ParamSpec(
    overlap_thresh=Param(parse_float, 0.5), valid_thresh=Param(parse_float, 0.0),
    topk=Param(parse_int, -1), coord_start=Param(parse_int, 2), score_index=Param(parse_int, 1),
    id_index=Param(parse_int, -1), background_id=Param(parse_int, -1),
    force_suppress=Param(parse_bool, False), in_format=Param(_BOX_FORMAT, "corner"),
    out_format=Param(_BOX_FORMAT, "corner"))


def _nms_check(a, shape, op: str) -> tuple:
    """(batch, boxes, width) of the input, after MXNet's index checks."""
    if len(shape) < 2:
        raise ShapeError(f"{op}: input must have >= 2 dims (..., num_box, box_width), got "
                         f"{tuple(shape)}")
    width = shape[-1]
    need = 6 if a.id_index > 0 else 5
    if width < need:
        raise ShapeError(f"{op}: the last dimension must have at least {need} elements, got "
                         f"{width}")
    cs, ce = a.coord_start, a.coord_start + 3
    if not 0 <= a.score_index < width:
        raise OpError(f"{op}: score_index {a.score_index} is out of range [0, {width})")
    if cs <= a.score_index <= ce:
        raise OpError(f"{op}: score_index {a.score_index} overlaps coordinates [{cs}, {ce}]")
    if cs < 0 or ce >= width:
        raise OpError(f"{op}: coordinates [{cs}, {ce}] are out of range [0, {width})")
    if a.id_index >= 0:
        if a.id_index >= width:
            raise OpError(f"{op}: id_index {a.id_index} is out of range [0, {width})")
        if cs <= a.id_index <= ce or a.id_index == a.score_index:
            raise OpError(f"{op}: id_index {a.id_index} overlaps the score or coordinates")
    return math.prod(shape[:-2]), shape[-2], width


def _convert(vals: list, cs: int, src: str, dst: str, dt: str) -> list:
    """Coordinates of a kept row in ``dst`` format; as MXNet, rows whose first coordinate is
    negative are left as they are."""
    if src == dst:
        return vals
    a1, a2, a3, a4 = vals[cs:cs + 4]
    half = C(0.5, dt)
    if dst == "center":
        new = [(a1 + a3) * half, (a2 + a4) * half, a3 - a1, a4 - a2]
    else:
        new = [a1 - a3 * half, a2 - a4 * half, a1 + a3 * half, a2 + a4 * half]
    skip = a1.lt(C(0.0, dt))
    out = list(vals)
    for k in range(4):
        out[cs + k] = K.select(skip, vals[cs + k], new[k])
    return out


@simple("_contrib_box_nms", aliases=("_contrib_box_non_maximum_suppression",),
        fusion="complex", params=_NMS_PARAMS)
class BoxNMS(OpDef):
    def outputs(self, a):
        return ["output", "temp"]

    def num_visible_outputs(self, a):
        return 1

    def infer_shape(self, a, s):
        d = s[0]
        if d is None:
            return s, [None, None]
        _nms_check(a, d, self.name)
        return s, [tuple(d), tuple(d[:-1]) + (1,)]

    def infer_type(self, a, t):
        _need_float(self.name, t[0])
        return [t[0]], [t[0], t[0]]

    def lower(self, ctx):
        a = ctx.attrs
        x = ctx.inputs[0]
        y, rec = ctx.outputs
        B, n, width = _nms_check(a, x.shape, self.name)
        if y.size == 0:
            return
        xv, yv, rv = x.reshape((B, n, width)), y.reshape((B, n, width)), rec.reshape((B, n))
        dt = _acc(x.dtype)
        if a.topk == 0:     # MXNet: no candidates, the input passes through
            ctx.compute(yv, lambda *i: xv[i], "nms_copy")
            ctx.compute(rv, lambda b, i: K.cast(rv.dtype, b * n + i), "nms_record")
            return
        order = ctx.temp((B, n), I64)
        keep = ctx.temp((B, n), I64)
        cs = a.coord_start

        def col(b, row, k):
            return K.cast(dt, xv[b, row, k])

        def valid(b, i):
            ok = col(b, i, a.score_index).gt(C(a.valid_thresh, dt))
            if a.id_index >= 0 and a.background_id >= 0:
                ok = ok & col(b, i, a.id_index).ne(C(float(a.background_id), dt))
            return ok

        def build(bd, b):
            # 1. rank of every valid box: descending score, ties in index order (stable sort)
            nvalid = bd.let(_i(0), "nv")
            with bd.loop(n, hint="i") as i, bd.when(valid(b, i)):
                si = bd.let(col(b, i, a.score_index), "si")
                rank = bd.let(_i(0), "rk")
                with bd.loop(n, hint="j") as j:
                    sj = col(b, j, a.score_index)
                    before = sj.gt(si) | (sj.eq(si) & j.lt(i))
                    with bd.when(valid(b, j) & before):
                        bd.set(rank, rank + 1)
                bd.store(order, (b, K.minimum(rank, _i(n - 1))), i)
                bd.set(nvalid, nvalid + 1)
            kk = bd.let(K.minimum(nvalid, _i(a.topk)) if a.topk > 0 else nvalid, "k")
            with bd.loop(kk, hint="i") as i:
                bd.store(keep, (b, i), _i(1))
            # 2. greedy suppression in score order
            with bd.loop(kk, hint="ref") as ref, bd.when(keep[b, ref].ne(_i(0))):
                ri = bd.let(_clamp(order[b, ref], 0, n - 1), "ri")
                box_r = [bd.let(col(b, ri, cs + k), "br") for k in range(4)]
                with bd.loop(kk - ref - 1, ref + 1, "pos") as pos:
                    pi = _clamp(order[b, pos], 0, n - 1)
                    cond = keep[b, pos].ne(_i(0))
                    if a.id_index >= 0 and not a.force_suppress:
                        cond = cond & (_to_int(col(b, ri, a.id_index))
                                       .eq(_to_int(col(b, pi, a.id_index))))
                    with bd.when(cond):
                        box_p = [col(b, pi, cs + k) for k in range(4)]
                        inter, union = _overlap(box_r, box_p, a.in_format, dt)
                        safe = K.select(union.gt(C(0.0, dt)), union, C(1.0, dt))
                        hit = union.gt(C(0.0, dt)) & (inter / safe).gt(
                            C(a.overlap_thresh, dt))
                        with bd.when(hit):
                            bd.store(keep, (b, pos), _i(0))
            # 3. kept boxes first, in score order; the rest of the rows are -1
            with bd.loop(n, hint="i") as i:
                for k in range(width):
                    bd.store(yv, (b, i, k), C(-1.0, dt))
                bd.store(rv, (b, i), C(-1.0, dt))
            count = bd.let(_i(0), "cnt")
            with bd.loop(kk, hint="i") as i, bd.when(keep[b, i].ne(_i(0))):
                src = bd.let(_clamp(order[b, i], 0, n - 1), "src")
                vals = [bd.let(col(b, src, k), "c") for k in range(width)]
                vals = _convert(vals, cs, a.in_format, a.out_format, dt)
                dst = K.minimum(count, _i(n - 1))
                for k in range(width):
                    bd.store(yv, (b, dst, k), vals[k])
                bd.store(rv, (b, dst), K.cast(dt, src))
                bd.set(count, count + 1)

        _emit(ctx, B, build, "box_nms", B * n * n * 8)

    def reference(self, a, inputs, is_train=False):
        return list(nms_reference(a, inputs[0]))

    def gradient(self, node, ograds):
        return [g("_backward_contrib_box_nms", ograds[0], Entry(node, 1), node.inputs[0],
                  name=f"{node.name}_backward", **dict(node.parsed))]


def nms_reference(a, x: np.ndarray):
    """MXNet's box_nms as loops: filter, stable sort by score, greedy suppression."""
    B, n, width = _nms_check(a, x.shape, "_contrib_box_nms")
    xv = x.reshape(B, n, width).astype(np.float64)
    out = np.full((B, n, width), -1.0)
    rec = np.full((B, n), -1.0)
    if a.topk == 0:
        return x.copy(), np.arange(B * n, dtype=np.float64).reshape(x.shape[:-1] + (1,)) \
            .astype(x.dtype)
    cs = a.coord_start
    for b in range(B):
        rows = xv[b]
        cand = [i for i in range(n) if rows[i, a.score_index] > a.valid_thresh and not (
            a.id_index >= 0 and a.background_id >= 0
            and rows[i, a.id_index] == a.background_id)]
        cand.sort(key=lambda i: -rows[i, a.score_index])    # stable
        if a.topk > 0:
            cand = cand[:a.topk]
        keep = [True] * len(cand)
        for r in range(len(cand)):
            if not keep[r]:
                continue
            for p in range(r + 1, len(cand)):
                if not keep[p]:
                    continue
                br, bp = rows[cand[r]], rows[cand[p]]
                if a.id_index >= 0 and not a.force_suppress and \
                        int(br[a.id_index]) != int(bp[a.id_index]):
                    continue
                inter, union = _np_overlap(br[cs:cs + 4], bp[cs:cs + 4], a.in_format)
                if union > 0 and inter / union > a.overlap_thresh:
                    keep[p] = False
        kept = [i for i, k in zip(cand, keep) if k]
        for d, i in enumerate(kept):
            row = rows[i].copy()
            if a.in_format != a.out_format and row[cs] >= 0:
                a1, a2, a3, a4 = row[cs:cs + 4]
                if a.out_format == "center":
                    row[cs:cs + 4] = [(a1 + a3) / 2, (a2 + a4) / 2, a3 - a1, a4 - a2]
                else:
                    row[cs:cs + 4] = [a1 - a3 / 2, a2 - a4 / 2, a1 + a3 / 2, a2 + a4 / 2]
            out[b, d] = row
            rec[b, d] = i
    return out.reshape(x.shape).astype(x.dtype), rec.reshape(x.shape[:-1] + (1,)).astype(x.dtype)


@simple("_backward_contrib_box_nms", fusion="complex", differentiable=False, params=_NMS_PARAMS)
class BackwardBoxNMS(OpDef):
    def arguments(self, a):
        return ["ograd", "record", "data"]

    def infer_shape(self, a, s):
        return s, [s[2]]

    def lower(self, ctx):
        a = ctx.attrs
        dy, rec, _x = ctx.inputs
        dx = ctx.outputs[0]
        B, n, width = _nms_check(a, dx.shape, self.name)
        if dx.size == 0:
            return
        dyv, rv, dxv = dy.reshape((B, n, width)), rec.reshape((B, n)), dx.reshape((B, n, width))
        _zero(ctx, dx, "box_nms_grad")
        dt = _acc(dx.dtype)

        # each kept output row sends its gradient back to the input row it came from
        def build(bd, b):
            with bd.loop(n, hint="k") as k:
                src = bd.let(_to_int(K.cast(dt, rv[b, k])), "src")
                with bd.when(src.ge(_i(0))):
                    for j in range(width):
                        bd.store(dxv, (b, K.minimum(src, _i(n - 1)), j), dyv[b, k, j])

        _emit(ctx, B, build, "box_nms_grad", dx.size)
