"""The epoch loop under every training: model selection by validation loss, resumable per-epoch checkpoints.

`colt_core.train.trainer` supplies one epoch of training and the validation; this loop owns reseeding,
best-model selection and the checkpoint that lets a killed training resume bit-for-bit on the CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_core.config import flatten
from colt_core.distributed import DistContext, broadcast_buffers, check_same_across_ranks, run_on_group_main
from colt_core.errors import TrainingDivergedError
from colt_core.io import CheckpointError, atomic_save, load_checkpoint
from colt_core.prune.masks import MaskKeeper
from colt_core.prune.weights import snapshot
from colt_core.runtime import derive_seed, seed_everything

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "colt_core.train.fit/1"


@dataclass
class FitResult:
    """The selected weights (on the CPU) and how training went."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    rewind_state: dict[str, torch.Tensor] | None = None
    best_val_metrics: dict[str, float] = field(default_factory=dict)  # the best epoch's other validation metrics


def _plain(value: Any) -> Any:
    """`value` as plain Python data, so settings compare equal after a save/load round trip."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def fit_settings(*, epochs: int, seed: int, optimizer: torch.optim.Optimizer, scheduler: Any = None,
                 scheduler_interval: str = "step", scaler: torch.amp.GradScaler | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint must have been trained with to be resumed: epochs, seed, optimizer, schedule, AMP.

    Read from the optimizer before its state is loaded (loading overwrites the hyper-parameters); a
    scheduler's `initial_lr` stands for the base rate, since `lr` already holds the scheduled value.
    """
    groups = [{k: v for k, v in group.items() if k != "params" and not (k == "lr" and "initial_lr" in group)}
              for group in optimizer.param_groups]
    settings = {
        "epochs": epochs,
        "seed": seed,
        "optimizer": {"class": type(optimizer).__qualname__, "param_groups": groups},
        "scheduler": None if scheduler is None else {"class": type(scheduler).__qualname__,
                                                     "interval": scheduler_interval},
        "amp": scaler is not None and scaler.is_enabled(),
        "extra": dict(extra or {}),
    }
    return _plain(settings)


def _setting_differences(saved: Any, current: Any) -> list[str]:
    old, new = flatten(saved), flatten(current)
    keys = sorted(old.keys() | new.keys())
    return [f"{key}: {old.get(key, '<absent>')!r} there, {new.get(key, '<absent>')!r} now"
            for key in keys if old.get(key, "<absent>") != new.get(key, "<absent>")]


def _load_resumable(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint at `path`, refused unless `fit` wrote it with the same settings."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of colt_core.train.fit.fit "
                              f"(format {CHECKPOINT_FORMAT}); delete it or choose another checkpoint path")
    differences = _setting_differences(ckpt["settings"], settings)
    if differences:
        raise CheckpointError(f"{path} was written with other training settings ({'; '.join(differences)}); "
                              "delete it to start training over, or resume with the original settings")
    return ckpt


