"""Ahead-of-time builds: a model compiled into a standalone artifact directory.

``mx.compile(symbol, arg_params, aux_params, shapes, target="host", prefix="mxc_model",
out_dir=...)`` and ``mxc compile`` write:

- ``libmodel.so``: ONE LLVM module compiled for the target and linked with
  ``ld.lld -shared --gc-sections``: the graph's kernels, a generated entry
  ``<prefix>_run(inputs, outputs, workspace)`` that calls every kernel over its task range
  in order with static offsets into one 64-byte aligned workspace (the memory plan's arena),
  the weights as aligned read-only constants, and the metadata. Freestanding: no DT_NEEDED
  entries, no undefined symbols (no libc/libm: mxc's own math, "no-builtins" functions,
  and on 32-bit ARM its own compiler-runtime helpers, ``codegen.rtlib``).
- ``libmodel.a``: the same object in an archive, for static linking into an app.
- ``model.h``: the C ABI (see ``docs/deploy.md``); ``metadata.json``: format version, mxc
  version, target, inputs/outputs in order, workspace bytes, kernel list, file checksums.

GPU targets (``cuda-sm80``, ``cuda-sm90``; see :func:`_compile_cuda` and ``docs/deploy.md``)
write ``model.ptx`` (every kernel of the graph, one PTX module), ``plan.json`` (the launch
plan: kernels in order with grid/block/shared memory and each argument as a region + byte
offset, the workspace layout of the memory plan, weight offsets, inputs/outputs),
``plan.txt`` (what a run needs of the same plan as whitespace-separated tokens, for C:
``examples/c/run_cuda.c``), ``weights.bin`` (one blob, 256-byte aligned tensors),
``model.emu.ll`` (the CPU emulation of the same kernels, for ``runtime.load(...,
device="emulator")``; ``emulator=False`` omits it) and ``metadata.json`` (``"backend": "cuda"``). ``runtime.load`` runs them through
``runtime.cuda``.

The module is callable: ``mx.compile(...)`` is ``compile(...)`` below.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import types as _types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base import CompileError, MXNetError
from ..codegen import targets as T
from ..ir import kernel as K
from ..ir.dtypes import as_dtype
from ..ir.graph import Graph, load_json

FORMAT_VERSION = 1
ALIGN = 64                     # workspace and weight alignment (bytes)
# kernels doing less work than this run on the calling thread even with a parallel-for
# callback installed (the runtime thread pool's own threshold)
PARALLEL_MIN_COST = 1 << 15

ERROR_CODES = {
    "MXC_OK": (0, "success"),
    "MXC_ERR_NULL_INPUT": (1, "inputs, or one of inputs[i], is NULL"),
    "MXC_ERR_NULL_OUTPUT": (2, "outputs, or one of outputs[i], is NULL"),
    "MXC_ERR_NULL_WORKSPACE": (3, "workspace is NULL while <prefix>_workspace_size() > 0"),
    "MXC_ERR_MISALIGNED_WORKSPACE": (4, "workspace is not 64-byte aligned"),
    "MXC_ERR_MISALIGNED_BUFFER": (5, "an input or output is not aligned to its element size"),
    "MXC_ERR_PARALLEL": (6, "the parallel-for callback returned non-zero"),
}


@dataclass
class Artifact:
    """An artifact directory written by :func:`compile`."""

    path: Path
    metadata: dict
    target: T.Target
    stats: dict = field(default_factory=dict)

    @property
    def library(self) -> Path:
        return self.path / "libmodel.so"

    @property
    def workspace_bytes(self) -> int:
        return self.metadata["workspace_bytes"]

    @property
    def backend(self) -> str:
        return self.metadata.get("backend", "cpu")

    def load(self, **kwargs):
        """Load the artifact in this process: ``runtime.load`` (host targets, or GPU targets
        with ``device=``: a GPU, or ``"emulator"``)."""
        from ..runtime.artifact import load

        return load(self.path, **kwargs)

    def __repr__(self) -> str:
        return (f"Artifact({str(self.path)!r}, target={self.target.name!r}, "
                f"workspace={self.workspace_bytes} bytes)")


# ---------------------------------------------------------------------------------------------
# the public entry
# ---------------------------------------------------------------------------------------------

def compile(symbol, arg_params: dict | None = None, aux_params: dict | None = None,
            shapes: dict | None = None, target: str | T.Target = "host",
            prefix: str = "mxc_model", out_dir: str | os.PathLike | None = None, *,
            types: dict | None = None, cpu: str | None = None, features: str | None = None,
            gemm_isa: str | None = None, static_lib: bool = True, fusion: bool | None = None,
            plan_memory: bool = True, keep_ir: bool = False, emulator: bool = True,
            fast_math: bool = False, fold: bool = True) -> Artifact:
    """Compile a model into an artifact directory (``out_dir``; a new temporary directory
    when not given) for ``target`` (a preset name, see ``codegen.targets``).

    ``symbol``: an ``mx.sym`` Symbol, an ``ir.Graph``, or the path of a ``-symbol.json``
    (then ``arg_params`` may be the path of the ``.params`` file: a Gluon ``export`` pair or
    a ``save_checkpoint`` pair). ``shapes`` maps each data input to its shape; ``types`` to
    its dtype (default float32). ``prefix`` names the C symbols (``<prefix>_run`` ...).

    GPU targets (``cuda-sm80``, ``cuda-sm90``) write PTX + launch plan + weights instead of a
    library; for them ``emulator`` (default True) also writes the CPU emulation of the
    kernels (``model.emu.ll``) and ``fast_math`` uses the approximate ex2/lg2/tanh
    instructions. ``cpu``/``features``/``gemm_isa``/``static_lib`` are CPU-only. ``fold``
    (default True) folds inference BatchNorm and parameter-only subgraphs into the weights
    (``fold_constants``, as ``CompiledModel``); CPU artifacts store convolution and
    FullyConnected weights in their kernels' prepacked layouts.
    """
    t0 = time.perf_counter()
    graph, params = _model(symbol, arg_params, aux_params)
    if fold:   # an artifact's parameters are fixed: BatchNorm into the weights, as
        # CompiledModel does (resnet18_v1: 20 convolutions with their BatchNorm, residual add
        # and ReLU as 20 kernels instead of 20 + 16 elementwise passes)
        from .fold_constants import fold_constants

        used = {v.name for v in graph.variables()}
        graph, params = fold_constants(graph, {k: a for k, a in params.items() if k in used})
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix or ""):
        raise MXNetError(f"prefix {prefix!r} is not a C identifier")
    sm = cuda_sm(target)
    if sm is not None:
        if cpu or features is not None or gemm_isa:
            raise MXNetError(f"--cpu/--features/gemm_isa apply to CPU targets, not to the GPU "
                             f"target '{target}'")
        return _compile_cuda(graph, params, dict(shapes or {}), dict(types or {}),
                             str(target).strip().lower(), sm, prefix, out_dir, fusion=fusion,
                             plan_memory=plan_memory, keep_ir=keep_ir, emulator=emulator,
                             fast_math=fast_math, t0=t0)
    tgt = T.resolve(target, cpu=cpu, features=features, gemm_isa=gemm_isa)
    plan = _plan(graph, params, dict(shapes or {}), dict(types or {}), tgt, fusion,
                 plan_memory, prepack=True)
    t1 = time.perf_counter()
    meta = _metadata(plan, tgt, prefix)
    ir_text = _module_ir(plan, tgt, prefix, meta)
    obj = _emit_object(ir_text, tgt)
    t2 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="mxc-artifact-"))
    out.mkdir(parents=True, exist_ok=True)
    _check_object(obj, tgt)
    so = out / "libmodel.so"
    _link(obj, so, tgt)
    _check_library(so, tgt, prefix)
    files = {"libmodel.so": _file_entry(so)}
    if static_lib:
        _write_archive(out / "libmodel.a", "model.o", obj, _api_names(prefix))
        files["libmodel.a"] = _file_entry(out / "libmodel.a")
    else:
        (out / "libmodel.a").unlink(missing_ok=True)   # no stale file from an earlier build
    (out / "model.h").write_text(model_header(prefix, meta))
    files["model.h"] = _file_entry(out / "model.h")
    if keep_ir:
        (out / "model.ll").write_text(ir_text)
    else:
        (out / "model.ll").unlink(missing_ok=True)
    full = dict(meta, files=files)
    (out / "metadata.json").write_text(json.dumps(full, indent=1) + "\n")
    stats = {"lower_seconds": t1 - t0, "codegen_seconds": t2 - t1,
             "link_seconds": time.perf_counter() - t2, "object_bytes": len(obj),
             "library_bytes": so.stat().st_size}
    return Artifact(out, full, tgt, stats)


# ---------------------------------------------------------------------------------------------
# model input
# ---------------------------------------------------------------------------------------------

def _model(symbol, arg_params, aux_params) -> tuple[Graph, dict]:
    from .model import load_params

    if isinstance(symbol, (str, os.PathLike)):
        p = Path(symbol)
        try:
            graph = load_json(p.read_text(), str(p))
        except OSError as e:
            raise MXNetError(f"cannot read symbol file {p}: {e.strerror}") from None
    elif isinstance(symbol, Graph):
        graph = symbol
    elif hasattr(symbol, "_outputs"):          # mx.sym.Symbol
        graph = Graph(list(symbol._outputs))
    elif hasattr(symbol, "tojson"):
        graph = load_json(symbol.tojson())
    else:
        raise MXNetError(f"compile: expected a Symbol, a Graph or a -symbol.json path, got "
                         f"{type(symbol).__name__}")
    params: dict = {}
    if isinstance(arg_params, (str, os.PathLike)):
        a, x = load_params(arg_params)
        params.update(a)
        params.update(x)
    else:
        for d in (arg_params or {}, aux_params or {}):
            for k, v in d.items():
                k = k[4:] if k.startswith(("arg:", "aux:")) else k
                params[k] = _as_numpy(v)
    if isinstance(aux_params, (str, os.PathLike)):
        a, x = load_params(aux_params)
        params.update(a)
        params.update(x)
    return graph, params


def _as_numpy(v) -> np.ndarray:
    if hasattr(v, "asnumpy"):
        return v.asnumpy()
    if hasattr(v, "data") and callable(v.data):   # gluon Parameter
        return v.data().asnumpy()
    return np.asarray(v)


def _output_names(graph: Graph) -> list:
    """Output names as MXNet's ``list_outputs`` spells them."""
    out = []
    for e in graph.outputs:
        n = e.node
        if n.is_variable:
            out.append(n.name)
            continue
        names = list(n.opdef.outputs(n.parsed))
        k = n.opdef.num_outputs(n.parsed)
        if len(names) != k:
            names = ["output"] if k == 1 else [f"output{i}" for i in range(k)]
        out.append(f"{n.name}_{names[e.index]}" if e.index < len(names)
                   else f"{n.name}_output{e.index}")
    return out


