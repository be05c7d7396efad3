"""COCO instances files: reading into records, category ids, bad input, results lists."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colt_det.coco import NOT_COCO, CocoCategories, coco_bbox, load_coco
from colt_det.coco_eval import coco_results, write_coco_results
from colt_det.data import Detection, DetectionDataError, DetectionDataset, voc_to_xyxy, xyxy_to_voc

# Out of id order and with gaps: labels follow ascending ids, cat 0, dog 1, person 2.
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 40, "name": "person"}]
IMAGES = [
    {"id": 11, "file_name": "a.jpg", "width": 64, "height": 48},
    {"id": 5, "file_name": "b.jpg", "width": 64, "height": 48},
    {"id": 30, "file_name": "c.jpg", "width": 64, "height": 48},  # no annotations
]
ANNOTATIONS = [
    {"id": 1, "image_id": 11, "category_id": 7, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
    {"id": 2, "image_id": 11, "category_id": 40, "bbox": [29.5, 4.25, 34.5, 43.75], "iscrowd": 0},  # to the border
    {"id": 3, "image_id": 5, "category_id": 2, "bbox": [9, 9, 21, 31], "iscrowd": 1},
]


def write_coco(
    root: Path,
    images: list[dict] | None = None,
    annotations: list[dict] | None = None,
    categories: list[dict] | None = None,
    *,
    name: str = "instances.json",
) -> tuple[Path, Path]:
    """An images folder of grey JPEGs (sized as the entries say) and an instances file, written by hand."""
    images = copy.deepcopy(IMAGES if images is None else images)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        size = (image.get("width") or 8, image.get("height") or 8)
        Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(images_dir / image["file_name"])
    path = root / "annotations" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "images": images,
        "annotations": copy.deepcopy(ANNOTATIONS if annotations is None else annotations),
        "categories": copy.deepcopy(CATEGORIES if categories is None else categories),
    }))
    return images_dir, path


@pytest.fixture
def coco(tmp_path) -> tuple[Path, Path]:
    return write_coco(tmp_path / "coco")


def test_reads_images_objects_and_categories(coco):
    images_dir, path = coco
    records, categories, stats = load_coco([coco])
    assert categories == CocoCategories((2, 7, 40), ("cat", "dog", "person"))
    assert categories.source == str(path) and len(categories) == 3
    assert [r.image_id for r in records] == ["11", "5", "30"]  # the file's order
    first = records[0]
    assert first.source_id == 11 and first.year == ""
    assert first.image_path == images_dir / "a.jpg" and (first.width, first.height) == (64, 48)
    assert [(o.name, o.label) for o in first.objects] == [("dog", 1), ("person", 2)]
    assert first.objects[0].box == (1.0, 1.0, 20.0, 20.0)
    assert not any(o.difficult or o.truncated or o.crowd for o in first.objects)
    (crowd,) = records[1].objects
    assert crowd.crowd and crowd.ignored and crowd.label == 0 and crowd.name == "cat"
    assert records[2].objects == []
    assert stats.num_skipped == 0 and stats.as_dict()["objects"] == 0

    dataset = DetectionDataset(records, classes=categories.names)
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[0.0, 0.0, 20.0, 20.0], [29.5, 4.25, 64.0, 48.0]]
    assert target["labels"].tolist() == [2, 3]
    assert dataset[1][1]["labels"].tolist() == []  # a crowd region is never a target


def test_category_ids_map_to_labels():
    categories = CocoCategories((2, 7, 40), ("cat", "dog", "person"))
    assert [categories.label_of(i) for i in (2, 7, 40)] == [0, 1, 2]
    with pytest.raises(DetectionDataError, match=r"category id 3 is not one of \[2, 7, 40\]"):
        categories.label_of(3)
    with pytest.raises(ValueError, match="not strictly ascending"):
        CocoCategories((7, 2), ("dog", "cat"))
    with pytest.raises(ValueError, match="not unique"):
        CocoCategories((1, 2), ("dog", "dog"))
    with pytest.raises(ValueError, match="aligned"):
        CocoCategories((1, 2), ("dog",))
    assert CocoCategories((1,), ("a",), source="x.json") == CocoCategories((1,), ("a",), source="y.json")


def test_box_conversion_is_exact():
    # COCO [x, y, w, h] is continuous xyxy (x, y, x + w, y + h); voc_to_xyxy gives it back, coco_bbox too.
    rng = random.Random(0)
    for _ in range(500):
        x, y = (rng.randint(0, 600) + rng.choice([0.0, 0.5, 0.25, 0.75, 0.125]) for _ in range(2))
        w, h = (rng.randint(1, 300) + rng.choice([0.0, 0.5, 0.25]) for _ in range(2))
        box = xyxy_to_voc((x, y, x + w, y + h))
        assert voc_to_xyxy(box) == (x, y, x + w, y + h)
        assert coco_bbox(box) == [x, y, w, h]
    # Values COCO files round to two decimals are exact to float precision.
    for _ in range(500):
        x, y, w, h = (round(rng.uniform(0.0, 500.0), 2) for _ in range(4))
        assert coco_bbox(xyxy_to_voc((x, y, x + w, y + h))) == pytest.approx([x, y, w, h], abs=1e-9)


def test_read_boxes_round_trip(coco):
    records, _, _ = load_coco([coco])
    boxes = [coco_bbox(o.box) for r in records for o in r.objects]
    assert boxes == [a["bbox"] for a in ANNOTATIONS]


def test_boxes_within_a_pixel_of_the_border_are_clipped(tmp_path):
    annotations = [
        {"id": 1, "image_id": 11, "category_id": 7, "bbox": [-0.5, -1.0, 64.9, 10], "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 2, "bbox": [60, 40, 5, 9], "iscrowd": 0},
    ]
    records, _, _ = load_coco([write_coco(tmp_path, IMAGES[:1], annotations)])
    assert [voc_to_xyxy(o.box) for o in records[0].objects] == [(0.0, 0.0, 64.0, 9.0), (60.0, 40.0, 64.0, 48.0)]


def test_several_pairs_are_concatenated(tmp_path):
    first = write_coco(tmp_path / "one")
    # The same categories listed in another order are the same categories.
    second = write_coco(tmp_path / "two", [{"id": 11, "file_name": "z.jpg", "width": 32, "height": 32}],
                        [{"id": 1, "image_id": 11, "category_id": 40, "bbox": [1, 1, 5, 5]}],
                        list(reversed(CATEGORIES)))
    records, categories, _ = load_coco([first, second])
    assert [(r.image_id, r.image_path.name) for r in records] == [("11", "a.jpg"), ("5", "b.jpg"), ("30", "c.jpg"),
                                                                 ("11", "z.jpg")]
    assert records[3].objects[0].name == "person" and not records[3].objects[0].crowd  # iscrowd defaults to 0
    assert categories.ids == (2, 7, 40)


@pytest.mark.parametrize("other, difference", [
    ([{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 40, "name": "human"}],
     "id 40 is 'human' here but 'person' there"),
    ([{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 41, "name": "person"}], "ids [41] only in"),
])
def test_category_mismatch_names_both_files(tmp_path, other, difference):
    first = write_coco(tmp_path / "one")
    second = write_coco(tmp_path / "two", categories=other)
    with pytest.raises(DetectionDataError) as info:
        load_coco([first, second], on_bad_annotation="skip")
    message = str(info.value)
    assert message.startswith(f"{second[1]}: categories differ from those of {first[1]}")
    assert difference in message and info.value.problem is None
    # The training categories, handed to the reader of the test set, must match too.
    _, train_categories, _ = load_coco([first])
    with pytest.raises(DetectionDataError, match=f"categories differ from those of {first[1]}"):
        load_coco([second], categories=train_categories)
    _, same, _ = load_coco([first], categories=train_categories)
    assert same == train_categories


def test_keep_empty(coco, caplog):
    with caplog.at_level(logging.INFO, logger="colt_det.coco"):
        records, _, stats = load_coco([coco], keep_empty=False)
    assert [r.image_id for r in records] == ["11", "5"]  # a crowd-only image has annotations: kept
    assert stats.num_skipped == 0
    assert any("left out 1 image(s) without annotations" in r.getMessage() for r in caplog.records)


# Each bad case: how to break the data (a change to the JSON's images and annotations, or to image b.jpg of
# image 5), the problem kind, a message fragment, the skipped image ids, the records left and the
# annotations of the skipped images.


def _set(items: list, index: int, **changes) -> None:
    items[index].update(changes)


def _drop(items: list, index: int, key: str) -> None:
    del items[index][key]


@dataclass(frozen=True)
class _ImageFile:
    content: bytes | tuple[int, int] | None  # new bytes, a new image size, or None to delete it

    def apply(self, path: Path) -> None:
        if self.content is None:
            path.unlink()
        elif isinstance(self.content, bytes):
            path.write_bytes(self.content)
        else:
            Image.fromarray(np.zeros((self.content[1], self.content[0], 3), np.uint8)).save(path)


BAD = {
    "unknown_image_id": (lambda i, a: _set(a, 2, image_id=99), "unknown_image_id",
                         "annotation(s) [3] name image id 99, which is not in 'images'", ["99"], ["11", "5", "30"], 1),
    "unknown_category": (lambda i, a: _set(a, 2, category_id=3), "unknown_category",
                         "annotation 3 (image 5) has category id 3, which is not in 'categories' [2, 7, 40]",
                         ["5"], ["11", "30"], 1),
    "zero_width": (lambda i, a: _set(a, 2, bbox=[9, 9, 0, 31]), "zero_area_box",
                   "annotation 3 (image 5) has bbox [9, 9, 0, 31] with non-positive width or height",
                   ["5"], ["11", "30"], 1),
    "negative_height": (lambda i, a: _set(a, 2, bbox=[9, 9, 21, -1]), "zero_area_box",
                        "has bbox [9, 9, 21, -1] with non-positive width or height", ["5"], ["11", "30"], 1),
    "out_of_image": (lambda i, a: _set(a, 2, bbox=[9, 9, 56.5, 31]), "out_of_image_box",
                     "annotation 3 (image 5) has bbox [9, 9, 56.5, 31] outside the 64x48 image", ["5"],
                     ["11", "30"], 1),
    "on_the_border": (lambda i, a: _set(a, 2, bbox=[64.2, 0, 0.5, 10]), "out_of_image_box",
                      "lies on the border of the 64x48 image", ["5"], ["11", "30"], 1),
    "malformed_bbox": (lambda i, a: _set(a, 2, bbox=[9, 9, 21]), "malformed_annotation",
                       "annotation 3 (image 5) has bbox [9, 9, 21], not [x, y, width, height]", ["5"], ["11", "30"], 1),
    "malformed_iscrowd": (lambda i, a: _set(a, 0, iscrowd=2), "malformed_annotation",
                          "annotation 1 (image 11) has iscrowd 2, not 0 or 1", ["11"], ["5", "30"], 2),
    "missing_size": (lambda i, a: _drop(i, 1, "width"), "bad_image_size",
                     "image 5 has no width and height 48; both must be positive", ["5"], ["11", "30"], 1),
    "zero_size": (lambda i, a: _set(i, 1, height=0), "bad_image_size",
                  "image 5 has width 64 and height 0; both must be positive", ["5"], ["11", "30"], 1),
    "duplicate_image_id": (lambda i, a: _set(i, 2, id=5), "duplicate_image_id",
                           "image id 5 appears 2 times in 'images'", ["5", "5"], ["11"], 1),
    "duplicate_annotation_id": (lambda i, a: _set(a, 2, id=1), "duplicate_annotation_id",
                                "annotation 1 (image 11): annotation id 1 appears 2 times", ["11", "5"], ["30"], 3),
    "missing_image": (_ImageFile(None), "missing_image", "b.jpg: image file not found (image 5 of", ["5"],
                      ["11", "30"], 1),
    "unreadable_image": (_ImageFile(b"not a jpeg"), "unreadable_image", "b.jpg: cannot decode image 5 of", ["5"],
                         ["11", "30"], 1),
    "image_size_mismatch": (_ImageFile((10, 10)), "image_size_mismatch", "b.jpg: image is 10x10 but", ["5"],
                            ["11", "30"], 1),
}


def _write_bad(tmp_path: Path, case: str) -> tuple[Path, Path]:
    images, annotations = copy.deepcopy(IMAGES), copy.deepcopy(ANNOTATIONS)
    change = BAD[case][0]
    if not isinstance(change, _ImageFile):
        change(images, annotations)
    images_dir, path = write_coco(tmp_path, images, annotations)
    if isinstance(change, _ImageFile):
        change.apply(images_dir / "b.jpg")
    return images_dir, path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_naming_the_file_and_id(tmp_path, case):
    images_dir, path = _write_bad(tmp_path, case)
    _, problem, fragment, *_ = BAD[case]
    with pytest.raises(DetectionDataError) as info:
        load_coco([(images_dir, path)])
    message = str(info.value)
    assert str(path) in message and fragment in message, message
    assert info.value.problem == problem and "\n" not in message


@pytest.mark.parametrize("case", sorted(BAD))
def test_skip_mode_drops_the_image_counts_and_warns(tmp_path, caplog, case):
    images_dir, path = _write_bad(tmp_path, case)
    _, problem, fragment, skipped, kept, objects = BAD[case]
    with caplog.at_level(logging.WARNING, logger="colt_det.coco"):
        records, _, stats = load_coco([(images_dir, path)], on_bad_annotation="skip")
    assert [r.image_id for r in records] == kept
    assert stats.skipped_image_ids == skipped
    assert stats.as_dict() == {"images": len(skipped), "objects": objects, "images_without_readable_annotation": 0,
                               "by_problem": {problem: len(skipped)}}
    assert len(stats.messages) == len(skipped) and fragment in stats.messages[0]
    assert any(fragment in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


STRUCTURAL = {
    "not_json": ("{not json", "annotations file is not valid JSON (Expecting property name enclosed in double "
                              "quotes at line 1 column 2)"),
    "a_list": ("[]", "not a COCO instances file (the JSON is a list)"),
    "no_annotations": ({"images": [], "categories": CATEGORIES}, "not a COCO instances file (no 'annotations' list)"),
    "image_without_file_name": ({"images": [{"id": 3}], "annotations": [], "categories": CATEGORIES},
                                "images[0] (id 3) has no 'file_name'"),
    "annotation_without_bbox": ({"images": [], "annotations": [{"id": 4, "image_id": 1, "category_id": 2}],
                                 "categories": CATEGORIES}, "annotations[0] (id 4) has no 'bbox'"),
    "entry_not_an_object": ({"images": [3], "annotations": [], "categories": CATEGORIES},
                            "images[0] is a int, not an object"),
    "text_id": ({"images": [{"id": "x1", "file_name": "a.jpg"}], "annotations": [], "categories": CATEGORIES},
                "images[0] has id 'x1', not an integer id"),
    "category_without_name": ({"images": [], "annotations": [], "categories": [{"id": 1}]},
                              "categories[0] (id 1) has no 'name'"),
    "no_categories": ({"images": [], "annotations": [], "categories": []}, "the 'categories' list is empty"),
    "repeated_category_id": ({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"},
                                                                               {"id": 1, "name": "b"}]},
                             "category id(s) [1] appear more than once"),
    "repeated_category_name": ({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"},
                                                                                 {"id": 2, "name": "a"}]},
                               "category name(s) ['a'] appear more than once"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURAL))
def test_structural_problems_always_raise(coco, case):
    _, path = coco
    content, fragment = STRUCTURAL[case]
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DetectionDataError) as info:
        load_coco([coco], on_bad_annotation="skip")
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)
    assert info.value.problem is None and "\n" not in str(info.value)


def test_missing_files_say_where_and_how(coco, tmp_path):
    images_dir, path = coco
    missing = tmp_path / "nowhere.json"
    with pytest.raises(DetectionDataError) as info:
        load_coco([(images_dir, missing)], on_bad_annotation="skip")
    assert str(info.value).startswith(f"{missing}: annotations file not found")
    assert "make_synthetic_voc.py --format coco" in str(info.value)
    with pytest.raises(DetectionDataError) as info:
        load_coco([(tmp_path / "no_images", path)], on_bad_annotation="skip")
    assert str(info.value).startswith(f"{tmp_path / 'no_images'}: images folder not found (the images of {path})")


def test_bad_arguments_rejected(coco):
    with pytest.raises(ValueError, match="on_bad_annotation"):
        load_coco([coco], on_bad_annotation="ignore")  # type: ignore[arg-type]
    for pairs in ([], coco, "images"):
        with pytest.raises(ValueError, match=r"expected a list of \(images_dir, annotations_json\) pairs"):
            load_coco(pairs)  # type: ignore[arg-type]


def test_coco_results_use_the_datasets_ids(coco, tmp_path):
    records, categories, _ = load_coco([coco])
    detections = {
        "dog": [Detection("11", 0.75, (1.0, 1.0, 20.0, 20.0))],
        "cat": [Detection("30", 0.5, (10.5, 3.0, 20.0, 13.25)), Detection("5", 0.25, (1.0, 1.0, 1.0, 1.0))],
    }
    results = coco_results(detections, records, categories)
    assert results == [
        {"image_id": 30, "category_id": 2, "bbox": [9.5, 2.0, 10.5, 11.25], "score": 0.5},
        {"image_id": 5, "category_id": 2, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.25},
        {"image_id": 11, "category_id": 7, "bbox": [0.0, 0.0, 20.0, 20.0], "score": 0.75},
    ]
    out = tmp_path / "out" / "detections.json"
    write_coco_results(out, results)
    assert json.loads(out.read_text()) == results
    write_coco_results(out, [])
    assert json.loads(out.read_text()) == []
    with pytest.raises(ValueError):
        write_coco_results(out, [{**results[0], "score": math.nan}])
    assert json.loads(out.read_text()) == []  # the failed write left the file alone

    with pytest.raises(DetectionDataError, match="on image '99', which is not in the evaluated records"):
        coco_results({"dog": [Detection("99", 0.5, (1, 1, 2, 2))]}, records, categories)
    with pytest.raises(DetectionDataError, match="unknown classes"):
        coco_results({"unicorn": []}, records, categories)


def test_category_partitions_take_images_by_their_non_crowd_objects(tmp_path):
    """As for VOC: an image is in partition i when it holds a (non-crowd) object of group i, the other groups'
    objects are dropped from its targets and the group's categories are relabelled 1..k; a crowd region
    neither makes an image a member nor is ever a target."""
    annotations = [*ANNOTATIONS,
                   {"id": 4, "image_id": 5, "category_id": 40, "bbox": [40, 2, 10, 10], "iscrowd": 0},
                   {"id": 5, "image_id": 30, "category_id": 2, "bbox": [1, 1, 30, 30], "iscrowd": 0},
                   {"id": 6, "image_id": 30, "category_id": 7, "bbox": [33, 1, 20, 20], "iscrowd": 1}]
    records, categories, _ = load_coco([write_coco(tmp_path, annotations=annotations)])
    # labels: cat 0, dog 1, person 2; image 11: dog + person, image 5: cat crowd + person, image 30: cat + dog crowd
    cats_and_dogs = DetectionDataset(records, classes=categories.names, class_ids=[0, 1])
    assert cats_and_dogs.image_ids == ["11", "30"] and cats_and_dogs.label_names == ("cat", "dog")
    assert cats_and_dogs[0][1]["labels"].tolist() == [2]  # the dog; the person belongs to the other group
    assert cats_and_dogs[1][1]["labels"].tolist() == [1]  # the cat; the dog there is a crowd region
    people = DetectionDataset(records, classes=categories.names, class_ids=[2])
    assert people.image_ids == ["11", "5"] and people.label_names == ("person",)
    assert [people[i][1]["labels"].tolist() for i in range(2)] == [[1], [1]]
    assert people.summary()["per_class"] == {"person": 2}


# ----- hostile and malformed files ------------------------------------------------------------------------


class _Opened:
    """Every path opened (by Python or PIL) or looked up while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import builtins
        import io
        import pathlib

        import PIL.Image

        self.paths: list[Path] = []
        for owner, name in ((builtins, "open"), (io, "open"), (PIL.Image, "open"), (pathlib.Path, "stat")):
            original = getattr(owner, name)

            def spy(target, *args, _original=original, **kwargs):
                if isinstance(target, str | Path):
                    self.paths.append(Path(target))
                return _original(target, *args, **kwargs)

            monkeypatch.setattr(owner, name, spy)

    def outside(self, folder: Path, *allowed: Path) -> list[Path]:
        base = folder.resolve()
        return [p for p in self.paths if p not in allowed and not Path(os.path.normpath(base / p)).is_relative_to(base)]


