"""A loaded MXNet model compiled for fixed input shapes: the engine behind ``mxc run``,
``mxc inspect``, ``mxc demo`` and the benchmarks.

``load_model`` reads ``-symbol.json`` + ``.params`` (``arg:``/``aux:`` keys as written by
``save_checkpoint`` and Gluon's ``export``); :class:`CompiledModel` binds the parameters
once and runs inference on numpy inputs.
"""
from __future__ import annotations

import mmap
import sys
import time
from pathlib import Path

import numpy as np

from ..base import MXNetError
from ..ir.graph import Graph, load_json
from .build import compile_graph
from .fold_constants import fold_constants


def load_params(path: str | Path) -> tuple[dict, dict]:
    """(arg_params, aux_params) of numpy arrays from a ``.params`` file."""
    from ..ir.formats import SparseRecord

    names, records = _load_nd_mapped(path)
    if names is None and not records:
        return {}, {}  # MXNet writes an empty dict as an empty list
    if names is None:
        raise MXNetError(f"{path}: a parameter file must hold named arrays (a dict), "
                         "this one holds a list")
    arg, aux = {}, {}
    for n, r in zip(names, records):
        if isinstance(r, SparseRecord):
            raise MXNetError(f"{path}: parameter '{n}' is sparse ({r.stype}); dense expected")
        a = np.asarray(r)
        if n.startswith("aux:"):
            aux[n[4:]] = a
        elif n.startswith("arg:"):
            arg[n[4:]] = a
        else:
            arg[n] = a
    return arg, aux


def _load_nd_mapped(path) -> tuple:
    """``load_nd`` of a file read through a read-only memory map: the arrays are copied
    straight out of the page cache, with no intermediate copy of the whole file."""
    from ..ir.formats import load_nd

    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):   # unreadable (load_nd reports it) or empty
        return load_nd(str(path))
    view = memoryview(mm)
    try:
        return load_nd(view, name=str(path))
    finally:
        try:
            view.release()
            mm.close()
        except BufferError:  # a slice is still referenced (an error being raised): GC's job
            pass


def load_model(symbol_path: str | Path, params_path: str | Path | None = None):
    """(graph, arg_params, aux_params)."""
    p = Path(symbol_path)
    try:
        text = p.read_text()
    except OSError as e:
        raise MXNetError(f"cannot read symbol file {p}: {e.strerror}") from None
    graph = load_json(text, str(p))
    arg, aux = load_params(params_path) if params_path else ({}, {})
    return graph, arg, aux


