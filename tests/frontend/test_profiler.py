"""mx.profiler: real timings of imperative ops, executor passes and their kernels, user
markers, Chrome-trace dump and aggregate statistics (MXNet 1.9.1's API)."""
import json

import numpy as np
import pytest

import mxc as mx
from mxc import profiler


@pytest.fixture(autouse=True)
def _stopped():
    yield
    profiler.set_state("stop")
    profiler.set_config(profile_all=False, aggregate_stats=False, profile_imperative=True,
                        profile_symbolic=True, filename="profile.json")
    profiler.dumps(reset=True)


def _ranges(events):
    """name -> list of (begin, end) from B/E pairs per thread."""
    open_, out = {}, {}
    for e in events:
        if e["ph"] == "B":
            open_.setdefault((e["tid"], e["name"]), []).append(e["ts"])
        elif e["ph"] == "E":
            b = open_[(e["tid"], e["name"])].pop()
            out.setdefault(e["name"], []).append((b, e["ts"]))
    return out


def test_trace_of_imperative_and_executor(tmp_path):
    fname = tmp_path / "prof.json"
    profiler.set_config(profile_all=True, filename=str(fname), aggregate_stats=True)
    profiler.set_state("run")
    assert profiler.state() == "run"
    a = mx.nd.array(np.random.rand(64, 64))
    b = mx.nd.dot(a, a) + 1
    data = mx.sym.Variable("data")
    net = mx.sym.FullyConnected(data, num_hidden=8, name="fc1")
    exe = net.simple_bind(mx.cpu(), data=(4, 16))
    exe.forward(is_train=True)
    exe.backward(mx.nd.ones((4, 8)))
    dom = profiler.Domain("train")
    task = dom.new_task("step")
    task.start()
    b.wait_to_read()
    task.stop()
    ctr = dom.new_counter("samples", 4)
    ctr += 4
    dom.new_marker("epoch_end").mark("process")
    with profiler.Event("evt"):
        pass
    profiler.set_state("stop")
    mx.nd.ones((2,)) * 3          # not recorded
    profiler.dump()
    doc = json.loads(fname.read_text())
    events = doc["traceEvents"]
    ranges = _ranges(events)
    for name in ("dot", "_plus_scalar", "executor.forward", "executor.backward", "step",
                 "evt"):
        assert name in ranges, name
        assert all(e >= b for b, e in ranges[name])
    assert "_mul_scalar" not in ranges
    # per-kernel timings inside the executor passes, named by graph node
    assert any(n.startswith("fc1") for n in ranges if not n.startswith("executor."))
    cats = {e["name"]: e.get("cat") for e in events if e["ph"] == "B"}
    assert cats["dot"] == "operator" and cats["executor.forward"] == "symbolic"
    assert cats["step"] == "train"
    counters = [e["args"]["samples"] for e in events if e["ph"] == "C"]
    assert counters == [4, 8]
    assert any(e["ph"] == "i" and e["name"] == "epoch_end" and e["s"] == "p" for e in events)
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in events)
    table = profiler.dumps()
    assert "operator" in table and "dot" in table and "Total Count" in table
    stats = json.loads(profiler.dumps(format="json", reset=True))
    assert stats["Time"]["operator"]["dot"]["Total Count"] == 1
    assert stats["Time"]["symbolic"]["executor.backward"]["Total Count"] == 1
    assert json.loads(profiler.dumps(format="json"))["Time"] == {}


def test_pause_resume_and_filters(tmp_path):
    fname = tmp_path / "p2.json"
    profiler.set_config(filename=str(fname), profile_imperative=True,
                        profile_symbolic=False)
    profiler.set_state("run")
    x = mx.nd.ones((4,))
    (x * 2).wait_to_read()
    profiler.pause()
    (x + 5).wait_to_read()
    profiler.resume()
    (x - 1).wait_to_read()
    exe = mx.sym.relu(mx.sym.Variable("d")).simple_bind(mx.cpu(), d=(3,))
    exe.forward()
    profiler.dump(finished=True)
    assert profiler.state() == "stop"
    names = {e["name"] for e in json.loads(fname.read_text())["traceEvents"]
             if e["ph"] == "B"}
    assert "_mul_scalar" in names and "_minus_scalar" in names
    assert "_plus_scalar" not in names and "executor.forward" not in names


def test_errors():
    with pytest.raises(mx.MXNetError, match="unknown option"):
        profiler.set_config(bogus=1)
    with pytest.raises(mx.MXNetError):
        profiler.set_state("running")
    with pytest.raises(mx.MXNetError):
        profiler.dumps(format="xml")
    with pytest.raises(mx.MXNetError, match="stop"):
        profiler.Event("e").stop()
    with pytest.raises(mx.MXNetError):
        profiler.Marker(profiler.Domain("d"), "m").mark("galaxy")
