"""The interpolation figure as a PNG file (``convergent interpolate``): the report's own figure
(:func:`convergent.report._figures.interpolation`: Okabe-Ito colours per curve, markers per curve,
line style per split), so the file and the report show the same picture.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convergent.report._figures import interpolation


def _as_dict(curve: Any) -> Mapping[str, Any]:
    if isinstance(curve, Mapping):
        return curve
    if hasattr(curve, "to_dict"):
        return curve.to_dict()
    raise TypeError(
        "Each curve must be a BarrierResult or its to_dict() mapping. "
        f"Got {type(curve).__name__} instead."
    )


def plot_interpolation(
    curves: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str = "Linear interpolation between net A (alpha = 0) and net B (alpha = 1)",
    dpi: int = 120,
) -> Path:
    """Draw loss and accuracy against alpha for every curve and split; save a PNG at ``path``.

    Parameters
    ----------
    curves : mapping of str to BarrierResult or dict
        Label (e.g. ``"naive"``, ``"aligned (weight)"``) -> an interpolation result
        (:class:`~convergent.align.BarrierResult` or its ``to_dict()``: ``alphas`` and
        ``curves[split]["loss" | "accuracy"]``; ``barriers`` are shown in the legend if present).
    path : path
        Where to write the PNG (parent directories are created).

    Returns
    -------
    Path
        ``path``.
    """
    if not curves:
        raise ValueError("The 'curves' parameter of plot_interpolation holds no curve to draw.")
    fig = interpolation({label: _as_dict(curve) for label, curve in curves.items()}, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    return path
