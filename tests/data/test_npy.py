"""The user's own arrays: shapes, scaling, the held-out split, and every refusal (pickles first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convergent import CorruptFileError, DataNotFoundError
from convergent.data import load_dataset, stratified_split


def save(directory: Path, **arrays: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array, allow_pickle=array.dtype.hasobject)
    return directory


def test_uint8_images_without_test_split_are_held_out_deterministically(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 5, 6), dtype=np.uint8)
    labels = np.arange(40) % 4
    save(tmp_path, images=images, labels=labels)
    ds = load_dataset("npy", tmp_path)
    assert ds.name == "npy" and ds.source == str(tmp_path)
    assert ds.input_shape == (1, 5, 6) and ds.num_classes == 4
    assert (len(ds.train_labels), len(ds.test_labels)) == (30, 10)
    train, test = stratified_split(labels)
    assert ds.test_labels.tolist() == labels[test].tolist()
    assert ds.mean[0] == pytest.approx(images[train].mean() / 255.0, rel=1e-12)
    restored = ds.test_images[:, 0].double().numpy() * ds.std[0] + ds.mean[0]
    np.testing.assert_allclose(restored, images[test] / 255.0, atol=1e-6)


def test_explicit_test_split_channels_and_mixed_dtypes(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 2, 3, 3), dtype=np.uint8)
    test_images = rng.uniform(size=(5, 2, 3, 3))  # floats: taken as already in [0, 1]
    save(
        tmp_path,
        images=images,
        labels=np.arange(12) % 3,
        test_images=test_images,
        test_labels=np.array([0, 1, 2, 6, 1], dtype=np.uint8),
    )
    ds = load_dataset("npy", tmp_path)
    assert ds.input_shape == (2, 3, 3) and len(ds.mean) == 2
    assert (len(ds.train_labels), len(ds.test_labels)) == (12, 5)
    assert ds.num_classes == 7  # largest label anywhere + 1
    std, mean = np.array(ds.std)[:, None, None], np.array(ds.mean)[:, None, None]
    np.testing.assert_allclose(ds.test_images.double().numpy() * std + mean, test_images, atol=1e-6)


def test_feature_vectors_and_float_images_as_given(tmp_path):
    vectors = np.random.default_rng(2).normal(loc=50.0, size=(16, 7))
    save(tmp_path, images=vectors, labels=np.arange(16) % 2)
    ds = load_dataset("npy", tmp_path)
    assert ds.input_shape == (1, 1, 7)
    assert ds.mean[0] == pytest.approx(vectors[stratified_split(np.arange(16) % 2)[0]].mean())


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (
            np.array([{"a": 1}] * 4, dtype=object),
            np.arange(4),
            r"images\.npy cannot be read as a plain \.npy array without unpickling \(Object arrays",
        ),
        (np.zeros((4, 2)), np.array([1, "x", None, 2], dtype=object), r"labels\.npy cannot be"),
        (np.zeros((4, 2, 2)), np.arange(3), r"holds 4 images but .*labels\.npy holds 3 labels"),
        (
            np.zeros((4, 2, 2)),
            np.linspace(0, 1, 4),
            r"1-D array of integer class labels\. Got "
            r"shape \(4,\), dtype float64",
        ),
        (np.zeros((4, 2, 2)), np.zeros((4, 1), dtype=int), r"Got shape \(4, 1\)"),
        (np.zeros((4, 2, 2)), np.ones(4, dtype=bool), "dtype bool"),
        (np.zeros((4, 2, 2)), np.array([0, 1, -2, 1]), r"negative labels \(smallest -2\)"),
        (
            np.zeros((4, 1, 1, 2, 2)),
            np.arange(4),
            r"shape \(4, 1, 1, 2, 2\); images must be "
            r"\(N, H, W\), \(N, C, H, W\) or \(N, D\)",
        ),
        (np.zeros(4), np.arange(4), r"shape \(4,\); images must be"),
        (np.array([[0.0, np.inf]] * 4), np.arange(4), "NaN or infinite values"),
        (np.array([["a"]] * 4), np.arange(4), "has dtype <U1; images must be integers or floats"),
        (np.zeros((4, 2), dtype=complex), np.arange(4), "has dtype complex128"),
    ],
)
def test_refusals(tmp_path, images, labels, match):
    save(tmp_path, images=images, labels=labels)
    with pytest.raises(CorruptFileError, match=match):
        load_dataset("npy", tmp_path)


def test_unreadable_files(tmp_path):
    save(tmp_path, images=np.zeros((4, 2, 2)), labels=np.arange(4))
    (tmp_path / "labels.npy").write_bytes(b"\x80\x04 a pickle, not an array")
    with pytest.raises(CorruptFileError, match="never unpickles user files"):
        load_dataset("npy", tmp_path)
    (tmp_path / "labels.npy").write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"labels\.npy cannot be read"):
        load_dataset("npy", tmp_path)
    np.savez(tmp_path / "images.npz", np.zeros((4, 2, 2)))
    (tmp_path / "images.npz").rename(tmp_path / "images.npy")
    with pytest.raises(CorruptFileError, match=r"images\.npy is an \.npz archive, not one array"):
        load_dataset("npy", tmp_path)


def test_missing_and_mismatched_files(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"npy dataset needs a data directory: save"):
        load_dataset("npy")
    with pytest.raises(
        DataNotFoundError,
        match=r"Looked for .*images\.npy and .*labels\.npy: "
        r"not found\. save the arrays",
    ):
        load_dataset("npy", tmp_path)
    save(tmp_path, images=np.zeros((8, 2, 2)), labels=np.arange(8) % 2, test_labels=np.arange(3))
    with pytest.raises(DataNotFoundError, match=r"has test_labels\.npy but no test_images\.npy"):
        load_dataset("npy", tmp_path)
    save(tmp_path, test_images=np.zeros((2, 2, 2)))
    with pytest.raises(CorruptFileError, match=r"test_images\.npy holds 2 images but"):
        load_dataset("npy", tmp_path)
    save(tmp_path, test_images=np.zeros((3, 3, 2)))
    with pytest.raises(
        CorruptFileError,
        match=r"have \(C, H, W\) \(1, 3, 2\) but train images "
        r"have \(1, 2, 2\)",
    ):
        load_dataset("npy", tmp_path)
    (tmp_path / "test_labels.npy").unlink()
    with pytest.raises(DataNotFoundError, match=r"has test_images\.npy but no test_labels\.npy"):
        load_dataset("npy", tmp_path)


def test_too_little_data(tmp_path):
    save(tmp_path / "one", images=np.zeros((1, 2, 2)), labels=np.zeros(1, dtype=int))
    with pytest.raises(ValueError, match="from 1 examples: one split would be empty"):
        load_dataset("npy", tmp_path / "one")
    empty = save(
        tmp_path / "empty",
        images=np.zeros((0, 2, 2)),
        labels=np.zeros(0, dtype=int),
        test_images=np.zeros((2, 2, 2)),
        test_labels=np.zeros(2, dtype=int),
    )
    with pytest.raises(ValueError, match=rf"train split of 'npy' \(from {empty}\) is empty"):
        load_dataset("npy", empty)
