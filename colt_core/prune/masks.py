"""Masks: plain `dict[str, torch.BoolTensor]` from parameter name to "weight survives".

Masks live outside the model (no hooks, no parametrizations) so a masked model's state_dict
stays loadable by the unmodified architecture.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

Mask = dict[str, torch.Tensor]


def ones_mask(model: nn.Module, names: Iterable[str]) -> Mask:
    """An all-surviving mask over the named parameters of `model`."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"model has no parameter(s) {missing}")
    return {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in names}


def intersect_masks(masks: Sequence[Mapping[str, torch.Tensor]]) -> Mask:
    """Element-wise AND of masks over the same names and shapes (the overlapping ticket)."""
    if not masks:
        raise ValueError("intersect_masks needs at least one mask")
    names = list(masks[0])
    for i, m in enumerate(masks[1:], start=1):
        if list(m) != names:
            raise ValueError(f"mask {i} covers other parameters than mask 0")
    out: Mask = {}
    for n in names:
        acc = masks[0][n].clone()
        for m in masks[1:]:
            if m[n].shape != acc.shape:
                raise ValueError(f"mask shapes differ for {n}: {tuple(m[n].shape)} vs {tuple(acc.shape)}")
            acc &= m[n]
        out[n] = acc
    return out


def check_mask(mask: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Raise when mask names or shapes do not match `model`'s parameters."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise ValueError(f"mask names parameter {name!r}, which the model does not have")
        if tuple(m.shape) != tuple(params[name].shape):
            raise ValueError(f"mask for {name} has shape {tuple(m.shape)}, parameter has {tuple(params[name].shape)}")
        if m.dtype != torch.bool:
            raise ValueError(f"mask for {name} has dtype {m.dtype}, expected torch.bool")


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights of `model` in place."""
    check_mask(mask, model)
    params = dict(model.named_parameters())
    for name, m in mask.items():
        p = params[name]
        p.mul_(m.to(device=p.device, dtype=p.dtype))


def masked_copy(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of `model` with the weights `mask` prunes set to zero; `model` itself is left as it is."""
    model = copy.deepcopy(model)
    apply_mask(model, mask)
    return model


class MaskKeeper:
    """Keeps pruned weights exactly zero through training.

    Call `before_step()` after backward (after `scaler.unscale_` under AMP) and `after_step()` after
    every optimizer step. Gradients of pruned weights are zeroed, the weights are re-masked after
    the step, and the optimizer's per-weight state (SGD momentum, Adam moments) is zeroed where
    pruned, so no optimizer can revive a pruned weight.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, torch.Tensor],
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        check_mask(mask, model)
        named = dict(model.named_parameters())
        # Fully-alive tensors need no work: skip them to keep the per-step cost down.
        pairs = [(named[n], m) for n, m in mask.items() if not bool(m.all())]
        self.params = [p for p, _ in pairs]
        self.masks = [m.to(device=p.device, dtype=p.dtype) for p, m in pairs]
        self.optimizer = optimizer
        self._state_checked = False
        apply_mask(model, mask)

    @torch.no_grad()
    def before_step(self) -> None:
        """Zero the gradients of pruned weights."""
        grads, masks = [], []
        for p, m in zip(self.params, self.masks):
            if p.grad is not None:
                grads.append(p.grad)
                masks.append(m)
        if grads:
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def after_step(self) -> None:
        """Re-apply the mask to the weights; zero optimizer state at pruned positions once it exists."""
        if self.params:
            torch._foreach_mul_(self.params, self.masks)
        if not self._state_checked and self.optimizer is not None and self.optimizer.state:
            self.zero_optimizer_state()
            self._state_checked = True

    @torch.no_grad()
    def zero_optimizer_state(self) -> None:
        """Zero every per-weight optimizer buffer (same shape as its weight) where the weight is pruned.

        With gradients masked and buffers starting at zero, the buffers stay zero afterwards, so this
        is needed once after the state is created and again after an optimizer state is loaded.
        """
        if self.optimizer is None:
            return
        for p, m in zip(self.params, self.masks):
            state = self.optimizer.state.get(p)
            if not state:
                continue
            for value in state.values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(m.to(value.dtype))
