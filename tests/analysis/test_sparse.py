"""Sparse (one-to-many) prediction from moments, against scikit-learn and NumPy on the raw data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from convergent.analysis._sparse import (
    default_penalties,
    errors_at_nonzero,
    lasso_gram,
    sparse_prediction,
)
from tests.helpers.planted import ArrayMoments, sparse_mixing
from tests.helpers.planted import joint_moments as moments_of

D_A, D_B = 12, 9
SOURCE, TARGET = np.arange(D_A), np.arange(D_A, D_A + D_B)


def zscore(x: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """Standardise ``x`` with the population mean and std of ``like`` (default: of ``x``)."""
    like = x if like is None else like
    return (x - like.mean(0)) / like.std(0)


def direct_error(z_a: np.ndarray, z_b: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """1 - R^2 of predicting ``z_b`` by ``z_a @ coef``, R^2 about ``z_b``'s own mean."""
    resid = z_b - z_a @ coef
    return (resid**2).mean(0) / z_b.var(0)


@pytest.fixture(scope="module")
def planted():
    a, b, weights = sparse_mixing(d_a=D_A, d_b=D_B, seed=0)
    return a, b, weights, moments_of(a, b)


@pytest.mark.parametrize("solver", ["lars", "cd"])
def test_coefficients_equal_sklearn_lasso_on_raw_zscored_data(planted, solver):
    a, b, _, moments = planted
    penalties = [0.3, 0.05, 0.01, 0.002, 0.0005]  # down to nearly every source active
    res = sparse_prediction(moments, SOURCE, TARGET, penalties, solver=solver)
    assert res.nonzero[-1].mean() > 0.8 * D_A
    z_a, z_b = zscore(a), zscore(b)
    for i, alpha in enumerate(res.penalties):
        for t in range(D_B):
            ref = Lasso(alpha=alpha, fit_intercept=True, tol=1e-10, max_iter=1_000_000)
            ref.fit(z_a, z_b[:, t])
            np.testing.assert_allclose(res.coef[i, :, t], ref.coef_, rtol=0, atol=1e-6)
            assert abs(ref.intercept_) < 1e-12
    np.testing.assert_array_equal(res.nonzero, np.count_nonzero(res.coef, axis=1))
    assert np.all(res.duality_gap <= 1e-10)


@pytest.mark.parametrize("solver", ["lars", "cd"])
def test_penalties_come_back_decreasing_and_path_equals_cold_fits(planted, solver):
    *_, moments = planted
    path = sparse_prediction(moments, SOURCE, TARGET, [0.01, 0.2, 0.002, 0.05], solver=solver)
    np.testing.assert_array_equal(path.penalties, [0.2, 0.05, 0.01, 0.002])
    for i, alpha in enumerate(path.penalties):
        cold = sparse_prediction(moments, SOURCE, TARGET, [alpha], solver=solver)
        np.testing.assert_allclose(path.coef[i], cold.coef[0], rtol=0, atol=1e-8)
        np.testing.assert_allclose(path.error[i], cold.error[0], rtol=0, atol=1e-12)
    # the path is warm-started: a solve started at its own solution stops at once
    corr = moments.corr()
    gram, cross = corr[np.ix_(SOURCE, SOURCE)], corr[np.ix_(SOURCE, TARGET)]
    again = lasso_gram(gram, cross, float(path.penalties[-1]), coef_init=path.coef[-1])
    assert again.n_sweeps <= 2  # one sweep over the active set, one over all sources
    np.testing.assert_allclose(again.coef, path.coef[-1], rtol=0, atol=1e-10)


def test_planted_support_and_coefficients_are_recovered(planted):
    a, b, weights, moments = planted
    res = sparse_prediction(moments, SOURCE, TARGET, [0.3, 0.1, 0.001])
    np.testing.assert_array_equal(res.coef[1] != 0, weights != 0)
    planted_std = weights * a.std(0)[:, None] / b.std(0)[None, :]
    np.testing.assert_array_equal(np.sign(res.coef[1]), np.sign(planted_std))
    np.testing.assert_allclose(res.coef[2], planted_std, atol=0.05)
    np.testing.assert_allclose(res.full_linear_coef, planted_std, atol=0.05)
    # a sparse model beats the best single unit for targets that mix several sources
    several = np.count_nonzero(weights, axis=0) > 1
    assert np.all(res.error[1, several] < res.one_to_one_error[several] - 0.1)


