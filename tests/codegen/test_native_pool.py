"""The native thread pool (``codegen.native_pool``): every task of every call runs exactly
once, in call order, for any thread count; concurrent callers fall back to their own thread;
workers that went to sleep wake up for the next job; a thread done with its range takes over
tasks of a slower one."""
from __future__ import annotations

import ctypes
import threading
import time

import numpy as np
import pytest

from mxc.codegen.native_pool import CALL, native_pool

POOL = native_pool()
pytestmark = pytest.mark.skipif(POOL is None, reason="native pool: Linux x86-64/AArch64 only")

KERNEL = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                          ctypes.c_void_p)


class Recorder:
    """A kernel (a ctypes callback) counting the tasks it ran and the order of calls."""

    def __init__(self, n_tasks: int, log: list, tag: int, delay=None) -> None:
        self.hits = np.zeros(max(n_tasks, 1), np.int64)
        self.log, self.tag = log, tag
        self.threads: set = set()
        self.ran_on: dict = {}                 # task -> thread of its last run
        self.delay = delay                     # task -> seconds it sleeps (GIL released)
        self.fn = KERNEL(self._run)

    def _run(self, b, e, args, scratch):
        self.hits[b:e] += 1
        self.threads.add(threading.get_ident())
        self.log.append(self.tag)
        for t in range(b, e):
            self.ran_on[t] = threading.get_ident()
            if self.delay is not None:
                time.sleep(self.delay(t))


def _calls(recs, n_tasks, parallel=True):
    arr = (CALL * len(recs))()
    for c, r, n in zip(arr, recs, n_tasks):
        c[0] = ctypes.cast(r.fn, ctypes.c_void_p).value
        c[1] = 0
        c[2] = n
        c[3] = int(parallel)
    return arr


def _scratch(n=8):
    return (ctypes.c_void_p * n)(*([0] * n))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_task_once_in_order(threads):
    POOL.ensure_workers(2)
    sizes = [0, 1, 2, 3, 17, 1000]
    log: list = []
    recs = [Recorder(n, log, i) for i, n in enumerate(sizes)]
    calls = _calls(recs, sizes)
    for _ in range(50):
        POOL.run(calls, len(recs), _scratch(), threads)
    for r, n in zip(recs, sizes):
        assert (r.hits[:n] == 50).all() and (n > 0 or r.hits.sum() == 0)
    # a call's tasks all finish before the next call starts
    order = [t for i, t in enumerate(log) if i == 0 or log[i - 1] != t]
    assert order == [i for _ in range(50) for i, n in enumerate(sizes) if n > 0]


def test_serial_calls_stay_on_the_caller():
    POOL.ensure_workers(1)
    log: list = []
    rec = Recorder(100, log, 0)
    POOL.run(_calls([rec], [100], parallel=False), 1, _scratch(), 2)
    assert (rec.hits == 1).all() and rec.threads == {threading.get_ident()}


def test_sleeping_workers_wake_up():
    POOL.ensure_workers(1)
    log: list = []
    rec = Recorder(64, log, 0, delay=lambda t: 0.001)   # slow enough for a waking worker
    calls = _calls([rec], [64])
    POOL.run(calls, 1, _scratch(), 2)
    time.sleep(0.05)                      # long past the spin phase: workers sleep
    POOL.run(calls, 1, _scratch(), 2)
    assert (rec.hits == 2).all() and len(rec.threads) == 2


def test_idle_thread_takes_over_a_slow_range():
    # the caller's range [0, 8) is slow, the worker's [8, 16) fast: the worker claims tasks
    # of the caller's range once its own are done; every task still runs exactly once
    POOL.ensure_workers(1)
    rec = Recorder(16, [], 0, delay=lambda t: 0.01 if t < 8 else 0.0)
    POOL.run(_calls([rec], [16]), 1, _scratch(), 2)
    assert (rec.hits == 1).all()
    me = threading.get_ident()
    assert any(rec.ran_on[t] != me for t in range(8))


def test_concurrent_callers():
    POOL.ensure_workers(1)
    errors = []

    def caller(seed):
        try:
            log: list = []
            rng = np.random.default_rng(seed)
            sizes = [int(v) for v in rng.integers(1, 300, 5)]
            recs = [Recorder(n, log, i) for i, n in enumerate(sizes)]
            calls = _calls(recs, sizes)
            for _ in range(30):
                POOL.run(calls, len(recs), _scratch(), 2)
            for r, n in zip(recs, sizes):
                assert (r.hits[:n] == 30).all()
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=caller, args=(s,)) for s in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in ts)

