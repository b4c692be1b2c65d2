"""KernelMoments: the extra fourth-order sums are exact and merge exactly (A then B == merged shards
== one pass == two-pass reference), in files and through torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convergent import CorruptFileError
from convergent._io import load_arrays, save_arrays
from convergent.similarity import KernelMoments
from convergent.stats import Moments

RANGES = {"a": (0, 3), "b": (3, 7), "c": (7, 9)}


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 9)) * rng.uniform(0.5, 3, 9) + rng.uniform(-5, 20, 9)


def _reference(x):
    """Two-pass: centre on the full mean, then the sums."""
    z = x - x.mean(axis=0)
    sq = np.stack([(z[:, s:e] ** 2).sum(1) for s, e in RANGES.values()], axis=1)
    return sq.T @ sq, sq.T @ z


def _close(m, x):
    prods, cross = _reference(x)
    np.testing.assert_allclose(m.norm_products, prods, rtol=1e-10)
    np.testing.assert_allclose(m.norm_cross, cross, atol=1e-9 * np.abs(cross).max())


def test_a_then_b_merged_shards_one_pass_and_reference_agree():
    x = _data()
    a, b = x[:250], x[250:]
    seq = KernelMoments(9, RANGES, exact=True)
    for start in range(0, 250, 37):
        seq.update(a[start : start + 37])
    seq.update(b)
    one = KernelMoments(9, RANGES, exact=True).update(x)
    merged = (
        KernelMoments(9, RANGES, exact=True)
        .update(a)
        .merge(KernelMoments(9, RANGES, exact=True).update(b))
    )
    for m in (seq, one, merged):
        _close(m, x)
        assert m.count == 600
    empty = KernelMoments(9, RANGES, exact=True)
    assert empty.merge(one.copy()) == one.copy()  # merge into an empty one
    assert one.copy().merge(KernelMoments(9, RANGES)) == one  # merging an empty one is a no-op


def test_k_way_uneven_shards_and_single_rows():
    x = _data(103, seed=1)
    cuts = [0, 1, 2, 40, 41, 103]
    total = KernelMoments(9, RANGES, exact=True)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        total.merge(KernelMoments(9, RANGES, exact=True).update(x[lo:hi]))
    _close(total, x)


def test_float32_and_torch_inputs_keep_float64_sums():
    x = _data(500, seed=2)
    m32 = KernelMoments(9, RANGES).update(x.astype(np.float32))
    mt = KernelMoments(9, RANGES).update(torch.from_numpy(x.astype(np.float32)))
    _close_f32 = _reference(x.astype(np.float32).astype(np.float64))
    for m in (m32, mt):
        np.testing.assert_allclose(m.norm_products, _close_f32[0], rtol=1e-6)
    assert m32.product_precision == "float32"


def test_the_device_code_path_equals_the_numpy_path():
    """Tensors off the CPU are summed by torch on their device; run that code on a CPU tensor."""
    from convergent.stats._kernel import _batch_sums

    x = _data(300, seed=4)
    target = x.mean(0) + 0.5
    ranges = list(RANGES.values())
    by_numpy = _batch_sums(x, ranges, target)
    by_torch = _batch_sums(torch.from_numpy(x), ranges, target)
    for a, b in zip(by_numpy, by_torch):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)


def test_it_is_a_moments_and_large_batches_go_in_chunks(monkeypatch):
    import convergent.stats._kernel as acc

    monkeypatch.setattr(acc, "CHUNK_ROWS", 7)
    x = _data(100, seed=3)
    m = KernelMoments(9, RANGES, exact=True).update(x)
    _close(m, x)
    plain = Moments(9, exact=True).update(x)
    np.testing.assert_allclose(m.comoment, plain.comoment, rtol=1e-12)
    assert isinstance(m, Moments) and m.metadata["unit_ranges"]["b"] == [3, 7]
    assert m.blocks == ["a", "b", "c"] and "KernelMoments(dim=9" in repr(m)
    assert m.update(np.zeros((0, 9))) is m and m.count == 100


def test_save_load_round_trip_and_plain_moments_still_read_it(tmp_path):
    m = KernelMoments(9, RANGES, exact=True).update(_data(50))
    path = tmp_path / "k.safetensors"
    m.save(path)
    back = KernelMoments.load(path)
    assert back == m and back.unit_ranges == m.unit_ranges
    plain = Moments.load(path)
    np.testing.assert_array_equal(plain.comoment, m.comoment)


def _rewrite(path, drop=None, change=None):
    arrays, meta = load_arrays(path)
    if drop:
        arrays.pop(drop)
    if change:
        arrays[change[0]] = change[1]
    save_arrays(path, arrays, meta)


def test_load_refuses_plain_and_damaged_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    Moments(9).update(_data(10)).save(plain)
    with pytest.raises(CorruptFileError, match="without kernel sums"):
        KernelMoments.load(plain)
    good = KernelMoments(9, RANGES).update(_data(10))
    cases = [
        ("missing", {"drop": "kernel.norm_products"}, "lacks"),
        ("shape", {"change": ("kernel.norm_products", np.zeros((2, 2)))}, "inconsistent kernel"),
        ("nan", {"change": ("kernel.norm_products", np.full((3, 3), np.nan))}, "non-finite kernel"),
    ]
    for name, edit, match in cases:
        path = tmp_path / f"{name}.safetensors"
        good.save(path)
        _rewrite(path, **edit)
        with pytest.raises(CorruptFileError, match=match):
            KernelMoments.load(path)


@pytest.mark.parametrize(
    "ranges, match",
    [
        ({}, "non-empty mapping"),
        ([(0, 3)], "non-empty mapping"),
        ({"a": 3}, "must be a pair"),
        ({"a": (0, 10)}, r"0 <= start < stop <= 9"),
        ({"a": (3, 3)}, r"0 <= start < stop <= 9"),
    ],
)
def test_bad_unit_ranges(ranges, match):
    with pytest.raises(ValueError, match=match):
        KernelMoments(9, ranges)


def test_merge_errors():
    m = KernelMoments(9, RANGES).update(_data(10))
    with pytest.raises(TypeError, match="plain Moments lack the kernel sums"):
        m.merge(Moments(9).update(_data(10)))
    with pytest.raises(ValueError, match="Cannot merge KernelMoments over blocks"):
        m.merge(KernelMoments(9, {"a": (0, 9)}).update(_data(10)))


def test_bad_batch_leaves_state_unchanged():
    m = KernelMoments(9, RANGES, exact=True).update(_data(20))
    before = m.copy()
    bad = _data(5)
    bad[2, 4] = np.nan
    with pytest.raises(ValueError, match="Non-finite"):
        m.update(bad)
    assert m == before
