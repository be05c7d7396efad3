"""The detector's training and inference loops: one epoch, validation loss, and prediction.

Data loaders yield ``(images, targets)``: a list of float images (C, H, W) in [0, 1] and a list of target
dicts (``boxes`` xyxy float, ``labels`` int64, 1..K; optional ``image_id`` and ``orig_size``). The epoch
loop around them (seeding, model selection, resumable checkpoints) is ``colt_core.training.fit``; optimizers
and schedules are in ``colt_core.optim``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

Hook = Callable[[], None]
LogFn = Callable[[dict[str, Any]], None]


def _progress_bar(iterable: Iterable, enabled: bool, desc: str) -> Iterable:
    return tqdm(iterable, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


def _to_device(
    images: Iterable[torch.Tensor], targets: Iterable[Mapping[str, Any]], device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def _check_amp(scaler: torch.amp.GradScaler | None, device: torch.device) -> None:
    if scaler is not None and device.type != "cuda":
        raise ValueError(f"AMP (a GradScaler) needs a CUDA device, got {device}; pass scaler=None on the CPU")


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: Iterable,
    device: torch.device | str,
    *,
    scaler: torch.amp.GradScaler | None = None,
    before_step: Hook | None = None,
    after_step: Hook | None = None,
    lr_scheduler_per_iter: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
    progress: bool = True,
    epoch: int = 0,
    log_fn: LogFn | None = None,
    log_every: int = 20,
) -> dict[str, float]:
    """Train one pass over ``data_loader``; returns the mean of each loss and of their sum (``loss``).

    Per step: forward -> backward -> (unscale under AMP) -> ``before_step()`` (e.g. mask gradients) ->
    gradient clipping -> optimizer step -> ``after_step()`` (e.g. re-apply masks) -> lr scheduler step.
    ``log_fn`` gets ``{"epoch", "iteration", "lr", "loss", <loss terms>}`` every ``log_every`` steps.
    """
    device = torch.device(device)
    _check_amp(scaler, device)
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for images, targets in _progress_bar(data_loader, progress, f"train epoch {epoch}"):
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            terms = {k: round(v.item(), 4) for k, v in loss_dict.items()}
            raise FloatingPointError(
                f"training loss is {loss_value} at epoch {epoch}, iteration {steps} ({terms}); "
                "lower the learning rate (optimizer.lr) or set a gradient clip"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if before_step is not None:
            before_step()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if after_step is not None:
            after_step()
        if lr_scheduler_per_iter is not None:
            lr_scheduler_per_iter.step()

        steps += 1
        sums["loss"] = sums.get("loss", 0.0) + loss_value
        for k, v in loss_dict.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        if log_fn is not None and steps % log_every == 0:
            log_fn(
                {
                    "epoch": epoch,
                    "iteration": steps,
                    "lr": optimizer.param_groups[0]["lr"],
                    "loss": loss_value,
                    **{k: v.item() for k, v in loss_dict.items()},
                }
            )
    if steps == 0:
        raise ValueError("the training data loader yielded no batches; check the dataset and batch size")
    return {k: v / steps for k, v in sums.items()}


def _deterministic_train_mode(model: nn.Module) -> dict[nn.Module, bool]:
    """Train mode (so the detector returns losses) with dropout and batch norm in eval mode."""
    flags = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)):
            m.eval()
    return flags


def _restore_modes(flags: Mapping[nn.Module, bool]) -> None:
    for m, training in flags.items():
        m.training = training


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def evaluate_loss(
    model: nn.Module,
    data_loader: Iterable,
    device: torch.device | str,
    *,
    seed: int = 0,
    progress: bool = False,
) -> float:
    """Mean total detection loss per image, for model selection on a validation split.

    Faster R-CNN returns losses only in train mode, so it runs in train mode under ``no_grad`` with
    dropout off and a fixed seed for the RPN/RoI samplers (the global RNG is left untouched): the same
    weights always get the same validation loss.
    """
    device = torch.device(device)
    flags = _deterministic_train_mode(model)
    total, images_seen = 0.0, 0
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=_rng_devices(device)):
            torch.manual_seed(seed)
            for images, targets in _progress_bar(data_loader, progress, "val loss"):
                images, targets = _to_device(images, targets, device)
                loss = sum(model(images, targets).values()).item()
                total += loss * len(images)
                images_seen += len(images)
    finally:
        _restore_modes(flags)
    if images_seen == 0:
        raise ValueError("the validation data loader yielded no images; check the validation split")
    mean = total / images_seen
    if not math.isfinite(mean):
        raise FloatingPointError(
            f"validation loss is {mean}; training diverged: lower the learning rate (optimizer.lr)"
        )
    return mean


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
    amp: bool = False,
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
        with torch.no_grad(), torch.autocast("cuda", enabled=amp and device.type == "cuda"):
            for images, targets in _progress_bar(data_loader, progress, "predict"):
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
