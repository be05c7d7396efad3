"""The README's config for a user's own COCO-format data, run as the README has a user run it: four data paths
set on the command line, torchvision's Faster R-CNN ResNet-50 FPN v2. A module of its own: its run weighs about
1 GB, and no other module's run is on the disk beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from colt_det.synthetic import coco_instances_path, make_synthetic_coco

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import train_colt_det  # noqa: E402

SETTINGS = ["model.pretrained_backbone=none", "model.kwargs.min_size=64", "model.kwargs.max_size=64",
            *(f"model.kwargs.{k}={v}" for k, v in (
                ("rpn_pre_nms_top_n_train", 64), ("rpn_post_nms_top_n_train", 32), ("rpn_pre_nms_top_n_test", 32),
                ("rpn_post_nms_top_n_test", 32), ("rpn_batch_size_per_image", 32), ("box_batch_size_per_image", 32))),
            "augment.size=64", "train.epochs=1", "train.schedule.warmup_epochs=0", "train.progress=false",
            "data.num_workers=0", "data.val_fraction=0.25", "prune.max_rounds=1", "prune.evaluate=final"]


def test_the_readme_config_for_your_own_coco_data_runs_on_image_folders_and_instances_files(one_thread, tmp_path):
    """coco_fasterrcnn_resnet50_fpn_v2.yaml on the synthetic COCO twin's files (from scratch: no network here),
    one COLT-2 round: the ticket names the architecture, the final evaluation is pycocotools' COCO mAP."""
    coco = make_synthetic_coco(tmp_path / "coco", n_trainval=24, n_test=8, image_size=64, num_classes=4)
    paths = [f"data.train_images=[{coco / 'train'}]", f"data.train_annotations=[{coco_instances_path(coco, 'train')}]",
             f"data.test_images={coco / 'test'}", f"data.test_annotations={coco_instances_path(coco, 'test')}"]
    run = tmp_path / "run"
    args = ["--cfg", "coco_fasterrcnn_resnet50_fpn_v2.yaml", "--out", str(run)]
    result = CliRunner().invoke(train_colt_det.main, [*args, *(a for s in [*paths, *SETTINGS] for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    ticket = torch.load(run / "ticket.pt", weights_only=True)
    assert (ticket["architecture"]["name"], ticket["architecture"]["num_classes"]) == ("fasterrcnn_resnet50_fpn_v2", 5)
    assert ticket["meta"]["rounds"] == 1 and 0.15 < ticket["sparsity"]["overall"]["sparsity"] < 0.3
    metrics = json.loads((run / "round_01" / "eval" / "metrics.json").read_text())
    assert metrics["metric"] == "coco mAP" and (run / "round_01" / "eval" / "detections.json").is_file()
    assert "| AP50 (%) |" in result.output.replace(" | AP75 (%)", "")
