"""2-D max pooling, resnet18_v1's first pool (64 channels, 112x112, kernel 3, stride 2, pad 1,
output 56x56) at batch 1 and 8: mxc vs ONNX Runtime's MaxPool.

mxc compiles the single-node graph with ``compile_graph`` (the pooling template,
``codegen/pool_template.py``); with ``--generic`` it also times the generic kernel-IR lowering
(``MXC_POOL_TEMPLATE=0``) for comparison. ONNX Runtime runs a one-node MaxPool model built
with ``onnx.helper``. All contenders are timed interleaved in one process (medians, see
``common.interleaved``). Prints ms per call, GB/s of input read and the ratio mxc/ORT in time
(lower is better for mxc; target <= 1.2x). No assertions.

    python bench/bench_pool.py [--repeats 30] [--threads 2] [--batch 1 8] [--generic]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import interleaved, machine, ort_session

C, H, W = 64, 112, 112
KERNEL, STRIDE, PAD = 3, 2, 1
OH = OW = (H + 2 * PAD - KERNEL) // STRIDE + 1


def _ort_session(n: int, threads: int):
    from onnx import TensorProto, helper

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[KERNEL, KERNEL],
                            pads=[PAD] * 4, strides=[STRIDE, STRIDE])
    graph = helper.make_graph(
        [node], "maxpool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, C, OH, OW])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ort_session(model, threads)


def _mxc_runner(x: np.ndarray, template: bool):
    """(run, output view, compile seconds) of the one-node pooling graph."""
    import mxc as mx
    from mxc.compiler.build import compile_graph

    # the switch is not part of the program cache key: bypass the cache for the generic run
    switches = {"MXC_POOL_TEMPLATE": "1" if template else "0"}
    if not template:
        switches["MXC_PROGRAM_CACHE"] = "0"
    old = {k: os.environ.get(k) for k in switches}
    os.environ.update(switches)
    try:
        sym = mx.sym.Pooling(mx.sym.Variable("x"), kernel=(KERNEL, KERNEL),
                             stride=(STRIDE, STRIDE), pad=(PAD, PAD), pool_type="max",
                             name="pool")
        t = time.perf_counter()
        cg = compile_graph(sym._graph(), {"x": x.shape}, {"x": "float32"})
        p = cg.program
        p.allocate()
        p.storage[cg.var_slots["x"]][: x.nbytes].view(np.float32)[:] = x.ravel()
        compile_s = time.perf_counter() - t
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    n = x.shape[0]
    y = p.storage[cg.head_slots[0]].view(np.float32)[: n * C * OH * OW].reshape(n, C, OH, OW)
    return (lambda: p.run("forward")), y, compile_s


def bench_batch(n: int, args) -> None:
    x = np.random.default_rng(0).standard_normal((n, C, H, W), dtype=np.float32)
    run, y, compile_s = _mxc_runner(x, True)
    run()
    fns = {"mxc": run}
    if args.generic:
        grun, gy, _ = _mxc_runner(x, False)
        grun()
        assert np.array_equal(gy, y), "template and generic lowering disagree"
        fns["mxc-generic"] = grun
    note = ""
    try:
        sess = _ort_session(n, args.threads)
        ref = sess.run(None, {"x": x})[0]
        note = ", max abs err vs ORT %.1e" % float(np.abs(y - ref).max())
        fns["onnxruntime"] = lambda: sess.run(None, {"x": x})
    except ImportError as e:
        print(f"onnxruntime/onnx not installed ({e}): pip install -e '.[bench]'",
              file=sys.stderr)
    med = interleaved(fns, repeats=args.repeats)
    print(f"MaxPool {KERNEL}x{KERNEL} s{STRIDE} p{PAD}, {n}x{C}x{H}x{W} -> {OH}x{OW}; "
          f"mxc compile {compile_s:.2f} s{note}")
    for k, v in med.items():
        print(f"  {k:12s} {v * 1e3:8.3f} ms  {x.nbytes / v / 1e9:6.1f} GB/s input")
    if "onnxruntime" in med:
        print(f"  ratio mxc/onnxruntime time = {med['mxc'] / med['onnxruntime']:.2f}x "
              f"(target <= 1.2x)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--generic", action="store_true",
                    help="also time the generic lowering (MXC_POOL_TEMPLATE=0)")
    args = ap.parse_args(argv)
    if args.threads:
        from mxc.runtime.threadpool import set_num_threads
        set_num_threads(args.threads)
    threads = args.threads or os.environ.get("MXC_NUM_THREADS", "all cores")
    print(f"machine: {machine()}, threads: {threads}")
    for n in args.batch:
        bench_batch(n, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
