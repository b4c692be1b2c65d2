"""`convergent report RESULTS_DIR`: one self-contained HTML file, the figures (PNG; SVG on request)
and the summary as CSV and JSON -- made from results alone.

The report reads what ``analyze`` wrote (:func:`convergent.results.load_results`) and, when there
is one, an ``interpolate`` output (:func:`convergent.results.load_interpolation`); nothing else:
no statistics, no zoo, no dataset, and nothing is re-analysed. The page is rendered from a Jinja2
template with autoescaping, so names from files (nets, layers) appear as text. Each section is
built by a function of the results (unit-tested on a small synthetic results object); captions are
computed from the data they describe.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from convergent._errors import ConvergentError
from convergent._io import atomic_write_bytes, write_json
from convergent._progress import bar
from convergent._version import __version__
from convergent.analysis import LayerAnalysis, PairAnalysis
from convergent.report import _figures as fig
from convergent.results import (
    COMPARE_FILE,
    INTERPOLATION_FILE,
    Comparison,
    Interpolation,
    Results,
    fit_convention,
    load_comparison,
    load_interpolation,
    load_results,
    merge_rows,
    summary_columns,
    summary_csv,
    summary_rows,
)

FORMATS = fig.FORMATS

TEXT = {
    "summary": (
        "One row per layer, averaged over every pair of nets (\u00b1 the spread over pairs). "
        "Every column is defined below, with the split it was measured on and the units it "
        "leaves out."
    ),
    "matrices": (
        "Correlations between units (red positive, blue negative, white 0), within each net and "
        "between the two; in the last panel B's units are reordered by the one-to-one matching, so "
        "matched pairs lie on the diagonal."
    ),
    "patches": (
        "The inputs that drive a unit most (its top activations, each cropped to the part of the "
        "input that can influence that activation: the input-gradient support), for the best, "
        "median and worst matched pair. Well matched units respond to the same patterns."
    ),
    "interpolation": (
        "What convergent learning means for merging models: the loss and accuracy of the weights "
        "(1 - \u03b1) A + \u03b1 B along the straight line between two nets. Averaged naively, "
        "units that do different jobs are mixed; after B's units are permuted to match A's (and, "
        "with repair, each unit's activation statistics are restored) the path can stay good. The "
        "barrier is the largest loss above (accuracy below) the straight line between the "
        "endpoints' values."
    ),
    "similarity": (
        "Each layer compared as a whole, averaged over pairs of nets, next to the mean bipartite "
        "match of single units. CKA and the CCA family (mean CCA, SVCCA, PWCCA) do not change when "
        "a layer's units are rotated or mixed, so they measure whether the nets span the same "
        "subspace. Procrustes is a distance (0 = same shape) under the best rotation; Procrustes "
        "(perm) allows only a one-to-one matching of units. Basis alignment (permutation over "
        "rotation overlap, 1 = the units themselves align) says how much of the similarity is "
        "unit-to-unit rather than subspace-level."
    ),
    "layer_by_layer": (
        "CKA between every layer of one net (rows) and every layer of the other (columns), each "
        "layer's map averaged over positions (one sample per input). Debiased CKA removes the "
        "bias that makes unrelated wide layers look similar on few inputs."
    ),
}

SIMILARITY_KEYS = (
    "bipartite",
    "cka",
    "debiased_cka",
    "cca",
    "svcca",
    "pwcca",
    "procrustes",
    "procrustes_perm",
    "basis_alignment_ratio",
)


# ------------------------------------------------------------------------------------------------
# small pieces


def _fmt(value: Any, std: Any = None, *, undefined: str = "\u2013") -> Any:
    """A table cell: 3 decimals (with a muted spread), plain text otherwise."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return undefined
    if isinstance(value, float):
        if std is not None and np.isfinite(std) and std > 0:
            return Markup('{} <span class="muted">\u00b1{}</span>').format(
                f"{value:.3f}", f"{std:.3f}"
            )
        return f"{value:.3f}"
    return str(value)


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]], table_id: str = "") -> dict:
    return {"id": table_id, "header": list(header), "rows": [list(r) for r in rows]}


class _Figures:
    """Draws figures into ``figures/`` and returns what the template embeds."""

    def __init__(self, directory: Path, formats: Sequence[str]) -> None:
        self.directory, self.formats = directory, ["png", *[f for f in formats if f != "png"]]

    def __call__(self, figure: Any, stem: str, alt: str, caption: str = "") -> dict[str, Any]:
        paths = fig.save(figure, self.directory / stem, self.formats)
        data = base64.b64encode(paths["png"].read_bytes()).decode()
        return {"data": data, "alt": alt, "caption": caption}


