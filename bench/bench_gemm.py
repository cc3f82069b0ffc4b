"""Benchmark the mxc GEMM template against numpy (OpenBLAS).

JIT-compiles one kernel per shape for the host ISA, runs it single-threaded and with a 2-thread
ThreadPoolExecutor (each thread calls the ctypes function, which releases the GIL, on half of
the task range with its own scratch), and prints GFLOP/s next to numpy's.

    python bench/bench_gemm.py                    # squares 256..2048 + skinny shapes
    python bench/bench_gemm.py --dtype float64 --isa avx2 --sizes 512,1024

numpy's single-threaded numbers come from a child process started with
OPENBLAS_NUM_THREADS=1 (the BLAS thread count is fixed when numpy loads).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mxc.codegen.gemm import GemmSpec, gemm_kernel, host_isa

_FT = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)

# (label, M, N, K, B transposed)
SKINNY = [
    ("fc b1", 1, 1000, 512, True),
    ("fc b8", 8, 1000, 512, True),
    ("gemv 1x4096x4096", 1, 4096, 4096, False),
    ("m4 x 4096x1024", 4, 4096, 1024, False),
    ("fc b64 4096x1024", 64, 4096, 1024, True),
]


def _operands(M, N, K, dtype, tb, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((N, K)).astype(dtype).T if tb else \
        rng.standard_normal((K, N)).astype(dtype)
    return A, B


def _best(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _reps(flops):
    return max(3, min(50, int(2e10 / max(flops, 1))))


def numpy_child(shapes, dtype):
    """Runs in the OPENBLAS_NUM_THREADS=1 child: GFLOP/s per shape."""
    out = []
    for M, N, K, tb in shapes:
        A, B = _operands(M, N, K, dtype, tb)
        out.append(2 * M * N * K / _best(lambda A=A, B=B: A @ B, _reps(2 * M * N * K)) / 1e9)
    return out


class Jit:
    def __init__(self):
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.llvm = llvm
        self.engines = []

    def _tm(self):
        # a fresh one per engine: an MCJIT engine takes ownership of its target machine
        llvm = self.llvm
        return llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
            opt=3, jit=True)

    def compile(self, kernel):
        llvm = self.llvm
        mod = llvm.parse_assembly(kernel.ir)
        mod.verify()
        tm = self._tm()
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
        pb.getModulePassManager().run(mod, pb)
        ee = llvm.create_mcjit_compiler(mod, tm)
        ee.finalize_object()
        self.engines.append(ee)
        return _FT(ee.get_function_address(kernel.name))


def bench_mxc(jit, M, N, K, dtype, tb, isa, pool):
    A, B = _operands(M, N, K, dtype, tb)
    C = np.empty((M, N), dtype)
    es = np.dtype(dtype).itemsize
    spec = GemmSpec(1, M, N, K, np.dtype(dtype).name, (0, A.strides[0] // es, 1),
                    (0, B.strides[0] // es, B.strides[1] // es), (0, N, 1),
                    share_b=True)   # as the compiler emits it (lower.LowerCtx.gemm)
    t0 = time.perf_counter()
    kern = gemm_kernel("bench_gemm", spec, isa)
    fn = jit.compile(kern)
    compile_s = time.perf_counter() - t0
    ptrs = [A.ctypes.data, B.ctypes.data, C.ctypes.data]
    shared = np.zeros(kern.shared_bytes + 64, np.uint8)   # B packed once for all tasks
    if kern.shared_bytes:
        ptrs.append((shared.ctypes.data + 63) // 64 * 64)
    args = (ctypes.c_void_p * len(ptrs))(*ptrs)
    bufs = [np.zeros(kern.scratch_bytes + 64, np.uint8) for _ in range(2)]
    scr = [(b.ctypes.data + 63) // 64 * 64 for b in bufs]
    a = ctypes.addressof(args)
    n = kern.n_tasks

    def zero_counters():   # a compiled graph runs this as a kernel before every call
        if kern.shared_bytes:
            ctypes.memset(ptrs[3], 0, kern.shared_zero_bytes)

    def one():
        zero_counters()
        fn(0, n, a, scr[0])

    def two():
        zero_counters()
        f0 = pool.submit(fn, 0, n // 2, a, scr[0])
        fn(n // 2, n, a, scr[1])
        f0.result()

    flops = 2 * M * N * K
    reps = _reps(flops)
    g1 = flops / _best(one, reps) / 1e9
    g2 = flops / _best(two, reps) / 1e9
    # checked after timing: a threaded OpenBLAS call leaves its threads spinning for a while
    ref = A @ B
    err = np.abs(C - ref).max() / max(1.0, np.abs(ref).max())
    return g1, g2, compile_s, n, err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024,2048")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--isa", default=None, help="default: host_isa()")
    ap.add_argument("--no-skinny", action="store_true")
    ap.add_argument("--numpy-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.numpy_child:
        shapes = json.loads(args.numpy_child)
        print(json.dumps(numpy_child(shapes, args.dtype)))
        return
    isa = args.isa or host_isa()
    shapes = [(f"{n}^3", n, n, n, False) for n in map(int, args.sizes.split(","))]
    if not args.no_skinny:
        shapes += SKINNY
    plain = [s[1:] for s in shapes]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--dtype", args.dtype, "--numpy-child",
                          json.dumps(plain)], env=env, capture_output=True, text=True,
                         check=True)
    np1 = json.loads(out.stdout)
    np2 = numpy_child(plain, args.dtype)   # this process: OpenBLAS with its own threads

    jit = Jit()
    print(f"isa={isa} dtype={args.dtype}  GFLOP/s (1 thread | 2 threads)")
    print(f"{'shape':>18} {'mxc1':>7} {'np1':>7} {'ratio':>6} | {'mxc2':>7} {'np2':>7} "
          f"{'ratio':>6} | {'tasks':>5} {'compile':>8} {'relerr':>8}")
    with ThreadPoolExecutor(max_workers=1) as pool:
        for (label, M, N, K, tb), n1, n2 in zip(shapes, np1, np2):
            g1, g2, cs, nt, err = bench_mxc(jit, M, N, K, args.dtype, tb, isa, pool)
            print(f"{label:>18} {g1:7.1f} {n1:7.1f} {g1 / n1:6.2f} | {g2:7.1f} {n2:7.1f} "
                  f"{g2 / n2:6.2f} | {nt:5d} {cs:7.2f}s {err:8.1e}", flush=True)


if __name__ == "__main__":
    main()
