"""The key-value store behind ``mx.kv`` (MXNet's ``src/kvstore/kvstore_local.h`` + ``comm.h``).

This module owns the store logic and nothing array-specific: values are opaque objects with a
``shape`` attribute, and every piece of arithmetic comes from an :class:`ArrayOps` table that
the caller supplies (the frontend passes NDArray operations, which run as generated kernels).
That keeps the runtime free of the frontend and the compiler, and lets the same logic store
other array types.

What a store does, as MXNet's local store:

* ``init(keys, values)`` copies each value into the store; a key may be initialized once.
* ``push(keys, values)`` groups the (key, value) pairs by key (keys sorted, the values of one
  key in the order given), reduces each group by summation in the order of MXNet's
  ``CommCPU::Reduce`` (``acc = v0; acc += v1+v2+v3+v4; acc += v5+...``, so float results
  match MXNet bit for bit), then either hands the sum to the updater
  (``updater(key, merged, stored)``, which changes ``stored`` in place) or, without an
  updater, overwrites the stored value with the sum.
* ``pull(keys, outs)`` copies the stored value of each key into every output given for it.

Differences from MXNet, on purpose: everything runs synchronously in the caller (so
``priority`` has no effect), and a push without updater *copies* the sum into the store
(MXNet may keep a reference to the pushed array itself).

:class:`StoreBackend` is the interface a store implements; ``LocalStore`` is the in-process
one. A distributed store (MPI ranks as workers and servers) implements the same interface and
plugs in behind the same frontend class.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ..base import MXNetError

__all__ = ["ArrayOps", "LocalStore", "StoreBackend", "reduce_sum"]


@dataclass(frozen=True)
class ArrayOps:
    """The array operations a store needs.

    ``copy(v)`` returns a new array owned by the store; ``assign(dst, src)`` copies ``src``
    into ``dst`` in place; ``add_n(vs)`` returns the left-to-right sum of two or more arrays
    as a new array; ``add_to(dst, src)`` adds ``src`` into ``dst`` in place.
    """

    copy: Callable[[Any], Any]
    assign: Callable[[Any, Any], None]
    add_n: Callable[[Sequence[Any]], Any]
    add_to: Callable[[Any, Any], None]


def _shape(v) -> tuple:
    return tuple(getattr(v, "shape", ()))


def reduce_sum(ops: ArrayOps, values: Sequence[Any]) -> Any:
    """The sum of ``values`` in MXNet's CPU reduction order.

    ``CommCPU`` copies the first value into the merge buffer, then adds the others four at a
    time: ``merged += v1 + v2 + v3 + v4`` (the right side summed left to right). A single value
    is returned as is (no copy), as MXNet does.
    """
    if len(values) == 1:
        return values[0]
    acc = ops.copy(values[0])
    for i in range(1, len(values), 4):
        group = list(values[i:i + 4])
        ops.add_to(acc, group[0] if len(group) == 1 else ops.add_n(group))
    return acc


def group_by_key(keys: Sequence[Hashable], values: Sequence[Any]) -> list:
    """[(key, [values...])] with keys in sorted order and each key's values in the order given
    (MXNet's ``GroupKVPairs``: a stable sort on the key)."""
    if len(keys) != len(values):
        raise MXNetError(f"kvstore: {len(keys)} keys but {len(values)} values")
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    groups: list = []
    for i in order:
        if groups and groups[-1][0] == keys[i]:
            groups[-1][1].append(values[i])
        else:
            groups.append((keys[i], [values[i]]))
    return groups


class StoreBackend:
    """What a store implements. Keys are ints or strs (one kind per store, checked by the
    caller); values and outputs are arrays of the caller's kind."""

    type_name = "base"
    rank = 0
    num_workers = 1

    def init(self, keys: Sequence[Hashable], values: Sequence[Any]) -> None:
        raise NotImplementedError

    def push(self, keys: Sequence[Hashable], values: Sequence[Any]) -> None:
        raise NotImplementedError

    def pull(self, keys: Sequence[Hashable], outs: Sequence[Any]) -> None:
        raise NotImplementedError

    def set_updater(self, updater: Callable | None) -> None:
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait for every worker (one worker here: nothing to wait for)."""

    def has(self, key: Hashable) -> bool:
        raise NotImplementedError

    def get(self, key: Hashable) -> Any:
        raise NotImplementedError


class LocalStore(StoreBackend):
    """The in-process store: one stored copy per key, pushes reduced on the host."""

    def __init__(self, ops: ArrayOps, type_name: str = "local") -> None:
        self.ops = ops
        self.type_name = type_name
        self._local: dict = {}
        self._updater: Callable | None = None

    # -- queries --------------------------------------------------------------------------------
    def has(self, key: Hashable) -> bool:
        return key in self._local

    def get(self, key: Hashable) -> Any:
        self._check_inited(key, "get")
        return self._local[key]

    def keys(self) -> list:
        return list(self._local)

    def _check_inited(self, key: Hashable, what: str) -> None:
        if key not in self._local:
            raise MXNetError(f"kvstore {what}: key {key!r} has not been initialized; call "
                             "init(key, value) first")

    def _check_shape(self, key: Hashable, value: Any, what: str) -> None:
        want, got = _shape(self._local[key]), _shape(value)
        if want != got:
            raise MXNetError(f"kvstore {what}: key {key!r} holds shape {want}, but the "
                             f"{'pushed value' if what == 'push' else 'output'} has "
                             f"shape {got}")

    # -- the store ------------------------------------------------------------------------------
    def init(self, keys: Sequence[Hashable], values: Sequence[Any]) -> None:
        if len(keys) != len(values):
            raise MXNetError(f"kvstore init: {len(keys)} keys but {len(values)} values")
        seen = set()
        for k in keys:
            if k in self._local or k in seen:
                raise MXNetError(f"kvstore init: duplicate init of key {k!r}")
            seen.add(k)
        for k, v in zip(keys, values):
            self._local[k] = self.ops.copy(v)

    def push(self, keys: Sequence[Hashable], values: Sequence[Any]) -> None:
        groups = group_by_key(keys, values)
        for key, vals in groups:                # check everything before changing anything
            self._check_inited(key, "push")
            for v in vals:
                self._check_shape(key, v, "push")
        for key, vals in groups:
            merged = reduce_sum(self.ops, vals)
            stored = self._local[key]
            if self._updater is not None:
                self._updater(key, merged, stored)
            elif merged is not stored:
                self.ops.assign(stored, merged)

    def pull(self, keys: Sequence[Hashable], outs: Sequence[Any]) -> None:
        groups = group_by_key(keys, outs)
        for key, dsts in groups:
            self._check_inited(key, "pull")
            for d in dsts:
                self._check_shape(key, d, "pull")
        for key, dsts in groups:
            stored = self._local[key]
            for d in dsts:
                if d is not stored:
                    self.ops.assign(d, stored)

    def set_updater(self, updater: Callable | None) -> None:
        self._updater = updater

    @property
    def updater(self) -> Callable | None:
        return self._updater
