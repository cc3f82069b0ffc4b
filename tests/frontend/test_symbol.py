"""mx.sym: MXNet's names (auto names, argument/output/aux names), attributes, composition,
arithmetic, shape/type inference and JSON round trips."""
import json
from pathlib import Path

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"


def _mlp():
    data = mx.sym.var("data")
    fc1 = mx.sym.FullyConnected(data=data, num_hidden=16, name="fc1")
    act = mx.sym.Activation(fc1, act_type="relu", name="relu1")
    fc2 = mx.sym.FullyConnected(act, num_hidden=4, name="fc2")
    return mx.sym.SoftmaxOutput(fc2, name="softmax")


def test_argument_names_like_mxnet():
    fc = mx.sym.FullyConnected(data=mx.sym.var("data"), num_hidden=10, name="fc1")
    assert fc.list_arguments() == ["data", "fc1_weight", "fc1_bias"]
    assert fc.list_outputs() == ["fc1_output"]
    assert fc.name == "fc1"
    nb = mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=3, no_bias=True, name="f")
    assert nb.list_arguments() == ["x", "f_weight"]
    bn = mx.sym.BatchNorm(mx.sym.var("data"), name="bn")
    assert bn.list_arguments() == ["data", "bn_gamma", "bn_beta"]
    assert bn.list_auxiliary_states() == ["bn_moving_mean", "bn_moving_var"]
    assert bn.list_inputs() == ["data", "bn_gamma", "bn_beta", "bn_moving_mean",
                                "bn_moving_var"]
    assert bn.list_outputs() == ["bn_output"]
    sm = _mlp()
    assert sm.list_arguments() == ["data", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias",
                                   "softmax_label"]
    assert sm.list_outputs() == ["softmax_output"]


def test_auto_names_and_prefix():
    with mx.name.NameManager():
        d = mx.sym.var("data")
        a = mx.sym.FullyConnected(d, num_hidden=3)
        b = mx.sym.Convolution(d, kernel=(3, 3), num_filter=4)
        c = mx.sym.Convolution(d, kernel=(3, 3), num_filter=4)
        assert (a.name, b.name, c.name) == ("fullyconnected0", "convolution0", "convolution1")
        assert c.list_arguments() == ["data", "convolution1_weight", "convolution1_bias"]
        assert (d + 1).name == "_plusscalar0"
        assert (d * d).name == "_mul0"
        assert (2 - d).name == "_rminusscalar0"
        assert (-d).name == "_mulscalar0"
        assert (d + d).name == "_plus0"
    with mx.name.Prefix("net_"):
        p = mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=2)
        q = mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=2, name="out")
    assert p.name == "net_fullyconnected0" and q.name == "net_out"
    assert p.list_arguments() == ["x", "net_fullyconnected0_weight",
                                  "net_fullyconnected0_bias"]


def test_multi_output_names_and_indexing():
    d = mx.sym.var("data")
    sp = mx.sym.split(d, num_outputs=3, name="split0")
    assert sp.list_outputs() == ["split0_output0", "split0_output1", "split0_output2"]
    assert len(sp) == 3 and sp[1].list_outputs() == ["split0_output1"]
    assert sp["split0_output2"].list_outputs() == ["split0_output2"]
    assert [s.list_outputs()[0] for s in sp] == sp.list_outputs()
    with pytest.raises(ValueError):
        sp["nope"]
    assert sp.name is None and sp[0].name == "split0"


def test_arithmetic_ops_in_graph():
    a, b = mx.sym.var("a"), mx.sym.var("b")
    e = (a + b) * 2 - a / b + a ** 2
    ops = [n["op"] for n in json.loads(e.tojson())["nodes"]]
    assert {"elemwise_add", "_mul_scalar", "elemwise_div", "elemwise_sub",
            "_power_scalar"} <= set(ops)
    x = np.random.default_rng(0).uniform(1, 2, (2, 3)).astype(np.float32)
    y = np.random.default_rng(1).uniform(1, 2, (2, 3)).astype(np.float32)
    out = e.eval(ctx=mx.cpu(), a=mx.nd.array(x), b=mx.nd.array(y))[0]
    np.testing.assert_allclose(out.asnumpy(), (x + y) * 2 - x / y + x ** 2, rtol=1e-5)


