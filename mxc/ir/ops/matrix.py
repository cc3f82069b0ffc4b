"""Matrix products: dot, batch_dot, linalg_gemm2 and FullyConnected; khatri_rao
(``contrib/krprod.cc``) and _contrib_div_sqrt_dim (``contrib/transformer.cc``).

Every product, forward and backward, is one or a few calls of the GEMM template
(``ctx.gemm``) on strided 2-D/3-D views of the operands: transposes are strides, never copies.
Gradients are separate single-output nodes (``_backward_<op>`` with ``index`` naming the input
whose gradient they compute), so gradients nobody asked for are never built or run.
"""
from __future__ import annotations

import math

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..params import Param, ParamSpec, enum, optional, parse_bool, parse_float, parse_int
from ..registry import OpDef, simple
from .common import g

C = K.const


def _prod(s) -> int:
    return math.prod(int(d) for d in s)


def _view(ref: K.TensorRef, shape, strides=None, offset: int = 0) -> K.TensorRef:
    """A view of ``ref``'s buffer; ``offset`` is added to the ref's own offset."""
    return K.TensorRef(ref.buf, tuple(int(d) for d in shape),
                       None if strides is None else tuple(int(s) for s in strides),
                       ref.offset + int(offset))


def fill_zero(ctx, ref: K.TensorRef, name: str = "zero") -> None:
    if ref.size == 0:
        return
    flat = _view(ref, (ref.size,))
    ctx.compute(flat, lambda i: C(0, ref.dtype), name)


def matmul(ctx, a: K.TensorRef, b: K.TensorRef, c: K.TensorRef, *, trans_a: bool = False,
           trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0, bias=None,
           bias_axis=None, epilogue: tuple = (), residual=None) -> None:
    """``ctx.gemm`` with the degenerate cases handled (empty output, empty contraction)."""
    if c.size == 0:
        return
    kdim = a.shape[-2] if trans_a else a.shape[-1]
    if kdim == 0 and epilogue:
        raise OpError("matmul: a fused epilogue needs a non-empty contraction")
    if kdim == 0:   # C = beta*C (+ bias): the product is zero
        if beta == 0.0 and bias is None:
            fill_zero(ctx, c)
            return
        if beta == 1.0 and bias is None:
            return   # accumulation of nothing

        def value(*i):
            # beta == 0 never reads C (it may hold anything, as for the template)
            v = c[i] * K.const(beta, c.dtype) if beta != 0.0 else K.const(0, c.dtype)
            if bias is not None:
                v = v + bias[i[-2] if bias_axis == "m" else i[-1]]
            return v
        ctx.compute(c, value, "gemm_empty_k")
        return
    ctx.gemm(a, b, c, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, bias=bias,
             bias_axis=bias_axis, epilogue=epilogue, residual=residual)


_GEMM_TYPES = ("float32", "float64")


def in_gemm_types(ctx, body) -> None:
    """Run ``body(inputs, outputs)``; float16/bfloat16 tensors are staged through float32
    temps (the GEMM template computes in float32/float64 only; MXNet's CPU half-precision
    products also accumulate in float32)."""
    refs = list(ctx.inputs) + list(ctx.outputs)
    if all(r.dtype.name in _GEMM_TYPES or r.dtype.kind != "f" for r in refs):
        body(list(ctx.inputs), list(ctx.outputs))
        return
    ins = []
    for r in ctx.inputs:
        if r.dtype.kind == "f" and r.dtype.name not in _GEMM_TYPES:
            t = ctx.temp(r.shape, "float32")
            if r.size:
                ctx.copy(t, r)
            r = t
        ins.append(r)
    outs = [ctx.temp(r.shape, "float32") if r.dtype.name not in _GEMM_TYPES else r
            for r in ctx.outputs]
    body(ins, outs)
    for o, t in zip(ctx.outputs, outs):
        if o is not t and o.size:
            ctx.copy(o, t)


def _float_check(op: str, dtypes) -> None:
    for t in dtypes:
        if t is not None and t not in ("float32", "float64", "float16"):
            raise OpError(f"{op}: only floating-point inputs are supported, got {t}")


# ---------------------------------------------------------------------------------------------
# dot
# ---------------------------------------------------------------------------------------------
_DOT_PARAMS = {"transpose_a": Param(parse_bool, False), "transpose_b": Param(parse_bool, False),
                   "forward_stype": Param(optional(enum("default", "row_sparse", "csr")), None)}


