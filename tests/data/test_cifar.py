"""CIFAR-10, binary version, on small synthetic batch files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convergent import CorruptFileError, DataNotFoundError
from convergent.data import load_dataset

TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]


def write_batch(path: Path, n: int, seed: int, largest_label: int = 9) -> np.ndarray:
    """n records of 1 label byte + 3072 pixel bytes (R, G, B planes); returns the records."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] = rng.integers(0, largest_label + 1, n)
    path.write_bytes(records.tobytes())
    return records


def write_cifar(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    train = np.concatenate([write_batch(directory / f, 3, i) for i, f in enumerate(TRAIN)])
    return train, write_batch(directory / "test_batch.bin", 4, 99)


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-bin"])
def test_round_trip(tmp_path, subfolder):
    train, test = write_cifar(tmp_path / subfolder)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.source == str(tmp_path / subfolder)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.train_labels.tolist() == train[:, 0].tolist()
    assert ds.test_labels.tolist() == test[:, 0].tolist()
    pixels = train[:, 1:].reshape(15, 3, 32, 32) / 255.0
    np.testing.assert_allclose(ds.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, pixels.std(axis=(0, 2, 3)), rtol=1e-12)
    # the first test image's green plane is bytes 1025..2048 of its record, row-major
    green = test[0, 1 + 1024 : 1 + 2048].reshape(32, 32) / 255.0
    restored = ds.test_images[0, 1].double().numpy() * ds.std[1] + ds.mean[1]
    np.testing.assert_allclose(restored, green, atol=1e-6)


def test_truncated_batch(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(
        CorruptFileError,
        match=r"data_batch_3\.bin has 9212 bytes, not a positive multiple of the 3073-byte "
        r"CIFAR-10 record \(2 whole records \+ 3066 bytes\)",
    ):
        load_dataset("cifar10", tmp_path)
    path.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="has 0 bytes, not a positive multiple"):
        load_dataset("cifar10", tmp_path)


def test_labels_out_of_range(tmp_path):
    write_cifar(tmp_path)
    records = write_batch(tmp_path / "test_batch.bin", 4, 1)
    records[2, 0] = 57
    (tmp_path / "test_batch.bin").write_bytes(records.tobytes())
    with pytest.raises(
        CorruptFileError, match=r"test_batch\.bin has 1 labels outside 0\.\.9 \(largest 57\)"
    ):
        load_dataset("cifar10", tmp_path)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(
        DataNotFoundError, match=r"cifar10 dataset needs a data directory: .*tar xzf"
    ):
        load_dataset("cifar10")
    write_cifar(tmp_path)
    (tmp_path / "data_batch_5.bin").unlink()
    (tmp_path / "data_batch_1").write_bytes(b"a pickle")  # the Python version's name
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    assert (
        f"  {tmp_path} (missing data_batch_5.bin; it holds the Python (pickle) version" in message
    )
    assert f"  {tmp_path / 'cifar-10-batches-bin'} (no such directory)" in message
    assert "cifar-10-binary.tar.gz" in message and "--data-dir" in message
