"""Faster R-CNN with a VGG16 backbone (conv1_1 … conv5_3, stride 16) and the VGG fc6/fc7 box head.

Parameter layout (what masks, ticket files and the backbone exporter rely on):

- ``backbone.body.N.weight`` / ``.bias``: an ``nn.Sequential`` laid out exactly like
  ``torchvision.models.vgg16().features[:30]`` (13 convs at indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21,
  24, 26, 28; no fifth max-pool). At ``width=1.0`` the ``backbone.body.`` entries, without that prefix,
  load into ``torchvision.models.vgg16().features`` with ``strict=True``. With ``norm="batch"`` the layout is
  ``vgg16_bn().features[:43]`` (conv, BatchNorm, ReLU); ``norm="group"`` puts GroupNorm at the same places.
- ``rpn.head.conv.0.0.weight``: the RPN's 3x3 conv; ``rpn.head.cls_logits`` / ``.bbox_pred``: its 1x1
  objectness and box outputs (never pruned).
- ``roi_heads.box_head.fc6.weight``, ``roi_heads.box_head.fc7.weight``: VGG's fc6/fc7.
- ``roi_heads.box_predictor.cls_score`` / ``.bbox_pred``: the output layer (never pruned).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, RoIPool

BACKBONE_PREFIX = "backbone.body."
# VGG16 configuration "D" without the last max-pool: numbers are conv output channels, "M" a 2x2 pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_MIN_CHANNELS = 4
_BACKBONE_STRIDE = 16
_ROI_OUTPUT_SIZE = 7
ROI_POOL_KINDS = ("align", "pool")
INIT_KINDS = ("xavier", "torchvision")
NORM_KINDS = ("none", "batch", "group")
_GROUP_NORM_GROUPS = 32  # Wu & He (2018); narrow layers get fewer, so every group has at least 2 channels


def scaled_channels(channels: int, width: float) -> int:
    """Channel count of a VGG layer at a width multiplier (rounded, at least 4)."""
    return max(_MIN_CHANNELS, round(channels * width))


def group_norm_groups(channels: int) -> int:
    """GroupNorm groups for a layer: 32, halved until every group holds at least 2 channels (and divides)."""
    groups = math.gcd(_GROUP_NORM_GROUPS, channels)
    while groups > 1 and channels // groups < 2:
        groups //= 2
    return groups


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(group_norm_groups(channels), channels)


class VGG16Backbone(nn.Module):
    """VGG16 conv1_1 … conv5_3 as ``body`` (torchvision's ``vgg16().features[:30]`` layout), stride 16.

    ``norm="batch"`` gives ``vgg16_bn().features[:43]``; ``norm="group"`` the same with GroupNorm, which
    is what lets a detector train from scratch at small batch sizes (Wu & He 2018; He et al. 2019).
    """

    def __init__(self, width: float = 1.0, norm: str = "none") -> None:
        super().__init__()
        if norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {norm!r}")
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = scaled_channels(int(item), width)
                layers.append(nn.Conv2d(in_channels, out, kernel_size=3, padding=1))
                if norm != "none":
                    layers.append(_norm_layer(norm, out))
                layers.append(nn.ReLU(inplace=True))
                in_channels = out
        self.body = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class VGGBoxHead(nn.Module):
    """VGG's fc6/fc7 on pooled RoI features: flatten -> fc6 -> ReLU -> Dropout -> fc7 -> ReLU -> Dropout."""

    def __init__(self, in_features: int, head_dim: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, head_dim)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(head_dim, head_dim)
        self.drop7 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop6(torch.relu(self.fc6(x.flatten(start_dim=1))))
        return self.drop7(torch.relu(self.fc7(x)))


class SingleLevelRoIPool(nn.Module):
    """Classic Fast R-CNN RoI max pooling with MultiScaleRoIAlign's call signature (one feature map).

    Under autocast it pools in float32 and returns the features' dtype, as torchvision's CUDA autocast runs
    RoIPool (and its CPU and CUDA autocast RoIAlign): its CPU RoIPool has no bfloat16 or float16 kernel.
    """

    def __init__(
        self,
        featmap_name: str = "0",
        output_size: int = _ROI_OUTPUT_SIZE,
        spatial_scale: float = 1.0 / _BACKBONE_STRIDE,
    ) -> None:
        super().__init__()
        self.featmap_name = featmap_name
        self.pool = RoIPool(output_size=(output_size, output_size), spatial_scale=spatial_scale)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        # image_shapes is unused: the stride is fixed at 16 and inputs are padded to a multiple of 32.
        x = features[self.featmap_name]
        if not torch.is_autocast_enabled(x.device.type):
            return self.pool(x, proposals)
        with torch.autocast(x.device.type, enabled=False):
            return self.pool(x.float(), [p.float() for p in proposals]).to(x.dtype)


def init_detector_weights(model: nn.Module, init: str = "xavier") -> None:
    """Initialise conv/linear weights (Xavier-uniform, zero bias) and the box predictor (normal 0.01/0.001).

    The box predictor keeps the classic Faster R-CNN init (scores std 0.01, box deltas std 0.001): it is
    never pruned, and near-zero initial deltas keep early proposals on their anchors. ``init="torchvision"``
    leaves the other layers as built (see ``build_vgg16_faster_rcnn``).
    """
    if init not in INIT_KINDS:
        raise ValueError(f"init must be one of {INIT_KINDS}, got {init!r}")
    if init == "xavier":
        predictor = set(model.roi_heads.box_predictor.modules())
        for module in model.modules():
            if module in predictor:
                continue
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    predictor = model.roi_heads.box_predictor
    if isinstance(predictor, FastRCNNPredictor):
        _init_predictor(predictor)


def _init_predictor(predictor: FastRCNNPredictor) -> None:
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.bbox_pred.bias)


