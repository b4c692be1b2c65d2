"""Matching two nets' units group by group: from activations (statistics) or from weights.

A permutation ``perm`` of a group maps net B onto net A: after
``apply_permutation(state_b, spec, perms)``, unit ``i`` of B sits where unit ``perm[i]`` was, chosen
to correspond to unit ``i`` of A. Every group is solved with ``scipy.optimize.linear_sum_assignment``;
head-structured groups (attention) jointly with the groups they are tied to: for every pair of heads
the best within-head assignment of each tied group, then the assignment of heads on the summed
values (the exact optimum over permutations that move whole heads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from convergent._errors import ConvergentError
from convergent.align._groups import PermutationSpec, apply_permutation
from convergent.analysis import bipartite_matching

SIMILARITIES = ("correlation", "cross-moment", "cosine")


@dataclass
class Alignment:
    """Permutations that map net B onto net A, one per group, and how they were found."""

    perms: dict[str, np.ndarray]
    method: str
    scores: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    objective: float | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(p, dtype=np.int64) for name, p in self.perms.items()}


def similarity_from_moments(
    mean: np.ndarray, cov: np.ndarray, block_a: slice, block_b: slice, kind: str = "correlation"
) -> np.ndarray:
    """(d_A, d_B) similarity of A's and B's units from joint moments (population covariance).

    ``correlation``: Pearson (dead units give 0); ``cross-moment``: E[a b]; ``cosine``:
    E[a b] / sqrt(E[a^2] E[b^2]).
    """
    if kind not in SIMILARITIES:
        raise ValueError(
            f"The 'kind' parameter must be one of {SIMILARITIES}. Got {kind!r} instead."
        )
    cross = cov[block_a, block_b]
    if kind == "correlation":
        sa = np.sqrt(np.clip(np.diag(cov)[block_a], 0, None))
        sb = np.sqrt(np.clip(np.diag(cov)[block_b], 0, None))
        denom = np.outer(sa, sb)
        return np.divide(cross, denom, out=np.zeros_like(cross), where=denom > 0)
    second = cross + np.outer(mean[block_a], mean[block_b])
    if kind == "cross-moment":
        return second
    ea = np.diag(cov)[block_a] + mean[block_a] ** 2
    eb = np.diag(cov)[block_b] + mean[block_b] ** 2
    denom = np.sqrt(np.outer(ea, eb))
    return np.divide(second, denom, out=np.zeros_like(second), where=denom > 0)


def _assign(similarity: np.ndarray) -> np.ndarray:
    """The permutation maximising the summed similarity (square: every unit is matched)."""
    return bipartite_matching(similarity).partner.astype(np.int64)


def solve_unit(
    costs: Mapping[str, np.ndarray], spec: PermutationSpec, names: list[str]
) -> dict[str, np.ndarray]:
    """Maximise the summed ``costs`` (A units x B units) of one solving unit of ``spec``: a plain
    group, or the head-structured groups of one tie (which share their head permutation)."""
    first = spec.groups[names[0]]
    if first.heads == 1:
        return {name: _assign(costs[name]) for name in names}
    heads = first.heads
    value = np.zeros((heads, heads))
    inner: dict[tuple[str, int, int], np.ndarray] = {}
    for name in names:
        d = spec.groups[name].size // heads
        cost = costs[name]
        for i in range(heads):
            for j in range(heads):
                block = cost[i * d : (i + 1) * d, j * d : (j + 1) * d]
                p = _assign(block)
                inner[name, i, j] = p
                value[i, j] += block[np.arange(d), p].sum()
    sigma = _assign(value)
    out = {}
    for name in names:
        d = spec.groups[name].size // heads
        out[name] = np.concatenate([sigma[i] * d + inner[name, i, sigma[i]] for i in range(heads)])
    return out


def _place_silent(similarity: np.ndarray, tiebreak: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Re-solve, on ``tiebreak``, the rows whose similarity contributes nothing whatever their
    partner: A units whose row is all zero (dead in A) and those matched to a B unit whose column is
    all zero (dead in B). Any order of them keeps the similarity's optimum; the tie-break (the
    units' pre-activation similarity) picks the one that restores a permuted copy exactly."""
    dead_rows = ~similarity.any(axis=1)
    dead_cols = ~similarity.any(axis=0)
    rows = np.flatnonzero(dead_rows | dead_cols[perm])
    if len(rows) < 2:
        return perm
    cols = perm[rows]
    sub = _assign(tiebreak[np.ix_(rows, cols)])
    out = perm.copy()
    out[rows] = cols[sub]
    return out


