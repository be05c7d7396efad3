"""Slim exports of classifiers: torchvision's ResNet-18 (residual sums) and MobileNetV2 (depthwise convolutions)
cut to the channels of a channel mask compute what the masked models compute, and load back by one call."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from colt_cls.export import classifier_export_target
from colt_cls.models import create_model, describe_architecture
from colt_core.export import SlimTrace, l1_channel_mask, load_slim, save_slim, slim_model
from colt_core.export.slim import relative_difference
from colt_core.prune.masks import masked_copy

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def randomised_norms(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, low in ((m.running_mean, -0.5), (m.running_var, 0.5), (m.weight, 0.5), (m.bias, -0.5)):
                    t.copy_(torch.rand(t.shape, generator=gen) + low)
    return model.eval()


def channel_ticket(model: nn.Module, trace: SlimTrace, head: str) -> tuple[nn.Module, dict]:
    mask = l1_channel_mask(model, trace, 0.5, skip=(head,))
    return masked_copy(model, mask).eval(), mask


def test_resnet18_keeps_one_channel_set_per_residual_stream_and_computes_what_the_masked_model_does():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()  # θ0: norm layers at their initial statistics
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    trace = SlimTrace((x[:1],))
    masked, mask = channel_ticket(model, trace, "fc")
    result = slim_model(copy.deepcopy(masked), mask, trace)
    kept = result.kept
    # The stem and both blocks of layer1 add into one stream; layer2's projection and its blocks into another.
    assert kept["conv1"] == kept["layer1.0.conv2"] == kept["layer1.1.conv2"] and len(kept["conv1"]) == 32
    assert kept["layer2.0.downsample.0"] == kept["layer2.0.conv2"] == kept["layer2.1.conv2"]
    slim = result.model
    assert slim.fc.in_features == 256 and slim.layer1[0].conv1.in_channels == 32
    # Half the channels of every layer: about a quarter of the conv weights, the head's inputs halved.
    assert 0.24 < result.parameters_after / result.parameters_before < 0.27
    with torch.no_grad():
        assert relative_difference([slim(x)], [masked(x)]) < 1e-5


def test_mobilenetv2_cuts_depthwise_convolutions_with_their_inputs_exactly_even_with_trained_norms():
    torch.manual_seed(0)
    model = randomised_norms(create_model("mobilenetv2", 10, width=0.5))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    trace = SlimTrace((x[:1],))
    masked, mask = channel_ticket(model, trace, "classifier")
    slim = slim_model(copy.deepcopy(masked), mask, trace).model
    block = slim.features[2].conv  # expansion 1×1, depthwise 3×3, projection 1×1
    expansion, depthwise = block[0][0], block[1][0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == expansion.out_channels
    assert expansion.out_channels == masked.features[2].conv[0][0].out_channels // 2
    # Removed channels output constants here; every layer reading them is 1×1, so the fold is exact.
    with torch.no_grad():
        assert relative_difference([slim(x)], [masked(x)]) < 1e-5


def test_load_slim_rebuilds_the_classifier_through_its_task(tmp_path):
    torch.manual_seed(0)
    architecture = {**describe_architecture("resnet18", {"width": 0.25}), "task": "classification",
                    "head": "fc", "num_classes": 4}
    target = classifier_export_target(architecture)
    masked, mask = channel_ticket(target.model, target.slim, "fc")
    result = slim_model(copy.deepcopy(masked), mask, target.slim)
    save_slim(tmp_path / "slim.pt", architecture, result)
    loaded = load_slim(tmp_path / "slim.pt")
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in result.model.state_dict().items())
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_difference([loaded(x)], [masked(x)]) < 1e-5
