"""Standalone artifacts (compiler.aot, runtime.artifact, examples/c): host builds checked
against the MXNet reference outputs from Python and from the C example, the C ABI's error
codes, reentrancy, --prefix, ELF properties, and cross builds for AArch64/ARMv7 (Linux and
Android triples) run under qemu-user through the cross-built C example.

Tools: ld.lld (all builds), cc (host C example), aarch64-linux-gnu-gcc / arm-linux-gnueabihf-gcc
and qemu-aarch64 / qemu-arm (cross runs). Tests that need a missing tool skip with a message;
.ci/run installs them.
"""
from __future__ import annotations

import ctypes
import json
import re
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from mxc.base import MXNetError
from mxc.runtime.elf import read_elf

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT.parent / "shared" / "mxnet_cases"
EXAMPLE = ROOT / "examples" / "c"
LENET = ROOT / "mxc" / "models" / "lenet"

INSTALL = ("apt-get install -y lld qemu-user gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf "
           "libc6-dev-arm64-cross libc6-dev-armhf-cross")

CROSS = {
    # target: (ELF machine, class, C compiler, qemu, sysroot)
    "aarch64-linux-gnu": ("aarch64", 64, "aarch64-linux-gnu-gcc", "qemu-aarch64",
                          "/usr/aarch64-linux-gnu"),
    "aarch64-linux-android": ("aarch64", 64, "aarch64-linux-gnu-gcc", "qemu-aarch64",
                              "/usr/aarch64-linux-gnu"),
    "armv7a-linux-androideabi": ("arm", 32, "arm-linux-gnueabihf-gcc", "qemu-arm",
                                 "/usr/arm-linux-gnueabihf"),
    "armv7a-linux-gnueabihf": ("arm", 32, "arm-linux-gnueabihf-gcc", "qemu-arm",
                               "/usr/arm-linux-gnueabihf"),
}


def need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} not found (install: {INSTALL})")


def need_lld() -> None:
    from mxc.base import CompileError
    from mxc.compiler.aot import find_lld

    try:
        find_lld()
    except CompileError as e:
        pytest.skip(str(e))


def models() -> dict:
    """name -> (symbol file, params file, input array, reference output)."""
    out = {"lenet": (LENET / "lenet-symbol.json", LENET / "lenet-0000.params",
                     np.load(LENET / "in_data.npy"), np.load(LENET / "out_0.npy"))}
    for name in ("mlp", "bncnn", "resnet18_v1"):
        d = CASES / name
        if d.exists():
            out[name] = (d / f"{name}-symbol.json", d / f"{name}-0000.params",
                         np.load(d / "in_data.npy"), np.load(d / "out_0.npy"))
    return out


ALL_MODELS = models()                      # every gluon-exported reference model: host builds
MODELS = {k: v for k, v in ALL_MODELS.items() if k in ("lenet", "mlp")}   # + cross builds
SMALL = [k for k in ALL_MODELS if k != "resnet18_v1"]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def tol(model: str) -> dict:
    if model == "resnet18_v1":   # the case's README: rtol 1e-3, atol 1e-4 * max|ref|
        return {"rtol": 1e-3, "atol": 1e-4 * float(np.abs(ALL_MODELS[model][3]).max())}
    return TOL


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """build(model, target, prefix) -> artifact directory (built once per session)."""
    from mxc.compiler import aot

    made: dict = {}
    root = tmp_path_factory.mktemp("artifacts")

    def get(model: str, target: str = "host", prefix: str = "mxc_model", **kw) -> Path:
        key = (model, target, prefix, tuple(sorted(kw.items())))
        if key not in made:
            need_lld()
            sym, params, x, _ = ALL_MODELS[model]
            out = root / f"{model}-{target}-{prefix}-{len(made)}"
            aot.compile(str(sym), str(params), None, {"data": x.shape}, target=target,
                        prefix=prefix, out_dir=out, **kw)
            made[key] = out
        return made[key]

    return get


@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    """driver(cc) -> path of examples/c/main.c built with that C compiler."""
    made: dict = {}
    root = tmp_path_factory.mktemp("drivers")

    def get(cc: str = "cc") -> Path:
        if cc not in made:
            need(cc)
            exe = root / f"mxc_run-{cc}"
            r = subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(EXAMPLE / "main.c"),
                                "-ldl", "-lpthread"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            made[cc] = exe
        return made[cc]

    return get


