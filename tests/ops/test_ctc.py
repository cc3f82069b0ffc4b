"""CTCLoss: loss vs the numpy forward-algorithm oracle and a brute-force sum over every
alignment, gradient vs finite differences, padding / lengths / blank_label semantics."""
import itertools

import numpy as np
import pytest

from mxc.base import MXNetError
from mxc.testing import check_forward, check_grad, reference, run_op

RNG = np.random.default_rng(3)


def _brute_force_loss(x, labels, blank):
    """-log sum over all length-T paths that collapse (merge repeats, drop blanks) to labels."""
    T, C = x.shape
    p = np.exp(x - x.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    total = 0.0
    for path in itertools.product(range(C), repeat=T):
        out, prev = [], None
        for c in path:
            if c != prev and c != blank:
                out.append(c)
            prev = c
        if out == list(labels):
            total += np.prod([p[t, c] for t, c in enumerate(path)])
    return -np.log(total)


def test_loss_matches_brute_force():
    T, N, C = 5, 3, 3
    x = RNG.standard_normal((T, N, C))
    lab = np.array([[1, 1], [2, 0], [1, 2]], np.float64)     # 0 pads (blank_label='first')
    got = run_op("CTCLoss", [x, lab], {})[0][0]
    want = [_brute_force_loss(x[:, 0], [1, 1], 0), _brute_force_loss(x[:, 1], [2], 0),
            _brute_force_loss(x[:, 2], [1, 2], 0)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # blank last: class C-1 is blank and -1 pads
    lab_last = np.array([[0, 0], [1, -1], [0, 1]], np.float64)
    got = run_op("CTCLoss", [x, lab_last], {"blank_label": "last"})[0][0]
    want = [_brute_force_loss(x[:, 0], [0, 0], 2), _brute_force_loss(x[:, 1], [1], 2),
            _brute_force_loss(x[:, 2], [0, 1], 2)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-4), ("float64", 1e-9)])
def test_forward_and_grad(dtype, rtol):
    T, N, C = 7, 4, 6
    x = RNG.standard_normal((T, N, C)).astype(dtype)
    lab = np.array([[1, 2, 2, 3], [5, 0, 0, 0], [4, 4, 4, 0], [2, 3, 1, 5]], np.float32)
    check_forward("CTCLoss", [x, lab], {}, rtol=rtol, atol=1e-5)
    if dtype == "float64":
        check_grad("CTCLoss", [x, lab], {}, which=[0], rtol=1e-4, atol=1e-6)


def test_lengths_and_aliases():
    T, N, C = 6, 3, 5
    x = RNG.standard_normal((T, N, C))
    lab = np.array([[1, 2, 3], [4, 4, 1], [2, 1, 3]], np.float32)
    dl = np.array([6, 4, 2], np.float32)
    ll = np.array([3, 1, 0], np.float32)
    attrs = {"use_data_lengths": True, "use_label_lengths": True}
    for op in ("CTCLoss", "ctc_loss", "_contrib_CTCLoss", "_contrib_ctc_loss"):
        check_forward(op, [x, lab, dl, ll], attrs, rtol=1e-9, atol=1e-9)
    check_grad("CTCLoss", [x, lab, dl, ll], attrs, which=[0], rtol=1e-4, atol=1e-6)
    # the short sequences only see their first data_lengths steps
    loss = run_op("CTCLoss", [x, lab, dl, ll], attrs)[0][0]
    np.testing.assert_allclose(loss[1], _brute_force_loss(x[:4, 1], [4], 0), rtol=1e-10)
    np.testing.assert_allclose(loss[2], _brute_force_loss(x[:2, 2], [], 0), rtol=1e-10)
    # data lengths only, labels ended by padding
    check_forward("CTCLoss", [x, np.array([[1, 0, 0], [2, 3, 0], [1, 1, 1]], np.float32), dl],
                  {"use_data_lengths": 1}, rtol=1e-9, atol=1e-9)


def test_impossible_alignment_gives_zero():
    # 3 repeated labels need at least 5 steps; T = 4
    x = RNG.standard_normal((4, 2, 3))
    lab = np.array([[1, 1, 1], [2, 1, 0]], np.float32)
    outs, grads, _ = run_op("CTCLoss", [x, lab], {}, head_grads=[np.ones(2)])
    assert outs[0][0] == 0.0 and np.isfinite(outs[0][1]) and outs[0][1] > 0
    np.testing.assert_array_equal(grads[0][:, 0], 0.0)
    np.testing.assert_allclose(outs[0], reference("CTCLoss", [x, lab], {})[0])


def test_backward_scales_by_head_gradient():
    x = RNG.standard_normal((5, 2, 4))
    lab = np.array([[1, 2], [3, 0]], np.float32)
    hg = np.array([2.0, -0.5])
    _, grads, _ = run_op("CTCLoss", [x, lab], {}, head_grads=[hg])
    _, g1, _ = run_op("CTCLoss", [x, lab], {}, head_grads=[np.ones(2)])
    np.testing.assert_allclose(grads[0], g1[0] * hg[None, :, None], rtol=1e-12)
    # each (t, b) gradient row sums to zero (softmax minus a distribution)
    np.testing.assert_allclose(g1[0].sum(-1), 0.0, atol=1e-12)


def test_bad_shapes():
    with pytest.raises(MXNetError):
        run_op("CTCLoss", [np.zeros((4, 2, 3)), np.zeros((3, 2))], {})
    with pytest.raises(MXNetError):
        run_op("CTCLoss", [np.zeros((4, 3)), np.zeros((4, 2))], {})
    with pytest.raises(MXNetError):
        run_op("CTCLoss", [np.zeros((4, 2, 3)), np.zeros((2, 2)), np.zeros(3)],
               {"use_data_lengths": True})
    with pytest.raises(MXNetError):
        run_op("CTCLoss", [np.zeros((4, 2, 3)), np.zeros((2, 2))], {"blank_label": "middle"})
