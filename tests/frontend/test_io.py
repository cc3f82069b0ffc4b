"""mx.io: DataDesc/DataBatch, NDArrayIter's batching and last-batch handling (MXNet's own
test and doc examples), input naming, shuffling, ResizeIter, PrefetchingIter, CSVIter's
round_batch semantics, MNISTIter on synthetic idx files."""
import pickle
import struct

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError
from mxc.frontend import io


def _rows(batch, i=0):
    return batch.data[i].asnumpy()


# --------------------------------------------------------------------------------------------
# descriptors
# --------------------------------------------------------------------------------------------
def test_data_desc():
    d = io.DataDesc("data", (3, 4), np.float16, "NTC")
    assert d.name == "data" and d.shape == (3, 4) and d.dtype == np.float16 and d.layout == "NTC"
    assert d == ("data", (3, 4)) and d[1] == (3, 4)
    assert repr(d) == "DataDesc[data,(3, 4),<class 'numpy.float16'>,NTC]"
    assert io.DataDesc("x", (1,)).dtype == np.float32 and io.DataDesc("x", (1,)).layout == "NCHW"
    assert io.DataDesc.get_batch_axis("NCHW") == 0
    assert io.DataDesc.get_batch_axis("TNC") == 1
    assert io.DataDesc.get_batch_axis(None) == 0
    descs = io.DataDesc.get_list([("a", (1, 2)), ("b", (3,))], [("a", np.int32), ("b", np.uint8)])
    assert [(x.name, x.shape, x.dtype) for x in descs] == [("a", (1, 2), np.int32),
                                                           ("b", (3,), np.uint8)]
    assert io.DataDesc.get_list([("a", (1,))], None)[0].dtype == np.float32
    d2 = pickle.loads(pickle.dumps(d))
    assert d2 == d and d2.layout == "NTC" and d2.dtype == np.float16


def test_data_batch():
    b = io.DataBatch([mx.nd.zeros((2, 3))], [mx.nd.zeros((2,))], pad=1, index=np.arange(2))
    assert b.pad == 1 and b.bucket_key is None
    assert str(b) == "DataBatch: data shapes: [(2, 3)] label shapes: [(2,)]"
    with pytest.raises(MXNetError):
        io.DataBatch(mx.nd.zeros((2, 3)))


# --------------------------------------------------------------------------------------------
# NDArrayIter
# --------------------------------------------------------------------------------------------
def _ranges():
    data = np.ones([1000, 2, 2])
    labels = np.ones([1000, 1])
    for i in range(1000):
        data[i] = i / 100
        labels[i] = i / 100
    return data, labels


def test_ndarrayiter_last_batch_handle_mxnet_test():
    """MXNet's tests/python/unittest/test_io.py::_test_last_batch_handle."""
    data, labels = _ranges()
    cache = None
    for handle, (count0, count8), nbatch in [("pad", (124, 100), 8),
                                              ("discard", (100, 96), 7),
                                              ("roll_over", (100, 96), 7)]:
        it = io.NDArrayIter(data, labels, 128, False, last_batch_handle=handle)
        counts = np.zeros(10, int)
        n = 0
        for batch in it:
            label = batch.label[0].asnumpy().flatten()
            assert (_rows(batch)[:, 0, 0] == label).all(), handle
            np.add.at(counts, label.astype(int), 1)
            n += 1
            if handle == "pad" and n == 8:
                cache = _rows(batch)
                assert batch.pad == 24
        assert (counts[0], counts[8]) == (count0, count8), handle
        assert n == nbatch, handle
    # roll_over: the next epoch starts with the 104 leftover examples + 24 from the start
    it.reset()
    first = it.next()
    np.testing.assert_array_equal(_rows(first), cache)
    assert first.pad == 104


