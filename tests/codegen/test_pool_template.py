"""The 2-D pooling template (codegen/pool_template.py) on its own: JIT-compiled for every ISA
the host can run, against the op's numpy reference on odd sizes (1x1 images, widths that are
not multiples of the vector or the stride, kernels 2/3/5, strides 1/2/3, pads 0/1/2), task
ranges run in any split and order on a garbage-filled scratch, NaN/inf propagation, and
freestanding cross objects for AArch64 / ARMv7 / x86-64."""
import ctypes

import numpy as np
import pytest
from template_harness import BEST, CROSS_TARGETS, OTHER_ISAS, cross_object, jit

from mxc.codegen.pool_template import PoolSpec, pool_kernel
from mxc.testing import reference

RNG = np.random.default_rng(11)


def _out_size(x, k, s, p, full):
    n = x + 2 * p - k
    return 1 + (-(-n // s) if full else n // s)


def _run(x, k, s, p, pool_type, *, include_pad=True, full=False, isa=None, split=None):
    """Pool ``x`` with the template; returns (result, kernel)."""
    N, C, H, W = x.shape
    OH, OW = _out_size(H, k[0], s[0], p[0], full), _out_size(W, k[1], s[1], p[1], full)
    spec = PoolSpec(N, C, H, W, OH, OW, k[0], k[1], s[0], s[1], p[0], p[1], pool_type,
                    include_pad, x.dtype.name)
    kern = pool_kernel("__K__", spec, isa or BEST)
    fn = jit(kern)
    x = np.ascontiguousarray(x)
    y = np.full((N, C, OH, OW), 12345.0, x.dtype)
    args = (ctypes.c_void_p * 2)(x.ctypes.data, y.ctypes.data)
    raw = np.full(kern.scratch_bytes // 4 + 32, np.nan, np.float32)  # garbage scratch
    scratch = (raw.ctypes.data + 63) // 64 * 64
    for b, e in (split(kern.n_tasks) if split else [(0, kern.n_tasks)]):
        fn(b, e, ctypes.addressof(args), scratch)
    return y, kern


def _want(x, k, s, p, pool_type, include_pad=True, full=False):
    attrs = {"kernel": k, "stride": s, "pad": p, "pool_type": pool_type,
             "count_include_pad": include_pad,
             "pooling_convention": "full" if full else "valid"}
    return reference("Pooling", [x], attrs)[0]


def _check(x, k, s, p, pool_type, **kw):
    got, kern = _run(x, k, s, p, pool_type, **kw)
    kw.pop("isa", None), kw.pop("split", None)
    want = _want(x, k, s, p, pool_type, **kw)
    if pool_type == "max":   # exact: max picks an input element (or the pad value)
        np.testing.assert_array_equal(got, want, err_msg=f"{x.shape} k{k} s{s} p{p}")
    else:
        tol = 1e-5 if x.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol,
                                   err_msg=f"{pool_type} {x.shape} k{k} s{s} p{p} {kw}")
    return kern


GEOMETRY = [  # (N, C, H, W), kernel, stride, pad
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),          # 1x1 image
    ((1, 3, 1, 1), (3, 3), (2, 2), (1, 1)),          # 1x1 image, window all but padding
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1)),
    ((1, 17, 12, 35), (3, 3), (2, 2), (1, 1)),       # 35: past one vector, odd
    ((3, 2, 6, 5), (2, 2), (2, 2), (0, 0)),          # non-overlapping, odd width
    ((1, 3, 9, 11), (3, 3), (1, 1), (1, 1)),         # stride 1 "same"
    ((1, 2, 13, 19), (5, 5), (3, 3), (2, 2)),        # 5x5, stride 3, pad 2
    ((2, 3, 8, 41), (2, 3), (1, 3), (0, 1)),         # mixed kernel/stride/pad
    ((1, 1, 40, 70), (3, 2), (3, 1), (2, 0)),
    ((1, 2, 5, 33), (5, 5), (1, 1), (2, 2)),
    ((1, 1, 17, 130), (3, 3), (2, 2), (0, 0)),       # direct (no row copy) with tails
]


@pytest.mark.parametrize("shape,k,s,p", GEOMETRY)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_template_matches_reference(shape, k, s, p, dtype):
    x = RNG.standard_normal(shape).astype(dtype)
    for pool_type in ("max", "avg", "sum"):
        _check(x, k, s, p, pool_type)
    _check(x, k, s, p, "avg", include_pad=False)


