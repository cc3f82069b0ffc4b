"""``mx.random``: the global seed, and the random samplers of ``mx.nd.random`` and
``mx.sym.random`` (MXNet's python/mxnet/{ndarray,symbol}/random.py).

``seed`` resets the process-wide generator of :mod:`mxc.runtime.random`, which hands out the
seeds of random kernels (Dropout, samplers) and drives initializers, so runs reproduce.

The samplers dispatch like MXNet's ``_random_helper``: numbers as distribution parameters run
``_random_<dist>`` (parameters become attributes; ``shape`` defaults to ``(1,)`` for NDArrays),
arrays run ``_sample_<dist>`` (one distribution per element, ``shape`` samples each). Both
frontends share one definition of each function (:func:`_samplers`); ``mx.nd.random`` and
``mx.sym.random`` resolve these before the generated operator functions (``uniform_like``,
``sample_*`` ... remain available there).
"""
from __future__ import annotations

import numpy as np

from ..runtime import random as _rt

__all__ = ["exponential", "gamma", "generalized_negative_binomial", "multinomial",
           "negative_binomial", "normal", "poisson", "randint", "randn", "seed", "shuffle",
           "uniform"]

_NUMERIC = (int, float, np.generic)

# the attribute names of each _random_<dist> op's distribution parameters
_PARAMS = {"uniform": ("low", "high"), "normal": ("loc", "scale"), "gamma": ("alpha", "beta"),
           "exponential": ("lam",), "poisson": ("lam",), "negative_binomial": ("k", "p"),
           "generalized_negative_binomial": ("mu", "alpha"), "randint": ("low", "high")}


def seed(seed_state: int, ctx="all") -> None:
    """Seed every random number generator (``ctx`` is accepted for MXNet compatibility)."""
    if not isinstance(seed_state, (int, np.integer)) or isinstance(seed_state, bool):
        raise ValueError("sd must be int")  # noqa: TRY004 - MXNet raises ValueError
    _rt.seed(int(seed_state))


class _Frontend:
    """Calls the sampling operators through ``mx.nd`` (imperative, ``ctx``/``out``) or
    ``mx.sym`` (graph building)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _api(self):
        if self.kind == "nd":
            from . import ndarray as m
            return m.NDArray, m._internal
        from . import symbol as m
        return m.Symbol, m._internal

    def call(self, op: str, inputs: list, attrs: dict, out):
        _, internal = self._api()
        fn = getattr(internal, op)
        if self.kind == "nd":
            return fn(*inputs, out=out, **attrs)
        if out is not None:
            raise TypeError(f"mx.sym.random: {op} builds a symbol and takes no 'out' array")
        return fn(*inputs, **attrs)

    def draw(self, dist: str, params: list, shape, dtype, ctx, out, kwargs: dict):
        """MXNet's ``_random_helper``."""
        arr, _ = self._api()
        attrs = dict(kwargs)
        if dtype is not None:
            attrs["dtype"] = dtype
        kind = "NDArray" if self.kind == "nd" else "Symbol"
        if isinstance(params[0], arr):
            for p in params[1:]:
                if not isinstance(p, arr):
                    raise TypeError("Distribution parameters must all have the same type, "
                                    f"but got both {type(params[0])} and {type(p)}.")
            if dist == "randint":
                raise ValueError(f"randint: low and high must be numbers, not {kind}s")
            if shape is not None:
                attrs["shape"] = shape
            return self.call("_sample_" + dist, list(params), attrs, out)
        if isinstance(params[0], _NUMERIC) and not isinstance(params[0], (bool, np.bool_)):
            for p in params[1:]:
                if not isinstance(p, _NUMERIC):
                    raise TypeError("Distribution parameters must all have the same type, "
                                    f"but got both {type(params[0])} and {type(p)}.")
            if self.kind == "nd":
                from .context import current_context
                if shape is None:
                    shape = out.shape if out is not None else 1
                if dtype is None and out is not None:
                    attrs["dtype"] = out.dtype
                attrs["ctx"] = ctx if ctx is not None else current_context()
            elif ctx is not None:
                attrs["ctx"] = ctx
            if shape is not None:
                attrs["shape"] = shape
            attrs.update(zip(_PARAMS[dist], params))
            return self.call("_random_" + dist, [], attrs, out)
        raise ValueError(f"Distribution parameters must be either {kind} or numbers, but got "
                         f"{type(params[0])}.")


