"""MXNet's binary NDArray list format (``.params``, ``mx.nd.save``), read and written.

Layout (little-endian; ``src/ndarray/ndarray.cc`` in apache/mxnet v1.x, see FORMATS.md)::

    uint64 0x112 · uint64 reserved · uint64 N · N records · uint64 n_names · names

Each record is one of

* V3 ``0xF993FACA`` (numpy-shape semantics, dense only) and V2 ``0xF993FAC9`` (legacy
  semantics): ``int32 stype`` · [storage TShape if sparse] · TShape · (stop for a "none"
  array) · ``int32 dev_type, dev_id`` · ``int32 type_flag`` · [aux type + TShape per aux] ·
  data · aux data. TShape = ``int32 ndim`` + ``ndim x int64``.
* V1 ``0xF993FAC8``: TShape (int64 dims) · context · type_flag · data.
* V0 (no magic): the first uint32 *is* ndim, then ``ndim x uint32`` dims, context,
  type_flag, data.

What a loaded record is:

* dense: a C-contiguous little-endian ``numpy.ndarray`` of the record's dtype; bfloat16
  (type code 12, which numpy lacks) is a :class:`BF16Array` holding the raw uint16 bits;
* sparse: a :class:`SparseRecord` (``'csr'`` or ``'row_sparse'``);
* MXNet's "none" array (an NDArray without storage): a :class:`NoneRecord`.

Shape semantics follow MXNet 1.9.1's loader:

* ``np_shape=False`` (MXNet's default): a V3 record is refused, as MXNet refuses it outside
  ``mx.util.np_shape(True)``. In a V2 record ndim 0 means "none" and the record stops after
  the shape. ``legacy_0d_unloadable.nd`` in the reference cases (a 0-d array MXNet wrote in
  legacy mode: ndim 0 *followed* by context, dtype and data) therefore fails to load exactly
  as it fails in MXNet, with a :class:`FormatError` that says so and points at
  ``np_shape=True``.
* ``np_shape=True``: V3 and older records are read with numpy semantics (ndim 0 is a 0-d
  array, ndim -1 or a dim of -1 is "none") - MXNet's behaviour when numpy shape semantics are
  switched on globally. This reads ``legacy_0d_unloadable.nd`` as the 0-d float32 ``2.25`` it
  holds. Sparse records are refused here, as MXNet refuses them.
* V0/V1 records are read as MXNet 1.9.1's ``LegacyLoad`` does in either mode (ndim 0 is a
  0-d array there; only an unknown shape is "none").

The device a record was saved from is ignored (data is always written from a CPU copy);
records are written with ``cpu(0)``.

Every malformed input raises :class:`FormatError` naming the file, the byte offset and what
was expected; sizes are checked against the bytes left before anything is allocated.
"""
from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...base import MXNetError
from .. import dtypes as _dt
from .errors import FormatError

__all__ = [
    "LIST_MAGIC",
    "V1_MAGIC",
    "V2_MAGIC",
    "V3_MAGIC",
    "BF16Array",
    "NoneRecord",
    "Record",
    "SparseRecord",
    "dumps_nd",
    "load_nd",
    "loads_nd",
    "save_nd",
]

LIST_MAGIC = 0x112           # kMXAPINDArrayListMagic
V1_MAGIC = 0xF993FAC8        # int64 TShape, no storage type
V2_MAGIC = 0xF993FAC9        # storage type, legacy shape semantics
V3_MAGIC = 0xF993FACA        # numpy shape semantics (dense only)
ZIP_MAGICS = (0x04034B50, 0x06054B50)   # "PK\3\4" local header / "PK\5\6" empty archive
NPY_MAGIC = 0x4D554E93                  # "\x93NUM"

_STYPES = {0: "default", 1: "row_sparse", 2: "csr"}
_STYPE_CODES = {"default": 0, "row_sparse": 1, "csr": 2}
_CPU = (1, 0)                # Context: dev_type kCPU, dev_id 0


