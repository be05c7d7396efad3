"""The classification run's config: data, model, training, evaluation, plus the engine's sections.

Defaults are the paper's recipe (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 64, 50 epochs, one warm-up
epoch, lr ÷5 at epochs 25/35/45; COLT rates conv 15% / FC 20%); the files under configs/ set the rest.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

from colt_cls.models import list_models
from colt_cls.synthetic import write_synthetic_imagenet, write_synthetic_tiny_imagenet
from colt_core.config import at_least, closed_interval, field, positive
from colt_core.settings import DataConfig as BaseDataConfig
from colt_core.settings import EvalConfig, OptimizerConfig, RunConfig, ScheduleConfig, TrainConfig

DatasetName = Literal["cifar10", "cifar100", "tinyimagenet", "imagenet"]
CLASS_COUNTS = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "imagenet": 1000}
# The synthetic twins of TinyImageNet and ImageNet may have fewer classes than the real datasets.
SYNTHETIC_CLASS_COUNTS = {
    "cifar10": 10, "cifar100": 100,
    "tinyimagenet": inspect.signature(write_synthetic_tiny_imagenet).parameters["num_classes"].default,
    "imagenet": inspect.signature(write_synthetic_imagenet).parameters["num_classes"].default,
}


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic twin written under `data.root` on first use (null: generator default)."""

    seed: int = field(0, help="generator seed; equal settings give equal files")
    train_per_class: int | None = field(None, help="training images per class", check=at_least(1))
    test_per_class: int | None = field(
        None, help="test (CIFAR) or val (TinyImageNet/ImageNet) images per class", check=at_least(1))
    num_classes: int | None = field(None, help="number of classes (tinyimagenet and imagenet only)",
                                    check=at_least(2))
    image_size: int | None = field(None, help="typical image side (imagenet only)", check=at_least(16))
    grayscale_fraction: float | None = field(
        None, help="share of grayscale JPEGs (tinyimagenet and imagenet only)",
        check=closed_interval(0.0, 1.0))

    def generator_arguments(self, dataset: str) -> dict[str, Any]:
        """Keyword arguments of `colt_cls.synthetic.ensure_synthetic` for `dataset`."""
        arguments: dict[str, Any] = {"seed": self.seed}
        if self.train_per_class is not None:
            arguments["n_train_per_class"] = self.train_per_class
        if self.test_per_class is not None:
            key = "n_test_per_class" if dataset.startswith("cifar") else "n_val_per_class"
            arguments[key] = self.test_per_class
        for key in ("num_classes", "image_size", "grayscale_fraction"):
            if getattr(self, key) is not None:
                arguments[key] = getattr(self, key)
        return arguments


# Generator options that only some datasets' twins take.
_SYNTHETIC_ONLY_FOR = {"num_classes": ("tinyimagenet", "imagenet"), "image_size": ("imagenet",),
                       "grayscale_fraction": ("tinyimagenet", "imagenet")}


@dataclass
class DataConfig(BaseDataConfig):
    """Which dataset, where it lives, and how much of the training data is held out for model selection
    (a stratified share of each class's images)."""

    name: DatasetName = field("cifar10", help="cifar10 | cifar100 | tinyimagenet | imagenet")
    root: str = field("data", help="folder holding the dataset folder (cifar-10-batches-py/, "
                                   "cifar-100-python/, tiny-imagenet-200/) or, for imagenet, train/ and val/")
    image_size: int | None = field(
        None, help="input side; null = the dataset's own (32, 64, ImageNet crop 224)", check=at_least(8))
    synthetic: SyntheticConfig | None = field(None, help="write this synthetic twin under root when missing")
    hflip: bool = field(True, help="random horizontal flips in the training augmentation (the paper's); false for "
                                   "classes a flip changes, such as handwritten digits")


