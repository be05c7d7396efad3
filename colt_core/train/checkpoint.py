"""What lets a killed training resume bit-for-bit: seeds derived per epoch, and a checkpoint of the rest.

The checkpoint is a plain dict, written atomically after every epoch: ``format``, ``settings`` (what the
training runs with; a checkpoint of other settings is refused rather than silently mixed), ``epoch`` (the last
one finished), the state_dicts of ``model``, ``optimizer``, ``scheduler`` and ``scaler``, and the
`TrainingState`: ``best_state``, ``best_val_loss``, ``best_epoch``, ``best_val_metrics``, ``history`` and
``rewind_state`` (and ``early_bird``, the window and trace of an early-bird training), and ``elapsed_s``, the wall
time the training had spent when it was written, so that a resumed training's time counts the work before the
kill (checkpoints written before it was kept resume with 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_core.config import flatten
from colt_core.distributed import DistContext, run_on_group_main
from colt_core.errors import TrainingDivergedError
from colt_core.io import CheckpointError, atomic_save, load_checkpoint
from colt_core.prune.masks import MaskKeeper
from colt_core.prune.weights import snapshot
from colt_core.runtime import derive_seed, seed_everything

log = logging.getLogger(__name__)

# Named after the epoch loop that first wrote it (colt_core.train.fit); checkpoints of trainings in flight carry it.
CHECKPOINT_FORMAT = "colt_core.fit/1"  # the name of the module that wrote it first: in-flight checkpoints resume


def seed_epoch(seed: int, epoch: int, shuffling: torch.Generator | None) -> None:
    """Seed the global generators and the training loader's shuffling from (seed, epoch) alone, so an epoch
    draws the same numbers whether its training ran straight through or was resumed just before it."""
    seed_everything(derive_seed(seed, "epoch", epoch))
    if shuffling is not None:
        shuffling.manual_seed(derive_seed(seed, "epoch", epoch, "generator", 0))


@dataclass
class TrainingState:
    """Where a training stands after its last finished epoch: its history, its best epoch so far (the
    weights on the CPU) and the late-rewinding weights once taken."""

    next_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_val_loss: float = math.inf
    best_epoch: int = -1
    best_val_metrics: dict[str, float] = field(default_factory=dict)  # the best epoch's other validation terms
    history: list[dict[str, float]] = field(default_factory=list)
    rewind_state: dict[str, torch.Tensor] | None = None
    early_bird: dict[str, Any] | None = None  # an early-bird training's window and trace (EarlyBird.state_dict)
    elapsed_s: float = 0.0  # wall time spent on this training up to its last checkpoint, over every process

    def end_epoch(self, epoch: int, stats: Mapping[str, float], validation: Mapping[str, float],
                  model: nn.Module) -> dict[str, float]:
        """Record `epoch`: its training `stats` and its `validation` ("loss" and other terms, kept as
        `val_<name>`) as a history entry, returned; `model`'s weights when its validation loss is the lowest."""
        metrics = {k: float(v) for k, v in validation.items() if k != "loss"}
        loss = float(validation["loss"])
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"validation loss is {loss} after epoch {epoch}: training diverged; "
                                        "lower train.optimizer.lr or set train.grad_clip")
        entry = dict(stats)
        entry["val_loss"] = loss
        entry.update({f"val_{k}": v for k, v in metrics.items()})
        if loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.best_state, self.best_val_metrics = \
                loss, epoch, snapshot(model), metrics
        entry["epoch"] = epoch
        self.history.append(entry)
        self.next_epoch = epoch + 1
        return entry

    def select(self, epoch: int, validation: Mapping[str, float], model: nn.Module) -> None:
        """Select `model`'s weights as they are now, after `epoch` (an early-bird stop), whatever their loss."""
        self.best_val_loss, self.best_epoch, self.best_state = float(validation["loss"]), epoch, snapshot(model)
        self.best_val_metrics = {k: float(v) for k, v in validation.items() if k != "loss"}


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


