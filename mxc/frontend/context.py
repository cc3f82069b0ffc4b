"""Device contexts (MXNet's ``mxnet.context``): ``mx.cpu()``, ``mx.gpu(i)``, ``with ctx:``.

A :class:`Context` names where arrays live and where ops run. ``mx.gpu(i)`` runs on the PTX
back end (``docs/gpu.md``) through :mod:`.gpu_storage`: a real CUDA device when
``runtime.cuda`` finds a driver and a device, else -- with ``MXC_GPU_EMULATOR=1`` -- the CPU
emulator of the GPU kernels as ``gpu(0)``; otherwise putting data or running code on a gpu
context raises :class:`~mxc.base.MXNetError` saying why ("no CUDA driver/device: ...").
GPU contexts can always be created, compared and printed.
"""
from __future__ import annotations

import threading
from typing import ClassVar, Self

from ..base import MXNetError

__all__ = ["Context", "cpu", "cpu_pinned", "current_context", "gpu", "gpu_memory_info",
           "num_gpus"]


class _DefaultCtx:
    """``Context.default_ctx``: the current context (MXNet 1.x compatibility)."""

    def __get__(self, obj, owner) -> Context:
        return current_context()


class Context:
    """A device: type ('cpu', 'gpu', 'cpu_pinned', 'cpu_shared') and id.

    ``with mx.gpu(1):`` makes it the default for array creation in the block.
    """

    devtype2str: ClassVar[dict] = {1: "cpu", 2: "gpu", 3: "cpu_pinned", 5: "cpu_shared"}
    devstr2type: ClassVar[dict] = {"cpu": 1, "gpu": 2, "cpu_pinned": 3, "cpu_shared": 5}
    _default = threading.local()

    __slots__ = ("_old_ctx", "device_id", "device_typeid")
    default_ctx = _DefaultCtx()

    def __init__(self, device_type, device_id: int = 0) -> None:
        if isinstance(device_type, Context):
            self.device_typeid = device_type.device_typeid
            self.device_id = device_type.device_id
        else:
            if device_type not in self.devstr2type:
                raise MXNetError(f"unknown device type {device_type!r}; expected one of "
                                 f"{sorted(self.devstr2type)}")
            self.device_typeid = self.devstr2type[device_type]
            self.device_id = int(device_id)
        self._old_ctx = None

    @property
    def device_type(self) -> str:
        return self.devtype2str[self.device_typeid]

    def __hash__(self) -> int:
        return hash((self.device_typeid, self.device_id))

    def __eq__(self, other) -> bool:
        return isinstance(other, Context) and self.device_typeid == other.device_typeid \
            and self.device_id == other.device_id

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __str__(self) -> str:
        return f"{self.device_type}({self.device_id})"

    __repr__ = __str__

    def __enter__(self) -> Self:
        # a per-thread stack, not ``self._old_ctx``: arrays share their Context object, so
        # the same object is often entered again inside its own ``with`` (a Block calling
        # its children with ``with x.context:``)
        d = Context._default
        stack = getattr(d, "stack", None)
        if stack is None:
            stack = d.stack = []
        stack.append(current_context())
        d.value = self
        return self

    def __exit__(self, *exc) -> None:
        d = Context._default
        stack = getattr(d, "stack", None)
        d.value = stack.pop() if stack else None

    def empty_cache(self) -> None:
        """Release the memory the device's pool caches (a gpu context's ``cuMemAlloc``
        blocks; a no-op on the CPU, which has no pool)."""
        if self.device_typeid == 2:
            from .gpu_storage import release_cache
            release_cache(self)

    # MXNet exposes the default as a class attribute read through a property-like access
    @classmethod
    def _current(cls) -> Context:
        v = getattr(cls._default, "value", None)
        if v is None:
            v = cls._default.value = Context("cpu", 0)
        return v


def cpu(device_id: int = 0) -> Context:
    """The CPU context (``device_id`` is kept for MXNet compatibility; all CPUs are one)."""
    return Context("cpu", device_id)


def cpu_pinned(device_id: int = 0) -> Context:
    return Context("cpu_pinned", device_id)


def gpu(device_id: int = 0) -> Context:
    """A GPU context (a CUDA device, or the emulator with ``MXC_GPU_EMULATOR=1``; using it
    raises when there is neither)."""
    return Context("gpu", device_id)


def current_context() -> Context:
    """The default context of this thread (``mx.cpu()`` unless inside ``with ctx:``)."""
    return Context._current()


def num_gpus() -> int:
    """Number of GPUs mxc can run on: the CUDA devices, else 1 under the emulator
    (``MXC_GPU_EMULATOR=1``), else 0."""
    from .gpu_storage import num_gpus as n
    return n()


def gpu_memory_info(device_id: int = 0) -> tuple:
    """(free, total) bytes of ``gpu(device_id)`` (the emulator reports its pool-less host
    memory as (0, 0))."""
    from .gpu_storage import get_device
    dev = get_device(gpu(device_id))
    drv = getattr(dev, "_drv", None)
    if drv is None:
        return (0, 0)
    from ..runtime.cuda import _check
    dev.activate()
    free, total = _check(drv.cuMemGetInfo(), "cuMemGetInfo")
    return (int(free), int(total))


def check_runnable(ctx: Context) -> None:
    """Raise unless data can live and code can run on ``ctx`` (for a gpu context: unless
    there is a CUDA device or the emulator for it; the error says which is missing)."""
    if ctx.device_typeid == 2:
        from .gpu_storage import get_device
        get_device(ctx)


def as_context(ctx) -> Context:
    """Accept a Context, a string such as 'cpu(0)'/'gpu', or None (the current context)."""
    if ctx is None:
        return current_context()
    if isinstance(ctx, Context):
        return ctx
    if isinstance(ctx, str):
        s = ctx.strip()
        if "(" in s and s.endswith(")"):
            t, i = s[:-1].split("(", 1)
            return Context(t.strip(), int(i or 0))
        return Context(s, 0)
    raise MXNetError(f"expected a Context, got {type(ctx).__name__}")
