"""``mx.mod`` / ``mx.module``: MXNet 1.x's Module API (``BaseModule`` and ``Module``).

A :class:`Module` wraps a Symbol with named data and label inputs. ``bind`` creates one
executor per context (MXNet's ``DataParallelExecutorGroup``, here :class:`_ExecGroup`): the
batch is split along each input's batch axis (the 'N' of its layout) in proportion to
``work_load_list``; every executor holds its own copy of the parameters. ``update`` follows
MXNet:

* one context and ``kvstore='local'`` (the default): no store; the optimizer's updater runs
  directly on each parameter (index = position among the parameters);
* several contexts, or a :class:`~mxc.frontend.kvstore.KVStore` object: the gradients of the
  devices are pushed to the store, which sums them and (``update_on_kvstore``) runs the
  optimizer there; the new weights are pulled back into every device.

``init_optimizer`` builds the optimizer as MXNet does: ``rescale_grad = 1/batch_size`` unless
given, and ``sym``/``param_idx2name`` are passed so the symbolic optimizer's weight-decay rule
applies (``wd_mult`` 0 for names not ending in ``_weight``/``_gamma``).

Contexts: any number of ``mx.cpu(i)`` and ``mx.gpu(i)`` (a CUDA device, or the CPU emulator of
the GPU back end with ``MXC_GPU_EMULATOR=1``; each executor's forward and backward run on its
device, see ``docs/gpu.md``). The logging lines of ``fit`` (``Epoch[%d] Train-accuracy=%f``, ``Epoch[%d] Time
cost=%.3f``, ``Epoch[%d] Validation-accuracy=%f``) are MXNet's. Misuse that MXNet reports with
``assert`` raises :class:`ModuleError`, which is both an ``MXNetError`` and an
``AssertionError``. Not provided: ``BucketingModule``, ``SequentialModule``, ``PythonModule``,
``group2ctxs``.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from collections import OrderedDict

import numpy as np

from ..base import MXNetError
from . import metric as _metric
from . import ndarray as nd
from .callback import BatchEndParam
from .context import Context, cpu
from .initializer import InitDesc, Uniform
from .io import DataBatch, DataDesc, DataIter
from .ndarray import NDArray

__all__ = ["BaseModule", "Module", "ModuleError"]


class ModuleError(MXNetError, AssertionError):
    """A module used out of order or with inconsistent inputs (MXNet asserts; catch either)."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ModuleError(msg)


def _as_list(obj) -> list:
    return obj if isinstance(obj, list) else [obj]


# ------------------------------------------------------------------------------------------
# name and shape checks (MXNet's module.base_module helpers)
# ------------------------------------------------------------------------------------------
def _check_input_names(symbol, names: list, typename: str, throw: bool) -> None:
    args = symbol.list_arguments()
    for name in names:
        if name in args:
            continue
        candidates = [a for a in args if not a.endswith(("_weight", "_bias", "_gamma",
                                                           "_beta"))]
        msg = (f"You created Module with Module(..., {typename}_names={names}) but input with "
               f"name '{name}' is not found in symbol.list_arguments(). Did you mean one "
               f"of:\n\t" + "\n\t".join(candidates))
        if throw:
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=3)


def _check_names_match(names: list, shapes: list, what: str, throw: bool) -> None:
    actual = [x[0] for x in shapes]
    if sorted(names) != sorted(actual):
        msg = (f"Data provided by {what}_shapes don't match names specified by {what}_names "
               f"({shapes} vs. {names})")
        if throw:
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=3)


def _as_desc(x) -> DataDesc:
    if isinstance(x, DataDesc):
        if isinstance(x.shape, tuple):
            return x
        return DataDesc(x.name, tuple(int(d) for d in x.shape), x.dtype, x.layout)
    if not isinstance(x, (list, tuple)) or len(x) < 2:
        raise ValueError(f"expected a DataDesc or a (name, shape) pair, got {x!r}")
    name, shape = x[0], x[1]
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else \
        tuple(int(d) for d in shape)
    return DataDesc(name, shape, *x[2:])


def _parse_data_desc(data_names, label_names, data_shapes, label_shapes) -> tuple:
    data_shapes = [_as_desc(x) for x in data_shapes]
    _check_names_match(data_names, data_shapes, "data", True)
    if label_shapes is not None:
        label_shapes = [_as_desc(x) for x in label_shapes]
        _check_names_match(label_names, label_shapes, "label", False)
    else:
        _check_names_match(label_names, [], "label", False)
    return data_shapes, label_shapes


def _split_input_slice(batch_size: int, work_load_list: list) -> list:
    total = sum(work_load_list)
    nums = [round(w * batch_size / total) for w in work_load_list]
    if sum(nums) < batch_size:
        nums[-1] += batch_size - sum(nums)
    slices = []
    end = 0
    for n in nums:
        begin = int(min(end, batch_size))
        end = int(min(begin + n, batch_size))
        if begin >= end:
            raise ValueError(f"Too many slices: the batch of {batch_size} cannot be split over "
                             f"{len(work_load_list)} contexts. Some splits are empty.")
        slices.append(slice(begin, end))
    return slices


# MXNet's default initializer of init_params and fit
_DEFAULT_INIT = Uniform(0.01)


def _batch_size_of(descs: list):
    for d in descs:
        d = _as_desc(d)
        axis = DataDesc.get_batch_axis(getattr(d, "layout", None))
        if axis >= 0:
            return d.shape[axis]
    return None


def _with_batch(desc: DataDesc, batch_size) -> DataDesc:
    axis = DataDesc.get_batch_axis(desc.layout)
    shape = list(desc.shape)
    if batch_size is not None and 0 <= axis < len(shape):
        shape[axis] = batch_size
    return DataDesc(desc.name, tuple(shape), desc.dtype, desc.layout)


def _dtype_name(dt) -> str:
    return nd.to_dtype(dt).name