def _dot_mats(lshape, rshape, ta: bool, tb: bool):
    """MXNet's 2-D views of dot's operands: (ma, na), (mb, nb), out (m, n)."""
    lsize, rsize = _prod(lshape), _prod(rshape)
    if ta:
        ma = lshape[0]
        na = lsize // ma if ma else _prod(lshape[1:])
        m = na
    else:
        na = lshape[-1]
        ma = lsize // na if na else _prod(lshape[:-1])
        m = ma
    if tb:
        nb = rshape[-1]
        mb = rsize // nb if nb else _prod(rshape[:-1])
        n = mb
    else:
        mb = rshape[0]
        nb = rsize // mb if mb else _prod(rshape[1:])
        n = nb
    return (ma, na), (mb, nb), (m, n)


def _dot_out_shape(l, r, ta: bool, tb: bool, op: str = "dot") -> tuple:
    if len(l) == 0 or len(r) == 0:
        raise ShapeError(f"{op}: scalar (0-d) inputs are not supported, got {l} and {r}")
    if len(l) == 1 and len(r) == 1:
        if ta or tb:
            raise ShapeError(f"{op}: cannot transpose 1-D vectors")
        if l[0] != r[0]:
            raise ShapeError(f"{op} shape error: {l} X {r}")
        return (1,)
    if ta:
        L = [(l[0],), tuple(l[1:]) if len(l) > 1 else (1,)]
    else:
        L = [tuple(l[:-1]) if len(l) > 1 else (1,), (l[-1],)]
    if tb:
        R = [tuple(r[:-1]) if len(r) > 1 else (1,), (r[-1],)]
    else:
        R = [(r[0],), tuple(r[1:]) if len(r) > 1 else (1,)]
    kl, kr = _prod(L[int(not ta)]), _prod(R[int(tb)])
    if kl != kr:
        raise ShapeError(f"{op} shape error: {tuple(l)} X {tuple(r)} (transpose_a={ta}, "
                         f"transpose_b={tb}): contracted sizes {kl} and {kr} differ")
    out = []
    if len(l) > 1:
        out += list(L[int(ta)])
    if len(r) > 1:
        out += list(R[int(not tb)])
    return tuple(out)


def _np_dot(a, lhs, rhs):
    ta, tb = a.transpose_a, a.transpose_b
    out_shape = _dot_out_shape(lhs.shape, rhs.shape, ta, tb)
    (ma, na), (mb, nb), _ = _dot_mats(lhs.shape, rhs.shape, ta, tb)
    A = lhs.astype(np.float64).reshape(ma, na)
    B = rhs.astype(np.float64).reshape(mb, nb)
    r = (A.T if ta else A) @ (B.T if tb else B)
    return r.reshape(out_shape).astype(lhs.dtype)


@simple("dot", fusion="complex", params=ParamSpec(**_DOT_PARAMS))
class Dot(OpDef):
    def arguments(self, a):
        return ["lhs", "rhs"]

    def infer_shape(self, a, s):
        l, r = s
        if l is None or r is None:
            return s, [None]
        return s, [_dot_out_shape(tuple(l), tuple(r), a.transpose_a, a.transpose_b)]

    def infer_type(self, a, t):
        _float_check("dot", t)
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        in_gemm_types(ctx, lambda ins, outs: self._lower(ctx, ins, outs))

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        lhs, rhs = ins
        out = outs[0]
        (ma, na), (mb, nb), (m, n) = _dot_mats(lhs.shape, rhs.shape, a.transpose_a,
                                               a.transpose_b)
        matmul(ctx, _view(lhs, (ma, na)), _view(rhs, (mb, nb)), _view(out, (m, n)),
               trans_a=a.transpose_a, trans_b=a.transpose_b)

    def reference(self, a, inputs, is_train=False):
        return [_np_dot(a, inputs[0], inputs[1])]

    def flops(self, a, in_shapes, out_shapes):
        (ma, na), _, (m, n) = _dot_mats(in_shapes[0], in_shapes[1], a.transpose_a,
                                        a.transpose_b)
        k = ma if a.transpose_a else na
        return 2 * m * n * k

    def gradient(self, node, ograds):
        a = node.parsed
        l, r = node.inputs
        kw = {"transpose_a": a.transpose_a, "transpose_b": a.transpose_b}
        return [g("_backward_dot", ograds[0], l, r, index=0, name=f"{node.name}_backward_lhs",
                  **kw),
                g("_backward_dot", ograds[0], l, r, index=1, name=f"{node.name}_backward_rhs",
                  **kw)]


