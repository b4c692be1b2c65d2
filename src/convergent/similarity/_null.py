"""Calibration: what a similarity value is worth next to a null level, and on held-out data.

- :func:`init_null`: the same metrics between the nets *at initialisation* (untrained, same seeds),
  from their own moments: what architecture and input statistics give before any learning.
- :func:`shuffled_null` (arrays) and :class:`ShuffledPairs` (streaming): a net against another whose
  samples are paired with *other* inputs. ``ShuffledPairs`` takes net k's rows from k inputs further
  along in the same batch (cyclically), so every pair of nets is mispaired and positions within a
  map stay aligned; batches with fewer inputs than nets are skipped (counted). Within-batch pairing
  assumes batches hold unrelated inputs (shuffled data); sorted data would leak structure.
- :func:`held_out_similarity`: whatever is fitted (CCA directions, shape alignment, unit matching)
  on one set of moments, scored on another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

from convergent.similarity._accumulate import KernelMoments
from convergent.similarity._cca import cca_from_blocks, cca_held_out
from convergent.similarity._joint import joint_moments, pair_blocks, resolve_ranges
from convergent.similarity._layer import (
    SimilaritySettings,
    layer_similarity,
    pair_key,
    pair_similarity,
    scalars,
)
from convergent.similarity._procrustes import fit_shape, score_shape
from convergent.similarity._result import _jsonable


def init_null(
    trained: Any,
    untrained: Any,
    *,
    unit_ranges: Mapping[str, Any] | None = None,
    settings: SimilaritySettings | None = None,
) -> dict[str, Any]:
    """Every metric on the trained nets and on the same nets at initialisation, and the excess.

    Parameters
    ----------
    trained, untrained : Moments
        One layer's joint moments of the trained nets and of the untrained ones (same seeds,
        same data, same unit ranges).

    Returns
    -------
    dict
        ``observed`` and ``null`` (:func:`layer_similarity` summaries) and ``excess``: per pair,
        observed minus null for every scalar metric (for distances a negative excess means the
        trained nets are closer than at initialisation).

    Raises
    ------
    ValueError
        If the two moments hold different nets or widths.
    """
    settings = settings or SimilaritySettings()
    ranges = resolve_ranges(trained, unit_ranges)
    null_ranges = resolve_ranges(untrained, unit_ranges)
    if ranges != null_ranges:
        raise ValueError(
            f"The trained and untrained moments must hold the same nets and units. Got {ranges} "
            f"and {null_ranges} instead."
        )
    observed = layer_similarity(trained, ranges, settings=settings)
    null = layer_similarity(untrained, ranges, settings=settings)
    excess = {}
    for key, entry in observed["pairs"].items():
        obs, ref = entry["scalars"], null["pairs"][key]["scalars"]
        excess[key] = {
            m: (obs[m] - ref[m]) if obs[m] is not None and ref[m] is not None else None for m in obs
        }
    return {"null_kind": "initialisation", "observed": observed, "null": null, "excess": excess}


def shuffled_null(
    x: Any,
    y: Any,
    *,
    repeats: int = 3,
    seed: int = 0,
    settings: SimilaritySettings | None = None,
) -> dict[str, Any]:
    """Every metric between ``x`` and row-shuffled ``y`` (inputs mispaired), ``repeats`` times.

    Parameters
    ----------
    x, y : (n, d_A), (n, d_B) arrays
        Two nets' activations on the same inputs (rows).

    Returns
    -------
    dict
        Per metric: ``values`` (one per shuffle), ``mean``, ``std``; and the settings.
    """
    if isinstance(repeats, bool) or int(repeats) != repeats or repeats < 1:
        raise ValueError(f"The 'repeats' parameter must be an integer >= 1. Got {repeats!r}.")
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    settings = settings or SimilaritySettings()
    rng = np.random.default_rng(seed)
    runs: dict[str, list[float]] = {}
    for _ in range(int(repeats)):
        blocks = pair_blocks(joint_moments({"a": x, "b": y[rng.permutation(y.shape[0])]}))
        for metric, value in scalars(pair_similarity(blocks, settings)).items():
            if value is not None:
                runs.setdefault(metric, []).append(value)
    summary = {
        m: {"values": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
        for m, v in runs.items()
    }
    return _jsonable(
        {"null_kind": "shuffled", "repeats": int(repeats), "seed": seed, "metrics": summary}
    )


class ShuffledPairs:
    """Joint moments of K nets with net k's samples paired with other inputs (pure data).

    Parameters
    ----------
    unit_ranges : mapping of net to (start, stop)
        The nets' units among the joint units (in order; net k is rolled by k inputs).
    exact : bool
        As for ``Moments``.

    Attributes
    ----------
    moments : KernelMoments
        The mispaired joint moments (give them to any metric).
    skipped : int
        Batches with fewer inputs than nets.
    """

    def __init__(self, unit_ranges: Mapping[str, Any], *, exact: bool = False) -> None:
        ranges = {str(k): (int(v[0]), int(v[1])) for k, v in unit_ranges.items()}
        if not ranges:
            raise ValueError("The 'unit_ranges' parameter of ShuffledPairs must name the nets.")
        dim = max(stop for _, stop in ranges.values())
        self.moments = KernelMoments(dim, ranges, exact=exact)
        self.skipped = 0

    def update(self, x: Any, samples_per_input: int = 1) -> ShuffledPairs:
        """Add a batch of joint samples (n, D), input-major: rows ``i * P + p`` are input i."""
        n = int(x.shape[0])
        if samples_per_input < 1 or n % samples_per_input:
            raise ValueError(
                f"A batch of {n} samples is not a whole number of inputs of {samples_per_input} "
                "samples each."
            )
        ranges = list(self.moments.unit_ranges.values())
        if n // samples_per_input < len(ranges):
            self.skipped += 1
            return self
        parts = []
        for k, (start, stop) in enumerate(ranges):
            shift = k * samples_per_input
            if isinstance(x, torch.Tensor):
                parts.append(torch.roll(x[:, start:stop], shift, dims=0))
            else:
                parts.append(np.roll(np.asarray(x)[:, start:stop], shift, axis=0))
        joint = torch.cat(parts, 1) if isinstance(x, torch.Tensor) else np.concatenate(parts, 1)
        self.moments.update(joint)
        return self

    def merge(self, other: ShuffledPairs) -> ShuffledPairs:
        """Fold in another shard (same nets); returns ``self``."""
        if not isinstance(other, ShuffledPairs):
            raise TypeError(
                f"ShuffledPairs.merge expects a ShuffledPairs. Got {type(other).__name__}."
            )
        self.moments.merge(other.moments)
        self.skipped += other.skipped
        return self


def held_out_similarity(
    fit: Any,
    score: Any,
    *,
    unit_ranges: Mapping[str, Any] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    settings: SimilaritySettings | None = None,
) -> dict[str, Any]:
    """Fitted metrics on ``fit`` and scored on ``score`` (the same layer on other inputs).

    For every pair: CCA, SVCCA and PWCCA directions, the shape metric's whitening and rotation and
    the unit matching are fitted on ``fit``; each value is reported on ``fit`` and on ``score``.

    Returns
    -------
    dict
        Per ``"a~b"``, per metric, ``{"fit": value, "held_out": value}``.

    Raises
    ------
    ValueError
        If ``fit`` and ``score`` hold different nets or widths.
    """
    ranges = resolve_ranges(fit, unit_ranges)
    if resolve_ranges(score, unit_ranges) != ranges:
        raise ValueError(
            "The fitted and held-out moments must hold the same nets and units; got "
            f"{ranges} and {resolve_ranges(score, unit_ranges)}."
        )
    pairs = list(combinations(ranges, 2)) if pairs is None else [tuple(p) for p in pairs]
    s = settings or SimilaritySettings()
    out = {}
    for a, b in pairs:
        fitted_blocks = pair_blocks(fit, nets=(a, b), unit_ranges=ranges)
        held_blocks = pair_blocks(score, nets=(a, b), unit_ranges=ranges)
        entry = {}
        for method in ("cca", "svcca", "pwcca"):
            res = cca_from_blocks(
                fitted_blocks, method=method, eps=s.eps, rtol=s.rtol, variance=s.variance
            )
            entry[method] = {"fit": res.value, "held_out": cca_held_out(res, held_blocks).value}
        for group in ("rotation", "permutation"):
            matching = s.matching if group == "permutation" else None
            alignment = fit_shape(fitted_blocks, alpha=s.alpha, group=group, matching=matching)
            on_fit, on_held = (
                score_shape(alignment, fitted_blocks),
                score_shape(alignment, held_blocks),
            )
            suffix = "" if group == "rotation" else "_perm"
            entry["angular" + suffix] = {"fit": on_fit.angular, "held_out": on_held.angular}
            entry["procrustes" + suffix] = {
                "fit": on_fit.procrustes,
                "held_out": on_held.procrustes,
            }
        out[pair_key(a, b)] = entry
    return _jsonable({"settings": s.to_dict(), "pairs": out})
