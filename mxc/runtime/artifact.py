"""Load and run an artifact directory written by ``mxc compile`` / ``mx.compile``.

``load(path)`` checks the directory (metadata format version, file checksums, ELF machine
against this process, the library's embedded metadata against ``metadata.json``), opens
``libmodel.so`` with ctypes and returns an :class:`ArtifactModel`: call it with numpy arrays
(positionally in metadata order, or by name) and get the outputs as a list of arrays.

The runtime's thread pool is installed as the artifact's parallel-for callback, so kernels
run on every core; ``threads=False`` leaves the artifact single-threaded. This module needs
only numpy and the runtime (no compiler, no LLVM): a deployed model runs with ``mxc.runtime``
alone.

GPU artifacts (``"backend": "cuda"`` in ``metadata.json``: ``model.ptx``, ``plan.json``,
``weights.bin``) load as a :class:`CudaArtifactModel`, which runs the launch plan through
``runtime.cuda`` (``ArtifactProgram``) on ``device=`` (default ``$MXC_CUDA_DEVICE``, else GPU
0), or on the CPU PTX emulator with ``device="emulator"`` (needs ``import
mxc.codegen.ptx_emu`` first: the runtime never imports the code generator) or
``device=EmuDevice()``.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import struct
import threading
from pathlib import Path

import numpy as np

from ..base import MXNetError
from .elf import ARCH_MACHINE, ElfError, read_elf

SUPPORTED_FORMAT_VERSION = 1
SUPPORTED_CUDA_PLAN_VERSION = 1
CUDA_FILES = ("model.ptx", "plan.json", "weights.bin")

ERRORS = {
    1: "inputs, or one of inputs[i], is NULL",
    2: "outputs, or one of outputs[i], is NULL",
    3: "workspace is NULL",
    4: "workspace is not 64-byte aligned",
    5: "an input or output is not aligned to its element size",
    6: "the parallel-for callback failed",
}

KERNEL_FN = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_void_p)
PARALLEL_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64)


class ArtifactError(MXNetError):
    pass


_kernels: dict = {}          # kernel address -> ctypes function
_callback = None             # one parallel-for callback for every artifact (never freed:
_callback_lock = threading.Lock()   # a library may hold it as long as the process lives)


def _parallel_for(_ctx, kernel, n_tasks, args, scratch_bytes, cost) -> int:
    from .threadpool import get_pool

    try:
        fn = _kernels.get(kernel)
        if fn is None:
            fn = _kernels[kernel] = KERNEL_FN(kernel)
        get_pool().run(fn, int(n_tasks), args, int(scratch_bytes), int(cost))
        return 0
    except BaseException:  # noqa: BLE001 - an exception must not unwind through C frames
        return 1


def _parallel_callback():
    global _callback
    with _callback_lock:
        if _callback is None:
            _callback = PARALLEL_FN(_parallel_for)
        return _callback


def _host_arch() -> str:
    m = platform.machine().lower()
    if m in ("x86_64", "amd64"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    if m.startswith("arm"):
        return "arm"
    return m


def _aligned(nbytes: int, align: int = 64) -> np.ndarray:
    buf = np.empty(nbytes + align, np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off: off + nbytes]


class ArtifactModel:
    """A loaded artifact. ``model(x)`` / ``model(data=x)`` -> list of output arrays."""

    def __init__(self, path: Path, meta: dict, lib, threads: bool = True) -> None:
        self.path = path
        self.metadata = meta
        self._lib = lib
        p = meta["prefix"]
        self._run = getattr(lib, f"{p}_run")
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._run.restype = ctypes.c_int
        ws = getattr(lib, f"{p}_workspace_size")
        ws.restype = ctypes.c_size_t
        ws.argtypes = []
        self.workspace_bytes = int(ws())
        self._set_par = getattr(lib, f"{p}_set_parallel")
        self._set_par.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._set_par.restype = None
        self.inputs = [(r["name"], tuple(r["shape"]), np.dtype(r["dtype"]))
                       for r in meta["inputs"]]
        self.outputs = [(r["name"], tuple(r["shape"]), np.dtype(r["dtype"]))
                        for r in meta["outputs"]]
        self.input_names = [n for n, _s, _d in self.inputs]
        self.output_names = [n for n, _s, _d in self.outputs]
        self._local = threading.local()
        if threads:
            self.set_threads(True)

    # -- threading ---------------------------------------------------------------------------
    def set_threads(self, on: bool) -> None:
        """Install (True) or remove (False) mxc's thread pool as the parallel-for callback.
        The setting belongs to the library, so it is shared by every model loaded from the
        same libmodel.so in this process."""
        if on:
            self._set_par(ctypes.cast(_parallel_callback(), ctypes.c_void_p), None)
        else:
            self._set_par(None, None)

    # -- running -----------------------------------------------------------------------------
    def _workspace(self) -> np.ndarray:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = _aligned(max(self.workspace_bytes, 1))
        return ws

    def _inputs(self, args, kwargs) -> list:
        return _check_inputs(self, args, kwargs)

    def _outputs(self, out) -> list:
        return _check_outputs(self, out)

    def __call__(self, *args, out: list | None = None, workspace: np.ndarray | None = None,
                 **kwargs) -> list:
        ins = self._inputs(args, kwargs)
        out = self._outputs(out)
        ws = self._workspace() if workspace is None else workspace
        in_ptrs = (ctypes.c_void_p * max(len(ins), 1))(*[a.ctypes.data for a in ins])
        out_ptrs = (ctypes.c_void_p * max(len(out), 1))(*[o.ctypes.data for o in out])
        rc = self._run(in_ptrs, out_ptrs, ws.ctypes.data if ws is not None else None)
        if rc != 0:
            raise ArtifactError(f"{self.metadata['prefix']}_run failed with code {rc}: "
                                f"{ERRORS.get(rc, 'unknown error')}")
        return out

    def run_raw(self, in_ptrs, out_ptrs, ws_ptr) -> int:
        """Call ``<prefix>_run`` with raw pointers (tests of the C ABI's error codes)."""
        return self._run(in_ptrs, out_ptrs, ws_ptr)

    def __repr__(self) -> str:
        t = self.metadata["target"]["name"]
        return (f"ArtifactModel({str(self.path)!r}, target={t!r}, inputs={self.input_names}, "
                f"outputs={self.output_names}, workspace={self.workspace_bytes} bytes)")


def _check_inputs(self, args, kwargs) -> list:
    """The inputs of a call as C-contiguous arrays in metadata order, or a clear error
    (``self``: a loaded model with ``inputs``/``input_names``)."""
    if args and kwargs:
        raise ArtifactError("pass the inputs either positionally or by name, not both")
    if kwargs:
        unknown = set(kwargs) - set(self.input_names)
        if unknown:
            raise ArtifactError(f"unknown input(s) {sorted(unknown)}; inputs of this "
                                f"artifact: {self.input_names}")
        missing = [n for n in self.input_names if n not in kwargs]
        if missing:
            raise ArtifactError(f"missing input(s) {missing}")
        args = [kwargs[n] for n in self.input_names]
    if len(args) != len(self.inputs):
        raise ArtifactError(f"expected {len(self.inputs)} input(s) "
                            f"{self.input_names}, got {len(args)}")
    out = []
    for x, (name, shape, dt) in zip(args, self.inputs):
        a = x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)
        if a.shape != shape:
            raise ArtifactError(f"input '{name}': expected shape {shape}, got {a.shape}")
        if a.dtype != dt:
            raise ArtifactError(f"input '{name}': expected dtype {dt.name}, got "
                                f"{a.dtype.name} (convert with .astype('{dt.name}'))")
        a = np.ascontiguousarray(a)
        if a.ctypes.data % max(dt.itemsize, 1):
            a = a.copy()
        out.append(a)
    return out


