"""What a front end gives the engine: a `Task`, and the `TrainJob` the engine hands back to it.

A task says only what differs between tasks: how to build a model for a label set, which data a partition
trains and validates on, how a batch becomes a loss, and how a full-data model is scored on the test set.
The engine (`colt_core.train.trainer`) does the training itself: loaders, optimizer and schedule, masks kept
at zero, late rewinding, DDP, mixed precision, TensorBoard, model selection, resumable checkpoints. It also
makes the task's test loaders: `evaluate` gets them from `job.loader(dataset)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from colt_core.config import ConfigError
from colt_core.distributed import DistContext
from colt_core.prune.channels import ChannelPlan, build_channel_plan
from colt_core.prune.magnitude import PruneGroup
from colt_core.prune.masks import Mask
from colt_core.rundir import TrainingDir, TrainingRecord
from colt_core.train.early_bird import EarlyBird
from colt_core.train.speed import FULL, Precision


class LoaderFactory(Protocol):
    """Makes the engine's evaluation loaders (`Trainer.loader`): in order, nothing dropped, the eval batch size
    unless `batch_size` says otherwise, the task's collate, the data workers, pinned memory on CUDA."""

    def __call__(self, dataset: Dataset, *, batch_size: int | None = None) -> DataLoader: ...


@dataclass
class TrainJob:
    """One training the engine runs: which classes, under which mask, from which weights, where."""

    round: int
    partition: int | None  # None: a full-data training (ticket evaluation, LTH round, transfer)
    class_ids: list[int] | None  # None: every class, labels as in the dataset
    model: nn.Module  # built, rewound to θ0 (or late-rewind weights) and masked
    mask: Mask
    seed: int
    files: TrainingDir  # where this training's working files, weights and metrics go
    rewind_iteration: int = 0  # >0: also keep the weights after this many optimizer steps
    non_iid_max_drop: float = 0.0  # >0: drop a seeded random share of each class's samples
    data_seed: int = 0
    dist: DistContext | None = None  # the ranks that train this job together; None: this process alone
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: Precision = FULL  # mixed precision on `device` (its `autocast(device)` for the task's evaluation)
    label: str | None = None  # what a full-data training is when it is not the ticket's (e.g. a control)
    make_loader: LoaderFactory | None = None  # the engine's evaluation loaders (Trainer.loader); set by Trainer.train
    early_bird: EarlyBird | None = None  # a search training that stops once its would-be mask settles
    full_data_steps: bool = False  # train as many optimizer steps as train.epochs over the full data would take

    @property
    def tag(self) -> str:
        part = self.label or ("full" if self.partition is None else f"p{self.partition}")
        return f"round_{self.round:02d}/{part}"

    def loader(self, dataset: Dataset, *, batch_size: int | None = None) -> DataLoader:
        """The engine's evaluation loader of `dataset` (a task's test set), as `LoaderFactory` describes it."""
        if self.make_loader is None:
            raise RuntimeError(f"{self.tag}: the job has no make_loader; build it with make_loader=trainer.loader "
                               "(Trainer.train sets it on the jobs it trains)")
        return self.make_loader(dataset, batch_size=batch_size)


@dataclass
class TrainOutput:
    """The selected (lowest validation loss) weights and how the training went."""

    state_dict: dict[str, torch.Tensor]
    record: TrainingRecord
    rewind_state: dict[str, torch.Tensor] | None = None
    # Seconds spent on this training by processes before the one that finished it, up to their last checkpoint:
    # a resumed training's wall time is this plus its own, as if it had run straight through.
    earlier_s: float = 0.0


Batch = Any  # whatever the task's collate function makes of a list of samples: (inputs, targets)


class Task(Protocol):
    """A front end: its data, its models, its loss and its evaluation. Nothing of training."""

    class_names: Sequence[str]
    output_layers: Sequence[str]  # never pruned; rebuilt per label set
    default_prune_groups: Mapping[str, Mapping[str, Sequence[str]]]  # colt_core.prune.magnitude specs by group
    collate: Callable[[list[Any]], Batch] | None  # None: torch's default collate
    # True when every batch has one input size (fixed crops, stretched images): the engine then lets cuDNN
    # autotune its convolutions on a GPU (`train.cudnn_benchmark: auto`). False when unsure.
    fixed_input_size: bool

    def build_model(self, num_outputs: int) -> nn.Module:
        """A freshly initialised model with `num_outputs` classes (seeded by the caller)."""

    def architecture(self) -> dict[str, Any]:
        """A JSON-able description of the architecture, stored in tickets (with a "task" key)."""

    def datasets(self, class_ids: list[int] | None, job: TrainJob) -> tuple[Dataset, Dataset]:
        """Training and validation sets of the job's classes, labels remapped to 0..len(class_ids)-1."""

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Loss terms of one batch (on the job's device), summed into the training loss; an entry named
        "loss" is the total instead, and the others are metrics that are only logged (e.g. accuracy).

        The engine calls it with the model in train mode to train and in eval mode (under no_grad) to
        validate; a model that returns losses only in train mode switches itself here.
        """

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict[str, Any]:
        """Test-set metrics of a full-data model on `job.device`: at least {"metric": name, "value": float},
        usually "per_class" and "test_images" too, and "test_skipped" ({"images", "objects"}) when test samples
        were left out, which the report then states; files it keeps go under `job.files.outputs`.

        The test set is read through `job.loader(dataset)`, the engine's evaluation loader (the eval batch size,
        the task's collate, the data workers), and scored under `job.amp`."""

    # Optional, for channel tickets (`prune.granularity: channel`), which trace the model once per run:
    #   example_inputs(model) -> Any: a small input of the model (one image will do), on the CPU;
    #   forward_fn(model, inputs) -> tensors: what is traced, when not `model(inputs)` (e.g. a detector's parts
    #   whose outputs are the features its heads read). Channels that reach what it returns are never pruned.


def channel_plan(task: Task, groups: Sequence[PruneGroup], output_layers: Sequence[str], num_classes: int, *,
                 neurons: bool = False) -> ChannelPlan:
    """The channel groups of `task`'s model (built for `num_classes`), traced on the task's example inputs."""
    example_inputs = getattr(task, "example_inputs", None)
    if example_inputs is None:
        raise ConfigError(f"prune.granularity: channel: the {type(task).__name__} task gives no example inputs to "
                          "trace its model on; use prune.granularity: weight")
    model = task.build_model(num_classes)
    return build_channel_plan(model, groups, output_layers, example_inputs(model), getattr(task, "forward_fn", None),
                              neurons=neurons)
