"""Gluon blocks (MXNet 1.x's ``Block``, ``HybridBlock``, ``SymbolBlock``).

Naming follows MXNet 1.x exactly: a block created outside any ``name_scope`` takes its prefix
from the global name manager (``dense0_``, ``hybridsequential1_``); inside a parent's
``name_scope()`` it takes the parent's prefix plus a per-parent counter (``mlp_dense0_``),
and its ParameterDict creates ``<prefix><name>`` parameters. Symbols made while a block's
scope is active are named under its prefix (``mlp_dense0_fwd``).

A :class:`HybridBlock` runs ``hybrid_forward(F, x, ..., **params)`` with ``F = mx.nd``
(imperative), or, once ``hybridize()``d, traces it once with ``F = mx.sym`` over variables
``data`` (or ``data0``, ``data1`` ...) and runs the traced graph compiled
(:class:`~._cached_op.CachedOp`: one program per input signature; under autograd one tape
node). ``export`` writes ``path-symbol.json`` and ``path-%04d.params`` (``arg:``/``aux:``
keys) exactly as MXNet 1.9.1 does; :class:`SymbolBlock` runs such files (or any Symbol).
"""
from __future__ import annotations

import copy
import json
import re
import threading
import warnings
from collections import OrderedDict, defaultdict

import numpy as np

from ..base import MXNetError
from .parameter import (
    DeferredInitializationError,
    Parameter,
    ParameterDict,
    ParameterLoadError,
)
from .utils import HookHandle, _brief_print_list, _indent

__all__ = ["Block", "HybridBlock", "SymbolBlock"]


def _nd():
    from ..frontend import ndarray
    return ndarray


def _sym():
    from ..frontend import symbol
    return symbol


def _name_mod():
    from ..frontend import name
    return name


class _BlockScope:
    """The scope collecting child blocks created inside ``with block.name_scope():``."""

    _current = threading.local()

    def __init__(self, block: Block) -> None:
        self._block = block
        self._counter: dict = {}
        self._old_scope = None
        self._name_scope = None

    @staticmethod
    def create(prefix, params, hint: str):
        """(prefix, ParameterDict) for a new block with alias ``hint``."""
        current = getattr(_BlockScope._current, "value", None)
        if current is None:
            if prefix is None:
                prefix = _name_mod().NameManager.current.get(None, hint) + "_"
            if params is None:
                params = ParameterDict(prefix)
            else:
                params = ParameterDict(params.prefix, params)
            return prefix, params
        if prefix is None:
            count = current._counter.get(hint, 0)
            prefix = f"{hint}{count}_"
            current._counter[hint] = count + 1
        if params is None:
            parent = current._block.params
            params = ParameterDict(parent.prefix + prefix, parent._shared)
        else:
            params = ParameterDict(params.prefix, params)
        return current._block.prefix + prefix, params

    def __enter__(self):
        if self._block._empty_prefix:
            return self
        self._old_scope = getattr(_BlockScope._current, "value", None)
        _BlockScope._current.value = self
        self._name_scope = _name_mod().Prefix(self._block.prefix)
        self._name_scope.__enter__()
        return self

    def __exit__(self, ptype, value, trace) -> None:
        if self._block._empty_prefix:
            return
        self._name_scope.__exit__(ptype, value, trace)
        self._name_scope = None
        _BlockScope._current.value = self._old_scope


# ------------------------------------------------------------------------------------------
# nested inputs / outputs
# ------------------------------------------------------------------------------------------
def _flatten(args, inout_str: str):
    """(flat list of NDArray/Symbol/None, format) of a nested structure."""
    nd, sym = _nd(), _sym()
    if isinstance(args, nd.NDArray):
        return [args], 0
    if isinstance(args, sym.Symbol):
        n = len(args.list_outputs())
        return [args], n if n > 1 else 0
    if args is None:
        return [None], -1
    if not isinstance(args, (list, tuple)):
        raise ValueError(f"When hybridized, the input of HybridBlock {inout_str} must be "  # noqa: TRY004
                         f"(nested) list of Symbol or NDArray, but got {args} of type "
                         f"{type(args)}")
    flat = []
    fmts = []
    for i in args:
        arg, fmt = _flatten(i, inout_str)
        flat.extend(arg)
        fmts.append(fmt)
    return flat, fmts


