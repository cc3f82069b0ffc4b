"""The max-pooling backward template (codegen/pool_backward_template.py) against the generic
lowering (``MXC_POOL_TEMPLATE=0``) and the op's numpy reference: ties (the first window
position equal to the output takes the gradient), NaN, windows reaching into the padding
or past the image (full convention), overlapping windows adding into one element, float64,
and windows too large for the template (generic lowering)."""
import numpy as np
import pytest

import mxc as mx
from mxc.codegen.pool_backward_template import max_backward_kernel, supported_backward
from mxc.codegen.pool_template import PoolSpec
from mxc.testing import reference

RNG = np.random.default_rng(23)
V = mx.sym.Variable


def _grad(x, attrs, dy, monkeypatch, template: bool):
    monkeypatch.setenv("MXC_POOL_TEMPLATE", "1" if template else "0")
    sym = mx.sym.Pooling(V("data"), **attrs)
    ex = sym.simple_bind(mx.cpu(), data=x.shape, grad_req="write",
                         type_dict={"data": x.dtype.name})
    ex.arg_dict["data"][:] = x
    ex.forward(is_train=True)
    ex.backward(mx.nd.array(dy, dtype=x.dtype))
    notes = [lk.kernel.note for b in ex._bound.values() for lk in b.cg.kernels]
    assert ("pool_max_backward" in notes) == template
    return ex.grad_dict["data"].asnumpy(), notes


CASES = [  # shape, kernel, stride, pad, convention
    ((2, 3, 9, 11), (3, 3), (2, 2), (1, 1), "valid"),
    ((1, 2, 13, 7), (2, 3), (1, 2), (0, 1), "full"),
    ((1, 1, 6, 6), (3, 3), (1, 1), (1, 1), "valid"),        # overlapping windows
    ((2, 4, 17, 20), (5, 5), (3, 2), (2, 2), "full"),
    ((1, 2, 5, 5), (7, 7), (1, 1), (3, 3), "valid"),        # every window has padding
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), "valid"),
    ((1, 2, 4, 4), (2, 2), (3, 3), (0, 0), "full"),         # windows past the image
]


@pytest.mark.parametrize("shape,k,s,p,conv", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_generic_and_reference(shape, k, s, p, conv, dtype, monkeypatch):
    x = RNG.standard_normal(shape).astype(dtype)
    x[:, :, ::3, ::2] = 0.0          # ties: the first equal position takes the gradient
    attrs = {"kernel": k, "stride": s, "pad": p, "pool_type": "max",
             "pooling_convention": conv}
    y = reference("Pooling", [x], attrs)[0]
    dy = RNG.standard_normal(y.shape).astype(dtype)
    got, _ = _grad(x, attrs, dy, monkeypatch, True)
    want, _ = _grad(x, attrs, dy, monkeypatch, False)
    tol = 1e-6 if dtype == "float32" else 1e-13   # overlapping windows: summation order
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # a loop-level oracle: MXNet's rule, position by position
    np.testing.assert_allclose(got, _naive_backward(x, y, dy, k, s, p), rtol=1e-5, atol=1e-5)


def _naive_backward(x, y, dy, k, s, p):
    """dx: each window's dy goes to its first position (row-major) equal to y; a padding
    position counts as the lowest value and takes the gradient away."""
    low = np.finfo(x.dtype).min
    dx = np.zeros(x.shape, np.float64)
    N, C, H, W = x.shape
    for n in range(N):
        for c in range(C):
            for oh in range(y.shape[2]):
                for ow in range(y.shape[3]):
                    for a in range(k[0]):
                        ih = oh * s[0] - p[0] + a
                        hit = False
                        for b in range(k[1]):
                            iw = ow * s[1] - p[1] + b
                            inside = 0 <= ih < H and 0 <= iw < W
                            v = x[n, c, ih, iw] if inside else low
                            if v == y[n, c, oh, ow]:
                                if inside:
                                    dx[n, c, ih, iw] += dy[n, c, oh, ow]
                                hit = True
                                break
                        if hit:
                            break
    return dx


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_output_takes_no_gradient(monkeypatch):
    x = RNG.standard_normal((1, 1, 6, 6)).astype("float32")
    x[0, 0, 2, 2] = np.nan
    attrs = {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1), "pool_type": "max"}
    y = reference("Pooling", [x], attrs)[0]
    dy = np.ones(y.shape, np.float32)
    got, _ = _grad(x, attrs, dy, monkeypatch, True)
    want, _ = _grad(x, attrs, dy, monkeypatch, False)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want))


def test_scope():
    spec = PoolSpec(1, 1, 20, 20, 2, 2, 9, 9, 9, 9, 0, 0, "max", True, "float32")
    assert not supported_backward(spec)      # 81 taps: the generic lowering
    with pytest.raises(ValueError, match="not supported"):
        max_backward_kernel("k", spec)
    assert not supported_backward(PoolSpec(1, 1, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0, "avg", True,
                                           "float32"))
    k = max_backward_kernel("k", PoolSpec(2, 3, 8, 8, 4, 4, 3, 3, 2, 2, 1, 1, "max", True,
                                          "float64"))
    assert k.n_tasks == 6
