"""A small synthetic Pascal VOC in the real on-disk format, for demos, tests and CPU smoke runs, and its COCO
twin: the same images and objects as a COCO instances JSON plus image folders.

Each of the 20 VOC class names is drawn as a filled disc or a hollow frame in one of 10 saturated hues, on a
mildly textured grey background, so a tiny detector can tell the classes apart within a few epochs.
Output is a deterministic function of the arguments: the same arguments give byte-identical files.
"""

from __future__ import annotations

import colorsys
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from colt_core.io import atomic_write_json, atomic_write_text, staged_directory
from colt_det.coco import coco_bbox
from colt_det.data import DetectionDataError
from colt_det.voc import VOC_CLASSES

MARKER_NAME = "colt_synthetic_voc.json"
COCO_MARKER_NAME = "colt_synthetic_coco.json"
FORMAT_VERSION = 2
YEAR = "2007"

SHAPES = ("disc", "frame")
# Ten hues 36 degrees apart at high saturation: far enough apart that colour jitter never confuses them.
HUE_NAMES = ("red", "orange", "chartreuse", "green", "spring", "cyan", "azure", "indigo", "violet", "rose")
COLOURS: dict[str, tuple[int, int, int]] = {
    name: tuple(round(255 * c) for c in colorsys.hsv_to_rgb(k / len(HUE_NAMES), 0.85, 0.92))  # type: ignore[misc]
    for k, name in enumerate(HUE_NAMES)
}
# Class i is colour i // 2 drawn as shape i % 2 (a filled disc or a hollow square frame): every
# (shape, colour) pair names exactly one class, and the cues a tiny detector needs are colour and
# whether the object's centre is filled, both visible at stride 16.
CLASS_APPEARANCE: dict[str, tuple[str, str]] = {
    name: (SHAPES[i % len(SHAPES)], tuple(COLOURS)[i // len(SHAPES)]) for i, name in enumerate(VOC_CLASSES)
}

MAX_OVERLAP = 0.1  # largest intersection / smaller box area between two objects of one image
PLACEMENT_TRIES = 50


@dataclass(frozen=True)
class SyntheticVOCParams:
    """Everything the generated files depend on; stored next to them to detect stale data."""

    seed: int = 0
    image_size: int = 128
    n_trainval: int = 400
    n_test: int = 200
    min_objects: int = 1
    max_objects: int = 3
    difficult_fraction: float = 0.05
    val_fraction: float = 0.5
    num_classes: int = len(VOC_CLASSES)  # objects come from the first this many VOC classes

    def validate(self) -> None:
        checks = {
            "image_size": self.image_size >= 32,
            "n_trainval": self.n_trainval >= 2,
            "n_test": self.n_test >= 1,
            "min_objects": self.min_objects >= 1,
            "max_objects": self.max_objects >= self.min_objects,
            "difficult_fraction": 0.0 <= self.difficult_fraction <= 1.0,
            "val_fraction": 0.0 < self.val_fraction < 1.0,
            "num_classes": 1 <= self.num_classes <= len(VOC_CLASSES),
        }
        allowed = {
            "image_size": ">= 32",
            "n_trainval": ">= 2",
            "n_test": ">= 1",
            "min_objects": ">= 1",
            "max_objects": ">= min_objects",
            "difficult_fraction": "in [0, 1]",
            "val_fraction": "in (0, 1)",
            "num_classes": f"in 1..{len(VOC_CLASSES)}",
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"synthetic VOC: {key}={getattr(self, key)!r} is invalid; expected {allowed[key]}"
                )

    def as_marker(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}


# ----------------------------------------------------------------------------------------------------------
# Drawing


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Grey with a smooth random shading and fine noise: textured, but never saturated like the objects."""
    base = rng.uniform(95.0, 160.0)
    coarse = rng.uniform(-18.0, 18.0, size=(4, 4)).astype(np.float32)
    shading = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    grey = base + shading[..., None] + rng.normal(0.0, 6.0, size=(size, size, 3))
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), mode="RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple) -> None:
    """Fill `shape` so that it touches all four sides of the inclusive pixel box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "frame":
        draw.rectangle(box, outline=colour, width=max(2, min(w, h) // 4))
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(f"unknown shape {shape!r}")


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area = min((a[2] - a[0] + 1) * (a[3] - a[1] + 1), (b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return iw * ih / area


def _draw_image(rng: np.random.Generator, params: SyntheticVOCParams) -> tuple[Image.Image, list[dict]]:
    """One image and its objects (name, 0-based inclusive pixel box, difficult)."""
    size = params.image_size
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    n_objects = int(rng.integers(params.min_objects, params.max_objects + 1))
    objects: list[dict] = []
    for _ in range(n_objects):
        name = VOC_CLASSES[int(rng.integers(params.num_classes))]
        difficult = bool(rng.random() < params.difficult_fraction)
        # Difficult objects are the small ones, as in VOC where tiny instances are marked difficult.
        side_range = (0.08, 0.15) if difficult else (0.2, 0.5)
        for _ in range(PLACEMENT_TRIES):
            w = max(4, round(rng.uniform(*side_range) * size))
            h = min(size, max(4, round(w * rng.uniform(0.8, 1.25))))
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            box = (x0, y0, x0 + w - 1, y0 + h - 1)
            if all(_overlap(box, other["box"]) <= MAX_OVERLAP for other in objects):
                break
        else:
            continue  # no free spot: the image gets one object fewer
        shape, colour_name = CLASS_APPEARANCE[name]
        colour = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[colour_name])
        _draw_shape(draw, shape, box, colour)
        objects.append({"name": name, "box": box, "difficult": difficult})
    # Sensor-like noise over everything, objects included, so their colour is not a single value.
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 4.0, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB"), objects


def _annotation_xml(image_id: str, size: int, objects: list[dict]) -> str:
    """The annotation in the VOC2007 schema; boxes are 1-based inclusive pixel indices."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"VOC{YEAR}"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "COLT synthetic VOC"
    ET.SubElement(source, "annotation").text = "COLT synthetic VOC"
    ET.SubElement(source, "image").text = "synthetic"
    size_el = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        obj_el = ET.SubElement(root, "object")
        ET.SubElement(obj_el, "name").text = obj["name"]
        ET.SubElement(obj_el, "pose").text = "Unspecified"
        ET.SubElement(obj_el, "truncated").text = "0"
        ET.SubElement(obj_el, "difficult").text = str(int(obj["difficult"]))
        bndbox = ET.SubElement(obj_el, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"], strict=True):
            ET.SubElement(bndbox, tag).text = str(value + 1)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _image_ids(params: SyntheticVOCParams) -> list[str]:
    """VOC-style ids 000001, 000002, ...: trainval first, then test."""
    return [f"{i + 1:06d}" for i in range(params.n_trainval + params.n_test)]


def _draw_dataset(params: SyntheticVOCParams) -> Iterator[tuple[str, Image.Image, list[dict]]]:
    """(image id, image, objects) of every image, in id order; both twins are written from this."""
    for index, image_id in enumerate(_image_ids(params)):
        # One generator per image (seed, stream 0, index): an image does not depend on the others.
        image, objects = _draw_image(np.random.default_rng([params.seed, 0, index]), params)
        yield image_id, image, objects


def _save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=95)


def _splits(params: SyntheticVOCParams) -> dict[str, list[str]]:
    """The image ids of the VOC image sets train, val, trainval and test."""
    image_ids = _image_ids(params)
    trainval = image_ids[: params.n_trainval]
    split_rng = np.random.default_rng([params.seed, 1])
    n_val = min(len(trainval) - 1, max(1, round(len(trainval) * params.val_fraction)))
    val_index = set(split_rng.permutation(len(trainval))[:n_val].tolist())
    return {
        "train": [image_id for i, image_id in enumerate(trainval) if i not in val_index],
        "val": [image_id for i, image_id in enumerate(trainval) if i in val_index],
        "trainval": trainval,
        "test": image_ids[params.n_trainval :],
    }


def _write_devkit(devkit: Path, params: SyntheticVOCParams) -> None:
    year_dir = devkit / f"VOC{YEAR}"
    jpeg_dir, xml_dir, sets_dir = (
        year_dir / "JPEGImages",
        year_dir / "Annotations",
        year_dir / "ImageSets" / "Main",
    )
    for folder in (jpeg_dir, xml_dir, sets_dir):
        folder.mkdir(parents=True)

    objects_by_image: dict[str, list[dict]] = {}
    for image_id, image, objects in _draw_dataset(params):
        _save_jpeg(image, jpeg_dir / f"{image_id}.jpg")
        (xml_dir / f"{image_id}.xml").write_text(_annotation_xml(image_id, params.image_size, objects))
        objects_by_image[image_id] = objects

    for split, ids in _splits(params).items():
        (sets_dir / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in ids))
        # Per-class lists as in the devkit: 1 present, 0 only difficult instances, -1 absent.
        for name in VOC_CLASSES:
            lines = []
            for image_id in ids:
                flags = [obj["difficult"] for obj in objects_by_image[image_id] if obj["name"] == name]
                flag = -1 if not flags else (0 if all(flags) else 1)
                lines.append(f"{image_id} {flag:2d}\n")
            (sets_dir / f"{name}_{split}.txt").write_text("".join(lines))


# ----------------------------------------------------------------------------------------------------------
# The COCO twin: out_root/{train,test}/*.jpg and out_root/annotations/instances_{train,test}.json

COCO_SPLITS = {"train": "trainval", "test": "test"}  # COCO split -> the VOC image set it holds
# Deliberately not 0..19 nor 1..20, so that code mapping category ids to labels is exercised.
COCO_CATEGORY_IDS: dict[str, int] = {name: 2 * k + 1 for k, name in enumerate(VOC_CLASSES)}


def coco_instances_path(root: str | Path, split: str) -> Path:
    """`root/annotations/instances_<split>.json` of the synthetic COCO (split "train" or "test")."""
    return Path(root) / "annotations" / f"instances_{split}.json"


def _write_coco(root: Path, params: SyntheticVOCParams) -> None:
    """The VOC twin's images and objects in COCO layout. COCO has no "difficult": the VOC twin's difficult
    objects are written as ordinary annotations (iscrowd 0)."""
    split_of = {image_id: split for split, image_set in COCO_SPLITS.items() for image_id in _splits(params)[image_set]}
    files: dict[str, dict[str, list]] = {split: {"images": [], "annotations": []} for split in COCO_SPLITS}
    for split in COCO_SPLITS:
        (root / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    for image_id, image, objects in _draw_dataset(params):
        split = split_of[image_id]
        _save_jpeg(image, root / split / f"{image_id}.jpg")
        entry = files[split]
        entry["images"].append({"id": int(image_id), "file_name": f"{image_id}.jpg", "width": params.image_size,
                                "height": params.image_size})
        for obj in objects:
            bbox = coco_bbox(tuple(v + 1 for v in obj["box"]))  # VOC file coordinates, as in the VOC twin's XML
            entry["annotations"].append({"id": len(entry["annotations"]) + 1, "image_id": int(image_id),
                                         "category_id": COCO_CATEGORY_IDS[obj["name"]], "bbox": bbox,
                                         "area": bbox[2] * bbox[3], "iscrowd": 0})
    categories = [{"id": COCO_CATEGORY_IDS[name], "name": name, "supercategory": "synthetic"}
                  for name in VOC_CLASSES[:params.num_classes]]  # the categories the objects are drawn from
    for split, entry in files.items():
        instances = {
            "info": {"description": "COLT synthetic COCO (the synthetic VOC's images and objects)"},
            "licenses": [],
            "images": entry["images"],
            "annotations": entry["annotations"],
            "categories": categories,
        }
        atomic_write_text(json.dumps(instances) + "\n", coco_instances_path(root, split))


# ----------------------------------------------------------------------------------------------------------
# Generation on disk


def _read_marker(folder: Path, name: str = MARKER_NAME) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _params(**params: Any) -> SyntheticVOCParams:
    allowed = list(SyntheticVOCParams.__dataclass_fields__)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"synthetic VOC: unknown parameter(s) {unknown}; allowed: {', '.join(allowed)}")
    checked = SyntheticVOCParams(**params)
    checked.validate()
    return checked


def _generate(
    target: Path, params: SyntheticVOCParams, write: Callable[[Path, SyntheticVOCParams], None], marker: str
) -> None:
    """Build the tree beside `target` and rename it into place, the parameters file written last, so a killed
    generation never looks complete; whatever was at `target` is replaced. A generation that loses the race to
    another process renaming its identical tree into place first counts as done."""
    def made_with_params(folder: Path) -> bool:
        return _read_marker(folder, marker) == params.as_marker()

    with staged_directory(target, written=made_with_params) as staging:
        write(staging, params)
        atomic_write_json(params.as_marker(), staging / marker)


def make_synthetic_voc(
    out_root: str | Path,
    *,
    seed: int = 0,
    image_size: int = 128,
    n_trainval: int = 400,
    n_test: int = 200,
    min_objects: int = 1,
    max_objects: int = 3,
    difficult_fraction: float = 0.05,
    val_fraction: float = 0.5,
    num_classes: int = len(VOC_CLASSES),
) -> Path:
    """Write `out_root/VOCdevkit/VOC2007` (JPEGImages, Annotations, ImageSets/Main); return VOCdevkit.

    The tree is built in a temporary folder beside it and renamed into place, with the parameters file
    written last, so a killed generation never looks complete. An existing synthetic VOCdevkit is
    replaced; any other folder at that path (real VOC data) is left alone and an error raised.
    """
    params = SyntheticVOCParams(
        seed=seed,
        image_size=image_size,
        n_trainval=n_trainval,
        n_test=n_test,
        min_objects=min_objects,
        max_objects=max_objects,
        difficult_fraction=difficult_fraction,
        val_fraction=val_fraction,
        num_classes=num_classes,
    )
    params.validate()
    devkit = Path(out_root) / "VOCdevkit"
    if devkit.exists() and _read_marker(devkit) is None:
        raise DetectionDataError(
            f"{devkit}: exists but is not a synthetic VOC made by colt_det (no {MARKER_NAME}); refusing to "
            "replace it: choose another output folder or remove it yourself"
        )
    _generate(devkit, params, _write_devkit, MARKER_NAME)
    return devkit


def _ensure(folder: Path, marker: str, wanted: SyntheticVOCParams, make: Callable[[], Path]) -> Path:
    """`folder` when its marker says it was made with `wanted`; otherwise `make()` it."""
    if _read_marker(folder, marker) == wanted.as_marker():
        return folder
    return make()


def ensure_synthetic_voc(out_root: str | Path, **params: Any) -> Path:
    """The synthetic VOCdevkit under `out_root`, generated only when missing or made with other parameters."""
    wanted = _params(**params)
    return _ensure(Path(out_root) / "VOCdevkit", MARKER_NAME, wanted,
                   lambda: make_synthetic_voc(out_root, **asdict(wanted)))


def make_synthetic_coco(out_root: str | Path, **params: Any) -> Path:
    """Write the synthetic VOC's images and objects in COCO layout under `out_root`; return `out_root`.

    Same parameters as `make_synthetic_voc`, same images (byte for byte) and boxes: out_root/train holds
    the VOC trainval images, out_root/test the test images, and out_root/annotations/instances_train.json
    and instances_test.json their annotations (image id = the VOC id as a number, category ids 1, 3, ..., 39
    named by the VOC classes, difficult objects as ordinary annotations). The folder is built beside
    `out_root` and renamed into place; an earlier synthetic COCO there is replaced, an empty folder too, and
    anything else is left alone and an error raised.
    """
    wanted = _params(**params)
    root = Path(out_root)
    if root.exists() and _read_marker(root, COCO_MARKER_NAME) is None and (not root.is_dir() or any(root.iterdir())):
        raise DetectionDataError(
            f"{root}: exists, is not empty and is not a synthetic COCO made by colt_det (no {COCO_MARKER_NAME}); "
            "refusing to replace it: choose another output folder or remove it yourself"
        )
    _generate(root, wanted, _write_coco, COCO_MARKER_NAME)
    return root


def ensure_synthetic_coco(out_root: str | Path, **params: Any) -> Path:
    """The synthetic COCO at `out_root`, generated only when missing or made with other parameters."""
    wanted = _params(**params)
    root = Path(out_root)
    return _ensure(root, COCO_MARKER_NAME, wanted, lambda: make_synthetic_coco(root, **asdict(wanted)))
