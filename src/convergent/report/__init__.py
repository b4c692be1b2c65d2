"""Presentation of results: terminal tables, figures and the self-contained HTML report. Reads
results (and interpolation results) only."""

from convergent.report._build import build_report, render
from convergent.report._tables import format_table, terminal_summary

__all__ = ["build_report", "format_table", "render", "terminal_summary"]
