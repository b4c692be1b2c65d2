"""The report's figures, drawn with matplotlib from results (never recomputing an analysis).

Colours: lines use the Okabe-Ito palette (distinguishable with every common colour-vision
deficiency; lines also differ by marker or style); correlation matrices use ColorBrewer's diverging
RdBu (white at 0, symmetric limits -1..1); magnitudes use viridis (perceptually uniform). Every
figure has a title, axis labels with units and, where lines are compared, a legend placed where it
covers no data. Unit axes have integer ticks. Figures are plain ``Figure`` objects on an Agg canvas
(no pyplot state), laid out with matplotlib's constrained layout, saved as PNG (SVG on request).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Okabe-Ito: orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple, black.
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"
FORMATS = ("png", "svg")
STYLE = {
    "figure.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "convergent",  # deterministic SVG ids
}


def _figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float],
    squeeze: bool = True,
    gridspec_kw: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """A Figure on an Agg canvas with constrained layout, and its axes (no pyplot state)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(STYLE)
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, gridspec_kw=dict(gridspec_kw or {}))


def _integer_ticks(*axes_and_which: tuple[Any, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax, which in axes_and_which:
        target = ax.xaxis if which == "x" else ax.yaxis
        target.set_major_locator(MaxNLocator(integer=True))


def save(fig: Any, path_stem: Path, formats: Sequence[str] = ("png",)) -> dict[str, Path]:
    """Write ``<stem>.<ext>`` for each format (PNG by default, SVG on request) with deterministic
    bytes (no date, no software stamp), so a report rebuilt from the same results is identical."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    engine = fig.get_layout_engine()
    if engine is not None and engine.__class__.__name__ == "ConstrainedLayoutEngine":
        # lay the figure out once and freeze it: savefig would otherwise run the layout in a
        # draw of its own and again in the real one, for every format (half of the drawing time)
        engine.execute(fig)
        fig.set_layout_engine(None)
    out = {}
    for ext in formats:
        if ext not in FORMATS:
            raise ValueError(f"Figure formats must be among {FORMATS}. Got {ext!r} instead.")
        path = path_stem.with_name(f"{path_stem.name}.{ext}")
        if ext == "svg":
            fig.savefig(path, metadata={"Date": None})
        else:
            fig.savefig(path, metadata={"Software": None}, pil_kwargs={"compress_level": 3})
        out[ext] = path
    return out


def _col(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)


def layer_trends(rows: Sequence[Mapping[str, Any]], sparse_keys: Sequence[tuple[str, str]]) -> Any:
    """Per-layer trends: matched correlations (mean +- spread over pairs) and prediction errors.

    ``sparse_keys``: (summary key, legend label) of the one-to-many columns to draw.
    """
    layers = [r["layer"] for r in rows]
    x = np.arange(len(layers))
    fig, (ax1, ax2) = _figure(1, 2, figsize=(10, 3.9))
    for key, label, color, marker in [
        ("semi", "semi-matching", PALETTE[0], "o"),
        ("bipartite", "bipartite matching", PALETTE[4], "s"),
        ("within", "within-net baseline", PALETTE[7], "^"),
    ]:
        std = _col(rows, f"{key}_std")
        ax1.errorbar(
            x,
            _col(rows, key),
            yerr=None if np.isnan(std).all() else np.nan_to_num(std),
            label=label,
            color=color,
            marker=marker,
            capsize=3,
        )
    ax1.set_title("One-to-one: mean matched correlation per layer")
    ax1.set_ylabel("mean correlation (Pearson r)")
    ax1.set_ylim(0, 1.05)
    styles = [(PALETTE[1], "o"), (PALETTE[2], "s"), (PALETTE[3], "P")]
    for (key, label), (color, marker) in zip(sparse_keys, styles):
        ax2.plot(x, _col(rows, key), label=label, color=color, marker=marker)
    ax2.plot(x, _col(rows, "one_to_one"), label="best single unit", color=PALETTE[5], marker="v")
    ax2.plot(x, _col(rows, "full_linear"), label="all units", color=PALETTE[6], marker="D")
    ax2.set_title("One-to-many: error predicting B's units from A's")
    ax2.set_ylabel("normalised error, 1 - R\u00b2")
    top = np.nanmax([1.0, *[np.nanmax(_col(rows, k)) for k, _ in sparse_keys if rows]])
    ax2.set_ylim(0, max(1.05, min(top * 1.05, 2.0)))
    for ax in (ax1, ax2):
        ax.set_xticks(x, layers, rotation=30, ha="right")
        ax.set_xlabel("layer (input \u2192 output)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
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
    fig, axes = _figure(2, 2, figsize=(9.5, 8.4))
    for ax, (mat, title, xlabel, ylabel) in zip(axes.flat, panels):
        im = ax.imshow(mat, cmap=DIVERGING, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel(f"unit of {xlabel}")
        ax.set_ylabel(f"unit of {ylabel}")
        _integer_ticks((ax, "x"), (ax, "y"))
    fig.colorbar(im, ax=axes, shrink=0.6, label="correlation (Pearson r)")
    fig.suptitle(f"{layer}: correlations between units ({names[0]} vs {names[1]})")
    return fig


def matched_curves(
    curves: Mapping[str, np.ndarray], layer: str, mi: Mapping[str, np.ndarray] | None = None
) -> Any:
    """Sorted matched-correlation curves (semi, bipartite, within baseline); MI matching aside."""
    fig, axes = _figure(1, 2 if mi else 1, figsize=(10 if mi else 6.2, 3.6), squeeze=False)
    ax = axes[0, 0]
    styles = [PALETTE[0], PALETTE[4], PALETTE[7], PALETTE[2]]
    for (label, values), color in zip(curves.items(), styles):
        ax.plot(np.arange(1, len(values) + 1), values, label=label, color=color, lw=1.8)
    ax.set_title(f"{layer}: each unit's best correlation, sorted")
    ax.set_xlabel("unit rank (best matched first)")
    ax.set_ylabel("correlation with partner (r)")
    low = min([0.0, *(float(np.min(v)) for v in curves.values() if len(v))])
    ax.set_ylim(low, 1.0)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    _integer_ticks((ax, "x"))
    if mi:
        ax = axes[0, 1]
        for (label, values), color in zip(mi.items(), styles):
            ax.plot(np.arange(1, len(values) + 1), values, label=label, color=color, lw=1.8)
        ax.set_title(f"{layer}: mutual-information matching, sorted")
        ax.set_xlabel("unit rank (best matched first)")
        ax.set_ylabel("mutual information (nats)")
        ax.legend(frameon=False, fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
        _integer_ticks((ax, "x"))
    return fig


def tile(patches: Sequence[np.ndarray], columns: int = 3, gap: int = 1) -> np.ndarray:
    """Patches in a grid (row-major), separated by ``gap`` pixels of white; empty cells white.
    Patches are uint8 (S, S) or (S, S, 3); the grid is float in [0, 1]."""
    if not len(patches):
        return np.ones((1, 1))
    size = patches[0].shape[0]
    rows = -(-len(patches) // columns)
    shape = (rows * (size + gap) - gap, columns * (size + gap) - gap) + patches[0].shape[2:]
    grid = np.ones(shape)
    for k, patch in enumerate(patches):
        r, c = divmod(k, columns)
        grid[
            r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size
        ] = np.asarray(patch, dtype=float) / 255.0
    return grid


def patch_grid(entries: Sequence[Mapping[str, Any]], names: tuple[str, str], layer: str) -> Any:
    """For each matched pair (best, median, worst): the top-k patches of A's unit and B's partner.

    ``entries`` items: ``label``, ``unit_a``, ``unit_b``, ``corr``, ``grid_a``, ``grid_b`` (images).
    """
    fig, axes = _figure(len(entries), 2, figsize=(5.2, 2.5 * len(entries)), squeeze=False)
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
    fig.suptitle(f"{layer}: top input patches of matched units")
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
    *,
    fit_label: str = "fit split",
    scored_label: str = "held out",
) -> Any:
    """Error against penalty (with the one-to-one and full-linear references) and non-zero counts."""
    fig, (ax1, ax2) = _figure(1, 2, figsize=(10.5, 3.8))
    ax1.plot(penalties, mean_error, marker="o", color=PALETTE[4], label=f"L1 fit ({fit_label})")
    if held_out is not None:
        ax1.plot(
            penalties, held_out, marker="s", color=PALETTE[0], label=f"L1 fit ({scored_label})"
        )
    if one_to_one is not None:
        ax1.axhline(one_to_one, color=PALETTE[5], ls="--", label="best single unit")
    if full is not None:
        ax1.axhline(full, color=PALETTE[6], ls=":", label="all units (least squares)")
    ax1.set_xscale("log")
    ax1.invert_xaxis()
    ax1.set_title(f"{layer}: sparse prediction of B from A")
    ax1.set_xlabel("L1 penalty \u03b1 (sklearn Lasso convention; sparser \u2190)")
    ax1.set_ylabel("mean normalised error, 1 - R\u00b2")
    values = [mean_error] + ([held_out] if held_out is not None else [])
    top = max(1.05, min(2.0, 1.05 * float(np.nanmax(np.concatenate(values)))))
    ax1.set_ylim(0, top)
    ax1.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax1.grid(alpha=0.3)
    # the non-zero counts at the penalty closest to ~4 predictors per unit
    i = int(np.argmin(np.abs(np.asarray(mean_nonzero) - 4)))
    counts = np.asarray(nonzero[i])
    ax2.hist(counts, bins=np.arange(counts.max(initial=0) + 2) - 0.5, color=PALETTE[2])
    ax2.set_title(f"non-zero predictors per B unit at \u03b1 = {penalties[i]:.3g}")
    ax2.set_xlabel("number of A units used")
    ax2.set_ylabel("number of B units")
    ax2.grid(alpha=0.3)
    _integer_ticks((ax2, "x"), (ax2, "y"))
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
    """|corr| of both nets' units together, ordered by spectral cluster, with cluster boundaries;
    a strip along the top and left marks each unit as A's or B's."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    index = np.r_[slice(*range_a), slice(*range_b)]
    joint = np.abs(corr[np.ix_(index, index)])[np.ix_(order, order)]
    ordered = np.asarray(labels)[order]
    is_b = (np.asarray(order) >= range_a[1] - range_a[0]).astype(float)
    fig, axes = _figure(
        2,
        2,
        figsize=(6.0, 5.4),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 24], "height_ratios": [1, 24]},
    )
    strip_top, corner, heat, strip_left = axes[0, 1], axes[0, 0], axes[1, 1], axes[1, 0]
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    corner.axis("off")
    two = ListedColormap([PALETTE[0], PALETTE[4]])
    strip_top.imshow(
        is_b[None, :], cmap=two, vmin=0, vmax=1, aspect="auto", interpolation="nearest"
    )
    strip_left.imshow(
        is_b[:, None], cmap=two, vmin=0, vmax=1, aspect="auto", interpolation="nearest"
    )
    for ax in (strip_top, strip_left):
        ax.set_xticks([])
        ax.set_yticks([])
    im = heat.imshow(joint, cmap=SEQUENTIAL, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    for e in np.flatnonzero(np.diff(ordered)) + 0.5:
        heat.axhline(e, color="white", lw=0.6)
        heat.axvline(e, color="white", lw=0.6)
    k = int(ordered.max()) + 1 if ordered.size else 0
    strip_top.set_title(f"{layer}: {k} spectral clusters of {names[0]} + {names[1]} units")
    heat.set_xlabel("unit (ordered by cluster; A's then B's within each)")
    heat.set_yticks([])
    strip_left.set_ylabel("unit (same order)")
    _integer_ticks((heat, "x"))
    fig.colorbar(im, ax=heat, shrink=0.8, label="|correlation|")
    fig.legend(
        handles=[
            Patch(color=PALETTE[0], label=f"unit of {names[0]}"),
            Patch(color=PALETTE[4], label=f"unit of {names[1]}"),
        ],
        loc="outside lower center",
        ncol=2,
        frameon=False,
        fontsize=8,
    )
    return fig


def mean_activations(means: Mapping[str, np.ndarray], layer: str) -> Any:
    """Sorted per-unit mean activations of every net."""
    fig, ax = _figure(figsize=(6.2, 3.6))
    for (net, values), color in zip(means.items(), PALETTE * 4):
        v = np.sort(np.asarray(values))[::-1]
        ax.plot(np.arange(1, len(v) + 1), v, label=net, color=color, lw=1.5)
    ax.set_title(f"{layer}: per-unit mean activation, sorted")
    ax.set_xlabel("unit rank (largest mean first)")
    ax.set_ylabel("mean activation (layer output units)")
    ax.legend(frameon=False, fontsize=8, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)
    _integer_ticks((ax, "x"))
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
    layers = [r["layer"] for r in rows]
    x = np.arange(len(layers))
    fig, (ax1, ax2) = _figure(1, 2, figsize=(10.5, 3.9))
    markers = "os^vDPX"
    for (key, label), color, marker in zip(SIMILARITY_LINES, PALETTE[:3] + PALETTE[4:], markers):
        values = _col(rows, key)
        if np.isfinite(values).any():
            ax1.plot(x, values, label=label, color=color, marker=marker)
    ax1.set_title("Whole-layer similarity per layer")
    ax1.set_ylabel("similarity (1 = identical)")
    ax1.set_ylim(0, 1.05)
    for key, label, color, marker in [
        ("procrustes", "Procrustes, any rotation", PALETTE[4], "o"),
        ("procrustes_perm", "Procrustes, unit permutation", PALETTE[5], "s"),
    ]:
        ax2.plot(x, _col(rows, key), label=label, color=color, marker=marker)
    ax2.set_title("Shape distance: rotation vs unit matching")
    ax2.set_ylabel("Procrustes distance (0 = same shape)")
    ax2.set_ylim(bottom=0)
    for ax in (ax1, ax2):
        ax.set_xticks(x, layers, rotation=30, ha="right")
        ax.set_xlabel("layer (input \u2192 output)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def layer_cka_heatmap(layer_by_layer: Mapping[str, Any]) -> Any:
    """Layer x layer CKA between two nets (``analyze``'s ``layer_by_layer``): linear, and debiased
    when present, as viridis heatmaps with the value in each cell."""
    net_a, net_b = layer_by_layer["nets"]
    panels = [
        (key, title)
        for key, title in (("cka", "linear CKA"), ("debiased_cka", "debiased CKA"))
        if key in layer_by_layer
    ]
    n = len(layer_by_layer["cka"]["rows"])
    size = max(3.8, 0.5 * n + 1.6)
    fig, axes = _figure(1, len(panels), figsize=(size * len(panels) + 1.0, size), squeeze=False)
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


SPLIT_STYLES = {"test": "-", "train": "--"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_COLOURS = (PALETTE[4], PALETTE[0], PALETTE[2], PALETTE[5], PALETTE[6], PALETTE[1], PALETTE[7])


def interpolation(curves: Mapping[str, Any], title: str) -> Any:
    """Loss and accuracy against alpha for every curve and split: Okabe-Ito colours per curve,
    markers per curve, line style per split (so it reads in grey scale too); the legend sits
    below the panels, where it covers no curve.

    ``curves``: label -> ``{"alphas", "curves": {split: {"loss", "accuracy"}}, "barriers"}``.
    """
    if not curves:
        raise ValueError(
            "The 'curves' parameter of the interpolation figure holds no curve to draw."
        )
    fig, (ax_loss, ax_acc) = _figure(1, 2, figsize=(11, 4.8))
    for i, (label, data) in enumerate(curves.items()):
        alphas = np.asarray(data["alphas"], dtype=float)
        colour, marker = LINE_COLOURS[i % len(LINE_COLOURS)], MARKERS[i % len(MARKERS)]
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
    ax_loss.set(xlabel="alpha (weights = (1 - alpha) A + alpha B)", ylabel="cross-entropy loss")
    ax_loss.set_title("Loss")
    ax_acc.set(xlabel="alpha (weights = (1 - alpha) A + alpha B)", ylabel="accuracy (%)")
    ax_acc.set_title("Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.legend(
            fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False
        )
    fig.suptitle(title)
    return fig


def comparison_bands(
    layers: Sequence[str], values: Mapping[str, Sequence[Any]], labels: Mapping[str, str], pair: str
) -> Any:
    """Per layer, the pair's value of each metric over the reference pairs' range (a band from
    their minimum to maximum, their mean as a dashed line): one panel per metric."""
    keys = list(values)
    fig, axes = _figure(1, len(keys), figsize=(4.2 * len(keys) + 0.6, 3.8), squeeze=False)
    x = np.arange(len(layers))
    for ax, key in zip(axes.flat, keys):
        rows = values[key]
        low = np.array([np.nan if r.reference_min is None else r.reference_min for r in rows])
        high = np.array([np.nan if r.reference_max is None else r.reference_max for r in rows])
        mean = np.array([np.nan if r.reference_mean is None else r.reference_mean for r in rows])
        own = np.array([np.nan if r.value is None else r.value for r in rows])
        ax.fill_between(x, low, high, color=PALETTE[1], alpha=0.35, label="reference pairs (range)")
        ax.plot(x, mean, color=PALETTE[4], ls="--", label="reference mean")
        ax.plot(x, own, color=PALETTE[5], marker="o", label=pair)
        ax.set_title(labels[key])
        ax.set_xticks(x, layers, rotation=30, ha="right")
        ax.set_xlabel("layer (input \u2192 output)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    return fig


_BLOCK = re.compile(r"^(?P<prefix>.*?)(?P<index>\d+)(?P<suffix>(\..*)?)$")


def block_kinds(layers: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """Layers grouped by kind over depth: ``block3.mlp.act`` is kind ``block*.mlp.act`` at depth 3.
    Only kinds present at two depths or more are kept."""
    kinds: dict[str, list[tuple[int, str]]] = {}
    for name in layers:
        m = _BLOCK.match(name)
        if m:
            kind = f"{m['prefix']}*{m['suffix'] or ''}"
            kinds.setdefault(kind, []).append((int(m["index"]), name))
    return {k: sorted(v) for k, v in kinds.items() if len(v) >= 2}


def block_trends(
    rows: Sequence[Mapping[str, Any]], kinds: Mapping[str, Sequence[tuple[int, str]]]
) -> Any:
    """Per kind of layer (e.g. a transformer's residual stream ``block*`` and FFN units
    ``block*.mlp.act``), matching and CKA over block depth: a unit basis shared across nets shows
    as bipartite matching close to CKA; a subspace shared in another basis as CKA far above it."""
    by_name = {r["layer"]: r for r in rows}
    fig, (ax1, ax2) = _figure(1, 2, figsize=(10.5, 3.8))
    styles = list(zip(PALETTE[:3] + PALETTE[4:], "os^vDPX"))
    for (kind, members), (color, marker) in zip(kinds.items(), styles * 3):
        depth = [d for d, _ in members]
        for ax, key in ((ax1, "bipartite"), (ax2, "cka")):
            values = [by_name.get(n, {}).get(key) for _, n in members]
            values = [np.nan if v is None else v for v in values]
            ax.plot(depth, values, color=color, marker=marker, label=kind)
    ax1.set_title("One-to-one matching over depth (mean bipartite r)")
    ax2.set_title("Whole-layer similarity over depth (linear CKA)")
    for ax in (ax1, ax2):
        ax.set_xlabel("block (depth)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        _integer_ticks((ax, "x"))
        ax.legend(fontsize=7, frameon=False, loc="lower left")
    return fig
