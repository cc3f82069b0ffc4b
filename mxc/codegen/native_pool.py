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

The code has no globals and no external symbols (its state is a block the Python side
allocates, holding the libc functions it calls as pointers), so on x86-64 it links into a
prelinked image cached under ``$MXC_CACHE_DIR/pool``: a warm process maps it without LLVM.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import threading

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
_SPIN = 4096          # pause iterations (~50 us) before a worker sleeps
_WAIT_YIELD = 2048    # caller spins this long on pending workers before yielding the CPU

CALL = ctypes.c_int64 * 4   # {fn, args, n_tasks, parallel} as four 64-bit words


# The pool's state: one block the Python side allocates (no globals, no external symbols in
# the code, so the object links into a prelinked image and a warm process maps it without
# LLVM). Byte offsets; the counters each get a cache line.
_GEN, _PENDING, _SLEEPERS, _BUSY, _STARTED = 0, 64, 128, 192, 256
_JOB_FN, _JOB_ARGS, _JOB_N, _JOB_NT, _JOB_SCRATCH = 320, 328, 336, 344, 352
_F_SYSCALL, _F_CREATE, _F_DETACH, _F_YIELD = 384, 392, 400, 408
_WORKER_ARGS = 448            # per worker {state pointer, index}: 16 bytes each
MAX_WORKERS = 64
# per thread (caller = 0) the next unclaimed task of its range, a cache line each
_CLAIMS = (_WORKER_ARGS + 16 * (MAX_WORKERS + 1) + 63) // 64 * 64
STATE_BYTES = _CLAIMS + 64 * (MAX_WORKERS + 1)


