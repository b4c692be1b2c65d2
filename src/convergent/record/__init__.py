"""Former home of collection (kept so ``convergent.record`` imports keep working): the names now
live in :mod:`convergent.collect` (hooks, the loop, ``collect_run``) and :mod:`convergent.stats`
(``Statistics``, ``TopK``)."""

from convergent.collect import (
    SPATIAL_MODES,
    capture,
    collect,
    collect_mutual_information,
    collect_run,
    iter_batches,
    resolve_layers,
    stats_summary,
    to_samples,
)
from convergent.stats import LayerStatistics, Statistics, TopK

__all__ = [
    "SPATIAL_MODES",
    "LayerStatistics",
    "Statistics",
    "TopK",
    "capture",
    "collect",
    "collect_mutual_information",
    "collect_run",
    "iter_batches",
    "resolve_layers",
    "stats_summary",
    "to_samples",
]
