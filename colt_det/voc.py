"""Pascal VOC on disk: parse a local VOCdevkit into records and serve them as a torchvision detection dataset.

Coordinate convention (used everywhere in colt_det):

* VOC file coordinates -- what the XML annotations and the official results files hold: 1-based,
  inclusive pixel indices. A box covering pixel columns 1..10 of the image has xmin=1, xmax=10.
* torchvision coordinates -- what models, augmentations and the dataset's targets use: 0-based,
  continuous xyxy, where a box covering pixels 1..10 spans x in [0, 10).

`voc_to_xyxy` maps (xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax) and `xyxy_to_voc` is its
exact inverse. A VOC box therefore has width xmax - xmin + 1, matching the "+1" areas of the VOC
evaluation code.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from colt_core.errors import UserError

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

Box = tuple[float, float, float, float]

HOW_TO_GET_VOC = (
    "unpack the official VOC tarballs (VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar, "
    "VOCtrainval_11-May-2012.tar) there, or create the synthetic one with "
    "`python tools/make_synthetic_voc.py --out DIR`"
)


class VOCDataError(UserError, ValueError):
    """Bad or missing VOC data; the message names the file, the problem and the fix.

    `problem` is a short machine-readable kind (e.g. "missing_xml", "unknown_class") used to count
    skipped annotations; it is None for structural problems that are never skipped.
    """

    def __init__(self, message: str, *, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass
class VOCObject:
    """One annotated object; `box` is in VOC file coordinates (1-based, inclusive), as in the XML."""

    name: str
    label: int  # 0-based index into the class list the record was parsed with
    box: Box
    difficult: bool
    truncated: bool


@dataclass
class VOCRecord:
    """One image and its annotation."""

    image_id: str
    image_path: Path
    width: int
    height: int
    objects: list[VOCObject]
    year: str


@dataclass
class BadAnnotationStats:
    """What `load_voc_records(..., on_bad_annotation="skip")` dropped, and why."""

    skipped_image_ids: list[str] = field(default_factory=list)
    by_problem: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    skipped_objects: int = 0  # objects annotated in the skipped images (where their XML could be read)
    unreadable: int = 0  # skipped images whose XML could not be read at all, so their objects are not counted

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_image_ids)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.num_skipped, "objects": self.skipped_objects,
                "images_without_readable_annotation": self.unreadable, "by_problem": dict(self.by_problem)}


def voc_to_xyxy(box: Sequence[float]) -> Box:
    """VOC file coordinates (1-based inclusive pixels) -> torchvision 0-based continuous xyxy."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return (xmin - 1.0, ymin - 1.0, xmax, ymax)


