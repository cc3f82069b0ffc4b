"""``mx.gluon.contrib.nn``: contrib layers (MXNet 1.9.1's ``gluon/contrib/nn``)."""
from . import basic_layers
from .basic_layers import *

__all__ = basic_layers.__all__
