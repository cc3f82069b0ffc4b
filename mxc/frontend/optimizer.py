"""``mx.optimizer``: weight update rules (MXNet 1.9.1's ``python/mxnet/optimizer/optimizer.py``).

An :class:`Optimizer` keeps the hyper-parameters (learning rate or scheduler, weight decay,
gradient rescaling and clipping, per-parameter multipliers) and the update counts; an
:class:`Updater` (``get_updater``) keeps one state per parameter index and is what Module,
the KVStore and gluon's Trainer call as ``updater(index, grad, weight)``.

Every update runs MXNet's fused operator (``sgd_mom_update``, ``adam_update``... of
:mod:`mxc.ir.ops.optimizer`): one kernel updating the weight and its states in place. The
optimizers call each op's ``_hyper_`` twin, which takes the hyper-parameters as a run-time
input, so a learning rate that changes every step (Adam's bias correction, schedulers) does not
compile a new kernel; the arithmetic is the op's, with MXNet's float32-rounded parameters.

MXNet's rules kept as they are:

* learning rate of index i: ``lr_scheduler(num_update)`` (or ``lr``) times the multiplier from
  ``param_dict[i].lr_mult``, else ``lr_mult[i]``, else ``lr_mult[idx2name[i]]`` (default 1);
  weight decay likewise with ``wd_mult``;
* ``set_wd_mult`` (run at construction): when ``param_idx2name`` is given (Module passes every
  parameter), parameters whose name ends neither in ``_weight`` nor in ``_gamma`` get
  ``wd_mult = 0`` (no weight decay on biases and BatchNorm beta); ``__lr_mult__`` /
  ``__wd_mult__`` attributes of the ``sym`` variables override, explicit arguments override
  both. Gluon's Trainer passes ``param_dict`` instead (its parameters' own multipliers, 1 by
  default: weight decay on every parameter);
* ``num_update`` is the largest per-index update count (counted from ``begin_num_update``),
  counted before the learning rate is read;
* ``clip_gradient`` is passed to the ops only when truthy (0 and None both disable it), except
  in AdaGrad/AdaDelta which test ``is not None`` like MXNet's Python code;
* AdaDelta (pure NDArray arithmetic in MXNet too) multiplies the caller's gradient by
  ``rescale_grad`` in place, as MXNet does;
* ``multi_precision=True`` keeps float32 master weights for float16 parameters (SGD and NAG with
  their ``mp_*`` ops, the others through the generic wrapper).

Differences: states are created with the weight's dtype (MXNet makes some float32, which its
ops then reject for float64 weights); sparse (row_sparse) gradients are updated densely (no
lazy update); MXNet's aggregated multi-tensor updates (``MXNET_OPTIMIZER_AGGREGATION_SIZE``)
are done one parameter at a time (same formulas). ``SignSGD`` is registered as a name of its
own (Signum without momentum).
"""
from __future__ import annotations

import math
import pickle
import warnings
from typing import ClassVar

import numpy

from ..base import MXNetError
from ..ir.ops import optimizer as _update_ops  # registers the fused update operators
from . import ndarray as nd
from .ndarray import NDArray, zeros

__all__ = [
    "LAMB",
    "NAG",
    "SGD",
    "AdaDelta",
    "AdaGrad",
    "Adam",
    "Ftrl",
    "Optimizer",
    "RMSProp",
    "SignSGD",
    "Signum",
    "Test",
    "Updater",
    "create",
    "get_updater",
    "register",
]


class UnknownOptimizerError(MXNetError, ValueError):
    """``create`` was given a name no optimizer is registered under (a ValueError in MXNet)."""


_HYPER_CACHE: dict = {}


def _fused(op: str, args: list, states: list, out, **attrs):
    """Run update op ``op`` (through its ``_hyper_`` twin) on NDArrays ``args`` (weight, grad,
    ...) and ``states`` (updated in place); ``attrs`` are the op's MXNet attributes."""
    ctx = args[0].context
    key = (op, tuple(attrs.items()), ctx)
    hit = _HYPER_CACHE.get(key)
    if hit is None:
        vec, switches = _update_ops.hyper_args(op, attrs)
        # the hyper vector is only read by the kernels: one NDArray per distinct setting
        hit = (nd.array(vec, ctx=ctx, dtype="float64"), switches, getattr(nd, "_hyper_" + op))
        if len(_HYPER_CACHE) >= 4096:
            _HYPER_CACHE.clear()
        _HYPER_CACHE[key] = hit
    hyper, switches, fn = hit
    return fn(*args, hyper, *states, out=out, switches=switches)


