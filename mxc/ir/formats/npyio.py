"""``.npy`` / ``.npz`` reading and writing, including MXNet 2.0's conventions.

numpy's own ``np.lib.format`` writes ordinary arrays and turns descr strings into dtypes;
this module adds what numpy cannot do or should not be trusted with here:

* bfloat16: MXNet writes descr ``'<b2'`` (numpy rejects it: "data type '<b2' not
  understood"); some MXNet 2.0 builds wrote ``[('bfloat16', '<u2')]``. Both are read as a
  :class:`~.ndfile.BF16Array`; bfloat16 is written as ``'<b2'``.
* untrusted input: the header is parsed with ``ast.literal_eval`` (never pickle), object
  dtypes are refused, and the data size is checked against the bytes present before
  anything is allocated. Every problem raises :class:`FormatError` with the file, offset
  and what was expected.
* MXNet 2.0 ``npz`` (``src/serialization/cnpy.cc``): dense arrays are ``<key>.npy``; a folder
  ``<key>/`` holding exactly ``{data,indices,indptr,format,shape}.npy`` is a csr array
  (scipy's ``save_npz`` layout), exactly ``{data,indices,format,shape}.npy`` a row_sparse
  one; any other folder holds dense arrays named ``<folder>/<file>``. ``fortran_order`` is
  honoured for dense arrays.
"""
from __future__ import annotations

import ast
import io
import os
import struct
import zipfile
import zlib

import numpy as np

from .. import dtypes as _dt
from .errors import FormatError
from .ndfile import BF16Array, NoneRecord, SparseRecord, _c_order

__all__ = [
    "MAX_HEADER",
    "NPY_PREFIX",
    "read_npy",
    "read_npz",
    "to_mxnet_record",
    "write_npy",
    "write_npz",
]

NPY_PREFIX = b"\x93NUMPY"
MAX_HEADER = 100_000          # bytes of header dict we are willing to literal_eval
_BF16_DESCRS = ("<b2", "|b2", "b2")
_CSR_FILES = frozenset({"data.npy", "indices.npy", "indptr.npy", "format.npy", "shape.npy"})
_RSP_FILES = frozenset({"data.npy", "indices.npy", "format.npy", "shape.npy"})
_COO_FILES = frozenset({"data.npy", "row.npy", "col.npy", "format.npy", "shape.npy"})
_DIA_FILES = frozenset({"data.npy", "offsets.npy", "format.npy", "shape.npy"})


def _fail(source: str, offset: int | None, what: str) -> FormatError:
    return FormatError(what, source=source, offset=offset)


def _is_bf16_descr(descr) -> bool:
    if isinstance(descr, str):
        return descr in _BF16_DESCRS
    # [('bfloat16', '<u2')] as some MXNet 2.0 builds wrote it
    return (isinstance(descr, list) and len(descr) == 1 and isinstance(descr[0], tuple)
            and len(descr[0]) == 2 and descr[0][0] == "bfloat16")


