"""VOC parsing, devkit layout, bad input, coordinate conventions and the detection dataset."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colt_det.data import DetectionDataError, DetectionDataset, collate_detection, voc_to_xyxy, xyxy_to_voc
from colt_det.voc import VOC_CLASSES, load_voc_records, parse_sets, parse_voc_xml

DOG, CAT, PERSON = VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat"), VOC_CLASSES.index("person")

IMAGES = {
    "000001": [("dog", (1, 1, 20, 20), False), ("person", (30, 5, 64, 48), False)],
    "000002": [("cat", (10, 10, 30, 40), False), ("dog", (5, 5, 15, 15), True)],
    "000003": [("person", (2, 3, 40, 40), False)],
}


@pytest.fixture
def voc_root(write_devkit):
    return write_devkit(IMAGES, {"trainval": list(IMAGES), "test": ["000003"]})


def test_parse_voc_xml_reads_the_schema(voc_root):
    record = parse_voc_xml(voc_root / "VOCdevkit/VOC2007/Annotations/000002.xml")
    assert record.image_id == "000002"
    assert record.year == "2007"
    assert (record.width, record.height) == (64, 48)
    assert record.image_path == voc_root / "VOCdevkit/VOC2007/JPEGImages/000002.jpg"
    assert [o.name for o in record.objects] == ["cat", "dog"]
    assert [o.label for o in record.objects] == [CAT, DOG]
    assert record.objects[0].box == (10.0, 10.0, 30.0, 40.0)
    assert [o.difficult for o in record.objects] == [False, True]
    assert all(o.truncated for o in record.objects)


def test_parse_voc_xml_defaults_missing_flags(tmp_path):
    path = tmp_path / "VOC2012" / "Annotations" / "2008_000001.xml"
    path.parent.mkdir(parents=True)
    path.write_text(
        "<annotation><size><width>10</width><height>10</height></size>"
        "<object><name>bird</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>9</ymax>"
        "</bndbox></object></annotation>"
    )
    record = parse_voc_xml(path)
    assert record.year == "2012"
    assert record.objects[0].difficult is False and record.objects[0].truncated is False


def test_load_accepts_parent_folder_and_devkit_folder(voc_root):
    from_parent, _ = load_voc_records(voc_root, "2007:trainval")
    from_devkit, _ = load_voc_records(voc_root / "VOCdevkit", [("2007", "trainval")])
    assert [r.image_id for r in from_parent] == list(IMAGES)
    assert from_parent == from_devkit


def test_union_of_years(write_devkit, tmp_path):
    root = tmp_path / "both"
    write_devkit({"000001": IMAGES["000001"]}, {"trainval": ["000001"]}, year="2007", root=root)
    write_devkit({"2008_000007": IMAGES["000002"]}, {"trainval": ["2008_000007"]}, year="2012", root=root)
    records, _ = load_voc_records(root, "2007+2012:trainval")
    assert [(r.year, r.image_id) for r in records] == [("2007", "000001"), ("2012", "2008_000007")]
    assert records[1].image_path == root / "VOCdevkit/VOC2012/JPEGImages/2008_000007.jpg"
    pairs, _ = load_voc_records(root, [("2007", "trainval"), ("2012", "trainval")])
    assert pairs == records


def test_parse_sets():
    assert parse_sets("2007:test") == [("2007", "test")]
    assert parse_sets("2007+2012:trainval") == [("2007", "trainval"), ("2012", "trainval")]
    for bad in ("2007", "07:test", "2007:", "2007+:trainval"):
        with pytest.raises(ValueError, match="YEAR:SET"):
            parse_sets(bad)


def _break(root: Path, relative: str, content: str | None) -> Path:
    path = root / "VOCdevkit" / "VOC2007" / relative
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    return path


ANNOTATION = "Annotations/000002.xml"
BAD_ANNOTATIONS = {
    "missing_xml": (ANNOTATION, None, "annotation file not found"),
    "malformed_xml": (ANNOTATION, "<annotation><size>", "malformed annotation XML"),
    "malformed_number": (
        ANNOTATION,
        "<annotation><size><width>64</width><height>48</height></size><object><name>cat</name>"
        "<bndbox><xmin>one</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>",
        "not a number",
    ),
    "missing_image": ("JPEGImages/000002.jpg", None, "image file not found"),
    "unknown_encoding": (ANNOTATION, '<?xml version="1.0" encoding="klingon"?><annotation/>',
                         "malformed annotation XML (unknown encoding: klingon)"),
    "unknown_class": (ANNOTATION, None, "unknown class name 'unicorn'"),
    "zero_area_box": (ANNOTATION, None, "zero-area box"),
    "out_of_image_box": (ANNOTATION, None, "outside the 64x48 image"),
}
BAD_OBJECTS = {
    "unknown_class": [("unicorn", (1, 1, 5, 5), False)],
    "zero_area_box": [("cat", (10, 10, 9, 20), False)],
    "out_of_image_box": [("cat", (0, 1, 10, 10), False)],
}


def _write_bad(write_devkit, problem: str) -> tuple[Path, Path]:
    images = dict(IMAGES)
    if problem in BAD_OBJECTS:
        images["000002"] = BAD_OBJECTS[problem]
    root = write_devkit(images, {"trainval": list(images)})
    relative, content, _ = BAD_ANNOTATIONS[problem]
    path = root / "VOCdevkit" / "VOC2007" / relative
    if problem not in BAD_OBJECTS:
        _break(root, relative, content)
    return root, path


@pytest.mark.parametrize("problem", sorted(BAD_ANNOTATIONS))
def test_bad_annotation_raises_naming_the_file(write_devkit, problem):
    root, path = _write_bad(write_devkit, problem)
    with pytest.raises(DetectionDataError) as info:
        load_voc_records(root, "2007:trainval")
    message = str(info.value)
    assert str(path) in message
    assert BAD_ANNOTATIONS[problem][2] in message
    assert "\n" not in message


@pytest.mark.parametrize("problem", sorted(BAD_ANNOTATIONS))
def test_skip_mode_drops_the_image_counts_and_warns(write_devkit, caplog, problem):
    root, path = _write_bad(write_devkit, problem)
    with caplog.at_level(logging.WARNING, logger="colt_det.voc"):
        records, stats = load_voc_records(root, "2007:trainval", on_bad_annotation="skip")
    assert [r.image_id for r in records] == ["000001", "000003"]
    assert stats.skipped_image_ids == ["000002"]
    expected_problem = "malformed_xml" if problem in ("malformed_number", "unknown_encoding") else problem
    assert stats.by_problem == {expected_problem: 1}
    unreadable = problem in ("missing_xml", "malformed_xml", "unknown_encoding")
    objects = {"missing_xml": 0, "malformed_xml": 0, "unknown_encoding": 0, "malformed_number": 1,
               "missing_image": 2}.get(problem, 1)
    assert stats.as_dict() == {"images": 1, "objects": objects, "images_without_readable_annotation": int(unreadable),
                               "by_problem": {expected_problem: 1}}
    assert any(str(path) in rec.getMessage() for rec in caplog.records)


def test_box_corner_cases_accepted(write_devkit):
    # A one-pixel box and a box touching the far image border are valid (1-based inclusive coordinates).
    root = write_devkit(
        {"000001": [("cat", (5, 5, 5, 5), False), ("dog", (1, 1, 64, 48), False)]}, {"trainval": ["000001"]}
    )
    records, _ = load_voc_records(root, "2007:trainval")
    assert len(records[0].objects) == 2


def test_missing_devkit_says_where_and_how(tmp_path):
    with pytest.raises(DetectionDataError) as info:
        load_voc_records(tmp_path, "2007:trainval", on_bad_annotation="skip")
    message = str(info.value)
    assert str(tmp_path / "VOCdevkit" / "VOC2007") in message
    assert "make_synthetic_voc.py --out" in message and "VOCtrainval_06-Nov-2007.tar" in message
    devkit = tmp_path / "VOCdevkit"
    devkit.mkdir()
    with pytest.raises(DetectionDataError, match=re.escape(f"{devkit / 'VOC2007'}: Pascal VOC 2007 not found")):
        load_voc_records(devkit, "2007:trainval")


def test_missing_year_folder(voc_root):
    with pytest.raises(DetectionDataError, match="VOC2012: Pascal VOC 2012 not found"):
        load_voc_records(voc_root, "2007+2012:trainval", on_bad_annotation="skip")


def test_missing_and_empty_image_set_always_raise(voc_root):
    main = voc_root / "VOCdevkit/VOC2007/ImageSets/Main"
    with pytest.raises(
        DetectionDataError, match=r"val\.txt: image set file not found \(available: test, trainval\)"
    ):
        load_voc_records(voc_root, "2007:val", on_bad_annotation="skip")
    (main / "val.txt").write_text("\n\n")
    with pytest.raises(DetectionDataError, match=r"val\.txt: image set is empty"):
        load_voc_records(voc_root, "2007:val", on_bad_annotation="skip")


def test_bad_mode_rejected(voc_root):
    with pytest.raises(ValueError, match="on_bad_annotation"):
        load_voc_records(voc_root, "2007:trainval", on_bad_annotation="ignore")  # type: ignore[arg-type]


def test_coordinate_conversion_round_trip():
    assert voc_to_xyxy((1, 1, 10, 10)) == (0.0, 0.0, 10.0, 10.0)  # pixels 1..10 span [0, 10)
    assert xyxy_to_voc((0.0, 0.0, 10.0, 10.0)) == (1.0, 1.0, 10.0, 10.0)
    rng = random.Random(0)
    for _ in range(200):
        box = tuple(rng.randint(1, 500) + rng.choice([0.0, 0.5, 0.25]) for _ in range(4))
        assert xyxy_to_voc(voc_to_xyxy(box)) == box
        assert voc_to_xyxy(xyxy_to_voc(box)) == box


def test_dataset_item(voc_root):
    records, _ = load_voc_records(voc_root, "2007:trainval")
    dataset = DetectionDataset(records, classes=VOC_CLASSES)
    image, target = dataset[1]
    assert image.dtype == torch.float32 and image.shape == (3, 48, 64)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert abs(float(image.mean()) - 128 / 255) < 0.02
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[9.0, 9.0, 30.0, 40.0], [4.0, 4.0, 15.0, 15.0]]
    assert target["labels"].tolist() == [CAT + 1, DOG + 1]
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == 1 and dataset.image_ids[1] == "000002"
    assert dataset.label_names == VOC_CLASSES
    assert dataset.num_images == 3 and dataset.num_objects == 5


def test_dataset_without_difficult(voc_root):
    records, _ = load_voc_records(voc_root, "2007:trainval")
    dataset = DetectionDataset(records, classes=VOC_CLASSES, keep_difficult=False)
    assert dataset.num_images == 3 and dataset.num_objects == 4
    assert dataset[1][1]["labels"].tolist() == [CAT + 1]


def test_partition_rule(voc_root):
    records, _ = load_voc_records(voc_root, "2007:trainval")
    # Order matters: dog -> label 1, cat -> label 2.
    part = DetectionDataset(records, classes=VOC_CLASSES, class_ids=[DOG, CAT])
    assert part.image_ids == ["000001", "000002"]  # 000003 holds only a person
    assert part.label_names == ("dog", "cat")
    _, first = part[0]
    assert first["labels"].tolist() == [1]  # the person was dropped
    assert first["boxes"].tolist() == [[0.0, 0.0, 20.0, 20.0]]
    _, second = part[1]
    assert second["labels"].tolist() == [2, 1]
    assert second["difficult"].tolist() == [False, True]
    assert part.summary() == {"images": 2, "objects": 3, "difficult": 1, "per_class": {"dog": 2, "cat": 1}}

    # A difficult object that is dropped no longer makes its image a member.
    only_dog = DetectionDataset(records, classes=VOC_CLASSES, class_ids=[DOG], keep_difficult=False)
    assert only_dog.image_ids == ["000001"]
    person = DetectionDataset(records, classes=VOC_CLASSES, class_ids=[PERSON])
    assert person.image_ids == ["000001", "000003"] and person[0][1]["labels"].tolist() == [1]


def test_partition_rejects_bad_class_ids(voc_root):
    records, _ = load_voc_records(voc_root, "2007:trainval")
    for bad in ([], [DOG, DOG], [20], [-1]):
        with pytest.raises(ValueError, match="class_ids"):
            DetectionDataset(records, classes=VOC_CLASSES, class_ids=bad)


def test_transform_drops_keep_fields_aligned(voc_root):
    records, _ = load_voc_records(voc_root, "2007:trainval")

    def drop_first(image, boxes, labels):
        return image[:, ::-1], boxes[1:], labels[1:]

    dataset = DetectionDataset(records, classes=VOC_CLASSES, transforms=drop_first)
    _, target = dataset[1]
    assert target["labels"].tolist() == [DOG + 1]
    assert target["difficult"].tolist() == [True]
    assert target["boxes"].tolist() == [[4.0, 4.0, 15.0, 15.0]]


def test_image_size_mismatch_is_reported(voc_root):
    records, _ = load_voc_records(voc_root, "2007:trainval")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(records[0].image_path)
    with pytest.raises(DetectionDataError, match=r"000001\.jpg: image is 10x10 but its annotation says 64x48"):
        DetectionDataset(records, classes=VOC_CLASSES)[0]


def test_collate_in_a_dataloader(synthetic_voc):
    records, _ = load_voc_records(synthetic_voc, "2007:train")
    dataset = DetectionDataset(records, classes=VOC_CLASSES)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and len(images) == 4 and images[0].shape == (3, 64, 64)
    assert [t["image_id"] for t in targets] == [0, 1, 2, 3]
    assert collate_detection([]) == ([], [])


# ----- hostile image sets ---------------------------------------------------------------------------------


def _spy_on_opens(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path Python or PIL opens or looks up from now on."""
    import builtins
    import io
    import pathlib
    import xml.etree.ElementTree as ET

    import PIL.Image

    seen: list[Path] = []
    for owner, name in ((builtins, "open"), (io, "open"), (PIL.Image, "open"), (pathlib.Path, "stat"), (ET, "parse")):
        original = getattr(owner, name)

        def spy(target, *args, _original=original, **kwargs):
            if isinstance(target, str | Path):
                seen.append(Path(target))
            return _original(target, *args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
    return seen


@pytest.mark.parametrize("image_id", ["../../etc/passwd", "/etc/passwd", "../outside", "sub/../../outside"])
@pytest.mark.parametrize("mode", ["error", "skip"])
def test_an_image_id_leading_outside_its_folders_is_refused_before_anything_is_opened(write_devkit, monkeypatch,
                                                                                      image_id, mode):
    root = write_devkit(IMAGES, {"trainval": ["000001", image_id]})
    year_dir = root / "VOCdevkit" / "VOC2007"
    # A valid annotation and image beside the folders: an old reader trained on them without a word.
    (year_dir / "outside.xml").write_text((year_dir / "Annotations" / "000001.xml").read_text())
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(year_dir / "outside.jpg")
    set_file = year_dir / "ImageSets" / "Main" / "trainval.txt"
    seen = _spy_on_opens(monkeypatch)
    with pytest.raises(DetectionDataError) as info:
        load_voc_records(root, "2007:trainval", on_bad_annotation=mode)
    monkeypatch.undo()
    assert str(info.value) == (f"{set_file}: image id {image_id!r} leads outside {year_dir / 'Annotations'}; an image "
                               "set may only name files inside its year folder (refused even with "
                               "data.on_bad_annotation: skip): fix the line or re-unpack the VOC tarball")
    assert info.value.problem is None
    inside = [year_dir / "Annotations", year_dir / "JPEGImages"]
    looked_up = (set_file, year_dir)  # finding the devkit and reading its image set
    touched = [p for p in seen if p not in looked_up and not any(p.is_relative_to(folder) for folder in inside)]
    assert touched == [] and "outside" not in " ".join(map(str, seen))


def test_an_id_naming_a_file_in_a_sub_folder_stays_inside(write_devkit):
    root = write_devkit(IMAGES, {"trainval": ["000001"]})
    year_dir = root / "VOCdevkit" / "VOC2007"
    for folder, suffix in (("Annotations", ".xml"), ("JPEGImages", ".jpg")):
        (year_dir / folder / "extra").mkdir()
        (year_dir / folder / f"000003{suffix}").rename(year_dir / folder / "extra" / f"000003{suffix}")
    (year_dir / "ImageSets" / "Main" / "extra.txt").write_text("extra/000003\n")
    (record,), _ = load_voc_records(root, "2007:extra")
    assert record.image_path == year_dir / "JPEGImages" / "extra" / "000003.jpg"
    assert record.annotations == year_dir / "Annotations" / "extra" / "000003.xml"


def test_an_image_set_that_is_not_text_is_one_clear_error(voc_root):
    set_file = voc_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    set_file.write_bytes("000001\n".encode("utf-16"))
    with pytest.raises(DetectionDataError) as info:
        load_voc_records(voc_root, "2007:trainval", on_bad_annotation="skip")
    assert str(info.value) == (f"{set_file}: not an image set file (byte 0 is not UTF-8 text; the file lists one "
                               "image id a line); re-unpack the VOC tarball")


def test_an_undecodable_voc_image_names_the_image_and_the_tarball(voc_root):
    records, _ = load_voc_records(voc_root, "2007:trainval")
    jpeg = records[1].image_path
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    with pytest.raises(DetectionDataError) as info:
        DetectionDataset(records, classes=VOC_CLASSES)[1]
    assert re.fullmatch(rf"{re.escape(str(jpeg))}: cannot decode image 000002 \(.+\); restore it from the VOC "
                        "tarball", str(info.value)), str(info.value)
