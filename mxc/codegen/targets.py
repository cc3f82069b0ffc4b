"""Target presets for ahead-of-time builds: triple, CPU, features and GEMM template ISA.

``mxc compile --target NAME`` and ``mx.compile(..., target=NAME)`` take a preset name;
``--cpu`` / ``--features`` (or ``resolve(name, cpu=..., features=...)``) override the
preset's values. ``host`` is this machine as the JIT sees it (``MXC_CPU`` /
``MXC_CPU_FEATURES`` honoured).

While an AOT build lowers a graph, :func:`using` makes its target the *active* one, so the
lowering picks the target's GEMM template (``gemm_isa()``) instead of the host's.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, replace

from ..base import MXNetError


@dataclass(frozen=True)
class Target:
    name: str
    triple: str
    cpu: str
    features: str
    gemm_isa: str          # codegen.gemm ISA table: avx512 | avx2 | neon | generic
    arch: str              # x86_64 | aarch64 | arm (ELF e_machine family)
    pointer_bits: int
    android: bool = False
    ld_flags: tuple = ()   # extra ld.lld flags

    @property
    def is_host(self) -> bool:
        return self.name == "host"

    def describe(self) -> dict:
        return {"name": self.name, "triple": self.triple, "cpu": self.cpu,
                "features": self.features, "gemm_isa": self.gemm_isa, "arch": self.arch,
                "pointer_bits": self.pointer_bits, "android": self.android}


# Android 15+ arm64 devices may use 16 KiB pages: align segments for them (harmless elsewhere)
_PAGE16K = ("-z", "max-page-size=16384")

PRESETS = {
    # a common x86-64 baseline (Haswell and newer: AVX2 + FMA)
    "x86_64-linux-gnu": Target("x86_64-linux-gnu", "x86_64-unknown-linux-gnu", "x86-64-v3",
                               "", "avx2", "x86_64", 64),
    "aarch64-linux-gnu": Target("aarch64-linux-gnu", "aarch64-unknown-linux-gnu", "generic",
                                "+neon,+fp-armv8", "neon", "aarch64", 64, False, _PAGE16K),
    "aarch64-linux-android": Target("aarch64-linux-android", "aarch64-unknown-linux-android24",
                                    "generic", "+neon,+fp-armv8", "neon", "aarch64", 64, True,
                                    _PAGE16K),
    # ARMv7-A with NEON and VFPv4 (fused multiply-add): every Android armeabi-v7a phone
    # since ~2013. Soft-float calling convention (androideabi), NEON used inside.
    "armv7a-linux-androideabi": Target("armv7a-linux-androideabi",
                                       "armv7a-unknown-linux-androideabi24", "generic",
                                       "+neon,+vfp4", "neon", "arm", 32, True),
    # the same code for 32-bit ARM Linux (Raspberry Pi OS, Debian armhf): hard-float ABI
    "armv7a-linux-gnueabihf": Target("armv7a-linux-gnueabihf",
                                     "armv7a-unknown-linux-gnueabihf", "generic",
                                     "+neon,+vfp4", "neon", "arm", 32),
}

ALIASES = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
           "arm64-android": "aarch64-linux-android", "android-arm64": "aarch64-linux-android",
           "armv7-android": "armv7a-linux-androideabi", "android-armv7": "armv7a-linux-androideabi",
           "armhf": "armv7a-linux-gnueabihf"}

# presets served by other back ends (the PTX back end owns these)
GPU_PRESETS = ("cuda-sm80", "cuda-sm90")


def names() -> list:
    return ["host"] + list(PRESETS)


def host() -> Target:
    from .gemm import host_isa
    from .jit import host_target

    t = host_target()
    arch = t.triple.split("-", 1)[0]
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
    if arch.startswith("arm") and arch != "arm64":
        arch = "arm"
    import struct
    return Target("host", t.triple, t.cpu, t.features, host_isa(), arch,
                  8 * struct.calcsize("P"))


def resolve(target: str | Target | None = "host", *, cpu: str | None = None,
            features: str | None = None, gemm_isa: str | None = None) -> Target:
    """The :class:`Target` for a preset name (or a Target), with overrides applied."""
    if isinstance(target, Target):
        t = target
    else:
        name = (target or "host").strip()
        name = ALIASES.get(name, name)
        if name == "host":
            t = host()
        elif name in PRESETS:
            t = PRESETS[name]
        elif name in GPU_PRESETS:
            raise MXNetError(f"target '{name}' is a GPU target, served by the PTX back end; "
                             f"CPU presets: {', '.join(names())}")
        else:
            raise MXNetError(f"unknown target '{target}'; presets: {', '.join(names())} "
                             "(override the CPU/features of a preset with --cpu/--features)")
    if cpu:
        t = replace(t, cpu=cpu)
    if features is not None:
        t = replace(t, features=features)
    if gemm_isa:
        from .gemm import ISAS
        if gemm_isa not in ISAS:
            raise MXNetError(f"unknown GEMM ISA '{gemm_isa}'; expected one of {ISAS}")
        t = replace(t, gemm_isa=gemm_isa)
    return t


_active: contextvars.ContextVar = contextvars.ContextVar("mxc_aot_target", default=None)


@contextlib.contextmanager
def using(t: Target):
    """Make ``t`` the active target while lowering (GEMM templates follow it)."""
    tok = _active.set(t)
    try:
        yield t
    finally:
        _active.reset(tok)


def active() -> Target | None:
    return _active.get()


def gemm_isa() -> str:
    """The GEMM template ISA for code being generated now: the active AOT target's, else
    the host's."""
    t = _active.get()
    if t is not None:
        return t.gemm_isa
    from .gemm import host_isa
    return host_isa()


_machines: dict = {}


def target_machine(t: Target):
    """An llvmlite TargetMachine for ``t`` (PIC, O3), cached per target."""
    import llvmlite.binding as llvm

    key = (t.triple, t.cpu, t.features)
    tm = _machines.get(key)
    if tm is None:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        try:
            target = llvm.Target.from_triple(t.triple)
        except RuntimeError as e:
            raise MXNetError(f"LLVM has no back end for triple '{t.triple}' "
                             f"(target '{t.name}'): {e}") from None
        tm = target.create_target_machine(cpu=t.cpu, features=t.features, opt=3, reloc="pic",
                                          codemodel="default")
        _machines[key] = tm
    return tm


__all__ = [
    "PRESETS",
    "Target",
    "active",
    "gemm_isa",
    "host",
    "names",
    "resolve",
    "target_machine",
    "using",
]
