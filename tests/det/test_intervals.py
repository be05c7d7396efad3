"""Bootstrap intervals of detection AP: the resampled AP against the project's AP code and COCOeval on the image
set written out with its copies, the point estimate against the reported AP, and the intervals the evaluations add."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from colt_core.intervals import Bootstrap
from colt_det.coco import CocoCategories
from colt_det.coco_eval import build_coco_ground_truth, coco_bbox, coco_results, evaluate_coco, evaluate_coco_results
from colt_det.data import Detection, ImageRecord, ObjectRecord
from colt_det.intervals import CocoMatches, VocMatches, evaluate_voc_metrics, first_counts
from colt_det.voc import VOC_CLASSES
from colt_det.voc_eval import ELEVEN_POINT_RECALLS, eval_class, evaluate_voc, match_voc

CLASSES = VOC_CLASSES[:5]


def _case(seed: int, images: int = 30, tied: bool = False) -> tuple[list[ImageRecord], dict[str, list[Detection]]]:
    """Random records of five classes (some objects difficult) and detections: jittered hits, some twice or with
    the wrong class, and background boxes; `tied` rounds the scores so that many tie, in an image too."""
    rng = np.random.default_rng(seed)
    records, detections = [], {name: [] for name in CLASSES}

    def score() -> float:
        return round(float(rng.random()), 1) if tied else float(rng.random())

    for i in range(images):
        objects = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.integers(1, 300, size=2)
            w, h = rng.integers(10, 150, size=2)
            name = str(rng.choice(CLASSES))
            objects.append(ObjectRecord(name=name, label=VOC_CLASSES.index(name),
                                        box=(float(x), float(y), float(x + w), float(y + h)),
                                        difficult=bool(rng.random() < 0.15), truncated=False))
        image_id = f"{i:06d}"
        records.append(ImageRecord(image_id, Path(f"{image_id}.jpg"), 500, 500, objects, "2007"))
        for obj in objects:
            for _ in range(rng.integers(0, 3)):
                name = obj.name if rng.random() < 0.8 else str(rng.choice(CLASSES))
                box = tuple((np.array(obj.box) + rng.normal(0, 8, size=4)).tolist())
                detections[name].append(Detection(image_id, score(), box))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(1, 400, size=2)
            box = (float(x), float(y), float(x + rng.integers(5, 100)), float(y + rng.integers(5, 100)))
            detections[str(rng.choice(CLASSES))].append(Detection(image_id, score(), box))
    return records, detections


def _written_out(records: list[ImageRecord], detections: dict[str, list[Detection]], counts: np.ndarray
                 ) -> tuple[list[ImageRecord], dict[str, list[Detection]]]:
    """The resample as an image set of its own: image i's counts[i] copies (new ids, listed where it was), and
    each detection followed by its copies on them."""
    index = {r.image_id: i for i, r in enumerate(records)}
    copies = [ImageRecord(f"{r.image_id}~{j}", r.image_path, r.width, r.height, r.objects, r.year)
              for i, r in enumerate(records) for j in range(counts[i])]
    return copies, {name: [Detection(f"{d.image_id}~{j}", d.score, d.box) for d in dets
                           for j in range(counts[index[d.image_id]])] for name, dets in detections.items()}


def _resamples(n: int, how_many: int = 3) -> list[np.ndarray]:
    return list(Bootstrap(seed=n, resamples=how_many).counts(n))


# ----- Pascal VOC ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,tied", [(0, False), (1, False), (2, True), (3, True)])
def test_the_voc_ap_of_a_resample_is_eval_class_on_the_image_set_with_its_copies(seed, tied):
    records, detections = _case(seed, tied=tied)
    matches = VocMatches.of(match_voc(detections, records, CLASSES))
    for counts in _resamples(len(records)):
        ap07, ap12 = matches.aps(counts)
        copies, copied = _written_out(records, detections, counts)
        for k, name in enumerate(CLASSES):
            expected = [eval_class(copied[name], copies, name, use_07_metric=use_07)[2] for use_07 in (True, False)]
            np.testing.assert_array_equal([ap07[k], ap12[k]], expected)  # bit for bit (NaN without ground truth)
        assert matches.maps(counts) == tuple(evaluate_voc(copied, copies, use_07_metric=use_07, classes=CLASSES)["mAP"]
                                             for use_07 in (True, False))


@pytest.mark.parametrize("seed,tied", [(4, False), (5, True)])
def test_the_voc_point_estimate_is_the_reported_map(seed, tied):
    records, detections = _case(seed, images=60, tied=tied)
    scores = evaluate_voc_metrics(detections, records, classes=CLASSES)
    assert VocMatches.of(match_voc(detections, records, CLASSES)).maps() == (scores["voc07"]["mAP"],
                                                                             scores["voc12"]["mAP"])
    for metric, use_07 in (("voc07", True), ("voc12", False)):
        assert scores[metric] == evaluate_voc(detections, records, use_07_metric=use_07, classes=CLASSES)


def test_evaluate_voc_metrics_adds_seeded_intervals_around_the_map():
    records, detections = _case(6, images=80)
    scores = evaluate_voc_metrics(detections, records, classes=CLASSES, bootstrap=Bootstrap(seed=1))
    for metric in ("voc07", "voc12"):
        lo, hi = scores[metric]["interval"]
        assert lo < scores[metric]["mAP"] < hi and hi - lo < 0.5
    again = evaluate_voc_metrics(detections, records, classes=CLASSES, bootstrap=Bootstrap(seed=1))
    other = evaluate_voc_metrics(detections, records, classes=CLASSES, bootstrap=Bootstrap(seed=2))
    assert again == scores and other["voc07"]["interval"] != scores["voc07"]["interval"]
    nothing = evaluate_voc_metrics({}, records, classes=CLASSES, bootstrap=Bootstrap(seed=1, resamples=50))
    assert nothing["voc07"]["interval"] == [0.0, 0.0]


def test_first_counts_is_the_smallest_count_whose_recall_reaches_each_threshold():
    coco = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)  # COCOeval's recall thresholds
    recalls = np.concatenate([ELEVEN_POINT_RECALLS, coco, np.random.default_rng(0).random(200), [1 / 3, 2 / 3]])
    positives = np.array([1, 2, 3, 7, 10, 30, 99, 100, 101, 997, 1000, 4096, 12345])
    needed = first_counts(positives, recalls)
    for n, row in zip(positives, needed, strict=True):
        brute = np.searchsorted(np.arange(n + 1) / float(n), recalls, side="left")
        np.testing.assert_array_equal(row, brute)


# ----- COCO ------------------------------------------------------------------------------------------
def _coco_matches(records: list[ImageRecord], detections: dict[str, list[Detection]]) -> CocoMatches:
    """COCOeval's matching of the detections on the records, as `evaluate_coco` runs it, re-accumulable."""
    ground_truth = build_coco_ground_truth(records, CLASSES)
    index = {r.image_id: k + 1 for k, r in enumerate(records)}
    results = [{"image_id": index[d.image_id], "category_id": c + 1, "bbox": coco_bbox(d.box), "score": d.score}
               for c, name in enumerate(CLASSES) for d in detections.get(name, ())]
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
    evaluator.evaluate()
    return CocoMatches.from_evaluator(evaluator)


