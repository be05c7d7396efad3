"""What a run directory holds for an export: a round's ticket, its trained full-data model, and the
architecture of a run that has no ticket.pt yet.

Reads the run's records (`colt_core.rundir`) and tickets (`colt_core.prune.ticket`); an unfinished run's model is
described by the task its config names (`colt_core.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.config import ConfigError, read_yaml
from colt_core.export.errors import ExportError
from colt_core.io import load_checkpoint, read_json
from colt_core.prune.sparsity import sparsity_report
from colt_core.prune.ticket import Ticket, TicketError, read_ticket_header, validate_ticket
from colt_core.registry import task_of_config
from colt_core.rundir import RunDir, TrainingDir, read_evaluation, read_summary


def _rounds_text(rounds: Sequence[int]) -> str:
    return ", ".join(map(str, rounds)) if rounds else "none"


def start_weights(run: RunDir, r: int) -> Path:
    """Where round `r`'s ticket starts: θ0, or with late rewinding the rewind point (read from the run's config)."""
    return run.start_weights(r, read_yaml(run.config) if run.config.is_file() else {})


def _chosen_round(run: RunDir, round: int | None, header: Mapping[str, Any] | None) -> int:
    """`round` checked against the rounds on disk; None: the round of the run's final ticket."""
    rounds = run.rounds()
    if round is None:
        if header is None:
            raise ExportError(f"{run.path}: the run is unfinished (no ticket.pt); choose one of its rounds "
                              f"with --round N (rounds on disk: {_rounds_text(rounds)}) or finish it "
                              "with --resume")
        round = int(header["meta"].get("rounds", rounds[-1] if rounds else 0))
    if round not in rounds:
        state = "" if header is not None else " (the run is unfinished: no ticket.pt)"
        raise ExportError(f"{run.path}: round {round} does not exist{state}; rounds on disk: "
                          f"{_rounds_text(rounds)}")
    return round


def load_round_ticket(run: RunDir, round: int | None = None,
                      architecture: Mapping[str, Any] | None = None) -> Ticket:
    """The ticket of one round (its mask + its start weights: θ0, or with late rewinding the rewind point), or
    the run's final ticket when `round` is None.

    `architecture` describes the model when the run is unfinished (it has no ticket.pt yet). The
    returned ticket's meta holds the run's meta plus `round` and `run_dir`.
    """
    header = read_ticket_header(run.ticket) if run.is_finished() else None
    round = _chosen_round(run, round, header)
    rdir = run.round(round)
    mask = load_checkpoint(rdir.mask)
    init = load_checkpoint(start_weights(run, round))
    if header is not None:
        arch, meta = header["architecture"], dict(header["meta"])
    elif architecture is not None:
        arch, meta = dict(architecture), {}
    else:
        raise ExportError(f"{run.path}: the run is unfinished (no ticket.pt) and no architecture "
                          "description was given; finish the run with --resume, or pass the architecture")
    if run.summary.is_file():
        summary = read_summary(run)
        meta.setdefault("method", summary.method)
        meta.setdefault("partitions", summary.partitions)
    sparsity = read_json(rdir.sparsity) if rdir.sparsity.is_file() else sparsity_report(mask)
    final_round = header["meta"].get("rounds") if header is not None else None
    meta.update(round=round, run_dir=str(run.path), final=round == final_round)
    ticket = Ticket(mask=dict(mask), init=dict(init), architecture=dict(arch), sparsity=sparsity, meta=meta)
    try:
        validate_ticket(ticket, source=str(rdir.mask))
    except TicketError as exc:
        raise ExportError(str(exc)) from None
    return ticket


def evaluated_rounds(run: RunDir) -> list[int]:
    """Rounds whose ticket was trained on the full data and evaluated."""
    return [r for r in run.rounds() if run.round(r).eval.metrics.is_file()]


def trained_weights_path(run: RunDir, round: int) -> Path:
    """The trained full-data model of a round's ticket evaluation (LTH rounds may reuse their training)."""
    files = run.round(round).eval
    if files.model.is_file():
        return files.model
    if files.metrics.is_file():
        reused = read_evaluation(files).reused
        if reused and TrainingDir(run.resolve(reused)).model.is_file():
            return TrainingDir(run.resolve(reused)).model
    evaluated = [r for r in evaluated_rounds(run) if r != round]
    raise ExportError(f"{run.path}: round {round} has no trained full-data model (its ticket was not "
                      f"evaluated, or its model file was deleted); use --source ticket, or a round with one: "
                      f"{_rounds_text(evaluated)}")


def unfinished_run_architecture(run: RunDir) -> dict[str, Any]:
    """The architecture of a run that has no ticket.pt yet, described by the task of its stored config from the
    config and the class names of its split."""
    config = read_yaml(run.config)
    entry = task_of_config(config, where=str(run.config))
    if entry.architecture_from_config is None:
        raise ExportError(f"{run.path}: the run is unfinished (no ticket.pt) and the {entry.name} task cannot "
                          "describe its model from config.yaml; finish the run with --resume, then export it")
    classes = len(read_json(run.split)["class_names"]) if run.split.is_file() else None
    try:
        return entry.architecture_from_config(config, classes or None)
    except ConfigError as exc:
        raise ExportError(f"{run.path}: the run is unfinished (no ticket.pt) and its config.yaml is not a "
                          f"{entry.name} config ({exc}); finish the run with --resume, then export it") from None
