"""Memory planning (compiler.plan_memory, compiler.reorder, the runtime's arena).

Invariants on random call sequences and on the reference models: no two values alive at the
same call share bytes (checked here independently of the planner's own check, and by running
programs whose freed storage is poisoned with NaN bytes), planned <= naive, lower bound <=
planned; numerics with planning on equal those with planning off; the MXNet port behaves as
PlanMemory does; env knobs; ``mxc inspect --memory``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mxc as mx
from mxc.base import MXNetError
from mxc.cli.main import main
from mxc.compiler import plan_memory as pm
from mxc.compiler.build import compile_graph
from mxc.compiler.model import load_model
from mxc.compiler.reorder import reorder, units_by_node
from mxc.ir.graph import Graph

LENET = Path(__file__).resolve().parents[2] / "mxc" / "models" / "lenet"
CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"


@pytest.fixture(autouse=True)
def _default_knobs(monkeypatch):
    """These tests set the planner's knobs themselves: none may leak in from the shell."""
    for k in ("MXC_PLAN_MEMORY", "MXNET_EXEC_ENABLE_INPLACE", "NNVM_EXEC_MATCH_RANGE",
              "MXC_POISON_MEMORY"):
        monkeypatch.delenv(k, raising=False)


# ---------------------------------------------------------------------------------------------
# an independent overlap checker
# ---------------------------------------------------------------------------------------------
def assert_no_overlap(lv: pm.Liveness, off: dict, inplace: bool = True) -> None:
    """Every pair of slots alive at a common call has disjoint bytes, except an input handing
    its bytes (same offset) to an output at the call where it dies and the output is born."""
    allowed = set()
    if inplace:
        for prs in lv.pairs.values():
            allowed.update(prs)
    s = lv.slots
    for i, a in enumerate(s):
        assert off[a] % pm.ALIGN == 0 and off[a] >= 0
        for b in s[i + 1:]:
            if lv.first[a] > lv.last[b] or lv.first[b] > lv.last[a]:
                continue
            if off[a] + lv.size[a] <= off[b] or off[b] + lv.size[b] <= off[a]:
                continue
            handoff = off[a] == off[b] and (
                ((a, b) in allowed and lv.last[a] == lv.first[b]) or
                ((b, a) in allowed and lv.last[b] == lv.first[a]))
            assert handoff, f"slots {a} and {b} are alive together and overlap"


def every_candidate(lv: pm.Liveness) -> dict:
    out = {}
    singles = [[x] for x in lv.slots]
    for tag, groups in (("single", singles), ("chains", pm.chains(lv)),
                        ("mxnet", pm.mxnet_blocks(lv)),
                        ("mxnet-all", pm.mxnet_blocks(lv, declared_only=False)),
                        ("mxnet-r1", pm.mxnet_blocks(lv, match_range=1))):
        out[f"{tag}-consecutive"] = pm.consecutive(lv, groups)
        for how in pm.ORDERS:
            for fit in ("best", "first"):
                out[f"{tag}-{how}-{fit}"] = pm.pack(lv, groups, how, fit)
    return out


# ---------------------------------------------------------------------------------------------
# random call sequences
# ---------------------------------------------------------------------------------------------
def random_program(seed: int, n_calls: int = 40, n_fwd: int | None = None) -> tuple:
    """Accesses of a random dataflow program: each call reads 1-3 values made earlier and
    writes 1-2 new ones (sizes from 64 B to 64 KiB), sometimes a workspace touched by a few
    consecutive calls; random calls may share an input with an output (declared or not)."""
    rng = random.Random(seed)
    nbytes: list = []
    acc: list = []
    values: list = []
    for k in range(n_calls):
        reads = set(rng.sample(values, min(len(values), rng.randint(1, 3)))) if values else set()
        writes = set()
        for _ in range(rng.randint(1, 2)):
            nbytes.append(rng.choice([64, 100, 256, 4096, 5000, 65536, rng.randint(1, 70000)]))
            writes.add(len(nbytes) - 1)
        values.extend(writes)
        safe = set()
        for i in reads:
            for o in writes:
                if rng.random() < 0.5:
                    safe.add((i, o))
        declared = {p for p in safe if rng.random() < 0.5}
        acc.append(pm.Access(frozenset(reads), frozenset(writes), frozenset(safe),
                             frozenset(declared)))
    return acc, nbytes


