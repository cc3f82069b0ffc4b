"""The operator registry: one registration per MXNet operator name.

An operator is a subclass of :class:`OpDef` whose methods are plain functions of the parsed
attributes: argument names, shape and type inference, gradient, inplace options, fusion class,
the numpy reference (the test oracle, never a run-time fallback) and the lowering to kernel IR.
``@register`` instantiates it once and records it under its name and aliases, so adding an op
touches one place (MXNet's ``NNVM_REGISTER_OP`` with its ``FInferShape``, ``FGradient``...).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..base import MXNetError, OpError, ShapeError
from .params import Attrs, ParamSpec

Shape = tuple  # tuple of ints; None for "unknown"

_REGISTRY: dict[str, "OpDef"] = {}


class OpDef:
    """Base class of operator definitions. Subclasses override what differs."""

    name: str = ""
    aliases: Sequence[str] = ()
    params: ParamSpec = ParamSpec()
    #: elementwise | broadcast | injective | reduction | complex | opaque (fusion passes)
    fusion: str = "opaque"
    #: True when output 0 is bit-identical to input 0 (Reshape, Flatten, _copy, BlockGrad...)
    inplace_identity: bool = False
    #: ops whose forward differs in training mode (BatchNorm, Dropout) or needs randomness
    uses_train_mode: bool = False
    #: whether a gradient definition exists
    differentiable: bool = True
    #: whether argument variables are created for missing inputs when called from mx.sym
    variable_inputs: bool = False
    #: op consumes a random seed (Dropout)
    random: bool = False

    # -- signature --------------------------------------------------------------------------
    def parse_attrs(self, raw: dict, node_name: str = "") -> Attrs:
        return self.params.parse(self.name, raw, node_name)

    def arguments(self, a: Attrs) -> list[str]:
        return ["data"]

    def aux_names(self, a: Attrs) -> list[str]:
        return []

    def input_names(self, a: Attrs) -> list[str]:
        return self.arguments(a) + self.aux_names(a)

    def num_inputs(self, a: Attrs) -> int | None:
        return len(self.input_names(a))

    def aux_indices(self, a: Attrs) -> list[int]:
        n = len(self.arguments(a))
        return list(range(n, n + len(self.aux_names(a))))

    def outputs(self, a: Attrs) -> list[str]:
        return ["output"]

    def num_outputs(self, a: Attrs) -> int:
        return len(self.outputs(a))

    def num_visible_outputs(self, a: Attrs) -> int:
        return self.num_outputs(a)

    # -- inference --------------------------------------------------------------------------
    def infer_shape(self, a: Attrs, in_shapes: list) -> tuple[list, list]:
        """Return (completed input shapes, output shapes). Unknown shapes are None.

        The default is elementwise: all inputs and outputs share one shape.
        """
        known = [s for s in in_shapes if s is not None]
        if not known:
            return in_shapes, [None] * self.num_outputs(a)
        s0 = known[0]
        for s in known[1:]:
            if tuple(s) != tuple(s0):
                raise ShapeError(f"{self.name}: inputs must have the same shape, got "
                                 f"{[tuple(x) if x is not None else None for x in in_shapes]}")
        return [s0] * len(in_shapes), [s0] * self.num_outputs(a)

    def infer_shape_backward(self, a: Attrs, in_shapes: list, out_shapes: list) -> list:
        """Complete unknown input shapes from known output shapes (MXNet's FInferShape sees
        both; e.g. ``_rnn_param_concat`` learns an input's size from the RNN it feeds).
        The default knows nothing more."""
        return in_shapes

    def infer_type(self, a: Attrs, in_types: list) -> tuple[list, list]:
        """Return (completed input dtypes, output dtypes) as dtype names; None = unknown."""
        known = [t for t in in_types if t is not None]
        if not known:
            return in_types, [None] * self.num_outputs(a)
        t0 = known[0]
        for t in known[1:]:
            if t != t0:
                raise OpError(f"{self.name}: inputs must have the same dtype, got {in_types}")
        return [t0] * len(in_types), [t0] * self.num_outputs(a)

    # -- gradient ---------------------------------------------------------------------------
    def gradient(self, node, out_grads: list) -> list:
        """Return one entry (or None for "no gradient") per node input."""
        raise OpError(f"operator {self.name} has no gradient")

    def inplace(self, a: Attrs) -> list[tuple[int, int]]:
        """Pairs (input index, output index) whose storage may be shared."""
        return []

    # -- execution --------------------------------------------------------------------------
    def reference(self, a: Attrs, inputs: list, is_train: bool = False) -> list:
        """numpy implementation: the test oracle. May update aux inputs in place."""
        raise NotImplementedError(f"{self.name} has no numpy reference")

    def lower(self, ctx) -> None:
        """Emit kernels computing the outputs from the inputs (see compiler.lower.LowerCtx)."""
        raise NotImplementedError(f"{self.name} has no lowering")

    def flops(self, a: Attrs, in_shapes: list, out_shapes: list) -> int:
        """Approximate floating-point operations (for `mxc inspect`)."""
        import math
        return sum(math.prod(s) for s in out_shapes if s is not None)

    def __repr__(self) -> str:
        return f"<op {self.name}>"


def register(cls: type) -> type:
    """Class decorator: instantiate an OpDef subclass and record it under name + aliases."""
    op = cls()
    if not op.name:
        raise MXNetError(f"{cls.__name__} lacks a name")
    for n in (op.name, *op.aliases):
        if n in _REGISTRY:
            raise MXNetError(f"operator {n} registered twice")
        _REGISTRY[n] = op
    return cls


def get(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OpError(f"unknown operator '{name}'") from None


def exists(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def all_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def unique_ops() -> list[OpDef]:
    _ensure_loaded()
    seen: dict[int, OpDef] = {}
    for op in _REGISTRY.values():
        seen[id(op)] = op
    return list(seen.values())


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import ops  # noqa: F401  (registers every op definition)


def simple(name: str, **kw: Any) -> Callable[[type], type]:
    """Decorator shortcut: set class attributes then register."""

    def deco(cls: type) -> type:
        cls.name = name
        for k, v in kw.items():
            setattr(cls, k, v)
        return register(cls)

    return deco
