"""Detector exports: the pruned VGG16 backbone keyed like torchvision's ``vgg16().features``, and ONNX.

A detection ticket's architecture is what ``DetectionTask.architecture()`` stores (``ModelConfig.architecture``):
``{"name": "fasterrcnn_vgg16", "task": "detection", <the config's model: section>, "num_classes": 21}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from colt_core.config import from_dict
from colt_core.export import ExportError, ExportTarget, ExportView, SlimTrace, export_onnx, run_onnx
from colt_det.config import DETECTION_ARCHITECTURE, DetRunConfig, ModelConfig, current_architecture
from colt_det.detectors import FAMILIES, VGG16, DetectorFamily, backbone_key, family, with_batch_counters
from colt_det.detectors import build as build_torchvision
from colt_det.model import build_vgg16_faster_rcnn
from colt_det.voc import VOC_CLASSES

DETECTOR_STEM = "detector"
ONNX_OUTPUTS = ("boxes", "labels", "scores")  # the order of torchvision's output dict


def architecture_from_config(config: Mapping[str, Any], num_classes: int | None = None) -> dict[str, Any]:
    """The ticket architecture of a detection run config (as the task writes it), validated; `num_classes` is the
    run's object classes (None: VOC's 20), and the architecture counts the background besides them.

    Raises ``ConfigError`` when ``config`` is not a detection run config.
    """
    classes = len(VOC_CLASSES) if num_classes is None else num_classes
    return from_dict(DetRunConfig, config).model.architecture(classes + 1)


def build_detector(architecture: Mapping[str, Any]) -> nn.Module:
    """Rebuild the detector a ticket's architecture describes, from scratch (never reading pretrained weights).

    The weights are loaded from the ticket or run afterwards, so the weights the run may have started from
    are not needed here (nor the machine they lived on). A torchvision detector is built as
    `get_model(arch, weights=None, weights_backbone=None, num_classes=K, **model.kwargs)`. Older tickets, which
    hold vgg16's FasterRCNN keywords beside its settings, build the same model (`current_architecture`).
    """
    architecture = current_architecture(architecture)
    name = architecture.get("name")
    if name != DETECTION_ARCHITECTURE and name not in FAMILIES:
        raise ValueError(f"not a detection architecture: name {name!r} (expected {DETECTION_ARCHITECTURE!r} or a "
                         f"torchvision detector: {', '.join(sorted(FAMILIES))})")
    model_keys = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(architecture) - model_keys - {"name", "task", "num_classes", "pretrained"})
    if unknown:
        raise ValueError(f"unknown detector architecture key(s) {unknown}; allowed: {sorted(model_keys)} and "
                         "name, task, num_classes, pretrained")
    num_classes = architecture.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (classes + background), got {num_classes!r}")
    m = from_dict(ModelConfig, {k: v for k, v in architecture.items() if k in model_keys}, prefix="model")
    if m.arch != "vgg16":
        return build_torchvision(m.arch, num_classes, kwargs=m.kwargs)
    # The same arguments as DetectionTask.build_model, so the parameter names and shapes match.
    return build_vgg16_faster_rcnn(num_classes, **m.build_kwargs())


def architecture_family(architecture: Mapping[str, Any]) -> DetectorFamily:
    return family(str(architecture.get("arch", "vgg16")))


def torchvision_vgg_name(architecture: Mapping[str, Any]) -> str | None:
    """The torchvision model whose ``features`` share the backbone's layout: vgg16, vgg16_bn, or None (GroupNorm)."""
    return {"none": "vgg16", "batch": "vgg16_bn"}.get(str(architecture.get("norm", "none")))


def is_torchvision_compatible(architecture: Mapping[str, Any]) -> bool:
    """Whether torchvision's vgg16 (vgg16_bn for BatchNorm) loads the exported backbone: width 1.0, no GroupNorm."""
    return float(architecture.get("width", 1.0)) == 1.0 and torchvision_vgg_name(architecture) is not None


def detection_export_target(architecture: Mapping[str, Any]) -> ExportTarget:
    """The pruned backbone under the keys of its torchvision classification model (VGG16 features, ResNet-50,
    MobileNetV3 features) where there is one, and the whole detector beside it."""
    model = build_detector(architecture)
    fam = architecture_family(architecture)
    detector = ExportView(stem=DETECTOR_STEM, description=f"the whole {architecture.get('name')} detector")
    common = dict(model=model, output_layers=tuple(fam.class_output_layers(model)),
                  complete=partial(with_batch_counters, model), onnx=partial(detector_onnx, architecture=architecture),
                  loading_hints=tuple(loading_hint(architecture)),
                  slim=detector_trace() if fam is VGG16 else None)
    if fam.backbone is None:
        return ExportTarget(**common, rename=detector.rename, stem=detector.stem, description=detector.description)
    return ExportTarget(**common, rename=partial(backbone_key, fam), stem=f"{fam.backbone}_backbone",
                        description=f"the backbone (keys of {fam.backbone_target})", extra_views=(detector,))


