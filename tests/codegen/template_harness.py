"""Shared by the kernel-template tests (pooling, direct convolution): JIT a template kernel
as the runtime gets it, which ISAs this host can run, and a freestanding cross object."""
from __future__ import annotations

import ctypes

import llvmlite.binding as llvm

from mxc.codegen.gemm import host_isa
from mxc.codegen.llvm_render import render_kernel_module
from mxc.ir import kernel as K

llvm.initialize_native_target()
llvm.initialize_native_asmprinter()

FUNC_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_void_p)
_ENGINES = []   # keep the JIT engines (and so the machine code) alive


def host_can(isa: str) -> bool:
    feats = llvm.get_host_cpu_features()
    if isa in ("generic", "neon"):
        return True   # plain vector IR: correct on any host
    if isa == "avx512":
        return bool(feats.get("avx512f"))
    return bool(feats.get("avx2")) and bool(feats.get("fma"))


BEST = host_isa()
OTHER_ISAS = [i for i in ("avx512", "avx2", "neon", "generic") if i != BEST and host_can(i)]


def optimize(mod, tm) -> None:
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def jit(kernel):
    """The kernel as the runtime gets it: one module through ``render_kernel_module``."""
    tk = K.TemplateKernel(kernel.name, [], kernel.ir, kernel.n_tasks, kernel.scratch_bytes)
    fname, text = render_kernel_module(tk)
    target = llvm.Target.from_triple(llvm.get_process_triple())
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                      features=llvm.get_host_cpu_features().flatten(),
                                      opt=3, jit=True)
    mod = llvm.parse_assembly(text)
    mod.verify()
    optimize(mod, tm)
    ee = llvm.create_mcjit_compiler(mod, tm)
    ee.finalize_object()
    _ENGINES.append(ee)
    return FUNC_TYPE(ee.get_function_address(fname))


def undefined_symbols(obj: bytes) -> list:
    """Undefined global symbols of an ELF object (its .symtab)."""
    from mxc.runtime.elf import read_elf

    return [n for n in read_elf(obj).undefined_symbols(dynamic=False) if n]


CROSS_TARGETS = [  # (triple, cpu, features, isa)
    ("aarch64-linux-android", "", "", "neon"),
    ("armv7a-linux-androideabi", "", "+neon,+vfp4", "neon"),
    ("x86_64-unknown-linux-gnu", "x86-64-v4", "", "avx512"),
    ("x86_64-unknown-linux-gnu", "x86-64-v3", "", "avx2"),
]


def cross_object(text: str, triple: str, cpu: str, features: str) -> bytes:
    """An optimized, position-independent ELF object of the module ``text`` for ``triple``;
    asserts it needs no symbol from outside (freestanding: no libc, no libm)."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    tm = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features,
                                                               opt=3, reloc="pic")
    mod = llvm.parse_assembly(text)
    mod.triple = triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    optimize(mod, tm)
    obj = tm.emit_object(mod)
    assert obj[:4] == b"\x7fELF"
    assert [s for s in undefined_symbols(obj) if s != "_GLOBAL_OFFSET_TABLE_"] == []
    return obj
