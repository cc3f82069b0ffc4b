"""Recurrent cells (MXNet 1.9.1's ``python/mxnet/gluon/rnn/rnn_cell.py``).

A cell computes one time step, ``output, next_states = cell(x_t, states)``; ``unroll`` runs
it over a sequence (``layout`` 'NTC' or 'TNC', ``merge_outputs``, ``valid_length``).
Owned here: the cell base classes (``RecurrentCell``, ``HybridRecurrentCell``), the gated
cells (``RNNCell``, ``LSTMCell`` with gates i, f, g, o, ``GRUCell`` with gates r, z, n and
the reset gate applied after the recurrent product, as cuDNN), the containers
(``SequentialRNNCell``, ``HybridSequentialRNNCell``, ``BidirectionalCell``) and the
modifiers (``DropoutCell``, ``ModifierCell``, ``ZoneoutCell``, ``ResidualCell``).

Parameter names (``<prefix>i2h_weight`` (G*H, I), ``h2h_weight`` (G*H, H), ``i2h_bias``,
``h2h_bias``), operator names (``t<step>_i2h`` ...) and begin-state names are MXNet's.
One deviation, for symbolic unrolls without explicit begin states: MXNet creates
``symbol.zeros`` with a batch dimension of 0 (unknown) and relies on shape inference to fill
it in; mxc's ``_zeros`` cannot infer a dimension, so the zeros are derived from the first
input's batch dimension instead (same values, same shapes).
"""
from __future__ import annotations

from numbers import Number

from ...base import MXNetError
from ..block import Block, HybridBlock
from ..utils import _indent

__all__ = ["BidirectionalCell", "DropoutCell", "GRUCell", "HybridRecurrentCell",
           "HybridSequentialRNNCell", "LSTMCell", "ModifierCell", "RNNCell", "RecurrentCell",
           "ResidualCell", "SequentialRNNCell", "ZoneoutCell"]


class RNNError(MXNetError, ValueError, AssertionError):
    """Invalid use of a recurrent cell or layer. Also a ValueError / AssertionError, the
    exceptions MXNet raises for these cases (its checks are ``assert`` statements)."""


def _nd():
    from ...frontend import ndarray
    return ndarray


def _sym():
    from ...frontend import symbol
    return symbol


def _tensor_types() -> tuple:
    return (_nd().NDArray, _sym().Symbol)


def _as_list(obj) -> list:
    return obj if isinstance(obj, list) else [obj]


# ------------------------------------------------------------------------------------------
# sequence helpers
# ------------------------------------------------------------------------------------------
def _cells_state_info(cells, batch_size: int) -> list:
    return [info for c in cells for info in c.state_info(batch_size)]


def _cells_begin_state(cells, **kwargs) -> list:
    return [state for c in cells for state in c.begin_state(**kwargs)]


def _symbol_zeros_from_batch(ref, ref_batch_axis: int):
    """A ``begin_state`` ``func`` making symbolic zero states whose batch dimension is taken
    from ``ref`` (the batch size is unknown while tracing; see the module docstring)."""
    def zeros(name=None, shape=(), __layout__=None, dtype=None, **kwargs):
        F = _sym()
        batch_pos = __layout__.find("N") if __layout__ and "N" in __layout__ else \
            next((i for i, d in enumerate(shape) if d == 0), 0)
        # (N,): a zero per batch element, connected to ``ref`` only for its shape
        out = F.sum(F.zeros_like(ref), axis=ref_batch_axis, exclude=True)
        others = [ax for ax in range(len(shape)) if ax != batch_pos]
        for ax in others:
            out = F.expand_dims(out, axis=ax)
        if others:
            out = F.broadcast_axis(out, axis=tuple(others),
                                   size=tuple(int(shape[ax]) for ax in others))
        if dtype is not None:
            out = F.Cast(out, dtype=dtype)
        return F.identity(out, name=name) if name else out
    return zeros


def _get_begin_state(cell, F, begin_state, inputs, batch_size: int, layout: str = "NTC"):
    """``begin_state`` if given, else the cell's zero states for ``inputs``' batch."""
    if begin_state is not None:
        return begin_state
    if F is _nd():
        ctx = inputs.context if isinstance(inputs, _tensor_types()) else inputs[0].context
        with ctx:
            return cell.begin_state(func=F.zeros, batch_size=batch_size)
    if isinstance(inputs, _tensor_types()):
        ref, axis = inputs, layout.find("N")
    else:
        ref, axis = inputs[0], 0
    return cell.begin_state(func=_symbol_zeros_from_batch(ref, axis), batch_size=0)