# ------------------------------------------------------------------------------------------
# the executor group (MXNet's DataParallelExecutorGroup)
# ------------------------------------------------------------------------------------------
class _ExecGroup:
    """One executor per context, each running a slice of the batch."""

    def __init__(self, symbol, contexts: list, workload: list, data_shapes: list,
                 label_shapes, param_names: list, for_training: bool, inputs_need_grad: bool,
                 shared_group, fixed_param_names: list, grad_req, state_names: list) -> None:
        self.symbol = symbol
        self.contexts = contexts
        self.workload = workload
        self.param_names = param_names
        self.arg_names = symbol.list_arguments()
        self.aux_names = symbol.list_auxiliary_states()
        self.for_training = for_training
        self.inputs_need_grad = inputs_need_grad
        self.fixed_param_names = fixed_param_names or []
        self.state_names = state_names or []
        self.batch_size = None
        self.slices = None
        self.execs: list = []
        self._default_execs = None
        self.output_names = symbol.list_outputs()
        self.output_layouts = []
        for name in self.output_names:
            layout = symbol[name].attr("__layout__")
            self.output_layouts.append(DataDesc.get_batch_axis(layout))

        data_names = [x.name for x in data_shapes]
        if isinstance(grad_req, str):
            req = {}
            for k in self.arg_names:
                if k in self.param_names:
                    req[k] = "null" if k in self.fixed_param_names else grad_req
                elif k in data_names:
                    req[k] = grad_req if inputs_need_grad else "null"
                else:
                    req[k] = "null"
        elif isinstance(grad_req, (list, tuple)):
            if len(grad_req) != len(self.arg_names):
                raise ModuleError(f"bind: grad_req has {len(grad_req)} entries for "
                                  f"{len(self.arg_names)} arguments {self.arg_names}")
            req = dict(zip(self.arg_names, grad_req))
        elif isinstance(grad_req, dict):
            req = {}
            for k in self.arg_names:
                if k in self.param_names:
                    req[k] = "null" if k in self.fixed_param_names else "write"
                elif k in data_names:
                    req[k] = "write" if inputs_need_grad else "null"
                else:
                    req[k] = "null"
            req.update(grad_req)
        else:
            raise ModuleError("bind: grad_req must be one of str, list, tuple, or dict")
        if not for_training:
            req = dict.fromkeys(self.arg_names, "null")
        self.grad_req = req

        self.bind_exec(data_shapes, label_shapes, shared_group)

    # -- binding --------------------------------------------------------------------------------
    def decide_slices(self, data_shapes: list) -> list:
        _require(len(data_shapes) > 0, "bind: the module needs at least one data input")
        major_axis = [DataDesc.get_batch_axis(getattr(x, "layout", None)) for x in data_shapes]
        for (name, shape), axis in zip(data_shapes, major_axis):
            if axis == -1:
                continue
            batch_size = shape[axis]
            if self.batch_size is not None:
                if batch_size != self.batch_size:
                    raise ModuleError(f"all data must have the same batch size: batch_size = "
                                      f"{self.batch_size}, but {name} has shape {shape}")
            else:
                self.batch_size = batch_size
                self.slices = _split_input_slice(self.batch_size, self.workload)
        return major_axis

    def _sliced(self, shapes: list, i: int, axes: list) -> list:
        out = []
        for desc, axis in zip(shapes, axes):
            shape = list(desc.shape)
            if axis >= 0:
                shape[axis] = self.slices[i].stop - self.slices[i].start
            out.append(DataDesc(desc.name, tuple(shape), desc.dtype, desc.layout))
        return out

    def bind_exec(self, data_shapes: list, label_shapes, shared_group=None,
                  reshape: bool = False) -> None:
        self.batch_size = None
        self.data_layouts = self.decide_slices(data_shapes)
        self.label_layouts = self.decide_slices(label_shapes) if label_shapes else None
        if reshape:
            self._check_param_shapes(data_shapes, label_shapes)
        execs = []
        for i, ctx in enumerate(self.contexts):
            dshapes = self._sliced(data_shapes, i, self.data_layouts)
            lshapes = self._sliced(label_shapes, i, self.label_layouts) if label_shapes \
                else []
            input_shapes = {d.name: d.shape for d in dshapes + lshapes}
            if reshape:
                execs.append(self._reshaped(i, input_shapes))
                continue
            input_types = {d.name: _dtype_name(d.dtype) for d in dshapes + lshapes}
            shared = shared_group.execs[i] if shared_group is not None else None
            execs.append(self.symbol.simple_bind(ctx, grad_req=self.grad_req,
                                                 type_dict=input_types, shared_exec=shared,
                                                 **input_shapes))
        self.execs = execs
        self.data_shapes = data_shapes
        self.label_shapes = label_shapes
        self.data_names = [x.name for x in data_shapes]
        self.label_names = [x.name for x in label_shapes] if label_shapes else []
        self._collect_arrays()

    def _reshaped(self, i: int, input_shapes: dict):
        base = self._default_execs[i]
        if all(base.arg_dict[k].shape == tuple(v) for k, v in input_shapes.items()):
            return base
        return base.reshape(partial_shaping=True, allow_up_sizing=True, **input_shapes)

    def _check_param_shapes(self, data_shapes: list, label_shapes) -> None:
        """A new input shape must not change a parameter's shape (the executors would stop
        sharing the trained weights)."""
        shapes = {d.name: d.shape for d in data_shapes + list(label_shapes or [])}
        arg_shapes, _, aux_shapes = self.symbol.infer_shape_partial(**shapes)
        exe = self.execs[0]
        inputs = set(shapes)
        for name, shape in list(zip(self.arg_names, arg_shapes or [])) + \
                list(zip(self.aux_names, aux_shapes or [])):
            if name in inputs or not shape or not (name in self.param_names or
                                                   name in self.aux_names):
                continue
            arr = exe.arg_dict.get(name)
            if arr is None:
                arr = exe.aux_dict.get(name)
            if arr is not None and tuple(shape) != arr.shape and 0 not in tuple(shape):
                given = ", ".join(f"{k}={v}" for k, v in shapes.items())
                raise ModuleError(f"the input shapes ({given}) change the shape of parameter "
                                  f"'{name}' from {arr.shape} to {tuple(shape)}; the module "
                                  "is bound to " + ", ".join(
                                      f"{d.name}={d.shape}" for d in
                                      self.data_shapes + list(self.label_shapes or [])))

    def reshape(self, data_shapes: list, label_shapes) -> None:
        if data_shapes == self.data_shapes and label_shapes == self.label_shapes:
            return
        if self._default_execs is None:
            self._default_execs = list(self.execs)
        self.bind_exec(data_shapes, label_shapes, reshape=True)

    def _collect_arrays(self) -> None:
        ex = self.execs
        self.data_arrays = [[(self.slices[i], e.arg_dict[name]) for i, e in enumerate(ex)]
                            for name in self.data_names]
        self.state_arrays = [[e.arg_dict[name] for e in ex] for name in self.state_names]
        if self.label_shapes:
            self.label_arrays = [[(self.slices[i], e.arg_dict[name])
                                  for i, e in enumerate(ex)] for name in self.label_names]
        else:
            self.label_arrays = None
        self.param_arrays = [[e.arg_arrays[i] for e in ex]
                             for i, name in enumerate(self.arg_names)
                             if name in self.param_names]
        if self.for_training:
            self.grad_arrays = [[e.grad_arrays[i] for e in ex]
                                for i, name in enumerate(self.arg_names)
                                if name in self.param_names]
        else:
            self.grad_arrays = None
        if self.inputs_need_grad:
            self.input_grad_arrays = [[e.grad_arrays[self.arg_names.index(name)] for e in ex]
                                      for name in self.data_names if name in self.arg_names]
        else:
            self.input_grad_arrays = None
        self.aux_arrays = [[e.aux_arrays[i] for e in ex] for i in range(len(self.aux_names))]

    # -- parameters -----------------------------------------------------------------------------
    def set_params(self, arg_params: dict, aux_params: dict, allow_extra: bool = False) -> None:
        for e in self.execs:
            e.copy_params_from(arg_params, aux_params, allow_extra_params=allow_extra)

    def get_params(self, arg_params: dict, aux_params: dict) -> None:
        """Copy the devices' parameters (averaged over devices) into the given dicts."""
        for name, block in zip(self.param_names, self.param_arrays):
            arg_params[name][:] = _average(block)
        for name, block in zip(self.aux_names, self.aux_arrays):
            aux_params[name][:] = _average(block)

    # -- running --------------------------------------------------------------------------------
    def forward(self, data_batch, is_train=None) -> None:
        data = data_batch.data
        if len(data) != len(self.data_arrays):
            raise ModuleError(f"forward: the batch has {len(data)} data arrays, the module "
                              f"takes {len(self.data_arrays)} ({self.data_names})")
        _load(data, self.data_arrays, self.data_layouts, self.data_names, "data")
        if is_train is None:
            is_train = self.for_training
        if self.label_arrays is not None and data_batch.label:
            _load(data_batch.label, self.label_arrays, self.label_layouts, self.label_names,
                  "label")
        for e in self.execs:
            e.forward(is_train=is_train)

    def get_output_shapes(self) -> list:
        shapes = []
        for name, out, axis in zip(self.output_names, self.execs[0].outputs,
                                   self.output_layouts):
            s = list(out.shape)
            if axis >= 0:
                s[axis] = self.batch_size
            shapes.append((name, tuple(s)))
        return shapes

    def get_outputs(self, merge_multi_context: bool = True, begin: int = 0, end=None) -> list:
        if end is None:
            end = len(self.execs[0].outputs)
        outputs = [[e.outputs[i] for e in self.execs] for i in range(begin, end)]
        if merge_multi_context:
            outputs = _merge(outputs, self.output_layouts[begin:end])
        return outputs

    def get_states(self, merge_multi_context: bool = True) -> list:
        _require(not merge_multi_context, "merge_multi_context=True is not supported for "
                                          "get_states yet.")
        return self.state_arrays

    def set_states(self, states=None, value=None) -> None:
        if states is not None:
            _require(value is None, "Only one of states & value can be specified.")
            for d_dst, d_src in zip(self.state_arrays, states):
                for dst, src in zip(d_dst, d_src):
                    dst[:] = src
        else:
            _require(value is not None, "At least one of states & value must be specified.")
            for d_dst in self.state_arrays:
                for dst in d_dst:
                    dst[:] = value

    def get_input_grads(self, merge_multi_context: bool = True) -> list:
        _require(self.inputs_need_grad, "get_input_grads: bind with inputs_need_grad=True")
        if merge_multi_context:
            return _merge(self.input_grad_arrays, self.data_layouts)
        return self.input_grad_arrays

    def backward(self, out_grads=None) -> None:
        _require(self.for_training, "backward: re-bind with for_training=True to run "
                                    "backward")
        if out_grads is None:
            out_grads = []
        elif isinstance(out_grads, NDArray):
            out_grads = [out_grads]
        for i, (e, islice) in enumerate(zip(self.execs, self.slices)):
            sliced = []
            for grad, axis in zip(out_grads, self.output_layouts):
                if len(self.execs) == 1:
                    sliced.append(grad)
                elif axis >= 0:
                    sliced.append(nd.slice_axis(grad, axis=axis, begin=islice.start,
                                                end=islice.stop)
                                  .as_in_context(self.contexts[i]))
                else:
                    sliced.append(grad.copyto(self.contexts[i]))
            e.backward(out_grads=sliced or None)

    def update_metric(self, eval_metric, labels, pre_sliced: bool) -> None:
        for k, (e, islice) in enumerate(zip(self.execs, self.slices)):
            if pre_sliced:
                labels_slice = labels[k]
            elif len(self.execs) == 1:
                labels_slice = list(labels or [])
            else:
                labels_slice = []
                layouts = self.label_layouts or [0] * len(labels)
                for label, axis in zip(labels, layouts):
                    if axis == 0:
                        labels_slice.append(label[islice])
                    elif axis > 0:
                        labels_slice.append(nd.slice_axis(label, axis=axis, begin=islice.start,
                                                          end=islice.stop))
                    else:
                        labels_slice.append(label)
            names = self.label_names or [f"label{j}" for j in range(len(labels_slice))]
            labels_ = OrderedDict(zip(names, labels_slice))
            preds = OrderedDict(zip(self.output_names, e.outputs))
            eval_metric.update_dict(labels_, preds)

    def install_monitor(self, mon) -> None:
        for e in self.execs:
            mon.install(e)