def _regroup(args, fmt):
    """Rebuild the nested structure ``fmt`` from the flat ``args``."""
    def merge(args, fmt):
        if isinstance(fmt, int):
            if fmt < -1:
                raise ValueError(f"Unsupported encoded format {fmt}.")
            if fmt == 0:
                return args[0], args[1:]
            if fmt == -1:
                if args[0] is not None:
                    raise ValueError("We do not support passing types that are not None when "
                                     "the initial HybridBlock has received NoneType and has "
                                     f"been hybridized. Received arg = {args[0]}, fmt = {fmt}.")
                return None, args[1:]
            return args[:fmt], args[fmt:]
        if not isinstance(args, (list, tuple)):
            raise ValueError("When hybridized, the output of HybridBlock must be (nested) list "  # noqa: TRY004
                             f"of Symbol or NDArray, but got {args} of type {type(args)}")
        ret = []
        for i in fmt:
            res, args = merge(args, i)
            ret.append(res)
        return ret, args
    return merge(args, fmt)[0]


def _gather_type_ctx_info(args):
    """(has_symbol, has_ndarray, set of contexts, first context) of nested ``args``."""
    nd, sym = _nd(), _sym()
    if isinstance(args, nd.NDArray):
        return False, True, {args.context}, args.context
    if isinstance(args, sym.Symbol):
        return True, False, set(), None
    if isinstance(args, (list, tuple)):
        has_sym = has_nd = False
        ctxs: set = set()
        first = None
        for a in args:
            s, n, c, f = _gather_type_ctx_info(a)
            has_sym = has_sym or s
            has_nd = has_nd or n
            if first is None and f is not None:
                first = f
            ctxs |= c
            if has_sym and has_nd:
                break
        return has_sym, has_nd, ctxs, first
    return False, False, set(), None


class BlockError(MXNetError, ValueError):
    """Invalid use of a Block (bad inputs, unknown graph inputs, wrong child type)."""


