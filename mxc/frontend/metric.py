"""``mx.metric``: MXNet 1.x's online evaluation metrics.

A metric accumulates ``sum_metric`` / ``num_inst`` over ``update(labels, preds)`` calls
(lists of NDArrays, or single NDArrays) and reports ``get() -> (name, value)``. Metrics with
global statistics also keep ``global_sum_metric`` / ``global_num_inst``, which survive
``reset_local()`` (what ``Module.fit`` calls between logging intervals). The numerics follow
MXNet 1.9's ``python/mxnet/metric.py``: values are computed in numpy from ``asnumpy()``.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy

from ..base import MXNetError, numeric_types, string_types

__all__ = [
    "F1",
    "MAE",
    "MCC",
    "MSE",
    "RMSE",
    "Accuracy",
    "Caffe",
    "CompositeEvalMetric",
    "CrossEntropy",
    "CustomMetric",
    "EvalMetric",
    "Loss",
    "NegativeLogLikelihood",
    "PearsonCorrelation",
    "Perplexity",
    "TopKAccuracy",
    "Torch",
    "alias",
    "check_label_shapes",
    "create",
    "np",
    "register",
]


class MetricError(MXNetError, AssertionError):
    """A failed check (an AssertionError in MXNet; both classes here)."""


def _is_nd(x) -> bool:
    return hasattr(x, "asnumpy") and hasattr(x, "shape") and not isinstance(x, numpy.ndarray)


def _asnumpy(x) -> numpy.ndarray:
    """The values of an NDArray (or array-like) as numpy."""
    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    a = numpy.asarray(x)
    if a.dtype.names is not None and a.dtype.names == ("bfloat16",):   # mxc's bfloat16 view
        a = (a.view(numpy.uint16).astype(numpy.uint32) << 16).view(numpy.float32)
    return a


def check_label_shapes(labels, preds, wrap=False, shape=False):
    """Check that labels and preds have the same length (or, with ``shape``, the same
    shape); with ``wrap``, a single NDArray becomes a one-element list."""
    if not shape:
        label_shape, pred_shape = len(labels), len(preds)
    else:
        label_shape, pred_shape = labels.shape, preds.shape
    if label_shape != pred_shape:
        raise ValueError(f"Shape of labels {label_shape} does not match shape of predictions "
                         f"{pred_shape}")
    if wrap:
        if _is_nd(labels) or isinstance(labels, numpy.ndarray):
            labels = [labels]
        if _is_nd(preds) or isinstance(preds, numpy.ndarray):
            preds = [preds]
    return labels, preds


class EvalMetric:
    """Base class of evaluation metrics.

    Parameters: ``name`` (display name), ``output_names``/``label_names`` (which entries
    ``update_dict`` uses; all by default).
    """

    def __init__(self, name, output_names=None, label_names=None, **kwargs):
        self.name = str(name)
        self.output_names = output_names
        self.label_names = label_names
        self._has_global_stats = kwargs.pop("has_global_stats", False)
        self._kwargs = kwargs
        self.reset()

    def __str__(self):
        return f"EvalMetric: {dict(self.get_name_value())}"

    def get_config(self):
        """A dict from which ``mx.metric.create(**config)`` rebuilds the metric."""
        config = self._kwargs.copy()
        config.update({
            "metric": self.__class__.__name__,
            "name": self.name,
            "output_names": self.output_names,
            "label_names": self.label_names})
        return config

    def update_dict(self, label, pred):
        """Update with name -> NDArray dicts, picking ``label_names``/``output_names``."""
        if self.output_names is not None:
            pred = [pred[name] for name in self.output_names]
        else:
            pred = list(pred.values())
        if self.label_names is not None:
            label = [label[name] for name in self.label_names]
        else:
            label = list(label.values())
        self.update(label, pred)

    def update(self, labels, preds):
        """Accumulate a batch: ``labels`` and ``preds`` are lists of NDArrays."""
        raise NotImplementedError()

    def reset(self):
        """Clear local and global statistics."""
        self.num_inst = 0
        self.sum_metric = 0.0
        self.global_num_inst = 0
        self.global_sum_metric = 0.0

    def reset_local(self):
        """Clear the local statistics only."""
        self.num_inst = 0
        self.sum_metric = 0.0

    def get(self):
        """``(name, value)`` of the local statistics (NaN before any update)."""
        if self.num_inst == 0:
            return (self.name, float("nan"))
        return (self.name, self.sum_metric / self.num_inst)

    def get_global(self):
        """``(name, value)`` of the global statistics (= ``get()`` for metrics without)."""
        if self._has_global_stats:
            if self.global_num_inst == 0:
                return (self.name, float("nan"))
            return (self.name, self.global_sum_metric / self.global_num_inst)
        return self.get()

    def get_name_value(self):
        """``[(name, value), ...]``."""
        name, value = self.get()
        if not isinstance(name, list):
            name = [name]
        if not isinstance(value, list):
            value = [value]
        return list(zip(name, value))

    def get_global_name_value(self):
        """``[(name, global value), ...]``."""
        if self._has_global_stats:
            name, value = self.get_global()
            if not isinstance(name, list):
                name = [name]
            if not isinstance(value, list):
                value = [value]
            return list(zip(name, value))
        return self.get_name_value()

    def _add(self, value, count):
        self.sum_metric += value
        self.global_sum_metric += value
        self.num_inst += count
        self.global_num_inst += count


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
_METRIC_REGISTRY: dict = {}


def register(klass, name=None):
    """Register an EvalMetric subclass under its lower-cased class name (or ``name``)."""
    if not (isinstance(klass, type) and issubclass(klass, EvalMetric)):
        raise TypeError("Can only register subclass of EvalMetric")
    if name is None:
        name = klass.__name__.lower()
    if name in _METRIC_REGISTRY and _METRIC_REGISTRY[name] is not klass:
        import warnings
        old = _METRIC_REGISTRY[name]
        warnings.warn(f"New metric {klass.__module__}.{klass.__name__} registered with name "
                      f"{name} is overriding existing metric {old.__module__}.{old.__name__}",
                      UserWarning, stacklevel=2)
    _METRIC_REGISTRY[name] = klass
    return klass


def alias(*aliases):
    """Register the decorated EvalMetric subclass under further names."""
    def reg(klass):
        for name in aliases:
            register(klass, name)
        return klass
    return reg


def _create(*args, **kwargs):
    import json
    if args:
        name, args = args[0], args[1:]
    else:
        try:
            name = kwargs.pop("metric")
        except KeyError:
            raise MetricError("create: a metric name is required") from None
    if isinstance(name, EvalMetric):
        if args or kwargs:
            raise MetricError("metric is already an instance. Additional arguments are invalid")
        return name
    if isinstance(name, dict):
        return _create(**name)
    if not isinstance(name, string_types):
        raise MetricError(f"metric must be of string type, got {type(name).__name__}")
    if name.startswith("["):
        if args or kwargs:
            raise MetricError("create: no extra arguments allowed with a JSON metric")
        name, kwargs = json.loads(name)
        return _create(name, **kwargs)
    if name.startswith("{"):
        if args or kwargs:
            raise MetricError("create: no extra arguments allowed with a JSON metric")
        return _create(**json.loads(name))
    key = name.lower()
    if key not in _METRIC_REGISTRY:
        raise MetricError(f"{name} is not registered. Please register with metric.register "
                          f"first (known: {', '.join(sorted(_METRIC_REGISTRY))})")
    return _METRIC_REGISTRY[key](*args, **kwargs)


def create(metric, *args, **kwargs):
    """A metric from a name (``'acc'``, ``'ce'``, ...), an EvalMetric (returned as is), a
    list of those (a :class:`CompositeEvalMetric`), or a function ``feval(label, pred)``
    (a :class:`CustomMetric`)."""
    if callable(metric) and not isinstance(metric, EvalMetric):
        return CustomMetric(metric, *args, **kwargs)
    if isinstance(metric, list):
        composite_metric = CompositeEvalMetric()
        for child_metric in metric:
            composite_metric.add(create(child_metric, *args, **kwargs))
        return composite_metric
    return _create(metric, *args, **kwargs)


@register
@alias("composite")
class CompositeEvalMetric(EvalMetric):
    """Several metrics updated together; ``get()`` returns lists of names and values."""

    def __init__(self, metrics=None, name="composite", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        if metrics is None:
            metrics = []
        self.metrics = [create(i) for i in metrics]

    def add(self, metric):
        """Add a child metric (anything :func:`create` accepts)."""
        self.metrics.append(create(metric))

    def get_metric(self, index):
        """The child metric at ``index``."""
        try:
            return self.metrics[index]
        except IndexError:
            return ValueError(f"Metric index {index} is out of range 0 and {len(self.metrics)}")

    def update_dict(self, labels, preds):
        if self.label_names is not None:
            labels = OrderedDict([i for i in labels.items() if i[0] in self.label_names])
        if self.output_names is not None:
            preds = OrderedDict([i for i in preds.items() if i[0] in self.output_names])
        for metric in self.metrics:
            metric.update_dict(labels, preds)

    def update(self, labels, preds):
        for metric in self.metrics:
            metric.update(labels, preds)

    def reset(self):
        try:
            for metric in self.metrics:
                metric.reset()
        except AttributeError:
            pass

    def reset_local(self):
        try:
            for metric in self.metrics:
                metric.reset_local()
        except AttributeError:
            pass

    def _collect(self, getter):
        names, values = [], []
        for metric in self.metrics:
            name, value = getter(metric)
            if isinstance(name, string_types):
                name = [name]
            if isinstance(value, (*numeric_types, numpy.generic)):
                value = [value]
            names.extend(name)
            values.extend(value)
        return (names, values)

    def get(self):
        return self._collect(lambda m: m.get())

    def get_global(self):
        return self._collect(lambda m: m.get_global())

    def get_config(self):
        config = super().get_config()
        config.update({"metrics": [i.get_config() for i in self.metrics]})
        return config


# ------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------
@register
@alias("acc")
class Accuracy(EvalMetric):
    """Fraction of correct predictions; a prediction whose shape differs from the label's
    is reduced by argmax over ``axis`` first.

    >>> acc = mx.metric.Accuracy()
    >>> acc.update([mx.nd.array([0, 1, 1])], [mx.nd.array([[0.3, 0.7], [0, 1.], [0.4, 0.6]])])
    >>> acc.get()
    ('accuracy', 0.6666666666666666)
    """

    def __init__(self, axis=1, name="accuracy", output_names=None, label_names=None):
        super().__init__(name, axis=axis, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.axis = axis

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred_label in zip(labels, preds):
            pred = _asnumpy(pred_label)
            lab = _asnumpy(label)
            if pred.shape != lab.shape:
                pred = numpy.argmax(pred, axis=self.axis)
            pred = pred.astype("int32").ravel()
            lab = lab.astype("int32").ravel()
            check_label_shapes(lab, pred)
            num_correct = int((pred == lab).sum())
            self._add(num_correct, len(pred))


@register
@alias("top_k_accuracy", "top_k_acc")
class TopKAccuracy(EvalMetric):
    """A prediction counts as correct when the label is among the ``top_k`` highest scores
    (the name becomes ``top_k_accuracy_<k>``)."""

    def __init__(self, top_k=1, name="top_k_accuracy", output_names=None, label_names=None):
        super().__init__(name, top_k=top_k, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.top_k = top_k
        if not self.top_k > 1:
            raise MetricError("Please use Accuracy if top_k is no more than 1")
        self.name += f"_{self.top_k}"

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred_label in zip(labels, preds):
            pred = _asnumpy(pred_label).astype("float32")
            if pred.ndim > 2:
                raise MetricError("Predictions should be no more than 2 dims")
            kth = -min(self.top_k, pred.shape[-1]) if pred.shape[-1] else -1
            # argpartition: the last top_k columns hold the top_k classes (any order)
            pred = numpy.argpartition(pred, kth)
            lab = _asnumpy(label).astype("int32")
            check_label_shapes(lab, pred)
            num_samples = pred.shape[0]
            if pred.ndim == 1:
                self._add(int((pred.ravel() == lab.ravel()).sum()), 0)
            elif pred.ndim == 2:
                num_classes = pred.shape[1]
                top_k = min(num_classes, self.top_k)
                for j in range(top_k):
                    num_correct = int((pred[:, num_classes - 1 - j].ravel() == lab.ravel()).sum())
                    self._add(num_correct, 0)
            self._add(0, num_samples)


class _BinaryClassificationMetrics:
    """Confusion-matrix counts of a binary classifier (local and global)."""

    def __init__(self):
        self.reset_stats()

    def update_binary_stats(self, label, pred):
        pred = _asnumpy(pred)
        label = _asnumpy(label).astype("int32")
        pred_label = numpy.argmax(pred, axis=1)
        check_label_shapes(label, pred)
        if len(numpy.unique(label)) > 2:
            raise ValueError(f"{self.__class__.__name__} currently only supports binary "
                             "classification.")
        pred_true = pred_label == 1
        pred_false = ~pred_true
        label_true = label == 1
        label_false = ~label_true
        true_pos = int((pred_true & label_true).sum())
        false_pos = int((pred_true & label_false).sum())
        false_neg = int((pred_false & label_true).sum())
        true_neg = int((pred_false & label_false).sum())
        self.true_positives += true_pos
        self.global_true_positives += true_pos
        self.false_positives += false_pos
        self.global_false_positives += false_pos
        self.false_negatives += false_neg
        self.global_false_negatives += false_neg
        self.true_negatives += true_neg
        self.global_true_negatives += true_neg

    @staticmethod
    def _precision(tp, fp):
        return tp / (tp + fp) if tp + fp > 0 else 0.0

    @staticmethod
    def _recall(tp, fn):
        return tp / (tp + fn) if tp + fn > 0 else 0.0

    @staticmethod
    def _fscore(p, r):
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def precision(self):
        return self._precision(self.true_positives, self.false_positives)

    @property
    def global_precision(self):
        return self._precision(self.global_true_positives, self.global_false_positives)

    @property
    def recall(self):
        return self._recall(self.true_positives, self.false_negatives)

    @property
    def global_recall(self):
        return self._recall(self.global_true_positives, self.global_false_negatives)

    @property
    def fscore(self):
        return self._fscore(self.precision, self.recall)

    @property
    def global_fscore(self):
        return self._fscore(self.global_precision, self.global_recall)

    def matthewscc(self, use_global=False):
        """Matthews correlation coefficient (zero factors of the denominator skipped)."""
        if use_global:
            if not self.global_total_examples:
                return 0.0
            tp, fp = self.global_true_positives, self.global_false_positives
            tn, fn = self.global_true_negatives, self.global_false_negatives
        else:
            if not self.total_examples:
                return 0.0
            tp, fp = self.true_positives, self.false_positives
            tn, fn = self.true_negatives, self.false_negatives
        terms = [(tp + fp), (tp + fn), (tn + fp), (tn + fn)]
        denom = 1.0
        for t in filter(lambda t: t != 0.0, terms):
            denom *= t
        return ((tp * tn) - (fp * fn)) / math.sqrt(denom)

    @property
    def total_examples(self):
        return (self.false_negatives + self.false_positives + self.true_negatives
                + self.true_positives)

    @property
    def global_total_examples(self):
        return (self.global_false_negatives + self.global_false_positives
                + self.global_true_negatives + self.global_true_positives)

    def local_reset_stats(self):
        self.false_positives = 0
        self.false_negatives = 0
        self.true_positives = 0
        self.true_negatives = 0

    def reset_stats(self):
        self.local_reset_stats()
        self.global_false_positives = 0
        self.global_false_negatives = 0
        self.global_true_positives = 0
        self.global_true_negatives = 0


class _BinaryMetric(EvalMetric):
    """F1 / MCC: ``average='macro'`` averages per-batch scores, 'micro' scores all counts."""

    def __init__(self, name, output_names, label_names, average):
        self.average = average
        self.metrics = _BinaryClassificationMetrics()
        super().__init__(name=name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)

    def _score(self, use_global):
        raise NotImplementedError

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            self.metrics.update_binary_stats(label, pred)
        if self.average == "macro":
            self.sum_metric += self._score(False)
            self.global_sum_metric += self._score(True)
            self.num_inst += 1
            self.global_num_inst += 1
            self.metrics.reset_stats()
        else:
            self.sum_metric = self._score(False) * self.metrics.total_examples
            self.global_sum_metric = self._score(True) * self.metrics.global_total_examples
            self.num_inst = self.metrics.total_examples
            self.global_num_inst = self.metrics.global_total_examples

    def reset(self):
        self.sum_metric = 0.0
        self.num_inst = 0
        self.global_num_inst = 0
        self.global_sum_metric = 0.0
        self.metrics.reset_stats()

    def reset_local(self):
        self.sum_metric = 0.0
        self.num_inst = 0
        self.metrics.local_reset_stats()


@register
class F1(_BinaryMetric):
    """F1 score of a binary classifier (class 1 positive; preds are (N, 2) scores)."""

    def __init__(self, name="f1", output_names=None, label_names=None, average="macro"):
        super().__init__(name, output_names, label_names, average)

    def _score(self, use_global):
        return self.metrics.global_fscore if use_global else self.metrics.fscore


@register
class MCC(_BinaryMetric):
    """Matthews correlation coefficient of a binary classifier."""

    def __init__(self, name="mcc", output_names=None, label_names=None, average="macro"):
        super().__init__(name, output_names, label_names, average)

    def _score(self, use_global):
        return self.metrics.matthewscc(use_global)


@register
class Perplexity(EvalMetric):
    """exp(mean negative log-likelihood of the label under ``preds``); labels equal to
    ``ignore_label`` are skipped. ``axis`` is the class axis of the predictions."""

    def __init__(self, ignore_label, axis=-1, name="perplexity", output_names=None,
                 label_names=None):
        super().__init__(name, ignore_label=ignore_label, output_names=output_names,
                         label_names=label_names, has_global_stats=True)
        self.ignore_label = ignore_label
        self.axis = axis

    def update(self, labels, preds):
        if len(labels) != len(preds):
            raise MetricError(f"Perplexity: {len(labels)} labels vs {len(preds)} predictions")
        loss = 0.0
        num = 0
        for label, pred in zip(labels, preds):
            p = _asnumpy(pred)
            lab = _asnumpy(label)
            if lab.size != p.size / p.shape[self.axis]:
                raise MetricError(f"shape mismatch: {lab.shape} vs. {p.shape}")
            lab = lab.reshape((lab.size,))
            pm = numpy.moveaxis(p, self.axis, -1).reshape(-1, p.shape[self.axis])
            idx = lab.astype("int32")
            # MXNet's pick clips out-of-range indices
            idx = numpy.clip(idx, 0, pm.shape[1] - 1)
            picked = pm[numpy.arange(pm.shape[0]), idx]
            if self.ignore_label is not None:
                ignore = (lab == self.ignore_label).astype(picked.dtype)
                num -= int(ignore.sum())
                picked = picked * (1 - ignore) + ignore
            loss -= float(numpy.sum(numpy.log(numpy.maximum(picked.dtype.type(1e-10), picked)),
                                    dtype=picked.dtype))
            num += picked.size
        self._add(loss, num)

    def get(self):
        if self.num_inst == 0:
            return (self.name, float("nan"))
        return (self.name, math.exp(self.sum_metric / self.num_inst))

    def get_global(self):
        if self.global_num_inst == 0:
            return (self.name, float("nan"))
        return (self.name, math.exp(self.global_sum_metric / self.global_num_inst))


# ------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------
def _as_column(a):
    return a.reshape(a.shape[0], 1) if a.ndim == 1 else a


class _Regression(EvalMetric):
    def __init__(self, name, output_names, label_names):
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)

    def _value(self, label, pred):
        raise NotImplementedError

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            lab = _as_column(_asnumpy(label))
            p = _as_column(_asnumpy(pred))
            self._add(self._value(lab, p), 1)


@register
class MAE(_Regression):
    """Mean absolute error, averaged per batch (1-D labels/preds are made columns)."""

    def __init__(self, name="mae", output_names=None, label_names=None):
        super().__init__(name, output_names, label_names)

    def _value(self, label, pred):
        return numpy.abs(label - pred).mean()


@register
class MSE(_Regression):
    """Mean squared error, averaged per batch."""

    def __init__(self, name="mse", output_names=None, label_names=None):
        super().__init__(name, output_names, label_names)

    def _value(self, label, pred):
        return ((label - pred) ** 2.0).mean()


@register
class RMSE(_Regression):
    """Root mean squared error of each batch, averaged over batches."""

    def __init__(self, name="rmse", output_names=None, label_names=None):
        super().__init__(name, output_names, label_names)

    def _value(self, label, pred):
        return numpy.sqrt(((label - pred) ** 2.0).mean())


@register
@alias("ce")
class CrossEntropy(EvalMetric):
    """Mean of -log(p[label] + eps) over the samples."""

    def __init__(self, eps=1e-12, name="cross-entropy", output_names=None, label_names=None):
        super().__init__(name, eps=eps, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.eps = eps

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            lab = _asnumpy(label).ravel()
            p = _asnumpy(pred)
            if lab.shape[0] != p.shape[0]:
                raise MetricError(f"CrossEntropy: {lab.shape[0]} labels vs {p.shape[0]} "
                                  "predictions")
            prob = p[numpy.arange(lab.shape[0]), numpy.int64(lab)]
            self._add((-numpy.log(prob + self.eps)).sum(), lab.shape[0])


@register
@alias("nll_loss")
class NegativeLogLikelihood(EvalMetric):
    """Mean negative log-likelihood -log(p[label] + eps)."""

    def __init__(self, eps=1e-12, name="nll-loss", output_names=None, label_names=None):
        super().__init__(name, eps=eps, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.eps = eps

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            lab = _asnumpy(label).ravel()
            p = _asnumpy(pred)
            num_examples = p.shape[0]
            if lab.shape[0] != num_examples:
                raise MetricError(f"({lab.shape[0]}, {num_examples})")
            prob = p[numpy.arange(num_examples, dtype=numpy.int64), numpy.int64(lab)]
            self._add((-numpy.log(prob + self.eps)).sum(), num_examples)


@register
@alias("pearsonr")
class PearsonCorrelation(EvalMetric):
    """Pearson correlation of labels and predictions: 'macro' averages per-batch
    coefficients, 'micro' computes one coefficient over everything seen (streaming)."""

    def __init__(self, name="pearsonr", output_names=None, label_names=None, average="macro"):
        self.average = average
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        if self.average == "micro":
            self.reset_micro()

    def reset_micro(self):
        self._sse_p = 0.0
        self._mean_p = 0.0
        self._sse_l = 0.0
        self._mean_l = 0.0
        self._pred_nums = 0
        self._label_nums = 0
        self._conv = 0.0

    def reset(self):
        self.num_inst = 0
        self.sum_metric = 0.0
        self.global_num_inst = 0
        self.global_sum_metric = 0.0
        if self.average == "micro":
            self.reset_micro()

    @staticmethod
    def update_variance(new_values, *aggregate):
        """Welford's streaming update of (count, mean, sum of squared deviations)."""
        count, mean, m_2 = aggregate
        count += len(new_values)
        delta = new_values - mean
        mean += numpy.sum(delta / count)
        delta_2 = new_values - mean
        m_2 += numpy.sum(delta * delta_2)
        return count, mean, m_2

    def update_cov(self, label, pred):
        self._conv = self._conv + numpy.sum((label - self._mean_l) * (pred - self._mean_p))

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            lab = _asnumpy(label)
            p = _asnumpy(pred)
            check_label_shapes(lab, p, False, True)
            lab = lab.ravel().astype(numpy.float64)
            p = p.ravel().astype(numpy.float64)
            if self.average == "macro":
                self._add(numpy.corrcoef(p, lab)[0, 1], 1)
            else:
                self.global_num_inst += 1
                self.num_inst += 1
                self._label_nums, self._mean_l, self._sse_l = self.update_variance(
                    lab, self._label_nums, self._mean_l, self._sse_l)
                self.update_cov(lab, p)
                self._pred_nums, self._mean_p, self._sse_p = self.update_variance(
                    p, self._pred_nums, self._mean_p, self._sse_p)

    def get(self):
        if self.num_inst == 0:
            return (self.name, float("nan"))
        if self.average == "macro":
            return (self.name, self.sum_metric / self.num_inst)
        n = self._label_nums
        pearsonr = self._conv / ((n - 1) * numpy.sqrt(self._sse_p / (n - 1))
                                 * numpy.sqrt(self._sse_l / (n - 1)))
        return (self.name, float(pearsonr))

    def get_global(self):
        if self.average == "micro":
            return self.get()
        return super().get_global()


