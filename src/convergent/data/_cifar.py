"""CIFAR-10, binary version (no pickle): records of 1 label byte + 3072 pixel bytes (RGB planes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convergent._errors import CorruptFileError, DataNotFoundError

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


def read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise CorruptFileError(
            f"{path} has {raw.size} bytes, not a positive multiple of the {RECORD}-byte CIFAR-10 "
            "record; it is truncated or not the binary version."
        )
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise CorruptFileError(f"{path} has label {int(labels.max())}; CIFAR-10 labels are 0..9.")
    images = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    return images, labels


def load_cifar10(data_dir: str | os.PathLike | None):
    if data_dir is None:
        raise DataNotFoundError(
            "CIFAR-10 needs --data-dir: a directory with the binary version's data_batch_1.bin .. "
            "data_batch_5.bin and test_batch.bin (the 'CIFAR-10 binary version' archive, unpacked)."
        )
    searched = [Path(data_dir), Path(data_dir) / "cifar-10-batches-bin"]
    for d in searched:
        if all((d / f).is_file() for f in [*TRAIN_FILES, TEST_FILE]):
            parts = [read_cifar_file(d / f) for f in TRAIN_FILES]
            train_x = np.concatenate([p[0] for p in parts])
            train_y = np.concatenate([p[1] for p in parts])
            test_x, test_y = read_cifar_file(d / TEST_FILE)
            return train_x, train_y, test_x, test_y, str(d)
    raise DataNotFoundError(
        f"The CIFAR-10 binary files were not found. Looked in: {', '.join(map(str, searched))}. "
        f"Expected {', '.join(TRAIN_FILES)} and {TEST_FILE} (the binary version, not the Python "
        "pickles)."
    )
