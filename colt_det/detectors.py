"""torchvision's box detectors by builder name: how each family is built, which of its layers are outputs,
and how its backbone maps onto a torchvision classification model.

Every family is built by torchvision's own builder (`torchvision.models.get_model`); nothing is
re-implemented. A family lists its output layers once: the class-specific ones (`class_outputs`, rebuilt for
each partition's label set and never pruned) and the class-agnostic box/objectness outputs (`fixed_outputs`,
never pruned, rewound like the rest). Every other convolution (backbone, FPN or extra layers, head towers,
the RPN's 3x3 conv, a conv box head) is pruned at the conv rate and every other linear layer (the two-layer
box head) at the FC rate; norm layers (FrozenBatchNorm2d included), biases and the weights torchvision
freezes (`trainable_backbone_layers`) never are, unless `prune.prune_frozen` asks for the last.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models._api import WeightsEnum

from colt_core.config import ConfigError


@dataclass(frozen=True)
class DetectorFamily:
    """One torchvision detector builder and what the engine needs to know of the models it builds."""

    name: str  # the builder's name in torchvision.models.detection
    class_outputs: tuple[str, ...]  # module names (regexes, anchored) whose size depends on the classes
    fixed_outputs: tuple[str, ...]  # class-agnostic output layers (regexes): never pruned
    backbone: str | None = None  # torchvision classification model the backbone body maps onto
    backbone_part: str = ""  # the submodule of that model whose keys the body has ("" the model, "features")
    backbone_prefix: str = "backbone.body."  # where that body sits in the detector's state_dict

    @property
    def backbone_target(self) -> str:
        """What the exported backbone loads into, e.g. `torchvision.models.resnet50()`."""
        return f"torchvision.models.{self.backbone}(){'.' + self.backbone_part if self.backbone_part else ''}"

    def class_output_layers(self, model: nn.Module) -> list[str]:
        """The concrete class-output module names of a built model."""
        return _matching(model, self.class_outputs)

    def fixed_output_layers(self, model: nn.Module) -> list[str]:
        return _matching(model, self.fixed_outputs)


def _matching(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    compiled = [re.compile(p) for p in patterns]
    return [n for n, m in model.named_modules() if n and any(c.fullmatch(n) for c in compiled)
            and any(True for _ in m.parameters())]


_FASTER_RCNN = dict(class_outputs=(r"roi_heads\.box_predictor",), fixed_outputs=(r"rpn\.head\.(cls_logits|bbox_pred)",))
_ONE_STAGE = dict(class_outputs=(r"head\.classification_head\.cls_logits",),
                  fixed_outputs=(r"head\.regression_head\.(bbox_reg|bbox_ctrness)",))
_RESNET50 = dict(backbone="resnet50")
_MOBILENET = dict(backbone="mobilenet_v3_large", backbone_part="features")

# The paper's Faster R-CNN VGG16 (colt_det.model builds it): its backbone is torchvision's vgg16().features.
VGG16 = DetectorFamily("vgg16", **_FASTER_RCNN, backbone="vgg16", backbone_part="features")

FAMILIES: dict[str, DetectorFamily] = {f.name: f for f in (
    DetectorFamily("fasterrcnn_resnet50_fpn", **_FASTER_RCNN, **_RESNET50),
    DetectorFamily("fasterrcnn_resnet50_fpn_v2", **_FASTER_RCNN, **_RESNET50),
    DetectorFamily("fasterrcnn_mobilenet_v3_large_fpn", **_FASTER_RCNN, **_MOBILENET),
    DetectorFamily("fasterrcnn_mobilenet_v3_large_320_fpn", **_FASTER_RCNN, **_MOBILENET),
    DetectorFamily("retinanet_resnet50_fpn", **_ONE_STAGE, **_RESNET50),
    DetectorFamily("retinanet_resnet50_fpn_v2", **_ONE_STAGE, **_RESNET50),
    DetectorFamily("fcos_resnet50_fpn", **_ONE_STAGE, **_RESNET50),
    # SSD's per-level prediction convs are its outputs; VGG16's conv1_1..conv5_3 sit under backbone.features.
    DetectorFamily("ssd300_vgg16", class_outputs=(r"head\.classification_head\.module_list\.\d+",),
                   fixed_outputs=(r"head\.regression_head\.module_list\.\d+",), backbone="vgg16",
                   backbone_part="features", backbone_prefix="backbone.features."),
    # SSDlite's prediction blocks: a depthwise 3x3 (hidden, pruned) then the 1x1 output conv.
    DetectorFamily("ssdlite320_mobilenet_v3_large", class_outputs=(r"head\.classification_head\.module_list\.\d+\.1",),
                   fixed_outputs=(r"head\.regression_head\.module_list\.\d+\.1",)),
)}


def family(arch: str) -> DetectorFamily:
    """The family of `model.arch` (vgg16 or a torchvision builder name), or one clear error listing them."""
    if arch == VGG16.name:
        return VGG16
    if arch not in FAMILIES:
        raise ConfigError(f"model.arch: {arch!r} is not a supported detector; choose vgg16 or one of "
                          f"{', '.join(sorted(FAMILIES))}")
    return FAMILIES[arch]


def builder_parameters(arch: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(torchvision.models.get_model_builder(arch)).parameters)


def default_backbone_weights(arch: str) -> WeightsEnum | None:
    """The ImageNet backbone `model.pretrained_backbone: imagenet` means: the builder's own default
    `weights_backbone`, or, for builders whose default is none (the v2 ones), the ImageNet weights of
    their backbone model."""
    default = builder_parameters(arch)["weights_backbone"].default
    if default is not None:
        return default
    backbone = FAMILIES[arch].backbone
    return torchvision.models.get_model_weights(backbone).DEFAULT if backbone else None


def coco_weights(arch: str) -> WeightsEnum:
    """torchvision's COCO-trained weights of the whole detector (the enum's DEFAULT)."""
    return torchvision.models.get_model_weights(arch).DEFAULT


def build(arch: str, num_classes: int, *, weights_backbone: WeightsEnum | None = None,
          coco: WeightsEnum | None = None, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build `arch` for `num_classes` (background included) with torchvision's builder.

    `weights_backbone` loads an ImageNet backbone (torchvision then freezes `trainable_backbone_layers`);
    `coco` loads the COCO-trained detector and replaces its class-specific output layers with fresh ones
    for `num_classes` (their torchvision initialisation). Weights must already be in torch.hub's cache or
    downloadable: `colt_det.pretrained` checks that first.
    """
    fam = family(arch)
    kwargs = dict(kwargs or {})
    reserved = sorted(set(kwargs) & {"weights", "weights_backbone", "num_classes", "progress"})
    if reserved:
        raise ConfigError(f"model.kwargs: {reserved} are set by model.pretrained / model.pretrained_backbone and "
                          "the data's classes; leave them out of model.kwargs")
    try:
        if coco is None:
            return torchvision.models.get_model(arch, weights=None, weights_backbone=weights_backbone,
                                                 num_classes=num_classes, **kwargs)
        model = torchvision.models.get_model(arch, weights=coco, weights_backbone=None, **kwargs)
        fresh = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=num_classes,
                                             **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model.kwargs: {arch} does not take them ({exc})") from None
    _graft_class_outputs(model, fresh, fam)
    return model


