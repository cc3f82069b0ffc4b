"""The direct convolution template (codegen/conv_template.py) on its own: JIT-compiled for
every ISA the host can run, against the Convolution op's numpy reference on odd geometries
(1x1 images, widths of one ragged tile, padding wider than the kernel so whole rows and
tiles read only padding, strides 2/3, dilation, asymmetric and 1-D kernels, channel counts
that leave a panel partly empty), channel blocks with a ragged last block, any task split
on a garbage scratch, fused epilogues, float64, and freestanding cross objects."""
import ctypes

import numpy as np
import pytest
from template_harness import BEST, CROSS_TARGETS, OTHER_ISAS, cross_object, jit

from mxc.codegen.conv_template import ConvSpec, conv_kernel, pack_weights, plan_conv
from mxc.codegen.llvm_render import render_kernel_module
from mxc.ir import kernel as K
from mxc.testing import reference

RNG = np.random.default_rng(5)


def _out(x, k, s, d, p):
    return (x + 2 * p - d * (k - 1) - 1) // s + 1


def _run(x, w, b, k, s, d, p, *, epilogue=(), res=None, isa=None, params=None, split=None):
    N, C, H, W = x.shape
    F = w.shape[0]
    Ho, Wo = _out(H, k[0], s[0], d[0], p[0]), _out(W, k[1], s[1], d[1], p[1])
    spec = ConvSpec(N, C, H, W, F, k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], Ho, Wo,
                    x.dtype.name, b is not None, tuple(epilogue))
    isa = isa or BEST
    plan = plan_conv(spec, isa, params)
    kern = conv_kernel("__K__", spec, isa, _params=params)
    fn = jit(kern)
    wp = pack_weights(w, plan.NR, plan.CB, plan.NR_last)
    y = np.full((N, F, Ho, Wo), 12345.0, x.dtype)
    ptrs = [x.ctypes.data, wp.ctypes.data, y.ctypes.data] + \
        ([b.ctypes.data] if b is not None else []) + \
        ([res.ctypes.data] if "add" in epilogue else [])
    args = (ctypes.c_void_p * len(ptrs))(*ptrs)
    raw = np.full(kern.scratch_bytes // 4 + 32, np.nan, np.float32)   # garbage scratch
    scratch = (raw.ctypes.data + 63) // 64 * 64
    for bgn, end in (split(kern.n_tasks) if split else [(0, kern.n_tasks)]):
        fn(bgn, end, ctypes.addressof(args), scratch)
    return y, plan


def _want(x, w, b, k, s, d, p, epilogue=(), res=None):
    attrs = {"kernel": k, "stride": s, "dilate": d, "pad": p, "num_filter": w.shape[0],
             "no_bias": b is None}
    y = reference("Convolution", [x, w] + ([b] if b is not None else []), attrs)[0]
    for step in epilogue:
        y = y + res if step == "add" else np.where(y > 0, y, 0)
    return y


def _check(shape, F, k, s=(1, 1), d=(1, 1), p=(0, 0), *, dtype="float32", bias=True,
           epilogue=(), **kw):
    x = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal((F, shape[1]) + tuple(k)).astype(dtype)
    b = RNG.standard_normal(F).astype(dtype) if bias else None
    Ho, Wo = (_out(shape[2 + i], k[i], s[i], d[i], p[i]) for i in range(2))
    res = RNG.standard_normal((shape[0], F, Ho, Wo)).astype(dtype) if "add" in epilogue \
        else None
    got, plan = _run(x, w, b, k, s, d, p, epilogue=epilogue, res=res, **kw)
    want = _want(x, w, b, k, s, d, p, epilogue, res)
    tol = 2e-5 if dtype == "float32" else 1e-12
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale,
                               err_msg=f"{shape} F={F} k{k} s{s} d{d} p{p} {kw}")
    return plan


GEOMETRY = [  # (N, C, H, W), F, kernel, stride, dilate, pad
    ((1, 1, 1, 1), 1, (1, 1), (1, 1), (1, 1), (0, 0)),        # 1x1 image, one channel
    ((1, 3, 1, 1), 5, (3, 3), (1, 1), (1, 1), (1, 1)),        # only the centre tap is real
    ((2, 3, 7, 9), 16, (3, 3), (1, 1), (1, 1), (1, 1)),       # "same", batch 2
    ((1, 5, 13, 29), 20, (3, 3), (2, 2), (1, 1), (1, 1)),     # strided, ragged panel
    ((1, 4, 11, 17), 33, (5, 5), (1, 1), (1, 1), (2, 2)),     # 5x5, 33 channels
    ((1, 2, 12, 23), 16, (3, 3), (1, 1), (2, 2), (2, 2)),     # dilation 2
    ((2, 3, 19, 20), 24, (7, 7), (2, 2), (1, 1), (3, 3)),     # resnet stem, small
    ((1, 6, 9, 10), 16, (1, 1), (2, 2), (1, 1), (0, 0)),      # 1x1 stride 2 (downsample)
    ((1, 3, 8, 31), 16, (3, 1), (1, 3), (1, 1), (1, 0)),      # asymmetric kernel/stride/pad
    ((1, 2, 4, 5), 16, (3, 3), (1, 1), (1, 1), (3, 4)),       # pad > kernel: rows/tiles of
    #                                                           padding only (bias alone)
    ((1, 7, 1, 40), 16, (1, 5), (1, 1), (1, 1), (0, 2)),      # 1-D as height 1
    ((3, 2, 5, 6), 70, (2, 2), (3, 3), (1, 1), (1, 0)),       # stride > kernel, 70 channels:
    #                                                           a narrower, ragged last panel
    ((2, 3, 7, 8), 80, (3, 3), (1, 1), (1, 1), (1, 1)),       # 64 + 16 channels
]


