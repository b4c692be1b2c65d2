"""Which inputs a net sees: the preprocessing applied to a dataset's pixels before the nets.

Nets trained by convergent expect the dataset's own normalisation (per channel, with statistics of
the training split). Checkpoints from elsewhere were trained on their own preprocessing; feeding
them convergent's would measure nets that are not at their best (and their accuracy shows it). A
preprocessing is named as:

- ``dataset`` (default): convergent's per-channel normalisation (:data:`NORMALISATION`);
- ``none``: pixels scaled to [0, 1], nothing else;
- ``package.module:function``: ``function(pixels)`` with ``pixels`` a float32 tensor
  (N, C, H, W) in [0, 1]; it returns the tensor the nets take.
"""

from __future__ import annotations

from typing import Any

import torch

from convergent._imports import import_object
from convergent.data._dataset import NORMALISATION, Dataset

PREPROCESSING = ("dataset", "none")


def pixels(ds: Dataset, split: str) -> torch.Tensor:
    """A split's images as pixels in [0, 1] (the dataset's normalisation undone), float32.

    The normalised images are stored in float32, so the round trip is exact to about 1e-7; the
    result is clipped to [0, 1] against that rounding."""
    images, _ = ds.split(split)
    mean = torch.tensor(ds.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float64).view(1, -1, 1, 1)
    return (images.double() * std + mean).clamp(0.0, 1.0).float()


def describe_preprocessing(spec: str | None) -> str:
    """One sentence saying what a preprocessing does (for manifests and reports)."""
    spec = spec or "dataset"
    if spec == "dataset":
        return f"the dataset's normalisation: {NORMALISATION}"
    if spec == "none":
        return "pixels scaled to [0, 1], nothing else"
    return f"{spec} applied to pixels in [0, 1] (float32, N x C x H x W)"


def preprocessed(ds: Dataset, split: str, spec: str | None = None) -> torch.Tensor:
    """The inputs the nets see for a split under a preprocessing (see the module docstring).

    Raises
    ------
    ValueError
        An unknown preprocessing name, or a function whose result is not a float tensor with one
        row per image.
    """
    spec = spec or "dataset"
    if spec == "dataset":
        return ds.split(split)[0]
    if spec == "none":
        return pixels(ds, split)
    if ":" not in spec:
        raise ValueError(
            f"The 'preprocessing' parameter must be one of {PREPROCESSING} or "
            f"'package.module:function'. Got {spec!r} instead."
        )
    function = import_object(spec, kind="preprocessing")
    if not callable(function):
        raise TypeError(
            f"The preprocessing {spec!r} names a {type(function).__name__}, not a function."
        )
    source = pixels(ds, split)
    out: Any = function(source)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or len(out) != len(source):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"The preprocessing {spec!r} must return a float tensor with one row per image "
            f"({len(source)}). Got {shape} instead."
        )
    return out.float().contiguous()
