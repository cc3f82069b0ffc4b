"""Global semantics switches of MXNet's ``mxnet.util``: numpy shape semantics (0-d and
zero-size arrays) and numpy array semantics, as thread-local flags with scopes/decorators.
"""
from __future__ import annotations

import functools
import inspect
import threading

__all__ = [
    "getenv",
    "is_np_array",
    "is_np_shape",
    "np_array",
    "np_shape",
    "reset_np",
    "set_np",
    "set_np_array",
    "set_np_shape",
    "setenv",
    "use_np",
    "use_np_array",
    "use_np_shape",
]

_state = threading.local()


def _get(name: str) -> bool:
    return getattr(_state, name, False)


def is_np_shape() -> bool:
    """Whether numpy shape semantics are on (``()`` is a scalar shape, 0 a zero-size dim)."""
    return _get("np_shape")


def set_np_shape(active: bool) -> bool:
    """Turn numpy shape semantics on or off for this thread; returns the previous state."""
    prev = _get("np_shape")
    _state.np_shape = bool(active)
    return prev


def is_np_array() -> bool:
    """Whether numpy array semantics (``mx.np``) are on."""
    return _get("np_array")


def set_np_array(active: bool) -> bool:
    prev = _get("np_array")
    _state.np_array = bool(active)
    return prev


class _Scope:
    """A ``with`` scope (and decorator) setting one flag, restoring it on exit."""

    def __init__(self, setter, active: bool = True) -> None:
        self._setter = setter
        self._active = active
        self._prev = None

    def __enter__(self):
        self._prev = self._setter(self._active)
        return self

    def __exit__(self, *exc) -> None:
        self._setter(self._prev)

    def __call__(self, func):
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            with _Scope(self._setter, self._active):
                return func(*args, **kwargs)
        return wrapped


def np_shape(active: bool = True) -> _Scope:
    """``with mx.util.np_shape(True):`` numpy shape semantics inside the block."""
    return _Scope(set_np_shape, active)


def np_array(active: bool = True) -> _Scope:
    return _Scope(set_np_array, active)


def _decorate(func, scope_factory):
    if inspect.isclass(func):
        for name, method in list(vars(func).items()):
            if callable(method) and not isinstance(method, type):
                setattr(func, name, _decorate(method, scope_factory))
            elif isinstance(method, property):
                setattr(func, name, property(
                    _decorate(method.fget, scope_factory) if method.fget else None,
                    _decorate(method.fset, scope_factory) if method.fset else None,
                    method.fdel, method.__doc__))
        return func
    if callable(func):
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            with scope_factory():
                return func(*args, **kwargs)
        return wrapped
    raise TypeError(f"use_np_shape/use_np_array decorate functions and classes, got {func!r}")


def use_np_shape(func):
    """Decorator: run ``func`` (or every method of a class) with numpy shape semantics."""
    return _decorate(func, lambda: np_shape(True))


def use_np_array(func):
    return _decorate(func, lambda: np_array(True))


def use_np(func):
    """Decorator: numpy shape and array semantics."""
    return use_np_shape(use_np_array(func))


def set_np(shape: bool = True, array: bool = True, dtype: bool = False) -> None:
    if array and not shape:
        raise ValueError("numpy array semantics require numpy shape semantics")
    set_np_shape(shape)
    set_np_array(array)


def reset_np() -> None:
    set_np(shape=False, array=False)


def getenv(name: str):
    import os
    return os.environ.get(name)


def setenv(name: str, value) -> None:
    import os
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)
