"""Every analysis of one layer over every pair of nets: the unit of work of ``convergent analyze``.

Pure: takes a layer's joint moments and unit ranges (any object with ``moments``, ``unit_ranges``),
returns JSON-able summaries and NumPy arrays. Pairs are unordered (A before B in net order);
semi-matching is reported in both directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from convergent._errors import ConvergentError
from convergent.analysis._means import compare_means
from convergent.analysis._one_to_one import (
    bipartite_matching,
    compare_pair,
    semi_matching,
    summarize_pairs,
)
from convergent.analysis._sparse import (
    DEFAULT_REFIT_K,
    MIN_VARIANCE_FRACTION,
    errors_at_nonzero,
    sparse_prediction,
)
from convergent.analysis._spectral import cluster_pair


@dataclass(frozen=True)
class AnalysisSettings:
    """Settings of ``convergent analyze`` (recorded in every results file)."""

    thresholds: tuple[float, ...] = (0.5, 0.9)
    unique_threshold: float = 0.5
    absolute: bool = False
    penalties: tuple[float, ...] | None = None
    n_penalties: int = 24
    #: smallest over largest penalty of the default path (1e-2 reaches ~40 predictors per unit on
    #: the digits convnet's fc layers, well past the paper's 1-4; the full fit is computed apart)
    penalty_ratio: float = 1e-2
    #: duality gap of the Lasso solver, in units of each target's variance (errors are exact to it)
    sparse_tol: float = 1e-6
    #: numbers of units of the least-squares refit on the Lasso support (the headline columns)
    refit_k: tuple[int, ...] = DEFAULT_REFIT_K
    #: targets whose fit variance is below this fraction of the median live target's are left
    #: out of the sparse summaries (see convergent.analysis._sparse)
    min_variance_fraction: float = MIN_VARIANCE_FRACTION
    clusters: tuple[int, ...] = (2, 4, 8, 16)
    affinity: str = "absolute"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "unique_threshold": self.unique_threshold,
            "absolute": self.absolute,
            "penalties": list(self.penalties) if self.penalties else None,
            "n_penalties": self.n_penalties,
            "penalty_ratio": self.penalty_ratio,
            "sparse_tol": self.sparse_tol,
            "refit_k": list(self.refit_k),
            "min_variance_fraction": self.min_variance_fraction,
            "clusters": list(self.clusters),
            "affinity": self.affinity,
            "seed": self.seed,
        }


@dataclass
class LayerResult:
    """Results of one layer: per pair, the summary over pairs, mean activations; plus arrays."""

    layer: str
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    means: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def pair_key(a: str, b: str) -> str:
    return f"{a}~{b}"


def net_pairs(nets: Sequence[str]) -> list[tuple[str, str]]:
    return list(combinations(nets, 2))


def analyze_layer(
    layer: Any,
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    held_out: Any = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    mi: Mapping[str, Any] | None = None,
    on_pair: Any = None,
) -> LayerResult:
    """One-to-one, one-to-many, many-to-many and mean-activation analyses of one layer.

    Parameters
    ----------
    layer : LayerStatistics-like
        ``name``, ``moments`` (joint over all nets) and ``unit_ranges`` ({net: (start, stop)}).
    held_out : LayerStatistics-like, optional
        The same layer's statistics on other data (sparse prediction errors are evaluated there too).
    pairs : sequence of (net_a, net_b), optional
        Default: every unordered pair.
    mi : mapping of pair key ('a~b') to MutualInformation, optional
        MI matrices from a second pass; semi and bipartite matching are run on them too.
    on_pair : callable, optional
        Called after each pair (for progress bars).
    """
    ranges = {k: tuple(v) for k, v in layer.unit_ranges.items()}
    nets = list(ranges)
    if len(nets) < 2:
        raise ConvergentError(
            f"Layer {layer.name!r} has statistics of {len(nets)} net; comparing needs at least 2. "
            "Train and collect more nets (e.g. --seeds 0 1)."
        )
    pairs = list(pairs) if pairs is not None else net_pairs(nets)
    moments = layer.moments
    corr = moments.corr()
    dead = moments.dead_units()
    result = LayerResult(layer.name)
    result.info = {
        "samples": int(moments.count),
        "units": {k: int(v[1] - v[0]) for k, v in ranges.items()},
        "dead_units": {k: int(((dead >= v[0]) & (dead < v[1])).sum()) for k, v in ranges.items()},
    }
    held_moments = held_out.moments if held_out is not None else None
    if held_moments is not None and held_moments.dim != moments.dim:
        raise ValueError(
            f"The held-out statistics of layer {layer.name!r} have {held_moments.dim} units, the "
            f"fitted ones {moments.dim}: they must come from the same nets."
        )
    records = []
    for a, b in pairs:
        key = pair_key(a, b)
        ra, rb = ranges[a], ranges[b]
        match = compare_pair(
            corr,
            ra,
            rb,
            names=(a, b),
            thresholds=settings.thresholds,
            unique_threshold=settings.unique_threshold,
            absolute=settings.absolute,
            dead=dead,
        )
        sparse = sparse_prediction(
            moments,
            np.arange(*ra),
            np.arange(*rb),
            settings.penalties,
            held_out=held_moments,
            n_penalties=settings.n_penalties,
            penalty_ratio=settings.penalty_ratio,
            tol=settings.sparse_tol,
            refit_k=settings.refit_k,
            min_variance_fraction=settings.min_variance_fraction,
        )
        live = np.ones(moments.dim, dtype=bool)
        live[dead] = False
        width = min(int(live[slice(*ra)].sum()), int(live[slice(*rb)].sum()))
        counts = [k for k in settings.clusters if k <= width]
        clusters = (
            cluster_pair(
                corr, ra, rb, counts, settings.seed, affinity=settings.affinity
            ).clusterings
            if counts
            else []
        )
        sparse_summary = sparse.to_dict(per_target=False)
        refit_by_k = {str(r["k"]): r for r in sparse_summary["refit"]["by_k"]}
        record = {
            "matching": match.to_dict(),
            "sparse": {
                "penalties": sparse.penalties.tolist(),
                "mean_error": sparse.mean_error().tolist(),
                "mean_nonzero": sparse.mean_nonzero().tolist(),
                "held_out_mean_error": (
                    sparse.mean_error(True).tolist() if sparse.held_out_error is not None else None
                ),
                "one_to_one_error": sparse_summary["one_to_one"]["mean_error"],
                "full_error": sparse_summary["full_linear"]["mean_error"],
                "held_out_one_to_one_error": sparse_summary["one_to_one"]["mean_held_out_error"],
                "held_out_full_error": sparse_summary["full_linear"]["mean_held_out_error"],
                "dead_targets": int(sparse.dead_target.sum()),
                "scoring": sparse_summary["scoring"],
                "refit": refit_by_k,
                "refit_convention": sparse_summary["refit"]["convention"],
                "one_to_one": sparse_summary["one_to_one"],
                "full_linear": sparse_summary["full_linear"],
                "at_nonzero": {
                    f"{k:g}": v for k, v in errors_at_nonzero(sparse, (1, 2, 4)).items()
                },
                "path": sparse_summary["path"],
            },
            "spectral": [
                {
                    "n_clusters": c.n_clusters,
                    "sizes_a": c.count_a.tolist(),
                    "sizes_b": c.count_b.tolist(),
                    "balance": c.balance_score,
                    "inside_abs_corr": c.within_corr,
                    "outside_abs_corr": c.between_corr,
                    "cluster_prediction_r2": c.mean_r2,
                }
                for c in clusters
            ],
        }
        if mi is not None and key in mi:
            info = mi[key]
            mi_semi = semi_matching(info.mi)
            mi_bip = bipartite_matching(info.mi)
            record["mi"] = {
                "semi_mean": mi_semi.mean,
                "bipartite_mean": mi_bip.mean,
                "mean_entropy_a": float(info.entropy_a.mean()),
                "agreement_with_correlation": float(
                    (mi_bip.partner == match.bipartite.partner).mean()
                ),
                "samples": info.samples,
                "bias_correction": info.bias_correction,
            }
            result.arrays[f"{key}/mi/matrix"] = info.mi.astype(np.float32)
            result.arrays[f"{key}/mi/semi_sorted"] = mi_semi.sorted_scores
            result.arrays[f"{key}/mi/bipartite_sorted"] = mi_bip.sorted_scores
            result.arrays[f"{key}/mi/bipartite_partner"] = mi_bip.partner
        result.pairs[key] = record
        records.append(
            {
                "matching": record["matching"],
                "sparse": {
                    "one_to_one_error": record["sparse"]["one_to_one_error"],
                    "full_error": record["sparse"]["full_error"],
                    "at_nonzero": record["sparse"]["at_nonzero"],
                    "refit": {
                        k: {
                            "fit": r["fit"],
                            "held_out": r["held_out"] or {},
                            "reached": r["reached"],
                            "mean_size": r["mean_size"],
                        }
                        for k, r in refit_by_k.items()
                    },
                    "scored": sparse_summary["scoring"]["scored"],
                    "one_to_one": {
                        split: v or {}
                        for split, v in sparse_summary["one_to_one"].items()
                        if split in ("fit", "held_out")
                    },
                    "full_linear": {
                        split: v or {}
                        for split, v in sparse_summary["full_linear"].items()
                        if split in ("fit", "held_out")
                    },
                },
                "spectral": {
                    str(c["n_clusters"]): {
                        "balance": c["balance"],
                        "inside_abs_corr": c["inside_abs_corr"],
                        "outside_abs_corr": c["outside_abs_corr"],
                    }
                    for c in record["spectral"]
                },
            }
        )
        for name, arr in match.arrays().items():
            result.arrays[f"{key}/matching/{name}"] = np.asarray(arr)
        result.arrays[f"{key}/sparse/penalties"] = sparse.penalties
        result.arrays[f"{key}/sparse/error"] = sparse.error
        result.arrays[f"{key}/sparse/nonzero"] = sparse.nonzero.astype(np.int64)
        result.arrays[f"{key}/sparse/coef"] = sparse.coef.astype(np.float32)
        if sparse.held_out_error is not None:
            result.arrays[f"{key}/sparse/held_out_error"] = sparse.held_out_error
        result.arrays[f"{key}/sparse/one_to_one_error"] = sparse.one_to_one_error
        result.arrays[f"{key}/sparse/full_linear_error"] = sparse.full_linear_error
        result.arrays[f"{key}/sparse/scored_target"] = sparse.scored_targets()
        if sparse.refit is not None:
            result.arrays[f"{key}/sparse/refit/k"] = sparse.refit.k
            result.arrays[f"{key}/sparse/refit/size"] = sparse.refit.size
            result.arrays[f"{key}/sparse/refit/error"] = sparse.refit.error
            if sparse.refit.held_out_error is not None:
                result.arrays[f"{key}/sparse/refit/held_out_error"] = sparse.refit.held_out_error
        for c in clusters:
            labels = np.concatenate([c.labels_a, c.labels_b])
            result.arrays[f"{key}/spectral/{c.n_clusters}/labels"] = labels
            result.arrays[f"{key}/spectral/{c.n_clusters}/order"] = c.order
        if on_pair is not None:
            on_pair(layer.name, key)
    result.summary = summarize_pairs(records)
    means = {net: moments.mean[slice(*ranges[net])] for net in nets}
    result.means = compare_means(means, seed=settings.seed).to_dict()
    for net, v in means.items():
        result.arrays[f"means/{net}"] = np.asarray(v)
    return result


def summary_row(result: LayerResult) -> dict[str, Any]:
    """The report's one row per layer (means over pairs, with spreads)."""
    s = result.summary

    def get(key: str, stat: str = "mean") -> float:
        return float(s[key][stat]) if key in s else float("nan")

    row = {
        "layer": result.layer,
        "units": max(result.info["units"].values()),
        "semi": get("matching/semi_mean"),
        "semi_std": get("matching/semi_mean", "std"),
        "bipartite": get("matching/bipartite_mean"),
        "bipartite_std": get("matching/bipartite_mean", "std"),
        "within": (get("matching/within_a_mean") + get("matching/within_b_mean")) / 2,
        "above_0.9": get("matching/bipartite_above/0.9"),
        "above_0.5": get("matching/bipartite_above/0.5"),
        "sparse_1": get("sparse/at_nonzero/1/error"),
        "sparse_2": get("sparse/at_nonzero/2/error"),
        "sparse_4": get("sparse/at_nonzero/4/error"),
        "one_to_one": get("sparse/one_to_one_error"),
        "full_linear": get("sparse/full_error"),
        **_refit_columns(s),
        "mean_act_ks": float(result.means.get("between_ks_mean", 0.0)),
        "mean_act_ks_within": float(result.means.get("within_ks", 0.0)),
    }
    balances = [k for k in s if k.startswith("spectral/") and k.endswith("/balance")]
    if balances:
        # the largest cluster count analysed
        best = max(balances, key=lambda k: int(k.split("/")[1]))
        row["cluster_balance"] = float(s[best]["mean"])
        row["clusters"] = int(best.split("/")[1])
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}


