"""The direct weight-gradient template (codegen/conv_wgrad_template.py) on its own, for every
ISA the host runs: dW against a numpy oracle on odd geometries (strides, dilation, padding
larger than the kernel, 1-D, channel counts that leave a register tile short, output channels
that leave a panel partly empty), pixel slices and blocks, float64, any task split."""
import ctypes

import numpy as np
import pytest
from template_harness import BEST, OTHER_ISAS, jit

from mxc.codegen.conv_wgrad_template import WgradSpec, plan_wgrad, wgrad_kernel

RNG = np.random.default_rng(31)


def _oracle(x, dy, k, s, d, p):
    C = x.shape[1]
    F, Ho, Wo = dy.shape[1:]
    pad = ((0, 0), (0, 0), (p[0], p[0] + k[0] * d[0] + s[0] * Ho),
           (p[1], p[1] + k[1] * d[1] + s[1] * Wo))
    xp = np.pad(x.astype(np.float64), pad)
    dw = np.zeros((F, C) + tuple(k))
    for ky in range(k[0]):
        for kx in range(k[1]):
            sl = xp[:, :, ky * d[0]: ky * d[0] + s[0] * (Ho - 1) + 1: s[0],
                    kx * d[1]: kx * d[1] + s[1] * (Wo - 1) + 1: s[1]]
            dw[:, :, ky, kx] = np.einsum("nfhw,nchw->fc", dy.astype(np.float64), sl)
    return dw


def _run(N, C, H, W, F, k, s, d, p, *, dtype="float32", isa=None, slices=None, block=None,
         split=None):
    Ho = (H + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    Wo = (W + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    spec = WgradSpec(N, C, H, W, F, k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], Ho, Wo,
                     dtype)
    isa = isa or BEST
    plan = plan_wgrad(spec, isa, slices, block)
    kern = wgrad_kernel("__K__", spec, isa, slices=slices, block_bytes=block)
    fn = jit(kern)
    x = RNG.standard_normal((N, C, H, W)).astype(dtype)
    dy = RNG.standard_normal((N, F, Ho, Wo)).astype(dtype)
    dyt = np.zeros((N, Ho, Wo, plan.Fp), dtype)
    dyt[..., :F] = dy.transpose(0, 2, 3, 1)
    part = np.full((plan.slices, k[0] * k[1], C, plan.Fp), np.nan, dtype)
    args = (ctypes.c_void_p * 3)(x.ctypes.data, dyt.ctypes.data, part.ctypes.data)
    for b, e in (split(kern.n_tasks) if split else [(0, kern.n_tasks)]):
        fn(b, e, ctypes.addressof(args), 0)
    dw = part.sum(0)[..., :F].transpose(2, 1, 0).reshape(F, C, k[0], k[1])
    want = _oracle(x, dy, k, s, d, p)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(dw, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    return plan


GEOMETRY = [  # N, C, H, W, F, kernel, stride, dilate, pad
    (2, 5, 9, 11, 20, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 3, 13, 17, 16, (7, 7), (2, 2), (1, 1), (3, 3)),     # the stem
    (2, 7, 8, 9, 70, (3, 2), (2, 1), (2, 1), (1, 0)),       # dilation, two panels
    (1, 2, 4, 5, 16, (3, 3), (1, 1), (1, 1), (3, 4)),       # taps only in the padding
    (3, 1, 1, 12, 13, (1, 5), (1, 3), (1, 1), (0, 2)),      # 1-D
    (1, 13, 6, 6, 33, (1, 1), (2, 2), (1, 1), (0, 0)),      # 1x1 stride 2, ragged tiles
]


@pytest.mark.parametrize("geom", GEOMETRY)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_oracle(geom, dtype):
    _run(*geom, dtype=dtype)


@pytest.mark.parametrize("isa", OTHER_ISAS)
def test_other_isas(isa):
    for geom in (GEOMETRY[0], GEOMETRY[2], GEOMETRY[5]):
        _run(*geom, isa=isa)


def test_slices_blocks_and_any_task_split():
    def split(n):
        cuts = sorted(set(RNG.integers(1, n, size=min(n - 1, 4)).tolist()) | {0, n}) \
            if n > 1 else [0, n]
        ranges = list(zip(cuts[:-1], cuts[1:]))
        RNG.shuffle(ranges)
        return ranges

    for slices, block in ((1, 64), (3, 64), (5, 4096), (None, None)):
        plan = _run(2, 6, 10, 9, 40, (3, 3), (1, 1), (1, 1), (1, 1), slices=slices,
                    block=block, split=split)
        assert plan.block >= 1 and plan.slices * plan.rows >= 2 * 10
