"""Detection data in memory, whatever its source: image and object records, the torchvision dataset over
them, batching, scored detections, and bad-input errors. `colt_det.voc` and `colt_det.coco` read their formats
into these; the evaluators (`colt_det.voc_eval`, `colt_det.coco_eval`) score detections against them.

Coordinate convention (used everywhere in colt_det):

* VOC file coordinates -- what the records, VOC XML annotations and the official results files hold:
  1-based, inclusive pixel indices. A box covering pixel columns 1..10 of the image has xmin=1, xmax=10.
* torchvision coordinates -- what models, augmentations and the dataset's targets use: 0-based,
  continuous xyxy, where a box covering pixels 1..10 spans x in [0, 10).

`voc_to_xyxy` maps (xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax) and `xyxy_to_voc` is its
exact inverse. A VOC box therefore has width xmax - xmin + 1, matching the "+1" areas of the VOC
evaluation code; a COCO box [x, y, w, h] is xyxy (x, y, x + w, y + h).
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from colt_core.errors import UserError

Box = tuple[float, float, float, float]


class DetectionDataError(UserError, ValueError):
    """Bad or missing detection data (VOC or COCO); the message names the file, the problem and the fix.

    `problem` is a short machine-readable kind (e.g. "missing_xml", "unknown_class") used to count
    skipped annotations; it is None for structural problems that are never skipped.
    """

    def __init__(self, message: str, *, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass
class ObjectRecord:
    """One annotated object; `box` is in VOC file coordinates (1-based, inclusive).

    `difficult` (VOC) objects are ignored by evaluation and trained on only when asked; `crowd` (COCO's
    iscrowd) regions are never training targets and are ignored by evaluation.
    """

    name: str
    label: int  # 0-based index into the class list the record was parsed with
    box: Box
    difficult: bool
    truncated: bool
    crowd: bool = False

    @property
    def ignored(self) -> bool:
        """Whether evaluation ignores this object (neither a positive nor a miss)."""
        return self.difficult or self.crowd


@dataclass
class ImageRecord:
    """One image and its annotation."""

    image_id: str  # VOC's file stem, or a COCO image's id as text
    image_path: Path
    width: int
    height: int
    objects: list[ObjectRecord]
    year: str  # VOC's year; "" for other sources
    source_id: int | None = None  # the image's id in its source (COCO), for results files
    annotations: Path | None = None  # the file that annotates it (VOC's XML, a COCO instances file), for messages

    def describe(self) -> str:
        """"image 5 of instances.json" (COCO) or "image 000005" (VOC): which image a message is about."""
        if self.source_id is not None:
            return f"image {self.source_id} of {self.annotations}" if self.annotations else f"image {self.source_id}"
        return f"image {self.image_id}"

    def damaged_fix(self) -> str:
        """How to repair or drop a missing or damaged image file, in the words of the image's format."""
        if self.source_id is not None:
            where = f" from {self.annotations}" if self.annotations else ""
            return f"replace it with the dataset's original file or remove image {self.source_id}{where}"
        return "restore it from the VOC tarball"


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


@dataclass(frozen=True)
class Detection:
    """One scored box; `box` is in VOC file coordinates (1-based, inclusive), as in the results files."""

    image_id: str
    score: float
    box: Box


