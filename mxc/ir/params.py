"""Operator attribute parsing: MXNet's string attributes to typed Python values.

MXNet keeps every operator attribute as a string (``"(3, 3)"``, ``"True"``, ``"None"``) and
parses it with the operator's ``dmlc::Parameter`` struct, which rejects unknown keys and bad
values. :class:`ParamSpec` does the same for mxc, and formats values back to MXNet's spelling
so graphs written by mxc load in MXNet.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable

from ..base import OpError

REQUIRED = object()


def _strip(s: str) -> str:
    return s.strip()


def parse_bool(s: Any) -> bool:
    if isinstance(s, bool):
        return s
    if isinstance(s, (int, float)):
        return bool(s)
    t = _strip(str(s)).lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise ValueError(f"expected a boolean (True/False/1/0), got {s!r}")


def parse_int(s: Any) -> int:
    if isinstance(s, bool):
        return int(s)
    if isinstance(s, int):
        return s
    if isinstance(s, float):
        if s != int(s):
            raise ValueError(f"expected an integer, got {s!r}")
        return int(s)
    t = _strip(str(s))
    try:
        return int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            raise ValueError(f"expected an integer, got {s!r}") from None
        if f != int(f):
            raise ValueError(f"expected an integer, got {s!r}") from None
        return int(f)


def parse_float(s: Any) -> float:
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return float(s)
    t = _strip(str(s))
    low = t.lower()
    if low in ("inf", "+inf", "infinity"):
        return float("inf")
    if low in ("-inf", "-infinity"):
        return float("-inf")
    if low == "nan":
        return float("nan")
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"expected a number, got {s!r}") from None


def parse_str(s: Any) -> str:
    return str(s)


def parse_shape(s: Any) -> tuple:
    """MXNet TShape / Tuple<int>: "(3, 3)", "[3,3]", "3", "(3,)", "()" ; None entries allowed."""
    if isinstance(s, (tuple, list)):
        return tuple(None if v is None else parse_int(v) for v in s)
    if isinstance(s, int) and not isinstance(s, bool):
        return (s,)
    t = _strip(str(s))
    if t in ("", "()", "[]"):
        return ()
    try:
        v = ast.literal_eval(t.replace("L", ""))
    except (ValueError, SyntaxError):
        raise ValueError(f"expected a shape tuple like (2, 3), got {s!r}") from None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (parse_int(v),)
    if not isinstance(v, (tuple, list)):
        raise ValueError(f"expected a shape tuple like (2, 3), got {s!r}")
    return tuple(None if x is None else parse_int(x) for x in v)


def parse_float_tuple(s: Any) -> tuple:
    if isinstance(s, (tuple, list)):
        return tuple(parse_float(v) for v in s)
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return (float(s),)
    t = _strip(str(s))
    if t in ("", "()", "[]"):
        return ()
    try:
        v = ast.literal_eval(t)
    except (ValueError, SyntaxError):
        raise ValueError(f"expected a tuple of numbers, got {s!r}") from None
    if isinstance(v, (int, float)):
        return (float(v),)
    return tuple(parse_float(x) for x in v)


def optional(parser: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """dmlc::optional<T>: the string "None" (or None) means absent."""

    def parse(s: Any) -> Any:
        if s is None:
            return None
        if isinstance(s, str) and _strip(s) in ("None", ""):
            return None
        return parser(s)

    parse.__name__ = f"optional_{parser.__name__}"
    return parse


def enum(*choices: str, case_sensitive: bool = True) -> Callable[[Any], str]:
    def parse(s: Any) -> str:
        v = str(s).strip()
        if v.startswith(("'", '"')) and v.endswith(("'", '"')):
            v = v[1:-1]
        if not case_sensitive:
            low = {c.lower(): c for c in choices}
            if v.lower() in low:
                return low[v.lower()]
        if v not in choices:
            raise ValueError(f"expected one of {list(choices)}, got {s!r}")
        return v

    parse.__name__ = "enum"
    return parse


def parse_dtype_name(s: Any) -> str:
    from .dtypes import as_dtype

    v = str(s).strip().strip("'\"") if isinstance(s, str) else s
    return as_dtype(v).name


def format_value(v: Any) -> str:
    """Format a typed value the way MXNet's Python frontend writes attributes."""
    import numpy as np

    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join("None" if x is None else format_value(x) for x in v) + \
            ("," if len(v) == 1 else "") + ")"
    if v is None:
        return "None"
    if isinstance(v, float):
        return repr(v)
    return str(v)


@dataclass(frozen=True)
class Param:
    parser: Callable[[Any], Any]
    default: Any = REQUIRED
    doc: str = ""


class Attrs(dict):
    """Parsed attributes; attribute access for readability in op definitions."""

    def __getattr__(self, k: str) -> Any:
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None


class ParamSpec:
    """The set of parameters of one operator (a ``dmlc::Parameter`` struct)."""

    def __init__(self, **params: Param) -> None:
        self.params = params

    def parse(self, op: str, raw: dict, node_name: str = "") -> Attrs:
        where = f"operator {op}" + (f" (node '{node_name}')" if node_name else "")
        out = Attrs()
        for k, v in raw.items():
            if k.startswith("__") and k.endswith("__"):
                continue  # hidden attributes (__shape__, __lr_mult__, ...) belong to the graph
            if k not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise OpError(f"{where}: unknown attribute '{k}'={v!r}; known attributes: {known}")
            try:
                out[k] = self.params[k].parser(v)
            except (ValueError, TypeError, SyntaxError) as e:
                raise OpError(f"{where}: invalid value for attribute '{k}': {e}") from None
        for k, p in self.params.items():
            if k not in out:
                if p.default is REQUIRED:
                    raise OpError(f"{where}: required attribute '{k}' is missing")
                out[k] = p.default
        return out
