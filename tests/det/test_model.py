"""Faster R-CNN VGG16: layout, prune groups, init, keyword forwarding, pretrained loading, full-width size."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torchvision
from torch import nn

from colt_core.prune.magnitude import resolve_prune_groups
from colt_det.detectors import VGG16, prune_group_specs
from colt_det.model import (
    BACKBONE_PREFIX,
    SingleLevelRoIPool,
    VGG16Backbone,
    build_vgg16_faster_rcnn,
    group_norm_groups,
    load_vgg16_weights,
)

DETECTOR_OUTPUT_LAYERS = ("roi_heads.box_predictor",)

VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
LOSS_NAMES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
# Small RoI budgets keep CPU steps fast; they change no parameter shapes.
FAST_SAMPLING = dict(
    rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=64, rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=32, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
)


def tiny_model(num_classes: int = 3, seed: int = 0, **kwargs) -> torchvision.models.detection.FasterRCNN:
    torch.manual_seed(seed)
    options = dict(width=0.0625, head_dim=32, min_size=64, max_size=96, anchor_sizes=((16, 32, 64),),
                   **FAST_SAMPLING)
    options.update(kwargs)
    return build_vgg16_faster_rcnn(num_classes, **options)


def prune_groups(model: nn.Module) -> dict[str, list[str]]:
    """The detector's prune groups as the engine resolves them: group name -> weight names in model order."""
    assert tuple(VGG16.class_output_layers(model)) == DETECTOR_OUTPUT_LAYERS
    resolved = resolve_prune_groups(model, prune_group_specs(model, VGG16), {"conv": 0.2, "fc": 0.2},
                                    DETECTOR_OUTPUT_LAYERS)
    return {g.name: list(g.params) for g in resolved}


def backbone_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state keyed like ``torchvision.models.vgg16().features``."""
    return {k[len(BACKBONE_PREFIX):]: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIX)}


def square_images(n: int = 2, size: int = 64) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Dark images each holding one bright square of class 1 or 2."""
    images, targets = [], []
    for i in range(n):
        image = torch.full((3, size, size), 0.1)
        x0, y0 = 8 + 4 * i, 12 + 2 * i
        image[i % 2, y0:y0 + 24, x0:x0 + 24] = 0.9
        images.append(image)
        targets.append({"boxes": torch.tensor([[x0, y0, x0 + 24, y0 + 24]], dtype=torch.float32),
                        "labels": torch.tensor([1 + i % 2])})
    return images, targets


@pytest.mark.parametrize("roi_pool", ["align", "pool"])
def test_tiny_model_trains_and_detects(roi_pool):
    model = tiny_model(roi_pool=roi_pool)
    if roi_pool == "pool":
        assert isinstance(model.roi_heads.box_roi_pool, SingleLevelRoIPool)
    images, targets = square_images()
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSS_NAMES
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.box_head.fc6.weight.grad is not None
    assert model.backbone.body[0].weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det in detections:
        assert set(det) == {"boxes", "labels", "scores"}
        assert det["boxes"].shape[1:] == (4,)
        assert ((det["labels"] >= 1) & (det["labels"] <= 2)).all()


def test_backbone_is_vgg16_features_without_last_pool():
    model = tiny_model(width=0.125)
    body = model.backbone.body
    with torch.device("meta"):
        reference = torchvision.models.vgg16().features
    assert len(body) == 30 == len(reference) - 1
    for index, (ours, theirs) in enumerate(zip(body, reference)):
        assert type(ours) is type(theirs), index
    assert [i for i, m in enumerate(body) if isinstance(m, nn.Conv2d)] == list(VGG16_CONV_INDICES)
    assert [body[i].out_channels for i in VGG16_CONV_INDICES] == [8, 8, 16, 16, 32, 32, 32] + [64] * 6
    assert model.backbone.out_channels == 64
    # Stride 16: a 64x64 input gives a 4x4 feature map.
    assert model.backbone(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 4, 4)


def test_minimum_width_keeps_four_channels():
    model = tiny_model(width=0.001)
    assert {model.backbone.body[i].out_channels for i in VGG16_CONV_INDICES} == {4}


