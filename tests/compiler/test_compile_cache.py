"""The whole-program cache (``compile_graph(cache=True)``, used by ``CompiledModel``): a hit
gives the same program and outputs without lowering, damaged or inconsistent entries are
rebuilt, the key follows everything the program depends on (and not parameter values), and a
cached program is mapped without LLVM where the host supports prelinked images."""
from __future__ import annotations

import ctypes
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mxc as mx
from mxc.codegen import jit
from mxc.compiler import build
from mxc.compiler.build import compile_graph, program_key
from mxc.compiler.model import CompiledModel

V = mx.sym.Variable
RNG = np.random.default_rng(11)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("MXC_CACHE_DIR", str(d))
    monkeypatch.delenv("MXC_PROGRAM_CACHE", raising=False)
    return d


def _programs(d) -> list:
    return sorted((d / "programs").glob("*/*.prog"))


_KEEP: list = []   # code dropped from jit's memory cache stays mapped (calls may point into it)


def _forget(path) -> None:
    """Make this process map a cached program's code again (its key is the file name)."""
    _KEEP.append(jit._memory_cache.pop(path.stem, None))


def _net():
    """conv -> BatchNorm (folded) -> relu -> pooling -> FC -> softmax (every node named: the
    names are part of the key)."""
    x = V("data")
    c = mx.sym.Convolution(x, V("w"), V("b"), kernel=(3, 3), pad=(1, 1), num_filter=8,
                           name="c")
    bn = mx.sym.BatchNorm(c, V("g"), V("be"), V("mm"), V("mv"), fix_gamma=False, name="bn")
    p = mx.sym.Pooling(mx.sym.relu(bn, name="r"), kernel=(2, 2), stride=(2, 2),
                       pool_type="max", name="p")
    fc = mx.sym.FullyConnected(mx.sym.flatten(p, name="f"), V("fw"), V("fb"), num_hidden=5,
                               name="fc")
    return mx.sym.softmax(fc, name="sm")


def _params(seed=0):
    r = np.random.default_rng(seed)
    f32 = np.float32
    arg = {"w": r.standard_normal((8, 3, 3, 3)).astype(f32),
           "b": r.standard_normal(8).astype(f32),
           "g": r.uniform(0.5, 2, 8).astype(f32), "be": r.standard_normal(8).astype(f32),
           "fw": r.standard_normal((5, 8 * 4 * 4)).astype(f32) * f32(0.1),
           "fb": r.standard_normal(5).astype(f32)}
    aux = {"mm": r.standard_normal(8).astype(f32), "mv": r.uniform(0.5, 2, 8).astype(f32)}
    return arg, aux


def _model(arg, aux, batch=2):
    graph = _net()._graph()
    return CompiledModel(graph, arg, aux, {"data": (batch, 3, 8, 8)})


def _reference(arg, aux, x):
    """The same model without folding and without the program cache."""
    old = os.environ.get("MXC_PROGRAM_CACHE")
    os.environ["MXC_PROGRAM_CACHE"] = "0"
    try:
        m = CompiledModel(_net()._graph(), arg, aux, {"data": x.shape}, fold=False)
        return m(data=x)[0]
    finally:
        if old is None:
            del os.environ["MXC_PROGRAM_CACHE"]
        else:
            os.environ["MXC_PROGRAM_CACHE"] = old


# ---------------------------------------------------------------------------------------------
# hits and misses
# ---------------------------------------------------------------------------------------------
def test_hit_gives_the_same_program_and_outputs(cache):
    arg, aux = _params()
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    m1 = _model(arg, aux)
    assert not m1.compiled.from_cache and len(_programs(cache)) == 1
    y1 = m1(data=x)[0]
    hits = jit.STATS.get("program_hits", 0)
    m2 = _model(arg, aux)
    assert m2.compiled.from_cache and jit.STATS["program_hits"] == hits + 1
    np.testing.assert_array_equal(m2(data=x)[0], y1)
    np.testing.assert_allclose(y1, _reference(arg, aux, x), rtol=1e-4, atol=1e-6)
    p1, p2 = m1.compiled.program, m2.compiled.program
    assert [(c.name, c.slots, c.offsets, c.n_tasks, c.scratch_bytes, c.node)
            for c in p1.calls] == [(c.name, c.slots, c.offsets, c.n_tasks, c.scratch_bytes,
                                    c.node) for c in p2.calls]
    assert [(s.nbytes, s.kind, s.name) for s in p1.slots] == \
        [(s.nbytes, s.kind, s.name) for s in p2.slots]
    assert (p1.sections, p1.arena_offsets, p1.arena_bytes, p1.poison) == \
        (p2.sections, p2.arena_offsets, p2.arena_bytes, p2.poison)
    c1, c2 = m1.compiled, m2.compiled
    assert c1.var_slots == c2.var_slots and c1.head_slots == c2.head_slots
    assert c1.kernels_unfused == c2.kernels_unfused and c1.fused_groups == c2.fused_groups
    assert c1.memory.summary() == c2.memory.summary()
    # entry slots are keyed by each process's node uids: same slots for the same positions
    pos1 = {n.uid: i for i, n in enumerate(c1.graph.nodes)}
    pos2 = {n.uid: i for i, n in enumerate(c2.graph.nodes)}
    assert {(pos1[u], i): s for (u, i), s in c1.entry_slot.items()} == \
        {(pos2[u], i): s for (u, i), s in c2.entry_slot.items()}


