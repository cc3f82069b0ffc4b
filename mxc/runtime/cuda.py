"""CUDA devices for the runtime, through NVIDIA's driver API binding ``cuda-bindings``.

What a compiled GPU graph needs at run time, and nothing of the compiler:

* :func:`cuda_status` / :func:`is_available` -- whether a driver and a device are there (the
  binding imports without a GPU; ``cuInit`` then fails, and this says why instead of raising);
* :class:`CudaDevice` -- a device's primary context, a stream, a caching memory pool
  (:class:`MemoryPool`: ``cuMemAlloc`` blocks kept on free lists by size), host<->device
  copies, PTX modules (``cuModuleLoadData``) and kernel launches on the stream;
* :class:`GPUProgram` -- the GPU counterpart of ``runtime.program.Program``: storage slots in
  device memory (the memory plan's arena is one allocation), kernel launches from the launch
  plan ``compiler.cuda_build`` writes, sections (``forward``), ``upload``/``download``;
* :class:`PycudaDevice` -- the same interface over pycuda, used only when pycuda imports;
* :class:`ArtifactProgram` -- runs the launch plan of a GPU artifact (``plan.json`` of a
  ``cuda-sm*`` build of ``mx.compile``: every kernel argument a region + byte offset) with
  its PTX and weights; :func:`resolve_device` turns ``device=`` specs into device objects.

Kernel convention (``codegen.ptx``): ``k(i64 task_begin, i64 task_end, ptr buf0, ...)``, each
argument passed as 8 bytes. The device interface :class:`GPUProgram` relies on is duck-typed
(``alloc free htod dtoh memset load_module get_function launch synchronize``), so the CPU
emulator of the PTX back end (``codegen.ptx_emu.EmuDevice``) runs the same programs.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from ..base import MXNetError
from .program import SlotInfo


class CudaError(MXNetError):
    """A CUDA driver call failed; ``code`` is the driver's error name."""

    def __init__(self, msg: str, code: str = "") -> None:
        super().__init__(msg)
        self.code = code


class CudaUnavailable(CudaError):
    """No usable CUDA driver or device (or cuda-bindings is not installed)."""


_status: tuple | None = None
_status_lock = threading.Lock()


def _driver():
    try:
        from cuda.bindings import driver  # type: ignore
    except ImportError:
        try:
            from cuda import cuda as driver  # type: ignore  # cuda-python < 12.6 layout
        except ImportError:
            return None
    return driver


def cuda_status() -> tuple[bool, str]:
    """(available, reason): is there a CUDA driver with at least one device? Never raises."""
    global _status
    with _status_lock:
        if _status is not None:
            return _status
        drv = _driver()
        if drv is None:
            _status = (False, "cuda-bindings is not installed (pip install cuda-bindings)")
            return _status
        try:
            (err,) = drv.cuInit(0)
        except Exception as e:  # noqa: BLE001 - DynamicLibNotFoundError without a driver
            _status = (False, f"no CUDA driver: {type(e).__name__}: {e}")
            return _status
        if int(err) != 0:
            _status = (False, f"cuInit failed: {_err_name(drv, err)}")
            return _status
        err, n = drv.cuDeviceGetCount()
        if int(err) != 0 or n == 0:
            _status = (False, "the CUDA driver reports no device")
            return _status
        _status = (True, f"{n} CUDA device(s)")
        return _status


def is_available() -> bool:
    return cuda_status()[0]


def device_count() -> int:
    if not is_available():
        return 0
    drv = _driver()
    return int(_check(drv.cuDeviceGetCount(), "cuDeviceGetCount"))


def _err_name(drv, err) -> str:
    try:
        _e, name = drv.cuGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        return str(err)


def _check(result, what: str = "CUDA call"):
    """Unpack a cuda-bindings result tuple ``(err, *values)``, raising on errors."""
    if not isinstance(result, tuple):
        result = (result,)
    err, vals = result[0], result[1:]
    if int(err) != 0:
        name = _err_name(_driver(), err)
        raise CudaError(f"{what} failed: {name}", name)
    if not vals:
        return None
    return vals[0] if len(vals) == 1 else vals