def _samplers(fe: _Frontend) -> dict:
    """The sampling functions of one frontend, by name."""

    def uniform(low=0, high=1, shape=None, dtype=None, ctx=None, out=None, **kwargs):
        """Samples uniform on [low, high). Numbers give ``shape`` samples (default 1);
        arrays ``low``/``high`` give ``shape`` samples per element pair."""
        return fe.draw("uniform", [low, high], shape, dtype, ctx, out, kwargs)

    def normal(loc=0, scale=1, shape=None, dtype=None, ctx=None, out=None, **kwargs):
        """Samples from N(loc, scale^2) (``scale`` is the standard deviation)."""
        return fe.draw("normal", [loc, scale], shape, dtype, ctx, out, kwargs)

    def randn(*shape, **kwargs):
        """``normal(loc, scale, shape)`` with the shape as positional arguments."""
        loc = kwargs.pop("loc", 0)
        scale = kwargs.pop("scale", 1)
        dtype = kwargs.pop("dtype", None)
        ctx = kwargs.pop("ctx", None)
        out = kwargs.pop("out", None)
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return fe.draw("normal", [loc, scale], tuple(shape) or None, dtype, ctx, out, kwargs)

    def poisson(lam=1, shape=None, dtype=None, ctx=None, out=None, **kwargs):
        """Samples from Poisson(lam), as floats."""
        return fe.draw("poisson", [lam], shape, dtype, ctx, out, kwargs)

    def exponential(scale=1, shape=None, dtype=None, ctx=None, out=None, **kwargs):
        """Samples from the exponential distribution of mean ``scale`` (rate 1/scale)."""
        return fe.draw("exponential", [1.0 / scale], shape, dtype, ctx, out, kwargs)

    def gamma(alpha=1, beta=1, shape=None, dtype=None, ctx=None, out=None, **kwargs):
        """Samples from Gamma(shape ``alpha``, scale ``beta``)."""
        return fe.draw("gamma", [alpha, beta], shape, dtype, ctx, out, kwargs)

    def negative_binomial(k=1, p=1, shape=None, dtype=None, ctx=None, out=None, **kwargs):
        """Samples from the negative binomial distribution (``k`` failures, probability
        ``p``), as floats."""
        return fe.draw("negative_binomial", [k, p], shape, dtype, ctx, out, kwargs)

    def generalized_negative_binomial(mu=1, alpha=1, shape=None, dtype=None, ctx=None,
                                      out=None, **kwargs):
        """Samples from the negative binomial distribution of mean ``mu`` and dispersion
        ``alpha`` (Poisson(mu) for alpha = 0), as floats."""
        return fe.draw("generalized_negative_binomial", [mu, alpha], shape, dtype, ctx, out,
                       kwargs)

    def multinomial(data, shape=None, get_prob=fe.kind != "nd", out=None, dtype="int32",
                    **kwargs):
        """Draws class indices from the distributions on the last axis of ``data``; with
        ``get_prob`` also their log-probabilities."""
        attrs = dict(kwargs, get_prob=get_prob, dtype=dtype)
        if shape is not None:
            attrs["shape"] = shape
        return fe.call("_sample_multinomial", [data], attrs, out)

    def shuffle(data, **kwargs):
        """``data`` with its first axis randomly permuted."""
        out = kwargs.pop("out", None)
        return fe.call("_shuffle", [data], kwargs, out)

    def randint(low, high, shape=None, dtype=None, ctx=None, out=None, **kwargs):
        """Integers uniform on [low, high) (int32 unless ``dtype='int64'``)."""
        return fe.draw("randint", [low, high], shape, dtype, ctx, out, kwargs)

    fns = {"uniform": uniform, "normal": normal, "poisson": poisson, "exponential": exponential,
           "gamma": gamma, "negative_binomial": negative_binomial,
           "generalized_negative_binomial": generalized_negative_binomial,
           "multinomial": multinomial, "shuffle": shuffle, "randint": randint}
    if fe.kind == "nd":
        fns["randn"] = randn
    for name, f in fns.items():
        f.__module__ = __name__
        f.__qualname__ = name
    return fns


_ND = _samplers(_Frontend("nd"))
_SYM: dict = {}

uniform = _ND["uniform"]
normal = _ND["normal"]
randn = _ND["randn"]
poisson = _ND["poisson"]
exponential = _ND["exponential"]
gamma = _ND["gamma"]
negative_binomial = _ND["negative_binomial"]
generalized_negative_binomial = _ND["generalized_negative_binomial"]
multinomial = _ND["multinomial"]
shuffle = _ND["shuffle"]
randint = _ND["randint"]


def nd_functions() -> dict:
    """The ``mx.nd.random`` samplers (looked up before the generated operator functions)."""
    return _ND


def sym_functions() -> dict:
    """The ``mx.sym.random`` samplers."""
    if not _SYM:
        _SYM.update(_samplers(_Frontend("sym")))
    return _SYM


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    from . import ndarray
    return getattr(ndarray.random, name)