def _average(block: list) -> NDArray:
    if len(block) == 1:
        return block[0]
    host = [b.as_in_context(cpu()) for b in block]
    return nd.add_n(*host) / len(block)


def _merge(outputs: list, layouts: list) -> list:
    rets = []
    for tensors, axis in zip(outputs, layouts):
        if axis >= 0 and len(tensors) > 1:
            ctx = tensors[0].context
            rets.append(nd.concat(*[t.as_in_context(ctx) for t in tensors], dim=axis))
        else:
            rets.append(tensors[0])
    return rets


def _load(sources: list, targets: list, axes: list, names: list, what: str) -> None:
    for src, dsts, axis, name in zip(sources, targets, axes, names):
        if not isinstance(src, NDArray):
            src = nd.array(src)
        for islice, dst in dsts:
            part = src
            if axis >= 0 and len(dsts) > 1:
                part = src[islice] if axis == 0 else nd.slice_axis(
                    src, axis=axis, begin=islice.start, end=islice.stop)
            if part.shape != dst.shape:
                raise ModuleError(f"forward: {what} '{name}' has shape {part.shape}, the "
                                  f"executor expects {dst.shape}")
            if part is not dst:
                dst[:] = part


# ------------------------------------------------------------------------------------------
# kvstore plumbing (MXNet's model._create_kvstore & co.)
# ------------------------------------------------------------------------------------------
def _create_kvstore(kvstore, num_device: int, arg_params: dict) -> tuple:
    from . import kvstore as kvs
    update_on_kvstore = bool(int(os.getenv("MXNET_UPDATE_ON_KVSTORE", "1")))
    if kvstore is None:
        kv = None
    elif isinstance(kvstore, kvs.KVStore):
        kv = kvstore
    elif isinstance(kvstore, str):
        if num_device == 1 and "dist" not in kvstore:
            kv = None        # one device, one machine: no store needed
        else:
            kv = kvs.create(kvstore)
            if kvstore == "local" and arg_params:
                max_size = max(int(np.prod(p.shape)) for p in arg_params.values())
                if max_size > 1024 * 1024 * 16:
                    update_on_kvstore = False
    else:
        raise TypeError("kvstore must be KVStore, str or None")
    if kv is None:
        update_on_kvstore = False
    else:
        update_on_kvstore &= kv.is_capable(kvs.KVStoreBase.OPTIMIZER)
    return kv, update_on_kvstore