def _init_vgg_torchvision(backbone: VGG16Backbone, box_head: VGGBoxHead) -> None:
    # Same as torchvision.models.VGG.__init__: Kaiming-normal convolutions, normal(0, 0.01) fc layers.
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    for fc in (box_head.fc6, box_head.fc7):
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)


# FasterRCNN arguments build_vgg16_faster_rcnn makes itself: the VGG16 parts, and the class count it is given.
_BUILT_HERE = {"self", "backbone", "num_classes", "kwargs", "rpn_anchor_generator", "rpn_head", "box_roi_pool",
               "box_head", "box_predictor"}


def faster_rcnn_keywords() -> set[str]:
    """The keywords of torchvision's FasterRCNN (and the transform it builds) that `build_vgg16_faster_rcnn`
    passes on: every one but the parts it builds itself."""
    names = set(inspect.signature(FasterRCNN.__init__).parameters) | set(
        inspect.signature(GeneralizedRCNNTransform.__init__).parameters)
    return names - _BUILT_HERE


def build_vgg16_faster_rcnn(
    num_classes: int,
    *,
    width: float = 1.0,
    head_dim: int = 4096,
    head_dropout: float = 0.5,
    norm: str = "none",
    roi_pool: str = "align",
    anchor_sizes: tuple[tuple[int, ...], ...] = ((128, 256, 512),),
    aspect_ratios: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),),
    min_size: int | tuple[int, ...] = 600,
    max_size: int = 1000,
    init: str = "xavier",
    pretrained_backbone: str | Path | Mapping[str, torch.Tensor] | None = None,
    **faster_rcnn_kwargs: Any,
) -> FasterRCNN:
    """Build Faster R-CNN VGG16; ``num_classes`` counts the background (|classes| + 1).

    ``width`` scales the backbone channels (64..512 x width, at least 4) and ``head_dim`` the fc6/fc7 size,
    for tiny CPU variants; ``norm`` adds BatchNorm or GroupNorm after every backbone conv (default none).
    ``init="xavier"`` (the paper's) gives every conv and linear weight Xavier-uniform and zero bias, the box
    predictor normal(0.01)/(0.001); norm layers start at weight 1, bias 0; ``init="torchvision"`` uses
    torchvision's VGG and RPN init. ``pretrained_backbone`` is a state_dict in torchvision's vgg16 (vgg16_bn)
    format, or a local file holding one (see ``load_vgg16_weights``; ``colt_det.pretrained`` gets torchvision's
    ImageNet weights); nothing is downloaded here. The input is resized to
    py-faster-rcnn's 600/1000 by default; every other keyword (``rpn_batch_size_per_image``,
    ``box_score_thresh``, ...) goes to torchvision's ``FasterRCNN`` with its defaults.
    Deterministic under ``torch.manual_seed``.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (classes + background), got {num_classes!r}")
    if not (isinstance(width, (int, float)) and width > 0 and math.isfinite(width)):
        raise ValueError(f"width must be a positive number (1.0 = VGG16), got {width!r}")
    if not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"head_dim must be a positive int (4096 = VGG16 fc6/fc7), got {head_dim!r}")
    if not 0.0 <= head_dropout < 1.0:
        raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout!r}")
    if roi_pool not in ROI_POOL_KINDS:
        raise ValueError(f"roi_pool must be one of {ROI_POOL_KINDS}, got {roi_pool!r}")
    if init not in INIT_KINDS:
        raise ValueError(f"init must be one of {INIT_KINDS}, got {init!r}")
    unknown = sorted(set(faster_rcnn_kwargs) - faster_rcnn_keywords())
    if unknown:  # torchvision passes leftover keywords to its transform, which ignores them silently
        raise TypeError(f"build_vgg16_faster_rcnn got unexpected keyword(s) {unknown}; it takes the keywords of "
                        "torchvision's FasterRCNN and GeneralizedRCNNTransform, less the parts it builds itself")
    anchor_sizes = tuple(tuple(int(s) for s in level) for level in anchor_sizes)
    aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)
    if len(anchor_sizes) != 1 or len(aspect_ratios) != 1:
        raise ValueError("anchor_sizes and aspect_ratios must each hold exactly one tuple (one feature map)")

    backbone = VGG16Backbone(width, norm)
    anchor_generator = AnchorGenerator(sizes=anchor_sizes, aspect_ratios=aspect_ratios)
    rpn_head = RPNHead(backbone.out_channels, anchor_generator.num_anchors_per_location()[0])
    box_head = VGGBoxHead(backbone.out_channels * _ROI_OUTPUT_SIZE**2, head_dim, head_dropout)
    model = FasterRCNN(
        backbone,
        rpn_anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=_ROI_OUTPUT_SIZE, sampling_ratio=2),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(head_dim, num_classes),
        min_size=min_size,
        max_size=max_size,
        **faster_rcnn_kwargs,
    )
    if roi_pool == "pool":
        # FasterRCNN's constructor only accepts MultiScaleRoIAlign; RoIHeads calls any module the same way.
        model.roi_heads.box_roi_pool = SingleLevelRoIPool()

    if init == "torchvision":
        _init_vgg_torchvision(backbone, box_head)
    init_detector_weights(model, init)
    if pretrained_backbone is not None:
        load_vgg16_weights(model, pretrained_backbone)
    return model


def backbone_norm(model: FasterRCNN) -> str:
    """The norm layer of a detector's VGG16 backbone: "batch", "group" or "none"."""
    for module in model.backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            return "batch"
        if isinstance(module, nn.GroupNorm):
            return "group"
    return "none"


