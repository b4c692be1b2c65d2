"""CIFAR-10, binary version (never the Python pickles): records of 1 label byte + 3072 pixel bytes.

The pixel bytes are the red, green and blue 32x32 planes, each row-major.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convergent._errors import CorruptFileError, DataNotFoundError
from convergent.data._dataset import RawSplits

SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE
NUM_CLASSES = 10
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
SUBFOLDER = "cifar-10-batches-bin"  # what the binary archive unpacks to
HOW_TO_GET = (
    "download the CIFAR-10 binary version (cifar-10-binary.tar.gz), unpack it with `tar xzf`, and "
    "pass --data-dir DIR (data_dir=DIR) naming the unpacked folder or the folder above it"
)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images, shape (N, 3, 32, 32) uint8, and labels, shape (N,) int64, of one binary batch file.

    Raises :class:`CorruptFileError` for a size that is not a positive multiple of 3073 bytes or a
    label outside 0..9.
    """
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if data.size == 0 or data.size % RECORD:
        raise CorruptFileError(
            f"{path} has {data.size} bytes, not a positive multiple of the {RECORD}-byte CIFAR-10 "
            f"record ({data.size // RECORD} whole records + {data.size % RECORD} bytes). It is "
            "truncated, or not the binary version."
        )
    records = data.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    bad = labels >= NUM_CLASSES
    if bad.any():
        raise CorruptFileError(
            f"{path} has {int(bad.sum())} labels outside 0..{NUM_CLASSES - 1} (largest "
            f"{int(labels.max())}); it is not a CIFAR-10 binary batch (CIFAR-100's records "
            "differ), or it is damaged."
        )
    return records[:, 1:].reshape(-1, 3, SIDE, SIDE), labels


def _find_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        raise DataNotFoundError(f"The cifar10 dataset needs a data directory: {HOW_TO_GET}.")
    root = Path(data_dir).expanduser()
    report = []
    for place in (root, root / SUBFOLDER):
        if not place.is_dir():
            report.append(f"  {place} (no such directory)")
            continue
        missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (place / f).is_file()]
        if not missing:
            return place
        hint = ""
        if (place / "data_batch_1").is_file():
            hint = "; it holds the Python (pickle) version, which convergent does not read"
        report.append(f"  {place} (missing {', '.join(missing)}{hint})")
    raise DataNotFoundError(
        "The CIFAR-10 binary files were not found. Looked in:\n" + "\n".join(report) + "\n"
        f"Expected {', '.join(TRAIN_FILES)} and {TEST_FILE}. To get them: {HOW_TO_GET}."
    )


def load_cifar10_splits(data_dir: str | os.PathLike | None) -> RawSplits:
    """The 5 training batches (50000 images) and the test batch (10000) of CIFAR-10.

    Returns
    -------
    RawSplits
        Images as (N, 3, 32, 32) uint8 (scale 255), labels int64 in 0..9.
    """
    directory = _find_dir(data_dir)
    batches = [read_cifar_batch(directory / f) for f in TRAIN_FILES]
    train_images = np.concatenate([b[0] for b in batches])
    train_labels = np.concatenate([b[1] for b in batches])
    test_images, test_labels = read_cifar_batch(directory / TEST_FILE)
    return RawSplits(
        train_images, train_labels, test_images, test_labels, str(directory), NUM_CLASSES, 255.0
    )
