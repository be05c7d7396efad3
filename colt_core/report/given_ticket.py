"""The report of a given ticket (or one of its controls) trained on the full data, for any task: a one-row table
and the per-class table, titled and shown as the task's `ReportStyle` says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_text
from colt_core.numbers import percent, percent_interval
from colt_core.report.per_class import per_class_csv, per_class_markdown
from colt_core.report.rounds_table import evaluations_interval_note
from colt_core.report.style import ReportStyle
from colt_core.rundir import Evaluation, RunDir


def found_on(architecture: Mapping[str, Any]) -> str | None:
    """Where a ticket was found, "cifar100 (100 classes), resnet18", when its architecture records the dataset
    (a ticket moved to another dataset says where it came from); None when it does not."""
    if "dataset" not in architecture:
        return None
    return (f"{architecture['dataset']} ({architecture.get('num_classes', '?')} classes), "
            f"{architecture.get('name', '?')}")


def given_ticket_markdown(evaluation: Evaluation, style: ReportStyle | None = None) -> str:
    """The one-row table of a given ticket (or its control) trained on the full data: what was trained, where
    the ticket was found (when it says), both sparsities, the metric and the style's extra columns (each with
    its interval in brackets when the evaluation carries one)."""
    ticket = evaluation.get("ticket")
    extra = dict(style.extra_columns) if style is not None else {}
    origin = found_on(ticket["architecture"])
    heads = ["ticket", "trained", *(["found on"] if origin else [])]
    cells = [ticket["path"], ticket.get("control") or "the ticket", *([origin] if origin else [])]
    figures = ["sparsity (prunable weights, %)", "prune rate (all parameters, %)", f"{evaluation.metric} (%)",
               *(f"{title} (%)" for title in extra.values()), "wall time (s)"]
    cells += [percent(ticket["sparsity"]), percent(ticket["prune_rate"]),
              percent_interval(evaluation.value, evaluation.interval()),
              *(percent_interval(evaluation.get(key), evaluation.interval(key)) for key in extra),
              f"{evaluation.wall_time_s:.1f}"]
    return "\n".join(["| " + " | ".join([*heads, *figures]) + " |", "|" + "---|" * len(heads) + "---:|" * len(figures),
                      "| " + " | ".join(cells) + " |"])


def given_ticket_title(evaluation: Evaluation, style: ReportStyle) -> str:
    """The report's title: the style's for a given ticket, or for the control the evaluation trained."""
    control = evaluation.get("ticket").get("control")
    if control:
        return style.given_control_title.format(title=style.title, control=control)
    return style.given_ticket_title.format(title=style.title)


def write_given_ticket_report(run: RunDir, evaluation: Evaluation, class_names: Sequence[str],
                              style: ReportStyle) -> Path:
    """report.md (and the per-class CSV) of a given ticket, or its control, trained on the full data."""
    control = evaluation.get("ticket").get("control")
    columns = {f"{control} control" if control else "ticket": evaluation.per_class}
    parts = [f"# {given_ticket_title(evaluation, style)}", "", given_ticket_markdown(evaluation, style), ""]
    if (note := evaluations_interval_note([evaluation])) is not None:
        parts += [note, ""]
    if evaluation.per_class and len(class_names) <= style.markdown_class_limit:
        parts += [f"## {style.per_class_title}", "",
                  per_class_markdown(columns, class_names, digits=style.digits, mean_row=style.mean_row), ""]
    atomic_write_text("\n".join(parts), run.report)
    if evaluation.per_class:
        atomic_write_text(per_class_csv(columns, class_names), run.per_class(style.per_class_name, "csv"))
    return run.report
