"""Compile LLVM IR text to machine code with llvmlite, with an on-disk object cache.

``compile_ir(text, names)`` returns a :class:`CompiledModule` holding ctypes entry points.
The object file is cached under ``$MXC_CACHE_DIR`` (default ``~/.cache/mxc``) keyed by the IR
text, target triple, CPU, features and optimisation level, so a second run of the same model
compiles nothing: it only maps the cached object into memory.

Each module is parsed and optimised in an LLVM context of its own, disposed once its object
is emitted: types, constants and metadata interned while compiling do not accumulate in
LLVM's global context for the life of the process. ``write_entry``/``read_entry`` are the
atomic, checksummed file format the object cache uses, shared with the whole-program cache of
``compiler.build``.

llvmlite is imported on first use: a process that only runs cached programs never loads LLVM.
``link_image`` turns the objects of a program into one position-independent image (sections
laid out, PC-relative relocations resolved, absolute ones listed) and ``map_image`` maps such an
image into executable memory, the way a cached program is loaded without LLVM (x86-64 ELF;
other hosts map the objects with MCJIT).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ..base import CompileError
from . import llvm_worker


class _LazyLLVM:
    """``llvmlite.binding``, imported on first attribute access (then bound directly)."""

    def __getattr__(self, name: str):
        from llvmlite import binding

        globals()["llvm"] = binding
        return getattr(binding, name)


llvm = _LazyLLVM()

KERNEL_FN = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_void_p)

_lock = threading.Lock()
_initialized = False
_host_tm = None

STATS = {"compiled": 0, "cache_hits": 0, "memory_hits": 0, "program_hits": 0}


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


_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags",
               "features", "cpu implementer", "cpu architecture", "cpu variant", "cpu part",
               "cpu revision", "isa", "uarch", "cpu model")
_host_id: str | None = None


def host_identity() -> str:
    """The host as far as generated code depends on it, without loading LLVM: OS, machine,
    llvmlite's version and the CPU description of /proc/cpuinfo (else LLVM's host target)."""
    global _host_id
    if _host_id is None:
        import platform

        import llvmlite  # the package only; its LLVM library loads with llvmlite.binding

        parts = [sys.platform, platform.machine(), getattr(llvmlite, "__version__", "")]
        cpu = []
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        if cpu:
                            break
                        continue
                    k, _, v = line.partition(":")
                    if k.strip().lower() in _CPU_FIELDS:
                        cpu.append(f"{k.strip().lower()}={v.strip()}")
        except OSError:
            cpu = []
        if not any(c.startswith(("flags=", "features=", "isa=")) for c in cpu):
            t = host_target()
            cpu = [t.triple, t.cpu, t.features]
        parts += cpu
        _host_id = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return _host_id


def host_target_machine():
    global _host_tm
    if _host_tm is None:
        _host_tm = _new_target_machine()
    return _host_tm


def _new_target_machine():
    t = host_target()
    return llvm_worker.target_machine(t.triple, t.cpu, t.features)


def cache_dir() -> Path:
    d = os.environ.get("MXC_CACHE_DIR")
    p = Path(d) if d else Path.home() / ".cache" / "mxc"
    return p


def optimize(mod, tm, level: int = 3) -> None:
    llvm_worker.optimize(mod, tm, level)


def parse(text: str, tm=None, context=None):
    """Parse and verify ``text`` (in ``context``, default LLVM's global context)."""
    _init()
    try:
        mod = llvm.parse_assembly(text, context)
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
    for part in (text, t.triple, t.cpu, t.features, "O3", "llvmlite.binding", "v3"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _object_path(key: str) -> Path:
    return cache_dir() / key[:2] / f"{key}.o"


def object_for(text: str) -> bytes:
    """Machine code for one module's IR text: from the disk cache, or compiled (and
    stored). A corrupt or unreadable cache entry only costs a recompile."""
    path = _object_path(_key(text))
    obj = read_entry(path)
    if obj is not None and obj[:4] == b"\x7fELF":
        STATS["cache_hits"] += 1
        return obj
    obj = _compile_object(text)
    STATS["compiled"] += 1
    write_entry(path, obj)
    return obj


def _compile_object(text: str) -> bytes:
    """Parse, optimise and emit one module in a private LLVM context (disposed after): the
    pipeline of ``llvm_worker.compile_text``, so a worker's objects are these bytes."""
    _init()
    try:
        return llvm_worker.compile_text(text, host_target_machine())
    except RuntimeError as e:   # parse/verify: invalid IR is the code generator's fault
        if os.environ.get("MXC_DEBUG"):
            Path("/tmp/mxc_bad.ll").write_text(text)
        raise CompileError(f"generated LLVM IR is invalid: {e}") from None


def write_entry(path: Path, data: bytes) -> bool:
    """Store ``data`` + its sha256 at ``path`` atomically (a temporary file renamed over
    it). False when the cache is not writable: that only costs compile time."""
    tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.write(hashlib.sha256(data).digest())  # checked before every use
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False


def read_entry(path: Path) -> bytes | None:
    """The data ``write_entry`` stored at ``path``, or None when it is missing, unreadable,
    truncated or damaged (checksum mismatch)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < 32:
        return None
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        return None
    return body


_libc = None


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``): compiling
    leaves LLVM's freed working memory, and freed numpy temporaries below the (dynamic)
    mmap threshold, in the heap, where it still counts as resident memory. No-op elsewhere."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None)       # the process's own symbols: the C library's
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):   # not glibc
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_MADV_DONTNEED, _MADV_PAGEOUT = 4, 21


def release_compiler_memory() -> None:
    """After a process is done compiling (a model built, inference next): return the heap
    LLVM used (``trim_heap``) and drop the pages of the LLVM library that loading and running
    it faulted in (its code and read-only data: 70-80 MiB of resident memory a process that
    only runs kernels does not need). Only read-only mappings of ``libllvmlite`` whose pages
    are all clean copies of the file (no private, written page: ``/proc/self/smaps``) are
    dropped (``MADV_DONTNEED``): touching them again (a later compile) reads the same bytes back
    from the page cache. Any other read-only mapping of it is only advised out
    (``MADV_PAGEOUT``, which never discards data). Linux only; no-op when LLVM was never
    loaded."""
    trim_heap()
    if "llvmlite.binding" not in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        libc = _mm_libc()
        with open("/proc/self/smaps") as f:
            text = f.read()
    except (OSError, AttributeError):
        return
    for lo, hi, clean in _library_mappings(text, "libllvmlite"):
        libc.madvise(lo, hi - lo, _MADV_DONTNEED if clean else _MADV_PAGEOUT)


def _library_mappings(smaps: str, prefix: str) -> list:
    """(start, end, clean) of the read-only mappings of files named ``prefix*``; clean: no
    anonymous (copy-on-write) or dirty pages in it."""
    out: list = []
    cur = None
    for line in smaps.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            if cur is not None:
                out.append(tuple(cur))
            cur = None
            if len(head) == 6 and "w" not in head[1] and \
                    os.path.basename(head[5].strip()).startswith(prefix):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                cur = [lo, hi, True]
            continue
        if cur is not None and line.startswith(("Anonymous:", "Private_Dirty:",
                                                "Shared_Dirty:")) and line.split()[1] != "0":
            cur[2] = False
    if cur is not None:
        out.append(tuple(cur))
    return out


def compile_modules(modules: list[tuple[str, str]], objects: list | None = None
                    ) -> CompiledModule:
    """Map the objects of several (function name, module text) pairs into one engine.

    Each module is cached separately, so kernels shared between graphs (same op, shapes
    and attributes) compile once per machine, not once per graph. ``objects``, when given,
    receives the object code of each module (for the whole-program cache)."""
    key = _key("\0".join(t for _, t in modules))
    with _lock:
        cm = _memory_cache.get(key)
        if cm is not None:
            STATS["memory_hits"] += 1
            if objects is not None:  # from the disk cache (compiled again if evicted)
                objects.extend(object_for(t) for _, t in modules)
            return cm
        n_compiled = STATS["compiled"]
        objs = _objects_for([t for _, t in modules])
        cm = _map_objects(objs, [n for n, _ in modules], key)
        if objects is not None:
            objects.extend(objs)
        del objs
        if STATS["compiled"] > n_compiled:
            trim_heap()  # LLVM's working memory of the modules just compiled
        return cm


def _compile_jobs() -> int:
    """Processes compiling at once (``MXC_COMPILE_JOBS``, default: the cores, at most 2 --
    this one plus one ``llvm_worker``); 1 compiles everything here."""
    v = os.environ.get("MXC_COMPILE_JOBS", "")
    try:
        return max(1, int(v)) if v else min(2, os.cpu_count() or 1)
    except ValueError:
        return 1


def _objects_for(texts: list) -> list:
    """``object_for`` of every text.  With several uncached modules and ``_compile_jobs() >
    1``, a ``llvm_worker`` process compiles about half of them (by IR size) while this
    process compiles the rest; whatever the worker does not deliver (it failed to start,
    died, or met an error) is compiled here, so errors surface as they would serially."""
    objs: list = [None] * len(texts)
    todo = []
    for i, text in enumerate(texts):
        obj = read_entry(_object_path(_key(text)))
        if obj is not None and obj[:4] == b"\x7fELF":
            STATS["cache_hits"] += 1
            objs[i] = obj
        else:
            todo.append(i)
    worker = _start_worker() if len(todo) >= 4 and _compile_jobs() > 1 else None
    mine, theirs = todo, []
    if worker is not None:
        # the largest first, each to the lighter side; this process starts ~0.1 s sooner
        load = {"mine": 2000, "theirs": 0}
        mine = []
        for i in sorted(todo, key=lambda i: -len(texts[i])):
            side = "mine" if load["mine"] <= load["theirs"] else "theirs"
            (mine if side == "mine" else theirs).append(i)
            load[side] += len(texts[i]) + 2000
        feeder = threading.Thread(target=_feed_worker, args=(worker, [texts[i] for i in theirs]),
                                  daemon=True)
        feeder.start()
    for i in mine:
        objs[i] = object_for(texts[i])
    if worker is not None:
        for i in theirs:
            obj = llvm_worker.read_frame(worker.stdout)
            if not obj or obj[:4] != b"\x7fELF":
                break
            STATS["compiled"] += 1
            write_entry(_object_path(_key(texts[i])), obj)
            objs[i] = obj
        _stop_worker(worker)
        feeder.join(timeout=5)
        for i in theirs:
            if objs[i] is None:
                objs[i] = object_for(texts[i])
    return objs


def _start_worker():
    """A ``llvm_worker`` process for this host's target, or None if it cannot start."""
    import json
    import subprocess

    t = host_target()
    try:
        p = subprocess.Popen([sys.executable, llvm_worker.__file__], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    try:
        llvm_worker.write_frame(p.stdin, json.dumps(
            {"triple": t.triple, "cpu": t.cpu, "features": t.features}).encode())
    except OSError:
        _stop_worker(p)
        return None
    return p


def _feed_worker(p, texts: list) -> None:
    """Send the worker its modules and the end frame (a thread: the worker's answers are
    read only after this process's own share, and full pipes must not stall anyone)."""
    try:
        for text in texts:
            llvm_worker.write_frame(p.stdin, text.encode())
        llvm_worker.write_frame(p.stdin, b"")
        p.stdin.close()
    except (OSError, ValueError):
        pass


def _stop_worker(p) -> None:
    import subprocess

    try:
        p.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    for f in (p.stdout,):
        try:
            f.close()
        except OSError:
            pass


def _map_objects(objs: list, names: list, key: str) -> CompiledModule:
    # MCJIT takes ownership of the target machine it is given: a fresh one per engine
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _new_target_machine())
    for obj in objs:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    cm = CompiledModule(engine, names, key)
    _memory_cache[key] = cm
    return cm


def elf_object_ok(obj: bytes) -> bool:
    """A structural check of a relocatable ELF object before LLVM sees it: header, section
    table and section contents inside the file (LLVM trusts its input)."""
    try:
        if not isinstance(obj, bytes) or obj[:4] != b"\x7fELF" or obj[4] not in (1, 2) or \
                obj[5] not in (1, 2):
            return False
        wide, end = obj[4] == 2, "<" if obj[5] == 1 else ">"
        if struct.unpack_from(end + "H", obj, 0x10)[0] != 1:       # ET_REL
            return False
        if wide:
            shoff, = struct.unpack_from(end + "Q", obj, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", obj, 0x3A)
            fmt, need = end + "IIQQQQIIQQ", 64
        else:
            shoff, = struct.unpack_from(end + "I", obj, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", obj, 0x2E)
            fmt, need = end + "IIIIIIIIII", 40
        if shentsize < need or shnum == 0 or shstrndx >= shnum or \
                shoff + shnum * shentsize > len(obj):
            return False
        for i in range(shnum):
            sh = struct.unpack_from(fmt, obj, shoff + i * shentsize)
            typ, off, size = sh[1], sh[4], sh[5]
            if typ != _SHT_NOBITS and typ != 0 and off + size > len(obj):
                return False
        return True
    except (struct.error, IndexError, TypeError):
        return False


def load_objects(objs: list, names: list, key: str) -> CompiledModule:
    """Map already compiled objects (a cached program's) into one engine, remembered in
    memory under ``key``. Raises CompileError when an object is malformed or a function is
    missing."""
    if not all(elf_object_ok(o) for o in objs):
        raise CompileError("cached program holds a malformed object")
    _init()
    with _lock:
        cm = _memory_cache.get(key)
        if cm is not None and all(n in cm.functions for n in names):
            STATS["memory_hits"] += 1
            return cm
        return _map_objects(objs, names, key)


def compile_ir(text: str, names: list[str]) -> CompiledModule:
    """JIT-compile one module's IR text (cached in memory and on disk)."""
    key = _key(text + "\0" + "\0".join(names))
    with _lock:
        cm = _memory_cache.get(key)
        if cm is not None:
            STATS["memory_hits"] += 1
            return cm
        return _map_objects([object_for(text)], names, key)


# ---------------------------------------------------------------------------------------------
# prelinked images: a cached program's objects mapped without LLVM
# ---------------------------------------------------------------------------------------------
_SHF_WRITE, _SHF_ALLOC, _SHF_TLS = 0x1, 0x2, 0x400
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 1, 2, 4, 8, 9
_SHT_X86_64_UNWIND = 0x70000001
_R_X86_64_64, _R_X86_64_PC32, _R_X86_64_PLT32, _R_X86_64_PC64 = 1, 2, 4, 24
_EM_X86_64 = 62
IMAGE_ARCH = "x86_64-elf"


def image_supported() -> bool:
    """Whether this host maps prelinked images (64-bit x86 Linux)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def link_image(objects: list, names: list) -> dict | None:
    """One position-independent image of x86-64 ELF relocatable ``objects``: allocated
    sections laid out in order, PC-relative relocations resolved, absolute 64-bit ones listed
    as (image offset, target offset) for ``map_image`` to add the load address to. None when
    an object needs anything else (external symbols, writable or TLS data, other relocation
    types): the caller then keeps using MCJIT for it."""
    try:
        return _link_image(objects, names)
    except (struct.error, IndexError, KeyError, ValueError, UnicodeDecodeError):
        return None


def _link_image(objects: list, names: list) -> dict | None:
    image = bytearray()
    relocs: list = []
    symbols: dict = {}
    for obj in objects:
        if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
            return None                      # not ELF64 little-endian
        e_type, e_machine = struct.unpack_from("<HH", obj, 0x10)
        if e_type != 1 or e_machine != _EM_X86_64:
            return None
        shoff, = struct.unpack_from("<Q", obj, 0x28)
        shentsize, shnum, _shstrndx = struct.unpack_from("<HHH", obj, 0x3A)
        secs = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize)
                for i in range(shnum)]
        base: dict = {}
        for i, (_n, typ, flags, _a, off, size, _l, _i, align, _e) in enumerate(secs):
            if not flags & _SHF_ALLOC or size == 0:
                continue
            if flags & (_SHF_WRITE | _SHF_TLS) or typ not in (_SHT_PROGBITS, _SHT_NOBITS,
                                                             _SHT_X86_64_UNWIND):
                return None
            image.extend(b"\0" * (-len(image) % max(int(align), 1)))
            base[i] = len(image)
            image.extend(obj[off: off + size] if typ != _SHT_NOBITS else b"\0" * size)
        syms: list = []
        for (_n, typ, _f, _a, off, size, link, _i, _al, ent) in secs:
            if typ != _SHT_SYMTAB:
                continue
            stroff = secs[link][4]
            for j in range(size // ent):
                st_name, _info, _other, shndx, value, _sz = struct.unpack_from(
                    "<IBBHQQ", obj, off + j * ent)
                end = obj.index(b"\0", stroff + st_name)
                name = obj[stroff + st_name: end].decode()
                syms.append((name, _info >> 4, shndx, value))
        for name, bind, shndx, value in syms:
            if bind in (1, 2) and shndx in base:          # global/weak, defined here
                if name in symbols:
                    return None
                symbols[name] = base[shndx] + value
        for (_n, typ, _f, _a, off, size, link, target, _al, ent) in secs:
            if typ == _SHT_REL and target in base:
                return None
            if typ != _SHT_RELA or target not in base:
                continue
            for j in range(size // ent):
                r_off, info, addend = struct.unpack_from("<QQq", obj, off + j * ent)
                _sname, _bind, shndx, value = syms[info >> 32]
                if shndx not in base:
                    return None                  # undefined, absolute or common symbol
                s_ = base[shndx] + value
                p_ = base[target] + r_off
                rtype = info & 0xFFFFFFFF
                if rtype == _R_X86_64_64:
                    relocs.append((p_, s_ + addend))
                    struct.pack_into("<Q", image, p_, 0)
                elif rtype in (_R_X86_64_PC32, _R_X86_64_PLT32):
                    v = s_ + addend - p_
                    if not -(1 << 31) <= v < (1 << 31):
                        return None
                    struct.pack_into("<i", image, p_, v)
                elif rtype == _R_X86_64_PC64:
                    struct.pack_into("<q", image, p_, s_ + addend - p_)
                else:
                    return None
    if any(n not in symbols for n in names):
        return None
    return {"arch": IMAGE_ARCH, "code": bytes(image), "relocs": relocs,
            "symbols": {n: symbols[n] for n in names}}


class MappedImage:
    """A prelinked image mapped read+execute; the same interface as CompiledModule. Never
    unmapped (like engines in the memory cache, its code may be referenced by any clone)."""

    def __init__(self, addr: int, size: int, symbols: dict, key: str) -> None:
        self.addr, self.size, self.key = addr, size, key
        self.addresses = {n: addr + off for n, off in symbols.items()}
        self.functions = {n: KERNEL_FN(a) for n, a in self.addresses.items()}
        self.ir_text = ""


_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20
_sys_libc = None


def _mm_libc():
    global _sys_libc
    if _sys_libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_long]
        lib.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _sys_libc = lib
    return _sys_libc


def map_image(image: dict, key: str) -> MappedImage:
    """Map ``image`` (from ``link_image``) into this process and return its entry points;
    remembered in memory under ``key``. Raises OSError/ValueError when it cannot."""
    if image.get("arch") != IMAGE_ARCH or not image_supported():
        raise ValueError("image built for another architecture")
    with _lock:
        cm = _memory_cache.get(key)
        if cm is not None and all(n in cm.functions for n in image["symbols"]):
            STATS["memory_hits"] += 1
            return cm
        code = bytearray(image["code"])
        n = len(code)
        for at, target in image["relocs"]:
            if not (0 <= at <= n - 8 and 0 <= target <= n):
                raise ValueError("relocation outside the image")
        if any(not 0 <= off < n for off in image["symbols"].values()):
            raise ValueError("symbol outside the image")
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        size = max(page, -(-n // page) * page)
        libc = _mm_libc()
        addr = libc.mmap(None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS,
                         -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed for a program image")
        for at, target in image["relocs"]:
            struct.pack_into("<Q", code, at, addr + target)
        ctypes.memmove(addr, bytes(code), n)
        if libc.mprotect(addr, size, _PROT_READ | _PROT_EXEC) != 0:
            err = ctypes.get_errno()
            libc.munmap(addr, size)
            raise OSError(err, "cannot make a program image executable")
        cm = MappedImage(addr, size, image["symbols"], key)
        _memory_cache[key] = cm
        return cm
