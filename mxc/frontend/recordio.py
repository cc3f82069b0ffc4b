"""``mx.recordio``: MXNet's RecordIO files (dmlc-core's record format) in pure Python.

File format (dmlc-core ``recordio.h``), little endian, every chunk 4-byte aligned::

    [magic 0xced7230a : u32][lrec : u32][payload : len bytes][zero padding to 4 bytes]

``lrec`` holds a continuation flag in its upper 3 bits and the chunk length in the lower 29.
A record whose payload contains the magic word at a 4-byte aligned offset is split there
into several chunks (flag 1 = first, 2 = middle, 3 = last; 0 = a whole record), the magic
word itself being dropped from the data and re-inserted by the reader, so a reader that
resynchronises on the magic word never mistakes payload bytes for a record head.

``MXIndexedRecordIO`` keeps a text index beside the ``.rec`` file: one ``key\\tbyte_offset``
line per record. ``pack``/``unpack`` prepend/strip MXNet's image-record header
``IRHeader(flag, label, id, id2)`` (``struct 'IfQQ'``; a vector label is stored as ``flag``
float32 values after the header).
"""
from __future__ import annotations

import contextlib
import numbers
import os
import struct
from collections import namedtuple
from multiprocessing import current_process

import numpy as np

from ..base import MXNetError

__all__ = [
    "IRHeader",
    "MXIndexedRecordIO",
    "MXRecordIO",
    "pack",
    "pack_img",
    "unpack",
    "unpack_img",
]

#: dmlc RecordIO magic word
kMagic = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", kMagic)
_HEAD = struct.Struct("<II")
_LEN_MASK = (1 << 29) - 1


def _encode_lrec(cflag: int, length: int) -> int:
    return (cflag << 29) | length


def _decode_flag(lrec: int) -> int:
    return (lrec >> 29) & 7


def _decode_length(lrec: int) -> int:
    return lrec & _LEN_MASK


def _to_bytes(buf) -> bytes:
    if isinstance(buf, str):
        return buf.encode("utf-8")
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return bytes(buf)
    if isinstance(buf, np.ndarray):
        return buf.tobytes()
    raise TypeError(f"RecordIO can only write bytes, got {type(buf).__name__}")


def encode_record(buf) -> bytes:
    """The on-disk bytes of one record holding ``buf`` (chunks split at the magic word)."""
    data = _to_bytes(buf)
    n = len(data)
    if n >= (1 << 29):
        raise MXNetError("RecordIO only accepts records of less than 2^29 bytes")
    out = []
    dptr = 0
    lower_align = (n >> 2) << 2
    # the writer looks for the magic word only at 4-byte aligned payload offsets
    i = data.find(_MAGIC_BYTES)
    while 0 <= i < lower_align:
        if i % 4 == 0:
            out.append(_HEAD.pack(kMagic, _encode_lrec(1 if dptr == 0 else 2, i - dptr)))
            out.append(data[dptr:i])
            dptr = i + 4
            i = data.find(_MAGIC_BYTES, dptr)
        else:
            i = data.find(_MAGIC_BYTES, i + 1)
    out.append(_HEAD.pack(kMagic, _encode_lrec(3 if dptr != 0 else 0, n - dptr)))
    out.append(data[dptr:])
    pad = (-n) % 4
    if pad:
        out.append(b"\x00" * pad)
    return b"".join(out)


def _strip_file_uri(uri) -> str:
    if isinstance(uri, bytes):
        uri = uri.decode("utf-8")
    uri = os.fspath(uri)
    return uri.removeprefix("file://")