def test_training_error_equals_direct_computation(planted):
    a, b, _, moments = planted
    res = sparse_prediction(moments, SOURCE, TARGET, [0.1, 0.01])
    z_a, z_b = zscore(a), zscore(b)
    for i in range(2):
        np.testing.assert_allclose(res.error[i], direct_error(z_a, z_b, res.coef[i]), atol=1e-10)
    assert res.held_out_error is None


def test_held_out_error_from_moments_equals_direct_computation():
    a, b, _ = sparse_mixing(n=3000, d_a=D_A, d_b=D_B, seed=3)
    fit_a, fit_b, held_a, held_b = a[:2000], b[:2000], a[2000:], b[2000:]
    held_b = held_b + 0.3  # a mean shift between the sets counts as error
    res = sparse_prediction(
        moments_of(fit_a, fit_b), SOURCE, TARGET, [0.2, 0.02], held_out=moments_of(held_a, held_b)
    )
    z_a, z_b = zscore(held_a, like=fit_a), zscore(held_b, like=fit_b)
    for i in range(2):
        np.testing.assert_allclose(
            res.held_out_error[i], direct_error(z_a, z_b, res.coef[i]), rtol=0, atol=1e-10
        )
    np.testing.assert_allclose(
        res.full_linear_held_out_error, direct_error(z_a, z_b, res.full_linear_coef), atol=1e-10
    )
    assert np.all(res.held_out_error >= res.error - 0.05)
    np.testing.assert_allclose(res.mean_error(held_out=True), res.held_out_error.mean(1))


def test_reference_points_equal_numpy_least_squares(planted):
    a, b, _, moments = planted
    res = sparse_prediction(moments, SOURCE, TARGET, [0.1])
    z_a, z_b = zscore(a), zscore(b)
    design = np.column_stack([z_a, np.ones(len(z_a))])
    sol, *_ = np.linalg.lstsq(design, z_b, rcond=None)
    np.testing.assert_allclose(res.full_linear_coef, sol[:-1], atol=1e-10)
    np.testing.assert_allclose(res.full_linear_error, direct_error(z_a, z_b, sol[:-1]), atol=1e-10)
    # one-to-one: least squares (with intercept) on each single source, best one per target
    single = np.empty((D_A, D_B))
    for j in range(D_A):
        x = np.column_stack([a[:, j], np.ones(len(a))])
        fit, *_ = np.linalg.lstsq(x, b, rcond=None)
        single[j] = ((b - x @ fit) ** 2).mean(0) / b.var(0)
    np.testing.assert_allclose(res.one_to_one_error, single.min(0), atol=1e-10)
    np.testing.assert_array_equal(res.one_to_one_source, single.argmin(0))
    assert np.all(res.full_linear_error <= res.error[0] + 1e-12)


def test_full_linear_handles_collinear_sources_with_the_minimum_norm_solution():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(500, 3))
    a = np.column_stack([a, a[:, 0] + a[:, 1]])  # rank 3
    b = a[:, :1] - a[:, 2:3] + 0.1 * rng.normal(size=(500, 1))
    res = sparse_prediction(moments_of(a, b), np.arange(4), [4], [0.01])
    z_a, z_b = zscore(a), zscore(b)
    sol = np.linalg.pinv(z_a) @ z_b
    np.testing.assert_allclose(res.full_linear_coef, sol, atol=1e-8)
    assert np.all(np.isfinite(res.full_linear_error))


def test_dead_units_get_zero_coefficients_and_are_left_out_of_summaries(planted):
    a, b, _, _ = planted
    n = len(a)
    a_dead = np.column_stack([a[:, :5], np.full(n, 3.0), a[:, 5:]])  # source 5 is constant
    b_dead = np.column_stack([np.zeros(n), b])  # target 0 is constant
    res = sparse_prediction(
        moments_of(a_dead, b_dead), np.arange(13), np.arange(13, 23), [0.1, 0.01]
    )
    live = sparse_prediction(moments_of(a, b), SOURCE, TARGET, [0.1, 0.01])
    assert np.flatnonzero(res.dead_source).tolist() == [5]
    assert np.flatnonzero(res.dead_target).tolist() == [0]
    assert np.all(res.coef[:, 5, :] == 0) and np.all(res.coef[:, :, 0] == 0)
    assert np.all(res.error[:, 0] == 0) and np.all(res.nonzero[:, 0] == 0)
    assert res.one_to_one_source[0] == -1 and res.one_to_one_error[0] == 0
    keep = np.r_[0:5, 6:13]
    np.testing.assert_allclose(res.coef[:, keep, 1:], live.coef, atol=1e-12)
    np.testing.assert_allclose(res.mean_error(), live.mean_error(), atol=1e-12)
    np.testing.assert_allclose(res.mean_nonzero(), live.mean_nonzero())
    json.dumps(res.to_dict(), allow_nan=False)


