"""The classification report's figure: the confusion matrix an evaluation keeps, the matrices drawn from it,
and a tiny run whose report shows the dense model's and the final ticket's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colt_cls.figure import confusion_figure, confusion_preview, draw_confusion_figure, row_normalised
from colt_cls.report import report_figure
from colt_cls.task import evaluate_classifier
from colt_core.io import read_json
from colt_core.rundir import RunDir, read_summary


class Predicts(nn.Module):
    """Predicts the class stored for each input index: a model whose confusions the test chooses."""

    def __init__(self, predictions: list[int], num_classes: int) -> None:
        super().__init__()
        self.register_buffer("logits", nn.functional.one_hot(torch.tensor(predictions), num_classes).float())

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.logits[index]


def test_evaluate_classifier_counts_the_confusion_matrix_whose_rows_sum_to_the_class_counts() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    predicted = [0, 1, 0, 1, 1, 0, 2, 3, 2, 3]
    by_hand = [[2, 1, 0, 0],  # class 0: twice right, once taken for 1
               [0, 2, 0, 0],
               [1, 0, 2, 1],  # class 2: twice right, once taken for 0 and once for 3
               [0, 0, 0, 1]]
    loader = DataLoader(TensorDataset(torch.arange(len(labels)), torch.tensor(labels)), batch_size=3)
    result = evaluate_classifier(Predicts(predicted, 4), loader, torch.device("cpu"), 4)
    assert result["confusion"] == by_hand
    assert [sum(row) for row in result["confusion"]] == result["class_total"] == [3, 2, 4, 1]
    assert [result["confusion"][c][c] for c in range(4)] == result["class_correct"]


def test_rows_are_normalised_by_their_class_and_an_empty_class_stays_zero() -> None:
    shares = row_normalised([[2, 1, 1], [0, 0, 0], [0, 3, 1]])
    np.testing.assert_array_equal(shares, [[0.5, 0.25, 0.25], [0, 0, 0], [0, 0.75, 0.25]])


def test_figure_has_one_matrix_per_evaluation_class_names_up_to_twenty_and_the_same_bytes_again() -> None:
    few = confusion_preview(["cat", "dog", "owl"], [[2, 1, 0], [0, 3, 0], [1, 0, 1]])
    columns = [("dense", few), ("round 2 (50.0% sparse)", few)]
    figure = confusion_figure(columns)
    matrices = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in matrices] == ["dense", "round 2 (50.0% sparse)"]
    assert [t.get_text() for t in matrices[0].get_xticklabels()] == ["cat", "dog", "owl"]
    np.testing.assert_allclose(matrices[0].images[0].get_array(), row_normalised(few["confusion"]))
    many = confusion_preview([f"class_{i}" for i in range(25)], np.eye(25, dtype=int).tolist())
    assert not confusion_figure([("dense", many)]).axes[0].get_xticklabels()
    png = draw_confusion_figure(columns)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and "Software" not in image.info
    assert draw_confusion_figure(columns) == png


def test_a_run_reports_the_confusion_matrices_of_the_dense_model_and_the_final_ticket(
        train_tool, run_config, small_cifar10_root: Path, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    config = run_config(small_cifar10_root, run.path, prune={"max_rounds": 1})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = CliRunner().invoke(train_tool, ["--cfg", str(tmp_path / "cfg.yaml")])
    assert result.exit_code == 0, result.output
    for r in (0, 1):
        preview = read_json(run.round(r).eval.preview)
        counts = read_json(run.round(r).eval.metrics)["test_per_class"]
        assert [sum(row) for row in preview["confusion"]] == [counts[name] for name in preview["classes"]]
    png = run.figure("confusion")
    assert Image.open(png).format == "PNG"
    assert "![Confusion matrices](confusion.png)" in run.report.read_text()
    before = png.read_bytes()
    assert report_figure(run, read_summary(run)) is not None and png.read_bytes() == before
    for r in (0, 1):
        run.round(r).eval.preview.unlink()
    assert report_figure(run, read_summary(run)) is None