class Optimizer:
    """The base class of all optimizers.

    Parameters
    ----------
    rescale_grad : float
        Multiply the gradient with ``rescale_grad`` before updating (often ``1/batch_size``).
    param_idx2name : dict of int to str, optional
        Parameter names by index (enables the ``_weight``/``_gamma`` weight decay rule).
    wd : float
        Weight decay (L2 regularisation) coefficient.
    clip_gradient : float, optional
        Clip the (rescaled) gradient into ``[-clip_gradient, clip_gradient]``.
    learning_rate : float, optional
        The learning rate (0.01 when neither it nor ``lr_scheduler`` is given).
    lr_scheduler : LRScheduler, optional
        The learning rate schedule; a given ``learning_rate`` overwrites its ``base_lr``.
    sym : Symbol, optional
        The symbol whose variables' ``__lr_mult__``/``__wd_mult__`` attributes apply.
    begin_num_update : int
        The initial number of updates.
    multi_precision : bool
        Keep float32 master copies of float16 weights.
    param_dict : dict, optional
        Index to parameter objects with ``lr_mult``/``wd_mult`` (gluon's Trainer).
    """

    opt_registry: ClassVar[dict] = {}

    def __init__(self, rescale_grad=1., param_idx2name=None, wd=0., clip_gradient=None,
                 learning_rate=None, lr_scheduler=None, sym=None, begin_num_update=0,
                 multi_precision=False, param_dict=None):
        self.rescale_grad = rescale_grad
        self.lr_scheduler = lr_scheduler
        if self.lr_scheduler is None and learning_rate is None:
            learning_rate = 0.01
        self.lr = learning_rate
        if self.lr_scheduler is not None and learning_rate is not None and \
                self.lr_scheduler.base_lr != learning_rate:
            print(UserWarning("learning rate from ``lr_scheduler`` has been "
                              "overwritten by ``learning_rate`` in optimizer."))
            self.lr_scheduler.base_lr = learning_rate

        self.wd = wd
        self.lr_mult: dict = {}
        self.wd_mult: dict = {}
        self.begin_num_update = begin_num_update
        self.num_update = begin_num_update
        self._all_index_update_counts: dict = {0: {}}
        self._index_update_count = self._all_index_update_counts[0]
        self.clip_gradient = clip_gradient
        self.multi_precision = multi_precision
        self.aggregate_num = 0

        if param_idx2name is None:
            param_idx2name = {}
        assert isinstance(param_idx2name, dict), \
            "param_idx2name should be a dict of param indexes to names."
        self.idx2name = param_idx2name.copy()
        self.sym_info = (sym.attr_dict(), sym.list_arguments()) if sym is not None else ()
        self.param_dict = param_dict if param_dict else {}
        self.allow_np_array = False

        self.set_lr_mult({})
        self.set_wd_mult({})

    # -- registry ------------------------------------------------------------------------------
    @staticmethod
    def register(klass):
        """Register an optimizer class under its lower-cased class name (``create`` finds it).

        >>> @mx.optimizer.register
        ... class MyOptimizer(mx.optimizer.Optimizer):
        ...     pass
        """
        assert isinstance(klass, type)
        name = klass.__name__.lower()
        if name in Optimizer.opt_registry:
            warnings.warn(f"WARNING: New optimizer {klass.__module__}.{klass.__name__} is "
                          f"overriding existing optimizer "
                          f"{Optimizer.opt_registry[name].__module__}."
                          f"{Optimizer.opt_registry[name].__name__}")
        Optimizer.opt_registry[name] = klass
        return klass

    @staticmethod
    def create_optimizer(name, **kwargs):
        """An instance of the optimizer registered as ``name`` (case-insensitive)."""
        key = name.lower() if isinstance(name, str) else name
        if key in Optimizer.opt_registry:
            return Optimizer.opt_registry[key](**kwargs)
        known = ", ".join(sorted(Optimizer.opt_registry))
        raise UnknownOptimizerError(f"Cannot find optimizer {name}; known optimizers: {known}")

    # -- learning rate ---------------------------------------------------------------------------
    @property
    def learning_rate(self):
        if self.lr_scheduler is not None:
            return self.lr_scheduler(self.num_update)
        return self.lr

    def set_learning_rate(self, lr):
        """Set the learning rate (only without an lr_scheduler)."""
        if self.lr_scheduler is not None:
            raise UserWarning("LRScheduler of the optimizer has already been "
                              "defined. Note that set_learning_rate can mutate "
                              "the value of the learning rate of the optimizer "
                              "only when the LRScheduler of the optimizer is "
                              "undefined.")
        self.lr = lr

    def set_lr_scale(self, args_lrscale):  # pylint: disable=unused-argument
        """[DEPRECATED] Use set_lr_mult."""
        raise DeprecationWarning

    def set_lr_mult(self, args_lr_mult):
        """Set per-parameter learning rate multipliers (by name or index); ``__lr_mult__``
        attributes of ``sym``'s arguments are the defaults."""
        self.lr_mult = {}
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and "__lr_mult__" in attr[name]:
                    self.lr_mult[name] = float(attr[name]["__lr_mult__"])
        self.lr_mult.update(args_lr_mult)

    def set_wd_mult(self, args_wd_mult):
        """Set per-parameter weight decay multipliers (by name or index).

        Names in ``param_idx2name`` not ending in ``_weight`` or ``_gamma`` default to 0;
        ``__wd_mult__`` attributes of ``sym``'s arguments override, then ``args_wd_mult``."""
        self.wd_mult = {}
        for n in self.idx2name.values():
            if not n.endswith(("_weight", "_gamma")):
                self.wd_mult[n] = 0.0
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and "__wd_mult__" in attr[name]:
                    self.wd_mult[name] = float(attr[name]["__wd_mult__"])
        self.wd_mult.update(args_wd_mult)

    # -- counts, lr and wd per index ---------------------------------------------------------------
    def _set_current_context(self, device_id):
        """Select the update counts of device ``device_id`` (one set per device)."""
        if device_id not in self._all_index_update_counts:
            self._all_index_update_counts[device_id] = {}
        self._index_update_count = self._all_index_update_counts[device_id]

    def _update_count(self, index):
        """Count one update of ``index`` (an index or a list of them)."""
        if not isinstance(index, (list, tuple)):
            index = [index]
        for idx in index:
            if idx not in self._index_update_count:
                self._index_update_count[idx] = self.begin_num_update
            self._index_update_count[idx] += 1
            self.num_update = max(self._index_update_count[idx], self.num_update)

    def _get_lrs(self, indices):
        lr = self.lr_scheduler(self.num_update) if self.lr_scheduler is not None else self.lr
        lrs = [lr for _ in indices]
        for i, index in enumerate(indices):
            if index in self.param_dict:
                lrs[i] *= self.param_dict[index].lr_mult
            elif index in self.lr_mult:
                lrs[i] *= self.lr_mult[index]
            elif index in self.idx2name:
                lrs[i] *= self.lr_mult.get(self.idx2name[index], 1.0)
        return lrs

    def _get_lr(self, index):
        """The learning rate of parameter ``index`` (scheduler and multipliers applied)."""
        return self._get_lrs([index])[0]

    def _get_wds(self, indices):
        wds = [self.wd for _ in indices]
        for i, index in enumerate(indices):
            if index in self.param_dict:
                wds[i] *= self.param_dict[index].wd_mult
            elif index in self.wd_mult:
                wds[i] *= self.wd_mult[index]
            elif index in self.idx2name:
                wds[i] *= self.wd_mult.get(self.idx2name[index], 1.0)
        return wds

    def _get_wd(self, index):
        """The weight decay of parameter ``index`` (0 for non-weights when names are known)."""
        return self._get_wds([index])[0]

    # -- states and updates ----------------------------------------------------------------------
    def create_state(self, index, weight):
        """The optimizer state of one weight (None when stateless)."""

    def create_state_multi_precision(self, index, weight):
        """``create_state``, plus a float32 master copy for float16 weights when
        ``multi_precision``: ``(weight32, state)``."""
        if self.multi_precision and weight.dtype == numpy.float16:
            weight_master_copy = weight.astype(numpy.float32)
            return (weight_master_copy,) + (self.create_state(index, weight_master_copy),)
        if weight.dtype == numpy.float16 and not self.multi_precision:
            warnings.warn("Accumulating with float16 in optimizer can lead to "
                          "poor accuracy or slow convergence. "
                          "Consider using multi_precision=True option of the optimizer")
        return self.create_state(index, weight)

    def update(self, index, weight, grad, state):
        """Update ``weight`` (in place) from ``grad`` and ``state``."""
        raise NotImplementedError()

    def update_multi_precision(self, index, weight, grad, state):
        """``update``, through the float32 master copy for float16 weights when
        ``multi_precision``. Lists of indices/weights/grads/states update each in turn."""
        if isinstance(index, (list, tuple)):
            for i, w, g, s in zip(index, weight, grad, state):
                self.update_multi_precision(i, w, g, s)
            return
        if self.multi_precision and weight.dtype == numpy.float16:
            weight_master_copy = state[0]
            original_state = state[1]
            grad32 = grad.astype(numpy.float32)
            self.update(index, weight_master_copy, grad32, original_state)
            nd.cast(weight_master_copy, dtype=weight.dtype, out=weight)
        else:
            self.update(index, weight, grad, state)

    # -- pickling ---------------------------------------------------------------------------------
    def __getstate__(self):
        ret = self.__dict__.copy()
        # param_dict is not saved (the trainer sets it again)
        ret.pop("param_dict", None)
        return ret

    def __setstate__(self, state):
        self.__dict__ = state
        self.param_dict = {}