def _mm_grads(ctx, index: int, dy, A, B, dX, ta: bool, tb: bool, alpha: float = 1.0):
    """Gradient of C = alpha * op(A) @ op(B) w.r.t. A (index 0) or B (index 1), as one GEMM
    on 2-D or 3-D views. ``dX`` has A's (index 0) or B's (index 1) view shape."""
    if index == 0:
        if not ta and not tb:      # dA = dY B^T
            matmul(ctx, dy, B, dX, trans_b=True, alpha=alpha)
        elif not ta and tb:        # dA = dY B
            matmul(ctx, dy, B, dX, alpha=alpha)
        elif ta and not tb:        # dA = B dY^T
            matmul(ctx, B, dy, dX, trans_b=True, alpha=alpha)
        else:                      # dA = B^T dY^T
            matmul(ctx, B, dy, dX, trans_a=True, trans_b=True, alpha=alpha)
    else:
        if not ta and not tb:      # dB = A^T dY
            matmul(ctx, A, dy, dX, trans_a=True, alpha=alpha)
        elif not ta and tb:        # dB = dY^T A
            matmul(ctx, dy, A, dX, trans_a=True, alpha=alpha)
        elif ta and not tb:        # dB = A dY
            matmul(ctx, A, dy, dX, alpha=alpha)
        else:                      # dB = dY^T A^T
            matmul(ctx, dy, A, dX, trans_a=True, trans_b=True, alpha=alpha)


@simple("_backward_dot", fusion="complex", differentiable=False,
        params=ParamSpec(index=Param(parse_int), **_DOT_PARAMS))
class BackwardDot(OpDef):
    def arguments(self, a):
        return ["ograd", "lhs", "rhs"]

    def infer_shape(self, a, s):
        return s, [s[1 + a.index]]

    def infer_type(self, a, t):
        k = next((x for x in t if x is not None), None)
        return [k] * 3, [k]

    def lower(self, ctx):
        in_gemm_types(ctx, lambda ins, outs: self._lower(ctx, ins, outs))

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        dy, lhs, rhs = ins
        dx = outs[0]
        ta, tb = a.transpose_a, a.transpose_b
        (ma, na), (mb, nb), (m, n) = _dot_mats(lhs.shape, rhs.shape, ta, tb)
        A, B = _view(lhs, (ma, na)), _view(rhs, (mb, nb))
        dX = _view(dx, (ma, na) if a.index == 0 else (mb, nb))
        _mm_grads(ctx, a.index, _view(dy, (m, n)), A, B, dX, ta, tb)


# ---------------------------------------------------------------------------------------------
# batch_dot and linalg_gemm2
# ---------------------------------------------------------------------------------------------
def _bmm_shape(l, r, ta, tb, op: str, min_ndim: int) -> tuple:
    if len(l) < min_ndim or len(r) < min_ndim or len(l) != len(r):
        raise ShapeError(f"{op}: inputs must be N-d arrays of the same rank N >= {min_ndim}, "
                         f"got {tuple(l)} and {tuple(r)}")
    if tuple(l[:-2]) != tuple(r[:-2]):
        raise ShapeError(f"{op} shape error (the leading batch dimensions must be equal): "
                         f"{tuple(l)} X {tuple(r)}")
    m = l[-1] if ta else l[-2]
    kl = l[-2] if ta else l[-1]
    n = r[-2] if tb else r[-1]
    kr = r[-1] if tb else r[-2]
    if kl != kr:
        raise ShapeError(f"{op} shape error (shape mismatch): {tuple(l)} X {tuple(r)} "
                         f"transpose_a={ta} transpose_b={tb}")
    return tuple(l[:-2]) + (m, n)


def _as3(ref: K.TensorRef) -> K.TensorRef:
    s = ref.shape
    return _view(ref, (_prod(s[:-2]), s[-2], s[-1]))


def _np_bmm(lhs, rhs, ta, tb, alpha=1.0):
    A = lhs.astype(np.float64)
    B = rhs.astype(np.float64)
    if ta:
        A = np.swapaxes(A, -1, -2)
    if tb:
        B = np.swapaxes(B, -1, -2)
    return (alpha * np.matmul(A, B)).astype(lhs.dtype)


_BMM_PARAMS = {"transpose_a": Param(parse_bool, False), "transpose_b": Param(parse_bool, False),
                   "forward_stype": Param(optional(enum("default", "row_sparse", "csr")), None)}


