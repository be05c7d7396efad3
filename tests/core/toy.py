"""A tiny classification task over Gaussian blobs, to exercise the engine without a real front end."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from colt_core.prune.partition import non_iid_keep
from colt_core.run.rounds import RoundLoop, RunResult
from colt_core.rundir import RunDir
from colt_core.settings import OptimizerConfig, PruneConfig, ScheduleConfig, SplitConfig, TrainConfig
from colt_core.train.task import TrainJob
from colt_core.train.trainer import Trainer

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
class ToyTask:
    """The whole Task protocol in a page: blobs split 80/20 into training and validation samples."""

    sleep: float = 0.0  # seconds per validation, to give a kill-and-resume test time to kill
    class_names: tuple[str, ...] = tuple(f"c{i}" for i in range(NUM_CLASSES))
    output_layers: tuple[str, ...] = ("head",)
    collate = None
    fixed_input_size = False

    def __post_init__(self) -> None:
        self.x, self.y = make_data()
        self.default_prune_groups = {"conv": {"types": ["Conv1d"]}, "fc": {"types": ["Linear"]}}

    def build_model(self, num_outputs: int) -> nn.Module:
        return ToyNet(num_outputs)

    def architecture(self) -> dict:
        return {"name": "toynet", "task": "toy", "dim": DIM}

    def example_inputs(self, model: nn.Module) -> torch.Tensor:
        return self.x[:2]

    def datasets(self, class_ids: list[int] | None, job: TrainJob | None = None
                 ) -> tuple[TensorDataset, TensorDataset]:
        idx = torch.arange(len(self.y))
        if job is not None and job.non_iid_max_drop:
            idx = torch.as_tensor(non_iid_keep(self.y.numpy(), job.data_seed, job.non_iid_max_drop))
        x, y = self.x[idx], self.y[idx]
        if class_ids is not None:
            keep = torch.isin(y, torch.tensor(class_ids))
            remap = {c: i for i, c in enumerate(class_ids)}
            x, y = x[keep], torch.tensor([remap[int(v)] for v in y[keep]])
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        n_val = len(y) // 5
        return TensorDataset(x[perm[n_val:]], y[perm[n_val:]]), TensorDataset(x[perm[:n_val]], y[perm[:n_val]])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not model.training:
            time.sleep(self.sleep)
        x, y = batch
        return {"loss": F.cross_entropy(model(x), y)}

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict:
        model.eval()
        with torch.no_grad():
            acc = float((model(self.x).argmax(1) == self.y).float().mean())
        return {"metric": "accuracy", "value": acc}


def toy_train_config(epochs: int = 3) -> TrainConfig:
    """Adam 1e-2 at a constant rate, batches of 16: the toy blobs are learnt in a few epochs."""
    return TrainConfig(epochs=epochs, batch_size=16, optimizer=OptimizerConfig(name="adam", lr=1e-2),
                       schedule=ScheduleConfig(name="constant"), progress=False)


def toy_trainer(task: ToyTask, run: RunDir | None = None, epochs: int = 3) -> Trainer:
    return Trainer(task, toy_train_config(epochs), eval_batch_size=64,
                   tensorboard=run.tensorboard_for if run is not None else None)


def run_toy(run: RunDir, prune: PruneConfig, split: SplitConfig | None = None, *, seed: int = 3,
            task: ToyTask | None = None, epochs: int = 3, dist=None) -> RunResult:
    """COLT/LTH rounds of the toy task into `run` (a prepared run directory)."""
    task = task or ToyTask()
    split = split or SplitConfig()
    from colt_core.config import to_dict

    config = {"seed": seed, "prune": to_dict(prune), "split": to_dict(split)}
    return RoundLoop(task, toy_trainer(task, run, epochs), prune, split, seed=seed, run_dir=run, config_dict=config,
                     dist=dist).run()
