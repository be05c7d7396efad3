"""Training and evaluation augmentation for detection, with boxes kept consistent with the image.

Boxes enter and leave in torchvision coordinates (0-based continuous xyxy, see `colt_det.data`).
albumentations' "pascal_voc" format is (x_min, y_min, x_max, y_max) in pixels, which it normalises by the
image size; for continuous coordinates that is exact under resizing and flipping (x -> W - x), so our
xyxy boxes are handed to it unchanged.

albumentations keeps its own random generators, untouched by `random.seed` / `np.random.seed` /
`torch.manual_seed`. To make a run reproducible from the seeds the training loop already sets, each call
draws a fresh seed for the pipeline from torch's global generator (which DataLoader seeds per worker).
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Any

import numpy as np
import torch

# A box narrower or shorter than this many pixels after augmentation is degenerate and dropped.
MIN_BOX_SIDE = 1.0


def _albumentations() -> ModuleType:
    """Import albumentations without its on-import query to PyPI for updates: no network at run time."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


class DetectionTransform:
    """`(image uint8 HxWx3, boxes xyxy [K,4], labels [K]) -> (image, boxes float32 [K',4], labels [K'])`.

    Boxes are clipped to the image; boxes left with a side under MIN_BOX_SIDE pixels are dropped together
    with their labels. `labels` may be any integer array aligned with the boxes (the dataset passes object
    indices to keep other per-object fields aligned).
    """

    def __init__(self, transforms: list[Any], *, random: bool) -> None:
        A = _albumentations()
        with warnings.catch_warnings():
            # An evaluation pipeline without resizing has no step that moves boxes; that is intended.
            warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform")
            self.pipeline = A.Compose(
                transforms,
                bbox_params=A.BboxParams(
                    format="pascal_voc",
                    label_fields=["labels"],
                    clip=True,
                    filter_invalid_bboxes=True,
                    min_width=MIN_BOX_SIDE,
                    min_height=MIN_BOX_SIDE,
                ),
                strict=True,
            )
        self.random = random

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels)
        if len(boxes) != len(labels):
            raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels; they must be aligned")
        if self.random:
            self.pipeline.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        out = self.pipeline(image=image, bboxes=boxes, labels=labels)
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        out_labels = np.asarray(out["labels"], dtype=labels.dtype).reshape(-1)
        return out["image"], out_boxes, out_labels


def build_transforms(
    train: bool, size: int | None, hflip_p: float = 0.5, jitter: bool = True
) -> DetectionTransform:
    """The training pipeline (flip, square resize to `size`, photometric jitter) or the evaluation one.

    `size=None` keeps the original image size (the detector's own transform may resize later).
    """
    if size is not None and int(size) <= 0:
        raise ValueError(f"size={size}: expected a positive number of pixels or None")
    if not 0.0 <= hflip_p <= 1.0:
        raise ValueError(f"hflip_p={hflip_p}: expected a probability in [0, 1]")
    A = _albumentations()
    steps: list[Any] = []
    if train and hflip_p > 0:
        steps.append(A.HorizontalFlip(p=hflip_p))
    if size is not None:
        steps.append(A.Resize(height=int(size), width=int(size)))
    if train and jitter:
        steps.append(
            A.OneOf(
                [
                    A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=1.0),
                    A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0),
                ],
                p=0.8,
            )
        )
    return DetectionTransform(steps, random=train)