def fit(
    model: nn.Module,
    *,
    epochs: int,
    train_epoch: Callable[[int], dict[str, float]],
    val_loss: Callable[[], float | Mapping[str, float]] | None,
    optimizer: torch.optim.Optimizer,
    seed: int,
    scheduler: Any = None,
    scheduler_interval: str = "step",
    scaler: torch.amp.GradScaler | None = None,
    keeper: MaskKeeper | None = None,
    checkpoint_path: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    rewind_state: Callable[[], dict[str, torch.Tensor] | None] | None = None,
    settings: Mapping[str, Any] | None = None,
    generators: Sequence[torch.Generator] = (),
    dist: DistContext | None = None,
) -> FitResult:
    """Train `epochs` epochs; keep the weights with the lowest validation loss, and end holding them.

    Every epoch starts from seeds derived from (seed, epoch), for the global generators and for
    `generators` (e.g. a DataLoader's own shuffling generator), and after every epoch the whole state is
    checkpointed atomically, so a killed run resumed from `checkpoint_path` ends with the same weights as an
    uninterrupted one. A checkpoint written with other settings (epochs, seed, optimizer class and
    hyper-parameters, scheduler and its interval, AMP, and the caller's `settings`, e.g. iterations per
    epoch) is refused rather than silently mixed. `scheduler_interval="epoch"` steps the scheduler here;
    "step" leaves it to `train_epoch`. `val_loss` returns the validation loss, or a mapping holding it as
    "loss" beside other validation metrics (kept in the history as `val_<name>`, and in `best_val_metrics`
    for the selected epoch). With `val_loss=None` the last epoch counts as best (its loss is NaN).
    `rewind_state` returns late-rewinding weights once taken. On return `model` holds the best weights.
    With `dist` (the ranks training `model` data-parallel) only the group's first rank reads and writes the
    checkpoint; it hands what it read to the others, so every rank resumes at the same epoch.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
    run_settings = fit_settings(epochs=epochs, seed=seed, optimizer=optimizer, scheduler=scheduler,
                                scheduler_interval=scheduler_interval, scaler=scaler, extra=settings)
    start, best_state, best_loss, best_epoch, history, best_metrics = 0, None, math.inf, -1, [], {}
    late_rewind = None
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    writes = dist is None or dist.is_group_main

    def read_checkpoint() -> dict[str, Any] | None:
        return _load_resumable(path, run_settings) if path is not None and path.is_file() else None

    ckpt = run_on_group_main(dist, read_checkpoint)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt["scaler"] is not None:
            scaler.load_state_dict(ckpt["scaler"])
        start, best_state, best_loss = ckpt["epoch"] + 1, ckpt["best_state"], ckpt["best_val_loss"]
        best_epoch, history, late_rewind = ckpt["best_epoch"], ckpt["history"], ckpt["rewind_state"]
        best_metrics = ckpt.get("best_val_metrics", {})
        if keeper is not None:
            keeper.zero_optimizer_state()
        log.info("resuming training from %s at epoch %d of %d", path, start, epochs)
    for epoch in range(start, epochs):
        seed_everything(derive_seed(seed, "epoch", epoch))
        for i, generator in enumerate(generators):
            generator.manual_seed(derive_seed(seed, "epoch", epoch, "generator", i))
        model.train()
        stats = dict(train_epoch(epoch))
        broadcast_buffers(model, dist)
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        if val_loss is None:
            best_loss, best_epoch, best_state = math.nan, epoch, snapshot(model)
        else:
            result = val_loss()
            metrics = {k: float(v) for k, v in result.items() if k != "loss"} if isinstance(result, Mapping) else {}
            loss = float(result["loss"] if isinstance(result, Mapping) else result)
            if not math.isfinite(loss):
                raise TrainingDivergedError(f"validation loss is {loss} after epoch {epoch}: training diverged; "
                                            "lower train.optimizer.lr or set train.grad_clip")
            stats["val_loss"] = loss
            stats.update({f"val_{k}": v for k, v in metrics.items()})
            if loss < best_loss:
                best_loss, best_epoch, best_state, best_metrics = loss, epoch, snapshot(model), metrics
        stats["epoch"] = epoch
        history.append(stats)
        if late_rewind is None and rewind_state is not None:
            late_rewind = rewind_state()
        if path is not None and writes:
            atomic_save({"format": CHECKPOINT_FORMAT, "settings": run_settings, "epoch": epoch,
                         "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict() if scheduler is not None else None,
                         "scaler": scaler.state_dict() if scaler is not None else None,
                         "best_state": best_state, "best_val_loss": best_loss, "best_epoch": best_epoch,
                         "best_val_metrics": best_metrics, "history": history, "rewind_state": late_rewind}, path)
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats)
    assert best_state is not None  # epochs >= 1: an epoch ran here or in the run that was resumed
    # Data-parallel ranks hold the same weights unless a trainer let them drift (e.g. unreduced val losses).
    check_same_across_ranks(dist, best_state, "the selected weights")
    model.load_state_dict(best_state)
    return FitResult(best_state, best_epoch, best_loss, history, late_rewind, best_metrics)
