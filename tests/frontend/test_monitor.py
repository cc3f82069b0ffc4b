"""mx.monitor.Monitor on executors and Module: internal outputs, arguments, aux states,
pattern, interval, sort, monitor_all, custom stat_func (MXNet 1.9.1 semantics)."""
import logging

import numpy as np

import mxc as mx


def _net():
    data = mx.sym.Variable("data")
    fc = mx.sym.FullyConnected(data, num_hidden=3, name="fc1")
    act = mx.sym.Activation(fc, act_type="relu", name="relu1")
    return mx.sym.FullyConnected(act, num_hidden=2, name="fc2")


def _bound():
    exe = _net().simple_bind(mx.cpu(), data=(4, 5))
    rng = np.random.default_rng(0)
    for name, arr in exe.arg_dict.items():
        arr[:] = rng.standard_normal(arr.shape)
    return exe


def test_monitor_records_internal_outputs_and_args():
    exe = _bound()
    mon = mx.monitor.Monitor(1, stat_func=lambda x: mx.nd.sum(mx.nd.abs(x)), sort=True)
    mon.install(exe)
    mon.tic()
    exe.forward(is_train=False)
    res = mon.toc()
    names = [k for _, k, _ in res]
    assert names == sorted(names)
    assert {"fc1_output", "relu1_output", "fc2_output", "data", "fc1_weight", "fc1_bias",
            "fc2_weight", "fc2_bias"} <= set(names)
    a = {k: exe.arg_dict[k].asnumpy() for k in exe.arg_dict}
    fc1 = a["data"] @ a["fc1_weight"].T + a["fc1_bias"]
    relu = np.maximum(fc1, 0)
    fc2 = relu @ a["fc2_weight"].T + a["fc2_bias"]
    stats = {k: float(v.strip()) for _, k, v in res}
    np.testing.assert_allclose(stats["fc1_output"], np.abs(fc1).sum(), rtol=1e-5)
    np.testing.assert_allclose(stats["relu1_output"], np.abs(relu).sum(), rtol=1e-5)
    np.testing.assert_allclose(stats["fc2_output"], np.abs(fc2).sum(), rtol=1e-5)
    np.testing.assert_allclose(stats["fc1_weight"], np.abs(a["fc1_weight"]).sum(), rtol=1e-5)
    # outputs of the executor are unchanged by monitoring
    np.testing.assert_allclose(exe.outputs[0].asnumpy(), fc2, rtol=1e-5, atol=1e-6)
    assert all(step == 1 for step, _, _ in res)


def test_monitor_default_stat_pattern_interval_and_monitor_all():
    exe = _bound()
    mon = mx.monitor.Monitor(2, pattern=".*weight|fc2_output")
    mon.install(exe)
    mon.tic()
    exe.forward(is_train=True)
    exe.backward(mx.nd.ones((4, 2)))
    res = mon.toc()
    assert sorted(k for _, k, _ in res) == ["fc1_weight", "fc2_output", "fc2_weight"]
    w = exe.arg_dict["fc1_weight"].asnumpy()
    val = dict((k, v) for _, k, v in res)["fc1_weight"]
    np.testing.assert_allclose(float(val.strip()), np.linalg.norm(w) / np.sqrt(w.size),
                               rtol=1e-5)
    mon.tic()                      # step 1: not an interval step
    exe.forward(is_train=False)
    assert mon.toc() == []
    mon_all = mx.monitor.Monitor(1, pattern="fc2_.*", monitor_all=True)
    exe2 = _bound()
    mon_all.install(exe2)
    mon_all.tic()
    exe2.forward()
    got = {k for _, k, _ in mon_all.toc()}
    assert {"fc2_data", "fc2_weight", "fc2_bias", "fc2_output"} <= got


def test_monitor_gradients_still_correct_and_module(caplog):
    exe = _bound()
    ref = _bound()
    mon = mx.monitor.Monitor(1)
    mon.install(exe)
    mon.tic()
    for e in (exe, ref):
        e.forward(is_train=True)
        e.backward(mx.nd.ones((4, 2)))
    mon.toc()
    for k in ("fc1_weight", "fc2_bias"):
        np.testing.assert_allclose(exe.grad_dict[k].asnumpy(), ref.grad_dict[k].asnumpy(),
                                   rtol=1e-5, atol=1e-6)
    mod = mx.mod.Module(mx.sym.SoftmaxOutput(_net(), name="softmax"))
    it = mx.io.NDArrayIter(np.random.rand(8, 5).astype(np.float32),
                           np.arange(8) % 2, batch_size=4)
    mon2 = mx.monitor.Monitor(1, pattern="fc1_output")
    with caplog.at_level(logging.INFO):
        mod.fit(it, num_epoch=1, monitor=mon2)
    assert any("fc1_output" in r.getMessage() and "Batch:" in r.getMessage()
               for r in caplog.records)
