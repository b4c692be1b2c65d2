"""The user's own arrays: ``images.npy`` + ``labels.npy`` (+ ``test_images.npy`` +
``test_labels.npy``), read with ``allow_pickle=False``: nothing here ever unpickles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convergent._errors import CorruptFileError, DataNotFoundError
from convergent.data._dataset import RawSplits
from convergent.data._split import stratified_split

TRAIN_FILES = ("images.npy", "labels.npy")
TEST_FILES = ("test_images.npy", "test_labels.npy")
HOW_TO_GET = (
    "save the arrays with numpy.save as images.npy (shape (N, H, W), (N, C, H, W) or (N, D)) and "
    "labels.npy (shape (N,), integers 0..K-1), optionally test_images.npy and test_labels.npy, "
    "and pass --data-dir DIR (data_dir=DIR) naming their directory"
)


def _load(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptFileError(
            f"{path} cannot be read as a plain .npy array without unpickling ({exc}). convergent "
            "never unpickles user files: save a numeric array with numpy.save."
        ) from exc
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        array.close()
        raise CorruptFileError(
            f"{path} is an .npz archive, not one array; save each array with numpy.save."
        )
    return array


def _images(path: Path) -> tuple[np.ndarray, float]:
    """(N, C, H, W) images as stored, and their scale: 255 for uint8, else 1 (used as given)."""
    raw = _load(path)
    if raw.dtype.kind not in "iuf":
        raise CorruptFileError(f"{path} has dtype {raw.dtype}; images must be integers or floats.")
    if raw.ndim == 2:  # (N, D) vectors: one-channel images of 1 x D pixels
        raw = raw[:, None, None, :]
    elif raw.ndim == 3:
        raw = raw[:, None]
    elif raw.ndim != 4:
        raise CorruptFileError(
            f"{path} has shape {raw.shape}; images must be (N, H, W), (N, C, H, W) or (N, D)."
        )
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise CorruptFileError(f"{path} contains NaN or infinite values.")
    return raw, 255.0 if raw.dtype == np.uint8 else 1.0


def _labels(path: Path) -> np.ndarray:
    raw = _load(path)
    if raw.ndim != 1 or raw.dtype.kind not in "iu":
        raise CorruptFileError(
            f"{path} must be a 1-D array of integer class labels. Got shape {raw.shape}, dtype "
            f"{raw.dtype} instead (convert with labels.astype(numpy.int64) if they are whole)."
        )
    if raw.size and raw.min() < 0:
        raise CorruptFileError(f"{path} has negative labels (smallest {raw.min()}); use 0..K-1.")
    return raw.astype(np.int64)


def _pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, float, np.ndarray]:
    (images, scale), labels = _images(images_path), _labels(labels_path)
    if len(images) != len(labels):
        raise CorruptFileError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; there must be one label per image."
        )
    return images, scale, labels


def load_npy_splits(data_dir: str | os.PathLike | None) -> RawSplits:
    """The user's arrays; without a test pair, 1/4 is held out (stratified, seed 0).

    Returns
    -------
    RawSplits
        Images as (N, C, H, W) ((N, H, W) gets C = 1, (N, D) becomes (N, 1, 1, D)), as stored:
        uint8 means bytes (scale 255, pixels in [0, 1]), other dtypes are used as given (scale
        1); labels int64; ``num_classes`` is the largest label + 1.
    """
    if data_dir is None:
        raise DataNotFoundError(f"The npy dataset needs a data directory: {HOW_TO_GET}.")
    root = Path(data_dir).expanduser()
    missing = [str(root / f) for f in TRAIN_FILES if not (root / f).is_file()]
    if missing:
        raise DataNotFoundError(f"Looked for {' and '.join(missing)}: not found. {HOW_TO_GET}.")
    images, scale, labels = _pair(*(root / f for f in TRAIN_FILES))
    has_test = [(root / f).is_file() for f in TEST_FILES]
    if any(has_test) and not all(has_test):
        present, absent = TEST_FILES if has_test[0] else TEST_FILES[::-1]
        raise DataNotFoundError(
            f"{root} has {present} but no {absent}; give both test files or neither (then 1/4 of "
            "images.npy is held out for testing)."
        )
    if all(has_test):
        test_images, test_scale, test_labels = _pair(*(root / f for f in TEST_FILES))
        if test_images.shape[1:] != images.shape[1:]:
            raise CorruptFileError(
                f"Test images in {root} have (C, H, W) {test_images.shape[1:]} but train images "
                f"have {images.shape[1:]}; they must match."
            )
        if test_scale != scale:  # e.g. uint8 train, float test: bring test to train's units
            test_images = test_images * (scale / test_scale)
        train_images, train_labels = images, labels
    else:
        train, test = stratified_split(labels)
        train_images, train_labels = images[train], labels[train]
        test_images, test_labels = images[test], labels[test]
    num_classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    return RawSplits(
        train_images, train_labels, test_images, test_labels, str(root), num_classes, scale
    )
