"""Every whole-layer similarity metric for every pair of nets of one layer: K x K matrices and one
JSON-able summary (what the report reads).

Pure: takes a layer's joint moments (``Moments``, or ``KernelMoments`` for debiased CKA) and the
nets' unit ranges. Per pair: linear and debiased CKA, CCA (mean and spectrum), SVCCA, PWCCA (weights
from either net), the angular shape metric and Procrustes distance with rotations and with the unit
matching, and their gap ("basis alignment").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

from convergent.analysis._cca import cca_from_blocks, pwcca_from_cca
from convergent.analysis._cka import cka_from_blocks
from convergent.analysis._joint import PairBlocks, pair_blocks, resolve_ranges
from convergent.analysis._procrustes import BasisAlignment, fit_shape, score_shape
from convergent.stats._scores import ScoreMatrix, _jsonable

#: Scalar metrics of a pair, as named in matrices and summaries. Similarities (higher = more alike):
#: cka, debiased_cka, cca, svcca, pwcca; distances: angular, procrustes and their *_perm.
METRICS = (
    "cka",
    "debiased_cka",
    "cca",
    "svcca",
    "pwcca",
    "angular",
    "procrustes",
    "angular_perm",
    "procrustes_perm",
)
DISTANCES = ("angular", "procrustes", "angular_perm", "procrustes_perm")


@dataclass(frozen=True)
class SimilaritySettings:
    """Settings of the whole-layer metrics (recorded with every summary).

    Attributes
    ----------
    alpha : float
        Shape metrics' regularisation (netrep convention; 1 = Procrustes).
    eps : float
        CCA-family ridge relative to the mean variance (0: none; use > 0 with fewer samples
        than units).
    rtol : float
        CCA-family eigenvalue cut-off relative to the largest.
    variance : float
        SVCCA's share of variance kept.
    matching : {None, 'corr'}
        Permutation-constrained metrics: the best matching of whitened units (None) or Li et al.'s
        bipartite matching of correlations ('corr').
    """

    alpha: float = 1.0
    eps: float = 0.0
    rtol: float = 1e-10
    variance: float = 0.99
    matching: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_similarity(
    blocks: PairBlocks, settings: SimilaritySettings | None = None
) -> dict[str, Any]:
    """All metrics of one pair, as result objects (``debiased_cka`` is None without kernel sums)."""
    s = settings or SimilaritySettings()
    cca_kw = {"eps": s.eps, "rtol": s.rtol}
    rot = score_shape(fit_shape(blocks, alpha=s.alpha, group="rotation"), blocks)
    perm = score_shape(
        fit_shape(blocks, alpha=s.alpha, group="permutation", matching=s.matching), blocks
    )
    fitted = cca_from_blocks(blocks, method="cca", **cca_kw)
    return {
        "cka": cka_from_blocks(blocks),
        "debiased_cka": (
            cka_from_blocks(blocks, debiased=True)
            if blocks.norm_products is not None and blocks.count >= 4
            else None
        ),
        "cca": fitted,
        "svcca": cca_from_blocks(blocks, method="svcca", variance=s.variance, **cca_kw),
        "pwcca": pwcca_from_cca(fitted, blocks, weights_from="a"),
        "pwcca_b": pwcca_from_cca(fitted, blocks, weights_from="b"),
        "basis_alignment": BasisAlignment(rot, perm),
    }


def scalars(results: Mapping[str, Any]) -> dict[str, float | None]:
    """The scalar of every metric in :data:`METRICS` from :func:`pair_similarity`'s results."""
    basis = results["basis_alignment"]
    debiased = results["debiased_cka"]
    return {
        "cka": results["cka"].value,
        "debiased_cka": debiased.value if debiased is not None else None,
        "cca": results["cca"].value,
        "svcca": results["svcca"].value,
        "pwcca": results["pwcca"].value,
        "angular": basis.rotation.angular,
        "procrustes": basis.rotation.procrustes,
        "angular_perm": basis.permutation.angular,
        "procrustes_perm": basis.permutation.procrustes,
    }


def pairwise_matrix(
    moments: Any,
    metric: str,
    *,
    unit_ranges: Mapping[str, Any] | None = None,
    settings: SimilaritySettings | None = None,
) -> ScoreMatrix:
    """K x K matrix of one metric over every ordered pair of the nets in a layer's joint moments
    (the diagonal computed too: self-similarity / zero self-distance). For ``pwcca`` entry
    ``[i, j]`` takes its weights from net i."""
    if metric not in METRICS:
        raise ValueError(f"The 'metric' parameter must be one of {METRICS}. Got {metric!r}.")
    settings = settings or SimilaritySettings()
    ranges = resolve_ranges(moments, unit_ranges)
    nets = list(ranges)
    values = np.zeros((len(nets), len(nets)))
    for i, a in enumerate(nets):
        for j, b in enumerate(nets):
            if j < i and metric != "pwcca":
                values[i, j] = values[j, i]
                continue
            blocks = pair_blocks(moments, nets=(a, b), unit_ranges=ranges)
            values[i, j] = _one(blocks, metric, settings)
    return ScoreMatrix(metric, nets, nets, values)


