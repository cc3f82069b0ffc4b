"""mx.mod.Module: the real-MXNet Module training steps (module_train/ of the symbol reference
cases), fit/score/predict on a synthetic task, checkpoints, several contexts, callbacks, and
the errors of misuse."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError
from mxc.frontend import callback
from mxc.frontend import initializer as mxinit
from mxc.frontend import io as mxio
from mxc.frontend import kvstore as kvs
from mxc.frontend import metric as mxmetric
from mxc.frontend import module as mxmod
from mxc.frontend import optimizer as opt

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "mxnet_cases"

# README tolerances: (grad rtol, grad atol as a fraction of max|ref| or absolute, params rtol,
# params atol)
TOL = {
    "sym_mlp": {"g_rtol": 1e-4, "g_atol": 1e-6, "g_rel_atol": False, "p_rtol": 1e-4,
                "p_atol": 1e-6},
    "sym_convnet": {"g_rtol": 1e-3, "g_atol": 1e-5, "g_rel_atol": True, "p_rtol": 1e-5,
                    "p_atol": 1e-6},
}
# gradients of a conv bias feeding a train-mode BatchNorm are float noise: absolute only
NOISE = {"sym_convnet": {"conv1_bias"}}


def _close(got, ref, rtol, atol, what):
    err = np.abs(got - ref) - (atol + rtol * np.abs(ref))
    assert err.max() <= 0, (f"{what}: max |got-ref| = {np.abs(got - ref).max():.3g} "
                            f"(atol {atol:.3g}, rtol {rtol})")


def _fix_gamma_params(sym) -> set:
    """Gamma inputs of BatchNorm nodes with fix_gamma=True (the default)."""
    g = json.loads(sym.tojson())
    out = set()
    for n in g["nodes"]:
        if n["op"] == "BatchNorm":
            fix = n.get("attrs", n.get("param", {})).get("fix_gamma", "True")
            if fix in ("True", "true", "1"):
                out.add(g["nodes"][n["inputs"][1][0]]["name"])
    return out


def _reference_module(name, kvstore):
    d = CASES / name
    if not d.exists():
        pytest.skip(f"reference case {d} is not available")
    meta = json.loads((d / "meta.json").read_text())
    sym, args, aux = mx.model.load_checkpoint(str(d / name), 0)
    data = np.load(d / "in_data.npy")
    label = np.load(d / "in_softmax_label.npy")
    mod = mxmod.Module(sym)
    mod.bind(data_shapes=[("data", data.shape)], label_shapes=[("softmax_label", label.shape)],
             for_training=True)
    mod.set_params(args, aux)
    mod.init_optimizer(kvstore=kvstore, optimizer="sgd",
                       optimizer_params=(("learning_rate", 0.1), ("momentum", 0.9),
                                         ("wd", 1e-4)))
    assert mod._optimizer.rescale_grad == pytest.approx(meta["module_train"]["rescale_grad"])
    batch = mxio.DataBatch([mx.nd.array(data)], [mx.nd.array(label)])
    return d, meta, sym, mod, batch


@pytest.mark.parametrize("store", ["none", "kvstore"])
@pytest.mark.parametrize("name", ["sym_mlp", "sym_convnet"])
def test_module_train_steps_match_mxnet(name, store):
    """meta.json module_train.recipe: bind, set_params, init_optimizer(sgd, lr 0.1, momentum
    0.9, wd 1e-4), forward_backward + update twice on the same batch; gradients and
    parameters after each step against MXNet's. 'kvstore' runs the update in a local store."""
    kv = kvs.create("local") if store == "kvstore" else "local"
    d, meta, sym, mod, batch = _reference_module(name, kv)
    assert mod._update_on_kvstore == (store == "kvstore")
    tol = TOL[name]
    fixed_gamma = _fix_gamma_params(sym)
    for step in meta["module_train"]["steps"]:
        mod.forward_backward(batch)
        mod.update()
        sd = d / step["dir"]
        g = mod._exec_group
        for pname, grads in zip(g.param_names, g.grad_arrays):
            ref = np.load(sd / "grad" / f"{pname}.npy")
            got = grads[0].asnumpy()
            if pname in NOISE.get(name, ()):
                _close(got, ref, 0, 1e-6, f"step{step['step']} grad {pname}")
                continue
            atol = tol["g_atol"] * np.abs(ref).max() if tol["g_rel_atol"] else tol["g_atol"]
            _close(got, ref, tol["g_rtol"], atol, f"step{step['step']} grad {pname}")
        arg_params, aux_params = mod.get_params()
        for pname, v in list(arg_params.items()) + list(aux_params.items()):
            if pname in fixed_gamma and store == "kvstore":
                # the store updates its own copy of gamma, which the forward's write of 1
                # into the executor's array does not reach (MXNet's own reference used no
                # store: one device)
                continue
            ref = np.load(sd / "params_after" / f"{pname}.npy")
            rtol = 0 if pname in NOISE.get(name, ()) else tol["p_rtol"]
            _close(v.asnumpy(), ref, rtol, tol["p_atol"], f"step{step['step']} {pname}")