@pytest.mark.parametrize("file_name", ["../../etc/passwd", "/etc/passwd", "../outside.jpg", "sub/../../outside.jpg"])
@pytest.mark.parametrize("mode", ["error", "skip"])
def test_a_file_name_leading_outside_the_images_folder_is_refused_before_anything_is_opened(
        tmp_path, monkeypatch, file_name, mode):
    images = [*copy.deepcopy(IMAGES[:2]), {"id": 30, "file_name": file_name, "width": 64, "height": 48}]
    images_dir, path = write_coco(tmp_path, images[:2])
    # A valid JPEG of the annotated size beside the folder: an old reader trained on it without a word.
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "outside.jpg")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "images": images}))
    opened = _Opened(monkeypatch)
    with pytest.raises(DetectionDataError) as info:
        load_coco([(images_dir, path)], on_bad_annotation=mode)
    monkeypatch.undo()
    message = str(info.value)
    assert message == (f"{path}: image 30 has file_name {file_name!r}, which leads outside its image folder "
                       f"{images_dir}; an annotations file may only name files inside the folder it is read with "
                       "(refused even with data.on_bad_annotation: skip): fix the file_name or put the image in the "
                       "folder")
    assert info.value.problem is None  # never skipped
    assert opened.outside(images_dir, path) == [] and not any(p.suffix == ".jpg" for p in opened.paths)


