"""mxc.ir.formats: the NDArray list format, npy/npz and symbol JSON.

Fixtures are built byte by byte with ``struct``; the real MXNet 1.9.1 files in
``../shared/mxnet_cases`` are loaded and round-tripped byte-exactly when present.
"""
from __future__ import annotations

import io
import json
import random
import struct
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mxc.base import MXNetError
from mxc.ir.formats import (
    BF16Array,
    FormatError,
    NoneRecord,
    SparseRecord,
    dump_symbol_json,
    load_nd,
    parse_symbol_json,
    read_npy,
    read_npz,
    save_nd,
    write_npy,
    write_npz,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CASES = SHARED / "mxnet_cases"
NDFILES = CASES / "ndarray_files"
needs_cases = pytest.mark.skipif(not NDFILES.is_dir(), reason="../shared/mxnet_cases absent")

V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA

# code -> numpy dtype (bfloat16 handled separately)
CODES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8",
         6: "int64", 7: "bool", 8: "int16", 9: "uint16", 10: "uint32", 11: "uint64"}


# ------------------------------------------------------------------------------------------
# byte builders
# ------------------------------------------------------------------------------------------
def tshape(shape) -> bytes:
    return struct.pack(f"<i{len(shape)}q", len(shape), *shape)


def dense_rec(shape, code, data: bytes, magic=V2, ctx=(1, 0)) -> bytes:
    return (struct.pack("<Ii", magic, 0) + tshape(shape) + struct.pack("<iii", *ctx, code)
            + data)


def none_rec(magic=V2, ndim=0) -> bytes:
    return struct.pack("<Iii", magic, 0, ndim)


def v1_rec(shape, code, data: bytes) -> bytes:
    return struct.pack("<I", V1) + tshape(shape) + struct.pack("<iii", 1, 0, code) + data


def v0_rec(shape, code, data: bytes) -> bytes:
    return (struct.pack(f"<I{len(shape)}I", len(shape), *shape)
            + struct.pack("<iii", 1, 0, code) + data)


def sparse_rec(stype_code, sshape, shape, code, aux, data: bytes) -> bytes:
    """aux: list of (type_code, shape, bytes)."""
    out = struct.pack("<Ii", V2, stype_code) + tshape(sshape) + tshape(shape)
    out += struct.pack("<iii", 1, 0, code)
    for acode, ashape, _ in aux:
        out += struct.pack("<i", acode) + tshape(ashape)
    return out + data + b"".join(b for _, _, b in aux)


def list_file(records, names=None) -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(records)) + b"".join(records)
    names = names or []
    out += struct.pack("<Q", len(names))
    for n in names:
        b = n.encode("utf-8")
        out += struct.pack("<Q", len(b)) + b
    return out


def sample(dtype: str, shape) -> np.ndarray:
    n = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(n) % 3 == 0).reshape(shape)
    return (np.arange(n) * 7 - 5).astype(dtype).reshape(shape)


