"""The asynchronous dependency engine (MXNet's ``src/engine``): every array has a variable,
every piece of work is pushed with the variables it reads and writes, and the engine runs it
as soon as everything it depends on has finished.

The model, as in MXNet:

* a :class:`Var` stands for one piece of mutable state (one NDArray's storage);
* :meth:`Engine.push` schedules ``fn()`` after every earlier-pushed *write* of its
  ``const_vars`` and every earlier-pushed *read or write* of its ``mutable_vars``. Reads of a
  variable run together; a write is exclusive and keeps later reads and writes waiting;
* an exception raised by ``fn`` is stored on the op's mutable variables; later ops touching an
  erroneous variable are skipped and inherit the error; the error is re-raised at the next
  wait on an affected variable, or by :meth:`Engine.wait_all` (then it counts as observed).

Two engines, chosen by ``MXNET_ENGINE_TYPE`` (see :func:`get`):

* :class:`ThreadedEngine` (``ThreadedEnginePerDevice``, the default, or ``ThreadedEngine``):
  a small pool of daemon worker threads per device. Generated kernels are ctypes calls that
  release the GIL, so two workers really run two kernels at once.
* :class:`NaiveEngine`: ``push`` runs ``fn`` at once in the caller and lets its exception
  propagate there: the debugging engine, and the serial reference of the engine tests.

The variable state machine is MXNet's ``ThreadedVar`` with its linked list of versioned
blocks replaced by a deque of waiting ops: a variable is either *reading* (``nreads`` granted
reads in flight, nothing queued ahead of a write) or *writing* (one granted write); the queue
holds the ops not yet granted, in push order, and its head is always a write while the
variable is not writing. An op counts the variables that have not granted it yet and becomes
ready at zero; ready ops wait in a per-device heap ordered by priority (higher first), then
push order. All engine state is guarded by one lock: in Python a lock per variable costs more
than it saves, and the lock is never held while user code runs.

A pushed ``fn`` must not wait on the engine (``wait_*`` raise inside a worker instead of
deadlocking): everything it needs must be declared in its variables.
"""
from __future__ import annotations

import atexit
import contextlib
import heapq
import os
import sys
import threading
import weakref
from collections import deque
from queue import SimpleQueue

__all__ = ["Engine", "NaiveEngine", "ThreadedEngine", "Var", "get", "set_engine"]

ENGINE_TYPES = ("ThreadedEnginePerDevice", "ThreadedEngine", "NaiveEngine")
DEFAULT_ENGINE = "ThreadedEnginePerDevice"
DEFAULT_CPU_WORKERS = 2
DEFAULT_GPU_WORKERS = 2


class Var:
    """An engine variable: the dependency handle of one piece of state (one NDArray).

    All fields belong to the engine and change only under its lock.
    """

    __slots__ = ("__weakref__", "deleted", "error", "name", "nreads", "queue", "writing")

    def __init__(self, name: str = "") -> None:
        self.nreads = 0          # granted reads not yet completed
        self.writing = False     # a granted write is in flight
        self.queue = None        # deque of (op, is_write) not granted yet, created on demand
        self.error = None        # _ErrorBox of the last failed write, or None
        self.deleted = False     # delete_variable was called
        self.name = name

    def __repr__(self) -> str:
        state = "writing" if self.writing else f"reads={self.nreads}"
        waiting = len(self.queue) if self.queue else 0
        label = f" {self.name!r}" if self.name else ""
        return f"<engine.Var{label} {state} waiting={waiting}>"


class _ErrorBox:
    """An exception shared by the op that raised it, the variables it wrote and the ops
    that inherited it; ``exc = None`` once it has been re-raised (observed)."""

    __slots__ = ("exc", "listed")

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.listed = False


class _Opr:
    """One pushed function with its dependencies (MXNet's ``OprBlock`` + ``ThreadedOpr``)."""

    __slots__ = (
        "const",
        "done",
        "fn",
        "kind",
        "mut",
        "name",
        "pool",
        "priority",
        "seq",
        "wait",
    )

    # kind: what the op is for. NORMAL: user work, skipped when an input has an error;
    # DELETE: delete_variable's work, always runs; SYNC: a wait's marker, completed inline
    # by the engine the moment it is granted (it never reaches a worker).
    NORMAL, DELETE, SYNC = 0, 1, 2

    def __init__(self, fn, const, mut, priority, name, pool, kind) -> None:
        self.fn = fn
        self.const = const
        self.mut = mut
        self.wait = 0
        self.priority = priority
        self.seq = 0
        self.name = name
        self.pool = pool
        self.kind = kind
        self.done = None


