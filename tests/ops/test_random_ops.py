"""Random sampling: _random_<dist>, _random_<dist>_like, _sample_<dist>, _random_randint,
_sample_multinomial and _shuffle, through mx.nd.random / mx.sym.random.

Statistical checks use fixed seeds (mx.random.seed), so they are deterministic; their bounds
are several standard errors wide, so any seed passes as long as the distribution is right.
"""
import math

import numpy as np
import pytest

import mxc as mx
from mxc.base import MXNetError
from mxc.testing import run_op

N = 100_000


def _np(x):
    return x.asnumpy().astype(np.float64)


def _check_moments(x, mean, var, z=6.0):
    """Sample mean and variance within ``z`` standard errors of the true values."""
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    assert abs(x.mean() - mean) <= z * math.sqrt(var / n) + 1e-12, (x.mean(), mean)
    m4 = ((x - mean) ** 4).mean()
    se_var = math.sqrt(max(m4 - var * var, 0.0) / n)
    assert abs(x.var() - var) <= z * se_var + 1e-9, (x.var(), var)


def _ks_normal(x):
    """Kolmogorov-Smirnov distance of ``x`` from N(0, 1)."""
    x = np.sort(np.asarray(x, np.float64))
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    n = x.size
    return max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())


def _ks2(a, b):
    """Two-sample Kolmogorov-Smirnov distance."""
    a, b = np.sort(a), np.sort(b)
    v = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, v, "right") / a.size -
                  np.searchsorted(b, v, "right") / b.size).max()


def _chi2_z(counts, probs):
    """Chi-square statistic of ``counts`` against ``probs`` as a z-score (cells with fewer
    than 10 expected counts pooled)."""
    counts = np.asarray(counts, np.float64)
    expected = np.asarray(probs, np.float64) * counts.sum()
    keep = expected >= 10
    o = np.append(counts[keep], counts[~keep].sum())
    e = np.append(expected[keep], expected[~keep].sum())
    o, e = o[e > 0], e[e > 0]
    dof = max(len(o) - 1, 1)
    return (((o - e) ** 2 / e).sum() - dof) / math.sqrt(2 * dof)


def _poisson_pmf(lam, kmax):
    k = np.arange(kmax)
    return np.exp(-lam + k * math.log(lam) - np.array([math.lgamma(i + 1) for i in k]))


# ---------------------------------------------------------------------------------------------
# distributions: moments and shape of the distribution
# ---------------------------------------------------------------------------------------------
MOMENTS = [
    ("uniform", (-1.0, 3.0), 1.0, 16 / 12),
    ("normal", (2.0, 0.5), 2.0, 0.25),
    ("exponential", (2.0,), 2.0, 4.0),            # scale 2 (rate 0.5)
    ("gamma", (0.4, 2.0), 0.8, 1.6),
    ("gamma", (1.0, 1.0), 1.0, 1.0),
    ("gamma", (9.0, 0.5), 4.5, 2.25),
    ("poisson", (0.5,), 0.5, 0.5),
    ("poisson", (6.0,), 6.0, 6.0),
    ("poisson", (25.0,), 25.0, 25.0),
    ("poisson", (1e4,), 1e4, 1e4),
    ("negative_binomial", (3, 0.4), 4.5, 11.25),
    ("generalized_negative_binomial", (2.0, 0.3), 2.0, 3.2),
    ("generalized_negative_binomial", (5.0, 0.0), 5.0, 5.0),
]


@pytest.mark.parametrize("dist,params,mean,var", MOMENTS)
def test_scalar_parameter_moments(dist, params, mean, var):
    mx.random.seed(42)
    x = getattr(mx.nd.random, dist)(*params, shape=(N,), dtype="float64")
    assert x.shape == (N,) and x.dtype == np.float64
    _check_moments(_np(x), mean, var)


