"""GPU contexts for the frontend: device selection, device memory as arrays, GPU dispatch.

``mx.gpu(i)`` runs on the PTX back end (``docs/gpu.md``):

* **device selection** (:func:`get_device`): a real CUDA device when ``runtime.cuda`` finds a
  driver and a device (``runtime.cuda.get_device(i)``: primary context, one stream, memory
  pool); otherwise, when ``MXC_GPU_EMULATOR=1``, ``EmulatedGPU`` (the CPU emulator of the
  PTX kernels, ``codegen.ptx_emu``: same device interface, one device ``gpu(0)``, slow);
  otherwise :class:`~mxc.base.MXNetError` ("no CUDA driver/device: ...; set
  MXC_GPU_EMULATOR=1 to emulate").
* **storage** (:class:`GpuBuffer`): a C-contiguous array in device memory (pointer, shape,
  numpy dtype), allocated from the device's pool and given back when the last array, view or
  pushed closure referring to it is gone (Python refcounting, as for CPU arrays). Views
  (reshape, contiguous basic indexing, an op output aliasing its input) share the allocation.
  Copies: host -> device ``htod``, device -> host ``dtoh`` (synchronizes the stream), device ->
  device ``cuMemcpyDtoDAsync`` on the device stream.
* **dispatch**: imperative ops on gpu arrays (:func:`invoke_gpu`) compile their one-op graph with
  ``compiler.cuda_build.compile_graph_cuda`` (cached per op/attrs/shapes/dtypes/mode and
  target, like the CPU path), bind a ``runtime.cuda.GPUProgram`` to the arrays' device
  pointers and push its launch to the dependency engine (reading the inputs' variables,
  writing the outputs'). A launch returns at once (one stream per device orders the kernels);
  reads from Python (``asnumpy``, ``wait_to_read``) wait for the engine, then synchronize the
  stream.

* **autograd**: while ``autograd.record()`` is on, :func:`invoke_gpu` records each call on the
  tape like the CPU path does (values are device buffers; hidden outputs such as Dropout's mask
  or BatchNorm's batch statistics get device buffers of their own, bound to the program's
  slots). ``mxc.frontend.autograd`` builds the backward graph of the tape as on the CPU and
  compiles it with :func:`compile_cuda`; :func:`run_backward` binds that program to the
  recorded values, head gradients and ``.grad`` arrays (device pointers) and pushes its launch.
  Nothing is copied to the host to differentiate.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import math
import os
import threading
import weakref

import numpy as np

from ..base import MXNetError

__all__ = ["EMULATOR_ENV", "GpuBuffer", "compile_cuda", "context_of", "copy_into",
           "device_ones", "emulator_enabled", "get_device", "invoke_gpu", "new_program",
           "num_gpus", "run_backward"]

#: the environment variable that turns the CPU emulator of the GPU back end on
EMULATOR_ENV = "MXC_GPU_EMULATOR"

_lock = threading.RLock()
_emulator = None
_used_devices: dict = {}      # id(device) -> device, every device an array was put on


def emulator_enabled() -> bool:
    """Whether ``MXC_GPU_EMULATOR`` asks for the emulator (read at every call)."""
    return os.environ.get(EMULATOR_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _cuda():
    from ..runtime import cuda
    return cuda


def num_gpus() -> int:
    """Real CUDA devices, else 1 under the emulator, else 0."""
    cuda = _cuda()
    if cuda.is_available():
        return cuda.device_count()
    return 1 if emulator_enabled() else 0


def _emulated_gpu_class():
    from ..codegen.ptx_emu import EmuDevice

    class EmulatedGPU(EmuDevice):
        """``gpu(0)`` under ``MXC_GPU_EMULATOR=1``: the PTX back end's CPU emulator with the
        attributes of a ``runtime.cuda`` device (``ordinal``, ``sm``, ``pool``)."""

        name = "mxc PTX emulator (CPU, MXC_GPU_EMULATOR=1)"
        ordinal = 0
        sm = "sm_80"
        compute_capability = (8, 0)
        pool = None
        emulated = True

        def dtod(self, dst: int, src: int, nbytes: int) -> None:
            ctypes.memmove(dst, src, nbytes)

        def __repr__(self) -> str:
            return "<EmulatedGPU gpu(0) (MXC_GPU_EMULATOR=1)>"

    return EmulatedGPU


def get_device(ctx):
    """The device object of gpu context ``ctx`` (see the module doc for the selection);
    raises MXNetError saying why there is none."""
    global _emulator
    cuda = _cuda()
    ok, why = cuda.cuda_status()
    i = int(ctx.device_id)
    if ok:
        n = cuda.device_count()
        if not 0 <= i < n:
            raise MXNetError(f"cannot use context {ctx}: gpu({i}) does not exist "
                             f"({n} CUDA device(s))")
        dev = cuda.get_device(i)
    elif emulator_enabled():
        if i != 0:
            raise MXNetError(f"cannot use context {ctx}: the GPU emulator "
                             f"({EMULATOR_ENV}=1) provides one device, gpu(0)")
        with _lock:
            if _emulator is None:
                _emulator = _emulated_gpu_class()()
            dev = _emulator
    else:
        raise MXNetError(f"cannot use context {ctx}: no GPU back end available here -- no "
                         f"CUDA driver/device: {why}; set {EMULATOR_ENV}=1 to emulate a GPU "
                         "on the CPU (slow)")
    _used_devices.setdefault(id(dev), dev)
    return dev


def is_emulated(dev) -> bool:
    return bool(getattr(dev, "emulated", False)) or hasattr(dev, "register")


def synchronize_all() -> None:
    """Wait for the streams of every device arrays were put on."""
    for dev in list(_used_devices.values()):
        dev.synchronize()


def release_cache(ctx) -> None:
    """``Context.empty_cache()``: give the pool's cached blocks back to the driver."""
    dev = get_device(ctx)
    pool = getattr(dev, "pool", None)
    if pool is not None:
        pool.release()


