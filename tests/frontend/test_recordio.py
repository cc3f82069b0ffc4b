"""mx.recordio: dmlc RecordIO framing (alignment, multi-part records around the magic word),
indexed files, IRHeader pack/unpack, pickling, corrupted files, and byte-exactness with the
files real MXNet 1.9.1 wrote (shared mxnet_cases/recordio)."""
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from mxc.base import MXNetError
from mxc.frontend import recordio

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
REC_CASE = CASES / "recordio"
MAGIC = struct.pack("<I", 0xCED7230A)


def _lrec(cflag, length):
    return struct.pack("<II", 0xCED7230A, (cflag << 29) | length)


# --------------------------------------------------------------------------------------------
# framing
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [b"", b"a", b"ab", b"abc", b"abcd", b"abcde", bytes(range(256))])
def test_single_chunk_layout(tmp_path, payload):
    p = tmp_path / "x.rec"
    w = recordio.MXRecordIO(str(p), "w")
    w.write(payload)
    w.close()
    raw = p.read_bytes()
    pad = (-len(payload)) % 4
    assert raw == _lrec(0, len(payload)) + payload + b"\0" * pad
    r = recordio.MXRecordIO(str(p), "r")
    assert r.read() == payload
    assert r.read() is None
    r.close()


def test_magic_in_payload_is_split_into_parts(tmp_path):
    # magic at aligned offsets 0, 8 and 12; an unaligned one at 17 stays in the data
    payload = MAGIC + b"abcd" + MAGIC + MAGIC + b"x" + MAGIC + b"yz"
    expect = (_lrec(1, 0)                     # first part: empty (magic at offset 0)
              + _lrec(2, 4) + b"abcd"         # middle part up to the magic at 8
              + _lrec(2, 0)                   # middle part between the magics at 8 and 12
              + _lrec(3, 7) + b"x" + MAGIC + b"yz" + b"\0")   # last part, padded
    assert recordio.encode_record(payload) == expect
    p = tmp_path / "m.rec"
    with recordio.MXRecordIO(str(p), "w") as w:
        w.write(payload)
        w.write(b"tail")
    assert p.read_bytes() == expect + _lrec(0, 4) + b"tail"
    r = recordio.MXRecordIO(str(p), "r")
    assert r.read() == payload
    assert r.read() == b"tail"
    assert r.read() is None
    r.reset()
    assert r.read() == payload


def test_magic_at_the_end(tmp_path):
    payload = b"abcd" + MAGIC
    assert recordio.encode_record(payload) == _lrec(1, 4) + b"abcd" + _lrec(3, 0)
    p = tmp_path / "e.rec"
    with recordio.MXRecordIO(str(p), "w") as w:
        w.write(payload)
    assert recordio.MXRecordIO(str(p), "r").read() == payload


def test_sequential_roundtrip_and_str(tmp_path):
    p = tmp_path / "s.rec"
    w = recordio.MXRecordIO(str(p), "w")
    for i in range(5):
        w.write(f"record_{i}")         # str is written as utf-8, like MXNet's py2 API
    w.close()
    r = recordio.MXRecordIO(str(p), "r")
    assert [r.read() for _ in range(6)] == [b"record_%d" % i for i in range(5)] + [None]
    with pytest.raises(ValueError):
        recordio.MXRecordIO(str(p), "x")


def test_indexed_random_access_and_tell(tmp_path):
    idx, rec = tmp_path / "t.idx", tmp_path / "t.rec"
    w = recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    assert w.tell() == 0
    tells = []
    for i in range(5):
        w.write_idx(i, b"record_%d" % i)
        tells.append(w.tell())
    w.close()
    assert tells == [16, 32, 48, 64, 80]          # MXNet's documented example
    assert idx.read_text() == "".join(f"{i}\t{16 * i}\n" for i in range(5))
    r = recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    assert r.keys == list(range(5))
    assert r.read_idx(3) == b"record_3"
    assert r.read_idx(0) == b"record_0"
    assert r.read() == b"record_1"                # sequential read goes on after a seek
    with pytest.raises(KeyError):
        r.read_idx(42)
    r.close()
    rs = recordio.MXIndexedRecordIO(str(idx), str(rec), "r", key_type=str)
    assert rs.keys == [str(i) for i in range(5)] and rs.read_idx("4") == b"record_4"


def test_pickle_reopens(tmp_path):
    idx, rec = tmp_path / "p.idx", tmp_path / "p.rec"
    w = recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    for i in range(3):
        w.write_idx(i, b"r%d" % i)
    w.close()
    r = recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    assert r.read_idx(1) == b"r1"
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.is_open and r2.read_idx(2) == b"r2" and r2.keys == [0, 1, 2]
    r.close()
    r3 = pickle.loads(pickle.dumps(r))     # a closed handle stays closed
    assert not r3.is_open


