"""The detection report's figure: the preview an evaluation keeps, the panels drawn from it, and a tiny run
whose report shows the ground truth, the dense model's and the final ticket's boxes."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageColor

from colt_core.report import write_report
from colt_core.report.figure import figure_section
from colt_core.rundir import RunDir, read_summary
from colt_det.data import Detection, ImageRecord, ObjectRecord
from colt_det.figure import (
    MISSING,
    PALETTE,
    detection_preview,
    draw_detection_figure,
    figure_size,
    panel_origin,
    panel_scale,
)
from colt_det.report import REPORT, report_figure
from colt_det.voc import VOC_CLASSES

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["cat", "dog"]
SIZE = (64, 48)  # width, height of the hand-made images
GREY = (128, 128, 128)


def record(folder: Path, image_id: str, objects: list[ObjectRecord]) -> ImageRecord:
    """A solid grey PNG (lossless: its pixels are known exactly) and its record."""
    path = folder / f"{image_id}.png"
    Image.fromarray(np.full((SIZE[1], SIZE[0], 3), GREY, np.uint8)).save(path)
    return ImageRecord(image_id=image_id, image_path=path, width=SIZE[0], height=SIZE[1], objects=objects,
                       year="2007")


@pytest.fixture
def records(tmp_path: Path) -> list[ImageRecord]:
    dog = ObjectRecord(name="dog", label=1, box=(11, 9, 40, 30), difficult=False, truncated=False)
    cat = ObjectRecord(name="cat", label=0, box=(21, 11, 50, 40), difficult=True, truncated=False)
    return [record(tmp_path, "000010", [dog]), record(tmp_path, "000002", [dog]), record(tmp_path, "000001", [cat])]


DETECTIONS = {"dog": [Detection("000002", 0.9, (13, 10, 42, 31)), Detection("000002", 0.3, (1, 1, 20, 20))],
              "cat": [Detection("000010", 0.95, (1, 1, 30, 30))]}


def rgb(colour: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(colour)[:3]


def test_preview_keeps_the_first_images_by_id_and_their_boxes_scoring_over_the_threshold(records) -> None:
    preview = detection_preview(records, DETECTIONS, CLASSES, count=2, threshold=0.5)
    assert preview["score_threshold"] == 0.5 and preview["classes"] == CLASSES
    assert [image["id"] for image in preview["images"]] == ["000001", "000002"]  # not 000010, nor file order
    first, second = preview["images"]
    assert first["path"] == str(records[2].image_path.resolve()) and (first["width"], first["height"]) == SIZE
    assert first["ground_truth"] == [{"class": "cat", "box": [20.0, 10.0, 50.0, 40.0], "ignored": True}]
    assert first["detections"] == []
    assert second["ground_truth"] == [{"class": "dog", "box": [10.0, 8.0, 40.0, 30.0], "ignored": False}]
    assert second["detections"] == [{"class": "dog", "score": 0.9, "box": [12.0, 9.0, 42.0, 31.0]}]  # 0.3 dropped
    assert json.loads(json.dumps(preview)) == preview


def test_figure_draws_each_box_where_it_is_in_its_panel_and_nothing_else(records) -> None:
    dense = detection_preview(records, DETECTIONS, CLASSES, count=2)
    final = detection_preview(records, {}, CLASSES, count=2)
    png = draw_detection_figure([("dense", dense), ("round 1 (50.0% sparse)", final)])
    figure = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert (figure.shape[1], figure.shape[0]) == figure_size(2, 3)  # 2 images; ground truth, dense, final

    def pixel(row: int, column: int, x: float, y: float) -> tuple[int, ...]:
        """The figure's pixel at image coordinates (x, y) of a panel (boxes are drawn at whole pixels)."""
        scale = panel_scale(*SIZE)
        left, top = panel_origin(row, column)
        return tuple(int(v) for v in figure[top + int(y * scale), left + int(x * scale)])

    dog, cat = rgb(PALETTE[1]), rgb(PALETTE[0])
    # Image 000002 (row 1): the dog's ground truth box [10, 8, 40, 30], and the dense model's box [12, 9, 42, 31].
    assert pixel(1, 0, 10, 19) == dog and pixel(1, 0, 12, 19) == GREY  # the ground truth's left edge only
    assert pixel(1, 1, 12, 20) == dog and pixel(1, 1, 10, 20) == GREY  # the detection's left edge only
    assert pixel(1, 2, 10, 19) == GREY and pixel(1, 2, 12, 20) == GREY  # the final ticket found nothing
    for column in range(3):
        assert pixel(1, column, 25, 20) == GREY  # outlines, never filled
    assert pixel(0, 0, 20, 25) == cat and pixel(0, 1, 20, 25) == GREY  # a difficult object is drawn as truth
    # The same previews give the same bytes; a vanished image file leaves its panels blank, not a crash.
    assert draw_detection_figure([("dense", dense), ("round 1 (50.0% sparse)", final)]) == png
    records[2].image_path.unlink()
    redrawn = np.asarray(Image.open(io.BytesIO(draw_detection_figure([("dense", dense)]))).convert("RGB"))
    left, top = panel_origin(0, 1)
    assert tuple(redrawn[top + 100, left + 200]) == MISSING