def _graft_class_outputs(model: nn.Module, fresh: nn.Module, fam: DetectorFamily) -> None:
    """Put `fresh`'s class-specific output layers (and its class counts) into the COCO-trained `model`."""
    for name in fam.class_output_layers(fresh):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, leaf, fresh.get_submodule(name)) if not leaf.isdigit() else parent.__setitem__(
            int(leaf), fresh.get_submodule(name))
        # Heads keep their class count for reshaping their outputs (RetinaNet/FCOS num_classes, SSD num_columns).
        while parent_name:
            for attr in ("num_classes", "num_columns"):
                if isinstance(getattr(model.get_submodule(parent_name), attr, None), int):
                    setattr(model.get_submodule(parent_name), attr, getattr(fresh.get_submodule(parent_name), attr))
            parent_name = parent_name.rpartition(".")[0]


def prune_group_specs(model: nn.Module, fam: DetectorFamily) -> dict[str, dict[str, list[str]]]:
    """Prune groups in `colt_core.prune.magnitude.resolve_prune_groups`' spec format: every conv (a Conv2d weight)
    and every linear layer, less the family's fixed outputs (the class outputs are the engine's output
    layers, left out by it)."""
    fixed = [rf"^{re.escape(n)}\.weight$" for n in fam.fixed_output_layers(model)]
    return {"conv": {"types": ["Conv2d"], "exclude": fixed}, "fc": {"types": ["Linear"], "exclude": fixed}}


def backbone_key(fam: DetectorFamily, name: str) -> str | None:
    """A detector state_dict key under the keys of `fam.backbone_target`; None outside the backbone body."""
    if fam.backbone is None or not name.startswith(fam.backbone_prefix):
        return None
    return name[len(fam.backbone_prefix):]


def with_batch_counters(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` plus the `num_batches_tracked` counters `model` has and `state` lacks: norm layers torchvision
    froze (FrozenBatchNorm2d, in a pretrained backbone) have none, the same layers built from scratch do."""
    out = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = value.detach().clone()
    return out
