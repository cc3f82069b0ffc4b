"""MLP 784-512-512-10 training step at batch 128: mxc (Gluon hybridized, Module) beside a
hand-written numpy step of the same network (forward, softmax cross-entropy, backward, SGD),
in one process; plus the per-op overhead of small imperative mx.nd calls.

Prints medians and ratios to numpy (lower is better for mxc). No assertions.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from common import interleaved, machine

B, D, H, C = 128, 784, 512, 10
LR = 0.05


def numpy_step_factory(rng):
    w1 = rng.standard_normal((H, D)).astype(np.float32) * 0.05
    w2 = rng.standard_normal((H, H)).astype(np.float32) * 0.05
    w3 = rng.standard_normal((C, H)).astype(np.float32) * 0.05
    b1, b2, b3 = (np.zeros(n, np.float32) for n in (H, H, C))
    x = rng.standard_normal((B, D)).astype(np.float32)
    y = rng.integers(0, C, B)

    def step():
        nonlocal w1, w2, w3, b1, b2, b3
        h1 = np.maximum(x @ w1.T + b1, 0)
        h2 = np.maximum(h1 @ w2.T + b2, 0)
        z = h2 @ w3.T + b3
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(B), y] -= 1
        dz = p / B
        dw3, db3 = dz.T @ h2, dz.sum(0)
        dh2 = (dz @ w3) * (h2 > 0)
        dw2, db2 = dh2.T @ h1, dh2.sum(0)
        dh1 = (dh2 @ w2) * (h1 > 0)
        dw1, db1 = dh1.T @ x, dh1.sum(0)
        w1 -= LR * dw1
        w2 -= LR * dw2
        w3 -= LR * dw3
        b1 -= LR * db1
        b2 -= LR * db2
        b3 -= LR * db3

    return step


def gluon_step_factory(mx, rng):
    from mxc import gluon
    from mxc.gluon import nn

    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(H, activation="relu"), nn.Dense(H, activation="relu"), nn.Dense(C))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": LR})
    x = mx.nd.array(rng.standard_normal((B, D)))
    y = mx.nd.array(rng.integers(0, C, B))

    def step():
        with mx.autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(B)
        mx.nd.waitall()   # the whole step (backward, updates), not just the loss

    return step


def module_step_factory(mx, rng):
    data = mx.sym.var("data")
    h = mx.sym.Activation(mx.sym.FullyConnected(data, num_hidden=H, name="fc1"), act_type="relu")
    h = mx.sym.Activation(mx.sym.FullyConnected(h, num_hidden=H, name="fc2"), act_type="relu")
    out = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(h, num_hidden=C, name="fc3"),
                               name="softmax")
    mod = mx.mod.Module(out)
    mod.bind(data_shapes=[("data", (B, D))], label_shapes=[("softmax_label", (B,))])
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(optimizer="sgd", optimizer_params=(("learning_rate", LR),))
    batch = mx.io.DataBatch([mx.nd.array(rng.standard_normal((B, D)))],
                            [mx.nd.array(rng.integers(0, C, B))])

    def step():
        mod.forward_backward(batch)
        mod.update()
        mx.nd.waitall()   # the whole step (backward, update), not just the outputs

    return step


def dispatch_overhead(mx, n=2000) -> float:
    mx.nd.waitall()
    a = mx.nd.ones((10,))
    for _ in range(50):
        a + 1
    t = time.perf_counter()
    for _ in range(n):
        a + 1
    mx.nd.waitall() if hasattr(mx.nd, "waitall") else None
    return (time.perf_counter() - t) / n


def main() -> int:
    import mxc as mx

    rng = np.random.default_rng(0)
    fns = {"numpy": numpy_step_factory(rng)}
    for name, factory in (("mxc gluon (hybridized)", gluon_step_factory),
                          ("mxc module", module_step_factory)):
        try:
            fns[name] = factory(mx, rng)
        except Exception as e:  # a missing piece is reported, not fatal to the bench
            print(f"{name}: unavailable ({type(e).__name__}: {e})", file=sys.stderr)
    print(f"machine: {machine()}")
    med = interleaved(fns, repeats=20, warmup=3)
    print(f"MLP {D}-{H}-{H}-{C} training step, batch {B}:")
    for k, v in med.items():
        ratio = v / med["numpy"]
        print(f"  {k:24s} {v * 1e3:8.2f} ms   {ratio:5.2f}x numpy")
    print(f"imperative dispatch: {dispatch_overhead(mx) * 1e6:.1f} us per small mx.nd op (a + 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