# ------------------------------------------------------------------------------------------
# device memory
# ------------------------------------------------------------------------------------------
def dtod(dev, dst: int, src: int, nbytes: int) -> None:
    """Device-to-device copy ordered on the device's stream."""
    if nbytes <= 0 or dst == src:
        return
    f = getattr(dev, "dtod", None)
    if f is not None:
        f(dst, src, nbytes)
        return
    cuda = _cuda()
    if isinstance(dev, cuda.CudaDevice):
        dev.activate()
        cuda._check(dev._drv.cuMemcpyDtoDAsync(dst, src, nbytes, dev.stream),
                    "cuMemcpyDtoDAsync")
        return
    if isinstance(dev, cuda.PycudaDevice):
        dev._cuda.memcpy_dtod_async(dst, src, nbytes, stream=dev.stream)
        return
    # any other device: through the host
    tmp = np.empty(nbytes, np.uint8)
    dev.dtoh(tmp, src)
    dev.htod(dst, tmp)


class _Alloc:
    """One pool allocation; freed when the last buffer referring to it is gone."""

    __slots__ = ("__weakref__", "device", "nbytes", "ptr")

    def __init__(self, device, nbytes: int) -> None:
        self.device = device
        self.nbytes = nbytes
        self.ptr = device.alloc(max(int(nbytes), 1))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown, driver gone
            self.device.free(self.ptr)


class _Ptr:
    __slots__ = ("data",)

    def __init__(self, data: int) -> None:
        self.data = data


def _c_strides(shape: tuple, itemsize: int) -> tuple:
    out = []
    s = itemsize
    for d in reversed(shape):
        out.append(s)
        s *= max(int(d), 1)
    return tuple(reversed(out))


