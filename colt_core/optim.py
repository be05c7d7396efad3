"""Optimizers and learning-rate schedules shared by the front ends (Adam/SGD; cosine, multistep, warm-up)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from colt_core.config import at_least, closed_interval, field, positive


@dataclass
class OptimizerConfig:
    """Optimizer hyper-parameters (detector paper recipe: Adam, lr 1e-4)."""

    name: Literal["adam", "adamw", "sgd"] = field("adam", help="adam | adamw | sgd")
    lr: float = field(1e-4, help="base learning rate", check=positive)
    weight_decay: float = field(0.0, help="weight decay (L2 for adam/sgd, decoupled for adamw)",
                                check=at_least(0.0))
    momentum: float = field(0.9, help="SGD momentum", check=closed_interval(0.0, 0.999))
    nesterov: bool = field(False, help="SGD Nesterov momentum")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], help="Adam betas")

    def validate(self) -> list[tuple[str, str]]:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            return [("betas", f"must be two numbers in [0, 1), got {self.betas}")]
        if self.nesterov and self.name == "sgd" and self.momentum == 0:
            return [("nesterov", "needs momentum > 0")]
        return []


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (detector paper recipe: cosine annealing to 1.02e-6)."""

    name: Literal["cosine", "multistep", "constant"] = field("cosine", help="cosine | multistep | constant")
    eta_min: float = field(1.02e-6, help="cosine: final learning rate", check=at_least(0.0))
    milestones: list[int] = field(default_factory=list, help="multistep: epochs at which lr *= gamma")
    gamma: float = field(0.1, help="multistep: factor applied at each milestone", check=positive)
    warmup_epochs: int = field(0, help="linear warm-up epochs (per iteration)", check=at_least(0))
    interval: Literal["iteration", "epoch"] = field("iteration",
                                                   help="whether the lr changes every step or every epoch")

    def validate(self) -> list[tuple[str, str]]:
        if any(m < 1 for m in self.milestones) or self.milestones != sorted(set(self.milestones)):
            return [("milestones", f"must be increasing epoch numbers >= 1, got {self.milestones}")]
        return []


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over the trainable parameters of `model`."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


def lr_factor(step: int, cfg: ScheduleConfig, *, base_lr: float, epochs: int, iters_per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step `step` (0-based): warm-up, then the schedule."""
    epoch = step // iters_per_epoch
    warmup_steps = cfg.warmup_epochs * iters_per_epoch
    if cfg.name == "cosine":
        if cfg.interval == "iteration":
            progress = (step - warmup_steps) / max(1, epochs * iters_per_epoch - warmup_steps)
        else:
            progress = (epoch - cfg.warmup_epochs) / max(1, epochs - cfg.warmup_epochs)
        progress = min(max(progress, 0.0), 1.0)
        lr = cfg.eta_min + (base_lr - cfg.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))
        factor = lr / base_lr
    elif cfg.name == "multistep":
        factor = cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    else:
        factor = 1.0
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, epochs: int,
                       iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once after every optimizer step (`interval` sets how often the lr changes)."""
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(f"need epochs >= 1 and a non-empty data loader, got {epochs} epochs, "
                         f"{iters_per_epoch} iterations per epoch")
    if cfg.name == "cosine" and cfg.warmup_epochs >= epochs:
        raise ValueError(f"schedule.warmup_epochs ({cfg.warmup_epochs}) must be < epochs ({epochs})")
    base_lr = optimizer.param_groups[0]["lr"]
    if cfg.name == "cosine" and cfg.eta_min > base_lr:
        raise ValueError(f"schedule.eta_min ({cfg.eta_min}) must be <= the optimizer's lr ({base_lr})")

    def factor(step: int) -> float:
        return lr_factor(step, cfg, base_lr=base_lr, epochs=epochs, iters_per_epoch=iters_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