def match_from_similarities(
    similarities: Mapping[str, np.ndarray],
    spec: PermutationSpec,
    method: str = "activation",
    tiebreak: Mapping[str, np.ndarray] | None = None,
) -> Alignment:
    """Solve each group's assignment on its (d, d) similarity matrix (A units x B units).

    ``tiebreak`` (optional, per group, same shape): places the units the similarity cannot tell
    apart -- dead units, whose post-activation correlation is 0 with everything -- by a second
    similarity (activation matching passes the pre-activation correlation)."""
    perms, scores = {}, {}
    for name, group in spec.groups.items():
        if name not in similarities:
            raise ConvergentError(
                f"No activation statistics for permutation group {name!r} (observable at "
                f"{group.layers}); collect one of those layers."
            )
        sim = np.asarray(similarities[name], dtype=np.float64)
        if sim.shape != (group.size, group.size):
            raise ValueError(
                f"The similarity of group {name!r} has shape {sim.shape}, expected "
                f"{(group.size, group.size)}."
            )
    sims = {name: np.asarray(similarities[name], dtype=np.float64) for name in spec.groups}
    for names in spec.units():
        perms.update(solve_unit(sims, spec, names))
    for name, group in spec.groups.items():
        if tiebreak is not None and name in tiebreak and group.heads == 1:
            perms[name] = _place_silent(sims[name], np.asarray(tiebreak[name]), perms[name])
    for name, group in spec.groups.items():
        scores[name] = float(sims[name][np.arange(group.size), perms[name]].mean())
    return Alignment(perms, method, scores)


def _group_rows(tensor: torch.Tensor, axis: int, offset: int, size: int, repeat: int) -> np.ndarray:
    """The part of ``tensor`` along ``axis`` that holds a group's units, as (size, -1) rows."""
    part = tensor.narrow(axis, offset, size * repeat).movedim(axis, 0)
    return part.reshape(size, -1).double().cpu().numpy()


#: buffers that hold statistics of the data, not weights: left out of the weight-matching objective
STATISTICS = ("running_mean", "running_var")


def _weight_axes(spec: PermutationSpec) -> dict[str, list[tuple[str, int, int, int]]]:
    return {
        name: [a for a in g.axes if not a[0].endswith(STATISTICS)]
        for name, g in spec.groups.items()
    }


def _costs(
    spec: PermutationSpec,
    axes: Mapping[str, list[tuple[str, int, int, int]]],
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    perms: Mapping[str, np.ndarray],
    names: list[str],
    usable: Any = None,
) -> dict[str, np.ndarray]:
    """Per group of ``names``: sum over its weight axes of A's rows times B's rows (B with every
    other group permuted), a (d, d) matrix; ``usable(param)`` selects the axes (all by default)."""
    permuted_b = apply_permutation(
        state_b, spec, {**perms, **{n: np.arange(spec.groups[n].size) for n in names}}
    )
    out = {}
    for name in names:
        size = spec.groups[name].size
        cost = np.zeros((size, size))
        for param, axis, offset, repeat in axes[name]:
            if usable is not None and not usable(param):
                continue
            wa = _group_rows(state_a[param], axis, offset, size, repeat)
            wb = _group_rows(permuted_b[param], axis, offset, size, repeat)
            cost += wa @ wb.T
        out[name] = cost
    return out


