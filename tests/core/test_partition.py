import numpy as np
import pytest

from colt_core.prune.partition import PartitionError, non_iid_keep, split_classes, validate_groups


@pytest.mark.parametrize("num_classes, n", [(20, 2), (20, 3), (10, 4), (7, 7), (5, 1)])
def test_random_split_is_disjoint_near_equal_and_covers_every_class(num_classes, n):
    groups = split_classes(num_classes, n, seed=1)
    flat = [c for g in groups for c in g]
    assert sorted(flat) == list(range(num_classes))
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    assert groups == split_classes(num_classes, n, seed=1)


def test_seed_changes_split():
    assert split_classes(20, 2, seed=0) != split_classes(20, 2, seed=1)


@pytest.mark.parametrize("groups, match", [
    ([[0, 1], []], "empty"),
    ([[0, 1], [1, 2]], "disjoint"),
    ([[0], [1]], "no group"),
    ([[0, 1], [2, 9]], "not a class id"),
    ([["cat"], ["dog", "emu"]], "unknown class name"),
])
def test_explicit_groups_are_validated(groups, match):
    with pytest.raises(PartitionError, match=match):
        validate_groups(groups, 3, ["ant", "bee", "dog"])


def test_explicit_groups_accept_names():
    assert validate_groups([["bee"], [0, "dog"]], 3, ["ant", "bee", "dog"]) == [[1], [0, 2]]


def test_too_many_groups():
    with pytest.raises(PartitionError):
        split_classes(3, 4, seed=0)


def test_non_iid_drops_at_most_the_share_per_class():
    labels = np.repeat(np.arange(10), 100)
    keep = non_iid_keep(labels, seed=0, max_drop=0.3)
    counts = np.bincount(labels[keep], minlength=10)
    assert (counts >= 70).all() and (counts <= 100).all()
    assert len(set(counts.tolist())) > 1  # each class loses its own share
    assert np.array_equal(keep, non_iid_keep(labels, seed=0, max_drop=0.3))
