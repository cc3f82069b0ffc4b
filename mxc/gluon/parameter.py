"""Gluon parameters (MXNet 1.x's ``mx.gluon.Parameter``, ``Constant``, ``ParameterDict``).

A :class:`Parameter` holds one copy of its value per context once initialized, and (unless
``grad_req='null'``) a gradient buffer per copy, attached to the value for autograd. A shape
with unknown dimensions (0, or -1 under numpy shape semantics) defers initialization until a
Block infers the shape from its first input (``allow_deferred_init``).

:class:`ParameterDict` maps full names (``dense0_weight``) to parameters, creates them on
``get`` under its prefix, shares them through ``shared``, and saves / loads the MXNet
``.params`` format (an NDArray dict; ``arg:``/``aux:`` prefixes accepted on load).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np

from ..base import MXNetError
from . import _autograd as ag
from .utils import _brief_print_list, _indent, shape_is_known

__all__ = ["Constant", "DeferredInitializationError", "Parameter", "ParameterDict",
           "ParameterLoadError"]


class DeferredInitializationError(MXNetError):
    """A parameter's initialization is deferred until its shape is known."""


class ParameterLoadError(MXNetError, AssertionError, ValueError):
    """Loading parameters failed: names missing from or extra in a file, or a shape / dtype
    mismatch (MXNet raises AssertionError or ValueError there; this is both)."""


class ParameterError(MXNetError, AssertionError, ValueError):
    """Invalid use of a Parameter (bad grad_req, shape or attribute conflict)."""


def _nd():
    from ..frontend import ndarray
    return ndarray


def _sym():
    from ..frontend import symbol
    return symbol


def _init_mod():
    from ..frontend import initializer
    return initializer


def _ctx_mod():
    from ..frontend import context
    return context


def __getattr__(name):
    if name == "tensor_types":
        return (_sym().Symbol, _nd().NDArray)
    raise AttributeError(name)


def _np_shape() -> bool:
    from ..frontend.util import is_np_shape
    return is_np_shape()


def _default_uniform():
    return _init_mod().Uniform()


