"""What a unit responds to: the input patches behind its top activations, cut at collect time.

For a top activation of unit ``c`` at spatial position ``p`` of a layer's output, the patch is the
part of the input that can influence that output: the support of the input gradient of
``output[c, p]``, computed on the very input that produced the activation (so it works for any
architecture, strides, padding, dilation or pooling, without knowing any of them). The patch is the
bounding box of that support; for a layer without a map (a vector) it is the whole input. Through
ReLUs the gradient support is the *effective* receptive field of that input, which can be smaller
than the theoretical one; where it is empty (a unit at exactly zero) the whole input is used.

The statistics directory keeps, per unit and top-k entry, the box and the crop (resized to
``size`` x ``size``, uint8), so the report draws them from results alone. Boxes are computed in
batches: one backward pass gives the input gradients of many (input, unit, position) entries at
once, since in eval mode an output depends on its own input only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from convergent.collect._hooks import StopForward, capture

#: Side of the stored crops, in pixels.
PATCH_SIZE = 16


def _targets(out: torch.Tensor, unit: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """out[b, unit[b], position[b]] for a batch of layer outputs of any layout."""
    rows = torch.arange(out.shape[0])
    if out.ndim == 2:
        return out[rows, unit]
    flat = out.reshape(out.shape[0], out.shape[1], -1)
    return flat[rows, unit, position.clamp(min=0)]


def receptive_boxes(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    unit: np.ndarray,
    position: np.ndarray,
    *,
    channels_first: bool = True,
    batch_size: int = 256,
) -> np.ndarray:
    """``(top, bottom, left, right)`` (bottom/right exclusive) of the input behind each entry.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted layer name.
    images : Tensor, shape (n, C, H, W)
        Entry ``i``'s input.
    unit, position : (n,) int arrays
        Entry ``i``'s unit at ``layer`` and flat position in its map (C order; -1 or 0 for a layer
        without one). Token layers (B, T, C) are read as (B, C, T) when ``channels_first`` is false.

    Returns
    -------
    ndarray of int64, shape (n, 4)
    """
    n = len(images)
    height, width = images.shape[-2:]
    boxes = np.zeros((n, 4), dtype=np.int64)
    boxes[:, 1], boxes[:, 3] = height, width
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = images[start:stop].detach().clone().requires_grad_(True)
            with (
                torch.enable_grad(),
                capture({"m": model}, [layer], detach=False, stop=True) as store,
            ):
                try:
                    model(x)
                except StopForward:
                    pass  # the layer's output is all we need
                out = store.outputs[("m", layer)]
                if out.ndim == 3 and not channels_first:
                    out = out.transpose(1, 2)  # tokens (B, T, C) -> (B, C, T)
                target = _targets(
                    out,
                    torch.as_tensor(unit[start:stop], dtype=torch.long),
                    torch.as_tensor(position[start:stop], dtype=torch.long),
                )
                (grad,) = torch.autograd.grad(target.sum(), x, allow_unused=True)
            if grad is None:
                continue
            support = grad.abs().sum(1) > 0  # (b, H, W)
            rows, cols = support.any(2), support.any(1)
            for i in range(stop - start):
                r, c = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
                if r.numel():
                    boxes[start + i] = (int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1)
    finally:
        model.train(was_training)
    return boxes


def receptive_box(
    model: nn.Module, layer: str, image: torch.Tensor, unit: int, position: int
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (bottom/right exclusive) of the input that drives one output
    (``image``: the (C, H, W) input that produced it). See :func:`receptive_boxes`."""
    box = receptive_boxes(model, layer, image.unsqueeze(0), np.array([unit]), np.array([position]))
    return tuple(int(v) for v in box[0])  # type: ignore[return-value]


def _display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) normalised image -> (H, W) or (H, W, 3) in [0, 1] for display."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return scaled[0] if scaled.shape[0] == 1 else np.transpose(scaled[:3], (1, 2, 0))


