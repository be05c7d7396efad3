"""Slim exports of channel tickets: the model with only its kept channels, physically smaller.

A channel mask (a plain mask whose convolution filters are each wholly on or wholly off) names the channels a
ticket removed. Torch-Pruning's dependency graph, traced on example inputs, finds what each channel couples
(the following norm layer, the next layers' input channels, a residual sum's other convolutions, a depthwise
convolution); a channel is cut when every convolution producing it has its filter off, and all of its coupled
entries go with it. The file holds the architecture, the cuts and the slim state_dict, never a pickled module:
`load_slim` rebuilds the full model through the task registry, replays the cuts and loads the weights.

A removed channel still outputs a constant in the masked model (its bias, through its norm layer); that
constant is folded into the bias of each layer that read it, which is exact for linear layers and unpadded
convolutions, and exact away from the border for padded ones. A ticket's θ0 (zero biases, norm layers at their
initial statistics) has no such constants, so its slim model computes exactly what the masked one does.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_core.export.errors import ExportError
from colt_core.io import atomic_save
from colt_core.registry import task_of_architecture

SLIM_FORMAT = "colt-slim"
SLIM_VERSION = 1

ForwardFn = Callable[[nn.Module, Any], Any]
_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class SlimTrace:
    """How a model is traced for its channel couplings: example inputs, and a function that runs the model on
    them and returns every output the prunable channels feed (None: `model(*example_inputs)`)."""

    example_inputs: Any
    forward: ForwardFn | None = None

    def run(self, model: nn.Module) -> Any:
        if self.forward is not None:
            return self.forward(model, self.example_inputs)
        inputs = self.example_inputs
        return model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)


@dataclass
class SlimResult:
    """A slimmed model, the cuts that made it (replayable on a rebuilt full model) and the kept channels."""

    model: nn.Module = field(repr=False)
    cuts: list[dict[str, Any]]
    kept: dict[str, list[int]]
    parameters_before: int
    parameters_after: int


def _tp() -> Any:
    import torch_pruning

    return torch_pruning


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))}


def dead_channels(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The output channels each masked layer has wholly off (True = off), by module name.

    A filter is off when all of it is off; the filters left on must each be wholly on but for whole input
    channels, the same in all of them (the inputs a removed channel of the layer before fed). A convolution
    with a filter otherwise partly on is not a channel mask (ExportError). A linear layer counts only when its
    rows are so too (neurons); a weight-level linear mask removes no neuron.
    """
    dead: dict[str, torch.Tensor] = {}
    for name, module in _layers(model).items():
        keep = mask.get(f"{name}.weight")
        if keep is None:
            continue
        rows = keep.to("cpu", torch.bool)
        rows = rows.reshape(rows.shape[0], rows.shape[1], -1)  # (filters, input channels, taps)
        off = ~rows.flatten(1).any(dim=1)
        columns = rows[~off].any(dim=2).any(dim=0)  # the input channels the kept filters read
        whole = (rows == columns[None, :, None]).flatten(1).all(dim=1)
        if not bool((whole | off).all()):
            if isinstance(module, nn.Linear):
                continue
            partly = int((~(whole | off)).sum())
            raise ExportError(f"not a channel mask: {partly} of the {len(rows)} filters of {name}.weight are "
                              "partly pruned (a channel ticket has every filter wholly on or off); export it "
                              "without --slim, or find the ticket with prune.granularity: channel")
        dead[name] = off
    return dead


def is_channel_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> bool:
    """Whether `mask` is a channel mask that removes at least one convolution filter of `model`."""
    try:
        dead = dead_channels(model, mask)
    except ExportError:
        return False
    layers = _layers(model)
    return any(bool(off.any()) for name, off in dead.items() if not isinstance(layers[name], nn.Linear))


def dependency_graph(model: nn.Module, trace: SlimTrace) -> Any:
    """Torch-Pruning's dependency graph of `model`, traced as `trace` says (the model is put in eval mode)."""
    tp = _tp()
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, trace.example_inputs, forward_fn=_forward(trace),
                                                     verbose=False)


def l1_channel_mask(model: nn.Module, trace: SlimTrace, keep: float = 0.5,
                    skip: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """A channel mask of `model` without a search: every coupled group of convolutions (none of them in `skip`)
    keeps the top `keep` of its channels by the summed L1 norm of their filters; linear layers stay whole. For
    trying what a slim export of a given shape costs to run before searching a ticket of that shape."""
    graph = dependency_graph(model, trace)
    names = {m: n for n, m in model.named_modules()}
    skipped = set(skip)
    mask = {f"{n}.weight": torch.ones_like(m.weight, dtype=torch.bool) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in skipped}
    for group in graph.get_all_groups(ignored_layers=[m for m, n in names.items() if n in skipped],
                                      root_module_types=(nn.Conv2d,)):
        members = [item for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)
                   and isinstance(item.dep.target.module, nn.Conv2d)]
        if any(f"{names[item.dep.target.module]}.weight" not in mask for item in members):
            continue
        channels = graph.get_out_channels(group[0].dep.target.module)
        score = torch.zeros(channels, dtype=torch.float64)
        for item in members:
            norms = item.dep.target.module.weight.detach().flatten(1).abs().sum(1).double()
            score.index_add_(0, torch.as_tensor(item.root_idxs), norms[torch.as_tensor(item.idxs)])
        kept = set(torch.argsort(-score, stable=True)[: max(1, math.ceil(keep * channels))].tolist())
        for item in members:
            off = [i for i, r in zip(item.idxs, item.root_idxs) if r not in kept]
            mask[f"{names[item.dep.target.module]}.weight"][off] = False
    return mask


