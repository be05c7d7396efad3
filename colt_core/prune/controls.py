"""The controls a lottery ticket is judged against (Frankle & Carbin; Ma et al., "Sanity checks"):

- `random_prune`: a random mask with exactly the ticket's surviving count in every layer, trained from the
  ticket's start weights (a channel ticket's: random whole channels, as many in every coupled group). A ticket
  that does no better has found a sparsity level, not a subnetwork.
- `random_reinit`: the ticket's mask on a freshly drawn initialisation (the same init scheme, another
  seed). A ticket that does no better owes nothing to the weights it started from.

Both are trained and evaluated with the ticket's own recipe; this module only makes their mask and start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from colt_core.prune.channels import ChannelPlan, random_channel_mask
from colt_core.prune.masks import Mask
from colt_core.settings import CONTROLS

State = dict[str, torch.Tensor]


def random_prune_mask(mask: Mapping[str, torch.Tensor], seed: int) -> Mask:
    """A seeded random mask with exactly `mask`'s number of surviving weights in every tensor."""
    generator = torch.Generator().manual_seed(seed)
    out: Mask = {}
    for name in sorted(mask):  # a fixed order, so the draw does not depend on how the mask was built
        m = mask[name]
        keep = torch.zeros(m.numel(), dtype=torch.bool)
        keep[torch.randperm(m.numel(), generator=generator)[:int(m.sum())]] = True
        out[name] = keep.view(m.shape)
    return {name: out[name] for name in mask}


@dataclass(frozen=True)
class Control:
    """What one control trains: under which mask, from which weights."""

    name: str
    mask: Mask
    start: State


def make_control(name: str, mask: Mask, start: State, *, seed: int, draw_init: Callable[[], State],
                 channels: ChannelPlan | None = None) -> Control:
    """The control `name` of a ticket (`mask` applied to `start`); `draw_init` draws a fresh initialisation
    (seeded by the caller) for random_reinit. A channel ticket (`channels`, its plan) gets random channels for
    random_prune: the same kept-channel count in every coupled group."""
    if name == "random_prune":
        drawn = random_channel_mask(mask, channels, seed) if channels is not None else random_prune_mask(mask, seed)
        return Control(name, drawn, start)
    if name == "random_reinit":
        return Control(name, mask, draw_init())
    raise ValueError(f"unknown control {name!r}; choose from {', '.join(CONTROLS)}")
