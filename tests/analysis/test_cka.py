"""Linear and debiased CKA from moments against Gram-matrix formulas; invariances; edge cases;
the layer x layer matrix; the minibatch estimate."""

from __future__ import annotations

import numpy as np
import pytest

from convergent import ConvergentError
from convergent.similarity import (
    MinibatchCKA,
    debiased_cka,
    joint_moments,
    layer_cka_matrix,
    linear_cka,
    pair_blocks,
    unbiased_hsic_matrix,
)
from convergent.stats import Moments
from tests.helpers import refs


@pytest.mark.parametrize("shape", [(60, 6, 5), (25, 3, 9), (12, 30, 20)])
def test_linear_cka_equals_gram_formula(shape):
    x, y = refs.pair(*shape)
    assert abs(linear_cka(x, y).value - refs.cka_gram(refs.centred(x), refs.centred(y))) < 1e-8


@pytest.mark.parametrize("shape", [(8, 3, 4), (40, 6, 5), (15, 30, 20)])
def test_debiased_cka_equals_textbook_unbiased_hsic(shape):
    x, y = refs.pair(*shape, seed=1)
    assert abs(debiased_cka(x, y).value - refs.debiased_cka_gram(x, y)) < 1e-8


def test_debiased_cka_from_streamed_shards_equals_textbook():
    x, y = refs.pair(90, 7, 4, seed=2, shift=50.0)
    joint = np.concatenate([x, y], axis=1)
    a = joint_moments({"a": x[:31], "b": y[:31]})
    for start in range(31, 90, 20):
        a.merge(joint_moments({"a": x[start : start + 20], "b": y[start : start + 20]}))
    assert abs(debiased_cka(a).value - refs.debiased_cka_gram(x, y)) < 1e-8
    assert abs(linear_cka(a).value - refs.cka_gram(refs.centred(x), refs.centred(y))) < 1e-8
    del joint


@pytest.mark.parametrize("metric", [linear_cka, debiased_cka])
def test_invariant_to_rotation_isotropic_scaling_and_shift(metric):
    rng = np.random.default_rng(3)
    x, y = refs.pair(80, 6, 6, seed=3)
    y2 = 7.5 * y @ refs.random_rotation(6, rng) + rng.normal(size=6) * 100
    x2 = 0.01 * x @ refs.random_rotation(6, rng) - 3.0
    assert abs(metric(x2, y2).value - metric(x, y).value) < 1e-9
    assert abs(metric(x, x).value - 1.0) < 1e-12


def test_joint_moments_of_several_nets_and_names():
    x, y = refs.pair(100, 4, 5)
    z = np.random.default_rng(0).normal(size=(100, 3))
    m = joint_moments({"n0": x, "n1": y, "n2": z})
    res = linear_cka(m, nets=("n0", "n1"))
    assert res.nets == ("n0", "n1") and abs(res.value - linear_cka(x, y).value) < 1e-12
    # plain Moments with unit ranges in metadata give the same linear CKA
    plain = Moments(12, exact=True).update(np.concatenate([x, y, z], axis=1))
    plain.metadata["unit_ranges"] = {"n0": [0, 4], "n1": [4, 9], "n2": [9, 12]}
    assert abs(linear_cka(plain, nets=("n0", "n1")).value - res.value) < 1e-12
    d = res.to_dict()
    assert d["metric"] == "cka" and d["widths"] == [4, 5] and d["defined"]


def test_dead_units_change_nothing_and_a_dead_net_is_zero_not_nan():
    x, y = refs.pair(50, 4, 5)
    x_dead = np.concatenate([x, np.zeros((50, 1)), np.full((50, 1), 3.0)], axis=1)
    for metric in (linear_cka, debiased_cka):
        assert abs(metric(x_dead, y).value - metric(x, y).value) < 1e-10
        res = metric(np.ones((50, 3)), y)
        assert res.value == 0.0 and not res.defined and "no variance" in res.note
    assert pair_blocks(x_dead, y).dead() == {"a": 2, "b": 0}


def test_fewer_samples_than_units_is_finite():
    x, y = refs.pair(6, 40, 30)
    for metric in (linear_cka, debiased_cka):
        v = metric(x, y).value
        assert np.isfinite(v)
    assert abs(debiased_cka(x, y).value - refs.debiased_cka_gram(x, y)) < 1e-8


@pytest.mark.parametrize("width", [1, 2, 5])
def test_debiased_of_a_degenerate_net_is_undefined_not_noise(width):
    """When a single input differs from the rest, every 4-tuple of distinct inputs sees no
    difference: the unbiased self-HSIC is exactly 0 (rounding makes it +-1e-17)."""
    x = np.zeros((20, width))
    x[3] = np.arange(1, width + 1) * 1.7
    y = np.random.default_rng(0).normal(size=(20, 3))
    assert abs(refs.hsic_unbiased(x @ x.T, x @ x.T)) < 1e-12
    res = debiased_cka(x, y)
    assert res.value == 0.0 and not res.defined and "degenerate" in res.note
    assert linear_cka(x, y).defined


