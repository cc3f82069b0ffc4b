"""A small ELF reader: header fields, dynamic section and symbols.

Used to validate artifacts (``compiler.aot`` after linking, ``runtime.artifact`` before
``dlopen``, the tests): machine, class, ABI flags, ``DT_NEEDED`` entries and undefined
symbols. Read-only and dependency-free; handles ELF32/ELF64, little and big endian.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

EM_NAMES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv", 190: "cuda"}
ARCH_MACHINE = {"x86_64": 62, "aarch64": 183, "arm": 40, "x86": 3}

ET_REL, ET_DYN = 1, 3
SHT_SYMTAB, SHT_DYNAMIC, SHT_DYNSYM = 2, 6, 11
DT_NEEDED, DT_SONAME = 1, 14
EF_ARM_ABI_FLOAT_HARD, EF_ARM_ABI_FLOAT_SOFT = 0x400, 0x200


class ElfError(ValueError):
    pass


@dataclass
class Symbol:
    name: str
    bind: int        # 0 local, 1 global, 2 weak
    type: int        # 0 notype, 1 object, 2 func
    shndx: int       # 0: undefined
    value: int
    size: int
    visibility: int  # 0 default, 2 hidden

    @property
    def undefined(self) -> bool:
        return self.shndx == 0 and bool(self.name)


@dataclass
class ElfInfo:
    elf_class: int                 # 32 or 64
    little_endian: bool
    osabi: int
    type: int                      # ET_REL, ET_DYN, ...
    machine: int
    flags: int
    sections: dict = field(default_factory=dict)   # name -> (type, offset, size)
    needed: list = field(default_factory=list)
    soname: str | None = None
    dynsym: list = field(default_factory=list)
    symtab: list = field(default_factory=list)

    @property
    def arch(self) -> str:
        return EM_NAMES.get(self.machine, f"em{self.machine}")

    def undefined_symbols(self, dynamic: bool = True) -> list:
        syms = self.dynsym if dynamic else self.symtab
        return sorted({s.name for s in syms if s.undefined})

    def exported_symbols(self) -> list:
        return sorted({s.name for s in self.dynsym if not s.undefined and s.bind in (1, 2)
                       and s.visibility in (0, 3) and s.name})

    @property
    def arm_float_abi(self) -> str | None:
        if self.machine != 40:
            return None
        if self.flags & EF_ARM_ABI_FLOAT_HARD:
            return "hard"
        if self.flags & EF_ARM_ABI_FLOAT_SOFT:
            return "soft"
        return "unspecified"


def read_elf(data: bytes | str) -> ElfInfo:
    """Parse ``data`` (bytes, or a path)."""
    if isinstance(data, str) or hasattr(data, "__fspath__"):
        with open(data, "rb") as f:
            data = f.read()
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    cls = {1: 32, 2: 64}.get(data[4])
    if cls is None or data[5] not in (1, 2):
        raise ElfError("bad ELF class or data encoding")
    le = data[5] == 1
    e = "<" if le else ">"
    try:
        return _parse(data, cls, le, e)
    except struct.error as ex:
        raise ElfError(f"truncated or corrupt ELF file ({ex})") from None


def _parse(data: bytes, cls: int, le: bool, e: str) -> ElfInfo:
    if cls == 64:
        (etype, mach, _v, _entry, _phoff, shoff, flags, _ehs, _phes, _phn, shes, shn,
         shstrndx) = struct.unpack_from(e + "HHIQQQIHHHHHH", data, 16)
    else:
        (etype, mach, _v, _entry, _phoff, shoff, flags, _ehs, _phes, _phn, shes, shn,
         shstrndx) = struct.unpack_from(e + "HHIIIIIHHHHHH", data, 16)
    info = ElfInfo(cls, le, data[7], etype, mach, flags)
    if shoff == 0 or shn == 0:
        return info
    if shoff + shn * shes > len(data):
        raise ElfError("section headers lie past the end of the file (truncated?)")
    secs = []
    for i in range(shn):
        off = shoff + i * shes
        if cls == 64:
            name, typ, _fl, _addr, offset, size, link, _info, _al, entsize = struct.unpack_from(
                e + "IIQQQQIIQQ", data, off)
        else:
            name, typ, _fl, _addr, offset, size, link, _info, _al, entsize = struct.unpack_from(
                e + "IIIIIIIIII", data, off)
        secs.append((name, typ, offset, size, link, entsize))
    if shstrndx >= len(secs):
        raise ElfError("bad section name table index")
    stro = secs[shstrndx][2]

    def cstr(base: int, off: int) -> str:
        end = data.find(b"\0", base + off)
        if end < 0:
            raise ElfError("unterminated string")
        return data[base + off: end].decode("utf-8", "replace")

    for s in secs:
        info.sections[cstr(stro, s[0])] = (s[1], s[2], s[3])
    for s in secs:
        _name, typ, offset, size, link, entsize = s
        if offset + size > len(data) and typ != 8:  # SHT_NOBITS has no file bytes
            raise ElfError("a section lies past the end of the file (truncated?)")
        if typ in (SHT_SYMTAB, SHT_DYNSYM):
            strbase = secs[link][2]
            out = info.dynsym if typ == SHT_DYNSYM else info.symtab
            es = entsize or (24 if cls == 64 else 16)
            for j in range(size // es):
                o = offset + j * es
                if cls == 64:
                    nm, inf, oth, shx, val, sz = struct.unpack_from(e + "IBBHQQ", data, o)
                else:
                    nm, val, sz, inf, oth, shx = struct.unpack_from(e + "IIIBBH", data, o)
                out.append(Symbol(cstr(strbase, nm), inf >> 4, inf & 15, shx, val, sz,
                                  oth & 3))
        elif typ == SHT_DYNAMIC:
            strbase = secs[link][2]
            es = entsize or (16 if cls == 64 else 8)
            for j in range(size // es):
                fmt = e + ("qQ" if cls == 64 else "iI")
                tag, val = struct.unpack_from(fmt, data, offset + j * es)
                if tag == 0:
                    break
                if tag == DT_NEEDED:
                    info.needed.append(cstr(strbase, val))
                elif tag == DT_SONAME:
                    info.soname = cstr(strbase, val)
    return info


__all__ = ["ARCH_MACHINE", "EM_NAMES", "ElfError", "ElfInfo", "Symbol", "read_elf"]
