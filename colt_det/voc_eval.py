"""Pascal VOC detection evaluation: per-class AP at IoU 0.5 with difficult objects ignored.

Numerically the same as the widely used Python port of the VOC devkit (py-faster-rcnn's voc_eval.py):

* boxes are in VOC file coordinates and areas use the "+1" pixel convention (width = xmax - xmin + 1);
* detections are ranked by score, highest first; ties keep their input order (a stable sort: the
  reference's default-kind argsort leaves tie order to numpy's implementation, which differs between
  versions and CPUs, while a stable sort gives the same AP everywhere and the reference's AP whenever
  scores are distinct);
* each detection is compared with the ground truth box of highest IoU in its image; it is a true
  positive when that IoU is strictly above the threshold and the box is not yet matched, a false
  positive when the box was matched already or the IoU is at most the threshold, and neither when that
  box is difficult;
* recall is over the non-difficult ground truth; AP is the VOC2007 11-point interpolation
  (`use_07_metric=True`) or the VOC2010+ area under the precision envelope.

A class without non-difficult ground truth has AP NaN and is left out of the mAP.

Matching (`match_class`) and AP (`class_ap`) are separate steps: a bootstrap resample of the images only
re-counts the matches (`colt_det.intervals`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from colt_core.io import atomic_write_text
from colt_det.data import Detection, DetectionDataError, ImageRecord, check_detection_classes
from colt_det.voc import VOC_CLASSES

logger = logging.getLogger(__name__)

RESULTS_PREFIX = "comp4_det_test_"
# The reference's thresholds are np.arange(0., 1.1, 0.1): 0.30000000000000004, not 0.3, and so on.
# Using the same floating-point values keeps recalls that land exactly on 0.3, 0.6, 0.7 treated alike.
ELEVEN_POINT_RECALLS = np.arange(11) * 0.1


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP of a recall/precision curve, VOC2007 11-point interpolation or VOC2010+ area under the envelope."""
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for threshold in ELEVEN_POINT_RECALLS:
            reached = rec >= threshold
            ap += (float(np.max(prec[reached])) if reached.any() else 0.0) / 11.0
        return float(ap)
    recall = np.concatenate(([0.0], rec, [1.0]))
    envelope = np.concatenate(([0.0], prec, [0.0]))
    # Precision at recall r becomes the best precision at any recall >= r.
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _ground_truth(records: Sequence[ImageRecord], class_name: str) -> tuple[dict[str, Any], np.ndarray]:
    """Per image id: its record index, boxes, difficult flags and matched flags of `class_name`; and each
    record's number of non-difficult boxes of it."""
    gt: dict[str, Any] = {}
    positives = np.zeros(len(records), dtype=np.int64)
    for index, record in enumerate(records):
        if record.image_id in gt:
            raise DetectionDataError(
                f"image id {record.image_id!r} appears twice in the evaluation records; evaluate one "
                "image set whose ids are unique"
            )
        objects = [obj for obj in record.objects if obj.name == class_name]
        boxes = np.array([obj.box for obj in objects], dtype=np.float64).reshape(-1, 4)
        difficult = np.array([obj.ignored for obj in objects], dtype=bool)  # difficult, or a crowd region
        gt[record.image_id] = (index, boxes, difficult, np.zeros(len(objects), dtype=bool))
        positives[index] = int((~difficult).sum())
    return gt, positives


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections matched to its ground truth: what AP is computed from, for the evaluated image
    set or for any multiset of its images (a bootstrap resample).

    A detection is matched within its own image only, so an image counted twice is two images with the same
    matches. `images`, `tp` and `fp` run over the detections in rank order: the record index of each one's
    image, and 1.0 where it is a true (false) positive; a detection of a difficult object is neither.
    `positives` holds each record's number of non-difficult boxes of the class.
    """

    images: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: np.ndarray


def match_class(
    detections: Sequence[Detection],
    records: Sequence[ImageRecord],
    class_name: str,
    *,
    iou_threshold: float = 0.5,
) -> ClassMatches:
    """Rank one class's detections by score and match each to the ground truth of its image (see the module
    docstring); `records` is the whole evaluated image set, including images without this class."""
    gt, positives = _ground_truth(records, class_name)
    scores = np.array([d.score for d in detections], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    images = np.zeros(len(detections), dtype=np.int64)
    tp = np.zeros(len(detections))
    fp = np.zeros(len(detections))
    for rank, index in enumerate(order):
        detection = detections[index]
        if detection.image_id not in gt:
            raise DetectionDataError(
                f"detection of {class_name!r} on image {detection.image_id!r}, which is not in the evaluated "
                "image set; evaluate with the image set the detections were made on"
            )
        images[rank], gt_boxes, difficult, matched = gt[detection.image_id]
        best_iou, best = -math.inf, -1
        if len(gt_boxes):
            x0, y0, x1, y1 = (float(v) for v in detection.box)
            iw = np.maximum(np.minimum(gt_boxes[:, 2], x1) - np.maximum(gt_boxes[:, 0], x0) + 1.0, 0.0)
            ih = np.maximum(np.minimum(gt_boxes[:, 3], y1) - np.maximum(gt_boxes[:, 1], y0) + 1.0, 0.0)
            intersection = iw * ih
            union = (
                (x1 - x0 + 1.0) * (y1 - y0 + 1.0)
                + (gt_boxes[:, 2] - gt_boxes[:, 0] + 1.0) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1.0)
                - intersection
            )
            iou = intersection / union
            best = int(np.argmax(iou))
            best_iou = float(iou[best])
        if best_iou > iou_threshold:
            if difficult[best]:
                continue  # a detection of a difficult object counts neither way
            if matched[best]:
                fp[rank] = 1.0
            else:
                tp[rank] = 1.0
                matched[best] = True
        else:
            fp[rank] = 1.0
    return ClassMatches(images=images, tp=tp, fp=fp, positives=positives)


def class_ap(matches: ClassMatches, *, use_07_metric: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Recall, precision (one entry per ranked detection) and AP of one class's matches; recall is NaN and AP
    NaN without non-difficult ground truth."""
    npos = int(matches.positives.sum())
    tp = np.cumsum(matches.tp)
    fp = np.cumsum(matches.fp)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if npos == 0:
        return np.full(len(tp), np.nan), prec, math.nan
    rec = tp / float(npos)
    return rec, prec, voc_ap(rec, prec, use_07_metric)


