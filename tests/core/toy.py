"""A tiny classifier front end over Gaussian blobs, to exercise the engine without a real one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from colt_core.distributed import distributed_sampler, wrap_ddp
from colt_core.masks import MaskKeeper
from colt_core.partition import non_iid_keep
from colt_core.rounds import TrainJob, TrainOutput
from colt_core.training import fit

NUM_CLASSES = 6
DIM = 16


def make_data(seed: int = 0, n_per_class: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(NUM_CLASSES, DIM, generator=gen) * 3
    x = torch.cat([centers[c] + torch.randn(n_per_class, DIM, generator=gen) for c in range(NUM_CLASSES)])
    y = torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)
    return x, y


class ToyNet(nn.Module):
    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * DIM, 32)
        self.bn = nn.BatchNorm1d(32)
        self.head = nn.Linear(32, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.unsqueeze(1))).flatten(1)
        return self.head(torch.relu(self.bn(self.fc1(h))))


@dataclass
class ToyTrainer:
    epochs: int = 3
    sleep: float = 0.0
    class_names: tuple[str, ...] = tuple(f"c{i}" for i in range(NUM_CLASSES))
    output_layers: tuple[str, ...] = ("head",)

    def __post_init__(self) -> None:
        self.x, self.y = make_data()
        self.default_prune_groups = {"conv": {"types": ["Conv1d"]}, "fc": {"types": ["Linear"]}}

    def build_model(self, num_outputs: int) -> nn.Module:
        return ToyNet(num_outputs)

    def architecture(self) -> dict:
        return {"name": "toynet", "dim": DIM}

    def _subset(self, job: TrainJob) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(len(self.y))
        if job.non_iid_max_drop:
            idx = torch.as_tensor(non_iid_keep(self.y.numpy(), job.data_seed, job.non_iid_max_drop))
        x, y = self.x[idx], self.y[idx]
        if job.class_ids is None:
            return x, y
        keep = torch.isin(y, torch.tensor(job.class_ids))
        remap = {c: i for i, c in enumerate(job.class_ids)}
        return x[keep], torch.tensor([remap[int(v)] for v in y[keep]])

    def train(self, job: TrainJob) -> TrainOutput:
        x, y = self._subset(job)
        n_val = len(y) // 5
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(job.data_seed))
        val, tr = perm[:n_val], perm[n_val:]
        model = job.model
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        keeper = MaskKeeper(model, job.mask, opt)
        loss_fn = nn.CrossEntropyLoss()
        # Several ranks training this job: each takes its share of every epoch, gradients are averaged.
        net = wrap_ddp(model, job.dist)
        sampler = distributed_sampler(range(len(tr)), job.dist, shuffle=True, seed=job.seed)

        def train_epoch(epoch: int) -> dict:
            if sampler is None:
                order = tr[torch.randperm(len(tr))]
            else:
                sampler.set_epoch(epoch)
                order = tr[list(sampler)]
            total = 0.0
            for b in order.split(16):
                opt.zero_grad()
                loss = loss_fn(net(x[b]), y[b])
                loss.backward()
                keeper.before_step()
                opt.step()
                keeper.after_step()
                total += loss.item()
            time.sleep(self.sleep)
            return {"loss": total}

        def val_loss() -> float:
            model.eval()
            with torch.no_grad():
                out = float(loss_fn(model(x[val]), y[val]))
            model.train()
            return out

        result = fit(model, epochs=self.epochs, train_epoch=train_epoch, val_loss=val_loss, optimizer=opt,
                     seed=job.seed, keeper=keeper, checkpoint_path=Path(job.workdir) / "train_state.pt",
                     dist=job.dist)
        if job.dist is None or job.dist.is_group_main:
            (Path(job.workdir) / "train_state.pt").unlink(missing_ok=True)
        return TrainOutput(result.best_state, {"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch})

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict:
        model.eval()
        with torch.no_grad():
            acc = float((model(self.x).argmax(1) == self.y).float().mean())
        return {"metric": "accuracy", "value": acc}
