"""One epoch of training under a mask, and one validation: the two loops every training is made of.

One optimizer step: forward (the task's loss) -> backward -> (unscale under AMP) -> mask the gradients ->
clip -> optimizer step -> re-mask the weights -> late-rewind snapshot -> TensorBoard -> lr scheduler step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from colt_core.distributed import DistContext, all_reduce_sums
from colt_core.errors import TrainingDivergedError, UserError
from colt_core.prune.masks import MaskKeeper
from colt_core.runtime import progress_bar
from colt_core.train.early_bird import EarlyBird
from colt_core.train.late_rewind import LateRewind
from colt_core.train.loaders import batch_size, to_device
from colt_core.train.speed import FULL, Precision
from colt_core.train.task import Task

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

LOG_EVERY = 20  # optimizer steps between TensorBoard points of the training losses and lr


class PartitionTooSmallError(UserError, ValueError):
    """A partition has no training or no validation sample."""


def total_loss(terms: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to backpropagate and every logged value: `terms["loss"]` when the task gives a total, else
    the sum of every term (as torchvision's detectors return them)."""
    if not terms:
        raise ValueError("the task's loss returned no terms")
    loss = terms["loss"] if "loss" in terms else sum(terms.values())
    logged = {"loss": float(loss.item())}
    logged.update({k: float(v.item()) for k, v in terms.items() if k != "loss"})
    return loss, logged


def train_one_epoch(net: nn.Module, task: Task, loader: DataLoader, optimizer: torch.optim.Optimizer, *,
                    device: torch.device, scheduler: torch.optim.lr_scheduler.LRScheduler, keeper: MaskKeeper,
                    precision: Precision = FULL, scaler: torch.amp.GradScaler | None = None,
                    grad_clip: float | None = None, late_rewind: LateRewind | None = None,
                    writer: SummaryWriter | None = None, early_bird: EarlyBird | None = None,
                    model: nn.Module | None = None, epoch: int = 0, progress: bool = False,
                    desc: str = "train") -> dict[str, float]:
    """One pass over `loader` under a mask; the mean of the loss and of every logged term, per sample.

    The scheduler steps once per optimizer step. `late_rewind` takes its snapshot at its step, and `writer`
    gets the training losses and lr every `LOG_EVERY` steps. An `early_bird` that checks every k steps
    checks `model` (the unwrapped `net`) after every k-th and ends the epoch early when it says stop.
    """
    every = early_bird.every_steps if early_bird is not None else None
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
        if late_rewind is not None:
            late_rewind.after_step()
        if writer is not None:
            _log_step(writer, values, optimizer, scheduler)
        scheduler.step()
        n = batch_size(batch)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * n
        seen += n
        steps += 1
        taken = scheduler.last_epoch  # optimizer steps of the whole training so far
        if every is not None and taken % every == 0 and early_bird.check(model or net, step=taken, epoch=epoch):
            break
    if seen == 0:
        raise PartitionTooSmallError(f"{desc}: the training data loader yielded no batches; use more data or a "
                                     "smaller train.batch_size")
    return {key: value / seen for key, value in sums.items()}


def _log_step(writer: SummaryWriter, values: Mapping[str, float], optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """TensorBoard points of one step's losses and lr, every `LOG_EVERY` optimizer steps (before the
    scheduler steps: the lr is the one this step used)."""
    step = scheduler.last_epoch + 1  # optimizer steps taken, this one included
    if step % LOG_EVERY == 0:
        for key, value in values.items():
            writer.add_scalar(f"train/{key}", value, step)
        writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


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