SLIM_TRACE_SIDE = 64  # a multiple of the backbone's stride 16; the couplings do not depend on the size


def _trace_detector(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The detector's layers on a batch of images, past the parts that select boxes: the RPN head's outputs, and
    the box head and predictor on two fixed boxes (the RPN head's conv and fc6 read the last backbone features,
    fc6 as C×7×7 columns). Only outputs whose shapes no cut changes are returned."""
    features = model.backbone(images)
    levels = features if isinstance(features, Mapping) else {"0": features}
    objectness, deltas = model.rpn.head(list(levels.values()))
    height, width = images.shape[-2:]
    boxes = torch.tensor([[0.0, 0.0, width / 2, height / 2], [2.0, 2.0, width - 1.0, height - 1.0]])
    pooled = model.roi_heads.box_roi_pool(dict(levels), [boxes] * len(images), [(height, width)] * len(images))
    scores, box_deltas = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
    return [*objectness, *deltas, scores, box_deltas]


def detector_trace(side: int = SLIM_TRACE_SIDE) -> SlimTrace:
    """How a Faster R-CNN is traced for its channel couplings: one seeded image batch through `_trace_detector`."""
    image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    return SlimTrace(example_inputs=image, forward=_trace_detector)


# The input side torchvision's builders resize to by default, where it is not Faster R-CNN's 800.
_BUILDER_SIDES = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320,
                  "fasterrcnn_mobilenet_v3_large_320_fpn": 320}


def onnx_image_size(architecture: Mapping[str, Any]) -> int:
    """The example image side for tracing: the detector's own input size."""
    arch = str(architecture.get("arch", "vgg16"))
    kwargs = current_architecture(architecture).get("kwargs") or {}
    size = kwargs.get("min_size", 600 if arch == "vgg16" else _BUILDER_SIDES.get(arch, 800))
    return int(max(size) if isinstance(size, (list, tuple)) else size)


def loading_hint(architecture: Mapping[str, Any]) -> list[str]:
    """How the exported files load into plain torchvision models (printed by the export tool)."""
    fam = architecture_family(architecture)
    name, kwargs = architecture.get("name"), architecture.get("kwargs") or {}
    lines = []
    if fam is not VGG16:
        extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        lines.append(f"the detector loads with torchvision.models.get_model({name!r}, weights=None, "
                     f"weights_backbone=None, num_classes={architecture.get('num_classes')}{extra})"
                     ".load_state_dict(torch.load('detector.pth'))")
        if fam.backbone is not None:
            strict = "" if fam.backbone_part else ", strict=False (it has no classifier)"
            lines.append(f"the backbone loads with {fam.backbone_target}.load_state_dict(torch.load(...){strict})")
        return lines
    vgg = torchvision_vgg_name(architecture)
    if is_torchvision_compatible(architecture):
        lines.append(f"the backbone loads with torchvision.models.{vgg}().features.load_state_dict(torch.load(...))")
    elif vgg is None:
        lines.append("GroupNorm backbone: keys follow the VGG16 layout with a norm after each conv; no torchvision "
                     "model has it (load it with model.pretrained_backbone)")
    else:
        lines.append(f"width {architecture.get('width')}: keys follow torchvision's {vgg}().features, shapes are the "
                     "narrower model's")
    return lines


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


def export_detector_onnx(model: nn.Module, path: str | Path, image_size: int,
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


def detector_onnx(model: nn.Module, out_dir: Path, size: int | None, *,
                  architecture: Mapping[str, Any]) -> tuple[Path, str | None]:
    """The export target's ONNX hook: ``detector.onnx`` traced on an image of `size` (None: the detector's own input
    size) and checked in onnxruntime; the file and a line of how its detections matched PyTorch's."""
    path, check = export_detector_onnx(model, Path(out_dir) / f"{DETECTOR_STEM}.onnx",
                                       size or onnx_image_size(architecture))
    if check is None:
        return path, None
    return path, (f"onnxruntime: {check['matched']} of {check['detections']} detections matched to PyTorch's by "
                  f"label, largest box difference {check['max_box_diff']:.2e} px, largest score difference "
                  f"{check['max_score_diff']:.2e}")