def _check_outputs(self, out) -> list:
    """Caller-given output arrays checked, or new ones."""
    if out is None:
        return [np.empty(s, d) for _n, s, d in self.outputs]
    if len(out) != len(self.outputs):
        raise ArtifactError(f"expected {len(self.outputs)} output buffer(s) "
                            f"{self.output_names}, got {len(out)}")
    for o, (n, s, d) in zip(out, self.outputs):
        if o.shape != s or o.dtype != d or not o.flags.c_contiguous:
            raise ArtifactError(f"output buffer for '{n}' must be a C-contiguous "
                                f"{d.name} array of shape {s}")
    return out


class CudaArtifactModel:
    """A loaded GPU artifact (``cuda-sm*`` target). ``model(x)`` / ``model(data=x)`` -> list of
    output arrays (host), run on ``self.device`` through ``runtime.cuda.ArtifactProgram``.
    ``run_device(in_ptrs, out_ptrs)`` runs on device buffers the caller owns."""

    def __init__(self, path: Path, meta: dict, plan: dict, program) -> None:
        self.path = path
        self.metadata = meta
        self.plan = plan
        self.program = program
        self.device = program.device
        self.workspace_bytes = int(meta["workspace_bytes"])
        self.inputs = [(r["name"], tuple(r["shape"]), np.dtype(r["dtype"]))
                       for r in meta["inputs"]]
        self.outputs = [(r["name"], tuple(r["shape"]), np.dtype(r["dtype"]))
                        for r in meta["outputs"]]
        self.input_names = [n for n, _s, _d in self.inputs]
        self.output_names = [n for n, _s, _d in self.outputs]

    def set_threads(self, on: bool) -> None:
        """No effect (the GPU runs the kernels); kept for the CPU model's interface."""

    def __call__(self, *args, out: list | None = None, **kwargs) -> list:
        ins = _check_inputs(self, args, kwargs)
        outs = _check_outputs(self, out)
        return self.program.run(ins, outs)

    def run_device(self, in_ptrs: list, out_ptrs: list, workspace: int | None = None,
                   stream=None) -> None:
        """Launch on device pointers (plan order; ``workspace``: ``workspace_bytes``, this
        model's own when None); returns once queued."""
        self.program.run_device(in_ptrs, out_ptrs, workspace, stream)

    def close(self) -> None:
        """Return the device memory (weights, workspace, input/output buffers) to the pool."""
        self.program.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):   # interpreter shutdown, device already gone
            self.program.close()

    def __repr__(self) -> str:
        t = self.metadata["target"]["name"]
        dev = getattr(self.device, "name", type(self.device).__name__)
        return (f"CudaArtifactModel({str(self.path)!r}, target={t!r}, device={dev!r}, "
                f"inputs={self.input_names}, outputs={self.output_names}, "
                f"workspace={self.workspace_bytes} bytes)")


