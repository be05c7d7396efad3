"""Pascal VOC on disk: parse a local VOCdevkit into the records of `colt_det.data` (VOC file coordinates)."""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from colt_det.data import (
    BadAnnotationStats,
    DetectionDataError,
    ImageRecord,
    ObjectRecord,
    path_inside,
)

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

HOW_TO_GET_VOC = (
    "unpack the official VOC tarballs (VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar, "
    "VOCtrainval_11-May-2012.tar) there, or create the synthetic one with "
    "`python tools/make_synthetic_voc.py --out DIR`"
)


# ----------------------------------------------------------------------------------------------------------
# XML parsing


def _text(element: ET.Element, tag: str, path: Path) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DetectionDataError(
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
        raise DetectionDataError(
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


# What reading an annotation file can raise beside a parse error: an unknown declared encoding (LookupError),
# undecodable text (UnicodeError).
_XML_ERRORS = (ET.ParseError, LookupError, UnicodeError)


def parse_voc_xml(path: str | Path, classes: Sequence[str] = VOC_CLASSES, *,
                  image_path: Path | None = None) -> ImageRecord:
    """Parse one VOC annotation file, validating class names and boxes; raises DetectionDataError on bad input.

    The image is expected at `image_path`, by default `<year folder>/JPEGImages/<id>.jpg`, the id being the
    XML file's stem (the <filename> element is not trusted: it is wrong in some re-exported datasets). A box is
    rejected when it has no pixels (xmax < xmin or ymax < ymin; xmin == xmax is a one-pixel-wide box) or when
    it leaves the image (xmin < 1, ymin < 1, xmax > width or ymax > height).
    """
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. an image id longer than the file system allows in a name
        raise DetectionDataError(f"{path}: cannot look up the annotation ({exc.strerror}); fix the image id "
                                 f"'{path.stem}' in the image set file", problem="unreadable_xml") from None
    if not found:
        raise DetectionDataError(
            f"{path}: annotation file not found; restore it from the VOC tarball or remove "
            f"'{path.stem}' from the image set file",
            problem="missing_xml",
        )
    try:
        root = ET.parse(path).getroot()
    except _XML_ERRORS as exc:
        raise DetectionDataError(
            f"{path}: malformed annotation XML ({exc}); restore the file from the VOC tarball",
            problem="malformed_xml",
        ) from None
    except OSError as exc:
        raise DetectionDataError(
            f"{path}: cannot read the annotation ({exc.strerror}); restore the file from the VOC tarball",
            problem="unreadable_xml",
        ) from None
    if root.tag != "annotation":
        raise DetectionDataError(
            f"{path}: malformed annotation: root element is <{root.tag}>, expected <annotation>",
            problem="malformed_xml",
        )
    size = root.find("size")
    if size is None:
        raise DetectionDataError(
            f"{path}: malformed annotation: no <size> element; fix the XML", problem="malformed_xml"
        )
    width = _number(size, "width", path, integer=True)
    height = _number(size, "height", path, integer=True)
    if width <= 0 or height <= 0:
        raise DetectionDataError(
            f"{path}: malformed annotation: image size {width}x{height} is not positive; fix <size>",
            problem="malformed_xml",
        )

    class_index = {name: i for i, name in enumerate(classes)}
    objects: list[ObjectRecord] = []
    for obj in root.findall("object"):
        name = _text(obj, "name", path)
        if name not in class_index:
            raise DetectionDataError(
                f"{path}: unknown class name {name!r}; expected one of {', '.join(classes)}",
                problem="unknown_class",
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DetectionDataError(
                f"{path}: malformed annotation: object {name!r} has no <bndbox>; fix the XML",
                problem="malformed_xml",
            )
        box = tuple(_number(bndbox, tag, path, integer=False) for tag in ("xmin", "ymin", "xmax", "ymax"))
        xmin, ymin, xmax, ymax = box
        if xmax < xmin or ymax < ymin:
            raise DetectionDataError(
                f"{path}: object {name!r} has a zero-area box {box} (xmax < xmin or ymax < ymin); "
                "fix or delete the object",
                problem="zero_area_box",
            )
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise DetectionDataError(
                f"{path}: object {name!r} has box {box} outside the {width}x{height} image "
                "(VOC boxes are 1-based: 1 <= xmin <= xmax <= width); fix the box",
                problem="out_of_image_box",
            )
        objects.append(
            ObjectRecord(
                name=name,
                label=class_index[name],
                box=box,  # type: ignore[arg-type]
                difficult=_flag(obj, "difficult", path),
                truncated=_flag(obj, "truncated", path),
            )
        )

    year_dir = path.parent.parent
    match = re.fullmatch(r"VOC(\d{4})", year_dir.name)
    return ImageRecord(
        image_id=path.stem,
        image_path=year_dir / "JPEGImages" / f"{path.stem}.jpg" if image_path is None else image_path,
        width=width,
        height=height,
        objects=objects,
        year=match.group(1) if match else year_dir.name,
        annotations=path,
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
    raise DetectionDataError(
        f"{expected}: Pascal VOC {year} not found (the VOC root may be the folder holding VOCdevkit/ or the "
        f"VOCdevkit folder itself; got {root}); {HOW_TO_GET_VOC}"
    )


def read_image_set(year_dir: Path, image_set: str) -> list[str]:
    """Image ids listed in `ImageSets/Main/<image_set>.txt` (first token of each non-empty line)."""
    set_file = year_dir / "ImageSets" / "Main" / f"{image_set}.txt"
    if not set_file.is_file():
        main = year_dir / "ImageSets" / "Main"
        available = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
        raise DetectionDataError(
            f"{set_file}: image set file not found (available: {', '.join(available) or 'none'}); "
            f"check the image set name or re-unpack the VOC tarball; {HOW_TO_GET_VOC}"
        )
    try:
        text = set_file.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not an id
    except UnicodeDecodeError as exc:
        raise DetectionDataError(f"{set_file}: not an image set file (byte {exc.start} is not UTF-8 text; the file "
                                 "lists one image id a line); re-unpack the VOC tarball") from None
    except OSError as exc:
        raise DetectionDataError(f"{set_file}: cannot read the image set file ({exc.strerror}); re-unpack the VOC "
                                 "tarball") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DetectionDataError(f"{set_file}: image set is empty; re-unpack the VOC tarball or choose another set")
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
) -> tuple[list[ImageRecord], BadAnnotationStats]:
    """Read the records of one or more VOC image sets (e.g. "2007+2012:trainval" is the 07+12 union).

    Structural problems (no devkit, no year folder, missing or empty image set file, an image id whose
    annotation or image path leads outside `Annotations/` or `JPEGImages/`) always raise.
    A bad annotation (missing or malformed XML, missing image, unknown class, zero-area or out-of-image
    box) raises with on_bad_annotation="error"; with "skip" the *whole image* is dropped, a warning logged
    and the drop counted in the returned stats. Dropping only the bad object would keep an image whose
    pixels still show that object while its targets call it background.
    """
    if on_bad_annotation not in ("error", "skip"):
        raise ValueError(f"on_bad_annotation={on_bad_annotation!r}: expected 'error' or 'skip'")
    records: list[ImageRecord] = []
    stats = BadAnnotationStats()
    for year, image_set in parse_sets(sets):
        year_dir = voc_year_dir(root, year)
        for image_id in read_image_set(year_dir, image_set):
            xml, image = image_files(year_dir, image_set, image_id)
            try:
                record = parse_voc_xml(xml, classes, image_path=image)
                if not record.image_path.is_file():
                    raise DetectionDataError(
                        f"{record.image_path}: image file not found; restore it from the VOC tarball or "
                        f"remove '{image_id}' from {year_dir / 'ImageSets' / 'Main' / image_set}.txt",
                        problem="missing_image",
                    )
            except DetectionDataError as exc:
                if on_bad_annotation == "error":
                    raise
                logger.warning("skipping image %s: %s", image_id, exc)
                objects = _count_objects(xml)
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


def image_files(year_dir: Path, image_set: str, image_id: str) -> tuple[Path, Path]:
    """The annotation and image files of an image id listed in an image set; raises, naming the image set file
    and the id, when either leads outside `Annotations/` or `JPEGImages/` (`../../etc/passwd`, `/etc/x`).

    Only the id's text is looked at, no file is opened. Never skipped: an image set that reaches for files
    elsewhere on the disk is not a dataset with a bad image, it is not a dataset to read at all.
    """
    xml = path_inside(year_dir / "Annotations", f"{image_id}.xml")
    image = path_inside(year_dir / "JPEGImages", f"{image_id}.jpg")
    if xml is None or image is None:
        folder = "Annotations" if xml is None else "JPEGImages"
        raise DetectionDataError(
            f"{year_dir / 'ImageSets' / 'Main' / image_set}.txt: image id {image_id!r} leads outside "
            f"{year_dir / folder}; an image set may only name files inside its year folder (refused even with "
            "data.on_bad_annotation: skip): fix the line or re-unpack the VOC tarball")
    return xml, image


def _count_objects(path: Path) -> int | None:
    """How many objects an annotation file lists, or None when it cannot be read as XML."""
    try:
        return len(ET.parse(path).getroot().findall("object"))
    except (OSError, ValueError, *_XML_ERRORS):  # ValueError: a NUL byte in the image id, hence in the path
        return None