def test_group_internals_children():
    sm = _mlp()
    fc1 = sm.get_internals()["fc1_output"]
    assert fc1.list_outputs() == ["fc1_output"]
    internals = sm.get_internals().list_outputs()
    assert internals[:4] == ["data", "fc1_weight", "fc1_bias", "fc1_output"]
    assert internals[-1] == "softmax_output"
    g = mx.sym.Group([fc1, sm])
    assert g.list_outputs() == ["fc1_output", "softmax_output"]
    assert repr(g) == "<Symbol group [fc1, softmax]>" and repr(fc1) == "<Symbol fc1>"
    assert sm.get_children().list_outputs() == ["fc2_output", "softmax_label"]
    assert mx.sym.var("x").get_children() is None


def test_variable_attributes():
    v = mx.sym.var("w", shape=(2, 3), lr_mult=2.0, wd_mult=0.5, dtype="float16", init="zeros",
                   __extra__="1")
    assert v.list_attr() == {"__shape__": "(2, 3)", "__lr_mult__": "2.0",
                             "__wd_mult__": "0.5", "__dtype__": "2", "__init__": "zeros",
                             "__extra__": "1"}
    assert v.attr("lr_mult") == "2.0" and v.attr("missing") is None
    with pytest.raises(ValueError):
        mx.sym.var("w", foo=1)
    with mx.AttrScope(ctx_group="dev1"):
        fc = mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=2, name="q",
                                   attr={"lr_mult": "0.1"})
    ad = fc.attr_dict()
    assert ad["q"]["__ctx_group__"] == "dev1" and ad["q"]["__lr_mult__"] == "0.1"
    # nnvm copies the node's attributes onto the variables it creates
    assert ad["q_weight"] == {"num_hidden": "2", "__ctx_group__": "dev1",
                              "__lr_mult__": "0.1"}
    bn = mx.sym.BatchNorm(mx.sym.var("d"), name="bn")
    assert bn.attr_dict()["bn_moving_mean"] == {"__init__": '["zero", {}]'}
    assert bn.attr_dict()["bn_moving_var"] == {"__init__": '["one", {}]'}


def test_compose():
    fc = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=4, name="fc")
    x = mx.sym.var("x")
    comp = fc(data=mx.sym.Activation(x, act_type="relu", name="act"))
    assert comp.list_arguments() == ["x", "fc_weight", "fc_bias"]
    assert fc.list_arguments() == ["data", "fc_weight", "fc_bias"]  # the original unchanged
    pos = fc(x)
    assert pos.list_arguments()[0] == "x"
    with pytest.raises(MXNetError):
        fc(nothere=x)


def test_bad_op_attributes():
    with pytest.raises(MXNetError):
        mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=2, bogus=3)
    with pytest.raises(MXNetError):
        mx.sym.FullyConnected(mx.sym.var("x"))  # num_hidden is required
    with pytest.raises(MXNetError):
        mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=2, nothere=mx.sym.var("y"))


def test_infer_shape_mlp():
    sm = _mlp()
    arg, out, aux = sm.infer_shape(data=(8, 20))
    assert arg == [(8, 20), (16, 20), (16,), (4, 16), (4,), (8,)]
    assert out == [(8, 4)] and aux == []
    arg2, _, _ = sm.infer_shape((8, 20))
    assert arg2 == arg
    assert sm.infer_shape() == (None, None, None)
    parg, _, _ = sm.infer_shape_partial(fc1_weight=(16, 20))
    assert parg[1] == (16, 20) and parg[0] == ()
    with pytest.raises(MXNetError):
        sm.infer_shape(nothere=(1, 2))
    with pytest.raises(MXNetError):
        sm.infer_shape(data=(8, 20), fc1_weight=(3, 3))