def load_quiet(data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_nd(data, **kw)


# ------------------------------------------------------------------------------------------
# the reference files written by MXNet 1.9.1
# ------------------------------------------------------------------------------------------
def _meta():
    return json.loads((NDFILES / "meta.json").read_text()) if NDFILES.is_dir() else {"files": {}}


@needs_cases
@pytest.mark.parametrize("fname", sorted(f for f in _meta()["files"]
                                         if f != "legacy_0d_unloadable.nd"))
def test_reference_files_load_exactly(fname):
    meta = _meta()["files"][fname]
    names, recs = load_nd(NDFILES / fname, np_shape=meta["np_shape_semantics"])
    keys = [e["key"] for e in meta["entries"]]
    assert names == (keys if meta["named"] else None)
    assert len(recs) == len(meta["entries"])
    for ent, rec in zip(meta["entries"], recs):
        exp = np.load(NDFILES / ent["file"])
        got = rec.todense() if isinstance(rec, SparseRecord) else rec
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.dtype(ent["dtype"]) == exp.dtype, ent["key"]
        assert got.shape == tuple(ent["shape"]) == exp.shape, ent["key"]
        assert got.tobytes() == exp.tobytes(), ent["key"]
    if fname == "sparse.nd":
        assert [r.stype for r in recs] == ["row_sparse", "csr"]


@needs_cases
@pytest.mark.parametrize("fname", sorted(f for f in _meta()["files"]
                                         if f != "legacy_0d_unloadable.nd"))
def test_reference_files_round_trip_byte_exact(fname):
    meta = _meta()["files"][fname]
    raw = (NDFILES / fname).read_bytes()
    assert len(raw) == meta["size_bytes"]
    if "hex" in meta:
        assert raw.hex() == meta["hex"]
    names, recs = load_nd(raw, np_shape=meta["np_shape_semantics"])
    data = dict(zip(names, recs)) if names is not None else recs
    assert save_nd(None, data, np_shape=meta["np_shape_semantics"]) == raw


@needs_cases
def test_legacy_0d_file():
    """MXNet cannot load it (ndim 0 = 'none' in legacy mode); np_shape=True reads the bytes."""
    meta = _meta()["files"]["legacy_0d_unloadable.nd"]
    path = NDFILES / "legacy_0d_unloadable.nd"
    raw = path.read_bytes()
    assert raw.hex() == meta["hex"]
    with pytest.raises(FormatError) as ei:
        load_nd(path)
    msg = str(ei.value)
    assert "legacy_0d_unloadable.nd" in msg and "byte" in msg and "np_shape=True" in msg
    names, recs = load_nd(path, np_shape=True)
    assert names == ["s"]
    (rec,) = recs
    assert rec.dtype == np.float32 and rec.shape == () and float(rec) == 2.25
    # saving it in legacy mode writes exactly what MXNet wrote, with a warning
    with pytest.warns(UserWarning, match="0-d"):
        assert save_nd(None, {"s": rec}) == raw


@needs_cases
def test_reference_params_round_trip():
    files = sorted(CASES.glob("*/*-0000.params"))
    assert files
    for f in files:
        raw = f.read_bytes()
        names, recs = load_nd(raw, name=str(f))
        assert names is None or all(n.startswith(("arg:", "aux:")) for n in names)
        assert save_nd(None, dict(zip(names, recs)) if names else recs) == raw, f


@needs_cases
def test_save_to_path_and_stream(tmp_path):
    names, recs = load_nd(NDFILES / "dict_legacy.nd")
    out = tmp_path / "x.params"
    assert save_nd(out, dict(zip(names, recs))) is None
    assert out.read_bytes() == (NDFILES / "dict_legacy.nd").read_bytes()
    buf = io.BytesIO()
    save_nd(buf, dict(zip(names, recs)))
    assert buf.getvalue() == out.read_bytes()


# ------------------------------------------------------------------------------------------
# synthetic records: every version, dtype, 0-d, empty, sparse
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", sorted(CODES))
@pytest.mark.parametrize("magic", [V2, V3])
def test_dense_every_dtype(code, magic):
    arr = sample(CODES[code], (2, 3))
    blob = list_file([dense_rec(arr.shape, code, arr.tobytes(), magic)], ["w"])
    names, (rec,) = load_nd(blob, np_shape=magic == V3)
    assert names == ["w"]
    assert rec.dtype == arr.dtype and rec.shape == arr.shape
    assert rec.tobytes() == arr.tobytes()
    assert rec.flags.c_contiguous and rec.flags.writeable
    assert save_nd(None, {"w": rec}, np_shape=magic == V3) == blob


@pytest.mark.parametrize("magic", [V2, V3])
def test_bfloat16_record(magic):
    f = np.array([[1.0, -2.5, 3.140625], [0.0, 65280.0, -0.015625]], np.float32)
    bits = (f.view(np.uint32) >> 16).astype("<u2")
    blob = list_file([dense_rec(f.shape, 12, bits.tobytes(), magic)])
    names, (rec,) = load_nd(blob, np_shape=magic == V3)
    assert names is None
    assert isinstance(rec, BF16Array) and rec.shape == (2, 3) and rec.dtype_code == 12
    assert rec.bits.dtype == np.uint16 and rec.tobytes() == bits.tobytes()
    np.testing.assert_array_equal(rec.to_float32(), f)
    assert save_nd(None, [rec], np_shape=magic == V3) == blob


def test_bfloat16_conversion_rounds_to_nearest_even():
    x = np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -9, np.inf, -0.0], np.float32)
    got = BF16Array.from_float32(x).to_float32()
    np.testing.assert_array_equal(got, [1.0, 1.0 + 2 ** -6, 1.0, np.inf, -0.0])
    assert np.isnan(BF16Array.from_float32(np.float32("nan")).to_float32())
    assert BF16Array.from_float32(np.float32(2.0)).shape == ()


def test_v1_and_v0_records():
    a = sample("float32", (2, 3))
    b = sample("int64", (4,))
    c = sample("float16", (3, 1))
    blob = list_file([v1_rec(a.shape, 0, a.tobytes()), v0_rec(b.shape, 6, b.tobytes()),
                      v1_rec(c.shape, 2, c.tobytes())])
    for np_shape in (False, True):
        names, recs = load_nd(blob, np_shape=np_shape)
        assert names is None
        for got, exp in zip(recs, (a, b, c)):
            assert got.dtype == exp.dtype and got.shape == exp.shape
            assert got.tobytes() == exp.tobytes()
    # saving writes the current (V2) layout
    assert save_nd(None, recs) == list_file([dense_rec(x.shape, code, x.tobytes())
                                             for x, code in ((a, 0), (b, 6), (c, 2))])


def test_v0_layout_of_mxnet_legacy_ndarray_v0():
    """tests/python/unittest/legacy_ndarray.v0: 6 float32 arrays of 128, 3,224 bytes."""
    arrays = [np.arange(128, dtype=np.float32) + i for i in range(6)]
    blob = list_file([v0_rec((128,), 0, a.tobytes()) for a in arrays])
    assert len(blob) == 3224
    assert blob[24:36] == bytes.fromhex("01000000 80000000 01000000".replace(" ", ""))
    names, recs = load_nd(blob)
    assert names is None and len(recs) == 6
    for got, exp in zip(recs, arrays):
        np.testing.assert_array_equal(got, exp)


