"""The one table of summary columns: every reader of results (the terminal table, ``summary.csv``,
the report's tables) takes its columns, labels and conventions from here.

A column's value for a layer is the mean over pairs of nets (and the spread over pairs, where
there are several); its description says what it measures and its convention: which split it was
fitted and scored on, which units were left out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convergent.analysis import LayerAnalysis, PairAnalysis
from convergent.results._results import Results

Getter = Callable[[PairAnalysis], "float | None"]


@dataclass(frozen=True)
class Column:
    """One summary column.

    Attributes
    ----------
    key : str
        Its name in ``summary.csv`` and the summary rows.
    label : str
        Its short heading in tables.
    description : str
        What it measures and its convention (split, units left out).
    per_pair : callable, optional
        The value of one pair (the column is the mean over pairs, with their spread).
    per_layer : callable, optional
        The value of a whole layer (for columns that are not per pair).
    group : str
        Which table it belongs to: ``units`` (the paper's unit-level analyses, the headline),
        ``detail`` (medians, read-outs kept for comparison; in summary.csv and the report's
        detail table) or ``layer`` (whole-layer similarity).
    """

    key: str
    label: str
    description: str
    per_pair: Getter | None = None
    per_layer: Callable[[LayerAnalysis], Any] | None = None
    group: str = "units"

    def value(self, layer: LayerAnalysis) -> tuple[Any, float | None]:
        """(value, spread over pairs or None) of this column at ``layer``."""
        if self.per_layer is not None:
            return self.per_layer(layer), None
        values = [self.per_pair(p) for p in layer.pairs.values()]  # type: ignore[misc]
        values = [float(v) for v in values if v is not None and np.isfinite(v)]
        if not values:
            return None, None
        return float(np.mean(values)), (float(np.std(values)) if len(values) > 1 else None)


def _units(layer: LayerAnalysis) -> Any:
    widths = sorted(set(layer.units.values()))
    return widths[0] if len(widths) == 1 else "/".join(map(str, widths))


def _at_k(k: int, held_out: bool) -> Getter:
    def get(p: PairAnalysis) -> float | None:
        for entry in p.one_to_many.at_k:
            if entry.k == k:
                return entry.held_out_error if held_out else entry.error
        return None

    return get


def _refit(k: int, field: str) -> Getter:
    def get(p: PairAnalysis) -> float | None:
        for entry in p.one_to_many.refit:
            if entry.k == k:
                return getattr(entry, field)
        return None

    return get


def _reached(k: int) -> Getter:
    def get(p: PairAnalysis) -> float | None:
        for entry in p.one_to_many.refit:
            if entry.k == k and entry.scored:
                return entry.reached / entry.scored
        return None

    return get


def _balance(p: PairAnalysis) -> float | None:
    return p.many_to_many[-1].balance if p.many_to_many else None


def fit_convention(results: Results) -> dict[str, Any]:
    """Where one-to-many prediction was fitted and scored (from the results' run info)."""
    fit = results.run.get("fit") or {}
    return {
        "fitted_on": fit.get("fitted_on", results.run.get("split")),
        "scored_on": fit.get("scored_on", results.run.get("split")),
        "held_out": bool(fit.get("held_out")),
    }


def summary_columns(results: Results) -> list[Column]:
    """The summary columns of these results (thresholds and k from their settings)."""
    settings = results.settings.get("analysis", results.settings)
    thresholds = settings.get("thresholds", [0.5, 0.9])
    ks = settings.get("sparse_k", [1, 2, 4])
    fit = fit_convention(results)
    held = fit["held_out"]
    where = (
        f"fitted on the {fit['fitted_on']} split, scored on the {fit['scored_on']} split"
        if held
        else f"fitted and scored on the {fit['fitted_on']} split (in-sample)"
    )
    live = "over live units (dead units left out; see 'dead')"
    cols = [
        Column(
            "layer",
            "layer",
            "the layer (dotted module path), in forward order",
            per_layer=lambda x: x.name,
        ),
        Column("units", "units", "units per net", per_layer=_units),
        Column(
            "dead",
            "dead",
            "dead units (constant on these inputs) over all nets; left out of matchings, shares "
            "and means",
            per_layer=lambda x: int(sum(x.dead_units.values())),
        ),
        Column(
            "semi",
            "semi",
            f"mean correlation of each unit of A with its best unit of B (semi-matching), {live}",
            per_pair=lambda p: p.one_to_one.semi,
        ),
        Column(
            "bipartite",
            "bipartite",
            f"mean correlation of matched units under a one-to-one assignment, {live}",
            per_pair=lambda p: p.one_to_one.bipartite,
        ),
        Column(
            "bipartite_all",
            "bip. all",
            "the same over every unit, dead ones counted with correlation 0 (the paper's way)",
            per_pair=lambda p: p.one_to_one.bipartite_all_units,
        ),
        Column(
            "bipartite_rotated",
            "rot.",
            "the bipartite match against randomly rotated copies of B's units (same subspace, basis "
            "scrambled; 3 Haar rotations): the level a shared subspace alone gives. Bipartite above "
            "it means the nets share their units' basis, not only the subspace",
            per_pair=lambda p: p.one_to_one.bipartite_rotated,
        ),
        Column(
            "within",
            "within",
            f"each unit's best correlation with another unit of its own net (baseline), {live}",
            per_pair=lambda p: (p.one_to_one.within_a + p.one_to_one.within_b) / 2,
        ),
    ]
    for t in thresholds:
        label = f"{float(t):g}"
        cols.append(
            Column(
                f"above_{label}",
                f">{label}",
                f"share of live units of A whose bipartite partner correlates at least {label}",
                per_pair=lambda p, key=label: p.one_to_one.above.get(key),
            )
        )
    fraction = settings.get("min_variance_fraction", 1e-2)
    scored = (
        f"over the scored targets (live, fit variance at least {fraction:g} of the median live "
        "target's; see 'scored'); predictors: A's units live with fit variance at least "
        f"{fraction:g} of the median live unit's (see 'sources')"
    )
    for k in settings.get("refit_k", [1, 2, 3, 4]):
        cols.append(
            Column(
                f"refit_{k}",
                f"\u2264{k}",
                f"mean error 1-R^2 predicting a unit of B by least squares on the Lasso support "
                f"with at most {k} units of A (relaxed Lasso), {where}, {scored}; the share of "
                f"targets that reached {k} units is refit_{k}_reached",
                per_pair=_refit(int(k), "held_out_mean" if held else "mean"),
            )
        )
        cols.append(
            Column(
                f"refit_{k}_median",
                f"\u2264{k} med",
                "the same, median over the scored targets",
                per_pair=_refit(int(k), "held_out_median" if held else "median"),
                group="detail",
            )
        )
        cols.append(
            Column(
                f"refit_{k}_reached",
                f"\u2264{k} reached",
                f"share of scored targets whose Lasso support reached {k} units (the rest use fewer)",
                per_pair=_reached(int(k)),
                group="detail",
            )
        )
    cols += [
        Column(
            "one_to_one",
            "1-to-1",
            f"mean error 1-R^2 predicting a unit of B from its single best-correlated unit of A, "
            f"{where}, {scored}",
            per_pair=lambda p: (
                p.one_to_many.held_out_one_to_one if held else p.one_to_many.one_to_one
            ),
        ),
        Column(
            "one_to_one_median",
            "1-to-1 med",
            "the same, median over the scored targets",
            per_pair=lambda p: (
                p.one_to_many.held_out_one_to_one_median
                if held
                else p.one_to_many.one_to_one_median
            ),
            group="detail",
        ),
        Column(
            "full_linear",
            "full",
            f"mean error 1-R^2 predicting a unit of B from all units of A (least squares), {where}, "
            f"{scored}",
            per_pair=lambda p: p.one_to_many.held_out_full if held else p.one_to_many.full,
        ),
        Column(
            "full_linear_median",
            "full med",
            "the same, median over the scored targets",
            per_pair=lambda p: (
                p.one_to_many.held_out_full_median if held else p.one_to_many.full_median
            ),
            group="detail",
        ),
        Column(
            "scored",
            "scored",
            "targets the one-to-many columns are over, per pair (the rest: dead or near-dead in the "
            "fit split)",
            per_pair=lambda p: p.one_to_many.scoring.get("scored"),
        ),
        Column(
            "sources",
            "sources",
            "units of A used as predictors, per pair (the rest: dead or near-dead in the fit split; "
            "standardised by a tiny fit deviation they would blow held-out predictions up)",
            per_pair=lambda p: p.one_to_many.scoring.get("sources_used"),
            group="detail",
        ),
    ]
    for k in ks:
        cols.append(
            Column(
                f"sparse_{k}",
                f"Lasso~{k}",
                f"error 1-R^2 of the (shrunk) Lasso fit at the penalty whose mean number of "
                f"predictors is closest to {k}, {where}, {scored}: biased upwards by the L1 "
                f"shrinkage; the refit columns are the headline",
                per_pair=_at_k(int(k), held),
                group="detail",
            )
        )
    cols += [
        Column(
            "cluster_balance",
            "balance",
            "how evenly spectral clusters (the largest cluster count) mix the two nets' units: 1 = "
            "every cluster half A, half B",
            per_pair=_balance,
        ),
        Column(
            "mean_act_ks",
            "KS",
            "Kolmogorov-Smirnov distance between the nets' distributions of per-unit mean "
            "activations (0 = identical)",
            per_layer=lambda x: x.means.get("between_ks_mean"),
        ),
        Column(
            "cka",
            "CKA",
            "linear CKA of the whole layer (invariant to rotations of the units)",
            per_pair=lambda p: p.similarity.get("cka"),
        ),
    ]
    for key, label, text in (
        (
            "debiased_cka",
            "debiased CKA",
            "debiased CKA (unbiased HSIC; undefined without kernel sums)",
        ),
        ("cca", "CCA", "mean canonical correlation"),
        ("svcca", "SVCCA", "mean CCA of the top singular directions (99% of the variance)"),
        ("pwcca", "PWCCA", "projection-weighted CCA (weights from A)"),
        ("procrustes", "Procrustes", "Procrustes distance under any rotation (0 = same shape)"),
        (
            "procrustes_perm",
            "Procrustes (perm)",
            "Procrustes distance under a unit permutation only",
        ),
        (
            "basis_alignment_ratio",
            "basis alignment",
            "permutation over rotation overlap: 1 = the units themselves align",
        ),
    ):
        getter = (
            (lambda x: _basis_ratio(x))
            if key == "basis_alignment_ratio"
            else (lambda p, key=key: p.similarity.get(key))
        )
        if key == "basis_alignment_ratio":
            cols.append(Column(key, label, text, per_layer=getter, group="layer"))
        else:
            cols.append(Column(key, label, text, per_pair=getter, group="layer"))
    return cols


def _basis_ratio(layer: LayerAnalysis) -> float | None:
    return layer.similarity.get("summary", {}).get("basis_alignment_ratio")


def summary_rows(results: Results, columns: Sequence[Column] | None = None) -> list[dict[str, Any]]:
    """One row per layer: every column's value, and ``<key>_std`` (spread over pairs) where there
    are several pairs. Missing values are None."""
    columns = list(columns or summary_columns(results))
    rows = []
    for layer in results.layers.values():
        row: dict[str, Any] = {}
        for col in columns:
            value, spread = col.value(layer)
            row[col.key] = value
            if col.per_pair is not None:
                row[f"{col.key}_std"] = spread
        rows.append(row)
    return rows


def summary_csv(results: Results) -> bytes:
    """``summary.csv``: one row per layer, every column (and spreads); empty cells for None."""
    rows = summary_rows(results)
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue().encode()


def column_legend(columns: Sequence[Column]) -> str:
    """``label: description`` lines for every column but layer."""
    return "\n".join(f"  {c.label}: {c.description}" for c in columns if c.key != "layer")