TINY = [
    "data.synthetic.n_trainval=24", "data.synthetic.n_test=8", "data.synthetic.image_size=64",
    "data.val_fraction=0.25", "model.width=0.0625", "model.head_dim=16", "model.kwargs.min_size=64",
    "model.kwargs.max_size=64", "augment.size=64", "train.epochs=1", "train.batch_size=4", "train.progress=false",
    "prune.max_rounds=1", "prune.target_sparsity=0.95", "prune.evaluate=first_last",
]


def run_tool(tmp_path: Path, *extra: str) -> tuple[int, str]:
    sys.path.insert(0, str(ROOT / "tools"))
    import train_colt_det

    args = ["--cfg", "voc_synth_tiny.yaml", "--set", f"data.root={tmp_path / 'voc'}", "--out", str(tmp_path / "run")]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(train_colt_det.main, [*args, *extra])
    return result.exit_code, result.output


def test_a_run_reports_the_boxes_of_the_dense_model_and_the_final_ticket_and_redraws_them_the_same(
        tmp_path: Path) -> None:
    torch.set_num_threads(1)
    code, output = run_tool(tmp_path)
    assert code == 0, output
    run = RunDir(tmp_path / "run")
    previews = [json.loads(run.round(r).eval.preview.read_text()) for r in (0, 1)]
    test_ids = sorted((tmp_path / "voc/VOCdevkit/VOC2007/ImageSets/Main/test.txt").read_text().split())
    for preview in previews:
        assert [image["id"] for image in preview["images"]] == test_ids[:4]
        assert all(d["score"] >= 0.5 for image in preview["images"] for d in image["detections"])
        assert preview["classes"] == list(VOC_CLASSES)
    png = run.figure("detections")
    figure = Image.open(png)
    assert figure.format == "PNG" and figure.size == figure_size(4, 3)
    report = run.report.read_text()
    assert "![Detections on fixed test images](detections.png)" in report and "at least 0.5" in report
    assert ", ".join(test_ids[:4]) in report

    # A finished run resumed rewrites its report: the same picture, bit for bit.
    before = png.read_bytes()
    png.unlink()
    code, output = run_tool(tmp_path, "--resume")
    assert code == 0, output
    assert png.read_bytes() == before

    # A run from before previews: no picture, no link, no error.
    old = RunDir(tmp_path / "old")
    shutil.copytree(run.path, old.path)
    for path in old.path.glob("round_*/eval/preview.json"):
        path.unlink()
    old.figure("detections").unlink()
    summary = read_summary(old)
    assert report_figure(old, summary) is None and figure_section(old, summary) == []
    write_report(old, summary, VOC_CLASSES, REPORT)
    assert "detections.png" not in old.report.read_text() and not old.figure("detections").exists()