@pytest.mark.parametrize("shape,F,k,s,d,p", GEOMETRY)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_template_matches_reference(shape, F, k, s, d, p, dtype):
    _check(shape, F, k, s, d, p, dtype=dtype)


@pytest.mark.parametrize("shape,F,k,s,d,p", [GEOMETRY[1], GEOMETRY[3], GEOMETRY[6],
                                              GEOMETRY[8], GEOMETRY[9], GEOMETRY[11],
                                              GEOMETRY[12]])
@pytest.mark.parametrize("isa", OTHER_ISAS)
def test_other_isas(shape, F, k, s, d, p, isa):
    for dtype in ("float32", "float64"):
        _check(shape, F, k, s, d, p, dtype=dtype, isa=isa)


def test_no_bias_and_fused_epilogue():
    for epi in ((), ("relu",), ("add",), ("add", "relu")):
        _check((2, 3, 7, 9), 20, (3, 3), (1, 1), (1, 1), (1, 1), bias=False, epilogue=epi)
        _check((1, 4, 10, 13), 16, (3, 3), (2, 2), (1, 1), (1, 1), epilogue=epi,
               dtype="float64")


def _split(n):
    cuts = sorted(set(RNG.integers(1, n, size=min(n - 1, 5)).tolist()) | {0, n}) if n > 1 \
        else [0, n]
    ranges = list(zip(cuts[:-1], cuts[1:]))
    RNG.shuffle(ranges)
    return ranges


def test_channel_blocks_rows_and_any_task_split():
    # channels cut into blocks (the last one ragged): accumulators parked in the scratch
    # between blocks; tasks of a few rows, run in shuffled chunks on one garbage scratch
    for params in ({"cb": 3}, {"cb": 4, "rc": 2}, {"cb": 16, "rc": 5}, {"rc": 1}):
        for epi in ((), ("add", "relu")):
            plan = _check((2, 11, 9, 14), 36, (3, 3), (1, 1), (1, 1), (1, 1), params=params,
                          split=_split, epilogue=epi)
            assert plan.CB == min(11, params.get("cb", 11))
    plan = _check((1, 10, 6, 7), 16, (3, 3), (2, 2), (1, 1), (1, 1), params={"cb": 3},
                  dtype="float64", split=_split)
    assert plan.blocks == 4
    # a narrower last panel with channel blocks: its accumulators parked at its own width
    plan = _check((2, 7, 5, 9), 72, (3, 3), (1, 1), (1, 1), (1, 1), params={"cb": 3},
                  split=_split, epilogue=("add", "relu"))
    assert plan.NR_last < plan.NR


def test_tile_shapes():
    # the register tile and the tiles of a row: balanced widths, one class per border
    spec = ConvSpec(1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1, 56, 56)
    plan = plan_conv(spec, "avx512")
    assert (plan.NV, plan.NR, plan.panels, plan.blocks) == (4, 64, 1, 1)
    assert sum((j1 - j0) * r for j0, j1, _, r, _ in plan.groups) == 56
    widths = {r for _, _, _, r, _ in plan.groups}
    assert max(widths) - min(widths) <= 1 and max(widths) <= plan.MR
    left, right = plan.groups[0][4], plan.groups[-1][4]
    assert left == {(0, 0)} and right == {(plan.groups[-1][3] - 1, 2)}
    assert all(not g[4] for g in plan.groups[1:-1])
    # a deep layer: its weights (4.7 MB per panel) are cut into L2-sized channel blocks
    deep = plan_conv(ConvSpec(1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1, 7, 7), "avx512")
    assert deep.blocks > 1 and 512 % deep.CB == 0 and deep.n_tasks >= 8
    # 16 vector registers: a 2-vector tile
    assert plan_conv(spec, "avx2").NV == 2
    # 80 channels: one 64-channel panel and a last panel of one vector (its own tiles)
    p80 = plan_conv(ConvSpec(1, 8, 14, 14, 80, 3, 3, 1, 1, 1, 1, 1, 1, 14, 14), "avx512")
    assert (p80.panels, p80.NR, p80.NR_last, p80.lanes) == (2, 64, 16, 80)
    assert p80.last.NV == 1 and p80.last.MR > p80.full.MR


