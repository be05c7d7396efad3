"""The rows of a comparison's tables, one plain dict each: the sparsity levels, the rounds each run took to
reach them, the ticket metric (and its controls) against sparsity, and the wall time per round; and rows as a
CSV file."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_text
from colt_core.numbers import percent
from colt_core.report.compared_runs import ComparedRun, in_usual_order

DEFAULT_LEVELS = (0.2, 0.4, 0.5, 0.6, 0.7, 0.79, 0.9)


def sparsity_levels(runs: Sequence[ComparedRun], levels: Sequence[float] = DEFAULT_LEVELS) -> list[float]:
    """The given levels plus every sparsity a run's rounds reached (round 0's dense mask left out).

    Levels that the tables would print alike (20% and a run's own 19.99997%) are one level, the lowest of
    them, so that each run whose own sparsity it is counts as reaching it.
    """
    found = [float(x) for x in levels] + [r.sparsity for run in runs for r in run.rounds if r.sparsity > 0]
    lowest: dict[str, float] = {}
    for level in found:
        shown = percent(level)  # as the tables print it
        lowest[shown] = min(level, lowest.get(shown, level))
    return sorted(lowest.values())


def series_levels(runs: Sequence[ComparedRun], levels: Sequence[float] = DEFAULT_LEVELS) -> list[float]:
    """The levels asked for alone (each seed's own sparsities would be rows of noise), each as
    `sparsity_levels` has it: the lowest sparsity printed alike, so a run at 19.99997% reaches 20%."""
    shown = {percent(level) for level in levels}
    return [level for level in sparsity_levels(runs, levels) if percent(level) in shown]


def rounds_to_sparsity(runs: Sequence[ComparedRun], levels: Sequence[float]) -> list[dict[str, Any]]:
    """Per level and run: the first round at or above it, its sparsity, and the search time to get there."""
    rows = []
    for level in levels:
        for run in runs:
            rec = run.round_reaching(level)
            rows.append({"level": level, "run": run.label, "method": run.method,
                         "rounds": None if rec is None else rec.round,
                         "sparsity": None if rec is None else rec.sparsity,
                         "prune_rate": None if rec is None else rec.prune_rate,
                         "search_time_s": None if rec is None else run.search_time_before(rec.round)})
    return rows


def control_names(runs: Sequence[ComparedRun]) -> list[str]:
    """The controls any round of the runs has, known ones first in their usual order."""
    return in_usual_order(name for run in runs for r in run.rounds for name in r.controls)


def metric_rows(runs: Sequence[ComparedRun], controls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every evaluated ticket: run, round, both sparsities, metric and value, and a column per control. Where a
    run's evaluations carry intervals, "value_lo"/"value_hi" (and "NAME_lo"/"NAME_hi" for a control) bound the
    value; where none of the runs' do, the rows have no such keys."""
    rounds = [(run, r) for run in runs for r in run.evaluated]
    rows = [{"run": run.label, "round": r.round, "sparsity": r.sparsity, "prune_rate": r.prune_rate,
             "metric": r.metric, "value": r.value, **{name: r.controls.get(name) for name in controls}}
            for run, r in rounds]
    intervals = {"value": [r.interval for _, r in rounds],
                 **{name: [r.control_intervals.get(name) for _, r in rounds] for name in controls}}
    for key, bounds in intervals.items():
        if any(b is not None for b in bounds):
            for row, b in zip(rows, bounds, strict=True):
                row[f"{key}_lo"], row[f"{key}_hi"] = b if b is not None else (None, None)
    return rows


def wall_time_rows(runs: Sequence[ComparedRun]) -> list[dict[str, Any]]:
    """Wall time per round (partition trainings, ticket evaluation) and the running total per run."""
    rows = []
    for run in runs:
        cumulative = 0.0
        for r in run.rounds:
            cumulative += r.wall_time_s or 0.0
            rows.append({"run": run.label, "round": r.round, "sparsity": r.sparsity,
                         "search_time_s": r.search_time_s, "eval_time_s": r.eval_time_s,
                         "wall_time_s": r.wall_time_s, "cumulative_s": cumulative})
    return rows



def search_rows(runs: Sequence[ComparedRun]) -> list[dict[str, Any]]:
    """Per run: the search time to its last round's ticket (with and, for early-bird runs, without the stop),
    the epochs its search trainings ran against those they were set to, and the ratio to the compared LTH run's
    search time (the first LTH run of the same seed, else the first LTH run)."""
    rows = []
    for run in runs:
        if run.summary is None or not run.summary.rounds:
            continue
        last = run.summary.rounds[-1].round
        epochs = [rec.search_epochs() for rec in run.summary.rounds]
        rows.append({"run": run.label, "method": run.method, "seed": run.seed, "rounds": last,
                     "sparsity": run.rounds[-1].sparsity, "search_time_s": run.summary.search_time_before(last),
                     "search_time_without_stop_s": run.summary.search_time_before(last, without_stop=True),
                     "epochs_run": sum(a for a, _ in epochs), "epochs_set": sum(b for _, b in epochs),
                     "early_bird": bool((run.config.get("prune") or {}).get("early_bird"))})
    lth = [r for r in rows if r["method"] == "lth"]
    for row in rows:
        same_seed = [r for r in lth if r["seed"] == row["seed"]]
        reference = (same_seed or lth or [None])[0]
        time = reference["search_time_s"] if reference else None
        row["ratio_to_lth"] = row["search_time_s"] / time if time else None
    return rows


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Rows as CSV (empty cells for None), written atomically; a column whose rows carry its interval
    ("COLUMN_lo", "COLUMN_hi", as `metric_rows` gives them) is followed by those two."""
    columns = [c for column in columns
               for c in ([column, f"{column}_lo", f"{column}_hi"] if any(f"{column}_lo" in row for row in rows)
                         else [column])]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    atomic_write_text(out.getvalue(), path)
    return Path(path)
