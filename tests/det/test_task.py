"""The detection task's validation hold-out: every class (so every partition) gets validation images where the
data allow it, and a partition that still gets none stops the run with one clear line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from colt_core.prune.partition import split_classes
from colt_core.runtime import derive_seed
from colt_det.task import split_train_val
from colt_det.voc import VOC_CLASSES, load_voc_records

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import train_colt_det  # noqa: E402

SIXTEEN = ["data.synthetic.n_trainval=16", "data.synthetic.n_test=4", "data.synthetic.image_size=64",
           "data.val_fraction=0.1", "model.width=0.0625", "model.head_dim=16", "model.kwargs.min_size=64",
           "model.kwargs.max_size=64", "augment.size=64", "train.epochs=1", "train.batch_size=4",
           "train.progress=false", "eval.coco=false", "prune.max_rounds=1", "prune.evaluate=none"]


def classes(record) -> set[int]:
    return {o.label for o in record.objects if not o.difficult}


def test_hold_out_covers_every_class_with_two_images_and_keeps_single_ones_for_training(write_devkit):
    images = {f"{i:03d}": [("cat", (1, 1, 20, 20), False)] for i in range(8)}
    images |= {"100": [("dog", (1, 1, 20, 20), False), ("cat", (5, 5, 30, 30), False)],
               "101": [("dog", (1, 1, 20, 20), False)], "200": [("cow", (1, 1, 20, 20), False)]}
    records, _ = load_voc_records(write_devkit(images, {"trainval": sorted(images)}), "2007:trainval")
    cat, dog, cow = (VOC_CLASSES.index(n) for n in ("cat", "dog", "cow"))
    moved = 0
    for seed in range(30):
        train, val = split_train_val(records, 0.1, seed)
        assert len(train) + len(val) == len(records) and not {r.image_id for r in train} & {r.image_id for r in val}
        assert {cat, dog} <= set().union(*map(classes, val))
        assert {cat, dog, cow} <= set().union(*map(classes, train))  # cow's one image always trains
        plain = int(np.random.default_rng(seed).permutation(len(records))[0])
        moved += [r.image_id for r in val] != [records[plain].image_id]
    assert moved  # the random draw alone would have missed a class in some of the seeds


def test_hold_out_is_the_plain_random_split_when_that_already_covers_every_class(write_devkit):
    both = [("cat", (1, 1, 20, 20), False), ("dog", (5, 5, 30, 30), False)]
    images = {f"{i:03d}": both for i in range(20)}
    records, _ = load_voc_records(write_devkit(images, {"trainval": sorted(images)}), "2007:trainval")
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(len(records))
        _, val = split_train_val(records, 0.2, seed)
        assert [r.image_id for r in val] == [records[i].image_id for i in sorted(order[:4])]


def run_tool(tmp_path: Path, *extra: str):
    args = ["--cfg", "voc_synth_tiny.yaml", "--out", str(tmp_path / "run"), "--set", f"data.root={tmp_path / 'voc'}"]
    for item in SIXTEEN + list(extra):
        args += ["--set", item]
    return CliRunner().invoke(train_colt_det.main, args)


def test_a_sixteen_image_voc_gives_every_partition_validation_images(tmp_path):
    # Seed 2 with 3 partitions: the plain 10% hold-out (2 images) holds no image of partition 0's classes.
    result = run_tool(tmp_path, "seed=2", "prune.partitions=3")
    assert result.exit_code == 0, result.output
    records, _ = load_voc_records(tmp_path / "voc", "2007:trainval")
    order = np.random.default_rng(derive_seed(2, "val-split")).permutation(len(records))
    groups = split_classes(20, 3, 2)
    assert not any(classes(records[i]) & set(groups[0]) for i in order[:2])
    for p in range(3):
        data = json.loads((tmp_path / "run" / "round_00" / f"partition_{p}" / "data.json").read_text())
        assert data["train"]["images"] > 0 and data["val"]["images"] > 0, (p, data)


def test_a_partition_without_validation_images_is_one_clear_error(tmp_path, write_devkit):
    # The cow partition's one image must train, so it has nothing to validate on: no hold-out can help.
    images = {f"{i:03d}": [("cat", (1, 1, 30, 30), False), ("dog", (20, 10, 60, 40), False)] for i in range(8)}
    images["100"] = [("cow", (5, 5, 40, 40), False)]
    root = write_devkit(images, {"trainval": sorted(images), "test": sorted(images)[:3]}, size=(64, 64))
    others = [c for c in range(20) if c != VOC_CLASSES.index("cow")]
    result = run_tool(tmp_path, f"data.root={root}", "data.synthetic=null", "prune.partitions=2",
                      f"split.groups=[[{VOC_CLASSES.index('cow')}], {others}]")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for fragment in ("round_00/p0", "cow", "1 training and 0 validation samples", "data.val_fraction",
                     "prune.partitions", "--resume"):
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_hold_out_is_seeded(synthetic_voc, fraction):
    records, _ = load_voc_records(synthetic_voc, "2007:trainval")
    first = [r.image_id for r in split_train_val(records, fraction, 5)[1]]
    assert first == [r.image_id for r in split_train_val(records, fraction, 5)[1]]
    assert first != [r.image_id for r in split_train_val(records, fraction, 6)[1]]


def test_bad_test_annotations_stop_the_run_unless_skipped_and_then_the_report_says_so(tmp_path, write_devkit):
    pair = [("cat", (1, 1, 30, 30), False), ("dog", (20, 10, 60, 40), False)]
    images = {f"{i:03d}": pair for i in range(12)}
    root = write_devkit(images, {"trainval": sorted(images)[:8], "test": sorted(images)[8:]}, size=(64, 64))
    broken = root / "VOCdevkit" / "VOC2007" / "Annotations" / "011.xml"
    broken.write_text(broken.read_text().replace("<name>dog</name>", "<name>unicorn</name>"))
    base = [f"data.root={root}", "data.synthetic=null", "split.groups=[[7], "
            f"{[c for c in range(20) if c != 7]}]", "prune.evaluate=first_last"]
    # Skipping bad training annotations is not a licence to shrink the test set.
    refused = run_tool(tmp_path / "a", *base, "data.on_bad_annotation=skip")
    errors = [line for line in refused.output.splitlines() if line.startswith("Error: ")]
    assert refused.exit_code == 1 and len(errors) == 1 and "011.xml" in errors[0] and "unicorn" in errors[0]
    skipped = run_tool(tmp_path / "b", *base, "data.on_bad_test_annotation=skip")
    assert skipped.exit_code == 0, skipped.output
    run = tmp_path / "b" / "run"
    metrics = json.loads((run / "round_00" / "eval" / "metrics.json").read_text())
    assert metrics["test_images"] == 3
    assert metrics["test_skipped"] == {"images": 1, "objects": 2, "images_without_readable_annotation": 0,
                                       "by_problem": {"unknown_class": 1}}
    note = "**Test set shrunk:** 1 test images with bad annotations (2 objects) were left out"
    assert note in (run / "report.md").read_text() and note in skipped.output