@simple("batch_dot", fusion="complex", params=ParamSpec(**_BMM_PARAMS))
class BatchDot(OpDef):
    min_ndim = 3

    def arguments(self, a):
        return ["lhs", "rhs"]

    def _alpha(self, a) -> float:
        return 1.0

    def infer_shape(self, a, s):
        l, r = s
        if l is None or r is None:
            return s, [None]
        return s, [_bmm_shape(l, r, a.transpose_a, a.transpose_b, self.name, self.min_ndim)]

    def infer_type(self, a, t):
        _float_check(self.name, t)
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        in_gemm_types(ctx, lambda ins, outs: self._lower(ctx, ins, outs))

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        lhs, rhs = ins
        matmul(ctx, _as3(lhs), _as3(rhs), _as3(outs[0]), trans_a=a.transpose_a,
               trans_b=a.transpose_b, alpha=self._alpha(a))

    def reference(self, a, inputs, is_train=False):
        return [_np_bmm(inputs[0], inputs[1], a.transpose_a, a.transpose_b, self._alpha(a))]

    def flops(self, a, in_shapes, out_shapes):
        l = in_shapes[0]
        k = l[-2] if a.transpose_a else l[-1]
        return 2 * _prod(out_shapes[0]) * k

    def gradient(self, node, ograds):
        a = node.parsed
        l, r = node.inputs
        kw = {"transpose_a": a.transpose_a, "transpose_b": a.transpose_b, "alpha": self._alpha(a)}
        return [g("_backward_batch_dot", ograds[0], l, r, index=i,
                  name=f"{node.name}_backward_{'lhs' if i == 0 else 'rhs'}", **kw)
                for i in (0, 1)]


@simple("linalg_gemm2", aliases=("_linalg_gemm2",), fusion="complex",
        params=ParamSpec(transpose_a=Param(parse_bool, False),
                         transpose_b=Param(parse_bool, False),
                         alpha=Param(parse_float, 1.0), axis=Param(parse_int, -2)))
class LinalgGemm2(BatchDot):
    min_ndim = 2

    def arguments(self, a):
        return ["A", "B"]

    def _alpha(self, a) -> float:
        return a.alpha

    def infer_shape(self, a, s):
        if a.axis != -2:
            raise OpError(f"linalg_gemm2: only axis=-2 is supported, got axis={a.axis}")
        return BatchDot.infer_shape(self, a, s)


@simple("_backward_batch_dot", fusion="complex", differentiable=False,
        params=ParamSpec(index=Param(parse_int), transpose_a=Param(parse_bool, False),
                         transpose_b=Param(parse_bool, False), alpha=Param(parse_float, 1.0)))
class BackwardBatchDot(OpDef):
    def arguments(self, a):
        return ["ograd", "lhs", "rhs"]

    def infer_shape(self, a, s):
        return s, [s[1 + a.index]]

    def infer_type(self, a, t):
        k = next((x for x in t if x is not None), None)
        return [k] * 3, [k]

    def lower(self, ctx):
        in_gemm_types(ctx, lambda ins, outs: self._lower(ctx, ins, outs))

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        dy, lhs, rhs = ins
        _mm_grads(ctx, a.index, _as3(dy), _as3(lhs), _as3(rhs), _as3(outs[0]),
                  a.transpose_a, a.transpose_b, a.alpha)


# ---------------------------------------------------------------------------------------------
# FullyConnected
# ---------------------------------------------------------------------------------------------
_FC_PARAMS = {"num_hidden": Param(parse_int), "no_bias": Param(parse_bool, False),
                  "flatten": Param(parse_bool, True)}


def _fc_dims(a, dshape) -> tuple:
    """(rows, in_features) of FullyConnected's 2-D view of data."""
    if a.flatten:
        return (dshape[0] if len(dshape) else 1), _prod(dshape[1:])
    return _prod(dshape[:-1]), (dshape[-1] if len(dshape) else 1)


def _fc_out(a, dshape) -> tuple:
    if a.flatten:
        return (dshape[0] if len(dshape) else 1, a.num_hidden)
    return tuple(dshape[:-1]) + (a.num_hidden,)


