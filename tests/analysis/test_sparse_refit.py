"""The headline one-to-many numbers (issue 12): least squares refitted on the Lasso support with
at most k units, and the rule that leaves near-dead targets out of the summaries. Checked against
planted truth, NumPy least squares on the raw arrays, and scikit-learn's Lasso path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Lasso, lasso_path

from convergent.analysis import errors_at_nonzero, sparse_prediction
from tests.helpers.planted import joint_moments as moments_of
from tests.helpers.planted import sparse_mixing

D_A, D_B = 15, 8
SOURCE, TARGET = np.arange(D_A), np.arange(D_A, D_A + D_B)


def zscore(x: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    like = x if like is None else like
    return (x - like.mean(0)) / like.std(0)


@pytest.fixture(scope="module")
def mixing():
    a, b, weights = sparse_mixing(n=3000, d_a=D_A, d_b=D_B, noise=0.3, seed=0)
    res = sparse_prediction(moments_of(a, b), SOURCE, TARGET, n_penalties=24, penalty_ratio=1e-2)
    return a, b, weights, res


def test_exact_permutation_refit_equals_one_to_one_and_claims_no_unreached_k():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    perm = rng.permutation(8)
    res = sparse_prediction(
        moments_of(x, x[:, perm]), np.arange(8), np.arange(8, 16), n_penalties=24,
        penalty_ratio=1e-2,
    )  # fmt: skip
    assert res.refit.k.tolist() == [1, 2, 3, 4]
    for i in range(4):
        np.testing.assert_allclose(res.refit.error[i], res.one_to_one_error, rtol=0, atol=1e-10)
    # every target's path holds its one partner only: k = 2, 3, 4 are never reached, and say so
    np.testing.assert_array_equal(res.refit.size, 1)
    np.testing.assert_array_equal(np.argmax(res.refit.support[0], axis=0), perm)
    summary = res.refit_summary()
    assert [s["reached"] for s in summary] == [8, 0, 0, 0]
    assert all(s["mean_size"] == 1.0 and s["scored"] == 8 for s in summary)
    assert all(abs(s["fit"]["mean"]) < 1e-10 for s in summary)
    # the old read-out is the shrunk Lasso error (kept for comparison; its docstring says so)
    assert errors_at_nonzero(res)[2]["mean_nonzero"] == 1.0
    assert errors_at_nonzero(res)[2]["error"] > 0.5


def test_planted_mixings_refit_reaches_the_noise_floor_and_beats_one_to_one(mixing):
    a, b, weights, res = mixing
    floor = 0.3**2 / b.var(0)  # the planted noise over each target's variance
    k3 = res.refit.error[list(res.refit.k).index(3)]
    np.testing.assert_allclose(k3, floor, rtol=0, atol=0.01)
    several = np.count_nonzero(weights, axis=0) > 1
    assert several.sum() >= 4
    assert np.all(k3[several] < res.one_to_one_error[several] - 0.1)
    assert np.all(k3 <= res.one_to_one_error + 1e-12)
    # the refit's support holds the planted units; the Lasso at ~2 predictors does much worse
    for t in range(D_B):
        assert set(np.flatnonzero(weights[:, t])) <= set(np.flatnonzero(res.refit.support[2, :, t]))
    refit = {s["k"]: s["fit"]["mean"] for s in res.refit_summary()}
    assert refit[1] == pytest.approx(res.one_to_one_error.mean(), abs=1e-12)
    assert refit[3] < errors_at_nonzero(res, (2,))[2]["error"]
    assert refit[1] >= refit[2] >= refit[3] >= refit[4] - 1e-12


def test_refit_is_least_squares_on_the_support_of_the_raw_arrays(mixing):
    a, b, _, res = mixing
    z_a, z_b = zscore(a), zscore(b)
    for i in range(len(res.refit.k)):
        for t in range(D_B):
            idx = np.flatnonzero(res.refit.support[i, :, t])
            sol, *_ = np.linalg.lstsq(z_a[:, idx], z_b[:, t], rcond=None)
            np.testing.assert_allclose(res.refit.coef[i, idx, t], sol, atol=1e-10)
            resid = z_b[:, t] - z_a[:, idx] @ sol
            assert res.refit.error[i, t] == pytest.approx((resid**2).mean(), abs=1e-10)
    assert np.all(res.refit.coef[~res.refit.support] == 0)
    np.testing.assert_array_equal(res.refit.size, res.refit.support.sum(axis=1))


def test_support_is_sklearns_lasso_support_at_the_smallest_penalty_with_at_most_k_units(mixing):
    a, b, _, res = mixing
    z_a, z_b = zscore(a), zscore(b)
    grid = np.geomspace(res.penalties[0], res.penalties[-1], 300)
    for t in range(D_B):
        _, coefs, _ = lasso_path(z_a, z_b[:, t], alphas=grid, tol=1e-12, max_iter=100_000)
        for i, k in enumerate(res.refit.k):
            chosen = res.refit.support[i, :, t]
            # the Lasso at the reported penalty has exactly the chosen support, of <= k units ...
            lasso = Lasso(alpha=res.refit.penalty[i, t], tol=1e-12, max_iter=100_000)
            lasso.fit(z_a, z_b[:, t])
            np.testing.assert_array_equal(lasso.coef_ != 0, chosen)
            assert chosen.sum() <= k
            # ... and at every smaller penalty it keeps that support or has more than k units
            for j in np.flatnonzero(grid <= res.refit.penalty[i, t]):
                here = coefs[:, j] != 0
                assert np.array_equal(here, chosen) or here.sum() > k


def test_held_out_refit_errors_equal_direct_evaluation_on_held_out_arrays():
    a, b, _ = sparse_mixing(n=3000, d_a=D_A, d_b=D_B, seed=3)
    fit_a, fit_b, held_a, held_b = a[:2000], b[:2000], a[2000:], b[2000:] + 0.2
    res = sparse_prediction(
        moments_of(fit_a, fit_b), SOURCE, TARGET, held_out=moments_of(held_a, held_b),
        refit_k=(1, 2, 5),
    )  # fmt: skip
    assert res.refit.k.tolist() == [1, 2, 5]
    for i in range(3):
        for t in range(D_B):
            idx = np.flatnonzero(res.refit.support[i, :, t])
            # two-pass NumPy: least squares with intercept on the fit rows, scored held out
            design = np.column_stack([fit_a[:, idx], np.ones(len(fit_a))])
            sol, *_ = np.linalg.lstsq(design, fit_b[:, t], rcond=None)
            pred = np.column_stack([held_a[:, idx], np.ones(len(held_a))]) @ sol
            direct = ((held_b[:, t] - pred) ** 2).mean() / held_b[:, t].var()
            assert res.refit.held_out_error[i, t] == pytest.approx(direct, rel=1e-9, abs=1e-12)
    summary = res.refit_summary()
    for i, s in enumerate(summary):
        assert s["held_out"]["mean"] == pytest.approx(res.refit.held_out_error[i].mean())
        assert s["held_out"]["median"] == pytest.approx(np.median(res.refit.held_out_error[i]))
        assert s["held_out"]["targets"] == D_B
    refs = res.reference_summary()
    assert refs["one_to_one"]["held_out"]["mean"] == pytest.approx(
        res.one_to_one_held_out_error.mean()
    )
    assert refs["full_linear"]["fit"]["median"] == pytest.approx(np.median(res.full_linear_error))


def test_near_dead_targets_are_left_out_of_every_summary_with_the_rule_stated():
    a, b, _ = sparse_mixing(n=3000, d_a=D_A, d_b=D_B, seed=1)
    rng = np.random.default_rng(1)
    n = len(a)
    # target 0: nearly silent (a ReLU unit active on 10 of 3000 inputs); target 1: constant
    quiet = np.zeros(n)
    quiet[rng.choice(n, 10, replace=False)] = rng.uniform(0.5, 1.0, 10)
    b_quiet = np.column_stack([quiet, np.full(n, 2.0), b])
    held = moments_of(a[:1000], b_quiet[:1000])
    res = sparse_prediction(moments_of(a, b_quiet), SOURCE, np.arange(D_A, D_A + D_B + 2),
                            [0.1, 0.01], held_out=held)  # fmt: skip
    assert res.dead_target.tolist()[:2] == [False, True]
    variance = b_quiet.var(0)
    np.testing.assert_allclose(res.target_variance, variance, rtol=1e-10)
    assert res.variance_threshold == pytest.approx(1e-2 * np.median(variance[[0, *range(2, 10)]]))
    assert np.flatnonzero(res.low_variance_target).tolist() == [0]
    keep = np.r_[2:10]
    np.testing.assert_array_equal(np.flatnonzero(res.scored_targets()), keep)
    np.testing.assert_allclose(res.mean_error(), res.error[:, keep].mean(1))
    np.testing.assert_allclose(res.median_error(True), np.median(res.held_out_error[:, keep], 1))
    assert res.refit_summary()[0]["fit"]["mean"] == pytest.approx(res.refit.error[0, keep].mean())
    scoring = res.scoring()
    assert scoring["scored"] == 8 and scoring["left_out_dead"] == 1
    assert scoring["left_out_low_variance"] == 1 and scoring["low_variance_target"] == [0]
    assert scoring["min_variance_fraction"] == 1e-2 and "median fit variance" in scoring["rule"]
    # the quiet target is still predicted; with the rule off it enters the summaries
    assert res.refit.error[0, 0] > 0
    every = sparse_prediction(moments_of(a, b_quiet), SOURCE, np.arange(D_A, D_A + D_B + 2),
                              [0.1, 0.01], min_variance_fraction=0.0)  # fmt: skip
    assert every.scoring()["scored"] == 9 and not every.low_variance_target.any()
    out = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert out["scoring"]["scored"] == 8
    assert out["refit"]["by_k"][2]["label"] == "refit on <= 3 Lasso units"
    assert "fit split" in out["refit"]["convention"]
    assert out["one_to_one"]["held_out"]["targets"] == 8
    assert "median_held_out_error" in out["path"][0]


def test_a_near_dead_source_is_no_predictor_so_held_out_errors_stay_sane():
    # planted: B = A's first 6 units + noise; source 0 of A is nearly silent on the fit split (a
    # ReLU unit active on 3 of 3000 inputs) and loud on the held-out split, as fc7 of the digits
    # demo had (1.3e5 times its fit variance)
    rng = np.random.default_rng(3)
    n = 3000
    a = rng.normal(size=(n, 6))
    quiet = np.zeros(n)
    quiet[rng.choice(n, 3, replace=False)] = 0.01
    a_fit = np.column_stack([quiet, a])
    b_fit = a + 0.3 * rng.normal(size=a.shape)
    a_held = rng.normal(size=(1000, 6))
    a_held_full = np.column_stack([np.abs(rng.normal(size=1000)), a_held])
    b_held = a_held + 0.3 * rng.normal(size=a_held.shape)
    src, tgt = np.arange(7), np.arange(7, 13)
    fit, held = moments_of(a_fit, b_fit), moments_of(a_held_full, b_held)
    res = sparse_prediction(fit, src, tgt, [0.1, 0.01], held_out=held)
    assert res.low_variance_source.tolist() == [True] + [False] * 6
    assert not res.coef[:, 0, :].any() and not res.full_linear_coef[0].any()
    assert not res.refit.coef[:, 0, :].any() and (res.one_to_one_source != 0).all()
    # without the quiet source the held-out error is the noise level, 0.3^2 / (1 + 0.3^2)
    truth = 0.09 / 1.09
    assert res.full_linear_held_out_error.mean() == pytest.approx(truth, abs=0.02)
    scoring = res.scoring()
    assert scoring["sources_used"] == 6 and scoring["sources_left_out_low_variance"] == 1
    assert scoring["sources_left_out_dead"] == 0 and "live sources" in scoring["source_rule"]
    # with the rule off the quiet source is a predictor and the held-out error blows up
    every = sparse_prediction(fit, src, tgt, [0.1, 0.01], held_out=held, min_variance_fraction=0.0)
    assert not every.low_variance_source.any() and every.full_linear_coef[0].any()
    assert every.full_linear_held_out_error.mean() > 1.0


def test_dead_targets_get_an_empty_support_and_zero_errors():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 4))
    b = np.column_stack([np.ones(300), a[:, 0] + 0.1 * rng.normal(size=300)])
    res = sparse_prediction(moments_of(a, b), np.arange(4), [4, 5], [0.1, 0.001])
    assert not res.refit.support[:, :, 0].any() and (res.refit.error[:, 0] == 0).all()
    assert (res.refit.size[:, 1] >= 1).all() and (res.refit.penalty[:, 0] == 0).all()


def test_no_refit_when_asked_for_none(mixing):
    a, b, _, _ = mixing
    res = sparse_prediction(moments_of(a, b), SOURCE, TARGET, [0.1], refit_k=None)
    assert res.refit is None and res.refit_summary() == []
    assert res.to_dict()["refit"]["by_k"] == []


@pytest.mark.parametrize("refit_k", [(), (0, 1), (1.5,), [[1, 2]]])
def test_rejects_bad_refit_k(mixing, refit_k):
    a, b, _, _ = mixing
    with pytest.raises(ValueError, match=r"'refit_k' parameter of sparse_prediction .* Got"):
        sparse_prediction(moments_of(a, b), SOURCE, TARGET, [0.1], refit_k=refit_k)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, np.nan])
def test_rejects_bad_min_variance_fraction(mixing, fraction):
    a, b, _, _ = mixing
    with pytest.raises(ValueError, match=r"'min_variance_fraction' .* \[0, 1\)\. Got"):
        sparse_prediction(moments_of(a, b), SOURCE, TARGET, [0.1], min_variance_fraction=fraction)
