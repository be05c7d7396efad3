"""COCO-format detection data on disk: an instances JSON plus a folder of images, read into the records of
`colt_det.data` (VOC file coordinates). Detections go back out as a COCO results file in `colt_det.coco_eval`.

A COCO box [x, y, w, h] is continuous xyxy (x, y, x + w, y + h), so its record box is
`xyxy_to_voc((x, y, x + w, y + h))` and `voc_to_xyxy` (or `coco_bbox`) gives the box back: exactly for whole
and dyadic (.5, .25, ...) pixel values, within one unit in the last place otherwise (x + 1 - 1 is not always x
in floating point).

Categories keep the dataset's own ids and names; labels are 0..K-1 by ascending category id.
"""

from __future__ import annotations

import logging
import math
import os
import reprlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from colt_core.io import load_json_file
from colt_det.data import (
    IMAGE_ERRORS,
    BadAnnotationStats,
    DetectionDataError,
    ImageRecord,
    ObjectRecord,
    path_inside,
    voc_to_xyxy,
    xyxy_to_voc,
)

logger = logging.getLogger(__name__)

HOW_TO_GET_COCO = (
    "pass the folder of images and the instances JSON that names them (e.g. train2017/ and "
    "annotations/instances_train2017.json), or create the synthetic one with "
    "`python tools/make_synthetic_voc.py --format coco --out DIR`"
)
BORDER_TOLERANCE = 1.0  # pixels a box may pass the image border (COCO files are often rounded); clipped
MAX_IMAGE_SIDE = 2**31 - 1  # pixels; PIL's limit, and far beyond any real image


def _make_show() -> reprlib.Repr:
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother, shown.maxlist, shown.maxdict = 3, 80, 40, 8, 6
    return shown


show_value = _make_show().repr  # a value from the file in a message: short, however long or deep it is


