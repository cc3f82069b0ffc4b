"""``mx.gluon.nn``: neural network layers (MXNet 1.x's names and semantics)."""
from ..block import Block, HybridBlock, SymbolBlock  # noqa: F401
from .activations import *
from .basic_layers import *
from .conv_layers import *
