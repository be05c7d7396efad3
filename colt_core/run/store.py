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
from colt_core.prune.masks import Mask
from colt_core.prune.ticket import Ticket, save_ticket
from colt_core.rundir import (
    Evaluation,
    PartitionResult,
    RunDir,
    RunSummary,
    TrainingDir,
    load_partition,
    read_evaluation,
    save_partition,
    write_config,
    write_summary,
)

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

    def stored_evaluation(self, r: int) -> Evaluation | None:
        """Round `r`'s stored ticket evaluation, or None (after making its folder)."""
        return self.stored_training(self.run.round(r).eval)

    def stored_training(self, files: TrainingDir) -> Evaluation | None:
        """The stored evaluation of a full-data training (a ticket's or a control's), or None (after making
        its folder)."""
        if files.metrics.is_file():
            return read_evaluation(files)
        files.path.mkdir(parents=True, exist_ok=True)
        return None

    def save_mask(self, files: TrainingDir, mask: Mask) -> None:
        """The mask a control trains under, beside it (once: a resumed control draws the same)."""
        if not files.mask.is_file():
            atomic_save(dict(mask), files.mask)

    def save_evaluation(self, files: TrainingDir, evaluation: Evaluation) -> None:
        """The evaluation of a full-data training; written last, it marks the training done."""
        atomic_write_json(evaluation.to_dict(), files.metrics)

    def save_trained(self, files: TrainingDir, state: State, rewind_state: State | None = None) -> None:
        """A full-data training's selected weights (and its late-rewinding weights when it took them)."""
        if rewind_state is not None:
            atomic_save(dict(rewind_state), files.rewind)
        atomic_save(state, files.model)

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
