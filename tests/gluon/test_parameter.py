"""gluon.Parameter, Constant and ParameterDict (MXNet 1.x semantics)."""
import warnings

import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.base import MXNetError
from mxc.gluon.parameter import DeferredInitializationError, ParameterLoadError


def test_initialize_data_grad():
    p = gluon.Parameter("weight", shape=(3, 4), init=mx.init.Constant(2.0))
    p.initialize(ctx=mx.cpu(0))
    np.testing.assert_array_equal(p.data().asnumpy(), np.full((3, 4), 2, np.float32))
    assert p.data(mx.cpu(0)) is p.data()
    assert len(p.list_data()) == 1
    np.testing.assert_array_equal(p.grad().asnumpy(), np.zeros((3, 4)))
    assert p.list_ctx() == [mx.cpu(0)]
    assert p.dtype == np.float32
    assert repr(p) == "Parameter weight (shape=(3, 4), dtype=<class 'numpy.float32'>)"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p.initialize()
    assert "already initialized" in str(w[0].message)
    p.initialize(init=mx.init.One(), force_reinit=True)
    np.testing.assert_array_equal(p.data().asnumpy(), np.ones((3, 4)))


def test_uninitialized_and_deferred_errors():
    p = gluon.Parameter("w", shape=(2, 3))
    with pytest.raises(MXNetError, match="has not been initialized"):
        p.data()
    q = gluon.Parameter("q", shape=(2, 0), allow_deferred_init=True)
    q.initialize()
    with pytest.raises(DeferredInitializationError):
        q.data()
    assert q.list_ctx() == [mx.cpu()]
    q.shape = (2, 5)
    q._finish_deferred_init()
    assert q.data().shape == (2, 5)
    r = gluon.Parameter("r", shape=(2, 0))
    with pytest.raises(ValueError, match="invalid shape"):
        r.initialize()


def test_shape_merge_rules():
    p = gluon.Parameter("w", shape=(4, 0))
    p.shape = (4, 7)
    assert p.shape == (4, 7)
    with pytest.raises(AssertionError, match="incompatible"):
        p.shape = (4, 8)
    with pytest.raises(AssertionError):
        p.shape = (4, 7, 1)
    p2 = gluon.Parameter("v")
    p2.shape = (3,)
    assert p2.shape == (3,)
    with mx.util.np_shape(True):
        assert gluon.Parameter("u", shape=(2, 0)).shape == (2, -1)


def test_grad_req_null_and_add():
    p = gluon.Parameter("w", shape=(2,), grad_req="null")
    p.initialize()
    with pytest.raises(MXNetError, match="grad_req='null'"):
        p.grad()
    p.grad_req = "write"
    assert p.grad().shape == (2,)
    with pytest.raises(AssertionError):
        p.grad_req = "bogus"
    q = gluon.Parameter("q", shape=(2,), grad_req="add", init=mx.init.One())
    q.initialize()
    for _ in range(2):
        with autograd.record():
            y = q.data() * 3
        y.backward()
    np.testing.assert_array_equal(q.grad().asnumpy(), [6, 6])
    q.zero_grad()
    np.testing.assert_array_equal(q.grad().asnumpy(), [0, 0])
    nd_ = gluon.Parameter("nd", shape=(2,), differentiable=False)
    assert nd_.grad_req == "null"


def test_set_data_cast_reset_ctx():
    p = gluon.Parameter("w", shape=(2, 2))
    p.initialize()
    arr = p.data()
    p.set_data(mx.nd.ones((2, 2)) * 5)
    assert p.data() is arr  # copied into the existing array
    np.testing.assert_array_equal(arr.asnumpy(), np.full((2, 2), 5))
    p.cast("float64")
    assert p.data().dtype == np.float64 and p.grad().dtype == np.float64
    p.reset_ctx([mx.cpu(0), mx.cpu(1)])
    assert p.list_ctx() == [mx.cpu(0), mx.cpu(1)]
    assert p.data(mx.cpu(1)).context == mx.cpu(1)
    np.testing.assert_array_equal(p.data(mx.cpu(1)).asnumpy(), np.full((2, 2), 5))
    with pytest.raises(MXNetError, match="was not initialized on context"):
        p.data(mx.cpu(2))


def test_deferred_set_data():
    p = gluon.Parameter("w", shape=(0, 3), allow_deferred_init=True)
    p.initialize()
    p.set_data(mx.nd.ones((2, 3)))
    p._finish_deferred_init()
    np.testing.assert_array_equal(p.data().asnumpy(), np.ones((2, 3)))


def test_var_attributes():
    p = gluon.Parameter("fc_weight", shape=(4, 5), lr_mult=2.0, wd_mult=0.5, init="zeros")
    v = p.var()
    assert v.name == "fc_weight"
    assert v.list_attr() == {"__shape__": "(4, 5)", "__dtype__": "0", "__lr_mult__": "2.0",
                             "__wd_mult__": "0.5", "__init__": "zeros",
                             "__storage_type__": "0"}
    assert p.var() is v
    x = gluon.Parameter("x", shape=(2,), init=mx.init.Uniform(0.3))
    assert x.var().attr("__init__") == mx.init.Uniform(0.3).dumps()