def test_all_sources_dead_predicts_nothing():
    rng = np.random.default_rng(0)
    a = np.ones((50, 3))
    b = rng.normal(size=(50, 2))
    res = sparse_prediction(moments_of(a, b), [0, 1, 2], [3, 4])
    assert np.all(res.coef == 0)
    np.testing.assert_allclose(res.error, 1.0)
    np.testing.assert_allclose(res.full_linear_error, 1.0)
    assert res.one_to_one_source.tolist() == [-1, -1]
    assert res.penalties[0] == 1.0  # the default grid when every correlation is 0


def test_targets_dead_on_one_set_only():
    rng = np.random.default_rng(1)
    fit = rng.normal(size=(200, 5))
    held = rng.normal(size=(100, 5))
    fit[:, 4] = -1.0  # target 2 dead in the fit set, alive held out
    held[:, 3] = 2.0  # target 1 alive in the fit set, dead held out
    res = sparse_prediction(moments_of(fit), [0, 1], [2, 3, 4], [0.01], held_out=moments_of(held))
    assert res.dead_target.tolist() == [False, False, True]
    assert res.held_out_dead_target.tolist() == [False, True, False]
    np.testing.assert_array_equal(res.held_out_error[0, 1:], 0.0)
    assert res.held_out_error[0, 0] > 0 and res.error[0, 1] > 0
    np.testing.assert_allclose(res.mean_error(held_out=True), res.held_out_error[:, :1].mean(1))
    np.testing.assert_allclose(res.mean_error(), res.error[:, :2].mean(1))


def test_default_penalties_start_where_every_coefficient_is_zero(planted):
    *_, moments = planted
    res = sparse_prediction(moments, SOURCE, TARGET, n_penalties=7, penalty_ratio=1e-2)
    corr = moments.corr()[np.ix_(SOURCE, TARGET)]
    np.testing.assert_allclose(res.penalties, default_penalties(corr, 7, 1e-2))
    assert res.penalties[0] == pytest.approx(np.abs(corr).max())
    assert res.penalties[-1] == pytest.approx(res.penalties[0] * 1e-2)
    assert np.all(res.nonzero[0] == 0) and np.all(np.diff(res.mean_nonzero()) >= 0)
    np.testing.assert_allclose(res.error[0], 1.0)


def test_errors_at_nonzero_picks_the_closest_mean_count(planted):
    *_, moments = planted
    held = moments_of(*sparse_mixing(d_a=D_A, d_b=D_B, seed=0)[:2])
    res = sparse_prediction(moments, SOURCE, TARGET, n_penalties=20, held_out=held)
    picks = errors_at_nonzero(res, k=(1, 2, 4))
    mean_nz = res.mean_nonzero()
    for k, pick in picks.items():
        i = int(np.argmin(np.abs(mean_nz - k)))
        assert pick["penalty"] == res.penalties[i]
        assert pick["mean_nonzero"] == mean_nz[i]
        assert pick["error"] == pytest.approx(res.error[i].mean())
        assert pick["held_out_error"] == pytest.approx(res.held_out_error[i].mean())
    assert picks[1]["error"] >= picks[2]["error"] >= picks[4]["error"]
    counts = res.nonzero_distribution(5)
    assert counts.sum() == D_B and np.dot(np.arange(len(counts)), counts) == res.nonzero[5].sum()


def test_to_dict_is_json_without_nan(planted):
    *_, moments = planted
    res = sparse_prediction(moments, SOURCE, TARGET, [0.1, 0.01], held_out=moments)
    out = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert len(out["path"]) == 2 and len(out["path"][0]["error"]) == D_B
    assert out["path"][1]["mean_held_out_error"] == pytest.approx(res.mean_error()[1])
    short = res.to_dict(per_target=False)
    assert "error" not in short["path"][0] and "error" not in short["one_to_one"]