def _parse_header(buf: memoryview, source: str, base: int = 0,
                  strict: bool = True) -> tuple[dict | None, int]:
    """Parse an npy preamble at ``buf[0:]``; returns (header dict or None, data offset).

    ``strict=False`` returns ``None`` for a header dict that does not parse (MXNet writes a
    malformed one for sparse ``format.npy``) instead of raising.
    """
    if len(buf) < 10:
        raise _fail(source, base, f"expected a 10-byte npy preamble but the data has "
                    f"{len(buf)} bytes")
    if bytes(buf[:6]) != NPY_PREFIX:
        raise _fail(source, base, f"expected npy magic b'\\x93NUMPY' but found "
                    f"{bytes(buf[:6])!r}")
    major, minor = buf[6], buf[7]
    if major not in (1, 2, 3) or minor != 0:
        raise _fail(source, base + 6, f"expected npy version 1.0, 2.0 or 3.0 but found "
                    f"{major}.{minor}")
    if major == 1:
        hlen, start = struct.unpack_from("<H", buf, 8)[0], 10
    else:
        if len(buf) < 12:
            raise _fail(source, base + 8, "expected a 4-byte npy header length (truncated)")
        hlen, start = struct.unpack_from("<I", buf, 8)[0], 12
    if hlen > len(buf) - start:
        raise _fail(source, base + 8, f"npy header length {hlen} exceeds the {len(buf) - start} "
                    "bytes left")
    if hlen > MAX_HEADER:
        raise _fail(source, base + 8, f"npy header of {hlen} bytes is larger than the "
                    f"{MAX_HEADER} bytes allowed")
    raw = bytes(buf[start:start + hlen])
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        d = ast.literal_eval(text)
    except Exception as e:  # noqa: BLE001 - SyntaxError, ValueError, RecursionError ...
        if not strict:
            return None, start + hlen
        raise _fail(source, base + start, f"expected an npy header dict but could not parse "
                    f"it ({type(e).__name__})") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        if not strict:
            return None, start + hlen
        raise _fail(source, base + start, "expected an npy header dict with exactly the keys "
                    f"descr, fortran_order, shape; found {d!r:.200}")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
        raise _fail(source, base + start, f"expected a tuple of non-negative ints as npy "
                    f"shape, found {shape!r:.200}")
    if not isinstance(d["fortran_order"], bool):
        raise _fail(source, base + start, "expected a bool fortran_order in the npy header")
    return d, start + hlen


def _descr_dtype(descr, source: str, offset: int) -> np.dtype | None:
    """numpy dtype for ``descr``; None means bfloat16."""
    if _is_bf16_descr(descr):
        return None
    try:
        dt = np.lib.format.descr_to_dtype(descr)
    except Exception:  # noqa: BLE001 - numpy raises several types for a bad descr
        raise _fail(source, offset, f"expected a numpy dtype descr but found {descr!r:.200}") \
            from None
    if dt.hasobject:
        raise _fail(source, offset, f"npy dtype {dt} holds Python objects, which are not "
                    "loaded (pickle is never used)")
    return dt


def _parse_npy(buf, source: str, base: int = 0):
    mv = memoryview(buf).cast("B")
    d, data_at = _parse_header(mv, source, base)
    dt = _descr_dtype(d["descr"], source, base + 10)
    itemsize = 2 if dt is None else dt.itemsize
    shape = d["shape"]
    count = 1
    for s in shape:
        count *= s
    nbytes = count * itemsize
    left = len(mv) - data_at
    if nbytes > left:
        raise _fail(source, base + data_at, f"expected {nbytes} bytes of npy data (shape "
                    f"{shape}) but only {left} bytes are left")
    arr = np.frombuffer(mv, dtype=np.dtype("<u2") if dt is None else dt, count=count,
                        offset=data_at).copy()
    try:
        if d["fortran_order"]:
            arr = _c_order(arr.reshape(shape[::-1]).transpose(), arr.dtype)
        else:
            arr = arr.reshape(shape)
    except ValueError:  # more dims than numpy allows, or dims whose product overflows
        raise _fail(source, base + data_at, f"npy shape {shape} cannot be represented") \
            from None
    return BF16Array(arr) if dt is None else arr


