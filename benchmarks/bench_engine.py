"""Engine benchmarks: masked-training overhead and one round's mask computation on VGG16 Faster R-CNN.

    python benchmarks/bench_engine.py [--skip-detector] [--repeats 7]

(a) median time per training step of a small CNN: dense, under a COLT mask (MaskKeeper), and under
    torch.nn.utils.prune doing the same job; ratios against dense.
(b) time to compute one round's masks (conv group at 15%, fc group at 20%, exact counts) for a
    full-size VGG16 Faster R-CNN, beside torch.nn.utils.prune.global_unstructured on the same weights.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import click
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from colt_core.prune.magnitude import magnitude_prune, resolve_prune_groups
from colt_core.prune.masks import MaskKeeper, ones_mask


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(256, 256)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.features(x).flatten(1))))


SPECS = {"conv": {"types": ["Conv2d"]}, "fc": {"types": ["Linear"]}}


def _time_steps(model: nn.Module, step, batches: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    return (time.perf_counter() - t0) / batches


def bench_training_overhead(repeats: int, batches: int, batch_size: int) -> None:
    torch.manual_seed(0)
    base = SmallCNN()
    groups = resolve_prune_groups(base, SPECS, {"conv": 0.5, "fc": 0.5}, ["head"])
    mask = magnitude_prune(dict(base.named_parameters()), ones_mask(base, [n for g in groups for n in g.params]),
                           groups)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))

    def make(kind: str):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        keeper = None
        if kind == "colt":
            keeper = MaskKeeper(model, mask, opt)
        elif kind == "torch.prune":
            modules = dict(model.named_modules())
            for name, m in mask.items():
                torch_prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", m)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            if keeper is not None:
                keeper.before_step()
            opt.step()
            if keeper is not None:
                keeper.after_step()
        return model, step

    kinds = ("dense", "colt", "torch.prune")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    runners = {k: make(k) for k in kinds}
    for _ in range(repeats):  # interleaved so drift in machine load hits every variant alike
        for k in kinds:
            model, step = runners[k]
            times[k].append(_time_steps(model, step, batches))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"(a) training step, SmallCNN, batch {batch_size}, 32x32, SGD momentum; "
          f"median of {repeats} x {batches} steps")
    for k in kinds:
        print(f"    {k:12s} {1000 * med[k]:8.2f} ms/step   ratio vs dense {med[k] / med['dense']:.4f}")
    print(f"    COLT masked-training overhead over dense: {100 * (med['colt'] / med['dense'] - 1):+.2f}%")
    print(f"    torch.nn.utils.prune overhead over dense: {100 * (med['torch.prune'] / med['dense'] - 1):+.2f}%")


def bench_detector_masks(repeats: int) -> None:
    from colt_det.detectors import VGG16, prune_group_specs
    from colt_det.model import build_vgg16_faster_rcnn

    torch.manual_seed(0)
    model = build_vgg16_faster_rcnn(21, min_size=224, max_size=224)
    total = sum(p.numel() for p in model.parameters())
    groups = resolve_prune_groups(model, prune_group_specs(model, VGG16), {"conv": 0.15, "fc": 0.20},
                                  ["roi_heads.box_predictor"])
    names = [n for g in groups for n in g.params]
    weights = {n: p.detach() for n, p in model.named_parameters() if n in set(names)}
    mask = ones_mask(model, names)
    ours = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        new = magnitude_prune(weights, mask, groups)
        ours.append(time.perf_counter() - t0)
    pruned = {g.name: sum(int((~new[n]).sum()) for n in g.params) for g in groups}
    modules = dict(model.named_modules())
    t0 = time.perf_counter()
    for g in groups:
        params = [(modules[n.rsplit(".", 1)[0]], "weight") for n in g.params]
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured,
                                        amount=pruned[g.name])
    theirs = time.perf_counter() - t0
    theirs_mask = {n: modules[n.rsplit(".", 1)[0]].weight_mask.bool() for n in names}
    identical = all(torch.equal(new[n], theirs_mask[n]) for n in names)
    # Where they differ, it must be among weights tied at the threshold (torch breaks ties arbitrarily).
    tie_only = True
    for g in groups:
        threshold = max(float(weights[n].abs()[~new[n]].max()) for n in g.params if (~new[n]).any())
        for n in g.params:
            differ = new[n] != theirs_mask[n]
            tie_only &= bool((weights[n].abs()[differ] == threshold).all())
    same = "identical" if identical else ("identical up to ties at the threshold" if tie_only else "DIFFERENT")
    print(f"(b) one round's masks, VGG16 Faster R-CNN: {total / 1e6:.1f}M parameters, "
          f"{sum(weights[n].numel() for n in names) / 1e6:.1f}M prunable, {torch.get_num_threads()} threads")
    for g in groups:
        print(f"    group {g.name}: {len(g.params)} tensors, pruned {pruned[g.name]} at rate {g.rate}")
    print(f"    colt_core.magnitude_prune       median {statistics.median(ours):.3f} s (min {min(ours):.3f}, "
          f"{repeats} repeats)")
    print(f"    torch global_unstructured       {theirs:.3f} s (1 run)")
    print(f"    speed-up {theirs / statistics.median(ours):.1f}x; masks: {same}")


@click.command()
@click.option("--repeats", default=7, show_default=True)
@click.option("--batches", default=20, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--skip-detector", is_flag=True, help="only run (a)")
def main(repeats: int, batches: int, batch_size: int, skip_detector: bool) -> None:
    bench_training_overhead(repeats, batches, batch_size)
    if not skip_detector:
        bench_detector_masks(max(3, repeats // 2))


if __name__ == "__main__":
    main()
