"""Classification reports: the rounds table (round, sparsity, top-1/top-5 accuracy, wall time), per-class test
accuracy of each evaluated ticket, and the one-ticket report of a transfer run, as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_json, atomic_write_text
from colt_core.report import rounds_csv, rounds_markdown, rounds_rows

EXTRA_COLUMNS = {"top5": "top-5 accuracy"}
PER_CLASS_MARKDOWN_LIMIT = 20  # more classes than this go to the CSV only


def _pct(value: Any) -> str:
    return "" if not isinstance(value, (int, float)) or math.isnan(value) else f"{100 * value:.2f}"


def ticket_label(record: Mapping[str, Any]) -> str:
    """Column label of an evaluated ticket: the dense model or the round and its sparsity."""
    if record["sparsity"] == 0:
        return "dense"
    return f"round {record['round']} ({100 * record['sparsity']:.1f}% sparse)"


def per_class_columns(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{ticket label: {class: test accuracy}} for every evaluated ticket of a run."""
    return {ticket_label(r): dict(r["eval"].get("per_class", {})) for r in summary["rounds"] if "eval" in r}


def per_class_markdown(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str]) -> str:
    """One row per class, one column per ticket, accuracy in percent."""
    labels = list(columns)
    lines = ["| class | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(_pct(columns[label].get(name)) for label in labels) + " |"
              for name in class_names]
    return "\n".join(lines)


def _per_class_csv(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", *columns])
    for name in class_names:
        writer.writerow([name, *(columns[label].get(name, math.nan) for label in columns)])
    return out.getvalue()


def method_label(summary: Mapping[str, Any]) -> str:
    """COLT-N or LTH."""
    return summary["method"].upper() + (f"-{summary['partitions']}" if summary["method"] == "colt" else "")


def write_report(run_dir: str | Path, summary: Mapping[str, Any], class_names: Sequence[str],
                 title: str = "COLT classification run") -> Path:
    """Write report.md, rounds.csv/.json and per_class_accuracy.csv for a run's rounds and tickets."""
    run_dir = Path(run_dir)
    columns = per_class_columns(summary)
    parts = [f"# {title}: {method_label(summary)}", "", "## Rounds", "",
             "Sparsity is over the prunable weights; the prune rate is zero parameters over all parameters. "
             "Accuracy is the ticket's, trained on the full training data, on the test set.", "",
             rounds_markdown(summary, EXTRA_COLUMNS), ""]
    if columns and len(class_names) <= PER_CLASS_MARKDOWN_LIMIT:
        parts += ["## Per-class test accuracy (%)", "", per_class_markdown(columns, class_names), ""]
    elif columns:
        parts += ["Per-class test accuracy: per_class_accuracy.csv", ""]
    atomic_write_text("\n".join(parts), run_dir / "report.md")
    atomic_write_text(rounds_csv(summary, list(EXTRA_COLUMNS)), run_dir / "rounds.csv")
    atomic_write_json({"method": summary["method"], "partitions": summary["partitions"],
                       "rounds": rounds_rows(summary, list(EXTRA_COLUMNS))}, run_dir / "rounds.json")
    if columns:
        atomic_write_text(_per_class_csv(columns, class_names), run_dir / "per_class_accuracy.csv")
    return run_dir / "report.md"


def transfer_markdown(metrics: Mapping[str, Any]) -> str:
    """The one-row table of a transferred ticket: where it came from, sparsity, accuracy, wall time."""
    ticket = metrics["ticket"]
    source = ticket["architecture"]
    lines = ["| ticket | found on | sparsity (prunable weights, %) | prune rate (all parameters, %) | "
             "top-1 accuracy (%) | top-5 accuracy (%) | wall time (s) |", "|---|---|" + "---:|" * 5,
             f"| {ticket['path']} | {source.get('dataset', '?')} ({source.get('num_classes', '?')} classes), "
             f"{source.get('name', '?')} | {_pct(ticket['sparsity'])} | {_pct(ticket['prune_rate'])} | "
             f"{_pct(metrics['value'])} | {_pct(metrics.get('top5'))} | {metrics['wall_time_s']:.1f} |"]
    return "\n".join(lines)


def write_transfer_report(run_dir: str | Path, metrics: Mapping[str, Any], class_names: Sequence[str],
                          dataset: str) -> Path:
    """Write report.md (and per_class_accuracy.csv) of a ticket trained on `dataset`."""
    run_dir = Path(run_dir)
    parts = [f"# Ticket transfer to {dataset}", "", transfer_markdown(metrics), ""]
    columns = {"transferred ticket": metrics.get("per_class", {})}
    if len(class_names) <= PER_CLASS_MARKDOWN_LIMIT:
        parts += ["## Per-class test accuracy (%)", "", per_class_markdown(columns, class_names), ""]
    atomic_write_text("\n".join(parts), run_dir / "report.md")
    atomic_write_text(_per_class_csv(columns, class_names), run_dir / "per_class_accuracy.csv")
    return run_dir / "report.md"
