"""The interpolation figure: loss and accuracy along the straight path between two nets, one line per
curve (naive, aligned, aligned + repair, ...) and split. Reused by the HTML report.

Colours are the Okabe-Ito palette (distinguishable with every common colour-vision deficiency);
curves also differ by marker and splits by line style, so the figure reads in grey scale too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion, reddish
#: purple, sky blue, yellow, black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SPLIT_STYLES = {"test": "-", "train": "--"}


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("The 'curves' parameter of plot_interpolation holds no curve to draw.")
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (label, curve) in enumerate(curves.items()):
        data = _as_dict(curve)
        alphas = np.asarray(data["alphas"], dtype=float)
        colour, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
        for split, values in data["curves"].items():
            style = SPLIT_STYLES.get(split, ":")
            barriers = data.get("barriers", {}).get(split, {})
            for ax, key, scale in ((ax_loss, "loss", 1.0), (ax_acc, "accuracy", 100.0)):
                text = f"{label}, {split}"
                if key in barriers:
                    unit = "" if key == "loss" else " pts"
                    text += f" (barrier {barriers[key] * scale:.2f}{unit})"
                ax.plot(
                    alphas,
                    np.asarray(values[key], dtype=float) * scale,
                    color=colour,
                    linestyle=style,
                    marker=marker,
                    markersize=4,
                    markevery=max(1, len(alphas) // 12),
                    label=text,
                )
    ax_loss.set(
        xlabel="alpha (weights = (1 - alpha) A + alpha B)",
        ylabel="cross-entropy loss",
        title="Loss",
    )
    ax_acc.set(
        xlabel="alpha (weights = (1 - alpha) A + alpha B)", ylabel="accuracy (%)", title="Accuracy"
    )
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
