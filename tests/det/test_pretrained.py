"""Pretrained backbones through torchvision's weights API and torch.hub's cache, with no network; the record of
which weights a run started from; and keep-ratio input sizing, with detections mapped back exactly."""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from click.testing import CliRunner
from torch import nn

from colt_core.config import ConfigError, from_dict, to_dict
from colt_det.config import DataConfig, DetRunConfig, ModelConfig
from colt_det.data import voc_to_xyxy
from colt_det.model import BACKBONE_PREFIX
from colt_det.predict import detect
from colt_det.pretrained import cache_file, imagenet_weights, resolve_pretrained
from colt_det.task import DetectionTask
from colt_det.voc import load_voc_records

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import train_colt_det  # noqa: E402

FAST = dict(rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=32, rpn_pre_nms_top_n_test=50,
            rpn_post_nms_top_n_test=16, rpn_batch_size_per_image=32, box_batch_size_per_image=16)


@pytest.fixture
def no_network(monkeypatch):
    """Any download through torch.hub fails as it does without network."""
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"no network reaches {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def cache_state(norm: str, seed: int = 3) -> dict[str, torch.Tensor]:
    """torchvision's own vgg16 (vgg16_bn) state_dict, randomly initialised, in the cache under torchvision's name."""
    torch.manual_seed(seed)
    model = torchvision.models.vgg16_bn() if norm == "batch" else torchvision.models.vgg16()
    state = model.state_dict()
    path = cache_file(imagenet_weights(norm))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_imagenet_comes_from_the_cache_and_theta0_holds_it_exactly(norm, torch_home, no_network, synthetic_voc):
    state = cache_state(norm)
    assert cache_file(imagenet_weights(norm)).name == {"none": "vgg16-397923af.pth",
                                                       "batch": "vgg16_bn-6c64b313.pth"}[norm]
    model_cfg = ModelConfig(norm=norm, pretrained_backbone="imagenet", kwargs=dict(min_size=64, max_size=64, **FAST))
    cfg = DetRunConfig(data=DataConfig(root=str(synthetic_voc), train_sets="2007:trainval", num_workers=0),
                       model=model_cfg)
    task = DetectionTask(cfg)
    assert task.pretrained.source == {"none": "VGG16_Weights.IMAGENET1K_V1",
                                      "batch": "VGG16_BN_Weights.IMAGENET1K_V1"}[norm]
    torch.manual_seed(0)
    theta0 = task.build_model(20).state_dict()  # what the round loop snapshots as θ0
    backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in theta0.items() if k.startswith(BACKBONE_PREFIX)}
    assert set(backbone) == {k.removeprefix("features.") for k in state if k.startswith("features.")}
    assert all(torch.equal(v, state[f"features.{k}"]) for k, v in backbone.items())
    # VGG's fc6/fc7 are the ImageNet classifier's first two linear layers; RPN and heads start fresh.
    for fc, index in (("fc6", 0), ("fc7", 3)):
        for p in ("weight", "bias"):
            assert torch.equal(theta0[f"roi_heads.box_head.{fc}.{p}"], state[f"classifier.{index}.{p}"])
    assert theta0["rpn.head.conv.0.0.weight"].abs().max() > 0 and not torch.count_nonzero(
        theta0["rpn.head.conv.0.0.bias"])
    recorded = task.architecture()["pretrained"]
    assert recorded["file"] == cache_file(imagenet_weights(norm)).name and len(recorded["sha256"]) == 64


def run_tool(tmp_path: Path, *extra: str):
    args = ["--cfg", "voc_synth_tiny.yaml", "--out", str(tmp_path / "run"), "--set", f"data.root={tmp_path / 'voc'}"]
    for item in ["data.synthetic.n_trainval=12", "data.synthetic.n_test=4", "data.synthetic.image_size=64",
                 "data.val_fraction=0.25", "model.width=0.0625", "model.head_dim=16", "model.kwargs.min_size=64",
                 "model.kwargs.max_size=64", "augment.size=64", "train.epochs=1", "train.batch_size=4",
                 "train.progress=false", "eval.coco=false", "prune.max_rounds=1", "prune.evaluate=none", *extra]:
        args += [item] if item.startswith("--") else ["--set", item]
    return CliRunner().invoke(train_colt_det.main, args)


def test_no_cached_file_and_no_network_is_one_line_before_any_work(tmp_path, torch_home, no_network):
    result = run_tool(tmp_path, "model.width=1.0", "model.norm=none", "model.pretrained_backbone=imagenet")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    folder = torch_home / "hub" / "checkpoints"
    for fragment in ("vgg16-397923af.pth", str(folder), "VGG16_Weights.IMAGENET1K_V1",
                     "model.pretrained_backbone: PATH", "https://download.pytorch.org/models/vgg16-397923af.pth"):
        assert fragment in errors[0], errors[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "voc").exists()  # nothing was started


