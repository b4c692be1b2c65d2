"""CCA, SVCCA and PWCCA from moments against QR / SVD of the raw data; ridge; held-out scoring."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.analysis import _cca
from convergent.analysis._cca import cca_from_blocks
from convergent.analysis._joint import pair_blocks
from convergent.similarity import cca, cca_held_out, joint_moments, pwcca, svcca
from convergent.stats import Moments
from tests.helpers import refs


@pytest.mark.parametrize("shape", [(300, 6, 5), (200, 3, 8), (150, 10, 10)])
def test_cca_spectrum_equals_qr_svd_reference(shape):
    x, y = refs.pair(*shape, seed=1)
    res = cca(x, y)
    want = refs.cca_qr(x, y)[0]
    np.testing.assert_allclose(res.correlations, want, atol=1e-8)
    assert abs(res.value - want.mean()) < 1e-8
    assert res.dims == (shape[1], shape[2]) and res.correlations.size == min(shape[1:])
    d = res.to_dict()
    assert d["metric"] == "cca" and len(d["spectrum"]) == min(shape[1:])


@pytest.mark.parametrize("variance", [0.99, 0.9, 0.5, 1.0])
def test_svcca_equals_svd_then_cca_reference(variance):
    rng = np.random.default_rng(2)
    x, y = refs.pair(400, 8, 7, seed=2)
    x = x * rng.uniform(0.1, 3, 8)  # spread the spectrum so the cut is not trivial
    res = svcca(x, y, variance=variance)
    want = refs.svcca_svd(x, y, variance)
    np.testing.assert_allclose(res.correlations, want, atol=1e-8)
    assert abs(res.value - want.mean()) < 1e-8


@pytest.mark.parametrize("shape", [(300, 6, 5), (300, 4, 7)])
def test_pwcca_equals_projection_weighted_reference(shape):
    x, y = refs.pair(*shape, seed=3)
    assert abs(pwcca(x, y).value - refs.pwcca_ref(x, y)) < 1e-8
    assert abs(pwcca(x, y, weights_from="b").value - refs.pwcca_ref(y, x)) < 1e-8
    res = pwcca(x, y)
    assert abs(res.projection_weights.sum() - 1) < 1e-12
    assert res.to_dict()["weights_from"] == "a"


def test_ridge_equals_regularised_formula():
    x, y = refs.pair(120, 6, 5, seed=4)
    for eps in (1e-3, 0.1, 1.0):
        want = refs.cca_ridge(x, y, eps)
        np.testing.assert_allclose(cca(x, y, eps=eps).correlations, want, atol=1e-8)


def test_invariant_to_invertible_linear_maps_and_shift():
    rng = np.random.default_rng(5)
    x, y = refs.pair(300, 5, 5, seed=5)
    x2 = x @ rng.normal(size=(5, 5)) + 4.0
    np.testing.assert_allclose(cca(x2, y).correlations, cca(x, y).correlations, atol=1e-8)
    # SVCCA's PCA step is invariant to rotations and isotropic scaling only
    x3 = 3.0 * x @ refs.random_rotation(5, rng) - 1.0
    np.testing.assert_allclose(svcca(x3, y).correlations, svcca(x, y).correlations, atol=1e-8)
    np.testing.assert_allclose(cca(x, x).correlations, 1.0, atol=1e-10)


def test_dead_units_are_left_out_and_a_dead_net_is_zero_not_nan():
    x, y = refs.pair(200, 4, 5, seed=6)
    x_dead = np.concatenate([np.full((200, 1), 2.0), x, np.zeros((200, 1))], axis=1)
    for fn in (cca, svcca, pwcca):
        assert abs(fn(x_dead, y).value - fn(x, y).value) < 1e-10
    res = cca(x_dead, y)
    assert np.all(res.weights_a[[0, 5]] == 0)
    for fn in (cca, svcca, pwcca):
        res = fn(np.ones((200, 3)), y)
        assert res.value == 0.0 and not res.defined and res.correlations.size == 0


def test_fewer_samples_than_units_without_and_with_ridge():
    x, y = refs.pair(10, 30, 25, seed=7)
    plain = cca(x, y)
    assert plain.dims == (9, 9)  # the centred data span n - 1 directions
    np.testing.assert_allclose(plain.correlations, 1.0, atol=1e-8)  # the sample space is shared
    ridge = cca(x, y, eps=0.1)
    assert np.all(np.isfinite(ridge.correlations)) and ridge.value < 0.99
    for fn in (svcca, pwcca):
        assert np.isfinite(fn(x, y).value)


def test_held_out_scores_fitted_directions_on_other_data():
    x, y = refs.pair(2000, 6, 5, seed=8, noise=1.0)
    fit = joint_moments({"a": x[:1000], "b": y[:1000]})
    held = joint_moments({"a": x[1000:], "b": y[1000:]})
    for method in ("cca", "svcca", "pwcca"):
        fitted = cca_from_blocks(pair_blocks(fit), method=method)
        out = cca_held_out(fitted, held)
        # reference: project the held-out data on the fitted weights, correlate
        u, v = refs.centred(x[1000:]) @ fitted.weights_a, refs.centred(y[1000:]) @ fitted.weights_b
        want = [np.corrcoef(u[:, i], v[:, i])[0, 1] for i in range(u.shape[1])]
        np.testing.assert_allclose(out.correlations, want, atol=1e-8)
        assert out.value <= fitted.value + 1e-12  # fitted directions are optimistic in-sample
        assert out.to_dict()["held_out"] is True
        same = cca_held_out(fitted, fit)
        np.testing.assert_allclose(same.correlations, fitted.correlations, atol=1e-8)


def test_errors():
    x, y = refs.pair(50, 3, 4)
    blocks = pair_blocks(x, y)
    with pytest.raises(ValueError, match="'method' parameter"):
        cca_from_blocks(blocks, method="kcca")
    with pytest.raises(ValueError, match="'eps' parameter"):
        cca(x, y, eps=-1)
    with pytest.raises(ValueError, match="'rtol' parameter"):
        cca(x, y, rtol=0)
    with pytest.raises(ValueError, match="'variance' parameter"):
        svcca(x, y, variance=0)
    with pytest.raises(ValueError, match="'weights_from' parameter"):
        pwcca(x, y, weights_from="c")
    with pytest.raises(ValueError, match="held-out data have widths"):
        cca_held_out(cca(x, y), x, y[:, :2])


# ---- the cut follows the precision of the moments' batch products ------------------------------


def _float32_moments(x: np.ndarray, y: np.ndarray, batch: int | None = None) -> Moments:
    """Joint moments with float32 batch products (the collect default), in batches."""
    z = np.concatenate([x, y], axis=1).astype(np.float32)
    m = Moments(z.shape[1])
    step = batch or len(z)
    for start in range(0, len(z), step):
        m.update(z[start : start + step])
    m.metadata["unit_ranges"] = {"a": [0, x.shape[1]], "b": [x.shape[1], z.shape[1]]}
    assert m.product_precision == "float32"
    return m


def _rtol_only(blocks, method: str = "cca"):
    """The old rule: eigen-directions cut at rtol times the largest only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_cca, "rounding_tolerance", lambda *args: 0.0)
        return cca_from_blocks(blocks, method=method)


