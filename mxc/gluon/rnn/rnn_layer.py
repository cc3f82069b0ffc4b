"""Recurrent layers ``RNN``, ``LSTM``, ``GRU`` (MXNet 1.9.1's
``python/mxnet/gluon/rnn/rnn_layer.py``).

A layer keeps one set of parameters per layer and direction, named as MXNet does
(``<prefix>l0_i2h_weight`` (G*H, I), ``l0_h2h_weight`` (G*H, H), ``l0_i2h_bias``,
``l0_h2h_bias``; ``r0_...`` for the backward direction; ``l0_h2r_weight`` (P, H) with an
LSTM projection), and runs them through the fused ``RNN`` operator
(``mxc/ir/ops/rnn.py``): the parameters are flattened and joined by ``_rnn_param_concat`` in
the operator's order (every weight — per layer, per direction, i2h then h2h — then every
bias), exactly as MXNet 1.9.1 does, so hybridized layers export MXNet's graph.

``layer(x)`` returns the output; ``layer(x, states)`` returns (output, new states). The
feature size of the first layer may be left to the first input (``input_size=0``).
Deviations from MXNet's graph, both only while tracing symbolically and both value-neutral:
zero begin states are derived from the input's batch dimension (mxc's ``_zeros`` cannot
infer an unknown dimension), and an unknown input size is inferred through a one-step
FullyConnected probe (see ``_input_size_probes``).
"""
from __future__ import annotations

import re

from ..block import HybridBlock
from . import rnn_cell
from .rnn_cell import RNNError, _symbol_zeros_from_batch, _tensor_types

__all__ = ["GRU", "LSTM", "RNN"]

_GATES = {"rnn_relu": 1, "rnn_tanh": 1, "lstm": 4, "gru": 3}


def _nd():
    from ...frontend import ndarray
    return ndarray