def test_infer_shape_convnet():
    data = mx.sym.var("data")
    c = mx.sym.Convolution(data, kernel=(3, 3), num_filter=8, pad=(1, 1), name="conv1")
    b = mx.sym.BatchNorm(c, name="bn1")
    p = mx.sym.Pooling(mx.sym.Activation(b, act_type="relu"), kernel=(2, 2), stride=(2, 2),
                       pool_type="max")
    f = mx.sym.FullyConnected(mx.sym.Flatten(p), num_hidden=10, name="fc")
    arg, out, aux = f.infer_shape(data=(2, 3, 16, 16))
    assert dict(zip(f.list_arguments(), arg)) == {
        "data": (2, 3, 16, 16), "conv1_weight": (8, 3, 3, 3), "conv1_bias": (8,),
        "bn1_gamma": (8,), "bn1_beta": (8,), "fc_weight": (10, 512), "fc_bias": (10,)}
    assert out == [(2, 10)] and aux == [(8,), (8,)]


def test_infer_type():
    sm = _mlp()
    arg, out, _ = sm.infer_type(data="float64")
    assert arg == [np.float64] * 6 and out == [np.float64]
    assert sm.infer_type() == (None, None, None)
    a, _, _ = sm.infer_type_partial()
    assert a == [None] * 6


def test_json_round_trip(tmp_path):
    sm = _mlp()
    js = sm.tojson()
    d = json.loads(js)
    assert d["attrs"] == {"mxnet_version": ["int", 10901]}
    back = mx.sym.load_json(js)
    assert back.tojson() == js
    assert back.list_arguments() == sm.list_arguments()
    f = tmp_path / "net-symbol.json"
    sm.save(str(f))
    assert mx.sym.load(str(f)).tojson() == js
    assert back.infer_shape(data=(2, 5))[1] == [(2, 4)]


@pytest.mark.parametrize("case", ["sym_mlp", "sym_elemwise_ops", "sym_reshape_ops",
                                  "sym_loss_ops", "sym_reduce_ops", "mlp"])
def test_mxnet_json_byte_exact(case):
    """Real MXNet files load and are written back byte for byte."""
    f = CASES / case / f"{case}-symbol.json"
    if not f.exists():
        pytest.skip("reference cases absent")
    s = mx.sym.load(str(f))
    assert s.tojson() == f.read_text()


def test_mxnet_json_names_and_shapes():
    f = CASES / "sym_convnet" / "sym_convnet-symbol.json"
    if not f.exists():
        pytest.skip("reference cases absent")
    meta = json.loads((CASES / "sym_convnet" / "meta.json").read_text())
    s = mx.sym.load(str(f))
    assert s.list_arguments() == meta["arguments"]
    assert s.list_auxiliary_states() == meta["aux_states"]
    shapes = {i["name"]: tuple(i["shape"]) for i in meta["inputs"]}
    arg, _, aux = s.infer_shape(**shapes)
    internal = meta["internal_shapes"]
    for n, shp in zip(s.list_arguments(), arg):
        assert list(shp) == internal[n], n
    for n, shp in zip(s.list_auxiliary_states(), aux):
        assert list(shp) == internal[n], n


def test_creation_wrappers_and_pickle():
    import pickle
    z = mx.sym.zeros((2, 3))
    assert z.infer_shape()[1] == [(2, 3)] and z.infer_type()[1] == [np.float32]
    assert mx.sym.arange(5).infer_shape()[1] == [(5,)]
    np.testing.assert_array_equal(mx.sym.full((2,), 7).eval()[0].asnumpy(), [7, 7])
    sm = _mlp()
    again = pickle.loads(pickle.dumps(sm))
    assert again.tojson() == sm.tojson()


def test_namespaces():
    assert callable(mx.sym.op.FullyConnected) and callable(mx.sym._internal._plus_scalar)
    assert callable(mx.nd.op.relu)
    assert not hasattr(mx.sym, "no_such_operator")
    assert not hasattr(mx.nd, "no_such_operator")
