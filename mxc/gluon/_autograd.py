"""Gluon's view of ``mx.autograd``, tolerant of its absence.

Gluon needs only a few things from autograd: whether it is recording / in training mode,
``pause()``, and attaching gradient buffers to parameter arrays (``mark_variables``). When
``mxc.frontend.autograd`` is not available, gluon still works for inference: nothing is
recording, nothing is training and gradient buffers are plain arrays.
"""
from __future__ import annotations

import contextlib

_mod = None
_tried = False


def module():
    """``mxc.frontend.autograd`` or None."""
    global _mod, _tried
    if not _tried:
        _tried = True
        try:
            from ..frontend import autograd as m
        except ImportError:
            m = None
        _mod = m
    return _mod


def is_recording() -> bool:
    m = module()
    return bool(m.is_recording()) if m is not None else False


def is_training() -> bool:
    m = module()
    return bool(m.is_training()) if m is not None else False


def pause(train_mode: bool = False):
    m = module()
    if m is None:
        return contextlib.nullcontext()
    return m.pause(train_mode=train_mode)


def mark_variables(variables: list, gradients: list, grad_reqs) -> None:
    """Attach ``gradients`` to ``variables`` (each req 'write' | 'add' | 'null')."""
    m = module()
    if m is None:
        for v, g in zip(variables, gradients):
            v.__dict__["_gluon_grad"] = g
        return
    m.mark_variables(variables, gradients, grad_reqs)


def fresh_grad(arr) -> bool:
    """Whether backward wrote ``arr``'s gradient since the flag was last cleared (True when
    autograd does not track it)."""
    try:
        return bool(arr._fresh_grad)
    except AttributeError:
        return True


def set_fresh_grad(arr, value: bool) -> None:
    try:
        arr._fresh_grad = value
    except AttributeError:
        pass
