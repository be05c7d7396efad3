"""COCO-style AP through pycocotools on VOC records."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from colt_det.coco_eval import build_coco_ground_truth, evaluate_coco
from colt_det.data import ImageRecord, ObjectRecord
from colt_det.voc import VOC_CLASSES, load_voc_records
from colt_det.voc_eval import Detection


def _record(image_id: str, *objects: tuple[str, tuple[float, float, float, float], bool]) -> ImageRecord:
    return ImageRecord(
        image_id=image_id,
        image_path=Path(f"{image_id}.jpg"),
        width=200,
        height=200,
        objects=[
            ObjectRecord(name=n, label=VOC_CLASSES.index(n), box=b, difficult=d, truncated=False)
            for n, b, d in objects
        ],
        year="2007",
    )


def test_perfect_detections_score_one(synthetic_voc, capsys):
    records, _ = load_voc_records(synthetic_voc, "2007:test")
    detections: dict[str, list[Detection]] = {}
    for record in records:
        for obj in record.objects:
            detections.setdefault(obj.name, []).append(Detection(record.image_id, 0.9, obj.box))
    result = evaluate_coco(detections, records)
    assert set(result) == {"metric", "mAP", "AP50", "AP75", "per_class"} and result["metric"] == "coco"
    assert result["mAP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["AP75"] == pytest.approx(1.0)
    for name, ap in result["per_class"].items():
        has_gt = any(o.name == name and not o.difficult for r in records for o in r.objects)
        assert ap == pytest.approx(1.0) if has_gt else math.isnan(ap)
    assert capsys.readouterr().out == ""  # pycocotools' progress prints are captured


def test_shifted_box_lowers_ap75_but_not_ap50():
    records = [_record("a", ("dog", (11, 11, 50, 50), False))]  # 40 x 40 pixels
    # Shifted by 6 px: IoU = 34 * 40 / (2 * 1600 - 34 * 40) = 0.739, between 0.5 and 0.75.
    result = evaluate_coco({"dog": [Detection("a", 0.9, (17, 11, 56, 50))]}, records)
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP75"] == pytest.approx(0.0)
    assert 0.0 < result["mAP"] < 1.0
    assert result["per_class"]["dog"] == pytest.approx(result["mAP"])


def test_exact_box_is_exact_at_every_threshold():
    # The VOC -> COCO conversion must make an identical box IoU 1.0, so it survives IoU 0.95.
    records = [_record("a", ("cat", (1, 1, 10, 10), False))]
    result = evaluate_coco({"cat": [Detection("a", 0.5, (1, 1, 10, 10))]}, records)
    assert result["mAP"] == pytest.approx(1.0)
    ground_truth = build_coco_ground_truth(records)
    assert ground_truth.dataset["annotations"][0]["bbox"] == [0.0, 0.0, 10.0, 10.0]


def test_difficult_objects_are_ignored():
    records = [_record("a", ("dog", (11, 11, 50, 50), False), ("dog", (101, 101, 150, 150), True))]
    hit = Detection("a", 0.8, (11, 11, 50, 50))
    on_difficult = Detection("a", 0.9, (101, 101, 150, 150))
    assert evaluate_coco({"dog": [on_difficult, hit]}, records)["mAP"] == pytest.approx(1.0)
    assert evaluate_coco({"dog": [hit]}, records)["mAP"] == pytest.approx(1.0)
    ground_truth = build_coco_ground_truth(records)
    assert [a["iscrowd"] for a in ground_truth.dataset["annotations"]] == [0, 1]


def test_false_positives_lower_ap():
    records = [_record("a", ("dog", (11, 11, 50, 50), False)), _record("b", ("dog", (11, 11, 50, 50), False))]
    detections = [
        Detection("a", 0.9, (11, 11, 50, 50)),
        Detection("b", 0.8, (120, 120, 160, 160)),  # nothing there
        Detection("b", 0.7, (11, 11, 50, 50)),
    ]
    result = evaluate_coco({"dog": detections}, records)
    assert 0.5 < result["AP50"] < 1.0


def test_no_detections():
    records = [_record("a", ("dog", (11, 11, 50, 50), False))]
    result = evaluate_coco({}, records)
    assert result["mAP"] == 0.0 and result["AP50"] == 0.0 and result["per_class"]["dog"] == 0.0
    assert math.isnan(result["per_class"]["cat"])


def test_rejects_foreign_detections():
    records = [_record("a", ("dog", (11, 11, 50, 50), False))]
    with pytest.raises(ValueError, match="not in the evaluated image set"):
        evaluate_coco({"dog": [Detection("zzz", 0.9, (1, 1, 5, 5))]}, records)
    with pytest.raises(ValueError, match="unknown classes"):
        evaluate_coco({"unicorn": []}, records)


def test_means_agree_with_cocoeval_summary():
    # Our per-class means must reproduce COCOeval.summarize()'s headline numbers on a random case.
    rng = np.random.default_rng(0)
    classes = ("dog", "cat", "bird")
    records, detections = [], {c: [] for c in classes}
    for i in range(20):
        objects = []
        for _ in range(rng.integers(1, 4)):
            x, y = rng.integers(1, 120, size=2)
            box = (float(x), float(y), float(x + rng.integers(10, 70)), float(y + rng.integers(10, 70)))
            objects.append((str(rng.choice(classes)), box, bool(rng.random() < 0.1)))
            detections[objects[-1][0]].append(
                Detection(str(i), float(rng.random()), tuple((np.array(box) + rng.normal(0, 4, 4)).tolist()))
            )
        records.append(_record(str(i), *objects))
        detections[str(rng.choice(classes))].append(
            Detection(str(i), float(rng.random()), (5.0, 5.0, 60.0, 60.0))
        )

    result = evaluate_coco(detections, records)
    ground_truth = build_coco_ground_truth(records)
    results = [
        {
            "image_id": int(d.image_id) + 1,
            "category_id": VOC_CLASSES.index(name) + 1,
            "bbox": [d.box[0] - 1, d.box[1] - 1, d.box[2] - d.box[0] + 1, d.box[3] - d.box[1] + 1],
            "score": d.score,
        }
        for name, dets in detections.items()
        for d in dets
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert 0.0 < result["mAP"] < 1.0
    assert result["mAP"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert result["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-9)
    assert result["AP75"] == pytest.approx(evaluator.stats[2], abs=1e-9)
