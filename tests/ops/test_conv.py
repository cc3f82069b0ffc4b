"""Convolution and Deconvolution: 1-D/2-D/3-D, stride/dilate/pad, groups (incl. depthwise),
no_bias, adj/target_shape; forward and gradients, plus loop-level oracles for the numpy
references and the chunked (bounded im2col buffer) lowering."""
import itertools

import numpy as np
import pytest

import mxc.ir.ops.conv as conv_mod
from mxc.base import MXNetError, OpError, ShapeError
from mxc.testing import check_forward, check_grad, reference, run_op

RNG = np.random.default_rng(11)


def rnd(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def naive_conv(x, w, b, stride, pad, dilate, groups):
    """Direct convolution, one output pixel at a time."""
    N, C = x.shape[:2]
    F = w.shape[0]
    k = w.shape[2:]
    X = x.shape[2:]
    Y = [(xx + 2 * p - (d * (kk - 1) + 1)) // s + 1
         for xx, kk, s, p, d in zip(X, k, stride, pad, dilate)]
    Cg, Fg = C // groups, F // groups
    y = np.zeros((N, F) + tuple(Y))
    for f in range(F):
        gi = f // Fg
        for o in itertools.product(*[range(n) for n in Y]):
            acc = np.zeros(N)
            for t in itertools.product(*[range(kk) for kk in k]):
                pos = [oo * s - p + tt * d for oo, tt, s, p, d in zip(o, t, stride, pad,
                                                                        dilate)]
                if all(0 <= q < xx for q, xx in zip(pos, X)):
                    xs = x[(slice(None), slice(gi * Cg, (gi + 1) * Cg)) + tuple(pos)]
                    acc += xs.astype(np.float64) @ w[(f, slice(None)) + t].astype(np.float64)
            y[(slice(None), f) + o] = acc + (0 if b is None else b[f])
    return y


def conv_attrs(k, stride=None, pad=None, dilate=None, F=4, G=1, no_bias=False, **kw):
    a = {"kernel": k, "num_filter": F, "num_group": G, "no_bias": no_bias}
    if stride:
        a["stride"] = stride
    if pad:
        a["pad"] = pad
    if dilate:
        a["dilate"] = dilate
    a.update(kw)
    return a


# (data shape, attrs) - the weight and bias shapes follow
CONV_CASES = [
    ((2, 3, 7, 6), conv_attrs((3, 3))),
    ((2, 3, 9, 8), conv_attrs((3, 3), pad=(1, 1), F=5)),
    ((2, 4, 9, 10), conv_attrs((3, 2), stride=(2, 1), pad=(1, 1), dilate=(1, 2), F=6, G=2)),
    ((1, 3, 11, 13), conv_attrs((5, 5), stride=(2, 3), pad=(2, 1), dilate=(2, 1), F=2)),
    ((2, 4, 7, 6), conv_attrs((1, 1), F=8)),                                 # pointwise GEMM
    ((2, 4, 7, 6), conv_attrs((1, 1), F=6, G=2, no_bias=True)),              # grouped 1x1
    ((2, 4, 7, 9), conv_attrs((1, 1), stride=(2, 2), F=3)),                  # strided 1x1
    ((2, 4, 7, 16), conv_attrs((3, 3), pad=(1, 1), F=4, G=4)),               # depthwise
    ((2, 4, 7, 16), conv_attrs((3, 3), pad=(2, 1), dilate=(2, 1), stride=(2, 2), F=8, G=4,
                               no_bias=True)),                               # depthwise x2
    ((2, 3, 11), conv_attrs((3,), stride=(2,), pad=(1,), F=4, layout="NCW")),        # 1-D
    ((2, 4, 13), conv_attrs((3,), dilate=(3,), F=4, G=4)),                   # 1-D depthwise
    ((1, 2, 5, 6, 7), conv_attrs((3, 2, 3), stride=(1, 2, 1), pad=(1, 0, 1), F=3)),  # 3-D
    ((1, 4, 4, 5, 6), conv_attrs((2, 3, 3), pad=(0, 1, 1), F=4, G=4, layout="NCDHW")),
]


def conv_inputs(shape, a, dtype="float32"):
    k = a["kernel"]
    x = rnd(*shape, dtype=dtype)
    w = rnd(a["num_filter"], shape[1] // a["num_group"], *k, dtype=dtype)
    ins = [x, w]
    if not a["no_bias"]:
        ins.append(rnd(a["num_filter"], dtype=dtype))
    return ins


def _conv_forward_matches(shape, attrs) -> None:
    """mxc against the op's numpy reference and against the loop-level oracle."""
    ins = conv_inputs(shape, attrs)
    got = check_forward("Convolution", ins, attrs, rtol=1e-4, atol=1e-4)
    nd = len(attrs["kernel"])
    want = naive_conv(ins[0], ins[1], None if attrs["no_bias"] else ins[2],
                      attrs.get("stride", (1,) * nd), attrs.get("pad", (0,) * nd),
                      attrs.get("dilate", (1,) * nd), attrs["num_group"])
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,attrs", CONV_CASES)
def test_conv_forward(shape, attrs):
    _conv_forward_matches(shape, attrs)


GRAD_CASES = [
    ((2, 3, 5, 4), conv_attrs((3, 2), stride=(2, 1), pad=(1, 1), F=2)),
    ((1, 4, 5, 5), conv_attrs((3, 3), pad=(1, 1), dilate=(2, 1), F=4, G=2)),
    ((2, 3, 4, 3), conv_attrs((1, 1), F=2)),
    ((2, 2, 4, 9), conv_attrs((3, 3), pad=(1, 1), F=4, G=2)),              # depthwise x2
    ((1, 3, 6, 7), conv_attrs((3, 3), stride=(2, 2), pad=(1, 0), F=3, G=3)),  # strided dw
    ((2, 2, 9), conv_attrs((3,), stride=(2,), pad=(2,), dilate=(2,), F=3, no_bias=True)),
    ((1, 2, 3, 4, 4), conv_attrs((2, 3, 2), stride=(1, 1, 2), pad=(1, 1, 0), F=2)),
    # stride-1 "same" convolutions: implicit-GEMM forward and backward data (flipped weights)
    ((2, 3, 5, 6), conv_attrs((3, 3), pad=(1, 1), F=4)),
    ((1, 4, 6, 5), conv_attrs((3, 3), pad=(1, 1), F=6, G=2)),
    ((1, 2, 7, 6), conv_attrs((5, 3), pad=(4, 2), dilate=(2, 2), F=3, no_bias=True)),
    ((2, 3, 8), conv_attrs((3,), pad=(1,), F=2)),
]


@pytest.mark.parametrize("shape,attrs", GRAD_CASES)
def test_conv_grad(shape, attrs):
    check_grad("Convolution", conv_inputs(shape, attrs, "float64"), attrs)


# Convolutions the direct template takes (codegen/conv_template.py) when their weights are
# repacked every run: forced here for small shapes (DIRECT_REPACK_MIN_PIXELS = 1); stride-1
# "same" ones also run their data gradient through it (flipped weights)
DIRECT_CASES = [
    ((2, 16, 9, 8), conv_attrs((3, 3), pad=(1, 1), F=16)),
    ((1, 5, 11, 13), conv_attrs((3, 3), stride=(2, 2), pad=(1, 1), F=13)),
    ((2, 14, 9, 10), conv_attrs((5, 3), pad=(2, 2), dilate=(1, 2), F=14, no_bias=True)),
    ((2, 3, 17), conv_attrs((3,), pad=(1,), F=16)),
    ((1, 4, 7, 6), conv_attrs((1, 1), stride=(2, 2), F=16, no_bias=True)),
    ((1, 2, 3, 2), conv_attrs((3, 3), pad=(2, 3), F=16)),       # rows of padding only
    # strided: the data gradient runs as stride-1 phases (x has >= 13 channels)
    ((2, 16, 9, 11), conv_attrs((3, 3), stride=(2, 2), pad=(1, 1), F=16)),
    ((1, 14, 8, 7), conv_attrs((1, 1), stride=(2, 2), F=16, no_bias=True)),
    ((1, 6, 7, 9), conv_attrs((3, 3), pad=(1, 1), F=112)),     # 64 + 48 output channels
]


@pytest.mark.parametrize("shape,attrs", DIRECT_CASES)
def test_conv_direct_template(monkeypatch, shape, attrs):
    import mxc.compiler.lower as lower_mod

    monkeypatch.setattr(lower_mod, "DIRECT_REPACK_MIN_PIXELS", 1)
    taken = []
    for fn in ("_conv_direct", "_conv_transpose_phases"):
        real = getattr(conv_mod, fn)
        monkeypatch.setattr(conv_mod, fn, lambda *a, real=real, fn=fn, **k:
                            taken.append((fn, real(*a, **k))) or taken[-1][1])
    _conv_forward_matches(shape, attrs)
    assert taken == [("_conv_direct", True)]
    taken.clear()
    check_grad("Convolution", conv_inputs(shape, attrs, "float64"), attrs)
    # the forward; the data gradient ("same": one direct convolution of dy, strided: its
    # phases) when x has enough channels to fill the vector lanes
    assert taken[0] == ("_conv_direct", True)
    assert any(ok for _, ok in taken[1:]) == (shape[1] >= 13)


def test_conv_float64_float16():
    a = conv_attrs((3, 3), pad=(1, 1), stride=(2, 2), F=5)
    check_forward("Convolution", conv_inputs((2, 3, 9, 10), a, "float64"), a, rtol=1e-10,
                  atol=1e-10)
    check_forward("Convolution", conv_inputs((1, 3, 6, 7), a, "float16"), a, rtol=2e-2,
                  atol=2e-2)


def test_conv_chunked_im2col(monkeypatch):
    """A small im2col budget forces several image chunks (shared kernels at run-time
    offsets; weight gradients accumulated over chunks)."""
    a = conv_attrs((3, 3), pad=(1, 1), stride=(1, 2), F=4, G=2)
    shape = (4, 4, 5, 6)
    per_image = 4 * 9 * 5 * 3
    monkeypatch.setattr(conv_mod, "COL_LIMIT", 2 * per_image)      # 2 images per chunk
    check_forward("Convolution", conv_inputs(shape, a), a, rtol=1e-4, atol=1e-4)
    check_grad("Convolution", conv_inputs(shape, a, "float64"), a)
    monkeypatch.setattr(conv_mod, "COL_LIMIT", 1)                  # 1 image per chunk
    check_grad("Convolution", conv_inputs((3, 4, 5, 6), a, "float64"), a)
    a1 = conv_attrs((1, 1), F=3)
    check_grad("Convolution", conv_inputs((3, 2, 3, 3), a1, "float64"), a1)


def test_conv_shapes_and_inference():
    from mxc.compiler.infer import infer_shapes
    from mxc.ir.graph import Entry, Graph, make_node, variable

    vs = [variable(n) for n in ("data", "weight", "bias")]
    node = make_node("Convolution", [Entry(v) for v in vs],
                     {"kernel": (3, 5), "num_filter": 8, "num_group": 2, "stride": (2, 2),
                      "pad": (1, 2), "dilate": (1, 2), "workspace": 512,
                      "cudnn_tune": "fastest", "cudnn_off": True})
    shapes = infer_shapes(Graph([Entry(node)]), {"data": (3, 6, 11, 20)})
    assert shapes[(vs[1].uid, 0)] == (8, 3, 3, 5)
    assert shapes[(vs[2].uid, 0)] == (8,)
    assert shapes[(node.uid, 0)] == (3, 8, 6, 8)


@pytest.mark.parametrize("shape,wshape,attrs,err", [
    ((1, 3, 5, 5), (4, 3, 3, 3), {"kernel": (3, 3), "num_filter": 4, "layout": "NHWC"}, OpError),
    ((1, 3, 5, 5), (4, 3, 7, 7), {"kernel": (7, 7), "num_filter": 4}, ShapeError),
    ((1, 3, 5, 5), (4, 1, 3, 3), {"kernel": (3, 3), "num_filter": 4, "num_group": 2}, ShapeError),
    ((1, 4, 5, 5), (3, 2, 3, 3), {"kernel": (3, 3), "num_filter": 3, "num_group": 2}, ShapeError),
    ((1, 3, 5), (4, 3, 3, 3), {"kernel": (3, 3), "num_filter": 4}, ShapeError),
    ((1, 3, 5, 5), (4, 3, 3, 3), {"kernel": (3, 3), "num_filter": 4, "stride": (1, 1, 1)}, OpError),
    ((1, 3, 5, 5), (4, 3, 3, 3), {"kernel": (3, 3), "num_filter": 4, "dilate": (0, 1)}, OpError),
    ((1, 3, 5, 5), (4, 3, 3, 3), {"kernel": (3, 3)}, OpError),           # num_filter missing
    ((1, 3, 5, 5), (4, 3, 2, 2), {"kernel": (3, 3), "num_filter": 4}, ShapeError),  # weight
    ((1, 3, 5, 5), (4, 3, 3, 3), {"kernel": (3, 3), "num_filter": 4, "cudnn_tune": "slow"},
     OpError),
])
def test_conv_errors(shape, wshape, attrs, err):
    attrs = dict(attrs, no_bias=True)
    with pytest.raises(err, match="Convolution"):
        run_op("Convolution", [rnd(*shape), rnd(*wshape)], attrs)


# ---------------------------------------------------------------------------------------------
# Deconvolution
# ---------------------------------------------------------------------------------------------
def naive_deconv(x, w, b, stride, pad, dilate, adj, groups):
    """Transposed convolution by scattering each input pixel (the oracle only)."""
    N, C = x.shape[:2]
    Fg = w.shape[1]
    F = Fg * groups
    k = w.shape[2:]
    X = x.shape[2:]
    Y = [s * (xx - 1) + d * (kk - 1) + 1 - 2 * p + a
         for xx, kk, s, p, d, a in zip(X, k, stride, pad, dilate, adj)]
    Cg = C // groups
    y = np.zeros((N, F) + tuple(Y))
    for c in range(C):
        gi = c // Cg
        for i in itertools.product(*[range(n) for n in X]):
            for t in itertools.product(*[range(kk) for kk in k]):
                pos = [ii * s - p + tt * d for ii, tt, s, p, d in zip(i, t, stride, pad,
                                                                        dilate)]
                if all(0 <= q < yy for q, yy in zip(pos, Y)):
                    y[(slice(None), slice(gi * Fg, (gi + 1) * Fg)) + tuple(pos)] += \
                        x[(slice(None), c) + i][:, None] * w[(c, slice(None)) + t][None, :]
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(k))
    return y


DECONV_CASES = [
    ((2, 3, 4, 5), {"kernel": (3, 3), "num_filter": 2, "stride": (2, 2), "pad": (1, 1), "adj": (1, 0)}),
    ((1, 4, 3, 4), {"kernel": (3, 2), "num_filter": 6, "stride": (2, 3), "dilate": (2, 1), "num_group": 2,
                        "no_bias": False}),
    ((2, 3, 5, 4), {"kernel": (3, 3), "num_filter": 3, "pad": (1, 1), "num_group": 3,
                        "no_bias": False}),                                    # depthwise
    ((2, 3, 4, 4), {"kernel": (1, 1), "num_filter": 5}),                       # pointwise
    ((2, 2, 6), {"kernel": (4,), "num_filter": 3, "stride": (2,), "pad": (1,), "no_bias": False}),  # 1-D
    ((1, 2, 3, 3, 4), {"kernel": (2, 3, 3), "num_filter": 2, "stride": (2, 1, 2), "pad": (0, 1, 1),
                           "adj": (1, 0, 1)}),                                  # 3-D
]


# strided Deconvolutions the direct template takes phase by phase (forced on small shapes)
DECONV_DIRECT_CASES = [
    ((2, 16, 7, 9), {"kernel": (4, 4), "num_filter": 16, "stride": (2, 2), "pad": (1, 1)}),
    ((1, 13, 5, 6), {"kernel": (3, 3), "num_filter": 14, "stride": (2, 2), "pad": (1, 1),
                     "adj": (1, 1), "no_bias": False}),
    ((2, 16, 4, 5), {"kernel": (1, 1), "num_filter": 16, "stride": (2, 2), "adj": (1, 1),
                     "no_bias": False}),                   # phases no tap reaches: the bias
    ((1, 20, 6, 7), {"kernel": (5, 3), "num_filter": 16, "stride": (3, 2), "pad": (2, 0),
                     "adj": (0, 1)}),
    ((1, 16, 9), {"kernel": (3,), "num_filter": 16, "stride": (2,), "pad": (1,),
                  "no_bias": False}),                                             # 1-D
    ((1, 16, 3, 4), {"kernel": (2, 2), "num_filter": 16, "stride": (2, 2), "pad": (1, 1)}),
    #                                                      negative phase pads (window inside dy)
]


def deconv_inputs(shape, a, dtype="float32"):
    G = a.get("num_group", 1)
    x = rnd(*shape, dtype=dtype)
    w = rnd(shape[1], a["num_filter"] // G, *a["kernel"], dtype=dtype)
    ins = [x, w]
    if not a.get("no_bias", True):
        ins.append(rnd(a["num_filter"], dtype=dtype))
    return ins


def _deconv_forward_matches(shape, attrs) -> None:
    """mxc against the op's numpy reference and against the loop-level oracle."""
    ins = deconv_inputs(shape, attrs)
    got = check_forward("Deconvolution", ins, attrs, rtol=1e-4, atol=1e-4)
    nd = len(attrs["kernel"])
    want = naive_deconv(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                        attrs.get("stride", (1,) * nd), attrs.get("pad", (0,) * nd),
                        attrs.get("dilate", (1,) * nd), attrs.get("adj", (0,) * nd),
                        attrs.get("num_group", 1))
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,attrs", DECONV_CASES)
def test_deconv_forward(shape, attrs):
    _deconv_forward_matches(shape, attrs)


@pytest.mark.parametrize("shape,attrs", DECONV_DIRECT_CASES)
def test_deconv_direct_phases(monkeypatch, shape, attrs):
    import mxc.compiler.lower as lower_mod

    monkeypatch.setattr(lower_mod, "DIRECT_REPACK_MIN_PIXELS", 1)
    taken = []
    real = conv_mod._conv_transpose_phases
    monkeypatch.setattr(conv_mod, "_conv_transpose_phases",
                        lambda *a, **k: taken.append(real(*a, **k)) or taken[-1])
    _deconv_forward_matches(shape, attrs)
    assert taken == [True]
    check_grad("Deconvolution", deconv_inputs(shape, attrs, "float64"), attrs)


@pytest.mark.parametrize("shape,attrs", [
    ((2, 2, 3, 4), {"kernel": (3, 2), "num_filter": 3, "stride": (2, 2), "pad": (1, 0), "adj": (1, 1),
                        "no_bias": False}),
    ((1, 2, 3, 5), {"kernel": (3, 3), "num_filter": 2, "pad": (1, 1), "num_group": 2, "no_bias": False}),
    ((1, 4, 3, 3), {"kernel": (3, 3), "num_filter": 2, "stride": (2, 2), "num_group": 2}),
    ((2, 2, 4), {"kernel": (3,), "num_filter": 2, "stride": (3,), "adj": (2,)}),
])
def test_deconv_grad(shape, attrs):
    check_grad("Deconvolution", deconv_inputs(shape, attrs, "float64"), attrs)


def test_deconv_target_shape():
    x = rnd(2, 3, 4, 5)
    w = rnd(3, 2, 3, 3)
    for target in [(8, 10), (9, 9), (7, 11)]:
        a = {"kernel": (3, 3), "num_filter": 2, "stride": (2, 2), "target_shape": target, "pad": (5, 5)}
        got = check_forward("Deconvolution", [x, w], a, rtol=1e-4, atol=1e-4)
        assert got[0].shape == (2, 2) + target
        # MXNet: total = s*(x-1) + k - target; pad = ceil(total/2); adj = total % 2
        pads, adjs = [], []
        for xx, t in zip((4, 5), target):
            total = 2 * (xx - 1) + 3 - t
            pads.append((total + 1) // 2)
            adjs.append(total % 2)
        want = naive_deconv(x, w, None, (2, 2), pads, (1, 1), adjs, 1)
        np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ShapeError, match="Deconvolution"):
        run_op("Deconvolution", [x, w], {"kernel": (3, 3), "num_filter": 2, "target_shape": (30, 30)})


def test_deconv_is_conv_transpose():
    """<deconv(x, w), y> == <x, conv(y, w)>: the deconvolution is the adjoint."""
    a = {"kernel": (3, 2), "num_filter": 4, "stride": (2, 3), "pad": (1, 1), "dilate": (1, 2),
             "num_group": 2}
    x, w = rnd(2, 6, 4, 3, dtype="float64"), rnd(6, 2, 3, 2, dtype="float64")
    d = reference("Deconvolution", [x, w], a)[0]
    y = rnd(*d.shape, dtype="float64")
    c = reference("Convolution", [y, w], dict(a, num_filter=6, no_bias=True))[0]
    assert c.shape == x.shape
    np.testing.assert_allclose(np.sum(d * y), np.sum(x * c), rtol=1e-10)


@pytest.mark.parametrize("attrs,err", [
    ({"kernel": (3, 3), "num_filter": 2, "stride": (2, 2), "adj": (2, 0)}, ShapeError),   # adj >= s
    ({"kernel": (3, 3), "num_filter": 3, "num_group": 2}, ShapeError),
    ({"kernel": (3, 3), "num_filter": 2, "layout": "NHWC"}, OpError),
    ({"kernel": (3, 3), "num_filter": 2, "adj": (1,)}, OpError),
    ({"kernel": (3, 3, 3, 3), "num_filter": 2}, OpError),
])
def test_deconv_errors(attrs, err):
    with pytest.raises(err, match="Deconvolution"):
        run_op("Deconvolution", [rnd(1, 2, 4, 4), rnd(2, 2, 3, 3)], attrs)


def test_conv_unknown_attribute():
    with pytest.raises(MXNetError, match="Convolution"):
        run_op("Convolution", [rnd(1, 2, 4, 4), rnd(2, 2, 3, 3)],
               {"kernel": (3, 3), "num_filter": 2, "no_bias": True, "padding": (1, 1)})


@pytest.mark.parametrize("shape,attrs", [
    ((2, 3, 9, 10), conv_attrs((7, 7), stride=(2, 2), pad=(3, 3), F=16)),   # a stem
    ((1, 4, 7, 8), conv_attrs((3, 3), stride=(2, 1), dilate=(1, 2), pad=(0, 2), F=5)),
    ((2, 3, 11), conv_attrs((3,), stride=(2,), pad=(1,), F=4)),             # 1-D
])
def test_conv_weight_gradient_direct(monkeypatch, shape, attrs):
    # strided convolutions with small weights: the direct weight-gradient template
    taken = []
    real = conv_mod._conv_wgrad_direct
    monkeypatch.setattr(conv_mod, "_conv_wgrad_direct",
                        lambda *a, **k: taken.append(real(*a, **k)) or taken[-1])
    check_grad("Convolution", conv_inputs(shape, attrs, "float64"), attrs)
    assert taken == [True]
