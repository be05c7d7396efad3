"""Run reports and the COLT-vs-LTH comparison: tables, plots, series.

Reads run records (`colt_core.rundir`) and never imports the training recipe.
"""

from colt_core.report.run_report import (
    CONTROLS_NOTE,
    ReportStyle,
    control_names,
    given_ticket_markdown,
    metric_name,
    per_class_columns,
    per_class_csv,
    per_class_markdown,
    plot_per_class,
    rounds_csv,
    rounds_markdown,
    rounds_rows,
    test_set_counts,
    test_set_line,
    test_set_note,
    ticket_label,
    write_given_ticket_report,
    write_report,
)

__all__ = [
    "CONTROLS_NOTE",
    "ReportStyle",
    "control_names",
    "given_ticket_markdown",
    "metric_name",
    "per_class_columns",
    "per_class_csv",
    "per_class_markdown",
    "plot_per_class",
    "rounds_csv",
    "rounds_markdown",
    "rounds_rows",
    "test_set_counts",
    "test_set_line",
    "test_set_note",
    "ticket_label",
    "write_given_ticket_report",
    "write_report",
]
