"""The task-range contract and the CPU thread pool that relies on it.

Every generated kernel is ``k(task_begin, task_end, args, scratch)``; running [0, n_tasks)
as any set of sub-ranges, in any order, on any number of threads must give bit-identical
results. Also: how :class:`ThreadPool` splits ranges, its per-thread scratch, thread-count
settings, errors raised in workers, and a Program run under pools of different sizes.
"""
from __future__ import annotations

import ctypes
import itertools
import threading

import numpy as np
import pytest

from mxc.codegen.jit import compile_ir
from mxc.codegen.llvm_render import render_module
from mxc.compiler import schedule as S
from mxc.ir import kernel as K
from mxc.ir.dtypes import as_dtype
from mxc.runtime import threadpool as tp
from mxc.runtime.program import KernelCall, Program, SlotInfo

BIG = tp.PARALLEL_THRESHOLD * 4   # a cost that makes the pool use every thread


def buf(name: str, dtype: str, n: int) -> K.Buffer:
    return K.Buffer(name, as_dtype(dtype), n)


def kernel(out: K.TensorRef, fn, buffers: list) -> K.Kernel:
    return S.schedule(K.compute(out, fn), "__K__", list(buffers))


def compile_kernels(kernels: list) -> list:
    text, names = render_module(kernels)
    cm = compile_ir(text, list(dict.fromkeys(names)))
    return [cm.functions[n] for n in names]


def _cases():
    """(name, kernel, input arrays, output size/dtype) covering the schedule's shapes:
    many small tasks, row reductions at task level, reductions inside the vector loop,
    chunked long rows, a 3-d output and a single task."""
    rng = np.random.default_rng(0)
    out = []
    # elementwise over 3-d (task index decomposed into two outer indices)
    a = rng.standard_normal((5, 7, 9)).astype(np.float32)
    bx, bo = buf("x", "float32", a.size), buf("o", "float32", a.size)
    X = K.TensorRef(bx, a.shape)
    out.append(("elementwise3d", kernel(K.TensorRef(bo, a.shape),
                                        lambda i, j, k: X[i, j, k] * 3.0 - K.cast(
                                            "float32", i * 7 + j), [bx, bo]),
                [a.ravel()], (a.size, np.float32)))
    # softmax-like rows: reductions hoisted to the task level (float sums: order matters)
    rows, n = 37, 129
    b = rng.standard_normal((rows, n))
    bx, bo = buf("x", "float64", b.size), buf("o", "float64", b.size)
    X = K.TensorRef(bx, (rows, n))
    r1, r2 = K.reduce_axis(n), K.reduce_axis(n)

    def soft(i, j):
        m = K.reduce("max", X[i, r1.var], [r1])
        s = K.reduce("sum", (X[i, r2.var] - m) * (X[i, r2.var] - m), [r2])
        return (X[i, j] - m) / s

    out.append(("rows", kernel(K.TensorRef(bo, (rows, n)), soft, [bx, bo]), [b.ravel()],
                (b.size, np.float64)))
    # column sums: reduction inside the vector loop, a single task
    c = rng.standard_normal((64, 33)).astype(np.float32)
    bx, bo = buf("x", "float32", c.size), buf("o", "float32", 33)
    X = K.TensorRef(bx, c.shape)
    r = K.reduce_axis(64)
    out.append(("colsum", kernel(K.TensorRef(bo, (33,)),
                                 lambda j: K.reduce("sum", X[r.var, j], [r]), [bx, bo]),
                [c.ravel()], (33, np.float32)))
    # long rows chunked into tasks (elementwise: rows with reductions are not chunked)
    L = 2 * S.CHUNK + 77
    d = rng.standard_normal((3, L)).astype(np.float32)
    bx, bo = buf("x", "float32", d.size), buf("o", "float32", d.size)
    X = K.TensorRef(bx, d.shape)
    out.append(("chunked", kernel(K.TensorRef(bo, d.shape), lambda i, j: X[i, j] - K.cast(
        "float32", j + i), [bx, bo]), [d.ravel()], (d.size, np.float32)))
    # integer argmax per row
    e = rng.integers(-50, 50, (41, 17)).astype(np.int16)
    bx, bo = buf("x", "int16", e.size), buf("o", "int32", 41)
    X = K.TensorRef(bx, e.shape)
    r = K.reduce_axis(17)
    out.append(("argmax", kernel(K.TensorRef(bo, (41,)), lambda i: K.reduce(
        "argmax", X[i, r.var], [r], dtype="int32"), [bx, bo]), [e.ravel()], (41, np.int32)))
    return out


