"""Operator attributes (MXNet's string spellings, parsing and formatting back), the graph IR
(topological order, JSON round trips, arguments vs auxiliary states) and the gradient pass
(shared inputs summed with add_n; grad_req write / add / null)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mxc.base import MXNetError, OpError
from mxc.compiler.build import compile_graph
from mxc.compiler.gradient import gradient
from mxc.ir import registry
from mxc.ir.graph import Entry, Graph, dump_json, load_json, make_node, topo_order, variable
from mxc.ir.params import (
    Attrs,
    Param,
    ParamSpec,
    enum,
    format_value,
    optional,
    parse_bool,
    parse_dtype_name,
    parse_float,
    parse_float_tuple,
    parse_int,
    parse_shape,
    parse_str,
)


# ---------------------------------------------------------------------------------------------
# parsing MXNet's attribute strings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("(3, 3)", (3, 3)), ("[3,3]", (3, 3)), ("3", (3,)), ("(3,)", (3,)), ("()", ()),
    ("[]", ()), ("", ()), (" ( 2 , 4 , 5 ) ", (2, 4, 5)), ("(2L, 3L)", (2, 3)),
    ("(-1, 0)", (-1, 0)), ("(None, 3)", (None, 3)), ("(3.0, 2)", (3, 2)),
    ((2, 3), (2, 3)), ([4], (4,)), (7, (7,)), ((np.int64(2), np.int32(5)), (2, 5)),
])
def test_parse_shape(text, want):
    assert parse_shape(text) == want


@pytest.mark.parametrize("bad", ["(a, b)", "(1.5,)", "3.5", "True", "{1: 2}", "((1, 2)",
                                 "'abc'"])
def test_parse_shape_rejects(bad):
    with pytest.raises(ValueError):
        parse_shape(bad)


@pytest.mark.parametrize("text,want", [
    ("True", True), ("False", False), ("true", True), ("false", False), ("1", True),
    ("0", False), (" True ", True), (True, True), (0, False), (1, True),
])
def test_parse_bool(text, want):
    assert parse_bool(text) is want


@pytest.mark.parametrize("bad", ["yes", "2", "None", ""])
def test_parse_bool_rejects(bad):
    with pytest.raises(ValueError):
        parse_bool(bad)


@pytest.mark.parametrize("text,want", [("3", 3), ("-2", -2), (" 7 ", 7), ("3.0", 3),
                                       ("1e3", 1000), (5, 5), (4.0, 4), (True, 1),
                                       (np.int64(9), 9)])
def test_parse_int(text, want):
    v = parse_int(text)
    assert v == want and type(v) is int


@pytest.mark.parametrize("bad", ["3.5", "abc", "", 2.5, "(3,)"])
def test_parse_int_rejects(bad):
    with pytest.raises(ValueError):
        parse_int(bad)


@pytest.mark.parametrize("text,want", [
    ("1e-5", 1e-5), ("1E-5", 1e-5), ("0.001", 0.001), ("-3", -3.0), ("inf", math.inf),
    ("-inf", -math.inf), ("+inf", math.inf), ("Infinity", math.inf), ("INF", math.inf),
    (" 2.5 ", 2.5), (3, 3.0), (0.25, 0.25),
])
def test_parse_float(text, want):
    v = parse_float(text)
    assert v == want and type(v) is float


def test_parse_float_nan_and_rejects():
    assert math.isnan(parse_float("nan")) and math.isnan(parse_float("NaN"))
    for bad in ("abc", "", "1,5", "(1.0,)"):
        with pytest.raises(ValueError):
            parse_float(bad)


def test_parse_float_tuple():
    assert parse_float_tuple("(1.0, 2)") == (1.0, 2.0)
    assert parse_float_tuple("[0.5]") == (0.5,)
    assert parse_float_tuple("3") == (3.0,)
    assert parse_float_tuple("()") == ()
    assert parse_float_tuple((1, 2.5)) == (1.0, 2.5)


def test_optional_none_spellings():
    p = optional(parse_int)
    assert p("None") is None and p(None) is None and p("") is None and p(" None ") is None
    assert p("3") == 3
    ps = optional(parse_shape)
    assert ps("None") is None and ps("(2, 3)") == (2, 3) and ps("()") == ()
    assert optional(parse_float)("1e-5") == 1e-5


def test_enum_and_dtype_names():
    e = enum("relu", "tanh")
    assert e("relu") == "relu" and e("'tanh'") == "tanh" and e(' "relu" ') == "relu"
    with pytest.raises(ValueError, match="relu.*tanh"):
        e("Relu")
    ci = enum("NCHW", "NHWC", case_sensitive=False)
    assert ci("nchw") == "NCHW"
    assert parse_dtype_name("float16") == "float16"
    assert parse_dtype_name("'int8'") == "int8"
    assert parse_dtype_name(0) == "float32" and parse_dtype_name("6") == "int64"
    assert parse_dtype_name(np.float64) == "float64"
    assert parse_str(3) == "3"


# ---------------------------------------------------------------------------------------------
# formatting back, and round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,text", [
    ((3, 3), "(3, 3)"), ((3,), "(3,)"), ((), "()"), ([2, 4], "(2, 4)"), (True, "True"),
    (False, "False"), (None, "None"), (3, "3"), (-2, "-2"), (0.1, "0.1"), (1e-5, "1e-05"),
    (math.inf, "inf"), (-math.inf, "-inf"), ("relu", "relu"), ((None, 3), "(None, 3)"),
    (np.int64(3), "3"), (np.float32(0.25), "0.25"), (np.bool_(True), "True"),
    ((np.int64(2), np.int64(5)), "(2, 5)"),
    (np.float64(1.5), "1.5"),
    pytest.param((np.float64(0.5), 2.0), "(0.5, 2.0)"),
])
def test_format_value(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("value,parser", [
    ((3, 3), parse_shape), ((3,), parse_shape), ((), parse_shape), ((None, 2), parse_shape),
    (True, parse_bool), (False, parse_bool), (7, parse_int), (-7, parse_int),
    (1e-5, parse_float), (0.1, parse_float), (1 / 3, parse_float), (math.inf, parse_float),
    (-math.inf, parse_float), (1e300, parse_float), (5e-324, parse_float),
    (None, optional(parse_int)), (4, optional(parse_int)), ((1.5, 2.0), parse_float_tuple),
])
def test_format_then_parse_round_trips(value, parser):
    assert parser(format_value(value)) == value


def test_nan_round_trips():
    assert math.isnan(parse_float(format_value(math.nan)))


# ---------------------------------------------------------------------------------------------
# ParamSpec
# ---------------------------------------------------------------------------------------------
SPEC = ParamSpec(kernel=Param(parse_shape), num_filter=Param(parse_int),
                 no_bias=Param(parse_bool, False), eps=Param(parse_float, 1e-3),
                 axis=Param(optional(parse_int), None))


def test_param_spec_parses_defaults_and_hidden_keys():
    a = SPEC.parse("Conv", {"kernel": "(3, 3)", "num_filter": "8", "no_bias": "True",
                            "__lr_mult__": "2", "__shape__": "(1, 2)"}, "conv0")
    assert isinstance(a, Attrs)
    assert a == {"kernel": (3, 3), "num_filter": 8, "no_bias": True, "eps": 1e-3,
                 "axis": None}
    assert a.kernel == (3, 3) and a.eps == 1e-3
    with pytest.raises(AttributeError):
        _ = a.stride
    typed = SPEC.parse("Conv", {"kernel": (5,), "num_filter": 2, "eps": 1e-5, "axis": -1})
    assert typed.kernel == (5,) and typed.axis == -1 and typed.eps == 1e-5


def test_param_spec_errors_name_op_node_and_attribute():
    with pytest.raises(OpError, match=r"Conv \(node 'conv0'\).*unknown attribute 'stride'.*"
                                      r"known attributes: axis, eps, kernel, no_bias"):
        SPEC.parse("Conv", {"kernel": "3", "num_filter": "1", "stride": "2"}, "conv0")
    with pytest.raises(OpError, match=r"'conv0'.*invalid value for attribute 'no_bias'"):
        SPEC.parse("Conv", {"kernel": "3", "num_filter": "1", "no_bias": "maybe"}, "conv0")
    with pytest.raises(OpError, match=r"'conv0'.*required attribute 'num_filter'"):
        SPEC.parse("Conv", {"kernel": "3"}, "conv0")
    with pytest.raises(OpError, match=r"operator Conv: .*'kernel'"):
        SPEC.parse("Conv", {"kernel": "(x)", "num_filter": "1"})


def test_registered_ops_parse_their_attributes():
    clip = registry.get("clip")
    a = clip.parse_attrs({"a_min": "-1e-5", "a_max": "inf"}, "c")
    assert a.a_min == -1e-5 and a.a_max == math.inf
    act = registry.get("Activation").parse_attrs({"act_type": "'tanh'"})
    assert act.act_type == "tanh"
    s = registry.get("_plus_scalar").parse_attrs({"scalar": "2", "is_int": "0"})
    assert s == {"scalar": 2.0, "is_int": False}
    full = registry.get("_full").parse_attrs({"shape": "[2,3]", "value": "1e-5",
                                              "dtype": "float16"})
    assert full.shape == (2, 3) and full.value == 1e-5 and full.dtype == "float16"
    assert registry.get("_PlusScalar") is registry.get("_plus_scalar")
    with pytest.raises(OpError, match="unknown operator 'nope'"):
        registry.get("nope")


def test_make_node_formats_typed_attributes_as_mxnet_strings():
    x = variable("x")
    n = make_node("clip", [Entry(x, 0)], {"a_min": 0.0, "a_max": 1e-5}, name="c")
    assert n.attrs == {"a_min": "0.0", "a_max": "1e-05"}
    f = make_node("_full", [], {"shape": (2, 3), "value": 1.5, "dtype": "float32"}, name="f")
    assert f.attrs["shape"] == "(2, 3)"
    assert f.parsed.shape == (2, 3) and f.parsed.value == 1.5
    z = make_node("_arange", [], {"start": 0, "stop": None, "step": 1.0}, name="ar")
    assert z.attrs["stop"] == "None" and z.parsed.stop is None


# ---------------------------------------------------------------------------------------------
# graphs
# ---------------------------------------------------------------------------------------------
def _diamond():
    x = variable("x")
    a = make_node("negative", [Entry(x, 0)], name="a")
    b = make_node("square", [Entry(x, 0)], name="b")
    c = make_node("elemwise_add", [Entry(a, 0), Entry(b, 0)], name="c")
    d = make_node("_mul_scalar", [Entry(c, 0)], {"scalar": 0.5}, name="d")
    return x, a, b, c, d


def test_topo_order_is_inputs_first_and_each_node_once():
    _, a, _, c, d = _diamond()
    order = topo_order([Entry(d, 0), Entry(c, 0), Entry(a, 0)])
    assert [n.name for n in order] == ["x", "a", "b", "c", "d"]
    pos = {n.uid: i for i, n in enumerate(order)}
    for n in order:
        for e in n.inputs:
            assert pos[e.node.uid] < pos[n.uid]


def test_json_round_trip(tmp_path):
    *_, b, _, d = _diamond()
    g = Graph([Entry(d, 0), Entry(b, 0)])
    dd = g.to_json_dict()
    assert [n["name"] for n in dd["nodes"]] == ["x", "a", "b", "c", "d"]
    assert dd["arg_nodes"] == [0] and dd["heads"] == [[4, 0, 0], [2, 0, 0]]
    assert dd["node_row_ptr"] == [0, 1, 2, 3, 4, 5]
    assert dd["nodes"][4]["attrs"] == {"scalar": "0.5"}
    text = dump_json(g)
    g2 = load_json(text)
    assert g2.to_json_dict() == dd
    g3 = Graph.from_json_dict(dd)
    assert [(n.op, n.name, n.attrs) for n in g3.nodes] == \
        [(n.op, n.name, n.attrs) for n in g.nodes]
    assert dump_json(g3) == text


def test_arguments_and_auxiliary_states():
    d = _diamond()[-1]
    g = Graph([Entry(d, 0)])
    assert [n.name for n in g.arguments()] == ["x"]
    assert g.auxiliary() == [] and [n.name for n in g.variables()] == ["x"]


# ---------------------------------------------------------------------------------------------
# the gradient pass
# ---------------------------------------------------------------------------------------------
def test_shared_input_gradient_is_summed_with_add_n():
    x, *_, d = _diamond()
    g = Graph([Entry(d, 0)])
    head = variable("head_grad")
    (gx,) = gradient(g, [Entry(head, 0)], [x])
    s = gx.node
    assert s.op == "add_n" and s.parsed.num_args == 2 and len(s.inputs) == 2
    # one contribution through each consumer of x, summed in forward order (as MXNet)
    srcs = [e.node.name for e in s.inputs]
    assert srcs == ["a_backward", "b_backward"]


def test_same_node_using_an_input_twice():
    x = variable("x")
    y = make_node("elemwise_mul", [Entry(x, 0), Entry(x, 0)], name="sq")
    (gx,) = gradient(Graph([Entry(y, 0)]), [Entry(variable("hg"), 0)], [x])
    assert gx.node.op == "add_n" and len(gx.node.inputs) == 2
    assert {e.node.op for e in gx.node.inputs} == {"_backward_binary"}


def test_gradient_of_an_unused_variable_is_none_and_head_count_is_checked():
    x, w = variable("x"), variable("w")
    y = make_node("relu", [Entry(x, 0)], name="r")
    g = Graph([Entry(y, 0)])
    gx, gw = gradient(g, [Entry(variable("hg"), 0)], [x, w])
    assert gx is not None and gw is None
    with pytest.raises(MXNetError, match="1 outputs but 2 head gradients"):
        gradient(g, [Entry(variable("h1"), 0), Entry(variable("h2"), 0)], [x])


class Bound:
    """compile_graph + numpy views of its slots (as the frontend executor binds them)."""

    def __init__(self, graph, shapes, grad_req, retain_graph=False):
        self.cg = compile_graph(graph, shapes, is_train=True, grad_req=grad_req,
                                retain_graph=retain_graph)
        self.prog = self.cg.program
        self.prog.allocate()
        self.shapes = shapes

    def view(self, slot, shape):
        n = int(np.prod(shape))
        return self.prog.storage[slot][: n * 4].view(np.float32).reshape(shape)

    def var(self, name):
        return self.view(self.cg.var_slots[name], self.shapes[name])

    def grad(self, name):
        return self.view(self.cg.grad_slots[name], self.shapes[name])


def _xw_graph():
    # y = relu(x) * w + x * x : x is used by relu and twice by the product
    x, w = variable("x"), variable("w")
    r = make_node("relu", [Entry(x, 0)], name="r")
    m = make_node("elemwise_mul", [Entry(r, 0), Entry(w, 0)], name="m")
    q = make_node("elemwise_mul", [Entry(x, 0), Entry(x, 0)], name="q")
    return Graph([Entry(make_node("elemwise_add", [Entry(m, 0), Entry(q, 0)], name="y"), 0)])


X = np.array([[-1.0, 0.5, 2.0], [3.0, -0.25, 1.0]], np.float32)
W = np.array([[2.0, -1.0, 0.5], [1.0, 4.0, -3.0]], np.float32)
HG = np.array([[1.0, 2.0, 0.5], [-1.0, 1.0, 3.0]], np.float32)
DX = HG * ((X > 0) * W + 2 * X)
DW = HG * np.maximum(X, 0)


def test_gradient_write_add_and_null():
    shapes = {"x": X.shape, "w": W.shape}
    # retain_graph: backward runs twice on one forward below (planned memory otherwise lets
    # backward temporaries reuse the forward values it has read, as MXNet's planner does)
    b = Bound(_xw_graph(), shapes, {"x": "add", "w": "write"}, retain_graph=True)
    b.var("x")[...] = X
    b.var("w")[...] = W
    b.grad("x")[...] = 10.0            # 'add' accumulates into what is there
    b.grad("w")[...] = np.nan          # 'write' overwrites
    b.view(b.cg.head_grad_slots[0], X.shape)[...] = HG
    b.prog.run("forward")
    y = b.view(b.cg.head_slots[0], X.shape)
    np.testing.assert_allclose(y, np.maximum(X, 0) * W + X * X, rtol=1e-6)
    b.prog.run("backward")
    np.testing.assert_allclose(b.grad("x"), 10 + DX, rtol=1e-6)
    np.testing.assert_allclose(b.grad("w"), DW, rtol=1e-6)
    b.prog.run("backward")             # a second backward adds again / writes again
    np.testing.assert_allclose(b.grad("x"), 10 + 2 * DX, rtol=1e-6)
    np.testing.assert_allclose(b.grad("w"), DW, rtol=1e-6)
    sums = [n for n in b.cg.graph.nodes if n.op == "add_n"]
    assert sums, "x's contributions are summed with add_n"

    nul = Bound(_xw_graph(), shapes, {"x": "write", "w": "null"})
    assert set(nul.cg.grad_slots) == {"x"}
    assert [s.name for s in nul.prog.slots if s.kind == "grad"] == ["x_grad"]
    nul.var("x")[...] = X
    nul.var("w")[...] = W
    nul.view(nul.cg.head_grad_slots[0], X.shape)[...] = HG
    nul.prog.run("forward")
    nul.prog.run("backward")
    np.testing.assert_allclose(nul.grad("x"), DX, rtol=1e-6)


def test_all_null_grad_req_builds_no_backward():
    b = Bound(_xw_graph(), {"x": X.shape, "w": W.shape}, {"x": "null", "w": "null"})
    assert b.cg.grad_slots == {} and b.cg.head_grad_slots == []
    start, end = b.prog.sections["backward"]
    assert start == end


def test_write_gradient_through_a_non_differentiable_path_is_zero():
    """w only feeds a comparison (gradient zeros_like): 'write' stores zeros."""
    x, w = variable("x"), variable("w")
    y = make_node("relu", [Entry(x, 0)], name="r")
    z = make_node("_greater_scalar", [Entry(w, 0)], {"scalar": 0.0}, name="gt")
    b = Bound(Graph([Entry(y, 0), Entry(z, 0)]), {"x": (4,), "w": (3,)},
              {"x": "write", "w": "write"})
    b.var("x")[...] = [1, -1, 2, -2]
    b.var("w")[...] = [1, -1, 2]
    b.grad("w")[...] = np.nan
    b.view(b.cg.head_grad_slots[0], (4,))[...] = 1
    b.view(b.cg.head_grad_slots[1], (3,))[...] = 1
    b.prog.run("forward")
    np.testing.assert_array_equal(b.view(b.cg.head_slots[1], (3,)), [1, 0, 1])
    b.prog.run("backward")
    np.testing.assert_array_equal(b.grad("w"), np.zeros(3))
    np.testing.assert_array_equal(b.grad("x"), [1, 0, 1, 0])
