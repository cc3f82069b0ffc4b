"""The process-wide random state behind ``mx.random.seed`` and the seeds of random kernels.

Generated kernels draw random numbers from a counter-based hash of (seed, element index), so
they are reproducible and thread-count independent; this module hands out the seeds.
"""
from __future__ import annotations

import threading

import numpy as np

_lock = threading.Lock()
_rng = np.random.default_rng(0)


def seed(value: int) -> None:
    global _rng
    with _lock:
        _rng = np.random.default_rng(int(value))


def next_seed() -> int:
    with _lock:
        return int(_rng.integers(1, 2**63 - 1))


def generator() -> np.random.Generator:
    """The numpy generator used by initializers and samplers (shares mx.random.seed)."""
    return _rng
