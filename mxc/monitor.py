"""``mx.monitor.Monitor``: statistics of every layer's outputs, weights and auxiliary
states during training (MXNet 1.9.1's ``python/mxnet/monitor.py``).

``install(exe)`` sets the executor's monitor callback; while a monitor is installed the
executor runs its graph node by node (``mxc.frontend.executor``), so every node's output
(``<node>_output``, and its inputs with ``monitor_all``) reaches the callback. Between
``tic()`` and ``toc()`` of every ``interval``-th batch the names matching ``pattern`` are
recorded with ``stat_func`` of their value; ``toc`` adds the arguments and auxiliary states
and returns ``(step, name, 'value\\t...')`` rows.
"""
from __future__ import annotations

import logging
import math
import re

__all__ = ["Monitor"]


def _nd():
    from .frontend import ndarray
    return ndarray


def _asum_stat(x):
    """The default statistic: ||x||_2 / sqrt(size(x)), computed asynchronously."""
    return _nd().norm(x) / math.sqrt(x.size)


class Monitor:
    """Monitor the outputs, weights and gradients of executors every ``interval`` batches.

    Parameters
    ----------
    interval : int
        Number of batches between two recorded ones.
    stat_func : callable NDArray -> NDArray (or list of NDArrays)
        The statistic recorded; default ``norm(x)/sqrt(x.size)``.
    pattern : str
        Regular expression the names must match (``re.match``) to be recorded.
    sort : bool
        Sort the rows of ``toc`` by name.
    monitor_all : bool
        Also record every operator's inputs, not only its outputs.
    """

    def __init__(self, interval, stat_func=None, pattern=".*", sort=False,
                 monitor_all=False) -> None:
        self.stat_func = stat_func if stat_func is not None else _asum_stat
        self.interval = interval
        self.activated = False
        self.queue: list = []
        self.step = 0
        self.exes: list = []
        self.re_prog = re.compile(pattern)
        self.sort = sort
        self.monitor_all = monitor_all

        def stat_helper(name, array):
            """The executor callback: record ``name`` when active and matching."""
            if not self.activated or not self.re_prog.match(name):
                return
            self.queue.append((self.step, name, self.stat_func(array)))
        self.stat_helper = stat_helper

    def install(self, exe) -> None:
        """Attach to executor ``exe``."""
        exe.set_monitor_callback(self.stat_helper, self.monitor_all)
        self.exes.append(exe)

    def _wait_all_params(self) -> None:
        for exe in self.exes:
            for array in exe.arg_arrays:
                array.wait_to_read()
            for array in exe.aux_arrays:
                array.wait_to_read()

    def tic(self) -> None:
        """Start collecting for this batch when it is an ``interval``-th one."""
        if self.step % self.interval == 0:
            self._wait_all_params()
            self.queue = []
            self.activated = True
        self.step += 1

    def toc(self) -> list:
        """Stop collecting; add the arguments and auxiliary states and return the rows
        ``(step, name, stats)`` (stats: the values, tab-separated)."""
        if not self.activated:
            return []
        self._wait_all_params()
        for exe in self.exes:
            sym = exe.symbol
            for name, array in zip(sym.list_arguments(), exe.arg_arrays):
                if self.re_prog.match(name):
                    self.queue.append((self.step, name, self.stat_func(array)))
            for name, array in zip(sym.list_auxiliary_states(), exe.aux_arrays):
                if self.re_prog.match(name):
                    self.queue.append((self.step, name, self.stat_func(array)))
        self.activated = False
        if self.sort:
            self.queue.sort(key=lambda x: x[1])
        res = []
        nd = _nd()
        for n, k, v_list in self.queue:
            if isinstance(v_list, nd.NDArray):
                v_list = [v_list]
            if not isinstance(v_list, list):
                raise TypeError(f"Monitor: stat_func must return an NDArray or a list of "
                                f"NDArrays, got {type(v_list).__name__}")
            s = ""
            for v in v_list:
                if not isinstance(v, nd.NDArray):
                    raise TypeError(f"Monitor: stat_func returned a {type(v).__name__}, "
                                    "not an NDArray")
                s += (str(v.asscalar()) if v.shape == (1,) else str(v.asnumpy())) + "\t"
            res.append((n, k, s))
        self.queue = []
        return res

    def toc_print(self) -> None:
        """``toc`` and log every row (``logging.info``)."""
        for n, k, v in self.toc():
            logging.info(f"Batch: {n:7d} {k:30s} {v:s}")
