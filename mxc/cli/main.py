"""The ``mxc`` command line: demo, run, inspect.

Each command is a thin layer over the library (``compiler.model``), so everything the CLI
does is also reachable from Python.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from ..base import MXNetError


def _parse_shape_opt(values: tuple) -> dict:
    shapes = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"expected NAME=D1,D2,..., got {v!r}")
        name, dims = v.split("=", 1)
        try:
            shapes[name] = tuple(int(d) for d in dims.replace("x", ",").split(",") if d)
        except ValueError:
            raise click.BadParameter(f"bad shape {dims!r} for {name}") from None
    return shapes


def _parse_inputs(values: tuple) -> dict:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"expected NAME=FILE.npy, got {v!r}")
        name, path = v.split("=", 1)
        try:
            out[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise click.BadParameter(f"cannot read {path}: {e}") from None
    return out


@click.group()
@click.version_option(package_name="mxc")
def main() -> None:
    """mxc: MXNet models compiled to machine code with LLVM."""


@main.command()
@click.option("--repeat", default=20, show_default=True, help="timed inference runs")
def demo(repeat: int) -> None:
    """Compile the bundled LeNet (a real MXNet 1.9.1 export) and run it."""
    from ..codegen import jit
    from ..compiler.model import CompiledModel, load_model

    root = Path(__file__).resolve().parents[1] / "models" / "lenet"
    graph, arg, aux = load_model(root / "lenet-symbol.json", root / "lenet-0000.params")
    x = np.load(root / "in_data.npy")
    want = np.load(root / "out_0.npy")
    model = CompiledModel(graph, arg, aux, {"data": x.shape})
    click.echo(f"model      lenet ({len(graph.nodes)} nodes, "
               f"{sum(a.size for a in arg.values()):,} parameters), input data{x.shape}")
    click.echo(f"compile    {model.compile_seconds * 1e3:.1f} ms "
               f"({len(model.compiled.program.calls)} kernel calls; "
               f"{jit.STATS['compiled']} modules compiled, {jit.STATS['cache_hits']} from the "
               "disk cache)")
    (y,) = model(data=x)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        model(data=x)
        times.append(time.perf_counter() - t)
    err = float(np.max(np.abs(y - want)))
    click.echo(f"inference  median {np.median(times) * 1e3:.3f} ms over {repeat} runs "
               f"(batch {x.shape[0]})")
    click.echo(f"output     {y.shape} argmax per sample {y.argmax(axis=1).tolist()}")
    click.echo(f"vs MXNet   max |mxc - mxnet| = {err:.2e} "
               f"({'OK' if np.allclose(y, want, rtol=1e-4, atol=1e-5) else 'MISMATCH'})")
    np.set_printoptions(precision=4, suppress=True)
    click.echo(str(y))


@main.command()
@click.argument("symbol", type=click.Path(exists=True, dir_okay=False))
@click.option("--params", type=click.Path(exists=True, dir_okay=False), help=".params file")
@click.option("--input", "inputs", multiple=True, required=True, help="NAME=FILE.npy")
@click.option("--output", type=click.Path(dir_okay=False), help="write output 0 to .npy")
def run(symbol: str, params: str | None, inputs: tuple, output: str | None) -> None:
    """Run MODEL-symbol.json on .npy inputs and print (or save) the outputs."""
    from ..compiler.model import CompiledModel, load_model

    try:
        graph, arg, aux = load_model(symbol, params)
        feed = _parse_inputs(inputs)
        model = CompiledModel(graph, arg, aux, {k: v.shape for k, v in feed.items()},
                              {k: v.dtype.name for k, v in feed.items()})
        t = time.perf_counter()
        outs = model(**feed)
        dt = time.perf_counter() - t
    except MXNetError as e:
        raise click.ClickException(str(e)) from None
    for i, o in enumerate(outs):
        click.echo(f"output {i}: shape {o.shape} dtype {o.dtype}")
        click.echo(str(o))
    click.echo(f"compile {model.compile_seconds * 1e3:.1f} ms, run {dt * 1e3:.3f} ms",
               err=True)
    if output:
        np.save(output, outs[0])


@main.command()
@click.argument("symbol", type=click.Path(exists=True, dir_okay=False))
@click.option("--shape", "shapes", multiple=True, help="NAME=D1,D2,... for each input")
@click.option("--params", type=click.Path(exists=True, dir_okay=False),
              help=".params file (parameter shapes)")
@click.option("--dump-ir", is_flag=True, help="print the kernel IR of every kernel")
@click.option("--dump-llvm", is_flag=True, help="print the optimized LLVM IR")
@click.option("--json", "as_json", is_flag=True, help="machine-readable summary")
def inspect(symbol: str, shapes: tuple, params: str | None, dump_ir: bool, dump_llvm: bool,
            as_json: bool) -> None:
    """Ops, shapes, parameter count and FLOPs per node of a model."""
    from ..compiler import infer
    from ..compiler.model import load_model

    try:
        graph, arg, aux = load_model(symbol, params)
        known = _parse_shape_opt(shapes)
        for n, a in {**arg, **aux}.items():
            known.setdefault(n, a.shape)
        sh = infer.infer_shapes(graph, known)
        ty = infer.infer_types(graph, {})
    except MXNetError as e:
        raise click.ClickException(str(e)) from None
    rows = []
    total_flops = 0
    n_params = 0
    inputs = set(known) - set(arg) - set(aux)
    for node in graph.nodes:
        if node.is_variable:
            s = sh[(node.uid, 0)]
            if node.name not in inputs:
                n_params += int(np.prod(s))
            continue
        ins = [sh[(e.node.uid, e.index)] for e in node.inputs]
        outs = [sh[(node.uid, i)] for i in range(node.num_outputs)]
        fl = int(node.opdef.flops(node.parsed, ins, outs))
        total_flops += fl
        rows.append({"name": node.name, "op": node.op, "inputs": ins, "outputs": outs,
                     "flops": fl, "dtype": ty[(node.uid, 0)]})
    if as_json:
        click.echo(json.dumps({"nodes": rows, "parameters": n_params, "flops": total_flops},
                              default=list))
    else:
        click.echo(f"{'node':40s} {'op':22s} {'output shape':24s} {'FLOPs':>14s}")
        for r in rows:
            click.echo(f"{r['name'][:40]:40s} {r['op'][:22]:22s} "
                       f"{str(tuple(r['outputs'][0]))[:24]:24s} {r['flops']:>14,d}")
        click.echo(f"{len(rows)} op nodes, {n_params:,} parameters, {total_flops:,} FLOPs "
                   f"({total_flops / 1e9:.3f} GFLOP)")
    if dump_ir or dump_llvm:
        from ..codegen.jit import optimized_ir
        from ..compiler.build import compile_graph
        from ..ir.kernel import Kernel, dump

        cg = compile_graph(graph, known)
        if dump_ir:
            for lk in cg.kernels:
                k = lk.kernel
                click.echo(f"\n# kernel for node {lk.node} ({k.note}), {k.n_tasks} tasks")
                if isinstance(k, Kernel):
                    click.echo(f"for {k.task_var} in tasks (parallel):")
                    click.echo(dump(k.body, 1))
                else:
                    click.echo("  <template kernel: see --dump-llvm>")
        if dump_llvm:
            for fname, text in cg.modules:
                click.echo(f"\n; ---- {fname}")
                click.echo(optimized_ir(text))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