def crop(image: np.ndarray, box: np.ndarray, size: int = PATCH_SIZE) -> np.ndarray:
    """The box of a (C, H, W) image, in the full image's display scale, resized (nearest
    neighbour) to ``size`` x ``size``: uint8 (size, size) or (size, size, 3)."""
    top, bottom, left, right = (int(v) for v in box)
    part = _display(np.asarray(image, dtype=np.float64))
    part = part[top:bottom, left:right]
    rows = np.linspace(0, part.shape[0] - 1, size).round().astype(int)
    cols = np.linspace(0, part.shape[1] - 1, size).round().astype(int)
    resized = part[np.ix_(rows, cols)] if part.ndim == 2 else part[rows][:, cols]
    return np.round(255 * resized).astype(np.uint8)


def topk_patches(
    models: Mapping[str, nn.Module],
    layer: str,
    images: torch.Tensor,
    index: np.ndarray,
    position: np.ndarray,
    unit_ranges: Mapping[str, tuple[int, int]],
    *,
    channels_first: bool = True,
    map_shape: tuple[int, ...] | None = None,
    size: int = PATCH_SIZE,
) -> dict[str, np.ndarray]:
    """Boxes and crops of every joint unit's top-k entries at ``layer``.

    Parameters
    ----------
    models : mapping of net to nn.Module
    images : Tensor, shape (N, C, H, W)
        The collected inputs (``index`` points into them).
    index, position : (units, k) int arrays
        A ``TopK``'s input indices (-1: empty slot) and positions over the joint units.
    unit_ranges : mapping of net to (start, stop)
        Which joint units belong to which net.
    map_shape : tuple of int, optional
        The layer's map per input; ``()`` (a vector layer) takes the whole input as every box
        without computing gradients.

    Returns
    -------
    dict
        ``box``: (units, k, 4) int64 (zeros for empty slots); ``image``: (units, k, size, size[,
        3]) uint8 crops (zeros for empty slots).
    """
    index, position = np.asarray(index), np.asarray(position)
    units, k = index.shape
    # a layer without a map (one value per input): every output depends on the whole input
    whole = map_shape is not None and len(map_shape) == 0
    colour = images.shape[1] >= 3
    boxes = np.zeros((units, k, 4), dtype=np.int64)
    crops = np.zeros((units, k, size, size, 3) if colour else (units, k, size, size), np.uint8)
    for net, (start, stop) in unit_ranges.items():
        rows, slots = np.nonzero(index[start:stop] >= 0)
        if rows.size == 0:
            continue
        idx = index[start:stop][rows, slots]
        if whole:
            found = np.tile([0, images.shape[-2], 0, images.shape[-1]], (len(idx), 1))
        else:
            found = receptive_boxes(
                models[net],
                layer,
                images[torch.as_tensor(idx)],
                rows,
                position[start:stop][rows, slots],
                channels_first=channels_first,
            )
        boxes[start + rows, slots] = found
        for r, s, i, box in zip(rows, slots, idx, found):
            crops[start + r, s] = crop(images[int(i)].numpy(), box, size)
    return {"box": boxes, "image": crops}


def token_windows(
    input_ids: torch.Tensor,
    index: np.ndarray,
    position: np.ndarray,
    *,
    width: int = 4,
    mask: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """For text: the tokens around every top-k entry of a token layer (the position's own token in
    the middle), -1 outside the input or on padding.

    Returns
    -------
    dict
        ``tokens``: (units, k, 2 * width + 1) int64 token ids.
    """
    ids = np.asarray(input_ids, dtype=np.int64).copy()
    if mask is not None:
        ids[~np.asarray(mask, dtype=bool)] = -1
    index, position = np.asarray(index), np.asarray(position)
    padded = np.pad(ids, ((0, 0), (width, width)), constant_values=-1)
    offsets = np.arange(2 * width + 1)
    rows = np.clip(index, 0, None)
    windows = padded[rows[..., None], position[..., None].clip(0) + offsets]
    windows[index < 0] = -1
    return {"tokens": windows.astype(np.int64)}
