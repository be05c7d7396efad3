"""Channel tickets (`prune.granularity: channel`): whole output channels of the convolutions (and with
`prune.fc_granularity: neuron` whole neurons of the linear layers) kept or removed, coupled channels together.

A channel mask is an ordinary mask (`colt_core.prune.masks`): a boolean per weight. A removed channel is a row
of False in every weight that makes it (dim 0 of a filter bank) and a column of False in every masked weight
that reads it (dim 1), so the masked model computes what the physically slimmer model computes, and the
engine, rewinding, resuming and the reports need nothing new.

Which channels go together comes from Torch-Pruning's dependency graph, traced once per run on the task's
example inputs: the convolutions whose outputs a residual sum adds, a depthwise convolution and the
convolution feeding it, an FPN's laterals and the heads they share, a flattened feature map and the linear
layer reading it. A group is pruned only when every layer that makes its channels is one the engine prunes
and every layer that reads them is one too, or an output layer (whose input columns a slim export drops);
its channels must not be the model's outputs. Any other group stays whole, and so do its layers' filters.

Why the intersection of channel masks is a channel mask: every masked weight is the product of one keep
vector per channel group along each of its dims (rows: the group making its outputs; columns: the groups
feeding it). The AND of two such products is the product of the AND-ed keep vectors, a channel mask whose
kept channels are, per group, the partitions' common ones. `check_channel_mask` states it of any mask.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from colt_core.errors import UserError
from colt_core.prune.magnitude import (
    LayerCollapseError,
    PruneGroup,
    check_layer_collapse,
    magnitude_prune,
    prune_count,
)
from colt_core.prune.masks import Mask

log = logging.getLogger(__name__)

CHANNEL_SCORES = ("l1", "bn_gamma")


class ChannelPlanError(UserError, ValueError):
    """The model has no channel group the engine may prune."""


@dataclass(frozen=True)
class ChannelSlice:
    """One weight's share of a channel group: index `i` along `dim` of `param` belongs to the group's channel
    `index[i]` (-1: to none of this group's channels)."""

    param: str
    dim: int
    index: torch.Tensor

    def keep(self, channels: torch.Tensor) -> torch.Tensor:
        """The group's per-channel keep vector carried over to this dim (True where the group has no say)."""
        out = torch.ones(self.index.numel(), dtype=torch.bool)
        inside = self.index >= 0
        out[inside] = channels[self.index[inside]]
        return out


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together, in every layer that makes, scales or reads them."""

    name: str  # the layer whose output channels these are (the first of them in the model's order)
    size: int  # how many channels
    rate: float  # the share of surviving channels a round prunes: the rate of the root layer's prune group
    filters: tuple[ChannelSlice, ...]  # weights making the channels (their output dim)
    readers: tuple[ChannelSlice, ...]  # masked weights reading the channels (their input dim)
    gammas: tuple[ChannelSlice, ...]  # BatchNorm scales of the channels (scored by `bn_gamma`, never masked)

    def alive(self, mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Which channels survive in `mask`: those whose row of the first filter has a surviving weight."""
        first = self.filters[0]
        rows = _along(mask[first.param], first.dim).any(1)
        out = torch.zeros(self.size, dtype=torch.bool)
        inside = first.index >= 0
        out[first.index[inside]] = rows[inside]
        return out


@dataclass(frozen=True)
class ChannelPlan:
    """The channel groups of one architecture, found once per run (it depends on nothing else)."""

    groups: tuple[ChannelGroup, ...]
    params: frozenset[str]  # masked weights pruned by channel alone: no weight-level pruning touches them
    whole: tuple[tuple[str, str], ...]  # (layer, why) of the channel groups left whole

    def weight_groups(self, groups: Sequence[PruneGroup]) -> list[PruneGroup]:
        """`groups` less the weights pruned by channel: what weight-level magnitude pruning still prunes."""
        return [PruneGroup(g.name, g.rate, tuple(n for n in g.params if n not in self.params)) for g in groups]

    def keeps(self, mask: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Every group's surviving channels in `mask`."""
        return [g.alive(mask) for g in self.groups]


def _along(t: torch.Tensor, dim: int) -> torch.Tensor:
    """`t` as a matrix with `dim` as its rows."""
    return t.detach().movedim(dim, 0).reshape(t.shape[dim], -1)


# ----- finding the groups ---------------------------------------------------------------------------------
def _requiring_grad(inputs: Any) -> Any:
    """A copy of the example inputs whose float tensors require grad, so that layers the model keeps frozen
    are traced as well (the graph is read off autograd)."""
    if isinstance(inputs, torch.Tensor):
        return inputs.detach().clone().requires_grad_(True) if inputs.is_floating_point() else inputs
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(_requiring_grad(x) for x in inputs)
    if isinstance(inputs, dict):
        return {k: _requiring_grad(v) for k, v in inputs.items()}
    return inputs


def build_channel_plan(model: nn.Module, groups: Sequence[PruneGroup], output_layers: Sequence[str],
                       example_inputs: Any, forward_fn: Callable[[nn.Module, Any], Any] | None = None, *,
                       neurons: bool = False) -> ChannelPlan:
    """Trace `model` on `example_inputs` (through `forward_fn(model, inputs)` when given) with Torch-Pruning's
    dependency graph and keep the coupled channel groups the engine's prune `groups` may prune.

    The masked convolutions are pruned by channel; so are the masked linear layers with `neurons` (their rows,
    coupled to the next layer's inputs), which otherwise stay at weight granularity. `output_layers` are never
    pruned; a group they read may be (their input columns are not in the mask). Raises ChannelPlanError when no
    group can be pruned.
    """
    import torch_pruning as tp

    roots: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear) if neurons else (
        nn.modules.conv._ConvNd,)
    masked = {n for g in groups for n in g.params}
    rate_of = {n: g.rate for g in groups for n in g.params}
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    by_channel = {f"{n}.weight" for n, m in modules.items() if isinstance(m, roots)} & masked
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}

    def is_output(name: str) -> bool:
        return any(name == o or name.startswith(o + ".") for o in output_layers)

    was_training = model.training
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's notes on unwrapped parameters and unknown ops
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=_requiring_grad(example_inputs),
                                                      forward_fn=forward_fn, verbose=False)
    model.train(was_training)
    found: list[ChannelGroup] = []
    whole: list[tuple[str, str]] = []
    for tp_group in graph.get_all_groups(root_module_types=roots):
        parts, why = _channel_slices(graph, tp_group, names, order, masked, by_channel, is_output, neurons)
        if parts is None:
            whole.append((names.get(tp_group[0].dep.target.module, "?"), why))
            continue
        size, filters, readers, gammas = parts
        first = filters[0]  # in the model's order
        found.append(ChannelGroup(first.param.removesuffix(".weight"), size, rate_of[first.param], filters, readers,
                                  gammas))
    reached = {f"{names[m]}.weight" for m in graph.module2node if isinstance(m, nn.Module) and m in names}
    for param in sorted(by_channel - reached, key=order.__getitem__):
        whole.append((param.removesuffix(".weight"), "not reached by the trace"))
    found.sort(key=lambda g: order[f"{g.name}.weight"])
    if not found:
        reasons = "; ".join(f"{layer}: {why}" for layer, why in whole[:6]) or "no masked convolution"
        raise ChannelPlanError(f"prune.granularity: channel: no channel group of this model can be pruned ({reasons});"
                               " use prune.granularity: weight")
    for layer, why in whole:
        log.info("channel group of %s stays whole: %s", layer, why)
    return ChannelPlan(tuple(found), frozenset(by_channel), tuple(whole))


