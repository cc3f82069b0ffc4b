"""The ``mxc`` command line: demo, run, inspect, compile.

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
@click.argument("symbol", type=click.Path(exists=True))
@click.option("--params", type=click.Path(exists=True, dir_okay=False), help=".params file")
@click.option("--input", "inputs", multiple=True, required=True, help="NAME=FILE.npy")
@click.option("--output", type=click.Path(dir_okay=False), help="write output 0 to .npy")
@click.option("--device", default=None,
              help="GPU artifacts: cuda, cuda:N or emulator (the CPU PTX emulator; default "
                   "$MXC_CUDA_DEVICE, else cuda:0)")
def run(symbol: str, params: str | None, inputs: tuple, output: str | None,
        device: str | None) -> None:
    """Run MODEL-symbol.json (or an artifact directory from `mxc compile`) on .npy inputs
    and print (or save) the outputs."""
    if Path(symbol).is_dir():
        _run_artifact(symbol, inputs, output, device)
        return
    if device:
        raise click.UsageError("--device applies to GPU artifact directories")
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


def _run_artifact(path: str, inputs: tuple, output: str | None,
                  device: str | None = None) -> None:
    import os

    from ..runtime import load

    spec = (device or os.environ.get("MXC_CUDA_DEVICE") or "").strip().lower()
    if spec in ("emulator", "emu", "ptx-emulator"):
        # the runtime never imports the code generator itself: importing the emulator here
        # makes device "emulator" (option or $MXC_CUDA_DEVICE) resolvable
        from ..codegen import ptx_emu  # noqa: F401
    try:
        t = time.perf_counter()
        model = load(path, device=device) if device else load(path)
        t_load = time.perf_counter() - t
        feed = _parse_inputs(inputs)
        t = time.perf_counter()
        outs = model(**feed)
        dt = time.perf_counter() - t
    except MXNetError as e:
        raise click.ClickException(str(e)) from None
    for name, o in zip(model.output_names, outs):
        click.echo(f"output {name}: shape {o.shape} dtype {o.dtype}")
        click.echo(str(o))
    click.echo(f"load {t_load * 1e3:.1f} ms, run {dt * 1e3:.3f} ms", err=True)
    if output:
        np.save(output, outs[0])


def _short(features: str, n: int = 48) -> str:
    if len(features) <= n:
        return features
    return features[:n] + f"... ({features.count(',') + 1} flags)"


def _find_params(symbol: str) -> str | None:
    """MODEL-0000.params beside MODEL-symbol.json (Gluon export / checkpoint pairs)."""
    p = Path(symbol)
    stem = p.name[: -len("-symbol.json")] if p.name.endswith("-symbol.json") else p.stem
    cands = sorted(p.parent.glob(f"{stem}-*.params"))
    return str(cands[-1]) if cands else None


@main.command("compile")
@click.argument("symbol", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--params", type=click.Path(exists=True, dir_okay=False),
              help=".params file (default: MODEL-NNNN.params beside the symbol file)")
@click.option("--shape", "shapes", multiple=True, help="NAME=D1,D2,... for each data input")
@click.option("--dtype", "dtypes", multiple=True, help="NAME=DTYPE (default float32)")
@click.option("--target", default="host", show_default=True,
              help="target preset (see --list-targets)")
@click.option("--cpu", help="override the preset's CPU")
@click.option("--features", help="override the preset's CPU features (+neon,-avx512f,...)")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="artifact directory")
@click.option("--prefix", default="mxc_model", show_default=True,
              help="C symbol prefix (<prefix>_run, ...)")
@click.option("--no-static", is_flag=True, help="do not write libmodel.a")
@click.option("--keep-ir", is_flag=True, help="also write the LLVM IR (model.ll)")
@click.option("--no-emulator", is_flag=True,
              help="GPU targets: do not write the CPU emulation module (model.emu.ll)")
@click.option("--fast-math", is_flag=True,
              help="GPU targets: approximate ex2/lg2/tanh instructions for float32 "
                   "exp/log/sigmoid/tanh")
@click.option("--list-targets", is_flag=True, help="print the target presets and exit")
def compile_cmd(symbol: str | None, params: str | None, shapes: tuple, dtypes: tuple, target: str,
                cpu: str | None, features: str | None, out_dir: str | None, prefix: str,
                no_static: bool, keep_ir: bool, no_emulator: bool, fast_math: bool,
                list_targets: bool) -> None:
    """Compile MODEL-symbol.json into a standalone artifact directory (libmodel.so,
    libmodel.a, model.h, metadata.json) for the host or a cross target; or, for a GPU target
    (cuda-sm80, cuda-sm90), model.ptx, plan.json, weights.bin and metadata.json."""
    from ..codegen import targets

    if list_targets:
        for n in targets.names():
            t = targets.resolve(n)
            click.echo(f"{n:28s} {t.triple:36s} cpu={t.cpu} features={_short(t.features) or '-'} "
                       f"gemm={t.gemm_isa}")
        for n in targets.GPU_PRESETS:
            sm = "sm_" + n.rsplit("sm", 1)[1]
            click.echo(f"{n:28s} {'nvptx64-nvidia-cuda':36s} {sm} (PTX + launch plan; "
                       "runs through runtime.cuda)")
        return
    if not symbol:
        raise click.UsageError("missing MODEL-symbol.json")
    if not out_dir:
        raise click.UsageError("missing -o/--output OUTDIR")
    from ..compiler import aot

    try:
        params = params or _find_params(symbol)
        dts = {}
        for v in dtypes:
            if "=" not in v:
                raise click.BadParameter(f"expected NAME=DTYPE, got {v!r}")
            k, d = v.split("=", 1)
            dts[k] = d
        gpu = aot.cuda_sm(target) is not None
        if not gpu and (no_emulator or fast_math):
            raise click.UsageError("--no-emulator/--fast-math apply to GPU targets (cuda-sm*)")
        extra = {"emulator": not no_emulator, "fast_math": fast_math} if gpu else {}
        art = aot.compile(symbol, params, None, _parse_shape_opt(shapes), target=target,
                          prefix=prefix, out_dir=out_dir, types=dts, cpu=cpu,
                          features=features, static_lib=not no_static, keep_ir=keep_ir,
                          **extra)
    except MXNetError as e:
        raise click.ClickException(str(e)) from None
    m = art.metadata
    if m.get("backend") == "cuda":
        _echo_cuda_artifact(art)
        return
    click.echo(f"wrote {art.path}/ for {art.target.name} ({art.target.triple})")
    click.echo(f"  libmodel.so  {m['files']['libmodel.so']['bytes']:,} bytes "
               f"({m['weights_bytes']:,} bytes of weights, {len(m['kernels'])} kernel calls)")
    click.echo(f"  workspace    {m['workspace_bytes']:,} bytes (planned arena "
               f"{m['memory']['arena_bytes']:,}, unplanned {m['memory']['naive_bytes']:,}, "
               f"scratch {m['memory']['scratch_bytes']:,})")
    for r in m["inputs"]:
        click.echo(f"  input        {r['name']} {r['dtype']} {tuple(r['shape'])}")
    for r in m["outputs"]:
        click.echo(f"  output       {r['name']} {r['dtype']} {tuple(r['shape'])}")
    st = art.stats
    secs = st["lower_seconds"] + st["codegen_seconds"] + st["link_seconds"]
    click.echo(f"  built in     {secs:.2f} s")


def _echo_cuda_artifact(art) -> None:
    m = art.metadata
    f = m["files"]
    t = m["target"]
    click.echo(f"wrote {art.path}/ for {t['name']} ({t['triple']}, {t['sm']}, "
               f"PTX ISA {t['ptx_version']})")
    click.echo(f"  model.ptx    {f['model.ptx']['bytes']:,} bytes "
               f"({len({k['name'] for k in m['kernels']})} kernels, "
               f"{len(m['kernels'])} launches)")
    click.echo(f"  weights.bin  {f['weights.bin']['bytes']:,} bytes")
    click.echo(f"  plan.json    {f['plan.json']['bytes']:,} bytes")
    if "model.emu.ll" in f:
        click.echo(f"  model.emu.ll {f['model.emu.ll']['bytes']:,} bytes (CPU emulation)")
    click.echo(f"  workspace    {m['workspace_bytes']:,} bytes of device memory (planned arena "
               f"{m['memory']['arena_bytes']:,}, unplanned {m['memory']['naive_bytes']:,})")
    for r in m["inputs"]:
        click.echo(f"  input        {r['name']} {r['dtype']} {tuple(r['shape'])}")
    for r in m["outputs"]:
        click.echo(f"  output       {r['name']} {r['dtype']} {tuple(r['shape'])}")
    st = art.stats
    click.echo(f"  built in     {st['lower_seconds'] + st['codegen_seconds']:.2f} s")


@main.command()
@click.argument("symbol", type=click.Path(exists=True, dir_okay=False))
@click.option("--shape", "shapes", multiple=True, help="NAME=D1,D2,... for each input")
@click.option("--params", type=click.Path(exists=True, dir_okay=False),
              help=".params file (parameter shapes)")
@click.option("--dump-ir", is_flag=True, help="print the kernel IR of every kernel")
@click.option("--dump-llvm", is_flag=True, help="print the optimized LLVM IR")
@click.option("--json", "as_json", is_flag=True, help="machine-readable summary")
@click.option("--memory", is_flag=True,
              help="internal memory (no reuse, inplace, sharing, planned, lower bound)")
@click.option("--train", is_flag=True,
              help="with --memory: the training graph (grad_req 'write' for every argument)")
@click.option("--fusion", "show_fusion", is_flag=True,
              help="kernels before and after fusion and the members of each fused group")
@click.option("--svg", "svg", type=click.Path(dir_okay=False),
              help="draw the compiled graph (fused groups, storage) to FILE (.svg via "
                   "graphviz, .dot as text)")
def inspect(symbol: str, shapes: tuple, params: str | None, dump_ir: bool, dump_llvm: bool,
            as_json: bool, memory: bool, train: bool, show_fusion: bool,
            svg: str | None) -> None:
    """Ops, shapes, parameter count and FLOPs per node of a model; with --memory, the bytes
    of internal memory as MXNet's executor counts them. With --params, --fusion and --svg
    show the inference graph as ``CompiledModel`` runs it (BatchNorm folded into the
    convolutions); --memory always counts the graph as written, as MXNet does."""
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
    if memory:
        try:
            rep = memory_report(graph, known, ty, train)
        except MXNetError as e:
            raise click.ClickException(str(e)) from None
        _echo_memory(rep, as_json)
        return
    if show_fusion or svg:
        try:
            fg, fk = (graph, known) if train or not params else \
                _folded(graph, known, {**arg, **aux})
            rep = fusion_report(fg, fk, ty, train, svg=svg)
        except MXNetError as e:
            raise click.ClickException(str(e)) from None
        if show_fusion:
            _echo_fusion(rep, as_json)
        else:
            click.echo(f"wrote {svg}")
        return
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


def memory_report(graph, shapes: dict, types: dict, train: bool = False) -> dict:
    """Bytes of internal memory of ``graph`` the way MXNet's ``executor.debug_str()`` counts
    them: every value but the inputs, parameters, auxiliary states and their gradients (here:
    the temporaries, kernel workspaces included, and the outputs), with no reuse, with inplace
    only, with sharing only, planned (both) and the lower bound of the call order; kernel
    calls with and without fusion."""
    from ..compiler import plan_memory as memplan
    from ..compiler.build import compile_graph

    req = None
    if train:
        aux = graph.mutable_variables()
        req = {n.name: "write" for n in graph.variables()
               if n.uid not in aux and str(types.get((n.uid, 0), "float32")).startswith(
                   ("float", "bfloat"))}
    cg = compile_graph(graph, shapes, is_train=train, grad_req=req, plan_memory=True,
                       codegen=False)
    plan = cg.memory
    if plan is None:  # planning off (MXC_PLAN_MEMORY=0) or nothing to plan: figures anyway
        slots = cg.program.slots
        _, plan = memplan.plan_program(cg.kernels, [s.nbytes for s in slots],
                                       [s.kind for s in slots],
                                       cg.program.sections["forward"][1],
                                       protected=cg.head_slots)
    kernels = len(cg.kernels)
    out = {"mode": "train" if train else "inference"}
    if plan is None:
        naive = sum(memplan.aligned(s.nbytes) for s in cg.program.slots if s.kind == "temp")
        out.update({k: naive for k in ("naive_bytes", "inplace_bytes", "sharing_bytes",
                                       "planned_bytes", "lower_bound_bytes", "mxnet_bytes")})
        out.update({"arena_bytes": 0, "strategy": "none"})
    else:
        out.update(plan.summary())
    # kernels_unfused: the kernel count without fusion (equal when fusion is off)
    out["kernels_unfused"] = int(cg.kernels_unfused or kernels)
    out["kernels"] = kernels
    return out


def _folded(graph, shapes: dict, params: dict):
    """The inference graph with constants folded (as ``CompiledModel`` compiles it)."""
    from ..compiler.fold_constants import fold_constants

    names = {v.name for v in graph.variables()}
    g, p = fold_constants(graph, {k: np.asarray(v) for k, v in params.items() if k in names})
    known = {k: v for k, v in shapes.items() if k not in params}
    known.update({k: v.shape for k, v in p.items()})
    return g, known


def fusion_report(graph, shapes: dict, types: dict, train: bool = False,
                  svg: str | None = None) -> dict:
    """Kernel calls of ``graph`` without and with fusion, and each fused group's nodes (in
    run order; a group is one kernel); with ``svg``, the drawing written there."""
    from ..compiler.build import compile_graph

    req = None
    if train:
        aux = graph.mutable_variables()
        req = {n.name: "write" for n in graph.variables()
               if n.uid not in aux and str(types.get((n.uid, 0), "float32")).startswith(
                   ("float", "bfloat"))}
    cg = compile_graph(graph, shapes, is_train=train, grad_req=req, fusion=True,
                       codegen=False)
    if svg:
        from .graph_svg import write_svg
        write_svg(cg, svg)
    groups = [{"kernel": k.node, "nodes": list(k.members)} for k in cg.kernels
              if k.members and len(k.members) > 1]
    return {"mode": "train" if train else "inference", "kernels_unfused": cg.kernels_unfused,
            "kernels": len(cg.kernels), "fused_groups": groups}


def _echo_fusion(rep: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rep))
        return
    n0, n1 = rep["kernels_unfused"], rep["kernels"]
    click.echo(f"fusion ({rep['mode']}): {n0} kernels unfused -> {n1} fused "
               f"({len(rep['fused_groups'])} fused groups)")
    for i, g in enumerate(rep["fused_groups"]):
        click.echo(f"  group {i}: {len(g['nodes'])} nodes -> kernel of {g['kernel']}")
        for n in g["nodes"]:
            click.echo(f"    {n}")


def _echo_memory(rep: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rep))
        return
    mib = 1 << 20
    lb = rep["lower_bound_bytes"]
    rows = [("no reuse", "naive_bytes"), ("inplace only", "inplace_bytes"),
            ("sharing only", "sharing_bytes"), ("planned", "planned_bytes"),
            ("lower bound", "lower_bound_bytes"), ("MXNet's planner", "mxnet_bytes")]
    click.echo(f"internal memory ({rep['mode']}; temporaries and outputs, as MXNet counts)")
    for label, key in rows:
        extra = ""
        if key == "planned_bytes":
            extra = f"  ({rep['strategy']}; {rep[key] / max(lb, 1):.2f}x the lower bound)"
        click.echo(f"  {label:16s} {rep[key] / mib:12.2f} MiB{extra}")
    click.echo(f"kernels {rep['kernels']} ({rep['kernels_unfused']} without fusion)")


# name -> (script in bench/, accepts --repeats, accepts --threads, extra arguments)
_BENCHES = {
    "gemm": ("bench_gemm.py", False, False, []),
    "resnet18": ("bench_models.py", True, True, ["--batch", "1", "8"]),
    "lenet": ("bench_models.py", True, True, ["--model", "lenet", "--batch", "1", "8"]),
    "mlp": ("bench_models.py", True, True, ["--model", "mlp", "--batch", "1", "8"]),
    "conv": ("bench_conv.py", True, True, []),
    "mlp-train": ("bench_mlp_train.py", False, False, []),
    "memory": ("bench_memory.py", False, False, []),
    "fusion": ("bench_fusion.py", True, False, []),
    "pool": ("bench_pool.py", True, True, []),
    "startup": ("bench_startup.py", False, False, []),
}


@main.command("bench")
@click.argument("what", nargs=-1)
@click.option("--repeats", type=int, help="timed runs per case (benchmarks that take it)")
@click.option("--threads", type=int, help="mxc threads (MXC_NUM_THREADS; gemm always does 1 and 2)")
def bench_cmd(what: tuple, repeats: int | None, threads: int | None) -> None:
    """Run the benchmarks in the repository's bench/ folder (default: all present).

    WHAT: gemm, resnet18, conv, mlp-train, memory, fusion, startup. Each runs in its own
    process with this interpreter and prints ratios against its reference measured in the
    same run.
    """
    import os
    import subprocess

    import mxc

    unknown = [w for w in what if w not in _BENCHES]
    if unknown:
        raise click.UsageError(f"unknown benchmark(s) {', '.join(unknown)}; "
                               f"choose from {', '.join(_BENCHES)}")
    bench_dir = Path(mxc.__file__).resolve().parents[1] / "bench"
    if not bench_dir.is_dir():
        raise click.ClickException(f"no bench/ folder at {bench_dir}: the benchmarks ship with "
                                   "the source repository, not the installed package")
    names = list(what) or [n for n, v in _BENCHES.items() if (bench_dir / v[0]).exists()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(bench_dir.parent), str(bench_dir), os.environ.get("PYTHONPATH")) if p))
    if threads:
        env["MXC_NUM_THREADS"] = str(threads)
    failed = []
    for name in names:
        script, takes_repeats, takes_threads, extra = _BENCHES[name]
        if not (bench_dir / script).exists():
            click.echo(f"== {name}: {script} not present in {bench_dir}, skipped")
            continue
        args = [sys.executable, str(bench_dir / script), *extra]
        if repeats and takes_repeats:
            args += ["--repeats", str(repeats)]
        if threads and takes_threads:
            args += ["--threads", str(threads)]
        click.echo(f"== {name} ({script})", nl=True)
        sys.stdout.flush()
        rc = subprocess.run(args, check=False, cwd=bench_dir, env=env).returncode
        if rc:
            failed.append(name)
    if failed:
        raise click.ClickException(f"benchmark(s) failed: {', '.join(failed)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
