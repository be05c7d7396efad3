"""Detector inference and losses outside training: detections in original image coordinates, and the
eval-mode switch that lets a torchvision detector return its losses for validation.

Data loaders yield ``(images, targets)``: a list of float images (C, H, W) in [0, 1] and a list of target
dicts (``boxes`` xyxy float, ``labels`` int64, 1..K; optional ``image_id`` and ``orig_size``). Training is
the engine's (``colt_core.train.trainer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from colt_core.runtime import progress_bar
from colt_core.train.speed import FULL, Precision
from colt_core.train.task import LoaderFactory
from colt_det.data import Detection, DetectionDataset, ImageRecord, collate_detection, detections_from_outputs
from colt_det.transforms import build_transforms
from colt_det.voc import VOC_CLASSES


@contextmanager
def losses_in_eval_mode(model: nn.Module) -> Iterator[None]:
    """Train mode (the only mode in which torchvision detectors return losses) with dropout and batch norm
    kept in eval mode, restored on exit: a validation loss that does not depend on dropout draws or move
    the batch statistics."""
    flags = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)):
            m.eval()
    try:
        yield
    finally:
        for m, training in flags.items():
            m.training = training


def _image_id(target: Mapping[str, Any], position: int) -> int | str:
    value = target.get("image_id", position)
    if isinstance(value, torch.Tensor):
        return int(value.item())
    return value


def rescale_boxes(boxes: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """Map xyxy boxes from an image of ``from_size`` (h, w) to one of ``to_size`` (h, w), clipped to it."""
    (h, w), (to_h, to_w) = from_size, to_size
    out = boxes.clone()
    out[:, 0::2] = (out[:, 0::2] * (to_w / w)).clamp_(0, to_w)
    out[:, 1::2] = (out[:, 1::2] * (to_h / h)).clamp_(0, to_h)
    return out


def predict(
    model: nn.Module,
    data_loader: Iterable,
    device: torch.device | str,
    *,
    amp: Precision = FULL,
    progress: bool = True,
) -> list[tuple[int | str, dict[str, torch.Tensor]]]:
    """Detections for every image in loader order: ``[(image_id, {"boxes", "labels", "scores"}), ...]``.

    Outputs are on the CPU in the coordinates of the original image: when a target holds ``orig_size``
    (H, W) and the loader's image tensor has another size (the eval transform resized it), boxes are
    scaled back. ``image_id`` is ``target["image_id"]`` or, without one, the position in the loader.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    results: list[tuple[int | str, dict[str, torch.Tensor]]] = []
    try:
        with torch.no_grad(), amp.autocast(device):
            for images, targets in progress_bar(data_loader, progress, "predict"):
                outputs = model([img.to(device, non_blocking=True) for img in images])
                for image, target, output in zip(images, targets, outputs):
                    out = {
                        "boxes": output["boxes"].float().cpu(),
                        "labels": output["labels"].cpu(),
                        "scores": output["scores"].float().cpu(),
                    }
                    if "orig_size" in target:
                        orig = tuple(int(s) for s in target["orig_size"])
                        size = tuple(image.shape[-2:])
                        if orig != size:
                            out["boxes"] = rescale_boxes(out["boxes"], size, orig)
                    results.append((_image_id(target, len(results)), out))
    finally:
        model.train(was_training)
    return results


def detect(model: nn.Module, records: list[ImageRecord], *, size: int | None, device: torch.device,
           amp: Precision = FULL, loader: LoaderFactory | None = None, batch_size: int = 4, num_workers: int = 0,
           progress: bool = True, classes: Sequence[str] = VOC_CLASSES) -> dict[str, list[Detection]]:
    """Run a detector of `classes` (+ background) over image records; detections per class in VOC file coordinates.

    `size`: the square side images are stretched to first (None: as they are; the detector's own transform
    resizes them and maps its boxes back to the image it was given, `predict` maps them on to the file's).
    `loader`: the engine's evaluation loaders (`TrainJob.loader`); None: batches of `batch_size` read by
    `num_workers` workers.
    """
    dataset = DetectionDataset(records, build_transforms(False, size), keep_difficult=True, classes=classes)
    if loader is not None:
        batches = loader(dataset)
    else:
        batches = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_detection, num_workers=num_workers,
                             pin_memory=device.type == "cuda")
    results = predict(model.to(device), batches, device, amp=amp, progress=progress)
    image_ids = [dataset.image_ids[int(i)] for i, _ in results]
    return detections_from_outputs(image_ids, [out for _, out in results], dataset.label_names)
