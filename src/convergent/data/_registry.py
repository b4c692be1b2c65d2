"""Datasets by name: the one entry point, :func:`load_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable
from numbers import Integral

from convergent.data._cifar import load_cifar10_splits
from convergent.data._dataset import Dataset, RawSplits, build_dataset
from convergent.data._digits import load_digits_splits
from convergent.data._idx import load_idx_splits
from convergent.data._npy import load_npy_splits

_READERS: dict[str, Callable[[str | os.PathLike | None], RawSplits]] = {
    "digits": lambda data_dir: load_digits_splits(),
    "fashion-mnist": lambda data_dir: load_idx_splits("fashion-mnist", data_dir),
    "mnist": lambda data_dir: load_idx_splits("mnist", data_dir),
    "cifar10": load_cifar10_splits,
    "npy": load_npy_splits,
}


def available_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts, the embedded default (``digits``) first."""
    return list(_READERS)


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, subset: int | None = None
) -> Dataset:
    """Load a dataset by name as normalised train/test tensors.

    Parameters
    ----------
    name : str
        ``digits`` (scikit-learn's 1797 8x8 digits: embedded, no file needed; ``data_dir`` is
        ignored), ``fashion-mnist`` and ``mnist`` (the four IDX files, raw or ``.gz``; Fashion-MNIST
        is found without ``data_dir`` where Debian's ``dataset-fashion-mnist`` installs it),
        ``cifar10`` (the binary version) or ``npy`` (your ``images.npy`` and ``labels.npy``).
        Case and ``_`` for ``-`` do not matter.
    data_dir : path, optional
        The directory holding the files.
    subset : int, optional
        Keep only the first ``subset`` training examples (quick runs); the normalisation
        statistics are those of the kept examples, the test split is whole.

    Returns
    -------
    Dataset
        Images (N, C, H, W) float32, normalised per channel with train statistics; labels (N,)
        int64.

    Raises
    ------
    ValueError
        An unknown ``name`` or a ``subset`` that is not an int >= 1.
    DataNotFoundError
        The files are not there; the message lists every place searched and how to get them.
    CorruptFileError
        A file is truncated, has trailing bytes, the wrong header, labels or shapes.
    """
    if not isinstance(name, str):
        raise TypeError(f"The 'name' parameter must be a str. Got {type(name).__name__} instead.")
    key = name.strip().lower().replace("_", "-")
    if key not in _READERS:
        raise ValueError(f"Unknown dataset {name!r}. Available datasets: {', '.join(_READERS)}.")
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, Integral) or subset < 1:
            raise ValueError(f"The 'subset' parameter must be an int >= 1. Got {subset!r} instead.")
        subset = int(subset)
    return build_dataset(key, _READERS[key](data_dir), subset=subset)