@pytest.mark.parametrize("seed", range(25))
def test_random_programs_every_strategy_is_valid(seed):
    acc, nbytes = random_program(seed, n_calls=30 + seed)
    n_fwd = len(acc) // 2 if seed % 2 else None
    for rerun in (False, True):
        lv = pm.liveness(acc, nbytes, range(len(nbytes)), n_fwd, rerun)
        for name, off in every_candidate(lv).items():
            assert_no_overlap(lv, off)
            pm.check(lv, off)
            assert pm.arena_size(lv, off) >= pm.lower_bound(lv), name
        plan = pm.plan_liveness(lv)
        assert_no_overlap(lv, plan.offsets)
        assert plan.lower_bound_bytes <= plan.planned_bytes <= plan.naive_bytes
        assert plan.planned_bytes <= plan.mxnet_bytes <= plan.naive_bytes
        assert plan.planned_bytes <= min(plan.inplace_bytes, plan.sharing_bytes)
        assert plan.arena_bytes == pm.arena_size(lv, plan.offsets)


def test_random_programs_beat_mxnet_somewhere():
    """The arena packings are never worse than MXNet's blocks and are often better."""
    better = 0
    for seed in range(20):
        acc, nbytes = random_program(100 + seed, n_calls=60)
        plan = pm.plan_liveness(pm.liveness(acc, nbytes, range(len(nbytes))))
        better += plan.planned_bytes < plan.mxnet_bytes
    assert better >= 10


def test_check_rejects_overlap():
    acc = [pm.Access(frozenset(), frozenset([0])), pm.Access(frozenset([0]), frozenset([1])),
           pm.Access(frozenset([1]), frozenset([2]))]
    lv = pm.liveness(acc, [256, 256, 256], [0, 1, 2])
    pm.check(lv, {0: 0, 1: 256, 2: 0})          # 2 reuses the bytes of 0, dead after call 1
    with pytest.raises(ValueError, match="overlap"):
        pm.check(lv, {0: 0, 1: 0, 2: 512})      # 0 and 1 are alive together at call 1


def test_lower_bound_counts_a_handoff_once():
    # x (call 0) -> y = f(x) in place at call 1 -> read at call 2
    acc = [pm.Access(frozenset(), frozenset([0])),
           pm.Access(frozenset([0]), frozenset([1]), frozenset([(0, 1)]), frozenset([(0, 1)])),
           pm.Access(frozenset([1]), frozenset([2]))]
    lv = pm.liveness(acc, [1024, 1024, 64], [0, 1, 2])
    assert pm.lower_bound(lv, inplace=True) == 1024 + 64
    assert pm.lower_bound(lv, inplace=False) == 2048
    plan = pm.plan_liveness(lv)
    assert plan.planned_bytes == plan.lower_bound_bytes == 1024 + 64
    assert plan.inplace_pairs == [(0, 1)]
    off = pm.plan_liveness(lv, inplace=False).offsets
    assert off[0] != off[1]


# ---------------------------------------------------------------------------------------------
# MXNet's PlanMemory, ported
# ---------------------------------------------------------------------------------------------
def _chain(sizes, safe=True, declared=True):
    """value i is made by call i from value i-1 (which dies there)."""
    acc = []
    for k in range(len(sizes)):
        reads = frozenset([k - 1]) if k else frozenset()
        pair = frozenset([(k - 1, k)]) if k and safe else frozenset()
        acc.append(pm.Access(reads, frozenset([k]), pair, pair if declared else frozenset()))
    return pm.liveness(acc, sizes, range(len(sizes)))