def test_v0_and_v1_zero_dim_is_a_scalar():
    """MXNet 1.9.1's LegacyLoad: only an unknown shape is 'none'; ndim 0 is one element."""
    blob = list_file([v0_rec((), 0, struct.pack("<f", 1.5)),
                      v1_rec((), 4, struct.pack("<i", -3))])
    _, (a, b) = load_nd(blob)
    assert a.shape == () and float(a) == 1.5
    assert b.shape == () and b.dtype == np.int32 and int(b) == -3


def test_zero_d_and_empty_arrays():
    s = np.array(3.5, np.float32)
    e1 = np.zeros((0, 3), np.float32)
    e2 = np.zeros((2, 0, 3), np.int32)
    blob3 = list_file([dense_rec((), 0, s.tobytes(), V3), dense_rec((0, 3), 0, b"", V3),
                       dense_rec((2, 0, 3), 4, b"", V3)], ["s", "e1", "e2"])
    names, recs = load_nd(blob3, np_shape=True)
    assert [r.shape for r in recs] == [(), (0, 3), (2, 0, 3)]
    assert float(recs[0]) == 3.5
    assert save_nd(None, dict(zip(names, recs)), np_shape=True) == blob3
    blob2 = list_file([dense_rec((0, 3), 0, b""), dense_rec((2, 0, 3), 4, b"")])
    _, recs = load_nd(blob2)
    assert [r.shape for r in recs] == [(0, 3), (2, 0, 3)]
    assert save_nd(None, [e1, e2]) == blob2


def test_none_records():
    """Legacy ndim 0 and numpy-shape unknown shapes are MXNet's 'none' array."""
    a = sample("float32", (2,))
    blob2 = list_file([none_rec(V2, 0), dense_rec((2,), 0, a.tobytes())])
    _, (n, x) = load_nd(blob2)
    assert n == NoneRecord() and x.tobytes() == a.tobytes()
    assert save_nd(None, [NoneRecord(), a]) == blob2
    assert save_nd(None, [None, a]) == blob2
    unknown_dim = struct.pack("<Iii2q", V3, 0, 2, 3, -1)
    blob3 = list_file([none_rec(V3, -1), unknown_dim, dense_rec((2,), 0, a.tobytes(), V3)])
    _, (n1, n2, x) = load_nd(blob3, np_shape=True)
    assert n1 == n2 == NoneRecord() and x.tobytes() == a.tobytes()
    assert save_nd(None, [NoneRecord(), a], np_shape=True) == list_file(
        [none_rec(V3, -1), dense_rec((2,), 0, a.tobytes(), V3)])
    # a sparse none record keeps its storage type and storage shape
    sp_none = struct.pack("<Ii", V2, 2) + tshape((0,)) + tshape(())
    _, (sn,) = load_nd(list_file([sp_none]))
    assert sn == NoneRecord("csr", (0,))
    assert save_nd(None, [sn]) == list_file([sp_none])


def test_device_is_ignored():
    a = sample("float32", (3,))
    blob = list_file([dense_rec((3,), 0, a.tobytes(), ctx=(2, 1))])
    _, (got,) = load_nd(blob)
    np.testing.assert_array_equal(got, a)
    assert save_nd(None, [got]) == list_file([dense_rec((3,), 0, a.tobytes())])


def test_csr_and_row_sparse_records():
    dense = np.array([[0, 0, 0], [1, 2, 3], [0, 0, 0], [4, 0, 6]], np.float32)
    rsp_vals = dense[[1, 3]]
    rsp_idx = np.array([1, 3], np.int64)
    rsp = sparse_rec(1, (2, 3), (4, 3), 0, [(6, (2,), rsp_idx.tobytes())], rsp_vals.tobytes())
    csr_vals = np.array([1, 2, 3, 4, 6], np.float32)
    indptr = np.array([0, 0, 3, 3, 5], np.int64)
    indices = np.array([0, 1, 2, 0, 2], np.int64)
    csr = sparse_rec(2, (5,), (4, 3), 0, [(6, (5,), indptr.tobytes()),
                                          (6, (5,), indices.tobytes())], csr_vals.tobytes())
    blob = list_file([rsp, csr], ["rsp", "csr"])
    names, (r, c) = load_nd(blob)
    assert names == ["rsp", "csr"]
    assert r.stype == "row_sparse" and r.shape == (4, 3) and r.storage_shape == (2, 3)
    assert c.stype == "csr" and c.shape == (4, 3) and c.storage_shape == (5,)
    np.testing.assert_array_equal(r.indices, rsp_idx)
    np.testing.assert_array_equal(c.indptr, indptr)
    np.testing.assert_array_equal(r.todense(), dense)
    np.testing.assert_array_equal(c.todense(), dense)
    assert save_nd(None, {"rsp": r, "csr": c}) == blob
    with pytest.raises(FormatError, match="storage type"):
        load_nd(blob, np_shape=True)
    with pytest.raises(MXNetError, match="dense"):
        save_nd(None, [r], np_shape=True)


