"""SampleBuffer (deterministic bounded subset, mergeable) and the sample-based metrics on it: RSA and
mutual k-NN against SciPy / loop references."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.similarity import SampleBuffer, mutual_knn, rsa
from convergent.stats._buffer import priority
from tests.helpers import refs


def _feeds(n=300, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n)


def test_which_inputs_are_kept_depends_only_on_the_inputs_and_seed():
    x, idx = _feeds()
    one = SampleBuffer(40, 5).update(x, idx)
    rng = np.random.default_rng(1)
    order = rng.permutation(300)
    shuffled = SampleBuffer(40, 5)
    for chunk in np.array_split(order, 7):
        shuffled.update(x[chunk], idx[chunk])
    shards = [SampleBuffer(40, 5).update(x[c], idx[c]) for c in np.array_split(np.arange(300), 3)]
    merged = shards[0].merge(shards[1]).merge(shards[2])
    for buf in (shuffled, merged):
        np.testing.assert_array_equal(buf.index, one.index)
        np.testing.assert_array_equal(buf.features, one.features)
        assert buf.seen == 300 and len(buf) == 40
    # the kept inputs are the 40 smallest keys, spread over the whole range
    want = np.sort(np.argsort(priority(idx))[:40])
    np.testing.assert_array_equal(one.index, want)
    assert one.index.max() > 200 and one.index.min() < 100
    np.testing.assert_array_equal(one.features, x[one.index])
    other = SampleBuffer(40, 5, seed=1).update(x, idx)
    assert not np.array_equal(other.index, one.index)
    small = SampleBuffer(1000, 5).update(x, idx)
    assert len(small) == 300 and "300/1000" in repr(small)


def test_rsa_equals_scipy_reference():
    x, y = refs.pair(60, 8, 5, seed=2)
    assert abs(rsa(x, y).value - refs.rsa_ref(x, y)) < 1e-10
    res = rsa(x, 2.0 * x + 1.0)  # each input's correlation pattern unchanged
    assert abs(res.value - 1.0) < 1e-12


def test_rsa_with_a_constant_input_and_a_constant_net():
    x, y = refs.pair(30, 6, 4, seed=3)
    x[4] = 2.0  # one input's features all equal: correlation 0 with every other input
    assert np.isfinite(rsa(x, y).value)
    res = rsa(np.ones((30, 3)), y)
    assert res.value == 0.0 and not res.defined and "constant" in res.note


@pytest.mark.parametrize("k", [1, 5, 12])
def test_mutual_knn_equals_loop_reference(k):
    x, y = refs.pair(50, 7, 4, seed=4)
    res = mutual_knn(x, y, k=k)
    assert abs(res.value - refs.mutual_knn_ref(x, y, k)) < 1e-12
    assert res.to_dict()["chance"] == pytest.approx(k / 49)
    assert mutual_knn(x, 3 * x, k=k).value == 1.0


def test_metrics_read_a_joint_buffer():
    x, y = refs.pair(200, 6, 4, seed=5)
    z = np.random.default_rng(0).normal(size=(200, 3))
    ranges = {"n0": (0, 6), "n1": (6, 10), "n2": (10, 13)}
    buf = SampleBuffer(50, 13, unit_ranges=ranges).update(
        np.concatenate([x, y, z], 1), np.arange(200)
    )
    kept = buf.index
    assert abs(rsa(buf, nets=("n0", "n1")).value - refs.rsa_ref(x[kept], y[kept])) < 1e-10
    two = SampleBuffer(50, 10, unit_ranges={"p": (0, 6), "q": (6, 10)})
    two.update(np.concatenate([x, y], 1), np.arange(200))
    assert abs(mutual_knn(two, k=5).value - refs.mutual_knn_ref(x[kept], y[kept], 5)) < 1e-12
    assert mutual_knn(two, k=5).nets == ("p", "q")


def test_errors():
    x, idx = _feeds(20)
    for name in ("capacity", "dim"):
        with pytest.raises(ValueError, match=f"'{name}' parameter of SampleBuffer"):
            SampleBuffer(**({"capacity": 5, "dim": 5} | {name: 0}))
    buf = SampleBuffer(5, 5)
    with pytest.raises(ValueError, match=r"expects features \(B, 5\)"):
        buf.update(x[:, :3], idx)
    with pytest.raises(ValueError, match="non-negative integer input indices"):
        buf.update(x, -idx - 1)
    buf.update(x, idx)
    with pytest.raises(ValueError, match="saw an input index twice"):
        buf.update(x[:3], idx[:3] * 0 + buf.index[0])
    with pytest.raises(TypeError, match="expects a SampleBuffer"):
        buf.merge(object())
    with pytest.raises(ValueError, match="different \\(capacity, dim, seed\\)"):
        buf.merge(SampleBuffer(5, 5, seed=3))
    y = x[:, :2]
    with pytest.raises(ValueError, match="not both"):
        rsa(buf, y)
    with pytest.raises(ValueError, match="carries no unit ranges"):
        rsa(buf)
    joint = SampleBuffer(5, 5, unit_ranges={"a": (0, 2), "b": (2, 4), "c": (4, 5)})
    with pytest.raises(ValueError, match="say which two"):
        rsa(joint.update(x, idx))
    with pytest.raises(ValueError, match="No net 'z'"):
        rsa(joint, nets=("a", "z"))
    with pytest.raises(ValueError, match="pass net B's features"):
        rsa(x)
    with pytest.raises(ValueError, match="same inputs"):
        rsa(x, y[:5])
    with pytest.raises(ValueError, match="at least 3 inputs"):
        rsa(x[:2], y[:2])
    with pytest.raises(ValueError, match="'k' parameter of mutual_knn"):
        mutual_knn(x, y, k=20)
