"""gluon.utils: split_data, split_and_load, clip_global_norm, check_sha1, download."""
import hashlib

import numpy as np
import pytest

import mxc as mx
from mxc import gluon
from mxc.base import MXNetError


def test_split_data_even_and_uneven():
    x = mx.nd.arange(20).reshape((10, 2))
    parts = gluon.utils.split_data(x, 2)
    assert [p.shape for p in parts] == [(5, 2), (5, 2)]
    np.testing.assert_array_equal(parts[1].asnumpy(), x.asnumpy()[5:])
    with pytest.raises(ValueError, match="evenly split"):
        gluon.utils.split_data(x, 3)
    parts = gluon.utils.split_data(x, 3, even_split=False)
    assert [p.shape[0] for p in parts] == [4, 3, 3]
    cols = gluon.utils.split_data(x, 2, batch_axis=1)
    np.testing.assert_array_equal(cols[1].asnumpy(), x.asnumpy()[:, 1:])
    assert gluon.utils.split_data(x, 1)[0] is x


def test_split_and_load():
    ctxs = [mx.cpu(0), mx.cpu(1)]
    parts = gluon.utils.split_and_load(np.arange(8).reshape(4, 2), ctxs)
    assert [p.context for p in parts] == ctxs
    np.testing.assert_array_equal(parts[1].asnumpy(), [[4, 5], [6, 7]])
    one = gluon.utils.split_and_load(mx.nd.ones((3, 1)), [mx.cpu(0)])
    assert len(one) == 1 and one[0].shape == (3, 1)


def test_clip_global_norm():
    a = mx.nd.array([3.0, 0.0])
    b = mx.nd.array([[0.0, 4.0]])
    norm = gluon.utils.clip_global_norm([a, b], 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(a.asnumpy(), [0.6, 0], rtol=1e-5)
    np.testing.assert_allclose(b.asnumpy(), [[0, 0.8]], rtol=1e-5)
    c = mx.nd.array([0.1, 0.1])
    n2 = gluon.utils.clip_global_norm([c], 10.0, check_isfinite=False)
    assert isinstance(n2, mx.nd.NDArray)
    np.testing.assert_allclose(c.asnumpy(), [0.1, 0.1], rtol=1e-6)   # below the limit


def test_check_sha1_and_download(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"mxc" * 1000)
    digest = hashlib.sha1(b"mxc" * 1000).hexdigest()
    assert gluon.utils.check_sha1(str(f), digest)
    assert not gluon.utils.check_sha1(str(f), "0" * 40)
    # a file already present is returned; anything else needs the network, which mxc lacks
    assert gluon.utils.download("http://example.com/data.bin", path=str(tmp_path),
                                sha1_hash=digest) == str(f)
    with pytest.raises(MXNetError, match="network"):
        gluon.utils.download("http://example.com/other.bin", path=str(tmp_path))
    with pytest.raises(MXNetError, match="network"):
        gluon.utils.download("http://example.com/data.bin", path=str(tmp_path),
                             sha1_hash="0" * 40)
