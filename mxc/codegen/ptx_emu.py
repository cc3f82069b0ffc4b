"""Run the GPU back end's kernels on the CPU, thread by thread: a check of the thread mapping,
the cooperative reductions and the GEMM tiles where no GPU is at hand.

The kernels are rendered from the same kernel IR by the same renderer as for PTX
(``codegen.ptx``), with emulation hooks instead of NVPTX intrinsics (:class:`ptx.Hooks`):
thread/block indices become arguments, shared memory an ordinary global, and barriers and
warp shuffles calls into Python (``mxc_emu_bar``/``mxc_emu_shfl``). The module is compiled for
the host (``codegen.jit``). A launch runs its blocks one after the other; kernels that
synchronize run one OS thread per GPU thread (ctypes calls release the GIL) so barriers and
shuffles behave as on the GPU, the others run their threads one by one. Kernels cover their
task range with grid-stride loops, so emulating a grid of 1-2 blocks (``max_blocks``) checks
the same code a full grid runs.

Not emulated: warp-synchronous timing, memory-model races (threads of a block run truly
concurrently here, so many races would show, but nothing guarantees it), PTX itself (what
ptxas checks).

:class:`EmuDevice` mimics the device interface of ``runtime.cuda`` (alloc/htod/dtoh/
load_module/launch), so ``runtime.cuda.GPUProgram`` can run a compiled graph on it.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ..base import MXNetError
from . import jit
from .ptx import EMU_BARRIER_BYTES, EMU_CTX_BYTES, WARP, GPUModule, Launch, render_gpu_module

EMU_FN = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                          ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p)
TIMEOUT = 60.0   # seconds a block may run before the launch is declared deadlocked

_libc = ctypes.CDLL(None)
_libc.pthread_barrier_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
_libc.pthread_barrier_destroy.argtypes = [ctypes.c_void_p]
_launch_lock = threading.Lock()


class _Sync:
    """A block's barriers (pthread, so emulated threads synchronise without the GIL) and
    shuffle exchange slots, laid out as ``ptx.EMU_SYNC_IR`` expects."""

    def __init__(self, nthreads: int) -> None:
        self.buf = np.zeros(EMU_CTX_BYTES + 64, np.uint8)
        self.ptr = self.buf.ctypes.data + (-self.buf.ctypes.data) % 64
        self.n = nthreads
        self.bars = [self.ptr]
        self.bars += [self.ptr + EMU_BARRIER_BYTES * (1 + w) for w in range(-(-nthreads // WARP))]
        for i, b in enumerate(self.bars):
            cnt = nthreads if i == 0 else min(WARP, nthreads - WARP * (i - 1))
            if _libc.pthread_barrier_init(b, None, cnt) != 0:
                raise MXNetError("emulator: pthread_barrier_init failed")

    def close(self) -> None:
        for b in self.bars:
            _libc.pthread_barrier_destroy(b)


class EmuModule:
    """An emulation module compiled for the host; ``launch`` runs one kernel."""

    def __init__(self, gm: GPUModule) -> None:
        if not gm.emulate:
            raise ValueError("EmuModule needs a module rendered with emulate=True")
        names = sorted(set(gm.names))
        self._cm = jit.compile_ir(gm.ir, names)
        self.fns = {n: EMU_FN(self._cm.addresses[n]) for n in names}
        self.module = gm

    def launch(self, name: str, launch: Launch, ptrs: list, task_begin: int = 0,
               task_end: int | None = None, max_blocks: int = 2) -> None:
        if launch.n_tasks <= 0 or launch.grid <= 0:
            return
        end = launch.n_tasks if task_end is None else task_end
        fn = self.fns[name]
        args = (ctypes.c_void_p * max(len(ptrs), 1))(*ptrs)
        grid = max(1, min(launch.grid, max_blocks))
        B = launch.block
        with _launch_lock:
            for blk in range(grid):
                if not launch.sync:
                    for tid in range(B):
                        fn(task_begin, end, args, tid, blk, grid, None)
                    continue
                sync = _Sync(B)
                old = threading.stack_size()
                threading.stack_size(1 << 21)
                try:
                    ts = [threading.Thread(target=fn, args=(task_begin, end, args, tid, blk,
                                                            grid, sync.ptr), daemon=True)
                          for tid in range(B)]
                finally:
                    threading.stack_size(old)
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(TIMEOUT)
                if any(t.is_alive() for t in ts):
                    # threads stuck in a barrier: leak them (and the sync block) and report
                    _leaked.append(sync)
                    raise MXNetError(f"emulated kernel {name} (block {blk}) did not finish in "
                                     f"{TIMEOUT:.0f} s: a barrier or shuffle not reached by "
                                     "every thread of the block/warp")
                sync.close()


_leaked: list = []


def emulate_kernels(kernels: list, arrays: list, *, fast_math: bool = False,
                    max_blocks: int = 2) -> None:
    """Run ``kernels`` in order on the CPU as the GPU would, each on its buffers' numpy arrays
    (``arrays[i]`` lists kernel i's arrays in ``Kernel.buffers`` order)."""
    gm = render_gpu_module(kernels, emulate=True, fast_math=fast_math)
    em = EmuModule(gm)
    for name, launch, arrs in zip(gm.names, gm.launches, arrays):
        em.launch(name, launch, [a.ctypes.data for a in arrs], max_blocks=max_blocks)


class EmuDevice:
    """A CPU stand-in for ``runtime.cuda.CudaDevice``: host memory, emulated modules.

    ``load_module(ptx)`` needs the emulation module of that PTX, registered beforehand with
    :meth:`register` (``compiler.cuda_build`` does this when built with ``emulate=True``)."""

    name = "mxc PTX emulator (CPU)"

    def __init__(self, max_blocks: int = 2) -> None:
        self.max_blocks = max_blocks
        self._mem: dict[int, np.ndarray] = {}
        self._emu: dict[str, GPUModule] = {}
        self._loaded: dict[str, EmuModule] = {}
        self.launches = 0

    def register(self, ptx: str, emu_module: GPUModule) -> None:
        self._emu[ptx] = emu_module

    # memory
    def alloc(self, nbytes: int) -> int:
        arr = np.empty(max(int(nbytes), 1) + 256, np.uint8)
        off = (-arr.ctypes.data) % 256
        arr.fill(0xFF)  # uninitialised device memory: NaN garbage
        ptr = arr.ctypes.data + off
        self._mem[ptr] = arr
        return ptr

    def free(self, ptr: int) -> None:
        self._mem.pop(ptr, None)

    def htod(self, ptr: int, src: np.ndarray, stream=None) -> None:
        src = np.ascontiguousarray(src)
        ctypes.memmove(ptr, src.ctypes.data, src.nbytes)

    def dtoh(self, dst: np.ndarray, ptr: int, stream=None) -> None:
        ctypes.memmove(dst.ctypes.data, ptr, dst.nbytes)

    def memset(self, ptr: int, value: int, nbytes: int, stream=None) -> None:
        ctypes.memset(ptr, value, nbytes)

    # code
    def load_module(self, ptx: str):
        em = self._loaded.get(ptx)
        if em is None:
            gm = self._emu.get(ptx)
            if gm is None:
                raise MXNetError("EmuDevice: no emulation module registered for this PTX")
            em = self._loaded[ptx] = EmuModule(gm)
        return em

    def get_function(self, module: EmuModule, name: str):
        return (module, name)

    def launch(self, fn, grid: int, block: int, args: list, smem: int = 0, stream=None,
               meta: dict | None = None) -> None:
        """``args``: task_begin, task_end, then the buffer pointers; ``meta``: the launch
        plan's entry (its ``sync`` flag says whether the kernel needs real threads)."""
        module, name = fn
        meta = meta or {}
        self.launches += 1
        launch = Launch(name, meta.get("mode", "thread"), int(grid), int(block), int(args[1]),
                        sync=bool(meta.get("sync", True)))
        module.launch(name, launch, list(args[2:]), int(args[0]), int(args[1]),
                      max_blocks=self.max_blocks)

    def synchronize(self, stream=None) -> None:
        pass