def _format_sequence(length, inputs, layout: str, merge, in_layout: str | None = None):
    """(inputs as one tensor in ``layout`` when ``merge`` is True, as a list of per-step
    (N, ...) tensors when False, unchanged when None; time axis; F; batch size)."""
    if inputs is None:
        raise RNNError("unroll(inputs=None) has been deprecated. Please create input "
                       "variables outside unroll.")
    nd, sym = _nd(), _sym()
    axis = layout.find("T")
    batch_axis = layout.find("N")
    batch_size = 0
    in_axis = in_layout.find("T") if in_layout is not None else axis
    if isinstance(inputs, sym.Symbol):
        F = sym
        if merge is False:
            if len(inputs.list_outputs()) != 1:
                raise RNNError("unroll doesn't allow grouped symbol as input. Please convert "
                               "to list with list(inputs) first or let unroll handle "
                               "splitting.")
            inputs = list(sym.split(inputs, axis=in_axis, num_outputs=length,
                                    squeeze_axis=1))
    elif isinstance(inputs, nd.NDArray):
        F = nd
        batch_size = inputs.shape[batch_axis]
        if merge is False:
            if length is not None and length != inputs.shape[in_axis]:
                raise RNNError(f"unroll: length={length} does not match the input's time "
                               f"dimension {inputs.shape[in_axis]} (layout {layout})")
            inputs = _as_list(nd.split(inputs, axis=in_axis,
                                       num_outputs=inputs.shape[in_axis], squeeze_axis=1))
    else:
        if length is not None and len(inputs) != length:
            raise RNNError(f"unroll: length={length} but {len(inputs)} inputs were given")
        if isinstance(inputs[0], sym.Symbol):
            F = sym
        else:
            F = nd
            batch_size = inputs[0].shape[0]
        if merge is True:
            inputs = F.stack(*inputs, axis=axis)
            in_axis = axis
    if isinstance(inputs, _tensor_types()) and axis != in_axis:
        inputs = F.swapaxes(inputs, dim1=axis, dim2=in_axis)
    return inputs, axis, F, batch_size


def _mask_sequence_variable_length(F, data, length, valid_length, time_axis: int,
                                   merge: bool):
    """Zero the steps at or after each sequence's ``valid_length``."""
    if not isinstance(data, _tensor_types()):
        data = F.stack(*data, axis=time_axis)
    outputs = F.SequenceMask(data, sequence_length=valid_length, use_sequence_length=True,
                             axis=time_axis)
    if not merge:
        outputs = _as_list(F.split(outputs, num_outputs=length, axis=time_axis,
                                   squeeze_axis=True))
    return outputs


def _check_not_modified(cell) -> None:
    if cell._modified:
        raise RNNError("After applying modifier cells (e.g. ZoneoutCell) the base cell cannot "
                       "be called directly. Call the modifier cell instead.")


