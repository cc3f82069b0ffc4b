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

Every op also has a ``_hyper_<name>`` twin (mxc's own) taking the hyper-parameters as a float64
input ``hyper`` after its arguments (values from :func:`hyper_args`) and the code switches as
the ``switches`` attribute: the public ops bake ``lr``... into the kernel as constants (MXNet's
attribute interface), so an Adam step or a learning-rate schedule would compile a new kernel
whenever the rate changes; ``mx.optimizer`` calls the twins, compiled once per shape and dtype.
Both run the same formula code.

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
from ..params import Param, ParamSpec, parse_bool, parse_float, parse_int, parse_str
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


def emit_fused(ctx, targets: list, body, name: str, extra_targets=None) -> None:
    """One kernel over ``n = targets[0].size`` elements: for every flat index ``i``,
    ``body(i)`` gives one value per target (expressions over loads at ``i``); all values are
    computed into locals before any of them is stored, so a target may alias an input.
    ``extra_targets()``, called after ``body``, may name further targets (one per extra value).
    """
    flats = [_flat(t) for t in targets]
    n = flats[0].size
    task = K.index_var("task")
    j = K.index_var("j")
    n_tasks = -(-n // CHUNK) if n else 0
    if n_tasks > 1:
        start = task * C(CHUNK, K.INDEX)
        extent = K.minimum(C(CHUNK, K.INDEX), C(n, K.INDEX) - start)
        i = start + j
    else:
        extent = C(n, K.INDEX)
        i = j
    values = body(i)
    if extra_targets is not None:
        flats += [_flat(t) for t in extra_targets()]
    if len(values) != len(flats):
        raise OpError(f"{name}: {len(values)} values for {len(flats)} targets")
    for t in flats:
        if t.size != n:
            raise ShapeError(f"{name}: targets of {n} and {t.size} elements")
    if n == 0:
        ctx.emit(K.Kernel("__K__", [t.buf for t in flats], task, 0, [], note="empty"))
        return
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
    ctx.emit(K.Kernel("__K__", bufs, task, n_tasks, [loop], cost=n * max(weight, 1),
                      note=name))


def _op_count(e: K.Expr, memo: dict | None = None) -> int:
    memo = {} if memo is None else memo
    if id(e) in memo:
        return 0
    memo[id(e)] = True
    w = 20 if isinstance(e, K.Call) else 1
    return w + sum(_op_count(c, memo) for c in K.children(e))


# ---------------------------------------------------------------------------------------------
# hyper-parameter providers: one formula, constants (public op) or loads (``_hyper_`` op)
# ---------------------------------------------------------------------------------------------
class _ConstP:
    """Hyper-parameters baked into the kernel as constants of the compute dtype."""

    def __init__(self, values: dict, on: set, cd: str) -> None:
        self._v, self._on, self._cd = values, on, cd

    def __getattr__(self, n: str) -> K.Expr:
        try:
            return C(self._v[n], self._cd)
        except KeyError:
            raise AttributeError(n) from None

    def on(self, n: str) -> bool:
        return n in self._on


class _LoadP(_ConstP):
    """Hyper-parameters read at run time from the float64 ``hyper`` input (one kernel for
    every learning rate): element k is ``value_names[k]``."""

    def __init__(self, ref: K.TensorRef, names: tuple, on: set, cd: str) -> None:
        super().__init__({}, on, cd)
        self._ref, self._names = ref, names

    def __getattr__(self, n: str) -> K.Expr:
        try:
            k = self._names.index(n)
        except ValueError:
            raise AttributeError(n) from None
        return K.cast(self._cd, self._ref[k])


class _NumP(_ConstP):
    """The same values as python floats (numpy reference)."""

    def __getattr__(self, n: str) -> float:
        try:
            return self._v[n]
        except KeyError:
            raise AttributeError(n) from None


# kernel expression helpers (operands in the compute dtype)
def _clip(x: K.Expr, b: K.Expr) -> K.Expr:
    """mshadow_op::clip: b if x > b, -b if x < -b, else x (NaN passes through)."""
    return K.select(x.gt(b), b, K.select(x.lt(-b), -b, x))


def _sign(x: K.Expr) -> K.Expr:
    z = C(0, x.dtype)
    return K.select(x.gt(z), C(1, x.dtype), K.select(x.lt(z), C(-1, x.dtype), z))


def _one(x: K.Expr) -> K.Expr:
    return C(1, x.dtype)


# numpy counterparts (float64)
def _np_clip(x, b):
    return np.where(x > b, b, np.where(x < -b, -b, x))


def _np_sign(x):
    return (x > 0).astype(np.float64) - (x < 0).astype(np.float64)


def _gc(p, g, wd_w=None):
    """rescale_grad*grad (+ wd*weight), clipped when clip_gradient >= 0 (kernel)."""
    r = g * p.rescale_grad
    if wd_w is not None:
        r = r + wd_w
    return _clip(r, p.clip_gradient) if p.on("clip_gradient") else r


def _np_gc(p, g, wd_w=None):
    r = g * p.rescale_grad
    if wd_w is not None:
        r = r + wd_w
    return _np_clip(r, p.clip_gradient) if p.on("clip_gradient") else r


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------
def _common(**extra) -> ParamSpec:
    p = {"lr": Param(parse_float), "wd": Param(parse_float, 0.0),
         "rescale_grad": Param(parse_float, 1.0), "clip_gradient": Param(parse_float, -1.0)}
    p.update(extra)
    return ParamSpec(**p)


_HYPER_PARAMS = ParamSpec(switches=Param(parse_str, ""))


class _Update(OpDef):
    """``out = new weight``; ``states`` (aux inputs) updated in place; one kernel.

    Subclasses give ``update(p, w, g, *states) -> (out, [new state or None per state])`` over
    kernel expressions in the compute dtype, with hyper-parameters ``p.<name>`` (expressions)
    and switches ``p.on(name)`` (python bools), and ``np_update`` with the same signature over
    float64 numpy arrays (the reference). ``value_names`` lists the hyper-parameter values
    (``values(a)`` computes them, float32-rounded like MXNet's ``float`` fields), ``switch_names``
    the attributes that switch code on (``>= 0`` for numbers, truth for booleans).

    With ``hyper = True`` (the ``_hyper_<name>`` twin of every update op) the values come from a
    float64 input ``hyper`` (after the arguments) and the switches from the ``switches``
    attribute, so a changing learning rate reuses one compiled kernel.
    """

    fusion = "opaque"
    differentiable = False
    states: tuple = ()
    args: tuple = ("weight", "grad")
    #: inputs forced to float32 (the mp_* master weights and their states)
    fp32_inputs: tuple = ()
    value_names: tuple = ("lr", "wd", "rescale_grad", "clip_gradient")
    switch_names: tuple = ("clip_gradient",)
    hyper = False
    public = ""  # the public op of a _hyper_ twin

    # -- signature -----------------------------------------------------------------------------
    def arguments(self, a):
        return list(self.args) + (["hyper"] if self.hyper else [])

    def aux_names(self, a):
        return list(self.states)

    def inplace(self, a):
        return [(0, 0)]

    # -- hyper-parameters ----------------------------------------------------------------------
    def values(self, a) -> dict:
        return {n: _f32(a[n]) for n in self.value_names}

    def switches_on(self, a) -> set:
        on = set()
        for n in self.switch_names:
            v = a[n]
            if (v if isinstance(v, bool) else v >= 0):
                on.add(n)
        return on

    def _hyper_switches(self, a) -> set:
        on = {x.strip() for x in a.switches.split(",") if x.strip()}
        bad = on - set(self.switch_names)
        if bad:
            raise OpError(f"{self.name}: unknown switches {sorted(bad)}; known: "
                          f"{list(self.switch_names)}")
        return on

    # -- inference -----------------------------------------------------------------------------
    def _shaped(self, a) -> list:
        """Indices of the inputs that have the weight's shape."""
        names = self.input_names(a)
        return [i for i, n in enumerate(names) if n not in ("hyper", "r1", "r2")]

    def infer_shape(self, a, s):
        s = list(s)
        idx = self._shaped(a)
        known = [s[i] for i in idx if s[i] is not None]
        if self.hyper:
            h = self.input_names(a).index("hyper")
            nv = len(self.value_names)
            if s[h] is not None and tuple(s[h]) != (nv,):
                raise ShapeError(f"{self.name}: hyper must have shape ({nv},), got "
                                 f"{tuple(s[h])}")
            s[h] = (nv,)
        if not known:
            return s, [None]
        s0 = tuple(known[0])
        for i in idx:
            if s[i] is not None and tuple(s[i]) != s0:
                raise ShapeError(f"{self.name}: weight, grad and states must have the same "
                                 f"shape, got {[None if x is None else tuple(x) for x in s]}")
            s[i] = s0
        return s, [s0]

    def infer_type(self, a, t):
        names = self.input_names(a)
        t = list(t)
        fixed = {n: "float32" for n in self.fp32_inputs}
        if self.hyper:
            fixed["hyper"] = "float64"
        known = [x for x, n in zip(t, names) if x is not None and n not in fixed]
        d = known[0] if known else None
        for k, (x, n) in enumerate(zip(t, names)):
            if n in fixed:
                if x is not None and x != fixed[n]:
                    raise OpError(f"{self.name}: input '{n}' must be {fixed[n]}, got {x}")
                t[k] = fixed[n]
            elif x is not None and x != d:
                raise OpError(f"{self.name}: weight, grad and states must have the same dtype, "
                              f"got {dict(zip(names, t))}")
            else:
                t[k] = d
        if d is not None and as_dtype(d).kind != "f":
            raise OpError(f"{self.name}: weight must be a floating-point array, got {d}")
        return t, [d]

    # -- lowering ------------------------------------------------------------------------------
    def compute_dtype(self, ctx) -> str:
        if self.fp32_inputs:
            return "float32"
        return _compute_dtype(ctx.inputs[0].dtype.name)

    def lower(self, ctx):
        a = ctx.attrs
        names = self.input_names(a)
        cd = self.compute_dtype(ctx)
        ins = [_flat(r) for r in ctx.inputs]
        if self.hyper:
            h = names.index("hyper")
            p = _LoadP(ins[h], self.value_names, self._hyper_switches(a), cd)
            data = [(r, n) for r, n in zip(ins, names) if n != "hyper"]
        else:
            p = _ConstP(self.values(a), self.switches_on(a), cd)
            data = list(zip(ins, names))
        out = _flat(ctx.outputs[0])
        n = out.size
        states = [r for r, nm in data if nm in self.states]
        mutated: list = []

        def body(i):
            vals = [K.cast(cd, r[i] if r.size == n else r[0]) for r, _ in data]
            new_w, new_states = self.update(p, *vals)
            mutated[:] = [r for r, v in zip(states, new_states) if v is not None]
            return [new_w] + [v for v in new_states if v is not None]

        emit_fused(ctx, [out], body, self.name, extra_targets=lambda: mutated)

    def reference(self, a, inputs, is_train=False):
        names = self.input_names(a)
        if self.hyper:
            h = names.index("hyper")
            hv = np.asarray(inputs[h], np.float64).reshape(-1)
            p = _NumP(dict(zip(self.value_names, hv.tolist())), self._hyper_switches(a), "")
        else:
            p = _NumP(self.values(a), self.switches_on(a), "")
        data = [(x, nm) for x, nm in zip(inputs, names) if nm != "hyper"]
        xs = [np.asarray(x).astype(np.float64) for x, _ in data]
        new_w, new_states = self.np_update(p, *xs)
        st = [x for x, nm in data if nm in self.states]
        for dst, v in zip(st, new_states):
            if v is not None:
                dst[...] = np.asarray(v).astype(dst.dtype)
        return [np.asarray(new_w).astype(inputs[0].dtype)]

    # -- subclass hooks ------------------------------------------------------------------------
    def update(self, p, w, g, *states):  # pragma: no cover - abstract
        raise NotImplementedError

    def np_update(self, p, w, g, *states):  # pragma: no cover - abstract
        raise NotImplementedError


def hyper_args(op_name: str, attrs: dict) -> tuple:
    """``(values, switches)`` for calling ``_hyper_<op_name>`` with what ``op_name`` would get
    as attributes: ``values`` is the float64 ``hyper`` vector (MXNet's float32-rounded
    parameter values, derived terms included), ``switches`` the attribute string."""
    from ..registry import get

    op = get(op_name)
    a = op.parse_attrs(attrs)
    vals = op.values(a)
    vec = np.array([vals[n] for n in op.value_names], np.float64)
    return vec, ",".join(sorted(op.switches_on(a)))


_PUBLIC: list = []


def _reg(name: str, params: ParamSpec, aliases: tuple = ()):
    """Register an update op and its ``_hyper_`` twin (run-time hyper-parameters)."""
    def deco(cls):
        cls.name = name
        cls.aliases = aliases
        cls.params = params
        register(cls)
        twin = type(f"Hyper{cls.__name__}", (cls,),
                    {"name": f"_hyper_{name}", "aliases": (), "params": _HYPER_PARAMS,
                     "hyper": True, "public": name,
                     "__doc__": f"``{name}`` with its hyper-parameters in a float64 input "
                                "``hyper`` (see ``hyper_args``)."})
        register(twin)
        _PUBLIC.append(name)
        return cls
    return deco


# ---------------------------------------------------------------------------------------------
# SGD family
# ---------------------------------------------------------------------------------------------
@_reg("sgd_update", _common(lazy_update=Param(parse_bool, True)))
class SGDUpdate(_Update):
    """out = (1 - lr*wd)*weight - lr*clip(rescale_grad*grad)"""

    def update(self, p, w, g):
        return (_one(w) - p.lr * p.wd) * w - p.lr * _gc(p, g), []

    def np_update(self, p, w, g):
        return (1 - p.lr * p.wd) * w - p.lr * _np_gc(p, g), []


_MOM = {"momentum": Param(parse_float, 0.0), "lazy_update": Param(parse_bool, True)}
_MOM_VALUES = ("lr", "momentum", "wd", "rescale_grad", "clip_gradient")


@_reg("sgd_mom_update", _common(**_MOM))
class SGDMomUpdate(_Update):
    """mom = momentum*mom - lr*wd*weight - lr*clip(rescale_grad*grad); out = weight + mom"""

    states = ("mom",)
    value_names = _MOM_VALUES

    def update(self, p, w, g, mom):
        mom_n = p.momentum * mom - p.lr * p.wd * w - p.lr * _gc(p, g)
        return w + mom_n, [mom_n]

    def np_update(self, p, w, g, mom):
        mom_n = p.momentum * mom - p.lr * p.wd * w - p.lr * _np_gc(p, g)
        return w + mom_n, [mom_n]


@_reg("mp_sgd_update", _common(lazy_update=Param(parse_bool, True)))
class MPSGDUpdate(_Update):
    """sgd_update on a float32 master copy ``weight32`` (updated); out = weight32 cast."""

    states = ("weight32",)
    fp32_inputs = ("weight32",)

    def update(self, p, w, g, w32):
        w_n = (_one(w) - p.lr * p.wd) * w32 - p.lr * _gc(p, g)
        return w_n, [w_n]

    def np_update(self, p, w, g, w32):
        w_n = ((1 - p.lr * p.wd) * w32 - p.lr * _np_gc(p, g)).astype(np.float32)
        return w_n, [w_n]


@_reg("mp_sgd_mom_update", _common(**_MOM))
class MPSGDMomUpdate(_Update):
    """sgd_mom_update with float32 momentum and master weights ``weight32``."""

    states = ("mom", "weight32")
    fp32_inputs = ("mom", "weight32")
    value_names = _MOM_VALUES

    def update(self, p, w, g, mom, w32):
        mom_n = p.momentum * mom - p.lr * p.wd * w32 - p.lr * _gc(p, g)
        w_n = w32 + mom_n
        return w_n, [mom_n, w_n]

    def np_update(self, p, w, g, mom, w32):
        mom_n = (p.momentum * mom - p.lr * p.wd * w32 - p.lr * _np_gc(p, g)).astype(np.float32)
        w_n = (w32 + mom_n).astype(np.float32)
        return w_n, [mom_n, w_n]


def _nag(p, w, g, mom, gc):
    mom1 = p.momentum * mom
    w_n = w - mom1 + (p.momentum + 1) * (mom1 - p.lr * (gc + p.wd * w))
    mom_n = mom1 - p.lr * (gc + p.wd * w_n)
    return w_n, mom_n


_NAG = _common(momentum=Param(parse_float, 0.0))


@_reg("nag_mom_update", _NAG)
class NAGMomUpdate(_Update):
    """mom1 = momentum*mom; out = w - mom1 + (momentum+1)*(mom1 - lr*(clip(rg*grad) + wd*w));
    mom = mom1 - lr*(clip(rg*grad) + wd*out) (MXNet's in-place result, see the module doc)."""

    states = ("mom",)
    value_names = _MOM_VALUES

    def update(self, p, w, g, mom):
        w_n, mom_n = _nag(p, w, g, mom, _gc(p, g))
        return w_n, [mom_n]

    def np_update(self, p, w, g, mom):
        w_n, mom_n = _nag(p, w, g, mom, _np_gc(p, g))
        return w_n, [mom_n]


@_reg("mp_nag_mom_update", _NAG)
class MPNAGMomUpdate(_Update):
    """nag_mom_update with float32 momentum and master weights ``weight32``."""

    states = ("mom", "weight32")
    fp32_inputs = ("mom", "weight32")
    value_names = _MOM_VALUES

    def update(self, p, w, g, mom, w32):
        w_n, mom_n = _nag(p, w32, g, mom, _gc(p, g))
        return w_n, [mom_n, w_n]

    def np_update(self, p, w, g, mom, w32):
        w_n, mom_n = _nag(p, w32, g, mom, _np_gc(p, g))
        w_n = w_n.astype(np.float32)
        return w_n, [mom_n.astype(np.float32), w_n]


# ---------------------------------------------------------------------------------------------
# sign-based
# ---------------------------------------------------------------------------------------------
@_reg("signsgd_update", _common())
class SignSGDUpdate(_Update):
    """out = (1 - lr*wd)*weight - lr*sign(grad)  (rescale_grad/clip_gradient have no effect)"""

    value_names = ("lr", "wd")
    switch_names = ()

    def update(self, p, w, g):
        return (_one(w) - p.lr * p.wd) * w - p.lr * _sign(g), []

    def np_update(self, p, w, g):
        return (1 - p.lr * p.wd) * w - p.lr * _np_sign(g), []


@_reg("signum_update", _common(momentum=Param(parse_float, 0.0),
                               wd_lh=Param(parse_float, 0.0)))
class SignumUpdate(_Update):
    """mom = momentum*mom - (1-momentum)*wd*weight - (1-momentum)*clip(rescale_grad*grad);
    out = (1 - lr*wd_lh)*weight + lr*sign(mom)"""

    states = ("mom",)
    value_names = _MOM_VALUES + ("wd_lh",)

    def update(self, p, w, g, mom):
        om = _one(w) - p.momentum
        mom_n = p.momentum * mom - om * p.wd * w - om * _gc(p, g)
        return (_one(w) - p.lr * p.wd_lh) * w + p.lr * _sign(mom_n), [mom_n]

    def np_update(self, p, w, g, mom):
        om = 1 - p.momentum
        mom_n = p.momentum * mom - om * p.wd * w - om * _np_gc(p, g)
        return (1 - p.lr * p.wd_lh) * w + p.lr * _np_sign(mom_n), [mom_n]


# ---------------------------------------------------------------------------------------------
# adaptive methods
# ---------------------------------------------------------------------------------------------
@_reg("adam_update", _common(beta1=Param(parse_float, 0.9), beta2=Param(parse_float, 0.999),
                             epsilon=Param(parse_float, 1e-8),
                             lazy_update=Param(parse_bool, True)))
class AdamUpdate(_Update):
    """g = clip(rescale_grad*grad + wd*weight); mean = b1*mean + (1-b1)*g;
    var = b2*var + (1-b2)*g^2; out = weight - lr*mean/(sqrt(var) + epsilon)
    (no bias correction here: MXNet's Adam optimizer folds it into lr)."""

    states = ("mean", "var")
    value_names = ("lr", "beta1", "beta2", "epsilon", "wd", "rescale_grad", "clip_gradient")

    def update(self, p, w, g, mean, var):
        gr = _gc(p, g, w * p.wd)
        mean_n = p.beta1 * mean + (_one(w) - p.beta1) * gr
        var_n = p.beta2 * var + (_one(w) - p.beta2) * gr * gr
        return w - p.lr * mean_n / (K.sqrt(var_n) + p.epsilon), [mean_n, var_n]

    def np_update(self, p, w, g, mean, var):
        gr = _np_gc(p, g, w * p.wd)
        mean_n = p.beta1 * mean + (1 - p.beta1) * gr
        var_n = p.beta2 * var + (1 - p.beta2) * gr * gr
        return w - p.lr * mean_n / (np.sqrt(var_n) + p.epsilon), [mean_n, var_n]


_RMS = {"gamma1": Param(parse_float, 0.95), "epsilon": Param(parse_float, 1e-8),
        "clip_weights": Param(parse_float, -1.0)}
_RMS_VALUES = ("lr", "gamma1", "epsilon", "wd", "rescale_grad", "clip_gradient", "clip_weights")


@_reg("rmsprop_update", _common(**_RMS))
class RMSPropUpdate(_Update):
    """g = clip(rescale_grad*grad + wd*weight); n = (1-gamma1)*g^2 + gamma1*n;
    out = clip_weights(weight - lr*g/sqrt(n + epsilon))  (Tieleman & Hinton)"""

    states = ("n",)
    value_names = _RMS_VALUES
    switch_names = ("clip_gradient", "clip_weights")

    def update(self, p, w, g, n):
        gr = _gc(p, g, p.wd * w)
        n_n = (_one(w) - p.gamma1) * (gr * gr) + p.gamma1 * n
        w_n = w - p.lr * (gr / K.sqrt(n_n + p.epsilon))
        if p.on("clip_weights"):
            w_n = _clip(w_n, p.clip_weights)
        return w_n, [n_n]

    def np_update(self, p, w, g, n):
        gr = _np_gc(p, g, p.wd * w)
        n_n = (1 - p.gamma1) * (gr * gr) + p.gamma1 * n
        w_n = w - p.lr * (gr / np.sqrt(n_n + p.epsilon))
        if p.on("clip_weights"):
            w_n = _np_clip(w_n, p.clip_weights)
        return w_n, [n_n]


@_reg("rmspropalex_update", _common(gamma2=Param(parse_float, 0.9), **_RMS))
class RMSPropAlexUpdate(_Update):
    """Graves' centered RMSProp: g' = clip(rescale_grad*grad + wd*weight);
    n = (1-g1)*g'^2 + g1*n; g = (1-g1)*g' + g1*g; delta = g2*delta - lr*g'/sqrt(n - g^2 + eps);
    out = clip_weights(weight + delta)"""

    states = ("n", "g", "delta")
    value_names = _RMS_VALUES + ("gamma2",)
    switch_names = ("clip_gradient", "clip_weights")

    def update(self, p, w, g, n, gs, delta):
        gr = _gc(p, g, p.wd * w)
        og1 = _one(w) - p.gamma1
        n_n = og1 * gr * gr + p.gamma1 * n
        g_n = og1 * gr + p.gamma1 * gs
        d_n = p.gamma2 * delta - (p.lr * gr / K.sqrt(n_n - g_n * g_n + p.epsilon))
        w_n = w + d_n
        if p.on("clip_weights"):
            w_n = _clip(w_n, p.clip_weights)
        return w_n, [n_n, g_n, d_n]

    def np_update(self, p, w, g, n, gs, delta):
        gr = _np_gc(p, g, p.wd * w)
        n_n = (1 - p.gamma1) * gr * gr + p.gamma1 * n
        g_n = (1 - p.gamma1) * gr + p.gamma1 * gs
        d_n = p.gamma2 * delta - p.lr * gr / np.sqrt(n_n - g_n * g_n + p.epsilon)
        w_n = w + d_n
        if p.on("clip_weights"):
            w_n = _np_clip(w_n, p.clip_weights)
        return w_n, [n_n, g_n, d_n]


@_reg("ftrl_update", _common(lamda1=Param(parse_float, 0.01), beta=Param(parse_float, 1.0)))
class FtrlUpdate(_Update):
    """g = clip(rescale_grad*grad); z += g - (sqrt(n + g^2) - sqrt(n))*weight/lr; n += g^2;
    out = (sign(z)*lamda1 - z) / ((beta + sqrt(n))/lr + wd) * (|z| > lamda1)"""

    states = ("z", "n")
    value_names = ("lr", "lamda1", "beta", "wd", "rescale_grad", "clip_gradient")

    def update(self, p, w, g, z, n):
        gr = _gc(p, g)
        z_n = z + (gr - (K.sqrt(n + gr * gr) - K.sqrt(n)) * w / p.lr)
        n_n = n + gr * gr
        keep = K.select(K.abs_(z_n).gt(p.lamda1), _one(w), C(0, w.dtype))
        w_n = (_sign(z_n) * p.lamda1 - z_n) / ((p.beta + K.sqrt(n_n)) / p.lr + p.wd) * keep
        return w_n, [z_n, n_n]

    def np_update(self, p, w, g, z, n):
        gr = _np_gc(p, g)
        z_n = z + (gr - (np.sqrt(n + gr * gr) - np.sqrt(n)) * w / p.lr)
        n_n = n + gr * gr
        w_n = (_np_sign(z_n) * p.lamda1 - z_n) / ((p.beta + np.sqrt(n_n)) / p.lr + p.wd) * \
            (np.abs(z_n) > p.lamda1)
        return w_n, [z_n, n_n]


@_reg("adagrad_update", _common(epsilon=Param(parse_float, 1e-7)),
      aliases=("_sparse_adagrad_update",))
class AdaGradUpdate(_Update):
    """g = clip(rescale_grad*grad); history += g^2; div = g/sqrt(history + epsilon);
    out = weight + (div + weight*wd) * -lr"""

    states = ("history",)
    value_names = ("lr", "epsilon", "wd", "rescale_grad", "clip_gradient")

    def update(self, p, w, g, h):
        gr = _gc(p, g)
        h_n = h + gr * gr
        div = gr / K.sqrt(h_n + p.epsilon)
        return w + (div + w * p.wd) * -p.lr, [h_n]

    def np_update(self, p, w, g, h):
        gr = _np_gc(p, g)
        h_n = h + gr * gr
        div = gr / np.sqrt(h_n + p.epsilon)
        return w + (div + w * p.wd) * -p.lr, [h_n]


# ---------------------------------------------------------------------------------------------
# LAMB
# ---------------------------------------------------------------------------------------------
@_reg("lamb_update_phase1", ParamSpec(
    beta1=Param(parse_float, 0.9), beta2=Param(parse_float, 0.999),
    epsilon=Param(parse_float, 1e-6), t=Param(parse_int), bias_correction=Param(parse_bool, True),
    wd=Param(parse_float), rescale_grad=Param(parse_float, 1.0),
    clip_gradient=Param(parse_float, -1.0)))
class LambUpdatePhase1(_Update):
    """g' = clip(rescale_grad*grad); mean, var as in Adam; out = g = mean^/(sqrt(var^) + eps)
    + wd*weight, with mean^ = mean/(1-beta1^t), var^ = var/(1-beta2^t) when bias_correction
    (else mean, var). The output is the update direction (no in-place pair with weight)."""

    states = ("mean", "var")
    value_names = ("beta1", "beta2", "epsilon", "wd", "rescale_grad", "clip_gradient",
                   "bc1", "bc2")
    switch_names = ("clip_gradient", "bias_correction")

    def inplace(self, a):
        return []

    def values(self, a):
        v = {n: _f32(a[n]) for n in self.value_names[:6]}
        # beta_t = static_cast<DType>(std::pow(float beta, int t)) (pow in double)
        b1t, b2t = _f32(v["beta1"] ** a.t), _f32(v["beta2"] ** a.t)
        v["bc1"], v["bc2"] = 1.0 - b1t, 1.0 - b2t
        return v

    def update(self, p, w, g, mean, var):
        gr = _gc(p, g)
        mean_n = p.beta1 * mean + (_one(w) - p.beta1) * gr
        var_n = p.beta2 * var + (_one(w) - p.beta2) * gr * gr
        if p.on("bias_correction"):
            out = (mean_n / p.bc1) / (K.sqrt(var_n / p.bc2) + p.epsilon) + p.wd * w
        else:
            out = mean_n / (K.sqrt(var_n) + p.epsilon) + p.wd * w
        return out, [mean_n, var_n]

    def np_update(self, p, w, g, mean, var):
        gr = _np_gc(p, g)
        mean_n = p.beta1 * mean + (1 - p.beta1) * gr
        var_n = p.beta2 * var + (1 - p.beta2) * gr * gr
        if p.on("bias_correction"):
            out = (mean_n / p.bc1) / (np.sqrt(var_n / p.bc2) + p.epsilon) + p.wd * w
        else:
            out = mean_n / (np.sqrt(var_n) + p.epsilon) + p.wd * w
        return out, [mean_n, var_n]


@_reg("lamb_update_phase2", ParamSpec(lr=Param(parse_float),
                                      lower_bound=Param(parse_float, -1.0),
                                      upper_bound=Param(parse_float, -1.0)))
class LambUpdatePhase2(_Update):
    """r1' = r1 (= ||weight||) clipped into [lower_bound, upper_bound] (each bound only when
    >= 0); out = weight - lr'*g with lr' = lr*r1'/r2 (r2 = ||g||), or lr when r1' or r2 is 0."""

    args = ("weight", "g", "r1", "r2")
    value_names = ("lr", "lower_bound", "upper_bound")
    switch_names = ("lower_bound", "upper_bound")

    def infer_shape(self, a, s):
        s = list(s)
        names = self.input_names(a)
        for nm in ("r1", "r2"):
            k = names.index(nm)
            if s[k] is not None and tuple(s[k]) != (1,):
                raise ShapeError(f"{self.name}: {nm} must have shape (1,), got {tuple(s[k])}")
            s[k] = (1,)
        return _Update.infer_shape(self, a, s)

    def update(self, p, w, g, r1, r2):
        nr1 = r1
        if p.on("lower_bound"):
            nr1 = K.maximum(nr1, p.lower_bound)
        if p.on("upper_bound"):
            nr1 = K.minimum(nr1, p.upper_bound)
        z = C(0, w.dtype)
        lr = K.select(nr1.eq(z) | r2.eq(z), p.lr, p.lr * nr1 / r2)
        return w - lr * g, []

    def np_update(self, p, w, g, r1, r2):
        nr1 = float(np.asarray(r1).reshape(-1)[0])
        r2v = float(np.asarray(r2).reshape(-1)[0])
        if p.on("lower_bound"):
            nr1 = max(nr1, p.lower_bound)
        if p.on("upper_bound"):
            nr1 = min(nr1, p.upper_bound)
        lr = p.lr if (nr1 == 0 or r2v == 0) else p.lr * nr1 / r2v
        return w - lr * g, []


#: names of the public update operators (each also registered as ``_hyper_<name>``)
UPDATE_OPS = tuple(_PUBLIC)

__all__ = ["CHUNK", "UPDATE_OPS", "emit_fused", "hyper_args"]