def xyxy_to_voc(box: Sequence[float]) -> Box:
    """torchvision 0-based continuous xyxy -> VOC file coordinates; exact inverse of `voc_to_xyxy`."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 + 1.0, y0 + 1.0, x1, y1)


# ----------------------------------------------------------------------------------------------------------
# XML parsing


def _text(element: ET.Element, tag: str, path: Path) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise VOCDataError(
            f"{path}: malformed annotation: <{element.tag}> has no <{tag}>; "
            "fix the XML or restore it from the VOC tarball",
            problem="malformed_xml",
        )
    return child.text.strip()


def _number(element: ET.Element, tag: str, path: Path, *, integer: bool) -> Any:
    text = _text(element, tag, path)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # VOC stores integers; some exports write "273.0", which is accepted as an integer.
    if not math.isfinite(value) or (integer and not value.is_integer()):
        expected = "an integer" if integer else "a number"
        raise VOCDataError(
            f"{path}: malformed annotation: <{tag}> is {text!r}, not {expected}; fix the XML",
            problem="malformed_xml",
        )
    return int(value) if integer else value


def _flag(element: ET.Element, tag: str, path: Path) -> bool:
    """Optional 0/1 flag (some VOC2012 objects omit <difficult> / <truncated>); absent means 0."""
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return False
    return bool(_number(element, tag, path, integer=True))


def parse_voc_xml(path: str | Path, classes: Sequence[str] = VOC_CLASSES) -> VOCRecord:
    """Parse one VOC annotation file, validating class names and boxes; raises VOCDataError on bad input.

    The image is expected at `<year folder>/JPEGImages/<id>.jpg`, the id being the XML file's stem (the
    <filename> element is not trusted: it is wrong in some re-exported datasets). A box is rejected when it
    has no pixels (xmax < xmin or ymax < ymin; xmin == xmax is a one-pixel-wide box) or when it leaves the
    image (xmin < 1, ymin < 1, xmax > width or ymax > height).
    """
    path = Path(path)
    if not path.is_file():
        raise VOCDataError(
            f"{path}: annotation file not found; restore it from the VOC tarball or remove "
            f"'{path.stem}' from the image set file",
            problem="missing_xml",
        )
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise VOCDataError(
            f"{path}: malformed annotation XML ({exc}); restore the file from the VOC tarball",
            problem="malformed_xml",
        ) from None
    if root.tag != "annotation":
        raise VOCDataError(
            f"{path}: malformed annotation: root element is <{root.tag}>, expected <annotation>",
            problem="malformed_xml",
        )
    size = root.find("size")
    if size is None:
        raise VOCDataError(
            f"{path}: malformed annotation: no <size> element; fix the XML", problem="malformed_xml"
        )
    width = _number(size, "width", path, integer=True)
    height = _number(size, "height", path, integer=True)
    if width <= 0 or height <= 0:
        raise VOCDataError(
            f"{path}: malformed annotation: image size {width}x{height} is not positive; fix <size>",
            problem="malformed_xml",
        )

    class_index = {name: i for i, name in enumerate(classes)}
    objects: list[VOCObject] = []
    for obj in root.findall("object"):
        name = _text(obj, "name", path)
        if name not in class_index:
            raise VOCDataError(
                f"{path}: unknown class name {name!r}; expected one of {', '.join(classes)}",
                problem="unknown_class",
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VOCDataError(
                f"{path}: malformed annotation: object {name!r} has no <bndbox>; fix the XML",
                problem="malformed_xml",
            )
        box = tuple(_number(bndbox, tag, path, integer=False) for tag in ("xmin", "ymin", "xmax", "ymax"))
        xmin, ymin, xmax, ymax = box
        if xmax < xmin or ymax < ymin:
            raise VOCDataError(
                f"{path}: object {name!r} has a zero-area box {box} (xmax < xmin or ymax < ymin); "
                "fix or delete the object",
                problem="zero_area_box",
            )
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise VOCDataError(
                f"{path}: object {name!r} has box {box} outside the {width}x{height} image "
                "(VOC boxes are 1-based: 1 <= xmin <= xmax <= width); fix the box",
                problem="out_of_image_box",
            )
        objects.append(
            VOCObject(
                name=name,
                label=class_index[name],
                box=box,  # type: ignore[arg-type]
                difficult=_flag(obj, "difficult", path),
                truncated=_flag(obj, "truncated", path),
            )
        )

    year_dir = path.parent.parent
    match = re.fullmatch(r"VOC(\d{4})", year_dir.name)
    return VOCRecord(
        image_id=path.stem,
        image_path=year_dir / "JPEGImages" / f"{path.stem}.jpg",
        width=width,
        height=height,
        objects=objects,
        year=match.group(1) if match else year_dir.name,
    )


# ----------------------------------------------------------------------------------------------------------
# Devkit layout and image sets


def parse_sets(sets: str | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(year, set) pairs from "2007:trainval", "2007+2012:trainval" or [("2007", "test"), ...]."""
    if isinstance(sets, str):
        years, sep, image_set = sets.partition(":")
        year_list = [y.strip() for y in years.split("+")]
        if not sep or not image_set.strip() or not all(re.fullmatch(r"\d{4}", y) for y in year_list):
            raise ValueError(
                f"image sets {sets!r}: expected 'YEAR:SET' or 'YEAR+YEAR:SET', e.g. '2007:test' or "
                "'2007+2012:trainval'"
            )
        return [(year, image_set.strip()) for year in year_list]
    pairs = [(str(year), str(image_set)) for year, image_set in sets]
    if not pairs:
        raise ValueError("image sets: empty list; give at least one (year, image_set) pair")
    return pairs


