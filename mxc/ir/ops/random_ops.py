"""Random sampling operators: ``_random_<dist>`` (scalar parameters as attributes),
``_random_<dist>_like`` (shape and dtype of an input), ``_sample_<dist>`` (one distribution
per element of the parameter arrays), ``_random_randint``, ``_sample_multinomial`` and
``_shuffle``, for the distributions uniform, normal, gamma, exponential, poisson,
negative_binomial and generalized_negative_binomial (MXNet's src/operator/random/).

Every sample is generated code. Random bits are counter based: element ``i`` of a draw reads
``splitmix64(seed ^ stream_key, i)``, where ``seed`` is the node's rng slot
(``ctx.rng_seed()``, refilled from ``mx.random.seed``'s generator before every forward run)
and ``stream`` numbers the independent uniforms one sample consumes (two per Box-Muller pair,
one per rejection round...). Results are therefore reproducible for a seed and independent of
the thread count.

A sampling op is one kernel (:class:`_Kernel`). Each task takes a chunk of elements through
a sequence of *phases*: element loops whose bodies are straight-line, branch-free programs
(:class:`_Prog`: named locals assigned in order, so a value used many times is computed once
and expression trees stay small; LLVM vectorizes them), and counted loops of such element
loops for rejection rounds. Control flow never depends on the data (no early exit): every
round runs for every element and selects keep the first accepted candidate, the state
carried between phases living in temporaries. Code size stays that of one or two rounds.

* normal: Box-Muller (the pair's second value feeds another round where one is needed);
* gamma: Marsaglia-Tsang, ``GAMMA_ROUNDS`` = 8 rounds. The acceptance probability of a round
  is at least 0.951 (shape 1; shape < 1 runs at shape + 1 and is scaled by ``U^(1/shape)``),
  so all rounds fail with probability below 0.049^8 < 4e-11; the sample is then ``d``
  (the mode region of the proposal), a bias far below any statistical resolution;
* poisson: inversion of the CDF for lambda < 10 (``INV_TERMS`` = 40 terms; P(X >= 40) < 1e-12
  at lambda = 10; with a constant lambda the CDF is a table of constants), Hormann's
  transformed rejection with squeeze (PTRS) for lambda >= 10 with ``PTRS_ROUNDS`` = 16 rounds
  (acceptance 0.75 per round at lambda = 10, rising to 0.89, so all fail with probability
  below 2e-10; the sample is then round(lambda)). A lambda known only at run time runs both;
* negative binomial: Poisson(Gamma(k, (1-p)/p)); generalized: Poisson(Gamma(1/alpha,
  alpha*mu)), Poisson(mu) for alpha = 0 (MXNet's samplers);
* multinomial: inversion against the running sum of the row's probabilities (O(K) per draw);
* shuffle: a Fisher-Yates permutation of the first axis computed by a one-task kernel
  (O(n), exact, as MXNet's CPU shuffle), then a parallel gather of the rows.

Gradients: none for the samplers (MXNet's zero gradients for the parameter arrays), the
log-probability output of ``_sample_multinomial`` has MXNet's ``_backward_sample_multinomial``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...base import OpError, ShapeError
from .. import kernel as K
from ..dtypes import as_dtype
from ..params import (
    Param,
    ParamSpec,
    optional,
    parse_bool,
    parse_dtype_name,
    parse_float,
    parse_int,
    parse_shape,
    parse_str,
)
from ..registry import OpDef, register, simple
from .common import collect_buffers, flat, g
from .nn import hash64

C = K.const
U64, I64, F32, F64 = "uint64", "int64", "float32", "float64"

GAMMA_ROUNDS = 8        # Marsaglia-Tsang rounds (even: normals come in Box-Muller pairs)
PTRS_ROUNDS = 16        # Poisson transformed-rejection rounds (even: two per iteration)
PTRS_MIN = 10.0         # PTRS for lambda >= PTRS_MIN, CDF inversion below
INV_TERMS = 40          # CDF terms of the run-time-lambda inversion
_CHUNK = 4096           # elements per task of the sampling kernels
_MASK = (1 << 64) - 1
_STREAM = 0xD1B54A32D192ED03   # odd constant spreading stream numbers over the seed bits
_FLOATS = ("float16", "float32", "float64")


# ---------------------------------------------------------------------------------------------
# sampling kernels: phases of element loops, per-element straight-line programs
# ---------------------------------------------------------------------------------------------
class _Kernel:
    """One sampling kernel over ``n`` elements, split into tasks of ``_CHUNK`` elements. Each
    task runs the *phases* in order: element loops (vectorizable, straight-line bodies) and
    ``rounds``, a counted loop around an element loop (rejection rounds: control flow never
    depends on the data). Values carried from one phase to the next live in temporaries
    indexed by the element."""

    def __init__(self, ctx, n: int, rows: int = 1) -> None:
        self.ctx = ctx
        self.n = n
        self.rows = rows                  # samples per parameter set (``_sample_*`` ops)
        self.seed = ctx.rng_seed()
        self.task = K.index_var("task")
        self.n_tasks = max(-(-n // _CHUNK), 1)
        if self.n_tasks == 1:
            self.start: K.Expr = C(0, I64)
            self.extent: K.Expr = C(n, I64)
        else:
            self.start = self.task * C(_CHUNK, I64)
            self.extent = K.minimum(C(_CHUNK, I64), C(n, I64) - self.start)
        self.body: list = []
        self.n_locals = 0

    def temp(self, dt: str) -> K.TensorRef:
        return self.ctx.temp((self.n,), dt)

    def loop(self, build: Callable) -> None:
        """An element loop: ``build(prog)`` appends the element's statements."""
        j = K.index_var("j")
        prog = _Prog(self, self.start + j)
        build(prog)
        self.body.append(K.For(j, self.extent, prog.stmts, "vector"))

    def rounds(self, count: int, build: Callable) -> None:
        """``count`` repetitions of an element loop; ``build(prog, r)`` sees the round index
        ``r`` (an int64 expression)."""
        r, j = K.index_var("r"), K.index_var("j")
        prog = _Prog(self, self.start + j)
        build(prog, r)
        inner = K.For(j, self.extent, prog.stmts, "vector")
        self.body.append(K.For(r, C(count, I64), [inner], "serial"))

    def emit(self, name: str, weight: int) -> None:
        if self.n == 0:
            return
        kern = K.Kernel("__K__", collect_buffers(self.body), self.task, self.n_tasks,
                        self.body, cost=self.n * weight, note=name)
        self.ctx.emit(kern)