@simple("FullyConnected", fusion="complex", params=ParamSpec(**_FC_PARAMS))
class FullyConnected(OpDef):
    def arguments(self, a):
        return ["data", "weight"] + ([] if a.no_bias else ["bias"])

    def infer_shape(self, a, s):
        if a.num_hidden < 1:
            raise OpError(f"FullyConnected: num_hidden must be >= 1, got {a.num_hidden}")
        s = list(s)
        d = s[0]
        wexp = bexp = None
        if d is not None:
            if len(d) == 0:
                raise ShapeError("FullyConnected: data must have at least 1 dimension")
            _, k = _fc_dims(a, d)
            wexp = (a.num_hidden, k)
        bexp = (a.num_hidden,)
        w = s[1]
        if w is not None and wexp is not None and tuple(w) != wexp:
            raise ShapeError(f"FullyConnected: weight shape {tuple(w)} does not match data "
                             f"{tuple(d)}: expected {wexp} (num_hidden={a.num_hidden}, "
                             f"flatten={a.flatten})")
        if w is not None and (len(w) != 2 or w[0] != a.num_hidden):
            raise ShapeError(f"FullyConnected: weight must be (num_hidden={a.num_hidden}, "
                             f"in_features), got {tuple(w)}")
        s[1] = wexp if wexp is not None else w
        if not a.no_bias:
            if s[2] is not None and tuple(s[2]) != bexp:
                raise ShapeError(f"FullyConnected: bias must be {bexp}, got {tuple(s[2])}")
            s[2] = bexp
        out = _fc_out(a, d) if d is not None else None
        return s, [out]

    def infer_type(self, a, t):
        _float_check("FullyConnected", t)
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        in_gemm_types(ctx, lambda ins, outs: self._lower(ctx, ins, outs))

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        x, w = ins[:2]
        b = None if a.no_bias else ins[2]
        rows, k = _fc_dims(a, x.shape)
        matmul(ctx, _view(x, (rows, k)), w, _view(outs[0], (rows, a.num_hidden)),
               trans_b=True, bias=b, bias_axis=None if b is None else "n")

    def reference(self, a, inputs, is_train=False):
        x, w = inputs[:2]
        rows, k = _fc_dims(a, x.shape)
        y = x.astype(np.float64).reshape(rows, k) @ w.astype(np.float64).T
        if not a.no_bias:
            y = y + inputs[2].astype(np.float64)
        return [y.reshape(_fc_out(a, x.shape)).astype(x.dtype)]

    def flops(self, a, in_shapes, out_shapes):
        rows, k = _fc_dims(a, in_shapes[0])
        return 2 * rows * k * a.num_hidden

    def gradient(self, node, ograds):
        a = node.parsed
        x, w = node.inputs[:2]
        kw = {"num_hidden": a.num_hidden, "no_bias": a.no_bias, "flatten": a.flatten}
        out = [g("_backward_FullyConnected", ograds[0], x, w, index=0,
                 name=f"{node.name}_backward_data", **kw),
               g("_backward_FullyConnected", ograds[0], x, w, index=1,
                 name=f"{node.name}_backward_weight", **kw)]
        if not a.no_bias:
            out.append(g("_backward_FullyConnected", ograds[0], x, w, index=2,
                         name=f"{node.name}_backward_bias", **kw))
        return out


class GemmBackward(OpDef):
    """One gradient (``index`` 0 data, 1 weight, 2 bias) of a GEMM-based layer (dense,
    convolution): inputs (ograd, data, weight); subclasses give the bias length and
    ``_lower(ctx, ins, outs)``."""

    def bias_len(self, a) -> int:
        raise NotImplementedError

    def arguments(self, a):
        return ["ograd", "data", "weight"]

    def infer_shape(self, a, s):
        if a.index == 2:
            return s, [(self.bias_len(a),)]
        return s, [s[1 + a.index]]

    def infer_type(self, a, t):
        k = next((x for x in t if x is not None), None)
        return [k] * 3, [k]

    def lower(self, ctx):
        in_gemm_types(ctx, lambda ins, outs: self._lower(ctx, ins, outs))


@simple("_backward_FullyConnected", fusion="complex", differentiable=False,
        params=ParamSpec(index=Param(parse_int), **_FC_PARAMS))
class BackwardFullyConnected(GemmBackward):
    def bias_len(self, a) -> int:
        return a.num_hidden

    def _lower(self, ctx, ins, outs):
        a = ctx.attrs
        dy, x, w = ins
        out = outs[0]
        rows, k = _fc_dims(a, x.shape)
        dy2 = _view(dy, (rows, a.num_hidden))
        if a.index == 0:      # dX = dY @ W
            matmul(ctx, dy2, w, _view(out, (rows, k)))
        elif a.index == 1:    # dW = dY^T @ X
            matmul(ctx, dy2, _view(x, (rows, k)), out, trans_a=True)
        else:                 # db = column sums of dY
            bias_grad_rows(ctx, dy2, out)