def voc_year_dir(root: str | Path, year: str) -> Path:
    """Locate `VOC<year>` under `root`, which may be the folder holding VOCdevkit/ or VOCdevkit itself."""
    root = Path(root)
    for candidate in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}"):
        if candidate.is_dir():
            return candidate
    expected = root / f"VOC{year}" if root.name == "VOCdevkit" else root / "VOCdevkit" / f"VOC{year}"
    raise VOCDataError(
        f"{expected}: Pascal VOC {year} not found (the VOC root may be the folder holding VOCdevkit/ or the "
        f"VOCdevkit folder itself; got {root}); {HOW_TO_GET_VOC}"
    )


def read_image_set(year_dir: Path, image_set: str) -> list[str]:
    """Image ids listed in `ImageSets/Main/<image_set>.txt` (first token of each non-empty line)."""
    set_file = year_dir / "ImageSets" / "Main" / f"{image_set}.txt"
    if not set_file.is_file():
        main = year_dir / "ImageSets" / "Main"
        available = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
        raise VOCDataError(
            f"{set_file}: image set file not found (available: {', '.join(available) or 'none'}); "
            f"check the image set name or re-unpack the VOC tarball; {HOW_TO_GET_VOC}"
        )
    ids = [line.split()[0] for line in set_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise VOCDataError(f"{set_file}: image set is empty; re-unpack the VOC tarball or choose another set")
    return ids


def check_voc_sets(root: str | Path, sets: str | Sequence[tuple[str, str]]) -> None:
    """Raise, naming the path and how to get the data, unless every image set's devkit folder and list exist
    (cheap: a run checks it before it fetches anything)."""
    for year, image_set in parse_sets(sets):
        read_image_set(voc_year_dir(root, year), image_set)


def load_voc_records(
    root: str | Path,
    sets: str | Sequence[tuple[str, str]],
    *,
    on_bad_annotation: Literal["error", "skip"] = "error",
    classes: Sequence[str] = VOC_CLASSES,
) -> tuple[list[VOCRecord], BadAnnotationStats]:
    """Read the records of one or more VOC image sets (e.g. "2007+2012:trainval" is the 07+12 union).

    Structural problems (no devkit, no year folder, missing or empty image set file) always raise.
    A bad annotation (missing or malformed XML, missing image, unknown class, zero-area or out-of-image
    box) raises with on_bad_annotation="error"; with "skip" the *whole image* is dropped, a warning logged
    and the drop counted in the returned stats. Dropping only the bad object would keep an image whose
    pixels still show that object while its targets call it background.
    """
    if on_bad_annotation not in ("error", "skip"):
        raise ValueError(f"on_bad_annotation={on_bad_annotation!r}: expected 'error' or 'skip'")
    records: list[VOCRecord] = []
    stats = BadAnnotationStats()
    for year, image_set in parse_sets(sets):
        year_dir = voc_year_dir(root, year)
        for image_id in read_image_set(year_dir, image_set):
            try:
                record = parse_voc_xml(year_dir / "Annotations" / f"{image_id}.xml", classes)
                if not record.image_path.is_file():
                    raise VOCDataError(
                        f"{record.image_path}: image file not found; restore it from the VOC tarball or "
                        f"remove '{image_id}' from {year_dir / 'ImageSets' / 'Main' / image_set}.txt",
                        problem="missing_image",
                    )
            except VOCDataError as exc:
                if on_bad_annotation == "error":
                    raise
                logger.warning("skipping image %s: %s", image_id, exc)
                objects = _count_objects(year_dir / "Annotations" / f"{image_id}.xml")
                stats.skipped_objects += objects or 0
                stats.unreadable += objects is None
                stats.skipped_image_ids.append(image_id)
                stats.by_problem[exc.problem or "other"] += 1
                stats.messages.append(str(exc))
                continue
            records.append(record)
    if stats.num_skipped:
        logger.warning(
            "skipped %d image(s) with bad annotations: %s", stats.num_skipped, dict(stats.by_problem)
        )
    return records, stats


def _count_objects(path: Path) -> int | None:
    """How many objects an annotation file lists, or None when it cannot be read as XML."""
    try:
        return len(ET.parse(path).getroot().findall("object"))
    except (OSError, ET.ParseError):
        return None


# ----------------------------------------------------------------------------------------------------------
# Dataset


def load_rgb(path: Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 array."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    except FileNotFoundError:
        raise VOCDataError(f"{path}: image file not found; restore it from the VOC tarball") from None
    except OSError as exc:
        raise VOCDataError(f"{path}: cannot decode image ({exc}); restore it from the VOC tarball") from None


class VOCDetectionDataset(Dataset):
    """VOC records as (image, target) pairs for torchvision detection models.

    Labels are 1-based (0 is background): without `class_ids`, label = class index + 1. With `class_ids`
    (indices into `classes`) the dataset is one partition: it keeps only the images holding at least one
    kept object of those classes, drops the objects of other classes from the targets and relabels
    class_ids[k] as k + 1. With keep_difficult=False difficult objects are dropped from the targets and do
    not count towards an image's membership. Without `class_ids` every record is kept, even one left with
    no objects (a valid all-background image).

    `transforms(image_uint8_hwc, boxes_xyxy, labels) -> (image, boxes, labels)` may drop boxes; the
    dataset hands it object indices as `labels` so labels and difficult flags stay aligned with the boxes.
    """

    def __init__(
        self,
        records: Sequence[VOCRecord],
        transforms: Any = None,
        keep_difficult: bool = True,
        class_ids: Sequence[int] | None = None,
        *,
        classes: Sequence[str] = VOC_CLASSES,
    ) -> None:
        self.transforms = transforms
        self.keep_difficult = keep_difficult
        self.classes = tuple(classes)
        if class_ids is None:
            self.class_ids = tuple(range(len(self.classes)))
        else:
            self.class_ids = tuple(int(c) for c in class_ids)
            if not self.class_ids:
                raise ValueError("class_ids is empty; give at least one class index")
            if len(set(self.class_ids)) != len(self.class_ids):
                raise ValueError(f"class_ids {list(self.class_ids)} has duplicates")
            bad = [c for c in self.class_ids if not 0 <= c < len(self.classes)]
            if bad:
                raise ValueError(f"class_ids {bad} out of range 0..{len(self.classes) - 1}")
        remap = {class_id: k + 1 for k, class_id in enumerate(self.class_ids)}

        self.records: list[VOCRecord] = []
        self._objects: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # boxes xyxy, labels, difficult
        for record in records:
            kept = [
                obj for obj in record.objects if obj.label in remap and (keep_difficult or not obj.difficult)
            ]
            if class_ids is not None and not kept:
                continue
            boxes = np.array([voc_to_xyxy(o.box) for o in kept], dtype=np.float32).reshape(-1, 4)
            labels = np.array([remap[o.label] for o in kept], dtype=np.int64)
            difficult = np.array([o.difficult for o in kept], dtype=bool)
            self.records.append(record)
            self._objects.append((boxes, labels, difficult))
        self.image_ids: list[str] = [r.image_id for r in self.records]

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class name of each label 1..K (index 0 of this tuple is label 1)."""
        return tuple(self.classes[c] for c in self.class_ids)

    @property
    def num_images(self) -> int:
        return len(self.records)

    @property
    def num_objects(self) -> int:
        return sum(len(labels) for _, labels, _ in self._objects)

    def summary(self) -> dict[str, Any]:
        """Images, objects (difficult included when kept) and objects per class of this dataset."""
        counts = Counter(int(label) for _, labels, _ in self._objects for label in labels)
        return {
            "images": self.num_images,
            "objects": self.num_objects,
            "difficult": int(sum(int(d.sum()) for _, _, d in self._objects)),
            "per_class": {name: counts.get(k + 1, 0) for k, name in enumerate(self.label_names)},
        }

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.records[index]
        boxes, labels, difficult = self._objects[index]
        image = load_rgb(record.image_path)
        if image.shape[:2] != (record.height, record.width):
            raise VOCDataError(
                f"{record.image_path}: image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                f"{record.width}x{record.height}; the image or XML is from another version of the data"
            )
        if self.transforms is not None:
            image, boxes, kept = self.transforms(image, boxes, np.arange(len(labels), dtype=np.int64))
            kept = np.asarray(kept, dtype=np.int64)
            labels, difficult = labels[kept], difficult[kept]
        image_tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        target = {
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "difficult": torch.as_tensor(difficult, dtype=torch.bool),
            "image_id": index,
            "orig_size": (record.height, record.width),  # lets predictions be mapped back after a resize
        }
        return image_tensor, target


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list, list]:
    """Batch for torchvision detectors: images differ in size, so a list of images and a list of targets."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