def _as_tuple(vars_) -> tuple:
    if vars_.__class__ is tuple:
        return vars_
    if vars_.__class__ is Var:
        return (vars_,)
    return tuple(vars_)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a positive integer") from None


def _device_pool_key(device) -> tuple:
    """('cpu', id) or ('gpu', id) for an ``mx.Context``-like object (``device_type``,
    ``device_id``), a string such as 'cpu' or 'gpu(1)', or None (the CPU)."""
    if device is None:
        return ("cpu", 0)
    dtype = getattr(device, "device_type", None)
    if dtype is None:
        text = str(device)
        dtype, _, rest = text.partition("(")
        dev_id = int(rest.rstrip(")")) if rest.rstrip(")").isdigit() else 0
    else:
        dev_id = int(getattr(device, "device_id", 0))
    # cpu_pinned / cpu_shared memory is worked on by the CPU workers
    return ("gpu" if dtype == "gpu" else "cpu", dev_id)


class Engine:
    """The engine interface shared by :class:`ThreadedEngine` and :class:`NaiveEngine`."""

    kind = "Engine"

    def __init__(self) -> None:
        self._bulk_size = 0

    def new_variable(self, name: str = "") -> Var:
        """A fresh variable with no pending work (one per NDArray)."""
        return Var(name)

    def push(self, fn, const_vars=(), mutable_vars=(), *, priority: int = 0, name: str = "",
             device=None) -> None:
        """Schedule ``fn()`` after the earlier work it depends on (see the module doc).

        A variable in both lists counts as mutable; duplicates are ignored. ``fn`` must not
        wait on the engine. ``device`` (an ``mx.Context``, 'cpu', 'gpu(1)' or None for the
        CPU) picks the worker pool; ``name`` labels the op in errors.
        """
        raise NotImplementedError

    def run_inline_if_idle(self, fn, const_vars=(), mutable_vars=(), *,
                           name: str = "") -> bool:
        """Run ``fn()`` at once in the caller if every variable is idle (nothing pending on
        it, no unobserved error): what a push would do, without a worker's round trip (the
        frontend's fast path for tiny ops). The variables are held while ``fn`` runs, so
        work pushed meanwhile (by other threads) waits for it, and an exception is stored
        as a worker's would be. Returns False, doing nothing, when a variable is busy."""
        raise NotImplementedError

    def wait_for_var(self, var: Var) -> None:
        """Block until every op pushed so far that reads or writes ``var`` has finished;
        re-raise the stored error of ``var`` if it has one not yet observed."""
        raise NotImplementedError

    def wait_to_read(self, var: Var) -> None:
        """Block until every write of ``var`` pushed so far has finished (MXNet's
        ``WaitForVar``: reads still in flight are not waited for); re-raise its error."""
        raise NotImplementedError

    def wait_to_write(self, var: Var) -> None:
        """Block until ``var`` may be written from the caller: every op pushed so far that
        reads or writes it has finished (the same as :meth:`wait_for_var`)."""
        self.wait_for_var(var)

    def wait_all(self) -> None:
        """Block until all pushed work has finished; re-raise the first error nobody has
        observed yet, after which every stored error counts as observed."""
        raise NotImplementedError

    def delete_variable(self, var: Var, fn=None) -> None:
        """Retire ``var`` once its pending work is done, calling ``fn()`` then (to free the
        storage). Pushing work on a deleted variable is an error."""
        raise NotImplementedError

    # bulk execution groups small ops into one engine op in MXNet; here pushes are cheap
    # enough that grouping is left to the compiler (fusion), and these exist for API compat
    def set_bulk_size(self, size: int) -> int:
        """Set the bulk size (kept for MXNet compatibility; no effect). Returns the old one."""
        old, self._bulk_size = self._bulk_size, int(size)
        return old

    @contextlib.contextmanager
    def bulk(self, size: int):
        """``with engine.bulk(n):`` as in MXNet; no effect on scheduling."""
        old = self.set_bulk_size(size)
        try:
            yield
        finally:
            self.set_bulk_size(old)

    def shutdown(self) -> None:
        """Finish pending work and stop worker threads (the engine can still be used)."""

    def _check(self, const_vars, mutable_vars) -> tuple[tuple, tuple]:
        """Validate and normalize the variable lists: duplicates dropped, a variable in
        both lists kept only as mutable."""
        cst = _as_tuple(const_vars)
        mut = _as_tuple(mutable_vars)
        for vs in (cst, mut):
            for v in vs:
                if v.__class__ is not Var or v.deleted:
                    self._bad_var(v)
        if len(mut) > 1:
            mut = tuple(dict.fromkeys(mut))
        if cst:
            if len(cst) > 1:
                cst = tuple(dict.fromkeys(cst))
            for v in cst:
                if v in mut:
                    cst = tuple(x for x in cst if x not in mut)
                    break
        return cst, mut

    @staticmethod
    def _bad_var(v) -> None:
        if v.__class__ is not Var:
            raise TypeError(f"engine ops depend on engine.Var objects, got "
                            f"{type(v).__name__}; create them with new_variable()")
        raise ValueError(f"{v!r} was deleted; no more work can be pushed on it")