def eval_class(
    detections: Sequence[Detection],
    records: Sequence[ImageRecord],
    class_name: str,
    *,
    iou_threshold: float = 0.5,
    use_07_metric: bool,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Recall, precision (one entry per detection, in rank order) and AP of one class.

    `records` is the whole evaluated image set, including images without this class. Recall is NaN and
    AP NaN when the class has no non-difficult ground truth.
    """
    matches = match_class(detections, records, class_name, iou_threshold=iou_threshold)
    return class_ap(matches, use_07_metric=use_07_metric)


def mean_ap(per_class: Mapping[str, float]) -> float:
    """Mean over the classes whose AP is defined (not NaN); NaN when none is."""
    defined = [ap for ap in per_class.values() if not math.isnan(ap)]
    return float(np.mean(defined)) if defined else math.nan


def match_voc(
    detections_by_class: Mapping[str, Sequence[Detection]],
    records: Sequence[ImageRecord],
    classes: Sequence[str] = VOC_CLASSES,
) -> dict[str, ClassMatches]:
    """Every class's matches (`match_class`); a class missing from `detections_by_class` has no detections."""
    check_detection_classes(detections_by_class, classes)
    return {name: match_class(detections_by_class.get(name, ()), records, name) for name in classes}


def voc_result(matches: Mapping[str, ClassMatches], *, use_07_metric: bool) -> dict[str, Any]:
    """{"metric": "voc07" | "voc12", "mAP", "per_class": {name: AP}} of every class's matches."""
    per_class = {name: class_ap(m, use_07_metric=use_07_metric)[2] for name, m in matches.items()}
    return {"metric": "voc07" if use_07_metric else "voc12", "mAP": mean_ap(per_class), "per_class": per_class}


def evaluate_voc(
    detections_by_class: Mapping[str, Sequence[Detection]],
    records: Sequence[ImageRecord],
    *,
    use_07_metric: bool,
    classes: Sequence[str] = VOC_CLASSES,
) -> dict[str, Any]:
    """Per-class AP (fractions) and their mean; a class missing from `detections_by_class` has no detections.

    Returns {"metric": "voc07" | "voc12", "mAP": float, "per_class": {name: AP}}; a class with no
    non-difficult ground truth gets AP NaN and is excluded from the mAP.
    """
    return voc_result(match_voc(detections_by_class, records, classes), use_07_metric=use_07_metric)


# ----------------------------------------------------------------------------------------------------------
# Official results files: one `<prefix><class>.txt` per class, lines `image_id score xmin ymin xmax ymax`.


def write_results_files(
    out_dir: str | Path,
    detections_by_class: Mapping[str, Sequence[Detection]],
    prefix: str = RESULTS_PREFIX,
) -> list[Path]:
    """Write one results file per class (an empty file for a class without detections), each atomically.

    Numbers are written with Python's shortest exact float repr, so reading them back gives the same
    floats and the same AP as evaluating in memory.
    """
    out_dir = Path(out_dir)
    paths = []
    for name, detections in detections_by_class.items():
        lines = []
        for d in detections:
            if not d.image_id or any(c.isspace() for c in d.image_id):
                raise ValueError(
                    f"image id {d.image_id!r} is empty or holds whitespace; it cannot be written"
                )
            numbers = " ".join(repr(float(v)) for v in (d.score, *d.box))
            lines.append(f"{d.image_id} {numbers}\n")
        path = out_dir / f"{prefix}{name}.txt"
        atomic_write_text("".join(lines), path)
        paths.append(path)
    return paths


def _parse_results_line(line: str, path: Path, line_number: int) -> Detection:
    fields = line.split()
    try:
        if len(fields) != 6:
            raise ValueError
        score, *box = (float(v) for v in fields[1:])
        if not all(math.isfinite(v) for v in (score, *box)):
            raise ValueError
    except ValueError:
        raise DetectionDataError(
            f"{path}:{line_number}: malformed line {line.rstrip()!r}; expected "
            "'image_id score xmin ymin xmax ymax' with finite numbers"
        ) from None
    return Detection(image_id=fields[0], score=score, box=tuple(box))  # type: ignore[arg-type]


def read_results_files(
    results_dir: str | Path,
    classes: Sequence[str] = VOC_CLASSES,
    prefix: str = RESULTS_PREFIX,
) -> dict[str, list[Detection]]:
    """Read `<prefix><class>.txt` files back; a missing class file means no detections for it (warned)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DetectionDataError(
            f"{results_dir}: results directory not found; pass the folder holding {prefix}<class>.txt files"
        )
    detections: dict[str, list[Detection]] = {}
    missing = []
    for name in classes:
        path = results_dir / f"{prefix}{name}.txt"
        if not path.is_file():
            missing.append(name)
            detections[name] = []
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DetectionDataError(f"{path}: not a results file (byte {exc.start} is not UTF-8 text; each line is "
                                     "'image_id score xmin ymin xmax ymax')") from None
        detections[name] = [
            _parse_results_line(line, path, number)
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
    if len(missing) == len(classes):
        raise DetectionDataError(
            f"{results_dir}: no results files named {prefix}<class>.txt; check the folder and the file prefix"
        )
    if missing:
        logger.warning(
            "%s: no results file for %s; counting no detections for %s",
            results_dir,
            ", ".join(missing),
            "it" if len(missing) == 1 else "them",
        )
    return detections


# ----------------------------------------------------------------------------------------------------------
# Reports


def format_per_class_table(result: Mapping[str, Any]) -> str:
    """A Markdown table `class | AP (%)` with a final mAP row (and AP50/AP75 rows for COCO results)."""
    metric = result.get("metric", "")

    def cell(ap: float) -> str:
        return "n/a (no ground truth)" if math.isnan(ap) else f"{100.0 * ap:.2f}"

    lines = [f"| class | AP {metric} (%) |", "| --- | ---: |"]
    lines += [f"| {name} | {cell(ap)} |" for name, ap in result["per_class"].items()]
    lines.append(f"| **mAP** | **{cell(result['mAP'])}** |")
    for key in ("AP50", "AP75"):
        if key in result:
            lines.append(f"| {key} | {cell(result[key])} |")
    return "\n".join(lines) + "\n"
