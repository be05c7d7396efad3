"""A small synthetic Pascal VOC in the real on-disk format, for demos, tests and CPU smoke runs.

Each of the 20 VOC class names is drawn as a filled disc or a hollow frame in one of 10 saturated hues, on a
mildly textured grey background, so a tiny detector can tell the classes apart within a few epochs.
Output is a deterministic function of the arguments: the same arguments give byte-identical files.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from colt_core.io import atomic_write_json
from colt_det.data import DetectionDataError
from colt_det.voc import VOC_CLASSES

MARKER_NAME = "colt_synthetic_voc.json"
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

    def validate(self) -> None:
        checks = {
            "image_size": self.image_size >= 32,
            "n_trainval": self.n_trainval >= 2,
            "n_test": self.n_test >= 1,
            "min_objects": self.min_objects >= 1,
            "max_objects": self.max_objects >= self.min_objects,
            "difficult_fraction": 0.0 <= self.difficult_fraction <= 1.0,
            "val_fraction": 0.0 < self.val_fraction < 1.0,
        }
        allowed = {
            "image_size": ">= 32",
            "n_trainval": ">= 2",
            "n_test": ">= 1",
            "min_objects": ">= 1",
            "max_objects": ">= min_objects",
            "difficult_fraction": "in [0, 1]",
            "val_fraction": "in (0, 1)",
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
        name = VOC_CLASSES[int(rng.integers(len(VOC_CLASSES)))]
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


def _write_devkit(devkit: Path, params: SyntheticVOCParams) -> None:
    year_dir = devkit / f"VOC{YEAR}"
    jpeg_dir, xml_dir, sets_dir = (
        year_dir / "JPEGImages",
        year_dir / "Annotations",
        year_dir / "ImageSets" / "Main",
    )
    for folder in (jpeg_dir, xml_dir, sets_dir):
        folder.mkdir(parents=True)

    n_total = params.n_trainval + params.n_test
    image_ids = [f"{i + 1:06d}" for i in range(n_total)]
    objects_by_image: dict[str, list[dict]] = {}
    for index, image_id in enumerate(image_ids):
        # One generator per image (seed, stream 0, index): an image does not depend on the others.
        image, objects = _draw_image(np.random.default_rng([params.seed, 0, index]), params)
        image.save(jpeg_dir / f"{image_id}.jpg", format="JPEG", quality=95)
        (xml_dir / f"{image_id}.xml").write_text(_annotation_xml(image_id, params.image_size, objects))
        objects_by_image[image_id] = objects

    trainval = image_ids[: params.n_trainval]
    split_rng = np.random.default_rng([params.seed, 1])
    n_val = min(len(trainval) - 1, max(1, round(len(trainval) * params.val_fraction)))
    val_index = set(split_rng.permutation(len(trainval))[:n_val].tolist())
    splits = {
        "train": [image_id for i, image_id in enumerate(trainval) if i not in val_index],
        "val": [image_id for i, image_id in enumerate(trainval) if i in val_index],
        "trainval": trainval,
        "test": image_ids[params.n_trainval :],
    }
    for split, ids in splits.items():
        (sets_dir / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in ids))
        # Per-class lists as in the devkit: 1 present, 0 only difficult instances, -1 absent.
        for name in VOC_CLASSES:
            lines = []
            for image_id in ids:
                flags = [obj["difficult"] for obj in objects_by_image[image_id] if obj["name"] == name]
                flag = -1 if not flags else (0 if all(flags) else 1)
                lines.append(f"{image_id} {flag:2d}\n")
            (sets_dir / f"{name}_{split}.txt").write_text("".join(lines))


def _read_marker(devkit: Path) -> dict[str, Any] | None:
    try:
        return json.loads((devkit / MARKER_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


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
    )
    params.validate()
    out_root = Path(out_root)
    devkit = out_root / "VOCdevkit"
    if devkit.exists() and _read_marker(devkit) is None:
        raise DetectionDataError(
            f"{devkit}: exists but is not a synthetic VOC made by colt_det (no {MARKER_NAME}); refusing to "
            "replace it: choose another output folder or remove it yourself"
        )
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".VOCdevkit.", suffix=".partial", dir=out_root))
    try:
        _write_devkit(staging, params)
        atomic_write_json(params.as_marker(), staging / MARKER_NAME)
        if devkit.exists():
            retired = out_root / f".VOCdevkit.{uuid.uuid4().hex}.old"
            os.rename(devkit, retired)
            os.rename(staging, devkit)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, devkit)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return devkit


def ensure_synthetic_voc(out_root: str | Path, **params: Any) -> Path:
    """The synthetic VOCdevkit under `out_root`, generated only when missing or made with other parameters."""
    allowed = list(SyntheticVOCParams.__dataclass_fields__)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"synthetic VOC: unknown parameter(s) {unknown}; allowed: {', '.join(allowed)}")
    wanted = SyntheticVOCParams(**params)
    wanted.validate()
    devkit = Path(out_root) / "VOCdevkit"
    if _read_marker(devkit) == wanted.as_marker():
        return devkit
    try:
        return make_synthetic_voc(out_root, **asdict(wanted))
    except OSError:
        # Another process may have renamed its identical tree into place first.
        if _read_marker(devkit) == wanted.as_marker():
            return devkit
        raise
