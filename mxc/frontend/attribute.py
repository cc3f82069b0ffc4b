"""Attribute scopes (MXNet's ``mxnet.attribute.AttrScope``).

``with mx.AttrScope(ctx_group='dev1', lr_mult='0.1'):`` attaches the attributes to every
symbol created in the block (variables and operators; an operator copies them onto the
argument variables it creates).
"""
from __future__ import annotations

import threading
from typing import Self

__all__ = ["AttrScope"]


class _CurrentDescriptor:
    def __get__(self, obj, owner) -> AttrScope:
        v = getattr(AttrScope._local, "value", None)
        if v is None:
            v = AttrScope._local.value = AttrScope()
        return v


class AttrScope:
    _local = threading.local()
    current = _CurrentDescriptor()

    def __init__(self, **kwargs) -> None:
        self._old_scope = None
        for value in kwargs.values():
            if not isinstance(value, str):
                raise ValueError("Attributes need to be string")  # noqa: TRY004
        self._attr = kwargs

    def get(self, attr: dict | None) -> dict:
        """The scope's attributes updated with ``attr`` (a new dict)."""
        if self._attr:
            ret = self._attr.copy()
            if attr:
                ret.update(attr)
            return ret
        return dict(attr) if attr else {}

    def __enter__(self) -> Self:
        self._old_scope = AttrScope.current
        attr = self._old_scope._attr.copy()
        attr.update(self._attr)
        self._attr = attr
        AttrScope._local.value = self
        return self

    def __exit__(self, *exc) -> None:
        AttrScope._local.value = self._old_scope
