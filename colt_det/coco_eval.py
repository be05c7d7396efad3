"""COCO-style box AP (mean over IoU 0.50:0.05:0.95), computed by pycocotools: of detections on VOC records
(`evaluate_coco`) and of a COCO results file against a COCO instances file (`evaluate_coco_results`); and the
COCO results files themselves (`coco_results`, `write_coco_results`).

For VOC records the ground truth is built in memory. Difficult objects become `iscrowd=1` regions, the
only way COCOeval has to ignore a box: they count as neither positives nor misses, and a detection that
falls on one is ignored rather than counted false. (COCOeval measures overlap with a crowd region as
intersection over the detection's area, so this is slightly more lenient than VOC's IoU test.)

Boxes go from VOC file coordinates (1-based inclusive pixels) to COCO's continuous (x, y, w, h) by `coco_bbox`:
x = xmin - 1, y = ymin - 1, w = xmax - x, h = ymax - y -- the same boxes as torchvision's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from colt_core.intervals import Bootstrap
from colt_core.io import atomic_write_text, load_json_file
from colt_det.coco import (
    CocoCategories,
    check_same_categories,
    coco_bbox,
    coco_box_numbers,
    coco_crowd_flag,
    coco_integer,
    coco_number,
    read_coco_instances,
    show_value,
)
from colt_det.data import Detection, DetectionDataError, ImageRecord, check_detection_classes
from colt_det.intervals import coco_intervals
from colt_det.voc import VOC_CLASSES
from colt_det.voc_eval import mean_ap

logger = logging.getLogger(__name__)


def build_coco_ground_truth(records: Sequence[ImageRecord], classes: Sequence[str] = VOC_CLASSES) -> COCO:
    """A pycocotools COCO object holding `records` (image k has id k + 1, class c has category id c + 1)."""
    images, annotations = [], []
    for image_index, record in enumerate(records):
        images.append({"id": image_index + 1, "width": record.width, "height": record.height})
        for obj in record.objects:
            x, y, w, h = coco_bbox(obj.box)
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
    bootstrap: Bootstrap | None = None,
) -> dict[str, Any]:
    """{"metric": "coco", "mAP": AP@[.5:.95], "AP50", "AP75", "per_class": {name: AP@[.5:.95]}} as fractions.

    All at area "all" and 100 detections per image, as COCOeval's headline number. A class without
    non-difficult ground truth gets NaN and is left out of every mean. With `bootstrap`, also "interval" and
    "AP50_interval": the bootstrap intervals of AP@[.5:.95] and AP50 over the records (`colt_det.intervals`).
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
                    "bbox": coco_bbox(d.box),
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
        headline = _headline(zero, zero, zero)
        if bootstrap is not None:  # every resample with ground truth scores 0 too
            interval = [0.0, 0.0] if any(has_gt) else None
            headline.update({"interval": interval, "AP50_interval": interval})
        return headline

    ground_truth = build_coco_ground_truth(records, classes)
    with _quiet():
        detections = ground_truth.loadRes(results)
    evaluator = _coco_eval(ground_truth, detections)
    return _with_intervals(_headline(*_per_category_ap(evaluator, classes)), evaluator, bootstrap)


def _headline(per_class: dict[str, float], per_class_ap50: dict[str, float],
              per_class_ap75: dict[str, float]) -> dict[str, Any]:
    """The means over categories of AP@[.5:.95], AP50 and AP75 (NaN left out), and AP@[.5:.95] per category."""
    return {"metric": "coco", "mAP": mean_ap(per_class), "AP50": mean_ap(per_class_ap50),
            "AP75": mean_ap(per_class_ap75), "per_class": per_class}


