"""Datasets: digits, IDX (raw and gzip, corrupt and truncated), CIFAR-10 binary, npy, loaders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from convergent import CorruptFileError, DataNotFoundError
from convergent.data import available_datasets, load_dataset, read_idx
from convergent.data._idx import DEFAULT_DIRS


def test_digits_is_embedded_split_deterministically_and_normalised():
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train_labels) + len(a.test_labels) == 1797
    assert len(a.test_labels) == 450
    assert torch.equal(a.test_images, b.test_images) and torch.equal(a.train_labels, b.train_labels)
    # normalised with train statistics: train mean 0, std 1 (per channel)
    assert abs(float(a.train_images.mean())) < 1e-5
    assert abs(float(a.train_images.std(unbiased=False)) - 1) < 1e-4
    # stratified: every class in both splits in about the same proportion
    assert set(a.test_labels.tolist()) == set(range(10))
    d = a.describe()
    assert d["source"] == "sklearn.datasets.load_digits" and d["normalisation"]["mean"][0] > 0
    assert a.train_images.dtype == torch.float32 and a.train_labels.dtype == torch.int64


def test_subset_and_split_and_loader():
    ds = load_dataset("digits", subset=100)
    assert len(ds.train_labels) == 100 and len(ds.test_labels) == 450
    x, y = ds.split("test")
    assert x is ds.test_images
    with pytest.raises(ValueError, match="'which' parameter must be one of"):
        ds.split("val")
    first = [b[1] for b in ds.loader("train", 32, shuffle=True, seed=3)]
    again = [b[1] for b in ds.loader("train", 32, shuffle=True, seed=3)]
    other = [b[1] for b in ds.loader("train", 32, shuffle=True, seed=4)]
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    assert not all(torch.equal(p, q) for p, q in zip(first, other))
    assert torch.equal(next(iter(ds.loader("train", 10)))[1], ds.train_labels[:10])
    with pytest.raises(ValueError, match="'subset' parameter"):
        load_dataset("digits", subset=0)
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*digits, fashion-mnist"):
        load_dataset("imagenet")
    assert available_datasets() == ["digits", "fashion-mnist", "mnist", "cifar10", "npy"]


# ---------------------------------------------------------------------------------------------
# IDX


def _idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_idx_dir(d: Path, *, gz: bool, n_train=30, n_test=10, size=6, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    data = {
        "train": (rng.integers(0, 256, (n_train, size, size)), rng.integers(0, 10, n_train)),
        "test": (rng.integers(0, 256, (n_test, size, size)), rng.integers(0, 10, n_test)),
    }
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    for split, (img, lab) in data.items():
        for name, payload in zip(names[split], (_idx_images(img), _idx_labels(lab))):
            if gz:
                (d / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (d / name).write_bytes(payload)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    data = _write_idx_dir(tmp_path, gz=gz)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.input_shape == (1, 6, 6) and ds.source == str(tmp_path)
    assert torch.equal(ds.train_labels, torch.from_numpy(data["train"][1].astype(np.int64)))
    raw = data["test"][0] / 255.0
    restored = ds.test_images[:, 0].double().numpy() * ds.std[0] + ds.mean[0]
    np.testing.assert_allclose(restored, raw, atol=1e-6)
    assert ds.mean[0] == pytest.approx(data["train"][0].mean() / 255.0)
    mnist = load_dataset("mnist", tmp_path)
    assert mnist.name == "mnist"


def test_idx_corrupt_magic_truncated_trailing(tmp_path):
    good = _idx_images(np.zeros((3, 4, 4)))
    (tmp_path / "magic").write_bytes(struct.pack(">I", 0x801) + good[4:])
    with pytest.raises(CorruptFileError, match="magic number 0x00000801, expected 0x00000803"):
        read_idx(tmp_path / "magic", expect_dims=3)
    (tmp_path / "short").write_bytes(good[:-5])
    with pytest.raises(CorruptFileError, match="is truncated: 59 bytes, expected 64"):
        read_idx(tmp_path / "short", expect_dims=3)
    (tmp_path / "long").write_bytes(good + b"xx")
    with pytest.raises(CorruptFileError, match="trailing bytes"):
        read_idx(tmp_path / "long", expect_dims=3)
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(CorruptFileError, match="not even an IDX header"):
        read_idx(tmp_path / "tiny", expect_dims=3)
    (tmp_path / "head").write_bytes(good[:9])
    with pytest.raises(CorruptFileError, match="truncated inside its header"):
        read_idx(tmp_path / "head", expect_dims=3)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(CorruptFileError, match="cannot be read or decompressed"):
        read_idx(tmp_path / "bad.gz", expect_dims=3)


def test_idx_count_mismatch_and_bad_labels(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(np.zeros(9)))
    with pytest.raises(CorruptFileError, match="holds 10 images but .* holds 9 labels"):
        load_dataset("fashion-mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(np.full(10, 12)))
    with pytest.raises(CorruptFileError, match="has label 12"):
        load_dataset("fashion-mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(np.zeros(10)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_images(np.zeros((10, 5, 5))))
    with pytest.raises(CorruptFileError, match="differ in size"):
        load_dataset("fashion-mnist", tmp_path)


def test_missing_idx_directory_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=r"Looked in: .*nowhere.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    monkeypatch.setitem(DEFAULT_DIRS, "mnist", [tmp_path / "debian-mnist"])
    with pytest.raises(DataNotFoundError, match=r"debian-mnist.*--data-dir"):
        load_dataset("mnist")
    # half the files is as good as none
    _write_idx_dir(tmp_path / "half", gz=False)
    (tmp_path / "half" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte"):
        load_dataset("fashion-mnist", tmp_path / "half")


def test_idx_files_in_a_raw_subfolder(tmp_path):
    _write_idx_dir(tmp_path / "raw", gz=True)
    assert load_dataset("fashion-mnist", tmp_path).source == str(tmp_path / "raw")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed on this machine")
def test_real_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion-mnist")
    assert ds.source == "/usr/share/datasets/fashion-mnist"
    assert (len(ds.train_labels), len(ds.test_labels)) == (60000, 10000)
    assert ds.input_shape == (1, 28, 28)
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------------------
# CIFAR-10 binary


def _cifar_file(path: Path, n: int, seed: int, label_max=9) -> None:
    rng = np.random.default_rng(seed)
    rec = np.zeros((n, 3073), dtype=np.uint8)
    rec[:, 0] = rng.integers(0, label_max + 1, n)
    rec[:, 1:] = rng.integers(0, 256, (n, 3072))
    path.write_bytes(rec.tobytes())


def test_cifar10_binary(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for i in range(1, 6):
        _cifar_file(d / f"data_batch_{i}.bin", 4, i)
    _cifar_file(d / "test_batch.bin", 3, 9)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.input_shape == (3, 32, 32) and len(ds.train_labels) == 20 and len(ds.mean) == 3
    raw = np.frombuffer((d / "test_batch.bin").read_bytes(), dtype=np.uint8).reshape(3, 3073)
    assert ds.test_labels.tolist() == raw[:, 0].tolist()
    red = raw[0, 1:1025].reshape(32, 32) / 255.0
    np.testing.assert_allclose(ds.test_images[0, 0].double().numpy() * ds.std[0] + ds.mean[0], red,
                               atol=1e-6)
    (d / "test_batch.bin").write_bytes((d / "test_batch.bin").read_bytes()[:-7])
    with pytest.raises(CorruptFileError, match="not a positive multiple of the 3073-byte"):
        load_dataset("cifar10", tmp_path)
    _cifar_file(d / "test_batch.bin", 3, 9, label_max=200)
    with pytest.raises(CorruptFileError, match="CIFAR-10 labels are 0..9"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataNotFoundError, match="needs --data-dir"):
        load_dataset("cifar10")
    with pytest.raises(DataNotFoundError, match="binary files were not found"):
        load_dataset("cifar10", tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# npy


def test_npy_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (40, 5, 5)).astype(np.uint8))
    np.save(tmp_path / "labels.npy", np.arange(40) % 4)
    ds = load_dataset("npy", tmp_path)
    assert ds.input_shape == (1, 5, 5) and len(ds.train_labels) == 30 and ds.num_classes == 4
    np.save(tmp_path / "test_images.npy", rng.normal(size=(6, 5, 5)))
    np.save(tmp_path / "test_labels.npy", np.arange(6) % 4)
    ds = load_dataset("npy", tmp_path)
    assert len(ds.test_labels) == 6 and len(ds.train_labels) == 40
    vec = tmp_path / "vec"
    vec.mkdir()
    np.save(vec / "images.npy", rng.normal(size=(12, 7)))
    np.save(vec / "labels.npy", np.arange(12) % 2)
    assert load_dataset("npy", vec).input_shape == (1, 1, 7)


@pytest.mark.parametrize(
    ("images", "labels", "error", "match"),
    [
        (np.array([{"a": 1}] * 4, dtype=object), np.arange(4), CorruptFileError, "never does"),
        (np.zeros((4, 2, 2)), np.arange(3), CorruptFileError, "holds 4 images but .* 3 labels"),
        (np.zeros((4, 2, 2)), np.linspace(0, 1, 4), CorruptFileError, "1-D integer array"),
        (np.zeros((4, 2, 2)), -np.arange(4), CorruptFileError, "negative labels"),
        (np.zeros((4, 1, 1, 2, 2)), np.arange(4), CorruptFileError, r"expected \(N, H, W\)"),
        (np.full((4, 2, 2), np.nan), np.arange(4), CorruptFileError, "NaN or infinite"),
        (np.array([["a"]] * 4), np.arange(4), CorruptFileError, "must be numeric"),
    ],
)
def test_npy_errors(tmp_path, images, labels, error, match):
    np.save(tmp_path / "images.npy", images, allow_pickle=True)
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(error, match=match):
        load_dataset("npy", tmp_path)


def test_npy_missing_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="needs --data-dir"):
        load_dataset("npy")
    with pytest.raises(DataNotFoundError, match="at least one is missing"):
        load_dataset("npy", tmp_path)
    np.save(tmp_path / "images.npy", np.zeros((4, 2, 2)))
    np.save(tmp_path / "labels.npy", np.arange(4))
    np.save(tmp_path / "test_images.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataNotFoundError, match="only one of test_images.npy"):
        load_dataset("npy", tmp_path)
    np.save(tmp_path / "test_labels.npy", np.arange(3))
    with pytest.raises(CorruptFileError, match="differ in length"):
        load_dataset("npy", tmp_path)
    np.save(tmp_path / "test_images.npy", np.zeros((3, 3, 3)))
    with pytest.raises(CorruptFileError, match="Test images have shape"):
        load_dataset("npy", tmp_path)
    (tmp_path / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="not a readable .npy file"):
        load_dataset("npy", tmp_path)
