"""The engine's one training recipe on the toy task: masks and optimizer state, the loss convention, loaders,
gradient clipping, CPU threads, TensorBoard, the files a training leaves, and partitions too small to train."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset
from toy import ToyNet, ToyTask, toy_train_config

from colt_core.prune.weights import snapshot
from colt_core.rundir import RunDir, TrainingDir
from colt_core.settings import OptimizerConfig
from colt_core.train.epoch import PartitionTooSmallError, total_loss
from colt_core.train.loaders import make_loader
from colt_core.train.task import TrainJob
from colt_core.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def job_for(model: torch.nn.Module, files: TrainingDir, mask: dict | None = None, **kwargs) -> TrainJob:
    return TrainJob(round=0, partition=1, class_ids=[0, 2, 5], model=model, mask=mask or {}, seed=4, files=files,
                    **kwargs)


def fc1_mask(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {"fc1.weight": torch.rand(model.fc1.weight.shape, generator=gen) > 0.4}


def test_a_training_keeps_pruned_weights_and_their_optimizer_state_zero_and_leaves_its_files(tmp_path):
    task = ToyTask()
    run = RunDir(tmp_path)
    trainer = Trainer(task, toy_train_config(epochs=3), eval_batch_size=64, tensorboard=run.tensorboard_for)
    torch.manual_seed(0)
    model = ToyNet(3)
    mask = fc1_mask(model)
    files = run.round(0).partition(1)
    out = trainer.train(job_for(model, files, mask, rewind_iteration=2))
    pruned = ~mask["fc1.weight"]
    assert torch.count_nonzero(out.state_dict["fc1.weight"][pruned]) == 0
    assert torch.count_nonzero(out.rewind_state["fc1.weight"][pruned]) == 0
    assert not torch.equal(out.rewind_state["fc1.weight"], out.state_dict["fc1.weight"])
    record = out.record
    assert [h["epoch"] for h in record.history] == [0, 1, 2]
    assert record.best_val_loss == min(h["val_loss"] for h in record.history) == \
        record.history[record.best_epoch]["val_loss"]
    assert record.data == {"train": {"images": 96}, "val": {"images": 24}}  # 3 classes x 40 samples, 80/20
    assert files.data.is_file() and not files.checkpoint.exists()
    assert list(run.tensorboard_for("round_00/p1").glob("events.out.tfevents.*"))
    # The model ends holding the selected weights.
    assert all(torch.equal(v, out.state_dict[k]) for k, v in snapshot(model).items())


def test_the_loss_is_the_tasks_total_or_the_sum_of_its_terms():
    terms = {"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(0.25)}
    loss, logged = total_loss(terms)
    assert float(loss) == 1.75 and logged == {"loss": 1.75, "loss_a": 1.5, "loss_b": 0.25}
    loss, logged = total_loss({"loss": torch.tensor(2.0), "accuracy": torch.tensor(0.5)})
    assert float(loss) == 2.0 and logged == {"loss": 2.0, "accuracy": 0.5}  # accuracy is logged, not added


def test_training_loaders_drop_a_last_batch_of_one_sample_only():
    data = TensorDataset(torch.zeros(33, 2))
    shuffled = make_loader(data, batch_size=8, collate=None, num_workers=0, device=torch.device("cpu"),
                           generator=torch.Generator(), drop_single=True)
    assert [len(b[0]) for b in shuffled] == [8, 8, 8, 8]
    data = TensorDataset(torch.zeros(34, 2))
    assert [len(b[0]) for b in make_loader(data, batch_size=8, collate=None, num_workers=0,
                                           device=torch.device("cpu"), generator=torch.Generator(),
                                           drop_single=True)] == [8, 8, 8, 8, 2]


def test_a_task_reads_its_test_set_through_the_engines_evaluation_loader(tmp_path):
    trainer = Trainer(ToyTask(), toy_train_config(epochs=1), eval_batch_size=10)
    job = job_for(ToyNet(3), TrainingDir(tmp_path))
    test = TensorDataset(torch.arange(25.0), torch.arange(25))
    with pytest.raises(RuntimeError, match=r"round_00/p1: the job has no make_loader; build it with make_loader="):
        job.loader(test)
    trainer.train(job)  # sets the factory of a job built without one
    batches = list(job.loader(test))
    assert [len(b[0]) for b in batches] == [10, 10, 5]  # the eval batch size, in order, nothing dropped
    assert torch.equal(torch.cat([b[0] for b in batches]), test.tensors[0])
    assert [len(b[0]) for b in job.loader(test, batch_size=25)] == [25]


def test_gradient_clipping_and_cpu_threads_come_from_the_shared_train_section(tmp_path):
    task = ToyTask()
    sgd = replace(toy_train_config(epochs=1), optimizer=OptimizerConfig(name="sgd", lr=0.5, momentum=0.0))
    moved = {}
    for clip in (None, 1e-6):
        torch.manual_seed(0)
        model = ToyNet(3)
        start = snapshot(model)
        Trainer(task, replace(sgd, grad_clip=clip), eval_batch_size=64).train(
            job_for(model, TrainingDir(tmp_path / str(clip))))
        moved[clip] = max(float((model.state_dict()[k] - start[k]).abs().max()) for k in ("fc1.weight", "head.weight"))
    assert moved[None] > 1e-2 and moved[1e-6] < 1e-4  # six steps of at most lr x 1e-6 each
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Trainer(task, replace(sgd, cpu_threads=1), eval_batch_size=64)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


class EmptyValidation(ToyTask):
    def datasets(self, class_ids, job=None):
        train, _ = super().datasets(class_ids, job)
        return train, TensorDataset(torch.zeros(0, 16), torch.zeros(0, dtype=torch.long))


def test_a_partition_with_nothing_to_validate_on_names_itself_and_the_fix(tmp_path: Path):
    trainer = Trainer(EmptyValidation(), toy_train_config(), eval_batch_size=64)
    with pytest.raises(PartitionTooSmallError) as caught:
        trainer.train(job_for(ToyNet(3), TrainingDir(tmp_path)))
    message = str(caught.value)
    for fragment in ("round_00/p1", "classes [0, 2, 5]: c0, c2, c5", "96 training and 0 validation samples",
                     "data.val_fraction", "prune.partitions"):
        assert fragment in message, message
    assert not list(tmp_path.iterdir())  # refused before anything was written