def test_cached_program_recomputes_kernels_and_ir_on_demand(cache):
    arg, aux = _params()
    m1 = _model(arg, aux)
    m2 = _model(arg, aux)
    c1, c2 = m1.compiled, m2.compiled
    assert c2.from_cache and c2._kernels is None          # nothing lowered for the hit
    assert [(k.node, k.slots) for k in c2.kernels] == [(k.node, k.slots) for k in c1.kernels]
    assert c2.modules == c1.modules and c2.llvm_ir == c1.llvm_ir and c2.llvm_ir


def test_parameter_values_are_not_part_of_the_key(cache):
    """Same structure, other weights: a hit whose folded weights are this model's own."""
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    a1, x1 = _params(1)
    a2, x2 = _params(2)
    m1 = _model(a1, x1)
    m2 = _model(a2, x2)
    assert not m1.compiled.from_cache and m2.compiled.from_cache
    assert len(_programs(cache)) == 1
    np.testing.assert_allclose(m2(data=x)[0], _reference(a2, x2, x), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m1(data=x)[0], _reference(a1, x1, x), rtol=1e-4, atol=1e-6)


def test_model_does_not_alias_the_callers_arrays(cache):
    arg, aux = _params(3)
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    m = _model(arg, aux)
    y = m(data=x)[0]
    for a in list(arg.values()) + list(aux.values()):
        a[...] = 0                           # the caller reuses its arrays
    np.testing.assert_array_equal(m(data=x)[0], y)


def test_other_shapes_miss(cache):
    arg, aux = _params()
    _model(arg, aux, batch=2)
    m = _model(arg, aux, batch=3)
    assert not m.compiled.from_cache and len(_programs(cache)) == 2
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(m(data=x)[0], _reference(arg, aux, x), rtol=1e-4, atol=1e-6)


def test_program_cache_off(cache, monkeypatch):
    monkeypatch.setenv("MXC_PROGRAM_CACHE", "0")
    arg, aux = _params()
    _model(arg, aux)
    assert not _model(arg, aux).compiled.from_cache and not _programs(cache)