def _initialize_kvstore(kvstore, param_arrays: list, arg_params: dict, param_names: list,
                        update_on_kvstore: bool) -> None:
    for idx, param_on_devs in enumerate(param_arrays):
        name = param_names[idx]
        kvstore.init(name, arg_params[name])
        if update_on_kvstore:
            kvstore.pull(name, param_on_devs, priority=-idx)


def _update_params_on_kvstore(param_arrays, grad_arrays, kvstore, param_names) -> None:
    for index, (arg_list, grad_list) in enumerate(zip(param_arrays, grad_arrays)):
        if grad_list[0] is None:
            continue
        kvstore.pushpull(param_names[index], grad_list, out=arg_list, priority=-index)


def _update_params(param_arrays, grad_arrays, updater, num_device: int, kvstore=None,
                   param_names=None) -> None:
    updates: list = [[] for _ in range(num_device)]
    for index, (arg_list, grad_list) in enumerate(zip(param_arrays, grad_arrays)):
        if grad_list[0] is None:
            continue
        if kvstore:
            kvstore.pushpull(param_names[index], grad_list, priority=-index)
        for k, (w, g) in enumerate(zip(arg_list, grad_list)):
            # one optimizer state per (parameter, device), as MXNet's index trick
            updates[k].append((index * num_device + k, g, w))
    for dev_updates in updates:
        if dev_updates:
            idx, grads, weights = zip(*dev_updates)
            updater(list(idx), list(grads), list(weights))


