"""Stage orchestration that crosses package boundaries: `convergent analyze` (statistics -> results,
with an optional second data pass for mutual information). The analyses themselves stay pure."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from convergent._errors import ConvergentError
from convergent._io import read_json, save_arrays, sha256_file, write_json
from convergent._progress import bar
from convergent._version import __version__
from convergent.analysis import (
    AnalysisSettings,
    analyze_layer,
    layer_by_layer_cka,
    layer_similarity,
    net_pairs,
    summary_row,
)
from convergent.stats import Statistics

RESULTS_FORMAT = "convergent-results"

#: whole-layer similarity means over pairs copied into each layer's summary row (keys of
#: ``layer_similarity(...)["summary"]``)
SIMILARITY_COLUMNS = (
    "cka",
    "debiased_cka",
    "cca",
    "svcca",
    "pwcca",
    "procrustes",
    "procrustes_perm",
    "basis_alignment_ratio",
)


def _mi_for_layer(
    stats: Any,
    layer: str,
    pairs: list[tuple[str, str]],
    *,
    bins: int,
    inputs: int,
    progress: bool | None,
) -> dict[str, Any]:
    from convergent.collect import collect_mutual_information
    from convergent.data import load_dataset
    from convergent.zoo import load_zoo

    source = stats.info.get("source", {})
    if "zoo" not in source:
        raise ConvergentError(
            "Mutual information needs a second pass over the data, so the statistics must come "
            "from a zoo (`convergent collect ZOO`); these were collected from other checkpoints."
        )
    zoo = load_zoo(source["zoo"])
    ds_info = stats.info["dataset"]
    ds = load_dataset(
        ds_info["name"], None if ds_info["source"].startswith("sklearn") else ds_info["source"]
    )
    images, _ = ds.split(stats.info.get("split", "test"))
    images = images[:inputs]
    models = zoo.models(sorted({n for p in pairs for n in p}, key=zoo.names.index))
    return collect_mutual_information(
        models,
        images,
        layer,
        pairs,
        bins=bins,
        spatial=stats.settings.get("spatial", "positions"),
        progress=progress,
    )


def analyze_run(
    stats_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    settings: AnalysisSettings | None = None,
    held_out: str | os.PathLike | None = None,
    layers: list[str] | None = None,
    mi: bool = False,
    mi_pairs: str = "first",
    mi_bins: int = 10,
    mi_inputs: int = 500,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run every analysis over every layer and pair of a statistics directory; write ``out``.

    Writes ``results.json`` (every scalar, keyed by layer, pair and method; the settings and versions
    that produced it), ``arrays/<layer>.safetensors`` (permutations, sorted curves, coefficients,
    cluster labels, unit means) and ``summary.csv`` (one row per layer). Each layer also gets its
    whole-layer similarity (``layers[name]["similarity"]``: ``layer_similarity``; the means over
    pairs of :data:`SIMILARITY_COLUMNS` join the summary row) and, when the statistics hold pooled
    all-layer moments, ``layer_by_layer`` is the layer x layer CKA of the first two nets. An existing
    ``out`` made from the same statistics and settings is reused.

    Parameters
    ----------
    held_out : path, optional
        A second statistics directory of the same nets (e.g. the train split); sparse prediction
        errors are also evaluated on it.
    mi : bool
        Also compute mutual-information matching (a second pass over up to ``mi_inputs`` inputs of
        the same split), for the first pair (``mi_pairs="first"``) or all pairs (``"all"``).
    """
    settings = settings or AnalysisSettings()
    stats_dir, out = Path(stats_dir), Path(out)
    stats = Statistics.load(stats_dir, layers=layers)
    held = Statistics.load(held_out, layers=layers) if held_out is not None else None
    if held is not None and held.nets != stats.nets:
        raise ValueError(f"The held-out statistics are of nets {held.nets}, not {stats.nets}.")
    if held is not None:
        missing = [name for name in stats.layers if name not in held.layers]
        if missing:
            raise ValueError(
                f"The held-out statistics lack layers {missing}; collect them there too "
                f"(`convergent collect ... --layers {','.join(stats.layers)}`)."
            )
    config = {
        "settings": settings.to_dict(),
        "stats": {
            "path": str(stats_dir.resolve()),
            "manifest_sha256": sha256_file(stats_dir / "manifest.json"),
        },
        "held_out": str(Path(held_out).resolve()) if held_out is not None else None,
        "layers": list(stats.layers),
        "mi": {"enabled": mi, "pairs": mi_pairs, "bins": mi_bins, "inputs": mi_inputs},
    }
    results_path = out / "results.json"
    if results_path.is_file():
        old = read_json(results_path)
        if old.get("config") == config:
            return old
        raise ConvergentError(
            f"{out} already holds results of other statistics or settings. Choose another output "
            "directory (--out); nothing was overwritten."
        )
    if len(stats.nets) < 2:
        raise ConvergentError(
            f"The statistics in {stats_dir} are of {len(stats.nets)} net; comparing needs at least "
            "2. Train and collect more nets (e.g. --seeds 0 1)."
        )
    pairs = net_pairs(stats.nets)
    t0 = time.perf_counter()
    total = len(stats.layers) * len(pairs)
    layers_out: dict[str, Any] = {}
    rows = []
    # an interrupted run resumes: finished layers (json + arrays) of the same config are kept
    partial = out / "partial"
    if (partial / "config.json").is_file() and read_json(partial / "config.json") != config:
        raise ConvergentError(
            f"{out} holds an unfinished analysis of other statistics or settings. Choose another "
            "output directory (--out); nothing was overwritten."
        )
    partial.mkdir(parents=True, exist_ok=True)
    write_json(partial / "config.json", config)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    with bar(total=total, progress=progress, desc="analyze", unit="pair") as pbar:
        for name, layer in stats.layers.items():
            done = partial / f"{name}.json"
            if done.is_file() and (out / "arrays" / f"{name}.safetensors").is_file():
                kept = read_json(done)
                layers_out[name], row = kept["layer"], kept["row"]
                rows.append(row)
                pbar.update(len(pairs))
                continue
            mi_results = None
            if mi:
                chosen = pairs[:1] if mi_pairs == "first" else pairs
                mi_results = _mi_for_layer(
                    stats, name, chosen, bins=mi_bins, inputs=mi_inputs, progress=progress
                )
            result = analyze_layer(
                layer,
                settings,
                held_out=held[name] if held else None,
                mi=mi_results,
                on_pair=lambda *_: pbar.update(1),
            )
            similarity = layer_similarity(layer.moments, layer.unit_ranges, layer=name)
            layers_out[name] = {
                "info": {**result.info, "map_shape": list(layer.map_shape)},
                "pairs": result.pairs,
                "summary": result.summary,
                "means": result.means,
                "similarity": similarity,
            }
            arrays = dict(result.arrays)
            if layer.topk is not None:
                arrays["topk/value"] = layer.topk.value
                arrays["topk/index"] = layer.topk.index
                arrays["topk/position"] = layer.topk.position
            save_arrays(out / "arrays" / f"{name}.safetensors", arrays, {"layer": name})
            row = summary_row(result)
            row.update({k: similarity["summary"].get(k) for k in SIMILARITY_COLUMNS})
            rows.append(row)
            write_json(done, {"layer": layers_out[name], "row": row})
    results = {
        "format": RESULTS_FORMAT,
        "format_version": 1,
        "convergent_version": __version__,
        "numpy_version": np.__version__,
        "config": config,
        "nets": stats.nets,
        "pairs": [f"{a}~{b}" for a, b in pairs],
        "run": {**stats.info, "num_inputs": stats.num_inputs, "collect_settings": stats.settings},
        "layers": layers_out,
        "summary": rows,
        "seconds": time.perf_counter() - t0,
    }
    if stats.pooled is not None:
        results["layer_by_layer"] = layer_by_layer(stats, *stats.nets[:2])
    _write_csv(out / "summary.csv", rows)
    write_json(results_path, results)
    return results


