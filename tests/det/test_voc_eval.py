"""VOC AP: hand-computed cases, the reference algorithm's rules, results files and model-output conversion."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from colt_det.data import (
    Detection,
    DetectionDataError,
    DetectionDataset,
    ImageRecord,
    ObjectRecord,
    detections_from_outputs,
)
from colt_det.metrics import evaluate_detections
from colt_det.voc import VOC_CLASSES, load_voc_records
from colt_det.voc_eval import (
    eval_class,
    evaluate_voc,
    format_per_class_table,
    read_results_files,
    voc_ap,
    write_results_files,
)


def _record(image_id: str, *objects: tuple[str, tuple[float, float, float, float], bool]) -> ImageRecord:
    return ImageRecord(
        image_id=image_id,
        image_path=Path(f"{image_id}.jpg"),
        width=500,
        height=500,
        objects=[
            ObjectRecord(name=n, label=VOC_CLASSES.index(n), box=b, difficult=d, truncated=False)
            for n, b, d in objects
        ],
        year="2007",
    )


def _box(x: float, y: float, size: float = 20) -> tuple[float, float, float, float]:
    return (x, y, x + size - 1, y + size - 1)


# ---------------------------------------------------------------------------------------------------------
# voc_ap and eval_class on cases worked out by hand


def test_perfect_detector_scores_one():
    records = [_record("a", ("dog", _box(1, 1), False), ("dog", _box(100, 100), False)), _record("b")]
    detections = [Detection("a", 0.9, _box(1, 1)), Detection("a", 0.8, _box(100, 100))]
    for use_07 in (True, False):
        rec, prec, ap = eval_class(detections, records, "dog", use_07_metric=use_07)
        assert ap == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_array_equal(rec, [0.5, 1.0])
        np.testing.assert_array_equal(prec, [1.0, 1.0])


# Four ground truth boxes; ranked detections are TP, FP, TP, FP, TP.
#   recall    = .25 .25  .5  .5  .75
#   precision = 1   1/2  2/3 1/2 3/5
# Area (VOC2010+): precision envelope 1 on (0, .25], 2/3 on (.25, .5], 3/5 on (.5, .75]:
#   .25 * 1 + .25 * 2/3 + .25 * 3/5 = 0.5666...
# 11-point (VOC2007): thresholds 0, .1, .2 -> 1; .3, .4, .5 -> 2/3; .6, .7 -> 3/5; .8, .9, 1 -> 0:
#   (3 + 2 + 1.2) / 11 = 0.5636...
KNOWN_REC = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
KNOWN_PREC = np.array([1.0, 0.5, 2 / 3, 0.5, 0.6])
KNOWN_AREA_AP = 0.25 + 0.25 * 2 / 3 + 0.25 * 0.6
KNOWN_11PT_AP = (3 + 2 + 1.2) / 11


def test_known_curve_through_voc_ap():
    assert voc_ap(KNOWN_REC, KNOWN_PREC, use_07_metric=False) == pytest.approx(KNOWN_AREA_AP, abs=1e-12)
    assert voc_ap(KNOWN_REC, KNOWN_PREC, use_07_metric=True) == pytest.approx(KNOWN_11PT_AP, abs=1e-12)


def test_known_curve_through_eval_class():
    records = [
        _record("a", ("cat", _box(1, 1), False), ("cat", _box(200, 200), False)),
        _record(
            "b", ("cat", _box(50, 50), False), ("cat", _box(300, 300), False), ("dog", _box(1, 1), False)
        ),
    ]
    detections = [  # deliberately not in score order
        Detection("b", 0.5, _box(300, 300)),  # TP
        Detection("a", 0.9, _box(1, 1)),  # TP
        Detection("b", 0.8, _box(1, 1)),  # FP: a dog, not a cat
        Detection("a", 0.6, _box(400, 400)),  # FP: nothing there
        Detection("b", 0.7, _box(50, 50)),  # TP
    ]
    for use_07, expected in ((False, KNOWN_AREA_AP), (True, KNOWN_11PT_AP)):
        rec, prec, ap = eval_class(detections, records, "cat", use_07_metric=use_07)
        np.testing.assert_allclose(rec, KNOWN_REC, atol=1e-12)
        np.testing.assert_allclose(prec, KNOWN_PREC, atol=1e-12)
        assert ap == pytest.approx(expected, abs=1e-12)


def test_eleven_point_thresholds_are_the_references_floats():
    # The reference's thresholds are np.arange(0., 1.1, 0.1), so its "0.6" is 0.6000000000000001 and a
    # recall of exactly 3/5 does not reach it: AP = (1 * 6 thresholds 0 .. .5) / 11, not 7 / 11.
    rec = np.array([0.2, 0.4, 0.6])
    prec = np.array([1.0, 1.0, 1.0])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(6 / 11, abs=1e-12)


def test_difficult_objects_are_neither_misses_nor_false_positives():
    records = [_record("a", ("dog", _box(1, 1), False), ("dog", _box(100, 100), True))]
    on_difficult = Detection("a", 0.95, _box(100, 100))
    on_normal = Detection("a", 0.9, _box(1, 1))
    rec, prec, ap = eval_class([on_difficult, on_normal], records, "dog", use_07_metric=False)
    assert ap == pytest.approx(1.0)
    # The ignored detection keeps its rank but adds neither a TP nor an FP.
    np.testing.assert_array_equal(rec, [0.0, 1.0])
    np.testing.assert_array_equal(prec, [0.0, 1.0])
    # Missing the difficult object costs nothing either.
    assert eval_class([on_normal], records, "dog", use_07_metric=True)[2] == pytest.approx(1.0)


def test_duplicate_detections_are_false_positives():
    records = [_record("a", ("dog", _box(1, 1), False)), _record("b", ("dog", _box(1, 1), False))]
    detections = [
        Detection("a", 0.9, _box(1, 1)),
        Detection("a", 0.8, _box(2, 1)),  # second hit on the same object
        Detection("b", 0.7, _box(1, 1)),
    ]
    rec, prec, ap = eval_class(detections, records, "dog", use_07_metric=False)
    np.testing.assert_allclose(prec, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_iou_exactly_half_is_not_a_match():
    records = [_record("a", ("dog", (1, 1, 10, 10), False))]  # 10 x 10 pixels with the +1 convention
    half = Detection("a", 0.9, (1, 1, 10, 20))  # 10 x 20: intersection 100 / union 200 = 0.5 exactly
    above = Detection("a", 0.9, (1, 1, 10, 19))  # 100 / 190
    assert eval_class([half], records, "dog", use_07_metric=False)[2] == 0.0
    assert eval_class([above], records, "dog", use_07_metric=False)[2] == pytest.approx(1.0)
    assert eval_class([above], records, "dog", iou_threshold=0.55, use_07_metric=False)[2] == 0.0


def test_best_overlap_already_taken_is_a_false_positive():
    # As in the reference: a detection is judged against its highest-IoU box only, even if a second box
    # it also overlaps by more than 0.5 is still free.
    records = [_record("a", ("dog", (1, 1, 10, 10), False), ("dog", (3, 1, 12, 10), False))]
    detections = [Detection("a", 0.9, (1, 1, 10, 10)), Detection("a", 0.8, (1, 1, 11, 10))]
    rec, prec, _ = eval_class(detections, records, "dog", use_07_metric=False)
    np.testing.assert_allclose(rec, [0.5, 0.5])
    np.testing.assert_allclose(prec, [1.0, 0.5])


def test_no_detections_and_no_ground_truth():
    records = [_record("a", ("dog", _box(1, 1), False), ("cat", _box(50, 50), True))]
    rec, prec, ap = eval_class([], records, "dog", use_07_metric=True)
    assert ap == 0.0 and rec.shape == prec.shape == (0,)
    assert math.isnan(eval_class([], records, "cat", use_07_metric=True)[2])  # only a difficult cat
    assert math.isnan(eval_class([Detection("a", 0.5, _box(1, 1))], records, "bird", use_07_metric=False)[2])


def test_ties_keep_input_order():
    records = [_record("a", ("dog", _box(1, 1), False))]
    miss, hit = Detection("a", 0.5, _box(200, 200)), Detection("a", 0.5, _box(1, 1))
    assert eval_class([miss, hit], records, "dog", use_07_metric=False)[1].tolist() == [0.0, 0.5]
    assert eval_class([hit, miss], records, "dog", use_07_metric=False)[1].tolist() == [1.0, 0.5]


# ---------------------------------------------------------------------------------------------------------
# Agreement with a plain re-implementation of the reference algorithm


def reference_eval(detections, records, class_name, use_07_metric, threshold=0.5):
    """The published algorithm written out with plain loops (boxes in VOC coords, +1 areas)."""
    gt = {}
    npos = 0
    for r in records:
        objs = [o for o in r.objects if o.name == class_name]
        gt[r.image_id] = {
            "boxes": [o.box for o in objs],
            "difficult": [o.difficult for o in objs],
            "det": [False] * len(objs),
        }
        npos += sum(not o.difficult for o in objs)
    ranked = sorted(detections, key=lambda d: -d.score)  # Python's sort is stable
    tp, fp = [], []
    for d in ranked:
        g = gt[d.image_id]
        best, best_j = -float("inf"), -1
        for j, b in enumerate(g["boxes"]):
            iw = max(min(b[2], d.box[2]) - max(b[0], d.box[0]) + 1.0, 0.0)
            ih = max(min(b[3], d.box[3]) - max(b[1], d.box[1]) + 1.0, 0.0)
            inter = iw * ih
            union = (
                (d.box[2] - d.box[0] + 1.0) * (d.box[3] - d.box[1] + 1.0)
                + (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
                - inter
            )
            if inter / union > best:
                best, best_j = inter / union, j
        t = f = 0
        if best > threshold:
            if not g["difficult"][best_j]:
                if not g["det"][best_j]:
                    t, g["det"][best_j] = 1, True
                else:
                    f = 1
        else:
            f = 1
        tp.append(t)
        fp.append(f)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    rec = ctp / float(npos)
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (np.max(prec[rec >= t]) if np.sum(rec >= t) else 0.0) / 11.0
    else:
        mrec = [0.0, *rec.tolist(), 1.0]
        mpre = [0.0, *prec.tolist(), 0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        ap = sum(
            (mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i]
        )
    return rec, prec, ap


def _random_case(seed: int, classes=("dog", "cat", "bird")):
    rng = np.random.default_rng(seed)
    records, detections = [], {c: [] for c in classes}
    for i in range(25):
        objects = []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.integers(1, 300, size=2)
            w, h = rng.integers(10, 150, size=2)
            objects.append(
                (
                    str(rng.choice(classes)),
                    (float(x), float(y), float(x + w), float(y + h)),
                    bool(rng.random() < 0.15),
                )
            )
        records.append(_record(f"{i:06d}", *objects))
        for name, box, _ in objects:  # jittered hits, sometimes twice, sometimes with the wrong class
            for _ in range(rng.integers(0, 3)):
                jitter = rng.normal(0, 8, size=4)
                label = name if rng.random() < 0.8 else str(rng.choice(classes))
                detections[label].append(
                    Detection(f"{i:06d}", float(rng.random()), tuple((np.array(box) + jitter).tolist()))
                )
        for _ in range(rng.integers(0, 3)):  # background hits
            x, y = rng.integers(1, 400, size=2)
            box = (float(x), float(y), float(x + rng.integers(5, 100)), float(y + rng.integers(5, 100)))
            detections[str(rng.choice(classes))].append(Detection(f"{i:06d}", float(rng.random()), box))
    return records, detections


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_reference_algorithm_on_random_inputs(seed):
    records, detections = _random_case(seed)
    for name, dets in detections.items():
        for use_07 in (True, False):
            rec, prec, ap = eval_class(dets, records, name, use_07_metric=use_07)
            ref_rec, ref_prec, ref_ap = reference_eval(dets, records, name, use_07)
            np.testing.assert_allclose(rec, ref_rec, atol=1e-6)
            np.testing.assert_allclose(prec, ref_prec, atol=1e-6)
            assert ap == pytest.approx(ref_ap, abs=1e-6)
            assert 0.0 < ap < 1.0  # the random case is neither trivial nor empty


# ---------------------------------------------------------------------------------------------------------
# evaluate_voc, results files, model outputs, tables


def test_evaluate_voc_result_shape():
    records, detections = _random_case(0)
    result = evaluate_voc(detections, records, use_07_metric=True)
    assert set(result) == {"metric", "mAP", "per_class"} and result["metric"] == "voc07"
    assert list(result["per_class"]) == list(VOC_CLASSES)
    assert math.isnan(result["per_class"]["aeroplane"])  # no ground truth: NaN, left out of the mean
    defined = [result["per_class"][c] for c in ("dog", "cat", "bird")]
    assert result["mAP"] == pytest.approx(np.mean(defined))
    assert evaluate_voc(detections, records, use_07_metric=False)["metric"] == "voc12"


def test_evaluate_detections_by_metric_name():
    records, detections = _random_case(2)
    for metric, use_07 in (("voc07", True), ("voc12", False)):
        result = evaluate_detections(detections, records, metric)
        assert result["metric"] == metric
        assert result["mAP"] == evaluate_voc(detections, records, use_07_metric=use_07)["mAP"]
    coco = evaluate_detections(detections, records, "coco")
    assert coco["metric"] == "coco" and 0.0 < coco["mAP"] < coco["AP50"]
    with pytest.raises(ValueError, match="expected one of voc07, voc12, coco"):
        evaluate_detections(detections, records, "voc")


def test_evaluate_voc_rejects_foreign_detections():
    records, _ = _random_case(0)
    with pytest.raises(ValueError, match="unknown classes"):
        evaluate_voc({"unicorn": []}, records, use_07_metric=True)
    with pytest.raises(DetectionDataError, match="'999999', which is not in the evaluated image set"):
        evaluate_voc({"dog": [Detection("999999", 0.5, _box(1, 1))]}, records, use_07_metric=True)


def test_results_files_round_trip(tmp_path):
    records, detections = _random_case(1)
    detections["person"] = []
    paths = write_results_files(tmp_path / "results", detections)
    assert [p.name for p in paths] == [f"comp4_det_test_{c}.txt" for c in detections]
    assert (tmp_path / "results" / "comp4_det_test_person.txt").read_text() == ""
    first = (tmp_path / "results" / "comp4_det_test_dog.txt").read_text().splitlines()[0].split()
    assert len(first) == 6 and first[0] == detections["dog"][0].image_id
    read = read_results_files(tmp_path / "results", classes=("dog", "cat", "bird", "person"))
    assert read == detections
    for use_07 in (True, False):
        from_files = evaluate_voc(read, records, use_07_metric=use_07)
        in_memory = evaluate_voc(detections, records, use_07_metric=use_07)
        assert from_files["mAP"] == in_memory["mAP"]
        np.testing.assert_array_equal(
            list(from_files["per_class"].values()), list(in_memory["per_class"].values())
        )


def test_results_files_missing_and_malformed(tmp_path, caplog):
    with pytest.raises(DetectionDataError, match="results directory not found"):
        read_results_files(tmp_path / "nowhere")
    with pytest.raises(DetectionDataError, match=r"no results files named comp4_det_test_<class>\.txt"):
        read_results_files(tmp_path)
    (tmp_path / "comp4_det_test_dog.txt").write_text("000001 0.9 1 1 10 10\n\n000002 0.8 1 1 10\n")
    with pytest.raises(DetectionDataError, match=r"comp4_det_test_dog\.txt:3: malformed line '000002 0\.8 1 1 10'"):
        read_results_files(tmp_path)
    (tmp_path / "comp4_det_test_dog.txt").write_text("000001 high 1 1 10 10\n")
    with pytest.raises(DetectionDataError, match=r"comp4_det_test_dog\.txt:1: malformed line"):
        read_results_files(tmp_path)
    (tmp_path / "comp4_det_test_dog.txt").write_text("000001 0.9 1 1 10 10\n")
    with caplog.at_level(logging.WARNING, logger="colt_det.voc_eval"):
        read = read_results_files(tmp_path)
    assert read["dog"] == [Detection("000001", 0.9, (1.0, 1.0, 10.0, 10.0))] and read["cat"] == []
    assert "no results file for aeroplane" in caplog.text


def test_write_rejects_unwritable_image_ids(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_results_files(tmp_path, {"dog": [Detection("a b", 0.5, _box(1, 1))]})


def test_detections_from_outputs():
    outputs = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.5, 5.0, 20.0, 30.0]]),
            "labels": torch.tensor([2, 1]),
            "scores": torch.tensor([0.9, 0.25]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)},
    ]
    result = detections_from_outputs(["img1", "img2"], outputs, ["dog", "cat", "bird"])
    assert result["cat"] == [Detection("img1", pytest.approx(0.9), (1.0, 1.0, 10.0, 10.0))]
    assert result["dog"] == [Detection("img1", 0.25, (5.5, 6.0, 20.0, 30.0))]
    assert result["bird"] == []
    with pytest.raises(ValueError, match="label 0"):
        detections_from_outputs(["x"], [{**outputs[0], "labels": torch.tensor([0, 1])}], ["dog", "cat"])
    with pytest.raises(ValueError, match="aligned"):
        detections_from_outputs(["x", "y"], outputs[:1], ["dog"])


def test_ground_truth_targets_evaluate_perfectly(synthetic_voc):
    # Dataset targets (torchvision coordinates) fed back as outputs must land exactly on the XML boxes.
    records, _ = load_voc_records(synthetic_voc, "2007:test")
    dataset = DetectionDataset(records, classes=VOC_CLASSES)
    outputs = []
    for i in range(len(dataset)):
        target = dataset[i][1]
        outputs.append({**target, "scores": torch.linspace(1.0, 0.5, len(target["labels"]))})
    detections = detections_from_outputs(dataset.image_ids, outputs, dataset.label_names)
    result = evaluate_voc(detections, records, use_07_metric=False)
    defined = [ap for ap in result["per_class"].values() if not math.isnan(ap)]
    assert defined and all(ap == pytest.approx(1.0) for ap in defined)
    assert result["mAP"] == pytest.approx(1.0)


def test_per_class_table():
    result = {"metric": "voc07", "mAP": 0.5, "per_class": {"dog": 0.25, "cat": 0.75, "bird": math.nan}}
    table = format_per_class_table(result)
    lines = table.strip().splitlines()
    assert lines[0] == "| class | AP voc07 (%) |"
    assert "| dog | 25.00 |" in lines and "| cat | 75.00 |" in lines
    assert "| bird | n/a (no ground truth) |" in lines
    assert lines[-1] == "| **mAP** | **50.00** |"