def _stem(name: str) -> str:
    return name.replace(".", "_").replace("/", "_")


# ------------------------------------------------------------------------------------------------
# sections (each a function of the results)


def run_section(results: Results, pair: str) -> dict[str, Any]:
    """The run: what was measured, the nets (architecture, source, seeds, accuracy) and the samples
    per layer."""
    run = results.run
    ds = run.get("dataset", {})
    pre = run.get("preprocessing", {})
    fit = fit_convention(results)
    facts = [
        ["dataset", f"{ds.get('name')} ({ds.get('source', '')})"],
        ["split measured", f"{run.get('split')} ({run.get('num_inputs')} inputs)"],
        ["preprocessing", pre.get("description", "the dataset's normalisation")],
        [
            "one-to-many prediction",
            f"fitted on the {fit['fitted_on']} split, scored on the {fit['scored_on']} split"
            + ("" if fit["held_out"] else " (in-sample: no held-out statistics)"),
        ],
        ["pair shown per layer", pair],
        ["convergent", __version__],
    ]
    scores = run.get("scores", {})
    nets = {n.get("name"): n for n in run.get("nets", []) if isinstance(n, dict)}
    rows = []
    for name in results.nets:
        info = nets.get(name, {})
        source = info.get("source", {})
        where = source.get("checkpoint") or source.get("path") or ""
        seeds = ", ".join(f"{k} {v}" for k, v in info.get("seeds", {}).items())
        trained = info.get("trained", {})
        measured = scores.get(name, {})
        rows.append(
            [
                name,
                info.get("arch", ""),
                f"{source.get('kind', '')}: {where}" if where else "",
                seeds,
                _fmt(trained.get("train_accuracy")),
                _fmt(trained.get("test_accuracy")),
                _fmt(measured.get("accuracy")),
            ]
        )
    nets_table = _table(
        [
            "net",
            "architecture",
            "source",
            "seeds",
            "train accuracy (training)",
            "test accuracy (training)",
            f"accuracy on the inputs measured here ({run.get('split')})",
        ],
        rows,
        "nets-table",
    )
    samples = []
    for layer in results.layers.values():
        shape = "\u00d7".join(str(v) for v in layer.map_shape) or "\u2013"
        dead = ", ".join(f"{k}: {v} of {layer.units[k]}" for k, v in layer.dead_units.items())
        samples.append([layer.name, str(layer.samples), shape, dead])
    return {
        "facts": _table(["", ""], facts),
        "nets": nets_table,
        "samples": _table(
            ["layer", "samples", "map per input", "dead units (left out) per net"], samples
        ),
        "samples_note": (
            "Samples per layer: every spatial position (or token) of every input is one sample of "
            "a layer's units (the paper's definition). Dead units (constant on these inputs) are "
            "left out of matchings, shares and means; the 'bip. all' column counts them."
        ),
    }


def summary_section(results: Results, draw: Any) -> dict[str, Any]:
    """The summary table (every unit-level column, with its convention) and the trends figure."""
    every = summary_columns(results)
    columns = [c for c in every if c.group == "units"]
    details = [every[0]] + [c for c in every if c.group == "detail"]
    rows = summary_rows(results, columns)
    table = [[_fmt(r[c.key], r.get(f"{c.key}_std")) for c in columns] for r in rows]
    detail_rows = summary_rows(results, details)
    detail = [[_fmt(r[c.key], r.get(f"{c.key}_std")) for c in details] for r in detail_rows]
    keys = [c.key for c in columns if c.key.startswith("refit_")]
    sparse = (
        [(c.key, c.label) for c in columns if c.key in (keys[0], keys[1], keys[-1])]
        if len(keys) >= 3
        else [(c.key, c.label) for c in columns if c.key in keys]
    )
    kinds = fig.block_kinds([r["layer"] for r in rows])
    blocks = None
    if len(kinds) >= 2 or any(len(v) >= 3 for v in kinds.values()):
        blocks = draw(
            fig.block_trends(summary_rows(results), kinds),
            "blocks",
            "matching and CKA per block over depth",
            _blocks_caption(summary_rows(results), kinds),
        )
    return {
        "blocks": blocks,
        "text": TEXT["summary"],
        "table": _table([c.label for c in columns], table, "summary-table"),
        "details": _table([c.label for c in details], detail, "details-table"),
        "legend": [
            {"label": c.label, "description": c.description} for c in (columns + details)[1:]
        ],
        "trends": draw(
            fig.layer_trends(rows, sparse),
            "trends",
            "per-layer trends",
            _trend_caption(rows),
        ),
    }