def _ir(arch: str) -> str:
    pause = ("call void @llvm.x86.sse2.pause()" if arch == "x86_64"
             else "call void @llvm.aarch64.hint(i32 1)")
    pause_decl = ("declare void @llvm.x86.sse2.pause()" if arch == "x86_64"
                  else "declare void @llvm.aarch64.hint(i32)")
    futex = _SYS_FUTEX[arch]

    def field(name: str, off: int) -> str:
        return f"  %{name} = getelementptr i8, ptr %st, i64 {off}"

    fields = "\n".join(field(n, o) for n, o in (
        ("gen", _GEN), ("pending", _PENDING), ("sleepers", _SLEEPERS), ("busy", _BUSY),
        ("started", _STARTED), ("job_fn", _JOB_FN), ("job_args", _JOB_ARGS),
        ("job_n", _JOB_N), ("job_nt", _JOB_NT), ("job_scratch", _JOB_SCRATCH),
        ("f_syscall", _F_SYSCALL), ("f_create", _F_CREATE), ("f_detach", _F_DETACH),
        ("f_yield", _F_YIELD)))
    return f"""
{pause_decl}

define internal void @claim_run(ptr %fn, ptr %args, ptr %s, ptr %ctr, i64 %e, i64 %chunk) {{
entry:
  br label %loop
loop:
  %i = atomicrmw add ptr %ctr, i64 %chunk monotonic
  %ok = icmp ult i64 %i, %e
  br i1 %ok, label %run, label %done
run:
  %j = add i64 %i, %chunk
  %lt = icmp ult i64 %j, %e
  %end = select i1 %lt, i64 %j, i64 %e
  call void %fn(i64 %i, i64 %end, ptr %args, ptr %s)
  br label %loop
done:
  ret void
}}

; Thread w claims the tasks of its own range [n*w/nt, n*(w+1)/nt) in chunks (an eighth of the
; range, at least one task), then helps the other threads with theirs, claiming from their
; counters the same way: a thread held up (a busy core, a slow task) no longer holds up the
; call, and each range still runs mostly in order on its owner.
define internal void @range(ptr %st, ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt,
                            i64 %w) {{
entry:
  %sp = getelementptr ptr, ptr %scratch, i64 %w
  %s = load ptr, ptr %sp
  br label %victim
victim:
  %k = phi i64 [0, %entry], [%k1, %victim]
  %v0 = add i64 %w, %k
  %wrap = icmp uge i64 %v0, %nt
  %v1 = sub i64 %v0, %nt
  %v = select i1 %wrap, i64 %v1, i64 %v0
  %a = mul i64 %n, %v
  %b = udiv i64 %a, %nt
  %vn = add i64 %v, 1
  %c = mul i64 %n, %vn
  %e = udiv i64 %c, %nt
  %len = sub i64 %e, %b
  %ch0 = lshr i64 %len, 3
  %small = icmp ult i64 %ch0, 1
  %ch = select i1 %small, i64 1, i64 %ch0
  %co = mul i64 %v, 64
  %co1 = add i64 %co, {_CLAIMS}
  %ctr = getelementptr i8, ptr %st, i64 %co1
  call void @claim_run(ptr %fn, ptr %args, ptr %s, ptr %ctr, i64 %e, i64 %ch)
  %k1 = add i64 %k, 1
  %more = icmp ult i64 %k1, %nt
  br i1 %more, label %victim, label %done
done:
  ret void
}}

define ptr @mxc_pool_worker(ptr %arg) {{
entry:
  %st = load ptr, ptr %arg
  %wp = getelementptr i8, ptr %arg, i64 8
  %w = load i64, ptr %wp
{fields}
  %sys = load ptr, ptr %f_syscall
  %g0 = load atomic i32, ptr %gen seq_cst, align 4
  %stc = atomicrmw add ptr %started, i32 1 seq_cst
  br label %wait
wait:
  %seen = phi i32 [%g0, %entry], [%g1, %finish], [%seen, %slept]
  br label %spin
spin:
  %i = phi i32 [0, %wait], [%i1, %spin_next]
  %g1 = load atomic i32, ptr %gen acquire, align 4
  %new1 = icmp ne i32 %g1, %seen
  br i1 %new1, label %work, label %spin_next
spin_next:
  {pause}
  %i1 = add i32 %i, 1
  %more = icmp ult i32 %i1, {_SPIN}
  br i1 %more, label %spin, label %sleep
sleep:
  %o1 = atomicrmw add ptr %sleepers, i32 1 seq_cst
  %g2 = load atomic i32, ptr %gen seq_cst, align 4
  %same = icmp eq i32 %g2, %seen
  br i1 %same, label %do_sleep, label %slept
do_sleep:
  %seen64 = zext i32 %seen to i64
  %r = call i64 (i64, ...) %sys(i64 {futex}, ptr %gen, i64 128, i64 %seen64, ptr null)
  br label %slept
slept:
  %o2 = atomicrmw sub ptr %sleepers, i32 1 seq_cst
  br label %wait
work:
  %fn = load ptr, ptr %job_fn
  %args = load ptr, ptr %job_args
  %n = load i64, ptr %job_n
  %nt = load i64, ptr %job_nt
  %sc = load ptr, ptr %job_scratch
  %inrange = icmp ult i64 %w, %nt
  br i1 %inrange, label %run, label %finish
run:
  call void @range(ptr %st, ptr %fn, i64 %n, ptr %args, ptr %sc, i64 %nt, i64 %w)
  br label %finish
finish:
  %o3 = atomicrmw sub ptr %pending, i32 1 release
  br label %wait
}}

define i32 @mxc_pool_start(ptr %st, i64 %w) {{
entry:
{fields}
  %tid = alloca i64
  %arg = getelementptr i8, ptr %st, i64 {_WORKER_ARGS}
  %argw = getelementptr [2 x i64], ptr %arg, i64 %w
  store ptr %st, ptr %argw
  %argi = getelementptr i8, ptr %argw, i64 8
  store i64 %w, ptr %argi
  %create = load ptr, ptr %f_create
  %rc = call i32 %create(ptr %tid, ptr null, ptr @mxc_pool_worker, ptr %argw)
  %ok = icmp eq i32 %rc, 0
  br i1 %ok, label %detach, label %out
detach:
  %t = load i64, ptr %tid
  %det = load ptr, ptr %f_detach
  %d = call i32 %det(i64 %t)
  br label %ready
ready:
  ; counted in jobs only once it has read the generation it waits on
  %n = load atomic i32, ptr %started acquire, align 4
  %n64 = zext i32 %n to i64
  %up = icmp uge i64 %n64, %w
  br i1 %up, label %out, label %yield
yield:
  %yf = load ptr, ptr %f_yield
  %y = call i32 %yf()
  br label %ready
out:
  ret i32 %rc
}}

define internal void @job(ptr %st, ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt,
                          i32 %workers) {{
entry:
{fields}
  store ptr %fn, ptr %job_fn
  store ptr %args, ptr %job_args
  store i64 %n, ptr %job_n
  store i64 %nt, ptr %job_nt
  store ptr %scratch, ptr %job_scratch
  br label %claims
claims:
  %cw = phi i64 [0, %entry], [%cw1, %claims]
  %ca = mul i64 %n, %cw
  %cb = udiv i64 %ca, %nt
  %cof = mul i64 %cw, 64
  %cof1 = add i64 %cof, {_CLAIMS}
  %cp = getelementptr i8, ptr %st, i64 %cof1
  store atomic i64 %cb, ptr %cp monotonic, align 8
  %cw1 = add i64 %cw, 1
  %cmore = icmp ult i64 %cw1, %nt
  br i1 %cmore, label %claims, label %publish
publish:
  store atomic i32 %workers, ptr %pending monotonic, align 4
  %old = atomicrmw add ptr %gen, i32 1 seq_cst
  %sl = load atomic i32, ptr %sleepers seq_cst, align 4
  %any = icmp ne i32 %sl, 0
  br i1 %any, label %wake, label %mine
wake:
  %sys = load ptr, ptr %f_syscall
  %r = call i64 (i64, ...) %sys(i64 {futex}, ptr %gen, i64 129, i64 2147483647)
  br label %mine
mine:
  call void @range(ptr %st, ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt, i64 0)
  br label %wait
wait:
  %i = phi i32 [0, %mine], [%i1, %again], [0, %yield]
  %p = load atomic i32, ptr %pending acquire, align 4
  %done = icmp eq i32 %p, 0
  br i1 %done, label %out, label %again
again:
  {pause}
  %i1 = add i32 %i, 1
  %y = icmp ugt i32 %i1, {_WAIT_YIELD}
  br i1 %y, label %yield, label %wait
yield:
  %yf = load ptr, ptr %f_yield
  %yr = call i32 %yf()
  br label %wait
out:
  ret void
}}

define void @mxc_pool_run(ptr %st, ptr %calls, i64 %count, ptr %scratch, i64 %nt,
                          i32 %workers) {{
entry:
  %busy = getelementptr i8, ptr %st, i64 {_BUSY}
  %lk = cmpxchg ptr %busy, i32 0, i32 1 acquire monotonic
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
  call void @job(ptr %st, ptr %fn, i64 %n, ptr %args, ptr %scratch, i64 %nt, i32 %workers)
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
  store atomic i32 0, ptr %busy release, align 4
  br label %out
out:
  ret void
}}
"""


