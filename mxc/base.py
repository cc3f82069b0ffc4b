"""Errors and small shared helpers of the user API (MXNet's ``mxnet.base``)."""
from __future__ import annotations


class MXNetError(RuntimeError):
    """The error every user-facing failure raises, as in MXNet."""


class OpError(MXNetError):
    """An operator rejected its attributes, shapes or dtypes."""


class ShapeError(MXNetError):
    """Shape inference failed or a given shape does not match."""


class CompileError(MXNetError):
    """The compiler or code generator cannot handle a graph or kernel."""


string_types = (str,)
numeric_types = (float, int)
integer_types = (int,)
