"""Every analysis of one layer over every pair of nets, in one loop: the unit of work of
``convergent analyze``, returned as typed results.

Pure: takes a layer's statistics (any object with ``name``, ``moments`` -- joint over all nets --,
``unit_ranges``; optionally ``mi`` histograms and ``patches``), returns a :class:`LayerAnalysis`.
Pairs are unordered (A before B in net order); semi-matching is reported in both directions.
Per pair: one-to-one matching (correlation, and mutual information where histograms were
collected), one-to-many sparse prediction, many-to-many spectral clustering and every whole-layer
similarity metric. Array fields are marked (``metadata={"array": True}``) so that
``convergent.results`` stores them as arrays and everything else as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from convergent._errors import ConvergentError
from convergent.analysis._joint import pair_blocks
from convergent.analysis._means import compare_means
from convergent.analysis._mi import mutual_information_matrix
from convergent.analysis._one_to_one import (
    bipartite_matching,
    compare_pair,
    rotation_control,
    semi_matching,
)
from convergent.analysis._refit import REFIT_CONVENTION
from convergent.analysis._similarity import (
    SimilaritySettings,
    pair_similarity,
    scalars,
    similarity_from_pairs,
)
from convergent.analysis._sparse import (
    DEFAULT_REFIT_K,
    MIN_VARIANCE_FRACTION,
    errors_at_nonzero,
    sparse_prediction,
)
from convergent.analysis._spectral import cluster_pair


def array_field(**kwargs: Any) -> Any:
    """A dataclass field that holds an array (stored in the results' safetensors files)."""
    return field(metadata={"array": True}, **kwargs)


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
    #: mean numbers of predictors at which the (shrunk) Lasso path is also read
    sparse_k: tuple[int, ...] = (1, 2, 4)
    #: numbers of units of the least-squares refit on the Lasso support (the headline columns)
    refit_k: tuple[int, ...] = DEFAULT_REFIT_K
    #: targets whose fit variance is below this fraction of the median live target's are left
    #: out of the one-to-many summaries (see convergent.analysis._sparse)
    min_variance_fraction: float = MIN_VARIANCE_FRACTION
    clusters: tuple[int, ...] = (2, 4, 8, 16)
    affinity: str = "absolute"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.thresholds or not all(-1 <= t <= 1 for t in self.thresholds):
            raise ValueError(
                "The 'thresholds' parameter of AnalysisSettings must hold correlations in [-1, 1]. "
                f"Got {self.thresholds!r} instead."
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


@dataclass
class OneToOne:
    """Semi and bipartite matching of one pair on correlation (Li et al. section 3).

    Means and shares are over live units (dead ones have no signal and are left out); the
    ``*_all_units`` means count every unit, a dead one with correlation 0, as the paper's numbers
    (which do not leave units out) would.
    """

    units_a: int
    units_b: int
    dead_a: int
    dead_b: int
    semi: float
    semi_reverse: float
    bipartite: float
    within_a: float
    within_b: float
    agreement: float
    #: threshold (as text, e.g. "0.5") -> share of live A units whose bipartite partner
    #: correlates at least that well
    above: dict[str, float]
    semi_above: dict[str, float]
    unique_threshold: float
    unique_a: int
    unique_b: int
    semi_all_units: float
    bipartite_all_units: float
    #: the bipartite match against randomly rotated copies of B (see ``rotation_control``): what a
    #: shared subspace gives without a shared basis
    bipartite_rotated: float
    semi_partner: np.ndarray = array_field()
    semi_score: np.ndarray = array_field()
    semi_sorted: np.ndarray = array_field()
    bipartite_partner: np.ndarray = array_field()
    bipartite_score: np.ndarray = array_field()
    bipartite_sorted: np.ndarray = array_field()
    bipartite_permutation: np.ndarray = array_field()
    within_a_sorted: np.ndarray = array_field()
    within_b_sorted: np.ndarray = array_field()


@dataclass
class SparseAtK:
    """The (shrunk) Lasso path read where its mean number of predictors is closest to ``k``: the
    old read-out, kept for comparison; the headline is :class:`Refit`."""

    k: int
    penalty: float
    mean_nonzero: float
    error: float
    held_out_error: float | None


@dataclass
class Refit:
    """The least-squares refit on the Lasso support with at most ``k`` units (relaxed Lasso):
    errors 1 - R^2 over the scored targets, on the fit split and (same coefficients) on the
    held-out split; how many targets' supports reached ``k`` units, and their mean size."""

    k: int
    mean: float
    median: float
    held_out_mean: float | None
    held_out_median: float | None
    reached: int
    scored: int
    mean_size: float


@dataclass
class OneToMany:
    """Sparse prediction of B's units from A's (Li et al. section 4), over a path of L1 penalties.

    Errors are ``1 - R^2``, means (and medians) over the *scored* targets: live in the fit split,
    with fit variance at least ``scoring["min_variance_fraction"]`` of the median live target's
    (near-dead units would dominate held-out means otherwise). Unprefixed values are fitted and
    scored on the fit split; ``held_out_*`` are the same fits scored on held-out statistics (None
    without them). ``refit`` is the headline (least squares on the Lasso support, no shrinkage);
    ``at_k`` the shrunk Lasso read-out.
    """

    one_to_one: float
    full: float
    held_out_one_to_one: float | None
    held_out_full: float | None
    one_to_one_median: float
    full_median: float
    held_out_one_to_one_median: float | None
    held_out_full_median: float | None
    dead_targets: int
    scoring: dict[str, Any]
    refit: list[Refit]
    refit_convention: str
    at_k: list[SparseAtK]
    penalties: np.ndarray = array_field()
    mean_error: np.ndarray = array_field()
    mean_nonzero: np.ndarray = array_field()
    held_out_mean_error: np.ndarray | None = array_field(default=None)
    error: np.ndarray | None = array_field(default=None)
    held_out_error: np.ndarray | None = array_field(default=None)
    nonzero: np.ndarray | None = array_field(default=None)
    coef: np.ndarray | None = array_field(default=None)
    one_to_one_error: np.ndarray | None = array_field(default=None)
    full_error: np.ndarray | None = array_field(default=None)
    live_target: np.ndarray | None = array_field(default=None)
    scored_target: np.ndarray | None = array_field(default=None)
    refit_size: np.ndarray | None = array_field(default=None)
    refit_error: np.ndarray | None = array_field(default=None)
    refit_held_out_error: np.ndarray | None = array_field(default=None)


@dataclass
class Clusters:
    """One spectral clustering of both nets' units together (Li et al. section 5)."""

    n_clusters: int
    sizes_a: list[int]
    sizes_b: list[int]
    balance: float
    inside_abs_corr: float | None
    outside_abs_corr: float | None
    cluster_prediction_r2: float
    labels: np.ndarray = array_field()
    order: np.ndarray = array_field()


@dataclass
class MutualInformationMatching:
    """Semi and bipartite matching on mutual information (nats), from collected histograms."""

    semi: float
    bipartite: float
    mean_entropy_a: float
    agreement_with_correlation: float
    samples: int
    bias_correction: str | None
    matrix: np.ndarray = array_field()
    semi_sorted: np.ndarray = array_field()
    bipartite_sorted: np.ndarray = array_field()
    bipartite_partner: np.ndarray = array_field()


@dataclass
class PairAnalysis:
    """Everything measured for one pair of nets at one layer."""

    pair: str
    net_a: str
    net_b: str
    one_to_one: OneToOne
    one_to_many: OneToMany
    many_to_many: list[Clusters]
    #: every whole-layer metric of :data:`METRICS` (None where undefined)
    similarity: dict[str, float | None]
    mutual_information: MutualInformationMatching | None = None


@dataclass
class LayerAnalysis:
    """Everything measured at one layer: per pair, the layer's statistics summary, the
    distribution of unit means, whole-layer similarity matrices, and the data the report draws
    (joint correlation matrix, unit means, top-input patches)."""

    name: str
    samples: int
    map_shape: list[int]
    units: dict[str, int]
    dead_units: dict[str, int]
    pairs: dict[str, PairAnalysis]
    means: dict[str, Any]
    similarity: dict[str, Any]
    correlation: np.ndarray = array_field()
    unit_means: dict[str, np.ndarray] = array_field(default_factory=dict)
    patch_units: np.ndarray | None = array_field(default=None)
    patch_images: np.ndarray | None = array_field(default=None)
    patch_tokens: np.ndarray | None = array_field(default=None)


def pair_key(a: str, b: str) -> str:
    return f"{a}~{b}"


def net_pairs(nets: Sequence[str]) -> list[tuple[str, str]]:
    return list(combinations(nets, 2))


def _one_to_one(
    moments: Any, corr: np.ndarray, dead: np.ndarray, ra: Any, rb: Any, names: Any, s: Any
) -> Any:
    kwargs = {
        "names": names,
        "thresholds": s.thresholds,
        "unique_threshold": s.unique_threshold,
        "absolute": s.absolute,
    }
    match = compare_pair(corr, ra, rb, dead=dead, **kwargs)
    every = compare_pair(corr, ra, rb, dead=(), **kwargs)
    d = match.to_dict()
    arrays = match.arrays()
    result = OneToOne(
        units_a=d["units_a"],
        units_b=d["units_b"],
        dead_a=d["dead_a"],
        dead_b=d["dead_b"],
        semi=d["semi_mean"],
        semi_reverse=d["semi_reverse_mean"],
        bipartite=d["bipartite_mean"],
        within_a=d["within_a_mean"],
        within_b=d["within_b_mean"],
        agreement=d["agreement"],
        above=dict(d["bipartite_above"]),
        semi_above=dict(d["semi_above"]),
        unique_threshold=d["unique_threshold"],
        unique_a=d["unique_a"],
        unique_b=d["unique_b"],
        semi_all_units=every.semi.mean,
        bipartite_all_units=every.bipartite.mean,
        bipartite_rotated=rotation_control(
            moments, ra, rb, dead=dead, seed=s.seed, absolute=s.absolute
        ),
        semi_partner=arrays["semi_partner"],
        semi_score=arrays["semi_score"],
        semi_sorted=arrays["semi_sorted"],
        bipartite_partner=arrays["bipartite_partner"],
        bipartite_score=arrays["bipartite_score"],
        bipartite_sorted=arrays["bipartite_sorted"],
        bipartite_permutation=arrays["bipartite_permutation"],
        within_a_sorted=np.sort(match.within_a)[::-1],
        within_b_sorted=np.sort(match.within_b)[::-1],
    )
    return result, match


def _summary(entry: Any, key: str) -> float | None:
    return None if entry is None else entry.get(key)


def _one_to_many(moments: Any, held: Any, ra: Any, rb: Any, s: AnalysisSettings) -> OneToMany:
    sparse = sparse_prediction(
        moments,
        np.arange(*ra),
        np.arange(*rb),
        s.penalties,
        held_out=held,
        n_penalties=s.n_penalties,
        penalty_ratio=s.penalty_ratio,
        tol=s.sparse_tol,
        refit_k=s.refit_k,
        min_variance_fraction=s.min_variance_fraction,
    )
    has_held = sparse.held_out_error is not None
    refs = sparse.reference_summary()
    one, full = refs["one_to_one"], refs["full_linear"]
    at_k = [
        SparseAtK(int(k), v["penalty"], v["mean_nonzero"], v["error"], v["held_out_error"])
        for k, v in errors_at_nonzero(sparse, s.sparse_k).items()
    ]
    refit = [
        Refit(
            k=r["k"],
            mean=r["fit"]["mean"],
            median=r["fit"]["median"],
            held_out_mean=_summary(r["held_out"], "mean"),
            held_out_median=_summary(r["held_out"], "median"),
            reached=r["reached"],
            scored=r["scored"],
            mean_size=r["mean_size"],
        )
        for r in sparse.refit_summary()
    ]
    return OneToMany(
        one_to_one=one["fit"]["mean"],
        full=full["fit"]["mean"],
        held_out_one_to_one=_summary(one["held_out"], "mean"),
        held_out_full=_summary(full["held_out"], "mean"),
        one_to_one_median=one["fit"]["median"],
        full_median=full["fit"]["median"],
        held_out_one_to_one_median=_summary(one["held_out"], "median"),
        held_out_full_median=_summary(full["held_out"], "median"),
        dead_targets=int(sparse.dead_target.sum()),
        scoring=sparse.scoring(),
        refit=refit,
        refit_convention=REFIT_CONVENTION,
        at_k=at_k,
        penalties=sparse.penalties,
        mean_error=sparse.mean_error(),
        mean_nonzero=sparse.mean_nonzero(),
        held_out_mean_error=sparse.mean_error(True) if has_held else None,
        error=sparse.error,
        held_out_error=sparse.held_out_error,
        nonzero=sparse.nonzero.astype(np.int64),
        coef=sparse.coef.astype(np.float32),
        one_to_one_error=sparse.one_to_one_error,
        full_error=sparse.full_linear_error,
        live_target=~sparse.dead_target,
        scored_target=sparse.scored_targets(),
        refit_size=sparse.refit.size if sparse.refit is not None else None,
        refit_error=sparse.refit.error if sparse.refit is not None else None,
        refit_held_out_error=sparse.refit.held_out_error if sparse.refit is not None else None,
    )


def _many_to_many(corr: np.ndarray, live: np.ndarray, ra: Any, rb: Any, s: Any) -> list[Clusters]:
    width = min(int(live[slice(*ra)].sum()), int(live[slice(*rb)].sum()))
    counts = [k for k in s.clusters if k <= width]
    if not counts:
        return []
    result = cluster_pair(corr, ra, rb, counts, s.seed, affinity=s.affinity)
    return [
        Clusters(
            n_clusters=c.n_clusters,
            sizes_a=c.count_a.tolist(),
            sizes_b=c.count_b.tolist(),
            balance=c.balance_score,
            inside_abs_corr=c.within_corr,
            outside_abs_corr=c.between_corr,
            cluster_prediction_r2=c.mean_r2,
            labels=np.concatenate([c.labels_a, c.labels_b]),
            order=c.order,
        )
        for c in result.clusterings
    ]


def _mutual_information(source: Any, bipartite_partner: np.ndarray) -> MutualInformationMatching:
    """MI matching from a ``JointHistogram`` (or an already computed ``MutualInformation``)."""
    info = mutual_information_matrix(source) if hasattr(source, "table") else source
    semi, bip = semi_matching(info.mi), bipartite_matching(info.mi)
    return MutualInformationMatching(
        semi=semi.mean,
        bipartite=bip.mean,
        mean_entropy_a=float(info.entropy_a.mean()),
        agreement_with_correlation=float((bip.partner == bipartite_partner).mean()),
        samples=info.samples,
        bias_correction=info.bias_correction,
        matrix=info.mi.astype(np.float32),
        semi_sorted=semi.sorted_scores,
        bipartite_sorted=bip.sorted_scores,
        bipartite_partner=bip.partner,
    )


def _patch_units(pairs: Mapping[str, PairAnalysis], ranges: Mapping[str, Any]) -> np.ndarray:
    """Joint units whose patches the report can show: each pair's best, median and worst
    bipartite-matched live units of A and their partners in B."""
    units: set[int] = set()
    for p in pairs.values():
        partner, score = p.one_to_one.bipartite_partner, p.one_to_one.bipartite_score
        live = np.flatnonzero(partner >= 0)
        if live.size == 0:
            continue
        ranked = live[np.argsort(-score[live], kind="stable")]
        for u in (ranked[0], ranked[len(ranked) // 2], ranked[-1]):
            units.add(int(ranges[p.net_a][0] + u))
            units.add(int(ranges[p.net_b][0] + partner[u]))
    return np.array(sorted(units), dtype=np.int64)


def analyze_layer(
    layer: Any,
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    held_out: Any = None,
    fit: Any = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    mi: Mapping[str, Any] | None = None,
    similarity: SimilaritySettings | None = None,
    on_pair: Any = None,
) -> LayerAnalysis:
    """One-to-one, one-to-many, many-to-many, mean-activation and whole-layer analyses of a layer.

    Parameters
    ----------
    layer : LayerStatistics-like
        ``name``, ``moments`` (joint over all nets) and ``unit_ranges`` ({net: (start, stop)});
        optionally ``mi`` (joint histograms by pair key) and ``patches`` (top-k crops).
    held_out : LayerStatistics-like, optional
        The same layer's statistics on other data: one-to-many prediction is scored there too.
    fit : LayerStatistics-like, optional
        The statistics one-to-many prediction is fitted on (default: ``layer``; e.g. the training
        split, with ``held_out=layer`` to score it on the layer's own inputs).
    pairs : sequence of (net_a, net_b), optional
        Default: every unordered pair.
    mi : mapping of pair key ('a~b') to JointHistogram or MutualInformation, optional
        Default: ``layer.mi``; semi and bipartite matching are run on the MI matrices too.
    similarity : SimilaritySettings, optional
        Settings of the whole-layer metrics.
    on_pair : callable, optional
        Called after each pair (for progress bars).
    """
    ranges = {k: (int(v[0]), int(v[1])) for k, v in layer.unit_ranges.items()}
    nets = list(ranges)
    if len(nets) < 2:
        raise ConvergentError(
            f"Layer {layer.name!r} has statistics of {len(nets)} net; comparing needs at least 2. "
            "Train and collect more nets (e.g. --seeds 0 1)."
        )
    all_pairs = pairs is None
    pairs = list(pairs) if pairs is not None else net_pairs(nets)
    moments = layer.moments
    fit_moments = fit.moments if fit is not None else moments
    held_moments = held_out.moments if held_out is not None else None
    for other, what in ((held_moments, "held-out"), (fit_moments, "fitted")):
        if other is not None and other.dim != moments.dim:
            raise ValueError(
                f"The {what} statistics of layer {layer.name!r} have {other.dim} units, the "
                f"analysed ones {moments.dim}: they must come from the same nets."
            )
    mi = dict(mi if mi is not None else getattr(layer, "mi", None) or {})
    sim_settings = similarity or SimilaritySettings()
    corr = moments.corr()
    dead = moments.dead_units()
    live = np.ones(moments.dim, dtype=bool)
    live[dead] = False
    results: dict[str, PairAnalysis] = {}
    table: dict[tuple[str, str], Any] = {}
    for a, b in pairs:
        key = pair_key(a, b)
        ra, rb = ranges[a], ranges[b]
        one, match = _one_to_one(moments, corr, dead, ra, rb, (a, b), settings)
        blocks = pair_blocks(moments, nets=(a, b), unit_ranges=ranges)
        table[(a, b)] = pair_similarity(blocks, sim_settings)
        info = _mutual_information(mi[key], match.bipartite.partner) if key in mi else None
        results[key] = PairAnalysis(
            pair=key,
            net_a=a,
            net_b=b,
            one_to_one=one,
            one_to_many=_one_to_many(fit_moments, held_moments, ra, rb, settings),
            many_to_many=_many_to_many(corr, live, ra, rb, settings),
            similarity=scalars(table[(a, b)]),
            mutual_information=info,
        )
        if on_pair is not None:
            on_pair(layer.name, key)
    unit_means = {net: np.asarray(moments.mean[slice(*ranges[net])]) for net in nets}
    patches = getattr(layer, "patches", None)
    patch_units = patch_images = patch_tokens = None
    if patches:
        patch_units = _patch_units(results, ranges)
        if "image" in patches:
            patch_images = np.asarray(patches["image"])[patch_units]
        if "tokens" in patches:
            patch_tokens = np.asarray(patches["tokens"])[patch_units]
    return LayerAnalysis(
        name=layer.name,
        samples=int(moments.count),
        map_shape=[int(v) for v in getattr(layer, "map_shape", ())],
        units={k: int(v[1] - v[0]) for k, v in ranges.items()},
        dead_units={k: int(((dead >= v[0]) & (dead < v[1])).sum()) for k, v in ranges.items()},
        pairs=results,
        means=compare_means(unit_means, seed=settings.seed).to_dict(),
        similarity=similarity_from_pairs(
            moments, ranges, table, sim_settings, layer=layer.name, matrices=all_pairs
        ),
        correlation=corr.astype(np.float32),
        unit_means=unit_means,
        patch_units=patch_units,
        patch_images=patch_images,
        patch_tokens=patch_tokens,
    )