class MXRecordIO:
    """Sequential reader/writer of a RecordIO file (``flag`` 'r' or 'w').

    >>> rec = mx.recordio.MXRecordIO('tmp.rec', 'w')
    >>> rec.write(b'record_0'); rec.close()
    >>> mx.recordio.MXRecordIO('tmp.rec', 'r').read()
    b'record_0'
    """

    def __init__(self, uri, flag):
        self.uri = _strip_file_uri(uri)
        self.flag = flag
        self.pid = None
        self.is_open = False
        self.writable = None
        self._f = None
        self.open()

    # -- lifecycle ----------------------------------------------------------------------
    def open(self):
        """Open the file: 'w' truncates it, 'r' reads from the first record."""
        if self.flag == "w":
            mode, self.writable = "wb", True
        elif self.flag == "r":
            mode, self.writable = "rb", False
        else:
            raise ValueError(f"Invalid flag {self.flag}")
        try:
            self._f = open(self.uri, mode)  # noqa: SIM115 - held open across calls
        except OSError as e:
            raise MXNetError(f"RecordIO: cannot open '{self.uri}' for "
                             f"{'writing' if self.writable else 'reading'}: {e}") from None
        self._eos = False
        self.pid = current_process().pid
        self.is_open = True

    def close(self):
        """Close the file (idempotent)."""
        if not getattr(self, "is_open", False):
            return
        try:
            self._f.close()
        finally:
            self._f = None
            self.is_open = False
            self.pid = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reset(self):
        """Back to the first record ('r'), or truncate the file to empty ('w')."""
        self.close()
        self.open()

    # -- pickling (MXNet: the file handle is dropped, the file re-opened on load) --------
    def __getstate__(self):
        is_open = self.is_open
        self.close()
        d = dict(self.__dict__)
        d["is_open"] = is_open
        d.pop("_f", None)
        d.pop("_eos", None)
        return d

    def __setstate__(self, d):
        self.__dict__ = d
        is_open = d["is_open"]
        self.is_open = False
        self._f = None
        if is_open:
            self.open()

    def _check_pid(self, allow_reset=False):
        """A handle opened in one process must not be used by a forked one."""
        if self.pid != current_process().pid:
            if allow_reset:
                self.reset()
            else:
                raise RuntimeError("Forbidden operation in multiple processes")

    def _check_open(self):
        if not self.is_open:
            raise MXNetError(f"RecordIO file '{self.uri}' is closed")

    # -- records ------------------------------------------------------------------------
    def write(self, buf):
        """Append one record (bytes)."""
        assert self.writable
        self._check_open()
        self._check_pid(allow_reset=False)
        self._f.write(encode_record(buf))

    def read(self):
        """The next record as bytes, or ``None`` at the end of the file."""
        assert not self.writable
        self._check_open()
        self._check_pid(allow_reset=False)
        return self._next_record()

    def _corrupt(self, offset, what):
        return MXNetError(f"Invalid RecordIO file '{self.uri}' at byte offset {offset}: {what}")

    def _next_record(self):
        if self._eos:
            return None
        f = self._f
        parts = []
        first = True
        while True:
            start = f.tell()
            head = f.read(8)
            if not head:
                if first:
                    self._eos = True
                    return None
                raise self._corrupt(start, "file ends inside a multi-part record")
            if len(head) != 8:
                raise self._corrupt(start, f"truncated record head ({len(head)} of 8 bytes)")
            magic, lrec = _HEAD.unpack(head)
            if magic != kMagic:
                raise self._corrupt(start, f"bad magic 0x{magic:08x} (expected 0x{kMagic:08x})")
            cflag = _decode_flag(lrec)
            length = _decode_length(lrec)
            if cflag > 3:
                raise self._corrupt(start, f"bad continuation flag {cflag}")
            if first and cflag not in (0, 1):
                raise self._corrupt(start, f"record starts with continuation flag {cflag}")
            if not first and cflag not in (2, 3):
                raise self._corrupt(start, f"continuation chunk has flag {cflag}")
            upper = (length + 3) & ~3
            body = f.read(upper)
            if len(body) != upper:
                raise self._corrupt(start, f"truncated record: {length} payload bytes declared, "
                                           f"{max(len(body), 0)} present")
            parts.append(body[:length])
            first = False
            if cflag in (0, 3):
                break
            parts.append(_MAGIC_BYTES)
        return b"".join(parts)

    def _seek(self, pos):
        self._f.seek(pos)
        self._eos = False

    def _tell(self):
        return self._f.tell()


class MXIndexedRecordIO(MXRecordIO):
    """A RecordIO file with a ``key\\toffset`` index file for random access.

    >>> rec = mx.recordio.MXIndexedRecordIO('tmp.idx', 'tmp.rec', 'w')
    >>> for i in range(5):
    ...     rec.write_idx(i, b'record_%d' % i)
    >>> rec.close()
    >>> mx.recordio.MXIndexedRecordIO('tmp.idx', 'tmp.rec', 'r').read_idx(3)
    b'record_3'
    """

    def __init__(self, idx_path, uri, flag, key_type=int):
        self.idx_path = os.fspath(idx_path)
        self.idx = {}
        self.keys = []
        self.key_type = key_type
        self.fidx = None
        super().__init__(uri, flag)

    def open(self):
        super().open()
        self.idx = {}
        self.keys = []
        try:
            self.fidx = open(self.idx_path, self.flag)  # noqa: SIM115
        except OSError as e:
            super().close()
            raise MXNetError(f"RecordIO: cannot open index file '{self.idx_path}': {e}") from None
        if not self.writable:
            for lineno, line in enumerate(iter(self.fidx.readline, ""), 1):
                line = line.strip()
                if not line:
                    continue
                fields = line.split("\t")
                try:
                    key = self.key_type(fields[0])
                    self.idx[key] = int(fields[1])
                except (IndexError, ValueError):
                    raise MXNetError(f"Invalid RecordIO index file '{self.idx_path}' line "
                                     f"{lineno}: {line!r}") from None
                self.keys.append(key)

    def close(self):
        if not getattr(self, "is_open", False):
            return
        super().close()
        if self.fidx is not None:
            self.fidx.close()

    def __getstate__(self):
        d = super().__getstate__()
        d["fidx"] = None
        return d

    def seek(self, idx):
        """Move the read head to the record of key ``idx``."""
        assert not self.writable
        self._check_pid(allow_reset=True)
        self._check_open()
        try:
            pos = self.idx[idx]
        except KeyError:
            raise KeyError(idx) from None
        self._seek(pos)

    def tell(self):
        """The byte offset the next record will be written at."""
        assert self.writable
        self._check_open()
        return self._tell()

    def read_idx(self, idx):
        """The record of key ``idx``."""
        self.seek(idx)
        return self.read()

    def write_idx(self, idx, buf):
        """Append a record under key ``idx`` (written to the index as ``key\\toffset``)."""
        key = self.key_type(idx)
        pos = self.tell()
        self.write(buf)
        self.fidx.write(f"{key!s}\t{pos:d}\n")
        self.idx[key] = pos
        self.keys.append(key)