def test_mxnet_inplace_and_sharing():
    lv = _chain([4096] * 4)
    assert len(pm.mxnet_blocks(lv)) == 1                   # all in place
    # no inplace: outputs are requested before inputs are freed -> two blocks ping-pong
    blocks = pm.mxnet_blocks(lv, inplace=False)
    assert sorted(map(sorted, blocks)) == [[0, 2], [1, 3]]
    assert len(pm.mxnet_blocks(lv, inplace=False, sharing=False)) == 4
    # inplace needs the op's declaration (FInplaceOption) and a safe kernel
    assert len(pm.mxnet_blocks(_chain([4096] * 4, declared=False))) == 2
    assert len(pm.mxnet_blocks(_chain([4096] * 4, safe=False))) == 2


def test_mxnet_match_range_and_growth():
    # 0 (4 KiB) dies at call 1; call 2 asks for 32 KiB: a free block 8x smaller is taken and
    # grown with match range 16, not with match range 4
    acc = [pm.Access(frozenset(), frozenset([0])), pm.Access(frozenset([0]), frozenset([1])),
           pm.Access(frozenset([1]), frozenset([2]))]
    lv = pm.liveness(acc, [4096, 64, 32768], [0, 1, 2])
    b16 = {tuple(sorted(b)) for b in pm.mxnet_blocks(lv, inplace=False, match_range=16)}
    assert (0, 2) in b16
    b4 = {tuple(sorted(b)) for b in pm.mxnet_blocks(lv, inplace=False, match_range=4)}
    assert (0, 2) not in b4
    # best fit among larger blocks first: the smallest free block >= the request
    acc = [pm.Access(frozenset(), frozenset([0, 1])), pm.Access(frozenset([0, 1]),
                                                                frozenset([2])),
           pm.Access(frozenset([2]), frozenset([3]))]
    lv = pm.liveness(acc, [8192, 2048, 64, 1024], range(4))
    b = {tuple(sorted(x)) for x in pm.mxnet_blocks(lv, inplace=False)}
    assert (1, 3) in b


def test_env_knobs(monkeypatch):
    lv = _chain([4096] * 6)
    monkeypatch.setenv("MXNET_EXEC_ENABLE_INPLACE", "0")
    plan = pm.plan_liveness(lv)
    assert not plan.inplace_pairs and plan.planned_bytes == 2 * 4096
    monkeypatch.setenv("MXNET_EXEC_ENABLE_INPLACE", "1")
    monkeypatch.setenv("NNVM_EXEC_MATCH_RANGE", "0")          # sharing off, inplace on
    plan = pm.plan_liveness(lv)
    assert plan.planned_bytes == plan.inplace_bytes == 4096
    monkeypatch.setenv("MXNET_EXEC_ENABLE_INPLACE", "0")
    plan = pm.plan_liveness(lv)
    assert plan.planned_bytes == plan.naive_bytes == 6 * 4096


# ---------------------------------------------------------------------------------------------
# which kernels may run in place
# ---------------------------------------------------------------------------------------------
def _kernels(sym, shapes, **kw):
    cg = compile_graph(Graph(sym._outputs), shapes, codegen=False, fusion=False, **kw)
    slots = cg.program.slots
    return cg, [(lk, a) for lk, a in zip(cg.kernels, pm.kernel_accesses(cg.kernels))], slots


