"""Detector exports: the pruned VGG16 backbone keyed like torchvision's ``vgg16().features``, and ONNX.

A detection ticket's architecture is what ``DetectionTask.architecture()`` stores (``ModelConfig.architecture``):
``{"name": "fasterrcnn_vgg16", "task": "detection", <the config's model: section>, "num_classes": 21}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import FasterRCNN

from colt_core.config import from_dict
from colt_core.export import ExportTarget, export_onnx, verify_onnx
from colt_det.config import DETECTION_ARCHITECTURE, DetRunConfig, ModelConfig
from colt_det.model import BACKBONE_PREFIX, DETECTOR_OUTPUT_LAYERS, build_vgg16_faster_rcnn

BACKBONE_STEM = "vgg16_backbone"
ONNX_OUTPUTS = ("boxes", "labels", "scores")  # the order of torchvision's output dict


def architecture_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ticket architecture of a detection run config (as the trainer writes it), validated.

    Raises ``ConfigError`` when ``config`` is not a detection run config.
    """
    return from_dict(DetRunConfig, config).model.architecture()


def build_detector(architecture: Mapping[str, Any]) -> FasterRCNN:
    """Rebuild the detector a ticket's architecture describes (never reading a pretrained file).

    The weights are loaded from the ticket or run afterwards, so the pretrained backbone the run may
    have started from is not needed here (nor the machine it lived on).
    """
    name = architecture.get("name")
    if name != DETECTION_ARCHITECTURE:
        raise ValueError(f"not a detection architecture: name {name!r} (expected {DETECTION_ARCHITECTURE!r})")
    model_keys = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(architecture) - model_keys - {"name", "task", "num_classes"})
    if unknown:
        raise ValueError(f"unknown detector architecture key(s) {unknown}; allowed: {sorted(model_keys)} and "
                         "name, task, num_classes")
    num_classes = architecture.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (classes + background), got {num_classes!r}")
    m = from_dict(ModelConfig, {k: v for k, v in architecture.items() if k in model_keys}, prefix="model")
    # The same arguments as DetectionTask.build_model, so the parameter names and shapes match.
    return build_vgg16_faster_rcnn(num_classes, **m.build_kwargs(pretrained=False))


def is_detection_architecture(architecture: Mapping[str, Any]) -> bool:
    return architecture.get("task") == "detection" or architecture.get("name") == DETECTION_ARCHITECTURE


def backbone_key(name: str) -> str | None:
    """A detector key as its ``torchvision.models.vgg16().features`` key; None outside the backbone."""
    return name[len(BACKBONE_PREFIX):] if name.startswith(BACKBONE_PREFIX) else None


def torchvision_vgg_name(architecture: Mapping[str, Any]) -> str | None:
    """The torchvision model whose ``features`` share the backbone's layout: vgg16, vgg16_bn, or None (GroupNorm)."""
    return {"none": "vgg16", "batch": "vgg16_bn"}.get(str(architecture.get("norm", "none")))


def is_torchvision_compatible(architecture: Mapping[str, Any]) -> bool:
    """Whether torchvision's vgg16 (vgg16_bn for BatchNorm) loads the exported backbone: width 1.0, no GroupNorm."""
    return float(architecture.get("width", 1.0)) == 1.0 and torchvision_vgg_name(architecture) is not None


def detection_export_target(architecture: Mapping[str, Any]) -> ExportTarget:
    """Export the detector's VGG16 backbone, keyed like ``torchvision.models.vgg16().features``."""
    return ExportTarget(model=build_detector(architecture), output_layers=DETECTOR_OUTPUT_LAYERS,
                        rename=backbone_key, stem=BACKBONE_STEM,
                        description="the VGG16 backbone (keys of torchvision.models.vgg16().features)")


def onnx_image_size(architecture: Mapping[str, Any]) -> int:
    """The example image side for tracing: the detector's own input size."""
    size = architecture.get("min_size", 600)
    return int(max(size) if isinstance(size, (list, tuple)) else size)


def export_detector_onnx(model: FasterRCNN, path: str | Path, image_size: int,
                         seed: int = 0) -> tuple[Path, dict[str, Any] | None]:
    """Export the detector (one 3×H×W image in, boxes/labels/scores out) to ONNX; check it in onnxruntime.

    The check runs only when onnxruntime is importable and returns the largest output difference to
    PyTorch on the example image (None otherwise).
    """
    model = model.eval().cpu()
    image = torch.rand(3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    path = export_onnx(model, ([image],), path, input_names=["image"], output_names=list(ONNX_OUTPUTS),
                       dynamic_axes={k: {0: "detections"} for k in ONNX_OUTPUTS}, opset=17)
    with torch.no_grad():
        out = model([image])[0]
    check = verify_onnx(path, {"image": image.numpy()}, [out[k].numpy() for k in ONNX_OUTPUTS])
    return path, check