# ------------------------------------------------------------------------------------------
# base classes
# ------------------------------------------------------------------------------------------
class RecurrentCell(Block):
    """Abstract base class of RNN cells: ``state_info``, ``begin_state``, one step with
    ``cell(inputs, states)``, ``unroll`` over a sequence."""

    def __init__(self, prefix: str | None = None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)
        self._modified = False
        self.reset()

    def reset(self) -> None:
        """Reset the step counters before re-using the cell for another sequence."""
        self._init_counter = -1
        self._counter = -1
        for cell in self._children.values():
            cell.reset()

    def state_info(self, batch_size: int = 0) -> list:
        """Shape and layout of each state."""
        raise NotImplementedError()

    def begin_state(self, batch_size: int = 0, func=None, **kwargs) -> list:
        """Initial states made by ``func`` (``mx.nd.zeros`` by default; ``mx.sym.zeros``,
        ``mx.sym.var`` ... for symbols), each called with ``name``, the state's ``shape``,
        ``__layout__`` and ``kwargs`` (e.g. ``dtype``, ``ctx``)."""
        _check_not_modified(self)
        if func is None:
            func = _nd().zeros
        states = []
        for info in self.state_info(batch_size):
            self._init_counter += 1
            if info is not None:
                info.update(kwargs)
            else:
                info = kwargs
            states.append(func(name=f"{self._prefix}begin_state_{self._init_counter}",
                               **info))
        return states

    def unroll(self, length: int, inputs, begin_state=None, layout: str = "NTC",
               merge_outputs=None, valid_length=None):
        """Run the cell over ``length`` steps of ``inputs`` (one tensor in ``layout`` or a
        list of (N, ...) tensors). Returns (outputs, states): outputs one tensor when
        ``merge_outputs`` is True, a list when False, whichever is cheaper when None.
        ``valid_length`` (N,): outputs past each sequence's length are zero and the states
        are those of its last valid step."""
        self.reset()
        inputs, axis, F, batch_size = _format_sequence(length, inputs, layout, False)
        begin_state = _get_begin_state(self, F, begin_state, inputs, batch_size, layout)
        states = begin_state
        outputs = []
        all_states = []
        for i in range(length):
            output, states = self(inputs[i], states)
            outputs.append(output)
            if valid_length is not None:
                all_states.append(states)
        if valid_length is not None:
            states = [F.SequenceLast(F.stack(*per_step, axis=0), sequence_length=valid_length,
                                     use_sequence_length=True, axis=0)
                      for per_step in zip(*all_states)]
            outputs = _mask_sequence_variable_length(F, outputs, length, valid_length, axis,
                                                     True)
        outputs, _, _, _ = _format_sequence(length, outputs, layout, merge_outputs)
        return outputs, states

    def _get_activation(self, F, inputs, activation, **kwargs):
        """Apply ``activation``: a name, a LeakyReLU block or any callable."""
        from ..nn import LeakyReLU
        func = {"tanh": F.tanh, "relu": F.relu, "sigmoid": F.sigmoid,
                "softsign": F.softsign}.get(activation) if isinstance(activation, str) \
            else None
        if func:
            return func(inputs, **kwargs)
        if isinstance(activation, str):
            return F.Activation(inputs, act_type=activation, **kwargs)
        if isinstance(activation, LeakyReLU):
            return F.LeakyReLU(inputs, act_type="leaky", slope=activation._alpha, **kwargs)
        return activation(inputs, **kwargs)

    def forward(self, inputs, states):
        """One time step: (output, next states)."""
        self._counter += 1
        return super().forward(inputs, states)


class HybridRecurrentCell(RecurrentCell, HybridBlock):
    """A recurrent cell that can be hybridized (one compiled graph per step signature)."""

    def __init__(self, prefix: str | None = None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)

    def hybrid_forward(self, F, x, *args, **kwargs):
        raise NotImplementedError


def _mapping(weight, hidden: int | None = None) -> str:
    shape = weight.shape
    return f"{shape[1] if shape[1] else None} -> {shape[0] if hidden is None else hidden}"


class _GatedCell(HybridRecurrentCell):
    """The four parameters shared by RNNCell (1 gate), GRUCell (3) and LSTMCell (4)."""

    _gates = 1

    def __init__(self, hidden_size: int, i2h_weight_initializer, h2h_weight_initializer,
                 i2h_bias_initializer, h2h_bias_initializer, input_size: int, prefix,
                 params) -> None:
        super().__init__(prefix=prefix, params=params)
        if int(hidden_size) <= 0:
            raise RNNError(f"{type(self).__name__}: hidden_size must be positive, got "
                           f"{hidden_size}")
        self._hidden_size = int(hidden_size)
        self._input_size = input_size
        gh = self._gates * self._hidden_size
        self.i2h_weight = self.params.get("i2h_weight", shape=(gh, input_size),
                                          init=i2h_weight_initializer,
                                          allow_deferred_init=True)
        self.h2h_weight = self.params.get("h2h_weight", shape=(gh, self._hidden_size),
                                          init=h2h_weight_initializer,
                                          allow_deferred_init=True)
        self.i2h_bias = self.params.get("i2h_bias", shape=(gh,), init=i2h_bias_initializer,
                                        allow_deferred_init=True)
        self.h2h_bias = self.params.get("h2h_bias", shape=(gh,), init=h2h_bias_initializer,
                                        allow_deferred_init=True)

    def _projections(self, F, inputs, h, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        prefix = f"t{self._counter}_"
        n = self._gates * self._hidden_size
        i2h = F.FullyConnected(data=inputs, weight=i2h_weight, bias=i2h_bias, num_hidden=n,
                               name=prefix + "i2h")
        h2h = F.FullyConnected(data=h, weight=h2h_weight, bias=h2h_bias, num_hidden=n,
                               name=prefix + "h2h")
        return prefix, i2h, h2h

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_mapping(self.i2h_weight)})"


