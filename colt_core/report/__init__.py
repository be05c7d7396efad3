"""Run reports and the COLT-vs-LTH comparison: tables, plots, series.

Reads run records (`colt_core.rundir`) and tickets (`colt_core.prune.ticket`), and finds a task's report style
through the task registry; never imports the training recipe, the round loop or the exporters. One concept a
module: `style` (how a task's report reads), `rounds_table`, `per_class`, `run_report` (a run's report.md),
`given_ticket` (a given ticket's), `plots`; for comparisons `compared_runs` (reading them), `series` (seeds and
their spread), `comparison_rows`, `similarity` (Fig. 7), `per_class_comparison`, `comparison_markdown` and
`comparison` (the writer).
"""

from colt_core.report.compared_runs import ComparedRound, ComparedRun, CompareError, read_run, read_runs
from colt_core.report.comparison import check_out_dir, write_comparison
from colt_core.report.comparison_markdown import (
    rounds_to_sparsity_markdown,
    search_markdown,
    series_rounds_to_sparsity_markdown,
)
from colt_core.report.comparison_rows import (
    DEFAULT_LEVELS,
    rounds_to_sparsity,
    search_rows,
    series_levels,
    sparsity_levels,
)
from colt_core.report.given_ticket import given_ticket_markdown, write_given_ticket_report
from colt_core.report.per_class import per_class_columns, per_class_csv, per_class_markdown, ticket_label
from colt_core.report.per_class_comparison import matching_tickets, per_class_style
from colt_core.report.plots import plot_per_class
from colt_core.report.rounds_table import (
    CONTROLS_NOTE,
    control_names,
    metric_name,
    rounds_csv,
    rounds_markdown,
    rounds_rows,
)
from colt_core.report.run_report import test_set_counts, test_set_line, test_set_note, write_report
from colt_core.report.series import config_differences, group_series, seed_series, series_rounds_to_sparsity
from colt_core.report.style import ReportStyle, task_style

__all__ = [
    "CONTROLS_NOTE",
    "DEFAULT_LEVELS",
    "CompareError",
    "ComparedRound",
    "ComparedRun",
    "ReportStyle",
    "check_out_dir",
    "config_differences",
    "control_names",
    "given_ticket_markdown",
    "group_series",
    "matching_tickets",
    "metric_name",
    "per_class_columns",
    "per_class_csv",
    "per_class_markdown",
    "per_class_style",
    "plot_per_class",
    "read_run",
    "read_runs",
    "rounds_csv",
    "rounds_markdown",
    "rounds_rows",
    "rounds_to_sparsity",
    "rounds_to_sparsity_markdown",
    "search_markdown",
    "search_rows",
    "seed_series",
    "series_levels",
    "series_rounds_to_sparsity",
    "series_rounds_to_sparsity_markdown",
    "sparsity_levels",
    "task_style",
    "test_set_counts",
    "test_set_line",
    "test_set_note",
    "ticket_label",
    "write_comparison",
    "write_given_ticket_report",
    "write_report",
]
