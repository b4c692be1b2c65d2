"""Matching two nets' units group by group: from activations (statistics) or from weights.

A permutation ``perm`` of a group maps net B onto net A: after
``apply_permutation(state_b, spec, perms)``, unit ``i`` of B sits where unit ``perm[i]`` was, chosen
to correspond to unit ``i`` of A. Every group is solved with ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from convergent._errors import ConvergentError
from convergent.align._groups import PermutationSpec, apply_permutation

SIMILARITIES = ("correlation", "cross-moment", "cosine")


@dataclass
class Alignment:
    """Permutations that map net B onto net A, one per group, and how they were found."""

    perms: dict[str, np.ndarray]
    method: str
    scores: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0

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
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    perm = np.empty(similarity.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


def match_from_similarities(
    similarities: Mapping[str, np.ndarray], spec: PermutationSpec, method: str = "activation"
) -> Alignment:
    """Solve each group's assignment on its (d, d) similarity matrix (A units x B units)."""
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
        perms[name] = _assign(sim)
        scores[name] = float(sim[np.arange(group.size), perms[name]].mean())
    return Alignment(perms, method, scores)


def _group_rows(tensor: torch.Tensor, axis: int, offset: int, size: int, repeat: int) -> np.ndarray:
    """The part of ``tensor`` along ``axis`` that holds a group's units, as (size, -1) rows."""
    part = tensor.narrow(axis, offset, size * repeat).movedim(axis, 0)
    return part.reshape(size, -1).double().cpu().numpy()


def weight_matching(
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    max_iter: int = 100,
    seed: int = 0,
) -> Alignment:
    """Git Re-Basin weight matching: coordinate descent over groups, each a linear assignment.

    Maximises the summed inner product of A's weights with B's permuted weights over every
    (parameter, axis) of every group; stops when a full sweep improves nothing (a local optimum).
    Starts from a forward pass that solves the groups in graph order, each from the parameter axes
    whose other axes are already solved (or never permuted), which recovers an exact permutation of
    the same net outright. Deterministic for a given ``seed`` (the order of groups in each sweep).
    """
    import time

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    names = list(spec.groups)
    perms = spec.identity()
    owners: dict[str, set[str]] = {}
    for name, group in spec.groups.items():
        for param, *_ in group.axes:
            owners.setdefault(param, set()).add(name)
    solved: set[str] = set()
    for name in names:  # groups are listed in the order the forward pass creates them
        group = spec.groups[name]
        permuted_b = apply_permutation(state_b, spec, {**perms, name: np.arange(group.size)})
        cost = np.zeros((group.size, group.size))
        for param, axis, offset, repeat in group.axes:
            if owners[param] - {name} <= solved:
                wa = _group_rows(state_a[param], axis, offset, group.size, repeat)
                wb = _group_rows(permuted_b[param], axis, offset, group.size, repeat)
                cost += wa @ wb.T
        perms[name] = _assign(cost)
        solved.add(name)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported
        improved = False
        for idx in rng.permutation(len(names)):
            name = names[idx]
            group = spec.groups[name]
            others = {**perms, name: np.arange(group.size)}
            permuted_b = apply_permutation(state_b, spec, others)
            cost = np.zeros((group.size, group.size))
            for param, axis, offset, repeat in group.axes:
                wa = _group_rows(state_a[param], axis, offset, group.size, repeat)
                wb = _group_rows(permuted_b[param], axis, offset, group.size, repeat)
                cost += wa @ wb.T
            new = _assign(cost)
            old_score = cost[np.arange(group.size), perms[name]].sum()
            new_score = cost[np.arange(group.size), new].sum()
            if new_score > old_score + 1e-12 * max(1.0, abs(old_score)):
                perms[name] = new
                improved = True
        if not improved:
            break
    return Alignment(perms, "weight", {}, iterations, time.perf_counter() - t0)
