"""A native thread pool that runs a compiled program's kernel calls with no Python in the loop.

The Python pool (``runtime.threadpool``) hands every parallel kernel to its workers through
``threading.Event``s: ~10-20 us of wake-ups and GIL hand-offs per kernel, which is most of the
time of a small kernel and ~1 ms per ResNet-18 inference. This module generates, as LLVM IR,
a pool whose workers spin on a generation counter for a short while and then sleep on a Linux
futex, and a ``run`` entry point that walks a whole array of kernel calls::

    struct call { void *fn; void *args; int64_t n_tasks; int64_t parallel; };
    void mxc_pool_run(const struct call *calls, int64_t n, void *const *scratch, int64_t nt);

``scratch`` holds one 64-byte aligned buffer per thread (thread 0 is the caller). A call with
``parallel`` set is split into ``nt`` contiguous task ranges, the caller running the first;
every worker takes part in every job (an empty range when ``nt`` is below the pool size), so
the caller waits for all of them and no worker can mistake one job for the next. One caller
at a time owns the workers; a concurrent caller runs its calls on its own thread.

Protocol: the caller stores the job, then increments ``gen`` (sequentially consistent) and
wakes sleepers; a worker seeing a new ``gen`` runs its range and decrements ``pending``. A
worker about to sleep counts itself in ``sleepers`` and re-reads ``gen`` (Dekker: either it
sees the new job or the caller sees a sleeper), and ``FUTEX_WAIT`` re-checks ``gen``
atomically. Linux on x86-64 and AArch64 only (futex numbers); elsewhere ``native_pool()``
returns None and the Python pool is used. This is JIT-process runtime support, never part of
standalone artifacts (those get a parallel-for callback from their host).
"""
from __future__ import annotations

import ctypes
import os
import threading

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
_SPIN = 4096          # pause iterations (~50 us) before a worker sleeps
_WAIT_YIELD = 2048    # caller spins this long on pending workers before yielding the CPU

CALL = ctypes.c_int64 * 4   # {fn, args, n_tasks, parallel} as four 64-bit words


