"""Datasets by name -> normalised train/test tensors and loaders.

``digits`` (embedded), ``fashion-mnist`` / ``mnist`` (IDX files), ``cifar10`` (binary version) and
``npy`` (your own arrays), all through :func:`load_dataset`.
"""

from convergent.data._dataset import Dataset
from convergent.data._idx import read_idx
from convergent.data._preprocess import (
    PREPROCESSING,
    describe_preprocessing,
    pixels,
    preprocessed,
)
from convergent.data._registry import available_datasets, load_dataset
from convergent.data._split import stratified_split
from convergent.data._tokens import TokenInputs, load_tokens

__all__ = [
    "PREPROCESSING",
    "Dataset",
    "TokenInputs",
    "available_datasets",
    "describe_preprocessing",
    "load_dataset",
    "load_tokens",
    "pixels",
    "preprocessed",
    "read_idx",
    "stratified_split",
]
