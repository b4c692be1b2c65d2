"""Results: what ``convergent analyze`` writes (``results/``), how it is read back, and the one
table of summary columns every reader of results uses."""

from convergent.results._analyze import (
    SIMILARITY_COLUMNS,
    SUMMARY_COLUMNS,
    analyze_run,
    layer_by_layer,
    terminal_summary,
)

__all__ = [
    "SIMILARITY_COLUMNS",
    "SUMMARY_COLUMNS",
    "analyze_run",
    "layer_by_layer",
    "terminal_summary",
]
