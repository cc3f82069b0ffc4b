"""One 3x3 convolution, 64->64 channels, 56x56, batch 8, pad 1, forward: mxc vs ONNX Runtime.

mxc compiles the single-node graph with the weight bound as a constant (``CompiledModel``,
as ONNX Runtime's initializer is); ONNX Runtime runs an equivalent one-node ONNX model built
with ``onnx.helper`` (same weights). Both are timed interleaved in one process (medians).
Prints GFLOP/s, % of peak and the ratio mxc/ORT in GFLOP/s (higher is better for mxc).
No assertions.

Peak: the CPU reports itself as znver5 (full-width 512-bit FMA), so the nominal
figures in ../shared/TOOLCHAIN.md (znver4) may not hold; the bench measures numpy/OpenBLAS
sgemm 2048^3 in the same process and reports % of that ("BLAS peak", a lower bound of the true
peak, so that percentage is an upper bound), and % of an assumed nominal peak: cores x 64
FLOP/cycle (two 512-bit FMA pipes, znver5) x 3.59 GHz (the clock in TOOLCHAIN.md).

    python bench/bench_conv.py [--repeats 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import interleaved, machine, ort_session

N, C, H, W, K = 8, 64, 56, 56, 64
NOMINAL_PER_CORE = 64 * 3.59   # GFLOP/s, assumption stated in the docstring


def _blas_gflops(threads: int) -> float:
    a = np.random.default_rng(1).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 ** 3 / best / 1e9


def _ort_session(w: np.ndarray, threads: int):
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                            strides=[1, 1])
    graph = helper.make_graph(
        [node], "conv3x3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, K, H, W])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ort_session(model, threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    args = ap.parse_args(argv)
    if args.threads:
        from mxc.runtime.threadpool import set_num_threads
        set_num_threads(args.threads)
    import mxc as mx
    from mxc.compiler.model import CompiledModel

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) * 0.05).astype(np.float32)
    sym = mx.sym.Convolution(mx.sym.Variable("x"), mx.sym.Variable("w"), kernel=(3, 3),
                             pad=(1, 1), num_filter=K, no_bias=True, name="conv")
    # the weight is a constant, as ONNX Runtime's initializer is: both runtimes may lay it
    # out for their kernels ahead of time (mxc packs it into GEMM panels at bind time)
    t = time.perf_counter()
    model = CompiledModel(sym._graph(), {"w": w}, {}, {"x": x.shape})
    compile_s = time.perf_counter() - t
    y = model(x=x)[0]

    def mxc_run():
        model.run_inplace()

    fns = {"mxc": mxc_run}
    err = None
    try:
        sess = _ort_session(w, args.threads)
        ref = sess.run(None, {"x": x})[0]
        err = float(np.abs(y - ref).max() / np.abs(ref).max())
        fns["onnxruntime"] = lambda: sess.run(None, {"x": x})
    except ImportError as e:
        print(f"onnxruntime/onnx not installed ({e}): pip install -e '.[bench]'",
              file=sys.stderr)
    peak = _blas_gflops(args.threads)
    med = interleaved(fns, repeats=args.repeats)
    flops = 2 * N * K * H * W * C * 9
    threads = args.threads or os.environ.get("MXC_NUM_THREADS", "all cores")
    print(f"machine: {machine()}, threads: {threads}")
    print(f"conv 3x3 {C}->{K} {H}x{W} batch {N} (pad 1), {flops / 1e9:.2f} GFLOP; "
          f"mxc compile {compile_s:.2f} s" + (f", max rel err vs ORT {err:.1e}" if err else ""))
    nominal = NOMINAL_PER_CORE * (args.threads or os.cpu_count() or 1)
    print(f"BLAS peak (numpy sgemm 2048^3, this process): {peak:.1f} GFLOP/s; assumed nominal "
          f"peak {nominal:.0f} GFLOP/s")
    g = {k: flops / v / 1e9 for k, v in med.items()}
    for k, v in med.items():
        print(f"  {k:12s} {v * 1e3:8.2f} ms  {g[k]:7.1f} GFLOP/s  {100 * g[k] / peak:5.1f}% "
              f"of BLAS peak  {100 * g[k] / nominal:5.1f}% of nominal")
    if "onnxruntime" in g:
        print(f"  ratio mxc/onnxruntime GFLOP/s = {g['mxc'] / g['onnxruntime']:.2f}x "
              f"(target >= 0.9x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
