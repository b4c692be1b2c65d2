"""The report's figures, drawn with matplotlib from results (never recomputing an analysis).

Colours: lines use the Okabe-Ito palette (distinguishable with every common colour-vision
deficiency); correlation matrices use ColorBrewer's diverging RdBu (colour-blind safe, white at 0,
symmetric limits -1..1); magnitudes use viridis / cividis (perceptually uniform).
Every figure has a title, axis labels with units and, where lines are compared, a legend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Okabe-Ito: orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple, black.
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "svg.hashsalt": "convergent",  # deterministic SVG ids
        }
    )
    return plt


def save(fig: Any, path_stem: Path) -> dict[str, Path]:
    """Write ``<stem>.png`` and ``<stem>.svg``; close the figure. Returns both paths."""
    plt = _plt()
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for ext in ("png", "svg"):
        path = path_stem.with_suffix(f".{ext}")
        kwargs = {"metadata": {"Date": None}} if ext == "svg" else {"metadata": {"Software": None}}
        fig.savefig(path, bbox_inches="tight", dpi=110, **kwargs)
        out[ext] = path
    plt.close(fig)
    return out


def layer_trends(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Per-layer trends: matched correlations (mean +- spread over pairs) and prediction errors."""
    plt = _plt()
    layers = [r["layer"] for r in rows]
    x = np.arange(len(layers))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    for key, label, color, marker in [
        ("semi", "semi-matching", PALETTE[0], "o"),
        ("bipartite", "bipartite matching", PALETTE[4], "s"),
        ("within", "within-net baseline", PALETTE[7], "^"),
    ]:
        std = col(f"{key}_std") if f"{key}_std" in rows[0] else None
        ax1.errorbar(x, col(key), yerr=std, label=label, color=color, marker=marker, capsize=3)
    ax1.set_title("One-to-one: mean matched correlation per layer")
    ax1.set_ylabel("mean correlation (Pearson r)")
    ax1.set_ylim(0, 1)
    for key, label, color, marker in [
        ("sparse_1", "L1, ~1 predictor", PALETTE[1], "o"),
        ("sparse_4", "L1, ~4 predictors", PALETTE[2], "s"),
        ("one_to_one", "best single unit", PALETTE[5], "v"),
        ("full_linear", "all units (least squares)", PALETTE[6], "D"),
    ]:
        ax2.plot(x, col(key), label=label, color=color, marker=marker)
    ax2.set_title("One-to-many: error predicting B's units from A's")
    ax2.set_ylabel("normalised error, 1 - R\u00b2")
    ax2.set_ylim(0, 1.05)
    for ax in (ax1, ax2):
        ax.set_xticks(x, layers, rotation=30)
        ax.set_xlabel("layer (input \u2192 output)")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def correlation_matrices(
    corr: np.ndarray,
    range_a: tuple[int, int],
    range_b: tuple[int, int],
    partner: np.ndarray,
    score: np.ndarray,
    names: tuple[str, str],
    layer: str,
) -> Any:
    """Within-net A and B, between A x B in the original order, and between with A's units sorted
    by how well they match and B's units put in the order of their partners (matches on the
    diagonal, best first)."""
    plt = _plt()
    a, b = slice(*range_a), slice(*range_b)
    between = corr[a, b]
    partner = np.asarray(partner)
    matched_rows = np.flatnonzero(partner >= 0)
    rows = np.r_[
        matched_rows[np.argsort(-np.asarray(score)[matched_rows], kind="stable")],
        np.flatnonzero(partner < 0),
    ].astype(int)
    used = partner[rows][partner[rows] >= 0]
    cols = np.r_[used, np.setdiff1d(np.arange(between.shape[1]), used)].astype(int)
    panels = [
        (corr[a, a], f"within {names[0]}", names[0], names[0]),
        (corr[b, b], f"within {names[1]}", names[1], names[1]),
        (between, "between, original order", names[1], names[0]),
        (
            between[np.ix_(rows, cols)],
            "between, matched pairs on the diagonal",
            f"{names[1]} (partner order)",
            f"{names[0]} (best matched first)",
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 8.6))
    for ax, (mat, title, xlabel, ylabel) in zip(axes.flat, panels):
        im = ax.imshow(mat, cmap=DIVERGING, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel(f"unit of {xlabel}")
        ax.set_ylabel(f"unit of {ylabel}")
    fig.colorbar(im, ax=axes, shrink=0.6, label="correlation (Pearson r)")
    fig.suptitle(f"{layer}: correlations between units ({names[0]} vs {names[1]})")
    return fig


def matched_curves(
    curves: Mapping[str, np.ndarray], layer: str, mi: Mapping[str, np.ndarray] | None = None
) -> Any:
    """Sorted matched-correlation curves (semi, bipartite, within baseline); MI matching aside."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if mi else 1, figsize=(10 if mi else 5.5, 3.6), squeeze=False)
    ax = axes[0, 0]
    styles = [PALETTE[0], PALETTE[4], PALETTE[7], PALETTE[2]]
    for (label, values), color in zip(curves.items(), styles):
        ax.plot(np.arange(1, len(values) + 1), values, label=label, color=color, lw=1.8)
    ax.set_title(f"{layer}: each unit's best correlation, sorted")
    ax.set_xlabel("unit rank (best matched first)")
    ax.set_ylabel("correlation with partner (r)")
    ax.set_ylim(min(0.0, *(float(np.min(v)) for v in curves.values() if len(v))), 1.0)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    if mi:
        ax = axes[0, 1]
        for (label, values), color in zip(mi.items(), styles):
            ax.plot(np.arange(1, len(values) + 1), values, label=label, color=color, lw=1.8)
        ax.set_title(f"{layer}: mutual-information matching, sorted")
        ax.set_xlabel("unit rank (best matched first)")
        ax.set_ylabel("mutual information (nats)")
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def patch_grid(entries: Sequence[Mapping[str, Any]], names: tuple[str, str], layer: str) -> Any:
    """For each matched pair (best, median, worst): the top-9 patches of A's unit and B's partner.

    ``entries`` items: ``label``, ``unit_a``, ``unit_b``, ``corr``, ``grid_a``, ``grid_b`` (images).
    """
    plt = _plt()
    fig, axes = plt.subplots(len(entries), 2, figsize=(5.2, 2.5 * len(entries)), squeeze=False)
    for row, e in zip(axes, entries):
        for ax, grid, net, unit in [
            (row[0], e["grid_a"], names[0], e["unit_a"]),
            (row[1], e["grid_b"], names[1], e["unit_b"]),
        ]:
            ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{net} unit {unit}", fontsize=8)
        row[0].set_ylabel(f"{e['label']}\nr = {e['corr']:.2f}", fontsize=9)
    fig.suptitle(f"{layer}: top-9 input patches of matched units", y=1.0)
    fig.tight_layout()
    return fig


def sparse_path(
    penalties: np.ndarray,
    mean_error: np.ndarray,
    held_out: np.ndarray | None,
    one_to_one: float | None,
    full: float | None,
    nonzero: np.ndarray,
    mean_nonzero: np.ndarray,
    layer: str,
) -> Any:
    """Error against penalty (with the one-to-one and full-linear references) and non-zero counts."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(penalties, mean_error, marker="o", color=PALETTE[4], label="L1 fit (training)")
    if held_out is not None:
        ax1.plot(penalties, held_out, marker="s", color=PALETTE[0], label="L1 fit (held out)")
    if one_to_one is not None:
        ax1.axhline(one_to_one, color=PALETTE[5], ls="--", label="best single unit")
    if full is not None:
        ax1.axhline(full, color=PALETTE[6], ls=":", label="all units (least squares)")
    ax1.set_xscale("log")
    ax1.invert_xaxis()
    ax1.set_title(f"{layer}: sparse prediction of B from A")
    ax1.set_xlabel("L1 penalty \u03b1 (sklearn Lasso convention; sparser \u2190)")
    ax1.set_ylabel("mean normalised error, 1 - R\u00b2")
    ax1.set_ylim(0, 1.05)
    ax1.legend(frameon=False, fontsize=8)
    ax1.grid(alpha=0.3)
    # the non-zero counts at the penalty closest to ~4 predictors per unit
    i = int(np.argmin(np.abs(np.asarray(mean_nonzero) - 4)))
    counts = np.asarray(nonzero[i])
    ax2.hist(counts, bins=np.arange(counts.max(initial=0) + 2) - 0.5, color=PALETTE[2])
    ax2.set_title(f"non-zero predictors per B unit at \u03b1 = {penalties[i]:.3g}")
    ax2.set_xlabel("number of A units used")
    ax2.set_ylabel("number of B units")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def cluster_blocks(
    corr: np.ndarray,
    range_a: tuple[int, int],
    range_b: tuple[int, int],
    labels: np.ndarray,
    order: np.ndarray,
    names: tuple[str, str],
    layer: str,
) -> Any:
    """|corr| of both nets' units together, ordered by spectral cluster, with cluster boundaries."""
    plt = _plt()
    index = np.r_[slice(*range_a), slice(*range_b)]
    joint = np.abs(corr[np.ix_(index, index)])[np.ix_(order, order)]
    ordered = np.asarray(labels)[order]
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(joint, cmap=SEQUENTIAL, vmin=0, vmax=1, interpolation="nearest")
    edges = np.flatnonzero(np.diff(ordered)) + 0.5
    for e in edges:
        ax.axhline(e, color="white", lw=0.6)
        ax.axvline(e, color="white", lw=0.6)
    k = int(ordered.max()) + 1 if ordered.size else 0
    ax.set_title(f"{layer}: {k} spectral clusters of {names[0]} + {names[1]} units")
    ax.set_xlabel("unit (ordered by cluster; A's then B's within each)")
    ax.set_ylabel("unit (same order)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="|correlation|")
    return fig


def mean_activations(means: Mapping[str, np.ndarray], layer: str) -> Any:
    """Sorted per-unit mean activations of every net."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (net, values), color in zip(means.items(), PALETTE * 4):
        v = np.sort(np.asarray(values))[::-1]
        ax.plot(np.arange(1, len(v) + 1), v, label=net, color=color, lw=1.5)
    ax.set_title(f"{layer}: per-unit mean activation, sorted")
    ax.set_xlabel("unit rank (largest mean first)")
    ax.set_ylabel("mean activation (layer output units)")
    ax.legend(frameon=False, fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


#: (summary-row key, legend label) of the whole-layer similarities drawn per layer (0..1)
SIMILARITY_LINES = [
    ("bipartite", "bipartite matching (mean r)"),
    ("cka", "linear CKA"),
    ("debiased_cka", "debiased CKA"),
    ("cca", "mean CCA"),
    ("svcca", "SVCCA"),
    ("pwcca", "PWCCA"),
    ("basis_alignment_ratio", "basis alignment (perm / rotation)"),
]


def similarity_trends(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Whole-layer similarity per layer (means over pairs): rotation-invariant similarities next to
    the unit matching (left), Procrustes distance with rotations vs unit permutations (right)."""
    plt = _plt()
    layers = [r["layer"] for r in rows]
    x = np.arange(len(layers))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    markers = "os^vDPX"
    for (key, label), color, marker in zip(SIMILARITY_LINES, PALETTE[:3] + PALETTE[4:], markers):
        values = col(key)
        if np.isfinite(values).any():
            ax1.plot(x, values, label=label, color=color, marker=marker)
    ax1.set_title("Whole-layer similarity per layer")
    ax1.set_ylabel("similarity (1 = identical)")
    ax1.set_ylim(0, 1.05)
    for key, label, color, marker in [
        ("procrustes", "Procrustes, any rotation", PALETTE[4], "o"),
        ("procrustes_perm", "Procrustes, unit permutation", PALETTE[5], "s"),
    ]:
        ax2.plot(x, col(key), label=label, color=color, marker=marker)
    ax2.set_title("Shape distance: rotation vs unit matching")
    ax2.set_ylabel("Procrustes distance (0 = same shape)")
    ax2.set_ylim(bottom=0)
    for ax in (ax1, ax2):
        ax.set_xticks(x, layers, rotation=30)
        ax.set_xlabel("layer (input \u2192 output)")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7, frameon=False, ncol=2, loc="lower left")
    ax2.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def layer_cka_heatmap(layer_by_layer: Mapping[str, Any]) -> Any:
    """Layer x layer CKA between two nets (``analyze``'s ``layer_by_layer``): linear, and debiased
    when present, as viridis heatmaps with the value in each cell."""
    plt = _plt()
    net_a, net_b = layer_by_layer["nets"]
    panels = [
        (key, title)
        for key, title in (("cka", "linear CKA"), ("debiased_cka", "debiased CKA"))
        if key in layer_by_layer
    ]
    n = len(layer_by_layer["cka"]["rows"])
    size = max(3.8, 0.5 * n + 1.6)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(size * len(panels) + 1.0, size), squeeze=False
    )
    for ax, (key, title) in zip(axes.flat, panels):
        m = layer_by_layer[key]
        values = np.asarray(m["values"], dtype=float)
        im = ax.imshow(values, cmap=SEQUENTIAL, vmin=min(0.0, float(np.nanmin(values))), vmax=1.0)
        ax.set_xticks(np.arange(len(m["cols"])), m["cols"], rotation=45, ha="right")
        ax.set_yticks(np.arange(len(m["rows"])), m["rows"])
        ax.set_xlabel(f"layer of {net_b}")
        ax.set_ylabel(f"layer of {net_a}")
        ax.set_title(title)
        if n <= 12:
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    v = values[i, j]
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if v > 0.6 else "white",
                    )
        fig.colorbar(im, ax=ax, shrink=0.8, label="CKA")
    fig.suptitle(
        f"Layer x layer CKA, {net_a} vs {net_b} ({layer_by_layer.get('samples')} inputs, "
        "spatially averaged)"
    )
    return fig
