"""Comparing runs of one setup (COLT-N against LTH): rounds to reach a sparsity, metric against sparsity
(with the tickets' controls), wall time, and the paper's Fig. 5 and Fig. 7 plots; plus the choice of tickets
for a per-class table.

Runs whose configs differ only in their seed form a *series*; a series of several seeds adds mean ± sample
standard deviation tables and bands in Fig. 5, so a difference between methods can be told from seed noise.
Sparsity is always read from each round's own `sparsity.json` (the mask that round trained under), so
the tables agree with the runs' reports. Task-agnostic: metrics are whatever the front end evaluated.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colt_core.config import ConfigError, flatten, read_yaml
from colt_core.errors import UserError
from colt_core.io import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    read_json,
)
from colt_core.prune.controls import CONTROLS
from colt_core.prune.sparsity import overall_sparsity, pruned_similarity
from colt_core.prune.ticket import TicketError, read_ticket_header
from colt_core.rundir import (
    Evaluation,
    RoundDir,
    RunDir,
    RunDirError,
    open_run,
    read_evaluation,
    read_summary,
)

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.2, 0.4, 0.5, 0.6, 0.7, 0.79, 0.9)
# Keys that legitimately differ between the runs of one setup: what is compared, when a run stops, what it
# evaluates, and where it is written.
IGNORED_CONFIG_KEYS = ("prune.method", "prune.partitions", "prune.rates", "prune.max_rounds",
                       "prune.target_sparsity", "prune.evaluate", "prune.controls", "output_dir")
# Keys that differ between the runs of one series: the seeds of one setup, each in its own folder.
SERIES_KEYS = ("seed", "output_dir")
# Fig. 5 line format of each control, in the order of the controls' columns (colour: the run's or series').
CONTROL_FORMATS = (":^", "-.v", ":D")
# Sparsities are exact fractions of integer counts; this only absorbs float formatting of a level.
LEVEL_TOLERANCE = 1e-9


class CompareError(UserError, ValueError):
    """Runs cannot be read or compared as asked."""


@dataclass
class ComparedRound:
    """One round of a run: its mask's sparsity, its trainings' wall time, and its ticket's evaluation."""

    round: int
    sparsity: float  # over the prunable weights, from round_XX/sparsity.json
    prune_rate: float | None  # the paper's zeros / all parameters
    total_params: int | None
    search_time_s: float | None  # partition trainings of this round; None: not recorded in summary.json
    eval_time_s: float | None
    metric: str | None = None
    value: float | None = None
    per_class: dict[str, float] = field(default_factory=dict)
    controls: dict[str, float | None] = field(default_factory=dict)  # control name -> its value

    @property
    def wall_time_s(self) -> float | None:
        if self.search_time_s is None:
            return None
        return self.search_time_s + (self.eval_time_s or 0.0)

    @property
    def evaluated(self) -> bool:
        return isinstance(self.value, (int, float))


@dataclass
class ComparedRun:
    """What the comparison reads from one run directory."""

    path: Path
    label: str
    method: str
    partitions: int
    config: dict[str, Any]
    rounds: list[ComparedRound]
    finished: bool
    architecture: dict[str, Any] | None
    class_names: list[str]
    method_label: str = ""  # COLT-N or LTH as summary.json names it; the label before it is made unique

    def __post_init__(self) -> None:
        self.method_label = self.method_label or self.label

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def round_reaching(self, level: float) -> ComparedRound | None:
        """The first round whose mask is at least `level` sparse (None when the run never got there)."""
        for record in self.rounds:
            if record.sparsity >= level - LEVEL_TOLERANCE:
                return record
        return None

    def search_time_before(self, r: int) -> float | None:
        """Wall time of the trainings that produced round `r`'s mask (rounds 0 … r-1)."""
        times = [rec.search_time_s for rec in self.rounds if rec.round < r]
        return None if any(t is None for t in times) else float(sum(times))

    @property
    def evaluated(self) -> list[ComparedRound]:
        return [r for r in self.rounds if r.evaluated]

    @property
    def total_search_time_s(self) -> float:
        return float(sum(r.search_time_s or 0.0 for r in self.rounds))

    @property
    def total_eval_time_s(self) -> float:
        return float(sum(r.eval_time_s or 0.0 for r in self.rounds))


