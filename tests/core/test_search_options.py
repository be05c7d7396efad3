"""The search's options beyond the paper: how long a partition trains, what its weights are ranked by, and
which rounds' tickets are evaluated."""

from __future__ import annotations

import pytest
import torch
from toy import run_toy

from colt_core.prune.magnitude import PruneGroup, magnitude_prune
from colt_core.rundir import RunDir, read_summary
from colt_core.settings import PruneConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_magnitude_increase_prunes_the_weights_training_grew_least():
    start = torch.tensor([[3.0, -2.0, 0.5, 1.0]])
    trained = torch.tensor([[2.5, -2.2, 0.4, 1.6]])  # |w| - |w0|: -0.5, 0.2, -0.1, 0.6
    mask = {"w": torch.ones(1, 4, dtype=torch.bool)}
    groups = [PruneGroup("g", 0.5, ("w",))]
    by_increase = magnitude_prune({"w": trained}, mask, groups, reference={"w": start})
    assert by_increase["w"].tolist() == [[False, True, False, True]]
    by_magnitude = magnitude_prune({"w": trained}, mask, groups)
    assert by_magnitude["w"].tolist() == [[True, True, False, False]]
    # A pruned weight stays pruned whatever its increase.
    half = {"w": torch.tensor([[True, False, True, True]])}
    again = magnitude_prune({"w": trained}, half, [PruneGroup("g", 0.34, ("w",))], reference={"w": start})
    assert again["w"].tolist() == [[False, False, True, True]]


def colt(tmp_path, name: str, **changes) -> RunDir:
    run = RunDir(tmp_path / name)
    run.path.mkdir()
    settings = {"method": "colt", "partitions": 2, "rates": {"conv": 0.3, "fc": 0.3}, "target_sparsity": 0.7,
                "max_rounds": 3, "evaluate": "final", **changes}
    prune = PruneConfig(**settings)
    run_toy(run, prune, epochs=2)
    return run


def test_full_data_steps_trains_a_partition_as_many_steps_as_the_full_data_takes(tmp_path):
    plain, scaled = colt(tmp_path, "plain"), colt(tmp_path, "scaled", partition_steps="full_data")
    for record in read_summary(plain).rounds[0].partitions:
        assert len(record.training.history) == 2 and record.training.epochs is None
    # 192 full-data training samples (12 batches of 16) against a partition's 96 (6 batches): twice the epochs.
    for record in read_summary(scaled).rounds[0].partitions:
        assert record.training.epochs == 4 and len(record.training.history) == 4
    lth = read_summary(colt(tmp_path, "lth", partition_steps="full_data", method="lth")).rounds[0].partitions
    assert lth[0].training.epochs is None and len(lth[0].training.history) == 2  # the full data: no scaling


def test_evaluate_levels_evaluates_the_first_round_to_reach_each_level(tmp_path):
    summary = read_summary(colt(tmp_path, "levels", evaluate_levels=[0.4]))
    evaluated = [r.round for r in summary.rounds if r.evaluation is not None]
    first = next(r.round for r in summary.rounds if r.sparsity >= 0.4)
    assert evaluated == sorted({first, summary.rounds[-1].round})
    assert all(summary.rounds[r].sparsity < 0.4 for r in range(first))