_NAMES = ["mxc_pool_run", "mxc_pool_start", "mxc_pool_worker"]


def _addresses(text: str) -> tuple[dict, object]:
    """Entry addresses of the pool's code (and what keeps it mapped): a prelinked image
    cached on disk where the host maps images (a warm process then never loads LLVM), else
    MCJIT."""
    from . import jit

    if jit.image_supported():
        key = hashlib.sha256((jit.host_identity() + "\0pool-v2\0" + text).encode())
        path = jit.cache_dir() / "pool" / f"{key.hexdigest()}.img"
        data = jit.read_entry(path)
        image = None
        if data is not None:
            try:
                image = _decode(data)
            except (ValueError, KeyError, TypeError, struct.error):
                image = None
        if image is None:
            image = jit.link_image([jit.object_for(text)], _NAMES)
            if image is not None:
                jit.write_entry(path, _encode(image))
        if image is not None:
            mapped = jit.map_image(image, "pool:" + key.hexdigest())
            return mapped.addresses, mapped
    cm = jit.compile_ir(text, _NAMES)
    return cm.addresses, cm


def _encode(image: dict) -> bytes:
    head = json.dumps({"arch": image["arch"], "relocs": image["relocs"],
                       "symbols": image["symbols"]}).encode()
    return struct.pack("<Q", len(head)) + head + image["code"]


def _decode(data: bytes) -> dict:
    (n,) = struct.unpack_from("<Q", data, 0)
    head = json.loads(data[8: 8 + n].decode())
    return {"arch": head["arch"], "relocs": [tuple(r) for r in head["relocs"]],
            "symbols": head["symbols"], "code": bytes(data[8 + n:])}


class NativePool:
    """The compiled pool: ``run(calls, n, scratch_ptrs, threads)``; workers start lazily."""

    def __init__(self, arch: str) -> None:
        addr, self._code = _addresses(_ir(arch))
        self._new_state()
        self._run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                     ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)(
            addr["mxc_pool_run"])
        self._start = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)(
            addr["mxc_pool_start"])
        self.workers = 0
        self._lock = threading.Lock()

    def _new_state(self) -> None:
        """A fresh state block (no workers, nothing pending, unlocked)."""
        self._state_buf = ctypes.create_string_buffer(STATE_BYTES + 64)
        self.state = (ctypes.addressof(self._state_buf) + 63) // 64 * 64
        libc = ctypes.CDLL(None)
        for off, fn in ((_F_SYSCALL, libc.syscall), (_F_CREATE, libc.pthread_create),
                        (_F_DETACH, libc.pthread_detach), (_F_YIELD, libc.sched_yield)):
            ctypes.c_void_p.from_address(self.state + off).value = \
                ctypes.cast(fn, ctypes.c_void_p).value
        self.workers = 0

    def after_fork_in_child(self) -> None:
        """A forked child has none of the parent's worker threads (and may have inherited
        a job in flight): start over with a fresh state; workers start again on demand."""
        self._lock = threading.Lock()
        self._new_state()

    def ensure_workers(self, n: int) -> int:
        """Start workers until there are ``n`` (never stops any; at most MAX_WORKERS);
        returns how many run."""
        with self._lock:
            while self.workers < min(n, MAX_WORKERS):
                if self._start(self.state, self.workers + 1) != 0:
                    break
                self.workers += 1
            return self.workers

    def run(self, calls, count: int, scratch_ptrs, threads: int) -> None:
        """Run ``count`` calls of the ``CALL`` array ``calls`` (or its address) on
        ``threads`` threads, the caller included (clamped to the workers running + 1).
        ctypes drops the GIL for the whole run."""
        nt = max(1, min(int(threads), self.workers + 1))
        self._run(self.state, calls if isinstance(calls, int) else ctypes.addressof(calls),
                  count, scratch_ptrs, nt, self.workers)


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
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_pool.after_fork_in_child)
        return _pool
