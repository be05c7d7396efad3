"""Late rewinding (Frankle et al., 2019): the weights after k optimizer steps, the point a ticket rewinds to."""

from __future__ import annotations

import torch
from torch import nn

from colt_core.config import ConfigError
from colt_core.prune.weights import snapshot


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