# ------------------------------------------------------------------------------------------
# BaseModule: the high-level API on top of bind/forward/backward/update
# ------------------------------------------------------------------------------------------
class BaseModule:
    """The module interface: ``fit``, ``score``, ``predict`` on top of ``bind``,
    ``init_params``, ``init_optimizer``, ``forward``, ``backward``, ``update``."""

    def __init__(self, logger=logging) -> None:
        self.logger = logger
        self.binded = False
        self.for_training = False
        self.inputs_need_grad = False
        self.params_initialized = False
        self.optimizer_initialized = False
        self._symbol = None
        self._total_exec_bytes = 0

    # -- high-level API -------------------------------------------------------------------------
    def forward_backward(self, data_batch) -> None:
        """``forward(is_train=True)`` then ``backward()``."""
        self.forward(data_batch, is_train=True)
        self.backward()

    def score(self, eval_data, eval_metric, num_batch=None, batch_end_callback=None,
              score_end_callback=None, reset: bool = True, epoch: int = 0,
              sparse_row_id_fn=None) -> list:
        """Evaluate ``eval_metric`` over ``eval_data``; returns ``[(name, value)]``."""
        _require(self.binded and self.params_initialized,
                 "score: bind the module and initialize its parameters first")
        if reset:
            eval_data.reset()
        if not isinstance(eval_metric, _metric.EvalMetric):
            eval_metric = _metric.create(eval_metric)
        eval_metric.reset()
        actual_num_batch = 0
        for nbatch, eval_batch in enumerate(eval_data):
            if num_batch is not None and nbatch == num_batch:
                break
            self.prepare(eval_batch, sparse_row_id_fn=sparse_row_id_fn)
            self.forward(eval_batch, is_train=False)
            if isinstance(eval_batch, list):
                self.update_metric(eval_metric, [eb.label for eb in eval_batch],
                                   pre_sliced=True)
            else:
                self.update_metric(eval_metric, eval_batch.label)
            if batch_end_callback is not None:
                params = BatchEndParam(epoch=epoch, nbatch=nbatch, eval_metric=eval_metric,
                                       locals=locals())
                for cb in _as_list(batch_end_callback):
                    cb(params)
            actual_num_batch += 1
        if score_end_callback:
            params = BatchEndParam(epoch=epoch, nbatch=actual_num_batch,
                                   eval_metric=eval_metric, locals=locals())
            for cb in _as_list(score_end_callback):
                cb(params)
        return eval_metric.get_name_value()

    def iter_predict(self, eval_data, num_batch=None, reset: bool = True,
                     sparse_row_id_fn=None):
        """Yield ``(outputs, nbatch, batch)`` per batch; padded examples are cut off."""
        _require(self.binded and self.params_initialized,
                 "iter_predict: bind the module and initialize its parameters first")
        if reset:
            eval_data.reset()
        for nbatch, eval_batch in enumerate(eval_data):
            if num_batch is not None and nbatch == num_batch:
                break
            self.prepare(eval_batch, sparse_row_id_fn=sparse_row_id_fn)
            self.forward(eval_batch, is_train=False)
            pad = eval_batch.pad or 0
            outputs = [out[0:out.shape[0] - pad] for out in self.get_outputs()]
            yield outputs, nbatch, eval_batch

    def predict(self, eval_data, num_batch=None, merge_batches: bool = True,
                reset: bool = True, always_output_list: bool = False, sparse_row_id_fn=None):
        """Run inference over ``eval_data`` (a DataIter, or one NDArray/numpy batch). With
        ``merge_batches`` the outputs of all batches are concatenated (padded examples of the
        last batch removed); one output is returned as an NDArray unless
        ``always_output_list``. (A single array runs with ``is_train=False``; MXNet uses the
        module's ``for_training`` there, which only matters for Dropout and BatchNorm.)"""
        _require(self.binded and self.params_initialized,
                 "predict: bind the module and initialize its parameters first")
        if isinstance(eval_data, (NDArray, np.ndarray)):
            if isinstance(eval_data, np.ndarray):
                eval_data = nd.array(eval_data)
            self.forward(DataBatch([eval_data]), is_train=False)
            return self.get_outputs()[0]
        if not isinstance(eval_data, DataIter):
            raise ValueError("eval_data must be of type NDArray or DataIter")  # noqa: TRY004
        if reset:
            eval_data.reset()
        output_list = []
        for nbatch, eval_batch in enumerate(eval_data):
            if num_batch is not None and nbatch == num_batch:
                break
            self.prepare(eval_batch, sparse_row_id_fn=sparse_row_id_fn)
            self.forward(eval_batch, is_train=False)
            pad = eval_batch.pad or 0
            output_list.append([out[0:out.shape[0] - pad].copy()
                                for out in self.get_outputs()])
        if not output_list:
            return output_list
        if merge_batches:
            num_outputs = len(output_list[0])
            for out in output_list:
                _require(len(out) == num_outputs, "Cannot merge batches, as num of outputs is "
                                                  "not the same in mini-batches. Maybe "
                                                  "bucketing is used?")
            merged = [nd.concatenate([out[i] for out in output_list])
                      for i in range(num_outputs)]
            if num_outputs == 1 and not always_output_list:
                return merged[0]
            return merged
        return output_list

    def fit(self, train_data, eval_data=None, eval_metric="acc", epoch_end_callback=None,
            batch_end_callback=None, kvstore="local", optimizer="sgd",
            optimizer_params=(("learning_rate", 0.01),), eval_end_callback=None,
            eval_batch_end_callback=None, initializer=_DEFAULT_INIT, arg_params=None,
            aux_params=None, allow_missing: bool = False, force_rebind: bool = False,
            force_init: bool = False, begin_epoch: int = 0, num_epoch=None,
            validation_metric=None, monitor=None, sparse_row_id_fn=None) -> None:
        """Train on ``train_data`` for epochs ``begin_epoch .. num_epoch-1`` (MXNet's loop:
        bind, init_params (``Uniform(0.01)`` by default), init_optimizer, then per batch
        forward_backward + update + update_metric; per epoch log the training metric and
        the time, run the epoch-end callbacks and score ``eval_data``)."""
        _require(num_epoch is not None, "fit: please specify number of epochs")
        self.bind(data_shapes=train_data.provide_data, label_shapes=train_data.provide_label,
                  for_training=True, force_rebind=force_rebind)
        if monitor is not None:
            self.install_monitor(monitor)
        self.init_params(initializer=initializer, arg_params=arg_params,
                         aux_params=aux_params, allow_missing=allow_missing,
                         force_init=force_init)
        self.init_optimizer(kvstore=kvstore, optimizer=optimizer,
                            optimizer_params=optimizer_params)
        if validation_metric is None:
            validation_metric = eval_metric
        if not isinstance(eval_metric, _metric.EvalMetric):
            eval_metric = _metric.create(eval_metric)

        for epoch in range(begin_epoch, num_epoch):
            tic = time.time()
            eval_metric.reset()
            nbatch = 0
            data_iter = iter(train_data)
            end_of_batch = False
            try:
                next_data_batch = next(data_iter)
            except StopIteration:
                raise MXNetError(f"fit: train_data yielded no batch in epoch {epoch}") from None
            eval_name_vals = []
            while not end_of_batch:
                data_batch = next_data_batch
                if monitor is not None:
                    monitor.tic()
                self.forward_backward(data_batch)
                self.update()
                if isinstance(data_batch, list):
                    self.update_metric(eval_metric, [db.label for db in data_batch],
                                       pre_sliced=True)
                else:
                    self.update_metric(eval_metric, data_batch.label)
                try:
                    next_data_batch = next(data_iter)
                    self.prepare(next_data_batch, sparse_row_id_fn=sparse_row_id_fn)
                except StopIteration:
                    end_of_batch = True
                if monitor is not None:
                    monitor.toc_print()
                if end_of_batch:
                    eval_name_vals = eval_metric.get_global_name_value()
                if batch_end_callback is not None:
                    params = BatchEndParam(epoch=epoch, nbatch=nbatch, eval_metric=eval_metric,
                                           locals=locals())
                    for cb in _as_list(batch_end_callback):
                        cb(params)
                nbatch += 1

            for name, val in eval_name_vals:
                self.logger.info("Epoch[%d] Train-%s=%f", epoch, name, val)
            toc = time.time()
            self.logger.info("Epoch[%d] Time cost=%.3f", epoch, toc - tic)

            # sync aux params across devices
            arg_params_, aux_params_ = self.get_params()
            self.set_params(arg_params_, aux_params_)
            if epoch_end_callback is not None:
                for cb in _as_list(epoch_end_callback):
                    cb(epoch, self.symbol, arg_params_, aux_params_)

            if eval_data:
                res = self.score(eval_data, validation_metric,
                                 score_end_callback=eval_end_callback,
                                 batch_end_callback=eval_batch_end_callback, epoch=epoch)
                for name, val in res:
                    self.logger.info("Epoch[%d] Validation-%s=%f", epoch, name, val)
            train_data.reset()

    # -- symbol and parameters ------------------------------------------------------------------
    @property
    def symbol(self):
        """The symbol this module runs."""
        return self._symbol

    def save_params(self, fname: str) -> None:
        """Save the parameters as an NDArray dict with ``arg:``/``aux:`` keys."""
        arg_params, aux_params = self.get_params()
        save_dict = {f"arg:{k}": v.as_in_context(cpu()) for k, v in arg_params.items()}
        save_dict.update({f"aux:{k}": v.as_in_context(cpu()) for k, v in aux_params.items()})
        nd.save(fname, save_dict)

    def load_params(self, fname: str) -> None:
        """Load parameters saved by :meth:`save_params` into the bound module."""
        save_dict = nd.load(fname)
        arg_params, aux_params = {}, {}
        for k, value in save_dict.items():
            arg_type, _, name = k.partition(":")
            if arg_type == "arg":
                arg_params[name] = value
            elif arg_type == "aux":
                aux_params[name] = value
            else:
                raise ValueError(f"Invalid param file {fname}: key {k!r} has no arg:/aux: "
                                 "prefix")
        self.set_params(arg_params, aux_params)

    def prepare(self, data_batch, sparse_row_id_fn=None) -> None:
        """Prepare for a batch (pulls row_sparse parameters in MXNet; nothing to do here)."""
        if sparse_row_id_fn is not None:
            warnings.warn("sparse_row_id_fn is not invoked: mxc keeps parameters dense",
                          stacklevel=2)