@register
class Loss(EvalMetric):
    """The mean of the given outputs (loss values); labels are ignored."""

    def __init__(self, name="loss", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)

    def update(self, _, preds):
        if _is_nd(preds) or isinstance(preds, numpy.ndarray):
            preds = [preds]
        for pred in preds:
            p = _asnumpy(pred)
            self._add(float(numpy.sum(p)), p.size)


@register
class Torch(Loss):
    """Dummy metric for torch criterions (a :class:`Loss`)."""

    def __init__(self, name="torch", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names)


@register
class Caffe(Loss):
    """Dummy metric for caffe criterions (a :class:`Loss`)."""

    def __init__(self, name="caffe", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names)


@register
class CustomMetric(EvalMetric):
    """A metric from ``feval(label, pred)`` on numpy arrays, returning a value (averaged over
    calls) or ``(sum_metric, num_inst)``."""

    def __init__(self, feval, name=None, allow_extra_outputs=False, output_names=None,
                 label_names=None):
        if name is None:
            name = feval.__name__
            if name.find("<") != -1:
                name = f"custom({name})"
        super().__init__(name, feval=feval, allow_extra_outputs=allow_extra_outputs,
                         output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self._feval = feval
        self._allow_extra_outputs = allow_extra_outputs

    def update(self, labels, preds):
        if not self._allow_extra_outputs:
            labels, preds = check_label_shapes(labels, preds, True)
        for pred, label in zip(preds, labels):
            reval = self._feval(_asnumpy(label), _asnumpy(pred))
            if isinstance(reval, tuple):
                sum_metric, num_inst = reval
                self._add(sum_metric, num_inst)
            else:
                self._add(reval, 1)

    def get_config(self):
        raise NotImplementedError("CustomMetric cannot be serialized")


def np(numpy_feval, name=None, allow_extra_outputs=False):
    """A :class:`CustomMetric` from a numpy function ``feval(label, pred)``."""
    def feval(label, pred):
        return numpy_feval(label, pred)
    feval.__name__ = numpy_feval.__name__
    return CustomMetric(feval, name, allow_extra_outputs)
