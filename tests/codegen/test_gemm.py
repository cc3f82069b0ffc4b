"""The GEMM template against numpy: sizes, strides, epilogues, dtypes, ISAs, task splits,
and cross builds that must stay freestanding."""
from __future__ import annotations

import ctypes
import dataclasses
import random

import numpy as np
import pytest
from template_harness import BEST, CROSS_TARGETS, cross_object, host_can, jit

from mxc.codegen.gemm import (
    GemmSpec,
    _plan,
    gemm_kernel,
    pack_a_panels,
    pack_b_panels,
    prepack_cols,
    prepack_order,
    prepack_rows,
)

ISAS_HERE = [i for i in ("avx512", "avx2", "neon", "generic") if host_can(i)]


class _Scratch:
    def __init__(self, nbytes: int):
        self.raw = np.zeros(nbytes + 128, np.uint8)
        self.ptr = (self.raw.ctypes.data + 63) // 64 * 64


def _stored(x: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """A view equal to x whose memory is laid out with axes in `order` (outermost first)."""
    inv = np.argsort(order)
    return np.ascontiguousarray(x.transpose(order)).transpose(inv)


def _estrides(v: np.ndarray) -> tuple[int, ...]:
    return tuple(s // v.itemsize for s in v.strides)


def _run(M, N, K, *, batch=1, dtype="float32", isa=None, ta=False, tb=False, tc=False,
         alpha=1.0, beta=0.0, bias=None, shared_b=False, shared_bias=False, task_order=None,
         seed=0, params=None, epilogue=(), share=False, threads=False):
    """Build, run and check one GEMM; returns (C result, kernel) for further checks."""
    isa = isa or BEST
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    A = _stored(rng.uniform(-1, 1, (batch, M, K)).astype(dt), (0, 2, 1) if ta else (0, 1, 2))
    if shared_b:
        B1 = _stored(rng.uniform(-1, 1, (1, K, N)).astype(dt), (0, 2, 1) if tb else (0, 1, 2))
        B = np.broadcast_to(B1, (batch, K, N))
    else:
        B = _stored(rng.uniform(-1, 1, (batch, K, N)).astype(dt), (0, 2, 1) if tb else (0, 1, 2))
    C0 = rng.uniform(-1, 1, (batch, M, N)).astype(dt)
    if beta == 0.0:
        C0[...] = np.nan   # beta == 0 must never read C
    C = _stored(C0.copy(), (0, 2, 1) if tc else (0, 1, 2))
    nb = 1 if shared_bias else batch
    bias_arr = None
    if bias:
        bias_arr = rng.uniform(-1, 1, (nb, M if bias == "m" else N)).astype(dt)
    spec = GemmSpec(batch=batch, M=M, N=N, K=K, dtype=dtype, a_strides=_estrides(A),
                    b_strides=_estrides(B), c_strides=_estrides(C), alpha=alpha, beta=beta,
                    bias=bias, bias_stride_batch=0 if (shared_bias or not bias)
                    else bias_arr.shape[1], epilogue=epilogue, share_b=share)
    R = _stored(rng.uniform(-1, 1, (batch, M, N)).astype(dt), (0, 2, 1) if tc else (0, 1, 2))
    kern = gemm_kernel("gemm_test", spec, isa, _params=params)
    fn = jit(kern)
    ptrs = [A.ctypes.data, B.ctypes.data, C.ctypes.data]
    if bias:
        ptrs.append(bias_arr.ctypes.data)
    if "add" in epilogue:
        ptrs.append(R.ctypes.data)
    if kern.shared_bytes:   # the shared packed B: garbage past its zeroed claim counters
        shared = _Scratch(kern.shared_bytes)
        shared.raw[:] = 0xFF
        ctypes.memset(shared.ptr, 0, kern.shared_zero_bytes)
        ptrs.append(shared.ptr)
    args = (ctypes.c_void_p * len(ptrs))(*ptrs)
    scratch = _Scratch(kern.scratch_bytes)
    if threads:   # the runtime's thread pool: tasks of one block on both threads at once
        from mxc.runtime.threadpool import get_pool
        get_pool().run(fn, kern.n_tasks, ctypes.addressof(args), kern.scratch_bytes, 1 << 40)
    elif task_order is None:
        fn(0, kern.n_tasks, ctypes.addressof(args), scratch.ptr)
    else:
        for begin, end in task_order(kern.n_tasks):
            fn(begin, end, ctypes.addressof(args), scratch.ptr)

    ref = alpha * np.matmul(A.astype(np.float64), B.astype(np.float64))
    if beta != 0.0:
        ref = ref + beta * C0.astype(np.float64)
    if bias == "m":
        ref = ref + bias_arr.astype(np.float64)[:, :, None]
    elif bias == "n":
        ref = ref + bias_arr.astype(np.float64)[:, None, :]
    ref = _apply_epilogue(ref, epilogue, R)
    tol = (2e-6 if dtype == "float32" else 1e-14) * (max(K, 1) + 4) * max(1.0, abs(alpha))
    np.testing.assert_allclose(C, ref, rtol=0, atol=tol,
                               err_msg=f"{M}x{N}x{K} batch={batch} {dtype} {isa}")
    return np.array(C), kern


def _apply_epilogue(ref: np.ndarray, steps, residual: np.ndarray) -> np.ndarray:
    for step in steps:
        ref = ref + residual if step == "add" else np.where(ref > 0, ref, 0.0)
    return ref


# --- sizes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("M,N,K", [
    (1, 1, 1), (7, 13, 17), (33, 65, 129), (2, 3, 1), (1, 1000, 512), (8, 100, 300),
    (100, 1, 50), (5, 300, 600), (257, 130, 520), (64, 64, 64), (19, 47, 1031), (3, 5, 2),
])
def test_sizes(M, N, K):
    _run(M, N, K)