def test_fix_gamma_gamma_is_written_to_one():
    """MXNet's CPU BatchNorm writes 1 into the gamma array of a fix_gamma=True layer during
    a training forward, so weight decay then acts on 1 (0.99999 after step 1)."""
    d, _, _, mod, batch = _reference_module("sym_convnet", "local")
    mod.forward_backward(batch)
    mod.update()
    ref = np.load(d / "module_train/step1/params_after/bn1_gamma.npy")
    _close(mod.get_params()[0]["bn1_gamma"].asnumpy(), ref, 1e-5, 1e-6, "bn1_gamma")


def test_wd_mult_rule_is_applied():
    """Module passes sym/param_idx2name: biases get no weight decay."""
    _, meta, _, mod, _ = _reference_module("sym_mlp", "local")
    o = mod._optimizer
    for i, n in o.idx2name.items():
        assert o._get_wd(i) == pytest.approx(1e-4 * meta["module_train"]["effective_wd_mult"][n])


# ------------------------------------------------------------------------------------------
# a synthetic classification task
# ------------------------------------------------------------------------------------------
def _blobs(n=600, dim=8, classes=3, seed=0):
    centers = np.random.RandomState(0).randn(classes, dim) * 3     # the task: fixed
    rng = np.random.RandomState(seed + 1)                           # the samples
    y = rng.randint(0, classes, n)
    x = centers[y] + rng.randn(n, dim)
    return x.astype(np.float32), y.astype(np.float32)


def _mlp(classes=3):
    data = mx.sym.Variable("data")
    fc1 = mx.sym.FullyConnected(data, num_hidden=16, name="fc1")
    act = mx.sym.Activation(fc1, act_type="relu", name="relu1")
    fc2 = mx.sym.FullyConnected(act, num_hidden=classes, name="fc2")
    return mx.sym.SoftmaxOutput(fc2, name="softmax")


def _fit(context=None, num_epoch=6, kvstore="local", **kw):
    mx.random.seed(7)
    np.random.seed(7)
    x, y = _blobs()
    train = mxio.NDArrayIter(x[:480], y[:480], batch_size=32, shuffle=True)
    val = mxio.NDArrayIter(x[480:], y[480:], batch_size=32)
    mod = mxmod.Module(_mlp(), context=context or mx.cpu())
    mod.fit(train, eval_data=val, optimizer="sgd", kvstore=kvstore,
            optimizer_params={"learning_rate": 0.1, "momentum": 0.9}, num_epoch=num_epoch,
            **kw)
    return mod, val


def test_fit_learns_and_is_reproducible(caplog):
    with caplog.at_level(logging.INFO):
        mod, val = _fit()
    (name, acc), = mod.score(val, "acc")
    assert name == "accuracy" and acc > 0.9
    text = caplog.text
    for line in ("Epoch[0] Train-accuracy=", "Epoch[0] Time cost=",
                 "Epoch[5] Validation-accuracy="):
        assert line in text
    mod2, _ = _fit()
    p1, p2 = mod.get_params()[0], mod2.get_params()[0]
    for k in p1:
        np.testing.assert_array_equal(p1[k].asnumpy(), p2[k].asnumpy())


