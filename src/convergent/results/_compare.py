"""``convergent compare``'s verdict: one pair of nets, layer by layer, next to a reference level (the
seed-to-seed variation of a zoo, or the same architecture at initialisation), with thresholds a
training pipeline can fail on. A pure function of typed results, and its file ``compare.json``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import read_json, write_json
from convergent._manifest import header
from convergent.results._columns import summary_columns
from convergent.results._results import Results

COMPARE_FORMAT = "convergent-compare"
COMPARE_FILE = "compare.json"
#: Columns where a smaller value means more alike (errors and distances).
SMALLER_IS_CLOSER = (
    "one_to_one",
    "full_linear",
    "procrustes",
    "procrustes_perm",
    "refit_",
    "sparse_",
)


def closer_when_smaller(key: str) -> bool:
    """Whether a column measures a difference (smaller = more alike) rather than a similarity."""
    return any(key == k or (k.endswith("_") and key.startswith(k)) for k in SMALLER_IS_CLOSER)


@dataclass(frozen=True)
class Threshold:
    """``--fail-under LAYER:METRIC=VALUE``: the pair's METRIC at LAYER (``*``: every layer) must
    reach VALUE (be at least it; for errors and distances, at most it)."""

    layer: str
    metric: str
    value: float

    @classmethod
    def parse(cls, text: str) -> list[Threshold]:
        """``"fc7:cka=0.9,conv1:bipartite=0.6"`` -> thresholds."""
        out = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            where, sep, value = part.partition("=")
            layer, sep2, metric = where.partition(":")
            if not sep or not sep2 or not layer or not metric:
                raise ValueError(
                    f"A threshold is LAYER:METRIC=VALUE (e.g. fc7:cka=0.9, or *:bipartite=0.5). "
                    f"Got {part!r} instead."
                )
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"The value of threshold {part!r} must be a number.") from None
            out.append(cls(layer.strip(), metric.strip(), number))
        return out


@dataclass
class MetricComparison:
    """One metric of the pair at one layer, next to the reference."""

    value: float | None
    reference_mean: float | None
    reference_std: float | None
    reference_min: float | None
    reference_max: float | None
    #: the pair is less alike than every reference pair (below their minimum for similarities,
    #: above their maximum for errors and distances)
    outside_reference: bool


@dataclass
class Comparison:
    """A pair of nets compared layer by layer with a reference level."""

    pair: str
    reference_kind: str
    reference_pairs: list[str]
    layers: dict[str, dict[str, MetricComparison]]
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def compare_pair(
    results: Results,
    pair: str,
    reference_pairs: Sequence[str],
    *,
    reference_kind: str,
    thresholds: Sequence[Threshold] = (),
) -> Comparison:
    """Every per-pair summary column of ``pair`` at every layer, next to the same column over
    ``reference_pairs``; and which thresholds fail (naming layer, metric, value and threshold).

    Raises
    ------
    ValueError
        A pair that was not analysed, or a threshold naming an unknown layer or metric.
    """
    for key in [pair, *reference_pairs]:
        if key not in results.pairs:
            raise ValueError(f"Pair {key!r} was not analysed. Pairs: {results.pairs}.")
    columns = [c for c in summary_columns(results) if c.per_pair is not None]
    layers: dict[str, dict[str, MetricComparison]] = {}
    for name, layer in results.layers.items():
        entry = {}
        for col in columns:
            value = col.per_pair(layer.pairs[pair])
            refs = [col.per_pair(layer.pairs[k]) for k in reference_pairs]
            refs = [float(v) for v in refs if v is not None and np.isfinite(v)]
            outside = False
            if value is not None and refs:
                outside = value > max(refs) if closer_when_smaller(col.key) else value < min(refs)
            entry[col.key] = MetricComparison(
                value=None if value is None else float(value),
                reference_mean=float(np.mean(refs)) if refs else None,
                reference_std=float(np.std(refs)) if refs else None,
                reference_min=min(refs) if refs else None,
                reference_max=max(refs) if refs else None,
                outside_reference=bool(outside),
            )
        layers[name] = entry
    known = {c.key for c in columns}
    failed = []
    for t in thresholds:
        if t.metric not in known:
            raise ValueError(
                f"Unknown metric {t.metric!r} in threshold {t.layer}:{t.metric}={t.value:g}. "
                f"Metrics: {', '.join(sorted(known))}."
            )
        targets = list(layers) if t.layer == "*" else [t.layer]
        for name in targets:
            if name not in layers:
                raise ValueError(
                    f"Unknown layer {name!r} in threshold {t.layer}:{t.metric}={t.value:g}. "
                    f"Layers: {', '.join(layers)}."
                )
            value = layers[name][t.metric].value
            smaller = closer_when_smaller(t.metric)
            bad = value is None or (value > t.value if smaller else value < t.value)
            if bad:
                relation = "above" if smaller else "below"
                shown = "undefined" if value is None else f"{value:.4f}"
                failed.append(f"{name}: {t.metric} = {shown} is {relation} {t.value:g}")
    return Comparison(
        pair=pair,
        reference_kind=reference_kind,
        reference_pairs=list(reference_pairs),
        layers=layers,
        thresholds=[asdict(t) for t in thresholds],
        failed=failed,
    )


def save_comparison(directory: str | os.PathLike, comparison: Comparison) -> Path:
    path = Path(directory) / COMPARE_FILE
    write_json(path, {**header(COMPARE_FORMAT, 1), **asdict(comparison)})
    return path


def load_comparison(directory: str | os.PathLike) -> Comparison:
    """Read ``compare.json`` from a ``convergent compare`` output directory."""
    path = Path(directory) / COMPARE_FILE
    if not path.is_file():
        raise ConvergentError(
            f"{directory} holds no {COMPARE_FILE}; run `convergent compare` first."
        )
    data = read_json(path)
    if not isinstance(data, Mapping) or data.get("format") != COMPARE_FORMAT:
        raise CorruptFileError(f"{path} is not a convergent comparison.")
    try:
        layers = {
            name: {k: MetricComparison(**v) for k, v in metrics.items()}
            for name, metrics in data["layers"].items()
        }
        return Comparison(
            pair=data["pair"],
            reference_kind=data["reference_kind"],
            reference_pairs=list(data["reference_pairs"]),
            layers=layers,
            thresholds=list(data.get("thresholds", [])),
            failed=list(data.get("failed", [])),
            seconds=dict(data.get("seconds", {})),
        )
    except (KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path} lacks {exc}; re-run `convergent compare`.") from exc