def test_inplace_safety_from_the_kernel_ir():
    x = mx.sym.var("x")
    y = mx.sym.var("y")
    c = mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), pad=(1, 1), name="c")
    bn = mx.sym.BatchNorm(c, name="bn")
    r = mx.sym.Activation(bn, act_type="relu", name="r")
    t = mx.sym.transpose(r, axes=(0, 1, 3, 2), name="t")
    f = mx.sym.flip(t, axis=3, name="f")
    s = mx.sym.softmax(f + mx.sym.broadcast_add(f, y, name="b"), axis=1, name="s")
    _, ks, slots = _kernels(s, {"x": (2, 3, 8, 8), "y": (1, 4, 1, 1)})
    by_node: dict = {}
    for lk, a in ks:
        by_node.setdefault(lk.node, []).append(a)

    def pairs(node):
        return {(slots[i].name, slots[o].name) for a in by_node[node] for i, o in a.safe}

    assert pairs("r") == {("bn_output0", "r_output0")}         # elementwise
    assert ("c_output0", "bn_output0") in pairs("bn")            # per-channel affine
    assert pairs("b") == {("f_output0", "b_output0")}            # broadcast: the big input
    assert not pairs("t") and not pairs("f")                     # moves elements around
    assert not pairs("s")                                        # reads rows before writing
    assert not any(a.safe for lk, a in ks if lk.node == "c")     # im2col + GEMM template


def test_declared_pairs_map_to_slots():
    x = mx.sym.var("x")
    r = mx.sym.Activation(mx.sym.exp(x, name="e"), act_type="relu", name="r")
    cg = compile_graph(Graph(r._outputs), {"x": (4, 4)}, codegen=False)
    assert cg.memory is None                      # one temp only: nothing to plan
    cg = compile_graph(Graph(mx.sym.exp(r, name="z")._outputs), {"x": (4, 4)},
                       codegen=False, fusion=False)
    names = {(cg.program.slots[i].name, cg.program.slots[o].name)
             for i, o in cg.memory.inplace_pairs}
    assert names == {("e_output0", "r_output0")}


# ---------------------------------------------------------------------------------------------
# reordering
# ---------------------------------------------------------------------------------------------
def _deps_kept(acc, order):
    pos = {k: i for i, k in enumerate(order)}
    last_w: dict = {}
    reads: dict = {}
    for k in sorted(order):
        a = acc[k]
        for s in a.reads:
            if s in last_w:
                assert pos[last_w[s]] < pos[k]
        for s in a.writes:
            if s in last_w and last_w[s] != k:
                assert pos[last_w[s]] < pos[k]
            for r in reads.get(s, ()):
                if r != k:
                    assert pos[r] < pos[k]
        for s in a.reads:
            reads.setdefault(s, []).append(k)
        for s in a.writes:
            last_w[s] = k
            reads[s] = []


@pytest.mark.parametrize("seed", range(10))
def test_reorder_keeps_dependencies(seed):
    acc, nbytes = random_program(seed, 50)
    nodes = [f"n{k // 2}" for k in range(len(acc))]      # two calls per node
    units = units_by_node(nodes, 10, len(acc))
    order = reorder(acc, {s: pm.aligned(n) for s, n in enumerate(nbytes)},
                    range(len(nbytes)), units)
    assert sorted(order) == list(range(10, len(acc)))
    for u in units:                                         # a node's calls stay together
        i = order.index(u[0])
        assert order[i:i + len(u)] == u
    _deps_kept(acc, list(range(10)) + order)


def test_reorder_frees_early():
    # backward of 3 layers in depth-first order: all data gradients d1..d3 first, then the
    # weight gradients w1..w3 that read them; reordered, each w_i follows its d_i
    big, small = 1 << 20, 64
    acc = []
    sizes = []

    def new(n):
        sizes.append(n)
        return len(sizes) - 1

    g = new(big)
    acc.append(pm.Access(frozenset(), frozenset([g])))
    ds = [g]
    for _ in range(3):
        d = new(big)
        acc.append(pm.Access(frozenset([ds[-1]]), frozenset([d])))
        ds.append(d)
    for d in ds[:-1]:
        w = new(small)
        acc.append(pm.Access(frozenset([d]), frozenset([w])))
    nodes = [str(k) for k in range(len(acc))]
    order = reorder(acc, {s: pm.aligned(n) for s, n in enumerate(sizes)}, range(len(sizes)),
                    units_by_node(nodes, 0, len(acc)))
    before = pm.lower_bound(pm.liveness(acc, sizes, range(len(sizes))))
    after = pm.lower_bound(pm.liveness([acc[i] for i in order], sizes, range(len(sizes))))
    assert after < before and after <= 2 * big + 3 * 64