@pytest.mark.parametrize("nr_last", [8, 4])
def test_pack_weights_layout(nr_last):
    w = RNG.standard_normal((19, 5, 3, 2)).astype("float32")
    nr, cb = 8, 2
    got = pack_weights(w, nr, cb, nr_last)
    assert got.size == (16 + nr_last) * 5 * 3 * 2
    pos = 0
    for p in range(3):
        width = nr if p < 2 else nr_last
        for c0 in (0, 2, 4):
            cbs = min(cb, 5 - c0)
            for ky in range(3):
                for kx in range(2):
                    for c in range(c0, c0 + cbs):
                        want = np.zeros(width, np.float32)
                        f = np.arange(p * nr, min(19, p * nr + width))
                        want[:len(f)] = w[f, c, ky, kx]
                        np.testing.assert_array_equal(got[pos:pos + width], want)
                        pos += width
    assert pos == got.size


@pytest.mark.parametrize("isa", [BEST] + OTHER_ISAS)
def test_strided_output_and_negative_pad(isa):
    # y written in place into every 2nd row and 3rd column of a bigger buffer (a transposed
    # convolution's phase), elements between untouched; pad -1 starts the window inside x
    N, C, H, W, F = 2, 5, 9, 10, 20
    x = RNG.standard_normal((N, C, H, W)).astype("float32")
    w = RNG.standard_normal((F, C, 3, 3)).astype("float32")
    b = RNG.standard_normal(F).astype("float32")
    Ho, Wo = 5, 8
    Hb, Wb = 2 * Ho + 1, 3 * Wo
    spec = ConvSpec(N, C, H, W, F, 3, 3, 1, 1, 1, 1, -1, 1, Ho, Wo, "float32", True,
                    ("add", "relu"), y_strides=(F * Hb * Wb, Hb * Wb, 2 * Wb, 3))
    plan = plan_conv(spec, isa)
    kern = conv_kernel("__K__", spec, isa)
    big = np.full((N, F, Hb, Wb), 7.0, np.float32)
    res = RNG.standard_normal((N, F, Hb, Wb)).astype("float32")
    wp = pack_weights(w, plan.NR, plan.CB, plan.NR_last)
    ptrs = [x.ctypes.data, wp.ctypes.data, big.ctypes.data + Wb * 4, b.ctypes.data,
            res.ctypes.data + Wb * 4]
    args = (ctypes.c_void_p * 5)(*ptrs)
    jit(kern)(0, kern.n_tasks, ctypes.addressof(args), 0)
    want = _want(np.ascontiguousarray(x[:, :, 1:]), w, b, (3, 3), (1, 1), (1, 1), (0, 1))
    want = np.maximum(want[:, :, :Ho, :Wo] + res[:, :, 1::2, ::3], 0)
    np.testing.assert_allclose(big[:, :, 1::2, ::3], want, rtol=2e-5, atol=2e-5)
    untouched = np.ones(big.shape, bool)
    untouched[:, :, 1::2, ::3] = False
    assert (big[untouched] == 7.0).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf_propagate():
    x = RNG.standard_normal((1, 3, 6, 8)).astype("float32")
    x[0, 1, 2, 3] = np.nan
    x[0, 2, 5, 7] = np.inf
    w = RNG.standard_normal((16, 3, 3, 3)).astype("float32")
    got, _ = _run(x, w, None, (3, 3), (1, 1), (1, 1), (1, 1))
    want = _want(x, w, None, (3, 3), (1, 1), (1, 1), (1, 1))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # relu turns NaN into 0 (mxc's relu), as the GEMM epilogue does
    got, _ = _run(x, w, None, (3, 3), (1, 1), (1, 1), (1, 1), epilogue=("relu",))
    assert not np.isnan(got).any()


def test_spec_validation():
    with pytest.raises(ValueError, match="epilogue"):
        ConvSpec(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, epilogue=("gelu",))
    with pytest.raises(ValueError, match="dtype"):
        ConvSpec(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, dtype="float16")
    with pytest.raises(ValueError, match="positive"):
        ConvSpec(1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="isa"):
        plan_conv(ConvSpec(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1), "sse9")


@pytest.mark.parametrize("triple,cpu,features,isa", CROSS_TARGETS)
def test_cross_object_freestanding(triple, cpu, features, isa):
    for spec in (ConvSpec(1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1, 56, 56,
                          bias=True, epilogue=("add", "relu")),
                 ConvSpec(2, 3, 19, 20, 24, 7, 7, 2, 2, 1, 1, 3, 3, 10, 10, "float64"),
                 ConvSpec(1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1, 7, 7, bias=True)):
        kern = conv_kernel("k", spec, isa)
        _, text = render_kernel_module(K.TemplateKernel("k", [], kern.ir, kern.n_tasks,
                                                        kern.scratch_bytes))
        cross_object(text, triple, cpu, features)
