"""The PTX back end (codegen.ptx), its CPU emulator (codegen.ptx_emu), the GPU build
(compiler.cuda_build) and the CUDA runtime (runtime.cuda).

* PTX of every kernel family (elementwise, broadcast, reductions -- also the shared-memory +
  warp-shuffle ones --, softmax, GEMM with odd sizes/transposes/bias, convolution through
  im2col + GEMM) and of the lenet and mlp models is produced in a subprocess (LLVM aborts the
  process on a bad NVPTX construct) and must be accepted by ``ptxas`` for sm_80 and sm_90;
  skipped when no ptxas is found. The PTX calls no function at all (no libm).
* The same kernels run in the CPU emulation of the GPU (same renderer, emulation hooks, real
  threads for barriers/shuffles, 1-2 blocks of a grid-stride launch) against numpy.
* Launches on a real GPU are marked ``gpu`` and skipped when cuInit fails.

This file is also the script the PTX subprocess runs (``python test_ptx.py OUTDIR``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mxc.codegen import ptx
from mxc.codegen.gemm import GemmSpec
from mxc.compiler.schedule import schedule
from mxc.ir import kernel as K

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
MODELS = Path(__file__).resolve().parents[2] / "mxc" / "models"
RNG = np.random.default_rng(7)
SMS = ("sm_80", "sm_90")

# single-op graphs: (op, [(shape, dtype)], attrs)
OP_CASES = {
    "broadcast_add": ("broadcast_add", [((4, 1, 70), "float32"), ((1, 3, 70), "float32")], {}),
    "tanh_erf": ("erf", [((37, 65), "float32")], {}),
    "exp_f64": ("exp", [((9000,), "float64")], {}),
    "sigmoid_f16": ("sigmoid", [((33, 40), "float16")], {}),
    "mul_int": ("broadcast_mul", [((6, 50), "int32"), ((6, 1), "int32")], {}),
    "sum_last": ("sum", [((64, 1000), "float32")], {"axis": -1}),
    "sum_all": ("sum", [((3, 2000), "float32")], {}),
    "sum_mid": ("sum", [((4, 300, 20), "float32")], {"axis": 1}),
    "sum_first": ("sum", [((500, 300), "float32")], {"axis": 0}),
    "max_pairs": ("max", [((3, 500, 2), "float64")], {"axis": 1}),
    "mean_nchw": ("mean", [((4, 8, 6, 6), "float32")], {"axis": (0, 2, 3)}),
    "max_rows": ("max", [((70, 300), "float32")], {"axis": 1, "keepdims": True}),
    "sum_i64": ("sum", [((5, 400), "int64")], {"axis": 1}),
    "argmax": ("argmax", [((9, 300), "float32")], {"axis": 1}),
    "softmax": ("softmax", [((6, 1000), "float32")], {}),
    "softmax_f64": ("softmax", [((5, 257), "float64")], {}),
    "log_softmax": ("log_softmax", [((64, 10), "float32")], {}),
    "dot": ("dot", [((33, 70), "float32"), ((70, 19), "float32")], {}),
    "dot_tt": ("dot", [((70, 33), "float32"), ((19, 70), "float32")],
               {"transpose_a": True, "transpose_b": True}),
    "batch_dot": ("batch_dot", [((3, 17, 9), "float64"), ((3, 9, 66), "float64")], {}),
    "fc_bias": ("FullyConnected", [((5, 37), "float32"), ((130, 37), "float32"),
                                   ((130,), "float32")], {"num_hidden": 130}),
    "conv": ("Convolution", [((2, 3, 11, 11), "float32"), ((4, 3, 3, 3), "float32"),
                             ((4,), "float32")],
             {"kernel": (3, 3), "pad": (1, 1), "stride": (2, 2), "num_filter": 4}),
    "pool": ("Pooling", [((2, 3, 9, 9), "float32")],
             {"kernel": (3, 3), "stride": (2, 2), "pool_type": "max"}),
}
MODEL_CASES = ("lenet", "mlp")
PTX_ONLY_MODELS = ("resnet18_v1",)   # ptxas only: emulating it takes a minute


def _inputs(case: str) -> list:
    _, ins, _ = OP_CASES[case]
    out = []
    for shape, dt in ins:
        x = RNG.standard_normal(shape) * (3 if dt.startswith("int") else 1)
        out.append(x.astype(dt))
    return out


def _op_graph(case: str):
    from mxc.testing import _graph

    op, ins, attrs = OP_CASES[case]
    graph, vars_, _ = _graph(op, len(ins), attrs)
    shapes = {v.name: s for v, (s, _) in zip(vars_, ins)}
    types = {v.name: d for v, (_, d) in zip(vars_, ins)}
    return graph, vars_, shapes, types


def _model(name: str):
    from mxc.compiler.model import load_model

    d = CASES / name if (CASES / name).is_dir() else MODELS / name
    if not (d / f"{name}-symbol.json").exists():
        return None
    g, arg, aux = load_model(d / f"{name}-symbol.json", d / f"{name}-0000.params")
    x = np.load(d / "in_data.npy")
    ref = np.load(d / "out_0.npy") if (d / "out_0.npy").exists() else None
    params = {**arg, **aux}
    shapes = {"data": x.shape, **{k: v.shape for k, v in params.items()}}
    return g, shapes, params, x, ref


def _kernel_cases() -> dict:
    """Hand-written loop nests: the renderer's mappings outside what ops happen to emit."""
    f32 = K.as_dtype("float32")
    x = K.TensorRef(K.Buffer("x", f32), (300, 3))
    o = K.TensorRef(K.Buffer("o", f32), (300, 3))
    many_rows = schedule(K.compute(o, lambda i, j: K.call("tanh", x[i, j]) * 2.0), "__K__",
                         [x.buf, o.buf])
    # a running sum along j: loop-carried, so it must not be split over threads
    y = K.TensorRef(K.Buffer("y", f32), (4, 200))
    z = K.TensorRef(K.Buffer("z", f32), (4, 200))
    acc = K.Local("%run", f32)
    task, j = K.Var("t"), K.Var("j")
    scan = K.Kernel("__K__", [y.buf, z.buf], task, 4, [
        K.Assign(acc, K.const(0.0, f32)),
        K.For(j, K.const(200, K.INDEX), [
            K.Assign(acc, acc + y[task, j]),
            K.Store(z.buf, z.flat_index((task, j)), acc)], "vector")])
    return {"many_rows": ([many_rows], [[(300, 3), (300, 3)]]),
            "scan": ([scan], [[(4, 200), (4, 200)]])}


