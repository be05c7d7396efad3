"""The engine's epoch loop: resume after a crash, model selection, and refusing foreign checkpoints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colt_core.errors import TrainingDivergedError
from colt_core.io import CheckpointError
from colt_core.prune.masks import MaskKeeper
from colt_core.prune.weights import snapshot
from colt_core.settings import OptimizerConfig, ScheduleConfig
from colt_core.train.fit import FitResult, fit
from colt_core.train.optim import build_lr_scheduler, build_optimizer


class Crash(RuntimeError):
    pass


def regression_data(n: int, seed: int) -> TensorDataset:
    """y = x . w + noise with a fixed w, so a small network learns it within a few epochs."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    return TensorDataset(x, (x @ w + 0.1 * torch.randn(n, generator=gen)).unsqueeze(1))


@dataclass
class Run:
    """One `fit` of a small MLP: dropout, shuffled batches, a masked first layer, AdamW, warm-up + cosine."""

    checkpoint: object = None
    model_seed: int = 0
    epochs: int = 3
    seed: int = 7
    lr: float = 1e-2
    scheduler_interval: str = "step"
    crash_after_epoch: int | None = None
    scripted_val_losses: list[float] | None = None
    with_validation: bool = True
    ran: list[int] = field(default_factory=list)
    epoch_end_weights: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def __call__(self) -> tuple[FitResult, nn.Module]:
        torch.manual_seed(self.model_seed)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        train_data = DataLoader(regression_data(48, 0), batch_size=8, shuffle=True)
        val_x, val_y = regression_data(16, 1).tensors
        optimizer = build_optimizer(model, OptimizerConfig(name="adamw", lr=self.lr, weight_decay=0.01))
        schedule = ScheduleConfig(warmup_epochs=1, eta_min=1e-4,
                                  interval="iteration" if self.scheduler_interval == "step" else "epoch")
        iters = len(train_data) if self.scheduler_interval == "step" else 1
        scheduler = build_lr_scheduler(optimizer, schedule, epochs=self.epochs, iters_per_epoch=iters)
        mask = {"0.weight": torch.arange(64).reshape(16, 4) % 3 != 0}
        keeper = MaskKeeper(model, mask, optimizer)
        late = {"step": 0, "state": None}

        def train_epoch(epoch: int) -> dict[str, float]:
            total = 0.0
            for x, y in train_data:
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                keeper.before_step()
                optimizer.step()
                keeper.after_step()
                if self.scheduler_interval == "step":
                    scheduler.step()
                late["step"] += 1
                if late["step"] == 4:
                    late["state"] = snapshot(model)
                total += loss.item()
            return {"loss": total / len(train_data), "lr": optimizer.param_groups[0]["lr"]}

        def val_loss() -> float:
            if self.scripted_val_losses is not None:
                return self.scripted_val_losses[len(self.ran)]
            model.eval()
            with torch.no_grad():
                loss = nn.functional.mse_loss(model(val_x), val_y).item()
            model.train()
            return loss

        def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
            self.ran.append(epoch)
            self.epoch_end_weights.append(snapshot(model))
            if epoch == self.crash_after_epoch:
                raise Crash("killed")

        result = fit(model, epochs=self.epochs, train_epoch=train_epoch,
                     val_loss=val_loss if self.with_validation else None, optimizer=optimizer, seed=self.seed,
                     scheduler=scheduler, scheduler_interval=self.scheduler_interval, keeper=keeper,
                     checkpoint_path=self.checkpoint, on_epoch_end=on_epoch_end,
                     rewind_state=lambda: late["state"])
        return result, model


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.equal(b[name], value), name