def test_prune_groups_cover_backbone_and_rpn_convs_and_fc6_fc7_but_no_head_output():
    model = tiny_model()
    groups = prune_groups(model)
    assert set(groups) == {"conv", "fc"}
    assert groups["conv"] == [f"backbone.body.{i}.weight" for i in VGG16_CONV_INDICES] + ["rpn.head.conv.0.0.weight"]
    assert groups["fc"] == ["roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc7.weight"]
    every_conv = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    # The RPN's objectness and box outputs are a head's outputs, like the box predictor: never pruned.
    assert every_conv - set(groups["conv"]) == {"rpn.head.cls_logits.weight", "rpn.head.bbox_pred.weight"}
    selected = groups["conv"] + groups["fc"]
    assert not any(name.startswith(DETECTOR_OUTPUT_LAYERS) or name.endswith(".bias") for name in selected)
    assert DETECTOR_OUTPUT_LAYERS == ("roi_heads.box_predictor",)


VGG16_BN_CONV_INDICES = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)


def test_batch_norm_backbone_is_vgg16_bn_features_without_last_pool():
    with torch.device("meta"):
        reference = torchvision.models.vgg16_bn().features
        ours = VGG16Backbone(1.0, norm="batch")
    assert len(ours.body) == 43 == len(reference) - 1
    for index, (mine, theirs) in enumerate(zip(ours.body, reference)):
        assert type(mine) is type(theirs), index
    result = reference.load_state_dict(ours.body.state_dict(), strict=False, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert [i for i, m in enumerate(ours.body) if isinstance(m, nn.Conv2d)] == list(VGG16_BN_CONV_INDICES)


def test_group_norm_groups_divide_and_keep_two_channels_per_group():
    assert [group_norm_groups(c) for c in (4, 5, 6, 8, 16, 64, 96, 512)] == [2, 1, 2, 4, 8, 32, 32, 32]
    model = tiny_model(norm="group", width=0.125)
    norms = [m for m in model.backbone.body if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 13
    assert [(n.num_groups, n.num_channels) for n in norms[:3]] == [(4, 8), (4, 8), (8, 16)]


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_norm_layers_are_never_pruned_and_the_model_trains(norm):
    model = tiny_model(norm=norm)
    groups = prune_groups(model)
    assert groups["conv"] == [f"backbone.body.{i}.weight" for i in VGG16_BN_CONV_INDICES] + [
        "rpn.head.conv.0.0.weight"]
    assert groups["fc"] == ["roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc7.weight"]
    images, targets = square_images()
    model.train()
    sum(model(images, targets).values()).backward()
    assert model.backbone.body[1].weight.grad.abs().sum() > 0


def test_vgg16_bn_weights_load_into_a_batch_norm_backbone(tmp_path):
    torch.manual_seed(3)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)
    for module in features:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    path = tmp_path / "vgg16_bn-local.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    model = build_vgg16_faster_rcnn(3, head_dim=32, min_size=64, max_size=64, norm="batch", pretrained_backbone=path)
    for key, value in backbone_weights(model).items():
        assert torch.equal(value, state[f"features.{key}"]), key
    plain, _ = _vgg16_file(tmp_path, with_classifier=False)
    with pytest.raises(ValueError, match=r"lacks key '1\.weight'.*norm='batch'.*vgg16_bn"):
        build_vgg16_faster_rcnn(3, head_dim=32, norm="batch", pretrained_backbone=plain)


def test_xavier_init_is_deterministic_and_bounded():
    first, second = tiny_model(seed=7), tiny_model(seed=7)
    other = tiny_model(seed=8)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.backbone.body[0].weight, other.backbone.body[0].weight)
    for name, module in first.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not name.startswith(DETECTOR_OUTPUT_LAYERS):
            fan_in = module.weight[0].numel()
            fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert module.weight.abs().max() <= bound + 1e-6, name
            assert module.weight.abs().max() > 0.5 * bound, name
            assert torch.count_nonzero(module.bias) == 0, name
    predictor = first.roi_heads.box_predictor
    assert predictor.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert predictor.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.3)