def _ir(arch: str) -> str:
    pause = ("call void @llvm.x86.sse2.pause()" if arch == "x86_64"
             else "call void @llvm.aarch64.hint(i32 1)")
    pause_decl = ("declare void @llvm.x86.sse2.pause()" if arch == "x86_64"
                  else "declare void @llvm.aarch64.hint(i32)")
    futex = _SYS_FUTEX[arch]
    return f"""
@gen = internal global i32 0, align 64
@pending = internal global i32 0, align 64
@sleepers = internal global i32 0, align 64
@busy = internal global i32 0, align 64
@started = internal global i32 0, align 64
@job_fn = internal global ptr null, align 64
@job_args = internal global ptr null
@job_n = internal global i64 0
@job_nt = internal global i64 0
@job_scratch = internal global ptr null

{pause_decl}
declare i64 @syscall(i64, ...)
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_detach(i64)
declare i32 @sched_yield()

define internal void @range(ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt, i64 %w) {{
entry:
  %a = mul i64 %n, %w
  %b = udiv i64 %a, %nt
  %w1 = add i64 %w, 1
  %c = mul i64 %n, %w1
  %e = udiv i64 %c, %nt
  %sp = getelementptr ptr, ptr %scratch, i64 %w
  %s = load ptr, ptr %sp
  %has = icmp ult i64 %b, %e
  br i1 %has, label %go, label %done
go:
  call void %fn(i64 %b, i64 %e, ptr %args, ptr %s)
  br label %done
done:
  ret void
}}

define ptr @mxc_pool_worker(ptr %arg) {{
entry:
  %w = ptrtoint ptr %arg to i64
  %g0 = load atomic i32, ptr @gen seq_cst, align 4
  %st = atomicrmw add ptr @started, i32 1 seq_cst
  br label %wait
wait:
  %seen = phi i32 [%g0, %entry], [%g1, %finish], [%seen, %slept]
  br label %spin
spin:
  %i = phi i32 [0, %wait], [%i1, %spin_next]
  %g1 = load atomic i32, ptr @gen acquire, align 4
  %new1 = icmp ne i32 %g1, %seen
  br i1 %new1, label %work, label %spin_next
spin_next:
  {pause}
  %i1 = add i32 %i, 1
  %more = icmp ult i32 %i1, {_SPIN}
  br i1 %more, label %spin, label %sleep
sleep:
  %o1 = atomicrmw add ptr @sleepers, i32 1 seq_cst
  %g2 = load atomic i32, ptr @gen seq_cst, align 4
  %same = icmp eq i32 %g2, %seen
  br i1 %same, label %do_sleep, label %slept
do_sleep:
  %seen64 = zext i32 %seen to i64
  %r = call i64 (i64, ...) @syscall(i64 {futex}, ptr @gen, i64 128, i64 %seen64, ptr null)
  br label %slept
slept:
  %o2 = atomicrmw sub ptr @sleepers, i32 1 seq_cst
  br label %wait
work:
  %fn = load ptr, ptr @job_fn
  %args = load ptr, ptr @job_args
  %n = load i64, ptr @job_n
  %nt = load i64, ptr @job_nt
  %sc = load ptr, ptr @job_scratch
  %inrange = icmp ult i64 %w, %nt
  br i1 %inrange, label %run, label %finish
run:
  call void @range(ptr %fn, i64 %n, ptr %args, ptr %sc, i64 %nt, i64 %w)
  br label %finish
finish:
  %o3 = atomicrmw sub ptr @pending, i32 1 release
  br label %wait
}}

define i32 @mxc_pool_start(i64 %w) {{
entry:
  %tid = alloca i64
  %arg = inttoptr i64 %w to ptr
  %rc = call i32 @pthread_create(ptr %tid, ptr null, ptr @mxc_pool_worker, ptr %arg)
  %ok = icmp eq i32 %rc, 0
  br i1 %ok, label %detach, label %out
detach:
  %t = load i64, ptr %tid
  %d = call i32 @pthread_detach(i64 %t)
  br label %ready
ready:
  ; counted in jobs only once it has read the generation it waits on
  %n = load atomic i32, ptr @started acquire, align 4
  %n64 = zext i32 %n to i64
  %up = icmp uge i64 %n64, %w
  br i1 %up, label %out, label %yield
yield:
  %y = call i32 @sched_yield()
  br label %ready
out:
  ret i32 %rc
}}

define internal void @job(ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt, i32 %workers) {{
entry:
  store ptr %fn, ptr @job_fn
  store ptr %args, ptr @job_args
  store i64 %n, ptr @job_n
  store i64 %nt, ptr @job_nt
  store ptr %scratch, ptr @job_scratch
  store atomic i32 %workers, ptr @pending monotonic, align 4
  %old = atomicrmw add ptr @gen, i32 1 seq_cst
  %sl = load atomic i32, ptr @sleepers seq_cst, align 4
  %any = icmp ne i32 %sl, 0
  br i1 %any, label %wake, label %mine
wake:
  %r = call i64 (i64, ...) @syscall(i64 {futex}, ptr @gen, i64 129, i64 2147483647)
  br label %mine
mine:
  call void @range(ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt, i64 0)
  br label %wait
wait:
  %i = phi i32 [0, %mine], [%i1, %again], [0, %yield]
  %p = load atomic i32, ptr @pending acquire, align 4
  %done = icmp eq i32 %p, 0
  br i1 %done, label %out, label %again
again:
  {pause}
  %i1 = add i32 %i, 1
  %y = icmp ugt i32 %i1, {_WAIT_YIELD}
  br i1 %y, label %yield, label %wait
yield:
  %yr = call i32 @sched_yield()
  br label %wait
out:
  ret void
}}

define void @mxc_pool_run(ptr %calls, i64 %count, ptr %scratch, i64 %nt, i32 %workers) {{
entry:
  %lk = cmpxchg ptr @busy, i32 0, i32 1 acquire monotonic
  %locked = extractvalue {{ i32, i1 }} %lk, 1
  %multi = icmp ugt i64 %nt, 1
  %pool = and i1 %locked, %multi
  %s0 = load ptr, ptr %scratch
  br label %head
head:
  %i = phi i64 [0, %entry], [%i1, %next]
  %more = icmp ult i64 %i, %count
  br i1 %more, label %body, label %exit
body:
  %c = getelementptr [4 x i64], ptr %calls, i64 %i
  %fn = load ptr, ptr %c
  %ap = getelementptr i64, ptr %c, i64 1
  %args = load ptr, ptr %ap
  %np = getelementptr i64, ptr %c, i64 2
  %n = load i64, ptr %np
  %pp = getelementptr i64, ptr %c, i64 3
  %par = load i64, ptr %pp
  %p1 = icmp ne i64 %par, 0
  %p2 = icmp ugt i64 %n, 1
  %p3 = and i1 %p1, %p2
  %split = and i1 %p3, %pool
  br i1 %split, label %parallel, label %serial
parallel:
  call void @job(ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt, i32 %workers)
  br label %next
serial:
  %has = icmp ugt i64 %n, 0
  br i1 %has, label %one, label %next
one:
  call void %fn(i64 0, i64 %n, ptr %args, ptr %s0)
  br label %next
next:
  %i1 = add i64 %i, 1
  br label %head
exit:
  br i1 %locked, label %unlock, label %out
unlock:
  store atomic i32 0, ptr @busy release, align 4
  br label %out
out:
  ret void
}}
"""


