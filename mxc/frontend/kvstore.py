"""``mx.kv`` / ``mx.kvstore``: MXNet 1.x's key-value store API over NDArrays.

``mx.kv.create(type)`` returns a :class:`KVStore`. The class turns MXNet's call forms (one key
or a list of keys; one value, a list of per-device values, or a list of such lists) into flat
(key, array) pairs and hands them to a *backend* chosen by the store type:

* ``'local'``, ``'device'`` (and MXNet's older names ``local_update_cpu``,
  ``local_allreduce_cpu``, ``local_allreduce_device``, and ``'nccl'``): the in-process
  :class:`mxc.runtime.kvstore.LocalStore`. Pushed values of one key are summed in MXNet's
  ``CommCPU`` order with ``mx.nd`` operators (generated kernels); with an optimizer set, the
  update runs in the store at push time, as MXNet's local store with an updater.
* ``'dist_sync'``, ``'dist_async'``, ``'dist_device_sync'``...: raise
  :class:`~mxc.base.MXNetError` for now. The distributed store (MPI ranks, DESIGN.md) plugs in
  with :func:`register_backend` and implements :class:`mxc.runtime.kvstore.StoreBackend`;
  nothing in :class:`KVStore` changes.

Notes:

* Keys are ints or strs; one store uses one kind (MXNet keeps separate key spaces for the two;
  mixing them is an error here).
* Everything runs synchronously; ``priority`` is accepted and has no effect.
* Sparse values are stored dense. ``row_sparse_pull`` writes the requested rows (the others
  are zero); ``pull`` skips sparse outputs when ``ignore_sparse`` (MXNet's default).
* ``set_gradient_compression`` validates and records its parameters but compresses nothing:
  with one process there is no communication to compress. (MXNet raises for 'local' stores;
  mxc accepts it so scripts written for 'device'/'dist' stores run unchanged.)
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..base import MXNetError, string_types
from ..runtime import kvstore as _rt
from .ndarray import NDArray

__all__ = ["KVStore", "KVStoreBase", "create", "register_backend"]


# ------------------------------------------------------------------------------------------
# NDArray operations for the runtime store
# ------------------------------------------------------------------------------------------
def _dense(v: NDArray) -> NDArray:
    return v.tostype("default") if v.stype != "default" else v


def _copy(v: NDArray) -> NDArray:
    return _dense(v).copy()


def _assign(dst: NDArray, src: NDArray) -> None:
    dst[:] = src


def _add_n(vs) -> NDArray:
    from . import ndarray as nd
    ctx = vs[0].context
    return nd.add_n(*[v.as_in_context(ctx) for v in vs])


def _add_to(dst: NDArray, src: NDArray) -> None:
    dst += src.as_in_context(dst.context)


NDARRAY_OPS = _rt.ArrayOps(copy=_copy, assign=_assign, add_n=_add_n, add_to=_add_to)


# ------------------------------------------------------------------------------------------
# backends, chosen by the store type
# ------------------------------------------------------------------------------------------
def _local_backend(type_name: str) -> _rt.StoreBackend:
    return _rt.LocalStore(NDARRAY_OPS, type_name)


def _dist_backend(type_name: str) -> _rt.StoreBackend:
    raise MXNetError(f"kvstore type {type_name!r} is not supported yet: distributed KVStore "
                     "comes with the MPI back end; use 'local' or 'device'")


# (match, factory): the first entry whose match accepts the lower-cased type name wins
_BACKENDS: list = [
    (lambda t: "dist" in t, _dist_backend),
    (lambda t: t == "nccl" or t.startswith(("local", "device")), _local_backend),
]


def register_backend(match: Callable[[str], bool], factory: Callable[[str], object],
                     first: bool = True) -> None:
    """Make ``create(type)`` use ``factory(type)`` for the types ``match`` accepts. The factory
    returns a :class:`mxc.runtime.kvstore.StoreBackend` (the distributed store registers
    itself this way)."""
    entry = (match, factory)
    if first:
        _BACKENDS.insert(0, entry)
    else:
        _BACKENDS.append(entry)


# ------------------------------------------------------------------------------------------
# call forms -> flat (key, array) pairs
# ------------------------------------------------------------------------------------------
def _norm_key(k, what: str):
    if isinstance(k, (bool, np.bool_)):
        raise MXNetError(f"kvstore {what}: unexpected type for keys: {type(k).__name__}")
    if isinstance(k, (int, np.integer)):
        return int(k)
    if isinstance(k, string_types):
        return k
    raise MXNetError(f"kvstore {what}: keys must be int or str, got {type(k).__name__}")


def _pairs(key, vals, what: str) -> tuple:
    """(keys, arrays, use_str_keys), MXNet's ``_ctype_key_value``: a key with a list of arrays
    (one per device) becomes the key repeated; a list of keys goes with a list of values."""
    if isinstance(key, (list, tuple)):
        if not isinstance(vals, (list, tuple)) or len(vals) != len(key):
            n = len(vals) if isinstance(vals, (list, tuple)) else 1
            raise MXNetError(f"kvstore {what}: {len(key)} keys but {n} values; give one value "
                             "(or one list of per-device values) per key")
        keys: list = []
        arrs: list = []
        use_str = None
        for k, v in zip(key, vals):
            ks, vs, s = _pairs(k, v, what)
            if use_str is not None and s != use_str:
                raise MXNetError(f"kvstore {what}: inconsistent types of keys detected "
                                 "(int and str keys mixed)")
            use_str = s
            keys += ks
            arrs += vs
        return keys, arrs, bool(use_str)
    k = _norm_key(key, what)
    if isinstance(vals, NDArray):
        return [k], [vals], isinstance(k, str)
    if isinstance(vals, (list, tuple)) and vals:
        for v in vals:
            if not isinstance(v, NDArray):
                raise MXNetError(f"kvstore {what}: key {k!r}: values must be NDArrays, got "
                                 f"{type(v).__name__}")
        return [k] * len(vals), list(vals), isinstance(k, str)
    raise MXNetError(f"kvstore {what}: key {k!r}: expected an NDArray or a list of NDArrays, "
                     f"got {type(vals).__name__}")


# ------------------------------------------------------------------------------------------
# the store
# ------------------------------------------------------------------------------------------
class KVStoreBase:
    """Capability names (MXNet's ``mx.kv.KVStoreBase``)."""

    OPTIMIZER = "optimizer"


class KVStore(KVStoreBase):
    """A key-value store for synchronizing values over devices (and, later, processes)."""

    def __init__(self, backend: _rt.StoreBackend, type_name: str) -> None:
        self._backend = backend
        self._type = type_name
        self._updater = None
        self._key_kind: type | None = None
        self._sparse_keys: set = set()
        self._compression: dict | None = None

    def __repr__(self) -> str:
        return f"<KVStore type={self._type} rank={self.rank} num_workers={self.num_workers}>"

    # -- helpers --------------------------------------------------------------------------------
    def _flatten(self, key, vals, what: str) -> tuple:
        keys, arrs, use_str = _pairs(key, vals, what)
        kind = str if use_str else int
        if self._key_kind is None:
            self._key_kind = kind
        elif kind is not self._key_kind:
            raise MXNetError(f"kvstore {what}: this store uses {self._key_kind.__name__} keys; "
                             f"got {kind.__name__} key(s) {sorted(set(keys))}: int and str "
                             "keys cannot be mixed")
        return keys, arrs

    # -- properties -----------------------------------------------------------------------------
    @property
    def type(self) -> str:
        """The store type given to :func:`create`."""
        return self._type

    @property
    def rank(self) -> int:
        """This worker's rank in [0, num_workers)."""
        return int(getattr(self._backend, "rank", 0))

    @property
    def num_workers(self) -> int:
        """The number of worker processes."""
        return int(getattr(self._backend, "num_workers", 1))

    def is_capable(self, capability: str) -> bool:
        """Whether the store supports ``capability`` ('optimizer': updates in the store)."""
        if capability.lower() == KVStoreBase.OPTIMIZER:
            return True
        raise ValueError(f"Unknown capability: {capability}")

    # -- data -----------------------------------------------------------------------------------
    def init(self, key, value) -> None:
        """Initialize one key or a list of keys (each key once)."""
        keys, vals = self._flatten(key, value, "init")
        for k, v in zip(keys, vals):
            if v.stype != "default":
                self._sparse_keys.add(k)
        self._backend.init(keys, [_dense(v) for v in vals])

    def push(self, key, value, priority: int = 0) -> None:
        """Push values; the values of one key (one per device) are summed first. With an
        optimizer set, the store applies the update to its value; otherwise the sum replaces
        it."""
        keys, vals = self._flatten(key, value, "push")
        self._backend.push(keys, [_dense(v) for v in vals])

    def pull(self, key, out=None, priority: int = 0, ignore_sparse: bool = True) -> None:
        """Copy the stored values into ``out`` (an NDArray, a list of per-device NDArrays, or
        a list of those for a list of keys). Sparse outputs are skipped when
        ``ignore_sparse`` (use :meth:`row_sparse_pull`)."""
        if out is None:
            raise MXNetError("kvstore pull: out must be given")
        keys, outs = self._flatten(key, out, "pull")
        pairs = [(k, o) for k, o in zip(keys, outs)
                 if not (ignore_sparse and o.stype != "default")]
        dense = [(k, o) for k, o in pairs if o.stype == "default"]
        self._backend.pull([k for k, _ in dense], [o for _, o in dense])
        for k, o in pairs:
            if o.stype != "default":
                o[:] = self._backend.get(k)

    def pushpull(self, key, value, out=None, priority: int = 0) -> None:
        """Push ``value`` then pull into ``out`` (into ``value`` when ``out`` is None)."""
        self.push(key, value, priority)
        self.pull(key, value if out is None else out, priority, ignore_sparse=False)

    def broadcast(self, key, value, out, priority: int = 0) -> None:
        """Initialize ``key`` with ``value`` and pull it into ``out``."""
        self.init(key, value)
        self.pull(key, out, priority, ignore_sparse=False)

    def row_sparse_pull(self, key, out=None, priority: int = 0, row_ids=None) -> None:
        """Pull only the rows ``row_ids`` (an NDArray of row indices, or one per output) of
        the stored values; the other rows of ``out`` become zero. Outputs may be dense or
        row_sparse (the store keeps values dense)."""
        if out is None:
            raise MXNetError("kvstore row_sparse_pull: out must be given")
        if row_ids is None:
            raise MXNetError("kvstore row_sparse_pull: row_ids must be given")
        keys, outs = self._flatten(key, out, "row_sparse_pull")
        if isinstance(row_ids, NDArray):
            row_ids = [row_ids]
        ids = list(row_ids)
        if isinstance(key, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
            ids = [r for rs in ids for r in rs]
        if len(ids) == 1:
            ids = ids * len(outs)
        if len(ids) != len(outs):
            raise MXNetError(f"kvstore row_sparse_pull: the number of row_ids ({len(ids)}) "
                             f"doesn't match the number of values ({len(outs)})")
        for k, o, r in zip(keys, outs, ids):
            stored = self._backend.get(k)
            if tuple(stored.shape) != tuple(o.shape):
                raise MXNetError(f"kvstore row_sparse_pull: key {k!r} holds shape "
                                 f"{tuple(stored.shape)}, but the output has shape {o.shape}")
            rows = np.unique(np.asarray(r.asnumpy() if isinstance(r, NDArray) else r,
                                        dtype=np.int64).reshape(-1))
            full = stored.asnumpy()
            if rows.size and (rows.min() < 0 or rows.max() >= full.shape[0]):
                raise MXNetError(f"kvstore row_sparse_pull: key {k!r}: row ids must be in "
                                 f"[0, {full.shape[0]}), got {rows.min()}..{rows.max()}")
            dense = np.zeros_like(full)
            dense[rows] = full[rows]
            o[:] = dense

    # -- optimizer ------------------------------------------------------------------------------
    def set_optimizer(self, optimizer) -> None:
        """Run ``optimizer`` in the store: each push updates the stored weight with the
        summed gradient."""
        from . import optimizer as opt
        self._set_updater(opt.get_updater(optimizer))

    def _set_updater(self, updater) -> None:
        """Set ``updater(key, grad, stored_weight)``, called at every push."""
        self._updater = updater
        self._backend.set_updater(updater)

    def set_gradient_compression(self, compression_params: dict) -> None:
        """Accepted and recorded; no compression happens (one process: nothing is sent)."""
        if not isinstance(compression_params, dict) or "type" not in compression_params:
            raise MXNetError("set_gradient_compression: compression_params must be a dict "
                             "with a 'type' key, e.g. {'type': '2bit', 'threshold': 0.5}")
        ctype = str(compression_params["type"])
        if ctype not in ("2bit", "1bit", "none"):
            raise MXNetError(f"set_gradient_compression: unknown compression type {ctype!r}; "
                             "expected '2bit', '1bit' or 'none'")
        self._compression = dict(compression_params)

    def save_optimizer_states(self, fname: str, dump_optimizer: bool = False) -> None:
        """Write the updater's states (and the optimizer with ``dump_optimizer``)."""
        with open(fname, "wb") as f:
            f.write(self._states_updater("save_optimizer_states").get_states(dump_optimizer))

    def load_optimizer_states(self, fname: str) -> None:
        """Read states written by :meth:`save_optimizer_states`."""
        upd = self._states_updater("load_optimizer_states")
        with open(fname, "rb") as f:
            upd.set_states(f.read())

    def _states_updater(self, what: str):
        if self._updater is None:
            raise MXNetError(f"kvstore {what}: no optimizer is set on this store (call "
                             "set_optimizer first)")
        if not hasattr(self._updater, "get_states"):
            raise MXNetError(f"kvstore {what}: the updater set with _set_updater has no "
                             "states to save (use set_optimizer)")
        return self._updater

    # -- processes ------------------------------------------------------------------------------
    def barrier(self) -> None:
        """Wait until every worker reaches this point."""
        self._backend.barrier()

    _barrier = barrier

    def _send_command_to_servers(self, head, body) -> None:
        """Commands go to server processes; a local store has none."""


def create(name: str = "local") -> KVStore:
    """A new store of type ``name``: 'local' (default) or 'device'; 'dist_*' types come with
    the MPI back end."""
    if not isinstance(name, string_types):
        raise TypeError("name must be a string")
    tname = name.lower()
    for match, factory in _BACKENDS:
        if match(tname):
            return KVStore(factory(tname), tname)
    raise MXNetError(f"unknown kvstore type {name!r}; expected 'local', 'device', 'nccl' or a "
                     "'dist_*' type")