class Parameter:
    """A container of a Block's weights (MXNet's ``gluon.Parameter``)."""

    def __init__(self, name: str, grad_req: str = "write", shape=None, dtype=np.float32,
                 lr_mult: float = 1.0, wd_mult: float = 1.0, init=None,
                 allow_deferred_init: bool = False, differentiable: bool = True,
                 stype: str = "default", grad_stype: str = "default") -> None:
        self._var = None
        self._data = None
        self._grad = None
        self._ctx_list = None
        self._ctx_map = None
        self._trainer = None
        self._deferred_init = ()
        self._differentiable = differentiable
        self._allow_deferred_init = allow_deferred_init
        self._grad_req = None
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        self._shape = tuple(shape) if shape is not None else None
        self.name = name
        self._dtype = dtype
        self.lr_mult = lr_mult
        self.wd_mult = wd_mult
        self.grad_req = grad_req
        self.init = init
        valid = ("default", "row_sparse", "csr")
        if grad_stype not in valid:
            raise ParameterError(f"grad_stype for Parameter '{name}' must be one of 'default', "
                                 f"'row_sparse', or 'csr', but got '{grad_stype}'")
        if stype not in valid:
            raise ParameterError(f"stype for Parameter '{name}' must be one of 'default', "
                                 f"'row_sparse', or 'csr', but got '{stype}'")
        self._grad_stype = grad_stype
        self._stype = stype

    def __repr__(self) -> str:
        return f"Parameter {self.name} (shape={self.shape}, dtype={self.dtype})"

    # -- attributes -------------------------------------------------------------------------
    @property
    def grad_req(self) -> str:
        return self._grad_req

    @grad_req.setter
    def grad_req(self, req: str) -> None:
        if req not in ("write", "add", "null"):
            raise ParameterError(f"grad_req must be one of 'write', 'add', or 'null', but got "
                                 f"'{req}'")
        if not self._differentiable:
            req = "null"
        if self._grad_req == req:
            return
        self._grad_req = req
        if req == "null" and self._grad is not None:
            self._grad = None
            self._data = [_detach(d) for d in self._data]
        elif self._data is not None:
            self._init_grad()

    @property
    def dtype(self):
        """The parameter's dtype (setting it casts the value)."""
        return self._dtype

    @dtype.setter
    def dtype(self, dtype) -> None:
        self.cast(dtype)

    @property
    def shape(self):
        """The shape; unknown dimensions are 0 (-1 under numpy shape semantics)."""
        if self._shape is None:
            return None
        if _np_shape():
            return tuple(d if d != 0 else -1 for d in self._shape)
        return self._shape

    @shape.setter
    def shape(self, new_shape) -> None:
        if new_shape is not None:
            new_shape = tuple(int(d) for d in new_shape)
        if self._shape is None:
            self._shape = new_shape
            return
        if new_shape is None or len(self._shape) != len(new_shape) or not all(
                j in (-1, 0, i) for i, j in zip(new_shape, self._shape)):
            raise ParameterError(f"Expected shape {new_shape} is incompatible with given shape "
                                 f"{self._shape} for Parameter '{self.name}'.")
        self._shape = new_shape

    @property
    def stype(self) -> str:
        return self._stype

    @property
    def grad_stype(self) -> str:
        return self._grad_stype

    def _set_trainer(self, trainer) -> None:
        if self._stype != "default" and self._trainer and trainer and \
                self._trainer is not trainer:
            raise MXNetError(f"Failed to set the trainer for Parameter '{self.name}' because it "
                             f"was already set. More than one trainers for a {self._stype} "
                             "Parameter is not supported.")
        self._trainer = trainer

    # -- access -------------------------------------------------------------------------------
    def _check_and_get(self, arr_list, ctx):
        if arr_list is not None:
            if ctx is list:
                return arr_list
            if ctx is None:
                if len(arr_list) == 1:
                    return arr_list[0]
                ctx = _ctx_mod().current_context()
            ctx_list = self._ctx_map[ctx.device_typeid & 1]
            if ctx.device_id < len(ctx_list):
                idx = ctx_list[ctx.device_id]
                if idx is not None:
                    return arr_list[idx]
            raise MXNetError(f"Parameter '{self.name}' was not initialized on context {ctx}. "
                             f"It was only initialized on {self._ctx_list}.")
        if self._deferred_init:
            raise DeferredInitializationError(
                f"Parameter '{self.name}' has not been initialized yet because initialization "
                "was deferred. Actual initialization happens during the first forward pass. "
                "Please pass one batch of data through the network before accessing "
                "Parameters. You can also avoid deferred initialization by specifying "
                "in_units, num_features, etc., for network layers.")
        raise MXNetError(
            f"Parameter '{self.name}' has not been initialized. Note that you should "
            "initialize parameters and create Trainer with Block.collect_params() instead of "
            "Block.params because the later does not include Parameters of nested child Blocks")

    def data(self, ctx=None):
        """The value on ``ctx`` (the only context when there is one)."""
        if self._stype != "default":
            raise MXNetError(f"Cannot return a copy of Parameter '{self.name}' on ctx {ctx} via "
                             f"data() because its storage type is {self._stype}. Please use "
                             "row_sparse_data() instead.")
        return self._check_and_get(self._data, ctx)

    def list_data(self) -> list:
        """The values on all contexts, in initialization order."""
        if self._stype != "default":
            raise MXNetError(f"Cannot return copies of Parameter '{self.name}' on all contexts "
                             f"via list_data() because its storage type is {self._stype}. "
                             "Please use row_sparse_data() instead.")
        return self._check_and_get(self._data, list)

    def row_sparse_data(self, row_id):
        """The value on ``row_id``'s context (mxc keeps row_sparse parameters dense)."""
        return self._check_and_get(self._data, row_id.context)

    def list_row_sparse_data(self, row_id) -> list:
        return self._check_and_get(self._data, list)

    def grad(self, ctx=None):
        """The gradient buffer on ``ctx``."""
        if self._data is not None and self._grad is None:
            raise MXNetError(f"Cannot get gradient array for Parameter '{self.name}' because "
                             "grad_req='null'")
        return self._check_and_get(self._grad, ctx)

    def list_grad(self) -> list:
        if self._data is not None and self._grad is None:
            raise MXNetError(f"Cannot get gradient array for Parameter '{self.name}' because "
                             "grad_req='null'")
        return self._check_and_get(self._grad, list)

    def list_ctx(self) -> list:
        """The contexts this parameter is (or will be, when deferred) initialized on."""
        if self._data is None:
            if self._deferred_init:
                return self._deferred_init[1]
            raise MXNetError(f"Parameter '{self.name}' has not been initialized")
        return self._ctx_list

    # -- initialization ---------------------------------------------------------------------
    def initialize(self, init=None, ctx=None, default_init=None,
                   force_reinit: bool = False) -> None:
        """Create the value (and gradient) arrays on ``ctx`` (a context or a list of them).
        ``init`` overrides the parameter's own ``init``, which overrides ``default_init``
        (Uniform(0.07) when not given)."""
        if default_init is None:
            default_init = _default_uniform()
        if self._data is not None and not force_reinit:
            warnings.warn(f"Parameter '{self.name}' is already initialized, ignoring. Set "
                          "force_reinit=True to re-initialize.", stacklevel=2)
            return
        self._data = self._grad = None
        ctx = _ctx_list(ctx)
        if init is None:
            init = default_init if self.init is None else self.init
        if not shape_is_known(self.shape):
            if self._allow_deferred_init:
                self._deferred_init = (init, ctx, default_init, None)
                return
            raise ParameterError(f"Cannot initialize Parameter '{self.name}' because it has "
                                 f"invalid shape: {self.shape}.")
        self._deferred_init = (init, ctx, default_init, None)
        self._finish_deferred_init()

    def _finish_deferred_init(self) -> None:
        """Initialize now that the shape is known."""
        if not self._deferred_init:
            return
        init, ctx, default_init, data = self._deferred_init
        self._deferred_init = ()
        if not shape_is_known(self.shape):
            raise ParameterError(f"Cannot initialize Parameter '{self.name}' because it has "
                                 f"invalid shape: {self.shape}. Please specify in_units, "
                                 "in_channels, etc for `Block`s.")
        with ag.pause():
            if data is None:
                nd = _nd()
                data = nd.zeros(self.shape, dtype=self.dtype, ctx=_ctx_mod().cpu())
                im = _init_mod()
                im.create(default_init)(im.InitDesc(self.name, {"__init__": init}), data)
            self._init_impl(data, ctx)

    def _init_impl(self, data, ctx_list) -> None:
        self._ctx_list = list(ctx_list)
        self._ctx_map = [[], []]
        for i, ctx in enumerate(self._ctx_list):
            dev_list = self._ctx_map[ctx.device_typeid & 1]
            while len(dev_list) <= ctx.device_id:
                dev_list.append(None)
            dev_list[ctx.device_id] = i
        self._data = [data.copyto(c) for c in self._ctx_list]
        self._init_grad()

    def _init_grad(self) -> None:
        if self.grad_req == "null":
            self._grad = None
            return
        nd = _nd()
        self._grad = [nd.zeros(d.shape, ctx=d.context, dtype=d.dtype) for d in self._data]
        ag.mark_variables(self._check_and_get(self._data, list), self._grad,
                          [self.grad_req] * len(self._data))

    def _load_init(self, data, ctx, cast_dtype: bool = False,
                   dtype_source: str = "current") -> None:
        """(Re)initialize from the NDArray ``data`` (a loaded value)."""
        if cast_dtype and dtype_source not in ("current", "saved"):
            raise ParameterError(f"dtype_source must be 'current' or 'saved', got "
                                 f"{dtype_source!r}")
        if self.shape:
            unknown = -1 if _np_shape() else 0
            if len(self.shape) != len(data.shape) or any(
                    s not in (unknown, d) for s, d in zip(self.shape, data.shape)):
                raise ParameterLoadError(
                    f"Failed loading Parameter '{self.name}' from saved params: shape "
                    f"incompatible expected {self.shape} vs saved {data.shape}")
            self.shape = tuple(s if s != unknown else d for s, d in zip(self.shape,
                                                                        data.shape))
        if self.dtype is not None:
            want = _np_dtype(self.dtype)
            have = _np_dtype(data.dtype)
            if want != have:
                if cast_dtype:
                    if dtype_source == "current":
                        data = data.astype(self.dtype, copy=False)
                    else:
                        self._dtype = data.dtype
                else:
                    raise ParameterLoadError(
                        f"Failed loading Parameter '{self.name}' from saved params: dtype "
                        f"incompatible expected {want} vs saved {have}. Set cast_dtype=True to "
                        "cast the dtype of saved params.")
        if getattr(data, "stype", "default") != "default":
            data = data.tostype("default")
        if _is_context(ctx):
            ctx = [ctx]
        if self._data is None:
            if self._deferred_init:
                if ctx is not None and set(ctx) != set(self._deferred_init[1]):
                    raise ParameterLoadError(
                        f"Failed to load Parameter '{self.name}' on {ctx} because it was "
                        f"previous initialized on {self.list_ctx()}.")
                ctx = self._deferred_init[1]
            elif ctx is None:
                ctx = [_ctx_mod().cpu()]
            self._init_impl(data, ctx)
        else:
            if ctx is not None and set(ctx) != set(self.list_ctx()):
                raise ParameterLoadError(
                    f"Failed to load Parameter '{self.name}' on {ctx} because it was "
                    f"previous initialized on {self.list_ctx()}.")
            self.set_data(data)
        self._deferred_init = ()

    def _reduce(self):
        """The value on cpu (the mean of the copies when on several contexts)."""
        cpu = _ctx_mod().cpu()
        block = self.list_data()
        if len(block) > 1:
            nd = _nd()
            return nd.add_n(*(w.copyto(cpu) for w in block)) / len(block)
        return self.data().copyto(cpu)

    def reset_ctx(self, ctx) -> None:
        """Move the parameter to other context(s)."""
        ctx = _ctx_list(ctx)
        if self._data:
            data = self._reduce()
            with ag.pause():
                self._init_impl(data, ctx)
        elif self._deferred_init:
            init, _, default_init, data = self._deferred_init
            self._deferred_init = (init, ctx, default_init, data)
        else:
            raise MXNetError(f"Cannot reset context for Parameter '{self.name}' because it has "
                             "not been initialized.")

    def set_data(self, data) -> None:
        """Set the value on every context (copied into the existing arrays)."""
        self.shape = data.shape
        if self._data is None:
            if not self._deferred_init:
                raise MXNetError(f"Parameter '{self.name}' has not been initialized")
            self._deferred_init = self._deferred_init[:3] + (data,)
            return
        trainer = self._trainer
        if trainer is not None and getattr(trainer, "_kv_initialized", False) and \
                getattr(trainer, "_update_on_kvstore", False) and \
                self not in trainer._params_to_init:
            trainer._reset_kvstore()
        for arr in self._check_and_get(self._data, list):
            arr[:] = data

    def zero_grad(self) -> None:
        """Set the gradient buffers to 0 (nothing when there are none)."""
        if self._grad is None:
            return
        for g in self._grad:
            g[:] = 0

    def var(self):
        """The Symbol variable of this parameter (created once, with ``__shape__``,
        ``__dtype__``, ``__lr_mult__``, ``__wd_mult__``, ``__init__``, ``__storage_type__``)."""
        if self._var is None:
            self._var = _sym().var(self.name, shape=self.shape, dtype=self.dtype,
                                   lr_mult=self.lr_mult, wd_mult=self.wd_mult,
                                   init=self.init, stype=self._stype)
        return self._var

    def cast(self, dtype) -> None:
        """Cast the value and gradient to ``dtype``."""
        self._dtype = dtype
        if self._data is None:
            return
        with ag.pause():
            self._data = [d.astype(dtype) for d in self._data]
            if self._grad is None:
                return
            self._grad = [g.astype(dtype) for g in self._grad]
            ag.mark_variables(self._data, self._grad, [self.grad_req] * len(self._data))


