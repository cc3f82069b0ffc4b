"""Shared helpers of the benchmarks: locating ../shared, interleaved timing, printing."""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MXC_SHARED", ROOT.parent / "shared"))


def interleaved(fns: dict, repeats: int = 30, warmup: int = 3) -> dict:
    """Median seconds of each callable, measured round-robin so drift hits all alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"Python {platform.python_version()}"
