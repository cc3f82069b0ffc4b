"""gluon.loss: every loss against its numpy formula (MXNet 1.x's definitions), imperative and
hybridized, with sample weights; gradients of the common ones."""
import numpy as np
import pytest

import mxc as mx
from mxc import autograd, gluon
from mxc.gluon import loss as gloss

RS = np.random.RandomState(0)
PRED = RS.randn(4, 5).astype(np.float32)
LABEL_DENSE = RS.randn(4, 5).astype(np.float32)
LABEL_SIGN = np.sign(RS.randn(4, 5)).astype(np.float32)
LABEL_BIN = (RS.rand(4, 5) > 0.5).astype(np.float32)
LABEL_CLS = np.array([0, 3, 4, 1], np.float32)
SW = RS.rand(4, 1).astype(np.float32)


def _softrelu(x):
    return np.log1p(np.exp(x))


def _log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _mean_rest(x):
    return x.reshape(x.shape[0], -1).mean(axis=1)


CASES = {
    "l2": (lambda: gloss.L2Loss(), [PRED, LABEL_DENSE],
           lambda p, lab: _mean_rest(0.5 * (lab - p) ** 2)),
    "l1": (lambda: gloss.L1Loss(), [PRED, LABEL_DENSE], lambda p, lab: _mean_rest(np.abs(lab - p))),
    "sigmoid_bce": (lambda: gloss.SigmoidBCELoss(), [PRED, LABEL_BIN],
                    lambda p, lab: _mean_rest(np.maximum(p, 0) - p * lab +
                                              _softrelu(-np.abs(p)))),
    "sigmoid_bce_from_sigmoid": (
        lambda: gloss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=True),
        [1 / (1 + np.exp(-PRED)), LABEL_BIN],
        lambda p, lab: _mean_rest(-(np.log(p + 1e-12) * lab +
                                    np.log(1 - p + 1e-12) * (1 - lab)))),
    "softmax_ce": (lambda: gloss.SoftmaxCrossEntropyLoss(), [PRED, LABEL_CLS],
                   lambda p, lab: -_log_softmax(p)[np.arange(4), lab.astype(int)]),
    "softmax_ce_dense": (
        lambda: gloss.SoftmaxCELoss(sparse_label=False),
        [PRED, np.exp(_log_softmax(LABEL_DENSE))],
        lambda p, lab: -(_log_softmax(p) * lab).sum(axis=-1)),
    "softmax_ce_from_logits": (
        lambda: gloss.SoftmaxCrossEntropyLoss(from_logits=True), [_log_softmax(PRED), LABEL_CLS],
        lambda p, lab: -p[np.arange(4), lab.astype(int)]),
    "kldiv": (lambda: gloss.KLDivLoss(), [_log_softmax(PRED), np.exp(_log_softmax(LABEL_DENSE))],
              lambda p, lab: _mean_rest(lab * (np.log(lab + 1e-12) - p))),
    "kldiv_logits": (lambda: gloss.KLDivLoss(from_logits=False),
                     [PRED, np.exp(_log_softmax(LABEL_DENSE))],
                     lambda p, lab: _mean_rest(lab * (np.log(lab + 1e-12) - _log_softmax(p)))),
    "huber": (lambda: gloss.HuberLoss(rho=0.5), [PRED, LABEL_DENSE],
              lambda p, lab: _mean_rest(np.where(np.abs(lab - p) > 0.5, np.abs(lab - p) - 0.25,
                                                 (0.5 / 0.5) * (lab - p) ** 2))),
    "hinge": (lambda: gloss.HingeLoss(), [PRED, LABEL_SIGN],
              lambda p, lab: _mean_rest(np.maximum(0, 1 - p * lab))),
    "squared_hinge": (lambda: gloss.SquaredHingeLoss(margin=2), [PRED, LABEL_SIGN],
                      lambda p, lab: _mean_rest(np.maximum(0, 2 - p * lab) ** 2)),
    "logistic_signed": (lambda: gloss.LogisticLoss(), [PRED, LABEL_SIGN],
                        lambda p, lab: _mean_rest(np.log1p(np.exp(-p * lab)))),
    "logistic_binary": (lambda: gloss.LogisticLoss(label_format="binary"), [PRED, LABEL_BIN],
                        lambda p, lab: _mean_rest(np.log1p(np.exp(-p * (2 * lab - 1))))),
}


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_values(name, hybridize):
    make, inputs, ref = CASES[name]
    fn = make()
    if hybridize:
        fn.hybridize()
    args = [mx.nd.array(a) for a in inputs]
    out = fn(*args)
    want = ref(*inputs)
    np.testing.assert_allclose(out.asnumpy(), want, rtol=1e-5, atol=1e-6)
    # sample_weight broadcasts over the batch (a new block: a hybridized one keeps the
    # argument structure of its first call, as in MXNet)
    fn = make()
    if hybridize:
        fn.hybridize()
    out_w = fn(*args, mx.nd.array(SW))
    want_w = ref(*inputs) if name.startswith("softmax") else None
    if want_w is not None:
        np.testing.assert_allclose(out_w.asnumpy(), want * SW[:, 0], rtol=1e-5, atol=1e-6)
    else:
        assert out_w.shape == (4,)


