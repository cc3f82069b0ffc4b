"""mx.gpu(i) contexts for NDArray and Executor, run on the GPU back end (docs/gpu.md).

Without a GPU the tests set MXC_GPU_EMULATOR=1, so gpu(0) is the CPU emulator of the PTX
kernels (codegen.ptx_emu): the same compiled graphs, launch plans and GPUProgram glue a real
device runs, executed thread by thread on the CPU (slow: shapes are tiny). The same checks run
on a real CUDA device under the ``gpu`` marker (they skip without one).
"""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from fake_cuda import FakeCudaDriver

import mxc as mx
from mxc.base import MXNetError
from mxc.runtime import cuda

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"
RNG = np.random.default_rng(7)


def _cuda_ok() -> bool:
    return cuda.cuda_status()[0]


@pytest.fixture
def ctx(gpu_ctx):   # tests/conftest.py: the emulator, or a real GPU (gpu marker)
    return gpu_ctx


def _r(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# device selection
# --------------------------------------------------------------------------------------------
def test_no_driver_no_emulator_is_a_clear_error(monkeypatch):
    if _cuda_ok():
        pytest.skip("a CUDA device is present")
    monkeypatch.delenv("MXC_GPU_EMULATOR", raising=False)
    g = mx.gpu(0)
    assert str(g) == "gpu(0)" and g != mx.cpu()      # contexts can still be made
    assert mx.context.num_gpus() == 0
    for make in (lambda: mx.nd.zeros((2, 2), ctx=g),
                 lambda: mx.nd.array([1, 2], ctx=g),
                 lambda: mx.nd.ones(3).copyto(g),
                 lambda: mx.sym.var("x").simple_bind(g, x=(2,))):
        with pytest.raises(MXNetError, match=r"no CUDA driver/device: .*MXC_GPU_EMULATOR=1"):
            make()


def test_nested_with_of_one_context_object_restores_the_default():
    g = mx.gpu(0)        # (entering a context touches no device)
    with g:
        with g:
            assert mx.current_context() == g
        assert mx.current_context() == g
    assert mx.current_context() == mx.cpu()


def test_emulator_device_count(monkeypatch):
    if _cuda_ok():
        pytest.skip("a CUDA device is present: num_gpus() reports it")
    monkeypatch.setenv("MXC_GPU_EMULATOR", "1")
    assert mx.context.num_gpus() == 1
    with pytest.raises(MXNetError, match="one device, gpu"):
        mx.nd.zeros(2, ctx=mx.gpu(1))
    mx.gpu(0).empty_cache()


# --------------------------------------------------------------------------------------------
# NDArray
# --------------------------------------------------------------------------------------------
def test_round_trips_and_views(ctx):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = mx.nd.array(x, ctx=ctx)
    assert a.context == ctx and a.shape == (2, 3, 4) and a.dtype == np.float32
    assert isinstance(a, mx.nd.NDArray)
    np.testing.assert_array_equal(a.asnumpy(), x)
    c = a.copyto(mx.cpu())
    assert c.context == mx.cpu()
    np.testing.assert_array_equal(c.asnumpy(), x)
    b = c.as_in_context(ctx)
    assert b.context == ctx and b.as_in_context(ctx) is b
    np.testing.assert_array_equal(b.asnumpy(), x)
    d = mx.nd.NDArray(x[0], ctx=ctx)
    np.testing.assert_array_equal(d.asnumpy(), x[0])
    # another gpu array as copyto target, dtype conversion on the way
    e = mx.nd.zeros((2, 3, 4), ctx=ctx, dtype="int32")
    a.copyto(e)
    np.testing.assert_array_equal(e.asnumpy(), x.astype(np.int32))
    np.testing.assert_array_equal(a.astype("float16").asnumpy(), x.astype(np.float16))
    # views share device memory and the engine variable
    v = a.reshape((6, 4))
    assert v.context == ctx
    np.testing.assert_array_equal(v.asnumpy(), x.reshape(6, 4))
    np.testing.assert_array_equal(a[1].asnumpy(), x[1])
    np.testing.assert_array_equal(a[:, 1, 2:].asnumpy(), x[:, 1, 2:])   # strided: a copy
    np.testing.assert_array_equal(a[np.array([1, 0])].asnumpy(), x[[1, 0]])  # advanced
    a[1] = 5
    x[1] = 5
    a[0, :, 0] = mx.nd.array([7, 8, 9])                      # cpu value, strided target
    x[0, :, 0] = [7, 8, 9]
    a[0, 0] = mx.nd.array([1, 2, 3, 4], ctx=ctx)              # device to device
    x[0, 0] = [1, 2, 3, 4]
    v[5] = np.array([-1, -2, -3, -4])
    x.reshape(6, 4)[5] = [-1, -2, -3, -4]
    np.testing.assert_array_equal(a.asnumpy(), x)
    a[:] = 0
    assert not a.asnumpy().any()
    f = mx.nd.full((2, 2), 3.5, ctx=ctx)
    np.testing.assert_array_equal(f.asnumpy(), np.full((2, 2), 3.5, np.float32))
    assert "@gpu(0)" in repr(f)
    g = pickle.loads(pickle.dumps(f))
    assert g.context == mx.cpu()
    np.testing.assert_array_equal(g.asnumpy(), f.asnumpy())
    f.wait_to_read()
    mx.nd.waitall()


def test_imperative_ops_run_on_the_device(ctx):
    x, y = _r(3, 4), _r(3, 4)
    a, b = mx.nd.array(x, ctx=ctx), mx.nd.array(y, ctx=ctx)
    for got, want in [(a + b, x + y), (a * b - 1, x * y - 1), (mx.nd.exp(a), np.exp(x)),
                      (mx.nd.relu(a), np.maximum(x, 0)), (2 / (a * a + 1), 2 / (x * x + 1)),
                      (a + mx.nd.array(y[:1], ctx=ctx), x + y[:1]),
                      (a.sum(axis=1), x.sum(1)), (a.T, x.T)]:
        assert got.context == ctx
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-5)
    # dot / FullyConnected (the GEMM template), softmax (cooperative row reductions)
    w, bias = _r(5, 4), _r(5)
    np.testing.assert_allclose(mx.nd.dot(a, mx.nd.array(w.T, ctx=ctx)).asnumpy(), x @ w.T,
                               rtol=1e-4, atol=1e-5)
    fc = mx.nd.FullyConnected(a, mx.nd.array(w, ctx=ctx), mx.nd.array(bias, ctx=ctx),
                              num_hidden=5)
    np.testing.assert_allclose(fc.asnumpy(), x @ w.T + bias, rtol=1e-4, atol=1e-5)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(mx.nd.softmax(a).asnumpy(), e / e.sum(1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    # a small convolution (im2col + GEMM)
    img, k, kb = _r(1, 2, 5, 5), _r(3, 2, 3, 3), _r(3)
    conv = mx.nd.Convolution(mx.nd.array(img, ctx=ctx), mx.nd.array(k, ctx=ctx),
                             mx.nd.array(kb, ctx=ctx), kernel=(3, 3), num_filter=3, pad=(1, 1))
    ref = mx.nd.Convolution(mx.nd.array(img), mx.nd.array(k), mx.nd.array(kb), kernel=(3, 3),
                            num_filter=3, pad=(1, 1))
    np.testing.assert_allclose(conv.asnumpy(), ref.asnumpy(), rtol=1e-4, atol=1e-5)
    # out=, in-place, view ops (no kernel), random numbers drawn on the device
    o = mx.nd.zeros((3, 4), ctx=ctx)
    mx.nd.elemwise_add(a, b, out=o)
    np.testing.assert_allclose(o.asnumpy(), x + y, rtol=1e-6)
    o += a
    np.testing.assert_allclose(o.asnumpy(), 2 * x + y, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mx.nd.Flatten(a.reshape(3, 2, 2)).asnumpy(), x)
    u = mx.nd.random.uniform(shape=(4, 4), ctx=ctx).asnumpy()
    assert u.min() >= 0 and u.max() < 1 and u.std() > 0


def test_mixing_contexts_raises(ctx):
    a = mx.nd.ones((2, 2), ctx=ctx)
    c = mx.nd.ones((2, 2))
    with pytest.raises(MXNetError, match=r"is on cpu\(0\), but the operator runs on gpu\(0\)"):
        a + c
    with pytest.raises(MXNetError, match=r"is on gpu\(0\), but the operator runs on cpu\(0\)"):
        mx.nd.elemwise_add(c, a)
    with pytest.raises(MXNetError, match="same context"):
        mx.nd.elemwise_add(c, c, out=a)
    a.attach_grad()   # autograd on gpu arrays: tests/frontend/test_gpu_autograd.py
    with pytest.raises(MXNetError, match=r"is on cpu\(0\), but the operator runs on gpu\(0\)"), \
            mx.autograd.record():
        a * c


def test_optimizer_update_on_the_device(ctx):
    w, g = _r(4, 3), _r(4, 3)
    res = []
    for c in (mx.cpu(), ctx):
        opt = mx.optimizer.SGD(learning_rate=0.1, momentum=0.9, wd=1e-3)
        upd = mx.optimizer.get_updater(opt)
        wa, ga = mx.nd.array(w, ctx=c), mx.nd.array(g, ctx=c)
        upd(0, ga, wa)
        upd(0, ga, wa)
        res.append(wa.asnumpy())
    np.testing.assert_allclose(res[1], res[0], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Executor / Module
# --------------------------------------------------------------------------------------------
def _mlp():
    data = mx.sym.var("data")
    net = mx.sym.FullyConnected(data, num_hidden=6, name="fc1")
    net = mx.sym.Activation(net, act_type="relu")
    return mx.sym.FullyConnected(net, num_hidden=3, name="fc2")


def test_executor_mlp_forward_backward(ctx):
    net = _mlp()
    shapes = dict(zip(net.list_arguments(), net.infer_shape(data=(4, 5))[0]))
    vals = {k: _r(*s) for k, s in shapes.items()}
    head = _r(4, 3)
    res = {}
    for c in (mx.cpu(), ctx):
        exe = net.simple_bind(c, grad_req="write", data=(4, 5))
        assert exe.outputs[0].context == c and exe.grad_dict["fc1_weight"].context == c
        for k, v in vals.items():
            exe.arg_dict[k][:] = v
        out = exe.forward(is_train=True)[0].asnumpy()
        exe.backward(mx.nd.array(head, ctx=c))
        inf = exe.forward(is_train=False)[0].asnumpy()
        res[c.device_type] = out, inf, {k: g.asnumpy() for k, g in exe.grad_dict.items()}
    (o1, _, g1), (o2, i2, g2) = res["cpu"], res["gpu"]
    np.testing.assert_allclose(o2, o1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i2, o1, rtol=1e-5, atol=1e-6)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_executor_bind_and_output_views(ctx):
    x = mx.sym.var("x")
    g = mx.sym.Group([mx.sym.Reshape(x, shape=(-1,)), x * 2])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    args = {"x": mx.nd.array(a, ctx=ctx)}
    grads = {"x": mx.nd.zeros((2, 3), ctx=ctx)}
    exe = g.bind(ctx, args, args_grad=grads)
    outs = exe.forward(is_train=True)
    np.testing.assert_array_equal(outs[0].asnumpy(), a.reshape(-1))
    np.testing.assert_array_equal(outs[1].asnumpy(), 2 * a)
    exe.backward([mx.nd.ones(6, ctx=ctx), mx.nd.ones((2, 3))])
    np.testing.assert_allclose(grads["x"].asnumpy(), np.full((2, 3), 3.0))
    with pytest.raises(MXNetError, match=r"'x' is on cpu\(0\), but the executor is bound to"):
        g.bind(ctx, {"x": mx.nd.array(a)})


def _load_case(name):
    d = CASES / name
    if not d.exists():
        pytest.skip(f"{d} not present")
    meta = json.loads((d / "meta.json").read_text())
    prefix = str(d / meta["symbol"][: -len("-symbol.json")])
    sym, arg, aux = mx.model.load_checkpoint(prefix, 0)
    feed = {i["name"]: np.load(d / i["file"]) for i in meta["inputs"]}
    return d, meta, sym, arg, aux, feed


def _emulated(ctx) -> bool:
    from mxc.frontend.gpu_storage import get_device, is_emulated
    return is_emulated(get_device(ctx))


def _compare_grads(sym, ctx, shapes, vals, head):
    exes = {}
    for c in (mx.cpu(), ctx):
        e = sym.simple_bind(c, grad_req="write", **shapes)
        e.copy_params_from({k: mx.nd.array(v) for k, v in vals.items()},
                           allow_extra_params=True)
        e.forward(is_train=True, **{k: mx.nd.array(v, ctx=c) for k, v in vals.items()
                                    if k in shapes})
        e.backward(mx.nd.array(head, ctx=c))
        exes[c.device_type] = e
    for k, want in exes["cpu"].grad_dict.items():
        want = want.asnumpy()
        np.testing.assert_allclose(exes["gpu"].grad_dict[k].asnumpy(), want, rtol=1e-4,
                                   atol=1e-5 * max(np.abs(want).max(), 1e-3), err_msg=k)


def test_executor_convnet_gradients(ctx):
    data = mx.sym.var("data")
    net = mx.sym.Convolution(data, kernel=(3, 3), num_filter=2, name="conv")
    net = mx.sym.Pooling(mx.sym.Activation(net, act_type="tanh"), kernel=(2, 2), stride=(2, 2),
                         pool_type="max")
    net = mx.sym.FullyConnected(net, num_hidden=3, name="fc")
    shapes = {"data": (2, 1, 6, 6)}
    vals = {k: _r(*s) for k, s in zip(net.list_arguments(), net.infer_shape(**shapes)[0])}
    _compare_grads(net, ctx, shapes, vals, _r(2, 3))


def test_executor_lenet_reference(ctx):
    d, meta, sym, arg, aux, feed = _load_case("lenet")
    shapes = {k: v.shape for k, v in feed.items()}
    exe = sym.simple_bind(ctx, grad_req="null", **shapes)
    exe.copy_params_from(arg, aux)
    outs = exe.forward(is_train=False, **{k: mx.nd.array(v) for k, v in feed.items()})
    for o, spec in zip(outs, meta["outputs"]):
        assert o.context == ctx
        np.testing.assert_allclose(o.asnumpy(), np.load(d / spec["file"]), rtol=1e-4,
                                   atol=1e-5)
    if _emulated(ctx):
        return  # lenet's backward takes the emulator ~10 s: the convnet test covers it
    vals = {**{k: v.asnumpy() for k, v in arg.items()}, **feed}
    _compare_grads(sym, ctx, shapes, vals, _r(*outs[0].shape))


def test_module_fit_matches_cpu(ctx):
    X = _r(16, 5)
    Y = (X[:, 0] > 0).astype(np.float32)
    net = mx.sym.SoftmaxOutput(_mlp(), name="softmax")
    params = {}
    for c in (mx.cpu(), ctx):
        mod = mx.mod.Module(net, context=c)
        mx.random.seed(3)
        mod.fit(mx.io.NDArrayIter(X, Y, batch_size=8), num_epoch=1, optimizer="sgd",
                optimizer_params={"learning_rate": 0.1, "momentum": 0.9},
                initializer=mx.init.Xavier())
        params[c.device_type] = {k: v.asnumpy() for k, v in mod.get_params()[0].items()}
    for k, v in params["cpu"].items():
        np.testing.assert_allclose(params["gpu"][k], v, rtol=1e-5, atol=1e-6, err_msg=k)


# --------------------------------------------------------------------------------------------
# the real-device path (runtime.cuda.CudaDevice: pool, driver copies, launches) on a fake
# driver whose memory is host memory and whose launches run the kernels in the emulator
# --------------------------------------------------------------------------------------------
def test_cuda_device_path_on_a_fake_driver(monkeypatch):
    import gc

    from mxc.compiler import cuda_build
    from mxc.frontend import gpu_storage as gs

    drv = FakeCudaDriver()
    real = cuda_build.compile_graph_cuda

    def compile_also_emulated(*a, **k):
        k["emulate"] = True
        cg = real(*a, **k)
        drv.emu[cg.ptx] = cg.emu_module
        return cg
    monkeypatch.setattr(cuda_build, "compile_graph_cuda", compile_also_emulated)
    monkeypatch.setattr(cuda, "_driver", lambda: drv)
    monkeypatch.setattr(cuda, "_status", None)
    monkeypatch.setattr(cuda, "_devices", {})
    monkeypatch.setattr(gs, "_used_devices", {})
    monkeypatch.delenv("MXC_GPU_EMULATOR", raising=False)
    assert mx.context.num_gpus() == 1
    g = mx.gpu(0)
    dev = gs.get_device(g)
    assert isinstance(dev, cuda.CudaDevice) and gs.target_of(dev) == ("sm_80", False)
    assert mx.context.gpu_memory_info(0) == (1 << 30, 2 << 30)
    x, y = _r(3, 4), _r(3, 4)
    a, b = mx.nd.array(x, ctx=g), mx.nd.array(y, ctx=g)
    c = mx.nd.softmax(a * b + 1)
    e = np.exp(x * y + 1 - (x * y + 1).max(1, keepdims=True))
    np.testing.assert_allclose(c.asnumpy(), e / e.sum(1, keepdims=True), rtol=1e-5)
    z = mx.nd.zeros((3, 4), ctx=g)
    z[:] = a                                   # device to device on the stream
    np.testing.assert_array_equal(z.asnumpy(), x)
    assert drv.calls["dtod"] >= 1 and drv.calls["memset"] >= 1 and drv.calls["launch"] >= 1
    net = _mlp()
    exe = net.simple_bind(g, data=(4, 5))
    for v in exe.arg_dict.values():
        v[:] = _r(*v.shape)
    exe.forward(is_train=True)
    exe.backward(mx.nd.ones((4, 3), ctx=g))
    assert exe.grad_dict["fc1_weight"].asnumpy().any()
    mx.nd.waitall()
    before = dev.pool.stats()["in_use"]
    del a, b, c, z, exe
    gc.collect()
    assert dev.pool.stats()["in_use"] < before     # freed arrays go back to the pool
    g.empty_cache()
    assert dev.pool.stats()["cached"] == 0
