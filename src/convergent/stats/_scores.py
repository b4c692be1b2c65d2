"""Small result types shared by the similarity metrics; each has a JSON-able ``to_dict()``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class PairScore:
    """One number comparing two nets.

    Attributes
    ----------
    metric : str
        e.g. ``"cka"``, ``"debiased_cka"``.
    value : float
        Never NaN: where the metric is undefined (a net with no variance, too few samples) the
        value is the documented fallback and ``defined`` is False, with the reason in ``note``.
    nets : (str, str)
    samples : int
    defined : bool
    note : str
    details : dict
        Extra JSON-able numbers (widths, dead units, ...).
    """

    metric: str
    value: float
    nets: tuple[str, str]
    samples: int
    defined: bool = True
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "metric": self.metric,
                "value": self.value,
                "nets": list(self.nets),
                "samples": self.samples,
                "defined": self.defined,
                "note": self.note,
                **self.details,
            }
        )


@dataclass(frozen=True)
class ScoreMatrix:
    """A matrix of one metric: K x K between nets, or layers of one net x layers of another.

    Attributes
    ----------
    metric : str
    rows, cols : list of str
        What the rows and columns are (net names, or layer names).
    values : ndarray, shape (len(rows), len(cols))
        ``values[i, j]`` compares ``rows[i]`` with ``cols[j]``. For asymmetric metrics (PWCCA) the
        weights come from the row.
    estimate : bool
        True when the values are a statistical estimate from minibatches rather than the exact
        full-data value (the minibatch unbiased-HSIC CKA of Nguyen et al. 2021).
    note : str
    """

    metric: str
    rows: list[str]
    cols: list[str]
    values: np.ndarray
    estimate: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "metric": self.metric,
                "rows": list(self.rows),
                "cols": list(self.cols),
                "values": self.values,
                "estimate": self.estimate,
                "note": self.note,
            }
        )


def square(metric: str, names: Sequence[str], values: np.ndarray, note: str = "") -> ScoreMatrix:
    return ScoreMatrix(metric, list(names), list(names), values, False, note)
