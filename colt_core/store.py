"""What the round loop keeps on disk: it reads back what a run already has and writes what is new.

Every method runs on the rank that owns the run directory (rank 0). Every write is atomic and each result
is written before anything that depends on it, so a run killed at any moment resumes from what is here:
a stored mask, split or θ0 is used as it is, a finished partition training or ticket evaluation is read
back instead of being repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from colt_core.io import atomic_save, atomic_write_json, load_checkpoint, read_json
from colt_core.masks import Mask
from colt_core.rundir import (
    Evaluation,
    PartitionResult,
    RunDir,
    RunSummary,
    load_partition,
    read_evaluation,
    save_partition,
    write_config,
    write_summary,
)
from colt_core.ticket import Ticket, save_ticket

State = dict[str, torch.Tensor]


class RunStore:
    """The round loop's view of its run directory, and its run-level TensorBoard log."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._tb: Any = None

    # ----- once per run --------------------------------------------------------------------------------
    def start(self, config: Mapping[str, Any]) -> None:
        self.run.path.mkdir(parents=True, exist_ok=True)
        write_config(self.run.config, config)

    def class_groups(self, split: Callable[[], list[list[int]]], class_names: list[str]) -> list[list[int]]:
        """The stored class split, or `split()` stored with the class names."""
        if self.run.split.is_file():
            return [list(g) for g in read_json(self.run.split)["groups"]]
        groups = split()
        atomic_write_json({"groups": groups, "class_names": class_names}, self.run.split)
        return groups

    def init_weights(self, draw: Callable[[], State]) -> State:
        """The stored θ0, or `draw()` stored."""
        if self.run.init.is_file():
            return load_checkpoint(self.run.init)
        init = draw()
        atomic_save(init, self.run.init)
        return init

    # ----- per round -----------------------------------------------------------------------------------
    def round_mask(self, r: int, mask: Mask) -> Mask:
        """The mask stored for round `r` (a resumed run), or `mask` after storing it as that mask."""
        path = self.run.round(r).mask
        if path.is_file():
            return load_checkpoint(path)
        atomic_save(mask, path)
        return mask

    def sparsity_report(self, r: int, report: dict[str, Any]) -> None:
        """Write round `r`'s per-layer sparsity report (once) and log it to TensorBoard."""
        path = self.run.round(r).sparsity
        if path.is_file():
            return
        atomic_write_json(report, path)
        writer = self._writer()
        if writer is not None:
            writer.add_scalar("sparsity/prunable", report["overall"]["sparsity"], r)
            writer.add_scalar("sparsity/prune_rate_all_params", report["prune_rate"]["rate"], r)
            for name, row in report["layers"].items():
                writer.add_scalar(f"sparsity_layer/{name}", row["sparsity"], r)
            writer.flush()

    def finished_partitions(self, r: int, n: int) -> list[int]:
        """Partitions of round `r` whose selected model and metrics are on disk already."""
        return [i for i in range(n) if self.run.round(r).partition(i).is_complete()]

    def save_partition(self, r: int, i: int, state: State, result: PartitionResult,
                       rewind_state: State | None) -> None:
        save_partition(self.run.round(r).partition(i), state, result, rewind_state)

    def load_partition(self, r: int, i: int) -> tuple[State, PartitionResult]:
        return load_partition(self.run.round(r).partition(i))

    def late_rewind_states(self, n: int) -> dict[int, State]:
        """The late-rewinding weights stored by the partitions of round 0."""
        paths = {i: self.run.round(0).partition(i).rewind for i in range(n)}
        return {i: load_checkpoint(path) for i, path in paths.items() if path.is_file()}

    def stored_evaluation(self, r: int) -> Evaluation | None:
        """Round `r`'s stored ticket evaluation, or None (after making its folder)."""
        files = self.run.round(r).eval
        if files.metrics.is_file():
            return read_evaluation(files)
        files.path.mkdir(parents=True, exist_ok=True)
        return None

    def save_evaluation(self, r: int, evaluation: Evaluation) -> None:
        atomic_write_json(evaluation.to_dict(), self.run.round(r).eval.metrics)

    def save_trained(self, r: int, state: State) -> None:
        """The trained full-data model of round `r`'s ticket evaluation."""
        atomic_save(state, self.run.round(r).eval.model)

    def reused_training(self, r: int) -> str:
        """Where round `r`'s own full-data training is, relative to the run directory (LTH's evaluation)."""
        return self.run.relative(self.run.round(r).partition(0).path)

    # ----- the summary and the ticket -------------------------------------------------------------------
    def update(self, summary: RunSummary) -> None:
        """Write summary.json and log the newest round's ticket metrics to TensorBoard."""
        write_summary(self.run, summary)
        writer = self._writer()
        last = summary.rounds[-1]
        evaluation = last.evaluation
        if writer is not None and evaluation is not None and evaluation.value is not None:
            writer.add_scalar(f"ticket/{evaluation.metric}", evaluation.value, last.round)
            for name, value in evaluation.per_class.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"ticket_per_class/{name}", value, last.round)

    def save_ticket(self, ticket: Ticket) -> None:
        save_ticket(ticket, self.run.ticket)

    def close(self) -> None:
        if self._tb:
            self._tb.close()

    def _writer(self) -> Any:
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run.tensorboard))
            except ImportError:  # tensorboard is a declared dependency; degrade rather than fail a run
                self._tb = False
        return self._tb or None