def test_errors():
    x, y = refs.pair(20, 3, 3)
    plain = Moments(6).update(np.concatenate([x, y], axis=1))
    plain.metadata["unit_ranges"] = {"a": [0, 3], "b": [3, 6]}
    with pytest.raises(ConvergentError, match="needs the kernel sums"):
        debiased_cka(plain)
    with pytest.raises(ConvergentError, match="at least 4 samples"):
        debiased_cka(x[:3], y[:3])


def test_layer_matrix_from_one_moments_over_all_layers():
    rng = np.random.default_rng(5)
    layers = {f"A/l{i}": rng.normal(size=(70, 3 + i)) for i in range(3)}
    layers |= {f"B/l{i}": layers[f"A/l{i}"] @ rng.normal(size=(3 + i, 4)) for i in range(3)}
    m = joint_moments(layers)
    rows, cols = [f"A/l{i}" for i in range(3)], [f"B/l{i}" for i in range(3)]
    for debiased, ref in ((False, None), (True, refs.debiased_cka_gram)):
        mat = layer_cka_matrix(m, rows, cols, debiased=debiased, labels=(["l0", "l1", "l2"],) * 2)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                want = (
                    ref(layers[r], layers[c])
                    if ref
                    else refs.cka_gram(refs.centred(layers[r]), refs.centred(layers[c]))
                )
                assert abs(mat.values[i, j] - want) < 1e-8
        assert mat.rows == ["l0", "l1", "l2"] and not mat.estimate
        assert mat.to_dict()["metric"] == ("debiased_cka" if debiased else "cka")


# ------------------------------------------------------------------------------------------------
# minibatch CKA (Nguyen et al. 2021)


def test_minibatch_on_one_batch_equals_exact_debiased_cka():
    x, y = refs.pair(40, 5, 6, seed=7)
    est = MinibatchCKA().update({"x": x, "y": y})
    mat = est.matrix(["x"], ["y"])
    assert abs(mat.values[0, 0] - debiased_cka(x, y).value) < 1e-10
    assert mat.estimate and "estimate" in mat.note and mat.to_dict()["estimate"]


def test_minibatch_estimate_is_the_mean_of_per_batch_hsic_and_merges():
    x, y = refs.pair(103, 5, 6, seed=8)
    feats = {"x": x.reshape(103, 5, 1), "y": y}  # (B, ...) features are flattened
    batches = [(s, min(s + 25, 103)) for s in range(0, 103, 25)]  # last batch: 3 inputs, skipped
    one = MinibatchCKA(["x", "y"])
    for lo, hi in batches:
        one.update({k: v[lo:hi] for k, v in feats.items()})
    assert one.batches == 4 and one.skipped == 1
    h = np.zeros((2, 2))
    for lo, hi in batches[:4]:
        grams = [x[lo:hi] @ x[lo:hi].T, y[lo:hi] @ y[lo:hi].T]
        h += np.array([[refs.hsic_unbiased(a, b) for b in grams] for a in grams])
    want = h[0, 1] / np.sqrt(h[0, 0] * h[1, 1])
    assert abs(one.matrix(["x"], ["y"]).values[0, 0] - want) < 1e-10
    shard_a, shard_b = MinibatchCKA(), MinibatchCKA()
    for i, (lo, hi) in enumerate(batches):
        (shard_a if i % 2 else shard_b).update({k: v[lo:hi] for k, v in feats.items()})
    merged = MinibatchCKA().merge(shard_a).merge(shard_b)
    both = (["x", "y"], ["x", "y"])
    np.testing.assert_allclose(merged.matrix(*both).values, one.matrix(*both).values, atol=1e-12)
    assert merged.skipped == 1 and merged.merge(MinibatchCKA()).batches == 4


def test_unbiased_hsic_matrix_matches_textbook():
    rng = np.random.default_rng(9)
    feats = [rng.normal(size=(9, d)) for d in (2, 3, 4)]
    grams = np.stack([f @ f.T for f in feats])
    want = [[refs.hsic_unbiased(a, b) for b in grams] for a in grams]
    np.testing.assert_allclose(unbiased_hsic_matrix(grams), want, rtol=1e-10)


def test_minibatch_errors():
    est = MinibatchCKA(["x", "y"])
    with pytest.raises(ValueError, match="no minibatch of at least 4"):
        est.matrix(["x"], ["y"])
    with pytest.raises(ValueError, match="expects features of blocks"):
        est.update({"x": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="same inputs"):
        est.update({"x": np.zeros((5, 2)), "y": np.zeros((6, 2))})
    est.update({"x": np.eye(5), "y": np.eye(5)})
    with pytest.raises(ValueError, match="No blocks"):
        est.matrix(["x"], ["z"])
    with pytest.raises(TypeError, match="expects a MinibatchCKA"):
        est.merge(object())
    other = MinibatchCKA().update({"p": np.eye(5), "q": np.eye(5)})
    with pytest.raises(ValueError, match="Cannot merge MinibatchCKA"):
        est.merge(other)