class GpuBuffer:
    """A C-contiguous array in device memory: ``ptr`` (device address), ``shape``, ``dtype``
    (numpy; bfloat16 is stored as uint16 as on the CPU), ``device``; ``base`` keeps the
    allocation alive (None: memory owned by something else, e.g. a program's slot)."""

    __slots__ = ("base", "device", "dtype", "ptr", "shape")

    def __init__(self, device, ptr: int, shape: tuple, dtype, base=None) -> None:
        self.device = device
        self.ptr = int(ptr)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.base = base

    @classmethod
    def empty(cls, device, shape, dtype) -> GpuBuffer:
        dt = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        a = _Alloc(device, math.prod(shape) * dt.itemsize)
        return cls(device, a.ptr, shape, dt, a)

    # numpy-like attributes
    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: math.prod(self.shape))
    itemsize = property(lambda self: self.dtype.itemsize)
    nbytes = property(lambda self: math.prod(self.shape) * self.dtype.itemsize)
    ctypes = property(lambda self: _Ptr(self.ptr))

    def __repr__(self) -> str:
        return f"<GpuBuffer {self.shape} {self.dtype} at {self.ptr:#x} on {self.device!r}>"

    # views
    def _same(self, shape, dtype=None, offset: int = 0) -> GpuBuffer:
        return GpuBuffer(self.device, self.ptr + offset, shape,
                         self.dtype if dtype is None else dtype, self.base)

    def reshape(self, *shape) -> GpuBuffer:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = [int(d) for d in shape]
        if shape.count(-1) > 1:
            raise ValueError("can only specify one unknown dimension")
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            shape[shape.index(-1)] = self.size // known if known else 0
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape array of size {self.size} into shape "
                             f"{tuple(shape)}")
        return self._same(tuple(shape))

    def view(self, dtype) -> GpuBuffer:
        """The same bytes as another dtype (flat when the item sizes differ)."""
        dt = np.dtype(dtype)
        if dt.itemsize == self.dtype.itemsize:
            return self._same(self.shape, dt)
        if self.nbytes % dt.itemsize:
            raise ValueError(f"cannot view {self.nbytes} bytes as {dt}")
        return self._same((self.nbytes // dt.itemsize,), dt)

    def region(self, byte_offset: int, shape, dtype) -> GpuBuffer:
        """A view of ``shape``/``dtype`` starting ``byte_offset`` bytes in."""
        return GpuBuffer(self.device, self.ptr + int(byte_offset), shape, dtype, self.base)

    def probe(self) -> np.ndarray:
        """A numpy array with this shape/dtype/strides over no real memory: numpy's indexing
        of it yields the byte offsets and layout of views (its data is never read)."""
        base = np.zeros(1, self.dtype)
        return np.lib.stride_tricks.as_strided(base, self.shape,
                                               _c_strides(self.shape, self.dtype.itemsize),
                                               writeable=False)

    def index(self, key) -> tuple:
        """Basic indexing: ``(view or None, result shape)``; the view is None when the
        selected elements are not contiguous."""
        from .ndarray import _basic_index
        p = self.probe()
        v = _basic_index(p, key)
        shape = v.shape
        if v.flags.c_contiguous:
            off = v.__array_interface__["data"][0] - p.__array_interface__["data"][0] \
                if v.size else 0
            return self._same(shape, None, off), shape
        return None, shape

    # copies
    def to_host(self) -> np.ndarray:
        """A numpy copy (synchronizes the device's stream)."""
        out = np.empty(self.shape, self.dtype)
        if out.nbytes:
            self.device.dtoh(out, self.ptr)
        return out

    def upload(self, arr) -> None:
        """Copy host data (converted to this dtype, broadcast to this shape) in."""
        a = np.asarray(arr)
        if a.dtype != self.dtype:
            a = a.astype(self.dtype)
        if a.shape != self.shape:
            a = np.broadcast_to(a, self.shape)
        a = np.ascontiguousarray(a)
        if a.nbytes:
            self.device.htod(self.ptr, a)

    def fill(self, value) -> None:
        v = np.asarray(value, self.dtype)
        if not self.nbytes:
            return
        if not v.tobytes().strip(b"\0"):
            self.device.memset(self.ptr, 0, self.nbytes)
        else:
            self.device.htod(self.ptr, np.full(self.shape, v, self.dtype))

    def copy_from(self, src: GpuBuffer) -> None:
        """Same-size device copy (through the host between two devices)."""
        n = min(self.nbytes, src.nbytes)
        if src.device is self.device:
            dtod(self.device, self.ptr, src.ptr, n)
        else:
            self.upload(src.to_host().reshape(-1).view(np.uint8)[:n].view(self.dtype)
                        .reshape(self.shape))


def host_converted(src: np.ndarray, sdt, ddt) -> np.ndarray:
    """Host values of dtype ``sdt`` (mxc DType) as the storage of dtype ``ddt``."""
    from .ndarray import _bf16_bits, _bf16_float
    if sdt is ddt:
        return src
    if ddt.name == "bfloat16":
        return _bf16_bits(_bf16_float(src) if sdt.name == "bfloat16" else src)
    s = _bf16_float(src) if sdt.name == "bfloat16" else src
    return s.astype(ddt.np)


def is_gpu_buf(b) -> bool:
    return type(b) is GpuBuffer


def copy_into(dst, src) -> None:
    """``dst[...] = src`` for two NDArrays of the same shape, at least one on a gpu, any
    dtypes (converted): pushed work."""
    from .ndarray import _push_dev
    d, s = dst._buf, src._buf
    ddt, sdt = dst._dt, src._dt
    gctx = dst._ctx if is_gpu_buf(d) else src._ctx
    if is_gpu_buf(d) and is_gpu_buf(s) and ddt is sdt and d.device is s.device:
        def run() -> None:
            dtod(d.device, d.ptr, s.ptr, d.nbytes)
    else:
        def run() -> None:
            h = s.to_host() if is_gpu_buf(s) else s
            h = host_converted(h, sdt, ddt)
            if is_gpu_buf(d):
                d.upload(h)
            else:
                np.copyto(d, h, casting="unsafe")
    _push_dev(run, (src._var,), (dst._var,), "copyto", gctx)


# ------------------------------------------------------------------------------------------
# compiling and binding
# ------------------------------------------------------------------------------------------
def target_of(dev) -> tuple:
    """(sm, emulate) to compile for ``dev``: the emulator takes sm_80 PTX plus the CPU
    emulation; a real device the newest preset not above its compute capability."""
    from ..codegen.ptx import SM_PRESETS
    if is_emulated(dev):
        return "sm_80", True
    sm = dev.sm
    if sm in SM_PRESETS:
        return sm, False
    want = int(sm[3:])
    ok = [p for p in SM_PRESETS if int(p[3:]) <= want]
    if not ok:
        raise MXNetError(f"{dev!r}: compute capability {sm} is older than every PTX target "
                         f"mxc builds ({', '.join(SM_PRESETS)})")
    return max(ok, key=lambda p: int(p[3:])), False


def compile_cuda(graph, shapes: dict, types: dict, dev, *, is_train: bool = False,
                 grad_req: dict | None = None, what: str = "graph", section: str | None = None):
    """``compile_graph_cuda`` for ``dev``; a failure names the target and the graph part
    (``section``: how to call the program in the message; by default from ``grad_req``)."""
    from ..compiler.cuda_build import compile_graph_cuda
    sm, emulate = target_of(dev)
    try:
        return compile_graph_cuda(graph, shapes, types, sm, is_train=is_train,
                                  grad_req=grad_req, emulate=emulate)
    except MXNetError as e:
        sect = section or ("backward (training)" if grad_req else "forward")
        msg = f"the GPU back end cannot build the {sect} program of {what} for {sm}: {e}"
        try:
            err = type(e)(msg)
        except TypeError:
            err = MXNetError(msg)
        raise err from e


def _has_kernels(cg) -> bool:
    return any(ln.grid > 0 and ln.n_tasks > 0 for ln in cg.launches)


def template_program(cg, dev):
    """The unallocated :class:`~mxc.runtime.cuda.GPUProgram` of CudaGraph ``cg`` on ``dev``
    (module loaded once per device), or None when the graph has no kernel."""
    progs = cg.__dict__.setdefault("_mxc_progs", {})
    e = progs.get(id(dev))
    if e is None or e[0] is not dev:
        with _lock:
            e = progs.get(id(dev))
            if e is None or e[0] is not dev:
                from ..runtime.cuda import GPUProgram
                if not cg.launches:
                    p = False
                else:
                    if hasattr(dev, "register"):
                        dev.register(cg.ptx, cg.emu_module)
                    p = GPUProgram(cg.ptx, cg.launch_plan(), dev)
                e = progs[id(dev)] = (dev, p)
    return e[1] or None


def _free_all(dev, ptrs: list) -> None:
    for p in ptrs:
        with contextlib.suppress(Exception):
            dev.free(p)


def new_program(cg, dev, bound: dict | None = None, keep: bool = True):
    """A fresh instance of ``cg``'s program on ``dev`` with ``bound`` slots (slot -> device
    pointer) and its own storage for the others. ``keep``: the owned storage lives as long
    as the instance (else the caller calls ``release()``)."""
    tmpl = template_program(cg, dev)
    if tmpl is None:
        return None
    prog = copy.copy(tmpl)
    prog._owned = []
    prog.ptrs = []
    prog._args = []
    prog.allocate(bound or {})
    if keep and prog._owned:
        weakref.finalize(prog, _free_all, dev, list(prog._owned)).atexit = False
        prog._owned = []
    return prog


def no_reseed() -> None:
    pass


# ------------------------------------------------------------------------------------------
# imperative ops
# ------------------------------------------------------------------------------------------
def check_same_context(what: str, ctx, arrays, names=None, role: str = "input") -> None:
    """MXNet's check that every array of an op lives on the op's context."""
    for i, x in enumerate(arrays):
        if x._ctx != ctx:
            nm = f" '{names[i]}'" if names is not None and i < len(names) else ""
            raise MXNetError(
                f"{what}: {role} {i}{nm} is on {x._ctx}, but the operator runs on {ctx}: "
                f"all inputs and outputs of an operator must be on the same context (copy "
                f"with .as_in_context({ctx}) or .copyto({ctx}) first)")


class _GpuCompiled:
    """The GPU build of one op template for one input signature."""

    def __init__(self, tmpl, key, dev) -> None:
        from ..ir.dtypes import BY_NAME
        from .ndarray_ops import mutated_inputs
        shapes, dtypes, is_train = key
        graph, names, heads, node = tmpl.build_graph(len(shapes))
        cg = compile_cuda(graph, dict(zip(names, shapes)), dict(zip(names, dtypes)), dev,
                          is_train=is_train, what=f"operator {tmpl.op_name}")
        self.cg = cg
        self.has_kernels = _has_kernels(cg)
        self.has_rng = any(s["kind"] == "rng" for s in cg.launch_plan()["slots"])
        self.in_slots = [cg.var_slots[n] for n in names]
        self.out_slots = list(cg.head_slots)
        self.out_shapes, self.out_dt, self.out_alias = [], [], []
        for h, slot in zip(heads, self.out_slots):
            k = (h.node.uid, h.index)
            self.out_shapes.append(tuple(cg.shapes[k]))
            self.out_dt.append(BY_NAME[cg.types[k]])
            self.out_alias.append(self.in_slots.index(slot) if slot in self.in_slots else None)
        n = len(shapes)
        self.mut_inputs = [i for i in mutated_inputs(tmpl.opdef, tmpl.parsed, is_train,
                                                     tmpl.input_names) if i < n]
        # hidden outputs (Dropout's mask, BatchNorm's mean/invstd): a recorded call binds
        # their slots to buffers of its own, which the tape keeps for the backward
        self.hidden = []
        for i in range(len(heads), node.num_outputs):
            k = (node.uid, i)
            slot = cg.compiled.entry_slot.get(k)
            if slot is not None:
                self.hidden.append((slot, tuple(cg.shapes[k]), BY_NAME[cg.types[k]]))


def _compiled_gpu(tmpl, key, dev) -> _GpuCompiled:
    from .ndarray_ops import _lock as ops_lock
    ck = ("gpu", key, target_of(dev))
    c = tmpl.compiled.get(ck)
    if c is None:
        with ops_lock:
            c = tmpl.compiled.get(ck)
            if c is None:
                c = tmpl.compiled[ck] = _GpuCompiled(tmpl, key, dev)
    return c


def _overlap(a: GpuBuffer, b: GpuBuffer) -> bool:
    return a.ptr < b.ptr + b.nbytes and b.ptr < a.ptr + a.nbytes


def launch(prog, section: str, reads, writes, name: str, ctx, has_rng: bool,
           before=None, after=None, release: bool = False, keep=()) -> None:
    """Push ``prog.run(section)`` (with ``before()``/``after()``) on the engine for gpu
    context ``ctx``; random seeds are drawn now. ``release``: the program's own storage goes
    back to the pool once its launches are queued (stream-ordered reuse). ``keep``: objects
    (buffers) the work needs alive until it has run."""
    from ..runtime import engine
    if prog is not None and section == "forward":
        if has_rng:
            type(prog).reseed(prog)
        prog.reseed = no_reseed

    def fn(keep=keep) -> None:
        if before is not None:
            before()
        if prog is not None:
            prog.run(section)
        if after is not None:
            after()
        if release and prog is not None:
            prog.release()   # after the copies that read its storage were queued
    eng = engine.get()
    if eng.run_inline_if_idle(fn, reads, writes, name=name):
        return
    eng.push(fn, reads, writes, name=name, device=ctx)


def _recording(inputs: list) -> bool:
    """Whether autograd records this call: recording is on and an input is in a graph (the
    tape's own test; checked first here so that unrecorded calls allocate nothing extra)."""
    from . import ndarray_ops as ops
    st = ops._ag_state
    if st is None or not st.recording:
        return False
    return any(x._ag is not None and not x._ag[0].cleared for x in inputs)


def _hidden_buffers(c: _GpuCompiled, dev, bound: dict, bufs: list, mut: list) -> tuple:
    """(buffer, DType) of each hidden output of a recorded call, and the engine variable
    standing for them (appended to ``mut``). Each gets a device buffer of its own, bound to
    its slot, so that it outlives the program's storage (released after the launch); a slot
    already bound to an input/output is viewed in that buffer."""
    if not c.hidden:
        return [], None
    by_ptr = {b.ptr: b for b in bufs}
    out = []
    for slot, shape, d in c.hidden:
        p = bound.get(slot)
        if p is None:
            b = GpuBuffer.empty(dev, shape, d.np)
            bound[slot] = b.ptr
        else:
            b = by_ptr[p].region(0, shape, d.np)
        out.append((b, d))
    from .ndarray_ops import _Var
    v = _Var()
    mut.append(v)
    return out, v


def invoke_gpu(tmpl, inputs: list, out, ctx):
    """``ndarray_ops.invoke`` for a gpu context (see the module doc)."""
    from . import ndarray_ops as ops
    from .ndarray import _wrap
    if ctx is None:
        if inputs:
            ctx = inputs[0]._ctx
        elif out is not None:
            ctx = (out if not isinstance(out, (list, tuple)) else out[0])._ctx
    outs_given = None if out is None else ([out] if not isinstance(out, (list, tuple))
                                           else list(out))
    check_same_context(f"Operator {tmpl.op_name}", ctx, inputs, tmpl.input_names)
    if outs_given is not None:
        check_same_context(f"Operator {tmpl.op_name}", ctx, outs_given, role="output (out=)")
    if ctx.device_typeid != 2:   # cpu inputs with a gpu out=: reported above; defensive
        raise MXNetError(f"Operator {tmpl.op_name}: mixed cpu/gpu arrays")
    dev = get_device(ctx)
    st = ops._ag_state
    if outs_given is not None and st is not None and st.recording:
        ops._ag_check_out(tmpl, inputs, out)
    rec = _recording(inputs)
    for x in inputs:
        if x.stype != "default":
            raise MXNetError(f"Operator {tmpl.op_name}: sparse storage ({x.stype}) is not "
                             f"supported on {ctx}")
    datas = [x._buf for x in inputs]
    key = (tuple(d.shape for d in datas), tuple(x._dt.name for x in inputs),
           ops._train_mode() if tmpl.uses_train else False)
    c = _compiled_gpu(tmpl, key, dev)
    ivars = [x._var for x in inputs]
    mut = [ivars[j] for j in c.mut_inputs]
    bound = {slot: d.ptr for slot, d in zip(c.in_slots, datas)}
    res_bufs = []
    copies = []            # (dst buffer, slot, shape, dtype): copied from the slot after
    if outs_given is not None:
        if len(outs_given) != len(c.out_slots):
            raise MXNetError(f"{tmpl.op_name}: {len(c.out_slots)} outputs, but "
                             f"{len(outs_given)} arrays given as out")
        for i, slot in enumerate(c.out_slots):
            o = outs_given[i]
            if o.shape != c.out_shapes[i]:
                raise MXNetError(f"{tmpl.op_name}: out has shape {o.shape}, the result has "
                                 f"shape {c.out_shapes[i]}")
            if o._dt is not c.out_dt[i]:
                raise MXNetError(f"{tmpl.op_name}: out has dtype {o._dt.name}, the result "
                                 f"has dtype {c.out_dt[i].name}")
            ob = o._buf
            mut.append(o._var)
            conflict = c.out_alias[i] is not None or slot in bound or any(
                _overlap(ob, d) and not (ob.ptr == d.ptr and ob.nbytes == d.nbytes and
                                         (j, i) in tmpl.inplace)
                for j, d in enumerate(datas))
            if conflict:
                copies.append((ob, slot))
            else:
                bound[slot] = ob.ptr
            res_bufs.append(ob)
        ret = out
    else:
        ovars = []
        slot_var = {}
        slot_buf = {}
        for i, slot in enumerate(c.out_slots):
            shape, dt = c.out_shapes[i], c.out_dt[i]
            j = c.out_alias[i]
            if j is not None:
                d = datas[j]
                b = d.reshape(shape) if d.dtype == dt.np else d.view(dt.np).reshape(shape)
                v = ivars[j]
            elif slot in slot_buf:
                b = slot_buf[slot].view(dt.np).reshape(shape)
                v = slot_var[slot]
            else:
                b = slot_buf[slot] = GpuBuffer.empty(dev, shape, dt.np)
                bound[slot] = b.ptr
                v = slot_var[slot] = ops._Var()
            res_bufs.append(b)
            ovars.append(v)
            mut.append(v)
        res = [_wrap(b, c.out_dt[i], ctx, True, ovars[i]) for i, b in enumerate(res_bufs)]
        ret = res[0] if len(res) == 1 else res
    if rec:
        hidden, hvar = _hidden_buffers(c, dev, bound, datas + res_bufs, mut)
        res_bufs = res_bufs + [h for h, _ in hidden]   # kept alive until the launch ran
        ops._ag_record(tmpl, key[2], inputs, datas,
                       outs_given if outs_given is not None else res, hidden, hvar)
    if not c.has_kernels and not copies:
        return ret
    prog = new_program(c.cg, dev, bound, keep=False) if c.has_kernels else None
    after = None
    if copies:
        pairs = [(ob, prog.ptrs[slot] if prog is not None else bound[slot])
                 for ob, slot in copies]

        def after() -> None:
            for ob, src in pairs:
                dtod(dev, ob.ptr, src, ob.nbytes)
    launch(prog, "forward", ivars, mut, tmpl.op_name, ctx, c.has_rng, after=after,
           release=True, keep=(datas, res_bufs))
    return ret


# ------------------------------------------------------------------------------------------
# autograd's backward on the device
# ------------------------------------------------------------------------------------------
def context_of(dev):
    """The ``mx.gpu(i)`` context of device ``dev``."""
    from .context import Context
    return Context("gpu", int(getattr(dev, "ordinal", 0)))


_ones_cache: dict = {}


def device_ones(dev, shape: tuple, dt) -> GpuBuffer:
    """A device buffer of ones of mxc DType ``dt`` (shared: the default head gradient and an
    inactive Dropout's mask, which no program writes)."""
    key = (id(dev), tuple(shape), dt.name)
    e = _ones_cache.get(key)
    if e is not None and e[0] is dev:
        return e[1]
    b = GpuBuffer.empty(dev, shape, dt.np)
    b.fill(np.uint16(0x3F80) if dt.name == "bfloat16" else np.ones((), dt.np))
    with _lock:
        if len(_ones_cache) > 256:
            _ones_cache.clear()
        _ones_cache[key] = (dev, b)
    return b


def run_backward(cg, dev, ctx, inputs: dict, results: list, zero: list, reads: list,
                 writes: list, has_rng: bool = False) -> None:
    """Push one run of autograd's compiled backward graph ``cg`` (a CudaGraph, or None when
    no gradient is computed) on ``dev``: ``inputs`` maps slots to the device buffers they read
    (recorded values, head gradients, old gradients), ``results`` are ``(buffer, slot,
    direct)`` -- direct: the slot is bound to the buffer, else copied into it after the run --
    and ``zero`` buffers are set to 0 ('write' gradients no path reaches). ``reads``/``writes``
    are the engine variables of all those; ``has_rng``: the graph has random kernels."""
    bound = {slot: b.ptr for slot, b in inputs.items()}
    copies = []
    for buf, slot, direct in results:
        if direct:
            bound[slot] = buf.ptr
        else:
            copies.append((buf, slot))
    prog = new_program(cg, dev, bound, keep=False) if cg is not None else None
    pairs = [(buf, prog.ptrs[slot] if prog is not None else bound[slot])
             for buf, slot in copies]

    def after() -> None:
        for b in zero:
            b.fill(0)
        for buf, src in pairs:
            dtod(dev, buf.ptr, src, buf.nbytes)
    # the buffers are bound by address: keep them (and so their allocations) until it ran
    keep = (list(inputs.values()), [r[0] for r in results], list(zero))
    launch(prog, "forward", reads, writes, "autograd.backward", ctx, has_rng,
           after=after if (zero or pairs) else None, release=True, keep=keep)
