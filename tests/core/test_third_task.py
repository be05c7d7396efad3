"""A task registered from outside the package is trained, exported and compared through `colt` alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from colt_core.commands import main as colt
from colt_core.export import load_sparse
from colt_core.prune.ticket import load_ticket
from colt_core.registry import get_task, task_names, unregister_task


@pytest.fixture
def blobs(one_thread):
    import blobs_task

    register = blobs_task.ENTRY
    yield register
    unregister_task(register.name)
    sys.modules.pop("blobs_task", None)


def write_config(path: Path, **changes: object) -> Path:
    config = {"task": "blobs", "seed": 3,
              "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01},
                        "schedule": {"name": "constant"}, "progress": False},
              "eval": {"batch_size": 64},
              "prune": {"method": "colt", "partitions": 2, "rates": {"conv": 0.3, "fc": 0.3}, "target_sparsity": 0.5,
                        "max_rounds": 2}}
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(colt, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_third_task_trains_exports_and_compares_through_colt(blobs, tmp_path):
    assert "blobs" in task_names() and get_task("blobs") is blobs
    cfg = write_config(tmp_path / "blobs.yaml")
    out = invoke("train", "--cfg", str(cfg), "--out", str(tmp_path / "colt"))
    assert "ticket:" in out and "after 2 round(s)" in out
    ticket = load_ticket(tmp_path / "colt" / "ticket.pt")
    assert ticket.architecture == {"name": "toynet", "num_classes": 6, "task": "blobs"}  # tagged by the engine
    invoke("train", "--cfg", str(cfg), "--set", "prune.method=lth", "--set", "prune.rates.conv=0.4",
           "--set", "prune.rates.fc=0.4", "--out", str(tmp_path / "lth"))

    invoke("export", str(tmp_path / "colt"), "--out", str(tmp_path / "export"))
    exported = load_sparse(tmp_path / "export" / "model.sparse.pt")
    for name, keep in ticket.mask.items():
        assert torch.equal(exported[name] != 0, keep & (ticket.init[name] != 0)), name

    out = invoke("compare", str(tmp_path / "lth"), str(tmp_path / "colt"), "--out", str(tmp_path / "compare"))
    assert "LTH" in out and "COLT-2" in out
    assert (tmp_path / "compare" / "comparison.md").is_file()


def test_a_config_of_an_unregistered_task_is_one_clear_error(tmp_path):
    cfg = write_config(tmp_path / "x.yaml", task="segmentation")
    result = CliRunner().invoke(colt, ["train", "--cfg", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error:" in result.output and "unknown task 'segmentation'" in result.output
    assert "classification" in result.output and "detection" in result.output
    assert not (tmp_path / "run").exists()
