"""Compile LLVM IR text to machine code with llvmlite, with an on-disk object cache.

``compile_ir(text, names)`` returns a :class:`CompiledModule` holding ctypes entry points.
The object file is cached under ``$MXC_CACHE_DIR`` (default ``~/.cache/mxc``) keyed by the IR
text, target triple, CPU, features and optimisation level, so a second run of the same model
compiles nothing: it only maps the cached object into memory.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm

from ..base import CompileError

KERNEL_FN = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_void_p)

_lock = threading.Lock()
_initialized = False
_host_tm = None

STATS = {"compiled": 0, "cache_hits": 0, "memory_hits": 0}


def _init() -> None:
    global _initialized
    if not _initialized:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _initialized = True


@dataclass(frozen=True)
class HostTarget:
    triple: str
    cpu: str
    features: str


def host_target() -> HostTarget:
    _init()
    cpu = os.environ.get("MXC_CPU") or llvm.get_host_cpu_name()
    feats = os.environ.get("MXC_CPU_FEATURES") or llvm.get_host_cpu_features().flatten()
    return HostTarget(llvm.get_process_triple(), cpu, feats)


def host_target_machine():
    global _host_tm
    if _host_tm is None:
        _host_tm = _new_target_machine()
    return _host_tm


def _new_target_machine():
    t = host_target()
    return llvm.Target.from_triple(t.triple).create_target_machine(
        cpu=t.cpu, features=t.features, opt=3, jit=True)


def cache_dir() -> Path:
    d = os.environ.get("MXC_CACHE_DIR")
    p = Path(d) if d else Path.home() / ".cache" / "mxc"
    return p


def optimize(mod, tm, level: int = 3) -> None:
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def parse(text: str, tm=None):
    _init()
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        if os.environ.get("MXC_DEBUG"):
            Path("/tmp/mxc_bad.ll").write_text(text)
        raise CompileError(f"generated LLVM IR is invalid: {e}") from None
    if tm is not None:
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
    return mod


def optimized_ir(text: str) -> str:
    """The module after O3 (``--dump-llvm``)."""
    tm = host_target_machine()
    mod = parse(text, tm)
    optimize(mod, tm)
    return str(mod)


class CompiledModule:
    """Objects mapped into this process; keeps their execution engine alive."""

    def __init__(self, engine, names: list[str], key: str) -> None:
        self._engine = engine
        self.key = key
        self.addresses = {n: engine.get_function_address(n) for n in names}
        for n, a in self.addresses.items():
            if not a:
                raise CompileError(f"compiled module lacks function {n}")
        self.functions = {n: KERNEL_FN(a) for n, a in self.addresses.items()}
        self.ir_text = ""


_memory_cache: dict[str, CompiledModule] = {}


def _key(text: str) -> str:
    t = host_target()
    h = hashlib.sha256()
    for part in (text, t.triple, t.cpu, t.features, "O3", llvm.__name__, "v3"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def object_for(text: str) -> bytes:
    """Machine code for one module's IR text: from the disk cache, or compiled (and
    stored). A corrupt or unreadable cache entry only costs a recompile."""
    key = _key(text)
    path = cache_dir() / key[:2] / f"{key}.o"
    try:
        data = path.read_bytes()
        obj, digest = data[:-32], data[-32:]
        if obj[:4] == b"\x7fELF" and hashlib.sha256(obj).digest() == digest:
            STATS["cache_hits"] += 1
            return obj
    except OSError:
        pass
    tm = host_target_machine()
    mod = parse(text, tm)
    optimize(mod, tm)
    obj = tm.emit_object(mod)
    STATS["compiled"] += 1
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(obj + hashlib.sha256(obj).digest())  # checked before every use
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs compile time
    return obj


def compile_modules(modules: list[tuple[str, str]]) -> CompiledModule:
    """Map the objects of several (function name, module text) pairs into one engine.

    Each module is cached separately, so kernels shared between graphs (same op, shapes
    and attributes) compile once per machine, not once per graph."""
    key = _key("\0".join(t for _, t in modules))
    with _lock:
        cm = _memory_cache.get(key)
        if cm is not None:
            STATS["memory_hits"] += 1
            return cm
        objs = [object_for(t) for _, t in modules]
        # MCJIT takes ownership of the target machine it is given: a fresh one per engine
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _new_target_machine())
        for obj in objs:
            engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        cm = CompiledModule(engine, [n for n, _ in modules], key)
        _memory_cache[key] = cm
        return cm


def compile_ir(text: str, names: list[str]) -> CompiledModule:
    """JIT-compile one module's IR text (cached in memory and on disk)."""
    key = _key(text + "\0" + "\0".join(names))
    with _lock:
        cm = _memory_cache.get(key)
        if cm is not None:
            STATS["memory_hits"] += 1
            return cm
        obj = object_for(text)
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _new_target_machine())
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        cm = CompiledModule(engine, names, key)
        _memory_cache[key] = cm
        return cm