def test_unwritable_cache_only_costs_compile_time(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("MXC_CACHE_DIR", str(blocker))
    arg, aux = _params(4)
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    m = _model(arg, aux)
    assert not m.compiled.from_cache
    np.testing.assert_allclose(m(data=x)[0], _reference(arg, aux, x), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the key
# ---------------------------------------------------------------------------------------------
def _key(sym=None, shapes=None, types=None, **kw):
    g = (sym if sym is not None else _net())._graph()
    return program_key(g, shapes or {"data": (2, 3, 8, 8)}, types, **kw)


def test_key_follows_shapes_types_options_and_environment(monkeypatch):
    for var in build._ENV_SWITCHES:
        monkeypatch.delenv(var, raising=False)
    base = _key()
    assert _key() == base                                   # deterministic, rebuilt graph
    others = [_key(shapes={"data": (3, 3, 8, 8)}),
              _key(types={"data": "float64"}),
              _key(fusion=False), _key(plan_memory=False), _key(is_train=True),
              _key(grad_req={"w": "write"}), _key(grad_req={"w": "add"}),
              _key(retain_graph=True)]
    monkeypatch.setenv("MXNET_USE_FUSION", "0")
    others.append(_key())
    monkeypatch.delenv("MXNET_USE_FUSION")
    monkeypatch.setenv("MXNET_EXEC_ENABLE_INPLACE", "0")
    others.append(_key())
    monkeypatch.delenv("MXNET_EXEC_ENABLE_INPLACE")
    monkeypatch.setenv("NNVM_EXEC_MATCH_RANGE", "0")
    others.append(_key())
    monkeypatch.delenv("NNVM_EXEC_MATCH_RANGE")
    monkeypatch.setenv("MXC_PLAN_MEMORY", "0")
    others.append(_key())
    monkeypatch.delenv("MXC_PLAN_MEMORY")
    assert base not in others and len(set(others)) == len(others)
    assert _key(grad_req={"w": "null"}) == base             # 'null' asks for nothing
    assert _key(types={"data": np.float32}) == _key(types={"data": "float32"})


def test_key_follows_graph_structure_attributes_and_names():
    x = V("data")
    a = mx.sym.Activation(x, act_type="relu", name="act")
    b = mx.sym.Activation(x, act_type="tanh", name="act")
    c = mx.sym.Activation(x, act_type="relu", name="act2")
    d = mx.sym.relu(mx.sym.Activation(x, act_type="relu", name="act"), name="r")
    keys = {_key(s, {"data": (4, 5)}) for s in (a, b, c, d)}
    assert len(keys) == 4
    assert _key(a, {"data": (4, 5)}) == _key(mx.sym.Activation(V("data"), act_type="relu",
                                                                name="act"), {"data": (4, 5)})


def test_key_follows_the_compiler_sources(monkeypatch):
    base = _key()
    monkeypatch.setattr(build, "_fingerprint", "edited sources")
    assert _key() != base


# ---------------------------------------------------------------------------------------------
# damaged and inconsistent entries
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "flipped", "bad_magic"])
def test_damaged_entry_is_rebuilt(damage, cache):
    arg, aux = _params()
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = _model(arg, aux)(data=x)[0]
    (path,) = _programs(cache)
    good = path.read_bytes()
    bad = {"garbage": bytes(range(256)) * 8, "truncated": good[: len(good) // 2],
           "empty": b"", "flipped": good[:100] + bytes([good[100] ^ 1]) + good[101:],
           "bad_magic": b"XXXXXXXX" + good[8:]}[damage]
    path.write_bytes(bad)
    m = _model(arg, aux)
    assert not m.compiled.from_cache
    np.testing.assert_array_equal(m(data=x)[0], y)
    # rebuilt and stored again (equal content; pickle's sharing of equal objects may differ)
    assert pickle.loads(jit.read_entry(path)[8:]) == pickle.loads(good[8:-32])
    assert _model(arg, aux).compiled.from_cache


def _rewrite(path, edit) -> None:
    """Change an entry's payload and store it with a valid checksum."""
    data = jit.read_entry(path)
    payload = pickle.loads(data[8:])
    edit(payload)
    jit.write_entry(path, data[:8] + pickle.dumps(payload))


@pytest.mark.parametrize("edit", [
    lambda p: p.update(key="0" * 64),
    lambda p: p.update(format=-1),
    lambda p: p.update(n_nodes=p["n_nodes"] + 1),
    lambda p: p["calls"].__setitem__(0, (p["calls"][0][0], [10 ** 6] * len(p["calls"][0][1]),
                                         *p["calls"][0][2:])),
    lambda p: p["calls"].__setitem__(0, ("no_such_function", *p["calls"][0][1:])),
    lambda p: p.update(head_slots=[-1]),
    lambda p: p.update(entry_slot=[(-1, 0, 0)]),
    lambda p: p.update(var_slots={}),
    lambda p: p.update(sections={"forward": (0, 10 ** 6)}),
    lambda p: p.update(image={"arch": p["image"]["arch"] if p["image"] else "x",
                              "code": b"", "relocs": [(10 ** 6, 0)], "symbols": {}},
                       objects=[b"not an object"]),
    lambda p: p.update(calls=object()),
], ids=["key", "format", "nodes", "slot", "function", "head", "entry", "vars", "section",
        "code", "type"])
def test_inconsistent_entry_is_a_miss(edit, cache):
    arg, aux = _params()
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = _model(arg, aux)(data=x)[0]
    (path,) = _programs(cache)
    _forget(path)                # map the code again (the damaged image/objects are read)
    try:
        _rewrite(path, edit)
    except pickle.PicklingError:
        pytest.skip("payload cannot hold this edit")
    m = _model(arg, aux)
    assert not m.compiled.from_cache
    np.testing.assert_array_equal(m(data=x)[0], y)


def test_entry_that_names_a_class_is_refused(cache):
    """Entries are plain data: unpickling never imports or calls anything."""
    arg, aux = _params()
    _model(arg, aux)
    (path,) = _programs(cache)
    data = jit.read_entry(path)
    jit.write_entry(path, data[:8] + pickle.dumps({"format": 1, "x": ctypes.c_int(1)}))
    assert not _model(arg, aux).compiled.from_cache


# ---------------------------------------------------------------------------------------------
# training graphs, the objects fallback and fresh processes
# ---------------------------------------------------------------------------------------------
def _train_run(cg, x, w, hg):
    p = cg.program.clone()
    p.allocate()

    def view(slot, shape):
        return p.storage[slot][: int(np.prod(shape)) * 4].view(np.float32).reshape(shape)

    view(cg.var_slots["data"], x.shape)[...] = x
    view(cg.var_slots["w"], w.shape)[...] = w
    view(cg.head_grad_slots[0], hg.shape)[...] = hg
    p.run("forward")
    p.run("backward")
    return (view(cg.head_slots[0], hg.shape).copy(),
            view(cg.grad_slots["w"], w.shape).copy(), view(cg.grad_slots["data"], x.shape).copy())


def test_training_graph_hit(cache):
    sym = mx.sym.tanh(mx.sym.FullyConnected(V("data"), V("w"), num_hidden=6, no_bias=True,
                                            name="fc"), name="t")
    shapes = {"data": (4, 5), "w": (6, 5)}
    req = {"data": "write", "w": "write"}
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    w = RNG.standard_normal((6, 5)).astype(np.float32)
    hg = RNG.standard_normal((4, 6)).astype(np.float32)
    c1 = compile_graph(sym._graph(), shapes, is_train=True, grad_req=req, cache=True)
    c2 = compile_graph(sym._graph(), shapes, is_train=True, grad_req=req, cache=True)
    assert not c1.from_cache and c2.from_cache
    assert c1.head_grad_slots == c2.head_grad_slots and c1.grad_slots == c2.grad_slots
    assert c1.program.sections == c2.program.sections
    for a, b in zip(_train_run(c1, x, w, hg), _train_run(c2, x, w, hg)):
        np.testing.assert_array_equal(a, b)
    y = np.tanh(x @ w.T)
    np.testing.assert_allclose(_train_run(c2, x, w, hg)[1], ((1 - y * y) * hg).T @ x,
                               rtol=1e-4, atol=1e-5)


def test_objects_are_mapped_with_mcjit_without_an_image(cache, monkeypatch):
    arg, aux = _params(5)
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = _model(arg, aux)(data=x)[0]
    (path,) = _programs(cache)
    _forget(path)
    monkeypatch.setattr(jit, "image_supported", lambda: False)
    m = _model(arg, aux)
    assert m.compiled.from_cache and isinstance(m.compiled.program.owner, jit.CompiledModule)
    np.testing.assert_array_equal(m(data=x)[0], y)


@pytest.mark.skipif(not jit.image_supported(), reason="prelinked images: x86-64 Linux only")
def test_link_and_map_image_matches_mcjit(cache):
    from mxc.codegen.llvm_render import render_modules
    from mxc.compiler.schedule import schedule
    from mxc.ir import kernel as K
    from mxc.ir.dtypes import as_dtype

    n = 37
    bx, bo = K.Buffer("x", as_dtype("float32"), n), K.Buffer("o", as_dtype("float32"), n)
    X = K.TensorRef(bx, (n,))
    ks = [schedule(K.compute(K.TensorRef(bo, (n,)),
                             lambda i, c=c: K.call("exp", X[i]) * K.const(c, "float32")),
                   "__K__", [bx, bo]) for c in (1.5, 2.5)]
    mods, names = render_modules(ks)
    objs = []
    cm = jit.compile_modules(mods, objs)
    image = jit.link_image(objs, list(dict.fromkeys(names)))
    assert image is not None and image["relocs"]          # constants: absolute relocations
    mi = jit.map_image(image, "test-image-" + names[0])
    x = RNG.standard_normal(n).astype(np.float32)
    for name in set(names):
        a, b = np.zeros(n, np.float32), np.zeros(n, np.float32)
        cm.functions[name](0, 1, (ctypes.c_void_p * 2)(x.ctypes.data, a.ctypes.data), None)
        mi.functions[name](0, 1, (ctypes.c_void_p * 2)(x.ctypes.data, b.ctypes.data), None)
        np.testing.assert_array_equal(a, b)
    assert jit.link_image([b"not an object"], names) is None
    assert jit.link_image(objs, ["missing_function"]) is None


_FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np
    from mxc.compiler.model import CompiledModel, load_model
    d = sys.argv[1]
    g, arg, aux = load_model(d + "/lenet-symbol.json", d + "/lenet-0000.params")
    x = np.load(d + "/in_data.npy")
    m = CompiledModel(g, arg, aux, {"data": x.shape})
    y = m(data=x)[0]
    print(json.dumps({"from_cache": m.compiled.from_cache, "y": y.tolist(),
                      "llvm": "llvmlite.binding" in sys.modules,
                      "owner": type(m.compiled.program.owner).__name__}))
""")


def test_fresh_process_maps_the_cached_program(cache):
    lenet = os.path.join(ROOT, "mxc", "models", "lenet")
    env = dict(os.environ, MXC_CACHE_DIR=str(cache),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    outs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", _FRESH, lenet], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
        assert p.returncode == 0, p.stderr[-3000:]
        outs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    cold, warm = outs
    assert not cold["from_cache"] and warm["from_cache"]
    assert warm["y"] == cold["y"]
    np.testing.assert_allclose(np.array(warm["y"]), np.load(os.path.join(lenet, "out_0.npy")),
                               rtol=1e-4, atol=1e-5)
    if jit.image_supported():
        assert warm["owner"] == "MappedImage" and not warm["llvm"]   # no LLVM loaded at all


_RELEASE = textwrap.dedent("""
    import numpy as np
    import mxc as mx
    from mxc.codegen import jit
    from mxc.compiler.build import compile_graph

    def run(c):
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        cg = compile_graph(mx.sym.exp(mx.sym.Variable("data") * c, name="e")._graph(),
                           {"data": x.shape})
        p = cg.program.clone()
        p.allocate()
        p.storage[cg.var_slots["data"]][:48].view(np.float32)[:] = x.ravel()
        p.run("forward")
        got = p.storage[cg.head_slots[0]][:48].view(np.float32).reshape(3, 4)
        np.testing.assert_allclose(got, np.exp(x * np.float32(c)), rtol=1e-6)

    run(0.25)
    before = jit.STATS["compiled"]
    jit.release_compiler_memory()         # LLVM's pages dropped ...
    run(0.125)                            # ... and faulted back in by the next compile
    assert jit.STATS["compiled"] > before
    jit.release_compiler_memory()
    jit.release_compiler_memory()
    run(0.0625)
    print("ok")
""")


def test_compiling_after_releasing_the_compiler_memory(tmp_path):
    env = dict(os.environ, MXC_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", _RELEASE], env=env, capture_output=True,
                       text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().endswith("ok")


def test_library_mappings_from_smaps():
    smaps = textwrap.dedent("""\
        7f0000000000-7f0000001000 r--p 00000000 fe:00 1  /x/libllvmlite.so
        Size:                  4 kB
        Anonymous:             0 kB
        Private_Dirty:         0 kB
        VmFlags: rd mr mw me
        7f0000001000-7f0000003000 r-xp 00001000 fe:00 1  /x/libllvmlite.so
        Anonymous:             0 kB
        7f0000003000-7f0000004000 r--p 00003000 fe:00 1  /x/libllvmlite.so
        Anonymous:             4 kB
        Private_Dirty:         4 kB
        7f0000004000-7f0000005000 rw-p 00004000 fe:00 1  /x/libllvmlite.so
        Anonymous:             4 kB
        7f0000005000-7f0000006000 r-xp 00000000 fe:00 2  /x/libother.so
        Anonymous:             0 kB
        """)
    assert jit._library_mappings(smaps, "libllvmlite") == [
        (0x7f0000000000, 0x7f0000001000, True), (0x7f0000001000, 0x7f0000003000, True),
        (0x7f0000003000, 0x7f0000004000, False)]


def test_load_params_reads_through_a_memory_map(tmp_path):
    from mxc.base import MXNetError
    from mxc.compiler.model import load_params
    from mxc.ir.formats import save_nd

    arrays = {"arg:w": RNG.standard_normal((3, 4)).astype(np.float32),
              "aux:m": np.arange(5, dtype=np.int64), "b": np.float64(2.5) * np.ones(2)}
    path = tmp_path / "m.params"
    save_nd(str(path), arrays)
    arg, aux = load_params(path)
    assert set(arg) == {"w", "b"} and set(aux) == {"m"}
    np.testing.assert_array_equal(arg["w"], arrays["arg:w"])
    np.testing.assert_array_equal(aux["m"], arrays["aux:m"])
    arg["w"][...] = 0                      # private, writable copies
    (tmp_path / "empty.params").write_bytes(b"")
    with pytest.raises(MXNetError):
        load_params(tmp_path / "empty.params")
    with pytest.raises(MXNetError, match="missing.params"):
        load_params(tmp_path / "missing.params")
    (tmp_path / "bad.params").write_bytes(path.read_bytes()[:40])
    with pytest.raises(MXNetError, match="bad.params"):
        load_params(tmp_path / "bad.params")
