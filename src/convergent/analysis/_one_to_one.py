"""One-to-one unit matching (Li et al. 2016, section 3): semi-matching and bipartite matching.

Given a (d_A, d_B) similarity matrix between the units of net A (rows) and net B (columns), usually
the between-net block of the joint correlation matrix:

- *semi-matching*: each unit of A takes the unit of B it is most similar to; several A units may
  pick the same B unit;
- *bipartite matching*: a one-to-one assignment maximising the summed similarity
  (``scipy.optimize.linear_sum_assignment``); with d_A > d_B some A units stay unmatched.

The paper matches on signed correlation; ``absolute=True`` matches on |corr| instead (a unit and its
negation then count as the same feature). Scores are always reported as the signed value of the
chosen pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from convergent._errors import ConvergentError


def _as_matrix(sim: Any, name: str = "corr") -> np.ndarray:
    arr = np.asarray(sim, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(
            f"The '{name}' parameter must be a non-empty 2-D (d_A, d_B) matrix. Got shape "
            f"{arr.shape} instead."
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"The '{name}' parameter holds NaN or infinite values.")
    return arr


@dataclass(frozen=True)
class MatchResult:
    """A matching of A's units to B's units.

    Attributes
    ----------
    partner : ndarray of int, shape (d_A,)
        For each unit of A, the index of its partner in B (-1 if unmatched: bipartite with d_A > d_B).
    score : ndarray of float, shape (d_A,)
        The (signed) similarity of each A unit with its partner (0 where unmatched; see ``matched``).
    matched : ndarray of bool, shape (d_A,)
        Which A units have a partner.
    method : str
        ``"semi"`` or ``"bipartite"``.
    absolute : bool
        Whether partners were chosen on |similarity|.
    """

    partner: np.ndarray
    score: np.ndarray
    matched: np.ndarray
    method: str
    absolute: bool = False
    d_b: int = 0

    @property
    def sorted_scores(self) -> np.ndarray:
        """Scores of the matched A units, highest first (the paper's matching curves)."""
        return np.sort(self.score[self.matched])[::-1]

    @property
    def mean(self) -> float:
        """Mean score over matched units."""
        return float(self.score[self.matched].mean()) if self.matched.any() else 0.0

    @property
    def permutation(self) -> np.ndarray:
        """B's units in A's order: position ``i`` holds A unit ``i``'s partner whenever A unit ``i``
        is matched.

        Bipartite: the B units no A unit is matched to (in increasing order) fill the positions of
        the unmatched A units (in increasing order), then follow after position ``d_A - 1``. The
        result has length ``max(d_A, d_B)``; with ``d_A <= d_B`` it is a permutation of B's units
        (``B[:, perm][:, :d_A]`` is aligned to A unit by unit); with ``d_A > d_B`` the positions
        left without a B unit hold -1 (not an index: use ``partner`` and ``matched``).
        Semi-matching: ``partner`` itself (several A units may share a partner; -1 unmatched).

        Returns
        -------
        ndarray of int, shape (max(d_A, d_B),) (semi: (d_A,))
        """
        if self.method == "semi":
            return self.partner.copy()
        d_a = len(self.partner)
        out = np.full(max(d_a, self.d_b), -1, dtype=np.int64)
        out[:d_a][self.matched] = self.partner[self.matched]
        unused = np.setdiff1d(np.arange(self.d_b), self.partner[self.matched])
        free = np.flatnonzero(out == -1)  # unmatched A positions, then those past d_A
        out[free[: len(unused)]] = unused
        return out

    def count_above(self, thresholds: Sequence[float]) -> dict[str, int]:
        """Number of A units whose matched score is at least each threshold."""
        return {f"{t:g}": int((self.score[self.matched] >= t).sum()) for t in thresholds}


def semi_matching(corr: Any, *, absolute: bool = False) -> MatchResult:
    """For each unit of A (row), the unit of B (column) with the highest similarity.

    Parameters
    ----------
    corr : array-like, shape (d_A, d_B)
        Similarity between A's and B's units (e.g. correlation, or mutual information).
    absolute : bool
        Choose on |corr| (default: signed, as in the paper). Ties go to the lowest B index.

    Returns
    -------
    MatchResult
    """
    sim = _as_matrix(corr)
    key = np.abs(sim) if absolute else sim
    partner = key.argmax(axis=1).astype(np.int64)
    score = sim[np.arange(sim.shape[0]), partner]
    return MatchResult(
        partner, score, np.ones(sim.shape[0], dtype=bool), "semi", absolute, sim.shape[1]
    )


def bipartite_matching(corr: Any, *, absolute: bool = False) -> MatchResult:
    """Maximum-weight one-to-one assignment of A's units to B's (rectangular allowed).

    Parameters
    ----------
    corr : array-like, shape (d_A, d_B)
    absolute : bool
        Maximise the summed |corr| instead of the summed signed corr.

    Returns
    -------
    MatchResult
        With d_A > d_B, ``d_A - d_B`` units of A are unmatched (``partner == -1``).
    """
    sim = _as_matrix(corr)
    key = np.abs(sim) if absolute else sim
    rows, cols = linear_sum_assignment(key, maximize=True)
    partner = np.full(sim.shape[0], -1, dtype=np.int64)
    partner[rows] = cols
    matched = partner >= 0
    score = np.zeros(sim.shape[0])
    score[rows] = sim[rows, cols]
    return MatchResult(partner, score, matched, "bipartite", absolute, sim.shape[1])


def within_net_baseline(corr_within: Any, *, absolute: bool = False) -> np.ndarray:
    """Each unit's highest correlation with *another* unit of its own net, shape (d,).

    The paper's reference: a between-net match as good as this means the other net has the unit
    about as well as the net itself has a near-duplicate of it.
    """
    sim = _as_matrix(corr_within, "corr_within")
    if sim.shape[0] != sim.shape[1]:
        raise ValueError(
            f"A within-net correlation matrix must be square. Got shape {sim.shape} instead."
        )
    if sim.shape[0] < 2:
        raise ConvergentError("The within-net baseline needs a net with at least 2 units.")
    key = np.abs(sim) if absolute else sim.copy()
    np.fill_diagonal(key, -np.inf)
    best = key.argmax(axis=1)
    return sim[np.arange(sim.shape[0]), best]


@dataclass
class PairMatching:
    """One-to-one comparison of two nets at one layer (net A's units against net B's)."""

    net_a: str
    net_b: str
    semi: MatchResult
    semi_reverse: MatchResult
    bipartite: MatchResult
    within_a: np.ndarray
    within_b: np.ndarray
    thresholds: tuple[float, ...]
    unique_threshold: float
    unique_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unique_b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dead_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dead_b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def agreement(self) -> float:
        """Fraction of (live) A units whose semi-matching partner is also their bipartite partner."""
        live = self.semi.matched
        if not live.any():
            return 0.0
        return float((self.semi.partner[live] == self.bipartite.partner[live]).mean())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able scalar summary (no NaN)."""
        n_a = max(int(self.semi.matched.sum()), 1)  # shares are of live units
        return {
            "net_a": self.net_a,
            "net_b": self.net_b,
            "units_a": len(self.semi.partner),
            "units_b": len(self.semi_reverse.partner),
            "semi_mean": self.semi.mean,
            "semi_reverse_mean": self.semi_reverse.mean,
            "bipartite_mean": self.bipartite.mean,
            "within_a_mean": float(self.within_a.mean()) if self.within_a.size else 0.0,
            "within_b_mean": float(self.within_b.mean()) if self.within_b.size else 0.0,
            "agreement": self.agreement,
            "semi_above": {k: v / n_a for k, v in self.semi.count_above(self.thresholds).items()},
            "bipartite_above": {
                k: v / n_a for k, v in self.bipartite.count_above(self.thresholds).items()
            },
            "unique_threshold": self.unique_threshold,
            "unique_a": len(self.unique_a),
            "unique_b": len(self.unique_b),
            "dead_a": len(self.dead_a),
            "dead_b": len(self.dead_b),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "semi_partner": self.semi.partner,
            "semi_score": self.semi.score,
            "semi_sorted": self.semi.sorted_scores,
            "bipartite_partner": self.bipartite.partner,
            "bipartite_score": self.bipartite.score,
            "bipartite_sorted": self.bipartite.sorted_scores,
            "bipartite_permutation": self.bipartite.permutation,
            "within_a": self.within_a,
            "within_b": self.within_b,
            "within_a_sorted": np.sort(self.within_a)[::-1],
            "unique_a": self.unique_a,
            "unique_b": self.unique_b,
        }


def compare_pair(
    corr: Any,
    range_a: tuple[int, int],
    range_b: tuple[int, int],
    *,
    names: tuple[str, str] = ("A", "B"),
    thresholds: Sequence[float] = (0.5, 0.9),
    unique_threshold: float = 0.5,
    absolute: bool = False,
    dead: Sequence[int] = (),
) -> PairMatching:
    """Semi and bipartite matching of two nets' units from a joint correlation matrix.

    Parameters
    ----------
    corr : array-like, shape (D, D), or an object with ``corr()`` (e.g. ``Moments``)
        Joint correlation of the units of both nets (and maybe others).
    range_a, range_b : (start, stop)
        Where each net's units sit in ``corr``.
    thresholds : sequence of float
        Report the fraction of A units matched at least this well.
    dead : sequence of int
        Joint indices of dead (zero-variance) units: reported, and left out of the matchings (their
        partner is -1), the means and the shares, since they carry no signal.
    unique_threshold : float
        A live unit is *unique* when its best |correlation| with any unit of the other net is below
        this (default 0.5: less than a quarter of its variance is shared with any single unit).
    """
    if hasattr(corr, "corr") and callable(corr.corr):
        dead = list(dead) or list(corr.dead_units())
        corr = corr.corr()
    full = _as_matrix(corr)
    dead = np.asarray(dead, dtype=np.int64)
    d_a, d_b = range_a[1] - range_a[0], range_b[1] - range_b[0]
    dead_a = dead[(dead >= range_a[0]) & (dead < range_a[1])] - range_a[0]
    dead_b = dead[(dead >= range_b[0]) & (dead < range_b[1])] - range_b[0]
    # dead units carry no signal: they are reported, and left out of the matchings and their means
    live_a = np.setdiff1d(np.arange(d_a), dead_a)
    live_b = np.setdiff1d(np.arange(d_b), dead_b)
    between = full[range_a[0] + live_a][:, range_b[0] + live_b]
    if live_a.size and live_b.size:
        semi = _expand(semi_matching(between, absolute=absolute), live_a, live_b, d_a, d_b)
        semi_reverse = _expand(
            semi_matching(between.T, absolute=absolute), live_b, live_a, d_b, d_a
        )
        bip = _expand(bipartite_matching(between, absolute=absolute), live_a, live_b, d_a, d_b)
        best_a, best_b = np.abs(between).max(axis=1), np.abs(between).max(axis=0)
    else:
        semi, bip = (
            _unmatched(d_a, d_b, "semi", absolute),
            _unmatched(d_a, d_b, "bipartite", absolute),
        )
        semi_reverse = _unmatched(d_b, d_a, "semi", absolute)
        best_a, best_b = np.zeros(live_a.size), np.zeros(live_b.size)

    def within(live: np.ndarray, start: int) -> np.ndarray:
        if live.size < 2:
            return np.zeros(live.size)
        idx = start + live
        return within_net_baseline(full[np.ix_(idx, idx)], absolute=absolute)

    return PairMatching(
        names[0],
        names[1],
        semi,
        semi_reverse,
        bip,
        within(live_a, range_a[0]),
        within(live_b, range_b[0]),
        tuple(float(t) for t in thresholds),
        float(unique_threshold),
        live_a[best_a < unique_threshold],
        live_b[best_b < unique_threshold],
        dead_a,
        dead_b,
    )


def _expand(
    result: MatchResult, rows: np.ndarray, cols: np.ndarray, d_rows: int, d_cols: int
) -> MatchResult:
    """A matching of a sub-block (live units) mapped back to the full unit indices."""
    partner = np.full(d_rows, -1, dtype=np.int64)
    score = np.zeros(d_rows)
    matched = np.zeros(d_rows, dtype=bool)
    partner[rows[result.matched]] = cols[result.partner[result.matched]]
    score[rows] = result.score
    matched[rows] = result.matched
    return MatchResult(partner, score, matched, result.method, result.absolute, d_cols)


def _unmatched(d_rows: int, d_cols: int, method: str, absolute: bool) -> MatchResult:
    return MatchResult(
        np.full(d_rows, -1, dtype=np.int64),
        np.zeros(d_rows),
        np.zeros(d_rows, dtype=bool),
        method,
        absolute,
        d_cols,
    )


def summarize_pairs(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over pairs of every numeric entry of ``to_dict()`` records
    (nested dicts flattened with '/')."""
    if not pairs:
        raise ConvergentError("No pairs to summarise: comparing nets needs at least two nets.")

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
        out = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update(flat(v, f"{prefix}{k}/"))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = float(v)
        return out

    flats = [flat(p) for p in pairs]
    keys = [k for k in flats[0] if all(k in f for f in flats)]
    return {
        k: {
            "mean": float(np.mean([f[k] for f in flats])),
            "std": float(np.std([f[k] for f in flats])),
            "pairs": len(flats),
        }
        for k in keys
    }


def rotation_control(
    moments: Any,
    range_a: tuple[int, int],
    range_b: tuple[int, int],
    *,
    dead: Sequence[int] = (),
    repeats: int = 3,
    seed: int = 0,
    absolute: bool = False,
) -> float:
    """The mean bipartite match of A's units with a randomly rotated copy of B's (the same
    subspace, its basis scrambled), averaged over ``repeats`` Haar-random rotations: the matching a
    shared subspace gives without a shared basis. A layer whose units match no better than this has
    no privileged basis across nets (a transformer's residual stream); one above it does.

    Computed from the moments: with Q orthogonal, cov(A, B Q) = C_AB Q and var(B Q) = diag(Q^T C_BB
    Q). Dead units are left out on both sides. Returns 0.0 when either side has no live unit.
    """
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(
            f"The 'repeats' parameter must be an integer >= 1. Got {repeats!r} instead."
        )
    cov = moments.comoment / moments.count
    dead = np.asarray(dead, dtype=np.int64)
    a = np.setdiff1d(np.arange(*range_a), dead)
    b = np.setdiff1d(np.arange(*range_b), dead)
    if a.size == 0 or b.size == 0:
        return 0.0
    c_ab, c_bb = cov[np.ix_(a, b)], cov[np.ix_(b, b)]
    var_a = np.diag(cov)[a]
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(int(repeats)):
        q, r = np.linalg.qr(rng.normal(size=(b.size, b.size)))
        q = q * np.sign(np.diag(r))  # Haar measure
        var_b = np.einsum("ij,ik,kj->j", q, c_bb, q)
        scale = np.sqrt(np.outer(var_a, np.clip(var_b, 1e-300, None)))
        corr = np.clip((c_ab @ q) / scale, -1.0, 1.0)
        scores.append(bipartite_matching(corr, absolute=absolute).mean)
    return float(np.mean(scores))
