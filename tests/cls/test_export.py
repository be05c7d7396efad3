"""Classifier exports through the export command: the model's whole state_dict, its ONNX file, and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from colt_cls.export import classifier_export_target
from colt_cls.models import create_model_from_description
from colt_core.commands.export import export_command
from colt_core.export import load_sparse
from colt_core.prune.ticket import load_ticket


@pytest.fixture(scope="module")
def cls_run(train_tool, run_config, small_cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-round COLT-2 run of an eighth-width Conv-3 whose every round's ticket is evaluated."""
    root = tmp_path_factory.mktemp("cls_export")
    config = run_config(small_cifar10_root, root / "run", prune={"evaluate": "all"})
    (root / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(train_tool, ["--cfg", str(root / "cfg.yaml")])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return root / "run"


def export(*args: object):
    return CliRunner().invoke(export_command, [str(a) for a in args])


def test_the_classifier_exports_its_whole_state_dict_with_pruned_weights_zero(cls_run, tmp_path):
    result = export(cls_run, "--out", tmp_path / "final")
    assert result.exit_code == 0, result.output
    assert "model.sparse.pt" in result.output and "vgg16" not in result.output and "detector" not in result.output

    ticket = load_ticket(cls_run / "ticket.pt")
    dense = torch.load(tmp_path / "final" / "model.pth", weights_only=True)
    expected = {k: v * ticket.mask[k] if k in ticket.mask else v for k, v in ticket.init.items()}
    assert list(dense) == list(expected) and all(torch.equal(dense[k], expected[k]) for k in expected)
    assert all(torch.equal(load_sparse(tmp_path / "final" / "model.sparse.pt")[k], dense[k]) for k in dense)
    model = create_model_from_description(ticket.architecture, num_classes=ticket.architecture["num_classes"])
    model.load_state_dict(dense)  # strict: the rebuilt classifier holds exactly these weights

    target = classifier_export_target(ticket.architecture)
    assert target.output_layers == (ticket.architecture["head"],) and target.onnx is not None

    trained = export(cls_run, "--out", tmp_path / "trained", "--round", "0", "--source", "trained")
    assert trained.exit_code == 0, trained.output
    model_file = torch.load(cls_run / "round_00" / "eval" / "model.pt", weights_only=True)
    dense = torch.load(tmp_path / "trained" / "model.pth", weights_only=True)
    assert all(torch.equal(dense[k], v) for k, v in model_file.items())  # round 0 prunes nothing


def test_the_classifier_onnx_file_matches_pytorch(cls_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    result = export(cls_run, "--out", tmp_path / "onnx", "--round", "1", "--onnx", "--onnx-size", "40")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "onnx" / "model.onnx").stat().st_size > 0
    assert "model.onnx (onnxruntime: 1 outputs, largest difference to PyTorch" in result.output


def test_an_unfinished_classification_run_says_to_finish_it(cls_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(cls_run, unfinished)
    (unfinished / "ticket.pt").unlink()
    result = export(unfinished, "--out", tmp_path / "x", "--round", "1")
    assert result.exit_code == 1
    assert ("the classification task cannot describe its model from config.yaml; finish the run with --resume"
            in result.output)
    assert not (tmp_path / "x").exists()