class _RNNLayer(HybridBlock):
    """What RNN, LSTM and GRU share: parameters, states, the fused operator call."""

    def __init__(self, hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                 i2h_weight_initializer, h2h_weight_initializer, i2h_bias_initializer,
                 h2h_bias_initializer, mode, projection_size, h2r_weight_initializer,
                 lstm_state_clip_min, lstm_state_clip_max, lstm_state_clip_nan, dtype,
                 use_sequence_length=False, **kwargs) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if layout not in ("TNC", "NTC"):
            raise RNNError(f"Invalid layout {layout}; must be one of ['TNC' or 'NTC']")
        if int(hidden_size) <= 0 or int(num_layers) <= 0:
            raise RNNError(f"{name}: hidden_size and num_layers must be positive, got "
                           f"{hidden_size} and {num_layers}")
        if mode not in _GATES:
            raise RNNError(f"{name}: activation must be 'relu' or 'tanh', got "
                           f"'{mode[len('rnn_'):]}'")
        self._hidden_size = int(hidden_size)
        self._projection_size = projection_size if projection_size else None
        self._num_layers = int(num_layers)
        self._mode = mode
        self._layout = layout
        self._dropout = dropout
        self._dir = 2 if bidirectional else 1
        self._input_size = input_size
        self._i2h_weight_initializer = i2h_weight_initializer
        self._h2h_weight_initializer = h2h_weight_initializer
        self._i2h_bias_initializer = i2h_bias_initializer
        self._h2h_bias_initializer = h2h_bias_initializer
        self._h2r_weight_initializer = h2r_weight_initializer
        self._lstm_state_clip_min = lstm_state_clip_min
        self._lstm_state_clip_max = lstm_state_clip_max
        self._lstm_state_clip_nan = lstm_state_clip_nan
        self._dtype = dtype
        self._use_sequence_length = use_sequence_length
        self._gates = _GATES[mode]
        self._cached_skip_states = None
        self.skip_states = True
        self._register_all_params(dtype)

    def _register_all_params(self, dtype) -> None:
        ng, ni, nh = self._gates, self._input_size, self._hidden_size
        npj = self._projection_size
        for i in range(self._num_layers):
            for j in ["l", "r"][:self._dir]:
                self._register_param(f"{j}{i}_i2h_weight", (ng * nh, ni),
                                     self._i2h_weight_initializer, dtype)
                self._register_param(f"{j}{i}_h2h_weight", (ng * nh, npj or nh),
                                     self._h2h_weight_initializer, dtype)
                self._register_param(f"{j}{i}_i2h_bias", (ng * nh,),
                                     self._i2h_bias_initializer, dtype)
                self._register_param(f"{j}{i}_h2h_bias", (ng * nh,),
                                     self._h2h_bias_initializer, dtype)
                if npj:
                    self._register_param(f"{j}{i}_h2r_weight", (npj, nh),
                                         self._h2r_weight_initializer, dtype)
            ni = (npj or nh) * self._dir

    def _register_param(self, name: str, shape, init, dtype):
        p = self.params.get(name, shape=shape, init=init, allow_deferred_init=True,
                            dtype=dtype)
        setattr(self, name, p)
        return p

    def __repr__(self) -> str:
        s = f"{type(self).__name__}({{mapping}}, {self._layout}"
        if self._num_layers != 1:
            s += f", num_layers={self._num_layers}"
        if self._dropout != 0:
            s += f", dropout={self._dropout}"
        if self._dir == 2:
            s += ", bidirectional"
        s += ")"
        shape = self.l0_i2h_weight.shape
        mapping = f"{shape[1] if shape[1] else None} -> {shape[0] // self._gates}"
        return s.format(mapping=mapping)

    def _collect_params_with_prefix(self, prefix: str = "") -> dict:
        """Structural names of MXNet's older unfused layers (``_unfused.0.i2h_weight``,
        ``_unfused.0.l_cell.i2h_weight`` when bidirectional), which MXNet 1.9.1 still
        writes in ``save_parameters`` files."""
        if prefix:
            prefix += "."
        pattern = re.compile(r"(l|r)(\d+)_(i2h|h2h|h2r)_(weight|bias)\Z")
        bidirectional = self._dir == 2

        def convert_key(key: str) -> str:
            d, layer, g, t = pattern.match(key).groups()
            if bidirectional:
                return f"_unfused.{layer}.{d}_cell.{g}_{t}"
            return f"_unfused.{layer}.{g}_{t}"

        ret = {prefix + convert_key(key): val for key, val in self._reg_params.items()}
        for name, child in self._children.items():
            ret.update(child._collect_params_with_prefix(prefix + name))
        return ret

    def state_info(self, batch_size: int = 0) -> list:
        raise NotImplementedError

    def _state(self, batch_size: int, size: int) -> dict:
        return {"shape": (self._num_layers * self._dir, batch_size, size),
                "__layout__": "LNC", "dtype": self._dtype}

    def _unfuse(self):
        """The same network as a stack of cells sharing this layer's parameters."""
        if self._projection_size:
            raise RNNError("_unfuse does not support projection layer yet!")
        if self._lstm_state_clip_min or self._lstm_state_clip_max:
            raise RNNError("_unfuse does not support state clipping yet!")
        make_cell = {
            "rnn_relu": lambda **kw: rnn_cell.RNNCell(self._hidden_size, activation="relu",
                                                      **kw),
            "rnn_tanh": lambda **kw: rnn_cell.RNNCell(self._hidden_size, activation="tanh",
                                                      **kw),
            "lstm": lambda **kw: rnn_cell.LSTMCell(self._hidden_size, **kw),
            "gru": lambda **kw: rnn_cell.GRUCell(self._hidden_size, **kw)}[self._mode]
        stack = rnn_cell.HybridSequentialRNNCell(prefix=self.prefix, params=self.params)
        with stack.name_scope():
            ni = self._input_size
            for i in range(self._num_layers):
                kwargs = {"input_size": ni,
                          "i2h_weight_initializer": self._i2h_weight_initializer,
                          "h2h_weight_initializer": self._h2h_weight_initializer,
                          "i2h_bias_initializer": self._i2h_bias_initializer,
                          "h2h_bias_initializer": self._h2h_bias_initializer}
                if self._dir == 2:
                    stack.add(rnn_cell.BidirectionalCell(make_cell(prefix=f"l{i}_", **kwargs),
                                                         make_cell(prefix=f"r{i}_", **kwargs)))
                else:
                    stack.add(make_cell(prefix=f"l{i}_", **kwargs))
                if self._dropout > 0 and i != self._num_layers - 1:
                    stack.add(rnn_cell.DropoutCell(self._dropout))
                ni = self._hidden_size * self._dir
        return stack

    def cast(self, dtype) -> None:
        super().cast(dtype)
        self._dtype = dtype

    def begin_state(self, batch_size: int = 0, func=None, **kwargs) -> list:
        """Initial states made by ``func`` (``mx.nd.zeros`` by default), each called with
        ``name='<prefix>h0_<i>'``, the state's ``shape``, ``__layout__``, ``dtype`` and
        ``kwargs`` (e.g. ``ctx``)."""
        if func is None:
            func = _nd().zeros
        states = []
        for i, info in enumerate(self.state_info(batch_size)):
            if info is not None:
                info.update(kwargs)
            else:
                info = kwargs
            states.append(func(name=f"{self._prefix}h0_{i}", **info))
        return states

    def _finish_input_size(self, inputs) -> None:
        """Give the first layer's i2h weights their input size from ``inputs`` (deferred
        initialization needs the size before the parameters are gathered)."""
        if inputs.ndim != 3:
            raise RNNError(f"{type(self).__name__} ({self.name}): input must have 3 "
                           f"dimensions (layout {self._layout}), got shape {inputs.shape}")
        for j in ["l", "r"][:self._dir]:
            weight = getattr(self, f"{j}0_i2h_weight")
            if weight.shape[1] == 0:
                weight.shape = (weight.shape[0], inputs.shape[2])
                weight._finish_deferred_init()

    def __call__(self, inputs, states=None, sequence_length=None):
        self.skip_states = states is None
        is_nd = isinstance(inputs, _nd().NDArray)
        if states is None:
            if is_nd:
                batch_size = inputs.shape[self._layout.find("N")]
                states = self.begin_state(batch_size, ctx=inputs.context, dtype=inputs.dtype)
            else:
                states = self.begin_state(
                    0, func=_symbol_zeros_from_batch(inputs, self._layout.find("N")))
        if isinstance(states, _tensor_types()):
            states = [states]
        if is_nd:
            self._finish_input_size(inputs)
        if self._cached_skip_states not in (None, self.skip_states):
            # the traced graph's outputs depend on whether states were given
            self._clear_cached_op()
        self._cached_skip_states = self.skip_states
        if self._use_sequence_length:
            return super().__call__(inputs, states, sequence_length)
        return super().__call__(inputs, states)

    def hybrid_forward(self, F, inputs, states, sequence_length=None, **kwargs):
        if F is _nd():
            batch_size = inputs.shape[self._layout.find("N")]
            infos = self.state_info(batch_size)
            if len(states) != len(infos):
                raise RNNError(f"{type(self).__name__}: expected {len(infos)} state arrays, "
                               f"got {len(states)}")
            for state, info in zip(states, infos):
                if state.shape != info["shape"]:
                    raise RNNError(f"Invalid recurrent state shape. Expecting "
                                   f"{info['shape']}, got {state.shape}.")
        out = self._forward_kernel(F, inputs, states, sequence_length, **kwargs)
        return out[0] if self.skip_states else out

    def _flat_params(self, F, kwargs: dict) -> list:
        """Every parameter flattened, in the fused operator's order."""
        gates = ["i2h", "h2h", "h2r"] if self._projection_size else ["i2h", "h2h"]
        return [kwargs[f"{d}{layer}_{g}_{t}"].reshape(-1)
                for t in ["weight", "bias"]
                for layer in range(self._num_layers)
                for d in ["l", "r"][:self._dir]
                for g in gates
                if g != "h2r" or t != "bias"]

    def _input_size_probes(self, F, inputs, kwargs: dict) -> dict:
        """Symbolic traces with a still unknown input size (``input_size=0``, e.g. a parent
        hybridized before its first forward): mxc's shape inference drops the partial shape
        (G*H, 0) of a variable, so nothing would give the first layer's i2h weights their
        shape. A FullyConnected on one time step infers it from the data; its result enters
        the graph as an exact zero (``zeros_like``, no gradient) added to the i2h bias, so
        values and gradients are unchanged. Returns {direction: zero} (empty when not
        needed)."""
        if F is _nd():
            return {}
        probes = {}
        step = F.slice_axis(inputs, axis=0, begin=0, end=1)
        for d in ["l", "r"][:self._dir]:
            if getattr(self, f"{d}0_i2h_weight").shape[1] == 0:
                fc = F.FullyConnected(step, kwargs[f"{d}0_i2h_weight"], no_bias=True,
                                      flatten=False, num_hidden=self._gates * self._hidden_size)
                probes[d] = F.sum(F.zeros_like(fc)).reshape((1,))
        return probes

    def _forward_kernel(self, F, inputs, states, sequence_length, **kwargs):
        if self._layout == "NTC":
            inputs = F.swapaxes(inputs, 0, 1)
        for d, zero in self._input_size_probes(F, inputs, kwargs).items():
            kwargs[f"{d}0_i2h_bias"] = F.broadcast_add(kwargs[f"{d}0_i2h_bias"], zero)
        params = F._internal._rnn_param_concat(*self._flat_params(F, kwargs), dim=0)
        rnn_args = list(states) + ([sequence_length] if self._use_sequence_length else [])
        rnn = F.RNN(inputs, params, *rnn_args, use_sequence_length=self._use_sequence_length,
                    state_size=self._hidden_size, projection_size=self._projection_size,
                    num_layers=self._num_layers, bidirectional=self._dir == 2,
                    p=self._dropout, state_outputs=True, mode=self._mode,
                    lstm_state_clip_min=self._lstm_state_clip_min,
                    lstm_state_clip_max=self._lstm_state_clip_max,
                    lstm_state_clip_nan=self._lstm_state_clip_nan)
        if self._mode == "lstm":
            outputs, states = rnn[0], [rnn[1], rnn[2]]
        else:
            outputs, states = rnn[0], [rnn[1]]
        if self._layout == "NTC":
            outputs = F.swapaxes(outputs, 0, 1)
        return outputs, states


