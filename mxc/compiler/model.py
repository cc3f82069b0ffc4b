"""A loaded MXNet model compiled for fixed input shapes: the engine behind ``mxc run``,
``mxc inspect``, ``mxc demo`` and the benchmarks.

``load_model`` reads ``-symbol.json`` + ``.params`` (``arg:``/``aux:`` keys as written by
``save_checkpoint`` and Gluon's ``export``); :class:`CompiledModel` binds the parameters
once and runs inference on numpy inputs.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..base import MXNetError
from ..ir.graph import Graph, load_json
from .build import compile_graph
from .fold_constants import fold_constants


def load_params(path: str | Path) -> tuple[dict, dict]:
    """(arg_params, aux_params) of numpy arrays from a ``.params`` file."""
    from ..ir.formats import SparseRecord, load_nd

    names, records = load_nd(str(path))
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
    """Inference of ``graph`` with bound parameters for the given input shapes."""

    def __init__(self, graph: Graph, arg_params: dict, aux_params: dict,
                 input_shapes: dict, input_types: dict | None = None, *,
                 fold: bool = True) -> None:
        params = {**arg_params, **aux_params}
        var_names = [v.name for v in graph.variables()]
        self.input_names = [n for n in var_names if n not in params]
        missing = [n for n in self.input_names if n not in input_shapes]
        if missing:
            raise MXNetError(f"no shape given for input(s) {missing}; inputs of this model: "
                             f"{self.input_names}")
        t0 = time.perf_counter()
        if fold:  # parameters are fixed here: fold BatchNorm and parameter-only subgraphs
            graph, params = fold_constants(graph, {k: np.asarray(v) for k, v in params.items()
                                                   if k in var_names})
            var_names = [v.name for v in graph.variables()]
        self.graph = graph
        shapes = {n: tuple(input_shapes[n]) for n in self.input_names}
        types = dict(input_types or {})
        for n, a in params.items():
            if n in var_names:
                shapes[n] = tuple(a.shape)
                types[n] = a.dtype.name
        self.compiled = compile_graph(graph, shapes, types)
        self.compile_seconds = time.perf_counter() - t0
        prog = self.compiled.program
        prog.allocate()
        self._views = {}
        for n, slot in self.compiled.var_slots.items():
            shape = self.compiled.shapes[_vkey(graph, n)]
            dt = np.dtype(self.compiled.types[_vkey(graph, n)])
            view = prog.storage[slot][: int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)
            self._views[n] = view
            if n in params:
                view[...] = params[n]
        self.output_views = []
        for e, slot in zip(graph.outputs, self.compiled.head_slots):
            k = (e.node.uid, e.index)
            shape = self.compiled.shapes[k]
            dt = np.dtype(self.compiled.types[k])
            self.output_views.append(
                prog.storage[slot][: int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape))

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


def _vkey(graph: Graph, name: str) -> tuple:
    for v in graph.variables():
        if v.name == name:
            return (v.uid, 0)
    raise KeyError(name)