class RNNCell(_GatedCell):
    """Elman RNN cell: ``h_t = activation(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.
    ``activation``: 'tanh' (default), 'relu', 'sigmoid', 'softsign', any Activation name,
    a LeakyReLU block or a callable."""

    def __init__(self, hidden_size: int, activation="tanh", i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", input_size: int = 0, prefix=None,
                 params=None) -> None:
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix,
                         params)
        self._activation = activation

    def state_info(self, batch_size: int = 0) -> list:
        return [{"shape": (batch_size, self._hidden_size), "__layout__": "NC"}]

    def _alias(self) -> str:
        return "rnn"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_mapping(self.i2h_weight)}, {self._activation})"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        prefix, i2h, h2h = self._projections(F, inputs, states[0], i2h_weight, h2h_weight,
                                             i2h_bias, h2h_bias)
        summed = F.elemwise_add(i2h, h2h, name=prefix + "plus0")
        output = self._get_activation(F, summed, self._activation, name=prefix + "out")
        return output, [output]


class LSTMCell(_GatedCell):
    """LSTM cell (gates i, f, g, o in the weight rows):
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * activation(c_t)``; i, f, o use
    ``recurrent_activation`` ('sigmoid'), g and the cell output ``activation`` ('tanh').
    States: [h, c]."""

    _gates = 4

    def __init__(self, hidden_size: int, i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", input_size: int = 0, prefix=None, params=None,
                 activation="tanh", recurrent_activation="sigmoid") -> None:
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix,
                         params)
        self._activation = activation
        self._recurrent_activation = recurrent_activation

    def state_info(self, batch_size: int = 0) -> list:
        return [{"shape": (batch_size, self._hidden_size), "__layout__": "NC"},
                {"shape": (batch_size, self._hidden_size), "__layout__": "NC"}]

    def _alias(self) -> str:
        return "lstm"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        prefix, i2h, h2h = self._projections(F, inputs, states[0], i2h_weight, h2h_weight,
                                             i2h_bias, h2h_bias)
        gates = F.elemwise_add(i2h, h2h, name=prefix + "plus0")
        sliced = F.SliceChannel(gates, num_outputs=4, name=prefix + "slice")
        rec = self._recurrent_activation
        in_gate = self._get_activation(F, sliced[0], rec, name=prefix + "i")
        forget_gate = self._get_activation(F, sliced[1], rec, name=prefix + "f")
        in_transform = self._get_activation(F, sliced[2], self._activation, name=prefix + "c")
        out_gate = self._get_activation(F, sliced[3], rec, name=prefix + "o")
        next_c = F._internal._plus(F.elemwise_mul(forget_gate, states[1], name=prefix + "mul0"),
                                   F.elemwise_mul(in_gate, in_transform, name=prefix + "mul1"),
                                   name=prefix + "state")
        if isinstance(self._activation, str):
            c_act = F.Activation(next_c, act_type=self._activation,
                                 name=prefix + "activation0")
        else:
            c_act = self._get_activation(F, next_c, self._activation,
                                         name=prefix + "activation0")
        next_h = F._internal._mul(out_gate, c_act, name=prefix + "out")
        return next_h, [next_h, next_c]


class GRUCell(_GatedCell):
    """GRU cell, cuDNN variant (gates r, z, n; the reset gate scales the recurrent product):
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``."""

    _gates = 3

    def __init__(self, hidden_size: int, i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", input_size: int = 0, prefix=None,
                 params=None) -> None:
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix,
                         params)

    def state_info(self, batch_size: int = 0) -> list:
        return [{"shape": (batch_size, self._hidden_size), "__layout__": "NC"}]

    def _alias(self) -> str:
        return "gru"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        prev_h = states[0]
        prefix, i2h, h2h = self._projections(F, inputs, prev_h, i2h_weight, h2h_weight,
                                             i2h_bias, h2h_bias)
        i2h_r, i2h_z, i2h_n = F.SliceChannel(i2h, num_outputs=3, name=prefix + "i2h_slice")
        h2h_r, h2h_z, h2h_n = F.SliceChannel(h2h, num_outputs=3, name=prefix + "h2h_slice")
        reset_gate = F.Activation(F.elemwise_add(i2h_r, h2h_r, name=prefix + "plus0"),
                                  act_type="sigmoid", name=prefix + "r_act")
        update_gate = F.Activation(F.elemwise_add(i2h_z, h2h_z, name=prefix + "plus1"),
                                   act_type="sigmoid", name=prefix + "z_act")
        candidate = F.Activation(
            F.elemwise_add(i2h_n, F.elemwise_mul(reset_gate, h2h_n, name=prefix + "mul0"),
                           name=prefix + "plus2"),
            act_type="tanh", name=prefix + "h_act")
        ones = F.ones_like(update_gate, name=prefix + "ones_like0")
        next_h = F._internal._plus(
            F.elemwise_mul(F.elemwise_sub(ones, update_gate, name=prefix + "minus0"),
                           candidate, name=prefix + "mul1"),
            F.elemwise_mul(update_gate, prev_h, name=prefix + "mul20"),
            name=prefix + "out")
        return next_h, [next_h]