_PASS_THROUGH = ("ELEMENTWISE", "CONCAT", "SPLIT", "RESHAPE", "SLICE", "UNBIND", "EXPAND", "OUTPUT")


Slices = tuple[ChannelSlice, ...]


def _channel_slices(graph: Any, tp_group: Any, names: Mapping[Any, str], order: Mapping[str, int], masked: set[str],
                    by_channel: set[str], is_output: Callable[[str], bool], neurons: bool
                    ) -> tuple[tuple[int, Slices, Slices, Slices] | None, str]:
    """One of Torch-Pruning's groups as (channels, filters, readers, gammas), or None and why it stays whole."""
    from torch_pruning import ops

    pass_through = {getattr(ops.OPTYPE, t) for t in _PASS_THROUGH}
    slices: dict[tuple[str, int, str], torch.Tensor] = {}
    size = None
    for item in tp_group:
        node, module = item.dep.target, item.dep.target.module
        name = names.get(module, type(module).__name__)
        idxs, roots = torch.as_tensor(item.idxs, dtype=torch.long), torch.as_tensor(item.root_idxs, dtype=torch.long)
        if size is None:
            size = int(roots.max()) + 1 if roots.numel() else 0
        reads = (isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
                 and graph.is_in_channel_pruning_fn(item.dep.handler)
                 and not graph.is_out_channel_pruning_fn(item.dep.handler))
        if not node.outputs and not reads:
            return None, "its channels are outputs of the model"
        if isinstance(module, nn.modules.conv._ConvNd):
            depthwise = module.groups == module.out_channels and module.groups > 1
            if module.groups > 1 and not depthwise:
                return None, f"it couples the grouped convolution {name}"
            role = "filters" if depthwise or not reads else "readers"
            dim = 0 if depthwise else int(module.transposed) if role == "filters" else 1 - int(module.transposed)
        elif isinstance(module, nn.Linear):
            if not reads and not neurons:
                return None, f"it couples the linear layer {name} (prune.fc_granularity: weight)"
            dim, role = (1, "readers") if reads else (0, "filters")
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.affine:
                key = (f"{name}.weight", 0, "gammas")
                slices[key] = _merged(slices.get(key), module.weight.shape[0], idxs, roots)
            continue
        elif isinstance(module, nn.Module) and ops.module2type(module) in pass_through:
            continue
        else:
            return None, f"it couples {name} ({type(module).__name__}), whose channels are not masked"
        param = f"{name}.weight"
        if param not in masked:
            if role == "readers" and is_output(name):
                continue  # an output layer's input columns are not in the mask; a slim export drops them
            return None, f"{'made' if role == 'filters' else 'read'} by {name}, which is not pruned"
        if role == "filters" and param not in by_channel:
            return None, f"made by {name}, which is pruned by weight"
        key = (param, dim, role)
        slices[key] = _merged(slices.get(key), module.weight.shape[dim], idxs, roots)
    if not size:
        return None, "it has no channels"
    parts: dict[str, list[ChannelSlice]] = {"filters": [], "readers": [], "gammas": []}
    for (param, dim, role), index in sorted(slices.items(), key=lambda item: order[item[0][0]]):
        parts[role].append(ChannelSlice(param, dim, index))
    if not parts["filters"]:
        return None, "no masked layer makes its channels"
    if any((s.index >= 0).sum() < s.index.numel() or s.index.unique().numel() != size for s in parts["filters"]):
        return None, "its filters do not map one to one onto its channels"
    return (size, tuple(parts["filters"]), tuple(parts["readers"]), tuple(parts["gammas"])), ""