def test_duck_typed_moments_give_the_same_result(planted):
    a, b, _, moments = planted
    stand_in = ArrayMoments.from_array(np.column_stack([a, b]))
    ours = sparse_prediction(stand_in, SOURCE, TARGET, [0.1, 0.01])
    ref = sparse_prediction(moments, SOURCE, TARGET, [0.1, 0.01])
    np.testing.assert_allclose(ours.coef, ref.coef, atol=1e-10)


def test_lasso_gram_general_gram_equals_sklearn_without_standardising():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 6)) * [1, 2, 3, 0.5, 1, 1]
    y = x[:, :2] @ [1.0, -0.5] + rng.normal(size=300)
    xc, yc = x - x.mean(0), y - y.mean()
    fit = lasso_gram(xc.T @ xc / 300, (xc.T @ yc / 300)[:, None], 0.05, yty=yc @ yc / 300)
    ref = Lasso(alpha=0.05, tol=1e-12, max_iter=100_000).fit(x, y)
    np.testing.assert_allclose(fit.coef[:, 0], ref.coef_, atol=1e-7)
    assert fit.gap[0] <= 1e-10


# ---- every raise ------------------------------------------------------------------------------


def test_rejects_non_moments():
    with pytest.raises(TypeError, match=r"'moments' parameter .* Moments-like .* lacking"):
        sparse_prediction(np.eye(3), [0], [1])


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ([], "non-empty 1-D array of integer"),
        ([0.5, 1.5], "non-empty 1-D array of integer"),
        ([[0, 1]], "non-empty 1-D array of integer"),
        ([0, 40], r"indices outside \[0, 21\)"),
        ([-1], r"indices outside \[0, 21\)"),
    ],
)
def test_rejects_bad_indices(planted, source, match):
    with pytest.raises(ValueError, match=r"'source' parameter of sparse_prediction .*" + match):
        sparse_prediction(planted[3], source, TARGET)


@pytest.mark.parametrize("penalties", [[], [0.1, 0.0], [-1.0], [np.nan], [[0.1]]])
def test_rejects_bad_penalties(planted, penalties):
    with pytest.raises(ValueError, match=r"'penalties' .* finite numbers > 0.*full_linear_error"):
        sparse_prediction(planted[3], SOURCE, TARGET, penalties)


def test_rejects_held_out_of_other_variables(planted):
    other = moments_of(np.random.default_rng(0).normal(size=(30, 4)))
    with pytest.raises(ValueError, match=r"'held_out' .* same 21 variables .* 4 variables"):
        sparse_prediction(planted[3], SOURCE, TARGET, [0.1], held_out=other)
    with pytest.raises(TypeError, match=r"'held_out' parameter .* Moments-like"):
        sparse_prediction(planted[3], SOURCE, TARGET, [0.1], held_out="half2")


def test_held_out_summary_without_held_out_moments_is_an_error(planted):
    res = sparse_prediction(planted[3], SOURCE, TARGET, [0.1])
    with pytest.raises(ValueError, match="no held-out errors; pass held_out="):
        res.mean_error(held_out=True)


@pytest.mark.parametrize("k", [-1, np.inf])
def test_errors_at_nonzero_rejects_bad_k(planted, k):
    res = sparse_prediction(planted[3], SOURCE, TARGET, [0.1])
    with pytest.raises(ValueError, match=r"'k' parameter of errors_at_nonzero .* Got"):
        errors_at_nonzero(res, k=(1, k))


def test_solver_warns_when_it_runs_out_of_sweeps(planted):
    with pytest.warns(RuntimeWarning, match=r"stopped after max_iter=1 sweeps .* raise max_iter"):
        sparse_prediction(planted[3], SOURCE, TARGET, [0.001], solver="cd", max_iter=1)


def test_exact_path_needs_no_descent_and_rejects_unknown_solvers(planted):
    res = sparse_prediction(planted[3], SOURCE, TARGET, [0.2, 0.02, 0.002])
    assert (res.n_sweeps == 0).all() and (res.duality_gap <= 1e-10).all()
    with pytest.raises(ValueError, match="'solver' parameter of sparse_prediction must be"):
        sparse_prediction(planted[3], SOURCE, TARGET, [0.1], solver="admm")
