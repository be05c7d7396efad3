"""The one training recipe: every model of every task is trained by `Trainer.train`.

From a `TrainJob` and the task's datasets and loss it builds seeded loaders (a distributed sampler when
several ranks train the job), the optimizer and schedule of the `train:` section, a `MaskKeeper` that keeps
pruned weights and their optimizer state at zero, the late-rewinding snapshot, DDP, mixed precision,
gradient clipping, TensorBoard scalars and progress bars, and runs `colt_core.train.fit.fit`: model selection by
validation loss and the resumable per-epoch checkpoint, removed once the training is done.

One optimizer step: forward (the task's loss) -> backward -> (unscale under AMP) -> mask the gradients ->
clip -> optimizer step -> re-mask the weights -> late-rewind snapshot -> lr scheduler step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from colt_core.config import ConfigError
from colt_core.distributed import (
    DistContext,
    all_reduce_sums,
    distributed_sampler,
    set_sampler_epoch,
    shard_for_evaluation,
    wrap_ddp,
)
from colt_core.errors import TrainingDivergedError, UserError
from colt_core.io import atomic_write_json
from colt_core.prune.masks import MaskKeeper
from colt_core.prune.weights import snapshot
from colt_core.rundir import TrainingRecord
from colt_core.runtime import derive_seed, pick_device, progress_bar
from colt_core.settings import TrainConfig
from colt_core.train.fit import fit
from colt_core.train.optim import build_lr_scheduler, build_optimizer
from colt_core.train.speed import FULL, Precision, Speed
from colt_core.train.task import Batch, Task, TrainJob, TrainOutput

log = logging.getLogger(__name__)

LOG_EVERY = 20  # optimizer steps between TensorBoard points of the training losses and lr


class PartitionTooSmallError(UserError, ValueError):
    """A partition has no training or no validation sample."""


class LateRewind:
    """Takes the late-rewinding snapshot: the weights after `iteration` optimizer steps (0: never).

    Steps are counted by the per-step lr scheduler, whose state a resumed training restores, so a training
    killed before the rewind iteration still snapshots at the right step. Call `after_step()` after each
    optimizer step, before the scheduler steps.
    """

    def __init__(self, model: nn.Module, scheduler: torch.optim.lr_scheduler.LRScheduler, iteration: int, *,
                 total_steps: int, tag: str) -> None:
        if iteration > total_steps:
            raise ConfigError(f"prune.rewind_iteration ({iteration}) exceeds the {total_steps} optimizer steps "
                              f"of the training of {tag}; lower it")
        self.model, self.scheduler, self.iteration = model, scheduler, iteration
        self.state: dict[str, torch.Tensor] | None = None

    def after_step(self) -> int:
        """Snapshot at the rewind iteration; returns the optimizer steps taken, this one included."""
        step = self.scheduler.last_epoch + 1
        if self.iteration and step == self.iteration:
            self.state = snapshot(self.model)
        return step


# ----- batches and losses ----------------------------------------------------------------------------
def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor of a batch (nested lists, tuples and dicts) on `device`; other values as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_size(batch: Batch) -> int:
    """Samples in a batch: the length of its inputs, the first element of `(inputs, targets)`."""
    return len(batch[0])


def total_loss(terms: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to backpropagate and every logged value: `terms["loss"]` when the task gives a total, else
    the sum of every term (as torchvision's detectors return them)."""
    if not terms:
        raise ValueError("the task's loss returned no terms")
    loss = terms["loss"] if "loss" in terms else sum(terms.values())
    logged = {"loss": float(loss.item())}
    logged.update({k: float(v.item()) for k, v in terms.items() if k != "loss"})
    return loss, logged


def make_loader(dataset: Dataset, *, batch_size: int, collate: Callable | None, num_workers: int,
                device: torch.device, generator: torch.Generator | None = None, sampler: Any = None,
                drop_single: bool = False, speed: Speed | None = None) -> DataLoader:
    """A DataLoader as every training and evaluation uses it: shuffled by `generator` (or `sampler`) when
    given; `drop_single` drops a last batch of one sample, which BatchNorm cannot normalise. Pinned memory
    on CUDA (the batches then copy without blocking); `speed` keeps workers alive and prefetching."""
    per_rank = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
    workers = {} if speed is None or num_workers == 0 else {"persistent_workers": speed.persistent_workers,
                                                             "prefetch_factor": speed.prefetch_factor}
    return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                      sampler=sampler, collate_fn=collate, drop_last=drop_single and per_rank % batch_size == 1,
                      num_workers=num_workers, pin_memory=device.type == "cuda", **workers)


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