def _read_bytes(source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as f:
            return f.read(), name or path
    if hasattr(source, "read"):
        return source.read(), name or getattr(source, "name", None) or "<stream>"
    raise TypeError(f"expected a path or bytes, got {type(source).__name__}")


def read_npy(source, *, name: str | None = None):
    """Read one ``.npy`` (path or bytes): a C-ordered numpy array or a BF16Array."""
    buf, src = _read_bytes(source, name)
    return _parse_npy(buf, src)


def _npy_bytes(arr) -> bytes:
    if isinstance(arr, BF16Array):
        out = io.BytesIO()
        np.lib.format.write_array(out, arr.bits.astype("<u2"), allow_pickle=False)
        blob = out.getvalue()
        # same length as "'<u2'", so numpy's padding stays right
        return blob.replace(b"'descr': '<u2'", b"'descr': '<b2'", 1)
    a = np.asarray(arr)
    if a.dtype.hasobject:
        raise TypeError("cannot write an object array to npy")
    out = io.BytesIO()
    np.lib.format.write_array(out, a, allow_pickle=False)
    return out.getvalue()


def write_npy(dest, arr) -> bytes | None:
    """Write ``arr`` (numpy array or BF16Array) as ``.npy``; ``dest=None`` returns the bytes."""
    blob = _npy_bytes(arr)
    if dest is None:
        return blob
    if hasattr(dest, "write"):
        dest.write(blob)
        return None
    with open(os.fspath(dest), "wb") as f:
        f.write(blob)
    return None


# --------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
               EOFError, zlib.error, OSError, ValueError, KeyError, struct.error)


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    where = f"{source}[{info.filename}]"
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > 1100 * max(info.compress_size, 1) + 4096:
        raise _fail(where, None, f"member claims {info.file_size} bytes from "
                    f"{info.compress_size} compressed bytes (corrupt or a zip bomb)")
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except _ZIP_ERRORS as e:
        raise _fail(where, None, f"cannot read zip member ({type(e).__name__}: {e})") from None
    if len(data) != info.file_size:
        raise _fail(where, None, f"expected {info.file_size} bytes in the zip member, found "
                    f"{len(data)}")
    return data


def _sparse_format(data: bytes, where: str) -> str:
    d, at = _parse_header(memoryview(data), where, strict=False)
    raw = data[at:]
    if d is not None and isinstance(d.get("descr"), str) and "U" in d["descr"]:
        try:
            return raw.decode("utf-32-le").rstrip("\0")
        except UnicodeDecodeError:
            pass
    return raw.rstrip(b"\0").decode("latin1")


def _sparse(zf, infos: dict, dirname: str, stype: str, source: str) -> SparseRecord:
    def load(fname):
        info = infos[fname]
        where = f"{source}[{info.filename}]"
        blob = _member(zf, info, source)
        d, _ = _parse_header(memoryview(blob), where)
        if d["fortran_order"]:
            raise _fail(where, None, "fortran-ordered data in a sparse array is not supported "
                        "(MXNet refuses it too)")
        return _parse_npy(blob, where), where

    shape, where = load("shape.npy")
    if isinstance(shape, BF16Array) or shape.dtype != np.int64 or shape.ndim != 1:
        raise _fail(where, None, "expected a 1-D int64 shape array for a sparse array")
    if np.any(shape < 0):
        raise _fail(where, None, f"expected non-negative sparse dims, found {shape.tolist()}")
    data, _ = load("data.npy")
    aux = {}
    for nm in (("indptr", "indices") if stype == "csr" else ("indices",)):
        a, where = load(f"{nm}.npy")
        if isinstance(a, BF16Array) or a.dtype.kind not in "iu":
            raise _fail(where, None, f"expected an integer {nm} array")
        aux[nm] = a
    return SparseRecord(stype, tuple(int(s) for s in shape), data, aux["indices"],
                        aux.get("indptr"))