def test_ndarrayiter_doc_examples():
    data = np.arange(40).reshape((10, 2, 2))
    labels = np.ones([10, 1])
    for handle, nb in [("pad", 4), ("discard", 3), ("roll_over", 3)]:
        it = io.NDArrayIter(data, labels, 3, True, last_batch_handle=handle)
        assert sum(1 for _ in it) == nb
    it = io.NDArrayIter(data, labels, 3, False, last_batch_handle="roll_over")
    assert sum(1 for _ in it) == 3
    it.reset()
    np.testing.assert_array_equal(_rows(it.next()),
                                  [[[36, 37], [38, 39]], [[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    assert [(x.name, x.shape, x.dtype) for x in it.provide_data] == \
        [("data", (3, 2, 2), np.float32)]
    assert [(x.name, x.shape) for x in it.provide_label] == [("softmax_label", (3, 1))]
    # the rest of the second epoch, then a third epoch rolling over again
    rest = [_rows(b)[:, 0, 0].tolist() for b in it]
    assert rest == [[8, 12, 16], [20, 24, 28]]
    it.reset()
    assert [_rows(b)[:, 0, 0].tolist() for b in it] == [[32, 36, 0], [4, 8, 12],
                                                        [16, 20, 24], [28, 32, 36]]
    it.hard_reset()
    assert _rows(it.next())[:, 0, 0].tolist() == [0, 4, 8]


def test_ndarrayiter_pad_smaller_than_batch_and_getters():
    it = io.NDArrayIter(np.arange(3), np.arange(3) * 10, batch_size=8)
    batches = list(it)
    assert len(batches) == 1
    b = batches[0]
    assert _rows(b).tolist() == [0, 1, 2, 0, 1, 2, 0, 1] and b.pad == 5
    assert b.label[0].asnumpy().tolist() == [0, 10, 20, 0, 10, 20, 0, 10]
    it.reset()
    assert it.iter_next() and it.getpad() == 5 and it.getindex() is None
    assert it.getdata()[0].shape == (8,)


def test_ndarrayiter_names_and_types():
    a, b = np.zeros((6, 2)), np.ones((6, 3), np.int32)
    it = io.NDArrayIter([a, b], None, 2)
    assert [d.name for d in it.provide_data] == ["_0_data", "_1_data"]
    assert it.provide_label == []
    batch = it.next()
    assert batch.label == [] and [x.shape for x in batch.data] == [(2, 2), (2, 3)]
    # numpy inputs become float32 (mx.nd.array), NDArrays keep their dtype
    assert [d.dtype for d in it.provide_data] == [np.float32, np.float32]
    it = io.NDArrayIter({"b_in": mx.nd.array(b, dtype="int32"), "a_in": a},
                        {"lab": np.arange(6)}, 4, data_name="ignored")
    assert [d.name for d in it.provide_data] == ["a_in", "b_in"]       # sorted by name
    assert it.provide_data[1].dtype == np.int32
    assert [d.name for d in it.provide_label] == ["lab"]
    it = io.NDArrayIter(mx.nd.ones((4, 2)), mx.nd.zeros(4), 2, data_name="x", label_name="y")
    assert [d.name for d in it.provide_data + it.provide_label] == ["x", "y"]
    with pytest.raises(MXNetError):
        io.NDArrayIter(np.zeros((4, 2)), np.zeros(5), 2)
    with pytest.raises(MXNetError):
        io.NDArrayIter(np.zeros((4, 2)), None, 2, last_batch_handle="bogus")
    with pytest.raises(TypeError):
        io.NDArrayIter(42)


def test_ndarrayiter_shuffle_keeps_pairs():
    data = np.arange(20, dtype=np.float32).reshape(10, 2)
    label = np.arange(10, dtype=np.float32)
    np.random.seed(0)
    it = io.NDArrayIter(data, label, 5, shuffle=True, last_batch_handle="discard")
    seen = []
    for b in it:
        d, lab = _rows(b), b.label[0].asnumpy()
        np.testing.assert_array_equal(d[:, 0], lab * 2)
        seen.extend(lab.tolist())
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    np.random.seed(0)
    it2 = io.NDArrayIter(data, label, 5, shuffle=True, last_batch_handle="discard")
    assert [x for b in it2 for x in b.label[0].asnumpy().tolist()] == seen
    it = io.NDArrayIter(mx.nd.array(np.arange(4), dtype="int64"), None, 2, shuffle=True)
    assert it.provide_data[0].dtype == np.int64      # shuffling keeps the dtype


def test_resize_iter():
    nd_iter = io.NDArrayIter(mx.nd.array(np.arange(100 * 10).reshape(100, 10)), batch_size=25)
    r = io.ResizeIter(nd_iter, 2)
    assert r.provide_data == nd_iter.provide_data and r.batch_size == 25
    assert [_rows(b)[0, 0] for b in r] == [0, 250]
    r.reset()
    r = io.ResizeIter(nd_iter, 6, reset_internal=False)
    assert [_rows(b)[0, 0] for b in r] == [0, 250, 500, 750, 0, 250]   # wraps around
    assert r.getpad() == 0 and r.getindex() is None


def test_prefetching_iter():
    it1 = io.NDArrayIter({"data": mx.nd.ones((100, 10))}, batch_size=25)
    it2 = io.NDArrayIter({"data": mx.nd.zeros((100, 10))}, batch_size=25)
    p = io.PrefetchingIter([it1, it2], rename_data=[{"data": "data_1"}, {"data": "data_2"}])
    assert [(d.name, d.shape) for d in p.provide_data] == [("data_1", (25, 10)),
                                                           ("data_2", (25, 10))]
    assert p.batch_size == 25
    for epoch in range(2):
        batches = list(p)
        assert len(batches) == 4
        assert all(_rows(b, 0).sum() == 250 and _rows(b, 1).sum() == 0 for b in batches)
        p.reset()
    p.close()
    single = io.PrefetchingIter(io.NDArrayIter(np.arange(5), np.arange(5), 2))
    out = [(_rows(b).tolist(), b.label[0].asnumpy().tolist(), b.pad) for b in single]
    assert out == [([0, 1], [0, 1], 0), ([2, 3], [2, 3], 0), ([4, 0], [4, 0], 1)]
    single.close()


# --------------------------------------------------------------------------------------------
# CSVIter / MNISTIter / unsupported
# --------------------------------------------------------------------------------------------
def _write_csv(path, arr):
    path.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in arr) + "\n")


def test_csv_iter_round_batch(tmp_path):
    data = np.arange(15, dtype=np.float32).reshape(5, 3)
    _write_csv(tmp_path / "d.csv", data)
    _write_csv(tmp_path / "l.csv", np.arange(5).reshape(5, 1) + 100)
    it = io.CSVIter(data_csv=str(tmp_path / "d.csv"), data_shape=(3,),
                    label_csv=str(tmp_path / "l.csv"), batch_size=2)
    assert it.provide_data[0].shape == (2, 3) and it.provide_label[0].shape == (2,)
    e1 = [(_rows(b)[:, 0].tolist(), b.label[0].asnumpy().tolist(), b.pad) for b in it]
    # the last batch wraps to the start; the next epoch resumes after the wrapped examples
    assert e1 == [([0, 3], [100, 101], 0), ([6, 9], [102, 103], 0), ([12, 0], [104, 100], 1)]
    it.reset()
    e2 = [(_rows(b)[:, 0].tolist(), b.pad) for b in it]
    assert e2 == [([3, 6], 0), ([9, 12], 0)]
    it.reset()
    assert [_rows(b)[:, 0].tolist() for b in it] == [[0, 3], [6, 9], [12, 0]]


def test_csv_iter_no_round_batch_and_defaults(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    _write_csv(tmp_path / "d.csv", data.reshape(3, 4))
    it = io.CSVIter(data_csv=str(tmp_path / "d.csv"), data_shape=(2, 2), batch_size=2,
                    round_batch=False)
    batches = list(it)
    assert len(batches) == 2 and batches[1].pad == 1
    np.testing.assert_array_equal(_rows(batches[0]), data[:2])
    np.testing.assert_array_equal(_rows(batches[1])[0], data[2])
    assert batches[1].label[0].asnumpy().tolist() == [0, 0]            # no label_csv: zeros
    it.reset()
    assert len(list(it)) == 2
    ints = io.CSVIter(data_csv=str(tmp_path / "d.csv"), data_shape=(4,), batch_size=3,
                      dtype="int32")
    assert ints.next().data[0].dtype == np.int32
    with pytest.raises(MXNetError, match="do not match"):
        io.CSVIter(data_csv=str(tmp_path / "d.csv"), data_shape=(3,), batch_size=1)
    with pytest.raises(MXNetError, match="cannot open"):
        io.CSVIter(data_csv=str(tmp_path / "none.csv"), data_shape=(3,), batch_size=1)


def _write_mnist(tmp_path, n=10, rows=4, cols=3):
    imgs = (np.arange(n * rows * cols) % 256).astype(np.uint8).reshape(n, rows, cols)
    labs = (np.arange(n) % 10).astype(np.uint8)
    (tmp_path / "img").write_bytes(struct.pack(">iiii", 2051, n, rows, cols) + imgs.tobytes())
    (tmp_path / "lab").write_bytes(struct.pack(">ii", 2049, n) + labs.tobytes())
    return imgs, labs


def test_mnist_iter(tmp_path):
    imgs, labs = _write_mnist(tmp_path)
    it = io.MNISTIter(image=str(tmp_path / "img"), label=str(tmp_path / "lab"), batch_size=4,
                      shuffle=False, silent=True)
    batches = list(it)
    assert len(batches) == 2                            # the incomplete batch is dropped
    assert batches[0].data[0].shape == (4, 1, 4, 3) and batches[0].label[0].shape == (4,)
    np.testing.assert_allclose(_rows(batches[1])[:, 0], imgs[4:8] / 256.0)
    assert batches[1].label[0].asnumpy().tolist() == labs[4:8].tolist()
    flat = io.MNISTIter(image=str(tmp_path / "img"), label=str(tmp_path / "lab"), batch_size=5,
                        flat=True, shuffle=True, seed=3, silent=True)
    seen = []
    for b in flat:
        assert b.data[0].shape == (5, 12)
        d, lab = _rows(b), b.label[0].asnumpy()
        for row, lb in zip(d, lab):                      # images stay with their labels
            np.testing.assert_allclose(row, imgs[int(lb)].reshape(-1) / 256.0)
        seen += lab.tolist()
    assert sorted(seen) == list(range(10))
    part = io.MNISTIter(image=str(tmp_path / "img"), label=str(tmp_path / "lab"), batch_size=5,
                        shuffle=False, num_parts=2, part_index=1, silent=True)
    assert part.next().label[0].asnumpy().tolist() == [5, 6, 7, 8, 9]


def test_unsupported_iters():
    for name in ("ImageRecordIter", "ImageRecordUInt8Iter", "ImageDetRecordIter", "LibSVMIter"):
        with pytest.raises(MXNetError, match="not supported"):
            getattr(io, name)(path_imgrec="x.rec", data_shape=(3, 4, 4), batch_size=1)


def test_prefetching_iter_is_collected():
    import gc
    import weakref
    p = io.PrefetchingIter(io.NDArrayIter(np.arange(4), None, 2))
    threads = list(p.prefetch_threads)
    ref = weakref.ref(p)
    del p
    gc.collect()
    assert ref() is None
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()


def test_ndarrayiter_csr_discard_only():
    csr = mx.nd.array(np.arange(40).reshape((10, 4))).tostype("csr")
    it = io.NDArrayIter(csr, np.arange(10), 3, last_batch_handle="discard", shuffle=True)
    batches = list(it)
    assert len(batches) == 3 and all(b.data[0].stype == "csr" for b in batches)
    for b in batches:     # rows stay with their labels through the shuffle
        dense = b.data[0].tostype("default").asnumpy()
        np.testing.assert_array_equal(dense[:, 0], b.label[0].asnumpy() * 4)
    with pytest.raises(NotImplementedError):
        io.NDArrayIter(csr, None, 3)