CASES = _cases()
FUNCS = compile_kernels([c[1] for c in CASES])


def _run(case_idx: int, ranges=None, pool=None) -> np.ndarray:
    _, k, ins, (size, dt) = CASES[case_idx]
    o = np.full(size, 123, dt)
    arrays = list(ins) + [o]
    args = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    fn = FUNCS[case_idx]
    if pool is not None:
        pool.run(fn, k.n_tasks, args, k.scratch_bytes, BIG)
    else:
        for b, e in ranges if ranges is not None else [(0, k.n_tasks)]:
            fn(b, e, args, None)
    return o


_POOLS: dict = {}


def pool_of(threads: int) -> tp.ThreadPool:
    """Pools are reused: their worker threads live as long as the process."""
    if threads not in _POOLS:
        _POOLS[threads] = tp.ThreadPool(threads)
    return _POOLS[threads]


def _random_partition(n: int, rng) -> list:
    cuts = sorted(set(rng.integers(0, n + 1, size=rng.integers(0, n + 1)).tolist()) | {0, n})
    ranges = list(itertools.pairwise(cuts))
    ranges += [(c, c) for c in rng.choice(cuts, size=2)]   # empty ranges are no-ops
    rng.shuffle(ranges)
    return ranges


def test_case_kernel_task_counts():
    tasks = {name: k.n_tasks for name, k, _, _ in CASES}
    assert tasks == {"elementwise3d": 35, "rows": 37, "colsum": 1, "chunked": 9, "argmax": 1}


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[c[0] for c in CASES])
def test_any_split_of_the_task_range_is_bit_identical(idx):
    full = _run(idx)
    n = CASES[idx][1].n_tasks
    rng = np.random.default_rng(idx)
    splits = [[(t, t + 1) for t in range(n)],              # one task at a time
              [(t, t + 1) for t in reversed(range(n))],    # backwards
              [(n // 2, n), (0, n // 2)]]
    splits += [_random_partition(n, rng) for _ in range(4)]
    for ranges in splits:
        got = _run(idx, ranges)
        assert got.tobytes() == full.tobytes(), f"split {ranges}"
    assert not np.any(full == 123), "every element written"


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("idx", range(len(CASES)), ids=[c[0] for c in CASES])
def test_thread_pool_results_are_bit_identical(idx, threads):
    full = _run(idx)
    pool = pool_of(threads)
    for _ in range(3):
        got = _run(idx, pool=pool)
        assert got.tobytes() == full.tobytes()


# ---------------------------------------------------------------------------------------------
# how the pool splits work
# ---------------------------------------------------------------------------------------------
class Recorder:
    """A Python stand-in for a kernel: records (begin, end, thread, scratch pointer)."""

    def __init__(self) -> None:
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, b, e, args, scratch) -> None:
        with self.lock:
            self.calls.append((b, e, threading.get_ident(), scratch))


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 7, 100])
def test_pool_covers_every_task_exactly_once(threads, n_tasks):
    pool = pool_of(threads)
    rec = Recorder()
    pool.run(rec, n_tasks, None, 0, BIG)
    covered = sorted(t for b, e, _, _ in rec.calls for t in range(b, e))
    assert covered == list(range(n_tasks))
    assert all(b < e for b, e, _, _ in rec.calls), "no empty ranges handed out"
    assert len(rec.calls) == min(threads, n_tasks)
    assert len({th for _, _, th, _ in rec.calls}) == len(rec.calls), "one range per thread"
    sizes = [e - b for b, e, _, _ in rec.calls]
    assert max(sizes) - min(sizes) <= 1, "balanced split"