# ----- one epoch, one validation -----------------------------------------------------------------------
def train_one_epoch(net: nn.Module, task: Task, loader: DataLoader, optimizer: torch.optim.Optimizer, *,
                    device: torch.device, scheduler: torch.optim.lr_scheduler.LRScheduler, keeper: MaskKeeper,
                    precision: Precision = FULL, scaler: torch.amp.GradScaler | None = None,
                    grad_clip: float | None = None,
                    after_step: Callable[[dict[str, float]], None] | None = None, progress: bool = False,
                    desc: str = "train") -> dict[str, float]:
    """One pass over `loader` under a mask; the mean of the loss and of every logged term, per sample.

    `after_step(values)` runs after each optimizer step, before the scheduler steps.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sums: dict[str, float] = {}
    seen = steps = 0
    for batch in progress_bar(loader, progress, desc):
        batch = to_device(batch, device)
        with precision.autocast(device):
            loss, values = total_loss(task.loss(net, batch))
        if not math.isfinite(values["loss"]):
            terms = {k: round(v, 4) for k, v in values.items()}
            raise TrainingDivergedError(f"{desc}: training loss is {values['loss']} at iteration {steps} ({terms}); "
                                        "lower train.optimizer.lr or set train.grad_clip")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        keeper.before_step()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        keeper.after_step()
        if after_step is not None:
            after_step(values)
        scheduler.step()
        n = batch_size(batch)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * n
        seen += n
        steps += 1
    if seen == 0:
        raise PartitionTooSmallError(f"{desc}: the training data loader yielded no batches; use more data or a "
                                     "smaller train.batch_size")
    return {key: value / seen for key, value in sums.items()}


@torch.no_grad()
def validate(model: nn.Module, task: Task, loader: DataLoader, *, device: torch.device,
             precision: Precision = FULL, seed: int = 0, dist: DistContext | None = None) -> dict[str, float]:
    """Mean loss ("loss") and logged terms per sample over a validation set, the same on every rank.

    The model is in eval mode under no_grad; anything random in the loss (a detector's RPN and RoI
    samplers) draws from a generator seeded with `seed`, and the global one is left untouched, so the same
    weights always get the same validation loss. With several ranks each holds a shard of the set.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    seen = 0
    try:
        with torch.random.fork_rng(devices=_rng_devices(device)):
            torch.manual_seed(seed)
            for batch in loader:
                batch = to_device(batch, device)
                with precision.autocast(device):
                    _, values = total_loss(task.loss(model, batch))
                n = batch_size(batch)
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value * n
                seen += n
    finally:
        model.train(was_training)
    if dist is not None and dist.data_parallel:
        keys = sorted(sums)
        *totals, seen = all_reduce_sums([sums[k] for k in keys] + [seen], dist)
        sums = dict(zip(keys, totals, strict=True))
    if seen == 0:
        raise PartitionTooSmallError("the validation set is empty; use more data or a larger data.val_fraction")
    return {key: value / seen for key, value in sums.items()}


def describe_data(dataset: Dataset) -> dict[str, Any]:
    """What a training or validation set holds: the dataset's own `summary()`, else its size."""
    summary = getattr(dataset, "summary", None)
    return dict(summary()) if callable(summary) else {"images": len(dataset)}  # type: ignore[arg-type]


