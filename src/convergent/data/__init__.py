"""Datasets by name -> normalised train/test tensors and loaders (digits, IDX, CIFAR-10 binary, npy)."""

from convergent.data._dataset import Dataset
from convergent.data._idx import read_idx
from convergent.data._registry import available_datasets, load_dataset

__all__ = ["Dataset", "available_datasets", "load_dataset", "read_idx"]
