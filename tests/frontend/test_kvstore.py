"""mx.kv: MXNet's local KVStore semantics (init/push/pull/pushpull, aggregation over devices in
CommCPU's order, updates in the store, optimizer states) and its errors."""
import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError
from mxc.frontend import kvstore as kvs
from mxc.frontend import optimizer as opt
from mxc.runtime import kvstore as rt

SHAPE = (2, 3)


def _nd(v, shape=SHAPE):
    return mx.nd.array(np.full(shape, v, np.float32))


def _pulled(kv, key, shape=SHAPE):
    out = mx.nd.zeros(shape)
    kv.pull(key, out=out)
    return out.asnumpy()


# ------------------------------------------------------------------------------------------
# basic semantics
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [3, "w"])
def test_init_pull_push(key):
    kv = kvs.create("local")
    kv.init(key, _nd(2))
    np.testing.assert_array_equal(_pulled(kv, key), np.full(SHAPE, 2))
    kv.push(key, _nd(8))                       # no updater: the pushed value replaces it
    np.testing.assert_array_equal(_pulled(kv, key), np.full(SHAPE, 8))
    kv.push(key, _nd(1))
    np.testing.assert_array_equal(_pulled(kv, key), np.full(SHAPE, 1))


def test_init_copies_the_value():
    kv = kvs.create()
    a = _nd(1)
    kv.init(0, a)
    a[:] = 5
    np.testing.assert_array_equal(_pulled(kv, 0), np.ones(SHAPE))


def test_push_list_of_devices_is_summed():
    kv = kvs.create("device")
    kv.init("3", _nd(0))
    kv.push("3", [_nd(i) for i in range(1, 7)])
    np.testing.assert_array_equal(_pulled(kv, "3"), np.full(SHAPE, 21))
    outs = [mx.nd.zeros(SHAPE) for _ in range(3)]
    kv.pull("3", out=outs)                      # broadcast to every device
    for o in outs:
        np.testing.assert_array_equal(o.asnumpy(), np.full(SHAPE, 21))


def test_list_of_keys_with_lists_of_values():
    kv = kvs.create()
    keys = [5, 7, 9]
    kv.init(keys, [_nd(0)] * 3)
    kv.push(keys, [[_nd(k), _nd(1)] for k in keys])
    outs = [[mx.nd.zeros(SHAPE), mx.nd.zeros(SHAPE)] for _ in keys]
    kv.pull(keys, out=outs)
    for k, pair in zip(keys, outs):
        for o in pair:
            np.testing.assert_array_equal(o.asnumpy(), np.full(SHAPE, k + 1))


def test_same_key_twice_in_one_push_is_summed():
    kv = kvs.create()
    kv.init([1, 2], [_nd(0), _nd(0)])
    kv.push([2, 1, 2], [_nd(1), _nd(10), _nd(3)])
    np.testing.assert_array_equal(_pulled(kv, 1), np.full(SHAPE, 10))
    np.testing.assert_array_equal(_pulled(kv, 2), np.full(SHAPE, 4))


def test_pushpull():
    kv = kvs.create()
    kv.init("a", _nd(0))
    out = mx.nd.zeros(SHAPE)
    kv.pushpull("a", [_nd(1), _nd(2)], out=out)
    np.testing.assert_array_equal(out.asnumpy(), np.full(SHAPE, 3))
    vals = [_nd(1), _nd(4)]
    kv.pushpull("a", vals)                      # out defaults to the pushed arrays
    for v in vals:
        np.testing.assert_array_equal(v.asnumpy(), np.full(SHAPE, 5))


def test_broadcast():
    kv = kvs.create()
    outs = [mx.nd.zeros(SHAPE), mx.nd.zeros(SHAPE)]
    kv.broadcast("b", _nd(7), out=outs)
    for o in outs:
        np.testing.assert_array_equal(o.asnumpy(), np.full(SHAPE, 7))


def test_properties_and_barrier():
    kv = kvs.create("local")
    assert kv.type == "local" and kv.rank == 0 and kv.num_workers == 1
    kv.barrier()
    kv._barrier()
    assert kv.is_capable("optimizer")
    assert kvs.create("Device").type == "device"
    kv.set_gradient_compression({"type": "2bit", "threshold": 0.5})   # accepted, no effect
    with pytest.raises(MXNetError):
        kv.set_gradient_compression({"threshold": 0.5})


