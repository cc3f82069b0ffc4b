"""resnet18_v1 start-up costs, each in a fresh process: cold compile (empty MXC_CACHE_DIR,
load + build + first call), warm compile (same cache: the whole program comes from the program
cache), and the peak resident memory (ru_maxrss) of a process running batch-8 inference, once
while it compiles the batch-8 program (most kernels of other shapes than batch 1's) and once
with that program cached. No assertions.

    python bench/bench_startup.py [--warm-runs N]

Children inherit the environment. Where it sets PYTHONDONTWRITEBYTECODE (this sandbox does),
every fresh process compiles the Python source of the modules it imports, the operator
definitions among them (~0.1 s of the warm figure, loaded lazily by the first graph); the
"bytecode cached" line repeats the warm run with bytecode written to a private
PYTHONPYCACHEPREFIX, as an installed package has it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
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
from mxc.codegen import jit
print(json.dumps({"seconds": dt, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "from_cache": m.compiled.from_cache, "compiled": jit.STATS["compiled"],
                  "llvm": "llvmlite.binding" in sys.modules}))
"""


def _child(case, batch, cache, pycache=None):
    env = dict(os.environ, MXC_CACHE_DIR=cache,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    out = subprocess.run([sys.executable, "-c", CHILD, str(case), str(batch)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _how(r) -> str:
    return ("cached program" if r["from_cache"] else f"{r['compiled']} objects compiled") + \
        ("" if r["llvm"] else ", LLVM not loaded")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm-runs", type=int, default=5, help="warm processes (median shown)")
    args = ap.parse_args()
    case = SHARED / "mxnet_cases" / "resnet18_v1"
    if not case.exists():
        print(f"missing {case}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as cache:
        cold = _child(case, 1, cache)
        warm = [_child(case, 1, cache) for _ in range(max(1, args.warm_runs))]
        pyc = os.path.join(cache, "pycache")
        _child(case, 1, cache, pyc)                      # writes the bytecode
        warm_pyc = [_child(case, 1, cache, pyc) for _ in range(max(1, args.warm_runs))]
        b8 = _child(case, 8, cache)
        b8_warm = _child(case, 8, cache)
    ws = [r["seconds"] for r in warm]
    wp = [r["seconds"] for r in warm_pyc]
    bytecode = "off (PYTHONDONTWRITEBYTECODE)" if os.environ.get("PYTHONDONTWRITEBYTECODE") \
        else "as the environment has it"
    print(f"resnet18_v1 cold compile (empty cache, load + build + first call): "
          f"{cold['seconds']:.2f} s  (target <= 3 s; {_how(cold)})")
    print(f"resnet18_v1 warm compile (same cache, load + build + first call): "
          f"{statistics.median(ws):.3f} s median of {len(ws)}, min {min(ws):.3f} "
          f"(target <= 0.2 s; {_how(warm[-1])}; bytecode {bytecode})")
    print(f"resnet18_v1 warm compile, bytecode cached: {statistics.median(wp):.3f} s median "
          f"of {len(wp)}, min {min(wp):.3f}")
    print(f"resnet18_v1 batch 8 inference process peak RSS: "
          f"{b8['maxrss_kib'] / 1024:.0f} MiB compiling ({_how(b8)}), "
          f"{b8_warm['maxrss_kib'] / 1024:.0f} MiB cached ({_how(b8_warm)})  "
          f"(target <= 250 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