class NaiveEngine(Engine):
    """Run every pushed function at once in the caller (``MXNET_ENGINE_TYPE=NaiveEngine``).

    Exceptions propagate straight out of :meth:`push`, so a debugger sees them where the op
    was issued; nothing is ever pending, so waits return at once.
    """

    kind = "NaiveEngine"

    def push(self, fn, const_vars=(), mutable_vars=(), *, priority: int = 0, name: str = "",
             device=None) -> None:
        self._check(const_vars, mutable_vars)
        fn()

    def run_inline_if_idle(self, fn, const_vars=(), mutable_vars=(), *,
                           name: str = "") -> bool:
        self.push(fn, const_vars, mutable_vars, name=name)
        return True

    def wait_for_var(self, var: Var) -> None:
        pass

    def wait_to_read(self, var: Var) -> None:
        pass

    def wait_all(self) -> None:
        pass

    def delete_variable(self, var: Var, fn=None) -> None:
        self._check((), (var,))
        var.deleted = True
        if fn is not None:
            fn()


class _Pool:
    """The worker threads of one device and their ready heap.

    The heap lives under the engine lock; every heap entry is matched by one token in a
    :class:`queue.SimpleQueue` (C code, blocks without the GIL), so an idle worker sleeps in
    ``get()`` and a woken one pops the best ready op at that moment.
    """

    def __init__(self, engine: ThreadedEngine, key: tuple, num_workers: int) -> None:
        self.key = key
        self.heap: list = []
        self.tokens: SimpleQueue = SimpleQueue()
        self.threads = []
        engine_ref = weakref.ref(engine)
        for i in range(num_workers):
            t = threading.Thread(target=_worker_loop, args=(engine_ref, self),
                                 name=f"mxc-engine-{key[0]}{key[1]}-{i}", daemon=True)
            t.start()
            engine._worker_idents.add(t.ident)
            self.threads.append(t)
        # an engine dropped without shutdown(); not at interpreter exit: weakref's exit hook
        # would run before _finish_at_exit and stop the workers under work still pending
        weakref.finalize(engine, self.stop).atexit = False

    def stop(self) -> None:
        for _ in self.threads:
            self.tokens.put(False)


def _worker_loop(engine_ref, pool: _Pool) -> None:
    get = pool.tokens.get
    while get():
        engine = engine_ref()
        if engine is None:
            return
        engine._run_next(pool)
        del engine


