"""dot, batch_dot, linalg_gemm2 and FullyConnected: forward and gradients against numpy."""
import numpy as np
import pytest

from mxc.base import MXNetError, OpError, ShapeError
from mxc.testing import check_forward, check_grad, reference, run_op

RNG = np.random.default_rng(7)


def rnd(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# dot
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ls,rs,ta,tb,out", [
    ((3, 5), (5, 4), False, False, (3, 4)),
    ((5, 3), (5, 4), True, False, (3, 4)),
    ((3, 5), (4, 5), False, True, (3, 4)),
    ((5, 3), (4, 5), True, True, (3, 4)),
    ((2, 3, 5), (5, 4, 2), False, False, (2, 3, 4, 2)),      # N-d: last axis x first axis
    ((5, 2, 3), (5, 7), True, False, (2, 3, 7)),             # transpose_a: first axis
    ((2, 3, 5), (4, 2, 5), False, True, (2, 3, 4, 2)),       # transpose_b: last axis
    ((6,), (6,), False, False, (1,)),                        # vector . vector
    ((6,), (6, 3), False, False, (3,)),
    ((4, 6), (6,), False, False, (4,)),
    ((3, 0), (0, 4), False, False, (3, 4)),                  # empty contraction -> zeros
])
def test_dot_forward(ls, rs, ta, tb, out):
    attrs = {"transpose_a": ta, "transpose_b": tb}
    got = check_forward("dot", [rnd(*ls), rnd(*rs)], attrs, rtol=1e-5, atol=1e-5)
    assert got[0].shape == out


def test_dot_semantics_match_numpy():
    a, b = rnd(2, 3, 5), rnd(5, 4)
    np.testing.assert_allclose(reference("dot", [a, b])[0], np.tensordot(a, b, 1), rtol=1e-5)
    a, b = rnd(5, 2, 3), rnd(5, 4)
    np.testing.assert_allclose(reference("dot", [a, b], {"transpose_a": True})[0],
                               np.tensordot(a, b, ([0], [0])), rtol=1e-5, atol=1e-6)
    a, b = rnd(2, 5), rnd(3, 4, 5)
    np.testing.assert_allclose(reference("dot", [a, b], {"transpose_b": True})[0],
                               np.tensordot(a, b, ([1], [2])), rtol=1e-5, atol=1e-6)


def test_dot_float64_and_grads():
    check_forward("dot", [rnd(7, 9, dtype="float64"), rnd(9, 5, dtype="float64")], rtol=1e-12,
                  atol=1e-12)
    check_grad("dot", [rnd(3, 4, dtype="float64"), rnd(4, 5, dtype="float64")])
    check_grad("dot", [rnd(4, 2, 3, dtype="float64"), rnd(4, 5, dtype="float64")],
               {"transpose_a": True})
    check_grad("dot", [rnd(2, 3, 4, dtype="float64"), rnd(5, 4, dtype="float64")],
               {"transpose_b": True})
    check_grad("dot", [rnd(4, 3, dtype="float64"), rnd(2, 4, dtype="float64")],
               {"transpose_a": True, "transpose_b": True})
    check_grad("dot", [rnd(5, dtype="float64"), rnd(5, dtype="float64")])


def test_dot_float16():
    check_forward("dot", [rnd(3, 8, dtype="float16"), rnd(8, 5, dtype="float16")], rtol=1e-2,
                  atol=1e-2)


def test_dot_errors():
    with pytest.raises(ShapeError, match="dot"):
        run_op("dot", [rnd(3, 4), rnd(5, 6)])
    with pytest.raises(ShapeError, match="dot"):
        run_op("dot", [rnd(3), rnd(3)], {"transpose_a": True})
    with pytest.raises(OpError, match="dot"):
        run_op("dot", [rnd(3, 4), rnd(4, 2)], {"transpose_c": True})
    with pytest.raises(OpError, match="dot"):
        run_op("dot", [rnd(3, 4), rnd(4, 2)], {"transpose_a": "maybe"})