def read_metadata(path: str | os.PathLike) -> dict:
    p = Path(path)
    mp = p / "metadata.json"
    try:
        meta = json.loads(mp.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{p} is not an mxc artifact directory (no metadata.json)") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot read {mp}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != "mxc-artifact":
        raise ArtifactError(f"{mp} is not mxc artifact metadata")
    _check_version(meta.get("format_version"), SUPPORTED_FORMAT_VERSION,
                   f"{p}: artifact format version", meta)
    return meta


def _check_version(v, supported: int, what: str, meta: dict) -> None:
    """A clear error when a file's format version is not one this runtime reads."""
    if not isinstance(v, int) or v > supported:
        raise ArtifactError(f"{what} {v} is newer than this runtime supports ({supported}); "
                            f"upgrade mxc (the artifact was written by mxc "
                            f"{meta.get('mxc_version')})")


def load(path: str | os.PathLike, *, threads: bool = True, verify: bool = True,
         device=None):
    """Open the artifact directory ``path`` (see the module docstring): an
    :class:`ArtifactModel` for CPU artifacts, a :class:`CudaArtifactModel` for GPU ones
    (``device``: see ``runtime.cuda.resolve_device``; CPU artifacts take none)."""
    p = Path(getattr(path, "path", path))     # a directory, or compiler.aot's Artifact
    if p.is_file() and p.name in ("libmodel.so", "model.ptx", "plan.json", "metadata.json"):
        p = p.parent
    meta = read_metadata(p)
    backend = meta.get("backend", "cpu")
    if backend == "cuda":
        return _load_cuda(p, meta, verify, device)
    if backend != "cpu":
        raise ArtifactError(f"{p}: artifact backend {backend!r} is not supported by this "
                            "runtime; upgrade mxc")
    if device not in (None, "cpu"):
        raise ArtifactError(f"{p} is a CPU artifact (target {meta['target'].get('name')}); "
                            "device= applies to GPU (cuda-sm*) artifacts")
    so = p / "libmodel.so"
    if not so.exists():
        raise ArtifactError(f"{p}: libmodel.so is missing")
    data = so.read_bytes()
    if verify:
        want = meta.get("files", {}).get("libmodel.so", {}).get("sha256")
        if want and hashlib.sha256(data).hexdigest() != want:
            raise ArtifactError(f"{so} is corrupted: its checksum does not match "
                                "metadata.json (rebuild the artifact)")
    try:
        elf = read_elf(data)
    except ElfError as e:
        raise ArtifactError(f"{so} is corrupted or not a shared library: {e}") from None
    host = _host_arch()
    want_m = ARCH_MACHINE.get(host)
    if want_m is not None and elf.machine != want_m:
        raise ArtifactError(f"{so} is built for {meta['target']['name']} ({elf.arch}) and "
                            f"cannot run on this {host} machine; copy it to a matching device "
                            "(or run it under qemu with the C example)")
    if elf.elf_class != 8 * struct.calcsize("P"):
        raise ArtifactError(f"{so} is a {elf.elf_class}-bit library; this process is "
                            f"{8 * struct.calcsize('P')}-bit")
    try:
        lib = ctypes.CDLL(str(so.resolve()), mode=os.RTLD_LOCAL | getattr(os, "RTLD_NOW", 2))
    except OSError as e:
        raise ArtifactError(f"cannot load {so}: {e}") from None
    prefix = meta.get("prefix", "mxc_model")
    try:
        info = getattr(lib, f"{prefix}_info")
    except AttributeError:
        raise ArtifactError(f"{so} does not export {prefix}_info: not the library of this "
                            "metadata.json") from None
    info.restype = ctypes.c_char_p
    info.argtypes = []
    try:
        embedded = json.loads(info().decode())
    except ValueError:
        raise ArtifactError(f"{so}: embedded metadata is unreadable (corrupted?)") from None
    mine = {k: v for k, v in meta.items() if k != "files"}
    if embedded != mine:
        raise ArtifactError(f"{so} does not match {p / 'metadata.json'} (files from two "
                            "different builds?)")
    return ArtifactModel(p, meta, lib, threads)


def _read_checked(p: Path, meta: dict, name: str, verify: bool) -> bytes:
    f = p / name
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{p}: {name} is missing (copy the whole artifact directory, or "
                            "rebuild it with mxc compile)") from None
    except OSError as e:
        raise ArtifactError(f"cannot read {f}: {e}") from None
    want = meta.get("files", {}).get(name, {})
    if verify and want:
        if want.get("bytes") is not None and len(data) != want["bytes"]:
            raise ArtifactError(f"{f} is corrupted or truncated: {len(data)} bytes, "
                                f"metadata.json says {want['bytes']} (rebuild the artifact)")
        if want.get("sha256") and hashlib.sha256(data).hexdigest() != want["sha256"]:
            raise ArtifactError(f"{f} is corrupted: its checksum does not match "
                                "metadata.json (rebuild the artifact)")
    return data


def _load_cuda(p: Path, meta: dict, verify: bool, device) -> CudaArtifactModel:
    """A GPU artifact: files checked (present, checksums, plan version, plan against
    metadata), the device resolved, the program built (PTX loaded, weights uploaded)."""
    from . import cuda

    raw = {n: _read_checked(p, meta, n, verify) for n in CUDA_FILES}
    try:
        plan = json.loads(raw["plan.json"].decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{p / 'plan.json'} is corrupted: cannot parse it ({e})") from None
    if not isinstance(plan, dict) or plan.get("format") != "mxc-cuda-plan":
        raise ArtifactError(f"{p / 'plan.json'} is not an mxc CUDA launch plan")
    _check_version(plan.get("version"), SUPPORTED_CUDA_PLAN_VERSION,
                   f"{p / 'plan.json'}: launch plan version", meta)
    for key in ("inputs", "outputs", "kernels", "workspace", "weights"):
        if key not in plan:
            raise ArtifactError(f"{p / 'plan.json'} is corrupted: no '{key}'")
    bad = [k for k in ("inputs", "outputs") if plan[k] != meta.get(k)]
    if plan.get("sm") != meta.get("target", {}).get("sm"):
        bad.append("sm")
    if int(plan["workspace"].get("bytes", -1)) != meta.get("workspace_bytes"):
        bad.append("workspace_bytes")
    if int(plan["weights"].get("bytes", -1)) != len(raw["weights.bin"]):
        bad.append("weights.bin size")
    if bad:
        raise ArtifactError(f"{p / 'plan.json'} does not match {p / 'metadata.json'} ({bad}; "
                            "files from two different builds?)")
    try:
        ptx = raw["model.ptx"].decode()
    except UnicodeDecodeError:
        raise ArtifactError(f"{p / 'model.ptx'} is corrupted (not text)") from None
    if ".entry" not in ptx and plan["kernels"]:
        raise ArtifactError(f"{p / 'model.ptx'} is corrupted: no kernel entry in it")
    try:
        dev = cuda.resolve_device(device)
    except cuda.CudaUnavailable as e:
        raise cuda.CudaUnavailable(
            f"cannot run the CUDA artifact {p}: {str(e).rstrip('.')}. Run it on a machine with an NVIDIA GPU "
            f"({meta['target'].get('sm')} or newer), its driver and `pip install "
            "cuda-bindings`; or, slowly, on the CPU PTX emulator: `import mxc.codegen.ptx_emu` "
            "and mxc.runtime.load(path, device='emulator') (or MXC_CUDA_DEVICE=emulator), or "
            f"`mxc run {p} --device emulator`") from None
    emu = None
    if cuda.is_emulator(dev):
        emu = _read_checked(p, meta, "model.emu.ll", verify).decode() \
            if "model.emu.ll" in meta.get("files", {}) or (p / "model.emu.ll").exists() \
            else None
    try:
        prog = cuda.ArtifactProgram(ptx, plan, raw["weights.bin"], dev, emulation_ir=emu)
    except (KeyError, TypeError, IndexError) as e:
        raise ArtifactError(f"{p / 'plan.json'} is corrupted: {type(e).__name__}: {e}") \
            from None
    return CudaArtifactModel(p, meta, plan, prog)


__all__ = [
    "SUPPORTED_CUDA_PLAN_VERSION",
    "SUPPORTED_FORMAT_VERSION",
    "ArtifactError",
    "ArtifactModel",
    "CudaArtifactModel",
    "load",
    "read_metadata",
]
