"""examples/c/run_cuda.c: GPU artifacts run from C through the CUDA driver API.

The artifact's ``plan.txt`` (the C rendering of ``plan.json``) is parsed here and compared
with ``plan.json`` field by field. ``run_cuda.c`` is compiled with the host C compiler
(skipped without one) and run: without a driver it must say that one is needed; on
``fake_libcuda.c`` (a libcuda.so.1 on host memory that logs every call, found through
LD_LIBRARY_PATH) its launch sequence -- kernel names, grid, block, shared memory, each
parameter as region + offset -- must be the plan's, and the same as what
``runtime.cuda.CudaDevice`` (the Python loader) launches on the same fake driver. The
``gpu`` test runs it on a real GPU against MXNet's outputs and skips without one.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "c"
FAKE_SRC = Path(__file__).resolve().parent / "fake_libcuda.c"
CASES = ROOT.parent / "shared" / "mxnet_cases"
BUNDLED = ROOT / "mxc" / "models"
TOL = {"rtol": 1e-4, "atol": 1e-5}
CFLAGS = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror"]


def model(name: str):
    """(symbol, params, input, reference output) of ../shared/mxnet_cases (or the bundled copy)."""
    for d in (CASES / name, BUNDLED / name):
        if (d / f"{name}-symbol.json").exists():
            return (d / f"{name}-symbol.json", d / f"{name}-0000.params",
                    np.load(d / "in_data.npy"), np.load(d / "out_0.npy"))
    pytest.skip(f"reference model {name} not found (../shared/mxnet_cases)")


def _compiler() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    pytest.skip("no host C compiler (cc, gcc or clang)")


@pytest.fixture(scope="session")
def tools(tmp_path_factory):
    """(run_cuda executable, directory holding the fake libcuda.so.1)."""
    cc = _compiler()
    d = tmp_path_factory.mktemp("run_cuda")
    exe, fake = d / "run_cuda", d / "fake"
    fake.mkdir()
    for cmd in ([cc, *CFLAGS, "-o", str(exe), str(EXAMPLE / "run_cuda.c"), "-ldl"],
                [cc, *CFLAGS, "-shared", "-fPIC", "-o", str(fake / "libcuda.so.1"),
                 str(FAKE_SRC)]):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"   # -Werror: warning-free
    return exe, fake


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """build(name, target) -> artifact directory (once per session)."""
    from mxc.compiler import aot

    root = tmp_path_factory.mktemp("cuda_c_artifacts")
    made: dict = {}

    def get(name: str, target: str = "cuda-sm80") -> Path:
        if (name, target) not in made:
            sym, params, x, _ref = model(name)
            out = root / f"{name}-{target}"
            aot.compile(str(sym), str(params), None, {"data": x.shape}, target=target,
                        out_dir=out)
            made[name, target] = out
        return made[name, target]

    return get


@pytest.fixture(scope="session")
def aliasing(tmp_path_factory):
    """A graph whose plan has an init store (a random op's seed) and copies_out (outputs
    that are an input or a weight): (artifact directory, inputs)."""
    import mxc as mx

    data, g, w = mx.sym.Variable("data"), mx.sym.Variable("g"), mx.sym.Variable("w")
    noise = mx.sym.random.uniform(shape=(3, 70))
    y = mx.sym.relu(data * w) + noise * 0
    upd = mx.sym.sgd_update(weight=data, grad=g, lr=0.5, wd=0.0)
    rng = np.random.default_rng(0)
    wv = rng.standard_normal((3, 70)).astype(np.float32)
    out = tmp_path_factory.mktemp("aliasing") / "a"
    mx.compile(mx.sym.Group([y, upd, data, w]), {"w": wv}, None,
               {"data": (3, 70), "g": (3, 70)}, target="cuda-sm80", out_dir=out)
    xs = [rng.standard_normal((3, 70)).astype(np.float32) for _ in range(2)]
    return out, xs


def _plan(d: Path) -> dict:
    return json.loads((d / "plan.json").read_text())


# ---------------------------------------------------------------------------------------------
# plan.txt
# ---------------------------------------------------------------------------------------------
def _unescape(tok: str) -> str:
    """plan.txt names: %XX is the byte XX."""
    out, i = bytearray(), 0
    while i < len(tok):
        if tok[i] == "%" and i + 3 <= len(tok):
            out.append(int(tok[i + 1:i + 3], 16))
            i += 3
        else:
            out.extend(tok[i].encode())
            i += 1
    return out.decode()


def parse_plan_txt(text: str) -> dict:
    """plan.txt back into plan.json's structure (the fields it carries), as a C reader
    walks it: keyword, values, every list after its count."""
    toks = iter(text.split())

    def kw(want):
        got = next(toks)
        assert got == want, f"expected {want}, found {got}"

    def i():
        return int(next(toks))

    def name():
        return _unescape(next(toks))

    def ref():
        r, idx, off = next(toks), i(), i()
        return {"region": r, "offset": off, **({"index": idx} if r in ("input", "output")
                                                else {})}

    def tensor(word):
        kw(word)
        n, dtype, nbytes, ndim = name(), next(toks), i(), i()
        return {"name": n, "shape": [i() for _ in range(ndim)], "dtype": dtype,
                "nbytes": nbytes}

    def count(word):
        kw(word)
        return i()

    assert next(toks) == "mxc-cuda-plan-text"
    p = {"version": i()}
    kw("sm"), p.update(sm=next(toks))
    kw("ptx"), p.update(ptx=name())
    kw("weights")
    p["weights"] = {"file": name(), "bytes": i()}
    kw("workspace")
    p["workspace"] = {"bytes": i()}
    p["inputs"] = [tensor("input") for _ in range(count("inputs"))]
    p["outputs"] = [tensor("output") for _ in range(count("outputs"))]
    p["init"] = []
    for _ in range(count("init")):
        op, at, value = next(toks), ref(), i()
        p["init"].append({"op": op, **at, "value": value})
    p["copies_in"] = []
    for _ in range(count("copies_in")):
        kw("copy_in")
        p["copies_in"].append({"input": i(), "dst": ref(), "nbytes": i()})
    p["kernels"] = []
    for _ in range(count("kernels")):
        kw("kernel")
        k = {"name": name(), "node": name()}
        for f in ("grid", "block", "smem", "smem_dynamic", "n_tasks", "param_bytes"):
            k[f] = i()
        nargs = i()
        k["args"] = []
        for _ in range(nargs):
            kw("arg")
            k["args"].append(ref())
        p["kernels"].append(k)
    p["copies_out"] = []
    for _ in range(count("copies_out")):
        kw("copy_out")
        p["copies_out"].append({"output": i(), "src": ref(), "nbytes": i()})
    kw("end")
    assert next(toks, None) is None
    return p


def _json_view(plan: dict) -> dict:
    """The fields of plan.json that plan.txt carries."""
    kernels = [{"name": k["name"], "node": k["node"] or "-",
                **{f: k[f] for f in ("grid", "block", "smem", "smem_dynamic", "n_tasks",
                                     "param_bytes", "args")}} for k in plan["kernels"]]
    return {"version": plan["version"], "sm": plan["sm"], "ptx": plan["ptx"],
            "weights": {"file": plan["weights"]["file"], "bytes": plan["weights"]["bytes"]},
            "workspace": {"bytes": plan["workspace"]["bytes"]},
            "inputs": plan["inputs"], "outputs": plan["outputs"], "init": plan["init"],
            "copies_in": plan["copies_in"], "kernels": kernels,
            "copies_out": plan["copies_out"]}


@pytest.mark.parametrize("name,target", [("mlp", "cuda-sm80"), ("lenet", "cuda-sm90")])
def test_plan_txt_matches_plan_json(build, name, target):
    from mxc.compiler import aot

    d = build(name, target)
    plan, text = _plan(d), (d / "plan.txt").read_text()
    got, want = parse_plan_txt(text), _json_view(plan)
    assert got.keys() == want.keys()
    for key in want:                      # field by field, for a readable failure
        if key == "kernels":
            assert len(got[key]) == len(want[key])
            for g, w in zip(got[key], want[key]):
                assert g == w, w["name"]
        else:
            assert got[key] == want[key], key
    # one record per line, and checksummed in metadata.json like the other files
    assert all(ln.split()[0].isidentifier() or ln.startswith("mxc-")
               for ln in text.splitlines())
    data = (d / "plan.txt").read_bytes()
    assert json.loads((d / "metadata.json").read_text())["files"]["plan.txt"] == \
        {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert aot.plan_text(plan) == text


def test_plan_txt_init_copies_and_names(aliasing):
    from mxc.compiler import aot

    d, _xs = aliasing
    plan = _plan(d)
    assert plan["init"] and {c["src"]["region"] for c in plan["copies_out"]} >= \
        {"input", "weights"}
    assert parse_plan_txt((d / "plan.txt").read_text()) == _json_view(plan)
    # names with blanks or '%' stay one token
    assert aot._txt_name("a b%c\td") == "a%20b%25c%09d" and aot._txt_name("") == "%00"
    assert _unescape("a%20b%25c%09d") == "a b%c\td"
    odd = json.loads(json.dumps(plan))
    odd["inputs"][0]["name"] = "my data %1"
    assert parse_plan_txt(aot.plan_text(odd))["inputs"][0]["name"] == "my data %1"


def test_old_artifacts_without_plan_txt_still_load(build, tmp_path):
    """plan.txt is for C; the Python loader reads plan.json and does not need it."""
    import mxc.codegen.ptx_emu as emu
    import mxc.runtime as rt

    _sym, _params, x, ref = model("mlp")
    old = tmp_path / "old"
    shutil.copytree(build("mlp"), old)
    (old / "plan.txt").unlink()
    meta = json.loads((old / "metadata.json").read_text())
    del meta["files"]["plan.txt"]
    (old / "metadata.json").write_text(json.dumps(meta))
    np.testing.assert_allclose(rt.load(old, device=emu.EmuDevice())(x)[0], ref, **TOL)


# ---------------------------------------------------------------------------------------------
# running run_cuda
# ---------------------------------------------------------------------------------------------
def _env(fake: Path | None = None, **kw) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FAKE_CUDA") and k != "LD_LIBRARY_PATH"}
    if fake is not None:
        env["LD_LIBRARY_PATH"] = str(fake)
    env.update({k: str(v) for k, v in kw.items()})
    return env


def run_cuda(tools, args: list, cwd: Path, fake: bool = True, **env):
    exe, fake_dir = tools
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          check=False, cwd=cwd, env=_env(fake_dir if fake else None, **env), timeout=120)


def _save_inputs(tmp: Path, xs: list) -> list:
    paths = []
    for i, x in enumerate(xs):
        paths.append(tmp / f"in{i}.npy")
        np.save(paths[-1], x)
    return paths


def _driver_installed() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def test_without_a_driver_says_one_is_needed(tools, build, tmp_path):
    if _driver_installed():
        pytest.skip("a CUDA driver (libcuda.so.1) is installed here")
    _sym, _params, x, _ref = model("mlp")
    r = run_cuda(tools, [build("mlp"), *_save_inputs(tmp_path, [x])], tmp_path, fake=False)
    assert r.returncode == 3, r.stderr
    assert "no CUDA driver: cannot load libcuda.so.1" in r.stderr
    assert "needs an NVIDIA GPU and its driver" in r.stderr and "--device emulator" in r.stderr
    assert not (tmp_path / "out_0.npy").exists()


def _fnv1a(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _regions(log: list, d: Path, xs: list) -> dict:
    """allocation id -> (region, index), from what the program copied into each: weights.bin,
    input i's bytes; output i is what the i-th download after the last sync reads; the
    workspace is the one allocation left."""
    plan = _plan(d)
    by_hash = {_fnv1a((d / "weights.bin").read_bytes()): ("weights", 0)}
    by_hash.update({_fnv1a(np.ascontiguousarray(x).tobytes()): ("input", i)
                    for i, x in enumerate(xs)})
    assert len(by_hash) == 1 + len(xs), "test inputs must differ from each other"
    ids = {}
    for ev in log:
        if ev[0] == "htod" and ev[2] == "0" and ev[4] in by_hash:
            ids[int(ev[1])] = by_hash[ev[4]]
    last_sync = max(i for i, ev in enumerate(log) if ev[0] == "sync")
    downloads = [ev for ev in log[last_sync:] if ev[0] == "dtoh"]
    assert len(downloads) == len(plan["outputs"])
    for j, ev in enumerate(downloads):
        assert ev[2] == "0" and int(ev[3]) == plan["outputs"][j]["nbytes"]
        ids[int(ev[1])] = ("output", j)
    rest = [int(ev[1]) for ev in log if ev[0] == "alloc" and int(ev[1]) not in ids]
    assert len(rest) == 1, f"allocations not identified: {rest}"
    ids[rest[0]] = ("workspace", 0)
    return ids


def _decode(val: str, ids: dict):
    """A logged parameter: ID:OFF -> (region, index, offset); a plain value -> int."""
    if ":" not in val:
        return int(val)
    a, off = val.split(":")
    return (*ids[int(a)], int(off))


def _launches(log: list, ids: dict) -> list:
    return [(ev[1], *map(int, ev[2:10]), [_decode(v, ids) for v in ev[10:]])
            for ev in log if ev[0] == "launch"]


def _expected_launches(plan: dict) -> list:
    """What docs/deploy.md section 7 says a run launches: name, grid,1,1, block,1,1,
    smem_dynamic, the parameter count, then task_begin, task_end and one address per arg."""
    def arg(a):
        return 0 if a["region"] == "null" else (a["region"], a.get("index", 0), a["offset"])

    return [(k["name"], k["grid"], 1, 1, k["block"], 1, 1, k["smem_dynamic"],
             k["param_bytes"] // 8, [0, k["n_tasks"]] + [arg(a) for a in k["args"]])
            for k in plan["kernels"] if k["n_tasks"] > 0 and k["grid"] > 0]


def _read_log(path: Path) -> list:
    return [ln.split() for ln in path.read_text().splitlines()]


@pytest.mark.parametrize("name,target,cc", [("mlp", "cuda-sm80", 80), ("lenet", "cuda-sm90", 90),
                                            ("lenet", "cuda-sm80", 90)])
def test_launch_sequence_on_a_fake_driver(tools, build, tmp_path, name, target, cc):
    _sym, _params, x, ref = model(name)
    d = build(name, target)
    plan = _plan(d)
    log = tmp_path / "log.txt"
    r = run_cuda(tools, ["--repeat", 2, d, *_save_inputs(tmp_path, [x]), "-o", "y.npy"],
                 tmp_path, FAKE_CUDA_LOG=log, FAKE_CUDA_CC=cc)
    assert r.returncode == 0, r.stderr
    assert f"device 0: Fake GPU (sm_{cc})" in r.stdout and "mean of 2" in r.stdout
    ev = _read_log(log)
    ids = _regions(ev, d, [x])
    # the launches: twice the plan's sequence, exactly as docs/deploy.md describes
    assert _launches(ev, ids) == 2 * _expected_launches(plan)
    # the parameter count the PTX .entry declares is what the plan packs
    for e in ev:
        if e[0] == "function":
            k = next(k for k in plan["kernels"] if k["name"] == e[1])
            assert int(e[2]) == k["param_bytes"] // 8
    # sizes; weights and inputs uploaded once for both runs; synchronized before downloads
    sizes = {int(e[1]): int(e[2]) for e in ev if e[0] == "alloc"}
    for a, (region, i) in ids.items():
        want = {"weights": plan["weights"]["bytes"], "workspace": plan["workspace"]["bytes"],
                "input": plan["inputs"][i]["nbytes"] if region == "input" else 0,
                "output": plan["outputs"][i]["nbytes"] if region == "output" else 0}[region]
        assert sizes[a] == max(want, 1), region
    assert [e[0] for e in ev].count("htod") == 2
    kinds = [e[0] for e in ev]
    assert kinds.index("sync") < kinds.index("dtoh") and kinds.count("sync") == 1
    # everything returned: memory, module, context
    assert sorted(int(e[1]) for e in ev if e[0] == "free") == sorted(sizes)
    assert kinds[-2:] == ["unload", "release"] and "error" not in kinds
    y = np.load(tmp_path / "y.npy")     # the fake runs no kernel: only shape and dtype
    assert y.shape == ref.shape and y.dtype == ref.dtype


def test_init_and_copies_on_a_fake_driver(tools, aliasing, tmp_path):
    """init stores, copies_in and copies_out, in docs/deploy.md's order around the kernels."""
    d, xs = aliasing
    plan = _plan(d)
    art = tmp_path / "art"
    shutil.copytree(d, art)
    # no mxc graph has an input written in place at hand: add a copy_in to the plan
    text = (art / "plan.txt").read_text()
    (art / "plan.txt").write_text(text.replace("copies_in 0\n",
                                               "copies_in 1\ncopy_in 1 workspace 0 0 840\n"))
    log = tmp_path / "log.txt"
    outs = [f"o{j}.npy" for j in range(len(plan["outputs"]))]
    r = run_cuda(tools, [art, *_save_inputs(tmp_path, xs), *[a for o in outs for a in ("-o", o)]],
                 tmp_path, FAKE_CUDA_LOG=log)
    assert r.returncode == 0, r.stderr
    ev = _read_log(log)
    ids = _regions(ev, d, xs)
    alloc_of = {v: k for k, v in ids.items()}
    kinds = [e[0] for e in ev]
    first, last = kinds.index("launch"), len(kinds) - 1 - kinds[::-1].index("launch")
    (init,) = plan["init"]
    store = [e for e in ev[:first] if e[0] == "htod" and e[3] == "8"]
    assert store == [["htod", str(alloc_of["workspace", 0]), str(init["offset"]), "8",
                      _fnv1a(int(init["value"]).to_bytes(8, "little"))]]
    copies = [e for e in ev if e[0] == "dtod"]
    assert copies[0] == ["dtod", str(alloc_of["workspace", 0]), "0",
                         str(alloc_of["input", 1]), "0", "840"]
    assert ev.index(copies[0]) < first
    want_out = []
    for c in plan["copies_out"]:
        src = c["src"]
        a = alloc_of[src["region"], src.get("index", 0)]
        want_out.append(["dtod", str(alloc_of["output", c["output"]]), "0", str(a),
                         str(src["offset"]), str(c["nbytes"])])
    assert copies[1:] == want_out and all(ev.index(c) > last for c in copies[1:])
    assert _launches(ev, ids) == _expected_launches(plan)
    # outputs that are an input and a weight: their values went through the fake's memory
    srcs = {c["output"]: c["src"]["region"] for c in plan["copies_out"]}
    for j, region in srcs.items():
        got = np.load(tmp_path / outs[j])
        if region == "input":
            np.testing.assert_array_equal(got, xs[plan["copies_out"][0]["src"]["index"]])
        else:
            w = plan["weights"]["tensors"][0]
            blob = (d / "weights.bin").read_bytes()
            np.testing.assert_array_equal(
                got, np.frombuffer(blob, np.float32, w["nbytes"] // 4, w["offset"])
                .reshape(w["shape"]))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def _edit(art: Path, old: str, new: str) -> None:
    text = (art / "plan.txt").read_text()
    assert old in text
    (art / "plan.txt").write_text(text.replace(old, new, 1))


def test_clear_errors(tools, build, tmp_path):
    _sym, _params, x, _ref = model("mlp")
    d = build("mlp")
    (xp,) = _save_inputs(tmp_path, [x])
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    np.save(tmp_path / "short.npy", x[:2])
    cases = [  # (args, env, exit status, message)
        ([d, tmp_path / "short.npy"], {}, 2,
         "input 'data' must be float32 of shape (8, 784); "),
        ([d, tmp_path / "x64.npy"], {}, 2, "is float64 of shape (8, 784)"),
        ([d], {}, 2, "the model takes 1 input(s), 0 given: data"),
        ([d, xp, "--bogus"], {}, 2, "usage:"),
        ([tmp_path, xp], {}, 2, "plan.txt is missing"),
        ([d, xp], {"FAKE_CUDA_NO_DEVICE": 1}, 3,
         "cuInit(0) failed: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected"),
        ([d, xp, "--device", 3], {}, 3, "--device 3 does not exist: the driver reports 1"),
        ([build("lenet", "cuda-sm90"), xp], {}, 2, "must be float32 of shape (4, 1, 28, 28)"),
        ([d, xp], {"FAKE_CUDA_FAIL": "cuLaunchKernel:700"}, 1,
         (f"cuLaunchKernel({_plan(d)['kernels'][0]['name']}, node "
          f"{_plan(d)['kernels'][0]['node']}) failed: CUDA_ERROR_ILLEGAL_ADDRESS "
          "(an illegal memory access was encountered, code 700)")),
        ([d, xp], {"FAKE_CUDA_FAIL": "cuModuleLoadData:218"}, 1,
         "the driver could not JIT the PTX"),
        ([d, xp], {"FAKE_CUDA_FAIL": "cuMemAlloc_v2:2"}, 1,
         "cuMemAlloc_v2(weights) failed: CUDA_ERROR_OUT_OF_MEMORY"),
        ([d, xp], {"FAKE_CUDA_FAIL": "cuModuleGetFunction"}, 1,
         f"cuModuleGetFunction({_plan(d)['kernels'][0]['name']}) failed: CUDA_ERROR_UNKNOWN"),
    ]
    for args, env, status, msg in cases:
        r = run_cuda(tools, args, tmp_path, **env)
        assert r.returncode == status and msg in r.stderr, (args, env, r.stderr)
    # an sm_90 artifact on a (fake) sm_80 GPU: refused before the driver JITs it
    sm90 = build("lenet", "cuda-sm90")
    _s, _p, xl, _r = model("lenet")
    np.save(tmp_path / "xl.npy", xl)
    r = run_cuda(tools, [sm90, tmp_path / "xl.npy"], tmp_path, FAKE_CUDA_CC=80)
    assert r.returncode == 2 and "built for sm_90, newer than GPU 0 (Fake GPU, sm_80): " \
        "rebuild it with --target cuda-sm80" in r.stderr
    # damaged plan.txt files
    plan = _plan(d)
    k0 = plan["kernels"][0]
    bad = [
        ("mxc-cuda-plan-text 1", "mxc-cuda-plan-text 2", "plan version 2 is newer than"),
        ("mxc-cuda-plan-text 1", "{", "is not an mxc CUDA launch plan"),
        ("arg weights 0 0\n", f"arg weights 0 {plan['weights']['bytes'] + 8}\n",
         f"kernel {k0['name']}: argument 1 points outside its region"),
        ("arg input 0 0\n", "arg input 1 0\n", "argument 0 points outside"),
        (f" {k0['param_bytes']} 4\n", f" {k0['param_bytes'] + 8} 4\n", "param_bytes 56"),
        ("kernels 5\n", "kernels 6\n", "expected kernel, found 'copies_out'"),
        ("end\n", "", "expected end, found 'end of file'"),
        ("arg workspace 0 0", "arg scratch 0 0", "expected a region"),
    ]
    for i, (old, new, msg) in enumerate(bad):
        art = tmp_path / f"bad{i}"
        shutil.copytree(d, art)
        _edit(art, old, new)
        r = run_cuda(tools, [art, xp], tmp_path)
        assert r.returncode == 2 and msg in r.stderr, (old, new, r.stderr)
    # weights.bin of another size
    art = tmp_path / "shortweights"
    shutil.copytree(d, art)
    (art / "weights.bin").write_bytes(b"\0" * 100)
    r = run_cuda(tools, [art, xp], tmp_path)
    assert r.returncode == 2 and "weights.bin has 100 bytes, plan.txt says" in r.stderr


# ---------------------------------------------------------------------------------------------
# the C example and the Python loader on the same fake driver
# ---------------------------------------------------------------------------------------------
class _CtypesDriver:
    """cuda.bindings.driver's calling convention (results as ``(err, *values)``) over the
    fake libcuda, so ``runtime.cuda.CudaDevice`` runs on the same driver as the C example."""

    class CUdevice_attribute:
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76

    def __init__(self, lib) -> None:
        self.lib = lib

    def _out(self, fn, ctype, *args):
        v = ctype()
        return (fn(ctypes.byref(v), *args), v.value)

    def cuInit(self, f):
        return (self.lib.cuInit(f),)

    def cuDeviceGetCount(self):
        return self._out(self.lib.cuDeviceGetCount, ctypes.c_int)

    def cuDeviceGet(self, i):
        return self._out(self.lib.cuDeviceGet, ctypes.c_int, i)

    def cuDevicePrimaryCtxRetain(self, dev):
        return self._out(self.lib.cuDevicePrimaryCtxRetain, ctypes.c_void_p, dev)

    def cuCtxSetCurrent(self, ctx):
        return (self.lib.cuCtxSetCurrent(ctypes.c_void_p(ctx)),)

    def cuDeviceGetName(self, n, dev):
        buf = ctypes.create_string_buffer(n)
        return (self.lib.cuDeviceGetName(buf, n, dev), buf.raw)

    def cuDeviceGetAttribute(self, attr, dev):
        return self._out(self.lib.cuDeviceGetAttribute, ctypes.c_int, attr, dev)

    def cuStreamCreate(self, flags):
        return (0, 0)                        # the default stream, as run_cuda uses

    def cuStreamSynchronize(self, stream):
        return (self.lib.cuCtxSynchronize(),)

    def cuGetErrorName(self, err):
        s = ctypes.c_char_p()
        return (self.lib.cuGetErrorName(err, ctypes.byref(s)), s.value)

    def cuMemAlloc(self, n):
        return self._out(self.lib.cuMemAlloc_v2, ctypes.c_uint64, ctypes.c_size_t(n))

    def cuMemFree(self, p):
        return (self.lib.cuMemFree_v2(ctypes.c_uint64(p)),)

    def cuMemcpyHtoD(self, dst, src, n):
        return (self.lib.cuMemcpyHtoD_v2(ctypes.c_uint64(dst), ctypes.c_void_p(src),
                                         ctypes.c_size_t(n)),)

    def cuMemcpyDtoH(self, dst, src, n):
        return (self.lib.cuMemcpyDtoH_v2(ctypes.c_void_p(dst), ctypes.c_uint64(src),
                                         ctypes.c_size_t(n)),)

    def cuModuleLoadData(self, image):
        return self._out(self.lib.cuModuleLoadData, ctypes.c_void_p, ctypes.c_char_p(image))

    def cuModuleGetFunction(self, mod, name):
        return self._out(self.lib.cuModuleGetFunction, ctypes.c_void_p, ctypes.c_void_p(mod),
                         ctypes.c_char_p(name))

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        u = ctypes.c_uint
        return (self.lib.cuLaunchKernel(ctypes.c_void_p(f), u(gx), u(gy), u(gz), u(bx), u(by),
                                        u(bz), u(smem), ctypes.c_void_p(stream or None),
                                        ctypes.c_void_p(params), ctypes.c_void_p(extra or None)),)


@pytest.fixture(scope="session")
def inprocess_fake(tools, tmp_path_factory):
    """The fake driver loaded into this process (under another name, so nothing mistakes it
    for a real libcuda.so.1), logging to one file for the session: (driver, log path)."""
    d = tmp_path_factory.mktemp("inprocess_fake")
    so, log = d / "libfakecuda.so", d / "log.txt"
    shutil.copy(tools[1] / "libcuda.so.1", so)
    saved = os.environ.get("FAKE_CUDA_LOG")
    os.environ["FAKE_CUDA_LOG"] = str(log)
    try:
        lib = ctypes.CDLL(str(so))
        assert lib.cuInit(0) == 0              # opens the log while the variable is set
    finally:
        if saved is None:
            del os.environ["FAKE_CUDA_LOG"]
        else:
            os.environ["FAKE_CUDA_LOG"] = saved
    return _CtypesDriver(lib), log


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_c_example_launches_what_the_python_loader_launches(tools, build, inprocess_fake,
                                                            tmp_path, monkeypatch, name):
    import mxc.runtime as rt
    from mxc.runtime import cuda

    drv, pylog = inprocess_fake
    _sym, _params, x, _ref = model(name)
    d = build(name)
    # the Python loader: runtime.cuda.CudaDevice over the fake driver
    monkeypatch.setattr(cuda, "_driver", lambda: drv)
    monkeypatch.setattr(cuda, "_status", None)
    monkeypatch.setattr(cuda, "_devices", {})
    monkeypatch.delenv("MXC_CUDA_DEVICE", raising=False)
    start = len(pylog.read_text().splitlines())
    m = rt.load(d)
    assert type(m.device).__name__ == "CudaDevice"
    m(x)
    py = _read_log(pylog)[start:]
    m.close()
    # the C example
    clog = tmp_path / "log.txt"
    r = run_cuda(tools, [d, *_save_inputs(tmp_path, [x])], tmp_path, FAKE_CUDA_LOG=clog)
    assert r.returncode == 0, r.stderr
    c = _read_log(clog)
    py_launches = _launches(py, _regions(py, d, [x]))
    assert py_launches == _launches(c, _regions(c, d, [x])) == _expected_launches(_plan(d))


# ---------------------------------------------------------------------------------------------
# a real GPU
# ---------------------------------------------------------------------------------------------
def _real_gpu_cc() -> int | None:
    """The compute capability of GPU 0 through libcuda.so.1 (None: no driver or device)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    n, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value < 1:
        return None
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, 0)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, 0)
    return 10 * major.value + minor.value


@pytest.mark.gpu
@pytest.mark.parametrize("target", ["cuda-sm80", "cuda-sm90"])
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_gpu_run_cuda_matches_reference(tools, build, tmp_path, name, target):
    cc = _real_gpu_cc()
    if cc is None:
        pytest.skip("no CUDA driver or GPU")
    if cc < int(target[len("cuda-sm"):]):
        pytest.skip(f"{target} needs a newer GPU than sm_{cc}")
    _sym, _params, x, ref = model(name)
    r = run_cuda(tools, ["--repeat", 3, build(name, target), *_save_inputs(tmp_path, [x]),
                         "-o", "y.npy"], tmp_path, fake=False)
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == ref.shape and y.dtype == ref.dtype
    np.testing.assert_allclose(y, ref, **TOL)