@dataclass
class ModelConfig:
    """The architecture: the paper's CIFAR-style models by name, or any timm model."""

    name: str = field("resnet18", help="conv3 | resnet18 | mobilenetv2 (CIFAR-style: 3x3 stride-1 stem), or "
                                       "a timm model name, e.g. resnet18.tv_in1k for the ImageNet ResNet-18")
    width: float | None = field(None, help="channel multiplier of conv3/resnet18/mobilenetv2 (null: 1.0)",
                                check=positive)
    init: Literal["xavier", "kaiming", "default"] = field(
        "xavier", help="weight init: xavier (Glorot, the paper's), kaiming, or the constructor's default")
    pretrained_path: str | None = field(
        None, help="local state_dict loaded on top of the init (never downloaded)")
    kwargs: dict[str, Any] = field(
        default_factory=dict, help="further create_model keywords, e.g. timm's drop_rate")

    def validate(self) -> list[tuple[str, str]]:
        if self.width is not None and self.name not in list_models():
            return [("width", f"applies to {', '.join(list_models())} only; for a timm model pick a smaller "
                              "variant")]
        reserved = sorted(set(self.kwargs) & {"num_classes", "pretrained", "pretrained_path", "width",
                                              "init"})
        if reserved:
            return [("kwargs", f"{reserved} are set elsewhere (model.width, model.init, "
                               "model.pretrained_path; num_classes comes from the data)")]
        return []

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `colt_cls.models.create_model` that shape the architecture."""
        kwargs = dict(self.kwargs)
        if self.width is not None:
            kwargs["width"] = self.width
        return kwargs


@dataclass
class PaperOptimizerConfig(OptimizerConfig):
    """Optimizer; the paper's classifier recipe by default: SGD lr 0.1, momentum 0.9, weight decay 5e-4."""

    name: Literal["adam", "adamw", "sgd"] = field("sgd", help="adam | adamw | sgd (the paper's Conv-3: adam)")
    lr: float = field(0.1, help="base learning rate", check=positive)
    weight_decay: float = field(5e-4, help="weight decay (L2 for adam/sgd, decoupled for adamw)",
                                check=at_least(0.0))


@dataclass
class PaperScheduleConfig(ScheduleConfig):
    """Learning-rate schedule; the paper's by default: one warm-up epoch, then lr ÷5 at epochs 25/35/45."""

    name: Literal["cosine", "multistep", "constant"] = field("multistep",
                                                             help="cosine | multistep | constant")
    milestones: list[int] = field(default_factory=lambda: [25, 35, 45],
                                  help="multistep: epochs at which lr *= gamma")
    gamma: float = field(0.2, help="multistep: factor applied at each milestone", check=positive)
    warmup_epochs: int = field(1, help="linear warm-up epochs (per iteration)", check=at_least(0))
    interval: Literal["iteration", "epoch"] = field("epoch",
                                                    help="whether the lr changes every step or every epoch")


@dataclass
class ClsTrainConfig(TrainConfig):
    """One training (a partition model, or a ticket on the full data); the paper's classifier recipe."""

    batch_size: int = field(64, help="samples per batch (per rank under torchrun)", check=at_least(1))
    optimizer: PaperOptimizerConfig = field(default_factory=PaperOptimizerConfig, help="optimizer")
    schedule: PaperScheduleConfig = field(default_factory=PaperScheduleConfig, help="learning-rate schedule")


@dataclass
class ClsEvalConfig(EvalConfig):
    """Validation and test-set evaluation."""

    batch_size: int = field(256, help="samples per evaluation batch (validation and test)", check=at_least(1))


@dataclass
class ClsRunConfig(RunConfig):
    """A COLT (or LTH) run of an image classifier, or the transfer of a ticket to a dataset (`ticket`)."""

    task: str = field("classification", help="the task this config is for: classification")
    output_dir: str = field("runs/cls", help="run directory (--out overrides)")
    train: ClsTrainConfig = field(default_factory=ClsTrainConfig, help="training")
    eval: ClsEvalConfig = field(default_factory=ClsEvalConfig, help="evaluation")
    data: DataConfig = field(default_factory=DataConfig, help="dataset")
    model: ModelConfig = field(default_factory=ModelConfig, help="classifier")

    @property
    def num_classes(self) -> int:
        """Classes of the configured dataset (of its synthetic twin when one is configured)."""
        synthetic = self.data.synthetic
        if synthetic is None:
            return CLASS_COUNTS[self.data.name]
        return synthetic.num_classes or SYNTHETIC_CLASS_COUNTS[self.data.name]

    def validate(self) -> list[tuple[str, str]]:
        synthetic = self.data.synthetic
        if synthetic is not None:
            for key, datasets in _SYNTHETIC_ONLY_FOR.items():
                if getattr(synthetic, key) is not None and self.data.name not in datasets:
                    return [(f"data.synthetic.{key}",
                             f"applies to {' and '.join(datasets)} only, not {self.data.name}")]
        return super().validate()