def test_sparse_without_stored_values():
    """An all-zero sparse array: storage shape (0, ...) and empty aux."""
    rsp = sparse_rec(1, (0, 3), (4, 3), 0, [(6, (0,), b"")], b"")
    csr = sparse_rec(2, (0,), (4, 3), 0, [(6, (5,), np.zeros(5, np.int64).tobytes()),
                                          (6, (0,), b"")], b"")
    blob = list_file([rsp, csr])
    _, (r, c) = load_nd(blob)
    np.testing.assert_array_equal(r.todense(), np.zeros((4, 3), np.float32))
    np.testing.assert_array_equal(c.todense(), np.zeros((4, 3), np.float32))
    assert save_nd(None, [r, c]) == blob


def test_v3_refused_without_np_shape():
    blob = list_file([dense_rec((), 0, b"\0\0\0\0", V3)], ["x"])
    with pytest.raises(FormatError, match="np_shape=True") as ei:
        load_nd(blob)
    assert "<bytes>" in str(ei.value) and "byte 24" in str(ei.value)


def test_save_rejects_what_mxnet_cannot_hold():
    with pytest.raises(MXNetError, match="type code"):
        save_nd(None, [np.zeros(2, np.complex64)])
    with pytest.raises(TypeError):
        save_nd(None, [[1, 2]])
    with pytest.raises(TypeError):
        save_nd(None, {1: np.zeros(2)})


def test_save_normalises_layout_and_byte_order():
    a = np.arange(6, dtype=">f4").reshape(2, 3).T
    blob = save_nd(None, [a])
    _, (b,) = load_nd(blob)
    assert b.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(b, a)


# ------------------------------------------------------------------------------------------
# malformed input
# ------------------------------------------------------------------------------------------
def _valid_files():
    a = sample("float32", (2, 3))
    h = sample("float16", (3,))
    bits = np.arange(4, dtype="<u2")
    rsp = sparse_rec(1, (1, 2), (3, 2), 0, [(6, (1,), np.int64(2).tobytes())],
                     np.ones(2, np.float32).tobytes())
    files = {
        "mixed": (list_file([dense_rec(a.shape, 0, a.tobytes()), v1_rec((3,), 2, h.tobytes()),
                             v0_rec((2, 2), 12, bits.tobytes()), rsp, none_rec()],
                            ["a", "h", "bf", "rsp", "n"]), False),
        "npshape": (list_file([dense_rec((), 0, b"\0\0\x80?", V3),
                               dense_rec((2, 3), 0, a.tobytes(), V3)], ["é", "b"]), True),
    }
    if NDFILES.is_dir():
        files["list.nd"] = ((NDFILES / "list.nd").read_bytes(), False)
        files["sparse.nd"] = ((NDFILES / "sparse.nd").read_bytes(), False)
        files["dict_npshape.nd"] = ((NDFILES / "dict_npshape.nd").read_bytes(), True)
    return files


@pytest.mark.parametrize("which", sorted(_valid_files()))
def test_every_prefix_raises_format_error(which):
    blob, np_shape = _valid_files()[which]
    load_nd(blob, np_shape=np_shape)
    for n in range(len(blob)):
        with pytest.raises(FormatError) as ei:
            load_quiet(blob[:n], np_shape=np_shape, name=which)
        assert str(ei.value).startswith(which + ": "), n


def test_random_corruption_raises_only_format_error():
    rng = random.Random(1234)
    for blob, np_shape in _valid_files().values():
        for _ in range(300):
            b = bytearray(blob)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            try:
                load_quiet(bytes(b), np_shape=np_shape)
            except FormatError:
                pass


