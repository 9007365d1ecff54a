"""What a person looks at: live terminal view and run reports with plots."""

from esper.karn.compare import (
    SUMMARY_KEYS,
    compare_runs,
    comparison_figure,
    format_comparison_table,
    write_comparison_plot,
)
from esper.karn.console import ConsoleSink, format_count, format_event
from esper.karn.history import RunDirError, RunHistory, SeedTrack, load_history
from esper.karn.report import report_figure, write_report

__all__ = [
    "SUMMARY_KEYS",
    "ConsoleSink",
    "RunDirError",
    "RunHistory",
    "SeedTrack",
    "compare_runs",
    "comparison_figure",
    "format_comparison_table",
    "format_count",
    "format_event",
    "load_history",
    "report_figure",
    "write_comparison_plot",
    "write_report",
]