def test_row_sparse_pull_dense_fallback():
    kv = kvs.create()
    val = np.arange(12, dtype=np.float32).reshape(4, 3)
    kv.init("e", mx.nd.array(val))
    out = mx.nd.ones((4, 3))
    kv.row_sparse_pull("e", out=out, row_ids=mx.nd.array([2, 0, 2], dtype="int64"))
    want = np.zeros_like(val)
    want[[0, 2]] = val[[0, 2]]
    np.testing.assert_array_equal(out.asnumpy(), want)
    rsp = mx.nd.sparse.zeros("row_sparse", (4, 3))
    kv.row_sparse_pull("e", out=rsp, row_ids=mx.nd.array([1], dtype="int64"))
    want = np.zeros_like(val)
    want[1] = val[1]
    np.testing.assert_array_equal(rsp.asnumpy(), want)


# ------------------------------------------------------------------------------------------
# reduction order (MXNet's CommCPU::Reduce)
# ------------------------------------------------------------------------------------------
class _Recorder:
    """ArrayOps on python floats that record the order of operations."""

    def __init__(self):
        self.log = []

    def ops(self):
        def copy(v):
            self.log.append(("copy", v.name))
            return _Val(v.v, "acc")

        def add_n(vs):
            self.log.append(("add_n", tuple(v.name for v in vs)))
            return _Val(sum(v.v for v in vs), "tmp")

        def add_to(dst, src):
            self.log.append(("add_to", src.name))
            dst.v += src.v

        return rt.ArrayOps(copy=copy, assign=lambda d, s: None, add_n=add_n, add_to=add_to)


class _Val:
    shape = ()

    def __init__(self, v, name):
        self.v, self.name = v, name


def test_reduce_order_is_commcpu():
    rec = _Recorder()
    vals = [_Val(float(i), f"v{i}") for i in range(7)]
    out = rt.reduce_sum(rec.ops(), vals)
    assert out.v == sum(range(7))
    assert rec.log == [("copy", "v0"), ("add_n", ("v1", "v2", "v3", "v4")),
                       ("add_to", "tmp"), ("add_n", ("v5", "v6")), ("add_to", "tmp")]
    rec = _Recorder()
    assert rt.reduce_sum(rec.ops(), vals[:1]) is vals[0]        # one value: no copy
    rec = _Recorder()
    rt.reduce_sum(rec.ops(), vals[:6])
    assert rec.log[-1] == ("add_to", "v5")                       # a lone value is added as is


def test_reduce_matches_commcpu_float32_rounding():
    rng = np.random.default_rng(0)
    vals = [(rng.standard_normal(64) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
            for _ in range(7)]
    kv = kvs.create()
    kv.init(0, mx.nd.zeros((64,)))
    kv.push(0, [mx.nd.array(v) for v in vals])
    want = vals[0].copy()
    want = want + (((vals[1] + vals[2]) + vals[3]) + vals[4])
    want = want + (vals[5] + vals[6])
    got = _pulled(kv, 0, (64,))
    np.testing.assert_array_equal(got, want.astype(np.float32))


# ------------------------------------------------------------------------------------------
# updates in the store
# ------------------------------------------------------------------------------------------
def test_updater_runs_at_push():
    kv = kvs.create()
    kv.init("3", _nd(2))
    calls = []

    def update(key, grad, stored):
        calls.append(key)
        stored += grad * 2

    kv._set_updater(update)
    kv.push("3", [_nd(1), _nd(1)])             # summed first, then one update
    assert calls == ["3"]
    np.testing.assert_array_equal(_pulled(kv, "3"), np.full(SHAPE, 6))


def test_set_optimizer_sgd():
    kv = kvs.create()
    kv.init(3, mx.nd.zeros((2, 2)))
    kv.set_optimizer(opt.SGD())                 # MXNet's docstring example
    kv.push(3, mx.nd.ones((2, 2)))
    np.testing.assert_allclose(_pulled(kv, 3, (2, 2)), np.full((2, 2), -0.01), rtol=1e-6)


def _momentum_run(kv, w0, grads):
    for g in grads:
        kv.push("w", mx.nd.array(g))
    return _pulled(kv, "w", w0.shape)


def test_optimizer_states_save_load(tmp_path):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(4)]

    def make():
        kv = kvs.create()
        kv.init("w", mx.nd.array(w0))
        kv.set_optimizer(opt.create("sgd", learning_rate=0.1, momentum=0.9))
        return kv

    full = _momentum_run(make(), w0, grads)

    kv1 = make()
    half = _momentum_run(kv1, w0, grads[:2])
    fname = str(tmp_path / "kv.states")
    kv1.save_optimizer_states(fname)
    kv2 = kvs.create()
    kv2.init("w", mx.nd.array(half))
    kv2.set_optimizer(opt.create("sgd", learning_rate=0.1, momentum=0.9))
    kv2.load_optimizer_states(fname)
    np.testing.assert_array_equal(_momentum_run(kv2, w0, grads[2:]), full)

    # without the momentum state the result differs (the states really were restored)
    kv3 = kvs.create()
    kv3.init("w", mx.nd.array(half))
    kv3.set_optimizer(opt.create("sgd", learning_rate=0.1, momentum=0.9))
    assert not np.allclose(_momentum_run(kv3, w0, grads[2:]), full)

    # dump_optimizer: the optimizer comes back with the states
    kv1.save_optimizer_states(fname, dump_optimizer=True)
    kv4 = kvs.create()
    kv4.init("w", mx.nd.array(half))
    kv4.set_optimizer(opt.create("sgd", learning_rate=5.0))
    kv4.load_optimizer_states(fname)
    np.testing.assert_array_equal(_momentum_run(kv4, w0, grads[2:]), full)


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
def test_uninitialized_key():
    kv = kvs.create()
    kv.init(1, _nd(0))
    with pytest.raises(MXNetError, match="key 4 has not been initialized"):
        kv.push(4, _nd(1))
    with pytest.raises(MXNetError, match="key 4 has not been initialized"):
        kv.pull(4, out=mx.nd.zeros(SHAPE))


