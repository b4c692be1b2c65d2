"""The uniform dataset object every loader returns: normalised train/test tensors and their origin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset split into train and test, normalised per channel with statistics of
    the training split.

    Attributes
    ----------
    name : str
        Registry name (``digits``, ``fashion-mnist``, ...).
    train_images, test_images : torch.Tensor, shape (N, C, H, W), float32
        Normalised images: ``(pixel - mean[c]) / std[c]`` with pixels scaled to [0, 1].
    train_labels, test_labels : torch.Tensor, shape (N,), int64
    num_classes : int
    mean, std : tuple of float
        Per-channel mean and standard deviation of the training pixels (scaled to [0, 1]).
    source : str
        Where the data came from (a path, or ``sklearn.datasets.load_digits``).
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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of ``'train'`` or ``'test'``."""
        if which == "train":
            return self.train_images, self.train_labels
        if which == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"The 'which' parameter must be one of {SPLITS}. Got {which!r} instead.")

    def loader(self, which: str, batch_size: int, shuffle: bool = False,
               seed: int | None = None) -> torch.utils.data.DataLoader:
        """A DataLoader over a split; with ``shuffle`` the order is fixed by ``seed``."""
        images, labels = self.split(which)
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed)) if shuffle else None
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle,
            generator=generator,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for manifests."""
        return {
            "name": self.name,
            "source": self.source,
            "train_size": int(len(self.train_labels)),
            "test_size": int(len(self.test_labels)),
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
            "normalisation": {"mean": list(self.mean), "std": list(self.std),
                              "computed_on": "train split, pixels scaled to [0, 1]"},
        }


def make_dataset(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, source: str, num_classes: int | None = None) -> Dataset:
    """Normalise (N, C, H, W) float images in [0, 1] with the train split's per-channel statistics."""
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    mean = train_x.mean(axis=(0, 2, 3))
    std = train_x.std(axis=(0, 2, 3))
    std = np.where(std > 0, std, 1.0)
    norm = lambda x: ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)  # noqa: E731
    classes = int(num_classes if num_classes is not None else max(train_y.max(), test_y.max()) + 1)
    return Dataset(
        name=name,
        train_images=torch.from_numpy(norm(train_x)),
        train_labels=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        test_images=torch.from_numpy(norm(test_x)),
        test_labels=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        num_classes=classes,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        source=source,
    )