def test_corrupted_files(tmp_path):
    good = recordio.encode_record(b"hello world!") + recordio.encode_record(b"second")
    bad_magic = tmp_path / "bad.rec"
    bad_magic.write_bytes(good[:20] + b"\x00\x00\x00\x00" + good[24:])
    r = recordio.MXRecordIO(str(bad_magic), "r")
    assert r.read() == b"hello world!"
    with pytest.raises(MXNetError, match=r"bad\.rec.*offset 20.*magic"):
        r.read()
    trunc = tmp_path / "trunc.rec"
    trunc.write_bytes(good[:-3])
    r = recordio.MXRecordIO(str(trunc), "r")
    r.read()
    with pytest.raises(MXNetError, match=r"trunc\.rec.*offset 20.*truncated"):
        r.read()
    head = tmp_path / "head.rec"
    head.write_bytes(good[:5])
    with pytest.raises(MXNetError, match=r"head\.rec.*offset 0"):
        recordio.MXRecordIO(str(head), "r").read()
    multi = tmp_path / "multi.rec"
    multi.write_bytes(recordio.encode_record(b"ab" * 2 + MAGIC + b"cd")[:8 + 4])
    with pytest.raises(MXNetError, match=r"multi\.rec.*offset 12"):
        recordio.MXRecordIO(str(multi), "r").read()
    with pytest.raises(MXNetError, match="cannot open"):
        recordio.MXRecordIO(str(tmp_path / "missing.rec"), "r")


# --------------------------------------------------------------------------------------------
# IRHeader
# --------------------------------------------------------------------------------------------
def test_pack_unpack_scalar_and_vector_labels():
    s = recordio.pack(recordio.IRHeader(7, 3.0, 42, 1), b"payload")
    assert len(s) == 24 + 7
    assert s[:24] == struct.pack("<IfQQ", 0, 3.0, 42, 1)   # flag forced to 0 for a scalar
    h, body = recordio.unpack(s)
    assert h == recordio.IRHeader(0, 3.0, 42, 1) and body == b"payload"
    s = recordio.pack((0, [1.5, 2.5, -1], 9, 0), b"xy")
    assert len(s) == 24 + 12 + 2
    h, body = recordio.unpack(s)
    assert h.flag == 3 and h.label.dtype == np.float32 and body == b"xy"
    np.testing.assert_array_equal(h.label, np.array([1.5, 2.5, -1], np.float32))
    with pytest.raises(MXNetError):
        recordio.unpack(b"short")


def test_pack_img_without_image_library():
    try:
        import cv2  # noqa: F401
        pytest.skip("cv2 installed")
    except ImportError:
        pass
    try:
        import PIL  # noqa: F401
        pytest.skip("PIL installed")
    except ImportError:
        pass
    with pytest.raises(MXNetError, match="image library"):
        recordio.pack_img(recordio.IRHeader(0, 1.0, 0, 0), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(MXNetError, match="image library"):
        recordio.unpack_img(recordio.pack(recordio.IRHeader(0, 1.0, 0, 0), b"\xff\xd8"))


# --------------------------------------------------------------------------------------------
# real MXNet files
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not REC_CASE.is_dir(), reason="shared mxnet_cases absent")
def test_mxnet_case_byte_exact(tmp_path):
    meta = json.loads((REC_CASE / "meta.json").read_text())
    r = recordio.MXIndexedRecordIO(str(REC_CASE / "data.idx"), str(REC_CASE / "data.rec"), "r")
    assert r.keys == [m["idx"] for m in meta["records"]]
    raw = {}
    for m in meta["records"]:
        s = r.read_idx(m["idx"])
        assert len(s) == m["packed_len"]
        h, payload = recordio.unpack(s)
        assert h.id == m["id"] and h.id2 == 0
        assert payload.hex() == m["payload_hex"]
        if isinstance(m["label"], list):
            assert h.flag == len(m["label"])
            np.testing.assert_array_equal(h.label, np.array(m["label"], np.float32))
        else:
            assert h.flag == 0 and h.label == np.float32(m["label"])
        # pack() rebuilds MXNet's record bit for bit
        assert recordio.pack(recordio.IRHeader(0, m["label"], m["id"], 0),
                             bytes.fromhex(m["payload_hex"])) == s
        raw[m["idx"]] = s
    r.close()
    # sequential reading sees the same records in file order
    seq = recordio.MXRecordIO(str(REC_CASE / "data.rec"), "r")
    assert [seq.read() for _ in range(len(raw))] == [raw[k] for k in sorted(raw)]
    assert seq.read() is None
    # writing them back gives identical .rec and .idx files
    w = recordio.MXIndexedRecordIO(str(tmp_path / "out.idx"), str(tmp_path / "out.rec"), "w")
    for k in sorted(raw):
        w.write_idx(k, raw[k])
    w.close()
    assert (tmp_path / "out.rec").read_bytes() == (REC_CASE / "data.rec").read_bytes()
    assert (tmp_path / "out.idx").read_bytes() == (REC_CASE / "data.idx").read_bytes()