class _Prog:
    """The statements of one element loop: locals assigned in order (straight-line and
    branch-free), so a value used many times is computed once. ``i`` is the element's flat
    index, also the counter of its random numbers."""

    def __init__(self, kern: _Kernel, i: K.Expr) -> None:
        self.kern = kern
        self.i = i
        self.stmts: list = []
        self.seed = kern.seed[0]

    def let(self, e: K.Expr, hint: str = "v") -> K.Local:
        self.kern.n_locals += 1
        loc = K.Local(f"%{hint}{self.kern.n_locals}", e.dtype)
        self.stmts.append(K.Assign(loc, e))
        return loc

    def set(self, loc: K.Local, e: K.Expr) -> None:
        self.stmts.append(K.Assign(loc, K.cast(loc.dtype, e)))

    def load(self, ref: K.TensorRef) -> K.Local:
        """This element of a flat temporary (or array of the output's size)."""
        return self.let(ref[self.i], "s")

    def store(self, ref: K.TensorRef, value: K.Expr) -> None:
        self.stmts.append(K.Store(ref.buf, C(ref.offset, I64) + self.i,
                                  K.cast(ref.dtype, value)))

    def param(self, ref: K.TensorRef, dt: str) -> K.Local:
        """This element's entry of a parameter array (one per ``rows`` samples)."""
        rows = self.kern.rows
        idx = self.i // C(rows, I64) if rows > 1 else self.i
        return self.let(K.cast(dt, ref[idx]), "p")

    # -- random numbers -------------------------------------------------------------------------
    def bits(self, stream) -> K.Local:
        """64 random bits: splitmix64 of the element index in stream ``stream`` (an int, or
        an int64 expression inside ``rounds``)."""
        if isinstance(stream, int):
            key: K.Expr = C(((stream + 1) * _STREAM) & _MASK, U64)
        else:
            key = K.cast(U64, stream + C(1, I64)) * C(_STREAM, U64)
        return self.let(hash64(self.seed ^ key, self.i), "h")

    def uniform(self, stream, dt: str, open_low: bool = False) -> K.Local:
        """Uniform in [0, 1) (``open_low``: (0, 1]) with 24 (float32) or 53 random bits."""
        wide = as_dtype(dt).name == F64
        m = self.bits(stream) >> C(11 if wide else 40, U64)
        if open_low:
            m = m + C(1, U64)
        return self.let(K.cast(dt, m) * C(2.0 ** (-53 if wide else -24), dt), "u")

    def normal_pair(self, stream, dt: str) -> tuple:
        """Two independent standard normals (Box-Muller) from streams ``stream``, ``+1``."""
        u1 = self.uniform(stream, dt, open_low=True)
        u2 = self.uniform(_st(stream, 1), dt)
        r = self.let(K.sqrt(C(-2.0, dt) * K.call("log", u1)))
        th = self.let(C(2 * math.pi, dt) * u2)
        return self.let(r * K.call("cos", th)), self.let(r * K.call("sin", th))


def _st(base, add, r=None, per: int = 0):
    """Stream number ``base + add (+ r * per)``: an int, or an int64 expression in rounds."""
    s = base + add if isinstance(base, int) else base + C(add, I64)
    if r is not None:
        s = C(s, I64) + r * C(per, I64) if isinstance(s, int) else s + r * C(per, I64)
    return s


def _v(P: _Prog, p, dt: str) -> K.Expr:
    """A distribution parameter: a number (attribute) or a reader ``(prog, dtype) -> expr``
    (an array entry, or an expression of those)."""
    return C(p, dt) if isinstance(p, (int, float)) else p(P, dt)


# ---------------------------------------------------------------------------------------------
# samplers: (kernel, parameters, compute dtype, flat output) -> phases writing the output.
# Parameters are numbers (attributes: specialised at compile time) or readers.
# ---------------------------------------------------------------------------------------------
def _s_uniform(kb: _Kernel, ps: list, dt: str, out: K.TensorRef) -> None:
    def f(P):
        lo = _v(P, ps[0], dt)
        P.store(out, lo + (_v(P, ps[1], dt) - lo) * P.uniform(0, dt))
    kb.loop(f)