@contextlib.contextmanager
def _quiet() -> Any:
    """pycocotools prints its progress; keep it for debug logging only."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    if captured.getvalue():
        logger.debug("pycocotools: %s", captured.getvalue())


def _coco_eval(ground_truth: COCO, detections: COCO, image_ids: Iterable[int] | None = None) -> COCOeval:
    """COCOeval (bbox) of the detections on the images (all, or `image_ids`), evaluated and accumulated."""
    with _quiet():
        evaluator = COCOeval(ground_truth, detections, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _with_intervals(result: dict[str, Any], evaluator: COCOeval, bootstrap: Bootstrap | None) -> dict[str, Any]:
    """`result` with the bootstrap intervals of its AP@[.5:.95] and AP50 added, when a bootstrap is asked for."""
    return result if bootstrap is None else {**result, **coco_intervals(evaluator, bootstrap)}


def _per_category_ap(
    evaluator: COCOeval, names: Sequence[str]
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """AP@[.5:.95], AP50 and AP75 per category (area "all", 100 detections) of an accumulated COCOeval, NaN
    without ground truth.

    `names` are in ascending category id order, the order of COCOeval's category axis.
    """
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
    return tuple(  # type: ignore[return-value]
        {name: class_ap(k, t) for k, name in enumerate(names)} for t in (slice(None), at50, at75)
    )


# ----------------------------------------------------------------------------------------------------------
# COCO data: a results file against an instances file


def evaluate_coco_results(
    annotations_json: str | Path,
    results: list[dict] | str | Path,
    *,
    categories: CocoCategories | None = None,
    image_ids: Iterable[int] | None = None,
    bootstrap: Bootstrap | None = None,
) -> dict[str, Any]:
    """COCOeval (bbox) of a COCO results list or file against the ground truth of an instances file.

    Returns {"metric": "coco", "mAP": AP@[.5:.95], "AP50", "AP75", "per_class": {name: AP@[.5:.95]},
    "per_class_AP50": {name: AP50}} as fractions, at area "all" and 100 detections per image; a category
    without (non-crowd) ground truth gets NaN and is left out of every mean. Crowd regions are
    pycocotools' own affair. With `categories` (those a model was trained on) the file's must be equal.
    `image_ids` (the dataset's ids) restricts the evaluation to those images, e.g. those `load_coco` kept
    in skip mode; by default every image of the file counts, with or without detections. With `bootstrap`,
    also "interval" and "AP50_interval": the bootstrap intervals of AP@[.5:.95] and AP50 over those images.
    """
    path = Path(annotations_json)
    data, file_categories = read_coco_instances(path)
    if categories is not None:
        check_same_categories(categories, file_categories)
    images = [{"id": coco_integer(i["id"])} for i in data["images"]]
    annotations = [_ground_truth(a, path) for a in data["annotations"]]
    for key, ids in (("images", [i["id"] for i in images]), ("annotations", [a["id"] for a in annotations])):
        repeated = sorted(v for v, n in Counter(ids).items() if n > 1)
        if repeated:
            raise DetectionDataError(f"{path}: {key} ids {repeated[:8]} appear more than once; ids must be unique "
                                     "for pycocotools to evaluate: fix the annotations file")
    evaluated = {i["id"] for i in images} if image_ids is None else set(image_ids)
    if unknown := sorted(evaluated - {i["id"] for i in images}):
        raise ValueError(f"image_ids {unknown[:8]} are not images of {path}")
    detections = _read_results(results)
    if foreign := sorted({d["image_id"] for d in detections} - evaluated):
        among = "the evaluated images of" if image_ids is not None else "the images of"
        raise DetectionDataError(
            f"{_results_name(results)}: detections on image id(s) {foreign[:8]}{' ...' if len(foreign) > 8 else ''}"
            f", which are not among {among} {path}; evaluate with the annotations file of the image set the "
            "detections were made on"
        )
    if foreign := sorted({d["category_id"] for d in detections} - set(file_categories.ids)):
        raise DetectionDataError(f"{_results_name(results)}: detections of category id(s) {foreign[:8]}, which "
                                 f"are not categories of {path} ({list(file_categories.ids)}); the detections are "
                                 "of another label set")

    ground_truth = COCO()
    ground_truth.dataset = {"images": images, "annotations": annotations,
                            "categories": [{"id": i, "name": n} for i, n in zip(file_categories.ids,
                                                                                file_categories.names, strict=True)]}
    with _quiet():
        ground_truth.createIndex()
        if detections:
            predicted = ground_truth.loadRes(detections)
        else:
            # loadRes cannot take an empty list; an empty results set gives 0 where there is ground truth.
            predicted = COCO()
            predicted.dataset = {"images": images, "categories": ground_truth.dataset["categories"],
                                 "annotations": []}
            predicted.createIndex()
    evaluator = _coco_eval(ground_truth, predicted, evaluated if image_ids is not None else None)
    per_class, per_class_ap50, per_class_ap75 = _per_category_ap(evaluator, file_categories.names)
    return _with_intervals({**_headline(per_class, per_class_ap50, per_class_ap75), "per_class_AP50": per_class_ap50},
                           evaluator, bootstrap)


def _ground_truth(annotation: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A ground truth box for pycocotools, of the checked values only: pycocotools needs "area" and "iscrowd" on
    every box (files without them get the box's area and 0) and fails on values of the wrong type."""
    where = f"{path}: annotation {annotation['id']} (image {annotation['image_id']})"
    if (bbox := coco_box_numbers(annotation["bbox"])) is None:
        raise DetectionDataError(f"{where} has bbox {show_value(annotation['bbox'])}, not [x, y, width, height]; "
                                 "fix the annotation")
    if (crowd := coco_crowd_flag(annotation)) is None:
        raise DetectionDataError(f"{where} has iscrowd {show_value(annotation['iscrowd'])}, not 0 or 1; fix the "
                                 "annotation")
    area = coco_number(annotation.get("area", bbox[2] * bbox[3]))
    if area is None:
        raise DetectionDataError(f"{where} has area {show_value(annotation['area'])}, not a number; fix the "
                                 "annotation or leave the area out")
    return {"id": coco_integer(annotation["id"]), "image_id": coco_integer(annotation["image_id"]),
            "category_id": coco_integer(annotation["category_id"]), "bbox": bbox, "area": area,
            "iscrowd": int(crowd)}


def _results_name(results: list[dict] | str | Path) -> str:
    return str(results) if isinstance(results, str | Path) else "results"


def _read_results(results: list[dict] | str | Path) -> list[dict[str, Any]]:
    """Checked copies of the results (loadRes adds keys to the dicts it is given)."""
    where = _results_name(results)
    if isinstance(results, str | Path):
        results = load_json_file(results, what="results file", error=DetectionDataError,
                                 fix=f"pass a COCO results JSON ([{RESULT_ENTRY}, ...])")
    if not isinstance(results, list):
        raise DetectionDataError(f"{where}: a COCO results file is a JSON list of detections, not a "
                                 f"{type(results).__name__}")
    return [_result(entry, index, where) for index, entry in enumerate(results)]


RESULT_ENTRY = '{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": number}'
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def _result(entry: Any, index: int, where: str) -> dict[str, Any]:
    """One checked detection of a results list; raises, naming the entry and what is wrong with it in words."""
    if not isinstance(entry, dict):
        raise DetectionDataError(f"{where}: entry {index} is {show_value(entry)}, not an object; every detection "
                                 f"is {RESULT_ENTRY}")
    if missing := [key for key in RESULT_KEYS if key not in entry]:
        raise DetectionDataError(f"{where}: entry {index} lacks {_keys(missing)} ({show_value(entry)}); every "
                                 f"detection is {RESULT_ENTRY}")
    image_id, category_id = entry["image_id"], entry["category_id"]
    bbox, score = coco_box_numbers(entry["bbox"]), coco_number(entry["score"])
    wrong = [f"{key!r} is {show_value(entry[key])}, not an integer id" for key, value in
             (("image_id", image_id), ("category_id", category_id)) if isinstance(value, bool) or
             not isinstance(value, int)]
    if bbox is None:
        wrong.append(f"'bbox' is {show_value(entry['bbox'])}, not a list of four numbers [x, y, w, h]")
    if score is None:
        wrong.append(f"'score' is {show_value(entry['score'])}, not a number")
    if wrong:
        raise DetectionDataError(f"{where}: entry {index}: {'; '.join(wrong)}; every detection is {RESULT_ENTRY}")
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def _keys(names: Sequence[str]) -> str:
    """['score'] -> "the key 'score'", ['bbox', 'score'] -> "the keys 'bbox' and 'score'"."""
    quoted = [repr(name) for name in names]
    if len(quoted) == 1:
        return f"the key {quoted[0]}"
    return f"the keys {', '.join(quoted[:-1])} and {quoted[-1]}"


def format_coco_table(result: Mapping[str, Any]) -> str:
    """A Markdown table `category | AP (%) | AP50 (%)` of `evaluate_coco_results`, with mean rows."""

    def cell(ap: float) -> str:
        return "n/a (no ground truth)" if math.isnan(ap) else f"{100.0 * ap:.2f}"

    lines = ["| category | AP@[.5:.95] (%) | AP50 (%) |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {cell(ap)} | {cell(result['per_class_AP50'][name])} |"
              for name, ap in result["per_class"].items()]
    lines.append(f"| **mean** | **{cell(result['mAP'])}** | **{cell(result['AP50'])}** |")
    lines.append(f"| AP75 | {cell(result['AP75'])} | |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# COCO results files


def coco_results(
    detections_by_class: Mapping[str, Sequence[Detection]],
    records: Sequence[ImageRecord],
    categories: CocoCategories,
) -> list[dict[str, Any]]:
    """Detections (per class name, VOC file coordinates, image_id = a record's image_id) as a COCO results
    list: [{"image_id": the image's COCO id, "category_id": the dataset's id, "bbox": [x, y, w, h], "score"}]."""
    check_detection_classes(detections_by_class, categories.names)
    source_ids: dict[str, int] = {}
    for record in records:
        if record.source_id is None:
            raise ValueError(f"record {record.image_id!r} has no source_id: COCO results need records read by "
                             "load_coco")
        if record.image_id in source_ids:
            raise ValueError("the records hold a repeated image id; write the results of one annotations file")
        source_ids[record.image_id] = record.source_id
    results = []
    for label, name in enumerate(categories.names):
        for d in detections_by_class.get(name, ()):
            if d.image_id not in source_ids:
                raise DetectionDataError(
                    f"detection of {name!r} on image {d.image_id!r}, which is not in the evaluated records; "
                    "write the results with the records the detections were made on"
                )
            results.append({"image_id": source_ids[d.image_id], "category_id": categories.ids[label],
                            "bbox": coco_bbox(d.box), "score": float(d.score)})
    return results


def write_coco_results(path: str | Path, results: Sequence[Mapping[str, Any]]) -> None:
    """Write a COCO results JSON atomically, one detection a line (exact floats; NaN or infinity refused)."""
    lines = ",\n".join(json.dumps(dict(r), allow_nan=False) for r in results)
    atomic_write_text(f"[\n{lines}\n]\n" if results else "[]\n", path)