def load_vgg16_weights(model: FasterRCNN, source: str | Path | Mapping[str, torch.Tensor], *,
                       name: str | None = None) -> list[str]:
    """Load a torchvision-format vgg16 state_dict (a file, or the dict itself) into the backbone, and into
    fc6/fc7 when shapes allow.

    A backbone with ``norm="batch"`` takes ``vgg16_bn`` weights (BatchNorm statistics included).
    Accepted keys: ``features.N.weight``/``.bias`` (a full vgg16 state_dict) or bare ``N.weight`` (an
    exported backbone). ``classifier.0``/``classifier.3`` go to fc6/fc7 only when the model has
    ``width=1`` and ``head_dim=4096``; other ``classifier.*`` keys are ignored. `name` says where a dict
    came from, in errors. Returns the loaded names.
    """
    path = Path(name or "the given state_dict") if isinstance(source, Mapping) else Path(source)
    norm = backbone_norm(model)
    weights = {
        "none": "torchvision's vgg16 weights (e.g. vgg16-397923af.pth, copied from a machine with network access)",
        "batch": "torchvision's vgg16_bn weights (e.g. vgg16_bn-6c64b313.pth, copied from a machine with network "
                 "access)",
        "group": "a backbone exported by tools/export_backbone.py from a run with model.norm=group",
    }[norm]
    fix = f"point pretrained_backbone at a local copy of {weights}, or set it to imagenet or none"
    if isinstance(source, Mapping):
        loaded: Any = dict(source)
    elif not path.is_file():
        raise FileNotFoundError(f"pretrained backbone file not found: {path}; {fix}")
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read pretrained backbone file {path} ({exc}); {fix}") from exc
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise ValueError(f"pretrained backbone file {path} does not hold a state_dict; {fix}")

    if any(str(k).startswith("features.") for k in loaded):
        features = {k[len("features.") :]: v for k, v in loaded.items() if k.startswith("features.")}
    else:
        features = {k: v for k, v in loaded.items() if not str(k).startswith("classifier.")}

    targets: dict[str, torch.Tensor] = {}
    backbone_params = {k: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIX)}
    for name, param in backbone_params.items():
        key = name[len(BACKBONE_PREFIX) :]
        if key not in features:
            raise ValueError(
                f"pretrained backbone file {path} lacks key {key!r} (VGG16 features, norm={norm!r}); {fix}"
            )
        if tuple(features[key].shape) != tuple(param.shape):
            raise ValueError(
                f"pretrained backbone file {path}: {key!r} has shape {tuple(features[key].shape)} but the "
                f"model expects {tuple(param.shape)}; pretrained VGG16 weights need width=1.0, or {fix}"
            )
        targets[name] = features[key]

    head = model.roi_heads.box_head
    head_matches = (
        isinstance(head, VGGBoxHead) and model.backbone.out_channels == 512 and head.fc6.out_features == 4096
    )
    if head_matches and all(f"classifier.{i}.{p}" in loaded for i in (0, 3) for p in ("weight", "bias")):
        for index, fc in ((0, "fc6"), (3, "fc7")):
            for param in ("weight", "bias"):
                name = f"roi_heads.box_head.{fc}.{param}"
                source = loaded[f"classifier.{index}.{param}"]
                expected = model.state_dict()[name].shape
                if tuple(source.shape) != tuple(expected):
                    raise ValueError(
                        f"pretrained backbone file {path}: 'classifier.{index}.{param}' has shape "
                        f"{tuple(source.shape)}, expected {tuple(expected)}; {fix}"
                    )
                targets[name] = source

    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in targets.items():
            state[name].copy_(tensor)
    return list(targets)
