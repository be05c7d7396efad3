"""How a classification run's report reads (top-1 and top-5 accuracy, per-class test accuracy), and the
one-ticket report of a transfer run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from colt_core.io import atomic_write_text
from colt_core.report import ReportStyle, per_class_csv, per_class_markdown
from colt_core.rundir import Evaluation, RunDir

REPORT = ReportStyle(
    title="COLT classification run", per_class_title="Per-class test accuracy (%)", per_class_name="accuracy",
    per_class_axis="test accuracy (%)",
    note="Sparsity is over the prunable weights; the prune rate is zero parameters over all parameters. "
         "Accuracy is the ticket's, trained on the full training data, on the test set.",
    extra_columns={"top5": "top-5 accuracy"}, markdown_class_limit=20, plot=False)


def _pct(value: Any) -> str:
    return "" if not isinstance(value, (int, float)) or value != value else f"{100 * value:.2f}"


def transfer_markdown(evaluation: Evaluation) -> str:
    """The one-row table of a transferred ticket: where it came from, sparsity, accuracy, wall time."""
    ticket = evaluation.get("ticket")
    source = ticket["architecture"]
    lines = ["| ticket | found on | sparsity (prunable weights, %) | prune rate (all parameters, %) | "
             "top-1 accuracy (%) | top-5 accuracy (%) | wall time (s) |", "|---|---|" + "---:|" * 5,
             f"| {ticket['path']} | {source.get('dataset', '?')} ({source.get('num_classes', '?')} classes), "
             f"{source.get('name', '?')} | {_pct(ticket['sparsity'])} | {_pct(ticket['prune_rate'])} | "
             f"{_pct(evaluation.value)} | {_pct(evaluation.get('top5'))} | {evaluation.wall_time_s:.1f} |"]
    return "\n".join(lines)


def write_transfer_report(run: RunDir, evaluation: Evaluation, class_names: Sequence[str], dataset: str) -> None:
    """Write report.md (and the per-class accuracy CSV) of a ticket trained on `dataset`."""
    control = evaluation.get("ticket").get("control")
    title = f"The {control} control of a ticket, on {dataset}" if control else f"Ticket transfer to {dataset}"
    parts = [f"# {title}", "", transfer_markdown(evaluation), ""]
    columns = {"transferred ticket": evaluation.per_class}
    if len(class_names) <= REPORT.markdown_class_limit:
        parts += [f"## {REPORT.per_class_title}", "", per_class_markdown(columns, class_names), ""]
    atomic_write_text("\n".join(parts), run.report)
    atomic_write_text(per_class_csv(columns, class_names), run.per_class(REPORT.per_class_name, "csv"))
