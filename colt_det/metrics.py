"""The detection metrics by the names configs and command lines use: Pascal VOC AP at IoU 0.5 (voc07, voc12)
and COCO-style mAP@[.5:.95] (coco)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from colt_det.coco_eval import evaluate_coco
from colt_det.data import Detection, ImageRecord
from colt_det.voc import VOC_CLASSES
from colt_det.voc_eval import evaluate_voc

METRICS = ("voc07", "voc12", "coco")


def evaluate_detections(
    detections_by_class: Mapping[str, Sequence[Detection]],
    records: Sequence[ImageRecord],
    metric: str,
    classes: Sequence[str] = VOC_CLASSES,
) -> dict[str, Any]:
    """Evaluate under a metric named as in configs and command lines: "voc07", "voc12" or "coco"."""
    if metric == "coco":
        return evaluate_coco(detections_by_class, records, classes)
    if metric in ("voc07", "voc12"):
        return evaluate_voc(detections_by_class, records, use_07_metric=metric == "voc07", classes=classes)
    raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