def training_settings(*, epochs: int, seed: int, optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                      extra: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint must have been trained with to be resumed: epochs, seed, optimizer, schedule, AMP
    and `extra` (iterations per epoch, batch size, ...).

    Read from the optimizer before its state is loaded (loading overwrites the hyper-parameters); a
    scheduler's `initial_lr` stands for the base rate, since `lr` already holds the scheduled value.
    """
    groups = [{k: v for k, v in group.items() if k != "params" and not (k == "lr" and "initial_lr" in group)}
              for group in optimizer.param_groups]
    settings = {
        "epochs": epochs,
        "seed": seed,
        "optimizer": {"class": type(optimizer).__qualname__, "param_groups": groups},
        "scheduler": {"class": type(scheduler).__qualname__, "interval": "step"},  # it steps once per batch
        "amp": scaler is not None and scaler.is_enabled(),
        "extra": dict(extra),
    }
    return _plain(settings)


def _setting_differences(saved: Any, current: Any) -> list[str]:
    old, new = flatten(saved), flatten(current)
    keys = sorted(old.keys() | new.keys())
    return [f"{key}: {old.get(key, '<absent>')!r} there, {new.get(key, '<absent>')!r} now"
            for key in keys if old.get(key, "<absent>") != new.get(key, "<absent>")]


def _load_resumable(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint at `path`, refused unless a training with the same `settings` wrote it."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint (format {CHECKPOINT_FORMAT}); delete it to "
                              "start the training over")
    differences = _setting_differences(ckpt["settings"], settings)
    if differences:
        raise CheckpointError(f"{path} was written with other training settings ({'; '.join(differences)}); "
                              "delete it to start training over, or resume with the original settings")
    return ckpt


def resume_training(path: Path, settings: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                    keeper: MaskKeeper, dist: DistContext | None = None) -> TrainingState:
    """A fresh state, or the checkpoint at `path` loaded into `model`, `optimizer`, `scheduler` and `scaler`
    and returned as the state to continue from. With `dist` the group's first rank alone reads the file and
    hands it to the others, so every rank resumes at the same epoch."""

    def read_checkpoint() -> dict[str, Any] | None:
        return _load_resumable(path, settings) if path.is_file() else None

    ckpt = run_on_group_main(dist, read_checkpoint)
    if ckpt is None:
        return TrainingState()
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt["scaler"] is not None:
        scaler.load_state_dict(ckpt["scaler"])
    state = TrainingState(next_epoch=ckpt["epoch"] + 1, best_state=ckpt["best_state"],
                          best_val_loss=ckpt["best_val_loss"], best_epoch=ckpt["best_epoch"],
                          best_val_metrics=ckpt.get("best_val_metrics", {}), history=ckpt["history"],
                          rewind_state=ckpt["rewind_state"], early_bird=ckpt.get("early_bird"),
                          elapsed_s=float(ckpt.get("elapsed_s", 0.0)))
    keeper.zero_optimizer_state()
    log.info("resuming training from %s at epoch %d of %d", path, state.next_epoch, settings["epochs"])
    return state


def save_checkpoint(path: Path, settings: dict[str, Any], state: TrainingState, *, model: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                    scaler: torch.amp.GradScaler | None) -> None:
    """Write the checkpoint of a training that has finished epoch `state.next_epoch - 1`, atomically."""
    checkpoint = {"format": CHECKPOINT_FORMAT, "settings": settings, "epoch": state.next_epoch - 1,
                  "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                  "best_state": state.best_state, "best_val_loss": state.best_val_loss,
                  "best_epoch": state.best_epoch, "best_val_metrics": state.best_val_metrics,
                  "history": state.history, "rewind_state": state.rewind_state, "elapsed_s": state.elapsed_s}
    if state.early_bird is not None:
        checkpoint["early_bird"] = state.early_bird
    atomic_save(checkpoint, path)