# ---------------------------------------------------------------------------------------------
# the reference models: invariants, poisoned runs, numerics on vs off
# ---------------------------------------------------------------------------------------------
def _liveness_of(cg):
    """Liveness of the compiled program, recomputed from its kernels (in their final order)."""
    mem = cg.memory
    lv = pm.liveness(pm.kernel_accesses(cg.kernels), [s.nbytes for s in cg.program.slots],
                     mem.offsets, cg.program.sections["forward"][1], False)
    assert {s: (lv.first[s], lv.last[s]) for s in lv.slots} == mem.intervals
    return lv


def _model(name):
    if name == "lenet":
        return load_model(LENET / "lenet-symbol.json", LENET / "lenet-0000.params"), \
            {"data": (4, 1, 28, 28)}
    d = CASES / name
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    return load_model(d / meta["symbol"], d / meta["params"]), \
        {i["name"]: tuple(i["shape"]) for i in meta["inputs"]}


@pytest.mark.parametrize("name,batch,train", [("lenet", 4, False), ("lenet", 4, True),
                                              ("resnet18_v1", 1, False),
                                              ("resnet18_v1", 2, True),
                                              ("bncnn", 8, True), ("sym_convnet", 4, True)])
def test_model_plans_are_valid(name, batch, train):
    (graph, arg, aux), ins = _model(name)
    shapes = {k: v.shape for k, v in {**arg, **aux}.items()}
    shapes.update({k: (batch,) + tuple(v[1:]) for k, v in ins.items()})
    req = {n: "write" for n in list(arg) + list(ins)} if train else None
    if train and name == "sym_convnet":
        req.pop("softmax_label", None)
    cg = compile_graph(graph, shapes, is_train=train, grad_req=req, codegen=False)
    mem = cg.memory
    assert mem is not None
    assert mem.lower_bound_bytes <= mem.planned_bytes <= mem.mxnet_bytes <= mem.naive_bytes
    assert mem.planned_bytes <= 1.05 * mem.lower_bound_bytes      # close to optimal
    lv = _liveness_of(cg)
    assert_no_overlap(lv, mem.offsets)
    # nothing the caller reads lives in the arena
    for s in cg.head_slots + list(cg.var_slots.values()) + list(cg.grad_slots.values()):
        assert s not in mem.offsets
    assert all(cg.program.slots[s].kind == "temp" for s in mem.offsets)


def _run_case(d, meta, plan: bool, poison: bool):
    """Inference outputs, train-mode outputs, aux after the train forward, gradients."""
    graph, arg, aux = load_model(d / meta["symbol"], d / meta["params"])
    feed = {i["name"]: np.load(d / i["file"]) for i in meta["inputs"]}
    values = {**arg, **aux, **feed}
    shapes = {k: v.shape for k, v in values.items()}
    types = {k: v.dtype.name for k, v in values.items()}
    res = {}
    modes = [(False, None)]
    if "backward" in meta:
        modes.append((True, meta["backward"]["grad_req"]))
    for is_train, req in modes:
        cg = compile_graph(graph, shapes, types, is_train=is_train, grad_req=req,
                           plan_memory=plan)
        assert (cg.memory is not None) == (plan and bool(cg.program.arena_offsets))
        p = cg.program
        p.debug_poison = poison
        p.allocate()
        if plan and cg.memory is not None:
            assert p.arena is not None and p.arena.nbytes == cg.memory.arena_bytes

        def view(slot, key, cg=cg, p=p):
            shape, dt = cg.shapes[key], np.dtype(cg.types[key])
            return p.storage[slot][: int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)

        var = {v.name: (v.uid, 0) for v in graph.variables()}
        for k, v in values.items():
            if k in cg.var_slots:
                view(cg.var_slots[k], var[k])[...] = v
        if is_train:
            hg = meta["backward"].get("head_grads")
            for i, (e, s) in enumerate(zip(graph.outputs, cg.head_grad_slots)):
                view(s, (e.node.uid, e.index))[...] = np.load(d / hg[i]) \
                    if isinstance(hg, list) else 1.0
        p.run("forward")
        tag = "train" if is_train else "infer"
        for i, (e, s) in enumerate(zip(graph.outputs, cg.head_slots)):
            res[f"{tag} out{i}"] = view(s, (e.node.uid, e.index)).copy()
        if is_train:
            for a in aux:
                res[f"aux {a}"] = view(cg.var_slots[a], var[a]).copy()
            p.run("backward")
            for n, s in cg.grad_slots.items():
                res[f"grad {n}"] = view(s, var[n]).copy()
    return res