def _expect_fast_error(blob, match, np_shape=False):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FormatError, match=match) as ei:
            load_nd(blob, np_shape=np_shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 4 * len(blob) + (1 << 20), peak
    assert "<bytes>: byte " in str(ei.value)
    return ei.value


def test_corrupted_headers_fail_fast_without_allocating():
    ok = dense_rec((2,), 0, b"\0" * 8)
    _expect_fast_error(b"\x13\x01" + b"\0" * 30, "header 0x112")
    _expect_fast_error(struct.pack("<QQQ", 0x112, 0, 1 << 60) + ok, "array count")
    _expect_fast_error(list_file([struct.pack("<Iii", V2, 0, 0x7FFFFFFF) + b"\0" * 64]),
                       "ndim 2147483647")
    _expect_fast_error(list_file([struct.pack("<Iii", V2, 0, -5)]), "ndim >= -1")
    _expect_fast_error(list_file([struct.pack("<Iiiqq", V2, 0, 2, 1 << 40, 1 << 40)
                                  + struct.pack("<iii", 1, 0, 0)]), "bytes of record 0 data")
    _expect_fast_error(list_file([struct.pack("<Iiiqq", V2, 0, 2, 1 << 62, 1 << 62)
                                  + struct.pack("<iii", 1, 0, 0)]), "bytes of record 0 data")
    _expect_fast_error(list_file([struct.pack("<Iiiq", V2, 0, 1, -7)]), "dim 0 >= 0")
    _expect_fast_error(list_file([struct.pack("<Iiiq", V2, 0, 1, -1)]), "dim 0 >= 0")
    _expect_fast_error(list_file([dense_rec((2,), 99, b"\0" * 8)]), "dtype code.*99")
    _expect_fast_error(list_file([struct.pack("<Ii", V2, 7) + tshape((1,))]), "storage type")
    _expect_fast_error(list_file([struct.pack("<II", 0x10000000, 1)]), "not a record magic")
    _expect_fast_error(list_file([ok], ["a", "b"]), "0 or 1 names")
    _expect_fast_error(list_file([ok])[:-8] + struct.pack("<QQ", 1, 1 << 62), "name 0 bytes")
    bad_utf8 = list_file([ok])[:-8] + struct.pack("<QQ", 1, 2) + b"\xff\xfe"
    _expect_fast_error(bad_utf8, "UTF-8")
    aux_bad = sparse_rec(1, (1, 2), (3, 2), 0, [(42, (1,), b"\0" * 8)], b"\0" * 8)
    _expect_fast_error(list_file([aux_bad]), "aux 0 dtype")


def test_file_errors_name_the_path(tmp_path):
    p = tmp_path / "broken.params"
    p.write_bytes(list_file([dense_rec((4,), 0, b"\0" * 8)])[:-8])   # 8 of 16 data bytes
    with pytest.raises(FormatError) as ei:
        load_nd(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: byte 56: expected 16 bytes of record 0 data"), msg
    assert ei.value.offset == 56 and ei.value.source == str(p)
    with pytest.raises(MXNetError):
        load_nd(tmp_path / "missing.params")


# ------------------------------------------------------------------------------------------
# npy / npz
# ------------------------------------------------------------------------------------------
def npy_bytes(descr: str, shape, data: bytes, fortran=False) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def test_npy_bfloat16_descrs():
    bits = np.array([0x3F80, 0xC020, 0x0000], "<u2")
    for descr in ("'<b2'", "[('bfloat16', '<u2')]"):
        rec = read_npy(npy_bytes(descr, (3,), bits.tobytes()))
        assert isinstance(rec, BF16Array) and rec.tobytes() == bits.tobytes()
        np.testing.assert_array_equal(rec.to_float32(), [1.0, -2.5, 0.0])
    blob = write_npy(None, BF16Array(bits))
    assert b"'descr': '<b2'" in blob and (len(blob) - bits.nbytes) % 64 == 0
    assert read_npy(blob) == BF16Array(bits)
    names, (rec,) = load_nd(blob)
    assert names is None and rec == BF16Array(bits)


def test_npy_sniffed_and_fortran_order_honoured():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = npy_bytes("'<f4'", (2, 3), np.asfortranarray(a).tobytes(order="F"), fortran=True)
    names, (rec,) = load_nd(blob)
    assert names is None and rec.flags.c_contiguous
    np.testing.assert_array_equal(rec, a)
    assert write_npy(None, a) == _np_save(a)
    np.testing.assert_array_equal(read_npy(_np_save(a.T)), a.T)


def _np_save(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_npy_malformed():
    a = np.arange(4, dtype=np.int32)
    good = _np_save(a)
    for n in range(len(good)):
        with pytest.raises(FormatError):
            read_npy(good[:n])
    with pytest.raises(FormatError, match="Python objects"):
        read_npy(npy_bytes("'|O'", (2,), b"\0" * 16))
    with pytest.raises(FormatError, match="header dict"):
        read_npy(npy_bytes("__import__('os')", (2,), b""))
    with pytest.raises(FormatError, match="bytes of npy data"):
        read_npy(npy_bytes("'<f8'", (1 << 40, 1 << 20), b""))
    with pytest.raises(FormatError, match="no MXNet equivalent"):
        load_nd(_np_save(np.zeros(2, np.complex64)))


def test_npz_dense_and_sparse_folders():
    dense = np.array([[0, 0, 0], [1, 2, 3], [0, 0, 0], [4, 0, 6]], np.float32)
    csr = SparseRecord("csr", (4, 3), np.array([1, 2, 3, 4, 6], np.float32),
                       np.array([0, 1, 2, 0, 2], np.int64), np.array([0, 0, 3, 3, 5], np.int64))
    rsp = SparseRecord("row_sparse", (4, 3), dense[[1, 3]], np.array([1, 3], np.int64))
    bf = BF16Array(np.arange(3, dtype=np.uint16))
    blob = write_npz(None, {"w": dense, "s/csr": csr, "r": rsp, "bf": bf,
                            "z": np.array(2.0, np.float64)})
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert "s/csr/indptr.npy" in zf.namelist() and "r/format.npy" in zf.namelist()
    names, recs = load_nd(blob)
    got = dict(zip(names, recs))
    assert sorted(names) == ["bf", "r", "s/csr", "w", "z"]
    np.testing.assert_array_equal(got["w"], dense)
    np.testing.assert_array_equal(got["s/csr"].todense(), dense)
    np.testing.assert_array_equal(got["r"].todense(), dense)
    assert got["bf"] == bf and got["z"].shape == ()
    # numpy's own npz
    buf = io.BytesIO()
    np.savez(buf, a=dense, b=np.arange(3))
    names, recs = read_npz(buf.getvalue())
    assert names == ["a", "b"]
    np.testing.assert_array_equal(recs[0], dense)


def test_npz_scipy_layout_and_mxnet_format_member():
    """scipy.sparse.save_npz puts the csr members at top level; MXNet writes a malformed
    header for format.npy and readers look only at the bytes after it."""
    members = {
        "data.npy": _np_save(np.array([5.0], np.float64)),
        "indices.npy": _np_save(np.array([1], np.int32)),
        "indptr.npy": _np_save(np.array([0, 1, 1], np.int32)),
        "shape.npy": _np_save(np.array([2, 2], np.int64)),
        "format.npy": npy_bytes("'|s3{'descr': '<i8'", (), b"csr"),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    names, (rec,) = read_npz(buf.getvalue())
    assert names == [""] and rec.stype == "csr"
    np.testing.assert_array_equal(rec.todense(), [[0, 5], [0, 0]])


def test_npz_malformed():
    blob = write_npz(None, {"a": np.arange(10.0)})
    for n in range(0, len(blob), 7):
        try:
            load_nd(blob[:n])
        except FormatError:
            pass
    with pytest.raises(FormatError, match="zip"):
        load_nd(b"PK\x03\x04" + b"\0" * 40)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k in ("data", "row", "col", "format", "shape"):
            zf.writestr(f"m/{k}.npy", _np_save(np.zeros(1)))
    with pytest.raises(FormatError, match="COO"):
        read_npz(buf.getvalue())


# ------------------------------------------------------------------------------------------
# symbol JSON
# ------------------------------------------------------------------------------------------
SYMBOL_FILES = sorted(CASES.glob("*/*-symbol.json")) if CASES.is_dir() else []


@needs_cases
@pytest.mark.parametrize("path", SYMBOL_FILES, ids=lambda p: p.parent.name)
def test_case_symbol_json_round_trips_byte_exact(path):
    text = path.read_text(encoding="utf-8")
    g = parse_symbol_json(text, source=str(path))
    assert g["attrs"] == {"mxnet_version": ["int", 10901]}
    assert len(g["node_row_ptr"]) == len(g["nodes"]) + 1
    assert all(len(e) == 3 for n in g["nodes"] for e in n["inputs"])
    assert dump_symbol_json(g) == text
    assert parse_symbol_json(text.encode("utf-8"), source=str(path)) == g


def _sym(nodes, heads, version=None, **extra):
    d = {"nodes": nodes, "arg_nodes": [i for i, n in enumerate(nodes) if n["op"] == "null"],
         "heads": heads}
    if version is not None:
        d["attrs"] = {"mxnet_version": ["int", version]}
    d.update(extra)
    return json.dumps(d)


def var(name, **attrs):
    d = {"op": "null", "name": name, "inputs": []}
    if attrs:
        d["attrs"] = attrs
    return d


def _input_names(op, attrs):
    return {"FullyConnected": ["data", "weight", "bias"],
            "BatchNorm": ["data", "gamma", "beta", "moving_mean", "moving_var"]}.get(op)


def test_legacy_spellings_accepted():
    text = _sym([
        var("x"),
        {"op": "null", "name": "w", "param": {}, "inputs": [], "backward_source_id": -1},
        {"op": "FullyConnected", "name": "fc", "attr": {"num_hidden": "4"},
         "param": {"no_bias": "True", "num_hidden": "9"}, "inputs": [[0, 0], [1, 0]],
         "backward_source_id": -1},
    ], [[2, 0]])
    g = parse_symbol_json(text)
    fc = g["nodes"][2]
    assert fc["attrs"] == {"num_hidden": "4", "no_bias": "True"}
    assert fc["inputs"] == [[0, 0, 0], [1, 0, 0]] and g["heads"] == [[2, 0, 0]]
    assert "node_row_ptr" not in g and g["attrs"] == {}
    out = dump_symbol_json(g)
    assert '"node_row_ptr": [0, 1, 2, 3]' in out and '"mxnet_version": ["int", 10901]' in out
    assert '"inputs": [[0, 0, 0], [1, 0, 0]]' in out and '"param"' not in out
    assert parse_symbol_json(out)["nodes"] == g["nodes"]
    # "attrs" and "attr": the later one in the text wins
    g2 = parse_symbol_json('{"nodes": [{"op": "null", "name": "a", "attr": {"k": "1"}, '
                           '"attrs": {"j": "2"}, "inputs": []}], "arg_nodes": [0], '
                           '"heads": [[0, 0, 0]]}')
    assert g2["nodes"][0]["attrs"] == {"j": "2"}


def test_hidden_keys_upgraded_only_for_old_versions():
    nodes = [var("x"), var("w", lr_mult="2", ctx_group="dev1", __wd_mult__="0"),
             {"op": "FullyConnected", "name": "fc", "inputs": [[0, 0], [1, 0]],
              "attrs": {"num_hidden": "3", "no_bias": "True", "weight_wd_mult": "0.5",
                        "lr_mult_x": "7", "mirror_stage": "True"}}]
    g = parse_symbol_json(_sym(nodes, [[2, 0]], version=10600), op_input_names=_input_names)
    assert g["nodes"][1]["attrs"] == {"__lr_mult__": "2", "__ctx_group__": "dev1",
                                      "__wd_mult__": "0.5"}
    assert g["nodes"][2]["attrs"] == {"num_hidden": "3", "no_bias": "True", "lr_mult_x": "7",
                                      "__mirror_stage__": "True"}
    # without the op's input names the suffix form stays on the op
    g = parse_symbol_json(_sym(nodes, [[2, 0]]))
    assert g["nodes"][2]["attrs"]["weight_wd_mult"] == "0.5"
    assert g["nodes"][1]["attrs"]["__wd_mult__"] == "0"
    # a current file is left alone
    g = parse_symbol_json(_sym(nodes, [[2, 0]], version=10901), op_input_names=_input_names)
    assert g["nodes"][1]["attrs"] == {"lr_mult": "2", "ctx_group": "dev1", "__wd_mult__": "0"}


def test_pre_090_aux_states_created():
    nodes = [var("data"), var("gamma"), var("beta"),
             {"op": "BatchNorm", "name": "bn", "attrs": {"eps": "0.001"},
              "inputs": [[0, 0], [1, 0], [2, 0]]},
             {"op": "Activation", "name": "relu", "attrs": {"act_type": "relu"},
              "inputs": [[3, 0]]}]
    text = _sym(nodes, [[4, 0], [3, 0]], version=800, node_row_ptr=[0, 1, 2, 3, 6, 7])
    g = parse_symbol_json(text, op_input_names=_input_names)
    names = [n["name"] for n in g["nodes"]]
    assert names == ["data", "gamma", "beta", "bn_moving_mean", "bn_moving_var", "bn", "relu"]
    bn = g["nodes"][5]
    assert bn["inputs"] == [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]]
    assert g["nodes"][6]["inputs"] == [[5, 0, 0]]
    assert g["heads"] == [[6, 0, 0], [5, 0, 0]]
    assert g["arg_nodes"] == [0, 1, 2, 3, 4]
    assert g["node_row_ptr"] == [0, 1, 2, 3, 4, 5, 8, 9]
    # the new variables copy the node's attributes; 0.9.4 adds the initialisers
    assert g["nodes"][3]["attrs"] == {"eps": "0.001", "__init__": '["zero", {}]'}
    assert g["nodes"][4]["attrs"] == {"eps": "0.001", "__init__": '["one", {}]'}
    # unknown ops (no input names) are left as they are
    g = parse_symbol_json(text)
    assert len(g["nodes"]) == 5


def test_094_initialisers_and_095_argmax_axis():
    nodes = [var("d"), var("g"), var("b"), var("mm"), var("mv", __init__='["zero", {}]'),
             {"op": "BatchNorm", "name": "bn", "inputs": [[i, 0] for i in range(5)]},
             {"op": "argmax", "name": "am", "attrs": {"axis": "-1"}, "inputs": [[5, 0]]},
             {"op": "argmin", "name": "an", "attrs": {"axis": "1"}, "inputs": [[5, 0]]}]
    g = parse_symbol_json(_sym(nodes, [[6, 0], [7, 0]], version=903))
    assert g["nodes"][3]["attrs"] == {"__init__": '["zero", {}]'}
    assert g["nodes"][4]["attrs"] == {"__init__": '["zero", {}]'}   # already set: kept
    assert "__init__" not in g["nodes"][1]["attrs"]
    assert g["nodes"][6]["attrs"] == {} and g["nodes"][7]["attrs"] == {"axis": "1"}
    g = parse_symbol_json(_sym(nodes, [[6, 0]], version=905))
    assert g["nodes"][3]["attrs"] == {} and g["nodes"][6]["attrs"] == {"axis": "-1"}


@pytest.mark.parametrize("text, match", [
    ('{"nodes": [', "invalid JSON at line 1"),
    ('[1, 2]', "expected a JSON object"),
    ('{"nodes": [], "heads": []}', "missing the required key 'arg_nodes'"),
    (_sym([{"op": "null", "inputs": []}], []), "node 0 is missing the required key 'name'"),
    (_sym([var("a"), {"op": "relu", "name": "r", "inputs": [[1, 0, 0]]}], [[1, 0]]),
     r"node 1 \('r'\) input 0 refers to node 1, which is not an earlier node"),
    (_sym([var("a"), {"op": "relu", "name": "r", "inputs": [[7, 0, 0]]}], [[1, 0]]),
     r"node 1 \('r'\) input 0 refers to node 7.*cycle or a dangling"),
    (_sym([var("a"), {"op": "relu", "name": "r", "inputs": [[0, 0, 0, 0]]}], [[1, 0]]),
     r"node 1 \('r'\) input 0 must be"),
    (_sym([var("a"), {"op": "relu", "name": "r", "inputs": [[0, 1, 0]]}], [[1, 0]]),
     r"output 1 of variable node 0 \('a'\)"),
    (_sym([var("a")], [[3, 0, 0]]), "head 0 refers to node 3, but there are 1 nodes"),
    (_sym([var("a")], [[0, -1, 0]]), "head 0 has a field outside"),
    (_sym([var("a")], [["0", 0]]), "head 0 must be"),
    (_sym([{"op": "null", "name": "a", "attrs": {"k": 3}, "inputs": []}], [[0, 0]]),
     r"node 0 \('a'\) 'attrs' value of 'k' must be a string"),
    (('{"nodes": [{"op": "null", "name": "a", "inputs": []}, {"op": "relu", "name": "r", '
      '"inputs": [[0, 0]]}], "arg_nodes": [1], "heads": [[1, 0]]}'),
     r"'arg_nodes' lists node 1 \('r'\), which is not a variable"),
    (_sym([var("a"), {"op": "relu", "name": "r", "inputs": [[0, 0]], "control_deps": [1]}],
          [[1, 0]]), "control dependency 1 is not an earlier node"),
    (_sym([var("a")], [[0, 0]], attrs={"mxnet_version": 10901}), "typed pair"),
])
def test_symbol_json_errors(text, match):
    with pytest.raises(FormatError, match=match) as ei:
        parse_symbol_json(text, source="m-symbol.json")
    assert str(ei.value).startswith("m-symbol.json: ")


def test_inconsistent_row_ptr_is_dropped():
    """MXNet ignores node_row_ptr on load, so a wrong one is no reason to refuse a file."""
    text = _sym([var("a")], [[0, 0]], node_row_ptr=[0, 1, 2])
    with pytest.warns(UserWarning, match="node_row_ptr"):
        g = parse_symbol_json(text, source="m-symbol.json")
    assert "node_row_ptr" not in g
    with pytest.raises(FormatError, match="list of integers"):
        parse_symbol_json(_sym([var("a")], [[0, 0]], node_row_ptr="x"))


def test_dump_layout_details():
    nodes = [var(f"x{i}") for i in range(11)]
    nodes.append({"op": "add_n", "name": "sum", "attrs": {"num_args": "11"},
                  "inputs": [[i, 0, 0] for i in range(11)], "control_deps": [0]})
    nodes.append({"op": "_foreach", "name": "loop", "attrs": {"b": "1", "a": 'say "hi"\n'},
                  "inputs": [[11, 0, 0]],
                  "subgraphs": [{"nodes": [var("s")], "arg_nodes": [0],
                                 "heads": [[0, 0, 0]], "attrs": {}}]})
    g = parse_symbol_json(_sym(nodes, [[12, 0]], version=10901))
    g["attrs"]["is_np_shape"] = ["int", 1]
    out = dump_symbol_json(g)
    # more than 10 entries: one per line; attrs sorted, escaped; control deps and subgraphs
    assert '"inputs": [\n        [0, 0, 0], \n        [1, 0, 0], ' in out
    assert '"attrs": {\n        "a": "say \\"hi\\"\\n", \n        "b": "1"\n      }' in out
    assert '"control_deps": [0]' in out
    assert ('"subgraphs": [\n        {\n          "nodes": [\n            {\n'
            '              "op": "null", \n              "name": "s", \n'
            '              "inputs": []\n            }\n          ], \n'
            '          "arg_nodes": [0], \n          "node_row_ptr": [0, 1], \n'
            '          "heads": [[0, 0, 0]]\n        }\n      ]') in out
    assert out.endswith('"attrs": {\n    "is_np_shape": ["int", 1], \n'
                        '    "mxnet_version": ["int", 10901]\n  }\n}')
    assert '"arg_nodes": [\n    0, \n    1, ' in out
    again = parse_symbol_json(out)
    assert [n["attrs"] for n in again["nodes"]] == [n["attrs"] for n in g["nodes"]]
    assert again["nodes"][12]["subgraphs"][0]["node_row_ptr"] == [0, 1]
    assert dump_symbol_json(again) == out


def test_dump_row_ptr_from_callback():
    nodes = [var("x"), {"op": "SliceChannel", "name": "sp", "attrs": {"num_outputs": "3"},
                        "inputs": [[0, 0]]}]
    g = parse_symbol_json(_sym(nodes, [[1, 0]]))
    assert '"node_row_ptr": [0, 1, 2]' in dump_symbol_json(g)
    out = dump_symbol_json(g, num_outputs=lambda n: int(n["attrs"].get("num_outputs", 1)))
    assert '"node_row_ptr": [0, 1, 4]' in out