# ------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------
class Block:
    """Base class of all layers and models (MXNet's ``gluon.Block``): assign child blocks and
    parameters as attributes, implement ``forward``."""

    def __init__(self, prefix: str | None = None, params: ParameterDict | None = None) -> None:
        self._empty_prefix = prefix == ""
        self._prefix, self._params = _BlockScope.create(prefix, params, self._alias())
        self._name = self._prefix.removesuffix("_")
        self._scope = _BlockScope(self)
        self._children = OrderedDict()
        self._reg_params = {}
        self._forward_hooks = OrderedDict()
        self._forward_pre_hooks = OrderedDict()

    def __repr__(self) -> str:
        modstr = "\n".join(f"  ({key}): {_indent(repr(block), 2)}"
                           for key, block in self.__dict__.items() if isinstance(block, Block))
        return f"{self.__class__.__name__}(\n{modstr}\n)"

    def __setattr__(self, name: str, value) -> None:
        if hasattr(self, name):
            existing = getattr(self, name)
            if isinstance(existing, (Parameter, Block)) and not isinstance(value,
                                                                            type(existing)):
                raise TypeError(f"Changing attribute type for {name} from {type(existing)} to "
                                f"{type(value)}is not allowed.")
        if isinstance(value, Block):
            self.register_child(value, name)
        elif isinstance(value, Parameter):
            if name in self._reg_params:
                raise BlockError(f"Overriding Parameter attribute {name} is not allowed. If you "
                                 "want to share parameters between blocks, please set 'params' "
                                 "at Block construction instead.")
            self._reg_params[name] = value
        super().__setattr__(name, value)

    def _check_container_with_block(self) -> None:
        children = set(self._children.values())

        def unregistered(data) -> bool:
            if isinstance(data, (list, tuple)):
                return any(unregistered(e) for e in data)
            if isinstance(data, dict):
                return any(unregistered(v) for v in data.values())
            if isinstance(data, Block):
                return data not in children
            return False

        for k, v in self.__dict__.items():
            if isinstance(v, (list, tuple, dict)) and not (
                    k.startswith("__") or k == "_children") and unregistered(v):
                warnings.warn(f'"{self.__class__.__name__}.{k}" is an unregistered container '
                              "with Blocks. Note that Blocks inside the list, tuple or dict "
                              "will not be registered automatically. Make sure to register "
                              "them using register_child() or switching to "
                              "nn.Sequential/nn.HybridSequential instead. ", stacklevel=3)

    def _alias(self) -> str:
        return self.__class__.__name__.lower()

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def name(self) -> str:
        return self._name

    def name_scope(self) -> _BlockScope:
        """``with block.name_scope():`` names children and symbols under this block."""
        return self._scope

    @property
    def params(self) -> ParameterDict:
        """This block's own parameters (not its children's)."""
        return self._params

    def collect_params(self, select: str | None = None) -> ParameterDict:
        """This block's and all descendants' parameters (those whose name matches the regex
        ``select`` when given)."""
        self._check_container_with_block()
        ret = ParameterDict(self._params.prefix)
        if not select:
            ret.update(self.params)
        else:
            pattern = re.compile(select)
            ret.update({n: v for n, v in self.params.items() if pattern.match(n)})
        for cld in self._children.values():
            ret.update(cld.collect_params(select=select))
        return ret

    def _collect_params_with_prefix(self, prefix: str = "") -> dict:
        if prefix:
            prefix += "."
        ret = {prefix + key: val for key, val in self._reg_params.items()}
        for name, child in self._children.items():
            ret.update(child._collect_params_with_prefix(prefix + name))
        return ret

    # -- saving / loading ------------------------------------------------------------------------
    def save_parameters(self, filename: str, deduplicate: bool = False) -> None:
        """Save the parameters under their structural names (``0.weight``, ``conv.bias``)."""
        params = self._collect_params_with_prefix()
        if deduplicate:
            reverse = {v: k for k, v in params.items()}
            params = {v: k for k, v in reverse.items()}
        _nd().save(filename, {key: val._reduce() for key, val in params.items()})

    def save_params(self, filename: str) -> None:
        """[Deprecated] Save with full parameter names, prefix stripped."""
        warnings.warn("save_params is deprecated. Please use save_parameters. Note that if you "
                      "want load from SymbolBlock later, please use export instead.",
                      stacklevel=2)
        try:
            self.collect_params().save(filename, strip_prefix=self.prefix)
        except ValueError as e:
            raise ValueError(f"{e}\nsave_params is deprecated. Using save_parameters may "
                             "resolve this error.") from None

    def load_parameters(self, filename: str, ctx=None, allow_missing: bool = False,
                        ignore_extra: bool = False, cast_dtype: bool = False,
                        dtype_source: str = "current") -> None:
        """Load a file written by :meth:`save_parameters` (or, without structural names, by
        ``save_params`` / ``ParameterDict.save``)."""
        loaded = _nd().load(filename)
        if isinstance(loaded, list):
            if loaded:
                raise ParameterLoadError(f"file '{filename}' holds an unnamed list of arrays, "
                                         "not named parameters")
            loaded = {}
        params = self._collect_params_with_prefix()
        if not loaded and not params:
            return
        if not any("." in k for k in loaded):
            del loaded
            self.collect_params().load(filename, ctx, allow_missing, ignore_extra, self.prefix,
                                       cast_dtype=cast_dtype, dtype_source=dtype_source)
            return
        if not allow_missing:
            inv = defaultdict(list)
            for k, v in params.items():
                inv[v].append(k)
            missing = [n for n, p in params.items() if not any(k in loaded for k in inv[p])]
            if missing:
                raise ParameterLoadError(
                    f"Parameter {_brief_print_list(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} missing in file '{filename}', "
                    f"which contains parameters: {_brief_print_list(loaded.keys())}. Set "
                    "allow_missing=True to ignore missing parameters.")
        if not ignore_extra:
            extra = [n for n in loaded if n not in params]
            if extra:
                raise ParameterLoadError(
                    f"Parameter {_brief_print_list(extra)} loaded from file '{filename}' "
                    f"{'is' if len(extra) == 1 else 'are'} not present in ParameterDict, "
                    f"which contains parameters {_brief_print_list(params.keys())}. Set "
                    "ignore_extra=True to ignore. ")
        for name, value in loaded.items():
            if name in params:
                params[name]._load_init(value, ctx, cast_dtype=cast_dtype,
                                        dtype_source=dtype_source)

    def load_params(self, filename: str, ctx=None, allow_missing: bool = False,
                    ignore_extra: bool = False) -> None:
        """[Deprecated] Use :meth:`load_parameters`."""
        warnings.warn("load_params is deprecated. Please use load_parameters.", stacklevel=2)
        self.load_parameters(filename, ctx, allow_missing, ignore_extra)

    def save(self, prefix: str) -> None:
        """Save the structure (``prefix-model.json``) and parameters (``prefix-model.params``)
        to be restored by :meth:`load` on an identically built model."""
        model: dict = {}

        def save_graphs(blk, index, structure):
            mdl: dict = {"orig_name": blk.name}
            structure[type(blk).__name__.lower() + str(index[0])] = mdl
            if isinstance(blk, HybridBlock):
                if blk._cached_graph:
                    mdl["in_format"] = blk._in_format
                    mdl["out_format"] = blk._out_format
                    syms, out = blk._cached_graph
                    mdl["inputs"] = [s.tojson() for s in syms]
                    mdl["symbol"] = out.tojson()
                    mdl["hybridized"] = True
                else:
                    mdl["hybridized"] = False
            children: dict = {}
            mdl["children"] = children
            for ch_name, child in blk._children.items():
                index[0] += 1
                children[child.name] = ch_name
                save_graphs(child, index, mdl)

        save_graphs(self, [0], model)
        with open(prefix + "-model.json", "w") as fp:
            json.dump(model, fp)
        self.save_parameters(prefix + "-model.params")

    def load(self, prefix: str) -> None:
        """Restore what :meth:`save` wrote (names, cached graphs, parameters)."""
        sym = _sym()
        with open(prefix + "-model.json") as fp:
            model = json.load(fp)

        def load_graphs(blk, index, structure):
            mdl = structure[type(blk).__name__.lower() + str(index[0])]
            blk._name = mdl["orig_name"]
            if isinstance(blk, HybridBlock) and mdl["hybridized"]:
                blk._in_format = mdl["in_format"]
                blk._out_format = mdl["out_format"]
                out = sym.load_json(mdl["symbol"])
                syms = [sym.load_json(i) for i in mdl["inputs"]]
                blk._cached_graph = (syms, out)
                blk._active = True
            for p in list(blk.params.keys()):
                param = blk.params._params.pop(p)
                blk.params._params[blk.name + "_" + p[len(blk.params._prefix):]] = param
            for child in blk._children.values():
                index[0] += 1
                load_graphs(child, index, mdl)
            children = mdl["children"]
            for ch_name in list(blk._children.keys()):
                child = blk._children.pop(ch_name)
                blk._children[children[child.name]] = child

        load_graphs(self, [0], model)
        self.load_parameters(prefix + "-model.params")

    # -- children, hooks ------------------------------------------------------------------------
    def register_child(self, block: Block, name: str | None = None) -> None:
        """Register ``block`` as a child (attribute assignment does this)."""
        if name is None:
            name = str(len(self._children))
        self._children[name] = block

    def register_forward_pre_hook(self, hook) -> HookHandle:
        """``hook(block, inputs)`` runs before every forward."""
        handle = HookHandle()
        handle.attach(self._forward_pre_hooks, hook)
        return handle

    def register_forward_hook(self, hook) -> HookHandle:
        """``hook(block, inputs, outputs)`` runs after every forward."""
        handle = HookHandle()
        handle.attach(self._forward_hooks, hook)
        return handle

    def apply(self, fn):
        """Call ``fn(block)`` on every descendant, then on this block."""
        for cld in self._children.values():
            cld.apply(fn)
        fn(self)
        return self

    def initialize(self, init=None, ctx=None, verbose: bool = False,
                   force_reinit: bool = False) -> None:
        """Initialize every parameter (``init``: the default initializer, Uniform(0.07))."""
        self.collect_params().initialize(init, ctx, verbose, force_reinit)

    def hybridize(self, active: bool = True, **kwargs) -> None:
        """Hybridize every HybridBlock descendant (a Block itself stays imperative)."""
        for cld in self._children.values():
            cld.hybridize(active, **kwargs)

    def cast(self, dtype) -> None:
        """Cast every parameter to ``dtype``."""
        for child in self._children.values():
            child.cast(dtype)
        for param in self.params.values():
            param.cast(dtype)

    def reset_ctx(self, ctx) -> None:
        self.collect_params().reset_ctx(ctx)

    def zero_grad(self) -> None:
        self.collect_params().zero_grad()

    def __call__(self, *args):
        """Run the pre-hooks, ``forward(*args)``, then the hooks."""
        for hook in self._forward_pre_hooks.values():
            hook(self, args)
        out = self.forward(*args)
        for hook in self._forward_hooks.values():
            hook(self, args, out)
        return out

    def forward(self, *args):
        """Override: the computation, on NDArrays."""
        raise NotImplementedError

    def register_op_hook(self, callback, monitor_all: bool = False) -> None:
        for cld in self._children.values():
            cld.register_op_hook(callback, monitor_all)

    def summary(self, *inputs) -> None:
        """Print every layer's output shape and parameter count (runs one forward)."""
        summary = OrderedDict()
        seen = set()
        hooks = []

        def shape_str(args):
            def flat(a):
                if not isinstance(a, (list, tuple)):
                    return [a], 0
                f, fm = [], []
                for i in a:
                    x, m = flat(i)
                    f.extend(x)
                    fm.append(m)
                return f, fm

            def regroup(a, fmt):
                if isinstance(fmt, int):
                    if fmt == 0:
                        return a[0], a[1:]
                    return a[:fmt], a[fmt:]
                ret = []
                for i in fmt:
                    r, a = regroup(a, i)
                    ret.append(r)
                return ret, a

            f, fm = flat(args)
            shapes = regroup([x.shape if isinstance(x, _nd().NDArray) else x for x in f],
                             fm)[0]
            return str(shapes)[1:-1] if isinstance(shapes, list) else str(shapes)

        def register(block):
            if isinstance(block, HybridBlock) and block._active:
                raise BlockError(f'"{block.name}" must not be hybridized to print summary.')

            def hook(block, _, outputs):
                key = f"{block.__class__.__name__}-{len(summary)}"
                summary[key] = OrderedDict()
                summary[key]["output_shape"] = shape_str(outputs)
                n = trainable = shared = 0
                for p in block.params.values():
                    size = p.data().size
                    n += size
                    trainable += 0 if p.grad_req == "null" else size
                    if p in seen:
                        shared += size
                    else:
                        seen.add(p)
                summary[key]["n_params"] = n
                summary[key]["trainable"] = trainable
                summary[key]["shared"] = shared

            from .nn.basic_layers import HybridSequential, Sequential
            if not isinstance(block, (Sequential, HybridSequential)):
                hooks.append(block.register_forward_hook(hook))

        summary["Input"] = OrderedDict(output_shape=shape_str(inputs), n_params=0,
                                       trainable=0, shared=0)
        try:
            self.apply(register)
            self(*inputs)
            fmt = "{:>20}  {:>42} {:>15}"
            print("-" * 80)
            print(fmt.format("Layer (type)", "Output Shape", "Param #"))
            print("=" * 80)
            total = trainable = shared = 0
            for layer, v in summary.items():
                print(fmt.format(layer, str(v["output_shape"]), v["n_params"]))
                total += v["n_params"]
                trainable += v["trainable"]
                shared += v["shared"]
            print("=" * 80)
            print("Parameters in forward computation graph, duplicate included")
            print("   Total params: " + str(total))
            print("   Trainable params: " + str(trainable))
            print("   Non-trainable params: " + str(total - trainable))
            print("Shared params in forward computation graph: " + str(shared))
            print("Unique parameters in model: " + str(total - shared))
            print("-" * 80)
        finally:
            for h in hooks:
                h.detach()