def test_fit_over_two_contexts_matches_one():
    """Two cpu contexts split each batch; the local kvstore sums their gradients and runs the
    optimizer: the same training as one context (to float rounding)."""
    one, _ = _fit(num_epoch=2)
    two, _ = _fit(context=[mx.cpu(0), mx.cpu(1)], num_epoch=2)
    assert two._kvstore is not None and two._update_on_kvstore
    p1, p2 = one.get_params()[0], two.get_params()[0]
    for k in p1:
        np.testing.assert_allclose(p1[k].asnumpy(), p2[k].asnumpy(), rtol=1e-4, atol=1e-5)


def test_fit_callbacks(tmp_path, caplog):
    prefix = str(tmp_path / "cb")
    seen = []
    with caplog.at_level(logging.INFO):
        mod, _ = _fit(num_epoch=2,
                      epoch_end_callback=[callback.do_checkpoint(prefix),
                                          lambda e, s, a, x: seen.append(e)],
                      batch_end_callback=[callback.Speedometer(32, 5),
                                          callback.log_train_metric(5),
                                          callback.ProgressBar(15)],
                      eval_end_callback=callback.LogValidationMetricsCallback())
    assert seen == [0, 1]
    assert (tmp_path / "cb-symbol.json").exists()
    assert (tmp_path / "cb-0001.params").exists() and (tmp_path / "cb-0002.params").exists()
    assert "Speed:" in caplog.text and "Train-accuracy" in caplog.text
    assert "Iter[0] Batch[5] Train-accuracy=" in caplog.text
    _, args, _ = mx.model.load_checkpoint(prefix, 2)
    np.testing.assert_array_equal(args["fc1_weight"].asnumpy(),
                                  mod.get_params()[0]["fc1_weight"].asnumpy())


def test_score_predict_with_padding():
    mod, _ = _fit(num_epoch=2)
    x, y = _blobs(n=50, seed=3)
    it = mxio.NDArrayIter(x, y, batch_size=16)         # 4 batches, the last padded by 14
    out = mod.predict(it)
    assert out.shape == (50, 3)
    direct = mod.predict(mxio.NDArrayIter(x[:48], y[:48], batch_size=16))
    np.testing.assert_allclose(out.asnumpy()[:48], direct.asnumpy(), rtol=1e-6)
    rows = []
    for outputs, nbatch, batch in mod.iter_predict(it):
        assert outputs[0].shape[0] == 16 - batch.pad
        rows.append(outputs[0].asnumpy())
    np.testing.assert_allclose(np.concatenate(rows), out.asnumpy(), rtol=1e-6)
    lists = mod.predict(it, merge_batches=False)
    assert len(lists) == 4 and lists[-1][0].shape == (2, 3)
    assert isinstance(mod.predict(it, always_output_list=True), list)
    assert mod.predict(it, num_batch=2).shape == (32, 3)
    # score counts the padded examples, as MXNet does
    m = mxmetric.create("acc")
    mod.score(it, m)
    assert m.num_inst == 64
    acc = (out.asnumpy().argmax(1) == y).mean()
    assert acc > 0.9


@pytest.mark.parametrize("store", ["none", "kvstore"])
def test_checkpoint_round_trip_with_optimizer_states(tmp_path, store):
    """Save after an epoch (with the momentum states), load into a new module, train both
    one more batch each: identical. 'kvstore': the states live in the store."""
    def kv():
        return kvs.create("local") if store == "kvstore" else "local"

    prefix = str(tmp_path / "m")
    mod, _ = _fit(num_epoch=1, kvstore=kv())
    assert mod._update_on_kvstore == (store == "kvstore")
    mod.save_checkpoint(prefix, 1, save_optimizer_states=True)
    assert Path(f"{prefix}-0001.states").exists()
    x, y = _blobs(seed=5)
    it = mxio.NDArrayIter(x[:64], y[:64], batch_size=32)

    loaded = mxmod.Module.load(prefix, 1, load_optimizer_states=True)
    loaded.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
    loaded.init_optimizer(kvstore=kv(), optimizer="sgd",
                          optimizer_params={"learning_rate": 0.1, "momentum": 0.9})
    p_mod, p_loaded = mod.get_params()[0], loaded.get_params()[0]
    for k in p_mod:
        np.testing.assert_array_equal(p_mod[k].asnumpy(), p_loaded[k].asnumpy())
    for m in (mod, loaded):             # continue training both: momentum states must agree
        it.reset()
        for batch in it:
            m.forward_backward(batch)
            m.update()
    p_mod, p_loaded = mod.get_params()[0], loaded.get_params()[0]
    for k in p_mod:
        np.testing.assert_allclose(p_mod[k].asnumpy(), p_loaded[k].asnumpy(), rtol=1e-6,
                                   atol=1e-7)
    # save_params / load_params
    mod.save_params(str(tmp_path / "p.params"))
    fresh = mxmod.Module(_mlp())
    fresh.bind(data_shapes=it.provide_data, label_shapes=it.provide_label, for_training=False)
    fresh.load_params(str(tmp_path / "p.params"))
    np.testing.assert_array_equal(fresh.get_params()[0]["fc2_bias"].asnumpy(),
                                  mod.get_params()[0]["fc2_bias"].asnumpy())