def test_torchvision_init_follows_vgg_and_rpn_defaults():
    model = tiny_model(init="torchvision", width=0.25, head_dim=256)
    conv = model.backbone.body[28].weight  # Kaiming normal, fan_out = 128 * 9
    assert conv.std().item() == pytest.approx(math.sqrt(2.0 / (128 * 9)), rel=0.1)
    assert model.roi_heads.box_head.fc6.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert model.rpn.head.conv[0][0].weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_faster_rcnn_keywords_are_forwarded_and_the_model_carries_no_description():
    model = tiny_model(rpn_nms_thresh=0.6, box_nms_thresh=0.4, box_detections_per_img=7, box_score_thresh=0.2)
    assert model.rpn.nms_thresh == 0.6 and model.roi_heads.nms_thresh == 0.4
    assert model.roi_heads.detections_per_img == 7 and model.roi_heads.score_thresh == 0.2
    # torchvision's own defaults where the builder does not say otherwise; py-faster-rcnn's input size
    default = build_vgg16_faster_rcnn(3, width=0.0625, head_dim=8)
    assert (default.rpn.nms_thresh, default.roi_heads.nms_thresh, default.roi_heads.score_thresh) == (0.7, 0.5, 0.05)
    assert (default.transform.min_size, default.transform.max_size) == ((600,), 1000)
    assert not hasattr(model, "arch_config")
    with pytest.raises(TypeError, match="rpn_nms_treshold"):
        tiny_model(rpn_nms_treshold=0.5)


def test_the_config_architecture_rebuilds_the_same_detector():
    from colt_det.config import ModelConfig
    from colt_det.export import build_detector

    cfg = ModelConfig(width=0.0625, head_dim=32, roi_pool="pool", head_dropout=0.25,
                      kwargs={"min_size": 64, "max_size": 64})
    architecture = json.loads(json.dumps(cfg.architecture()))
    assert (architecture["name"], architecture["task"], architecture["num_classes"]) == (
        "fasterrcnn_vgg16", "detection", 21)
    torch.manual_seed(0)
    built = build_vgg16_faster_rcnn(21, **cfg.build_kwargs())
    again = build_detector(architecture)
    assert {n: p.shape for n, p in again.named_parameters()} == {n: p.shape for n, p in built.named_parameters()}
    assert isinstance(again.roi_heads.box_roi_pool, SingleLevelRoIPool) and again.roi_heads.box_head.drop6.p == 0.25
    with pytest.raises(ValueError, match="unknown detector architecture key"):
        build_detector({**architecture, "depth": 19})
    with pytest.raises(ValueError, match="not a detection architecture"):
        build_detector({**architecture, "name": "resnet"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"roi_pool": "crop"}, "roi_pool"), ({"init": "orthogonal"}, "init"), ({"width": 0}, "width"),
     ({"head_dim": 0}, "head_dim"), ({"head_dropout": 1.0}, "head_dropout"), ({"norm": "layer"}, "norm")],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        build_vgg16_faster_rcnn(1)