SYMBOL_CASES = ["sym_mlp", "sym_convnet", "sym_elemwise_ops", "sym_loss_ops",
                "sym_reduce_ops", "sym_reshape_ops", "mlp", "lenet", "bncnn", "resnet18_v1"]


@pytest.mark.parametrize("name", SYMBOL_CASES)
def test_reference_case_numerics_planned_poisoned_vs_unplanned(name):
    d = CASES / name
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    off = _run_case(d, meta, plan=False, poison=False)
    on = _run_case(d, meta, plan=True, poison=True)
    assert set(on) == set(off)
    for k in off:
        a, b = on[k], off[k]
        assert not (np.isnan(a) & ~np.isnan(b)).any(), f"{name} {k}: NaN from poisoned memory"
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=f"{name} {k}")


def test_poison_catches_a_bad_plan():
    """The poison check has teeth: a plan that puts two live values on the same bytes turns
    results into NaN."""
    x = mx.sym.var("x")
    a = mx.sym.exp(x, name="a")
    b = mx.sym.sin(a, name="b")
    c = mx.sym.cos(a, name="c")           # a is still alive while b exists
    y = mx.sym.elemwise_add(b, c, name="y") * 2
    g = Graph(y._outputs)
    cg = compile_graph(g, {"x": (64,)}, fusion=False)
    p = cg.program.clone()
    p.debug_poison = True
    p.allocate()
    xin = np.linspace(-1, 1, 64).astype(np.float32)
    p.storage[cg.var_slots["x"]][:256].view(np.float32)[:] = xin
    p.run("forward")
    good = p.storage[cg.head_slots[0]][:256].view(np.float32).copy()
    np.testing.assert_allclose(good, 2 * (np.sin(np.exp(xin)) + np.cos(np.exp(xin))),
                               rtol=1e-5)
    name = {s.name: i for i, s in enumerate(cg.program.slots)}
    bad = dict(p.arena_offsets)
    bad[name["b_output0"]] = bad[name["a_output0"]]   # b overwrites a before c reads it
    q = cg.program.clone()
    q.arena_offsets = bad
    q.debug_poison = True
    q.allocate()
    q.storage[cg.var_slots["x"]][:256].view(np.float32)[:] = xin
    q.run("forward")
    got = q.storage[cg.head_slots[0]][:256].view(np.float32)
    assert not np.allclose(got, good, equal_nan=False)


def test_gradients_written_in_place():
    """grad_req 'write': the producers write into the gradient arrays, no copy kernels; 'add'
    keeps its accumulate kernel."""
    sym = _deep_mlp()
    g = Graph(sym._outputs)
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=(8, 16))[0]))
    req = {n: "write" for n in sym.list_arguments()}
    req["fc1_weight"] = "add"
    on = compile_graph(g, shapes, is_train=True, grad_req=req, codegen=False)
    off = compile_graph(g, shapes, is_train=True, grad_req=req, codegen=False,
                        plan_memory=False)
    copies_on = [k.node for k in on.kernels if k.node.endswith("_grad")]
    copies_off = [k.node for k in off.kernels if k.node.endswith("_grad")]
    assert len(copies_off) == len(req) and copies_on == ["fc1_weight_grad"]
    assert len(on.kernels) == len(off.kernels) - (len(req) - 1)
    for slot in on.grad_slots.values():
        assert slot not in on.memory.offsets


