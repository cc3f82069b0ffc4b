"""mxc: Apache MXNet 1.x's programming model on an LLVM-based compiler.

``import mxc as mx`` runs MXNet 1.x user code: ``mx.nd``, ``mx.sym``, ``mx.cpu()``,
``mx.model.load_checkpoint`` ... Heavy modules (the operator registry, the compiler) load on
first use, so ``import mxc`` stays fast.
"""
from __future__ import annotations

import importlib

from . import base
from .base import MXNetError
from .frontend import attribute, context, name, util
from .frontend.attribute import AttrScope
from .frontend.context import Context, cpu, cpu_pinned, current_context, gpu, num_gpus

__version__ = "1.9.1"          # the MXNet version whose API and formats mxc follows
__mxc_version__ = "0.1.0"      # mxc's own version

# attribute -> module, imported on first access
_LAZY = {
    "nd": "mxc.frontend.ndarray",
    "ndarray": "mxc.frontend.ndarray",
    "sym": "mxc.frontend.symbol",
    "symbol": "mxc.frontend.symbol",
    "executor": "mxc.frontend.executor",
    "model": "mxc.frontend.model",
    "random": "mxc.frontend.random",
    "init": "mxc.frontend.initializer",
    "initializer": "mxc.frontend.initializer",
    "metric": "mxc.frontend.metric",
    "io": "mxc.frontend.io",
    "recordio": "mxc.frontend.recordio",
    "optimizer": "mxc.frontend.optimizer",
    "lr_scheduler": "mxc.frontend.lr_scheduler",
    "autograd": "mxc.frontend.autograd",
    "kv": "mxc.frontend.kvstore",
    "kvstore": "mxc.frontend.kvstore",
    "mod": "mxc.frontend.module",
    "module": "mxc.frontend.module",
    "callback": "mxc.frontend.callback",
    "gluon": "mxc.gluon",
    "compile": "mxc.compiler.aot",     # mx.compile(...): the module is callable
    "test_utils": "mxc.test_utils",
    "operator": "mxc.operator",
    "profiler": "mxc.profiler",
    "viz": "mxc.visualization",
    "visualization": "mxc.visualization",
    "monitor": "mxc.monitor",
}

__all__ = [
    "AttrScope",
    "autograd",
    "callback",
    "gluon",
    "init",
    "initializer",
    "io",
    "kv",
    "kvstore",
    "lr_scheduler",
    "metric",
    "mod",
    "module",
    "monitor",
    "operator",
    "optimizer",
    "profiler",
    "recordio",
    "Context",
    "MXNetError",
    "__mxc_version__",
    "__version__",
    "attribute",
    "base",
    "context",
    "cpu",
    "cpu_pinned",
    "current_context",
    "executor",
    "gpu",
    "model",
    "name",
    "nd",
    "ndarray",
    "num_gpus",
    "random",
    "sym",
    "symbol",
    "test_utils",
    "util",
    "visualization",
    "viz",
]


def __getattr__(attr: str):
    mod = _LAZY.get(attr)
    if mod is None:
        raise AttributeError(f"module 'mxc' has no attribute '{attr}'")
    m = importlib.import_module(mod)
    globals()[attr] = m
    return m


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