@pytest.mark.parametrize("seed,tied", [(7, False), (8, True)])
def test_the_coco_point_estimate_is_cocoevals_ap_and_ap50(seed, tied, capsys):
    records, detections = _case(seed, images=40, tied=tied)
    result = evaluate_coco(detections, records, CLASSES)
    assert _coco_matches(records, detections).ap() == (result["mAP"], result["AP50"])


@pytest.mark.parametrize("seed", [9, 10])
def test_the_coco_ap_of_a_resample_is_cocoevals_on_the_image_set_with_its_copies(seed, capsys):
    records, detections = _case(seed)
    matches = _coco_matches(records, detections)
    for counts in _resamples(len(records)):
        copies, copied = _written_out(records, detections, counts)
        on_copies = evaluate_coco(copied, copies, CLASSES)
        assert matches.ap(counts) == (on_copies["mAP"], on_copies["AP50"])


def test_coco_evaluations_add_seeded_intervals(tmp_path: Path, capsys):
    records, detections = _case(11, images=60)
    bootstrap = Bootstrap(seed=3, resamples=200)
    result = evaluate_coco(detections, records, CLASSES, bootstrap=bootstrap)
    for key, interval in (("mAP", "interval"), ("AP50", "AP50_interval")):
        lo, hi = result[interval]
        assert lo <= result[key] <= hi and lo < hi
    assert evaluate_coco(detections, records, CLASSES, bootstrap=bootstrap) == result
    assert evaluate_coco({}, records, CLASSES, bootstrap=bootstrap)["interval"] == [0.0, 0.0]
    # A COCO results file against an instances file: the same re-accumulation, over the file's images.
    categories = CocoCategories(ids=tuple(range(1, 6)), names=tuple(CLASSES))
    instances = tmp_path / "instances.json"
    images = [{"id": 100 + k, "width": r.width, "height": r.height, "file_name": f"{r.image_id}.jpg"}
              for k, r in enumerate(records)]
    annotations = [{"id": len(images) * 10 + j, "image_id": 100 + k, "category_id": o.label + 1,
                    "bbox": coco_bbox(o.box), "area": coco_bbox(o.box)[2] * coco_bbox(o.box)[3],
                    "iscrowd": int(o.difficult)} for k, r in enumerate(records) for j, o in enumerate(r.objects)]
    for j, a in enumerate(annotations):
        a["id"] = j + 1
    instances.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}))
    sourced = [ImageRecord(r.image_id, r.image_path, r.width, r.height, r.objects, r.year, source_id=100 + k)
               for k, r in enumerate(records)]
    from_file = evaluate_coco_results(instances, coco_results(detections, sourced, categories), bootstrap=bootstrap)
    assert (from_file["mAP"], from_file["AP50"]) == (result["mAP"], result["AP50"])
    assert (from_file["interval"], from_file["AP50_interval"]) == (result["interval"], result["AP50_interval"])
