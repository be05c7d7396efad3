"""θ0 snapshots and rewinding: every round restarts from the masked initial weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from colt_core.prune.masks import apply_mask


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's state_dict (θ0, or the weights at iteration k)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def is_output_key(key: str, output_layers: Sequence[str]) -> bool:
    """Whether a state_dict key belongs to one of the (never pruned, per-partition) output layers."""
    return any(key.startswith(layer + ".") for layer in output_layers)


@torch.no_grad()
def rewind(model: nn.Module, init: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
           output_layers: Sequence[str] = (), *, keep_output: bool = False) -> None:
    """Load θ0 into `model` and zero the pruned weights.

    With `keep_output`, the model's own output layers stay as built (a partition or full-data head of
    another size, freshly initialised); everything else must match θ0 in name and shape.
    """
    own = model.state_dict()
    load = {}
    for key, value in own.items():
        if keep_output and is_output_key(key, output_layers):
            continue
        if key not in init:
            raise KeyError(f"initial weights have no entry {key!r}; the model does not match θ0")
        if tuple(init[key].shape) != tuple(value.shape):
            raise ValueError(f"{key}: initial weights have shape {tuple(init[key].shape)}, "
                             f"the model {tuple(value.shape)}")
        load[key] = init[key]
    model.load_state_dict(load, strict=False)
    apply_mask(model, mask)
