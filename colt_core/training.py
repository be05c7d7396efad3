"""A task-agnostic epoch loop: model selection by validation loss, resumable per-epoch checkpoints.

The front ends supply one epoch of training and the validation loss; this loop owns reseeding,
best-model selection and the checkpoint that lets a killed training resume bit-for-bit on the CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_core.io import atomic_save, load_checkpoint
from colt_core.masks import MaskKeeper
from colt_core.runtime import derive_seed, seed_everything
from colt_core.weights import snapshot

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """The selected weights and how training went."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    rewind_state: dict[str, torch.Tensor] | None = None


def fit(
    model: nn.Module,
    *,
    epochs: int,
    train_epoch: Callable[[int], dict[str, float]],
    val_loss: Callable[[], float],
    optimizer: torch.optim.Optimizer,
    seed: int,
    scheduler: Any = None,
    scheduler_interval: str = "step",
    scaler: torch.amp.GradScaler | None = None,
    keeper: MaskKeeper | None = None,
    checkpoint_path: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    rewind_state: Callable[[], dict[str, torch.Tensor] | None] | None = None,
) -> FitResult:
    """Train `epochs` epochs; keep the weights with the lowest validation loss.

    Every epoch starts from seeds derived from (seed, epoch), and after every epoch the whole
    state is checkpointed atomically, so a killed run resumed from `checkpoint_path` ends with the
    same weights as an uninterrupted one. `scheduler_interval="epoch"` steps the scheduler here;
    "step" leaves it to `train_epoch`. `rewind_state` returns late-rewinding weights once taken.
    """
    start, best_state, best_loss, best_epoch, history = 0, None, math.inf, -1, []
    late_rewind = None
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and path.is_file():
        ckpt = load_checkpoint(path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        start, best_state, best_loss = ckpt["epoch"] + 1, ckpt["best_state"], ckpt["best_val_loss"]
        best_epoch, history, late_rewind = ckpt["best_epoch"], ckpt["history"], ckpt.get("rewind_state")
        if keeper is not None:
            keeper.zero_optimizer_state()
        log.info("resuming training from %s at epoch %d", path, start)
    for epoch in range(start, epochs):
        seed_everything(derive_seed(seed, "epoch", epoch))
        model.train()
        stats = dict(train_epoch(epoch))
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        loss = float(val_loss())
        if not math.isfinite(loss):
            raise FloatingPointError(f"validation loss is {loss} after epoch {epoch}: training diverged; "
                                     "lower the learning rate")
        stats["val_loss"] = loss
        stats["epoch"] = epoch
        history.append(stats)
        if loss < best_loss:
            best_loss, best_epoch, best_state = loss, epoch, snapshot(model)
        if late_rewind is None and rewind_state is not None:
            late_rewind = rewind_state()
        if path is not None:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict() if scheduler is not None else None,
                         "scaler": scaler.state_dict() if scaler is not None else None,
                         "epoch": epoch, "best_state": best_state, "best_val_loss": best_loss,
                         "best_epoch": best_epoch, "history": history, "rewind_state": late_rewind}, path)
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats)
    if best_state is None:
        raise RuntimeError("fit ran no epoch: epochs must be >= 1")
    return FitResult(best_state, best_epoch, best_loss, history, late_rewind)