def test_names_inside_the_folder_and_symlinks_stay_allowed(tmp_path):
    real = tmp_path / "real"
    images_dir, path = write_coco(real)
    (images_dir / "sub").mkdir()
    (images_dir / "b.jpg").rename(images_dir / "sub" / "b.jpg")
    elsewhere = tmp_path / "elsewhere.jpg"
    (images_dir / "c.jpg").rename(elsewhere)
    (images_dir / "c.jpg").symlink_to(elsewhere)  # a symlinked file inside the folder is the user's choice
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = "sub/../sub/b.jpg"
    path.write_text(json.dumps(data))
    linked = tmp_path / "linked_images"
    linked.symlink_to(images_dir, target_is_directory=True)  # and so is a symlinked folder
    records, _, _ = load_coco([(linked, path)])
    assert [r.image_path for r in records] == [linked / "a.jpg", linked / "sub" / "b.jpg", linked / "c.jpg"]
    assert DetectionDataset(records, classes=("cat", "dog", "person"))[2][0].shape == (3, 48, 64)
    # The folder's symlink is resolved first: from real/images, "../images/..." comes back in and
    # "../elsewhere.jpg" is real/elsewhere.jpg, outside (as it is tmp_path/elsewhere.jpg by the link's own name).
    data["images"][1]["file_name"] = "../images/sub/b.jpg"
    path.write_text(json.dumps(data))
    assert load_coco([(linked, path)])[0][1].image_path == linked / "sub" / "b.jpg"
    data["images"][1]["file_name"] = "../elsewhere.jpg"
    path.write_text(json.dumps(data))
    with pytest.raises(DetectionDataError, match=r"image 5 has file_name '\.\./elsewhere\.jpg', which leads outside"):
        load_coco([(linked, path)])


