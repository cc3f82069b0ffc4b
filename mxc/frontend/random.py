"""``mx.random``: the global seed, and the random samplers of ``mx.nd.random``.

``seed`` resets the process-wide generator of :mod:`mxc.runtime.random`, which hands out the
seeds of random kernels (Dropout, samplers) and drives initializers, so runs reproduce.
"""
from __future__ import annotations

from ..runtime import random as _rt

__all__ = ["seed"]


def seed(seed_state: int, ctx="all") -> None:
    """Seed every random number generator (``ctx`` is accepted for MXNet compatibility)."""
    if not isinstance(seed_state, int):
        raise ValueError("sd must be int")  # noqa: TRY004 - MXNet raises ValueError
    _rt.seed(seed_state)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    from . import ndarray
    return getattr(ndarray.random, name)
