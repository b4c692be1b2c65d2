"""IDX files (MNIST, Fashion-MNIST): round trips on synthetic files, every kind of damage, the
search for the files and its error message, and the real Fashion-MNIST when Debian installed it."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from convergent import CorruptFileError, DataNotFoundError
from convergent.data import _idx, load_dataset, read_idx

STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written independently of the reader."""
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(f">I{array.ndim}I", 0x800 | array.ndim, *array.shape) + array.tobytes()


def write_idx_dir(directory: Path, *, gz: bool, n_train=30, n_test=12, side=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "train": (rng.integers(0, 256, (n_train, side, side)), rng.integers(0, 10, n_train)),
        "test": (rng.integers(0, 256, (n_test, side, side)), rng.integers(0, 10, n_test)),
    }
    for split, arrays in data.items():
        for stem, array in zip(STEMS[split], arrays, strict=True):
            payload = idx_bytes(array)
            if gz:
                (directory / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (directory / stem).write_bytes(payload)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, gz):
    data = write_idx_dir(tmp_path, gz=gz)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.name == "fashion-mnist" and ds.source == str(tmp_path) and ds.num_classes == 10
    assert ds.input_shape == (1, 5, 5) and len(ds.train_labels) == 30 and len(ds.test_labels) == 12
    for split in ("train", "test"):
        images, labels = ds.split(split)
        assert torch.equal(labels, torch.from_numpy(data[split][1]))
        restored = images[:, 0].double().numpy() * ds.std[0] + ds.mean[0]
        np.testing.assert_allclose(restored, data[split][0] / 255.0, atol=1e-6)
    assert ds.mean[0] == pytest.approx(data["train"][0].mean() / 255.0, rel=1e-12)
    assert ds.std[0] == pytest.approx(data["train"][0].std() / 255.0, rel=1e-12)
    assert load_dataset("mnist", tmp_path).name == "mnist"


def test_read_idx_recognises_gzip_by_content_not_name(tmp_path):
    labels = np.arange(7)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(labels))
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(labels)))
    for name in ("plain.gz", "packed"):
        out = read_idx(tmp_path / name, 1)
        assert out.dtype == np.uint8 and out.tolist() == list(range(7))
    (tmp_path / "four").write_bytes(idx_bytes(np.zeros((2, 3, 4, 5))))
    assert read_idx(tmp_path / "four", 4).shape == (2, 3, 4, 5)


@pytest.mark.parametrize(
    ("layout", "spelling"),
    [(".", "{}"), ("raw", "{}.gz"), ("FashionMNIST/raw", "{}"), (".", "dotted")],
)
def test_other_layouts_and_spellings(tmp_path, layout, spelling):
    where = tmp_path / layout
    write_idx_dir(where, gz=False)
    if spelling != "{}":
        for stem in (*STEMS["train"], *STEMS["test"]):
            payload = (where / stem).read_bytes()
            (where / stem).unlink()
            name = stem.replace("-idx", ".idx") if spelling == "dotted" else spelling.format(stem)
            (where / name).write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.source == str(where)  # pathlib drops the "." of tmp_path / "."


# ---------------------------------------------------------------------------------------------
# damaged files


def test_wrong_magic_number(tmp_path):
    (tmp_path / "labels").write_bytes(idx_bytes(np.zeros(4)))
    with pytest.raises(
        CorruptFileError,
        match=r"labels has IDX magic number 0x00000801, expected "
        r"0x00000803 \(unsigned bytes, 3 dimensions\)",
    ):
        read_idx(tmp_path / "labels", 3)
    (tmp_path / "ints").write_bytes(b"\x00\x00\x0c\x01" + idx_bytes(np.zeros(4))[4:])
    with pytest.raises(
        CorruptFileError,
        match=r"0x00000c01, expected 0x00000801 \(unsigned bytes, "
        r"1 dimension\)",
    ):
        read_idx(tmp_path / "ints", 1)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_trailing_bytes_name_file_and_sizes(tmp_path, gz):
    good = idx_bytes(np.ones((3, 4, 4)))  # 16-byte header + 48 bytes
    after = " after decompression" if gz else ""
    cases = {
        "short": (
            good[:-5],
            rf"\(truncated\): 59 bytes{after}, expected 64 \(16-byte header \+ "
            r"shape \(3, 4, 4\)\)",
        ),
        "long": (good + b"xyz", rf"\(3 trailing bytes\): 67 bytes{after}, expected 64"),
        "tiny": (good[:3], rf"tiny is truncated: 3 bytes{after}, too short for an IDX header"),
        "head": (good[:10], rf"head is truncated: 10 bytes{after}, expected at least 16"),
    }
    for name, (payload, match) in cases.items():
        (tmp_path / name).write_bytes(gzip.compress(payload) if gz else payload)
        with pytest.raises(CorruptFileError, match=match):
            read_idx(tmp_path / name, 3)