def test_pool_runs_cheap_work_on_the_calling_thread():
    pool = pool_of(3)
    rec = Recorder()
    pool.run(rec, 50, None, 0, cost=tp.PARALLEL_THRESHOLD - 1)
    assert [(b, e, th) for b, e, th, _ in rec.calls] == [(0, 50, threading.get_ident())]
    rec2 = Recorder()
    pool.run(rec2, 0, None, 0, BIG)
    assert rec2.calls == []


def test_scratch_is_aligned_and_private_per_thread():
    pool = pool_of(3)
    rec = Recorder()
    pool.run(rec, 3, None, 1000, BIG)
    ptrs = [s for _, _, _, s in rec.calls]
    assert len(ptrs) == 3 and all(p and p % 64 == 0 for p in ptrs)
    assert len(set(ptrs)) == 3
    # regions do not overlap (each at least scratch_bytes long)
    ptrs.sort()
    assert all(b - a >= 1000 for a, b in itertools.pairwise(ptrs))
    rec0 = Recorder()
    pool.run(rec0, 3, None, 0, BIG)
    assert all(s == 0 for *_, s in rec0.calls), "no scratch asked, null pointer"


def test_scratch_grows_when_a_bigger_arena_is_needed():
    pool = pool_of(1)
    seen = []
    for nbytes in (64, 1 << 16, 100):
        def fn(b, e, args, scratch, nbytes=nbytes):
            seen.append(scratch)
            ctypes.memset(scratch, 0xAB, nbytes)   # the whole requested arena is writable

        pool.run(fn, 1, None, nbytes, BIG)
    assert len(seen) == 3 and all(p and p % 64 == 0 for p in seen)