MALFORMED = {
    # Shapes of JSON a fuzzer or a broken exporter writes: each is the loader's own error, never a Python one.
    "images_a_dict": (lambda d: d.update(images={"id": 1}), "not a COCO instances file (no 'images' list)"),
    "categories_a_string": (lambda d: d.update(categories="cat"), "no 'categories' list"),
    "category_id_a_list": (lambda d: d["annotations"][0].update(category_id=[7]),
                           "annotations[0] has category_id [7], not an integer id"),
    "category_id_a_bool": (lambda d: d["categories"][0].update(id=True), "categories[0] has id True, not an integer"),
    "file_name_a_number": (lambda d: d["images"][0].update(file_name=3), "image 11 (images[0]) has file_name 3, not a "
                                                                        "file name"),
    "file_name_with_nul": (lambda d: d["images"][0].update(file_name="a\0.jpg"), "has file_name 'a\\x00.jpg', not a "
                                                                               "file name"),
    "file_name_a_lone_surrogate": (lambda d: d["images"][0].update(file_name="\ud800.jpg"), "not a file name"),
    "category_name_a_dict": (lambda d: d["categories"][0].update(name={"x": 1}), "category 7 has name {'x': 1}, not "
                                                                               "a name"),
    "a_long_value_is_cut_short": (lambda d: d["images"][0].update(id="x" * 10_000), "images[0] has id 'xxxxxxxx"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_shapes_are_data_errors(coco, case):
    _, path = coco
    data = json.loads(path.read_text())
    change, fragment = MALFORMED[case]
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DetectionDataError) as info:
        load_coco([coco], on_bad_annotation="skip")
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


@pytest.mark.parametrize("change, fragment", [
    (dict(bbox="9 9 21 31"), "has bbox '9 9 21 31', not [x, y, width, height]"),
    (dict(bbox=[9, 9, 10**400, 31]), "has bbox [9, 9, 1000000000"),  # too large for a float
    (dict(bbox=[9, 9, [21], 31]), "has bbox [9, 9, [21], 31], not [x, y, width, height]"),
    (dict(iscrowd=[1]), "has iscrowd [1], not 0 or 1"),
    (dict(iscrowd="1"), "has iscrowd '1', not 0 or 1"),
])
def test_malformed_values_are_skippable_data_errors(tmp_path, change, fragment):
    annotations = copy.deepcopy(ANNOTATIONS)
    annotations[2].update(change)
    pair = write_coco(tmp_path, annotations=annotations)
    with pytest.raises(DetectionDataError, match=re.escape(fragment)) as info:
        load_coco([pair])
    assert info.value.problem == "malformed_annotation"
    records, _, stats = load_coco([pair], on_bad_annotation="skip")
    assert [r.image_id for r in records] == ["11", "30"] and stats.skipped_image_ids == ["5"]


@pytest.mark.parametrize("width", [10**400, 2**31, 1e400])
def test_an_absurd_image_size_is_a_bad_size(tmp_path, width):
    images = copy.deepcopy(IMAGES)
    images_dir, path = write_coco(tmp_path, images)
    data = json.loads(path.read_text())
    data["images"][1]["width"] = width  # json writes 1e400 as Infinity
    path.write_text(json.dumps(data))
    with pytest.raises(DetectionDataError, match=r"image 5 has width .* and height 48; both must be positive") as info:
        load_coco([(images_dir, path)])
    assert info.value.problem == "bad_image_size"


@pytest.mark.parametrize("content, fragment", [
    (b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "caf\xe9"}]}',
     "annotations file is not UTF-8 text (byte 71: invalid continuation byte), as JSON files are"),
    (b"[" * 100_000, "annotations file nests its lists or objects too deeply to be read"),
    (b'{"images": [{"id": ' + b"9" * 5000 + b"}]}", "annotations file is not readable JSON (Exceeds the limit"),
])
def test_unreadable_json_is_one_line_naming_the_file(coco, content, fragment):
    _, path = coco
    path.write_bytes(content)
    with pytest.raises(DetectionDataError) as info:
        load_coco([coco], on_bad_annotation="skip")
    message = str(info.value)
    assert message.startswith(f"{path}: {fragment}") and message.endswith(NOT_COCO), message


