"""`convergent report RESULTS_DIR`: one self-contained HTML file, the figures as PNG and SVG, and the
summary as CSV and JSON.

The report reads what `analyze` wrote (``results.json``, ``arrays/<layer>.safetensors``) and the
statistics it names (for the correlation matrices); pictures of what units respond to also need the
zoo and the dataset, and are left out, with a note, when those are not at hand. Nothing is
re-analysed here.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convergent._errors import ConvergentError
from convergent._io import atomic_write_bytes, load_arrays, read_json, write_json
from convergent._progress import bar
from convergent.collect._patches import tile, unit_patches
from convergent.report import _figures as fig

SECTION_TEXT = {
    "summary": (
        "One row per layer, averaged over every pair of nets (\u00b1 the spread over pairs). "
        "<b>semi</b>: each unit's best correlation with any unit of the other net; <b>bipartite</b>: "
        "the same under a one-to-one assignment; <b>within</b>: each unit's best correlation with "
        "another unit of its own net (a baseline for what 'similar' means); <b>&gt;0.5 / &gt;0.9</b>: "
        "share of units whose bipartite partner correlates that well; <b>L1~k</b>: error (1 - R\u00b2) "
        "predicting a unit of B from about k units of A; <b>1-to-1 / full</b>: from the single best "
        "unit / from all units; <b>balance</b>: how evenly spectral clusters mix the two nets "
        "(1 = every cluster half A, half B); <b>KS</b>: distance between the nets' distributions of "
        "per-unit mean activations (0 = identical)."
    ),
    "trends": (
        "Left: how well single units match across nets, layer by layer. If the bipartite curve sits "
        "far below semi-matching, several units of A share one best partner in B. Right: how well a "
        "few units of A predict a unit of B; a large drop from 1 to 4 predictors means B's units are "
        "mixtures of A's (the same subspace in another basis)."
    ),
    "matrices": (
        "Correlations between units (red positive, blue negative, white 0). Within a net, units are "
        "mostly decorrelated. Between nets, a match shows as a bright entry; after reordering B's units "
        "by the one-to-one matching, matched pairs lie on the diagonal."
    ),
    "curves": (
        "Every unit of A, sorted by how well its partner in B correlates with it. Semi-matching lets "
        "units share partners; bipartite does not. The within-net curve is the baseline: a unit whose "
        "between-net match beats its best within-net correlation was learned reliably."
    ),
    "patches": (
        "The inputs that drive a unit most (its top 9 activations, each cropped to the part of the input "
        "that can influence that activation: the input-gradient support), for the best, median and "
        "worst matched pair. Well matched units respond to the same patterns."
    ),
    "sparse": (
        "Predicting each unit of B from A's units with an L1-penalised linear fit. Moving right, the "
        "penalty falls and more A units are used; the dashed lines are the best single unit and all "
        "units together. The histogram shows how many A units each B unit needs at about 4 on average."
    ),
    "clusters": (
        "Units of both nets clustered together by their correlations. Bright squares on the diagonal "
        "are groups that correlate among themselves; a group holding units of both nets is a subspace "
        "both learned, even if no single pair matches."
    ),
    "interpolation": (
        "What convergent learning means for merging models: the loss and accuracy of the weights "
        "(1 - \u03b1) A + \u03b1 B along the straight line between two nets. Averaged naively, units "
        "that do different jobs are mixed and the midpoint fails; after B's units are permuted to "
        "match A's (and, with repair, each unit's activation statistics are restored) the path stays "
        "much better. The barrier is the largest loss above (accuracy below) the straight line "
        "between the endpoints' values."
    ),
    "similarity": (
        "Each layer compared as a whole, averaged over pairs of nets, next to the mean bipartite "
        "match of single units. <b>CKA</b> and the <b>CCA</b> family (mean CCA, SVCCA, PWCCA) do "
        "not change when a layer's units are rotated or mixed, so they measure whether the nets "
        "span the same subspace. <b>Procrustes</b> is a distance (0 = same shape) under the best "
        "rotation; <b>Procrustes (perm)</b> allows only a one-to-one matching of units, so it is "
        "not rotation-invariant. <b>Basis alignment</b> (permutation over rotation overlap, 1 = "
        "the units themselves align) says how much of the similarity is unit-to-unit rather than "
        "subspace-level: high CKA with low basis alignment means the same subspace in another "
        "basis."
    ),
    "similarity_trends": (
        "Left: the whole-layer similarities per layer next to the unit matching. Right: the "
        "Procrustes distance under any rotation and under a unit permutation; the gap between "
        "them is what the units' own basis costs."
    ),
    "layer_by_layer": (
        "CKA between every layer of one net (rows) and every layer of the other (columns), each "
        "layer's map averaged over positions (one sample per input). A bright diagonal means "
        "corresponding layers match best; debiased CKA removes the bias that makes unrelated "
        "wide layers look similar on few inputs."
    ),
    "means": (
        "Each net's units sorted by their mean activation. Within a net, means differ a lot; across "
        "nets, the sorted curves lie on top of each other: the distribution is shared, not the units."
    ),
}

SIMILARITY_COLUMNS = [
    ("layer", "layer"),
    ("bipartite", "bipartite"),
    ("cka", "CKA"),
    ("debiased_cka", "debiased CKA"),
    ("cca", "CCA"),
    ("svcca", "SVCCA"),
    ("pwcca", "PWCCA"),
    ("procrustes", "Procrustes"),
    ("procrustes_perm", "Procrustes (perm)"),
    ("basis_alignment_ratio", "basis alignment"),
]

COLUMNS = [
    ("layer", "layer"),
    ("units", "units"),
    ("semi", "semi"),
    ("bipartite", "bipartite"),
    ("within", "within"),
    ("above_0.5", "&gt;0.5"),
    ("above_0.9", "&gt;0.9"),
    ("sparse_1", "L1~1"),
    ("sparse_2", "L1~2"),
    ("sparse_4", "L1~4"),
    ("one_to_one", "1-to-1"),
    ("full_linear", "full"),
    ("cluster_balance", "balance"),
    ("mean_act_ks", "KS"),
]

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #e3e3e3;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{font-size:.9em;color:#444}.muted{color:#777}
nav a{margin-right:.8em}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _fmt(value: Any, std: Any = None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return '<span class="muted">\u2013</span>'
    if isinstance(value, float):
        text = f"{value:.3f}"
        if std is not None and isinstance(std, float) and np.isfinite(std) and std > 0:
            text += f' <span class="muted">\u00b1{std:.3f}</span>'
        return text
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _matched_entries(
    arrays: Mapping[str, np.ndarray], key: str, dead_a: np.ndarray
) -> list[tuple[str, int, int, float]]:
    """(label, unit_a, unit_b, corr) for the best, median and worst live bipartite-matched units."""
    partner = np.asarray(arrays[f"{key}/matching/bipartite_partner"])
    score = np.asarray(arrays[f"{key}/matching/bipartite_score"])
    live = np.flatnonzero((partner >= 0) & ~dead_a)
    if live.size == 0:
        return []
    ranked = live[np.argsort(-score[live], kind="stable")]
    picks = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
    return [(label, int(u), int(partner[u]), float(score[u])) for label, u in picks]


def _context(results: Mapping[str, Any]) -> tuple[Any, Any, str | None]:
    """(zoo, dataset images, why not) for the patch pictures."""
    from convergent.data import load_dataset
    from convergent.zoo import load_zoo

    run = results["run"]
    source = run.get("source", {})
    if "zoo" not in source:
        return None, None, "the statistics were not collected from a zoo"
    try:
        zoo = load_zoo(source["zoo"])
        ds_info = run["dataset"]
        data_dir = (
            None if str(ds_info.get("source", "")).startswith("sklearn") else ds_info["source"]
        )
        ds = load_dataset(ds_info["name"], data_dir)
        images, _ = ds.split(run.get("split", "test"))
    except (ConvergentError, OSError, KeyError) as err:
        return None, None, f"the zoo or dataset could not be read ({err})"
    return zoo, images, None


def build_report(
    results_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    pair: str | None = None,
    patches: bool = True,
    interpolation: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> Path:
    """Write the report of an `analyze` results directory; return the HTML file's path.

    Parameters
    ----------
    results_dir : path
        Output of ``convergent analyze``.
    out : path, optional
        Report directory (default ``<results_dir>/report``): ``report.html``, ``figures/*.png|svg``,
        ``summary.csv``, ``summary.json``.
    pair : str, optional
        The pair shown per layer, as ``"netA~netB"`` (default: the first pair).
    patches : bool
        Draw the top-input patches (needs the zoo and the dataset).
    interpolation : path, optional
        Output directory of ``convergent interpolate`` to include (default: ``interpolation/``
        beside ``results_dir``, if there is one, as ``convergent demo --interpolate`` writes it).
    """
    from convergent.results._analyze import _write_csv
    from convergent.stats import Statistics

    results_dir = Path(results_dir)
    path = results_dir / "results.json"
    if not path.is_file():
        raise ConvergentError(
            f"{results_dir} holds no results.json; run `convergent analyze STATS --out "
            f"{results_dir}` first."
        )
    results = read_json(path)
    out = Path(out) if out is not None else results_dir / "report"
    figdir = out / "figures"
    pairs = list(results["pairs"])
    pair = pair or pairs[0]
    if pair not in pairs:
        raise ValueError(
            f"The 'pair' parameter must be one of the analysed pairs {pairs}. Got {pair!r} instead."
        )
    net_a, net_b = pair.split("~")
    stats_path = results["config"]["stats"]["path"]
    try:
        stats = Statistics.load(stats_path, layers=list(results["layers"]))
    except (ConvergentError, OSError) as err:
        raise ConvergentError(
            f"The report needs the statistics the results were made from ({stats_path}): {err}"
        ) from err
    zoo, images, why_no_patches = _context(results)
    if not patches:
        why_no_patches = "not asked for"
    # the pair's nets, loaded (and checksum-verified) once for every layer's patches
    models = zoo.models([net_a, net_b]) if zoo is not None and patches else None
    rows = results["summary"]
    layers = list(results["layers"])

    write_json(out / "summary.json", rows)
    _write_csv(out / "summary.csv", rows)
    parts: list[str] = []
    run = results["run"]
    ds = run.get("dataset", {})
    title = f"convergent report: {ds.get('name', 'dataset')}, {len(results['nets'])} nets"
    parts.append(f"<h1>{html.escape(title)}</h1>")
    parts.append(
        '<p class="note">Do different networks learn the same representations? Nets of one '
        "architecture that differ only in their random seed were shown the same inputs, and every "
        "unit's activations were compared across nets, as in Li et al., <i>Convergent Learning</i> "
        "(ICLR 2016). Sections: "
        + " ".join(
            f'<a href="#{h}">{t}</a>'
            for h, t in [
                ("run", "run"),
                ("summary", "summary"),
                ("similarity", "whole-layer similarity"),
                ("layers", "layers"),
            ]
        )
        + "</p>"
    )

    # the run
    parts.append('<h2 id="run">The run</h2>')
    run_rows = [
        ["dataset", html.escape(f"{ds.get('name')} ({ds.get('source', '')})")],
        ["split", html.escape(str(run.get("split")))],
        ["inputs", str(run.get("num_inputs"))],
        ["pair shown per layer", html.escape(pair)],
        ["convergent", html.escape(results.get("convergent_version", ""))],
    ]
    parts.append(_table(["", ""], run_rows))
    net_rows = []
    for name in results["nets"]:
        if zoo is not None and name in zoo.names:
            rec = zoo.record(name)
            seeds = ", ".join(f"{k} {v}" for k, v in rec.seeds.items())
            net_rows.append(
                [
                    name,
                    html.escape(rec.arch),
                    seeds,
                    f"{rec.train_accuracy:.4f}",
                    f"{rec.test_accuracy:.4f}",
                ]
            )
        else:
            net_rows.append([name, "", "", "", ""])
    parts.append(
        _table(["net", "architecture", "seeds", "train accuracy", "test accuracy"], net_rows)
    )
    sample_rows = [
        [
            html.escape(name),
            str(results["layers"][name]["info"]["samples"]),
            "\u00d7".join(str(v) for v in results["layers"][name]["info"].get("map_shape", []))
            or "\u2013",
            ", ".join(
                f"{k}: {v}" for k, v in results["layers"][name]["info"]["dead_units"].items()
            ),
        ]
        for name in layers
    ]
    parts.append(
        '<p class="note">Samples per layer: every spatial position of every input is one sample of '
        "a convolutional layer's units (the paper's definition). Dead units (constant on these "
        "inputs) are left out of matchings and means.</p>"
    )
    parts.append(_table(["layer", "samples", "map (H\u00d7W)", "dead units per net"], sample_rows))

    # summary table and trends
    parts.append('<h2 id="summary">Summary, layer by layer</h2>')
    parts.append(f'<p class="note">{SECTION_TEXT["summary"]}</p>')
    table_rows = []
    for r in rows:
        cells = []
        for key, _ in COLUMNS:
            std = r.get(f"{key}_std")
            cells.append(_fmt(r.get(key), std))
        table_rows.append(cells)
    parts.append(_table([label for _, label in COLUMNS], table_rows, table_id="summary-table"))
    trend = fig.save(fig.layer_trends(rows), figdir / "trends")
    parts.append(
        f"<figure>{_img(trend['png'], 'per-layer trends')}"
        f"<figcaption>{SECTION_TEXT['trends']}</figcaption></figure>"
    )

    parts.extend(_similarity_section(results, figdir))

    interp_dir = (
        Path(interpolation) if interpolation is not None else results_dir.parent / "interpolation"
    )
    if (interp_dir / "interpolation.json").is_file():
        parts.extend(_interpolation_section(interp_dir))
    elif interpolation is not None:
        raise ConvergentError(
            f"{interp_dir} holds no interpolation.json; run `convergent interpolate A B --out "
            f"{interp_dir}` first."
        )

    # per layer
    parts.append(f'<h2 id="layers">Layer by layer ({html.escape(pair)})</h2>')
    with bar(total=len(layers), progress=progress, desc="report", unit="layer") as pbar:
        for name in layers:
            parts.extend(
                _layer_section(
                    name,
                    results,
                    stats[name],
                    results_dir,
                    figdir,
                    (net_a, net_b),
                    pair,
                    models,
                    images,
                    why_no_patches,
                )
            )
            pbar.update(1)
    parts.append(
        '<p class="muted">Made by convergent from '
        f"{html.escape(str(results_dir.resolve()))}. Figures are also in figures/ as PNG and SVG; the "
        "summary is in summary.csv and summary.json.</p>"
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    report = out / "report.html"
    atomic_write_bytes(report, page.encode())
    return report


def _similarity_section(results: Mapping[str, Any], figdir: Path) -> list[str]:
    """Whole-layer similarity: the per-layer table and figure, and the layer x layer heatmap."""
    rows = results["summary"]
    out = ['<h2 id="similarity">Whole-layer similarity</h2>']
    out.append(f'<p class="note">{SECTION_TEXT["similarity"]}</p>')
    if not any(r.get("cka") is not None for r in rows):
        out.append(
            '<p class="note">Not in these results (analysed before whole-layer similarity was '
            "added); re-run <code>convergent analyze</code> into a new directory.</p>"
        )
        return out
    table = [[_fmt(r.get(key)) for key, _ in SIMILARITY_COLUMNS] for r in rows]
    out.append(
        _table([label for _, label in SIMILARITY_COLUMNS], table, table_id="similarity-table")
    )
    notes = sorted(
        {
            note
            for layer in results["layers"].values()
            for note in layer.get("similarity", {}).get("notes", [])
        }
    )
    if notes:
        out.append('<p class="muted">Notes: ' + "; ".join(html.escape(n) for n in notes) + ".</p>")
    trend = fig.save(fig.similarity_trends(rows), figdir / "similarity")
    out.append(
        f"<figure>{_img(trend['png'], 'whole-layer similarity per layer')}"
        f"<figcaption>{SECTION_TEXT['similarity_trends']}</figcaption></figure>"
    )
    if "layer_by_layer" in results:
        heat = fig.save(fig.layer_cka_heatmap(results["layer_by_layer"]), figdir / "layer_cka")
        out.append(
            f"<figure>{_img(heat['png'], 'layer by layer CKA')}"
            f"<figcaption>{SECTION_TEXT['layer_by_layer']}</figcaption></figure>"
        )
    return out


def _interpolation_section(interp_dir: Path) -> list[str]:
    data = read_json(interp_dir / "interpolation.json")
    out = ['<h2 id="interpolation">Averaging weights: the barrier between two nets</h2>']
    out.append(f'<p class="note">{SECTION_TEXT["interpolation"]}</p>')
    a, b = list(data["endpoints"])
    rows = []
    for label in data.get("order", list(data["curves"])):
        curve = data["curves"][label]
        for split in ("test", "train"):
            bar_ = curve["barriers"].get(split)
            if bar_ is None:
                continue
            rows.append(
                [
                    html.escape(label),
                    split,
                    f"{bar_['loss']:.3f}",
                    f"{100 * bar_['accuracy']:.1f}",
                    f"{curve.get('matching_seconds', 0.0):.1f}",
                ]
            )
    out.append(
        _table(
            ["path", "split", "loss barrier", "accuracy barrier (points)", "matching (s)"],
            rows,
            table_id="interpolation-table",
        )
    )
    defs = data["curves"][next(iter(data["curves"]))].get("definitions", {})
    out.append(
        '<p class="note">Definitions: '
        + "; ".join(f"{html.escape(k)} barrier = {html.escape(v)}" for k, v in defs.items())
        + f". Endpoints: A = {html.escape(a)}, B = {html.escape(b)}.</p>"
    )
    png = interp_dir / "interpolation.png"
    if png.is_file():
        out.append(f"<figure>{_img(png, 'interpolation curves')}</figure>")
    return out


def _layer_section(
    name: str,
    results: Mapping[str, Any],
    layer_stats: Any,
    results_dir: Path,
    figdir: Path,
    names: tuple[str, str],
    pair: str,
    models: Mapping[str, Any] | None,
    images: Any,
    why_no_patches: str | None,
) -> list[str]:
    arrays, _ = load_arrays(results_dir / "arrays" / f"{name}.safetensors")
    ranges = {k: tuple(v) for k, v in layer_stats.unit_ranges.items()}
    ra, rb = ranges[names[0]], ranges[names[1]]
    corr = layer_stats.moments.corr()
    dead = np.zeros(layer_stats.moments.dim, dtype=bool)
    dead[layer_stats.moments.dead_units()] = True
    stem = figdir / name.replace(".", "_")
    record = results["layers"][name]["pairs"][pair]
    out = [f'<h3 id="layer-{html.escape(name)}">{html.escape(name)}</h3>']

    def figure(figure_obj: Any, suffix: str, alt: str, text: str) -> None:
        paths = fig.save(figure_obj, Path(f"{stem}_{suffix}"))
        out.append(f"<figure>{_img(paths['png'], alt)}<figcaption>{text}</figcaption></figure>")

    m = record["matching"]
    out.append(
        f'<p class="note">{names[0]} vs {names[1]}: mean semi-matching r = {m["semi_mean"]:.3f}, '
        f"bipartite r = {m['bipartite_mean']:.3f}, within-net baseline r = "
        f"{(m['within_a_mean'] + m['within_b_mean']) / 2:.3f}; semi and bipartite agree on "
        f"{m['agreement']:.0%} of units; {m['unique_a']} units of {names[0]} match nothing above "
        f"|r| = {m['unique_threshold']}.</p>"
    )
    figure(
        fig.correlation_matrices(
            corr,
            ra,
            rb,
            arrays[f"{pair}/matching/bipartite_partner"],
            arrays[f"{pair}/matching/bipartite_score"],
            names,
            name,
        ),
        "matrices",
        f"{name} correlation matrices",
        SECTION_TEXT["matrices"],
    )
    curves = {
        "semi-matching": arrays[f"{pair}/matching/semi_sorted"],
        "bipartite matching": arrays[f"{pair}/matching/bipartite_sorted"],
        f"within {names[0]} (baseline)": arrays[f"{pair}/matching/within_a_sorted"],
    }
    mi = None
    if f"{pair}/mi/bipartite_sorted" in arrays:
        mi = {
            "MI semi-matching": arrays[f"{pair}/mi/semi_sorted"],
            "MI bipartite": arrays[f"{pair}/mi/bipartite_sorted"],
        }
    figure(
        fig.matched_curves(curves, name, mi),
        "curves",
        f"{name} matched curves",
        SECTION_TEXT["curves"],
    )

    if models is not None and "topk/index" in arrays:
        entries = []
        for label, ua, ub, r in _matched_entries(arrays, pair, dead[ra[0] : ra[1]]):
            grids = []
            for net, start, unit in [(names[0], ra[0], ua), (names[1], rb[0], ub)]:
                row = start + unit
                grids.append(
                    tile(
                        unit_patches(
                            models[net],
                            name,
                            images,
                            unit,
                            arrays["topk/index"][row],
                            arrays["topk/position"][row],
                        )
                    )
                )
            entries.append(
                {
                    "label": label,
                    "unit_a": ua,
                    "unit_b": ub,
                    "corr": r,
                    "grid_a": grids[0],
                    "grid_b": grids[1],
                }
            )
        if entries:
            figure(
                fig.patch_grid(entries, names, name),
                "patches",
                f"{name} top patches",
                SECTION_TEXT["patches"],
            )
    else:
        reason = why_no_patches or "no top-k inputs were collected"
        out.append(f'<p class="muted">Top-input patches left out: {html.escape(reason)}.</p>')

    sp = record["sparse"]
    figure(
        fig.sparse_path(
            np.asarray(sp["penalties"]),
            np.asarray(sp["mean_error"]),
            None
            if sp.get("held_out_mean_error") is None
            else np.asarray(sp["held_out_mean_error"]),
            sp.get("one_to_one_error"),
            sp.get("full_error"),
            arrays[f"{pair}/sparse/nonzero"][:, ~dead[rb[0] : rb[1]]],
            np.asarray(sp["mean_nonzero"]),
            name,
        ),
        "sparse",
        f"{name} sparse prediction",
        SECTION_TEXT["sparse"],
    )
    counts = sorted(
        int(k.split("/")[2])
        for k in arrays
        if k.startswith(f"{pair}/spectral/") and k.endswith("/labels")
    )
    if counts:
        k = counts[-1]
        figure(
            fig.cluster_blocks(
                corr,
                ra,
                rb,
                arrays[f"{pair}/spectral/{k}/labels"],
                arrays[f"{pair}/spectral/{k}/order"],
                names,
                name,
            ),
            "clusters",
            f"{name} spectral clusters",
            SECTION_TEXT["clusters"],
        )
    means = {net: arrays[f"means/{net}"] for net in results["nets"] if f"means/{net}" in arrays}
    figure(
        fig.mean_activations(means, name),
        "means",
        f"{name} mean activations",
        SECTION_TEXT["means"],
    )
    return out
