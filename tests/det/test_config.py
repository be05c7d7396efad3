"""The detector's config: vgg16 takes FasterRCNN keywords in model.kwargs like every torchvision arch, they reach
the model, and tickets written before keep rebuilding the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from colt_core.config import ConfigError, from_dict, load_config
from colt_det.config import MOVED_TO_KWARGS, DetRunConfig, ModelConfig, current_architecture
from colt_det.export import build_detector
from colt_det.model import build_vgg16_faster_rcnn

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_config_reaches_the_model():
    cfg = load_config(DetRunConfig, "voc_synth_tiny", configs_dir=ROOT / "configs")
    torch.manual_seed(0)
    built = build_vgg16_faster_rcnn(21, **cfg.model.build_kwargs())
    rebuilt = build_detector(json.loads(json.dumps(cfg.model.architecture(21))))  # as a ticket stores it
    for model in (built, rebuilt):
        rpn, heads, transform = model.rpn, model.roi_heads, model.transform
        assert rpn.anchor_generator.sizes == ((16, 32, 64),)
        assert rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),)
        assert rpn.fg_bg_sampler.batch_size_per_image == 32
        assert rpn._pre_nms_top_n == {"training": 300, "testing": 150}
        assert rpn._post_nms_top_n == {"training": 150, "testing": 100}
        assert heads.fg_bg_sampler.batch_size_per_image == 32
        assert heads.fg_bg_sampler.positive_fraction == 0.5  # half the sampled RoIs positive: the demo's recipe
        assert (transform.min_size, transform.max_size) == ((128,), 128)
        assert heads.score_thresh == 0.0  # vgg16 keeps every detection unless model.kwargs says otherwise
        assert model.backbone.out_channels == 64 and heads.box_head.fc6.out_features == 128
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}


def test_the_coco_demo_config_reaches_torchvisions_builder():
    cfg = load_config(DetRunConfig, "coco_synth_tiny", configs_dir=ROOT / "configs")
    model = build_detector(json.loads(json.dumps(cfg.model.architecture(6))))  # as a ticket stores it
    heads, rpn = model.roi_heads, model.rpn
    assert heads.fg_bg_sampler.positive_fraction == 0.5  # the demo's recipe, not torchvision's 0.25
    assert heads.fg_bg_sampler.batch_size_per_image == 32 and rpn.fg_bg_sampler.batch_size_per_image == 32
    assert (model.transform.min_size, model.transform.max_size) == ((128,), 128)
    assert heads.box_predictor.cls_score.out_features == 6


def test_vgg16_defaults_are_py_faster_rcnn_input_and_torchvision_sampling():
    model = build_vgg16_faster_rcnn(3, **ModelConfig(width=0.0625, head_dim=8).build_kwargs())
    assert (model.transform.min_size, model.transform.max_size) == ((600,), 1000)
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 256 and model.roi_heads.score_thresh == 0.0
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 512
    kept = ModelConfig(width=0.0625, head_dim=8, kwargs={"box_score_thresh": 0.05, "rpn_nms_thresh": 0.6})
    model = build_vgg16_faster_rcnn(3, **kept.build_kwargs())
    assert model.roi_heads.score_thresh == 0.05 and model.rpn.nms_thresh == 0.6


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"width": 0.5}, r"model\.kwargs\.width: is a setting of its own; write it as model\.width"),
    ({"anchor_sizes": [8]}, r"model\.kwargs\.anchor_sizes: is a setting of its own; write it as model\.anchor_sizes"),
    ({"num_classes": 3}, r"model\.kwargs\.num_classes: comes from the data's classes"),
    ({"rpn_batch_size": 32}, r"model\.kwargs\.rpn_batch_size: is not a keyword of torchvision's FasterRCNN; vgg16 "
                             r"takes .*rpn_batch_size_per_image"),
    ({"box_head": None}, r"model\.kwargs\.box_head: is not a keyword"),  # the builder makes the box head itself
])
def test_vgg16_kwargs_are_checked_when_the_config_is_read(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(DetRunConfig, {"model": {"kwargs": kwargs}})


@pytest.mark.parametrize("key", MOVED_TO_KWARGS)
def test_a_flattened_faster_rcnn_key_is_refused_by_name(key):
    with pytest.raises(ConfigError, match=rf"^model\.{key}: .*kwargs"):
        from_dict(DetRunConfig, {"model": {key: 1}})


def _old_ticket_architecture(model: ModelConfig) -> dict:
    """The architecture a ticket held before the FasterRCNN keywords moved into model.kwargs."""
    architecture = model.architecture(21)
    flattened = {"min_size": 600, "max_size": 1000, "rpn_batch_size_per_image": 256, "rpn_pre_nms_top_n_train": 2000,
                 "rpn_post_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 1000,
                 "box_batch_size_per_image": 512, "box_positive_fraction": 0.25, "box_score_thresh": 0.0,
                 "box_detections_per_img": 100}
    assert set(flattened) == set(MOVED_TO_KWARGS)
    return {**{k: v for k, v in architecture.items() if k != "kwargs"}, **flattened, **model.kwargs,
            "kwargs": {}}


def test_an_old_ticket_architecture_rebuilds_the_same_model():
    model = ModelConfig(width=0.0625, head_dim=16, roi_pool="pool", anchor_sizes=[16, 32],
                        kwargs={"min_size": 64, "max_size": 64, "rpn_batch_size_per_image": 32})
    old = json.loads(json.dumps(_old_ticket_architecture(model)))
    assert old["rpn_batch_size_per_image"] == 32 and "rpn_batch_size_per_image" not in old["kwargs"]
    assert current_architecture(old) == {**json.loads(json.dumps(model.architecture(21))),
                                         "kwargs": {**{k: old[k] for k in MOVED_TO_KWARGS}}}
    torch.manual_seed(0)
    expected = build_detector(model.architecture(21))
    torch.manual_seed(0)
    again = build_detector(old)
    assert again.rpn.fg_bg_sampler.batch_size_per_image == 32 and again.transform.min_size == (64,)
    state, expected_state = again.state_dict(), expected.state_dict()
    assert list(state) == list(expected_state)
    assert all(torch.equal(state[k], expected_state[k]) for k in state)


def test_an_old_torchvision_ticket_drops_the_flattened_keys_it_never_used():
    old = {**ModelConfig(arch="fasterrcnn_mobilenet_v3_large_320_fpn", kwargs={"min_size": 96}).architecture(3),
           "min_size": 600, "box_score_thresh": 0.0}
    assert current_architecture(old) == ModelConfig(arch="fasterrcnn_mobilenet_v3_large_320_fpn",
                                                    kwargs={"min_size": 96}).architecture(3)
