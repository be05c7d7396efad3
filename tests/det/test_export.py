"""Detector exports: the VGG16 backbone in torchvision's layout; the export and compare tools on detection."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner

from colt_core.config import to_dict
from colt_core.export import (
    ExportError,
    compare_outputs,
    export_run,
    load_sparse,
)
from colt_core.io import atomic_save, atomic_write_json, atomic_write_text, read_json
from colt_core.prune.masks import MaskKeeper
from colt_core.prune.sparsity import sparsity_report
from colt_core.prune.ticket import load_ticket, save_ticket
from colt_core.prune.weights import snapshot
from colt_core.run.rounds import RoundLoop
from colt_core.rundir import TrainingRecord, prepare_run_dir
from colt_core.train.speed import FULL
from colt_core.train.task import TrainJob, TrainOutput
from colt_det.config import DataConfig, DetRunConfig, ModelConfig
from colt_det.detectors import VGG16, prune_group_specs
from colt_det.detectors import backbone_key as family_backbone_key
from colt_det.export import (
    ONNX_OUTPUTS,
    architecture_from_config,
    build_detector,
    check_detections,
    detection_export_target,
    export_detector_onnx,
    match_detections,
)
from colt_det.model import BACKBONE_PREFIX
from colt_det.voc import VOC_CLASSES

REPO = Path(__file__).resolve().parents[2]


def backbone_key(name: str) -> str | None:
    return family_backbone_key(VGG16, name)
TINY_MODEL = {"width": 0.0625, "head_dim": 16, "head_dropout": 0.0, "anchor_sizes": [16, 32],
              "kwargs": {"min_size": 64, "max_size": 64}}


def tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def exact_mask(shape, sparsity: float, seed: int) -> torch.Tensor:
    n = int(torch.Size(shape).numel())
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: round(sparsity * n)]] = False
    return keep.view(shape)


def test_full_width_backbone_export_loads_into_torchvision_vgg16(tmp_path):
    """An unfinished run at 90% sparsity, written by hand: its backbone loads into torchvision's vgg16."""
    config = to_dict(DetRunConfig(model=ModelConfig(width=1.0, head_dim=8)))
    architecture = architecture_from_config(config)
    torch.manual_seed(0)
    model = build_detector(architecture)
    run = tmp_path / "run"
    atomic_write_text("seed: 0\n", run / "config.yaml")
    atomic_save(snapshot(model), run / "init.pt")
    conv = [n for n, _ in model.named_parameters() if backbone_key(n) and n.endswith(".weight")]
    mask = {n: exact_mask(model.state_dict()[n].shape, 0.9, i) for i, n in enumerate(conv)}
    atomic_save(mask, run / "round_00" / "mask.pt")
    result = export_run(run, tmp_path / "out", detection_export_target, round=0, architecture=architecture)

    loaded = torch.load(result.files["dense"], weights_only=True)
    features = torchvision.models.vgg16().features
    features.load_state_dict(loaded)  # strict: every key and shape of vgg16().features
    for name, keep in mask.items():
        weight = features.state_dict()[backbone_key(name)]
        assert bool((weight[~keep] == 0).all()) and torch.equal(weight[keep], model.state_dict()[name][keep])
    sparse = load_sparse(result.files["sparse"])
    assert list(sparse) == list(loaded) and all(torch.equal(sparse[k], loaded[k]) for k in loaded)
    dense_size, sparse_size = result.sizes["dense"], result.sizes["sparse"]
    print(f"full-width VGG16 backbone at 90%: dense {dense_size} B, sparse {sparse_size} B "
          f"({100 * sparse_size / dense_size:.1f}%)")
    assert sparse_size <= 0.25 * dense_size
    assert result.exported_report["overall"]["sparsity"] == pytest.approx(0.9, abs=1e-6)


class FakeDetectionTask:
    """Real tiny detectors and masks; AP is a seeded draw. With `PerturbingTrainer` it exercises everything
    the export and compare tools read (run layout, masks, tickets, per-class evaluations) without spending
    minutes on real detector training."""

    class_names = VOC_CLASSES
    output_layers = ("roi_heads.box_predictor",)
    collate = None

    def __init__(self, config: dict) -> None:
        self.arch = architecture_from_config(config)
        self.default_prune_groups = prune_group_specs(build_detector(self.arch), VGG16)

    def build_model(self, num_outputs: int):
        return build_detector({**self.arch, "num_classes": num_outputs + 1})

    def architecture(self) -> dict:
        return dict(self.arch)

    def evaluate(self, model, job: TrainJob) -> dict:
        gen = torch.Generator().manual_seed(job.seed % 2**31)
        per_class = {name: float(v) for name, v in zip(VOC_CLASSES, torch.rand(20, generator=gen))}
        return {"metric": "voc07 mAP", "value": sum(per_class.values()) / 20, "per_class": per_class}


