"""Classifier architectures by name, timm-style: the paper's Conv-3, CIFAR ResNet-18 and CIFAR MobileNetV2
(Table III), and any timm model. Nothing is downloaded; pretrained weights come from a local file only.

Every model carries `head_name`, the qualified name of its output layer: the layer the engine never prunes
and `replace_head` swaps. All three own models end in global average pooling, so their weights (and
tickets) fit any input size.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_core.io import load_checkpoint

INIT_SCHEMES = ("xavier", "kaiming", "default")
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor` without losing more than 10% (as MobileNetV2 does)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _check_width(width: float) -> None:
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")


class Conv3(nn.Module):
    """Conv-3 of the paper (Table III): three 3×3 conv layers (64/128/256), each followed by BN, ReLU and
    2×2 max-pool, then global average pooling and one linear output layer."""

    head_name = "fc"

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_chans: int = 3) -> None:
        super().__init__()
        _check_width(width)
        layers: list[nn.Module] = []
        channels = in_chans
        for base in (64, 128, 256):
            out = _scaled(base, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.fc.in_features, num_classes)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs) with a 1×1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.downsample = nn.Sequential(projection, nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class CifarResNet18(nn.Module):
    """ResNet-18 for 32×32 inputs: 3×3 stride-1 stem, no max-pool, four stages of two basic blocks
    (64/128/256/512), global average pooling, linear head. Parameter names follow torchvision's ResNet."""

    head_name = "fc"

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_chans: int = 3) -> None:
        super().__init__()
        _check_width(width)
        stem = _scaled(64, width)
        self.conv1 = nn.Conv2d(in_chans, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        channels = stem
        for index, (base, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            out = _scaled(base, width)
            blocks = nn.Sequential(BasicBlock(channels, out, stride), BasicBlock(out, out, 1))
            setattr(self, f"layer{index}", blocks)
            channels = out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.fc.in_features, num_classes)


def _conv_bn_relu6(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
                   ) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expansion, 3×3 depthwise, linear 1×1 projection; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, 1))
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for 32×32 inputs: stride-1 stem and stride-1 second stage (ImageNet's first two
    down-samplings removed), otherwise the original inverted-residual stages, 1×1 conv to 1280 channels,
    global average pooling, linear head. `width` scales every layer, the last conv included."""

    head_name = "classifier"
    # (expand ratio, output channels, blocks, stride of the first block)
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_chans: int = 3) -> None:
        super().__init__()
        _check_width(width)
        channels = _make_divisible(32 * width)
        layers: list[nn.Module] = [_conv_bn_relu6(in_chans, channels, 3)]
        for expand_ratio, base, blocks, stride in self.STAGES:
            out = _make_divisible(base * width)
            for block in range(blocks):
                layers.append(InvertedResidual(channels, out, stride if block == 0 else 1, expand_ratio))
                channels = out
        last = _make_divisible(1280 * width)
        layers.append(_conv_bn_relu6(channels, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)


_MODELS: dict[str, Callable[..., nn.Module]] = {
    "conv3": Conv3,
    "resnet18": CifarResNet18,
    "mobilenetv2": CifarMobileNetV2,
}


def list_models() -> list[str]:
    """Names of the architectures defined here; any other name is looked up in timm."""
    return sorted(_MODELS)


def initialise_weights(module: nn.Module, init: str = "xavier") -> None:
    """Initialise conv and linear weights (biases zero) and norm layers (weight 1, bias 0) of `module`.

    "xavier": Glorot uniform, the paper's choice; "kaiming": He normal (fan_out, ReLU); "default": leave the
    constructor's initialisation. Other parameters (e.g. a ViT's position embedding) keep theirs. Draws
    from torch's global RNG, so torch.manual_seed makes it reproducible.
    """
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INIT_SCHEMES)}")
    if init == "default":
        return
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if init == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORM_TYPES):
            if getattr(layer, "weight", None) is not None:
                nn.init.ones_(layer.weight)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)


def create_model(name: str, num_classes: int, *, init: str = "xavier", pretrained_path: str | os.PathLike[str]
                 | None = None, **kwargs: Any) -> nn.Module:
    """Build architecture `name` with `num_classes` outputs, initialised by `init`.

    "conv3", "resnet18" and "mobilenetv2" accept `width` (channel multiplier) and `in_chans`; any other name
    goes to `timm.create_model(name, pretrained=False, ...)` with `kwargs`. `pretrained_path` loads a local
    state dict on top (its head is skipped when the class count differs). The result has `head_name`.
    """
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INIT_SCHEMES)}")
    if kwargs.pop("pretrained", False):
        raise ValueError("pretrained weights are never downloaded; pass pretrained_path=<local weights file>")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    if name in _MODELS:
        builder = _MODELS[name]
        accepted = set(inspect.signature(builder).parameters) - {"num_classes"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(f"model {name!r} does not take {unknown}; it accepts {sorted(accepted)}")
        model = builder(num_classes=num_classes, **kwargs)
    else:
        model = _create_timm_model(name, num_classes, kwargs)
    initialise_weights(model, init)
    model.init_scheme = init
    if pretrained_path is not None:
        load_pretrained(model, pretrained_path)
    return model


def _create_timm_model(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    import timm  # imported on demand: it is slow to import and only needed for these names

    if "width" in kwargs:
        raise ValueError(f"width applies to {', '.join(list_models())} only; for timm pick a smaller variant")
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: neither one of {', '.join(list_models())} nor a timm "
                         "model (timm.list_models() lists those)")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    model.head_name = _timm_head_name(model, name)
    return model


def _timm_head_name(model: nn.Module, name: str) -> str:
    """The output layer's qualified name: the pretrained config's "classifier", else get_classifier()'s."""
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    declared = config.get("classifier")
    if isinstance(declared, (list, tuple)):
        raise ValueError(f"timm model {name!r} has several output layers {list(declared)}; use one with a "
                         "single output layer")
    modules = dict(model.named_modules())
    if isinstance(declared, str) and isinstance(getattr(modules.get(declared), "weight", None), torch.Tensor):
        return declared
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    for module_name, module in modules.items():
        if module is classifier and module_name and isinstance(getattr(module, "weight", None), torch.Tensor):
            return module_name
    raise ValueError(f"cannot find the output layer of timm model {name!r}")


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local state dict (.pth/.pt, optionally under "model"/"state_dict", or .safetensors) into
    `model`; an output layer of another class count is skipped and keeps its fresh initialisation."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} does not exist; pass a local .pth, .pt or "
                                ".safetensors file (nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = load_checkpoint(path)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    own = model.state_dict()
    head_prefix = model.head_name + "."
    state = {key: value for key, value in state.items()
             if not (key.startswith(head_prefix) and key in own and value.shape != own[key].shape)}
    mismatched = [f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}" for key, value in state.items()
                  if key in own and value.shape != own[key].shape]
    missing = [key for key in own if key not in state and not key.startswith(head_prefix)]
    unexpected = [key for key in state if key not in own]
    if mismatched or missing or unexpected:
        raise ValueError(f"{path} does not fit this model: shape mismatches {mismatched[:3]}, missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]} (of {len(mismatched)}/{len(missing)}/"
                         f"{len(unexpected)}); pass weights saved from the same architecture")
    model.load_state_dict(state, strict=False)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Install a freshly initialised output layer with `num_classes` outputs (same init scheme as the model,
    same device and dtype as the old head); returns the same model."""
    old = model.get_submodule(model.head_name)
    device, dtype = old.weight.device, old.weight.dtype
    model.reset_classifier(num_classes)
    head = model.get_submodule(model.head_name)
    initialise_weights(head, getattr(model, "init_scheme", "xavier"))
    head.to(device=device, dtype=dtype)
    return model


def describe_architecture(model_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able description of a model (name, create_model keyword arguments, library) for ticket files."""
    description: dict[str, Any] = {"name": model_name,
                                   "kwargs": {key: str(value) if isinstance(value, os.PathLike) else value
                                              for key, value in kwargs.items()}}
    if model_name in _MODELS:
        description["library"] = "colt_cls"
    else:
        import timm

        description["library"] = "timm"
        description["timm_version"] = timm.__version__
    try:
        return json.loads(json.dumps(description))
    except TypeError as exc:
        raise ValueError(f"model kwargs of {model_name!r} must be JSON values: {exc}") from exc


