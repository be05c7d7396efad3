"""The rounds table of a run, for any task: sparsity both ways, the ticket metric, its controls and wall time,
as plain rows, Markdown and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from colt_core.numbers import as_number, percent
from colt_core.rundir import RunSummary

CONTROLS_NOTE = ("Controls, trained and evaluated like the ticket (round_XX/controls/): random_prune is a random "
                 "mask with the ticket's number of weights in every layer, from the ticket's start weights; "
                 "random_reinit is the ticket's mask on a fresh initialisation. A ticket that beats neither has "
                 "found a sparsity level, not a subnetwork.")


def metric_name(summary: RunSummary) -> str:
    """The headline metric of a run's evaluated tickets (e.g. "top-1 accuracy"), "metric" when none is."""
    for record in summary.evaluated:
        if record.evaluation and record.evaluation.metric:
            return record.evaluation.metric
    return "metric"


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
                               "value": as_number(evaluation.value) if evaluation else None}
        row.update({key: as_number(evaluation.get(key)) if evaluation else None for key in extra})
        row.update({f"control:{name}": as_number(record.controls[name].value) if name in record.controls else None
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
        cells = [str(row["round"]), percent(row["sparsity"]), percent(row["prune_rate"]), percent(row["value"]),
                 *(percent(row[key]) for key in extra), *(percent(row[f"control:{name}"]) for name in controls),
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


def search_table(summary: RunSummary) -> str | None:
    """The search trainings of each round (the partitions, or LTH's round): the epochs they ran against those
    they were set to, their search time and, where early-bird trainings stopped, the time without the stop.
    None when no round has trained yet."""
    searched = [r for r in summary.rounds if r.partitions]
    if not searched:
        return None
    stops = any(p.training.early_bird for r in searched for p in r.partitions or [])
    lines = ["| round | sparsity (%) | search trainings | epochs run / set | search time (s) |"
             + (" without the stop (s) |" if stops else ""), "|---:|---:|---:|---:|---:|" + ("---:|" if stops else "")]
    for record in searched:
        ran, planned = record.search_epochs()
        cells = [str(record.round), percent(record.sparsity), str(len(record.partitions or [])),
                 f"{ran:.1f} / {planned:.0f}", f"{record.search_time_s:.1f}"]
        if stops:
            cells.append(f"{record.search_time_without_stop_s:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    last = summary.rounds[-1].round
    total = f"Search time to round {last}'s ticket: {summary.search_time_before(last):.1f} s"
    if stops:
        total += f" ({summary.search_time_before(last, without_stop=True):.1f} s had no early-bird training stopped)"
    return "\n".join(lines) + "\n\n" + total + "; ticket evaluations and controls are not search."
