"""End to end on COCO-format data: a two-round COLT run of a torchvision detector on the synthetic COCO twin,
its COCO results file, pycocotools' numbers, eval_det on the file, and the export into torchvision's builder."""

from __future__ import annotations

import json
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner

from colt_core.config import ConfigError, load_config
from colt_det.coco_eval import evaluate_coco_results
from colt_det.config import DetRunConfig
from colt_det.synthetic import COCO_CATEGORY_IDS, coco_instances_path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import eval_det  # noqa: E402
import export_backbone  # noqa: E402
import train_colt_det  # noqa: E402

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"
SMALL = ["model.kwargs.min_size=64", "model.kwargs.max_size=64", "augment.size=64", "train.epochs=1",
         "train.schedule.warmup_epochs=0", "train.progress=false", "data.num_workers=0"]
TINY = ["data.synthetic.n_trainval=24", "data.synthetic.n_test=8", "data.synthetic.image_size=64",
        "data.synthetic.num_classes=4", "data.val_fraction=0.25", *SMALL,
        "prune.max_rounds=2", "prune.target_sparsity=0.95", "prune.evaluate=all"]


@pytest.fixture(scope="module")
def coco_run(module_tmp_path):
    tmp = module_tmp_path
    result = train(["--cfg", "coco_synth_tiny.yaml", "--out", str(tmp / "run"), "--set", f"data.root={tmp / 'coco'}"],
                   [*TINY, "prune.rewind_iteration=2"])  # the demo rewinds to step 51; a 4-step training to step 2
    assert result.exit_code == 0, result.output
    return tmp, result.output


