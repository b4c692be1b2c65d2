"""Argument checks shared by the built-in architectures, with scikit-learn style messages."""

from __future__ import annotations

import math
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(owner: str, name: str, value: Any, *, integer: bool = False) -> None:
    """Refuse a value that is not a number (``TypeError``: a string from ``--set width=abc``, a
    bool, None), or not a finite one, or not a whole one with ``integer`` (``ValueError``).

    Range checks stay with each architecture; this refuses wrong kinds before they reach a
    comparison that fails obscurely (``'<=' not supported between instances of 'str' and 'int'``).
    """
    kind = "an integer" if integer else "a number"
    if not _is_number(value):
        raise TypeError(f"The {name!r} parameter of {owner} must be {kind}. Got {value!r} instead.")
    if not math.isfinite(value) or (integer and int(value) != value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(
            f"The {name!r} parameter of {owner} must be {kind}. Got {value!r} instead."
        )


def check_count(owner: str, name: str, value: Any) -> None:
    """Refuse anything but an integer >= 1 (channels, classes, blocks)."""
    check_number(owner, name, value, integer=True)
    if value < 1:
        raise ValueError(
            f"The {name!r} parameter of {owner} must be an integer >= 1. Got {value!r} instead."
        )


def check_size(owner: str, value: Any) -> tuple[int, int]:
    """``input_size`` as (height, width): an integer >= 1 or a pair of them."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2 or not all(
        _is_number(v) and math.isfinite(v) and int(v) == v and v >= 1 for v in pair
    ):
        raise ValueError(
            f"The 'input_size' parameter of {owner} must be an integer >= 1 or a pair (height, "
            f"width) of them. Got {value!r} instead."
        )
    return int(pair[0]), int(pair[1])