def test_damaged_gzip(tmp_path):
    (tmp_path / "cut.gz").write_bytes(gzip.compress(idx_bytes(np.ones((3, 4, 4))))[:-12])
    with pytest.raises(CorruptFileError, match=r"cut\.gz is a damaged gzip file"):
        read_idx(tmp_path / "cut.gz", 3)


def test_read_idx_argument_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"'ndim' parameter must be an int in 1\.\.255\. Got 0"):
        read_idx(tmp_path / "x", 0)
    with pytest.raises(DataNotFoundError, match=r"The IDX file .*absent does not exist"):
        read_idx(tmp_path / "absent", 1)


def test_image_and_label_counts_must_agree(tmp_path):
    write_idx_dir(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(11))))
    with pytest.raises(
        CorruptFileError,
        match=r"t10k-images-idx3-ubyte\.gz holds 12 images but "
        r".*t10k-labels-idx1-ubyte\.gz holds 11 labels",
    ):
        load_dataset("fashion-mnist", tmp_path)


def test_labels_must_be_in_range(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    labels = np.zeros(30)
    labels[[3, 8]] = [10, 200]
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(
        CorruptFileError,
        match=r"train-labels-idx1-ubyte has 2 labels outside "
        r"0\.\.9 \(largest 200\); it is not a mnist label file",
    ):
        load_dataset("mnist", tmp_path)


def test_train_and_test_images_must_have_one_size(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((12, 6, 5))))
    with pytest.raises(
        CorruptFileError,
        match=r"train images in .* are \(5, 5\) pixels but the "
        r"test images are \(6, 5\)",
    ):
        load_dataset("fashion-mnist", tmp_path)


# ---------------------------------------------------------------------------------------------
# the search and its message


def test_missing_directory_lists_every_place_and_how_to_get_the_files(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist", where)
    message = str(info.value)
    for place in (where, where / "raw", where / "FashionMNIST" / "raw"):
        assert f"  {place} (no such directory)" in message
    assert "`apt-get install dataset-fashion-mnist`" in message and "--data-dir" in message
    assert "t10k-labels-idx1-ubyte" in message


def test_partial_directory_says_what_is_missing(tmp_path):
    write_idx_dir(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(
        DataNotFoundError,
        match=rf"{tmp_path} \(missing t10k-images-idx3-ubyte"
        r"\[\.gz\]\)",
    ):
        load_dataset("fashion-mnist", tmp_path)


def test_default_places_are_searched_without_data_dir(tmp_path, monkeypatch):
    places = [tmp_path / "debian", tmp_path / "local"]
    monkeypatch.setitem(_idx.DEFAULT_DIRS, "mnist", places)
    with pytest.raises(
        DataNotFoundError,
        match=r"(?s)debian \(no such directory\).*local \(no "
        r"such directory\).*Debian has no MNIST package.*--data-dir",
    ):
        load_dataset("mnist")
    write_idx_dir(places[1], gz=True)
    assert load_dataset("mnist").source == str(places[1])


def test_default_places_are_what_debian_installs():
    assert _idx.DEFAULT_DIRS["fashion-mnist"][0] == DEBIAN_DIR


@pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} is absent: Debian's dataset-fashion-mnist package is not installed",
)
def test_real_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion-mnist")
    assert ds.source == str(DEBIAN_DIR)
    assert (len(ds.train_labels), len(ds.test_labels)) == (60000, 10000)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert torch.bincount(ds.train_labels).tolist() == [6000] * 10
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    # the commonly published normalisation constants of Fashion-MNIST
    assert ds.mean[0] == pytest.approx(0.2860, abs=5e-5)
    assert ds.std[0] == pytest.approx(0.3530, abs=5e-5)
