"""Moments: every way of feeding the same data agrees with a two-pass NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convergent import ConvergentError, CorruptFileError
from convergent._io import save_arrays
from convergent.stats import Moments, merge_all


def _data(n=500, d=6, seed=0, shift=3.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ mix + shift * rng.normal(size=d)


def _reference(x):
    """Two-pass float64: mean first, then the centred products."""
    mean = x.mean(axis=0)
    c = x - mean
    return mean, c.T @ c


def _close(m: Moments, x: np.ndarray, rtol=1e-10):
    mean, comoment = _reference(x)
    assert m.count == len(x)
    np.testing.assert_allclose(m.mean, mean, rtol=rtol, atol=rtol * np.abs(mean).max())
    np.testing.assert_allclose(m.comoment, comoment, rtol=rtol, atol=rtol * np.abs(comoment).max())


def test_a_then_b_merge_one_pass_and_reference_agree():
    x = _data()
    a, b = x[:137], x[137:]
    seq = Moments(6, exact=True).update(a).update(b)
    merged = Moments(6, exact=True).update(a).merge(Moments(6, exact=True).update(b))
    one = Moments(6, exact=True).update(x)
    for m in (seq, merged, one):
        _close(m, x)
    np.testing.assert_allclose(m.cov(), np.cov(x.T), rtol=1e-10)
    np.testing.assert_allclose(m.cov(ddof=0), np.cov(x.T, ddof=0), rtol=1e-10)
    np.testing.assert_allclose(m.corr(), np.corrcoef(x.T), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.var(), x.var(axis=0), rtol=1e-10)
    np.testing.assert_allclose(m.std(ddof=1), x.std(axis=0, ddof=1), rtol=1e-10)


def test_k_way_uneven_shards_including_single_and_empty():
    x = _data(n=401, d=5, seed=1)
    cuts = [0, 1, 1, 50, 51, 200, 399, 401]
    shards = [Moments(5, exact=True).update(x[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    _close(merge_all(shards), x)
    # merging in a tree gives the same result
    left = merge_all(shards[:3]).merge(merge_all(shards[3:]))
    _close(left, x)
    # merge_all leaves its inputs untouched
    assert shards[1].count == 0 and shards[0].count == 1 and shards[2].count == 49


def test_float32_products_agree_to_float32_precision():
    x = _data(n=2000, d=8, seed=2).astype(np.float32)
    m = Moments(8).update(x[:999]).update(torch.from_numpy(x[999:]))
    ref = np.corrcoef(x.astype(np.float64).T)
    np.testing.assert_allclose(m.corr(), ref, atol=1e-5)
    assert m.mean.dtype == np.float64 and m.comoment.dtype == np.float64


def test_catastrophic_cancellation_mean_1e6_std_1e_3():
    rng = np.random.default_rng(3)
    x = 1e6 + 1e-3 * rng.normal(size=(10000, 3))
    m = Moments(3, exact=True)
    for start in range(0, len(x), 999):
        m.update(x[start : start + 999])
    ref_var = ((x - x.mean(axis=0)) ** 2).mean(axis=0)
    np.testing.assert_allclose(m.var(), ref_var, rtol=1e-8)
    # float64 input in the default mode runs float64 products: same accuracy, nothing "dead"
    fast = Moments(3).update(x)
    assert fast.product_precision == "float64" and len(fast.dead_units()) == 0
    np.testing.assert_allclose(fast.corr(), np.corrcoef(x.T), atol=1e-8)
    assert np.array_equal(fast.corr(), fast.corr().T)
    # the naive one-pass formula E[x^2] - E[x]^2 is hopeless here (shown, so the test can fail)
    naive = (x**2).mean(axis=0) - x.mean(axis=0) ** 2
    assert np.abs(naive - ref_var).max() / ref_var.max() > 1e-3


def test_torch_and_numpy_inputs_agree():
    x = _data(n=300, d=4, seed=4)
    a = Moments(4, exact=True).update(x)
    b = Moments(4, exact=True).update(torch.from_numpy(x))
    assert a == b
    c = Moments(4).update(torch.from_numpy(x.astype(np.float32)))
    d = Moments(4).update(x.astype(np.float32))
    assert c == d
    e = Moments(2).update(np.array([[1, 2], [3, 5]], dtype=np.int32))
    np.testing.assert_allclose(e.mean, [2.0, 3.5])
    h = Moments(2).update(torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float16))
    np.testing.assert_allclose(h.mean, [2.0, 3.5])


def test_dead_units_give_zero_correlation_never_nan():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 4))
    x[:, 1] = 0.0  # a dead ReLU unit
    x[:, 3] = 7.25  # a constant unit
    for exact in (False, True):
        m = Moments(4, exact=exact)
        for s in range(0, 200, 33):
            m.update(x[s : s + 33].astype(np.float32))
        assert m.dead_units().tolist() == [1, 3]
        corr = m.corr()
        assert np.isfinite(corr).all()
        assert corr[1, 1] == 1.0 and corr[3, 3] == 1.0
        assert (corr[1, [0, 2, 3]] == 0).all() and (corr[[0, 2], 3] == 0).all()
        assert m.std()[1] == 0.0


def test_non_finite_input_names_columns_and_batch_and_keeps_state():
    m = Moments(3, exact=True).update(np.ones((4, 3)) * np.arange(4)[:, None])
    before = m.copy()
    bad = np.zeros((5, 3))
    bad[2, 1] = np.nan
    bad[4, 2] = np.inf
    with pytest.raises(ValueError, match=r"column\(s\) 1, 2 of batch 2"):
        m.update(bad)
    assert m == before
    with pytest.raises(ValueError, match=r"column\(s\) 0 of batch 3"):
        m.update(torch.tensor([[float("-inf"), 0.0, 0.0]]))
    assert m == before


def test_subset_copy_repr_and_empty_batch():
    x = _data(n=100, d=5, seed=6)
    m = Moments(5, exact=True).update(x)
    m.metadata["layer"] = "conv1"
    sub = m.subset([3, 0])
    _close(sub, x[:, [3, 0]])
    assert sub.metadata == {}  # the parent's unit ranges would not describe the subset
    assert m.subset(slice(1, 3)).dim == 2
    assert m.copy() == m and m.copy() is not m
    assert "dim=5" in repr(m) and "count=100" in repr(m)
    m.update(np.zeros((0, 5)))
    assert m.count == 100
    assert Moments(2) == Moments(2)
    assert Moments(2) != Moments(3)
    assert (Moments(2) == "x") is False
    assert not m.mean.flags.writeable


def test_save_load_round_trip(tmp_path):
    m = Moments(4, exact=True).update(_data(n=50, d=4, seed=7))
    m.metadata = {"layer": "fc6", "unit_ranges": {"a": [0, 2], "b": [2, 4]}}
    m.save(tmp_path / "m.safetensors")
    back = Moments.load(tmp_path / "m.safetensors")
    assert back == m and back.metadata == m.metadata and back.exact
    assert back.product_precision == "float64"
    f32 = Moments(4).update(_data(n=50, d=4, seed=7).astype(np.float32))
    f32.save(tmp_path / "f.safetensors")
    assert Moments.load(tmp_path / "f.safetensors").product_precision == "float32"
    empty = Moments(3)
    empty.save(tmp_path / "e.safetensors")
    assert Moments.load(tmp_path / "e.safetensors").count == 0


def test_load_refuses_damaged_or_foreign_files(tmp_path):
    m = Moments(4).update(_data(n=50, d=4, seed=8))
    path = tmp_path / "m.safetensors"
    m.save(path)
    raw = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="not a readable safetensors file"):
        Moments.load(tmp_path / "cut.safetensors")
    save_arrays(tmp_path / "other.safetensors", {"x": np.zeros(2)}, {"kind": "something"})
    with pytest.raises(CorruptFileError, match="is not a convergent Moments file"):
        Moments.load(tmp_path / "other.safetensors")
    save_arrays(
        tmp_path / "shape.safetensors",
        {"count": np.array([3]), "mean": np.zeros(3), "comoment": np.zeros((4, 4))},
        {"kind": "convergent.Moments", "dim": 4},
    )
    with pytest.raises(CorruptFileError, match="inconsistent Moments arrays"):
        Moments.load(tmp_path / "shape.safetensors")
    save_arrays(
        tmp_path / "lack.safetensors",
        {"count": np.array([3])},
        {"kind": "convergent.Moments", "dim": 4},
    )
    with pytest.raises(CorruptFileError, match="lacks 'mean'"):
        Moments.load(tmp_path / "lack.safetensors")
    save_arrays(
        tmp_path / "nan.safetensors",
        {"count": np.array([3]), "mean": np.full(2, np.nan), "comoment": np.zeros((2, 2))},
        {"kind": "convergent.Moments", "dim": 2},
    )
    with pytest.raises(CorruptFileError, match="non-finite moments"):
        Moments.load(tmp_path / "nan.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Moments.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: Moments(0), ValueError, "'dim' parameter of Moments"),
        (lambda: Moments(2.5), ValueError, "'dim' parameter of Moments"),
        (lambda: Moments(3).update(np.zeros((2, 4))), ValueError, r"shape \(n, 3\)"),
        (lambda: Moments(3).update(np.zeros(3)), ValueError, r"shape \(n, 3\)"),
        (lambda: Moments(3).update([[1, 2, 3]]), TypeError, "NumPy array or a torch tensor"),
        (lambda: Moments(1).update(np.array([["a"]])), TypeError, "expects real numeric data"),
        (lambda: Moments(1).update(torch.ones(1, 1, dtype=torch.complex64)), TypeError, "complex"),
        (lambda: Moments(3).merge(3), TypeError, "expects a Moments"),
        (lambda: Moments(3).merge(Moments(2)), ValueError, "dim 2 into Moments of dim 3"),
        (lambda: Moments(3).mean, ConvergentError, "seen 0 samples"),
        (lambda: Moments(3).corr(), ConvergentError, "seen 0 samples"),
        (lambda: Moments(1).update(np.ones((1, 1))).cov(ddof=1), ConvergentError, "at least 2"),
        (lambda: merge_all([]), ValueError, "at least one Moments"),
    ],
)
def test_every_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_float32_overflow_is_reported_not_accumulated():
    m = Moments(2)
    big = np.full((4, 2), 3e38, dtype=np.float32)
    big[0] = -3e38
    with pytest.raises(ValueError, match="overflows (torch.)?float32 (sums|products).*exact=True"):
        m.update(big)
    assert m.count == 0
    huge = np.array([[1e20, 0.0], [-1e20, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="overflows (torch.)?float32 products"):
        m.update(huge)
    exact = Moments(2, exact=True).update(huge)
    assert np.isfinite(exact.comoment).all()


def test_device_path_equals_cpu_path():
    """The torch path (used for GPU tensors) computes the same centred batch statistics as the NumPy
    path; exercised here on CPU tensors since this machine has no GPU."""
    from convergent.stats._moments import _centred_product_numpy, _centred_product_torch

    x = _data(n=300, d=5, seed=9).astype(np.float32)
    ref = _centred_product_numpy(x, np.empty_like(x))
    got = [t.numpy() for t in _centred_product_torch(torch.from_numpy(x))]
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_live_units_on_a_large_mean_are_not_declared_dead_by_float32_products():
    """Regression (issue 12): activations with mean 1.2e4 and sd 1e-2 in float32 were all flagged
    dead on the float32-product path (the rule ignored that each batch is centred before its
    product). The rule now follows the data's own resolution, whatever the product precision."""
    from convergent.analysis import linear_cka

    rng = np.random.default_rng(11)
    z = rng.normal(size=(4000, 3))
    a = (1.2e4 + 1e-2 * z @ rng.normal(size=(3, 4))).astype(np.float32)
    b = (1.2e4 + 1e-2 * z @ rng.normal(size=(3, 5))).astype(np.float32)
    joint = np.concatenate([a, b], axis=1)
    fast = Moments(9)
    for s in range(0, 4000, 500):
        fast.update(joint[s : s + 500])
    exact = Moments(9, exact=True).update(joint)
    assert fast.product_precision == "float32" and exact.product_precision == "float64"
    assert len(fast.dead_units()) == 0 and len(exact.dead_units()) == 0
    reference = linear_cka(a.astype(np.float64), b.astype(np.float64)).value
    ranges = {"a": (0, 4), "b": (4, 9)}
    for m in (fast, exact):
        got = linear_cka(m, unit_ranges=ranges, nets=("a", "b")).value
        assert got == pytest.approx(reference, abs=1e-5)
    assert 0.5 < reference < 1.0
    # a constant written in float32 (its spread is rounding: well under 2 ulps) is still dead
    const = np.full((100, 2), 1.2e4, dtype=np.float32)
    const[::2, 1] = np.nextafter(np.float32(1.2e4), np.float32(2e4))
    m = Moments(2).update(const)
    assert m.dead_units().tolist() == [0, 1]