def run_driver(cmd: list, lib: Path, x: np.ndarray, tmp: Path, *extra) -> np.ndarray:
    np.save(tmp / "x.npy", x)
    out = tmp / "y.npy"
    r = subprocess.run(cmd + ["--selftest", *extra, str(lib), str(tmp / "x.npy"), "-o",
                              str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "selftest: ok" in r.stdout
    return np.load(out)


# ---------------------------------------------------------------------------------------------
# host artifacts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", SMALL)
def test_host_artifact_matches_reference(build, model):
    import mxc.runtime as rt
    from mxc.compiler.model import CompiledModel, load_model

    d = build(model)
    for f in ("libmodel.so", "libmodel.a", "model.h", "metadata.json"):
        assert (d / f).is_file(), f
    sym, params, x, want = ALL_MODELS[model]
    m = rt.load(d)
    (y,) = m(x)
    np.testing.assert_allclose(y, want, **tol(model))
    (y1,) = m(data=x)           # by name, same result
    np.testing.assert_array_equal(y, y1)
    m.set_threads(False)        # single-threaded: the artifact alone
    (y2,) = m(x)
    np.testing.assert_allclose(y2, want, **tol(model))
    g, a, aux = load_model(sym, params)
    (ref,) = CompiledModel(g, a, aux, {"data": x.shape})(data=x)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))

    meta = json.loads((d / "metadata.json").read_text())
    assert meta["format_version"] == 1 and meta["mxc_version"]
    assert meta["inputs"] == [{"name": "data", "shape": list(x.shape), "dtype": "float32",
                               "nbytes": x.nbytes}]
    assert meta["outputs"][0]["shape"] == list(want.shape)
    assert meta["workspace_bytes"] == m.workspace_bytes and m.workspace_bytes % 64 == 0
    assert meta["memory"]["arena_bytes"] <= meta["memory"]["naive_bytes"]
    assert len(meta["kernels"]) >= 3
    assert meta["target"]["name"] == "host"
    hdr = (d / "model.h").read_text()
    for s in ("mxc_model_run", "mxc_model_info", "mxc_model_workspace_size",
              "mxc_model_set_parallel", "MXC_ERR_NULL_INPUT", "MXC_ERR_MISALIGNED_WORKSPACE"):
        assert s in hdr


@pytest.mark.parametrize("model", SMALL)
def test_c_example_host(build, driver, model, tmp_path):
    d = build(model)
    _, _, x, want = ALL_MODELS[model]
    exe = driver("cc")
    y = run_driver([str(exe)], d / "libmodel.so", x, tmp_path)
    np.testing.assert_allclose(y, want, **tol(model))
    y2 = run_driver([str(exe)], d / "libmodel.so", x, tmp_path, "--threads", "3")
    np.testing.assert_allclose(y2, want, **tol(model))


@pytest.mark.slow
def test_resnet18_v1_host_artifact(build, driver, tmp_path):
    """The model-zoo network (45 MB of weights embedded) from Python and from C."""
    import mxc.runtime as rt

    if "resnet18_v1" not in ALL_MODELS:
        pytest.skip("../shared/mxnet_cases/resnet18_v1 is absent")
    d = build("resnet18_v1")
    _, _, x, want = ALL_MODELS["resnet18_v1"]
    m = rt.load(d)
    np.testing.assert_allclose(m(x)[0], want, **tol("resnet18_v1"))
    meta = m.metadata
    assert meta["weights_bytes"] > 40e6
    # BatchNorm folded: 23 kernels, their temporaries shared down to ~0.37x of one buffer each
    assert meta["memory"]["arena_bytes"] < meta["memory"]["naive_bytes"] / 2.5
    kinds = [k["kind"] for k in meta["kernels"]]
    assert sum(k.startswith("conv") for k in kinds) == 20 and len(kinds) == 23
    y = run_driver([str(driver("cc"))], d / "libmodel.so", x, tmp_path, "--threads", "2")
    np.testing.assert_allclose(y, want, **tol("resnet18_v1"))


def test_reentrant_with_separate_workspaces(build):
    import mxc.runtime as rt

    d = build("lenet")
    m = rt.load(d)
    _, _, x, _ = MODELS["lenet"]
    rng = np.random.default_rng(0)
    xs = [x, rng.standard_normal(x.shape).astype(np.float32)]
    m.set_threads(False)
    refs = [m(xi)[0] for xi in xs]
    errors = []

    def work(i: int) -> None:
        ws = np.empty(m.workspace_bytes + 64, np.uint8)
        off = (-ws.ctypes.data) % 64
        ws = ws[off: off + m.workspace_bytes]
        for _ in range(30):
            (y,) = m(xs[i], workspace=ws)
            if not np.array_equal(y, refs[i]):
                errors.append(i)

    for threads in (False, True):
        m.set_threads(threads)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors


def test_error_codes(build):
    import mxc.runtime as rt
    from mxc.runtime.artifact import PARALLEL_FN

    m = rt.load(build("lenet"), threads=False)
    _, _, x, _ = MODELS["lenet"]
    x = np.ascontiguousarray(x)
    out = np.empty((4, 10), np.float32)
    ws = np.empty(m.workspace_bytes + 128, np.uint8)
    wp = ws.ctypes.data + (-ws.ctypes.data) % 64
    P = ctypes.c_void_p
    ins = (P * 1)(x.ctypes.data)
    outs = (P * 1)(out.ctypes.data)
    assert m.run_raw(ins, outs, wp) == 0
    assert m.run_raw(None, outs, wp) == 1
    assert m.run_raw((P * 1)(None), outs, wp) == 1
    assert m.run_raw(ins, None, wp) == 2
    assert m.run_raw(ins, (P * 1)(None), wp) == 2
    assert m.run_raw(ins, outs, None) == 3
    assert m.run_raw(ins, outs, wp + 16) == 4
    buf = np.empty(x.nbytes + 8, np.uint8)
    assert m.run_raw((P * 1)(buf.ctypes.data + (-buf.ctypes.data) % 4 + 2), outs, wp) == 5
    assert m.run_raw(ins, (P * 1)(out.ctypes.data + 1), wp) == 5
    failing = PARALLEL_FN(lambda *a: 7)
    m._set_par(ctypes.cast(failing, P), None)
    try:
        assert m.run_raw(ins, outs, wp) == 6
    finally:
        m.set_threads(False)
    assert m.run_raw(ins, outs, wp) == 0
    with pytest.raises(MXNetError, match="workspace is not 64-byte aligned"):
        m(x, workspace=ws[wp - ws.ctypes.data + 8:])


def test_bad_inputs_are_clear_errors(build, tmp_path):
    import mxc.runtime as rt
    from mxc.compiler import aot

    d = build("lenet")
    m = rt.load(d)
    _, _, x, _ = MODELS["lenet"]
    with pytest.raises(MXNetError, match=r"expected shape \(4, 1, 28, 28\)"):
        m(x[:2])
    with pytest.raises(MXNetError, match="expected dtype float32, got float64"):
        m(x.astype(np.float64))
    with pytest.raises(MXNetError, match=r"expected 1 input\(s\) \['data'\], got 0"):
        m()
    with pytest.raises(MXNetError, match="unknown input"):
        m(image=x)
    with pytest.raises(MXNetError, match=r"unknown target 'sparc'.*aarch64-linux-android"):
        aot.compile(str(MODELS["lenet"][0]), str(MODELS["lenet"][1]), None,
                    {"data": x.shape}, target="sparc", out_dir=tmp_path / "x")
    # a newer format version, a corrupted library, a library from another build
    for name, mutate, msg in (
            ("newer", lambda p: _edit_meta(p, format_version=99), "newer than this runtime"),
            ("corrupt", lambda p: _flip(p / "libmodel.so"), "corrupted"),
            ("truncated", lambda p: _truncate(p / "libmodel.so"), "corrupted"),
            ("nometa", lambda p: (p / "metadata.json").unlink(), "no metadata.json")):
        c = tmp_path / name
        shutil.copytree(d, c)
        mutate(c)
        with pytest.raises(MXNetError, match=msg):
            rt.load(c)
    c = tmp_path / "mixed"
    shutil.copytree(d, c)
    _edit_meta(c, workspace_bytes=1, files={})
    with pytest.raises(MXNetError, match="does not match"):
        rt.load(c)


def _edit_meta(p: Path, **kv) -> None:
    meta = json.loads((p / "metadata.json").read_text())
    meta.update(kv)
    (p / "metadata.json").write_text(json.dumps(meta))


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:4000])
    _edit_meta(p.parent, files={})


