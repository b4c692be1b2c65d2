"""Results: what ``convergent analyze`` writes (``results/``) as typed objects, the only reader and
writer of that folder, and the one table of summary columns every reader of results uses."""

from convergent.results._analyze import analyze_run, layer_by_layer
from convergent.results._codec import decode, encode
from convergent.results._columns import (
    Column,
    column_legend,
    fit_convention,
    summary_columns,
    summary_csv,
    summary_rows,
)
from convergent.results._compare import (
    COMPARE_FILE,
    Comparison,
    MetricComparison,
    Threshold,
    closer_when_smaller,
    compare_pair,
    load_comparison,
    save_comparison,
)
from convergent.results._interpolation import (
    INTERPOLATION_FILE,
    MERGE_FILE,
    Interpolation,
    load_interpolation,
    merge_rows,
    save_interpolation,
    save_merge,
)
from convergent.results._results import (
    RESULTS_FORMAT,
    Results,
    load_results,
    save_results,
)

__all__ = [
    "COMPARE_FILE",
    "Comparison",
    "MetricComparison",
    "Threshold",
    "closer_when_smaller",
    "compare_pair",
    "load_comparison",
    "save_comparison",
    "INTERPOLATION_FILE",
    "MERGE_FILE",
    "RESULTS_FORMAT",
    "Column",
    "Interpolation",
    "Results",
    "analyze_run",
    "column_legend",
    "decode",
    "encode",
    "fit_convention",
    "layer_by_layer",
    "load_interpolation",
    "merge_rows",
    "save_interpolation",
    "save_merge",
    "load_results",
    "save_results",
    "summary_columns",
    "summary_csv",
    "summary_rows",
]