# ----- the recipe --------------------------------------------------------------------------------------
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
        self.speed = Speed.resolve(cfg, self.device, fixed_input_size=getattr(task, "fixed_input_size", False),
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
        """An evaluation loader (in order, nothing dropped) for a task's test set."""
        return make_loader(dataset, batch_size=batch_size or self.eval_batch_size, collate=self.task.collate,
                           num_workers=self.num_workers, device=self.device, speed=self.speed)

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

    def train(self, job: TrainJob) -> TrainOutput:
        """Train `job.model` on the job's classes under `job.mask`; end holding the lowest-validation-loss weights.

        When `job.dist` holds several ranks they all call this and train data-parallel; the group's first
        rank alone writes the training's files.
        """
        cfg, task, ctx, device = self.cfg, self.task, job.dist, self.device
        writes = ctx is None or ctx.is_group_main
        train_ds, val_ds = self._datasets(job)
        data = {"train": describe_data(train_ds), "val": describe_data(val_ds)}
        if writes:
            atomic_write_json(data, job.files.data)
        log.info("%s: %d training and %d validation samples", job.tag, len(train_ds), len(val_ds))  # type: ignore[arg-type]
        sampler = distributed_sampler(train_ds, ctx, shuffle=True, seed=derive_seed(job.seed, "sampler"))
        shuffling = torch.Generator() if sampler is None else None
        train_loader = make_loader(train_ds, batch_size=cfg.batch_size, collate=task.collate,
                                   num_workers=self.num_workers, device=device, generator=shuffling,
                                   sampler=sampler, drop_single=True, speed=self.speed)
        val_loader = self.loader(shard_for_evaluation(val_ds, ctx))
        iterations = len(train_loader)
        model = self.speed.prepare(job.model.to(device))
        optimizer = build_optimizer(model, cfg.optimizer)
        try:
            scheduler = build_lr_scheduler(optimizer, cfg.schedule, epochs=cfg.epochs, iters_per_epoch=iterations)
        except ValueError as exc:
            raise ConfigError(f"train.schedule: {exc}") from None
        late = LateRewind(model, scheduler, job.rewind_iteration, total_steps=cfg.epochs * iterations, tag=job.tag)
        keeper = MaskKeeper(model, job.mask, optimizer)  # masks name the parameters of the unwrapped model
        net = wrap_ddp(model, ctx)
        scaler = self.amp.scaler(device)
        writer = self._writer(job.tag) if writes else None

        def after_step(values: dict[str, float]) -> None:
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used: the scheduler has not stepped yet
            step = late.after_step()
            if writer is not None and step % LOG_EVERY == 0:
                for key, value in values.items():
                    writer.add_scalar(f"train/{key}", value, step)
                writer.add_scalar("train/lr", lr, step)

        def train_epoch(epoch: int) -> dict[str, float]:
            set_sampler_epoch(train_loader, epoch)
            return train_one_epoch(net, task, train_loader, optimizer, device=device, scheduler=scheduler,
                                   keeper=keeper, precision=self.amp, scaler=scaler, grad_clip=cfg.grad_clip,
                                   after_step=after_step, progress=cfg.progress,
                                   desc=f"{job.tag} epoch {epoch + 1}/{cfg.epochs}")

        def val_loss() -> dict[str, float]:
            return validate(model, task, val_loader, device=device, precision=self.amp,
                            seed=derive_seed(job.seed, "val"), dist=ctx)

        def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
            # The validation loss's own terms stay in the history and TensorBoard, out of the log line.
            log.info("%s epoch %d/%d: %s", job.tag, epoch + 1, cfg.epochs,
                     ", ".join(f"{k} {v:.4f}" for k, v in stats.items()
                               if k != "epoch" and not k.startswith("val_loss_")))
            if writer is not None:
                for key, value in stats.items():
                    if key != "epoch":
                        writer.add_scalar(f"epoch/{key}", value, epoch)
                writer.add_scalar("epoch/lr", optimizer.param_groups[0]["lr"], epoch)
                writer.flush()

        try:
            result = fit(model, epochs=cfg.epochs, train_epoch=train_epoch, val_loss=val_loss, optimizer=optimizer,
                         seed=job.seed, scheduler=scheduler, scheduler_interval="step", scaler=scaler, keeper=keeper,
                         checkpoint_path=job.files.checkpoint, on_epoch_end=on_epoch_end,
                         rewind_state=lambda: late.state,
                         settings={"iterations_per_epoch": iterations, "batch_size": cfg.batch_size,
                                   "rewind_iteration": job.rewind_iteration, "data": data},
                         generators=[shuffling] if shuffling is not None else [], dist=ctx)
        finally:
            if writer is not None:
                writer.close()
        if writes:
            job.files.checkpoint.unlink(missing_ok=True)
        record = TrainingRecord(best_epoch=result.best_epoch, best_val_loss=result.best_val_loss,
                                val_metrics=result.best_val_metrics, history=result.history, data=data)
        return TrainOutput(result.best_state, record, result.rewind_state)

    def _writer(self, tag: str) -> Any:
        if self.tensorboard is None:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.tensorboard(tag)))
