"""The detection report's figure: the ground truth, the dense model's and the final ticket's boxes on a few fixed
test images, side by side, so a reader sees what a ticket finds.

At evaluation the task keeps the boxes on the first `PREVIEW_IMAGES` test images by id that score at least
`SCORE_THRESHOLD` (`detection_preview`, a small JSON beside the evaluation's metrics); the report draws the
figure from those files and the image files they name, so a resumed run redraws it the same.

Layout: one row per image, one column for the ground truth and one per evaluation; every panel is a
`CELL`-pixel square holding the image scaled to fit (top-left aligned), under a `HEADER`-pixel strip of titles.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes

from colt_det.data import IMAGE_ERRORS, Detection, ImageRecord, voc_to_xyxy

PREVIEW_IMAGES = 4
SCORE_THRESHOLD = 0.5
CELL = 240  # px, the side of a panel
GAP = 4  # px between panels and around them
HEADER = 18  # px, the strip of column titles
LINE = 2  # px, the width of a box's outline
BACKGROUND = (255, 255, 255)
MISSING = (224, 224, 224)  # a panel whose image file cannot be read any more
# One colour per class (matplotlib's tab20), by the class's index in the dataset's class list.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")


# ----- what an evaluation keeps ----------------------------------------------------------------------
def preview_records(records: Sequence[ImageRecord], count: int = PREVIEW_IMAGES) -> list[ImageRecord]:
    """The first `count` test images by id (a COCO image's id, a VOC file stem): the same ones in every run on
    the same test set."""
    def by_id(record: ImageRecord) -> tuple[int, str]:
        return (record.source_id, "") if record.source_id is not None else (0, record.image_id)

    return sorted(records, key=by_id)[:count]


def detection_preview(records: Sequence[ImageRecord], detections: Mapping[str, Sequence[Detection]],
                      classes: Sequence[str], *, count: int = PREVIEW_IMAGES,
                      threshold: float = SCORE_THRESHOLD) -> dict[str, Any]:
    """What the figure needs of one evaluation, as plain data: the preview images (their files, sizes and
    ground truth) and their detections scoring at least `threshold`, boxes as 0-based xyxy pixels."""
    chosen = preview_records(records, count)
    found: dict[str, list[dict[str, Any]]] = {r.image_id: [] for r in chosen}
    for name, scored in detections.items():
        for d in scored:
            if d.image_id in found and d.score >= threshold:
                found[d.image_id].append({"class": name, "score": float(d.score), "box": list(voc_to_xyxy(d.box))})
    images = [{"id": r.image_id, "path": str(r.image_path.resolve()), "width": r.width, "height": r.height,
               "ground_truth": [{"class": o.name, "box": list(voc_to_xyxy(o.box)), "ignored": o.ignored}
                                for o in r.objects],
               "detections": sorted(found[r.image_id], key=lambda d: (-d["score"], d["class"], d["box"]))}
              for r in chosen]
    return {"score_threshold": threshold, "classes": list(classes), "images": images}


# ----- the figure ------------------------------------------------------------------------------------
def figure_size(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure of `rows` images and `columns` panels per image."""
    return GAP + columns * (CELL + GAP), HEADER + GAP + rows * (CELL + GAP)


def panel_origin(row: int, column: int) -> tuple[int, int]:
    """The (x, y) pixel of a panel's top-left corner in the figure."""
    return GAP + column * (CELL + GAP), HEADER + GAP + row * (CELL + GAP)


def panel_scale(width: int, height: int) -> float:
    """How much an image of `width` x `height` is scaled to fit a panel."""
    return CELL / max(width, height, 1)


def _read_image(path: str, width: int, height: int) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except IMAGE_ERRORS:
        return None
    return image if image.size == (width, height) else None  # another file in its place: boxes would not fit


def _panel(image: Image.Image | None, size: tuple[int, int], boxes: Sequence[Mapping[str, Any]],
           labels: Sequence[str], classes: Sequence[str], empty: str = "") -> Image.Image:
    """One image scaled to fit a panel, with `boxes` outlined in their class's colour and labelled (`empty`
    written in a corner where there are none)."""
    scale = panel_scale(*size)
    shown = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    if image is None:
        panel = Image.new("RGB", shown, MISSING)
        ImageDraw.Draw(panel).text((4, 4), "image file not found", fill=(0, 0, 0), font=ImageFont.load_default())
        return panel
    panel = image.resize(shown, Image.Resampling.BILINEAR)
    if not boxes:
        if empty:  # say so, or a model that found nothing reads as a figure that failed
            draw, font = ImageDraw.Draw(panel), ImageFont.load_default()
            left, top, right, bottom = draw.textbbox((3, shown[1] - 3), empty, font=font, anchor="lb")
            draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=BACKGROUND)
            draw.text((3, shown[1] - 3), empty, fill=(0, 0, 0), font=font, anchor="lb")
        return panel
    xyxy = torch.tensor([b["box"] for b in boxes], dtype=torch.float64) * scale
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, shown[0] - 1)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, shown[1] - 1)
    colours = [PALETTE[classes.index(b["class"]) % len(PALETTE)] if b["class"] in classes else "#000000"
               for b in boxes]
    pixels = torch.from_numpy(np.asarray(panel).copy()).permute(2, 0, 1)
    drawn = draw_bounding_boxes(pixels, xyxy, labels=list(labels), colors=colours, width=LINE, fill_labels=True)
    return Image.fromarray(drawn.permute(1, 2, 0).numpy())


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """`text`, cut short with an ellipsis where it is wider than `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def draw_detection_figure(columns: Sequence[tuple[str, Mapping[str, Any]]]) -> bytes:
    """The figure as PNG bytes: per preview image (the first evaluation's), the ground truth and then each
    `(title, preview)` evaluation's boxes, labelled "class score"; ignored (difficult, crowd) ground truth is
    labelled so. The same previews and image files give the same bytes."""
    first = columns[0][1]
    images, classes = first["images"], list(first.get("classes", []))
    titles = ["ground truth", *(title for title, _ in columns)]
    figure = Image.new("RGB", figure_size(len(images), len(titles)), BACKGROUND)
    draw, font = ImageDraw.Draw(figure), ImageFont.load_default()
    for c, title in enumerate(titles):
        x, _ = panel_origin(0, c)
        draw.text((x, 3), _fit(draw, title, font, CELL), fill=(0, 0, 0), font=font)
    for row, entry in enumerate(images):
        size = (int(entry["width"]), int(entry["height"]))
        image = _read_image(entry["path"], *size)
        truth = entry["ground_truth"]
        panels = [(truth, [f"{b['class']} (ignored)" if b.get("ignored") else b["class"] for b in truth], "")]
        for _, preview in columns:
            found = next((e["detections"] for e in preview["images"] if e["id"] == entry["id"]), [])
            panels.append((found, [f"{b['class']} {b['score']:.2f}" for b in found],
                           f"no box scores {float(preview['score_threshold']):g} or more"))
        for c, (boxes, labels, empty) in enumerate(panels):
            figure.paste(_panel(image, size, boxes, labels, classes, empty), panel_origin(row, c))
    buffer = io.BytesIO()
    figure.save(buffer, format="PNG")
    return buffer.getvalue()
