"""mx.viz.print_summary (MXNet's table: layers, output shapes, parameter counts, inputs,
total) and plot_network (a graphviz Digraph; a clear ImportError without graphviz)."""
import sys
import types

import pytest

import mxc as mx


def _mlp():
    data = mx.sym.Variable("data")
    net = mx.sym.Convolution(data, kernel=(3, 3), num_filter=4, name="conv1")
    net = mx.sym.BatchNorm(net, name="bn1")
    net = mx.sym.Activation(net, act_type="relu", name="relu1")
    net = mx.sym.Pooling(net, kernel=(2, 2), stride=(2, 2), pool_type="max", name="pool1")
    net = mx.sym.FullyConnected(net, num_hidden=10, name="fc1")
    return mx.sym.SoftmaxOutput(net, name="softmax")


def test_print_summary_table(capsys):
    mx.viz.print_summary(_mlp(), shape={"data": (2, 3, 8, 8)})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "_" * 120
    assert out[1].startswith("Layer (type)") and "Output Shape" in out[1]
    assert out[1].index("Output Shape") == int(120 * .44)
    assert out[1].index("Param #") == int(120 * .64)
    assert out[1].index("Previous Layer") == int(120 * .74)
    rows = {line.split()[0]: line.split() for line in out
            if line and line[0].isalpha() and "(" in line.split()[0]}
    assert rows["data(null)"][1] == "3x8x8"
    # conv: 3 in-channels * 4 filters * 3*3 + 4 biases
    assert rows["conv1(Convolution)"][1:] == ["4x6x6", "112", "data"]
    assert rows["bn1(BatchNorm)"][1:] == ["4x6x6", "8", "conv1"]
    assert rows["pool1(Pooling)"][1:] == ["4x3x3", "0", "relu1"]
    # FullyConnected counts (first input dim + 1) * num_hidden, as MXNet's summary does
    assert rows["fc1(FullyConnected)"][1:] == ["10", "50", "pool1"]
    assert rows["softmax(SoftmaxOutput)"][1:] == ["10", "0", "fc1"]
    assert "Total params: 170" in out
    assert out[-1] == "_" * 120


def test_print_summary_without_shape_and_errors(capsys):
    mx.viz.print_summary(_mlp(), line_length=80)
    out = capsys.readouterr().out
    # without shapes the input sizes are unknown: only the biases are counted (4 + 10)
    assert "fc1(FullyConnected)" in out and "Total params: 14" in out
    with pytest.raises(TypeError):
        mx.viz.print_summary("not a symbol")


def test_plot_network_needs_graphviz(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match="graphviz"):
        mx.viz.plot_network(_mlp())


def test_plot_network_builds_digraph(monkeypatch):
    calls = {"nodes": [], "edges": []}

    class Digraph:
        def __init__(self, name, format):
            calls["init"] = (name, format)

        def node(self, name, label, **attr):
            calls["nodes"].append((name, label, attr))

        def edge(self, tail_name, head_name, **attr):
            calls["edges"].append((tail_name, head_name, attr))

    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=Digraph))
    mx.viz.plot_network(_mlp(), title="net", shape={"data": (2, 3, 8, 8)},
                        node_attrs={"fixedsize": "false"})
    assert calls["init"] == ("net", "pdf")
    names = {n for n, _, _ in calls["nodes"]}
    assert "conv1_weight" not in names and "data" in names
    labels = {n: lab for n, lab, _ in calls["nodes"]}
    assert labels["conv1"] == r"Convolution\n3x3/1, 4"
    assert labels["fc1"] == r"FullyConnected\n10"
    assert labels["relu1"] == r"Activation\nrelu"
    assert labels["pool1"] == r"Pooling\nmax, 2x2/2x2"
    attrs = {n: a for n, _, a in calls["nodes"]}
    assert attrs["data"]["shape"] == "oval" and attrs["conv1"]["fixedsize"] == "false"
    edges = {(t, h): a["label"] for t, h, a in calls["edges"]}
    assert edges[("conv1", "data")] == "3x8x8"
    assert edges[("fc1", "pool1")] == "4x3x3"
    assert ("softmax", "softmax_label") in edges