# ---------------------------------------------------------------------------------------------
# planning: lower the graph, place every slot
# ---------------------------------------------------------------------------------------------

@dataclass
class _Plan:
    graph: Graph
    cg: object                      # CompiledGraph (codegen=False)
    inputs: list                    # [(name, slot, shape, dtype)]
    outputs: list                   # [(name, slot, shape, dtype)]
    place: dict                     # slot -> ("in", i) | ("out", j) | ("const", k) | ("ws", off)
    consts: list                    # [(name, bytes)]
    copies_in: list                 # [(ws offset, input index, nbytes)]
    copies_out: list                # [(output index, place, nbytes)]
    rng_offsets: list               # ws offsets of 8-byte seeds
    scratch_offset: int
    scratch_bytes: int
    workspace_bytes: int
    arena_bytes: int
    naive_bytes: int


def _plan(graph: Graph, params: dict, shapes: dict, in_types: dict, tgt: T.Target,
          fusion, plan_memory, prepack: bool = False) -> _Plan:
    """``prepack``: the parameters are constants of the program, so convolution and
    FullyConnected weights may be stored in their kernels' prepacked layouts (CPU artifacts;
    the GPU lowering packs nothing)."""
    from .build import compile_graph
    from .model import pack_parameter

    var_names = [v.name for v in graph.variables()]
    inputs = [n for n in var_names if n not in params]
    missing = [n for n in inputs if n not in shapes]
    if missing:   # inference may complete them (a SoftmaxOutput label from its data)
        from . import infer

        known = {n: tuple(shapes[n]) for n in inputs if n in shapes}
        known.update({n: tuple(params[n].shape) for n in var_names if n in params})
        try:
            sh = infer.infer_shapes(graph, known)
        except MXNetError:
            sh = {}
        for v in graph.variables():
            got = sh.get((v.uid, 0))
            if v.name in missing and got is not None and all(int(d) > 0 for d in got):
                shapes[v.name] = tuple(got)
        missing = [n for n in inputs if n not in shapes]
    if missing:
        raise MXNetError(f"no shape given for input(s) {missing} (parameters missing from "
                         f"the .params file also show here); inputs of this model: {inputs}")
    arg_shapes = {n: tuple(int(d) for d in shapes[n]) for n in inputs}
    arg_types = {n: as_dtype(in_types.get(n, "float32")).name for n in inputs}
    for n in var_names:
        if n in params:
            arg_shapes[n] = tuple(params[n].shape)
            arg_types[n] = params[n].dtype.name
    if not tgt.is_host and struct.pack("=I", 1) != b"\x01\0\0\0":
        raise CompileError("cross builds from a big-endian host are not supported")
    with T.using(tgt):
        cg = compile_graph(graph, arg_shapes, arg_types, fusion=fusion,
                           plan_memory=plan_memory, codegen=False,
                           constants=tuple(n for n in var_names if n in params)
                           if prepack else ())
    prog = cg.program
    slots = prog.slots
    place: dict = {}
    ins, outs = [], []
    for i, n in enumerate(inputs):
        s = cg.var_slots[n]
        d = as_dtype(arg_types[n])
        ins.append((n, s, arg_shapes[n], d))
    consts = []
    const_slot: dict = {}
    for n in var_names:
        if n in params:
            s = cg.var_slots[n]
            a = np.ascontiguousarray(params[n], dtype=as_dtype(arg_types[n]).np)
            if s in prog.slot_layouts:
                a = pack_parameter(a, prog.slot_layouts[s])
            const_slot[s] = len(consts)
            consts.append((n, a.tobytes()))
    names = _output_names(graph)
    for j, (e, s) in enumerate(zip(graph.outputs, cg.head_slots)):
        k = (e.node.uid, e.index)
        outs.append((names[j], s, tuple(cg.shapes[k]), as_dtype(cg.types[k])))
    written = _written_slots(cg)
    copies_in = []
    copies_out = []
    # placement: inputs, constants, outputs, then the workspace
    for i, (n, s, shape, d) in enumerate(ins):
        place.setdefault(s, ("in", i))
    for s, k in const_slot.items():
        if s in written:
            raise CompileError(f"a kernel writes parameter '{consts[k][0]}', which an artifact "
                               "holds as read-only data (training graphs cannot be exported)")
        place.setdefault(s, ("const", k))
    for j, (n, s, shape, d) in enumerate(outs):
        if s in place:     # output is an input, a parameter or another output: copied at the end
            copies_out.append((j, place[s], math.prod(shape) * d.itemsize))
        else:
            place[s] = ("out", j)
    arena = prog.arena_offsets if prog.arena_offsets else {}
    arena_bytes = _rup(prog.arena_bytes, ALIGN) if arena else 0
    off = arena_bytes
    rng = []
    naive = 0
    for s, info in enumerate(slots):
        if info.kind in ("temp", "rng"):
            naive += _rup(info.nbytes, ALIGN)
        if s in place or info.nbytes == 0:
            continue
        if s in arena and info.kind != "rng":
            place[s] = ("ws", int(arena[s]))
            continue
        place[s] = ("ws", off)
        if info.kind == "rng":
            rng.append(off)
        off += _rup(info.nbytes, ALIGN)
    # inputs that a kernel writes in place: copied into the workspace first
    for i, (n, s, shape, d) in enumerate(ins):
        if s in written:
            nb = math.prod(shape) * d.itemsize
            place[s] = ("ws", off)
            copies_in.append((off, i, nb))
            off += _rup(nb, ALIGN)
    for j, (jj, src, nb) in enumerate(copies_out):
        if src[0] == "in":   # an input written in place is read from its workspace copy
            s = ins[src[1]][1]
            copies_out[j] = (jj, place[s], nb)
    scratch = max((c.scratch_bytes for c in prog.calls), default=0)
    scratch_off = off
    off += _rup(scratch, ALIGN)
    return _Plan(graph, cg, ins, outs, place, consts, copies_in, copies_out, rng, scratch_off,
                 scratch, _rup(off, ALIGN), arena_bytes, naive)


