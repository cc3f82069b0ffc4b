"""``mx.gluon.utils``: MXNet 1.x's Gluon helpers.

Splitting a batch across devices (``split_data``, ``split_and_load``), global-norm gradient
clipping, file checksums, and ``download`` (which raises: mxc runs without network access, so
only files already on disk are returned). Also the small private helpers Block and Parameter
share (``HookHandle``, ``_indent``, ``_brief_print_list``, ``shape_is_known``).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict

import numpy as np

from ..base import MXNetError

__all__ = ["HookHandle", "check_sha1", "clip_global_norm", "download", "replace_file",
           "shape_is_known", "split_and_load", "split_data"]


def _nd():
    from ..frontend import ndarray
    return ndarray


def split_data(data, num_slice: int, batch_axis: int = 0, even_split: bool = True) -> list:
    """Split an NDArray into ``num_slice`` slices along ``batch_axis`` (the first
    ``size % num_slice`` slices get one extra element when ``even_split`` is False)."""
    nd = _nd()
    size = data.shape[batch_axis]
    if even_split and size % num_slice != 0:
        raise ValueError(
            f"data with shape {data.shape} cannot be evenly split into {num_slice} slices "
            f"along axis {batch_axis}. Use a batch size that's multiple of {num_slice} or set "
            "even_split=False to allow uneven partitioning of data.")
    if num_slice > size:
        raise ValueError(f"Too many slices for data with shape {data.shape}. Arguments are "
                         f"num_slice={num_slice} and batch_axis={batch_axis}.")
    n_each, extras = divmod(size, num_slice)
    sizes = [0] + extras * [n_each + 1] + (num_slice - extras) * [n_each]
    points = np.cumsum(sizes)
    if num_slice == 1:
        return [data]
    if batch_axis == 0:
        return [data[int(points[i]):int(points[i + 1])] for i in range(num_slice)]
    return [nd.slice_axis(data, axis=batch_axis, begin=int(points[i]), end=int(points[i + 1]))
            for i in range(num_slice)]


def split_and_load(data, ctx_list, batch_axis: int = 0, even_split: bool = True) -> list:
    """Split ``data`` along ``batch_axis`` and load each slice onto one context of
    ``ctx_list``."""
    nd = _nd()
    if not isinstance(data, nd.NDArray):
        data = nd.array(data, ctx=ctx_list[0])
    if len(ctx_list) == 1:
        return [data.as_in_context(ctx_list[0])]
    slices = split_data(data, len(ctx_list), batch_axis, even_split)
    return [s.as_in_context(c) for s, c in zip(slices, ctx_list)]


def clip_global_norm(arrays, max_norm: float, check_isfinite: bool = True):
    """Rescale ``arrays`` in place so that the 2-norm of their concatenation is at most
    ``max_norm``; returns that norm before clipping (a float, or an NDArray when
    ``check_isfinite`` is False)."""
    nd = _nd()
    if len(arrays) == 0:
        raise MXNetError("clip_global_norm: no arrays given")

    def _norm(array):
        if array.stype == "default":
            x = array.reshape((-1,))
            return nd.dot(x, x)
        return nd.square(array.norm())

    ctx = arrays[0].context
    total = nd.add_n(*[_norm(a).as_in_context(ctx) for a in arrays])
    total = nd.sqrt(total)
    if check_isfinite and not np.isfinite(total.asscalar()):
        warnings.warn(UserWarning("nan or inf is detected. Clipping results will be "
                                  "undefined."), stacklevel=2)
    scale = max_norm / (total + 1e-8)
    scale = nd.min(nd.concat(scale, nd.ones(1, ctx=ctx), dim=0))
    for a in arrays:
        a *= scale.as_in_context(a.context)
    if check_isfinite:
        return total.asscalar()
    return total


def check_sha1(filename: str, sha1_hash: str) -> bool:
    """Whether the SHA-1 of the file's content is ``sha1_hash``."""
    sha1 = hashlib.sha1()
    with open(filename, "rb") as f:
        while True:
            data = f.read(1048576)
            if not data:
                break
            sha1.update(data)
    return sha1.hexdigest() == sha1_hash


def replace_file(src: str, dst: str) -> None:
    """Atomically move ``src`` over ``dst``."""
    os.replace(src, dst)


def download(url: str, path: str | None = None, overwrite: bool = False,
             sha1_hash: str | None = None, retries: int = 5, verify_ssl: bool = True) -> str:
    """MXNet's ``download``. mxc has no network access: a file already at the target path
    (with the right SHA-1 when given) is returned; anything else raises MXNetError."""
    if path is None:
        fname = url.split("/")[-1]
        if not fname:
            raise MXNetError("Can't construct file-name from this URL. Please set the `path` "
                             "option manually.")
    else:
        path = os.path.expanduser(path)
        fname = os.path.join(path, url.split("/")[-1]) if os.path.isdir(path) else path
    if not overwrite and os.path.exists(fname) and (not sha1_hash or
                                                     check_sha1(fname, sha1_hash)):
        return fname
    raise MXNetError(f"download: cannot fetch {url}: mxc runs without network access. Put the "
                     f"file at {fname} yourself"
                     + (f" (SHA-1 {sha1_hash})" if sha1_hash else "") + ".")


# ------------------------------------------------------------------------------------------
# helpers shared by Block and Parameter
# ------------------------------------------------------------------------------------------
def shape_is_known(shape) -> bool:
    """Whether every dimension of ``shape`` is known (None, 0 and -1 mark unknowns)."""
    if shape is None:
        return False
    for d in shape:
        if d is None or d <= 0:
            return False
    return True


def _indent(s_: str, num_spaces: int) -> str:
    lines = s_.split("\n")
    if len(lines) == 1:
        return s_
    first = lines.pop(0)
    return first + "\n" + "\n".join((num_spaces * " ") + line for line in lines)


def _brief_print_list(lst, limit: int = 7) -> str:
    """At most ``limit`` items, quoted and comma separated (the middle elided)."""
    lst = list(lst)
    if len(lst) > limit:
        return _brief_print_list(lst[:limit // 2], limit) + ", ..., " + \
            _brief_print_list(lst[-limit // 2:], limit)
    return ", ".join([f"'{s}'" for s in lst])


class HookHandle:
    """A handle that detaches a forward (pre-)hook from its block."""

    _next_id = 0

    def __init__(self) -> None:
        self._hooks_dict_ref = None
        self._id = None

    def attach(self, hooks_dict: OrderedDict, hook) -> None:
        if self._hooks_dict_ref is not None:
            raise MXNetError("The same handle cannot be attached twice.")
        self._id = HookHandle._next_id
        HookHandle._next_id += 1
        hooks_dict[self._id] = hook
        import weakref
        self._hooks_dict_ref = weakref.ref(hooks_dict)

    def detach(self) -> None:
        hooks_dict = self._hooks_dict_ref() if self._hooks_dict_ref is not None else None
        if hooks_dict is not None and self._id in hooks_dict:
            del hooks_dict[self._id]

    def __getstate__(self):
        return (self._hooks_dict_ref() if self._hooks_dict_ref is not None else None,
                self._id)

    def __setstate__(self, state) -> None:
        import weakref
        if state[0] is None:
            self._hooks_dict_ref = weakref.ref(OrderedDict())
        else:
            self._hooks_dict_ref = weakref.ref(state[0])
        self._id = state[1]

    def __enter__(self):
        return self

    def __exit__(self, ptype, value, trace) -> None:
        self.detach()