class PerturbingTrainer:
    """Stands in for the engine's trainer: "training" is a seeded weight perturbation under the mask."""

    device, amp, loader = torch.device("cpu"), FULL, None  # the fake task's evaluation reads no test set

    def train(self, job: TrainJob) -> TrainOutput:
        gen = torch.Generator().manual_seed(job.seed % 2**31)
        keeper = MaskKeeper(job.model, job.mask)
        with torch.no_grad():
            for p in job.model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        keeper.after_step()
        return TrainOutput(snapshot(job.model), TrainingRecord(best_epoch=0, best_val_loss=1.0))


def make_detection_run(out: Path, method: str, max_rounds: int) -> Path:
    cfg = DetRunConfig(data=DataConfig(root=str(out.parent / "voc")), model=ModelConfig(**TINY_MODEL))
    cfg.prune.method, cfg.prune.rates, cfg.prune.max_rounds = method, {"conv": 0.3, "fc": 0.3}, max_rounds
    cfg.prune.evaluate = "all"
    config = to_dict(cfg)
    run_dir = prepare_run_dir(out, config, resume=False, overwrite=False)
    RoundLoop(FakeDetectionTask(config), PerturbingTrainer(), cfg.prune, cfg.split, seed=0, run_dir=run_dir,
              config_dict=config).run()
    return run_dir.path


@pytest.fixture(scope="module")
def detection_runs(tmp_path_factory) -> tuple[Path, Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("det_runs")
    try:
        return make_detection_run(root / "colt", "colt", 2), make_detection_run(root / "lth", "lth", 3)
    finally:
        torch.set_num_threads(threads)


def test_export_tool_writes_backbone_sparse_file_ticket_and_table(detection_runs, tmp_path):
    colt = detection_runs[0]
    result = CliRunner().invoke(tool("export_backbone"), [str(colt), "--out", str(tmp_path / "final")])
    assert result.exit_code == 0, result.output
    assert "| backbone.body.0.weight | conv |" in result.output and "| 0.weight | conv |" in result.output
    assert "vgg16_backbone.sparse.pt" in result.output and "width 0.0625" in result.output

    ticket = load_ticket(colt / "ticket.pt")
    model = build_detector(ticket.architecture)
    model.load_state_dict({k: v * ticket.mask[k] if k in ticket.mask else v for k, v in ticket.init.items()})
    expected = {k[len(BACKBONE_PREFIX):]: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIX)}
    dense = torch.load(tmp_path / "final" / "vgg16_backbone.pth", weights_only=True)
    conv_indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert list(dense) == list(expected) == [f"{i}.{p}" for i in conv_indices for p in ("weight", "bias")]
    assert all(torch.equal(dense[k], expected[k]) for k in expected)
    sparse = load_sparse(tmp_path / "final" / "vgg16_backbone.sparse.pt")
    assert all(torch.equal(sparse[k], dense[k]) for k in dense)
    # The sparse file keeps the ticket's positions: one value per survivor (θ0 has no zeros to hide one).
    records = torch.load(tmp_path / "final" / "vgg16_backbone.sparse.pt", weights_only=True)["tensors"]
    backbone_masks = {backbone_key(n): m for n, m in ticket.mask.items() if backbone_key(n)}
    assert {k for k, record in records.items() if record["encoding"] != "dense"} == set(backbone_masks)
    assert all(records[k]["values"].numel() == int(m.sum()) and torch.equal(dense[k] != 0, m)
               for k, m in backbone_masks.items())
    exported_ticket = load_ticket(tmp_path / "final" / "ticket.pt", build_detector(ticket.architecture))
    assert exported_ticket.architecture == ticket.architecture
    stored = read_json(tmp_path / "final" / "sparsity.json")
    assert stored["model"] == read_json(colt / f"round_{ticket.meta['rounds']:02d}" / "sparsity.json")
    assert "## Exported weights" in (tmp_path / "final" / "sparsity.md").read_text()

    # The trained full-data model of round 0 (COLT evaluates its dense ticket with a model of its own).
    result = CliRunner().invoke(tool("export_backbone"), [str(colt), "--out", str(tmp_path / "trained"),
                                                          "--round", "0", "--source", "trained"])
    assert result.exit_code == 0, result.output
    trained = torch.load(colt / "round_00" / "eval" / "model.pt", weights_only=True)
    dense = torch.load(tmp_path / "trained" / "vgg16_backbone.pth", weights_only=True)
    assert all(torch.equal(dense[backbone_key(k)], v) for k, v in trained.items() if backbone_key(k))