def test_weight_and_batch_axis():
    fn = gloss.L1Loss(weight=3.0, batch_axis=1)
    p, lab = mx.nd.array(PRED), mx.nd.array(LABEL_DENSE)
    np.testing.assert_allclose(fn(p, lab).asnumpy(), 3 * np.abs(LABEL_DENSE - PRED).mean(axis=0),
                               rtol=1e-5)
    assert repr(fn) == "L1Loss(batch_axis=1, w=3.0)"


def test_label_reshaped_like_pred():
    fn = gloss.L2Loss()
    out = fn(mx.nd.array(PRED[:, :1]), mx.nd.array(LABEL_DENSE[:, 0]))
    np.testing.assert_allclose(out.asnumpy(), 0.5 * (LABEL_DENSE[:, 0] - PRED[:, 0]) ** 2,
                               rtol=1e-5)


def test_sigmoid_bce_pos_weight():
    pw = RS.rand(5).astype(np.float32) + 0.5
    for from_sigmoid in (False, True):
        fn = gloss.SigmoidBCELoss(from_sigmoid=from_sigmoid)
        p = 1 / (1 + np.exp(-PRED)) if from_sigmoid else PRED
        out = fn(mx.nd.array(p), mx.nd.array(LABEL_BIN), None, mx.nd.array(pw))
        prob = 1 / (1 + np.exp(-PRED))
        want = -(np.log(prob + (1e-12 if from_sigmoid else 0)) * LABEL_BIN * pw +
                 np.log(1 - prob + (1e-12 if from_sigmoid else 0)) * (1 - LABEL_BIN))
        np.testing.assert_allclose(out.asnumpy(), _mean_rest(want), rtol=1e-4, atol=1e-5)


def test_triplet_poisson_cosine():
    a, b, c = (RS.randn(3, 4).astype(np.float32) for _ in range(3))
    t = gloss.TripletLoss(margin=0.5)(mx.nd.array(a), mx.nd.array(b), mx.nd.array(c))
    want = np.maximum(((b - a) ** 2 - (c - a) ** 2).sum(axis=1) + 0.5, 0)
    np.testing.assert_allclose(t.asnumpy(), want, rtol=1e-5, atol=1e-6)
    target = RS.poisson(2, (3, 4)).astype(np.float32)
    p = gloss.PoissonNLLLoss()(mx.nd.array(a), mx.nd.array(target))
    np.testing.assert_allclose(p.asnumpy(), np.mean(np.exp(a) - target * a), rtol=1e-5)
    lab = np.array([1, -1, 1], np.float32)
    cos = gloss.CosineEmbeddingLoss()(mx.nd.array(a), mx.nd.array(b), mx.nd.array(lab))
    sim = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    want = np.where(lab == 1, 1 - sim, np.maximum(0, sim))
    np.testing.assert_allclose(cos.asnumpy().ravel(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hybridize", [False, True])
def test_softmax_ce_gradient(hybridize):
    fn = gloss.SoftmaxCrossEntropyLoss()
    if hybridize:
        fn.hybridize()
    p = mx.nd.array(PRED)
    p.attach_grad()
    with autograd.record():
        out = fn(p, mx.nd.array(LABEL_CLS))
    out.backward()
    onehot = np.eye(5, dtype=np.float32)[LABEL_CLS.astype(int)]
    np.testing.assert_allclose(p.grad.asnumpy(), np.exp(_log_softmax(PRED)) - onehot,
                               rtol=1e-5, atol=1e-6)


def test_losses_in_a_hybrid_network():
    net = gluon.nn.HybridSequential()
    with net.name_scope():
        net.add(gluon.nn.Dense(3))
    net.initialize()

    class WithLoss(gluon.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.net = net
                self.loss = gloss.SoftmaxCELoss()

        def hybrid_forward(self, F, x, y):
            return self.loss(self.net(x), y)

    m = WithLoss()
    x, y = mx.nd.array(RS.randn(4, 2)), mx.nd.array([0, 1, 2, 1])
    ref = m(x, y).asnumpy()
    m.hybridize()
    np.testing.assert_allclose(m(x, y).asnumpy(), ref, rtol=1e-6)
    assert any("softmaxcrossentropyloss0_log_softmax0" in k for k in
               m(mx.sym.var("x"), mx.sym.var("y")).get_internals().list_outputs())