# ------------------------------------------------------------------------------------------
# HybridBlock
# ------------------------------------------------------------------------------------------
class HybridBlock(Block):
    """A block computing with ``hybrid_forward(F, x, ..., **params)`` for both NDArray
    (``F = mx.nd``) and Symbol (``F = mx.sym``) inputs; ``hybridize()`` compiles it."""

    def __init__(self, prefix: str | None = None, params: ParameterDict | None = None) -> None:
        super().__init__(prefix=prefix, params=params)
        self._cached_graph = ()
        self._cached_op = None
        self._cached_op_args = []
        self._out_format = None
        self._in_format = None
        self._active = False
        self._flags = []
        self._callback = None
        self._monitor_all = False
        self._backend = None
        self._backend_opts = {}

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if isinstance(value, HybridBlock):
            self._clear_cached_op()

    def _get_graph(self, *args):
        if not self._cached_graph:
            sym = _sym()
            flat_args, self._in_format = _flatten(args, "input")
            flat_inputs = []
            symbol_inputs = []
            real = sum(a is not None for a in flat_args)
            if real == 0:
                raise BlockError(f"All args are None and we do not support such a case. "
                                 f"Received args={args}")
            cnt = 0
            for a in flat_args:
                if a is None:
                    flat_inputs.append(None)
                    continue
                s = sym.var(f"data{cnt}" if real > 1 else "data")
                cnt += 1
                flat_inputs.append(s)
                symbol_inputs.append(s)
            grouped = _regroup(flat_inputs, self._in_format)
            params = {i: j.var() for i, j in self._reg_params.items()}
            with self.name_scope():
                out = self.hybrid_forward(sym, *grouped, **params)
            out, self._out_format = _flatten(out, "output")
            self._cached_graph = symbol_inputs, sym.Group(out)
        return self._cached_graph

    def _build_cache(self, *args) -> None:
        from ._cached_op import CachedOp

        data, out = self._get_graph(*args)
        data_names = {d.name: i for i, d in enumerate(data)}
        input_names = out.list_inputs()
        expected = set(input_names)
        if self._cached_op_args:
            params = {p.name: p for is_arg, p in self._cached_op_args if not is_arg}
        else:
            params = dict(self.collect_params().items())
        for name in expected:
            if name not in params and name not in data_names:
                raise BlockError(f"Unknown input to HybridBlock: {name}")
        used_data = [n for n in data_names if n in expected]
        if len(used_data) != len(data_names):
            unused = ", ".join(f"{i}-th" for n, i in data_names.items() if n not in expected)
            warnings.warn(f"The {unused} input to HybridBlock is not used by any computation. "
                          "Is this intended?", stacklevel=4)
        unused_params = [n for n in params if n not in expected]
        if unused_params:
            warnings.warn(f"Parameter {', '.join(unused_params)} is not used by any "
                          "computation. Is this intended?", stacklevel=4)
        try:
            for name in input_names:
                if name in params:
                    params[name].data()
        except DeferredInitializationError:
            self._deferred_infer_shape(*args)
            for name in input_names:
                if name in params:
                    params[name]._finish_deferred_init()
        self._cached_op_args = []
        for name in input_names:
            if name in data_names:
                self._cached_op_args.append((True, data_names[name]))
            else:
                self._cached_op_args.append((False, params[name]))
        self._cached_op = CachedOp(out, self._flags)

    def _deferred_infer_shape(self, *args) -> None:
        try:
            self.infer_shape(*args)
        except Exception as e:  # noqa: BLE001 (any failure: say what was being inferred)
            raise BlockError(f"Deferred initialization failed because shape cannot be "
                             f"inferred. {e}") from None

    def _call_cached_op(self, *args):
        if self._cached_op is None:
            self._build_cache(*args)
        args, fmt = _flatten(args, "input")
        if fmt != self._in_format:
            stored = self._in_format
            valid = False
            if isinstance(stored, list) and isinstance(fmt, list):
                if len(stored) > len(fmt):
                    valid = all(stored[i] == -1 for i in range(len(fmt), len(stored))) and \
                        fmt == stored[:len(fmt)]
                elif len(stored) < len(fmt):
                    valid = all(fmt[i] == -1 for i in range(len(stored), len(fmt))) and \
                        fmt[:len(stored)] == stored
            if not valid:
                raise BlockError(f"The argument structure of HybridBlock does not match the "
                                 f"cached version. Stored format = {self._in_format}, input "
                                 f"format = {fmt}")
        args = [a for a in args if a is not None]
        cargs = [args[i] if is_arg else i.data() for is_arg, i in self._cached_op_args]
        out = self._cached_op(*cargs)
        return _regroup(list(out), self._out_format)

    def _clear_cached_op(self) -> None:
        self._cached_graph = ()
        self._cached_op = None
        self._cached_op_args = []

    def register_child(self, block: Block, name: str | None = None) -> None:
        if not isinstance(block, HybridBlock):
            raise BlockError(f"Children of HybridBlock must also be HybridBlock, but {block} "
                             f"has type {type(block)}. If you are using Sequential, please "
                             "try HybridSequential instead.")
        super().register_child(block, name)
        self._clear_cached_op()

    def hybridize(self, active: bool = True, backend=None, clear: bool = True,
                  static_alloc: bool = False, static_shape: bool = False,
                  inline_limit: int = 2, forward_bulk_size=None, backward_bulk_size=None,
                  **kwargs) -> None:
        """Turn compiled execution on (or off) for this block and its descendants.
        ``static_alloc``/``static_shape`` are accepted: every compiled program already reuses
        its memory plan per input signature."""
        if kwargs:
            self._backend_opts = kwargs
        self._backend = backend
        self._active = active
        self._flags = [("static_alloc", static_alloc), ("static_shape", static_shape),
                       ("inline_limit", inline_limit)]
        if forward_bulk_size is not None:
            self._flags.append(("forward_bulk_size", forward_bulk_size))
        if backward_bulk_size is not None:
            self._flags.append(("backward_bulk_size", backward_bulk_size))
        if clear:
            self._clear_cached_op()
        if (active and self._forward_hooks) or self._forward_pre_hooks:
            warnings.warn(f'"{self}" is being hybridized while still having forward hook/'
                          f'pre-hook. If "{self}" is a child of HybridBlock, the hooks will '
                          "not take effect.", stacklevel=2)
        super().hybridize(active, static_alloc=static_alloc, static_shape=static_shape,
                          inline_limit=inline_limit, forward_bulk_size=forward_bulk_size,
                          backward_bulk_size=backward_bulk_size)

    def optimize_for(self, x, *args, backend=None, clear: bool = False, **kwargs) -> None:
        """Hybridize and build the cache for ``x`` without running it (no partitioning
        back ends in mxc: ``backend`` is recorded only)."""
        self.hybridize(True, backend, clear, **kwargs)
        self._build_cache(x, *args)

    def cast(self, dtype) -> None:
        self._clear_cached_op()
        super().cast(dtype)

    def _infer_attrs(self, infer_fn: str, attr: str, *args) -> None:
        inputs, out = self._get_graph(*args)
        flat, _ = _flatten(args, "input")
        flat = [a for a in flat if a is not None]
        arg_attrs, _, aux_attrs = getattr(out, infer_fn)(
            **{i.name: getattr(j, attr) for i, j in zip(inputs, flat)})
        if arg_attrs is None:
            raise BlockError(f"{infer_fn} could not infer the {attr}s of every parameter from "
                             f"inputs {[getattr(j, attr) for j in flat]}")
        sdict = dict(zip(out.list_arguments(), arg_attrs))
        sdict.update(zip(out.list_auxiliary_states(), aux_attrs))
        for p in self.collect_params().values():
            if p.name in sdict:
                setattr(p, attr, sdict[p.name])

    def infer_shape(self, *args) -> None:
        """Infer the parameters' shapes from the inputs."""
        self._infer_attrs("infer_shape", "shape", *args)

    def infer_type(self, *args) -> None:
        """Infer the parameters' dtypes from the inputs."""
        self._infer_attrs("infer_type", "dtype", *args)

    def export(self, path: str, epoch: int = 0, remove_amp_cast: bool = True) -> None:
        """Write ``path-symbol.json`` and ``path-%04d.params`` (``arg:``/``aux:`` keys), as
        ``mx.model.save_checkpoint`` and MXNet's ``HybridBlock.export`` do."""
        if not self._cached_graph:
            raise MXNetError("Please first call block.hybridize() and then run forward with "
                             "this block at least once before calling export.")
        sym = self._cached_graph[1]
        sym.save(f"{path}-symbol.json", remove_amp_cast=remove_amp_cast)
        arg_names = set(sym.list_arguments())
        aux_names = set(sym.list_auxiliary_states())
        arg_dict = {}
        for is_arg, param in self._cached_op_args:
            if is_arg:
                continue
            name = param.name
            if name in arg_names:
                arg_dict[f"arg:{name}"] = param._reduce()
            elif name in aux_names:
                arg_dict[f"aux:{name}"] = param._reduce()
            else:
                warnings.warn(f'Parameter "{name}" is not found in the graph. ', stacklevel=3)
        _nd().save(f"{path}-{epoch:04d}.params", arg_dict)

    def register_op_hook(self, callback, monitor_all: bool = False) -> None:
        self._callback = callback
        self._monitor_all = monitor_all
        for cld in self._children.values():
            cld._callback = callback
            cld._monitor_all = monitor_all

    def forward(self, x, *args):
        """Run on NDArrays (compiled when hybridized) or trace on Symbols."""
        has_sym, has_nd, ctx_set, first_ctx = _gather_type_ctx_info([x, *args])
        if has_sym and has_nd:
            raise BlockError("In HybridBlock, we do not support mixed NDArrays and Symbols "
                             "types for the input. Please check the type of the args.\n")
        if not has_sym and not has_nd:
            raise BlockError("In HybridBlock, there must be one NDArray or one Symbol in the "
                             "input. Please check the type of the args.\n")
        if has_nd:
            ctx = first_ctx
            if self._active:
                if len(ctx_set) > 1:
                    raise BlockError("Find multiple contexts in the input, After hybridized, "
                                     "the HybridBlock only supports one input context. Find "
                                     f"all contexts = {ctx_set}")
                with ctx:
                    return self._call_cached_op(x, *args)
            with ctx:
                try:
                    params = {k: v.data(ctx) for k, v in self._reg_params.items()}
                except DeferredInitializationError:
                    self._deferred_infer_shape(x, *args)
                    for v in self.params.values():
                        v._finish_deferred_init()
                    params = {k: v.data(ctx) for k, v in self._reg_params.items()}
                return self.hybrid_forward(_nd(), x, *args, **params)
        params = {i: j.var() for i, j in self._reg_params.items()}
        with self.name_scope():
            return self.hybrid_forward(_sym(), x, *args, **params)

    def hybrid_forward(self, F, x, *args, **kwargs):
        """Override: the computation with ``F`` = ``mx.nd`` or ``mx.sym``."""
        raise NotImplementedError