# ------------------------------------------------------------------------------------------
# containers
# ------------------------------------------------------------------------------------------
class _StackMixin:
    """What SequentialRNNCell and HybridSequentialRNNCell share: children run one after
    another, each consuming its slice of the flat state list."""

    def __repr__(self) -> str:
        modstr = "\n".join(f"({i}): {_indent(repr(m), 2)}" for i, m in self._children.items())
        return f"{type(self).__name__}(\n{modstr}\n)"

    def add(self, cell) -> None:
        """Append ``cell`` to the stack."""
        self.register_child(cell)

    def state_info(self, batch_size: int = 0) -> list:
        return _cells_state_info(self._children.values(), batch_size)

    def begin_state(self, **kwargs) -> list:
        _check_not_modified(self)
        return _cells_begin_state(self._children.values(), **kwargs)

    def __call__(self, inputs, states):
        self._counter += 1
        if any(isinstance(c, BidirectionalCell) for c in self._children.values()):
            raise RNNError(f"{type(self).__name__} holding a BidirectionalCell cannot be "
                           "stepped; use unroll")
        next_states = []
        p = 0
        for cell in self._children.values():
            n = len(cell.state_info())
            inputs, state = cell(inputs, states[p:p + n])
            p += n
            next_states.extend(state)
        return inputs, next_states

    def unroll(self, length: int, inputs, begin_state=None, layout: str = "NTC",
               merge_outputs=None, valid_length=None):
        self.reset()
        inputs, _, F, batch_size = _format_sequence(length, inputs, layout, None)
        num_cells = len(self._children)
        begin_state = _get_begin_state(self, F, begin_state, inputs, batch_size, layout)
        p = 0
        next_states = []
        for i, cell in enumerate(self._children.values()):
            n = len(cell.state_info())
            states = begin_state[p:p + n]
            p += n
            inputs, states = cell.unroll(
                length, inputs=inputs, begin_state=states, layout=layout,
                merge_outputs=None if i < num_cells - 1 else merge_outputs,
                valid_length=valid_length)
            next_states.extend(states)
        return inputs, next_states

    def __getitem__(self, i):
        return self._children[str(i)]

    def __len__(self) -> int:
        return len(self._children)


class SequentialRNNCell(_StackMixin, RecurrentCell):
    """Stack of cells, the output of each the input of the next."""

    def __init__(self, prefix: str | None = None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)

    def hybrid_forward(self, *args, **kwargs):
        raise NotImplementedError


class HybridSequentialRNNCell(_StackMixin, HybridRecurrentCell):
    """Stack of hybrid cells, the output of each the input of the next."""

    def __init__(self, prefix: str | None = None, params=None) -> None:
        super().__init__(prefix=prefix, params=params)

    def hybrid_forward(self, F, inputs, states):
        return self.__call__(inputs, states)