def _one(blocks: PairBlocks, metric: str, s: SimilaritySettings) -> float:
    if metric in ("cka", "debiased_cka"):
        return cka_from_blocks(blocks, debiased=metric == "debiased_cka").value
    if metric in ("cca", "svcca", "pwcca"):
        return cca_from_blocks(
            blocks, method=metric, eps=s.eps, rtol=s.rtol, variance=s.variance
        ).value
    group = "permutation" if metric.endswith("_perm") else "rotation"
    matching = s.matching if group == "permutation" else None
    result = score_shape(fit_shape(blocks, alpha=s.alpha, group=group, matching=matching), blocks)
    return result.angular if metric.startswith("angular") else result.procrustes


def pair_key(a: str, b: str) -> str:
    return f"{a}~{b}"


def layer_similarity(
    moments: Any,
    unit_ranges: Mapping[str, Any] | None = None,
    *,
    settings: SimilaritySettings | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    layer: str | None = None,
) -> dict[str, Any]:
    """Every whole-layer metric for every pair of nets of one layer, as a JSON-able dict.

    Parameters
    ----------
    moments : Moments or KernelMoments
        The layer's joint moments over all nets' units (``LayerStatistics.moments``).
    unit_ranges : mapping of net to (start, stop), optional
        Default: the moments' own (``metadata['unit_ranges']``).
    settings : SimilaritySettings
    pairs : sequence of (net_a, net_b), optional
        Default: every unordered pair (then K x K matrices are included too).
    layer : str, optional
        The layer's name for the summary (default: ``metadata['layer']``).

    Returns
    -------
    dict
        ``layer``, ``nets``, ``samples``, ``units``, ``dead_units``, ``settings``, ``pairs``
        (per ``"a~b"``: every metric's ``to_dict()``, the ``scalars`` and the ``basis_alignment``),
        ``summary`` (the mean over pairs of every scalar and of the basis-alignment gap and
        ratio: the per-layer row), ``matrices`` (per metric of :data:`METRICS`: a K x K ``ScoreMatrix.to_dict()``; the
        diagonal is 1 for similarities and 0 for distances by definition; ``pwcca`` rows give the
        weights) and ``notes``.
    """
    settings = settings or SimilaritySettings()
    ranges = resolve_ranges(moments, unit_ranges)
    all_pairs = pairs is None
    pairs = list(combinations(ranges, 2)) if pairs is None else [tuple(p) for p in pairs]
    table = {
        (a, b): pair_similarity(pair_blocks(moments, nets=(a, b), unit_ranges=ranges), settings)
        for a, b in pairs
    }
    return similarity_from_pairs(moments, ranges, table, settings, layer=layer, matrices=all_pairs)


def similarity_from_pairs(
    moments: Any,
    ranges: Mapping[str, tuple[int, int]],
    table: Mapping[tuple[str, str], Mapping[str, Any]],
    settings: SimilaritySettings | None = None,
    *,
    layer: str | None = None,
    matrices: bool = True,
) -> dict[str, Any]:
    """:func:`layer_similarity`'s dict from the per-pair results already computed
    (``table[(a, b)] = pair_similarity(...)``), so one loop over pairs serves every analysis."""
    settings = settings or SimilaritySettings()
    nets = list(ranges)
    dead = moments.dead_units()
    notes = []
    width = max(stop - start for start, stop in ranges.values())
    if moments.count <= width:
        notes.append(
            f"fewer samples ({moments.count}) than units ({width}): CCA-family values tend to 1 "
            "unless eps > 0; whitened shape metrics (alpha < 1) likewise"
        )
    out: dict[str, Any] = {
        "layer": layer if layer is not None else moments.metadata.get("layer"),
        "nets": nets,
        "samples": int(moments.count),
        "units": {k: int(v[1] - v[0]) for k, v in ranges.items()},
        "dead_units": {k: int(((dead >= v[0]) & (dead < v[1])).sum()) for k, v in ranges.items()},
        "settings": settings.to_dict(),
        "pairs": {},
        "matrices": {},
        "notes": notes,
    }
    for (a, b), results in table.items():
        entry = {k: v.to_dict() for k, v in results.items() if v is not None}
        entry["scalars"] = scalars(results)
        out["pairs"][pair_key(a, b)] = entry
    out["summary"] = _summary(table)
    has_debiased = all(r["debiased_cka"] is not None for r in table.values())
    if not has_debiased:
        notes.append(
            "debiased_cka needs the kernel sums of a KernelMoments (collect with "
            "kernel_sums=True); left out"
        )
    if matrices:
        for metric in METRICS:
            if metric == "debiased_cka" and not has_debiased:
                continue
            values = np.full((len(nets), len(nets)), 0.0 if metric in DISTANCES else 1.0)
            for (a, b), results in table.items():
                i, j = nets.index(a), nets.index(b)
                values[i, j] = values[j, i] = scalars(results)[metric]
                if metric == "pwcca":
                    values[j, i] = results["pwcca_b"].value
            out["matrices"][metric] = ScoreMatrix(metric, nets, nets, values).to_dict()
    return _jsonable(out)


def _summary(table: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict[str, float | None]:
    rows = [scalars(r) for r in table.values()]
    out: dict[str, float | None] = {}
    for metric in METRICS:
        values = [row[metric] for row in rows if row[metric] is not None]
        out[metric] = float(np.mean(values)) if values else None
    basis = [r["basis_alignment"] for r in table.values()]
    for key in ("angular_gap", "procrustes_gap", "ratio"):
        values = [getattr(b, key) for b in basis]
        out[f"basis_alignment_{key}"] = float(np.mean(values)) if values else None
    return out