def test_planning_off(monkeypatch):
    x = mx.sym.var("x")
    y = mx.sym.sin(mx.sym.exp(mx.sym.cos(x)))
    g = Graph(y._outputs)
    on = compile_graph(g, {"x": (8,)}, fusion=False, codegen=False)
    assert on.memory is not None and on.program.arena_offsets
    off = compile_graph(g, {"x": (8,)}, fusion=False, codegen=False, plan_memory=False)
    assert off.memory is None and not off.program.arena_offsets
    monkeypatch.setenv("MXC_PLAN_MEMORY", "0")
    env = compile_graph(g, {"x": (8,)}, fusion=False, codegen=False)
    assert env.memory is None and not env.program.arena_offsets


# ---------------------------------------------------------------------------------------------
# random graphs, compiled and run
# ---------------------------------------------------------------------------------------------
_UNARY = ["exp", "sin", "cos", "tanh", "sigmoid", "relu", "abs", "square", "negative"]


def _random_symbol(rng: random.Random, n: int):
    x = mx.sym.var("x")
    w = mx.sym.var("w")
    vals = [x]
    for i in range(n):
        kind = rng.random()
        a = rng.choice(vals[-4:])
        if kind < 0.45:
            v = getattr(mx.sym, rng.choice(_UNARY))(a, name=f"u{i}")
        elif kind < 0.75:
            b = rng.choice(vals)
            v = mx.sym.elemwise_add(a, b, name=f"p{i}") if rng.random() < 0.5 else \
                mx.sym.elemwise_mul(a, b, name=f"m{i}")
        elif kind < 0.85:
            v = mx.sym.broadcast_mul(a, w, name=f"bw{i}")
        elif kind < 0.93:
            v = mx.sym.softmax(a, axis=1, name=f"s{i}")
        else:
            v = mx.sym.FullyConnected(a, num_hidden=6, no_bias=True, flatten=False,
                                      name=f"fc{i}")
            v = mx.sym.tanh(v, name=f"t{i}")
        vals.append(v)
    return mx.sym.Group([mx.sym.sum(vals[-1], name="loss"), mx.sym.mean(vals[-2], name="aux")])


@pytest.mark.parametrize("seed", range(4))
def test_random_graphs_planned_vs_unplanned(seed):
    rng = random.Random(seed)
    sym = _random_symbol(rng, 14)
    xs = np.random.default_rng(seed).uniform(-1, 1, (3, 6)).astype(np.float32)
    ws = np.random.default_rng(seed + 1).uniform(-1, 1, (1, 6)).astype(np.float32)
    results = []
    for plan in (False, True):
        g = Graph(sym._outputs)
        shapes = {"x": xs.shape, "w": ws.shape}
        shapes.update({n: s for n, s in zip(sym.list_arguments(),
                                            sym.infer_shape(**shapes)[0])})
        req = {n: "write" for n in sym.list_arguments()}
        cg = compile_graph(g, shapes, is_train=True, grad_req=req, plan_memory=plan,
                           fusion=bool(seed % 2))
        p = cg.program
        p.debug_poison = True
        p.allocate()
        vals = {"x": xs, "w": ws}
        for n in sym.list_arguments():
            vals.setdefault(n, np.random.default_rng(7).uniform(-0.5, 0.5, shapes[n])
                            .astype(np.float32))
        for n, v in vals.items():
            p.storage[cg.var_slots[n]][:v.nbytes].view(np.float32)[:] = v.ravel()
        for s in cg.head_grad_slots:
            p.storage[s][:4].view(np.float32)[:] = 1.0
        p.run("forward")
        outs = [p.storage[s][:4].view(np.float32).copy() for s in cg.head_slots]
        p.run("backward")
        grads = [p.storage[cg.grad_slots[n]][:vals[n].nbytes].view(np.float32).copy()
                 for n in sorted(cg.grad_slots)]
        if plan:
            assert cg.memory.lower_bound_bytes <= cg.memory.planned_bytes \
                <= cg.memory.naive_bytes
        results.append(outs + grads)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# frontends