def test_constant():
    c = gluon.Constant("const", [[1, 2], [3, 4]])
    assert c.grad_req == "null"
    c.initialize()
    np.testing.assert_array_equal(c.data().asnumpy(), [[1, 2], [3, 4]])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c.grad_req = "write"
    assert c.grad_req == "null" and w
    assert repr(c).startswith("Constant const (shape=(2, 2)")
    pd = gluon.ParameterDict("blk_")
    k = pd.get_constant("k", np.arange(3))
    assert k.name == "blk_k" and pd.get_constant("k") is k
    with pytest.raises(KeyError):
        pd.get_constant("missing")


def test_parameter_dict_get_and_share():
    pd = gluon.ParameterDict("net_")
    w = pd.get("weight", shape=(3, 0), allow_deferred_init=True)
    assert w.name == "net_weight"
    assert pd.get("weight", shape=(3, 4)) is w and w.shape == (3, 4)
    with pytest.raises(AssertionError, match="does not match"):
        pd.get("weight", shape=(5, 4))
    assert pd.get("weight", dtype="float32") is w
    shared = gluon.ParameterDict("net_", shared=pd)
    assert shared.get("weight") is w
    assert list(shared.keys()) == ["net_weight"]
    other = gluon.ParameterDict("x_")
    other.get("weight", shape=(1,))
    pd.update(other)
    assert list(pd.keys()) == ["net_weight", "x_weight"]
    clash = gluon.ParameterDict("x_")
    clash.get("weight", shape=(1,))
    with pytest.raises(AssertionError):
        pd.update(clash)
    assert "net_weight" in repr(pd)


def test_parameter_dict_initialize_setattr_zero_grad():
    pd = gluon.ParameterDict("p_")
    pd.get("weight", shape=(2, 3))
    pd.get("bias", shape=(2,), init="ones")
    pd.initialize(mx.init.Constant(0.5))
    np.testing.assert_array_equal(pd["p_weight"].data().asnumpy(), np.full((2, 3), 0.5))
    np.testing.assert_array_equal(pd["p_bias"].data().asnumpy(), np.ones(2))
    pd.setattr("lr_mult", 0.1)
    assert all(p.lr_mult == 0.1 for p in pd.values())
    pd["p_weight"].grad()[:] = 3
    pd.zero_grad()
    assert pd["p_weight"].grad().asnumpy().sum() == 0
    pd.setattr("grad_req", "null")
    assert pd["p_bias"]._grad is None


def test_parameter_dict_save_load(tmp_path):
    pd = gluon.ParameterDict("net_")
    pd.get("weight", shape=(2, 3))
    pd.get("bias", shape=(2,))
    pd.initialize()
    f = str(tmp_path / "p.params")
    pd.save(f, strip_prefix="net_")
    assert sorted(mx.nd.load(f)) == ["bias", "weight"]
    with pytest.raises(ValueError, match="does not start with"):
        pd.save(f, strip_prefix="other_")
    pd2 = gluon.ParameterDict("net_")
    pd2.get("weight", shape=(2, 0), allow_deferred_init=True)
    pd2.get("bias", shape=(2,))
    pd2.load(f, restore_prefix="net_")
    np.testing.assert_array_equal(pd2["net_weight"].data().asnumpy(),
                                  pd["net_weight"].data().asnumpy())
    assert pd2["net_weight"].shape == (2, 3)


def test_parameter_dict_load_errors_name_the_parameters(tmp_path):
    f = str(tmp_path / "p.params")
    mx.nd.save(f, {"arg:a_weight": mx.nd.ones((2,)), "aux:a_extra": mx.nd.ones((1,))})
    pd = gluon.ParameterDict("a_")
    pd.get("weight", shape=(2,))
    pd.get("bias", shape=(2,))
    with pytest.raises(MXNetError, match="'a_bias'.*missing"):
        pd.load(f)
    with pytest.raises(ParameterLoadError, match="'a_extra'.*not present"):
        pd.load(f, allow_missing=True)
    pd.load(f, allow_missing=True, ignore_extra=True)
    np.testing.assert_array_equal(pd["a_weight"].data().asnumpy(), [1, 1])
    bad = gluon.ParameterDict("a_")
    bad.get("weight", shape=(3,))
    with pytest.raises(AssertionError, match="shape incompatible"):
        bad.load(f, ignore_extra=True)
    dt = gluon.ParameterDict("a_")
    dt.get("weight", shape=(2,), dtype="float64")
    with pytest.raises(AssertionError, match="dtype incompatible"):
        dt.load(f, ignore_extra=True)
    dt.load(f, ignore_extra=True, cast_dtype=True)
    assert dt["a_weight"].data().dtype == np.float64
    saved = gluon.ParameterDict("a_")
    saved.get("weight", shape=(2,), dtype="float64")
    saved.load(f, ignore_extra=True, cast_dtype=True, dtype_source="saved")
    assert saved["a_weight"].data().dtype == np.float32
