"""Operator definitions, one module per family; importing this package registers them all."""
from importlib import import_module
from importlib.util import find_spec

# each family module registers its ops with @register when imported
FAMILIES = ["elemwise", "reduce", "matrix", "shape", "nn", "norm", "pool", "conv", "rnn",
            "loss", "indexing", "random_ops", "optimizer", "sort", "linalg", "sequence",
            "creation", "amp", "contrib_vision"]

for _f in FAMILIES:
    if find_spec(f"{__name__}.{_f}") is not None:
        import_module(f"{__name__}.{_f}")
