"""``mx.gluon.rnn``: recurrent cells (rnn_cell.py) and fused recurrent layers (rnn_layer.py),
MXNet 1.9.1's ``python/mxnet/gluon/rnn``."""
from .rnn_cell import *
from .rnn_layer import *
