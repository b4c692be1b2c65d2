"""The arrays API folds the arrays into moments in blocks of rows: same values as one float64
pass over a copy of the arrays (the old way), with memory bounded by the block size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convergent.analysis import _joint
from convergent.similarity import cca, debiased_cka, joint_moments, linear_cka, pwcca
from convergent.stats._kernel import KernelMoments


def _one_pass(x: np.ndarray, y: np.ndarray) -> KernelMoments:
    """The old arrays path: one float64 copy of both arrays, one update."""
    w = x.shape[1]
    m = KernelMoments(w + y.shape[1], {"a": (0, w), "b": (w, w + y.shape[1])}, exact=True)
    return m.update(np.concatenate([x.astype(np.float64), y.astype(np.float64)], axis=1))


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1000, 6))
    x = (z @ rng.normal(size=(6, 12)) + 3.0).astype(np.float32)
    y = (z @ rng.normal(size=(6, 9)) + rng.normal(size=(1000, 9)) - 1.0).astype(np.float32)
    return x, y


def test_blocks_of_rows_give_the_one_pass_moments_and_metrics(arrays, monkeypatch):
    x, y = arrays
    old = _one_pass(x, y)
    seen = []
    rows64 = _joint._rows64

    def spy(a, lo, hi):
        seen.append(hi - lo)
        return rows64(a, lo, hi)

    monkeypatch.setattr(_joint, "CHUNK_BYTES", 8 * 21 * 64)  # 64 rows of the 21 joint units
    monkeypatch.setattr(_joint, "_rows64", spy)
    new = joint_moments({"a": x, "b": y})
    assert max(seen) == 64 and sum(seen) == 2 * len(x)  # never more than one block per array
    assert new.count == old.count and new.unit_ranges == old.unit_ranges
    np.testing.assert_allclose(new.mean, old.mean, rtol=1e-13, atol=0)
    np.testing.assert_allclose(new.comoment, old.comoment, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(new.norm_products, old.norm_products, rtol=1e-12)
    for metric in (linear_cka, debiased_cka, cca, pwcca):
        assert metric(x, y).value == pytest.approx(metric(old).value, rel=1e-12, abs=1e-13)


def test_tensors_are_streamed_the_same_way(arrays, monkeypatch):
    x, y = arrays
    monkeypatch.setattr(_joint, "CHUNK_BYTES", 8 * 21 * 100)
    from_tensors = joint_moments([torch.from_numpy(x), torch.from_numpy(y)])
    from_arrays = joint_moments([x, y])
    np.testing.assert_array_equal(from_tensors.comoment, from_arrays.comoment)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)).value == linear_cka(x, y).value


def test_rejects_what_is_not_an_array():
    with pytest.raises(TypeError, match="'a' parameter must be a NumPy array, a torch tensor"):
        joint_moments({"a": [[1.0, 2.0]]})