def test_distribution_shapes():
    mx.random.seed(1)
    n = 50_000
    crit = 2.2 * math.sqrt(2 / n)      # two-sample KS at ~1e-4
    rng = np.random.default_rng(1)
    for alpha in (0.3, 2.0, 50.0):
        x = _np(mx.nd.random.gamma(alpha, 1.0, shape=(n,)))
        assert _ks2(x, rng.gamma(alpha, 1.0, n)) < crit, alpha
    for dt in ("float32", "float64"):
        z = _np(mx.nd.random.normal(0, 1, shape=(n,), dtype=dt))
        assert _ks_normal(z) < 1.65 / math.sqrt(n), dt
    # run-time lambdas exercise both the inversion (< 10) and the PTRS (>= 10) paths
    lams = np.array([0.7, 9.5, 10.5, 80.0])
    x = mx.nd.random.poisson(mx.nd.array(lams), shape=(n,)).asnumpy()
    assert x.shape == (4, n)
    for lam, row in zip(lams, x):
        assert np.all(row == np.round(row)) and row.min() >= 0
        kmax = int(lam + 12 * math.sqrt(lam) + 20)
        pmf = _poisson_pmf(lam, kmax)
        pmf[-1] += 1 - pmf.sum()
        counts = np.bincount(np.minimum(row.astype(np.int64), kmax - 1), minlength=kmax)
        assert abs(_chi2_z(counts, pmf)) < 5, lam


def test_sample_ops_per_row_parameters():
    mx.random.seed(3)
    m = 20_000
    lo, hi = mx.nd.array([0.0, 10.0, -5.0]), mx.nd.array([1.0, 20.0, -4.0])
    u = mx.nd.random.uniform(lo, hi, shape=(m,))
    assert u.shape == (3, m) and u.dtype == np.float32
    for r, (a, b) in enumerate(zip(lo.asnumpy(), hi.asnumpy())):
        _check_moments(u.asnumpy()[r], (a + b) / 2, (b - a) ** 2 / 12)
        assert u.asnumpy()[r].min() >= a and u.asnumpy()[r].max() <= b   # float rounding
    mu = mx.nd.array([[0.0, 5.0], [-3.0, 100.0]], dtype="float64")
    sigma = mx.nd.array([[1.0, 0.1], [2.0, 10.0]], dtype="float64")
    z = mx.nd.random.normal(mu, sigma, shape=(m, 1), dtype="float64")
    assert z.shape == (2, 2, m, 1) and z.dtype == np.float64
    for i in range(2):
        for j in range(2):
            _check_moments(z.asnumpy()[i, j], mu.asnumpy()[i, j], sigma.asnumpy()[i, j] ** 2)
    # one sample per distribution when shape is not given; float32 output by default
    one = mx.nd.random.gamma(mx.nd.array([1.0, 2.0], dtype="float64"), mx.nd.array([1.0, 3.0],
                                                                                  dtype="float64"))
    assert one.shape == (2,) and one.dtype == np.float32
    cases = [
        ("exponential", [mx.nd.array([0.5, 4.0])], lambda s: (s, s * s)),   # frontend: scale
        ("gamma", [mx.nd.array([0.5, 3.0]), mx.nd.array([2.0, 0.5])],
         lambda a, b: (a * b, a * b * b)),
        ("poisson", [mx.nd.array([2.0, 40.0])], lambda lam: (lam, lam)),
        ("negative_binomial", [mx.nd.array([2.0, 5.0]), mx.nd.array([0.5, 0.8])],
         lambda k, p: (k * (1 - p) / p, k * (1 - p) / (p * p))),
        ("generalized_negative_binomial", [mx.nd.array([3.0, 4.0]), mx.nd.array([0.0, 0.5])],
         lambda mu_, a: (mu_, mu_ + a * mu_ * mu_)),
    ]
    for dist, params, moments in cases:
        x = getattr(mx.nd.random, dist)(*params, shape=(m,))
        assert x.shape == (2, m), dist
        for r in range(2):
            mean, var = moments(*[float(p.asnumpy()[r]) for p in params])
            _check_moments(x.asnumpy()[r], mean, var)
    # the operators themselves (graph level), MXNet's input names
    outs, _, _ = run_op("_sample_exponential", [np.array([1.0, 0.25], np.float32)],
                        {"shape": (4, 5)})
    assert outs[0].shape == (2, 4, 5) and np.all(outs[0] > 0)
    assert mx.sym.sample_normal(mx.sym.var("a"), mx.sym.var("b")).list_arguments() == ["a", "b"]
    assert mx.sym.random.normal(mx.sym.var("a"), mx.sym.var("b")).list_arguments() == ["a", "b"]


def test_like_ops():
    mx.random.seed(4)
    data = mx.nd.zeros((300, 200), dtype="float64")
    u = mx.nd.random.uniform_like(data, low=2.0, high=4.0)
    assert u.shape == data.shape and u.dtype == np.float64
    assert u.asnumpy().min() >= 2.0 and u.asnumpy().max() < 4.0
    _check_moments(u.asnumpy(), 3.0, 4 / 12)
    z = mx.nd.random.normal_like(mx.nd.zeros((300, 200)), loc=1.0, scale=3.0)
    assert z.dtype == np.float32
    _check_moments(z.asnumpy(), 1.0, 9.0)
    p = mx.nd.random.poisson_like(mx.nd.zeros((4, 5), dtype="float16"), lam=3.0)
    assert p.shape == (4, 5) and p.dtype == np.float16