def weight_objective(
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    perms: Mapping[str, np.ndarray],
) -> float:
    """The weight-matching objective: the inner product of A's weights with B's permuted weights,
    summed over every parameter a group permutes (BatchNorm running statistics left out)."""
    permuted_b = apply_permutation(state_b, spec, perms)
    params = {a[0] for axes in _weight_axes(spec).values() for a in axes}
    return float(
        sum(float((state_a[p].double() * permuted_b[p].double()).sum()) for p in sorted(params))
    )


def _descent(
    spec: PermutationSpec,
    axes: Mapping[str, list[tuple[str, int, int, int]]],
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    perms: dict[str, np.ndarray],
    max_iter: int,
    seed: int,
) -> int:
    """Coordinate descent from ``perms`` (updated in place): each sweep visits every solving unit in
    a random order and keeps a new assignment only when it raises the objective; stops after a sweep
    that changes nothing. Returns the number of sweeps."""
    rng = np.random.default_rng(seed)
    units = spec.units()
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported
        improved = False
        for idx in rng.permutation(len(units)):
            names = units[idx]
            costs = _costs(spec, axes, state_a, state_b, perms, names)
            new = solve_unit(costs, spec, names)
            old_score = sum(costs[n][np.arange(len(perms[n])), perms[n]].sum() for n in names)
            new_score = sum(costs[n][np.arange(len(new[n])), new[n]].sum() for n in names)
            if new_score > old_score + 1e-12 * max(1.0, abs(old_score)):
                perms.update(new)
                improved = True
        if not improved:
            break
    return iterations


def weight_matching(
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    max_iter: int = 100,
    seed: int = 0,
    starts: tuple[str, ...] = ("forward", "identity"),
) -> Alignment:
    """Git Re-Basin weight matching: coordinate descent over groups, each a linear assignment.

    Maximises the summed inner product of A's weights with B's permuted weights over every
    (parameter, axis) of every group -- BatchNorm running statistics are data statistics, not
    weights, and are left out -- and stops when a full sweep improves nothing (a local optimum).
    The descent runs from each of ``starts`` and the best objective wins:

    - ``"forward"``: solve the groups in graph order, each from the parameter axes whose other axes
      are already solved (or never permuted), which recovers an exact permutation of the same net
      outright;
    - ``"identity"``: Git Re-Basin's Algorithm 1 as published (identity start, random order of
      groups each sweep, drawn from ``seed``), so the result is never below it.

    Deterministic for a given ``seed``. ``Alignment.objective`` holds the objective reached.
    """
    import time

    t0 = time.perf_counter()
    for start in starts:
        if start not in ("forward", "identity"):
            raise ValueError(
                f"The 'starts' parameter must hold 'forward' and/or 'identity'. Got {start!r} instead."
            )
    if not starts:
        raise ValueError("The 'starts' parameter must name at least one start.")
    axes = _weight_axes(spec)
    best: tuple[float, dict[str, np.ndarray], int] | None = None
    for start in starts:
        perms = spec.identity()
        if start == "forward":
            owners: dict[str, set[str]] = {}
            for name, group_axes in axes.items():
                for param, *_ in group_axes:
                    owners.setdefault(param, set()).add(name)
            solved: set[str] = set()
            for names in spec.units():  # in the order the forward pass creates the groups
                members = set(names)
                costs = _costs(
                    spec,
                    axes,
                    state_a,
                    state_b,
                    perms,
                    names,
                    usable=lambda p, m=members, done=frozenset(solved), o=owners: o[p] - m <= done,
                )
                perms.update(solve_unit(costs, spec, names))
                solved |= members
        iterations = _descent(spec, axes, state_a, state_b, perms, max_iter, seed)
        objective = weight_objective(spec, state_a, state_b, perms)
        if best is None or objective > best[0] + 1e-12 * max(1.0, abs(best[0])):
            best = (objective, perms, iterations)
    objective, perms, iterations = best
    return Alignment(perms, "weight", {}, iterations, time.perf_counter() - t0, objective=objective)
