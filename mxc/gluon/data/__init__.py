"""``mx.gluon.data``: datasets, samplers and the DataLoader (MXNet 1.x semantics; loading
runs in the calling process: ``num_workers`` is accepted and the batches are the same)."""
from .dataloader import DataLoader, default_batchify_fn
from .dataset import ArrayDataset, Dataset, RecordFileDataset, SimpleDataset
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["ArrayDataset", "BatchSampler", "DataLoader", "Dataset", "RandomSampler",
           "RecordFileDataset", "Sampler", "SequentialSampler", "SimpleDataset",
           "default_batchify_fn"]
