"""Compile LLVM IR modules to object code in a separate process.

llvmlite serializes every LLVM call behind one global lock, so threads cannot compile two
modules at once; a second process can.  :mod:`mxc.codegen.jit` starts this file as a script
(``python llvm_worker.py``: it imports nothing of mxc, only llvmlite, so it starts in ~0.1 s)
and hands it part of a program's uncached modules while it compiles the rest itself.

The optimisation pipeline lives here (:func:`optimize`, :func:`target_machine`) and the
parent uses the same functions, so an object is the same bytes whichever process compiled
it (objects are cached by IR text).

Protocol on stdin/stdout, every frame a little-endian u64 length then that many bytes:
the first stdin frame is JSON ``{"triple", "cpu", "features"}``, then one frame of IR text
per module and an empty frame to finish; stdout answers each module with a frame of the
object, or an empty frame followed by a frame of the error text (then the worker stops).
"""
from __future__ import annotations

import json
import struct
import sys


def _llvm():
    # imported on first use: mxc.codegen.jit imports this module for its framing and
    # pipeline, and a process running only cached programs never loads LLVM
    import llvmlite.binding as llvm

    return llvm


def target_machine(triple: str, cpu: str, features: str):
    """The target machine every mxc JIT object is emitted with."""
    llvm = _llvm()
    return llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=3, jit=True)


def optimize(mod, tm, level: int = 3) -> None:
    llvm = _llvm()
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def compile_text(text: str, tm) -> bytes:
    """Parse, verify, optimise and emit one module in a private LLVM context."""
    llvm = _llvm()
    ctx = llvm.create_context()
    mod = None
    try:
        mod = llvm.parse_assembly(text, ctx)
        mod.verify()
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        optimize(mod, tm)
        return tm.emit_object(mod)
    finally:
        if mod is not None:
            mod.close()
        ctx.close()


def read_frame(f) -> bytes | None:
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    data = f.read(n)
    return data if len(data) == n else None


def write_frame(f, data: bytes) -> None:
    f.write(struct.pack("<Q", len(data)))
    f.write(data)


def main() -> int:
    src, out = sys.stdin.buffer, sys.stdout.buffer
    cfg = read_frame(src)
    if cfg is None:
        return 1
    t = json.loads(cfg)
    llvm = _llvm()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = target_machine(t["triple"], t["cpu"], t["features"])
    while True:
        text = read_frame(src)
        if not text:
            return 0
        try:
            obj = compile_text(text.decode(), tm)
        except RuntimeError as e:  # reported to the parent, which compiles it itself
            write_frame(out, b"")
            write_frame(out, f"{type(e).__name__}: {e}".encode())
            out.flush()
            return 1
        write_frame(out, obj)
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
