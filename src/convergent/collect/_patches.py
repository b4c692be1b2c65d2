"""What a unit responds to: the input patches behind its top activations.

For a top activation of unit ``c`` at spatial position ``(h, w)`` of a layer's output, the patch is
the part of the input that can influence that output: the support of the input gradient of
``output[c, h, w]``, computed on the very input that produced the activation (so it works for any
architecture, strides, padding, dilation or pooling, without knowing any of them). The patch is the
bounding box of that support; for a fully connected layer (no spatial map) it is the whole input.
Through ReLUs the gradient support is the *effective* receptive field of that input, which can be
smaller than the theoretical one; where it is empty (a unit at exactly zero) the whole input is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from convergent.collect._hooks import capture


def receptive_box(
    model: nn.Module, layer: str, image: torch.Tensor, unit: int, position: int
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (bottom/right exclusive) of the input that drives one output.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted layer name.
    image : Tensor, shape (C, H, W)
        The input that produced the activation.
    unit : int
        Channel (unit) index at ``layer``.
    position : int
        Flat spatial position in the layer's map (C order), or -1 / 0 for a layer without one.
    """
    x = image.detach().clone().unsqueeze(0).requires_grad_(True)
    with capture({"m": model}, [layer], detach=False) as store:
        model(x)
        out = store.outputs[("m", layer)]
        if out.ndim == 4:
            h, w = divmod(max(int(position), 0), out.shape[3])
            target = out[0, unit, h, w]
        else:
            target = out.reshape(out.shape[0], -1)[0, unit]
        (grad,) = torch.autograd.grad(target, x, allow_unused=True)
    height, width = image.shape[-2:]
    if grad is None:
        return 0, height, 0, width
    support = grad[0].abs().sum(0) > 0
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    if rows.numel() == 0:
        return 0, height, 0, width
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) normalised image -> (H, W) or (H, W, 3) in [0, 1] for display."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return scaled[0] if scaled.shape[0] == 1 else np.transpose(scaled[:3], (1, 2, 0))


def unit_patches(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    unit: int,
    index: np.ndarray,
    position: np.ndarray,
    *,
    size: int = 16,
) -> list[np.ndarray]:
    """Crops of the inputs behind one unit's top activations, resized to ``size`` x ``size``.

    ``index`` / ``position`` are the unit's row of the collected top-k (dataset index into
    ``images`` and flat position; entries with index -1 are skipped). Each crop is shown with a
    thin frame in the full image's scale (nearest-neighbour resize, no smoothing).
    """
    out = []
    model.eval()
    for i, p in zip(np.asarray(index).tolist(), np.asarray(position).tolist()):
        if i < 0 or i >= len(images):
            continue
        top, bottom, left, right = receptive_box(model, layer, images[i], unit, p)
        crop = _display(images[i][:, top:bottom, left:right].numpy())
        rows = np.linspace(0, crop.shape[0] - 1, size).round().astype(int)
        cols = np.linspace(0, crop.shape[1] - 1, size).round().astype(int)
        out.append(crop[np.ix_(rows, cols)] if crop.ndim == 2 else crop[rows][:, cols])
    return out


def tile(patches: Sequence[np.ndarray], columns: int = 3, gap: int = 1) -> np.ndarray:
    """Patches in a grid (row-major), separated by ``gap`` pixels of white; empty cells white."""
    if not patches:
        return np.ones((1, 1))
    size = patches[0].shape[0]
    rows = -(-len(patches) // columns)
    shape = (rows * (size + gap) - gap, columns * (size + gap) - gap) + patches[0].shape[2:]
    grid = np.ones(shape)
    for k, patch in enumerate(patches):
        r, c = divmod(k, columns)
        grid[
            r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size
        ] = patch
    return grid
