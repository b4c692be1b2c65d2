"""Presentation: terminal tables now; figures and the HTML report later."""

from convergent.report._tables import format_table

__all__ = ["format_table"]
