"""The runs a comparison reads: each run directory's summary, config and every round's sparsity report,
evaluation and controls, as plain records (`ComparedRun`, `ComparedRound`).

Sparsity is always read from each round's own `sparsity.json` (the mask that round trained under), so the
comparison's tables agree with the runs' reports. Task-agnostic: metrics are whatever the front end evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colt_core.config import ConfigError, read_yaml
from colt_core.errors import UserError
from colt_core.io import CheckpointError, load_checkpoint, read_json
from colt_core.prune.controls import CONTROLS
from colt_core.prune.sparsity import overall_sparsity
from colt_core.prune.ticket import TicketError, read_ticket_header
from colt_core.rundir import (
    Evaluation,
    RoundDir,
    RoundRecord,
    RunDirError,
    RunSummary,
    open_run,
    read_evaluation,
    read_summary,
)

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
    interval: tuple[float, float] | None = None  # the value's, where the evaluation carries one
    control_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # control name -> its interval

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
    summary: RunSummary | None = None  # summary.json as read (its search trainings' records)

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



def _read_round(rdir: RoundDir, r: int, stored: RoundRecord | None) -> ComparedRound:
    """One round: its sparsity report (recounted from the mask when the run was killed before writing it), and
    its evaluation and controls as summary.json records them, else as their metrics.json on disk holds them."""
    evaluation = stored.evaluation if stored is not None else None
    try:
        report = read_json(rdir.sparsity) if rdir.sparsity.is_file() else None
        if report is None:  # killed between writing the mask and its report: recount the mask
            report = {"overall": {"sparsity": overall_sparsity(load_checkpoint(rdir.mask))}}
        if evaluation is None and rdir.eval.metrics.is_file():
            evaluation = read_evaluation(rdir.eval)
        controls = _read_controls(rdir, stored.controls if stored is not None else {})
    except CheckpointError as exc:
        raise CompareError(str(exc)) from None
    rate = report.get("prune_rate", {})
    return ComparedRound(
        round=r, sparsity=float(report["overall"]["sparsity"]), prune_rate=rate.get("rate"),
        total_params=rate.get("all_params"),
        search_time_s=None if stored is None else stored.search_time_s,
        eval_time_s=None if stored is None else (evaluation.wall_time_s if evaluation else 0.0),
        metric=evaluation.metric if evaluation else None, value=evaluation.value if evaluation else None,
        per_class={k: v for k, v in (evaluation.per_class if evaluation else {}).items()
                   if isinstance(v, (int, float))},
        controls={name: control.value for name, control in controls.items()},
        interval=evaluation.interval() if evaluation else None,
        control_intervals={name: interval for name, control in controls.items()
                           if (interval := control.interval()) is not None})


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
    rounds = [_read_round(run.round(r), r, stored.get(r)) for r in run.rounds()]
    if not rounds:
        raise CompareError(f"{run.path}: no round_XX/mask.pt on disk; the run has not started")
    return ComparedRun(path=run.path, label=label or summary.label, method=summary.method,
                       partitions=summary.partitions, config=config, rounds=rounds, finished=header is not None,
                       architecture=header["architecture"] if header else None,
                       class_names=list(split.get("class_names", [])), method_label=summary.label, summary=summary)


def _read_controls(rdir: RoundDir, stored: Mapping[str, Evaluation]) -> dict[str, Evaluation]:
    """A round's controls as summary.json records them, else from their metrics.json (a run stopped before
    its summary was written); known controls first, in their usual order."""
    controls = dict(stored)
    for name in CONTROLS:
        if name not in controls and rdir.control(name).metrics.is_file():
            controls[name] = read_evaluation(rdir.control(name))
    return {name: controls[name] for name in in_usual_order(controls)}


def in_usual_order(names: Iterable[str]) -> list[str]:
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
