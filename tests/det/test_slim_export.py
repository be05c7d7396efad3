"""Slim exports of the VGG16 Faster R-CNN: the whole detector with only a channel ticket's kept channels (the RPN
head and fc6 shrinking with the last backbone features) detects what the masked detector detects, and `colt
export` writes it beside the other files."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from colt_core.commands.export import export_command
from colt_core.config import to_dict
from colt_core.export import l1_channel_mask, load_slim, read_slim, slim_model
from colt_core.io import atomic_save, atomic_write_text, read_json
from colt_core.prune.masks import masked_copy
from colt_core.prune.weights import snapshot
from colt_det.config import DetRunConfig, ModelConfig
from colt_det.export import architecture_from_config, build_detector, detector_trace, match_detections

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
SIDE = 96
OUTPUT_LAYERS = ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor.cls_score",
                 "roi_heads.box_predictor.bbox_pred")


def tiny_config() -> dict:
    model = ModelConfig(width=0.125, head_dim=32, kwargs={"min_size": SIDE, "max_size": SIDE})
    return to_dict(DetRunConfig(model=model))


def detections(model, image: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.eval()([image])[0].items()}


def assert_same_detections(got: dict, expected: dict) -> None:
    check = match_detections(got, expected, box_atol=1e-3, score_atol=1e-5)
    assert check["detections"] > 0 and check["unmatched"] == 0, check


def test_the_slim_detector_detects_what_the_masked_detector_detects():
    torch.manual_seed(0)
    model = build_detector(architecture_from_config(tiny_config())).eval()
    trace = detector_trace()
    mask = l1_channel_mask(model, trace, 0.5, skip=OUTPUT_LAYERS)
    masked = masked_copy(model, mask)
    result = slim_model(copy.deepcopy(masked), mask, trace)
    slim = result.model
    last = len(result.kept["backbone.body.28"])
    assert last == 32 and slim.backbone.body[28].out_channels == 32
    assert slim.rpn.head.conv[0][0].in_channels == last
    assert slim.roi_heads.box_head.fc6.in_features == last * 7 * 7  # channel c's 49 columns go with it
    assert slim.roi_heads.box_predictor.cls_score.out_features == 21  # output layers keep their outputs
    assert result.parameters_after < 0.4 * result.parameters_before
    image = torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    assert_same_detections(detections(slim, image), detections(masked, image))
    with torch.no_grad():
        features = slim.backbone(image[None])
        expected = masked.backbone(image[None])[:, result.kept["backbone.body.28"]]
    assert torch.allclose(features, expected, rtol=1e-5, atol=1e-6)


def hand_made_run(root: Path, channel: bool) -> tuple[Path, dict]:
    """An unfinished detection run with one round, whose mask is a channel mask (or a weight-level one)."""
    config = tiny_config()
    torch.manual_seed(0)
    model = build_detector(architecture_from_config(config))
    run = root / "run"
    atomic_write_text(yaml.safe_dump(config, sort_keys=False), run / "config.yaml")
    atomic_save(snapshot(model), run / "init.pt")
    mask = l1_channel_mask(model, detector_trace(), 0.5, skip=OUTPUT_LAYERS)
    if not channel:
        mask["backbone.body.0.weight"][0, 0, 0, 0] = ~mask["backbone.body.0.weight"][0, 0, 0, 0]
    atomic_save(mask, run / "round_00" / "mask.pt")
    return run, mask


def test_colt_export_of_a_channel_ticket_writes_the_slim_detector_and_its_onnx(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run, _ = hand_made_run(tmp_path, channel=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(export_command, [str(run), "--out", str(out), "--round", "0", "--onnx"])
    assert result.exit_code == 0, result.output
    assert "slim.pt" in result.output and "colt_core.export.load_slim reads it as a model" in result.output
    assert "slim.onnx (onnxruntime:" in result.output and (out / "slim.onnx").stat().st_size > 0
    manifest = read_json(out / "export.json")
    assert manifest["files"]["slim"] == "slim.pt" and manifest["slim"]["relative_difference"] < 1e-5
    assert manifest["slim"]["parameters_slim"] < 0.4 * manifest["slim"]["parameters_full"]
    assert read_slim(out / "slim.pt")["architecture"]["name"] == "fasterrcnn_vgg16"

    slim = load_slim(out / "slim.pt")  # the one call: rebuilt, cut, loaded
    masked = build_detector(architecture_from_config(tiny_config()))
    masked.load_state_dict(torch.load(out / "detector.pth", weights_only=True))
    image = torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    assert_same_detections(detections(slim, image), detections(masked, image))


def test_a_weight_level_mask_gets_no_slim_file_and_forcing_one_is_one_error_line(tmp_path):
    run, _ = hand_made_run(tmp_path, channel=False)
    plain = CliRunner().invoke(export_command, [str(run), "--out", str(tmp_path / "plain"), "--round", "0"])
    assert plain.exit_code == 0, plain.output
    assert not (tmp_path / "plain" / "slim.pt").exists() and "slim" not in read_json(tmp_path / "plain" / "export.json")
    forced = CliRunner().invoke(export_command, [str(run), "--out", str(tmp_path / "forced"), "--round", "0",
                                                 "--slim"])
    assert forced.exit_code == 1
    lines = forced.output.strip().splitlines()
    assert lines[-1].startswith("Error: not a channel mask: 1 of the 8 filters of backbone.body.0.weight are "
                                "partly pruned") and "Traceback" not in forced.output
