"""Training images left out by `data.on_bad_annotation: skip` are recorded beside the test-set ones: in each
evaluation's metrics.json, in summary.json and in report.md, counted by reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

from colt_det.voc import VOC_CLASSES

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import train_colt_det  # noqa: E402

TINY = ["data.val_fraction=0.25", "model.width=0.0625", "model.head_dim=16", "model.kwargs.min_size=64",
        "model.kwargs.max_size=64", "augment.size=64", "train.epochs=1", "train.batch_size=4", "train.progress=false",
        "eval.coco=false", "prune.max_rounds=1", "prune.evaluate=first_last", "data.synthetic=null"]


def test_skipped_training_images_are_counted_by_reason_in_metrics_summary_and_report(tmp_path, write_devkit):
    pair = [("cat", (1, 1, 30, 30), False), ("dog", (20, 10, 60, 40), False)]
    images = {f"{i:03d}": pair for i in range(12)}
    root = write_devkit(images, {"trainval": sorted(images)[:9], "test": sorted(images)[9:]}, size=(64, 64))
    year_dir = root / "VOCdevkit" / "VOC2007"
    unicorn = year_dir / "Annotations" / "001.xml"
    unicorn.write_text(unicorn.read_text().replace("<name>dog</name>", "<name>unicorn</name>"))
    for image_id in ("002", "003"):
        (year_dir / "JPEGImages" / f"{image_id}.jpg").unlink()
    args = ["--cfg", "voc_synth_tiny.yaml", "--out", str(tmp_path / "run"), "--set", f"data.root={root}"]
    for item in [*TINY, "data.on_bad_annotation=skip", "split.groups=[[7], "
                 f"{[c for c in range(20) if c != VOC_CLASSES.index('cat')]}]"]:
        args += ["--set", item]
    result = CliRunner().invoke(train_colt_det.main, args)
    assert result.exit_code == 0, result.output

    run = tmp_path / "run"
    expected = {"images": 3, "objects": 6, "images_without_readable_annotation": 0,
                "by_problem": {"missing_image": 2, "unknown_class": 1}}
    metrics = json.loads((run / "round_00" / "eval" / "metrics.json").read_text())
    assert metrics["train_skipped"] == expected and "test_skipped" not in metrics
    summary = json.loads((run / "summary.json").read_text())
    evaluations = [r["eval"] for r in summary["rounds"] if r.get("eval")]
    assert evaluations and all(e["train_skipped"] == expected for e in evaluations)
    note = ("**Training data shrunk:** 3 training images with bad annotations (6 objects) were left out "
            "(`on_bad_annotation: skip`; by reason: missing_image 2, unknown_class 1); the tickets were searched "
            "and trained on the rest.")
    assert note in (run / "report.md").read_text().splitlines()
