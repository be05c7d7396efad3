"""The comparison's Markdown tables: the runs, rounds to reach each sparsity, the ticket metric against
sparsity, the series' mean ± std, wall time and pruned-weight similarity. Sparsities carry their % sign here
(metric values are in a "(%)" column); missing values are empty cells."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from colt_core.numbers import percent, percent_interval
from colt_core.report.compared_runs import ComparedRun
from colt_core.report.series import Series, Spread


def _sparsity(x: float | None) -> str:
    return percent(x, unit="%")


def _secs(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


INTERVALS_TEXT = ("In brackets: the interval the run's evaluation gave a value over its test set (a 95% bootstrap "
                  "interval over the test images, as the run's report.md says): how far the choice of test images "
                  "alone moves it.")


def _with_interval(row: Mapping[str, Any], key: str) -> str:
    """A row's value in percent, with its interval ("KEY_lo", "KEY_hi") in brackets when the row has one."""
    return percent_interval(row[key], (row.get(f"{key}_lo"), row.get(f"{key}_hi")))


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _spread_text(row: Mapping[str, Any], name: str, scale: float = 100.0) -> str:
    """'mean ± std (n=k)' of a row's spread columns, scaled (100: percent); no ± for a single value."""
    spread = Spread.from_columns(row, name)
    if spread.mean is None:
        return ""
    text = f"{scale * spread.mean:.2f}" + ("" if spread.std is None else f" ± {scale * spread.std:.2f}")
    return f"{text} (n={spread.n})"