@dataclass(frozen=True)
class CocoCategories:
    """A dataset's categories: label k (0-based) is category id ids[k], named names[k].

    `source` (the file they were read from) names them in error messages and is not compared.
    """

    ids: tuple[int, ...]  # ascending
    names: tuple[str, ...]
    source: str = field(default="", compare=False)
    _label_by_id: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if len(self.ids) != len(self.names):
            raise ValueError(f"{len(self.ids)} category ids but {len(self.names)} names; they must be aligned")
        if any(a >= b for a, b in zip(self.ids, self.ids[1:])):
            raise ValueError(f"category ids {list(self.ids)} are not strictly ascending")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"category names {list(self.names)} are not unique")
        object.__setattr__(self, "_label_by_id", {cid: k for k, cid in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    def label_of(self, category_id: int) -> int:
        """The 0-based label of a category id."""
        try:
            return self._label_by_id[category_id]
        except (KeyError, TypeError):
            raise DetectionDataError(
                f"category id {category_id!r} is not one of {_short(self.ids)}{_from(self.source)}"
            ) from None


def _from(source: str) -> str:
    return f" (the categories of {source})" if source else ""


def _short(values: Sequence[Any], limit: int = 8) -> str:
    """[1, 2, 3] or [1, 2, ..., 40 (40 in all)]: ids for a one-line message."""
    values = list(values)
    if len(values) <= limit:
        return str(values)
    return f"[{', '.join(str(v) for v in values[:limit])}, ... ({len(values)} in all)]"


def coco_integer(value: Any) -> int | None:
    """An integer, or an integral float ("640.0" from some exporters); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def coco_number(value: Any) -> float | None:
    """A finite float, or None for anything else (an integer too large for a float among them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def coco_box_numbers(bbox: Any) -> list[float] | None:
    """A COCO `bbox` as four finite floats, or None when it is not a list of four numbers."""
    numbers = [coco_number(v) for v in bbox] if isinstance(bbox, list) else []
    return numbers if len(numbers) == 4 and None not in numbers else None  # type: ignore[return-value]


def coco_bbox(box: Sequence[float]) -> list[float]:
    """A box in VOC file coordinates -> COCO's continuous [x, y, w, h]."""
    x0, y0, x1, y1 = voc_to_xyxy(box)
    return [x0, y0, x1 - x0, y1 - y0]


# ----------------------------------------------------------------------------------------------------------
# The instances file


NOT_COCO = ("expected a JSON object with 'images', 'annotations' and 'categories' lists, as a COCO instances "
            "file (annotations/instances_train2017.json) holds")
REQUIRED_KEYS = {
    "images": ("id", "file_name"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
ID_KEYS = {"images": ("id",), "annotations": ("id", "image_id", "category_id"), "categories": ("id",)}


def read_coco_instances(path: str | Path) -> tuple[dict[str, Any], CocoCategories]:
    """The parsed instances file and its categories, after the structural checks every use needs.

    Raises DetectionDataError (never skippable) when the file is missing, cannot be read as JSON
    (`colt_core.io.load_json_file`), is not a COCO instances file (no images/annotations/categories lists,
    entries that are not objects or lack a required key, ids that are not integers, file names that are not
    names), or its categories are empty or repeat an id or a name. Per-image and per-annotation contents
    are checked by `load_coco`.
    """
    path = Path(path)
    if not path.exists():
        raise DetectionDataError(f"{path}: annotations file not found; {HOW_TO_GET_COCO}")
    data = load_json_file(path, what="annotations file", fix=NOT_COCO, error=DetectionDataError)
    if not isinstance(data, dict):
        raise DetectionDataError(f"{path}: not a COCO instances file (the JSON is a {type(data).__name__}); "
                                 f"{NOT_COCO}")
    for key, required in REQUIRED_KEYS.items():
        entries = data.get(key)
        if not isinstance(entries, list):
            raise DetectionDataError(f"{path}: not a COCO instances file (no {key!r} list); {NOT_COCO}")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise DetectionDataError(f"{path}: {key}[{index}] is a {type(entry).__name__}, not an object; "
                                         f"{NOT_COCO}")
            missing = [k for k in required if k not in entry]
            if missing:
                raise DetectionDataError(
                    f"{path}: {key}[{index}] (id {show_value(entry.get('id'))}) has no "
                    f"{' or '.join(map(repr, missing))}; every entry of {key!r} needs {', '.join(map(repr, required))}"
                )
            for k in ID_KEYS[key]:
                if coco_integer(entry[k]) is None:
                    raise DetectionDataError(f"{path}: {key}[{index}] has {k} {show_value(entry[k])}, not an integer "
                                             "id; fix the entry")
        if key == "images":
            for index, entry in enumerate(entries):
                if not _is_file_name(entry["file_name"]):
                    raise DetectionDataError(f"{path}: image {entry['id']} (images[{index}]) has file_name "
                                             f"{show_value(entry['file_name'])}, not a file name; fix the entry")
    return data, _categories(data["categories"], path)


def _is_file_name(value: Any) -> bool:
    """A non-empty string the file system can take as a path (no NUL byte, encodable)."""
    if not isinstance(value, str) or not value or "\0" in value:
        return False
    try:
        os.fsencode(value)
    except UnicodeError:
        return False
    return True


def _categories(entries: list[dict[str, Any]], path: Path) -> CocoCategories:
    if not entries:
        raise DetectionDataError(f"{path}: the 'categories' list is empty; list the dataset's categories as "
                                 "{\"id\": 1, \"name\": \"person\"} entries")
    ids = [coco_integer(c["id"]) for c in entries]
    for entry in entries:
        if not isinstance(entry["name"], str) or not entry["name"]:
            raise DetectionDataError(f"{path}: category {entry['id']} has name {show_value(entry['name'])}, not a "
                                     "name; fix the entry")
    for what, values in (("id", ids), ("name", [c["name"] for c in entries])):
        repeated = sorted(v for v, n in Counter(values).items() if n > 1)
        if repeated:
            raise DetectionDataError(f"{path}: category {what}(s) {repeated} appear more than once in "
                                     "'categories'; each category needs its own id and name")
    ordered = sorted(zip(ids, (c["name"] for c in entries), strict=True))
    return CocoCategories(tuple(i for i, _ in ordered), tuple(n for _, n in ordered), source=str(path))


def check_same_categories(expected: CocoCategories, got: CocoCategories) -> None:
    """Raise, naming both sources and what differs, unless the two category lists are the same."""
    if expected == got:
        return
    want, have = dict(zip(expected.ids, expected.names)), dict(zip(got.ids, got.names))
    differences = []
    if only := [i for i in have if i not in want]:
        differences.append(f"ids {_short(only)} only in {got.source or 'the second'}")
    if only := [i for i in want if i not in have]:
        differences.append(f"ids {_short(only)} only in {expected.source or 'the first'}")
    renamed = [i for i in have if i in want and have[i] != want[i]]
    differences += [f"id {i} is {have[i]!r} here but {want[i]!r} there" for i in renamed[:3]]
    if len(renamed) > 3:
        differences.append(f"{len(renamed) - 3} more renamed")
    raise DetectionDataError(
        f"{got.source or 'these categories'}: categories differ from those of {expected.source or 'the others'} "
        f"({'; '.join(differences)}); every annotations file of a run (training and test) must list the same "
        "categories, with the same ids and names"
    )


# ----------------------------------------------------------------------------------------------------------
# Records


def check_coco_files(pairs: Sequence[tuple[str | Path, str | Path]]) -> None:
    """Raise, naming the path and how to get the data, unless every images folder and annotations file
    exists (cheap: a run checks it before it fetches anything)."""
    for images_dir, instances in pairs:
        if not Path(instances).is_file():
            raise DetectionDataError(f"{instances}: annotations file not found; {HOW_TO_GET_COCO}")
        if not Path(images_dir).is_dir():
            raise DetectionDataError(f"{images_dir}: images folder not found (the images of {instances}); "
                                     f"{HOW_TO_GET_COCO}")


def load_coco(
    pairs: Sequence[tuple[str | Path, str | Path]],
    *,
    on_bad_annotation: Literal["error", "skip"] = "error",
    keep_empty: bool = True,
    categories: CocoCategories | None = None,
) -> tuple[list[ImageRecord], CocoCategories, BadAnnotationStats]:
    """Read one or more (images_dir, annotations_json) pairs; their records are concatenated in order.

    Every pair must list the same categories, and so must `categories` when given (e.g. the training
    categories when reading the test set); these are returned. Images keep the file's order; an image
    without annotations is kept with keep_empty=True (an all-background image), else left out (logged).
    Image ids are unique within a file; the same id in two pairs gives two records with the same image_id.

    Structural problems (a missing images folder or annotations file, a file that is not a COCO instances
    file, categories that differ, a file_name leading outside the images folder: found before any image of
    that file is looked at) always raise. A bad image or annotation -- an annotation naming an unknown image
    or category, a box that is malformed, has no area or leaves the image by more than BORDER_TOLERANCE pixels (a box
    within it is clipped), an image whose size is missing or not positive, whose file is missing, cannot be
    decoded or has another size, a repeated image or annotation id -- raises with on_bad_annotation="error";
    with "skip" the *whole image* is dropped, a warning logged and the drop counted in the stats (an unknown
    image id counts as a skipped image). As for VOC, dropping only the bad object would keep pixels showing an
    object while the targets call it background. Only image headers are read (size, format); a file corrupt
    past its header fails when it is loaded.
    """
    if on_bad_annotation not in ("error", "skip"):
        raise ValueError(f"on_bad_annotation={on_bad_annotation!r}: expected 'error' or 'skip'")
    if isinstance(pairs, str | Path) or not pairs or any(
        isinstance(pair, str | Path) or len(pair) != 2 for pair in pairs
    ):
        raise ValueError(f"pairs={pairs!r}: expected a list of (images_dir, annotations_json) pairs")
    records: list[ImageRecord] = []
    stats = BadAnnotationStats()
    for images_dir, annotations_json in pairs:
        file_records, file_categories = _read_pair(Path(images_dir), Path(annotations_json), categories,
                                                   on_bad_annotation, stats)
        categories = file_categories if categories is None else categories
        if not keep_empty:
            kept = [r for r in file_records if r.objects]
            if len(kept) != len(file_records):
                logger.info("%s: left out %d image(s) without annotations", annotations_json,
                            len(file_records) - len(kept))
            file_records = kept
        records += file_records
    if stats.num_skipped:
        logger.warning("skipped %d image(s) with bad annotations: %s", stats.num_skipped, dict(stats.by_problem))
    assert categories is not None
    return records, categories, stats


def _read_pair(
    images_dir: Path,
    path: Path,
    expected: CocoCategories | None,
    on_bad_annotation: str,
    stats: BadAnnotationStats,
) -> tuple[list[ImageRecord], CocoCategories]:
    data, categories = read_coco_instances(path)
    if not images_dir.is_dir():
        raise DetectionDataError(f"{images_dir}: images folder not found (the images of {path}); {HOW_TO_GET_COCO}")
    if expected is not None:
        check_same_categories(expected, categories)
    image_path = image_paths(data["images"], images_dir, path)

    annotations_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        annotations_of[coco_integer(ann["image_id"])].append(ann)  # type: ignore[index]
    image_count = Counter(coco_integer(image["id"]) for image in data["images"])
    annotation_count = Counter(coco_integer(ann["id"]) for ann in data["annotations"])

    def bad(image_id: int, exc: DetectionDataError) -> None:
        if on_bad_annotation == "error":
            raise exc
        logger.warning("skipping image %s: %s", image_id, exc)
        stats.skipped_image_ids.append(str(image_id))
        stats.skipped_objects += len(annotations_of.pop(image_id, ()))  # once, should the id repeat
        stats.by_problem[exc.problem or "other"] += 1
        stats.messages.append(str(exc))

    # Everything the JSON alone shows, before any image file is opened.
    candidates = []
    for index, image in enumerate(data["images"]):
        image_id = coco_integer(image["id"])
        assert image_id is not None
        try:
            if image_count[image_id] > 1:
                raise DetectionDataError(
                    f"{path}: image id {image_id} appears {image_count[image_id]} times in 'images'; image ids "
                    "must be unique: fix or remove the repeated entries", problem="duplicate_image_id")
            record = _image_record(image, image_id, annotations_of.get(image_id, []), annotation_count,
                                   categories, image_path[index], path)
        except DetectionDataError as exc:
            bad(image_id, exc)
            continue
        candidates.append(record)
    for image_id, anns in list(annotations_of.items()):
        if image_id not in image_count:
            ids = [coco_integer(a["id"]) for a in anns]
            bad(image_id, DetectionDataError(
                f"{path}: annotation(s) {_short(ids)} name image id {image_id}, which is not in 'images'; add the "
                "image or remove its annotations", problem="unknown_image_id"))

    records = []
    for record in candidates:
        try:
            _check_image_file(record, path)
        except DetectionDataError as exc:
            bad(record.source_id, exc)  # type: ignore[arg-type]
            continue
        records.append(record)
    return records, categories


def image_paths(images: Sequence[Mapping[str, Any]], images_dir: Path, path: Path) -> list[Path]:
    """The image files of the entries of `images`; raises, naming the image, its file_name and the annotations
    file, when a file_name leads outside the image folder (`../x.jpg`, `/etc/passwd`). Only the names are
    looked at, no file is opened (`colt_det.data.path_inside`).

    Never skipped: an annotations file that reaches for files elsewhere on the disk is not a dataset with a
    bad image, it is not a dataset to read at all.
    """
    paths = []
    for image in images:
        inside = path_inside(images_dir, image["file_name"])
        if inside is None:
            raise DetectionDataError(
                f"{path}: image {image['id']} has file_name {show_value(image['file_name'])}, which leads outside its "
                f"image folder {images_dir}; an annotations file may only name files inside the folder it is read "
                "with (refused even with data.on_bad_annotation: skip): fix the file_name or put the image in "
                "the folder")
        paths.append(inside)
    return paths


def _image_record(
    image: Mapping[str, Any],
    image_id: int,
    annotations: Sequence[Mapping[str, Any]],
    annotation_count: Counter,
    categories: CocoCategories,
    image_path: Path,
    path: Path,
) -> ImageRecord:
    width, height = coco_integer(image.get("width")), coco_integer(image.get("height"))
    if width is None or height is None or not 0 < width <= MAX_IMAGE_SIDE or not 0 < height <= MAX_IMAGE_SIDE:
        size = " and ".join(f"{key} {show_value(image[key])}" if key in image else f"no {key}"
                            for key in ("width", "height"))
        raise DetectionDataError(f"{path}: image {image_id} has {size}; both must be positive integers (pixels): "
                                 "fix the image entry", problem="bad_image_size")
    objects = [_object(ann, image_id, width, height, annotation_count, categories, path) for ann in annotations]
    return ImageRecord(image_id=str(image_id), image_path=image_path, width=width,
                       height=height, objects=objects, year="", source_id=image_id, annotations=path)


def _object(
    ann: Mapping[str, Any],
    image_id: int,
    width: int,
    height: int,
    annotation_count: Counter,
    categories: CocoCategories,
    path: Path,
) -> ObjectRecord:
    ann_id = coco_integer(ann["id"])
    where = f"{path}: annotation {ann_id} (image {image_id})"
    if annotation_count[ann_id] > 1:
        raise DetectionDataError(f"{where}: annotation id {ann_id} appears {annotation_count[ann_id]} times; "
                                 "annotation ids must be unique: renumber them", problem="duplicate_annotation_id")
    category_id = coco_integer(ann["category_id"])
    if category_id not in categories.ids:
        raise DetectionDataError(f"{where} has category id {category_id}, which is not in 'categories' "
                                 f"{_short(categories.ids)}; fix the category id or add the category",
                                 problem="unknown_category")
    bbox = ann["bbox"]
    numbers = coco_box_numbers(bbox)
    if numbers is None:
        raise DetectionDataError(f"{where} has bbox {show_value(bbox)}, not [x, y, width, height]; fix the annotation",
                                 problem="malformed_annotation")
    crowd = coco_crowd_flag(ann)
    if crowd is None:
        raise DetectionDataError(f"{where} has iscrowd {show_value(ann['iscrowd'])}, not 0 or 1; fix the annotation",
                                 problem="malformed_annotation")
    x, y, w, h = numbers
    if w <= 0 or h <= 0:
        raise DetectionDataError(f"{where} has bbox {bbox} with non-positive width or height; fix or delete the "
                                 "annotation", problem="zero_area_box")
    x1, y1 = x + w, y + h
    tol = BORDER_TOLERANCE
    if x < -tol or y < -tol or x1 > width + tol or y1 > height + tol:
        raise DetectionDataError(
            f"{where} has bbox {bbox} outside the {width}x{height} image (COCO boxes are [x, y, width, height] "
            f"with 0 <= x and x + width <= image width; {tol:g} px of rounding is allowed); fix the box",
            problem="out_of_image_box")
    if x < 0 or y < 0 or x1 > width or y1 > height:
        x, y, x1, y1 = max(x, 0.0), max(y, 0.0), min(x1, float(width)), min(y1, float(height))
        if x1 <= x or y1 <= y:
            raise DetectionDataError(f"{where} has bbox {bbox}, which lies on the border of the {width}x{height} "
                                     "image, not in it; fix or delete the annotation", problem="out_of_image_box")
    label = categories.label_of(category_id)  # type: ignore[arg-type]
    return ObjectRecord(name=categories.names[label], label=label, box=xyxy_to_voc((x, y, x1, y1)),
                        difficult=False, truncated=False, crowd=crowd)


def coco_crowd_flag(annotation: Mapping[str, Any]) -> bool | None:
    """An annotation's `iscrowd` (0 when absent) as a bool, or None when it is not 0 or 1."""
    crowd = annotation.get("iscrowd", 0)
    if isinstance(crowd, int | float) and crowd in (0, 1):  # False/True are 0/1 too
        return bool(crowd)
    return None


def _check_image_file(record: ImageRecord, path: Path) -> None:
    """The file is there, its header decodes and its size is the annotated one (only the header is read)."""
    fix = f"put the image there or remove image {record.source_id} from {path}"
    try:
        found = record.image_path.is_file()
    except OSError as exc:
        raise DetectionDataError(f"{record.image_path}: cannot read image {record.source_id} of {path} "
                                 f"({exc.strerror}); {fix}", problem="unreadable_image") from None
    if not found:
        raise DetectionDataError(f"{record.image_path}: image file not found (image {record.source_id} of {path}); "
                                 f"{fix}", problem="missing_image")
    try:
        with Image.open(record.image_path) as image:
            size = image.size
    except IMAGE_ERRORS as exc:
        raise DetectionDataError(f"{record.image_path}: cannot decode image {record.source_id} of {path} ({exc}); "
                                 f"replace the file or remove the image", problem="unreadable_image") from None
    if size != (record.width, record.height):
        raise DetectionDataError(
            f"{record.image_path}: image is {size[0]}x{size[1]} but {path} says {record.width}x{record.height} for "
            f"image {record.source_id}; the image or the annotations file is from another version of the data",
            problem="image_size_mismatch")
