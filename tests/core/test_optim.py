"""Optimizer and schedule configs: checked at load, applied by build_optimizer and build_lr_scheduler."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from colt_core.config import ConfigError, from_dict
from colt_core.settings import OptimizerConfig, ScheduleConfig
from colt_core.train.optim import build_lr_scheduler, build_optimizer, lr_factor


@pytest.mark.parametrize(
    ("cls", "data", "key"),
    [(OptimizerConfig, {"name": "rmsprop"}, "optimizer.name"),
     (OptimizerConfig, {"lr": 0.0}, "optimizer.lr"),
     (OptimizerConfig, {"weight_decay": -1e-4}, "optimizer.weight_decay"),
     (OptimizerConfig, {"momentum": 1.0}, "optimizer.momentum"),
     (OptimizerConfig, {"betas": [0.9, 1.5]}, "optimizer.betas"),
     (OptimizerConfig, {"betas": [0.9]}, "optimizer.betas"),
     (OptimizerConfig, {"name": "sgd", "momentum": 0.0, "nesterov": True}, "optimizer.nesterov"),
     (OptimizerConfig, {"learning_rate": 0.1}, "optimizer.learning_rate"),
     (ScheduleConfig, {"name": "poly"}, "schedule.name"),
     (ScheduleConfig, {"interval": "batch"}, "schedule.interval"),
     (ScheduleConfig, {"milestones": [30, 20]}, "schedule.milestones"),
     (ScheduleConfig, {"milestones": [0, 20]}, "schedule.milestones"),
     (ScheduleConfig, {"gamma": 0.0}, "schedule.gamma"),
     (ScheduleConfig, {"warmup_epochs": -1}, "schedule.warmup_epochs"),
     (ScheduleConfig, {"warmup_epochs": 1.5}, "schedule.warmup_epochs")],
)
def test_config_errors_name_the_key_at_load(cls, data, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ": "):
        from_dict(cls, data, key.split(".")[0])


def test_valid_configs_load_with_their_values():
    opt = from_dict(OptimizerConfig, {"name": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True})
    assert (opt.name, opt.lr, opt.momentum, opt.nesterov, opt.betas) == ("sgd", 0.1, 0.8, True, [0.9, 0.999])
    sched = from_dict(ScheduleConfig, {"name": "multistep", "milestones": [2, 3], "gamma": 0.2})
    assert (sched.name, sched.milestones, sched.gamma) == ("multistep", [2, 3], 0.2)
    assert sched.interval == "iteration"


def _lrs(cfg: ScheduleConfig, *, lr: float = 1e-4, epochs: int = 4, iters: int = 5) -> list[float]:
    """The learning rate of every optimizer step of a run of `epochs` x `iters` steps."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_lr_scheduler(optimizer, cfg, epochs=epochs, iters_per_epoch=iters)
    lrs = []
    for _ in range(epochs * iters):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_anneals_to_eta_min():
    lrs = _lrs(ScheduleConfig(name="cosine", eta_min=1.02e-6))
    assert lrs[0] == pytest.approx(1e-4)
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert 1.02e-6 < lrs[-1] < 2e-6
    end = lr_factor(20, ScheduleConfig(eta_min=1.02e-6), base_lr=1e-4, epochs=4, iters_per_epoch=5)
    assert end * 1e-4 == pytest.approx(1.02e-6)
    per_epoch = _lrs(ScheduleConfig(name="cosine", interval="epoch"))
    assert [len(set(per_epoch[e * 5:(e + 1) * 5])) for e in range(4)] == [1, 1, 1, 1]
    assert per_epoch[0] == pytest.approx(1e-4) and per_epoch[5] < per_epoch[0]


def test_warmup_then_multistep():
    lrs = _lrs(ScheduleConfig(name="multistep", milestones=[2, 3], gamma=0.2, warmup_epochs=1), lr=0.1)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[5:10] == pytest.approx([0.1] * 5)
    assert lrs[10:15] == pytest.approx([0.02] * 5)
    assert lrs[15:] == pytest.approx([0.004] * 5)
    assert _lrs(ScheduleConfig(name="constant"), lr=0.1) == pytest.approx([0.1] * 20)


def test_schedules_that_cannot_run_are_refused_with_the_setting():
    with pytest.raises(ValueError, match="eta_min"):
        _lrs(ScheduleConfig(eta_min=1.0), lr=0.1)
    with pytest.raises(ValueError, match="warmup_epochs"):
        _lrs(ScheduleConfig(warmup_epochs=4))
    with pytest.raises(ValueError, match="non-empty data loader"):
        _lrs(ScheduleConfig(), iters=0)


def test_build_optimizer_applies_the_config():
    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad_(False)
    sgd = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.1, momentum=0.8, nesterov=True,
                                                 weight_decay=5e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert {k: sgd.param_groups[0][k] for k in ("lr", "momentum", "nesterov", "weight_decay")} == {
        "lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 5e-4}
    assert sgd.param_groups[0]["params"] == [model.weight]  # frozen parameters are left out
    adam = build_optimizer(model, OptimizerConfig(betas=[0.8, 0.99]))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.8, 0.99)
    adamw = build_optimizer(model, OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (1e-3, 0.05)
