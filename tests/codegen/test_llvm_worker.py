"""The compile worker process (codegen/llvm_worker.py) and the parallel object build."""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("llvmlite.binding")

from mxc.base import CompileError
from mxc.codegen import jit, llvm_worker


def _kernel(i: int) -> tuple[str, str]:
    """A tiny kernel adding ``i`` to a float (distinct text per i: distinct objects)."""
    name = f"add_{i}"
    return name, f"""
define void @{name}(i64 %b, i64 %e, ptr %args, ptr %scratch) {{
  %p = load ptr, ptr %args
  %x = load float, ptr %p
  %y = fadd float %x, {float(i + 1):e}
  store float %y, ptr %p
  ret void
}}
"""


def test_worker_objects_are_the_parents_bytes():
    # the same pipeline in both processes: cached objects never depend on who compiled them
    _, text = _kernel(0)
    t = jit.host_target()
    p = subprocess.Popen([sys.executable, llvm_worker.__file__], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    llvm_worker.write_frame(p.stdin, json.dumps(
        {"triple": t.triple, "cpu": t.cpu, "features": t.features}).encode())
    llvm_worker.write_frame(p.stdin, text.encode())
    llvm_worker.write_frame(p.stdin, b"")
    p.stdin.close()
    theirs = llvm_worker.read_frame(p.stdout)
    assert p.wait(timeout=30) == 0
    assert theirs == jit._compile_object(text)


def test_worker_reports_bad_ir():
    t = jit.host_target()
    p = subprocess.Popen([sys.executable, llvm_worker.__file__], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    llvm_worker.write_frame(p.stdin, json.dumps(
        {"triple": t.triple, "cpu": t.cpu, "features": t.features}).encode())
    llvm_worker.write_frame(p.stdin, b"define void @f( {")
    p.stdin.close()
    assert llvm_worker.read_frame(p.stdout) == b""
    assert b"RuntimeError" in llvm_worker.read_frame(p.stdout)
    assert p.wait(timeout=30) == 1


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_parallel_build_runs(monkeypatch, tmp_path, jobs):
    monkeypatch.setenv("MXC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MXC_COMPILE_JOBS", jobs)
    base = 100 + 10 * int(jobs)
    mods = [_kernel(i) for i in range(base, base + 7)]
    started = []
    real = jit._start_worker
    monkeypatch.setattr(jit, "_start_worker", lambda: started.append(1) or real())
    before = jit.STATS["compiled"]
    cm = jit.compile_modules(mods)
    assert started == ([1] if jobs == "2" else [])
    assert jit.STATS["compiled"] - before == len(mods)
    for i, (name, _) in enumerate(mods):
        x = np.zeros(1, np.float32)
        args = (ctypes.c_void_p * 1)(x.ctypes.data)
        cm.functions[name](0, 1, ctypes.addressof(args), None)
        assert x[0] == base + 1 + i
    # every object is in the cache now, whoever compiled it
    assert all(jit.read_entry(jit._object_path(jit._key(t))) for _, t in mods)


def test_worker_that_cannot_start_costs_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("MXC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MXC_COMPILE_JOBS", "2")
    monkeypatch.setattr(jit.sys, "executable", str(tmp_path / "no-python"))
    mods = [_kernel(i) for i in range(200, 205)]
    cm = jit.compile_modules(mods)
    assert set(cm.functions) == {n for n, _ in mods}


def test_bad_module_is_the_parents_compile_error(monkeypatch, tmp_path):
    # whichever process meets the bad module, the caller gets mxc's CompileError
    monkeypatch.setenv("MXC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MXC_COMPILE_JOBS", "2")
    mods = [_kernel(i) for i in range(300, 306)] + [("bad", "define void @bad( {")]
    with pytest.raises(CompileError, match="invalid"):
        jit.compile_modules(mods)
