"""Prune groups and global magnitude pruning with an exact count per group."""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from colt_core.errors import UserError
from colt_core.prune.masks import Mask

log = logging.getLogger(__name__)

NEVER_PRUNED_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


class LayerCollapseError(UserError, RuntimeError):
    """Pruning would remove every weight of a layer."""


@dataclass(frozen=True)
class PruneGroup:
    """A set of weights pruned together by global magnitude at one per-round rate."""

    name: str
    rate: float
    params: tuple[str, ...]


def resolve_prune_groups(
    model: nn.Module,
    specs: Mapping[str, Mapping[str, Sequence[str]]],
    rates: Mapping[str, float],
    output_layers: Sequence[str] = (),
    *,
    include_frozen: bool = False,
) -> list[PruneGroup]:
    """Select the prunable weights of `model` for each group spec.

    A spec is `{"types": [module class names], "include": [regexes], "exclude": [regexes]}` matched
    against the module's `weight` parameter name. Output layers, biases and norm layers are never
    pruned, nor weights the model keeps frozen (`requires_grad` off) unless `include_frozen`; output
    layers, include patterns and rates that name nothing are errors.
    """
    modules = dict(model.named_modules())
    for layer in output_layers:
        if layer not in modules:
            close = [n for n in modules if n and layer.split(".")[-1] in n][:5]
            raise ValueError(f"output layer {layer!r} does not exist in the model"
                             + (f"; similar names: {close}" if close else ""))
    unknown_rates = set(rates) - set(specs)
    if unknown_rates:
        raise ValueError(f"prune rates given for unknown group(s) {sorted(unknown_rates)}; groups: {sorted(specs)}")

    def is_output(name: str) -> bool:
        return any(name == o or name.startswith(o + ".") for o in output_layers)

    owner: dict[str, str] = {}
    groups: list[PruneGroup] = []
    for gname, spec in specs.items():
        if gname not in rates:
            raise ValueError(f"prune group {gname!r} has no rate; set prune.rates.{gname}")
        rate = float(rates[gname])
        if not 0.0 < rate < 1.0:
            raise ValueError(f"prune.rates.{gname} must be in (0, 1), got {rate}")
        types = set(spec.get("types", ()))
        include = [re.compile(p) for p in spec.get("include", ())]
        exclude = [re.compile(p) for p in spec.get("exclude", ())]
        used_include: set[int] = set()
        names = []
        for mname, module in modules.items():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter) or type(module).__name__ not in types:
                continue
            if isinstance(module, NEVER_PRUNED_TYPES):
                raise ValueError(f"prune group {gname!r}: norm layer type {type(module).__name__} is never pruned")
            pname = f"{mname}.weight"
            if is_output(mname) or any(e.search(pname) for e in exclude):
                continue
            if not weight.requires_grad and not include_frozen:
                continue
            if include:
                hits = [i for i, p in enumerate(include) if p.search(pname)]
                if not hits:
                    continue
                used_include.update(hits)
            if pname in owner:
                raise ValueError(f"{pname} is in two prune groups: {owner[pname]!r} and {gname!r}")
            owner[pname] = gname
            names.append(pname)
        unused = [include[i].pattern for i in range(len(include)) if i not in used_include]
        if unused:
            raise ValueError(f"prune group {gname!r}: include pattern(s) {unused} match no {sorted(types)} weight")
        if not names:
            log.info("prune group %r selects no weights in this model", gname)
        groups.append(PruneGroup(gname, rate, tuple(names)))
    return groups


def per_layer(groups: Sequence[PruneGroup]) -> list[PruneGroup]:
    """Every layer of every group as a group of its own, at its group's rate (layer-wise pruning)."""
    return [PruneGroup(f"{g.name}:{name}", g.rate, (name,)) for g in groups for name in g.params]


def prune_count(rate: float, alive: int) -> int:
    """round(rate × alive), halves rounded up, so counts never depend on float formatting."""
    return math.floor(rate * alive + 0.5)