# ---------------------------------------------------------------------------------------------
# ranges, dtypes and shapes
# ---------------------------------------------------------------------------------------------
def test_ranges_dtypes_and_shapes():
    mx.random.seed(5)
    for dt in ("float16", "float32", "float64"):
        x = mx.nd.random.uniform(-2, 5, shape=(4000,), dtype=dt)
        assert x.dtype == np.dtype(dt)
        v = x.asnumpy()
        assert v.min() >= -2 and v.max() <= 5 and v.std() > 1
        for name, params in [("normal", (0, 1)), ("gamma", (2, 2)), ("exponential", (1,)),
                             ("poisson", (3,))]:
            y = getattr(mx.nd.random, name)(*params, shape=(2, 3), dtype=dt)
            assert y.dtype == np.dtype(dt) and y.shape == (2, 3)
    assert mx.nd.random.uniform(3, 3, shape=(5,)).asnumpy().tolist() == [3.0] * 5
    assert mx.nd.random.normal(0, 1).shape == (1,)                  # numbers: shape 1
    assert mx.nd.random.normal(0, 1).dtype == np.float32
    assert mx.nd.random.uniform(0, 1, shape=7).shape == (7,)
    assert mx.nd.random.gamma(2, 1, shape=(0, 3)).shape == (0, 3)
    assert mx.nd.random.randn(2, 3, loc=10).shape == (2, 3)
    assert mx.nd.random.randn().shape == (1,)
    assert mx.random.uniform(0, 1, shape=(2,)).shape == (2,)       # mx.random re-exports
    e = mx.nd.random.exponential(1, shape=(5000,)).asnumpy()
    g = mx.nd.random.gamma(0.1, 1, shape=(5000,), dtype="float64").asnumpy()
    assert e.min() > 0 and g.min() >= 0 and np.isfinite(g).all()
    pz = mx.nd.random.poisson(0.0, shape=(100,)).asnumpy()
    assert np.all(pz == 0)
    nb = mx.nd.random.negative_binomial(4, 1.0, shape=(100,)).asnumpy()
    assert np.all(nb == 0)
    # out= decides shape and dtype like MXNet's imperative shape inference
    out = mx.nd.zeros((3, 4), dtype="float64")
    r = mx.nd.random.uniform(5, 6, out=out)
    assert r is out and out.asnumpy().min() >= 5
    # the raw operators keep MXNet's attribute defaults
    outs, _, _ = run_op("_random_uniform", [], {"shape": (2, 2)})
    assert outs[0].dtype == np.float32 and outs[0].shape == (2, 2)
    outs, _, _ = run_op("random_normal", [], {"shape": "(3,)", "dtype": "None", "loc": "1"})
    assert outs[0].shape == (3,)


def test_randint():
    mx.random.seed(6)
    r = mx.nd.random.randint(-3, 5, shape=(40_000,))
    assert r.dtype == np.int32
    v = r.asnumpy()
    assert v.min() == -3 and v.max() == 4
    assert abs(_chi2_z(np.bincount(v + 3), np.full(8, 1 / 8))) < 5
    big = mx.nd.random.randint(0, 2 ** 40, shape=(1000,), dtype="int64")
    assert big.dtype == np.int64
    assert big.asnumpy().min() >= 0 and big.asnumpy().max() < 2 ** 40
    assert big.asnumpy().max() > 2 ** 39
    assert mx.nd.random.randint(7, 8, shape=(3,)).asnumpy().tolist() == [7, 7, 7]
    assert mx.nd.random.randint(0, 10).shape == (1,)


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------
def test_seed_reproducibility():
    calls = [lambda: mx.nd.random.uniform(0, 1, shape=(64,)),
             lambda: mx.nd.random.normal(0, 1, shape=(64,)),
             lambda: mx.nd.random.gamma(0.5, 1, shape=(64,)),
             lambda: mx.nd.random.poisson(mx.nd.array([3.0, 30.0]), shape=(32,)),
             lambda: mx.nd.random.randint(0, 1000, shape=(64,)),
             lambda: mx.nd.random.multinomial(mx.nd.array([0.25] * 4), shape=(64,)),
             lambda: mx.nd.random.shuffle(mx.nd.arange(64))]

    def draw(seed):
        if seed is not None:
            mx.random.seed(seed)
        return [c().asnumpy() for c in calls]

    a, b, c = draw(123), draw(123), draw(124)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        assert (x != z).mean() > 0.3
    d, e = draw(None), draw(None)          # consecutive draws differ
    for x, y in zip(d, e):
        assert (x != y).mean() > 0.3
    with pytest.raises(ValueError):
        mx.random.seed(1.5)