# ---------------------------------------------------------------------------------------------
def _deep_mlp():
    h = mx.sym.var("data")
    for i in range(4):
        h = mx.sym.Activation(mx.sym.FullyConnected(h, num_hidden=32, name=f"fc{i}"),
                              act_type="tanh", name=f"act{i}")
    return mx.sym.FullyConnected(h, num_hidden=3, name="out")


def test_executor_second_backward_needs_a_forward():
    exe = _deep_mlp().simple_bind(mx.cpu(), data=(8, 16))
    for a in exe.arg_arrays:
        a[:] = np.random.default_rng(0).uniform(-0.3, 0.3, a.shape)
    exe.forward(is_train=True)
    exe.backward()
    g = exe.grad_dict["fc0_weight"].asnumpy().copy()
    mem = exe._bound[True].cg.memory
    assert not mem.backward_reruns          # backward temporaries reuse forward values
    with pytest.raises(MXNetError, match="forward"):
        exe.backward()
    exe.forward(is_train=True)
    exe.backward()
    np.testing.assert_allclose(exe.grad_dict["fc0_weight"].asnumpy(), g, rtol=1e-6)
    assert "MB allocated" in exe.debug_str()


def test_gluon_retain_graph_backward_twice():
    net = mx.gluon.nn.HybridSequential()
    for _ in range(3):
        net.add(mx.gluon.nn.Dense(16, activation="tanh"))
    net.add(mx.gluon.nn.Dense(2))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.array(np.random.default_rng(0).uniform(-1, 1, (4, 8)))
    with mx.autograd.record():
        y = net(x).sum()
    y.backward(retain_graph=True)
    w = net[0].weight
    g1 = w.grad().asnumpy().copy()
    y.backward()
    np.testing.assert_allclose(w.grad().asnumpy(), g1, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# mxc inspect --memory
# ---------------------------------------------------------------------------------------------
KEYS = {"naive_bytes", "inplace_bytes", "sharing_bytes", "planned_bytes", "lower_bound_bytes",
        "kernels_unfused", "kernels"}


@pytest.mark.parametrize("train", [False, True])
def test_inspect_memory_json(train):
    args = ["inspect", str(LENET / "lenet-symbol.json"), "--shape", "data=16,1,28,28",
            "--memory", "--json"] + (["--train"] if train else [])
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert KEYS <= set(rep)
    assert rep["lower_bound_bytes"] <= rep["planned_bytes"] <= rep["naive_bytes"]
    assert rep["planned_bytes"] <= rep["inplace_bytes"] and \
        rep["planned_bytes"] <= rep["sharing_bytes"]
    assert 0 < rep["kernels"] <= rep["kernels_unfused"]
    assert rep["mode"] == ("train" if train else "inference")


def test_inspect_memory_text():
    r = CliRunner().invoke(main, ["inspect", str(LENET / "lenet-symbol.json"), "--shape",
                                  "data=1,1,28,28", "--memory"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for word in ("no reuse", "inplace only", "sharing only", "planned", "lower bound",
                 "MiB", "kernels"):
        assert word in r.output


def test_inspect_memory_missing_shape():
    r = CliRunner().invoke(main, ["inspect", str(LENET / "lenet-symbol.json"), "--memory"])
    assert r.exit_code != 0 and "data" in r.output