def test_export_tool_errors(detection_runs, tmp_path):
    colt = detection_runs[0]
    main = tool("export_backbone")
    bad = CliRunner().invoke(main, [str(colt), "--out", str(tmp_path / "x"), "--round", "7"])
    assert bad.exit_code == 1 and "round 7 does not exist; rounds on disk: 0, 1, 2" in bad.output
    bad = CliRunner().invoke(main, [str(colt), "--out", str(tmp_path / "x"), "--round", "1", "--final"])
    assert bad.exit_code == 2 and "exclude each other" in bad.output

    # A ticket whose architecture does not fit its masks.
    wrong = tmp_path / "wrong_arch"
    shutil.copytree(colt, wrong)
    ticket = load_ticket(wrong / "ticket.pt")
    ticket.architecture["width"] = 0.125
    save_ticket(ticket, wrong / "ticket.pt")
    bad = CliRunner().invoke(main, [str(wrong), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "mismatched architecture" in bad.output and "shape" in bad.output

    # An unfinished run: its rounds export through the stored config, the final ticket does not exist.
    unfinished = tmp_path / "unfinished"
    shutil.copytree(colt, unfinished)
    (unfinished / "ticket.pt").unlink()
    bad = CliRunner().invoke(main, [str(unfinished), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "the run is unfinished (no ticket.pt)" in bad.output
    assert "rounds on disk: 0, 1, 2" in bad.output
    good = CliRunner().invoke(main, [str(unfinished), "--out", str(tmp_path / "r1"), "--round", "1"])
    assert good.exit_code == 0, good.output
    mask = torch.load(unfinished / "round_01" / "mask.pt", weights_only=True)
    report = read_json(tmp_path / "r1" / "sparsity.json")["exported"]
    assert report == sparsity_report({backbone_key(k): v for k, v in mask.items() if backbone_key(k)},
                                     [_conv_group(mask, report)])
    assert not (tmp_path / "x").exists()

    result = CliRunner().invoke(main, [str(colt), "--out", str(tmp_path / "onnx"), "--onnx"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "onnx" / "detector.onnx").stat().st_size > 0
    assert "detections matched to PyTorch's by label" in result.output


def test_onnx_export_without_the_onnx_package_says_how_to_get_it(detection_runs, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    result = CliRunner().invoke(tool("export_backbone"), [str(detection_runs[0]), "--out", str(tmp_path / "o"),
                                                          "--onnx"])
    assert result.exit_code == 1 and "pip install onnx" in result.output
    assert not (tmp_path / "o").exists()


TIED = {"boxes": np.array([[10, 10, 40, 40], [12, 8, 50, 44], [0, 0, 20, 30], [5, 5, 60, 60], [30, 2, 62, 20],
                           [1, 40, 30, 63]], dtype=np.float32),
        "labels": np.array([1, 1, 2, 1, 2, 3]), "scores": np.array([0.9, 0.9, 0.9, 0.5, 0.5, 0.2], dtype=np.float32)}


def test_onnx_detections_are_matched_as_detections_not_compared_in_order():
    order = [2, 0, 1, 4, 3, 5]  # the tied detections in another order, as onnxruntime may list them
    got = {k: v[order] for k, v in TIED.items()}
    got["boxes"] = got["boxes"] + np.float32(4e-5)
    elementwise = compare_outputs([got[k] for k in ONNX_OUTPUTS], [TIED[k] for k in ONNX_OUTPUTS])
    assert elementwise["max_abs_diff"] > 10  # the element-wise check's false alarm
    check = match_detections(got, TIED)
    assert (check["matched"], check["unmatched"], check["max_score_diff"]) == (6, 0, 0.0)
    assert check["max_box_diff"] == pytest.approx(4e-5, rel=0.05)
    check_detections(check, "x.onnx")  # a correct export passes

    shifted = {**got, "boxes": got["boxes"] + np.array([[0, 0, 0, 0]] * 3 + [[3, 0, 3, 0]] + [[0, 0, 0, 0]] * 2)}
    with pytest.raises(ExportError, match=r"x\.onnx: onnxruntime's detections differ from PyTorch's .*\(1 of "
                                          r"PyTorch's 6 and 1 of onnxruntime's 6 detections have no counterpart "
                                          r"of the same label within 0\.05 px"):
        check_detections(match_detections(shifted, TIED), "x.onnx")
    middle = {k: np.delete(v, 1, axis=0) for k, v in got.items()}  # a 0.9 detection missing
    with pytest.raises(ExportError, match="1 of PyTorch's 6 and 0 of onnxruntime's 5 detections have no"):
        check_detections(match_detections(middle, TIED), "x.onnx")
    relabelled = {**got, "labels": np.array([3, 1, 1, 2, 1, 3])}  # a 0.9 detection of class 2 now says 3
    with pytest.raises(ExportError, match="onnxruntime's detections differ"):
        check_detections(match_detections(relabelled, TIED), "x.onnx")
    rescored = {**got, "scores": got["scores"] + np.float32(0.01)}
    with pytest.raises(ExportError, match=r"within 0\.05 px and 0\.001 of score"):
        check_detections(match_detections(rescored, TIED), "x.onnx")
    # At the low end a last-bit score difference decides what the score threshold keeps: tolerated.
    tail = {k: v[:-1] for k, v in got.items()}
    assert match_detections(tail, TIED)["unmatched_beyond_the_low_end"] == 0


def test_onnx_export_of_a_detector_with_tied_scores_passes_the_check(tmp_path):
    torch.manual_seed(0)
    # Few proposals and a high cap: every detection is kept, so both lists hold the same ones.
    fast = {**TINY_MODEL["kwargs"], "box_score_thresh": 0.01, "rpn_post_nms_top_n_test": 8,
            "box_detections_per_img": 400}
    config = DetRunConfig(model=ModelConfig(**{**TINY_MODEL, "kwargs": fast}))
    model = build_detector(architecture_from_config(to_dict(config)))
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():  # every class scores 1/21 and every box is its proposal: ties everywhere
        for layer in (predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
    _, check = export_detector_onnx(model, tmp_path / "tied.onnx", 64)
    with torch.no_grad():
        scores = model.eval()([torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))])[0]["scores"]
    assert len(scores) > 10 and len(set(scores.tolist())) < len(scores) / 2  # mostly tied
    assert check["matched"] == check["detections"] == len(scores) and check["max_box_diff"] < 1e-2


def _conv_group(mask, report):
    from colt_core.prune.magnitude import PruneGroup

    names = tuple(backbone_key(k) for k in mask if backbone_key(k))
    return PruneGroup("conv", report["groups"]["conv"]["rate_per_round"], names)


def test_compare_tool_writes_the_per_class_table_of_detection_runs(detection_runs, tmp_path):
    colt, lth = detection_runs
    result = CliRunner().invoke(tool("compare_runs"), [str(lth), str(colt), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("per_class_ap.png", "per_class_ap.csv", "fig5_metric_rounds_vs_sparsity.png",
                 "fig7_similarity.png", "comparison.md"):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "comparison.md").read_text()
    assert "## Per-class AP (%) at matching sparsity (Table VII)" in text
    colt_summary, lth_summary = read_json(colt / "summary.json"), read_json(lth / "summary.json")
    # COLT's highest evaluated sparsity is below LTH's: it sets the level, LTH contributes its closest ticket.
    colt_last = colt_summary["rounds"][-1]
    lth_best = min(lth_summary["rounds"][1:], key=lambda r: abs(r["sparsity"] - colt_last["sparsity"]))
    header = next(line for line in text.splitlines() if line.startswith("| class |"))
    assert header == (f"| class | dense | LTH round {lth_best['round']} ({100 * lth_best['sparsity']:.1f}% "
                      f"sparse) | COLT-2 round {colt_last['round']} "
                      f"({100 * colt_last['sparsity']:.1f}% sparse) |")
    rows = (tmp_path / "per_class_ap.csv").read_text().splitlines()
    assert len(rows) == 21 and rows[1].startswith("aeroplane,")
    dense_ap = lth_summary["rounds"][0]["eval"]["per_class"]["aeroplane"]
    assert float(rows[1].split(",")[1]) == dense_ap


def test_architecture_matches_the_task(synthetic_voc):
    """The export rebuilds exactly the detector DetectionTask trains (same names and shapes)."""
    from colt_det.task import DetectionTask

    cfg = DetRunConfig(data=DataConfig(root=str(synthetic_voc), train_sets="2007:trainval", num_workers=0),
                       model=ModelConfig(**TINY_MODEL))
    trainer = DetectionTask(cfg)
    architecture = architecture_from_config(to_dict(cfg))
    assert trainer.architecture() == {**architecture, "pretrained": None}
    built, expected = build_detector(architecture).state_dict(), trainer.build_model(20).state_dict()
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in expected.items()}
    with pytest.raises(ValueError, match=r"unknown detector architecture key\(s\) \['depth'\]"):
        build_detector({**architecture, "depth": 3})
    with pytest.raises(ValueError, match="not a detection architecture"):
        build_detector({"name": "resnet18"})


def test_export_of_a_run_without_rounds_is_an_error(tmp_path):
    run = tmp_path / "empty"
    atomic_write_text("seed: 0\n", run / "config.yaml")
    atomic_save({}, run / "init.pt")
    atomic_write_json({}, run / "split.json")
    with pytest.raises(ExportError, match=r"unfinished .*\(rounds on disk: none\)"):
        export_run(run, tmp_path / "x", detection_export_target)