def test_a_run_records_its_weights_and_resume_refuses_other_ones(tmp_path):
    # A narrow backbone exported earlier (torchvision's features keys, narrow shapes) serves as PATH.
    torch.manual_seed(1)
    from colt_det.model import build_vgg16_faster_rcnn

    donor = build_vgg16_faster_rcnn(3, width=0.0625, head_dim=16, norm="batch")
    weights = tmp_path / "backbone.pth"
    torch.save({k[len(BACKBONE_PREFIX):]: v for k, v in donor.state_dict().items() if k.startswith(BACKBONE_PREFIX)},
               weights)
    first = run_tool(tmp_path, f"model.pretrained_backbone={weights}")
    assert first.exit_code == 0, first.output
    run = tmp_path / "run"
    stored = yaml.safe_load((run / "config.yaml").read_text())["model"]
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert stored["pretrained_sha256"] == sha
    ticket = torch.load(run / "ticket.pt", weights_only=True)
    assert ticket["architecture"]["pretrained"] == {"source": str(weights), "file": "backbone.pth", "sha256": sha,
                                                    "of": "backbone"}
    report = (run / "report.md").read_text()
    assert f"started from pretrained weights: {weights} (backbone.pth, SHA-256 {sha})" in report
    init = torch.load(run / "init.pt", weights_only=True)
    assert torch.equal(init["backbone.body.0.weight"], donor.state_dict()["backbone.body.0.weight"])

    assert run_tool(tmp_path, f"model.pretrained_backbone={weights}", "--resume").exit_code == 0  # same weights
    torch.save({k: v + 1 for k, v in torch.load(weights, weights_only=True).items()}, weights)  # the file changes
    refused = run_tool(tmp_path, f"model.pretrained_backbone={weights}", "--resume")
    errors = [line for line in refused.output.splitlines() if line.startswith("Error: ")]
    assert refused.exit_code == 1 and len(errors) == 1 and "model.pretrained_sha256" in errors[0], refused.output
    pinned = run_tool(tmp_path / "pinned", f"model.pretrained_backbone={weights}", f"model.pretrained_sha256={sha}")
    assert pinned.exit_code == 1 and "is pinned to weights with SHA-256" in pinned.output


def test_config_refuses_imagenet_weights_that_cannot_fit():
    with pytest.raises(ConfigError, match=r"model\.pretrained_backbone: torchvision has no ImageNet VGG16 with Group"):
        from_dict(DetRunConfig, {"model": {"norm": "group", "pretrained_backbone": "imagenet"}})
    with pytest.raises(ConfigError, match=r"model\.pretrained_backbone: ImageNet VGG16 weights need width 1\.0"):
        from_dict(DetRunConfig, {"model": {"width": 0.5, "pretrained_backbone": "imagenet"}})
    assert resolve_pretrained(ModelConfig()) is None
    assert resolve_pretrained(ModelConfig(pretrained_backbone="none", norm="batch")) is None


def test_the_paper_configs_start_from_imagenet_and_the_demo_from_scratch():
    from colt_core.config import load_config

    for name in ("voc_vgg16", "voc_vgg16_lth"):
        cfg = load_config(DetRunConfig, name, configs_dir=ROOT / "configs")
        assert (cfg.model.pretrained_backbone, cfg.model.norm, cfg.model.width) == ("imagenet", "none", 1.0)
    demo = load_config(DetRunConfig, "voc_synth_tiny", configs_dir=ROOT / "configs")
    assert demo.model.pretrained_backbone is None


# --- keep-ratio sizing -----------------------------------------------------------------------------------

class BrightBoxDetector(nn.Module):
    """Finds the bright rectangle of each image it is given, in that image's own pixel coordinates."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            out.append({"boxes": box, "labels": torch.tensor([8]), "scores": torch.tensor([0.9])})  # "cat"
        return out


def test_keep_ratio_evaluates_at_the_images_own_size_and_stretch_maps_back(write_devkit):
    from PIL import Image

    root = write_devkit({"a": [("cat", (11, 21, 50, 40), False)]}, {"test": ["a"]}, size=(120, 60))
    jpeg = root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "a.jpg"
    pixels = np.zeros((60, 120, 3), np.uint8)
    pixels[20:40, 10:50] = 255  # the annotated box: VOC (11, 21, 50, 40) is xyxy (10, 20, 50, 40)
    Image.fromarray(pixels).save(jpeg, quality=100)
    records, _ = load_voc_records(root, "2007:test")
    assert voc_to_xyxy(records[0].objects[0].box) == (10.0, 20.0, 50.0, 40.0)
    kept = detect(BrightBoxDetector(), records, size=None, device=torch.device("cpu"), progress=False)
    assert [(d.image_id, d.box) for d in kept["cat"]] == [("a", (11.0, 21.0, 50.0, 40.0))]  # exact, as annotated
    stretched = detect(BrightBoxDetector(), records, size=64, device=torch.device("cpu"), progress=False)
    np.testing.assert_allclose(stretched["cat"][0].box, (11.0, 21.0, 50.0, 40.0), atol=2.0)


def test_keep_ratio_leaves_resizing_to_the_detector(synthetic_voc):
    cfg = from_dict(DetRunConfig, {"data": {"root": str(synthetic_voc), "train_sets": "2007:trainval",
                                            "num_workers": 0},
                                   "augment": {"resize": "keep_ratio", "size": 32, "hflip": 1.0},
                                   "model": {"width": 0.0625, "head_dim": 16,
                                             "kwargs": {"min_size": 48, "max_size": 80}}})
    assert cfg.augment.input_size is None and to_dict(cfg)["augment"]["resize"] == "keep_ratio"
    task = DetectionTask(cfg)
    train, _ = task.datasets(None)
    image, target = train[0]
    record = train.records[0]
    assert image.shape[1:] == (record.height, record.width)  # not the 32 px square
    flipped = [(record.width - x1, y0, record.width - x0, y1) for x0, y0, x1, y1 in
               (voc_to_xyxy(o.box) for o in record.objects if not o.difficult)]
    np.testing.assert_allclose(target["boxes"].numpy(), np.array(flipped, np.float32), atol=1e-4)
    model = task.build_model(20).eval()
    with torch.no_grad():
        out = model([image])[0]
    assert out["boxes"].numel() == 0 or float(out["boxes"][:, 2].max()) <= record.width  # in this image's frame
    assert json.loads(json.dumps(task.architecture()))["kwargs"]["min_size"] == 48
