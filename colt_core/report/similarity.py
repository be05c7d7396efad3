"""Fig. 7 of the paper: how many of the weights two runs prune are the same, for each pruned round of a
reference run (LTH) against the other run's (COLT's) mask of the closest sparsity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from colt_core.io import load_checkpoint
from colt_core.prune.sparsity import pruned_similarity
from colt_core.report.compared_runs import ComparedRun, CompareError
from colt_core.rundir import RunDir


def comparison_pairs(runs: Sequence[ComparedRun]) -> list[tuple[ComparedRun, ComparedRun]]:
    """(reference, other) pairs for Fig. 7: each LTH run against each COLT run (of the same seed, when seeds
    pair up), else the first vs the rest."""
    lth = [r for r in runs if r.method == "lth"]
    colt = [r for r in runs if r.method != "lth"]
    if lth and colt:
        same_seed = [(a, b) for a in lth for b in colt if a.seed == b.seed]
        return same_seed or [(a, b) for a in lth for b in colt]
    return [(runs[0], other) for other in runs[1:]]


def similarity_rows(reference: ComparedRun, other: ComparedRun) -> list[dict[str, Any]]:
    """Fig. 7: for each pruned round of `reference`, the `other` mask of closest sparsity and the share of
    all parameters that both prune (`pruned_similarity` over every parameter of the model)."""
    candidates = [r for r in other.rounds if r.sparsity > 0]
    rows = []
    for ref in reference.rounds:
        if ref.sparsity <= 0 or not candidates:
            continue
        match = min(candidates, key=lambda r: (abs(r.sparsity - ref.sparsity), r.round))
        if ref.total_params is not None and match.total_params not in (None, ref.total_params):
            raise CompareError(f"{reference.path} and {other.path} prune models of different sizes "
                               f"({ref.total_params} and {match.total_params} parameters)")
        mask_a = load_checkpoint(RunDir(reference.path).round(ref.round).mask)
        mask_b = load_checkpoint(RunDir(other.path).round(match.round).mask)
        try:
            similarity = pruned_similarity(mask_a, mask_b, ref.total_params)
        except ValueError as exc:
            raise CompareError(f"{reference.path} round {ref.round} and {other.path} round {match.round}: "
                               f"{exc}; the runs prune different models") from None
        rows.append({"reference": reference.label, "reference_round": ref.round,
                     "reference_sparsity": ref.sparsity, "other": other.label, "other_round": match.round,
                     "other_sparsity": match.sparsity, "similarity": similarity,
                     "extra_rounds": ref.round - match.round})
    return rows
