"""mx.gluon.model_zoo: MXNet 1.9.1's vision networks.

resnet18_v1 is checked against a real MXNet 1.9.1 export (/work/shared/mxnet_cases): its
parameters load by name, the output matches MXNet's, and export() writes MXNet's graph. The
other networks are checked for MXNet's parameter counts and names, output shapes, and
hybridized == imperative forward on small inputs.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError
from mxc.gluon.model_zoo import model_store, vision

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"

# every name MXNet 1.9.1's get_model accepts
MXNET_MODEL_NAMES = [
    "resnet18_v1", "resnet34_v1", "resnet50_v1", "resnet101_v1", "resnet152_v1",
    "resnet18_v2", "resnet34_v2", "resnet50_v2", "resnet101_v2", "resnet152_v2",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "alexnet", "densenet121", "densenet161", "densenet169", "densenet201",
    "squeezenet1.0", "squeezenet1.1", "inceptionv3",
    "mobilenet1.0", "mobilenet0.75", "mobilenet0.5", "mobilenet0.25",
    "mobilenetv2_1.0", "mobilenetv2_0.75", "mobilenetv2_0.5", "mobilenetv2_0.25"]


@pytest.fixture(autouse=True)
def fresh_names():
    """Block names count from 0 in every test (resnetv10_, densenet0_ ...), as in a fresh
    MXNet process."""
    with mx.name.NameManager():
        yield


def _resnet_case():
    d = CASES / "resnet18_v1"
    if not d.exists():
        pytest.skip(f"{d} not present")
    return d


def _input_size(name):
    return 299 if name == "inceptionv3" else 224


def _param_count(net, size):
    net.infer_shape(mx.nd.zeros((1, 3, size, size)))
    return sum(int(np.prod(p.shape)) for p in net.collect_params().values())


# -- resnet18_v1 against real MXNet --------------------------------------------------------
def test_resnet18_v1_loads_mxnet_params_and_matches_output():
    d = _resnet_case()
    net = vision.get_model("resnet18_v1")
    assert net.prefix == "resnetv10_"
    # loading by name: every parameter of the network is in MXNet's file and vice versa
    net.collect_params().load(str(d / "resnet18_v1-0000.params"), ctx=mx.cpu())
    x = mx.nd.array(np.load(d / "in_data.npy"))
    want = np.load(d / "out_0.npy")
    atol = 1e-4 * np.abs(want).max()
    np.testing.assert_allclose(net(x).asnumpy(), want, rtol=1e-3, atol=atol)
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), want, rtol=1e-3, atol=atol)


def _graph_without_versions(graph):
    """Nodes as (name, op, attrs, inputs) with entry versions dropped (MXNet numbers
    variable mutations, which loaders ignore) and variables' ``__shape__`` dropped (it is
    the shape known when the graph was traced, 0s before deferred initialization)."""
    nodes = []
    for n in graph["nodes"]:
        attrs = dict(n.get("attrs", {}))
        if n["op"] == "null":
            attrs.pop("__shape__", None)
        nodes.append((n["name"], n["op"], attrs, [e[:2] for e in n["inputs"]]))
    return nodes


def test_resnet18_v1_export_matches_mxnet_symbol(tmp_path):
    d = _resnet_case()
    net = vision.resnet18_v1()
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros((1, 3, 224, 224)))
    net.export(str(tmp_path / "r18"))
    got = json.loads((tmp_path / "r18-symbol.json").read_text())
    want = json.loads((d / "resnet18_v1-symbol.json").read_text())
    assert [n["name"] for n in got["nodes"]] == [n["name"] for n in want["nodes"]]
    assert _graph_without_versions(got) == _graph_without_versions(want)
    assert got["arg_nodes"] == want["arg_nodes"]
    assert got["heads"] == want["heads"]
    saved = mx.nd.load(str(tmp_path / "r18-0000.params"))
    assert sorted(saved) == sorted(mx.nd.load(str(d / "resnet18_v1-0000.params")))


# -- all networks ---------------------------------------------------------------------------
def test_get_model_knows_every_mxnet_name():
    for name in MXNET_MODEL_NAMES:
        assert isinstance(vision.get_model(name), mx.gluon.HybridBlock), name
    assert isinstance(vision.get_model("ResNet18_V1"), vision.ResNetV1)
    with pytest.raises(ValueError, match="resnet19_v1 is not supported"):
        vision.get_model("resnet19_v1")


def test_bad_specs_raise():
    with pytest.raises(ValueError, match="Invalid number of layers"):
        vision.get_resnet(1, 19)
    with pytest.raises(ValueError, match="Invalid resnet version"):
        vision.get_resnet(3, 18)
    with pytest.raises(ValueError, match="Unsupported SqueezeNet version"):
        vision.SqueezeNet("1.2")


# totals over every parameter (BatchNorm running statistics included), as MXNet counts
# them: torchvision's/Keras' published counts plus MXNet's extra running statistics
MXNET_PARAM_COUNTS = {
    "resnet18_v1": 11699112,       # the MXNet 1.9.1 case's meta.json
    "resnet50_v1": 25629032,
    "alexnet": 61100840,
    "vgg11": 132863336,
    "vgg16": 138357544,
    "vgg11_bn": 132874344,
    "squeezenet1.0": 1248424,
    "squeezenet1.1": 1235496,
    "mobilenet1.0": 4253864,
    "mobilenetv2_1.0": 3539136,
}


@pytest.mark.parametrize("name", sorted(MXNET_PARAM_COUNTS))
def test_param_counts(name):
    assert _param_count(vision.get_model(name), 224) == MXNET_PARAM_COUNTS[name]


@pytest.mark.parametrize("name", MXNET_MODEL_NAMES)
def test_output_shapes(name):
    size = _input_size(name)
    net = vision.get_model(name, classes=7)
    out = net(mx.sym.var("data"))
    _, out_shapes, _ = out.infer_shape(data=(2, 3, size, size))
    assert out_shapes == [(2, 7)]


def test_parameter_names_follow_mxnet():
    expect = {
        "resnet18_v2": ["resnetv20_batchnorm0_gamma", "resnetv20_conv0_weight",
                        "resnetv20_stage1_batchnorm0_running_var",
                        "resnetv20_stage2_conv2_weight", "resnetv20_dense0_bias"],
        "resnet50_v1": ["resnetv10_stage1_conv0_bias", "resnetv10_stage1_conv3_weight",
                        "resnetv10_stage4_batchnorm9_beta"],
        "vgg11": ["vgg0_conv7_weight", "vgg0_dense2_weight"],
        "alexnet": ["alexnet0_conv4_bias", "alexnet0_dense2_weight"],
        "densenet121": ["densenet0_conv0_weight", "densenet0_stage1_conv11_weight",
                        "densenet0_conv1_weight", "densenet0_stage4_batchnorm31_gamma",
                        "densenet0_dense0_weight"],
        "squeezenet1.0": ["squeezenet0_conv0_weight", "squeezenet0_conv25_bias"],
        "inceptionv3": ["inception30_conv4_weight", "inception30_A1_conv6_weight",
                        "inception30_E2_conv8_weight", "inception30_dense0_weight"],
        "mobilenet0.25": ["mobilenet0_conv26_weight", "mobilenet0_batchnorm26_running_mean",
                          "mobilenet0_dense0_weight"],
        "mobilenetv2_0.25": ["mobilenetv20_features_conv0_weight",
                             "mobilenetv20_features_linearbottleneck16_conv2_weight",
                             "mobilenetv20_features_conv1_weight",
                             "mobilenetv20_output_pred_weight"],
    }
    for name, params in expect.items():
        have = set(vision.get_model(name).collect_params().keys())
        missing = [p for p in params if p not in have]
        assert not missing, f"{name}: {missing}"


def test_structure_details():
    # V1 bottleneck: stride on the first 1x1 convolution, which has a bias
    net = vision.resnet50_v1()
    body = net.features[4][0].body
    assert body[0]._kwargs["stride"] == (1, 1) and body[0].bias is not None
    assert net.features[5][0].body[0]._kwargs["stride"] == (2, 2)
    assert net.features[5][0].body[3]._kwargs["stride"] == (1, 1)
    # V2: input BatchNorm without scale/shift
    bn = vision.resnet18_v2().features[0]
    assert bn._kwargs["fix_gamma"] and bn.beta.grad_req == "null"
    # MobileNetV2 residuals only where the shapes match
    feats = vision.mobilenet_v2_1_0().features
    shortcuts = [blk.use_shortcut for blk in list(feats._children.values())[3:20]]
    assert shortcuts == [False, False, True, False, True, True, False, True, True, True,
                         False, True, True, False, True, True, False]


# -- hybridized == imperative on small inputs ---------------------------------------------
def _small_nets():
    """key -> (constructor, input size, classes): each block type on a cheap input."""
    return {
        "resnet18_v1_thumbnail": (lambda: vision.resnet18_v1(thumbnail=True, classes=10), 32,
                                  10),
        "bottleneck_v1": (lambda: vision.ResNetV1(vision.BottleneckV1, [1, 1], [8, 16, 32],
                                                  classes=5), 32, 5),
        "basic_v2": (lambda: vision.ResNetV2(vision.BasicBlockV2, [1, 2], [8, 8, 16],
                                             thumbnail=True, classes=5), 16, 5),
        "bottleneck_v2": (lambda: vision.ResNetV2(vision.BottleneckV2, [1, 1], [8, 16, 32],
                                                  thumbnail=True, classes=5), 16, 5),
        "vgg11_bn": (lambda: vision.vgg11_bn(classes=10), 32, 10),
        "densenet_small": (lambda: vision.DenseNet(8, 4, [2, 3], classes=6), 56, 6),
        "mobilenet0.25": (lambda: vision.mobilenet0_25(classes=10), 32, 10),
        "mobilenetv2_0.25": (lambda: vision.mobilenet_v2_0_25(classes=10), 32, 10),
    }


def _randomize_batchnorm(net, rng):
    """Non-trivial running statistics so inference-mode BatchNorm matters."""
    for name, p in net.collect_params().items():
        if name.endswith(("running_mean", "beta")):
            p.set_data(mx.nd.array(rng.uniform(-0.2, 0.2, p.shape)))
        elif name.endswith(("running_var", "gamma")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))


@pytest.mark.parametrize("key", sorted(_small_nets()))
def test_hybridized_matches_imperative(key):
    make, size, classes = _small_nets()[key]
    net = make()
    net.initialize(mx.init.Xavier(rnd_type="gaussian", magnitude=2))
    rng = np.random.RandomState(3)
    x = mx.nd.array(rng.uniform(-1, 1, (2, 3, size, size)))
    net.infer_shape(x)
    _randomize_batchnorm(net, rng)
    imperative = net(x).asnumpy()
    net.hybridize()
    hybrid = net(x).asnumpy()
    assert imperative.shape == (2, classes)
    assert np.abs(imperative).max() > 1e-3  # a real signal, not a vanishing one
    np.testing.assert_allclose(hybrid, imperative, rtol=1e-4,
                               atol=1e-5 * np.abs(imperative).max())


# -- pretrained parameters ------------------------------------------------------------------
def _publish(tmp_path, monkeypatch, name, net):
    """Save ``net`` as the pretrained file of ``name`` (MXNet's naming) and register its
    SHA-1 in place of MXNet's."""
    staging = tmp_path / "staging.params"
    net.save_parameters(str(staging))
    sha1 = hashlib.sha1(staging.read_bytes()).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, name, sha1)
    target = tmp_path / f"{name}-{sha1[:8]}.params"
    staging.rename(target)
    return target