# ---------------------------------------------------------------------------------------------
# batch_dot / linalg_gemm2
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_batch_dot(ta, tb):
    ls = (3, 5, 4) if ta else (3, 4, 5)
    rs = (3, 6, 5) if tb else (3, 5, 6)
    got = check_forward("batch_dot", [rnd(*ls), rnd(*rs)],
                        {"transpose_a": ta, "transpose_b": tb}, rtol=1e-5, atol=1e-5)
    assert got[0].shape == (3, 4, 6)
    check_grad("batch_dot", [rnd(2, *ls[1:], dtype="float64"), rnd(2, *rs[1:], dtype="float64")],
               {"transpose_a": ta, "transpose_b": tb})


def test_batch_dot_nd_and_errors():
    got = check_forward("batch_dot", [rnd(2, 3, 4, 5), rnd(2, 3, 5, 2)], rtol=1e-5, atol=1e-5)
    assert got[0].shape == (2, 3, 4, 2)
    check_grad("batch_dot", [rnd(2, 2, 3, 2, dtype="float64"), rnd(2, 2, 2, 3,
                                                                   dtype="float64")])
    with pytest.raises(ShapeError, match="batch_dot"):
        run_op("batch_dot", [rnd(2, 3, 4), rnd(3, 4, 5)])
    with pytest.raises(ShapeError, match="batch_dot"):
        run_op("batch_dot", [rnd(2, 3, 4), rnd(2, 5, 5)])
    with pytest.raises(ShapeError, match="batch_dot"):
        run_op("batch_dot", [rnd(3, 4), rnd(4, 5)])


def test_linalg_gemm2():
    check_forward("linalg_gemm2", [rnd(4, 3), rnd(4, 5)],
                  {"transpose_a": True, "alpha": 2.5}, rtol=1e-5, atol=1e-5)
    check_forward("linalg_gemm2", [rnd(2, 3, 4), rnd(2, 5, 4)],
                  {"transpose_b": True}, rtol=1e-5, atol=1e-5)
    check_grad("linalg_gemm2", [rnd(3, 4, dtype="float64"), rnd(4, 2, dtype="float64")],
               {"alpha": -0.5})
    with pytest.raises(OpError, match="linalg_gemm2"):
        run_op("linalg_gemm2", [rnd(3, 4), rnd(4, 2)], {"axis": -3})


# ---------------------------------------------------------------------------------------------
# FullyConnected
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dshape,hidden,no_bias,flatten,out", [
    ((5, 7), 4, False, True, (5, 4)),
    ((3, 2, 3, 2), 6, False, True, (3, 6)),        # 4-D data flattened
    ((3, 2, 5), 4, True, False, (3, 2, 4)),        # flatten=False keeps leading dims
    ((9,), 3, False, True, (9, 3)),                # 1-D data: 9 rows of 1 feature
    ((33, 65), 17, False, True, (33, 17)),         # odd sizes, GEMM edges
])
def test_fully_connected_forward(dshape, hidden, no_bias, flatten, out):
    x = rnd(*dshape)
    k = x.size // dshape[0] if flatten else dshape[-1]
    if len(dshape) == 1:
        k = 1
    ins = [x, rnd(hidden, k)] + ([] if no_bias else [rnd(hidden)])
    got = check_forward("FullyConnected", ins,
                        {"num_hidden": hidden, "no_bias": no_bias, "flatten": flatten},
                        rtol=1e-5, atol=1e-5)
    assert got[0].shape == out


def test_fully_connected_grads():
    d = "float64"
    check_grad("FullyConnected", [rnd(3, 2, 2, dtype=d), rnd(5, 4, dtype=d), rnd(5, dtype=d)],
               {"num_hidden": 5})
    check_grad("FullyConnected", [rnd(2, 3, 4, dtype=d), rnd(3, 4, dtype=d)],
               {"num_hidden": 3, "no_bias": True, "flatten": False})
    check_grad("FullyConnected", [rnd(4, 3), rnd(2, 3), rnd(2)], {"num_hidden": 2},
               rtol=2e-2, atol=2e-3)


def test_fully_connected_infers_weight_shape():
    from mxc.compiler.infer import infer_shapes
    from mxc.ir.graph import Entry, Graph, make_node, variable

    vs = [variable(n) for n in ("data", "weight", "bias")]
    node = make_node("FullyConnected", [Entry(v) for v in vs], {"num_hidden": 7})
    shapes = infer_shapes(Graph([Entry(node)]), {"data": (4, 3, 5)})
    assert shapes[(vs[1].uid, 0)] == (7, 15)
    assert shapes[(vs[2].uid, 0)] == (7,)
    assert shapes[(node.uid, 0)] == (4, 7)