@pytest.mark.parametrize("shape,k,s,p", [GEOMETRY[2], GEOMETRY[3], GEOMETRY[6]])
def test_full_convention(shape, k, s, p):
    x = RNG.standard_normal(shape).astype("float32")
    for pool_type in ("max", "avg"):
        _check(x, k, s, p, pool_type, full=True)
    _check(x, k, s, p, "avg", full=True, include_pad=False)


@pytest.mark.parametrize("isa", OTHER_ISAS)
def test_other_isas(isa):
    for shape, k, s, p in (GEOMETRY[1], GEOMETRY[3], GEOMETRY[6], GEOMETRY[10]):
        for dtype in ("float32", "float64"):
            x = RNG.standard_normal(shape).astype(dtype)
            _check(x, k, s, p, "max", isa=isa)
            _check(x, k, s, p, "avg", isa=isa, include_pad=False)


def test_bands_and_any_task_split():
    # few planes: the rows are split into bands; tasks run in shuffled chunks on one scratch
    def split(n):
        cuts = sorted(set(RNG.integers(1, n, size=min(n - 1, 5)).tolist()) | {0, n})
        ranges = list(zip(cuts[:-1], cuts[1:]))
        RNG.shuffle(ranges)
        return ranges

    x = RNG.standard_normal((1, 2, 150, 150)).astype("float32")
    for pool_type in ("max", "avg"):
        kern = _check(x, (3, 3), (2, 2), (1, 1), pool_type, split=split)
        assert kern.n_tasks >= 8
    # a wide image: a band's horizontal rows are limited by the scratch budget
    x = RNG.standard_normal((1, 64, 20, 600)).astype("float64")
    kern = _check(x, (3, 3), (1, 1), (1, 1), "max", split=split)
    assert kern.n_tasks > 64


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_inf_semantics():
    # NaN propagates from any valid tap (llvm.maximum, as the generic lowering); windows of
    # -inf give -inf, or the lowest finite value where they reach into the padding
    x = RNG.standard_normal((1, 2, 9, 37)).astype("float32")
    x[0, 0, 0, 0] = np.nan          # corner, in border windows
    x[0, 0, 4, 20] = np.nan         # interior
    x[0, 0, 8, 36] = np.nan         # last element
    x[0, 1] = -np.inf
    x[0, 1, 3, 5] = np.inf
    for k, s, p in (((3, 3), (2, 2), (1, 1)), ((2, 2), (1, 1), (0, 0)), ((3, 3), (1, 1), (1, 1))):
        got, _ = _run(x, k, s, p, "max")
        np.testing.assert_array_equal(got, _want(x, k, s, p, "max"))
        assert np.isnan(got[0, 0, 0, 0])
        got, _ = _run(x, k, s, p, "avg")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(_want(x, k, s, p, "avg")))


def test_signed_zero_like_llvm_maximum():
    # max(-0, +0) = +0 in any order (llvm.maximum), as the generic lowering
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, ::2] = -0.0
    got, _ = _run(x, (2, 2), (1, 1), (0, 0), "max")
    assert not np.signbit(got).any()
    got, _ = _run(np.full((1, 1, 4, 4), -0.0, np.float32), (2, 2), (2, 2), (0, 0), "max")
    assert np.signbit(got).all()


# --- cross builds -----------------------------------------------------------------------------

@pytest.mark.parametrize("triple,cpu,features,isa", CROSS_TARGETS)
def test_cross_object_freestanding(triple, cpu, features, isa):
    specs = [PoolSpec(1, 64, 112, 112, 56, 56, 3, 3, 2, 2, 1, 1, "max", True, "float32"),
             PoolSpec(2, 3, 7, 9, 4, 5, 3, 2, 2, 2, 1, 1, "avg", False, "float64"),
             PoolSpec(1, 2, 9, 11, 9, 11, 3, 3, 1, 1, 1, 1, "sum", True, "float32"),
             PoolSpec(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, "max", True, "float64")]
    kernels = [pool_kernel(f"k{i}", sp, isa) for i, sp in enumerate(specs)]
    decls = sorted({ln for kk in kernels for ln in kk.ir.splitlines() if ln.startswith("declare")})
    defs = ["\n".join(ln for ln in kk.ir.splitlines() if not ln.startswith("declare"))
            for kk in kernels]
    cross_object("\n".join(decls + defs), triple, cpu, features)
