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

from convergent.analysis._cca import cca_from_blocks, cca_held_out
from convergent.analysis._joint import joint_moments, pair_blocks, resolve_ranges
from convergent.analysis._procrustes import fit_shape, score_shape
from convergent.analysis._similarity import (
    SimilaritySettings,
    layer_similarity,
    pair_key,
    pair_similarity,
    scalars,
)
from convergent.stats._scores import _jsonable


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