def test_missing_lld_says_how_to_install(monkeypatch):
    from mxc.base import CompileError
    from mxc.compiler import aot

    monkeypatch.delenv("MXC_LLD", raising=False)
    monkeypatch.setattr(aot.shutil, "which", lambda name: None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(CompileError, match="apt-get install lld"):
        aot.find_lld()


def test_elf_host_is_freestanding(build):
    from mxc.compiler.aot import _api_names

    for model in MODELS:
        info = read_elf(str(build(model) / "libmodel.so"))
        assert info.machine == 62 and info.elf_class == 64 and info.type == 3
        assert info.needed == [] and info.undefined_symbols() == []
        assert info.exported_symbols() == sorted(_api_names("mxc_model"))
        assert info.soname == "libmodel.so"


def test_prefix_two_models_in_one_program(build, tmp_path):
    """Two artifacts with different prefixes statically linked into one C program (and
    both loaded into this process)."""
    import mxc.runtime as rt

    need("cc")
    if "mlp" not in MODELS:
        pytest.skip("../shared/mxnet_cases/mlp is absent")
    a, b = build("lenet", prefix="lenet"), build("mlp", prefix="mlp")
    for d, p in ((a, "lenet"), (b, "mlp")):
        assert read_elf(str(d / "libmodel.so")).exported_symbols() == sorted(
            f"{p}_{n}" for n in ("run", "info", "workspace_size", "set_parallel",
                                 "num_inputs", "num_outputs", "input", "output"))
    src = tmp_path / "two.c"
    src.write_text(TWO_MODELS_C)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(a / "model.h", tmp_path / "a" / "model.h")
    shutil.copy(b / "model.h", tmp_path / "b" / "model.h")
    exe = tmp_path / "two"
    r = subprocess.run(["cc", "-O1", "-Wall", "-I", str(tmp_path), "-I", str(EXAMPLE), "-o",
                        str(exe), str(src), str(a / "libmodel.a"), str(b / "libmodel.a")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    xl, xm = MODELS["lenet"][2], MODELS["mlp"][2]
    np.save(tmp_path / "xl.npy", xl)
    np.save(tmp_path / "xm.npy", xm)
    r = subprocess.run([str(exe), str(tmp_path / "xl.npy"), str(tmp_path / "xm.npy"),
                        str(tmp_path / "yl.npy"), str(tmp_path / "ym.npy")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "yl.npy"), MODELS["lenet"][3], **TOL)
    np.testing.assert_allclose(np.load(tmp_path / "ym.npy"), MODELS["mlp"][3], **TOL)
    ml, mm = rt.load(a), rt.load(b)
    np.testing.assert_allclose(ml(xl)[0], MODELS["lenet"][3], **TOL)
    np.testing.assert_allclose(mm(xm)[0], MODELS["mlp"][3], **TOL)


TWO_MODELS_C = r"""
#define NPY_IMPLEMENTATION
#include "npy.h"
#include "a/model.h"
#include "b/model.h"
#include <stdio.h>
#include <stdlib.h>

static int one(const char *in, const char *out, int (*run)(const void *const *, void *const *,
               void *), size_t ws_bytes, const mxc_tensor_desc *od) {
    npy_array x;
    void *ws = NULL, *y = NULL;
    if (npy_load(in, &x) != 0) return 1;
    if (posix_memalign(&ws, 64, ws_bytes ? ws_bytes : 64) || posix_memalign(&y, 64, od->nbytes))
        return 1;
    const void *ins[1] = {x.data};
    void *outs[1] = {y};
    int rc = run(ins, outs, ws);
    if (rc) { printf("run failed: %d\n", rc); return 1; }
    return npy_save(out, od->dtype, od->ndim, od->shape, y);
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    if (one(argv[1], argv[3], lenet_run, lenet_workspace_size(), lenet_output(0))) return 1;
    if (one(argv[2], argv[4], mlp_run, mlp_workspace_size(), mlp_output(0))) return 1;
    printf("%d %d\n", lenet_num_inputs(), mlp_num_outputs());
    return 0;
}
"""


# ---------------------------------------------------------------------------------------------
# cross builds
# ---------------------------------------------------------------------------------------------

def _disassemble(lib: Path, arch: str) -> str:
    cross = "aarch64-linux-gnu" if arch == "aarch64" else "arm-linux-gnueabihf"
    for tool in ("llvm-objdump", f"{cross}-objdump"):
        if shutil.which(tool):
            r = subprocess.run([tool, "-d", str(lib)], capture_output=True, text=True)
            if r.returncode == 0 and r.stdout:
                return r.stdout
    pytest.skip(f"no disassembler for {arch} (install llvm or binutils-{arch}-linux-gnu)")


NEON = {"aarch64": re.compile(r"\bf(mla|add|mul|max)\s+v\d+\.4s"),
        "arm": re.compile(r"\bv(mla|fma|add|mul|max)\.f32\s+q\d+")}


@pytest.mark.parametrize("target", list(CROSS))
def test_cross_build_elf(build, target):
    arch, bits, *_ = CROSS[target]
    for model in MODELS:
        d = build(model, target)
        info = read_elf(str(d / "libmodel.so"))
        assert info.arch == arch and info.elf_class == bits and info.type == 3
        assert info.needed == [], info.needed
        assert info.undefined_symbols() == []
        obj = read_elf(_archive_member(d / "libmodel.a"))     # the static library's object
        assert obj.type == 1 and obj.undefined_symbols(dynamic=False) == []
        if arch == "arm":
            # androideabi: soft-float procedure calls (NEON inside); gnueabihf: hard-float
            assert info.arm_float_abi == ("soft" if "android" in target else "hard")
            assert info.flags >> 24 == 5          # EABI version 5
        meta = json.loads((d / "metadata.json").read_text())
        assert meta["target"]["name"] == target
        assert meta["target"]["gemm_isa"] == "neon"
        text = _disassemble(d / "libmodel.so", arch)
        n = len(NEON[arch].findall(text))
        assert n > 50, f"{target}/{model}: only {n} NEON float vector instructions"


def _archive_member(path: Path) -> bytes:
    data = path.read_bytes()
    assert data[:8] == b"!<arch>\n"
    pos = 8
    while pos < len(data):
        name = data[pos: pos + 16].decode().strip()
        size = int(data[pos + 48: pos + 58])
        body = data[pos + 60: pos + 60 + size]
        if name != "/":
            return body
        pos += 60 + size + (size & 1)
    raise AssertionError("no member in archive")


@pytest.mark.parametrize("target", list(CROSS))
def test_cross_run_under_qemu(build, driver, target, tmp_path):
    _arch, _bits, cc, qemu, sysroot = CROSS[target]
    need(cc, qemu)
    if not Path(sysroot).is_dir():
        pytest.skip(f"{sysroot} missing (install: {INSTALL})")
    exe = driver(cc)
    for model in MODELS:
        lib = build(model, target) / "libmodel.so"
        if target == "armv7a-linux-androideabi":
            # Debian's armhf loader refuses soft-float-ABI libraries; the C ABI passes no
            # floats, so the same code runs once the ELF header says hard-float
            lib = _as_hard_float(lib, tmp_path)
        y = run_driver([qemu, "-L", sysroot, str(exe)], lib, MODELS[model][2], tmp_path,
                       "--threads", "2")
        np.testing.assert_allclose(y, MODELS[model][3], **TOL)


def _as_hard_float(lib: Path, tmp: Path) -> Path:
    b = bytearray(lib.read_bytes())
    (flags,) = struct.unpack_from("<I", b, 36)
    struct.pack_into("<I", b, 36, (flags & ~0x200) | 0x400)
    out = tmp / "hf" / "libmodel.so"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(bytes(b))
    return out


# ---------------------------------------------------------------------------------------------
# front doors: mx.compile, mxc compile / mxc run
# ---------------------------------------------------------------------------------------------

def test_mx_compile_symbol_and_ndarrays(tmp_path):
    import mxc as mx
    import mxc.runtime as rt
    from mxc.compiler.model import load_params

    need_lld()
    sym, params, x, want = MODELS["lenet"]
    s = mx.sym.load(str(sym))
    arg, aux = load_params(params)
    art = mx.compile(s, {k: mx.nd.array(v) for k, v in arg.items()}, aux, {"data": x.shape},
                     "host", "lenet_model", out_dir=tmp_path / "art")
    assert art.metadata["prefix"] == "lenet_model"
    np.testing.assert_allclose(rt.load(art.path)(x)[0], want, **TOL)


def test_cli_compile_and_run_gluon_pair(tmp_path):
    from click.testing import CliRunner

    from mxc.cli.main import main

    need_lld()
    sym, _params, x, want = MODELS["lenet"]
    out = tmp_path / "art"
    r = CliRunner().invoke(main, ["compile", str(sym), "--shape", "data=4,1,28,28",
                                  "-o", str(out), "--prefix", "lenet"])
    assert r.exit_code == 0, r.output
    assert "workspace" in r.output and (out / "libmodel.so").exists()
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(main, ["run", str(out), "--input", f"data={tmp_path / 'x.npy'}",
                                  "--output", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, **TOL)
    r = CliRunner().invoke(main, ["compile", str(sym), "--shape", "data=4,1,28,28",
                                  "-o", str(out), "--target", "pdp11"])
    assert r.exit_code != 0 and "aarch64-linux-gnu" in r.output
    r = CliRunner().invoke(main, ["compile", "--list-targets"])
    assert r.exit_code == 0 and "armv7a-linux-androideabi" in r.output
