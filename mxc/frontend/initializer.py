"""``mx.init`` / ``mx.initializer``: MXNet 1.x's weight initializers.

An initializer is called as ``init(InitDesc(name, attrs), arr)`` and fills the NDArray ``arr``
in place (``arr[:] = ...``). It dispatches on the parameter name as MXNet does: names ending
in ``weight`` go to ``_init_weight`` (the initializer's own rule), ``bias``/``beta`` become 0,
``gamma`` 1, ``min`` 0, ``max`` 1; a variable's ``__init__`` attribute (an initializer's JSON,
``'["uniform", {"scale": 0.01}]'``) overrides the rule. Variables of known auxiliary states
(``moving_mean``/``moving_var``/``moving_inv_var``/``moving_avg``) get their MXNet defaults
even without the ``__init__`` attribute MXNet's BatchNorm attaches to them.

Random values come from the numpy generator behind ``mx.random.seed``
(:func:`mxc.runtime.random.generator`), so a seeded run initializes identically (the values
are not MXNet's: its samplers are different generators).
"""
from __future__ import annotations

import json
import logging
import re
import warnings
from math import sqrt

import numpy as np

from ..base import MXNetError, string_types
from ..runtime import random as _rt_random

_log = logging.getLogger(__name__)

__all__ = [
    "Bilinear",
    "Constant",
    "FusedRNN",
    "InitDesc",
    "Initializer",
    "LSTMBias",
    "Load",
    "MSRAPrelu",
    "Mixed",
    "Normal",
    "One",
    "Orthogonal",
    "Uniform",
    "Xavier",
    "Zero",
    "alias",
    "create",
    "register",
]


class InitError(MXNetError, AssertionError):
    """A failed check (an AssertionError in MXNet; both classes here, so either catches it)."""


class RegistryError(InitError):
    """An unknown initializer name."""


# ------------------------------------------------------------------------------------------
# random helpers (all draws come from mx.random.seed's generator)
# ------------------------------------------------------------------------------------------
def _rng() -> np.random.Generator:
    return _rt_random.generator()


def _uniform(low, high, shape) -> np.ndarray:
    return _rng().uniform(low, high, size=tuple(shape)).astype(np.float32)


def _normal(loc, scale, shape) -> np.ndarray:
    return _rng().normal(loc, scale, size=tuple(shape)).astype(np.float32)


def _shape(arr) -> tuple:
    return tuple(arr.shape)


def _new_nd(shape):
    from . import ndarray as nd
    return nd.zeros(shape)


# ------------------------------------------------------------------------------------------
# descriptor and base class
# ------------------------------------------------------------------------------------------
class InitDesc(str):
    """A parameter's name (the ``str`` value) with its variable attributes (``attrs``, from
    ``Symbol.attr_dict()``) and the global initializer to fall back to (``global_init``)."""

    def __new__(cls, name, attrs=None, global_init=None):
        ret = super().__new__(cls, name)
        ret.attrs = attrs or {}
        ret.global_init = global_init
        return ret