@torch.no_grad()
def magnitude_prune(
    weights: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    groups: Sequence[PruneGroup],
    *,
    on_layer_collapse: str = "error",
    reference: Mapping[str, torch.Tensor] | None = None,
) -> Mask:
    """Prune exactly round(rate × alive) surviving weights per group, smallest |w| across the group (with
    `reference`, the weights a training started from: smallest |w| - |w_reference|, the magnitude increase).

    Ties at the threshold are broken by position (layer order, then flat index): the earlier ones are
    pruned, so the result is deterministic. One k-th value selection per group: no sort, no Python
    loop over elements. `on_layer_collapse`: error, warn, or ignore (a would-be mask that is never applied).
    """
    new_mask: Mask = dict(mask)  # every pruned layer gets a new tensor; the caller's mask is never modified
    for group in groups:
        if not group.params:
            continue
        scores = _group_scores(weights, mask, group.params, reference)
        alive = sum(int(torch.count_nonzero(mask[n])) for n in group.params)
        k = prune_count(group.rate, alive)
        if k == 0:
            continue
        threshold, at_or_below = _kth_and_count(scores, k)
        offset = 0
        for n in group.params:
            numel = mask[n].numel()
            new_mask[n] = mask[n] & (scores[offset:offset + numel] > threshold).view_as(mask[n])
            offset += numel
        extra = at_or_below - k
        if extra > 0:
            # More weights tie at the threshold than need pruning: the last `extra` of them stay alive.
            ties = (scores == threshold).nonzero().flatten()[-extra:]
            offset = 0
            for n in group.params:
                numel = mask[n].numel()
                local = ties[(ties >= offset) & (ties < offset + numel)] - offset
                new_mask[n].view(-1)[local] = True
                offset += numel
    check_layer_collapse(new_mask, groups, on_layer_collapse)
    return new_mask


def check_layer_collapse(mask: Mapping[str, torch.Tensor], groups: Sequence[PruneGroup],
                         on_layer_collapse: str) -> None:
    """Raise (or warn, or let pass, per `on_layer_collapse`) when `mask` removes every weight of a pruned layer."""
    collapsed = [n for g in groups for n in g.params if not bool(mask[n].any())]
    if collapsed and on_layer_collapse != "ignore":
        message = (f"layer collapse: pruning removed every weight of {collapsed}; lower the group's "
                   "rate or stop at a lower target sparsity")
        if on_layer_collapse == "error":
            raise LayerCollapseError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _group_scores(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
                  names: Sequence[str], reference: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """|w| (minus |w_reference| when given) of a group's weights in one flat float32 vector; dead weights
    score +inf."""
    total = sum(mask[n].numel() for n in names)
    scores = torch.empty(total, dtype=torch.float32)
    offset = 0
    for n in names:
        w, m = weights[n], mask[n]
        if tuple(w.shape) != tuple(m.shape):
            raise ValueError(f"{n}: weight shape {tuple(w.shape)} differs from mask shape {tuple(m.shape)}")
        out = scores[offset:offset + m.numel()]
        torch.abs(w.detach().reshape(-1).to("cpu", torch.float32), out=out)
        if reference is not None:
            out.sub_(reference[n].detach().reshape(-1).to("cpu", torch.float32).abs())
        # A sum is one cheap pass; only when it is not finite is the exact (allocating) check needed.
        if not math.isfinite(float(out.sum())) and not bool(torch.isfinite(out).all()):
            raise ValueError(f"{n} holds NaN or infinite weights: the training diverged (lower the learning rate)")
        m = m.reshape(-1).to("cpu")
        if not bool(m.all()):
            out.masked_fill_(m.logical_not(), math.inf)
        offset += m.numel()
    return scores


_CHUNK = 1 << 22  # elements per pass: temporaries stay small instead of costing fresh pages per pass


def _count_below(scores: torch.Tensor, value: float, *, inclusive: bool = False) -> int:
    op = torch.le if inclusive else torch.lt
    return sum(int(torch.count_nonzero(op(c, value))) for c in scores.split(_CHUNK))


def _kth_and_count(scores: torch.Tensor, k: int, sample_size: int = 1 << 20) -> tuple[float, int]:
    """The k-th smallest value and how many values are <= it."""
    n = scores.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    if n > 8 * sample_size:
        gen = torch.Generator().manual_seed(0)
        sample = scores[torch.randint(n, (sample_size,), generator=gen)].sort().values
        q = k / n
        margin = 6.0 * math.sqrt(q * (1.0 - q) / sample_size) + 2.0 / sample_size
        lo_i, hi_i = math.floor((q - margin) * sample_size), math.ceil((q + margin) * sample_size)
        lo = float(sample[lo_i]) if lo_i >= 0 else -math.inf
        hi = float(sample[hi_i]) if hi_i < sample_size else math.inf
        below, parts = 0, []
        for chunk in scores.split(_CHUNK):  # one pass: count what lies below the band, keep the band
            at_least_lo = chunk >= lo
            below += chunk.numel() - int(torch.count_nonzero(at_least_lo))
            parts.append(chunk[at_least_lo & (chunk <= hi)])
        if below < k:
            band = torch.cat(parts)
            if k <= below + band.numel():
                value = float(torch.kthvalue(band, k - below).values)
                return value, below + int(torch.count_nonzero(band <= value))
    value = float(torch.kthvalue(scores, k).values)
    return value, _count_below(scores, value, inclusive=True)