def read_run(path: str | Path, label: str | None = None) -> ComparedRun:
    """Read a run directory's summary, config and every round's sparsity report and evaluation."""
    try:
        run = open_run(path, needs=("summary", "config"))
        summary = read_summary(run)
        config = read_yaml(run.config)
        split = read_json(run.split) if run.split.is_file() else {}
        header = read_ticket_header(run.ticket) if run.is_finished() else None
    except (CheckpointError, ConfigError, TicketError, RunDirError) as exc:
        raise CompareError(str(exc)) from None
    stored = {rec.round: rec for rec in summary.rounds}
    rounds = []
    for r in run.rounds():
        rdir = run.round(r)
        rec = stored.get(r)
        evaluation = rec.evaluation if rec is not None else None
        try:
            report = read_json(rdir.sparsity) if rdir.sparsity.is_file() else None
            if report is None:  # killed between writing the mask and its report: recount the mask
                report = {"overall": {"sparsity": overall_sparsity(load_checkpoint(rdir.mask))}}
            if evaluation is None and rdir.eval.metrics.is_file():
                evaluation = read_evaluation(rdir.eval)
            controls = _read_controls(rdir, rec.controls if rec is not None else {})
        except CheckpointError as exc:
            raise CompareError(str(exc)) from None
        rate = report.get("prune_rate", {})
        rounds.append(ComparedRound(
            round=r, sparsity=float(report["overall"]["sparsity"]), prune_rate=rate.get("rate"),
            total_params=rate.get("all_params"),
            search_time_s=None if rec is None else rec.search_time_s,
            eval_time_s=None if rec is None else (evaluation.wall_time_s if evaluation else 0.0),
            metric=evaluation.metric if evaluation else None, value=evaluation.value if evaluation else None,
            per_class={k: v for k, v in (evaluation.per_class if evaluation else {}).items()
                       if isinstance(v, (int, float))},
            controls={name: control.value for name, control in controls.items()}))
    if not rounds:
        raise CompareError(f"{run.path}: no round_XX/mask.pt on disk; the run has not started")
    return ComparedRun(path=run.path, label=label or summary.label, method=summary.method,
                       partitions=summary.partitions, config=config, rounds=rounds, finished=header is not None,
                       architecture=header["architecture"] if header else None,
                       class_names=list(split.get("class_names", [])), method_label=summary.label)


def _read_controls(rdir: RoundDir, stored: Mapping[str, Evaluation]) -> dict[str, Evaluation]:
    """A round's controls as summary.json records them, else from their metrics.json (a run stopped before
    its summary was written); known controls first, in their usual order."""
    controls = dict(stored)
    for name in CONTROLS:
        if name not in controls and rdir.control(name).metrics.is_file():
            controls[name] = read_evaluation(rdir.control(name))
    return {name: controls[name] for name in _in_usual_order(controls)}


def _in_usual_order(names: Iterable[str]) -> list[str]:
    """Control names with the known ones first, in the order colt_core.prune.controls lists them."""
    found = set(names)
    return [n for n in CONTROLS if n in found] + sorted(found - set(CONTROLS))


def read_runs(paths: Sequence[str | Path], labels: Sequence[str] = ()) -> list[ComparedRun]:
    """Read several runs; labels default to the method (LTH, COLT-2), made unique with the folder name."""
    if labels and len(labels) != len(paths):
        raise CompareError(f"{len(labels)} labels given for {len(paths)} runs; give one per run or none")
    runs = [read_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    if not labels:
        for suffix in (lambda i, run: f" ({run.path.name})", lambda i, run: f" #{i + 1}"):
            counts: dict[str, int] = {}
            for run in runs:
                counts[run.label] = counts.get(run.label, 0) + 1
            for i, run in enumerate(runs):
                if counts[run.label] > 1:
                    run.label += suffix(i, run)
    if len({r.label for r in runs}) != len(runs):
        raise CompareError(f"run labels must be unique, got {[r.label for r in runs]}")
    return runs


# ----- series and configs ----------------------------------------------------------------------------
@dataclass
class Series:
    """Runs of one setup that differ only in their seed: what varies between them is the seeds' noise."""

    label: str  # a single run's own label; several: "COLT-2 (3 seeds: 0, 1, 2)"
    runs: list[ComparedRun]

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]


