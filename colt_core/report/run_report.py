"""A run's report, for any task: the rounds table (sparsity both ways, the ticket metric, wall time) and the
per-class table of every evaluated ticket, as Markdown, CSV, JSON and a bar chart.

A front end only says what its metric is called and how it is shown (`ReportStyle`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from colt_core.rundir import Evaluation, RoundRecord, RunDir, RunSummary


@dataclass(frozen=True)
class ReportStyle:
    """How a task's report reads: titles, the per-class metric's file name, extra rounds-table columns."""

    title: str  # e.g. "COLT detection run"
    per_class_title: str  # e.g. "Per-class AP (%)"
    per_class_name: str  # file stem: per_class_<name>.csv/.json/.png
    per_class_axis: str = "value (%)"
    note: str = ""  # a paragraph under the rounds table's heading
    extra_columns: Mapping[str, str] = field(default_factory=dict)  # evaluation key -> column title
    digits: int = 2  # decimals of the per-class percentages
    mean_row: str | None = None  # e.g. "mAP": a last row with each ticket's mean over the classes
    markdown_class_limit: int = 25  # more classes than this go to the CSV only
    plot: bool = True
    count_title: str = "test samples"  # what a task's test_per_class counts, e.g. "test objects"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _pct(value: Any, digits: int = 2) -> str:
    number = _number(value)
    return "" if number is None else f"{100 * number:.{digits}f}"


# ----- the rounds table ------------------------------------------------------------------------------
def metric_name(summary: RunSummary) -> str:
    """The headline metric of a run's evaluated tickets (e.g. "top-1 accuracy"), "metric" when none is."""
    for record in summary.evaluated:
        if record.evaluation and record.evaluation.metric:
            return record.evaluation.metric
    return "metric"


CONTROLS_NOTE = ("Controls, trained and evaluated like the ticket (round_XX/controls/): random_prune is a random "
                 "mask with the ticket's number of weights in every layer, from the ticket's start weights; "
                 "random_reinit is the ticket's mask on a fresh initialisation. A ticket that beats neither has "
                 "found a sparsity level, not a subnetwork.")


def control_names(summary: RunSummary) -> list[str]:
    """The controls any round of the run trained, in the order the run lists them."""
    names: list[str] = []
    for record in summary.rounds:
        names += [name for name in record.controls if name not in names]
    return names


