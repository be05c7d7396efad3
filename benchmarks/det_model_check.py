"""Size and speed of the full-width Faster R-CNN VGG16 on the CPU or a GPU (fp32 and AMP).

    python benchmarks/det_model_check.py [--device cuda] [--size 600] [--batch 4] [--steps 10] [--out FILE]

Reports the parameter count, the time of one training step (fp32 and, on CUDA, AMP) and of one inference
batch on the paper's input (batch 4, 600x600) and peak GPU memory. Synthetic images: speed does not depend
on what they show.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from colt_core.runtime import pick_device
from colt_det.model import build_vgg16_faster_rcnn


def synthetic_batch(batch: int, size: int, num_classes: int, device: torch.device, seed: int = 0):
    """Random images with three random boxes each."""
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=generator).to(device))
        corners = torch.rand(3, 2, generator=generator) * size * 0.6
        sides = 40 + torch.rand(3, 2, generator=generator) * size * 0.35
        boxes = torch.cat([corners, corners + sides], dim=1).clamp(max=size)
        labels = torch.randint(1, num_classes, (3,), generator=generator)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step(model, images, targets, optimizer, scaler, device, *, amp: bool) -> torch.Tensor:
    """One training step as torchvision's references/detection `train_one_epoch` takes it (float16 autocast
    with a GradScaler for `--amp`); the summed loss."""
    with torch.autocast(device.type, enabled=amp):
        loss = sum(model(images, targets).values())
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss


def time_training_steps(model, images, targets, device, *, amp: bool, steps: int, warmup: int = 2) -> dict:
    """Seconds per Adam training step (mean over `steps` after `warmup`), and peak GPU memory."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        loss = plain_step(model, images, targets, optimizer, scaler, device, amp=amp)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    result = {"seconds_per_step": sum(times) / len(times), "first_timed_step": times[0], "loss": loss.item()}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del optimizer
    model.zero_grad(set_to_none=True)
    return result


def time_inference(model, images, device, *, amp: bool, steps: int) -> float:
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, enabled=amp):
        model(images)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            model(images)
        _sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--size", type=int, default=600, help="square input size (paper: 600)")
    parser.add_argument("--batch", type=int, default=4, help="images per step (paper: 4)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here too")
    args = parser.parse_args()
    device = pick_device(args.device or "auto")

    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "input": [args.batch, 3, args.size, args.size]}
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_vgg16_faster_rcnn(21, min_size=args.size, max_size=max(args.size, 1000))
    report["build_seconds"] = time.perf_counter() - start
    report["parameters"] = sum(p.numel() for p in model.parameters())
    model.to(device)
    images, targets = synthetic_batch(args.batch, args.size, 21, device)
    report["train_fp32"] = time_training_steps(model, images, targets, device, amp=False, steps=args.steps)
    report["inference_fp32_seconds"] = time_inference(model, images, device, amp=False, steps=args.steps)
    if device.type == "cuda":
        report["train_amp"] = time_training_steps(model, images, targets, device, amp=True, steps=args.steps)
        report["inference_amp_seconds"] = time_inference(model, images, device, amp=True, steps=args.steps)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
