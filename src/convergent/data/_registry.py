"""Datasets by name."""

from __future__ import annotations

import os

from convergent.data._arrays import load_digits_arrays, load_npy_arrays
from convergent.data._cifar import load_cifar10
from convergent.data._dataset import Dataset, make_dataset
from convergent.data._idx import load_idx_dataset

_LOADERS = {
    "digits": lambda data_dir: load_digits_arrays(),
    "fashion-mnist": lambda data_dir: load_idx_dataset("fashion-mnist", data_dir),
    "mnist": lambda data_dir: load_idx_dataset("mnist", data_dir),
    "cifar10": load_cifar10,
    "npy": load_npy_arrays,
}
_CLASSES = {"digits": 10, "fashion-mnist": 10, "mnist": 10, "cifar10": 10}


def available_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts."""
    return list(_LOADERS)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 subset: int | None = None) -> Dataset:
    """Load a dataset by name as normalised train/test tensors.

    Parameters
    ----------
    name : str
        ``digits`` (embedded, the default everywhere), ``fashion-mnist``, ``mnist``, ``cifar10``
        or ``npy``.
    data_dir : path, optional
        Where the files are (``fashion-mnist`` falls back to Debian's install location).
    subset : int, optional
        Keep only the first ``subset`` training examples (for quick runs); the test split is kept
        whole and normalisation uses the kept training examples.

    Returns
    -------
    Dataset
    """
    if name not in _LOADERS:
        raise ValueError(f"Unknown dataset {name!r}. Available datasets: {', '.join(_LOADERS)}.")
    if subset is not None and (int(subset) != subset or subset < 1):
        raise ValueError(f"The 'subset' parameter must be an integer >= 1. Got {subset!r} instead.")
    train_x, train_y, test_x, test_y, source = _LOADERS[name](data_dir)
    if subset is not None:
        train_x, train_y = train_x[:subset], train_y[:subset]
    return make_dataset(name, train_x, train_y, test_x, test_y, source=source,
                        num_classes=_CLASSES.get(name))
