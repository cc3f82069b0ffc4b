"""Automatic symbol names (MXNet's ``mxnet.name``): ``fullyconnected0``, ``convolution1``...

``NameManager.current.get(name, hint)`` returns ``name`` when given, else ``hint`` plus a
per-hint counter. ``with mx.name.Prefix('net_'):`` prepends a prefix to every name made in
the block; ``with mx.name.NameManager():`` starts fresh counters.
"""
from __future__ import annotations

import threading
from typing import Self

__all__ = ["NameManager", "Prefix"]


class _CurrentDescriptor:
    def __get__(self, obj, owner) -> NameManager:
        v = getattr(NameManager._local, "value", None)
        if v is None:
            v = NameManager._local.value = NameManager()
        return v


class NameManager:
    """Counter-based names, one counter per hint (MXNet's NameManager)."""

    _local = threading.local()
    current = _CurrentDescriptor()

    def __init__(self) -> None:
        self._counter: dict[str, int] = {}
        self._old_manager = None

    def get(self, name: str | None, hint: str) -> str:
        if name:
            return name
        n = self._counter.get(hint, 0)
        self._counter[hint] = n + 1
        return f"{hint}{n}"

    def __enter__(self) -> Self:
        self._old_manager = NameManager.current
        NameManager._local.value = self
        return self

    def __exit__(self, *exc) -> None:
        NameManager._local.value = self._old_manager


class Prefix(NameManager):
    """Prepend ``prefix`` to every name (given or generated) made inside the block."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def get(self, name: str | None, hint: str) -> str:
        return self._prefix + super().get(name, hint)
