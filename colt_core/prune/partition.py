"""Class partitions for COLT: disjoint near-equal class groups, and the non-IID subsampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from colt_core.errors import UserError


class PartitionError(UserError, ValueError):
    """An explicit class split is not a valid partition."""


def split_classes(num_classes: int, n_groups: int, seed: int) -> list[list[int]]:
    """Split class ids 0..num_classes-1 into `n_groups` disjoint, near-equal, seeded random groups.

    Group sizes differ by at most one, so every class is used even when `n_groups` does not divide
    the class count. Each group is sorted, which fixes the label order inside a partition.
    """
    if not 1 <= n_groups <= num_classes:
        raise PartitionError(f"cannot split {num_classes} classes into {n_groups} non-empty groups")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_classes, generator=gen).tolist()
    sizes = [num_classes // n_groups + (1 if i < num_classes % n_groups else 0) for i in range(n_groups)]
    groups, start = [], 0
    for size in sizes:
        groups.append(sorted(perm[start:start + size]))
        start += size
    return groups


def validate_groups(groups: Sequence[Sequence[int]], num_classes: int,
                    class_names: Sequence[str] | None = None) -> list[list[int]]:
    """Check an explicit split (class ids or names): disjoint, non-empty, covering every class."""
    resolved: list[list[int]] = []
    for gi, group in enumerate(groups):
        if len(group) == 0:
            raise PartitionError(f"split.groups[{gi}] is empty; every group needs at least one class")
        ids = []
        for c in group:
            if isinstance(c, str):
                if class_names is None or c not in class_names:
                    raise PartitionError(f"split.groups[{gi}]: unknown class name {c!r}")
                c = list(class_names).index(c)
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
                raise PartitionError(f"split.groups[{gi}]: {c!r} is not a class id in 0..{num_classes - 1}")
            ids.append(c)
        resolved.append(ids)
    seen: dict[int, int] = {}
    for gi, ids in enumerate(resolved):
        for c in ids:
            if c in seen:
                raise PartitionError(
                    f"split.groups: class {c} is in group {seen[c]} and group {gi}; groups must be disjoint")
            seen[c] = gi
    missing = sorted(set(range(num_classes)) - set(seen))
    if missing:
        raise PartitionError(f"split.groups: classes {missing} are in no group; the groups must cover every class")
    return resolved


def non_iid_keep(labels: Sequence[int] | np.ndarray, seed: int, max_drop: float = 0.3) -> np.ndarray:
    """Indices kept after dropping a seeded random 0..max_drop fraction of each class's samples.

    The paper's Table V non-IID setting: every class loses its own random share of samples.
    """
    if not 0.0 <= max_drop < 1.0:
        raise ValueError(f"max_drop must be in [0, 1), got {max_drop}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        drop = round(rng.uniform(0.0, max_drop) * idx.size)
        keep.append(rng.permutation(idx)[drop:])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