def test_an_undecodable_coco_image_names_the_image_and_its_annotations_file(coco):
    images_dir, path = coco
    whole = (images_dir / "b.jpg").read_bytes()
    records, categories, _ = load_coco([coco])  # the header is whole: loading reads only the header
    (images_dir / "b.jpg").write_bytes(whole[: len(whole) // 2])
    dataset = DetectionDataset(records, classes=categories.names)
    with pytest.raises(DetectionDataError) as info:
        dataset[1]
    message = str(info.value)
    assert re.fullmatch(rf"{re.escape(str(images_dir / 'b.jpg'))}: cannot decode image 5 of {re.escape(str(path))} "
                        rf"\(.+\); replace it with the dataset's original file or remove image 5 from "
                        rf"{re.escape(str(path))}", message), message
    assert "VOC" not in message
    (images_dir / "b.jpg").unlink()
    with pytest.raises(DetectionDataError) as info:
        dataset[1]
    assert str(info.value) == (f"{images_dir / 'b.jpg'}: image file not found (image 5 of {path}); replace it with the "
                               f"dataset's original file or remove image 5 from {path}")


def test_one_training_folder_may_be_given_as_a_path():
    from colt_core.config import load_config
    from colt_det.config import DetRunConfig

    cfg = load_config(DetRunConfig, None, ["data.format=coco", "data.train_images=mine/train",
                                           "data.train_annotations=mine/train.json", "data.test_images=mine/val",
                                           "data.test_annotations=mine/val.json"])
    assert cfg.data.coco_pairs() == ([("mine/train", "mine/train.json")], ("mine/val", "mine/val.json"))
