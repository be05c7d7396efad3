"""COCO-style AP through pycocotools: on VOC records, and of COCO results files against COCO instances files."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from colt_det.coco import CocoCategories
from colt_det.coco_eval import (
    build_coco_ground_truth,
    coco_results,
    evaluate_coco,
    evaluate_coco_results,
    write_coco_results,
)
from colt_det.data import Detection, DetectionDataError, ImageRecord, ObjectRecord, xyxy_to_voc
from colt_det.voc import VOC_CLASSES, load_voc_records

REPO = Path(__file__).resolve().parents[2]


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


# ----------------------------------------------------------------------------------------------------------
# COCO data: a results file against an instances file

# Category 9 has only a crowd region: no ground truth to score, so NaN.
COCO_CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 8, "name": "dog"}, {"id": 9, "name": "crowd_only"}]
CROWD_BOX = [60.0, 60.0, 30.0, 30.0]
ONE = pytest.approx(1.0, abs=1e-15)


def _instances(rng: np.random.Generator) -> dict:
    images = [{"id": 100 + i, "file_name": f"{i}.jpg", "width": 120, "height": 100} for i in range(8)]
    annotations = []
    for image in images[:-1]:  # the last image has no annotations
        for _ in range(int(rng.integers(1, 4))):
            x, y = (float(v) for v in rng.integers(0, 60, size=2))
            w, h = (float(v) for v in rng.integers(8, 40, size=2))
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"],
                                "category_id": int(rng.choice([3, 8])), "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": 0})
    annotations.append({"id": len(annotations) + 1, "image_id": 101, "category_id": 8, "bbox": CROWD_BOX,
                        "area": 900.0, "iscrowd": 1})
    annotations.append({"id": len(annotations) + 1, "image_id": 102, "category_id": 9, "bbox": CROWD_BOX,
                        "area": 900.0, "iscrowd": 1})
    return {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}


def _records(data: dict) -> tuple[list[ImageRecord], CocoCategories]:
    """What load_coco gives for `data` (built here, without image files)."""
    categories = CocoCategories((3, 8, 9), ("cat", "dog", "crowd_only"))
    records = []
    for image in data["images"]:
        objects = [
            ObjectRecord(name=categories.names[categories.label_of(a["category_id"])],
                         label=categories.label_of(a["category_id"]),
                         box=xyxy_to_voc((a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                          a["bbox"][1] + a["bbox"][3])),
                         difficult=False, truncated=False, crowd=bool(a["iscrowd"]))
            for a in data["annotations"] if a["image_id"] == image["id"]
        ]
        records.append(ImageRecord(str(image["id"]), Path(image["file_name"]), image["width"], image["height"],
                                   objects, "", source_id=image["id"]))
    return records, categories


@pytest.fixture
def instances(tmp_path) -> tuple[Path, dict]:
    data = _instances(np.random.default_rng(0))
    path = tmp_path / "instances_test.json"
    path.write_text(json.dumps(data))
    return path, data


def _perfect(records: list[ImageRecord]) -> dict[str, list[Detection]]:
    detections: dict[str, list[Detection]] = {}
    for record in records:
        for obj in record.objects:
            if not obj.crowd:
                detections.setdefault(obj.name, []).append(Detection(record.image_id, 0.9, obj.box))
    return detections


def _direct(path: Path, results_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools on the files, as its own examples run it: the summary stats and the precision array."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(path))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(str(results_file)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, evaluator.eval["precision"][:, :, :, 0, 2]  # area "all", 100 detections


def test_coco_results_equal_pycocotools_on_the_written_file(instances, tmp_path, capsys):
    path, data = instances
    records, categories = _records(data)
    rng = np.random.default_rng(1)
    detections: dict[str, list[Detection]] = {name: [] for name in categories.names}
    for record in records:
        for obj in record.objects:
            if rng.random() < 0.8:  # some misses
                box = tuple((np.array(obj.box) + rng.normal(0.0, 2.0, 4)).tolist())
                detections[obj.name].append(Detection(record.image_id, float(rng.random()), box))
        # False positives, on the empty image too; one on the crowd region of image 101.
        detections[str(rng.choice(["cat", "dog"]))].append(Detection(record.image_id, float(rng.random()),
                                                                     (5.0, 5.0, 50.0, 45.0)))
    detections["dog"].append(Detection("101", 0.99, (61.0, 61.0, 80.0, 80.0)))
    results_file = tmp_path / "detections.json"
    write_coco_results(results_file, coco_results(detections, records, categories))

    result = evaluate_coco_results(path, results_file, categories=categories)
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured
    stats, precision = _direct(path, results_file)
    assert set(result) == {"metric", "mAP", "AP50", "AP75", "per_class", "per_class_AP50"}
    assert 0.2 < result["mAP"] < 0.9 and result["metric"] == "coco"
    assert result["mAP"] == pytest.approx(stats[0], abs=1e-12)
    assert result["AP50"] == pytest.approx(stats[1], abs=1e-12)
    assert result["AP75"] == pytest.approx(stats[2], abs=1e-12)
    for k, name in enumerate(categories.names):
        values = precision[:, :, k]
        if name == "crowd_only":
            assert (values == -1).all()
            assert math.isnan(result["per_class"][name]) and math.isnan(result["per_class_AP50"][name])
        else:
            assert result["per_class"][name] == pytest.approx(values.mean(), abs=1e-12)
            assert result["per_class_AP50"][name] == pytest.approx(values[0].mean(), abs=1e-12)
    # A results list gives the same numbers as the file, and is left as it was.
    as_list = coco_results(detections, records, categories)
    before = copy.deepcopy(as_list)
    assert evaluate_coco_results(path, as_list) == result
    assert as_list == before


def test_perfect_coco_detector_scores_one_and_crowd_hits_are_ignored(instances):
    path, data = instances
    records, categories = _records(data)
    detections = _perfect(records)
    result = evaluate_coco_results(path, coco_results(detections, records, categories))
    # pycocotools' precision is tp / (tp + fp + eps): a perfect score is 1 to within 1e-15.
    assert result["mAP"] == ONE and result["AP50"] == ONE and result["AP75"] == ONE
    assert result["per_class"]["cat"] == ONE and result["per_class_AP50"]["dog"] == ONE
    assert math.isnan(result["per_class"]["crowd_only"])
    # The best-scored dog detection lies on the crowd region of image 101: ignored, still perfect.
    on_crowd = Detection("101", 0.99, (61.0, 61.0, 90.0, 90.0))
    with_crowd_hit = {**detections, "dog": [on_crowd, *detections["dog"]]}
    assert evaluate_coco_results(path, coco_results(with_crowd_hit, records, categories))["mAP"] == ONE
    # The same box on an image without a crowd region is a false positive ranked first.
    elsewhere = {**detections, "dog": [Detection("103", 0.99, on_crowd.box), *detections["dog"]]}
    assert evaluate_coco_results(path, coco_results(elsewhere, records, categories))["per_class"]["dog"] < 0.99


def test_coco_results_evaluated_on_some_images(instances):
    path, data = instances
    records, categories = _records(data)
    only = [r for r in records if r.source_id == 100]
    result = evaluate_coco_results(path, coco_results(_perfect(only), only, categories), image_ids=[100])
    assert result["mAP"] == ONE  # over all images the other images' objects would be misses
    assert evaluate_coco_results(path, coco_results(_perfect(only), only, categories))["mAP"] < 0.5
    with pytest.raises(DetectionDataError, match=r"image id\(s\) \[100\], which are not among the evaluated images"):
        evaluate_coco_results(path, coco_results(_perfect(only), only, categories), image_ids=[101])


def test_no_coco_results_score_zero(instances, tmp_path):
    path, _ = instances
    results_file = tmp_path / "none.json"
    write_coco_results(results_file, [])
    for results in ([], results_file):
        result = evaluate_coco_results(path, results)
        assert result["mAP"] == 0.0 and result["AP50"] == 0.0 and result["AP75"] == 0.0
        assert result["per_class"]["cat"] == 0.0 and result["per_class_AP50"]["dog"] == 0.0
        assert math.isnan(result["per_class"]["crowd_only"])


def test_coco_results_bad_input(instances, tmp_path):
    path, data = instances
    good = {"image_id": 100, "category_id": 3, "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.5}
    with pytest.raises(DetectionDataError, match=rf"detections on image id\(s\) \[7\], which are not among the "
                                                 rf"images of {re.escape(str(path))}"):
        evaluate_coco_results(path, [good, {**good, "image_id": 7}])
    with pytest.raises(DetectionDataError, match=r"category id\(s\) \[4\], which are not categories of"):
        evaluate_coco_results(path, [{**good, "category_id": 4}])
    with pytest.raises(DetectionDataError, match=r"results: entry 1: 'bbox' is \[1, 2, 3\], not a list of four "
                                                 r"numbers \[x, y, w, h\]; every detection is \{\"image_id\": int"):
        evaluate_coco_results(path, [good, {**good, "bbox": [1, 2, 3]}])
    missing = tmp_path / "missing.json"
    with pytest.raises(DetectionDataError, match=f"{re.escape(str(missing))}: results file not found"):
        evaluate_coco_results(path, missing)
    (tmp_path / "dict.json").write_text("{}")
    with pytest.raises(DetectionDataError, match="a COCO results file is a JSON list of detections, not a dict"):
        evaluate_coco_results(path, tmp_path / "dict.json")
    other = CocoCategories((3, 8, 9), ("cat", "dog", "bird"), source="train.json")
    with pytest.raises(DetectionDataError, match=f"{re.escape(str(path))}: categories differ from those of "
                                                 "train.json"):
        evaluate_coco_results(path, [good], categories=other)
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    path.write_text(json.dumps(data))
    with pytest.raises(DetectionDataError, match=r"annotations ids \[1\] appear more than once"):
        evaluate_coco_results(path, [good])


def _eval_tool():
    spec = importlib.util.spec_from_file_location("eval_det_tool", REPO / "tools" / "eval_det.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_eval_det_tool_on_a_coco_results_file(instances, tmp_path):
    path, data = instances
    records, categories = _records(data)
    results_file = tmp_path / "detections.json"
    write_coco_results(results_file, coco_results(_perfect(records[:4]), records, categories))
    out = tmp_path / "ap.json"
    main, runner = _eval_tool(), CliRunner()
    result = runner.invoke(main, ["--coco-annotations", str(path), "--results", str(results_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = evaluate_coco_results(path, results_file)
    saved = json.loads(out.read_text())
    assert saved["mAP"] == pytest.approx(expected["mAP"]) and saved["per_class_AP50"]["cat"] == pytest.approx(
        expected["per_class_AP50"]["cat"])
    assert math.isnan(saved["per_class"]["crowd_only"])
    assert f"| dog | {100 * expected['per_class']['dog']:.2f} | {100 * expected['per_class_AP50']['dog']:.2f} |" \
        in result.output
    assert "| crowd_only | n/a (no ground truth) |" in result.output

    write_coco_results(results_file, [{"image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 2], "score": 0.5}])
    bad = runner.invoke(main, ["--coco-annotations", str(path), "--results", str(results_file)])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and bad.output.count("\n") == 1
    assert "detections on image id(s) [7]" in bad.output
    for args in (["--voc-root", str(tmp_path)], ["--metric", "voc07"], ["--checkpoint", str(results_file)]):
        usage = runner.invoke(main, ["--coco-annotations", str(path), "--results", str(results_file), *args])
        assert usage.exit_code == 2, usage.output
    neither = runner.invoke(main, ["--results", str(results_file)])
    assert neither.exit_code == 2 and "--voc-root DIR (Pascal VOC) or --coco-annotations FILE" in neither.output


GOOD = {"image_id": 100, "category_id": 3, "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.5}
SHAPE = '; every detection is {"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": number}'


@pytest.mark.parametrize("entry, problem", [
    ({k: v for k, v in GOOD.items() if k != "score"},
     "entry 1 lacks the key 'score' ({'bbox': [1.0, 1.0, 5.0, 5.0], 'category_id': 3, 'image_id': 100})"),
    ({"image_id": 100, "category_id": 3}, "entry 1 lacks the keys 'bbox' and 'score' ({'category_id': 3, "
                                          "'image_id': 100})"),
    ({**GOOD, "score": "0.5"}, "entry 1: 'score' is '0.5', not a number"),
    ({**GOOD, "score": 10**400}, "entry 1: 'score' is 100000000000000000...0000000000000000000, not a number"),
    ({**GOOD, "bbox": "1234"}, "entry 1: 'bbox' is '1234', not a list of four numbers [x, y, w, h]"),
    ({**GOOD, "image_id": "100", "category_id": 3.0},
     "entry 1: 'image_id' is '100', not an integer id; 'category_id' is 3.0, not an integer id"),
    ([100, 3, [1, 1, 5, 5], 0.5], "entry 1 is [100, 3, [1, 1, 5, 5], 0.5], not an object"),
])
def test_a_bad_results_entry_says_which_key_is_missing_or_wrong(instances, tmp_path, entry, problem):
    path, _ = instances
    results_file = tmp_path / "detections.json"
    results_file.write_text(json.dumps([GOOD, entry]))
    with pytest.raises(DetectionDataError) as info:
        evaluate_coco_results(path, results_file)
    assert str(info.value) == f"{results_file}: {problem}{SHAPE}"


@pytest.mark.parametrize("content, fragment", [
    (b"[" * 100_000 + b"]" * 100_000, "results file nests its lists or objects too deeply to be read"),
    ('[{"image_id": 100, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5, "note": "é"}]'.encode("latin-1"),
     "results file is not UTF-8 text (byte 82: invalid continuation byte), as JSON files are"),
    (b'[{"image_id": 100,', "results file is not valid JSON (Expecting property name enclosed in double quotes at "
                            "line 1 column 19)"),
])
def test_an_unreadable_results_file_is_one_error_line_naming_it(instances, tmp_path, content, fragment):
    path, _ = instances
    results_file = tmp_path / "detections.json"
    results_file.write_bytes(content)
    with pytest.raises(DetectionDataError) as info:
        evaluate_coco_results(path, results_file)
    message = str(info.value)
    assert message.startswith(f"{results_file}: {fragment}") and message.endswith("; pass a COCO results JSON "
                                                                                '([{"image_id": int, "category_id": '
                                                                                'int, "bbox": [x, y, w, h], "score": '
                                                                                'number}, ...])'), message
    result = CliRunner().invoke(_eval_tool(), ["--coco-annotations", str(path), "--results", str(results_file)])
    assert result.exit_code == 1 and result.output == f"Error: {info.value}\n"


@pytest.mark.parametrize("change, problem", [
    ({"iscrowd": "no"}, "has iscrowd 'no', not 0 or 1"),
    ({"area": "large"}, "has area 'large', not a number; fix the annotation or leave the area out"),
    ({"bbox": {"x": 1}}, "has bbox {'x': 1}, not [x, y, width, height]"),
])
def test_malformed_ground_truth_is_a_data_error_not_a_pycocotools_crash(instances, change, problem):
    path, data = instances
    data["annotations"][0].update(change)
    path.write_text(json.dumps(data))
    first = data["annotations"][0]
    with pytest.raises(DetectionDataError) as info:
        evaluate_coco_results(path, [GOOD])
    assert str(info.value).startswith(f"{path}: annotation {first['id']} (image {first['image_id']}) {problem}")


def test_ground_truth_without_area_or_iscrowd_and_with_integral_float_ids_is_evaluated(instances, tmp_path):
    path, data = instances
    records, categories = _records(data)
    results = coco_results(_perfect(records), records, categories)
    expected = evaluate_coco_results(path, results)
    for annotation in data["annotations"]:
        if not annotation["iscrowd"]:
            del annotation["area"], annotation["iscrowd"]
        annotation["image_id"] = float(annotation["image_id"])  # "101.0" from some exporters
    path.write_text(json.dumps(data))
    assert evaluate_coco_results(path, results) == expected