def runs_markdown(runs: Sequence[ComparedRun]) -> str:
    """One row per run: where it is, its method and rates, how far it pruned, its last metric, its times."""
    lines = ["| run | directory | method | partitions | rates | rounds | final sparsity | prune rate | "
             "final metric | search time (s) | eval time (s) | total (s) |",
             "|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for run in runs:
        last = run.rounds[-1]
        final_eval = run.evaluated[-1] if run.evaluated else None
        rates = ", ".join(f"{k} {v}" for k, v in (run.config.get("prune", {}).get("rates") or {}).items())
        metric = "" if final_eval is None else \
            f"{final_eval.metric} {percent_interval(final_eval.value, final_eval.interval)} (round {final_eval.round})"
        state = "" if run.finished else " (unfinished)"
        lines.append(_row([run.label, run.path, f"{run.method}{state}", run.partitions, rates, last.round,
                           _sparsity(last.sparsity), _sparsity(last.prune_rate), metric,
                           _secs(run.total_search_time_s), _secs(run.total_eval_time_s),
                           _secs(run.total_search_time_s + run.total_eval_time_s)]))
    return "\n".join(lines)


def _level_table(labels: Sequence[str], rows: Sequence[Mapping[str, Any]], column: str,
                 cell: Callable[[Mapping[str, Any]], str]) -> str:
    """Wide table: one row per level, a column per label (the rows' `column`), each cell as `cell` writes it."""
    lines = ["| sparsity ≥ | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
    by_level: dict[float, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        by_level.setdefault(row["level"], {})[row[column]] = row
    for level, cells in by_level.items():
        lines.append(_row([_sparsity(level), *(cell(cells[label]) for label in labels)]))
    return "\n".join(lines)


def _rounds_cell(row: Mapping[str, Any]) -> str:
    if row["rounds"] is None:
        return "not reached"
    time_text = "" if row["search_time_s"] is None else f", {row['search_time_s']:.1f} s"
    return f"{row['rounds']} ({_sparsity(row['sparsity'])}{time_text})"


def rounds_to_sparsity_markdown(runs: Sequence[ComparedRun], rows: Sequence[Mapping[str, Any]]) -> str:
    """Wide table: one row per level, per run 'rounds (sparsity reached, search time)'."""
    return _level_table([r.label for r in runs], rows, "run", _rounds_cell)


def series_rounds_to_sparsity_markdown(series: Sequence[Series], rows: Sequence[Mapping[str, Any]]) -> str:
    """Wide table: one row per level, per series 'mean ± std (n=seeds that reached it)' of the rounds."""
    return _level_table([s.label for s in series], rows, "series",
                        lambda row: _spread_text(row, "rounds", scale=1.0) or "not reached")


def metric_markdown(rows: Sequence[Mapping[str, Any]], controls: Sequence[str] = ()) -> str:
    """Every evaluated ticket of every run: both sparsities, its metric's value and each control's, with their
    intervals in brackets where the rows carry them (and a line under the table saying what they are)."""
    lines = ["| run | round | sparsity (prunable weights) | prune rate (all parameters) | metric | "
             "value (%) |" + "".join(f" {name} (%) |" for name in controls),
             "|---|---:|---:|---:|---|---:|" + "---:|" * len(controls)]
    for row in rows:
        lines.append(_row([row["run"], row["round"], _sparsity(row["sparsity"]), _sparsity(row["prune_rate"]),
                           row["metric"] or "", _with_interval(row, "value"),
                           *(_with_interval(row, name) for name in controls)]))
    if any(key.endswith("_lo") for row in rows for key in row):
        lines += ["", INTERVALS_TEXT]
    return "\n".join(lines)


def series_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Which runs each series holds, with their seeds."""
    lines = ["| series | method | runs | seeds |", "|---|---|---|---|"]
    for s in rows:
        seeds = ", ".join(str(seed) for seed in s["seeds"])
        lines.append(_row([s["series"], s["method"], ", ".join(s["runs"]), seeds]))
    return "\n".join(lines)


def series_metric_markdown(rows: Sequence[Mapping[str, Any]], controls: Sequence[str] = ()) -> str:
    """Per series and round: sparsity, ticket value and each control's value as 'mean ± std (n=seeds)'."""
    lines = ["| series | round | sparsity (%) | metric | value (%) |" + "".join(f" {c} (%) |" for c in controls),
             "|---|---:|---:|---|---:|" + "---:|" * len(controls)]
    for row in rows:
        lines.append(_row([row["series"], row["round"], _spread_text(row, "sparsity"), row["metric"] or "",
                           _spread_text(row, "value"), *(_spread_text(row, name) for name in controls)]))
    return "\n".join(lines)


def search_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per run: rounds, final sparsity, epochs run of those set, search time (and without the stop),
    its ratio to LTH's."""
    lines = ["| run | rounds | final sparsity | search epochs run / set | search time (s) | without the stop (s) | "
             "ratio to LTH |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        without = _secs(row["search_time_without_stop_s"]) if row["early_bird"] else "–"
        ratio = "" if row["ratio_to_lth"] is None else f"{row['ratio_to_lth']:.2f}"
        lines.append(_row([row["run"], row["rounds"], _sparsity(row["sparsity"]),
                           f"{row['epochs_run']:.1f} / {row['epochs_set']:.0f}", _secs(row["search_time_s"]), without,
                           ratio]))
    return "\n".join(lines)


def wall_time_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per run and round: the partition trainings', the ticket evaluation's and the running total's seconds."""
    lines = ["| run | round | sparsity | partition trainings (s) | ticket evaluation (s) | round (s) | "
             "cumulative (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(_row([row["run"], row["round"], _sparsity(row["sparsity"]), _secs(row["search_time_s"]),
                           _secs(row["eval_time_s"]), _secs(row["wall_time_s"]), _secs(row["cumulative_s"])]))
    return "\n".join(lines)


def similarity_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Fig. 7 as a table: per reference round, the other run's closest round and the weights both prune."""
    if not rows:
        return "(no pruned rounds to compare)"
    ref, other = rows[0]["reference"], rows[0]["other"]
    lines = [f"| {ref} round | {ref} sparsity | {other} round (closest sparsity) | {other} sparsity | "
             f"pruned by both / all parameters | extra rounds of {ref} |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(_row([row["reference_round"], _sparsity(row["reference_sparsity"]), row["other_round"],
                           _sparsity(row["other_sparsity"]), _sparsity(row["similarity"]),
                           f"{row['extra_rounds']:+d}"]))
    return "\n".join(lines)
