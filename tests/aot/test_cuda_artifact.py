"""GPU artifacts (``mx.compile(..., target="cuda-sm80" | "cuda-sm90")``, ``mxc compile --target
cuda-sm*``): model.ptx + plan.json + weights.bin + model.emu.ll + metadata.json, loaded by
``mxc.runtime.load`` and run through ``runtime.cuda``.

Without a GPU the artifact path is still run for real: on the CPU PTX emulator
(``codegen.ptx_emu.EmuDevice``: the same kernels, 1-2 blocks of each grid-stride launch) and
through ``runtime.cuda.CudaDevice`` on a fake driver whose launches decode ``kernelParams``
as the driver does and run the emulated kernels. The PTX is checked by ptxas when one is
found (skipped otherwise). Tests marked ``gpu`` launch on a real GPU and skip when cuInit
fails. Models: mlp and lenet of ../shared/mxnet_cases (MXNet 1.9.1 reference outputs).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_cuda import FakeCudaDriver

from mxc.base import MXNetError

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT.parent / "shared" / "mxnet_cases"
BUNDLED = ROOT / "mxc" / "models"
TARGETS = {"cuda-sm80": "sm_80", "cuda-sm90": "sm_90"}
TOL = {"rtol": 1e-4, "atol": 1e-5}
FILES = ("model.ptx", "plan.json", "plan.txt", "weights.bin", "model.emu.ll")


def _models() -> dict:
    """name -> (symbol, params, input, reference output, case meta or None)."""
    out = {}
    for name in ("mlp", "lenet"):
        d = CASES / name if (CASES / name / f"{name}-symbol.json").exists() else BUNDLED / name
        if not (d / f"{name}-symbol.json").exists():
            continue
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else None
        out[name] = (d / f"{name}-symbol.json", d / f"{name}-0000.params",
                     np.load(d / "in_data.npy"), np.load(d / "out_0.npy"), meta)
    return out


MODELS = _models()


def model(name: str):
    if name not in MODELS:
        pytest.skip(f"reference model {name} not found (../shared/mxnet_cases)")
    return MODELS[name]


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """build(model, target, **kw) -> artifact directory (built once per session)."""
    from mxc.compiler import aot

    made: dict = {}
    root = tmp_path_factory.mktemp("cuda_artifacts")

    def get(name: str, target: str = "cuda-sm80", **kw) -> Path:
        key = (name, target, tuple(sorted(kw.items())))
        if key not in made:
            sym, params, x, _ref, _meta = model(name)
            out = root / f"{name}-{target}-{len(made)}"
            aot.compile(str(sym), str(params), None, {"data": x.shape}, target=target,
                        out_dir=out, **kw)
            made[key] = out
        return made[key]

    return get


def emu():
    from mxc.codegen.ptx_emu import EmuDevice

    return EmuDevice()


def _meta(d: Path) -> dict:
    return json.loads((d / "metadata.json").read_text())


def _plan(d: Path) -> dict:
    return json.loads((d / "plan.json").read_text())


def _entries(ptx: str) -> dict:
    """kernel name -> number of parameters of its .entry."""
    return {m.group(1): m.group(2).count(".param")
            for m in re.finditer(r"\.entry\s+(\w+)\s*\((.*?)\)", ptx, re.DOTALL)}


# ---------------------------------------------------------------------------------------------
# files, metadata, plan
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_files_metadata_and_plan(build, name, target):
    import mxc
    from mxc.compiler import aot
    from mxc.compiler.model import load_params

    _sym, params, x, ref, case = model(name)
    d = build(name, target)
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES + ("metadata.json",))
    meta, plan = _meta(d), _plan(d)
    sm = TARGETS[target]
    # metadata: the CPU artifacts' keys, backend cuda, the target, checksums of every file
    for k in ("format", "format_version", "mxc_version", "mxnet_version", "prefix", "target",
              "inputs", "outputs", "workspace_bytes", "workspace_alignment", "memory",
              "weights_bytes", "kernels", "files"):
        assert k in meta, k
    assert meta["format"] == "mxc-artifact" and meta["format_version"] == aot.FORMAT_VERSION
    assert meta["mxc_version"] == mxc.__mxc_version__ and meta["backend"] == "cuda"
    t = meta["target"]
    assert (t["name"], t["sm"], t["triple"]) == (target, sm, "nvptx64-nvidia-cuda")
    for f in FILES:
        data = (d / f).read_bytes()
        assert meta["files"][f] == {"bytes": len(data),
                                    "sha256": hashlib.sha256(data).hexdigest()}
    assert meta["inputs"] == [{"name": "data", "shape": list(x.shape), "dtype": "float32",
                               "nbytes": x.nbytes}]
    assert [o["shape"] for o in meta["outputs"]] == [list(ref.shape)]
    if case is not None:   # output names as MXNet's list_outputs spells them
        assert [o["name"] for o in meta["outputs"]] == [o["name"] for o in case["outputs"]]
    assert set(meta["memory"]) >= {"arena_bytes", "scratch_bytes", "naive_bytes", "planned"}
    # plan against metadata
    assert plan["format"] == "mxc-cuda-plan" and plan["version"] == meta["plan_version"]
    assert plan["sm"] == sm and plan["inputs"] == meta["inputs"]
    assert plan["outputs"] == meta["outputs"]
    assert plan["workspace"]["bytes"] == meta["workspace_bytes"]
    assert len(plan["kernels"]) == len(meta["kernels"]) > 0
    # PTX: target, ISA version, every launched kernel an .entry with 2 + len(args) params
    ptx = (d / "model.ptx").read_text()
    assert re.search(rf"^\.target {sm}\b", ptx, re.MULTILINE)
    assert re.search(r"^\.version \d+\.\d+", ptx, re.MULTILINE).group(0).split()[1] == \
        t["ptx_version"]
    entries = _entries(ptx)
    ws, wbytes = plan["workspace"]["bytes"], plan["weights"]["bytes"]
    for k in plan["kernels"]:
        assert entries[k["name"]] == 2 + len(k["args"]), k["name"]
        assert k["param_bytes"] == 8 * (2 + len(k["args"]))
        assert k["grid"] >= 1 and 1 <= k["block"] <= 1024 and k["smem"] < 48 * 1024
        for a in k["args"]:
            r = a["region"]
            if r == "workspace":
                assert 0 <= a["offset"] < ws
            elif r == "weights":
                assert 0 <= a["offset"] < wbytes
            else:
                assert r in ("input", "output") and a["offset"] >= 0
                n = len(plan["inputs"] if r == "input" else plan["outputs"])
                assert 0 <= a["index"] < n
    # the workspace layout of the memory plan: 64-byte aligned, inside the workspace
    for b in plan["workspace"]["buffers"]:
        assert b["offset"] % 64 == 0 and b["offset"] + b["nbytes"] <= ws
    assert plan["workspace"]["arena_bytes"] == meta["memory"]["arena_bytes"] <= ws
    # weights: one blob, 256-byte aligned tensors, exactly the .params values
    arg, aux = load_params(params)
    vals = {**arg, **aux}
    blob = (d / "weights.bin").read_bytes()
    assert len(blob) == wbytes and plan["weights"]["alignment"] == 256
    for w in plan["weights"]["tensors"]:
        assert w["offset"] % 256 == 0
        a = np.frombuffer(blob, w["dtype"], int(np.prod(w["shape"])), w["offset"])
        np.testing.assert_array_equal(a.reshape(w["shape"]), vals[w["name"]])
    assert sum(w["nbytes"] for w in plan["weights"]["tensors"]) == meta["weights_bytes"]
    assert {w["name"] for w in plan["weights"]["tensors"]} == set(vals)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_ptxas_accepts_model_ptx(build, name, target):
    from mxc.codegen import ptx

    exe = ptx.find_ptxas()
    if exe is None:
        pytest.skip("ptxas not found (PATH, $CUDA_HOME/bin or pip nvidia-cuda-nvcc)")
    d = build(name, target)
    ok, msg = ptx.run_ptxas((d / "model.ptx").read_text(), TARGETS[target], exe)
    assert ok, msg


# ---------------------------------------------------------------------------------------------
# running: emulator, runtime.cuda on a fake driver
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_emulator_matches_reference(build, name, target):
    import mxc.runtime as rt
    from mxc.runtime.artifact import CudaArtifactModel

    _sym, _params, x, ref, _ = model(name)
    d = build(name, target)
    m = rt.load(d, device=emu())
    assert isinstance(m, CudaArtifactModel) and m.input_names == ["data"]
    (y,) = m(x)
    np.testing.assert_allclose(y, ref, **TOL)
    out = [np.full(ref.shape, np.nan, np.float32)]
    assert m(data=x, out=out)[0] is out[0]          # by name, into a caller buffer
    np.testing.assert_array_equal(out[0], y)        # a second run (workspace reused)
    assert m.device.launches == 2 * sum(1 for k in _plan(d)["kernels"] if k["grid"] > 0)
    m.close()


def test_emulator_by_name_and_environment(build, monkeypatch):
    import mxc.codegen.ptx_emu  # noqa: F401 - makes device "emulator" resolvable
    import mxc.runtime as rt

    _sym, _params, x, ref, _ = model("mlp")
    d = build("mlp")
    np.testing.assert_allclose(rt.load(d, device="emulator")(x)[0], ref, **TOL)
    monkeypatch.setenv("MXC_CUDA_DEVICE", "emulator")
    m = rt.load(d)
    assert type(m.device).__name__ == "EmuDevice"
    np.testing.assert_allclose(m(x)[0], ref, **TOL)


def test_run_device_on_caller_buffers(build):
    """The C-side contract: caller-owned device input/output buffers and workspace."""
    import mxc.runtime as rt

    _sym, _params, x, ref, _ = model("mlp")
    d = build("mlp")
    dev = emu()
    m = rt.load(d, device=dev)
    xin, yout = dev.alloc(x.nbytes), dev.alloc(ref.nbytes)
    ws = dev.alloc(m.workspace_bytes)
    dev.htod(xin, x)
    m.run_device([xin], [yout], ws)
    dev.synchronize()
    y = np.empty_like(ref)
    dev.dtoh(y, yout)
    np.testing.assert_allclose(y, ref, **TOL)
    with pytest.raises(MXNetError, match="expected 1 input and 1 output pointers"):
        m.run_device([xin, xin], [yout])


def test_output_aliasing_an_input_and_a_weight(tmp_path):
    """copies_out: outputs that are an input or a parameter come from their own regions."""
    import mxc as mx
    import mxc.runtime as rt

    data = mx.sym.Variable("data")
    w = mx.sym.Variable("w")
    y = mx.sym.relu(data * w)
    g = mx.sym.Group([y, data, w])
    x = np.random.default_rng(0).standard_normal((3, 70)).astype(np.float32)
    wv = np.random.default_rng(1).standard_normal((3, 70)).astype(np.float32)
    art = mx.compile(g, {"w": wv}, None, {"data": x.shape}, target="cuda-sm80",
                     out_dir=tmp_path / "a")
    plan = _plan(art.path)
    assert {c["src"]["region"] for c in plan["copies_out"]} >= {"input", "weights"}
    outs = rt.load(art.path, device=emu())(x)
    np.testing.assert_allclose(outs[0], np.maximum(x * wv, 0), rtol=1e-6)
    np.testing.assert_array_equal(outs[1], x)
    np.testing.assert_array_equal(outs[2], wv)


def _fake_cuda(monkeypatch, d: Path, cc=(8, 0)) -> FakeCudaDriver:
    from mxc.codegen.ptx import GPUModule
    from mxc.runtime import cuda

    gm = GPUModule((d / "model.emu.ll").read_text(),
                   sorted({k["name"] for k in _plan(d)["kernels"]}), [], emulate=True)
    drv = FakeCudaDriver({(d / "model.ptx").read_text(): gm}, cc)
    monkeypatch.setattr(cuda, "_driver", lambda: drv)
    monkeypatch.setattr(cuda, "_status", None)
    monkeypatch.setattr(cuda, "_devices", {})
    monkeypatch.delenv("MXC_CUDA_DEVICE", raising=False)
    return drv


def test_runtime_cuda_on_a_fake_driver(build, monkeypatch):
    """The default device path (runtime.cuda.CudaDevice: cuModuleLoadData of model.ptx,
    cuMemAlloc through the pool, copies, cuLaunchKernel argument packing) end to end."""
    import mxc.runtime as rt

    _sym, _params, x, ref, _ = model("lenet")
    d = build("lenet")
    drv = _fake_cuda(monkeypatch, d)
    m = rt.load(d)
    assert type(m.device).__name__ == "CudaDevice" and m.device.sm == "sm_80"
    np.testing.assert_allclose(m(x)[0], ref, **TOL)
    assert drv.launches == len(_plan(d)["kernels"])
    in_use = m.device.pool.stats()["in_use"]
    m.close()
    assert in_use > 0 and m.device.pool.stats()["in_use"] == 0
    # an sm_90 artifact on this (fake) sm_80 GPU: refused before the driver JITs it
    with pytest.raises(MXNetError, match=r"built for sm_90, newer than this GPU \(sm_80\)"):
        rt.load(build("lenet", "cuda-sm90"))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors(build):
    import mxc.runtime as rt

    _sym, _params, x, _ref, _ = model("lenet")
    m = rt.load(build("lenet"), device=emu())
    with pytest.raises(MXNetError, match=r"expected shape \(4, 1, 28, 28\), got \(2, 1, 28, 28\)"):
        m(x[:2])
    with pytest.raises(MXNetError, match="expected dtype float32, got float64"):
        m(x.astype(np.float64))
    with pytest.raises(MXNetError, match=r"expected 1 input\(s\) \['data'\], got 0"):
        m()
    with pytest.raises(MXNetError, match="unknown input"):
        m(image=x)
    with pytest.raises(MXNetError, match="must be a C-contiguous float32 array"):
        m(x, out=[np.empty((4, 10), np.float64)])
    assert m.device.launches == 0        # nothing ran


def _edit_json(p: Path, **kv) -> None:
    d = json.loads(p.read_text())
    d.update(kv)
    p.write_text(json.dumps(d))


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def test_damaged_artifacts_are_clear_errors(build, tmp_path):
    import mxc.runtime as rt

    d = build("mlp")
    cases = [
        ("newer", lambda p: _edit_json(p / "metadata.json", format_version=99),
         "format version 99 is newer than this runtime"),
        ("newer_plan", lambda p: (_edit_json(p / "plan.json", version=7),
                                  _edit_json(p / "metadata.json", files={})),
         "launch plan version 7 is newer than this runtime"),
        ("nometa", lambda p: (p / "metadata.json").unlink(), "no metadata.json"),
        ("noptx", lambda p: (p / "model.ptx").unlink(), "model.ptx is missing"),
        ("noweights", lambda p: (p / "weights.bin").unlink(), "weights.bin is missing"),
        ("noplan", lambda p: (p / "plan.json").unlink(), "plan.json is missing"),
        ("badweights", lambda p: _flip(p / "weights.bin"), "weights.bin is corrupted"),
        ("shortweights", lambda p: (p / "weights.bin").write_bytes(b"\0" * 100),
         "weights.bin is corrupted or truncated"),
        ("badptx", lambda p: _flip(p / "model.ptx"), "model.ptx is corrupted"),
        ("badplan", lambda p: ((p / "plan.json").write_text('{"format": "mxc-cuda-pl'),
                               _edit_json(p / "metadata.json", files={})),
         "plan.json is corrupted: cannot parse"),
        ("mixed", lambda p: (_edit_json(p / "metadata.json", workspace_bytes=1, files={})),
         "does not match"),
        ("noemu", lambda p: (p / "model.emu.ll").unlink(), "model.emu.ll is missing"),
    ]
    for name, mutate, msg in cases:
        c = tmp_path / name
        shutil.copytree(d, c)
        mutate(c)
        with pytest.raises(MXNetError, match=msg):
            rt.load(c, device=emu())


def test_no_driver_says_how_to_run(build, monkeypatch):
    import mxc.runtime as rt
    from mxc.runtime import cuda

    monkeypatch.delenv("MXC_CUDA_DEVICE", raising=False)
    if cuda.is_available():
        pytest.skip("a CUDA device is available")
    with pytest.raises(cuda.CudaUnavailable,
                       match=r"(?s)cannot run the CUDA artifact .*driver.*device='emulator'"):
        rt.load(build("mlp"))
    # the runtime never imports the code generator: "emulator" says what to import
    monkeypatch.delitem(sys.modules, "mxc.codegen.ptx_emu", raising=False)
    with pytest.raises(MXNetError, match="import mxc.codegen.ptx_emu"):
        rt.load(build("mlp"), device="emulator")
    with pytest.raises(MXNetError, match="unknown device 'tpu'"):
        rt.load(build("mlp"), device="tpu")


def test_no_emulation_module(build):
    import mxc.runtime as rt

    d = build("mlp", emulator=False)
    assert not (d / "model.emu.ll").exists() and "model.emu.ll" not in _meta(d)["files"]
    with pytest.raises(MXNetError, match="no CPU emulation module"):
        rt.load(d, device=emu())


def test_bad_gpu_targets(tmp_path):
    from mxc.compiler import aot

    sym, params, x, _ref, _ = model("mlp")
    with pytest.raises(MXNetError, match=r"unknown GPU target 'cuda-sm12'.*cuda-sm80, cuda-sm90"):
        aot.compile(str(sym), str(params), None, {"data": x.shape}, target="cuda-sm12",
                    out_dir=tmp_path / "a")
    with pytest.raises(MXNetError, match="apply to CPU targets"):
        aot.compile(str(sym), str(params), None, {"data": x.shape}, target="cuda-sm80",
                    cpu="znver4", out_dir=tmp_path / "b")


def test_cpu_artifact_takes_no_device(build, tmp_path):
    import mxc.runtime as rt
    from mxc.base import CompileError
    from mxc.compiler import aot

    try:
        aot.find_lld()
    except CompileError as e:
        pytest.skip(str(e))
    sym, params, x, _ref, _ = model("mlp")
    art = aot.compile(str(sym), str(params), None, {"data": x.shape}, out_dir=tmp_path / "c")
    assert art.backend == "cpu"
    with pytest.raises(MXNetError, match="is a CPU artifact"):
        rt.load(art.path, device="emulator")


# ---------------------------------------------------------------------------------------------
# mx.compile and the command line
# ---------------------------------------------------------------------------------------------
def test_mx_compile_symbol_and_ndarrays(tmp_path):
    import mxc as mx
    from mxc.compiler.model import load_params

    sym, params, x, ref, _ = model("lenet")
    arg, aux = load_params(params)
    art = mx.compile(mx.sym.load(str(sym)), {k: mx.nd.array(v) for k, v in arg.items()}, aux,
                     {"data": x.shape}, "cuda-sm90", out_dir=tmp_path / "art", keep_ir=True)
    assert art.backend == "cuda" and art.target.name == "cuda-sm90"
    assert (art.path / "model.ll").exists()            # keep_ir: the NVPTX LLVM IR
    np.testing.assert_allclose(art.load(device=emu())(x)[0], ref, **TOL)


def test_cli_compile_and_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mxc.cli.main import main
    from mxc.runtime import cuda

    monkeypatch.delenv("MXC_CUDA_DEVICE", raising=False)
    sym, params, x, ref, _ = model("mlp")
    out = tmp_path / "art"
    r = CliRunner().invoke(main, ["compile", str(sym), "--params", str(params),
                                  "--shape", "data=" + ",".join(map(str, x.shape)),
                                  "--target", "cuda-sm80", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "model.ptx" in r.output and "sm_80" in r.output and "workspace" in r.output
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(main, ["run", str(out), "--input", f"data={tmp_path / 'x.npy'}",
                                  "--device", "emulator", "--output", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, **TOL)
    if not cuda.is_available():
        r = CliRunner().invoke(main, ["run", str(out), "--input", f"data={tmp_path / 'x.npy'}"])
        assert r.exit_code != 0 and "--device emulator" in r.output
    r = CliRunner().invoke(main, ["compile", "--list-targets"])
    assert r.exit_code == 0 and "cuda-sm80" in r.output and "cuda-sm90" in r.output
    r = CliRunner().invoke(main, ["compile", str(sym), "--shape", "data=8,784", "--target",
                                  "host", "--no-emulator", "-o", str(tmp_path / "h")])
    assert r.exit_code != 0 and "GPU targets" in r.output


# ---------------------------------------------------------------------------------------------
# a real GPU
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_gpu_runs_artifact(build, name, target, monkeypatch):
    import mxc.runtime as rt
    from mxc.runtime import cuda

    ok, why = cuda.cuda_status()
    if not ok:
        pytest.skip(f"no GPU: {why}")
    monkeypatch.delenv("MXC_CUDA_DEVICE", raising=False)
    dev = cuda.get_device(0)
    cc = 10 * dev.compute_capability[0] + dev.compute_capability[1]
    if cc < int(TARGETS[target][3:]):
        pytest.skip(f"{target} needs a newer GPU than {dev.sm}")
    _sym, _params, x, ref, _ = model(name)
    m = rt.load(build(name, target))
    (y,) = m(x)
    np.testing.assert_allclose(y, ref, **TOL)
    np.testing.assert_array_equal(m(x)[0], y)
    # device buffers of the caller
    xin, yout = dev.alloc(x.nbytes), dev.alloc(ref.nbytes)
    dev.htod(xin, x)
    m.run_device([xin], [yout])
    got = np.empty_like(ref)
    dev.dtoh(got, yout)
    np.testing.assert_array_equal(got, y)
    dev.free(xin)
    dev.free(yout)
    m.close()
