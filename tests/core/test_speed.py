"""Throughput settings (mixed precision, channels-last, cuDNN autotuning, TF32, loader workers) and ranks that
share devices: every setting keeps masks and optimizer state exact, and the CPU defaults change nothing."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from toy import toy_train_config

from colt_core.config import ConfigError, from_dict
from colt_core.distributed import DistContext, device_slot, one_rank_per_device, partition_ranks, training_ranks
from colt_core.prune.masks import MaskKeeper
from colt_core.rundir import RunDir
from colt_core.settings import TrainConfig
from colt_core.train.epoch import train_one_epoch
from colt_core.train.loaders import make_loader
from colt_core.train.optim import build_lr_scheduler, build_optimizer
from colt_core.train.speed import FULL, Speed, resolve_precision
from colt_core.train.task import TrainJob
from colt_core.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


class SmallConvNet(nn.Module):
    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv(x)))).flatten(1))


@dataclass
class ImageToyTask:
    """Three classes of 8x8 one-channel images around fixed patterns: a conv net learns them in an epoch."""

    class_names: tuple[str, ...] = ("a", "b", "c")
    output_layers: tuple[str, ...] = ("head",)
    collate = None
    fixed_input_size = True

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        patterns = torch.randn(3, 1, 8, 8, generator=gen)
        self.x = torch.cat([p + 0.5 * torch.randn(32, 1, 8, 8, generator=gen) for p in patterns])
        self.y = torch.arange(3).repeat_interleave(32)
        self.default_prune_groups = {"conv": {"types": ["Conv2d"]}}

    def build_model(self, num_outputs: int) -> nn.Module:
        return SmallConvNet(num_outputs)

    def architecture(self) -> dict:
        return {"name": "smallconv", "task": "toy"}

    def datasets(self, class_ids, job=None):
        perm = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(1))
        return TensorDataset(self.x[perm[16:]], self.y[perm[16:]]), TensorDataset(self.x[perm[:16]], self.y[perm[:16]])

    def loss(self, model, batch):
        x, y = batch
        return {"loss": F.cross_entropy(model(x).float(), y)}

    def evaluate(self, model, job):
        return {"metric": "none", "value": 0.0}


def conv_mask(model: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return {name: torch.rand(model.get_parameter(name).shape, generator=gen) > 0.5
            for name in ("conv.weight", "conv2.weight")}


# ----- the settings ---------------------------------------------------------------------------------------
def test_amp_modes_on_the_cpu():
    assert resolve_precision(CPU, "auto") is FULL and resolve_precision(CPU, "off") is FULL
    assert resolve_precision(CPU, False) is FULL and resolve_precision(CPU, True) is FULL  # YAML's off / on
    assert resolve_precision(CPU, "bf16").dtype == torch.bfloat16 and not resolve_precision(CPU, "bf16").needs_scaler
    with pytest.raises(ConfigError, match=r"train\.amp: fp16 autocast needs a GPU; on the CPU use bf16 or off"):
        resolve_precision(CPU, "fp16")
    with pytest.raises(ConfigError, match=r"train\.amp: must be one of 'auto' \| 'bf16' \| 'fp16' \| 'off' \| true "
                                          r"\| false, got 'fp8'"):
        from_dict(TrainConfig, {"amp": "fp8"}, "train")
    assert from_dict(TrainConfig, {"amp": False}).amp is False  # `amp: off` in YAML


def test_the_cpu_defaults_turn_nothing_on():
    speed = Speed.resolve(TrainConfig(), CPU, fixed_input_size=True, num_workers=2)
    assert speed == Speed(precision=FULL, channels_last=False, cudnn_benchmark=False, tf32=False,
                          persistent_workers=False, prefetch_factor=4)
    asked = Speed.resolve(TrainConfig(channels_last=True, persistent_workers=True, cudnn_benchmark=True, amp="bf16"),
                          CPU, fixed_input_size=True, num_workers=2)
    assert asked.channels_last and asked.persistent_workers and asked.precision.dtype == torch.bfloat16
    assert not asked.cudnn_benchmark  # a CUDA switch: nothing to turn on without one
    assert asked.describe() == "amp bf16, channels_last, persistent_workers"
    loader = make_loader(TensorDataset(torch.zeros(8, 1)), batch_size=4, collate=None, num_workers=2, device=CPU,
                         speed=asked)
    assert loader.persistent_workers and loader.prefetch_factor == 4


@pytest.mark.parametrize("has_bf16", [True, False], ids=["bf16-gpu", "fp16-only-gpu"])
def test_the_gpu_defaults_turn_on_what_a_torchvision_user_would(monkeypatch, has_bf16):
    """On CUDA (simulated: only the bf16 capability query is answered here) auto picks bf16 or fp16 with a
    scaler, channels-last, TF32, persistent workers, and cuDNN autotuning for fixed input sizes only."""
    monkeypatch.setattr("colt_core.train.speed.bf16_supported", lambda device: has_bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU without bf16")
    gpu = torch.device("cuda", 0)
    fixed = Speed.resolve(TrainConfig(), gpu, fixed_input_size=True, num_workers=4)
    assert fixed.precision.dtype == (torch.bfloat16 if has_bf16 else torch.float16)
    assert fixed.precision.needs_scaler is not has_bf16
    assert fixed.channels_last and fixed.cudnn_benchmark and fixed.tf32 and fixed.persistent_workers
    assert not Speed.resolve(TrainConfig(), gpu, fixed_input_size=False, num_workers=4).cudnn_benchmark
    assert not Speed.resolve(TrainConfig(), gpu, fixed_input_size=True, num_workers=0).persistent_workers
    off = Speed.resolve(TrainConfig(amp="off", channels_last=False, cudnn_benchmark=False, tf32=False,
                                    persistent_workers=False), gpu, fixed_input_size=True, num_workers=4)
    assert off == Speed(precision=FULL, prefetch_factor=4)
    assert resolve_precision(gpu, "fp16").needs_scaler
    if has_bf16:
        assert resolve_precision(gpu, "bf16").dtype == torch.bfloat16
    else:
        with pytest.raises(ConfigError, match=r"train\.amp: bf16 is not supported by a GPU without bf16; use fp16"):
            resolve_precision(gpu, "bf16")


SETTINGS = [{}, {"amp": "bf16"}, {"channels_last": True}, {"amp": "bf16", "channels_last": True},
            {"cudnn_benchmark": True, "tf32": True}]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults")
def test_every_setting_keeps_pruned_weights_and_their_optimizer_state_exactly_zero(settings):
    task = ImageToyTask()
    cfg = replace(toy_train_config(epochs=1), **settings)
    speed = Speed.resolve(cfg, CPU, fixed_input_size=True, num_workers=0)
    torch.manual_seed(0)
    model = speed.prepare(task.build_model(3))
    if speed.channels_last:
        assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    mask = conv_mask(model)
    optimizer = build_optimizer(model, cfg.optimizer)
    train, _ = task.datasets(None)
    loader = make_loader(train, batch_size=16, collate=None, num_workers=0, device=CPU, generator=torch.Generator())
    scheduler = build_lr_scheduler(optimizer, cfg.schedule, epochs=1, iters_per_epoch=len(loader))
    keeper = MaskKeeper(model, mask, optimizer)
    stats = train_one_epoch(model, task, loader, optimizer, device=CPU, scheduler=scheduler, keeper=keeper,
                            precision=speed.precision, scaler=speed.precision.scaler(CPU))
    assert stats["loss"] > 0
    for name, m in mask.items():
        param = model.get_parameter(name)
        assert torch.count_nonzero(param[~m]) == 0 and torch.count_nonzero(param[m]) == int(m.sum())
        state = optimizer.state[param]
        assert state, "the optimizer stepped"
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.count_nonzero(state[key][~m]) == 0, f"{name} {key}"


def test_a_bf16_channels_last_training_through_the_trainer_selects_masked_weights(tmp_path):
    task = ImageToyTask()
    trainer = Trainer(task, replace(toy_train_config(epochs=2), amp="bf16", channels_last=True), eval_batch_size=32)
    assert trainer.amp.dtype == torch.bfloat16 and trainer.speed.channels_last
    torch.manual_seed(0)
    model = task.build_model(3)
    mask = conv_mask(model)
    job = TrainJob(round=0, partition=None, class_ids=None, model=model, mask=mask, seed=1,
                   files=RunDir(tmp_path).round(0).eval, amp=trainer.amp)
    out = trainer.train(job)
    assert all(torch.count_nonzero(out.state_dict[k][~m]) == 0 for k, m in mask.items())
    assert len(out.record.history) == 2


# ----- ranks on shared devices ----------------------------------------------------------------------------
def test_ranks_take_a_nodes_devices_round_robin():
    # 2 nodes of 4 ranks, 2 GPUs each: local ranks 0 and 2 share GPU 0, 1 and 3 GPU 1.
    assert [device_slot(r, 4, 2) for r in range(8)] == [(0, 0), (0, 1), (0, 0), (0, 1),
                                                        (1, 0), (1, 1), (1, 0), (1, 1)]
    assert [device_slot(r, 4, None) for r in range(4)] == [(0, 0), (0, 1), (0, 2), (0, 3)]  # one each
    assert one_rank_per_device(range(8), 4, 2) == [0, 1, 4, 5]
    assert one_rank_per_device([2, 3, 6], 4, 2) == [2, 3, 6]
    assert one_rank_per_device(range(3), 3, 1) == [0]


def fake_context(world: int, devices: int | None, rank: int = 0) -> DistContext:
    return DistContext(rank=rank, world_size=world, local_rank=rank, device=CPU, ranks=tuple(range(world)),
                       local_world_size=world, devices=devices)


@pytest.mark.parametrize(("world", "devices", "partitions", "expected", "full"), [
    (2, 1, 2, [[0], [1]], [0]),  # COLT-2 on one GPU: the partitions side by side, full-data trainings on rank 0
    (4, 2, 2, [[0, 1], [2, 3]], [0, 1]),  # blocks of distinct GPUs train data-parallel
    (4, 1, 2, [[0], [2]], [0]),  # blocks on one GPU shrink to one rank each: no two NCCL ranks on a device
    (3, 2, 1, [[0, 1]], [0, 1]),  # LTH: one rank per GPU
    (4, 4, 2, [[0, 1], [2, 3]], [0, 1, 2, 3]),  # one rank per GPU: as before
])
def test_partitions_and_full_data_trainings_never_put_two_training_ranks_on_one_device(
        world, devices, partitions, expected, full):
    ctx = fake_context(world, devices)
    assert ctx.shares_devices == (world > devices)
    blocks = [training_ranks(ranks, ctx) for ranks in partition_ranks(partitions, world)]
    assert blocks == expected
    assert training_ranks(range(world), ctx) == full
    for ranks in [*blocks, full]:
        assert len({device_slot(r, world, devices) for r in ranks}) == len(ranks)
