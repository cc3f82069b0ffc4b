"""Epilogue fusion (``compiler.fuse_epilogue``): relu and residual adds folded into the GEMM
template of Convolution / FullyConnected, checked against the unfused graph, numpy and with
poisoned dead storage; what must not fold (shared outputs, hazards) stays separate."""
from __future__ import annotations

import numpy as np
import pytest

import mxc as mx
from mxc.ir.ops import conv as convmod

from test_fuse import Run

RNG = np.random.default_rng(11)
V = mx.sym.Variable


def _vals(shapes: dict) -> dict:
    return {k: RNG.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}


def _check(sym, values, *, groups: list, grad: tuple = ()):
    fused = Run(sym, values, grad=grad)
    plain = Run(sym, values, fusion=False, grad=grad)
    for a, b in zip(fused.outputs, plain.outputs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for k in grad:
        np.testing.assert_allclose(fused.grads[k], plain.grads[k], rtol=1e-4, atol=1e-4)
    got = [g for g in fused.cg.fused_groups if g[0] in {m[0] for m in groups}]
    assert got == groups, fused.cg.fused_groups
    return fused


def _conv_np(x, w, b, pad):
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    y = np.zeros((N, F, Ho, Wo)) + b[None, :, None, None]
    for ky in range(k):
        for kx in range(k):
            y += np.einsum("nchw,fc->nfhw", xp[:, :, ky:ky + Ho, kx:kx + Wo], w[:, :, ky, kx])
    return y


@pytest.mark.parametrize("hw", [(12, 13), (5, 5), (1, 30)])
def test_conv_add_relu_one_kernel(hw):
    # a ResNet block tail: conv -> + residual -> relu, for the implicit-GEMM geometry
    # (wide rows), the im2col one (narrow rows) and 1-row images
    H, W = hw
    c = mx.sym.Convolution(V("x"), kernel=(3, 3), pad=(1, 1), num_filter=6, name="conv")
    y = mx.sym.Activation(mx.sym.elemwise_add(c, V("r"), name="add"), act_type="relu",
                          name="act")
    vals = _vals({"x": (2, 5, H, W), "r": (2, 6, H, W), "conv_weight": (6, 5, 3, 3),
                  "conv_bias": (6,)})
    f = _check(y, vals, groups=[["conv", "add", "act"]])
    ref = np.maximum(_conv_np(vals["x"], vals["conv_weight"], vals["conv_bias"], 1)
                     + vals["r"], 0)
    np.testing.assert_allclose(f.outputs[0], ref, rtol=1e-5, atol=1e-5)


def test_fc_relu_dot_and_gemm_schedules():
    for batch in (1, 3, 40):
        fc = mx.sym.FullyConnected(V("x"), num_hidden=37, name="fc")
        y = mx.sym.relu(fc, name="r")
        vals = _vals({"x": (batch, 70), "fc_weight": (37, 70), "fc_bias": (37,)})
        f = _check(y, vals, groups=[["fc", "r"]])
        ref = np.maximum(vals["x"] @ vals["fc_weight"].T + vals["fc_bias"], 0)
        np.testing.assert_allclose(f.outputs[0], ref, rtol=1e-5, atol=1e-5)


def test_residual_computed_later_moves_the_gemm():
    # the add reads two conv outputs; one GEMM runs at the add's place instead
    x = V("x")
    a = mx.sym.Convolution(x, kernel=(3, 3), pad=(1, 1), num_filter=4, name="a")
    b = mx.sym.Convolution(x, kernel=(1, 1), num_filter=4, name="b")
    y = mx.sym.relu(a + b, name="out")
    vals = _vals({"x": (1, 3, 9, 10), "a_weight": (4, 3, 3, 3), "a_bias": (4,),
                  "b_weight": (4, 3, 1, 1), "b_bias": (4,)})
    f = Run(y, vals)
    plain = Run(y, vals, fusion=False)
    np.testing.assert_allclose(f.outputs[0], plain.outputs[0], rtol=1e-5, atol=1e-5)
    assert any(len(g) == 3 and g[-1] == "out" for g in f.cg.fused_groups), f.cg.fused_groups


def test_chunked_im2col_is_not_moved(monkeypatch):
    # several im2col chunks share one buffer: moving their GEMMs past the next chunk's
    # im2col would read overwritten columns, so the residual must already be there
    monkeypatch.setattr(convmod, "COL_LIMIT", 3 * 9 * 25)
    monkeypatch.setattr(convmod, "IMPLICIT_MAX_WASTE", 0.0)
    x = V("x")
    a = mx.sym.Convolution(x, kernel=(3, 3), pad=(1, 1), num_filter=4, name="a")
    b = mx.sym.Convolution(x, kernel=(1, 1), num_filter=4, name="b")
    y = mx.sym.relu(a + b, name="out")
    vals = _vals({"x": (3, 3, 5, 5), "a_weight": (4, 3, 3, 3), "a_bias": (4,),
                  "b_weight": (4, 3, 1, 1), "b_bias": (4,)})
    f = Run(y, vals)
    plain = Run(y, vals, fusion=False)
    np.testing.assert_allclose(f.outputs[0], plain.outputs[0], rtol=1e-5, atol=1e-5)


def test_shared_output_not_fused():
    c = mx.sym.Convolution(V("x"), kernel=(3, 3), pad=(1, 1), num_filter=4, name="conv")
    y = mx.sym.Group([mx.sym.relu(c, name="r"), c * 2])
    vals = _vals({"x": (1, 2, 8, 8), "conv_weight": (4, 2, 3, 3), "conv_bias": (4,)})
    f = Run(y, vals)
    plain = Run(y, vals, fusion=False)
    for a, b in zip(f.outputs, plain.outputs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not any("conv" in g for g in f.cg.fused_groups), f.cg.fused_groups


def test_training_graph_gradients_unchanged():
    c = mx.sym.Convolution(V("x"), kernel=(3, 3), pad=(1, 1), num_filter=4, name="conv")
    y = mx.sym.relu(c, name="r")
    fc = mx.sym.relu(mx.sym.FullyConnected(mx.sym.flatten(y), num_hidden=5, name="fc"),
                     name="fr")
    vals = _vals({"x": (2, 3, 8, 8), "conv_weight": (4, 3, 3, 3), "conv_bias": (4,),
                  "fc_weight": (5, 256), "fc_bias": (5,)})
    _check(fc, vals, groups=[["conv", "r"], ["fc", "fr"]],
           grad=("x", "conv_weight", "conv_bias", "fc_weight", "fc_bias"))


def test_poisoned_dead_storage(monkeypatch):
    # planned storage + fused epilogues: dead bytes hold NaN, results must not see them
    monkeypatch.setenv("MXC_POISON_MEMORY", "1")
    c1 = mx.sym.Convolution(V("x"), kernel=(3, 3), pad=(1, 1), num_filter=4, name="c1")
    h = mx.sym.relu(c1, name="r1")
    c2 = mx.sym.Convolution(h, kernel=(3, 3), pad=(1, 1), num_filter=4, name="c2")
    y = mx.sym.relu(c2 + h, name="r2")
    vals = _vals({"x": (2, 4, 10, 10), "c1_weight": (4, 4, 3, 3), "c1_bias": (4,),
                  "c2_weight": (4, 4, 3, 3), "c2_bias": (4,)})
    f = Run(y, vals)
    monkeypatch.setenv("MXC_POISON_MEMORY", "0")
    plain = Run(y, vals, fusion=False)
    assert np.isfinite(f.outputs[0]).all()
    np.testing.assert_allclose(f.outputs[0], plain.outputs[0], rtol=1e-5, atol=1e-5)


def test_inspect_svg_draws_groups_and_storage(tmp_path):
    import shutil

    from click.testing import CliRunner

    from mxc.cli.main import main

    c = mx.sym.Convolution(V("x"), kernel=(3, 3), pad=(1, 1), num_filter=4, name="conv")
    y = mx.sym.relu(c, name="r")
    p = tmp_path / "m-symbol.json"
    p.write_text(y.tojson())
    dot = tmp_path / "g.dot"
    r = CliRunner().invoke(main, ["inspect", str(p), "--shape", "x=1,2,8,8", "--svg", str(dot)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = dot.read_text()
    assert text.startswith("digraph") and "cluster_k" in text and '"conv"' in text
    assert "slot " in text        # storage of the values on the edges
    if shutil.which("dot") is None:
        pytest.skip("graphviz `dot` not installed")
    svg = tmp_path / "g.svg"
    r = CliRunner().invoke(main, ["inspect", str(p), "--shape", "x=1,2,8,8", "--svg", str(svg)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