def _refit_columns(summary: Mapping[str, Any]) -> dict[str, float]:
    """Row columns of the sparse headline: per k the refit's mean and median (fit split, and
    held-out split when analysed), the share of scored targets whose support reached k, and the
    one-to-one / full-linear references on the same targets (means over pairs)."""

    def get(key: str) -> float:
        return float(summary[key]["mean"]) if key in summary else float("nan")

    row = {}
    ks = sorted({int(k.split("/")[2]) for k in summary if k.startswith("sparse/refit/")})
    scored = get("sparse/scored")
    for k in ks:
        base = f"sparse/refit/{k}"
        for split, suffix in (("fit", ""), ("held_out", "_held_out")):
            row[f"refit_{k}{suffix}"] = get(f"{base}/{split}/mean")
            row[f"refit_{k}{suffix}_median"] = get(f"{base}/{split}/median")
        row[f"refit_{k}_reached"] = get(f"{base}/reached") / scored if scored > 0 else float("nan")
    for name in ("one_to_one", "full_linear"):
        for split, suffix in (("fit", ""), ("held_out", "_held_out")):
            row[f"{name}_scored{suffix}"] = get(f"sparse/{name}/{split}/mean")
            row[f"{name}_scored{suffix}_median"] = get(f"sparse/{name}/{split}/median")
    row["sparse_scored_targets"] = scored
    return row


def layer_summary_table(results: Mapping[str, LayerResult]) -> list[dict[str, Any]]:
    return [summary_row(r) for r in results.values()]
