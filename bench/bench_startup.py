"""resnet18_v1 start-up costs, each in a fresh process: cold compile (empty MXC_CACHE_DIR,
build + first call), warm compile (same cache, build + first call again), and the peak resident
memory (ru_maxrss) of a process running batch-8 inference. No assertions.

    python bench/bench_startup.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from common import ROOT, SHARED

CHILD = r"""
import json, resource, sys, time
import numpy as np
from mxc.compiler.model import CompiledModel, load_model
d = sys.argv[1]; b = int(sys.argv[2])
t = time.perf_counter()
g, arg, aux = load_model(d + "/resnet18_v1-symbol.json", d + "/resnet18_v1-0000.params")
x = np.repeat(np.load(d + "/in_data.npy"), b, axis=0)
m = CompiledModel(g, arg, aux, {"data": x.shape})
m(data=x)
dt = time.perf_counter() - t
for _ in range(3):
    m(data=x)
print(json.dumps({"seconds": dt, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _child(case, batch, cache):
    env = dict(os.environ, MXC_CACHE_DIR=cache,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", CHILD, str(case), str(batch)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    case = SHARED / "mxnet_cases" / "resnet18_v1"
    if not case.exists():
        print(f"missing {case}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as cache:
        cold = _child(case, 1, cache)
        warm = _child(case, 1, cache)
        b8 = _child(case, 8, cache)
    print(f"resnet18_v1 cold compile (empty cache, load + build + first call): "
          f"{cold['seconds']:.2f} s  (target <= 3 s)")
    print(f"resnet18_v1 warm compile (cached objects, load + build + first call): "
          f"{warm['seconds']:.2f} s  (target <= 0.2 s)")
    print(f"resnet18_v1 batch 8 inference process peak RSS: {b8['maxrss_kib'] / 1024:.0f} MiB "
          f"(target <= 250 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