class Initializer:
    """Base class of initializers. Subclasses implement ``_init_weight(name, arr)``."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        self._verbose = False
        self._print_func = None

    def set_verbosity(self, verbose=False, print_func=None):
        """Log a statistic of every initialized array (default: ``norm(x)/sqrt(size)``)."""
        self._verbose = verbose
        if print_func is None:
            def asum_stat(x):
                """|x| / sqrt(size(x))"""
                v = np.asarray(x.asnumpy(), dtype=np.float64)
                return str(np.linalg.norm(v.ravel()) / sqrt(max(v.size, 1)))
            print_func = asum_stat
        self._print_func = print_func
        return self

    def _verbose_print(self, desc, init, arr):
        if self._verbose and self._print_func:
            _log.info("Initialized %s as %s: %s", desc, init, self._print_func(arr))

    def dumps(self):
        """The initializer as MXNet's JSON: ``'["normal", {"sigma": 0.5}]'``."""
        return json.dumps([self.__class__.__name__.lower(), self._kwargs])

    def __eq__(self, other):
        if not isinstance(other, Initializer):
            return NotImplemented
        return type(self) is type(other) and self._kwargs == other._kwargs

    def __hash__(self):
        try:
            return hash((type(self), self.dumps()))
        except (TypeError, ValueError):
            return id(self)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._kwargs.items())})"

    def __call__(self, desc, arr):
        """Initialize ``arr`` (an NDArray) for the parameter described by ``desc``."""
        if not isinstance(desc, InitDesc):
            self._legacy_init(desc, arr)
            return
        if desc.global_init is None:
            desc.global_init = self
        init = desc.attrs.get("__init__", "")
        if init:
            # the variable's own initializer (mx.sym.Variable(init=...))
            create(init)._init_weight(desc, arr)
            self._verbose_print(desc, init, arr)
            return
        if desc.endswith("weight"):
            self._init_weight(desc, arr)
            self._verbose_print(desc, "weight", arr)
        elif desc.endswith("bias"):
            self._init_bias(desc, arr)
            self._verbose_print(desc, "bias", arr)
        elif desc.endswith("gamma"):
            self._init_gamma(desc, arr)
            self._verbose_print(desc, "gamma", arr)
        elif desc.endswith("beta"):
            self._init_beta(desc, arr)
            self._verbose_print(desc, "beta", arr)
        elif desc.endswith("min"):
            self._init_zero(desc, arr)
            self._verbose_print(desc, "min", arr)
        elif desc.endswith("max"):
            self._init_one(desc, arr)
            self._verbose_print(desc, "max", arr)
        elif desc.endswith("weight_quantize"):
            self._init_quantized_weight(desc, arr)
            self._verbose_print(desc, "weight_quantize", arr)
        elif desc.endswith("bias_quantize"):
            self._init_quantized_bias(desc, arr)
            self._verbose_print(desc, "bias_quantize", arr)
        # MXNet's BatchNorm marks these with an __init__ attribute; mxc's symbols may not
        elif desc.endswith(("moving_mean", "moving_inv_var", "moving_avg")):
            self._init_zero(desc, arr)
            self._verbose_print(desc, "zeros", arr)
        elif desc.endswith("moving_var"):
            self._init_one(desc, arr)
            self._verbose_print(desc, "ones", arr)
        else:
            self._init_default(desc, arr)

    def _legacy_init(self, name, arr):
        """``init(str, arr)``: the deprecated call with a plain name."""
        warnings.warn("Calling initializer with init(str, NDArray) has been deprecated. "
                      "please use init(mx.init.InitDesc(...), NDArray) instead.",
                      DeprecationWarning, stacklevel=3)
        if not isinstance(name, string_types):
            raise TypeError("name must be string")
        if not hasattr(arr, "shape") or not hasattr(arr, "__setitem__"):
            raise TypeError("arr must be NDArray")
        if name.startswith("upsampling"):
            self._init_bilinear(name, arr)
        elif name.startswith("stn_loc") and name.endswith("weight"):
            self._init_zero(name, arr)
        elif name.startswith("stn_loc") and name.endswith("bias"):
            self._init_loc_bias(name, arr)
        elif name.endswith("bias"):
            self._init_bias(name, arr)
        elif name.endswith("gamma"):
            self._init_gamma(name, arr)
        elif name.endswith("beta"):
            self._init_beta(name, arr)
        elif name.endswith("weight"):
            self._init_weight(name, arr)
        elif name.endswith("moving_mean"):
            self._init_zero(name, arr)
        elif name.endswith("moving_var"):
            self._init_one(name, arr)
        elif name.endswith(("moving_inv_var", "moving_avg", "min")):
            self._init_zero(name, arr)
        elif name.endswith("max"):
            self._init_one(name, arr)
        else:
            self._init_default(name, arr)

    def _init_bilinear(self, _, arr):
        arr[:] = _bilinear_kernel(_shape(arr))

    def _init_loc_bias(self, _, arr):
        shape = _shape(arr)
        assert shape[0] == 6
        arr[:] = np.array([1.0, 0, 0, 0, 1.0, 0])

    def _init_zero(self, _, arr):
        arr[:] = 0.0

    def _init_one(self, _, arr):
        arr[:] = 1.0

    def _init_bias(self, _, arr):
        arr[:] = 0.0

    def _init_quantized_bias(self, _, arr):
        arr[:] = 0

    def _init_gamma(self, _, arr):
        arr[:] = 1.0

    def _init_beta(self, _, arr):
        arr[:] = 0.0

    def _init_weight(self, name, arr):
        """Abstract: fill a weight."""
        raise NotImplementedError("Must override it")

    def _init_quantized_weight(self, _, arr):
        vals = _rng().integers(-127, 127, size=_shape(arr))
        arr[:] = vals.astype(np.int8)

    def _init_default(self, name, _):
        raise ValueError(
            f"Unknown initialization pattern for {name}. Default initialization is now limited "
            'to "weight", "bias", "gamma" (1.0), and "beta" (0.0).Please use '
            "mx.sym.Variable(init=mx.init.*) to set initialization pattern")


