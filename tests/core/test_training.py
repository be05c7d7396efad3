"""The engine's epoch loop on the toy task: resume after a crash, model selection by validation loss, refusing
foreign checkpoints, and late rewinding across a resume."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch
from torch import nn
from toy import ToyNet, ToyTask, toy_train_config

from colt_core.errors import TrainingDivergedError
from colt_core.io import CheckpointError
from colt_core.prune.weights import snapshot
from colt_core.rundir import TrainingDir
from colt_core.settings import OptimizerConfig, ScheduleConfig, TrainConfig
from colt_core.train.optim import build_lr_scheduler, build_optimizer
from colt_core.train.task import TrainJob, TrainOutput
from colt_core.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS_PER_EPOCH = 6  # 96 training samples of 3 toy classes in batches of 16
# SGD with momentum under warm-up and cosine decay: a resume that lost the schedule or the momentum shows.
SGD = replace(toy_train_config(epochs=3), optimizer=OptimizerConfig(name="sgd", lr=0.1, momentum=0.9),
              schedule=ScheduleConfig(name="cosine", warmup_epochs=1), grad_clip=1.0)


class Crash(RuntimeError):
    pass


class ScriptedToyTask(ToyTask):
    """The toy task, whose training crashes at one step (a kill), whose validation losses may be scripted, and
    which keeps the weights each validation saw (the weights at each epoch's end)."""

    def __init__(self, *, crash_at_step: int | None = None, val_losses: list[float] | None = None) -> None:
        super().__init__()
        self.crash_at_step, self.val_losses = crash_at_step, val_losses
        self.steps = 0
        self.validated: list[dict[str, torch.Tensor]] = []

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        if model.training:
            self.steps += 1
            if self.steps == self.crash_at_step:
                raise Crash(f"killed at step {self.steps}")
            return super().loss(model, batch)
        self.validated.append(snapshot(model))  # one batch: the 24 validation samples
        if self.val_losses is not None:
            return {"loss": torch.tensor(self.val_losses[len(self.validated) - 1], dtype=torch.float64)}
        return super().loss(model, batch)


def fc1_mask() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {"fc1.weight": torch.rand(32, 64, generator=gen) > 0.4}


def train(task: ToyTask, files: TrainingDir, cfg: TrainConfig = SGD, *, model_seed: int = 0, seed: int = 4,
          rewind_iteration: int = 8) -> tuple[TrainOutput, nn.Module]:
    torch.manual_seed(model_seed)
    model = ToyNet(3)
    job = TrainJob(round=0, partition=1, class_ids=[0, 2, 5], model=model, mask=fc1_mask(), seed=seed, files=files,
                   rewind_iteration=rewind_iteration)
    return Trainer(task, cfg, eval_batch_size=64).train(job), model


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.equal(b[name], value), name


def test_a_training_killed_twice_resumes_to_the_same_weights_history_and_rewind_point(tmp_path):
    straight, straight_model = train(ScriptedToyTask(), TrainingDir(tmp_path / "straight"))

    files = TrainingDir(tmp_path / "killed")
    pruned = ~fc1_mask()["fc1.weight"]
    # Killed in epoch 1 (after the rewind snapshot of step 8, before its checkpoint), resumed and killed in epoch 2.
    # A differently initialised model (seed 99) proves a resumed training's weights come from the checkpoint.
    for crash_at_step, checkpointed_epoch, model_seed in ((10, 0, 0), (11, 1, 99)):
        with pytest.raises(Crash):
            train(ScriptedToyTask(crash_at_step=crash_at_step), files, model_seed=model_seed)
        ckpt = torch.load(files.checkpoint, weights_only=True)
        assert ckpt["format"] == "colt_core.fit/1"
        assert ckpt["epoch"] == checkpointed_epoch and len(ckpt["history"]) == checkpointed_epoch + 1
        assert (ckpt["rewind_state"] is not None) == (checkpointed_epoch == 1)
        # Pruned weights and their momentum stay zero, also in the checkpoint a resumed training wrote.
        assert torch.count_nonzero(ckpt["model"]["fc1.weight"][pruned]) == 0
        [momentum] = [s["momentum_buffer"] for s in ckpt["optimizer"]["state"].values()
                      if s["momentum_buffer"].shape == pruned.shape]
        assert torch.count_nonzero(momentum[pruned]) == 0
    task = ScriptedToyTask()
    resumed, resumed_model = train(task, files, model_seed=99)
    assert task.steps == STEPS_PER_EPOCH  # only the last epoch ran

    assert resumed.record.history == straight.record.history
    assert [h["epoch"] for h in straight.record.history] == [0, 1, 2]
    assert (resumed.record.best_epoch, resumed.record.best_val_loss) == \
        (straight.record.best_epoch, straight.record.best_val_loss)
    assert_same_weights(straight.state_dict, resumed.state_dict)
    assert_same_weights(straight.rewind_state, resumed.rewind_state)
    assert_same_weights(straight_model.state_dict(), resumed_model.state_dict())
    assert torch.count_nonzero(resumed.state_dict["fc1.weight"][pruned]) == 0
    assert not files.checkpoint.exists() and not list(tmp_path.rglob("*.tmp"))


class SlowToyTask(ScriptedToyTask):
    """The scripted toy task whose every validation takes at least `pause` seconds."""

    def __init__(self, *, pause: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pause = pause

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not model.training:
            time.sleep(self.pause)
        return super().loss(model, batch)


def test_a_resumed_training_counts_the_time_spent_before_the_kill(tmp_path):
    straight, _ = train(ScriptedToyTask(), TrainingDir(tmp_path / "straight"))
    assert straight.earlier_s == 0.0
    files = TrainingDir(tmp_path / "killed")
    # Two epochs of at least 0.3 s each checkpointed, then a kill in the third.
    with pytest.raises(Crash):
        train(SlowToyTask(pause=0.3, crash_at_step=2 * STEPS_PER_EPOCH + 1), files)
    ckpt = torch.load(files.checkpoint, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["elapsed_s"] >= 0.6
    resumed, _ = train(ScriptedToyTask(), files)
    assert resumed.earlier_s == ckpt["elapsed_s"]  # what the run records add to the resumed process's own time
    assert_same_weights(straight.state_dict, resumed.state_dict)


def test_a_checkpoint_without_an_elapsed_time_resumes_from_zero(tmp_path):
    files = TrainingDir(tmp_path / "old")
    with pytest.raises(Crash):
        train(ScriptedToyTask(crash_at_step=STEPS_PER_EPOCH + 1), files)
    ckpt = torch.load(files.checkpoint, weights_only=True)
    del ckpt["elapsed_s"]  # as written before checkpoints kept it
    torch.save(ckpt, files.checkpoint)
    resumed, _ = train(ScriptedToyTask(), files)
    assert resumed.earlier_s == 0.0 and [h["epoch"] for h in resumed.record.history] == [0, 1, 2]


def test_the_weights_of_the_lowest_validation_loss_are_kept(tmp_path):
    task = ScriptedToyTask(val_losses=[0.875, 0.25, 0.5, 0.375])
    out, model = train(task, TrainingDir(tmp_path), replace(SGD, epochs=4))
    assert out.record.best_epoch == 1 and out.record.best_val_loss == 0.25
    assert [h["val_loss"] for h in out.record.history] == [0.875, 0.25, 0.5, 0.375]
    assert_same_weights(task.validated[1], out.state_dict)
    assert not torch.equal(task.validated[3]["fc1.weight"], out.state_dict["fc1.weight"])
    assert_same_weights(out.state_dict, model.state_dict())  # the model ends holding the best weights
    assert all(v.device.type == "cpu" for v in out.state_dict.values())


def test_a_checkpoint_of_other_settings_or_another_file_is_refused(tmp_path):
    files = TrainingDir(tmp_path)
    with pytest.raises(Crash):
        train(ScriptedToyTask(crash_at_step=10), files)
    for changed, what in [({"cfg": replace(SGD, optimizer=replace(SGD.optimizer, lr=0.2))}, "initial_lr"),
                          ({"cfg": replace(SGD, epochs=4)}, "epochs"), ({"seed": 5}, "seed"),
                          ({"cfg": replace(SGD, batch_size=8)}, "batch_size"),
                          ({"rewind_iteration": 3}, "rewind_iteration")]:
        with pytest.raises(CheckpointError, match=rf"train_state\.pt was written with other training settings.*{what}"):
            train(ScriptedToyTask(), files, **changed)
    with pytest.raises(CheckpointError, match="delete it to start training over"):
        train(ScriptedToyTask(), files, seed=5)
    train(ScriptedToyTask(), files)  # the original settings resume

    torch.save({"model": {}}, files.checkpoint)
    with pytest.raises(CheckpointError, match=r"train_state\.pt is not a training checkpoint"):
        train(ScriptedToyTask(), files)


def test_a_diverged_validation_loss_is_reported(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"validation loss is nan after epoch 1.*lower train\.optimizer"):
        train(ScriptedToyTask(val_losses=[0.5, math.nan]), TrainingDir(tmp_path), replace(SGD, epochs=2))


def _stepping(model: nn.Module, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.1))
    return build_lr_scheduler(optimizer, ScheduleConfig(name="cosine"), epochs=1, iters_per_epoch=steps)


def test_late_rewind_counts_steps_through_a_resume():
    from colt_core.config import ConfigError
    from colt_core.train.late_rewind import LateRewind

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