def test_symbol_api_and_executor():
    data = mx.sym.var("data")
    y = mx.sym.random.uniform(-1, 1, shape=(3, 4)) * 2 + data       # fuses with consumers
    ex = y.bind(mx.cpu(), {"data": mx.nd.ones((3, 4))})
    mx.random.seed(9)
    a = ex.forward()[0].asnumpy()
    b = ex.forward()[0].asnumpy()
    mx.random.seed(9)
    c = ex.forward()[0].asnumpy()
    assert a.min() >= -1 and a.max() <= 3
    assert (a != b).mean() > 0.5                     # fresh numbers every forward
    np.testing.assert_array_equal(a, c)
    mu, sigma = mx.sym.var("mu"), mx.sym.var("sigma")
    s = mx.sym.random.normal(mu, sigma, shape=(5000,))
    assert s.list_arguments() == ["mu", "sigma"]
    assert s.infer_shape(mu=(2,), sigma=(2,))[1] == [(2, 5000)]
    out = s.bind(mx.cpu(), {"mu": mx.nd.array([0, 100]), "sigma": mx.nd.array([1, 2])}) \
        .forward()[0].asnumpy()
    assert abs(out[0].mean()) < 0.1 and abs(out[1].mean() - 100) < 0.2
    m = mx.sym.random.multinomial(data)                 # symbol default: get_prob=True
    assert len(m.list_outputs()) == 2
    assert len(mx.sym.random.multinomial(data, get_prob=False).list_outputs()) == 1
    sh = mx.sym.random.shuffle(data)
    r = sh.bind(mx.cpu(), {"data": mx.nd.arange(20).reshape((10, 2))}).forward()[0].asnumpy()
    assert sorted(r[:, 0].tolist()) == list(range(0, 20, 2))
    with pytest.raises(TypeError):
        mx.sym.random.uniform(mu, 1.0)


# ---------------------------------------------------------------------------------------------
# multinomial
# ---------------------------------------------------------------------------------------------
def test_multinomial_frequencies_and_shapes():
    mx.random.seed(10)
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    s = mx.nd.random.multinomial(mx.nd.array(probs), shape=40_000)
    assert s.shape == (3, 40_000) and s.dtype == np.int32
    for row, p in zip(s.asnumpy(), probs):
        counts = np.bincount(row, minlength=4)
        assert np.all(counts[p == 0] == 0)
        assert abs(_chi2_z(counts[p > 0], p[p > 0])) < 5
    one = mx.nd.array([0.3, 0.7])
    assert mx.nd.random.multinomial(one).shape == (1,)
    assert mx.nd.random.multinomial(one, shape=(2, 3)).shape == (2, 3)
    assert mx.nd.random.multinomial(mx.nd.ones((2, 3, 4)) / 4).shape == (2, 3)
    for dt in ("uint8", "float32", "float64"):
        assert mx.nd.random.multinomial(one, shape=4, dtype=dt).dtype == np.dtype(dt)
    x, lp = mx.nd.random.multinomial(mx.nd.array(probs[:2]), shape=(6,), get_prob=True)
    idx = x.asnumpy()
    np.testing.assert_allclose(lp.asnumpy(), np.log(probs[np.arange(2)[:, None], idx]),
                               rtol=1e-6)
    x64, lp64 = mx.nd.random.multinomial(mx.nd.array(probs, dtype="float64"), get_prob=True)
    assert lp64.dtype == np.float64 and x64.shape == (3,)