def _detach(arr):
    d = getattr(arr, "detach", None)
    if d is not None:
        return d()
    return arr


def _np_dtype(dt):
    """A numpy dtype for comparisons (bfloat16's structured dtype kept)."""
    try:
        return np.dtype(dt)
    except TypeError:
        from ..frontend.ndarray import to_dtype
        return to_dtype(dt).np


def _is_context(x) -> bool:
    return isinstance(x, _ctx_mod().Context)


def _ctx_list(ctx) -> list:
    if ctx is None:
        return [_ctx_mod().current_context()]
    if _is_context(ctx):
        return [ctx]
    return list(ctx)


class Constant(Parameter):
    """A parameter holding a constant (``grad_req`` is always 'null'; Trainer and autograd
    ignore it, ``set_data`` still changes it)."""

    def __init__(self, name: str, value) -> None:
        nd = _nd()
        if not isinstance(value, nd.NDArray):
            value = nd.array(value)
        self.value = value
        im = _init_mod()

        class Init(im.Initializer):
            def _init_weight(self, _, arr):
                value.copyto(arr)

        init_name = f"Constant_{name}_{id(self)}".lower()  # the registry is case-blind
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.alias(init_name)(Init)
        super().__init__(name, grad_req="null", shape=value.shape, dtype=value.dtype,
                         init=init_name)

    def __repr__(self) -> str:
        return f"Constant {self.name} (shape={self.shape}, dtype={self.dtype})"

    @property
    def grad_req(self) -> str:
        return "null"

    @grad_req.setter
    def grad_req(self, req: str) -> None:
        if req != "null":
            warnings.warn(f'Constant parameter "{self.name}" does not support grad_req other '
                          f'than "null", and new value "{req}" is ignored.', stacklevel=2)


