"""Convolution and pooling layers (MXNet 1.x's ``gluon.nn.conv_layers``).

Convolutions emit ``Convolution`` / ``Deconvolution`` named ``<prefix>fwd`` with MXNet's
attribute set (kernel, stride, dilate, pad, num_filter, num_group, no_bias, layout, and adj
for transposed convolutions); every convolution block has the alias ``conv`` and every
pooling block ``pool``, as in MXNet. Pooling emits ``Pooling`` with kernel, stride, pad,
global_pool, pool_type, layout, pooling_convention ('full' when ``ceil_mode``) and, for
average pooling, count_include_pad.
"""
from __future__ import annotations

import numpy as np

from ...base import MXNetError
from ..block import HybridBlock
from .activations import Activation

__all__ = ["AvgPool1D", "AvgPool2D", "AvgPool3D", "Conv1D", "Conv1DTranspose", "Conv2D",
           "Conv2DTranspose", "Conv3D", "Conv3DTranspose", "GlobalAvgPool1D",
           "GlobalAvgPool2D", "GlobalAvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D",
           "GlobalMaxPool3D", "MaxPool1D", "MaxPool2D", "MaxPool3D", "ReflectionPad2D"]

_numeric = (int, float, np.integer, np.floating)


def _tuple(v, n: int, what: str) -> tuple:
    if isinstance(v, _numeric):
        return (int(v),) * n
    v = tuple(int(x) for x in v)
    if len(v) != n:
        raise MXNetError(f"{what} must be a number or a tuple of {n} numbers, got {v}")
    return v


