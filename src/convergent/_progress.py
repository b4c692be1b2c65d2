"""Progress bars in one place: tqdm on a terminal, silent when ``CONVERGENT_NO_PROGRESS`` is set."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to draw progress bars: the explicit choice, else on unless CONVERGENT_NO_PROGRESS=1."""
    if progress is not None:
        return progress
    return os.environ.get("CONVERGENT_NO_PROGRESS", "") in ("", "0")


def bar(iterable: Iterable[T] | None = None, *, progress: bool | None = None, **kwargs: Any) -> Any:
    """A tqdm bar on stderr (or a no-op stand-in when progress is off)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not progress_enabled(progress), **kwargs)