# ------------------------------------------------------------------------------------------
# lower-level API
# ------------------------------------------------------------------------------------------
def _bound(for_training=True, batch=8, **kw):
    mod = mxmod.Module(_mlp(), **kw)
    mod.bind(data_shapes=[("data", (batch, 8))], label_shapes=[("softmax_label", (batch,))],
             for_training=for_training, inputs_need_grad=for_training)
    mx.random.seed(0)
    mod.init_params(mxinit.Xavier())
    return mod


def test_shapes_and_names():
    mod = _bound()
    assert mod.data_names == ["data"] and mod.label_names == ["softmax_label"]
    assert mod.output_names == ["softmax_output"]
    assert [tuple(d) for d in mod.data_shapes] == [("data", (8, 8))]
    assert [tuple(d) for d in mod.label_shapes] == [("softmax_label", (8,))]
    assert mod.output_shapes == [("softmax_output", (8, 3))]
    arg_params, aux_params = mod.get_params()
    assert sorted(arg_params) == ["fc1_bias", "fc1_weight", "fc2_bias", "fc2_weight"]
    assert aux_params == {}


def test_forward_backward_outputs_and_input_grads():
    mod = _bound()
    x, y = _blobs(n=8)
    batch = mxio.DataBatch([mx.nd.array(x)], [mx.nd.array(y)])
    mod.forward(batch, is_train=True)
    mod.backward()
    out = mod.get_outputs()[0].asnumpy()
    np.testing.assert_allclose(out.sum(1), np.ones(8), rtol=1e-5)
    # the executor of the same symbol gives the same input gradient
    args = dict(mod.get_params()[0])
    exe = _mlp().simple_bind(mx.cpu(), data=(8, 8), grad_req={"data": "write"})
    exe.copy_params_from(args)
    exe.forward(is_train=True, data=mx.nd.array(x), softmax_label=mx.nd.array(y))
    exe.backward()
    np.testing.assert_allclose(mod.get_input_grads()[0].asnumpy(),
                               exe.grad_dict["data"].asnumpy(), rtol=1e-5, atol=1e-7)


def test_forward_with_other_batch_size_reshapes():
    mod = _bound(for_training=False)
    x, _ = _blobs(n=8)
    mod.forward(mxio.DataBatch([mx.nd.array(x)]), is_train=False)
    full = mod.get_outputs()[0].asnumpy()
    mod.forward(mxio.DataBatch([mx.nd.array(x[:3])]), is_train=False)
    assert mod.get_outputs()[0].shape == (3, 3)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), full[:3], rtol=1e-5)
    assert mod.predict(x[:5]).shape == (5, 3)


def test_fixed_params_are_not_updated():
    mod = mxmod.Module(_mlp(), fixed_param_names=["fc1_weight"])
    mod.bind(data_shapes=[("data", (8, 8))], label_shapes=[("softmax_label", (8,))])
    mod.init_params()
    mod.init_optimizer(optimizer_params={"learning_rate": 1.0})
    before = {k: v.asnumpy().copy() for k, v in mod.get_params()[0].items()}
    x, y = _blobs(n=8)
    mod.forward_backward(mxio.DataBatch([mx.nd.array(x)], [mx.nd.array(y)]))
    mod.update()
    after = mod.get_params()[0]
    np.testing.assert_array_equal(after["fc1_weight"].asnumpy(), before["fc1_weight"])
    assert not np.array_equal(after["fc2_weight"].asnumpy(), before["fc2_weight"])


