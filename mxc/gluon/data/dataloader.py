"""``DataLoader``: batches from a dataset (MXNet 1.x's semantics, loaded in-process)."""
from __future__ import annotations

import numpy as np

from . import sampler as _sampler

__all__ = ["DataLoader", "default_batchify_fn"]


def default_batchify_fn(data):
    """Stack a list of samples: NDArrays with ``nd.stack``, tuples element-wise, anything
    else through numpy (keeping its dtype)."""
    from ...frontend import ndarray as nd
    if isinstance(data[0], nd.NDArray):
        return nd.stack(*data)
    if isinstance(data[0], tuple):
        return [default_batchify_fn(list(i)) for i in zip(*data)]
    arr = np.asarray(data)
    return nd.array(arr, dtype=arr.dtype)


class DataLoader:
    """Iterate over mini-batches of a dataset.

    ``num_workers``, ``pin_memory``, ``prefetch``, ``thread_pool`` and ``timeout`` are
    accepted for compatibility; batches are made in the calling process, in the same order and
    with the same contents as MXNet's workers produce them.
    """

    def __init__(self, dataset, batch_size=None, shuffle: bool = False, sampler=None,
                 last_batch=None, batch_sampler=None, batchify_fn=None, num_workers: int = 0,
                 pin_memory: bool = False, pin_device_id: int = 0, prefetch=None,
                 thread_pool: bool = False, timeout: int = 120) -> None:
        self._dataset = dataset
        self._pin_memory = pin_memory
        self._pin_device_id = pin_device_id
        if batch_sampler is None:
            if batch_size is None:
                raise ValueError("batch_size must be specified unless batch_sampler is "
                                 "specified")
            if sampler is None:
                sampler = _sampler.RandomSampler(len(dataset)) if shuffle else \
                    _sampler.SequentialSampler(len(dataset))
            elif shuffle:
                raise ValueError("shuffle must not be specified if sampler is specified")
            batch_sampler = _sampler.BatchSampler(sampler, batch_size,
                                                  last_batch if last_batch else "keep")
        elif batch_size is not None or shuffle or sampler is not None or \
                last_batch is not None:
            raise ValueError("batch_size, shuffle, sampler and last_batch must not be "
                             "specified if batch_sampler is specified.")
        self._batch_sampler = batch_sampler
        self._num_workers = max(int(num_workers), 0)
        self._batchify_fn = batchify_fn if batchify_fn is not None else default_batchify_fn

    def __iter__(self):
        for batch in self._batch_sampler:
            yield self._batchify_fn([self._dataset[int(i)] for i in batch])

    def __len__(self) -> int:
        return len(self._batch_sampler)