def rounds_rows(summary: RunSummary, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One plain row per round: round, sparsity, prune_rate, value (None when not evaluated), the
    evaluation's `extra` keys, each control's value (key "control:NAME"), wall_time_s. Fractions stay
    fractions."""
    controls = control_names(summary)
    rows = []
    for record in summary.rounds:
        evaluation = record.evaluation
        row: dict[str, Any] = {"round": record.round, "sparsity": record.sparsity, "prune_rate": record.prune_rate,
                               "value": _number(evaluation.value) if evaluation else None}
        row.update({key: _number(evaluation.get(key)) if evaluation else None for key in extra})
        row.update({f"control:{name}": _number(record.controls[name].value) if name in record.controls else None
                    for name in controls})
        row["wall_time_s"] = float(record.wall_time_s)
        rows.append(row)
    return rows


def rounds_markdown(summary: RunSummary, extra: Mapping[str, str] | None = None) -> str:
    """A Markdown table of the rounds; `extra` maps further evaluation keys (fractions) to column titles.
    Controls get a column each, beside the ticket's metric."""
    extra = dict(extra or {})
    controls = control_names(summary)
    titles = ["round", "sparsity (prunable weights, %)", "prune rate (all parameters, %)",
              f"{metric_name(summary)} (%)", *(f"{title} (%)" for title in extra.values()),
              *(f"{name} control (%)" for name in controls), "wall time (s)"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---:|" * len(titles)]
    for row in rounds_rows(summary, list(extra)):
        cells = [str(row["round"]), _pct(row["sparsity"]), _pct(row["prune_rate"]), _pct(row["value"]),
                 *(_pct(row[key]) for key in extra), *(_pct(row[f"control:{name}"]) for name in controls),
                 f"{row['wall_time_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounds_csv(summary: RunSummary, extra: Sequence[str] = ()) -> str:
    """The rounds as CSV text with a header row; the metric column is named after the metric."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = ["round", "sparsity", "prune_rate", "value", *extra,
            *(f"control:{name}" for name in control_names(summary)), "wall_time_s"]
    writer.writerow([metric_name(summary) if key == "value" else key for key in keys])
    for row in rounds_rows(summary, extra):
        writer.writerow(["" if row[key] is None else row[key] for key in keys])
    return out.getvalue()


# ----- per-class tables ------------------------------------------------------------------------------
def ticket_label(record: RoundRecord) -> str:
    """Column label of an evaluated ticket: the dense model or the round and its sparsity."""
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
        lines.append(f"| {name} |{count} " + " | ".join(_pct(columns[label].get(name), digits) for label in labels)
                     + " |")
    if mean_row:
        means = []
        for label in labels:
            values = [v for v in map(_number, columns[label].values()) if v is not None]
            means.append(f"**{_pct(sum(values) / len(values), digits)}**" if values else "")
        total = f" {sum(counts.values())} |" if counts is not None else ""
        lines.append(f"| **{mean_row}** |{total} " + " | ".join(means) + " |")
    return "\n".join(lines)


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


def per_class_csv(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str]) -> str:
    """The per-class table as CSV (fractions, NaN where a class has no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", *columns])
    for name in class_names:
        writer.writerow([name, *(columns[label].get(name, math.nan) for label in columns)])
    return out.getvalue()


def plot_per_class(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str], path: str | Path,
                   title: str = "Per-class metric", ylabel: str = "value (%)") -> Path:
    """A grouped bar chart of a per-class metric, one bar colour per ticket, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(columns)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(class_names) * max(1, len(labels)) / 1.5), 4.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(class_names))]
        ys = [100 * (_number(columns[label].get(c)) or 0.0) for c in class_names]
        ax.bar(xs, ys, width=width, label=label)
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    return Path(path)


def test_set_note(summary: RunSummary) -> str | None:
    """A warning line when the evaluations left test samples out (a task's `test_skipped` detail)."""
    for record in summary.evaluated:
        skipped = record.evaluation.get("test_skipped") if record.evaluation else None
        if skipped and skipped.get("images"):
            unread = skipped.get("images_without_readable_annotation", 0)
            objects = f"{skipped.get('objects', 0)} objects" + (f", plus those of {unread} unreadable annotations"
                                                               if unread else "")
            return (f"**Test set shrunk:** {skipped['images']} test images with bad annotations ({objects}) were "
                    f"left out (`on_bad_test_annotation: skip`); every metric here is on the remaining "
                    f"{record.evaluation.get('test_images')} test images.")
    return None


# ----- the report ------------------------------------------------------------------------------------
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
    controls = control_names(summary)
    if controls:
        parts += [CONTROLS_NOTE, ""]
    skipped = test_set_note(summary)
    if skipped:
        parts += [skipped, ""]
    test_line = test_set_line(summary, style.count_title)
    if test_line:
        parts += [test_line, ""]
    if columns and len(class_names) <= style.markdown_class_limit:
        parts += [f"## {style.per_class_title}", "",
                  per_class_markdown(columns, class_names, digits=style.digits, mean_row=style.mean_row,
                                     counts=test_set_counts(summary)[1], count_title=style.count_title), ""]
        if style.plot:
            png = run.per_class(style.per_class_name, "png")
            plot_per_class(columns, class_names, png, f"{style.per_class_title}, {summary.label}",
                           style.per_class_axis)
            parts += [f"![{style.per_class_title}]({png.name})", ""]
    elif columns:
        parts += [f"{style.per_class_title}: {run.per_class(style.per_class_name, 'csv').name}", ""]
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


# ----- a ticket trained on its own -------------------------------------------------------------------
def given_ticket_markdown(evaluation: Evaluation) -> str:
    """The one-row table of a given ticket (or its control) trained on the full data."""
    ticket = evaluation.get("ticket")
    lines = [f"| ticket | trained | sparsity (prunable weights, %) | prune rate (all parameters, %) | "
             f"{evaluation.metric} (%) | wall time (s) |", "|---|---|" + "---:|" * 4,
             f"| {ticket['path']} | {ticket.get('control') or 'the ticket'} | {_pct(ticket['sparsity'])} | "
             f"{_pct(ticket['prune_rate'])} | {_pct(evaluation.value)} | {evaluation.wall_time_s:.1f} |"]
    return "\n".join(lines)


def write_given_ticket_report(run: RunDir, evaluation: Evaluation, class_names: Sequence[str],
                              style: ReportStyle) -> Path:
    """report.md (and the per-class CSV) of a given ticket, or its control, trained on the full data."""
    control = evaluation.get("ticket").get("control")
    label = f"{control} control" if control else "ticket"
    columns = {label: evaluation.per_class}
    parts = [f"# {style.title}: a given {label}", "", given_ticket_markdown(evaluation), ""]
    if evaluation.per_class and len(class_names) <= style.markdown_class_limit:
        parts += [f"## {style.per_class_title}", "",
                  per_class_markdown(columns, class_names, digits=style.digits, mean_row=style.mean_row), ""]
    atomic_write_text("\n".join(parts), run.report)
    if evaluation.per_class:
        atomic_write_text(per_class_csv(columns, class_names), run.per_class(style.per_class_name, "csv"))
    return run.report
