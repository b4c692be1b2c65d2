"""scikit-learn's bundled handwritten digits: the embedded default, no download, no file."""

from __future__ import annotations

import numpy as np

from convergent.data._dataset import RawSplits
from convergent.data._split import stratified_split

SOURCE = "sklearn.datasets.load_digits"
MAX_VALUE = 16.0  # the digits are 8x8 counts of set pixels in 4x4 blocks: 0 .. 16


def load_digits_splits() -> RawSplits:
    """The 1797 8x8 digits, (N, 1, 8, 8) values 0..16 (scale 16), split 3:1 (stratified, seed 0).

    Returns
    -------
    RawSplits
        1347 train and 450 test images, 10 classes.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images[:, None]
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels)
    return RawSplits(
        images[train], labels[train], images[test], labels[test], SOURCE, 10, scale=MAX_VALUE
    )