def _blocks_caption(rows: Sequence[Mapping[str, Any]], kinds: Mapping[str, Any]) -> str:
    by_name = {r["layer"]: r for r in rows}
    parts = []
    for kind, members in kinds.items():
        bip = [by_name[n].get("bipartite") for _, n in members]
        cka = [by_name[n].get("cka") for _, n in members]
        bip = [v for v in bip if v is not None]
        cka = [v for v in cka if v is not None]
        if bip and cka:
            parts.append(f"{kind}: bipartite {np.mean(bip):.2f}, CKA {np.mean(cka):.2f}")
    return (
        "Each kind of layer over depth (means over blocks: " + "; ".join(parts) + "). Where CKA "
        "stays high while unit matching is low, the nets share the subspace but not its basis "
        "(a transformer's residual stream has no privileged basis; its FFN units do)."
    )


def _trend_caption(rows: Sequence[Mapping[str, Any]]) -> str:
    values = [(r["layer"], r.get("bipartite")) for r in rows if r.get("bipartite") is not None]
    if not values:
        return "Unit matching per layer."
    best = max(values, key=lambda v: v[1])
    worst = min(values, key=lambda v: v[1])
    return (
        f"Left: one-to-one matching per layer; the bipartite match is highest at {best[0]} "
        f"(r = {best[1]:.2f}) and lowest at {worst[0]} (r = {worst[1]:.2f}). Right: how well units "
        "of A predict a unit of B, from one unit to all of them."
    )


def similarity_section(results: Results, draw: Any) -> dict[str, Any]:
    """Whole-layer similarity: the table next to the bipartite match, figures, layer x layer CKA."""
    columns = {c.key: c for c in summary_columns(results)}
    rows = summary_rows(results, [columns[k] for k in ("layer", *SIMILARITY_KEYS)])
    out: dict[str, Any] = {
        "text": TEXT["similarity"],
        "table": None,
        "notes": [],
        "trends": None,
        "heatmap": None,
        "missing": None,
    }
    if not any(r.get("cka") is not None for r in rows):
        out["missing"] = "No whole-layer similarity in these results."
        return out
    why = _debiased_reason(results)
    table = [
        [r["layer"]]
        + [
            _fmt(r.get(k), undefined=f"undefined ({why})" if k == "debiased_cka" else "\u2013")
            for k in SIMILARITY_KEYS
        ]
        for r in rows
    ]
    out["table"] = _table(
        ["layer"] + [columns[k].label for k in SIMILARITY_KEYS], table, "similarity-table"
    )
    out["notes"] = sorted(
        {n for layer in results.layers.values() for n in layer.similarity.get("notes", [])}
    )
    out["trends"] = draw(
        fig.similarity_trends(rows),
        "similarity",
        "whole-layer similarity per layer",
        _similarity_caption(rows),
    )
    if results.layer_by_layer:
        out["heatmap"] = draw(
            fig.layer_cka_heatmap(results.layer_by_layer),
            "layer_cka",
            "layer by layer CKA",
            TEXT["layer_by_layer"],
        )
    return out


def _debiased_reason(results: Results) -> str:
    if not results.run.get("collect_settings", {}).get("kernel_sums", False):
        return "the statistics were collected without kernel sums"
    return "fewer than 4 samples"


def _similarity_caption(rows: Sequence[Mapping[str, Any]]) -> str:
    pairs = [(r["layer"], r.get("cka"), r.get("bipartite")) for r in rows]
    pairs = [p for p in pairs if p[1] is not None and p[2] is not None]
    if not pairs:
        return ""
    above = [p[0] for p in pairs if p[1] > p[2]]
    return (
        f"CKA is above the mean bipartite match at {len(above)} of {len(pairs)} layers"
        + (f" ({', '.join(above)})" if 0 < len(above) < len(pairs) else "")
        + ": where it is, the nets share the layer's subspace more than its individual units."
    )


def interpolation_section(data: Interpolation, draw: Any) -> dict[str, Any]:
    """The barrier table and curves of an ``interpolate`` output (and a merged zoo, if any)."""
    rows = []
    for label in data.order:
        curve = data.curves[label]
        for split in ("test", "train"):
            barrier = curve.get("barriers", {}).get(split)
            if barrier is None:
                continue
            rows.append(
                [
                    label,
                    split,
                    f"{barrier['loss']:.3f}",
                    f"{100 * barrier['accuracy']:.1f}",
                    f"{curve.get('matching_seconds', 0.0):.1f}",
                ]
            )
    a, b = list(data.endpoints)[:2]
    definitions = next(iter(data.curves.values())).get("definitions", data.definitions)
    out: dict[str, Any] = {
        "text": TEXT["interpolation"],
        "table": _table(
            ["path", "split", "loss barrier", "accuracy barrier (points)", "matching (s)"],
            rows,
            "interpolation-table",
        ),
        "definitions": "Definitions: "
        + "; ".join(f"{k} barrier = {v}" for k, v in definitions.items())
        + f". Endpoints: A = {a}, B = {b}.",
        "figure": draw(
            fig.interpolation(
                {k: data.curves[k] for k in data.order},
                f"Linear interpolation: {a} (0) to {b} (1)",
            ),
            "interpolation",
            "interpolation curves",
        ),
        "merge": None,
    }
    if data.merge:
        out["merge"] = merge_table(data.merge)
    return out