def test_float32_products_of_fewer_samples_than_units_give_the_sample_space():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 256)), rng.normal(size=(100, 256))
    moments = _float32_moments(x, y)
    res = cca(moments)
    assert res.dims == (99, 99)  # the 157 rounding directions per net are left out
    assert abs(res.value - 1.0) < 1e-6
    assert abs(pwcca(moments).value - 1.0) < 1e-6
    assert res.to_dict()["product_precision"] == "float32"
    # the old rtol-only cut kept rounding directions: the value was far from 1
    old = _rtol_only(pair_blocks(moments))
    assert old.dims[0] > 150 and old.value < 0.95


def test_float32_cut_keeps_every_true_direction_including_a_small_unit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 40)) * rng.uniform(0.5, 2.0, 40)
    x[:, :10] += 0.5 * x[:, 10:20]  # correlated units, no near-collinear ones
    x[:, 3] *= 1e-4  # a live unit of tiny variance keeps its own direction
    y = np.concatenate([x[:, :20], rng.normal(size=(3000, 10))], axis=1)
    y[:, 20:] += x[:, 25:35]
    exact = cca(x, y)
    low = cca(_float32_moments(x, y, batch=512))
    assert low.dims == exact.dims == (40, 30)
    np.testing.assert_allclose(low.correlations, exact.correlations, atol=1e-5)


def test_float64_products_keep_the_rtol_only_behaviour():
    rng = np.random.default_rng(2)
    cases = [
        refs.pair(300, 6, 5, seed=1),
        (rng.normal(size=(100, 256)), rng.normal(size=(100, 256))),
    ]
    for x, y in cases:
        blocks = pair_blocks(joint_moments({"a": x, "b": y}))
        assert blocks.product_precision == "float64"
        for method in ("cca", "svcca", "pwcca"):
            new, old = cca_from_blocks(blocks, method=method), _rtol_only(blocks, method)
            assert new.dims == old.dims and new.value == old.value


def test_rounding_tolerance_follows_the_unit_roundoff_and_rejects_unknown_precisions():
    assert _cca.rounding_tolerance("float32", 100, 256) == 2 * np.sqrt(256 * 100) * 2.0**-24
    assert _cca.rounding_tolerance("float64", 100, 256) == 2 * np.sqrt(256 * 100) * 2.0**-53
    with pytest.raises(ValueError, match=r"'product_precision' .* Got 'float16' instead"):
        _cca.rounding_tolerance("float16", 100, 256)
