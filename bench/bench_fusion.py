"""Benchmark operator fusion against numpy, in one run.

* ``gelu(x*a+b)`` (tanh form) built from ``mx.sym`` ops (broadcast_mul/broadcast_add with
  per-column a, b; scalar ops; tanh) over 16M float32 (4096 x 4096): mxc's fused kernel, the
  same graph compiled with fusion off, and numpy's unfused expression;
* ``softmax`` and ``LayerNorm`` over (4096, 1024) float32 against numpy.

Prints median times and ratios (numpy time / mxc time); no assertions.

    python bench/bench_fusion.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import interleaved, machine

import mxc as mx
from mxc.compiler.build import compile_graph


class Bound:
    """A compiled symbol with its inputs written once; ``run()`` runs the forward section."""

    def __init__(self, sym, values: dict, fusion: bool = True) -> None:
        shapes = {k: v.shape for k, v in values.items()}
        types = {k: v.dtype.name for k, v in values.items()}
        self.cg = compile_graph(sym._graph(), shapes, types, fusion=fusion)
        self.p = self.cg.program
        self.p.allocate()
        for k, v in values.items():
            dst = self.p.storage[self.cg.var_slots[k]]
            dst[: v.nbytes].view(v.dtype)[:] = v.ravel()

    def run(self) -> None:
        self.p.run("forward")

    def output(self) -> np.ndarray:
        return self.p.storage[self.cg.head_slots[0]].view(np.float32)


def gelu_sym():
    x, a, b = mx.sym.Variable("x"), mx.sym.Variable("a"), mx.sym.Variable("b")
    t = mx.sym.broadcast_add(mx.sym.broadcast_mul(x, a), b)
    inner = (t + 0.044715 * t * t * t) * 0.7978845608028654
    return 0.5 * t * (1 + mx.sym.tanh(inner))


def gelu_np(x, a, b):
    t = x * a + b
    return 0.5 * t * (1 + np.tanh((t + 0.044715 * t * t * t) * np.float32(0.7978845608028654)))


def softmax_np(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layernorm_np(x, g, b, eps=1e-5):
    m = x.mean(axis=-1, keepdims=True)
    v = x.var(axis=-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"# {machine()}, mxc threads: {os.environ.get('MXC_NUM_THREADS', 'all cores')}")
    print(f"{'case':34s} {'mxc ms':>9s} {'numpy ms':>9s} {'ratio':>7s}  notes")

    # gelu(x*a+b) over 16M floats
    x = rng.standard_normal((4096, 4096), dtype=np.float32)
    a = rng.standard_normal(4096, dtype=np.float32)
    b = rng.standard_normal(4096, dtype=np.float32)
    vals = {"x": x, "a": a, "b": b}
    fused = Bound(gelu_sym(), vals, fusion=True)
    unfused = Bound(gelu_sym(), vals, fusion=False)
    fused.run()
    err = float(np.max(np.abs(fused.output().reshape(x.shape) - gelu_np(x, a, b))))
    t = interleaved({"fused": fused.run, "unfused": unfused.run,
                     "numpy": lambda: gelu_np(x, a, b)}, repeats=args.repeats)
    cg = fused.cg
    print(f"{'gelu(x*a+b) 16M fused':34s} {t['fused'] * 1e3:9.2f} {t['numpy'] * 1e3:9.2f} "
          f"{t['numpy'] / t['fused']:6.1f}x  {cg.kernels_unfused} -> {len(cg.kernels)} "
          f"kernels, max|err| {err:.1e}")
    print(f"{'gelu(x*a+b) 16M unfused (mxc)':34s} {t['unfused'] * 1e3:9.2f} "
          f"{t['numpy'] * 1e3:9.2f} {t['numpy'] / t['unfused']:6.1f}x  "
          f"fusion gain {t['unfused'] / t['fused']:.1f}x")
    del fused, unfused, x

    # softmax and LayerNorm over (4096, 1024)
    x = rng.standard_normal((4096, 1024), dtype=np.float32)
    g = rng.standard_normal(1024, dtype=np.float32)
    bb = rng.standard_normal(1024, dtype=np.float32)
    sm = Bound(mx.sym.softmax(mx.sym.Variable("x"), axis=-1), {"x": x})
    ln = Bound(mx.sym.LayerNorm(mx.sym.Variable("x"), mx.sym.Variable("g"),
                                mx.sym.Variable("b"), axis=-1, eps=1e-5),
               {"x": x, "g": g, "b": bb})
    sm.run()
    ln.run()
    e_sm = float(np.max(np.abs(sm.output().reshape(x.shape) - softmax_np(x))))
    e_ln = float(np.max(np.abs(ln.output()[: x.size].reshape(x.shape) -
                               layernorm_np(x, g, bb))))
    t = interleaved({"sm": sm.run, "sm_np": lambda: softmax_np(x), "ln": ln.run,
                     "ln_np": lambda: layernorm_np(x, g, bb)}, repeats=args.repeats)
    print(f"{'softmax (4096, 1024)':34s} {t['sm'] * 1e3:9.2f} {t['sm_np'] * 1e3:9.2f} "
          f"{t['sm_np'] / t['sm']:6.1f}x  {len(sm.cg.kernels)} kernel(s), max|err| {e_sm:.1e}")
    print(f"{'LayerNorm (4096, 1024)':34s} {t['ln'] * 1e3:9.2f} {t['ln_np'] * 1e3:9.2f} "
          f"{t['ln_np'] / t['ln']:6.1f}x  {len(ln.cg.kernels)} kernel(s), max|err| {e_ln:.1e}")
    print("targets: gelu >= 2x, softmax and LayerNorm >= 6x faster than numpy")


if __name__ == "__main__":
    main()
