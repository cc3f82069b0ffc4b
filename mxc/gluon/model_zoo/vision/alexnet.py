"""AlexNet (MXNet 1.9.1's ``python/mxnet/gluon/model_zoo/vision/alexnet.py``), the
"One weird trick" single-tower variant, with MXNet's block structure and names."""
from __future__ import annotations

from ....frontend.context import cpu
from ... import nn
from ...block import HybridBlock

__all__ = ["AlexNet", "alexnet"]

# MXNet's default ``ctx=cpu()``, created once
_CPU = cpu()


class AlexNet(HybridBlock):
    """Five convolutions (ReLU, three max-pools) and three dense layers (dropout 0.5).
    Expects 224x224 inputs (the flattened features are 256*6*6)."""

    def __init__(self, classes=1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                self.features.add(nn.Conv2D(64, kernel_size=11, strides=4, padding=2,
                                            activation="relu"))
                self.features.add(nn.MaxPool2D(pool_size=3, strides=2))
                self.features.add(nn.Conv2D(192, kernel_size=5, padding=2, activation="relu"))
                self.features.add(nn.MaxPool2D(pool_size=3, strides=2))
                self.features.add(nn.Conv2D(384, kernel_size=3, padding=1, activation="relu"))
                self.features.add(nn.Conv2D(256, kernel_size=3, padding=1, activation="relu"))
                self.features.add(nn.Conv2D(256, kernel_size=3, padding=1, activation="relu"))
                self.features.add(nn.MaxPool2D(pool_size=3, strides=2))
                self.features.add(nn.Flatten())
                self.features.add(nn.Dense(4096, activation="relu"))
                self.features.add(nn.Dropout(0.5))
                self.features.add(nn.Dense(4096, activation="relu"))
                self.features.add(nn.Dropout(0.5))
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        x = self.features(x)
        return self.output(x)


def alexnet(pretrained=False, ctx=_CPU, root=None, **kwargs):
    """AlexNet; ``pretrained`` loads ``alexnet`` from ``root`` (default
    ``$MXNET_HOME/models``)."""
    net = AlexNet(**kwargs)
    if pretrained:
        from ..model_store import get_model_file
        net.load_parameters(get_model_file("alexnet", root=root), ctx=ctx)
    return net
