"""Model inference latency: mxc vs ONNX Runtime on the same weights, in one process.

``--model`` resnet18_v1 (default), lenet or mlp (the reference models that have an ONNX
twin in ../shared/onnx_models), at each ``--batch``; prints medians and the ratio mxc/ORT
(lower is better for mxc). Needs ../shared/mxnet_cases/MODEL and ../shared/onnx_models, and
`pip install -e ".[bench]"` for onnxruntime.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from common import SHARED, interleaved, machine


def _batch_free(path) -> bytes | str:
    """The ONNX model with a symbolic batch dimension (the export fixes it to 1)."""
    try:
        import onnx
    except ImportError:
        return str(path)
    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    return m.SerializeToString()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--model", default="resnet18_v1", choices=["resnet18_v1", "lenet", "mlp"])
    args = ap.parse_args()
    name_ = args.model
    case = SHARED / "mxnet_cases" / name_
    onnx_path = SHARED / "onnx_models" / f"{name_}.onnx"
    if not case.exists():
        print(f"missing {case}", file=sys.stderr)
        return 1
    if args.threads:
        from mxc.runtime.threadpool import set_num_threads
        set_num_threads(args.threads)
    from mxc.compiler.model import CompiledModel, load_model

    graph, arg, aux = load_model(case / f"{name_}-symbol.json", case / f"{name_}-0000.params")
    x1 = np.load(case / "in_data.npy")[:1]
    want = np.load(case / "out_0.npy")[:1]
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
        print("onnxruntime not installed: pip install -e '.[bench]'", file=sys.stderr)
    print(f"machine: {machine()}")
    for b in args.batch:
        x = np.repeat(x1, b, axis=0)
        t = time.perf_counter()
        model = CompiledModel(graph, arg, aux, {"data": x.shape})
        ct = time.perf_counter() - t
        y = model(data=x)[0]
        err = float(np.max(np.abs(y[:1] - want)) / np.max(np.abs(want)))
        fns = {"mxc": lambda: model(data=x)}
        sess = None
        if ort is not None:
            so = ort.SessionOptions()
            if args.threads:
                so.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(_batch_free(onnx_path), so,
                                        providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            fns["onnxruntime"] = lambda: sess.run(None, {name: x})
        med = interleaved(fns, repeats=args.repeats)
        print(f"{name_} batch {b}: compile {ct:.2f} s, max rel err vs MXNet {err:.1e}")
        for k, v in med.items():
            print(f"  {k:12s} {v * 1e3:9.3f} ms")
        if "onnxruntime" in med:
            print(f"  ratio mxc/onnxruntime = {med['mxc'] / med['onnxruntime']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
