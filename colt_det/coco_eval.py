"""COCO-style box AP (mean over IoU 0.50:0.05:0.95) of VOC detections, computed by pycocotools.

The ground truth is built in memory from VOC records. Difficult objects become `iscrowd=1` regions, the
only way COCOeval has to ignore a box: they count as neither positives nor misses, and a detection that
falls on one is ignored rather than counted false. (COCOeval measures overlap with a crowd region as
intersection over the detection's area, so this is slightly more lenient than VOC's IoU test.)

Boxes go from VOC file coordinates (1-based inclusive pixels) to COCO's continuous (x, y, w, h):
x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1, h = ymax - ymin + 1 -- the same boxes as torchvision's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from colt_det.data import DetectionDataError, ImageRecord
from colt_det.voc import VOC_CLASSES
from colt_det.voc_eval import Detection, check_detection_classes, mean_ap

logger = logging.getLogger(__name__)


def _coco_box(box: Sequence[float]) -> list[float]:
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return [xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0]


def build_coco_ground_truth(records: Sequence[ImageRecord], classes: Sequence[str] = VOC_CLASSES) -> COCO:
    """A pycocotools COCO object holding `records` (image k has id k + 1, class c has category id c + 1)."""
    images, annotations = [], []
    for image_index, record in enumerate(records):
        images.append({"id": image_index + 1, "width": record.width, "height": record.height})
        for obj in record.objects:
            x, y, w, h = _coco_box(obj.box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_index + 1,
                    "category_id": obj.label + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(obj.ignored),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": name} for c, name in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(
    detections_by_class: Mapping[str, Sequence[Detection]],
    records: Sequence[ImageRecord],
    classes: Sequence[str] = VOC_CLASSES,
) -> dict[str, Any]:
    """{"metric": "coco", "mAP": AP@[.5:.95], "AP50", "AP75", "per_class": {name: AP@[.5:.95]}} as fractions.

    All at area "all" and 100 detections per image, as COCOeval's headline number. A class without
    non-difficult ground truth gets NaN and is left out of every mean.
    """
    check_detection_classes(detections_by_class, classes)
    image_index = {record.image_id: k + 1 for k, record in enumerate(records)}
    if len(image_index) != len(records):
        raise ValueError("the evaluation records hold a repeated image id; evaluate one image set")
    results = []
    for c, name in enumerate(classes):
        for d in detections_by_class.get(name, ()):
            if d.image_id not in image_index:
                raise DetectionDataError(
                    f"detection of {name!r} on image {d.image_id!r}, which is not in the evaluated image "
                    "set; evaluate with the image set the detections were made on"
                )
            results.append(
                {
                    "image_id": image_index[d.image_id],
                    "category_id": c + 1,
                    "bbox": _coco_box(d.box),
                    "score": d.score,
                }
            )

    has_gt = [
        any(obj.label == c and not obj.ignored for record in records for obj in record.objects)
        for c in range(len(classes))
    ]
    if not results:
        # pycocotools cannot load an empty result list; with no detections every AP is 0.
        zero = {name: (0.0 if has_gt[c] else math.nan) for c, name in enumerate(classes)}
        return {
            "metric": "coco",
            "mAP": mean_ap(zero),
            "AP50": mean_ap(zero),
            "AP75": mean_ap(zero),
            "per_class": zero,
        }

    ground_truth = build_coco_ground_truth(records, classes)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    logger.debug("pycocotools: %s", captured.getvalue())

    # precision[t, r, k, a, m]: IoU threshold, recall point, category, area range, max detections;
    # -1 where a category has no ground truth.
    precision = evaluator.eval["precision"][:, :, :, 0, evaluator.params.maxDets.index(100)]
    thresholds = evaluator.params.iouThrs

    def class_ap(k: int, t: slice | int) -> float:
        values = precision[t, :, k]
        values = values[values > -1]
        return float(values.mean()) if values.size else math.nan

    at50 = int(np.argmin(np.abs(thresholds - 0.5)))
    at75 = int(np.argmin(np.abs(thresholds - 0.75)))
    per_class = {name: class_ap(k, slice(None)) for k, name in enumerate(classes)}
    return {
        "metric": "coco",
        "mAP": mean_ap(per_class),
        "AP50": mean_ap({name: class_ap(k, at50) for k, name in enumerate(classes)}),
        "AP75": mean_ap({name: class_ap(k, at75) for k, name in enumerate(classes)}),
        "per_class": per_class,
    }
