"""Plain-text tables for the terminal: a generic aligner and the layer table of results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from convergent.results import Results, fit_convention, summary_columns, summary_rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    if value is None:
        return "-"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Align ``rows`` (dicts sharing keys) under a header; numbers right-aligned."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows)
        for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def terminal_summary(results: Results) -> str:
    """The layer table printed by ``analyze`` and ``demo``: one row per layer, means over pairs
    (the headline columns; medians and the other read-outs are in summary.csv and the report),
    then what each column is and its convention (split, units left out)."""
    columns = [c for c in summary_columns(results) if c.group == "units" or c.key == "cka"]
    rows = []
    for row in summary_rows(results, columns):
        rows.append(
            {
                c.label: (round(row[c.key], 3) if isinstance(row[c.key], float) else row[c.key])
                for c in columns
            }
        )
    fit = fit_convention(results)
    pairs = len(results.pairs)
    header = (
        f"{len(results.nets)} nets, {pairs} pair{'s' if pairs != 1 else ''}; values are means over "
        f"pairs; correlations on the {results.run.get('split')} split "
        f"({results.run.get('num_inputs')} inputs); one-to-many fitted on the {fit['fitted_on']} "
        f"split, scored on the {fit['scored_on']} split"
        + ("" if fit["held_out"] else " (in-sample)")
    )
    legend = "\n".join(f"  {c.label}: {c.description}" for c in columns if c.key != "layer")
    return f"{format_table(rows)}\n{header}\n{legend}"
