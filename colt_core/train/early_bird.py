"""Early-bird stopping of a search training (You et al., "Drawing Early-Bird Tickets", ICLR 2020).

At each check the training computes the mask it would prune now (the round's own pruning function on the
current weights) and its distance to each of the masks of the last `window` checks. Once the window is full and
the largest of those distances is below `distance`, the mask has settled: the training stops, and the round
prunes from the weights of that moment. The distance of two masks is the share of the weights alive in the
mask the training runs under on which they differ: both prune the same count of them, so it is 0 for the same
cut and at most twice the round's rate for disjoint ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from colt_core.prune.masks import Mask
from colt_core.settings import EarlyBirdConfig

log = logging.getLogger(__name__)


@dataclass
class EarlyBird:
    """One training's early-bird check: the would-be masks of its last checks, the distance trace, the stop.

    `would_prune(weights)` is the round's pruning of a state (the weights of the parameters in `alive`);
    `alive` is the mask the training runs under. `stopped` is set by the check that stops the training.
    """

    settings: EarlyBirdConfig
    would_prune: Callable[[Mapping[str, torch.Tensor]], Mask]
    alive: Mask
    recent: list[torch.Tensor] = field(default_factory=list)  # the window: would-be masks over the alive weights
    trace: list[dict[str, Any]] = field(default_factory=list)  # one entry per check: step, epoch, distance
    stopped: dict[str, Any] | None = None
    check_time_s: float = 0.0  # wall time spent in checks (this process's part of the training)

    @property
    def every_steps(self) -> int | None:
        """Optimizer steps between checks; None: one check after each epoch."""
        return None if self.settings.check == "epoch" else int(self.settings.check)

    def _survivors(self, mask: Mask) -> torch.Tensor:
        """The would-be mask on the alive weights only, as one flat bool vector (what a distance compares)."""
        return torch.cat([mask[n].reshape(-1)[self.alive[n].reshape(-1)].cpu() for n in sorted(self.alive)])

    def check(self, model: nn.Module, *, step: int, epoch: int) -> bool:
        """Check the mask `model`'s weights would give now; True when the training should stop here."""
        start = time.perf_counter()
        params = dict(model.named_parameters())
        weights = {n: params[n].detach() for n in self.alive}
        current = self._survivors(self.would_prune(weights))
        distances = [float((current ^ earlier).sum()) / max(1, current.numel()) for earlier in self.recent]
        full = len(self.recent) == self.settings.window
        largest = max(distances) if full else None
        self.trace.append({"step": step, "epoch": epoch, "distance": largest})
        self.recent = [*self.recent, current][-self.settings.window:]
        self.check_time_s += time.perf_counter() - start
        if largest is not None and largest < self.settings.distance:
            self.stopped = {"step": step, "epoch": epoch, "distance": largest}
            log.info("early-bird stop at step %d (epoch %d): the would-be mask moved %.4f (< %g) over the last %d "
                     "checks", step, epoch + 1, largest, self.settings.distance, self.settings.window)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed training checks exactly as an uninterrupted one."""
        return {"recent": list(self.recent), "trace": list(self.trace)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.recent, self.trace = list(state["recent"]), list(state["trace"])

    def record(self, *, epochs: int, steps_per_epoch: int) -> dict[str, Any]:
        """How the training went, for its metrics: whether and where it stopped, the epochs it ran, the trace."""
        steps = self.stopped["step"] if self.stopped else epochs * steps_per_epoch
        return {"stopped": self.stopped is not None, "stop": self.stopped, "epochs_configured": epochs,
                "epochs_run": steps / steps_per_epoch, "steps_run": steps, "distance": self.settings.distance,
                "window": self.settings.window, "check": self.settings.check, "check_time_s": self.check_time_s,
                "trace": list(self.trace)}