def test_multinomial_gradient():
    p = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], np.float32)
    dprob = np.arange(1, 11, dtype=np.float32).reshape(2, 5)
    outs, grads, _ = run_op("_sample_multinomial", [p], {"shape": (5,), "get_prob": True},
                            head_grads=[np.zeros((2, 5), np.int32), dprob])
    want = np.zeros_like(p)
    for n in range(2):
        for m in range(5):
            c = outs[0][n, m]
            want[n, c] += dprob[n, m] / p[n, c]
    np.testing.assert_allclose(grads[0], want, rtol=1e-6)
    # without get_prob (and for the samplers) the parameters get zero gradients
    x = mx.nd.array([0.5, 1.0])
    x.attach_grad()
    with mx.autograd.record():
        y = mx.nd.random.normal(x, mx.nd.array([1.0, 1.0]), shape=(3,))
        z = (y * y).sum()
    z.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), [0, 0])


# ---------------------------------------------------------------------------------------------
# shuffle
# ---------------------------------------------------------------------------------------------
def test_shuffle_is_a_permutation():
    mx.random.seed(11)
    x = np.arange(300, dtype=np.float32).reshape(100, 3)
    y = mx.nd.random.shuffle(mx.nd.array(x)).asnumpy()
    assert y.shape == x.shape
    assert sorted(y[:, 0].tolist()) == x[:, 0].tolist()
    np.testing.assert_array_equal(y[:, 1:] - y[:, :1], np.tile([1, 2], (100, 1)))  # rows kept
    assert (y[:, 0] != x[:, 0]).mean() > 0.5
    big = mx.nd.random.shuffle(mx.nd.arange(50_000, dtype="int32")).asnumpy()
    assert np.array_equal(np.sort(big), np.arange(50_000))
    # every position equally likely: 4 items, many shuffles
    counts = np.zeros((4, 4))
    small = mx.nd.array([0, 1, 2, 3])
    for _ in range(800):
        counts[np.arange(4), mx.nd.random.shuffle(small).asnumpy().astype(int)] += 1
    assert abs(_chi2_z(counts.ravel(), np.full(16, 1 / 16))) < 5
    assert mx.nd.random.shuffle(mx.nd.array([[1.0, 2.0]])).asnumpy().tolist() == [[1.0, 2.0]]
    assert mx.nd.random.shuffle(mx.nd.zeros((0, 2))).shape == (0, 2)
    outs, _, _ = run_op("shuffle", [np.arange(6, dtype=np.float64)], {})
    assert sorted(outs[0].tolist()) == list(range(6))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
ERRORS = [
    lambda: mx.nd.random.uniform(2, 1),
    lambda: mx.nd.random.normal(0, 0),
    lambda: mx.nd.random.gamma(0, 1),
    lambda: mx.nd.random.gamma(1, -1),
    lambda: mx.nd.random.exponential(-1),
    lambda: mx.nd.random.poisson(-0.5),
    lambda: mx.nd.random.negative_binomial(-1, 0.5),
    lambda: mx.nd.random.negative_binomial(2, 1.5),
    lambda: mx.nd.random.generalized_negative_binomial(-1, 0.5),
    lambda: mx.nd.random.generalized_negative_binomial(1, -0.5),
    lambda: mx.nd.random.randint(5, 1),
    lambda: mx.nd.random.randint(0, 5, dtype="float32"),
    lambda: mx.nd.random.uniform(0, 1, dtype="int32"),
    lambda: mx.nd.random.uniform(0, 1, shape=(-1, 2)),
    lambda: mx.nd.random.uniform(mx.nd.array([0, 1]), mx.nd.array([1, 2, 3])),
    lambda: mx.nd.random.uniform(mx.nd.array([0]), mx.nd.array([1]), shape=(0,)),
    lambda: mx.nd.random.uniform_like(mx.nd.zeros((2,), dtype="int32")),
    lambda: mx.nd.random.multinomial(mx.nd.zeros((2, 0))),
    lambda: mx.nd.random.multinomial(mx.nd.array([0.5, 0.5]), dtype="int64"),
    lambda: mx.nd.random.multinomial(mx.nd.array([1, 0], dtype="int32")),
    lambda: run_op("_random_uniform", [], {"lo": 1.0}),
]


@pytest.mark.parametrize("call", ERRORS)
def test_bad_parameters_raise(call):
    with pytest.raises(MXNetError):
        call()


def test_bad_frontend_arguments():
    with pytest.raises(TypeError):
        mx.nd.random.uniform(mx.nd.array([0.0]), 1.0)
    with pytest.raises(TypeError):
        mx.nd.random.normal(0.0, mx.nd.array([1.0]))
    with pytest.raises(ValueError):
        mx.nd.random.uniform("0", 1)
    with pytest.raises(ValueError):
        mx.nd.random.randint(mx.nd.array([0]), mx.nd.array([3]))
