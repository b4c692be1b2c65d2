"""Mutual information, sparse prediction (vs scikit-learn's Lasso), spectral clustering on planted
subspaces, and mean activations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import Lasso
from sklearn.metrics import adjusted_rand_score

import convergent
from convergent import ConvergentError
from convergent.analysis import (
    JointHistogram,
    cluster_pair,
    compare_means,
    errors_at_nonzero,
    mutual_information,
    mutual_information_matrix,
    quantile_edges,
    sparse_prediction,
    spectral_clustering,
)
from convergent.stats import digitize
from tests.helpers.planted import joint_moments, shared_subspaces, sparse_mixing

# ---------------------------------------------------------------------------------------------
# mutual information


def test_mi_of_independent_units_is_near_zero_and_of_identical_units_is_the_entropy():
    rng = np.random.default_rng(0)
    n = 20000
    xa = rng.normal(size=(n, 3))
    xb = np.concatenate([rng.normal(size=(n, 2)), xa[:, :1]], axis=1)  # unit 2 of B == unit 0 of A
    plug = mutual_information(xa, xb, bins=10, bias_correction=None)
    mm = mutual_information(xa, xb, bins=10)
    # plug-in bias for independent units is about (bins-1)^2 / (2n) = 0.002; corrected: ~0
    assert plug.mi[:, :2].max() < 0.006
    assert mm.mi[:, :2].max() < 0.002
    # identical units: MI equals the entropy of the binned unit (computed independently)
    idx = digitize(xa[:, :1], quantile_edges(xa[:, :1], 10))[:, 0]
    p = np.unique(idx, return_counts=True)[1] / n
    entropy = -(p * np.log(p)).sum()
    assert plug.mi[0, 2] == pytest.approx(entropy, abs=1e-12)
    assert plug.entropy_a[0] == pytest.approx(entropy, abs=1e-12)
    assert mm.mi[0, 2] == pytest.approx(mm.entropy_a[0], abs=1e-12)
    assert entropy == pytest.approx(np.log(10), abs=0.01)
    assert convergent.mutual_information is mutual_information


def test_relu_mass_at_zero_gets_its_own_bin():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(5000, 2)), 0.0)  # half the mass at exactly 0
    x[:, 1] = 3.0  # a dead (constant) unit
    edges = quantile_edges(x, bins=10)
    assert edges[0, 0] == 0.0 and np.isfinite(edges[0]).sum() == 9
    bins = digitize(x, edges)
    assert (bins[x[:, 0] == 0, 0] == 0).all() and (bins[x[:, 0] > 0, 0] >= 1).all()
    # the remaining 9 bins split the positive values about evenly
    counts = np.bincount(bins[:, 0], minlength=10)[1:]
    assert counts.min() > 0.8 * counts.mean()
    assert np.isinf(edges[1]).all() and (bins[:, 1] == 0).all()  # one bin: MI 0
    mi = mutual_information(x, x, bins=10)
    assert mi.mi[1, 1] == 0.0 and mi.mi[0, 1] == 0.0


def test_mi_streaming_merge_equals_one_pass_and_histogram2d_reference():
    rng = np.random.default_rng(2)
    xa = rng.normal(size=(3000, 3))
    xb = xa @ rng.normal(size=(3, 4)) + rng.normal(size=(3000, 4))
    ea, eb = quantile_edges(xa, 6), quantile_edges(xb, 6)
    whole = JointHistogram(ea, eb).update(xa, xb, chunk=700)
    left = JointHistogram(ea, eb).update(xa[:1000], xb[:1000])
    right = JointHistogram(ea, eb).update(xa[1000:], xb[1000:])
    np.testing.assert_array_equal(left.merge(right).counts, whole.counts)
    # reference: np.histogram2d on the bin indices of one pair
    ia, ib = digitize(xa, ea), digitize(xb, eb)
    ref, _, _ = np.histogram2d(ia[:, 2], ib[:, 1], bins=[np.arange(7) - 0.5] * 2)
    np.testing.assert_array_equal(whole.table()[2, 1], ref)
    p = ref / ref.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi_ref = (p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum()
    assert mutual_information_matrix(whole, bias_correction=None).mi[2, 1] == pytest.approx(mi_ref)


def test_mi_memory_guard_and_errors():
    edges = np.zeros((300, 9))
    with pytest.raises(ConvergentError, match=r"needs 0.07 GiB .* Pick a subset of units"):
        JointHistogram(edges, edges, max_bytes=10 * 2**20)
    with pytest.raises(ValueError, match="'bins' parameter must be an integer >= 2"):
        quantile_edges(np.zeros((3, 2)), bins=1)
    with pytest.raises(ValueError, match="non-empty"):
        quantile_edges(np.zeros((0, 2)))
    h = JointHistogram(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ConvergentError, match="empty"):
        mutual_information_matrix(h)
    with pytest.raises(ValueError, match="'bias_correction' parameter"):
        mutual_information_matrix(h, bias_correction="jackknife")
    with pytest.raises(ValueError, match="pair up sample by sample"):
        h.update(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="Expected 2 and 2 units"):
        h.update(np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="different bin edges"):
        h.merge(JointHistogram(np.ones((2, 3)), np.zeros((2, 3))))
    with pytest.raises(ValueError, match="same bins"):
        JointHistogram(np.zeros((2, 3)), np.zeros((2, 4)))


# ---------------------------------------------------------------------------------------------
# sparse prediction


def test_planted_sparse_mixing_matches_sklearn_lasso_on_raw_data():
    a, b, weights = sparse_mixing()
    m = joint_moments(a, b)
    alphas = [0.5, 0.2, 0.05, 0.01, 0.002]
    res = sparse_prediction(m, np.arange(15), np.arange(15, 23), alphas, tol=1e-13, max_iter=200000)
    raw = np.concatenate([a, b], axis=1)
    z = (raw - raw.mean(0)) / raw.std(0)
    worst = 0.0
    for i, alpha in enumerate(res.penalties):
        for t in range(8):
            ref = Lasso(alpha=alpha, tol=1e-12, max_iter=1_000_000).fit(z[:, :15], z[:, 15 + t])
            worst = max(worst, np.abs(ref.coef_ - res.coef[i, :, t]).max())
            assert abs(ref.intercept_) < 1e-10
    assert worst < 1e-6
    # the support is recovered at a moderate penalty
    i = list(res.penalties).index(0.05)
    np.testing.assert_array_equal(res.coef[i] != 0, weights != 0)
    assert res.nonzero[i].tolist() == (weights != 0).sum(axis=0).tolist()
    # errors equal 1 - R^2 of the fitted coefficients computed directly on the raw data
    pred = z[:, :15] @ res.coef[i]
    direct = ((z[:, 15:] - pred) ** 2).mean(axis=0)
    np.testing.assert_allclose(res.error[i], direct, atol=1e-10)


def test_warm_path_equals_cold_fits_and_reference_points():
    a, b, _ = sparse_mixing(seed=1)
    m = joint_moments(a, b)
    src, tgt = np.arange(15), np.arange(15, 23)
    path = sparse_prediction(m, src, tgt, [0.3, 0.1, 0.03], tol=1e-14, max_iter=100000)
    cold = sparse_prediction(m, src, tgt, [0.03], tol=1e-14, max_iter=100000)
    np.testing.assert_allclose(path.coef[-1], cold.coef[0], atol=1e-7)
    raw = np.concatenate([a, b], axis=1)
    z = (raw - raw.mean(0)) / raw.std(0)
    full = np.linalg.lstsq(z[:, :15], z[:, 15:], rcond=None)[0]
    np.testing.assert_allclose(
        path.full_linear_error, ((z[:, 15:] - z[:, :15] @ full) ** 2).mean(0), atol=1e-10
    )
    corr = np.corrcoef(raw.T)[:15, 15:]
    np.testing.assert_allclose(path.one_to_one_error, 1 - (corr**2).max(axis=0), atol=1e-10)
    assert (path.full_linear_error <= path.one_to_one_error + 1e-12).all()
    at = errors_at_nonzero(path)
    assert set(at) == {1, 2, 4} and all(v["error"] >= 0 for v in at.values())


def test_held_out_error_equals_direct_evaluation_on_held_out_data():
    a, b, _ = sparse_mixing(seed=2)
    a2, b2, _ = sparse_mixing(seed=2, n=2000)  # same mixing, other samples
    a2 = a2 * 1.1 + 0.3  # and a shift, so the fit set's standardisation matters
    fit, held = joint_moments(a, b), joint_moments(a2, b2)
    res = sparse_prediction(
        fit,
        np.arange(15),
        np.arange(15, 23),
        [0.1, 0.01],
        held_out=held,
        tol=1e-14,
        max_iter=100000,
    )
    raw, raw2 = np.concatenate([a, b], 1), np.concatenate([a2, b2], 1)
    mu, sd = raw.mean(0), raw.std(0)
    z2 = (raw2 - mu) / sd
    for i in range(2):
        err = z2[:, 15:] - z2[:, :15] @ res.coef[i]
        direct = (err**2).mean(0) / z2[:, 15:].var(0)
        np.testing.assert_allclose(res.held_out_error[i], direct, rtol=1e-10)
    assert res.to_dict()["full_linear"]["mean_held_out_error"] > 0


def test_sparse_dead_units_and_errors():
    a, b, _ = sparse_mixing(seed=3)
    a[:, 2] = 1.0
    b[:, 0] = 0.0
    m = joint_moments(a, b)
    res = sparse_prediction(m, np.arange(15), np.arange(15, 23), tol=1e-10)
    assert np.flatnonzero(res.dead_target).tolist() == [0]
    assert np.flatnonzero(res.dead_source).tolist() == [2]
    assert (res.coef[:, 2, :] == 0).all() and (res.error[:, 0] == 0).all()
    assert np.isfinite(res.error).all() and np.isfinite(res.mean_error()).all()
    assert len(res.penalties) == 12 and res.penalties[0] > res.penalties[-1]
    with pytest.raises(
        ValueError, match="'source' parameter of sparse_prediction must be a non-empty"
    ):
        sparse_prediction(m, np.array([], dtype=int), [1])
    with pytest.raises(ValueError, match="'penalties' parameter of sparse_prediction must be"):
        sparse_prediction(m, [0], [16], [0.1, -1])
    with pytest.raises(ValueError, match="must describe the same 23 variables"):
        sparse_prediction(m, [0], [16], held_out=joint_moments(a[:, :1], b[:, :1]))
    # one sample: every unit is dead, so nothing is predicted and nothing is NaN
    single = sparse_prediction(joint_moments(a[:1], b[:1]), [0, 1], [16, 17])
    assert single.dead_target.all() and (single.coef == 0).all()
    assert np.isfinite(single.error).all() and (single.mean_error() == 0).all()
    assert convergent.sparse_prediction is sparse_prediction


# ---------------------------------------------------------------------------------------------
# spectral clustering: same subspaces, different bases


def test_shared_subspaces_are_found_while_unit_matching_stays_low():
    a, b, labels = shared_subspaces()
    m = joint_moments(a, b)
    corr = m.corr()
    found = spectral_clustering(corr, 4, seed=0)
    assert adjusted_rand_score(labels, found) >= 0.95
    # ... while one-to-one matching finds no good partners: same subspace, different basis
    between = np.abs(corr[:64, 64:])
    rows, cols = linear_sum_assignment(-between)
    assert between[rows, cols].mean() < 0.6
    results = cluster_pair(m, (0, 64), (64, 128), (2, 4), seed=0)
    four = results[4].to_dict()
    assert four["balance_score"] == pytest.approx(1.0)
    assert four["within_corr"] > 2 * four["between_corr"]
    assert four["mean_r2"] > 0.8  # each cluster's A units span its B units
    order = results[4].order
    assert sorted(order.tolist()) == list(range(128))
    assert convergent.spectral_clustering is spectral_clustering


def test_spectral_is_deterministic_and_handles_dead_units():
    a, b, labels = shared_subspaces(seed=1)
    b[:, 5] = 0.0
    m = joint_moments(a, b)
    one = spectral_clustering(m.corr(), 4, seed=3)
    two = spectral_clustering(m.corr(), 4, seed=3)
    np.testing.assert_array_equal(one, two)
    assert one[64 + 5] == -1 and (np.delete(one, 69) >= 0).all()
    shift = spectral_clustering(m.corr(), 4, seed=0, affinity="signed-shift")
    assert shift.max() == 3 and shift[64 + 5] == -1
    with pytest.raises(ValueError, match="at most the number of units with non-zero affinity, 127"):
        spectral_clustering(m.corr(), 130)
    with pytest.raises(ValueError, match="'n_clusters' parameter of spectral_clustering must be"):
        spectral_clustering(m.corr(), 0)
    with pytest.raises(ValueError, match="'affinity' parameter of spectral_clustering must be"):
        spectral_clustering(m.corr(), 2, affinity="gaussian")
    with pytest.raises(ValueError, match="must be a non-empty square"):
        spectral_clustering(np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        spectral_clustering(np.full((3, 3), np.nan), 2)


# ---------------------------------------------------------------------------------------------
# mean activations


def test_mean_activations_alike_across_nets_differ_within():
    rng = np.random.default_rng(4)
    nets = {f"n{i}": rng.lognormal(size=64) for i in range(3)}
    res = compare_means(nets)
    d = res.to_dict()
    assert set(d["pairs"]) == {"n0~n1", "n0~n2", "n1~n2"}
    assert d["between_ks_mean"] < 0.35 and d["within_ks"] < 0.35
    assert all(v > 0.3 for v in d["spread"].values())  # unit means differ within a net
    assert (np.diff(res.sorted_means["n0"]) <= 0).all()
    shifted = compare_means({"a": nets["n0"], "b": nets["n1"] + 10})
    assert shifted.to_dict()["between_ks_mean"] == 1.0
    with pytest.raises(ConvergentError, match="at least one net"):
        compare_means({})
