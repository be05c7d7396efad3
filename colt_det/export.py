"""Detector exports: the pruned VGG16 backbone keyed like torchvision's ``vgg16().features``, and ONNX.

A detection ticket's architecture is what ``DetectionTask.architecture()`` stores (``ModelConfig.architecture``):
``{"name": "fasterrcnn_vgg16", "task": "detection", <the config's model: section>, "num_classes": 21}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection import FasterRCNN

from colt_core.config import from_dict
from colt_core.export import ExportError, ExportTarget, export_onnx, run_onnx
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
    unknown = sorted(set(architecture) - model_keys - {"name", "task", "num_classes", "pretrained"})
    if unknown:
        raise ValueError(f"unknown detector architecture key(s) {unknown}; allowed: {sorted(model_keys)} and "
                         "name, task, num_classes, pretrained")
    num_classes = architecture.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (classes + background), got {num_classes!r}")
    m = from_dict(ModelConfig, {k: v for k, v in architecture.items() if k in model_keys}, prefix="model")
    # The same arguments as DetectionTask.build_model, so the parameter names and shapes match.
    return build_vgg16_faster_rcnn(num_classes, **m.build_kwargs())


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


def match_detections(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], *,
                     box_atol: float = 0.05, score_atol: float = 1e-3) -> dict[str, Any]:
    """Compare two lists of detections as detections, not element by element: detectors emit equal scores
    in no fixed order, so a correct export can list them permuted.

    Each expected detection (highest score first) takes the unmatched detection of the same label closest
    to it, if that one is within `box_atol` pixels and `score_atol` of score. A detection left without a
    counterpart is tolerated only at its list's low end (its score within `score_atol` of the lowest
    score there), where a last-bit score difference decides what the score threshold or the per-image cap
    keeps; `unmatched_beyond_the_low_end` counts the others.
    """
    def parts(d: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(d["boxes"], np.float64).reshape(-1, 4), np.asarray(d["labels"]).reshape(-1),
                np.asarray(d["scores"], np.float64).reshape(-1))

    (eb, el, es), (gb, gl, gs) = parts(expected), parts(got)
    free = set(range(len(gs)))
    box_diff = score_diff = 0.0
    missing = []
    for i in np.argsort(-es, kind="stable"):
        best, best_box, best_score = None, math.inf, math.inf
        for j in free:
            if gl[j] != el[i]:
                continue
            d_box, d_score = float(np.max(np.abs(gb[j] - eb[i]))), abs(float(gs[j] - es[i]))
            if d_box <= box_atol and d_score <= score_atol and max(d_box, d_score) < max(best_box, best_score):
                best, best_box, best_score = j, d_box, d_score
        if best is None:
            missing.append(int(i))
            continue
        free.discard(best)
        box_diff, score_diff = max(box_diff, best_box), max(score_diff, best_score)

    def at_low_end(scores: np.ndarray, index: int) -> bool:
        return bool(scores[index] <= scores.min() + score_atol)

    stray = (sum(not at_low_end(es, i) for i in missing), sum(not at_low_end(gs, j) for j in free))
    return {"detections": len(es), "onnx_detections": len(gs), "matched": len(es) - len(missing),
            "unmatched": len(missing) + len(free), "unmatched_beyond_the_low_end": sum(stray),
            "stray": stray, "max_box_diff": box_diff, "max_score_diff": score_diff, "box_atol": box_atol,
            "score_atol": score_atol}


def check_detections(check: Mapping[str, Any], path: str | Path) -> None:
    """Raise ExportError when the ONNX detector's detections really differ from PyTorch's."""
    if check["unmatched_beyond_the_low_end"]:
        mine, theirs = check["stray"]
        raise ExportError(f"{path}: onnxruntime's detections differ from PyTorch's on the example image ({mine} of "
                          f"PyTorch's {check['detections']} and {theirs} of onnxruntime's {check['onnx_detections']} "
                          f"detections have no counterpart of the same label within {check['box_atol']:g} px and "
                          f"{check['score_atol']:g} of score); the ONNX export is wrong, do not use it")


def export_detector_onnx(model: FasterRCNN, path: str | Path, image_size: int,
                         seed: int = 0) -> tuple[Path, dict[str, Any] | None]:
    """Export the detector (one 3×H×W image in, boxes/labels/scores out) to ONNX; check it in onnxruntime.

    The check runs only when onnxruntime is importable: the detections on the example image are matched
    to PyTorch's (`match_detections`), and a real difference fails the export (`check_detections`).
    """
    model = model.eval().cpu()
    image = torch.rand(3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    path = export_onnx(model, ([image],), path, input_names=["image"], output_names=list(ONNX_OUTPUTS),
                       dynamic_axes={k: {0: "detections"} for k in ONNX_OUTPUTS}, opset=17)
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in model([image])[0].items()}
    outputs = run_onnx(path, {"image": image.numpy()})
    if outputs is None:
        return path, None
    check = match_detections(dict(zip(ONNX_OUTPUTS, outputs, strict=True)), expected)
    check_detections(check, path)
    return path, check
