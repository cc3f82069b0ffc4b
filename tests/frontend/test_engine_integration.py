"""The MXNet programming model on the dependency engine: imperative NDArray ops, Executor
forward/backward, autograd and Python-side updates are pushed to the engine, and give the
same numbers under the threaded engine (the default) and NaiveEngine (serial reference):
random imperative programs in process (``engine.set_engine``) and in subprocesses
(``MXNET_ENGINE_TYPE``), the paper's ``exe.forward(); exe.backward(); w[:] -= lr * g`` loop,
autograd with Dropout masks, errors raised by pushed work surfacing at waits, ``waitall``,
and that calls really return before their work has run."""
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mxc as mx
from mxc.runtime import engine

THREADED = "ThreadedEnginePerDevice"
NAIVE = "NaiveEngine"


@pytest.fixture
def restore_engine():
    old = engine.get().kind
    yield
    engine.set_engine(old)


def _gate(arr, write: bool = True) -> threading.Event:
    """Push work on ``arr`` (a write, or a read) that blocks until the event is set."""
    ev = threading.Event()
    engine.get().push(lambda: ev.wait(30), () if write else (arr._var,),
                      (arr._var,) if write else (), name="gate")
    return ev


# ------------------------------------------------------------------------------------------
# random imperative programs
# ------------------------------------------------------------------------------------------
def random_program(seed: int, n_arrays: int = 5, n_steps: int = 40):
    """Run one random imperative program (chains of mx.nd ops, in-place updates, views,
    slices, copies, numpy writes, interim reads) and return every value it read plus the
    final arrays, as numpy."""
    rng = random.Random(seed)
    n = rng.choice([3, 8, 96, 160])          # 96, 160: big enough to be pushed, not inlined
    data = np.random.default_rng(seed)
    arrs = [mx.nd.array(data.uniform(-1, 1, (n, n))) for _ in range(n_arrays)]
    seen = []

    def pick():
        return rng.randrange(n_arrays)

    def step():
        i, j, k = pick(), pick(), pick()
        a, b = arrs[i], arrs[j]
        op = rng.randrange(22)
        if op == 0:
            arrs[k] = a + b
        elif op == 1:
            arrs[k] = mx.nd.tanh(a * 0.5 - b)
        elif op == 2:
            a += b
        elif op == 3:
            a *= 0.75
        elif op == 4:
            a[:] = b
        elif op == 5:
            r = rng.randrange(n - 1)
            a[r:r + 1] = b[0:1]
        elif op == 6:
            a[:, rng.randrange(n)] = rng.uniform(-1, 1)
        elif op == 7:
            mx.nd.relu(a, out=b)
        elif op == 8:
            arrs[k] = mx.nd.tanh(mx.nd.dot(a, b) / n)
        elif op == 9:
            v = a.reshape(-1)
            v[: n + 1] = 0.25
        elif op == 10:
            arrs[k] = a.T
        elif op == 11:
            arrs[k] = a.copy()
        elif op == 12:
            if i != j:
                a.copyto(b)
        elif op == 13:
            c = 1 if n > 1 else 0
            b[:, 0:c] = a[:, n - c:n]
        elif op == 14:
            arrs[k] = mx.nd.sum(a, axis=0, keepdims=True).broadcast_to((n, n)) / n
        elif op == 15:
            a[:] = data.uniform(-1, 1, (n, n)).astype(np.float32)
        elif op == 16:
            arrs[k] = a.astype("float64").astype("float32") - 1
        elif op == 17:
            seen.append(a.asnumpy())
            seen.append(np.float32(b[0, 0].asscalar()))
        elif op == 18:
            arrs[k] = mx.nd.concatenate([a[0:1], b[1:]])
        elif op == 19:
            a[:] -= 0.1 * b
        elif op == 20:
            mx.nd.elemwise_add(a, b, out=a)
        else:
            arrs[k] = mx.nd.clip(a * b + 0.5, -2.0, 2.0)

    for _ in range(n_steps):
        step()
    return seen + [x.asnumpy() for x in arrs]


def _run_program(kind: str, seed: int):
    engine.set_engine(kind)
    out = random_program(seed)
    mx.nd.waitall()
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_threaded_equals_naive(restore_engine, seed):
    ref = _run_program(NAIVE, seed)
    got = _run_program(THREADED, seed)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