def test_update_metric_and_manual_optimizer():
    mod = _bound()
    sgd = opt.SGD(learning_rate=0.1, rescale_grad=1.0 / 8)
    mod.init_optimizer(optimizer=sgd)
    assert mod._optimizer is sgd and sgd.idx2name
    x, y = _blobs(n=8)
    batch = mxio.DataBatch([mx.nd.array(x)], [mx.nd.array(y)])
    mod.forward_backward(batch)
    mod.update()
    m = mxmetric.create("acc")
    mod.update_metric(m, batch.label)
    assert m.num_inst == 8


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
def test_bind_twice_is_ignored_without_force_rebind(caplog):
    mod = _bound()
    with caplog.at_level(logging.WARNING):
        mod.bind(data_shapes=[("data", (4, 8))], label_shapes=[("softmax_label", (4,))])
    assert "Already bound, ignoring bind()" in caplog.text
    assert mod.data_shapes[0].shape == (8, 8)
    mod.bind(data_shapes=[("data", (4, 8))], label_shapes=[("softmax_label", (4,))],
             force_rebind=True)
    assert mod.data_shapes[0].shape == (4, 8)
    assert mod.params_initialized     # parameters survive the re-bind


def test_wrong_names_and_shapes():
    with pytest.raises(ValueError, match="not found in symbol.list_arguments"):
        mxmod.Module(_mlp(), data_names=["image"])
    mod = mxmod.Module(_mlp())
    with pytest.raises(ValueError, match="don't match names specified by data_names"):
        mod.bind(data_shapes=[("image", (8, 8))])
    with pytest.raises(MXNetError):
        mod.bind(data_shapes=[("data", (8, 8))], label_shapes=[("softmax_label", (5,))])
    mod = _bound(for_training=False)
    x, _ = _blobs(n=8, dim=6)
    with pytest.raises(MXNetError, match=r"'fc1_weight' from \(16, 8\) to \(16, 6\)"):
        mod.forward(mxio.DataBatch([mx.nd.array(x)]))
    with pytest.raises(MXNetError, match="batch has 2 data arrays"):
        mod.forward(mxio.DataBatch([mx.nd.zeros((8, 8)), mx.nd.zeros((8, 8))]))


def test_missing_and_misshapen_params():
    mod = mxmod.Module(_mlp())
    mod.bind(data_shapes=[("data", (8, 8))], label_shapes=[("softmax_label", (8,))])
    good = {"fc1_weight": mx.nd.zeros((16, 8)), "fc1_bias": mx.nd.zeros((16,)),
            "fc2_weight": mx.nd.zeros((3, 16))}
    with pytest.raises(RuntimeError, match="fc2_bias is not presented"):
        mod.set_params(good, {})
    with pytest.raises(MXNetError, match=r"'fc2_bias' has shape \(4,\)"):
        mod.set_params(dict(good, fc2_bias=mx.nd.zeros((4,))), {})
    mod.set_params(good, {}, allow_missing=True)
    assert mod.params_initialized


def test_out_of_order_calls():
    mod = mxmod.Module(_mlp())
    with pytest.raises(AssertionError):         # ModuleError is an AssertionError too
        mod.forward(mxio.DataBatch([mx.nd.zeros((8, 8))]))
    with pytest.raises(MXNetError, match="call bind before initializing"):
        mod.init_params()
    mod.bind(data_shapes=[("data", (8, 8))], label_shapes=[("softmax_label", (8,))],
             for_training=False)
    with pytest.raises(MXNetError, match="init_optimizer: bind the module and initialize"):
        mod.init_optimizer()
    mod.init_params()
    with pytest.raises(MXNetError, match="call init_optimizer first"):
        mod.update()
    mod.forward(mxio.DataBatch([mx.nd.zeros((8, 8))]), is_train=False)
    with pytest.raises(MXNetError, match="for_training=True"):
        mod.backward()
    with pytest.raises(MXNetError, match="inputs_need_grad"):
        mod.get_input_grads()
    with pytest.raises(MXNetError, match="number of epochs"):
        mod.fit(mxio.NDArrayIter(np.zeros((8, 8), np.float32), np.zeros(8, np.float32)))
