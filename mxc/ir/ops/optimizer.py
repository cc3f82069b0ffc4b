"""MXNet's fused optimizer update operators (``src/operator/optimizer_op-inl.h``).

Each operator is **one generated kernel** that reads the weight, the gradient and the optimizer
states and writes the new weight (output ``out``) and the new states in a single pass over the
elements. Inputs are ``weight, grad, state...``; the states are *mutated inputs* (MXNet's
``FMutateInputs``), declared as auxiliary states, so they are written in place from the
lowering (as ``_backward_BatchNorm`` writes the moving statistics) and ``list_auxiliary_states``
lists them as MXNet does. The new weight is output 0; MXNet's Python optimizers call the ops with
``out=weight`` (input 0 may share storage with output 0: ``inplace = [(0, 0)]``).

In the kernel every new value of an element is computed from the *old* values first (into
scalar locals) and only then stored, so aliasing ``out`` with ``weight`` is safe.

Semantics follow MXNet 1.9.1's CPU kernels exactly:

* parameters are C ``float`` fields, cast to the weight's dtype (``static_cast<DType>``): a
  float64 update uses the float32-rounded ``lr``, ``wd``... (:func:`_f32`);
* ``clip_gradient < 0`` disables clipping (``>= 0`` clips, so 0 clips to 0); ``mshadow_op::clip``
  passes NaN through;
* where weight decay enters differs per op, exactly as in MXNet: SGD/momentum/NAG/Signum add
  ``wd*weight`` *after* rescaling and clipping the gradient; Adam, RMSProp and RMSPropAlex add it
  *before* clipping (``clip(rescale*grad + wd*weight)``); FTRL puts ``wd`` in the denominator;
  LAMB adds it to the normalised update; AdaGrad applies ``weight += (div + wd*weight) * -lr``
  (MXNet's dense Python path; MXNet's ``_sparse_adagrad_update`` kernel requires ``wd == 0``,
  where both agree);
* ``nag_mom_update`` updates the momentum with the weight decay of the *new* weight, which is what
  MXNet computes whenever ``out`` is ``weight`` (always, in its optimizers: the kernel writes
  ``out`` before it reads ``weight`` again) and what ``mp_nag_mom_update`` does in every case;
* ``signsgd_update`` ignores ``rescale_grad`` and ``clip_gradient`` (sign of the raw gradient);
* float16/bfloat16 compute in float32 and round on store; the ``mp_*`` variants keep float32
  master weights (and float32 momentum) as MXNet does.

``lazy_update`` (row_sparse gradients) is accepted and has no effect on dense arrays, as in
MXNet. Not provided: ``multi_sgd_*``/``preloaded_multi_sgd_*``/``multi_mp_sgd_*`` (MXNet's
aggregated variants of the same formulas), ``mp_lamb_update_phase1/2``, ``ftml_update``,
``_multi_adamw_update``/``adamw_update`` (contrib).
"""
from __future__ import annotations

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..dtypes import as_dtype
from ..params import Param, ParamSpec, parse_bool, parse_float, parse_int
from ..registry import OpDef, register

C = K.const

#: elements per task of an update kernel (the runtime splits tasks across threads)
CHUNK = 4096


def _f32(v: float) -> float:
    """A C ``float`` parameter field: the value rounded to float32."""
    return float(np.float32(v))


def _compute_dtype(d: str) -> str:
    return "float32" if d in ("float16", "bfloat16") else d


# ---------------------------------------------------------------------------------------------
# the fused kernel
# ---------------------------------------------------------------------------------------------
def _flat(ref: K.TensorRef) -> K.TensorRef:
    return K.TensorRef(ref.buf, (ref.size,), (1,), ref.offset)


def _loads(e: K.Expr, out: list, seen: set) -> None:
    if id(e) in seen:
        return
    seen.add(id(e))
    if isinstance(e, K.Load):
        out.append(e.buf)
    for c in K.children(e):
        _loads(c, out, seen)