def _c_order(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype``; unlike np.ascontiguousarray keeps 0-d."""
    return np.require(np.asarray(a, dtype=dtype), requirements="C")


# --------------------------------------------------------------------------------------------
# record types
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class BF16Array:
    """A bfloat16 array (MXNet type code 12) kept as its raw uint16 bit patterns.

    numpy has no bfloat16, so the bits are stored unchanged (``bits``, uint16, C order); the
    record's shape is ``bits.shape``. :meth:`to_float32` widens exactly; :meth:`from_float32`
    rounds to nearest even like MXNet's ``bf16_t`` conversion.
    """

    bits: np.ndarray
    dtype_code: int = field(default=12, init=False)

    def __post_init__(self) -> None:
        b = np.asarray(self.bits)
        if b.dtype != np.uint16:
            if b.dtype.itemsize != 2 or b.dtype.kind not in "uiV":
                raise TypeError(f"BF16Array needs uint16 bits, got {b.dtype}")
            b = b.view(np.uint16)
        self.bits = _c_order(b, np.dtype("<u2"))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.bits.shape)

    @property
    def ndim(self) -> int:
        return self.bits.ndim

    @property
    def size(self) -> int:
        return int(self.bits.size)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)

    @property
    def dtype(self) -> _dt.DType:
        return _dt.bfloat16

    def tobytes(self) -> bytes:
        return self.bits.astype("<u2", copy=False).tobytes()

    def to_float32(self) -> np.ndarray:
        return (self.bits.astype(np.uint32) << 16).view(np.float32)

    @classmethod
    def from_float32(cls, x) -> BF16Array:
        f = _c_order(np.asarray(x), np.dtype(np.float32))
        u = f.view(np.uint32).astype(np.uint64)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        nan = np.isnan(f)
        bits = np.where(nan, (u >> 16) | 0x40, rounded).astype(np.uint16)
        return cls(bits.reshape(f.shape))

    def reshape(self, *shape) -> BF16Array:
        return BF16Array(self.bits.reshape(*shape))

    def __eq__(self, other) -> bool:
        return (isinstance(other, BF16Array) and self.shape == other.shape
                and bool(np.array_equal(self.bits, other.bits)))

    def __repr__(self) -> str:
        return f"BF16Array(shape={self.shape})"


@dataclass(eq=False)
class SparseRecord:
    """A sparse NDArray: ``stype`` is ``'csr'`` or ``'row_sparse'``.

    ``data`` holds the stored values (its shape is MXNet's storage shape), ``indices`` the
    column indices (csr) or row indices (row_sparse), ``indptr`` the csr row pointer. Index
    dtypes are kept as stored (MXNet uses int64).
    """

    stype: str
    shape: tuple
    data: np.ndarray | BF16Array
    indices: np.ndarray
    indptr: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.stype not in ("csr", "row_sparse"):
            raise ValueError(f"SparseRecord stype must be 'csr' or 'row_sparse', "
                             f"got {self.stype!r}")
        self.shape = tuple(int(d) for d in self.shape)
        if self.stype == "csr" and self.indptr is None:
            raise ValueError("a csr SparseRecord needs indptr")

    @property
    def storage_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def aux(self) -> list[np.ndarray]:
        """Aux arrays in MXNet's order (csr: indptr, indices; row_sparse: indices)."""
        if self.stype == "csr":
            return [self.indptr, self.indices]
        return [self.indices]

    def todense(self):
        """The dense array (numpy, or BF16Array for bfloat16 data)."""
        bf16 = isinstance(self.data, BF16Array)
        vals = self.data.bits if bf16 else np.asarray(self.data)
        out = np.zeros(self.shape, dtype=vals.dtype)
        idx = np.asarray(self.indices).astype(np.int64)
        if self.stype == "row_sparse":
            if idx.ndim != 1 or vals.shape[:1] != idx.shape or vals.shape[1:] != self.shape[1:]:
                raise MXNetError(f"row_sparse record is inconsistent: data {vals.shape}, "
                                 f"indices {idx.shape}, shape {self.shape}")
            if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
                raise MXNetError("row_sparse record has a row index out of range")
            out[idx] = vals
        else:
            ptr = np.asarray(self.indptr).astype(np.int64)
            if len(self.shape) != 2 or ptr.shape != (self.shape[0] + 1,) or vals.ndim != 1 \
                    or idx.shape != vals.shape:
                raise MXNetError(f"csr record is inconsistent: data {vals.shape}, indices "
                                 f"{idx.shape}, indptr {ptr.shape}, shape {self.shape}")
            if ptr.size and (ptr[0] != 0 or ptr[-1] != vals.size or np.any(np.diff(ptr) < 0)):
                raise MXNetError("csr record has an invalid indptr")
            if idx.size and (idx.min() < 0 or idx.max() >= self.shape[1]):
                raise MXNetError("csr record has a column index out of range")
            rows = np.repeat(np.arange(self.shape[0]), np.diff(ptr))
            out[rows, idx] = vals
        return BF16Array(out) if bf16 else out


@dataclass(frozen=True)
class NoneRecord:
    """MXNet's "none" array (no storage, e.g. an uninitialised gradient).

    ``stype`` and ``storage_shape`` keep what a sparse none record carried, so it is written
    back the same way.
    """

    stype: str = "default"
    storage_shape: tuple | None = None


Record = np.ndarray | BF16Array | SparseRecord | NoneRecord


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
class _Reader:
    """A cursor over the file bytes whose every read checks the bytes left first."""

    __slots__ = ("buf", "pos", "source")

    def __init__(self, buf: bytes | memoryview, source: str) -> None:
        self.buf = memoryview(buf).cast("B")
        self.pos = 0
        self.source = source

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def fail(self, what: str, offset: int | None = None) -> FormatError:
        return FormatError(what, source=self.source,
                           offset=self.pos if offset is None else offset)

    def need(self, n: int, what: str) -> None:
        if n > self.left:
            raise self.fail(f"expected {what} ({n} bytes) but only {self.left} bytes are left "
                            "(truncated file?)")

    def unpack(self, fmt: str, size: int, what: str):
        self.need(size, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def i32(self, what: str) -> int:
        return self.unpack("<i", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def take(self, n: int, what: str) -> memoryview:
        self.need(n, what)
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return v


def _dtype(r: _Reader, code: int, offset: int, what: str) -> _dt.DType:
    try:
        return _dt.from_code(code)
    except ValueError:
        raise r.fail(f"expected a known {what} dtype code (0..12) but found {code}",
                     offset) from None


def _read_tshape(r: _Reader, what: str, np_shape: bool) -> tuple[int, ...] | None:
    """An int32 ndim + int64 dims. Returns None for an unknown shape (ndim -1 or a -1 dim)."""
    at = r.pos
    ndim = r.i32(f"{what} ndim")
    if ndim < -1:
        raise r.fail(f"expected {what} ndim >= -1 but found {ndim}", at)
    if ndim == -1:
        if not np_shape:
            raise r.fail(f"{what} has unknown ndim (-1), which only numpy-shape records "
                         "may hold", at)
        return None
    r.need(8 * ndim, f"{what} dims (ndim {ndim})")
    dims = struct.unpack_from(f"<{ndim}q", r.buf, r.pos)
    r.pos += 8 * ndim
    unknown = False
    for i, d in enumerate(dims):
        if d < -1 or (d == -1 and not np_shape):
            raise r.fail(f"expected {what} dim {i} >= 0 but found {d}", at + 4 + 8 * i)
        unknown = unknown or d == -1
    return None if unknown else tuple(dims)


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _read_values(r: _Reader, dt: _dt.DType, shape: tuple, what: str):
    count = _prod(shape)
    nbytes = count * dt.itemsize
    at = r.pos
    if nbytes > r.left:
        raise r.fail(f"expected {nbytes} bytes of {what} ({dt.name}, shape {shape}) but only "
                     f"{r.left} bytes are left", at)
    raw = r.take(nbytes, what)
    arr = np.frombuffer(raw, dtype=dt.np.newbyteorder("<"), count=count).copy()
    try:
        arr = arr.reshape(shape)
    except ValueError:  # more dims than numpy allows, or dims whose product overflows
        raise r.fail(f"{what} has shape {shape}, which numpy cannot represent", at) from None
    if dt.code == 12:
        return BF16Array(arr)
    if arr.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts only
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _read_context(r: _Reader, what: str) -> None:
    r.i32(f"{what} context dev_type")
    r.i32(f"{what} context dev_id")


def _read_dense_tail(r: _Reader, shape: tuple, what: str):
    _read_context(r, what)
    at = r.pos
    dt = _dtype(r, r.i32(f"{what} type_flag"), at, what)
    return _read_values(r, dt, shape, f"{what} data")


def _read_legacy(r: _Reader, magic: int, start: int, what: str):
    """V0 (magic is ndim, uint32 dims) and V1 (int64 TShape) records: MXNet's LegacyLoad."""
    if magic == V1_MAGIC:
        shape = _read_tshape(r, f"{what} shape", True)
    else:
        ndim = magic
        if 4 * ndim > r.left:
            raise r.fail(f"{what}: first word {ndim:#x} is not a record magic (0xF993FAC8.."
                         f"0xF993FACA), and as a V0 ndim it needs {4 * ndim} bytes of dims but "
                         f"only {r.left} are left", start)
        shape = struct.unpack_from(f"<{ndim}I", r.buf, r.pos)
        r.pos += 4 * ndim
    if shape is None:
        return NoneRecord()
    return _read_dense_tail(r, shape, what)


def _read_record(r: _Reader, i: int, np_shape: bool, state: dict) -> Record:
    what = f"record {i}"
    start = r.pos
    magic = r.u32(f"{what} magic")
    if magic == V3_MAGIC and not np_shape:
        raise r.fail(f"{what} was saved with numpy shape semantics (magic 0xF993FACA); MXNet "
                     "loads it only inside mx.util.np_shape(True): pass np_shape=True", start)
    if magic not in (V2_MAGIC, V3_MAGIC):
        return _read_legacy(r, magic, start, what)

    at = r.pos
    code = r.i32(f"{what} storage type")
    if code not in (-1, 0, 1, 2):
        raise r.fail(f"expected {what} storage type -1, 0 (default), 1 (row_sparse) or "
                     f"2 (csr) but found {code}", at)
    if np_shape and code != 0:
        raise r.fail(f"{what} has storage type {code}; only dense (0) records can be loaded "
                     "with numpy shape semantics", at)
    stype = _STYPES.get(code, "default")
    nad = {1: 1, 2: 2}.get(code, 0)
    sshape = _read_tshape(r, f"{what} storage shape", np_shape) if nad else None
    shape_at = r.pos
    shape = _read_tshape(r, f"{what} shape", np_shape)
    if shape is None:
        return NoneRecord(stype, sshape if nad else None)
    if not np_shape and len(shape) == 0:
        state.setdefault("legacy_none_at", start)
        return NoneRecord(stype, sshape if nad else None)
    if nad and sshape is None:
        raise r.fail(f"{what}: a sparse record needs a known storage shape", shape_at)

    if not nad:
        return _read_dense_tail(r, shape, what)

    _read_context(r, what)
    at = r.pos
    dt = _dtype(r, r.i32(f"{what} type_flag"), at, what)
    aux = []
    for k in range(nad):
        at = r.pos
        adt = _dtype(r, r.i32(f"{what} aux {k} type_flag"), at, f"{what} aux {k}")
        ashape = _read_tshape(r, f"{what} aux {k} shape", np_shape)
        aux.append((adt, ashape))
    if _prod(sshape) == 0:
        # MXNet's sparse NDArray constructor re-derives an empty storage shape from the aux
        # shapes; the bytes that follow are sized by that shape.
        if code == 1 and len(shape) >= 1 and len(aux[0][1]) >= 1:
            sshape = (aux[0][1][0],) + tuple(shape[1:])
        elif code == 2:
            sshape = tuple(aux[1][1])
    data = _read_values(r, dt, sshape, f"{what} data")
    arrays = [_read_values(r, adt, ashape, f"{what} aux {k} data")
              for k, (adt, ashape) in enumerate(aux)]
    for k, a in enumerate(arrays):
        if isinstance(a, BF16Array):
            raise r.fail(f"{what} aux {k} has dtype bfloat16, which cannot index", start)
    if code == 2:
        return SparseRecord("csr", shape, data, indices=arrays[1], indptr=arrays[0])
    return SparseRecord("row_sparse", shape, data, indices=arrays[0])


def _parse_list(buf, source: str, np_shape: bool):
    r = _Reader(buf, source)
    state: dict = {}
    try:
        at = r.pos
        header = r.u64("list header 0x112")
        if header != LIST_MAGIC:
            raise r.fail(f"expected NDArray list header 0x112 but found {header:#x} (not an "
                         "MXNet .params/.nd file)", at)
        r.u64("reserved word")
        n = r.u64("array count")
        if n > r.left // 8:  # every record takes at least 8 bytes
            raise r.fail(f"array count {n} cannot fit in the {r.left} bytes left", r.pos - 8)
        records = [_read_record(r, i, np_shape, state) for i in range(n)]
        at = r.pos
        n_names = r.u64("name count")
        if n_names != 0 and n_names != n:
            raise r.fail(f"expected 0 or {n} names (one per array) but found {n_names}", at)
        names = []
        for i in range(n_names):
            at = r.pos
            ln = r.u64(f"name {i} length")
            raw = r.take(ln, f"name {i} bytes")
            try:
                names.append(bytes(raw).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise r.fail(f"name {i} is not valid UTF-8 ({e.reason} at byte {e.start} of "
                             "the name)", at + 8 + e.start) from None
    except FormatError as e:
        if "legacy_none_at" in state:
            off = state["legacy_none_at"]
            raise FormatError(
                f"{e.detail} [note: the record at byte {off} has ndim 0, which legacy "
                "shape semantics read as an empty 'none' array; if it is a 0-d array that "
                "MXNet saved in legacy mode, its data follows and MXNet itself cannot load "
                "the file either. Load it with np_shape=True to read 0-d arrays.]",
                source=e.source, offset=e.offset) from None
        raise
    return (names if n_names else None), records


def _read_source(source, name: str | None) -> tuple[bytes | memoryview, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source, name or "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MXNetError(f"cannot read NDArray file {path!r}: {e.strerror or e}") from None
        return data, name or path
    if hasattr(source, "read"):
        return source.read(), name or getattr(source, "name", None) or "<stream>"
    raise TypeError(f"load_nd needs a path or bytes, got {type(source).__name__}")


def load_nd(source, *, np_shape: bool = False,
            name: str | None = None) -> tuple[list[str] | None, list[Record]]:
    """Load an MXNet NDArray file (``mx.nd.load``): ``(names or None, records)``.

    ``source`` is a path, a bytes-like object or a binary stream; ``name`` is how errors
    refer to it (default: the path, or ``'<bytes>'``). Like ``MXNDArrayLoad`` the content is
    sniffed: a zip archive is read as an MXNet 2.0 ``.npz`` (names = keys, sparse folders
    restored), a ``.npy`` as a single unnamed array; anything else as the list format. Names
    are ``None`` for a list saved without names.
    """
    buf, src = _read_source(source, name)
    head = bytes(buf[:4])
    if len(head) == 4:
        magic = struct.unpack("<I", head)[0]
        if magic in ZIP_MAGICS or magic == NPY_MAGIC:
            from . import npyio
            if magic == NPY_MAGIC:
                return None, [npyio.to_mxnet_record(npyio.read_npy(buf, name=src), src)]
            names, recs = npyio.read_npz(buf, name=src)
            return names, [npyio.to_mxnet_record(x, src) for x in recs]
    return _parse_list(buf, src, np_shape)


def loads_nd(data: bytes, *, np_shape: bool = False, name: str | None = None):
    """:func:`load_nd` for bytes (kept for symmetry with :func:`dumps_nd`)."""
    return load_nd(bytes(data), np_shape=np_shape, name=name)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _tshape(shape) -> bytes:
    return struct.pack(f"<i{len(shape)}q", len(shape), *shape)


def _as_dense(x, what: str) -> np.ndarray | BF16Array:
    if isinstance(x, BF16Array):
        return x
    if hasattr(x, "asnumpy") and not isinstance(x, np.ndarray):
        x = x.asnumpy()
    if not isinstance(x, (np.ndarray, np.generic)):
        raise TypeError(f"{what}: cannot save a {type(x).__name__} as an NDArray (give a numpy "
                        "array, BF16Array, SparseRecord or NoneRecord)")
    a = np.asarray(x)
    try:
        dt = _dt.as_dtype(a.dtype)
    except ValueError:
        raise MXNetError(f"{what}: dtype {a.dtype} has no MXNet type code") from None
    return _c_order(a, dt.np.newbyteorder("<"))


def _values_bytes(a) -> tuple[int, bytes]:
    if isinstance(a, BF16Array):
        return 12, a.tobytes()
    return _dt.as_dtype(a.dtype).code, a.tobytes()


def _record_bytes(x, np_shape: bool, what: str) -> bytes:
    magic = struct.pack("<I", V3_MAGIC if np_shape else V2_MAGIC)
    if x is None:
        x = NoneRecord()
    if isinstance(x, NoneRecord):
        code = _STYPE_CODES.get(x.stype)
        if code is None:
            raise MXNetError(f"{what}: unknown storage type {x.stype!r}")
        if np_shape and code != 0:
            raise MXNetError(f"{what}: only dense arrays can be saved with numpy shape "
                             "semantics")
        out = magic + struct.pack("<i", code)
        if code:
            out += _tshape(x.storage_shape or ())
        # "none" is ndim 0 for legacy loaders and an unknown (-1) ndim for numpy-shape ones
        return out + struct.pack("<i", -1 if np_shape else 0)
    if isinstance(x, SparseRecord):
        if np_shape:
            raise MXNetError(f"{what}: only dense arrays can be saved with numpy shape "
                             "semantics (MXNet refuses sparse records there too)")
        data = _as_dense(x.data, what)
        aux = list(x.aux())
        code, data_bytes = _values_bytes(data)
        parts = [magic, struct.pack("<i", _STYPE_CODES[x.stype]), _tshape(data.shape),
                 _tshape(x.shape), struct.pack("<ii", *_CPU), struct.pack("<i", code)]
        aux_bytes = []
        for k, a in enumerate(aux):
            a = _as_dense(a, f"{what} aux {k}")
            acode, ab = _values_bytes(a)
            parts += [struct.pack("<i", acode), _tshape(a.shape)]
            aux_bytes.append(ab)
        return b"".join(parts + [data_bytes] + aux_bytes)

    a = _as_dense(x, what)
    if not np_shape and a.ndim == 0:
        warnings.warn(f"{what}: a 0-d array saved with legacy shape semantics is written as "
                      "MXNet 1.9.1 writes it (ndim 0 plus its data), which legacy loaders, "
                      "MXNet's included, cannot read back; save with np_shape=True",
                      stacklevel=4)
    code, data_bytes = _values_bytes(a)
    return b"".join([magic, struct.pack("<i", 0), _tshape(a.shape),
                     struct.pack("<iii", *_CPU, code), data_bytes])


def dumps_nd(data, *, np_shape: bool = False) -> bytes:
    """The bytes :func:`save_nd` writes."""
    if isinstance(data, dict):
        keys = list(data.keys())
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"NDArray file keys must be str, got {type(k).__name__}")
        values = list(data.values())
    elif isinstance(data, (list, tuple)):
        keys, values = [], list(data)
    else:
        keys, values = [], [data]
    out = [struct.pack("<QQQ", LIST_MAGIC, 0, len(values))]
    for i, v in enumerate(values):
        label = f"array {keys[i]!r}" if keys else f"array {i}"
        out.append(_record_bytes(v, np_shape, label))
    out.append(struct.pack("<Q", len(keys)))
    for k in keys:
        b = k.encode("utf-8")
        out.append(struct.pack("<Q", len(b)) + b)
    return b"".join(out)


def save_nd(dest, data, *, np_shape: bool = False) -> bytes | None:
    """Save arrays as MXNet 1.9.1's ``mx.nd.save`` does.

    ``data`` is a list (saved without names), a dict (names written after the arrays, in
    dict order) or a single array. Records are V2 (legacy shape semantics) or, with
    ``np_shape=True``, V3. ``dest`` is a path, a binary stream, or ``None`` to get the bytes.
    """
    blob = dumps_nd(data, np_shape=np_shape)
    if dest is None:
        return blob
    if hasattr(dest, "write"):
        dest.write(blob)
        return None
    with open(os.fspath(dest), "wb") as f:
        f.write(blob)
    return None
