"""Turn a layer's output into a (samples, units) matrix, as the paper defines samples."""

from __future__ import annotations

import torch
from torch import nn

SPATIAL_MODES = ("positions", "mean")


def to_samples(
    output: torch.Tensor, *, spatial: str = "positions", channels_first: bool | None = None
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Reshape one layer output to (samples, units) and return the per-input map shape.

    - (B, C, H, W) conv map (and (B, C, D, H, W)): with ``spatial="positions"`` every spatial
      position of every input is a sample (B*H*W samples of C units, the paper's definition);
      with ``spatial="mean"`` the map is averaged over space (B samples).
    - (B, T, C) token sequence: B*T samples of C units (or B samples, averaged over tokens); a
      (B, C, L) Conv1d map is read channels-first when ``channels_first`` is true.
    - (B, C): B samples.

    Returns
    -------
    samples : torch.Tensor, shape (n_samples, units)
        Rows ordered input-major, then position in C order (so row ``i * P + p`` is input ``i`` at
        flat position ``p``).
    map_shape : tuple of int
        The spatial/token shape of one input (``()`` for vector outputs or after averaging).
    """
    if spatial not in SPATIAL_MODES:
        raise ValueError(
            f"The 'spatial' parameter must be one of {SPATIAL_MODES}. Got {spatial!r} instead."
        )
    if output.ndim == 2:
        return output, ()
    if output.ndim == 3 and not channels_first:  # (B, T, C) tokens
        if spatial == "mean":
            return output.mean(dim=1), ()
        return output.reshape(-1, output.shape[-1]), (output.shape[1],)
    if output.ndim >= 3:  # (B, C, *spatial)
        b, c = output.shape[:2]
        space = tuple(output.shape[2:])
        flat = output.reshape(b, c, -1)
        if spatial == "mean":
            return flat.mean(dim=2), ()
        return flat.transpose(1, 2).reshape(-1, c), space
    raise ValueError(
        f"Cannot turn a layer output of shape {tuple(output.shape)} into (samples, units): expected "
        "(B, C), (B, T, C), (B, C, L), (B, C, H, W) or (B, C, D, H, W)."
    )


def is_channels_first(module: nn.Module) -> bool:
    """Whether a 3-D output of ``module`` is (B, C, L) (convolution-like) rather than (B, T, C)."""
    kinds = (
        nn.Conv1d,
        nn.ConvTranspose1d,
        nn.BatchNorm1d,
        nn.MaxPool1d,
        nn.AvgPool1d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveMaxPool1d,
        nn.InstanceNorm1d,
    )
    if isinstance(module, kinds):
        return True
    if isinstance(module, nn.Sequential) and len(module) > 0:
        convs = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
        return bool(convs) and isinstance(convs[-1], nn.Conv1d)
    return False
