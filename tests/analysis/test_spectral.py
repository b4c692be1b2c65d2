"""Spectral (many-to-many) clustering: planted shared subspaces, determinism, dead units, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from convergent.analysis._spectral import affinity_matrix, cluster_pair, spectral_clustering
from tests.helpers.planted import joint_moments as moments_of
from tests.helpers.planted import shared_subspaces

BLOCKS, SIZE = 4, 16
D = BLOCKS * SIZE


@pytest.fixture(scope="module")
def planted():
    a, b, labels = shared_subspaces(blocks=BLOCKS, size=SIZE, noise=0.2, seed=0)
    moments = moments_of(a, b)
    return a, b, labels, moments, moments.corr()


@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
@pytest.mark.parametrize("affinity", ["absolute", "squared"])
def test_same_subspace_different_basis_is_found_while_matching_fails(
    planted, affinity, assign_labels
):
    """The paper's central point on data where it holds: the nets span the same subspaces in
    different bases, so clusters recover the subspaces although no unit has a good match."""
    *_, labels, _, corr = planted
    found = spectral_clustering(
        corr, BLOCKS, seed=0, affinity=affinity, assign_labels=assign_labels
    )
    assert adjusted_rand_score(labels, found) >= 0.95
    between = np.abs(corr[:D, D:])
    rows, cols = linear_sum_assignment(between, maximize=True)
    assert between[rows, cols].mean() < 0.6


def test_cluster_pair_on_planted_subspaces(planted):
    *_, labels, moments, corr = planted
    res = cluster_pair(moments, (0, D), (D, 2 * D), [BLOCKS, 2], seed=0)
    four = res[BLOCKS]
    assert adjusted_rand_score(labels, np.r_[four.labels_a, four.labels_b]) >= 0.95
    np.testing.assert_array_equal(four.count_a, SIZE)
    np.testing.assert_array_equal(four.count_b, SIZE)
    assert four.balance_score == 1.0 and np.all(four.balance == 1.0)
    # each cluster's A units predict its B units almost perfectly; single units do not
    assert four.mean_r2 > 0.9 and np.all(four.r2 > 0.9)
    assert four.within_corr > 5 * four.between_corr
    # the orders show the blocks: labels sorted along them
    assert np.all(np.diff(four.labels_a[four.order_a]) >= 0)
    assert np.all(np.diff(four.labels_b[four.order_b]) >= 0)
    joint = np.r_[four.labels_a, four.labels_b][four.order]
    assert np.all(np.diff(joint) >= 0) and sorted(four.order) == list(range(2 * D))
    # the same from the correlation array
    again = cluster_pair(corr, (0, D), (D, 2 * D), BLOCKS, seed=0)
    np.testing.assert_array_equal(again[BLOCKS].labels_b, four.labels_b)
    out = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert [c["n_clusters"] for c in out["clusterings"]] == [BLOCKS, 2]


def test_cluster_r2_equals_least_squares_on_raw_data(planted):
    a, b, _, moments, _ = planted
    four = cluster_pair(moments, (0, D), (D, 2 * D), BLOCKS)[BLOCKS]
    for c in range(BLOCKS):
        units_a, units_b = four.members(c)
        x = np.column_stack([a[:, units_a], np.ones(len(a))])
        y = b[:, units_b]
        fit, *_ = np.linalg.lstsq(x, y, rcond=None)
        r2 = 1 - ((y - x @ fit) ** 2).mean(0) / y.var(0)
        np.testing.assert_allclose(four.r2_b[units_b], r2, atol=1e-10)


def test_balance_and_similarity_by_hand():
    # A = units 0-3, B = units 4-6; clusters {A0, A1, B0}, {A2, A3}, {B1, B2}
    corr = np.eye(7)
    edges = [(0, 1, 0.8), (0, 4, 0.6), (1, 4, 0.3), (2, 3, 0.5), (5, 6, 0.5), (2, 5, -0.05)]
    for i, j, c in edges:
        corr[i, j] = corr[j, i] = c
    res = cluster_pair(corr, (0, 4), (4, 7), 3, seed=0)[3]
    np.testing.assert_array_equal(res.labels_a, [0, 0, 1, 1])
    np.testing.assert_array_equal(res.labels_b, [0, 2, 2])
    # balance: {2A,1B} -> 1/2, {2A} -> 0, {2B} -> 0; score = 2 * (1 + 0 + 0) / 7
    np.testing.assert_allclose(res.balance, [0.5, 0.0, 0.0])
    assert res.balance_score == pytest.approx(2 / 7)
    assert res.within_corr == pytest.approx((0.6 + 0.3) / 2)
    assert res.between_corr == pytest.approx(0.05 / 10)
    cross = np.array([0.6, 0.3])
    r2 = cross @ np.linalg.solve([[1.0, 0.8], [0.8, 1.0]], cross)
    np.testing.assert_allclose(res.r2_b, [r2, 0.0, 0.0])
    np.testing.assert_allclose(res.r2, [r2, 0.0, 0.0])  # no B units / B units without A units
    a, b = res.members(0)
    assert a.tolist() == [0, 1] and b.tolist() == [0]
    np.testing.assert_array_equal(res.order_a, [0, 1, 2, 3])
    np.testing.assert_array_equal(res.order, [0, 1, 4, 2, 3, 5, 6])


def test_undefined_similarities_are_none():
    corr = np.eye(4)
    corr[0, 1] = corr[1, 0] = 0.9  # A = {0, 1}
    corr[2, 3] = corr[3, 2] = 0.9  # B = {2, 3}
    res = cluster_pair(corr, (0, 2), (2, 4), [1, 2])
    assert res[1].between_corr is None and res[1].within_corr == 0.0
    assert res[2].within_corr is None and res[2].balance_score == 0.0
    json.dumps(res.to_dict(), allow_nan=False)


def test_deterministic_for_a_seed_and_labels_by_first_appearance(planted):
    corr = planted[4]
    first = spectral_clustering(corr, 6, seed=3)
    np.testing.assert_array_equal(first, spectral_clustering(corr, 6, seed=3))
    assert first[0] == 0
    _, where = np.unique(first, return_index=True)
    assert np.all(np.diff(where) > 0)  # label c first appears before label c + 1
    qr = spectral_clustering(corr, 6, seed=0, assign_labels="cluster_qr")
    np.testing.assert_array_equal(
        qr, spectral_clustering(corr, 6, seed=9, assign_labels="cluster_qr")
    )


def test_one_cluster_and_as_many_clusters_as_units():
    corr = np.corrcoef(np.random.default_rng(0).normal(size=(40, 5)).T)
    assert spectral_clustering(corr, 1).tolist() == [0] * 5
    assert sorted(spectral_clustering(corr, 5)) == [0, 1, 2, 3, 4]


def test_dead_units_are_left_out(planted):
    a, b, labels, _, _ = planted
    n = len(a)
    a_dead = np.column_stack([np.zeros(n), a])
    b_dead = np.column_stack([b, np.full(n, 5.0)])
    corr = moments_of(a_dead, b_dead).corr()
    found = spectral_clustering(corr, BLOCKS, seed=0)
    assert found[0] == -1 and found[-1] == -1
    live = np.r_[1 : D + 1, D + 1 : 2 * D + 1]
    assert adjusted_rand_score(labels, found[live]) >= 0.95
    res = cluster_pair(moments_of(a_dead, b_dead), (0, D + 1), (D + 1, 2 * D + 2), BLOCKS)[BLOCKS]
    assert res.labels_a[0] == -1 and res.order_a[-1] == 0 and res.order_b[-1] == D
    assert res.count_a.sum() == D and res.r2_b[-1] == 0.0
    json.dumps(res.to_dict(), allow_nan=False)


def test_affinity_options_by_hand():
    corr = np.array([[1.0, -0.5, 0.2], [-0.5, 1.0, 0.0], [0.2, 0.0, 1.0]])
    np.testing.assert_allclose(
        affinity_matrix(corr, "absolute"), [[0, 0.5, 0.2], [0.5, 0, 0], [0.2, 0, 0]]
    )
    np.testing.assert_allclose(
        affinity_matrix(corr, "positive"), [[0, 0, 0.2], [0, 0, 0], [0.2, 0, 0]]
    )
    np.testing.assert_allclose(
        affinity_matrix(corr, "signed-shift"), [[0, 0.25, 0.6], [0.25, 0, 0.5], [0.6, 0.5, 0]]
    )
    np.testing.assert_allclose(
        affinity_matrix(corr, "squared"), [[0, 0.25, 0.04], [0.25, 0, 0], [0.04, 0, 0]]
    )
    dead = np.eye(3)
    dead[0, 1] = dead[1, 0] = 0.5
    assert np.all(affinity_matrix(dead, "signed-shift")[2] == 0)  # dead stays out


# ---- every raise ------------------------------------------------------------------------------


def test_fewer_units_than_clusters_is_a_clear_error():
    corr = np.eye(4)
    corr[0, 1] = corr[1, 0] = corr[2, 3] = corr[3, 2] = 0.5
    with pytest.raises(ValueError, match=r"at most the number of units .* 4 of 4 .* Got 5"):
        spectral_clustering(corr, 5)
    corr[2, 3] = corr[3, 2] = 0.0  # units 2 and 3 dead
    with pytest.raises(ValueError, match=r"2 of 4 \(the others are dead or isolated\). Got 3"):
        spectral_clustering(corr, 3)


@pytest.mark.parametrize("n_clusters", [0, -2, 2.0, True, "3"])
def test_rejects_bad_n_clusters(n_clusters):
    with pytest.raises(ValueError, match=r"'n_clusters' parameter of spectral_clustering .* >= 1"):
        spectral_clustering(np.eye(3), n_clusters)


@pytest.mark.parametrize(
    ("corr", "match"),
    [
        (np.ones((2, 3)), r"must be a non-empty square \(D, D\) .* shape \(2, 3\)"),
        (np.ones(3), r"must be a non-empty square \(D, D\) .* shape \(3,\)"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "must be finite. Got 2 NaN"),
        (np.array([[1.0, 0.5], [0.2, 1.0]]), "must be symmetric. Got a largest asymmetry of 0.3"),
    ],
)
def test_rejects_bad_corr(corr, match):
    with pytest.raises(ValueError, match=r"'corr' parameter of spectral_clustering " + match):
        spectral_clustering(corr, 2)


def test_rejects_unknown_affinity_and_label_assignment():
    with pytest.raises(
        ValueError,
        match=r"'affinity' parameter of spectral_clustering must be one of .* Got 'cosine'",
    ):
        spectral_clustering(np.eye(3), 2, affinity="cosine")
    with pytest.raises(ValueError, match=r"'assign_labels' .* \('kmeans', 'cluster_qr'\). Got 'x'"):
        spectral_clustering(np.eye(3), 2, assign_labels="x")


@pytest.mark.parametrize(
    ("range_a", "match"),
    [
        ((0, 9), r"'range_a' .* 0 <= start < stop <= 6. Got \(0, 9\)"),
        ((3, 3), "Got \\(3, 3\\)"),
        ((0, 1, 2), "Got \\(0, 1, 2\\)"),
        ((0.5, 2), "Got \\(0.5, 2\\)"),
        (4, "Got 4 instead"),
    ],
)
def test_cluster_pair_rejects_bad_ranges(range_a, match):
    with pytest.raises(ValueError, match=match):
        cluster_pair(np.eye(6), range_a, (3, 6), 2)


def test_cluster_pair_rejects_overlap_empty_list_and_bad_input():
    with pytest.raises(ValueError, match=r"must not overlap. Got \(0, 4\) and \(3, 6\)"):
        cluster_pair(np.eye(6), (0, 4), range(3, 6), 2)
    with pytest.raises(ValueError, match="'n_clusters_list' .* at least one .* empty"):
        cluster_pair(np.eye(6), (0, 3), (3, 6), [])
    with pytest.raises(TypeError, match="'moments_or_corr' .* Got str instead"):
        cluster_pair("corr.npy", (0, 3), (3, 6), 2)
    with pytest.raises(ValueError, match=r"'corr' parameter of cluster_pair .* square"):
        cluster_pair(np.ones((6, 5)), (0, 3), (3, 5), 2)


def test_result_lookup_of_a_missing_number_of_clusters(planted):
    res = cluster_pair(planted[4], (0, D), (D, 2 * D), [2])
    with pytest.raises(KeyError, match=r"No clustering into 3 clusters; computed \[2\]"):
        res[3]
