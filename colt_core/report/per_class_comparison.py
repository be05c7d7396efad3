"""The per-class section of a comparison (the paper's Table VII, for detection): the dense model and each run's
ticket at a sparsity every run reached, class by class, as Markdown, CSV and a bar chart.

Written for the runs whose task's `ReportStyle` asks for it (`compare_per_class`), the style found through the
task registry by each run's config; never guessed from a metric's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from colt_core.report.compared_runs import ComparedRound, ComparedRun
from colt_core.report.comparison_rows import write_csv
from colt_core.report.per_class import per_class_markdown, ticket_label
from colt_core.report.plots import plot_per_class
from colt_core.report.style import ReportStyle, task_style


def run_style(run: ComparedRun) -> ReportStyle | None:
    """The report style of a compared run's task (None: no task-specific style), see `task_style`."""
    return task_style(run.config, run.architecture, config_source=str(run.path / "config.yaml"),
                      ticket_source=str(run.path / "ticket.pt"))


def per_class_style(runs: Sequence[ComparedRun]) -> ReportStyle | None:
    """The style of the first run whose task's style asks for the per-class comparison; None if no run's does."""
    return next((style for style in map(run_style, runs) if style is not None and style.compare_per_class), None)


def matching_tickets(runs: Sequence[ComparedRun]) -> tuple[tuple[ComparedRun, ComparedRound] | None,
                                                          list[tuple[ComparedRun, ComparedRound]]]:
    """The dense model and each run's evaluated ticket at a sparsity all runs reached (the paper's Table VII).

    The level is the highest sparsity that every run with an evaluated sparse ticket has evaluated; each
    run contributes its evaluated ticket closest to it. The dense model is the first run's round 0.
    """
    dense = next(((run, r) for run in runs for r in run.evaluated if r.sparsity == 0 and r.per_class), None)
    sparse = {run.label: [r for r in run.evaluated if r.sparsity > 0 and r.per_class] for run in runs}
    reached = [max(rs, key=lambda r: r.sparsity).sparsity for rs in sparse.values() if rs]
    if not reached:
        return dense, []
    level = min(reached)
    tickets = [(run, min(sparse[run.label], key=lambda r: (abs(r.sparsity - level), r.round)))
               for run in runs if sparse[run.label]]
    return dense, tickets


def write_per_class_section(runs: Sequence[ComparedRun], out_dir: Path, style: ReportStyle
                            ) -> tuple[str, dict[str, Path]]:
    """Per-class values of the dense model and each run's ticket at matching sparsity (Markdown, CSV, PNG)."""
    what = style.per_class_metric
    dense, tickets = matching_tickets(runs)
    columns: dict[str, dict[str, float]] = {}
    if dense is not None:
        columns[ticket_label(dense[1])] = dense[1].per_class
    for run, rec in tickets:
        columns[f"{run.label} {ticket_label(rec)}"] = rec.per_class
    if not columns:
        return f"## Per-class {what}\n\n(no run has an evaluated ticket with per-class {what})", {}
    class_names = runs[0].class_names or sorted({c for col in columns.values() for c in col})
    metric = next((r.metric for run in runs for r in run.evaluated if r.metric), what)
    stem = f"per_class_{style.per_class_name}"
    title = f"Per-class {what} ({metric}): dense model and tickets at matching sparsity"
    files = {"per_class_png": plot_per_class(columns, class_names, out_dir / f"{stem}.png", title,
                                             style.per_class_axis)}
    rows = [{"class": name, **{label: col.get(name) for label, col in columns.items()}} for name in class_names]
    files["per_class_csv"] = write_csv(out_dir / f"{stem}.csv", rows, ["class", *columns])
    dense_text = f"the dense model (round 0 of {dense[0].label})" if dense else "no dense model"
    source = f" ({style.per_class_source})" if style.per_class_source else ""
    text = "\n".join([f"## {style.per_class_title} at matching sparsity{source}", "",
                      f"Columns: {dense_text}, and each run's evaluated ticket closest to the highest "
                      "sparsity that every run evaluated.", "",
                      per_class_markdown(columns, class_names, digits=style.digits, mean_row=style.mean_row), "",
                      f"![per-class {what}]({stem}.png)"])
    return text, files