def check_detection_classes(detections_by_class: Mapping[str, Any], classes: Sequence[str]) -> None:
    """Raise when detections name a class outside `classes` (e.g. results of another label set)."""
    unknown = sorted(set(detections_by_class) - set(classes))
    if unknown:
        raise DetectionDataError(f"detections for unknown classes {unknown}; expected names from {list(classes)}")


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on the GPU
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def detections_from_outputs(
    image_ids: Sequence[str],
    outputs: Sequence[Mapping[str, Any]],
    label_names: Sequence[str],
) -> dict[str, list[Detection]]:
    """torchvision outputs (0-based xyxy boxes, labels 1..K into `label_names`, scores) -> VOC detections.

    Every name in `label_names` is a key of the result, with an empty list when it was never detected.
    """
    if len(image_ids) != len(outputs):
        raise ValueError(f"{len(image_ids)} image ids but {len(outputs)} outputs; they must be aligned")
    by_class: dict[str, list[Detection]] = {name: [] for name in label_names}
    for image_id, output in zip(image_ids, outputs, strict=True):
        boxes = _as_numpy(output["boxes"]).astype(np.float64).reshape(-1, 4)
        labels = _as_numpy(output["labels"]).astype(np.int64).reshape(-1)
        scores = _as_numpy(output["scores"]).astype(np.float64).reshape(-1)
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(
                f"output for image {image_id!r} has {len(boxes)} boxes, {len(labels)} labels and "
                f"{len(scores)} scores; they must be aligned"
            )
        for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True):
            if not 1 <= label <= len(label_names):
                raise ValueError(
                    f"output for image {image_id!r} has label {label}; expected 1..{len(label_names)} "
                    "(0 is background)"
                )
            by_class[label_names[label - 1]].append(Detection(image_id, score, xyxy_to_voc(box)))
    return by_class


# What PIL raises for a damaged or hostile image file, beside OSError (a truncated file, a bad header).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


def load_rgb(record: ImageRecord) -> np.ndarray:
    """A record's image file as an HxWx3 uint8 array; a missing or undecodable file raises, naming the image
    (its id, and for COCO its annotations file) and the fix for its format."""
    path = record.image_path
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    except FileNotFoundError:
        raise DetectionDataError(f"{path}: image file not found ({record.describe()}); "
                                 f"{record.damaged_fix()}") from None
    except IMAGE_ERRORS as exc:
        raise DetectionDataError(f"{path}: cannot decode {record.describe()} ({exc}); "
                                 f"{record.damaged_fix()}") from None


def path_inside(folder: Path, name: str) -> Path | None:
    """`folder / name` with `..` collapsed, or None when it leads outside the folder (`../x.jpg`, `/etc/passwd`),
    the folder's own symlinks resolved first. Only the text of `name` is looked at, nothing is opened; a
    symlinked file inside the folder is inside. The path returned has no `..` left to walk back through a
    symlink."""
    base = Path(os.path.realpath(folder))
    candidate = Path(os.path.normpath(base / name))
    if candidate == base or not candidate.is_relative_to(base):
        return None
    return Path(folder) / candidate.relative_to(base)


class DetectionDataset(Dataset):
    """Image records (VOC or COCO) as (image, target) pairs for torchvision detection models.

    Labels are 1-based (0 is background): without `class_ids`, label = class index + 1. With `class_ids`
    (indices into `classes`) the dataset is one partition: it keeps only the images holding at least one
    kept object of those classes, drops the objects of other classes from the targets and relabels
    class_ids[k] as k + 1. Crowd regions are never targets; with keep_difficult=False difficult objects are
    dropped from the targets too; neither counts towards an image's membership. Without `class_ids` every
    record is kept, even one left with no objects (a valid all-background image).

    `transforms(image_uint8_hwc, boxes_xyxy, labels) -> (image, boxes, labels)` may drop boxes; the
    dataset hands it object indices as `labels` so labels and difficult flags stay aligned with the boxes.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transforms: Any = None,
        keep_difficult: bool = True,
        class_ids: Sequence[int] | None = None,
        *,
        classes: Sequence[str],
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

        self.records: list[ImageRecord] = []
        self._objects: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # boxes xyxy, labels, difficult
        for record in records:
            kept = [
                obj for obj in record.objects
                if obj.label in remap and not obj.crowd and (keep_difficult or not obj.difficult)
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
        image = load_rgb(record)
        if image.shape[:2] != (record.height, record.width):
            raise DetectionDataError(
                f"{record.image_path}: image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                f"{record.width}x{record.height} ({record.describe()}); the image or the annotation is from another "
                "version of the data"
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
