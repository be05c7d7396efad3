"""The one training recipe: every model of every task is trained by `Trainer.train`.

From a `TrainJob` and the task's datasets and loss it builds seeded loaders (a distributed sampler when
several ranks train the job), the optimizer and schedule of the `train:` section, a `MaskKeeper` that keeps
pruned weights and their optimizer state at zero, the late-rewinding snapshot, DDP, mixed precision and
TensorBoard, and runs the epochs: seed, `train_one_epoch`, `validate`, keep the lowest validation loss,
checkpoint (`colt_core.train.checkpoint`, removed once the training is done), log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from colt_core.config import ConfigError, to_dict
from colt_core.distributed import (
    broadcast_buffers,
    check_same_across_ranks,
    distributed_sampler,
    set_sampler_epoch,
    shard_for_evaluation,
    wrap_ddp,
)
from colt_core.io import atomic_write_json
from colt_core.prune.masks import MaskKeeper
from colt_core.rundir import TrainingRecord
from colt_core.runtime import derive_seed, pick_device
from colt_core.settings import TrainConfig
from colt_core.train.checkpoint import TrainingState, resume_training, save_checkpoint, seed_epoch, training_settings
from colt_core.train.epoch import PartitionTooSmallError, train_one_epoch, validate
from colt_core.train.late_rewind import LateRewind
from colt_core.train.loaders import describe_data, make_loader
from colt_core.train.optim import build_lr_scheduler, build_optimizer
from colt_core.train.speed import Precision, Speed
from colt_core.train.task import Task, TrainJob, TrainOutput

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


@dataclass
class _Training:
    """What one training is made of, built from its job and the `train:` section."""

    model: nn.Module  # on the device; masks name its parameters
    net: nn.Module  # `model`, wrapped for data-parallel training
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # steps once per optimizer step
    scaler: torch.amp.GradScaler | None
    keeper: MaskKeeper
    late_rewind: LateRewind
    train_loader: DataLoader
    shuffling: torch.Generator | None  # the training loader's own generator (None under a distributed sampler)
    val_loader: DataLoader
    epochs: int  # train.epochs, or scaled to the full data's optimizer steps (TrainJob.full_data_steps)


class Trainer:
    """Trains a task's models as the `train:` section says; the one place the recipe is written.

    `tensorboard(tag)` gives the TensorBoard folder of a training (None: no TensorBoard).
    """

    def __init__(self, task: Task, cfg: TrainConfig, *, eval_batch_size: int, num_workers: int = 0,
                 tensorboard: Callable[[str], Path] | None = None) -> None:
        self.task, self.cfg = task, cfg
        self.eval_batch_size, self.num_workers = eval_batch_size, num_workers
        self.tensorboard = tensorboard
        self.device = pick_device(cfg.device)
        self.speed = Speed.resolve(cfg, self.device, fixed_input_size=task.fixed_input_size,
                                   num_workers=num_workers)
        self.speed.apply_backends()
        (log.info if self.device.type == "cuda" else log.debug)("training on %s: %s", self.device,
                                                                 self.speed.describe())
        if cfg.cpu_threads is not None:
            torch.set_num_threads(cfg.cpu_threads)

    @property
    def amp(self) -> Precision:
        """The mixed precision of training and of the task's evaluations."""
        return self.speed.precision

    def loader(self, dataset: Dataset, *, batch_size: int | None = None) -> DataLoader:
        """An evaluation loader (in order, nothing dropped): the validation sets, and a task's test set through
        `TrainJob.loader`."""
        return make_loader(dataset, batch_size=batch_size or self.eval_batch_size, collate=self.task.collate,
                           num_workers=self.num_workers, device=self.device, speed=self.speed)

    def train(self, job: TrainJob) -> TrainOutput:
        """Train `job.model` on the job's classes under `job.mask`; end holding the lowest-validation-loss weights.

        When `job.dist` holds several ranks they all call this and train data-parallel; the group's first
        rank alone writes the training's files. A training killed part-way resumes from its checkpoint.
        """
        started = time.perf_counter()
        cfg = self.cfg
        if job.make_loader is None:
            job.make_loader = self.loader
        writes = job.dist is None or job.dist.is_group_main
        train_ds, val_ds = self._datasets(job)
        data = {"train": describe_data(train_ds), "val": describe_data(val_ds)}
        if writes:
            atomic_write_json(data, job.files.data)
        log.info("%s: %d training and %d validation samples", job.tag, len(train_ds), len(val_ds))  # type: ignore[arg-type]
        run = self._build(job, train_ds, val_ds)
        extra = {"iterations_per_epoch": len(run.train_loader), "batch_size": cfg.batch_size,
                 "rewind_iteration": job.rewind_iteration, "data": data}
        if job.early_bird is not None:
            extra["early_bird"] = to_dict(job.early_bird.settings)
        settings = training_settings(epochs=run.epochs, seed=job.seed, optimizer=run.optimizer,
                                     scheduler=run.scheduler, scaler=run.scaler, extra=extra)
        writer = self._writer(job.tag) if writes else None
        try:
            state, best, earlier = self._run_epochs(job, run, settings, writer, writes=writes, started=started)
        finally:
            if writer is not None:
                writer.close()
        if writes:
            job.files.checkpoint.unlink(missing_ok=True)
        record = TrainingRecord(best_epoch=state.best_epoch, best_val_loss=state.best_val_loss,
                                val_metrics=state.best_val_metrics, history=state.history, data=data,
                                epochs=run.epochs if run.epochs != cfg.epochs else None)
        if job.early_bird is not None:
            record.early_bird = job.early_bird.record(epochs=run.epochs, steps_per_epoch=len(run.train_loader))
        return TrainOutput(best, record, state.rewind_state, earlier_s=earlier)

    def _run_epochs(self, job: TrainJob, run: _Training, settings: dict[str, Any], writer: SummaryWriter | None, *,
                    writes: bool, started: float) -> tuple[TrainingState, dict[str, torch.Tensor], float]:
        """The epoch loop, from the checkpoint's epoch when there is one; the state, the selected weights, which
        `run.model` ends holding (the lowest validation loss's, or the weights at an early-bird stop), and the
        seconds the training had spent before this process (the checkpoint's). `writes`: this rank writes the
        checkpoint; `started`: when this process began the training (`time.perf_counter`)."""
        cfg, ctx, checkpoint, early_bird = self.cfg, job.dist, job.files.checkpoint, job.early_bird
        state = resume_training(checkpoint, settings, model=run.model, optimizer=run.optimizer,
                                scheduler=run.scheduler, scaler=run.scaler, keeper=run.keeper, dist=ctx)
        if early_bird is not None and state.early_bird is not None:
            early_bird.load_state_dict(state.early_bird)
        earlier = state.elapsed_s
        for epoch in range(state.next_epoch, run.epochs):
            seed_epoch(job.seed, epoch, run.shuffling)
            run.model.train()
            set_sampler_epoch(run.train_loader, epoch)
            stats = train_one_epoch(run.net, self.task, run.train_loader, run.optimizer, device=self.device,
                                    scheduler=run.scheduler, keeper=run.keeper, precision=self.amp,
                                    scaler=run.scaler, grad_clip=cfg.grad_clip, late_rewind=run.late_rewind,
                                    writer=writer, early_bird=early_bird, model=run.model, epoch=epoch,
                                    progress=cfg.progress, desc=f"{job.tag} epoch {epoch + 1}/{run.epochs}")
            broadcast_buffers(run.model, ctx)
            validation = validate(run.model, self.task, run.val_loader, device=self.device, precision=self.amp,
                                  seed=derive_seed(job.seed, "val"), dist=ctx)
            entry = state.end_epoch(epoch, stats, validation, run.model)
            if state.rewind_state is None:
                state.rewind_state = run.late_rewind.state
            if early_bird is not None and early_bird.stopped is None and early_bird.every_steps is None:
                early_bird.check(run.model, step=run.scheduler.last_epoch, epoch=epoch)
            self._log_epoch(job.tag, epoch, entry, run.optimizer, writer, run.epochs)
            if early_bird is not None and early_bird.stopped is not None:
                state.select(epoch, validation, run.model)  # the round prunes from the weights of the stop
                break
            if early_bird is not None:
                state.early_bird = early_bird.state_dict()
            state.elapsed_s = earlier + time.perf_counter() - started
            if writes:
                save_checkpoint(checkpoint, settings, state, model=run.model, optimizer=run.optimizer,
                                scheduler=run.scheduler, scaler=run.scaler)
        best = state.best_state
        assert best is not None  # epochs >= 1: an epoch ran here or in the training resumed
        # Data-parallel ranks hold the same weights unless a trainer let them drift (e.g. unreduced val losses).
        check_same_across_ranks(ctx, best, "the selected weights")
        run.model.load_state_dict(best)
        return state, best, earlier

    def _build(self, job: TrainJob, train_ds: Dataset, val_ds: Dataset) -> _Training:
        """The loaders, the model on the device, its optimizer, schedule, mask keeper, late rewind, DDP and scaler."""
        cfg, ctx, device = self.cfg, job.dist, self.device
        sampler = distributed_sampler(train_ds, ctx, shuffle=True, seed=derive_seed(job.seed, "sampler"))
        shuffling = torch.Generator() if sampler is None else None
        train_loader = make_loader(train_ds, batch_size=cfg.batch_size, collate=self.task.collate,
                                   num_workers=self.num_workers, device=device, generator=shuffling,
                                   sampler=sampler, drop_single=True, speed=self.speed)
        val_loader = self.loader(shard_for_evaluation(val_ds, ctx))
        iterations = len(train_loader)
        epochs = self._full_data_epochs(job, iterations) if job.full_data_steps else cfg.epochs
        model = self.speed.prepare(job.model.to(device))
        optimizer = build_optimizer(model, cfg.optimizer)
        try:
            scheduler = build_lr_scheduler(optimizer, cfg.schedule, epochs=epochs, iters_per_epoch=iterations)
        except ValueError as exc:
            raise ConfigError(f"train.schedule: {exc}") from None
        late = LateRewind(model, scheduler, job.rewind_iteration, total_steps=epochs * iterations, tag=job.tag)
        keeper = MaskKeeper(model, job.mask, optimizer)  # masks name the parameters of the unwrapped model
        net = wrap_ddp(model, ctx)
        scaler = self.amp.scaler(device)
        return _Training(model=model, net=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler, keeper=keeper,
                         late_rewind=late, train_loader=train_loader, shuffling=shuffling, val_loader=val_loader,
                         epochs=epochs)

    def _full_data_epochs(self, job: TrainJob, iterations: int) -> int:
        """The epochs over this job's data that take about as many optimizer steps as train.epochs over the
        full data (a COLT partition under prune.partition_steps: full_data)."""
        full, _ = self.task.datasets(None, job)
        full_iterations = math.ceil(len(full) / self.cfg.batch_size)  # type: ignore[arg-type]
        return max(1, round(self.cfg.epochs * full_iterations / max(1, iterations)))

    def _datasets(self, job: TrainJob) -> tuple[Dataset, Dataset]:
        train, val = self.task.datasets(job.class_ids, job)
        if len(train) == 0 or len(val) == 0:  # type: ignore[arg-type]
            which = "every class" if job.class_ids is None else f"classes {job.class_ids}"
            names = [self.task.class_names[c] for c in job.class_ids or []][:10]
            raise PartitionTooSmallError(
                f"{job.tag} ({which}{': ' + ', '.join(names) if names else ''}) has {len(train)} training and "  # type: ignore[arg-type]
                f"{len(val)} validation samples; use more data, a larger data.val_fraction or fewer partitions "  # type: ignore[arg-type]
                "(prune.partitions)")
        return train, val

    def _log_epoch(self, tag: str, epoch: int, entry: dict[str, float], optimizer: torch.optim.Optimizer,
                   writer: SummaryWriter | None, epochs: int) -> None:
        """The epoch's log line and TensorBoard points (the validation loss's own terms stay out of the line)."""
        log.info("%s epoch %d/%d: %s", tag, epoch + 1, epochs,
                 ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "epoch" and not k.startswith("val_loss_")))
        if writer is not None:
            for key, value in entry.items():
                if key != "epoch":
                    writer.add_scalar(f"epoch/{key}", value, epoch)
            writer.add_scalar("epoch/lr", optimizer.param_groups[0]["lr"], epoch)
            writer.flush()

    def _writer(self, tag: str) -> SummaryWriter | None:
        if self.tensorboard is None:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.tensorboard(tag)))
