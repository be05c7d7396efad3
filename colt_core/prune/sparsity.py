"""Sparsity reports and the paper's pruned-weight similarity between two masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from colt_core.prune.magnitude import PruneGroup


def _counts(total: int, alive: int) -> dict[str, float | int]:
    return {"total": total, "alive": alive, "pruned": total - alive,
            "sparsity": (total - alive) / total if total else 0.0}


def sparsity_report(mask: Mapping[str, torch.Tensor], groups: Sequence[PruneGroup] = (),
                    total_params: int | None = None) -> dict:
    """Per-layer, per-group and overall sparsity of a mask.

    `overall.sparsity` is over the prunable weights (the mask); `prune_rate` is the paper's
    "zero parameters / all parameters" when `total_params` (every parameter of the model) is given.
    """
    group_of = {n: g.name for g in groups for n in g.params}
    layers = {}
    for name, m in mask.items():
        layers[name] = {"group": group_of.get(name), **_counts(m.numel(), int(torch.count_nonzero(m)))}
    by_group = {}
    for g in groups:
        total = sum(layers[n]["total"] for n in g.params)
        alive = sum(layers[n]["alive"] for n in g.params)
        by_group[g.name] = {"rate_per_round": g.rate, **_counts(total, alive)}
    total = sum(v["total"] for v in layers.values())
    alive = sum(v["alive"] for v in layers.values())
    report = {"layers": layers, "groups": by_group, "overall": _counts(total, alive)}
    if total_params is not None:
        pruned = total - alive
        report["prune_rate"] = {"zero_params": pruned, "all_params": total_params,
                                "rate": pruned / total_params if total_params else 0.0}
    return report


def overall_sparsity(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of pruned weights over all prunable weights."""
    total = sum(m.numel() for m in mask.values())
    alive = sum(int(torch.count_nonzero(m)) for m in mask.values())
    return (total - alive) / total if total else 0.0


def pruned_similarity(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                      total_params: int | None = None) -> float:
    """The paper's Fig. 7 similarity: weights pruned by both masks / all initial parameters.

    The denominator is `total_params` when given (every parameter of the model, as in the paper),
    else the number of prunable weights the masks cover.
    """
    if list(a) != list(b):
        raise ValueError("masks cover different parameters")
    common = 0
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(f"mask shapes differ for {name}")
        common += int(torch.count_nonzero(~a[name] & ~b[name]))
    denominator = total_params if total_params is not None else sum(m.numel() for m in a.values())
    return common / denominator if denominator else 0.0


def format_sparsity_table(report: dict) -> str:
    """A Markdown table of a sparsity report, one row per layer plus groups and the total."""
    lines = ["| layer | group | weights | alive | sparsity |", "|---|---|---:|---:|---:|"]
    for name, row in report["layers"].items():
        lines.append(f"| {name} | {row['group'] or ''} | {row['total']} | {row['alive']} | "
                     f"{100 * row['sparsity']:.2f}% |")
    for name, row in report["groups"].items():
        lines.append(f"| **group {name}** | {name} | {row['total']} | {row['alive']} | {100 * row['sparsity']:.2f}% |")
    o = report["overall"]
    lines.append(f"| **all prunable** | | {o['total']} | {o['alive']} | {100 * o['sparsity']:.2f}% |")
    if "prune_rate" in report:
        p = report["prune_rate"]
        lines.append(f"| **prune rate (zeros / all parameters)** | | {p['all_params']} | "
                     f"{p['all_params'] - p['zero_params']} | {100 * p['rate']:.2f}% |")
    return "\n".join(lines)