def train(args: list[str], settings: list[str]):
    """train_colt_det on one thread (tiny models run fastest so on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(train_colt_det.main, [*args, *(a for s in settings for a in ("--set", s))])
    finally:
        torch.set_num_threads(threads)


def test_a_two_round_colt_run_on_coco_data(coco_run):
    tmp, output = coco_run
    run = tmp / "run"
    split = json.loads((run / "split.json").read_text())
    names = ["aeroplane", "bicycle", "bird", "boat"]  # the twin's categories, in category-id order
    assert split["class_names"] == names and sorted(c for g in split["groups"] for c in g) == [0, 1, 2, 3]
    masks = [torch.load(run / f"round_{r:02d}" / "mask.pt", weights_only=True) for r in range(3)]
    assert all(m.all() for m in masks[0].values())
    for earlier, later in pairwise(masks):
        assert all(not (later[k] & ~earlier[k]).any() for k in later)
        assert sum(int(v.sum()) for v in later.values()) < sum(int(v.sum()) for v in earlier.values())
    ticket = torch.load(run / "ticket.pt", weights_only=True)
    assert (ticket["architecture"]["name"], ticket["architecture"]["num_classes"]) == (ARCH, 5)
    assert ticket["meta"]["start"] == {"weights": "late_rewind", "iteration": 2, "source": "round_00/eval"}
    rewind = torch.load(run / "round_00" / "eval" / "rewind.pt", weights_only=True)  # the dense model after 2 steps
    theta0 = torch.load(run / "init.pt", weights_only=True)
    assert ticket["init"].keys() == rewind.keys() and all(torch.equal(ticket["init"][k], rewind[k]) for k in rewind)
    assert any(not torch.equal(rewind[k], theta0[k]) for k in ticket["mask"])
    assert not any(k.startswith(("roi_heads.box_predictor", "rpn.head.cls_logits", "rpn.head.bbox_pred"))
                   for k in ticket["mask"])
    for p in range(2):  # partition detectors have their classes + background as outputs
        state = torch.load(run / "round_00" / f"partition_{p}" / "model.pt", weights_only=True)
        assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == len(split["groups"][p]) + 1
    report = (run / "report.md").read_text()
    assert "coco mAP" in report and all(f"| {name} |" in report for name in names)
    assert "| aeroplane |" in output


def test_the_coco_results_file_is_standard_and_scored_by_pycocotools(coco_run, tmp_path):
    tmp, _ = coco_run
    run = tmp / "run"
    for r in range(3):
        metrics = json.loads((run / f"round_{r:02d}" / "eval" / "metrics.json").read_text())
        results_file = run / f"round_{r:02d}" / "eval" / "detections.json"
        results = json.loads(results_file.read_text())
        assert all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in results)
        assert {d["category_id"] for d in results} <= {COCO_CATEGORY_IDS[n] for n in metrics["per_class"]}
        direct = evaluate_coco_results(coco_instances_path(tmp / "coco", "test"), results_file)
        assert metrics["coco"]["mAP"] == pytest.approx(direct["mAP"], nan_ok=True)
        assert metrics["coco"]["AP50"] == pytest.approx(direct["AP50"], nan_ok=True)
        assert metrics["value"] == metrics["coco"]["mAP"] and metrics["metric"] == "coco mAP"
    out = tmp_path / "ap.json"
    result = CliRunner().invoke(eval_det.main, ["--coco-annotations", str(coco_instances_path(tmp / "coco", "test")),
                                                "--results", str(run / "round_02" / "eval" / "detections.json"),
                                                "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["mAP"] == pytest.approx(metrics["coco"]["mAP"], nan_ok=True)


def test_the_export_loads_into_torchvisions_builder_and_its_backbone_into_mobilenet(coco_run, tmp_path):
    tmp, _ = coco_run
    result = CliRunner().invoke(export_backbone.main, [str(tmp / "run"), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    assert "torchvision.models.get_model('fasterrcnn_mobilenet_v3_large_320_fpn'" in result.output
    ticket = torch.load(tmp / "run" / "ticket.pt", weights_only=True)
    model = torchvision.models.get_model(ARCH, weights=None, weights_backbone=None, num_classes=5,
                                         min_size=64, max_size=64)
    model.load_state_dict(torch.load(tmp_path / "export" / "detector.pth", weights_only=True))
    state = model.state_dict()
    assert all(torch.count_nonzero(state[k][~m]) == 0 for k, m in ticket["mask"].items())
    features = torchvision.models.mobilenet_v3_large().features
    features.load_state_dict(torch.load(tmp_path / "export" / "mobilenet_v3_large_backbone.pth", weights_only=True))


def test_the_coco_configs_load_and_the_lth_twin_differs_only_in_pruning():
    colt = load_config(DetRunConfig, "coco_fasterrcnn_resnet50_fpn_v2", configs_dir=ROOT / "configs")
    lth = load_config(DetRunConfig, "coco_fasterrcnn_resnet50_fpn_v2_lth", configs_dir=ROOT / "configs")
    assert (colt.prune.method, colt.prune.rates, lth.prune.method, lth.prune.rates) == \
        ("colt", {"conv": 0.15, "fc": 0.2}, "lth", {"conv": 0.2, "fc": 0.2})
    assert (lth.data, lth.model, lth.train, lth.augment, lth.eval) == (colt.data, colt.model, colt.train, colt.augment,
                                                                       colt.eval)
    assert (colt.model.arch, colt.model.pretrained_backbone, colt.data.format) == \
        ("fasterrcnn_resnet50_fpn_v2", "imagenet", "coco")
    demo = load_config(DetRunConfig, "coco_synth_tiny", configs_dir=ROOT / "configs")
    assert (demo.model.arch, demo.prune.scope, demo.data.synthetic.num_classes) == \
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "layer", 5)


def test_a_warm_up_as_long_as_the_training_is_refused_on_load():
    with pytest.raises(ConfigError, match=r"train\.schedule\.warmup_epochs: must be < epochs \(1\), got 1"):
        load_config(DetRunConfig, "coco_synth_tiny", configs_dir=ROOT / "configs", overrides=["train.epochs=1"])
