"""Data types: MXNet type codes, numpy dtypes and LLVM type names in one table.

MXNet stores dtypes as ``mshadow::TypeFlag`` integers (in ``.params`` records and in the
``__dtype__`` attribute of variables). Everything in mxc that needs to translate between a
numpy dtype, an MXNet type code and a code generator type looks it up here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    """One element type. ``name`` is the numpy/MXNet spelling ('float32', 'bool', ...)."""

    name: str
    code: int            # mshadow::TypeFlag
    itemsize: int
    kind: str            # 'f' float, 'i' signed int, 'u' unsigned int, 'b' bool
    storage: str         # numpy dtype used to hold the bytes (bfloat16 lives in uint16)

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.storage)

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind in "iub"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.name


_TABLE = [
    DType("float32", 0, 4, "f", "float32"),
    DType("float64", 1, 8, "f", "float64"),
    DType("float16", 2, 2, "f", "float16"),
    DType("uint8", 3, 1, "u", "uint8"),
    DType("int32", 4, 4, "i", "int32"),
    DType("int8", 5, 1, "i", "int8"),
    DType("int64", 6, 8, "i", "int64"),
    DType("bool", 7, 1, "b", "bool"),
    DType("int16", 8, 2, "i", "int16"),
    DType("uint16", 9, 2, "u", "uint16"),
    DType("uint32", 10, 4, "u", "uint32"),
    DType("uint64", 11, 8, "u", "uint64"),
    DType("bfloat16", 12, 2, "f", "uint16"),
]

BY_NAME = {d.name: d for d in _TABLE}
BY_CODE = {d.code: d for d in _TABLE}

float32 = BY_NAME["float32"]
float64 = BY_NAME["float64"]
float16 = BY_NAME["float16"]
bfloat16 = BY_NAME["bfloat16"]
int32 = BY_NAME["int32"]
int64 = BY_NAME["int64"]
uint8 = BY_NAME["uint8"]
int8 = BY_NAME["int8"]
bool_ = BY_NAME["bool"]


def from_code(code: int) -> DType:
    """DType for an MXNet type code; ValueError names the code when unknown."""
    try:
        return BY_CODE[int(code)]
    except (KeyError, ValueError):
        raise ValueError(f"unknown MXNet dtype code {code!r} (known: {sorted(BY_CODE)})") from None


def as_dtype(x) -> DType:
    """Accept a DType, a name, an MXNet code, a numpy dtype or a python/numpy type."""
    if isinstance(x, DType):
        return x
    if x is None:
        return float32
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return from_code(int(x))
    if isinstance(x, str):
        if x in BY_NAME:
            return BY_NAME[x]
        if x.lstrip("-").isdigit():
            return from_code(int(x))
    try:
        npd = np.dtype(x)
    except TypeError:
        raise ValueError(f"unknown dtype {x!r}") from None
    if npd.name in BY_NAME:
        return BY_NAME[npd.name]
    raise ValueError(f"dtype {x!r} is not supported by MXNet")