def read_npz(source, *, name: str | None = None) -> tuple[list[str], list]:
    """Read an MXNet 2.0 / numpy ``.npz``: ``(names, records)`` in archive order.

    Records are numpy arrays, BF16Arrays and, for sparse folders, SparseRecords.
    """
    buf, src = _read_bytes(source, name)
    try:
        zf = zipfile.ZipFile(io.BytesIO(buf))
        infos = zf.infolist()
    except _ZIP_ERRORS as e:
        raise _fail(src, None, f"expected a zip (npz) archive but it cannot be read "
                    f"({type(e).__name__}: {e})") from None
    groups: dict[str, dict[str, zipfile.ZipInfo]] = {}
    for info in infos:
        fn = info.filename
        if not fn.endswith(".npy"):
            continue
        cut = fn.rfind("/")
        dirname, base = (fn[:cut + 1], fn[cut + 1:]) if cut >= 0 else ("", fn)
        files = groups.setdefault(dirname, {})
        if base in files:
            raise _fail(src, None, f"duplicate npz member {fn!r}")
        files[base] = info
    names: list[str] = []
    records: list = []
    for dirname, files in groups.items():
        key = dirname[:-1] if dirname else ""
        content = frozenset(files)
        if content in (_CSR_FILES, _RSP_FILES):
            want = "csr" if content == _CSR_FILES else "row_sparse"
            fmt = _sparse_format(_member(zf, files["format.npy"], src),
                                 f"{src}[{files['format.npy'].filename}]")
            if fmt != want:
                raise _fail(f"{src}[{files['format.npy'].filename}]", None,
                            f"loading the {fmt!r} sparse format is not supported "
                            f"(expected {want!r} for these member files)")
            records.append(_sparse(zf, files, dirname, want, src))
            names.append(key)
        elif content in (_COO_FILES, _DIA_FILES):
            kind = "COO" if content == _COO_FILES else "DIA"
            raise _fail(src, None, f"npz folder {dirname!r}: loading the {kind} sparse format "
                        "is not supported")
        else:
            for base, info in files.items():
                data = _member(zf, info, src)
                records.append(_parse_npy(data, f"{src}[{info.filename}]"))
                names.append(info.filename[:-4])
    return names, records


def write_npz(dest, data: dict, *, compress: bool = False) -> bytes | None:
    """Write ``{name: array}`` as MXNet 2.0's ``npx.savez`` lays it out.

    Dense arrays become ``<name>.npy``; a SparseRecord becomes the folder ``<name>/`` with
    ``data``, (``indptr``,) ``indices``, ``shape`` (int64) and ``format`` members.
    ``dest=None`` returns the bytes.
    """
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression=method) as zf:
        for key, val in data.items():
            if not isinstance(key, str):
                raise TypeError(f"npz keys must be str, got {type(key).__name__}")
            if isinstance(val, SparseRecord):
                members = [("data", val.data)]
                if val.stype == "csr":
                    members.append(("indptr", val.indptr))
                members += [("indices", val.indices),
                            ("shape", np.asarray(val.shape, dtype="<i8")),
                            ("format", np.array(val.stype.encode("ascii")))]
                for m, arr in members:
                    zf.writestr(f"{key}/{m}.npy", _npy_bytes(arr))
            elif isinstance(val, NoneRecord) or val is None:
                raise TypeError(f"npz entry {key!r}: a 'none' array cannot be stored in npz")
            else:
                zf.writestr(f"{key}.npy", _npy_bytes(val))
    blob = out.getvalue()
    if dest is None:
        return blob
    if hasattr(dest, "write"):
        dest.write(blob)
        return None
    with open(os.fspath(dest), "wb") as f:
        f.write(blob)
    return None


def to_mxnet_record(x, source: str = "<npz>"):
    """Check a loaded npy/npz array has an MXNet dtype; little-endian, C-contiguous."""
    if isinstance(x, SparseRecord):
        x.data = to_mxnet_record(x.data, source)
        x.indices = to_mxnet_record(x.indices, source)
        if x.indptr is not None:
            x.indptr = to_mxnet_record(x.indptr, source)
        return x
    if isinstance(x, (BF16Array, NoneRecord)):
        return x
    try:
        dt = _dt.as_dtype(x.dtype)
    except ValueError:
        raise _fail(source, None, f"array dtype {x.dtype} has no MXNet equivalent") from None
    return _c_order(x, dt.np.newbyteorder("<"))
