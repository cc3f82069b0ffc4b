"""gluon.data: datasets, samplers, DataLoader (MXNet 1.x semantics)."""
import numpy as np
import pytest

import mxc as mx
from mxc import gluon
from mxc.gluon.data import (
    ArrayDataset,
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    SimpleDataset,
)


def test_array_dataset_and_transforms():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = mx.nd.arange(10)
    ds = ArrayDataset(x, y)
    assert len(ds) == 10
    a, b = ds[3]
    np.testing.assert_array_equal(a, [6, 7])
    assert b == 3 and isinstance(b, np.floating)   # 1-d NDArrays are read as numpy
    t = ds.transform_first(lambda v: v * 2)
    np.testing.assert_array_equal(t[3][0], [12, 14])
    assert t[3][1] == 3
    t2 = ds.transform(lambda v, w: v.sum() + w, lazy=False)
    assert isinstance(t2, SimpleDataset) and t2[1] == 2 + 3 + 1
    assert len(ds.take(4)) == 4 and len(ds.filter(lambda s: s[1] > 6)) == 3
    shards = [ds.shard(3, i) for i in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    with pytest.raises(ValueError):
        ArrayDataset(x, np.arange(3))


def test_samplers():
    assert list(SequentialSampler(4, start=2)) == [2, 3, 4, 5]
    np.random.seed(0)
    r = list(RandomSampler(6))
    assert sorted(r) == list(range(6))
    assert list(BatchSampler(SequentialSampler(7), 3, "keep")) == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(BatchSampler(SequentialSampler(7), 3, "discard")) == 2
    roll = BatchSampler(SequentialSampler(7), 3, "rollover")
    assert list(roll) == [[0, 1, 2], [3, 4, 5]]
    assert next(iter(roll)) == [6, 0, 1]


def test_dataloader_batches():
    x = np.random.RandomState(0).randn(10, 3).astype(np.float32)
    y = np.arange(10).astype(np.int32)
    loader = DataLoader(ArrayDataset(x, y), batch_size=4, last_batch="keep")
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    bx, by = batches[0]
    assert isinstance(bx, mx.nd.NDArray) and bx.shape == (4, 3)
    assert by.dtype == np.int32
    np.testing.assert_array_equal(bx.asnumpy(), x[:4])
    assert batches[2][0].shape == (2, 3)
    nd_loader = DataLoader(SimpleDataset([mx.nd.ones((2,)) * i for i in range(5)]),
                           batch_size=2, last_batch="discard", num_workers=2)
    out = list(nd_loader)
    assert len(out) == 2 and out[1].shape == (2, 2)
    np.random.seed(1)
    shuffled = np.concatenate([b[1].asnumpy() for b in
                               DataLoader(ArrayDataset(x, y), batch_size=5, shuffle=True)])
    assert sorted(shuffled.tolist()) == list(range(10))
    with pytest.raises(ValueError):
        DataLoader(ArrayDataset(x), batch_size=2, shuffle=True,
                   sampler=SequentialSampler(10))
    with pytest.raises(ValueError):
        DataLoader(ArrayDataset(x))


def test_training_with_dataloader():
    rs = np.random.RandomState(0)
    x = rs.randn(128, 4).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.float32)
    net = gluon.nn.Dense(2, in_units=4)
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    loader = DataLoader(ArrayDataset(x, y), batch_size=16, shuffle=True)
    for _ in range(5):
        for bx, by in loader:
            with mx.autograd.record():
                loss = loss_fn(net(bx), by)
            loss.backward()
            trainer.step(bx.shape[0])
    acc = (net(mx.nd.array(x)).asnumpy().argmax(1) == y).mean()
    assert acc > 0.9


def test_record_file_dataset():
    import json
    from pathlib import Path
    d = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases" / "recordio"
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    ds = gluon.data.RecordFileDataset(str(d / "data.rec"))
    assert len(ds) == len(meta["records"])
    for rec in meta["records"]:
        header, payload = mx.recordio.unpack(ds[rec["idx"]])
        assert header.id == rec["id"]
        assert payload.hex() == rec["payload_hex"]