# ---------------------------------------------------------------------------------------------
# memory pool
# ---------------------------------------------------------------------------------------------
class MemoryPool:
    """A caching allocator over raw device alloc/free functions.

    Sizes are rounded up (to 256 bytes below 1 MiB, to 64 KiB above, so blocks of similar
    sizes are shared); freed blocks go on a free list per rounded size and are reused before
    new memory is requested. When the device is out of memory the cache is released and the
    allocation retried once. ``release()`` returns every cached block to the driver."""

    def __init__(self, raw_alloc, raw_free) -> None:
        self._raw_alloc = raw_alloc
        self._raw_free = raw_free
        self._free: dict[int, list[int]] = {}
        self._size: dict[int, int] = {}
        self._lock = threading.Lock()
        self.in_use = 0
        self.cached = 0
        self.peak = 0

    @staticmethod
    def rounded(nbytes: int) -> int:
        n = max(int(nbytes), 1)
        g = 256 if n < (1 << 20) else (1 << 16)
        return -(-n // g) * g

    def alloc(self, nbytes: int) -> int:
        size = self.rounded(nbytes)
        with self._lock:
            lst = self._free.get(size)
            if lst:
                ptr = lst.pop()
                self.cached -= size
            else:
                try:
                    ptr = self._raw_alloc(size)
                except CudaError as e:
                    if "OUT_OF_MEMORY" not in e.code:
                        raise
                    self._release_locked()
                    ptr = self._raw_alloc(size)
                self._size[ptr] = size
            self.in_use += size
            self.peak = max(self.peak, self.in_use)
            return ptr

    def free(self, ptr: int) -> None:
        with self._lock:
            size = self._size.get(ptr)
            if size is None:
                raise CudaError(f"free of {ptr:#x}, which this pool did not allocate")
            self._free.setdefault(size, []).append(ptr)
            self.in_use -= size
            self.cached += size

    def _release_locked(self) -> None:
        for lst in self._free.values():
            for p in lst:
                self._raw_free(p)
                del self._size[p]
        self._free.clear()
        self.cached = 0

    def release(self) -> None:
        with self._lock:
            self._release_locked()

    def stats(self) -> dict:
        return {"in_use": self.in_use, "cached": self.cached, "peak": self.peak}


# ---------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------
class CudaDevice:
    """One GPU through the driver API: primary context, a stream, a memory pool, modules."""

    def __init__(self, ordinal: int = 0) -> None:
        ok, why = cuda_status()
        if not ok:
            raise CudaUnavailable(f"CUDA is not available: {why}")
        drv = self._drv = _driver()
        n = device_count()
        if not 0 <= ordinal < n:
            raise CudaError(f"gpu({ordinal}) does not exist: {n} CUDA device(s)")
        self.ordinal = ordinal
        self.dev = _check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
        self.ctx = _check(drv.cuDevicePrimaryCtxRetain(self.dev), "cuDevicePrimaryCtxRetain")
        self.activate()
        raw = _check(drv.cuDeviceGetName(256, self.dev), "cuDeviceGetName")
        self.name = raw.split(b"\0", 1)[0].decode() if isinstance(raw, bytes) else str(raw)
        A = drv.CUdevice_attribute
        self.compute_capability = (
            _check(drv.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                            self.dev)),
            _check(drv.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                            self.dev)))
        self.stream = _check(drv.cuStreamCreate(0), "cuStreamCreate")
        self.pool = MemoryPool(self._raw_alloc, self._raw_free)
        self._modules: dict[str, object] = {}

    @property
    def sm(self) -> str:
        """The PTX target matching this device, e.g. ``sm_80``."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def activate(self) -> None:
        """Make the context current in the calling thread (driver contexts are per thread)."""
        _check(self._drv.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    # memory
    def _raw_alloc(self, nbytes: int) -> int:
        self.activate()
        return int(_check(self._drv.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes})"))

    def _raw_free(self, ptr: int) -> None:
        self.activate()
        _check(self._drv.cuMemFree(ptr), "cuMemFree")

    def alloc(self, nbytes: int) -> int:
        return self.pool.alloc(nbytes)

    def free(self, ptr: int) -> None:
        self.pool.free(ptr)

    def htod(self, ptr: int, src: np.ndarray, stream=None) -> None:
        src = np.ascontiguousarray(src)
        self.activate()
        if stream is None:  # synchronous copies order with the (blocking) stream's work
            _check(self._drv.cuMemcpyHtoD(ptr, src.ctypes.data, src.nbytes), "cuMemcpyHtoD")
        else:
            _check(self._drv.cuMemcpyHtoDAsync(ptr, src.ctypes.data, src.nbytes, stream),
                   "cuMemcpyHtoDAsync")

    def dtoh(self, dst: np.ndarray, ptr: int, stream=None) -> None:
        if not dst.flags.c_contiguous:
            raise ValueError("dtoh needs a C-contiguous destination")
        self.activate()
        self.synchronize()
        _check(self._drv.cuMemcpyDtoH(dst.ctypes.data, ptr, dst.nbytes), "cuMemcpyDtoH")

    def memset(self, ptr: int, value: int, nbytes: int, stream=None) -> None:
        self.activate()
        _check(self._drv.cuMemsetD8(ptr, value & 0xFF, nbytes), "cuMemsetD8")

    def dtod(self, dst: int, src: int, nbytes: int, stream=None) -> None:
        """Device-to-device copy, ordered on the stream."""
        self.activate()
        _check(self._drv.cuMemcpyDtoDAsync(dst, src, nbytes,
                                           stream if stream is not None else self.stream),
               "cuMemcpyDtoDAsync")

    # code
    def load_module(self, ptx: str):
        key = hashlib.sha256(ptx.encode()).hexdigest()
        mod = self._modules.get(key)
        if mod is None:
            self.activate()
            try:
                mod = _check(self._drv.cuModuleLoadData(ptx.encode() + b"\0"),
                             "cuModuleLoadData")
            except CudaError as e:
                raise CudaError(f"{e} (the driver could not JIT the PTX: is the driver older "
                                "than the PTX ISA version, or the sm target newer than the "
                                f"GPU ({self.sm})?)", e.code) from None
            self._modules[key] = mod
        return mod

    def get_function(self, module, name: str):
        return _check(self._drv.cuModuleGetFunction(module, name.encode()),
                      f"cuModuleGetFunction({name})")

    def launch(self, fn, grid: int, block: int, args: list, smem: int = 0, stream=None,
               meta: dict | None = None) -> None:
        """Launch ``fn`` on a 1-D grid; ``args`` are 8-byte values (task range, pointers)."""
        vals = [ctypes.c_uint64(int(a) & 0xFFFFFFFFFFFFFFFF) for a in args]
        ptrs = (ctypes.c_void_p * max(len(vals), 1))(*[ctypes.addressof(v) for v in vals])
        self.activate()
        _check(self._drv.cuLaunchKernel(fn, int(grid), 1, 1, int(block), 1, 1, int(smem),
                                        stream if stream is not None else self.stream,
                                        ctypes.addressof(ptrs), 0), "cuLaunchKernel")

    def synchronize(self, stream=None) -> None:
        self.activate()
        _check(self._drv.cuStreamSynchronize(stream if stream is not None else self.stream),
               "cuStreamSynchronize")

    def new_stream(self):
        self.activate()
        return _check(self._drv.cuStreamCreate(0), "cuStreamCreate")

    def __repr__(self) -> str:
        return f"<CudaDevice gpu({self.ordinal}) {self.name} {self.sm}>"


class PycudaDevice:
    """The device interface over pycuda (used only where pycuda is installed)."""

    def __init__(self, ordinal: int = 0) -> None:
        try:
            import pycuda.driver as cuda  # type: ignore
        except ImportError as e:
            raise CudaUnavailable(f"pycuda is not installed: {e}") from None
        cuda.init()
        self._cuda = cuda
        self.ordinal = ordinal
        self.ctx = cuda.Device(ordinal).retain_primary_context()
        self.ctx.push()
        dev = cuda.Device(ordinal)
        self.name = dev.name()
        self.compute_capability = dev.compute_capability()
        self.stream = cuda.Stream()
        self._bufs: dict[int, object] = {}
        self.pool = MemoryPool(self._raw_alloc, self._raw_free)

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def _raw_alloc(self, nbytes: int) -> int:
        try:
            b = self._cuda.mem_alloc(nbytes)
        except self._cuda.MemoryError as e:
            raise CudaError(str(e), "CUDA_ERROR_OUT_OF_MEMORY") from None
        self._bufs[int(b)] = b
        return int(b)

    def _raw_free(self, ptr: int) -> None:
        self._bufs.pop(ptr).free()

    def alloc(self, nbytes: int) -> int:
        return self.pool.alloc(nbytes)

    def free(self, ptr: int) -> None:
        self.pool.free(ptr)

    def htod(self, ptr: int, src: np.ndarray, stream=None) -> None:
        self._cuda.memcpy_htod(ptr, np.ascontiguousarray(src))

    def dtoh(self, dst: np.ndarray, ptr: int, stream=None) -> None:
        self.synchronize()
        self._cuda.memcpy_dtoh(dst, ptr)

    def memset(self, ptr: int, value: int, nbytes: int, stream=None) -> None:
        self._cuda.memset_d8(ptr, value & 0xFF, nbytes)

    def load_module(self, ptx: str):
        return self._cuda.module_from_buffer(ptx.encode())

    def get_function(self, module, name: str):
        return module.get_function(name)

    def launch(self, fn, grid: int, block: int, args: list, smem: int = 0, stream=None,
               meta: dict | None = None) -> None:
        vals = [np.uint64(int(a) & 0xFFFFFFFFFFFFFFFF) for a in args]
        fn(*vals, block=(int(block), 1, 1), grid=(int(grid), 1, 1), shared=int(smem),
           stream=stream or self.stream)

    def synchronize(self, stream=None) -> None:
        (stream or self.stream).synchronize()


_devices: dict[int, object] = {}
_dev_lock = threading.Lock()


def get_device(ordinal: int = 0):
    """The process-wide device object of ``gpu(ordinal)``: a :class:`CudaDevice` (or a
    :class:`PycudaDevice` when only pycuda is installed). Raises :class:`CudaUnavailable`
    with the reason when there is no usable GPU."""
    with _dev_lock:
        d = _devices.get(ordinal)
        if d is None:
            if _driver() is None:
                try:
                    import pycuda.driver  # type: ignore  # noqa: F401
                except ImportError:
                    raise CudaUnavailable("CUDA is not available: neither cuda-bindings nor "
                                          "pycuda is installed (pip install cuda-bindings)") \
                        from None
                d = PycudaDevice(ordinal)
            else:
                d = CudaDevice(ordinal)
            _devices[ordinal] = d
        return d


# ---------------------------------------------------------------------------------------------
# a compiled graph on a device
# ---------------------------------------------------------------------------------------------
@dataclass
class GPUCall:
    name: str
    fn: object
    grid: int
    block: int
    smem: int
    slots: list
    offsets: list              # byte offsets into the slots
    n_tasks: int
    meta: dict = field(default_factory=dict)
    node: str = ""


class GPUProgram:
    """Slots in device memory and the kernel launches of a compiled graph.

    ``plan`` is the launch plan of ``compiler.cuda_build`` (JSON-ready dict): ``slots``
    (nbytes/kind/name), ``kernels`` (name, grid, block, smem, slots, offsets, n_tasks, mode,
    sync, node), ``sections``, ``arena_offsets``/``arena_bytes`` (the memory plan)."""

    def __init__(self, ptx: str, plan: dict, device) -> None:
        self.ptx = ptx
        self.plan = plan
        self.device = device
        self.slots = [SlotInfo(int(s["nbytes"]), s.get("kind", "temp"), s.get("name", ""))
                      for s in plan["slots"]]
        self.module = device.load_module(ptx)
        fns: dict = {}
        self.calls = []
        for k in plan["kernels"]:
            fn = fns.get(k["name"])
            if fn is None and k["grid"] > 0:
                fn = fns[k["name"]] = device.get_function(self.module, k["name"])
            self.calls.append(GPUCall(k["name"], fn, int(k["grid"]), int(k["block"]),
                                      int(k.get("smem_dynamic", 0)), list(k["slots"]),
                                      list(k["offsets"]), int(k["n_tasks"]), k,
                                      k.get("node", "")))
        self.sections = {n: tuple(v) for n, v in plan.get("sections", {}).items()}
        self.arena_offsets = {int(s): int(o) for s, o in plan.get("arena_offsets", {}).items()}
        self.arena_bytes = int(plan.get("arena_bytes", 0))
        self.ptrs: list[int] = []
        self._owned: list[int] = []
        self._args: list[list[int]] = []

    def allocate(self, bound: dict | None = None) -> None:
        """Device storage for every slot: ``bound`` maps slot -> device pointer to use as is;
        planned temporaries live in one arena allocation, other slots get their own."""
        self.release()
        bound = bound or {}
        arena = None
        if any(i not in bound for i in self.arena_offsets):
            arena = self.device.alloc(max(self.arena_bytes, 1))
            self._owned.append(arena)
        self.ptrs = []
        for i, s in enumerate(self.slots):
            if i in bound:
                p = int(bound[i])
            elif i in self.arena_offsets:
                p = arena + self.arena_offsets[i]
            else:
                p = self.device.alloc(max(s.nbytes, 1))
                self._owned.append(p)
            self.ptrs.append(p)
        self._args = [[0, c.n_tasks] + [self.ptrs[s] + o for s, o in zip(c.slots, c.offsets)]
                      for c in self.calls]

    def release(self) -> None:
        for p in self._owned:
            self.device.free(p)
        self._owned = []
        self.ptrs = []

    def upload(self, slot: int, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        if a.nbytes > self.slots[slot].nbytes:
            raise ValueError(f"slot {slot} ({self.slots[slot].name}) holds "
                             f"{self.slots[slot].nbytes} bytes, got {a.nbytes}")
        self.device.htod(self.ptrs[slot], a)

    def download(self, slot: int, shape, dtype) -> np.ndarray:
        out = np.empty(tuple(shape), dtype)
        if out.nbytes > self.slots[slot].nbytes:
            raise ValueError(f"slot {slot} ({self.slots[slot].name}) holds "
                             f"{self.slots[slot].nbytes} bytes, asked for {out.nbytes}")
        self.device.dtoh(out, self.ptrs[slot])
        return out

    def reseed(self) -> None:
        from .random import next_seed

        for slot, info in enumerate(self.slots):
            if info.kind == "rng":
                self.device.htod(self.ptrs[slot], np.array([next_seed()], np.uint64))

    def run(self, section: str | None = None, stream=None) -> None:
        """Launch the calls of ``section`` (all when None) in order on the stream; returns
        without waiting (``download`` and ``synchronize`` wait)."""
        if not self.ptrs:
            raise MXNetError("GPUProgram.run before allocate()")
        if section in (None, "forward"):
            self.reseed()
        b, e = self.sections.get(section, (0, len(self.calls))) if section else \
            (0, len(self.calls))
        dev = self.device
        for i in range(b, e):
            c = self.calls[i]
            if c.n_tasks <= 0 or c.grid <= 0:
                continue
            dev.launch(c.fn, c.grid, c.block, self._args[i], c.smem, stream, c.meta)

    def synchronize(self) -> None:
        self.device.synchronize()


# ---------------------------------------------------------------------------------------------
# GPU artifacts (mx.compile(..., target="cuda-sm80")): device specs and the plan runner
# ---------------------------------------------------------------------------------------------
#: the CPU emulator of the PTX back end: ``codegen.ptx_emu.EmuDevice``. The runtime never
#: imports the code generator (a deployed model needs only ``mxc.runtime``), so "emulator"
#: finds it only once that module is imported (``import mxc.codegen.ptx_emu``; ``mxc run
#: --device emulator`` does it) -- or pass ``device=EmuDevice()`` itself.
EMULATOR_MODULE = "mxc.codegen.ptx_emu"
DEVICE_ENV = "MXC_CUDA_DEVICE"


def resolve_device(spec=None):
    """A device object for ``spec``: None (``$MXC_CUDA_DEVICE``, else GPU 0), an int or
    ``"cuda"``/``"gpu"``/``"cuda:N"``/``"gpu(N)"`` (:func:`get_device`), ``"emulator"`` (a new
    ``codegen.ptx_emu.EmuDevice``), or a device object (anything with ``load_module``,
    ``launch``, ``alloc``, ...), returned as is. Raises :class:`CudaUnavailable` without a
    usable GPU, :class:`CudaError` for a bad spec."""
    if spec is None:
        spec = os.environ.get(DEVICE_ENV, "").strip() or 0
    if not isinstance(spec, (str, int)):
        missing = [a for a in ("alloc", "free", "htod", "dtoh", "load_module", "get_function",
                               "launch", "synchronize") if not hasattr(spec, a)]
        if missing:
            raise CudaError(f"device {spec!r} lacks {missing} (expected a runtime.cuda device, "
                            "codegen.ptx_emu.EmuDevice, or 'cuda:N' / 'emulator')")
        return spec
    if isinstance(spec, int):
        return get_device(spec)
    s = spec.strip().lower().replace("(", ":").rstrip(")")
    if s in ("emulator", "emu", "ptx-emulator"):
        mod = sys.modules.get(EMULATOR_MODULE)
        if mod is None:
            raise CudaError("device 'emulator' is the CPU PTX emulator of the code generator "
                            f"({EMULATOR_MODULE}, needs llvmlite), which the runtime does not "
                            f"import by itself: `import {EMULATOR_MODULE}` first (or pass "
                            "device=EmuDevice()); `mxc run OUTDIR --device emulator` does it")
        return mod.EmuDevice()
    if s.isdigit():
        return get_device(int(s))
    name, _, idx = s.partition(":")
    if name in ("cuda", "gpu") and (idx == "" or idx.isdigit()):
        return get_device(int(idx or 0))
    raise CudaError(f"unknown device {spec!r}: expected 'cuda', 'cuda:N', 'gpu:N', an int, "
                    "'emulator' or a device object")


def is_emulator(device) -> bool:
    """Whether ``device`` runs emulation modules (``EmuDevice``: kernels registered per PTX)."""
    return hasattr(device, "register")


def _sm_number(sm) -> int:
    try:
        return int(str(sm).lower().replace("sm_", "").replace("sm", ""))
    except ValueError:
        return 0


class _EmulationModule:
    """What ``EmuDevice.register`` needs of an emulation module (``codegen.ptx.GPUModule``
    duck type): its LLVM IR text and kernel names."""

    emulate = True

    def __init__(self, ir: str, names: list) -> None:
        self.ir = ir
        self.names = list(names)
        self.launches: list = []


class ArtifactProgram:
    """A GPU artifact's launch plan on a device: the PTX module loaded, the weights uploaded
    once, a workspace, and device buffers for the inputs and outputs.

    :meth:`run` takes and returns host arrays (uploads, launches, downloads);
    :meth:`run_device` launches on caller-owned device pointers with no host copies -- what a
    C program following ``docs/deploy.md`` does. One run at a time per program (the buffers
    are shared; :meth:`run` holds a lock)."""

    def __init__(self, ptx: str, plan: dict, weights, device, *,
                 emulation_ir: str | None = None) -> None:
        self.plan = plan
        self.device = device
        self.ptx = ptx
        kernels = plan["kernels"]
        if is_emulator(device):
            if emulation_ir is None:
                raise CudaError("this artifact has no CPU emulation module (model.emu.ll): "
                                "rebuild it with the emulator enabled (the default; not "
                                "--no-emulator / emulator=False) to run it on the emulator")
            device.register(ptx, _EmulationModule(emulation_ir,
                                                   sorted({k["name"] for k in kernels})))
        else:
            want = _sm_number(plan.get("sm"))
            have = getattr(device, "compute_capability", None)
            if have is not None and want and 10 * int(have[0]) + int(have[1]) < want:
                raise CudaError(f"the artifact is built for {plan.get('sm')}, newer than this "
                                f"GPU ({getattr(device, 'sm', have)}): rebuild it with "
                                f"--target cuda-sm{10 * int(have[0]) + int(have[1])}")
        self.module = device.load_module(ptx)
        fns: dict = {}
        self.kernels = []
        for k in kernels:
            run = int(k["n_tasks"]) > 0 and int(k["grid"]) > 0
            fn = None
            if run:
                fn = fns.get(k["name"])
                if fn is None:
                    fn = fns[k["name"]] = device.get_function(self.module, k["name"])
            self.kernels.append((k, fn, run))
        self.inputs = plan["inputs"]
        self.outputs = plan["outputs"]
        self.workspace_bytes = int(plan["workspace"]["bytes"])
        self._owned: list = []
        self._lock = threading.Lock()
        w = np.frombuffer(weights, np.uint8) if not isinstance(weights, np.ndarray) else \
            weights.view(np.uint8).reshape(-1)
        self.weights_ptr = self._alloc(max(w.nbytes, 1))
        if w.nbytes:
            device.htod(self.weights_ptr, w)
        self.workspace_ptr = self._alloc(max(self.workspace_bytes, 1))
        self.in_ptrs = [self._alloc(max(int(r["nbytes"]), 1)) for r in self.inputs]
        self.out_ptrs = [self._alloc(max(int(r["nbytes"]), 1)) for r in self.outputs]
        self._args = self._kernel_args(self.in_ptrs, self.out_ptrs, self.workspace_ptr)

    def _alloc(self, nbytes: int) -> int:
        p = self.device.alloc(nbytes)
        self._owned.append(p)
        return p

    def close(self) -> None:
        """Free the device memory (back to the device's pool)."""
        for p in self._owned:
            self.device.free(p)
        self._owned = []

    # -- addresses ---------------------------------------------------------------------------
    def _address(self, ref: dict, ins, outs, ws: int) -> int:
        r = ref["region"]
        off = int(ref.get("offset", 0))
        if r == "input":
            return int(ins[ref["index"]]) + off
        if r == "output":
            return int(outs[ref["index"]]) + off
        if r == "weights":
            return self.weights_ptr + off
        if r == "workspace":
            return int(ws) + off
        if r == "null":
            return 0
        raise CudaError(f"plan.json: unknown region {r!r}")

    def _kernel_args(self, ins, outs, ws) -> list:
        return [[0, int(k["n_tasks"])] + [self._address(a, ins, outs, ws) for a in k["args"]]
                for k, _fn, _run in self.kernels]

    # -- running -----------------------------------------------------------------------------
    def _launch_all(self, args: list, ws: int, stream=None) -> None:
        dev = self.device
        for it in self.plan.get("init", []):
            if it.get("op") != "store_u64":
                raise CudaError(f"plan.json: unknown init op {it.get('op')!r}")
            dev.htod(int(ws) + int(it["offset"]), np.array([int(it["value"])], "<u8"))
        for (k, fn, run), a in zip(self.kernels, args):
            if run:
                dev.launch(fn, int(k["grid"]), int(k["block"]), a, int(k.get("smem_dynamic", 0)),
                           stream, k)

    def _dtod(self, dst: int, src: int, nbytes: int, stream=None) -> None:
        f = getattr(self.device, "dtod", None)
        if f is not None:
            f(dst, src, nbytes, stream)
            return
        tmp = np.empty(nbytes, np.uint8)       # devices without dtod (the emulator)
        self.device.dtoh(tmp, src)
        self.device.htod(dst, tmp)

    def run_device(self, in_ptrs: list, out_ptrs: list, workspace: int | None = None,
                   stream=None) -> None:
        """Run on device buffers: ``in_ptrs``/``out_ptrs`` in plan order, ``workspace`` (a
        ``workspace_bytes`` device buffer; this program's own when None). Returns after
        queueing the work on the stream (``device.synchronize()`` waits)."""
        if len(in_ptrs) != len(self.inputs) or len(out_ptrs) != len(self.outputs):
            raise CudaError(f"expected {len(self.inputs)} input and {len(self.outputs)} output "
                            f"pointers, got {len(in_ptrs)} and {len(out_ptrs)}")
        ws = self.workspace_ptr if workspace is None else int(workspace)
        for c in self.plan.get("copies_in", []):
            self._dtod(self._address(c["dst"], in_ptrs, out_ptrs, ws),
                       int(in_ptrs[c["input"]]), int(c["nbytes"]), stream)
        self._launch_all(self._kernel_args(in_ptrs, out_ptrs, ws), ws, stream)
        for c in self.plan.get("copies_out", []):
            self._dtod(int(out_ptrs[c["output"]]),
                       self._address(c["src"], in_ptrs, out_ptrs, ws), int(c["nbytes"]), stream)

    def run(self, inputs: list, outs: list) -> list:
        """Host arrays in (plan order, already checked), host arrays ``outs`` filled."""
        dev = self.device
        with self._lock:
            ws = self.workspace_ptr
            for a, p in zip(inputs, self.in_ptrs):
                dev.htod(p, a)
            for c in self.plan.get("copies_in", []):   # inputs a kernel writes in place
                dev.htod(self._address(c["dst"], self.in_ptrs, self.out_ptrs, ws),
                         inputs[c["input"]])
            self._launch_all(self._args, ws)
            src = {c["output"]: c["src"] for c in self.plan.get("copies_out", [])}
            for j, o in enumerate(outs):
                p = self._address(src[j], self.in_ptrs, self.out_ptrs, ws) if j in src else \
                    self.out_ptrs[j]
                dev.dtoh(o, p)              # synchronizes the stream
        return outs