def _forward(trace: SlimTrace) -> ForwardFn:
    return lambda model, inputs: trace.run(model)


def _plan(model: nn.Module, graph: Any, dead: Mapping[str, torch.Tensor]) -> list[tuple[nn.Module, Any, list[int]]]:
    """Per coupled group: its root layer, the root's pruning function, and the root channels every producer of
    which has its filter off (at least one channel of a group is kept)."""
    names = {m: n for n, m in model.named_modules()}
    plan = []
    for group in graph.get_all_groups(root_module_types=(nn.Conv1d, nn.Conv2d, nn.Linear)):
        root_dep = group[0].dep
        roots = set(range(graph.get_out_channels(root_dep.target.module)))
        alive: set[int] = set()
        producers = 0
        for item in group:
            module = item.dep.target.module
            if not (graph.is_out_channel_pruning_fn(item.dep.handler) and isinstance(module, _LAYER_TYPES)):
                continue
            producers += 1
            off = dead.get(names.get(module, ""))
            if off is None:
                alive.update(item.root_idxs)
                continue
            alive.update(r for i, r in zip(item.idxs, item.root_idxs) if not bool(off[i]))
        cut = sorted(roots - alive)
        if len(cut) == len(roots):
            cut = cut[1:]  # a layer keeps one channel, whose constant output then carries the group
        if cut and producers:
            plan.append((root_dep.target.module, root_dep.handler, cut))
    return plan


def _consumers(graph: Any, root: nn.Module, handler: Any, cut: Sequence[int]) -> list[tuple[nn.Module, list[int]]]:
    """The layers reading the cut channels as inputs, and which of their input channels they are."""
    out = []
    for item in graph.get_pruning_group(root, handler, list(cut)):
        module = item.dep.target.module
        if graph.is_in_channel_pruning_fn(item.dep.handler) and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if getattr(module, "groups", 1) == 1:
                out.append((module, list(item.idxs)))
    return out


@torch.no_grad()
def _fold_constants(model: nn.Module, trace: SlimTrace, consumers: Sequence[tuple[nn.Module, list[int]]]) -> None:
    """Add what the removed (constant) channels contributed to each consumer into that consumer's bias."""
    seen: dict[nn.Module, torch.Tensor] = {}

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.setdefault(module, args[0].detach())

    hooks = [m.register_forward_pre_hook(record) for m in {m for m, _ in consumers}]
    try:
        trace.run(model.eval())
    finally:
        for hook in hooks:
            hook.remove()
    for module, idxs in consumers:
        x = seen.get(module)
        if x is None:
            continue
        index = torch.as_tensor(idxs, dtype=torch.long, device=x.device)
        weight = module.weight.detach()
        if isinstance(module, nn.Linear):
            values = x.index_select(-1, index).reshape(-1, len(idxs)).mean(0)
            delta = weight[:, index] @ values.to(weight.dtype)
        else:
            dims = [d for d in range(x.dim()) if d != 1]
            values = x.index_select(1, index).mean(dim=dims)
            taps = weight[:, index].flatten(2).sum(2)
            delta = taps @ values.to(weight.dtype)
        if not bool(delta.any()):
            continue
        if module.bias is None:
            module.bias = nn.Parameter(delta.clone())
        else:
            module.bias.add_(delta)


def _kept(model: nn.Module, graph: Any, root: nn.Module, handler: Any, cut: Sequence[int]) -> dict[str, list[int]]:
    names = {m: n for n, m in model.named_modules()}
    kept = {}
    for item in graph.get_pruning_group(root, handler, list(cut)):
        module = item.dep.target.module
        if graph.is_out_channel_pruning_fn(item.dep.handler) and module in names:
            total = graph.get_out_channels(module)
            if total is not None:
                removed = set(item.idxs)
                kept[names[module]] = [i for i in range(total) if i not in removed]
    return kept


def slim_model(model: nn.Module, mask: Mapping[str, torch.Tensor], trace: SlimTrace, *,
               fold: bool = True) -> SlimResult:
    """Cut from `model` (in place; it holds the masked weights) every channel the channel mask `mask` removes,
    with its coupled entries; `fold` moves the removed channels' constant outputs into the next layers' biases.

    Raises ExportError when `mask` is not a channel mask.
    """
    model.eval()
    dead = dead_channels(model, mask)
    before = _parameter_count(model)
    graph = dependency_graph(model, trace)
    plan = _plan(model, graph, dead)
    if fold:
        _fold_constants(model, trace, [c for root, fn, cut in plan for c in _consumers(graph, root, fn, cut)])
    names = {m: n for n, m in model.named_modules()}
    cuts, kept = [], {}
    for root, handler, cut in plan:
        kept.update(_kept(model, graph, root, handler, cut))
        cuts.append({"layer": names[root], "channels": list(cut)})
    _apply(model, graph, cuts)
    return SlimResult(model=model, cuts=cuts, kept=kept, parameters_before=before,
                      parameters_after=_parameter_count(model))


