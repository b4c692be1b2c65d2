"""User arrays (``images.npy``, ``labels.npy``) and scikit-learn's bundled digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convergent._errors import CorruptFileError, DataNotFoundError

DIGITS_TEST_FRACTION = 0.25
SPLIT_SEED = 0


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test indices (each class split in the same proportion)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


def load_digits_arrays():
    """scikit-learn's 1797 8x8 digits (values 0..16, scaled to [0, 1]), split 75/25 stratified."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images[:, None].astype(np.float64) / 16.0
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, DIGITS_TEST_FRACTION, SPLIT_SEED)
    return images[train], labels[train], images[test], labels[test], "sklearn.datasets.load_digits"


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise CorruptFileError(
                f"{path} is not a readable .npy file (no NumPy header); save it with numpy.save."
            )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise CorruptFileError(
            f"{path} holds Python objects (it would need unpickling, which convergent never does). "
            "Save a plain numeric array."
        ) from exc
    except OSError as exc:
        raise CorruptFileError(f"{path} is not a readable .npy file ({exc}).") from exc


def _images(arr: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.number):
        raise CorruptFileError(f"{path} has dtype {arr.dtype}; images must be numeric.")
    if arr.ndim == 2:  # (N, D) vectors: one-channel 1 x D images
        arr = arr[:, None, None, :]
    elif arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim != 4:
        raise CorruptFileError(
            f"{path} has shape {arr.shape}; expected (N, H, W), (N, C, H, W) or (N, D)."
        )
    arr = arr.astype(np.float64)
    if arr.size and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise CorruptFileError(f"{path} contains NaN or infinite values.")
    return arr


def _labels(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise CorruptFileError(
            f"{path} must be a 1-D integer array of class labels. Got shape {arr.shape}, dtype "
            f"{arr.dtype} instead."
        )
    if arr.size and arr.min() < 0:
        raise CorruptFileError(f"{path} has negative labels; labels must be 0..K-1.")
    return arr.astype(np.int64)


def load_npy_arrays(data_dir: str | os.PathLike | None):
    """``images.npy`` + ``labels.npy`` (+ optional ``test_images.npy`` / ``test_labels.npy``).

    uint8 images are scaled by 1/255; other images are used as given. Without a test split, 25% of
    the data is held out (stratified, fixed seed).
    """
    if data_dir is None:
        raise DataNotFoundError("The npy dataset needs --data-dir: a directory with images.npy and labels.npy.")
    d = Path(data_dir)
    if not (d / "images.npy").is_file() or not (d / "labels.npy").is_file():
        raise DataNotFoundError(
            f"Looked for {d / 'images.npy'} and {d / 'labels.npy'}; at least one is missing."
        )
    raw = _load_npy(d / "images.npy")
    scale = 255.0 if raw.dtype == np.uint8 else 1.0
    images = _images(raw, d / "images.npy") / scale
    labels = _labels(_load_npy(d / "labels.npy"), d / "labels.npy")
    if len(images) != len(labels):
        raise CorruptFileError(
            f"{d / 'images.npy'} holds {len(images)} images but {d / 'labels.npy'} holds "
            f"{len(labels)} labels."
        )
    if (d / "test_images.npy").is_file() != (d / "test_labels.npy").is_file():
        raise DataNotFoundError(f"{d} has only one of test_images.npy and test_labels.npy; give both.")
    if (d / "test_images.npy").is_file():
        traw = _load_npy(d / "test_images.npy")
        test_x = _images(traw, d / "test_images.npy") / (255.0 if traw.dtype == np.uint8 else 1.0)
        test_y = _labels(_load_npy(d / "test_labels.npy"), d / "test_labels.npy")
        if len(test_x) != len(test_y):
            raise CorruptFileError(f"{d} test_images.npy and test_labels.npy differ in length.")
        if test_x.shape[1:] != images.shape[1:]:
            raise CorruptFileError(
                f"Test images have shape {test_x.shape[1:]}, train images {images.shape[1:]}."
            )
        return images, labels, test_x, test_y, str(d)
    train, test = stratified_split(labels, DIGITS_TEST_FRACTION, SPLIT_SEED)
    return images[train], labels[train], images[test], labels[test], str(d)