def _weight_shapes(op_name: str, in_channels: int, kwargs: dict) -> tuple:
    """(weight shape, bias shape) MXNet infers for a data shape with ``in_channels``
    channels (0: unknown)."""
    k = tuple(kwargs["kernel"])
    nf = kwargs["num_filter"]
    ng = kwargs["num_group"]
    if op_name == "Convolution":
        w = (nf, in_channels // ng if in_channels else 0, *k)
    else:
        w = (in_channels, nf // ng, *k)
    layout = kwargs["layout"]
    if layout.find("C") == len(layout) - 1:  # channels last: MXNet's weight is O, k..., I
        w = (w[0], *k, w[1])
    return w, (nf,)


class _Conv(HybridBlock):
    """Common N-d (transposed) convolution."""

    def __init__(self, channels: int, kernel_size, strides, padding, dilation, groups: int,
                 layout: str, in_channels: int = 0, activation=None, use_bias: bool = True,
                 weight_initializer=None, bias_initializer="zeros",
                 op_name: str = "Convolution", adj=None, prefix=None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self._channels = channels
            self._in_channels = in_channels
            n = len(kernel_size)
            strides = _tuple(strides, n, "strides")
            padding = _tuple(padding, n, "padding")
            dilation = _tuple(dilation, n, "dilation")
            self._op_name = op_name
            self._kwargs = {
                "kernel": tuple(kernel_size), "stride": strides, "dilate": dilation,
                "pad": padding, "num_filter": channels, "num_group": groups,
                "no_bias": not use_bias, "layout": layout}
            if adj is not None:
                self._kwargs["adj"] = adj
            wshape, bshape = _weight_shapes(op_name, in_channels, self._kwargs)
            self.weight = self.params.get("weight", shape=wshape, init=weight_initializer,
                                          allow_deferred_init=True)
            if use_bias:
                self.bias = self.params.get("bias", shape=bshape, init=bias_initializer,
                                            allow_deferred_init=True)
            else:
                self.bias = None
            if activation is not None:
                self.act = Activation(activation, prefix=activation + "_")
            else:
                self.act = None

    def hybrid_forward(self, F, x, weight, bias=None):
        op = getattr(F, self._op_name)
        if bias is None:
            act = op(x, weight, name="fwd", **self._kwargs)
        else:
            act = op(x, weight, bias, name="fwd", **self._kwargs)
        if self.act is not None:
            act = self.act(act)
        return act

    def _alias(self) -> str:
        return "conv"

    def __repr__(self) -> str:
        k = self._kwargs
        s = "{name}({mapping}, kernel_size={kernel}, stride={stride}"
        len_kernel = len(k["kernel"])
        if k["pad"] != (0,) * len_kernel:
            s += ", padding={pad}"
        if k["dilate"] != (1,) * len_kernel:
            s += ", dilation={dilate}"
        if hasattr(self, "outpad") and self.outpad != (0,) * len_kernel:
            s += f", output_padding={self.outpad}"
        if k["num_group"] != 1:
            s += ", groups={num_group}"
        if self.bias is None:
            s += ", bias=False"
        if self.act:
            s += f", {self.act}"
        s += ")"
        shape = self.weight.shape
        mapping = f"{shape[1] if shape[1] else None} -> {shape[0]}"
        return s.format(name=self.__class__.__name__, mapping=mapping, **k)


def _conv_init(self, n, channels, kernel_size, strides, padding, dilation, groups, layout,
               activation, use_bias, weight_initializer, bias_initializer, in_channels,
               kwargs, op_name="Convolution", adj=None):
    kernel_size = _tuple(kernel_size, n, "kernel_size")
    _Conv.__init__(self, channels, kernel_size, strides, padding, dilation, groups, layout,
                   in_channels, activation, use_bias, weight_initializer, bias_initializer,
                   op_name=op_name, adj=adj, **kwargs)


class Conv1D(_Conv):
    """1-D convolution over (N, C, W) data."""

    def __init__(self, channels, kernel_size, strides=1, padding=0, dilation=1, groups=1,
                 layout="NCW", activation=None, use_bias=True, weight_initializer=None,
                 bias_initializer="zeros", in_channels=0, **kwargs) -> None:
        if layout not in ("NCW", "NWC"):
            raise MXNetError("Only supports 'NCW' and 'NWC' layout for now")
        _conv_init(self, 1, channels, kernel_size, strides, padding, dilation, groups, layout,
                   activation, use_bias, weight_initializer, bias_initializer, in_channels,
                   kwargs)


class Conv2D(_Conv):
    """2-D convolution over (N, C, H, W) data."""

    def __init__(self, channels, kernel_size, strides=(1, 1), padding=(0, 0), dilation=(1, 1),
                 groups=1, layout="NCHW", activation=None, use_bias=True,
                 weight_initializer=None, bias_initializer="zeros", in_channels=0,
                 **kwargs) -> None:
        if layout not in ("NCHW", "NHWC"):
            raise MXNetError("Only supports 'NCHW' and 'NHWC' layout for now")
        _conv_init(self, 2, channels, kernel_size, strides, padding, dilation, groups, layout,
                   activation, use_bias, weight_initializer, bias_initializer, in_channels,
                   kwargs)


class Conv3D(_Conv):
    """3-D convolution over (N, C, D, H, W) data."""

    def __init__(self, channels, kernel_size, strides=(1, 1, 1), padding=(0, 0, 0),
                 dilation=(1, 1, 1), groups=1, layout="NCDHW", activation=None, use_bias=True,
                 weight_initializer=None, bias_initializer="zeros", in_channels=0,
                 **kwargs) -> None:
        if layout not in ("NCDHW", "NDHWC"):
            raise MXNetError("Only supports 'NCDHW' and 'NDHWC' layout for now")
        _conv_init(self, 3, channels, kernel_size, strides, padding, dilation, groups, layout,
                   activation, use_bias, weight_initializer, bias_initializer, in_channels,
                   kwargs)


class Conv1DTranspose(_Conv):
    """1-D transposed convolution (Deconvolution)."""

    def __init__(self, channels, kernel_size, strides=1, padding=0, output_padding=0,
                 dilation=1, groups=1, layout="NCW", activation=None, use_bias=True,
                 weight_initializer=None, bias_initializer="zeros", in_channels=0,
                 **kwargs) -> None:
        if layout not in ("NCW", "NWC"):
            raise MXNetError("Only supports 'NCW' and 'NWC' layout for now")
        output_padding = _tuple(output_padding, 1, "output_padding")
        _conv_init(self, 1, channels, kernel_size, strides, padding, dilation, groups, layout,
                   activation, use_bias, weight_initializer, bias_initializer, in_channels,
                   kwargs, op_name="Deconvolution", adj=output_padding)
        self.outpad = output_padding


class Conv2DTranspose(_Conv):
    """2-D transposed convolution (Deconvolution)."""

    def __init__(self, channels, kernel_size, strides=(1, 1), padding=(0, 0),
                 output_padding=(0, 0), dilation=(1, 1), groups=1, layout="NCHW",
                 activation=None, use_bias=True, weight_initializer=None,
                 bias_initializer="zeros", in_channels=0, **kwargs) -> None:
        if layout not in ("NCHW", "NHWC"):
            raise MXNetError("Only supports 'NCHW' and 'NHWC' layout for now")
        output_padding = _tuple(output_padding, 2, "output_padding")
        _conv_init(self, 2, channels, kernel_size, strides, padding, dilation, groups, layout,
                   activation, use_bias, weight_initializer, bias_initializer, in_channels,
                   kwargs, op_name="Deconvolution", adj=output_padding)
        self.outpad = output_padding


class Conv3DTranspose(_Conv):
    """3-D transposed convolution (Deconvolution)."""

    def __init__(self, channels, kernel_size, strides=(1, 1, 1), padding=(0, 0, 0),
                 output_padding=(0, 0, 0), dilation=(1, 1, 1), groups=1, layout="NCDHW",
                 activation=None, use_bias=True, weight_initializer=None,
                 bias_initializer="zeros", in_channels=0, **kwargs) -> None:
        if layout not in ("NCDHW", "NDHWC"):
            raise MXNetError("Only supports 'NCDHW' and 'NDHWC' layout for now")
        output_padding = _tuple(output_padding, 3, "output_padding")
        _conv_init(self, 3, channels, kernel_size, strides, padding, dilation, groups, layout,
                   activation, use_bias, weight_initializer, bias_initializer, in_channels,
                   kwargs, op_name="Deconvolution", adj=output_padding)
        self.outpad = output_padding


# ------------------------------------------------------------------------------------------
# pooling
# ------------------------------------------------------------------------------------------
class _Pooling(HybridBlock):
    """Common pooling."""

    def __init__(self, pool_size, strides, padding, ceil_mode, global_pool, pool_type,
                 layout, count_include_pad=None, **kwargs) -> None:
        super().__init__(**kwargs)
        if strides is None:
            strides = pool_size
        n = len(pool_size)
        strides = _tuple(strides, n, "strides")
        padding = _tuple(padding, n, "padding")
        self._kwargs = {
            "kernel": tuple(pool_size), "stride": strides, "pad": padding,
            "global_pool": global_pool, "pool_type": pool_type, "layout": layout,
            "pooling_convention": "full" if ceil_mode else "valid"}
        if count_include_pad is not None:
            self._kwargs["count_include_pad"] = count_include_pad

    def _alias(self) -> str:
        return "pool"

    def hybrid_forward(self, F, x):
        return F.Pooling(x, name="fwd", **self._kwargs)

    def __repr__(self) -> str:
        k = self._kwargs
        return (f"{self.__class__.__name__}(size={k['kernel']}, stride={k['stride']}, "
                f"padding={k['pad']}, ceil_mode={k['pooling_convention'] == 'full'}, "
                f"global_pool={k['global_pool']}, pool_type={k['pool_type']}, "
                f"layout={k['layout']})")


def _check_layout(layout: str, allowed: tuple) -> None:
    if layout not in allowed:
        raise MXNetError(f"Only supports {' and '.join(repr(a) for a in allowed)} layout for "
                         "now")


class MaxPool1D(_Pooling):
    def __init__(self, pool_size=2, strides=None, padding=0, layout="NCW", ceil_mode=False,
                 **kwargs) -> None:
        _check_layout(layout, ("NCW", "NWC"))
        pool_size = _tuple(pool_size, 1, "pool_size")
        super().__init__(pool_size, strides, padding, ceil_mode, False, "max", layout,
                         **kwargs)


class MaxPool2D(_Pooling):
    def __init__(self, pool_size=(2, 2), strides=None, padding=0, layout="NCHW",
                 ceil_mode=False, **kwargs) -> None:
        _check_layout(layout, ("NCHW", "NHWC"))
        pool_size = _tuple(pool_size, 2, "pool_size")
        super().__init__(pool_size, strides, padding, ceil_mode, False, "max", layout,
                         **kwargs)


class MaxPool3D(_Pooling):
    def __init__(self, pool_size=(2, 2, 2), strides=None, padding=0, ceil_mode=False,
                 layout="NCDHW", **kwargs) -> None:
        _check_layout(layout, ("NCDHW", "NDHWC"))
        pool_size = _tuple(pool_size, 3, "pool_size")
        super().__init__(pool_size, strides, padding, ceil_mode, False, "max", layout,
                         **kwargs)


class AvgPool1D(_Pooling):
    def __init__(self, pool_size=2, strides=None, padding=0, layout="NCW", ceil_mode=False,
                 count_include_pad=True, **kwargs) -> None:
        _check_layout(layout, ("NCW", "NWC"))
        pool_size = _tuple(pool_size, 1, "pool_size")
        super().__init__(pool_size, strides, padding, ceil_mode, False, "avg", layout,
                         count_include_pad, **kwargs)


class AvgPool2D(_Pooling):
    def __init__(self, pool_size=(2, 2), strides=None, padding=0, ceil_mode=False,
                 layout="NCHW", count_include_pad=True, **kwargs) -> None:
        _check_layout(layout, ("NCHW", "NHWC"))
        pool_size = _tuple(pool_size, 2, "pool_size")
        super().__init__(pool_size, strides, padding, ceil_mode, False, "avg", layout,
                         count_include_pad, **kwargs)


class AvgPool3D(_Pooling):
    def __init__(self, pool_size=(2, 2, 2), strides=None, padding=0, ceil_mode=False,
                 layout="NCDHW", count_include_pad=True, **kwargs) -> None:
        _check_layout(layout, ("NCDHW", "NDHWC"))
        pool_size = _tuple(pool_size, 3, "pool_size")
        super().__init__(pool_size, strides, padding, ceil_mode, False, "avg", layout,
                         count_include_pad, **kwargs)


class GlobalMaxPool1D(_Pooling):
    def __init__(self, layout="NCW", **kwargs) -> None:
        _check_layout(layout, ("NCW", "NWC"))
        super().__init__((1,), None, 0, True, True, "max", layout, **kwargs)


class GlobalMaxPool2D(_Pooling):
    def __init__(self, layout="NCHW", **kwargs) -> None:
        _check_layout(layout, ("NCHW", "NHWC"))
        super().__init__((1, 1), None, 0, True, True, "max", layout, **kwargs)


class GlobalMaxPool3D(_Pooling):
    def __init__(self, layout="NCDHW", **kwargs) -> None:
        _check_layout(layout, ("NCDHW", "NDHWC"))
        super().__init__((1, 1, 1), None, 0, True, True, "max", layout, **kwargs)


class GlobalAvgPool1D(_Pooling):
    def __init__(self, layout="NCW", **kwargs) -> None:
        _check_layout(layout, ("NCW", "NWC"))
        super().__init__((1,), None, 0, True, True, "avg", layout, **kwargs)


class GlobalAvgPool2D(_Pooling):
    def __init__(self, layout="NCHW", **kwargs) -> None:
        _check_layout(layout, ("NCHW", "NHWC"))
        super().__init__((1, 1), None, 0, True, True, "avg", layout, **kwargs)


class GlobalAvgPool3D(_Pooling):
    def __init__(self, layout="NCDHW", **kwargs) -> None:
        _check_layout(layout, ("NCDHW", "NDHWC"))
        super().__init__((1, 1, 1), None, 0, True, True, "avg", layout, **kwargs)


class ReflectionPad2D(HybridBlock):
    """Pad the last two axes of (N, C, H, W) data by reflection."""

    def __init__(self, padding=0, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(padding, _numeric):
            padding = (0, 0, 0, 0, int(padding), int(padding), int(padding), int(padding))
        if len(padding) != 8:
            raise MXNetError("ReflectionPad2D: padding must be a number or 8 numbers")
        self._padding = tuple(padding)

    def hybrid_forward(self, F, x):
        return F.pad(x, mode="reflect", pad_width=self._padding)