def test_random_programs_many_seeds_threaded_is_deterministic(restore_engine):
    for seed in range(100, 110):
        a = _run_program(THREADED, seed)
        b = _run_program(NAIVE, seed)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


_SUB = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("engine_prog", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
from mxc.runtime import engine
out = {}
for seed in (3, 7, 11):
    for i, v in enumerate(mod.random_program(seed)):
        out[f"{seed}_{i}"] = v
np.savez(sys.argv[2], kind=engine.get().kind, **out)
"""


def test_engine_type_env_in_subprocess(tmp_path):
    res = {}
    for kind in (THREADED, NAIVE):
        env = dict(os.environ, MXNET_ENGINE_TYPE=kind)
        path = tmp_path / f"{kind}.npz"
        subprocess.run([sys.executable, "-c", _SUB, __file__, str(path)], env=env, check=True,
                       timeout=600)
        res[kind] = np.load(path)
        assert str(res[kind]["kind"]) == kind
    t, s = res[THREADED], res[NAIVE]
    assert sorted(t.files) == sorted(s.files)
    for k in t.files:
        if k != "kind":
            np.testing.assert_array_equal(t[k], s[k], err_msg=k)


# ------------------------------------------------------------------------------------------
# asynchrony and ordering
# ------------------------------------------------------------------------------------------
def test_ops_return_before_their_inputs_are_ready(restore_engine):
    engine.set_engine(THREADED)
    a = mx.nd.ones((64, 64))
    gate = _gate(a)                     # a pending write of a
    t = time.perf_counter()
    b = a * 2                           # pushed behind the write: returns at once
    c = b + 1
    a += 1                              # a write after the reads of a
    d = mx.nd.dot(c, a)
    assert time.perf_counter() - t < 5  # (the gate holds for 30 s)
    assert b._var.queue or b._var.writing
    gate.set()
    np.testing.assert_array_equal(c.asnumpy(), np.full((64, 64), 3, np.float32))
    np.testing.assert_array_equal(a.asnumpy(), np.full((64, 64), 2, np.float32))
    np.testing.assert_allclose(d.asnumpy(), np.full((64, 64), 3 * 2 * 64, np.float32))


def test_python_writes_wait_for_pending_reads(restore_engine):
    engine.set_engine(THREADED)
    a = mx.nd.ones((4,))
    seen = []
    ev = threading.Event()

    def reader():
        ev.wait(30)
        seen.append(a._buf.copy())
    engine.get().push(reader, (a._var,), ())
    threading.Timer(0.2, ev.set).start()
    a[:] = np.zeros(4, np.float32)      # numpy source: waits for the read in flight
    np.testing.assert_array_equal(seen[0], np.ones(4))
    np.testing.assert_array_equal(a.asnumpy(), np.zeros(4))


def test_views_share_their_base_variable():
    a = mx.nd.zeros((4, 6))
    assert a[1]._var is a._var
    assert a[1:3]._var is a._var
    assert a.reshape((6, 4))._var is a._var
    assert a.detach()._var is a._var
    assert a.copy()._var is not a._var
    b = a.reshape((24,))
    b[:] = 1                            # a write through the view is a write of a
    a[0] += 1
    np.testing.assert_array_equal(a.asnumpy()[0], np.full(6, 2))
    np.testing.assert_array_equal(b.asnumpy()[6:], np.ones(18))


def test_waitall_waits_for_everything(restore_engine):
    engine.set_engine(THREADED)
    done = []
    a = mx.nd.ones((128, 128))
    gate = _gate(a)
    outs = [a * i for i in range(5)]
    engine.get().push(lambda: done.append(1), (outs[-1]._var,), ())
    threading.Timer(0.2, gate.set).start()
    mx.nd.waitall()
    assert done == [1]
    for i, o in enumerate(outs):
        assert o._var.nreads == 0 and not o._var.writing and not o._var.queue
        np.testing.assert_array_equal(o._buf, np.full((128, 128), i))


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
class _Boom(RuntimeError):
    pass


def _fail():
    raise _Boom("failing python step")


def test_error_in_pushed_work_surfaces_at_wait_on_affected_arrays(restore_engine):
    engine.set_engine(THREADED)
    a = mx.nd.ones((32, 32))
    unrelated = mx.nd.ones((3,)) * 5
    engine.get().push(_fail, (), (a._var,), name="step")
    b = a + 1                           # computed from a failed result: fails too
    c = mx.nd.dot(b, b)
    np.testing.assert_array_equal(unrelated.asnumpy(), np.full(3, 5))  # unaffected
    with pytest.raises(_Boom, match="failing python step") as info:
        c.asnumpy()
    assert any("step" in n for n in getattr(info.value, "__notes__", []))
    # observed once: the arrays are usable again, new work runs normally
    a[:] = 2
    np.testing.assert_array_equal((a + 1).asnumpy(), np.full((32, 32), 3))
    mx.nd.waitall()


def test_error_surfaces_at_wait_to_read_and_waitall(restore_engine):
    engine.set_engine(THREADED)
    a = mx.nd.zeros((8,))
    engine.get().push(_fail, (), (a._var,))
    with pytest.raises(_Boom):
        a.wait_to_read()
    a.wait_to_read()                    # observed: no second raise
    b = mx.nd.zeros((8,))
    engine.get().push(_fail, (), (b._var,))
    d = b * 3                           # nobody waits on b or d ...
    with pytest.raises(_Boom):
        mx.nd.waitall()                 # ... waitall raises it
    mx.nd.waitall()
    d.wait_to_read()


def test_error_surfaces_through_executor_outputs(restore_engine):
    engine.set_engine(THREADED)
    x = mx.sym.var("x")
    exe = mx.sym.FullyConnected(x, num_hidden=3, name="fc").simple_bind(mx.cpu(), x=(2, 4))
    engine.get().push(_fail, (), (exe.arg_dict["fc_weight"]._var,))
    exe.forward()
    with pytest.raises(_Boom):
        exe.outputs[0].asnumpy()


def test_naive_engine_raises_at_push(restore_engine):
    engine.set_engine(NAIVE)
    a = mx.nd.zeros((2,))
    with pytest.raises(_Boom):
        engine.get().push(_fail, (), (a._var,))


# ------------------------------------------------------------------------------------------
# executor: the paper's training loop
# ------------------------------------------------------------------------------------------
def _exe_training_loop(kind: str, steps: int = 6):
    engine.set_engine(kind)
    data = mx.sym.var("data")
    h = mx.sym.Activation(mx.sym.FullyConnected(data, num_hidden=64, name="fc1"),
                          act_type="relu")
    h = mx.sym.BatchNorm(h, fix_gamma=False, name="bn")
    h = mx.sym.Dropout(h, p=0.3)
    out = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(h, num_hidden=5, name="fc2"),
                               name="softmax")
    exe = out.simple_bind(mx.cpu(), data=(32, 20))
    rng = np.random.default_rng(0)
    for name, arr in sorted(exe.arg_dict.items()):
        if name.endswith("weight"):
            arr[:] = rng.standard_normal(arr.shape).astype(np.float32) * 0.2
        elif name.endswith("gamma"):
            arr[:] = 1
    mx.random.seed(42)
    lr = 0.1
    losses = []
    for _ in range(steps):
        x = rng.standard_normal((32, 20)).astype(np.float32)
        y = rng.integers(0, 5, 32).astype(np.float32)
        exe.forward(is_train=True, data=x, softmax_label=y)
        exe.backward()
        for name in exe.arg_dict:
            if name in ("data", "softmax_label"):
                continue
            w, g = exe.arg_dict[name], exe.grad_dict[name]
            w[:] -= lr * g
        losses.append(exe.outputs[0])   # read after the loop: no wait inside it
    probs = [p.asnumpy() for p in losses]
    params = {k: v.asnumpy() for k, v in exe.arg_dict.items()}
    params.update({k: v.asnumpy() for k, v in exe.aux_dict.items()})
    return probs, params


def test_executor_forward_backward_update_threaded_equals_naive(restore_engine):
    ref_p, ref_w = _exe_training_loop(NAIVE)
    got_p, got_w = _exe_training_loop(THREADED)
    for r, g in zip(ref_p, got_p):
        np.testing.assert_array_equal(g, r)
    for k in ref_w:
        np.testing.assert_array_equal(got_w[k], ref_w[k], err_msg=k)
    # it trained: the parameters moved
    assert not np.allclose(ref_w["fc1_weight"], 0)


def test_executor_forward_is_pushed_behind_argument_writes(restore_engine):
    engine.set_engine(THREADED)
    x = mx.sym.var("x")
    exe = (x * 2 + x).simple_bind(mx.cpu(), x=(4,))
    arg = exe.arg_dict["x"]
    gate = _gate(arg)
    t = time.perf_counter()
    exe.forward()
    arg[:] = 7                           # a write after the forward's read: ordered after it
    exe.forward()
    assert time.perf_counter() - t < 5
    gate.set()
    np.testing.assert_array_equal(exe.outputs[0].asnumpy(), np.full(4, 21))


# ------------------------------------------------------------------------------------------
# autograd and gluon
# ------------------------------------------------------------------------------------------
def _autograd_loop(kind: str):
    engine.set_engine(kind)
    mx.random.seed(7)
    rng = np.random.default_rng(1)
    w = mx.nd.array(rng.standard_normal((16, 8)) * 0.3)
    w.attach_grad()
    results = []
    for _ in range(4):
        x = mx.nd.array(rng.standard_normal((10, 16)))
        with mx.autograd.record():
            h = mx.nd.Dropout(mx.nd.dot(x, w), p=0.5)
            loss = (h * h).sum()
        loss.backward()
        results.append(h.asnumpy())
        w[:] -= 0.01 * w.grad
    results.append(w.asnumpy())
    return results


def test_autograd_with_dropout_threaded_equals_naive(restore_engine):
    ref = _autograd_loop(NAIVE)
    got = _autograd_loop(THREADED)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


def _gluon_loop(kind: str, hybridize: bool):
    from mxc import gluon
    engine.set_engine(kind)
    mx.random.seed(3)
    net = gluon.nn.HybridSequential()
    with net.name_scope():
        net.add(gluon.nn.Dense(32, activation="relu"), gluon.nn.BatchNorm(),
                gluon.nn.Dense(4))
    net.initialize(mx.init.Xavier())
    if hybridize:
        net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1,
                                                          "momentum": 0.9})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    rng = np.random.default_rng(2)
    losses = []
    for _ in range(4):
        x = mx.nd.array(rng.standard_normal((16, 12)))
        y = mx.nd.array(rng.integers(0, 4, 16))
        with mx.autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(16)
        losses.append(loss)
    return [v.asnumpy() for v in losses] + \
        [p.data().asnumpy() for p in net.collect_params().values()]


@pytest.mark.parametrize("hybridize", [False, True])
def test_gluon_training_threaded_equals_naive(restore_engine, hybridize):
    ref = _gluon_loop(NAIVE, hybridize)
    got = _gluon_loop(THREADED, hybridize)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


# ------------------------------------------------------------------------------------------
# the fast path for tiny ops
# ------------------------------------------------------------------------------------------
def test_tiny_ops_on_idle_arrays_run_inline(restore_engine):
    engine.set_engine(THREADED)
    a = mx.nd.ones((10,))
    b = a + 1                                    # idle inputs, tiny: ran in the caller
    v = b._var
    assert not v.writing and not v.queue and v.nreads == 0
    np.testing.assert_array_equal(b._buf, np.full(10, 2))
    gate = _gate(a)
    c = a + 1                                    # a busy: pushed behind the gate
    assert c._var.queue or c._var.writing
    gate.set()
    np.testing.assert_array_equal(c.asnumpy(), np.full(10, 2))


def test_run_inline_if_idle_holds_the_variables(restore_engine):
    eng = engine.set_engine(THREADED)
    x, y = eng.new_variable(), eng.new_variable()
    gate = threading.Event()
    eng.push(lambda: gate.wait(30), (), (x,))
    assert eng.run_inline_if_idle(lambda: None, (x,), (y,)) is False   # x busy
    gate.set()
    eng.wait_for_var(x)
    order = []
    started, release = threading.Event(), threading.Event()

    def inline():
        started.set()
        release.wait(30)
        order.append("inline")

    def other_thread():
        started.wait(30)
        eng.push(lambda: order.append("pushed"), (y,), ())   # waits for the inline write
        release.set()
    t = threading.Thread(target=other_thread)
    t.start()
    assert eng.run_inline_if_idle(inline, (x,), (y,)) is True
    t.join()
    eng.wait_all()
    assert order == ["inline", "pushed"]
    assert eng.run_inline_if_idle(_fail, (), (y,), name="tiny") is True
    with pytest.raises(_Boom):
        eng.wait_to_read(y)