register = Optimizer.register  # pylint: disable=invalid-name
create = Optimizer.create_optimizer  # pylint: disable=invalid-name


def _kwargs(opt, momentum=None):
    kw = {"rescale_grad": opt.rescale_grad}
    if momentum is not None and momentum > 0:
        kw["momentum"] = momentum
    if opt.clip_gradient:
        kw["clip_gradient"] = opt.clip_gradient
    return kw


def _zeros_like(weight, dtype=None):
    return zeros(weight.shape, weight.context, dtype=dtype if dtype is not None else weight.dtype)


class _MomentumSGD(Optimizer):
    """State handling shared by SGD and NAG: a momentum buffer when ``momentum != 0``, and for
    float16 weights with ``multi_precision`` the pair ``(momentum or None, weight32)`` used by
    the ``mp_*`` update ops."""

    _op = "sgd_mom_update"
    _mp_op = "mp_sgd_mom_update"

    def create_state_multi_precision(self, index, weight):
        if self.multi_precision and weight.dtype == numpy.float16:
            weight_master_copy = weight.astype(numpy.float32)
            return (self.create_state(index, weight_master_copy), weight_master_copy)
        if weight.dtype == numpy.float16 and not self.multi_precision:
            warnings.warn("Accumulating with float16 in optimizer can lead to "
                          "poor accuracy or slow convergence. "
                          f"Consider using multi_precision=True option of the "
                          f"{type(self).__name__} optimizer")
        return self.create_state(index, weight)

    def create_state(self, index, weight):
        if self.momentum != 0.0:
            return _zeros_like(weight)
        return None

    def _extra(self) -> dict:
        return {}

    def _update_impl(self, index, weight, grad, state, multi_precision=False):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        kw = _kwargs(self, self.momentum)
        if not multi_precision:
            if state is not None:
                _fused(self._op, [weight, grad], [state], weight, lr=lr, wd=wd, **self._extra(),
                       **kw)
            else:
                _fused("sgd_update", [weight, grad], [], weight, lr=lr, wd=wd, **self._extra(),
                       **kw)
        elif state[0] is not None:
            _fused(self._mp_op, [weight, grad], [state[0], state[1]], weight,
                   lr=lr, wd=wd, **kw)
        else:
            _fused("mp_sgd_update", [weight, grad], [state[1]], weight, lr=lr, wd=wd, **kw)

    def update(self, index, weight, grad, state):
        self._update_impl(index, weight, grad, state, multi_precision=False)

    def update_multi_precision(self, index, weight, grad, state):
        if isinstance(index, (list, tuple)):
            for i, w, g, s in zip(index, weight, grad, state):
                self.update_multi_precision(i, w, g, s)
            return
        use_mp = self.multi_precision and weight.dtype == numpy.float16
        self._update_impl(index, weight, grad, state, multi_precision=use_mp)