def _s_normal(kb: _Kernel, ps: list, dt: str, out: K.TensorRef) -> None:
    kb.loop(lambda P: P.store(out, _v(P, ps[0], dt) + _v(P, ps[1], dt) *
                              P.normal_pair(0, dt)[0]))


def _s_exponential(kb: _Kernel, ps: list, dt: str, out: K.TensorRef) -> None:
    kb.loop(lambda P: P.store(out, -K.call("log", P.uniform(0, dt, open_low=True)) /
                              _v(P, ps[0], dt)))


def _gamma(kb: _Kernel, alpha, dt: str, stream: int) -> Callable:
    """Gamma(alpha, 1) by Marsaglia-Tsang in GAMMA_ROUNDS branch-free rounds (two per loop
    iteration, sharing a Box-Muller pair); the first accepted candidate wins, alpha < 1
    samples alpha + 1 and scales by U^(1/alpha). Returns ``finish(prog)``, the sample, to be
    called in one later phase. Streams ``stream`` .. ``stream + 2 * GAMMA_ROUNDS``."""
    static = isinstance(alpha, (int, float))
    one = C(1.0, dt)

    def shape(P: _Prog):
        if static:
            ap = alpha + 1.0 if alpha < 1 else float(alpha)
            return C(ap - 1.0 / 3.0, dt), C(1.0 / math.sqrt(9.0 * ap - 3.0), dt), None, None
        a = P.let(alpha(P, dt))
        boost = P.let(a.lt(one))
        d = P.let(K.select(boost, a + one, a) - C(1.0 / 3.0, dt))
        return d, P.let(one / K.sqrt(C(9.0, dt) * d)), a, boost

    state = kb.temp(dt)                 # the accepted sample, -1 while none is
    kb.loop(lambda P: P.store(state, C(-1.0, dt)))

    def pair(P: _Prog, r: K.Expr) -> None:
        d, c, _, _ = shape(P)
        cur = P.load(state)
        zs = P.normal_pair(_st(stream, 0, r, 2), dt)
        for q, z in enumerate(zs):
            t = P.let(one + c * z)
            v = P.let(t * t * t)
            vpos = P.let(t.gt(C(0.0, dt)))
            lv = K.call("log", K.select(vpos, v, one))
            u = P.uniform(_st(stream, GAMMA_ROUNDS + q, r, 2), dt, open_low=True)
            ok = vpos & K.call("log", u).lt(C(0.5, dt) * z * z + d * (one - v + lv))
            P.set(cur, K.select(ok & cur.lt(C(0.0, dt)), d * v, cur))
        P.store(state, cur)

    kb.rounds(GAMMA_ROUNDS // 2, pair)

    def finish(P: _Prog) -> K.Expr:
        d, _, a, boost = shape(P)
        s = P.load(state)
        val = P.let(K.select(s.lt(C(0.0, dt)), d, s), "g")   # every round rejected: d
        if static and alpha >= 1:
            return val
        ub = P.uniform(stream + 2 * GAMMA_ROUNDS, dt, open_low=True)
        scaled = val * K.call("exp", K.call("log", ub) / (C(alpha, dt) if static else a))
        return scaled if static else P.let(K.select(boost, scaled, val), "g")

    return finish


_GAMMA_STREAMS = 2 * GAMMA_ROUNDS + 1


def _s_gamma(kb: _Kernel, ps: list, dt: str, out: K.TensorRef) -> None:
    fin = _gamma(kb, ps[0], dt, 0)
    kb.loop(lambda P: P.store(out, fin(P) * _v(P, ps[1], dt)))


def _poisson_table(P: _Prog, lam: float, stream: int) -> K.Local:
    """Poisson(lam), lam < PTRS_MIN a compile-time constant: inversion against the CDF
    computed here, x = #{k : F(k) <= u}."""
    u = P.uniform(stream, F64)
    x = P.let(C(0.0, F64), "x")
    lg = math.log(lam) if lam > 0 else 0.0
    cdf = 0.0
    for k in range(200):
        cdf += math.exp(-lam + k * lg - math.lgamma(k + 1)) if lam > 0 else float(k == 0)
        if cdf >= 1.0 - 2.0 ** -53:
            break
        P.set(x, x + K.select(u.ge(C(cdf, F64)), C(1.0, F64), C(0.0, F64)))
    return x


def _poisson_inversion(P: _Prog, lam: K.Expr, stream: int) -> K.Local:
    """Poisson(lam) for a run-time lam < PTRS_MIN: x = #{k < INV_TERMS : F(k) <= u} with the
    CDF accumulated term by term."""
    u = P.uniform(stream, F64)
    p = P.let(K.call("exp", -lam))
    cdf = P.let(p + C(0.0, F64))
    x = P.let(C(0.0, F64), "x")
    for k in range(INV_TERMS):
        P.set(x, x + K.select(cdf.le(u), C(1.0, F64), C(0.0, F64)))
        if k + 1 < INV_TERMS:
            P.set(p, p * lam * C(1.0 / (k + 1), F64))
            P.set(cdf, cdf + p)
    return x


def _ptrs_consts(P: _Prog, lam) -> dict:
    """The constants of PTRS for lam (a number or a float64 expression)."""
    if isinstance(lam, (int, float)):
        b = 0.931 + 2.53 * math.sqrt(lam)
        vals = {"lam": lam, "loglam": math.log(lam), "b": b, "a": -0.059 + 0.02483 * b,
                "linva": math.log(1.1239 + 1.1328 / (b - 3.4)), "vr": 0.9277 - 3.6224 / (b - 2)}
        return {k: C(v, F64) for k, v in vals.items()}
    b = P.let(C(0.931, F64) + C(2.53, F64) * K.sqrt(lam))
    return {"lam": lam, "loglam": P.let(K.call("log", lam)), "b": b,
            "a": P.let(C(-0.059, F64) + C(0.02483, F64) * b),
            "linva": P.let(K.call("log", C(1.1239, F64) + C(1.1328, F64) / (b - C(3.4, F64)))),
            "vr": P.let(C(0.9277, F64) - C(3.6224, F64) / (b - C(2.0, F64)))}


def _ptrs_round(P: _Prog, e: dict, cur: K.Local, stream) -> None:
    """One round of Hormann's PTRS (transformed rejection with squeeze): ``cur`` (-1 while
    nothing is accepted) takes the candidate if it is accepted and ``cur`` is still open."""
    zero, one = C(0.0, F64), C(1.0, F64)
    uu = P.let(P.uniform(stream, F64) - C(0.5, F64))
    v = P.uniform(_st(stream, 1), F64)
    us = P.let(C(0.5, F64) - K.abs_(uu))
    k = P.let(K.call("floor", (C(2.0, F64) * e["a"] / us + e["b"]) * uu + e["lam"] +
                     C(0.43, F64)))
    quick = us.ge(C(0.07, F64)) & v.le(e["vr"])
    reject = k.lt(zero) | (us.lt(C(0.013, F64)) & v.gt(us))
    kk = P.let(K.maximum(k, zero))
    lhs = K.call("log", v) + e["linva"] - K.call("log", e["a"] / (us * us) + e["b"])
    rhs = kk * e["loglam"] - e["lam"] - K.call("gammaln", kk + one)
    ok = quick | (~reject & lhs.le(rhs))
    P.set(cur, K.select(ok & cur.lt(zero), k, cur))


def _poisson(kb: _Kernel, lam, stream: int) -> Callable:
    """Poisson(lam) as float64; returns ``finish(prog)`` for one later phase. ``lam`` is a
    number or a reader; a reader is evaluated once, in this sampler's first phase (it may
    read another sampler's result). Inversion below PTRS_MIN, PTRS (PTRS_ROUNDS rounds, two
    per loop iteration) above; a run-time lam runs both, the inversion's result marking the
    element as done for the rounds. Streams ``stream`` .. ``stream + 2 * PTRS_ROUNDS``."""
    if isinstance(lam, (int, float)) and lam < PTRS_MIN:
        return lambda P: _poisson_table(P, float(lam), stream)
    static = isinstance(lam, (int, float))
    state = kb.temp(F64)                # the accepted sample, -1 while none is
    lam_t = None if static else kb.temp(F64)

    def first(P: _Prog) -> None:
        if static:
            P.store(state, C(-1.0, F64))
            return
        lv = P.let(K.cast(F64, lam(P, F64)))
        P.store(lam_t, lv)
        xs = _poisson_inversion(P, P.let(K.minimum(lv, C(PTRS_MIN, F64))), stream)
        P.store(state, K.select(lv.lt(C(PTRS_MIN, F64)), xs, C(-1.0, F64)))

    def large(P: _Prog):
        return float(lam) if static else P.let(K.maximum(P.load(lam_t), C(PTRS_MIN, F64)))

    def pair(P: _Prog, r: K.Expr) -> None:
        e = _ptrs_consts(P, large(P))
        cur = P.load(state)
        _ptrs_round(P, e, cur, _st(stream, 1, r, 4))
        _ptrs_round(P, e, cur, _st(stream, 3, r, 4))
        P.store(state, cur)

    kb.loop(first)
    kb.rounds(PTRS_ROUNDS // 2, pair)

    def finish(P: _Prog) -> K.Expr:
        s = P.load(state)
        lg = large(P)
        # every round rejected: round(lam)
        fallback = C(math.floor(lg + 0.5), F64) if static else K.call("floor", lg + C(0.5, F64))
        return P.let(K.select(s.lt(C(0.0, F64)), fallback, s), "x")

    return finish


def _s_poisson(kb: _Kernel, ps: list, dt: str, out: K.TensorRef) -> None:
    fin = _poisson(kb, ps[0], 0)
    kb.loop(lambda P: P.store(out, fin(P)))


def _s_negative_binomial(kb: _Kernel, ps: list, dt: str, out: K.TensorRef) -> None:
    k, p = ps
    gam = _gamma(kb, k, F64, 0)

    def lam(P: _Prog, d: str) -> K.Expr:
        pv = _v(P, p, F64)
        return gam(P) * ((C(1.0, F64) - pv) / pv)

    fin = _poisson(kb, lam, _GAMMA_STREAMS)
    kb.loop(lambda P: P.store(out, fin(P)))


def _s_generalized_negative_binomial(kb: _Kernel, ps: list, dt: str,
                                     out: K.TensorRef) -> None:
    mu, alpha = ps
    if isinstance(alpha, (int, float)) and alpha == 0:
        fin = _poisson(kb, mu, _GAMMA_STREAMS)
    else:
        def shape(P: _Prog, d: str) -> K.Expr:
            return C(1.0, d) / _v(P, alpha, d)

        gam = _gamma(kb, 1.0 / alpha if isinstance(alpha, (int, float)) else shape, F64, 0)

        def lam(P: _Prog, d: str) -> K.Expr:
            a, m = _v(P, alpha, F64), _v(P, mu, F64)
            sample = gam(P) * (a * m)
            if isinstance(alpha, (int, float)):
                return sample
            return K.select(a.eq(C(0.0, F64)), m, sample)

        fin = _poisson(kb, lam, _GAMMA_STREAMS)
    kb.loop(lambda P: P.store(out, fin(P)))


# ---------------------------------------------------------------------------------------------
# the distributions
# ---------------------------------------------------------------------------------------------
def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise OpError(msg)


@dataclass(frozen=True)
class _Dist:
    name: str
    params: tuple          # (attribute name, default, parser) of the _random_ op
    inputs: tuple          # input names of the _sample_ op
    sampler: Callable      # (kernel, params, compute dtype, flat output) -> None
    check: Callable        # (params dict) -> None, raises OpError (scalar parameters)
    numpy: Callable        # (generator, params, size) -> samples (the reference)
    wide: bool = False     # computes in float64 whatever the output dtype


def _chk_uniform(p):
    _check(p["high"] >= p["low"], f"low must be less or equal to high in uniform distribution"
           f" (low={p['low']}, high={p['high']})")


def _chk_normal(p):
    _check(p["scale"] > 0, f"scale parameter in gaussian has to be positive, got {p['scale']}")


def _chk_gamma(p):
    _check(p["alpha"] > 0, f"alpha parameter in gamma distribution has to be positive, got "
           f"{p['alpha']}")
    _check(p["beta"] > 0, f"beta parameter in gamma distribution has to be positive, got "
           f"{p['beta']}")


def _chk_exponential(p):
    _check(p["lam"] > 0, f"lambda parameter in exponential distribution has to be positive, "
           f"got {p['lam']}")


def _chk_poisson(p):
    _check(p["lam"] >= 0, f"lambda parameter in poisson distribution has to be non-negative, "
           f"got {p['lam']}")


def _chk_negbin(p):
    _check(p["k"] >= 0, f"k parameter in negative binomial distribution has to be "
           f"non-negative, got {p['k']}")
    _check(0 <= p["p"] <= 1, f"p parameter in negative binomial distribution has to be in "
           f"[0, 1], got {p['p']}")


def _chk_gennegbin(p):
    _check(p["mu"] >= 0, f"mu parameter in generalized negative binomial distribution has to "
           f"be non-negative, got {p['mu']}")
    _check(p["alpha"] >= 0, f"alpha parameter in generalized negative binomial distribution "
           f"has to be non-negative, got {p['alpha']}")


def _np_negbin(rng, k, p, size):
    lam = rng.gamma(np.maximum(k, 1e-300), np.where(p > 0, (1 - p) / np.maximum(p, 1e-300),
                                                     np.inf), size)
    return rng.poisson(np.where(k > 0, lam, 0.0))


def _np_gennegbin(rng, mu, alpha, size):
    a = np.maximum(alpha, 1e-300)
    lam = np.where(alpha == 0, mu, rng.gamma(1 / a, a * mu, size))
    return rng.poisson(lam)


_F = parse_float
DISTS = {d.name: d for d in [
    _Dist("uniform", (("low", 0.0, _F), ("high", 1.0, _F)), ("low", "high"), _s_uniform,
          _chk_uniform, lambda rng, lo, hi, size: rng.uniform(lo, hi, size)),
    _Dist("normal", (("loc", 0.0, _F), ("scale", 1.0, _F)), ("mu", "sigma"), _s_normal,
          _chk_normal, lambda rng, mu, s, size: rng.normal(mu, s, size)),
    _Dist("gamma", (("alpha", 1.0, _F), ("beta", 1.0, _F)), ("alpha", "beta"), _s_gamma,
          _chk_gamma, lambda rng, a, b, size: rng.gamma(a, b, size), wide=True),
    _Dist("exponential", (("lam", 1.0, _F),), ("lam",), _s_exponential, _chk_exponential,
          lambda rng, lam, size: rng.exponential(1 / lam, size)),
    _Dist("poisson", (("lam", 1.0, _F),), ("lam",), _s_poisson, _chk_poisson,
          lambda rng, lam, size: rng.poisson(lam, size), wide=True),
    _Dist("negative_binomial", (("k", 1, parse_int), ("p", 1.0, _F)), ("k", "p"),
          _s_negative_binomial, _chk_negbin, _np_negbin, wide=True),
    _Dist("generalized_negative_binomial", (("mu", 1.0, _F), ("alpha", 1.0, _F)),
          ("mu", "alpha"), _s_generalized_negative_binomial, _chk_gennegbin, _np_gennegbin,
          wide=True),
]}


def _float_dtype(op: str, dtype, default: str = "float32") -> str:
    d = default if dtype is None else dtype
    if d not in _FLOATS:
        raise OpError(f"{op}: output type must be float16, float32 or float64, got {d}")
    return d


def _compute_dtype(dist: _Dist, out_dtype) -> str:
    return F64 if dist.wide or as_dtype(out_dtype).name == F64 else F32


def _sample_shape(op: str, shape) -> tuple:
    for s in shape:
        if s is None or s < 0:
            raise ShapeError(f"{op}: shape must have non-negative, known dimensions, got "
                             f"{tuple(shape)}")
    return tuple(int(s) for s in shape)


def _reader(ref: K.TensorRef) -> Callable:
    return lambda P, dt: P.param(ref, dt)


def _lower_dist(ctx, dist: _Dist, params: list, rows: int, name: str) -> None:
    """Emit the sampling kernel: ``params`` are numbers or flat parameter arrays, each entry
    the parameter of ``rows`` consecutive samples."""
    o = flat(ctx.outputs[0])
    if o.size == 0:
        return
    kb = _Kernel(ctx, o.size, rows)
    ps = [float(v) if isinstance(v, (int, float)) else _reader(v) for v in params]
    dist.sampler(kb, ps, _compute_dtype(dist, o.dtype), o)
    kb.emit(name, weight=60 if dist.wide else 20)


_SAMPLE_COMMON = {"shape": Param(parse_shape, ()), "ctx": Param(parse_str, ""),
                  "dtype": Param(optional(parse_dtype_name), None)}


class _RandomOp(OpDef):
    """``_random_<dist>``: scalar parameters as attributes, ``shape`` samples."""

    fusion = "opaque"
    random = True
    dist: _Dist

    def arguments(self, a):
        return []

    def _params(self, a) -> dict:
        return {p[0]: a[p[0]] for p in self.dist.params}

    def infer_shape(self, a, s):
        self.dist.check(self._params(a))
        return s, [_sample_shape(self.name, a.shape)]

    def infer_type(self, a, t):
        return t, [_float_dtype(self.name, a.dtype)]

    def lower(self, ctx):
        ps = list(self._params(ctx.attrs).values())
        _lower_dist(ctx, self.dist, ps, 1, self.name)

    def reference(self, a, inputs, is_train=False):
        rng = np.random.default_rng()
        ps = list(self._params(a).values())
        out = self.dist.numpy(rng, *ps, _sample_shape(self.name, a.shape))
        return [np.asarray(out).astype(as_dtype(_float_dtype(self.name, a.dtype)).np)]

    def gradient(self, node, ograds):
        return []


class _RandomLikeOp(_RandomOp):
    """``_random_<dist>_like``: the shape and dtype of ``data`` (whose values are unused)."""

    def arguments(self, a):
        return ["data"]

    def infer_shape(self, a, s):
        self.dist.check(self._params(a))
        return s, [s[0]]

    def infer_type(self, a, t):
        if t[0] is not None:
            _float_dtype(self.name, t[0])
        return t, [t[0]]

    def reference(self, a, inputs, is_train=False):
        rng = np.random.default_rng()
        x = inputs[0]
        return [np.asarray(self.dist.numpy(rng, *self._params(a).values(), x.shape))
                .astype(x.dtype)]

    def gradient(self, node, ograds):
        return [g("zeros_like", node.inputs[0])]


class _SampleOp(OpDef):
    """``_sample_<dist>``: one distribution per element of the parameter arrays; the output
    is ``param.shape + shape``."""

    fusion = "opaque"
    random = True
    params = ParamSpec(shape=Param(parse_shape, ()),
                       dtype=Param(optional(parse_dtype_name), None))
    dist: _Dist

    def arguments(self, a):
        return list(self.dist.inputs)

    def infer_shape(self, a, s):
        sshape = _sample_shape(self.name, a.shape)
        if any(d == 0 for d in sshape):
            raise ShapeError(f"{self.name}: shape parameter must be non-zero within each "
                             f"dimension, got {sshape}")
        known = [x for x in s if x is not None]
        if not known:
            return s, [None]
        for x in known[1:]:
            if tuple(x) != tuple(known[0]):
                raise ShapeError(f"{self.name}: parameter arrays {self.dist.inputs} must have "
                                 f"the same shape, got {[tuple(y) for y in known]}")
        p = tuple(known[0])
        return [p] * len(s), [p + sshape]

    def infer_type(self, a, t):
        known = [x for x in t if x is not None]
        if known and any(x != known[0] for x in known):
            raise OpError(f"{self.name}: parameter arrays must have the same dtype, got {t}")
        ins = [known[0]] * len(t) if known else t
        return ins, [_float_dtype(self.name, a.dtype)]

    def lower(self, ctx):
        rows = max(math.prod(_sample_shape(self.name, ctx.attrs.shape)), 1)
        _lower_dist(ctx, self.dist, [flat(r) for r in ctx.inputs], rows, self.name)

    def reference(self, a, inputs, is_train=False):
        rng = np.random.default_rng()
        sshape = _sample_shape(self.name, a.shape)
        p0 = inputs[0]
        ps = [np.asarray(x, np.float64).reshape(p0.shape + (1,) * len(sshape)) for x in inputs]
        out = self.dist.numpy(rng, *ps, p0.shape + sshape)
        return [np.asarray(out).astype(as_dtype(_float_dtype(self.name, a.dtype)).np)]

    def gradient(self, node, ograds):
        return [g("zeros_like", e) for e in node.inputs]


for _d in DISTS.values():
    _spec = ParamSpec(**{n: Param(parser, dflt) for n, dflt, parser in _d.params},
                      **_SAMPLE_COMMON)
    _aliases = ("random_" + _d.name,) + ((_d.name,) if _d.name in ("uniform", "normal") else ())
    register(type(f"Random_{_d.name}", (_RandomOp,),
                  {"name": "_random_" + _d.name, "aliases": _aliases, "dist": _d,
                   "params": _spec}))
    register(type(f"RandomLike_{_d.name}", (_RandomLikeOp,),
                  {"name": f"_random_{_d.name}_like", "dist": _d,
                   "params": ParamSpec(**{n: Param(parser, dflt)
                                          for n, dflt, parser in _d.params})}))
    register(type(f"Sample_{_d.name}", (_SampleOp,),
                  {"name": "_sample_" + _d.name, "aliases": ("sample_" + _d.name,),
                   "dist": _d}))


# ---------------------------------------------------------------------------------------------
# randint
# ---------------------------------------------------------------------------------------------
@simple("_random_randint", aliases=("random_randint",), fusion="opaque", random=True,
        params=ParamSpec(low=Param(parse_int), high=Param(parse_int),
                         shape=Param(parse_shape, ()), ctx=Param(parse_str, ""),
                         dtype=Param(optional(parse_dtype_name), None)))
class RandInt(OpDef):
    """Integers uniform on [low, high): ``low + bits % (high - low)`` (64 random bits, so the
    modulo bias is below 2^-32 for any range under 2^32)."""

    def arguments(self, a):
        return []

    @staticmethod
    def _dtype(a) -> str:
        d = "int32" if a.dtype is None else a.dtype
        if d not in ("int32", "int64"):
            raise OpError(f"_random_randint: output type must be int32 or int64, got {d}")
        return d

    def infer_shape(self, a, s):
        _check(a.high >= a.low, f"low must be less or equal to high in uniform distribution "
               f"(low={a.low}, high={a.high})")
        return s, [_sample_shape(self.name, a.shape)]

    def infer_type(self, a, t):
        return t, [self._dtype(a)]

    def lower(self, ctx):
        a = ctx.attrs
        lo, span = a.low, a.high - a.low
        o = flat(ctx.outputs[0])
        if o.size == 0:
            return
        kb = _Kernel(ctx, o.size)
        if span <= 0:
            kb.loop(lambda P: P.store(o, C(lo, I64)))
        else:
            kb.loop(lambda P: P.store(o, K.cast(I64, P.bits(0) % C(span, U64)) + C(lo, I64)))
        kb.emit(self.name, weight=8)

    def reference(self, a, inputs, is_train=False):
        rng = np.random.default_rng()
        out = rng.integers(a.low, max(a.high, a.low + 1), _sample_shape(self.name, a.shape))
        return [out.astype(self._dtype(a))]

    def gradient(self, node, ograds):
        return []


# ---------------------------------------------------------------------------------------------
# multinomial
# ---------------------------------------------------------------------------------------------
_MULTI_TYPES = ("uint8", "int32", "float16", "float32", "float64")


@simple("_sample_multinomial", aliases=("sample_multinomial",), fusion="opaque", random=True,
        params=ParamSpec(shape=Param(parse_shape, ()), get_prob=Param(parse_bool, False),
                         dtype=Param(parse_dtype_name, "int32")))
class SampleMultinomial(OpDef):
    """Draws from the categorical distributions on the last axis of ``data`` (probabilities
    summing to one): output ``data.shape[:-1] + shape`` of indices; with ``get_prob`` also
    their log-probabilities. Inversion: the index is the count of classes whose running
    probability sum is below a uniform in (0, 1] (clamped to the last class)."""

    def outputs(self, a):
        return ["output0", "output1"] if a.get_prob else ["output"]

    def infer_shape(self, a, s):
        if a.dtype not in _MULTI_TYPES:
            raise OpError(f"_sample_multinomial: dtype must be one of {list(_MULTI_TYPES)}, "
                          f"got {a.dtype}")
        d = s[0]
        if d is None:
            return s, [None] * self.num_outputs(a)
        if len(d) == 0 or d[-1] == 0:
            raise ShapeError(f"_sample_multinomial: data must have at least one dimension and "
                             f"a non-empty last (class) axis, got {tuple(d)}")
        sshape = _sample_shape(self.name, a.shape)
        o = (sshape or (1,)) if len(d) == 1 else tuple(d[:-1]) + sshape
        return s, [o] * self.num_outputs(a)

    def infer_type(self, a, t):
        if t[0] is not None and t[0] not in _FLOATS:
            raise OpError(f"_sample_multinomial: data must be float16, float32 or float64, got "
                          f"{t[0]}")
        return t, [a.dtype] + ([t[0]] if a.get_prob else [])

    def lower(self, ctx):
        data = ctx.inputs[0]
        o = flat(ctx.outputs[0])
        if o.size == 0 or data.size == 0:
            return
        ncls = data.shape[-1]
        rows = data.size // ncls
        per_row = o.size // rows
        df = flat(data)
        pdt = F64 if data.dtype.name == F64 else F32
        get_prob = ctx.attrs.get_prob

        outs = [o] + ([flat(ctx.outputs[1])] if get_prob else [])
        kb = _Kernel(ctx, o.size)

        def build(P: _Prog) -> None:
            n = P.i // C(per_row, I64) if per_row > 1 else P.i
            base = P.let(n * C(ncls, I64), "base")
            u = P.uniform(0, F64, open_low=True)
            acc = P.let(C(0.0, F64), "acc")
            cnt = P.let(C(0, I64), "cnt")
            c = K.index_var("c")
            P.stmts.append(K.For(c, C(ncls, I64), [
                K.Assign(acc, acc + K.cast(F64, df[base + c])),
                K.Assign(cnt, cnt + K.select(acc.lt(u), C(1, I64), C(0, I64)))], "serial"))
            idx = P.let(K.minimum(cnt, C(ncls - 1, I64)), "idx")
            P.store(outs[0], idx)
            if get_prob:
                P.store(outs[1], K.call("log", K.cast(pdt, df[base + idx])))

        kb.loop(build)
        kb.emit(self.name, weight=4 * ncls)

    def reference(self, a, inputs, is_train=False):
        rng = np.random.default_rng()
        p = np.asarray(inputs[0], np.float64)
        k = p.shape[-1]
        p2 = p.reshape(-1, k)
        oshape = self.infer_shape(a, [p.shape])[1][0]
        m = math.prod(oshape) // p2.shape[0]
        cum = np.cumsum(p2, axis=1)
        u = 1.0 - rng.random((p2.shape[0], m))
        idx = np.minimum((cum[:, None, :] < u[:, :, None]).sum(-1), k - 1)
        outs = [idx.reshape(oshape).astype(as_dtype(a.dtype).np)]
        if a.get_prob:
            lp = np.log(np.take_along_axis(p2, idx, axis=1))
            outs.append(lp.reshape(oshape).astype(inputs[0].dtype))
        return outs

    def gradient(self, node, ograds):
        if not node.parsed.get_prob:
            return [g("zeros_like", node.inputs[0])]
        return [g("_backward_sample_multinomial", ograds[1], node.inputs[0],
                  type(node.inputs[0])(node, 0), name=f"{node.name}_backward")]


@simple("_backward_sample_multinomial", fusion="opaque", differentiable=False)
class BackwardSampleMultinomial(OpDef):
    """d data[n, c] = sum over the row's draws m with sample == c of dprob[n, m] / data[n, c]
    (the gradient of the log-probability output)."""

    def arguments(self, a):
        return ["ograd", "data", "sample"]

    def infer_shape(self, a, s):
        return s, [s[1]]

    def infer_type(self, a, t):
        return t, [t[1]]

    def lower(self, ctx):
        og, data, smp = ctx.inputs
        o = ctx.outputs[0]
        if o.size == 0:
            return
        ncls = data.shape[-1]
        rows = data.size // ncls
        m = og.size // rows if rows else 0
        d2 = K.TensorRef(data.buf, (rows, ncls), None, data.offset)
        o2 = K.TensorRef(o.buf, (rows, ncls), None, o.offset)
        if m == 0:
            ctx.compute(o2, lambda n, c: C(0, o.dtype), "dmultinomial")
            return
        g2 = K.TensorRef(og.buf, (rows, m), None, og.offset)
        s2 = K.TensorRef(smp.buf, (rows, m), None, smp.offset)
        r = K.reduce_axis(m)
        zero = C(0, o.dtype)
        ctx.compute(o2, lambda n, c: K.reduce("sum", K.select(
            K.cast(I64, s2[n, r.var]).eq(c), g2[n, r.var] / d2[n, c], zero), [r]),
            "dmultinomial")


# ---------------------------------------------------------------------------------------------
# shuffle
# ---------------------------------------------------------------------------------------------
@simple("_shuffle", aliases=("shuffle",), fusion="opaque", random=True, differentiable=False)
class Shuffle(OpDef):
    """A random permutation of the first axis. The permutation is a Fisher-Yates shuffle run
    by a one-task kernel (swap position i = n-1..1 with j = bits(i) mod (i + 1)): exact, O(n),
    and serial like MXNet's CPU kernel; the rows are then gathered in parallel."""

    def lower(self, ctx):
        x, o = ctx.inputs[0], ctx.outputs[0]
        if o.size == 0:
            return
        n = x.shape[0] if x.ndim else 1
        rest = x.size // n
        x2 = K.TensorRef(x.buf, (n, rest), None, x.offset)
        o2 = K.TensorRef(o.buf, (n, rest), None, o.offset)
        if n == 1:
            ctx.compute(o2, lambda r, s: x2[r, s], "shuffle_copy")
            return
        perm = ctx.temp((n,), I64)
        seed = ctx.rng_seed()
        task, t = K.index_var("task"), K.index_var("t")
        init = K.For(t, C(n, I64), [K.Store(perm.buf, t, t)], "serial")
        t2 = K.index_var("t")
        i, j, vi, vj = (K.Local(f"%fy_{nm}", as_dtype(I64)) for nm in ("i", "j", "vi", "vj"))
        key = _STREAM & _MASK
        bits = hash64(seed[0] ^ C(key, U64), i)
        swap = [K.Assign(i, C(n - 1, I64) - t2),
                K.Assign(j, K.cast(I64, bits % K.cast(U64, i + C(1, I64)))),
                K.Assign(vi, perm[i]), K.Assign(vj, perm[j]),
                K.Store(perm.buf, i, vj), K.Store(perm.buf, j, vi)]
        fy = K.For(t2, C(n - 1, I64), swap, "serial")
        kern = K.Kernel("__K__", collect_buffers([init, fy]), task, 1, [init, fy],
                        cost=n * 30, note="shuffle_perm")
        ctx.emit(kern)
        ctx.compute(o2, lambda r, s: x2[perm[r], s], "shuffle")

    def reference(self, a, inputs, is_train=False):
        x = inputs[0]
        if x.ndim == 0:
            return [x.copy()]
        return [x[np.random.default_rng().permutation(x.shape[0])]]