class CompiledModel:
    """Inference of ``graph`` with bound parameters for the given input shapes.

    The program comes from the whole-program cache when this graph was compiled before for
    these shapes (``compile_graph(cache=True)``; ``MXC_PROGRAM_CACHE=0`` turns it off).
    Parameters computed here (folded BatchNorm weights, folded subgraphs) become the storage
    of their slots as they are; the caller's arrays are copied (the model never aliases
    them), so a model holds one copy of its parameters."""

    def __init__(self, graph: Graph, arg_params: dict, aux_params: dict,
                 input_shapes: dict, input_types: dict | None = None, *,
                 fold: bool = True) -> None:
        params = {k: np.asarray(v) for k, v in {**arg_params, **aux_params}.items()}
        callers = {id(a) for a in params.values()}   # the caller's memory: copied, not bound
        var_names = [v.name for v in graph.variables()]
        self.input_names = [n for n in var_names if n not in params]
        missing = [n for n in self.input_names if n not in input_shapes]
        if missing:
            raise MXNetError(f"no shape given for input(s) {missing}; inputs of this model: "
                             f"{self.input_names}")
        t0 = time.perf_counter()
        if fold:  # parameters are fixed here: fold BatchNorm and parameter-only subgraphs
            graph, params = fold_constants(graph, {k: a for k, a in params.items()
                                                   if k in var_names})
            var_names = [v.name for v in graph.variables()]
        self.graph = graph
        shapes = {n: tuple(input_shapes[n]) for n in self.input_names}
        types = dict(input_types or {})
        for n, a in params.items():
            if n in var_names:
                shapes[n] = tuple(a.shape)
                types[n] = a.dtype.name
        compiled_before = _objects_compiled()
        self.compiled = compile_graph(graph, shapes, types, cache=True,
                                      constants=tuple(n for n in params if n in var_names))
        self.compile_seconds = time.perf_counter() - t0
        # the compiler's memory goes back before the workspace and weights are allocated,
        # so the two never add up in the process's peak
        _release_memory(_objects_compiled() > compiled_before)
        prog = self.compiled.program
        var_keys = {v.name: (v.uid, 0) for v in graph.variables()}
        layouts = prog.slot_layouts
        bound = {}
        for n, slot in self.compiled.var_slots.items():
            a = params.get(n)
            if a is not None and slot in layouts:
                # stored prepacked for its GEMM; the plain array is dropped at once, so the
                # process never holds every weight in both layouts
                del a
                bound[slot] = pack_parameter(params.pop(n), layouts[slot]).reshape(-1).view(np.uint8)
            elif a is not None and id(a) not in callers and a.flags.owndata and \
                    a.flags.c_contiguous and a.flags.aligned and a.flags.writeable and \
                    a.nbytes == prog.slots[slot].nbytes and \
                    a.dtype == np.dtype(self.compiled.types[var_keys[n]]):
                bound[slot] = a.reshape(-1).view(np.uint8)  # made here: no copy needed
        prog.allocate(bound)
        self._views = {}
        for n, slot in self.compiled.var_slots.items():
            shape = self.compiled.shapes[var_keys[n]]
            dt = np.dtype(self.compiled.types[var_keys[n]])
            view = prog.storage[slot][: int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)
            self._views[n] = view
            if n in params and slot not in bound:
                view[...] = params[n]
        del params, bound
        self.output_views = []
        for e, slot in zip(graph.outputs, self.compiled.head_slots):
            k = (e.node.uid, e.index)
            shape = self.compiled.shapes[k]
            dt = np.dtype(self.compiled.types[k])
            self.output_views.append(
                prog.storage[slot][: int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape))
        _release_memory(False)   # heap pages freed while binding

    def __call__(self, **inputs) -> list:
        for n in self.input_names:
            if n not in inputs:
                raise MXNetError(f"missing input '{n}'")
            x = np.asarray(inputs[n])
            v = self._views[n]
            if x.shape != v.shape:
                raise MXNetError(f"input '{n}': expected shape {v.shape}, got {x.shape}")
            v[...] = x
        self.compiled.program.run("forward")
        return [o.copy() for o in self.output_views]

    def run_inplace(self) -> None:
        """Run on the inputs already bound (benchmarks: no copies)."""
        self.compiled.program.run("forward")


def pack_parameter(a: np.ndarray, layout: tuple) -> np.ndarray:
    """A parameter in the layout its program stores it in (``Program.slot_layouts``):
    ``CompiledModel`` binds it so, artifacts embed it so."""
    from ..codegen.conv_template import pack_weights
    from ..codegen.gemm import pack_a_panels, pack_b_panels

    kind = layout[0]
    a = np.ascontiguousarray(a)
    if kind == "conv_direct" and a.size == layout[1] * layout[2]:
        _, F, _, nr, (C, kh, kw, cb, *last) = layout
        return pack_weights(a.reshape(F, C, kh, kw), int(nr), int(cb),
                            int(last[0]) if last else None)
    if kind == "gemm_a" and a.size == layout[1] * layout[2]:
        _, M, K, panel, *order = layout
        order = tuple(order[0]) if order and order[0] else None   # (channels, taps)
        return pack_a_panels(a.reshape(M, K), int(panel), order)
    if kind == "gemm_b" and a.size == layout[1] * layout[2]:
        _, K, N, panel, transposed = layout
        b = a.reshape(N, K).T if transposed else a.reshape(K, N)
        return pack_b_panels(b, int(panel))
    raise MXNetError(f"parameter of shape {a.shape} cannot take layout {layout}")


def _objects_compiled() -> int:
    jit = sys.modules.get("mxc.codegen.jit")
    return jit.STATS.get("compiled", 0) if jit is not None else 0


def _release_memory(compiled: bool) -> None:
    """The model is built: return the heap pages freed while folding and compiling to the
    system and, when LLVM compiled anything here, its library pages (``release_compiler_
    memory``): an inference process does not keep the compiler resident."""
    from ..codegen import jit

    if compiled:
        jit.release_compiler_memory()
    else:
        jit.trim_heap()