class DropoutCell(HybridRecurrentCell):
    """Dropout on the input (in training mode); states pass through. ``axes``: axes along
    which the mask is shared."""

    def __init__(self, rate, axes=(), prefix: str | None = None, params=None) -> None:
        super().__init__(prefix, params)
        if not isinstance(rate, Number) or isinstance(rate, bool):
            raise RNNError(f"DropoutCell: rate must be a number, got {rate!r}")
        self._rate = rate
        self._axes = axes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rate={self._rate}, axes={self._axes})"

    def state_info(self, batch_size: int = 0) -> list:
        return []

    def _alias(self) -> str:
        return "dropout"

    def hybrid_forward(self, F, inputs, states):
        if self._rate > 0:
            inputs = F.Dropout(data=inputs, p=self._rate, axes=self._axes,
                               name=f"t{self._counter}_fwd")
        return inputs, states

    def unroll(self, length: int, inputs, begin_state=None, layout: str = "NTC",
               merge_outputs=None, valid_length=None):
        self.reset()
        inputs, _, F, _ = _format_sequence(length, inputs, layout, merge_outputs)
        if isinstance(inputs, _tensor_types()):
            # the whole sequence at once (a merged tensor is dropped out in one op)
            return self.hybrid_forward(F, inputs, begin_state if begin_state else [])
        return super().unroll(length, inputs, begin_state=begin_state, layout=layout,
                              merge_outputs=merge_outputs, valid_length=None)


class ModifierCell(HybridRecurrentCell):
    """Base class of cells that wrap a ``base_cell`` and change its behaviour. The base cell
    must then only be used through the modifier."""

    def __init__(self, base_cell) -> None:
        if base_cell._modified:
            raise RNNError(f"Cell {base_cell.name} is already modified. One cell cannot be "
                           "modified twice")
        base_cell._modified = True
        super().__init__(prefix=base_cell.prefix + self._alias(), params=None)
        self.base_cell = base_cell

    @property
    def params(self):
        return self.base_cell.params

    def state_info(self, batch_size: int = 0) -> list:
        return self.base_cell.state_info(batch_size)

    def begin_state(self, func=None, **kwargs) -> list:
        _check_not_modified(self)
        if func is None:
            func = _sym().zeros       # MXNet 1.9.1's default for modifier cells
        self.base_cell._modified = False
        try:
            return self.base_cell.begin_state(func=func, **kwargs)
        finally:
            self.base_cell._modified = True

    def hybrid_forward(self, F, inputs, states):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_cell})"


class ZoneoutCell(ModifierCell):
    """Zoneout (Krueger et al. 2016): in training, each output / state element keeps its
    previous value with probability ``zoneout_outputs`` / ``zoneout_states``."""

    def __init__(self, base_cell, zoneout_outputs: float = 0.,
                 zoneout_states: float = 0.) -> None:
        if isinstance(base_cell, BidirectionalCell) or (
                isinstance(base_cell, _StackMixin) and any(
                    isinstance(c, BidirectionalCell) for c in base_cell._children.values())):
            raise RNNError("BidirectionalCell doesn't support zoneout since it doesn't "
                           "support step. Please add ZoneoutCell to the cells underneath "
                           "instead.")
        super().__init__(base_cell)
        self.zoneout_outputs = zoneout_outputs
        self.zoneout_states = zoneout_states
        self._prev_output = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(p_out={self.zoneout_outputs}, "
                f"p_state={self.zoneout_states}, {self.base_cell})")

    def _alias(self) -> str:
        return "zoneout"

    def reset(self) -> None:
        super().reset()
        self._prev_output = None

    def hybrid_forward(self, F, inputs, states):
        cell, p_outputs, p_states = self.base_cell, self.zoneout_outputs, self.zoneout_states
        next_output, next_states = cell(inputs, states)

        def keep_mask(p, like):
            # Dropout of ones: nonzero (keep the new value) with probability 1 - p
            return F.Dropout(F.ones_like(like), p=p)

        prev_output = self._prev_output
        if prev_output is None:
            prev_output = F.zeros_like(next_output)
        output = F.where(keep_mask(p_outputs, next_output), next_output, prev_output) \
            if p_outputs != 0. else next_output
        states = [F.where(keep_mask(p_states, new_s), new_s, old_s)
                  for new_s, old_s in zip(next_states, states)] \
            if p_states != 0. else next_states
        self._prev_output = output
        return output, states