@register
class SGD(_MomentumSGD):
    """SGD with momentum and weight decay (``sgd_mom_update`` / ``sgd_update``)::

        rescaled_grad = lr * (rescale_grad * clip(grad, clip_gradient) + wd * weight)
        state = momentum * state - rescaled_grad      (momentum > 0)
        weight = weight + state                       (weight - rescaled_grad without momentum)

    Parameters: ``momentum`` (0), ``lazy_update`` (True; no effect on dense gradients),
    ``multi_precision``.
    """

    def __init__(self, momentum=0.0, lazy_update=True, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.lazy_update = lazy_update

    def _extra(self) -> dict:
        return {"lazy_update": self.lazy_update}


@register
class NAG(_MomentumSGD):
    """Nesterov accelerated gradient (``nag_mom_update``; ``sgd_update`` without momentum)::

        state = momentum * state
        weight = weight - state + (momentum + 1) * (state - lr * (grad' + wd * weight))
        state = state - lr * (grad' + wd * weight)       with grad' = clip(rescale_grad * grad)
    """

    _op = "nag_mom_update"
    _mp_op = "mp_nag_mom_update"

    def __init__(self, momentum=0.0, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum


@register
class Signum(Optimizer):
    """Signum (sign of the momentum)::

        state = momentum * state + (1 - momentum) * (wd * weight + clip(rescale_grad * grad))
        weight = (1 - lr * wd_lh) * weight - lr * sign(state)

    without momentum: ``signsgd_update`` (sign of the raw gradient).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, wd_lh=0.0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum = momentum
        self.wd_lh = wd_lh

    def create_state(self, index, weight):
        if self.momentum != 0.0:
            return _zeros_like(weight)
        return None

    def _update_impl(self, index, weight, grad, state):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        kw = _kwargs(self, self.momentum)
        if self.wd_lh:
            kw["wd_lh"] = self.wd_lh
        if state is not None:
            _fused("signum_update", [weight, grad], [state], weight, lr=lr, wd=wd, **kw)
        else:
            _fused("signsgd_update", [weight, grad], [], weight, lr=lr, wd=wd, **kw)

    def update(self, index, weight, grad, state):
        self._update_impl(index, weight, grad, state)


@register
class SignSGD(Signum):
    """signSGD: ``weight = (1 - lr * wd) * weight - lr * sign(grad)`` (Signum without
    momentum; ``rescale_grad``/``clip_gradient`` do not change a sign)."""

    def __init__(self, learning_rate=0.01, **kwargs):
        kwargs.pop("momentum", None)
        super().__init__(learning_rate=learning_rate, momentum=0.0, **kwargs)


@register
class Adam(Optimizer):
    """Adam (``adam_update``, bias correction folded into the learning rate)::

        lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
        g = clip(rescale_grad * grad + wd * weight, clip_gradient)
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g**2
        weight = weight - lr_t * m / (sqrt(v) + epsilon)
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 lazy_update=True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lazy_update = lazy_update

    def create_state(self, index, weight):
        return (_zeros_like(weight), _zeros_like(weight))  # mean, variance

    def update(self, index, weight, grad, state):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        t = self._index_update_count[index]
        coef1 = 1. - self.beta1 ** t
        coef2 = 1. - self.beta2 ** t
        lr *= math.sqrt(coef2) / coef1
        kw = {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon,
              "rescale_grad": self.rescale_grad}
        if self.clip_gradient:
            kw["clip_gradient"] = self.clip_gradient
        mean, var = state
        _fused("adam_update", [weight, grad], [mean, var], weight,
               lazy_update=self.lazy_update, lr=lr, wd=wd, **kw)


@register
class AdaGrad(Optimizer):
    """AdaGrad::

        grad = clip(grad * rescale_grad, clip_gradient)
        history += square(grad)
        weight += (grad / sqrt(history + eps) + weight * wd) * -lr
    """

    def __init__(self, eps=1e-7, **kwargs):
        super().__init__(**kwargs)
        self.float_stable_eps = eps

    def create_state(self, index, weight):
        return _zeros_like(weight)  # history

    def update(self, index, weight, grad, state):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        kw = {"epsilon": self.float_stable_eps, "rescale_grad": self.rescale_grad}
        if self.clip_gradient is not None:
            kw["clip_gradient"] = self.clip_gradient
        _fused("adagrad_update", [weight, grad], [state], weight, lr=lr, wd=wd, **kw)


@register
class RMSProp(Optimizer):
    """RMSProp: Tieleman & Hinton (``rmsprop_update``) or, with ``centered=True``, Graves
    (``rmspropalex_update``); ``clip_weights`` clips the updated weights."""

    def __init__(self, learning_rate=0.001, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
                 centered=False, clip_weights=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.gamma1 = gamma1
        self.gamma2 = gamma2
        self.centered = centered
        self.epsilon = epsilon
        self.clip_weights = clip_weights

    def create_state(self, index, weight):
        if self.centered:
            return (_zeros_like(weight), _zeros_like(weight), _zeros_like(weight))  # n, g, delta
        return (_zeros_like(weight),)  # n

    def update(self, index, weight, grad, state):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        kw = {"gamma1": self.gamma1, "epsilon": self.epsilon, "rescale_grad": self.rescale_grad}
        if self.centered:
            kw["gamma2"] = self.gamma2
        if self.clip_gradient:
            kw["clip_gradient"] = self.clip_gradient
        if self.clip_weights:
            kw["clip_weights"] = self.clip_weights
        if not self.centered:
            (n,) = state
            _fused("rmsprop_update", [weight, grad], [n], weight, lr=lr, wd=wd, **kw)
        else:
            n, g, delta = state
            _fused("rmspropalex_update", [weight, grad], [n, g, delta], weight, lr=lr, wd=wd,
                   **kw)


@register
class AdaDelta(Optimizer):
    """AdaDelta (NDArray arithmetic, as in MXNet; no learning rate)::

        grad = clip(grad * rescale_grad, clip_gradient)     (grad is scaled in place)
        acc_g = rho * acc_g + (1 - rho) * grad**2
        delta = sqrt(acc_delta + epsilon) / sqrt(acc_g + epsilon) * grad
        acc_delta = rho * acc_delta + (1 - rho) * delta**2
        weight -= delta + wd * weight
    """

    def __init__(self, rho=0.90, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def create_state(self, index, weight):
        return (_zeros_like(weight), _zeros_like(weight))  # accumulated g, accumulated delta

    def update(self, index, weight, grad, state):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        wd = self._get_wd(index)
        self._update_count(index)
        grad *= self.rescale_grad
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        acc_g, acc_delta = state
        acc_g[:] *= self.rho
        acc_g[:] += (1. - self.rho) * grad * grad
        current_delta = nd.sqrt(acc_delta + self.epsilon) / nd.sqrt(acc_g + self.epsilon) * grad
        acc_delta[:] *= self.rho
        acc_delta[:] += (1. - self.rho) * current_delta * current_delta
        weight[:] -= current_delta + wd * weight


@register
class Ftrl(Optimizer):
    """FTRL-Proximal (``ftrl_update``)::

        g = clip(rescale_grad * grad)
        z += g - (sqrt(n + g**2) - sqrt(n)) * weight / lr;  n += g**2
        weight = (sign(z) * lamda1 - z) / ((beta + sqrt(n)) / lr + wd) * (|z| > lamda1)
    """

    def __init__(self, lamda1=0.01, learning_rate=0.1, beta=1, **kwargs):
        super().__init__(**kwargs)
        self.lamda1 = lamda1
        self.beta = beta
        self.lr = learning_rate

    def create_state(self, index, weight):
        return (_zeros_like(weight), _zeros_like(weight))  # z, n

    def update(self, index, weight, grad, state):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        self._update_count(index)
        wd = self._get_wd(index)
        lr = self._get_lr(index)
        kw = {"lamda1": self.lamda1, "beta": self.beta, "rescale_grad": self.rescale_grad}
        if self.clip_gradient:
            kw["clip_gradient"] = self.clip_gradient
        z, n = state
        _fused("ftrl_update", [weight, grad], [z, n], weight, lr=lr, wd=wd, **kw)


@register
class LAMB(Optimizer):
    """LAMB (``lamb_update_phase1`` then ``lamb_update_phase2`` with the norms of the weight
    and of the phase-1 direction)."""

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-6,
                 lower_bound=None, upper_bound=None, bias_correction=True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound
        self.bias_correction = bias_correction

    def create_state(self, index, weight):
        return (_zeros_like(weight), _zeros_like(weight))  # mean, var

    def update(self, index, weight, grad, state):
        assert isinstance(weight, NDArray)
        assert isinstance(grad, NDArray)
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        t = self._index_update_count[index]
        kw = {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon,
              "bias_correction": self.bias_correction, "t": t,
              "rescale_grad": self.rescale_grad}
        if self.clip_gradient:
            kw["clip_gradient"] = self.clip_gradient
        mean, var = state
        g = _fused("lamb_update_phase1", [weight, grad], [mean, var], None, wd=wd, **kw)
        kw = {}
        if self.lower_bound:
            kw["lower_bound"] = self.lower_bound
        if self.upper_bound:
            kw["upper_bound"] = self.upper_bound
        r_1 = weight.norm()
        r_2 = g.norm()
        _fused("lamb_update_phase2", [weight, g, r_1, r_2], [], weight, lr=lr, **kw)


@register
class Test(Optimizer):
    """The test optimizer: ``weight += rescale_grad * grad``; the state copies the weight."""

    def create_state(self, index, weight):
        return zeros(weight.shape, weight.context)

    def update(self, index, weight, grad, state):
        weight[:] += grad * self.rescale_grad
        state[:] = weight


# ---------------------------------------------------------------------------------------------
# updater
# ---------------------------------------------------------------------------------------------
class Updater:
    """Applies an optimizer by parameter index, creating each index's state on first use."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.states: dict = {}
        self.states_synced: dict = {}
        self.aggregate_updates = optimizer.aggregate_num > 0

    def __call__(self, index, grad, weight):
        """Update ``weight`` (in place) from ``grad``: one index or lists of them."""
        if not isinstance(index, (list, tuple)):
            indices, grads, weights = [index], [grad], [weight]
        else:
            indices, grads, weights = list(index), list(grad), list(weight)
        if weights:
            self.optimizer._set_current_context(weights[0].context.device_id)
        for i, idx in enumerate(indices):
            if isinstance(idx, bytes):  # names from the C API come as bytes
                indices[i] = idx = idx.decode()
            if idx not in self.states:
                self.states[idx] = self.optimizer.create_state_multi_precision(idx, weights[i])
                self.states_synced[idx] = True
            elif not self.states_synced[idx]:
                self.states[idx] = self.sync_state_context(self.states[idx], weights[i].context)
                self.states_synced[idx] = True
        for i, w, g in zip(indices, weights, grads):
            self.optimizer.update_multi_precision(i, w, g, self.states[i])

    def sync_state_context(self, state, context):
        """``state`` (an NDArray or nested tuples/lists of them) on ``context``."""
        if isinstance(state, NDArray):
            return state.as_in_context(context)
        if isinstance(state, (tuple, list)):
            synced = (self.sync_state_context(i, context) for i in state)
            return tuple(synced) if isinstance(state, tuple) else list(synced)
        return state

    def set_states(self, states):
        """Restore states from ``get_states``' bytes (with the optimizer if it was saved)."""
        states = pickle.loads(states)
        if isinstance(states, tuple) and len(states) == 2:
            self.states, self.optimizer = states
        else:
            self.states = states
        self.states_synced = dict.fromkeys(self.states.keys(), False)

    def get_states(self, dump_optimizer=False):
        """The pickled states (``(states, optimizer)`` when ``dump_optimizer``)."""
        return pickle.dumps((self.states, self.optimizer) if dump_optimizer else self.states)


def get_updater(optimizer):
    """An :class:`Updater` applying ``optimizer``."""
    return Updater(optimizer)