class NativePool:
    """The JIT-compiled pool: ``run(calls, n, scratch_ptrs, threads)``; workers start lazily."""

    def __init__(self, arch: str) -> None:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_triple(llvm.get_process_triple())
        tm = target.create_target_machine(opt=2, jit=True)
        mod = llvm.parse_assembly(_ir(arch))
        mod.verify()
        self._engine = llvm.create_mcjit_compiler(mod, tm)
        self._engine.finalize_object()
        addr = self._engine.get_function_address
        self._run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                     ctypes.c_int64, ctypes.c_int32)(addr("mxc_pool_run"))
        self._start = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64)(addr("mxc_pool_start"))
        self.workers = 0
        self._lock = threading.Lock()

    def ensure_workers(self, n: int) -> int:
        """Start workers until there are ``n`` (never stops any); returns how many run.
        Only while no job can be in flight: callers hold no pool job when growing it."""
        with self._lock:
            while self.workers < n:
                if self._start(self.workers + 1) != 0:
                    break
                self.workers += 1
            return self.workers

    def run(self, calls, count: int, scratch_ptrs, threads: int) -> None:
        """Run ``count`` calls of the ``CALL`` array ``calls`` on ``threads`` threads (the
        caller included; clamped to the workers running + 1). ctypes drops the GIL."""
        nt = max(1, min(int(threads), self.workers + 1))
        self._run(ctypes.addressof(calls) if not isinstance(calls, int) else calls, count,
                  scratch_ptrs, nt, self.workers)


_pool: NativePool | None = None
_pool_failed = False
_pool_lock = threading.Lock()


def native_pool() -> NativePool | None:
    """The process's native pool, or None where it is not supported (not Linux x86-64 /
    AArch64, ``MXC_NATIVE_POOL=0``, or the JIT could not build it)."""
    global _pool, _pool_failed
    if os.environ.get("MXC_NATIVE_POOL", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    with _pool_lock:
        if _pool is not None or _pool_failed:
            return _pool
        arch = os.uname().machine if hasattr(os, "uname") else ""
        arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
        if os.name != "posix" or not os.uname().sysname == "Linux" or arch not in _SYS_FUTEX:
            _pool_failed = True
            return None
        try:
            _pool = NativePool(arch)
        except Exception:   # noqa: BLE001 - any JIT failure leaves the Python pool in charge
            _pool_failed = True
            return None
        return _pool