class RNN(_RNNLayer):
    """Multi-layer Elman RNN: ``h_t = activation(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``,
    ``activation`` 'relu' (default) or 'tanh'. States: [h] of shape (L*D, N, H)."""

    def __init__(self, hidden_size: int, num_layers: int = 1, activation: str = "relu",
                 layout: str = "TNC", dropout: float = 0, bidirectional: bool = False,
                 i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 input_size: int = 0, dtype="float32", **kwargs) -> None:
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, "rnn_" + str(activation),
                         None, None, None, None, False, dtype, **kwargs)

    def state_info(self, batch_size: int = 0) -> list:
        return [self._state(batch_size, self._hidden_size)]


class LSTM(_RNNLayer):
    """Multi-layer LSTM (gates i, f, g, o). States: [h, c], each (L*D, N, H) (h is
    (L*D, N, projection_size) with a projection). ``state_clip_min/max/nan`` clip the cell
    state as the RNN operator's ``lstm_state_clip_*``."""

    def __init__(self, hidden_size: int, num_layers: int = 1, layout: str = "TNC",
                 dropout: float = 0, bidirectional: bool = False, input_size: int = 0,
                 i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 projection_size=None, h2r_weight_initializer=None, state_clip_min=None,
                 state_clip_max=None, state_clip_nan: bool = False, dtype="float32",
                 **kwargs) -> None:
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, "lstm", projection_size,
                         h2r_weight_initializer, state_clip_min, state_clip_max,
                         state_clip_nan, dtype, **kwargs)

    def state_info(self, batch_size: int = 0) -> list:
        return [self._state(batch_size, self._projection_size or self._hidden_size),
                self._state(batch_size, self._hidden_size)]


class GRU(_RNNLayer):
    """Multi-layer GRU, cuDNN variant (gates r, z, n; the reset gate scales
    ``W_hn h + b_hn``). States: [h] of shape (L*D, N, H)."""

    def __init__(self, hidden_size: int, num_layers: int = 1, layout: str = "TNC",
                 dropout: float = 0, bidirectional: bool = False, input_size: int = 0,
                 i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 dtype="float32", **kwargs) -> None:
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, "gru", None, None, None,
                         None, False, dtype, **kwargs)

    def state_info(self, batch_size: int = 0) -> list:
        return [self._state(batch_size, self._hidden_size)]
