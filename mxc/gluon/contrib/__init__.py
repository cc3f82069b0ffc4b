"""``mx.gluon.contrib``: MXNet 1.9.1's contributed Gluon blocks (``nn``: Concurrent,
HybridConcurrent, Identity, SparseEmbedding, SyncBatchNorm, PixelShuffle1D/2D/3D)."""
from . import nn

__all__ = ["nn"]
