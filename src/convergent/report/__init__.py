"""Presentation: terminal tables, figures and the self-contained HTML report."""

from convergent.report._build import build_report
from convergent.report._tables import format_table

__all__ = ["build_report", "format_table"]