def _apply(model: nn.Module, graph: Any, cuts: Sequence[Mapping[str, Any]]) -> None:
    modules = dict(model.named_modules())
    for cut in cuts:
        layer = modules.get(str(cut["layer"]))
        if layer is None:
            raise ExportError(f"the slim file cuts layer {cut['layer']!r}, which the model does not have")
        handler = graph.get_pruner_of_module(layer).prune_out_channels
        graph.get_pruning_group(layer, handler, [int(c) for c in cut["channels"]]).prune()


def apply_cuts(model: nn.Module, cuts: Sequence[Mapping[str, Any]], trace: SlimTrace) -> nn.Module:
    """Replay the cuts of a slim export on a freshly built full model (in place); returns the model."""
    _apply(model.eval(), dependency_graph(model, trace), cuts)
    return model


def _add_missing_biases(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give a bias-free layer the bias its slim weights hold (folded constants of removed channels)."""
    modules = dict(model.named_modules())
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if leaf == "bias" and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and module.bias is None:
            module.bias = nn.Parameter(torch.zeros_like(value))


def save_slim(path: str | Path, architecture: Mapping[str, Any], result: SlimResult,
              meta: Mapping[str, Any] | None = None) -> Path:
    """Write a slim export: the architecture, the cuts and kept channels, and the slim state_dict."""
    payload = {"format": SLIM_FORMAT, "version": SLIM_VERSION, "architecture": dict(architecture),
               "cuts": list(result.cuts), "kept": dict(result.kept),
               "parameters": {"full": result.parameters_before, "slim": result.parameters_after},
               "meta": dict(meta or {}),
               "state_dict": {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}}
    atomic_save(payload, path)
    return Path(path)


def read_slim(path: str | Path) -> dict[str, Any]:
    """The contents of a slim file (weights_only), checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"slim file not found: {path}; write one with `colt export RUN --out DIR` on a channel "
                          "ticket")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ExportError(f"cannot read slim file {path} ({exc}); export it again") from None
    if not isinstance(payload, dict) or payload.get("format") != SLIM_FORMAT:
        raise ExportError(f"{path} is not a COLT slim file (no format {SLIM_FORMAT!r}); pass the slim.pt that "
                          "`colt export` wrote")
    if payload.get("version") != SLIM_VERSION:
        raise ExportError(f"{path}: slim format version {payload.get('version')!r}, this COLT reads version "
                          f"{SLIM_VERSION}; export the run again")
    return payload


def load_slim(path: str | Path) -> nn.Module:
    """The slim model of a slim file: the full model rebuilt from its architecture by its task, the same
    channels cut, the slim weights loaded strictly; in eval mode on the CPU."""
    payload = read_slim(path)
    architecture = payload["architecture"]
    target = task_of_architecture(architecture, where=str(path)).export_target(architecture)
    if target.slim is None:
        raise ExportError(f"{path}: {architecture.get('name')!r} models have no slim export")
    model = apply_cuts(target.model, payload["cuts"], target.slim)
    _add_missing_biases(model, payload["state_dict"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).strip().splitlines()[:3])
        raise ExportError(f"{path}: the slim weights do not fit the rebuilt model: {first}; export it again") from None
    return model.eval()


def _tensors(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        return [t for v in outputs.values() for t in _tensors(v)]
    if isinstance(outputs, (list, tuple)):
        return [t for v in outputs for t in _tensors(v)]
    return []


@torch.no_grad()
def trace_outputs(model: nn.Module, trace: SlimTrace) -> list[torch.Tensor]:
    """Every tensor the trace's forward returns, in eval mode."""
    return [t.detach().cpu() for t in _tensors(trace.run(model.eval()))]


def relative_difference(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    """The largest |got - expected| over all outputs, relative to the largest |expected| of that output."""
    worst = 0.0
    for a, b in zip(got, expected, strict=True):
        if a.shape != b.shape:
            return math.inf
        if b.numel():
            scale = max(float(b.abs().max()), 1e-12)
            worst = max(worst, float((a.double() - b.double()).abs().max()) / scale)
    return worst


def slim_copy(model: nn.Module, mask: Mapping[str, torch.Tensor], trace: SlimTrace) -> tuple[SlimResult, float]:
    """A slimmed deep copy of `model` (which keeps its shape) and how far its trace outputs are from the
    model's (the relative difference)."""
    expected = trace_outputs(model, trace)
    result = slim_model(copy.deepcopy(model), mask, trace)
    return result, relative_difference(trace_outputs(result.model, trace), expected)