COMPARISON_KEYS = (
    "bipartite",
    "cka",
    "debiased_cka",
    "semi",
    "refit_4",
    "one_to_one",
    "procrustes",
)


def comparison_section(comparison: Comparison, results: Results, draw: Any) -> dict[str, Any]:
    """The pair next to the reference level, layer by layer, and the thresholds' verdict."""
    columns = {c.key: c for c in summary_columns(results)}
    keys = [k for k in COMPARISON_KEYS if k in columns]
    rows = []
    for name, metrics in comparison.layers.items():
        for key in keys:
            m = metrics.get(key)
            if m is None:
                continue
            reference = (
                "\u2013"
                if m.reference_mean is None
                else f"{m.reference_mean:.3f} \u00b1 {m.reference_std:.3f} "
                f"({m.reference_min:.3f} to {m.reference_max:.3f})"
            )
            verdict = "less alike than every reference pair" if m.outside_reference else ""
            rows.append([name, columns[key].label, _fmt(m.value), reference, verdict])
    kind = (
        "the seed-to-seed variation of the baseline zoo"
        if comparison.reference_kind == "zoo"
        else "the same architecture at initialisation (two seeds): the level before any learning"
    )
    shown = [k for k in ("bipartite", "cka") if k in keys]
    figure = draw(
        fig.comparison_bands(
            list(comparison.layers),
            {k: [comparison.layers[n][k] for n in comparison.layers] for k in shown},
            {k: columns[k].description.split(",")[0] for k in shown},
            comparison.pair,
        ),
        "comparison",
        "the pair against the reference level",
        f"{comparison.pair} per layer against {kind} ({len(comparison.reference_pairs)} pairs: "
        "the band spans them).",
    )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in comparison.seconds.items())
    if comparison.thresholds:
        verdict = (
            "All thresholds pass."
            if comparison.ok
            else "Failed thresholds: " + "; ".join(comparison.failed) + "."
        )
    else:
        verdict = "No thresholds were set."
    return {
        "text": (
            f"{comparison.pair} compared with {kind}. For errors and distances (1-to-1, refit, "
            "Procrustes) smaller means more alike; for the rest larger does. "
            f"{verdict}" + (f" The check took {timing}." if timing else "")
        ),
        "table": _table(
            ["layer", "metric", comparison.pair, "reference: mean \u00b1 std (range)", ""],
            rows,
            "comparison-table",
        ),
        "figure": figure,
        "ok": comparison.ok,
    }


def merge_table(merge: Mapping[str, Any]) -> dict[str, Any]:
    """A merged zoo (``merged.json``): each member, the naive average, the merged net and the
    ensemble, with accuracy on each split; the merge's own warnings after the table."""
    rows = []
    for entry in merge_rows(merge):
        rows.append(
            [
                entry["name"],
                entry["kind"],
                _pct(entry.get("train_accuracy")),
                _pct(entry.get("test_accuracy")),
            ]
        )
    n = len(merge["members"])
    train = merge.get("train_inputs")
    text = (
        f"{n} nets merged into one: {merge['method']} matching of every net to "
        f"{merge['reference']}, weights averaged, renormalised with {merge['repair']}"
        + (f" on the first {train} training inputs" if train else "")
        + ". Next to it, the members, their naive (unaligned) average and the ensemble of their "
        "outputs (mean logits): the ensemble is what one net of the same cost as all of them "
        "reaches, the naive average what skipping the alignment costs. Accuracy in percent; "
        "train = the calibration inputs, test = the held-out split."
    )
    notes = [str(n) for n in merge.get("notes", [])]
    if notes:
        text += " Warnings: " + " ".join(notes)
    return {
        "text": text,
        "table": _table(
            ["net", "what", "train accuracy (%)", "test accuracy (%)"], rows, "merge-table"
        ),
    }


def _pct(value: Any) -> str:
    return "\u2013" if value is None else f"{100 * float(value):.1f}"