def test_fully_connected_errors():
    with pytest.raises(ShapeError, match="FullyConnected"):
        run_op("FullyConnected", [rnd(4, 5), rnd(3, 6), rnd(3)], {"num_hidden": 3})
    with pytest.raises(ShapeError, match="FullyConnected"):
        run_op("FullyConnected", [rnd(4, 5), rnd(3, 5), rnd(4)], {"num_hidden": 3})
    with pytest.raises(OpError, match="FullyConnected"):
        run_op("FullyConnected", [rnd(4, 5), rnd(3, 5)], {"num_hidden": 3, "no_bias": "yes"})
    with pytest.raises(OpError, match="FullyConnected"):
        run_op("FullyConnected", [rnd(4, 5), rnd(3, 5)], {"no_bias": True})
    with pytest.raises(MXNetError, match="FullyConnected"):
        run_op("FullyConnected", [rnd(4, 5).astype("int32"), rnd(3, 5).astype("int32")],
               {"num_hidden": 3, "no_bias": True})


# ---------------------------------------------------------------------------------------------
# khatri_rao, _contrib_div_sqrt_dim
# ---------------------------------------------------------------------------------------------
def test_khatri_rao_doc_example():
    a = np.array([[1, -1], [2, -3]], np.float32)
    b = np.array([[1, 4], [2, 5], [3, 6]], np.float32)
    out = run_op("khatri_rao", [a, b], {"num_args": 2})[0][0]
    np.testing.assert_array_equal(out, [[1, -4], [2, -5], [3, -6], [2, -12], [4, -15],
                                        [6, -18]])


@pytest.mark.parametrize("shapes,dtype", [([(3, 4)], np.float32),
                                          ([(3, 5), (2, 5), (7, 5)], np.float64),
                                          ([(1, 1), (1, 1)], np.float32),
                                          ([(4, 3), (2, 3)], np.float16),
                                          ([(0, 3), (2, 3)], np.float32)])
def test_khatri_rao(shapes, dtype):
    ins = [RNG.standard_normal(s).astype(dtype) for s in shapes]
    check_forward("khatri_rao", ins, {"num_args": len(ins)}, rtol=1e-3 if dtype == np.float16
                  else 1e-6, atol=1e-6)


def test_khatri_rao_errors_and_user_level():
    import mxc as mx
    with pytest.raises((ShapeError, OpError, MXNetError)):
        run_op("khatri_rao", [np.ones((2, 3), np.float32), np.ones((2, 4), np.float32)],
               {"num_args": 2})
    with pytest.raises((ShapeError, OpError, MXNetError)):
        run_op("khatri_rao", [np.ones((2, 3, 1), np.float32)], {"num_args": 1})
    a = mx.nd.array([[1, 2]])
    np.testing.assert_array_equal(mx.nd.khatri_rao(a, a, a).asnumpy(), [[1, 8]])


@pytest.mark.parametrize("shape,dtype", [((2, 3, 7), np.float32), ((5,), np.float64),
                                         ((3, 1), np.float32), ((4, 16), np.float16)])
def test_div_sqrt_dim(shape, dtype):
    x = RNG.standard_normal(shape).astype(dtype)
    check_forward("_contrib_div_sqrt_dim", [x], rtol=1e-3 if dtype == np.float16 else 1e-6,
                  atol=0)
    out = run_op("_contrib_div_sqrt_dim", [x])[0][0]
    np.testing.assert_allclose(out.astype(np.float64),
                               x.astype(np.float64) / np.sqrt(shape[-1]), rtol=2e-3)


def test_div_sqrt_dim_grad_and_user_level():
    import mxc as mx
    check_grad("_contrib_div_sqrt_dim", [RNG.standard_normal((3, 4))], rtol=1e-6, atol=1e-7)
    out = mx.nd.contrib.div_sqrt_dim(mx.nd.ones((2, 4)))
    np.testing.assert_allclose(out.asnumpy(), np.full((2, 4), 0.5))