def test_big_square():
    _run(300, 700, 280, seed=3)


def test_small_blocks():
    # tiny cache blocks: several NC, KC and MC blocks inside one task, with ragged ends
    small = {"kc": 20, "mc": 24, "nc": 70}
    _run(101, 333, 77, params=small, beta=0.5, bias="n")
    _run(101, 333, 77, params=small, ta=True, tb=True, bias="m", dtype="float64")


# --- transposes, batches, epilogues -------------------------------------------------------------

@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (True, True)])
def test_transposed(ta, tb):
    _run(37, 53, 71, ta=ta, tb=tb)
    _run(1, 129, 300, ta=ta, tb=tb, seed=1)


def test_dot_schedule():
    # few rows against a K-contiguous B (FullyConnected weights): the dot-product schedule
    _run(1, 1000, 512, tb=True, bias="n")
    _run(3, 50, 100, ta=True, tb=True, bias="m", beta=0.5, batch=2)
    _run(4, 33, 70, tb=True, bias="n", alpha=2.0, shared_b=True, batch=3, tc=True)
    _run(2, 17, 45, tb=True, dtype="float64", beta=1.0)


def test_transposed_output():
    _run(45, 23, 31, tc=True, beta=0.5)


def test_batched():
    _run(17, 33, 29, batch=3)
    _run(9, 40, 70, batch=5, tb=True, shared_b=True, bias="n", seed=2)
    _run(6, 7, 300, batch=4, ta=True, bias="m", shared_bias=True, seed=4)


@pytest.mark.parametrize("alpha,beta,bias", [
    (1.0, 0.0, "m"), (1.0, 0.0, "n"), (2.0, 1.0, None), (-0.5, 0.25, "n"), (1.0, 1.0, "m"),
])
def test_epilogue(alpha, beta, bias):
    _run(29, 71, 300, alpha=alpha, beta=beta, bias=bias, batch=2)


@pytest.mark.parametrize("steps", [("relu",), ("add",), ("add", "relu")])
def test_fused_epilogue(steps):
    # residual add / relu after the whole K reduction: one K block, several K blocks
    # (relu must not apply to partial sums), edge tiles, the dot schedule, other orientation
    _run(29, 71, 300, bias="m", epilogue=steps, batch=2)
    _run(37, 45, 101, bias="n", beta=0.5, epilogue=steps, params={"kc": 16})
    _run(1, 300, 200, tb=True, bias="n", epilogue=steps)           # dot schedule
    _run(45, 3, 31, tc=True, epilogue=steps, dtype="float64")       # swapped orientation


