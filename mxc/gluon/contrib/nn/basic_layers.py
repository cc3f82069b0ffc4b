"""Contrib layers (MXNet 1.9.1's ``python/mxnet/gluon/contrib/nn/basic_layers.py``):
``Concurrent`` / ``HybridConcurrent`` (children side by side, outputs concatenated),
``Identity``, ``SparseEmbedding``, ``SyncBatchNorm`` and ``PixelShuffle1D/2D/3D``.

The blocks emit the operators MXNet emits (``concat``, ``Reshape`` with its special codes,
``transpose``, ``SwapAxis``, ``Embedding`` named ``<prefix>fwd``), so hybridized graphs export
the symbol JSON MXNet writes.
"""
from __future__ import annotations

import warnings

from ....base import MXNetError
from ...block import Block, HybridBlock
from ...nn import BatchNorm, HybridSequential, Sequential

__all__ = ["Concurrent", "HybridConcurrent", "Identity", "PixelShuffle1D", "PixelShuffle2D",
           "PixelShuffle3D", "SparseEmbedding", "SyncBatchNorm"]


def _nd():
    from ....frontend import ndarray
    return ndarray


class Concurrent(Sequential):
    """Feed the input to every child and concatenate their outputs along ``axis``."""

    def __init__(self, axis: int = -1, prefix=None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        self.axis = axis

    def forward(self, x):
        out = [block(x) for block in self._children.values()]
        return _nd().concat(*out, dim=self.axis)


class HybridConcurrent(HybridSequential):
    """Hybrid :class:`Concurrent`: the children's outputs joined by one ``concat``."""

    def __init__(self, axis: int = -1, prefix=None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        self.axis = axis

    def hybrid_forward(self, F, x):
        out = [block(x) for block in self._children.values()]
        return F.concat(*out, dim=self.axis)


class Identity(HybridBlock):
    """Pass the input through (the shortcut branch of a HybridConcurrent)."""

    def __init__(self, prefix=None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)

    def hybrid_forward(self, F, x):
        return x


class SparseEmbedding(Block):
    """Embedding whose weight and gradient MXNet stores row-sparse (``stype`` and
    ``grad_stype`` 'row_sparse'). mxc keeps row-sparse parameters dense, so the values (and
    the rows of the gradient that MXNet would store) are the same."""

    def __init__(self, input_dim: int, output_dim: int, dtype="float32",
                 weight_initializer=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._kwargs = {"input_dim": input_dim, "output_dim": output_dim, "dtype": dtype,
                        "sparse_grad": True}
        self.weight = self.params.get("weight", shape=(input_dim, output_dim),
                                      init=weight_initializer, dtype=dtype,
                                      grad_stype="row_sparse", stype="row_sparse")

    def forward(self, x):
        weight = self.weight.row_sparse_data(x)
        return _nd().Embedding(x, weight, name="fwd", **self._kwargs)

    def __repr__(self) -> str:
        k = self._kwargs
        return f"{self.__class__.__name__}({k['input_dim']} -> {k['output_dim']}, {k['dtype']})"


class SyncBatchNorm(BatchNorm):
    """Cross-device synchronized BatchNorm. mxc runs one process on one device, where the
    synchronized statistics are the plain batch statistics: the layer computes exactly
    BatchNorm over axis 1 (MXNet's SyncBatchNorm only normalizes axis 1). Its parameters
    and ``_kwargs`` are MXNet's (``ndev``, ``key``)."""

    def __init__(self, in_channels: int = 0, num_devices=None, momentum: float = 0.9,
                 epsilon: float = 1e-5, center: bool = True, scale: bool = True,
                 use_global_stats: bool = False, beta_initializer="zeros",
                 gamma_initializer="ones", running_mean_initializer="zeros",
                 running_variance_initializer="ones", **kwargs) -> None:
        super().__init__(1, momentum, epsilon, center, scale, use_global_stats,
                         beta_initializer, gamma_initializer, running_mean_initializer,
                         running_variance_initializer, in_channels, **kwargs)
        num_devices = self._get_num_devices() if num_devices is None else num_devices
        self._kwargs = {"eps": epsilon, "momentum": momentum, "fix_gamma": not scale,
                        "use_global_stats": use_global_stats, "ndev": num_devices,
                        "key": self.prefix}

    def _get_num_devices(self) -> int:
        warnings.warn("Caution using SyncBatchNorm: if not using all the GPUs, please "
                      "mannually set num_devices", UserWarning, stacklevel=3)
        from ....frontend.context import num_gpus
        return max(num_gpus(), 1)

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        k = self._kwargs
        contrib = getattr(F, "contrib", None)
        if contrib is not None and hasattr(contrib, "SyncBatchNorm"):
            # the operator MXNet emits, once mxc registers it
            return contrib.SyncBatchNorm(x, gamma, beta, running_mean, running_var,
                                         name="fwd", **k)
        # single process: the synchronized statistics are this batch's statistics
        return F.BatchNorm(x, gamma, beta, running_mean, running_var, name="fwd", axis=1,
                           eps=k["eps"], momentum=k["momentum"], fix_gamma=k["fix_gamma"],
                           use_global_stats=k["use_global_stats"])


def _factors(factor, n: int, block: str) -> tuple:
    """``factor`` (an int or an n-tuple of ints) as an n-tuple."""
    try:
        return (int(factor),) * n
    except TypeError:
        factors = tuple(int(f) for f in factor)
        if len(factors) != n:
            raise MXNetError(f"{block}: factor must be an int or a {n}-tuple of ints, wrong "
                             f"length {len(factors)}") from None
        return factors


class PixelShuffle1D(HybridBlock):
    """Upsample ``W`` by ``factor``: ``(N, f*C, W) -> (N, C, W*f)``."""

    def __init__(self, factor) -> None:
        super().__init__()
        self._factor = int(factor)

    def hybrid_forward(self, F, x):
        f = self._factor
        x = F.reshape(x, (0, -4, -1, f, 0))   # (N, C, f, W)
        x = F.transpose(x, (0, 1, 3, 2))      # (N, C, W, f)
        return F.reshape(x, (0, 0, -3))       # (N, C, W*f)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._factor})"


class PixelShuffle2D(HybridBlock):
    """Upsample ``H, W`` by ``(f1, f2)``: ``(N, f1*f2*C, H, W) -> (N, C, H*f1, W*f2)``."""

    def __init__(self, factor) -> None:
        super().__init__()
        self._factors = _factors(factor, 2, "PixelShuffle2D")

    def hybrid_forward(self, F, x):
        f1, f2 = self._factors
        x = F.reshape(x, (0, -4, -1, f1 * f2, 0, 0))  # (N, C, f1*f2, H, W)
        x = F.reshape(x, (0, 0, -4, f1, f2, 0, 0))    # (N, C, f1, f2, H, W)
        x = F.transpose(x, (0, 1, 4, 2, 5, 3))        # (N, C, H, f1, W, f2)
        return F.reshape(x, (0, 0, -3, -3))           # (N, C, H*f1, W*f2)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._factors})"


class PixelShuffle3D(HybridBlock):
    """Upsample ``D, H, W`` by ``(f1, f2, f3)``:
    ``(N, f1*f2*f3*C, D, H, W) -> (N, C, D*f1, H*f2, W*f3)``."""

    def __init__(self, factor) -> None:
        super().__init__()
        self._factors = _factors(factor, 3, "PixelShuffle3D")

    def hybrid_forward(self, F, x):
        # MXNet's sequence (swapaxes and reshapes that stay within 7 dims), so exported
        # graphs are the same
        f1, f2, f3 = self._factors
        x = F.reshape(x, (0, -4, -1, f1 * f2 * f3, 0, 0, 0))  # (N, C, f1*f2*f3, D, H, W)
        x = F.swapaxes(x, 2, 3)                               # (N, C, D, f1*f2*f3, H, W)
        x = F.reshape(x, (0, 0, 0, -4, f1, f2 * f3, 0, 0))    # (N, C, D, f1, f2*f3, H, W)
        x = F.reshape(x, (0, 0, -3, 0, 0, 0))                 # (N, C, D*f1, f2*f3, H, W)
        x = F.swapaxes(x, 3, 4)                               # (N, C, D*f1, H, f2*f3, W)
        x = F.reshape(x, (0, 0, 0, 0, -4, f2, f3, 0))         # (N, C, D*f1, H, f2, f3, W)
        x = F.reshape(x, (0, 0, 0, -3, 0, 0))                 # (N, C, D*f1, H*f2, f3, W)
        x = F.swapaxes(x, 4, 5)                               # (N, C, D*f1, H*f2, W, f3)
        return F.reshape(x, (0, 0, 0, 0, -3))                 # (N, C, D*f1, H*f2, W*f3)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._factors})"