def test_pretrained_loads_from_root(tmp_path, monkeypatch):
    src = vision.mobilenet0_25(classes=10)
    src.initialize(mx.init.Xavier())
    src(mx.nd.zeros((1, 3, 32, 32)))  # finishes the deferred initialization
    path = _publish(tmp_path, monkeypatch, "mobilenet0.25", src)
    assert model_store.get_model_file("mobilenet0.25", root=str(tmp_path)) == str(path)
    net = vision.get_model("mobilenet0.25", pretrained=True, root=str(tmp_path), classes=10)
    want = {k.split("_", 1)[1]: v.data().asnumpy() for k, v in src.collect_params().items()}
    got = {k.split("_", 1)[1]: v.data().asnumpy() for k, v in net.collect_params().items()}
    assert sorted(got) == sorted(want)
    for k, value in want.items():
        np.testing.assert_array_equal(got[k], value, err_msg=k)


def test_pretrained_zip_archive_is_extracted(tmp_path, monkeypatch):
    src = vision.ResNetV1(vision.BasicBlockV1, [1], [4, 4], thumbnail=True, classes=3)
    src.initialize()
    src(mx.nd.zeros((1, 3, 8, 8)))
    path = _publish(tmp_path, monkeypatch, "resnet18_v1", src)
    with zipfile.ZipFile(path.with_suffix(".zip"), "w") as zf:
        zf.write(path, path.name)
    path.unlink()
    assert model_store.get_model_file("resnet18_v1", root=str(tmp_path)) == str(path)
    assert path.exists()


def test_pretrained_missing_or_corrupt_file_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(MXNetError, match=r"alexnet-44335d1f\.params"):
        vision.alexnet(pretrained=True, root=str(tmp_path))
    (tmp_path / "alexnet-44335d1f.params").write_bytes(b"not the file")
    with pytest.raises(MXNetError, match="SHA-1"):
        model_store.get_model_file("alexnet", root=str(tmp_path))
    with pytest.raises(ValueError, match="Pretrained model for nonet is not available"):
        model_store.get_model_file("nonet", root=str(tmp_path))
    # default root: $MXNET_HOME/models
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "home"))
    with pytest.raises(MXNetError, match=str(tmp_path / "home" / "models")):
        model_store.get_model_file("vgg16")
    assert model_store.short_hash("vgg16") == "64946753"


def test_purge_removes_params_files(tmp_path):
    (tmp_path / "a.params").write_bytes(b"x")
    (tmp_path / "keep.txt").write_bytes(b"x")
    model_store.purge(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_gluon_exposes_model_zoo():
    assert mx.gluon.model_zoo.vision.get_model is vision.get_model
    assert mx.gluon.model_zoo.model_store.get_model_file is model_store.get_model_file
