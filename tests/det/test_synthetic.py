"""The synthetic VOC and its COCO twin: deterministic bytes, real on-disk formats, tight boxes, the same
images and objects in both, safe (re)generation, the CLI."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from colt_det import synthetic
from colt_det.coco import coco_bbox, load_coco
from colt_det.data import DetectionDataError, DetectionDataset
from colt_det.synthetic import (
    CLASS_APPEARANCE,
    COCO_MARKER_NAME,
    MARKER_NAME,
    coco_instances_path,
    ensure_synthetic_coco,
    ensure_synthetic_voc,
    make_synthetic_coco,
    make_synthetic_voc,
)
from colt_det.voc import VOC_CLASSES, load_voc_records

SMALL = {"image_size": 64, "n_trainval": 6, "n_test": 4}
REPO = Path(__file__).resolve().parents[2]


def _tree(devkit: Path) -> dict[str, bytes]:
    return {str(p.relative_to(devkit)): p.read_bytes() for p in sorted(devkit.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    first = _tree(make_synthetic_voc(tmp_path / "a", seed=5, **SMALL))
    second = _tree(make_synthetic_voc(tmp_path / "b", seed=5, **SMALL))
    other = _tree(make_synthetic_voc(tmp_path / "c", seed=6, **SMALL))
    assert first == second
    assert "VOC2007/JPEGImages/000001.jpg" in first and "VOC2007/Annotations/000010.xml" in first
    images = [k for k in first if k.endswith((".jpg", ".xml"))]
    assert len(images) == 20
    assert all(first[k] != other[k] for k in images)


def test_loads_through_the_voc_reader(synthetic_voc):
    sets = {
        name: load_voc_records(synthetic_voc, f"2007:{name}")[0]
        for name in ("train", "val", "trainval", "test")
    }
    ids = {name: [r.image_id for r in records] for name, records in sets.items()}
    assert len(ids["trainval"]) == 24 and len(ids["test"]) == 12
    assert sorted(ids["train"] + ids["val"]) == ids["trainval"] and not set(ids["train"]) & set(ids["val"])
    assert not set(ids["trainval"]) & set(ids["test"])
    for record in sets["trainval"] + sets["test"]:
        assert (record.width, record.height) == (64, 64) and 1 <= len(record.objects) <= 3
        for obj in record.objects:
            xmin, ymin, xmax, ymax = obj.box
            assert 1 <= xmin < xmax <= 64 and 1 <= ymin < ymax <= 64
            assert obj.name == VOC_CLASSES[obj.label] and not obj.truncated
    image, target = DetectionDataset(sets["test"], classes=VOC_CLASSES)[0]
    assert image.shape == (3, 64, 64) and len(target["boxes"]) == len(sets["test"][0].objects)


def test_per_class_image_set_files(synthetic_voc):
    main = synthetic_voc / "VOC2007" / "ImageSets" / "Main"
    records, _ = load_voc_records(synthetic_voc, "2007:test")
    lines = (main / "dog_test.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [r.image_id for r in records]
    for line, record in zip(lines, records, strict=True):
        flags = [o.difficult for o in record.objects if o.name == "dog"]
        assert int(line.split()[1]) == (-1 if not flags else 0 if all(flags) else 1)


def test_each_class_has_its_own_look():
    assert set(CLASS_APPEARANCE) == set(VOC_CLASSES)
    assert len(set(CLASS_APPEARANCE.values())) == len(VOC_CLASSES)


def _saturated(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(int)
    return pixels.max(axis=-1) - pixels.min(axis=-1) > 60


def test_boxes_are_tight_around_the_drawn_shape(tmp_path):
    devkit = make_synthetic_voc(tmp_path, seed=1, image_size=96, n_trainval=10, n_test=2, max_objects=1)
    records, _ = load_voc_records(devkit, "2007:trainval")
    for record in records:
        (obj,) = record.objects
        saturated = _saturated(np.asarray(Image.open(record.image_path).convert("RGB")))
        x0, y0, x1, y1 = (int(v) - 1 for v in obj.box)  # 0-based inclusive pixel indices
        inside = saturated[y0 : y1 + 1, x0 : x1 + 1]
        # The shape touches every side of its box (within a pixel of JPEG smoothing) ...
        assert inside[:2].any() and inside[-2:].any() and inside[:, :2].any() and inside[:, -2:].any()
        # ... and nothing coloured lies two or more pixels outside it.
        outside = saturated.copy()
        outside[max(0, y0 - 1) : y1 + 2, max(0, x0 - 1) : x1 + 2] = False
        assert not outside.any(), record.image_id


def test_difficult_objects_are_small(tmp_path):
    devkit = make_synthetic_voc(tmp_path, seed=2, difficult_fraction=1.0, **SMALL)
    records, _ = load_voc_records(devkit, "2007:trainval")
    objects = [o for r in records for o in r.objects]
    assert objects and all(o.difficult for o in objects)
    assert all(o.box[2] - o.box[0] + 1 <= 0.15 * 64 + 1 for o in objects)


def test_ensure_generates_once_and_regenerates_on_new_params(tmp_path):
    devkit = ensure_synthetic_voc(tmp_path, seed=0, **SMALL)
    marker = devkit / MARKER_NAME
    assert json.loads(marker.read_text())["seed"] == 0
    stamp = marker.stat().st_mtime_ns
    assert ensure_synthetic_voc(tmp_path, seed=0, **SMALL) == devkit
    assert marker.stat().st_mtime_ns == stamp
    ensure_synthetic_voc(tmp_path, seed=1, **SMALL)
    assert json.loads(marker.read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["VOCdevkit"]  # no staging or retired folders left


def test_killed_generation_never_looks_complete(tmp_path, monkeypatch):
    def crash(devkit, params):
        (devkit / "VOC2007").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_devkit", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_voc(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    devkit = ensure_synthetic_voc(tmp_path, **SMALL)
    assert (devkit / MARKER_NAME).is_file()


def test_refuses_to_replace_foreign_data(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    with pytest.raises(DetectionDataError, match="not a synthetic VOC"):
        ensure_synthetic_voc(tmp_path, **SMALL)
    assert (tmp_path / "VOCdevkit" / "VOC2007").is_dir()


def test_invalid_parameters(tmp_path):
    with pytest.raises(ValueError, match="max_objects=0"):
        make_synthetic_voc(tmp_path, max_objects=0)
    with pytest.raises(ValueError, match="difficult_fraction"):
        ensure_synthetic_voc(tmp_path, difficult_fraction=2.0)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['size'\]; allowed: seed, image_size"):
        ensure_synthetic_voc(tmp_path, size=64)


def _cli():
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_voc_tool", REPO / "tools" / "make_synthetic_voc.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_command_line(tmp_path):
    main = _cli()
    args = ["--out", str(tmp_path), "--image-size", "48", "--n-trainval", "4", "--n-test", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"2007:trainval +4 images", result.output) and re.search(
        r"2007:test +2 images", result.output
    )
    assert (tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000006.jpg").is_file()
    bad = CliRunner().invoke(main, [*args, "--min-objects", "4", "--max-objects", "2"])
    assert bad.exit_code == 1 and "max_objects=2 is invalid" in bad.output


# ----------------------------------------------------------------------------------------------------------
# The COCO twin


def _coco_split(root: Path, split: str):
    return load_coco([(root / split, coco_instances_path(root, split))])


def test_coco_twin_holds_the_voc_twins_images_and_objects(tmp_path):
    params = {"seed": 4, "difficult_fraction": 0.3, **SMALL}
    devkit = make_synthetic_voc(tmp_path / "voc", **params)
    root = make_synthetic_coco(tmp_path / "coco", **params)
    assert root == tmp_path / "coco"
    assert sorted(str(p.relative_to(root)) for p in root.iterdir()) == ["annotations", COCO_MARKER_NAME, "test",
                                                                        "train"]
    difficult = 0
    for split, image_set in (("train", "trainval"), ("test", "test")):
        records, categories, stats = _coco_split(root, split)
        voc_records, _ = load_voc_records(devkit, f"2007:{image_set}")
        assert stats.num_skipped == 0
        assert categories.names == VOC_CLASSES and categories.ids == tuple(range(1, 40, 2))
        assert [r.source_id for r in records] == [int(r.image_id) for r in voc_records]
        for record, voc in zip(records, voc_records, strict=True):
            assert record.image_path == root / split / f"{voc.image_id}.jpg"
            assert record.image_path.read_bytes() == voc.image_path.read_bytes()
            assert (record.width, record.height) == (voc.width, voc.height)
            assert [(o.name, o.label, o.box) for o in record.objects] == [(o.name, o.label, o.box) for o in voc.objects]
            # COCO has no "difficult": the VOC twin's difficult objects are ordinary annotations.
            assert not any(o.difficult or o.crowd for o in record.objects)
            difficult += sum(o.difficult for o in voc.objects)
    assert difficult > 0
    written = json.loads(coco_instances_path(root, "test").read_text())
    first = written["annotations"][0]
    obj = _coco_split(root, "test")[0][0].objects[0]
    assert first["bbox"] == coco_bbox(obj.box) and first["area"] == first["bbox"][2] * first["bbox"][3]
    assert all(float(v).is_integer() for a in written["annotations"] for v in a["bbox"])  # whole pixels


def test_coco_twin_same_params_same_bytes(tmp_path):
    first = _tree(make_synthetic_coco(tmp_path / "a", seed=5, **SMALL))
    assert first == _tree(make_synthetic_coco(tmp_path / "b", seed=5, **SMALL))
    other = _tree(make_synthetic_coco(tmp_path / "c", seed=6, **SMALL))
    assert first.keys() == other.keys() and first["train/000001.jpg"] != other["train/000001.jpg"]
    assert len([k for k in first if k.endswith(".jpg")]) == 10


def test_ensure_coco_generates_once_and_regenerates_on_new_params(tmp_path):
    root = tmp_path / "coco"
    assert ensure_synthetic_coco(root, seed=0, **SMALL) == root
    marker = root / COCO_MARKER_NAME
    stamp = marker.stat().st_mtime_ns
    assert ensure_synthetic_coco(root, seed=0, **SMALL) == root
    assert marker.stat().st_mtime_ns == stamp
    ensure_synthetic_coco(root, seed=1, **SMALL)
    assert json.loads(marker.read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["coco"]  # no staging or retired folders left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (ensure_synthetic_coco(empty, **SMALL) / COCO_MARKER_NAME).is_file()
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['size'\]"):
        ensure_synthetic_coco(root, size=64)
    with pytest.raises(ValueError, match="max_objects=0"):
        make_synthetic_coco(root, max_objects=0)


def test_coco_twin_refuses_to_replace_foreign_data(tmp_path):
    (tmp_path / "coco" / "train").mkdir(parents=True)
    with pytest.raises(DetectionDataError, match="is not a synthetic COCO made by colt_det"):
        ensure_synthetic_coco(tmp_path / "coco", **SMALL)
    assert [p.name for p in (tmp_path / "coco").iterdir()] == ["train"]
    voc = make_synthetic_voc(tmp_path / "both", **SMALL)  # the VOC twin's folder is not the COCO twin's
    with pytest.raises(DetectionDataError, match="is not a synthetic COCO"):
        make_synthetic_coco(tmp_path / "both", **SMALL)
    assert (voc / MARKER_NAME).is_file()


def test_killed_coco_generation_never_looks_complete(tmp_path, monkeypatch):
    def crash(root, params):
        (root / "train").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_coco", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_coco(tmp_path / "coco", **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert (ensure_synthetic_coco(tmp_path / "coco", **SMALL) / COCO_MARKER_NAME).is_file()


def test_command_line_coco(tmp_path):
    args = ["--format", "coco", "--out", str(tmp_path / "coco"), "--image-size", "48", "--n-trainval", "4",
            "--n-test", "2"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert re.search(r"train +4 images", result.output) and re.search(r"test +2 images", result.output)
    assert (tmp_path / "coco" / "test" / "000006.jpg").is_file()
    assert coco_instances_path(tmp_path / "coco", "train").is_file()
