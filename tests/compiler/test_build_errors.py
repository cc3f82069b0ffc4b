"""Errors users meet while loading and compiling graphs speak to them: every one is an
``MXNetError`` subclass whose message names what is wrong and where (operator, node,
attribute, input, shapes, file) — never a bare KeyError/IndexError from deep inside."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mxc.base import CompileError, MXNetError, OpError, ShapeError
from mxc.compiler import infer
from mxc.compiler.build import compile_graph
from mxc.compiler.model import CompiledModel, load_model, load_params
from mxc.ir.formats import save_nd
from mxc.ir.graph import Entry, Graph, Node, load_json, make_node, topo_order, variable


def var(name: str) -> dict:
    return {"op": "null", "name": name, "inputs": []}


def graph_json(nodes: list, heads: list | None = None) -> dict:
    heads = heads if heads is not None else [[len(nodes) - 1, 0, 0]]
    return {"nodes": nodes,
            "arg_nodes": [i for i, n in enumerate(nodes) if n["op"] == "null"],
            "node_row_ptr": list(range(len(nodes) + 1)),
            "heads": heads,
            "attrs": {"mxnet_version": ["int", 10901]}}


def both_loaders(d: dict):
    """The text loader (symbol JSON) and the dict-level constructor must both reject."""
    return [lambda: load_json(json.dumps(d), "model-symbol.json"),
            lambda: Graph.from_json_dict(d, "model-symbol.json")]


# ---------------------------------------------------------------------------------------------
# graph JSON
# ---------------------------------------------------------------------------------------------
def test_unknown_operator_in_graph_json():
    d = graph_json([var("x"), {"op": "FancyConv", "name": "fancy0", "inputs": [[0, 0, 0]]}])
    for load in both_loaders(d):
        with pytest.raises(MXNetError) as ei:
            load()
        msg = str(ei.value)
        assert "FancyConv" in msg and "fancy0" in msg and "model-symbol.json" in msg


def test_unknown_attribute_names_op_node_and_attribute():
    d = graph_json([var("x"), {"op": "relu", "name": "act1", "attrs": {"slope": "0.1"},
                               "inputs": [[0, 0, 0]]}])
    for load in both_loaders(d):
        with pytest.raises(OpError) as ei:
            load()
        msg = str(ei.value)
        assert "relu" in msg and "act1" in msg and "slope" in msg


@pytest.mark.parametrize("op,attrs,bad", [
    ("clip", {"a_min": "low", "a_max": "1"}, "a_min"),
    ("clip", {"a_min": "0", "a_max": "(1, 2)"}, "a_max"),
    ("Activation", {"act_type": "relu6"}, "act_type"),
    ("Cast", {"dtype": "float128"}, "dtype"),
    ("_plus_scalar", {"scalar": "1", "is_int": "maybe"}, "is_int"),
    ("_full", {"shape": "(2, x)", "value": "1"}, "shape"),
])
def test_invalid_attribute_values_name_op_node_and_attribute(op, attrs, bad):
    inputs = [] if op == "_full" else [[0, 0, 0]]
    d = graph_json([var("x"), {"op": op, "name": "node7", "attrs": attrs, "inputs": inputs}])
    for load in both_loaders(d):
        with pytest.raises(OpError) as ei:
            load()
        msg = str(ei.value)
        assert op in msg and "node7" in msg and f"'{bad}'" in msg, msg


def test_missing_required_attribute():
    d = graph_json([var("x"), {"op": "clip", "name": "clipper", "attrs": {"a_max": "1"},
                               "inputs": [[0, 0, 0]]}])
    for load in both_loaders(d):
        with pytest.raises(OpError, match=r"clip.*'clipper'.*required attribute 'a_min'"):
            load()


def test_hidden_attributes_are_not_operator_attributes():
    d = graph_json([var("x"), {"op": "relu", "name": "r", "attrs": {"__lr_mult__": "2"},
                               "inputs": [[0, 0, 0]]}])
    assert Graph.from_json_dict(d).nodes[-1].parsed == {}


def test_wrong_number_of_inputs():
    d = graph_json([var("x"), {"op": "elemwise_add", "name": "plus1", "inputs": [[0, 0, 0]]}])
    for load in both_loaders(d):
        with pytest.raises(MXNetError, match=r"plus1.*elemwise_add.*1 input.*expected 2"):
            load()


def test_dangling_input_in_from_json_dict():
    d = graph_json([var("x"), {"op": "relu", "name": "r1", "inputs": [[5, 0, 0]]}])
    for load in both_loaders(d):
        with pytest.raises(MXNetError) as ei:
            load()
        msg = str(ei.value)
        assert "r1" in msg and "5" in msg and "model-symbol.json" in msg


def test_forward_reference_is_rejected():
    """Inputs must refer to earlier nodes (MXNet writes nodes in topological order)."""
    d = graph_json([var("x"), {"op": "relu", "name": "r1", "inputs": [[2, 0, 0]]},
                    {"op": "relu", "name": "r2", "inputs": [[1, 0, 0]]}])
    for load in both_loaders(d):
        with pytest.raises(MXNetError, match="r1"):
            load()


def test_head_referring_to_a_missing_node():
    d = graph_json([var("x")], heads=[[3, 0, 0]])
    with pytest.raises(MXNetError, match="head.*3"):
        Graph.from_json_dict(d, "m.json")


def test_dangling_control_dependency_in_from_json_dict():
    d = graph_json([var("x"), {"op": "relu", "name": "r1", "inputs": [[0, 0, 0]],
                               "control_deps": [7]}])
    for load in both_loaders(d):
        with pytest.raises(MXNetError, match="r1"):
            load()


def test_input_entry_output_index_out_of_range_in_from_json_dict():
    d = graph_json([var("x"), {"op": "relu", "name": "r1", "inputs": [[0, 3, 0]]}])
    for load in both_loaders(d):
        with pytest.raises(MXNetError, match=r"r1.*output 3|output 3.*r1"):
            load()


def test_cycle_in_a_hand_built_graph():
    a, b = Node("relu", "ra"), Node("relu", "rb")
    a.inputs = [Entry(b, 0)]
    b.inputs = [Entry(a, 0)]
    with pytest.raises(MXNetError, match=r"cycle.*'r[ab]'"):
        topo_order([Entry(a, 0)])
    with pytest.raises(MXNetError, match="cycle"):
        _ = Graph([Entry(b, 0)]).nodes
    s = Node("relu", "self_loop")
    s.inputs = [Entry(s, 0)]
    with pytest.raises(MXNetError, match="self_loop"):
        topo_order([Entry(s, 0)])


def test_cycle_through_a_control_dependency():
    x = variable("x")
    a = make_node("relu", [Entry(x, 0)], name="a")
    b = make_node("relu", [Entry(a, 0)], name="b")
    a.control_deps = [b]
    with pytest.raises(MXNetError, match="cycle"):
        topo_order([Entry(b, 0)])


def test_deep_graph_does_not_hit_the_recursion_limit():
    e = Entry(variable("x"), 0)
    for i in range(5000):
        e = Entry(make_node("relu", [e], name=f"r{i}"), 0)
    assert len(topo_order([e])) == 5001


def test_unknown_operator_from_make_node():
    with pytest.raises(OpError, match="NoSuchOp"):
        make_node("NoSuchOp", [])


# ---------------------------------------------------------------------------------------------
# shape and type inference
# ---------------------------------------------------------------------------------------------
def _add_graph(op="elemwise_add"):
    x, y = variable("lhs_in"), variable("rhs_in")
    n = make_node(op, [Entry(x, 0), Entry(y, 0)], name="adder")
    return Graph([Entry(make_node("relu", [Entry(n, 0)], name="act"), 0)])


@pytest.mark.parametrize("op", ["elemwise_add", "broadcast_add"])
def test_shape_inference_failure_names_node_and_input_shapes(op):
    with pytest.raises(ShapeError) as ei:
        infer.infer_shapes(_add_graph(op), {"lhs_in": (2, 3), "rhs_in": (4, 3)})
    msg = str(ei.value)
    assert "'adder'" in msg and op in msg
    assert "(2, 3)" in msg and "(4, 3)" in msg
    assert "lhs=(2, 3)" in msg and "rhs=(4, 3)" in msg


def test_missing_input_shape_names_the_input():
    g = Graph([Entry(make_node("relu", [Entry(variable("rhs_in"), 0)], name="r"), 0)])
    with pytest.raises(ShapeError, match="'rhs_in'"):
        infer.infer_shapes(g, {})
    # broadcasting cannot deduce one side from the other
    with pytest.raises(ShapeError, match="'rhs_in'"):
        infer.infer_shapes(_add_graph("broadcast_add"), {"lhs_in": (2, 3)})


def test_elementwise_shape_is_completed_from_one_known_input():
    g = _add_graph()
    shapes = infer.infer_shapes(g, {"lhs_in": (2, 3)})
    assert {n.name: shapes[(n.uid, 0)] for n in g.nodes} == {
        "lhs_in": (2, 3), "rhs_in": (2, 3), "adder": (2, 3), "act": (2, 3)}


def test_shape_hint_attribute_conflicting_with_given_shape():
    x = variable("data", {"__shape__": "(2, 3)"})
    g = Graph([Entry(make_node("elemwise_add", [Entry(x, 0), Entry(variable("b"), 0)],
                               name="add0"), 0)])
    assert infer.infer_shapes(g, {"b": (2, 3)})[(x.uid, 0)] == (2, 3)
    with pytest.raises(ShapeError, match="add0"):
        infer.infer_shapes(g, {"b": (3, 3)})


def test_type_inference_failure_names_node():
    with pytest.raises(MXNetError, match=r"'adder'.*elemwise_add.*float32.*int32"):
        infer.infer_types(_add_graph(), {"lhs_in": "float32", "rhs_in": "int32"})


@pytest.mark.parametrize("dt", ["complex64", "float128", "flaot32"])
def test_unsupported_input_dtype_names_the_input(dt):
    g = Graph([Entry(make_node("relu", [Entry(variable("data"), 0)], name="r"), 0)])
    with pytest.raises(MXNetError, match=f"'data'.*{dt}|{dt}.*'data'"):
        CompiledModel(g, {}, {}, {"data": (2,)}, {"data": dt})


def test_compile_graph_reports_shape_errors_before_codegen():
    with pytest.raises(ShapeError, match="adder"):
        compile_graph(_add_graph(), {"lhs_in": (2, 3), "rhs_in": (3, 2)})
    with pytest.raises(ShapeError, match="rhs_in"):
        compile_graph(Graph([Entry(make_node("relu", [Entry(variable("rhs_in"), 0)],
                                             name="r"), 0)]), {})


def test_all_errors_are_mxnet_errors():
    for cls in (OpError, ShapeError, CompileError):
        assert issubclass(cls, MXNetError)
    assert issubclass(MXNetError, RuntimeError)   # as in MXNet (MXNetError(RuntimeError))


# ---------------------------------------------------------------------------------------------
# .params files and CompiledModel
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def params_file(tmp_path):
    p = tmp_path / "net-0000.params"
    save_nd(str(p), {"arg:weight": np.arange(12, dtype=np.float32).reshape(3, 4),
                     "aux:moving_mean": np.zeros(3, np.float32)})
    return p


def test_load_params_splits_arg_and_aux(params_file):
    arg, aux = load_params(params_file)
    assert list(arg) == ["weight"] and list(aux) == ["moving_mean"]
    np.testing.assert_array_equal(arg["weight"], np.arange(12).reshape(3, 4))


@pytest.mark.parametrize("cut", [0, 5, 12, 30, -20, -1])
def test_truncated_params_file_names_the_file(params_file, cut):
    data = params_file.read_bytes()
    bad = params_file.with_name("broken.params")
    bad.write_bytes(data[:cut] if cut >= 0 else data[:len(data) + cut])
    with pytest.raises(MXNetError) as ei:
        load_params(bad)
    assert "broken.params" in str(ei.value)


def test_corrupted_params_file_names_the_file(params_file):
    data = bytearray(params_file.read_bytes())
    bad = params_file.with_name("garbled.params")
    bad.write_bytes(b"not an ndarray file" + bytes(data[19:]))
    with pytest.raises(MXNetError, match="garbled.params"):
        load_params(bad)
    # a plausible header with an absurd array count
    data[16:24] = (10 ** 12).to_bytes(8, "little")
    bad.write_bytes(bytes(data))
    with pytest.raises(MXNetError, match="garbled.params"):
        load_params(bad)


def test_missing_params_file_and_unnamed_arrays(tmp_path):
    with pytest.raises(MXNetError, match="nothere.params"):
        load_params(tmp_path / "nothere.params")
    lst = tmp_path / "list.params"
    save_nd(str(lst), [np.ones(2, np.float32)])
    with pytest.raises(MXNetError, match="list.params.*named"):
        load_params(lst)


def test_missing_symbol_file(tmp_path):
    with pytest.raises(MXNetError, match="absent-symbol.json"):
        load_model(tmp_path / "absent-symbol.json")


def test_malformed_symbol_json_names_the_file(tmp_path):
    p = tmp_path / "bad-symbol.json"
    p.write_text('{"nodes": [')
    with pytest.raises(MXNetError, match="bad-symbol.json"):
        load_model(p)


@pytest.fixture(scope="module")
def model():
    x, w = variable("data"), variable("weight")
    n = make_node("elemwise_mul", [Entry(x, 0), Entry(w, 0)], name="scale")
    g = Graph([Entry(make_node("relu", [Entry(n, 0)], name="act"), 0)])
    return CompiledModel(g, {"weight": np.full((2, 3), 2.0, np.float32)}, {}, {"data": (2, 3)})


def test_compiled_model_runs(model):
    (y,) = model(data=np.array([[1, -1, 2], [0, 3, -4]], np.float32))
    np.testing.assert_array_equal(y, [[2, 0, 4], [0, 6, 0]])


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 1), (6,), ()])
def test_compiled_model_wrong_input_shape(model, shape):
    with pytest.raises(MXNetError) as ei:
        model(data=np.ones(shape, np.float32))
    msg = str(ei.value)
    assert "'data'" in msg and "(2, 3)" in msg and str(tuple(shape)) in msg


def test_compiled_model_missing_input(model):
    with pytest.raises(MXNetError, match="missing input 'data'"):
        model()


def test_compiled_model_needs_input_shapes():
    x, w = variable("data"), variable("weight")
    g = Graph([Entry(make_node("elemwise_mul", [Entry(x, 0), Entry(w, 0)], name="m"), 0)])
    with pytest.raises(MXNetError, match=r"no shape given.*'data'"):
        CompiledModel(g, {"weight": np.ones((2, 3), np.float32)}, {}, {})
    with pytest.raises(ShapeError, match=r"'m'.*\(3, 3\).*\(2, 3\)"):
        CompiledModel(g, {"weight": np.ones((2, 3), np.float32)}, {}, {"data": (3, 3)})