def _gemm_specs() -> dict:
    def spec(batch, M, N, Kd, ta=False, tb=False, **kw):
        sa = (M * Kd, 1, M) if ta else (M * Kd, Kd, 1)
        sb = (Kd * N, 1, Kd) if tb else (Kd * N, N, 1)
        return GemmSpec(batch=batch, M=M, N=N, K=Kd, a_strides=sa, b_strides=sb, **kw)
    return {
        "small": (spec(1, 5, 7, 3), False, False),
        "odd": (spec(1, 70, 65, 37), False, False),
        "tt_bias_n": (spec(2, 70, 130, 17, True, True, alpha=0.5, beta=1.0, bias="n",
                           bias_stride_batch=130), True, True),
        "f64_bias_m": (spec(3, 33, 9, 100, False, True, dtype="float64", beta=0.3, bias="m",
                            bias_stride_batch=33), False, True),
        "row": (spec(1, 1, 200, 64, True), True, False),
    }


def _gemm_kernel(name: str):
    s, _, _ = _gemm_specs()[name]
    bufs = [K.Buffer(n, K.as_dtype(s.dtype)) for n in "abcd"[: 4 if s.bias else 3]]
    return ptx.gemm_template(s, bufs)


# ---------------------------------------------------------------------------------------------
# the subprocess: write PTX of every case for every sm
# ---------------------------------------------------------------------------------------------
def _emit_all(outdir: str) -> None:
    from mxc.compiler.cuda_build import compile_graph_cuda

    out = Path(outdir)
    index = {}
    for sm in SMS:
        for case in OP_CASES:
            g, _, shapes, types = _op_graph(case)
            cg = compile_graph_cuda(g, shapes, types, sm=sm)
            p = out / f"op-{case}-{sm}.ptx"
            p.write_text(cg.ptx)
            index[p.name] = [ln.mode for ln in cg.launches]
        for name in MODEL_CASES + PTX_ONLY_MODELS:
            m = _model(name)
            if m is None:
                continue
            cg = compile_graph_cuda(m[0], m[1], sm=sm)
            p = out / f"model-{name}-{sm}.ptx"
            p.write_text(cg.ptx)
            (out / f"model-{name}-{sm}.json").write_text(cg.plan_json())
            index[p.name] = [ln.mode for ln in cg.launches]
        kernels = [_gemm_kernel(n) for n in _gemm_specs()]
        for kc in _kernel_cases().values():
            kernels += kc[0]
        for fast in (False, True):
            p = out / f"kernels-{'fast' if fast else 'exact'}-{sm}.ptx"
            p.write_text(ptx.build_ptx(kernels, sm, fast_math=fast).ptx)
            index[p.name] = []
    (out / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def ptx_dir(tmp_path_factory):
    """The PTX of every case, generated once per test session (also under xdist: workers
    share the directory, the first one generates it under a file lock)."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    d = root / "mxc_ptx_cases"
    d.mkdir(exist_ok=True)
    with open(root / "mxc_ptx_cases.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "index.json").exists():
            env = dict(os.environ, MXC_CACHE_DIR=str(d / "cache"))
            r = subprocess.run([sys.executable, __file__, str(d)], capture_output=True,
                               text=True, env=env, timeout=600, check=False)
            assert r.returncode == 0, \
                f"PTX generation died (rc {r.returncode}):\n{r.stderr[-3000:]}"
    return d


@pytest.fixture(scope="module")
def ptxas():
    exe = ptx.find_ptxas()
    if exe is None:
        pytest.skip("ptxas not found")
    return exe


def _ptx_files(d: Path) -> list:
    return sorted(p for p in d.glob("*.ptx"))


def test_ptx_generated_for_every_case(ptx_dir):
    names = {p.name for p in _ptx_files(ptx_dir)}
    for sm in SMS:
        for case in OP_CASES:
            assert f"op-{case}-{sm}.ptx" in names
        assert f"kernels-exact-{sm}.ptx" in names and f"kernels-fast-{sm}.ptx" in names
    assert any(n.startswith("model-lenet") for n in names)
    if (CASES / "resnet18_v1").is_dir():
        assert "model-resnet18_v1-sm_90.ptx" in names


@pytest.mark.parametrize("sm", SMS)
def test_ptxas_accepts_everything(ptx_dir, ptxas, sm):
    bad = []
    files = [p for p in _ptx_files(ptx_dir) if p.name.endswith(f"-{sm}.ptx")]
    assert files
    for p in files:
        ok, msg = ptx.run_ptxas(p.read_text(), sm, ptxas)
        if not ok:
            bad.append(f"{p.name}: {msg[:400]}")
    assert not bad, "\n".join(bad)


def test_ptx_calls_nothing(ptx_dir):
    """No libm (or any) calls: math is inlined mathlib or NVVM approximations."""
    for p in _ptx_files(ptx_dir):
        text = p.read_text()
        assert ".extern" not in text, p.name
        assert "call.uni" not in text and "\tcall " not in text, p.name
        assert ".entry" in text, p.name
    exact = (ptx_dir / "kernels-exact-sm_80.ptx").read_text()
    fast = (ptx_dir / "kernels-fast-sm_80.ptx").read_text()
    assert "ex2.approx" not in exact and "tanh.approx" not in exact
    assert "tanh.approx.f32" in fast


def test_ptx_uses_shared_memory_and_shuffles(ptx_dir):
    softmax = (ptx_dir / "op-softmax-sm_80.ptx").read_text()
    assert "shfl.sync.bfly" in softmax and "bar.sync" in softmax and ".shared" in softmax
    warp = (ptx_dir / "op-sum_mid-sm_80.ptx").read_text()
    assert "shfl.sync.bfly" in warp
    gemm = (ptx_dir / "op-dot-sm_80.ptx").read_text()
    assert ".shared" in gemm and "bar.sync" in gemm and "fma.rn.f32" in gemm
    plan = json.loads((ptx_dir / "model-lenet-sm_80.json").read_text())
    assert {k["mode"] for k in plan["kernels"]} >= {"gemm"}
    assert plan["sm"] == "sm_80" and plan["kernels"][0]["block"] > 0


# ---------------------------------------------------------------------------------------------
# mapping choices
# ---------------------------------------------------------------------------------------------
def _plan_of(case: str) -> list:
    from mxc.compiler.cuda_build import lower_for_gpu

    g, _, shapes, types = _op_graph(case)
    kernels = [lk.kernel for lk in lower_for_gpu(g, shapes, types).kernels]
    return [(ln.mode, ln.detail, ln.block) for ln in ptx.render_gpu_module(kernels).launches]


def test_mapping_choices():
    modes = {c: _plan_of(c) for c in ("softmax", "sum_last", "sum_all", "sum_mid", "sum_first",
                                      "mean_nchw", "dot", "log_softmax")}
    assert ("row", "j=thread coop=2", 256) in modes["softmax"]        # row max + row sum
    assert modes["sum_last"] == [("row", "j=thread coop=1", 256)]     # a block per row
    assert modes["sum_all"] == [("row", "j=thread coop=1", 256)]      # one block, 6000
    assert modes["mean_nchw"] == [("row", "j=thread coop=1", 256)]    # flattened (N, H*W)
    assert modes["sum_mid"] == [("row", "j=warp coop=1", 256)]        # a warp per output
    assert modes["sum_first"] == [("row", "j=thread coop=0", 256)]    # a thread per column
    assert _plan_of("max_pairs") == [("row", "j=block coop=1", 256)]  # the block per output
    assert modes["dot"][0][0] == "gemm"
    assert modes["log_softmax"][0][0] == "thread"                     # 10-wide rows
    kc = _kernel_cases()
    assert ptx.plan_kernel(kc["many_rows"][0][0]).mode == "thread"
    assert ptx.plan_kernel(kc["scan"][0][0]).mode == "thread"         # loop-carried local


# ---------------------------------------------------------------------------------------------
# emulation: the GPU kernels' semantics on the CPU
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(OP_CASES))
def test_emulated_op_matches_numpy(case):
    from mxc.codegen.ptx_emu import EmuDevice
    from mxc.compiler.cuda_build import compile_graph_cuda
    from mxc.testing import reference

    op, _, attrs = OP_CASES[case]
    g, vars_, shapes, types = _op_graph(case)
    xs = _inputs(case)
    cg = compile_graph_cuda(g, shapes, types, emulate=True)
    outs = cg.run(EmuDevice(), {v.name: x for v, x in zip(vars_, xs)})
    refs = reference(op, xs, attrs)
    for o, r in zip(outs, refs):
        r = np.asarray(r)
        assert o.shape == r.shape
        tol = 2e-3 if o.dtype == np.float16 else 1e-9 if o.dtype == np.float64 else 2e-5
        if o.dtype.kind == "f":
            np.testing.assert_allclose(o.astype(np.float64), r.astype(np.float64), rtol=tol,
                                       atol=tol)
        else:
            np.testing.assert_array_equal(o, r.astype(o.dtype))


@pytest.mark.parametrize("name", list(_gemm_specs()))
def test_emulated_gemm(name):
    from mxc.codegen.ptx_emu import emulate_kernels

    s, ta, tb = _gemm_specs()[name]
    dt = s.dtype
    A = RNG.standard_normal((s.batch, s.K, s.M) if ta else (s.batch, s.M, s.K)).astype(dt)
    B = RNG.standard_normal((s.batch, s.N, s.K) if tb else (s.batch, s.K, s.N)).astype(dt)
    C = RNG.standard_normal((s.batch, s.M, s.N)).astype(dt)
    bias = RNG.standard_normal((s.batch, s.M if s.bias == "m" else s.N)).astype(dt)
    Aop = A.transpose(0, 2, 1) if ta else A
    Bop = B.transpose(0, 2, 1) if tb else B
    ref = s.alpha * (Aop.astype(np.float64) @ Bop) + s.beta * C
    if s.bias == "m":
        ref += bias[:, :, None]
    elif s.bias == "n":
        ref += bias[:, None, :]
    arrays = [A, B, C] + ([bias] if s.bias else [])
    emulate_kernels([_gemm_kernel(name)], [arrays])
    np.testing.assert_allclose(C, ref, rtol=1e-4 if dt == "float32" else 1e-12,
                               atol=1e-4 if dt == "float32" else 1e-12)


@pytest.mark.parametrize("fast", [False, True])
def test_emulated_kernel_cases(fast):
    from mxc.codegen.ptx_emu import emulate_kernels

    kc = _kernel_cases()
    x = RNG.standard_normal((300, 3)).astype(np.float32)
    o = np.zeros_like(x)
    emulate_kernels(kc["many_rows"][0], [[x, o]], fast_math=fast)
    np.testing.assert_allclose(o, np.tanh(x) * 2, rtol=1e-5, atol=1e-6 if not fast else 1e-3)
    y = RNG.standard_normal((4, 200)).astype(np.float32)
    z = np.zeros_like(y)
    emulate_kernels(kc["scan"][0], [[y, z]])
    np.testing.assert_allclose(z, np.cumsum(y, axis=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODEL_CASES)
def test_emulated_model(name):
    from mxc.codegen.ptx_emu import EmuDevice
    from mxc.compiler.cuda_build import compile_graph_cuda

    m = _model(name)
    if m is None:
        pytest.skip(f"model {name} not found")
    g, shapes, params, x, ref = m
    cg = compile_graph_cuda(g, shapes, emulate=True)
    dev = EmuDevice()
    out = cg.run(dev, {"data": x}, params)[0]
    assert dev.launches == sum(1 for ln in cg.launches if ln.grid > 0)
    if ref is not None:
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    plan = cg.launch_plan()
    json.dumps(plan)
    assert plan["kernels"] and all(k["slots"] for k in plan["kernels"])


def test_emulated_training_gradients():
    """A backward section on the GPU path: lenet's parameter gradients match the CPU build."""
    from mxc.codegen.ptx_emu import EmuDevice
    from mxc.compiler.build import compile_graph
    from mxc.compiler.cuda_build import compile_graph_cuda

    m = _model("lenet")
    if m is None:
        pytest.skip("lenet model not found")
    g, shapes, params, x, _ = m
    req = {n: "write" for n in params}
    cpu = compile_graph(g, shapes, grad_req=req)
    gpu = compile_graph_cuda(g, shapes, grad_req=req, emulate=True)
    prog = cpu.program
    prog.allocate()

    def view(slot, shape, dt=np.float32):
        return prog.storage[slot][: int(np.prod(shape)) * 4].view(dt).reshape(shape)

    gp = gpu.program(EmuDevice())
    vals = {**params, "data": x}
    for n, slot in cpu.var_slots.items():
        if n in vals:
            view(slot, vals[n].shape)[...] = vals[n]
            gp.upload(gpu.var_slots[n], vals[n].astype(np.float32))
    out_shape = cpu.shapes[(g.outputs[0].node.uid, 0)]
    hg = RNG.standard_normal(out_shape).astype(np.float32)
    view(cpu.head_grad_slots[0], out_shape)[...] = hg
    gp.upload(gpu.compiled.head_grad_slots[0], hg)
    prog.run("forward")
    prog.run("backward")
    gp.run("forward")
    gp.run("backward")
    for n in params:
        want = view(cpu.grad_slots[n], params[n].shape)
        got = gp.download(gpu.compiled.grad_slots[n], params[n].shape, np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(),
                                   err_msg=n)


# ---------------------------------------------------------------------------------------------
# errors, runtime pieces without a GPU
# ---------------------------------------------------------------------------------------------
def test_bad_target_and_refused_intrinsics():
    from mxc.base import MXNetError
    from mxc.compiler.cuda_build import compile_graph_cuda

    g, _, shapes, types = _op_graph("tanh_erf")
    with pytest.raises(MXNetError, match="presets: sm_75"):
        compile_graph_cuda(g, shapes, types, sm="sm_12")
    with pytest.raises(MXNetError, match="libm"):
        ptx.ir_to_ptx("declare float @llvm.exp.f32(float)\n", "sm_80")


def test_cuda_status_never_raises():
    from mxc.runtime import cuda

    ok, why = cuda.cuda_status()
    assert isinstance(ok, bool) and why
    if not ok:
        assert cuda.device_count() == 0
        with pytest.raises(cuda.CudaUnavailable):
            cuda.get_device(0)


def test_memory_pool_reuses_blocks():
    from mxc.runtime.cuda import CudaError, MemoryPool

    live, freed = {}, []
    nxt = [4096]

    def raw_alloc(n):
        if sum(live.values()) + n > 1 << 20:
            raise CudaError("oom", "CUDA_ERROR_OUT_OF_MEMORY")
        p = nxt[0]
        nxt[0] += n
        live[p] = n
        return p

    def raw_free(p):
        freed.append(p)
        live.pop(p)

    pool = MemoryPool(raw_alloc, raw_free)
    a = pool.alloc(1000)
    pool.free(a)
    assert pool.alloc(1010) == a            # same rounded size: reused
    b = pool.alloc(600_000)
    pool.free(b)
    c = pool.alloc(700_000)                 # out of memory until the cache is released
    assert freed == [b] and c != b
    assert pool.stats()["in_use"] == MemoryPool.rounded(1010) + MemoryPool.rounded(700_000)
    with pytest.raises(CudaError):
        pool.free(12345)


def test_cuda_device_and_program_on_a_fake_driver(monkeypatch):
    """runtime.cuda's driver calls (argument packing, pool, copies, modules) against a fake
    driver that runs the kernels in the emulator: the mlp model end to end."""
    from mxc.compiler.cuda_build import compile_graph_cuda
    from mxc.runtime import cuda

    m = _model("mlp")
    if m is None:
        pytest.skip("mlp model not found")
    g, shapes, params, x, ref = m
    cg = compile_graph_cuda(g, shapes, emulate=True)
    from fake_cuda import FakeCudaDriver  # here: this file also runs as a script

    drv = FakeCudaDriver({cg.ptx: cg.emu_module})
    monkeypatch.setattr(cuda, "_driver", lambda: drv)
    monkeypatch.setattr(cuda, "_status", None)
    monkeypatch.setattr(cuda, "_devices", {})
    assert cuda.cuda_status() == (True, "1 CUDA device(s)")
    dev = cuda.get_device(0)
    assert dev.name == "Fake GPU" and dev.sm == "sm_80"
    out = cg.run(dev, {"data": x}, params)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert drv.launches == len(cg.launches)
    in_use = dev.pool.stats()["in_use"]
    assert in_use == 0 and dev.pool.stats()["cached"] > 0    # program released its storage
    with pytest.raises(cuda.CudaError, match="does not exist"):
        cuda.CudaDevice(3)
    monkeypatch.setattr(cuda, "_status", None)


# ---------------------------------------------------------------------------------------------
# real GPU launches
# ---------------------------------------------------------------------------------------------
def _gpu():
    from mxc.runtime import cuda

    ok, why = cuda.cuda_status()
    if not ok:
        pytest.skip(f"no GPU: {why}")
    return cuda.get_device(0)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(OP_CASES))