def layer_by_layer(stats: Any, net_a: str, net_b: str) -> dict[str, Any]:
    """Layer x layer CKA (linear, and debiased when the pooled moments have kernel sums and >= 4
    inputs) between ``net_a``'s layers (rows) and ``net_b``'s (columns), from the statistics'
    pooled all-layer moments (one spatially averaged sample per input)."""
    out: dict[str, Any] = {
        "nets": [net_a, net_b],
        "samples": int(stats.pooled.count),
        "cka": layer_by_layer_cka(stats, net_a, net_b).to_dict(),
    }
    if getattr(stats.pooled, "norm_products", None) is not None and stats.pooled.count >= 4:
        out["debiased_cka"] = layer_by_layer_cka(stats, net_a, net_b, debiased=True).to_dict()
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    from convergent._io import atomic_write_bytes

    buf = io.StringIO()
    columns = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write_bytes(path, buf.getvalue().encode())


SUMMARY_COLUMNS = [
    ("layer", "layer"),
    ("units", "units"),
    ("semi", "semi"),
    ("bipartite", "bipartite"),
    ("within", "within"),
    ("above_0.5", ">0.5"),
    ("above_0.9", ">0.9"),
    ("sparse_1", "L1~1"),
    ("sparse_4", "L1~4"),
    ("one_to_one", "1-to-1"),
    ("full_linear", "full"),
    ("cluster_balance", "balance"),
    ("mean_act_ks", "KS"),
    ("cka", "CKA"),
]


def terminal_summary(results: dict[str, Any]) -> str:
    """The layer-by-layer table printed by `analyze` and `demo`."""
    from convergent.report import format_table

    rows = []
    for r in results["summary"]:
        row = {}
        for key, label in SUMMARY_COLUMNS:
            v = r.get(key)
            row[label] = round(v, 3) if isinstance(v, float) else v
        rows.append(row)
    legend = (
        "semi/bipartite: mean matched correlation (over pairs); within: best correlation inside "
        "a net; >0.5/>0.9: share of units matched that well; L1~k: sparse-prediction error "
        "(1-R^2) with ~k predictors; 1-to-1 / full: single best unit / all units; balance: "
        "spectral cluster balance; KS: mean-activation distribution distance; CKA: linear CKA of "
        "the whole layer"
    )
    return format_table(rows) + "\n" + legend
