"""mx.metric: every metric against numpy / the values of MXNet's documentation, local vs
global statistics, create() and its aliases, composite and custom metrics."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError
from mxc.frontend import metric

PREDS = [mx.nd.array([[0.3, 0.7], [0, 1.0], [0.4, 0.6]])]
LABELS = [mx.nd.array([0, 1, 1])]


def test_accuracy_doc_example_and_global():
    acc = metric.Accuracy()
    acc.update(preds=PREDS, labels=LABELS)
    assert acc.get() == ("accuracy", pytest.approx(2 / 3))
    # single NDArrays are wrapped in lists
    acc.update(mx.nd.array([1, 1]), mx.nd.array([[0.9, 0.1], [0.2, 0.8]]))
    assert acc.get()[1] == pytest.approx(3 / 5)
    acc.reset_local()
    assert math.isnan(acc.get()[1])
    assert acc.get_global() == ("accuracy", pytest.approx(3 / 5))
    assert acc.get_global_name_value() == [("accuracy", pytest.approx(3 / 5))]
    acc.reset()
    assert math.isnan(acc.get_global()[1])
    # same shapes: predictions are class indices
    acc.update([mx.nd.array([1, 2, 3])], [mx.nd.array([1, 2, 0])])
    assert acc.get()[1] == pytest.approx(2 / 3)
    # argmax over another axis
    acc = metric.Accuracy(axis=0)
    acc.update([mx.nd.array([1, 0])], [mx.nd.array([[0.1, 0.9], [0.8, 0.2]])])
    assert acc.get()[1] == 1.0
    with pytest.raises(ValueError, match="does not match"):
        metric.Accuracy().update(LABELS, PREDS + PREDS)


def test_top_k_accuracy():
    rng = np.random.RandomState(999)
    pred = rng.rand(10, 10).astype(np.float32)
    label = np.array([2, 6, 9, 2, 3, 4, 7, 8, 9, 6])
    m = metric.TopKAccuracy(top_k=3)
    assert m.name == "top_k_accuracy_3"
    m.update([mx.nd.array(label)], [mx.nd.array(pred)])
    top3 = np.argsort(-pred, axis=1)[:, :3]
    expect = np.mean([label[i] in top3[i] for i in range(10)])
    assert m.get()[1] == pytest.approx(expect)
    with pytest.raises(MXNetError):
        metric.TopKAccuracy(top_k=1)
    m = metric.create("top_k_acc", top_k=20)       # k above the class count: all correct
    m.update([mx.nd.array(label)], [mx.nd.array(pred)])
    assert m.get()[1] == 1.0


def test_f1_mcc_doc_values():
    f1 = metric.F1()
    f1.update(LABELS, PREDS)
    assert f1.get() == ("f1", pytest.approx(0.8))
    # MXNet's MCC docstring: a network that almost always predicts positive
    fp, fn, tp, tn = 1000, 1, 10000, 1
    preds = [mx.nd.array([[0.3, 0.7]] * fp + [[0.7, 0.3]] * tn + [[0.7, 0.3]] * fn
                         + [[0.3, 0.7]] * tp)]
    labels = [mx.nd.array([0.0] * (fp + tn) + [1.0] * (fn + tp))]
    f1, mcc = metric.F1(), metric.MCC()
    f1.update(labels, preds)
    mcc.update(labels, preds)
    assert f1.get()[1] == pytest.approx(0.95233560306652054)
    assert mcc.get()[1] == pytest.approx(0.01917751877733392)
    with pytest.raises(ValueError, match="binary"):
        metric.F1().update([mx.nd.array([0, 1, 2])], [mx.nd.ones((3, 2))])


def test_f1_macro_vs_micro():
    batches = [([1, 0, 1, 1], [1, 1, 0, 1]), ([0, 0, 1, 1], [0, 1, 1, 1])]

    def onehot(p):
        return mx.nd.array(np.eye(2)[p])

    def f1(tp, fp, fn):
        p, r = tp / (tp + fp), tp / (tp + fn)
        return 2 * p * r / (p + r)

    macro, micro = metric.F1(average="macro"), metric.F1(average="micro")
    for lab, pred in batches:
        for m in (macro, micro):
            m.update([mx.nd.array(lab)], [onehot(pred)])
    # batch 1: tp 2 fp 1 fn 1; batch 2: tp 2 fp 1 fn 0
    assert macro.get()[1] == pytest.approx((f1(2, 1, 1) + f1(2, 1, 0)) / 2)
    assert micro.get()[1] == pytest.approx(f1(4, 2, 1))
    micro.reset_local()
    micro.update([mx.nd.array(batches[1][0])], [onehot(batches[1][1])])
    assert micro.get()[1] == pytest.approx(f1(2, 1, 0))
    assert micro.get_global()[1] == pytest.approx(f1(6, 3, 1))


def test_regression_metrics():
    rng = np.random.RandomState(0)
    lab = rng.rand(8).astype(np.float32)
    pred = rng.rand(8, 1).astype(np.float32)
    lab2 = rng.rand(4, 3).astype(np.float32)
    pred2 = rng.rand(4, 3).astype(np.float32)
    d1 = lab.reshape(8, 1) - pred
    d2 = lab2 - pred2
    for name, f in [("mae", lambda d: np.abs(d).mean()), ("mse", lambda d: (d ** 2).mean()),
                    ("rmse", lambda d: np.sqrt((d ** 2).mean()))]:
        m = metric.create(name)
        m.update([mx.nd.array(lab)], [mx.nd.array(pred)])
        m.update([mx.nd.array(lab2)], [mx.nd.array(pred2)])
        assert m.get()[0] == name
        assert m.get()[1] == pytest.approx((f(d1) + f(d2)) / 2, rel=1e-6)   # mean of batches


def test_cross_entropy_nll_perplexity():
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]],
                 np.float32)
    lab = np.array([1, 0, 2, 0], np.float32)
    picked = p[np.arange(4), lab.astype(int)]
    for name, cls in [("ce", metric.CrossEntropy), ("nll_loss", metric.NegativeLogLikelihood)]:
        m = metric.create(name)
        assert isinstance(m, cls)
        m.update([mx.nd.array(lab)], [mx.nd.array(p)])
        assert m.get()[1] == pytest.approx(np.mean(-np.log(picked + 1e-12)), rel=1e-6)
    assert metric.CrossEntropy().name == "cross-entropy"
    assert metric.NegativeLogLikelihood().name == "nll-loss"

    ppl = metric.Perplexity(ignore_label=None)
    ppl.update([mx.nd.array(lab)], [mx.nd.array(p)])
    assert ppl.get() == ("perplexity", pytest.approx(np.exp(np.mean(-np.log(picked))),
                                                     rel=1e-6))
    # ignored labels count neither in the loss nor in the number of tokens
    ppl = metric.Perplexity(ignore_label=0)
    ppl.update([mx.nd.array(lab)], [mx.nd.array(p)])
    keep = lab != 0
    assert ppl.get()[1] == pytest.approx(np.exp(np.mean(-np.log(picked[keep]))), rel=1e-6)
    # a (batch, time, vocab) prediction with (batch, time) labels
    p3 = np.stack([p, p[::-1]])
    l3 = np.stack([lab, lab[::-1]])
    ppl = metric.Perplexity(ignore_label=None)
    ppl.update([mx.nd.array(l3)], [mx.nd.array(p3)])
    picked3 = np.concatenate([picked, picked[::-1]])
    assert ppl.get()[1] == pytest.approx(np.exp(np.mean(-np.log(picked3))), rel=1e-6)
    ppl.reset_local()
    assert ppl.get_global()[1] == pytest.approx(np.exp(np.mean(-np.log(picked3))), rel=1e-6)


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_pearson(average):
    rng = np.random.RandomState(3)
    b1 = (rng.rand(10), rng.rand(10))
    b2 = (rng.rand(6), rng.rand(6))
    m = metric.create("pearsonr", average=average)
    for lab, pred in (b1, b2):
        m.update([mx.nd.array(lab)], [mx.nd.array(pred)])
    f32 = np.float32
    if average == "macro":
        expect = (np.corrcoef(b1[1].astype(f32), b1[0].astype(f32))[0, 1]
                  + np.corrcoef(b2[1].astype(f32), b2[0].astype(f32))[0, 1]) / 2
    else:
        lab = np.concatenate([b1[0], b2[0]]).astype(f32)
        pred = np.concatenate([b1[1], b2[1]]).astype(f32)
        expect = np.corrcoef(pred, lab)[0, 1]
    assert m.get()[1] == pytest.approx(expect, rel=1e-5)


def test_loss_torch_caffe():
    for name in ("loss", "torch", "caffe"):
        m = metric.create(name)
        m.update(None, [mx.nd.array([1.0, 2.0, 3.0]), mx.nd.array([[4.0]])])
        assert m.get() == (name, pytest.approx(10.0 / 4))
    m = metric.Loss()
    m.update(None, mx.nd.array([2.0, 4.0]))
    assert m.get()[1] == 3.0


def test_custom_and_np():
    def mae(label, pred):
        return np.abs(label - pred).mean()

    m = metric.create(mae)
    assert isinstance(m, metric.CustomMetric) and m.name == "mae"
    m.update([mx.nd.array([1.0, 2.0])], [mx.nd.array([1.5, 2.5])])
    m.update([mx.nd.array([0.0])], [mx.nd.array([2.0])])
    assert m.get()[1] == pytest.approx((0.5 + 2.0) / 2)
    assert metric.create(lambda label, pred: 0.0).name == "custom(<lambda>)"
    t = metric.np(lambda label, pred: (float(np.sum(label == pred)), label.size), name="hits")
    t.update([mx.nd.array([1, 2, 3])], [mx.nd.array([1, 0, 3])])
    assert t.get() == ("hits", pytest.approx(2 / 3))
    with pytest.raises(NotImplementedError):
        t.get_config()
    extra = metric.CustomMetric(lambda label, pred: 1.0, allow_extra_outputs=True)
    extra.update([mx.nd.array([1])], [mx.nd.array([1]), mx.nd.array([2])])
    assert extra.num_inst == 1


def test_composite_and_update_dict():
    comp = metric.CompositeEvalMetric()
    for child in [metric.Accuracy(), metric.F1()]:
        comp.add(child)
    comp.update(labels=LABELS, preds=PREDS)
    assert comp.get() == (["accuracy", "f1"], [pytest.approx(2 / 3), pytest.approx(0.8)])
    assert isinstance(comp.get_metric(1), metric.F1)
    assert isinstance(comp.get_metric(5), ValueError)
    comp.reset_local()
    assert all(math.isnan(v) for v in comp.get()[1])
    assert comp.get_global()[1] == [pytest.approx(2 / 3), pytest.approx(0.8)]
    assert dict(comp.get_name_value())["f1"] != 0.8     # nan after reset_local

    acc = metric.Accuracy(output_names=["out"], label_names=["lab"])
    acc.update_dict(OrderedDict([("lab", LABELS[0]), ("other", mx.nd.array([5, 5, 5]))]),
                    OrderedDict([("x", mx.nd.zeros((3, 2))), ("out", PREDS[0])]))
    assert acc.get()[1] == pytest.approx(2 / 3)
    comp = metric.create(["acc", metric.MSE()])
    assert [m.name for m in comp.metrics] == ["accuracy", "mse"]
    comp = metric.CompositeEvalMetric(label_names=["lab"], output_names=["out"])
    comp.add("acc")
    comp.update_dict({"lab": LABELS[0], "zz": mx.nd.ones(3)}, {"out": PREDS[0]})
    assert comp.get()[1] == [pytest.approx(2 / 3)]


def test_create_aliases_and_config_roundtrip():
    expect = {"acc": metric.Accuracy, "accuracy": metric.Accuracy, "ce": metric.CrossEntropy,
              "top_k_accuracy": metric.TopKAccuracy, "top_k_acc": metric.TopKAccuracy,
              "f1": metric.F1, "mcc": metric.MCC, "mae": metric.MAE, "mse": metric.MSE,
              "rmse": metric.RMSE, "nll_loss": metric.NegativeLogLikelihood,
              "negativeloglikelihood": metric.NegativeLogLikelihood,
              "perplexity": metric.Perplexity, "pearsonr": metric.PearsonCorrelation,
              "pearsoncorrelation": metric.PearsonCorrelation, "loss": metric.Loss,
              "composite": metric.CompositeEvalMetric, "crossentropy": metric.CrossEntropy}
    for name, cls in expect.items():
        kw = {"top_k": 2} if cls is metric.TopKAccuracy else {}
        if cls is metric.Perplexity:
            kw = {"ignore_label": None}
        assert type(metric.create(name, **kw)) is cls, name
    acc = metric.Accuracy(axis=2, name="myacc")
    assert acc.get_config() == {"axis": 2, "metric": "Accuracy", "name": "myacc",
                                "output_names": None, "label_names": None}
    again = metric.create(**acc.get_config())
    assert isinstance(again, metric.Accuracy) and again.axis == 2 and again.name == "myacc"
    comp = metric.create(["acc", "mse"])
    rebuilt = metric.create(comp.get_config())
    assert [type(m) for m in rebuilt.metrics] == [metric.Accuracy, metric.MSE]
    a = metric.Accuracy()
    assert metric.create(a) is a
    with pytest.raises(MXNetError, match="not registered"):
        metric.create("no_such_metric")
    assert str(metric.Accuracy()).startswith("EvalMetric: {'accuracy'")


def test_numpy_inputs_are_accepted():
    acc = metric.Accuracy()
    acc.update([np.array([0, 1])], [np.array([[0.9, 0.1], [0.2, 0.8]])])
    assert acc.get()[1] == 1.0
