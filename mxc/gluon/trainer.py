"""``gluon.Trainer``: applies an optimizer to a set of Parameters (MXNet 1.x semantics).

``step(batch_size)`` sets the optimizer's ``rescale_grad`` to ``scale / batch_size``, reduces
gradients across contexts (through a KVStore when there are several contexts or a
distributed store), then updates every parameter with one updater per context. The optimizer
sees each parameter by its index, with ``param_dict`` mapping index -> Parameter so that a
parameter's ``lr_mult`` / ``wd_mult`` apply (Gluon parameters default to 1 for both: weight
decay applies to every parameter, biases included).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..base import MXNetError
from . import _autograd as ag
from .parameter import Parameter, ParameterDict

__all__ = ["Trainer"]


def _opt():
    from ..frontend import optimizer
    return optimizer


def _kv():
    try:
        from ..frontend import kvstore
    except ImportError:
        return None
    return kvstore


class TrainerError(MXNetError, ValueError):
    """Invalid Trainer arguments or use."""


def _create_kvstore(kvstore, num_device: int, arg_params: dict):
    """(kvstore or None, update_on_kvstore) as MXNet's ``model._create_kvstore``."""
    update_on_kvstore = bool(int(os.getenv("MXNET_UPDATE_ON_KVSTORE", "1")))
    kvs = _kv()
    if kvstore is None:
        kv = None
    elif kvs is not None and isinstance(kvstore, kvs.KVStore):
        kv = kvstore
    elif isinstance(kvstore, str):
        if num_device == 1 and "dist" not in kvstore:
            kv = None  # no store needed for one device on one machine
        else:
            if kvs is None:
                raise TrainerError(f"kvstore '{kvstore}' needs mx.kv, which is not available")
            kv = kvs.create(kvstore)
            if kvstore == "local":
                max_size = max((int(np.prod(p.shape)) for p in arg_params.values()), default=0)
                if max_size > 1024 * 1024 * 16:
                    update_on_kvstore = False
    else:
        raise TypeError("kvstore must be KVStore, str or None")
    if kv is None:
        update_on_kvstore = False
    return kv, update_on_kvstore


