"""Training and evaluation throughput of Faster R-CNN VGG16: a plain torchvision-style loop against the
project's trainer and each of its throughput settings; and one COLT-2 round sequential vs two ranks on one GPU.

    python benchmarks/bench_gpu.py [--steps 30] [--warmup 5] [--json FILE]

In one run, on one model and one set of synthetic images (600x600, batch 4, the full-width detector):

- `plain fp32` / `plain amp`: a loop in the style of torchvision's references/detection `train_one_epoch`
  (autocast float16 with a GradScaler for `--amp`), SGD 0.02, momentum 0.9, weight decay 1e-4;
- `colt defaults`: the project's `train_one_epoch` with the `train:` defaults on this device (bfloat16 where
  the GPU has it, channels-last, cuDNN autotuning, TF32) and a 50% mask kept by its MaskKeeper;
- one row per setting on its own (fp32 otherwise), with the same optimizer, data and mask;
- evaluation images/s of the plain model and of the project's defaults, and the peak GPU memory of each row;
- the wall time of one COLT-2 round of a few hundred synthetic images (one epoch) as one process and as two
  torchrun ranks sharing the GPU, and whether the two found the same mask (and the share of mask entries that
  agree: on a GPU, kernels that sum with atomics, such as RoIAlign's backward, can make even two runs of one
  process differ; on the CPU both runs use one thread per rank and agree bit for bit).

Without a GPU the same comparison runs at a tiny scale on the CPU (width 1/8, 128x128, batch 2) and says so;
its figures say nothing about a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from det_model_check import plain_step, synthetic_batch  # noqa: E402

from colt_core.config import load_config  # noqa: E402
from colt_core.prune.masks import MaskKeeper  # noqa: E402
from colt_core.settings import OptimizerConfig, ScheduleConfig, TrainConfig  # noqa: E402
from colt_core.train.epoch import train_one_epoch  # noqa: E402
from colt_core.train.optim import build_lr_scheduler, build_optimizer  # noqa: E402
from colt_core.train.speed import Speed  # noqa: E402
from colt_det.config import DetRunConfig  # noqa: E402
from colt_det.model import build_vgg16_faster_rcnn  # noqa: E402
from colt_det.predict import predict  # noqa: E402
from colt_det.synthetic import ensure_synthetic_voc  # noqa: E402
from colt_det.task import detector_loss  # noqa: E402

TOOL = ROOT / "tools" / "train_colt_det.py"
SGD = OptimizerConfig(name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4)  # torchvision's detection recipe


class BenchTask:
    """What `train_one_epoch` needs of a task: the detector's summed losses."""

    @staticmethod
    def loss(model, batch):
        return detector_loss(model, batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _model(scale: dict, device: torch.device, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_vgg16_faster_rcnn(21, width=scale["width"], head_dim=scale["head_dim"], min_size=scale["size"],
                                   max_size=scale["size"]).to(device)


def _batches(scale: dict, n: int) -> list[tuple[list[torch.Tensor], list[dict]]]:
    """`n` different CPU batches, as a data loader would hand them over."""
    return [synthetic_batch(scale["batch"], scale["size"], 21, torch.device("cpu"), seed=i) for i in range(n)]


def _to(batch, device):
    images, targets = batch
    return ([i.to(device, non_blocking=True) for i in images],
            [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets])


def plain_loop(scale: dict, device: torch.device, batches, *, amp: bool, warmup: int) -> dict:
    """torchvision's references/detection train_one_epoch, reduced to its training step (`plain_step`)."""
    model = _model(scale, device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD.lr, momentum=SGD.momentum, weight_decay=SGD.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    _peak_reset(device)
    start = None
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        plain_step(model, *_to(batch, device), optimizer, scaler, device, amp=amp)
    _sync(device)
    steps = len(batches) - warmup
    return {"train_images_per_s": steps * scale["batch"] / (time.perf_counter() - start), "peak_gib": _peak_gib(device),
            "model": model}


def colt_loop(scale: dict, device: torch.device, batches, cfg: TrainConfig, *, warmup: int) -> dict:
    """The project's training step (train_one_epoch) under a 50% mask, with `cfg`'s throughput settings."""
    speed = Speed.resolve(cfg, device, fixed_input_size=True, num_workers=0)
    speed.apply_backends()
    model = speed.prepare(_model(scale, device))
    gen = torch.Generator().manual_seed(1)
    mask = {n: (torch.rand(p.shape, generator=gen) > 0.5).to(device) for n, p in model.named_parameters()
            if p.dim() > 1 and "box_predictor" not in n and "rpn.head.cls_logits" not in n and "bbox_pred" not in n}
    optimizer = build_optimizer(model, SGD)
    keeper = MaskKeeper(model, mask, optimizer)
    scheduler = build_lr_scheduler(optimizer, ScheduleConfig(name="constant"), epochs=1, iters_per_epoch=len(batches))
    scaler = speed.precision.scaler(device)

    def run(part):  # the batches are copied to the device by the trainer's own to_device, non-blocking
        train_one_epoch(model, BenchTask(), part, optimizer, device=device, scheduler=scheduler, keeper=keeper,
                        precision=speed.precision, scaler=scaler)

    _peak_reset(device)
    run(batches[:warmup])
    _sync(device)
    start = time.perf_counter()
    run(batches[warmup:])
    _sync(device)
    steps = len(batches) - warmup
    out = {"train_images_per_s": steps * scale["batch"] / (time.perf_counter() - start),
           "peak_gib": _peak_gib(device), "settings": speed.describe(), "model": model, "speed": speed}
    torch.backends.cudnn.benchmark = False  # one row's switches must not leak into the next
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return out


def eval_images_per_s(model: torch.nn.Module, batches, device: torch.device, speed: Speed | None) -> float:
    loader = [(images, [{} for _ in images]) for images, _ in batches]
    predict(model, loader[:1], device, progress=False, **({"amp": speed.precision} if speed else {}))  # warm-up
    _sync(device)
    start = time.perf_counter()
    predict(model, loader[1:], device, progress=False, **({"amp": speed.precision} if speed else {}))
    _sync(device)
    return (len(loader) - 1) * len(loader[0][0]) / (time.perf_counter() - start)


def colt_round(ranks: int, overrides: list[str], out: Path) -> dict:
    """One COLT-2 round (tools/train_colt_det.py, max_rounds 1) as one process or `ranks` torchrun ranks."""
    launcher = [] if ranks == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [sys.executable, *launcher, str(TOOL), "--cfg", "voc_synth_tiny.yaml", "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    round_s = (out / "round_01" / "mask.pt").stat().st_mtime - (out / "round_00" / "mask.pt").stat().st_mtime
    return {"round_s": round_s, "command_s": time.perf_counter() - t0}


@click.command()
@click.option("--steps", default=None, type=int, help="timed training steps per row (default: 30 on a GPU, 3 on a CPU)")
@click.option("--warmup", default=None, type=int, help="untimed steps first (default 5 on a GPU, 1 on the CPU)")
@click.option("--round-images", default=300, show_default=True, help="synthetic images of the COLT-2 round")
@click.option("--skip-round", is_flag=True, help="leave out the COLT-2 round (sequential vs two ranks)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the figures here")
def main(steps: int | None, warmup: int | None, round_images: int, skip_round: bool, json_path: str | None) -> None:
    """Throughput of a plain loop, the project's trainer and each of its settings; one COLT-2 round 1 vs 2 ranks."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    scale = ({"width": 1.0, "head_dim": 4096, "size": 600, "batch": 4} if cuda else
             {"width": 0.125, "head_dim": 128, "size": 128, "batch": 2})
    steps, warmup = steps or (30 if cuda else 3), warmup if warmup is not None else (5 if cuda else 1)
    where = torch.cuda.get_device_name(device) if cuda else \
        f"CPU ({os.cpu_count()} cores): no GPU, so a tiny scale whose figures say nothing about a GPU"
    click.echo(f"device: {where}\nmodel: Faster R-CNN VGG16 width {scale['width']}, {scale['size']}x{scale['size']}, "
               f"batch {scale['batch']}; {steps} timed steps after {warmup}")
    batches = _batches(scale, warmup + steps)
    rows: dict[str, dict] = {}
    rows["plain fp32"] = plain_loop(scale, device, batches, amp=False, warmup=warmup)
    if cuda:
        rows["plain amp (fp16)"] = plain_loop(scale, device, batches, amp=True, warmup=warmup)
    off = TrainConfig(amp="off", channels_last=False, cudnn_benchmark=False, tf32=False)
    variants = {"colt defaults": TrainConfig(), "colt fp32, no settings": off,
                "colt amp bf16": replace(off, amp="bf16"), "colt channels_last": replace(off, channels_last=True),
                "colt cudnn_benchmark": replace(off, cudnn_benchmark=True), "colt tf32": replace(off, tf32=True)}
    if cuda:
        variants["colt amp fp16"] = replace(off, amp="fp16")
    for label, cfg in variants.items():
        rows[label] = colt_loop(scale, device, batches, cfg, warmup=warmup)
    evaluation = {"plain fp32": eval_images_per_s(rows["plain fp32"]["model"], batches, device, None),
                  "colt defaults": eval_images_per_s(rows["colt defaults"]["model"], batches, device,
                                                     rows["colt defaults"]["speed"])}
    peer = rows.get("plain amp (fp16)", rows["plain fp32"])["train_images_per_s"]
    click.echo(f"\n| training | images/s | vs plain {'amp' if cuda else 'fp32'} | peak GPU memory (GiB) | settings |")
    click.echo("|---|---:|---:|---:|---|")
    for label, row in rows.items():
        peak = "" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
        click.echo(f"| {label} | {row['train_images_per_s']:.2f} | {row['train_images_per_s'] / peer:.2f}x | {peak} | "
                   f"{row.get('settings', '')} |")
    click.echo("\n| evaluation | images/s |\n|---|---:|")
    for label, value in evaluation.items():
        click.echo(f"| {label} | {value:.2f} |")
    figures = {"device": where, "scale": scale, "steps": steps, "warmup": warmup,
               "train": {k: {kk: vv for kk, vv in v.items() if kk not in ("model", "speed")} for k, v in rows.items()},
               "eval_images_per_s": evaluation}
    if not skip_round:
        with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
            tmp_path = Path(tmp)
            size = scale["size"]
            overrides = [f"data.root={tmp_path / 'voc'}", f"data.synthetic.n_trainval={round_images}",
                         f"data.synthetic.image_size={size}", f"augment.size={size}", f"model.kwargs.min_size={size}",
                         f"model.kwargs.max_size={size}", f"model.width={scale['width']}",
                         f"model.head_dim={scale['head_dim']}",
                         "train.epochs=1", "train.progress=false", "prune.max_rounds=1", "prune.evaluate=none"]
            if not cuda:  # torchrun gives each rank one thread; the same sums in the same order need one here too
                overrides.append("train.cpu_threads=1")
            cfg = load_config(DetRunConfig, "voc_synth_tiny.yaml", overrides, configs_dir=ROOT / "configs")
            ensure_synthetic_voc(cfg.data.root, **asdict(cfg.data.synthetic))  # generated before any timing
            one = colt_round(1, overrides, tmp_path / "one")
            two = colt_round(2, overrides, tmp_path / "two")
            masks = [torch.load(tmp_path / d / "round_01" / "mask.pt", weights_only=True) for d in ("one", "two")]
            same = all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
            agree = (sum(int((masks[0][k] == masks[1][k]).sum()) for k in masks[0]) /
                     sum(masks[0][k].numel() for k in masks[0]))
        figures["colt2_round"] = {"one_process": one, "two_ranks_one_device": two,
                                  "speedup": one["round_s"] / two["round_s"], "same_mask": same,
                                  "mask_agreement": agree}
        click.echo(f"\none COLT-2 round ({round_images} images, 1 epoch): one process {one['round_s']:.1f} s, "
                   f"two ranks on one {'GPU' if cuda else 'CPU'} {two['round_s']:.1f} s "
                   f"({one['round_s'] / two['round_s']:.2f}x); same mask: {same} ({agree:.4%} of entries agree)")
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