class ParameterDict:
    """An ordered name -> Parameter dict with a prefix for the names it creates."""

    def __init__(self, prefix: str = "", shared: ParameterDict | None = None) -> None:
        self._prefix = prefix
        self._params: OrderedDict = OrderedDict()
        self._shared = shared

    def __repr__(self) -> str:
        name = self._prefix + " " if self._prefix else ""
        content = "\n".join(_indent(f"  {v}", 2) for v in self.values())
        return f"{name}(\n{content}\n)"

    def __getitem__(self, key: str) -> Parameter:
        return self._params[key]

    def __iter__(self):
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __contains__(self, key) -> bool:
        return key in self._params

    def items(self):
        return self._params.items()

    def keys(self):
        return self._params.keys()

    def values(self):
        return self._params.values()

    @property
    def prefix(self) -> str:
        return self._prefix

    def _get_impl(self, name: str):
        if name in self._params:
            return self._params[name]
        if self._shared is not None and name in self._shared._params:
            self._params[name] = self._shared._params[name]
            return self._shared._params[name]
        return None

    def get(self, name: str, **kwargs) -> Parameter:
        """The parameter ``prefix + name``: found here, in ``shared``, or created with
        ``kwargs``. Attributes given for an existing parameter must agree with it (unknown
        shape dimensions are filled in)."""
        name = self.prefix + name
        param = self._get_impl(name)
        if param is None:
            param = Parameter(name, **kwargs)
            self._params[name] = param
            return param
        for k, v in kwargs.items():
            if hasattr(param, k) and getattr(param, k) is not None:
                existing = getattr(param, k)
                if k == "shape" and v is not None and len(v) == len(existing):
                    inferred = []
                    matched = True
                    for d1, d2 in zip(v, existing):
                        if d1 != d2 and d1 > 0 and d2 > 0:
                            matched = False
                            break
                        if d1 == d2:
                            inferred.append(d1)
                        elif d1 in (0, -1):
                            inferred.append(d2)
                        else:
                            inferred.append(d1)
                    if matched:
                        param._shape = tuple(inferred)
                        continue
                elif k == "dtype" and v is not None and _np_dtype(v) == _np_dtype(existing):
                    continue
                if not (v is None or v == existing):
                    raise ParameterError(
                        f"Cannot retrieve Parameter '{name}' because desired attribute does "
                        f"not match with stored for attribute '{k}': desired '{v}' vs stored "
                        f"'{existing}'.")
            else:
                setattr(param, k, v)
        return param

    def get_constant(self, name: str, value=None) -> Constant:
        """The Constant ``prefix + name``, created with ``value`` when not found."""
        name = self.prefix + name
        param = self._get_impl(name)
        if param is None:
            if value is None:
                raise KeyError(f"No constant named '{name}'. Please specify value if you want "
                               "to create a new constant.")
            param = Constant(name, value)
            self._params[name] = param
        elif value is not None:
            if not isinstance(param, Constant):
                raise ParameterError(f"Parameter '{name}' already exists but it is not a "
                                     "constant.")
            nd = _nd()
            if isinstance(value, nd.NDArray):
                value = value.asnumpy()
            value = np.asarray(value)
            if param.shape != value.shape or not (param.value.asnumpy() == value).all():
                raise ParameterError(f"Constant '{name}' already exists but it's value doesn't "
                                     "match new value")
        return param

    def update(self, other) -> None:
        """Add every parameter of ``other`` (a name clash with a different parameter is an
        error)."""
        for k, v in other.items():
            if k in self._params and self._params[k] is not v:
                raise ParameterError(f"Cannot update self with other because they have "
                                     f"different Parameters with the same name '{k}'")
        for k, v in other.items():
            self._params[k] = v

    def initialize(self, init=None, ctx=None, verbose: bool = False,
                   force_reinit: bool = False) -> None:
        """Initialize every parameter; ``init`` is the default for those without their own."""
        if init is None:
            init = _default_uniform()
        if verbose and hasattr(init, "set_verbosity"):
            init.set_verbosity(verbose=verbose)
        for v in self.values():
            v.initialize(None, ctx, init, force_reinit=force_reinit)

    def zero_grad(self) -> None:
        """Set every gradient buffer to 0."""
        for p in self.values():
            p.zero_grad()

    def reset_ctx(self, ctx) -> None:
        for p in self.values():
            p.reset_ctx(ctx)

    def list_ctx(self) -> list:
        s = []
        for p in self.values():
            for c in p.list_ctx():
                if c not in s:
                    s.append(c)
        return s

    def setattr(self, name: str, value) -> None:
        """Set attribute ``name`` (``grad_req``, ``lr_mult``...) on every parameter."""
        for p in self.values():
            setattr(p, name, value)

    def save(self, filename: str, strip_prefix: str = "") -> None:
        """Save to ``filename`` (names with ``strip_prefix`` removed)."""
        arg_dict = {}
        for param in self.values():
            weight = param._reduce()
            if not param.name.startswith(strip_prefix):
                raise ParameterError(
                    f"Prefix '{strip_prefix}' is to be striped before saving, but Parameter's "
                    f"name '{param.name}' does not start with '{strip_prefix}'. this may be due "
                    "to your Block shares parameters from other Blocks or you forgot to use "
                    "'with name_scope()' when creating child blocks.")
            arg_dict[param.name[len(strip_prefix):]] = weight
        _nd().save(filename, arg_dict)

    def load(self, filename: str, ctx=None, allow_missing: bool = False,
             ignore_extra: bool = False, restore_prefix: str = "", cast_dtype: bool = False,
             dtype_source: str = "current") -> None:
        """Load from a file written by :meth:`save` or ``mx.model.save_checkpoint``."""
        if restore_prefix:
            for name in self.keys():
                if not name.startswith(restore_prefix):
                    raise ParameterLoadError(
                        f"restore_prefix is '{restore_prefix}' but Parameters name '{name}' "
                        f"does not start with '{restore_prefix}'.")
        loaded = _nd().load(filename)
        if isinstance(loaded, list):
            if loaded:
                raise ParameterLoadError(f"file '{filename}' holds an unnamed list of arrays, "
                                         "not named parameters")
            loaded = {}
        self.load_dict(loaded, ctx, allow_missing, ignore_extra, restore_prefix, filename,
                       cast_dtype, dtype_source)

    def load_dict(self, param_dict, ctx=None, allow_missing: bool = False,
                  ignore_extra: bool = False, restore_prefix: str = "", filename=None,
                  cast_dtype: bool = False, dtype_source: str = "current") -> None:
        """Load from a dict name -> NDArray (``arg:``/``aux:`` prefixes are dropped)."""
        lprefix = len(restore_prefix)
        items = param_dict.items() if isinstance(param_dict, dict) else param_dict
        loaded = [(k[4:] if k.startswith(("arg:", "aux:")) else k, v) for k, v in items]
        arg_dict = {restore_prefix + k: v for k, v in loaded}
        where = f"file: {filename}" if filename else "param_dict"
        if not allow_missing:
            missing = [n for n in self.keys() if n not in arg_dict]
            if missing:
                raise ParameterLoadError(
                    f"Parameter {_brief_print_list([m[lprefix:] for m in missing])} "
                    f"{'is' if len(missing) == 1 else 'are'} missing in {where}, which "
                    f"contains parameters: {_brief_print_list(arg_dict.keys())}. Please make "
                    "sure source and target networks have the same prefix. Set "
                    "allow_missing=True to ignore missing parameters.")
        if not ignore_extra:
            extra = [n for n in arg_dict if n not in self._params]
            if extra:
                raise ParameterLoadError(
                    f"Parameter {_brief_print_list([e[lprefix:] for e in extra])} loaded from "
                    f"{where} {'is' if len(extra) == 1 else 'are'} not present in "
                    f"ParameterDict, choices are: {_brief_print_list(self._params.keys())}. "
                    "Set ignore_extra to True to ignore. Please make sure source and target "
                    "networks have the same prefix.")
        for name, value in arg_dict.items():
            if name in self._params:
                self._params[name]._load_init(value, ctx, cast_dtype=cast_dtype,
                                              dtype_source=dtype_source)
