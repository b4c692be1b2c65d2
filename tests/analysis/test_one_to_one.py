"""Semi and bipartite matching: planted permutations, brute force, rectangular, absolute, baselines."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import convergent
from convergent import ConvergentError
from convergent.analysis import (
    bipartite_matching,
    compare_pair,
    semi_matching,
    summarize_pairs,
    within_net_baseline,
)
from tests.helpers.planted import joint_moments, permuted_pair


def test_planted_permutation_is_recovered_exactly():
    a, b, perm = permuted_pair(noise=0.5)
    m = joint_moments(a, b)
    corr = m.corr()[:12, 12:]
    bip = bipartite_matching(corr)
    # A unit perm[i] matches B unit i
    expected = np.empty(12, dtype=int)
    expected[perm] = np.arange(12)
    np.testing.assert_array_equal(bip.partner, expected)
    assert bip.matched.all() and bip.mean > 0.8
    # identifiable (each unit's best partner is its planted one): semi-matching recovers it too
    semi = semi_matching(corr)
    np.testing.assert_array_equal(semi.partner, expected)
    # B reordered by the permutation is aligned with A: the diagonal holds the matches
    aligned = corr[:, bip.permutation]
    np.testing.assert_allclose(np.diag(aligned), bip.score)


def test_public_entry_points_take_plain_arrays():
    corr = np.array([[0.9, 0.1], [0.8, 0.2]])
    semi = convergent.semi_matching(corr)
    bip = convergent.bipartite_matching(corr)
    assert semi.partner.tolist() == [0, 0] and semi.score.tolist() == [0.9, 0.8]
    assert bip.partner.tolist() == [0, 1] and bip.score.tolist() == [0.9, 0.2]
    # the paper's distinction: semi-matching may reuse a unit, bipartite may not
    assert bip.mean < semi.mean


@pytest.mark.parametrize("seed", range(8))
def test_bipartite_equals_brute_force_on_small_matrices(seed):
    rng = np.random.default_rng(seed)
    d = 2 + seed % 5
    corr = rng.uniform(-1, 1, size=(d, d))
    best = max(itertools.permutations(range(d)), key=lambda p: sum(corr[i, p[i]] for i in range(d)))
    result = bipartite_matching(corr)
    assert result.score.sum() == pytest.approx(sum(corr[i, best[i]] for i in range(d)))


def test_bipartite_agrees_with_scipy_on_large_matrices():
    rng = np.random.default_rng(1)
    corr = rng.uniform(-1, 1, size=(300, 300))
    rows, cols = linear_sum_assignment(-corr)
    assert bipartite_matching(corr).score.sum() == pytest.approx(corr[rows, cols].sum())


def test_rectangular_and_absolute():
    rng = np.random.default_rng(2)
    wide = rng.uniform(-1, 1, size=(3, 5))
    r = bipartite_matching(wide)
    assert r.matched.all() and len(set(r.partner)) == 3
    assert sorted(r.permutation.tolist()) == list(range(5))
    tall = rng.uniform(-1, 1, size=(5, 3))
    r = bipartite_matching(tall)
    assert r.matched.sum() == 3 and (r.partner[~r.matched] == -1).all()
    assert (r.score[~r.matched] == 0).all() and len(r.sorted_scores) == 3
    # a sign-flipped planted unit: found by |corr|, not by signed corr
    a, b, perm = permuted_pair(noise=0.2, seed=3)
    b[:, 0] *= -1
    corr = joint_moments(a, b).corr()[:12, 12:]
    signed, absolute = bipartite_matching(corr), bipartite_matching(corr, absolute=True)
    assert absolute.partner[perm[0]] == 0 and absolute.score[perm[0]] < -0.8
    assert signed.partner[perm[0]] != 0
    assert semi_matching(corr, absolute=True).partner[perm[0]] == 0


def _check_permutation(match, d_a: int, d_b: int) -> np.ndarray:
    perm = match.permutation
    assert perm.shape == (max(d_a, d_b),)
    # position i holds A unit i's partner whenever A unit i is matched
    np.testing.assert_array_equal(perm[:d_a][match.matched], match.partner[match.matched])
    # every B unit appears once; only with d_A > d_B are there positions without one (-1)
    assert sorted(perm[perm >= 0].tolist()) == list(range(d_b))
    assert (perm == -1).sum() == max(d_a - d_b, 0)
    return perm


def test_permutation_is_aligned_with_dead_and_unmatched_units():
    corr = np.eye(6)
    corr[:3, 3:] = [[0.9, 0.1, 0.2], [0.1, 0.1, 0.8], [0.7, 0.1, 0.1]]
    corr[3:, :3] = corr[:3, 3:].T
    pair = compare_pair(corr, (0, 3), (3, 6), dead=[0])
    assert pair.bipartite.partner.tolist() == [-1, 2, 0]
    # the unmatched (dead) A unit 0 gets the unused B unit 1
    assert _check_permutation(pair.bipartite, 3, 3).tolist() == [1, 2, 0]
    aligned = corr[:3, 3:][:, pair.bipartite.permutation]
    np.testing.assert_allclose(np.diag(aligned)[1:], pair.bipartite.score[1:])


@pytest.mark.parametrize(("d_a", "d_b"), [(7, 7), (5, 9), (9, 5)])
def test_permutation_with_dead_units_and_unequal_widths(d_a, d_b):
    rng = np.random.default_rng(d_a * 10 + d_b)
    d = d_a + d_b
    x = rng.normal(size=(400, d))
    x[:, [1, d_a + 2]] = 1.0  # a dead unit in each net
    moments = joint_moments(x)
    pair = compare_pair(moments, (0, d_a), (d_a, d))
    bip = pair.bipartite
    assert not bip.matched[1] and 2 not in bip.partner
    perm = _check_permutation(bip, d_a, d_b)
    rows = np.flatnonzero(bip.matched)
    corr = moments.corr()[:d_a, d_a:]
    np.testing.assert_allclose(corr[rows, perm[rows]], bip.score[rows])
    if d_a <= d_b:  # a true permutation: B[:, perm] is aligned to A
        np.testing.assert_allclose(np.diag(corr[:, perm])[bip.matched], bip.score[bip.matched])


def test_semi_matching_permutation_is_the_partner_array():
    semi = semi_matching(np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3]]))
    np.testing.assert_array_equal(semi.permutation, semi.partner)


def test_within_net_baseline_excludes_the_unit_itself():
    corr = np.array([[1.0, 0.3, -0.9], [0.3, 1.0, 0.1], [-0.9, 0.1, 1.0]])
    np.testing.assert_allclose(within_net_baseline(corr), [0.3, 0.3, 0.1])
    np.testing.assert_allclose(within_net_baseline(corr, absolute=True), [-0.9, 0.3, -0.9])
    with pytest.raises(ConvergentError, match="at least 2 units"):
        within_net_baseline(np.ones((1, 1)))
    with pytest.raises(ValueError, match="must be square"):
        within_net_baseline(np.ones((2, 3)))


def test_compare_pair_reports_everything_and_dead_units_are_not_nan():
    a, b, perm = permuted_pair(noise=0.5, seed=4)
    b[:, 3] = 0.0  # a dead unit in B
    m = joint_moments(a, b)
    pm = compare_pair(m, (0, 12), (12, 24), names=("x", "y"), thresholds=(0.5, 0.9))
    d = pm.to_dict()
    assert d["net_a"] == "x" and d["units_a"] == 12 and d["dead_b"] == 1 and d["dead_a"] == 0
    # the A unit whose planted partner died has no partner in the bipartite matching (12 vs 11 live)
    assert 0 < d["semi_mean"] <= 1 and 0.9 < d["bipartite_mean"] <= 1
    # the dead B unit is left out: nobody is matched to it, 11 A units get their planted partner
    assert 3 not in pm.bipartite.partner.tolist() and 3 not in pm.semi.partner.tolist()
    assert pm.unique_b.tolist() == [] and pm.semi_reverse.partner[3] == -1
    assert pm.bipartite.matched.sum() == 11 and pm.semi.matched.all()
    assert d["bipartite_above"]["0.5"] == pytest.approx(11 / 12)
    arrays = pm.arrays()
    assert all(np.isfinite(v).all() for v in arrays.values())
    assert (np.diff(arrays["bipartite_sorted"]) <= 0).all()
    import json

    json.dumps(d, allow_nan=False)


def test_summary_over_pairs_and_errors():
    recs = [
        {"x": 1.0, "nested": {"y": 2.0}, "name": "a"},
        {"x": 3.0, "nested": {"y": 2.0}, "name": "b"},
    ]
    s = summarize_pairs(recs)
    assert s["x"] == {"mean": 2.0, "std": 1.0, "pairs": 2} and s["nested/y"]["std"] == 0.0
    with pytest.raises(ConvergentError, match="needs at least two nets"):
        summarize_pairs([])
    with pytest.raises(ValueError, match="non-empty 2-D"):
        semi_matching(np.ones(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        bipartite_matching(np.array([[np.nan]]))


def test_rotation_control_tells_a_shared_basis_from_a_shared_subspace():
    from scipy.stats import ortho_group

    from convergent.analysis import rotation_control
    from tests.helpers.planted import joint_moments

    rng = np.random.default_rng(3)
    a = rng.normal(size=(5000, 10)) @ np.diag(np.linspace(1, 3, 10))
    permuted = a[:, rng.permutation(10)] + 0.2 * rng.normal(size=a.shape)
    rotated = a @ ortho_group.rvs(10, random_state=4) + 0.2 * rng.normal(size=a.shape)
    for b, shares_basis in ((permuted, True), (rotated, False)):
        m = joint_moments(a, b)
        corr = m.corr()
        matched = bipartite_matching(corr[:10, 10:]).mean
        control = rotation_control(m, (0, 10), (10, 20), repeats=5)
        if shares_basis:
            assert matched > 0.9 and matched - control > 0.4
        else:
            assert abs(matched - control) < 0.1
    # against the arrays: the same rotations applied to B's activations
    m = joint_moments(a, permuted)
    got = rotation_control(m, (0, 10), (10, 20), repeats=2, seed=7)
    gen = np.random.default_rng(7)
    want = []
    for _ in range(2):
        q, r = np.linalg.qr(gen.normal(size=(10, 10)))
        q = q * np.sign(np.diag(r))
        both = np.corrcoef(np.concatenate([a, permuted @ q], axis=1).T)
        want.append(bipartite_matching(both[:10, 10:]).mean)
    assert got == pytest.approx(np.mean(want), abs=1e-10)
    with pytest.raises(ValueError, match="'repeats' parameter must be an integer >= 1"):
        rotation_control(m, (0, 10), (10, 20), repeats=0)
    assert rotation_control(m, (0, 10), (10, 20), dead=list(range(10, 20))) == 0.0