@pytest.mark.parametrize("env,want", [
    ({"MXC_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, 3),
    ({"OMP_NUM_THREADS": "5", "MXNET_CPU_WORKER_NTHREADS": "7"}, 5),
    ({"MXNET_CPU_WORKER_NTHREADS": "7"}, 7),
    ({"MXC_NUM_THREADS": "0"}, 1),
    ({"MXC_NUM_THREADS": "lots", "OMP_NUM_THREADS": "2"}, 2),
])
def test_thread_count_settings(monkeypatch, env, want):
    for v in ("MXC_NUM_THREADS", "OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS"):
        monkeypatch.delenv(v, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert tp.default_num_threads() == want


def test_default_thread_count_is_the_core_count(monkeypatch):
    for v in ("MXC_NUM_THREADS", "OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(tp.os, "cpu_count", lambda: 6)
    assert tp.default_num_threads() == 6


def test_set_num_threads_replaces_the_global_pool(monkeypatch):
    monkeypatch.setattr(tp, "_pool", None)
    tp.set_num_threads(2)
    assert tp.get_pool().num_threads == 2
    p = tp.get_pool()
    assert tp.get_pool() is p
    tp.set_num_threads(0)
    assert tp.get_pool().num_threads == 1


def _bounded(fn, timeout: float = 5.0):
    """Run ``fn`` on a daemon thread; (finished, exception)."""
    box = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - report whatever happened
            box["exc"] = e
        box["done"] = True

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return box.get("done", False), box.get("exc")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_error_in_a_worker_surfaces_and_the_pool_survives():
    pool = tp.ThreadPool(2)

    def fails_off_the_main_thread(b, e, args, scratch):
        if b > 0:
            raise ValueError("boom in a worker")

    finished, exc = _bounded(lambda: pool.run(fails_off_the_main_thread, 4, None, 0, BIG))
    assert finished, "pool.run did not return"
    assert isinstance(exc, ValueError), "the worker's error was swallowed"
    rec = Recorder()
    finished, exc = _bounded(lambda: pool.run(rec, 4, None, 0, BIG))
    assert finished and exc is None, "the pool hangs after a worker error"
    assert sorted(t for b, e, *_ in rec.calls for t in range(b, e)) == [0, 1, 2, 3]


def test_an_error_on_the_calling_thread_is_raised():
    pool = tp.ThreadPool(2)
    rec = Recorder()

    def fails_on_main(b, e, args, scratch):
        if b == 0:
            raise KeyError("boom")
        rec(b, e, args, scratch)

    finished, exc = _bounded(lambda: pool.run(fails_on_main, 4, None, 0, BIG))
    assert finished and isinstance(exc, KeyError)
    assert rec.calls, "the worker's range still ran"
    finished, exc = _bounded(lambda: pool.run(Recorder(), 4, None, 0, BIG))
    assert finished and exc is None


# ---------------------------------------------------------------------------------------------
# a Program run under pools of different sizes
# ---------------------------------------------------------------------------------------------
def test_program_runs_identically_on_any_pool(monkeypatch):
    """Two kernels chained through a temp slot (y = x*3 - i*7 - j; z = rows of y minus their
    max); storage slots bound from numpy; same bytes with 1, 2 and 3 threads."""
    rows, n = 35, 63
    x = np.random.default_rng(7).standard_normal(rows * n).astype(np.float32)
    b_x, b_y, b_z = (buf(nm, "float32", rows * n) for nm in "xyz")
    X, Y = K.TensorRef(b_x, (rows, n)), K.TensorRef(b_y, (rows, n))
    r = K.reduce_axis(n)
    k1 = kernel(Y, lambda i, j: X[i, j] * 3.0 - K.cast("float32", i * 7 + j), [b_x, b_y])
    k2 = kernel(K.TensorRef(b_z, (rows, n)),
                lambda i, j: Y[i, j] - K.reduce("max", Y[i, r.var], [r]), [b_y, b_z])
    f1, f2 = compile_kernels([k1, k2])
    nbytes = rows * n * 4
    slots = [SlotInfo(nbytes, "input", "x"), SlotInfo(nbytes, "temp", "y"),
             SlotInfo(nbytes, "output", "z")]
    calls = [KernelCall(f1, "k1", [0, 1], [0, 0], k1.n_tasks, 0, BIG, "n1"),
             KernelCall(f2, "k2", [1, 2], [0, 0], k2.n_tasks, 0, BIG, "n2")]
    prog = Program(slots, calls, sections={"forward": (0, 2), "backward": (2, 2)})
    results = []
    monkeypatch.setattr(tp, "_pool", None)
    for threads in (1, 2, 3):
        tp.set_num_threads(threads)
        p = prog.clone()
        p.allocate({0: x.view(np.uint8)})
        p.run("forward")
        results.append(p.storage[2][:nbytes].view(np.float32).copy())
    y = x.reshape(rows, n) * np.float32(3) - (np.arange(rows)[:, None] * 7
                                              + np.arange(n)[None, :]).astype(np.float32)
    # (fma contraction of x*3 - c may differ from numpy by an ulp of values up to ~300)
    np.testing.assert_allclose(results[0].reshape(rows, n), y - y.max(1, keepdims=True),
                               rtol=1e-6, atol=1e-4)
    assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes()


def test_program_rejects_storage_smaller_than_its_slot():
    prog = Program([SlotInfo(16, "input", "x")], [], sections={})
    with pytest.raises(ValueError, match="slot 0 .*x.* 8 bytes, needs 16"):
        prog.allocate({0: np.zeros(8, np.uint8)})


def test_forked_child_gets_its_own_pool():
    # the parent's worker threads do not exist in a forked child: a split over them would
    # wait forever; the child builds a pool of its own (Python pool and native pool alike)
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, sys
        import numpy as np
        import mxc as mx
        a = mx.nd.array(np.arange(1 << 16, dtype=np.float32))
        (a * 2).wait_to_read()
        pid = os.fork()
        if pid == 0:
            b = (a * 3 + 1).asnumpy()
            os._exit(0 if b[5] == 16 else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    for native in ("0", "1"):
        env = dict(os.environ, MXC_NATIVE_POOL=native)
        r = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True,
                           text=True, env=env)
        assert r.returncode == 0, (native, r.stderr[-2000:])