def _pair_parts(
    layer: LayerAnalysis, pair: str
) -> tuple[PairAnalysis, tuple[int, int], tuple[int, int]]:
    p = layer.pairs[pair]
    start, ranges = 0, {}
    for net, width in layer.units.items():
        ranges[net] = (start, start + width)
        start += width
    return p, ranges[p.net_a], ranges[p.net_b]


def _matrices_caption(corr: np.ndarray, ra: Any, rb: Any, p: PairAnalysis) -> str:
    def mean_offdiag(block: np.ndarray) -> tuple[float, float]:
        if block.shape[0] < 2:
            return 0.0, 0.0
        mask = ~np.eye(block.shape[0], dtype=bool)
        values = np.abs(block[mask])
        return float(values.mean()), float(values.max())

    wa, ma = mean_offdiag(corr[slice(*ra), slice(*ra)])
    wb, mb = mean_offdiag(corr[slice(*rb), slice(*rb)])
    matched = p.one_to_one.bipartite_score[p.one_to_one.bipartite_partner >= 0]
    strong = int((matched >= 0.5).sum())
    return (
        f"{TEXT['matrices']} Here, distinct units of {p.net_a} correlate |r| = {wa:.2f} on average "
        f"(strongest pair {ma:.2f}), of {p.net_b} |r| = {wb:.2f} ({mb:.2f}); {strong} of "
        f"{matched.size} one-to-one matched pairs reach r \u2265 0.5."
    )


def _curves_caption(p: PairAnalysis) -> str:
    o = p.one_to_one
    score = o.bipartite_score[o.bipartite_partner >= 0]
    within = o.within_a_sorted
    n = min(score.size, within.size)
    beat = int((np.sort(score)[::-1][:n] >= within[:n]).sum()) if n else 0
    return (
        f"Every unit of {p.net_a}, sorted by how well its partner in {p.net_b} correlates with it. "
        f"Semi-matching (mean {o.semi:.2f}) lets units share partners, bipartite (mean "
        f"{o.bipartite:.2f}) does not. The within-net curve (mean {o.within_a:.2f}) is the "
        f"baseline: at {beat} of {n} ranks the between-net match is at least as good."
    )


def _sparse_caption(p: PairAnalysis, fit: Mapping[str, Any]) -> str:
    m = p.one_to_many
    held = fit["held_out"]
    parts = []
    for r in m.refit:
        value = r.held_out_mean if held else r.mean
        if value is not None:
            parts.append(f"\u2264{r.k}: {value:.2f} (mean support {r.mean_size:.1f})")
    one = m.held_out_one_to_one if held else m.one_to_one
    full = m.held_out_full if held else m.full
    where = (
        f"fitted on the {fit['fitted_on']} split, scored on the {fit['scored_on']} split"
        if held
        else "in-sample"
    )
    scoring = m.scoring
    return (
        f"Predicting each unit of {p.net_b} from {p.net_a}'s units with an L1-penalised linear fit; "
        f"moving right the penalty falls and more units are used. Least squares refitted on the "
        f"Lasso support with at most k units, mean error 1 - R\u00b2 ({where}, over "
        f"{scoring.get('scored')} scored targets; {scoring.get('left_out_dead', 0)} dead and "
        f"{scoring.get('left_out_low_variance', 0)} near-dead left out): {', '.join(parts)}; best "
        f"single unit {_num(one)}, all units {_num(full)}. The histogram shows how many units each "
        "target uses at about 4 on average."
    )


def _num(value: Any) -> str:
    return "\u2013" if value is None else f"{value:.2f}"


def _clusters_caption(p: PairAnalysis) -> str:
    c = p.many_to_many[-1]
    mixed = sum(1 for a, b in zip(c.sizes_a, c.sizes_b) if a and b)
    return (
        f"Units of both nets clustered together by |correlation| into {c.n_clusters} clusters "
        f"(the strip marks whose unit each is). {mixed} of {c.n_clusters} clusters hold units of "
        f"both nets; balance {c.balance:.2f} (1 = every cluster half {p.net_a}, half {p.net_b}). A "
        "mixed cluster is a subspace both nets learned, even where no single pair matches."
    )


def _means_caption(layer: LayerAnalysis) -> str:
    means = layer.means
    spread = means.get("spread", {})
    text = ", ".join(f"{k} {v:.2f}" for k, v in spread.items())
    return (
        f"Each net's units sorted by their mean activation. Within a net the means spread "
        f"(std / mean |mean|: {text}); across nets the distributions differ by KS "
        f"{means.get('between_ks_mean', 0.0):.2f}, against {means.get('within_ks', 0.0):.2f} "
        "between random halves of one net."
    )