class ThreadedEngine(Engine):
    """Worker threads per device (``ThreadedEnginePerDevice``, MXNet's default).

    ``cpu_workers`` / ``gpu_workers`` default to ``MXNET_CPU_WORKER_NTHREADS`` /
    ``MXNET_GPU_WORKER_NTHREADS``, else 2 each. Pools start on the first push to a device.
    """

    kind = "ThreadedEnginePerDevice"

    def __init__(self, cpu_workers: int | None = None, gpu_workers: int | None = None,
                 kind: str = "ThreadedEnginePerDevice") -> None:
        super().__init__()
        self.kind = kind
        self.cpu_workers = cpu_workers or _env_int("MXNET_CPU_WORKER_NTHREADS",
                                                   DEFAULT_CPU_WORKERS)
        self.gpu_workers = gpu_workers or _env_int("MXNET_GPU_WORKER_NTHREADS",
                                                   DEFAULT_GPU_WORKERS)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)   # notified when nothing is pending
        self._pending = 0                              # pushed NORMAL/DELETE ops not done
        self._seq = 0
        self._errors: list[_ErrorBox] = []             # errors as they happened
        self._pools: dict = {}                         # device object or key -> _Pool
        self._worker_idents: set = set()
        self._cpu = None                               # the default pool, made on demand

    # -- pushing -----------------------------------------------------------------------------
    def _pool(self, device) -> _Pool:
        if device is None and self._cpu is not None:
            return self._cpu
        pool = self._pools.get(device)
        if pool is None:
            key = _device_pool_key(device)
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    n = self.gpu_workers if key[0] == "gpu" else self.cpu_workers
                    pool = self._pools[key] = _Pool(self, key, n)
                self._pools[device] = pool
                if key == ("cpu", 0):
                    self._cpu = pool
        return pool

    def push(self, fn, const_vars=(), mutable_vars=(), *, priority: int = 0, name: str = "",
             device=None) -> None:
        cst, mut = self._check(const_vars, mutable_vars)
        pool = self._cpu if device is None and self._cpu is not None else self._pool(device)
        op = _Opr(fn, cst, mut, priority, name, pool, _Opr.NORMAL)
        with self._lock:
            self._pending += 1
            if self._enqueue(op):
                heapq.heappush(pool.heap, (-priority, op.seq, op))
            else:
                return
        pool.tokens.put(True)

    def run_inline_if_idle(self, fn, const_vars=(), mutable_vars=(), *,
                           name: str = "") -> bool:
        cst, mut = self._check(const_vars, mutable_vars)
        with self._lock:
            for v in cst:
                if v.writing or v.queue or (v.error is not None and v.error.exc is not None):
                    return False
            for v in mut:
                if v.writing or v.nreads or v.queue or (
                        v.error is not None and v.error.exc is not None):
                    return False
            # granted at once, as _enqueue would
            for v in cst:
                v.nreads += 1
            for v in mut:
                v.writing = True
            self._pending += 1
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - stored and re-raised at a wait
            if name:
                exc.add_note(f"(raised asynchronously by engine op {name!r})")
            err = _ErrorBox(exc)
        else:
            with self._lock:
                # the common case: nothing was pushed on these variables meanwhile
                for v in cst:
                    if v.queue:
                        break
                else:
                    for v in mut:
                        if v.queue:
                            break
                    else:
                        for v in cst:
                            v.nreads -= 1
                        for v in mut:
                            v.writing = False
                        self._pending -= 1
                        if self._pending == 0 and self._idle._waiters:
                            self._idle.notify_all()
                        return True
            err = None
        self._finish(_Opr(None, cst, mut, 0, name, None, _Opr.NORMAL), err)
        return True

    def _enqueue(self, op: _Opr) -> bool:
        """Register ``op`` with its variables (lock held); True when it is ready at once."""
        self._seq += 1
        op.seq = self._seq
        wait = 0
        for v in op.const:
            if v.writing or v.queue:
                if v.queue is None:
                    v.queue = deque()
                v.queue.append((op, False))
                wait += 1
            else:
                v.nreads += 1
        for v in op.mut:
            if v.writing or v.nreads or v.queue:
                if v.queue is None:
                    v.queue = deque()
                v.queue.append((op, True))
                wait += 1
            else:
                v.writing = True
        op.wait = wait
        return wait == 0

    # -- running -----------------------------------------------------------------------------
    def _run_next(self, pool: _Pool) -> None:
        with self._lock:
            op = heapq.heappop(pool.heap)[2]
        err = None
        if op.kind == _Opr.NORMAL:
            # an input or output already holds an unobserved error: skip and inherit it
            for v in op.const + op.mut if op.const else op.mut:
                box = v.error
                if box is not None and box.exc is not None:
                    err = box
                    break
        if err is None:
            try:
                op.fn()
            except BaseException as exc:  # noqa: BLE001 - stored and re-raised at a wait
                if op.name:
                    exc.add_note(f"(raised asynchronously by engine op {op.name!r})")
                err = _ErrorBox(exc)
        op.fn = None   # drop the closure (and the arrays it holds) now
        self._finish(op, err)

    def _finish(self, op: _Opr, err) -> None:
        ready = [op]
        wake = {}
        done = []
        with self._lock:
            # ready grows while we walk it: SYNC markers complete inline, others are queued
            i = 0
            while i < len(ready):
                cur = ready[i]
                i += 1
                if cur is not op and cur.kind != _Opr.SYNC:
                    heapq.heappush(cur.pool.heap, (-cur.priority, cur.seq, cur))
                    wake[cur.pool] = wake.get(cur.pool, 0) + 1
                    continue
                self._release(cur, err if cur is op else None, ready)
                if cur.kind == _Opr.SYNC:
                    done.append(cur.done)
                else:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()
        for lk in done:
            lk.release()
        for pool, n in wake.items():
            put = pool.tokens.put
            for _ in range(n):
                put(True)

    def _release(self, op: _Opr, err, ready: list) -> None:
        """Give up ``op``'s variables (lock held), granting waiting ops; newly ready ops are
        appended to ``ready``. MXNet's Complete{Read,Write}Dependency."""
        for v in op.const:
            v.nreads -= 1
            if v.nreads == 0 and v.queue:
                nxt = v.queue.popleft()[0]          # the head is a write (see module doc)
                v.writing = True
                nxt.wait -= 1
                if nxt.wait == 0:
                    ready.append(nxt)
        for v in op.mut:
            if err is not None:
                v.error = err
                if not err.listed:
                    err.listed = True
                    if len(self._errors) >= 64:   # forget the ones observed by wait_for_var
                        self._errors = [b for b in self._errors if b.exc is not None]
                    self._errors.append(err)
            v.writing = False
            q = v.queue
            if not q:
                continue
            while q and not q[0][1]:
                nxt = q.popleft()[0]
                v.nreads += 1
                nxt.wait -= 1
                if nxt.wait == 0:
                    ready.append(nxt)
            if q and v.nreads == 0:
                nxt = q.popleft()[0]
                v.writing = True
                nxt.wait -= 1
                if nxt.wait == 0:
                    ready.append(nxt)

    # -- waiting -----------------------------------------------------------------------------
    def _check_not_worker(self, what: str) -> None:
        if threading.get_ident() in self._worker_idents:
            raise RuntimeError(f"engine.{what}() called inside a pushed function: it could "
                               f"deadlock the engine. Declare what the function reads and "
                               f"writes in its const_vars/mutable_vars instead.")

    def _wait_var(self, var: Var, as_write: bool, what: str) -> None:
        self._check_not_worker(what)
        if var.__class__ is not Var:
            raise TypeError(f"engine.{what}() takes an engine.Var, got {type(var).__name__}")
        done = None
        with self._lock:
            if var.writing or var.queue or (as_write and var.nreads):
                # a marker op queued behind the work to wait for; it is busy now, so the
                # marker cannot be ready yet, and whoever grants it releases `done`
                marker = _Opr(None, () if as_write else (var,), (var,) if as_write else (),
                              0, what, None, _Opr.SYNC)
                done = marker.done = threading.Lock()
                done.acquire()
                self._enqueue(marker)
        if done is not None:
            done.acquire()
        self._raise_error_of(var)

    def _raise_error_of(self, var: Var) -> None:
        box = var.error
        if box is None:
            return
        with self._lock:
            exc, box.exc = box.exc, None
            var.error = None
        if exc is not None:
            raise exc

    def wait_for_var(self, var: Var) -> None:
        self._wait_var(var, True, "wait_for_var")

    def wait_to_read(self, var: Var) -> None:
        self._wait_var(var, False, "wait_to_read")

    def wait_to_write(self, var: Var) -> None:
        self._wait_var(var, True, "wait_to_write")

    def wait_all(self) -> None:
        self._check_not_worker("wait_all")
        self._drain()
        with self._lock:
            first = next((b.exc for b in self._errors if b.exc is not None), None)
            for b in self._errors:
                b.exc = None
            self._errors.clear()
        if first is not None:
            raise first

    def _drain(self) -> None:
        with self._lock:
            while self._pending:
                self._idle.wait()

    def delete_variable(self, var: Var, fn=None) -> None:
        _, mut = self._check((), (var,))
        var.deleted = True
        op = _Opr(fn or _nothing, (), mut, 0, "delete_variable", self._pool(None),
                  _Opr.DELETE)
        with self._lock:
            self._pending += 1
            if not self._enqueue(op):
                return
            heapq.heappush(op.pool.heap, (0, op.seq, op))
        op.pool.tokens.put(True)

    # -- lifetime ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Finish pending work (errors stay stored) and stop the workers; a later push
        starts new ones."""
        if threading.get_ident() in self._worker_idents:
            return
        self._drain()
        with self._lock:
            pools = {id(p): p for p in self._pools.values()}.values()
            self._pools = {}
            self._cpu = None
        for p in pools:
            p.stop()
        for p in pools:
            for t in p.threads:
                t.join(timeout=5)
                self._worker_idents.discard(t.ident)

    def _after_fork_in_child(self) -> None:
        # the workers did not survive the fork (the parent drained its work before forking);
        # variables keep their state, new workers start on the next push
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._pools = {}
        self._cpu = None
        self._worker_idents = set()


def _nothing() -> None:
    pass


# -- the process-wide engine ---------------------------------------------------------------
_engine: Engine | None = None
_engine_lock = threading.Lock()


def _make(kind: str) -> Engine:
    if kind == "NaiveEngine":
        return NaiveEngine()
    if kind in ("ThreadedEnginePerDevice", "ThreadedEngine", "ThreadedEnginePooled"):
        return ThreadedEngine(kind=kind)
    raise ValueError(f"unknown engine type {kind!r}; expected one of {', '.join(ENGINE_TYPES)}")


def get() -> Engine:
    """The process-wide engine, made on first use from ``MXNET_ENGINE_TYPE``
    ('ThreadedEnginePerDevice' by default, 'ThreadedEngine', or 'NaiveEngine')."""
    eng = _engine
    if eng is not None:
        return eng
    return _create_from_env()


def _create_from_env() -> Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            kind = os.environ.get("MXNET_ENGINE_TYPE") or DEFAULT_ENGINE
            try:
                _engine = _make(kind)
            except ValueError as exc:
                raise ValueError(f"MXNET_ENGINE_TYPE: {exc}") from None
        return _engine


def set_engine(kind: str) -> Engine:
    """Replace the process-wide engine (tests, debugging): the old one finishes its pending
    work first (its unobserved errors are dropped). Returns the new engine."""
    global _engine
    new = _make(kind)
    with _engine_lock:
        old, _engine = _engine, new
    if old is not None:
        old.shutdown()
    return new


@atexit.register
def _finish_at_exit() -> None:
    # like MXNet's engine shutdown: work already pushed (e.g. a save) completes before exit,
    # and an error nobody waited for is at least reported
    eng = _engine
    if not isinstance(eng, ThreadedEngine) or threading.get_ident() in eng._worker_idents:
        return
    eng._drain()
    lost = [b.exc for b in eng._errors if b.exc is not None]
    if lost:
        first = lost[0]
        print(f"mxc.runtime.engine: {len(lost)} error(s) raised by asynchronous work were "
              f"never waited for; the first: {type(first).__name__}: {first}", file=sys.stderr)


def _before_fork() -> None:
    # as MXNet stops its engine before fork: finish pending work so the child starts clean
    eng = _engine
    if isinstance(eng, ThreadedEngine) and threading.get_ident() not in eng._worker_idents:
        eng._drain()


def _after_fork_in_child() -> None:
    if isinstance(_engine, ThreadedEngine):
        _engine._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
