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


def test_direct_convolution_for_prepacked_weights(tmp_path, monkeypatch):
    # constant convolution weights run through the direct convolution template (packed as
    # "conv_direct"): stride-1 "same", strided, 1x1 strided, dilated and 1-D layers, with the
    # ReLU and a residual add fused into its epilogue; through the program cache as well.
    # One with few output channels (most vector lanes empty) keeps the GEMM.
    monkeypatch.setenv("MXC_CACHE_DIR", str(tmp_path))
    x = V("data")
    c1 = mx.sym.relu(mx.sym.Convolution(x, V("w1"), V("b1"), kernel=(3, 3), pad=(1, 1),
                                        num_filter=28, name="c1"))
    c2 = mx.sym.Convolution(c1, V("w2"), V("b2"), kernel=(3, 3), pad=(1, 1), stride=(2, 2),
                            num_filter=32, name="c2")
    down = mx.sym.Convolution(c1, V("w3"), kernel=(1, 1), stride=(2, 2), num_filter=32,
                              no_bias=True, name="down")
    h = mx.sym.relu(c2 + down)
    h = mx.sym.Convolution(h, V("w4"), V("b4"), kernel=(3, 3), pad=(2, 2), dilate=(2, 2),
                           num_filter=30, name="dil")
    g = mx.sym.Convolution(h, V("w5"), V("b5"), kernel=(3, 3), pad=(1, 1), num_filter=4,
                           name="few")
    out = mx.sym.Convolution(h, V("w6"), kernel=(1, 3), pad=(0, 1), num_filter=26,
                             no_bias=True, name="row")
    sym = mx.sym.Group([out, g])
    shapes = {"w1": (28, 5, 3, 3), "b1": (28,), "w2": (32, 28, 3, 3), "b2": (32,),
              "w3": (32, 28, 1, 1), "w4": (30, 32, 3, 3), "b4": (30,), "w5": (4, 30, 3, 3),
              "b5": (4,), "w6": (26, 30, 1, 3)}
    params = {k: RNG.standard_normal(s).astype(np.float32) * 0.3 for k, s in shapes.items()}
    data = RNG.standard_normal((2, 5, 13, 15)).astype(np.float32)
    ex = sym.simple_bind(mx.cpu(), data=data.shape, grad_req="null")
    for k, v in params.items():
        ex.arg_dict[k][:] = v
    ex.arg_dict["data"][:] = data
    want = [o.asnumpy() for o in ex.forward()]
    for cached in (False, True):
        m = CompiledModel(sym._graph(), params, {}, {"data": data.shape})
        assert m.compiled.from_cache == cached
        layouts = m.compiled.program.slot_layouts
        kinds = {n: layouts[s][0] for n, s in m.compiled.var_slots.items() if s in layouts}
        assert kinds == {"w1": "conv_direct", "w2": "conv_direct", "w3": "conv_direct",
                         "w4": "conv_direct", "w6": "conv_direct", "w5": "gemm_a"}
        notes = [lk.kernel.note for lk in m.compiled.kernels
                 if getattr(lk.kernel, "conv_spec", None) is not None]
        assert "conv+relu" in notes and "conv+add+relu" in notes
        for got, w in zip(m(data=data), want):
            np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4)


def test_direct_convolution_1d():
    x = V("data")
    sym = mx.sym.relu(mx.sym.Convolution(x, V("w"), V("b"), kernel=(5,), pad=(2,), stride=(2,),
                                         num_filter=16, name="c"))
    params = {"w": RNG.standard_normal((16, 3, 5)).astype(np.float32),
              "b": RNG.standard_normal(16).astype(np.float32)}
    data = RNG.standard_normal((3, 3, 37)).astype(np.float32)
    m = CompiledModel(sym._graph(), params, {}, {"data": data.shape})
    layouts = m.compiled.program.slot_layouts
    assert layouts[m.compiled.var_slots["w"]][0] == "conv_direct"
    np.testing.assert_allclose(m(data=data)[0], _reference(sym, params, data), rtol=1e-4,
                               atol=1e-4)


def test_direct_convolution_narrow_last_panel():
    # 96 output channels: a 64-channel panel and a 32-channel one (not 2 x 64), packed at
    # bind time with the narrower last panel
    x = V("data")
    sym = mx.sym.Convolution(x, V("w"), V("b"), kernel=(3, 3), pad=(1, 1), num_filter=96,
                             name="c")
    params = {"w": RNG.standard_normal((96, 6, 3, 3)).astype(np.float32),
              "b": RNG.standard_normal(96).astype(np.float32)}
    data = RNG.standard_normal((2, 6, 9, 11)).astype(np.float32)
    m = CompiledModel(sym._graph(), params, {}, {"data": data.shape})
    layout = m.compiled.program.slot_layouts[m.compiled.var_slots["w"]]
    assert layout[0] == "conv_direct" and layout[3] == 64 and layout[4][-1] == 32
    np.testing.assert_allclose(m(data=data)[0], _reference(sym, params, data), rtol=1e-4,
                               atol=1e-4)
