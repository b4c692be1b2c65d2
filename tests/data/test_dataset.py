"""The Dataset object, normalisation, the stratified split, loaders, the registry and digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from convergent.data import Dataset, available_datasets, load_dataset, stratified_split
from convergent.data._dataset import RawSplits, build_dataset, channel_stats


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _tiny(**changes) -> Dataset:
    fields = {
        "name": "tiny",
        "train_images": torch.zeros(4, 2, 3, 3),
        "train_labels": torch.zeros(4, dtype=torch.int64),
        "test_images": torch.zeros(2, 2, 3, 3),
        "test_labels": torch.zeros(2, dtype=torch.int64),
        "num_classes": 1,
        "mean": (0.0, 0.0),
        "std": (1.0, 1.0),
        "source": "memory",
    }
    return Dataset(**{**fields, **changes})


# ---------------------------------------------------------------------------------------------
# digits: embedded, deterministic split, normalised with train statistics


def test_digits_shapes_sizes_and_types(digits):
    assert digits.name == "digits" and digits.source == "sklearn.datasets.load_digits"
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert (len(digits.train_labels), len(digits.test_labels)) == (1347, 450)
    assert digits.train_images.shape == (1347, 1, 8, 8)
    assert digits.train_images.dtype == torch.float32 and digits.test_images.dtype == torch.float32
    assert digits.train_labels.dtype == torch.int64 and digits.test_labels.dtype == torch.int64


def test_digits_split_is_deterministic_stratified_and_complete(digits):
    again = load_dataset("digits")
    assert torch.equal(again.train_images, digits.train_images)
    assert torch.equal(again.test_labels, digits.test_labels)
    bunch = load_digits()
    total = np.bincount(bunch.target)
    test = np.bincount(digits.test_labels.numpy(), minlength=10)
    assert np.all(np.abs(test - total / 4) <= 1)  # every class held out in proportion
    assert np.array_equal(np.bincount(digits.train_labels.numpy(), minlength=10) + test, total)


def test_digits_are_normalised_with_train_statistics(digits):
    x = digits.train_images.double()
    assert abs(float(x.mean())) < 1e-6
    assert abs(float(x.std(unbiased=False)) - 1) < 1e-6
    # undoing the normalisation gives sklearn's pixels / 16 (independent reference)
    bunch = load_digits()
    train, test = stratified_split(bunch.target)
    raw = bunch.images[:, None] / 16.0
    assert digits.mean[0] == pytest.approx(raw[train].mean(), rel=1e-12)
    assert digits.std[0] == pytest.approx(raw[train].std(), rel=1e-12)
    for images, idx in ((digits.train_images, train), (digits.test_images, test)):
        restored = images.double().numpy() * digits.std[0] + digits.mean[0]
        np.testing.assert_allclose(restored, raw[idx], atol=1e-6)
    # the test split uses the train statistics, so it is only roughly standardised
    assert 0 < abs(float(digits.test_images.mean())) < 0.1


def test_subset_keeps_the_first_train_examples(digits):
    small = load_dataset("digits", subset=100)
    assert len(small.train_labels) == 100 and small.subset == 100
    assert torch.equal(small.train_labels, digits.train_labels[:100])
    assert torch.equal(small.test_labels, digits.test_labels)
    assert abs(float(small.train_images.mean())) < 1e-6  # statistics of the kept examples
    assert len(load_dataset("digits", subset=np.int64(10_000)).train_labels) == 1347


def test_describe_is_json_and_complete(digits):
    info = json.loads(json.dumps(digits.describe()))
    assert info["name"] == "digits" and info["source"] == "sklearn.datasets.load_digits"
    assert (info["train_size"], info["test_size"]) == (1347, 450)
    assert info["input_shape"] == [1, 8, 8] and info["num_classes"] == 10
    assert info["mean"] == list(digits.mean) and info["std"] == list(digits.std)
    assert info["subset"] is None and "train split" in info["normalisation"]


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_aliases():
    assert available_datasets() == ["digits", "fashion-mnist", "mnist", "cifar10", "npy"]
    assert load_dataset(" Digits ", subset=5).name == "digits"
    with pytest.raises(
        ValueError, match=r"Unknown dataset 'imagenet'\. Available datasets: digits, "
    ):
        load_dataset("imagenet")
    with pytest.raises(TypeError, match="'name' parameter must be a str. Got PosixPath"):
        load_dataset(__import__("pathlib").Path("digits"))


@pytest.mark.parametrize("subset", [0, -3, 2.5, True, "10"])
def test_bad_subset(subset):
    with pytest.raises(ValueError, match=r"'subset' parameter must be an int >= 1\. Got"):
        load_dataset("digits", subset=subset)


# ---------------------------------------------------------------------------------------------
# split and loader


def test_split(digits):
    images, labels = digits.split("test")
    assert images is digits.test_images and labels is digits.test_labels
    assert digits.split("train")[0] is digits.train_images
    with pytest.raises(ValueError, match="'which' parameter must be 'train' or 'test'. Got 'val'"):
        digits.split("val")


def test_loader_order_is_fixed_by_the_seed(digits):
    def labels(loader):
        return torch.cat([y for _, y in loader])

    plain = digits.loader("test", 64)
    batches = list(plain)
    assert len(batches) == 8 and batches[0][0].shape == (64, 1, 8, 8) and len(batches[-1][1]) == 2
    assert torch.equal(labels(plain), digits.test_labels)
    one = digits.loader("train", 100, shuffle=True, seed=3)
    two = digits.loader("train", 100, shuffle=True, seed=3)
    epoch1, epoch2 = labels(one), labels(one)
    assert torch.equal(epoch1, labels(two)) and torch.equal(epoch2, labels(two))
    assert not torch.equal(epoch1, epoch2)  # reshuffled every pass, reproducibly
    assert not torch.equal(epoch1, labels(digits.loader("train", 100, shuffle=True, seed=4)))
    assert torch.equal(torch.sort(epoch1).values, torch.sort(digits.train_labels).values)
    torch.manual_seed(7)
    first = labels(digits.loader("train", 100, shuffle=True))
    torch.manual_seed(7)
    assert torch.equal(first, labels(digits.loader("train", 100, shuffle=True)))


@pytest.mark.parametrize("batch_size", [0, 1.5, True])
def test_loader_bad_batch_size(digits, batch_size):
    with pytest.raises(ValueError, match="'batch_size' parameter must be an int >= 1"):
        digits.loader("train", batch_size)


def test_stratified_split_partitions_in_proportion():
    labels = np.repeat(np.array([5, 1, 2]), [40, 9, 3])
    train, test = stratified_split(labels, 0.25, seed=1)
    assert len(test) == 13  # ceil(52 / 4)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(52))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    counts = {k: int((labels[test] == k).sum()) for k in (1, 2, 5)}
    assert counts == {5: 10, 1: 2, 2: 1}  # quotas 10, 2.25, 0.75: the remainder goes to class 2
    again = stratified_split(labels, 0.25, seed=1)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.25, seed=2)[1], test)


@pytest.mark.parametrize(
    ("n", "fraction", "match"),
    [
        (10, 0.0, r"'test_fraction' parameter must be in \(0, 1\)"),
        (10, 1.0, r"'test_fraction' parameter must be in \(0, 1\)"),
        (1, 0.25, "from 1 examples: one split would be empty"),
        (0, 0.25, "from 0 examples: one split would be empty"),
    ],
)
def test_stratified_split_errors(n, fraction, match):
    with pytest.raises(ValueError, match=match):
        stratified_split(np.zeros(n, dtype=int), fraction)


# ---------------------------------------------------------------------------------------------
# normalisation and the Dataset's own checks


def test_channel_stats_match_a_two_pass_numpy_reference():
    rng = np.random.default_rng(0)
    images = (rng.normal(size=(37, 3, 4, 5)) * [[[2.0]], [[0.5]], [[9.0]]] + 100).astype(np.float32)
    mean, std = channel_stats(images, chunk=8)
    ref = images.astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-12)


def test_build_dataset_normalises_every_channel_and_keeps_constant_ones():
    rng = np.random.default_rng(1)
    train = rng.uniform(size=(50, 3, 4, 4)).astype(np.float32)
    train[:, 1] *= 0.2
    train[:, 2] = 0.5  # a constant channel: std recorded as 1, values centred
    test = rng.uniform(size=(10, 3, 4, 4)).astype(np.float32)
    labels = np.arange(50) % 3
    raw = RawSplits(train.copy(), labels, test.copy(), labels[:10], "memory", 3)
    ds = build_dataset("planted", raw)
    per_channel_mean = ds.train_images.double().mean(dim=(0, 2, 3))
    per_channel_std = ds.train_images.double().std(dim=(0, 2, 3), unbiased=False)
    np.testing.assert_allclose(per_channel_mean, 0, atol=1e-6)
    np.testing.assert_allclose(per_channel_std[:2], 1, atol=1e-6)
    assert ds.std[2] == 1.0 and float(per_channel_std[2]) == 0.0
    assert ds.mean[1] == pytest.approx(train[:, 1].mean(dtype=np.float64), rel=1e-12)
    restored = ds.test_images.double().numpy() * np.array(ds.std)[:, None, None]
    np.testing.assert_allclose(restored + np.array(ds.mean)[:, None, None], test, atol=1e-6)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"train_images": torch.zeros(4, 2, 3, 3, dtype=torch.float64)},
            "train_images must be a float32 tensor of shape",
        ),
        (
            {"test_images": torch.zeros(2, 18)},
            r"test_images must be .* Got dtype torch.float32, "
            r"shape \(2, 18\)",
        ),
        (
            {"train_labels": torch.zeros(4, dtype=torch.int32)},
            r"train_labels must be an int64 "
            r"tensor of shape \(4,\)",
        ),
        ({"test_labels": torch.zeros(3, dtype=torch.int64)}, "one label per image"),
        (
            {"test_images": torch.zeros(2, 2, 4, 4)},
            r"same \(C, H, W\)\. Got \(2, 3, 3\) and "
            r"\(2, 4, 4\)",
        ),
        ({"mean": (0.0,)}, r"one value per channel \(2\)\. Got 1 and 2 values"),
    ],
)
def test_dataset_checks_its_fields(changes, match):
    assert _tiny().input_shape == (2, 3, 3)
    with pytest.raises(ValueError, match=match):
        _tiny(**changes)