def emit_fused(ctx, targets: list, body, name: str) -> None:
    """One kernel over ``n = targets[0].size`` elements: for every flat index ``i``,
    ``body(i)`` gives one value per target (expressions over loads at ``i``); all values are
    computed into locals before any of them is stored, so a target may alias an input."""
    flats = [_flat(t) for t in targets]
    n = flats[0].size
    for t in flats:
        if t.size != n:
            raise ShapeError(f"{name}: targets of {n} and {t.size} elements")
    task = K.index_var("task")
    if n == 0:
        kern = K.Kernel("__K__", [t.buf for t in flats], task, 0, [], note="empty")
        ctx.emit(kern)
        return
    j = K.index_var("j")
    n_tasks = -(-n // CHUNK)
    if n_tasks > 1:
        start = task * C(CHUNK, K.INDEX)
        extent = K.minimum(C(CHUNK, K.INDEX), C(n, K.INDEX) - start)
        i = start + j
    else:
        extent = C(n, K.INDEX)
        i = j
    values = body(i)
    if len(values) != len(flats):
        raise OpError(f"{name}: {len(values)} values for {len(flats)} targets")
    stmts: list = []
    locs = []
    bufs: list = []
    seen: set = set()
    weight = 0
    for k, (t, v) in enumerate(zip(flats, values)):
        v = K.cast(t.dtype, K.wrap(v, None))
        _loads(v, bufs, seen)
        loc = K.Local(f"%upd{k}", t.dtype)
        stmts.append(K.Assign(loc, v))
        locs.append(loc)
        weight += _op_count(v)
    for t, loc in zip(flats, locs):
        stmts.append(K.Store(t.buf, t.flat_index((i,)), loc))
    bufs = list(dict.fromkeys(bufs + [t.buf for t in flats]))
    loop = K.For(j, extent, stmts, "vector")
    kern = K.Kernel("__K__", bufs, task, n_tasks, [loop], cost=n * max(weight, 1), note=name)
    ctx.emit(kern)


def _op_count(e: K.Expr, memo: dict | None = None) -> int:
    memo = {} if memo is None else memo
    if id(e) in memo:
        return 0
    memo[id(e)] = True
    w = 20 if isinstance(e, K.Call) else 1
    return w + sum(_op_count(c, memo) for c in K.children(e))


# expression helpers (all operands in the compute dtype)
def _clip(x: K.Expr, bound: float) -> K.Expr:
    """mshadow_op::clip: bound if x > bound, -bound if x < -bound, else x (NaN passes)."""
    b = C(bound, x.dtype)
    nb = C(-bound, x.dtype)
    return K.select(x.gt(b), b, K.select(x.lt(nb), nb, x))


def _sign(x: K.Expr) -> K.Expr:
    z = C(0, x.dtype)
    return K.select(x.gt(z), C(1, x.dtype), K.select(x.lt(z), C(-1, x.dtype), z))


# numpy counterparts (float64)
def _np_clip(x, bound):
    return np.where(x > bound, bound, np.where(x < -bound, -bound, x))


def _np_sign(x):
    return (x > 0).astype(np.float64) - (x < 0).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------
def _common(**extra) -> ParamSpec:
    p = dict(lr=Param(parse_float), wd=Param(parse_float, 0.0),
             rescale_grad=Param(parse_float, 1.0), clip_gradient=Param(parse_float, -1.0))
    p.update(extra)
    return ParamSpec(**p)


class _Update(OpDef):
    """``out = new weight``; ``states`` (aux inputs) updated in place; one kernel.

    Subclasses give ``update(a, cd, w, g, *states) -> (out, [new state per state])`` over kernel
    expressions in the compute dtype ``cd`` (None = state unchanged) and ``np_update`` with the
    same signature over float64 numpy arrays (the reference).
    """

    fusion = "opaque"
    differentiable = False
    states: tuple = ()
    args: tuple = ("weight", "grad")
    #: inputs forced to float32 (the mp_* master weights and their states)
    fp32_inputs: tuple = ()

    def arguments(self, a):
        return list(self.args)

    def aux_names(self, a):
        return list(self.states)

    def inplace(self, a):
        return [(0, 0)]

    def infer_shape(self, a, s):
        known = [x for x in s if x is not None]
        if not known:
            return s, [None]
        s0 = tuple(known[0])
        for x in known[1:]:
            if tuple(x) != s0:
                raise ShapeError(f"{self.name}: weight, grad and states must have the same "
                                 f"shape, got {[None if x is None else tuple(x) for x in s]}")
        return [s0] * len(s), [s0]

    def infer_type(self, a, t):
        names = self.input_names(a)
        fp32 = [n in self.fp32_inputs for n in names]
        known = [x for x, f in zip(t, fp32) if x is not None and not f]
        d = known[0] if known else None
        for x, f, n in zip(t, fp32, names):
            if x is None:
                continue
            if f and x != "float32":
                raise OpError(f"{self.name}: input '{n}' must be float32, got {x}")
            if not f and x != d:
                raise OpError(f"{self.name}: weight, grad and states must have the same dtype, "
                              f"got {dict(zip(names, t))}")
        if d is not None and as_dtype(d).kind != "f":
            raise OpError(f"{self.name}: weight must be a floating-point array, got {d}")
        return [("float32" if f else d) for f in fp32], [d]

    def compute_dtype(self, ctx) -> str:
        if self.fp32_inputs:
            return "float32"
        return _compute_dtype(ctx.inputs[0].dtype.name)

    def lower(self, ctx):
        a = ctx.attrs
        ins = [_flat(r) for r in ctx.inputs]
        out = _flat(ctx.outputs[0])
        cd = self.compute_dtype(ctx)
        n = out.size
        n_args = len(self.args)
        mutated: list = []

        def body(i):
            vals = [K.cast(cd, r[i] if r.size == n else r[0]) for r in ins]
            new_w, new_states = self.update(a, cd, *vals)
            res = [new_w]
            mutated.clear()
            for k, v in enumerate(new_states):
                if v is not None:
                    res.append(v)
                    mutated.append(ins[n_args + k])
            return res

        # the state targets are only known after the body ran: compute once to find them
        body(K.index_var("probe"))
        targets = [out] + list(mutated)
        emit_fused(ctx, targets, body, self.name)

    def reference(self, a, inputs, is_train=False):
        xs = [np.asarray(x).astype(np.float64) for x in inputs]
        new_w, new_states = self.np_update(a, *xs)
        n_args = len(self.args)
        for k, v in enumerate(new_states):
            if v is not None:
                dst = inputs[n_args + k]
                dst[...] = np.asarray(v).astype(dst.dtype)
        return [np.asarray(new_w).astype(inputs[0].dtype)]

    # subclass hooks
    def update(self, a, cd, w, g, *states):  # pragma: no cover - abstract
        raise NotImplementedError

    def np_update(self, a, w, g, *states):  # pragma: no cover - abstract
        raise NotImplementedError


def _gc(a, cd, g, *, wd_w=None):
    """rescale_grad * grad (+ wd*weight) then clip when clip_gradient >= 0 (kernel)."""
    r = g * C(_f32(a.rescale_grad), cd)
    if wd_w is not None:
        r = r + wd_w
    if a.clip_gradient >= 0:
        r = _clip(r, _f32(a.clip_gradient))
    return r


def _np_gc(a, g, *, wd_w=None):
    r = g * _f32(a.rescale_grad)
    if wd_w is not None:
        r = r + wd_w
    if a.clip_gradient >= 0:
        r = _np_clip(r, _f32(a.clip_gradient))
    return r


def _reg(name: str, params: ParamSpec, aliases: tuple = ()):
    def deco(cls):
        cls.name = name
        cls.aliases = aliases
        cls.params = params
        return register(cls)
    return deco


# ---------------------------------------------------------------------------------------------
# SGD family
# ---------------------------------------------------------------------------------------------
@_reg("sgd_update", _common(lazy_update=Param(parse_bool, True)))
class SGDUpdate(_Update):
    """out = (1 - lr*wd)*weight - lr*clip(rescale_grad*grad)"""

    def update(self, a, cd, w, g):
        lr, wd = C(_f32(a.lr), cd), C(_f32(a.wd), cd)
        return (C(1, cd) - lr * wd) * w - lr * _gc(a, cd, g), []

    def np_update(self, a, w, g):
        lr, wd = _f32(a.lr), _f32(a.wd)
        return (1 - lr * wd) * w - lr * _np_gc(a, g), []


_MOM = dict(momentum=Param(parse_float, 0.0), lazy_update=Param(parse_bool, True))


@_reg("sgd_mom_update", _common(**_MOM))
class SGDMomUpdate(_Update):
    """mom = momentum*mom - lr*wd*weight - lr*clip(rescale_grad*grad); out = weight + mom"""

    states = ("mom",)

    def update(self, a, cd, w, g, mom):
        lr, wd, m = C(_f32(a.lr), cd), C(_f32(a.wd), cd), C(_f32(a.momentum), cd)
        mom_n = m * mom - lr * wd * w - lr * _gc(a, cd, g)
        return w + mom_n, [mom_n]

    def np_update(self, a, w, g, mom):
        lr, wd, m = _f32(a.lr), _f32(a.wd), _f32(a.momentum)
        mom_n = m * mom - lr * wd * w - lr * _np_gc(a, g)
        return w + mom_n, [mom_n]


@_reg("mp_sgd_update", _common(lazy_update=Param(parse_bool, True)))
class MPSGDUpdate(_Update):
    """sgd_update on a float32 master copy ``weight32`` (updated); out = weight32 cast."""

    states = ("weight32",)
    fp32_inputs = ("weight32",)

    def update(self, a, cd, w, g, w32):
        lr, wd = C(_f32(a.lr), cd), C(_f32(a.wd), cd)
        w_n = (C(1, cd) - lr * wd) * w32 - lr * _gc(a, cd, g)
        return w_n, [w_n]

    def np_update(self, a, w, g, w32):
        lr, wd = _f32(a.lr), _f32(a.wd)
        w_n = ((1 - lr * wd) * w32 - lr * _np_gc(a, g)).astype(np.float32)
        return w_n, [w_n]


@_reg("mp_sgd_mom_update", _common(**_MOM))
class MPSGDMomUpdate(_Update):
    """sgd_mom_update with float32 momentum and master weights ``weight32``."""

    states = ("mom", "weight32")
    fp32_inputs = ("mom", "weight32")

    def update(self, a, cd, w, g, mom, w32):
        lr, wd, m = C(_f32(a.lr), cd), C(_f32(a.wd), cd), C(_f32(a.momentum), cd)
        mom_n = m * mom - lr * wd * w32 - lr * _gc(a, cd, g)
        w_n = w32 + mom_n
        return w_n, [mom_n, w_n]

    def np_update(self, a, w, g, mom, w32):
        lr, wd, m = _f32(a.lr), _f32(a.wd), _f32(a.momentum)
        mom_n = (m * mom - lr * wd * w32 - lr * _np_gc(a, g)).astype(np.float32)
        w_n = (w32 + mom_n).astype(np.float32)
        return w_n, [mom_n, w_n]


_NAG = _common(momentum=Param(parse_float, 0.0))


def _nag(a, cd, w, g, mom):
    lr, wd, m = C(_f32(a.lr), cd), C(_f32(a.wd), cd), C(_f32(a.momentum), cd)
    gc = _gc(a, cd, g)
    mom1 = m * mom
    w_n = w - mom1 + (m + C(1, cd)) * (mom1 - lr * (gc + wd * w))
    mom_n = mom1 - lr * (gc + wd * w_n)
    return w_n, mom_n


def _np_nag(a, w, g, mom):
    lr, wd, m = _f32(a.lr), _f32(a.wd), _f32(a.momentum)
    gc = _np_gc(a, g)
    mom1 = m * mom
    w_n = w - mom1 + (m + 1) * (mom1 - lr * (gc + wd * w))
    mom_n = mom1 - lr * (gc + wd * w_n)
    return w_n, mom_n


@_reg("nag_mom_update", _NAG)
class NAGMomUpdate(_Update):
    """mom1 = momentum*mom; out = w - mom1 + (momentum+1)*(mom1 - lr*(clip(rg*grad) + wd*w));
    mom = mom1 - lr*(clip(rg*grad) + wd*out) (MXNet's in-place result, see the module doc)."""

    states = ("mom",)

    def update(self, a, cd, w, g, mom):
        w_n, mom_n = _nag(a, cd, w, g, mom)
        return w_n, [mom_n]

    def np_update(self, a, w, g, mom):
        w_n, mom_n = _np_nag(a, w, g, mom)
        return w_n, [mom_n]


@_reg("mp_nag_mom_update", _NAG)
class MPNAGMomUpdate(_Update):
    states = ("mom", "weight32")
    fp32_inputs = ("mom", "weight32")

    def update(self, a, cd, w, g, mom, w32):
        w_n, mom_n = _nag(a, cd, w32, g, mom)
        return w_n, [mom_n, w_n]

    def np_update(self, a, w, g, mom, w32):
        w_n, mom_n = _np_nag(a, w32, g, mom)
        w_n = w_n.astype(np.float32)
        return w_n, [mom_n.astype(np.float32), w_n]


# ---------------------------------------------------------------------------------------------
# sign-based
# ---------------------------------------------------------------------------------------------
@_reg("signsgd_update", _common())
class SignSGDUpdate(_Update):
    """out = (1 - lr*wd)*weight - lr*sign(grad)  (rescale_grad/clip_gradient have no effect)"""

    def update(self, a, cd, w, g):
        lr, wd = C(_f32(a.lr), cd), C(_f32(a.wd), cd)
        return (C(1, cd) - lr * wd) * w - lr * _sign(g), []

    def np_update(self, a, w, g):
        lr, wd = _f32(a.lr), _f32(a.wd)
        return (1 - lr * wd) * w - lr * _np_sign(g), []


@_reg("signum_update", _common(momentum=Param(parse_float, 0.0),
                               wd_lh=Param(parse_float, 0.0)))
class SignumUpdate(_Update):
    """mom = momentum*mom - (1-momentum)*(wd*weight + clip(rescale_grad*grad));
    out = (1 - lr*wd_lh)*weight + lr*sign(mom)"""

    states = ("mom",)

    def update(self, a, cd, w, g, mom):
        lr, wd, m = C(_f32(a.lr), cd), C(_f32(a.wd), cd), C(_f32(a.momentum), cd)
        wdlh = C(_f32(a.wd_lh), cd)
        om = C(1, cd) - m
        mom_n = m * mom - om * wd * w - om * _gc(a, cd, g)
        return (C(1, cd) - lr * wdlh) * w + lr * _sign(mom_n), [mom_n]

    def np_update(self, a, w, g, mom):
        lr, wd, m, wdlh = _f32(a.lr), _f32(a.wd), _f32(a.momentum), _f32(a.wd_lh)
        mom_n = m * mom - (1 - m) * wd * w - (1 - m) * _np_gc(a, g)
        return (1 - lr * wdlh) * w + lr * _np_sign(mom_n), [mom_n]


# ---------------------------------------------------------------------------------------------
# adaptive methods
# ---------------------------------------------------------------------------------------------
@_reg("adam_update", _common(beta1=Param(parse_float, 0.9), beta2=Param(parse_float, 0.999),
                             epsilon=Param(parse_float, 1e-8),
                             lazy_update=Param(parse_bool, True)))
class AdamUpdate(_Update):
    """g = clip(rescale_grad*grad + wd*weight); mean = b1*mean + (1-b1)*g;
    var = b2*var + (1-b2)*g^2; out = weight - lr*mean/(sqrt(var) + epsilon)
    (no bias correction: MXNet's Adam optimizer folds it into lr)."""

    states = ("mean", "var")

    def update(self, a, cd, w, g, mean, var):
        lr, wd = C(_f32(a.lr), cd), C(_f32(a.wd), cd)
        b1, b2, eps = C(_f32(a.beta1), cd), C(_f32(a.beta2), cd), C(_f32(a.epsilon), cd)
        gr = _gc(a, cd, g, wd_w=w * wd)
        mean_n = b1 * mean + (C(1, cd) - b1) * gr
        var_n = b2 * var + (C(1, cd) - b2) * gr * gr
        return w - lr * mean_n / (K.sqrt(var_n) + eps), [mean_n, var_n]

    def np_update(self, a, w, g, mean, var):
        lr, wd, b1, b2, eps = (_f32(a.lr), _f32(a.wd), _f32(a.beta1), _f32(a.beta2),
                               _f32(a.epsilon))
        gr = _np_gc(a, g, wd_w=w * wd)
        mean_n = b1 * mean + (1 - b1) * gr
        var_n = b2 * var + (1 - b2) * gr * gr
        return w - lr * mean_n / (np.sqrt(var_n) + eps), [mean_n, var_n]


_RMS = dict(gamma1=Param(parse_float, 0.95), epsilon=Param(parse_float, 1e-8),
            clip_weights=Param(parse_float, -1.0))


@_reg("rmsprop_update", _common(**_RMS))
class RMSPropUpdate(_Update):
    """g = clip(rescale_grad*grad + wd*weight); n = (1-gamma1)*g^2 + gamma1*n;
    out = clip_weights(weight - lr*g/sqrt(n + epsilon))  (Tieleman & Hinton)"""

    states = ("n",)

    def update(self, a, cd, w, g, n):
        lr, wd = C(_f32(a.lr), cd), C(_f32(a.wd), cd)
        g1, eps = C(_f32(a.gamma1), cd), C(_f32(a.epsilon), cd)
        gr = _gc(a, cd, g, wd_w=wd * w)
        n_n = (C(1, cd) - g1) * (gr * gr) + g1 * n
        w_n = w - lr * (gr / K.sqrt(n_n + eps))
        if a.clip_weights >= 0:
            w_n = _clip(w_n, _f32(a.clip_weights))
        return w_n, [n_n]

    def np_update(self, a, w, g, n):
        lr, wd, g1, eps = _f32(a.lr), _f32(a.wd), _f32(a.gamma1), _f32(a.epsilon)
        gr = _np_gc(a, g, wd_w=wd * w)
        n_n = (1 - g1) * (gr * gr) + g1 * n
        w_n = w - lr * (gr / np.sqrt(n_n + eps))
        if a.clip_weights >= 0:
            w_n = _np_clip(w_n, _f32(a.clip_weights))
        return w_n, [n_n]


@_reg("rmspropalex_update", _common(gamma2=Param(parse_float, 0.9), **_RMS))
class RMSPropAlexUpdate(_Update):
    """Graves' centered RMSProp: n = (1-g1)*g^2 + g1*n; gs = (1-g1)*g + g1*gs;
    delta = g2*delta - lr*g/sqrt(n - gs^2 + epsilon); out = clip_weights(weight + delta)"""

    states = ("n", "g", "delta")

    def update(self, a, cd, w, g, n, gs, delta):
        lr, wd = C(_f32(a.lr), cd), C(_f32(a.wd), cd)
        g1, g2, eps = C(_f32(a.gamma1), cd), C(_f32(a.gamma2), cd), C(_f32(a.epsilon), cd)
        gr = _gc(a, cd, g, wd_w=wd * w)
        og1 = C(1, cd) - g1
        n_n = og1 * gr * gr + g1 * n
        g_n = og1 * gr + g1 * gs
        d_n = g2 * delta - (lr * gr / K.sqrt(n_n - g_n * g_n + eps))
        w_n = w + d_n
        if a.clip_weights >= 0:
            w_n = _clip(w_n, _f32(a.clip_weights))
        return w_n, [n_n, g_n, d_n]

    def np_update(self, a, w, g, n, gs, delta):
        lr, wd, g1, g2, eps = (_f32(a.lr), _f32(a.wd), _f32(a.gamma1), _f32(a.gamma2),
                               _f32(a.epsilon))
        gr = _np_gc(a, g, wd_w=wd * w)
        n_n = (1 - g1) * gr * gr + g1 * n
        g_n = (1 - g1) * gr + g1 * gs
        d_n = g2 * delta - lr * gr / np.sqrt(n_n - g_n * g_n + eps)
        w_n = w + d_n
        if a.clip_weights >= 0:
            w_n = _np_clip(w_n, _f32(a.clip_weights))
        return w_n, [n_n, g_n, d_n]


@_reg("ftrl_update", _common(lamda1=Param(parse_float, 0.01), beta=Param(parse_float, 1.0)))
class FtrlUpdate(_Update):
    """g = clip(rescale_grad*grad); z += g - (sqrt(n + g^2) - sqrt(n))*weight/lr; n += g^2;
    out = (sign(z)*lamda1 - z) / ((beta + sqrt(n))/lr + wd) * (|z| > lamda1)"""

    states = ("z", "n")

    def update(self, a, cd, w, g, z, n):
        lr, wd = C(_f32(a.lr), cd), C(_f32(a.wd), cd)
        l1, beta = C(_f32(a.lamda1), cd), C(_f32(a.beta), cd)
        gr = _gc(a, cd, g)
        z_n = z + (gr - (K.sqrt(n + gr * gr) - K.sqrt(n)) * w / lr)
        n_n = n + gr * gr
        keep = K.select(K.abs_(z_n).gt(l1), C(1, cd), C(0, cd))
        w_n = (_sign(z_n) * l1 - z_n) / ((beta + K.sqrt(n_n)) / lr + wd) * keep
        return w_n, [z_n, n_n]

    def np_update(self, a, w, g, z, n):
        lr, wd, l1, beta = _f32(a.lr), _f32(a.wd), _f32(a.lamda1), _f32(a.beta)
        gr = _np_gc(a, g)
        z_n = z + (gr - (np.sqrt(n + gr * gr) - np.sqrt(n)) * w / lr)
        n_n = n + gr * gr
        w_n = (_np_sign(z_n) * l1 - z_n) / ((beta + np.sqrt(n_n)) / lr + wd) * \
            (np.abs(z_n) > l1)
        return w_n, [z_n, n_n]


@_reg("adagrad_update", _common(epsilon=Param(parse_float, 1e-7)),
      aliases=("_sparse_adagrad_update",))
class AdaGradUpdate(_Update):
    """g = clip(rescale_grad*grad); history += g^2; div = g/sqrt(history + epsilon);
    out = weight + (div + weight*wd) * -lr"""

    states = ("history",)

    def update(self, a, cd, w, g, h):
        lr, wd, eps = C(_f32(a.lr), cd), C(_f32(a.wd), cd), C(_f32(a.epsilon), cd)
        gr = _gc(a, cd, g)
        h_n = h + gr * gr
        div = gr / K.sqrt(h_n + eps)
        return w + (div + w * wd) * -lr, [h_n]

    def np_update(self, a, w, g, h):
        lr, wd, eps = _f32(a.lr), _f32(a.wd), _f32(a.epsilon)
        gr = _np_gc(a, g)
        h_n = h + gr * gr
        div = gr / np.sqrt(h_n + eps)
        return w + (div + w * wd) * -lr, [h_n]


# ---------------------------------------------------------------------------------------------
# LAMB
# ---------------------------------------------------------------------------------------------
@_reg("lamb_update_phase1", ParamSpec(
    beta1=Param(parse_float, 0.9), beta2=Param(parse_float, 0.999),
    epsilon=Param(parse_float, 1e-6), t=Param(parse_int), bias_correction=Param(parse_bool, True),
    wd=Param(parse_float), rescale_grad=Param(parse_float, 1.0),
    clip_gradient=Param(parse_float, -1.0)))
class LambUpdatePhase1(_Update):
    """g = clip(rescale_grad*grad); mean, var as Adam; out = mean^/(sqrt(var^) + epsilon)
    + wd*weight with mean^ = mean/(1-beta1^t), var^ = var/(1-beta2^t) when bias_correction.
    The output is the update direction ``g`` (not a weight): no in-place pair."""

    states = ("mean", "var")

    def inplace(self, a):
        return []

    @staticmethod
    def _bt(a):
        # std::pow(float, int) in double, then static_cast<DType>
        return _f32(a.beta1) ** a.t, _f32(a.beta2) ** a.t

    def update(self, a, cd, w, g, mean, var):
        wd = C(_f32(a.wd), cd)
        b1, b2, eps = C(_f32(a.beta1), cd), C(_f32(a.beta2), cd), C(_f32(a.epsilon), cd)
        gr = _gc(a, cd, g)
        mean_n = b1 * mean + (C(1, cd) - b1) * gr
        var_n = b2 * var + (C(1, cd) - b2) * gr * gr
        if a.bias_correction:
            b1t, b2t = self._bt(a)
            m_hat = mean_n / C(1.0 - b1t, cd)
            v_hat = var_n / C(1.0 - b2t, cd)
            out = m_hat / (K.sqrt(v_hat) + eps) + wd * w
        else:
            out = mean_n / (K.sqrt(var_n) + eps) + wd * w
        return out, [mean_n, var_n]

    def np_update(self, a, w, g, mean, var):
        wd, b1, b2, eps = _f32(a.wd), _f32(a.beta1), _f32(a.beta2), _f32(a.epsilon)
        gr = _np_gc(a, g)
        mean_n = b1 * mean + (1 - b1) * gr
        var_n = b2 * var + (1 - b2) * gr * gr
        if a.bias_correction:
            b1t, b2t = self._bt(a)
            out = (mean_n / (1 - b1t)) / (np.sqrt(var_n / (1 - b2t)) + eps) + wd * w
        else:
            out = mean_n / (np.sqrt(var_n) + eps) + wd * w
        return out, [mean_n, var_n]


@_reg("lamb_update_phase2", ParamSpec(lr=Param(parse_float),
                                      lower_bound=Param(parse_float, -1.0),
                                      upper_bound=Param(parse_float, -1.0)))
class LambUpdatePhase2(_Update):
    """r1' = clip r1 = ||weight|| into [lower_bound, upper_bound] (each only when >= 0);
    out = weight - lr'*g with lr' = lr*r1'/r2, or lr when r1' or r2 (= ||g||) is 0."""

    args = ("weight", "g", "r1", "r2")

    def infer_shape(self, a, s):
        w, g, r1, r2 = s
        ws = w if w is not None else g
        if w is not None and g is not None and tuple(w) != tuple(g):
            raise ShapeError(f"{self.name}: weight {tuple(w)} and g {tuple(g)} must have the "
                             "same shape")
        for nm, r in (("r1", r1), ("r2", r2)):
            if r is not None and (len(r) < 1 or r[0] != 1):
                raise ShapeError(f"{self.name}: {nm} must have shape (1,), got {tuple(r)}")
        return [ws, ws, r1 or (1,), r2 or (1,)], [ws]

    def update(self, a, cd, w, g, r1, r2):
        lr = C(_f32(a.lr), cd)
        nr1 = r1
        if a.lower_bound >= 0:
            nr1 = K.maximum(nr1, C(_f32(a.lower_bound), cd))
        if a.upper_bound >= 0:
            nr1 = K.minimum(nr1, C(_f32(a.upper_bound), cd))
        z = C(0, cd)
        lr_ = K.select(nr1.eq(z) | r2.eq(z), lr, lr * nr1 / r2)
        return w - lr_ * g, []

    def np_update(self, a, w, g, r1, r2):
        lr = _f32(a.lr)
        nr1 = float(r1.reshape(-1)[0])
        r2v = float(r2.reshape(-1)[0])
        if a.lower_bound >= 0:
            nr1 = max(nr1, _f32(a.lower_bound))
        if a.upper_bound >= 0:
            nr1 = min(nr1, _f32(a.upper_bound))
        lr_ = lr if (nr1 == 0 or r2v == 0) else lr * nr1 / r2v
        return w - lr_ * g, []


__all__ = ["CHUNK", "emit_fused"]