def layer_section(
    layer: LayerAnalysis,
    pair: str,
    results: Results,
    draw: Any,
    *,
    patches: bool = True,
    all_pairs: bool = False,
) -> dict[str, Any]:
    """One layer: the pair's numbers in a sentence and its figures, each with a caption computed
    from the data (matrices, matched curves, patches, sparse path, clusters, means)."""
    p, ra, rb = _pair_parts(layer, pair)
    names = (p.net_a, p.net_b)
    corr = np.asarray(layer.correlation, dtype=np.float64)
    stem = _stem(layer.name)
    o = p.one_to_one
    figures, notes = [], []
    summary = (
        f"{p.net_a} vs {p.net_b}: mean semi-matching r = {o.semi:.3f}, bipartite r = "
        f"{o.bipartite:.3f} ({o.bipartite_all_units:.3f} counting the dead units: "
        f"{o.dead_a} of {p.net_a}, {o.dead_b} of {p.net_b}), within-net baseline r = "
        f"{(o.within_a + o.within_b) / 2:.3f}; semi and bipartite "
        f"agree on {o.agreement:.0%} of units; {o.unique_a} units of {p.net_a} match nothing "
        f"above |r| = {o.unique_threshold}."
    )
    shown = [pair] + ([k for k in layer.pairs if k != pair] if all_pairs else [])
    for key in shown:
        q, qa, qb = _pair_parts(layer, key)
        figures.append(
            draw(
                fig.correlation_matrices(
                    corr,
                    qa,
                    qb,
                    q.one_to_one.bipartite_partner,
                    q.one_to_one.bipartite_score,
                    (q.net_a, q.net_b),
                    layer.name,
                ),
                f"{stem}_matrices" if key == pair else f"{stem}_matrices_{_stem(key)}",
                f"{layer.name} correlation matrices ({key})",
                _matrices_caption(corr, qa, qb, q),
            )
        )
    curves = {
        "semi-matching": o.semi_sorted,
        "bipartite matching": o.bipartite_sorted,
        f"within {p.net_a} (baseline)": o.within_a_sorted,
    }
    mi = None
    if p.mutual_information is not None:
        mi = {
            "MI semi-matching": p.mutual_information.semi_sorted,
            "MI bipartite": p.mutual_information.bipartite_sorted,
        }
    figures.append(
        draw(
            fig.matched_curves(curves, layer.name, mi),
            f"{stem}_curves",
            f"{layer.name} matched curves",
            _curves_caption(p),
        )
    )
    entries = _patch_entries(layer, p, ra, rb) if patches else []
    tokens = _token_table(layer, p, ra, rb, results.run.get("vocab")) if patches else None
    if tokens is not None:
        notes.append(
            "The tokens that drive the best, median and worst matched units most (each unit's top "
            "activations; the token at the position in brackets, with its neighbours):"
        )
    elif entries:
        figures.append(
            draw(
                fig.patch_grid(entries, names, layer.name),
                f"{stem}_patches",
                f"{layer.name} top patches",
                TEXT["patches"],
            )
        )
    else:
        why = "not asked for" if not patches else "these statistics hold no input patches"
        notes.append(f"Top-input patches left out: {why}.")
    m = p.one_to_many
    live = m.live_target if m.live_target is not None else np.ones(m.nonzero.shape[1], bool)
    fit = fit_convention(results)
    figures.append(
        draw(
            fig.sparse_path(
                m.penalties,
                m.mean_error,
                m.held_out_mean_error,
                m.held_out_one_to_one if fit["held_out"] else m.one_to_one,
                m.held_out_full if fit["held_out"] else m.full,
                m.nonzero[:, live],
                m.mean_nonzero,
                layer.name,
                fit_label=f"{fit['fitted_on']}, fit",
                scored_label=f"{fit['scored_on']}, held out",
            ),
            f"{stem}_sparse",
            f"{layer.name} sparse prediction",
            _sparse_caption(p, fit),
        )
    )
    if p.many_to_many:
        c = p.many_to_many[-1]
        figures.append(
            draw(
                fig.cluster_blocks(corr, ra, rb, c.labels, c.order, names, layer.name),
                f"{stem}_clusters",
                f"{layer.name} spectral clusters",
                _clusters_caption(p),
            )
        )
    figures.append(
        draw(
            fig.mean_activations(layer.unit_means, layer.name),
            f"{stem}_means",
            f"{layer.name} mean activations",
            _means_caption(layer),
        )
    )
    return {
        "name": layer.name,
        "summary": summary,
        "figures": figures,
        "notes": notes,
        "tokens": tokens,
    }


def _token_text(window: np.ndarray, vocab: Mapping[str, str] | None) -> str:
    mid = len(window) // 2
    words = []
    for i, t in enumerate(window.tolist()):
        if t < 0:
            continue
        word = (vocab or {}).get(str(t), str(t))
        words.append(f"[{word}]" if i == mid else word)
    return " ".join(words)


