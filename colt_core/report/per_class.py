"""Per-class tables, for any task: one row per class, one column per evaluated ticket, as Markdown and CSV."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

from colt_core.numbers import as_number, percent
from colt_core.report.compared_runs import ComparedRound
from colt_core.rundir import RoundRecord, RunSummary


def ticket_label(record: RoundRecord | ComparedRound) -> str:
    """Column label of an evaluated ticket (of a run's report or a comparison's): the dense model or the round
    and its sparsity."""
    if record.sparsity == 0:
        return "dense"
    return f"round {record.round} ({100 * record.sparsity:.1f}% sparse)"


def per_class_columns(summary: RunSummary) -> dict[str, dict[str, float]]:
    """{ticket label: {class: value}} for every evaluated ticket of a run."""
    return {ticket_label(r): dict(r.evaluation.per_class) for r in summary.evaluated if r.evaluation}


def per_class_markdown(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str], *,
                       digits: int = 2, mean_row: str | None = None, counts: Mapping[str, int] | None = None,
                       count_title: str = "test samples") -> str:
    """One row per class, one column per ticket, values in percent; `mean_row` adds each column's mean, and
    `counts` a column of each class's test-set size (how far its value can be trusted)."""
    labels = list(columns)
    count_head, count_rule = (f" {count_title} |", "---:|") if counts is not None else ("", "")
    lines = ["| class |" + count_head + " " + " | ".join(labels) + " |", "|---|" + count_rule + "---:|" * len(labels)]
    for name in class_names:
        count = f" {counts.get(name, '')} |" if counts is not None else ""
        lines.append(f"| {name} |{count} " + " | ".join(percent(columns[label].get(name), digits) for label in labels)
                     + " |")
    if mean_row:
        means = []
        for label in labels:
            values = [v for v in map(as_number, columns[label].values()) if v is not None]
            means.append(f"**{percent(sum(values) / len(values), digits)}**" if values else "")
        total = f" {sum(counts.values())} |" if counts is not None else ""
        lines.append(f"| **{mean_row}** |{total} " + " | ".join(means) + " |")
    return "\n".join(lines)


def per_class_csv(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str]) -> str:
    """The per-class table as CSV (fractions, NaN where a class has no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", *columns])
    for name in class_names:
        writer.writerow([name, *(columns[label].get(name, math.nan) for label in columns)])
    return out.getvalue()
