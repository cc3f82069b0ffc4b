"""``mx.profiler``: time what mxc runs and dump it as a Chrome trace (MXNet 1.9.1's
``python/mxnet/profiler.py`` over ``src/profiler``).

What is recorded while the state is 'run' (and not paused)
    * every piece of work pushed to the dependency engine, named as it was pushed: an
      imperative operator by its op name (``FullyConnected``, ``_plus_scalar``...), an
      executor pass as ``executor.forward`` / ``executor.backward`` (MXNet's categories:
      ``operator`` for imperative ops, ``symbolic`` for executor passes);
    * inside an executor pass, each compiled kernel call of the program, named by the graph
      node it computes (fused kernels by the node that heads the group), category
      ``operator`` -- MXNet's per-operator timings of a bound graph;
    * the user's :class:`Task` / :class:`Frame` / :class:`Event` ranges, :class:`Counter`
      values and :class:`Marker` instants.

How
    :func:`set_state('run') <set_state>` wraps the process engine's ``push`` /
    ``run_inline_if_idle`` so each pushed function is timed where it runs (a worker thread:
    the trace's ``tid``), and wraps ``Program.run`` so an executor pass times its kernel calls
    one by one; 'stop' removes both wrappers, so a stopped profiler costs nothing.

``dump()`` writes the events as Chrome trace JSON (``chrome://tracing``, Perfetto) to the
configured ``filename``; ``dumps()`` returns the aggregate statistics table (or JSON) when
``aggregate_stats=True`` was configured.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings

from .base import MXNetError

__all__ = [
    "Counter",
    "Domain",
    "Event",
    "Frame",
    "Marker",
    "Task",
    "dump",
    "dump_profile",
    "dumps",
    "pause",
    "profiler_set_config",
    "profiler_set_state",
    "resume",
    "scope",
    "set_config",
    "set_state",
    "state",
]

_CONFIG_KEYS = ("profile_all", "profile_symbolic", "profile_imperative", "profile_memory",
                "profile_api", "filename", "continuous_dump", "dump_period",
                "aggregate_stats", "profile_process")
_DEFAULT_CONFIG = {"profile_all": False, "profile_symbolic": True, "profile_imperative": True,
                   "profile_memory": True, "profile_api": True, "filename": "profile.json",
                   "continuous_dump": False, "dump_period": 1.0, "aggregate_stats": False,
                   "profile_process": "worker"}


class _Profiler:
    """The process-wide profiler state: configuration, recorded trace events and the
    aggregate statistics."""

    def __init__(self) -> None:
        self.config = dict(_DEFAULT_CONFIG)
        self.state = "stop"
        self.paused = False
        self.lock = threading.Lock()
        self.events: list = []       # Chrome trace events not yet dumped
        self.stats: dict = {}        # (category, name) -> [count, total, min, max] (us)
        self.t0 = time.perf_counter_ns()
        self.epoch_us = time.time_ns() // 1000
        self.engine = None           # the engine whose methods are wrapped

    def now_us(self) -> float:
        return self.epoch_us + (time.perf_counter_ns() - self.t0) / 1000.0

    @property
    def active(self) -> bool:
        return self.state == "run" and not self.paused

    def wants(self, category: str) -> bool:
        """Whether engine work of ``category`` ('operator': imperative ops, 'symbolic':
        executor passes) is recorded."""
        c = self.config
        if c["profile_all"]:
            return True
        return c["profile_symbolic"] if category == "symbolic" else c["profile_imperative"]

    def add(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)

    def add_range(self, name: str, cat: str, begin: float, end: float, tid=None,
                  args=None) -> None:
        """A complete range: B/E events (as MXNet writes them) and its statistics."""
        tid = threading.get_ident() if tid is None else tid
        b = {"name": name, "cat": cat, "ph": "B", "ts": begin, "pid": os.getpid(), "tid": tid}
        e = {"name": name, "cat": cat, "ph": "E", "ts": end, "pid": os.getpid(), "tid": tid}
        if args:
            b["args"] = args
        with self.lock:
            self.events.append(b)
            self.events.append(e)
            if self.config["aggregate_stats"]:
                st = self.stats.get((cat, name))
                d = end - begin
                if st is None:
                    self.stats[(cat, name)] = [1, d, d, d]
                else:
                    st[0] += 1
                    st[1] += d
                    st[2] = min(st[2], d)
                    st[3] = max(st[3], d)


_P = _Profiler()
_local = threading.local()   # .depth: nesting of timed engine work on this thread


# ------------------------------------------------------------------------------------------
# hooks: engine work and executor kernel calls
# ------------------------------------------------------------------------------------------
def _category(name: str) -> str:
    return "symbolic" if name.startswith("executor.") else "operator"


def _timed(fn, name: str):
    """``fn`` timed as one event when it runs, if the profiler records it now (decided at
    push time, so work pushed before ``set_state('stop')`` is still recorded); nested
    timed work (a push from inside) is not counted twice."""
    cat = _category(name)
    if not (_P.active and _P.wants(cat)):
        return fn

    def run() -> None:
        if getattr(_local, "depth", 0):
            fn()
            return
        _local.depth = 1
        _local.kernels = cat == "symbolic"
        t0 = _P.now_us()
        try:
            fn()
        finally:
            _P.add_range(name or "<engine op>", cat, t0, _P.now_us())
            _local.depth = 0
            _local.kernels = False
    return run


def _install_engine_hooks() -> None:
    from .runtime import engine as _engine
    eng = _engine.get()
    if _P.engine is eng:
        return
    _remove_engine_hooks()
    cls = type(eng)

    def push(fn, const_vars=(), mutable_vars=(), *, priority=0, name="", device=None):
        cls.push(eng, _timed(fn, name), const_vars, mutable_vars, priority=priority,
                 name=name, device=device)

    def run_inline_if_idle(fn, const_vars=(), mutable_vars=(), *, name=""):
        return cls.run_inline_if_idle(eng, _timed(fn, name), const_vars, mutable_vars,
                                      name=name)
    eng.push = push
    eng.run_inline_if_idle = run_inline_if_idle
    _P.engine = eng


def _remove_engine_hooks() -> None:
    eng = _P.engine
    if eng is None:
        return
    for attr in ("push", "run_inline_if_idle"):
        eng.__dict__.pop(attr, None)
    _P.engine = None


_orig_program_run = None


def _program_run_timed(self, section=None) -> None:
    """``Program.run`` timing each kernel call, inside a profiled executor pass."""
    if not getattr(_local, "kernels", False) or (self.debug_poison and
                                                  self.arena is not None):
        return _orig_program_run(self, section)
    from .runtime.threadpool import get_pool
    pool = get_pool()
    if section in (None, "forward"):
        self.reseed()
    b, e = self.sections.get(section, (0, len(self.calls))) if section else \
        (0, len(self.calls))
    for i in range(b, e):
        c = self.calls[i]
        t0 = _P.now_us()
        pool.run(c.fn, c.n_tasks, self._args[i], c.scratch_bytes, c.cost)
        _P.add_range(c.node or c.name, "operator", t0, _P.now_us(),
                     args={"kernel": c.name, "section": section or "all"})


def _install_program_hook() -> None:
    global _orig_program_run
    from .runtime.program import Program
    if _orig_program_run is None:
        # kept for good: runs pushed before 'stop' still call the wrapper, which then
        # falls through to the original
        _orig_program_run = Program.run
    Program.run = _program_run_timed


def _remove_program_hook() -> None:
    from .runtime.program import Program
    if _orig_program_run is not None:
        Program.run = _orig_program_run


# ------------------------------------------------------------------------------------------
# configuration and state
# ------------------------------------------------------------------------------------------
def set_config(**kwargs) -> None:
    """Configure the profiler: ``profile_all``, ``profile_symbolic``,
    ``profile_imperative``, ``profile_memory``, ``profile_api``, ``filename``,
    ``continuous_dump``, ``dump_period``, ``aggregate_stats``, ``profile_process``."""
    for k, v in kwargs.items():
        if k not in _CONFIG_KEYS:
            raise MXNetError(f"profiler.set_config: unknown option '{k}'; options are "
                             f"{list(_CONFIG_KEYS)}")
        if k == "profile_process" and v not in ("worker", "server"):
            raise MXNetError(f"profiler.set_config: profile_process must be 'worker' or "
                             f"'server', got {v!r}")
        if k == "filename":
            v = os.fspath(v)
        _P.config[k] = v


def profiler_set_config(mode="symbolic", filename="profile.json") -> None:
    """Deprecated (MXNet 1.x): ``set_config`` with ``mode`` 'symbolic' or 'all'."""
    warnings.warn("profiler.profiler_set_config() is deprecated. Please use "
                  "profiler.set_config() instead", DeprecationWarning, stacklevel=2)
    if mode not in ("symbolic", "all"):
        raise MXNetError(f"profiler_set_config: mode must be 'symbolic' or 'all', got {mode!r}")
    set_config(profile_symbolic=True, profile_all=mode == "all", filename=filename)


def set_state(state="stop", profile_process="worker") -> None:
    """'run' starts recording, 'stop' stops it."""
    if state not in ("run", "stop"):
        raise MXNetError(f"profiler.set_state: state must be 'run' or 'stop', got {state!r}")
    if profile_process not in ("worker", "server"):
        raise MXNetError(f"profiler.set_state: profile_process must be 'worker' or 'server', "
                         f"got {profile_process!r}")
    if profile_process == "server":
        return  # no kvstore server processes profile in mxc's in-process kvstore
    if state == "run":
        _install_engine_hooks()
        _install_program_hook()
        _P.paused = False
        _P.state = "run"
    else:
        _P.state = "stop"
        _remove_engine_hooks()
        _remove_program_hook()


def profiler_set_state(state="stop") -> None:
    """Deprecated (MXNet 1.x): ``set_state``."""
    warnings.warn("profiler.profiler_set_state() is deprecated. Please use "
                  "profiler.set_state() instead", DeprecationWarning, stacklevel=2)
    set_state(state)


def state() -> str:
    """The current state: 'run' or 'stop'."""
    return _P.state


def pause(profile_process="worker") -> None:
    """Stop recording until :func:`resume` (the state stays 'run')."""
    if profile_process == "worker":
        _P.paused = True


def resume(profile_process="worker") -> None:
    """Record again after :func:`pause`."""
    if profile_process == "worker":
        _P.paused = False


def _wait_engine() -> None:
    from .runtime import engine as _engine
    _engine.get().wait_all()


def dump(finished=True, profile_process="worker") -> None:
    """Write the events recorded since the last dump to the configured ``filename`` as
    Chrome trace JSON (``finished=True``: this is the last dump, recording stops)."""
    if profile_process == "server":
        return
    _wait_engine()
    with _P.lock:
        events, _P.events = _P.events, []
    pid = os.getpid()
    meta = [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": "cpu/0"}}]
    tids = sorted({e["tid"] for e in events if "tid" in e})
    meta += [{"ph": "M", "name": "thread_name", "pid": pid, "tid": t,
              "args": {"name": f"thread {i}"}} for i, t in enumerate(tids)]
    doc = {"traceEvents": meta + events, "displayTimeUnit": "ms"}
    fname = _P.config["filename"]
    d = os.path.dirname(os.path.abspath(fname))
    os.makedirs(d, exist_ok=True)
    with open(fname, "w") as f:
        json.dump(doc, f, indent=1)
    if finished:
        set_state("stop")


def dump_profile() -> None:
    """Deprecated (MXNet 1.x): ``dump``."""
    warnings.warn("profiler.dump_profile() is deprecated. Please use profiler.dump() instead",
                  DeprecationWarning, stacklevel=2)
    dump(True)


_SORT_KEYS = {"total": 1, "avg": None, "min": 2, "max": 3, "count": 0}


def dumps(reset=False, format="table", sort_by="total", ascending=False) -> str:
    """The aggregate statistics (``set_config(aggregate_stats=True)``) per category and
    name: count and total/min/max/average time in ms, as a table or JSON."""
    if format not in ("table", "json"):
        raise MXNetError(f"profiler.dumps: format must be 'table' or 'json', got {format!r}")
    if sort_by not in _SORT_KEYS:
        raise MXNetError(f"profiler.dumps: sort_by must be one of {list(_SORT_KEYS)}, got "
                         f"{sort_by!r}")
    _wait_engine()
    with _P.lock:
        stats = {k: list(v) for k, v in _P.stats.items()}
        if reset:
            _P.stats = {}
    by_cat: dict = {}
    for (cat, name), (n, tot, mn, mx) in stats.items():
        by_cat.setdefault(cat, []).append((name, n, tot / 1e3, mn / 1e3, mx / 1e3,
                                           tot / 1e3 / n))

    def key(row):
        return row[5] if sort_by == "avg" else row[1 + _SORT_KEYS[sort_by]]
    for rows in by_cat.values():
        rows.sort(key=key, reverse=not ascending)
    if format == "json":
        return json.dumps({"Time": {cat: {r[0]: {"Total Count": r[1], "Total Time": r[2],
                                                 "Min Time": r[3], "Max Time": r[4],
                                                 "Avg Time": r[5]} for r in rows}
                                    for cat, rows in sorted(by_cat.items())},
                           "Unit": {"Time": "ms"}}, indent=4)
    lines = ["", "Profile Statistics:", "\tNote the difference in units for different "
             "entries."]
    hdr = f"{'Name':<40}{'Total Count':>16}{'Time (ms)':>16}{'Min Time (ms)':>16}" \
          f"{'Max Time (ms)':>16}{'Avg Time (ms)':>16}"
    sep = f"{'----':<40}{'-----------':>16}{'---------':>16}{'-------------':>16}" \
          f"{'-------------':>16}{'-------------':>16}"
    for cat, rows in sorted(by_cat.items()):
        lines += [cat, "=================", hdr, sep]
        lines += [f"{r[0][:39]:<40}{r[1]:>16}{r[2]:>16.4f}{r[3]:>16.4f}{r[4]:>16.4f}"
                  f"{r[5]:>16.4f}" for r in rows]
        lines.append("")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def scope(name="<unk>:", append_mode=False):
    """``with profiler.scope('name'):`` -- a range named ``name`` in the trace (MXNet tags
    the operators of the block with it)."""
    name = name if name.endswith(":") else name + ":"
    parent = getattr(_local, "scope", "")
    full = parent + name if append_mode else name
    _local.scope = full
    t0 = _P.now_us()
    try:
        yield
    finally:
        _local.scope = parent
        if _P.active:
            _P.add_range(full, "scope", t0, _P.now_us())


# ------------------------------------------------------------------------------------------
# user markers
# ------------------------------------------------------------------------------------------
class Domain:
    """A named group of tasks, frames, counters and markers (the trace category)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name

    def new_task(self, name):
        return Task(self, name)

    def new_frame(self, name):
        return Frame(self, name)

    def new_counter(self, name, value=None):
        return Counter(self, name, value)

    def new_marker(self, name):
        return Marker(self, name)