class Trainer:
    """Applies an Optimizer on a set of Parameters (MXNet's ``gluon.Trainer``)."""

    def __init__(self, params, optimizer, optimizer_params=None, kvstore="device",
                 compression_params=None, update_on_kvstore=None) -> None:
        if isinstance(params, (dict, ParameterDict)):
            params = [params[k] for k in sorted(params.keys())]
        if not isinstance(params, (list, tuple)):
            raise TrainerError(f"First argument must be a list or dict of Parameters, got "
                               f"{type(params)}.")
        self._params = []
        self._contains_sparse_weight = False
        self._contains_sparse_grad = False
        self._param2idx = {}
        for i, param in enumerate(params):
            if not isinstance(param, Parameter):
                raise TrainerError(f"First argument must be a list or dict of Parameters, got "
                                   f"list of {type(param)}.")
            self._param2idx[param.name] = i
            self._params.append(param)
            param._set_trainer(self)
            if param._stype != "default":
                self._contains_sparse_weight = True
            if param._grad_stype != "default":
                self._contains_sparse_grad = True
        self._compression_params = compression_params
        self._contexts = self._check_contexts()
        self._init_optimizer(optimizer, optimizer_params or {})
        self._scale = self._optimizer.rescale_grad
        agg = getattr(self._optimizer, "aggregate_num", 0) or 0
        if agg > 1 and update_on_kvstore:
            raise TrainerError("Cannot set update_on_kvstore=True when optimizer.aggregate_num "
                               "> 1.")
        if update_on_kvstore is None and agg > 1:
            update_on_kvstore = False
        self._kvstore_params = {"kvstore": kvstore, "update_on_kvstore": update_on_kvstore}
        self._kv_initialized = False
        self._kvstore = None
        self._update_on_kvstore = None
        self._distributed = None
        self._params_to_init = []
        self._reset_kvstore()

    def _check_contexts(self):
        contexts = None
        for param in self._params:
            ctx = param.list_ctx()
            if contexts is not None and contexts != ctx:
                raise TrainerError(f"All Parameters must be initialized on the same set of "
                                   f"contexts, but Parameter {param.name} is initialized on "
                                   f"{ctx} while previous Parameters are initialized on "
                                   f"{contexts}.")
            contexts = ctx
        return contexts or []

    def _init_optimizer(self, optimizer, optimizer_params: dict) -> None:
        opt = _opt()
        param_dict = dict(enumerate(self._params))
        if isinstance(optimizer, opt.Optimizer):
            if optimizer_params:
                raise TrainerError("optimizer_params must be None if optimizer is an instance "
                                   "of Optimizer instead of str")
            self._optimizer = optimizer
            # not copied: later changes of lr_mult / wd_mult take effect
            self._optimizer.param_dict = param_dict
        else:
            self._optimizer = opt.create(optimizer, param_dict=param_dict,
                                         **optimizer_params)
        self._updaters = [opt.get_updater(self._optimizer) for _ in self._contexts]

    # -- kvstore ------------------------------------------------------------------------------
    def _init_params(self) -> None:
        """Initialize the parameters in the KVStore (deferred ones later)."""
        pending = []
        if self._kvstore:
            for param in self._params_to_init:
                if param._deferred_init:
                    pending.append(param)
                    continue
                arrays = param._check_and_get(param._data, list)
                idx = self._param2idx[param.name]
                self._kvstore.init(idx, arrays[0])
                if param._stype == "default":
                    self._kvstore.pull(idx, arrays, priority=-idx)
        self._params_to_init = pending

    def _reset_kvstore(self) -> None:
        if self._kvstore and "dist" in self._kvstore.type:
            raise MXNetError("Cannot reset distributed KVStore.")
        self._kv_initialized = False
        self._kvstore = None
        self._distributed = None
        self._update_on_kvstore = None
        self._params_to_init = list(self._params)

    def _init_kvstore(self) -> None:
        config = self._kvstore_params
        arg_arrays = {p.name: p.data(self._contexts[0]) for p in self._params
                      if not p._deferred_init}
        if self._contains_sparse_weight or self._contains_sparse_grad:
            warnings.warn("mxc keeps sparse parameters and gradients dense; they are reduced "
                          "like dense ones", stacklevel=3)
        kvstore, update_on_kvstore = _create_kvstore(config["kvstore"], len(self._contexts),
                                                     arg_arrays)
        self._distributed = "dist" in kvstore.type if kvstore else False
        update_on_kvstore = self._distributed
        if config["update_on_kvstore"] is not None:
            update_on_kvstore = config["update_on_kvstore"]
        if kvstore:
            if self._compression_params:
                kvstore.set_gradient_compression(self._compression_params)
            if update_on_kvstore:
                kvstore.set_optimizer(self._optimizer)
            self._kvstore = kvstore
            self._update_on_kvstore = update_on_kvstore
        else:
            self._kvstore = None
            self._update_on_kvstore = None
        self._kv_initialized = True

    # -- learning rate ------------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        if not isinstance(self._optimizer, _opt().Optimizer):
            raise UserWarning("Optimizer has to be defined before its learning rate can be "
                              "accessed.")
        return self._optimizer.learning_rate

    @property
    def optimizer(self):
        if isinstance(self._optimizer, _opt().Optimizer):
            return self._optimizer
        raise UserWarning("Optimizer has not been initialized yet")

    def set_learning_rate(self, lr: float) -> None:
        """Set the optimizer's learning rate."""
        if not isinstance(self._optimizer, _opt().Optimizer):
            raise UserWarning("Optimizer has to be defined before its learning rate is "
                              "mutated.")
        self._optimizer.set_learning_rate(lr)

    # -- stepping -----------------------------------------------------------------------------
    def step(self, batch_size: int, ignore_stale_grad: bool = False) -> None:
        """One optimization step: gradients are normalized by ``1/batch_size``, reduced
        across contexts, and applied."""
        rescale_grad = self._scale / batch_size
        self._check_and_rescale_grad(rescale_grad)
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        self._allreduce_grads()
        self._update(ignore_stale_grad)

    def _check_and_rescale_grad(self, scale: float) -> None:
        if self._update_on_kvstore and self._distributed and self._kv_initialized and \
                self._optimizer.rescale_grad != scale:
            raise UserWarning("Possible change in the `batch_size` from previous `step` "
                              "detected. Optimizer gradient normalizing factor will not change "
                              "w.r.t new batch_size when update_on_kvstore=True and when "
                              "distributed kvstore is used.")
        self._optimizer.rescale_grad = scale

    def allreduce_grads(self) -> None:
        """Sum the gradients over all contexts (for a manual ``update``)."""
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        if self._kvstore and self._update_on_kvstore:
            raise TrainerError("allreduce_grads() when parameters are updated on kvstore is "
                               "not supported. Try setting `update_on_kvstore` to False when "
                               "creating trainer.")
        self._allreduce_grads()

    def _allreduce_grads(self) -> None:
        if not self._kvstore:
            if len(self._contexts) > 1:
                self._allreduce_local()
            return
        for i, param in enumerate(self._params):
            if param.grad_req == "null":
                continue
            grads = param.list_grad()
            if self._update_on_kvstore:
                _pushpull(self._kvstore, i, grads, param.list_data(), -i)
            else:
                _pushpull(self._kvstore, i, grads, grads, -i)

    def _allreduce_local(self) -> None:
        """Sum gradients across contexts without a store (every copy gets the sum)."""
        for param in self._params:
            if param.grad_req == "null":
                continue
            grads = param.list_grad()
            total = grads[0].copy()
            for g in grads[1:]:
                total += g.as_in_context(total.context)
            for g in grads:
                total.copyto(g)

    def update(self, batch_size: int, ignore_stale_grad: bool = False) -> None:
        """Apply the (already reduced) gradients: ``step`` without the reduction."""
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        if self._kvstore and self._update_on_kvstore:
            raise TrainerError("update() when parameters are updated on kvstore is not "
                               "supported. Try setting `update_on_kvstore` to False when "
                               "creating trainer.")
        self._check_and_rescale_grad(self._scale / batch_size)
        self._update(ignore_stale_grad)

    def _update(self, ignore_stale_grad: bool = False) -> None:
        updates = [[] for _ in self._updaters]
        for i, param in enumerate(self._params):
            if param.grad_req == "null":
                continue
            if not ignore_stale_grad:
                for data in param._check_and_get(param._data, list):
                    if not ag.fresh_grad(data):
                        raise UserWarning(
                            f"Gradient of Parameter `{param.name}` on context {data.context} "
                            "has not been updated by backward since last `step`. This could "
                            "mean a bug in your model that made it only use a subset of the "
                            "Parameters (Blocks) for this iteration. If you are intentionally "
                            "only using a subset, call step with ignore_stale_grad=True to "
                            "suppress this warning and skip updating of Parameters with stale "
                            "gradient")
            if self._kvstore and self._update_on_kvstore:
                continue
            for upd, arr, grad in zip(updates, param.list_data(), param.list_grad()):
                if not ignore_stale_grad or ag.fresh_grad(arr):
                    upd.append((i, grad, arr))
                    ag.set_fresh_grad(arr, False)
        if self._kvstore and self._update_on_kvstore:
            for param in self._params:
                if param.grad_req != "null":
                    for arr in param.list_data():
                        ag.set_fresh_grad(arr, False)
            return
        for updater, upd in zip(self._updaters, updates):
            for i, g, w in upd:
                updater(i, g, w)

    # -- states ---------------------------------------------------------------------------------
    def save_states(self, fname: str) -> None:
        """Save the optimizer (updater) states to ``fname``."""
        if self._optimizer is None:
            raise TrainerError("no optimizer")
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        if self._update_on_kvstore:
            if self._params_to_init:
                raise TrainerError("Cannot save trainer states when some parameters are not "
                                   "yet initialized in kvstore.")
            self._kvstore.save_optimizer_states(fname, dump_optimizer=True)
        else:
            with open(fname, "wb") as f:
                f.write(self._updaters[0].get_states(dump_optimizer=True))

    def load_states(self, fname: str) -> None:
        """Load optimizer (updater) states written by :meth:`save_states`."""
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        if self._update_on_kvstore:
            self._kvstore.load_optimizer_states(fname)
            self._optimizer = self._kvstore._updater.optimizer
        else:
            with open(fname, "rb") as f:
                states = f.read()
            for updater in self._updaters:
                updater.set_states(states)
                updater.optimizer = self._updaters[0].optimizer
            self._optimizer = self._updaters[0].optimizer
        self._optimizer.param_dict = dict(enumerate(self._params))


def _pushpull(kv, key, values, outs, priority) -> None:
    if hasattr(kv, "pushpull"):
        kv.pushpull(key, values, out=outs, priority=priority)
    else:
        kv.push(key, values, priority=priority)
        kv.pull(key, outs, priority=priority)
