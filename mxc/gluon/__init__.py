"""``mx.gluon``: MXNet 1.x's imperative/hybrid neural network API.

``Parameter`` / ``ParameterDict`` (parameter.py), ``Block`` / ``HybridBlock`` /
``SymbolBlock`` (block.py; hybridized blocks run as one compiled graph, _cached_op.py),
layers (nn/), losses (loss.py), ``Trainer`` (trainer.py), datasets and the DataLoader
(data/) and helpers (utils.py).
"""
from . import data, nn, utils
from .block import Block, HybridBlock, SymbolBlock
from .parameter import Constant, DeferredInitializationError, Parameter, ParameterDict

__all__ = ["Block", "Constant", "DeferredInitializationError", "HybridBlock", "Parameter",
           "ParameterDict", "SymbolBlock", "Trainer", "data", "loss", "nn", "utils"]


def __getattr__(name):
    # loss and Trainer pull in more of mxc (operators, optimizers): load them on first use
    import importlib
    if name == "loss":
        mod = importlib.import_module(".loss", __name__)
        globals()["loss"] = mod
        return mod
    if name == "Trainer":
        from .trainer import Trainer
        globals()["Trainer"] = Trainer
        return Trainer
    if name == "trainer":
        mod = importlib.import_module(".trainer", __name__)
        globals()["trainer"] = mod
        return mod
    if name in ("rnn", "model_zoo", "contrib"):
        mod = importlib.import_module("." + name, __name__)
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'mxc.gluon' has no attribute '{name}'")
