"""Internal memory of model-zoo networks: no reuse, inplace only, sharing only, MXNet's planner
(ported), mxc's plan and the lower bound, for inference and training (grad_req 'write').

Counted as `mxc inspect --memory` counts (MXNet's executor.debug_str(): everything but inputs,
parameters, auxiliary states and gradients). resnet18_v1 is the real MXNet export when
../shared/mxnet_cases is present; the others are built here with mx.sym as the gluon model zoo
defines them (v1 ResNets, VGG-16, MobileNet v1 1.0). MXNet 1.9.1's own figures for
resnet18_v1 at batch 16 are printed alongside: 75 MiB inference, 376 MiB training.

    python bench/bench_memory.py [--batch 16] [--models resnet18_v1,resnet50_v1,...]
"""
from __future__ import annotations

import argparse
import time

from common import SHARED

import mxc as mx
from mxc.cli.main import memory_report
from mxc.compiler import infer
from mxc.ir.graph import Graph

MXNET_MIB = {("resnet18_v1", 16, "inference"): 75, ("resnet18_v1", 16, "train"): 376}
S = mx.sym


def conv_bn(x, c, k, s, p, name, relu=True, groups=1):
    x = S.Convolution(x, num_filter=c, kernel=(k, k), stride=(s, s), pad=(p, p),
                      num_group=groups, no_bias=True, name=f"{name}_conv")
    x = S.BatchNorm(x, name=f"{name}_bn")
    return S.Activation(x, act_type="relu", name=f"{name}_relu") if relu else x


def resnet_v1(layers, bottleneck):
    x = conv_bn(S.var("data"), 64, 7, 2, 3, "stem")
    x = S.Pooling(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    chans = [256, 512, 1024, 2048] if bottleneck else [64, 128, 256, 512]
    cin = 64
    for st, (n, c) in enumerate(zip(layers, chans)):
        for b in range(n):
            stride = 2 if b == 0 and st > 0 else 1
            name = f"s{st}b{b}"
            if bottleneck:
                y = conv_bn(x, c // 4, 1, stride, 0, f"{name}a")
                y = conv_bn(y, c // 4, 3, 1, 1, f"{name}b")
                y = conv_bn(y, c, 1, 1, 0, f"{name}c", relu=False)
            else:
                y = conv_bn(x, c, 3, stride, 1, f"{name}a")
                y = conv_bn(y, c, 3, 1, 1, f"{name}b", relu=False)
            sc = x if (stride == 1 and cin == c) else conv_bn(x, c, 1, stride, 0, f"{name}d",
                                                              relu=False)
            x = S.Activation(y + sc, act_type="relu", name=f"{name}_out")
            cin = c
    x = S.Pooling(x, global_pool=True, pool_type="avg", kernel=(1, 1))
    return S.FullyConnected(S.Flatten(x), num_hidden=1000, name="fc")


def vgg16():
    x = S.var("data")
    for i, (n, c) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]):
        for j in range(n):
            x = S.Activation(S.Convolution(x, num_filter=c, kernel=(3, 3), pad=(1, 1),
                                           name=f"c{i}_{j}"), act_type="relu")
        x = S.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max")
    x = S.Flatten(x)
    for i in range(2):
        x = S.Activation(S.FullyConnected(x, num_hidden=4096, name=f"fc{i}"), act_type="relu")
        x = S.Dropout(x, p=0.5)
    return S.FullyConnected(x, num_hidden=1000, name="fc2")


def mobilenet_v1():
    x = conv_bn(S.var("data"), 32, 3, 2, 1, "stem")
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    cin = 32
    for i, (c, s) in enumerate(cfg):
        x = conv_bn(x, cin, 3, s, 1, f"dw{i}", groups=cin)
        x = conv_bn(x, c, 1, 1, 0, f"pw{i}")
        cin = c
    x = S.Pooling(x, global_pool=True, pool_type="avg", kernel=(1, 1))
    return S.FullyConnected(S.Flatten(x), num_hidden=1000, name="fc")


def resnet18_export():
    from mxc.compiler.model import load_model

    d = SHARED / "mxnet_cases" / "resnet18_v1"
    if not d.exists():
        return Graph(resnet_v1([2, 2, 2, 2], False)._outputs)
    graph, _, _ = load_model(d / "resnet18_v1-symbol.json")
    return graph


MODELS = {
    "resnet18_v1": resnet18_export,
    "resnet50_v1": lambda: Graph(resnet_v1([3, 4, 6, 3], True)._outputs),
    "vgg16": lambda: Graph(vgg16()._outputs),
    "mobilenet1.0": lambda: Graph(mobilenet_v1()._outputs),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="16", help="comma-separated batch sizes")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default="inference,train")
    args = ap.parse_args()
    mib = 1 << 20
    print(f"{'model':14s} {'batch':>5s} {'mode':9s} {'naive':>9s} {'inplace':>9s} "
          f"{'sharing':>9s} {'mxnet*':>9s} {'planned':>9s} {'bound':>9s} "
          f"{'vs naive':>8s} {'vs mxnet*':>9s} {'MXNet':>6s}  (MiB)")
    for name in args.models.split(","):
        g = MODELS[name]()
        for batch in (int(b) for b in args.batch.split(",")):
            shapes = {"data": (batch, 3, 224, 224)}
            types = infer.infer_types(g, {})
            for mode in args.modes.split(","):
                t = time.perf_counter()
                r = memory_report(g, dict(shapes), types, train=mode == "train")
                dt = time.perf_counter() - t
                ref = MXNET_MIB.get((name, batch, mode))
                print(f"{name:14s} {batch:5d} {mode:9s} "
                      + " ".join(f"{r[k] / mib:9.1f}" for k in (
                          "naive_bytes", "inplace_bytes", "sharing_bytes", "mxnet_bytes",
                          "planned_bytes", "lower_bound_bytes"))
                      + f" {r['naive_bytes'] / r['planned_bytes']:7.1f}x"
                      f" {r['planned_bytes'] / r['mxnet_bytes']:8.2f}x"
                      + (f" {ref:6d}  planned/MXNet {r['planned_bytes'] / mib / ref:.2f}x"
                         if ref else "")
                      + f"  [{r['kernels']} kernels, {dt:.1f} s]", flush=True)
    print("mxnet*: MXNet's PlanMemory ported to mxc's kernels (counts kernel workspaces, "
          "which MXNet's own figure leaves out)")


if __name__ == "__main__":
    main()