def _vgg16_file(tmp_path, *, with_classifier: bool) -> tuple:
    """A torchvision-format vgg16 state_dict (features, optionally a small stand-in classifier) on disk."""
    torch.manual_seed(3)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    if with_classifier:  # shapes of a real vgg16 classifier do not fit fc6/fc7 of head_dim 32: ignored
        state["classifier.0.weight"] = torch.zeros(4096, 25088 // 4096)
        state["classifier.6.weight"] = torch.zeros(1000, 4096)
    path = tmp_path / "vgg16-local.pth"
    torch.save(state, path)
    return path, state


def test_pretrained_backbone_from_local_file(tmp_path):
    path, state = _vgg16_file(tmp_path, with_classifier=True)
    torch.manual_seed(0)
    model = build_vgg16_faster_rcnn(3, head_dim=32, min_size=64, max_size=64, pretrained_backbone=path)
    for key, value in backbone_weights(model).items():
        assert torch.equal(value, state[f"features.{key}"]), key
    # An exported backbone (bare "N.weight" keys) loads the same way.
    bare = tmp_path / "exported.pth"
    torch.save({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}, bare)
    torch.manual_seed(0)
    other = build_vgg16_faster_rcnn(3, head_dim=32, min_size=64, max_size=64)
    assert load_vgg16_weights(other, bare) == [f"backbone.body.{k}" for k in backbone_weights(other)]
    assert torch.equal(other.backbone.body[28].weight, state["features.28.weight"])


def test_pretrained_backbone_errors_name_the_file_and_fix(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*vgg16\.pth.*or set it to imagenet or none"):
        tiny_model(pretrained_backbone=missing)
    path, _ = _vgg16_file(tmp_path, with_classifier=False)
    with pytest.raises(ValueError, match=r"vgg16-local\.pth.*'0\.weight'.*width=1\.0"):
        tiny_model(pretrained_backbone=path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read.*garbage\.pth"):
        tiny_model(pretrained_backbone=garbage)
    incomplete = tmp_path / "incomplete.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, incomplete)
    with pytest.raises(ValueError, match=r"incomplete\.pth lacks key '0\.bias'"):
        build_vgg16_faster_rcnn(3, head_dim=8, pretrained_backbone=incomplete)


# --- the full-width, 21-class detector (VGG16 fc6/fc7 of 4096): built once for the tests below ---

EXPECTED_FULL_PARAMETERS = (
    14_714_688  # VGG16 conv1_1..conv5_3 (torchvision vgg16().features)
    + (512 * 512 * 9 + 512) + (512 * 9 + 9) + (512 * 36 + 36)  # RPN: 3x3 conv, 9 objectness, 36 deltas
    + (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096)  # fc6, fc7
    + (4096 * 21 + 21) + (4096 * 84 + 84)  # box predictor: 21 scores, 84 deltas
)


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return build_vgg16_faster_rcnn(21, min_size=128, max_size=128, **FAST_SAMPLING)


def test_full_width_parameter_count(full_model):
    assert EXPECTED_FULL_PARAMETERS == 137_073_622
    assert sum(p.numel() for p in full_model.parameters()) == EXPECTED_FULL_PARAMETERS


def test_full_width_prune_groups_count_every_prunable_weight(full_model):
    resolved = resolve_prune_groups(full_model, prune_group_specs(full_model, VGG16), {"conv": 0.15, "fc": 0.2},
                                    DETECTOR_OUTPUT_LAYERS)
    params = dict(full_model.named_parameters())
    counts = {g.name: sum(params[n].numel() for n in g.params) for g in resolved}
    vgg16_conv_weights = 14_714_688 - 4_224  # vgg16().features without its 13 biases
    rpn_conv = 512 * 512 * 9  # the RPN's 3x3 conv; its 1x1 objectness (4,608) and box (18,432) outputs are out
    assert counts == {"conv": vgg16_conv_weights + rpn_conv, "fc": 512 * 7 * 7 * 4096 + 4096 * 4096}
    assert counts == {"conv": 17_069_760, "fc": 119_537_664}


def test_full_width_backbone_loads_into_torchvision_vgg16_strictly(full_model):
    exported = backbone_weights(full_model)
    with torch.device("meta"):
        vgg = torchvision.models.vgg16()
    result = vgg.features.load_state_dict(exported, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(vgg.features[28].weight, full_model.backbone.body[28].weight)


def test_full_width_train_step_and_evaluation(full_model):
    images, targets = square_images(2, size=128)
    optimizer = torch.optim.SGD(full_model.parameters(), lr=1e-4)  # stateless: no 1 GB of Adam moments
    full_model.train()
    start = time.perf_counter()
    losses = full_model(images, targets)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    step_seconds = time.perf_counter() - start
    optimizer.zero_grad(set_to_none=True)
    assert set(losses) == LOSS_NAMES and all(torch.isfinite(v) for v in losses.values())
    full_model.eval()
    with torch.no_grad():
        detections = full_model(images)
    assert len(detections) == 2 and all(d["boxes"].shape[1:] == (4,) for d in detections)
    print(f"full-width CPU training step on 2 images of 128x128: {step_seconds:.2f} s")


def test_classifier_maps_to_fc6_fc7_at_full_width(full_model, tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(5)
    state = {f"features.{k}": torch.randn(v.shape, generator=generator)
             for k, v in backbone_weights(full_model).items()}
    state.update({
        "classifier.0.weight": torch.randn(4096, 25088, generator=generator),
        "classifier.0.bias": torch.randn(4096, generator=generator),
        "classifier.3.weight": torch.randn(4096, 4096, generator=generator),
        "classifier.3.bias": torch.randn(4096, generator=generator),
        "classifier.6.weight": torch.randn(1000, 4096, generator=generator),
        "classifier.6.bias": torch.randn(1000, generator=generator),
    })
    # Skip writing 550 MB to disk: serve the state dict as if it had been read from the file.
    path = tmp_path / "vgg16-397923af.pth"
    path.touch()
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: state)
    loaded = load_vgg16_weights(full_model, path)
    assert "roi_heads.box_head.fc6.weight" in loaded and "roi_heads.box_head.fc7.bias" in loaded
    assert not any("predictor" in name for name in loaded)
    head = full_model.roi_heads.box_head
    assert torch.equal(head.fc6.weight, state["classifier.0.weight"])
    assert torch.equal(head.fc7.bias, state["classifier.3.bias"])
    assert torch.equal(full_model.backbone.body[0].weight, state["features.0.weight"])