def bias_grad_rows(ctx, dy2: K.TensorRef, db: K.TensorRef) -> None:
    """db[h] = sum_r dy2[r, h] (a reduction kernel, vectorised along h)."""
    rows, _h = dy2.shape
    if rows == 0:
        fill_zero(ctx, db)
        return
    r = K.reduce_axis(rows, "r")
    ctx.compute(db, lambda j: K.reduce("sum", dy2[r.var, j], [r]), "bias_grad")


__all__ = ["BatchDot", "Dot", "FullyConnected", "LinalgGemm2", "bias_grad_rows", "fill_zero",
           "in_gemm_types", "matmul"]


# ---------------------------------------------------------------------------------------------
# khatri_rao (src/operator/contrib/krprod.cc) and _contrib_div_sqrt_dim (contrib/transformer.cc)
# ---------------------------------------------------------------------------------------------
def _krprod_shape(shapes) -> tuple:
    cols = None
    rows = 1
    for i, s in enumerate(shapes):
        if len(s) != 2:
            raise ShapeError(f"khatri_rao: every input must be a matrix, arg{i} has shape "
                             f"{tuple(s)}")
        if cols is None:
            cols = s[1]
        elif s[1] != cols:
            raise ShapeError(f"khatri_rao: all inputs must have the same number of columns, "
                             f"got {[tuple(x) for x in shapes]}")
        rows *= s[0]
    return (rows, cols)


@simple("khatri_rao", fusion="injective", differentiable=False,
        params=ParamSpec(num_args=Param(parse_int)))
class KhatriRao(OpDef):
    """Column-wise Khatri-Rao product: column k of the output is the Kronecker product of
    the inputs' columns k (rows ordered with the last input varying fastest)."""

    def arguments(self, a):
        if a.num_args < 1:
            raise OpError(f"khatri_rao: num_args must be at least 1, got {a.num_args}")
        return [f"arg{i}" for i in range(a.num_args)]

    def infer_shape(self, a, s):
        if any(x is None for x in s):
            return s, [None]
        return s, [_krprod_shape(s)]

    def infer_type(self, a, t):
        _float_check(self.name, t)
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        mats = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        cdt = "float32" if o.dtype.name == "float16" else o.dtype.name

        def f(row, col):
            # row = ((r0 * M1 + r1) * M2 + r2)...: peel the last input's row first
            rs = []
            rest = row
            for m in reversed(mats):
                n = C(int(m.shape[0]), "int64")
                rs.append(rest % n)
                rest = rest // n
            rs.reverse()
            acc = None
            for m, r in zip(mats, rs):
                v = K.cast(cdt, m[r, col])
                acc = v if acc is None else acc * v
            return K.cast(o.dtype, acc)
        ctx.compute(o, f, "khatri_rao")

    def reference(self, a, inputs, is_train=False):
        out = inputs[0]
        for m in inputs[1:]:
            out = (out[:, None, :] * m[None, :, :]).reshape(-1, m.shape[1])
        return [out.astype(inputs[0].dtype)]


@simple("_contrib_div_sqrt_dim", fusion="elementwise")
class DivSqrtDim(OpDef):
    """data / sqrt(data.shape[-1]) (the scaling of dot-product attention)."""

    def infer_type(self, a, t):
        _float_check(self.name, t)
        return OpDef.infer_type(self, a, t)

    def lower(self, ctx):
        x = ctx.inputs[0]
        o = ctx.outputs[0]
        if o.size == 0:
            return
        # MXNet divides by the root cast to the element type: DType(sqrt(double(dim)))
        scale = float(np.asarray(math.sqrt(x.shape[-1]), x.dtype.np)) if x.ndim else 1.0
        cdt = "float32" if o.dtype.name == "float16" else o.dtype.name
        xf = K.TensorRef(x.buf, (x.size,), (1,), x.offset)
        of = K.TensorRef(o.buf, (o.size,), (1,), o.offset)
        ctx.compute(of, lambda i: K.cast(o.dtype, K.cast(cdt, xf[i]) / C(scale, cdt)),
                    "div_sqrt_dim")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        return [(x / np.asarray(math.sqrt(x.shape[-1]), x.dtype)).astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("_contrib_div_sqrt_dim", ograds[0], name=f"{node.name}_backward")]
