"""The uniform dataset object every loader returns, and the one place images are normalised."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

SPLITS = ("train", "test")
NORMALISATION = (
    "per channel: (pixel - mean) / std, with pixels scaled to [0, 1] and mean, std (population, "
    "ddof=0) of the train split; a constant channel keeps std 1"
)


class RawSplits(NamedTuple):
    """What a format reader hands to :func:`build_dataset`: the train and test arrays as stored.

    Images have shape (N, C, H, W) in any real dtype (uint8 bytes, digit counts, user floats) and
    ``pixel = value / scale``; labels are int64 of shape (N,). Statistics are taken on the stored
    values in float64, so uint8 data gives exact means.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    num_classes: int
    scale: float = 1.0


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset, split into train and test and normalised per channel with
    statistics of the train split.

    Build one with :func:`convergent.data.load_dataset`.

    Attributes
    ----------
    name : str
        Registry name (``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``, ``npy``).
    train_images, test_images : torch.Tensor, shape (N, C, H, W), float32
        Normalised images, ``(pixel - mean[c]) / std[c]``, pixels scaled to [0, 1] first.
    train_labels, test_labels : torch.Tensor, shape (N,), int64
        Class indices in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes.
    mean, std : tuple of float, length C
        Per-channel mean and (population) standard deviation of the train pixels in the [0, 1]
        scale: ``pixel = image * std[c] + mean[c]`` undoes the normalisation. A constant channel
        records std 1.
    source : str
        Where the data came from: a directory, or ``'sklearn.datasets.load_digits'``.
    subset : int or None
        The ``subset`` argument the train split was cut to, if any.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    subset: int | None = None

    def __post_init__(self) -> None:
        for which in SPLITS:
            images, labels = self.split(which)
            if images.dtype != torch.float32 or images.ndim != 4:
                raise ValueError(
                    f"Dataset {which}_images must be a float32 tensor of shape (N, C, H, W). Got "
                    f"dtype {images.dtype}, shape {tuple(images.shape)} instead."
                )
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise ValueError(
                    f"Dataset {which}_labels must be an int64 tensor of shape ({len(images)},), "
                    f"one label per image. Got dtype {labels.dtype}, shape {tuple(labels.shape)} "
                    "instead."
                )
        if self.test_images.shape[1:] != self.train_images.shape[1:]:
            raise ValueError(
                f"Dataset train and test images must have the same (C, H, W). Got "
                f"{tuple(self.train_images.shape[1:])} and {tuple(self.test_images.shape[1:])}."
            )
        channels = self.train_images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"Dataset mean and std need one value per channel ({channels}). Got "
                f"{len(self.mean)} and {len(self.std)} values instead."
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The images, shape (N, C, H, W), and labels, shape (N,), of ``'train'`` or ``'test'``."""
        if which == "train":
            return self.train_images, self.train_labels
        if which == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"The 'which' parameter must be 'train' or 'test'. Got {which!r} instead.")

    def loader(
        self, which: str, batch_size: int, shuffle: bool = False, seed: int | None = None
    ) -> DataLoader:
        """A DataLoader of ``(images, labels)`` batches over one split.

        Parameters
        ----------
        which : {'train', 'test'}
            The split.
        batch_size : int
            Examples per batch (the last batch may be smaller).
        shuffle : bool
            Reshuffle the order at every pass over the loader.
        seed : int, optional
            With ``shuffle``, fixes the sequence of orders (a private ``torch.Generator``): two
            loaders with the same seed yield the same batches. ``None`` draws from torch's global
            generator (``torch.manual_seed``). Ignored without ``shuffle``.

        Returns
        -------
        torch.utils.data.DataLoader
            Batches of images, shape (B, C, H, W) float32, and labels, shape (B,) int64.
        """
        images, labels = self.split(which)
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"The 'batch_size' parameter must be an int >= 1. Got {batch_size!r}.")
        generator = None
        if shuffle and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        return DataLoader(
            TensorDataset(images, labels),
            batch_size=int(batch_size),
            shuffle=shuffle,
            generator=generator,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for manifests.

        Returns
        -------
        dict
            ``name``, ``source``, ``train_size``, ``test_size``, ``input_shape`` ([C, H, W]),
            ``num_classes``, ``mean``, ``std`` (lists, one value per channel), ``subset`` and a
            sentence saying how the images were normalised.
        """
        return {
            "name": self.name,
            "source": self.source,
            "train_size": len(self.train_labels),
            "test_size": len(self.test_labels),
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "subset": self.subset,
            "normalisation": NORMALISATION,
        }


def channel_stats(images: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population standard deviation of images, shape (N, C, H, W).

    Two passes in float64 over chunks of ``chunk`` images, so memory stays small for big splits.

    Returns
    -------
    mean, std : np.ndarray, shape (C,), float64
    """
    n, c = images.shape[:2]
    count = n * images.shape[2] * images.shape[3]
    total = np.zeros(c)
    for start in range(0, n, chunk):
        total += images[start : start + chunk].sum(axis=(0, 2, 3), dtype=np.float64)
    mean = total / count
    comoment = np.zeros(c)
    for start in range(0, n, chunk):
        centred = images[start : start + chunk].astype(np.float64) - mean[:, None, None]
        comoment += np.einsum("nchw,nchw->c", centred, centred)
    return mean, np.sqrt(comoment / count)


def _normalised(
    images: np.ndarray, shift: np.ndarray, divisor: np.ndarray, chunk: int
) -> np.ndarray:
    """``(images - shift[c]) / divisor[c]``, computed in float64 by chunks, stored as float32."""
    out = np.empty(images.shape, dtype=np.float32)
    shift, divisor = shift[:, None, None], divisor[:, None, None]
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = (images[start : start + chunk] - shift) / divisor
    return out


def build_dataset(
    name: str, raw: RawSplits, *, subset: int | None = None, chunk: int = 1024
) -> Dataset:
    """Cut the train split to ``subset``, normalise both splits with the train statistics and wrap
    them as a :class:`Dataset` (float32 images, int64 labels)."""
    train_x, train_y = raw.train_images, raw.train_labels
    if subset is not None:
        train_x, train_y = train_x[:subset], train_y[:subset]
    if len(train_y) == 0:
        raise ValueError(f"The train split of {name!r} (from {raw.source}) is empty.")
    shift, spread = channel_stats(train_x, chunk)  # in stored units
    spread = np.where(spread > 0, spread, float(raw.scale))  # constant channel: std 1 in [0, 1]
    return Dataset(
        name=name,
        train_images=torch.from_numpy(_normalised(train_x, shift, spread, chunk)),
        train_labels=torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
        test_images=torch.from_numpy(_normalised(raw.test_images, shift, spread, chunk)),
        test_labels=torch.from_numpy(np.ascontiguousarray(raw.test_labels, dtype=np.int64)),
        num_classes=int(raw.num_classes),
        mean=tuple(float(v) for v in shift / raw.scale),
        std=tuple(float(v) for v in spread / raw.scale),
        source=raw.source,
        subset=subset,
    )