def test_gpu_op_matches_numpy(case):
    from mxc.compiler.cuda_build import compile_graph_cuda
    from mxc.testing import reference

    dev = _gpu()
    op, _, attrs = OP_CASES[case]
    g, vars_, shapes, types = _op_graph(case)
    xs = _inputs(case)
    sm = dev.sm if dev.sm in ptx.SM_PRESETS else "sm_80"
    cg = compile_graph_cuda(g, shapes, types, sm=sm)
    outs = cg.run(dev, {v.name: x for v, x in zip(vars_, xs)})
    for o, r in zip(outs, reference(op, xs, attrs)):
        tol = 2e-3 if o.dtype == np.float16 else 1e-9 if o.dtype == np.float64 else 2e-5
        np.testing.assert_allclose(o.astype(np.float64), np.asarray(r, np.float64), rtol=tol,
                                   atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("name", MODEL_CASES)
def test_gpu_model(name):
    from mxc.compiler.cuda_build import compile_graph_cuda

    dev = _gpu()
    m = _model(name)
    if m is None:
        pytest.skip(f"model {name} not found")
    g, shapes, params, x, ref = m
    sm = dev.sm if dev.sm in ptx.SM_PRESETS else "sm_80"
    out = compile_graph_cuda(g, shapes, sm=sm).run(dev, {"data": x}, params)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    _emit_all(sys.argv[1])
