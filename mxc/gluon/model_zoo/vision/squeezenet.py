"""SqueezeNet 1.0 / 1.1 (MXNet 1.9.1's
``python/mxnet/gluon/model_zoo/vision/squeezenet.py``), MXNet's block structure and names.
Fire modules are a squeeze 1x1 convolution followed by a HybridConcurrent of 1x1 and 3x3
expand convolutions."""
from __future__ import annotations

from ....frontend.context import cpu
from ... import nn
from ...block import HybridBlock
from ...contrib.nn import HybridConcurrent

__all__ = ["SqueezeNet", "get_squeezenet", "squeezenet1_0", "squeezenet1_1"]

# MXNet's default ``ctx=cpu()``, created once
_CPU = cpu()


def _make_fire(squeeze_channels, expand1x1_channels, expand3x3_channels):
    out = nn.HybridSequential(prefix="")
    out.add(_make_fire_conv(squeeze_channels, 1))
    paths = HybridConcurrent(axis=1, prefix="")
    paths.add(_make_fire_conv(expand1x1_channels, 1))
    paths.add(_make_fire_conv(expand3x3_channels, 3, 1))
    out.add(paths)
    return out


def _make_fire_conv(channels, kernel_size, padding=0):
    out = nn.HybridSequential(prefix="")
    out.add(nn.Conv2D(channels, kernel_size, padding=padding))
    out.add(nn.Activation("relu"))
    return out


class SqueezeNet(HybridBlock):
    """SqueezeNet ``version`` '1.0' or '1.1' (1.1: 2.4x less computation). The classifier
    ends in AvgPool2D(13), so inputs are 224x224 (1.0 also takes 227x227)."""

    def __init__(self, version, classes=1000, **kwargs):
        super().__init__(**kwargs)
        if version not in ("1.0", "1.1"):
            raise ValueError(f"Unsupported SqueezeNet version {version}:1.0 or 1.1 expected")
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            if version == "1.0":
                self._add_v10_features()
            else:
                self._add_v11_features()
            self.features.add(nn.Dropout(0.5))
            self.output = nn.HybridSequential(prefix="")
            self.output.add(nn.Conv2D(classes, kernel_size=1))
            self.output.add(nn.Activation("relu"))
            self.output.add(nn.AvgPool2D(13))
            self.output.add(nn.Flatten())

    def _add_v10_features(self):
        f = self.features
        f.add(nn.Conv2D(96, kernel_size=7, strides=2))
        f.add(nn.Activation("relu"))
        f.add(nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True))
        f.add(_make_fire(16, 64, 64))
        f.add(_make_fire(16, 64, 64))
        f.add(_make_fire(32, 128, 128))
        f.add(nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True))
        f.add(_make_fire(32, 128, 128))
        f.add(_make_fire(48, 192, 192))
        f.add(_make_fire(48, 192, 192))
        f.add(_make_fire(64, 256, 256))
        f.add(nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True))
        f.add(_make_fire(64, 256, 256))

    def _add_v11_features(self):
        f = self.features
        f.add(nn.Conv2D(64, kernel_size=3, strides=2))
        f.add(nn.Activation("relu"))
        f.add(nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True))
        f.add(_make_fire(16, 64, 64))
        f.add(_make_fire(16, 64, 64))
        f.add(nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True))
        f.add(_make_fire(32, 128, 128))
        f.add(_make_fire(32, 128, 128))
        f.add(nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True))
        f.add(_make_fire(48, 192, 192))
        f.add(_make_fire(48, 192, 192))
        f.add(_make_fire(64, 256, 256))
        f.add(_make_fire(64, 256, 256))

    def hybrid_forward(self, F, x):
        x = self.features(x)
        return self.output(x)


def get_squeezenet(version, pretrained=False, ctx=_CPU, root=None, **kwargs):
    """SqueezeNet ``version`` ('1.0' or '1.1'); ``pretrained`` loads
    ``squeezenet<version>`` from ``root``."""
    net = SqueezeNet(version, **kwargs)
    if pretrained:
        from ..model_store import get_model_file
        net.load_parameters(get_model_file(f"squeezenet{version}", root=root), ctx=ctx)
    return net


def squeezenet1_0(**kwargs):
    """SqueezeNet 1.0."""
    return get_squeezenet("1.0", **kwargs)


def squeezenet1_1(**kwargs):
    """SqueezeNet 1.1."""
    return get_squeezenet("1.1", **kwargs)
