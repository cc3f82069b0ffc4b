"""Shared helpers of the benchmarks: locating ../shared, interleaved timing, printing."""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MXC_SHARED", ROOT.parent / "shared"))


def interleaved(fns: dict, repeats: int = 30, warmup: int = 3, block: int = 3,
                settle: float = 0.06) -> dict:
    """Median seconds of each callable, measured in alternating blocks so drift hits all
    alike: per round each callable first runs untimed for ``settle`` seconds, then ``block``
    timed calls back to back.

    Why: runtimes' thread pools keep spinning for a while after their work (ONNX Runtime's
    for ~35 ms here, OpenBLAS's too), and an idle pause lets the cores clock down. Measured
    call by call, each runtime's call runs next to the other's spinning threads or on a cold
    core (resnet18 b1: mxc 13 ms alone, 20-28 ms right after an ONNX Runtime call; ORT
    8.5 ms -> 16 ms after a 0.3 s pause). The timed calls are the steady state a serving
    loop sees, for every runtime alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < settle:
                f()
            for _ in range(block):
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"Python {platform.python_version()}"


def ort_session(model, threads: int = 0):
    """An ONNX Runtime CPU session for ``model`` (an onnx ModelProto, checked first), with
    ``threads`` intra-op threads (0: ORT's default, all cores)."""
    import onnx
    import onnxruntime as ort

    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