def _showcase(
    layer: LayerAnalysis, p: PairAnalysis, ra: Any, rb: Any
) -> list[tuple[str, int, int, int, int]]:
    """The best, median and worst matched units of A (bipartite score) whose inputs were kept at
    collect time: ``(label, unit of A, its partner in B, row of A, row of B)`` (rows into
    ``layer.patch_*``)."""
    if layer.patch_units is None or not len(layer.patch_units):
        return []
    where = {int(u): i for i, u in enumerate(layer.patch_units)}
    partner, score = p.one_to_one.bipartite_partner, p.one_to_one.bipartite_score
    live = np.flatnonzero(partner >= 0)
    if live.size == 0:
        return []
    ranked = live[np.argsort(-score[live], kind="stable")]
    out = []
    for label, u in (
        ("best", ranked[0]),
        ("median", ranked[len(ranked) // 2]),
        ("worst", ranked[-1]),
    ):
        ua, ub = ra[0] + int(u), rb[0] + int(partner[u])
        if ua in where and ub in where:
            out.append((label, int(u), int(partner[u]), where[ua], where[ub]))
    return out


def _token_table(
    layer: LayerAnalysis, p: PairAnalysis, ra: Any, rb: Any, vocab: Mapping[str, str] | None
) -> dict[str, Any] | None:
    """For token inputs: the top token contexts of the best, median and worst matched units."""
    if layer.patch_tokens is None:
        return None
    shown = _showcase(layer, p, ra, rb)
    if not shown:
        return None
    score = p.one_to_one.bipartite_score
    rows = []
    for label, u, v, row_a, row_b in shown:
        for slot in range(min(3, layer.patch_tokens.shape[1])):
            rows.append(
                [
                    f"{label} (r = {score[u]:.2f})" if slot == 0 else "",
                    f"{p.net_a} unit {u}: " + _token_text(layer.patch_tokens[row_a, slot], vocab),
                    f"{p.net_b} unit {v}: " + _token_text(layer.patch_tokens[row_b, slot], vocab),
                ]
            )
    return _table(["pair", p.net_a, p.net_b], rows, f"tokens-{layer.name}")


def _patch_entries(layer: LayerAnalysis, p: PairAnalysis, ra: Any, rb: Any) -> list[dict]:
    if layer.patch_images is None:
        return []
    score = p.one_to_one.bipartite_score
    return [
        {
            "label": label,
            "unit_a": u,
            "unit_b": v,
            "corr": float(score[u]),
            "grid_a": fig.tile(layer.patch_images[row_a]),
            "grid_b": fig.tile(layer.patch_images[row_b]),
        }
        for label, u, v, row_a, row_b in _showcase(layer, p, ra, rb)
    ]


# ------------------------------------------------------------------------------------------------
# the report


def build_report(
    results_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    pair: str | None = None,
    patches: bool = True,
    interpolation: str | os.PathLike | None = None,
    formats: Sequence[str] = ("png",),
    all_pairs: bool = False,
    comparison: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Write the report of an ``analyze`` results directory; return the HTML file's path.

    Parameters
    ----------
    results_dir : path
        Output of ``convergent analyze``.
    out : path, optional
        Report directory (default ``<results_dir>/report``): ``report.html``, ``figures/*.png``
        (and ``.svg`` with ``formats``), ``summary.csv``, ``summary.json``.
    pair : str, optional
        The pair shown per layer, as ``"netA~netB"`` (default: the first pair).
    patches : bool
        Draw the top-input patches (when the statistics kept them).
    interpolation : path, optional
        Output directory of ``convergent interpolate`` to include (default: ``interpolation/``
        beside ``results_dir``, if there is one, as ``convergent demo --interpolate`` writes it).
    formats : sequence of {'png', 'svg'}
        Figure files to write (PNG is always written: the page embeds it).
    all_pairs : bool
        Correlation matrices of every pair per layer, not only ``pair``'s.
    comparison : path, optional
        Output directory of ``convergent compare`` (its ``compare.json``): the pair next to the
        reference level (default: beside ``results_dir``, if there is one).
    workers : int, optional
        Processes drawing the layers' figures (default: the CPUs this process may use, at most one
        per layer; 1 draws in this process). The page and every figure are the same bytes for any
        number: each figure is drawn whole by one process.
    """
    results_dir = Path(results_dir)
    if not (results_dir / "results.json").is_file():
        raise ConvergentError(
            f"{results_dir} holds no results.json; run `convergent analyze STATS --out "
            f"{results_dir}` first."
        )
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"The 'formats' parameter must name formats among {FORMATS}. Got {bad}.")
    results = load_results(results_dir)
    pair = pair or results.pairs[0]
    if pair not in results.pairs:
        raise ValueError(
            f"The 'pair' parameter must be one of the analysed pairs {results.pairs}. Got "
            f"{pair!r} instead."
        )
    interp_dir = (
        Path(interpolation) if interpolation is not None else results_dir.parent / "interpolation"
    )
    interp = None
    if interpolation is not None or (interp_dir / INTERPOLATION_FILE).is_file():
        interp = load_interpolation(interp_dir)
    compare_dir = Path(comparison) if comparison is not None else results_dir.parent
    compared = None
    if comparison is not None or (compare_dir / COMPARE_FILE).is_file():
        compared = load_comparison(compare_dir)
    out = Path(out) if out is not None else results_dir / "report"
    draw = _Figures(out / "figures", formats)
    rows = summary_rows(results)
    write_json(out / "summary.json", rows)
    atomic_write_bytes(out / "summary.csv", summary_csv(results))
    ds = results.run.get("dataset", {})
    title = f"convergent report: {ds.get('name', 'dataset')}, {len(results.nets)} nets"
    # the layers' figures are drawn by worker processes while this one builds the rest
    layers = _LayerSections(_LayerJob(results, pair, draw, patches, all_pairs), workers)
    try:
        context: dict[str, Any] = {
            "title": title,
            "pair": pair,
            "version": __version__,
            "source": "the results folder",
            "formats": ", ".join(draw.formats),
            "run": run_section(results, pair),
            "summary": summary_section(results, draw),
            "similarity": similarity_section(results, draw),
            "interpolation": interpolation_section(interp, draw) if interp is not None else None,
            "comparison": comparison_section(compared, results, draw)
            if compared is not None
            else None,
            "layers": [],
        }
        with bar(total=len(results.layers), progress=progress, desc="report", unit="layer") as pbar:
            for section in layers:
                context["layers"].append(section)
                pbar.update(1)
    finally:
        layers.close()
    context["nav"] = (
        [{"anchor": "run", "text": "run"}, {"anchor": "summary", "text": "summary"}]
        + [{"anchor": "similarity", "text": "whole-layer similarity"}]
        + ([{"anchor": "comparison", "text": "comparison"}] if compared is not None else [])
        + ([{"anchor": "interpolation", "text": "interpolation"}] if interp is not None else [])
        + [{"anchor": f"layer-{name}", "text": name} for name in results.layers]
    )
    page = render(context)
    report = out / "report.html"
    atomic_write_bytes(report, page.encode())
    return report


@dataclass
class _LayerJob:
    results: Results
    pair: str
    draw: Any
    patches: bool
    all_pairs: bool

    def __call__(self, name: str) -> dict[str, Any]:
        return layer_section(
            self.results.layers[name],
            self.pair,
            self.results,
            self.draw,
            patches=self.patches,
            all_pairs=self.all_pairs,
        )


_FORKED_JOB: _LayerJob | None = None


def _forked_layer(name: str) -> dict[str, Any]:
    assert _FORKED_JOB is not None
    return _FORKED_JOB(name)


class _LayerSections:
    """The layer sections in layer order. Where the platform forks, ``workers`` processes start
    drawing them at once (they inherit the results rather than receive them as pickles) and this
    process collects them when iterated; otherwise they are drawn here, when iterated."""

    def __init__(self, job: _LayerJob, workers: int | None) -> None:
        global _FORKED_JOB
        self.job, self.names = job, list(job.results.layers)
        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if int(workers) != workers or workers < 1:
            raise ValueError(f"The 'workers' parameter must be an integer >= 1. Got {workers!r}.")
        workers = min(int(workers), len(self.names))
        self.pool: ProcessPoolExecutor | None = None
        self.futures: list[Any] = []
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            _FORKED_JOB = job
            self.pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("fork")
            )
            self.futures = [self.pool.submit(_forked_layer, name) for name in self.names]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.pool is None:
            for name in self.names:
                yield self.job(name)
            return
        for future in self.futures:
            yield future.result()

    def close(self) -> None:
        """Stop the workers (cancelling what has not started: after an error elsewhere)."""
        global _FORKED_JOB
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None
        _FORKED_JOB = None


def render(context: Mapping[str, Any]) -> str:
    """The HTML page from a context (Jinja2, autoescaped: text from files is shown as text)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("convergent.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(**context)


def summary_json(results: Results) -> str:
    """The summary rows as JSON text (what ``summary.json`` holds)."""
    return json.dumps(summary_rows(results), indent=2)