@pytest.mark.parametrize("scheduler_interval", ["step", "epoch"])
def test_fit_resumed_after_a_crash_ends_bit_identical(tmp_path, scheduler_interval):
    straight, straight_model = Run(tmp_path / "straight.pt", scheduler_interval=scheduler_interval)()

    with pytest.raises(Crash):
        Run(tmp_path / "resumed.pt", scheduler_interval=scheduler_interval, crash_after_epoch=1)()
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["epoch"] == 1
    # A differently initialised model proves the weights come from the checkpoint.
    run = Run(tmp_path / "resumed.pt", scheduler_interval=scheduler_interval, model_seed=99)
    resumed, resumed_model = run()
    assert run.ran == [2]

    assert resumed.history == straight.history and [h["epoch"] for h in straight.history] == [0, 1, 2]
    assert straight.history[-1]["lr"] < straight.history[0]["lr"]
    assert (resumed.best_epoch, resumed.best_val_loss) == (straight.best_epoch, straight.best_val_loss)
    assert_same_weights(straight.best_state, resumed.best_state)
    assert_same_weights(straight.rewind_state, resumed.rewind_state)
    assert_same_weights(straight_model.state_dict(), resumed_model.state_dict())
    last = [torch.load(tmp_path / name, weights_only=True) for name in ("straight.pt", "resumed.pt")]
    assert_same_weights(last[0]["model"], last[1]["model"])
    assert last[0]["optimizer"]["state"].keys() == last[1]["optimizer"]["state"].keys()
    for key, state in last[0]["optimizer"]["state"].items():
        assert_same_weights(state, last[1]["optimizer"]["state"][key])
    # Pruned weights and their Adam moments stay zero across the resume.
    pruned = ~(torch.arange(64).reshape(16, 4) % 3 != 0)
    assert torch.count_nonzero(resumed.best_state["0.weight"][pruned]) == 0
    assert torch.count_nonzero(last[1]["optimizer"]["state"][0]["exp_avg"][pruned]) == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_fit_keeps_the_lowest_validation_loss_weights(tmp_path):
    run = Run(tmp_path / "fit.pt", epochs=4, scripted_val_losses=[0.9, 0.3, 0.5, 0.4])
    result, model = run()
    assert result.best_epoch == 1 and result.best_val_loss == 0.3
    assert [h["val_loss"] for h in result.history] == [0.9, 0.3, 0.5, 0.4]
    assert_same_weights(run.epoch_end_weights[1], result.best_state)
    assert not torch.equal(run.epoch_end_weights[3]["0.weight"], result.best_state["0.weight"])
    assert_same_weights(result.best_state, model.state_dict())  # the model ends holding the best weights
    assert all(v.device.type == "cpu" for v in result.best_state.values())

    # With a real validation loss the choice is its minimum, and training lowered it.
    real, _ = Run(epochs=3)()
    losses = [h["val_loss"] for h in real.history]
    assert real.best_val_loss == min(losses) == losses[real.best_epoch] and losses[-1] < losses[0]


def test_fit_without_validation_keeps_the_last_epoch():
    run = Run(epochs=2, with_validation=False)
    result, model = run()
    assert result.best_epoch == 1 and math.isnan(result.best_val_loss)
    assert [set(h) for h in result.history] == [{"loss", "lr", "epoch"}] * 2
    assert_same_weights(run.epoch_end_weights[-1], result.best_state)
    assert_same_weights(result.best_state, model.state_dict())


def test_finished_checkpoint_is_reused_and_other_settings_are_refused(tmp_path):
    path = tmp_path / "fit.pt"
    first, _ = Run(path)()
    again_run = Run(path, model_seed=5)
    again, again_model = again_run()
    assert again_run.ran == [] and again.history == first.history
    assert_same_weights(first.best_state, again_model.state_dict())

    for changed, what in [({"lr": 3e-2}, "initial_lr"), ({"epochs": 4}, "epochs"), ({"seed": 8}, "seed"),
                          ({"scheduler_interval": "epoch"}, "interval")]:
        with pytest.raises(CheckpointError,
                           match=rf"fit\.pt was written with other training settings.*{what}"):
            Run(path, **changed)()
    with pytest.raises(CheckpointError, match="delete it to start training over"):
        Run(path, lr=3e-2)()

    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt is not a training checkpoint"):
        Run(foreign)()


def test_bad_epochs_and_a_diverged_validation_loss_are_reported():
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        fit(nn.Linear(1, 1), epochs=0, train_epoch=lambda e: {}, val_loss=None,
            optimizer=torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), seed=0)
    with pytest.raises(TrainingDivergedError, match=r"lower train\.optimizer\.lr"):
        Run(epochs=2, scripted_val_losses=[0.5, math.nan])()


def _stepping(model: nn.Module, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.1))
    return build_lr_scheduler(optimizer, ScheduleConfig(name="cosine"), epochs=1, iters_per_epoch=steps)


def test_late_rewind_counts_steps_through_a_resume():
    from colt_core.config import ConfigError
    from colt_core.train.trainer import LateRewind

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    scheduler = _stepping(model, 10)
    late = LateRewind(model, scheduler, 5, total_steps=10, tag="p0")
    for _ in range(3):  # killed after 3 steps
        assert late.after_step() == scheduler.last_epoch + 1
        scheduler.optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict()
    assert late.state is None

    resumed_scheduler = _stepping(model, 10)
    resumed_scheduler.load_state_dict(saved)
    resumed = LateRewind(model, resumed_scheduler, 5, total_steps=10, tag="p0")
    taken = []
    for _ in range(7):
        with torch.no_grad():
            model.weight.add_(1.0)  # stands in for an optimizer step
        taken.append(resumed.after_step())
        if resumed.state is not None and len(taken) == 2:
            assert torch.equal(resumed.state["weight"], model.weight)
        resumed_scheduler.step()
    assert taken == [4, 5, 6, 7, 8, 9, 10]
    assert resumed.state is not None and not torch.equal(resumed.state["weight"], model.weight)

    with pytest.raises(ConfigError, match=r"prune\.rewind_iteration \(11\) exceeds the 10 optimizer steps of .*p0"):
        LateRewind(model, scheduler, 11, total_steps=10, tag="p0")
    never = LateRewind(model, _stepping(model, 10), 0, total_steps=10, tag="p0")
    never.after_step()
    assert never.state is None