def _conv_gemm(N, C, F, H, W, k, pad, dil=1, *, epilogue=(), bias=True, params=None,
               dtype="float32", isa=None, seed=0, same=False, prepacked=False,
               swapped=None, tapmajor=None):
    """A stride-1 convolution as one implicit GEMM (b_kmap + c_ngrid) over a zero-padded
    input -- or, with ``same``, b_same over the unpadded input (padding while packing) --
    against a direct numpy convolution."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(dt)
    w = rng.uniform(-1, 1, (F, C, k, k)).astype(dt)
    b = rng.uniform(-1, 1, F).astype(dt)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Hp, Wp = H + 2 * pad, W + 2 * pad
    Ho, Wo = Hp - (k - 1) * dil, Wp - (k - 1) * dil
    ref = np.zeros((N, F, Ho, Wo))
    for ky in range(k):
        for kx in range(k):
            win = xp[:, :, ky * dil: ky * dil + Ho, kx * dil: kx * dil + Wo].astype(np.float64)
            ref += np.einsum("nchw,fc->nfhw", win, w[:, :, ky, kx].astype(np.float64))
    if bias:
        ref += b.astype(np.float64)[None, :, None, None]
    R = rng.uniform(-1, 1, (N, F, Ho, Wo)).astype(dt)
    ref = _apply_epilogue(ref, epilogue, R)
    y = np.full((N, F, Ho, Wo), np.nan, dt)
    Kd = C * k * k
    if same:
        assert (Ho, Wo) == (H, W)
        spec = GemmSpec(batch=N, M=F, N=H * W, K=Kd, dtype=dtype, a_strides=(0, Kd, 1),
                        b_strides=(C * H * W, 0, 1), c_strides=(F * H * W, H * W, 1),
                        bias="m" if bias else None,
                        b_kmap=((C, H * W), (k, dil * W), (k, dil)),
                        b_same=(H, W, k, k, dil, dil, pad, pad), epilogue=epilogue)
        xp = x
    else:
        spec = GemmSpec(batch=N, M=F, N=(Ho - 1) * Wp + Wo, K=Kd, dtype=dtype,
                        a_strides=(0, Kd, 1), b_strides=(C * Hp * Wp, 0, 1),
                        c_strides=(F * Ho * Wo, Ho * Wo, 1), bias="m" if bias else None,
                        b_kmap=((C, Hp * Wp), (k, dil * Wp), (k, dil)), c_ngrid=(Wp, Wo),
                        epilogue=epilogue)
    isa = isa or BEST
    wa = w
    if prepacked:   # weights packed at bind time, in the panels this plan reads
        panel, order = prepack_rows(spec, isa), prepack_order(spec, isa)
        if params:   # what prepack_rows/prepack_order say for the plan these params give
            plan = _plan(spec, isa, {**params, "_prepack": True})
            panel = plan.NR if plan.a_implicit else plan.MR
            order = (plan.tapmajor[0], Kd // plan.tapmajor[0]) if plan.tapmajor else None
        assert panel > 0
        if tapmajor is not None:   # the orientation (and K order) the test is about
            assert (order is not None) == tapmajor
        wa = pack_a_panels(w.reshape(F, Kd), panel, order)
        spec = dataclasses.replace(spec, a_strides=(0, 0, 0), a_panel=panel)
    if swapped is not None:   # the orientation the test is about
        assert _plan(spec, isa, params).a_implicit == swapped
    kern = gemm_kernel("conv_test", spec, isa, _params=params)
    fn = jit(kern)
    xp = np.ascontiguousarray(xp)
    ptrs = [wa.ctypes.data, xp.ctypes.data, y.ctypes.data] + ([b.ctypes.data] if bias else [])
    if "add" in epilogue:
        ptrs.append(R.ctypes.data)
    args = (ctypes.c_void_p * len(ptrs))(*ptrs)
    scratch = _Scratch(kern.scratch_bytes)
    fn(0, kern.n_tasks, ctypes.addressof(args), scratch.ptr)
    tol = (3e-6 if dtype == "float32" else 1e-13) * (Kd + 4)
    np.testing.assert_allclose(y, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("N,C,F,H,W,k,pad,dil", [
    (1, 3, 8, 7, 9, 3, 1, 1), (2, 5, 17, 13, 11, 3, 1, 1), (1, 16, 32, 14, 14, 3, 1, 1),
    (1, 4, 6, 9, 8, 5, 2, 1), (2, 3, 7, 10, 12, 3, 2, 2), (1, 2, 3, 1, 1, 3, 1, 1),
    (1, 7, 5, 6, 23, 2, 0, 1), (3, 1, 1, 5, 5, 1, 0, 1),
])
def test_implicit_conv(N, C, F, H, W, k, pad, dil):
    _conv_gemm(N, C, F, H, W, k, pad, dil)


def test_implicit_conv_blocks_and_epilogue():
    _conv_gemm(2, 9, 19, 11, 13, 3, 1, params={"kc": 16, "nc": 48, "mc": 8},
               epilogue=("add", "relu"))
    _conv_gemm(1, 6, 10, 8, 5, 3, 1, epilogue=("relu",), dtype="float64", bias=False)


@pytest.mark.parametrize("N,C,F,H,W,k,pad,dil", [
    (1, 3, 8, 7, 9, 3, 1, 1), (2, 5, 17, 13, 11, 3, 1, 1), (1, 16, 32, 14, 14, 3, 1, 1),
    (1, 4, 6, 9, 8, 5, 2, 1), (2, 3, 7, 10, 12, 3, 2, 2), (1, 2, 3, 1, 1, 3, 1, 1),
    (1, 3, 5, 3, 40, 3, 1, 1), (2, 2, 4, 6, 2, 5, 2, 1),
])
def test_implicit_conv_same_padding_in_pack(N, C, F, H, W, k, pad, dil):
    # "same" convolutions read the unpadded input; padding happens while packing B
    _conv_gemm(N, C, F, H, W, k, pad, dil, same=True)
    _conv_gemm(N, C, F, H, W, k, pad, dil, same=True, params={"kc": 8, "nc": 40},
               epilogue=("add", "relu"))


@pytest.mark.parametrize("isa", [i for i in ISAS_HERE if i != BEST])
def test_implicit_conv_other_isas(isa):
    _conv_gemm(2, 5, 17, 13, 11, 3, 1, isa=isa, same=True)
    _conv_gemm(2, 5, 17, 13, 11, 3, 1, isa=isa, epilogue=("add", "relu"))


@pytest.mark.parametrize("N,C,F,H,W,k,pad,dil", [
    (1, 16, 32, 7, 7, 3, 1, 1), (2, 5, 48, 13, 11, 3, 1, 1), (1, 9, 37, 5, 9, 3, 1, 1),
    (1, 4, 70, 9, 8, 5, 2, 1), (2, 3, 33, 10, 12, 3, 2, 2), (1, 2, 40, 1, 1, 3, 1, 1),
    (1, 6, 9, 4, 5, 3, 1, 1), (1, 3, 20, 14, 14, 1, 0, 1),
])
def test_implicit_conv_swapped(N, C, F, H, W, k, pad, dil):
    # C^T = X^T W^T: channels across the lanes, pixel panels packed off the input, the tile
    # transposed on store; ragged pixel panels (masked runs) and channel counts (edge tiles),
    # with and without prepacked weights, K blocks, every ISA with >= 8 lanes
    on = {"implicit_swap": True}
    for isa in ISAS_HERE:
        if _plan(GemmSpec(batch=1, M=64, N=64, K=64, b_kmap=((64, 1),)), isa, None).VL < 8:
            continue
        _conv_gemm(N, C, F, H, W, k, pad, dil, same=True, isa=isa, params=on, swapped=True)
        _conv_gemm(N, C, F, H, W, k, pad, dil, same=True, isa=isa, prepacked=True,
                   params={**on, "kc": 8}, epilogue=("add", "relu"), swapped=True)
    _conv_gemm(N, C, F, H, W, k, pad, dil, same=True, params=on, dtype="float64",
               bias=False, epilogue=("relu",), swapped=True)
    # over a padded input the output walks padded rows (c_ngrid): swapped, each pixel panel
    # reads from its padded row, when a panel height divides the output width
    _conv_gemm(N, C, F, H, W, k, pad, dil, params=on)
    _conv_gemm(N, C, F, H, W, k, pad, dil, params={**on, "kc": 8}, epilogue=("add", "relu"),
               prepacked=True)


@pytest.mark.parametrize("N,C,F,H,W,k,pad,dil,imr", [
    (1, 16, 32, 9, 9, 3, 1, 1, 9), (2, 5, 48, 12, 12, 3, 1, 1, 7), (3, 9, 37, 5, 9, 3, 0, 1, 7),
    (1, 4, 70, 9, 8, 5, 2, 1, 8), (2, 3, 33, 10, 12, 3, 2, 2, 8),
])
def test_implicit_conv_swapped_grid_and_batch_fold(N, C, F, H, W, k, pad, dil, imr):
    # gridded outputs swapped (panel height dividing the output width) and batches folded
    # into the rows (a height dividing the image's pixels); imr bounds the panel height
    for same in (False, True):
        if same and 2 * pad != (k - 1) * dil:
            continue
        _conv_gemm(N, C, F, H, W, k, pad, dil, same=same, swapped=True,
                   params={"implicit_swap": True, "imr": imr})
        _conv_gemm(N, C, F, H, W, k, pad, dil, same=same, swapped=True, prepacked=True,
                   params={"implicit_swap": True, "imr": imr, "kc": 16},
                   epilogue=("add", "relu"))


@pytest.mark.parametrize("N,C,F,H,W,k,pad,dil", [
    (1, 32, 32, 7, 7, 3, 1, 1), (2, 64, 40, 7, 7, 3, 1, 1), (1, 36, 33, 6, 6, 5, 2, 1),
    (1, 32, 32, 1, 7, 3, 1, 1), (2, 48, 32, 9, 9, 3, 2, 2), (3, 32, 17, 14, 14, 3, 1, 1),
])
def test_implicit_conv_tap_major_skips_padding_rows(N, C, F, H, W, k, pad, dil):
    # weights prepacked in (tap, channel) order: K blocks inside one tap, pixel panels of
    # whole output rows, and a block whose tap row is padding for the panel skipped (its
    # first/last blocks still initialise C and run the epilogue)
    on = {"implicit_swap": True}
    _conv_gemm(N, C, F, H, W, k, pad, dil, same=True, prepacked=True, swapped=True,
               tapmajor=True, params=on, epilogue=("add", "relu"))
    _conv_gemm(N, C, F, H, W, k, pad, dil, same=True, prepacked=True, swapped=True,
               tapmajor=True, params=on, bias=False, dtype="float64")
    # not prepacked (training): channel-major K as before
    _conv_gemm(N, C, F, H, W, k, pad, dil, same=True, swapped=True, params=on)


def test_implicit_conv_swapped_by_default_for_deep_layers():
    # few pixels, many channels (resnet stage 3-4) swap; wide images keep pixels in lanes
    _conv_gemm(1, 32, 64, 7, 7, 3, 1, same=True, prepacked=True, swapped=True,
               epilogue=("add", "relu"))
    _conv_gemm(1, 8, 16, 28, 28, 3, 1, same=True, prepacked=True, swapped=False)


def _conv_weight_grad(C, F, H, W, k, pad, dil=1, *, beta=0.0, params=None, isa=None,
                      dtype="float32", seed=0):
    """dW = dY X^T of a stride-1 "same" convolution as one GEMM whose B columns are the
    input shifted by their tap (``b_cols``), against numpy."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    x = rng.uniform(-1, 1, (C, H, W)).astype(dt)
    dy = rng.uniform(-1, 1, (F, H, W)).astype(dt)
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    ref = np.zeros((F, C, k, k))
    for ky in range(k):
        for kx in range(k):
            win = xp[:, ky * dil: ky * dil + H, kx * dil: kx * dil + W]
            ref[:, :, ky, kx] = np.einsum("fhw,chw->fc", dy.astype(np.float64), win)
    dw0 = rng.uniform(-1, 1, (F, C, k, k)).astype(dt)
    ref = ref + beta * dw0
    dw = dw0.copy()
    HW, Kd = H * W, C * k * k
    spec = GemmSpec(batch=1, M=F, N=Kd, K=HW, dtype=dtype, a_strides=(0, HW, 1),
                    b_strides=(0, 1, 0), c_strides=(0, Kd, 1), beta=beta,
                    b_cols=((C, HW), (k, dil * W), (k, dil)),
                    b_same=(H, W, k, k, dil, dil, pad, pad))
    kern = gemm_kernel("wgrad", spec, isa or BEST, _params=params)
    ptrs = [dy.ctypes.data, x.ctypes.data, dw.ctypes.data]
    args = (ctypes.c_void_p * 3)(*ptrs)
    scratch = _Scratch(kern.scratch_bytes)
    jit(kern)(0, kern.n_tasks, ctypes.addressof(args), scratch.ptr)
    tol = (3e-6 if dtype == "float32" else 1e-13) * (HW + 4)
    np.testing.assert_allclose(dw, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("C,F,H,W,k,pad,dil", [
    (3, 8, 7, 9, 3, 1, 1), (5, 17, 13, 11, 3, 1, 1), (16, 32, 14, 14, 3, 1, 1),
    (4, 6, 9, 8, 5, 2, 1), (3, 7, 10, 12, 3, 2, 2), (2, 3, 1, 1, 3, 1, 1), (3, 5, 3, 40, 3, 1, 1),
])
def test_implicit_weight_gradient(C, F, H, W, k, pad, dil):
    # no im2col buffer: B's columns are the input shifted per tap, padded while packed;
    # pixel blocks (kc) not a multiple of the vector, several column panels, accumulation
    for isa in ISAS_HERE:
        _conv_weight_grad(C, F, H, W, k, pad, dil, isa=isa)
    _conv_weight_grad(C, F, H, W, k, pad, dil, beta=1.0, params={"kc": 20, "nc": 40})
    _conv_weight_grad(C, F, H, W, k, pad, dil, dtype="float64", beta=0.5)


@pytest.mark.parametrize("M,N,K,batch", [(37, 45, 101, 1), (64, 300, 576, 3), (5, 17, 9, 2),
                                         (130, 61, 700, 1)])
def test_prepacked_a(M, N, K, batch):
    # constant weights packed once into row panels (a_panel): same results as packing A in
    # the kernel, for ragged M, several K blocks, a batch sharing A, a fused epilogue
    rng = np.random.default_rng(M)
    A = rng.uniform(-1, 1, (M, K)).astype(np.float32)
    B = rng.uniform(-1, 1, (batch, K, N)).astype(np.float32)
    R = rng.uniform(-1, 1, (batch, M, N)).astype(np.float32)
    bias = rng.uniform(-1, 1, M).astype(np.float32)
    base = GemmSpec(batch=batch, M=M, N=N, K=K, a_strides=(0, K, 1), bias="m",
                    epilogue=("add", "relu"))
    for isa in ISAS_HERE:
        mr = prepack_rows(base, isa)
        assert mr > 0
        Ap = pack_a_panels(A, mr)
        spec = GemmSpec(batch=batch, M=M, N=N, K=K, a_strides=(0, 0, 0), bias="m",
                        epilogue=("add", "relu"), a_panel=mr)
        params = {"kc": 64} if K > 500 else None
        kern = gemm_kernel("packed_a", spec, isa, _params=params)
        C = np.full((batch, M, N), np.nan, np.float32)
        ptrs = [Ap.ctypes.data, B.ctypes.data, C.ctypes.data, bias.ctypes.data, R.ctypes.data]
        args = (ctypes.c_void_p * len(ptrs))(*ptrs)
        scratch = _Scratch(kern.scratch_bytes)
        jit(kern)(0, kern.n_tasks, ctypes.addressof(args), scratch.ptr)
        ref = np.maximum(np.matmul(A.astype(np.float64), B) + bias[:, None] + R, 0)
        np.testing.assert_allclose(C, ref, rtol=0, atol=3e-6 * (K + 4), err_msg=isa)
    with pytest.raises(ValueError, match="panels of"):
        gemm_kernel("bad", GemmSpec(batch=1, M=M, N=N, K=K,
                                    a_panel=prepack_rows(base, BEST) + 1), BEST)


@pytest.mark.parametrize("M,N,K,batch", [(8, 512, 784, 1), (37, 45, 101, 2), (64, 1000, 512, 1),
                                         (9, 17, 300, 3)])
def test_prepacked_b(M, N, K, batch):
    # FullyConnected weights (N, K) packed once into column panels of W^T (b_panel)
    rng = np.random.default_rng(N)
    X = rng.uniform(-1, 1, (batch, M, K)).astype(np.float32)
    Wt = rng.uniform(-1, 1, (N, K)).astype(np.float32)     # the layer's weight
    bias = rng.uniform(-1, 1, N).astype(np.float32)
    base = dict(batch=batch, M=M, N=N, K=K, bias="n", epilogue=("relu",))
    for isa in ISAS_HERE:
        nr = prepack_cols(GemmSpec(b_strides=(0, 1, K), **base), isa)
        if nr == 0:   # this ISA's plan swaps the operands: B is not read in column panels
            assert isa != BEST or M > 64, isa
            continue
        Bp = pack_b_panels(np.ascontiguousarray(Wt.T), nr)
        spec = GemmSpec(b_strides=(0, 0, 0), b_panel=nr, **base)
        kern = gemm_kernel("packed_b", spec, isa, _params={"kc": 64} if K > 500 else None)
        C = np.full((batch, M, N), np.nan, np.float32)
        ptrs = [X.ctypes.data, Bp.ctypes.data, C.ctypes.data, bias.ctypes.data]
        args = (ctypes.c_void_p * len(ptrs))(*ptrs)
        scratch = _Scratch(kern.scratch_bytes)
        jit(kern)(0, kern.n_tasks, ctypes.addressof(args), scratch.ptr)
        ref = np.maximum(np.matmul(X.astype(np.float64), Wt.T) + bias, 0)
        np.testing.assert_allclose(C, ref, rtol=0, atol=3e-6 * (K + 4), err_msg=isa)


def test_zero_sizes():
    # K == 0: C = beta * C + bias
    _run(5, 9, 0, beta=0.5, bias="n")
    _run(5, 9, 0, bias="m")
    for M, N in ((0, 9), (5, 0)):
        spec = GemmSpec(1, M, N, 4, "float32", (0, 4, 1), (0, max(N, 1), 1), (0, max(N, 1), 1))
        kern = gemm_kernel("gemm_empty", spec, BEST)
        fn = jit(kern)
        fn(0, kern.n_tasks, None, None)   # touches nothing


def test_float64():
    _run(7, 13, 17, dtype="float64")
    _run(33, 65, 129, dtype="float64", tb=True, alpha=1.5, beta=1.0, bias="n")
    _run(1, 300, 200, dtype="float64", ta=True, batch=2)


@pytest.mark.parametrize("isa", [i for i in ISAS_HERE if i != BEST])
def test_other_isas(isa):
    _run(7, 13, 17, isa=isa)
    _run(33, 65, 300, isa=isa, tb=True, bias="m", beta=0.5)
    _run(1, 77, 40, isa=isa, ta=True, dtype="float64")


# --- task splits ------------------------------------------------------------------------------

def test_task_splits_identical():
    ref, kern = _run(150, 170, 310, batch=2, bias="n")
    assert kern.n_tasks >= 2

    def shuffled(n):
        order = [(i, i + 1) for i in range(n)]
        random.Random(7).shuffle(order)
        return order

    def halves(n):
        return [(n // 2, n), (0, n // 2)]

    for split in (shuffled, halves):
        out, _ = _run(150, 170, 310, batch=2, bias="n", task_order=split)
        assert np.array_equal(out, ref)


# --- B packed once into a buffer shared by the tasks (GemmSpec.share_b) ----------------------

@pytest.mark.parametrize("M,N,K,batch,split,params", [
    (150, 170, 310, 2, (3, 1), None),          # ragged row blocks, several K blocks
    (301, 77, 530, 1, (4, 1), {"kc": 64, "nc": 40}),   # several NC and K blocks per task
    (120, 300, 70, 3, (5, 3), None),           # row and column blocks, ragged last panel
    (50, 33, 1, 1, (3, 2), None),              # K == 1
])
@pytest.mark.parametrize("isa", ISAS_HERE)
def test_shared_b_any_order(M, N, K, batch, split, params, isa):
    """Every task order (one call per task, reversed, shuffled) and both threads at once give
    the bits of per-task packing."""
    params = {"split": split, "share_min": 0, **(params or {})}   # small Bs shared too
    ref, kern = _run(M, N, K, batch=batch, isa=isa, bias="n", params=params)
    assert kern.shared_bytes == 0
    rev = lambda n: [(i, i + 1) for i in reversed(range(n))]   # noqa: E731

    def shuffled(n):
        order = [(i, i + 1) for i in range(n)]
        random.Random(3).shuffle(order)
        return order

    for order in (None, rev, shuffled):
        out, kern = _run(M, N, K, batch=batch, isa=isa, bias="n", params=params, share=True,
                         task_order=order)
        assert kern.shared_bytes > kern.shared_zero_bytes > 0
        assert np.array_equal(out, ref)
    out, _ = _run(M, N, K, batch=batch, isa=isa, bias="n", params=params, share=True,
                  threads=True)
    assert np.array_equal(out, ref)


def test_shared_b_epilogue_float64_transposed():
    params = {"split": (4, 1), "share_min": 0}
    ref, _ = _run(90, 50, 120, dtype="float64", tb=True, bias="m", epilogue=("add", "relu"),
                  params=params)
    out, kern = _run(90, 50, 120, dtype="float64", tb=True, bias="m",
                     epilogue=("add", "relu"), params=params, share=True, threads=True)
    assert kern.shared_bytes and np.array_equal(out, ref)


def test_shared_b_only_when_rows_share_columns():
    """One row block (nothing to share), prepacked B and the dot-product schedule keep their
    own B paths; the split model counts the shared packing once per column block."""
    sq = dict(a_strides=(0, 512, 1), b_strides=(0, 512, 1), c_strides=(0, 512, 1))
    assert gemm_kernel("g", GemmSpec(1, 512, 512, 512, share_b=True, **sq), BEST,
                       _params={"split": (1, 2)}).shared_bytes == 0
    k = gemm_kernel("g", GemmSpec(1, 512, 512, 512, share_b=True, **sq), BEST)
    p = _plan(GemmSpec(1, 512, 512, 512, share_b=True, **sq), BEST, None)
    assert p.mt > 1 and k.shared_bytes > 0
    fc = GemmSpec(1, 2, 1000, 512, "float32", (0, 512, 1), (0, 1, 512), (0, 1000, 1),
                  share_b=True)
    assert gemm_kernel("fc", fc, BEST).shared_bytes == 0
    # a B smaller than _SHARED_B_MIN: tasks pack their own (no wait for a late thread)
    small = GemmSpec(1, 256, 256, 256, share_b=True)
    assert gemm_kernel("s", small, BEST, _params={"split": (4, 1)}).shared_bytes == 0


def test_skinny_split_over_n():
    # FullyConnected at batch 1: the two threads must get work even though M == 1.
    spec = GemmSpec(1, 1, 1000, 512, "float32", (0, 512, 1), (0, 1, 512), (0, 1000, 1))
    assert gemm_kernel("fc", spec, BEST).n_tasks >= 2
    spec = GemmSpec(1, 1024, 1024, 1024, "float32", (0, 1024, 1), (0, 1024, 1), (0, 1024, 1))
    assert gemm_kernel("sq", spec, BEST).n_tasks % 2 == 0


# --- cross builds -----------------------------------------------------------------------------

@pytest.mark.parametrize("triple,cpu,features,isa", CROSS_TARGETS)
def test_cross_object_freestanding(triple, cpu, features, isa):
    bodies = []
    # packed, transposed-B packed, direct-B, dot-product and K == 0 schedules
    cases = [(37, "float32", False, "n", 300), (37, "float32", True, None, 300),
             (37, "float64", False, "m", 300), (3, "float32", False, "n", 300),
             (2, "float32", True, "n", 300), (2, "float64", True, None, 300),
             (9, "float32", False, "m", 0)]
    for i, (M, dtype, tb, bias, K) in enumerate(cases):
        spec = GemmSpec(2, M, 75, K, dtype, None, (K * 75, 1, K) if tb else None, None,
                        alpha=1.0, beta=0.5, bias=bias)
        bodies.append(gemm_kernel(f"k{i}", spec, isa).ir)
    # B packed into the shared buffer: atomics must lower to instructions, not libcalls
    shared = gemm_kernel("ks", GemmSpec(1, 200, 75, 300, "float32", share_b=True), isa,
                         _params={"split": (4, 1), "share_min": 0})
    assert shared.shared_bytes
    bodies.append(shared.ir)
    # declarations are one line each and identical across kernels: dedupe when concatenating
    decls = sorted({ln for b in bodies for ln in b.splitlines() if ln.startswith("declare ")})
    defs = [("\n".join(ln for ln in b.splitlines() if not ln.startswith("declare "))) for b in
            bodies]
    cross_object("\n".join(decls + defs), triple, cpu, features)
