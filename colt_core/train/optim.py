"""Optimizers and learning-rate schedules shared by the front ends (Adam/SGD; cosine, multistep, warm-up)."""

from __future__ import annotations

import math

import torch
from torch import nn

from colt_core.settings import OptimizerConfig, ScheduleConfig


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
