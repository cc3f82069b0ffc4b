"""Basic layers (MXNet 1.x's ``gluon.nn.basic_layers``): containers, Dense, Dropout,
normalization, Embedding, Flatten, Lambda.

Parameter names, operator names (``<prefix>fwd``) and operator attributes are MXNet's, so a
hybridized network exports the same ``-symbol.json`` MXNet 1.9.1 writes.
"""
from __future__ import annotations

import warnings

import numpy as np

from ...base import MXNetError
from ..block import Block, HybridBlock
from ..utils import _indent
from .activations import Activation

__all__ = ["BatchNorm", "Dense", "Dropout", "Embedding", "Flatten", "GroupNorm", "HybridLambda",
           "HybridSequential", "InstanceNorm", "Lambda", "LayerNorm", "Sequential"]


def _nd():
    from ...frontend import ndarray
    return ndarray


def _sym():
    from ...frontend import symbol
    return symbol


def _run_children(children, x, args):
    for block in children:
        x = block(x, *args)
        args = []
        if isinstance(x, (tuple, list)):
            args = x[1:]
            x = x[0]
    if args:
        x = (x, *args)
    return x


class Sequential(Block):
    """Children run one after another."""

    def __init__(self, prefix: str | None = None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        self._layers = []

    def add(self, *blocks) -> None:
        """Append blocks."""
        for block in blocks:
            self._layers.append(block)
            self.register_child(block)

    def forward(self, x, *args):
        return _run_children(self._children.values(), x, args)

    def __repr__(self) -> str:
        modstr = "\n".join(f"  ({key}): {_indent(repr(block), 2)}"
                           for key, block in self._children.items())
        return f"{self.__class__.__name__}(\n{modstr}\n)"

    def __getitem__(self, key):
        layers = list(self._children.values())[key]
        if isinstance(layers, list):
            net = type(self)(prefix=self._prefix)
            with net.name_scope():
                net.add(*layers)
            return net
        return layers

    def __len__(self) -> int:
        return len(self._children)

    def hybridize(self, active: bool = True, **kwargs) -> None:
        if self._children and all(isinstance(c, HybridBlock) for c in self._children.values()):
            warnings.warn(f"All children of this Sequential layer '{self.prefix}' are "
                          "HybridBlocks. Consider using HybridSequential for the best "
                          "performance.", stacklevel=2)
        super().hybridize(active, **kwargs)


class HybridSequential(HybridBlock):
    """Hybrid children run one after another."""

    def __init__(self, prefix: str | None = None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        self._layers = []

    def add(self, *blocks) -> None:
        """Append blocks."""
        for block in blocks:
            self._layers.append(block)
            self.register_child(block)

    def hybrid_forward(self, F, x, *args):
        return _run_children(self._children.values(), x, args)

    def __repr__(self) -> str:
        modstr = "\n".join(f"  ({key}): {_indent(repr(block), 2)}"
                           for key, block in self._children.items())
        return f"{self.__class__.__name__}(\n{modstr}\n)"

    def __getitem__(self, key):
        layers = list(self._children.values())[key]
        if isinstance(layers, list):
            net = type(self)(prefix=self._prefix)
            with net.name_scope():
                net.add(*layers)
            return net
        return layers

    def __len__(self) -> int:
        return len(self._children)


class Dense(HybridBlock):
    """Fully connected layer: ``activation(dot(x, weight.T) + bias)`` (``flatten``: inputs
    of rank > 2 are flattened to 2-D first). ``in_units=0`` defers the weight's shape."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 flatten: bool = True, dtype="float32", weight_initializer=None,
                 bias_initializer="zeros", in_units: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._flatten = flatten
        with self.name_scope():
            self._units = units
            self._in_units = in_units
            self.weight = self.params.get("weight", shape=(units, in_units),
                                          init=weight_initializer, dtype=dtype,
                                          allow_deferred_init=True)
            if use_bias:
                self.bias = self.params.get("bias", shape=(units,), init=bias_initializer,
                                            dtype=dtype, allow_deferred_init=True)
            else:
                self.bias = None
            if activation is not None:
                self.act = Activation(activation, prefix=activation + "_")
            else:
                self.act = None

    def hybrid_forward(self, F, x, weight, bias=None):
        act = F.FullyConnected(x, weight, bias, no_bias=bias is None, num_hidden=self._units,
                               flatten=self._flatten, name="fwd")
        if self.act is not None:
            act = self.act(act)
        return act

    def __repr__(self) -> str:
        shape = self.weight.shape
        layout = f"{shape[1] if shape[1] else None} -> {shape[0]}"
        return f"{self.__class__.__name__}({layout}, {self.act if self.act else 'linear'})"


class Dropout(HybridBlock):
    """Drop elements with probability ``rate`` in training (scaling the rest by
    1/(1-rate)); identity in inference. ``axes``: axes sharing one mask."""

    def __init__(self, rate: float, axes=(), **kwargs) -> None:
        super().__init__(**kwargs)
        self._rate = rate
        self._axes = axes

    def hybrid_forward(self, F, x):
        if self._rate > 0:
            return F.Dropout(x, p=self._rate, axes=self._axes, name="fwd", cudnn_off=False)
        return F.identity(x)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p = {self._rate}, axes={self._axes})"


class BatchNorm(HybridBlock):
    """Batch normalization (MXNet's Gluon defaults: momentum 0.9, epsilon 1e-5,
    ``fix_gamma = not scale``)."""

    def __init__(self, axis: int = 1, momentum: float = 0.9, epsilon: float = 1e-5,
                 center: bool = True, scale: bool = True, use_global_stats: bool = False,
                 beta_initializer="zeros", gamma_initializer="ones",
                 running_mean_initializer="zeros", running_variance_initializer="ones",
                 in_channels: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._kwargs = {"axis": axis, "eps": epsilon, "momentum": momentum,
                        "fix_gamma": not scale, "use_global_stats": use_global_stats}
        self._axis = axis
        if in_channels != 0:
            self.in_channels = in_channels
        self.gamma = self.params.get("gamma", grad_req="write" if scale else "null",
                                     shape=(in_channels,), init=gamma_initializer,
                                     allow_deferred_init=True, differentiable=scale)
        self.beta = self.params.get("beta", grad_req="write" if center else "null",
                                    shape=(in_channels,), init=beta_initializer,
                                    allow_deferred_init=True, differentiable=center)
        self.running_mean = self.params.get("running_mean", grad_req="null",
                                            shape=(in_channels,),
                                            init=running_mean_initializer,
                                            allow_deferred_init=True, differentiable=False)
        self.running_var = self.params.get("running_var", grad_req="null",
                                           shape=(in_channels,),
                                           init=running_variance_initializer,
                                           allow_deferred_init=True, differentiable=False)

    def cast(self, dtype) -> None:
        if np.dtype(dtype).name == "float16":
            dtype = "float32"
        super().cast(dtype)

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        return F.BatchNorm(x, gamma, beta, running_mean, running_var, name="fwd",
                           **self._kwargs)

    def __repr__(self) -> str:
        in_channels = self.gamma.shape[0]
        content = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{self.__class__.__name__}({content}, in_channels={in_channels or None})"


class Embedding(HybridBlock):
    """Map integer indices to dense vectors of size ``output_dim``."""

    def __init__(self, input_dim: int, output_dim: int, dtype="float32",
                 weight_initializer=None, sparse_grad: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        grad_stype = "row_sparse" if sparse_grad else "default"
        self._kwargs = {"input_dim": input_dim, "output_dim": output_dim, "dtype": dtype,
                        "sparse_grad": sparse_grad}
        self.weight = self.params.get("weight", shape=(input_dim, output_dim),
                                      init=weight_initializer, dtype=dtype,
                                      allow_deferred_init=True, grad_stype=grad_stype)

    def hybrid_forward(self, F, x, weight):
        return F.Embedding(x, weight, name="fwd", **self._kwargs)

    def __repr__(self) -> str:
        k = self._kwargs
        return f"{self.__class__.__name__}({k['input_dim']} -> {k['output_dim']}, {k['dtype']})"


class Flatten(HybridBlock):
    """Flatten to 2-D ``(batch, -1)``."""

    def hybrid_forward(self, F, x):
        return F.Flatten(x)

    def __repr__(self) -> str:
        return self.__class__.__name__


def _affine_params(block, scale: bool, center: bool, in_channels: int, gamma_initializer,
                   beta_initializer) -> None:
    """The per-channel ``gamma`` / ``beta`` of a normalization layer (MXNet's names; not
    trained when ``scale`` / ``center`` is off; shape deferred while in_channels is 0)."""
    block.gamma = block.params.get("gamma", grad_req="write" if scale else "null",
                                   shape=(in_channels,), init=gamma_initializer,
                                   allow_deferred_init=True)
    block.beta = block.params.get("beta", grad_req="write" if center else "null",
                                  shape=(in_channels,), init=beta_initializer,
                                  allow_deferred_init=True)


def _norm_repr(block, in_channels: bool) -> str:
    content = ", ".join(f"{k}={v!r}" for k, v in block._kwargs.items())
    if in_channels:
        content += f", in_channels={block.gamma.shape[0]}"
    return f"{block.__class__.__name__}({content})"


class InstanceNorm(HybridBlock):
    """Instance normalization over ``axis`` (channels)."""

    def __init__(self, axis: int = 1, epsilon: float = 1e-5, center: bool = True,
                 scale: bool = False, beta_initializer="zeros", gamma_initializer="ones",
                 in_channels: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._kwargs = {"eps": epsilon, "axis": axis, "center": center, "scale": scale}
        self._axis = axis
        self._epsilon = epsilon
        _affine_params(self, scale, center, in_channels, gamma_initializer, beta_initializer)

    def hybrid_forward(self, F, x, gamma, beta):
        if self._axis == 1:
            return F.InstanceNorm(x, gamma, beta, name="fwd", eps=self._epsilon)
        x = x.swapaxes(1, self._axis)
        return F.InstanceNorm(x, gamma, beta, name="fwd",
                              eps=self._epsilon).swapaxes(1, self._axis)

    def __repr__(self) -> str:
        return _norm_repr(self, in_channels=True)


class LayerNorm(HybridBlock):
    """Layer normalization over ``axis`` (default the last)."""

    def __init__(self, axis: int = -1, epsilon: float = 1e-5, center: bool = True,
                 scale: bool = True, beta_initializer="zeros", gamma_initializer="ones",
                 in_channels: int = 0, prefix=None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        self._kwargs = {"eps": epsilon, "axis": axis, "center": center, "scale": scale}
        self._axis = axis
        self._epsilon = epsilon
        self._center = center
        self._scale = scale
        _affine_params(self, scale, center, in_channels, gamma_initializer, beta_initializer)

    def hybrid_forward(self, F, data, gamma, beta):
        return F.LayerNorm(data, gamma=gamma, beta=beta, axis=self._axis, eps=self._epsilon)

    def __repr__(self) -> str:
        return _norm_repr(self, in_channels=True)


class GroupNorm(HybridBlock):
    """Group normalization: channels split into ``num_groups`` groups, each normalised per
    sample over its channels and spatial positions, then scaled by the per-channel ``gamma``
    and shifted by ``beta`` (both of shape ``(in_channels,)``, as in MXNet 1.9.1)."""

    def __init__(self, num_groups: int = 1, epsilon: float = 1e-5, center: bool = True,
                 scale: bool = True, beta_initializer="zeros", gamma_initializer="ones",
                 in_channels: int = 0, prefix=None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        self._kwargs = {"eps": epsilon, "num_groups": num_groups, "center": center,
                        "scale": scale}
        self._num_groups = num_groups
        self._epsilon = epsilon
        self._center = center
        self._scale = scale
        _affine_params(self, scale, center, in_channels, gamma_initializer, beta_initializer)

    def hybrid_forward(self, F, data, gamma, beta):
        return F.GroupNorm(data, gamma=gamma, beta=beta, num_groups=self._num_groups,
                           eps=self._epsilon)

    def __repr__(self) -> str:
        return _norm_repr(self, in_channels=False)


class Lambda(Block):
    """Wrap a function (or the name of an ``mx.nd`` function) as a Block."""

    def __init__(self, function, prefix=None) -> None:
        super().__init__(prefix=prefix)
        if isinstance(function, str):
            nd = _nd()
            if not hasattr(nd, function):
                raise MXNetError(f"Function name {function} is not found in ndarray.")
            self._func_impl = getattr(nd, function)
        elif callable(function):
            self._func_impl = function
        else:
            raise ValueError(f"Unrecognized function in lambda: {function} of type "  # noqa: TRY004
                             f"{type(function)}")

    def forward(self, *args):
        return self._func_impl(*args)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({getattr(self._func_impl, '__name__', '?')})"


class HybridLambda(HybridBlock):
    """Wrap ``function(F, x, *args)`` (or the name of a function in both ``mx.nd`` and
    ``mx.sym``) as a HybridBlock."""

    def __init__(self, function, prefix=None) -> None:
        super().__init__(prefix=prefix)
        if isinstance(function, str):
            nd, sym = _nd(), _sym()
            if not (hasattr(nd, function) and hasattr(sym, function)):
                raise MXNetError(f"Function name {function} is not found in symbol/ndarray.")
            funcs = {sym: getattr(sym, function), nd: getattr(nd, function)}
            self._func = lambda F, *args: funcs[F](*args)
            self._func_name = function
        elif callable(function):
            self._func = function
            self._func_name = function.__name__
        else:
            raise ValueError(f"Unrecognized function in lambda: {function} of type "  # noqa: TRY004
                             f"{type(function)}")

    def hybrid_forward(self, F, x, *args):
        return self._func(F, x, *args)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._func_name})"