def _merged(index: torch.Tensor | None, length: int, idxs: torch.Tensor, roots: torch.Tensor) -> torch.Tensor:
    out = torch.full((length,), -1, dtype=torch.long) if index is None else index
    out[idxs] = roots
    return out


# ----- scoring and pruning ----------------------------------------------------------------------------------
def channel_scores(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], group: ChannelGroup, *,
                   score: str = "l1", reference: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Each channel's score, summed over the group's members: the L1 norm of its surviving filter weights
    (`l1`), or |γ| of the BatchNorm layers scaling it (`bn_gamma`, Network Slimming; `l1` when the group has
    none). With `reference` (magnitude increase), each |w| or |γ| less its value at `reference`."""
    if score not in CHANNEL_SCORES:
        raise ValueError(f"unknown channel score {score!r}; choose from {', '.join(CHANNEL_SCORES)}")
    members = group.gammas if score == "bn_gamma" and group.gammas else group.filters
    out = torch.zeros(group.size, dtype=torch.float64)
    for s in members:
        magnitude = _along(weights[s.param], s.dim).to("cpu", torch.float64).abs()
        if reference is not None:
            magnitude = magnitude - _along(reference[s.param], s.dim).to("cpu", torch.float64).abs()
        if s.param in mask:
            magnitude = magnitude * _along(mask[s.param], s.dim).to("cpu", torch.float64)
        per_index = magnitude.sum(1)
        inside = s.index >= 0
        out.index_add_(0, s.index[inside], per_index[inside])
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{group.name} holds NaN or infinite weights: the training diverged (lower the learning rate)")
    return out


def channels_to_prune(scores: torch.Tensor, alive: torch.Tensor, rate: float) -> torch.Tensor:
    """The round(rate × alive) surviving channels of lowest score (never all: one always stays), ties broken by
    position (the earlier ones go), as a boolean vector."""
    n_alive = int(alive.sum())
    k = min(prune_count(rate, n_alive), n_alive - 1)
    out = torch.zeros_like(alive)
    if k <= 0:
        return out
    ranked = torch.where(alive, scores, torch.full_like(scores, math.inf))
    order = torch.sort(ranked, stable=True).indices
    out[order[:k]] = True
    return out


def apply_channels(mask: Mapping[str, torch.Tensor], plan: ChannelPlan, keeps: Sequence[torch.Tensor]) -> Mask:
    """`mask` with every group's removed channels (False in `keeps[i]` for group i) off in its filters' rows and
    its readers' columns; a new tensor for every weight it touches, the caller's mask unchanged."""
    out: Mask = dict(mask)
    for group, keep in zip(plan.groups, keeps, strict=True):
        if bool(keep.all()):
            continue
        for s in group.filters + group.readers:
            shape = [1] * out[s.param].dim()
            shape[s.dim] = -1
            out[s.param] = out[s.param] & s.keep(keep).view(shape)
    return out


@torch.no_grad()
def prune_channels(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], plan: ChannelPlan, *,
                   score: str = "l1", reference: Mapping[str, torch.Tensor] | None = None) -> Mask:
    """Prune round(rate × surviving channels) of every channel group (never all of them), lowest score first."""
    keeps = []
    for group in plan.groups:
        alive = group.alive(mask)
        scores = channel_scores(weights, mask, group, score=score, reference=reference)
        keeps.append(alive & ~channels_to_prune(scores, alive, group.rate))
    return apply_channels(mask, plan, keeps)


@torch.no_grad()
def prune_by_channel(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
                     groups: Sequence[PruneGroup], plan: ChannelPlan, *, channel_score: str = "l1",
                     reference: Mapping[str, torch.Tensor] | None = None, on_layer_collapse: str = "error") -> Mask:
    """The mask of a channel round: the plan's channel groups pruned by channel, the rest of `groups` (linear
    layers at weight granularity) by `magnitude_prune`, both from `mask`."""
    by_weight = magnitude_prune(weights, mask, plan.weight_groups(groups), reference=reference,
                                on_layer_collapse=on_layer_collapse)
    by_channel = prune_channels(weights, mask, plan, score=channel_score, reference=reference)
    out = {n: by_weight[n] & by_channel[n] for n in mask}
    check_layer_collapse(out, groups, on_layer_collapse)
    return out


def check_channel_mask(mask: Mapping[str, torch.Tensor], plan: ChannelPlan, on_layer_collapse: str = "error") -> None:
    """Raise ValueError unless `mask` is a channel mask of `plan`: in every group the same channels survive in
    every filter and reader, and each of them is off in whole rows (filters) and whole columns (readers). A group
    left without channels (partitions that kept disjoint ones) is a layer collapse, handled as
    `on_layer_collapse` says (error: LayerCollapseError, warn, ignore)."""
    alive = plan.keeps(mask)
    collapsed = [g.name for g, keep in zip(plan.groups, alive, strict=True) if not bool(keep.any())]
    if collapsed:  # the layers after an empty group have no inputs left: nothing else to check
        if on_layer_collapse == "ignore":
            return
        message = (f"layer collapse: the partitions kept no channel in common in {collapsed}; lower "
                   "prune.rates.conv or stop at a lower prune.target_sparsity")
        if on_layer_collapse == "error":
            raise LayerCollapseError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return
    for group, keep_channels in zip(plan.groups, alive, strict=True):
        for s in group.filters + group.readers:
            keep = s.keep(keep_channels)
            m = _along(mask[s.param], s.dim)
            if bool(m[~keep].any()):
                raise ValueError(f"{s.param}: channels of group {group.name} removed there are alive on dim {s.dim}")
            if s in group.filters and not bool(m[keep].any(1).all()):
                raise ValueError(f"{s.param}: a channel of group {group.name} alive elsewhere is removed there")


def random_channel_mask(mask: Mapping[str, torch.Tensor], plan: ChannelPlan, seed: int) -> Mask:
    """A seeded random channel mask with `mask`'s number of surviving channels in every group, then, in every
    weight pruned by weight, `mask`'s number of surviving weights drawn among those the random channels leave."""
    generator = torch.Generator().manual_seed(seed)
    keeps = []
    for group in plan.groups:
        keep = torch.zeros(group.size, dtype=torch.bool)
        keep[torch.randperm(group.size, generator=generator)[:int(group.alive(mask).sum())]] = True
        keeps.append(keep)
    full = {n: torch.ones_like(m, dtype=torch.bool) for n, m in mask.items()}
    structure = apply_channels(full, plan, keeps)
    out: Mask = {}
    for name in sorted(mask):  # a fixed order, so the draw does not depend on how the mask was built
        if name in plan.params:
            out[name] = structure[name]
            continue
        room = structure[name].reshape(-1).nonzero().flatten()
        count = int(mask[name].sum())
        if count > room.numel():
            raise ValueError(f"{name}: {count} surviving weights do not fit the {room.numel()} the channels leave")
        keep = torch.zeros(mask[name].numel(), dtype=torch.bool)
        keep[room[torch.randperm(room.numel(), generator=generator)[:count]]] = True
        out[name] = keep.view(mask[name].shape)
    return {name: out[name] for name in mask}


def kept_channels(mask: Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
    """Surviving / all output channels (rows with a surviving weight) of every convolution weight of `mask` (or of
    the weights `names`), by layer name: what a channel ticket keeps."""
    chosen = names if names is not None else [n for n, m in mask.items() if m.dim() >= 3]
    return {n.removesuffix(".weight"): (int(_along(mask[n], 0).any(1).sum()), int(mask[n].shape[0])) for n in chosen}
