"""The model registry: Table III parameter counts, output layers, init, heads, timm models, prune groups."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from colt_cls.models import (
    create_model,
    create_model_from_description,
    describe_architecture,
    list_models,
    prune_group_rules,
    replace_head,
)
from colt_core.prune.magnitude import resolve_prune_groups

OWN_MODELS = ("conv3", "resnet18", "mobilenetv2")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# Paper Table III ("Weights" row) and Section IV-A:
#   Conv-3:      All 397K, Conv 371K. Conv = 3·3·(3·64 + 64·128 + 128·256) = 370,368; All matches with
#                the 100-class head of CIFAR-100 (256·100 + 100) plus BN: 396,964. Text: "about 0.37M".
#   MobileNetV2: All 2.3M, Conv 2.2M (text: "about 2.2M"), 10 classes: 2,236,682 all, 2,189,760 conv.
#   ResNet-18:   All 11M (text: "about 11.1M"), 10 classes: 11,173,962.
TABLE_III = [
    ("conv3", 100, 397_000, 371_000),
    ("conv3", 10, 370_000, 371_000),
    ("mobilenetv2", 10, 2_300_000, 2_200_000),
    ("resnet18", 10, 11_000_000, None),
    ("resnet18", 10, 11_100_000, None),
]


@pytest.mark.parametrize(("name", "num_classes", "paper_all", "paper_conv"), TABLE_III)
def test_parameter_counts_match_table_iii_within_five_percent(name: str, num_classes: int, paper_all: int,
                                                               paper_conv: int | None) -> None:
    model = create_model(name, num_classes)
    assert abs(parameter_count(model) / paper_all - 1) <= 0.05
    if paper_conv is not None:
        assert abs(conv_weight_count(model) / paper_conv - 1) <= 0.05


def test_exact_parameter_counts_of_the_reference_architectures() -> None:
    # Guards the architectures themselves: Conv-3 as in the table, the CIFAR ResNet-18 and MobileNetV2 as in
    # common CIFAR code bases (the MobileNetV2 count equals torchvision's mobilenet_v2(num_classes=10)).
    assert parameter_count(create_model("conv3", 100)) == 396_964
    assert conv_weight_count(create_model("conv3", 100)) == 370_368
    assert parameter_count(create_model("resnet18", 10)) == 11_173_962
    assert parameter_count(create_model("mobilenetv2", 10)) == 2_236_682


@pytest.mark.parametrize("name", OWN_MODELS)
def test_cifar_models_keep_resolution_early_and_pool_globally(name: str) -> None:
    model = create_model(name, 7, width=0.25).eval()
    for size in (32, 40, 64):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    if name != "conv3":
        # CIFAR stems: the first layer keeps 32×32 (no stride-2 stem, no max-pool).
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first.kernel_size == (3, 3) and first.stride == (1, 1)
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_width_multiplier_makes_tiny_variants() -> None:
    tiny = create_model("conv3", 10, width=0.25)
    assert [m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)] == [16, 32, 64]
    for name in OWN_MODELS:
        full, tiny = create_model(name, 10), create_model(name, 10, width=0.25)
        assert parameter_count(tiny) < parameter_count(full) / 10
    with pytest.raises(ValueError, match="width must be positive"):
        create_model("conv3", 10, width=0)


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(("name", "expected_head"), [("conv3", "fc"), ("resnet18", "fc"),
                                                     ("mobilenetv2", "classifier"), ("resnet10t", "fc"),
                                                     ("regnetx_002", "head.fc")])
def test_head_name_names_the_output_layer(name: str, expected_head: str) -> None:
    kwargs = {"width": 0.25} if name in OWN_MODELS else {}
    model = create_model(name, 9, **kwargs)
    assert model.head_name == expected_head
    head = model.get_submodule(model.head_name)
    assert head is model.get_classifier()
    assert model.state_dict()[f"{model.head_name}.weight"].shape[0] == 9
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 9)


def _xavier_bound(weight: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return math.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize("name", OWN_MODELS)
def test_xavier_init_is_deterministic_under_the_torch_seed(name: str) -> None:
    torch.manual_seed(3)
    first = create_model(name, 10, width=0.5).state_dict()
    torch.manual_seed(3)
    second = create_model(name, 10, width=0.5).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    torch.manual_seed(3)
    model = create_model(name, 10, width=0.5)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = _xavier_bound(module.weight)
            assert module.weight.abs().max() <= bound
            if module.weight.numel() >= 1000:  # uniform on [-b, b] has std b/√3
                assert module.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
            assert module.bias is None or not module.bias.any()
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and not module.bias.any()


def test_init_schemes_differ_and_unknown_is_refused() -> None:
    torch.manual_seed(0)
    xavier = create_model("conv3", 10, width=0.25).features[0].weight
    torch.manual_seed(0)
    default = create_model("conv3", 10, width=0.25, init="default").features[0].weight
    assert not torch.equal(xavier, default)
    with pytest.raises(ValueError, match="unknown init 'glorot'"):
        create_model("conv3", 10, init="glorot")


@pytest.mark.parametrize("name", [*OWN_MODELS, "resnet10t"])
def test_replace_head_installs_a_fresh_head_and_keeps_everything_else(name: str) -> None:
    kwargs = {"width": 0.25} if name in OWN_MODELS else {}
    model = create_model(name, 4, **kwargs)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    old_head = model.get_submodule(model.head_name)
    assert replace_head(model, 11) is model
    head = model.get_submodule(model.head_name)
    assert head is not old_head and head.weight.shape == (11, old_head.in_features)
    assert head.weight.abs().max() <= _xavier_bound(head.weight) and not head.bias.any()
    assert model.num_classes == 11
    after = model.state_dict()
    for key, value in before.items():
        if not key.startswith(model.head_name + "."):
            assert torch.equal(after[key], value), key
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 11)


def test_replace_head_keeps_the_head_on_the_model_dtype() -> None:
    model = create_model("conv3", 4, width=0.25).to(torch.float64)
    replace_head(model, 6)
    assert model.fc.weight.dtype == torch.float64
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).shape == (1, 6)


@pytest.mark.usefixtures("offline")
def test_timm_models_build_offline_and_refuse_downloads() -> None:
    model = create_model("resnet10t", 5, drop_rate=0.1)
    assert model.head_name == "fc" and model.fc.out_features == 5
    stem = model.get_submodule("conv1.0").weight
    assert stem.abs().max() <= _xavier_bound(stem)
    with pytest.raises(ValueError, match="never downloaded; pass pretrained_path"):
        create_model("resnet10t", 5, pretrained=True)
    with pytest.raises(ValueError, match="width applies to conv3, mobilenetv2, resnet18 only"):
        create_model("resnet10t", 5, width=0.5)
    with pytest.raises(ValueError, match="unknown model 'no_such_net'"):
        create_model("no_such_net", 5)


def test_own_models_name_the_keywords_they_accept() -> None:
    with pytest.raises(ValueError, match=r"does not take \['depth'\]; it accepts \['in_chans', 'width'\]"):
        create_model("resnet18", 10, depth=34)
    assert list_models() == ["conv3", "mobilenetv2", "resnet18"]
    assert create_model("conv3", 3, width=0.25, in_chans=1)(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_pretrained_path_loads_local_weights_and_skips_a_head_of_another_size(tmp_path: Path) -> None:
    source = create_model("resnet18", 10, width=0.25)
    path = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, path)
    same = create_model("resnet18", 10, width=0.25, pretrained_path=path)
    assert all(torch.equal(value, same.state_dict()[key]) for key, value in source.state_dict().items())
    other = create_model("resnet18", 3, width=0.25, pretrained_path=str(path))
    assert other.fc.weight.shape == (3, source.fc.in_features)
    assert torch.equal(other.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match="does not fit this model"):
        create_model("resnet18", 10, width=0.5, pretrained_path=path)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        create_model("resnet18", 10, pretrained_path=tmp_path / "absent.pth")


def test_description_is_json_and_rebuilds_the_same_model(tmp_path: Path) -> None:
    kwargs = {"num_classes": 5, "width": 0.25}
    description = describe_architecture("mobilenetv2", kwargs)
    assert json.loads(json.dumps(description)) == description
    assert description == {"name": "mobilenetv2", "kwargs": kwargs, "library": "colt_cls"}
    torch.manual_seed(1)
    original = create_model("mobilenetv2", **kwargs)
    torch.manual_seed(1)
    rebuilt = create_model_from_description(description)
    assert all(torch.equal(value, rebuilt.state_dict()[key]) for key, value in original.state_dict().items())
    assert create_model_from_description(description, num_classes=2).classifier.out_features == 2
    timm_description = describe_architecture("resnet10t", {"num_classes": 3, "pretrained_path": tmp_path})
    assert timm_description["library"] == "timm" and "timm_version" in timm_description
    assert timm_description["kwargs"]["pretrained_path"] == str(tmp_path)
    with pytest.raises(ValueError, match="JSON"):
        describe_architecture("conv3", {"width": object()})


def test_prune_groups_resolve_in_the_engine_to_conv_and_hidden_linear_weights_only() -> None:
    rates = {"conv": 0.15, "fc": 0.2}
    for name in OWN_MODELS:
        model = create_model(name, 10, width=0.25)
        rules = prune_group_rules(model)
        assert rules["output_layers"] == [model.head_name]
        groups = {g.name: g for g in resolve_prune_groups(model, rules["groups"], rates,
                                                          rules["output_layers"])}
        conv_weights = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        assert sorted(groups["conv"].params) == sorted(conv_weights)
        assert groups["fc"].params == ()  # the only linear layer is the head
    # A timm model with hidden linear layers (attention and MLP of a one-block ViT) puts them in the FC
    # group and leaves its head out.
    model = create_model("vit_tiny_patch16_224", 10, img_size=32, patch_size=8, depth=1, embed_dim=16,
                         num_heads=2)
    rules = prune_group_rules(model)
    assert rules["output_layers"] == ["head"]
    groups = {g.name: g for g in resolve_prune_groups(model, rules["groups"], rates, rules["output_layers"])}
    assert sorted(groups["fc"].params) == ["blocks.0.attn.proj.weight", "blocks.0.attn.qkv.weight",
                                           "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"]
    assert groups["conv"].params == ("patch_embed.proj.weight",)