# ------------------------------------------------------------------------------------------
# Module
# ------------------------------------------------------------------------------------------
class Module(BaseModule):
    """A symbol with named data/label inputs, bound to one or more contexts."""

    def __init__(self, symbol, data_names=("data",), label_names=("softmax_label",),
                 logger=logging, context=None, work_load_list=None, fixed_param_names=None,
                 state_names=None, group2ctxs=None, compression_params=None) -> None:
        super().__init__(logger=logger)
        if context is None:
            context = cpu()
        if isinstance(context, Context):
            context = [context]
        self._context = list(context)
        if not self._context:
            raise ValueError("Module: context must name at least one device")
        if work_load_list is None:
            work_load_list = [1] * len(self._context)
        if len(work_load_list) != len(self._context):
            raise ValueError(f"Module: work_load_list has {len(work_load_list)} entries for "
                             f"{len(self._context)} contexts")
        self._work_load_list = list(work_load_list)
        if group2ctxs is not None:
            raise MXNetError("Module: group2ctxs (model parallelism) is not supported by mxc")
        self._symbol = symbol
        data_names = list(data_names) if data_names is not None else []
        label_names = list(label_names) if label_names is not None else []
        state_names = list(state_names) if state_names is not None else []
        fixed_param_names = list(fixed_param_names) if fixed_param_names is not None else []
        _check_input_names(symbol, data_names, "data", True)
        _check_input_names(symbol, label_names, "label", False)
        _check_input_names(symbol, state_names, "state", True)
        _check_input_names(symbol, fixed_param_names, "fixed_param", True)
        arg_names = symbol.list_arguments()
        input_names = data_names + label_names + state_names
        self._param_names = [x for x in arg_names if x not in input_names]
        self._fixed_param_names = fixed_param_names
        self._aux_names = symbol.list_auxiliary_states()
        self._data_names = data_names
        self._label_names = label_names
        self._state_names = state_names
        self._output_names = symbol.list_outputs()
        self._arg_params = None
        self._aux_params = None
        self._params_dirty = False
        self._compression_params = compression_params
        self._optimizer = None
        self._kvstore = None
        self._update_on_kvstore = None
        self._updater = None
        self._preload_opt_states = None
        self._grad_req = None
        self._exec_group = None
        self._data_shapes = None
        self._label_shapes = None

    @staticmethod
    def load(prefix: str, epoch: int, load_optimizer_states: bool = False, **kwargs) -> Module:
        """A Module from ``prefix-symbol.json`` and ``prefix-%04d.params`` (and the optimizer
        states of ``prefix-%04d.states``, loaded at ``init_optimizer``). Keyword arguments go
        to the constructor; call ``bind`` next."""
        from .model import load_checkpoint
        sym, args, auxs = load_checkpoint(prefix, epoch)
        mod = Module(symbol=sym, **kwargs)
        mod._arg_params = args
        mod._aux_params = auxs
        mod.params_initialized = True
        if load_optimizer_states:
            mod._preload_opt_states = f"{prefix}-{epoch:04d}.states"
        return mod

    def save_checkpoint(self, prefix: str, epoch: int, save_optimizer_states: bool = False,
                        remove_amp_cast: bool = True) -> None:
        """Write ``prefix-symbol.json``, ``prefix-%04d.params`` and, optionally, the optimizer
        states as ``prefix-%04d.states``."""
        self._symbol.save(f"{prefix}-symbol.json", remove_amp_cast=remove_amp_cast)
        param_name = f"{prefix}-{epoch:04d}.params"
        self.save_params(param_name)
        logging.getLogger().info('Saved checkpoint to "%s"', param_name)
        if save_optimizer_states:
            state_name = f"{prefix}-{epoch:04d}.states"
            self.save_optimizer_states(state_name)
            logging.getLogger().info('Saved optimizer state to "%s"', state_name)

    def _reset_bind(self) -> None:
        self.binded = False
        self._exec_group = None
        self._data_shapes = None
        self._label_shapes = None

    # -- names and shapes -----------------------------------------------------------------------
    @property
    def data_names(self) -> list:
        return self._data_names

    @property
    def label_names(self) -> list:
        return self._label_names

    @property
    def output_names(self) -> list:
        return self._output_names

    @property
    def data_shapes(self) -> list:
        _require(self.binded, "data_shapes: the module is not bound")
        return self._data_shapes

    @property
    def label_shapes(self):
        _require(self.binded, "label_shapes: the module is not bound")
        return self._label_shapes

    @property
    def output_shapes(self) -> list:
        _require(self.binded, "output_shapes: the module is not bound")
        return self._exec_group.get_output_shapes()

    # -- parameters -----------------------------------------------------------------------------
    def get_params(self) -> tuple:
        """``(arg_params, aux_params)``: host copies of the current parameters."""
        _require(self.binded and self.params_initialized,
                 "get_params: bind the module and initialize its parameters first")
        if self._params_dirty:
            self._sync_params_from_devices()
        return self._arg_params, self._aux_params

    def init_params(self, initializer=_DEFAULT_INIT, arg_params=None, aux_params=None,
                    allow_missing: bool = False, force_init: bool = False,
                    allow_extra: bool = False) -> None:
        """Initialize the parameters: from ``arg_params``/``aux_params`` where given (all of
        them must be, unless ``allow_missing``), else with ``initializer``
        (``Uniform(0.01)`` by default)."""
        if self.params_initialized and not force_init:
            warnings.warn("Parameters already initialized and force_init=False. "
                          "init_params call ignored.", stacklevel=2)
            return
        _require(self.binded, "call bind before initializing the parameters")

        def _impl(name, arr, cache):
            if cache is not None:
                if name in cache:
                    src = cache[name]
                    if src is not arr:
                        if tuple(src.shape) != arr.shape:
                            raise MXNetError(f"init_params: '{name}' has shape "
                                             f"{tuple(src.shape)}, the module needs "
                                             f"{arr.shape}")
                        arr[:] = src
                    return
                if not allow_missing:
                    raise RuntimeError(f"{name} is not presented")
            if initializer is not None:
                initializer(name, arr)

        attrs = self._symbol.attr_dict()
        for name, arr in sorted(self._arg_params.items()):
            _impl(InitDesc(name, attrs.get(name, None)), arr, arg_params)
        for name, arr in sorted(self._aux_params.items()):
            _impl(InitDesc(name, attrs.get(name, None)), arr, aux_params)
        self.params_initialized = True
        self._params_dirty = False
        self._exec_group.set_params(self._arg_params, self._aux_params,
                                    allow_extra=allow_extra)

    def set_params(self, arg_params: dict, aux_params: dict, allow_missing: bool = False,
                   force_init: bool = True, allow_extra: bool = False) -> None:
        """Assign parameter values (every parameter must be given unless
        ``allow_missing``)."""
        if not allow_missing:
            self.init_params(initializer=None, arg_params=arg_params, aux_params=aux_params,
                             allow_missing=allow_missing, force_init=force_init,
                             allow_extra=allow_extra)
            return
        if self.params_initialized and not force_init:
            warnings.warn("Parameters already initialized and force_init=False. "
                          "set_params call ignored.", stacklevel=2)
            return
        _require(self.binded, "call bind before setting the parameters")
        self._exec_group.set_params(arg_params, aux_params or {}, allow_extra=allow_extra)
        self._params_dirty = True
        self.params_initialized = True

    def _sync_params_from_devices(self) -> None:
        self._exec_group.get_params(self._arg_params, self._aux_params)
        self._params_dirty = False

    # -- binding --------------------------------------------------------------------------------
    def bind(self, data_shapes, label_shapes=None, for_training: bool = True,
             inputs_need_grad: bool = False, force_rebind: bool = False, shared_module=None,
             grad_req="write") -> None:
        """Create the executors for the given input shapes (``[(name, shape)]`` or
        DataDescs). A second bind is ignored with a warning unless ``force_rebind``."""
        if force_rebind:
            self._reset_bind()
        if self.binded:
            self.logger.warning("Already bound, ignoring bind()")
            return
        if not for_training and inputs_need_grad:
            raise ModuleError("bind: inputs_need_grad=True needs for_training=True")
        self.for_training = for_training
        self.inputs_need_grad = inputs_need_grad
        self._grad_req = grad_req
        self._data_shapes, self._label_shapes = self._parse_shapes(data_shapes, label_shapes)

        shared_group = None
        if shared_module is not None:
            _require(isinstance(shared_module, Module) and shared_module.binded and
                     shared_module.params_initialized,
                     "bind: shared_module must be a bound Module with initialized parameters")
            shared_group = shared_module._exec_group
            _require(len(shared_group.execs) >= len(self._context),
                     "bind: shared_module has fewer contexts than this module")

        self._exec_group = _ExecGroup(self._symbol, self._context, self._work_load_list,
                                      self._data_shapes, self._label_shapes,
                                      self._param_names, for_training, inputs_need_grad,
                                      shared_group, self._fixed_param_names, grad_req,
                                      self._state_names)
        self.binded = True
        if shared_module is not None:
            self.params_initialized = True
            self._arg_params = shared_module._arg_params
            self._aux_params = shared_module._aux_params
        elif self.params_initialized:
            # re-binding (or Module.load): copy the known parameters into the executors
            self._exec_group.set_params(self._arg_params, self._aux_params)
        else:
            _require(self._arg_params is None and self._aux_params is None,
                     "bind: parameters exist but are not marked initialized")
            self._arg_params = {name: nd.zeros(block[0].shape, dtype=block[0].dtype)
                                for name, block in zip(self._exec_group.param_names,
                                                       self._exec_group.param_arrays)}
            self._aux_params = {name: nd.zeros(block[0].shape, dtype=block[0].dtype)
                                for name, block in zip(self._aux_names,
                                                       self._exec_group.aux_arrays)}
        if shared_module is not None and shared_module.optimizer_initialized:
            self.borrow_optimizer(shared_module)

    def reshape(self, data_shapes, label_shapes=None) -> None:
        """Re-bind for new input shapes, keeping the parameters (their shapes must not
        change)."""
        _require(self.binded, "reshape: the module is not bound")
        dshapes, lshapes = self._parse_shapes(data_shapes, label_shapes)
        self._exec_group.reshape(dshapes, lshapes)
        self._data_shapes, self._label_shapes = dshapes, lshapes

    def _parse_shapes(self, data_shapes, label_shapes) -> tuple:
        """DataDescs of the inputs; labels the symbol does not take (an iterator's labels for
        a network without a label input) are dropped after MXNet's warning."""
        dshapes, lshapes = _parse_data_desc(self._data_names, self._label_names, data_shapes,
                                            label_shapes)
        if lshapes is not None:
            args = set(self._symbol.list_arguments())
            lshapes = [d for d in lshapes if d.name in args] or None
        return dshapes, lshapes

    # -- optimizer ------------------------------------------------------------------------------
    def init_optimizer(self, kvstore="local", optimizer="sgd",
                       optimizer_params=(("learning_rate", 0.01),),
                       force_init: bool = False) -> None:
        """Install the optimizer (a name with ``optimizer_params``, or an Optimizer) and, where
        needed, the kvstore (see the module docstring)."""
        from . import optimizer as opt
        _require(self.binded and self.params_initialized,
                 "init_optimizer: bind the module and initialize its parameters first")
        if self.optimizer_initialized and not force_init:
            self.logger.warning("optimizer already initialized, ignoring...")
            return
        if self._params_dirty:
            self._sync_params_from_devices()

        kv, update_on_kvstore = _create_kvstore(kvstore, len(self._context), self._arg_params)
        batch_size = self._exec_group.batch_size
        if kv and "dist" in kv.type and "_sync" in kv.type:
            batch_size *= kv.num_workers
        rescale_grad = 1.0 / batch_size

        names = self._exec_group.param_names
        idx2name = {}
        if update_on_kvstore:
            idx2name.update(enumerate(names))
        else:
            n = len(self._context)
            for k in range(n):
                idx2name.update({i * n + k: name for i, name in enumerate(names)})
        if isinstance(optimizer, str):
            optimizer_params = dict(optimizer_params)
            if "rescale_grad" not in optimizer_params:
                optimizer_params["rescale_grad"] = rescale_grad
            optimizer = opt.create(optimizer, sym=self.symbol, param_idx2name=idx2name,
                                   **optimizer_params)
        else:
            if not isinstance(optimizer, opt.Optimizer):
                raise ModuleError(f"init_optimizer: optimizer must be a name or an "
                                  f"mx.optimizer.Optimizer, got {type(optimizer).__name__}")
            if optimizer.rescale_grad != rescale_grad:
                warnings.warn("Optimizer created manually outside Module but rescale_grad is "
                              "not normalized to 1.0/batch_size/num_workers "
                              f"({optimizer.rescale_grad} vs. {rescale_grad}). Is this "
                              "intended?", stacklevel=2)
            if not optimizer.idx2name:
                optimizer.idx2name = idx2name.copy()

        self._optimizer = optimizer
        self._kvstore = kv
        self._update_on_kvstore = update_on_kvstore
        self._updater = None
        if kv:
            if self._compression_params:
                kv.set_gradient_compression(self._compression_params)
            if update_on_kvstore:
                kv.set_optimizer(self._optimizer)
            _initialize_kvstore(kv, self._exec_group.param_arrays, self._arg_params,
                                self._param_names, update_on_kvstore)
        if not update_on_kvstore:
            self._updater = opt.get_updater(optimizer)
        self.optimizer_initialized = True
        if self._preload_opt_states is not None:
            self.load_optimizer_states(self._preload_opt_states)
            self._preload_opt_states = None

    def borrow_optimizer(self, shared_module) -> None:
        """Use ``shared_module``'s optimizer, store and updater."""
        _require(shared_module.optimizer_initialized,
                 "borrow_optimizer: the shared module has no optimizer")
        self._optimizer = shared_module._optimizer
        self._kvstore = shared_module._kvstore
        self._update_on_kvstore = shared_module._update_on_kvstore
        self._updater = shared_module._updater
        self.optimizer_initialized = True

    def save_optimizer_states(self, fname: str) -> None:
        """Write the optimizer states (from the store when it runs the updates)."""
        _require(self.optimizer_initialized, "save_optimizer_states: call init_optimizer "
                                             "first")
        if self._update_on_kvstore:
            self._kvstore.save_optimizer_states(fname)
        else:
            with open(fname, "wb") as f:
                f.write(self._updater.get_states())

    def load_optimizer_states(self, fname: str) -> None:
        """Read optimizer states written by :meth:`save_optimizer_states`."""
        _require(self.optimizer_initialized, "load_optimizer_states: call init_optimizer "
                                             "first")
        if self._update_on_kvstore:
            self._kvstore.load_optimizer_states(fname)
        else:
            with open(fname, "rb") as f:
                self._updater.set_states(f.read())

    # -- computation ----------------------------------------------------------------------------
    def forward(self, data_batch, is_train=None) -> None:
        """Run the forward pass on ``data_batch`` (``is_train`` defaults to
        ``for_training``). A batch of other input shapes re-binds (``reshape``) first."""
        _require(self.binded and self.params_initialized,
                 "forward: bind the module and initialize its parameters first")
        curr = tuple(d.shape for d in self._data_shapes)
        if isinstance(data_batch, list):
            _require(len(data_batch) == 1, "forward: a list of batches (pre-sliced per "
                                           "device) is not supported; pass one DataBatch")
            data_batch = data_batch[0]
        new = tuple(tuple(d.shape) for d in data_batch.data)
        if curr != new:
            if getattr(data_batch, "provide_data", None):
                new_dshape = data_batch.provide_data
            else:
                new_dshape = [DataDesc(d.name, shape, d.dtype, d.layout)
                              for d, shape in zip(self._data_shapes, new)]
            if getattr(data_batch, "provide_label", None):
                new_lshape = data_batch.provide_label
            elif getattr(data_batch, "label", None) and self._label_shapes:
                new_lshape = [DataDesc(d.name, tuple(lb.shape), d.dtype, d.layout)
                              for d, lb in zip(self._label_shapes, data_batch.label)]
            elif self._label_shapes:
                # no labels in the batch: keep the bound labels, resized to the new batch
                new_lshape = [_with_batch(d, _batch_size_of(new_dshape))
                              for d in self._label_shapes]
            else:
                new_lshape = None
            self.reshape(new_dshape, new_lshape)
        self._exec_group.forward(data_batch, is_train)

    def backward(self, out_grads=None) -> None:
        """Run the backward pass of the last ``forward(is_train=True)``."""
        _require(self.binded and self.params_initialized,
                 "backward: bind the module and initialize its parameters first")
        self._exec_group.backward(out_grads=out_grads)

    def update(self) -> None:
        """Apply the optimizer to the gradients of the last backward pass."""
        _require(self.binded and self.params_initialized and self.optimizer_initialized,
                 "update: bind, initialize the parameters and call init_optimizer first")
        self._params_dirty = True
        g = self._exec_group
        if self._update_on_kvstore:
            _update_params_on_kvstore(g.param_arrays, g.grad_arrays, self._kvstore,
                                      g.param_names)
        else:
            _update_params(g.param_arrays, g.grad_arrays, updater=self._updater,
                           num_device=len(self._context), kvstore=self._kvstore,
                           param_names=g.param_names)

    def get_outputs(self, merge_multi_context: bool = True) -> list:
        """The outputs of the last forward pass (merged over devices by default)."""
        _require(self.binded and self.params_initialized,
                 "get_outputs: bind the module and initialize its parameters first")
        return self._exec_group.get_outputs(merge_multi_context=merge_multi_context)

    def get_input_grads(self, merge_multi_context: bool = True) -> list:
        """Gradients of the data inputs (bind with ``inputs_need_grad=True``)."""
        _require(self.binded and self.params_initialized and self.inputs_need_grad,
                 "get_input_grads: bind with inputs_need_grad=True")
        return self._exec_group.get_input_grads(merge_multi_context=merge_multi_context)

    def get_states(self, merge_multi_context: bool = True) -> list:
        """The state inputs (``state_names``)."""
        _require(self.binded and self.params_initialized,
                 "get_states: bind the module and initialize its parameters first")
        return self._exec_group.get_states(merge_multi_context=merge_multi_context)

    def set_states(self, states=None, value=None) -> None:
        """Set the state inputs from arrays or a scalar ``value``."""
        _require(self.binded and self.params_initialized,
                 "set_states: bind the module and initialize its parameters first")
        self._exec_group.set_states(states, value)

    def update_metric(self, eval_metric, labels, pre_sliced: bool = False) -> None:
        """Accumulate ``eval_metric`` over the outputs of the last forward pass (padded
        examples count, as in MXNet)."""
        self._exec_group.update_metric(eval_metric, labels, pre_sliced)

    def install_monitor(self, mon) -> None:
        """Attach a monitor to the executors (its ``install(executor)`` is called)."""
        _require(self.binded, "install_monitor: the module is not bound")
        if hasattr(mon, "install"):
            self._exec_group.install_monitor(mon)