def _written_slots(cg) -> set:
    """Slots some kernel stores into."""
    out = set()
    for lk in cg.kernels:
        k = lk.kernel
        if isinstance(k, K.TemplateKernel):
            # GEMM / direct convolution templates (also with a fused epilogue) store into
            # their output only
            idx = list(k.writes) if k.writes is not None else list(range(len(k.buffers)))
        else:
            bufs = set()
            _stores(k.body, bufs)
            idx = [i for i, b in enumerate(k.buffers) if b in bufs]
        for i in idx:
            if i < len(lk.slots):
                out.add(lk.slots[i])
    return out


def _stores(body: list, acc: set) -> None:
    for s in body:
        if isinstance(s, K.Store):
            acc.add(s.buf)
        elif isinstance(s, K.For):
            _stores(s.body, acc)
        elif isinstance(s, K.If):
            _stores(s.then, acc)
            _stores(s.otherwise, acc)


def _rup(n: int, a: int) -> int:
    return -(-int(n) // a) * a


# ---------------------------------------------------------------------------------------------
# metadata and the C header
# ---------------------------------------------------------------------------------------------

def _api_names(prefix: str) -> list:
    return [f"{prefix}_{n}" for n in ("run", "info", "workspace_size", "set_parallel",
                                      "num_inputs", "num_outputs", "input", "output")]


def _metadata(plan: _Plan, tgt: T.Target, prefix: str) -> dict:
    import mxc

    def io(rows):
        return [{"name": n, "shape": list(shape), "dtype": d.name,
                 "nbytes": math.prod(shape) * d.itemsize} for n, _s, shape, d in rows]

    kernels = []
    for lk, call in zip(plan.cg.kernels, plan.cg.program.calls):
        k = lk.kernel
        kernels.append({"node": lk.node, "kind": k.note or type(k).__name__,
                        "tasks": int(k.n_tasks), "scratch_bytes": int(k.scratch_bytes),
                        "cost": int(k.cost)})
    mem = plan.cg.memory
    return {
        "format": "mxc-artifact",
        "format_version": FORMAT_VERSION,
        "mxc_version": mxc.__mxc_version__,
        "mxnet_version": mxc.__version__,
        "prefix": prefix,
        "target": tgt.describe(),
        "inputs": io(plan.inputs),
        "outputs": io(plan.outputs),
        "workspace_bytes": plan.workspace_bytes,
        "workspace_alignment": ALIGN,
        "memory": {"arena_bytes": plan.arena_bytes, "scratch_bytes": _rup(plan.scratch_bytes,
                                                                            ALIGN),
                   "naive_bytes": plan.naive_bytes, "planned": mem is not None},
        "weights_bytes": sum(len(b) for _n, b in plan.consts),
        "parallel_min_cost": PARALLEL_MIN_COST,
        "kernels": kernels,
        "symbols": _api_names(prefix),
        "error_codes": {k: v[0] for k, v in ERROR_CODES.items()},
    }


def model_header(prefix: str, meta: dict) -> str:
    guard = f"{prefix.upper()}_H"
    ins = "\n".join(f" *   inputs[{i}]  {r['name']}: {r['dtype']} {tuple(r['shape'])}, "
                    f"{r['nbytes']} bytes" for i, r in enumerate(meta["inputs"]))
    outs = "\n".join(f" *   outputs[{i}] {r['name']}: {r['dtype']} {tuple(r['shape'])}, "
                     f"{r['nbytes']} bytes" for i, r in enumerate(meta["outputs"]))
    codes = "\n".join(f"#define {k:<30s} {v[0]}  /* {v[1]} */"
                      for k, v in ERROR_CODES.items())
    t = meta["target"]
    first = (f"/* {prefix}: generated by mxc {meta['mxc_version']} for {t['name']} "
             f"({t['triple']}, cpu {t['cpu']}).")
    return f"""{first}
 *
{ins}
{outs}
 *   workspace: {meta['workspace_bytes']} bytes, {ALIGN}-byte aligned, one per concurrent run
 *
 * Buffers are C-contiguous, in the order above. {prefix}_run is reentrant when each
 * concurrent call has its own workspace. Link: -l:libmodel.so, libmodel.a or dlopen().
 */
#ifndef {guard}
#define {guard}

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#ifndef MXC_MODEL_ABI_V1
#define MXC_MODEL_ABI_V1 1
{codes}

/* A kernel: runs tasks [task_begin, task_end) of one step; scratch is a private, 64-byte
 * aligned buffer of the scratch_bytes given to the parallel-for callback. */
typedef void (*mxc_kernel_fn)(int64_t task_begin, int64_t task_end, void *const *args,
                              void *scratch);

/* Optional host thread pool: run kernel over a partition of [0, n_tasks) (any split; the
 * ranges may run concurrently), giving each concurrently running call its own scratch
 * buffer of scratch_bytes (64-byte aligned; none when 0); return 0 once all ranges are
 * done, non-zero to make {prefix}_run fail with MXC_ERR_PARALLEL. cost estimates the work. */
typedef int (*mxc_parallel_for_fn)(void *ctx, mxc_kernel_fn kernel, int64_t n_tasks,
                                   void *const *args, size_t scratch_bytes, int64_t cost);

typedef struct mxc_tensor_desc {{
    const char *name;
    const char *dtype;       /* "float32", "int64", ... */
    int32_t ndim;
    const int64_t *shape;
    size_t nbytes;
}} mxc_tensor_desc;
#endif /* MXC_MODEL_ABI_V1 */

/* metadata.json as a NUL-terminated string */
const char *{prefix}_info(void);
/* bytes of the workspace {prefix}_run needs (a 64-byte aligned buffer) */
size_t {prefix}_workspace_size(void);
/* run the model: 0 on success, an MXC_ERR_* code otherwise */
int {prefix}_run(const void *const *inputs, void *const *outputs, void *workspace);
/* install (fn != NULL) or remove (NULL) a parallel-for callback; without one every run is
 * single-threaded. Process-wide: set it before runs start. */
void {prefix}_set_parallel(mxc_parallel_for_fn fn, void *ctx);
int {prefix}_num_inputs(void);
int {prefix}_num_outputs(void);
/* descriptions of input/output i (NULL when out of range) */
const mxc_tensor_desc *{prefix}_input(int i);
const mxc_tensor_desc *{prefix}_output(int i);

#ifdef __cplusplus
}}
#endif
#endif /* {guard} */
"""


# ---------------------------------------------------------------------------------------------
# the LLVM module: kernels + run entry + weights + metadata
# ---------------------------------------------------------------------------------------------

def _bytes_ir(data: bytes) -> str:
    """LLVM ``c"..."`` text of ``data`` (fast for tens of MB)."""
    if not data:
        return 'c""'
    tab = np.array([("\\%02X" % i).encode() for i in range(256)], dtype="S3")
    return 'c"' + tab[np.frombuffer(data, np.uint8)].tobytes().decode("ascii") + '"'


def _force_inner_vectorization(text: str) -> str:
    """Mark innermost rendered loops ``llvm.loop.vectorize.enable``: LLVM does not vectorize
    float loops for ARMv7 NEON otherwise (NEON is not IEEE-complete: denormals flush to
    zero, which mxc accepts on that target)."""
    stack: list = []
    inner: set = set()
    for line in text.split("\n"):
        if re.match(r"^Lh\d+:", line):
            stack.append(True)
            continue
        m = re.search(r"!llvm\.loop !(\d+)", line)
        if m and stack:
            if stack.pop():
                inner.add(int(m.group(1)))
            if stack:
                stack[-1] = False
    hints = set()
    for m in re.finditer(r"^!(\d+) = distinct !\{!\d+, !(\d+)\}", text, re.MULTILINE):
        if int(m.group(1)) in inner:
            hints.add(m.group(2))

    def sub(m):
        if m.group(1) in hints:
            return f'!{m.group(1)} = !{{!"llvm.loop.vectorize.enable", i1 true}}'
        return m.group(0)

    return re.sub(r'^!(\d+) = !\{!"llvm\.loop\.mustprogress"\}', sub, text, flags=re.MULTILINE)


def _module_ir(plan: _Plan, tgt: T.Target, prefix: str, meta: dict) -> str:
    from ..codegen.llvm_render import render_module
    from ..codegen.rtlib import runtime_ir

    calls = plan.cg.program.calls
    kernels = [lk.kernel for lk in plan.cg.kernels]
    text, fnames = render_module(kernels) if kernels else ("", [])
    if tgt.arch == "arm":
        text = _force_inner_vectorization(text)
    ip = f"i{tgt.pointer_bits}"
    P = prefix
    g: list[str] = []        # globals
    # weights: read-only, 64-byte aligned
    for k, (name, data) in enumerate(plan.consts):
        g.append(f"; parameter {name}: {len(data)} bytes")
        g.append(f"@{P}.w{k} = internal constant [{len(data)} x i8] {_bytes_ir(data)}, "
                 f"align {ALIGN}")
    info = json.dumps(meta, separators=(",", ":")).encode() + b"\0"
    g.append(f"@{P}.info = internal constant [{len(info)} x i8] {_bytes_ir(info)}, align 1")
    g.append(f"@{P}.par_fn = internal global ptr null, align 8")
    g.append(f"@{P}.par_ctx = internal global ptr null, align 8")
    # tensor descriptions
    desc_t = f"{{ ptr, ptr, i32, ptr, {ip} }}"
    for kind, rows in (("in", plan.inputs), ("out", plan.outputs)):
        descs = []
        for i, (n, _s, shape, d) in enumerate(rows):
            nm = n.encode() + b"\0"
            dt = d.name.encode() + b"\0"
            g.append(f"@{P}.{kind}{i}.name = internal constant [{len(nm)} x i8] "
                     f"{_bytes_ir(nm)}")
            g.append(f"@{P}.{kind}{i}.dtype = internal constant [{len(dt)} x i8] "
                     f"{_bytes_ir(dt)}")
            dims = ", ".join(f"i64 {int(x)}" for x in shape) or ""
            g.append(f"@{P}.{kind}{i}.shape = internal constant [{len(shape)} x i64] "
                     f"[{dims}], align 8")
            nb = math.prod(shape) * d.itemsize
            descs.append(f"{desc_t} {{ ptr @{P}.{kind}{i}.name, ptr @{P}.{kind}{i}.dtype, "
                         f"i32 {len(shape)}, ptr @{P}.{kind}{i}.shape, {ip} {nb} }}")
        g.append(f"@{P}.{kind}desc = internal constant [{len(descs)} x {desc_t}] "
                 f"[{', '.join(descs)}], align 8")

    f: list[str] = []
    n_args = [max(len(c.slots), 1) for c in calls]
    f.append(f"define {ip} @{P}_workspace_size() #1 {{\n  ret {ip} {plan.workspace_bytes}\n}}\n")
    f.append(f"define ptr @{P}_info() #1 {{\n  ret ptr @{P}.info\n}}\n")
    f.append(f"define void @{P}_set_parallel(ptr %fn, ptr %ctx) #1 {{\n"
             f"  store ptr %ctx, ptr @{P}.par_ctx, align 8\n"
             f"  store ptr %fn, ptr @{P}.par_fn, align 8\n  ret void\n}}\n")
    for kind, rows, nm in (("in", plan.inputs, "input"), ("out", plan.outputs, "output")):
        n = len(rows)
        f.append(f"define i32 @{P}_num_{nm}s() #1 {{\n  ret i32 {n}\n}}\n")
        f.append(f"define ptr @{P}_{nm}(i32 %i) #1 {{\n"
                 f"  %ok = icmp ult i32 %i, {n}\n  br i1 %ok, label %yes, label %no\n"
                 f"yes:\n  %p = getelementptr inbounds [{n} x {desc_t}], ptr @{P}.{kind}desc, "
                 f"i32 0, i32 %i\n  ret ptr %p\nno:\n  ret ptr null\n}}\n")
    f.append(_run_ir(plan, P, ip, calls, fnames, n_args))
    f.append(f"define internal void @{P}.copy(ptr %d, ptr %s, {ip} %n) #1 {{\n"
             f"entry:\n  %z = icmp eq {ip} %n, 0\n  br i1 %z, label %done, label %loop\n"
             f"loop:\n  %i = phi {ip} [ 0, %entry ], [ %i1, %loop ]\n"
             f"  %ps = getelementptr inbounds i8, ptr %s, {ip} %i\n"
             f"  %v = load i8, ptr %ps, align 1\n"
             f"  %pd = getelementptr inbounds i8, ptr %d, {ip} %i\n"
             f"  store i8 %v, ptr %pd, align 1\n  %i1 = add {ip} %i, 1\n"
             f"  %c = icmp ult {ip} %i1, %n\n  br i1 %c, label %loop, label %done\n"
             f"done:\n  ret void\n}}\n")
    attrs = 'attributes #1 = { nounwind "no-builtins" }\n'
    head = (f"; mxc artifact module: {P} for {tgt.name}\n"
            f"declare void @llvm.trap()\n")
    return "\n".join([head, text, "\n".join(g), "\n".join(f), runtime_ir(tgt.arch),
                      attrs])


def _run_ir(plan: _Plan, P: str, ip: str, calls: list, fnames: list, n_args: list) -> str:
    L: list[str] = []
    n = [0]

    def tmp(h="t"):
        n[0] += 1
        return f"%{h}{n[0]}"

    def emit(s):
        L.append("  " + s)

    def check_fail(cond: str, code: int):
        ok = tmp("ok")[1:]
        emit(f"br i1 {cond}, label %err{code}, label %{ok}")
        L.append(f"{ok}:")

    def misaligned(p: str, align: int) -> str:
        a, m, c = tmp("pi"), tmp("m"), tmp("c")
        emit(f"{a} = ptrtoint ptr {p} to {ip}")
        emit(f"{m} = and {ip} {a}, {align - 1}")
        emit(f"{c} = icmp ne {ip} {m}, 0")
        return c

    L.append(f"define i32 @{P}_run(ptr %inputs, ptr %outputs, ptr %ws) #1 {{")
    L.append("entry:")
    for i, na in enumerate(n_args):
        emit(f"%args{i} = alloca [{na} x ptr], align 8")
    ptrs: dict = {}
    for kind, rows, arr, code in (("in", plan.inputs, "%inputs", 1),
                                  ("out", plan.outputs, "%outputs", 2)):
        if not rows:
            continue
        c = tmp("c")
        emit(f"{c} = icmp eq ptr {arr}, null")
        check_fail(c, code)
        for i, (_n, _s, _shape, d) in enumerate(rows):
            pp, p, c = tmp("pp"), tmp("p"), tmp("c")
            emit(f"{pp} = getelementptr inbounds ptr, ptr {arr}, i32 {i}")
            emit(f"{p} = load ptr, ptr {pp}, align 4")
            emit(f"{c} = icmp eq ptr {p}, null")
            check_fail(c, code)
            if d.itemsize > 1:
                check_fail(misaligned(p, d.itemsize), 5)
            ptrs[(kind, i)] = p
    if plan.workspace_bytes > 0:
        c = tmp("c")
        emit(f"{c} = icmp eq ptr %ws, null")
        check_fail(c, 3)
        check_fail(misaligned("%ws", ALIGN), 4)
    emit(f"%pf = load ptr, ptr @{P}.par_fn, align 8")
    emit(f"%pctx = load ptr, ptr @{P}.par_ctx, align 8")
    emit("%haspf = icmp ne ptr %pf, null")

    def addr(place, off: int = 0) -> str:
        kind, v = place
        if kind in ("in", "out"):
            base = ptrs[(kind, v)]
        elif kind == "const":
            base = f"@{P}.w{v}"
        else:
            base = "%ws"
            off += v
        if off == 0:
            return base
        r = tmp("a")
        emit(f"{r} = getelementptr inbounds i8, ptr {base}, {ip} {off}")
        return r

    for off, i, nb in plan.copies_in:
        emit(f"call void @{P}.copy(ptr {addr(('ws', off))}, ptr {ptrs[('in', i)]}, "
             f"{ip} {nb})")
    for off in plan.rng_offsets:
        emit(f"store i64 {0x5EED5EED}, ptr {addr(('ws', off))}, align 8")
    scratch = addr(("ws", plan.scratch_offset)) if plan.scratch_bytes else "null"
    for i, (c, fn) in enumerate(zip(calls, fnames)):
        emit(f"; call {i}: node {c.node}, {c.n_tasks} tasks")
        for j, (s, o) in enumerate(zip(c.slots, c.offsets)):
            pl = plan.place.get(s)
            if pl is None:
                a = "null"
            else:
                a = addr(pl, int(o))
            q = tmp("q")
            emit(f"{q} = getelementptr inbounds [{n_args[i]} x ptr], ptr %args{i}, i32 0, "
                 f"i32 {j}")
            emit(f"store ptr {a}, ptr {q}, align 4")
        if c.n_tasks <= 0:
            continue
        if c.n_tasks > 1 and c.cost >= PARALLEL_MIN_COST:
            emit(f"br i1 %haspf, label %par{i}, label %seq{i}")
            L.append(f"par{i}:")
            rc, ok = tmp("rc"), tmp("c")
            emit(f"{rc} = call i32 %pf(ptr %pctx, ptr @{fn}, i64 {c.n_tasks}, ptr %args{i}, "
                 f"{ip} {int(c.scratch_bytes)}, i64 {int(c.cost)})")
            emit(f"{ok} = icmp ne i32 {rc}, 0")
            emit(f"br i1 {ok}, label %err6, label %next{i}")
            L.append(f"seq{i}:")
            emit(f"call void @{fn}(i64 0, i64 {c.n_tasks}, ptr %args{i}, ptr {scratch})")
            emit(f"br label %next{i}")
            L.append(f"next{i}:")
        else:
            emit(f"call void @{fn}(i64 0, i64 {c.n_tasks}, ptr %args{i}, ptr {scratch})")
    for j, src, nb in plan.copies_out:
        emit(f"call void @{P}.copy(ptr {ptrs[('out', j)]}, ptr {addr(src)}, {ip} {nb})")
    emit("ret i32 0")
    for code in sorted({v[0] for v in ERROR_CODES.values()} - {0}):
        L.append(f"err{code}:")
        emit(f"ret i32 {code}")
    L.append("}\n")
    return "\n".join(L)


def _emit_object(text: str, tgt: T.Target) -> bytes:
    """The target object of the module (cached on disk like the JIT's objects, keyed by
    the IR text, triple, CPU and features)."""
    import llvmlite

    from ..codegen import jit

    h = hashlib.sha256()
    for part in (text, tgt.triple, tgt.cpu, tgt.features, llvmlite.__version__, "aot-v1"):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()
    path = jit.cache_dir() / "aot" / f"{key}.o"
    try:
        data = path.read_bytes()
        obj, digest = data[:-32], data[-32:]
        if obj[:4] == b"\x7fELF" and hashlib.sha256(obj).digest() == digest:
            return obj
    except OSError:
        pass
    obj = _compile_object(text, tgt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(obj + hashlib.sha256(obj).digest())
        os.replace(tmp, path)
    except OSError:
        pass
    return obj


def _compile_object(text: str, tgt: T.Target, keep: set | None = None) -> bytes:
    """Optimize and emit ``text`` for ``tgt``; functions other than ``keep`` (default: the
    artifact API named in the module's first line) and the ARM helpers become internal."""
    import llvmlite.binding as llvm

    from ..codegen import jit

    tm = T.target_machine(tgt)
    mod = jit.parse(text, tm)
    keep = set(_api_names_from_text(text)) if keep is None else set(keep)
    for fn in mod.functions:
        if not fn.is_declaration and fn.name not in keep and not fn.name.startswith("__aeabi_"):
            fn.linkage = llvm.Linkage.internal
    with _filtered_stderr("loop not vectorized"):
        jit.optimize(mod, tm)
        return tm.emit_object(mod)


@contextlib.contextmanager
def _filtered_stderr(drop: str):
    """LLVM prints a warning for every loop whose forced vectorization (ARMv7, above) it
    declines; those are expected. Capture file descriptor 2 and pass other lines on."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = [ln for ln in tmp.read().decode(errors="replace").splitlines(True)
                    if drop not in ln]
            if rest:
                sys.stderr.write("".join(rest))


def _api_names_from_text(text: str) -> list:
    m = re.search(r"^; mxc artifact module: (\w+) for", text, re.MULTILINE)
    return _api_names(m.group(1)) if m else []


# ---------------------------------------------------------------------------------------------
# GPU targets: model.ptx + plan.json/.txt + weights.bin (+ model.emu.ll) + metadata.json
# ---------------------------------------------------------------------------------------------

CUDA_PLAN_FORMAT = "mxc-cuda-plan"
CUDA_PLAN_VERSION = 1
CUDA_ALIGN = 256               # weights.bin tensor offsets; device buffers' base alignment
CUDA_TRIPLE = "nvptx64-nvidia-cuda"
RNG_SEED = 0x5EED5EED          # what random kernels' seed slots hold at each run (as on CPU)


def cuda_targets() -> dict:
    """GPU target names -> PTX ``sm``: the ``cuda-sm80``/``cuda-sm90`` presets and
    ``cuda-smNN`` for the other sm presets of ``codegen.ptx``."""
    from ..codegen.ptx import SM_PRESETS

    return {f"cuda-{sm.replace('_', '')}": sm for sm in SM_PRESETS}


def cuda_sm(target) -> str | None:
    """The PTX ``sm`` of a GPU target name (``cuda-sm80`` -> ``sm_80``), None for CPU
    targets; an unknown ``cuda-...`` name is an error listing the GPU presets."""
    if not isinstance(target, str):
        return None
    name = target.strip().lower()
    if not name.startswith(("cuda", "nvptx")):
        return None
    ts = cuda_targets()
    if name in ts:
        return ts[name]
    raise MXNetError(f"unknown GPU target '{target}'; GPU presets: {', '.join(T.GPU_PRESETS)} "
                     f"(also {', '.join(n for n in ts if n not in T.GPU_PRESETS)})")


def _cuda_region(place, off: int, woffs: list) -> dict:
    """A kernel argument / copy source as plan JSON: a region and a byte offset."""
    kind, v = place
    if kind == "in":
        return {"region": "input", "index": int(v), "offset": int(off)}
    if kind == "out":
        return {"region": "output", "index": int(v), "offset": int(off)}
    if kind == "const":
        return {"region": "weights", "offset": int(woffs[v] + off)}
    return {"region": "workspace", "offset": int(v + off)}


PLAN_TEXT_FORMAT = "mxc-cuda-plan-text"


def _txt_name(name: str) -> str:
    """A name as one plan.txt token: '%', whitespace and control characters as %XX, so a
    C reader can split on whitespace (MXNet names practically never need it)."""
    return "".join(f"%{ord(c):02X}" if c == "%" or c.isspace() or not c.isprintable() else c
                   for c in str(name)) or "%00"


def _txt_region(ref: dict) -> str:
    """A region reference as three tokens: name, index (0 where the region has none), offset."""
    return f"{ref['region']} {int(ref.get('index', 0))} {int(ref.get('offset', 0))}"


def _txt_tensor(kw: str, r: dict) -> str:
    return " ".join([kw, _txt_name(r["name"]), r["dtype"], str(int(r["nbytes"])),
                     str(len(r["shape"]))] + [str(int(d)) for d in r["shape"]])


def plan_text(plan: dict) -> str:
    """``plan.txt``: the launch plan ``plan.json`` rendered for C readers (``examples/c/
    run_cuda.c``): whitespace-separated tokens, one record per line, every list preceded by
    its count, everything a run needs and nothing else (no weight tensor table or workspace
    layout). Written from the plan dict itself, so it cannot disagree with plan.json; the
    format is in docs/deploy.md section 7."""
    ln = [f"{PLAN_TEXT_FORMAT} {int(plan['version'])}",
          f"sm {plan['sm']}",
          f"ptx {_txt_name(plan['ptx'])}",
          f"weights {_txt_name(plan['weights']['file'])} {int(plan['weights']['bytes'])}",
          f"workspace {int(plan['workspace']['bytes'])}",
          f"inputs {len(plan['inputs'])}"]
    ln += [_txt_tensor("input", r) for r in plan["inputs"]]
    ln.append(f"outputs {len(plan['outputs'])}")
    ln += [_txt_tensor("output", r) for r in plan["outputs"]]
    ln.append(f"init {len(plan['init'])}")
    ln += [f"{it['op']} {_txt_region(it)} {int(it['value'])}" for it in plan["init"]]
    ln.append(f"copies_in {len(plan['copies_in'])}")
    ln += [f"copy_in {int(c['input'])} {_txt_region(c['dst'])} {int(c['nbytes'])}"
           for c in plan["copies_in"]]
    ln.append(f"kernels {len(plan['kernels'])}")
    for k in plan["kernels"]:
        ln.append(" ".join(["kernel", _txt_name(k["name"]), _txt_name(k["node"] or "-")] +
                           [str(int(k[f])) for f in ("grid", "block", "smem", "smem_dynamic",
                                                     "n_tasks", "param_bytes")] +
                           [str(len(k["args"]))]))
        ln += [f"arg {_txt_region(a)}" for a in k["args"]]
    ln.append(f"copies_out {len(plan['copies_out'])}")
    ln += [f"copy_out {int(c['output'])} {_txt_region(c['src'])} {int(c['nbytes'])}"
           for c in plan["copies_out"]]
    ln.append("end")
    return "\n".join(ln) + "\n"


def _compile_cuda(graph: Graph, params: dict, shapes: dict, types: dict, name: str, sm: str,
                  prefix: str, out_dir, *, fusion, plan_memory: bool, keep_ir: bool,
                  emulator: bool, fast_math: bool, t0: float) -> Artifact:
    """A GPU artifact: the graph lowered for the GPU (``codegen.ptx.lowering_for_gpu``: GEMM
    templates for the GPU), fused and memory-planned; the same slot placement as CPU
    artifacts (inputs/outputs -> caller buffers, parameters -> the weights blob, planned
    temporaries -> their arena offsets in the workspace, others packed after the arena);
    the PTX of ``compiler.cuda_build``; every kernel argument resolved to region + offset."""
    import mxc

    from ..codegen import ptx as P
    from .cuda_build import cuda_graph

    with P.lowering_for_gpu():
        # the active target only steers CPU templates (none are emitted for the GPU): host
        plan = _plan(graph, params, shapes, types, T.host(), fusion, plan_memory)
    gpu = cuda_graph(plan.cg, sm, fast_math=fast_math, emulate=emulator)
    t1 = time.perf_counter()

    # weights: one blob, each tensor CUDA_ALIGN-aligned
    blob = bytearray()
    woffs, wrows = [], []
    for n, data in plan.consts:
        off = _rup(len(blob), CUDA_ALIGN)
        blob.extend(b"\0" * (off - len(blob)))
        blob.extend(data)
        woffs.append(off)
        a = params[n]
        wrows.append({"name": n, "shape": [int(d) for d in a.shape], "dtype": a.dtype.name,
                      "offset": off, "nbytes": len(data)})

    def io(rows):
        return [{"name": n, "shape": [int(d) for d in shape], "dtype": d.name,
                 "nbytes": math.prod(shape) * d.itemsize} for n, _s, shape, d in rows]

    # workspace: the CPU layout without the scratch region (GPU kernels use shared memory)
    ws_bytes = _rup(plan.scratch_offset, CUDA_ALIGN) if plan.scratch_offset else 0
    prog = plan.cg.program
    arena = prog.arena_offsets or {}
    bufs = []
    in_ws = sorted((pl[1], s) for s, pl in plan.place.items() if pl[0] == "ws")
    for _off, s in in_ws:
        pl = plan.place[s]
        info = prog.slots[s]
        bufs.append({"slot": int(s), "name": info.name, "kind": info.kind,
                     "offset": int(pl[1]), "nbytes": int(info.nbytes),
                     "arena": s in arena and info.kind != "rng"})
    for off, i, nb in plan.copies_in:
        bufs.append({"slot": -1, "name": f"copy of input {plan.inputs[i][0]}",
                     "kind": "input_copy", "offset": int(off), "nbytes": int(nb),
                     "arena": False})

    launches, kmeta = [], []
    for lk, ln in zip(plan.cg.kernels, gpu.launches):
        k = lk.kernel
        offs = getattr(k, "offsets", None) or [0] * len(k.buffers)
        boffs = [int(o) * b.dtype.itemsize for o, b in zip(offs, k.buffers)]
        args = []
        for s, o in zip(lk.slots, boffs):
            pl = plan.place.get(s)
            args.append({"region": "null", "offset": 0} if pl is None
                        else _cuda_region(pl, o, woffs))
        kind = k.note or type(k).__name__
        launches.append({"name": ln.name, "node": lk.node, "kind": kind, "mode": ln.mode,
                         "grid": int(ln.grid), "block": int(ln.block), "smem": int(ln.smem),
                         "smem_dynamic": 0, "n_tasks": int(ln.n_tasks), "sync": bool(ln.sync),
                         "param_bytes": 8 * (2 + len(args)), "args": args})
        kmeta.append({"node": lk.node, "kind": kind, "tasks": int(k.n_tasks),
                      "cost": int(k.cost), "name": ln.name, "mode": ln.mode,
                      "grid": int(ln.grid), "block": int(ln.block), "smem": int(ln.smem)})
    m = re.search(r"^\s*\.version\s+(\S+)", gpu.ptx, re.MULTILINE)
    ptx_version = m.group(1) if m else ""
    inputs, outputs = io(plan.inputs), io(plan.outputs)
    launch_plan = {
        "format": CUDA_PLAN_FORMAT, "version": CUDA_PLAN_VERSION,
        "sm": sm, "ptx": "model.ptx", "ptx_version": ptx_version,
        "convention": {
            "params": "u64 task_begin (0), u64 task_end (n_tasks), then one u64 device pointer "
                      "per args entry: the region's base address + offset (null: 0)",
            "grid": "(grid, 1, 1)", "block": "(block, 1, 1)",
            "shared_memory": "smem: static, in the PTX; pass smem_dynamic to the launch",
            "regions": "input[index] / output[index]: caller buffers (C-contiguous, metadata "
                       "order); weights: weights.bin uploaded once; workspace: "
                       "workspace.bytes, uninitialized, one per concurrent run",
            "order": "init, copies_in, kernels (skip n_tasks == 0 or grid == 0), copies_out; "
                     "kernels run in order on one stream"},
        "inputs": inputs, "outputs": outputs,
        "weights": {"file": "weights.bin", "bytes": len(blob), "alignment": CUDA_ALIGN,
                    "tensors": wrows},
        "workspace": {"bytes": ws_bytes, "alignment": CUDA_ALIGN,
                      "arena_bytes": int(plan.arena_bytes), "buffers": bufs},
        "init": [{"op": "store_u64", "region": "workspace", "offset": int(o),
                  "value": RNG_SEED} for o in plan.rng_offsets],
        "copies_in": [{"input": int(i), "dst": {"region": "workspace", "offset": int(o)},
                       "nbytes": int(nb)} for o, i, nb in plan.copies_in],
        "kernels": launches,
        "copies_out": [{"output": int(j), "src": _cuda_region(src, 0, woffs), "nbytes": int(nb)}
                       for j, src, nb in plan.copies_out],
    }
    meta = {
        "format": "mxc-artifact",
        "format_version": FORMAT_VERSION,
        "mxc_version": mxc.__mxc_version__,
        "mxnet_version": mxc.__version__,
        "backend": "cuda",
        "prefix": prefix,
        "target": {"name": name, "triple": CUDA_TRIPLE, "sm": sm, "ptx_version": ptx_version,
                   "arch": "nvptx64", "pointer_bits": 64, "fast_math": bool(fast_math)},
        "inputs": inputs,
        "outputs": outputs,
        "workspace_bytes": ws_bytes,
        "workspace_alignment": CUDA_ALIGN,
        "memory": {"arena_bytes": int(plan.arena_bytes), "scratch_bytes": 0,
                   "naive_bytes": int(plan.naive_bytes), "planned": plan.cg.memory is not None},
        "weights_bytes": sum(len(b) for _n, b in plan.consts),
        "weights_alignment": CUDA_ALIGN,
        "plan_version": CUDA_PLAN_VERSION,
        "kernels": kmeta,
    }
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="mxc-artifact-"))
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("libmodel.so", "libmodel.a", "model.h", "model.ll", "model.emu.ll"):
        (out / stale).unlink(missing_ok=True)    # no CPU library (or old file) beside it
    files = {}
    (out / "model.ptx").write_text(gpu.ptx)
    (out / "plan.json").write_text(json.dumps(launch_plan, indent=1) + "\n")
    (out / "plan.txt").write_text(plan_text(launch_plan))     # the same plan for C readers
    (out / "weights.bin").write_bytes(bytes(blob))
    for f in ("model.ptx", "plan.json", "plan.txt", "weights.bin"):
        files[f] = _file_entry(out / f)
    if emulator:
        (out / "model.emu.ll").write_text(gpu.emu_module.ir)
        files["model.emu.ll"] = _file_entry(out / "model.emu.ll")
    if keep_ir:
        (out / "model.ll").write_text(gpu.module.ir)
    full = dict(meta, files=files)
    (out / "metadata.json").write_text(json.dumps(full, indent=1) + "\n")
    tgt = T.Target(name, CUDA_TRIPLE, sm, "", "none", "nvptx64", 64)
    stats = {"lower_seconds": t1 - t0, "codegen_seconds": time.perf_counter() - t1,
             "link_seconds": 0.0, "ptx_bytes": len(gpu.ptx.encode()),
             "weights_file_bytes": len(blob)}
    return Artifact(out, full, tgt, stats)


# ---------------------------------------------------------------------------------------------
# checks, linking, archive
# ---------------------------------------------------------------------------------------------

def _check_object(obj: bytes, tgt: T.Target) -> None:
    from ..runtime.elf import read_elf

    info = read_elf(obj)
    bad = [s for s in info.undefined_symbols(dynamic=False) if s != "_GLOBAL_OFFSET_TABLE_"]
    if bad:
        raise CompileError(f"the {tgt.name} object needs symbols an artifact cannot import: "
                           f"{bad} (generated code must not call libc/libm or compiler "
                           "runtime helpers; see codegen.rtlib)")


def find_lld() -> list:
    """The command that runs ld.lld: ``$MXC_LLD``, ``ld.lld`` on PATH (also versioned
    names), or zig's bundled copy (pip ``ziglang``)."""
    env = os.environ.get("MXC_LLD")
    if env:
        cmd = env.split()
        if shutil.which(cmd[0]) is None:
            raise CompileError(f"MXC_LLD={env!r} is not an executable; install lld with "
                               "`apt-get install lld` or `pip install ziglang`")
        return cmd
    for name in ("ld.lld", *(f"ld.lld-{v}" for v in range(22, 10, -1))):
        p = shutil.which(name)
        if p:
            return [p]
    try:
        import importlib.util
        if importlib.util.find_spec("ziglang") is not None:
            return [sys.executable, "-m", "ziglang", "ld.lld"]
    except (ImportError, ValueError):
        pass
    raise CompileError("ld.lld not found: artifacts are linked with LLVM's lld. Install it "
                       "with `apt-get install lld` (Debian/Ubuntu), `dnf install lld`, "
                       "`brew install lld`, or `pip install ziglang` (its bundled ld.lld is "
                       "used); or point MXC_LLD at an ld.lld binary")


def _link(obj: bytes, so: Path, tgt: T.Target) -> None:
    lld = find_lld()
    with tempfile.TemporaryDirectory(prefix="mxc-link-") as d:
        o = Path(d) / "model.o"
        o.write_bytes(obj)
        tmp = so.with_name(so.name + ".tmp")
        cmd = lld + ["-shared", "--gc-sections", "-o", str(tmp), str(o), "-soname",
                     "libmodel.so", "--hash-style=both", "-z", "noexecstack", "-z", "relro",
                     "-z", "now", "--build-id=sha1", "--no-undefined", *tgt.ld_flags]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError(f"linking {so.name} failed ({' '.join(cmd)}):\n"
                               f"{r.stderr.strip()}")
        os.replace(tmp, so)


def _check_library(so: Path, tgt: T.Target, prefix: str) -> None:
    from ..runtime.elf import ARCH_MACHINE, read_elf

    info = read_elf(str(so))
    problems = []
    if info.needed:
        problems.append(f"DT_NEEDED entries {info.needed}")
    und = info.undefined_symbols()
    if und:
        problems.append(f"undefined symbols {und}")
    want = ARCH_MACHINE.get(tgt.arch)
    if want is not None and info.machine != want:
        problems.append(f"ELF machine {info.arch}, expected {tgt.arch}")
    missing = set(_api_names(prefix)) - set(info.exported_symbols())
    if missing:
        problems.append(f"missing exports {sorted(missing)}")
    if problems:
        raise CompileError(f"{so} is not a freestanding artifact: " + "; ".join(problems))


def _file_entry(p: Path) -> dict:
    data = p.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_archive(path: Path, member: str, data: bytes, symbols: list) -> None:
    """A System V ``ar`` archive with a GNU symbol index (what ``ld``/``lld`` expect)."""
    def header(name: str, size: int) -> bytes:
        h = f"{name:<16s}{0:<12d}{0:<6d}{0:<6d}{644:<8d}{size:<10d}`\n".encode()
        assert len(h) == 60
        return h

    names = b"".join(s.encode() + b"\0" for s in symbols)
    index_size = 4 + 4 * len(symbols) + len(names)
    index_pad = index_size % 2
    member_off = 8 + 60 + index_size + index_pad
    index = struct.pack(">I", len(symbols)) + struct.pack(">I", member_off) * len(symbols) \
        + names + b"\n" * index_pad
    body = data + b"\n" * (len(data) % 2)
    out = b"!<arch>\n" + header("/", index_size) + index + header(member + "/", len(data)) \
        + body
    path.write_bytes(out)


# ---------------------------------------------------------------------------------------------
# mx.compile(...) calls this module
# ---------------------------------------------------------------------------------------------

class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return compile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["ERROR_CODES", "FORMAT_VERSION", "Artifact", "compile", "cuda_sm", "cuda_targets",
           "find_lld", "model_header"]