def _common_prefix(names: list) -> str:
    if not names:
        return ""
    prefix = names[0]
    for name in names:
        i = 0
        while i < len(prefix) and i < len(name) and prefix[i] == name[i]:
            i += 1
        prefix = prefix[:i]
    return prefix


# ------------------------------------------------------------------------------------------
# SymbolBlock
# ------------------------------------------------------------------------------------------
class SymbolBlock(HybridBlock):
    """A block running a Symbol: ``inputs`` are its data variables, every other variable is a
    parameter (auxiliary states with ``grad_req='null'``)."""

    @staticmethod
    def imports(symbol_file: str, input_names, param_file: str | None = None, ctx=None,
                allow_missing: bool = False, ignore_extra: bool = False) -> SymbolBlock:
        """A SymbolBlock from ``-symbol.json`` (+ ``.params``) files, as written by
        ``HybridBlock.export`` or ``mx.model.save_checkpoint``."""
        sym = _sym()
        s = sym.load(symbol_file)
        if isinstance(input_names, str):
            input_names = [input_names]
        if param_file is None:
            inputs = [sym.var(i, dtype=np.float32) for i in input_names]
        else:
            inputs = [sym.var(i) for i in input_names]
        ret = SymbolBlock(s, inputs)
        if param_file is not None:
            ret.collect_params().load(param_file, ctx, allow_missing, ignore_extra,
                                      cast_dtype=True, dtype_source="saved")
        return ret

    def __repr__(self) -> str:
        g = self._cached_graph
        return (f"{self.__class__.__name__}(\n{g[1]} : {len(g[0])} -> "
                f"{len(g[1].list_outputs())}\n)")

    def __init__(self, outputs, inputs, params: ParameterDict | None = None) -> None:
        sym = _sym()
        super().__init__(prefix=None, params=None)
        self._prefix = ""
        self._params = ParameterDict("", params)
        if isinstance(inputs, sym.Symbol) and len(inputs.list_outputs()) == 1:
            inputs = [inputs]
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        syms, self._in_format = _flatten(inputs, "input")
        out, self._out_format = _flatten(outputs, "output")
        input_names = set()
        for i in syms:
            if len(i.get_internals().list_outputs()) != 1:
                raise BlockError(f"Input symbols must be variable, but {i} is an output of "
                                 "operators")
            input_names.add(i.name)
        for i in out:
            for j in i.get_internals():
                if j.attr("__storage_type__") == "1":
                    raise BlockError(f"SymbolBlock doesn't support Parameter '{j.name}' because "
                                     "its storage type is 'row_sparse'.")
        out = sym.Group(out) if len(out) > 1 else out[0]
        arg_params = out.list_arguments()
        aux_params = out.list_auxiliary_states()
        arg_types, aux_types = _infer_param_types(syms, out, arg_params, aux_params)
        for i, arg in enumerate(arg_params):
            if arg not in input_names:
                self.params.get(arg, allow_deferred_init=True, dtype=arg_types[i])
        for i, aux in enumerate(aux_params):
            if aux not in input_names:
                self.params.get(aux, grad_req="null", allow_deferred_init=True,
                                dtype=aux_types[i])
        self._cached_graph = syms, out
        len_prefix = len(_common_prefix(list(self._params.keys())))
        self._reg_params = {key[len_prefix:]: val for key, val in self._params.items()}

    def forward(self, x, *args):
        nd = _nd()
        if isinstance(x, nd.NDArray):
            with x.context:
                return self._call_cached_op(x, *args)
        if not isinstance(x, _sym().Symbol):
            raise BlockError("HybridBlock requires the first argument to forward be either "
                             f"Symbol or NDArray, but got {type(x)}")
        flat, in_fmt = _flatten([x, *args], "input")
        if in_fmt != self._in_format:
            raise BlockError("Invalid input format")
        ret = copy.copy(self._cached_graph[1])
        ret._compose(**{k.name: v for k, v in zip(self._cached_graph[0], flat)})
        return _regroup(list(ret), self._out_format)

    def _clear_cached_op(self) -> None:
        tmp = self._cached_graph
        super()._clear_cached_op()
        self._cached_graph = tmp

    def cast(self, dtype) -> None:
        self._clear_cached_op()
        super().cast(dtype)
        if np.dtype(dtype).name == "float16":
            # BatchNorm keeps float32 statistics and scale/shift
            out = self._cached_graph[1]
            inputs = out.get_internals().list_inputs()
            for node in inputs:
                for tail, sibs in (("running_var", ("running_mean", "gamma", "beta")),
                                   ("moving_var", ("moving_mean", "gamma", "beta"))):
                    if node.endswith(tail):
                        prefix = node[:-len(tail)]
                        names = [prefix + t for t in sibs]
                        if all(p in inputs for p in names):
                            self.params.get(node).cast("float32")
                            for p in names:
                                self.params.get(p).cast("float32")

    def hybrid_forward(self, F, x, *args, **kwargs):
        raise NotImplementedError

    def reset_ctx(self, ctx) -> None:
        for p in self.collect_params().values():
            p.reset_ctx(ctx)


def _infer_param_types(in_params, out_params, arg_params, aux_params,
                       default_dtype=np.float32):
    """The dtypes of arguments and auxiliary states inferred from the inputs' ``__dtype__``
    (float32 where unknown)."""
    arg_types = aux_types = None
    names = [p.name for p in in_params]
    in_types = []
    ok = True
    for p in in_params:
        t = p.infer_type()[0]
        if not t or t[0] is None:
            ok = False
            break
        in_types.append(t[0])
    if ok:
        try:
            arg_types, _, aux_types = out_params.infer_type(**dict(zip(names, in_types)))
        except MXNetError:
            arg_types = aux_types = None
    if arg_types is None or len(arg_types) != len(arg_params):
        arg_types = [default_dtype] * len(arg_params)
    if aux_types is None or len(aux_types) != len(aux_params):
        aux_types = [default_dtype] * len(aux_params)
    return arg_types, aux_types
