"""MXNet's file formats: ``.params``/``.nd`` NDArray lists, ``.npy``/``.npz`` and symbol JSON.

* :mod:`.ndfile` - the binary NDArray list (``mx.nd.save``/``load``), every record version;
* :mod:`.npyio` - npy/npz, including MXNet 2.0's sparse folders and bfloat16 descr;
* :mod:`.symbol_json` - ``-symbol.json`` at the dict level (the Graph converts that dict);
* :mod:`.errors` - :class:`FormatError`, raised for every malformed input.
"""
from .errors import FormatError
from .ndfile import (
                     BF16Array,
                     NoneRecord,
                     Record,
                     SparseRecord,
                     dumps_nd,
                     load_nd,
                     loads_nd,
                     save_nd,
)
from .npyio import read_npy, read_npz, write_npy, write_npz
from .symbol_json import (
                     HIDDEN_KEYS,
                     MXNET_VERSION,
                     dump_symbol_json,
                     make_version,
                     parse_symbol_json,
)

__all__ = [
                     "HIDDEN_KEYS",
                     "MXNET_VERSION",
                     "BF16Array",
                     "FormatError",
                     "NoneRecord",
                     "Record",
                     "SparseRecord",
                     "dump_symbol_json",
                     "dumps_nd",
                     "load_nd",
                     "loads_nd",
                     "make_version",
                     "parse_symbol_json",
                     "read_npy",
                     "read_npz",
                     "save_nd",
                     "write_npy",
                     "write_npz",
]