class _Range:
    """A start()/stop() range recorded as one trace range while the profiler runs."""

    kind = "range"

    def __init__(self, category: str, name: str) -> None:
        self.name = name
        self._cat = category
        self._t0 = None

    def start(self) -> None:
        self._t0 = _P.now_us()

    def stop(self) -> None:
        if self._t0 is None:
            raise MXNetError(f"profiler {self.kind} '{self.name}': stop() without start()")
        if _P.active:
            _P.add_range(self.name, self._cat, self._t0, _P.now_us())
        self._t0 = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __str__(self) -> str:
        return self.name


class Task(_Range):
    """A task of a domain (a range on one thread)."""

    kind = "Task"

    def __init__(self, domain: Domain, name: str) -> None:
        super().__init__(domain.name, name)
        self.domain = domain


class Frame(_Range):
    """A frame of a domain (e.g. one training iteration)."""

    kind = "Frame"

    def __init__(self, domain: Domain, name: str) -> None:
        super().__init__(domain.name, name)
        self.domain = domain


class Event(_Range):
    """A named range outside any domain."""

    kind = "Event"

    def __init__(self, name: str) -> None:
        super().__init__("Event", name)


class Counter:
    """A named value in a domain, recorded on every change while the profiler runs."""

    def __init__(self, domain: Domain, name: str, value=None) -> None:
        self.domain = domain
        self.name = name
        self.value = 0
        if value is not None:
            self.set_value(value)

    def _record(self) -> None:
        if _P.active:
            _P.add({"name": self.name, "cat": self.domain.name, "ph": "C",
                    "ts": _P.now_us(), "pid": os.getpid(), "args": {self.name: self.value}})

    def set_value(self, value) -> None:
        self.value = int(value)
        self._record()

    def increment(self, delta=1) -> None:
        self.value += int(delta)
        self._record()

    def decrement(self, delta=1) -> None:
        self.value -= int(delta)
        self._record()

    def __iadd__(self, delta):
        self.increment(delta)
        return self

    def __isub__(self, delta):
        self.decrement(delta)
        return self

    def __str__(self) -> str:
        return self.name


_MARKER_SCOPES = {"global": "g", "process": "p", "thread": "t", "task": "t", "marker": "t"}


class Marker:
    """An instant event of a domain."""

    def __init__(self, domain: Domain, name: str) -> None:
        self.domain = domain
        self.name = name

    def mark(self, scope="process") -> None:
        if scope not in _MARKER_SCOPES:
            raise MXNetError(f"Marker.mark: scope must be one of {list(_MARKER_SCOPES)}, got "
                             f"{scope!r}")
        if _P.active:
            _P.add({"name": self.name, "cat": self.domain.name, "ph": "i",
                    "s": _MARKER_SCOPES[scope], "ts": _P.now_us(), "pid": os.getpid(),
                    "tid": threading.get_ident()})
