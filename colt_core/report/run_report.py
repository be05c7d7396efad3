"""A run's report, for any task: report.md with the rounds table, what the test set was and the per-class table
of every evaluated ticket, beside rounds.csv/.json and the per-class CSV, JSON and bar chart.

A front end only says how its report reads (`ReportStyle`), and may draw a figure for it (`report.figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_json, atomic_write_text
from colt_core.report.channels_table import channel_section
from colt_core.report.figure import figure_section
from colt_core.report.per_class import per_class_columns, per_class_csv, per_class_markdown, ticket_label
from colt_core.report.plots import plot_per_class
from colt_core.report.rounds_table import (
    CONTROLS_NOTE,
    control_names,
    interval_note,
    rounds_csv,
    rounds_markdown,
    rounds_rows,
    search_table,
    verdict_lines,
)
from colt_core.report.style import ReportStyle
from colt_core.rundir import RunDir, RunSummary


# ----- the test set ----------------------------------------------------------------------------------
def test_set_counts(summary: RunSummary) -> tuple[int | None, dict[str, int] | None]:
    """The test set the run's latest evaluation scored: its number of images and its samples (objects, for a
    detector) per class, as the task reported them (None where it did not)."""
    for record in reversed(summary.evaluated):
        evaluation = record.evaluation
        if evaluation is not None:
            per_class = evaluation.get("test_per_class")
            return evaluation.get("test_images"), dict(per_class) if isinstance(per_class, Mapping) else None
    return None, None


def test_set_line(summary: RunSummary, count_title: str = "test samples") -> str | None:
    """"Test set: N images, M objects (fewest per class: K, bird).": how far the metrics here can be trusted."""
    images, per_class = test_set_counts(summary)
    if images is None:
        return None
    if not per_class:
        return f"Test set: {images} images."
    count, name = min((count, name) for name, count in per_class.items())
    noun = count_title.removeprefix("test ")
    total = "" if noun in ("samples", "images") else f", {sum(per_class.values())} {noun}"
    return f"Test set: {images} images{total} (fewest per class: {count}, {name})."


def test_set_note(summary: RunSummary) -> str | None:
    """A warning line when the evaluations left test samples out (a task's `test_skipped` detail)."""
    for record in summary.evaluated:
        skipped = record.evaluation.get("test_skipped") if record.evaluation else None
        if skipped and skipped.get("images"):
            return (f"**Test set shrunk:** {skipped['images']} test images with bad annotations "
                    f"({_skipped_objects(skipped)}) were left out (`on_bad_test_annotation: skip`); every metric "
                    f"here is on the remaining {record.evaluation.get('test_images')} test images.")
    return None


def train_set_note(summary: RunSummary) -> str | None:
    """A warning line when the training data lost samples to bad annotations, with the count of each reason (a
    task's `train_skipped` detail)."""
    for record in summary.evaluated:
        skipped = record.evaluation.get("train_skipped") if record.evaluation else None
        if skipped and skipped.get("images"):
            reasons = sorted((skipped.get("by_problem") or {}).items(), key=lambda item: (-item[1], item[0]))
            why = "; by reason: " + ", ".join(f"{reason} {count}" for reason, count in reasons) if reasons else ""
            return (f"**Training data shrunk:** {skipped['images']} training images with bad annotations "
                    f"({_skipped_objects(skipped)}) were left out (`on_bad_annotation: skip`{why}); the tickets "
                    "were searched and trained on the rest.")
    return None


def _skipped_objects(skipped: Mapping[str, Any]) -> str:
    """"5 objects, plus those of 1 unreadable annotations": what the left-out images held."""
    unread = skipped.get("images_without_readable_annotation", 0)
    return f"{skipped.get('objects', 0)} objects" + (f", plus those of {unread} unreadable annotations"
                                                    if unread else "")


# ----- the report ------------------------------------------------------------------------------------
def _per_class_section(run: RunDir, summary: RunSummary, class_names: Sequence[str], style: ReportStyle,
                       columns: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The per-class table (and bar chart) in report.md, or where the table is when it has too many classes."""
    if not columns:
        return []
    if len(class_names) > style.markdown_class_limit:
        return [f"{style.per_class_title}: {run.per_class(style.per_class_name, 'csv').name}", ""]
    parts = [f"## {style.per_class_title}", "",
             per_class_markdown(columns, class_names, digits=style.digits, mean_row=style.mean_row,
                                counts=test_set_counts(summary)[1], count_title=style.count_title), ""]
    if style.plot:
        png = run.per_class(style.per_class_name, "png")
        plot_per_class(columns, class_names, png, f"{style.per_class_title}, {summary.label}", style.per_class_axis)
        parts += [f"![{style.per_class_title}]({png.name})", ""]
    return parts


def write_report(run: RunDir, summary: RunSummary, class_names: Sequence[str], style: ReportStyle,
                 notes: Sequence[str] = ()) -> Path:
    """Write report.md, rounds.csv/.json and the per-class CSV/JSON (and bar chart) of a run; `notes` are
    lines under the title (e.g. the weights the run started from)."""
    columns = per_class_columns(summary)
    extra = list(style.extra_columns)
    parts = [f"# {style.title}: {summary.label}", ""]
    for note in notes:
        parts += [note, ""]
    parts += ["## Rounds", ""]
    if style.note:
        parts += [style.note, ""]
    parts += [rounds_markdown(summary, style.extra_columns), ""]
    if (note := interval_note(summary)) is not None:
        parts += [note, ""]
    if control_names(summary):
        parts += [CONTROLS_NOTE, ""]
    verdict = verdict_lines(summary)
    if verdict:
        parts += ["## Ticket against the dense model and its controls", "",
                  *(f"- {line.strip()}" for line in verdict), ""]
    for line in (train_set_note(summary), test_set_note(summary), test_set_line(summary, style.count_title)):
        if line:
            parts += [line, ""]
    search = search_table(summary)
    if search is not None:
        parts += ["## Search", "", search, ""]
    parts += channel_section(run, summary)
    parts += _per_class_section(run, summary, class_names, style, columns)
    parts += figure_section(run, summary)
    atomic_write_text("\n".join(parts), run.report)
    atomic_write_text(rounds_csv(summary, extra), run.rounds_csv)
    atomic_write_json({"method": summary.method, "partitions": summary.partitions,
                       "rounds": rounds_rows(summary, extra)}, run.rounds_json)
    if columns:
        atomic_write_text(per_class_csv(columns, class_names), run.per_class(style.per_class_name, "csv"))
        atomic_write_json({ticket_label(r): {"round": r.round, "sparsity": r.sparsity, "metric": r.evaluation.metric,
                                             "value": r.evaluation.value, "per_class": r.evaluation.per_class}
                           for r in summary.evaluated if r.evaluation},
                          run.per_class(style.per_class_name, "json"))
    return run.report
