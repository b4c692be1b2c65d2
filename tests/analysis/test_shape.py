"""Shape metrics (angular, Procrustes) with rotations and with unit permutations, against netrep's
recipe on raw arrays (zero padding, partial whitening, SVD / brute-force permutations)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from convergent.analysis import bipartite_matching
from convergent.similarity import basis_alignment, joint_moments, shape_distance, shape_held_out
from tests.helpers import refs


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("widths", [(5, 5), (6, 4), (3, 5)])
def test_rotation_metric_equals_netrep_recipe(alpha, widths):
    x, y = refs.pair(200, *widths, seed=1)
    res = shape_distance(x, y, alpha=alpha)
    angular, proc = refs.shape_ref(x, y, alpha)
    assert abs(res.angular - angular) < 1e-8 and abs(res.procrustes - proc) < 1e-8
    assert abs(res.procrustes - 2 * np.sin(res.angular / 2)) < 1e-12


@pytest.mark.parametrize("alpha", [1.0, 0.3])
@pytest.mark.parametrize("widths", [(4, 4), (5, 3), (2, 4)])
def test_permutation_metric_equals_brute_force(alpha, widths):
    x, y = refs.pair(150, *widths, seed=2)
    res = shape_distance(x, y, alpha=alpha, group="permutation")
    angular, proc = refs.shape_ref(x, y, alpha, group="permutation")
    assert abs(res.angular - angular) < 1e-8 and abs(res.procrustes - proc) < 1e-8


def test_invariances_of_rotation_and_permutation_metrics():
    rng = np.random.default_rng(3)
    x, y = refs.pair(300, 6, 6, seed=3)
    base_rot = shape_distance(x, y)
    base_perm = shape_distance(x, y, group="permutation")
    # rotation metric: rotation + isotropic scaling + shift of either net changes nothing
    moved = 4.0 * y @ refs.random_rotation(6, rng) + 10.0
    assert abs(shape_distance(x, moved).angular - base_rot.angular) < 1e-9
    assert abs(shape_distance(x, moved).procrustes - base_rot.procrustes) < 1e-9
    # alpha = 0 (full whitening): any invertible map
    mixed = y @ rng.normal(size=(6, 6))
    assert (
        abs(shape_distance(x, mixed, alpha=0).angular - shape_distance(x, y, alpha=0).angular)
        < 1e-7
    )
    # permutation metric: unchanged by permuting units (and scaling, shift) ...
    shuffled = 0.5 * y[:, rng.permutation(6)] - 2.0
    assert abs(shape_distance(x, shuffled, group="permutation").angular - base_perm.angular) < 1e-9
    # ... but changed by a rotation, and never below the rotation-invariant distance
    assert abs(shape_distance(x, moved, group="permutation").angular - base_perm.angular) > 1e-3
    assert base_perm.angular >= base_rot.angular - 1e-12


def test_zero_self_distance_and_symmetry():
    x, y = refs.pair(100, 5, 4, seed=4)
    for group in ("rotation", "permutation"):
        for alpha in (1.0, 0.5, 0.0):
            assert shape_distance(x, x, alpha=alpha, group=group).angular < 1e-6
            ab = shape_distance(x, y, alpha=alpha, group=group).angular
            ba = shape_distance(y, x, alpha=alpha, group=group).angular
            assert abs(ab - ba) < 1e-9


@pytest.mark.parametrize("group", ["rotation", "permutation"])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_triangle_inequality_of_the_angular_metric(group, alpha):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(120, 3))
    nets = [z @ rng.normal(size=(3, 4)) + rng.normal(size=(120, 4)) * s for s in (0.1, 1, 3, 0.5)]
    m = joint_moments({f"n{i}": v for i, v in enumerate(nets)})
    dist = {
        (i, j): shape_distance(m, nets=(f"n{i}", f"n{j}"), alpha=alpha, group=group).angular
        for i, j in itertools.product(range(4), repeat=2)
    }
    for i, j, k in itertools.product(range(4), repeat=3):
        assert dist[i, k] <= dist[i, j] + dist[j, k] + 1e-9


def test_planted_permutation_is_recovered_and_basis_alignment_is_one():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(500, 6)) * rng.uniform(0.5, 2, 6)
    perm = rng.permutation(6)
    y = x[:, perm] + 0.01 * rng.normal(size=(500, 6))
    basis = basis_alignment(x, y)
    assert basis.ratio > 0.999 and abs(basis.angular_gap) < 1e-3
    np.testing.assert_array_equal(perm[basis.permutation.alignment.partner], np.arange(6))
    rotated = basis_alignment(x, x @ refs.random_rotation(6, rng))
    assert rotated.rotation.angular < 1e-6 and rotated.angular_gap > 0.3 and rotated.ratio < 0.9
    d = rotated.to_dict()
    assert set(d) >= {"angular_gap", "procrustes_gap", "ratio"} and d["defined"]


def test_matching_options():
    x, y = refs.pair(300, 5, 5, seed=7)
    best = shape_distance(x, y, group="permutation")
    corr = shape_distance(x, y, group="permutation", matching="corr")
    assert corr.angular >= best.angular - 1e-12  # the best matching minimises the distance
    given = bipartite_matching(np.corrcoef(x.T, y.T)[:5, 5:])
    assert (
        abs(shape_distance(x, y, group="permutation", matching=given).angular - corr.angular)
        < 1e-12
    )
    partner = np.array([4, 3, 2, 1, 0])
    fixed = shape_distance(x, y, group="permutation", matching=partner)
    xc, yc = refs.centred(x), refs.centred(y)[:, partner]
    cos = np.sum(xc * yc) / (np.linalg.norm(xc) * np.linalg.norm(yc))
    assert abs(fixed.angular - np.arccos(cos)) < 1e-8
    unmatched = shape_distance(x, y, group="permutation", matching=np.array([0, -1, -1, -1, -1]))
    assert unmatched.angular > fixed.angular - 1


def test_dead_units_and_a_dead_net():
    x, y = refs.pair(100, 4, 4, seed=8)
    x_dead = np.concatenate([x, np.zeros((100, 2))], axis=1)
    for alpha in (1.0, 0.5):
        a = shape_distance(x_dead, y, alpha=alpha).angular
        assert abs(a - shape_distance(x, y, alpha=alpha).angular) < 1e-8
        # with permutations a dead unit is a zero unit, like netrep's zero padding: a B unit may
        # rather be matched with it than with a live unit it anti-correlates with
        perm = shape_distance(x_dead, y, alpha=alpha, group="permutation").angular
        assert abs(perm - refs.shape_ref(x_dead, y, alpha, "permutation")[0]) < 1e-8
    res = shape_distance(np.ones((100, 3)), y)
    assert not res.defined and res.angular == pytest.approx(np.pi / 2) and res.cosine == 0.0


def test_fewer_samples_than_units():
    x, y = refs.pair(8, 20, 15, seed=9)
    for alpha in (1.0, 0.5, 0.0):
        for group in ("rotation", "permutation"):
            res = shape_distance(x, y, alpha=alpha, group=group)
            assert np.isfinite(res.angular) and np.isfinite(res.procrustes)
    angular, _ = refs.shape_ref(x, y, 1.0)
    assert abs(shape_distance(x, y).angular - angular) < 1e-8


def test_held_out_scoring_of_the_fitted_alignment():
    x, y = refs.pair(2000, 5, 5, seed=10, noise=1.0)
    fit = joint_moments({"a": x[:1000], "b": y[:1000]})
    held = joint_moments({"a": x[1000:], "b": y[1000:]})
    for group in ("rotation", "permutation"):
        fitted = shape_distance(fit, alpha=0.5, group=group)
        same = shape_held_out(fitted, fit)
        assert abs(same.angular - fitted.angular) < 1e-10
        out = shape_held_out(fitted, held)
        refit = shape_distance(held, alpha=0.5, group=group)
        assert out.angular >= refit.angular - 1e-12  # a fitted alignment is optimal only in-sample
        assert out.to_dict()["held_out"] is True


def test_errors():
    x, y = refs.pair(50, 3, 4)
    with pytest.raises(ValueError, match="'alpha' parameter"):
        shape_distance(x, y, alpha=1.5)
    with pytest.raises(ValueError, match="'group' parameter"):
        shape_distance(x, y, group="affine")
    with pytest.raises(ValueError, match="only applies to group='permutation'"):
        shape_distance(x, y, matching="corr")
    with pytest.raises(ValueError, match="must be None, 'corr'"):
        shape_distance(x, y, group="permutation", matching="mi")
    with pytest.raises(ValueError, match="MatchResult or an integer array"):
        shape_distance(x, y, group="permutation", matching=np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="distinct B unit"):
        shape_distance(x, y, group="permutation", matching=np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="alignment was fitted on widths"):
        shape_held_out(shape_distance(x, y), x, y[:, :2])
