"""A stand-in for ``cuda.bindings.driver`` backed by host memory and the PTX emulator, shared
by the tests of the real-device code paths (``runtime.cuda``, GPU artifacts, ``mx.gpu``
storage) on machines without a GPU. Importable from every test directory: ``tests/`` is on
``sys.path`` through ``tests/conftest.py``.

Launches decode ``kernelParams`` (a void** of 8-byte values, the count read from the PTX
``.entry``) as the driver does and run the kernel in the emulation module registered for
the loaded PTX text; every call is counted in ``calls``."""
from __future__ import annotations

import ctypes
import re

import numpy as np


class FakeCudaDriver:
    class CUdevice_attribute:
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76

    def __init__(self, emu_modules: dict | None = None, cc=(8, 0)) -> None:
        self.emu = dict(emu_modules or {})   # ptx text -> emulation GPUModule
        self.cc = cc                          # compute capability the device reports
        self.mem: dict = {}
        self.calls: dict = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1
        return (0,)

    @property
    def launches(self) -> int:
        return self.calls.get("launch", 0)

    @property
    def dtod(self) -> int:
        return self.calls.get("dtod", 0)

    def cuInit(self, flags):
        return (0,)

    def cuDeviceGetCount(self):
        return (0, 1)

    def cuDeviceGet(self, i):
        return (0, i)

    def cuDevicePrimaryCtxRetain(self, dev):
        return (0, "ctx")

    def cuCtxSetCurrent(self, ctx):
        return (0,)

    def cuDeviceGetName(self, n, dev):
        return (0, b"Fake GPU\0\0")

    def cuDeviceGetAttribute(self, attr, dev):
        return (0, self.cc[0] if attr == 75 else self.cc[1])

    def cuStreamCreate(self, flags):
        return (0, "stream")

    def cuStreamSynchronize(self, stream):
        return self._count("sync")

    def cuGetErrorName(self, err):
        return (0, b"CUDA_ERROR_FAKE")

    def cuMemGetInfo(self):
        return (0, 1 << 30, 2 << 30)

    def cuMemAlloc(self, n):
        a = np.full(n + 256, 0xFF, np.uint8)     # garbage, as device memory would hold
        p = a.ctypes.data + (-a.ctypes.data) % 256
        self.mem[p] = a
        return (0, p)

    def cuMemFree(self, p):
        self.mem.pop(int(p))
        return (0,)

    def cuMemcpyHtoD(self, dst, src, n):
        ctypes.memmove(int(dst), int(src), n)
        return self._count("htod")

    def cuMemcpyDtoH(self, dst, src, n):
        ctypes.memmove(int(dst), int(src), n)
        return self._count("dtoh")

    def cuMemcpyDtoDAsync(self, dst, src, n, stream):
        assert stream == "stream"
        ctypes.memmove(int(dst), int(src), n)
        return self._count("dtod")

    def cuMemsetD8(self, p, v, n):
        ctypes.memset(int(p), v, n)
        return self._count("memset")

    def cuModuleLoadData(self, image):
        from mxc.codegen.ptx_emu import EmuModule

        text = image.rstrip(b"\0").decode()
        return (0, (text, EmuModule(self.emu[text])))

    def cuModuleGetFunction(self, module, name):
        text, em = module
        name = name.decode()
        m = re.search(r"\.entry " + re.escape(name) + r"\((.*?)\)", text, re.DOTALL)
        if m is None:
            return (500, None)
        body = text[m.end(): text.find("\n}\n", m.end())]
        return (0, (em, name, m.group(1).count(".param"),
                    "bar.sync" in body or "shfl.sync" in body))

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        from mxc.codegen.ptx import Launch

        em, name, n, sync = f
        assert (gy, gz, by, bz, smem) == (1, 1, 1, 1, 0) and isinstance(params, int)
        assert stream == "stream"
        ptrs = (ctypes.c_void_p * n).from_address(params)
        vals = [ctypes.c_uint64.from_address(ptrs[i]).value for i in range(n)]
        em.launch(name, Launch(name, "", gx, bx, vals[1], sync=sync), vals[2:], vals[0],
                  vals[1])
        return self._count("launch")
