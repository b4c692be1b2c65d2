"""All metrics of a layer (K x K matrices, JSON summary); null levels; held-out scores; the input
paths of every metric (arrays or joint moments) and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convergent import ConvergentError
from convergent.similarity import (
    METRICS,
    ShuffledPairs,
    SimilaritySettings,
    cca,
    debiased_cka,
    held_out_similarity,
    init_null,
    joint_moments,
    layer_similarity,
    linear_cka,
    pair_blocks,
    pairwise_matrix,
    pwcca,
    shape_distance,
    shuffled_null,
)
from convergent.stats import Moments
from tests.helpers import refs


def _three(n=400, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    return {
        "n0": z @ rng.normal(size=(4, 6)) + 0.3 * rng.normal(size=(n, 6)),
        "n1": np.maximum(z @ rng.normal(size=(4, 5)), 0) + 0.3 * rng.normal(size=(n, 5)),
        "n2": rng.normal(size=(n, 4)),
    }


def test_layer_similarity_has_every_metric_for_every_pair_and_is_json():
    nets = _three()
    m = joint_moments(nets)
    m.metadata["layer"] = "conv3"
    out = layer_similarity(m)
    json.dumps(out, allow_nan=False)
    assert out["layer"] == "conv3" and out["nets"] == ["n0", "n1", "n2"]
    assert set(out["pairs"]) == {"n0~n1", "n0~n2", "n1~n2"}
    assert set(out["matrices"]) == set(METRICS)
    entry = out["pairs"]["n0~n1"]
    assert abs(entry["scalars"]["cka"] - linear_cka(nets["n0"], nets["n1"]).value) < 1e-10
    assert (
        abs(entry["scalars"]["debiased_cka"] - debiased_cka(nets["n0"], nets["n1"]).value) < 1e-10
    )
    assert entry["cca"]["spectrum"] == pytest.approx(cca(nets["n0"], nets["n1"]).correlations)
    assert entry["basis_alignment"]["angular_gap"] >= 0
    gaps = [out["pairs"][k]["basis_alignment"]["angular_gap"] for k in out["pairs"]]
    assert out["summary"]["basis_alignment_angular_gap"] == pytest.approx(np.mean(gaps))
    assert out["summary"]["cka"] == pytest.approx(
        np.mean([out["pairs"][k]["scalars"]["cka"] for k in out["pairs"]])
    )
    for metric in METRICS:
        values = np.array(out["matrices"][metric]["values"])
        assert values.shape == (3, 3)
        if metric != "pwcca":
            np.testing.assert_allclose(values, values.T)
    pw = np.array(out["matrices"]["pwcca"]["values"])
    assert abs(pw[1, 0] - pwcca(nets["n1"], nets["n0"]).value) < 1e-10
    # a K x K matrix of one metric, diagonal computed: zero self-distance, unit self-similarity
    for metric in METRICS:
        want = np.array(out["matrices"][metric]["values"])
        np.testing.assert_allclose(pairwise_matrix(m, metric).values, want, atol=1e-6)
    assert np.allclose(np.diag(pairwise_matrix(m, "angular_perm").values), 0, atol=1e-6)
    assert np.allclose(np.diag(pairwise_matrix(m, "cka").values), 1)


def test_plain_moments_leave_debiased_out_and_notes_say_so():
    nets = _three(30)
    joint = np.concatenate(list(nets.values()), axis=1)
    plain = Moments(joint.shape[1], exact=True).update(joint)
    ranges = {"n0": (0, 6), "n1": (6, 11), "n2": (11, 15)}
    out = layer_similarity(plain, ranges, pairs=[("n0", "n1")])
    assert out["pairs"]["n0~n1"]["scalars"]["debiased_cka"] is None
    assert any("kernel_sums" in note for note in out["notes"])
    assert out["matrices"] == {}  # only with every pair
    single = layer_similarity(plain, {"n0": (0, 6)})
    assert single["pairs"] == {} and single["summary"]["cka"] is None
    json.dumps(single, allow_nan=False)
    full = layer_similarity(plain, ranges)
    assert "debiased_cka" not in full["matrices"] and "cka" in full["matrices"]


def test_fewer_samples_than_units_and_dead_units_are_reported_not_nan():
    nets = _three(5)
    nets["n0"][:, 2] = 0.0
    out = layer_similarity(joint_moments(nets), settings=SimilaritySettings(alpha=0.5, eps=0.1))
    json.dumps(out, allow_nan=False)
    assert out["dead_units"] == {"n0": 1, "n1": 0, "n2": 0}
    assert any("fewer samples" in note for note in out["notes"])


def test_init_null_reports_observed_null_and_excess():
    trained = joint_moments(_three(300, seed=1))
    rng = np.random.default_rng(9)
    untrained = joint_moments({k: rng.normal(size=v.shape) for k, v in _three(300).items()})
    out = init_null(trained, untrained)
    json.dumps(out, allow_nan=False)
    ex = out["excess"]["n0~n1"]
    obs = out["observed"]["pairs"]["n0~n1"]["scalars"]["cka"]
    null = out["null"]["pairs"]["n0~n1"]["scalars"]["cka"]
    assert ex["cka"] == pytest.approx(obs - null) and ex["cka"] > 0.3
    assert ex["angular"] < 0  # closer than at initialisation


def test_shuffled_null_is_low_and_uses_the_same_code():
    x, y = refs.pair(500, 6, 5, seed=2, noise=0.2)
    out = shuffled_null(x, y, repeats=2, seed=0)
    assert len(out["metrics"]["cka"]["values"]) == 2
    assert out["metrics"]["cka"]["mean"] < 0.1 < linear_cka(x, y).value
    rng = np.random.default_rng(0)
    perm = rng.permutation(500)
    assert out["metrics"]["cka"]["values"][0] == pytest.approx(linear_cka(x, y[perm]).value)


def test_shuffled_pairs_stream_equals_rolled_arrays():
    rng = np.random.default_rng(3)
    p, inputs = 4, 30  # 4 samples (positions) per input
    parts = [rng.normal(size=(inputs * p, w)) for w in (3, 2, 2)]
    ranges = {"a": (0, 3), "b": (3, 5), "c": (5, 7)}
    acc = ShuffledPairs(ranges, exact=True)
    batches = [(0, 10), (10, 20), (20, 28), (28, 30)]  # the last has 2 inputs < 3 nets: skipped
    for lo, hi in batches:
        acc.update(np.concatenate([q[lo * p : hi * p] for q in parts], 1), samples_per_input=p)
    assert acc.skipped == 1
    rolled = []
    for lo, hi in batches[:3]:
        rows = [np.roll(q[lo * p : hi * p], k * p, axis=0) for k, q in enumerate(parts)]
        rolled.append(np.concatenate(rows, 1))
    want = np.concatenate(rolled)
    centred = want - want.mean(0)
    np.testing.assert_allclose(acc.moments.comoment, centred.T @ centred, atol=1e-10)
    a, b = ShuffledPairs(ranges), ShuffledPairs(ranges)
    a.update(np.concatenate([q[:40] for q in parts], 1), 4)
    b.update(np.concatenate([q[40:80] for q in parts], 1), 4)
    assert a.merge(b).moments.count == 80
    import torch

    first = np.concatenate([q[:40] for q in parts], 1)
    t = ShuffledPairs(ranges).update(torch.from_numpy(first), 4)
    n = ShuffledPairs(ranges).update(first, 4)
    np.testing.assert_allclose(t.moments.comoment, n.moments.comoment)


def test_held_out_similarity_fit_vs_held_out():
    nets = _three(1200, seed=4)
    fit = joint_moments({k: v[:600] for k, v in nets.items()})
    held = joint_moments({k: v[600:] for k, v in nets.items()})
    out = held_out_similarity(fit, held, pairs=[("n0", "n1")])
    json.dumps(out, allow_nan=False)
    entry = out["pairs"]["n0~n1"]
    assert set(entry) == {"cca", "svcca", "pwcca"} | {
        f"{d}{g}" for d in ("angular", "procrustes") for g in ("", "_perm")
    }
    assert entry["cca"]["held_out"] <= entry["cca"]["fit"] + 1e-12
    assert entry["cca"]["fit"] == pytest.approx(cca(fit, nets=("n0", "n1")).value)
    assert entry["angular"]["fit"] == pytest.approx(shape_distance(fit, nets=("n0", "n1")).angular)


def test_input_paths_and_their_errors():
    x, y = refs.pair(30, 3, 4)
    m = joint_moments([x, y])
    assert m.unit_ranges == {"a": (0, 3), "b": (3, 7)}
    assert pair_blocks(pair_blocks(m)) is not None
    import torch

    assert (
        abs(linear_cka(torch.from_numpy(x), torch.from_numpy(y)).value - linear_cka(x, y).value)
        < 1e-12
    )
    named = pair_blocks(x, y, nets=("p", "q"))
    assert named.names == ("p", "q")
    with pytest.raises(TypeError, match="must be a NumPy array"):
        linear_cka([[1, 2]], y)
    with pytest.raises(ValueError, match="2-D \\(samples, units\\)"):
        linear_cka(x[:, 0], y)
    with pytest.raises(ValueError, match="at least one array"):
        joint_moments({})
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(x, y[:5])
    with pytest.raises(ValueError, match="hold no samples"):
        linear_cka(x[:0], y[:0])
    plain = Moments(7).update(np.concatenate([x, y], 1))
    with pytest.raises(ValueError, match="carry no unit ranges"):
        linear_cka(plain)
    with pytest.raises(ValueError, match=r"0 <= start < stop <= 7"):
        linear_cka(plain, unit_ranges={"a": (0, 3), "b": (3, 9)})
    with pytest.raises(ValueError, match="Pass either joint moments"):
        linear_cka(m, y)
    with pytest.raises(ValueError, match="pass net B's activations"):
        linear_cka(x)
    three = joint_moments([x, y, x])
    with pytest.raises(ValueError, match="say which two"):
        linear_cka(three)
    with pytest.raises(ValueError, match="must name two nets"):
        linear_cka(three, nets=("a",))
    with pytest.raises(ValueError, match="No net 'z'"):
        linear_cka(three, nets=("a", "z"))
    with pytest.raises(ConvergentError, match="needs at least 1"):
        linear_cka(Moments(7), unit_ranges={"a": (0, 3), "b": (3, 7)})
    with pytest.raises(ValueError, match="'metric' parameter"):
        pairwise_matrix(m, "mi")
    other = joint_moments([x, y[:, :2]])
    with pytest.raises(ValueError, match="same nets and units"):
        init_null(m, other)
    with pytest.raises(ValueError, match="same nets and units"):
        held_out_similarity(m, other)
    with pytest.raises(ValueError, match="'repeats' parameter"):
        shuffled_null(x, y, repeats=0)
    with pytest.raises(ValueError, match="must name the nets"):
        ShuffledPairs({})
    with pytest.raises(ValueError, match="whole number of inputs"):
        ShuffledPairs({"a": (0, 3), "b": (3, 7)}).update(np.zeros((7, 7)), samples_per_input=2)
    with pytest.raises(TypeError, match="expects a ShuffledPairs"):
        ShuffledPairs({"a": (0, 3)}).merge(object())