def create_model_from_description(description: dict[str, Any], **overrides: Any) -> nn.Module:
    """Rebuild the model a `describe_architecture` dict describes; `overrides` replace its kwargs."""
    kwargs = {**description["kwargs"], **overrides}
    if "num_classes" not in kwargs:
        raise ValueError("the description has no num_classes; pass num_classes=...")
    return create_model(description["name"], **kwargs)


def prune_group_rules(model: nn.Module) -> dict[str, Any]:
    """The prune groups of `model` as data for `colt_core.prune.magnitude.resolve_prune_groups`.

    "groups": {"conv": conv weights (conv rate), "fc": hidden linear weights (FC rate)}, each a spec whose
    `types` lists the exact module class names the engine matches: nn.Conv2d / nn.Linear and every subclass
    of them present in `model` (e.g. timm's Conv2dSame). "output_layers": [head_name], never pruned. Biases
    and norm layers are in no group.
    """

    def class_names(base: type[nn.Module]) -> list[str]:
        found = {type(module).__name__ for module in model.modules() if isinstance(module, base)}
        return sorted(found | {base.__name__})

    return {
        "groups": {"conv": {"types": class_names(nn.Conv2d)}, "fc": {"types": class_names(nn.Linear)}},
        "output_layers": [model.head_name],
    }