IRHeader = namedtuple("HEADER", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """Header of an image record: ``flag`` (number of label floats stored after
the header when the label is a vector, else 0), ``label`` (float or float array), ``id`` and
``id2`` (the id's higher bits, normally 0)."""

_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)


def pack(header, s):
    """Prepend an :data:`IRHeader` (and a vector label) to the bytes ``s``."""
    header = IRHeader(*header)
    s = _to_bytes(s)
    if isinstance(header.label, numbers.Number):
        header = header._replace(flag=0)
    else:
        label = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=label.size, label=0)
        s = label.tobytes() + s
    return struct.pack(_IR_FORMAT, *header) + s


def unpack(s):
    """Split a packed record into ``(IRHeader, payload bytes)``."""
    s = _to_bytes(s)
    if len(s) < _IR_SIZE:
        raise MXNetError(f"unpack: a record of {len(s)} bytes is shorter than the "
                         f"{_IR_SIZE}-byte IRHeader")
    header = IRHeader(*struct.unpack(_IR_FORMAT, s[:_IR_SIZE]))
    s = s[_IR_SIZE:]
    if header.flag > 0:
        if len(s) < header.flag * 4:
            raise MXNetError(f"unpack: the header declares {header.flag} label floats but only "
                             f"{len(s)} bytes follow it")
        header = header._replace(label=np.frombuffer(s, np.float32, header.flag).copy())
        s = s[header.flag * 4:]
    return header, s


def _image_backend():
    try:
        import cv2
        return "cv2", cv2
    except ImportError:
        pass
    try:
        from PIL import Image
        return "pil", Image
    except ImportError:
        pass
    raise MXNetError("pack_img/unpack_img need an image library: install opencv-python "
                     "(cv2) or Pillow")


def unpack_img(s, iscolor=-1):
    """Unpack a record into ``(IRHeader, image as a numpy array)`` (decoded by cv2 or PIL;
    like cv2, color images come back in BGR order)."""
    header, s = unpack(s)
    kind, lib = _image_backend()
    buf = np.frombuffer(s, dtype=np.uint8)
    if kind == "cv2":
        img = lib.imdecode(buf, iscolor)
        if img is None:
            raise MXNetError("unpack_img: cannot decode the image")
        return header, img
    import io
    im = lib.open(io.BytesIO(s))
    if iscolor == 0:
        return header, np.asarray(im.convert("L"))
    if iscolor > 0 or im.mode not in ("L", "LA", "I", "I;16", "F"):
        arr = np.asarray(im.convert("RGB"))
        return header, np.ascontiguousarray(arr[:, :, ::-1])
    return header, np.asarray(im)


def pack_img(header, img, quality=95, img_fmt=".jpg"):
    """Encode the numpy image ``img`` (BGR for color, as with cv2) and pack it with
    ``header``. ``quality`` is the JPEG quality (1-100) or the PNG compression (0-9)."""
    kind, lib = _image_backend()
    fmt = img_fmt.upper()
    if kind == "cv2":
        params = None
        if fmt in (".JPG", ".JPEG"):
            params = [lib.IMWRITE_JPEG_QUALITY, quality]
        elif fmt == ".PNG":
            params = [lib.IMWRITE_PNG_COMPRESSION, quality]
        ret, buf = lib.imencode(img_fmt, img, params)
        if not ret:
            raise MXNetError("pack_img: failed to encode the image")
        return pack(header, buf.tobytes())
    import io
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    im = lib.fromarray(np.ascontiguousarray(arr))
    out = io.BytesIO()
    if fmt in (".JPG", ".JPEG"):
        im.save(out, format="JPEG", quality=quality)
    elif fmt == ".PNG":
        im.save(out, format="PNG", compress_level=quality)
    else:
        im.save(out, format=fmt.lstrip("."))
    return pack(header, out.getvalue())
