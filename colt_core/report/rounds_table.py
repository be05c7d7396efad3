"""The rounds table of a run, for any task: sparsity both ways, the ticket metric, its controls and wall time,
as plain rows, Markdown and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from colt_core.numbers import as_number, percent, percent_interval
from colt_core.rundir import Evaluation, RoundRecord, RunSummary

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


def _score(evaluation: Evaluation) -> str:
    """"0.706", or "0.706 (interval 0.681–0.731)" when the evaluation carries an interval [lo, hi]."""
    text = f"{evaluation.value:.3f}"
    interval = evaluation.get("interval")
    if isinstance(interval, Sequence) and len(interval) == 2 and all(as_number(x) is not None for x in interval):
        text += f" (interval {float(interval[0]):.3f}–{float(interval[1]):.3f})"
    return text


def _points(ticket: float, other: float) -> str:
    """"1.2 points below (−1.2)": the ticket's metric against another one's, in percentage points."""
    diff = round(100 * (ticket - other), 1)
    if diff == 0:
        return "level with it (±0.0 points)"
    sign = "+" if diff > 0 else "−"
    return f"{abs(diff):.1f} points {'above' if diff > 0 else 'below'} it ({sign}{abs(diff):.1f})"


def verdict_lines(summary: RunSummary) -> list[str]:
    """How the run's final sparse ticket compares with the dense model (round 0) and with each of its controls,
    in words and numbers; empty when the final ticket was not evaluated or nothing is there to compare it with."""
    scored = [r for r in summary.evaluated if r.evaluation and as_number(r.evaluation.value) is not None]
    dense = next((r.evaluation for r in scored if r.sparsity == 0), None)
    final = scored[-1] if scored and scored[-1].sparsity > 0 else None
    if final is None or final.evaluation is None:
        return []
    controls = {name: c for name, c in final.controls.items() if as_number(c.value) is not None}
    if dense is None and not controls:
        return []
    value = float(final.evaluation.value)
    lines = [f"Ticket of round {final.round} ({percent(final.sparsity, 1)}% of the prunable weights pruned): "
             f"{final.evaluation.metric} {_score(final.evaluation)}"]
    if dense is not None:
        lines.append(f"  vs the dense model {_score(dense)}: {_points(value, float(dense.value))}")
    for name, control in controls.items():
        lines.append(f"  vs its {name} control {_score(control)}: {_points(value, float(control.value))}")
    return lines


def _evaluation_of(record: RoundRecord, key: str) -> tuple[Evaluation | None, str]:
    """The evaluation a rounds-table column reads (the ticket's, or a control's for "control:NAME") and its key."""
    if key.startswith("control:"):
        return record.controls.get(key.removeprefix("control:")), "value"
    return record.evaluation, key


def interval_keys(summary: RunSummary, keys: Sequence[str]) -> list[str]:
    """Those of the rounds rows' `keys` ("value", evaluation keys, "control:NAME") whose evaluation carries an
    interval in some round; none for a run recorded before its task gave intervals."""
    def has_interval(record: RoundRecord, key: str) -> bool:
        evaluation, inner = _evaluation_of(record, key)
        return evaluation is not None and evaluation.interval(inner) is not None

    return [key for key in keys if any(has_interval(record, key) for record in summary.rounds)]


def evaluations_interval_note(evaluations: Iterable[Evaluation | None]) -> str | None:
    """What the brackets after a value mean, when some of the evaluations carry an interval; None when none does."""
    carrying = [e for e in evaluations if e is not None and e.interval() is not None]
    if not carrying:
        return None
    method = next((e.interval_method for e in carrying if e.interval_method), "an interval over the test set")
    return (f"In brackets: the value's interval over its test set ({method}), how far the choice of test images "
            "alone moves it; values whose intervals overlap are not told apart by this test set.")


def interval_note(summary: RunSummary) -> str | None:
    """What the brackets after a value mean, when the run's evaluations carry intervals; None when none does."""
    return evaluations_interval_note(e for r in summary.rounds for e in (r.evaluation, *r.controls.values()))


def rounds_rows(summary: RunSummary, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One plain row per round: round, sparsity, prune_rate, value (None when not evaluated), the
    evaluation's `extra` keys, each control's value (key "control:NAME"), wall_time_s. Fractions stay
    fractions. A value whose evaluation carries an interval in some round has "KEY_lo" and "KEY_hi" beside
    it (None in rounds without one)."""
    controls = control_names(summary)
    with_interval = interval_keys(summary, ["value", *extra, *(f"control:{name}" for name in controls)])
    rows = []
    for record in summary.rounds:
        evaluation = record.evaluation
        row: dict[str, Any] = {"round": record.round, "sparsity": record.sparsity, "prune_rate": record.prune_rate,
                               "value": as_number(evaluation.value) if evaluation else None}
        row.update({key: as_number(evaluation.get(key)) if evaluation else None for key in extra})
        row.update({f"control:{name}": as_number(record.controls[name].value) if name in record.controls else None
                    for name in controls})
        for key in with_interval:
            source, inner = _evaluation_of(record, key)
            interval = source.interval(inner) if source is not None else None
            row[f"{key}_lo"], row[f"{key}_hi"] = interval if interval is not None else (None, None)
        row["wall_time_s"] = float(record.wall_time_s)
        rows.append(row)
    return rows


def _cell(row: Mapping[str, Any], key: str) -> str:
    """A row's value in percent, with its interval when the row has one."""
    return percent_interval(row[key], (row.get(f"{key}_lo"), row.get(f"{key}_hi")))


def rounds_markdown(summary: RunSummary, extra: Mapping[str, str] | None = None) -> str:
    """A Markdown table of the rounds; `extra` maps further evaluation keys (fractions) to column titles.
    Controls get a column each, beside the ticket's metric. Values with an interval show it in brackets."""
    extra = dict(extra or {})
    controls = control_names(summary)
    titles = ["round", "sparsity (prunable weights, %)", "prune rate (all parameters, %)",
              f"{metric_name(summary)} (%)", *(f"{title} (%)" for title in extra.values()),
              *(f"{name} control (%)" for name in controls), "wall time (s)"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---:|" * len(titles)]
    for row in rounds_rows(summary, list(extra)):
        cells = [str(row["round"]), percent(row["sparsity"]), percent(row["prune_rate"]), _cell(row, "value"),
                 *(_cell(row, key) for key in extra), *(_cell(row, f"control:{name}") for name in controls),
                 f"{row['wall_time_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounds_csv(summary: RunSummary, extra: Sequence[str] = ()) -> str:
    """The rounds as CSV text with a header row; the metric column is named after the metric, and a value's
    interval columns ("..._lo", "..._hi") follow it where the run has them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    values = ["value", *extra, *(f"control:{name}" for name in control_names(summary))]
    with_interval = set(interval_keys(summary, values))
    keys = ["round", "sparsity", "prune_rate",
            *(k for key in values for k in ([key, f"{key}_lo", f"{key}_hi"] if key in with_interval else [key])),
            "wall_time_s"]
    name = metric_name(summary)
    writer.writerow([key.replace("value", name, 1) if key.startswith("value") else key for key in keys])
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