def _matches(key: str, keys: Sequence[str]) -> bool:
    """Whether a flattened config key is one of `keys` or inside one of them."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def _setup(run: ComparedRun) -> dict[str, Any]:
    """What the runs of one series share: the method and the config but for its seed and folder."""
    config = {k: v for k, v in flatten(run.config).items() if not _matches(k, SERIES_KEYS)}
    return {"method": run.method, "partitions": run.partitions, **config}


def group_series(runs: Sequence[ComparedRun]) -> list[Series]:
    """The runs grouped by setup, in the order each setup first appears; labels unique (#2 for a repeat)."""
    groups: list[tuple[dict[str, Any], list[ComparedRun]]] = []
    for run in runs:
        setup = _setup(run)
        members = next((m for s, m in groups if s == setup), None)
        if members is None:
            groups.append((setup, [run]))
        else:
            members.append(run)
    series: list[Series] = []
    for _, members in groups:
        seeds = ", ".join(str(run.seed) for run in members)
        label = members[0].label if len(members) == 1 else \
            f"{members[0].method_label} ({len(members)} seeds: {seeds})"
        unique, k = label, 1
        while unique in {s.label for s in series}:
            k += 1
            unique = f"{label} #{k}"
        series.append(Series(unique, members))
    return series


def seed_series(runs: Sequence[ComparedRun]) -> list[Series]:
    """The series of several seeds: those with a spread to show."""
    return [s for s in group_series(runs) if len(s.runs) > 1]


def config_differences(runs: Sequence[ComparedRun], ignore: Sequence[str] = IGNORED_CONFIG_KEYS) -> list[str]:
    """Config keys on which some series differs from the first, beyond those a comparison varies.

    Each series' seeds count as one value (their sorted list): the seeds within a series never differ, two
    series run at other seeds do.
    """
    def config(series: Series) -> dict[str, Any]:
        flat = flatten(series.runs[0].config)
        for key in SERIES_KEYS:
            if key in flat:
                flat[key] = sorted({flatten(run.config).get(key) for run in series.runs}, key=repr)
        return flat

    configs = [config(s) for s in group_series(runs)]
    first = configs[0]
    keys: list[str] = []
    for other in configs[1:]:
        for key in sorted(set(first) | set(other)):
            if not _matches(key, ignore) and first.get(key) != other.get(key) and key not in keys:
                keys.append(key)
    return keys


# ----- tables ----------------------------------------------------------------------------------------
def sparsity_levels(runs: Sequence[ComparedRun], levels: Sequence[float] = DEFAULT_LEVELS) -> list[float]:
    """The given levels plus every sparsity a run's rounds reached (round 0's dense mask left out).

    Levels that the tables would print alike (20% and a run's own 19.99997%) are one level, the lowest of
    them, so that each run whose own sparsity it is counts as reaching it.
    """
    found = [float(x) for x in levels] + [r.sparsity for run in runs for r in run.rounds if r.sparsity > 0]
    lowest: dict[str, float] = {}
    for level in found:
        shown = _pct(level)
        lowest[shown] = min(level, lowest.get(shown, level))
    return sorted(lowest.values())


def series_levels(runs: Sequence[ComparedRun], levels: Sequence[float] = DEFAULT_LEVELS) -> list[float]:
    """The levels asked for alone (each seed's own sparsities would be rows of noise), each as
    `sparsity_levels` has it: the lowest sparsity printed alike, so a run at 19.99997% reaches 20%."""
    shown = {_pct(level) for level in levels}
    return [level for level in sparsity_levels(runs, levels) if _pct(level) in shown]


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
    return _in_usual_order(name for run in runs for r in run.rounds for name in r.controls)


def metric_rows(runs: Sequence[ComparedRun], controls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every evaluated ticket: run, round, both sparsities, metric and value, and a column per control."""
    return [{"run": run.label, "round": r.round, "sparsity": r.sparsity, "prune_rate": r.prune_rate,
             "metric": r.metric, "value": r.value, **{name: r.controls.get(name) for name in controls}}
            for run in runs for r in run.evaluated]


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n − 1) of n seeds' values; no mean below one value, no std below
    two. In a table row it is three columns, NAME_n, NAME_mean and NAME_std."""

    n: int
    mean: float | None
    std: float | None

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread:
        known = [float(v) for v in values if v is not None]
        return cls(len(known), statistics.mean(known) if known else None,
                   statistics.stdev(known) if len(known) > 1 else None)

    @staticmethod
    def keys(name: str) -> list[str]:
        return [f"{name}_n", f"{name}_mean", f"{name}_std"]

    def columns(self, name: str) -> dict[str, Any]:
        return dict(zip(self.keys(name), (self.n, self.mean, self.std)))

    @classmethod
    def from_columns(cls, row: Mapping[str, Any], name: str) -> Spread:
        return cls(*(row[key] for key in cls.keys(name)))


def series_round_rows(series: Sequence[Series], controls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per series and round: the spread of the mask's sparsity over the seeds that have the round, and of the
    ticket's value and each control's over the seeds that evaluated them."""
    rows = []
    for s in series:
        for r in sorted({rec.round for run in s.runs for rec in run.rounds}):
            recs = [rec for run in s.runs for rec in run.rounds if rec.round == r]
            evaluated = [rec for rec in recs if rec.evaluated]
            row = {"series": s.label, "round": r, **Spread.of([rec.sparsity for rec in recs]).columns("sparsity"),
                   "metric": next((rec.metric for rec in evaluated), None),
                   **Spread.of([rec.value for rec in evaluated]).columns("value")}
            for name in controls:
                row.update(Spread.of([rec.controls.get(name) for rec in recs]).columns(name))
            rows.append(row)
    return rows


def series_rounds_to_sparsity(series: Sequence[Series], levels: Sequence[float]) -> list[dict[str, Any]]:
    """Per level and series: the spread of the first round at or above it over the seeds that reached it."""
    rows = []
    for level in levels:
        for s in series:
            reached = [rec.round for run in s.runs if (rec := run.round_reaching(level)) is not None]
            rows.append({"level": level, "series": s.label, "seeds": len(s.runs),
                         **Spread.of(reached).columns("rounds")})
    return rows


def series_rows(series: Sequence[Series]) -> list[dict[str, Any]]:
    """Which runs (and seeds) each series holds."""
    return [{"series": s.label, "method": s.method, "runs": [run.label for run in s.runs], "seeds": s.seeds}
            for s in series]


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


def comparison_pairs(runs: Sequence[ComparedRun]) -> list[tuple[ComparedRun, ComparedRun]]:
    """(reference, other) pairs for Fig. 7: each LTH run against each COLT run (of the same seed, when seeds
    pair up), else the first vs the rest."""
    lth = [r for r in runs if r.method == "lth"]
    colt = [r for r in runs if r.method != "lth"]
    if lth and colt:
        same_seed = [(a, b) for a in lth for b in colt if a.seed == b.seed]
        return same_seed or [(a, b) for a in lth for b in colt]
    return [(runs[0], other) for other in runs[1:]]


def similarity_rows(reference: ComparedRun, other: ComparedRun) -> list[dict[str, Any]]:
    """Fig. 7: for each pruned round of `reference`, the `other` mask of closest sparsity and the share of
    all parameters that both prune (`pruned_similarity` over every parameter of the model)."""
    candidates = [r for r in other.rounds if r.sparsity > 0]
    rows = []
    for ref in reference.rounds:
        if ref.sparsity <= 0 or not candidates:
            continue
        match = min(candidates, key=lambda r: (abs(r.sparsity - ref.sparsity), r.round))
        if ref.total_params is not None and match.total_params not in (None, ref.total_params):
            raise CompareError(f"{reference.path} and {other.path} prune models of different sizes "
                               f"({ref.total_params} and {match.total_params} parameters)")
        mask_a = load_checkpoint(RunDir(reference.path).round(ref.round).mask)
        mask_b = load_checkpoint(RunDir(other.path).round(match.round).mask)
        try:
            similarity = pruned_similarity(mask_a, mask_b, ref.total_params)
        except ValueError as exc:
            raise CompareError(f"{reference.path} round {ref.round} and {other.path} round {match.round}: "
                               f"{exc}; the runs prune different models") from None
        rows.append({"reference": reference.label, "reference_round": ref.round,
                     "reference_sparsity": ref.sparsity, "other": other.label, "other_round": match.round,
                     "other_sparsity": match.sparsity, "similarity": similarity,
                     "extra_rounds": ref.round - match.round})
    return rows


def matching_tickets(runs: Sequence[ComparedRun]) -> tuple[tuple[ComparedRun, ComparedRound] | None,
                                                          list[tuple[ComparedRun, ComparedRound]]]:
    """The dense model and each run's evaluated ticket at a sparsity all runs reached (the paper's Table VII).

    The level is the highest sparsity that every run with an evaluated sparse ticket has evaluated; each
    run contributes its evaluated ticket closest to it. The dense model is the first run's round 0.
    """
    dense = next(((run, r) for run in runs for r in run.evaluated if r.sparsity == 0 and r.per_class), None)
    sparse = {run.label: [r for r in run.evaluated if r.sparsity > 0 and r.per_class] for run in runs}
    reached = [max(rs, key=lambda r: r.sparsity).sparsity for rs in sparse.values() if rs]
    if not reached:
        return dense, []
    level = min(reached)
    tickets = [(run, min(sparse[run.label], key=lambda r: (abs(r.sparsity - level), r.round)))
               for run in runs if sparse[run.label]]
    return dense, tickets


# ----- formatting ------------------------------------------------------------------------------------
def _pct(x: float | None, digits: int = 2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def _secs(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


def _metric_value(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _spread_text(row: Mapping[str, Any], name: str, scale: float = 100.0) -> str:
    """'mean ± std (n=k)' of a row's spread columns, scaled (100: percent); no ± for a single value."""
    spread = Spread.from_columns(row, name)
    if spread.mean is None:
        return ""
    text = f"{scale * spread.mean:.2f}" + ("" if spread.std is None else f" ± {scale * spread.std:.2f}")
    return f"{text} (n={spread.n})"


def runs_markdown(runs: Sequence[ComparedRun]) -> str:
    lines = ["| run | directory | method | partitions | rates | rounds | final sparsity | prune rate | "
             "final metric | search time (s) | eval time (s) | total (s) |",
             "|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for run in runs:
        last = run.rounds[-1]
        final_eval = run.evaluated[-1] if run.evaluated else None
        rates = ", ".join(f"{k} {v}" for k, v in (run.config.get("prune", {}).get("rates") or {}).items())
        metric = "" if final_eval is None else f"{final_eval.metric} {_metric_value(final_eval.value)} " \
                                               f"(round {final_eval.round})"
        state = "" if run.finished else " (unfinished)"
        lines.append(f"| {run.label} | {run.path} | {run.method}{state} | {run.partitions} | {rates} | "
                     f"{last.round} | {_pct(last.sparsity)} | {_pct(last.prune_rate)} | {metric} | "
                     f"{_secs(run.total_search_time_s)} | {_secs(run.total_eval_time_s)} | "
                     f"{_secs(run.total_search_time_s + run.total_eval_time_s)} |")
    return "\n".join(lines)


def _level_table(labels: Sequence[str], rows: Sequence[Mapping[str, Any]], column: str,
                 cell: Callable[[Mapping[str, Any]], str]) -> str:
    """Wide table: one row per level, a column per label (the rows' `column`), each cell as `cell` writes it."""
    lines = ["| sparsity ≥ | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
    by_level: dict[float, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        by_level.setdefault(row["level"], {})[row[column]] = row
    for level, cells in by_level.items():
        lines.append(f"| {_pct(level)} | " + " | ".join(cell(cells[label]) for label in labels) + " |")
    return "\n".join(lines)


def _rounds_cell(row: Mapping[str, Any]) -> str:
    if row["rounds"] is None:
        return "not reached"
    time_text = "" if row["search_time_s"] is None else f", {row['search_time_s']:.1f} s"
    return f"{row['rounds']} ({_pct(row['sparsity'])}{time_text})"


def rounds_to_sparsity_markdown(runs: Sequence[ComparedRun], rows: Sequence[Mapping[str, Any]]) -> str:
    """Wide table: one row per level, per run 'rounds (sparsity reached, search time)'."""
    return _level_table([r.label for r in runs], rows, "run", _rounds_cell)


def series_rounds_to_sparsity_markdown(series: Sequence[Series], rows: Sequence[Mapping[str, Any]]) -> str:
    """Wide table: one row per level, per series 'mean ± std (n=seeds that reached it)' of the rounds."""
    return _level_table([s.label for s in series], rows, "series",
                        lambda row: _spread_text(row, "rounds", scale=1.0) or "not reached")


def metric_markdown(rows: Sequence[Mapping[str, Any]], controls: Sequence[str] = ()) -> str:
    lines = ["| run | round | sparsity (prunable weights) | prune rate (all parameters) | metric | "
             "value (%) |" + "".join(f" {name} (%) |" for name in controls),
             "|---|---:|---:|---:|---|---:|" + "---:|" * len(controls)]
    for row in rows:
        lines.append(f"| {row['run']} | {row['round']} | {_pct(row['sparsity'])} | "
                     f"{_pct(row['prune_rate'])} | {row['metric'] or ''} | {_metric_value(row['value'])} |"
                     + "".join(f" {_metric_value(row[name])} |" for name in controls))
    return "\n".join(lines)


def series_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Which runs each series holds, with their seeds."""
    lines = ["| series | method | runs | seeds |", "|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s['series']} | {s['method']} | {', '.join(s['runs'])} | "
                     f"{', '.join(str(seed) for seed in s['seeds'])} |")
    return "\n".join(lines)


def series_metric_markdown(rows: Sequence[Mapping[str, Any]], controls: Sequence[str] = ()) -> str:
    """Per series and round: sparsity, ticket value and each control's value as 'mean ± std (n=seeds)'."""
    lines = ["| series | round | sparsity (%) | metric | value (%) |" + "".join(f" {c} (%) |" for c in controls),
             "|---|---:|---:|---|---:|" + "---:|" * len(controls)]
    for row in rows:
        cells = [_spread_text(row, "sparsity"), row["metric"] or "", _spread_text(row, "value"),
                 *(_spread_text(row, name) for name in controls)]
        lines.append(f"| {row['series']} | {row['round']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wall_time_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| run | round | sparsity | partition trainings (s) | ticket evaluation (s) | round (s) | "
             "cumulative (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['run']} | {row['round']} | {_pct(row['sparsity'])} | "
                     f"{_secs(row['search_time_s'])} | {_secs(row['eval_time_s'])} | "
                     f"{_secs(row['wall_time_s'])} | {_secs(row['cumulative_s'])} |")
    return "\n".join(lines)


def similarity_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no pruned rounds to compare)"
    ref, other = rows[0]["reference"], rows[0]["other"]
    lines = [f"| {ref} round | {ref} sparsity | {other} round (closest sparsity) | {other} sparsity | "
             f"pruned by both / all parameters | extra rounds of {ref} |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['reference_round']} | {_pct(row['reference_sparsity'])} | "
                     f"{row['other_round']} | {_pct(row['other_sparsity'])} | {_pct(row['similarity'])} | "
                     f"{row['extra_rounds']:+d} |")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Rows as CSV (empty cells for None), written atomically."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    atomic_write_text(out.getvalue(), path)
    return Path(path)


# ----- plots -----------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _pyplot().close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    return Path(path)


def series_colours(series: Sequence[Series]) -> dict[str, str]:
    """One colour per series: the paper's red for the first LTH series and green for the first COLT one."""
    preferred = {"lth": "tab:red", "colt": "tab:green"}
    others = iter(c for c in _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
                  if c not in ("#d62728", "#2ca02c"))
    colours: dict[str, str] = {}
    for s in series:
        colour = preferred.pop(s.method, None)
        colours[s.label] = colour or next(others, "black")
    return colours


def _band(rows: Sequence[Mapping[str, Any]], name: str) -> tuple[list[float], list[float]]:
    """Mean − std and mean + std of the rows' `name` in percent (the mean alone where there is no std)."""
    spreads = [Spread.from_columns(row, name) for row in rows]
    return ([100 * (s.mean - (s.std or 0.0)) for s in spreads], [100 * (s.mean + (s.std or 0.0)) for s in spreads])


def _plot_spread(ax: Any, rows: Sequence[Mapping[str, Any]], name: str, fmt: str, colour: str, label: str,
                 band: bool) -> None:
    """A line of the rows' mean `name` against their mean sparsity, with a band of ± one std if asked."""
    rows = [row for row in rows if row[f"{name}_n"]]
    if not rows:
        return
    xs = [100 * row["sparsity_mean"] for row in rows]
    ax.plot(xs, [100 * row[f"{name}_mean"] for row in rows], fmt, color=colour, label=label)
    if band:
        ax.fill_between(xs, *_band(rows, name), color=colour, alpha=0.15, linewidth=0)


def plot_metric_and_rounds(runs: Sequence[ComparedRun], path: str | Path, title: str = "") -> Path:
    """Fig. 5: ticket metric (solid, left axis), its controls (dotted) and rounds taken (dashed, right axis)
    against sparsity; one line per series: a run's own, or the mean of several seeds in a band of ± one std."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    rounds_ax = ax.twinx()
    series = group_series(runs)
    colours = series_colours(series)
    controls = control_names(runs)
    metric_names = sorted({r.metric for run in runs for r in run.evaluated if r.metric})
    for s in series:
        colour = colours[s.label]
        rows = series_round_rows([s], controls)
        metric = next((row["metric"] for row in rows if row["value_n"]), None)
        band = len(s.runs) > 1
        _plot_spread(ax, rows, "value", "-o", colour, f"{s.label} {metric or 'metric'}", band)
        for name, fmt in zip(controls, itertools.cycle(CONTROL_FORMATS)):
            _plot_spread(ax, rows, name, fmt, colour, f"{s.label} {name}", band)
        rounds = [row["round"] for row in rows]
        rounds_ax.plot([100 * row["sparsity_mean"] for row in rows], rounds, "--s", color=colour, alpha=0.8,
                       markersize=4, label=f"{s.label} rounds")
        if band:
            rounds_ax.fill_betweenx(rounds, *_band(rows, "sparsity"), color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel("sparsity of the prunable weights (%)")
    ax.set_ylabel(f"{' / '.join(metric_names) or 'metric'} (%)")
    rounds_ax.set_ylabel("pruning rounds")
    rounds_ax.yaxis.get_major_locator().set_params(integer=True)
    handles = ax.get_legend_handles_labels()
    more = rounds_ax.get_legend_handles_labels()
    # Below the axes: the lines of both y axes span the whole plot, so no corner inside is free.
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize="small", loc="upper center",
              bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    bands = "\nseries of several seeds: mean, shaded ± one std" if any(len(s.runs) > 1 for s in series) else ""
    ax.set_title(title or f"Ticket metric (solid) and pruning rounds (dashed) against sparsity{bands}")
    fig.tight_layout()
    return _save_png(fig, path)


def plot_similarity(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Fig. 7: similarity of the pruned weights as bars and the rounds each method took, against the
    reference's sparsity (with the extra rounds the reference took under each)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = list(range(len(rows)))
    ref = rows[0]["reference"] if rows else "reference"
    other = rows[0]["other"] if rows else "other"
    ax.bar(xs, [100 * r["similarity"] for r in rows], color="tab:blue", alpha=0.75,
           label="pruned by both / all parameters")
    ax.set_xticks(xs)
    # The extra rounds the reference needed sit under each sparsity, where no line can hide them.
    ax.set_xticklabels([f"{100 * r['reference_sparsity']:.1f}\n{r['extra_rounds']:+d}" for r in rows])
    ax.set_xlabel(f"sparsity of the {ref} ticket (%), and the extra rounds {ref} took")
    ax.set_ylabel("pruned-weight similarity (%)")
    ax.set_ylim(0, 100)
    rounds_ax = ax.twinx()
    rounds_ax.plot(xs, [r["reference_round"] for r in rows], "-o", color="tab:red", label=f"rounds {ref}")
    rounds_ax.plot(xs, [r["other_round"] for r in rows], "-o", color="tab:green", label=f"rounds {other}")
    rounds_ax.set_ylabel("pruning rounds")
    rounds_ax.set_ylim(bottom=0)
    rounds_ax.yaxis.get_major_locator().set_params(integer=True)
    handles = ax.get_legend_handles_labels()
    more = rounds_ax.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize="small", loc="upper left")
    ax.set_title(title or f"Pruned weights common to {ref} and {other}")
    fig.tight_layout()
    return _save_png(fig, path)


# ----- everything at once ----------------------------------------------------------------------------
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower() or "run"


def write_series(runs: Sequence[ComparedRun], out_dir: Path, levels: Sequence[float], controls: Sequence[str]
                 ) -> tuple[list[str], dict[str, Path], dict[str, Any]]:
    """The series section of comparison.md, its CSV files and its comparison.json entries; nothing at all when
    no series has several seeds, so a comparison of single runs reads as before."""
    series = seed_series(runs)
    if not series:
        return [], {}, {}
    listing = series_rows(group_series(runs))
    per_round = series_round_rows(series, controls)
    r2s = series_rounds_to_sparsity(series, levels)
    files = {"series_metric_csv": write_csv(out_dir / "series_metric.csv", per_round,
                                            ["series", "round", *Spread.keys("sparsity"), "metric",
                                             *Spread.keys("value"), *(k for c in controls for k in Spread.keys(c))]),
             "series_rounds_csv": write_csv(out_dir / "series_rounds_to_sparsity.csv", r2s,
                                            ["level", "series", "seeds", *Spread.keys("rounds")])}
    parts = ["## Series: mean ± std over seeds", "",
             "Runs whose configs differ only in seed (and output_dir) form a series. Each cell is the mean ± "
             "the sample standard deviation (n − 1) over the series' seeds, with n, the number of seeds it is "
             "over; no ± where n = 1. Fig. 5 draws each series of several seeds as its mean, shaded ± one std.",
             "", series_markdown(listing), "",
             "### Rounds to reach each sparsity", "",
             "The first round whose mask is at least that sparse, over the seeds that reached it.", "",
             series_rounds_to_sparsity_markdown(series, r2s), "",
             "### Sparsity and ticket metric per round", "",
             "Sparsity over the seeds that have the round; the ticket's value, and each control's, over the "
             "seeds that evaluated it.", "",
             series_metric_markdown(per_round, controls), ""]
    return parts, files, {"series": listing, "series_metric": per_round, "series_rounds_to_sparsity": r2s}


def write_comparison(runs: Sequence[ComparedRun], out_dir: str | Path, levels: Sequence[float] = DEFAULT_LEVELS,
                     extra_sections: Sequence[str] = (), extra_files: Mapping[str, Path] | None = None
                     ) -> dict[str, Path]:
    """Write comparison.md, CSV tables, comparison.json and the Fig. 5 / Fig. 7 PNGs; return the paths.

    `extra_sections` (Markdown) are appended to comparison.md, e.g. a front end's per-class table.
    """
    if not runs:
        raise CompareError("no runs to compare")
    out_dir = Path(out_dir)
    if any(out_dir.resolve() == run.path.resolve() for run in runs):
        raise CompareError(f"--out {out_dir} is one of the runs; its report files would be replaced, choose "
                           "another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = dict(extra_files or {})
    all_levels = sparsity_levels(runs, levels)
    r2s = rounds_to_sparsity(runs, all_levels)
    controls = control_names(runs)
    metrics = metric_rows(runs, controls)
    times = wall_time_rows(runs)
    diffs = config_differences(runs)
    if diffs:
        log.warning("the runs' configs differ beyond %s at: %s", ", ".join(IGNORED_CONFIG_KEYS),
                    ", ".join(diffs))

    files["rounds_csv"] = write_csv(out_dir / "rounds_to_sparsity.csv", r2s,
                                    ["level", "run", "method", "rounds", "sparsity", "prune_rate",
                                     "search_time_s"])
    files["metric_csv"] = write_csv(out_dir / "metric_vs_sparsity.csv", metrics,
                                    ["run", "round", "sparsity", "prune_rate", "metric", "value", *controls])
    files["wall_time_csv"] = write_csv(out_dir / "wall_time.csv", times,
                                       ["run", "round", "sparsity", "search_time_s", "eval_time_s",
                                        "wall_time_s", "cumulative_s"])
    files["fig5"] = plot_metric_and_rounds(runs, out_dir / "fig5_metric_rounds_vs_sparsity.png")

    names = " vs ".join(r.label for r in runs)
    parts = [f"# Comparison: {names}", ""]
    if diffs:
        parts += [f"> **Warning:** the configs differ beyond {', '.join(IGNORED_CONFIG_KEYS)} at: "
                  f"{', '.join(diffs)}. The runs may not be of the same setup.", ""]
    parts += ["## Runs", "", runs_markdown(runs), "",
              "## Rounds to reach each sparsity", "",
              "The first round whose mask is at least that sparse (sparsity over the prunable weights, from "
              "each round's sparsity.json), the sparsity it has, and the wall time of the trainings before "
              "it.",
              "", rounds_to_sparsity_markdown(runs, r2s), "",
              "## Ticket metric against sparsity", ""]
    if controls:
        parts += ["The last columns are the ticket's controls, trained and evaluated with its recipe: "
                  "random_prune, a random mask with the ticket's per-layer counts from the ticket's start "
                  "weights; random_reinit, the ticket's mask on a fresh initialisation.", ""]
    parts += [metric_markdown(metrics, controls) if metrics else "(no evaluated tickets)", "",
              f"![Fig. 5 style: metric and rounds against sparsity]({files['fig5'].name})", ""]
    section, series_files, series_json = write_series(runs, out_dir, series_levels(runs, levels), controls)
    parts += section
    files.update(series_files)
    parts += ["## Wall time per round", "", wall_time_markdown(times), ""]

    similarity: list[dict[str, Any]] = []
    pairs = comparison_pairs(runs)
    if pairs:
        parts += ["## Pruned-weight similarity (Fig. 7)", "",
                  "For each pruned round of the reference run, the other run's mask of the closest sparsity; "
                  "similarity = weights pruned by both / all parameters of the model.", ""]
    for i, (ref, other) in enumerate(pairs):
        try:
            rows = similarity_rows(ref, other)
        except CompareError as exc:
            log.warning("Fig. 7 skipped for %s vs %s: %s", ref.label, other.label, exc)
            parts += [f"{ref.label} vs {other.label}: skipped ({exc})", ""]
            continue
        similarity += rows
        suffix = "" if len(pairs) == 1 else f"_{_slug(ref.label)}_vs_{_slug(other.label)}"
        key = "fig7" if len(pairs) == 1 else f"fig7_{i}"
        parts += [f"### {ref.label} vs {other.label}", "", similarity_markdown(rows), ""]
        if rows:
            files[key] = plot_similarity(rows, out_dir / f"fig7_similarity{suffix}.png")
            parts += [f"![Fig. 7 style: pruned-weight similarity]({files[key].name})", ""]
    files["similarity_csv"] = write_csv(out_dir / "similarity.csv", similarity,
                                        ["reference", "reference_round", "reference_sparsity", "other",
                                         "other_round", "other_sparsity", "similarity", "extra_rounds"])
    for section in extra_sections:
        parts += [section, ""]
    files["markdown"] = out_dir / "comparison.md"
    atomic_write_text("\n".join(parts), files["markdown"])
    files["json"] = out_dir / "comparison.json"
    atomic_write_json(json.loads(json.dumps({
        "runs": [{"label": r.label, "path": str(r.path), "method": r.method, "partitions": r.partitions,
                  "finished": r.finished, "total_search_time_s": r.total_search_time_s,
                  "total_eval_time_s": r.total_eval_time_s} for r in runs],
        "config_differences": diffs, "rounds_to_sparsity": r2s, "metric_vs_sparsity": metrics,
        "wall_time": times, "similarity": similarity, **series_json}, default=str)), files["json"])
    return files
