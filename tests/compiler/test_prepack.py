"""Constant weights stored prepacked for the GEMM template (``compile_graph(constants=)``,
``Program.slot_layouts``, ``CompiledModel``): same results as plain storage, through the
whole-program cache; a weight read by two nodes stays plain."""
from __future__ import annotations

import numpy as np

import mxc as mx
from mxc.compiler.model import CompiledModel

RNG = np.random.default_rng(5)
V = mx.sym.Variable


def _net(shared: bool):
    x = V("data")
    w = V("w1")
    h = mx.sym.relu(mx.sym.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=13,
                                       no_bias=True, name="c1"))
    h2 = mx.sym.Convolution(h, V("w2"), V("b2"), kernel=(3, 3), num_filter=7, name="c2")
    if shared:   # w1 read by a second (dilated, so not a duplicate) convolution too
        h2 = h2 + mx.sym.Convolution(x, w, kernel=(3, 3), pad=(2, 2), dilate=(2, 2),
                                     num_filter=13, no_bias=True, name="c3").slice_axis(1, 0, 7) \
            .slice_axis(2, 1, 10).slice_axis(3, 1, 11)
    return h2


def _params():
    return {"w1": RNG.standard_normal((13, 5, 3, 3)).astype(np.float32),
            "w2": RNG.standard_normal((7, 13, 3, 3)).astype(np.float32),
            "b2": RNG.standard_normal(7).astype(np.float32)}


def _reference(sym, params, x):
    ex = sym.simple_bind(mx.cpu(), data=x.shape, grad_req="null")
    for k, v in params.items():
        ex.arg_dict[k][:] = v
    ex.arg_dict["data"][:] = x
    return ex.forward()[0].asnumpy()


def test_prepacked_weights_match(tmp_path, monkeypatch):
    monkeypatch.setenv("MXC_CACHE_DIR", str(tmp_path))
    sym, params = _net(False), _params()
    x = RNG.standard_normal((2, 5, 11, 12)).astype(np.float32)
    want = _reference(sym, params, x)
    for cached in (False, True):
        m = CompiledModel(sym._graph(), params, {}, {"data": x.shape})
        assert m.compiled.from_cache == cached
        layouts = m.compiled.program.slot_layouts
        packed = {n for n, s in m.compiled.var_slots.items() if s in layouts}
        assert packed == {"w1", "w2"}
        np.testing.assert_allclose(m(data=x)[0], want, rtol=1e-4, atol=1e-4)


def test_shared_weight_stays_plain():
    sym, params = _net(True), _params()
    x = RNG.standard_normal((1, 5, 11, 12)).astype(np.float32)
    m = CompiledModel(sym._graph(), params, {}, {"data": x.shape})
    layouts = m.compiled.program.slot_layouts
    assert m.compiled.var_slots["w1"] not in layouts
    assert m.compiled.var_slots["w2"] in layouts
    np.testing.assert_allclose(m(data=x)[0], _reference(sym, params, x), rtol=1e-4, atol=1e-4)


def test_fully_connected_weights_prepacked_as_b(tmp_path, monkeypatch):
    # FullyConnected weights are the GEMM's B operand (x @ W^T): packed into column panels
    monkeypatch.setenv("MXC_CACHE_DIR", str(tmp_path))
    x = V("data")
    h = mx.sym.relu(mx.sym.FullyConnected(x, V("w1"), V("b1"), num_hidden=70, name="fc1"))
    y = mx.sym.FullyConnected(h, V("w2"), V("b2"), num_hidden=10, name="fc2")
    params = {"w1": RNG.standard_normal((70, 33)).astype(np.float32),
              "b1": RNG.standard_normal(70).astype(np.float32),
              "w2": RNG.standard_normal((10, 70)).astype(np.float32),
              "b2": RNG.standard_normal(10).astype(np.float32)}
    data = RNG.standard_normal((12, 33)).astype(np.float32)
    want = _reference(y, params, data)
    for cached in (False, True):
        m = CompiledModel(y._graph(), params, {}, {"data": data.shape})
        assert m.compiled.from_cache == cached
        layouts = m.compiled.program.slot_layouts
        assert layouts[m.compiled.var_slots["w1"]][0] == "gemm_b"
        np.testing.assert_allclose(m(data=data)[0], want, rtol=1e-4, atol=1e-4)