def test_shape_mismatch_names_key_and_shapes():
    kv = kvs.create()
    kv.init("w", _nd(0))
    with pytest.raises(MXNetError, match=r"'w' holds shape \(2, 3\).*shape \(3, 3\)"):
        kv.push("w", [_nd(1), _nd(1, (3, 3))])
    np.testing.assert_array_equal(_pulled(kv, "w"), np.zeros(SHAPE))   # nothing changed
    with pytest.raises(MXNetError, match=r"'w' holds shape \(2, 3\).*shape \(4,\)"):
        kv.pull("w", out=mx.nd.zeros((4,)))


def test_duplicate_init_and_key_kinds():
    kv = kvs.create()
    kv.init(1, _nd(0))
    with pytest.raises(MXNetError, match="duplicate init of key 1"):
        kv.init(1, _nd(0))
    with pytest.raises(MXNetError, match="cannot be mixed"):
        kv.init("x", _nd(0))
    with pytest.raises(MXNetError, match="inconsistent types of keys"):
        kvs.create().init([1, "x"], [_nd(0), _nd(0)])
    with pytest.raises(MXNetError, match="3 keys but 2 values"):
        kvs.create().init([1, 2, 3], [_nd(0), _nd(0)])


@pytest.mark.parametrize("name", ["dist_sync", "dist_async", "dist_device_sync"])
def test_dist_types_not_supported_yet(name):
    with pytest.raises(MXNetError, match="not supported yet: distributed KVStore comes with "
                                         "the MPI back end"):
        kvs.create(name)


def test_unknown_type_and_missing_optimizer(tmp_path):
    with pytest.raises(MXNetError, match="unknown kvstore type"):
        kvs.create("bogus")
    with pytest.raises(TypeError):
        kvs.create(3)
    kv = kvs.create()
    with pytest.raises(MXNetError, match="no optimizer is set"):
        kv.save_optimizer_states(str(tmp_path / "x"))
    with pytest.raises(MXNetError, match="out must be given"):
        kv.pull(1)


def test_backend_registry_plugs_in_a_store():
    created = []

    def factory(type_name):
        created.append(type_name)
        return rt.LocalStore(kvs.NDARRAY_OPS, type_name)

    kvs.register_backend(lambda t: t == "test_plugin", factory)
    try:
        kv = kvs.create("test_plugin")
        kv.init(0, _nd(1))
        assert created == ["test_plugin"] and kv.type == "test_plugin"
        np.testing.assert_array_equal(_pulled(kv, 0), np.ones(SHAPE))
    finally:
        del kvs._BACKENDS[0]
