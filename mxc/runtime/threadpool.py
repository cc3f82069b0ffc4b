"""The CPU thread pool that runs a kernel's task range on every core.

Kernels are ctypes functions ``k(task_begin, task_end, args, scratch)``; a ctypes call releases
the GIL, so Python threads calling different ranges really run in parallel. Each thread owns a
64-byte aligned scratch arena that template kernels (GEMM packing) use.

The thread count follows MXNet's conventions: ``MXC_NUM_THREADS``, then ``OMP_NUM_THREADS``,
then ``MXNET_CPU_WORKER_NTHREADS``, else the number of cores.
"""
from __future__ import annotations

import os
import threading

import numpy as np

# below this much work (roughly element-operations) a second thread costs more than it saves
PARALLEL_THRESHOLD = 1 << 15


def default_num_threads() -> int:
    for var in ("MXC_NUM_THREADS", "OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS"):
        v = os.environ.get(var)
        if v:
            try:
                return max(1, int(v))
            except ValueError:
                pass
    return max(1, os.cpu_count() or 1)


class _Scratch:
    def __init__(self) -> None:
        self.buf = np.zeros(0, np.uint8)
        self.ptr = 0

    def get(self, nbytes: int) -> int:
        if nbytes <= 0:
            return 0
        if self.buf.size < nbytes + 64:
            self.buf = np.zeros(nbytes + 64, np.uint8)
            base = self.buf.ctypes.data
            self.ptr = (base + 63) // 64 * 64
        return self.ptr


class ThreadPool:
    """Split [0, n_tasks) of a kernel call over ``num_threads`` threads (caller included)."""

    def __init__(self, num_threads: int | None = None) -> None:
        self.num_threads = num_threads or default_num_threads()
        self._local = threading.local()
        self._busy = threading.Lock()
        self._workers: list[_Worker] = [_Worker(i) for i in range(self.num_threads - 1)]

    def caller_scratch(self, nbytes: int) -> int:
        """This thread's 64-byte aligned scratch of at least ``nbytes`` (0 when none)."""
        return self._scratch().get(nbytes)

    def _scratch(self) -> _Scratch:
        sc = getattr(self._local, "scratch", None)
        if sc is None:
            sc = self._local.scratch = _Scratch()
        return sc

    def run(self, fn, n_tasks: int, args, scratch_bytes: int = 0, cost: int = 0) -> None:
        """Run tasks [0, n_tasks). Safe to call from several threads at once (engine
        workers): a caller that finds the helpers busy runs its whole range itself."""
        if n_tasks <= 0:
            return
        nt = min(self.num_threads, n_tasks)
        if nt <= 1 or cost < PARALLEL_THRESHOLD or not self._busy.acquire(blocking=False):
            fn(0, n_tasks, args, self._scratch().get(scratch_bytes))
            return
        try:
            self._run_split(fn, n_tasks, nt, args, scratch_bytes)
        finally:
            self._busy.release()

    def _run_split(self, fn, n_tasks: int, nt: int, args, scratch_bytes: int) -> None:
        bounds = [n_tasks * i // nt for i in range(nt + 1)]
        for w, (b, e) in zip(self._workers, zip(bounds[1:-1], bounds[2:])):
            w.submit(fn, b, e, args, scratch_bytes)
        err = None
        try:
            fn(bounds[0], bounds[1], args, self._scratch().get(scratch_bytes))
        except BaseException as ex:  # pragma: no cover - ctypes kernels do not raise
            err = ex
        for w in self._workers[: nt - 1]:
            try:
                w.wait()
            except BaseException as ex:
                err = err or ex
        if err is not None:
            raise err


class _Worker:
    def __init__(self, i: int) -> None:
        self.scratch = _Scratch()
        self.job = None
        self.error = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"mxc-cpu-{i}", daemon=True)
        self.thread.start()

    def submit(self, fn, b, e, args, scratch_bytes) -> None:
        self.done.clear()
        self.job = (fn, b, e, args, scratch_bytes)
        self.ready.set()

    def wait(self) -> None:
        self.done.wait()
        err, self.error = self.error, None
        if err is not None:
            raise err

    def _loop(self) -> None:
        while True:
            self.ready.wait()
            self.ready.clear()
            fn, b, e, args, sb = self.job
            try:
                fn(b, e, args, self.scratch.get(sb))
            except BaseException as ex:  # surfaced by wait(); the worker lives on
                self.error = ex
            finally:
                self.done.set()


_worker_bufs: list = []          # per worker: its largest scratch so far
_retired: list = []              # outgrown buffers: a native run may still be using them
_worker_lock = threading.Lock()


def worker_scratch(nbytes: int, count: int) -> list:
    """Addresses of ``count`` 64-byte aligned scratch buffers of at least ``nbytes``, one
    per native-pool worker (only the run holding the native pool uses them). Grow-only, and
    outgrown buffers are kept: a run that started with the old pointers may still be
    writing them."""
    if count <= 0:
        return []
    with _worker_lock:
        while len(_worker_bufs) < count:
            _worker_bufs.append(_Scratch())
        out = []
        for sc in _worker_bufs[:count]:
            if nbytes > 0 and sc.buf.size < nbytes + 64:
                _retired.append(sc.buf)
            out.append(sc.get(nbytes))
        return out


_pool: ThreadPool | None = None
_pool_lock = threading.Lock()


_child_threads: int | None = None   # a forked child's thread count (its parent's)


def get_pool() -> ThreadPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPool(_child_threads)
        return _pool


def set_num_threads(n: int) -> None:
    """Replace the global pool (mxc setting; also honoured through MXC_NUM_THREADS)."""
    global _pool
    with _pool_lock:
        _pool = ThreadPool(max(1, int(n)))


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's worker threads (and a lock some parent thread
    may have held): it gets a pool of its own on first use, with the parent's thread count."""
    global _pool, _pool_lock, _worker_lock, _child_threads
    if _pool is not None:
        _child_threads = _pool.num_threads
    _pool_lock = threading.Lock()
    _worker_lock = threading.Lock()
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