class ResidualCell(ModifierCell):
    """Residual connection (Wu et al. 2016): output = base cell's output + input."""

    def __init__(self, base_cell) -> None:
        super().__init__(base_cell)

    def hybrid_forward(self, F, inputs, states):
        output, states = self.base_cell(inputs, states)
        output = F.elemwise_add(output, inputs, name=f"t{self._counter}_fwd")
        return output, states

    def unroll(self, length: int, inputs, begin_state=None, layout: str = "NTC",
               merge_outputs=None, valid_length=None):
        self.reset()
        self.base_cell._modified = False
        try:
            outputs, states = self.base_cell.unroll(length, inputs=inputs,
                                                    begin_state=begin_state, layout=layout,
                                                    merge_outputs=merge_outputs,
                                                    valid_length=valid_length)
        finally:
            self.base_cell._modified = True
        if merge_outputs is None:
            merge_outputs = isinstance(outputs, _tensor_types())
        inputs, axis, F, _ = _format_sequence(length, inputs, layout, merge_outputs)
        if valid_length is not None:
            # padded inputs must not leak into the (masked) outputs
            inputs = _mask_sequence_variable_length(F, inputs, length, valid_length, axis,
                                                    merge_outputs)
        if merge_outputs:
            outputs = F.elemwise_add(outputs, inputs)
        else:
            outputs = [F.elemwise_add(i, j) for i, j in zip(outputs, inputs)]
        return outputs, states


class BidirectionalCell(HybridRecurrentCell):
    """Runs ``l_cell`` forward and ``r_cell`` backward in time and concatenates their
    outputs on the feature axis. Only ``unroll`` (no single step)."""

    def __init__(self, l_cell, r_cell, output_prefix: str = "bi_") -> None:
        super().__init__(prefix="", params=None)
        self.register_child(l_cell, "l_cell")
        self.register_child(r_cell, "r_cell")
        self._output_prefix = output_prefix

    def __call__(self, inputs, states):
        raise NotImplementedError("Bidirectional cannot be stepped. Please use unroll")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(forward={self._children['l_cell']}, "
                f"backward={self._children['r_cell']})")

    def state_info(self, batch_size: int = 0) -> list:
        return _cells_state_info(self._children.values(), batch_size)

    def begin_state(self, **kwargs) -> list:
        _check_not_modified(self)
        return _cells_begin_state(self._children.values(), **kwargs)

    def _reverse(self, F, seq: list, length: int, valid_length) -> list:
        """The steps in reverse order; with ``valid_length`` only each sequence's valid
        prefix is reversed (padding stays at the end)."""
        if valid_length is None:
            return list(reversed(seq))
        rev = F.SequenceReverse(F.stack(*seq, axis=0), sequence_length=valid_length,
                                use_sequence_length=True, axis=0)
        return _as_list(F.split(rev, axis=0, num_outputs=length, squeeze_axis=True))

    def unroll(self, length: int, inputs, begin_state=None, layout: str = "NTC",
               merge_outputs=None, valid_length=None):
        self.reset()
        inputs, axis, F, batch_size = _format_sequence(length, inputs, layout, False)
        reversed_inputs = self._reverse(F, inputs, length, valid_length)
        begin_state = _get_begin_state(self, F, begin_state, inputs, batch_size, layout)
        l_cell, r_cell = self._children.values()
        n_left = len(l_cell.state_info(batch_size))
        l_outputs, l_states = l_cell.unroll(length, inputs=inputs,
                                            begin_state=begin_state[:n_left], layout=layout,
                                            merge_outputs=merge_outputs,
                                            valid_length=valid_length)
        r_outputs, r_states = r_cell.unroll(length, inputs=reversed_inputs,
                                            begin_state=begin_state[n_left:], layout=layout,
                                            merge_outputs=False, valid_length=valid_length)
        reversed_r_outputs = self._reverse(F, r_outputs, length, valid_length)
        if merge_outputs is None:
            merge_outputs = isinstance(l_outputs, _tensor_types())
            l_outputs, _, _, _ = _format_sequence(None, l_outputs, layout, merge_outputs)
            reversed_r_outputs, _, _, _ = _format_sequence(None, reversed_r_outputs, layout,
                                                           merge_outputs)
        if merge_outputs:
            if not isinstance(reversed_r_outputs, _tensor_types()):
                reversed_r_outputs = F.stack(*reversed_r_outputs, axis=axis)
            outputs = F.concat(l_outputs, reversed_r_outputs, dim=2,
                               name=f"{self._output_prefix}out")
        else:
            outputs = [F.concat(l_o, r_o, dim=1, name=f"{self._output_prefix}t{i}")
                       for i, (l_o, r_o) in enumerate(zip(l_outputs, reversed_r_outputs))]
        if valid_length is not None:
            outputs = _mask_sequence_variable_length(F, outputs, length, valid_length, axis,
                                                     merge_outputs)
        return outputs, l_states + r_states
