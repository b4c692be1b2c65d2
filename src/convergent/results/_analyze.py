"""`convergent analyze` as one library function: a statistics directory -> a results directory,
layer by layer, resumable. The analyses themselves are pure functions (``convergent.analysis``);
this module only loads statistics, runs them and writes :class:`~convergent.results.Results`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from convergent._errors import ConvergentError
from convergent._io import read_json, sha256_file, write_json
from convergent._manifest import MANIFEST, identity_of, relative_ref, reuse_or_refuse
from convergent._progress import bar
from convergent.analysis import (
    AnalysisSettings,
    LayerAnalysis,
    SimilaritySettings,
    analyze_layer,
    layer_by_layer_cka,
    net_pairs,
)
from convergent.results._columns import summary_csv
from convergent.results._results import (
    RESULTS_FORMAT,
    RESULTS_VERSION,
    Results,
    load_layer,
    load_results,
    save_layer,
    save_results,
)
from convergent.stats import FIT_DIR, Statistics, pair_key


def _net_checksums(stats: Statistics) -> dict[str, str | None]:
    nets = {n.get("name"): n for n in stats.info.get("nets", []) if isinstance(n, dict)}
    return {name: nets.get(name, {}).get("source", {}).get("sha256") for name in stats.nets}


def _check_same_nets(main: Statistics, other: Statistics, main_dir: Path, other_dir: Path) -> None:
    if other.nets != main.nets:
        raise ValueError(f"The held-out statistics are of nets {other.nets}, not {main.nets}.")
    mine, theirs = _net_checksums(main), _net_checksums(other)
    differ = [n for n in main.nets if mine[n] and theirs[n] and mine[n] != theirs[n]]
    if differ:
        raise ConvergentError(
            f"The statistics in {main_dir} and {other_dir} are of different nets that share names: "
            + "; ".join(
                f"{n} is {mine[n][:12]}... there and {theirs[n][:12]}... here" for n in differ
            )
            + ". Collect both from the same zoo or checkpoints."
        )


def layer_by_layer(stats: Statistics, net_a: str, net_b: str) -> dict[str, Any]:
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


def _run_info(stats: Statistics, fit: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in stats.info.items() if k != "source"},
        "num_inputs": stats.num_inputs,
        "collect_settings": stats.settings,
        "scores": {net: s.to_dict() for net, s in stats.scores.items()},
        "fit": fit,
    }


def analyze_run(
    stats_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    settings: AnalysisSettings | None = None,
    similarity: SimilaritySettings | None = None,
    held_out: str | os.PathLike | None = None,
    fit: str | os.PathLike | None = None,
    layers: list[str] | None = None,
    mi: bool = True,
    pairs: list[tuple[str, str]] | None = None,
    progress: bool | None = None,
) -> Results:
    """Run every analysis over every layer and pair of a statistics directory; write ``out``.

    One-to-many prediction is *fitted* on one set of statistics and *scored* on another:

    - by default, fitted on the statistics directory's own fit split (``STATS/fit``, which
      ``convergent collect`` writes from the training split) and scored on ``STATS``;
    - ``fit=DIR``: fitted on ``DIR`` (e.g. the training split) and scored on ``STATS``;
    - ``held_out=DIR``: fitted on ``STATS`` and scored on ``DIR``;
    - with none of them, fitted and scored on ``STATS`` (in-sample, said so in every table).

    Everything else (matchings, clusters, similarity) is computed on ``STATS``. Mutual-information
    matching runs where the statistics hold joint histograms (``collect --mi``), unless ``mi`` is
    false. ``pairs`` limits the analysis to some pairs of nets (default: every pair). An existing
    ``out`` made from the same statistics (by checksum) and settings is reused; an interrupted run
    resumes with the layers it had not finished.
    """
    settings = settings or AnalysisSettings()
    similarity = similarity or SimilaritySettings()
    stats_dir, out = Path(stats_dir), Path(out)
    if fit is not None and held_out is not None:
        raise ValueError(
            "Give either fit= (statistics to fit one-to-many prediction on, scored on STATS) or "
            "held_out= (statistics to score it on, fitted on STATS), not both."
        )
    stats = Statistics.load(stats_dir, layers=layers)
    if len(stats.nets) < 2:
        raise ConvergentError(
            f"The statistics in {stats_dir} are of {len(stats.nets)} net; comparing needs at least "
            "2. Train and collect more nets (e.g. --seeds 0 1)."
        )
    if fit is None and held_out is None and (stats_dir / FIT_DIR / MANIFEST).is_file():
        fit = stats_dir / FIT_DIR
    other_dir = Path(fit if fit is not None else held_out) if (fit or held_out) else None
    other = Statistics.load(other_dir) if other_dir else None
    if other is not None:
        missing = [name for name in stats.layers if name not in other.layers]
        if missing:
            raise ValueError(
                f"The held-out statistics lack layers {missing}; collect them there too "
                f"(`convergent collect ... --layers {','.join(stats.layers)}`)."
            )
        _check_same_nets(stats, other, stats_dir, other_dir)
    split = stats.info.get("split")
    other_split = other.info.get("split") if other is not None else None
    if fit is not None:
        fit_info = {"fitted_on": other_split, "scored_on": split, "held_out": True}
    elif held_out is not None:
        fit_info = {"fitted_on": split, "scored_on": other_split, "held_out": True}
    else:
        fit_info = {"fitted_on": split, "scored_on": split, "held_out": False}
    fit_info["fit_inputs"] = (other if fit is not None else stats).num_inputs
    fit_info["scored_inputs"] = (stats if fit is not None else other or stats).num_inputs
    identity = {
        "stats": sha256_file(stats_dir / MANIFEST),
        "other": sha256_file(other_dir / MANIFEST) if other_dir else None,
        "role": "fit" if fit is not None else ("held_out" if held_out is not None else None),
        "settings": settings.to_dict(),
        "similarity": similarity.to_dict(),
        "layers": list(stats.layers),
        "mi": bool(mi),
        "pairs": [list(p) for p in pairs] if pairs is not None else None,
    }
    inputs = {
        "stats": relative_ref(stats_dir, out),
        "other": relative_ref(other_dir, out) if other_dir else None,
    }
    if reuse_or_refuse(out, RESULTS_FORMAT, identity, what="results", version=RESULTS_VERSION):
        return load_results(out)
    if pairs is None:
        pairs = net_pairs(stats.nets)
    else:
        pairs = [(str(a), str(b)) for a, b in pairs]
        unknown = sorted({n for p in pairs for n in p} - set(stats.nets))
        if unknown:
            raise ValueError(f"No nets {unknown} in {stats_dir}. Nets: {stats.nets}.")
    t0 = time.perf_counter()
    partial = out / "partial"
    done_identity = partial / "identity.json"
    if done_identity.is_file() and read_json(done_identity) != identity_of(identity):
        raise ConvergentError(
            f"{out} holds an unfinished analysis of other statistics or settings. Choose another "
            "output directory (--out); nothing was overwritten."
        )
    write_json(done_identity, identity)
    analysed: dict[str, LayerAnalysis] = {}
    with bar(
        total=len(stats.layers) * len(pairs), progress=progress, desc="analyze", unit="pair"
    ) as pbar:
        for name, layer in stats.layers.items():
            record = partial / f"{name}.json"
            if record.is_file():
                kept = read_json(record)
                try:
                    analysed[name] = load_layer(out, kept["layer"], kept["file"])
                    pbar.update(len(pairs))
                    continue
                except (ConvergentError, OSError, KeyError):
                    pass  # damaged or missing arrays: analyse the layer again
            result = analyze_layer(
                layer,
                settings,
                fit=other[name] if fit is not None else None,
                held_out=(layer if fit is not None else other[name]) if other is not None else None,
                similarity=similarity,
                pairs=pairs,
                mi=layer.mi if mi else {},
                on_pair=lambda *_: pbar.update(1),
            )
            data, entry = save_layer(out, result)
            write_json(record, {"layer": data, "file": entry})
            analysed[name] = result
    results = Results(
        nets=list(stats.nets),
        pairs=[pair_key(a, b) for a, b in pairs],
        layers=analysed,
        settings={"analysis": settings.to_dict(), "similarity": similarity.to_dict()},
        run=_run_info(stats, fit_info),
        layer_by_layer=(
            layer_by_layer(stats, *stats.nets[:2]) if stats.pooled is not None else None
        ),
        seconds=time.perf_counter() - t0,
    )
    save_results(out, results, identity=identity, inputs=inputs, summary_csv=summary_csv(results))
    return results