def _bilinear_kernel(shape) -> np.ndarray:
    """MXNet's upsampling (deconvolution) kernel: a bilinear filter over the last two axes."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 4:
        raise ValueError(f"Bilinear initializer needs a 4-D weight, got shape {shape}")
    f = np.ceil(shape[3] / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    n = int(np.prod(shape))
    i = np.arange(n)
    x = i % shape[3]
    y = (i // shape[3]) % shape[2]
    weight = ((1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))).astype(np.float32)
    return weight.reshape(shape)


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
_INITIALIZER_REGISTRY: dict = {}


def _register(klass, name=None):
    if not (isinstance(klass, type) and issubclass(klass, Initializer)):
        raise TypeError("Can only register subclass of Initializer")
    if name is None:
        name = klass.__name__.lower()
    if name in _INITIALIZER_REGISTRY:
        old = _INITIALIZER_REGISTRY[name]
        warnings.warn(f"New initializer {klass.__module__}.{klass.__name__} registered with name "
                      f"{name} is overriding existing initializer {old.__module__}."
                      f"{old.__name__}", UserWarning, stacklevel=2)
    _INITIALIZER_REGISTRY[name] = klass
    return klass


def register(klass):
    """Register an Initializer subclass under its lower-cased class name
    (so ``mx.init.create('myinit')`` and the ``__init__`` attribute can name it)."""
    return _register(klass)


def alias(*aliases):
    """Register the decorated Initializer subclass under further names."""
    def reg(klass):
        for name in aliases:
            _register(klass, name)
        return klass
    return reg


def create(*args, **kwargs):
    """An initializer from its name (``'xavier'``), its JSON (``'["uniform", {"scale":
    0.1}]'``, as written by :meth:`Initializer.dumps`), a dict, or an instance (returned
    as is). Unknown names raise :class:`~mxc.base.MXNetError`."""
    if args:
        name, args = args[0], args[1:]
    else:
        try:
            name = kwargs.pop("initializer")
        except KeyError:
            raise MXNetError("create: an initializer name is required") from None
    if isinstance(name, Initializer):
        if args or kwargs:
            raise MXNetError("initializer is already an instance. Additional arguments are "
                             "invalid")
        return name
    if isinstance(name, dict):
        return create(**name)
    if not isinstance(name, string_types):
        raise MXNetError(f"initializer must be of string type, got {type(name).__name__}")
    if name.startswith("["):
        if args or kwargs:
            raise MXNetError("create: no extra arguments allowed with a JSON initializer")
        name, kwargs = json.loads(name)
        return create(name, **kwargs)
    if name.startswith("{"):
        if args or kwargs:
            raise MXNetError("create: no extra arguments allowed with a JSON initializer")
        return create(**json.loads(name))
    key = name.lower()
    if key not in _INITIALIZER_REGISTRY:
        raise RegistryError(f"{name} is not registered. Please register with "
                            f"initializer.register first")
    return _INITIALIZER_REGISTRY[key](*args, **kwargs)


# ------------------------------------------------------------------------------------------
# composite initializers (not Initializer subclasses, as in MXNet)
# ------------------------------------------------------------------------------------------
class Load:
    """Initialize from a parameter file or a dict name -> NDArray (``arg:``/``aux:`` prefixes
    dropped); names not found go to ``default_init``."""

    def __init__(self, param, default_init=None, verbose=False):
        if isinstance(param, str):
            from . import ndarray as nd
            param = nd.load(param)
        if not isinstance(param, dict):
            raise InitError("Load: param must be a file name or a dict of name -> NDArray")
        self.param = {}
        for name, arr in param.items():
            if name.startswith(("arg:", "aux:")):
                self.param[name[4:]] = arr
            else:
                self.param[name] = arr
        self.default_init = default_init
        self.verbose = verbose

    def __call__(self, name, arr):
        if name in self.param:
            src = self.param[name]
            if tuple(arr.shape) != tuple(src.shape):
                raise InitError(f"Parameter {name} cannot be initialized from loading. Shape "
                                 f"mismatch, target {tuple(arr.shape)} vs loaded "
                                 f"{tuple(src.shape)}")
            arr[:] = src
            if self.verbose:
                _log.info("Initialized %s by loading", name)
        else:
            if self.default_init is None:
                raise InitError(f"Cannot Initialize {name}. Not found in loaded param and no "
                                 "default Initializer is provided.")
            self.default_init(name, arr)
            if self.verbose:
                _log.info("Initialized %s by default", name)


class Mixed:
    """Initialize each parameter with the initializer of the first regex (``re.match``)
    its name matches."""

    def __init__(self, patterns, initializers):
        if len(patterns) != len(initializers):
            raise InitError("Mixed: patterns and initializers must have the same length")
        self.map = list(zip([re.compile(p) for p in patterns], initializers))

    def __call__(self, name, arr):
        for prog, init in self.map:
            if prog.match(name):
                init(name, arr)
                return
        raise ValueError(f"Parameter name {name} did not match any pattern. Consider add a "
                         '".*" pattern at the and with default Initializer.')


# ------------------------------------------------------------------------------------------
# the initializers
# ------------------------------------------------------------------------------------------
@register
@alias("zeros")
class Zero(Initializer):
    """Weights = 0."""

    def __init__(self):
        super().__init__()

    def _init_weight(self, _, arr):
        arr[:] = 0


@register
@alias("ones")
class One(Initializer):
    """Weights = 1."""

    def __init__(self):
        super().__init__()

    def _init_weight(self, _, arr):
        arr[:] = 1


@register
class Constant(Initializer):
    """Weights = ``value`` (a scalar, or an array of the weight's shape)."""

    def __init__(self, value):
        super().__init__(value=value)
        self.value = value

    def _init_weight(self, _, arr):
        v = self.value
        if isinstance(v, list):
            v = np.asarray(v, dtype=np.float32)
        arr[:] = v

    def dumps(self):
        val = self._kwargs["value"]
        if not np.isscalar(val):
            if hasattr(val, "asnumpy"):
                val = val.asnumpy().tolist()
            elif isinstance(val, np.ndarray):
                val = val.tolist()
            self._kwargs["value"] = val
        elif isinstance(val, np.generic):
            self._kwargs["value"] = val.item()
        return json.dumps([self.__class__.__name__.lower(), self._kwargs])


@register
class Uniform(Initializer):
    """Weights ~ U(-scale, scale)."""

    def __init__(self, scale=0.07):
        super().__init__(scale=scale)
        self.scale = scale

    def _init_weight(self, _, arr):
        arr[:] = _uniform(-self.scale, self.scale, _shape(arr))


@register
class Normal(Initializer):
    """Weights ~ N(0, sigma^2)."""

    def __init__(self, sigma=0.01):
        super().__init__(sigma=sigma)
        self.sigma = sigma

    def _init_weight(self, _, arr):
        arr[:] = _normal(0.0, self.sigma, _shape(arr))


@register
class Orthogonal(Initializer):
    """A scaled orthogonal matrix (Saxe et al. 2013) from the SVD of a random matrix of
    shape ``(shape[0], prod(shape[1:]))``; ``rand_type`` 'uniform' or 'normal'."""

    def __init__(self, scale=1.414, rand_type="uniform"):
        super().__init__(scale=scale, rand_type=rand_type)
        self.scale = scale
        self.rand_type = rand_type

    def _init_weight(self, _, arr):
        shape = _shape(arr)
        nout = shape[0]
        nin = int(np.prod(shape[1:]))
        if self.rand_type == "uniform":
            tmp = _uniform(-1.0, 1.0, (nout, nin))
        elif self.rand_type == "normal":
            tmp = _normal(0.0, 1.0, (nout, nin))
        else:
            raise ValueError(f"Unknown random type {self.rand_type}")
        u, _s, v = np.linalg.svd(tmp, full_matrices=False)
        res = u if u.shape == tmp.shape else v
        arr[:] = (self.scale * res.reshape(shape)).astype(np.float32)


@register
class Xavier(Initializer):
    """Glorot initialization: ``scale = sqrt(magnitude / factor)`` with factor the average
    (``'avg'``), fan-in (``'in'``) or fan-out (``'out'``); fan_in = shape[1] * prod(shape[2:]),
    fan_out = shape[0] * prod(shape[2:]). ``rnd_type`` 'uniform' (U(-scale, scale)) or
    'gaussian' (N(0, scale^2))."""

    def __init__(self, rnd_type="uniform", factor_type="avg", magnitude=3):
        super().__init__(rnd_type=rnd_type, factor_type=factor_type, magnitude=magnitude)
        self.rnd_type = rnd_type
        self.factor_type = factor_type
        self.magnitude = float(magnitude)

    def _scale(self, name, shape) -> float:
        hw_scale = 1.0
        if len(shape) < 2:
            raise ValueError(f"Xavier initializer cannot be applied to vector {name}. It requires "
                             "at least 2D.")
        if len(shape) > 2:
            hw_scale = float(np.prod(shape[2:]))
        fan_in, fan_out = shape[1] * hw_scale, shape[0] * hw_scale
        if self.factor_type == "avg":
            factor = (fan_in + fan_out) / 2.0
        elif self.factor_type == "in":
            factor = fan_in
        elif self.factor_type == "out":
            factor = fan_out
        else:
            raise ValueError("Incorrect factor type")
        return float(np.sqrt(self.magnitude / factor))

    def _init_weight(self, name, arr):
        shape = _shape(arr)
        scale = self._scale(name, shape)
        if self.rnd_type == "uniform":
            arr[:] = _uniform(-scale, scale, shape)
        elif self.rnd_type == "gaussian":
            arr[:] = _normal(0.0, scale, shape)
        else:
            raise ValueError("Unknown random type")


@register
class MSRAPrelu(Xavier):
    """He et al. 2015: Xavier with gaussian draws and magnitude ``2 / (1 + slope^2)``."""

    def __init__(self, factor_type="avg", slope=0.25):
        magnitude = 2.0 / (1 + slope ** 2)
        super().__init__("gaussian", factor_type, magnitude)
        self._kwargs = {"factor_type": factor_type, "slope": slope}


@register
class Bilinear(Initializer):
    """Bilinear upsampling kernels for Deconvolution weights."""

    def __init__(self):
        super().__init__()

    def _init_weight(self, _, arr):
        arr[:] = _bilinear_kernel(_shape(arr))


@register
class LSTMBias(Initializer):
    """LSTM biases: 0, except the forget gate (the second quarter) = ``forget_bias``."""

    def __init__(self, forget_bias=1.0):
        super().__init__(forget_bias=forget_bias)
        self.forget_bias = forget_bias

    def _init_weight(self, name, arr):
        vals = np.zeros(_shape(arr), dtype=np.float32)
        num_hidden = int(vals.shape[0] / 4)
        vals[num_hidden:2 * num_hidden] = self.forget_bias
        arr[:] = vals


_RNN_GATES = {"rnn_relu": [""], "rnn_tanh": [""], "lstm": ["_i", "_f", "_c", "_o"],
              "gru": ["_r", "_z", "_o"]}


def _fused_rnn_layout(size, num_hidden, num_layers, mode, bidirectional):
    """[(name, offset, shape)] of the pieces of a fused RNN parameter vector (MXNet's
    FusedRNNCell order: per layer and direction the i2h then h2h gate weights, then all
    biases in the same order)."""
    gates = _RNN_GATES[mode]
    directions = ["l", "r"] if bidirectional else ["l"]
    b, m, h = len(directions), len(gates), num_hidden
    li = size // b // h // m - (num_layers - 1) * (h + b * h + 2) - h - 2
    out = []
    p = 0
    for layer in range(num_layers):
        for d in directions:
            for g in gates:
                shape = (h, b * h) if layer > 0 else (h, li)
                out.append((f"{d}{layer}_i2h{g}_weight", p, shape))
                p += shape[0] * shape[1]
            for g in gates:
                out.append((f"{d}{layer}_h2h{g}_weight", p, (h, h)))
                p += h * h
    for layer in range(num_layers):
        for d in directions:
            for kind in ("i2h", "h2h"):
                for g in gates:
                    out.append((f"{d}{layer}_{kind}{g}_bias", p, (h,)))
                    p += h
    if p != size:
        raise MXNetError(f"FusedRNN: a parameter vector of {size} elements does not fit "
                         f"mode={mode}, num_hidden={num_hidden}, num_layers={num_layers}, "
                         f"bidirectional={bidirectional} ({p} elements)")
    return out


@register
class FusedRNN(Initializer):
    """Initialize the flat parameter vector of a fused RNN layer piece by piece: every gate
    weight with ``init`` (or the global initializer), biases 0, and for LSTM the forget-gate
    bias ``forget_bias``."""

    def __init__(self, init, num_hidden, num_layers, mode, bidirectional=False,
                 forget_bias=1.0):
        if isinstance(init, string_types):
            klass, kwargs = json.loads(init)
            init = _INITIALIZER_REGISTRY[klass.lower()](**kwargs)
        super().__init__(init=init.dumps() if init is not None else None,
                         num_hidden=num_hidden, num_layers=num_layers, mode=mode,
                         bidirectional=bidirectional, forget_bias=forget_bias)
        self._init = init
        self._num_hidden = num_hidden
        self._num_layers = num_layers
        self._mode = mode
        self._bidirectional = bidirectional
        self._forget_bias = forget_bias

    def _init_weight(self, desc, arr):
        size = int(np.prod(_shape(arr)))
        layout = _fused_rnn_layout(size, self._num_hidden, self._num_layers, self._mode,
                                   self._bidirectional)
        flat = np.zeros(size, dtype=np.float32)
        global_init = getattr(desc, "global_init", None)
        for name, off, shape in layout:
            piece = _new_nd(shape)
            n = int(np.prod(shape))
            if self._mode == "lstm" and name.endswith("_f_bias"):
                piece[:] = self._forget_bias
            else:
                arg_desc = InitDesc(name, global_init=global_init)
                init = self._init if self._init is not None else global_init
                if init is None:
                    raise MXNetError("FusedRNN: no initializer for the unpacked weights (give "
                                     "init= or call it through a global initializer)")
                init(arg_desc, piece)
            flat[off:off + n] = piece.asnumpy().reshape(-1)
        arr[:] = flat.reshape(_shape(arr))
